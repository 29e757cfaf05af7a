// Tensor checks shared by the MAM operators' glue (ops/mam_linear.h,
// ops/mam_conv2d.h): operand dtypes and devices, the bias, and the operands
// of a backward call. Each error names the operator and the argument.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "common/arg_checks.h"

namespace mamext {

// input has a floating dtype MAM accepts; weight matches its dtype and device.
inline void check_input_and_weight(const char* op, const at::Tensor& input, const at::Tensor& weight) {
  TORCH_CHECK(is_floating_input(input.scalar_type()), op, ": input must be ", kFloatingInputs, ", got ",
              input.scalar_type());
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), op, ": weight dtype ", weight.scalar_type(),
              " does not match input dtype ", input.scalar_type());
  TORCH_CHECK(weight.device() == input.device(), op, ": weight is on ", weight.device(), " but input is on ",
              input.device());
}

// A bias, when given, has input's dtype and device and shape (neurons).
inline void check_bias(const char* op, const at::Tensor& input, const std::optional<at::Tensor>& bias,
                       int64_t neurons) {
  if (!bias.has_value() || !bias->defined()) return;
  TORCH_CHECK(bias->scalar_type() == input.scalar_type(), op, ": bias dtype ", bias->scalar_type(),
              " does not match input dtype ", input.scalar_type());
  TORCH_CHECK(bias->device() == input.device(), op, ": bias is on ", bias->device(), " but input is on ",
              input.device());
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == neurons, op, ": bias must have shape (", neurons, "), got ",
              bias->sizes());
}

// grad_output matches input's dtype and device and has the forward's output
// shape; argmax/argmin are int32 of that shape on the same device.
inline void check_backward_operands(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                    const at::Tensor& argmax, const at::Tensor& argmin,
                                    at::IntArrayRef out_sizes) {
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), op, ": grad_output dtype ",
              grad_output.scalar_type(), " does not match input dtype ", input.scalar_type());
  TORCH_CHECK(grad_output.device() == input.device() && argmax.device() == input.device() &&
                  argmin.device() == input.device(),
              op, ": all tensors must be on ", input.device());
  TORCH_CHECK(grad_output.sizes() == out_sizes, op, ": grad_output shape ", grad_output.sizes(),
              " does not match the output shape ", out_sizes);
  TORCH_CHECK(argmax.scalar_type() == at::kInt && argmin.scalar_type() == at::kInt, op,
              ": argmax/argmin must be int32, got ", argmax.scalar_type(), " and ", argmin.scalar_type());
  TORCH_CHECK(argmax.sizes() == grad_output.sizes() && argmin.sizes() == grad_output.sizes(), op,
              ": argmax/argmin shapes ", argmax.sizes(), ", ", argmin.sizes(), " must equal grad_output's ",
              grad_output.sizes());
}

}  // namespace mamext
