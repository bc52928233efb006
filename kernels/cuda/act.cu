/* CUDA activations (kern_act_params in kernels/ops.h): GELU through erfcf and quick_gelu
 * through expf, in fp32, one grid-stride elementwise kernel. Not fused into a matmul
 * epilogue. */
#include "cuda_internal.h"

/* The formulas of kernels/cpu/act.c: 0.5 x erfc(-x / sqrt 2), and the sigmoid from
 * exp(-|z|), which never overflows. -inf gives the limit -0 (the formulas would give NaN). */
static __device__ __forceinline__ float act_one(float x, enum kern_act kind)
{
    if (x == -INFINITY)
        return -0.0f;
    if (kind == KERN_ACT_GELU)
        return 0.5f * x * erfcf(-x * 0.70710678f);
    float z = 1.702f * x;
    if (z >= 0.0f)
        return x / (1.0f + expf(-z));
    float e = expf(z);
    return x * e / (1.0f + e);
}

static __global__ void act_kernel(const float *x, float *out, int64_t n, enum kern_act kind)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = act_one(x[i], kind);
}

int kern_cuda_act(struct kern_ctx *ctx, const struct kern_act_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    int rc = cu ? kern_ref_act_check(p) : KERN_ERR_INVALID;
    if (rc != KERN_OK || p->n == 0)
        return rc;
    unsigned grid = kern_cuda_grid(p->n, 256, (int64_t)cu->n_sm * 16);
    KERN_CUDA_LAUNCH(act_kernel, grid, 256, 0, cu->stream)(p->x, p->out, p->n, p->kind);
    return kern_cuda_launch_status();
}
