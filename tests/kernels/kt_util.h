/* Helpers shared by the kernel tests and the benchmark: a seeded RNG, canary-guarded buffers,
 * 16-bit fills and a monotonic clock. Test-only; header-only so each test stays one file. */
#ifndef PHISERVE_TESTS_KT_UTIL_H
#define PHISERVE_TESTS_KT_UTIL_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dtype.h"
#include "ops.h"

/* splitmix64: small, seeded, identical on every machine. */
struct kt_rng {
    uint64_t s;
};

static inline uint64_t kt_next(struct kt_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static inline float kt_uniform(struct kt_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)(kt_next(r) >> 11) * 0x1p-53);
}

static inline int64_t kt_below(struct kt_rng *r, int64_t n)
{
    return (int64_t)(kt_next(r) % (uint64_t)n);
}

/* Canary-guarded allocations: KT_GUARD bytes of a fixed pattern on both sides of the block.
 * kt_guard_ok says whether both sides are still intact. */
#define KT_GUARD 64
#define KT_PATTERN 0xa5

static inline void *kt_alloc(size_t bytes)
{
    unsigned char *base = malloc(bytes + 2 * KT_GUARD + sizeof(size_t));
    if (!base) {
        fprintf(stderr, "out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    memcpy(base, &bytes, sizeof bytes);
    memset(base + sizeof bytes, KT_PATTERN, KT_GUARD);
    memset(base + sizeof bytes + KT_GUARD + bytes, KT_PATTERN, KT_GUARD);
    return base + sizeof bytes + KT_GUARD;
}

static inline int kt_guard_ok(const void *p)
{
    const unsigned char *inner = p;
    const unsigned char *base = inner - KT_GUARD - sizeof(size_t);
    size_t bytes;
    memcpy(&bytes, base, sizeof bytes);
    for (size_t i = 0; i < KT_GUARD; i++)
        if (inner[-1 - (ptrdiff_t)i] != KT_PATTERN || inner[bytes + i] != KT_PATTERN)
            return 0;
    return 1;
}

static inline void kt_free(void *p)
{
    if (p)
        free((unsigned char *)p - KT_GUARD - sizeof(size_t));
}

/* n elements of dtype dt, uniform in [lo, hi), rounded to dt; also returns the fp32 values
 * (what a kernel reads back) in f when f is not NULL. */
/* Bytes of n elements of dt (n whole blocks for a block format). */
static inline size_t kt_bytes(enum kern_dtype dt, int64_t n)
{
    int64_t b = kern_dtype_row_bytes(dt, n);
    if (b < 0)
        abort();
    return (size_t)b;
}

/* n values uniform in [lo, hi) stored as dt; a block format (n a multiple of the block)
 * quantizes them with kern_quantize. */
static inline void kt_fill(struct kt_rng *r, void *dst, enum kern_dtype dt, int64_t n, float lo,
                           float hi)
{
    if (kern_dtype_block_elems(dt) == KERN_QKBLOCK) {
        /* K formats: random quants, scales and mins; d (and dmin) chosen so that elements
         * stay within about max(|lo|, |hi|). */
        size_t bytes = kt_bytes(dt, n);
        uint8_t *b = dst;
        for (size_t i = 0; i < bytes; i++)
            b[i] = (uint8_t)kt_next(r);
        float amp = fmaxf(fabsf(lo), fabsf(hi));
        size_t sb_bytes = kt_bytes(dt, KERN_QKBLOCK);
        for (size_t o = 0; o < bytes; o += sb_bytes) {
            float d = amp * kt_uniform(r, 0.25f, 1.0f) /
                      (dt == KERN_DTYPE_Q6_K ? 127.0f * 32.0f : dt == KERN_DTYPE_Q5_K ? 63.0f * 31.0f
                                                                               : 63.0f * 15.0f);
            uint16_t dh = kern_f32_to_f16(d);
            uint16_t mh = kern_f32_to_f16(amp * kt_uniform(r, 0.0f, 1.0f) / 63.0f);
            uint8_t *at = b + o + (dt == KERN_DTYPE_Q6_K ? 208 : 0);
            at[0] = (uint8_t)(dh & 0xff);
            at[1] = (uint8_t)(dh >> 8);
            if (dt != KERN_DTYPE_Q6_K) {
                at[2] = (uint8_t)(mh & 0xff);
                at[3] = (uint8_t)(mh >> 8);
            }
        }
        return;
    }
    if (dt == KERN_DTYPE_Q8_0 || dt == KERN_DTYPE_Q4_0) {
        float *tmp = malloc((size_t)(n > 0 ? n : 1) * sizeof *tmp);
        kt_fill(r, tmp, KERN_DTYPE_F32, n, lo, hi);
        if (kern_quantize(tmp, KERN_DTYPE_F32, 1, n, dt, dst) != KERN_OK)
            abort();
        free(tmp);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        float v = kt_uniform(r, lo, hi);
        if (dt == KERN_DTYPE_F32)
            ((float *)dst)[i] = v;
        else if (dt == KERN_DTYPE_BF16)
            ((uint16_t *)dst)[i] = kern_f32_to_bf16(v);
        else
            ((uint16_t *)dst)[i] = kern_f32_to_f16(v);
    }
}

/* Element i of a K-format array. Not inlined: GCC's bounds analysis at -O3 would otherwise
 * follow this branch into callers' small float arrays and refuse the build (-Warray-bounds). */
static __attribute__((noinline, unused)) float kt_get_kq(const void *src, enum kern_dtype dt, int64_t i)
{
    return kern_kq_elem(kern_dtype_kq_bits(dt),
                        (const uint8_t *)src + (i / KERN_QKBLOCK) * kt_bytes(dt, KERN_QKBLOCK),
                        (int)(i % KERN_QKBLOCK));
}

static inline float kt_get(const void *src, enum kern_dtype dt, int64_t i)
{
    if (kern_dtype_block_elems(dt) == KERN_QKBLOCK)
        return kt_get_kq(src, dt, i);
    if (dt == KERN_DTYPE_Q8_0 || dt == KERN_DTYPE_Q4_0)
        return kern_block_elem(dt == KERN_DTYPE_Q4_0,
                               (const uint8_t *)src + (i / KERN_QBLOCK) * kt_bytes(dt, KERN_QBLOCK),
                               (int)(i % KERN_QBLOCK));
    if (dt == KERN_DTYPE_F32)
        return ((const float *)src)[i];
    if (dt == KERN_DTYPE_BF16)
        return kern_bf16_to_f32(((const uint16_t *)src)[i]);
    return kern_f16_to_f32(((const uint16_t *)src)[i]);
}

/* Element i = v. A block format's element can only be made non-finite, and that poisons its
 * whole block (the block's scale becomes v); a finite v aborts. */
static inline void kt_set(void *dst, enum kern_dtype dt, int64_t i, float v)
{
    int64_t be = kern_dtype_block_elems(dt);
    if (be) {
        if (isfinite(v))
            abort();
        uint8_t *blk = (uint8_t *)dst + (i / be) * kt_bytes(dt, be) + (dt == KERN_DTYPE_Q6_K ? 208 : 0);
        uint16_t h = kern_f32_to_f16(v);
        blk[0] = (uint8_t)(h & 0xff);
        blk[1] = (uint8_t)(h >> 8);
    } else if (dt == KERN_DTYPE_F32) {
        ((float *)dst)[i] = v;
    } else if (dt == KERN_DTYPE_BF16) {
        ((uint16_t *)dst)[i] = kern_f32_to_bf16(v);
    } else {
        ((uint16_t *)dst)[i] = kern_f32_to_f16(v);
    }
}

/* The int8 dot of the R16 formats (ops.h, kern_matmul_params), written here from the words of
 * the contract and not from any kernel, for the tests to hold the kernels against. */

/* One block of KERN_QBLOCK finite x values rounded to int8: a = max|v|, d = a / 127 in fp32;
 * d below FLT_MIN makes every q 0 and d 0, else q = v * (1 / d) rounded half to even (rintf
 * in the default rounding mode). Returns d. */
static inline float kt_x8_block(const float *v, int8_t *q)
{
    float a = 0.0f;
    for (int t = 0; t < KERN_QBLOCK; t++)
        a = fmaxf(a, fabsf(v[t]));
    float d = a / 127.0f;
    if (d < FLT_MIN)
        d = 0.0f;
    float id = d == 0.0f ? 0.0f : 1.0f / d;
    for (int t = 0; t < KERN_QBLOCK; t++)
        q[t] = (int8_t)(d == 0.0f ? 0 : (int)rintf(v[t] * id));
    return d;
}

/* A finite x row of k values (whole blocks) rounded block by block: q [k], d [k / 32]. */
static inline void kt_x8_row(const float *x, int64_t k, int8_t *q, float *d)
{
    for (int64_t b = 0; b < k / KERN_QBLOCK; b++)
        d[b] = kt_x8_block(x + b * KERN_QBLOCK, q + b * KERN_QBLOCK);
}

/* Row j of a plain Q8_0, Q4_0, Q4_K, Q5_K or Q6_K matrix [*, k] (the source of an R16 one)
 * against an x row rounded by kt_x8_row: *sum = sum over blocks of (double)(dw * d) * s in
 * fp64 (Q4_K, Q5_K: of (double)(f0 * d) * s - (double)(f1 * d) * x_s, x_s the block's sum of
 * q; Q6_K: of (double)(f0 * d) * s for each 16-value half, s over its quants minus 32), block
 * by block, and *mag = the same sum of magnitudes |(dw * d) * s| (Q4_K, Q6_K: of each
 * product), the scale of every rounding error. */
static inline void kt_r16_dot(const int8_t *q, const float *d, const void *w,
                              enum kern_dtype base, int64_t j, int64_t k, double *sum,
                              double *mag)
{
    *sum = 0.0;
    *mag = 0.0;
    if (base == KERN_DTYPE_Q6_K) { /* sub-block b % 8 of 32 is two halves, own scales */
        const int64_t sbb = KERN_Q6_K_BLOCK_BYTES;
        const uint8_t *row = (const uint8_t *)w + j * (k / KERN_QKBLOCK) * sbb;
        for (int64_t b = 0; b < k / KERN_QBLOCK; b++) {
            const uint8_t *sb = row + (b / 8) * sbb;
            const int sub = (int)(b % 8);
            float f[2];
            kern_kq_factors(6, sb, sub, &f[0], &f[1]);
            for (int h = 0; h < 2; h++) {
                int64_t s = 0;
                for (int t = 16 * h; t < 16 * h + 16; t++)
                    s += (int64_t)(kern_kq_quant(6, sb, 32 * sub + t) - 32) *
                         q[b * KERN_QBLOCK + t];
                const float a = f[h] * d[b];
                *sum += (double)a * (double)s;
                *mag += fabs((double)a * (double)s);
            }
        }
        return;
    }
    if (base == KERN_DTYPE_Q4_K || base == KERN_DTYPE_Q5_K) {
        /* Block b is sub-block b % 8 of super-block b / 8, its quants and factors as dtype.h
         * decodes them from the plain super-block. */
        const int bits = kern_dtype_kq_bits(base);
        const int64_t sbb = kern_dtype_row_bytes(base, KERN_QKBLOCK);
        const uint8_t *row = (const uint8_t *)w + j * (k / KERN_QKBLOCK) * sbb;
        for (int64_t b = 0; b < k / KERN_QBLOCK; b++) {
            const uint8_t *sb = row + (b / 8) * sbb;
            const int8_t *qb = q + b * KERN_QBLOCK;
            const int sub = (int)(b % 8);
            int64_t s = 0, xs = 0;
            for (int t = 0; t < KERN_QBLOCK; t++) {
                s += (int64_t)kern_kq_quant(bits, sb, 32 * sub + t) * qb[t];
                xs += qb[t];
            }
            float f0, f1;
            kern_kq_factors(bits, sb, sub, &f0, &f1);
            const float a = f0 * d[b], c = f1 * d[b];
            *sum += (double)a * (double)s - (double)c * (double)xs;
            *mag += fabs((double)a * (double)s) + fabs((double)c * (double)xs);
        }
        return;
    }
    const int64_t bb = base == KERN_DTYPE_Q4_0 ? KERN_Q4_0_BLOCK_BYTES : KERN_Q8_0_BLOCK_BYTES;
    const uint8_t *row = (const uint8_t *)w + j * (k / KERN_QBLOCK) * bb;
    for (int64_t b = 0; b < k / KERN_QBLOCK; b++) {
        const uint8_t *blk = row + b * bb;
        const int8_t *qb = q + b * KERN_QBLOCK;
        int64_t s = 0;
        if (base == KERN_DTYPE_Q8_0)
            for (int t = 0; t < KERN_QBLOCK; t++)
                s += (int64_t)(int8_t)blk[2 + t] * qb[t];
        else
            for (int t = 0; t < KERN_QBLOCK / 2; t++)
                s += (int64_t)((blk[2 + t] & 15) - 8) * qb[t] +
                     (int64_t)((blk[2 + t] >> 4) - 8) * qb[t + KERN_QBLOCK / 2];
        float f = kern_f16_to_f32((uint16_t)(blk[0] | (blk[1] << 8))) * d[b];
        *sum += (double)f * (double)s;
        *mag += fabs((double)f * (double)s);
    }
}

/* n rows of k values in the R16 format dt: kt_fill's base-format rows (Q8_0 / Q4_0: values
 * uniform in [lo, hi) quantized; K formats: random super-blocks of about that range), then
 * kern_repack. The base-format rows go to plain (n * k elements of kern_dtype_r16_base(dt))
 * for the tests' own sums. */
static inline void kt_fill_r16(struct kt_rng *r, void *dst, void *plain, enum kern_dtype dt,
                               int64_t n, int64_t k, float lo, float hi)
{
    enum kern_dtype base = kern_dtype_r16_base(dt);
    kt_fill(r, plain, base, n * k, lo, hi);
    if (kern_repack(plain, base, n, k, dst) != KERN_OK) {
        fprintf(stderr, "kern_repack refused %s n=%lld k=%lld\n", kern_dtype_name(base),
                (long long)n, (long long)k);
        abort();
    }
}

static inline double kt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
