// Autograd kernels of inference-only operators (mam_linear_inference,
// packed_linear), in C++ rather than torch.library.register_autograd: a Python
// autograd kernel adds a Python call to every layer call, even under
// torch.no_grad(), which at high sparsity costs more than the packed layer
// itself (benchmarks/README.md). When no gradient is wanted, the call
// goes straight below autograd; otherwise the forward runs and is recorded,
// and its backward raises Tag::message(). An input carrying a forward-mode
// tangent (torch.func.jvp, torch.autograd.forward_ad) raises it at once: a
// tangent silently dropped would read as a zero derivative. So does a gradient
// asked for under a torch.func transform (which refuses C++ autograd nodes).
//
// Tag: struct { static R call(Args...);   // redispatch below autograd; R is
//                                         // at::Tensor or a variable_list
//               static const char* message(); }
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>

#include <optional>

namespace mamext {

inline bool wants_grad_of(const at::Tensor& t) { return t.defined() && t.requires_grad(); }
inline bool wants_grad_of(const std::optional<at::Tensor>& t) { return t.has_value() && wants_grad_of(*t); }
template <typename T>
inline bool wants_grad_of(const T&) { return false; }

// Forward-mode AD runs at dual level 0 (functorch's transforms included).
inline bool has_tangent(const at::Tensor& t) { return t.defined() && t._fw_grad(/*level=*/0).defined(); }
inline bool has_tangent(const std::optional<at::Tensor>& t) { return t.has_value() && has_tangent(*t); }
template <typename T>
inline bool has_tangent(const T&) { return false; }

// Inside a torch.func transform (grad, vjp, jacrev, jvp, jacfwd, vmap), which
// refuses C++ torch::autograd::Function nodes: functorch includes its dynamic
// layer key in the thread-local dispatch key set while any transform is active.
inline bool in_functorch_transform() {
  return c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerFrontMode);
}

template <typename Tag>
class InferenceOnlyFunction : public torch::autograd::Function<InferenceOnlyFunction<Tag>> {
 public:
  template <typename... Args>
  static auto forward(torch::autograd::AutogradContext*, Args&&... args) {
    return Tag::call(std::forward<Args>(args)...);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false, Tag::message());
    return {};
  }
};

template <typename Tag, typename... Args>
auto inference_only_autograd(const Args&... args) {
  TORCH_CHECK(!(has_tangent(args) || ...), Tag::message(), " (forward-mode AD included)");
  if (!at::GradMode::is_enabled() || !(wants_grad_of(args) || ...)) return Tag::call(args...);
  TORCH_CHECK(!in_functorch_transform(), Tag::message());
  return InferenceOnlyFunction<Tag>::apply(args...);
}

}  // namespace mamext
