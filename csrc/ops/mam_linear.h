// Shared argument checks and shape helpers for the dense MAM operators
// (schema in mam_linear.cpp, CPU glue in cpu/mam_linear_kernel.cpp, CUDA glue
// in cuda/mam_linear_glue.cpp).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include "common/operand_checks.h"

namespace mamext {

// Validates input (*, K), weight (N, K), bias (N) and returns {M, N, K} where
// M is the product of input's leading dimensions.
struct DenseShape {
  int64_t M, N, K;
  std::vector<int64_t> out_sizes;  // input.shape[:-1] + (N,)
};

inline DenseShape check_dense_args(const char* op, const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
  check_input_and_weight(op, input, weight);
  TORCH_CHECK(input.dim() >= 1, op, ": input must have at least 1 dimension, got a scalar");
  TORCH_CHECK(weight.dim() == 2, op, ": weight must be 2-D (out_features, in_features), got shape ",
              weight.sizes());
  const int64_t K = weight.size(1);
  const int64_t N = weight.size(0);
  TORCH_CHECK(K > 0, op, ": in_features must be positive, got weight of shape ", weight.sizes());
  TORCH_CHECK(input.size(-1) == K, op, ": input's last dimension (", input.size(-1),
              ") must equal weight's in_features (", K, "); input shape ", input.sizes(), ", weight shape ",
              weight.sizes());
  TORCH_CHECK(K <= std::numeric_limits<int32_t>::max(), op, ": in_features ", K, " exceeds int32 indices");
  check_bias(op, input, bias, N);
  DenseShape s;
  s.N = N;
  s.K = K;
  s.M = input.numel() / K;
  s.out_sizes = input.sizes().vec();
  s.out_sizes.back() = N;
  return s;
}

// Validates the backward operands and returns the forward shape.
inline DenseShape check_backward_args(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                const at::Tensor& weight, const at::Tensor& argmax, const at::Tensor& argmin) {
  auto s = check_dense_args(op, input, weight, std::nullopt);
  check_backward_operands(op, grad_output, input, argmax, argmin, s.out_sizes);
  return s;
}

}  // namespace mamext
