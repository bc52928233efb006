/* Reference gather_rows: out[i, :] = x[rows[i], :]. Plain C, the specification of the op;
 * every row index is checked before anything is written. */
#include "ref.h"

int kern_ref_gather_rows(struct kern_ctx *ctx, const struct kern_gather_rows_params *p)
{
    int64_t in_elems, out_elems;
    (void)ctx;
    if (!p || p->n_in < 0 || p->n_out < 0 || p->dim < 0 || ref_mul(p->n_in, p->dim, &in_elems) ||
        ref_mul(p->n_out, p->dim, &out_elems))
        return KERN_ERR_INVALID;
    if (p->n_out == 0)
        return KERN_OK;
    if (!p->rows || (out_elems > 0 && (!p->x || !p->out)))
        return KERN_ERR_INVALID;
    for (int64_t i = 0; i < p->n_out; i++)
        if (p->rows[i] < 0 || p->rows[i] >= p->n_in)
            return KERN_ERR_INVALID;
    for (int64_t i = 0; i < p->n_out; i++)
        for (int64_t d = 0; d < p->dim; d++)
            p->out[i * p->dim + d] = p->x[(int64_t)p->rows[i] * p->dim + d];
    return KERN_OK;
}
