// Dense MAM kernels (forward with/without indices, backward), compiled once per
// ISA (see CMakeLists.txt): the namespace mamext::cpu::MAMEXT_ISA keeps the
// three builds apart. No torch headers here (see mam_linear_simd.h).
//
// Forward: a register-blocked micro-kernel over MR rows x NR vectors of output
// neurons. Weights are packed into panels (K, NR*L) so one k step loads NR
// vectors, broadcasts MR inputs and does MR*NR*(mul, max, min).
//
// Index tracking: the inner loop keeps values only. Every KB steps of k the
// running max/min is compared with its value at the end of the previous block;
// lanes that changed record the current block number (one compare and two
// stores per accumulator per block). A new maximum only ever *changes* the
// running value when it is strictly greater, so the recorded block is the one
// holding the lowest k that attains the final maximum. Afterwards the exact
// index is recovered by recomputing that one block's KB products with the
// vector unit and taking the first lane equal to the final value. Products are
// recomputed with the same single rounding (no FMA contraction, see
// -ffp-contract=off), so the equality is exact.
#include <cstddef>
#include <cstdint>

#include "common/mam_fold.h"
#include "common/isa_capability.h"
#include "common/vec.h"
#include "ops/cpu/simd/mam_linear_simd.h"

namespace mamext::cpu::MAMEXT_ISA {
namespace {

constexpr int64_t KB = 16;  // k steps per index-tracking block

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

template <typename T>
struct Tiling;
#if defined(MAMEXT_ISA_AVX512)
template <> struct Tiling<float> { static constexpr int MR = 4, NR = 3; };
template <> struct Tiling<double> { static constexpr int MR = 4, NR = 3; };
#elif defined(MAMEXT_ISA_AVX2)
template <> struct Tiling<float> { static constexpr int MR = 3, NR = 2; };
template <> struct Tiling<double> { static constexpr int MR = 3, NR = 2; };
#elif defined(MAMEXT_ISA_NEON)
// 32 registers: 2 * MR * NR accumulators, NR weight vectors, the inputs and
// a product and a compare mask per max/min step (compare + select, see vec.h).
// The tiles below are the largest GCC keeps free of spills (4 x 3 spills for
// both types, 3 x 3 for double).
template <> struct Tiling<float> { static constexpr int MR = 3, NR = 3; };
template <> struct Tiling<double> { static constexpr int MR = 4, NR = 2; };
#else
template <> struct Tiling<float> { static constexpr int MR = 2, NR = 2; };
template <> struct Tiling<double> { static constexpr int MR = 2, NR = 2; };
#endif

template <typename T>
constexpr int panel_width() {
  return Tiling<T>::NR * Vec<T>::L;
}

// Blocked transpose: KT consecutive k of every panel row are read as one
// contiguous run and written into a (KT, P) slab that stays in L1. The panel
// holds inputs [k0, k1) (row k - k0).
template <typename T>
void pack(const T* w, int64_t N, int64_t K, int64_t n0, int64_t k0, int64_t k1, T* panel) {
  constexpr int P = panel_width<T>();
  constexpr int64_t KT = 16;
  const int64_t nvalid = imin(P, N - n0);
  for (int64_t kb = k0; kb < k1; kb += KT) {
    const int64_t kn = imin(KT, k1 - kb);
    T* dst = panel + (kb - k0) * P;
    for (int64_t j = 0; j < nvalid; ++j) {
      const T* src = w + (n0 + j) * K + kb;
      for (int64_t t = 0; t < kn; ++t) dst[t * P + j] = src[t];
    }
    for (int64_t j = nvalid; j < P; ++j)
      for (int64_t t = 0; t < kn; ++t) dst[t * P + j] = T(0);
  }
}

// Running max/min of MR x (NR*L) outputs over inputs [k0, k1) (k0 a multiple
// of KB; the panel holds rows k0..k1, x is indexed by absolute k); results to
// tmx/tmn (row stride P). With TRACK, bmx/bmn receive the winning block per
// output. `resume` continues from the state a previous call over [.., k0) left
// in tmx/tmn/bmx/bmn (the same comparisons as one call over the whole range,
// so blocking K changes no result bit); otherwise k0 == 0 and the first
// product starts the running values.
template <typename T, int MR, bool TRACK>
inline void tile(const T* x, int64_t ldx, const T* panel, int64_t k0, int64_t k1, bool resume, T* tmx, T* tmn,
                 int32_t* bmx, int32_t* bmn) {
  using V = Vec<T>;
  using R = typename V::R;
  constexpr int NR = Tiling<T>::NR;
  constexpr int L = V::L;
  constexpr int P = NR * L;
  const T* xk = x + k0;  // relative k from here on
  const int64_t kn = k1 - k0;
  R mx[MR][NR], mn[MR][NR];
  if (resume) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) {
        mx[i][j] = V::load(tmx + i * P + j * L);
        mn[i][j] = V::load(tmn + i * P + j * L);
      }
  } else {
    R w[NR];
    for (int j = 0; j < NR; ++j) w[j] = V::load(panel + j * L);
    for (int i = 0; i < MR; ++i) {
      const R xb = V::bcast(xk[i * ldx]);
      for (int j = 0; j < NR; ++j) mx[i][j] = mn[i][j] = V::mul(xb, w[j]);
    }
  }
  auto steps = [&](int64_t k, int64_t kend) __attribute__((always_inline)) {
    for (; k < kend; ++k) {
      const T* pk = panel + k * P;
      R w[NR];
      for (int j = 0; j < NR; ++j) w[j] = V::load(pk + j * L);
      for (int i = 0; i < MR; ++i) {
        const R xb = V::bcast(xk[i * ldx + k]);
        for (int j = 0; j < NR; ++j) {
          const R p = V::mul(xb, w[j]);
          mx[i][j] = V::max(p, mx[i][j]);  // ties keep the earlier product
          mn[i][j] = V::min(p, mn[i][j]);
        }
      }
    }
  };
  const int64_t kfirst = resume ? 0 : 1;
  if constexpr (!TRACK) {
    steps(kfirst, kn);
  } else {
    alignas(64) T smx[MR][P], smn[MR][P];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) {
        V::store(&smx[i][j * L], mx[i][j]);
        V::store(&smn[i][j * L], mn[i][j]);
      }
    if (!resume)
      for (int i = 0; i < MR; ++i)
        for (int q = 0; q < P; ++q) bmx[i * P + q] = bmn[i * P + q] = 0;
    const int32_t bfirst = static_cast<int32_t>(k0 / KB);
    int64_t k = kfirst;
    for (int32_t b = 0; k < kn; ++b) {
      const int64_t kend = imin(int64_t(b + 1) * KB, kn);
      steps(k, kend);
      k = kend;
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) {
          const uint32_t cmax = V::neq(mx[i][j], V::load(&smx[i][j * L]));
          const uint32_t cmin = V::neq(mn[i][j], V::load(&smn[i][j * L]));
          V::store(&smx[i][j * L], mx[i][j]);
          V::store(&smn[i][j * L], mn[i][j]);
          V::store_index(bmx + i * P + j * L, cmax, bfirst + b);
          V::store_index(bmn + i * P + j * L, cmin, bfirst + b);
        }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      V::store(tmx + i * P + j * L, mx[i][j]);
      V::store(tmn + i * P + j * L, mn[i][j]);
    }
}

// Runtime row count (1..R) to a compile-time tile height.
template <typename T, int R, bool TRACK>
inline void tile_rows(int mr, const T* x, int64_t ldx, const T* panel, int64_t k0, int64_t k1, bool resume,
                      T* tmx, T* tmn, int32_t* bmx, int32_t* bmn) {
  if (mr == R) {
    tile<T, R, TRACK>(x, ldx, panel, k0, k1, resume, tmx, tmn, bmx, bmn);
  } else if constexpr (R > 1) {
    tile_rows<T, R - 1, TRACK>(mr, x, ldx, panel, k0, k1, resume, tmx, tmn, bmx, bmn);
  }
}

// First k in block `blk` with xr[k] * wr[k] == target.
template <typename T>
inline int32_t recover(const T* xr, const T* wr, int64_t K, int32_t blk, T target) {
  using V = Vec<T>;
  const int64_t k0 = int64_t(blk) * KB;
  const int n = static_cast<int>(imin(KB, K - k0));
  const auto t = V::bcast(target);
  for (int off = 0; off < n; off += V::L) {
    const int len = n - off < V::L ? n - off : V::L;
    const auto p = V::mul(V::load_n(xr + k0 + off, len), V::load_n(wr + k0 + off, len));
    const uint32_t m = V::eq(p, t) & ((1u << len) - 1u);
    if (m) return static_cast<int32_t>(k0 + off + ctz32(m));
  }
  return static_cast<int32_t>(k0);  // unreachable: target is one of these products
}

// Rows [m0, m1) against the panel of neurons [n0, n0 + P) over inputs
// [k0, k1). One call over all of K keeps each register tile's state on the
// stack; a K-blocked sequence of calls keeps it in `state` ((m1 - m0) x P
// maxima then as many minima) and `blocks` (the same for block numbers), and
// the call with k1 == K writes the outputs.
template <typename T, bool TRACK>
void forward_impl(const T* x, const T* panel, const T* w, const T* bias, T* out, int32_t* amax,
                  int32_t* amin, int64_t m0, int64_t m1, int64_t n0, int64_t N, int64_t K, int64_t k0,
                  int64_t k1, T* state, int32_t* blocks) {
  constexpr int MR = Tiling<T>::MR;
  constexpr int P = panel_width<T>();
  const int64_t nvalid = imin(P, N - n0);
  const int64_t rows = m1 - m0;
  alignas(64) T lmx[MR * P], lmn[MR * P];
  alignas(64) int32_t lbx[TRACK ? MR * P : 1], lbn[TRACK ? MR * P : 1];
  for (int64_t m = m0; m < m1; m += MR) {
    const int mr = static_cast<int>(imin(MR, m1 - m));
    const T* xm = x + m * K;
    const int64_t r = m - m0;
    T* tmx = state ? state + r * P : lmx;
    T* tmn = state ? state + (rows + r) * P : lmn;
    int32_t* bmx = state ? blocks + r * P : lbx;
    int32_t* bmn = state ? blocks + (rows + r) * P : lbn;
    tile_rows<T, MR, TRACK>(mr, xm, K, panel, k0, k1, k0 > 0, tmx, tmn, bmx, bmn);
    if (k1 < K) continue;
    for (int i = 0; i < mr; ++i) {
      T* om = out + (m + i) * N + n0;
      for (int64_t j = 0; j < nvalid; ++j) {
        T v = tmx[i * P + j] + tmn[i * P + j];
        if (bias) v += bias[n0 + j];
        om[j] = v;
      }
      if constexpr (TRACK) {
        const T* xr = xm + i * K;
        int32_t* am = amax + (m + i) * N + n0;
        int32_t* an = amin + (m + i) * N + n0;
        for (int64_t j = 0; j < nvalid; ++j) {
          const T* wr = w + (n0 + j) * K;
          am[j] = recover<T>(xr, wr, K, bmx[i * P + j], tmx[i * P + j]);
          an[j] = recover<T>(xr, wr, K, bmn[i * P + j], tmn[i * P + j]);
        }
      }
    }
  }
}

template <typename T>
void forward(const T* x, const T* panel, const T* w, const T* bias, T* out, int32_t* amax,
             int32_t* amin, int64_t m0, int64_t m1, int64_t n0, int64_t N, int64_t K, int64_t k0, int64_t k1,
             T* state, int32_t* blocks) {
  if (amax)
    forward_impl<T, true>(x, panel, w, bias, out, amax, amin, m0, m1, n0, N, K, k0, k1, state, blocks);
  else
    forward_impl<T, false>(x, panel, w, bias, out, amax, amin, m0, m1, n0, N, K, k0, k1, state, blocks);
}

// Few rows (M < kRowMajorMaxRows): packing the weights would cost more than
// the whole computation, so work on row-major W directly, vectorised along k,
// neurons [n0, n1). Each weight row is loaded once from memory and reused
// from L1 for every input row and for the index scan: the first k whose
// product equals the (exact) max or min is its index.
template <typename T>
inline T hreduce(typename Vec<T>::R v, bool is_max) {
  alignas(64) T buf[Vec<T>::L];
  Vec<T>::store(buf, v);
  T r = buf[0];
  for (int l = 1; l < Vec<T>::L; ++l) r = is_max ? (buf[l] > r ? buf[l] : r) : (buf[l] < r ? buf[l] : r);
  return r;
}

template <typename T>
inline int32_t first_equal(const T* xr, const T* wr, int64_t K, T target) {
  using V = Vec<T>;
  const auto t = V::bcast(target);
  int64_t k = 0;
  for (; k + V::L <= K; k += V::L) {
    const uint32_t m = V::eq(V::mul(V::load(xr + k), V::load(wr + k)), t);
    if (m) return static_cast<int32_t>(k + ctz32(m));
  }
  for (; k < K; ++k)
    if (xr[k] * wr[k] == target) return static_cast<int32_t>(k);
  return 0;  // unreachable: target is one of the products
}

template <typename T>
void forward_rows(const T* x, const T* w, const T* bias, T* out, int32_t* amax, int32_t* amin, int64_t M,
                  int64_t n0, int64_t n1, int64_t N, int64_t K) {
  using V = Vec<T>;
  using R = typename V::R;
  const int64_t kv = K / V::L * V::L;  // vector part; the rest is scalar
  for (int64_t n = n0; n < n1; ++n) {
    const T* wr = w + n * K;
    for (int64_t m = 0; m < M; ++m) {
      const T* xr = x + m * K;
      T mx = xr[0] * wr[0], mn = mx;
      if (kv > 0) {
        R vmx = V::mul(V::load(xr), V::load(wr)), vmn = vmx;
        for (int64_t k = V::L; k < kv; k += V::L) {
          const R p = V::mul(V::load(xr + k), V::load(wr + k));
          vmx = V::max(p, vmx);
          vmn = V::min(p, vmn);
        }
        mx = hreduce<T>(vmx, true);
        mn = hreduce<T>(vmn, false);
      }
      for (int64_t k = kv; k < K; ++k) {
        const T p = xr[k] * wr[k];
        mx = mamext_fold_max(mx, p);
        mn = mamext_fold_min(mn, p);
      }
      // Lanes hold different k, so the lane reduction cannot tell which of
      // several tied zeros (+0 / -0) came first: take the value of the first
      // product equal to the extreme (exact, and needed for the index anyway).
      if (amax || mx == T(0)) {
        const int32_t ia = first_equal<T>(xr, wr, K, mx);
        mx = xr[ia] * wr[ia];
        if (amax) amax[m * N + n] = ia;
      }
      if (amax || mn == T(0)) {
        const int32_t ib = first_equal<T>(xr, wr, K, mn);
        mn = xr[ib] * wr[ib];
        if (amax) amin[m * N + n] = ib;
      }
      T v = mx + mn;
      if (bias) v += bias[n];
      out[m * N + n] = v;
    }
  }
}

// NaN/inf inputs: plain sequential scan. A NaN product makes max, min and both
// indices the first NaN (as torch.max/torch.min along a dim).
template <typename T>
void forward_slow(const T* x, const T* w, const T* bias, T* out, int32_t* amax, int32_t* amin,
                  int64_t m0, int64_t m1, int64_t N, int64_t K) {
  for (int64_t m = m0; m < m1; ++m) {
    const T* xr = x + m * K;
    for (int64_t n = 0; n < N; ++n) {
      const T* wr = w + n * K;
      T mx = xr[0] * wr[0], mn = mx;
      int64_t ia = 0, ib = 0;
      if (mx == mx) {
        for (int64_t k = 1; k < K; ++k) {
          const T p = xr[k] * wr[k];
          if (p != p) {
            mx = mn = p;
            ia = ib = k;
            break;
          }
          if (mamext_fold_wins_max(mx, p)) { mx = p; ia = k; }
          if (mamext_fold_wins_min(mn, p)) { mn = p; ib = k; }
        }
      }
      T v = mx + mn;
      if (bias) v += bias[n];
      out[m * N + n] = v;
      if (amax) {
        amax[m * N + n] = static_cast<int32_t>(ia);
        amin[m * N + n] = static_cast<int32_t>(ib);
      }
    }
  }
}

template <typename T>
bool backward_input(const T* g, const T* w, const int32_t* amax, const int32_t* amin, T* gx,
                    int64_t m0, int64_t m1, int64_t N, int64_t K) {
  bool ok = true;
  for (int64_t m = m0; m < m1; ++m) {
    T* gr = gx + m * K;
    for (int64_t k = 0; k < K; ++k) gr[k] = T(0);
    const T* gm = g + m * N;
    const int32_t* am = amax + m * N;
    const int32_t* an = amin + m * N;
    for (int64_t n = 0; n < N; ++n) {
      const T gv = gm[n];
      const T* wr = w + n * K;
      const int32_t a = am[n], b = an[n];
      if (static_cast<uint64_t>(static_cast<uint32_t>(a)) >= static_cast<uint64_t>(K) ||
          static_cast<uint64_t>(static_cast<uint32_t>(b)) >= static_cast<uint64_t>(K)) {
        ok = false;
        continue;
      }
      gr[a] += gv * wr[a];
      gr[b] += gv * wr[b];
    }
  }
  return ok;
}

template <typename T>
bool backward_weight(const T* g, const T* x, const int32_t* amax, const int32_t* amin, T* gw,
                     int64_t n0, int64_t n1, int64_t M, int64_t N, int64_t K) {
  bool ok = true;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t k = 0; k < K; ++k) gw[n * K + k] = T(0);
  for (int64_t m = 0; m < M; ++m) {
    const T* xr = x + m * K;
    const T* gm = g + m * N;
    const int32_t* am = amax + m * N;
    const int32_t* an = amin + m * N;
    for (int64_t n = n0; n < n1; ++n) {
      const T gv = gm[n];
      T* gr = gw + n * K;
      const int32_t a = am[n], b = an[n];
      if (static_cast<uint64_t>(static_cast<uint32_t>(a)) >= static_cast<uint64_t>(K) ||
          static_cast<uint64_t>(static_cast<uint32_t>(b)) >= static_cast<uint64_t>(K)) {
        ok = false;
        continue;
      }
      gr[a] += gv * xr[a];
      gr[b] += gv * xr[b];
    }
  }
  return ok;
}

template <typename T>
DenseKernels<T> dense_kernels() {
  constexpr int64_t blocks = kPanelBlockBytes / (panel_width<T>() * int64_t(sizeof(T))) / KB;
  constexpr int64_t k_block = (blocks > 1 ? blocks : 1) * KB;  // panel rows per K block
  return DenseKernels<T>{panel_width<T>(), Tiling<T>::MR, k_block, &pack<T>, &forward<T>, &forward_rows<T>,
                         &forward_slow<T>, &all_finite<T>, &backward_input<T>, &backward_weight<T>};
}

}  // namespace

const KernelTable& kernel_table() {
  static const KernelTable table{kCapability, dense_kernels<float>(), dense_kernels<double>()};
  return table;
}

}  // namespace mamext::cpu::MAMEXT_ISA
