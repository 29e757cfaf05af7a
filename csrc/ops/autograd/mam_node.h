// Pieces shared by the autograd kernels of the MAM operators
// (autograd/mam_linear_kernel.cpp, autograd/mam_conv2d_kernel.cpp): calls to
// the operators below the autograd keys, the Tags of their non-differentiable
// operators, and the recording and backward of the training forward's node,
// whose first three inputs are input, weight and an optional bias
// (saved_data["has_bias"]).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>

#include <array>
#include <cstddef>
#include <optional>
#include <tuple>

#include "ops/autograd/inference_only.h"

namespace mamext {

// The typed handle of operator Name, looked up on first use.
template <typename Signature, const char* Name>
const c10::TypedOperatorHandle<Signature>& op_handle() {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(Name, "").typed<Signature>();
  return op;
}

// op(args...) dispatched below the autograd keys.
template <typename Signature, typename... Args>
auto call_below_autograd(const c10::TypedOperatorHandle<Signature>& op, const Args&... args) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(args...);
}

// A Tag of inference_only_autograd (inference_only.h) for operator Name, not
// differentiable itself: call redispatches to it below autograd, message()
// is Message.
inline at::Tensor as_function_output(at::Tensor t) { return t; }
inline torch::autograd::variable_list as_function_output(std::tuple<at::Tensor, at::Tensor> t) {
  return {std::get<0>(t), std::get<1>(t)};
}
template <typename Signature, const char* Name, const char* Message>
struct RedispatchTag {
  template <typename... Args>
  static auto call(const Args&... args) {
    return as_function_output(call_below_autograd(op_handle<Signature, Name>(), args...));
  }
  static const char* message() { return Message; }
};

// The autograd kernel of a backward operator (grad_input, grad_weight), which
// is not differentiable: Tag as above.
template <typename Tag, typename... Args>
std::tuple<at::Tensor, at::Tensor> non_differentiable_backward(const Args&... args) {
  torch::autograd::variable_list grads = inference_only_autograd<Tag>(args...);
  return {grads[0], grads[1]};
}

// Records a training forward's result (out, argmax, argmin) on the node:
// saves input, weight and the indices for the backward, and whether there is
// a bias; the indices are not differentiable. Returns the node's outputs.
inline torch::autograd::variable_list record_forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                                                     const at::Tensor& weight,
                                                     const std::optional<at::Tensor>& bias,
                                                     const std::tuple<at::Tensor, at::Tensor, at::Tensor>& result) {
  const auto& [out, argmax, argmin] = result;
  ctx->save_for_backward({input, weight, argmax, argmin});
  ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
  ctx->mark_non_differentiable({argmax, argmin});
  return {out, argmax, argmin};
}

// The three outputs of a training forward node as the operator's result.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_outputs(const torch::autograd::variable_list& outs) {
  return {outs[0], outs[1], outs[2]};
}

// The forward must be written with differentiable ATen ops: forward-mode AD
// (a tangent on an operand) or a torch.func transform (which refuses C++
// autograd nodes).
inline bool needs_differentiable_forward(const at::Tensor& input, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& bias) {
  return has_tangent(input) || has_tangent(weight) || has_tangent(bias) || in_functorch_transform();
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
