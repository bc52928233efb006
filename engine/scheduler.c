/* Continuous-batching step planner (see scheduler.h): admission, chunked prefill, block
 * allocation with copy-on-write, preemption by recompute, the LongRoPE switch, and the flat
 * batch. Nothing here touches requests, the model or the sampler. */
#include "scheduler.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

/* Grows *p (elements of size sz) to hold at least need; doubles. Returns 0 or -1. */
static int grow(void **p, int64_t *cap, int64_t need, size_t sz)
{
    if (need <= *cap)
        return 0;
    int64_t n = *cap > 0 ? *cap : 16;
    while (n < need) {
        if (n > INT32_MAX)
            return -1;
        n *= 2;
    }
    void *q = realloc(*p, (size_t)n * sz);
    if (!q)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

/* Reallocates *p to n elements of size sz (n >= 1). Returns 0 or -1 (then *p is unchanged). */
static int resize(void **p, int64_t n, size_t sz)
{
    void *q = realloc(*p, (size_t)n * sz);
    if (!q)
        return -1;
    *p = q;
    return 0;
}

/* grow() for int32 capacities: a need beyond INT32_MAX is refused, and doubling stops there. */
static int grow32(void **p, int32_t *cap, int64_t need, size_t sz)
{
    if (need > INT32_MAX)
        return -1;
    if (need <= *cap)
        return 0;
    int64_t c = *cap;
    int64_t want = c > 0 && c <= INT32_MAX / 2 ? 2 * c : INT32_MAX;
    if (c <= 0)
        want = 16;
    if (want < need)
        want = need;
    if (resize(p, want, sz) != 0)
        return -1;
    *cap = (int32_t)want;
    return 0;
}

struct eng_seq *eng_seq_create(void *owner, int32_t choice, const int32_t *prompt, int32_t n_prompt)
{
    if (n_prompt < 1)
        return NULL;
    struct eng_seq *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->owner = owner;
    s->choice = choice;
    if (grow32((void **)&s->tokens, &s->cap_tokens, (int64_t)n_prompt + 1, sizeof *s->tokens) != 0) {
        free(s);
        return NULL;
    }
    memcpy(s->tokens, prompt, (size_t)n_prompt * sizeof *prompt);
    s->n_tokens = s->n_prompt = n_prompt;
    s->allow_cache_hits = true;
    s->step = -1;
    return s;
}

void eng_seq_destroy(struct eng_seq *s)
{
    if (!s)
        return;
    free(s->tokens);
    free(s->blocks);
    free(s->hashes);
    free(s);
}

int eng_sched_append(struct eng_seq *seq, int32_t token)
{
    if (grow32((void **)&seq->tokens, &seq->cap_tokens, (int64_t)seq->n_tokens + 1,
               sizeof *seq->tokens) != 0)
        return -1;
    seq->tokens[seq->n_tokens++] = token;
    return 0;
}

int eng_sched_init(struct eng_scheduler *s, const struct eng_sched_config *cfg,
                   struct eng_kv_cache *kv, struct eng_prefix_cache *pc)
{
    memset(s, 0, sizeof *s);
    if (cfg->max_batched_tokens < 1 || cfg->max_seqs < 1 || cfg->rope_original_max < 0 ||
        cfg->long_prefill_token_threshold < 0)
        return -1;
    s->cfg = *cfg;
    s->kv = kv;
    s->pc = pc;
    s->bs = kv->block_size;
    return 0;
}

static void release_blocks(struct eng_scheduler *s, struct eng_seq *seq)
{
    for (int32_t i = 0; i < seq->n_blocks; i++)
        eng_prefix_cache_release(s->pc, seq->blocks[i]);
    seq->n_blocks = 0;
    seq->n_hashed = 0;
    seq->n_computed = 0;
}

void eng_sched_free(struct eng_scheduler *s)
{
    for (int32_t i = 0; i < s->n_running; i++) {
        release_blocks(s, s->running[i]);
        eng_seq_destroy(s->running[i]);
    }
    for (int32_t i = 0; i < s->n_waiting; i++) {
        release_blocks(s, s->waiting[i]);
        eng_seq_destroy(s->waiting[i]);
    }
    free(s->running);
    free(s->waiting);
    free(s->items);
    free(s->ids);
    free(s->pos);
    free(s->q_start);
    free(s->q_len);
    free(s->ctx_len);
    free(s->tables);
    free(s->rows);
    free(s->slots);
    free(s->variants);
    memset(s, 0, sizeof *s);
}

int eng_sched_add(struct eng_scheduler *s, struct eng_seq *seq)
{
    if (grow32((void **)&s->waiting, &s->cap_waiting, (int64_t)s->n_waiting + 1, sizeof *s->waiting) != 0)
        return -1;
    seq->state = ENG_SEQ_WAITING;
    s->waiting[s->n_waiting++] = seq;
    return 0;
}

static void list_remove(struct eng_seq **list, int32_t *n, struct eng_seq *seq)
{
    for (int32_t i = 0; i < *n; i++)
        if (list[i] == seq) {
            memmove(list + i, list + i + 1, (size_t)(*n - i - 1) * sizeof *list);
            (*n)--;
            return;
        }
    assert(!"sequence not in list");
}

void eng_sched_remove(struct eng_scheduler *s, struct eng_seq *seq)
{
    if (seq->state == ENG_SEQ_RUNNING)
        list_remove(s->running, &s->n_running, seq);
    else
        list_remove(s->waiting, &s->n_waiting, seq);
    release_blocks(s, seq);
    eng_seq_destroy(seq);
}

/* Moves a running sequence to the front of the waiting list with no blocks: it will be
 * re-prefilled (prompt and generated tokens) when admitted again. The front slot was reserved
 * by the caller's growth of the waiting list, so this cannot fail. */
static void preempt(struct eng_scheduler *s, struct eng_seq *seq)
{
    list_remove(s->running, &s->n_running, seq);
    release_blocks(s, seq);
    assert(s->n_waiting < s->cap_waiting);
    memmove(s->waiting + 1, s->waiting, (size_t)s->n_waiting * sizeof *s->waiting);
    s->waiting[0] = seq;
    s->n_waiting++;
    seq->state = ENG_SEQ_WAITING;
}

static int ensure_block_cap(struct eng_seq *seq, int64_t n)
{
    int32_t cap = seq->cap_blocks;
    if (grow32((void **)&seq->blocks, &cap, n, sizeof *seq->blocks) != 0)
        return -1;
    int32_t cap2 = seq->cap_blocks;
    if (grow32((void **)&seq->hashes, &cap2, n, sizeof *seq->hashes) != 0)
        return -1;
    seq->cap_blocks = cap < cap2 ? cap : cap2;
    return 0;
}

/* Makes seq's block table cover `target` tokens and its partial last block private
 * (copy-on-write when a fork shares it). Returns 0, -1 when the pool has no block left (what
 * was allocated stays with seq), or -2 on allocation failure of the table itself. */
static int ensure_blocks(struct eng_scheduler *s, struct eng_seq *seq, int64_t target)
{
    int64_t bs = s->bs;
    int64_t need = (target + bs - 1) / bs;
    if (ensure_block_cap(seq, need) != 0)
        return -2;
    if (seq->n_computed % bs != 0) {
        int32_t i = (int32_t)(seq->n_computed / bs);
        int32_t old = seq->blocks[i];
        if (s->kv->refcount[old] > 1) {
            int32_t fresh;
            if (eng_prefix_cache_alloc(s->pc, &fresh) != 0)
                return -1;
            eng_kv_cache_copy_block(s->kv, old, fresh);
            eng_prefix_cache_release(s->pc, old);
            seq->blocks[i] = fresh;
        }
    }
    while (seq->n_blocks < need) {
        if (eng_prefix_cache_alloc(s->pc, &seq->blocks[seq->n_blocks]) != 0)
            return -1;
        seq->n_blocks++;
    }
    return 0;
}

static int add_item(struct eng_scheduler *s, struct eng_seq *seq, int32_t q)
{
    if (grow32((void **)&s->items, &s->cap_items, (int64_t)s->n_items + 1, sizeof *s->items) != 0)
        return -1;
    struct eng_sched_item *it = &s->items[s->n_items++];
    it->seq = seq;
    it->pos0 = seq->n_computed;
    it->q_len = q;
    it->sample = seq->n_computed + q == seq->n_tokens;
    it->row0 = it->n_rows = 0;
    seq->step = s->step_id;
    return 0;
}

/* The sequence's RoPE table for its current length (transformers: long iff it holds more than
 * original_max tokens, and it never goes back). */
static void choose_variant(const struct eng_scheduler *s, struct eng_seq *seq)
{
    if (s->cfg.rope_original_max > 0 && !seq->variant_fixed &&
        seq->n_tokens > s->cfg.rope_original_max)
        seq->variant = ENG_ROPE_LONG;
}

/* Schedules q tokens of running sequence index i, preempting newer unscheduled sequences when
 * blocks run out. Returns 1 when scheduled, 0 when seq itself had to be preempted, -1 on
 * allocation failure. */
static int schedule_running(struct eng_scheduler *s, int32_t i, int32_t q)
{
    struct eng_seq *seq = s->running[i];
    for (;;) {
        int rc = ensure_blocks(s, seq, (int64_t)seq->n_computed + q);
        if (rc == -2)
            return -1;
        if (rc == 0)
            return add_item(s, seq, q) == 0 ? 1 : -1;
        int32_t victim = -1;
        for (int32_t j = s->n_running - 1; j > i; j--)
            if (s->running[j]->step != s->step_id) {
                victim = j;
                break;
            }
        s->n_preemptions++;
        if (victim < 0) {
            preempt(s, seq);
            return 0;
        }
        preempt(s, s->running[victim]);
    }
}

/* The tokens a sequence with q left to compute takes of a step with budget left: capped by
 * long_prefill_token_threshold when set. */
static int32_t prefill_chunk(const struct eng_scheduler *s, int32_t q, int32_t budget)
{
    int32_t t = s->cfg.long_prefill_token_threshold;
    if (t > 0 && q > t)
        q = t;
    return q < budget ? q : budget;
}

/* Tries to admit the head of the waiting list with up to budget tokens. Returns 1 when
 * admitted, 0 when it does not fit now, -1 on allocation failure. */
static int admit(struct eng_scheduler *s, int32_t budget)
{
    struct eng_seq *seq = s->waiting[0];
    int64_t bs = s->bs;
    choose_variant(s, seq);
    assert(seq->n_blocks == 0 && seq->n_computed == 0);
    if (ensure_block_cap(seq, (seq->n_tokens + bs - 1) / bs) != 0)
        return -1;
    /* Prefix-cache hits: full blocks only, and never the block holding the last token, which
     * must be computed for its logits (so no shared block is ever written). */
    int32_t hits = 0;
    if (seq->allow_cache_hits) {
        int32_t max_hits = (int32_t)((seq->n_tokens - 1) / bs);
        uint64_t parent = 0;
        while (hits < max_hits) {
            const int32_t *t = seq->tokens + (int64_t)hits * bs;
            uint64_t h = eng_prefix_hash(parent, t, (int32_t)bs, seq->variant);
            int32_t b = eng_prefix_cache_acquire(s->pc, h, parent, t, seq->variant);
            if (b < 0)
                break;
            seq->blocks[hits] = b;
            seq->hashes[hits] = h;
            parent = h;
            hits++;
        }
    }
    seq->n_blocks = seq->n_hashed = hits;
    seq->n_computed = (int32_t)(hits * bs);
    int32_t q = prefill_chunk(s, seq->n_tokens - seq->n_computed, budget);
    int rc = ensure_blocks(s, seq, (int64_t)seq->n_computed + q);
    if (rc != 0) {
        release_blocks(s, seq);
        return rc == -2 ? -1 : 0;
    }
    if (grow32((void **)&s->running, &s->cap_running, (int64_t)s->n_running + 1, sizeof *s->running) != 0) {
        release_blocks(s, seq);
        return -1;
    }
    if (!seq->admitted_once) {
        seq->admitted_once = true;
        seq->n_cached_tokens = seq->n_computed;
        s->prefix_queries += seq->n_prompt;
        s->prefix_hits += seq->n_computed;
    }
    memmove(s->waiting, s->waiting + 1, (size_t)(s->n_waiting - 1) * sizeof *s->waiting);
    s->n_waiting--;
    seq->state = ENG_SEQ_RUNNING;
    seq->arrival = ++s->arrival_counter;
    s->running[s->n_running++] = seq;
    return add_item(s, seq, q) == 0 ? 1 : -1;
}

/* Lays the planned items out as the flat batch. */
static int build_batch(struct eng_scheduler *s)
{
    int64_t T = 0, R = 0, max_blocks = 1;
    int32_t S = s->n_items;
    for (int32_t k = 0; k < S; k++) {
        struct eng_sched_item *it = &s->items[k];
        struct eng_seq *seq = it->seq;
        T += it->q_len;
        it->prompt_rows = seq->want_prompt_logits;
        it->n_rows = seq->want_prompt_logits ? it->q_len : (it->sample ? 1 : 0);
        R += it->n_rows;
        if (seq->n_blocks > max_blocks)
            max_blocks = seq->n_blocks;
    }
    if (T > s->cap_tokens) {
        int64_t n = T > 2 * s->cap_tokens ? T : 2 * s->cap_tokens;
        if (resize((void **)&s->ids, n, sizeof *s->ids) != 0 ||
            resize((void **)&s->pos, n, sizeof *s->pos) != 0 ||
            resize((void **)&s->slots, n, sizeof *s->slots) != 0)
            return -1;
        s->cap_tokens = n;
    }
    if (S > s->cap_seqs) {
        int64_t n = S > 2 * s->cap_seqs ? S : 2 * s->cap_seqs;
        if (resize((void **)&s->q_start, n, sizeof *s->q_start) != 0 ||
            resize((void **)&s->q_len, n, sizeof *s->q_len) != 0 ||
            resize((void **)&s->ctx_len, n, sizeof *s->ctx_len) != 0 ||
            resize((void **)&s->variants, n, sizeof *s->variants) != 0)
            return -1;
        s->cap_seqs = n;
    }
    if (grow((void **)&s->tables, &s->cap_tables, (int64_t)S * max_blocks, sizeof *s->tables) != 0 ||
        grow((void **)&s->rows, &s->cap_rows, R, sizeof *s->rows) != 0)
        return -1;
    int32_t t = 0, r = 0;
    int64_t bs = s->bs;
    for (int32_t k = 0; k < S; k++) {
        struct eng_sched_item *it = &s->items[k];
        struct eng_seq *seq = it->seq;
        s->q_start[k] = t;
        s->q_len[k] = it->q_len;
        s->ctx_len[k] = it->pos0 + it->q_len;
        s->variants[k] = seq->variant;
        int32_t *tab = s->tables + (int64_t)k * max_blocks;
        memcpy(tab, seq->blocks, (size_t)seq->n_blocks * sizeof *tab);
        for (int64_t b = seq->n_blocks; b < max_blocks; b++)
            tab[b] = 0;
        it->row0 = r;
        for (int32_t j = 0; j < it->q_len; j++, t++) {
            int32_t p = it->pos0 + j;
            s->ids[t] = seq->tokens[p] < 0 ? 0 : seq->tokens[p]; /* an image row (engine) */
            s->pos[t] = p;
            s->slots[t] = (int64_t)seq->blocks[p / bs] * bs + p % bs;
            if (seq->want_prompt_logits || (it->sample && j == it->q_len - 1))
                s->rows[r++] = t;
        }
    }
    struct eng_batch *b = &s->batch;
    memset(b, 0, sizeof *b);
    b->n_tokens = (int32_t)T;
    b->token_ids = s->ids;
    b->positions = s->pos;
    b->slot_mapping = s->slots;
    b->n_seqs = S;
    b->q_start = s->q_start;
    b->q_len = s->q_len;
    b->ctx_len = s->ctx_len;
    b->block_tables = s->tables;
    b->max_blocks = (int32_t)max_blocks;
    b->rope_variant = s->variants;
    b->n_logit_rows = r;
    b->logit_rows = s->rows;
    return 0;
}

int eng_sched_plan(struct eng_scheduler *s)
{
    s->step_id++;
    s->n_items = 0;
    memset(&s->batch, 0, sizeof s->batch);
    /* Room for every running sequence at the front of the waiting list (preemption). */
    if (grow32((void **)&s->waiting, &s->cap_waiting, (int64_t)s->n_waiting + s->n_running + 1,
               sizeof *s->waiting) != 0)
        return -1;

    /* LongRoPE: a sequence that now holds more than original_max tokens while its cache was
     * rotated with the short factors is recomputed once with the long ones, through the same
     * path as a preemption (all blocks freed, everything prefilled again). */
    for (int32_t i = s->n_running - 1; i >= 0; i--) {
        struct eng_seq *seq = s->running[i];
        uint8_t was = seq->variant;
        choose_variant(s, seq);
        if (seq->variant != was) {
            s->n_rope_recomputes++;
            preempt(s, seq);
        }
    }

    int32_t budget = s->cfg.max_batched_tokens;
    /* Decodes first (one token each), oldest first. */
    for (int32_t i = 0; i < s->n_running && budget > 0; i++) {
        struct eng_seq *seq = s->running[i];
        if (seq->n_tokens - seq->n_computed != 1)
            continue;
        int rc = schedule_running(s, i, 1);
        if (rc < 0)
            return -1;
        if (rc == 0)
            break; /* it was the newest unscheduled one: nothing after it is left */
        budget--;
    }
    /* Then the running sequences still in (chunked) prefill. */
    for (int32_t i = 0; i < s->n_running && budget > 0; i++) {
        struct eng_seq *seq = s->running[i];
        if (seq->step == s->step_id)
            continue;
        int32_t q = seq->n_tokens - seq->n_computed;
        if (q <= 0)
            continue; /* nothing new to compute (the engine always appends a token) */
        q = prefill_chunk(s, q, budget);
        int rc = schedule_running(s, i, q);
        if (rc < 0)
            return -1;
        if (rc == 0)
            break;
        budget -= q;
    }
    /* Then admissions, in order, while tokens, sequence slots and blocks last. */
    while (s->n_waiting > 0 && budget > 0 && s->n_running < s->cfg.max_seqs) {
        struct eng_seq *head = s->waiting[0];
        if (head->n_fork > 1 && s->n_running > 0 && s->n_running + head->n_fork > s->cfg.max_seqs)
            break;
        int rc = admit(s, budget);
        if (rc < 0)
            return -1;
        if (rc == 0)
            break;
        budget -= s->items[s->n_items - 1].q_len;
    }
    return build_batch(s);
}

void eng_sched_commit(struct eng_scheduler *s)
{
    int64_t bs = s->bs;
    for (int32_t k = 0; k < s->n_items; k++) {
        struct eng_seq *seq = s->items[k].seq;
        seq->n_computed = s->items[k].pos0 + s->items[k].q_len;
        if (seq->n_computed >= seq->n_prompt)
            seq->want_prompt_logits = false;
        while ((int64_t)(seq->n_hashed + 1) * bs <= seq->n_computed) {
            int32_t i = seq->n_hashed;
            uint64_t parent = i > 0 ? seq->hashes[i - 1] : 0;
            const int32_t *t = seq->tokens + (int64_t)i * bs;
            uint64_t h = eng_prefix_hash(parent, t, (int32_t)bs, seq->variant);
            seq->hashes[i] = h;
            eng_prefix_cache_insert(s->pc, seq->blocks[i], h, parent, t, seq->variant);
            seq->n_hashed++;
        }
    }
}

struct eng_seq *eng_sched_fork(struct eng_scheduler *s, struct eng_seq *parent, int32_t choice)
{
    struct eng_seq *c = eng_seq_create(parent->owner, choice, parent->tokens, parent->n_tokens);
    if (!c)
        return NULL;
    if (ensure_block_cap(c, parent->n_blocks > 0 ? parent->n_blocks : 1) != 0 ||
        grow32((void **)&s->running, &s->cap_running, (int64_t)s->n_running + 1, sizeof *s->running) != 0) {
        eng_seq_destroy(c);
        return NULL;
    }
    c->n_prompt = parent->n_prompt;
    c->n_computed = parent->n_computed;
    for (int32_t i = 0; i < parent->n_blocks; i++) {
        eng_kv_cache_retain_block(s->kv, parent->blocks[i]);
        c->blocks[i] = parent->blocks[i];
    }
    memcpy(c->hashes, parent->hashes, (size_t)parent->n_hashed * sizeof *c->hashes);
    c->n_blocks = parent->n_blocks;
    c->n_hashed = parent->n_hashed;
    c->variant = parent->variant;
    c->variant_fixed = parent->variant_fixed;
    c->allow_cache_hits = parent->allow_cache_hits;
    c->n_cached_tokens = parent->n_cached_tokens;
    c->admitted_once = true;
    c->state = ENG_SEQ_RUNNING;
    c->arrival = ++s->arrival_counter;
    c->step = parent->step;
    s->running[s->n_running++] = c;
    return c;
}
