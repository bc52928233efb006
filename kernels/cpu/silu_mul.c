/* Fast CPU silu_mul: out = silu(gate) * up in fp32 with a vectorised exp, token rows spread over
 * the pool for long prompts. Not a general activation library: SiLU on the fused [gate | up]
 * layout only. Unusual calls go to the reference, which decides. */
#include "../ref/ref.h"
#include "cpu.h"

#define SM_TASK_ELEMS (1 << 14)

struct sm_job {
    const struct kern_silu_mul_params *p;
    const struct kern_cpu_isa *isa;
    int64_t rows_per_task;
};

static void sm_task(void *arg, int64_t task, int thread)
{
    const struct sm_job *job = arg;
    const struct kern_silu_mul_params *p = job->p;
    (void)thread;
    int64_t t0 = task * job->rows_per_task;
    int64_t t1 = p->n_tokens - t0 < job->rows_per_task ? p->n_tokens : t0 + job->rows_per_task;
    for (int64_t t = t0; t < t1; t++) {
        const float *gate = p->gu + t * 2 * p->inter;
        job->isa->silu_mul(p->out + t * p->inter, gate, gate + p->inter, p->inter);
    }
}

static int silu_mul(struct kern_ctx *ctx, const struct kern_silu_mul_params *p,
                    const struct kern_cpu_isa *isa)
{
    int64_t two, elems;
    if (!p || p->n_tokens <= 0 || p->inter <= 0 || ref_mul(p->inter, 2, &two) ||
        ref_mul(p->n_tokens, two, &elems) || !p->gu || !p->out)
        return kern_ref_silu_mul(ctx, p); /* rejects, or has nothing to do */
    struct sm_job job = {.p = p, .isa = isa};
    job.rows_per_task = p->inter >= SM_TASK_ELEMS ? 1 : SM_TASK_ELEMS / p->inter;
    int64_t n_tasks = (p->n_tokens + job.rows_per_task - 1) / job.rows_per_task;
    kern_cpu_parallel_for(n_tasks > 1 ? ctx : NULL, n_tasks, sm_task, &job);
    return KERN_OK;
}

KERN_CPU_DEFINE_LEVELS(silu_mul, kern_silu_mul_params)
