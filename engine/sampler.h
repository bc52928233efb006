/* The sampler: turns one sequence's next-token logits into a token, applying the OpenAI /
 * vLLM logit processors (logit_bias, min_tokens, repetition / frequency / presence penalties,
 * temperature, min_p, top_k, top_p), drawing with a per-sequence seeded RNG, and reporting
 * logprobs. It does not parse requests, match stop strings or decide when a request ends
 * beyond the token-id test in eng_sampler_is_stop. Grammars (engine/grammar.h) come in as a
 * mask of allowed tokens, applied before everything else (the _masked variants).
 *
 * Processing order (vLLM V1, vllm/v1/sample/sampler.py):
 *   1. logit_bias, then min_tokens (eos and stop ids -> -inf)   on the raw logits
 *   2. repetition penalty, then frequency and presence penalties
 *   3. temperature == 0: greedy argmax here (first index on ties); nothing below applies
 *   4. temperature (values in (0, 0.01) act as 0.01, as vLLM clamps them)
 *   5. min_p (relative to the most likely token of the tempered distribution)
 *   6. top_k (every token tied with the k-th largest is kept, as vLLM and HF do)
 *   7. top_p over what top_k kept: the smallest set, by descending probability, whose mass
 *      reaches top_p (the token that crosses the threshold is kept)
 *   8. one inverse-CDF draw from the renormalised survivors, in id order, with the
 *      sequence's RNG (one uniform u per token).
 * HF transformers applies min_p after top_p; vLLM V1 applies it before, and so do we.
 *
 * Logprobs are vLLM's default "raw_logprobs" mode: the log-softmax of the model's logits as
 * they came in, before any processing. They describe what the model thinks, so they do not
 * change with temperature, penalties, bias or truncation; a token that top_k removed still
 * has its finite logprob. vLLM's "processed_logprobs" mode is not implemented.
 *
 * Odd values (NaN, infinities, out-of-range numbers) never crash or poison the draw; each
 * field says what such a value does. NaN logits are treated as -inf.
 *
 * On a device, steps 1 to 8 and the logprobs can run where the logits are: eng_sampler_job
 * turns a sequence's history and params into the job of the backend's sample op
 * (kernels/ops.h), which draws with the same u, in the same id order and with the same exp
 * (kernels/weight_exp.h), and eng_sampler_take (eng_sampler_take_logprobs) takes what it
 * returns. */
#ifndef PHISERVE_ENGINE_SAMPLER_H
#define PHISERVE_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "ops.h"
#include "rng.h"

#define ENG_SAMPLER_MAX_TOP_LOGPROBS 20

enum eng_sampler_err {
    ENG_SAMPLER_ERR_INVALID = -1,      /* a NULL pointer, vocab < 1 or a vocab mismatch */
    ENG_SAMPLER_ERR_NOMEM = -2,        /* allocation failed (init only) */
    ENG_SAMPLER_ERR_NO_CANDIDATE = -3  /* every processed logit is -inf or NaN */
};

struct eng_logit_bias {
    int32_t token;   /* ids outside [0, vocab) are ignored */
    float bias;      /* added to the logit; clamped to [-100, 100]; NaN ignored. Repeated ids
                        add up. */
};

/* One request's sampling parameters. The server validates them; the sampler still copes
 * with any value. Pointer fields: caller keeps the arrays, which must stay valid and unchanged
 * for as long as a state initialised from these params is in use. */
struct eng_sampling_params {
    float temperature;        /* 0 (or negative, NaN): greedy. (0, 0.01) acts as 0.01;
                                 above 1e4 (or +inf) acts as 1e4. */
    float top_p;              /* (0, 1]; >= 1 or NaN: off; <= 0 keeps only the best token */
    int32_t top_k;            /* <= 0: off (vLLM's -1 and 0) */
    float min_p;              /* [0, 1]; <= 0 or NaN: off; above 1 acts as 1 */
    float presence_penalty;   /* OpenAI: logit -= presence * (count > 0); non-finite: 0 */
    float frequency_penalty;  /* OpenAI: logit -= frequency * count; non-finite: 0.
                                 count = occurrences among the GENERATED tokens only */
    float repetition_penalty; /* HF/vLLM: tokens in prompt or output: logit > 0 ? logit / r :
                                 logit * r. 1: off; <= 0 or non-finite: off */
    const struct eng_logit_bias *logit_bias; /* [n_logit_bias], may be NULL when 0 */
    int32_t n_logit_bias;
    int32_t min_tokens;       /* eos and stop ids are banned until this many were generated */
    bool ignore_eos;          /* eos ids do not stop the sequence (eng_sampler_is_stop); like
                                 vLLM, min_tokens still bans them */
    const int32_t *stop_token_ids; /* [n_stop_token_ids] request stop ids */
    int32_t n_stop_token_ids;
    const int32_t *eos_token_ids;  /* [n_eos_token_ids] the model's eos ids
                                      (generation_config.json eos_token_id) */
    int32_t n_eos_token_ids;
    bool has_seed;            /* seed given: the draws depend on it alone */
    int64_t seed;
    bool logprobs;            /* fill eng_sample_result.logprob and top */
    int32_t top_logprobs;     /* 0..20 alternatives; clamped to that range */
};

/* Fills *p with OpenAI's defaults: temperature 1, top_p 1, no top_k / min_p, no penalties
 * (repetition 1), no bias, no stop ids, no seed, no logprobs. */
void eng_sampling_params_init_default(struct eng_sampling_params *p);

struct eng_token_logprob {
    int32_t token;
    float logprob;
};

struct eng_sample_result {
    int32_t token;           /* the chosen id, or -1 on error */
    float logprob;           /* raw logprob of token (when params.logprobs) */
    int32_t n_top;           /* min(top_logprobs, vocab) when params.logprobs, else 0 */
    struct eng_token_logprob top[ENG_SAMPLER_MAX_TOP_LOGPROBS]; /* descending logprob, ties
                                                                   by ascending id */
};

/* Per-sequence state: the RNG and the token history the penalties need. About 4.1 bytes per
 * vocab entry (dense counts + a prompt bitmap), 8.1 when a penalty is on. */
struct eng_sampler_state {
    struct eng_rng rng;
    int64_t vocab;
    int32_t *counts;         /* [vocab] occurrences among generated tokens; owned */
    uint8_t *in_prompt;      /* [(vocab + 7) / 8] bitmap of prompt ids; owned */
    int32_t *banned;         /* [n_banned] eos ids and stop ids in range (min_tokens); owned */
    int32_t n_banned;
    int64_t n_generated;     /* tokens passed to eng_sampler_accept */
    /* The ids in the prompt or among the generated tokens, each once, in order of first
     * appearance: the tokens the penalties touch. Kept only when the params given to init
     * turn a penalty on (NULL otherwise, and then no penalty applies); owned. */
    int32_t *touched;        /* [n_touched], room for vocab */
    int32_t n_touched;
};

/* Scratch for eng_sampler_sample, sized by vocab. One per thread that samples (the engine
 * thread), shared by all sequences: the per-sequence state stays small. */
struct eng_sampler_ws {
    int64_t vocab;
    float *w;                /* [vocab] processed logits, then weights; owned */
    int32_t *idx;            /* [vocab] surviving candidate ids; owned */
    int32_t *slot;           /* [vocab] eng_sampler_job's map from id to entry; all -1
                                between calls; owned */
};

/* Initialises *st for one sequence. prompt: [n_prompt] ids (caller keeps; ids outside
 * [0, vocab) are ignored); it feeds the repetition penalty. The RNG is seeded from p->seed
 * when p->has_seed, else from entropy_seed (the caller's entropy source, e.g. getrandom).
 * For n > 1 choices of one seeded request, give each choice its own seed (vLLM: seed + index)
 * or the choices will be identical. Returns 0, ENG_SAMPLER_ERR_INVALID (NULL pointer,
 * vocab < 1 or above INT32_MAX, n_prompt < 0) or ENG_SAMPLER_ERR_NOMEM; on error *st needs
 * no free (it is left freed). */
int eng_sampler_state_init(struct eng_sampler_state *st, const struct eng_sampling_params *p,
                           int64_t vocab, const int32_t *prompt, int32_t n_prompt,
                           uint64_t entropy_seed);

/* Releases what *st owns; accepts a zeroed or half-built state, and is idempotent. */
void eng_sampler_state_free(struct eng_sampler_state *st);

/* Allocates scratch for vocab entries. Returns 0, ENG_SAMPLER_ERR_INVALID or
 * ENG_SAMPLER_ERR_NOMEM (then *ws needs no free). */
int eng_sampler_ws_init(struct eng_sampler_ws *ws, int64_t vocab);

/* Releases the scratch; accepts a zeroed struct, idempotent. */
void eng_sampler_ws_free(struct eng_sampler_ws *ws);

/* Chooses the next token of a sequence from its logits ([vocab] floats, caller keeps, not
 * modified). p is the request's params; its eos and stop ids were copied at init and later
 * changes to them do not reach min_tokens. Does not allocate and does not
 * update the history: call eng_sampler_accept with the token that is kept. A non-greedy call
 * consumes exactly one RNG draw, so a seeded sequence is reproducible whatever else the
 * engine samples. Returns 0 with *out filled; ENG_SAMPLER_ERR_INVALID (NULL pointer, vocab
 * differs from the state's or the workspace's); ENG_SAMPLER_ERR_NO_CANDIDATE when every
 * processed logit is -inf or NaN (out->token = -1). */
int eng_sampler_sample(struct eng_sampler_state *st, struct eng_sampler_ws *ws,
                       const struct eng_sampling_params *p, const float *logits, int64_t vocab,
                       struct eng_sample_result *out);

/* eng_sampler_sample with a grammar's mask: allow ([(vocab + 31) / 32] words, bit t of
 * allow[t / 32], caller keeps; NULL: no mask) bans every token whose bit is 0 before any other
 * processing, as a -inf logit. The logprobs stay the raw ones (the model's view). When the
 * mask leaves no candidate, ENG_SAMPLER_ERR_NO_CANDIDATE. */
int eng_sampler_sample_masked(struct eng_sampler_state *st, struct eng_sampler_ws *ws,
                              const struct eng_sampling_params *p, const float *logits,
                              int64_t vocab, const uint32_t *allow, struct eng_sample_result *out);

/* Whether eng_sampler_sample with these params and this state would return exactly the raw
 * argmax of the logits (kern_argmax_params' rule: NaN as -inf, first index on ties) and use
 * them for nothing else, so that a caller may compute that argmax where the logits are (on a
 * device) and pass only the id to eng_sampler_take. True when the temperature is greedy (not
 * > 0), no logit_bias entry is given, min_tokens bans nothing now (enough tokens generated, or
 * no eos / stop id in range), the penalties are off (repetition 1, <= 0 or non-finite;
 * frequency and presence 0 or non-finite) and no logprobs are asked. The answer holds until
 * the next eng_sampler_accept on st. False for NULL pointers. */
bool eng_sampler_is_greedy_argmax(const struct eng_sampling_params *p,
                                  const struct eng_sampler_state *st);

/* Fills *out as eng_sampler_sample fills it for a row without logprobs, from a token chosen
 * elsewhere by the same rules: the argmax of the raw logits, for a sequence where
 * eng_sampler_is_greedy_argmax holds, or a backend's draw for an eng_sampler_job.
 * out->token = token, logprob -inf, no alternatives (eng_sampler_take_logprobs is the variant
 * with logprobs). Like
 * eng_sampler_sample it does not update the history (call eng_sampler_accept). Returns 0;
 * ENG_SAMPLER_ERR_NO_CANDIDATE when token < 0 (the argmax found no logit above -inf;
 * out->token = -1), as eng_sampler_sample for such logits; ENG_SAMPLER_ERR_INVALID for a NULL
 * pointer, vocab differing from the state's, token >= vocab, or p->logprobs set (the logprobs
 * cannot be made without the logits). */
int eng_sampler_take(struct eng_sampler_state *st, const struct eng_sampling_params *p,
                     int32_t token, int64_t vocab, struct eng_sample_result *out);

/* eng_sampler_take for a request with logprobs, whose job (eng_sampler_job sets the job's
 * logprobs and n_top) brought back from the backend the raw logprob of token and top
 * ([n] entries, n = top_logprobs clamped to [0, 20] and to vocab; may be NULL when n is 0):
 * *out gets them as eng_sampler_sample would give them. Without p->logprobs it is
 * eng_sampler_take (logprob and top unused). Returns as eng_sampler_take, but
 * ENG_SAMPLER_ERR_INVALID for a missing top rather than for p->logprobs. */
int eng_sampler_take_logprobs(struct eng_sampler_state *st, const struct eng_sampling_params *p,
                              int32_t token, float logprob, const struct kern_token_logprob *top,
                              int64_t vocab, struct eng_sample_result *out);

/* The raw log-softmax of logits ([vocab] floats, caller keeps) under the rule the sampler's
 * logprobs follow: NaN counts as -inf, an +inf logit takes the mass (logprob 0 when it is the
 * only one), all -inf gives -inf everywhere. Fills top[0..n_top) (caller's array, n_top <=
 * vocab) with the n_top best entries, descending, ties by ascending id, and returns the
 * logprob of token (0 <= token < vocab). Used for prompt logprobs, which see no processing. */
float eng_sampler_raw_logprobs(const float *logits, int64_t vocab, int32_t token, int32_t n_top,
                               struct eng_token_logprob *top);

/* Records a generated token (counts for the penalties, n_generated for min_tokens). Ids
 * outside [0, vocab) still count towards n_generated. */
void eng_sampler_accept(struct eng_sampler_state *st, int32_t token);

/* Whether token, just accepted as the n_generated-th output, ends the sequence by token id:
 * false while n_generated < min_tokens (vLLM skips every stop check then); otherwise true for
 * a request stop id, or for an eos id unless ignore_eos. Stop strings and length limits are
 * the caller's. */
bool eng_sampler_is_stop(const struct eng_sampler_state *st, const struct eng_sampling_params *p,
                         int32_t token);

/* Upper bound of the entries eng_sampler_job writes into mods for this sequence's next token
 * (logit_bias entries, min_tokens bans, penalised tokens; at most vocab). 0 for NULL. */
int64_t eng_sampler_job_mods_max(const struct eng_sampling_params *p,
                                 const struct eng_sampler_state *st);

/* Prepares the draw of this sequence's next token on a backend (kernels/ops.h, sample).
 * Fills *job except row and mod_start, which are the caller's: the clamped temperature (0 for
 * greedy), min_p, top_p, top_k and the uniform u, and writes the token changes of steps 1 and
 * 2 into mods[0 .. job->n_mods), one entry per token (repeated logit_bias ids are summed
 * first, where eng_sampler_sample adds them one after the other: the same up to rounding).
 * mods must have room for eng_sampler_job_mods_max entries. Consumes the RNG draw that
 * eng_sampler_sample would (one when the temperature is > 0), so that a seeded sequence draws
 * the same u on either path. With p->logprobs the job also asks for the raw logprobs
 * (top_logprobs alternatives). Pass the op's token to eng_sampler_take (or, with logprobs,
 * eng_sampler_take_logprobs), then eng_sampler_accept. Returns 0, or ENG_SAMPLER_ERR_INVALID
 * for a NULL pointer or a vocab differing between st and ws. */
int eng_sampler_job(struct eng_sampler_state *st, struct eng_sampler_ws *ws,
                    const struct eng_sampling_params *p, struct kern_sample_job *job,
                    struct kern_sample_mod *mods);

/* eng_sampler_job with a grammar's mask (as eng_sampler_sample_masked; NULL: none): every
 * token the mask leaves out gets a ban entry, so mods must have room for the vocabulary. */
int eng_sampler_job_masked(struct eng_sampler_state *st, struct eng_sampler_ws *ws,
                           const struct eng_sampling_params *p, const uint32_t *allow,
                           struct kern_sample_job *job, struct kern_sample_mod *mods);

#endif
