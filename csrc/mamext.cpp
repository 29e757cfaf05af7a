// The torch library `mamext` (torch.ops.mamext.*). Each operator adds its
// schemas with TORCH_LIBRARY_FRAGMENT in csrc/ops/<op>.cpp and its kernels in
//   csrc/ops/cpu/<op>_kernel.cpp        CPU
//   csrc/ops/cuda/<op>_glue.cpp         CUDA (kernels in <op>_kernel.cu)
//   csrc/ops/autograd/<op>_kernel.cpp   Autograd
//   csrc/ops/autocast/<op>_kernel.cpp   AutocastCPU / AutocastCUDA
// and its fake kernel and Python wrapper in python/mamext/ops/<op>.py.
#include <torch/library.h>

TORCH_LIBRARY(mamext, m) {}
