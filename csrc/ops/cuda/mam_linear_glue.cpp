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

// MAMEXT_CUDA_CHECK_INDICES=0 skips the host-side check of the backward's
// index error flag (one device-to-host copy and a stream synchronisation per
// backward). The kernels never access memory out of bounds either way.
bool index_check_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("MAMEXT_CUDA_CHECK_INDICES");
    return !(v && (std::strcmp(v, "0") == 0 || std::strcmp(v, "false") == 0 || std::strcmp(v, "off") == 0));
  }();
  return enabled;
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
    C10_CUDA_CHECK(cuda::launch_forward(dtype_tag(x.scalar_type()), x.const_data_ptr(), w.const_data_ptr(),
                                        has_bias ? b.const_data_ptr() : nullptr, out.mutable_data_ptr(),
                                        track ? amax.mutable_data_ptr<int32_t>() : nullptr,
                                        track ? amin.mutable_data_ptr<int32_t>() : nullptr, s.M, s.N, s.K, stream));
  }
  out = out.view(s.out_sizes);
  if (track) {
    amax = amax.view(s.out_sizes);
    amin = amin.view(s.out_sizes);
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
    C10_CUDA_CHECK(cuda::launch_backward(dtype_tag(x.scalar_type()), g.const_data_ptr(), x.const_data_ptr(),
                                         w.const_data_ptr(), am.const_data_ptr<int32_t>(),
                                         an.const_data_ptr<int32_t>(), mask[0] ? gx.mutable_data_ptr() : nullptr,
                                         mask[1] ? gw.mutable_data_ptr() : nullptr, s.M, s.N, s.K, deterministic,
                                         error.mutable_data_ptr<int32_t>(), stream));
    // Raising needs the flag on the host: one small copy and a sync, skipped
    // while a CUDA graph is being captured (where a sync is not allowed).
    if (index_check_enabled() && !stream_capturing(stream))
      TORCH_CHECK(error.item<int32_t>() == 0, op, ": argmax/argmin contain indices outside [0, ", s.K, ")");
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
