/* Reference paged attention over variable-length sequences (prefill, decode and chunked
 * prefill in one call), with causal, sliding-window and GQA masking, in fp64.
 * Plain C, the specification of the op; it never touches a cache slot outside [0, ctx_len). */
#include <math.h>
#include <stdlib.h>

#include "ref.h"

int kern_ref_attention_check(const struct kern_attention_params *p)
{
    int64_t row, qspan, kv_row, cache, table, capacity;
    if (!p || p->n_tokens < 0 || p->n_seqs < 0 || p->n_heads < 1 || p->n_kv_heads < 1 ||
        p->n_heads % p->n_kv_heads != 0 || p->head_dim < 1 || p->max_blocks < 0 ||
        p->block_size < 1 || p->n_slots < 0 || p->sliding_window < 0 ||
        !ref_dtype_ok(p->cache_dtype))
        return KERN_ERR_INVALID;
    if (ref_mul(p->n_heads, p->head_dim, &row) || ref_span(p->n_tokens, row, p->q_stride, &qspan) ||
        ref_mul(p->n_kv_heads, p->head_dim, &kv_row) || ref_mul(p->n_slots, kv_row, &cache) ||
        ref_mul(p->n_seqs, p->max_blocks, &table) ||
        ref_mul(p->max_blocks, p->block_size, &capacity))
        return KERN_ERR_INVALID;
    if (p->n_seqs == 0)
        return KERN_OK;
    if (!p->q_start || !p->q_len || !p->ctx_len || (table > 0 && !p->block_tables))
        return KERN_ERR_INVALID;
    if (p->n_tokens > 0 && (!p->q || !p->out))
        return KERN_ERR_INVALID;
    for (int64_t s = 0; s < p->n_seqs; s++) {
        int64_t qs = p->q_start[s], ql = p->q_len[s], cl = p->ctx_len[s];
        if (qs < 0 || ql < 0 || ql > cl || cl > capacity || qs > p->n_tokens - ql)
            return KERN_ERR_INVALID;
        if (ql == 0)
            continue; /* nothing is read for a sequence without query rows */
        if (!p->k_cache || !p->v_cache)
            return KERN_ERR_INVALID;
        /* Every block that holds a position < ctx_len must name slots inside the cache. */
        const int32_t *bt = p->block_tables + s * p->max_blocks;
        for (int64_t b = 0; b * p->block_size < cl; b++) {
            int64_t used = cl - b * p->block_size;
            if (used > p->block_size)
                used = p->block_size;
            /* Slots bt[b] * block_size + 0 .. used-1 must lie in [0, n_slots). */
            if (bt[b] < 0 || bt[b] > (p->n_slots - used) / p->block_size ||
                (int64_t)bt[b] * p->block_size + used > p->n_slots)
                return KERN_ERR_INVALID;
        }
    }
    return KERN_OK;
}

int kern_ref_attention(struct kern_ctx *ctx, const struct kern_attention_params *p)
{
    (void)ctx;
    int rc = kern_ref_attention_check(p);
    if (rc)
        return rc;
    int64_t group = p->n_heads / p->n_kv_heads, d = p->head_dim, kv_row = p->n_kv_heads * d;
    int64_t max_ctx = 0;
    for (int64_t s = 0; s < p->n_seqs; s++)
        if (p->ctx_len[s] > max_ctx)
            max_ctx = p->ctx_len[s];
    double *score = malloc((size_t)(max_ctx > 0 ? max_ctx : 1) * sizeof *score);
    double *acc = malloc((size_t)d * sizeof *acc);
    if (!score || !acc) {
        free(score);
        free(acc);
        return KERN_ERR_NOMEM;
    }
    for (int64_t s = 0; s < p->n_seqs; s++) {
        const int32_t *bt = p->block_tables + s * p->max_blocks;
        int64_t cl = p->ctx_len[s], ql = p->q_len[s];
        for (int64_t i = 0; i < ql; i++) {
            int64_t tok = p->q_start[s] + i;
            int64_t pos = cl - ql + i;
            /* Visible keys: j <= pos and, with a window W, j > pos - W (W keys incl. self). */
            int64_t lo = 0;
            if (p->sliding_window > 0 && pos - p->sliding_window + 1 > 0)
                lo = pos - p->sliding_window + 1;
            for (int64_t h = 0; h < p->n_heads; h++) {
                const float *q = p->q + tok * p->q_stride + h * d;
                int64_t kvh = h / group;
                double mx = -INFINITY;
                for (int64_t j = lo; j <= pos; j++) {
                    int64_t slot = (int64_t)bt[j / p->block_size] * p->block_size + j % p->block_size;
                    int64_t base = slot * kv_row + kvh * d;
                    double dot = 0.0;
                    for (int64_t e = 0; e < d; e++)
                        dot += (double)q[e] * (double)ref_load(p->k_cache, p->cache_dtype, base + e);
                    score[j] = dot * (double)p->scale;
                    if (score[j] > mx)
                        mx = score[j];
                }
                double sum = 0.0;
                for (int64_t e = 0; e < d; e++)
                    acc[e] = 0.0;
                for (int64_t j = lo; j <= pos; j++) {
                    int64_t slot = (int64_t)bt[j / p->block_size] * p->block_size + j % p->block_size;
                    int64_t base = slot * kv_row + kvh * d;
                    double w = exp(score[j] - mx); /* NaN scores propagate through w */
                    sum += w;
                    for (int64_t e = 0; e < d; e++)
                        acc[e] += w * (double)ref_load(p->v_cache, p->cache_dtype, base + e);
                }
                float *out = p->out + (tok * p->n_heads + h) * d;
                for (int64_t e = 0; e < d; e++)
                    out[e] = (float)(acc[e] / sum);
            }
        }
    }
    free(score);
    free(acc);
    return KERN_OK;
}
