// Turns a kernel launch status into an exception. A GPU whose architecture
// the kernels were not compiled for gets a message naming the built
// architectures and how to rebuild, instead of CUDA's "no kernel image".
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#ifndef MAMEXT_CUDA_ARCH_LIST
#define MAMEXT_CUDA_ARCH_LIST "(unknown)"
#endif

namespace mamext::cuda {

inline void check_launch(cudaError_t err, const char* op) {
  if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction) {
    (void)cudaGetLastError();  // clear the launch error (not a sticky one)
    const cudaDeviceProp* p = at::cuda::getCurrentDeviceProperties();
    TORCH_CHECK(false, op, ": mamext's CUDA kernels were not built for this GPU (", p->name, ", compute capability ",
                p->major, ".", p->minor, "); they were built for TORCH_CUDA_ARCH_LIST=\"", MAMEXT_CUDA_ARCH_LIST,
                "\". Rebuild with MAMEXT_WITH_CUDA=1 TORCH_CUDA_ARCH_LIST=\"", p->major, ".", p->minor,
                "\" (compute capability 7.0 and older need a CUDA 12 toolkit: CUDA 13 dropped them)");
  }
  C10_CUDA_CHECK(err);
}

}  // namespace mamext::cuda
