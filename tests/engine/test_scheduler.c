/* Unit test of the step planner (engine/scheduler.c) without a model: token budget and chunked
 * prefill, decodes first, the flat batch's consistency (positions, slots, block tables, logit
 * rows), preemption when blocks run out, copy-on-write after a fork, prefix-cache hits, and the
 * LongRoPE switch through the recompute path. "Running the model" here is eng_sched_commit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_cache.h"
#include "model.h"
#include "prefix_cache.h"
#include "scheduler.h"

#include "../test_util.h"

#define BS 4

struct rig {
    struct eng_kv_cache *kv;
    struct eng_prefix_cache *pc;
    struct eng_scheduler s;
};

static void rig_init(struct rig *r, int64_t n_blocks, int32_t budget, int32_t max_seqs,
                     int64_t rope_orig, bool caching)
{
    char err[128];
    if (eng_kv_cache_create(1, 1, 2, BS, n_blocks, KERN_DTYPE_F32, &r->kv, err, sizeof err) != 0 ||
        eng_prefix_cache_create(r->kv, caching, &r->pc) != 0) {
        fprintf(stderr, "rig: %s\n", err);
        exit(1);
    }
    struct eng_sched_config c = {budget, max_seqs, rope_orig, 0};
    if (eng_sched_init(&r->s, &c, r->kv, r->pc) != 0)
        exit(1);
}

static void rig_free(struct rig *r)
{
    eng_sched_free(&r->s);
    eng_prefix_cache_destroy(r->pc);
    CHECK(eng_kv_cache_used_blocks(r->kv) == 0, "blocks leaked: %lld",
          (long long)eng_kv_cache_used_blocks(r->kv));
    eng_kv_cache_destroy(r->kv);
}

static struct eng_seq *add(struct rig *r, int32_t n, int32_t first)
{
    int32_t p[256];
    for (int32_t i = 0; i < n; i++)
        p[i] = first + i;
    struct eng_seq *s = eng_seq_create(NULL, 0, p, n);
    if (!s || eng_sched_add(&r->s, s) != 0)
        exit(1);
    return s;
}

/* Checks the batch against the items and the sequences' state. */
static void check_batch(const struct eng_scheduler *s)
{
    const struct eng_batch *b = &s->batch;
    int32_t t = 0, r = 0;
    CHECK(b->n_seqs == s->n_items, "n_seqs");
    for (int32_t k = 0; k < s->n_items; k++) {
        const struct eng_sched_item *it = &s->items[k];
        const struct eng_seq *q = it->seq;
        CHECK(b->q_start[k] == t && b->q_len[k] == it->q_len, "item %d layout", k);
        CHECK(b->ctx_len[k] == it->pos0 + it->q_len, "item %d ctx_len", k);
        CHECK(q->n_blocks * BS >= b->ctx_len[k], "item %d: blocks do not cover the context", k);
        CHECK(b->rope_variant[k] == q->variant, "variant");
        for (int32_t j = 0; j < it->q_len; j++, t++) {
            int32_t p = it->pos0 + j;
            CHECK(b->positions[t] == p && b->token_ids[t] == q->tokens[p], "token %d", t);
            int32_t blk = b->block_tables[(int64_t)k * b->max_blocks + p / BS];
            CHECK(b->slot_mapping[t] == (int64_t)blk * BS + p % BS, "slot of token %d", t);
            CHECK(s->kv->refcount[blk] == 1, "token %d written into a shared block", t);
        }
        CHECK(it->row0 == r, "rows of item %d", k);
        if (it->sample)
            CHECK(b->logit_rows[it->row0 + it->n_rows - 1] == t - 1, "sample row of item %d", k);
        r += it->n_rows;
    }
    CHECK(t == b->n_tokens && r == b->n_logit_rows, "totals");
    for (int32_t i = 1; i < b->n_logit_rows; i++)
        CHECK(b->logit_rows[i] > b->logit_rows[i - 1], "rows not ascending");
}

/* Plans, checks, commits, and appends a token to every sampling sequence. */
static void run_step(struct rig *r)
{
    CHECK(eng_sched_plan(&r->s) == 0, "plan");
    check_batch(&r->s);
    eng_sched_commit(&r->s);
    for (int32_t k = 0; k < r->s.n_items; k++)
        if (r->s.items[k].sample)
            eng_sched_append(r->s.items[k].seq, 1000 + r->s.items[k].seq->n_tokens);
}

static void test_budget_and_chunking(void)
{
    struct rig r;
    rig_init(&r, 64, 8, 16, 0, true);
    struct eng_seq *a = add(&r, 10, 100), *b = add(&r, 3, 200);
    CHECK(eng_sched_plan(&r.s) == 0, "plan");
    check_batch(&r.s);
    CHECK(r.s.n_items == 1 && r.s.items[0].seq == a && r.s.items[0].q_len == 8 && !r.s.items[0].sample,
          "step 1: A's first chunk of 8 only");
    CHECK(r.s.batch.n_logit_rows == 0, "a partial chunk has no logits");
    eng_sched_commit(&r.s);
    CHECK(a->n_computed == 8, "A computed 8");
    CHECK(eng_sched_plan(&r.s) == 0, "plan");
    check_batch(&r.s);
    CHECK(r.s.n_items == 2 && r.s.items[0].seq == a && r.s.items[0].q_len == 2 && r.s.items[0].sample &&
          r.s.items[1].seq == b && r.s.items[1].q_len == 3 && r.s.items[1].sample,
          "step 2: rest of A, then B");
    eng_sched_commit(&r.s);
    eng_sched_append(a, 1);
    eng_sched_append(b, 2);
    /* Now two decodes, and a new long prompt gets the rest of the budget. */
    struct eng_seq *c = add(&r, 20, 300);
    CHECK(eng_sched_plan(&r.s) == 0, "plan");
    check_batch(&r.s);
    CHECK(r.s.n_items == 3 && r.s.items[0].q_len == 1 && r.s.items[1].q_len == 1 &&
          r.s.items[2].seq == c && r.s.items[2].q_len == 6, "step 3: decodes first, then 6 of C");
    eng_sched_commit(&r.s);
    CHECK(r.s.n_running == 3, "running");
    rig_free(&r);
}

/* long_prefill_token_threshold: every prefill chunk at most that long, decodes untouched,
 * and the budget still binds below it. */
static void test_long_prefill_threshold(void)
{
    struct rig r;
    rig_init(&r, 64, 16, 16, 0, true);
    r.s.cfg.long_prefill_token_threshold = 5;
    struct eng_seq *a = add(&r, 12, 100);
    run_step(&r);
    CHECK(r.s.n_items == 1 && r.s.items[0].q_len == 5 && a->n_computed == 5, "A: 5 of 12");
    struct eng_seq *b = add(&r, 9, 200);
    run_step(&r);
    CHECK(r.s.n_items == 2 && r.s.items[0].q_len == 5 && r.s.items[1].seq == b &&
              r.s.items[1].q_len == 5, "A's next 5, then 5 of B (budget 16 left room for more)");
    run_step(&r);
    CHECK(r.s.n_items == 2 && r.s.items[0].q_len == 2 && r.s.items[0].sample &&
              r.s.items[1].q_len == 4 && r.s.items[1].sample, "A's last 2, B's last 4");
    struct eng_seq *c = add(&r, 30, 300);
    run_step(&r);
    CHECK(r.s.n_items == 3 && r.s.items[0].q_len == 1 && r.s.items[1].q_len == 1 &&
              r.s.items[2].seq == c && r.s.items[2].q_len == 5, "two decodes, 5 of C");
    r.s.cfg.long_prefill_token_threshold = 40; /* above the budget: the budget binds */
    run_step(&r);
    CHECK(r.s.n_items == 3 && r.s.items[2].q_len == 14, "two decodes, 14 of C (budget 16)");
    rig_free(&r);
    struct eng_sched_config bad = {8, 4, 0, -1};
    struct eng_scheduler s;
    CHECK(eng_sched_init(&s, &bad, NULL, NULL) != 0, "a negative threshold was accepted");
}

static void test_max_seqs(void)
{
    struct rig r;
    rig_init(&r, 64, 100, 2, 0, true);
    add(&r, 3, 1);
    add(&r, 3, 10);
    add(&r, 3, 20);
    run_step(&r);
    CHECK(r.s.n_items == 2 && r.s.n_running == 2 && r.s.n_waiting == 1, "max_seqs caps admission");
    rig_free(&r);
}

static void test_preemption(void)
{
    struct rig r;
    /* 4 blocks of 4 tokens. A and B take 2 blocks each after their prompts (6 tokens). */
    rig_init(&r, 4, 64, 8, 0, false);
    struct eng_seq *a = add(&r, 6, 1), *b = add(&r, 6, 50);
    run_step(&r);
    CHECK(r.s.n_running == 2 && eng_kv_cache_used_blocks(r.kv) == 4, "both admitted");
    /* Decode until A needs a third block (position 8): B, the newest, is preempted. */
    run_step(&r); /* writes position 6 */
    run_step(&r); /* position 7 */
    CHECK(r.s.n_preemptions == 0, "no preemption yet");
    int32_t b_tokens = b->n_tokens;
    CHECK(eng_sched_plan(&r.s) == 0, "plan");
    check_batch(&r.s);
    CHECK(r.s.n_preemptions == 1, "preemptions %lld", (long long)r.s.n_preemptions);
    CHECK(r.s.n_items == 1 && r.s.items[0].seq == a, "only A runs");
    CHECK(b->state == ENG_SEQ_WAITING && b->n_blocks == 0 && b->n_computed == 0 &&
          b->n_tokens == b_tokens && r.s.waiting[0] == b, "B preempted to the front, tokens kept");
    eng_sched_commit(&r.s);
    eng_sched_append(a, 5);
    /* When A ends, B is re-prefilled with all its tokens. */
    eng_sched_remove(&r.s, a);
    CHECK(eng_sched_plan(&r.s) == 0, "plan");
    check_batch(&r.s);
    CHECK(r.s.n_items == 1 && r.s.items[0].seq == b && r.s.items[0].pos0 == 0 &&
          r.s.items[0].q_len == b_tokens && r.s.items[0].sample, "B recomputed from 0");
    eng_sched_commit(&r.s);
    rig_free(&r);
}

static void test_fork_copy_on_write(void)
{
    struct rig r;
    rig_init(&r, 16, 64, 8, 0, true);
    struct eng_seq *a = add(&r, 6, 1);
    CHECK(eng_sched_plan(&r.s) == 0, "plan");
    eng_sched_commit(&r.s);
    /* Mark the partial block's K so the copy can be checked. */
    float *k0 = r.kv->k[0];
    int32_t partial = a->blocks[1];
    for (int i = 0; i < BS * 2; i++)
        k0[(size_t)partial * BS * 2 + (size_t)i] = 0.5f + (float)i;
    struct eng_seq *kids[3];
    for (int c = 0; c < 3; c++)
        kids[c] = eng_sched_fork(&r.s, a, c + 1);
    CHECK(eng_kv_cache_used_blocks(r.kv) == 2, "forks share: %lld blocks",
          (long long)eng_kv_cache_used_blocks(r.kv));
    CHECK(r.kv->refcount[a->blocks[0]] == 4 + 1, "full block: 4 sequences + the cache");
    eng_sched_append(a, 9);
    for (int c = 0; c < 3; c++)
        eng_sched_append(kids[c], 9);
    run_step(&r);
    CHECK(r.s.n_items == 4, "four decodes");
    /* 1 shared full block + 4 private partial ones (three copies, the last keeps the original). */
    CHECK(eng_kv_cache_used_blocks(r.kv) == 5, "after copy-on-write: %lld",
          (long long)eng_kv_cache_used_blocks(r.kv));
    CHECK(kids[2]->blocks[1] == partial || a->blocks[1] == partial || kids[0]->blocks[1] == partial ||
          kids[1]->blocks[1] == partial, "one sequence keeps the original block");
    for (int c = 0; c < 3; c++) {
        int32_t nb = kids[c]->blocks[1];
        CHECK(kids[c]->blocks[0] == a->blocks[0], "full block still shared");
        for (int i = 0; i < 2 * 2; i++) /* the two computed tokens of the partial block */
            CHECK(k0[(size_t)nb * BS * 2 + (size_t)i] == 0.5f + (float)i, "copy of choice %d", c);
    }
    rig_free(&r);
}

static void test_prefix_hits(void)
{
    struct rig r;
    rig_init(&r, 32, 64, 8, 0, true);
    struct eng_seq *a = add(&r, 12, 100);
    run_step(&r);
    CHECK(eng_prefix_cache_n_registered(r.pc) == 3, "three full blocks registered");
    eng_sched_remove(&r.s, a);
    CHECK(eng_prefix_cache_n_evictable(r.pc) == 3 && eng_prefix_cache_n_used(r.pc) == 0,
          "freed cached blocks stay evictable");
    /* Same 12 tokens + 2: three hits, two tokens to compute. */
    int32_t p[14];
    for (int i = 0; i < 14; i++)
        p[i] = i < 12 ? 100 + i : 7;
    struct eng_seq *b = eng_seq_create(NULL, 0, p, 14);
    eng_sched_add(&r.s, b);
    CHECK(eng_sched_plan(&r.s) == 0, "plan");
    check_batch(&r.s);
    CHECK(r.s.items[0].pos0 == 12 && r.s.items[0].q_len == 2 && b->n_cached_tokens == 12,
          "B: 12 cached tokens (pos0 %d)", r.s.items[0].pos0);
    eng_sched_commit(&r.s);
    /* Exactly the 12 tokens: the last block is recomputed (its last token needs logits). */
    struct eng_seq *c = add(&r, 12, 100);
    CHECK(eng_sched_plan(&r.s) == 0, "plan");
    check_batch(&r.s);
    CHECK(c->n_cached_tokens == 8 && r.s.items[r.s.n_items - 1].q_len == 4, "C: 8 cached");
    eng_sched_commit(&r.s);
    /* Hits disabled (prompt logprobs). */
    struct eng_seq *d = eng_seq_create(NULL, 0, p, 14);
    d->allow_cache_hits = false;
    d->want_prompt_logits = true;
    eng_sched_add(&r.s, d);
    CHECK(eng_sched_plan(&r.s) == 0, "plan");
    check_batch(&r.s);
    const struct eng_sched_item *it = &r.s.items[r.s.n_items - 1];
    CHECK(it->seq == d && it->pos0 == 0 && it->n_rows == 14 && it->prompt_rows, "D: no hits, all rows");
    eng_sched_commit(&r.s);
    CHECK(r.s.prefix_queries == 12 + 14 + 12 + 14 && r.s.prefix_hits == 20, "counters %lld/%lld",
          (long long)r.s.prefix_hits, (long long)r.s.prefix_queries);
    rig_free(&r);
}

static void test_longrope_switch(void)
{
    struct rig r;
    rig_init(&r, 32, 64, 8, 8, true);
    struct eng_seq *a = add(&r, 6, 1), *l = add(&r, 9, 40);
    run_step(&r);
    CHECK(a->variant == ENG_ROPE_SHORT && l->variant == ENG_ROPE_LONG, "prompt rule: long iff > 8");
    run_step(&r); /* a: 7 -> 8 tokens held */
    run_step(&r); /* planned with 8 tokens (short), then 9 */
    CHECK(a->variant == ENG_ROPE_SHORT && r.s.n_rope_recomputes == 0, "8 tokens: still short");
    /* a now holds 9 tokens: recomputed from scratch with the long table, in this step. */
    CHECK(eng_sched_plan(&r.s) == 0, "plan");
    check_batch(&r.s);
    CHECK(r.s.n_rope_recomputes == 1 && r.s.n_preemptions == 0, "one recompute, not a preemption");
    bool found = false;
    for (int32_t k = 0; k < r.s.n_items; k++)
        if (r.s.items[k].seq == a) {
            found = true;
            CHECK(r.s.items[k].pos0 == 0 && r.s.items[k].q_len == 9 && r.s.batch.rope_variant[k] == 1,
                  "a re-prefilled with long factors");
        }
    CHECK(found, "a scheduled");
    eng_sched_commit(&r.s);
    rig_free(&r);
}

int main(void)
{
    test_budget_and_chunking();
    test_long_prefill_threshold();
    test_max_seqs();
    test_preemption();
    test_fork_copy_on_write();
    test_prefix_hits();
    test_longrope_switch();
    return tu_finish("test_scheduler");
}
