// Operator schemas of the dense MAM layer. Kernels: ops/cpu/mam_linear_kernel.cpp
// (CPU), ops/cuda/ (CUDA), ops/autograd/mam_linear_kernel.cpp (autograd,
// forward and reverse mode), ops/autocast/mam_linear_kernel.cpp; fake kernels
// and the public wrapper: python/mamext/ops/mam_linear.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(mamext, m) {
  // Training forward: output plus int32 argmax/argmin (lowest index on ties).
  m.def("mam_linear_forward(Tensor input, Tensor weight, Tensor? bias) -> (Tensor, Tensor, Tensor)");
  // Inference forward: no index tracking.
  m.def("mam_linear_inference(Tensor input, Tensor weight, Tensor? bias) -> Tensor");
  // Backward: (grad_input, grad_weight); an entry whose output_mask is false is
  // returned as an empty tensor. grad_bias is grad_output summed (in the
  // autograd kernel).
  m.def(
      "mam_linear_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor argmax, Tensor argmin, "
      "bool[2] output_mask) -> (Tensor, Tensor)");
}
