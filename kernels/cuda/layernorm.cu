/* CUDA layernorm: out[t] = (x[t] - mean) / sqrt(var + eps) * w + b, var the biased variance
 * (kern_layernorm_params in kernels/ops.h). One block per row, two-pass statistics in fp32
 * (mean first, then the sum of squared deviations: no cancellation of E[x^2] - mean^2).
 * out may alias x: every thread reads its elements in both passes before the barrier that
 * precedes its own writes. Not fused with the residual add. */
#include "cuda_internal.h"

#define LN_THREADS 256

/* The sum of v over the block, in every thread: warp butterflies, then the warps in order
 * (a fixed order, so a row's result does not depend on the launch). partial holds
 * LN_THREADS / 32 floats and is free again on return. */
static __device__ float block_sum(float v, float *partial)
{
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    if ((threadIdx.x & 31) == 0)
        partial[threadIdx.x / 32] = v;
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < LN_THREADS / 32; i++)
        total += partial[i];
    __syncthreads(); /* partial is reused by the next call */
    return total;
}

static __global__ void __launch_bounds__(LN_THREADS)
    layernorm_kernel(const float *x, const void *w, const void *b, enum kern_dtype wt,
                     float *out, int64_t n_rows, int64_t dim, float eps)
{
    __shared__ float partial[LN_THREADS / 32];
    for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
        const float *xr = x + r * dim;
        float s = 0.0f;
        for (int64_t i = threadIdx.x; i < dim; i += LN_THREADS)
            s += xr[i];
        float mean = block_sum(s, partial) / (float)dim;
        float ss = 0.0f;
        for (int64_t i = threadIdx.x; i < dim; i += LN_THREADS) {
            float d = xr[i] - mean;
            ss += d * d;
        }
        /* block_sum's barriers also order every read of the row before any write below. */
        float inv = 1.0f / sqrtf(block_sum(ss, partial) / (float)dim + eps);
        for (int64_t i = threadIdx.x; i < dim; i += LN_THREADS)
            out[r * dim + i] =
                (xr[i] - mean) * inv * kern_cuda_load(w, wt, i) + kern_cuda_load(b, wt, i);
    }
}

int kern_cuda_layernorm(struct kern_ctx *ctx, const struct kern_layernorm_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    int rc = cu ? kern_ref_layernorm_check(p) : KERN_ERR_INVALID;
    if (rc != KERN_OK || p->n_rows == 0 || p->dim == 0)
        return rc;
    KERN_CUDA_LAUNCH(layernorm_kernel, kern_cuda_grid(p->n_rows, 1, 65535), LN_THREADS, 0,
                     cu->stream)(p->x, p->w, p->b, p->w_dtype, p->out, p->n_rows, p->dim,
                                 p->eps);
    return kern_cuda_launch_status();
}
