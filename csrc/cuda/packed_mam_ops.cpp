// CUDA implementation of the packed (sparse) operator mamext::packed_linear:
// argument checks (those of the CPU glue, csrc/cpu/packed_mam_ops.cpp, with
// the same messages, plus the device checks), structure validation, dtype
// handling, device guard, current stream. Kernels: packed_mam_kernel.cu.
//
// Structure validation runs on the device (packed_kernels.h) and costs one
// 8-byte device-to-host copy (a stream synchronisation) per call; the message
// of an invalid structure is rebuilt on the host from the failing row, word
// for word the CPU's. It is skipped while a CUDA graph is being captured
// (no synchronisation allowed there); the kernels stay in bounds anyway.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "cuda/packed_kernels.h"

namespace mamext {
namespace {

constexpr const char* kOp = "packed_linear";

cuda::PackedIndex index_kind(at::ScalarType t) {
  switch (t) {
    case at::kByte: return cuda::PackedIndex::UInt8;
    case at::kShort: return cuda::PackedIndex::Int16;
    case at::kInt: return cuda::PackedIndex::Int32;
    default: TORCH_CHECK(false, kOp, ": indices must be uint8, int16 or int32, got ", t);
  }
  return cuda::PackedIndex::Int32;
}

void check_same_device(const at::Tensor& input, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device() == input.device(), kOp, ": all tensors must be on the same CUDA device; input is on ",
              input.device(), ", ", name, " on ", t.device());
}

bool stream_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

// Raises the CPU glue's error for the first invalid part of the structure
// (error key from the device check, see packed_kernels.h).
void structure_error(uint64_t key, const at::Tensor& idx, const at::Tensor& off, int64_t N, int64_t nnz, int64_t K) {
  if (key == 0) TORCH_CHECK(false, kOp, ": offsets[0] must be 0, got ", off[0].item<int64_t>());
  if (key == 1)
    TORCH_CHECK(false, kOp, ": offsets[-1] (", off[N].item<int64_t>(), ") must equal the number of values (", nnz, ")");
  const int64_t n = static_cast<int64_t>(key - 2);
  const at::Tensor span = off.slice(0, n, n + 2).cpu();
  const int64_t j0 = span[0].item<int64_t>(), j1 = span[1].item<int64_t>();
  TORCH_CHECK(j0 <= j1 && j1 - j0 <= K && j0 >= 0 && j1 <= nnz, kOp,
              ": offsets must be non-decreasing with at most in_features (", K, ") entries per row; row ", n,
              " spans [", j0, ", ", j1, ")");
  const at::Tensor row = idx.slice(0, j0, j1).to(at::kCPU, at::kLong);
  const int64_t* r = row.data_ptr<int64_t>();
  int64_t prev = -1;
  for (int64_t j = 0; j < j1 - j0; ++j) {
    const int64_t k = r[j];
    TORCH_CHECK(k > prev && k < K, kOp, ": indices of row ", n,
                " must be strictly increasing and in [0, in_features=", K, "); found ", k, " after ", prev);
    prev = k;
  }
  TORCH_CHECK(false, kOp, ": invalid structure in row ", n);  // not reached: the device found an error
}

void validate(const at::Tensor& idx, cuda::PackedIndex ik, const at::Tensor& off, int64_t N, int64_t K,
              cudaStream_t stream) {
  const int64_t nnz = idx.numel();
  at::Tensor result = at::empty({1}, off.options());  // int64 storage for one uint64
  C10_CUDA_CHECK(cuda::launch_packed_validate(idx.const_data_ptr(), ik, off.const_data_ptr<int64_t>(), N, nnz, K,
                                              reinterpret_cast<unsigned long long*>(result.mutable_data_ptr<int64_t>()),
                                              stream));
  const uint64_t key = static_cast<uint64_t>(result.item<int64_t>());
  if (key != UINT64_MAX) structure_error(key, idx, off, N, nnz, K);
}

at::Tensor packed_linear_cuda(const at::Tensor& input, const at::Tensor& values, const at::Tensor& indices,
                              const at::Tensor& offsets, const std::optional<at::Tensor>& bias_opt,
                              const std::optional<at::Tensor>& scale_opt, int64_t in_features, bool mam) {
  const auto it = input.scalar_type();
  TORCH_CHECK(it == at::kFloat || it == at::kDouble || it == at::kHalf || it == at::kBFloat16, kOp,
              ": input must be float32, float64, float16 or bfloat16, got ", it);
  TORCH_CHECK(input.dim() >= 1, kOp, ": input must have at least 1 dimension, got a scalar");
  TORCH_CHECK(in_features > 0, kOp, ": in_features must be positive, got ", in_features);
  const int64_t K = in_features;
  TORCH_CHECK(input.size(-1) == K, kOp, ": input's last dimension (", input.size(-1),
              ") must equal in_features (", K, "); input shape ", input.sizes());
  TORCH_CHECK(values.dim() == 1 && indices.dim() == 1 && offsets.dim() == 1, kOp,
              ": values, indices and offsets must be 1-D, got shapes ", values.sizes(), ", ", indices.sizes(), ", ",
              offsets.sizes());
  TORCH_CHECK(values.numel() == indices.numel(), kOp, ": values (", values.numel(), ") and indices (",
              indices.numel(), ") must have the same length");
  TORCH_CHECK(offsets.numel() >= 1, kOp, ": offsets must have out_features + 1 >= 1 entries");
  TORCH_CHECK(offsets.scalar_type() == at::kInt || offsets.scalar_type() == at::kLong, kOp,
              ": offsets must be int32 or int64, got ", offsets.scalar_type());
  const auto vt = values.scalar_type();
  TORCH_CHECK(vt == at::kFloat || vt == at::kDouble || vt == at::kChar, kOp,
              ": values must be float32, float64 or int8, got ", vt);
  const bool is_int8 = vt == at::kChar;
  const at::ScalarType ct = is_int8 ? at::kFloat : vt;
  const int64_t N = offsets.numel() - 1;
  const cuda::PackedIndex ik = index_kind(indices.scalar_type());
  TORCH_CHECK(input.is_cuda(), kOp, ": all tensors must be on the same CUDA device; input is on ", input.device());
  check_same_device(input, values, "values");
  check_same_device(input, indices, "indices");
  check_same_device(input, offsets, "offsets");
  at::Tensor bias;
  if (bias_opt.has_value() && bias_opt->defined()) {
    bias = *bias_opt;
    check_same_device(input, bias, "bias");
    TORCH_CHECK(bias.scalar_type() == ct, kOp, ": bias must be ", ct, ", got ", bias.scalar_type());
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == N, kOp, ": bias must have shape (", N, "), got ", bias.sizes());
    bias = bias.contiguous();
  }
  at::Tensor wscale;
  if (is_int8) {
    TORCH_CHECK(scale_opt.has_value() && scale_opt->defined(), kOp, ": int8 values need a weight_scale");
    wscale = *scale_opt;
    check_same_device(input, wscale, "weight_scale");
    TORCH_CHECK(wscale.scalar_type() == at::kFloat && wscale.dim() == 1 && wscale.size(0) == N, kOp,
                ": weight_scale must be float32 of shape (", N, "), got ", wscale.scalar_type(), " ", wscale.sizes());
    wscale = wscale.contiguous();
  } else {
    TORCH_CHECK(!(scale_opt.has_value() && scale_opt->defined()), kOp, ": weight_scale is only for int8 values");
  }

  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(input.device().index()).stream();
  const at::Tensor vals = values.contiguous();
  const at::Tensor idx = indices.contiguous();
  const at::Tensor off = offsets.to(at::kLong).contiguous();
  if (!stream_capturing(stream)) validate(idx, ik, off, N, K, stream);

  const int64_t M = input.numel() / K;
  // Memory layout follows the input, as on the CPU (and in the fake kernel,
  // python/mamext/sparse.py): a column-major 2-D input (the transpose of a
  // contiguous (K, M) tensor) is read as is and gives a column-major output;
  // everything else gives a contiguous output.
  const bool cols = input.dim() == 2 && M > 1 && input.stride(0) == 1 && input.stride(1) == M;
  const at::Tensor x = cols ? input.t().to(ct).contiguous() : input.reshape({M, K}).to(ct).contiguous();
  at::Tensor out = cols ? at::empty({N, M}, x.options()) : at::empty({M, N}, x.options());
  if (M > 0 && N > 0) {
    const int64_t nnz = vals.numel();
    if (is_int8) {
      at::Tensor xq = at::empty({M, K}, x.options().dtype(at::kChar));
      at::Tensor sx = at::empty({M}, x.options());
      C10_CUDA_CHECK(cuda::launch_packed_int8(
          x.const_data_ptr<float>(), vals.const_data_ptr<int8_t>(), idx.const_data_ptr(), ik,
          off.const_data_ptr<int64_t>(), nnz, wscale.const_data_ptr<float>(),
          bias.defined() ? bias.const_data_ptr<float>() : nullptr, out.mutable_data_ptr<float>(), M, N, K, mam, cols,
          xq.mutable_data_ptr<int8_t>(), sx.mutable_data_ptr<float>(), stream));
    } else {
      at::Tensor bad = at::empty({M}, x.options().dtype(at::kLong));
      at::Tensor flag = at::empty({1}, x.options().dtype(at::kInt));
      C10_CUDA_CHECK(cuda::launch_packed_float(
          ct == at::kDouble ? cuda::DType::F64 : cuda::DType::F32, x.const_data_ptr(), vals.const_data_ptr(),
          idx.const_data_ptr(), ik, off.const_data_ptr<int64_t>(), nnz,
          bias.defined() ? bias.const_data_ptr() : nullptr, out.mutable_data_ptr(), M, N, K, mam, cols,
          bad.mutable_data_ptr<int64_t>(), flag.mutable_data_ptr<int32_t>(), stream));
    }
  }
  if (cols) return out.t().to(it);  // (M, N) with strides (1, M)
  auto sizes = input.sizes().vec();
  sizes.back() = N;
  return out.to(it).view(sizes);
}

}  // namespace

TORCH_LIBRARY_IMPL(mamext, CUDA, m) { m.impl("packed_linear", &packed_linear_cuda); }

}  // namespace mamext
