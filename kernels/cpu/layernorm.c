/* Fast CPU LayerNorm with bias (Phi-3.5-MoE's norms): per row the mean in fp64, the centred
 * row written once to out, its fp32 sum of squares (vector partial sums), then
 * out = w * fp32(d * inv) + b in vectors; rows spread over the pool for long prompts.
 * Not an RMSNorm (cpu/rmsnorm.c). Unusual calls go to the reference, which decides. */
#include <math.h>

#include "../ref/ref.h"
#include "cpu.h"

/* Elements per task: below this the whole call runs on the calling thread. */
#define LN_TASK_ELEMS (1 << 14)

struct ln_job {
    const struct kern_layernorm_params *p;
    const struct kern_cpu_isa *isa;
    const float *w;            /* [dim] the gain widened to fp32 */
    const float *b;            /* [dim] the bias widened to fp32 */
    int64_t rows_per_task;
};

static void ln_task(void *arg, int64_t task, int thread)
{
    const struct ln_job *job = arg;
    const struct kern_layernorm_params *p = job->p;
    (void)thread;
    int64_t r0 = task * job->rows_per_task;
    int64_t r1 = p->n_rows - r0 < job->rows_per_task ? p->n_rows : r0 + job->rows_per_task;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = p->x + r * p->dim;
        float *out = p->out + r * p->dim;
        /* The mean in fp64 (four partial sums), so that d = x - mean below is within one
         * rounding of the exact difference even when the row sits far from zero. */
        double s[4] = {0.0, 0.0, 0.0, 0.0};
        int64_t i = 0;
        for (; i + 4 <= p->dim; i += 4)
            for (int l = 0; l < 4; l++)
                s[l] += (double)x[i + l];
        for (; i < p->dim; i++)
            s[0] += (double)x[i];
        double mean = ((s[0] + s[1]) + (s[2] + s[3])) / (double)p->dim;
        /* out may alias x: each x[i] is read once, here, before out[i] is written. */
        for (i = 0; i < p->dim; i++)
            out[i] = (float)((double)x[i] - mean);
        /* The centred squares are non-negative: their fp32 sum has no cancellation. */
        double ss = job->isa->sumsq(out, p->dim);
        float inv = (float)(1.0 / sqrt(ss / (double)p->dim + (double)p->eps));
        job->isa->scale_mul(out, out, inv, job->w, p->dim);
        job->isa->add(out, job->b, p->dim);
    }
}

static int layernorm(struct kern_ctx *ctx, const struct kern_layernorm_params *p,
                     const struct kern_cpu_isa *isa)
{
    int rc = kern_ref_layernorm_check(p);
    if (rc != KERN_OK || p->n_rows == 0 || p->dim == 0)
        return rc;
    struct ln_job job = {.p = p, .isa = isa, .w = p->w, .b = p->b};
    struct kern_cpu_scratch sc = {NULL, 0};
    if (p->w_dtype != KERN_DTYPE_F32) {
        /* 2 * dim <= 2 * REF_MAX_ELEMS floats: no overflow */
        float *wbuf = kern_cpu_scratch_get(ctx, 2 * (size_t)p->dim * sizeof *wbuf, &sc);
        if (!wbuf)
            return KERN_ERR_NOMEM;
        void (*widen)(const uint16_t *, float *, int64_t) =
            p->w_dtype == KERN_DTYPE_BF16 ? isa->bf16_to_f32 : isa->f16_to_f32;
        widen(p->w, wbuf, p->dim);
        widen(p->b, wbuf + p->dim, p->dim);
        job.w = wbuf;
        job.b = wbuf + p->dim;
    }
    job.rows_per_task = p->dim >= LN_TASK_ELEMS ? 1 : LN_TASK_ELEMS / p->dim;
    int64_t n_tasks = (p->n_rows + job.rows_per_task - 1) / job.rows_per_task;
    kern_cpu_parallel_for(n_tasks > 1 ? ctx : NULL, n_tasks, ln_task, &job);
    if (sc.p)
        kern_cpu_scratch_put(ctx, &sc);
    return KERN_OK;
}

KERN_CPU_DEFINE_LEVELS(layernorm, kern_layernorm_params)
