/* CUDA moe_route: Phi-3.5-MoE's sparsemixer at inference, the top-2 experts of each token and
 * their masked-softmax weights (kern_moe_route_params in kernels/ops.h). One thread per token:
 * a router row is n_experts (16) floats, far too little to share. The row rule is the
 * reference's own (kernels/moe_route.h), so the weights agree with it to the last bit but for
 * the rounding of exp. Not the experts' FFN (moe.cu). */
#include "../moe_route.h"
#include "cuda_internal.h"

#define ROUTE_THREADS 128

static __global__ void __launch_bounds__(ROUTE_THREADS)
    moe_route_kernel(const float *logits, int32_t *experts, float *weights, int64_t n_tokens,
                     int64_t n_experts, int64_t ldx, float thr)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < n_tokens;
         t += stride) {
        kern_route_row(logits + t * ldx, n_experts, thr, experts + 2 * t, weights + 2 * t);
    }
}

int kern_cuda_moe_route(struct kern_ctx *ctx, const struct kern_moe_route_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    int rc = cu ? kern_ref_moe_route_check(p) : KERN_ERR_INVALID;
    if (rc != KERN_OK || p->n_tokens == 0)
        return rc;
    /* The threshold in double, then rounded once: (float)(2 * jitter_eps) as ops.h says. */
    float thr = (float)(2.0 * (double)p->jitter_eps);
    unsigned grid = kern_cuda_grid(p->n_tokens, ROUTE_THREADS, (int64_t)cu->n_sm * 8);
    KERN_CUDA_LAUNCH(moe_route_kernel, grid, ROUTE_THREADS, 0, cu->stream)(
        p->logits, p->experts, p->weights, p->n_tokens, p->n_experts, p->ldx, thr);
    return kern_cuda_launch_status();
}
