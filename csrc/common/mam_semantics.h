/*
 * The MAM reduction rules, one definition for every backend: the CPU kernels
 * (compiled once per ISA), the CUDA kernels, and the C runtime that
 * mamext.export.to_c ships next to the generated network (this very file is
 * installed as package data, so the exported C obeys the same text).
 * docs/semantics.md is the prose version; the tests pin each rule.
 *
 * Plain C99 that also compiles as C++ and CUDA. Everything is `static inline`
 * (internal linkage), so the per-ISA copies of the CPU kernels never share a
 * symbol. MAMEXT_HD adds __host__ __device__ under nvcc.
 *
 * Rules:
 *  - a row's max and min start at its first product; a later product replaces
 *    the running value only when strictly greater (max) or strictly smaller
 *    (min): ties, +0 against -0 included, keep the lowest index;
 *  - a pruned row (fewer kept connections than inputs) also has the product 0
 *    of its pruned connections as a candidate, before its first kept product;
 *  - a NaN product (inf * 0 included) makes the output NaN; its index is the
 *    first NaN's. Kernels detect it with a separate flag (a NaN never wins a
 *    strict comparison, so the folds below simply skip it);
 *  - the output is (max + min) + bias, each addition rounded once;
 *  - int8: symmetric quantisation to [-127, 127] with round half to even,
 *    int32 products and sums; a sum of at most MAMEXT_INT8_SUM_MAX_TERMS
 *    products of magnitude <= 127 * 127 cannot overflow int32.
 */
#ifndef MAMEXT_MAM_SEMANTICS_H
#define MAMEXT_MAM_SEMANTICS_H

#include <stdint.h>

#if defined(__CUDACC__)
#define MAMEXT_HD static __host__ __device__ __forceinline__
#else
#define MAMEXT_HD static inline
#endif

/* int32 sums of int8 x int8 products stay exact up to this many terms. */
#define MAMEXT_INT8_SUM_MAX_TERMS (2147483647 / (127 * 127))

/* Running max / min: the earlier value wins ties; a NaN candidate never wins. */
MAMEXT_HD float mamext_max_f32(float best, float p) { return p > best ? p : best; }
MAMEXT_HD float mamext_min_f32(float best, float p) { return p < best ? p : best; }
MAMEXT_HD double mamext_max_f64(double best, double p) { return p > best ? p : best; }
MAMEXT_HD double mamext_min_f64(double best, double p) { return p < best ? p : best; }
MAMEXT_HD int32_t mamext_max_i32(int32_t best, int32_t p) { return p > best ? p : best; }
MAMEXT_HD int32_t mamext_min_i32(int32_t best, int32_t p) { return p < best ? p : best; }

/* Index-tracking form: replace (best, at) by (p, k) only when strictly better. */
MAMEXT_HD int mamext_wins_max_f32(float best, float p) { return p > best; }
MAMEXT_HD int mamext_wins_min_f32(float best, float p) { return p < best; }
MAMEXT_HD int mamext_wins_max_f64(double best, double p) { return p > best; }
MAMEXT_HD int mamext_wins_min_f64(double best, double p) { return p < best; }

/*
 * int8 rounding: round half to even of a float already scaled to [-127, 127],
 * clamped to +-127. Branch free: clamp, truncate toward zero, then step by one
 * where the exact remainder passes 0.5, or equals 0.5 with an odd integer part.
 */
MAMEXT_HD int32_t mamext_round_q(float v)
{
    int32_t t, odd, up, down;
    float f;
    v = v > 127.0f ? 127.0f : v;
    v = v < -127.0f ? -127.0f : v;
    t = (int32_t)v;
    f = v - (float)t;
    odd = t & 1;
    up = (int32_t)(f > 0.5f) | ((int32_t)(f == 0.5f) & odd);
    down = (int32_t)(f < -0.5f) | ((int32_t)(f == -0.5f) & odd);
    return t + up - down;
}

#endif /* MAMEXT_MAM_SEMANTICS_H */
