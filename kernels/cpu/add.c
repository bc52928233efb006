/* Fast CPU add: y += x in vectors, in chunks spread over the pool when n is large (the residual
 * add of a long prompt). Exactly the reference's result (one fp32 rounding per element).
 * Unusual calls go to the reference, which decides. */
#include "../ref/ref.h"
#include "cpu.h"

#define ADD_CHUNK (1 << 15)

struct add_job {
    const struct kern_add_params *p;
    const struct kern_cpu_isa *isa;
};

static void add_task(void *arg, int64_t task, int thread)
{
    const struct add_job *job = arg;
    (void)thread;
    int64_t i0 = task * ADD_CHUNK, n = job->p->n - i0 < ADD_CHUNK ? job->p->n - i0 : ADD_CHUNK;
    job->isa->add(job->p->y + i0, job->p->x + i0, n);
}

static int add(struct kern_ctx *ctx, const struct kern_add_params *p,
               const struct kern_cpu_isa *isa)
{
    if (!p || p->n <= 0 || p->n > REF_MAX_ELEMS || !p->y || !p->x)
        return kern_ref_add(ctx, p); /* rejects, or has nothing to do */
    struct add_job job = {.p = p, .isa = isa};
    int64_t n_tasks = (p->n + ADD_CHUNK - 1) / ADD_CHUNK;
    kern_cpu_parallel_for(n_tasks > 1 ? ctx : NULL, n_tasks, add_task, &job);
    return KERN_OK;
}

KERN_CPU_DEFINE_LEVELS(add, kern_add_params)
