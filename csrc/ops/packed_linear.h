// Argument checks of the packed operator `mamext::packed_linear`, shared by the
// CPU glue (cpu/packed_linear_kernel.cpp) and the CUDA glue (cuda/packed_linear_glue.cpp):
// dtypes, shapes, consistency, and the memory-layout rule. Each glue passes its
// own device check; the structure itself (offsets, indices) is validated by
// each glue on its device.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "common/arg_checks.h"
#include "common/mam_semantics.h"

namespace mamext {

constexpr const char* kPackedOp = "packed_linear";
// int8 products are at most 127 * 127 in magnitude: an int32 sum of this many
// stays exact (a max + min never overflows).
constexpr int64_t kInt8SumMaxTerms = MAMEXT_INT8_SUM_MAX_TERMS;

struct PackedArgs {
  at::ScalarType input_type;    // and output dtype
  at::ScalarType compute_type;  // values' dtype; float32 for int8
  bool is_int8;
  int64_t M, K, N;              // samples, in_features, out_features
  // Layout rule (mirrored by the fake kernel in python/mamext/ops/packed_linear.py): a
  // column-major 2-D input (the transpose of a contiguous (K, M) tensor, M > 1)
  // gives a column-major output; everything else a contiguous output.
  bool column_major;
  at::Tensor values, indices, offsets;  // contiguous; offsets as int64
  at::Tensor bias, weight_scale;        // contiguous, or undefined
};

// `on_device(t, name)` raises unless t is on the glue's device (same device as
// the input for CUDA).
template <typename DeviceCheck>
PackedArgs check_packed_args(const at::Tensor& input, const at::Tensor& values, const at::Tensor& indices,
                             const at::Tensor& offsets, const std::optional<at::Tensor>& bias_opt,
                             const std::optional<at::Tensor>& scale_opt, int64_t in_features,
                             const DeviceCheck& on_device) {
  constexpr const char* kOp = kPackedOp;
  PackedArgs a;
  a.input_type = input.scalar_type();
  const auto it = a.input_type;
  TORCH_CHECK(is_floating_input(it), kOp, ": input must be ", kFloatingInputs, ", got ", it);
  TORCH_CHECK(input.dim() >= 1, kOp, ": input must have at least 1 dimension, got a scalar");
  TORCH_CHECK(in_features > 0, kOp, ": in_features must be positive, got ", in_features);
  a.K = in_features;
  TORCH_CHECK(input.size(-1) == a.K, kOp, ": input's last dimension (", input.size(-1),
              ") must equal in_features (", a.K, "); input shape ", input.sizes());
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
  const auto xt = indices.scalar_type();
  TORCH_CHECK(xt == at::kByte || xt == at::kShort || xt == at::kInt, kOp,
              ": indices must be uint8, int16 or int32, got ", xt);
  a.is_int8 = vt == at::kChar;
  a.compute_type = a.is_int8 ? at::kFloat : vt;
  a.N = offsets.numel() - 1;
  on_device(values, "values");
  on_device(indices, "indices");
  on_device(offsets, "offsets");
  if (bias_opt.has_value() && bias_opt->defined()) {
    const at::Tensor& bias = *bias_opt;
    on_device(bias, "bias");
    TORCH_CHECK(bias.scalar_type() == a.compute_type, kOp, ": bias must be ", a.compute_type, ", got ",
                bias.scalar_type());
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == a.N, kOp, ": bias must have shape (", a.N, "), got ",
                bias.sizes());
    a.bias = bias.contiguous();
  }
  if (a.is_int8) {
    TORCH_CHECK(scale_opt.has_value() && scale_opt->defined(), kOp, ": int8 values need a weight_scale");
    const at::Tensor& s = *scale_opt;
    on_device(s, "weight_scale");
    TORCH_CHECK(s.scalar_type() == at::kFloat && s.dim() == 1 && s.size(0) == a.N, kOp,
                ": weight_scale must be float32 of shape (", a.N, "), got ", s.scalar_type(), " ", s.sizes());
    a.weight_scale = s.contiguous();
  } else {
    TORCH_CHECK(!(scale_opt.has_value() && scale_opt->defined()), kOp, ": weight_scale is only for int8 values");
  }
  a.values = values.contiguous();
  a.indices = indices.contiguous();
  a.offsets = offsets.to(at::kLong).contiguous();
  a.M = input.numel() / a.K;
  a.column_major = input.dim() == 2 && a.M > 1 && input.stride(0) == 1 && input.stride(1) == a.M;
  return a;
}

}  // namespace mamext
