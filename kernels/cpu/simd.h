/* The bodies of the CPU backend's inner loops, written once with GCC vector extensions and
 * compiled per instruction set by cpu/simd_generic.c and cpu/simd_avx2.c (which set the
 * target before including this). Only those two files include it; it has no entry points. */
#ifndef PHISERVE_KERNELS_CPU_SIMD_H
#define PHISERVE_KERNELS_CPU_SIMD_H

#include <stdint.h>
#include <string.h>

#include "../dtype.h"
#include "../ops.h"

/* Eight fp32 lanes: two SSE registers at the baseline, one AVX register with AVX2. Values of
 * these types never cross a function boundary (that would change the ABI between builds). */
typedef float simd_v8f __attribute__((vector_size(32)));
typedef uint32_t simd_v8u __attribute__((vector_size(32)));
typedef int32_t simd_v8i __attribute__((vector_size(32)));
typedef uint16_t simd_v8h __attribute__((vector_size(16)));

#define SIMD_INLINE static inline __attribute__((always_inline))

/* Register tiles of the gemm: SIMD_MR rows of x against 2 rows of w, or 1 row of x against
 * 4 rows of w (decode), 8 lanes each: at most 8 accumulators, so accumulators, w vectors and
 * an x vector fit in 16 AVX registers. */
#define SIMD_MR 4
#define SIMD_NR 4

typedef float simd_v4f __attribute__((vector_size(16)));

SIMD_INLINE float simd_hsum(const simd_v8f *v)
{
    simd_v4f lo, hi;
    memcpy(&lo, v, sizeof lo);
    memcpy(&hi, (const char *)v + sizeof lo, sizeof hi);
    lo += hi;
    return (lo[0] + lo[2]) + (lo[1] + lo[3]);
}

/* Eight weights starting at element i of w, widened to fp32. dt is a compile-time constant
 * after inlining, so each instantiation keeps only its own branch. */
SIMD_INLINE void simd_load_w(enum kern_dtype dt, const void *w, int64_t i, simd_v8f *out)
{
    if (dt == KERN_DTYPE_F32) {
        memcpy(out, (const float *)w + i, sizeof *out);
        return;
    }
    simd_v8h h16;
    memcpy(&h16, (const uint16_t *)w + i, sizeof h16);
    simd_v8u h = __builtin_convertvector(h16, simd_v8u);
    if (dt == KERN_DTYPE_BF16) {
        simd_v8u u = h << 16;
        memcpy(out, &u, sizeof *out);
        return;
    }
    /* fp16 without F16C: the magnitude bits shifted into an fp32 exponent/mantissa and scaled
     * by 2^112 give every finite half exactly (subnormals included: the scaled fp32 denormal
     * is exact); exponent 31 (Inf/NaN) is patched to the fp32 Inf/NaN encoding. Bit-identical
     * to kern_f16_to_f32. */
    simd_v8u mag = (h & 0x7fffu) << 13;
    simd_v8f f = (simd_v8f)mag * 0x1p112f;
    simd_v8u fin = (simd_v8u)f;
    simd_v8u special = (simd_v8u)((h & 0x7c00u) == 0x7c00u); /* all ones where Inf/NaN */
    simd_v8u infnan = 0x7f800000u | ((h & 0x3ffu) << 13);
    simd_v8u u = (fin & ~special) | (infnan & special) | ((h & 0x8000u) << 16);
    memcpy(out, &u, sizeof *out);
}

SIMD_INLINE float simd_load_w1(enum kern_dtype dt, const void *w, int64_t i)
{
    if (dt == KERN_DTYPE_F32)
        return ((const float *)w)[i];
    if (dt == KERN_DTYPE_BF16)
        return kern_bf16_to_f32(((const uint16_t *)w)[i]);
    return kern_f16_to_f32(((const uint16_t *)w)[i]);
}

/* The mr x nr tile (mr <= SIMD_MR, nr <= SIMD_NR, mr * nr <= 8, all compile-time constants
 * after inlining): y[i, j] += sum_t x[i, t] * w[j, t]. Eight-lane partial sums, tail in
 * scalars. */
SIMD_INLINE void simd_tile(enum kern_dtype dt, int mr, int nr, const float *x, int64_t ldx,
                           const void *w, int64_t ldw, float *y, int64_t ldy, int64_t len)
{
    simd_v8f acc[SIMD_MR][SIMD_NR];
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++)
            acc[i][j] = (simd_v8f){0};
    int64_t t = 0;
    for (; t + 8 <= len; t += 8) {
        simd_v8f wv[SIMD_NR];
        for (int j = 0; j < nr; j++)
            simd_load_w(dt, w, j * ldw + t, &wv[j]);
        for (int i = 0; i < mr; i++) {
            simd_v8f xv;
            memcpy(&xv, x + i * ldx + t, sizeof xv);
            for (int j = 0; j < nr; j++)
                acc[i][j] += xv * wv[j];
        }
    }
    for (int i = 0; i < mr; i++) {
        for (int j = 0; j < nr; j++) {
            float s = simd_hsum(&acc[i][j]);
            for (int64_t u = t; u < len; u++)
                s += x[i * ldx + u] * simd_load_w1(dt, w, j * ldw + u);
            y[i * ldy + j] += s;
        }
    }
}

/* y[m, n] += x[m, len] @ w[n, len]^T with w in dt (row stride ldw elements). */
SIMD_INLINE void simd_gemm_body(enum kern_dtype dt, const float *x, int64_t ldx, const void *w,
                                int64_t ldw, float *y, int64_t ldy, int64_t m, int64_t n,
                                int64_t len)
{
    size_t es = dt == KERN_DTYPE_F32 ? 4 : 2;
    const char *wb = w;
    int64_t i = 0;
    for (; i + SIMD_MR <= m; i += SIMD_MR) {
        int64_t j = 0;
        for (; j + 2 <= n; j += 2)
            simd_tile(dt, SIMD_MR, 2, x + i * ldx, ldx, wb + (size_t)(j * ldw) * es, ldw,
                      y + i * ldy + j, ldy, len);
        for (; j < n; j++)
            simd_tile(dt, SIMD_MR, 1, x + i * ldx, ldx, wb + (size_t)(j * ldw) * es, ldw,
                      y + i * ldy + j, ldy, len);
    }
    for (; i < m; i++) {
        /* Leftover rows (and the m = 1 decode case): one x row against four w rows at a time
         * keeps four independent streams of w in flight. */
        int64_t j = 0;
        for (; j + 4 <= n; j += 4)
            simd_tile(dt, 1, 4, x + i * ldx, ldx, wb + (size_t)(j * ldw) * es, ldw,
                      y + i * ldy + j, ldy, len);
        for (; j < n; j++)
            simd_tile(dt, 1, 1, x + i * ldx, ldx, wb + (size_t)(j * ldw) * es, ldw,
                      y + i * ldy + j, ldy, len);
    }
}

SIMD_INLINE void simd_bf16_body(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        simd_v8h h;
        memcpy(&h, src + i, sizeof h);
        simd_v8u u = __builtin_convertvector(h, simd_v8u) << 16;
        memcpy(dst + i, &u, sizeof u);
    }
    for (; i < n; i++)
        dst[i] = kern_bf16_to_f32(src[i]);
}

SIMD_INLINE void simd_f16_body(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        simd_v8f f;
        simd_load_w(KERN_DTYPE_F16, src, i, &f);
        memcpy(dst + i, &f, sizeof f);
    }
    for (; i < n; i++)
        dst[i] = kern_f16_to_f32(src[i]);
}

SIMD_INLINE float simd_dot_body(const float *a, const float *b, int64_t n)
{
    simd_v8f acc0 = {0}, acc1 = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        simd_v8f a0, a1, b0, b1;
        memcpy(&a0, a + i, sizeof a0);
        memcpy(&a1, a + i + 8, sizeof a1);
        memcpy(&b0, b + i, sizeof b0);
        memcpy(&b1, b + i + 8, sizeof b1);
        acc0 += a0 * b0;
        acc1 += a1 * b1;
    }
    for (; i + 8 <= n; i += 8) {
        simd_v8f a0, b0;
        memcpy(&a0, a + i, sizeof a0);
        memcpy(&b0, b + i, sizeof b0);
        acc0 += a0 * b0;
    }
    acc0 += acc1;
    float s = simd_hsum(&acc0);
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

SIMD_INLINE void simd_axpby_body(float *y, float beta, float alpha, const float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        simd_v8f yv, xv;
        memcpy(&yv, y + i, sizeof yv);
        memcpy(&xv, x + i, sizeof xv);
        yv = yv * beta + alpha * xv;
        memcpy(y + i, &yv, sizeof yv);
    }
    for (; i < n; i++)
        y[i] = y[i] * beta + alpha * x[i];
}

#endif
