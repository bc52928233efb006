/* Reference rotary embedding (NeoX / rotate_half layout, partial rotary, per-token variant).
 * Plain C, the specification of the op: angles as the fp32 product, rotation in fp64. */
#include <math.h>

#include "ref.h"

int kern_ref_rope(struct kern_ctx *ctx, const struct kern_rope_params *p)
{
    int64_t row, span, freqs;
    (void)ctx;
    if (!p || p->n_tokens < 0 || p->n_heads < 0 || p->head_dim < 0 || p->rot_dim < 0 ||
        p->rot_dim % 2 != 0 || p->rot_dim > p->head_dim || p->n_variants < 1)
        return KERN_ERR_INVALID;
    if (ref_mul(p->n_heads, p->head_dim, &row) || ref_span(p->n_tokens, row, p->token_stride, &span) ||
        ref_mul(p->n_variants, p->rot_dim / 2, &freqs))
        return KERN_ERR_INVALID;
    if (p->n_tokens == 0)
        return KERN_OK;
    if (!p->x || !p->positions || (freqs > 0 && !p->inv_freq))
        return KERN_ERR_INVALID;
    for (int64_t t = 0; t < p->n_tokens; t++) {
        if (p->positions[t] < 0)
            return KERN_ERR_INVALID;
        if (p->variant && p->variant[t] >= p->n_variants)
            return KERN_ERR_INVALID;
    }
    int64_t h = p->rot_dim / 2;
    for (int64_t t = 0; t < p->n_tokens; t++) {
        const float *f = p->inv_freq + (int64_t)(p->variant ? p->variant[t] : 0) * h;
        float pos = (float)p->positions[t];
        for (int64_t hd = 0; hd < p->n_heads; hd++) {
            float *x = p->x + t * p->token_stride + hd * p->head_dim;
            for (int64_t i = 0; i < h; i++) {
                float angle = pos * f[i]; /* fp32 product, as the contract (and HF) has it */
                double c = (double)p->mscale * cos((double)angle);
                double s = (double)p->mscale * sin((double)angle);
                double a = x[i], b = x[i + h];
                x[i] = (float)(a * c - b * s);
                x[i + h] = (float)(b * c + a * s);
            }
        }
    }
    return KERN_OK;
}
