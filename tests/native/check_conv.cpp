// MAM convolution kernels (csrc/ops/cpu/simd/mam_conv2d_simd.cpp: phase_split,
// direct_forward, im2col, backward_input, backward_weight) of every linked ISA
// against a scalar reference of the convolution, bit for bit. The kernels are
// driven as the operator glue (ops/cpu/mam_conv2d_kernel.cpp) drives them: per
// image and group, the direct path over chunks of the wide grid and split
// neuron ranges, the im2col path in tiles through the dense kernels (packed
// panels, or forward_slow for NaN/inf data).
#include "check_common.h"
#include "ops/cpu/mam_conv2d_tables.h"
#include "ops/cpu/simd/mam_conv2d_simd.h"

namespace kcheck {
namespace {

// One convolution: input (N, C_in, H, W), weight (C_out, C_in / groups, kH, kW).
struct ConvCase {
  const char* name;
  int64_t N, C_in, H, W, C_out, kH, kW, sH, sW, pH, pW, dH, dW, groups;
};

cpu::ConvGeometry geometry(const ConvCase& c) {
  cpu::ConvGeometry g{};
  g.C_in = c.C_in, g.H = c.H, g.W = c.W;
  g.Cg = c.C_in / c.groups, g.kH = c.kH, g.kW = c.kW;
  g.sH = c.sH, g.sW = c.sW, g.pH = c.pH, g.pW = c.pW, g.dH = c.dH, g.dW = c.dW;
  g.Ho = (c.H + 2 * c.pH - c.dH * (c.kH - 1) - 1) / c.sH + 1;
  g.Wo = (c.W + 2 * c.pW - c.dW * (c.kW - 1) - 1) / c.sW + 1;
  return g;
}

// The index tables the glue builds (ops/cpu/mam_conv2d_tables.h).
struct Tables {
  std::vector<int64_t> offsets, runs, taps;
};

Tables tables(const cpu::ConvGeometry& g, const cpu::PhaseLayout& l) {
  Tables t{cpu::plane_offsets(g, l), {}, cpu::patch_taps(g)};
  t.runs = cpu::offset_runs(t.offsets);
  return t;
}

// Value of channel c of image n at (ih, iw) of the zero-padded input: +0
// outside the image.
template <typename T>
T padded(const std::vector<T>& x, const ConvCase& c, int64_t n, int64_t ch, int64_t ih, int64_t iw) {
  if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) return T(0);
  return x[((n * c.C_in + ch) * c.H + ih) * c.W + iw];
}

// Patch value k of output (oh, ow) of image n, group grp.
template <typename T>
T patch_value(const std::vector<T>& x, const ConvCase& c, const cpu::ConvGeometry& g, int64_t n, int64_t grp,
              int64_t oh, int64_t ow, int64_t k) {
  const int64_t ch = k / (c.kH * c.kW), kh = k / c.kW % c.kH, kw = k % c.kW;
  return padded(x, c, n, grp * g.Cg + ch, oh * c.sH - c.pH + kh * c.dH, ow * c.sW - c.pW + kw * c.dW);
}

// out[n, o, oh, ow] = max_k p + min_k p (+ bias[o]) over the patch, p = patch
// value * w[o, k], folded in k order by reference_fold.
template <typename T>
MamRef<T> conv_reference(const std::vector<T>& x, const std::vector<T>& w, const T* bias, const ConvCase& c,
                         const cpu::ConvGeometry& g) {
  const int64_t K = g.patch(), Ng = c.C_out / c.groups, total = c.N * c.C_out * g.Ho * g.Wo;
  MamRef<T> r = mam_ref_of_size<T>(total);
  for (int64_t n = 0, e = 0; n < c.N; ++n)
    for (int64_t o = 0; o < c.C_out; ++o)
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        for (int64_t ow = 0; ow < g.Wo; ++ow, ++e) {
          const T* wo = &w[o * K];
          reference_fold(r, e, K, bias ? bias + o : nullptr,
                         [&](int64_t k) { return patch_value(x, c, g, n, o / Ng, oh, ow, k) * wo[k]; });
        }
  return r;
}

// Everything one (case, data, type) run shares across the ISAs.
template <typename T>
struct Problem {
  const ConvCase& c;
  cpu::ConvGeometry g;
  cpu::PhaseLayout layout;
  Tables t;
  std::vector<T> x, w, bias_values;
  const T* bias;
  MamRef<T> ref;
  bool finite;
  int64_t K, Ng, plane, wide;
  std::string tag;  // data, type and case for the labels
};

template <typename T>
std::string conv_label(const Isa& isa, const char* kernel, const Problem<T>& p) {
  return std::string("[") + isa.name + "] conv " + kernel + "<" + type_name<T>() + "> " + p.tag;
}

// The phase planes of every (image, group), by their definition:
// plane[i][j] = padded[a + i * sH][b + j * sW], then zero slack.
template <typename T>
std::vector<T> planes_reference(const Problem<T>& p) {
  std::vector<T> all;
  for (int64_t n = 0; n < p.c.N; ++n)
    for (int64_t grp = 0; grp < p.c.groups; ++grp) {
      const size_t start = all.size();
      for (int64_t ch = 0; ch < p.g.Cg; ++ch)
        for (int64_t a = 0; a < p.c.sH; ++a)
          for (int64_t b = 0; b < p.c.sW; ++b)
            for (int64_t i = 0; i < p.layout.Hq; ++i)
              for (int64_t j = 0; j < p.layout.Wq; ++j)
                all.push_back(padded(p.x, p.c, n, grp * p.g.Cg + ch, a + i * p.c.sH - p.c.pH, b + j * p.c.sW - p.c.pW));
      all.resize(start + p.layout.size, T(0));
    }
  return all;
}

// phase_split of every (image, group) into one array, in planes_reference's order.
template <typename T>
std::vector<T> split_all(const Isa& isa, const Problem<T>& p) {
  std::vector<T> all(p.c.N * p.c.groups * p.layout.size, T(7));  // stale values the split must overwrite
  for (int64_t n = 0; n < p.c.N; ++n)
    for (int64_t grp = 0; grp < p.c.groups; ++grp)
      conv_of<T>(isa).phase_split(&p.x[(n * p.c.C_in + grp * p.g.Cg) * p.c.H * p.c.W], p.g, p.layout,
                                  &all[(n * p.c.groups + grp) * p.layout.size]);
  return all;
}

// The direct path over every (image, group): neurons in two calls (the second
// starting at neuron n0, as for a dense path's leftover neurons), the wide
// grid in chunks of `chunk` outputs.
template <typename T>
void run_direct(const Isa& isa, const Problem<T>& p, const std::vector<T>& planes, int64_t chunk, bool track,
                T* out, int32_t* amax, int32_t* amin) {
  const int64_t n0 = p.Ng / 2;
  for (int64_t n = 0; n < p.c.N; ++n)
    for (int64_t grp = 0; grp < p.c.groups; ++grp) {
      const T* pl = &planes[(n * p.c.groups + grp) * p.layout.size];
      for (int64_t q0 = 0; q0 < p.wide; q0 += chunk) {
        const int64_t q1 = std::min(p.wide, q0 + chunk);
        for (int part = 0; part < 2; ++part) {
          const int64_t first = part == 0 ? 0 : n0, count = part == 0 ? n0 : p.Ng - n0;
          if (count == 0) continue;
          const int64_t o = grp * p.Ng + first, at = (n * p.c.C_out + o) * p.plane;
          conv_of<T>(isa).direct_forward(pl, p.t.offsets.data(), &p.w[o * p.K], p.bias ? p.bias + o : nullptr,
                                         out + at, track ? amax + at : nullptr, track ? amin + at : nullptr, count,
                                         q0, q1, p.g, p.layout);
        }
      }
    }
}

// The im2col path: tiles of `tile_rows` wide rows through the dense kernels
// (one packed panel per panel_width neurons, or forward_slow for NaN/inf),
// real columns copied to the outputs. Also checks each tile's real rows
// against the patch values.
template <typename T>
void run_im2col(const Isa& isa, const Problem<T>& p, const std::vector<T>& planes, bool track, T* out,
                int32_t* amax, int32_t* amin, bool& tiles_ok) {
  const auto& ck = conv_of<T>(isa);
  const auto& kt = dense_of<T>(isa);
  const int64_t P = kt.panel_width, rows_max = 3 * kt.row_block, Wq = p.layout.Wq, Wo = p.g.Wo;
  std::vector<T> tile(rows_max * p.K + cpu::kIm2colSlack), otile(rows_max * p.Ng), panels;
  std::vector<int32_t> atile(rows_max * p.Ng), itile(rows_max * p.Ng);
  const int64_t npanels = (p.Ng + P - 1) / P;
  for (int64_t n = 0; n < p.c.N; ++n)
    for (int64_t grp = 0; grp < p.c.groups; ++grp) {
      const T* pl = &planes[(n * p.c.groups + grp) * p.layout.size];
      const T* wg = &p.w[grp * p.Ng * p.K];
      const T* bg = p.bias ? p.bias + grp * p.Ng : nullptr;
      panels.assign(npanels * p.K * P, T(0));
      for (int64_t q = 0; q < npanels; ++q) kt.pack(wg, p.Ng, p.K, q * P, 0, p.K, &panels[q * p.K * P]);
      for (int64_t t0 = 0; t0 < p.wide; t0 += rows_max) {
        const int64_t rows = std::min(rows_max, p.wide - t0);
        ck.im2col(pl, p.t.runs.data(), static_cast<int64_t>(p.t.runs.size() / 2), p.K, t0, t0 + rows, tile.data());
        int32_t* am = track ? atile.data() : nullptr;
        int32_t* an = track ? itile.data() : nullptr;
        if (!p.finite)
          kt.forward_slow(tile.data(), wg, bg, otile.data(), am, an, 0, rows, p.Ng, p.K);
        else
          for (int64_t q = 0; q < npanels; ++q)
            kt.forward(tile.data(), &panels[q * p.K * P], wg, bg, otile.data(), am, an, 0, rows, q * P, p.Ng, p.K, 0,
                       p.K, nullptr, nullptr);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t oh = (t0 + r) / Wq, ow = (t0 + r) % Wq;
          if (ow >= Wo) continue;
          for (int64_t k = 0; k < p.K; ++k) {
            const T want = patch_value(p.x, p.c, p.g, n, grp, oh, ow, k);
            tiles_ok &= same(tile[r * p.K + k], want, true);
          }
          for (int64_t o = 0; o < p.Ng; ++o) {
            const int64_t at = (n * p.c.C_out + grp * p.Ng + o) * p.plane + oh * Wo + ow;
            out[at] = otile[r * p.Ng + o];
            if (track) amax[at] = atile[r * p.Ng + o], amin[at] = itile[r * p.Ng + o];
          }
        }
      }
    }
}

template <typename T>
void check_forward(const Isa& isa, const Problem<T>& p) {
  const int64_t total = static_cast<int64_t>(p.ref.out.size());
  const auto planes = split_all(isa, p);
  const auto want_planes = planes_reference(p);
  expect_equal(conv_label(isa, "phase_split", p), planes.data(), want_planes.data(),
               static_cast<int64_t>(planes.size()));
  std::vector<T> out(total);
  std::vector<int32_t> amax(total), amin(total);
  auto expect = [&](const char* kernel, bool indices) {
    const auto what = conv_label(isa, kernel, p);
    expect_equal(what + " out", out.data(), p.ref.out.data(), total);
    if (indices) {
      expect_equal(what + " argmax", amax.data(), p.ref.amax.data(), total);
      expect_equal(what + " argmin", amin.data(), p.ref.amin.data(), total);
    }
  };
  if (p.finite) {  // the direct path takes finite data only
    run_direct(isa, p, planes, cpu::kDirectBlockMax, true, out.data(), amax.data(), amin.data());
    expect("direct+indices", true);
    run_direct(isa, p, planes, p.wide, false, out.data(), nullptr, nullptr);
    expect("direct", false);
  }
  bool tiles_ok = true;
  run_im2col(isa, p, planes, true, out.data(), amax.data(), amin.data(), tiles_ok);
  expect_true(conv_label(isa, "im2col", p) + " tiles", tiles_ok);
  expect(p.finite ? "im2col+dense+indices" : "im2col+forward_slow+indices", true);
  if (!p.finite) return;
  run_im2col(isa, p, planes, false, out.data(), nullptr, nullptr, tiles_ok);
  expect("im2col+dense", false);
}

// gx gets g * w[o, k] at the input position of each selected patch position
// (nothing for a padded one); gw[o, k] gets g * (its patch value, +0 when
// padded); summed in (image, neuron, output) order, the argmax term first.
template <typename T>
void check_backward(const Isa& isa, const Problem<T>& p, const std::vector<T>& grad) {
  const auto& ck = conv_of<T>(isa);
  const int64_t image = p.c.H * p.c.W, nx = p.c.N * p.c.C_in * image;
  std::vector<T> gx_ref(nx, T(0)), gw_ref(p.w.size(), T(0)), gx(nx, T(0)), gw(p.w.size(), T(0));
  for (int64_t n = 0, e = 0; n < p.c.N; ++n)
    for (int64_t o = 0; o < p.c.C_out; ++o)
      for (int64_t oh = 0; oh < p.g.Ho; ++oh)
        for (int64_t ow = 0; ow < p.g.Wo; ++ow, ++e)
          for (int32_t k : {p.ref.amax[e], p.ref.amin[e]}) {
            const int64_t grp = o / p.Ng, ch = grp * p.g.Cg + k / (p.c.kH * p.c.kW);
            const int64_t ih = oh * p.c.sH - p.c.pH + k / p.c.kW % p.c.kH * p.c.dH;
            const int64_t iw = ow * p.c.sW - p.c.pW + k % p.c.kW * p.c.dW;
            if (ih >= 0 && ih < p.c.H && iw >= 0 && iw < p.c.W)
              gx_ref[((n * p.c.C_in + ch) * p.c.H + ih) * p.c.W + iw] += grad[e] * p.w[o * p.K + k];
            gw_ref[o * p.K + k] += grad[e] * padded(p.x, p.c, n, ch, ih, iw);
          }
  bool ok = true;
  for (int64_t n = 0; n < p.c.N; ++n)  // grad_input per (image, group), grad_weight per output channel
    for (int64_t grp = 0; grp < p.c.groups; ++grp) {
      const int64_t o0 = (n * p.c.C_out + grp * p.Ng) * p.plane, x0 = (n * p.c.C_in + grp * p.g.Cg) * image;
      ok &= ck.backward_input(&grad[o0], &p.w[grp * p.Ng * p.K], &p.ref.amax[o0], &p.ref.amin[o0], &gx[x0], p.Ng,
                              p.g, p.t.taps.data());
      for (int64_t o = grp * p.Ng; o < (grp + 1) * p.Ng; ++o) {
        const int64_t at = (n * p.c.C_out + o) * p.plane;
        ok &= ck.backward_weight(&grad[at], &p.x[x0], &p.ref.amax[at], &p.ref.amin[at], &gw[o * p.K], 1, p.g,
                                 p.t.taps.data());
      }
    }
  const auto what = conv_label(isa, "backward", p);
  expect_true(what + " ok", ok);
  expect_equal(what + " grad_input", gx.data(), gx_ref.data(), nx);
  expect_equal(what + " grad_weight", gw.data(), gw_ref.data(), static_cast<int64_t>(gw.size()));
  auto bad = p.ref.amin;
  bad[bad.size() / 2] = static_cast<int32_t>(p.K);  // out of range: reported, never written
  const int64_t o0 = static_cast<int64_t>(bad.size()) / 2 / p.plane * p.plane;  // that neuron's plane
  expect_true(what + " bad index refused",
              !ck.backward_input(&grad[o0], &p.w[0], &p.ref.amax[o0], &bad[o0], gx.data(), 1, p.g, p.t.taps.data()) &&
                  !ck.backward_weight(&grad[o0], p.x.data(), &p.ref.amax[o0], &bad[o0], gw.data(), 1, p.g,
                                      p.t.taps.data()));
}

// Weights: Negative data pairs positive inputs with negative weights (every
// product negative, a padded position's zero wins the max); Positive uses
// positive weights too (the zero wins the min).
template <typename T>
void check_case(const std::vector<Isa>& isas, const ConvCase& c, Data d, bool positive_w, bool with_bias) {
  Problem<T> p{c, geometry(c), {}, {}, {}, {}, {}, nullptr, {}, true, 0, 0, 0, 0, {}};
  p.layout = cpu::phase_layout(p.g);
  p.t = tables(p.g, p.layout);
  p.K = p.g.patch(), p.Ng = c.C_out / c.groups, p.plane = p.g.Ho * p.g.Wo, p.wide = p.g.Ho * p.layout.Wq;
  p.x = make<T>(d, c.N * c.C_in * c.H * c.W, true);
  p.w = make<T>(d, c.C_out * p.K, positive_w);
  p.bias_values = make<T>(Data::Random, c.C_out);
  p.bias = with_bias ? p.bias_values.data() : nullptr;
  for (T v : p.x) p.finite &= std::isfinite(v);
  for (T v : p.w) p.finite &= std::isfinite(v);
  p.ref = conv_reference(p.x, p.w, p.bias, c, p.g);
  p.tag = std::string(positive_w && d == Data::Negative ? "positive" : data_name(d)) + " " + c.name;
  const auto grad = make<T>(d == Data::Ties ? Data::Ties : Data::Random, c.N * c.C_out * p.plane);
  for (const auto& isa : isas) {
    check_forward(isa, p);
    if (p.finite) check_backward(isa, p, grad);
  }
}

// Vector widths: 4..16 floats, 2..8 doubles; direct blocks of 8..128 outputs.
const ConvCase kCases[] = {
    // name                    N C_in  H   W C_out kH kW sH sW pH pW dH dW groups
    {"3x3/pad1",               2, 3,   9, 11,  4,  3, 3, 1, 1, 1, 1, 1, 1, 1},
    {"5x3/stride2",            1, 2,  13, 17,  3,  5, 3, 2, 2, 2, 1, 1, 1, 1},
    {"3x2/stride3x1/dil1x2/g2", 1, 4, 10, 19,  4,  3, 2, 3, 1, 1, 0, 1, 2, 2},
    {"depthwise/dil2",         2, 6,   8,  9,  6,  3, 3, 1, 1, 2, 2, 2, 2, 6},
    {"1x1",                    1, 5,   7, 23, 10,  1, 1, 1, 1, 0, 0, 1, 1, 1},
    {"1x1/stride2/pad1",       1, 3,   5,  6,  2,  1, 1, 2, 2, 1, 1, 1, 1, 1},
    {"3x7/stride1x2",          1, 2,   9, 30,  3,  3, 7, 1, 2, 1, 3, 1, 1, 1},
    {"3x3/wide",               1, 2,  20, 21,  2,  3, 3, 1, 1, 1, 1, 1, 1, 1},
    {"3x3/24 per group",       1, 8,   7, 13, 48,  3, 3, 1, 1, 1, 1, 1, 1, 2},
    {"2x2/stride3/g3",         1, 6,   6,  7, 36,  2, 2, 3, 3, 0, 0, 1, 1, 3},
    {"4x4/whole image",        1, 1,   4,  4,  1,  4, 4, 1, 1, 0, 0, 1, 1, 1},
};

template <typename T>
void check_type(const std::vector<Isa>& isas) {
  for (const auto& c : kCases) {
    check_case<T>(isas, c, Data::Random, false, true);
    check_case<T>(isas, c, Data::Ties, false, false);  // a bias would hide the sign of a zero
    check_case<T>(isas, c, Data::Negative, false, false);
    check_case<T>(isas, c, Data::Negative, true, false);
    check_case<T>(isas, c, Data::Zeros, false, false);
    check_case<T>(isas, c, Data::NonFinite, false, true);
  }
}

}  // namespace

void check_conv_all(const std::vector<Isa>& isas) {
  check_type<float>(isas);
  check_type<double>(isas);
}

}  // namespace kcheck
