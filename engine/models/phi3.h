/* The dense Phi-3 / Phi-3.5 forward pass (Phi3ForCausalLM) over a flat batch descriptor.
 * Runs on whatever backend the op table holds; it does not schedule or sample. */
#ifndef PHISERVE_ENGINE_MODELS_PHI3_H
#define PHISERVE_ENGINE_MODELS_PHI3_H

#include "batch.h"
#include "kv_cache.h"
#include "model.h"
#include "ops.h"

/* Scratch activations of one forward call, grown on demand and reused across calls. */
struct eng_phi3_ws {
    int64_t cap_tokens;            /* rows every buffer below can hold */
    int64_t cap_logit_rows;
    float *x;                      /* [T, H] residual stream */
    float *h;                      /* [T, H] normalised input of a block */
    float *qkv;                    /* [T, (nh + 2 nkv) hd] */
    float *attn;                   /* [T, nh hd] */
    float *gu;                     /* [T, 2 I] */
    float *act;                    /* [T, I] */
    uint8_t *tok_variant;          /* [T] RoPE variant of each token */
    float *last;                   /* [R, H] rows whose logits are wanted */
};

/* Frees the scratch buffers (the struct itself is the caller's); leaves it empty. */
void eng_phi3_ws_free(struct eng_phi3_ws *ws);

/* Runs the model over batch b: writes each token's K/V into kv at its slot, and the logits of
 * the rows b->logit_rows into logits ([b->n_logit_rows, vocab], caller-allocated). The batch
 * must be consistent with the cache (block ids < kv->n_blocks, slots inside the pool).
 * Returns 0, a negative enum kern_status from an op, or KERN_ERR_NOMEM when the workspace cannot
 * grow. */
int eng_phi3_forward(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     struct eng_kv_cache *kv, const struct eng_batch *b, struct eng_phi3_ws *ws,
                     float *logits);

#endif
