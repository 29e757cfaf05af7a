/*
 * Float convolution, pooling and per-channel affine kernels of the C code
 * mamext.export.to_c writes, for one sample of activations in (C, H, W)
 * layout (see mam_runtime_window.h for the window geometry).
 *
 * Header only, C99, everything `static inline` (see mam_runtime.h).
 *
 * A convolution gathers the patch of each output position into `patch`
 * (c_in / groups * k_h * k_w floats, padding as 0.0f), then computes, for each
 * output channel o of the group, over the patch in (channel, row, column)
 * order with the weight row w[o] (dense, a pruned weight is 0):
 *   MAM: (max + min of the products) + bias[o], the first product starting
 *        both and later ones replacing them only when strictly better
 *        (mam_semantics.h); a NaN product makes the output NaN;
 *   MAC: the products summed in patch order, + bias[o].
 * A padded position is a zero input, so its product (+-0) is a candidate of
 * the max and the min, exactly as in the patch mamext.nn.MAMConv2d unfolds.
 *
 * A pruned convolution may instead keep its weights packed (CSR rows over the
 * patch, each kept weight with its input's offset in the window):
 * mamrt_packed_conv2d_f32 reads only the kept connections' inputs and reduces
 * them exactly as the packed kernels of mam_runtime_csr.h reduce a gathered
 * patch (a pruned row's zero candidate is the dense weight's zero product).
 *
 * Kernels:
 *   mamrt_mam_conv2d_f32, mamrt_lin_conv2d_f32   convolution, groups included
 *   mamrt_packed_conv2d_f32                      packed convolution (MAM or MAC)
 *   mamrt_maxpool2d_f32                          max over the window, padding ignored, NaN wins
 *   mamrt_avgpool2d_f32                          float sum in window order / divisor (PyTorch's)
 *   mamrt_affine_f32                             y = x * scale[c] + shift[c] (a batch norm)
 *
 * Bit-exactness needs the floating-point conditions of mam_runtime.h.
 */
#ifndef MAM_RUNTIME_CONV_H
#define MAM_RUNTIME_CONV_H

#include <math.h>
#include <stdint.h>

#include "mam_runtime_window.h"
#include "mam_semantics.h"

/* The patch of output position (oh, ow) in group `group`; padding reads as 0.0f. */
static inline void mamrt_patch_f32(const float *x, const mamrt_window *g, int32_t group, int32_t oh, int32_t ow,
                                   float *patch)
{
    const int32_t cin_g = g->c_in / g->groups;
    int32_t c, i, j, n = 0;
    if (mamrt_window_inside(g, oh, ow)) {
        for (c = 0; c < cin_g; ++c) {
            for (i = 0; i < g->k_h; ++i) {
                const float *row = x + ((group * cin_g + c) * g->h + oh * g->s_h - g->p_h + i * g->d_h) * g->w +
                                   ow * g->s_w - g->p_w;
                for (j = 0; j < g->k_w; ++j) patch[n++] = row[j * g->d_w];
            }
        }
        return;
    }
    for (c = 0; c < cin_g; ++c) {
        for (i = 0; i < g->k_h; ++i) {
            const int32_t ih = oh * g->s_h - g->p_h + i * g->d_h;
            for (j = 0; j < g->k_w; ++j) {
                const int32_t at = mamrt_window_at(g, group * cin_g + c, ih, ow * g->s_w - g->p_w + j * g->d_w);
                patch[n++] = at < 0 ? 0.0f : x[at];
            }
        }
    }
}

/* Whether x[0 .. n) are all finite. */
static inline int mamrt_all_finite_f32(const float *x, int32_t n)
{
    int32_t k;
    for (k = 0; k < n; ++k) {
        if (!mamrt_is_finite(x[k])) return 0;
    }
    return 1;
}

/*
 * max + min of the products w[k] * x[k], k < K (K >= 1); NaN when a product is
 * NaN, which `finite` (every x[k] finite, and so every product with a finite
 * weight) rules out.
 */
static inline float mamrt_mam_row_f32(const float *w, const float *x, int32_t K, int finite)
{
    float mx = w[0] * x[0], mn = mx;
    int nan_seen = mx != mx;
    int32_t k;
    if (finite) {
        for (k = 1; k < K; ++k) {
            const float p = w[k] * x[k];
            mx = mamext_max_f32(mx, p);
            mn = mamext_min_f32(mn, p);
        }
        return mx + mn;
    }
    for (k = 1; k < K; ++k) {
        const float p = w[k] * x[k];
        nan_seen |= p != p;
        mx = mamext_max_f32(mx, p);
        mn = mamext_min_f32(mn, p);
    }
    return nan_seen ? NAN : mx + mn;
}

/* The products w[k] * x[k], k < K, summed in index order. */
static inline float mamrt_lin_row_f32(const float *w, const float *x, int32_t K)
{
    float acc = 0.0f;
    int32_t k;
    for (k = 0; k < K; ++k) acc += w[k] * x[k];
    return acc;
}

static inline void mamrt_conv2d_f32(const float *x, float *y, const mamrt_window *g, const float *w,
                                    const float *bias, float *patch, int mam)
{
    const int32_t cout_g = g->c_out / g->groups;
    const int32_t K = g->c_in / g->groups * g->k_h * g->k_w;
    const int32_t plane = g->h_out * g->w_out;
    const int finite = mamrt_all_finite_f32(x, g->c_in * g->h * g->w);
    int32_t group, oh, ow, o;
    for (group = 0; group < g->groups; ++group) {
        for (oh = 0; oh < g->h_out; ++oh) {
            for (ow = 0; ow < g->w_out; ++ow) {
                mamrt_patch_f32(x, g, group, oh, ow, patch);
                for (o = group * cout_g; o < (group + 1) * cout_g; ++o) {
                    float v = mam ? mamrt_mam_row_f32(w + o * K, patch, K, finite)
                                  : mamrt_lin_row_f32(w + o * K, patch, K);
                    if (bias) v = v + bias[o];
                    y[o * plane + oh * g->w_out + ow] = v;
                }
            }
        }
    }
}

/* MAM convolution (dense weight (c_out, c_in / groups, k_h, k_w), bias may be null). */
static inline void mamrt_mam_conv2d_f32(const float *x, float *y, const mamrt_window *g, const float *w,
                                        const float *bias, float *patch)
{
    mamrt_conv2d_f32(x, y, g, w, bias, patch, 1);
}

/* Ordinary (MAC) convolution, the products summed in patch order. */
static inline void mamrt_lin_conv2d_f32(const float *x, float *y, const mamrt_window *g, const float *w,
                                        const float *bias, float *patch)
{
    mamrt_conv2d_f32(x, y, g, w, bias, patch, 0);
}

/*
 * Input at offset k of the window whose first input channel, row and column
 * are c0, h0, w0, `base` = (c0 * h + h0) * w + w0: k = (c * h + i * d_h) * w +
 * j * d_w for input channel c of the group, kernel row i and column j (the
 * dilated kernel no larger than the input); padding reads 0.0f.
 */
static inline float mamrt_offset_at_f32(const float *x, const mamrt_window *g, int32_t base, int32_t h0, int32_t w0,
                                        int32_t k)
{
    const int32_t r = k % (g->h * g->w), dy = r / g->w, ih = h0 + dy, iw = w0 + r - dy * g->w;
    return ih < 0 || ih >= g->h || iw < 0 || iw >= g->w ? 0.0f : x[base + k];
}

/* How many inputs of the patch at (c0, h0, w0) are inf or NaN (padding: none). */
static inline int32_t mamrt_patch_nonfinite_f32(const float *x, const mamrt_window *g, int32_t c0, int32_t h0,
                                                int32_t w0)
{
    const int32_t cin_g = g->c_in / g->groups;
    int32_t c, i, j, bad = 0;
    for (c = 0; c < cin_g; ++c) {
        for (i = 0; i < g->k_h; ++i) {
            for (j = 0; j < g->k_w; ++j) {
                const int32_t at = mamrt_window_at(g, c0 + c, h0 + i * g->d_h, w0 + j * g->d_w);
                bad += at >= 0 && !mamrt_is_finite(x[at]);
            }
        }
    }
    return bad;
}

/*
 * mamrt_packed_row_f32 where every input of the window is finite and none is
 * padding (xb: the window's first input): no product can be NaN, so only the
 * reduction remains.
 */
static inline float mamrt_packed_row_finite_f32(const float *xb, const float *val, const int16_t *o16,
                                                const int32_t *o32, int32_t begin, int32_t end, int pruned, int mam)
{
    float mx = 0.0f, mn = 0.0f, acc = 0.0f;
    int32_t j = begin;
    if (!mam) {
        for (; j < end; ++j) acc += val[j] * xb[o16 ? (int32_t)o16[j] : o32[j]];
        return acc;
    }
    if (!pruned) {
        mx = val[j] * xb[o16 ? (int32_t)o16[j] : o32[j]];
        mn = mx;
        ++j;
    }
    for (; j < end; ++j) {
        const float p = val[j] * xb[o16 ? (int32_t)o16[j] : o32[j]];
        mx = mamext_max_f32(mx, p);
        mn = mamext_min_f32(mn, p);
    }
    return mx + mn;
}

/*
 * One output of a packed convolution: the kept products val[j] * the input at
 * offset o16[j] (or o32[j] when o16 is null, see mamrt_offset_at_f32), j =
 * begin .. end - 1, reduced as the packed kernels of mam_runtime_csr.h reduce
 * them over a gathered patch of K inputs (`bad` of them inf or NaN): MAM max +
 * min with a pruned row's zero candidate, MAC the sum in order. `interior`:
 * the window has no padding.
 */
static inline float mamrt_packed_row_f32(const float *x, const mamrt_window *g, int32_t base, int32_t h0, int32_t w0,
                                         int interior, const float *val, const int16_t *o16, const int32_t *o32,
                                         int32_t begin, int32_t end, int32_t K, int32_t bad, int mam)
{
    const int pruned = end - begin < K;
    int32_t seen = 0, j;
    int nan_seen = 0;
    float mx = 0.0f, mn = 0.0f, acc = 0.0f;
    if (interior && !bad) return mamrt_packed_row_finite_f32(x + base, val, o16, o32, begin, end, pruned, mam);
    for (j = begin; j < end; ++j) {
        const int32_t k = o16 ? (int32_t)o16[j] : o32[j];
        const float xv = interior ? x[base + k] : mamrt_offset_at_f32(x, g, base, h0, w0, k);
        const float p = val[j] * xv;
        if (bad) seen += !mamrt_is_finite(xv);
        nan_seen |= p != p;
        if (!mam) {
            acc += p;
        } else if (j == begin && !pruned) {   /* a full row starts from its first product */
            mx = mn = p;
        } else {
            mx = mamext_max_f32(mx, p);
            mn = mamext_min_f32(mn, p);
        }
    }
    if (mam) acc = mx + mn;
    return nan_seen || (pruned && seen != bad) ? NAN : acc;
}

/*
 * A pruned convolution packed as CSR rows over the patch, computed from its
 * kept connections only: output channel o keeps val[off[o] .. off[o + 1]) at
 * the input offsets o16 (or o32 when o16 is null) of the same entries (see
 * mamrt_offset_at_f32), in patch order. Bit for bit the gathered patch through
 * the packed kernel of mam_runtime_csr.h; the patch's inf and NaN inputs are
 * counted only when the input has any. `mam`: MAM, else MAC.
 */
static inline void mamrt_packed_conv2d_f32(const float *x, float *y, const mamrt_window *g, const float *val,
                                           const int16_t *o16, const int32_t *o32, const int32_t *off,
                                           const float *bias, int mam)
{
    const int32_t cin_g = g->c_in / g->groups, cout_g = g->c_out / g->groups;
    const int32_t K = cin_g * g->k_h * g->k_w, plane = g->h_out * g->w_out;
    const int32_t h_last = g->h - (g->k_h - 1) * g->d_h, w_last = g->w - (g->k_w - 1) * g->d_w;
    const int finite = mamrt_all_finite_f32(x, g->c_in * g->h * g->w);
    int32_t group, oh, ow, o;
    for (group = 0; group < g->groups; ++group) {
        for (oh = 0; oh < g->h_out; ++oh) {
            const int32_t h0 = oh * g->s_h - g->p_h;
            for (ow = 0; ow < g->w_out; ++ow) {
                const int32_t w0 = ow * g->s_w - g->p_w, base = (group * cin_g * g->h + h0) * g->w + w0;
                const int interior = h0 >= 0 && h0 < h_last && w0 >= 0 && w0 < w_last;
                const int32_t bad = finite ? 0 : mamrt_patch_nonfinite_f32(x, g, group * cin_g, h0, w0);
                for (o = group * cout_g; o < (group + 1) * cout_g; ++o) {
                    float v = mamrt_packed_row_f32(x, g, base, h0, w0, interior, val, o16, o32, off[o], off[o + 1],
                                                   K, bad, mam);
                    if (bias) v = v + bias[o];
                    y[o * plane + oh * g->w_out + ow] = v;
                }
            }
        }
    }
}

/* Max pooling: the largest input of the window (padding never wins); a NaN input wins. */
static inline void mamrt_maxpool2d_f32(const float *x, float *y, const mamrt_window *g)
{
    int32_t c, oh, ow, i, j;
    for (c = 0; c < g->c_out; ++c) {
        for (oh = 0; oh < g->h_out; ++oh) {
            for (ow = 0; ow < g->w_out; ++ow) {
                float m = -INFINITY;
                for (i = 0; i < g->k_h; ++i) {
                    for (j = 0; j < g->k_w; ++j) {
                        const int32_t at = mamrt_window_at(g, c, oh * g->s_h - g->p_h + i * g->d_h,
                                                           ow * g->s_w - g->p_w + j * g->d_w);
                        if (at >= 0 && (x[at] > m || x[at] != x[at])) m = x[at];
                    }
                }
                y[(c * g->h_out + oh) * g->w_out + ow] = m;
            }
        }
    }
}

/*
 * Average pooling (no dilation): the float sum of the window's inputs in row
 * order divided by `divisor` when positive, else by the window size counting
 * padding (include_pad) or not.
 */
static inline void mamrt_avgpool2d_f32(const float *x, float *y, const mamrt_window *g, int include_pad,
                                       int32_t divisor)
{
    int32_t c, oh, ow, ih, iw;
    for (c = 0; c < g->c_out; ++c) {
        for (oh = 0; oh < g->h_out; ++oh) {
            for (ow = 0; ow < g->w_out; ++ow) {
                int32_t rc[4];
                const int32_t d = mamrt_avgpool_window(g, oh, ow, include_pad, divisor, rc);
                float sum = 0.0f;
                for (ih = rc[0]; ih < rc[1]; ++ih) {
                    for (iw = rc[2]; iw < rc[3]; ++iw) sum += x[(c * g->h + ih) * g->w + iw];
                }
                y[(c * g->h_out + oh) * g->w_out + ow] = rc[0] < rc[1] && rc[2] < rc[3] ? sum / (float)d : 0.0f;
            }
        }
    }
}

/* Per-channel affine map of `channels` planes of `plane` values (y may be x). */
static inline void mamrt_affine_f32(const float *x, float *y, int32_t channels, int32_t plane, const float *scale,
                                    const float *shift)
{
    int32_t c, i;
    for (c = 0; c < channels; ++c) {
        for (i = 0; i < plane; ++i) y[c * plane + i] = x[c * plane + i] * scale[c] + shift[c];
    }
}

#endif /* MAM_RUNTIME_CONV_H */
