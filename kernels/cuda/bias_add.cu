/* CUDA bias_add: y[r * ldy + i] += b[i], a linear layer's bias added after its matmul
 * (kern_bias_add_params in kernels/ops.h). Elementwise only; not fused into the GEMM epilogue,
 * and the padding columns of y (i >= dim) are never touched. */
#include "cuda_internal.h"

static __global__ void bias_add_kernel(float *y, const void *b, enum kern_dtype bt,
                                       int64_t n_rows, int64_t dim, int64_t ldy)
{
    int64_t n = n_rows * dim;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        int64_t r = e / dim, i = e % dim;
        y[r * ldy + i] += kern_cuda_load(b, bt, i);
    }
}

int kern_cuda_bias_add(struct kern_ctx *ctx, const struct kern_bias_add_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    int rc = cu ? kern_ref_bias_add_check(p) : KERN_ERR_INVALID;
    if (rc != KERN_OK || p->n_rows == 0 || p->dim == 0)
        return rc;
    int64_t n = p->n_rows * p->dim; /* checked */
    unsigned grid = kern_cuda_grid(n, 256, (int64_t)cu->n_sm * 16);
    KERN_CUDA_LAUNCH(bias_add_kernel, grid, 256, 0, cu->stream)(p->y, p->b, p->b_dtype,
                                                                p->n_rows, p->dim, p->ldy);
    return kern_cuda_launch_status();
}
