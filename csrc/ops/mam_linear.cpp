// Operator schemas for the dense MAM layer. Kernels: cpu/mam_linear_ops.cpp
// (CPU), cuda/ (CUDA). Fake kernels and the autograd formula:
// python/mamext/ops.py; the inference op's autograd kernel (not
// differentiable) is here.
#include <torch/library.h>

#include "inference_only.h"

TORCH_LIBRARY(mamext, m) {
  // Training forward: output plus int32 argmax/argmin (lowest index on ties).
  m.def("mam_linear_forward(Tensor input, Tensor weight, Tensor? bias) -> (Tensor, Tensor, Tensor)");
  // Inference forward: no index tracking.
  m.def("mam_linear_inference(Tensor input, Tensor weight, Tensor? bias) -> Tensor");
  // Backward: (grad_input, grad_weight); an entry whose output_mask is false is
  // returned as an empty tensor. grad_bias is grad_output summed (done in Python).
  m.def(
      "mam_linear_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor argmax, Tensor argmin, "
      "bool[2] output_mask) -> (Tensor, Tensor)");
}

namespace mamext {
namespace {

using OptTensor = std::optional<at::Tensor>;

struct InferenceTag {
  static at::Tensor call(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("mamext::mam_linear_inference", "")
                               .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(input, weight, bias);
  }
  static const char* message() {
    return "mamext::mam_linear_inference is not differentiable: it tracks no indices; use mamext.mam_linear or "
           "torch.ops.mamext.mam_linear_forward";
  }
};

}  // namespace
}  // namespace mamext

TORCH_LIBRARY_IMPL(mamext, Autograd, m) {
  m.impl("mam_linear_inference", [](const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias) {
    return mamext::inference_only_autograd<mamext::InferenceTag>(input, weight, bias);
  });
}
