#include "ops/cpu/mam_conv2d_tables.h"

#include <cstddef>

namespace mamext::cpu {

std::vector<int64_t> plane_offsets(const ConvGeometry& g, const PhaseLayout& layout) {
  std::vector<int64_t> off(g.patch());
  for (int64_t c = 0, k = 0; c < g.Cg; ++c)
    for (int64_t kh = 0; kh < g.kH; ++kh)
      for (int64_t kw = 0; kw < g.kW; ++kw, ++k) {
        const int64_t a = kh * g.dH % g.sH, b = kw * g.dW % g.sW;
        off[k] = ((c * g.sH + a) * g.sW + b) * layout.plane() + kh * g.dH / g.sH * layout.Wq + kw * g.dW / g.sW;
      }
  return off;
}

std::vector<int64_t> offset_runs(const std::vector<int64_t>& offsets) {
  std::vector<int64_t> runs;
  for (std::size_t k = 0; k < offsets.size(); ++k) {
    if (k > 0 && offsets[k] == offsets[k - 1] + 1) {
      ++runs.back();
      continue;
    }
    runs.push_back(offsets[k]);
    runs.push_back(1);
  }
  return runs;
}

std::vector<int64_t> patch_taps(const ConvGeometry& g) {
  std::vector<int64_t> taps(3 * g.patch());
  for (int64_t c = 0, k = 0; c < g.Cg; ++c)
    for (int64_t kh = 0; kh < g.kH; ++kh)
      for (int64_t kw = 0; kw < g.kW; ++kw, ++k) {
        taps[3 * k] = kh * g.dH;
        taps[3 * k + 1] = kw * g.dW;
        taps[3 * k + 2] = (c * g.H + kh * g.dH) * g.W + kw * g.dW;
      }
  return taps;
}

}  // namespace mamext::cpu
