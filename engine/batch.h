/* The flat batch descriptor: everything one forward call needs, for several sequences at once.
 * Built by the scheduler (or the simple generator), read by every backend. Plain data: it owns
 * nothing; the builder keeps the arrays alive for the duration of the call. */
#ifndef PHISERVE_ENGINE_BATCH_H
#define PHISERVE_ENGINE_BATCH_H

#include <stdint.h>

/* Rows of the flat token list whose input embedding is given instead of looked up (image
 * features, Phi-3-vision): rows [row, row + n_rows) take src's rows in order. */
struct eng_embed_span {
    int32_t row;
    int32_t n_rows;
    const float *src;             /* [n_rows, hidden] in the backend's memory */
};

struct eng_batch {
    /* Tokens of all sequences laid out sequence after sequence (varlen). */
    int32_t n_tokens;
    const int32_t *token_ids;     /* [n_tokens] */
    const int32_t *positions;     /* [n_tokens] position of each token in its sequence */
    const int64_t *slot_mapping;  /* [n_tokens] KV slot the token's K/V are written to */

    /* Per sequence. Sequence s owns tokens [q_start[s], q_start[s] + q_len[s]); after this call
     * its cache holds ctx_len[s] tokens (earlier ones plus these), the new tokens being the
     * positions ctx_len[s] - q_len[s] .. ctx_len[s] - 1. */
    int32_t n_seqs;
    const int32_t *q_start;       /* [n_seqs] */
    const int32_t *q_len;         /* [n_seqs] */
    const int32_t *ctx_len;       /* [n_seqs] */
    const int32_t *block_tables;  /* [n_seqs, max_blocks] block ids */
    int32_t max_blocks;
    const uint8_t *rope_variant;  /* [n_seqs] enum eng_rope_variant */

    /* Rows of the flat token list whose logits are wanted (usually the last token of each
     * sampling sequence; all prompt rows for prompt logprobs), ascending. */
    int32_t n_logit_rows;
    const int32_t *logit_rows;    /* [n_logit_rows] */

    /* Input embeddings replacing the token embeddings of some rows (0 / NULL: none). The
     * token ids of those rows are still looked up (any id in the vocabulary), then
     * overwritten. */
    int32_t n_embed_spans;
    const struct eng_embed_span *embed_spans; /* [n_embed_spans], rows disjoint */
};

#endif
