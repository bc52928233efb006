/* Reference embed: gathers token rows of the embedding table (any dtype, block formats
 * included) and widens them to fp32.
 * Plain C, the specification of the op; no threads, no SIMD. */
#include "ref.h"

int kern_ref_embed(struct kern_ctx *ctx, const struct kern_embed_params *p)
{
    int64_t table_elems, out_elems;
    (void)ctx;
    if (!p || p->n_tokens < 0 || p->vocab < 0 || p->hidden < 0 ||
        kern_dtype_row_bytes(p->table_dtype, p->hidden) < 0)
        return KERN_ERR_INVALID; /* an unknown dtype, or block-format rows not whole blocks */
    if (ref_mul(p->vocab, p->hidden, &table_elems) || ref_mul(p->n_tokens, p->hidden, &out_elems))
        return KERN_ERR_INVALID;
    if (p->n_tokens == 0)
        return KERN_OK;
    if (!p->ids || !p->table || !p->out)
        return KERN_ERR_INVALID;
    /* Every id is checked before the first row is written: a bad id leaves out untouched. */
    for (int64_t t = 0; t < p->n_tokens; t++)
        if (p->ids[t] < 0 || p->ids[t] >= p->vocab)
            return KERN_ERR_INVALID;
    for (int64_t t = 0; t < p->n_tokens; t++) {
        int64_t row = (int64_t)p->ids[t] * p->hidden;
        for (int64_t i = 0; i < p->hidden; i++)
            p->out[t * p->hidden + i] = ref_load(p->table, p->table_dtype, row + i);
    }
    return KERN_OK;
}
