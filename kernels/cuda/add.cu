/* CUDA add: y[i] += x[i], the residual add (kern_add_params in kernels/ops.h).
 * Elementwise only; fusing it into rmsnorm needs an op-table entry that does not exist yet. */
#include "cuda_internal.h"

static __global__ void add_kernel(float *y, const float *x, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] += x[i];
}

int kern_cuda_add(struct kern_ctx *ctx, const struct kern_add_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !p || p->n < 0)
        return KERN_ERR_INVALID;
    if (p->n == 0)
        return KERN_OK;
    if (!p->x || !p->y)
        return KERN_ERR_INVALID;
    unsigned grid = kern_cuda_grid(p->n, 256, (int64_t)cu->n_sm * 16);
    KERN_CUDA_LAUNCH(add_kernel, grid, 256, 0, cu->stream)(p->y, p->x, p->n);
    return kern_cuda_launch_status();
}
