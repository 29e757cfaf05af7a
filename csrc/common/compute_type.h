// The dtype a MAM operator computes in: float32 for float16, bfloat16 and
// float32 inputs, float64 for float64 (docs/semantics.md). Shared by the CPU
// and CUDA glue and the autograd kernels (bias gradients, forward-mode AD).
#pragma once

#include <c10/core/ScalarType.h>

namespace mamext {

inline c10::ScalarType compute_type(c10::ScalarType t) { return t == c10::kDouble ? c10::kDouble : c10::kFloat; }

}  // namespace mamext
