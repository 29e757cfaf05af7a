// Device helpers shared by the CUDA kernels: element access for the four
// dtypes (storage type T, compute type Acc), exact arithmetic wrappers.
#pragma once

#ifdef MAMEXT_CUDA_EMULATION
// CPU emulation of the kernels for the tests (tests/test_cuda.py): see emulation.h.
#include "ops/cuda/emulation.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <cstdint>
#include <cstring>

// kernel<<<grid, block, 0, stream>>>(args...); `kernel` must be a plain name
// (take a template instance into a local variable first).
// MAMEXT_LAUNCH_SMEM: the same with `smem` bytes of dynamic shared memory, which
// the kernel reaches through MAMEXT_DYNAMIC_SMEM(name) (an unsigned char array
// aligned to 16 bytes).
#ifdef MAMEXT_CUDA_EMULATION
#define MAMEXT_LAUNCH(kernel, grid, block, stream, ...) \
  ::mamext::emu::launch((grid), (block), [&] { kernel(__VA_ARGS__); })
#define MAMEXT_LAUNCH_SMEM(kernel, grid, block, smem, stream, ...) \
  ::mamext::emu::launch_smem((grid), (block), (smem), [&] { kernel(__VA_ARGS__); })
#define MAMEXT_DYNAMIC_SMEM(name) unsigned char* name = ::mamext::emu::dyn_smem
#else
#define MAMEXT_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#define MAMEXT_LAUNCH_SMEM(kernel, grid, block, smem, stream, ...) \
  kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define MAMEXT_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace mamext::cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// Loads convert to the compute type; stores round once (round to nearest even).
template <typename T>
struct Elem;

template <>
struct Elem<float> {
  using Acc = float;
  static __device__ __forceinline__ float load(const float* p) { return __ldg(p); }
  // p must be 16-byte aligned.
  static __device__ __forceinline__ void load4(const float* p, float v[4]) {
    const float4 q = __ldg(reinterpret_cast<const float4*>(p));
    v[0] = q.x;
    v[1] = q.y;
    v[2] = q.z;
    v[3] = q.w;
  }
  static __device__ __forceinline__ float from_acc(float v) { return v; }
};

template <>
struct Elem<__half> {
  using Acc = float;
  static __device__ __forceinline__ float load(const __half* p) { return __half2float(__ldg(p)); }
  // p must be 8-byte aligned.
  static __device__ __forceinline__ void load4(const __half* p, float v[4]) {
    const uint2 q = __ldg(reinterpret_cast<const uint2*>(p));
    __half2 h0, h1;
    static_assert(sizeof(h0) == sizeof(q.x));
    memcpy(&h0, &q.x, sizeof(h0));
    memcpy(&h1, &q.y, sizeof(h1));
    const float2 f0 = __half22float2(h0), f1 = __half22float2(h1);
    v[0] = f0.x;
    v[1] = f0.y;
    v[2] = f1.x;
    v[3] = f1.y;
  }
  static __device__ __forceinline__ __half from_acc(float v) { return __float2half_rn(v); }
};

template <>
struct Elem<__nv_bfloat16> {
  using Acc = float;
  static __device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(__ldg(p)); }
  static __device__ __forceinline__ void load4(const __nv_bfloat16* p, float v[4]) {
    const uint2 q = __ldg(reinterpret_cast<const uint2*>(p));
    __nv_bfloat162 h0, h1;
    static_assert(sizeof(h0) == sizeof(q.x));
    memcpy(&h0, &q.x, sizeof(h0));
    memcpy(&h1, &q.y, sizeof(h1));
    const float2 f0 = __bfloat1622float2(h0), f1 = __bfloat1622float2(h1);
    v[0] = f0.x;
    v[1] = f0.y;
    v[2] = f1.x;
    v[3] = f1.y;
  }
  static __device__ __forceinline__ __nv_bfloat16 from_acc(float v) { return __float2bfloat16_rn(v); }
};

template <>
struct Elem<double> {
  using Acc = double;
  static __device__ __forceinline__ double load(const double* p) { return __ldg(p); }
  static __device__ __forceinline__ double from_acc(double v) { return v; }
};

// Single-rounding arithmetic, never contracted into FMA (the build also passes
// --fmad=false): the CPU kernels are compiled with -ffp-contract=off.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// Index of an entry valid for a row of length K (int32 indices, K <= INT32_MAX).
__device__ __forceinline__ bool index_ok(int32_t i, int64_t K) {
  return static_cast<uint64_t>(static_cast<uint32_t>(i)) < static_cast<uint64_t>(K);
}

}  // namespace mamext::cuda
