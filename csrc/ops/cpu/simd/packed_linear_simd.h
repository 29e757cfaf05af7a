// Interface between the per-ISA packed (sparse) MAM kernels
// (csrc/ops/cpu/simd/packed_linear_simd.cpp, compiled once per instruction set into
// mamext::cpu::<isa>) and the operator glue (csrc/ops/cpu/packed_linear_kernel.cpp).
// Like mam_linear_simd.h: no torch headers, plain pointers only.
//
// Packed layer (CSR per output neuron): row n keeps the connections
// j in [offsets[n], offsets[n+1]) with weight values[j] at input indices[j]
// (strictly increasing within a row). A row with fewer than K entries has at
// least one pruned (zero) connection, so 0 is a candidate for both its max and
// its min; a row with no entry outputs its bias. `mam` = false computes the
// ordinary sum (packed nn.Linear).
#pragma once

#include <cstdint>

#include "ops/cpu/simd/mam_linear_simd.h"

namespace mamext::cpu {

// Largest per-thread sample panel (K x tile_batch) of the batched fast path;
// a longer K takes the panel-free row path.
constexpr int64_t kPackedPanelMaxBytes = 16 * 1024 * 1024;

// Index element type; the table's per-index arrays are indexed by it.
enum class PackedIndex : int { UInt8 = 0, Int16 = 1, Int32 = 2 };

// Panel of samples for the fast path: x points at the first of nb <= pw
// consecutive samples (rows of length K); panel[k * pw + s] = x[s * K + k],
// lanes s in [nb, pw) zero. Returns whether every value moved is finite.
template <typename T>
using PackedPanelFn = bool (*)(const T* x, int64_t K, int64_t nb, int64_t pw, T* panel);

// Fast path (every input and weight finite), vectorised across the samples of
// one panel: neurons [n0, n1) of the nb samples, written to out (nb rows of
// length N, starting at the block's first sample).
template <typename T>
using PackedTileFn = void (*)(const T* panel, int64_t pw, int64_t nb, const T* values, const void* indices,
                              const int64_t* offsets, const T* bias, int64_t K, T* out, int64_t N, int64_t n0,
                              int64_t n1);

// Column-major input and output, every input finite: xt (K, M) and out_t
// (N, M), samples [b0, b0 + nb) with nb <= tile_batch, neurons [n0, n1).
template <typename T>
using PackedColsFn = void (*)(const T* xt, int64_t M, int64_t b0, int64_t nb, const T* values,
                              const void* indices, const int64_t* offsets, const T* bias, int64_t K, T* out_t,
                              int64_t n0, int64_t n1);

// Scalar path over samples [m0, m1) and neurons [n0, n1) of x (M, K):
// `rows` for finite data (used for tiny batches), `rows_checked` for any data
// (NaN/inf semantics of the dense layer with zero weights, see the .cpp).
template <typename T>
using PackedRowsFn = void (*)(const T* x, int64_t K, const T* values, const void* indices,
                              const int64_t* offsets, const T* bias, T* out, int64_t N, int64_t n0,
                              int64_t n1, int64_t m0, int64_t m1);

template <typename T>
using PackedAllFiniteFn = bool (*)(const T* p, int64_t n);

template <typename T>
struct PackedFloatKernels {
  int tile_neurons;  // neuron chunks handed to `tile` should be multiples of this
  int tile_batch;    // panel width: samples per panel (a multiple of the vector length)
  PackedPanelFn<T> panel;
  PackedAllFiniteFn<T> all_finite;
  PackedTileFn<T> tile[2][3];          // [mam][PackedIndex]
  PackedColsFn<T> tile_cols[2][3];     // [mam][PackedIndex]
  PackedRowsFn<T> rows[2][3];          // [mam][PackedIndex]
  PackedRowsFn<T> rows_checked[2][3];  // [mam][PackedIndex]
};

// int8: per-sample symmetric input quantisation of samples [m0, m1) of x (B, K)
// into xq (B, K) int32 (row major; the tiles read it transposed) and their
// scales sx[b] (see the .cpp for the exact formula, mirrored by the C export).
using PackedQuantizeFn = void (*)(const float* x, int64_t K, int32_t* xq, float* sx, int64_t m0, int64_t m1);
// Codes of nb <= pw samples (rows of K, row major) -> panel (K x pw), zero padded.
using PackedPanelI32Fn = bool (*)(const int32_t* xq, int64_t K, int64_t nb, int64_t pw, int32_t* panel);
// out[b, n] = float(acc) * (wscale[n] * sx[b]) (+ bias[n]) with acc the exact
// integer max + min (or sum) of values[j] * q[indices[j], b], for the nb
// samples of one panel (sx and out start at the block's first sample) and
// neurons [n0, n1).
using PackedInt8TileFn = void (*)(const int32_t* panel, int64_t pw, int64_t nb, const int8_t* values,
                                  const void* indices, const int64_t* offsets, const float* wscale,
                                  const float* bias, const float* sx, int64_t K, float* out, int64_t N, int64_t n0,
                                  int64_t n1);

// Tiny batches: samples [m0, m1) and neurons [n0, n1) straight from the
// row-major codes xq (M, K), same formula as the tiles.
using PackedInt8RowsFn = void (*)(const int32_t* xq, int64_t K, const int8_t* values, const void* indices,
                                  const int64_t* offsets, const float* wscale, const float* bias, const float* sx,
                                  float* out, int64_t N, int64_t n0, int64_t n1, int64_t m0, int64_t m1);

struct PackedInt8Kernels {
  int tile_neurons;
  int tile_batch;
  PackedQuantizeFn quantize;
  PackedPanelI32Fn panel;
  PackedInt8TileFn tile[2][3];  // [mam][PackedIndex]
  PackedInt8RowsFn rows[2][3];  // [mam][PackedIndex]
};

struct PackedKernelTable {
  Capability capability;
  PackedFloatKernels<float> f32;
  PackedFloatKernels<double> f64;
  PackedInt8Kernels i8;
};

namespace default_isa { const PackedKernelTable& packed_kernel_table(); }
namespace avx2 { const PackedKernelTable& packed_kernel_table(); }
namespace avx512 { const PackedKernelTable& packed_kernel_table(); }
namespace neon { const PackedKernelTable& packed_kernel_table(); }

// The table for cpu::active_capability() (defined in packed_linear_glue.cpp).
const PackedKernelTable& packed_kernels();

}  // namespace mamext::cpu
