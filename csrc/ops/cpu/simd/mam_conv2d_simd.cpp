// MAM convolution kernels, compiled once per ISA (see mam_conv2d_simd.h; no
// torch headers here).
//
// Direct forward: vectorised over output pixels. The group's input is first
// split into zero-padded stride-phase planes, so each kernel tap reads a
// contiguous run of the "wide" output grid (PhaseLayout). A block of R vectors
// of outputs keeps its running max and min in registers over the whole patch;
// k ascends and V::max(p, running) replaces a lane only when the product is
// strictly greater (the rule of common/mam_semantics.h: ties, +0 against -0
// included, keep the lowest k), so a lane whose value changed at step k
// records k as its index. Used for groups with few output channels, where
// the dense kernels' neuron panels would be mostly empty lanes.
//
// im2col: rows of the wide grid gathered from the same planes, for the dense
// kernels of mam_linear_simd.cpp (groups with many output channels).
//
// Backward: each selected connection is one scattered multiply-add.
#include <cstddef>
#include <cstdint>

#include "common/isa_capability.h"
#include "common/vec.h"
#include "ops/cpu/simd/mam_conv2d_simd.h"

namespace mamext::cpu::MAMEXT_ISA {
namespace {

// Vectors of outputs per register block: two accumulators each, within the
// register file (32 vector registers with AVX-512, 16 otherwise).
#if defined(MAMEXT_ISA_AVX512) || defined(MAMEXT_ISA_NEON)
constexpr int kBlockVectors = 8;
#else
constexpr int kBlockVectors = 4;
#endif

inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t ceil_div(int64_t a, int64_t b) { return a <= 0 ? 0 : (a + b - 1) / b; }

// One phase plane row: dst[j] = src[b + j * sW - pW] where that column is
// inside [0, W), else 0 (src null: a padded row, all zeros).
template <typename T>
inline void phase_row(const T* src, int64_t W, int64_t b, int64_t sW, int64_t pW, int64_t Wq, T* dst) {
  if (!src) {
    for (int64_t j = 0; j < Wq; ++j) dst[j] = T(0);
    return;
  }
  const int64_t lo = imin(Wq, ceil_div(pW - b, sW));
  const int64_t hi = imax(lo, imin(Wq, ceil_div(W + pW - b, sW)));
  for (int64_t j = 0; j < lo; ++j) dst[j] = T(0);
  if (sW == 1) {
    const T* s = src + b - pW;
    for (int64_t j = lo; j < hi; ++j) dst[j] = s[j];
  } else {
    for (int64_t j = lo; j < hi; ++j) dst[j] = src[b + j * sW - pW];
  }
  for (int64_t j = hi; j < Wq; ++j) dst[j] = T(0);
}

template <typename T>
void phase_split(const T* x, const ConvGeometry& g, const PhaseLayout& layout, T* dst) {
  T* d = dst;
  for (int64_t c = 0; c < g.Cg; ++c) {
    const T* xc = x + c * g.H * g.W;
    for (int64_t a = 0; a < g.sH; ++a)
      for (int64_t b = 0; b < g.sW; ++b)
        for (int64_t i = 0; i < layout.Hq; ++i, d += layout.Wq) {
          const int64_t row = a + i * g.sH - g.pH;
          const T* src = row >= 0 && row < g.H ? xc + row * g.W : nullptr;
          phase_row<T>(src, g.W, b, g.sW, g.pW, layout.Wq, d);
        }
  }
  for (T* end = dst + layout.size; d < end; ++d) *d = T(0);
}

// Running max/min (and with TRACK their indices) of NB * L consecutive wide
// outputs starting at `base` over the whole patch of one neuron (weights w).
template <typename T, int NB, bool TRACK>
inline void direct_block(const T* base, const int64_t* off, const T* w, int64_t K, T* mx_out, T* mn_out,
                         int32_t* ia, int32_t* ib) {
  using V = Vec<T>;
  using R = typename V::R;
  constexpr int L = V::L;
  R mx[NB], mn[NB];
  const R w0 = V::bcast(w[0]);
  for (int r = 0; r < NB; ++r) mx[r] = mn[r] = V::mul(V::load(base + off[0] + r * L), w0);
  if constexpr (TRACK)
    for (int i = 0; i < NB * L; ++i) ia[i] = ib[i] = 0;
  for (int64_t k = 1; k < K; ++k) {
    const R wk = V::bcast(w[k]);
    const T* xk = base + off[k];
    for (int r = 0; r < NB; ++r) {
      const R p = V::mul(V::load(xk + r * L), wk);
      if constexpr (TRACK) {
        const R nmx = V::max(p, mx[r]);  // ties keep the earlier product
        const R nmn = V::min(p, mn[r]);
        V::store_index(ia + r * L, V::neq(nmx, mx[r]), static_cast<int32_t>(k));
        V::store_index(ib + r * L, V::neq(nmn, mn[r]), static_cast<int32_t>(k));
        mx[r] = nmx;
        mn[r] = nmn;
      } else {
        mx[r] = V::max(p, mx[r]);
        mn[r] = V::min(p, mn[r]);
      }
    }
  }
  for (int r = 0; r < NB; ++r) {
    V::store(mx_out + r * L, mx[r]);
    V::store(mn_out + r * L, mn[r]);
  }
}

// Writes the block's outputs at wide positions [q0, q0 + count) that are real
// pixels (column < Wo) to out/amax/amin ((Ho, Wo) planes).
template <typename T>
inline void store_block(const T* mx, const T* mn, const int32_t* ia, const int32_t* ib, T bias, bool has_bias,
                        int64_t q0, int64_t count, int64_t Wq, int64_t Wo, T* out, int32_t* amax, int32_t* amin) {
  int64_t oh = q0 / Wq, ow = q0 - oh * Wq;
  for (int64_t t = 0; t < count; ++t) {
    if (ow < Wo) {
      const int64_t at = oh * Wo + ow;
      T v = mx[t] + mn[t];
      if (has_bias) v += bias;
      out[at] = v;
      if (amax) {
        amax[at] = ia[t];
        amin[at] = ib[t];
      }
    }
    if (++ow == Wq) {
      ow = 0;
      ++oh;
    }
  }
}

// The outputs [q, q + count) of one neuron in register blocks: full ones,
// then (the end of the range) half blocks and single vectors, which waste
// fewer lanes on a short last block.
template <typename T, bool TRACK>
inline void direct_range(const T* planes, const int64_t* offsets, const T* wo, T bias, bool has_bias, int64_t q,
                         int64_t count, const ConvGeometry& g, const PhaseLayout& layout, T* oo, int32_t* ao,
                         int32_t* io) {
  constexpr int L = Vec<T>::L, NB = kBlockVectors, B = NB * L;
  alignas(64) T mx[B], mn[B];
  alignas(64) int32_t ia[B], ib[B];
  const int64_t K = g.patch();
  for (int64_t v = 0; v < count;) {
    const int64_t rest = count - v;
    int64_t width = L;
    if (rest > B - L) {
      direct_block<T, NB, TRACK>(planes + q + v, offsets, wo, K, mx, mn, ia, ib);
      width = B;
    } else if (NB >= 8 && rest > B / 2 - L) {
      direct_block<T, NB / 2, TRACK>(planes + q + v, offsets, wo, K, mx, mn, ia, ib);
      width = B / 2;
    } else {
      direct_block<T, 1, TRACK>(planes + q + v, offsets, wo, K, mx, mn, ia, ib);
    }
    store_block<T>(mx, mn, ia, ib, bias, has_bias, q + v, imin(width, rest), layout.Wq, g.Wo, oo, ao, io);
    v += width;
  }
}

template <typename T>
void direct_forward(const T* planes, const int64_t* offsets, const T* w, const T* bias, T* out, int32_t* amax,
                    int32_t* amin, int64_t n, int64_t q0, int64_t q1, const ConvGeometry& g,
                    const PhaseLayout& layout) {
  constexpr int B = kBlockVectors * Vec<T>::L;
  static_assert(B <= kDirectBlockMax, "a block must fit in the planes' slack");
  const int64_t K = g.patch(), plane = g.Ho * g.Wo;
  for (int64_t o = 0; o < n; ++o) {
    const T* wo = w + o * K;
    T* oo = out + o * plane;
    const T b = bias ? bias[o] : T(0);
    for (int64_t q = q0; q < q1; q += B) {
      if (amax)
        direct_range<T, true>(planes, offsets, wo, b, bias != nullptr, q, imin(B, q1 - q), g, layout, oo,
                              amax + o * plane, amin + o * plane);
      else
        direct_range<T, false>(planes, offsets, wo, b, bias != nullptr, q, imin(B, q1 - q), g, layout, oo, nullptr,
                               nullptr);
    }
  }
}

template <typename T>
void im2col(const T* planes, const int64_t* runs, int64_t nruns, int64_t K, int64_t q0, int64_t q1, T* tile) {
  using V = Vec<T>;
  constexpr int L = V::L;
  static_assert(L <= kIm2colSlack, "a vector copy must fit in the tile's slack");
  for (int64_t q = q0; q < q1; ++q) {
    const T* base = planes + q;
    T* d = tile + (q - q0) * K;
    for (int64_t r = 0; r < nruns; ++r) {
      const T* s = base + runs[2 * r];
      const int64_t n = runs[2 * r + 1];
      for (int64_t i = 0; i < n; i += L) V::store(d + i, V::load(s + i));
      d += n;
    }
  }
}

// Input position of patch position k for the output at (oh, ow), from its
// tap (taps[3k..3k+2]: row offset kh * dH, column offset kw * dW, linear
// offset (c * H + kh * dH) * W + kw * dW); false for a padded position.
inline bool input_position(const ConvGeometry& g, const int64_t* taps, int64_t k, int64_t ih0, int64_t iw0,
                           int64_t* at) {
  const int64_t* t = taps + 3 * k;
  const int64_t ih = ih0 + t[0], iw = iw0 + t[1];
  if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return false;
  *at = ih0 * g.W + iw0 + t[2];
  return true;
}

inline bool index_ok(int32_t i, int64_t K) {
  return static_cast<uint64_t>(static_cast<uint32_t>(i)) < static_cast<uint64_t>(K);
}

// Calls visit(e, a, b, ih0, iw0, inside) for every output e of one neuron's
// (Ho, Wo) plane with valid indices a = amax[e], b = amin[e], where (ih0, iw0)
// is the input position of the patch's origin and `inside` says that the
// whole patch lies inside the input (no padded position: no bounds checks
// needed). Returns false if some index was out of range (those are skipped).
template <typename Visit>
inline bool for_each_output(const ConvGeometry& g, const int32_t* amax, const int32_t* amin, Visit visit) {
  const int64_t K = g.patch();
  const int64_t span_h = (g.kH - 1) * g.dH, span_w = (g.kW - 1) * g.dW;
  const int64_t lo = imin(g.Wo, ceil_div(g.pW, g.sW));  // first column whose patch starts inside
  const int64_t hi = g.W - 1 - span_w + g.pW < 0 ? 0 : imin(g.Wo, (g.W - 1 - span_w + g.pW) / g.sW + 1);
  bool ok = true;
  for (int64_t oh = 0, e = 0; oh < g.Ho; ++oh) {
    const int64_t ih0 = oh * g.sH - g.pH;
    const bool row_inside = ih0 >= 0 && ih0 + span_h < g.H;
    for (int64_t ow = 0; ow < g.Wo; ++ow, ++e) {
      const int32_t a = amax[e], b = amin[e];
      if (!index_ok(a, K) || !index_ok(b, K)) {
        ok = false;
        continue;
      }
      visit(e, a, b, ih0, ow * g.sW - g.pW, row_inside && ow >= lo && ow < hi);
    }
  }
  return ok;
}

// Calls visit(e, k, at, valid) for k = amax[e], then k = amin[e], for every
// output e of one neuron's plane with valid indices (see for_each_output):
// `at` is the input position of patch position k, valid false (and `at`
// meaningless) where k falls on padding. Inside the input, valid is the constant
// true, so the always-inlined visit has no bounds check there.
template <typename Visit>
inline bool for_each_selected(const ConvGeometry& g, const int64_t* taps, const int32_t* amax, const int32_t* amin,
                              Visit visit) {
  auto per_output = [&](int64_t e, int32_t a, int32_t b, int64_t ih0, int64_t iw0, bool inside)
      __attribute__((always_inline)) {
    const int64_t origin = ih0 * g.W + iw0;
    if (inside) {
      visit(e, a, origin + taps[3 * a + 2], true);
      visit(e, b, origin + taps[3 * b + 2], true);
      return;
    }
    int64_t at = 0;
    bool valid = input_position(g, taps, a, ih0, iw0, &at);
    visit(e, a, at, valid);
    valid = input_position(g, taps, b, ih0, iw0, &at);
    visit(e, b, at, valid);
  };
  return for_each_output(g, amax, amin, per_output);
}

template <typename T>
bool backward_input(const T* g, const T* w, const int32_t* amax, const int32_t* amin, T* gx, int64_t n,
                    const ConvGeometry& geo, const int64_t* taps) {
  const int64_t K = geo.patch(), plane = geo.Ho * geo.Wo;
  bool ok = true;
  for (int64_t o = 0; o < n; ++o) {
    const T* wo = w + o * K;
    const T* go = g + o * plane;
    auto visit = [&](int64_t e, int32_t k, int64_t at, bool valid) __attribute__((always_inline)) {
      if (valid) gx[at] += go[e] * wo[k];
    };
    ok &= for_each_selected(geo, taps, amax + o * plane, amin + o * plane, visit);
  }
  return ok;
}

template <typename T>
bool backward_weight(const T* g, const T* x, const int32_t* amax, const int32_t* amin, T* gw, int64_t n,
                     const ConvGeometry& geo, const int64_t* taps) {
  const int64_t K = geo.patch(), plane = geo.Ho * geo.Wo;
  bool ok = true;
  for (int64_t o = 0; o < n; ++o) {
    T* wgo = gw + o * K;
    const T* go = g + o * plane;
    auto visit = [&](int64_t e, int32_t k, int64_t at, bool valid) __attribute__((always_inline)) {
      wgo[k] += go[e] * (valid ? x[at] : T(0));
    };
    ok &= for_each_selected(geo, taps, amax + o * plane, amin + o * plane, visit);
  }
  return ok;
}

template <typename T>
ConvKernels<T> conv_kernels() {
  return ConvKernels<T>{&phase_split<T>, &direct_forward<T>, &im2col<T>, &backward_input<T>, &backward_weight<T>};
}

}  // namespace

const ConvKernelTable& conv_kernel_table() {
  static const ConvKernelTable table{kCapability, conv_kernels<float>(), conv_kernels<double>()};
  return table;
}

}  // namespace mamext::cpu::MAMEXT_ISA
