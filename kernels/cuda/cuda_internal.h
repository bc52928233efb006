/* Private to kernels/cuda: the CUDA context (struct kern_cuda), the device error bits, the
 * op entry points the table is filled with, and small device helpers shared by the ops.
 * Not a public header: the engine sees only kernels/cuda_backend.h. CUDA C++ only. */
#ifndef PHISERVE_KERNELS_CUDA_INTERNAL_H
#define PHISERVE_KERNELS_CUDA_INTERNAL_H

#include <cstddef>
#include <cstdint>

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "../ctx.h"
#include "../dtype.h"
#include "../ops.h"
#include "../ref/ref.h"

/* Bits a kernel ORs into the device error word when it meets an index ops.h rejects. */
enum kern_cuda_fault {
    KERN_CUDA_FAULT_EMBED_ID = 1 << 0,     /* embedding id outside [0, vocab) */
    KERN_CUDA_FAULT_KV_SLOT = 1 << 1,      /* kv_write slot >= n_slots */
    KERN_CUDA_FAULT_BLOCK_TABLE = 1 << 2,  /* attention block id or slot outside the cache */
    KERN_CUDA_FAULT_SEQ_RANGE = 1 << 3,    /* q_start/q_len/ctx_len inconsistent */
    KERN_CUDA_FAULT_ROPE_VARIANT = 1 << 4, /* variant >= n_variants */
    KERN_CUDA_FAULT_GATHER_ROW = 1 << 5,   /* gather row outside [0, n_in) */
    KERN_CUDA_FAULT_SAMPLE_JOB = 1 << 6,   /* sample job row, mod range, mod id or given token
                                              out of range, or logprobs without buffers */
    KERN_CUDA_FAULT_MOE_EXPERT = 1 << 7,   /* moe expert outside [0, n_experts), or one with
                                              a NULL weight pointer */
};

/* One cached cuBLASLt algorithm choice, keyed by everything that selects it. */
struct kern_cuda_gemm_key {
    int64_t m, n, k, lda, ldb, ldc;
    int a_type, b_type, c_type;
    uint32_t align_a, align_b, align_c;
    int beta_one;
};

struct kern_cuda_gemm_entry {
    struct kern_cuda_gemm_key key;
    cublasLtMatmulAlgo_t algo;
    int valid;
};

#define KERN_CUDA_GEMM_CACHE 64

/* The CUDA member of struct kern_ctx (kernels/ctx.h). Owned by kern_cuda_create. */
struct kern_cuda {
    int device;
    int n_sm;                     /* multiprocessors, sizes grids */
    size_t max_smem_optin;        /* per-block shared memory limit after opt-in */
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_workspace;           /* cuBLASLt workspace, lt_workspace_size bytes */
    size_t lt_workspace_size;
    void *scratch;                /* bf16 GEMM inputs, attention work lists, partials */
    size_t scratch_size;
    uint64_t scratch_gen;         /* bumped whenever scratch is replaced (graphs go stale) */
    int capturing;                /* a graph capture is open on stream */
    bool attention_tc;            /* prefill attention on the tensor cores (bf16 caches); off
                                     with PHISERVE_CUDA_ATTENTION=fp32 */
    bool moe_tc;                  /* moe GEMMs of 16-bit weights on the tensor cores; off
                                     (the FMA kernel) with PHISERVE_CUDA_MOE=fma */
    int gemm_algo;                /* which of cuBLASLt's heuristic answers a GEMM takes: 0,
                                     the first, unless PHISERVE_CUDA_GEMM_ALGO=i (a benchmark
                                     switch, 0..7; the last offered when fewer) */
    int *fault;                   /* device word of enum kern_cuda_fault bits */
    cudaEvent_t t0, t1;           /* benchmark timer */
    struct kern_cuda_gemm_entry gemm_cache[KERN_CUDA_GEMM_CACHE];
    int gemm_cache_next;
};

/* Kernel launches and dynamic shared memory go through these two macros so that the same
 * sources also build on the host against the CUDA emulator (kernels/cuda/emu), which the
 * tests use on machines without a GPU. Under nvcc they are the plain CUDA syntax:
 *   KERN_CUDA_LAUNCH(kernel, grid, block, smem, stream)(args...)
 *   KERN_CUDA_DYN_SMEM(type, name);   declares `extern __shared__ type name[]` */
#ifdef KERN_CUDA_EMU
#define KERN_CUDA_LAUNCH(kernel, grid, block, smem, stream) \
    kern_emu_launcher(kernel, #kernel, grid, block, smem, stream)
#define KERN_CUDA_DYN_SMEM(type, name) type *name = static_cast<type *>(kern_emu_dyn_smem())
#else
#define KERN_CUDA_LAUNCH(kernel, grid, block, smem, stream) \
    kernel<<<grid, block, smem, stream>>>
#define KERN_CUDA_DYN_SMEM(type, name) extern __shared__ type name[]
#endif

/* The state of a kern_ctx, or NULL when ctx carries no CUDA state. */
static inline struct kern_cuda *kern_cuda_of(struct kern_ctx *ctx)
{
    return ctx ? ctx->cuda : nullptr;
}

/* Returns a device buffer of at least bytes (the scratch buffer, grown when needed: growing
 * synchronises the stream). Valid until the next call; ops use it for their own duration
 * only, which the stream order makes safe. NULL when out of memory, and when it would have
 * to grow while a graph is being captured (capture cannot allocate). */
void *kern_cuda_scratch(struct kern_cuda *cu, size_t bytes);

/* Maps the last launch error to 0 or KERN_ERR_DEVICE. */
int kern_cuda_launch_status(void);

/* Number of blocks for n items at `threads` per block, capped at cap. */
static inline unsigned kern_cuda_grid(int64_t n, int threads, int64_t cap)
{
    int64_t g = (n + threads - 1) / threads;
    if (g < 1)
        g = 1;
    return (unsigned)(g < cap ? g : cap);
}

/* The op entries (one .cu file each). */
int kern_cuda_embed(struct kern_ctx *ctx, const struct kern_embed_params *p);
int kern_cuda_rmsnorm(struct kern_ctx *ctx, const struct kern_rmsnorm_params *p);
int kern_cuda_matmul(struct kern_ctx *ctx, const struct kern_matmul_params *p);
int kern_cuda_rope(struct kern_ctx *ctx, const struct kern_rope_params *p);
int kern_cuda_kv_write(struct kern_ctx *ctx, const struct kern_kv_write_params *p);
int kern_cuda_attention(struct kern_ctx *ctx, const struct kern_attention_params *p);
int kern_cuda_silu_mul(struct kern_ctx *ctx, const struct kern_silu_mul_params *p);
int kern_cuda_add(struct kern_ctx *ctx, const struct kern_add_params *p);
int kern_cuda_gather_rows(struct kern_ctx *ctx, const struct kern_gather_rows_params *p);

/* The graph entries (graph.cu). */
int kern_cuda_graph_begin(struct kern_ctx *ctx);
int kern_cuda_graph_end(struct kern_ctx *ctx, struct kern_graph **out);
int kern_cuda_graph_launch(struct kern_ctx *ctx, struct kern_graph *g);
void kern_cuda_graph_destroy(struct kern_ctx *ctx, struct kern_graph *g);
int kern_cuda_argmax(struct kern_ctx *ctx, const struct kern_argmax_params *p);
int kern_cuda_sample(struct kern_ctx *ctx, const struct kern_sample_params *p);
int kern_cuda_layernorm(struct kern_ctx *ctx, const struct kern_layernorm_params *p);
int kern_cuda_bias_add(struct kern_ctx *ctx, const struct kern_bias_add_params *p);
int kern_cuda_moe_route(struct kern_ctx *ctx, const struct kern_moe_route_params *p);
int kern_cuda_moe(struct kern_ctx *ctx, const struct kern_moe_params *p);
int kern_cuda_act(struct kern_ctx *ctx, const struct kern_act_params *p);
int kern_cuda_attention_dense(struct kern_ctx *ctx, const struct kern_attention_dense_params *p);

/* Whether dtype is one of the three storage types. */
static inline bool kern_cuda_dtype_ok(enum kern_dtype t)
{
    return t == KERN_DTYPE_F32 || t == KERN_DTYPE_F16 || t == KERN_DTYPE_BF16;
}

#if defined(__CUDACC__) || defined(KERN_CUDA_EMU)
/* Element i of a buffer of storage type t, as fp32. The switch is uniform across a launch. */
static __device__ __forceinline__ float kern_cuda_load(const void *base, enum kern_dtype t,
                                                      int64_t i)
{
    if (t == KERN_DTYPE_BF16)
        return kern_bf16_to_f32(static_cast<const uint16_t *>(base)[i]);
    if (t == KERN_DTYPE_F16)
        return kern_f16_to_f32(static_cast<const uint16_t *>(base)[i]);
    return static_cast<const float *>(base)[i];
}

/* Stores fp32 v as element i of a buffer of storage type t (round to nearest even). */
static __device__ __forceinline__ void kern_cuda_store(void *base, enum kern_dtype t, int64_t i,
                                                      float v)
{
    if (t == KERN_DTYPE_BF16)
        static_cast<uint16_t *>(base)[i] = kern_f32_to_bf16(v);
    else if (t == KERN_DTYPE_F16)
        static_cast<uint16_t *>(base)[i] = kern_f32_to_f16(v);
    else
        static_cast<float *>(base)[i] = v;
}

static __device__ __forceinline__ void kern_cuda_raise(int *fault, int bit)
{
    atomicOr(fault, bit);
}

/* The pair order of an argmax: (v, i) beats (bv, bi) with a larger value, or the same value
 * at a smaller index. An empty pair is (-inf, -1) and nothing ever compares below it: values
 * enter a pair only through a strict >, so a NaN or a -inf never does, and a real pair always
 * has i >= 0. */
struct kern_cuda_argmax_order {
    __device__ bool operator()(float v, int i, float bv, int bi) const
    {
        return v > bv || (v == bv && i < bi);
    }
};

/* The best of the threads' pairs (bv, bi) under beats, a strict total order on the pairs that
 * occur, in every thread of a block of THREADS threads: a butterfly in each warp (every lane
 * ends with the same winner), then the warps in order. *m gets the winner's value. wv and wi
 * are shared slots of THREADS / 32 entries, free again on return. */
template <int THREADS, typename Beats>
static __device__ int kern_cuda_block_best(float bv, int bi, float *m, float *wv, int *wi,
                                           Beats beats)
{
    for (int off = 16; off > 0; off >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, off);
        int oi = __shfl_xor_sync(0xffffffffu, bi, off);
        if (beats(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
    if ((threadIdx.x & 31) == 0) {
        wv[threadIdx.x / 32] = bv;
        wi[threadIdx.x / 32] = bi;
    }
    __syncthreads();
    bv = wv[0];
    bi = wi[0];
    for (int w = 1; w < THREADS / 32; w++)
        if (beats(wv[w], wi[w], bv, bi)) {
            bv = wv[w];
            bi = wi[w];
        }
    __syncthreads(); /* the slots are free again */
    *m = bv;
    return bi;
}

/* The first index of the largest y[0..dim) (NaN as -inf; -1 and -inf when nothing is above
 * -inf) and in *m that value, in every thread of a block of THREADS threads (slots as
 * kern_cuda_block_best). Each thread keeps its first largest with a strict >. */
template <int THREADS>
static __device__ int kern_cuda_block_argmax(const float *y, int64_t dim, float *m, float *wv,
                                             int *wi)
{
    float bv = -INFINITY;
    int bi = -1;
    for (int64_t i = threadIdx.x; i < dim; i += THREADS)
        if (y[i] > bv) {
            bv = y[i];
            bi = (int)i;
        }
    return kern_cuda_block_best<THREADS>(bv, bi, m, wv, wi, kern_cuda_argmax_order());
}
#endif

#endif
