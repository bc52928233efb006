/* A simple batched greedy generator over the model, the op table and a KV cache: all
 * sequences prefill together, then decode in lockstep until each stops. It serves the
 * `generate` command and the golden tests; the serving scheduler (continuous batching,
 * preemption, sampling) is engine/scheduler.c's job, not this file's. */
#ifndef PHISERVE_ENGINE_GENERATE_H
#define PHISERVE_ENGINE_GENERATE_H

#include <stdint.h>

#include "kv_cache.h"
#include "model.h"
#include "models/phi3.h"
#include "ops.h"

/* One sequence to continue. The caller owns every array. */
struct eng_gen_seq {
    const int32_t *prompt;         /* [n_prompt] token ids, n_prompt >= 1 */
    int32_t n_prompt;
    int32_t max_new;               /* generate at most this many tokens */
    int ignore_eos;                /* nonzero: do not stop on the model's eos ids */
    int32_t *out;                  /* [max_new] receives the generated ids */
    /* Image features over prompt positions (Phi-3-vision): span k's row is a prompt position;
     * its src rows replace positions row .. row + n_rows - 1 (whose prompt ids are any in
     * the vocabulary). [n_embeds], may be NULL when 0. */
    const struct eng_embed_span *embeds;
    int32_t n_embeds;
    int32_t n_out;                 /* set: number generated */
    int32_t n_recomputes;          /* set: LongRoPE short->long recomputes that happened */
};

/* Called with the logits each sequence's next token was chosen from (vocab floats, valid
 * during the call). */
typedef void (*eng_logits_fn)(void *user, int32_t seq, int32_t step, const float *logits,
                              int64_t vocab);

/* On a device backend (ops->host_memory == 0) the model must have been imported with
 * eng_model_upload and kv created with eng_kv_cache_create_on, both for ctx. */
struct eng_generator {
    const struct eng_model *model; /* caller keeps */
    const struct kern_ops *ops;    /* caller keeps */
    struct kern_ctx *ctx;          /* caller keeps */
    struct eng_kv_cache *kv;       /* caller keeps; must be empty between calls */
    struct eng_phi3_ws ws;         /* owned; eng_generator_free releases it */
    eng_logits_fn on_logits;       /* optional */
    void *user;
};

/* Greedy-continues n_seqs sequences in one batch. The RoPE variant of each sequence follows
 * transformers: short factors while its length is <= original_max_position_embeddings, and
 * when it grows past that, the whole sequence is recomputed once with long factors. A
 * sequence also stops at max_position_embeddings. Returns 0, -1 with a message in err when
 * the KV cache is too small, an op fails or ops->sync reports a device fault (checked after
 * every step). All KV blocks are released on return. */
int eng_generate_greedy(struct eng_generator *g, struct eng_gen_seq *seqs, int32_t n_seqs,
                        char *err, size_t errlen);

/* Releases the generator's workspace. */
void eng_generator_free(struct eng_generator *g);

/* Index of the largest value (the first one on ties, as torch.argmax). */
int32_t eng_argmax(const float *x, int64_t n);

#endif
