/* Reference argmax: for each row, the first index of its largest value, NaN counting as -inf,
 * -1 when no value is above -inf (kern_argmax_params in ops.h). Plain C, the specification of
 * the op and the exact mirror of the sampler's greedy pick; it does not sample. */
#include <math.h>

#include "ref.h"

int kern_ref_argmax(struct kern_ctx *ctx, const struct kern_argmax_params *p)
{
    int64_t span;
    (void)ctx;
    if (!p || p->n_rows < 0 || p->dim < 0 || p->dim > INT32_MAX ||
        ref_span(p->n_rows, p->dim, p->ldx, &span))
        return KERN_ERR_INVALID;
    if (p->n_rows == 0)
        return KERN_OK;
    if (!p->out || (span > 0 && !p->x))
        return KERN_ERR_INVALID;
    for (int64_t r = 0; r < p->n_rows; r++) {
        /* A strict > never takes a NaN, never takes -inf, and keeps the earliest of equal
         * values: exactly the sampler's rule. */
        float best = -INFINITY;
        int64_t at = -1;
        for (int64_t i = 0; i < p->dim; i++) {
            float v = p->x[r * p->ldx + i];
            if (v > best) {
                best = v;
                at = i;
            }
        }
        p->out[r] = (int32_t)at;
    }
    return KERN_OK;
}
