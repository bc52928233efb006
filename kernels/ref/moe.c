/* Reference mixture-of-experts FFN: for every token, the weighted sum of its routed experts'
 * SiLU-gated MLPs added to y, as kernels/ops.h states it, from float or block-format experts
 * (ref_load decodes each element). Plain C in fp64, one token and one expert at a time: the
 * specification, not a fast path. */
#include <math.h>
#include <stdlib.h>

#include "ref.h"

/* Whether the experts' rows can be stored in w_dtype: any float type, or a block format
 * (ops.h) when both row lengths, hidden (gate, up) and inter (down), are whole blocks. */
static int moe_dtype_ok(const struct kern_moe_params *p)
{
    if (ref_dtype_ok(p->w_dtype))
        return 1;
    int64_t be = kern_dtype_block_elems(p->w_dtype);
    return be > 0 && p->hidden % be == 0 && p->inter % be == 0;
}

int kern_ref_moe_args_check(const struct kern_moe_params *p)
{
    int64_t elems, pairs, w_elems;
    if (!p || p->n_tokens < 0 || p->hidden < 0 || p->inter < 0 || p->n_experts < 1 ||
        p->n_experts > INT32_MAX || p->top_k < 1 || !moe_dtype_ok(p) ||
        ref_mul(p->n_tokens, p->hidden, &elems) || ref_mul(p->n_tokens, p->top_k, &pairs) ||
        ref_mul(p->hidden, p->inter, &w_elems) ||
        kern_moe_work_bytes(p->n_tokens, p->top_k, p->hidden, p->inter, p->n_experts) == 0)
        return KERN_ERR_INVALID;
    if (elems > 0 && (!p->x || !p->experts || !p->weights || !p->y || !p->work || !p->w_gate ||
                      !p->w_up || !p->w_down))
        return KERN_ERR_INVALID;
    return KERN_OK;
}

int kern_ref_moe_check(const struct kern_moe_params *p)
{
    int rc = kern_ref_moe_args_check(p);
    if (rc != KERN_OK || p->n_tokens == 0 || p->hidden == 0)
        return rc;
    int64_t pairs = p->n_tokens * p->top_k; /* checked above */
    for (int64_t i = 0; i < pairs; i++) {
        int32_t e = p->experts[i];
        if (e < 0 || e >= p->n_experts || (p->inter > 0 && (!p->w_gate[e] || !p->w_up[e] ||
                                                             !p->w_down[e])))
            return KERN_ERR_INVALID;
    }
    return KERN_OK;
}

int kern_ref_moe(struct kern_ctx *ctx, const struct kern_moe_params *p)
{
    (void)ctx;
    int rc = kern_ref_moe_check(p);
    if (rc != KERN_OK || p->n_tokens == 0 || p->hidden == 0)
        return rc;
    int64_t H = p->hidden, I = p->inter, K = p->top_k;
    double *act = malloc((size_t)(I > 0 ? I : 1) * sizeof *act);
    double *sum = malloc((size_t)H * sizeof *sum);
    int64_t *order = malloc((size_t)K * sizeof *order);
    if (!act || !sum || !order) {
        free(act);
        free(sum);
        free(order);
        return KERN_ERR_NOMEM;
    }
    for (int64_t t = 0; t < p->n_tokens; t++) {
        const float *x = p->x + t * H;
        const int32_t *ex = p->experts + t * K;
        /* The slots in ascending expert order, ties by slot (a stable insertion sort). */
        for (int64_t k = 0; k < K; k++) {
            int64_t j = k;
            for (; j > 0 && ex[order[j - 1]] > ex[k]; j--)
                order[j] = order[j - 1];
            order[j] = k;
        }
        for (int64_t o = 0; o < H; o++)
            sum[o] = 0.0;
        for (int64_t n = 0; n < K; n++) {
            int64_t k = order[n];
            int32_t e = ex[k];
            double w = (double)p->weights[t * K + k];
            for (int64_t i = 0; i < I; i++) {
                double g = 0.0, u = 0.0;
                for (int64_t h = 0; h < H; h++) {
                    g += (double)ref_load(p->w_gate[e], p->w_dtype, i * H + h) * (double)x[h];
                    u += (double)ref_load(p->w_up[e], p->w_dtype, i * H + h) * (double)x[h];
                }
                act[i] = g / (1.0 + exp(-g)) * u;
            }
            for (int64_t o = 0; o < H; o++) {
                double d = 0.0;
                for (int64_t i = 0; i < I; i++)
                    d += (double)ref_load(p->w_down[e], p->w_dtype, o * I + i) * act[i];
                sum[o] += w * d;
            }
        }
        for (int64_t o = 0; o < H; o++)
            p->y[t * H + o] = (float)((double)p->y[t * H + o] + sum[o]);
    }
    free(act);
    free(sum);
    free(order);
    return KERN_OK;
}
