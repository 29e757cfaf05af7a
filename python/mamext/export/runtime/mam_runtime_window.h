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

#endif /* MAM_RUNTIME_WINDOW_H */
