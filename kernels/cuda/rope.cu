/* CUDA rope: rotate_half RoPE in place over the first rot_dim lanes of every head, with a
 * per-token inverse-frequency table (short/long LongRoPE factors) (kern_rope_params in
 * kernels/ops.h). Uses the precise sinf/cosf (no fast math): angles reach 1e5 radians. */
#include "cuda_internal.h"
#include "index.h"

static __global__ void rope_kernel(float *x, const int32_t *positions, const uint8_t *variant,
                                   const float *inv_freq, int64_t n_tokens, int64_t n_heads,
                                   int64_t head_dim, int64_t half, int64_t token_stride,
                                   int n_variants, float mscale, int *fault)
{
    int64_t n = n_tokens * n_heads * half;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        int64_t i = e % half;
        int64_t h = (e / half) % n_heads;
        int64_t t = e / half / n_heads;
        int v = variant ? variant[t] : 0;
        if (v >= n_variants) {
            if (i == 0 && h == 0)
                kern_cuda_raise(fault, KERN_CUDA_FAULT_ROPE_VARIANT);
            continue;
        }
        float angle = kern_rope_angle(positions[t], inv_freq[(int64_t)v * half + i]);
        float c = mscale * cosf(angle);
        float s = mscale * sinf(angle);
        float *head = x + t * token_stride + h * head_dim;
        float a = head[i], b = head[i + half];
        kern_rope_rotate(&a, &b, c, s);
        head[i] = a;
        head[i + half] = b;
    }
}

int kern_cuda_rope(struct kern_ctx *ctx, const struct kern_rope_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !p || p->n_tokens < 0 || p->n_heads < 0 || p->head_dim < 0 || p->rot_dim < 0 ||
        p->rot_dim > p->head_dim || p->rot_dim % 2 != 0 || p->n_variants < 1 ||
        (p->n_heads > 0 && p->head_dim > INT64_MAX / p->n_heads))
        return KERN_ERR_INVALID;
    int64_t half = p->rot_dim / 2;
    if (p->n_tokens == 0 || p->n_heads == 0 || half == 0)
        return KERN_OK;
    if (p->token_stride < p->n_heads * p->head_dim || !p->x || !p->positions || !p->inv_freq ||
        p->n_tokens > INT64_MAX / p->n_heads / half)
        return KERN_ERR_INVALID;
    int64_t n = p->n_tokens * p->n_heads * half;
    unsigned grid = kern_cuda_grid(n, 256, (int64_t)cu->n_sm * 16);
    KERN_CUDA_LAUNCH(rope_kernel, grid, 256, 0, cu->stream)(
        p->x, p->positions, p->variant, p->inv_freq, p->n_tokens, p->n_heads, p->head_dim, half,
        p->token_stride, p->n_variants, p->mscale, cu->fault);
    return kern_cuda_launch_status();
}
