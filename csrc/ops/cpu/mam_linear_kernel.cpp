// CPU implementation of the dense MAM operators: argument checks, dtype
// handling and the split of work across threads. The arithmetic is in the
// per-ISA kernels (simd/mam_linear_simd.cpp), chosen through cpu::kernels().
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <tuple>

#include "common/aligned_scratch.h"
#include "common/compute_type.h"
#include "ops/cpu/dense_glue.h"
#include "ops/cpu/simd/mam_linear_simd.h"
#include "ops/mam_linear.h"

namespace mamext {
namespace cpu {

const KernelTable& kernels() {
  switch (active_capability()) {
#if defined(__x86_64__) || defined(_M_X64)
    case Capability::AVX512: return avx512::kernel_table();
    case Capability::AVX2: return avx2::kernel_table();
#elif defined(__aarch64__)
    case Capability::NEON: return neon::kernel_table();
#endif
    default: return default_isa::kernel_table();
  }
}

}  // namespace cpu

namespace {

// Per-thread, 64-byte aligned scratch for one packed weight panel (and the
// running state of a K-blocked forward); grows as needed up to the size of one
// K block's panel and state (K is split beyond kPanelBlockBytes), and is
// reused across calls.
template <typename T>
T* panel_buffer(size_t bytes) {
  thread_local AlignedScratch buf;
  void* ptr = buf.reserve(bytes);
  TORCH_CHECK(ptr, "mamext: out of memory allocating a ", aligned(bytes), "-byte weight panel");
  return static_cast<T*>(ptr);
}

// Tiles: (panel, chunk of rows), panel-major so that a thread's consecutive
// tiles share one packed panel. Each thread packs the panel it is about to
// use into its own reusable, cache-resident buffer (no N x K temporary, no
// page faults on every call). M is split only when there are too few panels
// to keep every thread busy. A K longer than k_block is split into blocks:
// per group of rows, each block's panel is packed and the running maxima and
// minima are carried from block to block, so the scratch stays bounded.
template <typename T>
void forward_tiles(const T* xp, const T* wp, const T* bp, T* op, int32_t* ap, int32_t* an, int64_t M, int64_t N,
                   int64_t K) {
  const auto& kt = dense_kernels<T>();
  const int64_t P = kt.panel_width;
  const int64_t panels = (N + P - 1) / P;
  if (panels == 0 || M == 0) return;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t rb = kt.row_block;
  int64_t chunks = 1;
  if (panels < 4 * threads) chunks = std::min<int64_t>((4 * threads + panels - 1) / panels, (M + rb - 1) / rb);
  chunks = std::max<int64_t>(chunks, 1);
  int64_t rows_per_chunk = (M + chunks - 1) / chunks;
  rows_per_chunk = (rows_per_chunk + rb - 1) / rb * rb;
  chunks = (M + rows_per_chunk - 1) / rows_per_chunk;
  const int64_t kc = std::min(K, kt.k_block);
  const int64_t group = rb * cpu::kBlockedRowTiles;  // rows sharing a K block's panel
  const size_t panel_bytes = static_cast<size_t>(kc * P) * sizeof(T);
  const size_t state_bytes = kc < K ? static_cast<size_t>(2 * group * P) * (sizeof(T) + sizeof(int32_t)) : 0;
  at::parallel_for(0, panels * chunks, 1, [&](int64_t b, int64_t e) {
    T* panel = panel_buffer<T>(panel_bytes + state_bytes);
    T* state = kc < K ? panel + kc * P : nullptr;
    int32_t* blocks = kc < K ? reinterpret_cast<int32_t*>(state + 2 * group * P) : nullptr;
    int64_t packed = -1;
    for (int64_t t = b; t < e; ++t) {
      const int64_t p = t / chunks, c = t % chunks;
      const int64_t m0 = c * rows_per_chunk, m1 = std::min(M, m0 + rows_per_chunk);
      if (kc == K) {
        if (p != packed) {
          kt.pack(wp, N, K, p * P, 0, K, panel);
          packed = p;
        }
        kt.forward(xp, panel, wp, bp, op, ap, an, m0, m1, p * P, N, K, 0, K, nullptr, nullptr);
        continue;
      }
      for (int64_t g0 = m0; g0 < m1; g0 += group)
        for (int64_t k0 = 0; k0 < K; k0 += kc) {
          const int64_t k1 = std::min(K, k0 + kc);
          kt.pack(wp, N, K, p * P, k0, k1, panel);
          kt.forward(xp, panel, wp, bp, op, ap, an, g0, std::min(m1, g0 + group), p * P, N, K, k0, k1, state,
                     blocks);
        }
    }
  });
}

template <typename T>
void forward_cpu(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& out,
                 at::Tensor* amax, at::Tensor* amin, int64_t M, int64_t N, int64_t K) {
  const auto& kt = dense_kernels<T>();
  const T* xp = x.data_ptr<T>();
  const T* wp = w.data_ptr<T>();
  const T* bp = bias.defined() ? bias.data_ptr<T>() : nullptr;
  T* op = out.data_ptr<T>();
  int32_t* ap = amax ? amax->data_ptr<int32_t>() : nullptr;
  int32_t* an = amin ? amin->data_ptr<int32_t>() : nullptr;

  // One check of the operands decides between the exact fast path and the
  // NaN-aware scan; the fast path never tests individual products.
  std::atomic<bool> finite{true};
  at::parallel_for(0, M * K, 1 << 16, [&](int64_t b, int64_t e) {
    if (!kt.all_finite(xp + b, e - b)) finite.store(false, std::memory_order_relaxed);
  });
  if (finite.load())
    at::parallel_for(0, N * K, 1 << 16, [&](int64_t b, int64_t e) {
      if (!kt.all_finite(wp + b, e - b)) finite.store(false, std::memory_order_relaxed);
    });
  if (!finite.load()) {
    at::parallel_for(0, M, 1, [&](int64_t b, int64_t e) { kt.forward_slow(xp, wp, bp, op, ap, an, b, e, N, K); });
    return;
  }

  if (M < cpu::kRowMajorMaxRows) {
    at::parallel_for(0, N, 16, [&](int64_t b, int64_t e) { kt.forward_rows(xp, wp, bp, op, ap, an, M, b, e, N, K); });
    return;
  }

  forward_tiles<T>(xp, wp, bp, op, ap, an, M, N, K);
}

template <typename T>
void backward_cpu(const at::Tensor& g, const at::Tensor& x, const at::Tensor& w, const at::Tensor& amax,
                  const at::Tensor& amin, at::Tensor* gx, at::Tensor* gw, int64_t M, int64_t N, int64_t K) {
  const auto& kt = dense_kernels<T>();
  const T* gp = g.data_ptr<T>();
  const int32_t* ap = amax.data_ptr<int32_t>();
  const int32_t* an = amin.data_ptr<int32_t>();
  std::atomic<bool> ok{true};
  // Deterministic: each output row is owned by one thread, no atomics.
  if (gx) {
    T* out = gx->data_ptr<T>();
    const T* wp = w.data_ptr<T>();
    at::parallel_for(0, M, 1, [&](int64_t b, int64_t e) {
      if (!kt.backward_input(gp, wp, ap, an, out, b, e, N, K)) ok.store(false);
    });
  }
  if (gw) {
    T* out = gw->data_ptr<T>();
    const T* xp = x.data_ptr<T>();
    at::parallel_for(0, N, 16, [&](int64_t b, int64_t e) {
      if (!kt.backward_weight(gp, xp, ap, an, out, b, e, M, N, K)) ok.store(false);
    });
  }
  TORCH_CHECK(ok.load(), "mam_linear_backward: argmax/argmin contain indices outside [0, ", K, ")");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_common(const char* op, const at::Tensor& input,
                                                              const at::Tensor& weight,
                                                              const std::optional<at::Tensor>& bias_opt,
                                                              bool track) {
  const DenseShape s = check_dense_args(op, input, weight, bias_opt);
  const at::ScalarType ct = compute_type(input.scalar_type());
  const at::Tensor x = input.reshape({s.M, s.K}).to(ct).contiguous();
  const at::Tensor w = weight.to(ct).contiguous();
  const at::Tensor b = compute_bias(bias_opt, ct);
  ForwardOutputs o({s.M, s.N}, x.options(), track);
  if (s.M > 0 && s.N > 0) {
    with_compute_type(ct, [&](auto zero) {
      forward_cpu<decltype(zero)>(x, w, b, o.out, o.amax_or_null(), o.amin_or_null(), s.M, s.N, s.K);
    });
  }
  at::Tensor out = o.out.to(input.scalar_type()).view(s.out_sizes);
  if (track) return {out, o.amax.view(s.out_sizes), o.amin.view(s.out_sizes)};
  return {out, o.amax, o.amin};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mam_linear_forward_cpu(const at::Tensor& input,
                                                                      const at::Tensor& weight,
                                                                      const std::optional<at::Tensor>& bias) {
  return forward_common("mam_linear_forward", input, weight, bias, true);
}

at::Tensor mam_linear_inference_cpu(const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias) {
  return std::get<0>(forward_common("mam_linear_inference", input, weight, bias, false));
}

std::tuple<at::Tensor, at::Tensor> mam_linear_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                                           const at::Tensor& weight, const at::Tensor& argmax,
                                                           const at::Tensor& argmin, std::array<bool, 2> mask) {
  constexpr const char* op = "mam_linear_backward";
  const DenseShape s = check_backward_args(op, grad_output, input, weight, argmax, argmin);
  const at::ScalarType ct = compute_type(input.scalar_type());
  const at::Tensor g = grad_output.reshape({s.M, s.N}).to(ct).contiguous();
  const at::Tensor x = input.reshape({s.M, s.K}).to(ct).contiguous();
  const at::Tensor w = weight.to(ct).contiguous();
  const at::Tensor am = argmax.reshape({s.M, s.N}).contiguous();
  const at::Tensor an = argmin.reshape({s.M, s.N}).contiguous();
  at::Tensor gx, gw;
  if (mask[0]) gx = at::empty({s.M, s.K}, x.options());
  if (mask[1]) gw = at::empty({s.N, s.K}, x.options());
  if (mask[1] && s.M == 0) gw.zero_();
  if (s.M > 0 && (mask[0] || mask[1])) {
    with_compute_type(ct, [&](auto zero) {
      backward_cpu<decltype(zero)>(g, x, w, am, an, mask[0] ? &gx : nullptr, mask[1] ? &gw : nullptr, s.M, s.N,
                                   s.K);
    });
  }
  gx = mask[0] ? gx.to(input.scalar_type()).view(input.sizes()) : at::empty({0}, input.options());
  gw = mask[1] ? gw.to(input.scalar_type()) : at::empty({0}, input.options());
  return {gx, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(mamext, CPU, m) {
  m.impl("mam_linear_forward", &mam_linear_forward_cpu);
  m.impl("mam_linear_inference", &mam_linear_inference_cpu);
  m.impl("mam_linear_backward", &mam_linear_backward_cpu);
}

}  // namespace mamext
