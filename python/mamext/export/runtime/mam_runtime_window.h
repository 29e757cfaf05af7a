/*
 * The geometry of a 2-D sliding window (convolution or pooling) over one
 * sample of activations in (C, H, W) layout, shared by the float
 * (mam_runtime_conv.h) and the integer-only (mam_runtime_conv_int.h)
 * runtimes. Integer types only.
 *
 * Output (o, oh, ow) of group g = o / (c_out / groups) reads the patch of
 * input channels g * (c_in / groups) ... + c_in / groups - 1, kernel rows
 * i < k_h and columns j < k_w, in that order (channel, row, column: the order
 * of F.unfold and of a conv weight's last three dimensions), at input row
 * oh * s_h - p_h + i * d_h and column ow * s_w - p_w + j * d_w. A position
 * outside the input is padding. Pooling uses groups == c_in == c_out.
 */
#ifndef MAM_RUNTIME_WINDOW_H
#define MAM_RUNTIME_WINDOW_H

#include <stdint.h>

typedef struct {
    int32_t c_in, h, w;         /* input channels, rows, columns */
    int32_t c_out, h_out, w_out; /* output channels, rows, columns */
    int32_t k_h, k_w;           /* kernel rows, columns */
    int32_t s_h, s_w;           /* stride */
    int32_t p_h, p_w;           /* padding before the first row / column */
    int32_t d_h, d_w;           /* dilation */
    int32_t groups;
} mamrt_window;

/* Index of input (c, ih, iw), or -1 when (ih, iw) is padding. */
static inline int32_t mamrt_window_at(const mamrt_window *g, int32_t c, int32_t ih, int32_t iw)
{
    if (ih < 0 || ih >= g->h || iw < 0 || iw >= g->w) return -1;
    return (c * g->h + ih) * g->w + iw;
}

/* Whether the window of output (oh, ow) lies inside the input (no padding position). */
static inline int mamrt_window_inside(const mamrt_window *g, int32_t oh, int32_t ow)
{
    const int32_t h0 = oh * g->s_h - g->p_h, w0 = ow * g->s_w - g->p_w;
    return h0 >= 0 && h0 + (g->k_h - 1) * g->d_h < g->h && w0 >= 0 && w0 + (g->k_w - 1) * g->d_w < g->w;
}

/*
 * The average-pooling window (no dilation) of output (oh, ow): the input rows
 * rc[0] .. rc[1] - 1 and columns rc[2] .. rc[3] - 1 it covers; returns its
 * divisor: `divisor` when positive, else the window size counting padding
 * (include_pad) or not.
 */
static inline int32_t mamrt_avgpool_window(const mamrt_window *g, int32_t oh, int32_t ow, int include_pad,
                                           int32_t divisor, int32_t *rc)
{
    int32_t h0 = oh * g->s_h - g->p_h, w0 = ow * g->s_w - g->p_w;
    int32_t h1 = h0 + g->k_h, w1 = w0 + g->k_w, d;
    h1 = h1 < g->h + g->p_h ? h1 : g->h + g->p_h;
    w1 = w1 < g->w + g->p_w ? w1 : g->w + g->p_w;
    d = (h1 - h0) * (w1 - w0);
    rc[0] = h0 > 0 ? h0 : 0;
    rc[2] = w0 > 0 ? w0 : 0;
    rc[1] = h1 < g->h ? h1 : g->h;
    rc[3] = w1 < g->w ? w1 : g->w;
    if (!include_pad) d = (rc[1] - rc[0]) * (rc[3] - rc[2]);
    return divisor > 0 ? divisor : d;
}

#endif /* MAM_RUNTIME_WINDOW_H */
