// Packed int8 kernels (csrc/ops/cpu/simd/packed_linear_simd.cpp: quantize, panel, tile,
// rows) of every linked ISA against a scalar reference: the codes and scales
// bit for bit, then exact integer max + min (or sum) scaled with the same
// single roundings.
#include "check_common.h"

namespace kcheck {
namespace {

// Per sample: amax = max |x|; a non-finite input gives scale NaN and zero
// codes, amax < 1e-30 scale 0 and zero codes; otherwise
// q = round-half-even(clamp(x * (127 / amax), +-127)), scale = amax / 127.
void quantize_reference(const std::vector<float>& x, int64_t M, int64_t K, std::vector<int32_t>& q,
                        std::vector<float>& sx) {
  for (int64_t m = 0; m < M; ++m) {
    float amax = 0.0f;
    bool bad = false;
    for (int64_t k = 0; k < K; ++k) {
      bad |= !std::isfinite(x[m * K + k]);
      amax = std::fabs(x[m * K + k]) > amax ? std::fabs(x[m * K + k]) : amax;
    }
    const bool zero = bad || amax < 1e-30f;
    const float inv = 127.0f / amax;
    for (int64_t k = 0; k < K; ++k) {
      const float v = std::fmin(std::fmax(x[m * K + k] * inv, -127.0f), 127.0f);
      q[m * K + k] = zero ? 0 : static_cast<int32_t>(std::nearbyint(v));
    }
    sx[m] = bad ? NAN : zero ? 0.0f : amax / 127.0f;
  }
}

std::vector<float> int8_reference(const std::vector<int32_t>& q, const std::vector<float>& sx, const Csr& c,
                                  const std::vector<int8_t>& val, const std::vector<float>& ws, const float* bias,
                                  bool mam, int64_t M, int64_t N, int64_t K) {
  std::vector<float> out(M * N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const int64_t j0 = c.off[n], j1 = c.off[n + 1];
      const bool full = j1 - j0 == K;
      int32_t mx = 0, mn = 0, acc = 0;
      for (int64_t j = j0; j < j1; ++j) {
        const int32_t p = int32_t(val[j]) * q[m * K + c.idx[j]];
        if (j == j0 && full) mx = mn = p;
        mx = p > mx ? p : mx;
        mn = p < mn ? p : mn;
        acc += p;
      }
      const float scale = ws[n] * sx[m];
      float v = static_cast<float>(mam ? mx + mn : acc) * scale;
      if (bias) v = v + bias[n];
      out[m * N + n] = v;
    }
  return out;
}

void check_layer(const std::vector<Isa>& isas, Data d, int64_t M, int64_t N, int64_t K, double density) {
  auto x = make<float>(d, M * K, true);
  if (M > 2) std::fill(x.begin() + K, x.begin() + 2 * K, 0.0f);  // an all-zero sample: scale 0
  std::vector<int32_t> q(M * K), qk(M * K);
  std::vector<float> sx(M), sxk(M);
  quantize_reference(x, M, K, q, sx);
  const Csr c = make_csr(N, K, density);
  std::uniform_int_distribution<int> code(d == Data::Ties ? -2 : -127, d == Data::Ties ? 2 : 127);
  std::vector<int8_t> val(c.idx.size());
  for (auto& v : val) v = static_cast<int8_t>(d == Data::Negative ? -std::abs(code(g_rng)) : code(g_rng));
  std::vector<float> ws(N);
  for (auto& w : ws) w = 0.001f + std::fabs(make<float>(Data::Random, 1)[0]);
  const auto b = make<float>(Data::Random, N);
  for (const auto& isa : isas) {
    const auto& kt = isa.packed->i8;
    const auto what = label(isa, "int8", "float", d, M, N, K);
    kt.quantize(x.data(), K, qk.data(), sxk.data(), 0, M);
    expect_equal(what + " codes", qk.data(), q.data(), M * K);
    expect_equal(what + " scales", sxk.data(), sx.data(), M);
    const int64_t pw = kt.tile_batch, split = N > kt.tile_neurons ? kt.tile_neurons : N;
    std::vector<int32_t> panel(K * pw);
    std::vector<float> out(M * N);
    for (int mam = 0; mam < 2; ++mam)
      for (int ik = 0; ik < 3; ++ik) {
        const auto idx = index_bytes(c, ik, K);
        if (idx.empty()) continue;
        const float* bias = (N + mam) % 2 ? b.data() : nullptr;
        const auto ref = int8_reference(q, sx, c, val, ws, bias, mam, M, N, K);
        const auto tag = what + (mam ? " mam" : " sum") + " index" + std::to_string(ik);
        kt.rows[mam][ik](q.data(), K, val.data(), idx.data(), c.off.data(), ws.data(), bias, sx.data(), out.data(),
                         N, 0, N, 0, M);
        expect_equal(tag + " rows", out.data(), ref.data(), M * N);
        for (int64_t b0 = 0; b0 < M; b0 += pw) {
          const int64_t nb = M - b0 < pw ? M - b0 : pw;
          kt.panel(&q[b0 * K], K, nb, pw, panel.data());
          for (const auto& [n0, n1] : {std::pair<int64_t, int64_t>{0, split}, {split, N}})
            kt.tile[mam][ik](panel.data(), pw, nb, val.data(), idx.data(), c.off.data(), ws.data(), bias, &sx[b0], K,
                             &out[b0 * N], N, n0, n1);
        }
        expect_equal(tag + " tile", out.data(), ref.data(), M * N);
      }
  }
}

}  // namespace

void check_int8_all(const std::vector<Isa>& isas) {
  const int64_t shapes[][3] = {{1, 5, 1}, {3, 7, 5}, {37, 70, 33}, {20, 9, 300}, {6, 11, 17}};
  for (Data d : {Data::Random, Data::Ties, Data::Negative, Data::Zeros, Data::NonFinite})
    for (const auto& s : shapes) {
      check_layer(isas, d, s[0], s[1], s[2], 0.4);
      check_layer(isas, d, s[0], s[1], s[2], 0.95);
    }
  check_layer(isas, Data::Random, 20, 9, 70000, 0.5);
}

}  // namespace kcheck
