// Operator schemas of the MAM 2-d convolution (zero padding, groups). Kernels:
// ops/cpu/mam_conv2d_kernel.cpp (CPU only: on CUDA, mamext.mam_conv2d runs the
// convolution as patch rows of mam_linear), ops/autograd/mam_conv2d_kernel.cpp
// (autograd, forward and reverse mode), ops/autocast/mam_conv2d_kernel.cpp;
// fake kernels and the raw wrapper: python/mamext/ops/mam_conv2d.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(mamext, m) {
  // Training forward: output (N, C_out, Ho, Wo) plus int32 argmax/argmin, the
  // winning positions in weight[o].flatten() (lowest position on ties).
  m.def(
      "mam_conv2d_forward(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups) -> (Tensor, Tensor, Tensor)");
  // Inference forward: no index tracking.
  m.def(
      "mam_conv2d_inference(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups) -> Tensor");
  // Backward: (grad_input, grad_weight); an entry whose output_mask is false is
  // returned as an empty tensor. grad_bias is grad_output summed (in the
  // autograd kernel).
  m.def(
      "mam_conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor argmax, Tensor argmin, "
      "int[2] stride, int[2] padding, int[2] dilation, int groups, bool[2] output_mask) -> (Tensor, Tensor)");
}
