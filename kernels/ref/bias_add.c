/* Reference bias add: y[r, i] += b[i] over rows of stride ldy (a linear layer's bias). Plain C,
 * the specification. */
#include "ref.h"

int kern_ref_bias_add_check(const struct kern_bias_add_params *p)
{
    int64_t span;
    if (!p || p->n_rows < 0 || p->dim < 0 || !ref_dtype_ok(p->b_dtype) ||
        ref_span(p->n_rows, p->dim, p->ldy, &span))
        return KERN_ERR_INVALID;
    if (p->n_rows > 0 && p->dim > 0 && (!p->y || !p->b))
        return KERN_ERR_INVALID;
    return KERN_OK;
}

int kern_ref_bias_add(struct kern_ctx *ctx, const struct kern_bias_add_params *p)
{
    (void)ctx;
    int rc = kern_ref_bias_add_check(p);
    if (rc != KERN_OK || p->n_rows == 0 || p->dim == 0)
        return rc;
    for (int64_t r = 0; r < p->n_rows; r++)
        for (int64_t i = 0; i < p->dim; i++)
            p->y[r * p->ldy + i] += ref_load(p->b, p->b_dtype, i);
    return KERN_OK;
}
