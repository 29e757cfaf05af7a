// Interface between the per-ISA dense kernels (mam_linear_simd.cpp, compiled
// once per instruction set into mamext::cpu::<isa>) and the operator code that
// validates tensors, allocates outputs and splits work across threads.
//
// Kernel translation units include no torch headers on purpose: everything in
// them is compiled with that ISA's flags, and an inline torch/std function
// instantiated there could be picked by the linker for baseline callers.
#pragma once

#include <cstdint>

#include "common/cpu_dispatch.h"

namespace mamext::cpu {

// Dense MAM forward over rows [m0, m1) of x and inputs [k0, k1) against one
// packed weight panel holding neurons [n0, n0 + panel_width) (zero padded past N).
//   x     : (M, K) row major           w     : (N, K) row major (index recovery)
//   panel : (k1 - k0, panel_width)     out   : (M, N)
//   amax, amin: (M, N) int32 or null (then no index tracking at all).
// All of K at once (k0 = 0, k1 = K): state and blocks may be null. K in blocks
// (k0 a multiple of k_block): calls over consecutive blocks for the same rows
// and panel share state (2 * (m1 - m0) * panel_width values) and blocks (as
// many int32, index tracking only); the call with k1 == K writes out/amax/amin.
template <typename T>
using DenseForwardFn = void (*)(const T* x, const T* panel, const T* w, const T* bias, T* out,
                                int32_t* amax, int32_t* amin, int64_t m0, int64_t m1, int64_t n0,
                                int64_t N, int64_t K, int64_t k0, int64_t k1, T* state, int32_t* blocks);
// Row-major variant for few rows: all M rows against neurons [n0, n1), no packing.
template <typename T>
using DenseForwardRowsFn = void (*)(const T* x, const T* w, const T* bias, T* out, int32_t* amax,
                                    int32_t* amin, int64_t M, int64_t n0, int64_t n1, int64_t N, int64_t K);
// Exact reference-order path for inputs containing NaN or infinity.
template <typename T>
using DenseForwardSlowFn = void (*)(const T* x, const T* w, const T* bias, T* out, int32_t* amax,
                                    int32_t* amin, int64_t m0, int64_t m1, int64_t N, int64_t K);
// Pack inputs [k0, k1) of neurons [n0, n0 + panel_width) of w into panel
// (k1 - k0, panel_width).
template <typename T>
using PackFn = void (*)(const T* w, int64_t N, int64_t K, int64_t n0, int64_t k0, int64_t k1, T* panel);
// True when none of the n values is NaN or +-inf.
template <typename T>
using AllFiniteFn = bool (*)(const T* p, int64_t n);
// Both backward kernels return false (and skip the entry) if an index is
// outside [0, K).
// grad_input rows [m0, m1): gx[m, k] = sum_n g[m, n] * w[n, k] * ([k == amax] + [k == amin])
template <typename T>
using BackwardInputFn = bool (*)(const T* g, const T* w, const int32_t* amax, const int32_t* amin,
                                 T* gx, int64_t m0, int64_t m1, int64_t N, int64_t K);
// grad_weight rows [n0, n1): gw[n, k] = sum_m g[m, n] * x[m, k] * (same indicator)
template <typename T>
using BackwardWeightFn = bool (*)(const T* g, const T* x, const int32_t* amax, const int32_t* amin,
                                  T* gw, int64_t n0, int64_t n1, int64_t M, int64_t N, int64_t K);

template <typename T>
struct DenseKernels {
  int panel_width;
  int row_block;  // rows per register tile (a good row-chunk multiple)
  int64_t k_block;  // inputs per weight panel when K is split (panel <= kPanelBlockBytes)
  PackFn<T> pack;
  DenseForwardFn<T> forward;
  DenseForwardRowsFn<T> forward_rows;
  DenseForwardSlowFn<T> forward_slow;
  AllFiniteFn<T> all_finite;
  BackwardInputFn<T> backward_input;
  BackwardWeightFn<T> backward_weight;
};

// Below this many rows the dense forward skips weight packing.
constexpr int64_t kRowMajorMaxRows = 8;
// Largest packed weight panel (per thread); a longer K is processed in blocks.
constexpr int64_t kPanelBlockBytes = 1024 * 1024;
// Rows per register tile whose running state a K-blocked forward keeps in
// memory between blocks (times row_block).
constexpr int64_t kBlockedRowTiles = 64;

struct KernelTable {
  Capability capability;
  DenseKernels<float> dense_f32;
  DenseKernels<double> dense_f64;
};

// One table per ISA, defined in the per-ISA objects.
namespace default_isa { const KernelTable& kernel_table(); }
namespace avx2 { const KernelTable& kernel_table(); }
namespace avx512 { const KernelTable& kernel_table(); }
namespace neon { const KernelTable& kernel_table(); }

// The table for cpu::active_capability() (defined in ops/cpu/mam_linear_kernel.cpp).
const KernelTable& kernels();

}  // namespace mamext::cpu
