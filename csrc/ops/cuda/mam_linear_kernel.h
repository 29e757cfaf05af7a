// Interface between the CUDA kernels (mam_linear_kernel.cu, forward;
// mam_linear_backward_kernel.cu, backward) and the operator glue
// (mam_linear_glue.cpp: checks, allocation, device guard, stream, dispatch).
//
// The .cu files include no torch headers (only the CUDA runtime and our own
// headers), which keeps nvcc's compile time down; tensors cross this boundary
// as raw pointers and a dtype tag. Every launcher enqueues on `stream` and
// returns the launch status (cudaGetLastError) for the caller to check.
#pragma once

#ifdef MAMEXT_CUDA_EMULATION
#include "ops/cuda/emulation.h"
#else
#include <cuda_runtime_api.h>
#endif

#include <cstddef>
#include <cstdint>

namespace mamext::cuda {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2, F64 = 3 };

// Forward over x (M, K) and w (N, K), both row major and contiguous.
//   out: (M, N) in the input dtype; bias: (N) or null;
//   amax, amin: (M, N) int32, or both null for the inference kernel (no index
//   tracking at all).
// Products and comparisons in float32 (F32/F16/BF16) or float64 (F64); a NaN
// product makes the output NaN and both indices the first NaN k; ties go to
// the lowest k; output = (max + min) + bias, rounded once to the input dtype.
//
// Split K (float32/float16/bfloat16): with slices > 1 each output tile's K
// range is cut into that many slices of whole k tiles (fewer when K is short),
// computed by separate blocks into `workspace` (forward_workspace_bytes) and
// combined in order by a second kernel; the result is the same, bit for bit.
// slices <= 1: no split, no workspace. At most 32 slices.
cudaError_t launch_forward(DType dt, const void* x, const void* w, const void* bias, void* out,
                           int32_t* amax, int32_t* amin, int64_t M, int64_t N, int64_t K,
                           cudaStream_t stream, int slices = 1, void* workspace = nullptr);

// The K split the forward should use on a device with sm_count SMs: 1 when
// the output tiles already fill half of the SMs or more (or K is short, or
// float64); otherwise as many slices as keep the (tile, slice) blocks within
// one wave, each slice at least 128 k long, at most 32.
int forward_k_slices(DType dt, int64_t M, int64_t N, int64_t K, bool track, int sm_count);

// Workspace bytes launch_forward needs for `slices` slices (0 for no split).
size_t forward_workspace_bytes(int64_t M, int64_t N, int slices, bool track);

// Backward. g: (M, N) in the input dtype; x (M, K), w (N, K) in the input
// dtype; amax/amin (M, N) int32. gx (M, K) / gw (N, K) are accumulators in the
// compute type (float for F32/F16/BF16, double for F64), zero-filled by the
// caller; either may be null (masked off).
//   gx[m, k] += g[m, n] * w[n, k] for k in {amax[m, n], amin[m, n]}
//   gw[n, k] += g[m, n] * x[m, k] for the same k (both terms when equal).
// deterministic: gather kernels (each row of gx / gw is accumulated by one warp
// in a fixed order: n (resp. m) ascending, the argmax term before the argmin
// term), which is exactly the CPU kernel's order, so float32 results match the
// CPU bit for bit. Otherwise one thread per (m, n) with atomicAdd.
// Entries whose index lies outside [0, K) are skipped (nothing is written out
// of bounds) and *error is set to 1 (error: one int32 on the device, zeroed by
// the caller).
cudaError_t launch_backward(DType dt, const void* g, const void* x, const void* w, const int32_t* amax,
                            const int32_t* amin, void* gx, void* gw, int64_t M, int64_t N, int64_t K,
                            bool deterministic, int32_t* error, cudaStream_t stream);

}  // namespace mamext::cuda
