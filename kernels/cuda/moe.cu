/* CUDA moe: the routed experts of every token in one call (kern_moe_params in kernels/ops.h),
 * with no host knowledge of how many tokens each expert got. Five launches on the stream, all
 * sized from host-known numbers, no allocation and no host read (so a graph can record them):
 *  1. plan (one block): validates each slot's expert (a bad one raises
 *     KERN_CUDA_FAULT_MOE_EXPERT and is left out of everything below), sorts each token's
 *     slots by expert for the combine, counts the slots of each expert with warp ballots, and
 *     builds the expert offsets, the padded row-tile offsets and the slot permutation sorted
 *     by expert (stable: slot order within an expert, so the plan is deterministic);
 *  2. grouped GEMM, gate and up: grid (row tile, column tile of inter, gate|up); a row tile
 *     is one expert's run of up to bm sorted slots (bm: the call's tile size, below), found
 *     from its index by a binary search over the tile offsets; it reads its rows of x
 *     through the permutation and its expert's weights through the device pointer arrays,
 *     and writes g | u of its slots;
 *  3. act = silu(g) * u in place of g;
 *  4. the same GEMM for down, act -> one row of hidden per slot;
 *  5. combine: per token, its top_k rows times their weights in ascending expert order
 *     (ties by k) summed in fp32, then added to y.
 * Precision as kern_cuda_matmul: with bf16/f16 weights each GEMM input (x, then act) is
 * rounded to the weight type and the products are summed in fp32; f32 weights use plain fp32.
 * Every output element comes from a fixed K-loop order and no float atomics, whatever else
 * is in the batch (batch invariance). No fusion of the silu into the GEMMs.
 * Two GEMM kernels; the kernel is chosen per context and weight type, never per batch:
 *  - tensor cores (bf16/f16 weights, the default): WMMA 16x16x16 with the weight type's
 *    fragments and fp32 accumulators. The inputs are rounded to the weight type anyway, so
 *    the products are exact in fp32 and only the fp32 summation order differs from the FMA
 *    kernel. Tiles bm x 64 columns x 64 of K, 4 warps; x (rounded) and W are staged in
 *    shared memory (W with 16-byte loads when the expert's matrix is 16-byte aligned and
 *    k % 8 == 0, element loads at the edges and otherwise), the accumulators go through
 *    shared memory to the scattered output rows. bm is chosen per call: 64 with at least
 *    MOE_TC_BIG slots per expert on average (prefill: each W tile is read once per 64 rows,
 *    a quarter of the traffic of 16-row tiles, and a warp's 2 x 2 fragments reuse each
 *    fragment load twice), else 16 (decode: a lone slot pads to 16 rows, not 64, so the MMA
 *    and x staging work per weight byte stays small, the grid is the FMA kernel's, and the
 *    kernel stays bound by its wide weight reads). Both sizes give an element the same
 *    arithmetic (its own 16x16 fragment, K ascending in steps of 16 from a zero
 *    accumulator; other rows never enter it), so the choice keeps batch invariance.
 *  - FMA (f32 weights, and all weights with PHISERVE_CUDA_MOE=fma, read at context
 *    creation): a shared-memory tiled fp32 FMA GEMM, 16 x 64 x 32 tiles, 128 threads.
 * Work buffer (kern_moe_work_bytes, each region rounded up to 256 bytes): A = [S, hidden] down
 * outputs, B = [S, 2 * inter] g | u (act over g), C = the int32 plan below; S = n_tokens *
 * top_k slots, slot s = t * top_k + k. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include "cuda_internal.h"
#include "index.h"

#define MOE_BM 16  /* slots per row tile (FMA kernel) */
#define MOE_BN 64  /* output columns per tile */
#define MOE_BK 32  /* K per shared-memory stage */
#define MOE_GEMM_THREADS 128
#define MOE_PLAN_THREADS 256
#define MOE_COMBINE_THREADS 256
#define MOE_TC_BN 64  /* tensor-core kernel: output columns per tile */
#define MOE_TC_BK 64  /* K per shared-memory stage */
#define MOE_TC_BIG 16 /* slots per expert (average) from which row tiles are 64, not 16 */

/* The int32 plan in region C: 3 S + 2 (n_experts + 1) entries of the 4 S + 4 n_experts + 64
 * that kern_moe_work_bytes reserves. */
struct moe_plan {
    int32_t *slot_e;   /* [S] the slot's expert, -1 when it is a bad index */
    int32_t *perm;     /* [S] valid slots sorted by expert, slot order within one */
    int32_t *order;    /* [n_tokens, top_k] each token's k in ascending expert order, ties by k */
    int32_t *slot_off; /* [n_experts + 1] expert e owns perm[slot_off[e] .. slot_off[e + 1]) */
    int32_t *tile_off; /* [n_experts + 1] expert e owns row tiles [tile_off[e], tile_off[e+1]) */
};

/* A GEMM of the experts: for each valid slot s (rows through the plan) and column c < n,
 *   out[s * ld_out + off + c] = sum_k round(in[(s / in_div) * ld_in + k]) * W_e[c, k]
 * with W_e = w[e] ([n, k] in wt), e = the slot's expert; blockIdx.z = 1 takes w1 and off1
 * instead of w0 and offset 0. */
struct moe_gemm_args {
    const float *in;
    int64_t ld_in, in_div;
    const void *const *w0;
    const void *const *w1;
    enum kern_dtype wt;
    float *out;
    int64_t ld_out, off1;
    int64_t n, k, n_experts;
    struct moe_plan plan;
};

/* v rounded to storage type t and back (the GEMM input rounding of kern_cuda_matmul). */
static __device__ __forceinline__ float round_to(enum kern_dtype t, float v)
{
    if (t == KERN_DTYPE_BF16)
        return kern_bf16_to_f32(kern_f32_to_bf16(v));
    if (t == KERN_DTYPE_F16)
        return kern_f16_to_f32(kern_f32_to_f16(v));
    return v;
}

static __global__ void __launch_bounds__(MOE_PLAN_THREADS)
    moe_plan_kernel(const int32_t *experts, const void *const *w_gate, const void *const *w_up,
                    const void *const *w_down, int64_t n_tokens, int64_t top_k,
                    int64_t n_experts, int64_t inter, int bm, struct moe_plan plan,
                    int *fault)
{
    const int64_t n_slots = n_tokens * top_k;
    const int lane = (int)(threadIdx.x & 31), warp = (int)(threadIdx.x / 32);
    const int n_warps = MOE_PLAN_THREADS / 32;
    const unsigned below = (1u << lane) - 1u; /* the lanes before this one */

    for (int64_t s = threadIdx.x; s < n_slots; s += MOE_PLAN_THREADS) {
        int32_t e = experts[s];
        bool ok = e >= 0 && e < n_experts &&
                  (inter == 0 || (w_gate[e] && w_up[e] && w_down[e]));
        plan.slot_e[s] = ok ? e : -1;
        if (!ok)
            kern_cuda_raise(fault, KERN_CUDA_FAULT_MOE_EXPERT);
    }
    /* Each token's slots by expert (the raw index, as the reference), ties by k: a stable
     * insertion sort; top_k is small. */
    for (int64_t t = threadIdx.x; t < n_tokens; t += MOE_PLAN_THREADS) {
        const int32_t *ex = experts + t * top_k;
        int32_t *ord = plan.order + t * top_k;
        for (int64_t k = 0; k < top_k; k++) {
            int64_t j = k;
            for (; j > 0 && ex[ord[j - 1]] > ex[k]; j--)
                ord[j] = ord[j - 1];
            ord[j] = (int32_t)k;
        }
    }
    __syncthreads(); /* slot_e complete */

    /* Counts: warp w owns experts w, w + n_warps, ...; a ballot per 32 slots. */
    for (int64_t e = warp; e < n_experts; e += n_warps) {
        int32_t count = 0;
        for (int64_t base = 0; base < n_slots; base += 32) {
            int64_t s = base + lane;
            int32_t se = s < n_slots ? plan.slot_e[s] : -1;
            count += __popc(__ballot_sync(0xffffffffu, se == e));
        }
        if (lane == 0)
            plan.slot_off[e + 1] = count;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        plan.slot_off[0] = 0;
        plan.tile_off[0] = 0;
        for (int64_t e = 0; e < n_experts; e++) {
            int32_t c = plan.slot_off[e + 1];
            plan.slot_off[e + 1] = plan.slot_off[e] + c;
            plan.tile_off[e + 1] = plan.tile_off[e] + (c + bm - 1) / bm;
        }
    }
    __syncthreads();
    /* Placement, the same walk: a slot's place is its expert's offset plus the number of
     * earlier slots of that expert, so the permutation is stable. */
    for (int64_t e = warp; e < n_experts; e += n_warps) {
        int32_t pos = plan.slot_off[e];
        for (int64_t base = 0; base < n_slots; base += 32) {
            int64_t s = base + lane;
            bool mine = s < n_slots && plan.slot_e[s] == e;
            unsigned m = __ballot_sync(0xffffffffu, mine);
            if (mine)
                plan.perm[pos + __popc(m & below)] = (int32_t)s;
            pos += __popc(m);
        }
    }
}

/* Row tile rt of bm slots -> its expert, the last e with tile_off[e] <= rt (the block's
 * whole choice), and for thread i < bm the input and output rows of the tile's slot i (-1
 * past the expert's slots). False when rt is past the tiles this batch needs (the grid is
 * the host's upper bound): the block has nothing to do. */
static __device__ bool moe_tile(const struct moe_gemm_args &a, int64_t rt, int bm,
                                int64_t *e_out, int64_t *row_in, int64_t *row_out)
{
    const int32_t *tile_off = a.plan.tile_off;
    if (rt >= tile_off[a.n_experts])
        return false;
    int64_t lo = 0, hi = a.n_experts;
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (tile_off[mid] <= rt)
            lo = mid;
        else
            hi = mid - 1;
    }
    const int64_t e = lo;
    const int64_t first = a.plan.slot_off[e] + (rt - tile_off[e]) * bm;
    const int64_t end = a.plan.slot_off[e + 1];
    if ((int)threadIdx.x < bm) {
        int64_t i = first + threadIdx.x;
        int64_t s = i < end ? a.plan.perm[i] : -1;
        row_in[threadIdx.x] = s < 0 ? -1 : s / a.in_div;
        row_out[threadIdx.x] = s;
    }
    *e_out = e;
    return true;
}

static __global__ void __launch_bounds__(MOE_GEMM_THREADS) moe_gemm_kernel(struct moe_gemm_args a)
{
    __shared__ float xs[MOE_BM][MOE_BK + 1];
    __shared__ float ws[MOE_BN][MOE_BK + 1];
    __shared__ int64_t row_in[MOE_BM], row_out[MOE_BM];

    int64_t e;
    if (!moe_tile(a, blockIdx.x, MOE_BM, &e, row_in, row_out))
        return;
    const bool second = blockIdx.z == 1;
    const void *w = (second ? a.w1 : a.w0)[e];
    const int64_t off = second ? a.off1 : 0;
    const int64_t col0 = (int64_t)blockIdx.y * MOE_BN;
    __syncthreads(); /* row_in, row_out */

    const int tx = (int)(threadIdx.x % 16), ty = (int)(threadIdx.x / 16); /* 16 x 8 threads */
    float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
    for (int64_t k0 = 0; k0 < a.k; k0 += MOE_BK) {
        for (int i = threadIdx.x; i < MOE_BM * MOE_BK; i += MOE_GEMM_THREADS) {
            int r = i / MOE_BK, kk = i % MOE_BK;
            int64_t src = row_in[r];
            xs[r][kk] = src >= 0 && k0 + kk < a.k
                            ? round_to(a.wt, a.in[src * a.ld_in + k0 + kk])
                            : 0.0f;
        }
        for (int i = threadIdx.x; i < MOE_BN * MOE_BK; i += MOE_GEMM_THREADS) {
            int c = i / MOE_BK, kk = i % MOE_BK;
            int64_t col = col0 + c;
            ws[c][kk] = col < a.n && k0 + kk < a.k ? kern_cuda_load(w, a.wt, col * a.k + k0 + kk)
                                                   : 0.0f;
        }
        __syncthreads();
        /* A fixed order over k (padding adds exact zeros): a slot's result depends on its row
         * and its expert only. */
        for (int kk = 0; kk < MOE_BK; kk++) {
            float x0 = xs[ty][kk], x1 = xs[ty + 8][kk];
            for (int j = 0; j < 4; j++) {
                float wv = ws[tx + 16 * j][kk];
                acc[0][j] += x0 * wv;
                acc[1][j] += x1 * wv;
            }
        }
        __syncthreads();
    }
    for (int i = 0; i < 2; i++) {
        int64_t s = row_out[ty + 8 * i];
        if (s < 0)
            continue;
        for (int j = 0; j < 4; j++) {
            int64_t col = col0 + tx + 16 * j;
            if (col < a.n)
                a.out[s * a.ld_out + off + col] = acc[i][j];
        }
    }
}

/* ---- tensor-core GEMM (bf16 / f16 weights) --------------------------------------------- */

/* The 16-bit type T of the fragments: its bits and the rounding of an fp32 input. */
template <typename T> struct moe_half;
template <> struct moe_half<__nv_bfloat16> {
    static __device__ __forceinline__ __nv_bfloat16 bits(uint16_t u)
    {
        return __ushort_as_bfloat16(u);
    }
    static __device__ __forceinline__ __nv_bfloat16 round(float v)
    {
        return __ushort_as_bfloat16(kern_f32_to_bf16(v));
    }
};
template <> struct moe_half<__half> {
    static __device__ __forceinline__ __half bits(uint16_t u) { return __ushort_as_half(u); }
    static __device__ __forceinline__ __half round(float v)
    {
        return __ushort_as_half(kern_f32_to_f16(v));
    }
};

/* Row strides in elements: 8 (x, W) and 4 (C) of padding keep each a multiple of 16 bytes, as
 * WMMA requires, and every 16-row fragment start 32-byte aligned (16 * 144 and 16 * 272). */
#define MOE_TC_LDX (MOE_TC_BK + 8)
#define MOE_TC_LDC (MOE_TC_BN + 4)

/* The tensor-core kernel's shared memory: x rounded [BM][LDX], W [BN][LDX] (a column of W^T
 * per row: the col_major B operand), the fp32 results C [BM][LDC]. Three separate regions,
 * 128-byte aligned as a whole, each a multiple of 32 bytes long. */
template <typename T, int BM> struct alignas(128) moe_tc_smem {
    T xs[BM * MOE_TC_LDX];
    T ws[MOE_TC_BN * MOE_TC_LDX];
    float cs[BM * MOE_TC_LDC];
};

/* The GEMM of moe_gemm_args on the tensor cores: 4 warps in WARPS_M x WARPS_N, each owning
 * FM x FN fragments of 16 x 16 outputs (BM = 16: 1 x 4 warps of one fragment; BM = 64: 2 x 2
 * warps of 2 x 2). Per stage of MOE_TC_BK: all threads stage x (rounded to T) and W, barrier,
 * each warp runs its MMAs from shared memory, barrier (the next stage overwrites the tiles).
 * An element's sum: its fragment's accumulator from zero, K ascending in steps of 16, the
 * padding (rows past the expert, columns past n, K past k) exact zeros on both sides. */
template <typename T, int BM, int FM, int FN>
static __global__ void __launch_bounds__(MOE_GEMM_THREADS) moe_tc_kernel(struct moe_gemm_args a)
{
    using namespace nvcuda;
    constexpr int WARPS_M = BM / (16 * FM), WARPS_N = MOE_TC_BN / (16 * FN);
    static_assert(WARPS_M * WARPS_N * 32 == MOE_GEMM_THREADS, "4 warps cover the tile");
    constexpr int LDX = MOE_TC_LDX, LDC = MOE_TC_LDC, CHUNKS = MOE_TC_BK / 8;
    typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_t;
    typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a_t;
    typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b_t;
    __shared__ struct moe_tc_smem<T, BM> sm;
    __shared__ int64_t row_in[BM], row_out[BM];

    int64_t e;
    if (!moe_tile(a, blockIdx.x, BM, &e, row_in, row_out))
        return;
    const bool second = blockIdx.z == 1;
    const void *w = (second ? a.w1 : a.w0)[e];
    const uint16_t *wq = static_cast<const uint16_t *>(w);
    const int64_t off = second ? a.off1 : 0;
    const int64_t col0 = (int64_t)blockIdx.y * MOE_TC_BN;
    /* 8 elements from (col, kq), kq % 8 == 0, are one aligned 16-byte word of this expert. */
    const bool wide = a.k % 8 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
    const T zero = moe_half<T>::bits(0);
    const int warp = (int)(threadIdx.x / 32);
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    __syncthreads(); /* row_in, row_out */

    acc_t acc[FM][FN];
    for (int i = 0; i < FM; i++)
        for (int j = 0; j < FN; j++)
            wmma::fill_fragment(acc[i][j], 0.0f);
    for (int64_t k0 = 0; k0 < a.k; k0 += MOE_TC_BK) {
        for (int i = threadIdx.x; i < BM * MOE_TC_BK; i += MOE_GEMM_THREADS) {
            int r = i / MOE_TC_BK, kk = i % MOE_TC_BK;
            int64_t src = row_in[r];
            float v = src >= 0 && k0 + kk < a.k ? a.in[src * a.ld_in + k0 + kk] : 0.0f;
            sm.xs[r * LDX + kk] = moe_half<T>::round(v);
        }
        for (int i = threadIdx.x; i < MOE_TC_BN * CHUNKS; i += MOE_GEMM_THREADS) {
            int c = i / CHUNKS, q = i % CHUNKS;
            int64_t col = col0 + c, kq = k0 + 8 * q;
            T *dst = sm.ws + c * LDX + 8 * q;
            if (wide && col < a.n && kq + 8 <= a.k) {
                *reinterpret_cast<float4 *>(dst) =
                    *reinterpret_cast<const float4 *>(wq + col * a.k + kq);
            } else {
                for (int j = 0; j < 8; j++)
                    dst[j] = col < a.n && kq + j < a.k ? moe_half<T>::bits(wq[col * a.k + kq + j])
                                                       : zero;
            }
        }
        __syncthreads(); /* xs, ws complete before any warp's fragment loads */
        for (int kk = 0; kk < MOE_TC_BK; kk += 16) {
            a_t fa[FM];
            b_t fb[FN];
            for (int i = 0; i < FM; i++)
                wmma::load_matrix_sync(fa[i], sm.xs + (wm * FM + i) * 16 * LDX + kk, LDX);
            for (int j = 0; j < FN; j++)
                wmma::load_matrix_sync(fb[j], sm.ws + (wn * FN + j) * 16 * LDX + kk, LDX);
            for (int i = 0; i < FM; i++)
                for (int j = 0; j < FN; j++)
                    wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
        __syncthreads(); /* every warp's loads of xs, ws done before the next stage's writes */
    }
    for (int i = 0; i < FM; i++)
        for (int j = 0; j < FN; j++)
            wmma::store_matrix_sync(sm.cs + (wm * FM + i) * 16 * LDC + (wn * FN + j) * 16,
                                    acc[i][j], LDC, wmma::mem_row_major);
    __syncthreads(); /* cs complete: the write-out reads other warps' fragments */
    for (int i = threadIdx.x; i < BM * MOE_TC_BN; i += MOE_GEMM_THREADS) {
        int r = i / MOE_TC_BN, c = i % MOE_TC_BN;
        int64_t s = row_out[r], col = col0 + c;
        if (s >= 0 && col < a.n)
            a.out[s * a.ld_out + off + col] = sm.cs[r * LDC + c];
    }
}

/* The tile size of a call: MOE_BM for the FMA kernel; for the tensor-core one 64 rows from
 * MOE_TC_BIG slots per expert on average, else 16 (the opening comment). */
static int moe_bm(bool tc, int64_t n_slots, int64_t n_experts)
{
    if (!tc)
        return MOE_BM;
    return n_slots / MOE_TC_BIG >= n_experts ? 64 : 16;
}

/* Launches the GEMM of a on grid with the kernel the call chose (tc, bm). */
static int moe_gemm_launch(const struct moe_gemm_args &a, dim3 grid, bool tc, int bm,
                           cudaStream_t st)
{
    void (*kernel)(struct moe_gemm_args) = moe_gemm_kernel;
    if (tc && a.wt == KERN_DTYPE_BF16)
        kernel = bm == 64 ? moe_tc_kernel<__nv_bfloat16, 64, 2, 2>
                          : moe_tc_kernel<__nv_bfloat16, 16, 1, 1>;
    else if (tc)
        kernel = bm == 64 ? moe_tc_kernel<__half, 64, 2, 2> : moe_tc_kernel<__half, 16, 1, 1>;
    KERN_CUDA_LAUNCH(kernel, grid, MOE_GEMM_THREADS, 0, st)(a);
    return kern_cuda_launch_status();
}

/* gu[s, c] = silu(gu[s, c]) * gu[s, inter + c] for the valid slots: act over g. */
static __global__ void moe_silu_kernel(float *gu, const int32_t *slot_e, int64_t n_slots,
                                       int64_t inter)
{
    int64_t n = n_slots * inter;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        int64_t s = i / inter, c = i % inter;
        if (slot_e[s] < 0)
            continue;
        float *row = gu + s * 2 * inter;
        row[c] = kern_silu(row[c]) * row[inter + c];
    }
}

/* y[t, o] += sum over the token's valid slots in plan order of weights[slot] * down[slot, o]. */
static __global__ void __launch_bounds__(MOE_COMBINE_THREADS)
    moe_combine_kernel(float *y, const float *down, const float *weights, struct moe_plan plan,
                       int64_t n_tokens, int64_t top_k, int64_t hidden)
{
    for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {
        const int32_t *ord = plan.order + t * top_k;
        for (int64_t o = threadIdx.x; o < hidden; o += MOE_COMBINE_THREADS) {
            float sum = 0.0f;
            for (int64_t n = 0; n < top_k; n++) {
                int64_t s = t * top_k + ord[n];
                if (plan.slot_e[s] >= 0)
                    sum += weights[s] * down[s * hidden + o];
            }
            y[t * hidden + o] += sum;
        }
    }
}

/* bytes rounded up to 256, as kern_moe_work_bytes lays the regions out. */
static size_t round256(size_t bytes)
{
    return (bytes + 255) & ~(size_t)255;
}

int kern_cuda_moe(struct kern_ctx *ctx, const struct kern_moe_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    /* The reference's checks of everything on the host; the expert indices and the weight
     * pointers live on the device: the plan kernel checks them. */
    int rc = cu ? kern_ref_moe_args_check(p) : KERN_ERR_INVALID;
    if (rc != KERN_OK)
        return rc;
    if (!kern_cuda_dtype_ok(p->w_dtype)) /* block-format experts: the host backends only */
        return KERN_ERR_UNSUPPORTED;
    if (p->n_tokens == 0 || p->hidden == 0)
        return rc;
    const int64_t n_slots = p->n_tokens * p->top_k; /* checked */
    /* Launch limits: slots are int32 in the plan; grid y holds the column tiles. */
    const int64_t n_e = p->n_experts, H = p->hidden, I = p->inter;
    /* The kernel and tile size: by weight type and context, and bm by the batch's size (the
     * same arithmetic per element either way: the opening comment). */
    const bool tc = cu->moe_tc && p->w_dtype != KERN_DTYPE_F32;
    const int bm = moe_bm(tc, n_slots, n_e);
    const int64_t bn = tc ? MOE_TC_BN : MOE_BN;
    /* At most one partial tile per expert with a slot, and no tile without one. */
    const int64_t row_tiles_full = kern_idx_n_tiles(n_slots, bm) +
                                   (n_e < n_slots ? n_e : n_slots);
    const int64_t row_tiles = row_tiles_full < n_slots ? row_tiles_full : n_slots;
    if (n_slots > INT32_MAX || kern_idx_n_tiles(H, bn) > 65535 || kern_idx_n_tiles(I, bn) > 65535)
        return KERN_ERR_UNSUPPORTED;

    unsigned char *work = static_cast<unsigned char *>(p->work);
    float *down = reinterpret_cast<float *>(work);
    float *gu = reinterpret_cast<float *>(work + round256((size_t)n_slots * (size_t)H * 4));
    int32_t *c = reinterpret_cast<int32_t *>(reinterpret_cast<unsigned char *>(gu) +
                                             round256((size_t)n_slots * (size_t)I * 8));
    struct moe_plan plan;
    plan.slot_e = c;
    plan.perm = c + n_slots;
    plan.order = c + 2 * n_slots;
    plan.slot_off = c + 3 * n_slots;
    plan.tile_off = c + 3 * n_slots + n_e + 1;

    KERN_CUDA_LAUNCH(moe_plan_kernel, 1, MOE_PLAN_THREADS, 0, cu->stream)(
        p->experts, p->w_gate, p->w_up, p->w_down, p->n_tokens, p->top_k, n_e, I, bm, plan,
        cu->fault);
    rc = kern_cuda_launch_status();
    if (rc != KERN_OK)
        return rc;

    struct moe_gemm_args a;
    a.wt = p->w_dtype;
    a.n_experts = n_e;
    a.plan = plan;
    if (I > 0) {
        a.in = p->x;
        a.ld_in = H;
        a.in_div = p->top_k;
        a.w0 = p->w_gate;
        a.w1 = p->w_up;
        a.out = gu;
        a.ld_out = 2 * I;
        a.off1 = I;
        a.n = I;
        a.k = H;
        dim3 grid((unsigned)row_tiles, (unsigned)kern_idx_n_tiles(I, bn), 2);
        if ((rc = moe_gemm_launch(a, grid, tc, bm, cu->stream)) != KERN_OK)
            return rc;
        unsigned sgrid = kern_cuda_grid(n_slots * I, 256, (int64_t)cu->n_sm * 16);
        KERN_CUDA_LAUNCH(moe_silu_kernel, sgrid, 256, 0, cu->stream)(gu, plan.slot_e, n_slots,
                                                                     I);
        if ((rc = kern_cuda_launch_status()) != KERN_OK)
            return rc;
    }
    /* inter == 0: the K loop below is empty and writes zeros (an empty sum). */
    a.in = gu;
    a.ld_in = 2 * I;
    a.in_div = 1;
    a.w0 = p->w_down;
    a.w1 = p->w_down;
    a.out = down;
    a.ld_out = H;
    a.off1 = 0;
    a.n = H;
    a.k = I;
    dim3 dgrid((unsigned)row_tiles, (unsigned)kern_idx_n_tiles(H, bn), 1);
    if ((rc = moe_gemm_launch(a, dgrid, tc, bm, cu->stream)) != KERN_OK)
        return rc;

    KERN_CUDA_LAUNCH(moe_combine_kernel, kern_cuda_grid(p->n_tokens, 1, 65535),
                     MOE_COMBINE_THREADS, 0, cu->stream)(p->y, down, p->weights, plan,
                                                         p->n_tokens, p->top_k, H);
    return kern_cuda_launch_status();
}
