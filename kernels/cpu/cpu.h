/* Private interface of the fast CPU backend (kernels/cpu): the worker pool's parallel-for,
 * the per-ISA inner loops (chosen once, at kern_ops_init_cpu) and the op entry points.
 * Not a public header; the engine sees only ops.h. */
#ifndef PHISERVE_KERNELS_CPU_H
#define PHISERVE_KERNELS_CPU_H

#include <stdint.h>

#include "../ctx.h"
#include "../ops.h"

/* Number of threads a parallel-for on ctx uses (the caller included); 1 when ctx is NULL or
 * has no pool. */
int kern_cpu_n_threads(const struct kern_ctx *ctx);

/* Calls fn(arg, task, thread) once for every task in [0, n_tasks), spread over the pool's
 * threads; thread is in [0, kern_cpu_n_threads(ctx)) and no two calls running at the same time
 * share it (so it can index per-thread scratch). Returns when all calls have returned. Runs
 * everything on the calling thread when ctx is NULL or has one thread. Calls from several
 * threads on the same ctx are serialised. */
void kern_cpu_parallel_for(struct kern_ctx *ctx, int64_t n_tasks,
                           void (*fn)(void *arg, int64_t task, int thread), void *arg);

/* Scratch memory for one op call. */
struct kern_cpu_scratch {
    void *p;
    int owned;                 /* p is a fresh allocation, not ctx's buffer */
};

/* At least bytes of scratch for one op call on ctx: the buffer ctx keeps and reuses, grown
 * when too small, so that a steady stream of ops allocates nothing. With a NULL ctx, or while
 * another thread's call holds ctx's buffer, a fresh allocation. Returns NULL when out of
 * memory (then s needs no put). Give it back with kern_cpu_scratch_put before the op
 * returns. */
void *kern_cpu_scratch_get(struct kern_ctx *ctx, size_t bytes, struct kern_cpu_scratch *s);
void kern_cpu_scratch_put(struct kern_ctx *ctx, struct kern_cpu_scratch *s);

/* The inner loops that decide speed, compiled once per instruction set (cpu/simd_*.c from the
 * one body in cpu/simd.h). All pointers are caller-owned; nothing is retained. */
struct kern_cpu_isa {
    const char *name;
    /* y[i, j] += sum_t x[i, t] * w[j, t] for i < m, j < n, t < len, indexed by the dtype of
     * w (enum kern_dtype): 16-bit and block-format weights are widened in registers as they are
     * loaded (block formats: ldw and len multiples of kern_dtype_block_elems). */
    void (*gemm[KERN_DTYPE_COUNT])(const float *x, int64_t ldx, /* [m, len], row stride ldx */
                    const void *w, int64_t ldw,  /* [n, len] in the dtype, row stride ldw */
                    float *y, int64_t ldy,       /* [m, n], row stride ldy */
                    int64_t m, int64_t n, int64_t len);
    /* The int8 dot of the R16 formats (ops.h; cpu/simd_r16.h). x8_quant rounds a row of len
     * values (a multiple of KERN_QBLOCK) to q [len] with each block's scale d and sum of q s
     * [len / 32]; returns -1 when a value is not finite. gemm_r16, indexed by the R16 dtype,
     * sets out[r * 16 + c] = sum_b (dw[c, b] * d[r, b]) * sum_t w[c, b, t] q[r, b, t] for the
     * group of KERN_R16 columns at wg (nb blocks) and x rows r < mr <= KERN_CPU_R16_MR (q
     * rows ldq apart, d and s rows ldb apart); for Q6_K_R16, s holds the sums of q per 16
     * values instead, rows 2 * ldb apart. */
    int (*x8_quant)(const float *x, int64_t len, int8_t *q, float *d, int32_t *s);
    void (*gemm_r16[KERN_DTYPE_COUNT])(const int8_t *xq, const float *xd, const int32_t *xs,
                                       int64_t ldq, int64_t ldb, const uint8_t *wg, int64_t nb,
                                       float *out, int mr);
    /* dst[i] = src[i] widened to fp32, i < n: bf16 and fp16. */
    void (*bf16_to_f32)(const uint16_t *src, float *dst, int64_t n);
    void (*f16_to_f32)(const uint16_t *src, float *dst, int64_t n);
    /* n elements of a block format from the block at src (n a multiple of its block), as
     * fp32; indexed by the dtype, set for the block formats. */
    void (*block_to_f32[KERN_DTYPE_COUNT])(const void *src, float *dst, int64_t n);
    /* out[j] = scale * sum_e q[e] * k[j][e] for j < n, e < d (k: n row pointers); returns the
     * largest score, NaN scores skipped (they still reach out). */
    float (*scores)(const float *q, const float *const *k, int64_t n, int64_t d, float scale,
                    float *out);
    /* x[j] = exp(x[j] - m) for j < n (vectorised exp, ~2 ulp); returns the sum. */
    float (*exp_sum)(float *x, int64_t n, float m);
    /* acc[e] += sum_j w[j] * v[j][e] for e < d, j < n (v: n row pointers). */
    void (*wsum)(float *acc, const float *w, const float *const *v, int64_t n, int64_t d);
    /* sum_i x[i]^2 in fp32. */
    float (*sumsq)(const float *x, int64_t n);
    /* out[i] = w[i] * fp32(x[i] * inv); out may alias x. */
    void (*scale_mul)(float *out, const float *x, float inv, const float *w, int64_t n);
    /* out[i] = g[i] / (1 + exp(-g[i])) * u[i]. */
    void (*silu_mul)(float *out, const float *g, const float *u, int64_t n);
    /* x[i], x[i+h] rotated by (c[i], s[i]) for i < h (the rope pair rotation). */
    void (*rope_rot)(float *x, const float *c, const float *s, int64_t h);
    /* y[i] += x[i]. */
    void (*add)(float *y, const float *x, int64_t n);
};

#define KERN_CPU_R16_MR 4

/* The portable inner loops (GCC vector extensions at the baseline ISA). */
const struct kern_cpu_isa *kern_cpu_isa_generic(void);
/* The AVX2+FMA build of the same loops, or NULL when the CPU (or the build target) lacks it. */
const struct kern_cpu_isa *kern_cpu_isa_avx2(void);
/* The AVX-512 (F, VL, BW, DQ) build with 16-lane vectors, or NULL when the CPU lacks it. */
const struct kern_cpu_isa *kern_cpu_isa_avx512(void);
/* The same with VNNI (the int8 dot in one instruction), or NULL when the CPU lacks it. */
const struct kern_cpu_isa *kern_cpu_isa_avx512vnni(void);

/* Instruction-set levels of the op table, narrowest first. */
enum kern_cpu_level {
    KERN_CPU_LEVEL_GENERIC = 0,
    KERN_CPU_LEVEL_AVX2 = 1,
    KERN_CPU_LEVEL_AVX512 = 2,
    KERN_CPU_LEVEL_AVX512_VNNI = 3,
};

/* The widest level this CPU runs. */
enum kern_cpu_level kern_cpu_best_level(void);
/* Overrides the fast entries of ops with the build of the given level (kern_ops_init_cpu uses
 * the best one; tests force each). Returns 0, or KERN_ERR_UNSUPPORTED (ops untouched) when the
 * CPU cannot run that level. */
int kern_cpu_ops_init_level(struct kern_ops *ops, enum kern_cpu_level level);

/* Op entry points, one per level so that the table picks the inner loops at init: each op file
 * defines a static `op(ctx, p, isa)` and expands KERN_CPU_DEFINE_LEVELS after it. A level the
 * CPU lacks falls back to the next narrower one (the table never picks it, but a caller may). */
#define KERN_CPU_DECLARE_LEVELS(op, params)                                                   \
    int kern_cpu_##op##_generic(struct kern_ctx *ctx, const struct params *p);                \
    int kern_cpu_##op##_avx2(struct kern_ctx *ctx, const struct params *p);                   \
    int kern_cpu_##op##_avx512(struct kern_ctx *ctx, const struct params *p);                 \
    int kern_cpu_##op##_avx512vnni(struct kern_ctx *ctx, const struct params *p)

#define KERN_CPU_DEFINE_LEVELS(op, params)                                                    \
    int kern_cpu_##op##_generic(struct kern_ctx *ctx, const struct params *p)                 \
    {                                                                                         \
        return op(ctx, p, kern_cpu_isa_generic());                                            \
    }                                                                                         \
    int kern_cpu_##op##_avx2(struct kern_ctx *ctx, const struct params *p)                    \
    {                                                                                         \
        const struct kern_cpu_isa *isa = kern_cpu_isa_avx2();                                 \
        return op(ctx, p, isa ? isa : kern_cpu_isa_generic());                                \
    }                                                                                         \
    int kern_cpu_##op##_avx512(struct kern_ctx *ctx, const struct params *p)                  \
    {                                                                                         \
        const struct kern_cpu_isa *isa = kern_cpu_isa_avx512();                               \
        if (!isa)                                                                             \
            isa = kern_cpu_isa_avx2();                                                        \
        return op(ctx, p, isa ? isa : kern_cpu_isa_generic());                                \
    }                                                                                         \
    int kern_cpu_##op##_avx512vnni(struct kern_ctx *ctx, const struct params *p)              \
    {                                                                                         \
        const struct kern_cpu_isa *isa = kern_cpu_isa_avx512vnni();                           \
        if (!isa)                                                                             \
            isa = kern_cpu_isa_avx512();                                                      \
        if (!isa)                                                                             \
            isa = kern_cpu_isa_avx2();                                                        \
        return op(ctx, p, isa ? isa : kern_cpu_isa_generic());                                \
    }

KERN_CPU_DECLARE_LEVELS(matmul, kern_matmul_params);
KERN_CPU_DECLARE_LEVELS(attention, kern_attention_params);
KERN_CPU_DECLARE_LEVELS(rmsnorm, kern_rmsnorm_params);
KERN_CPU_DECLARE_LEVELS(rope, kern_rope_params);
KERN_CPU_DECLARE_LEVELS(silu_mul, kern_silu_mul_params);
KERN_CPU_DECLARE_LEVELS(add, kern_add_params);
KERN_CPU_DECLARE_LEVELS(embed, kern_embed_params);
KERN_CPU_DECLARE_LEVELS(layernorm, kern_layernorm_params);
KERN_CPU_DECLARE_LEVELS(bias_add, kern_bias_add_params);
/* moe drives the gemm inner loops of its level itself (not the matmul op), with one k split
 * for every row count, so that a token's result does not depend on the rest of the batch. */
KERN_CPU_DECLARE_LEVELS(moe, kern_moe_params);
/* attention_dense runs the gemm inner loops of its level for Q K^T and P V. */
KERN_CPU_DECLARE_LEVELS(attention_dense, kern_attention_dense_params);
/* gather_rows only copies rows (memcpy): one build serves every level. */
int kern_cpu_gather_rows(struct kern_ctx *ctx, const struct kern_gather_rows_params *p);
/* argmax compares floats (no SIMD build): one build serves every level, rows over the pool. */
int kern_cpu_argmax(struct kern_ctx *ctx, const struct kern_argmax_params *p);
/* act calls libm's erfcf/expf per element (no SIMD build): one build serves every level. */
int kern_cpu_act(struct kern_ctx *ctx, const struct kern_act_params *p);

#endif
