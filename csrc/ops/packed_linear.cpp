// Operator schema for packed (pruned, CSR per output neuron) MAM and Linear
// layers, and its autograd kernel (inference only, csrc/inference_only.h). CPU kernels:
// cpu/packed_mam_ops.cpp + cpu/packed_mam_kernel.cpp. Fake kernel:
// python/mamext/sparse.py.
#include <torch/library.h>

#include "inference_only.h"

namespace mamext {
namespace {

using OptTensor = std::optional<at::Tensor>;

struct PackedLinearTag {
  static at::Tensor call(const at::Tensor& input, const at::Tensor& values, const at::Tensor& indices,
                         const at::Tensor& offsets, const OptTensor& bias, const OptTensor& scale, int64_t in_features,
                         bool mam) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("mamext::packed_linear", "")
                               .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, const OptTensor&, const OptTensor&, int64_t, bool)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(input, values, indices, offsets, bias, scale, in_features, mam);
  }
  static const char* message() {
    return "mamext.sparse: packed layers are inference only and have no gradient; train the dense (masked) model "
           "and pack it afterwards";
  }
};

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

TORCH_LIBRARY_IMPL(mamext, Autograd, m) {
  m.impl("packed_linear", [](const at::Tensor& input, const at::Tensor& values, const at::Tensor& indices,
                             const at::Tensor& offsets, const OptTensor& bias, const OptTensor& scale,
                             int64_t in_features, bool mam) {
    return inference_only_autograd<PackedLinearTag>(input, values, indices, offsets, bias, scale, in_features, mam);
  });
}

}  // namespace mamext
