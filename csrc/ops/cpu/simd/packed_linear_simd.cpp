// Packed (sparse, CSR per output neuron) MAM and Linear kernels, compiled once
// per ISA (see CMakeLists.txt) into mamext::cpu::MAMEXT_ISA. No torch headers
// (see mam_linear_simd.h). Layout and semantics: packed_linear_simd.h.
//
// Fast path, vectorised across the batch: each thread transposes a block of
// BW samples into a panel (K, BW), so a kept connection (w, k) is one
// broadcast of w against contiguous vectors panel[k, 0 .. BW). A tile is NB
// neurons x BW samples; its results go to a small buffer (neuron major) and
// are transposed into the (B, N) output with register transposes. A
// column-major input (xt (K, B)) is read in place and the results are stored
// straight into a column-major output (tile_cols). A row with a pruned
// connection starts its max and min at 0 (the pruned products); a full row
// starts at its first product. Max/min are exact selections, so on finite data
// the result equals the dense kernel's bit for bit (up to the sign of a zero).
//
// Non-finite data (rows_checked): the dense layer multiplies every pruned
// input by 0, so an inf or NaN input at a pruned position makes that neuron's
// output NaN. Per sample we count the non-finite inputs; per neuron we count
// those among its kept connections; if the row is pruned somewhere and the two
// counts differ, a non-finite input sits on a pruned connection -> NaN. A NaN
// product (NaN input, inf * 0 with a kept zero weight, NaN weight) gives NaN,
// as in the dense layer; otherwise max + min (or the sum) as usual.
#include <cstdint>

#include "common/mam_fold.h"
#include "common/mam_semantics.h"
#include "common/isa_capability.h"
#include "common/vec.h"
#include "ops/cpu/simd/mam_linear_simd.h"
#include "ops/cpu/simd/packed_linear_simd.h"

namespace mamext::cpu::MAMEXT_ISA {
namespace {

constexpr int NB = 64;  // neurons per tile
constexpr int U = 4;    // vectors of samples per tile

template <typename E>
constexpr int batch_width() {
  return U * Vec<E>::L;
}

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

template <typename T>
inline bool is_finite(T v) {
  return v - v == T(0);  // NaN for NaN and +-inf
}

// ---------------------------------------------------------------------------
// Shared accumulation: neurons [n0, n1) x NV vectors of samples starting at b0
// (the last vector holds `tail` valid lanes), results (max + min, or sum,
// plus bias) to dst[(n - n0) * ldd + lane], lanes past the tail untouched. E: lane type (float, double,
// int32), W: stored weight type (E or int8).
// ---------------------------------------------------------------------------
template <typename E, typename W, typename I, bool MAM, int NV>
inline void accumulate(const E* xt, int64_t B, int64_t b0, int tail, const W* val, const I* idx,
                       const int64_t* off, const E* bias, int64_t K, int64_t n0, int64_t n1, E* dst, int64_t ldd) {
  using V = Vec<E>;
  using R = typename V::R;
  constexpr int L = V::L;
  const E* xb = xt + b0;
  auto load = [&](const E* p, int v) __attribute__((always_inline)) {
    return (v == NV - 1 && tail < L) ? V::load_n(p + v * L, tail) : V::load(p + v * L);
  };
  for (int64_t n = n0; n < n1; ++n) {
    int64_t j = off[n];
    const int64_t j1 = off[n + 1];
    R a[NV], c[NV];
    if (MAM && j1 - j == K) {  // full row: no pruned candidate, start at the first product
      const R w = V::bcast(static_cast<E>(val[j]));
      const E* xr = xb + static_cast<int64_t>(idx[j]) * B;
      for (int v = 0; v < NV; ++v) a[v] = c[v] = V::mul(w, load(xr, v));
      ++j;
    } else {
      for (int v = 0; v < NV; ++v) a[v] = c[v] = V::zero();
    }
    for (; j < j1; ++j) {
      const R w = V::bcast(static_cast<E>(val[j]));
      const E* xr = xb + static_cast<int64_t>(idx[j]) * B;
      for (int v = 0; v < NV; ++v) {
        const R p = V::mul(w, load(xr, v));
        if constexpr (MAM) {
          a[v] = V::max(p, a[v]);  // ties keep the earlier value
          c[v] = V::min(p, c[v]);
        } else {
          a[v] = V::add(a[v], p);
        }
      }
    }
    E* br = dst + (n - n0) * ldd;
    const R bv = bias ? V::bcast(bias[n]) : V::zero();
    for (int v = 0; v < NV; ++v) {
      R r = MAM ? V::add(a[v], c[v]) : a[v];
      if (bias) r = V::add(r, bv);
      if (v == NV - 1 && tail < L)
        V::store_n(br + v * L, r, tail);
      else
        V::store(br + v * L, r);
    }
  }
}

template <typename E, typename W, typename I, bool MAM>
inline void accumulate_nv(int nv, const E* xt, int64_t B, int64_t b0, int tail, const W* val, const I* idx,
                          const int64_t* off, const E* bias, int64_t K, int64_t n0, int64_t n1, E* dst,
                          int64_t ldd) {
  static_assert(U == 4, "accumulate_nv handles up to 4 vectors");
  switch (nv) {
    case 1: accumulate<E, W, I, MAM, 1>(xt, B, b0, tail, val, idx, off, bias, K, n0, n1, dst, ldd); break;
    case 2: accumulate<E, W, I, MAM, 2>(xt, B, b0, tail, val, idx, off, bias, K, n0, n1, dst, ldd); break;
    case 3: accumulate<E, W, I, MAM, 3>(xt, B, b0, tail, val, idx, off, bias, K, n0, n1, dst, ldd); break;
    default: accumulate<E, W, I, MAM, 4>(xt, B, b0, tail, val, idx, off, bias, K, n0, n1, dst, ldd); break;
  }
}

// ---------------------------------------------------------------------------
// Floating point
// ---------------------------------------------------------------------------
// Panel fill: 2TT x TT register transposes (transpose_tile2: every panel row
// segment written is a whole 64-byte line for float), two per 2TT columns of
// x so each source line is consumed at once (rows of x are often 4 KiB apart
// and alias in L1). Then a sum of the freshly written (L1-hot) panel rows as
// the finiteness check: a NaN or inf anywhere makes the sum non-finite. A sum
// can also overflow to inf on huge finite inputs; that only sends the block
// to the exact checked path.
// Moves E-sized elements with the float/double register transposes (int32
// codes move as float bit patterns: loads, shuffles, stores only).
template <typename E>
struct Mover {
  using V = Vec<E>;
  static constexpr int TT = V::TT;
  static void t2(const E* s, int64_t lds, E* d, int64_t ldd) { V::transpose_tile2(s, lds, d, ldd); }
};
template <>
struct Mover<int32_t> {
  using V = Vec<float>;
  static constexpr int TT = V::TT;
  static void t2(const int32_t* s, int64_t lds, int32_t* d, int64_t ldd) {
    V::transpose_tile2(reinterpret_cast<const float*>(s), lds, reinterpret_cast<float*>(d), ldd);
  }
};

template <typename T, bool CHECK>
bool panel_impl(const T* x, int64_t K, int64_t nb, int64_t pw, T* p) {
  using Mv = Mover<T>;
  constexpr int TT = Mv::TT;
  const int64_t nbt = nb / (2 * TT) * (2 * TT);  // samples moved by register transposes
  const int64_t kt = K / (2 * TT) * (2 * TT);    // columns moved by register transposes
  auto edges = [&](int64_t k0, int64_t k1) __attribute__((always_inline)) {
    for (int64_t k = k0; k < k1; ++k) {
      T* row = p + k * pw;
      for (int64_t s = (k < kt ? nbt : 0); s < nb; ++s) row[s] = x[s * K + k];
      for (int64_t s = nb; s < pw; ++s) row[s] = T(0);
    }
  };
  auto block = [&](int64_t k) __attribute__((always_inline)) {
    for (int64_t s = 0; s < nbt; s += 2 * TT) {
      Mv::t2(x + s * K + k, K, p + k * pw + s, pw);
      Mv::t2(x + s * K + k + TT, K, p + (k + TT) * pw + s, pw);
    }
    if (nbt < pw) edges(k, k + 2 * TT);
  };
  if constexpr (!CHECK) {
    for (int64_t k = 0; k < kt; k += 2 * TT) block(k);
    if (kt < K) edges(kt, K);
    return true;
  } else {
    using V = Vec<T>;
    constexpr int L = V::L;
    const auto z = V::zero();
    auto a0 = z, a1 = z;
    auto check = [&](int64_t k0, int64_t k1) __attribute__((always_inline)) {
      const T* q = p + k0 * pw;
      const int64_t n = (k1 - k0) * pw;  // a multiple of L (pw is)
      int64_t i = 0;
      for (; i + 2 * L <= n; i += 2 * L) {
        a0 = V::add(a0, V::load(q + i));
        a1 = V::add(a1, V::load(q + i + L));
      }
      for (; i < n; i += L) a0 = V::add(a0, V::load(q + i));
    };
    for (int64_t k = 0; k < kt; k += 2 * TT) {
      block(k);
      check(k, k + 2 * TT);
    }
    if (kt < K) {
      edges(kt, K);
      check(kt, K);
    }
    const auto acc = V::mul(V::add(a0, a1), z);
    return V::eq(acc, z) == ((1u << L) - 1u);
  }
}

template <typename T>
bool panel(const T* x, int64_t K, int64_t nb, int64_t pw, T* p) {
  return panel_impl<T, true>(x, K, nb, pw, p);
}

// buf (neurons x samples, row stride BW) -> out (samples x neurons, row
// stride N) for nb samples and nb_n neurons starting at column nn: TT samples
// at a time, each output row receiving its values as whole lines.
template <typename T, int BW>
inline void store_transposed(const T* buf, int64_t nb, int64_t nb_n, T* out, int64_t N, int64_t nn) {
  constexpr int TT = Vec<T>::TT;
  const int64_t nbt = nb / TT * TT;
  const int64_t full_n = nb_n / (2 * TT) * (2 * TT);
  int64_t s = 0;
  for (; s < nbt; s += TT) {
    for (int64_t r = 0; r < full_n; r += 2 * TT)
      Vec<T>::transpose_tile2(buf + r * BW + s, BW, out + s * N + nn + r, N);
    for (int64_t i = 0; i < TT; ++i)
      for (int64_t r = full_n; r < nb_n; ++r) out[(s + i) * N + nn + r] = buf[r * BW + s + i];
  }
  for (; s < nb; ++s)
    for (int64_t r = 0; r < nb_n; ++r) out[s * N + nn + r] = buf[r * BW + s];
}

template <typename T, typename I, bool MAM>
void tile(const T* p, int64_t pw, int64_t nb, const T* values, const void* indices, const int64_t* off,
          const T* bias, int64_t K, T* out, int64_t N, int64_t n0, int64_t n1) {
  using V = Vec<T>;
  constexpr int L = V::L;
  constexpr int BW = batch_width<T>();
  constexpr int TT = V::TT;
  static_assert(NB % (2 * TT) == 0 && BW % TT == 0, "tile sizes must be multiples of the transpose tiles");
  const I* idx = static_cast<const I*>(indices);
  alignas(64) T buf[NB * BW];
  const int nv = static_cast<int>((nb + L - 1) / L);  // panel lanes past nb are zero: full vectors
  for (int64_t nn = n0; nn < n1; nn += NB) {
    const int64_t nn1 = imin(nn + NB, n1);
    const int64_t nb_n = nn1 - nn;
    accumulate_nv<T, T, I, MAM>(nv, p, pw, 0, L, values, idx, off, bias, K, nn, nn1, buf, BW);
    store_transposed<T, BW>(buf, nb, nb_n, out, N, nn);
  }
}

// Column-major input and output (x given as xt (K, M), out as out_t (N, M),
// e.g. the transposed views a chain of packed layers passes along): no
// transposes at all, the accumulation stores straight into out_t. The caller
// has checked that every input is finite.
template <typename T, typename I, bool MAM>
void tile_cols(const T* xt, int64_t M, int64_t b0, int64_t nb, const T* values, const void* indices,
               const int64_t* off, const T* bias, int64_t K, T* out_t, int64_t n0, int64_t n1) {
  constexpr int L = Vec<T>::L;
  const I* idx = static_cast<const I*>(indices);
  const int nv = static_cast<int>((nb + L - 1) / L);
  const int tail = static_cast<int>(nb - int64_t(nv - 1) * L);
  for (int64_t nn = n0; nn < n1; nn += NB) {
    const int64_t nn1 = imin(nn + NB, n1);
    accumulate_nv<T, T, I, MAM>(nv, xt, M, b0, tail, values, idx, off, bias, K, nn, nn1, out_t + nn * M + b0, M);
  }
}

// One scalar product into a row's running max and min (a full row's first
// product starts both: `first`), or into its sum.
template <bool MAM, typename A>
inline void fold(A p, bool& first, A& mx, A& mn, A& acc) {
  if constexpr (MAM) {
    if (first) {
      mx = mn = p;
      first = false;
    } else {
      mx = mamext_fold_max(mx, p);
      mn = mamext_fold_min(mn, p);
    }
  } else {
    acc += p;
  }
}

// ---------------------------------------------------------------------------
// Tiny batches (a single sample: the microcontroller case): MAM rows of float
// with at least one vector of kept connections take their products with
// gathers (x's row sits in L1), one vector of max and one of min across the
// connections, reduced at the end; the remainder is scalar. Max and min are
// exact selections, so the order changes nothing but (possibly) the sign of a
// zero result, as everywhere in the packed kernels. Sums stay scalar and
// sequential (same rounding as the tiles).
// ---------------------------------------------------------------------------
#if defined(MAMEXT_ISA_AVX512)
template <typename I>
inline __m512i load_index16(const I* p) {
  if constexpr (sizeof(I) == 1)
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  else if constexpr (sizeof(I) == 2)
    return _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  else
    return _mm512_loadu_si512(p);
}
template <typename I>
inline Vec<float>::R gather_products(const float* xr, const float* w, const I* idx) {
  return _mm512_mul_ps(_mm512_loadu_ps(w), _mm512_i32gather_ps(load_index16(idx), xr, 4));
}
// Lanes [0, n) of the next vector of connections; the caller guarantees that a
// whole vector of indices can be read (j + L <= nnz).
template <typename I>
inline void max_min_tail(const float* xr, const float* w, const I* idx, int n, Vec<float>::R& a, Vec<float>::R& c) {
  const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
  const __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w),
                                 _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, load_index16(idx), xr, 4));
  a = _mm512_mask_max_ps(a, m, p, a);
  c = _mm512_mask_min_ps(c, m, p, c);
}
inline float hmax(Vec<float>::R v) { return _mm512_reduce_max_ps(v); }
inline float hmin(Vec<float>::R v) { return _mm512_reduce_min_ps(v); }
constexpr bool kHasGather = true;
#elif defined(MAMEXT_ISA_AVX2)
template <typename I>
inline __m256i load_index8(const I* p) {
  if constexpr (sizeof(I) == 1)
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  else if constexpr (sizeof(I) == 2)
    return _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  else
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
template <typename I>
inline Vec<float>::R gather_products(const float* xr, const float* w, const I* idx) {
  return _mm256_mul_ps(_mm256_loadu_ps(w), _mm256_i32gather_ps(xr, load_index8(idx), 4));
}
template <typename I>
inline void max_min_tail(const float* xr, const float* w, const I* idx, int n, Vec<float>::R& a, Vec<float>::R& c) {
  const __m256 m = _mm256_castsi256_ps(Vec<float>::lanes(n));
  const __m256 p = _mm256_mul_ps(_mm256_maskload_ps(w, _mm256_castps_si256(m)),
                                 _mm256_mask_i32gather_ps(_mm256_setzero_ps(), xr, load_index8(idx), m, 4));
  a = _mm256_blendv_ps(a, _mm256_max_ps(p, a), m);
  c = _mm256_blendv_ps(c, _mm256_min_ps(p, c), m);
}
// Horizontal reduction of a vector of E (lanes in order) with f.
template <typename E, typename F>
inline E hreduce(typename Vec<E>::R v, F f) {
  alignas(32) E t[Vec<E>::L];
  Vec<E>::store(t, v);
  E r = t[0];
  for (int i = 1; i < Vec<E>::L; ++i) r = f(r, t[i]);
  return r;
}
inline float hmax(Vec<float>::R v) { return hreduce<float>(v, [](float a, float b) { return b > a ? b : a; }); }
inline float hmin(Vec<float>::R v) { return hreduce<float>(v, [](float a, float b) { return b < a ? b : a; }); }
constexpr bool kHasGather = true;
#else
constexpr bool kHasGather = false;
#endif

template <typename T, typename I, bool MAM, bool CHECK>
void rows(const T* x, int64_t K, const T* values, const void* indices, const int64_t* off, const T* bias,
          T* out, int64_t N, int64_t n0, int64_t n1, int64_t m0, int64_t m1) {
  const I* idx = static_cast<const I*>(indices);
  const T nan = static_cast<T>(__builtin_nan(""));
  const int64_t nnz = off[N];
  (void)nnz;
  for (int64_t m = m0; m < m1; ++m) {
    const T* xr = x + m * K;
    int64_t bad = 0;  // non-finite inputs of this sample
    if constexpr (CHECK)
      for (int64_t k = 0; k < K; ++k) bad += !is_finite(xr[k]);
    for (int64_t n = n0; n < n1; ++n) {
      int64_t j = off[n];
      const int64_t j1 = off[n + 1];
      const bool pruned = j1 - j < K;
      T v;
      if constexpr (!CHECK) {
        if constexpr (MAM) {
          T mx = T(0), mn = T(0);
#if defined(MAMEXT_ISA_AVX512) || defined(MAMEXT_ISA_AVX2)
          if constexpr (kHasGather && sizeof(T) == 4) {
            using V = Vec<float>;
            constexpr int L = V::L;
            if (j1 - j >= L || (pruned && j1 > j && j + L <= nnz)) {
              auto a = V::zero(), c = V::zero();
              if (!pruned) {
                a = c = gather_products(xr, values + j, idx + j);
                j += L;
              }
              for (; j + L <= j1; j += L) {
                const auto p = gather_products(xr, values + j, idx + j);
                a = V::max(p, a);
                c = V::min(p, c);
              }
              if (j < j1 && j + L <= nnz) {
                max_min_tail(xr, values + j, idx + j, static_cast<int>(j1 - j), a, c);
                j = j1;
              }
              mx = hmax(a);
              mn = hmin(c);
            } else if (!pruned) {
              mx = mn = values[j] * xr[idx[j]];
              ++j;
            }
          } else
#endif
          if (!pruned) {
            mx = mn = values[j] * xr[idx[j]];
            ++j;
          }
          for (; j < j1; ++j) {
            const T p = values[j] * xr[idx[j]];
            mx = mamext_fold_max(mx, p);
            mn = mamext_fold_min(mn, p);
          }
          v = mx + mn;
        } else {
          T acc = T(0);
          for (; j < j1; ++j) acc += values[j] * xr[idx[j]];
          v = acc;
        }
      } else {
        int64_t seen = 0;  // non-finite inputs on kept connections
        bool isnan = false;
        T mx = T(0), mn = T(0), acc = T(0);
        bool first = MAM && !pruned;
        for (; j < j1; ++j) {
          const T xv = xr[idx[j]];
          seen += !is_finite(xv);
          const T p = values[j] * xv;
          if (p != p) isnan = true;
          fold<MAM>(p, first, mx, mn, acc);
        }
        v = MAM ? mx + mn : acc;
        if (isnan || (pruned && seen != bad)) v = nan;
      }
      if (bias) v = v + bias[n];
      out[m * N + n] = v;
    }
  }
}

template <typename T, bool MAM>
void fill_index_variants(PackedTileFn<T>* t, PackedColsFn<T>* tc, PackedRowsFn<T>* r, PackedRowsFn<T>* rc) {
  t[0] = &tile<T, uint8_t, MAM>;
  t[1] = &tile<T, int16_t, MAM>;
  t[2] = &tile<T, int32_t, MAM>;
  tc[0] = &tile_cols<T, uint8_t, MAM>;
  tc[1] = &tile_cols<T, int16_t, MAM>;
  tc[2] = &tile_cols<T, int32_t, MAM>;
  r[0] = &rows<T, uint8_t, MAM, false>;
  r[1] = &rows<T, int16_t, MAM, false>;
  r[2] = &rows<T, int32_t, MAM, false>;
  rc[0] = &rows<T, uint8_t, MAM, true>;
  rc[1] = &rows<T, int16_t, MAM, true>;
  rc[2] = &rows<T, int32_t, MAM, true>;
}

template <typename T>
PackedFloatKernels<T> float_kernels() {
  PackedFloatKernels<T> k{};
  k.tile_neurons = NB;
  k.tile_batch = batch_width<T>();
  k.panel = &panel<T>;
  k.all_finite = &all_finite<T>;
  fill_index_variants<T, false>(k.tile[0], k.tile_cols[0], k.rows[0], k.rows_checked[0]);
  fill_index_variants<T, true>(k.tile[1], k.tile_cols[1], k.rows[1], k.rows_checked[1]);
  return k;
}

// ---------------------------------------------------------------------------
// int8. The quantisation below is mirrored exactly by the C export
// (python/mamext/export.py); change both together.
//   amax = max_k |x[k]| (a non-finite input makes the sample's scale NaN and
//   all its outputs NaN); amax < 1e-30 -> all zeros, scale 0;
//   inv = 127 / amax; q[k] = round_half_even(x[k] * inv) clamped to +-127;
//   scale = amax / 127.
// Output: float(acc) * (wscale[n] * scale) (+ bias[n]), single roundings, no FMA.
// ---------------------------------------------------------------------------
// mamext_round_q: common/mam_semantics.h (shared with the CUDA kernels and the C export).

void quantize(const float* x, int64_t K, int32_t* xq, float* sx, int64_t m0, int64_t m1) {
  for (int64_t b = m0; b < m1; ++b) {
    const float* xr = x + b * K;
    int32_t* qr = xq + b * K;
    // max |x| with vectors (max is an exact selection: any order gives the
    // C export's sequential result on finite data); x * 0 flags NaN/inf.
    using V = Vec<float>;
    constexpr int L = V::L;
    const auto z = V::zero(), m1 = V::bcast(-1.0f);
    auto vmax = z, fin = z;
    int64_t k = 0;
    for (; k + L <= K; k += L) {
      const auto v = V::load(xr + k);
      vmax = V::max(vmax, V::max(v, V::mul(v, m1)));
      fin = V::add(fin, V::mul(v, z));
    }
    if (k < K) {
      const auto v = V::load_n(xr + k, static_cast<int>(K - k));
      vmax = V::max(vmax, V::max(v, V::mul(v, m1)));
      fin = V::add(fin, V::mul(v, z));
    }
    const bool bad = V::eq(fin, z) != ((1u << L) - 1u);
    alignas(64) float lanes[L];
    V::store(lanes, vmax);
    float amax = 0.0f;
    for (int l = 0; l < L; ++l) amax = lanes[l] > amax ? lanes[l] : amax;
    if (bad || amax < 1e-30f) {
      for (int64_t k = 0; k < K; ++k) qr[k] = 0;
      sx[b] = bad ? __builtin_nanf("") : 0.0f;
      continue;
    }
    const float inv = 127.0f / amax;
    for (int64_t k = 0; k < K; ++k) qr[k] = mamext_round_q(xr[k] * inv);
    sx[b] = amax / 127.0f;
  }
}

inline Vec<float>::R to_float(Vec<int32_t>::R a) {
#if defined(MAMEXT_ISA_AVX512)
  return _mm512_cvtepi32_ps(a);
#elif defined(MAMEXT_ISA_AVX2)
  return _mm256_cvtepi32_ps(a);
#elif defined(MAMEXT_ISA_NEON)
  return vcvtq_f32_s32(a);
#else
  Vec<float>::R r;
  for (int l = 0; l < Vec<float>::L; ++l) r.v[l] = static_cast<float>(a.v[l]);
  return r;
#endif
}

// int32 codes of nb samples (row major, rows of K) -> panel (K x pw), zero padded.
bool panel_i32(const int32_t* x, int64_t K, int64_t nb, int64_t pw, int32_t* p) {
  return panel_impl<int32_t, false>(x, K, nb, pw, p);
}

// Same structure as the float tile: exact int32 max + min (or sum) per lane,
// then out = float(acc) * (wscale[n] * sx[b]) (+ bias[n]) per lane (the same
// single roundings as the scalar formula), transposed into out.
template <typename I, bool MAM>
void tile_i8(const int32_t* p, int64_t pw, int64_t nb, const int8_t* values, const void* indices,
             const int64_t* off, const float* wscale, const float* bias, const float* sx, int64_t K, float* out,
             int64_t N, int64_t n0, int64_t n1) {
  using VF = Vec<float>;
  constexpr int L = Vec<int32_t>::L;
  static_assert(L == VF::L, "int32 and float vectors must have the same width");
  constexpr int BW = batch_width<int32_t>();
  const I* idx = static_cast<const I*>(indices);
  alignas(64) int32_t acc[NB * BW];
  alignas(64) float res[NB * BW];
  alignas(64) float sxb[BW];
  for (int64_t s = 0; s < BW; ++s) sxb[s] = s < nb ? sx[s] : 0.0f;
  const int nv = static_cast<int>((nb + L - 1) / L);
  for (int64_t nn = n0; nn < n1; nn += NB) {
    const int64_t nn1 = imin(nn + NB, n1);
    accumulate_nv<int32_t, int8_t, I, MAM>(nv, p, pw, 0, L, values, idx, off, nullptr, K, nn, nn1, acc, BW);
    for (int64_t n = nn; n < nn1; ++n) {
      const auto ws = VF::bcast(wscale[n]);
      const auto bv = VF::bcast(bias ? bias[n] : 0.0f);
      const int32_t* ar = acc + (n - nn) * BW;
      float* rr = res + (n - nn) * BW;
      for (int v = 0; v < nv; ++v) {
        auto r = VF::mul(to_float(Vec<int32_t>::load(ar + v * L)), VF::mul(ws, VF::load(sxb + v * L)));
        if (bias) r = VF::add(r, bv);
        VF::store(rr + v * L, r);
      }
    }
    store_transposed<float, BW>(res, nb, nn1 - nn, out, N, nn);
  }
}

// Tiny batches (the single-sample case): per sample and neuron, the exact
// int32 max + min (or sum) over the kept connections. Integer arithmetic is
// exact, so whole vectors of connections (gathers of the sample's codes)
// reduce in any order to the scalar result; the remainder is scalar.
#if defined(MAMEXT_ISA_AVX512)
template <typename I>
inline __m512i gather_products_i8(const int32_t* q, const int8_t* w, const I* idx) {
  const __m512i wv = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
  return _mm512_mullo_epi32(wv, _mm512_i32gather_epi32(load_index16(idx), q, 4));
}
inline int32_t hmax_i32(__m512i v) { return _mm512_reduce_max_epi32(v); }
inline int32_t hmin_i32(__m512i v) { return _mm512_reduce_min_epi32(v); }
inline int32_t hsum_i32(__m512i v) { return _mm512_reduce_add_epi32(v); }
#elif defined(MAMEXT_ISA_AVX2)
template <typename I>
inline __m256i gather_products_i8(const int32_t* q, const int8_t* w, const I* idx) {
  const __m256i wv = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w)));
  return _mm256_mullo_epi32(wv, _mm256_i32gather_epi32(q, load_index8(idx), 4));
}
inline int32_t hmax_i32(__m256i v) { return hreduce<int32_t>(v, [](int32_t a, int32_t b) { return a > b ? a : b; }); }
inline int32_t hmin_i32(__m256i v) { return hreduce<int32_t>(v, [](int32_t a, int32_t b) { return a < b ? a : b; }); }
inline int32_t hsum_i32(__m256i v) { return hreduce<int32_t>(v, [](int32_t a, int32_t b) { return a + b; }); }
#endif

template <typename I, bool MAM>
void rows_i8(const int32_t* xq, int64_t K, const int8_t* values, const void* indices, const int64_t* off,
             const float* wscale, const float* bias, const float* sx, float* out, int64_t N, int64_t n0, int64_t n1,
             int64_t m0, int64_t m1) {
  const I* idx = static_cast<const I*>(indices);
  for (int64_t m = m0; m < m1; ++m) {
    const int32_t* q = xq + m * K;
    for (int64_t n = n0; n < n1; ++n) {
      int64_t j = off[n];
      const int64_t j1 = off[n + 1];
      const bool pruned = j1 - j < K;
      int32_t mx = 0, mn = 0, acc = 0;
      bool first = MAM && !pruned;
#if defined(MAMEXT_ISA_AVX512) || defined(MAMEXT_ISA_AVX2)
      using V = Vec<int32_t>;
      constexpr int L = V::L;
      if (j1 - j >= L) {
        auto a = V::zero(), c = V::zero();
        if (first) {
          a = c = gather_products_i8(q, values + j, idx + j);
          j += L;
          first = false;
        }
        for (; j + L <= j1; j += L) {
          const auto p = gather_products_i8(q, values + j, idx + j);
          if constexpr (MAM) {
            a = V::max(p, a);
            c = V::min(p, c);
          } else {
            a = V::add(a, p);
          }
        }
        if constexpr (MAM) {
          mx = hmax_i32(a);
          mn = hmin_i32(c);
        } else {
          acc = hsum_i32(a);
        }
      }
#endif
      for (; j < j1; ++j) {
        fold<MAM>(static_cast<int32_t>(values[j]) * q[idx[j]], first, mx, mn, acc);
      }
      const float scale = wscale[n] * sx[m];
      float v = static_cast<float>(MAM ? mx + mn : acc) * scale;
      if (bias) v = v + bias[n];
      out[m * N + n] = v;
    }
  }
}

PackedInt8Kernels int8_kernels() {
  PackedInt8Kernels k{};
  k.tile_neurons = NB;
  k.tile_batch = batch_width<int32_t>();
  k.quantize = &quantize;
  k.panel = &panel_i32;
  k.rows[0][0] = &rows_i8<uint8_t, false>;
  k.rows[0][1] = &rows_i8<int16_t, false>;
  k.rows[0][2] = &rows_i8<int32_t, false>;
  k.rows[1][0] = &rows_i8<uint8_t, true>;
  k.rows[1][1] = &rows_i8<int16_t, true>;
  k.rows[1][2] = &rows_i8<int32_t, true>;
  k.tile[0][0] = &tile_i8<uint8_t, false>;
  k.tile[0][1] = &tile_i8<int16_t, false>;
  k.tile[0][2] = &tile_i8<int32_t, false>;
  k.tile[1][0] = &tile_i8<uint8_t, true>;
  k.tile[1][1] = &tile_i8<int16_t, true>;
  k.tile[1][2] = &tile_i8<int32_t, true>;
  return k;
}

}  // namespace

const PackedKernelTable& packed_kernel_table() {
  static const PackedKernelTable table{kCapability, float_kernels<float>(), float_kernels<double>(), int8_kernels()};
  return table;
}

}  // namespace mamext::cpu::MAMEXT_ISA
