/*
 * Runtime of the C code written by mamext.export.to_c: the layer kernels a
 * generated network calls, one sample at a time.
 *
 * Header only, C99, everything `static inline`: each generated network
 * includes its own copy with internal linkage, so several exported networks
 * link into one program without clashing, and a kernel the network does not
 * call costs no code. The MAM reduction rules and the int8 rounding come from
 * mam_semantics.h, the header the PyTorch kernels are compiled from.
 *
 * Shapes: x holds `rows` rows of K floats, y receives `rows` rows of N
 * floats; bias may be a null pointer. Array sizes fit int32_t (to_c checks).
 *
 * Kernels:
 *   mamrt_mam_dense_f32, mamrt_lin_dense_f32      dense (N, K) float weights
 *   mamrt_{mam,lin}_csr_f32_{u8,i16,i32}          packed float weights
 *   mamrt_{mam,lin}_csr_i8_{u8,i16,i32}           packed int8 weights
 * mam_* compute max + min, lin_* the ordinary sum; the suffix names the type
 * of the packed column indices (uint8_t, int16_t, int32_t); row offsets are
 * int32_t. The packed kernels are written once in mam_runtime_csr.h and
 * instantiated below for each index type.
 *
 * Bit-exactness with PyTorch needs IEEE single precision without excess
 * precision (FLT_EVAL_METHOD == 0) and no contraction of a * b + c into an
 * FMA: compile with -std=c99 or -ffp-contract=off, never -ffast-math.
 */
#ifndef MAM_RUNTIME_H
#define MAM_RUNTIME_H

#include <float.h>
#include <math.h>
#include <stdint.h>

#include "mam_semantics.h"

/* 1 when the float is neither inf nor NaN (x - x is NaN exactly then). */
static inline int mamrt_is_finite(float v)
{
    return v - v == 0.0f;
}

/*
 * Symmetric per-sample int8 quantisation of x[0..K): q[k] = round(x[k] * 127 / max|x|).
 * Returns the input scale max|x| / 127, 0 for an all-zero sample (q all 0) and
 * NaN when a value is not finite (q all 0, so every output becomes NaN).
 */
static inline float mamrt_quantize(const float *x, int32_t K, int8_t *q)
{
    float amax = 0.0f;
    int bad = 0;
    int32_t k;
    for (k = 0; k < K; ++k) {
        const float a = x[k] < 0.0f ? -x[k] : x[k];
        if (!(a <= FLT_MAX)) {
            bad = 1;
        } else {
            amax = mamext_max_f32(amax, a);
        }
    }
    if (bad || amax < 1e-30f) {
        for (k = 0; k < K; ++k) q[k] = 0;
        return bad ? NAN : 0.0f;
    }
    {
        const float inv = 127.0f / amax;
        for (k = 0; k < K; ++k) q[k] = (int8_t)mamext_round_q(x[k] * inv);
    }
    return amax / 127.0f;
}

/* Dense MAM: y = (max_k(w x) + min_k(w x)) + b; a NaN product makes the output NaN. */
static inline void mamrt_mam_dense_f32(const float *x, float *y, int32_t rows, int32_t K, int32_t N,
                                       const float *w, const float *bias)
{
    int32_t r, n, k;
    for (r = 0; r < rows; ++r) {
        const float *xr = x + r * K;
        for (n = 0; n < N; ++n) {
            const float *wr = w + n * K;
            float mx = wr[0] * xr[0], mn = mx, v;
            int nan_seen = mx != mx;
            for (k = 1; k < K; ++k) {
                const float p = wr[k] * xr[k];
                nan_seen |= p != p;
                mx = mamext_max_f32(mx, p);
                mn = mamext_min_f32(mn, p);
            }
            v = nan_seen ? NAN : mx + mn;
            if (bias) v = v + bias[n];
            y[r * N + n] = v;
        }
    }
}

/* Dense Linear: y = sum_k(w x) + b, summed in index order. */
static inline void mamrt_lin_dense_f32(const float *x, float *y, int32_t rows, int32_t K, int32_t N,
                                       const float *w, const float *bias)
{
    int32_t r, n, k;
    for (r = 0; r < rows; ++r) {
        const float *xr = x + r * K;
        for (n = 0; n < N; ++n) {
            const float *wr = w + n * K;
            float acc = 0.0f;
            for (k = 0; k < K; ++k) acc += wr[k] * xr[k];
            if (bias) acc = acc + bias[n];
            y[r * N + n] = acc;
        }
    }
}

#define MAMRT_IDX uint8_t
#define MAMRT_NAME(base) base##_u8
#include "mam_runtime_csr.h"
#undef MAMRT_IDX
#undef MAMRT_NAME

#define MAMRT_IDX int16_t
#define MAMRT_NAME(base) base##_i16
#include "mam_runtime_csr.h"
#undef MAMRT_IDX
#undef MAMRT_NAME

#define MAMRT_IDX int32_t
#define MAMRT_NAME(base) base##_i32
#include "mam_runtime_csr.h"
#undef MAMRT_IDX
#undef MAMRT_NAME

#endif /* MAM_RUNTIME_H */
