// CUDA implementation of the packed (sparse) operator mamext::packed_linear:
// argument checks (those of the CPU glue, csrc/ops/cpu/packed_linear_kernel.cpp, with
// the same messages, plus the device checks), structure validation, dtype
// handling, device guard, current stream. Kernels: packed_linear_kernel.cu.
//
// Structure validation runs on the device (packed_linear_kernel.h) and costs one
// 8-byte device-to-host copy (a stream synchronisation); the message of an
// invalid structure is rebuilt on the host from the failing row, word for word
// the CPU's. It runs once per weight: a valid structure is remembered with the
// weight's finiteness flag (on the device) and its longest row, keyed on the
// values / indices / offsets tensors as passed and their version counters
// (content_cache.h), so an in-place edit of a buffer checks again. It is
// skipped while a CUDA graph is being captured (no synchronisation allowed
// there; the weights are then scanned for finiteness by the captured work
// itself); the kernels stay in bounds on any structure anyway.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "ops/cuda/content_cache.h"
#include "ops/cuda/launch_error.h"
#include "ops/cuda/packed_linear_kernel.h"
#include "ops/packed_linear.h"

namespace mamext {
namespace {

constexpr const char* kOp = kPackedOp;

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
// (error key from the device check, see packed_linear_kernel.h).
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
  auto* key_out = reinterpret_cast<unsigned long long*>(result.mutable_data_ptr<int64_t>());
  cuda::check_launch(
      cuda::launch_packed_validate(idx.const_data_ptr(), ik, off.const_data_ptr<int64_t>(), N, nnz, K, key_out, stream),
      kOp);
  const uint64_t key = static_cast<uint64_t>(result.item<int64_t>());
  if (key != UINT64_MAX) structure_error(key, idx, off, N, nnz, K);
}

// What a validated weight needs no more per call.
struct CheckedWeight {
  at::Tensor flag;         // float weights: one int32, 1 when a value is non-finite
  int64_t longest = 0;     // the longest row (entries)
  c10::StreamId stream{};  // the stream `flag` was allocated on
};

cuda::ContentCache<CheckedWeight>& checked_weights() {
  static auto* cache = new cuda::ContentCache<CheckedWeight>(64);  // never destroyed: may be used at exit
  return *cache;
}

// Validates the structure (raising the CPU's error) and computes what
// CheckedWeight keeps; synchronises the stream once.
CheckedWeight check_weight(const PackedArgs& a, cuda::PackedIndex ik, const c10::cuda::CUDAStream& cstream) {
  const cudaStream_t stream = cstream.stream();
  CheckedWeight c;
  c.stream = cstream.id();
  if (!a.is_int8) {
    c.flag = at::empty({1}, a.values.options().dtype(at::kInt));
    const cuda::DType dt = a.compute_type == at::kDouble ? cuda::DType::F64 : cuda::DType::F32;
    cuda::check_launch(cuda::launch_packed_weight_flag(dt, a.values.const_data_ptr(), a.values.numel(),
                                                       c.flag.mutable_data_ptr<int32_t>(), stream),
                       kOp);
  }
  validate(a.indices, ik, a.offsets, a.N, a.K, stream);  // synchronises: the flag is ready for any stream
  if (a.N > 0) c.longest = (a.offsets.slice(0, 1, a.N + 1) - a.offsets.slice(0, 0, a.N)).max().item<int64_t>();
  return c;
}

at::Tensor packed_linear_cuda(const at::Tensor& input, const at::Tensor& values, const at::Tensor& indices,
                              const at::Tensor& offsets, const std::optional<at::Tensor>& bias_opt,
                              const std::optional<at::Tensor>& scale_opt, int64_t in_features, bool mam) {
  TORCH_CHECK(input.is_cuda(), kOp, ": all tensors must be on the same CUDA device; input is on ", input.device());
  const PackedArgs a = check_packed_args(input, values, indices, offsets, bias_opt, scale_opt, in_features,
                                         [&](const at::Tensor& t, const char* name) { check_same_device(input, t, name); });
  const auto it = a.input_type;
  const auto ct = a.compute_type;
  const bool is_int8 = a.is_int8;
  const int64_t M = a.M, K = a.K, N = a.N;
  const cuda::PackedIndex ik = index_kind(a.indices.scalar_type());
  const at::Tensor &vals = a.values, &idx = a.indices, &off = a.offsets, &bias = a.bias, &wscale = a.weight_scale;

  const c10::cuda::CUDAGuard guard(input.device());
  const c10::cuda::CUDAStream cstream = at::cuda::getCurrentCUDAStream(input.device().index());
  const cudaStream_t stream = cstream.stream();
  std::optional<CheckedWeight> checked;
  if (!stream_capturing(stream)) {
    checked = checked_weights().find({values, indices, offsets}, K);
    if (!checked) {
      checked = check_weight(a, ik, cstream);
      checked_weights().insert({values, indices, offsets}, K, *checked);
    } else if (checked->flag.defined() && checked->stream != cstream.id()) {
      checked->flag.record_stream(cstream);  // read on this stream: not reused before that read
    }
    if (is_int8 && !mam)  // as on the CPU: int32 sums of int8 products must stay exact
      TORCH_CHECK(checked->longest <= kInt8SumMaxTerms, kOp, ": an int8 sum (mam=False) of more than ",
                  kInt8SumMaxTerms, " kept connections per neuron can overflow int32; the longest row has ",
                  checked->longest);
  }

  // Memory layout follows the input (ops/packed_linear.h): a column-major input is
  // read as is and gives a column-major output.
  const bool cols = a.column_major;
  const at::Tensor x = cols ? input.t().to(ct).contiguous() : input.reshape({M, K}).to(ct).contiguous();
  at::Tensor out = cols ? at::empty({N, M}, x.options()) : at::empty({M, N}, x.options());
  if (M > 0 && N > 0) {
    const int64_t nnz = vals.numel();
    if (is_int8) {
      at::Tensor xq = at::empty({M, K}, x.options().dtype(at::kChar));
      at::Tensor sx = at::empty({M}, x.options());
      cuda::check_launch(cuda::launch_packed_int8(
          x.const_data_ptr<float>(), vals.const_data_ptr<int8_t>(), idx.const_data_ptr(), ik,
          off.const_data_ptr<int64_t>(), nnz, wscale.const_data_ptr<float>(),
          bias.defined() ? bias.const_data_ptr<float>() : nullptr, out.mutable_data_ptr<float>(), M, N, K, mam, cols,
          xq.mutable_data_ptr<int8_t>(), sx.mutable_data_ptr<float>(), stream), kOp);
    } else {
      at::Tensor bad = at::empty({M}, x.options().dtype(at::kLong));
      cuda::PackedLaunchConfig cfg;
      cfg.weight_flag_ready = checked.has_value();
      at::Tensor flag = cfg.weight_flag_ready ? checked->flag : at::empty({1}, x.options().dtype(at::kInt));
      cuda::check_launch(cuda::launch_packed_float(
          ct == at::kDouble ? cuda::DType::F64 : cuda::DType::F32, x.const_data_ptr(), vals.const_data_ptr(),
          idx.const_data_ptr(), ik, off.const_data_ptr<int64_t>(), nnz,
          bias.defined() ? bias.const_data_ptr() : nullptr, out.mutable_data_ptr(), M, N, K, mam, cols,
          bad.mutable_data_ptr<int64_t>(), flag.mutable_data_ptr<int32_t>(), stream, cfg), kOp);
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
