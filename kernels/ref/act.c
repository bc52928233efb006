/* Reference elementwise activations (kern_act_params): the exact GELU of nn.GELU() and CLIP's
 * quick_gelu, in fp64. Plain C, the specification of the op; not a fused matmul epilogue. */
#include <math.h>

#include "ref.h"

int kern_ref_act_check(const struct kern_act_params *p)
{
    if (!p || p->n < 0 || p->n > REF_MAX_ELEMS ||
        (p->kind != KERN_ACT_GELU && p->kind != KERN_ACT_QUICK_GELU))
        return KERN_ERR_INVALID;
    if (p->n > 0 && (!p->x || !p->out))
        return KERN_ERR_INVALID;
    return KERN_OK;
}

/* 0.5 x (1 + erf(x / sqrt 2)) written with erfc, which keeps full relative precision where
 * 1 + erf(.) would cancel (large negative x). */
static double gelu(double x)
{
    return 0.5 * x * erfc(-x * 0.70710678118654752440);
}

/* x * sigmoid(1.702 x), the sigmoid from exp(-|z|) so that it never overflows. */
static double quick_gelu(double x)
{
    double z = 1.702 * x;
    if (z >= 0.0)
        return x / (1.0 + exp(-z));
    double e = exp(z);
    return x * e / (1.0 + e);
}

int kern_ref_act(struct kern_ctx *ctx, const struct kern_act_params *p)
{
    (void)ctx;
    int rc = kern_ref_act_check(p);
    if (rc != KERN_OK || p->n == 0)
        return rc;
    for (int64_t i = 0; i < p->n; i++) {
        float x = p->x[i];
        /* The limit at -inf is -0; the formulas would give -inf * 0 = NaN there. */
        if (x == -INFINITY)
            p->out[i] = -0.0f;
        else
            p->out[i] = (float)(p->kind == KERN_ACT_GELU ? gelu(x) : quick_gelu(x));
    }
    return KERN_OK;
}
