// Autocast kernels of the dense MAM operators (torch.autocast on CPU and CUDA):
// every floating operand is cast to the widest floating dtype among them, so
// a float32 MAMLinear after a layer that autocast ran in bfloat16/float16
// computes in float32 (its products are float32 anyway) and returns float32.
// The casts are ordinary differentiable ops: gradients flow back in each
// operand's own dtype. mamext::packed_linear needs no autocast kernel (it
// accepts any floating input whatever its values' dtype), so autocast falls
// through to its kernels.
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

bool is_floating_operand(const at::Tensor& t) { return t.defined() && is_floating_input(t.scalar_type()); }

// The widest floating dtype of the defined floating operands (float16 with
// bfloat16 gives float32); nullopt when there is none.
std::optional<at::ScalarType> widest_floating(std::initializer_list<const at::Tensor*> operands) {
  std::optional<at::ScalarType> widest;
  for (const at::Tensor* t : operands) {
    if (!is_floating_operand(*t)) continue;
    widest = widest ? at::promote_types(*widest, t->scalar_type()) : t->scalar_type();
  }
  return widest;
}

at::Tensor cast(const at::Tensor& t, std::optional<at::ScalarType> dtype) {
  if (!dtype || !is_floating_operand(t) || t.scalar_type() == *dtype) return t;
  return t.to(*dtype);
}

OptTensor cast(const OptTensor& t, std::optional<at::ScalarType> dtype) {
  if (!t.has_value()) return t;
  return cast(*t, dtype);
}

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

const at::Tensor& value_or_undefined(const OptTensor& t) {
  static const at::Tensor undefined;
  return t.has_value() ? *t : undefined;
}

template <c10::DispatchKey Key>
ForwardResult forward_autocast(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  const auto dtype = widest_floating({&input, &weight, &value_or_undefined(bias)});
  using Signature = ForwardResult(const at::Tensor&, const at::Tensor&, const OptTensor&);
  return find_op<Signature>("mamext::mam_linear_forward").call(cast(input, dtype), cast(weight, dtype), cast(bias, dtype));
}

template <c10::DispatchKey Key>
at::Tensor inference_autocast(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  const auto dtype = widest_floating({&input, &weight, &value_or_undefined(bias)});
  using Signature = at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&);
  return find_op<Signature>("mamext::mam_linear_inference")
      .call(cast(input, dtype), cast(weight, dtype), cast(bias, dtype));
}

template <c10::DispatchKey Key>
std::tuple<at::Tensor, at::Tensor> backward_autocast(const at::Tensor& grad_output, const at::Tensor& input,
                                                     const at::Tensor& weight, const at::Tensor& argmax,
                                                     const at::Tensor& argmin, std::array<bool, 2> mask) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  const auto dtype = widest_floating({&grad_output, &input, &weight});
  using Signature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                       const at::Tensor&, const at::Tensor&, std::array<bool, 2>);
  return find_op<Signature>("mamext::mam_linear_backward")
      .call(cast(grad_output, dtype), cast(input, dtype), cast(weight, dtype), argmax, argmin, mask);
}

}  // namespace
}  // namespace mamext

TORCH_LIBRARY_IMPL(mamext, AutocastCPU, m) {
  m.impl("mam_linear_forward", &mamext::forward_autocast<c10::DispatchKey::AutocastCPU>);
  m.impl("mam_linear_inference", &mamext::inference_autocast<c10::DispatchKey::AutocastCPU>);
  m.impl("mam_linear_backward", &mamext::backward_autocast<c10::DispatchKey::AutocastCPU>);
}

TORCH_LIBRARY_IMPL(mamext, AutocastCUDA, m) {
  m.impl("mam_linear_forward", &mamext::forward_autocast<c10::DispatchKey::AutocastCUDA>);
  m.impl("mam_linear_inference", &mamext::inference_autocast<c10::DispatchKey::AutocastCUDA>);
  m.impl("mam_linear_backward", &mamext::backward_autocast<c10::DispatchKey::AutocastCUDA>);
}
