// CUDA implementation of the dense MAM operators: argument checks (shared with
// the CPU, mam_linear.h), device guard, current stream, allocation, dtype
// dispatch. The kernels are in mam_linear_kernel.cu (forward) and
// mam_linear_backward_kernel.cu (backward); the autograd kernel
// (ops/autograd/mam_linear_kernel.cpp) and the fake kernels
// (python/mamext/ops/mam_linear.py) are shared with the CPU.
#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <tuple>

#include "common/compute_type.h"
#include "ops/cuda/content_cache.h"
#include "ops/cuda/launch_error.h"
#include "ops/cuda/mam_linear_kernel.h"
#include "ops/mam_linear.h"

namespace mamext {
namespace {

cuda::DType dtype_tag(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return cuda::DType::F32;
    case at::kHalf:
      return cuda::DType::F16;
    case at::kBFloat16:
      return cuda::DType::BF16;
    case at::kDouble:
      return cuda::DType::F64;
    default:
      TORCH_CHECK(false, "mamext: unsupported dtype ", t);
  }
}

void check_cuda(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got one on ", t.device());
}

// The backward's index check: the kernels skip an entry whose index lies
// outside [0, K) and raise a device flag; turning the flag into an exception
// costs a device-to-host copy and a stream synchronisation. Indices produced
// by this forward are valid by construction, so the forward records its
// argmax / argmin (content_cache.h) and the backward checks only indices it
// does not know (once: they are recorded when they pass).
// MAMEXT_CUDA_CHECK_INDICES: unset / "cached": that; "0" / "off": never
// check; "always": every call.
enum class IndexCheck { Off, Cached, Always };

IndexCheck index_check_mode() {
  static const IndexCheck mode = [] {
    const char* v = std::getenv("MAMEXT_CUDA_CHECK_INDICES");
    if (!v) return IndexCheck::Cached;
    if (std::strcmp(v, "0") == 0 || std::strcmp(v, "false") == 0 || std::strcmp(v, "off") == 0)
      return IndexCheck::Off;
    if (std::strcmp(v, "always") == 0) return IndexCheck::Always;
    return IndexCheck::Cached;
  }();
  return mode;
}

struct Valid {};
// (argmax, argmin) pairs known to lie in [0, K), K being the tag.
cuda::ContentCache<Valid>& valid_indices() {
  static auto* cache = new cuda::ContentCache<Valid>(64);  // never destroyed: may be used at exit
  return *cache;
}

// MAMEXT_CUDA_FORWARD_SLICES=<n> forces the forward's K split (1: never
// split); unset: forward_k_slices's choice for the device's SM count.
int forward_slices(cuda::DType dt, int64_t M, int64_t N, int64_t K, bool track) {
  static const int forced = [] {
    const char* v = std::getenv("MAMEXT_CUDA_FORWARD_SLICES");
    return v ? std::atoi(v) : 0;
  }();
  if (forced > 0) return forced < 32 ? forced : 32;
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return cuda::forward_k_slices(dt, M, N, K, track, sms);
}

bool stream_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_common(const char* op, const at::Tensor& input,
                                                              const at::Tensor& weight,
                                                              const std::optional<at::Tensor>& bias_opt,
                                                              bool track) {
  const DenseShape s = check_dense_args(op, input, weight, bias_opt);
  check_cuda(op, input, "input");
  const bool has_bias = bias_opt.has_value() && bias_opt->defined();
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.reshape({s.M, s.K}).contiguous();
  const at::Tensor w = weight.contiguous();
  at::Tensor b;
  if (has_bias) b = bias_opt->contiguous();
  at::Tensor out = at::empty({s.M, s.N}, x.options());
  at::Tensor amax, amin;
  if (track) {
    amax = at::empty({s.M, s.N}, x.options().dtype(at::kInt));
    amin = at::empty({s.M, s.N}, x.options().dtype(at::kInt));
  }
  if (s.M > 0 && s.N > 0) {
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream(x.device().index()).stream();
    const cuda::DType dt = dtype_tag(x.scalar_type());
    const int slices = forward_slices(dt, s.M, s.N, s.K, track);
    const size_t ws_bytes = cuda::forward_workspace_bytes(s.M, s.N, slices, track);
    at::Tensor workspace;
    if (ws_bytes > 0) workspace = at::empty({static_cast<int64_t>(ws_bytes)}, x.options().dtype(at::kByte));
    cuda::check_launch(cuda::launch_forward(dt, x.const_data_ptr(), w.const_data_ptr(),
                                            has_bias ? b.const_data_ptr() : nullptr, out.mutable_data_ptr(),
                                            track ? amax.mutable_data_ptr<int32_t>() : nullptr,
                                            track ? amin.mutable_data_ptr<int32_t>() : nullptr, s.M, s.N, s.K,
                                            stream, slices, ws_bytes > 0 ? workspace.mutable_data_ptr() : nullptr),
                       op);
  }
  out = out.view(s.out_sizes);
  if (track) {
    amax = amax.view(s.out_sizes);
    amin = amin.view(s.out_sizes);
    valid_indices().insert({amax, amin}, s.K, Valid{});
  }
  return {out, amax, amin};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mam_linear_forward_cuda(const at::Tensor& input,
                                                                       const at::Tensor& weight,
                                                                       const std::optional<at::Tensor>& bias) {
  return forward_common("mam_linear_forward", input, weight, bias, true);
}

at::Tensor mam_linear_inference_cuda(const at::Tensor& input, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias) {
  return std::get<0>(forward_common("mam_linear_inference", input, weight, bias, false));
}

std::tuple<at::Tensor, at::Tensor> mam_linear_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                                            const at::Tensor& weight, const at::Tensor& argmax,
                                                            const at::Tensor& argmin, std::array<bool, 2> mask) {
  constexpr const char* op = "mam_linear_backward";
  const DenseShape s = check_backward_args(op, grad_output, input, weight, argmax, argmin);
  check_cuda(op, input, "input");
  const c10::cuda::CUDAGuard guard(input.device());
  const at::ScalarType ct = compute_type(input.scalar_type());
  const at::Tensor g = grad_output.reshape({s.M, s.N}).contiguous();
  const at::Tensor x = input.reshape({s.M, s.K}).contiguous();
  const at::Tensor w = weight.contiguous();
  const at::Tensor am = argmax.reshape({s.M, s.N}).contiguous();
  const at::Tensor an = argmin.reshape({s.M, s.N}).contiguous();
  const auto acc_opts = x.options().dtype(ct);
  at::Tensor gx, gw;
  if (mask[0]) gx = at::zeros({s.M, s.K}, acc_opts);
  if (mask[1]) gw = at::zeros({s.N, s.K}, acc_opts);
  if (s.M > 0 && s.N > 0 && (mask[0] || mask[1])) {
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream(x.device().index()).stream();
    at::Tensor error = at::zeros({1}, x.options().dtype(at::kInt));
    const bool deterministic = at::globalContext().deterministicAlgorithms();
    cuda::check_launch(cuda::launch_backward(dtype_tag(x.scalar_type()), g.const_data_ptr(), x.const_data_ptr(),
                                             w.const_data_ptr(), am.const_data_ptr<int32_t>(),
                                             an.const_data_ptr<int32_t>(), mask[0] ? gx.mutable_data_ptr() : nullptr,
                                             mask[1] ? gw.mutable_data_ptr() : nullptr, s.M, s.N, s.K, deterministic,
                                             error.mutable_data_ptr<int32_t>(), stream),
                       op);
    // Raising needs the flag on the host: one small copy and a sync, skipped
    // while a CUDA graph is being captured (where a sync is not allowed) and
    // for indices already known to be valid.
    const IndexCheck mode = index_check_mode();
    if (mode != IndexCheck::Off && !stream_capturing(stream) &&
        (mode == IndexCheck::Always || !valid_indices().find({argmax, argmin}, s.K))) {
      TORCH_CHECK(error.item<int32_t>() == 0, op, ": argmax/argmin contain indices outside [0, ", s.K, ")");
      valid_indices().insert({argmax, argmin}, s.K, Valid{});
    }
  }
  gx = mask[0] ? gx.to(input.scalar_type()).view(input.sizes()) : at::empty({0}, input.options());
  gw = mask[1] ? gw.to(input.scalar_type()) : at::empty({0}, input.options());
  return {gx, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(mamext, CUDA, m) {
  m.impl("mam_linear_forward", &mam_linear_forward_cuda);
  m.impl("mam_linear_inference", &mam_linear_inference_cuda);
  m.impl("mam_linear_backward", &mam_linear_backward_cuda);
}

}  // namespace mamext
