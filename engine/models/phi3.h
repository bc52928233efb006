/* The Phi-3 family's forward pass over a flat batch descriptor: dense Phi-3 / Phi-3.5
 * (Phi3ForCausalLM) and Phi-3.5-MoE (PhimoeForCausalLM), which differ only inside a layer.
 * Runs on whatever backend the op table holds; it does not schedule or sample. */
#ifndef PHISERVE_ENGINE_MODELS_PHI3_H
#define PHISERVE_ENGINE_MODELS_PHI3_H

#include "batch.h"
#include "kv_cache.h"
#include "model.h"
#include "ops.h"

/* Scratch of forward calls, grown on demand and reused across calls. Zero-initialise it; the
 * first forward (or eng_phi3_ws_reserve) binds it to that call's ops/ctx, and every buffer
 * except desc_host then lives in that backend's memory (device memory on CUDA). */
struct eng_phi3_ws {
    int bound;                     /* ops and ctx below are set */
    struct kern_ops ops;           /* a copy of the table the buffers belong to */
    struct kern_ctx *ctx;          /* caller keeps, until eng_phi3_ws_free */
    int64_t cap_tokens;            /* rows every activation buffer can hold */
    int64_t cap_logit_rows;
    float *x;                      /* [T, H] residual stream */
    float *h;                      /* [T, H] normalised input of a block */
    float *qkv;                    /* [T, (nh + 2 nkv) hd] */
    float *attn;                   /* [T, nh hd] */
    float *gu;                     /* [T, 2 I] */
    float *act;                    /* [T, I] */
    float *last;                   /* [R, H] rows whose logits are wanted */
    float *logits;                 /* [R, V] before the download into the caller's buffer */
    /* phimoe only (NULL otherwise): the router's logits and picks, the moe op's scratch */
    float *router;                 /* [T, E] */
    int32_t *route_experts;        /* [T, 2] */
    float *route_weights;          /* [T, 2] */
    void *moe_work;                /* [kern_moe_work_bytes(T, 2, H, I, E)] */
    /* The batch descriptor's arrays, packed (ids, positions, slots, per-token RoPE variant,
     * q_start, q_len, ctx_len, block tables, logit rows): staged on the host, then sent with
     * one buf_upload per call. */
    void *desc;                    /* [desc_cap] bytes, backend memory */
    void *desc_host;               /* [desc_cap] bytes, host memory */
    size_t desc_cap;
    uint64_t gen;                  /* bumped whenever a buffer above is replaced */
    uint8_t *row_taken;            /* [cap_logit_rows] host: rows that bring back a token */
    /* The sample op's buffers (eng_phi3_ws_reserve_sampling), backend memory. */
    int64_t cap_jobs, cap_draws, cap_mods, sample_vocab;
    float *sample_work;            /* [cap_draws, sample_vocab] */
    struct kern_sample_job *sample_jobs; /* [cap_jobs] */
    int32_t *sample_out;           /* [cap_jobs] */
    float *sample_logprob;         /* [cap_jobs] */
    struct kern_token_logprob *sample_top; /* [cap_jobs, KERN_MAX_TOP_LOGPROBS] */
    struct kern_sample_mod *sample_mods; /* [cap_mods] */
    /* Graph replay of decode steps (eng_phi3_graphs_enable); NULL: every step runs eagerly. */
    struct eng_phi3_graph *graphs; /* [n_graphs] by ascending batch; owned */
    int32_t n_graphs;
    int64_t graph_max_blocks;      /* block-table columns every graph is recorded with */
    int64_t graph_records;         /* graphs recorded so far (statistics) */
    int64_t graph_replays;         /* steps that replayed a graph (statistics) */
};

/* One decode batch size whose forward is replayed as a recorded graph. */
struct eng_phi3_graph {
    int64_t batch;                 /* sequences, one token each, the graph is recorded for */
    int state;                     /* private to phi3.c */
    struct kern_graph *g;          /* owned; recorded with ws->ops */
    uint64_t gen;                  /* ws->gen when recorded */
};

/* Grows ws (binding it to ops/ctx if it is new) so that a forward of up to n_tokens tokens,
 * n_logit_rows logit rows, n_seqs sequences and table_entries = n_seqs * max_blocks block-table
 * entries allocates nothing. The engine calls it once at start on device backends; forward
 * calls it itself otherwise. Returns 0, KERN_ERR_NOMEM, or KERN_ERR_INVALID when ws belongs
 * to another ops/ctx or a size is negative or overflows. */
int eng_phi3_ws_reserve(struct eng_phi3_ws *ws, const struct eng_model_config *cfg,
                        const struct kern_ops *ops, struct kern_ctx *ctx, int64_t n_tokens,
                        int64_t n_logit_rows, int64_t n_seqs, int64_t table_entries);

/* Backend bytes eng_phi3_ws_reserve takes for those sizes (for the memory budget); 0 on
 * overflow. */
size_t eng_phi3_ws_bytes(const struct eng_model_config *cfg, int64_t n_tokens,
                         int64_t n_logit_rows, int64_t n_seqs, int64_t table_entries);

/* Grows ws's sampling buffers (ws must be bound) so that a forward with up to n_jobs jobs
 * (struct eng_phi3_tokens), n_draws of which draw, and n_mods mods allocates nothing; forward
 * grows them itself when needed. Returns 0, KERN_ERR_NOMEM or KERN_ERR_INVALID. */
int eng_phi3_ws_reserve_sampling(struct eng_phi3_ws *ws, int64_t vocab, int64_t n_jobs,
                                 int64_t n_draws, int64_t n_mods);

/* Backend bytes eng_phi3_ws_reserve_sampling takes for those sizes; 0 on overflow. */
size_t eng_phi3_ws_sampling_bytes(int64_t vocab, int64_t n_jobs, int64_t n_draws, int64_t n_mods);

/* Turns on graph replay of decode steps, as vLLM does with CUDA graphs: a batch of B <= max_batch
 * sequences that each add one token and whose contexts fit max_blocks blocks is padded to the
 * next recorded size (1, 2, 4, then multiples of 8, and max_batch) and replays that size's
 * graph: one launch for the whole forward instead of one per op. Each size runs eagerly the
 * first time it is seen, is recorded the second time, and replayed from then on. Other
 * batches run eagerly. ws must have been reserved (eng_phi3_ws_reserve) for at least max_batch
 * tokens, logit rows and sequences and max_batch * max_blocks table entries, so that a replay
 * never finds its buffers replaced. Returns 0; KERN_ERR_UNSUPPORTED when ws is not bound or
 * its backend has no graphs (the host backends); KERN_ERR_INVALID for sizes the reservation
 * does not cover or a second call; KERN_ERR_NOMEM. */
int eng_phi3_graphs_enable(struct eng_phi3_ws *ws, int64_t max_batch, int64_t max_blocks);

/* Frees the scratch buffers and graphs through the ops they were made with (the struct
 * itself is the caller's); leaves it empty. Accepts an empty ws. */
void eng_phi3_ws_free(struct eng_phi3_ws *ws);

/* The logit rows of a forward that bring back tokens instead of their logits (the caller
 * keeps every array). A row is an argmax row, or the row of one or more jobs (the choices of
 * an n > 1 request all draw from their prompt's last row), or neither. */
struct eng_phi3_tokens {
    /* [n_logit_rows] or NULL: a row with a nonzero flag comes back as the argmax of its
     * logits under the sampler's greedy rule (kern_argmax_params: NaN as -inf, first index
     * on ties, -1 when no logit is above -inf). */
    const uint8_t *argmax_rows;
    int32_t *tokens;               /* [n_logit_rows] HOST: the token of each argmax row; the
                                      other entries are unspecified afterwards */
    /* [n_jobs]: job j draws a token from row jobs[j].row with the backend's sample op, or
     * takes its given token (kernels/ops.h; the backend must have the op), with mods
     * [n_mods] as the jobs' mod_start and n_mods say; the jobs that draw come first.
     * eng_sampler_job prepares drawing jobs. */
    const struct kern_sample_job *jobs;
    int64_t n_jobs;
    const struct kern_sample_mod *mods;
    int64_t n_mods;
    int32_t *job_tokens;           /* [n_jobs] HOST: each job's token */
    /* HOST, by job, written for the jobs that ask for logprobs (required then): the raw
     * logprob of the job's token and its alternatives. */
    float *logprob;                /* [n_jobs] */
    struct kern_token_logprob *top; /* [n_jobs, KERN_MAX_TOP_LOGPROBS] */
};

/* Runs the model over batch b: writes each token's K/V into kv at its slot, and the logits of
 * the rows b->logit_rows into logits ([b->n_logit_rows, vocab], caller-allocated HOST memory).
 * The batch (host arrays) must be consistent with the cache (block ids < kv->n_blocks, slots
 * inside the pool); its arrays are copied into ws for the backend, so they may change as soon
 * as the call returns. On a device backend the model must have been imported with
 * eng_model_upload and kv created with eng_kv_cache_create_on for the same ctx
 * (KERN_ERR_INVALID otherwise); the work may still run when the call returns except for the
 * logits, which are complete: call ops->sync afterwards to learn about device-side faults.
 *
 * Token rows. tk is NULL (every row's logits are written, as above) or says which rows bring
 * back only tokens (struct eng_phi3_tokens): an argmax row's token goes to tk->tokens[r], a
 * job's to tk->job_tokens[j] (with its logprobs when asked), and the row of logits is NOT
 * written (it keeps its old contents); the other rows are written as above. This is the
 * smallest device-to-host transfer: the argmax or the draw runs where the logits are, and
 * only the ids and the other rows (one download per run of consecutive rows) come back.
 *
 * Returns 0, a negative enum kern_status from an op, KERN_ERR_UNSUPPORTED for a phimoe model on
 * a backend without the MoE ops (layernorm, bias_add, moe_route, moe), or KERN_ERR_NOMEM when
 * the workspace cannot grow; KERN_ERR_INVALID, before anything runs, for a missing logits buffer (it may be NULL
 * when every row brings back tokens), or token rows
 * that are out of range, both argmax and jobs' rows, without their output buffers, or jobs
 * without a sample op, with mods outside n_mods or drawing after a given one. */
int eng_phi3_forward(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     struct eng_kv_cache *kv, const struct eng_batch *b, struct eng_phi3_ws *ws,
                     float *logits, const struct eng_phi3_tokens *tk);

#endif
