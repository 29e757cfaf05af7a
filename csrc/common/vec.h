// Minimal SIMD layer for the per-ISA kernels. Exactly one of
// MAMEXT_ISA_AVX512 / MAMEXT_ISA_AVX2 / MAMEXT_ISA_NEON / MAMEXT_ISA_DEFAULT_ISA
// is defined by the build for each compilation of an ops/cpu/simd/*_simd.cpp file (the ISA
// list per architecture: cmake/isa.cmake). Everything lives in
// mamext::cpu::MAMEXT_ISA so the compilations never share a symbol.
//
// Semantics the kernels rely on:
//   max(a, b) / min(a, b) follow x86 MAXPS/MINPS on every ISA: the result is a
//   only if a is strictly greater (smaller), else b. Kernels call max(new,
//   running), so a tie (including +0 vs -0) keeps the earlier value: the value
//   of the lowest index, sign of zero included. This is, lane by lane, the
//   fold of common/mam_semantics.h (mamext_max_f32 & co.), which the scalar
//   code calls directly. Only used on NaN-free data;
//   eq/neq are IEEE comparisons (+0 == -0).
#pragma once

#include <cstdint>
#include <cstring>
#if defined(MAMEXT_ISA_AVX512) || defined(MAMEXT_ISA_AVX2)
#include <immintrin.h>
#endif
#if defined(MAMEXT_ISA_NEON)
#include <arm_neon.h>
#endif

namespace mamext::cpu::MAMEXT_ISA {

template <typename T>
struct Vec;
#if defined(MAMEXT_ISA_AVX512) || defined(MAMEXT_ISA_AVX2)
// ---- Tile transposes shared by the AVX2 and AVX-512 builds (256-bit AVX) ----
// 256-bit on purpose: in-lane ymm shuffles issue on two ports (p1, p5) of
// recent Intel cores, zmm shuffles on one (p5), and loading half rows with
// vinsertf128 replaces the lane-crossing stage (the alternatives, unpack +
// permute2f128 8x8 and zmm 16x16, are compared in benchmarks/README.md).
//
// The core: an 8x8 float tile s (stride lds) transposed into registers o[8]
// (o[j] = column j of s).
inline void transpose8x8_regs(const float* s, int64_t lds, __m256 o[8]) {
  auto half = [&](int row, int col) __attribute__((always_inline)) { return _mm_loadu_ps(s + row * lds + col); };
  auto pair = [&](int row, int col) __attribute__((always_inline)) {  // rows row, row + 4
    return _mm256_insertf128_ps(_mm256_castps128_ps256(half(row, col)), half(row + 4, col), 1);
  };
  const __m256 r0 = pair(0, 0), r1 = pair(1, 0), r2 = pair(2, 0), r3 = pair(3, 0);
  const __m256 r4 = pair(0, 4), r5 = pair(1, 4), r6 = pair(2, 4), r7 = pair(3, 4);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  o[0] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  o[1] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  o[2] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  o[3] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  o[4] = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  o[5] = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  o[6] = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  o[7] = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
}
// dst[j * ldd + i] = src[i * lds + j] for two stacked 8x8 tiles, i < 16,
// j < 8: each destination row (16 floats, one
// 64-byte line when aligned) is written by two adjacent stores, so a line
// outside L1 is fetched once and completed at once (writing the halves in
// separate passes would fetch every strided line twice).
inline void transpose16x8_ps(const float* s, int64_t lds, float* d, int64_t ldd) {
  __m256 a[8], b[8];
  transpose8x8_regs(s, lds, a);
  transpose8x8_regs(s + 8 * lds, lds, b);
  for (int j = 0; j < 8; ++j) {
    _mm256_storeu_ps(d + j * ldd, a[j]);
    _mm256_storeu_ps(d + j * ldd + 8, b[j]);
  }
}
inline void transpose4x4_regs(const double* s, int64_t lds, __m256d o[4]) {
  auto half = [&](int row, int col) __attribute__((always_inline)) { return _mm_loadu_pd(s + row * lds + col); };
  auto pair = [&](int row, int col) __attribute__((always_inline)) {  // rows row, row + 2
    return _mm256_insertf128_pd(_mm256_castpd128_pd256(half(row, col)), half(row + 2, col), 1);
  };
  const __m256d r0 = pair(0, 0), r1 = pair(1, 0), r2 = pair(0, 2), r3 = pair(1, 2);
  o[0] = _mm256_unpacklo_pd(r0, r1);
  o[1] = _mm256_unpackhi_pd(r0, r1);
  o[2] = _mm256_unpacklo_pd(r2, r3);
  o[3] = _mm256_unpackhi_pd(r2, r3);
}
inline void transpose8x4_pd(const double* s, int64_t lds, double* d, int64_t ldd) {
  __m256d a[4], b[4];
  transpose4x4_regs(s, lds, a);
  transpose4x4_regs(s + 4 * lds, lds, b);
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_pd(d + j * ldd, a[j]);
    _mm256_storeu_pd(d + j * ldd + 4, b[j]);
  }
}
#endif

#if defined(MAMEXT_ISA_AVX512)

template <>
struct Vec<float> {
  using R = __m512;
  static constexpr int L = 16;
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static R load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(lanes(n), p); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static void store_n(float* p, R v, int n) { _mm512_mask_storeu_ps(p, lanes(n), v); }
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
  // Tile transposes (packed sparse kernels): two stacked TT x TT tiles,
  // dst[j*ldd+i] = src[i*lds+j] for i < 2TT, j < TT.
  static constexpr int TT = 8;
  static void transpose_tile2(const float* s, int64_t lds, float* d, int64_t ldd) { transpose16x8_ps(s, lds, d, ldd); }
};

template <>
struct Vec<double> {
  using R = __m512d;
  static constexpr int L = 8;
  static R load(const double* p) { return _mm512_loadu_pd(p); }
  static R load_n(const double* p, int n) { return _mm512_maskz_loadu_pd(lanes(n), p); }
  static void store(double* p, R v) { _mm512_storeu_pd(p, v); }
  static void store_n(double* p, R v, int n) { _mm512_mask_storeu_pd(p, lanes(n), v); }
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
  static constexpr int TT = 4;
  static void transpose_tile2(const double* s, int64_t lds, double* d, int64_t ldd) { transpose8x4_pd(s, lds, d, ldd); }
};

// int32 lanes (packed int8 kernels): exact integer products, max, min, sums.
template <>
struct Vec<int32_t> {
  using R = __m512i;
  static constexpr int L = 16;
  static R load(const int32_t* p) { return _mm512_loadu_si512(p); }
  static R load_n(const int32_t* p, int n) { return _mm512_maskz_loadu_epi32(static_cast<__mmask16>((1u << n) - 1u), p); }
  static void store(int32_t* p, R v) { _mm512_storeu_si512(p, v); }
  static void store_n(int32_t* p, R v, int n) {
    _mm512_mask_storeu_epi32(p, static_cast<__mmask16>((1u << n) - 1u), v);
  }
  static R bcast(int32_t v) { return _mm512_set1_epi32(v); }
  static R zero() { return _mm512_setzero_si512(); }
  static R mul(R a, R b) { return _mm512_mullo_epi32(a, b); }
  static R add(R a, R b) { return _mm512_add_epi32(a, b); }
  static R max(R a, R b) { return _mm512_max_epi32(a, b); }
  static R min(R a, R b) { return _mm512_min_epi32(a, b); }
};

#elif defined(MAMEXT_ISA_AVX2)

template <>
struct Vec<float> {
  using R = __m256;
  static constexpr int L = 8;
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static R load_n(const float* p, int n) { return _mm256_maskload_ps(p, lanes(n)); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static void store_n(float* p, R v, int n) { _mm256_maskstore_ps(p, lanes(n), v); }
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
  // Tile transposes (packed sparse kernels): two stacked TT x TT tiles,
  // dst[j*ldd+i] = src[i*lds+j] for i < 2TT, j < TT.
  static constexpr int TT = 8;
  static void transpose_tile2(const float* s, int64_t lds, float* d, int64_t ldd) { transpose16x8_ps(s, lds, d, ldd); }
};

template <>
struct Vec<double> {
  using R = __m256d;
  static constexpr int L = 4;
  static R load(const double* p) { return _mm256_loadu_pd(p); }
  static R load_n(const double* p, int n) { return _mm256_maskload_pd(p, lanes(n)); }
  static void store(double* p, R v) { _mm256_storeu_pd(p, v); }
  static void store_n(double* p, R v, int n) { _mm256_maskstore_pd(p, lanes(n), v); }
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
  static constexpr int TT = 4;
  static void transpose_tile2(const double* s, int64_t lds, double* d, int64_t ldd) { transpose8x4_pd(s, lds, d, ldd); }
};

// int32 lanes (packed int8 kernels): exact integer products, max, min, sums.
template <>
struct Vec<int32_t> {
  using R = __m256i;
  static constexpr int L = 8;
  static R load(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static R load_n(const int32_t* p, int n) {
    return _mm256_maskload_epi32(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
  }
  static void store(int32_t* p, R v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static void store_n(int32_t* p, R v, int n) {
    _mm256_maskstore_epi32(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), v);
  }
  static R bcast(int32_t v) { return _mm256_set1_epi32(v); }
  static R zero() { return _mm256_setzero_si256(); }
  static R mul(R a, R b) { return _mm256_mullo_epi32(a, b); }
  static R add(R a, R b) { return _mm256_add_epi32(a, b); }
  static R max(R a, R b) { return _mm256_max_epi32(a, b); }
  static R min(R a, R b) { return _mm256_min_epi32(a, b); }
};

#elif defined(MAMEXT_ISA_NEON)
// ---- AArch64 Advanced SIMD (NEON, 128-bit) ----
// FMAX/FMIN do not follow the rule above (FMAX(+0, -0) is +0 in either order,
// and a NaN operand gives NaN), so max/min are a compare and a bit select:
// a where a > b (a < b), else b -- exactly MAXPS/MINPS for every input.

// The lanes whose bit is set in m (bit l -> lane l), as an all-ones mask.
inline uint32x4_t lane_mask4(uint32_t m) {
  const uint32x4_t bits = {1u, 2u, 4u, 8u};
  return vtstq_u32(vdupq_n_u32(m), bits);
}
// Bit l set where lane l of the all-ones/all-zeros mask is set.
inline uint32_t mask_bits4(uint32x4_t m) {
  const uint32x4_t bits = {1u, 2u, 4u, 8u};
  return vaddvq_u32(vandq_u32(m, bits));
}
inline uint32_t mask_bits2(uint64x2_t m) {
  const uint64x2_t bits = {1u, 2u};
  return static_cast<uint32_t>(vaddvq_u64(vandq_u64(m, bits)));
}
// A 4x4 float tile s (stride lds) transposed into registers o[4] (o[j] =
// column j of s).
inline void transpose4x4_regs(const float* s, int64_t lds, float32x4_t o[4]) {
  const float32x4_t r0 = vld1q_f32(s), r1 = vld1q_f32(s + lds);
  const float32x4_t r2 = vld1q_f32(s + 2 * lds), r3 = vld1q_f32(s + 3 * lds);
  const float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(r0, r1));
  const float64x2_t t1 = vreinterpretq_f64_f32(vtrn2q_f32(r0, r1));
  const float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(r2, r3));
  const float64x2_t t3 = vreinterpretq_f64_f32(vtrn2q_f32(r2, r3));
  o[0] = vreinterpretq_f32_f64(vtrn1q_f64(t0, t2));
  o[1] = vreinterpretq_f32_f64(vtrn1q_f64(t1, t3));
  o[2] = vreinterpretq_f32_f64(vtrn2q_f64(t0, t2));
  o[3] = vreinterpretq_f32_f64(vtrn2q_f64(t1, t3));
}
// dst[j * ldd + i] = src[i * lds + j] for i < 8, j < 4 (two stacked 4x4 tiles).
inline void transpose8x4_ps(const float* s, int64_t lds, float* d, int64_t ldd) {
  float32x4_t a[4], b[4];
  transpose4x4_regs(s, lds, a);
  transpose4x4_regs(s + 4 * lds, lds, b);
  for (int j = 0; j < 4; ++j) {
    vst1q_f32(d + j * ldd, a[j]);
    vst1q_f32(d + j * ldd + 4, b[j]);
  }
}
// dst[j * ldd + i] = src[i * lds + j] for i < 4, j < 2 (two stacked 2x2 tiles).
inline void transpose4x2_pd(const double* s, int64_t lds, double* d, int64_t ldd) {
  const float64x2_t r0 = vld1q_f64(s), r1 = vld1q_f64(s + lds);
  const float64x2_t r2 = vld1q_f64(s + 2 * lds), r3 = vld1q_f64(s + 3 * lds);
  vst1q_f64(d, vtrn1q_f64(r0, r1));
  vst1q_f64(d + 2, vtrn1q_f64(r2, r3));
  vst1q_f64(d + ldd, vtrn2q_f64(r0, r1));
  vst1q_f64(d + ldd + 2, vtrn2q_f64(r2, r3));
}

template <>
struct Vec<float> {
  using R = float32x4_t;
  static constexpr int L = 4;
  static R load(const float* p) { return vld1q_f32(p); }
  static R load_n(const float* p, int n) {
    float t[L] = {};
    std::memcpy(t, p, sizeof(float) * n);
    return vld1q_f32(t);
  }
  static void store(float* p, R v) { vst1q_f32(p, v); }
  static void store_n(float* p, R v, int n) {
    float t[L];
    vst1q_f32(t, v);
    std::memcpy(p, t, sizeof(float) * n);
  }
  static R bcast(float v) { return vdupq_n_f32(v); }
  static R zero() { return vdupq_n_f32(0.0f); }
  static R mul(R a, R b) { return vmulq_f32(a, b); }
  static R add(R a, R b) { return vaddq_f32(a, b); }
  static R max(R a, R b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
  static R min(R a, R b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
  static uint32_t eq(R a, R b) { return mask_bits4(vceqq_f32(a, b)); }
  static uint32_t neq(R a, R b) { return mask_bits4(vceqq_f32(a, b)) ^ 0xFu; }
  static void store_index(int32_t* p, uint32_t m, int32_t value) {
    vst1q_s32(p, vbslq_s32(lane_mask4(m), vdupq_n_s32(value), vld1q_s32(p)));
  }
  // Tile transposes (packed sparse kernels): two stacked TT x TT tiles,
  // dst[j*ldd+i] = src[i*lds+j] for i < 2TT, j < TT.
  static constexpr int TT = 4;
  static void transpose_tile2(const float* s, int64_t lds, float* d, int64_t ldd) { transpose8x4_ps(s, lds, d, ldd); }
};

template <>
struct Vec<double> {
  using R = float64x2_t;
  static constexpr int L = 2;
  static R load(const double* p) { return vld1q_f64(p); }
  static R load_n(const double* p, int n) {
    double t[L] = {};
    std::memcpy(t, p, sizeof(double) * n);
    return vld1q_f64(t);
  }
  static void store(double* p, R v) { vst1q_f64(p, v); }
  static void store_n(double* p, R v, int n) {
    double t[L];
    vst1q_f64(t, v);
    std::memcpy(p, t, sizeof(double) * n);
  }
  static R bcast(double v) { return vdupq_n_f64(v); }
  static R zero() { return vdupq_n_f64(0.0); }
  static R mul(R a, R b) { return vmulq_f64(a, b); }
  static R add(R a, R b) { return vaddq_f64(a, b); }
  static R max(R a, R b) { return vbslq_f64(vcgtq_f64(a, b), a, b); }
  static R min(R a, R b) { return vbslq_f64(vcltq_f64(a, b), a, b); }
  static uint32_t eq(R a, R b) { return mask_bits2(vceqq_f64(a, b)); }
  static uint32_t neq(R a, R b) { return mask_bits2(vceqq_f64(a, b)) ^ 0x3u; }
  static void store_index(int32_t* p, uint32_t m, int32_t value) {
    if (m & 1u) p[0] = value;
    if (m & 2u) p[1] = value;
  }
  static constexpr int TT = 2;
  static void transpose_tile2(const double* s, int64_t lds, double* d, int64_t ldd) { transpose4x2_pd(s, lds, d, ldd); }
};

// int32 lanes (packed int8 kernels): exact integer products, max, min, sums.
template <>
struct Vec<int32_t> {
  using R = int32x4_t;
  static constexpr int L = 4;
  static R load(const int32_t* p) { return vld1q_s32(p); }
  static R load_n(const int32_t* p, int n) {
    int32_t t[L] = {};
    std::memcpy(t, p, sizeof(int32_t) * n);
    return vld1q_s32(t);
  }
  static void store(int32_t* p, R v) { vst1q_s32(p, v); }
  static void store_n(int32_t* p, R v, int n) {
    int32_t t[L];
    vst1q_s32(t, v);
    std::memcpy(p, t, sizeof(int32_t) * n);
  }
  static R bcast(int32_t v) { return vdupq_n_s32(v); }
  static R zero() { return vdupq_n_s32(0); }
  static R mul(R a, R b) { return vmulq_s32(a, b); }
  static R add(R a, R b) { return vaddq_s32(a, b); }
  static R max(R a, R b) { return vmaxq_s32(a, b); }
  static R min(R a, R b) { return vminq_s32(a, b); }
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
  static void store_n(T* p, R a, int n) { std::memcpy(p, a.v, sizeof(T) * n); }
  static R bcast(T x) { R r; for (int l = 0; l < L; ++l) r.v[l] = x; return r; }
  static R zero() { return bcast(T(0)); }
  static R mul(R a, R b) { for (int l = 0; l < L; ++l) a.v[l] *= b.v[l]; return a; }
  static R add(R a, R b) { for (int l = 0; l < L; ++l) a.v[l] += b.v[l]; return a; }
  // Same as x86 MAXPS/MINPS: b unless a is strictly greater (smaller).
  static R max(R a, R b) { for (int l = 0; l < L; ++l) a.v[l] = a.v[l] > b.v[l] ? a.v[l] : b.v[l]; return a; }
  static R min(R a, R b) { for (int l = 0; l < L; ++l) a.v[l] = a.v[l] < b.v[l] ? a.v[l] : b.v[l]; return a; }
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
  // Tile transposes (packed sparse kernels): two stacked TT x TT tiles,
  // dst[j*ldd+i] = src[i*lds+j] for i < 2TT, j < TT.
  static constexpr int TT = 4;
  static void transpose_tile2(const T* s, int64_t lds, T* d, int64_t ldd) {
    for (int i = 0; i < 2 * TT; ++i)
      for (int j = 0; j < TT; ++j) d[j * ldd + i] = s[i * lds + j];
  }
};

template <>
struct Vec<float> : VecGeneric<float, 4> {};
template <>
struct Vec<double> : VecGeneric<double, 2> {};
// int32 lanes (packed int8 kernels); eq/neq/store_index/transpose_tile2 unused.
template <>
struct Vec<int32_t> : VecGeneric<int32_t, 4> {};

#endif

inline int ctz32(uint32_t v) { return __builtin_ctz(v); }

// v * 0 is 0 for every finite v and NaN for NaN and +-inf; four independent
// accumulators keep the adds off the critical path.
template <typename T>
inline bool all_finite(const T* p, int64_t n) {
  using V = Vec<T>;
  constexpr int L = V::L;
  const auto z = V::zero();
  auto a0 = z, a1 = z, a2 = z, a3 = z;
  int64_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    a0 = V::add(a0, V::mul(V::load(p + i), z));
    a1 = V::add(a1, V::mul(V::load(p + i + L), z));
    a2 = V::add(a2, V::mul(V::load(p + i + 2 * L), z));
    a3 = V::add(a3, V::mul(V::load(p + i + 3 * L), z));
  }
  for (; i + L <= n; i += L) a0 = V::add(a0, V::mul(V::load(p + i), z));
  if (i < n) a0 = V::add(a0, V::mul(V::load_n(p + i, static_cast<int>(n - i)), z));
  const auto acc = V::add(V::add(a0, a1), V::add(a2, a3));
  return V::eq(acc, z) == ((1u << L) - 1u);
}


}  // namespace mamext::cpu::MAMEXT_ISA
