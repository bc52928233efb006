/* The entry points of one instruction-set build of the CPU inner loops: thin wrappers around
 * the bodies of cpu/simd.h and the struct kern_cpu_isa that lists them (named by SIMD_NAME).
 * Included once by each cpu/simd_<isa>.c after it has set the target; not a public header. */
#ifndef PHISERVE_KERNELS_CPU_SIMD_ENTRIES_H
#define PHISERVE_KERNELS_CPU_SIMD_ENTRIES_H

#include "cpu.h"
#include "simd.h"
#include "simd_r16.h"

static void gemm_f32(const float *x, int64_t ldx, const void *w, int64_t ldw, float *y,
                     int64_t ldy, int64_t m, int64_t n, int64_t len)
{
    simd_gemm_body(KERN_DTYPE_F32, x, ldx, w, ldw, y, ldy, m, n, len);
}

static void gemm_bf16(const float *x, int64_t ldx, const void *w, int64_t ldw, float *y,
                      int64_t ldy, int64_t m, int64_t n, int64_t len)
{
    simd_gemm_body(KERN_DTYPE_BF16, x, ldx, w, ldw, y, ldy, m, n, len);
}

static void gemm_f16(const float *x, int64_t ldx, const void *w, int64_t ldw, float *y,
                     int64_t ldy, int64_t m, int64_t n, int64_t len)
{
    simd_gemm_body(KERN_DTYPE_F16, x, ldx, w, ldw, y, ldy, m, n, len);
}

static void gemm_q8_0(const float *x, int64_t ldx, const void *w, int64_t ldw, float *y,
                      int64_t ldy, int64_t m, int64_t n, int64_t len)
{
    simd_gemm_body(KERN_DTYPE_Q8_0, x, ldx, w, ldw, y, ldy, m, n, len);
}

static void gemm_q4_0(const float *x, int64_t ldx, const void *w, int64_t ldw, float *y,
                      int64_t ldy, int64_t m, int64_t n, int64_t len)
{
    simd_gemm_body(KERN_DTYPE_Q4_0, x, ldx, w, ldw, y, ldy, m, n, len);
}

static void gemm_q4_k(const float *x, int64_t ldx, const void *w, int64_t ldw, float *y,
                      int64_t ldy, int64_t m, int64_t n, int64_t len)
{
    simd_gemm_body(KERN_DTYPE_Q4_K, x, ldx, w, ldw, y, ldy, m, n, len);
}

static void gemm_q5_k(const float *x, int64_t ldx, const void *w, int64_t ldw, float *y,
                      int64_t ldy, int64_t m, int64_t n, int64_t len)
{
    simd_gemm_body(KERN_DTYPE_Q5_K, x, ldx, w, ldw, y, ldy, m, n, len);
}

static void gemm_q6_k(const float *x, int64_t ldx, const void *w, int64_t ldw, float *y,
                      int64_t ldy, int64_t m, int64_t n, int64_t len)
{
    simd_gemm_body(KERN_DTYPE_Q6_K, x, ldx, w, ldw, y, ldy, m, n, len);
}

static int x8_quant(const float *x, int64_t len, int8_t *q, float *d, int32_t *s)
{
    return simd_x8_body(x, len, q, d, s);
}

static void gemm_q8_0_r16(const int8_t *xq, const float *xd, const int32_t *xs, int64_t ldq,
                          int64_t ldb, const uint8_t *wg, int64_t nb, float *out, int mr)
{
    simd_r16_body(KERN_DTYPE_Q8_0_R16, xq, xd, xs, ldq, ldb, wg, nb, out, mr);
}

static void gemm_q4_0_r16(const int8_t *xq, const float *xd, const int32_t *xs, int64_t ldq,
                          int64_t ldb, const uint8_t *wg, int64_t nb, float *out, int mr)
{
    simd_r16_body(KERN_DTYPE_Q4_0_R16, xq, xd, xs, ldq, ldb, wg, nb, out, mr);
}

static void gemm_q4_k_r16(const int8_t *xq, const float *xd, const int32_t *xs, int64_t ldq,
                          int64_t ldb, const uint8_t *wg, int64_t nb, float *out, int mr)
{
    simd_r16_body(KERN_DTYPE_Q4_K_R16, xq, xd, xs, ldq, ldb, wg, nb, out, mr);
}

static void gemm_q5_k_r16(const int8_t *xq, const float *xd, const int32_t *xs, int64_t ldq,
                          int64_t ldb, const uint8_t *wg, int64_t nb, float *out, int mr)
{
    simd_r16_body(KERN_DTYPE_Q5_K_R16, xq, xd, xs, ldq, ldb, wg, nb, out, mr);
}

static void gemm_q6_k_r16(const int8_t *xq, const float *xd, const int32_t *xs, int64_t ldq,
                          int64_t ldb, const uint8_t *wg, int64_t nb, float *out, int mr)
{
    simd_r16_body(KERN_DTYPE_Q6_K_R16, xq, xd, xs, ldq, ldb, wg, nb, out, mr);
}

static void q8_0_to_f32(const void *src, float *dst, int64_t n)
{
    simd_block_body(KERN_DTYPE_Q8_0, src, dst, n);
}

static void q4_0_to_f32(const void *src, float *dst, int64_t n)
{
    simd_block_body(KERN_DTYPE_Q4_0, src, dst, n);
}

static void q4_k_to_f32(const void *src, float *dst, int64_t n)
{
    simd_kq_body(KERN_DTYPE_Q4_K, src, dst, n);
}

static void q5_k_to_f32(const void *src, float *dst, int64_t n)
{
    simd_kq_body(KERN_DTYPE_Q5_K, src, dst, n);
}

static void q6_k_to_f32(const void *src, float *dst, int64_t n)
{
    simd_kq_body(KERN_DTYPE_Q6_K, src, dst, n);
}

static void bf16_to_f32(const uint16_t *src, float *dst, int64_t n)
{
    simd_bf16_body(src, dst, n);
}

static void f16_to_f32(const uint16_t *src, float *dst, int64_t n)
{
    simd_f16_body(src, dst, n);
}

static float scores(const float *q, const float *const *k, int64_t n, int64_t d, float scale,
                    float *out)
{
    return simd_scores_body(q, k, n, d, scale, out);
}

static float exp_sum(float *x, int64_t n, float m)
{
    return simd_exp_sum_body(x, n, m);
}

static void wsum(float *acc, const float *w, const float *const *v, int64_t n, int64_t d)
{
    simd_wsum_body(acc, w, v, n, d);
}

static float sumsq(const float *x, int64_t n)
{
    return simd_sumsq_body(x, n);
}

static void scale_mul(float *out, const float *x, float inv, const float *w, int64_t n)
{
    simd_scale_mul_body(out, x, inv, w, n);
}

static void silu_mul(float *out, const float *g, const float *u, int64_t n)
{
    simd_silu_mul_body(out, g, u, n);
}

static void rope_rot(float *x, const float *c, const float *s, int64_t h)
{
    simd_rope_rot_body(x, c, s, h);
}

static void add(float *y, const float *x, int64_t n)
{
    simd_add_body(y, x, n);
}

static const struct kern_cpu_isa isa = {
    .name = SIMD_NAME,
    .gemm = {[KERN_DTYPE_F32] = gemm_f32, [KERN_DTYPE_F16] = gemm_f16,
             [KERN_DTYPE_BF16] = gemm_bf16, [KERN_DTYPE_Q8_0] = gemm_q8_0,
             [KERN_DTYPE_Q4_0] = gemm_q4_0, [KERN_DTYPE_Q4_K] = gemm_q4_k,
             [KERN_DTYPE_Q5_K] = gemm_q5_k, [KERN_DTYPE_Q6_K] = gemm_q6_k},
    .block_to_f32 = {[KERN_DTYPE_Q8_0] = q8_0_to_f32, [KERN_DTYPE_Q4_0] = q4_0_to_f32,
                     [KERN_DTYPE_Q4_K] = q4_k_to_f32, [KERN_DTYPE_Q5_K] = q5_k_to_f32,
                     [KERN_DTYPE_Q6_K] = q6_k_to_f32},
    .x8_quant = x8_quant,
    .gemm_r16 = {[KERN_DTYPE_Q8_0_R16] = gemm_q8_0_r16, [KERN_DTYPE_Q4_0_R16] = gemm_q4_0_r16,
                 [KERN_DTYPE_Q4_K_R16] = gemm_q4_k_r16, [KERN_DTYPE_Q5_K_R16] = gemm_q5_k_r16,
                 [KERN_DTYPE_Q6_K_R16] = gemm_q6_k_r16},
    .bf16_to_f32 = bf16_to_f32,
    .f16_to_f32 = f16_to_f32,
    .scores = scores,
    .exp_sum = exp_sum,
    .wsum = wsum,
    .sumsq = sumsq,
    .scale_mul = scale_mul,
    .silu_mul = silu_mul,
    .rope_rot = rope_rot,
    .add = add,
};

#endif
