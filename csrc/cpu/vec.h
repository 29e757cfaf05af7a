// Minimal SIMD layer for the per-ISA kernels. Exactly one of
// MAMEXT_ISA_AVX512 / MAMEXT_ISA_AVX2 / MAMEXT_ISA_DEFAULT_ISA is defined by
// the build for each compilation of a *_kernel.cpp file. Everything lives in
// mamext::cpu::MAMEXT_ISA so the three compilations never share a symbol.
//
// Semantics the kernels rely on:
//   max(a, b) / min(a, b) are only used on NaN-free data (NaN inputs take the
//   slow path), so the operand order of vmaxps/vminps does not matter;
//   eq/neq are IEEE comparisons (+0 == -0).
#pragma once

#include <cstdint>
#include <cstring>
#if defined(MAMEXT_ISA_AVX512) || defined(MAMEXT_ISA_AVX2)
#include <immintrin.h>
#endif

namespace mamext::cpu::MAMEXT_ISA {

template <typename T>
struct Vec;

#if defined(MAMEXT_ISA_AVX512)

template <>
struct Vec<float> {
  using R = __m512;
  static constexpr int L = 16;
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static R load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(lanes(n), p); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static R bcast(float v) { return _mm512_set1_ps(v); }
  static R zero() { return _mm512_setzero_ps(); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  static R min(R a, R b) { return _mm512_min_ps(a, b); }
  static uint32_t eq(R a, R b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static uint32_t neq(R a, R b) { return _mm512_cmp_ps_mask(a, b, _CMP_NEQ_UQ); }
  // p[lane] = value for every lane whose bit is set in m.
  static void store_index(int32_t* p, uint32_t m, int32_t value) {
    _mm512_mask_storeu_epi32(p, static_cast<__mmask16>(m), _mm512_set1_epi32(value));
  }
  static __mmask16 lanes(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
};

template <>
struct Vec<double> {
  using R = __m512d;
  static constexpr int L = 8;
  static R load(const double* p) { return _mm512_loadu_pd(p); }
  static R load_n(const double* p, int n) { return _mm512_maskz_loadu_pd(lanes(n), p); }
  static void store(double* p, R v) { _mm512_storeu_pd(p, v); }
  static R bcast(double v) { return _mm512_set1_pd(v); }
  static R zero() { return _mm512_setzero_pd(); }
  static R mul(R a, R b) { return _mm512_mul_pd(a, b); }
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  static R max(R a, R b) { return _mm512_max_pd(a, b); }
  static R min(R a, R b) { return _mm512_min_pd(a, b); }
  static uint32_t eq(R a, R b) { return _mm512_cmp_pd_mask(a, b, _CMP_EQ_OQ); }
  static uint32_t neq(R a, R b) { return _mm512_cmp_pd_mask(a, b, _CMP_NEQ_UQ); }
  static void store_index(int32_t* p, uint32_t m, int32_t value) {
    _mm256_mask_storeu_epi32(p, static_cast<__mmask8>(m), _mm256_set1_epi32(value));
  }
  static __mmask8 lanes(int n) { return static_cast<__mmask8>((1u << n) - 1u); }
};

#elif defined(MAMEXT_ISA_AVX2)

template <>
struct Vec<float> {
  using R = __m256;
  static constexpr int L = 8;
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static R load_n(const float* p, int n) { return _mm256_maskload_ps(p, lanes(n)); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static R bcast(float v) { return _mm256_set1_ps(v); }
  static R zero() { return _mm256_setzero_ps(); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R min(R a, R b) { return _mm256_min_ps(a, b); }
  static uint32_t eq(R a, R b) { return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ))); }
  static uint32_t neq(R a, R b) { return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_NEQ_UQ))); }
  static void store_index(int32_t* p, uint32_t m, int32_t value) {
    const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i sel = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(m)), bits), bits);
    _mm256_maskstore_epi32(p, sel, _mm256_set1_epi32(value));
  }
  static __m256i lanes(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
};

template <>
struct Vec<double> {
  using R = __m256d;
  static constexpr int L = 4;
  static R load(const double* p) { return _mm256_loadu_pd(p); }
  static R load_n(const double* p, int n) { return _mm256_maskload_pd(p, lanes(n)); }
  static void store(double* p, R v) { _mm256_storeu_pd(p, v); }
  static R bcast(double v) { return _mm256_set1_pd(v); }
  static R zero() { return _mm256_setzero_pd(); }
  static R mul(R a, R b) { return _mm256_mul_pd(a, b); }
  static R add(R a, R b) { return _mm256_add_pd(a, b); }
  static R max(R a, R b) { return _mm256_max_pd(a, b); }
  static R min(R a, R b) { return _mm256_min_pd(a, b); }
  static uint32_t eq(R a, R b) { return static_cast<uint32_t>(_mm256_movemask_pd(_mm256_cmp_pd(a, b, _CMP_EQ_OQ))); }
  static uint32_t neq(R a, R b) { return static_cast<uint32_t>(_mm256_movemask_pd(_mm256_cmp_pd(a, b, _CMP_NEQ_UQ))); }
  static void store_index(int32_t* p, uint32_t m, int32_t value) {
    for (int l = 0; l < L; ++l)
      if (m & (1u << l)) p[l] = value;
  }
  static __m256i lanes(int n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  }
};

#else  // portable baseline: fixed-size arrays the compiler maps to SSE2

template <typename T, int N>
struct Pack {
  T v[N];
};

template <typename T, int NL>
struct VecGeneric {
  using R = Pack<T, NL>;
  static constexpr int L = NL;
  static R load(const T* p) { R r; std::memcpy(r.v, p, sizeof(r.v)); return r; }
  static R load_n(const T* p, int n) {
    R r{};
    for (int l = 0; l < n; ++l) r.v[l] = p[l];
    return r;
  }
  static void store(T* p, R a) { std::memcpy(p, a.v, sizeof(a.v)); }
  static R bcast(T x) { R r; for (int l = 0; l < L; ++l) r.v[l] = x; return r; }
  static R zero() { return bcast(T(0)); }
  static R mul(R a, R b) { for (int l = 0; l < L; ++l) a.v[l] *= b.v[l]; return a; }
  static R add(R a, R b) { for (int l = 0; l < L; ++l) a.v[l] += b.v[l]; return a; }
  static R max(R a, R b) { for (int l = 0; l < L; ++l) a.v[l] = a.v[l] < b.v[l] ? b.v[l] : a.v[l]; return a; }
  static R min(R a, R b) { for (int l = 0; l < L; ++l) a.v[l] = b.v[l] < a.v[l] ? b.v[l] : a.v[l]; return a; }
  static uint32_t eq(R a, R b) {
    uint32_t m = 0;
    for (int l = 0; l < L; ++l) m |= static_cast<uint32_t>(a.v[l] == b.v[l]) << l;
    return m;
  }
  static uint32_t neq(R a, R b) { return ~eq(a, b) & ((1u << L) - 1u); }
  static void store_index(int32_t* p, uint32_t m, int32_t value) {
    for (int l = 0; l < L; ++l)
      if (m & (1u << l)) p[l] = value;
  }
};

template <>
struct Vec<float> : VecGeneric<float, 4> {};
template <>
struct Vec<double> : VecGeneric<double, 2> {};

#endif

inline int ctz32(uint32_t v) { return __builtin_ctz(v); }

}  // namespace mamext::cpu::MAMEXT_ISA
