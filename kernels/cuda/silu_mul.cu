/* CUDA silu_mul: out[t, i] = silu(gu[t, i]) * gu[t, inter + i] (kern_silu_mul_params in
 * kernels/ops.h). Elementwise only; not fused into the gate_up GEMM's epilogue. */
#include "cuda_internal.h"
#include "index.h"

static __global__ void silu_mul_kernel(const float *gu, float *out, int64_t n_tokens,
                                       int64_t inter)
{
    int64_t n = n_tokens * inter;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        int64_t t = i / inter, c = i % inter;
        const float *row = gu + t * 2 * inter;
        out[i] = kern_silu(row[c]) * row[inter + c];
    }
}

int kern_cuda_silu_mul(struct kern_ctx *ctx, const struct kern_silu_mul_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !p || p->n_tokens < 0 || p->inter < 0 ||
        (p->inter > 0 && p->n_tokens > INT64_MAX / 2 / p->inter))
        return KERN_ERR_INVALID;
    if (p->n_tokens == 0 || p->inter == 0)
        return KERN_OK;
    if (!p->gu || !p->out)
        return KERN_ERR_INVALID;
    unsigned grid = kern_cuda_grid(p->n_tokens * p->inter, 256, (int64_t)cu->n_sm * 16);
    KERN_CUDA_LAUNCH(silu_mul_kernel, grid, 256, 0, cu->stream)(p->gu, p->out, p->n_tokens,
                                                                p->inter);
    return kern_cuda_launch_status();
}
