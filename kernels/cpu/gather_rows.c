/* Fast CPU gather_rows: one memcpy per selected row. Not threaded (a handful of logit rows).
 * Unusual calls, bad row indices included, go to the reference, which rejects them before
 * writing anything. */
#include <string.h>

#include "../ref/ref.h"
#include "cpu.h"

int kern_cpu_gather_rows(struct kern_ctx *ctx, const struct kern_gather_rows_params *p)
{
    int64_t in_elems, out_elems;
    if (!p || p->n_out <= 0 || p->n_in < 0 || p->dim <= 0 || ref_mul(p->n_in, p->dim, &in_elems) ||
        ref_mul(p->n_out, p->dim, &out_elems) || !p->rows || !p->x || !p->out)
        return kern_ref_gather_rows(ctx, p);
    for (int64_t i = 0; i < p->n_out; i++)
        if (p->rows[i] < 0 || p->rows[i] >= p->n_in)
            return kern_ref_gather_rows(ctx, p); /* rejects the row */
    for (int64_t i = 0; i < p->n_out; i++)
        memcpy(p->out + i * p->dim, p->x + (int64_t)p->rows[i] * p->dim,
               (size_t)p->dim * sizeof *p->out);
    return KERN_OK;
}
