/* Fast CPU activations (kern_act_params): GELU through erfcf and quick_gelu through expf, in
 * fp32, chunks of the array spread over the pool. Scalar libm calls (no vector build: the
 * op is a small share of the vision tower next to its matmuls), so one build serves every
 * instruction-set level. Validation is the reference's. */
#include <math.h>

#include "../ref/ref.h"
#include "cpu.h"

/* Elements per task: below this the whole call runs on the calling thread. */
#define ACT_TASK_ELEMS (1 << 14)

/* 0.5 x (1 + erf(x / sqrt 2)) as 0.5 x erfc(-x / sqrt 2): no cancellation for negative x. */
static float gelu(float x)
{
    return 0.5f * x * erfcf(-x * 0.70710678f);
}

/* x * sigmoid(1.702 x) with the sigmoid from exp(-|z|), which never overflows. */
static float quick_gelu(float x)
{
    float z = 1.702f * x;
    if (z >= 0.0f)
        return x / (1.0f + expf(-z));
    float e = expf(z);
    return x * e / (1.0f + e);
}

struct act_job {
    const struct kern_act_params *p;
};

static void act_task(void *arg, int64_t task, int thread)
{
    const struct kern_act_params *p = ((const struct act_job *)arg)->p;
    (void)thread;
    int64_t i0 = task * ACT_TASK_ELEMS;
    int64_t i1 = p->n - i0 < ACT_TASK_ELEMS ? p->n : i0 + ACT_TASK_ELEMS;
    /* out may alias x: each x[i] is read before out[i] is written. The limit at -inf is -0,
     * where both formulas would give -inf * 0 = NaN. */
    if (p->kind == KERN_ACT_GELU) {
        for (int64_t i = i0; i < i1; i++)
            p->out[i] = p->x[i] == -INFINITY ? -0.0f : gelu(p->x[i]);
    } else {
        for (int64_t i = i0; i < i1; i++)
            p->out[i] = p->x[i] == -INFINITY ? -0.0f : quick_gelu(p->x[i]);
    }
}

int kern_cpu_act(struct kern_ctx *ctx, const struct kern_act_params *p)
{
    int rc = kern_ref_act_check(p);
    if (rc != KERN_OK || p->n == 0)
        return rc;
    int64_t n_tasks = (p->n + ACT_TASK_ELEMS - 1) / ACT_TASK_ELEMS; /* n <= REF_MAX_ELEMS */
    struct act_job job = {p};
    kern_cpu_parallel_for(n_tasks > 1 ? ctx : NULL, n_tasks, act_task, &job);
    return KERN_OK;
}
