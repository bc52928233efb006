/* Reference matmul: y[m, n] (+)= x[m, k] @ W[n, k]^T with fp64 accumulation.
 * Plain C, the specification of the op; deliberately slow (no blocking, threads or SIMD). */
#include "ref.h"

int kern_ref_matmul_check(const struct kern_matmul_params *p)
{
    int64_t xs, ws, ys;
    if (!p || p->m < 0 || p->n < 0 || p->k < 0 || p->ldx < p->k || p->ldy < p->n ||
        (!ref_dtype_ok(p->w_dtype) && (kern_dtype_block_elems(p->w_dtype) == 0 ||
                                       p->k % kern_dtype_block_elems(p->w_dtype) != 0)))
        return KERN_ERR_INVALID;
    if (ref_span(p->m, p->k, p->ldx, &xs) || ref_mul(p->n, p->k, &ws) ||
        ref_span(p->m, p->n, p->ldy, &ys))
        return KERN_ERR_INVALID;
    if (ys > 0 && !p->y)
        return KERN_ERR_INVALID;
    if (ys > 0 && p->k > 0 && (!p->x || !p->w))
        return KERN_ERR_INVALID;
    return KERN_OK;
}

int kern_ref_matmul(struct kern_ctx *ctx, const struct kern_matmul_params *p)
{
    (void)ctx;
    int rc = kern_ref_matmul_check(p);
    if (rc)
        return rc;
    for (int64_t i = 0; i < p->m; i++) {
        for (int64_t j = 0; j < p->n; j++) {
            double acc = p->accumulate ? (double)p->y[i * p->ldy + j] : 0.0;
            for (int64_t t = 0; t < p->k; t++)
                acc += (double)p->x[i * p->ldx + t] *
                       (double)ref_load(p->w, p->w_dtype, j * p->k + t);
            p->y[i * p->ldy + j] = (float)acc;
        }
    }
    return KERN_OK;
}
