// C++ overloads of the scalar MAM folds of common/mam_semantics.h, for kernels
// templated on the element type (float, double, int32): the running max/min
// (ties keep the earlier value, a NaN candidate never wins) and the
// index-tracking "strictly better" test. Host, device and per-ISA code alike
// (internal linkage, like the header they forward to).
//
// Vector code (SIMD max/min, warp shuffles) cannot call these per lane; it
// implements the same rules and says so where it does.
#pragma once

#include "common/mam_semantics.h"

MAMEXT_HD float mamext_fold_max(float best, float p) { return mamext_max_f32(best, p); }
MAMEXT_HD float mamext_fold_min(float best, float p) { return mamext_min_f32(best, p); }
MAMEXT_HD double mamext_fold_max(double best, double p) { return mamext_max_f64(best, p); }
MAMEXT_HD double mamext_fold_min(double best, double p) { return mamext_min_f64(best, p); }
MAMEXT_HD int32_t mamext_fold_max(int32_t best, int32_t p) { return mamext_max_i32(best, p); }
MAMEXT_HD int32_t mamext_fold_min(int32_t best, int32_t p) { return mamext_min_i32(best, p); }

MAMEXT_HD bool mamext_fold_wins_max(float best, float p) { return mamext_wins_max_f32(best, p) != 0; }
MAMEXT_HD bool mamext_fold_wins_min(float best, float p) { return mamext_wins_min_f32(best, p) != 0; }
MAMEXT_HD bool mamext_fold_wins_max(double best, double p) { return mamext_wins_max_f64(best, p) != 0; }
MAMEXT_HD bool mamext_fold_wins_min(double best, double p) { return mamext_wins_min_f64(best, p) != 0; }
