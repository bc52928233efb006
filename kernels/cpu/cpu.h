/* Private interface of the fast CPU backend (kernels/cpu): the worker pool's parallel-for,
 * the per-ISA inner loops (chosen once, at kern_ops_init_cpu) and the op entry points.
 * Not a public header; the engine sees only ops.h. */
#ifndef PHISERVE_KERNELS_CPU_H
#define PHISERVE_KERNELS_CPU_H

#include <stdint.h>

#include "../ctx.h"

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

/* The inner loops that decide speed, compiled once per instruction set (cpu/simd_*.c from the
 * one body in cpu/simd.h). All pointers are caller-owned; nothing is retained. */
struct kern_cpu_isa {
    const char *name;
    /* y[i, j] += sum_t x[i, t] * w[j, t] for i < m, j < n, t < len, indexed by the dtype of
     * w (enum kern_dtype): 16-bit weights are widened in registers as they are loaded. */
    void (*gemm[3])(const float *x, int64_t ldx, /* [m, len], row stride ldx */
                    const void *w, int64_t ldw,  /* [n, len] in the dtype, row stride ldw */
                    float *y, int64_t ldy,       /* [m, n], row stride ldy */
                    int64_t m, int64_t n, int64_t len);
    /* dst[i] = src[i] widened to fp32, i < n: bf16 and fp16. */
    void (*bf16_to_f32)(const uint16_t *src, float *dst, int64_t n);
    void (*f16_to_f32)(const uint16_t *src, float *dst, int64_t n);
    /* sum_i a[i] * b[i] in fp32. */
    float (*dot)(const float *a, const float *b, int64_t n);
    /* y[i] = y[i] * beta + alpha * x[i]. */
    void (*axpby)(float *y, float beta, float alpha, const float *x, int64_t n);
};

/* The portable inner loops (GCC vector extensions at the baseline ISA). */
const struct kern_cpu_isa *kern_cpu_isa_generic(void);
/* The AVX2+FMA build of the same loops, or NULL when the CPU (or the build target) lacks it. */
const struct kern_cpu_isa *kern_cpu_isa_avx2(void);

/* Op entry points, one per ISA so that the table picks the inner loops at init. */
int kern_cpu_matmul_generic(struct kern_ctx *ctx, const struct kern_matmul_params *p);
int kern_cpu_matmul_avx2(struct kern_ctx *ctx, const struct kern_matmul_params *p);
int kern_cpu_attention_generic(struct kern_ctx *ctx, const struct kern_attention_params *p);
int kern_cpu_attention_avx2(struct kern_ctx *ctx, const struct kern_attention_params *p);

#endif
