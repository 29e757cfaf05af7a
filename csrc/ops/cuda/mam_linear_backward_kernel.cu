// CUDA backward kernels of the dense MAM layer.
//
// With g = dL/dy and the forward's argmax / argmin:
//   dx[m, k] = sum_n g[m, n] * w[n, k] * ([k == argmax[m, n]] + [k == argmin[m, n]])
//   dw[n, k] = sum_m g[m, n] * x[m, k] * (same)
// (both terms count when argmax == argmin). Accumulation is in float32 for
// float32/float16/bfloat16 and float64 for float64, into zero-filled buffers.
//
// Two formulations:
// * atomics (default): one thread per (m, n) adds its (up to) four terms with
//   atomicAdd. Fast, but the summation order (and so the last bits of the
//   result) varies from run to run.
// * gather (when torch.are_deterministic_algorithms_enabled()): one warp owns
//   one row of dx (resp. dw). It walks n (resp. m) in ascending order, 32 at a
//   time: lane l reads entry n0 + l and computes its two terms, then the 32
//   entries are replayed in order through warp shuffles, and the lane that owns
//   column k (k % 32) adds each term to the row. Every element therefore
//   receives its terms in exactly the CPU kernel's order (n ascending, argmax
//   term before argmin term), with the same single-rounding multiply and add,
//   so float32 results equal the CPU's bit for bit. No atomics, no races.
//   The row is accumulated in shared memory in chunks of 4 KiB and stored
//   once (the output buffer's zeros are not read).
//   The dw kernel reads columns of g / argmax / argmin; the 8 warps of a CTA
//   take 8 consecutive n so those reads share cache lines.
// Out-of-range indices: the entry is skipped (no out-of-bounds access) and the
// error flag is raised; the operator turns it into an exception.
#include <cstdint>

#include "ops/cuda/common.cuh"
#include "ops/cuda/mam_linear_kernel.h"

namespace mamext::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    backward_atomic(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ w,
                    const int32_t* __restrict__ amax, const int32_t* __restrict__ amin, A* __restrict__ gx,
                    A* __restrict__ gw, int64_t M, int64_t N, int64_t K, int32_t* __restrict__ error) {
  const int64_t total = M * N;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int32_t a = amax[idx], b = amin[idx];
    if (!index_ok(a, K) || !index_ok(b, K)) {
      *error = 1;
      continue;
    }
    const int64_t m = idx / N, n = idx - m * N;
    const A gv = Elem<T>::load(g + idx);
    if (gx) {
      const T* wr = w + n * K;
      A* gr = gx + m * K;
      atomicAdd(gr + a, mul_rn(gv, static_cast<A>(Elem<T>::load(wr + a))));
      atomicAdd(gr + b, mul_rn(gv, static_cast<A>(Elem<T>::load(wr + b))));
    }
    if (gw) {
      const T* xr = x + m * K;
      A* gr = gw + n * K;
      atomicAdd(gr + a, mul_rn(gv, static_cast<A>(Elem<T>::load(xr + a))));
      atomicAdd(gr + b, mul_rn(gv, static_cast<A>(Elem<T>::load(xr + b))));
    }
  }
}

// Deterministic gather. ROWS_ARE_M: the warp owns dx row r (r = m), walks
// j = n over [0, N) and multiplies by w[n, k]; otherwise it owns dw row r
// (r = n), walks j = m over [0, M) and multiplies by x[m, k].
// The row is accumulated in shared memory, kChunk columns at a time (one
// walk over j per chunk, keeping the terms whose column falls in the chunk),
// then stored once: the adds are shared-memory read-modify-writes instead of
// dependent global loads and stores. Element c of the chunk is only ever
// touched by lane c % 32 (zeroing, adds, store), so no barrier is needed.
template <typename A>
constexpr int kChunk = 4096 / static_cast<int>(sizeof(A));  // columns per chunk: 4 KiB per warp

template <typename T, typename A, bool ROWS_ARE_M>
__global__ void __launch_bounds__(kThreads)
    backward_gather(const T* __restrict__ g, const T* __restrict__ src, const int32_t* __restrict__ amax,
                    const int32_t* __restrict__ amin, A* __restrict__ dst, int64_t M, int64_t N, int64_t K,
                    int32_t* __restrict__ error) {
  constexpr int KC = kChunk<A>;
  __shared__ A rows_acc[kWarps][KC];
  const int lane = threadIdx.x % 32;
  A* acc = rows_acc[threadIdx.x / 32];
  const int64_t rows = ROWS_ARE_M ? M : N;
  const int64_t walk = ROWS_ARE_M ? N : M;
  const int64_t warp0 = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t nwarps = int64_t(gridDim.x) * kWarps;
  for (int64_t r = warp0; r < rows; r += nwarps) {  // warp-uniform
    A* out = dst + r * K;
    for (int64_t c0 = 0; c0 < K; c0 += KC) {
      const int kc = static_cast<int>(K - c0 < KC ? K - c0 : KC);
      for (int c = lane; c < kc; c += 32) acc[c] = A(0);
      for (int64_t j0 = 0; j0 < walk; j0 += 32) {
        const int64_t j = j0 + lane;
        int32_t a = -1, b = -1;  // columns inside the chunk, -1: no term here
        A va = 0, vb = 0;
        if (j < walk) {
          const int64_t e = ROWS_ARE_M ? r * N + j : j * N + r;  // (m, n) entry
          const int32_t ea = amax[e], eb = amin[e];
          if (index_ok(ea, K) && index_ok(eb, K)) {
            const bool ina = ea >= c0 && ea - c0 < kc, inb = eb >= c0 && eb - c0 < kc;
            if (ina || inb) {
              const A gv = Elem<T>::load(g + e);
              const T* s = src + j * K;  // w[n, :] or x[m, :]
              if (ina) {
                a = static_cast<int32_t>(ea - c0);
                va = mul_rn(gv, static_cast<A>(Elem<T>::load(s + ea)));
              }
              if (inb) {
                b = static_cast<int32_t>(eb - c0);
                vb = mul_rn(gv, static_cast<A>(Elem<T>::load(s + eb)));
              }
            }
          } else {
            *error = 1;
          }
        }
        const int cnt = static_cast<int>(walk - j0 < 32 ? walk - j0 : 32);
        for (int q = 0; q < cnt; ++q) {
          const int32_t aq = __shfl_sync(kFullMask, a, q);
          const int32_t bq = __shfl_sync(kFullMask, b, q);
          const A vaq = __shfl_sync(kFullMask, va, q);
          const A vbq = __shfl_sync(kFullMask, vb, q);
          if (aq >= 0 && (aq & 31) == lane) acc[aq] = add_rn(acc[aq], vaq);
          if (bq >= 0 && (bq & 31) == lane) acc[bq] = add_rn(acc[bq], vbq);
        }
      }
      for (int c = lane; c < kc; c += 32) out[c0 + c] = acc[c];
    }
  }
}

unsigned grid_for(int64_t work, int64_t per_block) {
  int64_t blocks = (work + per_block - 1) / per_block;
  if (blocks < 1) blocks = 1;
  // Grid-stride loops: a few waves of a large GPU are plenty.
  const int64_t cap = int64_t(1) << 20;
  return static_cast<unsigned>(blocks < cap ? blocks : cap);
}

template <typename T, typename A>
cudaError_t launch_typed(const void* g, const void* x, const void* w, const int32_t* amax, const int32_t* amin,
                         void* gx, void* gw, int64_t M, int64_t N, int64_t K, bool deterministic, int32_t* error,
                         cudaStream_t stream) {
  const T* gp = static_cast<const T*>(g);
  const T* xp = static_cast<const T*>(x);
  const T* wp = static_cast<const T*>(w);
  A* gxp = static_cast<A*>(gx);
  A* gwp = static_cast<A*>(gw);
  if (!deterministic) {
    const auto kernel = backward_atomic<T, A>;
    MAMEXT_LAUNCH(kernel, grid_for(M * N, kThreads), kThreads, stream, gp, xp, wp, amax, amin, gxp, gwp, M, N, K,
                  error);
    return cudaGetLastError();
  }
  if (gxp) {
    const auto kernel = backward_gather<T, A, true>;
    MAMEXT_LAUNCH(kernel, grid_for(M, kWarps), kThreads, stream, gp, wp, amax, amin, gxp, M, N, K, error);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (gwp) {
    const auto kernel = backward_gather<T, A, false>;
    MAMEXT_LAUNCH(kernel, grid_for(N, kWarps), kThreads, stream, gp, xp, amax, amin, gwp, M, N, K, error);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t launch_backward(DType dt, const void* g, const void* x, const void* w, const int32_t* amax,
                            const int32_t* amin, void* gx, void* gw, int64_t M, int64_t N, int64_t K,
                            bool deterministic, int32_t* error, cudaStream_t stream) {
  if (M <= 0 || N <= 0 || (!gx && !gw)) return cudaSuccess;
  switch (dt) {
    case DType::F32:
      return launch_typed<float, float>(g, x, w, amax, amin, gx, gw, M, N, K, deterministic, error, stream);
    case DType::F16:
      return launch_typed<__half, float>(g, x, w, amax, amin, gx, gw, M, N, K, deterministic, error, stream);
    case DType::BF16:
      return launch_typed<__nv_bfloat16, float>(g, x, w, amax, amin, gx, gw, M, N, K, deterministic, error,
                                                stream);
    case DType::F64:
      return launch_typed<double, double>(g, x, w, amax, amin, gx, gw, M, N, K, deterministic, error, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace mamext::cuda
