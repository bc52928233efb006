/* Reference kv_write: scatters each token's K and V rows into the paged cache by slot.
 * Plain C, the specification of the op; conversion to the cache dtype rounds to nearest even. */
#include "ref.h"

int kern_ref_kv_write(struct kern_ctx *ctx, const struct kern_kv_write_params *p)
{
    int64_t row, span, cache;
    (void)ctx;
    if (!p || p->n_tokens < 0 || p->n_kv_heads < 0 || p->head_dim < 0 || p->n_slots < 0 ||
        !ref_dtype_ok(p->cache_dtype))
        return KERN_ERR_INVALID;
    if (ref_mul(p->n_kv_heads, p->head_dim, &row) || ref_span(p->n_tokens, row, p->token_stride, &span) ||
        ref_mul(p->n_slots, row, &cache))
        return KERN_ERR_INVALID;
    if (p->n_tokens == 0)
        return KERN_OK;
    if (!p->k || !p->v || !p->slot_mapping || (cache > 0 && (!p->k_cache || !p->v_cache)))
        return KERN_ERR_INVALID;
    /* All slots are checked before anything is written. */
    for (int64_t t = 0; t < p->n_tokens; t++)
        if (p->slot_mapping[t] >= p->n_slots)
            return KERN_ERR_INVALID;
    for (int64_t t = 0; t < p->n_tokens; t++) {
        int64_t slot = p->slot_mapping[t];
        if (slot < 0)
            continue; /* padding token: nothing cached */
        for (int64_t i = 0; i < row; i++) {
            ref_store(p->k_cache, p->cache_dtype, slot * row + i, p->k[t * p->token_stride + i]);
            ref_store(p->v_cache, p->cache_dtype, slot * row + i, p->v[t * p->token_stride + i]);
        }
    }
    return KERN_OK;
}
