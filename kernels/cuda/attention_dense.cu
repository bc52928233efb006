/* CUDA dense attention (kern_attention_dense_params in kernels/ops.h, the CLIP vision tower):
 * one block per (sequence, tile of AD_BQ queries, head); the keys pass through shared memory
 * AD_BK at a time with an online softmax, all in fp32 on the CUDA cores. Any head_dim up to
 * 256 (the register tile is sized by the next of 32, 64, 128, 256), any seq_len. No mask, no
 * cache and no scratch memory: not the paged causal attention (attention.cu). */
#include "cuda_internal.h"
#include "index.h"

#define AD_BQ 32       /* query rows per block */
#define AD_BK 32       /* keys per step */
#define AD_THREADS 256 /* 8 threads per query row */

struct ad_args {
    const float *q, *k, *v;
    float *out;
    int64_t seq_len, n_heads, hd, ld, n_qt; /* n_qt: query tiles per sequence */
    float scale;
};

/* Shared memory in floats: Q [BQ][hd+1], K [BK][hd+1], V [BK][hd], P [BQ][BK+1]. The odd
 * row strides of Q and K put the rows a warp reads at once in different banks. */
static size_t ad_smem_bytes(int64_t hd)
{
    return sizeof(float) * (size_t)(AD_BQ * (hd + 1) + AD_BK * (hd + 1) + AD_BK * hd +
                                    AD_BQ * (AD_BK + 1));
}

/* Reductions over the 8 lanes of an aligned lane group (one query row). fmaxf skips NaN. */
static __device__ __forceinline__ float ad_group8_max(float v)
{
    for (int off = 1; off < 8; off <<= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

static __device__ __forceinline__ float ad_group8_sum(float v)
{
    for (int off = 1; off < 8; off <<= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

/* Block (x = s * n_qt + query tile, y = head). Thread (r = tid / 8, g = tid % 8) owns query
 * row r of the tile, the scores of keys g, g+8, g+16, g+24 of each step, and output dims
 * g + 8c (c < DMAX / 8, those below hd). */
template <int DMAX>
static __global__ void __launch_bounds__(AD_THREADS) attention_dense_kernel(struct ad_args a)
{
    KERN_CUDA_DYN_SMEM(float, smem);
    const int64_t hd = a.hd, ldq = hd + 1;
    float *qs = smem;
    float *ks = qs + AD_BQ * ldq;
    float *vs = ks + AD_BK * ldq;
    float *ps = vs + AD_BK * hd;

    const int64_t s = blockIdx.x / a.n_qt, i0 = (blockIdx.x % a.n_qt) * AD_BQ, h = blockIdx.y;
    const int64_t t0 = s * a.seq_len, col = h * hd;
    const int64_t rows = a.seq_len - i0 < AD_BQ ? a.seq_len - i0 : AD_BQ;
    const int tid = threadIdx.x, r = tid >> 3, g = tid & 7;
    const bool row_ok = r < rows;

    for (int64_t e = tid; e < AD_BQ * hd; e += AD_THREADS) {
        int64_t qr = e / hd, d = e % hd;
        qs[qr * ldq + d] = qr < rows ? a.q[(t0 + i0 + qr) * a.ld + col + d] : 0.0f;
    }
    constexpr int NC = DMAX / 8;
    float o[NC];
#pragma unroll
    for (int c = 0; c < NC; c++)
        o[c] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    for (int64_t kb = 0; kb < a.seq_len; kb += AD_BK) {
        __syncthreads(); /* Q is loaded; the previous step's reads of K, V and P are done */
        for (int64_t e = tid; e < AD_BK * hd; e += AD_THREADS) {
            int64_t j = e / hd, d = e % hd;
            float kv = 0.0f, vv = 0.0f; /* zeros past the sequence's end, never garbage */
            if (kb + j < a.seq_len) {
                int64_t idx = (t0 + kb + j) * a.ld + col + d;
                kv = a.k[idx];
                vv = a.v[idx];
            }
            ks[j * ldq + d] = kv;
            vs[j * hd + d] = vv;
        }
        __syncthreads();

        float sc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t d = 0; d < hd; d++) {
            float qv = qs[r * ldq + d];
#pragma unroll
            for (int c = 0; c < 4; c++)
                sc[c] += qv * ks[(g + 8 * c) * ldq + d];
        }
        /* Keys past the end (and rows past the tile) score -inf: weight 0. */
        float tmax = -INFINITY;
#pragma unroll
        for (int c = 0; c < 4; c++) {
            sc[c] = row_ok && kb + g + 8 * c < a.seq_len ? sc[c] * a.scale : -INFINITY;
            tmax = fmaxf(tmax, sc[c]);
        }
        float m_new = fmaxf(m, ad_group8_max(tmax));
        float alpha = kern_softmax_scale(m, m_new); /* NaN when both are +inf */
        float psum = 0.0f;
#pragma unroll
        for (int c = 0; c < 4; c++) {
            float pv = kern_softmax_exp(sc[c], m_new); /* a NaN score: NaN */
            ps[r * (AD_BK + 1) + g + 8 * c] = pv;
            psum += pv;
        }
        l = l * alpha + ad_group8_sum(psum);
        m = m_new;
#pragma unroll
        for (int c = 0; c < NC; c++)
            o[c] *= alpha;
        __syncthreads(); /* P complete */

        for (int j = 0; j < AD_BK; j++) {
            float pv = ps[r * (AD_BK + 1) + j];
#pragma unroll
            for (int c = 0; c < NC; c++)
                if (g + 8 * c < hd)
                    o[c] += pv * vs[j * hd + g + 8 * c];
        }
    }
    if (!row_ok)
        return;
    float inv = 1.0f / l; /* every score -inf: l = 0 and 0 * inf = NaN, as the reference */
    float *dst = a.out + ((t0 + i0 + r) * a.n_heads + h) * hd;
#pragma unroll
    for (int c = 0; c < NC; c++)
        if (g + 8 * c < hd)
            dst[g + 8 * c] = o[c] * inv;
}

template <int DMAX>
static int launch(struct kern_cuda *cu, const struct ad_args &a, int64_t n_seqs)
{
    size_t smem = ad_smem_bytes(a.hd);
    if (smem > cu->max_smem_optin)
        return KERN_ERR_UNSUPPORTED;
    if (cudaFuncSetAttribute(attention_dense_kernel<DMAX>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)smem) != cudaSuccess)
        return KERN_ERR_DEVICE;
    dim3 grid((unsigned)(n_seqs * a.n_qt), (unsigned)a.n_heads);
    KERN_CUDA_LAUNCH(attention_dense_kernel<DMAX>, grid, AD_THREADS, smem, cu->stream)(a);
    return kern_cuda_launch_status();
}

int kern_cuda_attention_dense(struct kern_ctx *ctx, const struct kern_attention_dense_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    int rc = cu ? kern_ref_attention_dense_check(p) : KERN_ERR_INVALID;
    if (rc != KERN_OK || p->n_seqs == 0 || p->seq_len == 0 || p->n_heads == 0)
        return rc;
    struct ad_args a;
    a.q = p->q;
    a.k = p->k;
    a.v = p->v;
    a.out = p->out;
    a.seq_len = p->seq_len;
    a.n_heads = p->n_heads;
    a.hd = p->head_dim;
    a.ld = p->ld;
    a.n_qt = kern_idx_n_tiles(p->seq_len, AD_BQ);
    a.scale = p->scale;
    /* Grid limits: (sequence, query tile) pairs in x, heads in y. */
    if (p->n_seqs > INT32_MAX / a.n_qt || p->n_heads > 65535)
        return KERN_ERR_UNSUPPORTED;
    if (a.hd <= 32)
        return launch<32>(cu, a, p->n_seqs);
    if (a.hd <= 64)
        return launch<64>(cu, a, p->n_seqs);
    if (a.hd <= 128)
        return launch<128>(cu, a, p->n_seqs);
    return launch<256>(cu, a, p->n_seqs);
}
