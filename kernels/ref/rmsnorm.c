/* Reference RMSNorm: out = w * (x / sqrt(mean(x^2) + eps)) per row, statistics in fp64.
 * Plain C, the specification of the op; no threads, no SIMD. */
#include <math.h>

#include "ref.h"

int kern_ref_rmsnorm(struct kern_ctx *ctx, const struct kern_rmsnorm_params *p)
{
    int64_t elems;
    (void)ctx;
    if (!p || p->n_rows < 0 || p->dim < 0 || !ref_dtype_ok(p->w_dtype) ||
        ref_mul(p->n_rows, p->dim, &elems))
        return KERN_ERR_INVALID;
    if (elems == 0)
        return KERN_OK;
    if (!p->x || !p->w || !p->out || !(p->eps >= 0.0f))
        return KERN_ERR_INVALID;
    for (int64_t r = 0; r < p->n_rows; r++) {
        const float *x = p->x + r * p->dim;
        float *out = p->out + r * p->dim;
        double ss = 0.0;
        for (int64_t i = 0; i < p->dim; i++)
            ss += (double)x[i] * (double)x[i];
        double inv = 1.0 / sqrt(ss / (double)p->dim + (double)p->eps);
        /* The normalised value is rounded to the activation type (fp32) before the gain, as
         * HF does; out may alias x, so x[i] is read before out[i] is written. */
        for (int64_t i = 0; i < p->dim; i++) {
            float normed = (float)((double)x[i] * inv);
            out[i] = (float)((double)ref_load(p->w, p->w_dtype, i) * (double)normed);
        }
    }
    return KERN_OK;
}
