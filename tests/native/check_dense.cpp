// Dense MAM kernels (csrc/ops/cpu/simd/mam_linear_simd.cpp) of every linked ISA
// against a sequential scalar reference: forward through packed panels (with
// and without index tracking), the few-rows forward, the NaN/inf path,
// all_finite, and both backward kernels, bit for bit.
#include "check_common.h"

namespace kcheck {
namespace {

// out[m, n] = max_k p + min_k p (+ bias[n]), p = x[m, k] * w[n, k], folded in
// k order by reference_fold.
template <typename T>
MamRef<T> dense_reference(const std::vector<T>& x, const std::vector<T>& w, const T* bias, int64_t M, int64_t N,
                          int64_t K) {
  MamRef<T> r = mam_ref_of_size<T>(M * N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      reference_fold(r, m * N + n, K, bias ? bias + n : nullptr,
                     [&](int64_t k) { return x[m * K + k] * w[n * K + k]; });
  return r;
}

// The packed-panel forward as the operator glue drives it: one panel per
// panel_width neurons, rows split at a row_block multiple; a K longer than
// k_block in blocks, the running state carried per group of rows.
template <typename T>
void run_panels(const cpu::DenseKernels<T>& kt, const std::vector<T>& x, const std::vector<T>& w, const T* bias,
                int64_t M, int64_t N, int64_t K, T* out, int32_t* amax, int32_t* amin) {
  const int64_t P = kt.panel_width;
  const int64_t kc = K < kt.k_block ? K : kt.k_block;
  const int64_t group = kt.row_block * cpu::kBlockedRowTiles;
  std::vector<T> panel(kc * P), state(2 * group * P);
  std::vector<int32_t> blocks(2 * group * P);
  const int64_t split = M > kt.row_block ? kt.row_block : M;
  for (int64_t n0 = 0; n0 < N; n0 += P) {
    if (kc == K) {
      kt.pack(w.data(), N, K, n0, 0, K, panel.data());
      kt.forward(x.data(), panel.data(), w.data(), bias, out, amax, amin, 0, split, n0, N, K, 0, K, nullptr, nullptr);
      kt.forward(x.data(), panel.data(), w.data(), bias, out, amax, amin, split, M, n0, N, K, 0, K, nullptr, nullptr);
      continue;
    }
    for (int64_t g0 = 0; g0 < M; g0 += group)
      for (int64_t k0 = 0; k0 < K; k0 += kc) {
        const int64_t k1 = k0 + kc < K ? k0 + kc : K;
        kt.pack(w.data(), N, K, n0, k0, k1, panel.data());
        kt.forward(x.data(), panel.data(), w.data(), bias, out, amax, amin, g0, g0 + group < M ? g0 + group : M, n0,
                   N, K, k0, k1, state.data(), blocks.data());
      }
  }
}

template <typename T>
void check_forward(const Isa& isa, Data d, const std::vector<T>& x, const std::vector<T>& w, const T* bias,
                   const MamRef<T>& ref, int64_t M, int64_t N, int64_t K) {
  const auto& kt = dense_of<T>(isa);
  const int64_t MN = M * N;
  std::vector<T> out(MN);
  std::vector<int32_t> amax(MN), amin(MN);
  auto expect = [&](const char* kernel, bool indices) {
    const auto what = label(isa, kernel, type_name<T>(), d, M, N, K);
    expect_equal(what + " out", out.data(), ref.out.data(), MN);
    if (indices) {
      expect_equal(what + " argmax", amax.data(), ref.amax.data(), MN);
      expect_equal(what + " argmin", amin.data(), ref.amin.data(), MN);
    }
  };
  bool finite = true;
  for (T v : x) finite &= std::isfinite(v);
  for (T v : w) finite &= std::isfinite(v);
  expect_true(label(isa, "all_finite", type_name<T>(), d, M, N, K),
              (kt.all_finite(x.data(), M * K) && kt.all_finite(w.data(), N * K)) == finite);
  if (!finite) {
    kt.forward_slow(x.data(), w.data(), bias, out.data(), amax.data(), amin.data(), 0, M, N, K);
    expect("forward_slow", true);
    return;
  }
  run_panels(kt, x, w, bias, M, N, K, out.data(), amax.data(), amin.data());
  expect("forward+indices", true);
  run_panels<T>(kt, x, w, bias, M, N, K, out.data(), nullptr, nullptr);
  expect("forward", false);
  const int64_t half = N / 2;
  kt.forward_rows(x.data(), w.data(), bias, out.data(), amax.data(), amin.data(), M, 0, half, N, K);
  kt.forward_rows(x.data(), w.data(), bias, out.data(), amax.data(), amin.data(), M, half, N, N, K);
  expect("forward_rows+indices", true);
  kt.forward_rows(x.data(), w.data(), bias, out.data(), nullptr, nullptr, M, 0, N, N, K);
  expect("forward_rows", false);
}

// gx[m, k] = sum_n g[m, n] w[n, k] ([k == amax] + [k == amin]) and gw likewise,
// accumulated in n (m) order, the argmax term first.
template <typename T>
void check_backward(const Isa& isa, Data d, const std::vector<T>& x, const std::vector<T>& w,
                    const MamRef<T>& ref, int64_t M, int64_t N, int64_t K) {
  const auto& kt = dense_of<T>(isa);
  const auto g = make<T>(d == Data::Ties ? Data::Ties : Data::Random, M * N);
  std::vector<T> gx_ref(M * K, T(0)), gw_ref(N * K, T(0)), gx(M * K), gw(N * K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const int64_t a = ref.amax[m * N + n], b = ref.amin[m * N + n];
      gx_ref[m * K + a] += g[m * N + n] * w[n * K + a];
      gx_ref[m * K + b] += g[m * N + n] * w[n * K + b];
      gw_ref[n * K + a] += g[m * N + n] * x[m * K + a];
      gw_ref[n * K + b] += g[m * N + n] * x[m * K + b];
    }
  const auto what = label(isa, "backward", type_name<T>(), d, M, N, K);
  expect_true(what + " input ok", kt.backward_input(g.data(), w.data(), ref.amax.data(), ref.amin.data(), gx.data(), 0,
                                                    M, N, K));
  expect_equal(what + " grad_input", gx.data(), gx_ref.data(), M * K);
  expect_true(what + " weight ok", kt.backward_weight(g.data(), x.data(), ref.amax.data(), ref.amin.data(),
                                                      gw.data(), 0, N, M, N, K));
  expect_equal(what + " grad_weight", gw.data(), gw_ref.data(), N * K);
  auto bad = ref.amax;
  bad[(M * N) / 2] = static_cast<int32_t>(K);  // out of range: reported, never written
  expect_true(what + " bad index refused",
              !kt.backward_input(g.data(), w.data(), bad.data(), ref.amin.data(), gx.data(), 0, M, N, K) &&
                  !kt.backward_weight(g.data(), x.data(), bad.data(), ref.amin.data(), gw.data(), 0, N, M, N, K));
}

template <typename T>
void check_case(const std::vector<Isa>& isas, Data d, int64_t M, int64_t N, int64_t K, bool with_bias) {
  const auto x = make<T>(d, M * K, true);
  const auto w = make<T>(d, N * K, false);
  const auto b = make<T>(Data::Random, N);
  const T* bias = with_bias ? b.data() : nullptr;
  const auto ref = dense_reference(x, w, bias, M, N, K);
  for (const auto& isa : isas) {
    check_forward(isa, d, x, w, bias, ref, M, N, K);
    if (d != Data::NonFinite) check_backward(isa, d, x, w, ref, M, N, K);
  }
}

template <typename T>
void check_type(const std::vector<Isa>& isas) {
  // K: 1, below/between/above every vector width and the 16-step index block,
  // and one large K; M and N off every tile size.
  const int64_t shapes[][3] = {{1, 1, 1}, {2, 3, 5}, {5, 7, 17}, {9, 13, 33}, {13, 29, 67}, {7, 5, 130}};
  for (Data d : {Data::Random, Data::Ties, Data::Negative, Data::Zeros, Data::NonFinite})
    for (const auto& s : shapes) {
      check_case<T>(isas, d, s[0], s[1], s[2], false);  // a bias would hide the sign of a zero
      check_case<T>(isas, d, s[0], s[1], s[2], true);
    }
  check_case<T>(isas, Data::Random, 9, 13, 70000, true);
  check_case<T>(isas, Data::Ties, 3, 7, 70000, false);
  check_case<T>(isas, Data::Zeros, 3, 7, 70000, false);
}

}  // namespace

void check_dense_all(const std::vector<Isa>& isas) {
  check_type<float>(isas);
  check_type<double>(isas);
}

}  // namespace kcheck
