// Interface between the per-ISA CPU kernels (csrc/cpu/*_kernel.cpp, compiled
// once per instruction set into mamext::cpu::<isa>) and the operator code that
// validates tensors, allocates outputs and splits work across threads.
//
// Kernel translation units include no torch headers on purpose: everything in
// them is compiled with that ISA's flags, and an inline torch/std function
// instantiated there could be picked by the linker for baseline callers.
#pragma once

#include <cstdint>

namespace mamext::cpu {

// Levels are ordered within one architecture: x86-64 Default < AVX2 < AVX512,
// aarch64 Default < NEON.
enum class Capability : int { Default = 0, AVX2 = 1, AVX512 = 2, NEON = 3 };

// Dense MAM forward over rows [m0, m1) of x against one packed weight panel
// holding neurons [n0, n0 + panel_width) (zero padded past N).
//   x     : (M, K) row major           w     : (N, K) row major (index recovery)
//   panel : (K, panel_width)           out   : (M, N)
//   amax, amin: (M, N) int32 or null (then no index tracking at all).
template <typename T>
using DenseForwardFn = void (*)(const T* x, const T* panel, const T* w, const T* bias, T* out,
                                int32_t* amax, int32_t* amin, int64_t m0, int64_t m1, int64_t n0,
                                int64_t N, int64_t K);
// Row-major variant for few rows: all M rows against neurons [n0, n1), no packing.
template <typename T>
using DenseForwardRowsFn = void (*)(const T* x, const T* w, const T* bias, T* out, int32_t* amax,
                                    int32_t* amin, int64_t M, int64_t n0, int64_t n1, int64_t N, int64_t K);
// Exact reference-order path for inputs containing NaN or infinity.
template <typename T>
using DenseForwardSlowFn = void (*)(const T* x, const T* w, const T* bias, T* out, int32_t* amax,
                                    int32_t* amin, int64_t m0, int64_t m1, int64_t N, int64_t K);
// Pack neurons [n0, n0 + panel_width) of w into panel (K, panel_width).
template <typename T>
using PackFn = void (*)(const T* w, int64_t N, int64_t K, int64_t n0, T* panel);
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

// The table in use: the best the CPU supports, capped by MAMEXT_CPU_CAPABILITY.
const KernelTable& kernels();
Capability detected_capability();
Capability active_capability();
// Force a level (tests); throws if the CPU cannot run it.
void set_capability(Capability c);
const char* capability_name(Capability c);
Capability parse_capability(const char* name);

}  // namespace mamext::cpu
