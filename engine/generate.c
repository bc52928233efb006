/* Batched greedy generation (see generate.h): static batching, one block table per sequence,
 * and the transformers LongRoPE rule (short, then one recompute with long factors). */
#include "generate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct seq_state {
    int32_t *tokens;               /* prompt + generated */
    int32_t n_tokens;
    int32_t n_cached;              /* tokens whose K/V are in the cache */
    int32_t *blocks;               /* [max_blocks] */
    int32_t n_blocks;
    uint8_t variant;
    int done;
};

int32_t eng_argmax(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

static void release_blocks(struct eng_kv_cache *kv, struct seq_state *s)
{
    for (int32_t i = 0; i < s->n_blocks; i++)
        eng_kv_cache_release_block(kv, s->blocks[i]);
    s->n_blocks = 0;
}

static int is_eos(const struct eng_model_config *c, int32_t id)
{
    for (int i = 0; i < c->n_eos_ids; i++)
        if (c->eos_token_ids[i] == id)
            return 1;
    return 0;
}

/* Chooses the RoPE table for a sequence about to hold n tokens; switching short -> long drops
 * the cache so that every position is recomputed with the long table, as transformers does. */
static void choose_variant(const struct eng_model_config *c, struct seq_state *s,
                           struct eng_kv_cache *kv, struct eng_gen_seq *gs)
{
    if (c->rope_type != ENG_ROPE_LONGROPE || s->variant == ENG_ROPE_LONG)
        return;
    if (s->n_tokens > c->original_max_position_embeddings) {
        s->variant = ENG_ROPE_LONG;
        if (s->n_cached > 0) {
            release_blocks(kv, s);
            s->n_cached = 0;
            gs->n_recomputes++;
        }
    }
}

int eng_generate_greedy(struct eng_generator *g, struct eng_gen_seq *seqs, int32_t n_seqs,
                        char *err, size_t errlen)
{
    const struct eng_model_config *c = &g->model->cfg;
    struct eng_kv_cache *kv = g->kv;
    int64_t V = c->vocab_size, bs = kv->block_size;
    int32_t max_len = 0;
    int rc = -1;

    for (int32_t i = 0; i < n_seqs; i++) {
        if (seqs[i].n_prompt < 1 || seqs[i].max_new < 0 ||
            seqs[i].n_prompt > c->max_position_embeddings) {
            snprintf(err, errlen, "sequence %d: prompt length %d outside [1, %lld]", i,
                     seqs[i].n_prompt, (long long)c->max_position_embeddings);
            return -1;
        }
        int64_t len = (int64_t)seqs[i].n_prompt + seqs[i].max_new;
        if (len > c->max_position_embeddings)
            len = c->max_position_embeddings;
        if (len > max_len)
            max_len = (int32_t)len;
    }
    int32_t max_blocks = (int32_t)((max_len + bs - 1) / bs);
    int64_t tok_cap = (int64_t)n_seqs * max_len, n_spans = 0;
    for (int32_t i = 0; i < n_seqs; i++) {
        for (int32_t k = 0; k < seqs[i].n_embeds; k++) {
            const struct eng_embed_span *sp = &seqs[i].embeds[k];
            if (!sp->src || sp->row < 0 || sp->n_rows < 1 || sp->row > seqs[i].n_prompt - sp->n_rows) {
                snprintf(err, errlen, "sequence %d: image span %d outside the prompt", i, k);
                return -1;
            }
        }
        n_spans += seqs[i].n_embeds > 0 ? seqs[i].n_embeds : 0;
    }

    struct seq_state *st = calloc((size_t)n_seqs, sizeof *st);
    int32_t *ids = malloc((size_t)tok_cap * sizeof *ids);
    int32_t *pos = malloc((size_t)tok_cap * sizeof *pos);
    int64_t *slots = malloc((size_t)tok_cap * sizeof *slots);
    int32_t *q_start = malloc((size_t)n_seqs * sizeof *q_start);
    int32_t *q_len = malloc((size_t)n_seqs * sizeof *q_len);
    int32_t *ctx_len = malloc((size_t)n_seqs * sizeof *ctx_len);
    int32_t *tables = malloc((size_t)n_seqs * (size_t)max_blocks * sizeof *tables);
    uint8_t *variant = malloc((size_t)n_seqs);
    int32_t *rows = malloc((size_t)n_seqs * sizeof *rows);
    int32_t *row_seq = malloc((size_t)n_seqs * sizeof *row_seq);
    float *logits = malloc((size_t)n_seqs * (size_t)V * sizeof *logits);
    struct eng_embed_span *spans = malloc((size_t)(n_spans > 0 ? n_spans : 1) * sizeof *spans);
    if (!st || !ids || !pos || !slots || !q_start || !q_len || !ctx_len || !tables || !variant ||
        !rows || !row_seq || !logits || !spans) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (int32_t i = 0; i < n_seqs; i++) {
        st[i].tokens = malloc((size_t)max_len * sizeof *st[i].tokens);
        st[i].blocks = malloc((size_t)max_blocks * sizeof *st[i].blocks);
        if (!st[i].tokens || !st[i].blocks) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        memcpy(st[i].tokens, seqs[i].prompt, (size_t)seqs[i].n_prompt * sizeof *st[i].tokens);
        st[i].n_tokens = seqs[i].n_prompt;
        st[i].done = seqs[i].max_new == 0;
        seqs[i].n_out = 0;
        seqs[i].n_recomputes = 0;
    }

    for (int32_t step = 0;; step++) {
        struct eng_batch b = {0};
        int32_t T = 0, S = 0, n_sp = 0;
        for (int32_t i = 0; i < n_seqs; i++) {
            struct seq_state *s = &st[i];
            if (s->done)
                continue;
            choose_variant(c, s, kv, &seqs[i]);
            while ((int64_t)s->n_blocks * bs < s->n_tokens) {
                if (eng_kv_cache_alloc_block(kv, &s->blocks[s->n_blocks]) != 0) {
                    snprintf(err, errlen, "KV cache too small: %lld blocks of %lld tokens",
                             (long long)kv->n_blocks, (long long)bs);
                    goto done;
                }
                s->n_blocks++;
            }
            q_start[S] = T;
            q_len[S] = s->n_tokens - s->n_cached;
            ctx_len[S] = s->n_tokens;
            variant[S] = s->variant;
            memcpy(tables + (size_t)S * (size_t)max_blocks, s->blocks,
                   (size_t)s->n_blocks * sizeof *s->blocks);
            for (int32_t k = 0; k < seqs[i].n_embeds; k++) { /* the part being computed */
                const struct eng_embed_span *sp = &seqs[i].embeds[k];
                int32_t a = sp->row > s->n_cached ? sp->row : s->n_cached;
                int32_t e = sp->row + sp->n_rows;
                if (a < e)
                    spans[n_sp++] = (struct eng_embed_span){
                        .row = T + (a - s->n_cached), .n_rows = e - a,
                        .src = sp->src + (int64_t)(a - sp->row) * c->hidden_size};
            }
            for (int32_t p = s->n_cached; p < s->n_tokens; p++, T++) {
                ids[T] = s->tokens[p];
                pos[T] = p;
                slots[T] = (int64_t)s->blocks[p / bs] * bs + p % bs;
            }
            rows[S] = T - 1;
            row_seq[S] = i;
            S++;
        }
        if (S == 0)
            break;
        b.n_tokens = T;
        b.token_ids = ids;
        b.positions = pos;
        b.slot_mapping = slots;
        b.n_seqs = S;
        b.q_start = q_start;
        b.q_len = q_len;
        b.ctx_len = ctx_len;
        b.block_tables = tables;
        b.max_blocks = max_blocks;
        b.rope_variant = variant;
        b.n_logit_rows = S;
        b.logit_rows = rows;
        b.n_embed_spans = n_sp;
        b.embed_spans = n_sp > 0 ? spans : NULL;
        int frc = eng_phi3_forward(g->model, g->ops, g->ctx, kv, &b, &g->ws, logits, NULL);
        if (frc != 0) {
            snprintf(err, errlen, "forward pass failed (%d)%s", frc,
                     !g->ops->host_memory && (g->model->ctx != g->ctx || kv->ctx != g->ctx)
                         ? ": on a device backend the model needs eng_model_upload and the KV "
                           "cache eng_kv_cache_create_on with the same context"
                         : "");
            goto done;
        }
        /* Device-side faults (an index the kernels rejected) surface here, once per step. */
        char serr[256];
        if (g->ops->sync(g->ctx, serr, sizeof serr) != 0) {
            snprintf(err, errlen, "the %s backend failed: %s", g->ops->name, serr);
            goto done;
        }
        for (int32_t r = 0; r < S; r++) {
            int32_t i = row_seq[r];
            struct seq_state *s = &st[i];
            const float *lg = logits + (size_t)r * (size_t)V;
            if (g->on_logits)
                g->on_logits(g->user, i, step, lg, V);
            int32_t next = eng_argmax(lg, V);
            s->n_cached = s->n_tokens;
            seqs[i].out[seqs[i].n_out++] = next;
            s->tokens[s->n_tokens++] = next;
            if (seqs[i].n_out >= seqs[i].max_new || s->n_tokens >= c->max_position_embeddings ||
                (!seqs[i].ignore_eos && is_eos(c, next))) {
                s->done = 1;
                release_blocks(kv, s);
            }
        }
    }
    rc = 0;
done:
    if (st) {
        for (int32_t i = 0; i < n_seqs; i++) {
            if (st[i].blocks)
                release_blocks(kv, &st[i]);
            free(st[i].tokens);
            free(st[i].blocks);
        }
    }
    free(st);
    free(ids);
    free(pos);
    free(slots);
    free(q_start);
    free(q_len);
    free(ctx_len);
    free(tables);
    free(variant);
    free(rows);
    free(row_seq);
    free(logits);
    free(spans);
    return rc;
}

void eng_generator_free(struct eng_generator *g)
{
    eng_phi3_ws_free(&g->ws);
}
