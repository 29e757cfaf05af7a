// Pieces of CPU operator glue shared by the operators built on the dense
// kernels (cpu/mam_linear_kernel.cpp, cpu/mam_conv2d_kernel.cpp): the dense
// kernels of the active ISA per compute dtype, the float/double dispatch and
// the forward's output tensors. Glue only: includes torch headers, so the
// per-ISA kernel sources must not include it.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <type_traits>

#include "ops/cpu/simd/mam_linear_simd.h"

namespace mamext {

// The dense kernels of the active ISA for T (float or double).
template <typename T>
const cpu::DenseKernels<T>& dense_kernels() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "dense kernels exist for float and double");
  if constexpr (std::is_same_v<T, double>)
    return cpu::kernels().dense_f64;
  else
    return cpu::kernels().dense_f32;
}

// Calls f(T{}) with T = double for a float64 compute type, else float.
template <typename F>
void with_compute_type(at::ScalarType ct, F&& f) {
  if (ct == at::kDouble)
    f(double{});
  else
    f(float{});
}

// The bias as a contiguous tensor of the compute type; undefined when absent.
inline at::Tensor compute_bias(const std::optional<at::Tensor>& bias, at::ScalarType ct) {
  if (bias.has_value() && bias->defined()) return bias->to(ct).contiguous();
  return at::Tensor();
}

// A forward's outputs: values, and the int32 argmax/argmin when tracked
// (undefined otherwise, and null through the *_or_null accessors).
struct ForwardOutputs {
  at::Tensor out, amax, amin;

  ForwardOutputs(at::IntArrayRef sizes, const at::TensorOptions& options, bool track)
      : out(at::empty(sizes, options)) {
    if (track) {
      amax = at::empty(sizes, options.dtype(at::kInt));
      amin = at::empty(sizes, options.dtype(at::kInt));
    }
  }
  at::Tensor* amax_or_null() { return amax.defined() ? &amax : nullptr; }
  at::Tensor* amin_or_null() { return amin.defined() ? &amin : nullptr; }
};

}  // namespace mamext
