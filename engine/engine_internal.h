/* Private to the engine (engine.c, engine_create.c): the engine and handle structs, and the
 * few functions the two files share. Not for the server: engine.h is the engine's API. */
#ifndef PHISERVE_ENGINE_ENGINE_INTERNAL_H
#define PHISERVE_ENGINE_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "detok.h"
#include "engine.h"
#include "kv_cache.h"
#include "model.h"
#include "models/phi3.h"
#include "ops.h"
#include "prefix_cache.h"
#include "sampler.h"
#include "scheduler.h"

#define MAX_CHOICES 128
#define DETOK_CONTEXT 6
#define DEFAULT_KV_BYTES ((int64_t)1 << 30)

/* One queued event of a handle, with its text and token in the same allocation. Taken
 * events go back to the handle's spares and are reused, so that a request whose client keeps
 * up costs no allocation per token. */
struct pending_event {
    struct pending_event *next;
    size_t cap;                    /* bytes of text[] */
    struct eng_event ev;           /* text and tokens point into this allocation */
    struct eng_token_info token;
    char text[];
};

/* Text room of a new event at least (a token's text is a few bytes), and how many taken
 * events a handle keeps for reuse. */
#define EVENT_MIN_TEXT 48
#define EVENT_MAX_SPARES 8

/* Per-choice generation state; engine thread only. */
struct choice {
    struct eng_sampler_state st;
    struct eng_detok *detok;       /* NULL without a tokenizer */
    struct eng_stop_matcher *stop; /* NULL without stop strings */
    struct eng_grammar_matcher *gm; /* NULL without structured output */
    int grammar_err;               /* a failed mask (eng_grammar_err): the choice ends */
    bool finished;
};

/* An image of a request: its views until encoded, then its rows of the embeddings. */
struct handle_image {
    float *views;                  /* [n_views, 3, S, S] host copy; freed once encoded */
    int32_t h_crop, w_crop;
    int32_t pos, n_tokens;         /* prompt span */
    int64_t row;                   /* first row in eng_handle.img_embeds */
};

struct eng_handle {
    struct eng_engine *e;
    /* The request, copied at submit; read-only afterwards. */
    int32_t *prompt;               /* [n_prompt] */
    int32_t n_prompt;
    struct eng_sampling_params sp; /* its arrays point to the copies below */
    struct eng_logit_bias *bias;
    int32_t *stop_ids, *eos_ids;
    int32_t max_len;               /* a choice ends when it holds this many tokens */
    int32_t n;
    bool include_stop, prompt_logprobs;
    int32_t prompt_top;
    uint8_t variant;               /* initial RoPE variant */
    bool variant_fixed;
    struct handle_image *images;   /* [n_images] */
    int32_t n_images;
    int64_t n_image_tokens;        /* summed spans */
    struct eng_grammar *grammar;   /* the request's copy; NULL without structured output */
    float *img_embeds;             /* engine thread: [n_image_tokens, H] backend memory once
                                      encoded (intake), freed when the engine lets go */
    /* Engine thread only. */
    struct choice *choices;        /* [n] */
    int32_t n_finished;
    int32_t completion_tokens, cached_tokens;
    struct eng_token_info *plp;    /* [n_prompt] prompt logprobs being filled */
    bool engine_ref;               /* the engine still holds its reference */
    bool dirty;                    /* events queued this step, wake pending */
    struct eng_handle *next;       /* inbox / dirty list link */
    /* Shared, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pending_event *head, *tail, *current;
    struct pending_event *spare;   /* taken events kept for reuse: a list of n_spare */
    int32_t n_spare;
    bool done;                     /* every choice finished (its events may still be queued) */
    bool plp_ready;
    bool released;
    int waking;
    struct eng_usage usage;
    eng_wake_fn wake;
    void *user;
    atomic_int refs;
    atomic_bool cancelled;
};

struct eng_engine {
    struct eng_model *model;
    struct eng_tokenizer *tok;     /* NULL when the directory has no tokenizer.model */
    struct kern_ops ops;
    struct kern_ctx *ctx;
    bool cuda;                     /* ctx came from kern_cuda_create */
    struct eng_kv_cache *kv;
    struct eng_prefix_cache *pc;
    struct eng_scheduler sched;
    bool sched_ready;
    struct eng_phi3_ws ws;
    struct eng_sampler_ws sws;
    struct eng_grammar_vocab *gvocab; /* the tokens' text for grammars; NULL without a
                                         tokenizer */
    uint32_t *allow;               /* [(vocab + 31) / 32] one choice's grammar mask */
    float *logits;                 /* [cap_rows, vocab] */
    /* Rows of a step that bring back only their token (see eng_phi3_forward): greedy rows
     * (the backend's argmax) and, on a device backend, rows drawn there by the sample op
     * (jobs prepared by eng_sampler_job, with their mods). */
    uint8_t *argmax_rows;          /* [cap_rows] */
    int32_t *row_tokens;           /* [cap_rows] the token of each argmax row */
    int32_t *row_job;              /* [cap_rows] a row's first job, -1 for none (a drawn row
                                      has one: the row of an item that samples) */
    int64_t cap_rows;
    /* The jobs of a step (one per drawn choice or prompt-logprob row) and their results. */
    struct kern_sample_job *jobs;  /* [cap_jobs] */
    int32_t *job_tokens;           /* [cap_jobs] */
    float *job_logprob;            /* [cap_jobs] the raw logprob of the job's token */
    struct kern_token_logprob *job_top; /* [cap_jobs, KERN_MAX_TOP_LOGPROBS] */
    int64_t cap_jobs;
    struct kern_sample_mod *mods;  /* [cap_mods] */
    int64_t cap_mods;
    struct eng_embed_span *spans;  /* [cap_spans] image rows of a step's batch */
    int64_t cap_spans;
    bool logits_pinned;            /* logits is page-locked for the GPU (kern_cuda_host_register) */
    bool host_sampling;            /* every row's logits come back (test / debug knob) */
    char *tbuf;                    /* text of one event being assembled */
    size_t tbuf_len, tbuf_cap;
    struct eng_handle *dirty;      /* handles to wake after this step */
    int32_t max_waiting;
    bool long_from_start;
    atomic_uint_fast64_t entropy;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool mu_ready;
    /* Under mu. */
    struct eng_handle *inbox_head, *inbox_tail;
    int32_t n_inbox;
    bool stop, draining, cancel_pending;
    bool held; /* eng_engine_hold: no step starts */
    struct eng_metrics metrics;    /* snapshot, refreshed after every step */
    /* Engine thread only. */
    int64_t prompt_tokens_total, generation_tokens_total, requests_finished;
    int64_t argmax_rows_total, sampled_rows_total;
    /* Test only: PHISERVE_TEST_STEP_SLEEP_MS, read once at creation, sleeps this long before
     * every step to imitate a wedged forward pass. 0 (unset) does nothing. */
    int64_t test_step_sleep_ms;
};

/* The engine thread's loop (pthread start routine; arg is the engine). */
void *eng_engine_main(void *arg);
/* Grows the per-row arrays of a step (logits, token rows, jobs) to R rows. Returns 0 or -1
 * when out of memory (the arrays that did grow are kept; cap_rows says what all hold). */
int eng_engine_reserve_rows(struct eng_engine *e, int64_t R);
/* Refreshes e->metrics from the engine thread's counters; call with e->mu held. */
void eng_engine_snapshot_metrics(struct eng_engine *e);
/* Writes a message into err (errlen bytes, may be NULL) and returns code. */
__attribute__((format(printf, 4, 5))) int eng_engine_fail_msg(char *err, size_t errlen, int code,
                                                              const char *fmt, ...);

#endif
