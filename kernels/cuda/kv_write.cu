/* CUDA kv_write: copies each token's K and V rows into the paged cache at slot_mapping[t]
 * (kern_kv_write_params in kernels/ops.h); slot < 0 skips the token, slot >= n_slots raises
 * KERN_CUDA_FAULT_KV_SLOT and skips it. Not fused with rope. */
#include "cuda_internal.h"

static __global__ void kv_write_kernel(const float *k, const float *v, const int64_t *slots,
                                       void *k_cache, void *v_cache, enum kern_dtype dt,
                                       int64_t n_tokens, int64_t row, int64_t token_stride,
                                       int64_t n_slots, int *fault)
{
    for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {
        int64_t slot = slots[t];
        if (slot < 0)
            continue;
        if (slot >= n_slots) {
            if (threadIdx.x == 0)
                kern_cuda_raise(fault, KERN_CUDA_FAULT_KV_SLOT);
            continue;
        }
        for (int64_t i = threadIdx.x; i < row; i += blockDim.x) {
            kern_cuda_store(k_cache, dt, slot * row + i, k[t * token_stride + i]);
            kern_cuda_store(v_cache, dt, slot * row + i, v[t * token_stride + i]);
        }
    }
}

int kern_cuda_kv_write(struct kern_ctx *ctx, const struct kern_kv_write_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !p || p->n_tokens < 0 || p->n_kv_heads < 0 || p->head_dim < 0 ||
        p->n_slots < 0 || (p->head_dim > 0 && p->n_kv_heads > INT64_MAX / p->head_dim))
        return KERN_ERR_INVALID;
    if (!kern_cuda_dtype_ok(p->cache_dtype))
        return KERN_ERR_UNSUPPORTED;
    int64_t row = p->n_kv_heads * p->head_dim;
    if (p->n_tokens == 0 || row == 0)
        return KERN_OK;
    if (p->token_stride < row || !p->k || !p->v || !p->slot_mapping || !p->k_cache ||
        !p->v_cache)
        return KERN_ERR_INVALID;
    KERN_CUDA_LAUNCH(kv_write_kernel, kern_cuda_grid(p->n_tokens, 1, 65535), 256, 0, cu->stream)(
        p->k, p->v, p->slot_mapping, p->k_cache, p->v_cache, p->cache_dtype, p->n_tokens, row,
        p->token_stride, p->n_slots, cu->fault);
    return kern_cuda_launch_status();
}
