/* Phi3ForCausalLM, the dense Phi-3 / Phi-3.5 decoder, written as the math of
 * reference/phi3-models.md §3: embed; per layer RMSNorm -> fused QKV -> RoPE -> paged attention
 * -> o_proj + residual -> RMSNorm -> fused gate/up -> SiLU-gate -> down + residual; final norm;
 * LM head on the requested rows. Every step is one op-table call for the whole batch. */
#include "phi3.h"

#include <math.h>
#include <stdlib.h>

#define TRY(call)              \
    do {                       \
        int rc_ = (call);      \
        if (rc_ != 0)          \
            return rc_;        \
    } while (0)

static int grow(float **buf, int64_t n)
{
    float *p = realloc(*buf, (size_t)n * sizeof *p);
    if (!p)
        return KERN_ERR_NOMEM;
    *buf = p;
    return 0;
}

static int ws_reserve(struct eng_phi3_ws *ws, const struct eng_model_config *c, int64_t n_tokens,
                      int64_t n_rows)
{
    if (n_tokens > ws->cap_tokens) {
        int64_t T = n_tokens, H = c->hidden_size, I = c->intermediate_size, hd = c->head_dim;
        int64_t nh = c->num_attention_heads, nkv = c->num_key_value_heads;
        TRY(grow(&ws->x, T * H));
        TRY(grow(&ws->h, T * H));
        TRY(grow(&ws->qkv, T * (nh + 2 * nkv) * hd));
        TRY(grow(&ws->attn, T * nh * hd));
        TRY(grow(&ws->gu, T * 2 * I));
        TRY(grow(&ws->act, T * I));
        uint8_t *v = realloc(ws->tok_variant, (size_t)T);
        if (!v)
            return KERN_ERR_NOMEM;
        ws->tok_variant = v;
        ws->cap_tokens = T;
    }
    if (n_rows > ws->cap_logit_rows) {
        TRY(grow(&ws->last, n_rows * c->hidden_size));
        ws->cap_logit_rows = n_rows;
    }
    return 0;
}

void eng_phi3_ws_free(struct eng_phi3_ws *ws)
{
    free(ws->x);
    free(ws->h);
    free(ws->qkv);
    free(ws->attn);
    free(ws->gu);
    free(ws->act);
    free(ws->tok_variant);
    free(ws->last);
    *ws = (struct eng_phi3_ws){0};
}

static int rmsnorm(const struct kern_ops *ops, struct kern_ctx *ctx, const float *x,
                   struct eng_weight w, float *out, int64_t rows, int64_t dim, double eps)
{
    struct kern_rmsnorm_params p = {
        .x = x, .w = w.data, .w_dtype = w.dtype, .out = out,
        .n_rows = rows, .dim = dim, .eps = (float)eps,
    };
    return ops->rmsnorm(ctx, &p);
}

/* y[m, n] (+)= x[m, k] @ W^T */
static int linear(const struct kern_ops *ops, struct kern_ctx *ctx, const float *x,
                  struct eng_weight w, float *y, int64_t m, int64_t n, int64_t k, int accumulate)
{
    struct kern_matmul_params p = {
        .x = x, .w = w.data, .w_dtype = w.dtype, .y = y,
        .m = m, .n = n, .k = k, .ldx = k, .ldy = n, .accumulate = accumulate,
    };
    return ops->matmul(ctx, &p);
}

/* Attention block: x += o_proj(attention(rope(qkv_proj(norm(x))))) for one layer. */
static int attention_block(const struct eng_model *m, const struct kern_ops *ops,
                           struct kern_ctx *ctx, struct eng_kv_cache *kv, int64_t layer,
                           const struct eng_batch *b, struct eng_phi3_ws *ws)
{
    const struct eng_model_config *c = &m->cfg;
    const struct eng_phi3_layer *L = &m->layers[layer];
    int64_t T = b->n_tokens, H = c->hidden_size, hd = c->head_dim;
    int64_t nh = c->num_attention_heads, nkv = c->num_key_value_heads;
    int64_t qkv_width = (nh + 2 * nkv) * hd;
    float *q = ws->qkv;                     /* [T, nh, hd], token stride qkv_width */
    float *k = ws->qkv + nh * hd;           /* [T, nkv, hd] */
    float *v = ws->qkv + (nh + nkv) * hd;   /* [T, nkv, hd] */

    TRY(rmsnorm(ops, ctx, ws->x, L->input_norm, ws->h, T, H, c->rms_norm_eps));
    TRY(linear(ops, ctx, ws->h, L->qkv, ws->qkv, T, qkv_width, H, 0));

    struct kern_rope_params rope = {
        .x = q, .positions = b->positions, .variant = ws->tok_variant,
        .inv_freq = m->inv_freq, .n_tokens = T, .n_heads = nh, .head_dim = hd,
        .rot_dim = c->rotary_dim, .token_stride = qkv_width,
        .n_variants = m->n_rope_variants, .mscale = m->mscale,
    };
    TRY(ops->rope(ctx, &rope));
    rope.x = k;
    rope.n_heads = nkv;
    TRY(ops->rope(ctx, &rope));

    int64_t n_slots = kv->n_blocks * kv->block_size;
    struct kern_kv_write_params w = {
        .k = k, .v = v, .slot_mapping = b->slot_mapping,
        .k_cache = kv->k[layer], .v_cache = kv->v[layer], .cache_dtype = kv->dtype,
        .n_tokens = T, .n_kv_heads = nkv, .head_dim = hd, .token_stride = qkv_width,
        .n_slots = n_slots,
    };
    TRY(ops->kv_write(ctx, &w));

    struct kern_attention_params a = {
        .q = q, .k_cache = kv->k[layer], .v_cache = kv->v[layer], .cache_dtype = kv->dtype,
        .out = ws->attn, .q_start = b->q_start, .q_len = b->q_len, .ctx_len = b->ctx_len,
        .block_tables = b->block_tables, .n_tokens = T, .n_seqs = b->n_seqs,
        .n_heads = nh, .n_kv_heads = nkv, .head_dim = hd, .q_stride = qkv_width,
        .max_blocks = b->max_blocks, .block_size = kv->block_size, .n_slots = n_slots,
        .sliding_window = c->sliding_window, .scale = (float)(1.0 / sqrt((double)hd)),
    };
    TRY(ops->attention(ctx, &a));

    /* Residual add fused into the projection: x += attn @ Wo^T. */
    return linear(ops, ctx, ws->attn, L->o, ws->x, T, H, nh * hd, 1);
}

/* MLP block: x += down(silu(gate) * up), [gate | up] = gate_up_proj(norm(x)). */
static int mlp_block(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     int64_t layer, int64_t T, struct eng_phi3_ws *ws)
{
    const struct eng_model_config *c = &m->cfg;
    const struct eng_phi3_layer *L = &m->layers[layer];
    int64_t H = c->hidden_size, I = c->intermediate_size;

    TRY(rmsnorm(ops, ctx, ws->x, L->post_norm, ws->h, T, H, c->rms_norm_eps));
    TRY(linear(ops, ctx, ws->h, L->gate_up, ws->gu, T, 2 * I, H, 0));
    struct kern_silu_mul_params s = {.gu = ws->gu, .out = ws->act, .n_tokens = T, .inter = I};
    TRY(ops->silu_mul(ctx, &s));
    return linear(ops, ctx, ws->act, L->down, ws->x, T, H, I, 1);
}

int eng_phi3_forward(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     struct eng_kv_cache *kv, const struct eng_batch *b, struct eng_phi3_ws *ws,
                     float *logits)
{
    const struct eng_model_config *c = &m->cfg;
    int64_t T = b->n_tokens, H = c->hidden_size, V = c->vocab_size;
    if (T <= 0 || b->n_seqs <= 0)
        return KERN_ERR_INVALID;
    TRY(ws_reserve(ws, c, T, b->n_logit_rows));

    /* Each token rotates with its sequence's RoPE table. */
    for (int32_t s = 0; s < b->n_seqs; s++) {
        if (b->rope_variant[s] >= m->n_rope_variants || b->q_start[s] < 0 || b->q_len[s] < 0 ||
            b->q_start[s] > T - b->q_len[s])
            return KERN_ERR_INVALID;
        for (int32_t i = 0; i < b->q_len[s]; i++)
            ws->tok_variant[b->q_start[s] + i] = b->rope_variant[s];
    }

    struct kern_embed_params e = {
        .ids = b->token_ids, .table = m->embed.data, .table_dtype = m->embed.dtype,
        .out = ws->x, .n_tokens = T, .vocab = V, .hidden = H,
    };
    TRY(ops->embed(ctx, &e));

    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        TRY(attention_block(m, ops, ctx, kv, l, b, ws));
        TRY(mlp_block(m, ops, ctx, l, T, ws));
    }

    if (b->n_logit_rows == 0)
        return 0;
    struct kern_gather_rows_params g = {
        .x = ws->x, .rows = b->logit_rows, .out = ws->last,
        .n_in = T, .n_out = b->n_logit_rows, .dim = H,
    };
    TRY(ops->gather_rows(ctx, &g));
    TRY(rmsnorm(ops, ctx, ws->last, m->final_norm, ws->last, b->n_logit_rows, H, c->rms_norm_eps));
    return linear(ops, ctx, ws->last, m->lm_head, logits, b->n_logit_rows, V, H, 0);
}
