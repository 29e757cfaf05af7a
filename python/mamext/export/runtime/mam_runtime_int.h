/*
 * Integer-only runtime of the C code mamext.export.to_c writes for a
 * mamext.quant.IntegerNetwork: int8 activations, int8 weights, int32
 * accumulators, fixed-point requantisation. No floating-point type or
 * operation appears here, so it builds for cores without an FPU (Cortex-M0+,
 * M3) and links no soft-float routine.
 *
 * Header only, C99, everything `static inline` (see mam_runtime.h). The MAM
 * reduction rules come from mam_semantics.h.
 *
 * A layer keeps, per output neuron n, cnt[n] connections: weight codes val[j]
 * on the inputs named by the index stream idx, neuron after neuron. Products
 * are p = val[j] * (x[col] - x_zp) in int32; a MAM neuron computes
 * acc = max p + min p + bias[n] (the candidate 0 joins when cnt[n] < width,
 * the input width the neuron was pruned in), a MAC neuron acc = sum p + bias[n].
 * The int8 output is
 *     clamp(((acc * mult[n] + 2^(rsh[n] - 1)) >> rsh[n]) + y_zp, low, high)
 * computed in int64_t (exact: |acc|, mult < 2^31, 1 <= rsh <= 62).
 *
 * Kernels, instantiated for each count type (suffix c8: uint8_t, c16:
 * uint16_t, c32: int32_t) and index encoding:
 *   mamrt_q_{mam,lin}_c{8,16,32}_{u8,i16,i32}  absolute column indices of that type
 *   mamrt_q_{mam,lin}_c{8,16,32}_d8            uint8_t column deltas: each neuron starts
 *       at column -1; a byte d in 1..255 advances d columns to the next connection,
 *       a byte 0 advances 255 columns and the next byte continues the same delta.
 *   mamrt_q_{mam,lin}_bm                       a bitmap of the kept connections, no counts
 *   mamrt_q_clamp                             a ReLU on codes: max(x, zero point)
 */
#ifndef MAMRTQ_TEMPLATE

#ifndef MAM_RUNTIME_INT_H
#define MAM_RUNTIME_INT_H

#include <stdint.h>

#include "mam_semantics.h"

/* Requantisation rounds with an arithmetic right shift of a negative int64_t. */
typedef char mamrt_q_arithmetic_shift_check[((-(int64_t)3) >> 1) == -2 ? 1 : -1];

/* int8 output of an int32 accumulator: Q31 multiplier, rounding right shift, zero point, clamp. */
static inline int8_t mamrt_q_requantize(int32_t acc, int32_t mult, int32_t rsh, int32_t y_zp, int32_t low,
                                        int32_t high)
{
    int64_t v = ((int64_t)acc * mult + ((int64_t)1 << (rsh - 1))) >> rsh;
    v += y_zp;
    if (v < low) v = low;
    if (v > high) v = high;
    return (int8_t)v;
}

/* ReLU on codes of zero point zp: y = max(x, zp) (y may be x). */
static inline void mamrt_q_clamp(const int8_t *x, int8_t *y, int32_t size, int32_t zp)
{
    int32_t i;
    for (i = 0; i < size; ++i) y[i] = (int8_t)(x[i] < zp ? zp : x[i]);
}

/*
 * Bitmap layers: bit n * K + k of bits (least significant bit first in each
 * byte) is set when neuron n keeps input k; the kept weights follow in order.
 * A neuron with fewer than `width` kept connections has the candidate 0.
 */
static inline void mamrt_q_mam_bm(const int8_t *x, int8_t *y, int32_t rows, int32_t K, int32_t N,
                                  const int8_t *val, const uint8_t *bits, int32_t width, const int32_t *bias,
                                  const int32_t *mult, const uint8_t *rsh, int32_t x_zp, int32_t y_zp, int32_t low,
                                  int32_t high)
{
    int32_t r, n, k, j, b;
    for (r = 0; r < rows; ++r) {
        const int8_t *xr = x + r * K;
        j = 0;
        b = 0;
        for (n = 0; n < N; ++n) {
            int32_t mx = 0, mn = 0, seen = 0;
            for (k = 0; k < K; ++k, ++b) {
                if ((bits[b >> 3] >> (b & 7)) & 1) {
                    const int32_t p = (int32_t)val[j++] * ((int32_t)xr[k] - x_zp);
                    mx = seen ? mamext_max_i32(mx, p) : p;
                    mn = seen ? mamext_min_i32(mn, p) : p;
                    ++seen;
                }
            }
            if (seen < width) {
                mx = mamext_max_i32(mx, 0);
                mn = mamext_min_i32(mn, 0);
            }
            y[r * N + n] = mamrt_q_requantize(mx + mn + bias[n], mult[n], rsh[n], y_zp, low, high);
        }
    }
}

static inline void mamrt_q_lin_bm(const int8_t *x, int8_t *y, int32_t rows, int32_t K, int32_t N,
                                  const int8_t *val, const uint8_t *bits, int32_t width, const int32_t *bias,
                                  const int32_t *mult, const uint8_t *rsh, int32_t x_zp, int32_t y_zp, int32_t low,
                                  int32_t high)
{
    int32_t r, n, k, j, b;
    (void)width;
    for (r = 0; r < rows; ++r) {
        const int8_t *xr = x + r * K;
        j = 0;
        b = 0;
        for (n = 0; n < N; ++n) {
            int32_t acc = bias[n];
            for (k = 0; k < K; ++k, ++b) {
                if ((bits[b >> 3] >> (b & 7)) & 1) acc += (int32_t)val[j++] * ((int32_t)xr[k] - x_zp);
            }
            y[r * N + n] = mamrt_q_requantize(acc, mult[n], rsh[n], y_zp, low, high);
        }
    }
}

#define MAMRTQ_TEMPLATE

#define MAMRTQ_CNT uint8_t
#define MAMRTQ_MAM mamrt_q_mam_c8
#define MAMRTQ_LIN mamrt_q_lin_c8
#include "mam_runtime_int.h"
#undef MAMRTQ_CNT
#undef MAMRTQ_MAM
#undef MAMRTQ_LIN

#define MAMRTQ_CNT uint16_t
#define MAMRTQ_MAM mamrt_q_mam_c16
#define MAMRTQ_LIN mamrt_q_lin_c16
#include "mam_runtime_int.h"
#undef MAMRTQ_CNT
#undef MAMRTQ_MAM
#undef MAMRTQ_LIN

#define MAMRTQ_CNT int32_t
#define MAMRTQ_MAM mamrt_q_mam_c32
#define MAMRTQ_LIN mamrt_q_lin_c32
#include "mam_runtime_int.h"
#undef MAMRTQ_CNT
#undef MAMRTQ_MAM
#undef MAMRTQ_LIN

#undef MAMRTQ_TEMPLATE
#endif /* MAM_RUNTIME_INT_H */

#else /* MAMRTQ_TEMPLATE: the kernels for one count type, every index encoding */

#define MAMRTQ_GLUE_(a, b) a##_##b
#define MAMRTQ_GLUE(a, b) MAMRTQ_GLUE_(a, b)

/* absolute indices: the column is the index itself */
#define MAMRTQ_NEXT_ABS(col) ((col) = (int32_t)idx[j])
/* delta stream: 0 bytes add 255 and continue, a byte 1..255 ends the delta */
#define MAMRTQ_NEXT_D8(col)                                                                      \
    do {                                                                                         \
        int32_t d_;                                                                              \
        while ((d_ = (int32_t)idx[t++]) == 0) (col) += 255;                                      \
        (col) += d_;                                                                             \
    } while (0)

#define MAMRTQ_KERNELS(idx_type, idx_name, NEXT)                                                 \
static inline void MAMRTQ_GLUE(MAMRTQ_MAM, idx_name)(                                            \
    const int8_t *x, int8_t *y, int32_t rows, int32_t K, int32_t N, const int8_t *val,            \
    const idx_type *idx, const MAMRTQ_CNT *cnt, int32_t width, const int32_t *bias,              \
    const int32_t *mult, const uint8_t *rsh, int32_t x_zp, int32_t y_zp, int32_t low,            \
    int32_t high)                                                                                \
{                                                                                                \
    int32_t r, n, j, t;                                                                          \
    for (r = 0; r < rows; ++r) {                                                                 \
        const int8_t *xr = x + r * K;                                                            \
        j = 0;                                                                                   \
        t = 0;                                                                                   \
        for (n = 0; n < N; ++n) {                                                                \
            const int32_t end = j + (int32_t)cnt[n];                                             \
            int first = (int32_t)cnt[n] >= width;                                                \
            int32_t mx = 0, mn = 0, col = -1;                                                    \
            for (; j < end; ++j) {                                                               \
                int32_t p;                                                                       \
                NEXT(col);                                                                       \
                p = (int32_t)val[j] * ((int32_t)xr[col] - x_zp);                                 \
                if (first) {                                                                     \
                    mx = p;                                                                      \
                    mn = p;                                                                      \
                    first = 0;                                                                   \
                } else {                                                                         \
                    mx = mamext_max_i32(mx, p);                                                  \
                    mn = mamext_min_i32(mn, p);                                                  \
                }                                                                                \
            }                                                                                    \
            y[r * N + n] = mamrt_q_requantize(mx + mn + bias[n], mult[n], rsh[n], y_zp, low, high); \
        }                                                                                        \
    }                                                                                            \
    (void)t;                                                                                     \
}                                                                                                \
static inline void MAMRTQ_GLUE(MAMRTQ_LIN, idx_name)(                                            \
    const int8_t *x, int8_t *y, int32_t rows, int32_t K, int32_t N, const int8_t *val,            \
    const idx_type *idx, const MAMRTQ_CNT *cnt, int32_t width, const int32_t *bias,              \
    const int32_t *mult, const uint8_t *rsh, int32_t x_zp, int32_t y_zp, int32_t low,            \
    int32_t high)                                                                                \
{                                                                                                \
    int32_t r, n, j, t;                                                                          \
    (void)width;                                                                                 \
    for (r = 0; r < rows; ++r) {                                                                 \
        const int8_t *xr = x + r * K;                                                            \
        j = 0;                                                                                   \
        t = 0;                                                                                   \
        for (n = 0; n < N; ++n) {                                                                \
            const int32_t end = j + (int32_t)cnt[n];                                             \
            int32_t acc = bias[n], col = -1;                                                     \
            for (; j < end; ++j) {                                                               \
                NEXT(col);                                                                       \
                acc += (int32_t)val[j] * ((int32_t)xr[col] - x_zp);                              \
            }                                                                                    \
            y[r * N + n] = mamrt_q_requantize(acc, mult[n], rsh[n], y_zp, low, high);            \
        }                                                                                        \
    }                                                                                            \
    (void)t;                                                                                     \
}

MAMRTQ_KERNELS(uint8_t, u8, MAMRTQ_NEXT_ABS)
MAMRTQ_KERNELS(int16_t, i16, MAMRTQ_NEXT_ABS)
MAMRTQ_KERNELS(int32_t, i32, MAMRTQ_NEXT_ABS)
MAMRTQ_KERNELS(uint8_t, d8, MAMRTQ_NEXT_D8)

#undef MAMRTQ_KERNELS
#undef MAMRTQ_NEXT_ABS
#undef MAMRTQ_NEXT_D8
#undef MAMRTQ_GLUE
#undef MAMRTQ_GLUE_

#endif /* MAMRTQ_TEMPLATE */
