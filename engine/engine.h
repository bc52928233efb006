/* The serving engine's public API, the only part of engine/ the HTTP server uses to run
 * requests: submit token ids with sampling parameters and stop rules, receive events (text
 * deltas with token ids and logprobs, finish reasons, usage), cancel. One engine thread owns
 * the model, the scheduler, the KV cache and the backend; everything here is thread-safe
 * unless a function says otherwise. Knows nothing of HTTP or JSON. */
#ifndef PHISERVE_ENGINE_ENGINE_H
#define PHISERVE_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model_config.h"
#include "grammar.h"
#include "sampler.h"
#include "tokenizer.h"

enum eng_err {
    ENG_ERR_INVALID = -1,      /* a request field is out of range (message says which) */
    ENG_ERR_NOMEM = -2,
    ENG_ERR_QUEUE_FULL = -3,   /* the waiting queue is at --max-waiting: HTTP 429 */
    ENG_ERR_CONTEXT = -4,      /* prompt (+ max_tokens) exceeds the context: 400 context_length_exceeded */
    ENG_ERR_DRAINING = -5,     /* shutting down, no new requests: HTTP 503 */
    ENG_ERR_LOAD = -6,         /* model or tokenizer failed to load (create only) */
    ENG_ERR_BACKEND = -7,      /* the backend failed (create only; at run time it is an event) */
};

struct eng_engine_options {
    const char *model_dir;        /* caller keeps during create */
    const char *device;           /* "cpu" (default when NULL), "ref" or "cuda" (GPU 0) */
    const char *quantization;     /* weights quantized at load: "none" (default when NULL),
                                     "q8_0" or "q4_0" (cpu and ref only; eng_model_quantize) */
    const char *int8_activations; /* "on", "off" (default when NULL) or "auto"
                                     (eng_int8_parse): the dense weight matrices (all but
                                     phimoe's experts) in the R16 layout, multiplied with
                                     activations rounded to int8: faster prefill and decode on
                                     the CPU, results a little off the plain path
                                     (eng_model_quantize's int8_dot). "on" needs Q8_0 / Q4_0 /
                                     K-quant matrices (quantization, or such a GGUF file) and
                                     the cpu or ref device; "auto" takes it where
                                     eng_model_int8_wanted says */
    const char *kv_cache_dtype;   /* "auto" (default when NULL: fp32 on cpu/ref, bf16 on cuda),
                                     "bf16", or on cpu/ref "f16" / "f32" (see
                                     eng_kv_cache_dtype_parse) */
    int n_threads;                /* CPU threads; <= 0: all cores */
    int64_t kv_cache_bytes;       /* KV pool budget; <= 0: on the host 1 GiB capped to what max
                                     context needs, on cuda whatever gpu_memory_fraction leaves */
    int32_t block_size;           /* tokens per KV block; <= 0: 16 */
    int32_t max_batched_tokens;   /* per-step token budget; <= 0: 2048 */
    int32_t long_prefill_token_threshold; /* > 0: a sequence's prefill takes at most this many
                                     tokens of a step (vLLM's option: bounds how long a step
                                     with running decodes lasts); <= 0: off */
    int32_t max_seqs;             /* running sequences cap; <= 0: 256 */
    int32_t max_waiting;          /* bounded waiting queue (requests); <= 0: 1024 */
    bool rope_long_from_start;    /* LongRoPE: long factors at admission when prompt + max_tokens
                                     exceeds original_max (no recompute); default off (HF-exact) */
    bool no_prefix_caching;       /* disable automatic prefix caching */
    double gpu_memory_fraction;   /* cuda: weights + activation workspace + KV pool take this
                                     share of the GPU's memory (whatever other processes hold,
                                     capped by what is free less 2%); in (0, 1], default 0.9 */
    bool host_sampling;           /* test / debug knob: bring back every sampled row's full
                                     logits and sample on the host. Otherwise a greedy row
                                     comes back as the backend's argmax, and on a device
                                     backend every row without logprobs is drawn there (the
                                     sample op) and comes back as its token. Output is the same
                                     either way, up to rounding at a draw's boundary. */
    bool enforce_eager;           /* cuda: never replay decode steps as CUDA graphs (vLLM's
                                     --enforce-eager) */
    int32_t max_seq_len_to_capture; /* cuda: decode steps whose contexts are all at most this
                                     long replay graphs; longer ones run eagerly. <= 0: 8192
                                     (vLLM's default), capped at the model's context */
};

/* Fills defaults (all zero/NULL/false except device "cpu" and gpu_memory_fraction 0.9). */
void eng_engine_options_init(struct eng_engine_options *o);

struct eng_engine;

/* Loads the model and tokenizer from o->model_dir, sizes the KV pool, starts the engine
 * thread. With device "cuda" the weights are uploaded to GPU 0, the KV cache is bf16 in GPU
 * memory and the workspace is sized at start for max_batched_tokens / max_seqs. Returns 0 and
 * *out, or a negative eng_err with a message in err (ENG_ERR_BACKEND: no usable GPU, or the
 * model does not fit in gpu_memory_fraction of it). */
int eng_engine_create(const struct eng_engine_options *o, struct eng_engine **out, char *err,
                      size_t errlen);

/* Stops the engine thread (running requests finish with ENG_FINISH_ABORT), frees everything.
 * Every handle must have been released first. Accepts NULL. */
void eng_engine_destroy(struct eng_engine *e);

/* Read-only facts, valid for the engine's lifetime. The tokenizer is NULL when model_dir has
 * no tokenizer.model: the engine then works on token ids alone (event text is empty). */
const struct eng_model_config *eng_engine_model_config(const struct eng_engine *e);
const struct eng_tokenizer *eng_engine_tokenizer(const struct eng_engine *e);
/* Whether the weights are multiplied with int8 activations (int8_activations, "auto"
 * resolved). */
bool eng_engine_int8_activations(const struct eng_engine *e);

/* After this, eng_engine_submit answers ENG_ERR_DRAINING; running requests continue. */
void eng_engine_drain(struct eng_engine *e);

/* One request. Every pointer is the caller's and only needs to live through eng_engine_submit
 * (the engine copies what it keeps). */
/* An image of a request (Phi-3-vision models): its preprocessed views and the prompt span
 * its features fill. */
struct eng_image_input {
    /* [1 + h_crop * w_crop, 3, S, S] normalised pixels, S = vision.image_size: the global
     * view, then the crops row-major (struct eng_hd_image's pixels). */
    const float *views;
    int32_t h_crop, w_crop;       /* h_crop * w_crop <= vision.num_crops */
    int32_t pos;                  /* the first prompt position of its span, which is
                                     eng_vision_image_tokens(h_crop, w_crop) long */
};

/* Images per request the engine takes (the server's limit is lower). */
#define ENG_MAX_IMAGES 64

struct eng_request {
    const int32_t *prompt;        /* [n_prompt] token ids, each < vocab_size (ids inside an
                                     image span are ignored) */
    int32_t n_prompt;             /* >= 1 */
    struct eng_sampling_params sampling; /* eos_token_ids may be left empty: the engine adds
                                            the model's */
    int32_t max_tokens;           /* <= 0: until the context window ends */
    int32_t n;                    /* choices, 1..128; each gets its own sequence (sharing the
                                     prompt's KV blocks) and, when seeded, seed + index */
    const char *const *stop;      /* [n_stop] stop strings */
    int32_t n_stop;
    bool include_stop_str_in_output;
    bool skip_special_tokens;     /* default true in the API */
    bool prompt_logprobs;         /* compute the logprob of every prompt token (echo) */
    int32_t prompt_top_logprobs;  /* alternatives for prompt tokens, 0..20 */
    /* [n_images] images (phi3_v models only), spans ascending and disjoint inside the
     * prompt. The engine encodes them when it takes the request; the prefix cache keys their
     * positions by the pixels. Not with prompt_logprobs. */
    const struct eng_image_input *images;
    int32_t n_images;
    /* Structured output: every choice's text must be a sentence of this finished grammar
     * (engine/grammar.h; NULL: free text). Caller keeps its reference; the engine takes one of
     * its own at submit (eng_grammar_retain), so n prompts share one grammar.
     * Needs a tokenizer. A choice whose text completes the grammar with nothing allowed after
     * it finishes with ENG_FINISH_STOP; while the text is complete but may go on, the eos and
     * stop ids are allowed too. */
    const struct eng_grammar *grammar;
};

enum eng_finish_reason {
    ENG_FINISH_NONE = 0,          /* not finished */
    ENG_FINISH_STOP,              /* eos / stop token id / stop string */
    ENG_FINISH_LENGTH,            /* max_tokens or the context window */
    ENG_FINISH_ABORT,             /* cancelled or engine shutting down */
    ENG_FINISH_ERROR,             /* backend failure; message in eng_event.error */
};

struct eng_token_info {
    int32_t token;
    float logprob;                /* when logprobs were asked */
    int32_t n_top;
    struct eng_token_logprob top[ENG_SAMPLER_MAX_TOP_LOGPROBS];
};

/* An event of one choice. Owned by the handle; valid until the next eng_handle_next call on
 * the same handle or eng_handle_release. */
struct eng_event {
    int32_t choice;               /* 0 .. n-1 */
    const char *text;             /* UTF-8 delta (may be empty) */
    size_t text_len;
    const struct eng_token_info *tokens; /* [n_tokens] tokens this delta came from */
    int32_t n_tokens;
    enum eng_finish_reason finish; /* != NONE on the choice's last event */
    const char *error;            /* ENG_FINISH_ERROR: a message, else NULL */
};

struct eng_usage {
    int32_t prompt_tokens;
    int32_t completion_tokens;    /* summed over choices */
    int32_t cached_tokens;        /* prompt tokens served from the prefix cache */
};

/* Called by the engine thread whenever new events are queued on a handle (and once when it
 * finishes). It must be quick and must not call back into the engine except
 * eng_handle_next-free functions; typically it resumes a suspended HTTP connection. */
typedef void (*eng_wake_fn)(void *user);

struct eng_handle;

/* Queues a request. Returns 0 and *out (release it with eng_handle_release), or a negative
 * eng_err with a message in err: ENG_ERR_INVALID, ENG_ERR_CONTEXT, ENG_ERR_QUEUE_FULL,
 * ENG_ERR_DRAINING, ENG_ERR_NOMEM. */
int eng_engine_submit(struct eng_engine *e, const struct eng_request *r, eng_wake_fn wake,
                      void *user, struct eng_handle **out, char *err, size_t errlen);

/* Takes the next event without blocking. Returns 1 and *ev, 0 when none is pending yet, or -1
 * when every choice has finished and all events were taken. */
int eng_handle_next(struct eng_handle *h, const struct eng_event **ev);

/* Blocks until an event is pending or the request is over (for simple callers and tests). */
void eng_handle_wait(struct eng_handle *h);

/* Prompt logprobs (when asked): [n_prompt] entries, the first with token only (no logprob);
 * NULL until the prompt was computed. Valid until eng_handle_release. */
const struct eng_token_info *eng_handle_prompt_logprobs(struct eng_handle *h);

/* Usage so far (final once eng_handle_next returned -1). */
void eng_handle_usage(struct eng_handle *h, struct eng_usage *u);

/* Cancels (client gone): the sequences' KV blocks are freed within one engine step. Idempotent. */
void eng_handle_cancel(struct eng_handle *h);

/* Drops the caller's reference; cancels the request if it is still running. */
void eng_handle_release(struct eng_handle *h);

struct eng_metrics {
    int32_t running, waiting;
    int64_t kv_blocks_used, kv_blocks_total;
    int64_t preemptions;
    int64_t prefix_cache_queries, prefix_cache_hits;   /* in tokens */
    int64_t prompt_tokens_total, generation_tokens_total;
    int64_t requests_finished;
    int64_t argmax_rows_total;    /* sampled rows whose token came back as a backend argmax
                                     instead of logits (see host_sampling) */
    int64_t sampled_rows_total;   /* sampled rows drawn by the backend's sample op, whose
                                     token came back instead of logits */
    int64_t graph_replays_total;  /* steps that replayed a recorded CUDA graph */
    int64_t graph_records_total;  /* CUDA graphs recorded (one per batch size used) */
    /* CLOCK_MONOTONIC ns at which the engine loop last made progress: it finished a step, or
     * woke up to start one. With work queued or running, now minus this is how long the current
     * step has been running (a forward-progress check reads it). */
    int64_t progress_ns;
};

void eng_engine_get_metrics(struct eng_engine *e, struct eng_metrics *m);

/* hold = true: the engine thread starts no step until called again with false; submitted
 * requests (and cancels) wait in its inbox meanwhile. A caller that submits a set of requests
 * under a hold has the scheduler see them at once, so that two runs of the same set make the
 * same batches (tests that compare runs bit for bit). */
void eng_engine_hold(struct eng_engine *e, bool hold);

#endif
