// Autograd kernels of the MAM convolution operators, registered once for every
// backend (the Autograd key), as for mam_linear:
//  - mam_conv2d_forward, reverse mode: gradients flow only through the two
//    selected products, computed by mam_conv2d_backward from the saved
//    argmax/argmin; the bias gradient is grad_output summed over (N, Ho, Wo)
//    in the compute dtype. Forward mode (torch.func.jvp/jacfwd,
//    torch.autograd.forward_ad) and every torch.func transform (which refuse
//    C++ autograd nodes): the output is rewritten with differentiable ATen ops
//    (im2col, gather) as the sum of the two selected products (indices from
//    the forward kernel) plus the bias, the same value bit for bit.
//  - mam_conv2d_inference: reverse mode raises (it tracks no indices, see
//    inference_only.h); forward mode runs as mam_conv2d_forward.
//  - mam_conv2d_backward: not differentiable (no double backward).
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <vector>

#include "common/compute_type.h"
#include "ops/autograd/inference_only.h"
#include "ops/autograd/mam_node.h"

namespace mamext {
namespace {

using OptTensor = std::optional<at::Tensor>;
using ForwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using ForwardSignature = ForwardResult(const at::Tensor&, const at::Tensor&, const OptTensor&, at::IntArrayRef,
                                       at::IntArrayRef, at::IntArrayRef, int64_t);
using InferenceSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, at::IntArrayRef,
                                      at::IntArrayRef, at::IntArrayRef, int64_t);
using BackwardSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                             const at::Tensor&, const at::Tensor&, at::IntArrayRef,
                                                             at::IntArrayRef, at::IntArrayRef, int64_t,
                                                             std::array<bool, 2>);

constexpr char kForwardOp[] = "mamext::mam_conv2d_forward";
constexpr char kInferenceOp[] = "mamext::mam_conv2d_inference";
constexpr char kBackwardOp[] = "mamext::mam_conv2d_backward";
constexpr char kInferenceMessage[] =
    "mamext::mam_conv2d_inference is not differentiable: it tracks no indices; use mamext.mam_conv2d or "
    "torch.ops.mamext.mam_conv2d_forward";
constexpr char kBackwardMessage[] =
    "mamext::mam_conv2d_backward is not differentiable: double backward through a MAM convolution is not supported";

// Stride, padding, dilation and groups, as saved between forward and backward.
struct ConvArgs {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;
};

ForwardResult forward_below_autograd(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias,
                                     const ConvArgs& a) {
  return call_below_autograd(op_handle<ForwardSignature, kForwardOp>(), input, weight, bias, a.stride, a.padding,
                             a.dilation, a.groups);
}

const c10::TypedOperatorHandle<BackwardSignature>& backward_op() {
  return op_handle<BackwardSignature, kBackwardOp>();
}

class MamConv2dFunction : public torch::autograd::Function<MamConv2dFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                               const OptTensor& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups) {
    const ConvArgs a{stride.vec(), padding.vec(), dilation.vec(), groups};
    ctx->saved_data["stride"] = a.stride;
    ctx->saved_data["padding"] = a.padding;
    ctx->saved_data["dilation"] = a.dilation;
    ctx->saved_data["groups"] = groups;
    return record_forward(ctx, input, weight, bias, forward_below_autograd(input, weight, bias, a));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& grad_out = grads[0];
    auto input_and_weight = [&](std::array<bool, 2> mask) {
      const auto stride = ctx->saved_data["stride"].toIntVector();
      const auto padding = ctx->saved_data["padding"].toIntVector();
      const auto dilation = ctx->saved_data["dilation"].toIntVector();
      return backward_op().call(grad_out, saved[0], saved[1], saved[2], saved[3], stride, padding, dilation,
                                ctx->saved_data["groups"].toInt(), mask);
    };
    auto bias = [&] {
      const auto dtype = grad_out.scalar_type();
      return grad_out.to(compute_type(dtype)).sum({0, 2, 3}).to(dtype);
    };
    return mam_node_grads(ctx, grad_out, 7, input_and_weight, bias);
  }
};

// (N, G, n, L): patch[k] * w[o, k] at k = index, for patches (N, G, Kg, L) and
// weights (G, n, Kg).
at::Tensor selected_products(const at::Tensor& patches, const at::Tensor& w, const at::Tensor& index) {
  const at::Tensor i = index.to(at::kLong);
  const auto sizes = i.sizes();
  return patches.gather(2, i) * w.unsqueeze(0).expand({sizes[0], sizes[1], sizes[2], w.size(2)}).gather(3, i);
}

// The forward written with differentiable ATen ops, given the kernel's indices.
at::Tensor forward_from_indices(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias,
                                const ConvArgs& a, const at::Tensor& argmax, const at::Tensor& argmin) {
  const auto ct = compute_type(input.scalar_type());
  const int64_t N = input.size(0), C_out = weight.size(0), G = a.groups;
  const int64_t Kg = weight.size(1) * weight.size(2) * weight.size(3);
  const int64_t Ho = argmax.size(2), Wo = argmax.size(3), L = Ho * Wo;
  const at::Tensor patches = at::im2col(input.to(ct), {weight.size(2), weight.size(3)}, a.dilation, a.padding,
                                        a.stride)
                                 .reshape({N, G, Kg, L});
  const at::Tensor w = weight.to(ct).reshape({G, C_out / G, Kg});
  const std::vector<int64_t> grouped{N, G, C_out / G, L};
  at::Tensor out = selected_products(patches, w, argmax.reshape(grouped)) +
                   selected_products(patches, w, argmin.reshape(grouped));
  out = out.reshape({N, C_out, Ho, Wo});
  if (bias.has_value() && bias->defined()) out = out + bias->to(ct).reshape({1, C_out, 1, 1});
  return out.to(input.scalar_type());
}

ForwardResult mam_conv2d_forward_autograd(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias,
                                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                          int64_t groups) {
  if (needs_differentiable_forward(input, weight, bias)) {
    const ConvArgs a{stride.vec(), padding.vec(), dilation.vec(), groups};
    auto [out, argmax, argmin] = forward_below_autograd(input, weight, bias, a);
    return {forward_from_indices(input, weight, bias, a, argmax, argmin), argmax, argmin};
  }
  return forward_outputs(MamConv2dFunction::apply(input, weight, bias, stride, padding, dilation, groups));
}

using InferenceTag = RedispatchTag<InferenceSignature, kInferenceOp, kInferenceMessage>;

at::Tensor mam_conv2d_inference_autograd(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias,
                                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                         int64_t groups) {
  if (has_tangent(input) || has_tangent(weight) || has_tangent(bias))
    return std::get<0>(mam_conv2d_forward_autograd(input, weight, bias, stride, padding, dilation, groups));
  return inference_only_autograd<InferenceTag>(input, weight, bias, stride, padding, dilation, groups);
}

using BackwardTag = RedispatchTag<BackwardSignature, kBackwardOp, kBackwardMessage>;

std::tuple<at::Tensor, at::Tensor> mam_conv2d_backward_autograd(const at::Tensor& grad_output, const at::Tensor& input,
                                                                const at::Tensor& weight, const at::Tensor& argmax,
                                                                const at::Tensor& argmin, at::IntArrayRef stride,
                                                                at::IntArrayRef padding, at::IntArrayRef dilation,
                                                                int64_t groups, std::array<bool, 2> mask) {
  return non_differentiable_backward<BackwardTag>(grad_output, input, weight, argmax, argmin, stride, padding,
                                                  dilation, groups, mask);
}

}  // namespace
}  // namespace mamext

TORCH_LIBRARY_IMPL(mamext, Autograd, m) {
  m.impl("mam_conv2d_forward", &mamext::mam_conv2d_forward_autograd);
  m.impl("mam_conv2d_inference", &mamext::mam_conv2d_inference_autograd);
  m.impl("mam_conv2d_backward", &mamext::mam_conv2d_backward_autograd);
}
