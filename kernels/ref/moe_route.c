/* Reference sparsemixer routing (Phi-3.5-MoE at inference): the top-2 experts of each token
 * and their masked-softmax weights, as kernels/ops.h states it. Plain C, the specification. */
#include <math.h>

#include "ref.h"

/* Logit k of a row with NaN as -inf. */
static float score(const float *s, int64_t k)
{
    return isnan(s[k]) ? -INFINITY : s[k];
}

/* The first index of the largest score other than skip (-1: none skipped). */
static int64_t first_max(const float *s, int64_t n, int64_t skip)
{
    int64_t best = -1;
    for (int64_t k = 0; k < n; k++)
        if (k != skip && (best < 0 || score(s, k) > score(s, best)))
            best = k;
    return best;
}

/* 1 / sum of exp(s_k - m) over the k != skip that the mask of threshold m keeps; 0 when m is
 * -inf. */
static float pick_weight(const float *s, int64_t n, int64_t skip, float m, float thr)
{
    if (m == -INFINITY)
        return 0.0f;
    double sum = 0.0;
    for (int64_t k = 0; k < n; k++) {
        float sk = score(s, k);
        float factor = fabsf(sk) > m ? fabsf(sk) : m;
        if (k == skip || (m - sk) / factor > thr)
            continue;
        sum += exp((double)sk - (double)m);
    }
    return (float)(1.0 / sum);
}

int kern_ref_moe_route(struct kern_ctx *ctx, const struct kern_moe_route_params *p)
{
    int64_t span, pairs;
    (void)ctx;
    if (!p || p->n_tokens < 0 || p->n_experts < 2 || p->n_experts > INT32_MAX ||
        ref_span(p->n_tokens, p->n_experts, p->ldx, &span) || ref_mul(p->n_tokens, 2, &pairs) ||
        !(p->jitter_eps >= 0.0f))
        return KERN_ERR_INVALID;
    if (p->n_tokens == 0)
        return KERN_OK;
    if (!p->logits || !p->experts || !p->weights)
        return KERN_ERR_INVALID;
    float thr = (float)(2.0 * (double)p->jitter_eps);
    for (int64_t t = 0; t < p->n_tokens; t++) {
        const float *s = p->logits + t * p->ldx;
        int64_t i1 = first_max(s, p->n_experts, -1);
        int64_t i2 = first_max(s, p->n_experts, i1);
        p->experts[2 * t] = (int32_t)i1;
        p->experts[2 * t + 1] = (int32_t)i2;
        p->weights[2 * t] = pick_weight(s, p->n_experts, -1, score(s, i1), thr);
        p->weights[2 * t + 1] = pick_weight(s, p->n_experts, i1, score(s, i2), thr);
    }
    return KERN_OK;
}
