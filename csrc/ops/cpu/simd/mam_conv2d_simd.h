// Interface between the per-ISA MAM convolution kernels (mam_conv2d_simd.cpp,
// compiled once per instruction set into mamext::cpu::<isa>) and the operator
// glue (ops/cpu/mam_conv2d_kernel.cpp), which validates tensors, allocates
// outputs, splits work across threads and runs the dense kernels of
// mam_linear_simd.h on im2col tiles when a group has many output channels.
// No torch headers (see mam_linear_simd.h).
#pragma once

#include <cstdint>

#include "common/cpu_dispatch.h"

namespace mamext::cpu {

// Shape of one convolution; every array below is contiguous.
//   input  (N, C_in, H, W)      weight (C_out, Cg, kH, kW), Cg = C_in / groups
//   output (N, C_out, Ho, Wo)   patch position k = (c * kH + kh) * kW + kw
struct ConvGeometry {
  int64_t C_in, H, W;
  int64_t Cg, kH, kW;  // channels per group, kernel
  int64_t sH, sW, pH, pW, dH, dW;  // stride, (symmetric zero) padding, dilation
  int64_t Ho, Wo;
  int64_t patch() const { return Cg * kH * kW; }
};

// The direct path's input layout: one image's group of channels, zero padded
// and split by stride phase, so that every kernel tap reads a contiguous run.
// Channel c, phase (a, b) (a < sH, b < sW) is a plane of Hq x Wq values,
// plane[i][j] = padded[c][a + i * sH][b + j * sW] (zero outside the padded
// image). An output at (oh, ow) reads tap (kh, kw) at plane row
// oh + (kh * dH) / sH, column ow + (kw * dW) / sW of phase
// ((kh * dH) % sH, (kw * dW) % sW); over the "wide" output index
// q = oh * Wq + ow that is base + q + offset[k], affine in q. Columns
// ow >= Wo of the wide grid are computed and discarded.
struct PhaseLayout {
  int64_t Hq, Wq;
  int64_t plane() const { return Hq * Wq; }
  int64_t phases;  // sH * sW
  int64_t size;    // values including the zero slack past the last plane
};

// Most values a direct-forward block computes at once (its reads may run this
// far past the wide grid).
constexpr int64_t kDirectBlockMax = 128;

// Fill the phase planes of channels [0, Cg) of one image's group `x`
// ((Cg, H, W) contiguous) into `dst` (layout.size values, slack zeroed).
template <typename T>
using PhaseSplitFn = void (*)(const T* x, const ConvGeometry& g, const PhaseLayout& layout, T* dst);
// Direct forward over the wide outputs [q0, q1) of one image's group, for its
// neurons [0, n) (weight rows w (n, patch), bias (n) or null). `planes` holds
// the group's phase planes, `offsets` the patch positions' plane offsets (see
// PhaseLayout); out/amax/amin are the group's (n, Ho, Wo) output slices
// (amax/amin null: no index tracking). Finite data only.
template <typename T>
using DirectForwardFn = void (*)(const T* planes, const int64_t* offsets, const T* w, const T* bias, T* out,
                                 int32_t* amax, int32_t* amin, int64_t n, int64_t q0, int64_t q1,
                                 const ConvGeometry& g, const PhaseLayout& layout);
// im2col rows of the wide outputs [q0, q1) from the phase planes:
// tile[(q - q0) * patch + k] = planes[q + offset of k]. The patch positions
// come as runs of consecutive plane offsets (runs[2r] the offset, runs[2r + 1]
// the length; kernel columns at unit dilation and stride form one run), each
// copied in whole vectors: a copy may write up to kIm2colSlack values past a
// row (the next run or row overwrites them; the tile needs that much room
// after its last row).
template <typename T>
using Im2colFn = void (*)(const T* planes, const int64_t* runs, int64_t nruns, int64_t patch, int64_t q0,
                          int64_t q1, T* tile);
constexpr int64_t kIm2colSlack = 64;

// Backward of one image's group (x, gx: (Cg, H, W); g, amax, amin:
// (n, Ho, Wo); w, gw: (n, patch)). backward_input adds g * w[o, k] to gx at
// the input position of patch position k (padded positions get nothing);
// backward_weight adds g * x[patch k] (x = 0 at padded positions) to
// gw[o, k], gw not cleared first. `taps` holds three values per patch
// position k = (c, kh, kw): kh * dH, kw * dW and (c * H + kh * dH) * W + kw * dW.
// Both return false (and skip the entry) for an index outside [0, patch).
template <typename T>
using ConvBackwardInputFn = bool (*)(const T* g, const T* w, const int32_t* amax, const int32_t* amin, T* gx,
                                     int64_t n, const ConvGeometry& geo, const int64_t* taps);
template <typename T>
using ConvBackwardWeightFn = bool (*)(const T* g, const T* x, const int32_t* amax, const int32_t* amin, T* gw,
                                      int64_t n, const ConvGeometry& geo, const int64_t* taps);

template <typename T>
struct ConvKernels {
  PhaseSplitFn<T> phase_split;
  DirectForwardFn<T> direct_forward;
  Im2colFn<T> im2col;
  ConvBackwardInputFn<T> backward_input;
  ConvBackwardWeightFn<T> backward_weight;
};

struct ConvKernelTable {
  Capability capability;
  ConvKernels<float> f32;
  ConvKernels<double> f64;
};

// The phase layout of a convolution. The slack covers the reads of the wide
// grid's discarded columns and of a last, partial block.
inline PhaseLayout phase_layout(const ConvGeometry& g) {
  const int64_t Hp = g.H + 2 * g.pH, Wp = g.W + 2 * g.pW;
  PhaseLayout l;
  l.Hq = (Hp + g.sH - 1) / g.sH;
  l.Wq = (Wp + g.sW - 1) / g.sW;
  l.phases = g.sH * g.sW;
  l.size = g.Cg * l.phases * l.plane() + l.Wq + kDirectBlockMax;
  return l;
}

// One table per ISA, defined in the per-ISA objects.
namespace default_isa { const ConvKernelTable& conv_kernel_table(); }
namespace avx2 { const ConvKernelTable& conv_kernel_table(); }
namespace avx512 { const ConvKernelTable& conv_kernel_table(); }
namespace neon { const ConvKernelTable& conv_kernel_table(); }

// The table for cpu::active_capability() (defined in ops/cpu/mam_conv2d_kernel.cpp).
const ConvKernelTable& conv_kernels();

}  // namespace mamext::cpu
