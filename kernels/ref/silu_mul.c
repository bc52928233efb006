/* Reference silu_mul: out = silu(gate) * up over the fused [gate | up] projection, in fp64.
 * Plain C, the specification of the op. */
#include <math.h>

#include "ref.h"

int kern_ref_silu_mul(struct kern_ctx *ctx, const struct kern_silu_mul_params *p)
{
    int64_t two, elems;
    (void)ctx;
    if (!p || p->n_tokens < 0 || p->inter < 0 || ref_mul(p->inter, 2, &two) ||
        ref_mul(p->n_tokens, two, &elems))
        return KERN_ERR_INVALID;
    if (elems == 0)
        return KERN_OK;
    if (!p->gu || !p->out)
        return KERN_ERR_INVALID;
    for (int64_t t = 0; t < p->n_tokens; t++) {
        const float *gate = p->gu + t * two;
        const float *up = gate + p->inter;
        for (int64_t i = 0; i < p->inter; i++) {
            double g = gate[i];
            p->out[t * p->inter + i] = (float)(g / (1.0 + exp(-g)) * (double)up[i]);
        }
    }
    return KERN_OK;
}
