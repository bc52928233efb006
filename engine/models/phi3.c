/* The Phi-3 family's decoders over a flat batch, written as the math of
 * reference/phi3-models.md: Phi3ForCausalLM (§3: embed; per layer RMSNorm -> fused QKV -> RoPE
 * -> paged attention -> o_proj + residual -> RMSNorm -> fused gate/up -> SiLU-gate -> down +
 * residual; final norm; LM head on the requested rows) and PhimoeForCausalLM (§4: LayerNorms
 * with bias, separate biased q/k/v/o, and a sparsemixer-routed mixture of experts for the MLP;
 * biased LM head). Every step is one op-table call for the whole batch. */
#include "phi3.h"

#include "layer_ops.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TRY(call)              \
    do {                       \
        int rc_ = (call);      \
        if (rc_ != 0)          \
            return rc_;        \
    } while (0)

/* The packed batch descriptor: one region per array, each aligned to 256 bytes. */
enum desc_part {
    DESC_IDS,       /* int32 [T] */
    DESC_POS,       /* int32 [T] */
    DESC_SLOTS,     /* int64 [T] */
    DESC_VARIANT,   /* uint8 [T] RoPE variant of each token */
    DESC_Q_START,   /* int32 [S] */
    DESC_Q_LEN,     /* int32 [S] */
    DESC_CTX_LEN,   /* int32 [S] */
    DESC_TABLES,    /* int32 [S * max_blocks] */
    DESC_ROWS,      /* int32 [R] */
    DESC_N_PARTS,
};

/* Byte offset of each part for these counts; returns the total size, 0 on a negative count or
 * overflow. */
static size_t desc_layout(int64_t T, int64_t S, int64_t n_table, int64_t R, size_t off[DESC_N_PARTS])
{
    const int64_t count[DESC_N_PARTS] = {T, T, T, T, S, S, S, n_table, R};
    const size_t size[DESC_N_PARTS] = {4, 4, 8, 1, 4, 4, 4, 4, 4};
    size_t total = 0;
    for (int i = 0; i < DESC_N_PARTS; i++) {
        if (count[i] < 0 || (uint64_t)count[i] > (SIZE_MAX / 4) / size[i])
            return 0;
        size_t bytes = ((size_t)count[i] * size[i] + 255) & ~(size_t)255;
        if (bytes > SIZE_MAX / 4 - total)
            return 0;
        off[i] = total;
        total += bytes;
    }
    return total ? total : 256;
}

/* rows * cols fp32 values in bytes into *out; 0, or KERN_ERR_INVALID on overflow. */
static int f32_bytes(int64_t rows, int64_t cols, size_t *out)
{
    if (rows < 0 || cols < 0 || (cols != 0 && rows > INT64_MAX / 4 / cols))
        return KERN_ERR_INVALID;
    *out = (size_t)(rows * cols) * sizeof(float);
    return 0;
}

/* Byte sizes of the activation buffers for T tokens (x, h, qkv, attn, gu, act) and R logit
 * rows (last, logits). */
struct ws_sizes {
    size_t x, qkv, attn, gu, act, last, logits;
    size_t router, route_experts, route_weights, moe_work; /* phimoe only, else 0 */
};

static int ws_sizes(const struct eng_model_config *c, int64_t T, int64_t R, struct ws_sizes *z)
{
    int64_t H = c->hidden_size, I = c->intermediate_size, hd = c->head_dim, V = c->vocab_size;
    int64_t nh = c->num_attention_heads, nkv = c->num_key_value_heads;
    /* The config loader bounds every dimension, so these widths do not overflow. */
    if (f32_bytes(T, H, &z->x) || f32_bytes(T, (nh + 2 * nkv) * hd, &z->qkv) ||
        f32_bytes(T, nh * hd, &z->attn) || f32_bytes(T, 2 * I, &z->gu) ||
        f32_bytes(T, I, &z->act) || f32_bytes(R, H, &z->last) || f32_bytes(R, V, &z->logits))
        return KERN_ERR_INVALID;
    z->router = z->route_experts = z->route_weights = z->moe_work = 0;
    if (c->arch != ENG_ARCH_PHIMOE)
        return 0;
    /* The experts replace the dense MLP's buffers; route_experts holds int32, 4 bytes too. */
    int64_t E = c->num_local_experts, K = c->num_experts_per_tok;
    z->gu = z->act = 0;
    z->moe_work = kern_moe_work_bytes(T, K, H, I, E);
    if (f32_bytes(T, E, &z->router) || f32_bytes(T, K, &z->route_experts) ||
        f32_bytes(T, K, &z->route_weights) || (T > 0 && z->moe_work == 0))
        return KERN_ERR_INVALID;
    return 0;
}

size_t eng_phi3_ws_bytes(const struct eng_model_config *cfg, int64_t n_tokens,
                         int64_t n_logit_rows, int64_t n_seqs, int64_t table_entries)
{
    struct ws_sizes z;
    size_t off[DESC_N_PARTS];
    size_t desc = desc_layout(n_tokens, n_seqs, table_entries, n_logit_rows, off);
    if (desc == 0 || ws_sizes(cfg, n_tokens, n_logit_rows, &z) != 0)
        return 0;
    size_t parts[] = {z.x,      z.x,           z.qkv,           z.attn,     z.gu,
                      z.act,    z.last,        z.logits,        desc,       z.router,
                      z.route_experts, z.route_weights, z.moe_work};
    size_t total = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (parts[i] > SIZE_MAX - total)
            return 0;
        total += parts[i];
    }
    return total;
}

/* Replaces ws->field by a backend buffer of bytes (contents are scratch: nothing is kept). The
 * old one goes first so that a device never holds both; on failure the field is NULL. */
#define REGROW(field, bytes)                                  \
    do {                                                      \
        void *p_ = NULL;                                      \
        ws->gen++;                                            \
        ws->ops.buf_free(ws->ctx, ws->field);                 \
        int rc_ = ws->ops.buf_alloc(ws->ctx, (bytes), &p_);   \
        ws->field = p_;                                       \
        if (rc_ != 0)                                         \
            return rc_;                                       \
    } while (0)

int eng_phi3_ws_reserve(struct eng_phi3_ws *ws, const struct eng_model_config *c,
                        const struct kern_ops *ops, struct kern_ctx *ctx, int64_t n_tokens,
                        int64_t n_logit_rows, int64_t n_seqs, int64_t table_entries)
{
    if (!ws->bound) {
        ws->ops = *ops;
        ws->ctx = ctx;
        ws->bound = 1;
    } else if (ws->ctx != ctx || ws->ops.buf_free != ops->buf_free) {
        return KERN_ERR_INVALID; /* the buffers belong to another backend */
    }
    struct ws_sizes z;
    size_t off[DESC_N_PARTS];
    size_t desc = desc_layout(n_tokens, n_seqs, table_entries, n_logit_rows, off);
    if (desc == 0 || ws_sizes(c, n_tokens, n_logit_rows, &z) != 0)
        return KERN_ERR_INVALID;
    if (n_tokens > ws->cap_tokens) {
        /* Until every buffer has grown, the capacity says none has. */
        ws->cap_tokens = 0;
        REGROW(x, z.x);
        REGROW(h, z.x);
        REGROW(qkv, z.qkv);
        REGROW(attn, z.attn);
        REGROW(gu, z.gu);
        REGROW(act, z.act);
        REGROW(router, z.router);
        REGROW(route_experts, z.route_experts);
        REGROW(route_weights, z.route_weights);
        REGROW(moe_work, z.moe_work);
        ws->cap_tokens = n_tokens;
    }
    if (n_logit_rows > ws->cap_logit_rows) {
        ws->cap_logit_rows = 0;
        REGROW(last, z.last);
        REGROW(logits, z.logits);
        uint8_t *taken = realloc(ws->row_taken, n_logit_rows > 0 ? (size_t)n_logit_rows : 1);
        if (!taken)
            return KERN_ERR_NOMEM;
        ws->row_taken = taken;
        ws->cap_logit_rows = n_logit_rows;
    }
    if (desc > ws->desc_cap) {
        ws->desc_cap = 0;
        free(ws->desc_host);
        ws->desc_host = malloc(desc);
        if (!ws->desc_host)
            return KERN_ERR_NOMEM;
        REGROW(desc, desc);
        ws->desc_cap = desc;
    }
    return 0;
}

/* Bytes of the sampling buffers: n_draws work rows of V floats; per job its descriptor, its
 * id, its logprob and its alternatives; n_mods mods. Nonzero on overflow. */
struct sampling_sizes {
    size_t work, jobs, out, logprob, top, mods;
};

static int sampling_sizes(int64_t V, int64_t n_jobs, int64_t n_draws, int64_t n_mods,
                          struct sampling_sizes *z)
{
    const size_t per_job = sizeof(struct kern_sample_job) + sizeof(int32_t) + sizeof(float) +
                           KERN_MAX_TOP_LOGPROBS * sizeof(struct kern_token_logprob);
    if (V < 1 || n_jobs < 0 || n_draws < 0 || n_mods < 0 || f32_bytes(n_draws, V, &z->work) ||
        (uint64_t)n_jobs > SIZE_MAX / 4 / per_job ||
        (uint64_t)n_mods > SIZE_MAX / 4 / sizeof(struct kern_sample_mod))
        return KERN_ERR_INVALID;
    z->jobs = (size_t)n_jobs * sizeof(struct kern_sample_job);
    z->out = (size_t)n_jobs * sizeof(int32_t);
    z->logprob = (size_t)n_jobs * sizeof(float);
    z->top = (size_t)n_jobs * KERN_MAX_TOP_LOGPROBS * sizeof(struct kern_token_logprob);
    z->mods = (size_t)n_mods * sizeof(struct kern_sample_mod);
    return 0;
}

size_t eng_phi3_ws_sampling_bytes(int64_t vocab, int64_t n_jobs, int64_t n_draws, int64_t n_mods)
{
    struct sampling_sizes z;
    if (sampling_sizes(vocab, n_jobs, n_draws, n_mods, &z) != 0)
        return 0;
    /* Each part other than work is below SIZE_MAX / 4. */
    size_t rest = z.jobs + z.out + z.logprob + z.top + z.mods;
    return z.work > SIZE_MAX - rest ? 0 : z.work + rest;
}

/* Replaces *buf by a backend buffer of bytes, old one first; NULL on failure. Unlike REGROW it
 * leaves ws->gen alone: no graph refers to the sampling buffers. */
static int regrow_sampling(struct eng_phi3_ws *ws, void **buf, size_t bytes)
{
    ws->ops.buf_free(ws->ctx, *buf);
    *buf = NULL;
    return ws->ops.buf_alloc(ws->ctx, bytes, buf);
}

int eng_phi3_ws_reserve_sampling(struct eng_phi3_ws *ws, int64_t vocab, int64_t n_jobs,
                                 int64_t n_draws, int64_t n_mods)
{
    struct sampling_sizes z;
    if (!ws->bound || sampling_sizes(vocab, n_jobs, n_draws, n_mods, &z) != 0)
        return KERN_ERR_INVALID;
    if (vocab != ws->sample_vocab) { /* the work rows are vocab wide */
        ws->cap_draws = 0;
        ws->sample_vocab = vocab;
    }
    if (n_draws > ws->cap_draws) {
        ws->cap_draws = 0;
        TRY(regrow_sampling(ws, (void **)&ws->sample_work, z.work));
        ws->cap_draws = n_draws;
    }
    if (n_jobs > ws->cap_jobs) {
        ws->cap_jobs = 0;
        TRY(regrow_sampling(ws, (void **)&ws->sample_jobs, z.jobs));
        TRY(regrow_sampling(ws, (void **)&ws->sample_out, z.out));
        TRY(regrow_sampling(ws, (void **)&ws->sample_logprob, z.logprob));
        TRY(regrow_sampling(ws, (void **)&ws->sample_top, z.top));
        ws->cap_jobs = n_jobs;
    }
    if (n_mods > ws->cap_mods) {
        ws->cap_mods = 0;
        TRY(regrow_sampling(ws, (void **)&ws->sample_mods, z.mods));
        ws->cap_mods = n_mods;
    }
    return 0;
}

void eng_phi3_ws_free(struct eng_phi3_ws *ws)
{
    for (int32_t i = 0; i < ws->n_graphs; i++)
        ws->ops.graph_destroy(ws->ctx, ws->graphs[i].g);
    free(ws->graphs);
    if (ws->bound) {
        void *bufs[] = {ws->x,      ws->h,           ws->qkv,         ws->attn,
                        ws->gu,     ws->act,         ws->last,        ws->logits,
                        ws->desc,   ws->sample_work, ws->sample_jobs, ws->sample_out,
                        ws->sample_mods, ws->sample_logprob, ws->sample_top, ws->router,
                        ws->route_experts, ws->route_weights, ws->moe_work};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            ws->ops.buf_free(ws->ctx, bufs[i]);
    }
    free(ws->desc_host);
    free(ws->row_taken);
    *ws = (struct eng_phi3_ws){0};
}

/* The batch as the ops see it: its sizes and pointers into the uploaded descriptor. A batch
 * padded for a graph has more tokens, sequences and block-table columns than eng_batch. */
struct dev_batch {
    int64_t n_tokens, n_seqs, max_blocks, n_rows;
    const int32_t *ids, *pos;
    const int64_t *slots;
    const uint8_t *variant;
    const int32_t *q_start, *q_len, *ctx_len, *tables, *rows;
    /* Given input embeddings (never in a graph: a batch with spans runs eagerly). */
    int32_t n_spans;
    const struct eng_embed_span *spans;
};

static void set_dev_batch(const struct eng_phi3_ws *ws, const size_t off[DESC_N_PARTS],
                          int64_t T, int64_t S, int64_t max_blocks, int64_t R,
                          struct dev_batch *d)
{
    d->n_tokens = T;
    d->n_seqs = S;
    d->max_blocks = max_blocks;
    d->n_rows = R;
    const char *dv = ws->desc;
    d->ids = (const int32_t *)(dv + off[DESC_IDS]);
    d->pos = (const int32_t *)(dv + off[DESC_POS]);
    d->slots = (const int64_t *)(dv + off[DESC_SLOTS]);
    d->variant = (const uint8_t *)(dv + off[DESC_VARIANT]);
    d->q_start = (const int32_t *)(dv + off[DESC_Q_START]);
    d->q_len = (const int32_t *)(dv + off[DESC_Q_LEN]);
    d->ctx_len = (const int32_t *)(dv + off[DESC_CTX_LEN]);
    d->tables = (const int32_t *)(dv + off[DESC_TABLES]);
    d->rows = (const int32_t *)(dv + off[DESC_ROWS]);
}

/* Copies the descriptor's arrays (and the per-token RoPE variant derived from the per-sequence
 * one) into the staging buffer and sends it to the backend with one upload. */
static int upload_batch(const struct eng_model *m, const struct kern_ops *ops,
                        struct kern_ctx *ctx, const struct eng_batch *b, struct eng_phi3_ws *ws,
                        struct dev_batch *d)
{
    int64_t T = b->n_tokens, S = b->n_seqs, n_table = (int64_t)S * b->max_blocks;
    int64_t R = b->n_logit_rows;
    size_t off[DESC_N_PARTS];
    size_t total = desc_layout(T, S, n_table, R, off);
    char *h = ws->desc_host;
    const void *src[DESC_N_PARTS] = {b->token_ids, b->positions, b->slot_mapping, NULL,
                                     b->q_start, b->q_len, b->ctx_len, b->block_tables,
                                     b->logit_rows};
    const int64_t count[DESC_N_PARTS] = {T, T, T, T, S, S, S, n_table, R};
    const size_t size[DESC_N_PARTS] = {4, 4, 8, 1, 4, 4, 4, 4, 4};
    for (int i = 0; i < DESC_N_PARTS; i++) {
        if (i == DESC_VARIANT || count[i] == 0)
            continue;
        if (!src[i])
            return KERN_ERR_INVALID;
        memcpy(h + off[i], src[i], (size_t)count[i] * size[i]);
    }

    /* Each token rotates with its sequence's RoPE table. */
    uint8_t *tok_variant = (uint8_t *)(h + off[DESC_VARIANT]);
    memset(tok_variant, 0, (size_t)T);
    for (int32_t s = 0; s < b->n_seqs; s++) {
        if (b->rope_variant[s] >= m->n_rope_variants || b->q_start[s] < 0 || b->q_len[s] < 0 ||
            b->q_start[s] > T - b->q_len[s])
            return KERN_ERR_INVALID;
        memset(tok_variant + b->q_start[s], b->rope_variant[s], (size_t)b->q_len[s]);
    }
    for (int32_t i = 0; i < b->n_embed_spans; i++) {
        const struct eng_embed_span *sp = &b->embed_spans[i];
        if (!sp->src || sp->row < 0 || sp->n_rows < 1 || sp->row > T - sp->n_rows)
            return KERN_ERR_INVALID;
    }
    TRY(ops->buf_upload(ctx, ws->desc, h, total));
    set_dev_batch(ws, off, T, S, b->max_blocks, R, d);
    d->n_spans = b->n_embed_spans;
    d->spans = b->embed_spans;
    return 0;
}

/* A decode batch (one token per sequence) padded to bucket sequences and max_blocks
 * block-table columns, the shape its graph was recorded with. The padding sequences have no
 * tokens and no context, so attention skips them; the padding tokens embed id 0 at position
 * 0 and write no K/V (slot -1); logit rows are the tokens in order, so rows 0 .. B-1 of the
 * logits are the batch's. */
static int upload_padded(const struct eng_model *m, const struct kern_ops *ops,
                         struct kern_ctx *ctx, const struct eng_batch *b,
                         struct eng_phi3_ws *ws, int64_t bucket, int64_t max_blocks,
                         struct dev_batch *d)
{
    int64_t B = b->n_tokens;
    size_t off[DESC_N_PARTS];
    size_t total = desc_layout(bucket, bucket, bucket * max_blocks, bucket, off);
    if (total == 0 || total > ws->desc_cap)
        return KERN_ERR_INVALID;
    char *h = ws->desc_host;
    memset(h, 0, total);
    int32_t *ids = (int32_t *)(h + off[DESC_IDS]), *pos = (int32_t *)(h + off[DESC_POS]);
    int64_t *slots = (int64_t *)(h + off[DESC_SLOTS]);
    uint8_t *variant = (uint8_t *)(h + off[DESC_VARIANT]);
    int32_t *q_start = (int32_t *)(h + off[DESC_Q_START]), *q_len = (int32_t *)(h + off[DESC_Q_LEN]);
    int32_t *ctx_len = (int32_t *)(h + off[DESC_CTX_LEN]), *rows = (int32_t *)(h + off[DESC_ROWS]);
    int32_t *tables = (int32_t *)(h + off[DESC_TABLES]);
    int64_t cols = b->max_blocks < max_blocks ? b->max_blocks : max_blocks;
    for (int64_t i = 0; i < bucket; i++) {
        bool real = i < B;
        if (real && b->rope_variant[i] >= m->n_rope_variants)
            return KERN_ERR_INVALID;
        ids[i] = real ? b->token_ids[i] : 0;
        pos[i] = real ? b->positions[i] : 0;
        slots[i] = real ? b->slot_mapping[i] : -1;
        variant[i] = real ? b->rope_variant[i] : 0;
        q_start[i] = (int32_t)i;
        q_len[i] = real ? 1 : 0;
        ctx_len[i] = real ? b->ctx_len[i] : 0;
        rows[i] = (int32_t)i;
        if (real && cols > 0)
            memcpy(tables + i * max_blocks, b->block_tables + i * b->max_blocks,
                   (size_t)cols * sizeof *tables);
    }
    TRY(ops->buf_upload(ctx, ws->desc, h, total));
    set_dev_batch(ws, off, bucket, bucket, max_blocks, bucket, d);
    return 0;
}


/* The family's norm: LayerNorm when the model has a bias for it (phimoe), else RMSNorm. */
static int norm(const struct kern_ops *ops, struct kern_ctx *ctx, const float *x,
                struct eng_weight w, struct eng_weight b, float *out, int64_t rows, int64_t dim,
                double eps)
{
    if (b.data)
        return eng_op_layernorm(ops, ctx, x, w, b, out, rows, dim, eps);
    struct kern_rmsnorm_params p = {
        .x = x, .w = w.data, .w_dtype = w.dtype, .out = out,
        .n_rows = rows, .dim = dim, .eps = (float)eps,
    };
    return ops->rmsnorm(ctx, &p);
}

/* y[m, n] (+)= x[m, k] @ W^T, rows of y ldy apart, then + bias when the layer has one. */
static int linear_ld(const struct kern_ops *ops, struct kern_ctx *ctx, const float *x,
                     struct eng_weight w, struct eng_weight bias, float *y, int64_t m, int64_t n,
                     int64_t k, int64_t ldy, int accumulate)
{
    return eng_op_linear(ops, ctx, x, k, w, bias, y, ldy, m, n, k, accumulate);
}

/* y[m, n] (+)= x[m, k] @ W^T */
static int linear(const struct kern_ops *ops, struct kern_ctx *ctx, const float *x,
                  struct eng_weight w, float *y, int64_t m, int64_t n, int64_t k, int accumulate)
{
    return linear_ld(ops, ctx, x, w, (struct eng_weight){0}, y, m, n, k, n, accumulate);
}

/* Attention block: x += o_proj(attention(rope(qkv_proj(norm(x))))) for one layer. */
static int attention_block(const struct eng_model *m, const struct kern_ops *ops,
                           struct kern_ctx *ctx, struct eng_kv_cache *kv, int64_t layer,
                           const struct dev_batch *d, struct eng_phi3_ws *ws)
{
    const struct eng_model_config *c = &m->cfg;
    const struct eng_phi3_layer *L = &m->layers[layer];
    int64_t T = d->n_tokens, H = c->hidden_size, hd = c->head_dim;
    int64_t nh = c->num_attention_heads, nkv = c->num_key_value_heads;
    int64_t qkv_width = (nh + 2 * nkv) * hd;
    float *q = ws->qkv;                     /* [T, nh, hd], token stride qkv_width */
    float *k = ws->qkv + nh * hd;           /* [T, nkv, hd] */
    float *v = ws->qkv + (nh + nkv) * hd;   /* [T, nkv, hd] */

    TRY(norm(ops, ctx, ws->x, L->input_norm, L->input_norm_b, ws->h, T, H, c->rms_norm_eps));
    if (L->qkv.data) {
        TRY(linear(ops, ctx, ws->h, L->qkv, ws->qkv, T, qkv_width, H, 0));
    } else { /* separate projections (phimoe) into the same [T, q | k | v] rows */
        TRY(linear_ld(ops, ctx, ws->h, L->q, L->q_b, q, T, nh * hd, H, qkv_width, 0));
        TRY(linear_ld(ops, ctx, ws->h, L->k, L->k_b, k, T, nkv * hd, H, qkv_width, 0));
        TRY(linear_ld(ops, ctx, ws->h, L->v, L->v_b, v, T, nkv * hd, H, qkv_width, 0));
    }

    struct kern_rope_params rope = {
        .x = q, .positions = d->pos, .variant = d->variant,
        .inv_freq = m->rope_inv_freq, .n_tokens = T, .n_heads = nh, .head_dim = hd,
        .rot_dim = c->rotary_dim, .token_stride = qkv_width,
        .n_variants = m->n_rope_variants, .mscale = m->mscale,
    };
    TRY(ops->rope(ctx, &rope));
    rope.x = k;
    rope.n_heads = nkv;
    TRY(ops->rope(ctx, &rope));

    int64_t n_slots = kv->n_blocks * kv->block_size;
    struct kern_kv_write_params w = {
        .k = k, .v = v, .slot_mapping = d->slots,
        .k_cache = kv->k[layer], .v_cache = kv->v[layer], .cache_dtype = kv->dtype,
        .n_tokens = T, .n_kv_heads = nkv, .head_dim = hd, .token_stride = qkv_width,
        .n_slots = n_slots,
    };
    TRY(ops->kv_write(ctx, &w));

    struct kern_attention_params a = {
        .q = q, .k_cache = kv->k[layer], .v_cache = kv->v[layer], .cache_dtype = kv->dtype,
        .out = ws->attn, .q_start = d->q_start, .q_len = d->q_len, .ctx_len = d->ctx_len,
        .block_tables = d->tables, .n_tokens = T, .n_seqs = d->n_seqs,
        .n_heads = nh, .n_kv_heads = nkv, .head_dim = hd, .q_stride = qkv_width,
        .max_blocks = d->max_blocks, .block_size = kv->block_size, .n_slots = n_slots,
        .sliding_window = c->sliding_window, .scale = (float)(1.0 / sqrt((double)hd)),
    };
    TRY(ops->attention(ctx, &a));

    /* Residual add fused into the projection: x += attn @ Wo^T (+ its bias). */
    return linear_ld(ops, ctx, ws->attn, L->o, L->o_b, ws->x, T, H, nh * hd, H, 1);
}

/* MLP block: x += down(silu(gate) * up), [gate | up] = gate_up_proj(norm(x)). */
static int mlp_block(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     int64_t layer, int64_t T, struct eng_phi3_ws *ws)
{
    const struct eng_model_config *c = &m->cfg;
    const struct eng_phi3_layer *L = &m->layers[layer];
    int64_t H = c->hidden_size, I = c->intermediate_size;

    TRY(norm(ops, ctx, ws->x, L->post_norm, L->post_norm_b, ws->h, T, H, c->rms_norm_eps));
    TRY(linear(ops, ctx, ws->h, L->gate_up, ws->gu, T, 2 * I, H, 0));
    struct kern_silu_mul_params s = {.gu = ws->gu, .out = ws->act, .n_tokens = T, .inter = I};
    TRY(ops->silu_mul(ctx, &s));
    return linear(ops, ctx, ws->act, L->down, ws->x, T, H, I, 1);
}

/* Mixture-of-experts block (phimoe): x += sum over the two routed experts of weight * expert(h),
 * h = norm(x); the router's logits h @ gate^T pick the experts (sparsemixer). */
static int moe_block(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     int64_t layer, int64_t T, struct eng_phi3_ws *ws)
{
    const struct eng_model_config *c = &m->cfg;
    const struct eng_phi3_layer *L = &m->layers[layer];
    int64_t H = c->hidden_size, E = c->num_local_experts, K = c->num_experts_per_tok;

    TRY(norm(ops, ctx, ws->x, L->post_norm, L->post_norm_b, ws->h, T, H, c->rms_norm_eps));
    TRY(linear(ops, ctx, ws->h, L->router, ws->router, T, E, H, 0));
    struct kern_moe_route_params r = {
        .logits = ws->router, .experts = ws->route_experts, .weights = ws->route_weights,
        .n_tokens = T, .n_experts = E, .ldx = E, .jitter_eps = (float)c->router_jitter_noise,
    };
    TRY(ops->moe_route(ctx, &r));
    struct kern_moe_params p = {
        .x = ws->h, .experts = ws->route_experts, .weights = ws->route_weights,
        .w_gate = L->expert_ptrs, .w_up = L->expert_ptrs + E, .w_down = L->expert_ptrs + 2 * E,
        .w_dtype = L->experts[0].dtype, .y = ws->x, .work = ws->moe_work,
        .n_tokens = T, .hidden = H, .inter = c->intermediate_size, .n_experts = E, .top_k = K,
    };
    return ops->moe(ctx, &p);
}

/* The model over an uploaded batch: embed, the layers, and the logits of its rows into
 * ws->logits. Only ops: the same calls run eagerly or are recorded into a graph. */
static int run_model(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     struct eng_kv_cache *kv, const struct dev_batch *d, struct eng_phi3_ws *ws)
{
    const struct eng_model_config *c = &m->cfg;
    int64_t T = d->n_tokens, H = c->hidden_size, V = c->vocab_size, R = d->n_rows;
    struct kern_embed_params e = {
        .ids = d->ids, .table = m->embed.data, .table_dtype = m->embed.dtype,
        .out = ws->x, .n_tokens = T, .vocab = V, .hidden = H,
    };
    TRY(ops->embed(ctx, &e));
    for (int32_t i = 0; i < d->n_spans; i++) /* image features over their placeholders */
        TRY(ops->buf_copy(ctx, ws->x + (int64_t)d->spans[i].row * H, d->spans[i].src,
                          (size_t)d->spans[i].n_rows * (size_t)H * sizeof(float)));

    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        TRY(attention_block(m, ops, ctx, kv, l, d, ws));
        if (m->layers[l].experts)
            TRY(moe_block(m, ops, ctx, l, T, ws));
        else
            TRY(mlp_block(m, ops, ctx, l, T, ws));
    }

    if (R == 0)
        return 0;
    struct kern_gather_rows_params g = {
        .x = ws->x, .rows = d->rows, .out = ws->last,
        .n_in = T, .n_out = R, .dim = H,
    };
    TRY(ops->gather_rows(ctx, &g));
    TRY(norm(ops, ctx, ws->last, m->final_norm, m->final_norm_b, ws->last, R, H, c->rms_norm_eps));
    return linear_ld(ops, ctx, ws->last, m->lm_head, m->lm_head_b, ws->logits, R, V, H, V, 0);
}

/* ---- graphs of decode steps ---- */

enum graph_state {
    GRAPH_COLD,  /* never run at this size: the next step runs eagerly (and grows scratch) */
    GRAPH_WARM,  /* ran eagerly once: the next step records the graph */
    GRAPH_READY, /* recorded: steps replay it */
    GRAPH_OFF,   /* recording failed: this size runs eagerly, unpadded */
};

int eng_phi3_graphs_enable(struct eng_phi3_ws *ws, int64_t max_batch, int64_t max_blocks)
{
    if (!ws->bound || !ws->ops.graph_begin || !ws->ops.graph_end || !ws->ops.graph_launch ||
        !ws->ops.graph_destroy)
        return KERN_ERR_UNSUPPORTED;
    if (ws->graphs || max_batch < 1 || max_blocks < 1 || max_batch > ws->cap_tokens ||
        max_batch > ws->cap_logit_rows || max_batch > INT64_MAX / max_blocks)
        return KERN_ERR_INVALID;
    size_t off[DESC_N_PARTS];
    size_t need = desc_layout(max_batch, max_batch, max_batch * max_blocks, max_batch, off);
    if (need == 0 || need > ws->desc_cap)
        return KERN_ERR_INVALID;
    /* vLLM's sizes: 1, 2, 4, then every multiple of 8, up to max_batch (always included). */
    int32_t n = 0;
    int64_t sizes[4096];
    for (int64_t bsz = 1; bsz < max_batch && n < 4095; bsz = bsz < 4 ? bsz * 2 : (bsz / 8 + 1) * 8)
        sizes[n++] = bsz;
    sizes[n++] = max_batch;
    ws->graphs = calloc((size_t)n, sizeof *ws->graphs);
    if (!ws->graphs)
        return KERN_ERR_NOMEM;
    for (int32_t i = 0; i < n; i++)
        ws->graphs[i].batch = sizes[i];
    ws->n_graphs = n;
    ws->graph_max_blocks = max_blocks;
    return 0;
}

/* The graph a batch replays, or NULL when it runs eagerly: graphs must be on, and the batch
 * must be decode steps only (one token and one logit row per sequence, in order) whose
 * contexts fit the graphs' block tables. */
static struct eng_phi3_graph *graph_for(struct eng_phi3_ws *ws, const struct eng_batch *b,
                                        int64_t block_size)
{
    int64_t B = b->n_tokens;
    if (!ws->graphs || B != b->n_seqs || b->n_logit_rows != B || block_size <= 0 ||
        b->n_embed_spans > 0)
        return NULL;
    for (int64_t s = 0; s < B; s++) {
        if (b->q_len[s] != 1 || b->q_start[s] != s || b->logit_rows[s] != s ||
            b->ctx_len[s] < 1 || (b->ctx_len[s] + block_size - 1) / block_size > ws->graph_max_blocks)
            return NULL;
    }
    for (int32_t i = 0; i < ws->n_graphs; i++) {
        if (ws->graphs[i].batch >= B)
            return ws->graphs[i].state == GRAPH_OFF ? NULL : &ws->graphs[i];
    }
    return NULL;
}

static void graph_drop(struct eng_phi3_ws *ws, struct eng_phi3_graph *gr)
{
    ws->ops.graph_destroy(ws->ctx, gr->g);
    gr->g = NULL;
    gr->state = GRAPH_COLD;
}

/* Runs a padded decode batch through its graph: replays it when recorded, otherwise runs
 * eagerly once (which sizes the backend's scratch for this shape) and records it the next
 * time. A graph whose buffers were replaced since (ws->gen, or the backend's KERN_ERR_STALE)
 * is recorded again. */
static int run_graph(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     struct eng_kv_cache *kv, const struct dev_batch *d, struct eng_phi3_ws *ws,
                     struct eng_phi3_graph *gr)
{
    if (gr->state == GRAPH_READY && gr->gen != ws->gen)
        graph_drop(ws, gr);
    if (gr->state == GRAPH_READY) {
        int rc = ops->graph_launch(ctx, gr->g);
        if (rc == 0)
            ws->graph_replays++;
        if (rc != KERN_ERR_STALE)
            return rc;
        graph_drop(ws, gr);
    }
    if (gr->state == GRAPH_WARM) {
        TRY(ops->graph_begin(ctx));
        int rc = run_model(m, ops, ctx, kv, d, ws);
        struct kern_graph *g = NULL;
        int rc_end = ops->graph_end(ctx, &g);
        if (rc == 0 && rc_end == 0) {
            gr->g = g;
            gr->gen = ws->gen;
            gr->state = GRAPH_READY;
            ws->graph_records++;
            rc = ops->graph_launch(ctx, g);
            if (rc == 0)
                ws->graph_replays++;
            return rc;
        }
        /* Nothing ran while recording: this size runs eagerly from now on. */
        ops->graph_destroy(ctx, g);
        gr->state = GRAPH_OFF;
        return run_model(m, ops, ctx, kv, d, ws);
    }
    TRY(run_model(m, ops, ctx, kv, d, ws));
    gr->state = GRAPH_WARM;
    return 0;
}

/* Checks the token rows of a forward over R rows and marks them in ws->row_taken. Returns the
 * number of argmax rows, or KERN_ERR_INVALID. */
static int64_t mark_token_rows(const struct eng_phi3_tokens *tk, const struct kern_ops *ops,
                               struct eng_phi3_ws *ws, int64_t R, int64_t H)
{
    if (R > 0) /* row_taken is NULL until a step has logit rows */
        memset(ws->row_taken, 0, (size_t)R);
    if (!tk)
        return 0;
    int64_t n_argmax = 0;
    for (int64_t r = 0; tk->argmax_rows && r < R; r++)
        if (tk->argmax_rows[r]) {
            ws->row_taken[r] = 1; /* 1: argmax, 2: jobs' */
            n_argmax++;
        }
    if (tk->n_jobs < 0 || tk->n_mods < 0 || (tk->n_jobs > 0 && (!tk->jobs || !ops->sample)) ||
        (tk->n_mods > 0 && !tk->mods))
        return KERN_ERR_INVALID;
    for (int64_t j = 0; j < tk->n_jobs; j++) {
        const struct kern_sample_job *jb = &tk->jobs[j];
        /* A row is an argmax row or jobs' (several, for the choices of n > 1). The jobs that
         * draw come first (only they use a work row). */
        if (jb->row < 0 || jb->row >= R || ws->row_taken[jb->row] == 1 || jb->mod_start < 0 ||
            jb->n_mods < 0 || jb->mod_start > tk->n_mods - jb->n_mods ||
            (j > 0 && !jb->given && tk->jobs[j - 1].given) ||
            (jb->logprobs && (!tk->logprob || !tk->top)))
            return KERN_ERR_INVALID;
        ws->row_taken[jb->row] = 2;
    }
    if ((n_argmax > 0 && !tk->tokens) || (tk->n_jobs > 0 && !tk->job_tokens))
        return KERN_ERR_INVALID;
    return n_argmax > 0 && H < 1 ? KERN_ERR_INVALID : n_argmax;
}

/* Draws the jobs' tokens where the logits are and brings back only the ids. */
static int sample_rows(const struct kern_ops *ops, struct kern_ctx *ctx, struct eng_phi3_ws *ws,
                       const struct eng_phi3_tokens *tk, int64_t R, int64_t V)
{
    int64_t J = tk->n_jobs, D = 0;
    bool logprobs = false;
    for (int64_t j = 0; j < J; j++) {
        D += !tk->jobs[j].given;
        logprobs |= tk->jobs[j].logprobs != 0;
    }
    TRY(eng_phi3_ws_reserve_sampling(ws, V, J > ws->cap_jobs ? J : ws->cap_jobs,
                                     D > ws->cap_draws ? D : ws->cap_draws,
                                     tk->n_mods > ws->cap_mods ? tk->n_mods : ws->cap_mods));
    TRY(ops->buf_upload(ctx, ws->sample_jobs, tk->jobs, (size_t)J * sizeof *tk->jobs));
    if (tk->n_mods > 0)
        TRY(ops->buf_upload(ctx, ws->sample_mods, tk->mods, (size_t)tk->n_mods * sizeof *tk->mods));
    /* The drawing jobs come first, so D work rows do (kern_sample_params). */
    struct kern_sample_params sp = {
        .x = ws->logits, .jobs = ws->sample_jobs, .mods = ws->sample_mods,
        .work = ws->sample_work, .out = ws->sample_out,
        .logprob = ws->sample_logprob, .top = ws->sample_top,
        .n_rows = R, .dim = V, .ldx = V, .n_jobs = J, .n_mods = tk->n_mods,
    };
    TRY(ops->sample(ctx, &sp));
    TRY(ops->buf_download(ctx, tk->job_tokens, ws->sample_out, (size_t)J * sizeof(int32_t)));
    if (logprobs) {
        TRY(ops->buf_download(ctx, tk->logprob, ws->sample_logprob, (size_t)J * sizeof(float)));
        TRY(ops->buf_download(ctx, tk->top, ws->sample_top,
                              (size_t)J * KERN_MAX_TOP_LOGPROBS * sizeof *tk->top));
    }
    return 0;
}

int eng_phi3_forward(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     struct eng_kv_cache *kv, const struct eng_batch *b, struct eng_phi3_ws *ws,
                     float *logits, const struct eng_phi3_tokens *tk)
{
    const struct eng_model_config *c = &m->cfg;
    int64_t T = b->n_tokens, H = c->hidden_size, V = c->vocab_size, R = b->n_logit_rows;
    if (T <= 0 || b->n_seqs <= 0 || b->max_blocks < 0 || R < 0 || b->n_embed_spans < 0 ||
        (b->n_embed_spans > 0 && !b->embed_spans))
        return KERN_ERR_INVALID;
    /* Device pointers and host pointers must not meet: on a device backend the weights and
     * the cache have to be this context's. */
    if (!ops->host_memory && (m->ops == NULL || m->ctx != ctx || kv->ops == NULL || kv->ctx != ctx))
        return KERN_ERR_INVALID;
    if (c->arch == ENG_ARCH_PHIMOE &&
        (!ops->layernorm || !ops->bias_add || !ops->moe_route || !ops->moe))
        return KERN_ERR_UNSUPPORTED; /* a backend without the MoE ops */
    TRY(eng_phi3_ws_reserve(ws, c, ops, ctx, T, R, b->n_seqs,
                            (int64_t)b->n_seqs * b->max_blocks));
    int64_t n_argmax = mark_token_rows(tk, ops, ws, R, H);
    if (n_argmax < 0)
        return (int)n_argmax;
    for (int64_t r = 0; r < R && !logits; r++) /* logits is needed for rows without a token */
        if (!ws->row_taken[r])
            return KERN_ERR_INVALID;

    struct dev_batch d = {0};
    struct eng_phi3_graph *gr = graph_for(ws, b, kv->block_size);
    if (gr) {
        TRY(upload_padded(m, ops, ctx, b, ws, gr->batch, ws->graph_max_blocks, &d));
        TRY(run_graph(m, ops, ctx, kv, &d, ws, gr));
    } else {
        TRY(upload_batch(m, ops, ctx, b, ws, &d));
        TRY(run_model(m, ops, ctx, kv, &d, ws));
    }
    if (R == 0)
        return 0;

    /* Greedy rows send back only their token id: one argmax over every row (a pass over logits
     * already on the device, far cheaper than sending them), then one download of the R ids.
     * The ids go into ws->last ([R, H] fp32, H >= 1 so R ids fit), which the head has read by
     * then: the ops run in order on the context's stream. */
    if (n_argmax > 0) {
        int32_t *ids = (int32_t *)(void *)ws->last;  /* [R] */
        struct kern_argmax_params a = {
            .x = ws->logits, .out = ids, .n_rows = R, .dim = V, .ldx = V,
        };
        TRY(ops->argmax(ctx, &a));
        TRY(ops->buf_download(ctx, tk->tokens, ids, (size_t)R * sizeof *tk->tokens));
    }
    /* Sampled rows: the draw runs where the logits are, and only the ids come back. It
     * follows the argmax download, which writes every entry of tokens. */
    if (tk && tk->n_jobs > 0)
        TRY(sample_rows(ops, ctx, ws, tk, R, V));
    /* The other rows as they are, one download per run of consecutive rows that bring back
     * no token (all of them at once without token rows). ws_reserve checked R * V * 4
     * against overflow. */
    for (int64_t r = 0; r < R;) {
        if (ws->row_taken[r]) {
            r++;
            continue;
        }
        int64_t end = r + 1;
        while (end < R && !ws->row_taken[end])
            end++;
        TRY(ops->buf_download(ctx, logits + r * V, ws->logits + r * V,
                              (size_t)((end - r) * V) * sizeof *logits));
        r = end;
    }
    return 0;
}
