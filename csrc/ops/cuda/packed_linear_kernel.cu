// CUDA kernels of the packed (sparse, CSR per output neuron) operator
// mamext::packed_linear: MAM (max + min) or the ordinary sum, float32 /
// float64 / int8. Interface and layout: packed_linear_kernel.h; the reference is the
// CPU implementation (csrc/ops/cpu/simd/packed_linear_simd.cpp), matched bit for bit.
//
// Design: the GPU version of the CPU kernel's "vectorised across the batch".
// * A block of 256 threads owns S consecutive samples (S a power of two <= 32,
//   min(32, M) rounded up, so small batches do not idle lanes) and a chunk of
//   neurons. Thread t is sample s = t % S of neuron group g = t / S; the
//   256 / S groups walk the chunk's neurons n = n0 + g, n0 + g + 256/S, ...
//   Each thread computes its (sample, neuron) outputs alone, in the row's j
//   order with exactly the CPU's operations, so no cross-thread reduction can
//   change a rounding (the sums) or a tie (the sign of a zero max / min). With
//   S = 32 a warp shares one row: its (index, value) loads are broadcasts.
// * x: the CSR indices are random, so reads of x along K cannot be coalesced.
//   When the block's S rows of x fit in shared memory (K * (S + 1) elements,
//   at most 96 KiB by default; S is halved down to 8 to fit), they are staged
//   there first with coalesced loads, transposed with a pitch of S + 1 (odd:
//   conflict-free stores, and for S = 32 the 32 lanes read 32 consecutive
//   words of one k). Otherwise (large K) every thread reads its own x row from
//   global memory through the read-only cache.
// * Layout: x and out row major, or both transposed (xt (K, M), out_t (N, M):
//   the column-major layout a chain of packed layers passes along, kept as on
//   the CPU). Transposed, S consecutive samples are consecutive in memory, so
//   the staging and the global-memory path read x coalesced, and the output
//   stores of a warp are coalesced too.
// * Neuron chunks: about 4 blocks per SM over the whole grid, but with the
//   shared-memory path at least K / (mean row length) neurons per block so the
//   staging does not outweigh the work. Untuned: this has never run on a GPU.
// * Semantics per (m, n), as the CPU: a full row (K entries) starts max and min
//   at its first product, a pruned row at 0 (the pruned products); running
//   max = (p > max ? p : max), min likewise (ties keep the earlier value, as
//   the CPU's MAXPS(new, running)); output (max + min) + bias, or the sum in j
//   order + bias; single-rounding multiplies and adds (__fmul_rn / __fadd_rn,
//   and the build passes --fmad=false).
// * Non-finite data (the CPU's rows_checked): a pre-pass counts each sample's
//   non-finite inputs (bad[m]) and flags non-finite weights. A block whose
//   samples are all finite, with finite weights, runs the plain loop; otherwise
//   (a block-uniform choice) the checked loop also counts the non-finite inputs
//   on the row's kept connections and watches for NaN products: output NaN if
//   a product is NaN, or if the row is pruned somewhere and the two counts
//   differ (an inf/NaN input on a pruned connection, inf * 0 in the dense layer).
// * int8: a pre-pass quantises each sample (one warp per sample: max |x| and a
//   finiteness flag by warp shuffles, then round half even of x * (127 / amax)
//   clamped to +-127, scale amax / 127; non-finite sample: codes 0, scale NaN;
//   amax < 1e-30: codes 0, scale 0), codes stored as int8. The main kernel is
//   the same with exact int32 products, max / min (or a wrapping int32 sum) and
//   the epilogue float(acc) * (wscale[n] * sx[m]) (+ bias[n]).
// * Structure validation: one warp per row checks offsets and indices and
//   atomicMin's the first error key (see packed_linear_kernel.h); the glue turns it
//   into the CPU's message. The main kernels never read out of bounds even on
//   an unvalidated structure (spans clamped to [0, nnz], indices outside
//   [0, K) read as index 0), because validation is skipped while a CUDA graph
//   is captured.
#include <cstdint>

#include "common/mam_fold.h"
#include "common/mam_semantics.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/packed_linear_kernel.h"

namespace mamext::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxGrid = 0x7fffffff;
constexpr int64_t kDefaultSmemCap = 96 * 1024;
constexpr int64_t kStaticSmemLimit = 48 * 1024;  // above this, dynamic shared memory needs an opt-in

template <typename T>
__device__ __forceinline__ bool finite(T v) {
  return v - v == T(0);  // false for NaN and +-inf (the CPU's is_finite)
}

__device__ __forceinline__ int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// A stored index as an offset into the row; outside [0, K) (only possible
// when validation was skipped) it reads index 0, never out of bounds.
template <typename I>
__device__ __forceinline__ int64_t safe_index(const I* p, int64_t K) {
  const int64_t k = static_cast<int64_t>(__ldg(p));
  return static_cast<uint64_t>(k) < static_cast<uint64_t>(K) ? k : 0;
}

// Per x element type: stored weight W, accumulator Acc, output / bias type Out.
template <typename X>
struct Kind;
template <>
struct Kind<float> {
  using W = float;
  using Acc = float;
  using Out = float;
  static constexpr bool kInt = false;
};
template <>
struct Kind<double> {
  using W = double;
  using Acc = double;
  using Out = double;
  static constexpr bool kInt = false;
};
template <>
struct Kind<int8_t> {
  using W = int8_t;
  using Acc = int32_t;
  using Out = float;
  static constexpr bool kInt = true;
};

__device__ __forceinline__ float product(float w, float x) { return mul_rn(w, x); }
__device__ __forceinline__ double product(double w, double x) { return mul_rn(w, x); }
__device__ __forceinline__ int32_t product(int8_t w, int8_t x) {
  return static_cast<int32_t>(w) * static_cast<int32_t>(x);
}
__device__ __forceinline__ float accumulate(float a, float b) { return add_rn(a, b); }
__device__ __forceinline__ double accumulate(double a, double b) { return add_rn(a, b); }
__device__ __forceinline__ int32_t accumulate(int32_t a, int32_t b) {  // wraps, like the CPU's vector adds
  return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
}

template <typename X>
struct Params {
  using W = typename Kind<X>::W;
  using Out = typename Kind<X>::Out;
  const X* x;             // (M, K): inputs (float) or codes (int8)
  const W* values;        // (nnz)
  const void* indices;    // (nnz) uint8 / int16 / int32
  const int64_t* offsets; // (N + 1)
  const Out* bias;        // (N) or null
  const float* wscale;    // int8: (N)
  const float* sx;        // int8: (M) input scales
  const int64_t* bad;     // float: (M) non-finite inputs per sample
  const int32_t* wflag;   // float: non-zero when a weight is non-finite
  Out* out;               // (M, N)
  int64_t M, N, K, nnz;
  int64_t xsm, xsk;       // strides of x (samples, inputs): (K, 1), or (1, M) when transposed
  int64_t osm, osn;       // strides of out (samples, neurons): (N, 1), or (1, M) when transposed
  int S;                  // samples per block, a power of two <= 32
  int64_t chunk, nchunks, tile_base;
};

// max + min (MAM) or the sum of row [j0, j1)'s products with the sample whose
// input k is xat(k), in j order. CHECK (float only): the CPU's rows_checked
// bookkeeping; bad is the sample's count of non-finite inputs.
template <bool MAM, bool CHECK, typename X, typename I, typename XAt>
__device__ __forceinline__ typename Kind<X>::Acc row_value(const typename Kind<X>::W* __restrict__ values,
                                                           const I* __restrict__ idx, int64_t j0, int64_t j1,
                                                           int64_t K, int64_t bad, const XAt& xat) {
  using Acc = typename Kind<X>::Acc;
  const bool pruned = j1 - j0 < K;
  int64_t seen = 0;  // non-finite inputs on kept connections
  bool nan = false;
  auto term = [&](int64_t j) {
    const X xv = xat(safe_index(idx + j, K));
    const Acc p = product(__ldg(values + j), xv);
    if constexpr (CHECK) {
      seen += finite(xv) ? 0 : 1;
      nan |= p != p;
    }
    return p;
  };
  Acc mx = Acc(0), mn = Acc(0);  // the sum in mx when !MAM
  int64_t j = j0;
  if (MAM && !pruned && j < j1) {  // full row: no pruned candidate, start at the first product
    mx = mn = term(j);
    ++j;
  }
#pragma unroll 4
  for (; j < j1; ++j) {
    const Acc p = term(j);
    if constexpr (MAM) {
      mx = mamext_fold_max(mx, p);  // ties keep the earlier value
      mn = mamext_fold_min(mn, p);
    } else {
      mx = accumulate(mx, p);
    }
  }
  Acc v = MAM ? accumulate(mx, mn) : mx;
  if constexpr (CHECK) {
    if (nan || (pruned && seen != bad)) v = static_cast<Acc>(NAN);
  }
  return v;
}

// At most 64 registers (4 blocks of 256 threads per SM): no spills with
// nvcc 13.0 for sm_80 / sm_90 (without the hint, ptxas spilled one variant).
template <typename X, typename I, bool MAM, bool SMEM>
__global__ void __launch_bounds__(kThreads, 4) packed_forward(const Params<X> p) {
  using Acc = typename Kind<X>::Acc;
  using Out = typename Kind<X>::Out;
  const int S = p.S;
  [[maybe_unused]] const int P = S + 1;  // shared-memory pitch (odd)
  const int tid = threadIdx.x;
  const int s = tid & (S - 1);
  const int g = tid / S;
  const int G = kThreads / S;
  const int64_t tile = p.tile_base + blockIdx.x;
  const int64_t m0 = (tile / p.nchunks) * S;
  const int64_t n0 = (tile % p.nchunks) * p.chunk;
  const int64_t n1 = n0 + p.chunk < p.N ? n0 + p.chunk : p.N;
  const int64_t K = p.K;
  const int64_t m = m0 + s;
  const bool mok = m < p.M;

  [[maybe_unused]] X* xs = nullptr;
  if constexpr (SMEM) {
    // Stage the block's S samples of x: xs[k * P + s], reading along the
    // unit stride (coalesced): row major, one sample row after another; with
    // a transposed x, S consecutive samples of one k per S threads. Samples
    // past M are not staged: their threads compute nothing.
    MAMEXT_DYNAMIC_SMEM(smem);
    xs = reinterpret_cast<X*>(smem);
    const int sn = m0 + S <= p.M ? S : static_cast<int>(p.M - m0);
    if (p.xsk == 1) {
      for (int ss = 0; ss < sn; ++ss) {
        const X* xr = p.x + (m0 + ss) * p.xsm;
        for (int64_t k = tid; k < K; k += kThreads) xs[k * P + ss] = __ldg(xr + k);
      }
    } else if (s < sn) {
      const X* xr = p.x + m * p.xsm;
      for (int64_t k = g; k < K; k += G) xs[k * P + s] = __ldg(xr + k * p.xsk);
    }
  }
  bool checked = false;
  if constexpr (Kind<X>::kInt) {
    if constexpr (SMEM) __syncthreads();
  } else {
    // One barrier both ends the staging and makes the path block uniform.
    checked = __syncthreads_or(mok && __ldg(p.bad + m) != 0) != 0 || __ldg(p.wflag) != 0;
  }
  if (!mok) return;  // no barrier below

  const I* idx = static_cast<const I*>(p.indices);
  [[maybe_unused]] const X* xg = p.x + m * p.xsm;
  [[maybe_unused]] const int64_t xsk = p.xsk;
  auto xat = [&](int64_t k) -> X {
    if constexpr (SMEM)
      return xs[k * P + s];
    else
      return __ldg(xg + k * xsk);
  };
  int64_t bad = 0;
  if constexpr (!Kind<X>::kInt) bad = __ldg(p.bad + m);
  Out* orow = p.out + m * p.osm;
  const int64_t osn = p.osn;
  for (int64_t n = n0 + g; n < n1; n += G) {
    const int64_t j0 = clamp64(__ldg(p.offsets + n), 0, p.nnz);
    const int64_t j1 = clamp64(__ldg(p.offsets + n + 1), j0, p.nnz);
    Out v;
    if constexpr (Kind<X>::kInt) {
      const Acc a = row_value<MAM, false, X>(p.values, idx, j0, j1, K, 0, xat);
      v = mul_rn(static_cast<float>(a), mul_rn(__ldg(p.wscale + n), __ldg(p.sx + m)));
    } else {
      v = checked ? row_value<MAM, true, X>(p.values, idx, j0, j1, K, bad, xat)
                  : row_value<MAM, false, X>(p.values, idx, j0, j1, K, bad, xat);
    }
    if (p.bias) v = add_rn(v, __ldg(p.bias + n));
    orow[n * osn] = v;
  }
}

// ------------------------------------------------------------- pre-passes ---

// bad[m] = number of non-finite x[m, :]; one warp per sample (x strides xsm, xsk).
template <typename T>
__global__ void __launch_bounds__(kThreads) count_nonfinite(const T* __restrict__ x, int64_t M, int64_t K, int64_t xsm,
                                                            int64_t xsk, int64_t* __restrict__ bad) {
  const int lane = threadIdx.x % 32;
  for (int64_t m = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32; m < M; m += int64_t(gridDim.x) * kWarps) {
    const T* xr = x + m * xsm;
    long long c = 0;
    for (int64_t k = lane; k < K; k += 32) c += finite(__ldg(xr + k * xsk)) ? 0 : 1;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) c += __shfl_xor_sync(kFullMask, c, off);
    if (lane == 0) bad[m] = c;
  }
}

// *flag |= any value non-finite (flag zeroed by the launcher).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    flag_nonfinite(const T* __restrict__ v, int64_t n, int32_t* __restrict__ flag) {
  int any = 0;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads)
    any |= finite(__ldg(v + i)) ? 0 : 1;
  if (any) atomicOr(flag, 1);
}

// mamext_round_q: common/mam_semantics.h, the CPU kernels' own rounding.

// Per-sample symmetric quantisation (the CPU's quantize); one warp per sample
// (x strides xsm, xsk; codes xq (M, K) row major).
__global__ void __launch_bounds__(kThreads)
    quantize_rows(const float* __restrict__ x, int64_t M, int64_t K, int64_t xsm, int64_t xsk,
                  int8_t* __restrict__ xq, float* __restrict__ sx) {
  const int lane = threadIdx.x % 32;
  for (int64_t m = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32; m < M; m += int64_t(gridDim.x) * kWarps) {
    const float* xr = x + m * xsm;
    int8_t* qr = xq + m * K;
    float amax = 0.0f;  // max |x|: an exact selection, any order gives the same value
    int bad = 0;
    for (int64_t k = lane; k < K; k += 32) {
      const float v = __ldg(xr + k * xsk);
      bad |= finite(v) ? 0 : 1;
      const float a = fabsf(v);
      amax = a > amax ? a : amax;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float o = __shfl_xor_sync(kFullMask, amax, off);
      amax = o > amax ? o : amax;
      bad |= __shfl_xor_sync(kFullMask, bad, off);
    }
    if (bad || amax < 1e-30f) {
      for (int64_t k = lane; k < K; k += 32) qr[k] = 0;
      if (lane == 0) sx[m] = bad ? NAN : 0.0f;
      continue;
    }
    const float inv = __fdiv_rn(127.0f, amax);
    for (int64_t k = lane; k < K; k += 32)
      qr[k] = static_cast<int8_t>(mamext_round_q(mul_rn(__ldg(xr + k * xsk), inv)));
    if (lane == 0) sx[m] = __fdiv_rn(amax, 127.0f);
  }
}

// Structure check, one warp per row (error keys: packed_linear_kernel.h).
template <typename I>
__global__ void __launch_bounds__(kThreads)
    validate_rows(const I* __restrict__ idx, const int64_t* __restrict__ off, int64_t N, int64_t nnz, int64_t K,
                  unsigned long long* __restrict__ result) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    if (off[0] != 0) atomicMin(result, 0ull);
    if (off[N] != nnz) atomicMin(result, 1ull);
  }
  const int lane = threadIdx.x % 32;
  for (int64_t n = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32; n < N; n += int64_t(gridDim.x) * kWarps) {
    const int64_t j0 = off[n], j1 = off[n + 1];
    const unsigned long long key = 2ull + static_cast<unsigned long long>(n);
    if (!(j0 >= 0 && j0 <= j1 && j1 <= nnz && j1 - j0 <= K)) {
      if (lane == 0) atomicMin(result, key);
      continue;
    }
    for (int64_t j = j0 + lane; j < j1; j += 32) {
      const int64_t k = static_cast<int64_t>(idx[j]);
      const int64_t prev = j > j0 ? static_cast<int64_t>(idx[j - 1]) : -1;
      if (!(k > prev && k < K)) {
        atomicMin(result, key);
        break;
      }
    }
  }
}

// ----------------------------------------------------------------- launch ---

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

struct DeviceInfo {
  int sms = 1;
  int64_t smem_optin = kStaticSmemLimit;
};

cudaError_t device_info(DeviceInfo& d) {
  int dev = 0, v = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  if ((err = cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess) return err;
  d.sms = v > 0 ? v : 1;
  if ((err = cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) != cudaSuccess) return err;
  d.smem_optin = v > 0 ? v : kStaticSmemLimit;
  return cudaSuccess;
}

// Grid of a grid-stride helper kernel over `items` units of `per_block`.
unsigned helper_grid(int64_t items, int64_t per_block, const DeviceInfo& d) {
  return static_cast<unsigned>(max64(1, min64(ceil_div(items, per_block), 4 * int64_t(d.sms))));
}

struct Plan {
  int S = 32;
  bool smem = false;
  int64_t smem_bytes = 0;
  int64_t sblocks = 0, chunk = 0, nchunks = 0;
};

Plan make_plan(int64_t M, int64_t N, int64_t K, int64_t nnz, int64_t esize, const PackedLaunchConfig& cfg,
               const DeviceInfo& d) {
  Plan pl;
  const bool fixed_s = cfg.samples_per_block > 0;
  int64_t full = 1;
  while (full < M && full < 32) full *= 2;
  int S = fixed_s ? cfg.samples_per_block : static_cast<int>(full);
  const int64_t limit = cfg.smem_limit >= 0 ? min64(cfg.smem_limit, d.smem_optin) : min64(kDefaultSmemCap, d.smem_optin);
  auto bytes = [&](int s) { return K * (s + 1) * esize; };
  if (!fixed_s)
    while (S > 8 && bytes(S) > limit) S /= 2;
  pl.smem = bytes(S) <= limit;
  if (!pl.smem && !fixed_s) S = static_cast<int>(full);  // global reads: the full batch width
  pl.S = S;
  pl.smem_bytes = pl.smem ? bytes(S) : 0;
  const int64_t G = kThreads / S;
  pl.sblocks = ceil_div(M, S);
  int64_t chunk = cfg.neurons_per_block;
  if (chunk <= 0) {
    const int64_t want = max64(1, ceil_div(4 * int64_t(d.sms), pl.sblocks));  // neuron chunks wanted
    chunk = ceil_div(N, want);
    if (pl.smem) chunk = max64(chunk, ceil_div(K, max64(1, nnz / max64(1, N))));
  }
  chunk = ceil_div(max64(chunk, 1), G) * G;
  chunk = min64(chunk, ceil_div(N, G) * G);
  pl.chunk = chunk;
  pl.nchunks = ceil_div(N, chunk);
  return pl;
}

template <typename X, typename I, bool MAM>
cudaError_t launch_main(Params<X> p, const Plan& pl, cudaStream_t stream) {
  p.S = pl.S;
  p.chunk = pl.chunk;
  p.nchunks = pl.nchunks;
  const int64_t tiles = pl.sblocks * pl.nchunks;
  if (pl.smem) {
    const auto kernel = packed_forward<X, I, MAM, true>;
    if (pl.smem_bytes > kStaticSmemLimit) {
      const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   static_cast<int>(pl.smem_bytes));
      if (err != cudaSuccess) return err;
    }
    const size_t smem = static_cast<size_t>(pl.smem_bytes);
    for (int64_t base = 0; base < tiles; base += kMaxGrid) {
      const unsigned grid = static_cast<unsigned>(min64(tiles - base, kMaxGrid));
      p.tile_base = base;
      MAMEXT_LAUNCH_SMEM(kernel, grid, kThreads, smem, stream, p);
      const cudaError_t err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
  } else {
    const auto kernel = packed_forward<X, I, MAM, false>;
    for (int64_t base = 0; base < tiles; base += kMaxGrid) {
      const unsigned grid = static_cast<unsigned>(min64(tiles - base, kMaxGrid));
      p.tile_base = base;
      MAMEXT_LAUNCH(kernel, grid, kThreads, stream, p);
      const cudaError_t err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
  }
  return cudaSuccess;
}

template <typename X>
cudaError_t dispatch(const Params<X>& p, PackedIndex ik, bool mam, const Plan& pl, cudaStream_t stream) {
  switch (ik) {
    case PackedIndex::UInt8:
      return mam ? launch_main<X, uint8_t, true>(p, pl, stream) : launch_main<X, uint8_t, false>(p, pl, stream);
    case PackedIndex::Int16:
      return mam ? launch_main<X, int16_t, true>(p, pl, stream) : launch_main<X, int16_t, false>(p, pl, stream);
    case PackedIndex::Int32:
      return mam ? launch_main<X, int32_t, true>(p, pl, stream) : launch_main<X, int32_t, false>(p, pl, stream);
  }
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t scan_weights(const T* values, int64_t nnz, int32_t* flag, cudaStream_t stream, const DeviceInfo& d) {
  cudaError_t err = cudaMemsetAsync(flag, 0, sizeof(int32_t), stream);
  if (err != cudaSuccess || nnz <= 0) return err;
  const auto kernel = flag_nonfinite<T>;
  MAMEXT_LAUNCH(kernel, helper_grid(nnz, kThreads, d), kThreads, stream, values, nnz, flag);
  return cudaGetLastError();
}

template <typename T>
cudaError_t run_float(const T* x, const T* values, const void* indices, PackedIndex ik, const int64_t* offsets,
                      int64_t nnz, const T* bias, T* out, int64_t M, int64_t N, int64_t K, bool mam, bool transposed,
                      int64_t* bad, int32_t* flag, cudaStream_t stream, const PackedLaunchConfig& cfg) {
  DeviceInfo d;
  cudaError_t err = device_info(d);
  if (err != cudaSuccess) return err;
  const int64_t xsm = transposed ? 1 : K, xsk = transposed ? M : 1;
  {
    const auto kernel = count_nonfinite<T>;
    MAMEXT_LAUNCH(kernel, helper_grid(M, kWarps, d), kThreads, stream, x, M, K, xsm, xsk, bad);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  if (!cfg.weight_flag_ready && (err = scan_weights(values, nnz, flag, stream, d)) != cudaSuccess) return err;
  Params<T> p{};
  p.x = x;
  p.values = values;
  p.indices = indices;
  p.offsets = offsets;
  p.bias = bias;
  p.bad = bad;
  p.wflag = flag;
  p.out = out;
  p.M = M;
  p.N = N;
  p.K = K;
  p.nnz = nnz;
  p.xsm = xsm;
  p.xsk = xsk;
  p.osm = transposed ? 1 : N;
  p.osn = transposed ? M : 1;
  return dispatch(p, ik, mam, make_plan(M, N, K, nnz, sizeof(T), cfg, d), stream);
}

template <typename I>
cudaError_t launch_validate_typed(const void* indices, const int64_t* offsets, int64_t N, int64_t nnz, int64_t K,
                                  unsigned long long* result, cudaStream_t stream, const DeviceInfo& d) {
  const auto kernel = validate_rows<I>;
  MAMEXT_LAUNCH(kernel, helper_grid(N, kWarps, d), kThreads, stream, static_cast<const I*>(indices), offsets, N, nnz,
                K, result);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_packed_validate(const void* indices, PackedIndex ik, const int64_t* offsets, int64_t N,
                                   int64_t nnz, int64_t K, unsigned long long* result, cudaStream_t stream) {
  DeviceInfo d;
  cudaError_t err = device_info(d);
  if (err != cudaSuccess) return err;
  if ((err = cudaMemsetAsync(result, 0xff, sizeof(unsigned long long), stream)) != cudaSuccess) return err;
  switch (ik) {
    case PackedIndex::UInt8: return launch_validate_typed<uint8_t>(indices, offsets, N, nnz, K, result, stream, d);
    case PackedIndex::Int16: return launch_validate_typed<int16_t>(indices, offsets, N, nnz, K, result, stream, d);
    case PackedIndex::Int32: return launch_validate_typed<int32_t>(indices, offsets, N, nnz, K, result, stream, d);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_packed_weight_flag(DType dt, const void* values, int64_t nnz, int32_t* flag,
                                      cudaStream_t stream) {
  DeviceInfo d;
  const cudaError_t err = device_info(d);
  if (err != cudaSuccess) return err;
  switch (dt) {
    case DType::F32: return scan_weights(static_cast<const float*>(values), nnz, flag, stream, d);
    case DType::F64: return scan_weights(static_cast<const double*>(values), nnz, flag, stream, d);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_packed_float(DType dt, const void* x, const void* values, const void* indices, PackedIndex ik,
                                const int64_t* offsets, int64_t nnz, const void* bias, void* out, int64_t M,
                                int64_t N, int64_t K, bool mam, bool transposed, int64_t* bad, int32_t* flag,
                                cudaStream_t stream, const PackedLaunchConfig& cfg) {
  if (M <= 0 || N <= 0) return cudaSuccess;
  switch (dt) {
    case DType::F32:
      return run_float<float>(static_cast<const float*>(x), static_cast<const float*>(values), indices, ik, offsets,
                              nnz, static_cast<const float*>(bias), static_cast<float*>(out), M, N, K, mam,
                              transposed, bad, flag, stream, cfg);
    case DType::F64:
      return run_float<double>(static_cast<const double*>(x), static_cast<const double*>(values), indices, ik,
                               offsets, nnz, static_cast<const double*>(bias), static_cast<double*>(out), M, N, K,
                               mam, transposed, bad, flag, stream, cfg);
    default:
      return cudaErrorInvalidValue;  // float16 / bfloat16 inputs are converted to float32 by the glue
  }
}

cudaError_t launch_packed_int8(const float* x, const int8_t* values, const void* indices, PackedIndex ik,
                               const int64_t* offsets, int64_t nnz, const float* wscale, const float* bias,
                               float* out, int64_t M, int64_t N, int64_t K, bool mam, bool transposed, int8_t* xq,
                               float* sx, cudaStream_t stream, const PackedLaunchConfig& cfg) {
  if (M <= 0 || N <= 0) return cudaSuccess;
  DeviceInfo d;
  cudaError_t err = device_info(d);
  if (err != cudaSuccess) return err;
  MAMEXT_LAUNCH(quantize_rows, helper_grid(M, kWarps, d), kThreads, stream, x, M, K, transposed ? 1 : K,
                transposed ? M : 1, xq, sx);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  Params<int8_t> p{};
  p.x = xq;
  p.values = values;
  p.indices = indices;
  p.offsets = offsets;
  p.bias = bias;
  p.wscale = wscale;
  p.sx = sx;
  p.out = out;
  p.M = M;
  p.N = N;
  p.K = K;
  p.nnz = nnz;
  p.xsm = K;  // the codes are row major
  p.xsk = 1;
  p.osm = transposed ? 1 : N;
  p.osn = transposed ? M : 1;
  return dispatch(p, ik, mam, make_plan(M, N, K, nnz, sizeof(int8_t), cfg, d), stream);
}

}  // namespace mamext::cuda
