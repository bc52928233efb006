/* Fast CPU argmax: the reference's loop, one row per task over the pool when there are
 * several rows of a real vocabulary (a decode batch of greedy rows), so results are the
 * reference's exactly. Unusual calls, bad arguments included, go to the reference, which
 * rejects them before writing anything. Not vectorised: one pass over 32k floats is cheap. */
#include "../ref/ref.h"
#include "cpu.h"

/* Rows narrower than this are not worth a hand-off to the pool. */
#define ARGMAX_MIN_PARALLEL_DIM 4096

static void argmax_task(void *arg, int64_t task, int thread)
{
    const struct kern_argmax_params *p = arg;
    (void)thread;
    struct kern_argmax_params row = {
        .x = p->x + task * p->ldx, .out = p->out + task, .n_rows = 1, .dim = p->dim,
        .ldx = p->ldx,
    };
    kern_ref_argmax(NULL, &row); /* the whole call was checked: a row cannot fail */
}

int kern_cpu_argmax(struct kern_ctx *ctx, const struct kern_argmax_params *p)
{
    int64_t span;
    if (!p || p->n_rows < 2 || p->dim < ARGMAX_MIN_PARALLEL_DIM || p->dim > INT32_MAX ||
        ref_span(p->n_rows, p->dim, p->ldx, &span) || !p->x || !p->out)
        return kern_ref_argmax(ctx, p);
    struct kern_argmax_params job = *p;
    kern_cpu_parallel_for(ctx, p->n_rows, argmax_task, &job);
    return KERN_OK;
}
