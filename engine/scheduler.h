/* The step planner of continuous batching: which sequences run in the next forward call and
 * how many tokens each, under a token budget and a sequence cap, with KV blocks taken from the
 * paged cache through the prefix cache. Running decodes go first, then running chunked
 * prefills, then waiting sequences are admitted while blocks last; when blocks run out the
 * most recently admitted sequence is preempted (its blocks freed, its tokens kept and
 * recomputed later). It also applies the per-sequence LongRoPE rule. It builds the flat
 * eng_batch; it does not run the model, sample or talk to requests (engine.c does).
 * Not thread-safe: the engine thread owns it. */
#ifndef PHISERVE_ENGINE_SCHEDULER_H
#define PHISERVE_ENGINE_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "batch.h"
#include "kv_cache.h"
#include "prefix_cache.h"

struct eng_sched_config {
    int32_t max_batched_tokens;    /* >= 1: tokens per step */
    int32_t max_seqs;              /* >= 1: running sequences */
    /* LongRoPE: > 0 enables the transformers rule (short factors while a sequence holds at
     * most this many tokens, then one recompute with long factors); 0 for plain RoPE. */
    int64_t rope_original_max;
    int32_t long_prefill_token_threshold; /* > 0: tokens a sequence's prefill takes of one step
                                      at most (chunks that long); 0: the budget's */
};

enum eng_seq_state {
    ENG_SEQ_WAITING = 0,
    ENG_SEQ_RUNNING = 1,
};

/* One sequence (one choice of a request). Created by eng_seq_create, owned by the scheduler
 * once added. Fields are read by the engine; only the scheduler changes them, except the ones
 * marked "engine". */
struct eng_seq {
    void *owner;                   /* engine: the request (opaque here) */
    int32_t choice;                /* engine: choice index */
    int32_t *tokens;               /* [cap_tokens] prompt, then generated tokens; owned. A
                                      negative id is an image position (engine): the batch
                                      embeds it as 0 and the prefix cache keys it as is */
    int32_t n_tokens, cap_tokens;
    int32_t n_prompt;
    int32_t n_computed;            /* leading tokens whose K/V are in the cache */
    int32_t *blocks;               /* [cap_blocks] block table; one reference held on each */
    uint64_t *hashes;              /* [cap_blocks] prefix hash of each full computed block */
    int32_t n_blocks, n_hashed, cap_blocks;
    uint8_t variant;               /* enum eng_rope_variant */
    bool variant_fixed;            /* engine: the variant was chosen at submission
                                      (rope_long_from_start); never switch it */
    bool allow_cache_hits;         /* engine: false for prompt-logprob requests */
    bool want_prompt_logits;       /* engine sets; cleared once the whole prompt was computed */
    int32_t n_fork;                /* engine: > 1 means fork into n_fork choices when the prompt
                                      is done; the engine resets it to 0 when it forks */
    int32_t n_cached_tokens;       /* prefix-cache hit tokens at the first admission */
    bool admitted_once;
    enum eng_seq_state state;
    int64_t arrival;               /* admission stamp (larger: admitted later) */
    int64_t step;                  /* last step that scheduled it */
};

/* One scheduled sequence of a step: tokens [pos0, pos0 + q_len) of seq run; rows
 * [row0, row0 + n_rows) of the step's logits belong to it (positions pos0 + r for prompt
 * logprobs, or only the last position); sample says whether its last row is a new token's. */
struct eng_sched_item {
    struct eng_seq *seq;
    int32_t pos0, q_len;
    int32_t row0, n_rows;
    bool sample;
    bool prompt_rows;              /* rows are every token of the chunk (prompt logprobs) */
};

struct eng_scheduler {
    struct eng_sched_config cfg;
    struct eng_kv_cache *kv;       /* caller keeps */
    struct eng_prefix_cache *pc;   /* caller keeps */
    int64_t bs;
    struct eng_seq **running;      /* [n_running] by admission order */
    int32_t n_running, cap_running;
    struct eng_seq **waiting;      /* [n_waiting] FIFO; preempted sequences go to the front */
    int32_t n_waiting, cap_waiting;
    int64_t step_id, arrival_counter;
    int64_t n_preemptions;         /* preemptions for lack of blocks */
    int64_t n_rope_recomputes;     /* LongRoPE short -> long recomputes */
    int64_t prefix_queries, prefix_hits; /* prompt tokens looked up / found (first admission) */
    /* The last plan; arrays owned, grown on demand. */
    struct eng_batch batch;
    struct eng_sched_item *items;
    int32_t n_items, cap_items;
    int32_t *ids, *pos, *q_start, *q_len, *ctx_len, *tables, *rows;
    int64_t *slots;
    uint8_t *variants;
    int64_t cap_tokens, cap_seqs, cap_tables, cap_rows;
};

/* Creates a sequence for prompt ([n_prompt] ids, copied; n_prompt >= 1). Returns NULL on
 * allocation failure. Free with eng_seq_destroy unless it was added to a scheduler. */
struct eng_seq *eng_seq_create(void *owner, int32_t choice, const int32_t *prompt, int32_t n_prompt);
void eng_seq_destroy(struct eng_seq *s);

/* Initialises *s (struct owned by the caller). Returns 0 or -1 on bad config. */
int eng_sched_init(struct eng_scheduler *s, const struct eng_sched_config *cfg,
                   struct eng_kv_cache *kv, struct eng_prefix_cache *pc);

/* Frees every sequence (releasing their blocks) and the plan arrays. */
void eng_sched_free(struct eng_scheduler *s);

/* Queues seq at the end of the waiting list (the scheduler takes it). Returns 0 or -1 on
 * allocation failure (the caller keeps seq then). */
int eng_sched_add(struct eng_scheduler *s, struct eng_seq *seq);

/* Plans the next step: fills s->items and s->batch (valid until the next plan). Returns 0
 * (s->n_items may be 0 when nothing can run) or -1 on allocation failure. */
int eng_sched_plan(struct eng_scheduler *s);

/* After the forward call of the last plan succeeded: marks each item's tokens computed and
 * registers the blocks that became full with the prefix cache. */
void eng_sched_commit(struct eng_scheduler *s);

/* Appends a generated token to seq. Returns 0 or -1 on allocation failure. */
int eng_sched_append(struct eng_seq *seq, int32_t token);

/* A new running sequence sharing every block of parent (its tokens and state copied), for
 * choice `choice` of the same owner. Returns NULL on allocation failure. */
struct eng_seq *eng_sched_fork(struct eng_scheduler *s, struct eng_seq *parent, int32_t choice);

/* Removes seq (running or waiting), releases its blocks and frees it. */
void eng_sched_remove(struct eng_scheduler *s, struct eng_seq *seq);

#endif
