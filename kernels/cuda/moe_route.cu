/* CUDA moe_route: Phi-3.5-MoE's sparsemixer at inference, the top-2 experts of each token and
 * their masked-softmax weights (kern_moe_route_params in kernels/ops.h). One thread per token:
 * a router row is n_experts (16) floats, far too little to share. The picks and the masks are
 * the reference's float expressions; exp and the sums are in double, as the reference, so the
 * weights agree with it to the last bit but for the rounding of exp. Not the experts' FFN
 * (moe.cu). */
#include "cuda_internal.h"

#define ROUTE_THREADS 128

/* Logit k of a row with NaN as -inf. */
static __device__ __forceinline__ float route_score(const float *s, int64_t k)
{
    float v = s[k];
    return v != v ? -INFINITY : v;
}

/* The first index of the largest score other than skip (-1: none skipped). */
static __device__ int64_t route_first_max(const float *s, int64_t n, int64_t skip)
{
    int64_t best = -1;
    float bv = -INFINITY;
    for (int64_t k = 0; k < n; k++) {
        if (k == skip)
            continue;
        float v = route_score(s, k);
        if (best < 0 || v > bv) {
            best = k;
            bv = v;
        }
    }
    return best;
}

/* 1 / sum of exp(s_k - m) over the k != skip that the mask of threshold m keeps: s_k is
 * dropped when (m - s_k) / max(|s_k|, m) > thr, all in float (a NaN quotient keeps it).
 * 0 when m is -inf. */
static __device__ float route_weight(const float *s, int64_t n, int64_t skip, float m, float thr)
{
    if (m == -INFINITY)
        return 0.0f;
    double sum = 0.0;
    for (int64_t k = 0; k < n; k++) {
        float sk = route_score(s, k);
        float factor = fabsf(sk) > m ? fabsf(sk) : m;
        if (k == skip || (m - sk) / factor > thr)
            continue;
        sum += exp((double)sk - (double)m);
    }
    return (float)(1.0 / sum);
}

static __global__ void __launch_bounds__(ROUTE_THREADS)
    moe_route_kernel(const float *logits, int32_t *experts, float *weights, int64_t n_tokens,
                     int64_t n_experts, int64_t ldx, float thr)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < n_tokens;
         t += stride) {
        const float *s = logits + t * ldx;
        int64_t i1 = route_first_max(s, n_experts, -1);
        int64_t i2 = route_first_max(s, n_experts, i1);
        experts[2 * t] = (int32_t)i1;
        experts[2 * t + 1] = (int32_t)i2;
        weights[2 * t] = route_weight(s, n_experts, -1, route_score(s, i1), thr);
        weights[2 * t + 1] = route_weight(s, n_experts, i1, route_score(s, i2), thr);
    }
}

int kern_cuda_moe_route(struct kern_ctx *ctx, const struct kern_moe_route_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    int64_t pairs;
    if (!cu || !p || p->n_tokens < 0 || p->n_experts < 2 || p->n_experts > INT32_MAX ||
        !kern_cuda_span_ok(p->n_tokens, p->n_experts, p->ldx) ||
        !kern_cuda_mul(p->n_tokens, 2, &pairs) || !(p->jitter_eps >= 0.0f))
        return KERN_ERR_INVALID;
    if (p->n_tokens == 0)
        return KERN_OK;
    if (!p->logits || !p->experts || !p->weights)
        return KERN_ERR_INVALID;
    /* The threshold in double, then rounded once: (float)(2 * jitter_eps) as ops.h says. */
    float thr = (float)(2.0 * (double)p->jitter_eps);
    unsigned grid = kern_cuda_grid(p->n_tokens, ROUTE_THREADS, (int64_t)cu->n_sm * 8);
    KERN_CUDA_LAUNCH(moe_route_kernel, grid, ROUTE_THREADS, 0, cu->stream)(
        p->logits, p->experts, p->weights, p->n_tokens, p->n_experts, p->ldx, thr);
    return kern_cuda_launch_status();
}
