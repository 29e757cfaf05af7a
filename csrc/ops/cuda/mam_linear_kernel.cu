// CUDA forward kernels of the dense MAM layer (inference and training forward).
//
//   y[m, n] = max_k(x[m, k] * w[n, k]) + min_k(x[m, k] * w[n, k]) + b[n]
//
// float32 / float16 / bfloat16: a SIMT tiled kernel in the style of an SGEMM.
// A CTA of 256 threads owns a BM x BN tile of outputs and walks K in tiles of
// BK = 16: x and w tiles are loaded from global memory (4-wide vector loads
// when rows are aligned) into registers, converted to float32 and stored
// transposed into double-buffered shared memory while the previous tile is
// being consumed; each thread keeps a TM x TN register tile of running max and
// min (one FMUL and two FMNMX per product).
//
// Exactness (values and indices equal to the CPU kernel's, bit for bit):
// * products are rounded once (__fmul_rn) and compared exactly;
// * the running max starts at -inf and the running min at +inf (never a
//   "smallest positive float"), so all-negative neurons are right;
// * indices (training forward) are not tracked per product. At the end of
//   every k tile (a block of BK consecutive k) each accumulator is compared
//   with its value at the end of the previous tile; if it changed, the tile
//   number is recorded. The running value only changes on a strictly greater
//   (smaller) product, so the recorded tile is the one holding the lowest k
//   that attains the final value. The epilogue recomputes that tile's BK
//   products and takes the first one equal to the final value: its k is the
//   index and its bits are the value (so, for signed zeros, the value is the
//   one at the first index, as torch.max along a dim returns).
// * NaN: rows of x or w holding a NaN or an infinity are detected while the
//   tiles are loaded (v * 0 + acc stays 0 unless v is not finite); outputs
//   touching such a row are recomputed in the epilogue by a sequential-order
//   warp scan with torch.max/min semantics (the first NaN wins and both indices
//   point at it), exactly like the CPU kernel's slow path.
// * inference only (no indices): when max and min are both zero, every
//   product is a (signed) zero and the value at the first index is x[m,0]*w[n,0].
// * output = (max + min) + bias, in float32, rounded once to the input dtype.
//
// Small batches (M < 32) use a 32-row tile (4 x 4 outputs per thread), so a
// batch of 8 does not leave three quarters of a 128-row tile idle.
//
// Split K: when the output tiles are too few to occupy the GPU (at most half
// the SMs), each tile's K range is cut into slices of whole k tiles, one block
// per (tile, slice). A block computes its slice's exact partial result with the
// same rules (value at the first index inside the slice, first NaN of the
// slice) into a workspace, and a second kernel combines the slices in order:
// a later slice replaces the running max only when strictly greater (the
// earlier slice wins ties, so the lowest index and its signed zero win), the
// first slice holding a NaN gives the output NaN and its index. Inference
// keeps values only (NaN propagates; when max and min both end at zero the
// value is again the first product).
//
// float64: a plain shared-memory tiled kernel, one output per thread, with the
// sequential semantics inline (the issue allows a simple kernel here).
#include <climits>
#include <cstdint>

#include "common/mam_fold.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/mam_linear_kernel.h"

namespace mamext::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBK = 16;  // k per shared-memory tile == k per index-tracking block

constexpr int kSmallM = 32;  // batches below this use the small tile
constexpr int kMaxSlices = 32;
constexpr int kMinTilesPerSlice = 8;  // k tiles (of kBK) per slice at least

// Tile shapes. Index tracking needs 6 registers per output (value, value at the
// last tile end, tile number; for max and for min), so its register tile is
// half as wide. SMALL: the tile for batches below kSmallM.
template <bool TRACK, bool SMALL>
struct Cfg;
template <>
struct Cfg<false, false> {
  static constexpr int BM = 128, BN = 128, TM = 8, TN = 8;
};
template <>
struct Cfg<true, false> {
  static constexpr int BM = 128, BN = 64, TM = 8, TN = 4;
};
template <bool TRACK>
struct Cfg<TRACK, true> {
  static constexpr int BM = kSmallM, BN = 128, TM = 4, TN = 4;
};

// Partial results of the K slices (split K), [slice][m][n]; vmax == nullptr
// when K is not split. imax / imin only with index tracking.
struct Partial {
  float* vmax;
  float* vmin;
  int32_t* imax;
  int32_t* imin;
};

// Four consecutive elements row[k .. k+3] as float; zeros past the row end or
// for a missing row. vec: the row start and K are multiples of 4 elements and
// the base pointer is aligned, so one vector load is in bounds when k < K.
template <typename T>
__device__ __forceinline__ void load4_guarded(const T* row, bool row_ok, int64_t k, int64_t K, bool vec,
                                              float v[4]) {
  if (vec) {
    if (row_ok && k < K) {
      Elem<T>::load4(row + k, v);
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e) v[e] = 0.f;
    }
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = (row_ok && k + e < K) ? Elem<T>::load(row + k + e) : 0.f;
  }
}

// First k in tile `blk` with x[k] * w[k] == target; val receives that product.
template <typename T>
__device__ __forceinline__ int32_t recover_index(const T* xr, const T* wr, int64_t K, int32_t blk, float target,
                                                 bool vec, float& val) {
  const int64_t k0 = int64_t(blk) * kBK;
  unsigned mask = 0;
  float pv[kBK];
#pragma unroll
  for (int q = 0; q < kBK; q += 4) {
    float xa[4], wa[4];
    load4_guarded(xr, true, k0 + q, K, vec, xa);
    load4_guarded(wr, true, k0 + q, K, vec, wa);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float p = mul_rn(xa[e], wa[e]);
      pv[q + e] = p;
      if (k0 + q + e < K && p == target) mask |= 1u << (q + e);
    }
  }
  // mask is never empty (target is one of these products); be safe anyway.
  const int first = mask ? __ffs(static_cast<int>(mask)) - 1 : 0;
  val = target;
#pragma unroll
  for (int q = 0; q < kBK; ++q)
    if (mask && q == first) val = pv[q];
  return static_cast<int32_t>(k0 + first);
}

// One warp computes output (m, n) over k in [kb, ke) in the CPU slow path's
// sequential semantics: the first NaN product wins (value NaN, both indices at
// it); otherwise the first maximum / minimum. Every lane gets the result.
template <typename T>
__device__ void scan_warp(const T* xr, const T* wr, int64_t kb, int64_t ke, int lane, float& vmax, float& vmin,
                          int32_t& ia, int32_t& ib) {
  int32_t nan_k = INT_MAX, imx = INT_MAX, imn = INT_MAX;
  float bmx = 0.f, bmn = 0.f;
  for (int64_t k = kb + lane; k < ke; k += 32) {
    const float p = mul_rn(Elem<T>::load(xr + k), Elem<T>::load(wr + k));
    if (p != p) {
      nan_k = static_cast<int32_t>(k);
      break;
    }
    if (imx == INT_MAX || mamext_fold_wins_max(bmx, p)) {
      bmx = p;
      imx = static_cast<int32_t>(k);
    }
    if (imn == INT_MAX || mamext_fold_wins_min(bmn, p)) {
      bmn = p;
      imn = static_cast<int32_t>(k);
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const int32_t onan = __shfl_xor_sync(kFullMask, nan_k, off);
    const float ox = __shfl_xor_sync(kFullMask, bmx, off);
    const int32_t oix = __shfl_xor_sync(kFullMask, imx, off);
    const float on = __shfl_xor_sync(kFullMask, bmn, off);
    const int32_t oin = __shfl_xor_sync(kFullMask, imn, off);
    nan_k = min(nan_k, onan);
    // Lanes hold different k: merge by value, the lower index breaking ties
    // (the sequential fold of common/mam_semantics.h).
    if (oix != INT_MAX && (imx == INT_MAX || ox > bmx || (ox == bmx && oix < imx))) {
      bmx = ox;
      imx = oix;
    }
    if (oin != INT_MAX && (imn == INT_MAX || on < bmn || (on == bmn && oin < imn))) {
      bmn = on;
      imn = oin;
    }
  }
  if (nan_k != INT_MAX) {
    const float p = mul_rn(Elem<T>::load(xr + nan_k), Elem<T>::load(wr + nan_k));
    vmax = vmin = p;
    ia = ib = nan_k;
  } else {
    vmax = bmx;
    vmin = bmn;
    ia = imx;
    ib = imn;
  }
}

template <typename T>
__device__ __forceinline__ void write_output(T* out, const T* bias, int64_t m, int64_t n, int64_t N, float vmax,
                                             float vmin) {
  float v = add_rn(vmax, vmin);
  if (bias) v = add_rn(v, Elem<T>::load(bias + n));
  out[m * N + n] = Elem<T>::from_acc(v);
}

// Writes output (m, n), or the slice's partial result when K is split.
template <typename T, bool TRACK>
__device__ __forceinline__ void emit(T* out, const T* bias, int32_t* amax, int32_t* amin, const Partial& part,
                                     int64_t slice_off, int64_t m, int64_t n, int64_t N, float vmax, float vmin,
                                     int32_t ia, int32_t ib) {
  const int64_t o = m * N + n;
  if (part.vmax) {
    part.vmax[slice_off + o] = vmax;
    part.vmin[slice_off + o] = vmin;
    if constexpr (TRACK) {
      part.imax[slice_off + o] = ia;
      part.imin[slice_off + o] = ib;
    }
    return;
  }
  write_output(out, bias, m, n, N, vmax, vmin);
  if constexpr (TRACK) {
    amax[o] = ia;
    amin[o] = ib;
  }
}

// Block b of the grid (b = tile_base + blockIdx.x) computes output tile
// b / slices over the K slice b % slices (kt_per k tiles of kBK each).
template <typename T, bool TRACK, bool SMALL>
__global__ void __launch_bounds__(kThreads)
    forward_tiled(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias, T* __restrict__ out,
                  int32_t* __restrict__ amax, int32_t* __restrict__ amin, int64_t M, int64_t N, int64_t K,
                  int64_t tiles_n, int64_t tile_base, bool vec, int slices, int64_t kt_per, Partial part) {
  using C = Cfg<TRACK, SMALL>;
  constexpr int BM = C::BM, BN = C::BN, TM = C::TM, TN = C::TN, BK = kBK;
  constexpr int TX = BN / TN;  // threads along n
  static_assert(TX * (BM / TM) == kThreads, "thread tile does not cover the CTA tile");
  static_assert(kThreads % BM == 0 && kThreads % BN == 0, "each thread must load from one row");
  static_assert(TM % 4 == 0 && TN % 4 == 0, "register tile is read as float4");
  constexpr int XLOADS = BM * BK / 4;  // 4-wide loads per x tile (fewer than the threads for the small tile)
  constexpr int XL = XLOADS >= kThreads ? XLOADS / kThreads : 1;  // per thread
  static_assert(XLOADS % kThreads == 0 || kThreads % XLOADS == 0, "x loads must split evenly");
  constexpr int WL = BN * BK / 4 / kThreads;
  constexpr int XKS = kThreads / BM;  // k-group stride between one thread's loads
  constexpr int WKS = kThreads / BN;
  constexpr int RSM = BM / (TM / 4);  // distance between a thread's 4-row chunks
  constexpr int RSN = BN / (TN / 4);

  __shared__ __align__(16) float xs[2][BK][BM];
  __shared__ __align__(16) float ws[2][BK][BN];
  __shared__ int xbad[BM];
  __shared__ int wbad[BN];

  const int tid = threadIdx.x;
  const int tx = tid % TX, ty = tid / TX;
  const int64_t block = tile_base + blockIdx.x;
  const int64_t tile = block / slices;
  const int64_t slice = block - tile * slices;
  const int64_t m0 = (tile / tiles_n) * BM, n0 = (tile % tiles_n) * BN;
  const int64_t ktiles = (K + BK - 1) / BK;
  const int64_t kt_begin = slice * kt_per;
  const int64_t kt_end = kt_begin + kt_per < ktiles ? kt_begin + kt_per : ktiles;
  const int64_t k_begin = kt_begin * BK, k_end = kt_end * BK < K ? kt_end * BK : K;
  const int64_t slice_off = slice * M * N;

  if (tid < BM) xbad[tid] = 0;
  if (tid < BN) wbad[tid] = 0;

  // Global -> register staging: each thread always loads from one x row and
  // one w row.
  const int xr = tid % BM, xkg = tid / BM;
  const bool xloader = XLOADS >= kThreads || tid < XLOADS;
  const int wr = tid % BN, wkg = tid / BN;
  const bool xrow_ok = m0 + xr < M, wrow_ok = n0 + wr < N;
  const T* xrow = x + (xrow_ok ? m0 + xr : 0) * K;
  const T* wrow = w + (wrow_ok ? n0 + wr : 0) * K;
  float xv[XL][4], wv[WL][4];
  float xfin = 0.f, wfin = 0.f;  // stay 0 unless a NaN / inf was loaded

  auto load_tile = [&](int64_t k0) {
#pragma unroll
    for (int l = 0; l < XL; ++l) {
      if (!xloader) break;
      load4_guarded(xrow, xrow_ok, k0 + (xkg + l * XKS) * 4, K, vec, xv[l]);
#pragma unroll
      for (int e = 0; e < 4; ++e) xfin = __fmaf_rn(xv[l][e], 0.f, xfin);
    }
#pragma unroll
    for (int l = 0; l < WL; ++l) {
      load4_guarded(wrow, wrow_ok, k0 + (wkg + l * WKS) * 4, K, vec, wv[l]);
#pragma unroll
      for (int e = 0; e < 4; ++e) wfin = __fmaf_rn(wv[l][e], 0.f, wfin);
    }
  };
  auto store_tile = [&](int buf) {
#pragma unroll
    for (int l = 0; l < XL; ++l)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (xloader) xs[buf][(xkg + l * XKS) * 4 + e][xr] = xv[l][e];
#pragma unroll
    for (int l = 0; l < WL; ++l)
#pragma unroll
      for (int e = 0; e < 4; ++e) ws[buf][(wkg + l * WKS) * 4 + e][wr] = wv[l][e];
  };

  float mx[TM][TN], mn[TM][TN];
  float smx[TRACK ? TM : 1][TRACK ? TN : 1], smn[TRACK ? TM : 1][TRACK ? TN : 1];
  int32_t bmx[TRACK ? TM : 1][TRACK ? TN : 1], bmn[TRACK ? TM : 1][TRACK ? TN : 1];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      mx[i][j] = -INFINITY;
      mn[i][j] = INFINITY;
      if constexpr (TRACK) {
        smx[i][j] = -INFINITY;
        smn[i][j] = INFINITY;
        bmx[i][j] = static_cast<int32_t>(kt_begin);
        bmn[i][j] = static_cast<int32_t>(kt_begin);
      }
    }

  auto step = [&](int buf, int k) {
    float a[TM], b[TN];
#pragma unroll
    for (int c = 0; c < TM / 4; ++c) {
      const float4 q = *reinterpret_cast<const float4*>(&xs[buf][k][c * RSM + ty * 4]);
      a[c * 4 + 0] = q.x;
      a[c * 4 + 1] = q.y;
      a[c * 4 + 2] = q.z;
      a[c * 4 + 3] = q.w;
    }
#pragma unroll
    for (int c = 0; c < TN / 4; ++c) {
      const float4 q = *reinterpret_cast<const float4*>(&ws[buf][k][c * RSN + tx * 4]);
      b[c * 4 + 0] = q.x;
      b[c * 4 + 1] = q.y;
      b[c * 4 + 2] = q.z;
      b[c * 4 + 3] = q.w;
    }
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const float p = mul_rn(a[i], b[j]);
        // Value only, NaN-free data: fmaxf/fminf give the fold of
        // common/mam_semantics.h up to the sign of a tied zero, which the
        // code after the loop settles (recover_index / the zero case).
        mx[i][j] = fmaxf(mx[i][j], p);
        mn[i][j] = fminf(mn[i][j], p);
      }
  };

  load_tile(k_begin);
  store_tile(0);
  __syncthreads();
  for (int64_t kt = kt_begin; kt < kt_end; ++kt) {
    const int buf = static_cast<int>((kt - kt_begin) & 1);
    const bool has_next = kt + 1 < kt_end;
    if (has_next) load_tile((kt + 1) * BK);
    const int64_t k0 = kt * BK;
    if (k0 + BK <= K) {
#pragma unroll
      for (int k = 0; k < BK; ++k) step(buf, k);
    } else {
      const int kn = static_cast<int>(K - k0);
#pragma unroll 1
      for (int k = 0; k < kn; ++k) step(buf, k);
    }
    if constexpr (TRACK) {
      const int32_t blk = static_cast<int32_t>(kt);
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          if (mx[i][j] != smx[i][j]) bmx[i][j] = blk;
          if (mn[i][j] != smn[i][j]) bmn[i][j] = blk;
          smx[i][j] = mx[i][j];
          smn[i][j] = mn[i][j];
        }
    }
    if (has_next) store_tile(buf ^ 1);
    __syncthreads();
  }

  // Rows holding a NaN or an infinity.
  if (xfin != 0.f) xbad[xr] = 1;
  if (wfin != 0.f) wbad[wr] = 1;
  __syncthreads();

  bool anybad = false;
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int r = (i / 4) * RSM + ty * 4 + (i % 4);
    const int64_t m = m0 + r;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int c = (j / 4) * RSN + tx * 4 + (j % 4);
      const int64_t n = n0 + c;
      if (m >= M || n >= N) continue;
      if (xbad[r] | wbad[c]) {
        anybad = true;
        continue;
      }
      float vmax = mx[i][j], vmin = mn[i][j];
      int32_t ia = 0, ib = 0;
      if constexpr (TRACK) {
        const T* xm = x + m * K;
        const T* wn = w + n * K;
        ia = recover_index(xm, wn, K, bmx[i][j], mx[i][j], vec, vmax);
        ib = recover_index(xm, wn, K, bmn[i][j], mn[i][j], vec, vmin);
      } else {
        // all products are zeros: the first one's sign (the combine does this for a split K)
        if (vmax == 0.f && vmin == 0.f && !part.vmax)
          vmax = vmin = mul_rn(Elem<T>::load(x + m * K), Elem<T>::load(w + n * K));
      }
      emit<T, TRACK>(out, bias, amax, amin, part, slice_off, m, n, N, vmax, vmin, ia, ib);
    }
  }

  // Outputs that touch a non-finite row: exact sequential semantics.
  if (__syncthreads_or(anybad)) {
    const int warp = tid / 32, lane = tid % 32;
    for (int o = warp; o < BM * BN; o += kThreads / 32) {
      const int r = o / BN, c = o % BN;
      const int64_t m = m0 + r, n = n0 + c;
      if (m >= M || n >= N || !(xbad[r] | wbad[c])) continue;
      float vmax, vmin;
      int32_t ia, ib;
      scan_warp(x + m * K, w + n * K, k_begin, k_end, lane, vmax, vmin, ia, ib);
      if (lane == 0) emit<T, TRACK>(out, bias, amax, amin, part, slice_off, m, n, N, vmax, vmin, ia, ib);
    }
  }
}

// float64: one output per thread, 16 x 16 outputs per CTA, sequential k order.
constexpr int kTS = 16;

__global__ void __launch_bounds__(kTS* kTS)
    forward_f64(const double* __restrict__ x, const double* __restrict__ w, const double* __restrict__ bias,
                double* __restrict__ out, int32_t* __restrict__ amax, int32_t* __restrict__ amin, int64_t M,
                int64_t N, int64_t K, int64_t tiles_n, int64_t tile_base) {
  __shared__ double xs[kTS][kTS + 1];
  __shared__ double ws[kTS][kTS + 1];
  const int tx = threadIdx.x % kTS, ty = threadIdx.x / kTS;
  const int64_t tile = tile_base + blockIdx.x;
  const int64_t m0 = (tile / tiles_n) * kTS, n0 = (tile % tiles_n) * kTS;
  const int64_t m = m0 + ty, n = n0 + tx;
  double mx = -INFINITY, mn = INFINITY;
  int32_t ia = 0, ib = 0;
  bool nan = false;
  for (int64_t k0 = 0; k0 < K; k0 += kTS) {
    const int64_t k = k0 + tx;
    xs[ty][tx] = (m0 + ty < M && k < K) ? x[(m0 + ty) * K + k] : 0.0;
    ws[ty][tx] = (n0 + ty < N && k < K) ? w[(n0 + ty) * K + k] : 0.0;
    __syncthreads();
    const int kn = static_cast<int>(K - k0 < kTS ? K - k0 : kTS);
    for (int kk = 0; kk < kn; ++kk) {
      const double p = mul_rn(xs[ty][kk], ws[tx][kk]);
      if (nan) break;
      if (p != p) {
        nan = true;
        mx = mn = p;
        ia = ib = static_cast<int32_t>(k0 + kk);
      } else {
        if (mamext_fold_wins_max(mx, p)) {
          mx = p;
          ia = static_cast<int32_t>(k0 + kk);
        }
        if (mamext_fold_wins_min(mn, p)) {
          mn = p;
          ib = static_cast<int32_t>(k0 + kk);
        }
      }
    }
    __syncthreads();
  }
  if (m < M && n < N) {
    double v = add_rn(mx, mn);
    if (bias) v = add_rn(v, bias[n]);
    out[m * N + n] = v;
    if (amax) {
      amax[m * N + n] = ia;
      amin[m * N + n] = ib;
    }
  }
}

constexpr int64_t kMaxGrid = 0x7fffffff;

// Combines the K slices' partial results in slice order (see the top of the
// file) and writes the outputs; one thread per output.
template <typename T, bool TRACK>
__global__ void __launch_bounds__(kThreads)
    combine_slices(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                   T* __restrict__ out, int32_t* __restrict__ amax, int32_t* __restrict__ amin, int64_t M, int64_t N,
                   int64_t K, int slices, const Partial part) {
  const int64_t total = M * N;
  for (int64_t o = int64_t(blockIdx.x) * kThreads + threadIdx.x; o < total; o += int64_t(gridDim.x) * kThreads) {
    float vmax = part.vmax[o], vmin = part.vmin[o];
    int32_t ia = 0, ib = 0;
    if constexpr (TRACK) {
      ia = part.imax[o];
      ib = part.imin[o];
    }
    bool nan = vmax != vmax;  // a slice with a NaN product has NaN in both
    for (int s = 1; s < slices && !nan; ++s) {
      const int64_t so = s * total + o;
      const float a = part.vmax[so], b = part.vmin[so];
      if (a != a) {
        nan = true;
        vmax = vmin = a;
        if constexpr (TRACK) ia = ib = part.imax[so];
      } else {
        if (a > vmax) {  // strictly greater: the earlier slice keeps a tie
          vmax = a;
          if constexpr (TRACK) ia = part.imax[so];
        }
        if (b < vmin) {
          vmin = b;
          if constexpr (TRACK) ib = part.imin[so];
        }
      }
    }
    const int64_t m = o / N, n = o - m * N;
    if constexpr (TRACK) {
      amax[o] = ia;
      amin[o] = ib;
    } else {
      if (!nan && vmax == 0.f && vmin == 0.f)  // all products are zeros: the first one's sign
        vmax = vmin = mul_rn(Elem<T>::load(x + m * K), Elem<T>::load(w + n * K));
    }
    write_output(out, bias, m, n, N, vmax, vmin);
  }
}

template <bool TRACK, bool SMALL>
int64_t output_tiles(int64_t M, int64_t N) {
  using C = Cfg<TRACK, SMALL>;
  return ((M + C::BM - 1) / C::BM) * ((N + C::BN - 1) / C::BN);
}

// k tiles per slice for a request of `slices` slices (no slice left empty).
int64_t tiles_per_slice(int64_t K, int slices) {
  const int64_t ktiles = (K + kBK - 1) / kBK;
  const int64_t s = slices < 1 ? 1 : slices;
  const int64_t per = (ktiles + s - 1) / s;
  return per < 1 ? 1 : per;
}

template <typename T, bool TRACK, bool SMALL>
cudaError_t launch_tiled(const T* x, const T* w, const T* bias, T* out, int32_t* amax, int32_t* amin, int64_t M,
                         int64_t N, int64_t K, int slices_req, void* workspace, cudaStream_t stream) {
  using C = Cfg<TRACK, SMALL>;
  const int64_t tiles_n = (N + C::BN - 1) / C::BN;
  const int64_t tiles = output_tiles<TRACK, SMALL>(M, N);
  constexpr int64_t vec_bytes = 4 * sizeof(T);
  const bool vec = K % 4 == 0 && reinterpret_cast<uintptr_t>(x) % vec_bytes == 0 &&
                   reinterpret_cast<uintptr_t>(w) % vec_bytes == 0;
  const int64_t kt_per = tiles_per_slice(K, slices_req);
  const int64_t ktiles = (K + kBK - 1) / kBK;
  const int slices = slices_req > 1 ? static_cast<int>((ktiles + kt_per - 1) / kt_per) : 1;
  Partial part{nullptr, nullptr, nullptr, nullptr};
  if (slices > 1) {
    const int64_t n = int64_t(slices) * M * N;
    part.vmax = static_cast<float*>(workspace);
    part.vmin = part.vmax + n;
    if (TRACK) {
      part.imax = reinterpret_cast<int32_t*>(part.vmin + n);
      part.imin = part.imax + n;
    }
  }
  const int64_t blocks = tiles * slices;
  for (int64_t base = 0; base < blocks; base += kMaxGrid) {
    const unsigned grid = static_cast<unsigned>(blocks - base < kMaxGrid ? blocks - base : kMaxGrid);
    const auto kernel = forward_tiled<T, TRACK, SMALL>;
    MAMEXT_LAUNCH(kernel, grid, kThreads, stream, x, w, bias, out, amax, amin, M, N, K, tiles_n, base, vec,
                  slices, slices > 1 ? kt_per : ktiles, part);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (slices > 1) {
    const int64_t want = (M * N + kThreads - 1) / kThreads;
    const unsigned grid = static_cast<unsigned>(want < (int64_t(1) << 20) ? want : (int64_t(1) << 20));
    const auto kernel = combine_slices<T, TRACK>;
    MAMEXT_LAUNCH(kernel, grid, kThreads, stream, x, w, bias, out, amax, amin, M, N, K, slices, part);
    return cudaGetLastError();
  }
  return cudaSuccess;
}

template <typename T>
cudaError_t launch_typed(const void* x, const void* w, const void* bias, void* out, int32_t* amax, int32_t* amin,
                         int64_t M, int64_t N, int64_t K, int slices, void* workspace, cudaStream_t stream) {
  const T* xp = static_cast<const T*>(x);
  const T* wp = static_cast<const T*>(w);
  const T* bp = static_cast<const T*>(bias);
  T* op = static_cast<T*>(out);
  const bool small = M < kSmallM;
  if (amax) {
    if (small) return launch_tiled<T, true, true>(xp, wp, bp, op, amax, amin, M, N, K, slices, workspace, stream);
    return launch_tiled<T, true, false>(xp, wp, bp, op, amax, amin, M, N, K, slices, workspace, stream);
  }
  if (small) return launch_tiled<T, false, true>(xp, wp, bp, op, nullptr, nullptr, M, N, K, slices, workspace, stream);
  return launch_tiled<T, false, false>(xp, wp, bp, op, nullptr, nullptr, M, N, K, slices, workspace, stream);
}

}  // namespace

int forward_k_slices(DType dt, int64_t M, int64_t N, int64_t K, bool track, int sm_count) {
  if (dt == DType::F64 || M <= 0 || N <= 0 || K <= 0) return 1;
  const bool small = M < kSmallM;
  const int64_t tiles = track ? (small ? output_tiles<true, true>(M, N) : output_tiles<true, false>(M, N))
                              : (small ? output_tiles<false, true>(M, N) : output_tiles<false, false>(M, N));
  int64_t s = sm_count / tiles;  // blocks of one wave, one block per SM
  const int64_t ktiles = (K + kBK - 1) / kBK;
  if (s > ktiles / kMinTilesPerSlice) s = ktiles / kMinTilesPerSlice;
  if (s > kMaxSlices) s = kMaxSlices;
  if (s < 2) return 1;
  const int64_t per = tiles_per_slice(K, static_cast<int>(s));
  return static_cast<int>((ktiles + per - 1) / per);
}

size_t forward_workspace_bytes(int64_t M, int64_t N, int slices, bool track) {
  if (slices <= 1 || M <= 0 || N <= 0) return 0;
  return static_cast<size_t>(slices) * static_cast<size_t>(M) * static_cast<size_t>(N) * (track ? 16u : 8u);
}

cudaError_t launch_forward(DType dt, const void* x, const void* w, const void* bias, void* out, int32_t* amax,
                           int32_t* amin, int64_t M, int64_t N, int64_t K, cudaStream_t stream, int slices,
                           void* workspace) {
  if (M <= 0 || N <= 0) return cudaSuccess;
  if (slices > 1 && (workspace == nullptr || slices > kMaxSlices)) return cudaErrorInvalidValue;
  switch (dt) {
    case DType::F32:
      return launch_typed<float>(x, w, bias, out, amax, amin, M, N, K, slices, workspace, stream);
    case DType::F16:
      return launch_typed<__half>(x, w, bias, out, amax, amin, M, N, K, slices, workspace, stream);
    case DType::BF16:
      return launch_typed<__nv_bfloat16>(x, w, bias, out, amax, amin, M, N, K, slices, workspace, stream);
    case DType::F64: {
      const int64_t tiles_n = (N + kTS - 1) / kTS;
      const int64_t tiles = ((M + kTS - 1) / kTS) * tiles_n;
      for (int64_t base = 0; base < tiles; base += kMaxGrid) {
        const unsigned grid = static_cast<unsigned>(tiles - base < kMaxGrid ? tiles - base : kMaxGrid);
        MAMEXT_LAUNCH(forward_f64, grid, kTS * kTS, stream, static_cast<const double*>(x),
                      static_cast<const double*>(w), static_cast<const double*>(bias), static_cast<double*>(out),
                      amax, amin, M, N, K, tiles_n, base);
        const cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess) return err;
      }
      return cudaSuccess;
    }
  }
  return cudaErrorInvalidValue;
}

}  // namespace mamext::cuda
