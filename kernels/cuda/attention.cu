/* CUDA paged attention over variable-length sequences (kern_attention_params in
 * kernels/ops.h): causal, GQA, optional sliding window, KV read through the block tables.
 * Two paths chosen per call: a tiled flash-attention kernel (32 query rows x 32 keys per
 * step, online softmax) when the batch holds prefill chunks, and a split-K flash-decoding
 * kernel (one query row per block and key chunk, then a combine) when nearly every sequence
 * has one new token, so that a single long sequence still fills the GPU.
 * With a bf16 cache the prefill tiles run on the tensor cores (WMMA, bf16 inputs split in two
 * for fp32-level accuracy); other caches, and decode, use fp32 CUDA-core arithmetic. head_dim
 * 16, 32, 64, 96 or 128.
 * A lane owns 4 output dims per 32 (dims g*4 + 32*c); when D is not a multiple of 32 (16) the
 * lanes past D own nothing in the last chunk (lane_dims_ok). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include "../cuda_backend.h"
#include "cuda_internal.h"
#include "index.h"

#define AT_BQ 32          /* query rows per prefill tile */
#define AT_BK 32          /* keys per prefill step */
#define AT_THREADS 256    /* 8 threads per query row */
#define DEC_THREADS 128   /* 16 groups of 8 lanes, one key per group */
#define DEC_GROUPS (DEC_THREADS / 8)
#define DEC_MAX_CHUNK 1024
#define PLAN_THREADS 1024

/* Everything the kernels read from kern_attention_params, passed by value. */
struct attn_args {
    const float *q;
    const void *k_cache, *v_cache;
    enum kern_dtype dt;
    float *out;
    const int32_t *q_start, *q_len, *ctx_len, *block_tables;
    int64_t n_tokens, n_seqs, n_heads, n_kv_heads, q_stride;
    int64_t max_blocks, block_size, n_slots, window;
    float scale;
    int *fault;
};

/* Four consecutive cache elements from index i (i % 4 == 0, buffer 16-byte aligned). */
static __device__ __forceinline__ float4 load4(const void *base, enum kern_dtype t, int64_t i)
{
    if (t == KERN_DTYPE_F32)
        return *reinterpret_cast<const float4 *>(static_cast<const float *>(base) + i);
    uint2 u = *reinterpret_cast<const uint2 *>(static_cast<const uint16_t *>(base) + i);
    if (t == KERN_DTYPE_BF16)
        return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u),
                           __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xffff0000u));
    return make_float4(__half2float(__ushort_as_half((unsigned short)(u.x & 0xffffu))),
                       __half2float(__ushort_as_half((unsigned short)(u.x >> 16))),
                       __half2float(__ushort_as_half((unsigned short)(u.y & 0xffffu))),
                       __half2float(__ushort_as_half((unsigned short)(u.y >> 16))));
}

/* Chunks of 32 output dims per head, and whether lane g has dims in chunk c. Always true
 * when D is a multiple of 32. */
template <int D>
struct lane_dims {
    static constexpr int n_chunks = (D + 31) / 32;
};

template <int D>
static __device__ __forceinline__ bool lane_dims_ok(int g, int c)
{
    return g * 4 + 32 * c < D;
}

static __device__ __forceinline__ float dot4(float4 a, float4 b)
{
    return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

/* Reduction over the 8 lanes of an aligned lane group (lanes 8g .. 8g+7). */
static __device__ __forceinline__ float group8_max(float v)
{
    for (int off = 1; off < 8; off <<= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

static __device__ __forceinline__ float group8_sum(float v)
{
    for (int off = 1; off < 8; off <<= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

/* Validates every sequence (raising KERN_CUDA_FAULT_SEQ_RANGE and treating a bad one as
 * empty) and builds, in one block, either the prefill work list (items: one (seq, first row)
 * per query tile of `tile` rows, *n_items of them) or the decode row map (row_seq[t] = owning sequence; the
 * caller sets it to -1 first). */
static __global__ void __launch_bounds__(PLAN_THREADS)
    plan_kernel(struct attn_args a, int64_t max_keys, int tile, int2 *items, int64_t max_items,
                int *n_items, int32_t *row_seq)
{
    __shared__ int64_t scan[PLAN_THREADS];
    int tid = threadIdx.x;
    int64_t base = 0;
    for (int64_t s0 = 0; s0 < a.n_seqs; s0 += PLAN_THREADS) {
        int64_t s = s0 + tid;
        int64_t cnt = 0;
        if (s < a.n_seqs) {
            int64_t ql = a.q_len[s], qs = a.q_start[s], cl = a.ctx_len[s];
            bool ok = ql >= 0 && qs >= 0 && qs <= a.n_tokens - ql && cl >= ql && cl <= max_keys;
            if (!ok) {
                kern_cuda_raise(a.fault, KERN_CUDA_FAULT_SEQ_RANGE);
            } else {
                if (items)
                    cnt = kern_idx_n_tiles(ql, tile);
                if (row_seq)
                    for (int64_t i = 0; i < ql; i++)
                        row_seq[qs + i] = (int32_t)s;
            }
        }
        scan[tid] = cnt;
        __syncthreads();
        for (int off = 1; off < PLAN_THREADS; off <<= 1) {
            int64_t v = tid >= off ? scan[tid - off] : 0;
            __syncthreads();
            scan[tid] += v;
            __syncthreads();
        }
        int64_t first = base + scan[tid] - cnt;
        for (int64_t j = 0; j < cnt; j++) {
            if (first + j < max_items)
                items[first + j] = make_int2((int)s, (int)(j * tile));
            else /* only when sequences claim overlapping rows */
                kern_cuda_raise(a.fault, KERN_CUDA_FAULT_SEQ_RANGE);
        }
        base += scan[PLAN_THREADS - 1];
        __syncthreads(); /* scan is rewritten by the next round */
    }
    if (tid == 0 && n_items)
        *n_items = (int)(base < max_items ? base : max_items);
}

/* Where a prefill tile (work item (seq, first row), head h, up to bq rows) sits: its rows,
 * positions, the keys it reads and the kv head and block table it reads them through. */
struct tile {
    int64_t s, row0, h, q0, nrows, pos0, key_lo, key_hi, kvh, row_elems;
    const int32_t *table;
};

static __device__ __forceinline__ struct tile tile_of(const struct attn_args &a, int2 item,
                                                      int64_t h, int64_t bq, int64_t d)
{
    struct tile t;
    t.s = item.x;
    t.row0 = item.y;
    t.h = h;
    int64_t ql = a.q_len[t.s], cl = a.ctx_len[t.s];
    t.q0 = a.q_start[t.s];
    t.nrows = ql - t.row0 < bq ? ql - t.row0 : bq;
    t.pos0 = kern_idx_q_pos(cl, ql, t.row0);
    kern_idx_tile_keys(t.pos0, t.pos0 + t.nrows, a.window, &t.key_lo, &t.key_hi);
    t.kvh = kern_idx_kv_head(h, a.n_heads, a.n_kv_heads);
    t.table = a.block_tables + t.s * a.max_blocks;
    t.row_elems = a.n_kv_heads * d;
    return t;
}

/* Threads 0 .. bk-1 look up the slots of keys kb .. kb+bk-1 of a tile (-1 past its keys, and
 * for a block outside the cache, which raises the fault). */
static __device__ __forceinline__ void tile_slots(const struct attn_args &a, const struct tile &t,
                                                  int64_t kb, int bk, int64_t *slots)
{
    int tid = threadIdx.x;
    if (tid >= bk)
        return;
    int64_t kp = kb + tid, slot = -1;
    if (kp < t.key_hi) {
        slot = kern_idx_slot(t.table, a.max_blocks, a.block_size, a.n_slots, kp);
        if (slot < 0)
            kern_cuda_raise(a.fault, KERN_CUDA_FAULT_BLOCK_TABLE);
    }
    slots[tid] = slot;
}

/* Shared memory of the prefill kernel, in floats: Q [BQ][D], K [BK][D+4], V [BK][D],
 * P [BQ][BK+1], then BK int64 slots. */
static size_t prefill_smem_bytes(int d)
{
    return sizeof(float) * (size_t)(AT_BQ * d + AT_BK * (d + 4) + AT_BK * d +
                                    AT_BQ * (AT_BK + 1)) +
           sizeof(int64_t) * AT_BK;
}

/* One block per (query tile, head). Thread (r = tid / 8, g = tid % 8) owns query row r,
 * scores of keys g, g+8, g+16, g+24 of each step, and output lanes g*4 + 32*c .. +3. */
template <int D>
static __global__ void __launch_bounds__(AT_THREADS)
    prefill_kernel(struct attn_args a, const int2 *items, const int *n_items)
{
    KERN_CUDA_DYN_SMEM(float4, smem4);
    float *qs = reinterpret_cast<float *>(smem4);
    float *ks = qs + AT_BQ * D;
    float *vs = ks + AT_BK * (D + 4);
    float *ps = vs + AT_BK * D;
    int64_t *slots = reinterpret_cast<int64_t *>(ps + AT_BQ * (AT_BK + 1));

    if ((int)blockIdx.x >= *n_items)
        return;
    const struct tile t = tile_of(a, items[blockIdx.x], blockIdx.y, AT_BQ, D);
    const int64_t h = t.h, q0 = t.q0, row0 = t.row0, nrows = t.nrows, pos0 = t.pos0;
    const int64_t kvh = t.kvh, row_elems = t.row_elems;

    int tid = threadIdx.x;
    for (int e = tid; e < AT_BQ * D; e += AT_THREADS) {
        int r = e / D, d = e % D;
        qs[e] = r < nrows ? a.q[(q0 + row0 + r) * a.q_stride + h * D + d] * a.scale : 0.0f;
    }
    int r = tid >> 3, g = tid & 7;
    int64_t pos = pos0 + r;
    bool row_ok = r < nrows;
    float m = -INFINITY, l = 0.0f;
    constexpr int NC = lane_dims<D>::n_chunks;
    float o[4 * NC];
#pragma unroll
    for (int i = 0; i < 4 * NC; i++)
        o[i] = 0.0f;

    const int64_t key_hi = t.key_hi;
    for (int64_t kb = t.key_lo; kb < key_hi; kb += AT_BK) {
        tile_slots(a, t, kb, AT_BK, slots);
        __syncthreads(); /* slots ready; the previous step's reads of vs and ps are done */
        for (int e = tid; e < AT_BK * D; e += AT_THREADS) {
            int j = e / D, d = e % D;
            int64_t slot = slots[j];
            float kv = 0.0f, vv = 0.0f; /* zeros, never the (maybe NaN) unused slots */
            if (slot >= 0) {
                int64_t idx = slot * row_elems + kvh * D + d;
                kv = kern_cuda_load(a.k_cache, a.dt, idx);
                vv = kern_cuda_load(a.v_cache, a.dt, idx);
            }
            ks[j * (D + 4) + d] = kv;
            vs[j * D + d] = vv;
        }
        __syncthreads();

        float sc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 4
        for (int d = 0; d < D; d += 4) {
            float4 qv = *reinterpret_cast<const float4 *>(&qs[r * D + d]);
#pragma unroll
            for (int c = 0; c < 4; c++)
                sc[c] += dot4(qv, *reinterpret_cast<const float4 *>(&ks[(g + 8 * c) * (D + 4) + d]));
        }
        float tmax = -INFINITY;
#pragma unroll
        for (int c = 0; c < 4; c++) {
            int64_t kp = kb + g + 8 * c;
            bool vis = row_ok && kp < key_hi && slots[g + 8 * c] >= 0 &&
                       kern_idx_visible(kp, pos, a.window);
            sc[c] = vis ? sc[c] : -INFINITY;
            tmax = fmaxf(tmax, sc[c]);
        }
        tmax = group8_max(tmax);
        float m_new = fmaxf(m, tmax);
        float alpha = kern_softmax_scale(m, m_new);
        float psum = 0.0f;
#pragma unroll
        for (int c = 0; c < 4; c++) {
            float pv = kern_softmax_exp(sc[c], m_new);
            ps[r * (AT_BK + 1) + g + 8 * c] = pv;
            psum += pv;
        }
        psum = group8_sum(psum);
        l = l * alpha + psum;
        m = m_new;
#pragma unroll
        for (int i = 0; i < 4 * NC; i++)
            o[i] *= alpha;
        __syncthreads(); /* ps complete */

        for (int j = 0; j < AT_BK; j++) {
            float pv = ps[r * (AT_BK + 1) + j];
#pragma unroll
            for (int c = 0; c < NC; c++) {
                if (!lane_dims_ok<D>(g, c))
                    continue;
                float4 v4 = *reinterpret_cast<const float4 *>(&vs[j * D + g * 4 + 32 * c]);
                o[4 * c + 0] += pv * v4.x;
                o[4 * c + 1] += pv * v4.y;
                o[4 * c + 2] += pv * v4.z;
                o[4 * c + 3] += pv * v4.w;
            }
        }
    }
    if (!row_ok)
        return;
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    float *dst = a.out + (q0 + row0 + r) * a.n_heads * D + h * D;
#pragma unroll
    for (int c = 0; c < NC; c++)
        if (lane_dims_ok<D>(g, c))
#pragma unroll
            for (int x = 0; x < 4; x++)
                dst[g * 4 + 32 * c + x] = o[4 * c + x] * inv;
}

/* One block per (query row, key chunk, head). Group grp = tid / 8 scores keys grp, grp+16, ...
 * of the chunk, lane g holding dims g*4 + 32*c .. +3. With one chunk the row's output is
 * written directly; otherwise the unnormalised output and (max, sum) go to the partials. */
template <int D>
static __global__ void __launch_bounds__(DEC_THREADS)
    decode_kernel(struct attn_args a, const int32_t *row_seq, int64_t chunk, int64_t n_chunks,
                  float *o_part, float2 *ml_part)
{
    __shared__ float4 q4[D / 4];
    __shared__ float sc[DEC_MAX_CHUNK];
    __shared__ int64_t sslot[DEC_MAX_CHUNK];
    __shared__ float red[DEC_GROUPS][D];
    __shared__ float wred[DEC_THREADS / 32];
    __shared__ float stat[2];

    int64_t t = blockIdx.x, c = blockIdx.y, h = blockIdx.z;
    int64_t s = row_seq[t];
    if (s < 0)
        return;
    int64_t ql = a.q_len[s], q0 = a.q_start[s], cl = a.ctx_len[s];
    int64_t pos = kern_idx_q_pos(cl, ql, t - q0);
    int64_t b, e;
    kern_idx_split_bounds(kern_idx_key_lo(pos, a.window), pos + 1, chunk, c, &b, &e);
    if (b >= e)
        return;
    int64_t n = e - b;
    int tid = threadIdx.x, grp = tid >> 3, g = tid & 7, lane = tid & 31, warp = tid >> 5;
    int64_t kvh = kern_idx_kv_head(h, a.n_heads, a.n_kv_heads);
    const int32_t *table = a.block_tables + s * a.max_blocks;
    int64_t row_elems = a.n_kv_heads * D;
    constexpr int NC = lane_dims<D>::n_chunks;

    float *qf = reinterpret_cast<float *>(q4);
    for (int d = tid; d < D; d += DEC_THREADS)
        qf[d] = a.q[t * a.q_stride + h * D + d] * a.scale;
    for (int64_t j = tid; j < n; j += DEC_THREADS) {
        int64_t slot = kern_idx_slot(table, a.max_blocks, a.block_size, a.n_slots, b + j);
        if (slot < 0)
            kern_cuda_raise(a.fault, KERN_CUDA_FAULT_BLOCK_TABLE);
        sslot[j] = slot;
    }
    __syncthreads();

    /* Every lane runs the same number of rounds: the group reductions need the whole warp. */
    for (int64_t j0 = 0; j0 < n; j0 += DEC_GROUPS) {
        int64_t j = j0 + grp;
        int64_t slot = j < n ? sslot[j] : -1;
        float acc = 0.0f;
        if (slot >= 0) {
            int64_t base = slot * row_elems + kvh * D;
#pragma unroll
            for (int cc = 0; cc < NC; cc++)
                if (lane_dims_ok<D>(g, cc))
                    acc += dot4(q4[g + 8 * cc], load4(a.k_cache, a.dt, base + g * 4 + 32 * cc));
        }
        acc = group8_sum(acc);
        if (j < n && g == 0)
            sc[j] = slot >= 0 ? acc : -INFINITY;
    }
    __syncthreads();

    float mx = -INFINITY;
    for (int64_t j = tid; j < n; j += DEC_THREADS)
        mx = fmaxf(mx, sc[j]);
    for (int off = 16; off > 0; off >>= 1)
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    if (lane == 0)
        wred[warp] = mx;
    __syncthreads();
    if (tid == 0) {
        float v = -INFINITY;
        for (int w = 0; w < DEC_THREADS / 32; w++)
            v = fmaxf(v, wred[w]);
        stat[0] = v;
    }
    __syncthreads();
    float m = stat[0];
    float sum = 0.0f;
    for (int64_t j = tid; j < n; j += DEC_THREADS) {
        float pv = kern_softmax_exp(sc[j], m);
        sc[j] = pv;
        sum += pv;
    }
    for (int off = 16; off > 0; off >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0)
        wred[warp] = sum;
    __syncthreads();
    if (tid == 0) {
        float v = 0.0f;
        for (int w = 0; w < DEC_THREADS / 32; w++)
            v += wred[w];
        stat[1] = v;
    }
    __syncthreads();
    float l = stat[1];

    float o[4 * NC];
#pragma unroll
    for (int i = 0; i < 4 * NC; i++)
        o[i] = 0.0f;
    for (int64_t j = grp; j < n; j += DEC_GROUPS) {
        int64_t slot = sslot[j];
        if (slot < 0)
            continue;
        float pv = sc[j];
        int64_t base = slot * row_elems + kvh * D;
#pragma unroll
        for (int cc = 0; cc < NC; cc++) {
            if (!lane_dims_ok<D>(g, cc))
                continue;
            float4 v4 = load4(a.v_cache, a.dt, base + g * 4 + 32 * cc);
            o[4 * cc + 0] += pv * v4.x;
            o[4 * cc + 1] += pv * v4.y;
            o[4 * cc + 2] += pv * v4.z;
            o[4 * cc + 3] += pv * v4.w;
        }
    }
#pragma unroll
    for (int cc = 0; cc < NC; cc++)
        if (lane_dims_ok<D>(g, cc))
#pragma unroll
            for (int x = 0; x < 4; x++)
                red[grp][g * 4 + 32 * cc + x] = o[4 * cc + x];
    __syncthreads();
    for (int d = tid; d < D; d += DEC_THREADS) {
        float acc = 0.0f;
        for (int k = 0; k < DEC_GROUPS; k++)
            acc += red[k][d];
        if (n_chunks == 1)
            a.out[t * a.n_heads * D + h * D + d] = l > 0.0f ? acc / l : 0.0f;
        else
            o_part[((t * a.n_heads + h) * n_chunks + c) * D + d] = acc;
    }
    if (tid == 0 && n_chunks > 1)
        ml_part[(t * a.n_heads + h) * n_chunks + c] = make_float2(m, l);
}

/* Merges the valid chunks of row t, head h: out = sum_c w_c o_c / sum_c w_c l_c. */
template <int D>
static __global__ void combine_kernel(struct attn_args a, const int32_t *row_seq, int64_t chunk,
                                      int64_t n_chunks, const float *o_part,
                                      const float2 *ml_part)
{
    int64_t t = blockIdx.x, h = blockIdx.y;
    int64_t s = row_seq[t];
    if (s < 0)
        return;
    int64_t ql = a.q_len[s], q0 = a.q_start[s], cl = a.ctx_len[s];
    int64_t pos = kern_idx_q_pos(cl, ql, t - q0);
    int64_t nv = kern_idx_n_tiles(pos + 1 - kern_idx_key_lo(pos, a.window), chunk);
    const float2 *ml = ml_part + (t * a.n_heads + h) * n_chunks;
    const float *op = o_part + (t * a.n_heads + h) * n_chunks * D;
    float mx = -INFINITY, l = 0.0f;
    for (int64_t c = 0; c < nv; c++)
        mx = fmaxf(mx, ml[c].x);
    for (int64_t c = 0; c < nv; c++)
        l += ml[c].y * kern_softmax_scale(ml[c].x, mx);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int64_t c = 0; c < nv; c++)
            acc += op[c * D + d] * kern_softmax_scale(ml[c].x, mx);
        a.out[t * a.n_heads * D + h * D + d] = l > 0.0f ? acc / l : 0.0f;
    }
}

/* ---- tensor-core prefill (bf16 caches) ------------------------------------------------ */

#define TC_BQ 64       /* query rows per tile: 16 per warp */
#define TC_BK 32       /* keys per step */
#define TC_THREADS 128 /* 4 warps */

/* Byte offsets of the tensor-core kernel's shared memory, each a multiple of 128 (WMMA wants
 * 32-byte aligned tiles): Q as two bf16 planes (hi, lo) [BQ][D+8], K and V [BK][D+8] bf16,
 * scores S [BQ][BK+4] fp32, P as two bf16 planes [BQ][BK+8], the output accumulator O
 * [BQ][D+4] fp32, and BK int64 slots. The row paddings keep every leading dimension a
 * multiple of 16 bytes, as WMMA requires. */
struct tc_layout {
    size_t qhi, qlo, k, v, s, phi, plo, o, slots, total;
};

/* The unit the kernel declares its dynamic shared memory in: CUDA only promises the alignment
 * of the declared type, and WMMA needs 32 bytes. */
struct alignas(128) tc_smem_unit {
    unsigned char bytes[128];
};

static __host__ __device__ inline size_t tc_round(size_t n)
{
    return (n + 127) & ~(size_t)127;
}

static __host__ __device__ inline struct tc_layout tc_layout_of(int d)
{
    struct tc_layout l;
    size_t q = tc_round((size_t)TC_BQ * (d + 8) * 2), kv = tc_round((size_t)TC_BK * (d + 8) * 2);
    size_t p = tc_round((size_t)TC_BQ * (TC_BK + 8) * 2);
    l.qhi = 0;
    l.qlo = l.qhi + q;
    l.k = l.qlo + q;
    l.v = l.k + kv;
    l.s = l.v + kv;
    l.phi = l.s + tc_round((size_t)TC_BQ * (TC_BK + 4) * 4);
    l.plo = l.phi + p;
    l.o = l.plo + p;
    l.slots = l.o + tc_round((size_t)TC_BQ * (d + 4) * 4);
    l.total = l.slots + tc_round((size_t)TC_BK * 8);
    return l;
}

/* x as hi + lo, both bf16: x - hi - lo is about 2^-18 |x|, so two bf16 products stand in for
 * one fp32 product to within fp32-level error. */
static __device__ __forceinline__ void tc_split(float x, __nv_bfloat16 *hi, __nv_bfloat16 *lo)
{
    *hi = __float2bfloat16(x);
    *lo = __float2bfloat16(x - __bfloat162float(*hi));
}

/* One block per (query tile of 64 rows, head), 4 warps of 16 rows each; S = Q K^T and O += P V
 * on the tensor cores (WMMA 16x16x16, bf16 inputs, fp32 accumulation). K and V are read from a
 * bf16 cache, so they are exact; Q and P are split into two bf16 parts each, so the result
 * keeps fp32-level accuracy at twice the MMA work (tensor cores have it to spare). The online
 * softmax runs on the fp32 scores in shared memory, two lanes per row; the running output
 * lives in shared memory so that it can be rescaled per row without assuming how WMMA lays
 * fragments across lanes. */
template <int D>
static __global__ void __launch_bounds__(TC_THREADS)
    prefill_tc_kernel(struct attn_args a, const int2 *items, const int *n_items)
{
    using namespace nvcuda;
    constexpr int LDQ = D + 8, LDK = D + 8, LDS = TC_BK + 4, LDP = TC_BK + 8, LDO = D + 4;
    typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_t;
    typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a_t;
    KERN_CUDA_DYN_SMEM(struct tc_smem_unit, smem_tc);
    char *base = reinterpret_cast<char *>(smem_tc);
    const struct tc_layout L = tc_layout_of(D);
    __nv_bfloat16 *qhi = reinterpret_cast<__nv_bfloat16 *>(base + L.qhi);
    __nv_bfloat16 *qlo = reinterpret_cast<__nv_bfloat16 *>(base + L.qlo);
    __nv_bfloat16 *ks = reinterpret_cast<__nv_bfloat16 *>(base + L.k);
    __nv_bfloat16 *vs = reinterpret_cast<__nv_bfloat16 *>(base + L.v);
    float *ss = reinterpret_cast<float *>(base + L.s);
    __nv_bfloat16 *phi = reinterpret_cast<__nv_bfloat16 *>(base + L.phi);
    __nv_bfloat16 *plo = reinterpret_cast<__nv_bfloat16 *>(base + L.plo);
    float *os = reinterpret_cast<float *>(base + L.o);
    int64_t *slots = reinterpret_cast<int64_t *>(base + L.slots);

    if ((int)blockIdx.x >= *n_items)
        return;
    const struct tile t = tile_of(a, items[blockIdx.x], blockIdx.y, TC_BQ, D);
    const int64_t h = t.h, q0 = t.q0, row0 = t.row0, nrows = t.nrows, pos0 = t.pos0;
    const int64_t kvh = t.kvh, row_elems = t.row_elems;
    const uint16_t *kc = static_cast<const uint16_t *>(a.k_cache);
    const uint16_t *vc = static_cast<const uint16_t *>(a.v_cache);

    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    /* Every load of the tile issued before the first store: one memory latency, not QN. */
    constexpr int QN = TC_BQ * D / TC_THREADS;
    float qv[QN];
#pragma unroll
    for (int i = 0; i < QN; i++) {
        int e = tid + i * TC_THREADS, rr = e / D, d = e % D;
        qv[i] = rr < nrows ? a.q[(q0 + row0 + rr) * a.q_stride + h * D + d] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < QN; i++) {
        int e = tid + i * TC_THREADS, rr = e / D, d = e % D;
        tc_split(qv[i], &qhi[rr * LDQ + d], &qlo[rr * LDQ + d]);
        os[rr * LDO + d] = 0.0f;
    }
    /* Lanes 2i and 2i+1 of a warp own row 16 * warp + i: each half of its keys and dims. */
    int r = 16 * warp + (lane >> 1), half = lane & 1;
    int64_t pos = pos0 + r;
    bool row_ok = r < nrows;
    float m = -INFINITY, l = 0.0f;

    const int64_t key_hi = t.key_hi;
    for (int64_t kb = t.key_lo; kb < key_hi; kb += TC_BK) {
        tile_slots(a, t, kb, TC_BK, slots);
        __syncthreads(); /* slots ready (every warp finished the last step at the end of it) */
        /* K and V in 16-byte pieces (8 values; D % 8 == 0, rows 16-byte aligned as the cache),
         * all loads before the stores. Zeros, never the (maybe NaN) unused slots. */
        constexpr int CH = D / 8, KV_PER = (TC_BK * CH + TC_THREADS - 1) / TC_THREADS;
        uint4 kr[KV_PER], vr[KV_PER];
#pragma unroll
        for (int i = 0; i < KV_PER; i++) {
            int e = tid + i * TC_THREADS;
            kr[i] = vr[i] = make_uint4(0u, 0u, 0u, 0u);
            int64_t slot = e < TC_BK * CH ? slots[e / CH] : -1;
            if (slot >= 0) {
                int64_t off = slot * row_elems + kvh * D + (e % CH) * 8;
                kr[i] = *reinterpret_cast<const uint4 *>(kc + off);
                vr[i] = *reinterpret_cast<const uint4 *>(vc + off);
            }
        }
#pragma unroll
        for (int i = 0; i < KV_PER; i++) {
            int e = tid + i * TC_THREADS;
            if (e < TC_BK * CH) {
                *reinterpret_cast<uint4 *>(ks + (e / CH) * LDK + (e % CH) * 8) = kr[i];
                *reinterpret_cast<uint4 *>(vs + (e / CH) * LDK + (e % CH) * 8) = vr[i];
            }
        }
        __syncthreads();

        /* S = (Q_hi + Q_lo) K^T for this warp's 16 rows. */
        for (int n = 0; n < TC_BK / 16; n++) {
            acc_t acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < D / 16; kk++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fk;
                a_t fq;
                wmma::load_matrix_sync(fk, ks + 16 * n * LDK + 16 * kk, LDK);
                wmma::load_matrix_sync(fq, qhi + 16 * warp * LDQ + 16 * kk, LDQ);
                wmma::mma_sync(acc, fq, fk, acc);
                wmma::load_matrix_sync(fq, qlo + 16 * warp * LDQ + 16 * kk, LDQ);
                wmma::mma_sync(acc, fq, fk, acc);
            }
            wmma::store_matrix_sync(ss + 16 * warp * LDS + 16 * n, acc, LDS,
                                    wmma::mem_row_major);
        }
        __syncwarp();

        /* Online softmax over this step's keys, the scale applied in fp32. */
        float sc[TC_BK / 2];
        float tmax = -INFINITY;
#pragma unroll
        for (int c = 0; c < TC_BK / 2; c++) {
            int col = half * (TC_BK / 2) + c;
            int64_t kp = kb + col;
            bool vis = row_ok && kp < key_hi && slots[col] >= 0 &&
                       kern_idx_visible(kp, pos, a.window);
            sc[c] = vis ? ss[r * LDS + col] * a.scale : -INFINITY;
            tmax = fmaxf(tmax, sc[c]);
        }
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
        float m_new = fmaxf(m, tmax);
        float alpha = kern_softmax_scale(m, m_new);
        float psum = 0.0f;
#pragma unroll
        for (int c = 0; c < TC_BK / 2; c++) {
            int col = half * (TC_BK / 2) + c;
            float pv = kern_softmax_exp(sc[c], m_new);
            tc_split(pv, &phi[r * LDP + col], &plo[r * LDP + col]);
            psum += pv;
        }
        psum += __shfl_xor_sync(0xffffffffu, psum, 1);
        l = l * alpha + psum;
        m = m_new;
        for (int d = half * (D / 2); d < (half + 1) * (D / 2); d++)
            os[r * LDO + d] *= alpha;
        __syncwarp();

        /* O += (P_hi + P_lo) V. */
        for (int j = 0; j < D / 16; j++) {
            acc_t acc;
            wmma::load_matrix_sync(acc, os + 16 * warp * LDO + 16 * j, LDO, wmma::mem_row_major);
            for (int kk = 0; kk < TC_BK / 16; kk++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fv;
                a_t fp;
                wmma::load_matrix_sync(fv, vs + 16 * kk * LDK + 16 * j, LDK);
                wmma::load_matrix_sync(fp, phi + 16 * warp * LDP + 16 * kk, LDP);
                wmma::mma_sync(acc, fp, fv, acc);
                wmma::load_matrix_sync(fp, plo + 16 * warp * LDP + 16 * kk, LDP);
                wmma::mma_sync(acc, fp, fv, acc);
            }
            wmma::store_matrix_sync(os + 16 * warp * LDO + 16 * j, acc, LDO,
                                    wmma::mem_row_major);
        }
        __syncthreads(); /* K, V and slots are rewritten by the next step */
    }
    if (!row_ok)
        return;
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    float *dst = a.out + (q0 + row0 + r) * a.n_heads * D + h * D;
    for (int d = half * (D / 2); d < (half + 1) * (D / 2); d++)
        dst[d] = os[r * LDO + d] * inv;
}

/* Round up to 256 bytes, so that every scratch region is aligned for any access. */
static size_t align256(size_t n)
{
    return (n + 255) & ~(size_t)255;
}

template <int D>
static int launch(struct kern_cuda *cu, const struct attn_args &a, int64_t max_keys)
{
    cudaStream_t st = cu->stream;
    if (a.n_tokens <= 2 * a.n_seqs) { /* decode-like batch: split-K over the keys */
        int64_t chunk = kern_idx_split_chunk(max_keys, a.n_tokens, a.n_heads,
                                             4 * (int64_t)cu->n_sm, 64, DEC_MAX_CHUNK);
        int64_t n_chunks = kern_idx_n_tiles(max_keys, chunk);
        if (n_chunks < 1)
            n_chunks = 1;
        if (n_chunks > 65535)
            return KERN_ERR_UNSUPPORTED;
        size_t rows = (size_t)a.n_tokens * (size_t)a.n_heads * (size_t)n_chunks;
        size_t off_o = align256((size_t)a.n_tokens * sizeof(int32_t));
        size_t off_ml = off_o + (n_chunks > 1 ? align256(rows * D * sizeof(float)) : 0);
        size_t total = off_ml + (n_chunks > 1 ? align256(rows * sizeof(float2)) : 0);
        char *ws = static_cast<char *>(kern_cuda_scratch(cu, total));
        if (!ws)
            return KERN_ERR_NOMEM;
        int32_t *row_seq = reinterpret_cast<int32_t *>(ws);
        float *o_part = reinterpret_cast<float *>(ws + off_o);
        float2 *ml_part = reinterpret_cast<float2 *>(ws + off_ml);
        if (cudaMemsetAsync(row_seq, 0xff, (size_t)a.n_tokens * sizeof(int32_t), st) !=
            cudaSuccess)
            return KERN_ERR_DEVICE;
        KERN_CUDA_LAUNCH(plan_kernel, 1, PLAN_THREADS, 0, st)(a, max_keys, 1, nullptr, 0,
                                                              nullptr, row_seq);
        dim3 grid((unsigned)a.n_tokens, (unsigned)n_chunks, (unsigned)a.n_heads);
        KERN_CUDA_LAUNCH(decode_kernel<D>, grid, DEC_THREADS, 0, st)(a, row_seq, chunk, n_chunks,
                                                                     o_part, ml_part);
        dim3 cgrid((unsigned)a.n_tokens, (unsigned)a.n_heads);
        if (n_chunks > 1)
            KERN_CUDA_LAUNCH(combine_kernel<D>, cgrid, 128, 0, st)(a, row_seq, chunk, n_chunks,
                                                                   o_part, ml_part);
        return kern_cuda_launch_status();
    }

    /* Tensor cores where the cache is bf16 (always, on the engine's CUDA path), the fp32
     * kernel otherwise or when PHISERVE_CUDA_ATTENTION=fp32 asked for it. */
    bool tc = cu->attention_tc && a.dt == KERN_DTYPE_BF16 && D % 16 == 0;
    int tile = tc ? TC_BQ : AT_BQ;
    int64_t max_items = kern_idx_max_q_tiles(a.n_tokens, a.n_seqs, tile);
    size_t total = 256 + align256((size_t)max_items * sizeof(int2));
    char *ws = static_cast<char *>(kern_cuda_scratch(cu, total));
    if (!ws)
        return KERN_ERR_NOMEM;
    int *n_items = reinterpret_cast<int *>(ws);
    int2 *items = reinterpret_cast<int2 *>(ws + 256);
    size_t smem = tc ? tc_layout_of(D).total : prefill_smem_bytes(D);
    if (smem > cu->max_smem_optin)
        return KERN_ERR_UNSUPPORTED;
    cudaError_t e = tc ? cudaFuncSetAttribute(prefill_tc_kernel<D>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)smem)
                       : cudaFuncSetAttribute(prefill_kernel<D>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)smem);
    if (e != cudaSuccess)
        return KERN_ERR_DEVICE;
    KERN_CUDA_LAUNCH(plan_kernel, 1, PLAN_THREADS, 0, st)(a, max_keys, tile, items, max_items,
                                                          n_items, nullptr);
    dim3 grid((unsigned)max_items, (unsigned)a.n_heads);
    if (tc)
        KERN_CUDA_LAUNCH(prefill_tc_kernel<D>, grid, TC_THREADS, smem, st)(a, items, n_items);
    else
        KERN_CUDA_LAUNCH(prefill_kernel<D>, grid, AT_THREADS, smem, st)(a, items, n_items);
    return kern_cuda_launch_status();
}

int kern_cuda_attention(struct kern_ctx *ctx, const struct kern_attention_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !p || p->n_tokens < 0 || p->n_seqs < 0 || p->n_heads <= 0 ||
        p->n_kv_heads <= 0 || p->n_heads % p->n_kv_heads != 0 || p->head_dim <= 0 ||
        p->max_blocks < 0 || p->block_size <= 0 || p->n_slots < 0 || p->sliding_window < 0 ||
        p->q_stride < p->n_heads * p->head_dim)
        return KERN_ERR_INVALID;
    if (!kern_cuda_dtype_ok(p->cache_dtype))
        return KERN_ERR_UNSUPPORTED;
    if (p->n_tokens == 0 || p->n_seqs == 0)
        return KERN_OK;
    if (!p->q || !p->k_cache || !p->v_cache || !p->out || !p->q_start || !p->q_len ||
        !p->ctx_len || !p->block_tables || p->max_blocks > INT64_MAX / p->block_size)
        return KERN_ERR_INVALID;
    /* Grid and index limits: rows and sequences fit int32 (the work items), heads a grid
     * dimension; the vector loads want 16-byte aligned caches. */
    if (p->n_tokens > INT32_MAX || p->n_seqs > INT32_MAX || p->n_heads > 65535 ||
        ((uintptr_t)p->k_cache | (uintptr_t)p->v_cache) % 16 != 0)
        return KERN_ERR_UNSUPPORTED;

    struct attn_args a;
    a.q = p->q;
    a.k_cache = p->k_cache;
    a.v_cache = p->v_cache;
    a.dt = p->cache_dtype;
    a.out = p->out;
    a.q_start = p->q_start;
    a.q_len = p->q_len;
    a.ctx_len = p->ctx_len;
    a.block_tables = p->block_tables;
    a.n_tokens = p->n_tokens;
    a.n_seqs = p->n_seqs;
    a.n_heads = p->n_heads;
    a.n_kv_heads = p->n_kv_heads;
    a.q_stride = p->q_stride;
    a.max_blocks = p->max_blocks;
    a.block_size = p->block_size;
    a.n_slots = p->n_slots;
    a.window = p->sliding_window;
    a.scale = p->scale;
    a.fault = cu->fault;
    int64_t max_keys = p->max_blocks * p->block_size;
    switch (p->head_dim) { /* kern_cuda_attention_supports lists these */
    case 16: /* the fixture models (tests/fixtures/models) */
        return launch<16>(cu, a, max_keys);
    case 32:
        return launch<32>(cu, a, max_keys);
    case 64:
        return launch<64>(cu, a, max_keys);
    case 96:
        return launch<96>(cu, a, max_keys);
    case 128:
        return launch<128>(cu, a, max_keys);
    default:
        return KERN_ERR_UNSUPPORTED;
    }
}

int kern_cuda_attention_supports(int64_t head_dim)
{
    return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 96 || head_dim == 128;
}
