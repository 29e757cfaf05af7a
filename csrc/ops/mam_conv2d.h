// Argument checks and shape of the MAM convolution operators (schema in
// mam_conv2d.cpp, CPU glue in cpu/mam_conv2d_kernel.cpp).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <limits>
#include <vector>

#include "common/operand_checks.h"
#include "ops/cpu/simd/mam_conv2d_simd.h"

namespace mamext {

struct ConvShape {
  int64_t N, C_out, groups;
  cpu::ConvGeometry geo;
  std::vector<int64_t> out_sizes() const { return {N, C_out, geo.Ho, geo.Wo}; }
};

inline void check_conv_pairs(const char* op, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, op,
              ": stride, padding and dilation must have two values each, got ", stride, ", ", padding, ", ",
              dilation);
  TORCH_CHECK(stride[0] >= 1 && stride[1] >= 1, op, ": stride must be at least 1, got ", stride);
  TORCH_CHECK(dilation[0] >= 1 && dilation[1] >= 1, op, ": dilation must be at least 1, got ", dilation);
  TORCH_CHECK(padding[0] >= 0 && padding[1] >= 0, op, ": padding must be at least 0, got ", padding);
  TORCH_CHECK(groups >= 1, op, ": groups must be positive, got ", groups);
}

inline void check_conv_tensors(const char* op, const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias) {
  check_input_and_weight(op, input, weight);
  TORCH_CHECK(input.dim() == 4, op, ": input must have shape (N, C_in, H, W), got ", input.sizes());
  TORCH_CHECK(weight.dim() == 4, op, ": weight must have shape (C_out, C_in / groups, kH, kW), got ",
              weight.sizes());
  check_bias(op, input, bias, weight.size(0));
}

// Validates the forward operands and returns the shape.
inline ConvShape check_conv_args(const char* op, const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_conv_pairs(op, stride, padding, dilation, groups);
  check_conv_tensors(op, input, weight, bias);
  ConvShape s;
  s.N = input.size(0);
  s.C_out = weight.size(0);
  s.groups = groups;
  cpu::ConvGeometry& g = s.geo;
  g.C_in = input.size(1), g.H = input.size(2), g.W = input.size(3);
  g.Cg = weight.size(1), g.kH = weight.size(2), g.kW = weight.size(3);
  g.sH = stride[0], g.sW = stride[1], g.pH = padding[0], g.pW = padding[1], g.dH = dilation[0], g.dW = dilation[1];
  TORCH_CHECK(s.C_out % groups == 0, op, ": weight's C_out (", s.C_out, ") must be divisible by groups (", groups,
              ")");
  TORCH_CHECK(g.C_in == g.Cg * groups, op, ": input has ", g.C_in, " channels, but weight of shape ",
              weight.sizes(), " with groups=", groups, " expects ", g.Cg * groups);
  TORCH_CHECK(g.patch() > 0, op, ": the patch (C_in / groups * kH * kW) must not be empty, weight shape ",
              weight.sizes());
  TORCH_CHECK(g.patch() <= std::numeric_limits<int32_t>::max(), op, ": patch size ", g.patch(),
              " exceeds int32 indices");
  g.Ho = (g.H + 2 * g.pH - g.dH * (g.kH - 1) - 1) / g.sH + 1;
  g.Wo = (g.W + 2 * g.pW - g.dW * (g.kW - 1) - 1) / g.sW + 1;
  TORCH_CHECK(g.H + 2 * g.pH >= g.dH * (g.kH - 1) + 1 && g.W + 2 * g.pW >= g.dW * (g.kW - 1) + 1, op,
              ": the (dilated) kernel (", g.kH, ", ", g.kW, ") does not fit in the padded input of spatial size (",
              g.H, ", ", g.W, ") with padding ", padding);
  return s;
}

// Validates the backward operands and returns the forward shape.
inline ConvShape check_conv_backward_args(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                          const at::Tensor& weight, const at::Tensor& argmax,
                                          const at::Tensor& argmin, at::IntArrayRef stride, at::IntArrayRef padding,
                                          at::IntArrayRef dilation, int64_t groups) {
  const ConvShape s = check_conv_args(op, input, weight, std::nullopt, stride, padding, dilation, groups);
  check_backward_operands(op, grad_output, input, argmax, argmin, s.out_sizes());
  return s;
}

}  // namespace mamext
