// Autograd kernels of the dense MAM operators, registered once for every
// backend (the Autograd key):
//  - mam_linear_forward, reverse mode: gradients flow only through the two
//    selected products, computed by mam_linear_backward from the saved
//    argmax/argmin; the bias gradient is grad_output summed in the compute
//    dtype. Forward mode (torch.func.jvp/jacfwd, torch.autograd.forward_ad)
//    and every torch.func transform (which refuse C++ autograd nodes): the
//    output is rewritten with differentiable ATen ops as the sum of the two
//    selected products (indices from the forward kernel) plus the bias, which
//    has the same value bit for bit; its tangent is the tangent of those two
//    products plus the bias tangent, its gradient flows through the same two
//    products as the backward kernel.
//  - mam_linear_inference: reverse mode raises (it tracks no indices, see
//    inference_only.h); forward mode runs as mam_linear_forward.
//  - mam_linear_backward: not differentiable (no double backward).
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "common/compute_type.h"
#include "ops/autograd/inference_only.h"
#include "ops/autograd/mam_node.h"

namespace mamext {
namespace {

using OptTensor = std::optional<at::Tensor>;
using ForwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using ForwardSignature = ForwardResult(const at::Tensor&, const at::Tensor&, const OptTensor&);
using InferenceSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&);
using BackwardSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                             const at::Tensor&, const at::Tensor&, std::array<bool, 2>);

constexpr char kForwardOp[] = "mamext::mam_linear_forward";
constexpr char kInferenceOp[] = "mamext::mam_linear_inference";
constexpr char kBackwardOp[] = "mamext::mam_linear_backward";
constexpr char kInferenceMessage[] =
    "mamext::mam_linear_inference is not differentiable: it tracks no indices; use mamext.mam_linear or "
    "torch.ops.mamext.mam_linear_forward";
constexpr char kBackwardMessage[] =
    "mamext::mam_linear_backward is not differentiable: double backward through a MAM layer is not supported";

ForwardResult forward_below_autograd(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias) {
  return call_below_autograd(op_handle<ForwardSignature, kForwardOp>(), input, weight, bias);
}

const c10::TypedOperatorHandle<BackwardSignature>& backward_op() {
  return op_handle<BackwardSignature, kBackwardOp>();
}

class MamLinearFunction : public torch::autograd::Function<MamLinearFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                               const OptTensor& bias) {
    return record_forward(ctx, input, weight, bias, forward_below_autograd(input, weight, bias));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& grad_out = grads[0];
    auto input_and_weight = [&](std::array<bool, 2> mask) {
      return backward_op().call(grad_out, input, weight, saved[2], saved[3], mask);
    };
    auto bias = [&] {
      const auto dtype = grad_out.scalar_type();
      const c10::SymInt N = weight.sym_size(0);
      if (TORCH_GUARD_SIZE_OBLIVIOUS(N.sym_eq(0)))  // no neurons: reshape({-1, 0}) would be ambiguous
        return at::zeros({0}, grad_out.options());
      return grad_out.reshape_symint({-1, N}).to(compute_type(dtype)).sum(0).to(dtype);
    };
    return mam_node_grads(ctx, grad_out, 3, input_and_weight, bias);
  }
};

// (M, N): x[m, index[m, n]] * w[n, index[m, n]] for x (M, K), w (N, K).
at::Tensor selected_products(const at::Tensor& x, const at::Tensor& w, const at::Tensor& index) {
  const at::Tensor i = index.to(at::kLong);
  return x.gather(1, i) * w.gather(1, i.t()).t();
}

// The forward written with differentiable ATen ops, given the kernel's indices.
at::Tensor forward_from_indices(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias,
                                const at::Tensor& argmax, const at::Tensor& argmin) {
  const auto ct = compute_type(input.scalar_type());
  const int64_t N = weight.size(0), K = weight.size(1);
  const at::Tensor x = input.reshape({-1, K}).to(ct);  // K > 0: never ambiguous
  const int64_t rows = x.size(0);
  const at::Tensor w = weight.to(ct);
  at::Tensor out = selected_products(x, w, argmax.reshape({rows, N})) + selected_products(x, w, argmin.reshape({rows, N}));
  if (bias.has_value() && bias->defined()) out = out + bias->to(ct);
  std::vector<int64_t> sizes = input.sizes().vec();
  sizes.back() = N;
  return out.to(input.scalar_type()).reshape(sizes);
}

ForwardResult mam_linear_forward_autograd(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias) {
  if (needs_differentiable_forward(input, weight, bias)) {
    auto [out, argmax, argmin] = forward_below_autograd(input, weight, bias);
    return {forward_from_indices(input, weight, bias, argmax, argmin), argmax, argmin};
  }
  return forward_outputs(MamLinearFunction::apply(input, weight, bias));
}

using InferenceTag = RedispatchTag<InferenceSignature, kInferenceOp, kInferenceMessage>;

at::Tensor mam_linear_inference_autograd(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias) {
  if (has_tangent(input) || has_tangent(weight) || has_tangent(bias))
    return std::get<0>(mam_linear_forward_autograd(input, weight, bias));
  return inference_only_autograd<InferenceTag>(input, weight, bias);
}

using BackwardTag = RedispatchTag<BackwardSignature, kBackwardOp, kBackwardMessage>;

std::tuple<at::Tensor, at::Tensor> mam_linear_backward_autograd(const at::Tensor& grad_output, const at::Tensor& input,
                                                                const at::Tensor& weight, const at::Tensor& argmax,
                                                                const at::Tensor& argmin, std::array<bool, 2> mask) {
  return non_differentiable_backward<BackwardTag>(grad_output, input, weight, argmax, argmin, mask);
}

}  // namespace
}  // namespace mamext

TORCH_LIBRARY_IMPL(mamext, Autograd, m) {
  m.impl("mam_linear_forward", &mamext::mam_linear_forward_autograd);
  m.impl("mam_linear_inference", &mamext::mam_linear_inference_autograd);
  m.impl("mam_linear_backward", &mamext::mam_linear_backward_autograd);
}
