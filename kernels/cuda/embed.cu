/* CUDA embed: out[t, :] = table[ids[t], :] as fp32 (kern_embed_params in kernels/ops.h).
 * An id outside [0, vocab) raises KERN_CUDA_FAULT_EMBED_ID and its row is written as zeros;
 * the op cannot return that error itself because ids live on the device. */
#include "cuda_internal.h"

static __global__ void embed_kernel(const int32_t *ids, const void *table, enum kern_dtype dt,
                                    float *out, int64_t n_tokens, int64_t vocab, int64_t hidden,
                                    int *fault)
{
    for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {
        int64_t id = ids[t];
        bool ok = id >= 0 && id < vocab;
        if (!ok && threadIdx.x == 0)
            kern_cuda_raise(fault, KERN_CUDA_FAULT_EMBED_ID);
        for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x)
            out[t * hidden + i] = ok ? kern_cuda_load(table, dt, id * hidden + i) : 0.0f;
    }
}

int kern_cuda_embed(struct kern_ctx *ctx, const struct kern_embed_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !p || p->n_tokens < 0 || p->vocab < 0 || p->hidden < 0)
        return KERN_ERR_INVALID;
    if (!kern_cuda_dtype_ok(p->table_dtype))
        return KERN_ERR_UNSUPPORTED;
    if (p->n_tokens == 0 || p->hidden == 0)
        return KERN_OK;
    if (!p->ids || !p->table || !p->out)
        return KERN_ERR_INVALID;
    KERN_CUDA_LAUNCH(embed_kernel, kern_cuda_grid(p->n_tokens, 1, 65535), 256, 0, cu->stream)(
        p->ids, p->table, p->table_dtype, p->out, p->n_tokens, p->vocab, p->hidden, cu->fault);
    return kern_cuda_launch_status();
}
