// Autocast kernels of the MAM convolution operators (torch.autocast on the
// CPU; the operators have no CUDA kernel), the rule of the dense operators
// (autocast/mam_linear_kernel.cpp): every floating operand is cast to the
// widest floating dtype among them, so a float32 MAMConv2d after a layer that
// autocast ran in bfloat16 computes in float32 and returns float32. The casts
// are ordinary differentiable ops.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <initializer_list>
#include <optional>
#include <tuple>

#include "common/arg_checks.h"

namespace mamext {
namespace {

using OptTensor = std::optional<at::Tensor>;
using ForwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
constexpr auto kKey = c10::DispatchKey::AutocastCPU;

std::optional<at::ScalarType> widest_floating(std::initializer_list<const at::Tensor*> operands) {
  std::optional<at::ScalarType> widest;
  for (const at::Tensor* t : operands) {
    if (!t->defined() || !is_floating_input(t->scalar_type())) continue;
    widest = widest ? at::promote_types(*widest, t->scalar_type()) : t->scalar_type();
  }
  return widest;
}

at::Tensor cast(const at::Tensor& t, std::optional<at::ScalarType> dtype) {
  if (!dtype || !t.defined() || !is_floating_input(t.scalar_type()) || t.scalar_type() == *dtype) return t;
  return t.to(*dtype);
}

OptTensor cast(const OptTensor& t, std::optional<at::ScalarType> dtype) {
  if (!t.has_value()) return t;
  return cast(*t, dtype);
}

const at::Tensor& value_or_undefined(const OptTensor& t) {
  static const at::Tensor undefined;
  return t.has_value() ? *t : undefined;
}

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

ForwardResult forward_autocast(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kKey);
  const auto dtype = widest_floating({&input, &weight, &value_or_undefined(bias)});
  using Signature = ForwardResult(const at::Tensor&, const at::Tensor&, const OptTensor&, at::IntArrayRef,
                                  at::IntArrayRef, at::IntArrayRef, int64_t);
  return find_op<Signature>("mamext::mam_conv2d_forward")
      .call(cast(input, dtype), cast(weight, dtype), cast(bias, dtype), stride, padding, dilation, groups);
}

at::Tensor inference_autocast(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                              int64_t groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kKey);
  const auto dtype = widest_floating({&input, &weight, &value_or_undefined(bias)});
  using Signature = at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, at::IntArrayRef,
                               at::IntArrayRef, at::IntArrayRef, int64_t);
  return find_op<Signature>("mamext::mam_conv2d_inference")
      .call(cast(input, dtype), cast(weight, dtype), cast(bias, dtype), stride, padding, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor> backward_autocast(const at::Tensor& grad_output, const at::Tensor& input,
                                                     const at::Tensor& weight, const at::Tensor& argmax,
                                                     const at::Tensor& argmin, at::IntArrayRef stride,
                                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                                     int64_t groups, std::array<bool, 2> mask) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kKey);
  const auto dtype = widest_floating({&grad_output, &input, &weight});
  using Signature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                       const at::Tensor&, const at::Tensor&, at::IntArrayRef,
                                                       at::IntArrayRef, at::IntArrayRef, int64_t, std::array<bool, 2>);
  return find_op<Signature>("mamext::mam_conv2d_backward")
      .call(cast(grad_output, dtype), cast(input, dtype), cast(weight, dtype), argmax, argmin, stride, padding,
            dilation, groups, mask);
}

}  // namespace
}  // namespace mamext

TORCH_LIBRARY_IMPL(mamext, AutocastCPU, m) {
  m.impl("mam_conv2d_forward", &mamext::forward_autocast);
  m.impl("mam_conv2d_inference", &mamext::inference_autocast);
  m.impl("mam_conv2d_backward", &mamext::backward_autocast);
}
