/* Reference dense attention (kern_attention_dense_params): every query of a sequence against
 * every key of it, no cache and no mask, in fp64 with two passes per query (the max score, then
 * the weights and the weighted sum of the values). Plain C, the specification; not the paged
 * causal attention of the language model (ref/attention.c). */
#include <math.h>

#include "ref.h"

/* Whether the n-float ranges at a and b share an element (n_a, n_b > 0). */
static int overlaps(const float *a, int64_t n_a, const float *b, int64_t n_b)
{
    uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
    return a0 < b0 + (uintptr_t)n_b * sizeof(float) && b0 < a0 + (uintptr_t)n_a * sizeof(float);
}

int kern_ref_attention_dense_check(const struct kern_attention_dense_params *p)
{
    int64_t row, tokens, span, out_elems;
    if (!p || p->n_seqs < 0 || p->seq_len < 0 || p->n_heads < 0 || p->head_dim < 1 ||
        p->head_dim > KERN_ATTENTION_DENSE_MAX_HEAD_DIM || ref_mul(p->n_heads, p->head_dim, &row) ||
        p->ld < row || ref_mul(p->n_seqs, p->seq_len, &tokens) ||
        ref_span(tokens, row, p->ld, &span) || ref_mul(tokens, row, &out_elems))
        return KERN_ERR_INVALID;
    if (out_elems == 0)
        return KERN_OK;
    if (!p->q || !p->k || !p->v || !p->out)
        return KERN_ERR_INVALID;
    if (overlaps(p->out, out_elems, p->q, span) || overlaps(p->out, out_elems, p->k, span) ||
        overlaps(p->out, out_elems, p->v, span))
        return KERN_ERR_INVALID;
    return KERN_OK;
}

static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0.0;
    for (int64_t e = 0; e < n; e++)
        s += (double)a[e] * (double)b[e];
    return s;
}

int kern_ref_attention_dense(struct kern_ctx *ctx, const struct kern_attention_dense_params *p)
{
    (void)ctx;
    int rc = kern_ref_attention_dense_check(p);
    if (rc != KERN_OK || p->n_seqs == 0 || p->seq_len == 0 || p->n_heads == 0)
        return rc;
    const int64_t d = p->head_dim, L = p->seq_len, ld = p->ld;
    const double scale = (double)p->scale;
    double acc[KERN_ATTENTION_DENSE_MAX_HEAD_DIM];
    for (int64_t s = 0; s < p->n_seqs; s++) {
        const int64_t t0 = s * L;
        for (int64_t h = 0; h < p->n_heads; h++) {
            for (int64_t i = 0; i < L; i++) {
                const float *q = p->q + (t0 + i) * ld + h * d;
                /* The largest score; NaN scores are skipped here and poison the sum below. */
                double mx = -INFINITY;
                for (int64_t u = 0; u < L; u++) {
                    double sc = scale * dot(q, p->k + (t0 + u) * ld + h * d, d);
                    if (sc > mx)
                        mx = sc;
                }
                double l = 0.0;
                for (int64_t e = 0; e < d; e++)
                    acc[e] = 0.0;
                for (int64_t u = 0; u < L; u++) {
                    double w = exp(scale * dot(q, p->k + (t0 + u) * ld + h * d, d) - mx);
                    const float *v = p->v + (t0 + u) * ld + h * d;
                    l += w;
                    for (int64_t e = 0; e < d; e++)
                        acc[e] += w * (double)v[e];
                }
                float *out = p->out + ((t0 + i) * p->n_heads + h) * d;
                for (int64_t e = 0; e < d; e++)
                    out[e] = (float)(acc[e] / l);
            }
        }
    }
    return KERN_OK;
}
