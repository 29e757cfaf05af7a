// CPU implementation of the MAM convolution operators: argument checks, dtype
// handling, the split of work across threads and the choice between the two
// forward paths. The arithmetic is in the per-ISA kernels
// (simd/mam_conv2d_simd.cpp, and the dense kernels of simd/mam_linear_simd.cpp).
//
// Work items are (image, group, range of the wide output grid); each thread
// splits its image's group into stride-phase planes once (PhaseLayout) and
// then either
//  - direct path (few output channels per group, finite data): vectorised
//    over output pixels (ConvKernels::direct_forward), or
//  - dense path: im2col tiles of a few hundred wide rows, kept in the thread's
//    cache-resident scratch, through the dense MAM kernels (weight panels
//    packed once per thread and group; forward_slow when the input or the
//    weight holds NaN or infinity), each tile's (rows, C_out / groups)
//    result then written to the NCHW output.
// Both compute exactly what mam_linear computes on the patch rows.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/aligned_scratch.h"
#include "common/compute_type.h"
#include "ops/cpu/dense_glue.h"
#include "ops/cpu/mam_conv2d_tables.h"
#include "ops/cpu/simd/mam_conv2d_simd.h"
#include "ops/cpu/simd/mam_linear_simd.h"
#include "ops/mam_conv2d.h"

namespace mamext {
namespace cpu {

const ConvKernelTable& conv_kernels() {
  switch (active_capability()) {
#if defined(__x86_64__) || defined(_M_X64)
    case Capability::AVX512: return avx512::conv_kernel_table();
    case Capability::AVX2: return avx2::conv_kernel_table();
#elif defined(__aarch64__)
    case Capability::NEON: return neon::conv_kernel_table();
#endif
    default: return default_isa::conv_kernel_table();
  }
}

}  // namespace cpu

namespace {

// The convolution kernels of the active ISA for T (float or double).
template <typename T>
const cpu::ConvKernels<T>& conv_kernels_for() {
  if constexpr (std::is_same_v<T, double>)
    return cpu::conv_kernels().f64;
  else
    return cpu::conv_kernels().f32;
}

// Wide rows per im2col tile: about kTileBytes of patches (L2 resident).
constexpr int64_t kTileBytes = 256 * 1024;
constexpr int64_t kMaxTileRows = 1024;

// Per-thread, 64-byte aligned scratch, grown as needed and reused across calls.
void* thread_scratch(size_t bytes) {
  thread_local AlignedScratch buf;
  void* ptr = buf.reserve(bytes);
  TORCH_CHECK(ptr, "mam_conv2d: out of memory allocating ", aligned(bytes), " bytes of scratch");
  return ptr;
}

// Everything a forward call shares between its work items.
template <typename T>
struct ForwardJob {
  const T* x;
  const T* w;
  const T* bias;
  T* out;
  int32_t* amax;
  int32_t* amin;
  ConvShape s;
  cpu::PhaseLayout layout;
  std::vector<int64_t> offsets;  // plane offset of each patch position
  std::vector<int64_t> runs;     // the offsets as runs (offset, length) of consecutive values
  int64_t Ng, K, wide;           // neurons per group, patch, wide grid size
  bool finite, direct;
  // dense path: neurons [0, n_dense) in `panels` weight panels; the rest (a
  // last panel that would be mostly empty) take the direct path
  int64_t tile_rows, panels, panel_width, k_block, n_dense;
};

// Scratch layout of the dense path: tile, output tile, index tiles, packed
// panels (all panels of a group when K fits one block, else one panel plus
// the K-blocked running state).
template <typename T>
struct DenseScratch {
  T* tile;
  T* otile;
  int32_t* atile;
  int32_t* itile;
  int64_t* at;  // output position of each tile row (-1: a dropped column)
  T* panels;
  T* state;
  int32_t* blocks;
};

template <typename T>
size_t dense_scratch_bytes(const ForwardJob<T>& j, bool blocked) {
  const size_t rows = j.tile_rows, P = j.panel_width;
  size_t b = aligned((rows * j.K + cpu::kIm2colSlack) * sizeof(T)) + aligned(rows * j.Ng * sizeof(T)) +
             2 * aligned(rows * j.Ng * sizeof(int32_t)) + aligned(rows * sizeof(int64_t));
  if (!blocked) return b + aligned(j.panels * j.K * P * sizeof(T));
  return b + aligned(j.k_block * P * sizeof(T)) + aligned(2 * rows * P * sizeof(T)) +
         aligned(2 * rows * P * sizeof(int32_t));
}

template <typename T>
DenseScratch<T> dense_scratch(const ForwardJob<T>& j, char* p, bool blocked) {
  const size_t rows = j.tile_rows, P = j.panel_width;
  DenseScratch<T> d{};
  auto take = [&p](size_t bytes) {
    char* r = p;
    p += aligned(bytes);
    return r;
  };
  d.tile = reinterpret_cast<T*>(take((rows * j.K + cpu::kIm2colSlack) * sizeof(T)));
  d.otile = reinterpret_cast<T*>(take(rows * j.Ng * sizeof(T)));
  d.atile = reinterpret_cast<int32_t*>(take(rows * j.Ng * sizeof(int32_t)));
  d.itile = reinterpret_cast<int32_t*>(take(rows * j.Ng * sizeof(int32_t)));
  d.at = reinterpret_cast<int64_t*>(take(rows * sizeof(int64_t)));
  if (!blocked) {
    d.panels = reinterpret_cast<T*>(take(j.panels * j.K * P * sizeof(T)));
    return d;
  }
  d.panels = reinterpret_cast<T*>(take(j.k_block * P * sizeof(T)));
  d.state = reinterpret_cast<T*>(take(2 * rows * P * sizeof(T)));
  d.blocks = reinterpret_cast<int32_t*>(take(2 * rows * P * sizeof(int32_t)));
  return d;
}

// The dense kernels over one tile of `rows` patch rows of group `grp`:
// (rows, Ng) results in d.otile (and d.atile/d.itile when tracking).
template <typename T>
void dense_tile(const ForwardJob<T>& j, const DenseScratch<T>& d, int64_t grp, int64_t rows, bool packed) {
  const auto& kt = dense_kernels<T>();
  const T* wg = j.w + grp * j.Ng * j.K;
  const T* bg = j.bias ? j.bias + grp * j.Ng : nullptr;
  int32_t* am = j.amax ? d.atile : nullptr;
  int32_t* an = j.amax ? d.itile : nullptr;
  if (!j.finite) {
    kt.forward_slow(d.tile, wg, bg, d.otile, am, an, 0, rows, j.Ng, j.K);
    return;
  }
  const int64_t P = j.panel_width;
  for (int64_t p = 0; p < j.panels; ++p) {
    if (packed) {
      kt.forward(d.tile, d.panels + p * j.K * P, wg, bg, d.otile, am, an, 0, rows, p * P, j.Ng, j.K, 0, j.K,
                 nullptr, nullptr);
      continue;
    }
    for (int64_t k0 = 0; k0 < j.K; k0 += j.k_block) {
      const int64_t k1 = std::min(j.K, k0 + j.k_block);
      kt.pack(wg, j.Ng, j.K, p * P, k0, k1, d.panels);
      kt.forward(d.tile, d.panels, wg, bg, d.otile, am, an, 0, rows, p * P, j.Ng, j.K, k0, k1, d.state, d.blocks);
    }
  }
}

// Copies a tile's (rows, Ng) results for wide rows [q0, q0 + rows) of image b,
// group grp into the NCHW outputs (columns past Wo are dropped): one
// contiguous run per output channel.
template <typename T>
void store_tile(const ForwardJob<T>& j, const DenseScratch<T>& d, int64_t b, int64_t grp, int64_t q0,
                int64_t rows) {
  const int64_t Wq = j.layout.Wq, Wo = j.s.geo.Wo, plane = j.s.geo.Ho * Wo;
  int64_t* at = d.at;
  for (int64_t t = 0, oh = q0 / Wq, ow = q0 % Wq; t < rows; ++t) {
    at[t] = ow < Wo ? oh * Wo + ow : -1;
    if (++ow == Wq) ow = 0, ++oh;
  }
  const int64_t o0 = b * j.s.C_out + grp * j.Ng;
  for (int64_t n = 0; n < j.n_dense; ++n) {
    T* out = j.out + (o0 + n) * plane;
    for (int64_t t = 0; t < rows; ++t)
      if (at[t] >= 0) out[at[t]] = d.otile[t * j.Ng + n];
    if (!j.amax) continue;
    int32_t* am = j.amax + (o0 + n) * plane;
    int32_t* an = j.amin + (o0 + n) * plane;
    for (int64_t t = 0; t < rows; ++t)
      if (at[t] >= 0) {
        am[at[t]] = d.atile[t * j.Ng + n];
        an[at[t]] = d.itile[t * j.Ng + n];
      }
  }
}

// The direct path for neurons [n0, Ng) of group grp of image b over the wide
// outputs [q0, q1), from the group's phase planes.
template <typename T>
void direct_neurons(const ForwardJob<T>& j, const T* planes, int64_t b, int64_t grp, int64_t n0, int64_t q0,
                    int64_t q1) {
  const int64_t o0 = b * j.s.C_out + grp * j.Ng + n0, plane = j.s.geo.Ho * j.s.geo.Wo, first = grp * j.Ng + n0;
  conv_kernels_for<T>().direct_forward(planes, j.offsets.data(), j.w + first * j.K, j.bias ? j.bias + first : nullptr,
                                    j.out + o0 * plane, j.amax ? j.amax + o0 * plane : nullptr,
                                    j.amax ? j.amin + o0 * plane : nullptr, j.Ng - n0, q0, q1, j.s.geo, j.layout);
}

// Work items: (image, group, chunk of the wide grid), chunk-minor.
struct ItemRange {
  int64_t chunks, chunk_len;
};

template <typename T>
void run_items(const ForwardJob<T>& j, const ItemRange& r, int64_t begin, int64_t end) {
  const auto& ck = conv_kernels_for<T>();
  const auto& kt = dense_kernels<T>();
  const bool blocked = j.K > j.k_block;
  const size_t planes_bytes = aligned(j.layout.size * sizeof(T));
  char* scratch = static_cast<char*>(thread_scratch(planes_bytes + (j.direct ? 0 : dense_scratch_bytes(j, blocked))));
  T* planes = reinterpret_cast<T*>(scratch);
  DenseScratch<T> d{};
  if (!j.direct) d = dense_scratch(j, scratch + planes_bytes, blocked);
  int64_t split_plane = -1, packed_group = -1;
  const cpu::ConvGeometry& g = j.s.geo;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t plane_id = item / r.chunks, chunk = item % r.chunks;
    const int64_t b = plane_id / j.s.groups, grp = plane_id % j.s.groups;
    const int64_t q0 = chunk * r.chunk_len, q1 = std::min(j.wide, q0 + r.chunk_len);
    if (plane_id != split_plane) {
      ck.phase_split(j.x + (b * g.C_in + grp * g.Cg) * g.H * g.W, g, j.layout, planes);
      split_plane = plane_id;
    }
    if (j.direct) {
      direct_neurons(j, planes, b, grp, 0, q0, q1);
      continue;
    }
    if (j.finite && !blocked && grp != packed_group) {
      for (int64_t p = 0; p < j.panels; ++p)
        kt.pack(j.w + grp * j.Ng * j.K, j.Ng, j.K, p * j.panel_width, 0, j.K, d.panels + p * j.K * j.panel_width);
      packed_group = grp;
    }
    for (int64_t t0 = q0; t0 < q1; t0 += j.tile_rows) {
      const int64_t rows = std::min(j.tile_rows, q1 - t0);
      ck.im2col(planes, j.runs.data(), static_cast<int64_t>(j.runs.size() / 2), j.K, t0, t0 + rows, d.tile);
      dense_tile(j, d, grp, rows, !blocked);
      store_tile(j, d, b, grp, t0, rows);
    }
    if (j.n_dense < j.Ng) direct_neurons(j, planes, b, grp, j.n_dense, q0, q1);
  }
}

// Fills the job's geometry-derived fields and the path choice.
template <typename T>
void plan_forward(ForwardJob<T>& j) {
  const auto& kt = dense_kernels<T>();
  const cpu::ConvGeometry& g = j.s.geo;
  j.Ng = j.s.C_out / j.s.groups;
  j.K = g.patch();
  j.layout = cpu::phase_layout(g);
  j.offsets = cpu::plane_offsets(g, j.layout);
  j.runs = cpu::offset_runs(j.offsets);
  j.wide = g.Ho * j.layout.Wq;
  // One check of the operands decides between the exact fast paths and the
  // NaN-aware scan; the fast paths never test individual products.
  std::atomic<bool> finite{true};
  const int64_t nx = j.s.N * g.C_in * g.H * g.W, nw = j.s.C_out * j.K;
  at::parallel_for(0, nx, 1 << 16, [&](int64_t b, int64_t e) {
    if (!kt.all_finite(j.x + b, e - b)) finite.store(false, std::memory_order_relaxed);
  });
  if (finite.load() && !kt.all_finite(j.w, nw)) finite.store(false);
  j.finite = finite.load();
  j.panel_width = kt.panel_width;
  j.panels = (j.Ng + kt.panel_width - 1) / kt.panel_width;
  j.k_block = kt.k_block;
  // Few neurons per group would leave most lanes of a weight panel empty:
  // the direct path takes them (all of them, or those of a last panel).
  j.direct = j.finite && 2 * j.Ng <= kt.panel_width;
  const int64_t rest = j.Ng % kt.panel_width;
  if (j.finite && rest > 0 && 2 * rest <= kt.panel_width) j.panels = j.Ng / kt.panel_width;
  j.n_dense = std::min(j.Ng, j.panels * kt.panel_width);
  const int64_t rb = kt.row_block;
  const int64_t rows = kTileBytes / (j.K * static_cast<int64_t>(sizeof(T))) / rb * rb;
  j.tile_rows = std::clamp<int64_t>(rows, rb, kMaxTileRows);
}

template <typename T>
void forward_cpu(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& out,
                 at::Tensor* amax, at::Tensor* amin, const ConvShape& s) {
  ForwardJob<T> j;
  j.x = x.data_ptr<T>();
  j.w = w.data_ptr<T>();
  j.bias = bias.defined() ? bias.data_ptr<T>() : nullptr;
  j.out = out.data_ptr<T>();
  j.amax = amax ? amax->data_ptr<int32_t>() : nullptr;
  j.amin = amin ? amin->data_ptr<int32_t>() : nullptr;
  j.s = s;
  plan_forward(j);
  // Split each image's group into chunks of the wide grid only when there are
  // too few of them to keep every thread busy.
  const int64_t planes = s.N * s.groups;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t unit = j.direct ? cpu::kDirectBlockMax : j.tile_rows;
  ItemRange r{1, j.wide};
  if (planes < 4 * threads) {
    const int64_t chunks = std::min((4 * threads + planes - 1) / planes, (j.wide + unit - 1) / unit);
    r.chunk_len = ((j.wide + chunks - 1) / chunks + unit - 1) / unit * unit;
    r.chunks = (j.wide + r.chunk_len - 1) / r.chunk_len;
  }
  at::parallel_for(0, planes * r.chunks, 1, [&](int64_t b, int64_t e) { run_items(j, r, b, e); });
}

// Everything a backward call shares.
template <typename T>
struct BackwardJob {
  const T* g;
  const T* x;
  const T* w;
  const int32_t* amax;
  const int32_t* amin;
  T* gx;
  T* gw;
  ConvShape s;
  std::vector<int64_t> taps;
  int64_t Ng, K, plane, image;
};

// Both gradients of image n, group grp (gx and/or gw as the job asks).
template <typename T>
bool backward_item(const BackwardJob<T>& j, int64_t n, int64_t grp, bool input, bool weight) {
  const auto& ck = conv_kernels_for<T>();
  const cpu::ConvGeometry& g = j.s.geo;
  const int64_t o0 = (n * j.s.C_out + grp * j.Ng) * j.plane, x0 = (n * g.C_in + grp * g.Cg) * j.image;
  bool ok = true;
  if (input) ok &= ck.backward_input(j.g + o0, j.w + grp * j.Ng * j.K, j.amax + o0, j.amin + o0, j.gx + x0, j.Ng, g,
                                     j.taps.data());
  if (weight) ok &= ck.backward_weight(j.g + o0, j.x + x0, j.amax + o0, j.amin + o0, j.gw + grp * j.Ng * j.K, j.Ng,
                                       g, j.taps.data());
  return ok;
}

// grad_weight split by output channel; each thread takes the images one by
// one (an image's input stays cache-hot for all of its channels).
template <typename T>
void backward_weight_by_channel(const BackwardJob<T>& j, std::atomic<bool>& ok) {
  const auto& ck = conv_kernels_for<T>();
  const cpu::ConvGeometry& g = j.s.geo;
  at::parallel_for(0, j.s.C_out, 1, [&](int64_t b, int64_t e) {
    for (int64_t n = 0; n < j.s.N; ++n)
      for (int64_t o = b; o < e; ++o) {
        const int64_t o0 = (n * j.s.C_out + o) * j.plane, x0 = (n * g.C_in + o / j.Ng * g.Cg) * j.image;
        if (!ck.backward_weight(j.g + o0, j.x + x0, j.amax + o0, j.amin + o0, j.gw + o * j.K, 1, g, j.taps.data()))
          ok.store(false);
      }
  });
}

// Every output element is owned by one thread (no atomics, deterministic):
// with many groups, one pass per group over the images computes both
// gradients while a slice is cache-hot; otherwise grad_input is split by
// (image, group) and grad_weight by output channel.
template <typename T>
void backward_cpu(const at::Tensor& go, const at::Tensor& x, const at::Tensor& w, const at::Tensor& amax,
                  const at::Tensor& amin, at::Tensor* gx, at::Tensor* gw, const ConvShape& s) {
  const cpu::ConvGeometry& g = s.geo;
  const BackwardJob<T> j{go.data_ptr<T>(), x.data_ptr<T>(), w.data_ptr<T>(), amax.data_ptr<int32_t>(),
                         amin.data_ptr<int32_t>(), gx ? gx->data_ptr<T>() : nullptr, gw ? gw->data_ptr<T>() : nullptr,
                         s, cpu::patch_taps(g), s.C_out / s.groups, g.patch(), g.Ho * g.Wo, g.H * g.W};
  std::atomic<bool> ok{true};
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  if (gw && s.groups >= 4 * threads) {
    at::parallel_for(0, s.groups, 1, [&](int64_t b, int64_t e) {
      for (int64_t grp = b; grp < e; ++grp)
        for (int64_t n = 0; n < s.N; ++n)
          if (!backward_item(j, n, grp, gx != nullptr, true)) ok.store(false);
    });
  } else {
    if (gx)
      at::parallel_for(0, s.N * s.groups, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i)
          if (!backward_item(j, i / s.groups, i % s.groups, true, false)) ok.store(false);
      });
    if (gw) backward_weight_by_channel(j, ok);
  }
  TORCH_CHECK(ok.load(), "mam_conv2d_backward: argmax/argmin contain indices outside [0, ", j.K, ")");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_common(const char* op, const at::Tensor& input,
                                                              const at::Tensor& weight,
                                                              const std::optional<at::Tensor>& bias_opt,
                                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                                              at::IntArrayRef dilation, int64_t groups, bool track) {
  const ConvShape s = check_conv_args(op, input, weight, bias_opt, stride, padding, dilation, groups);
  const at::ScalarType ct = compute_type(input.scalar_type());
  const at::Tensor x = input.to(ct).contiguous();
  const at::Tensor w = weight.to(ct).contiguous();
  const at::Tensor b = compute_bias(bias_opt, ct);
  ForwardOutputs o(s.out_sizes(), x.options(), track);
  if (s.N > 0 && s.C_out > 0) {
    with_compute_type(ct, [&](auto zero) {
      forward_cpu<decltype(zero)>(x, w, b, o.out, o.amax_or_null(), o.amin_or_null(), s);
    });
  }
  return {o.out.to(input.scalar_type()), o.amax, o.amin};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mam_conv2d_forward_cpu(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return forward_common("mam_conv2d_forward", input, weight, bias, stride, padding, dilation, groups, true);
}

at::Tensor mam_conv2d_inference_cpu(const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return std::get<0>(
      forward_common("mam_conv2d_inference", input, weight, bias, stride, padding, dilation, groups, false));
}

std::tuple<at::Tensor, at::Tensor> mam_conv2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                                           const at::Tensor& weight, const at::Tensor& argmax,
                                                           const at::Tensor& argmin, at::IntArrayRef stride,
                                                           at::IntArrayRef padding, at::IntArrayRef dilation,
                                                           int64_t groups, std::array<bool, 2> mask) {
  constexpr const char* op = "mam_conv2d_backward";
  const ConvShape s =
      check_conv_backward_args(op, grad_output, input, weight, argmax, argmin, stride, padding, dilation, groups);
  const at::ScalarType ct = compute_type(input.scalar_type());
  const at::Tensor g = grad_output.to(ct).contiguous();
  const at::Tensor x = input.to(ct).contiguous();
  const at::Tensor w = weight.to(ct).contiguous();
  const at::Tensor am = argmax.contiguous();
  const at::Tensor an = argmin.contiguous();
  at::Tensor gx, gw;
  if (mask[0]) gx = at::zeros(x.sizes(), x.options());
  if (mask[1]) gw = at::zeros(w.sizes(), w.options());
  if (s.N > 0 && s.C_out > 0 && (mask[0] || mask[1])) {
    with_compute_type(ct, [&](auto zero) {
      backward_cpu<decltype(zero)>(g, x, w, am, an, mask[0] ? &gx : nullptr, mask[1] ? &gw : nullptr, s);
    });
  }
  gx = mask[0] ? gx.to(input.scalar_type()) : at::empty({0}, input.options());
  gw = mask[1] ? gw.to(input.scalar_type()) : at::empty({0}, input.options());
  return {gx, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(mamext, CPU, m) {
  m.impl("mam_conv2d_forward", &mam_conv2d_forward_cpu);
  m.impl("mam_conv2d_inference", &mam_conv2d_inference_cpu);
  m.impl("mam_conv2d_backward", &mam_conv2d_backward_cpu);
}

}  // namespace mamext
