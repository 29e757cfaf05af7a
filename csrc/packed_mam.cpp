// Operator schema for packed (pruned, CSR per output neuron) MAM and Linear
// layers, and its autograd kernel (inference only). CPU kernels:
// cpu/packed_mam_ops.cpp + cpu/packed_mam_kernel.cpp. Fake kernel:
// python/mamext/sparse.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace mamext {
namespace {

using OptTensor = std::optional<at::Tensor>;

constexpr const char* kNoGrad =
    "mamext.sparse: packed layers are inference only and have no gradient; train the dense (masked) model "
    "and pack it afterwards";

at::Tensor packed_linear_below_autograd(const at::Tensor& input, const at::Tensor& values, const at::Tensor& indices,
                                        const at::Tensor& offsets, const OptTensor& bias, const OptTensor& scale,
                                        int64_t in_features, bool mam) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("mamext::packed_linear", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, const OptTensor&, const OptTensor&, int64_t, bool)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(input, values, indices, offsets, bias, scale, in_features, mam);
}

// Recorded only when a gradient is asked for: the forward runs, backward raises.
class PackedLinearNoGrad : public torch::autograd::Function<PackedLinearNoGrad> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext*, const at::Tensor& input, const at::Tensor& values,
                            const at::Tensor& indices, const at::Tensor& offsets, const OptTensor& bias,
                            const OptTensor& scale, int64_t in_features, bool mam) {
    return packed_linear_below_autograd(input, values, indices, offsets, bias, scale, in_features, mam);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false, kNoGrad);
    return {};
  }
};

// In C++ rather than torch.library.register_autograd: a Python autograd kernel
// costs about 6 us per call under torch.no_grad(), more than the whole
// operator at high sparsity.
at::Tensor packed_linear_autograd(const at::Tensor& input, const at::Tensor& values, const at::Tensor& indices,
                                  const at::Tensor& offsets, const OptTensor& bias, const OptTensor& scale,
                                  int64_t in_features, bool mam) {
  const bool wants_grad =
      at::GradMode::is_enabled() && (input.requires_grad() || values.requires_grad() ||
                                     (bias.has_value() && bias->defined() && bias->requires_grad()) ||
                                     (scale.has_value() && scale->defined() && scale->requires_grad()));
  if (!wants_grad) return packed_linear_below_autograd(input, values, indices, offsets, bias, scale, in_features, mam);
  return PackedLinearNoGrad::apply(input, values, indices, offsets, bias, scale, in_features, mam);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mamext, m) {
  // input (*, in_features) floating; values (nnz) float32/float64/int8;
  // indices (nnz) uint8/int16/int32, strictly increasing within each row;
  // offsets (N + 1) int32/int64; bias (N) and weight_scale (N, int8 only) in
  // the compute dtype (values' dtype, float32 for int8). mam=false: the
  // ordinary sum (packed nn.Linear). Output (*, N) in input's dtype.
  m.def(
      "packed_linear(Tensor input, Tensor values, Tensor indices, Tensor offsets, Tensor? bias, "
      "Tensor? weight_scale, int in_features, bool mam) -> Tensor");
}

TORCH_LIBRARY_IMPL(mamext, Autograd, m) { m.impl("packed_linear", &packed_linear_autograd); }

}  // namespace mamext
