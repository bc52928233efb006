/* Fast CPU bias add: y[r, :] += b in vectors, the bias widened to fp32 once per call and rows
 * spread over the pool for long prompts. Exactly the reference's result (one fp32 add per
 * element of an exactly widened value). Unusual calls go to the reference, which decides. */
#include "../ref/ref.h"
#include "cpu.h"

/* Elements per task: below this the whole call runs on the calling thread. */
#define BA_TASK_ELEMS (1 << 15)

struct ba_job {
    const struct kern_bias_add_params *p;
    const struct kern_cpu_isa *isa;
    const float *b;            /* [dim] the bias widened to fp32 */
    int64_t rows_per_task;
};

static void ba_task(void *arg, int64_t task, int thread)
{
    const struct ba_job *job = arg;
    const struct kern_bias_add_params *p = job->p;
    (void)thread;
    int64_t r0 = task * job->rows_per_task;
    int64_t r1 = p->n_rows - r0 < job->rows_per_task ? p->n_rows : r0 + job->rows_per_task;
    for (int64_t r = r0; r < r1; r++)
        job->isa->add(p->y + r * p->ldy, job->b, p->dim);
}

static int bias_add(struct kern_ctx *ctx, const struct kern_bias_add_params *p,
                    const struct kern_cpu_isa *isa)
{
    int rc = kern_ref_bias_add_check(p);
    if (rc != KERN_OK || p->n_rows == 0 || p->dim == 0)
        return rc;
    struct ba_job job = {.p = p, .isa = isa, .b = p->b};
    struct kern_cpu_scratch sc = {NULL, 0};
    if (p->b_dtype != KERN_DTYPE_F32) {
        /* dim <= REF_MAX_ELEMS: no overflow */
        float *bbuf = kern_cpu_scratch_get(ctx, (size_t)p->dim * sizeof *bbuf, &sc);
        if (!bbuf)
            return KERN_ERR_NOMEM;
        if (p->b_dtype == KERN_DTYPE_BF16)
            isa->bf16_to_f32(p->b, bbuf, p->dim);
        else
            isa->f16_to_f32(p->b, bbuf, p->dim);
        job.b = bbuf;
    }
    job.rows_per_task = p->dim >= BA_TASK_ELEMS ? 1 : BA_TASK_ELEMS / p->dim;
    int64_t n_tasks = (p->n_rows + job.rows_per_task - 1) / job.rows_per_task;
    kern_cpu_parallel_for(n_tasks > 1 ? ctx : NULL, n_tasks, ba_task, &job);
    if (sc.p)
        kern_cpu_scratch_put(ctx, &sc);
    return KERN_OK;
}

KERN_CPU_DEFINE_LEVELS(bias_add, kern_bias_add_params)
