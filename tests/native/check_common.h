// Shared pieces of the kernel-level check (tests/native/kernel_check.cpp):
// the linked ISA tables, bit-exact comparison, input generators.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ops/cpu/simd/mam_conv2d_simd.h"
#include "ops/cpu/simd/mam_linear_simd.h"
#include "ops/cpu/simd/packed_linear_simd.h"

namespace kcheck {

namespace cpu = mamext::cpu;

struct Isa {
  const char* name;
  const cpu::KernelTable* dense;
  const cpu::PackedKernelTable* packed;
  const cpu::ConvKernelTable* conv;
  // The x86 gather paths of the packed tiny-batch float kernels reduce lanes
  // in a tree, so a zero result may carry either sign (documented there).
  bool packed_rows_zero_sign;
};

// The tables built into this program that the CPU can run, default first.
std::vector<Isa> linked_isas();

// A reference forward's outputs and int32 argmax/argmin, n elements each.
template <typename T>
struct MamRef {
  std::vector<T> out;
  std::vector<int32_t> amax, amin;
};
template <typename T>
MamRef<T> mam_ref_of_size(int64_t n) {
  return {std::vector<T>(n), std::vector<int32_t>(n), std::vector<int32_t>(n)};
}

// Stores at element e of r max_k p + min_k p (+ *bias when bias is not null)
// over the products p = product(k), k = 0 .. K - 1 in order: a later product
// wins only when strictly greater (smaller), so ties, +0 against -0 included,
// keep the lowest k; the first NaN product makes max, min and both indices
// its own.
template <typename T, typename Product>
void reference_fold(MamRef<T>& r, int64_t e, int64_t K, const T* bias, Product product) {
  T mx = product(0), mn = mx;
  int64_t ia = 0, ib = 0;
  for (int64_t k = 1; k < K && mx == mx; ++k) {
    const T p = product(k);
    if (p != p) {
      mx = mn = p;
      ia = ib = k;
    } else if (p > mx) {
      mx = p;
      ia = k;
    } else if (p < mn) {
      mn = p;
      ib = k;
    }
  }
  T v = mx + mn;
  if (bias) v = v + *bias;
  r.out[e] = v;
  r.amax[e] = static_cast<int32_t>(ia);
  r.amin[e] = static_cast<int32_t>(ib);
}

// The float (T = float) or double entry of a per-dtype pair of kernels.
template <typename T, typename F32, typename F64>
const auto& for_dtype(const F32& f32, const F64& f64) {
  if constexpr (sizeof(T) == 4)
    return f32;
  else
    return f64;
}
// An ISA's dense, packed float and convolution kernels for T.
template <typename T>
const cpu::DenseKernels<T>& dense_of(const Isa& isa) {
  return for_dtype<T>(isa.dense->dense_f32, isa.dense->dense_f64);
}
template <typename T>
const cpu::PackedFloatKernels<T>& packed_of(const Isa& isa) {
  return for_dtype<T>(isa.packed->f32, isa.packed->f64);
}
template <typename T>
const cpu::ConvKernels<T>& conv_of(const Isa& isa) {
  return for_dtype<T>(isa.conv->f32, isa.conv->f64);
}

inline int64_t g_checks = 0, g_failures = 0;
inline std::mt19937_64 g_rng;

template <typename T>
bool same(T a, T b, bool zero_sign) {
  if (a != a || b != b) return a != a && b != b;  // NaN payloads may differ
  if (!zero_sign) return a == b;
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}
inline bool same(int32_t a, int32_t b, bool) { return a == b; }

// got[i] and want[i] agree for every i: same bits (or both NaN); with
// zero_sign false, +0 and -0 also agree.
template <typename T>
void expect_equal(const std::string& what, const T* got, const T* want, int64_t n, bool zero_sign = true) {
  ++g_checks;
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (same(got[i], want[i], zero_sign)) continue;
    if (bad++ < 3)
      std::printf("FAIL %s: element %lld: got %.17g, want %.17g\n", what.c_str(), static_cast<long long>(i),
                  static_cast<double>(got[i]), static_cast<double>(want[i]));
  }
  if (bad) {
    ++g_failures;
    std::printf("FAIL %s: %lld of %lld elements differ\n", what.c_str(), static_cast<long long>(bad),
                static_cast<long long>(n));
  }
}

inline void expect_true(const std::string& what, bool ok) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}

// Random: normal values. Ties: small integers with +0 and -0, so equal
// products (and zero products of both signs) are everywhere. Negative: all
// values of one sign (`positive`), |v| >= 0.5, so pairing a positive x with a
// negative w makes every product negative. Zeros: mostly +0 and -0, the rest
// like Negative, so maxima (and often minima) are zeros and the sign of the
// first extreme product decides the result. NonFinite: normal values with NaN
// and +-inf sprinkled in.
enum class Data { Random, Ties, Negative, Zeros, NonFinite };

inline const char* data_name(Data d) {
  switch (d) {
    case Data::Random: return "random";
    case Data::Ties: return "ties";
    case Data::Negative: return "negative";
    case Data::Zeros: return "zeros";
    default: return "nonfinite";
  }
}

template <typename T>
std::vector<T> make(Data d, int64_t n, bool positive = true) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_int_distribution<int> small(-2, 2), coin(0, 1), pick(0, 39);
  std::vector<T> v(static_cast<size_t>(n));
  for (auto& e : v) {
    if (d == Data::Random) {
      e = static_cast<T>(normal(g_rng));
    } else if (d == Data::Ties) {
      const int s = small(g_rng);
      e = s == 0 ? (coin(g_rng) ? T(-0.0) : T(0.0)) : static_cast<T>(s);
    } else if (d == Data::Negative || (d == Data::Zeros && pick(g_rng) < 2)) {
      const double m = 0.5 + std::fabs(normal(g_rng));
      e = static_cast<T>(positive ? m : -m);
    } else if (d == Data::Zeros) {
      e = coin(g_rng) ? T(-0.0) : T(0.0);
    } else {
      const int p = pick(g_rng);
      e = p == 0 ? T(NAN) : p == 1 ? T(INFINITY) : p == 2 ? T(-INFINITY) : static_cast<T>(normal(g_rng));
    }
  }
  return v;
}

inline std::string label(const Isa& isa, const char* kernel, const char* type, Data d, int64_t M, int64_t N,
                         int64_t K) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "[%s] %s<%s> %s M=%lld N=%lld K=%lld", isa.name, kernel, type, data_name(d),
                static_cast<long long>(M), static_cast<long long>(N), static_cast<long long>(K));
  return buf;
}

template <typename T>
constexpr const char* type_name() {
  return sizeof(T) == 4 ? "float" : "double";
}

// Packed (CSR per neuron) connectivity: row 0 empty, row 1 full (all K
// inputs), row 2 a single connection, the others kept with probability
// `density`; indices strictly increasing within a row.
struct Csr {
  std::vector<int64_t> off;
  std::vector<int32_t> idx;
};

inline Csr make_csr(int64_t N, int64_t K, double density) {
  std::bernoulli_distribution keep(density);
  std::uniform_int_distribution<int64_t> any(0, K - 1);
  Csr c{{0}, {}};
  for (int64_t n = 0; n < N; ++n) {
    if (n == 2) {
      c.idx.push_back(static_cast<int32_t>(any(g_rng)));
    } else if (n != 0) {
      for (int64_t k = 0; k < K; ++k)
        if (n == 1 || keep(g_rng)) c.idx.push_back(static_cast<int32_t>(k));
    }
    c.off.push_back(static_cast<int64_t>(c.idx.size()));
  }
  return c;
}

// The indices as the element type of index kind ik (uint8, int16, int32), as
// raw bytes, or empty when K does not fit that type.
inline std::vector<uint8_t> index_bytes(const Csr& c, int ik, int64_t K) {
  const int64_t limit = ik == 0 ? 256 : ik == 1 ? 32768 : (int64_t(1) << 31);
  if (K > limit) return {};
  const size_t esz = ik == 0 ? 1 : ik == 1 ? 2 : 4;
  std::vector<uint8_t> out(c.idx.size() * esz + 64);  // slack: whole-vector index reads
  for (size_t j = 0; j < c.idx.size(); ++j) {
    const int32_t v = c.idx[j];
    if (ik == 0) out[j] = static_cast<uint8_t>(v);
    if (ik == 1) { const int16_t s = static_cast<int16_t>(v); std::memcpy(&out[j * 2], &s, 2); }
    if (ik == 2) std::memcpy(&out[j * 4], &v, 4);
  }
  return out;
}

void check_dense_all(const std::vector<Isa>& isas);
void check_packed_all(const std::vector<Isa>& isas);
void check_int8_all(const std::vector<Isa>& isas);
void check_conv_all(const std::vector<Isa>& isas);

}  // namespace kcheck
