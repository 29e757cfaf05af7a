// Autograd kernel of mamext::packed_linear: inference only (see
// inference_only.h): the forward runs, asking for a gradient of it raises.
#include <torch/library.h>

#include "ops/autograd/inference_only.h"

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
    return "mamext: packed layers (mamext::packed_linear) are inference only and have no gradient; train the dense "
           "(masked) model and pack it afterwards";
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(mamext, Autograd, m) {
  m.impl("packed_linear", [](const at::Tensor& input, const at::Tensor& values, const at::Tensor& indices,
                             const at::Tensor& offsets, const OptTensor& bias, const OptTensor& scale,
                             int64_t in_features, bool mam) {
    return inference_only_autograd<PackedLinearTag>(input, values, indices, offsets, bias, scale, in_features, mam);
  });
}

}  // namespace mamext
