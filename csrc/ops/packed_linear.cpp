// Operator schema of packed (pruned, CSR per output neuron) MAM and Linear
// layers. Kernels: ops/cpu/packed_linear_kernel.cpp (CPU, arithmetic in
// ops/cpu/simd/packed_linear_simd.cpp), ops/cuda/packed_linear_glue.cpp (CUDA),
// ops/autograd/packed_linear_kernel.cpp (inference only); fake kernel and
// wrapper: python/mamext/ops/packed_linear.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(mamext, m) {
  // input (*, in_features) floating; values (nnz) float32/float64/int8;
  // indices (nnz) uint8/int16/int32, strictly increasing within each row;
  // offsets (N + 1) int32/int64; bias (N) and weight_scale (N, int8 only) in
  // the compute dtype (values' dtype, float32 for int8). mam=false: the
  // ordinary sum (packed nn.Linear). Output (*, N) in input's dtype.
  m.def(
      "packed_linear(Tensor input, Tensor values, Tensor indices, Tensor offsets, Tensor? bias, "
      "Tensor? weight_scale, int in_features, bool mam) -> Tensor");
}
