/*
 * Packed (CSR) layer kernels for one column index type, included by
 * mam_runtime.h once per type with MAMRT_IDX (the index type) and
 * MAMRT_NAME(base) (base name -> name with the type suffix) defined; hence no
 * include guard. Row n keeps the connections off[n] .. off[n + 1] - 1: weight
 * val[j] on input idx[j].
 *
 * A row with fewer kept connections than inputs is pruned: the product 0 of
 * its pruned connections is a candidate for the max and the min, and an inf
 * or NaN input on a pruned connection makes the output NaN (inf * 0), exactly
 * as the dense layer with zero weights computes it.
 */

/* Packed float MAM: y = (max + min over the kept products and a pruned row's 0) + b. */
static inline void MAMRT_NAME(mamrt_mam_csr_f32)(const float *x, float *y, int32_t rows, int32_t K, int32_t N,
                                                 const float *val, const MAMRT_IDX *idx, const int32_t *off,
                                                 const float *bias)
{
    int32_t r, n, j, k;
    for (r = 0; r < rows; ++r) {
        const float *xr = x + r * K;
        int32_t bad = 0;
        for (k = 0; k < K; ++k) bad += !mamrt_is_finite(xr[k]);
        for (n = 0; n < N; ++n) {
            const int32_t end = off[n + 1];
            const int pruned = end - off[n] < K;
            int32_t seen = 0;
            int nan_seen = 0, first = !pruned;
            float mx = 0.0f, mn = 0.0f, v;
            for (j = off[n]; j < end; ++j) {
                const float xv = xr[idx[j]];
                const float p = val[j] * xv;
                seen += !mamrt_is_finite(xv);
                nan_seen |= p != p;
                if (first) {
                    mx = p;
                    mn = p;
                    first = 0;
                } else {
                    mx = mamext_max_f32(mx, p);
                    mn = mamext_min_f32(mn, p);
                }
            }
            v = mx + mn;
            if (nan_seen || (pruned && seen != bad)) v = NAN;
            if (bias) v = v + bias[n];
            y[r * N + n] = v;
        }
    }
}

/* Packed float Linear: y = sum of the kept products (in index order) + b. */
static inline void MAMRT_NAME(mamrt_lin_csr_f32)(const float *x, float *y, int32_t rows, int32_t K, int32_t N,
                                                 const float *val, const MAMRT_IDX *idx, const int32_t *off,
                                                 const float *bias)
{
    int32_t r, n, j, k;
    for (r = 0; r < rows; ++r) {
        const float *xr = x + r * K;
        int32_t bad = 0;
        for (k = 0; k < K; ++k) bad += !mamrt_is_finite(xr[k]);
        for (n = 0; n < N; ++n) {
            const int32_t end = off[n + 1];
            const int pruned = end - off[n] < K;
            int32_t seen = 0;
            int nan_seen = 0;
            float v = 0.0f;
            for (j = off[n]; j < end; ++j) {
                const float xv = xr[idx[j]];
                const float p = val[j] * xv;
                seen += !mamrt_is_finite(xv);
                nan_seen |= p != p;
                v += p;
            }
            if (nan_seen || (pruned && seen != bad)) v = NAN;
            if (bias) v = v + bias[n];
            y[r * N + n] = v;
        }
    }
}

/*
 * Packed int8 MAM: each row of x is quantised into qbuf (K bytes), the max and
 * min of the int32 products are exact, and the output is
 * float(max + min) * (wscale[n] * x_scale) + b.
 */
static inline void MAMRT_NAME(mamrt_mam_csr_i8)(const float *x, float *y, int32_t rows, int32_t K, int32_t N,
                                                const int8_t *val, const MAMRT_IDX *idx, const int32_t *off,
                                                const float *wscale, const float *bias, int8_t *qbuf)
{
    int32_t r, n, j;
    for (r = 0; r < rows; ++r) {
        const float sx = mamrt_quantize(x + r * K, K, qbuf);
        for (n = 0; n < N; ++n) {
            const int32_t end = off[n + 1];
            const float s = wscale[n] * sx;
            int32_t mx = 0, mn = 0;
            float v;
            j = off[n];
            if (end - j == K) {
                mx = (int32_t)val[j] * (int32_t)qbuf[idx[j]];
                mn = mx;
                ++j;
            }
            for (; j < end; ++j) {
                const int32_t p = (int32_t)val[j] * (int32_t)qbuf[idx[j]];
                mx = mamext_max_i32(mx, p);
                mn = mamext_min_i32(mn, p);
            }
            v = (float)(mx + mn) * s;
            if (bias) v = v + bias[n];
            y[r * N + n] = v;
        }
    }
}

/*
 * Packed int8 Linear: exact int32 sum of the products (to_c checks that no row
 * keeps more than MAMEXT_INT8_SUM_MAX_TERMS connections), then
 * float(sum) * (wscale[n] * x_scale) + b.
 */
static inline void MAMRT_NAME(mamrt_lin_csr_i8)(const float *x, float *y, int32_t rows, int32_t K, int32_t N,
                                                const int8_t *val, const MAMRT_IDX *idx, const int32_t *off,
                                                const float *wscale, const float *bias, int8_t *qbuf)
{
    int32_t r, n, j;
    for (r = 0; r < rows; ++r) {
        const float sx = mamrt_quantize(x + r * K, K, qbuf);
        for (n = 0; n < N; ++n) {
            const int32_t end = off[n + 1];
            const float s = wscale[n] * sx;
            int32_t acc = 0;
            float v;
            for (j = off[n]; j < end; ++j) acc += (int32_t)val[j] * (int32_t)qbuf[idx[j]];
            v = (float)acc * s;
            if (bias) v = v + bias[n];
            y[r * N + n] = v;
        }
    }
}
