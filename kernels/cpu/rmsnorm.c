/* Fast CPU RMSNorm: per row an fp32 sum of squares (vector partial sums), the inverse root in
 * fp64, then out = w * fp32(x * inv) in vectors; rows spread over the pool for long prompts.
 * Not a LayerNorm: no mean, no bias. Unusual calls go to the reference, which decides. */
#include <math.h>
#include <stdlib.h>

#include "../ref/ref.h"
#include "cpu.h"

/* Elements per task: below this the whole call runs on the calling thread. */
#define RN_TASK_ELEMS (1 << 14)

struct rn_job {
    const struct kern_rmsnorm_params *p;
    const struct kern_cpu_isa *isa;
    const float *w;            /* [dim] the gain widened to fp32 */
    int64_t rows_per_task;
};

static void rn_task(void *arg, int64_t task, int thread)
{
    const struct rn_job *job = arg;
    const struct kern_rmsnorm_params *p = job->p;
    (void)thread;
    int64_t r0 = task * job->rows_per_task;
    int64_t r1 = p->n_rows - r0 < job->rows_per_task ? p->n_rows : r0 + job->rows_per_task;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = p->x + r * p->dim;
        double ss = job->isa->sumsq(x, p->dim);
        float inv = (float)(1.0 / sqrt(ss / (double)p->dim + (double)p->eps));
        job->isa->scale_mul(p->out + r * p->dim, x, inv, job->w, p->dim);
    }
}

static int rmsnorm(struct kern_ctx *ctx, const struct kern_rmsnorm_params *p,
                   const struct kern_cpu_isa *isa)
{
    int64_t elems;
    if (!p || p->n_rows <= 0 || p->dim <= 0 || !ref_dtype_ok(p->w_dtype) ||
        ref_mul(p->n_rows, p->dim, &elems) || !p->x || !p->w || !p->out || !(p->eps >= 0.0f))
        return kern_ref_rmsnorm(ctx, p); /* rejects, or has nothing to do */
    struct rn_job job = {.p = p, .isa = isa, .w = p->w};
    struct kern_cpu_scratch sc = {NULL, 0};
    if (p->w_dtype != KERN_DTYPE_F32) {
        /* dim <= REF_MAX_ELEMS: no overflow */
        float *wbuf = kern_cpu_scratch_get(ctx, (size_t)p->dim * sizeof *wbuf, &sc);
        if (!wbuf)
            return KERN_ERR_NOMEM;
        if (p->w_dtype == KERN_DTYPE_BF16)
            isa->bf16_to_f32(p->w, wbuf, p->dim);
        else
            isa->f16_to_f32(p->w, wbuf, p->dim);
        job.w = wbuf;
    }
    job.rows_per_task = p->dim >= RN_TASK_ELEMS ? 1 : RN_TASK_ELEMS / p->dim;
    int64_t n_tasks = (p->n_rows + job.rows_per_task - 1) / job.rows_per_task;
    kern_cpu_parallel_for(n_tasks > 1 ? ctx : NULL, n_tasks, rn_task, &job);
    if (sc.p)
        kern_cpu_scratch_put(ctx, &sc);
    return KERN_OK;
}

KERN_CPU_DEFINE_LEVELS(rmsnorm, kern_rmsnorm_params)
