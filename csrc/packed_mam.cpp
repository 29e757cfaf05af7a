// Operator schema for packed (pruned, CSR per output neuron) MAM and Linear
// layers. CPU kernels: cpu/packed_mam_ops.cpp + cpu/packed_mam_kernel.cpp.
// Fake kernel and the inference-only autograd guard: python/mamext/sparse.py.
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
