/* Fast CPU embed: each token's table row widened to fp32 by the vector converters (memcpy for
 * fp32 tables; a block format's row by its block widening). Not threaded: a few rows per call. Unusual calls, bad ids included, go to the
 * reference, which rejects them before writing anything. */
#include <string.h>

#include "../ref/ref.h"
#include "cpu.h"

static int embed(struct kern_ctx *ctx, const struct kern_embed_params *p,
                 const struct kern_cpu_isa *isa)
{
    int64_t table_elems, out_elems;
    if (!p || p->n_tokens <= 0 || p->vocab < 0 || p->hidden < 0 ||
        kern_dtype_row_bytes(p->table_dtype, p->hidden) < 0 ||
        (!ref_dtype_ok(p->table_dtype) && !isa->block_to_f32[p->table_dtype]) ||
        ref_mul(p->vocab, p->hidden, &table_elems) ||
        ref_mul(p->n_tokens, p->hidden, &out_elems) || !p->ids || !p->table || !p->out)
        return kern_ref_embed(ctx, p);
    for (int64_t t = 0; t < p->n_tokens; t++)
        if (p->ids[t] < 0 || p->ids[t] >= p->vocab)
            return kern_ref_embed(ctx, p); /* rejects the id */
    for (int64_t t = 0; t < p->n_tokens; t++) {
        int64_t row = (int64_t)p->ids[t] * p->hidden;
        float *out = p->out + t * p->hidden;
        switch (p->table_dtype) {
        case KERN_DTYPE_BF16:
            isa->bf16_to_f32((const uint16_t *)p->table + row, out, p->hidden);
            break;
        case KERN_DTYPE_F16:
            isa->f16_to_f32((const uint16_t *)p->table + row, out, p->hidden);
            break;
        case KERN_DTYPE_F32:
            memcpy(out, (const float *)p->table + row, (size_t)p->hidden * sizeof *out);
            break;
        default: /* a block format: whole blocks per row (checked) */
            isa->block_to_f32[p->table_dtype](
                (const char *)p->table +
                    (size_t)p->ids[t] * (size_t)kern_dtype_row_bytes(p->table_dtype, p->hidden),
                out, p->hidden);
            break;
        }
    }
    return KERN_OK;
}

KERN_CPU_DEFINE_LEVELS(embed, kern_embed_params)
