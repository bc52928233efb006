/* Reference add: y += x elementwise (the residual add). Plain C, the specification. */
#include "ref.h"

int kern_ref_add(struct kern_ctx *ctx, const struct kern_add_params *p)
{
    (void)ctx;
    if (!p || p->n < 0 || p->n > REF_MAX_ELEMS)
        return KERN_ERR_INVALID;
    if (p->n == 0)
        return KERN_OK;
    if (!p->y || !p->x)
        return KERN_ERR_INVALID;
    for (int64_t i = 0; i < p->n; i++)
        p->y[i] += p->x[i];
    return KERN_OK;
}
