// Argument checks shared by every operator's glue (ops/<op>.h).
#pragma once

#include <c10/core/ScalarType.h>

namespace mamext {

// The input dtypes every MAM operator accepts; kFloatingInputs names them in
// error messages.
inline bool is_floating_input(c10::ScalarType t) {
  return t == c10::kFloat || t == c10::kDouble || t == c10::kHalf || t == c10::kBFloat16;
}
constexpr const char* kFloatingInputs = "float32, float64, float16 or bfloat16";

}  // namespace mamext
