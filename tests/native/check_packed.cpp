// Packed float kernels (csrc/ops/cpu/simd/packed_linear_simd.cpp: panel, tile,
// tile_cols, rows, rows_checked) of every linked ISA against a sequential
// scalar reference, for MAM and sum rows and every index type K allows.
#include "check_common.h"

namespace kcheck {
namespace {

// The dense layer's result with pruned weights exactly 0: a pruned row has the
// candidate 0 for both max and min (the scan starts there), a full row starts
// at its first product; products in connection order. Non-finite data: NaN
// when any kept product is NaN or a non-finite input meets a pruned weight.
template <typename T>
std::vector<T> packed_reference(const std::vector<T>& x, const Csr& c, const std::vector<T>& val, const T* bias,
                                bool mam, int64_t M, int64_t N, int64_t K) {
  std::vector<T> out(M * N);
  for (int64_t m = 0; m < M; ++m) {
    const T* xr = &x[m * K];
    int64_t bad = 0;
    for (int64_t k = 0; k < K; ++k) bad += !std::isfinite(xr[k]);
    for (int64_t n = 0; n < N; ++n) {
      int64_t j = c.off[n];
      const int64_t j1 = c.off[n + 1];
      const bool pruned = j1 - j < K;
      T mx = T(0), mn = T(0), acc = T(0);
      if (mam && !pruned) mx = mn = val[j] * xr[c.idx[j]];
      int64_t seen = 0;
      bool nan = false;
      for (j = c.off[n]; j < j1; ++j) {
        const T xv = xr[c.idx[j]];
        const T p = val[j] * xv;
        seen += !std::isfinite(xv);
        nan |= p != p;
        if (j == c.off[n] && mam && !pruned) continue;  // the starting product
        if (p > mx) mx = p;
        if (p < mn) mn = p;
        acc = acc + p;
      }
      T v = mam ? mx + mn : acc;
      if (nan || (pruned && seen != bad)) v = T(NAN);
      if (bias) v = v + bias[n];
      out[m * N + n] = v;
    }
  }
  return out;
}

struct Layer {
  Csr c;
  std::vector<uint8_t> idx;
};

// The panel tiles as the glue drives them (panel per sample block, neurons
// split at a tile_neurons multiple), then the column-major variant.
template <typename T>
void check_tiles(const Isa& isa, const std::string& what, const std::vector<T>& x, const Layer& l,
                 const std::vector<T>& val, const T* bias, int mam, int ik, const std::vector<T>& ref, int64_t M,
                 int64_t N, int64_t K) {
  const auto& kt = packed_of<T>(isa);
  const int64_t pw = kt.tile_batch, split = N > kt.tile_neurons ? kt.tile_neurons : N;
  std::vector<T> panel(K * pw), out(M * N), xt(K * M), out_t(N * M), back(M * N);
  for (int64_t b0 = 0; b0 < M; b0 += pw) {
    const int64_t nb = M - b0 < pw ? M - b0 : pw;
    expect_true(what + " panel finite", kt.panel(&x[b0 * K], K, nb, pw, panel.data()));
    kt.tile[mam][ik](panel.data(), pw, nb, val.data(), l.idx.data(), l.c.off.data(), bias, K, &out[b0 * N], N, 0,
                     split);
    kt.tile[mam][ik](panel.data(), pw, nb, val.data(), l.idx.data(), l.c.off.data(), bias, K, &out[b0 * N], N,
                     split, N);
  }
  expect_equal(what + " tile", out.data(), ref.data(), M * N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) xt[k * M + m] = x[m * K + k];
  for (int64_t b0 = 0; b0 < M; b0 += pw)
    kt.tile_cols[mam][ik](xt.data(), M, b0, M - b0 < pw ? M - b0 : pw, val.data(), l.idx.data(), l.c.off.data(),
                          bias, K, out_t.data(), 0, N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) back[m * N + n] = out_t[n * M + m];
  expect_equal(what + " tile_cols", back.data(), ref.data(), M * N);
}

template <typename T>
void check_layer(const std::vector<Isa>& isas, Data d, int64_t M, int64_t N, int64_t K, double density) {
  const auto x = make<T>(d, M * K, true);
  Layer l{make_csr(N, K, density), {}};
  const auto val = make<T>(d == Data::NonFinite ? Data::Random : d, static_cast<int64_t>(l.c.idx.size()), false);
  const auto b = make<T>(Data::Random, N);
  bool finite = true;
  for (T v : x) finite &= std::isfinite(v);
  for (int mam = 0; mam < 2; ++mam) {
    const T* bias = (N + mam) % 2 ? b.data() : nullptr;
    const auto ref = packed_reference(x, l.c, val, bias, mam, M, N, K);
    for (int ik = 0; ik < 3; ++ik) {
      l.idx = index_bytes(l.c, ik, K);
      if (l.idx.empty()) continue;
      for (const auto& isa : isas) {
        const auto& kt = packed_of<T>(isa);
        const auto what = label(isa, mam ? "packed_mam" : "packed_sum", type_name<T>(), d, M, N, K) +
                          " index" + std::to_string(ik);
        std::vector<T> out(M * N);
        kt.rows_checked[mam][ik](x.data(), K, val.data(), l.idx.data(), l.c.off.data(), bias, out.data(), N, 0, N,
                                 0, M);
        expect_equal(what + " rows_checked", out.data(), ref.data(), M * N);
        expect_true(what + " all_finite", kt.all_finite(x.data(), M * K) == finite);
        if (!finite) continue;
        kt.rows[mam][ik](x.data(), K, val.data(), l.idx.data(), l.c.off.data(), bias, out.data(), N, 0, N, 0, M);
        expect_equal(what + " rows", out.data(), ref.data(), M * N, isa.packed_rows_zero_sign || sizeof(T) == 8);
        check_tiles(isa, what, x, l, val, bias, mam, ik, ref, M, N, K);
      }
    }
  }
}

template <typename T>
void check_type(const std::vector<Isa>& isas) {
  const int64_t shapes[][3] = {{1, 5, 1}, {3, 7, 5}, {37, 70, 33}, {20, 9, 300}, {5, 11, 17}};
  for (Data d : {Data::Random, Data::Ties, Data::Negative, Data::Zeros, Data::NonFinite})
    for (const auto& s : shapes) {
      check_layer<T>(isas, d, s[0], s[1], s[2], 0.4);
      check_layer<T>(isas, d, s[0], s[1], s[2], 0.95);
    }
  check_layer<T>(isas, Data::Random, 20, 9, 70000, 0.5);
}

}  // namespace

void check_packed_all(const std::vector<Isa>& isas) {
  check_type<float>(isas);
  check_type<double>(isas);
}

}  // namespace kcheck
