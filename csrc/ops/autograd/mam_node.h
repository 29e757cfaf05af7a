// Pieces shared by the autograd kernels of the MAM operators
// (autograd/mam_linear_kernel.cpp, autograd/mam_conv2d_kernel.cpp): calls to
// the operators below the autograd keys, and the backward of the recorded
// node, whose first three inputs are input, weight and an optional bias
// (saved_data["has_bias"]).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>

#include <array>
#include <cstddef>

namespace mamext {

// The typed handle of operator `name` (callers keep it in a static).
template <typename Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// op(args...) dispatched below the autograd keys.
template <typename Signature, typename... Args>
auto call_below_autograd(const c10::TypedOperatorHandle<Signature>& op, const Args&... args) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(args...);
}

// The gradients of a node with `inputs` inputs (undefined where not needed):
// input_and_weight(mask) gives (grad_input, grad_weight) for mask = {input
// wanted, weight wanted}; bias() gives the bias gradient.
template <typename InputAndWeight, typename Bias>
torch::autograd::variable_list mam_node_grads(torch::autograd::AutogradContext* ctx, const at::Tensor& grad_out,
                                              size_t inputs, InputAndWeight input_and_weight, Bias bias) {
  torch::autograd::variable_list result(inputs);
  if (!grad_out.defined()) return result;
  const bool need_input = ctx->needs_input_grad(0);
  const bool need_weight = ctx->needs_input_grad(1);
  const bool need_bias = ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2);
  if (need_input || need_weight) {
    auto [gx, gw] = input_and_weight(std::array<bool, 2>{need_input, need_weight});
    if (need_input) result[0] = gx;
    if (need_weight) result[1] = gw;
  }
  if (need_bias) result[2] = bias();
  return result;
}

}  // namespace mamext
