/* Reference LayerNorm with bias: out = (x - mean) / sqrt(var + eps) * w + b per row, biased
 * variance, statistics in fp64. Plain C, the specification of the op; no threads, no SIMD. */
#include <math.h>

#include "ref.h"

int kern_ref_layernorm_check(const struct kern_layernorm_params *p)
{
    int64_t elems;
    if (!p || p->n_rows < 0 || p->dim < 0 || !ref_dtype_ok(p->w_dtype) ||
        ref_mul(p->n_rows, p->dim, &elems))
        return KERN_ERR_INVALID;
    if (elems > 0 && (!p->x || !p->w || !p->b || !p->out || !(p->eps >= 0.0f)))
        return KERN_ERR_INVALID;
    return KERN_OK;
}

int kern_ref_layernorm(struct kern_ctx *ctx, const struct kern_layernorm_params *p)
{
    (void)ctx;
    int rc = kern_ref_layernorm_check(p);
    if (rc != KERN_OK || p->n_rows == 0 || p->dim == 0)
        return rc;
    for (int64_t r = 0; r < p->n_rows; r++) {
        const float *x = p->x + r * p->dim;
        float *out = p->out + r * p->dim;
        double sum = 0.0;
        for (int64_t i = 0; i < p->dim; i++)
            sum += (double)x[i];
        double mean = sum / (double)p->dim, ss = 0.0;
        for (int64_t i = 0; i < p->dim; i++)
            ss += ((double)x[i] - mean) * ((double)x[i] - mean);
        double inv = 1.0 / sqrt(ss / (double)p->dim + (double)p->eps);
        /* out may alias x: x[i] is read before out[i] is written. */
        for (int64_t i = 0; i < p->dim; i++)
            out[i] = (float)(((double)x[i] - mean) * inv * (double)ref_load(p->w, p->w_dtype, i) +
                             (double)ref_load(p->b, p->w_dtype, i));
    }
    return KERN_OK;
}
