/* CUDA rmsnorm: out[t] = w * (x[t] / sqrt(mean(x[t]^2) + eps)) (kern_rmsnorm_params in
 * kernels/ops.h), one block per row, statistics in fp32. out may alias x: each thread reads
 * its elements again before overwriting them. Not fused with the residual add (no such op). */
#include "cuda_internal.h"

#define RMS_THREADS 256

static __global__ void rmsnorm_kernel(const float *x, const void *w, enum kern_dtype wt,
                                      float *out, int64_t n_rows, int64_t dim, float eps)
{
    __shared__ float partial[RMS_THREADS / 32];
    __shared__ float inv_rms;
    for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
        const float *xr = x + r * dim;
        float ss = 0.0f;
        for (int64_t i = threadIdx.x; i < dim; i += RMS_THREADS)
            ss += xr[i] * xr[i];
        for (int off = 16; off > 0; off >>= 1)
            ss += __shfl_xor_sync(0xffffffffu, ss, off);
        if ((threadIdx.x & 31) == 0)
            partial[threadIdx.x / 32] = ss;
        __syncthreads();
        if (threadIdx.x == 0) {
            float total = 0.0f;
            for (int i = 0; i < RMS_THREADS / 32; i++)
                total += partial[i];
            inv_rms = 1.0f / sqrtf(total / (float)dim + eps);
        }
        __syncthreads();
        float s = inv_rms;
        for (int64_t i = threadIdx.x; i < dim; i += RMS_THREADS)
            out[r * dim + i] = kern_cuda_load(w, wt, i) * (xr[i] * s);
        __syncthreads(); /* partial and inv_rms are reused by the next row */
    }
}

int kern_cuda_rmsnorm(struct kern_ctx *ctx, const struct kern_rmsnorm_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !p || p->n_rows < 0 || p->dim < 0)
        return KERN_ERR_INVALID;
    if (!kern_cuda_dtype_ok(p->w_dtype))
        return KERN_ERR_UNSUPPORTED;
    if (p->n_rows == 0 || p->dim == 0)
        return KERN_OK;
    if (!p->x || !p->w || !p->out)
        return KERN_ERR_INVALID;
    unsigned grid = kern_cuda_grid(p->n_rows, 1, 65535);
    KERN_CUDA_LAUNCH(rmsnorm_kernel, grid, RMS_THREADS, 0, cu->stream)(
        p->x, p->w, p->w_dtype, p->out, p->n_rows, p->dim, p->eps);
    return kern_cuda_launch_status();
}
