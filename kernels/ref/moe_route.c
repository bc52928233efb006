/* Reference sparsemixer routing (Phi-3.5-MoE at inference): the top-2 experts of each token
 * and their masked-softmax weights, as kernels/ops.h states it. Plain C, the specification. */
#include "../moe_route.h"
#include "ref.h"

int kern_ref_moe_route_check(const struct kern_moe_route_params *p)
{
    int64_t span, pairs;
    if (!p || p->n_tokens < 0 || p->n_experts < 2 || p->n_experts > INT32_MAX ||
        ref_span(p->n_tokens, p->n_experts, p->ldx, &span) || ref_mul(p->n_tokens, 2, &pairs) ||
        !(p->jitter_eps >= 0.0f))
        return KERN_ERR_INVALID;
    if (p->n_tokens > 0 && (!p->logits || !p->experts || !p->weights))
        return KERN_ERR_INVALID;
    return KERN_OK;
}

int kern_ref_moe_route(struct kern_ctx *ctx, const struct kern_moe_route_params *p)
{
    (void)ctx;
    int rc = kern_ref_moe_route_check(p);
    if (rc != KERN_OK || p->n_tokens == 0)
        return rc;
    float thr = (float)(2.0 * (double)p->jitter_eps);
    for (int64_t t = 0; t < p->n_tokens; t++)
        kern_route_row(p->logits + t * p->ldx, p->n_experts, thr, p->experts + 2 * t,
                       p->weights + 2 * t);
    return KERN_OK;
}
