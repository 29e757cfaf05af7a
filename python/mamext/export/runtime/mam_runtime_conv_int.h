/*
 * Integer-only convolution and pooling kernels of the C code
 * mamext.export.to_c writes for a mamext.quant.IntegerNetwork, for one sample
 * of int8 codes in (C, H, W) layout (mam_runtime_window.h: the geometry). No
 * floating-point type or operation, like mam_runtime_int.h.
 *
 * A convolution gathers the patch of each output position into `patch`
 * (c_in / groups * k_h * k_w int16_t values x - x_zp; padding, the real value
 * 0, reads 0), then for each output channel o of the group, with the dense
 * int8 weight codes w[o] (0 for a pruned weight), computes in int32
 *   MAM: acc = max p + min p + bias[o] over every product p = w[o][k] * patch[k]
 *        (a zero weight's product 0 is a candidate, as a pruned connection's);
 *   MAC: acc = sum p + bias[o];
 * and requantises acc to int8 exactly as mam_runtime_int.h's layers do.
 *
 * A pruned convolution may instead keep its weights in one of the index
 * encodings of mam_runtime_int.h (patch positions as columns): the generated
 * code gathers each patch as codes with mamrt_q_patch_codes (padding: x_zp),
 * runs that layer kernel on it as one row of c_out / groups neurons of width
 * c_in / groups * k_h * k_w, and writes the outputs with mamrt_q_scatter.
 *
 * A pruned convolution may also keep its weights packed with input offsets:
 * each kept weight code with the offset of its input from the window's first
 * input; mamrt_q_packed_conv2d then reads only the kept connections' inputs,
 * gathering no patch (a padded position's product 0, a pruned row's candidate
 * 0, bit for bit the gathered computation).
 *
 * Kernels:
 *   mamrt_q_mam_conv2d, mamrt_q_lin_conv2d   convolution, groups included
 *   mamrt_q_packed_conv2d                   packed convolution with input offsets (MAM or MAC)
 *   mamrt_q_maxpool2d                       the largest code of the window, padding ignored
 *   mamrt_q_avgpool2d                       zp + round(sum of (x - zp) / divisor), half away from 0
 */
#ifndef MAM_RUNTIME_CONV_INT_H
#define MAM_RUNTIME_CONV_INT_H

#include <stdint.h>

#include "mam_runtime_int.h"
#include "mam_runtime_window.h"

/*
 * The patch of output position (oh, ow) in group `group`, into `diff` as
 * x - x_zp (padding, the real 0, reads 0) or, when diff is null, into `codes`
 * as int8 codes (padding reads x_zp).
 */
static inline void mamrt_q_gather(const int8_t *x, const mamrt_window *g, int32_t group, int32_t oh, int32_t ow,
                                  int32_t x_zp, int16_t *diff, int8_t *codes)
{
    const int32_t cin_g = g->c_in / g->groups;
    int32_t c, i, j, n = 0;
    for (c = 0; c < cin_g; ++c) {
        for (i = 0; i < g->k_h; ++i) {
            const int32_t ih = oh * g->s_h - g->p_h + i * g->d_h;
            for (j = 0; j < g->k_w; ++j, ++n) {
                const int32_t at = mamrt_window_at(g, group * cin_g + c, ih, ow * g->s_w - g->p_w + j * g->d_w);
                const int32_t code = at < 0 ? x_zp : (int32_t)x[at];
                if (diff) {
                    diff[n] = (int16_t)(code - x_zp);
                } else {
                    codes[n] = (int8_t)code;
                }
            }
        }
    }
}

/* The patch of output position (oh, ow) in group `group`, as x - x_zp; padding reads 0. */
static inline void mamrt_q_patch(const int8_t *x, const mamrt_window *g, int32_t group, int32_t oh, int32_t ow,
                                 int32_t x_zp, int16_t *patch)
{
    mamrt_q_gather(x, g, group, oh, ow, x_zp, patch, (int8_t *)0);
}

/* The patch of output position (oh, ow) in group `group` as int8 codes; padding reads x_zp (the real 0). */
static inline void mamrt_q_patch_codes(const int8_t *x, const mamrt_window *g, int32_t group, int32_t oh, int32_t ow,
                                       int32_t x_zp, int8_t *patch)
{
    mamrt_q_gather(x, g, group, oh, ow, x_zp, (int16_t *)0, patch);
}

/* The outputs col[0 .. c_out / groups) of group `group` at (oh, ow), written to their channels of y. */
static inline void mamrt_q_scatter(const int8_t *col, int8_t *y, const mamrt_window *g, int32_t group, int32_t oh,
                                   int32_t ow)
{
    const int32_t cout_g = g->c_out / g->groups;
    int32_t n;
    for (n = 0; n < cout_g; ++n) y[((group * cout_g + n) * g->h_out + oh) * g->w_out + ow] = col[n];
}

/* max + min of the products w[k] * patch[k], k < K (K >= 1). */
static inline int32_t mamrt_q_mam_row(const int8_t *w, const int16_t *patch, int32_t K)
{
    int32_t mx = (int32_t)w[0] * (int32_t)patch[0], mn = mx, k;
    for (k = 1; k < K; ++k) {
        const int32_t p = (int32_t)w[k] * (int32_t)patch[k];
        mx = mamext_max_i32(mx, p);
        mn = mamext_min_i32(mn, p);
    }
    return mx + mn;
}

/* The sum of the products w[k] * patch[k], k < K (to_c checks that it fits int32). */
static inline int32_t mamrt_q_lin_row(const int8_t *w, const int16_t *patch, int32_t K)
{
    int32_t acc = 0, k;
    for (k = 0; k < K; ++k) acc += (int32_t)w[k] * (int32_t)patch[k];
    return acc;
}

static inline void mamrt_q_conv2d(const int8_t *x, int8_t *y, const mamrt_window *g, const int8_t *w,
                                  const int32_t *bias, const int32_t *mult, const uint8_t *rsh, int32_t x_zp,
                                  int32_t y_zp, int32_t low, int32_t high, int16_t *patch, int mam)
{
    const int32_t cout_g = g->c_out / g->groups;
    const int32_t K = g->c_in / g->groups * g->k_h * g->k_w;
    const int32_t plane = g->h_out * g->w_out;
    int32_t group, oh, ow, o;
    for (group = 0; group < g->groups; ++group) {
        for (oh = 0; oh < g->h_out; ++oh) {
            for (ow = 0; ow < g->w_out; ++ow) {
                mamrt_q_patch(x, g, group, oh, ow, x_zp, patch);
                for (o = group * cout_g; o < (group + 1) * cout_g; ++o) {
                    const int32_t acc = (mam ? mamrt_q_mam_row(w + o * K, patch, K)
                                             : mamrt_q_lin_row(w + o * K, patch, K)) + bias[o];
                    y[o * plane + oh * g->w_out + ow] = mamrt_q_requantize(acc, mult[o], rsh[o], y_zp, low, high);
                }
            }
        }
    }
}

/* Integer MAM convolution: int8 weight codes (c_out, c_in / groups, k_h, k_w), requantised per channel. */
static inline void mamrt_q_mam_conv2d(const int8_t *x, int8_t *y, const mamrt_window *g, const int8_t *w,
                                      const int32_t *bias, const int32_t *mult, const uint8_t *rsh, int32_t x_zp,
                                      int32_t y_zp, int32_t low, int32_t high, int16_t *patch)
{
    mamrt_q_conv2d(x, y, g, w, bias, mult, rsh, x_zp, y_zp, low, high, patch, 1);
}

/* Integer MAC convolution. */
static inline void mamrt_q_lin_conv2d(const int8_t *x, int8_t *y, const mamrt_window *g, const int8_t *w,
                                      const int32_t *bias, const int32_t *mult, const uint8_t *rsh, int32_t x_zp,
                                      int32_t y_zp, int32_t low, int32_t high, int16_t *patch)
{
    mamrt_q_conv2d(x, y, g, w, bias, mult, rsh, x_zp, y_zp, low, high, patch, 0);
}

/*
 * x - x_zp of the input at offset k from the window's first input `base`
 * (offset (c * h + i * d_h) * w + j * d_w for input channel c of the group,
 * kernel row i and column j, the dilated kernel no larger than the input) of
 * the window at input row h0, column w0; padding reads 0.
 */
static inline int32_t mamrt_q_offset_diff(const int8_t *x, const mamrt_window *g, int32_t base, int32_t h0,
                                          int32_t w0, int32_t k, int32_t x_zp)
{
    const int32_t r = k % (g->h * g->w), dy = r / g->w, ih = h0 + dy, iw = w0 + r - dy * g->w;
    return ih < 0 || ih >= g->h || iw < 0 || iw >= g->w ? 0 : (int32_t)x[base + k] - x_zp;
}

/*
 * One accumulator (bias excluded) of a packed integer convolution: the kept
 * products val[j] * (x - x_zp) of the inputs at offsets o16[j] (or o32[j] when
 * o16 is null), j = begin .. end - 1: MAM max + min, the candidate 0 joining
 * when the row keeps fewer than K connections (a pruned connection's product);
 * MAC their sum. `interior`: the window has no padding; else a padded input's
 * product is 0, as in the gathered patch.
 */
static inline int32_t mamrt_q_packed_row(const int8_t *x, const mamrt_window *g, int32_t base, int32_t h0,
                                         int32_t w0, int interior, const int8_t *val, const int16_t *o16,
                                         const int32_t *o32, int32_t begin, int32_t end, int32_t K, int32_t x_zp,
                                         int mam)
{
    const int8_t *xb = x + base;
    int32_t mx = 0, mn = 0, acc = 0, j = begin;
    if (interior && o16 && !mam) {
        for (; j < end; ++j) acc += (int32_t)val[j] * ((int32_t)xb[o16[j]] - x_zp);
        return acc;
    }
    if (interior && o16) {
        if (end - begin >= K) {     /* a full row starts from its first product */
            mx = mn = (int32_t)val[j] * ((int32_t)xb[o16[j]] - x_zp);
            ++j;
        }
        for (; j < end; ++j) {
            const int32_t p = (int32_t)val[j] * ((int32_t)xb[o16[j]] - x_zp);
            mx = mamext_max_i32(mx, p);
            mn = mamext_min_i32(mn, p);
        }
        return mx + mn;
    }
    for (; j < end; ++j) {
        const int32_t k = o16 ? (int32_t)o16[j] : o32[j];
        const int32_t p = (int32_t)val[j] * (interior ? (int32_t)xb[k] - x_zp
                                                      : mamrt_q_offset_diff(x, g, base, h0, w0, k, x_zp));
        if (!mam) {
            acc += p;
        } else if (j == begin && end - begin >= K) {
            mx = mn = p;
        } else {
            mx = mamext_max_i32(mx, p);
            mn = mamext_min_i32(mn, p);
        }
    }
    return mam ? mx + mn : acc;
}

/*
 * A pruned integer convolution from its kept connections only: output channel
 * o keeps the weight codes val[off[o] .. off[o + 1]) at the input offsets o16
 * (or o32 when o16 is null) of the same entries (see mamrt_q_offset_diff), in
 * patch order; requantised per channel. Bit for bit the gathered patch through
 * the index-encoded kernels of mam_runtime_int.h. Channel by channel: a channel
 * keeping nothing outputs its requantised bias everywhere. `mam`: MAM, else MAC.
 */
static inline void mamrt_q_packed_conv2d(const int8_t *x, int8_t *y, const mamrt_window *g, const int8_t *val,
                                         const int16_t *o16, const int32_t *o32, const int32_t *off,
                                         const int32_t *bias, const int32_t *mult, const uint8_t *rsh, int32_t x_zp,
                                         int32_t y_zp, int32_t low, int32_t high, int mam)
{
    const int32_t cin_g = g->c_in / g->groups, cout_g = g->c_out / g->groups;
    const int32_t K = cin_g * g->k_h * g->k_w, plane = g->h_out * g->w_out;
    const int32_t h_last = g->h - (g->k_h - 1) * g->d_h, w_last = g->w - (g->k_w - 1) * g->d_w;
    int32_t o, oh, ow, n;
    for (o = 0; o < g->c_out; ++o) {
        const int32_t group = o / cout_g, begin = off[o], end = off[o + 1];
        int8_t *yo = y + o * plane;
        if (begin == end) {             /* every product pruned: max + min = 0, sum = 0 */
            const int8_t v = mamrt_q_requantize(bias[o], mult[o], rsh[o], y_zp, low, high);
            for (n = 0; n < plane; ++n) yo[n] = v;
            continue;
        }
        for (oh = 0, n = 0; oh < g->h_out; ++oh) {
            const int32_t h0 = oh * g->s_h - g->p_h;
            for (ow = 0; ow < g->w_out; ++ow, ++n) {
                const int32_t w0 = ow * g->s_w - g->p_w, base = (group * cin_g * g->h + h0) * g->w + w0;
                const int interior = h0 >= 0 && h0 < h_last && w0 >= 0 && w0 < w_last;
                const int32_t acc = mamrt_q_packed_row(x, g, base, h0, w0, interior, val, o16, o32, begin, end, K,
                                                       x_zp, mam) + bias[o];
                yo[n] = mamrt_q_requantize(acc, mult[o], rsh[o], y_zp, low, high);
            }
        }
    }
}

/* Max pooling on codes (one scale and zero point in and out): the largest code of the window. */
static inline void mamrt_q_maxpool2d(const int8_t *x, int8_t *y, const mamrt_window *g)
{
    int32_t c, oh, ow, i, j;
    for (c = 0; c < g->c_out; ++c) {
        for (oh = 0; oh < g->h_out; ++oh) {
            for (ow = 0; ow < g->w_out; ++ow) {
                int32_t m = -128;
                for (i = 0; i < g->k_h; ++i) {
                    for (j = 0; j < g->k_w; ++j) {
                        const int32_t at = mamrt_window_at(g, c, oh * g->s_h - g->p_h + i * g->d_h,
                                                           ow * g->s_w - g->p_w + j * g->d_w);
                        if (at >= 0 && (int32_t)x[at] > m) m = x[at];
                    }
                }
                y[(c * g->h_out + oh) * g->w_out + ow] = (int8_t)m;
            }
        }
    }
}

/*
 * Average pooling on codes (no dilation): s = sum of x - zp over the window's
 * inputs (padding adds 0), divided by `divisor` when positive, else by the
 * window size counting padding (include_pad) or not; rounded half away from
 * zero; + zp, clamped to int8.
 */
static inline void mamrt_q_avgpool2d(const int8_t *x, int8_t *y, const mamrt_window *g, int include_pad,
                                     int32_t divisor, int32_t zp)
{
    int32_t c, oh, ow, ih, iw;
    for (c = 0; c < g->c_out; ++c) {
        for (oh = 0; oh < g->h_out; ++oh) {
            for (ow = 0; ow < g->w_out; ++ow) {
                int32_t rc[4], s = 0, q;
                const int32_t d = mamrt_avgpool_window(g, oh, ow, include_pad, divisor, rc);
                for (ih = rc[0]; ih < rc[1]; ++ih) {
                    for (iw = rc[2]; iw < rc[3]; ++iw) s += (int32_t)x[(c * g->h + ih) * g->w + iw] - zp;
                }
                q = d <= 0 ? 0 : s >= 0 ? (s + d / 2) / d : -((d / 2 - s) / d);
                q += zp;
                y[(c * g->h_out + oh) * g->w_out + ow] = (int8_t)(q < -128 ? -128 : q > 127 ? 127 : q);
            }
        }
    }
}

#endif /* MAM_RUNTIME_CONV_INT_H */
