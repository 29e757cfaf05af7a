// Index tables of one convolution geometry that the CPU glue
// (mam_conv2d_kernel.cpp) hands to the per-ISA conv kernels, and that the
// standalone kernel check (tests/native) builds the same way. Compiled once,
// with baseline flags and no torch headers.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/cpu/simd/mam_conv2d_simd.h"

namespace mamext::cpu {

// Offset, in the phase planes of `layout`, of each patch position
// k = (c, kh, kw) (F.unfold order) relative to the output's base position.
std::vector<int64_t> plane_offsets(const ConvGeometry& g, const PhaseLayout& layout);

// `offsets` as runs of consecutive values: (first offset, length) pairs.
std::vector<int64_t> offset_runs(const std::vector<int64_t>& offsets);

// taps[3k..3k+2] of patch position k = (c, kh, kw): kh * dH, kw * dW and its
// linear offset in the unpadded (Cg, H, W) input (see ConvBackwardInputFn).
std::vector<int64_t> patch_taps(const ConvGeometry& g);

}  // namespace mamext::cpu
