// Interface between the CUDA kernels of the packed (sparse) operator
// mamext::packed_linear (packed_linear_kernel.cu) and its glue
// (packed_linear_glue.cpp: checks, device guard, stream, allocation, messages).
// Like mam_linear_kernel.h: no torch headers, raw device pointers, every launcher
// enqueues on `stream` and returns the launch status.
//
// Layout (CSR per output neuron, as on the CPU, csrc/ops/cpu/simd/packed_linear_simd.h):
// row n keeps the connections j in [offsets[n], offsets[n+1]) with weight
// values[j] at input index indices[j] (strictly increasing within a row).
// Semantics are exactly those of the CPU kernels (csrc/ops/cpu/simd/packed_linear_simd.cpp):
// a row with fewer than K entries has 0 as a candidate for both max and min,
// an empty row outputs its bias, a full row starts at its first product;
// mam = false is the ordinary sum in j order; ties keep the earlier value;
// NaN / inf follow the dense layer with zero weights.
#pragma once

#ifdef MAMEXT_CUDA_EMULATION
#include "ops/cuda/emulation.h"
#else
#include <cuda_runtime_api.h>
#endif

#include <cstdint>

#include "ops/cuda/mam_linear_kernel.h"

namespace mamext::cuda {

// Index element type (same numbering as mamext::cpu::PackedIndex).
enum class PackedIndex : int { UInt8 = 0, Int16 = 1, Int32 = 2 };

// Launch choices, automatic by default. The tests force them to reach every
// path on small problems.
struct PackedLaunchConfig {
  int samples_per_block = 0;      // S, a power of two in [1, 32]; 0: min(32, M rounded up to a power of two)
  int64_t neurons_per_block = 0;  // neurons of one block (rounded up to a multiple of 256 / S); 0: automatic
  int64_t smem_limit = -1;        // bytes for the x tile in shared memory; 0: always read x from global
                                  // memory; -1: the device's limit, capped at 96 KiB
  bool weight_flag_ready = false; // float: `flag` already holds the weights' finiteness
                                  // (launch_packed_weight_flag, cached by the caller): no scan
};

// *flag (one int32 on the device) = 1 when a weight value is non-finite, else 0.
cudaError_t launch_packed_weight_flag(DType dt, const void* values, int64_t nnz, int32_t* flag,
                                      cudaStream_t stream);

// Structure check. *result (one uint64 on the device, set by the launcher) ends
// as the smallest error key, or UINT64_MAX when the structure is valid:
//   0: offsets[0] != 0;  1: offsets[N] != nnz;
//   2 + n: row n is invalid: offsets[n] > offsets[n+1], more than K entries,
//          a span outside [0, nnz), or indices not strictly increasing in [0, K).
// The CPU glue checks in the same order, so the first error is the same one.
cudaError_t launch_packed_validate(const void* indices, PackedIndex ik, const int64_t* offsets, int64_t N,
                                   int64_t nnz, int64_t K, unsigned long long* result, cudaStream_t stream);

// Layouts: x is (M, K) and out (M, N), both contiguous (row major); with
// `transposed`, x is given as xt (K, M) and out written as out_t (N, M), both
// contiguous (the column-major layout of a chain of packed layers, which the
// CPU operator keeps; the values are the same).
//
// float32 / float64 (dt F32 or F64): x in the compute type, values (nnz) of
// the same type, bias (N) or null. Workspace: bad (M int64: non-finite inputs
// per sample), flag (1 int32: whether a weight is non-finite; filled here
// unless cfg.weight_flag_ready).
cudaError_t launch_packed_float(DType dt, const void* x, const void* values, const void* indices, PackedIndex ik,
                                const int64_t* offsets, int64_t nnz, const void* bias, void* out, int64_t M,
                                int64_t N, int64_t K, bool mam, bool transposed, int64_t* bad, int32_t* flag,
                                cudaStream_t stream, const PackedLaunchConfig& cfg = {});

// int8: x (float32) is quantised per sample into xq (M, K) int8 codes (row
// major whatever the layout of x) and sx (M) scales (workspace), then
//   out[m, n] = float(acc) * (wscale[n] * sx[m]) (+ bias[n])
// with acc the exact int32 max + min (or sum) of values * codes.
cudaError_t launch_packed_int8(const float* x, const int8_t* values, const void* indices, PackedIndex ik,
                               const int64_t* offsets, int64_t nnz, const float* wscale, const float* bias,
                               float* out, int64_t M, int64_t N, int64_t K, bool mam, bool transposed, int8_t* xq,
                               float* sx, cudaStream_t stream, const PackedLaunchConfig& cfg = {});

}  // namespace mamext::cuda
