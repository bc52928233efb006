/* CUDA argmax: for each row the first index of its largest value, NaN counting as -inf, -1
 * when no value is above -inf (kern_argmax_params in kernels/ops.h; the sampler's greedy rule).
 * One block per row (grid-stride over rows): kern_cuda_block_argmax (cuda_internal.h), which
 * the sample op's greedy jobs share. No sampling here. */
#include "cuda_internal.h"

#define ARGMAX_THREADS 256

static __global__ void argmax_kernel(const float *x, int32_t *out, int64_t n_rows, int64_t dim,
                                     int64_t ldx)
{
    __shared__ float wv[ARGMAX_THREADS / 32];
    __shared__ int wi[ARGMAX_THREADS / 32];
    for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
        float m;
        int best = kern_cuda_block_argmax<ARGMAX_THREADS>(x + r * ldx, dim, &m, wv, wi);
        if (threadIdx.x == 0)
            out[r] = best;
    }
}

int kern_cuda_argmax(struct kern_ctx *ctx, const struct kern_argmax_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !p || p->n_rows < 0 || p->dim < 0 || p->dim > INT32_MAX || p->ldx < p->dim ||
        (p->n_rows > 0 && p->ldx > 0 && p->n_rows - 1 > (INT64_MAX - p->dim) / p->ldx))
        return KERN_ERR_INVALID;
    if (p->n_rows == 0)
        return KERN_OK;
    if (!p->out || (p->dim > 0 && !p->x))
        return KERN_ERR_INVALID;
    KERN_CUDA_LAUNCH(argmax_kernel, kern_cuda_grid(p->n_rows, 1, 65535), ARGMAX_THREADS, 0,
                     cu->stream)(p->x, p->out, p->n_rows, p->dim, p->ldx);
    return kern_cuda_launch_status();
}
