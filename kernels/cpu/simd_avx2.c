/* The CPU inner loops built for AVX2 + FMA (x86 only; meson picks this file), used when the
 * CPU reports both at kern_ops_init_cpu. The loop bodies live in cpu/simd.h; this file only
 * instantiates them for that target. */
#include <stdint.h>
#include <string.h>

#include "cpu.h"

/* Everything between push and pop, the inlined bodies of simd.h included, targets AVX2 + FMA;
 * the detection function after pop stays baseline so it runs on any x86 CPU. */
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "simd.h"

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

static void bf16_to_f32(const uint16_t *src, float *dst, int64_t n)
{
    simd_bf16_body(src, dst, n);
}

static void f16_to_f32(const uint16_t *src, float *dst, int64_t n)
{
    simd_f16_body(src, dst, n);
}

static float dot(const float *a, const float *b, int64_t n)
{
    return simd_dot_body(a, b, n);
}

static void axpby(float *y, float beta, float alpha, const float *x, int64_t n)
{
    simd_axpby_body(y, beta, alpha, x, n);
}
#pragma GCC pop_options

static const struct kern_cpu_isa isa = {
    .name = "avx2",
    .gemm = {[KERN_DTYPE_F32] = gemm_f32, [KERN_DTYPE_F16] = gemm_f16,
             [KERN_DTYPE_BF16] = gemm_bf16},
    .bf16_to_f32 = bf16_to_f32,
    .f16_to_f32 = f16_to_f32,
    .dot = dot,
    .axpby = axpby,
};

const struct kern_cpu_isa *kern_cpu_isa_avx2(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return &isa;
    return NULL;
}
