/* CUDA gather_rows: out[i, :] = x[rows[i], :], the rows whose logits are needed
 * (kern_gather_rows_params in kernels/ops.h). A row outside [0, n_in) raises
 * KERN_CUDA_FAULT_GATHER_ROW and its output row is written as zeros. */
#include "cuda_internal.h"

static __global__ void gather_rows_kernel(const float *x, const int32_t *rows, float *out,
                                          int64_t n_in, int64_t n_out, int64_t dim, int *fault)
{
    for (int64_t i = blockIdx.x; i < n_out; i += gridDim.x) {
        int64_t r = rows[i];
        bool ok = r >= 0 && r < n_in;
        if (!ok && threadIdx.x == 0)
            kern_cuda_raise(fault, KERN_CUDA_FAULT_GATHER_ROW);
        for (int64_t c = threadIdx.x; c < dim; c += blockDim.x)
            out[i * dim + c] = ok ? x[r * dim + c] : 0.0f;
    }
}

int kern_cuda_gather_rows(struct kern_ctx *ctx, const struct kern_gather_rows_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !p || p->n_in < 0 || p->n_out < 0 || p->dim < 0)
        return KERN_ERR_INVALID;
    if (p->n_out == 0 || p->dim == 0)
        return KERN_OK;
    if (!p->x || !p->rows || !p->out)
        return KERN_ERR_INVALID;
    KERN_CUDA_LAUNCH(gather_rows_kernel, kern_cuda_grid(p->n_out, 1, 65535), 256, 0, cu->stream)(
        p->x, p->rows, p->out, p->n_in, p->n_out, p->dim, cu->fault);
    return kern_cuda_launch_status();
}
