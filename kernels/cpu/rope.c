/* Fast CPU rotary embedding: per token the cos/sin of its rot_dim/2 angles are computed once
 * (fp64 libm, rounded to fp32) and shared by every head, whose pairs are then rotated in
 * vectors; tokens spread over the pool. Same contract as the reference (NeoX layout, partial
 * rotary, per-token variant); unusual or invalid calls go to the reference, which decides. */
#include <math.h>
#include <stdlib.h>

#include "../ref/ref.h"
#include "cpu.h"

/* Below this many rotated lanes a call runs on the calling thread. */
#define RP_SERIAL_LANES (1 << 14)

struct rp_job {
    const struct kern_rope_params *p;
    const struct kern_cpu_isa *isa;
    float *scratch;            /* [n_threads, 2 * h]: cos then sin of one token */
};

static void rp_task(void *arg, int64_t t, int thread)
{
    const struct rp_job *job = arg;
    const struct kern_rope_params *p = job->p;
    int64_t h = p->rot_dim / 2;
    float *c = job->scratch + (int64_t)thread * 2 * h, *s = c + h;
    const float *f = p->inv_freq + (int64_t)(p->variant ? p->variant[t] : 0) * h;
    float pos = (float)p->positions[t];
    for (int64_t i = 0; i < h; i++) {
        float angle = pos * f[i]; /* fp32 product, as the contract has it */
        c[i] = (float)((double)p->mscale * cos((double)angle));
        s[i] = (float)((double)p->mscale * sin((double)angle));
    }
    for (int64_t hd = 0; hd < p->n_heads; hd++)
        job->isa->rope_rot(p->x + t * p->token_stride + hd * p->head_dim, c, s, h);
}

static int rope(struct kern_ctx *ctx, const struct kern_rope_params *p,
                const struct kern_cpu_isa *isa)
{
    int64_t row, span, freqs, lanes, scratch;
    if (!p || p->n_tokens <= 0 || p->n_heads < 0 || p->head_dim < 0 || p->rot_dim <= 0 ||
        p->rot_dim % 2 != 0 || p->rot_dim > p->head_dim || p->n_variants < 1 ||
        ref_mul(p->n_heads, p->head_dim, &row) ||
        ref_span(p->n_tokens, row, p->token_stride, &span) ||
        ref_mul(p->n_variants, p->rot_dim / 2, &freqs) || !p->x || !p->positions ||
        !p->inv_freq)
        return kern_ref_rope(ctx, p); /* rejects, or has nothing to rotate */
    for (int64_t t = 0; t < p->n_tokens; t++)
        if (p->positions[t] < 0 || (p->variant && p->variant[t] >= p->n_variants))
            return kern_ref_rope(ctx, p); /* rejects before writing */
    if (ref_mul(p->n_tokens, p->n_heads * p->rot_dim, &lanes))
        lanes = REF_MAX_ELEMS;
    struct kern_ctx *pool_ctx = lanes < RP_SERIAL_LANES ? NULL : ctx; /* small: serial */
    struct rp_job job = {.p = p, .isa = isa};
    int n_threads = kern_cpu_n_threads(pool_ctx);
    struct kern_cpu_scratch sc;
    if (ref_mul(n_threads, p->rot_dim, &scratch) ||
        !(job.scratch = kern_cpu_scratch_get(ctx, (size_t)scratch * sizeof *job.scratch, &sc)))
        return KERN_ERR_NOMEM;
    kern_cpu_parallel_for(pool_ctx, p->n_tokens, rp_task, &job);
    kern_cpu_scratch_put(ctx, &sc);
    return KERN_OK;
}

KERN_CPU_DEFINE_LEVELS(rope, kern_rope_params)
