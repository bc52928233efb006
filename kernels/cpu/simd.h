/* The bodies of the CPU backend's inner loops, written once with GCC vector extensions and
 * compiled per instruction set through cpu/simd_entries.h by cpu/simd_generic.c, simd_avx2.c
 * and simd_avx512.c (which set the target and lane count first). It has no entry points. */
#ifndef PHISERVE_KERNELS_CPU_SIMD_H
#define PHISERVE_KERNELS_CPU_SIMD_H

#include <stdint.h>
#include <string.h>

#include "../dtype.h"
#include "../ops.h"

/* SIMD_L fp32 lanes (8 unless the including file sets 16): two SSE registers at the
 * baseline, one AVX register with AVX2, one AVX-512 register with 16. Values of these types
 * never cross a function boundary (that would change the ABI between builds). */
#ifndef SIMD_L
#define SIMD_L 8
#endif
typedef float simd_vf __attribute__((vector_size(4 * SIMD_L)));
typedef uint32_t simd_vu __attribute__((vector_size(4 * SIMD_L)));
typedef int32_t simd_vi __attribute__((vector_size(4 * SIMD_L)));
typedef uint16_t simd_vh __attribute__((vector_size(2 * SIMD_L)));

#define SIMD_INLINE static inline __attribute__((always_inline))

/* Register tiles of the gemm: SIMD_MR rows of x against SIMD_PNR rows of w, or 1 row of x
 * against SIMD_DNR rows of w (decode), SIMD_L lanes each. With 16 registers (AVX2) at most 8
 * accumulators fit beside the w vectors and an x vector (4 x 2, 1 x 4); the 32 registers of
 * AVX-512 hold a 4 x 4 tile, which halves the loads per multiply-add, and 1 x 8 for decode,
 * which keeps eight streams of w in flight (measured: ~1.7x prefill, ~1.2x decode over 4 x 2
 * and 1 x 4 at 16 lanes on a Zen 4 VM). */
#define SIMD_MR 4
#define SIMD_NR 8
#if SIMD_L == 16
#define SIMD_PNR 4
#define SIMD_DNR 8
#else
#define SIMD_PNR 2
#define SIMD_DNR 4
#endif
/* Software prefetch distance of the decode tile, in bytes ahead of each w row's loads, for
 * 16-bit and for block-format weights. */
#ifndef SIMD_PF
#define SIMD_PF 2048
#endif
#ifndef SIMD_PF_BLOCK
#define SIMD_PF_BLOCK 256
#endif

/* Decode reads W once, nr rows (row_bytes apart) in step: row j of the tile at byte pos asks
 * for the byte dist ahead, and past the end of its row for the row nr further on, which the
 * next tile reads. A task's rows are contiguous, so without the wrap the first loads of every
 * tile miss; with it, Q4_0/Q8_0 decode over weights in memory ran 1.3-1.4x faster (rows of
 * 1.7-3.3 KB for k = 3072). A prefetch never faults, so one past the matrix is harmless. */
SIMD_INLINE void simd_prefetch_ahead(const void *w, size_t row_bytes, int j, int nr, size_t pos,
                                     size_t dist)
{
    size_t at = pos + dist;
    size_t row = (size_t)j;
    if (at >= row_bytes) {
        at -= row_bytes;
        row += (size_t)nr;
    }
    __builtin_prefetch((const char *)w + row * row_bytes + at);
}

typedef float simd_v4f __attribute__((vector_size(16)));

SIMD_INLINE float simd_hsum(const simd_vf *v)
{
    simd_v4f part[SIMD_L / 4];
    memcpy(part, v, sizeof part);
    for (int w = SIMD_L / 4; w > 1; w /= 2)
        for (int i = 0; i < w / 2; i++)
            part[i] += part[i + w / 2];
    return (part[0][0] + part[0][2]) + (part[0][1] + part[0][3]);
}

/* SIMD_L int8 values widened to fp32. GCC turns __builtin_convertvector from int8 lanes (and
 * the equivalent loop) into scalar code, so the x86 builds name the sign-extension and the
 * conversion (one instruction each); the pragma target of simd_avx2.c / simd_avx512.c
 * defines the macros tested here. */
#if SIMD_L == 16 && defined(__AVX512F__)
#include <immintrin.h>
SIMD_INLINE void simd_i8_to_f32(const int8_t *p, simd_vf *out)
{
    __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
    memcpy(out, &f, sizeof *out);
}
#elif SIMD_L == 8 && defined(__AVX2__)
#include <immintrin.h>
SIMD_INLINE void simd_i8_to_f32(const int8_t *p, simd_vf *out)
{
    __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
    memcpy(out, &f, sizeof *out);
}
#else
SIMD_INLINE void simd_i8_to_f32(const int8_t *p, simd_vf *out)
{
    for (int l = 0; l < SIMD_L; l++)
        (*out)[l] = (float)p[l];
}
#endif

/* SIMD_L 4-bit values of a Q4_0 block minus 8, widened to fp32: the low nibbles of the
 * SIMD_L bytes at p, or their high nibbles. */
#if SIMD_L == 16 && defined(__AVX512F__)
SIMD_INLINE void simd_u4_to_f32(const uint8_t *p, int high, simd_vf *out)
{
    __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
    v = high ? _mm512_srli_epi32(v, 4) : _mm512_and_si512(v, _mm512_set1_epi32(15));
    __m512 f = _mm512_cvtepi32_ps(_mm512_sub_epi32(v, _mm512_set1_epi32(8)));
    memcpy(out, &f, sizeof *out);
}
#elif SIMD_L == 8 && defined(__AVX2__)
SIMD_INLINE void simd_u4_to_f32(const uint8_t *p, int high, simd_vf *out)
{
    __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    v = high ? _mm256_srli_epi32(v, 4) : _mm256_and_si256(v, _mm256_set1_epi32(15));
    __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(v, _mm256_set1_epi32(8)));
    memcpy(out, &f, sizeof *out);
}
#else
SIMD_INLINE void simd_u4_to_f32(const uint8_t *p, int high, simd_vf *out)
{
    for (int l = 0; l < SIMD_L; l++)
        (*out)[l] = (float)((high ? p[l] >> 4 : p[l] & 15) - 8);
}
#endif

/* The scale of a Q8_0 or Q4_0 block (ops.h), widened to fp32: one instruction with F16C (the x86
 * builds' targets include it), else dtype.h's exact conversion. */
#if defined(__F16C__)
SIMD_INLINE float simd_block_scale(const uint8_t *blk)
{
    return _cvtsh_ss((unsigned short)(blk[0] | (blk[1] << 8)));
}
#else
SIMD_INLINE float simd_block_scale(const uint8_t *blk)
{
    return kern_f16_to_f32((uint16_t)(blk[0] | (blk[1] << 8)));
}
#endif

/* SIMD_L Q4_0 weights d (q - 8) of one block: the low nibbles of the SIMD_L bytes at p, or
 * their high nibbles. With AVX-512 they are looked up in the block's table d * (-8 .. 7)
 * (simd_q4_table; one permute instead of a subtraction, a conversion and a multiply, and the
 * same exact products); elsewhere computed, the table unused. */
#if SIMD_L == 16 && defined(__AVX512F__)
SIMD_INLINE void simd_q4_table(float d, simd_vf *tab)
{
    static const float steps[16] = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
    memcpy(tab, steps, sizeof *tab);
    *tab *= d;
}
SIMD_INLINE void simd_q4_weights(const uint8_t *p, int high, float d, const simd_vf *tab,
                                 simd_vf *out)
{
    (void)d;
    __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
    if (high) /* the permute reads only the low 4 bits of each index: no mask for low nibbles */
        v = _mm512_srli_epi32(v, 4);
    __m512 t;
    memcpy(&t, tab, sizeof t);
    __m512 f = _mm512_permutexvar_ps(v, t);
    memcpy(out, &f, sizeof *out);
}
#else
SIMD_INLINE void simd_q4_table(float d, simd_vf *tab)
{
    (void)d;
    (void)tab;
}
SIMD_INLINE void simd_q4_weights(const uint8_t *p, int high, float d, const simd_vf *tab,
                                 simd_vf *out)
{
    (void)tab;
    simd_u4_to_f32(p, high, out);
    *out *= d;
}
#endif


/* Byte offset of element i of an array of dt; for a block format, of the block holding it. */
SIMD_INLINE size_t simd_w_bytes(enum kern_dtype dt, int64_t i)
{
    switch (dt) {
    case KERN_DTYPE_Q8_0:
        return (size_t)((uint64_t)i / KERN_QBLOCK) * KERN_Q8_0_BLOCK_BYTES;
    case KERN_DTYPE_Q4_0:
        return (size_t)((uint64_t)i / KERN_QBLOCK) * KERN_Q4_0_BLOCK_BYTES;
    case KERN_DTYPE_Q4_K:
        return (size_t)((uint64_t)i / KERN_QKBLOCK) * KERN_Q4_K_BLOCK_BYTES;
    case KERN_DTYPE_Q5_K:
        return (size_t)((uint64_t)i / KERN_QKBLOCK) * KERN_Q5_K_BLOCK_BYTES;
    case KERN_DTYPE_Q6_K:
        return (size_t)((uint64_t)i / KERN_QKBLOCK) * KERN_Q6_K_BLOCK_BYTES;
    default:
        return (size_t)i * (dt == KERN_DTYPE_F32 ? 4 : 2);
    }
}

/* SIMD_L weights starting at element i of w, widened to fp32. dt is a compile-time constant
 * after inlining, so each instantiation keeps only its own branch. A Q8_0 vector never
 * straddles blocks (SIMD_L divides KERN_QBLOCK and i is a multiple of SIMD_L). */
SIMD_INLINE void simd_load_w(enum kern_dtype dt, const void *w, int64_t i, simd_vf *out)
{
    if (dt == KERN_DTYPE_Q8_0 || dt == KERN_DTYPE_Q4_0) {
        const uint8_t *blk = (const uint8_t *)w + simd_w_bytes(dt, i);
        int e = (int)((uint64_t)i % KERN_QBLOCK);
        if (dt == KERN_DTYPE_Q8_0)
            simd_i8_to_f32((const int8_t *)(blk + 2 + e), out);
        else
            simd_u4_to_f32(blk + 2 + e % (KERN_QBLOCK / 2), e >= KERN_QBLOCK / 2, out);
        *out *= simd_block_scale(blk);
        return;
    }
    if (dt == KERN_DTYPE_F32) {
        memcpy(out, (const float *)w + i, sizeof *out);
        return;
    }
    simd_vh h16;
    memcpy(&h16, (const uint16_t *)w + i, sizeof h16);
    simd_vu h = __builtin_convertvector(h16, simd_vu);
    if (dt == KERN_DTYPE_BF16) {
        simd_vu u = h << 16;
        memcpy(out, &u, sizeof *out);
        return;
    }
    /* fp16 without F16C: the magnitude bits shifted into an fp32 exponent/mantissa and scaled
     * by 2^112 give every finite half exactly (subnormals included: the scaled fp32 denormal
     * is exact); exponent 31 (Inf/NaN) is patched to the fp32 Inf/NaN encoding. Bit-identical
     * to kern_f16_to_f32. */
    simd_vu mag = (h & 0x7fffu) << 13;
    simd_vf f = (simd_vf)mag * 0x1p112f;
    simd_vu fin = (simd_vu)f;
    simd_vu special = (simd_vu)((h & 0x7c00u) == 0x7c00u); /* all ones where Inf/NaN */
    simd_vu infnan = 0x7f800000u | ((h & 0x3ffu) << 13);
    simd_vu u = (fin & ~special) | (infnan & special) | ((h & 0x8000u) << 16);
    memcpy(out, &u, sizeof *out);
}

SIMD_INLINE float simd_load_w1(enum kern_dtype dt, const void *w, int64_t i)
{
    if (dt == KERN_DTYPE_Q8_0 || dt == KERN_DTYPE_Q4_0)
        return kern_block_elem(dt == KERN_DTYPE_Q4_0, (const uint8_t *)w + simd_w_bytes(dt, i),
                               (int)((uint64_t)i % KERN_QBLOCK));
    if (dt == KERN_DTYPE_F32)
        return ((const float *)w)[i];
    if (dt == KERN_DTYPE_BF16)
        return kern_bf16_to_f32(((const uint16_t *)w)[i]);
    return kern_f16_to_f32(((const uint16_t *)w)[i]);
}

/* The accumulators of an mr x nr register tile: zeroed, and added lane-summed to y. */
SIMD_INLINE void simd_acc_zero(simd_vf (*acc)[SIMD_NR], int mr, int nr)
{
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++)
            acc[i][j] = (simd_vf){0};
}

SIMD_INLINE void simd_acc_add_to(simd_vf (*acc)[SIMD_NR], int mr, int nr, float *y, int64_t ldy)
{
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++)
            y[i * ldy + j] += simd_hsum(&acc[i][j]);
}

/* The mr x nr tile (mr <= SIMD_MR, nr <= SIMD_NR, all compile-time constants
 * after inlining): y[i, j] += sum_t x[i, t] * w[j, t]. SIMD_L-lane partial sums, tail in
 * scalars. */
SIMD_INLINE void simd_tile(enum kern_dtype dt, int mr, int nr, const float *x, int64_t ldx,
                           const void *w, int64_t ldw, float *y, int64_t ldy, int64_t len)
{
    simd_vf acc[SIMD_MR][SIMD_NR];
    simd_acc_zero(acc, mr, nr);
    int64_t t = 0;
    for (; t + SIMD_L <= len; t += SIMD_L) {
        simd_vf wv[SIMD_NR];
        for (int j = 0; j < nr; j++) {
            if (mr == 1)
                simd_prefetch_ahead(w, simd_w_bytes(dt, ldw), j, nr, simd_w_bytes(dt, t), SIMD_PF);
            simd_load_w(dt, w, j * ldw + t, &wv[j]);
        }
        for (int i = 0; i < mr; i++) {
            simd_vf xv;
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

/* simd_tile for the block formats (len and ldw multiples of KERN_QBLOCK): the same products
 * summed in the same order as simd_tile (so the same bits as a row widened into an fp32 panel
 * first), with each block's scale widened once for its SIMD_L-lane vectors. */
SIMD_INLINE void simd_tile_block(enum kern_dtype dt, int mr, int nr, const float *x, int64_t ldx,
                                 const void *w, int64_t ldw, float *y, int64_t ldy, int64_t len)
{
    simd_vf acc[SIMD_MR][SIMD_NR];
    simd_acc_zero(acc, mr, nr);
    const uint8_t *wb = w;
    size_t row_bytes = simd_w_bytes(dt, ldw);
    for (int64_t t = 0; t < len; t += KERN_QBLOCK) {
        const uint8_t *blk = wb + simd_w_bytes(dt, t);
        float d[SIMD_NR];
        simd_vf tab[SIMD_NR]; /* Q4_0's lookup tables (simd_q4_table) */
        for (int j = 0; j < nr; j++) {
            if (mr == 1)
                simd_prefetch_ahead(wb, row_bytes, j, nr, (size_t)(blk - wb), SIMD_PF_BLOCK);
            d[j] = simd_block_scale(blk + (size_t)j * row_bytes);
            if (dt == KERN_DTYPE_Q4_0)
                simd_q4_table(d[j], &tab[j]);
        }
        for (int u = 0; u < KERN_QBLOCK; u += SIMD_L) {
            simd_vf wv[SIMD_NR];
            for (int j = 0; j < nr; j++) {
                const uint8_t *v = blk + (size_t)j * row_bytes + 2;
                if (dt == KERN_DTYPE_Q8_0) {
                    simd_i8_to_f32((const int8_t *)v + u, &wv[j]);
                    wv[j] *= d[j];
                } else {
                    simd_q4_weights(v + u % (KERN_QBLOCK / 2), u >= KERN_QBLOCK / 2, d[j],
                                    &tab[j], &wv[j]);
                }
            }
            for (int i = 0; i < mr; i++) {
                simd_vf xv;
                memcpy(&xv, x + i * ldx + t + u, sizeof xv);
                for (int j = 0; j < nr; j++)
                    acc[i][j] += xv * wv[j];
            }
        }
    }
    simd_acc_add_to(acc, mr, nr, y, ldy);
}

/* ---- The K formats (ops.h) ----------------------------------------------------------- */

SIMD_INLINE int simd_is_kq(enum kern_dtype dt)
{
    return dt == KERN_DTYPE_Q4_K || dt == KERN_DTYPE_Q5_K || dt == KERN_DTYPE_Q6_K;
}

typedef uint8_t simd_vb __attribute__((vector_size(16)));
typedef uint16_t simd_vw __attribute__((vector_size(16)));

/* The 16 bytes at p, and byte lanes as int32 / fp32 lanes: SIMD_L of v's bytes from byte off
 * (0, or 8 with SIMD_L 8), zero-extended. */
SIMD_INLINE void simd_vb_load(const uint8_t *p, simd_vb *v)
{
    memcpy(v, p, sizeof *v);
}
#if SIMD_L == 16 && defined(__AVX512F__)
SIMD_INLINE void simd_vb_to_vi(const simd_vb *v, int off, simd_vi *out)
{
    (void)off;
    __m128i b;
    memcpy(&b, v, sizeof b);
    __m512i w = _mm512_cvtepu8_epi32(b);
    memcpy(out, &w, sizeof *out);
}
#elif SIMD_L == 8 && defined(__AVX2__)
SIMD_INLINE void simd_vb_to_vi(const simd_vb *v, int off, simd_vi *out)
{
    __m128i b;
    memcpy(&b, v, sizeof b);
    if (off)
        b = _mm_unpackhi_epi64(b, b);
    __m256i w = _mm256_cvtepu8_epi32(b);
    memcpy(out, &w, sizeof *out);
}
#else
SIMD_INLINE void simd_vb_to_vi(const simd_vb *v, int off, simd_vi *out)
{
    for (int l = 0; l < SIMD_L; l++)
        (*out)[l] = (*v)[off + l];
}
#endif

/* f[i] = (i < 8 ? d0 : d1) * the byte v[i] (int8 when is_signed, else uint8), i < 16: exact
 * products. */
#if SIMD_L == 16 && defined(__AVX512F__)
SIMD_INLINE void simd_vb_to_f32x16(const simd_vb *v, int is_signed, float d0, float d1, float *f)
{
    __m128i b;
    memcpy(&b, v, sizeof b);
    __m512 x = _mm512_cvtepi32_ps(is_signed ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b));
    __m512 d = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(d0), _mm512_set1_ps(d1));
    _mm512_storeu_ps(f, _mm512_mul_ps(d, x));
}
#elif SIMD_L == 8 && defined(__AVX2__)
SIMD_INLINE void simd_vb_to_f32x16(const simd_vb *v, int is_signed, float d0, float d1, float *f)
{
    __m128i b[2];
    memcpy(&b[0], v, sizeof b[0]);
    b[1] = _mm_unpackhi_epi64(b[0], b[0]);
    for (int h = 0; h < 2; h++) {
        __m256 x = _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(b[h]) : _mm256_cvtepu8_epi32(b[h]));
        _mm256_storeu_ps(f + 8 * h, _mm256_mul_ps(_mm256_set1_ps(h ? d1 : d0), x));
    }
}
#else
SIMD_INLINE void simd_vb_to_f32x16(const simd_vb *v, int is_signed, float d0, float d1, float *f)
{
    for (int i = 0; i < 16; i++)
        f[i] = (i < 8 ? d0 : d1) * (is_signed ? (float)(int8_t)(*v)[i] : (float)(*v)[i]);
}
#endif

/* The factors of every sub-block of the super-block b, each an exact product: Q4_K / Q5_K
 * f[j] = d * scale_j and f[8 + j] = dmin * min_j (j < 8, the six-bit pairs unpacked as
 * kern_k_scale_min does, all sixteen at once); Q6_K f[i] = d * scale_i for its sixteen
 * 16-element halves. */
SIMD_INLINE void simd_kq_factors(enum kern_dtype dt, const uint8_t *b, float *f)
{
    simd_vb v;
    float d0, d1;
    if (dt == KERN_DTYPE_Q6_K) {
        simd_vb_load(b + 192, &v);
        d0 = simd_block_scale(b + 208);
        simd_vb_to_f32x16(&v, 1, d0, d0, f);
        return;
    }
    simd_vb_load(b + 4, &v); /* the 12 bytes and 4 of what follows them in the block, unused */
    /* Lanes 0-7 the scales, 8-15 the mins: low bits from bytes A (masked, or the high nibble
     * for mins 4-7), bits 4-5 from the top of bytes B for pairs 4-7. */
    const simd_vb ia = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11};
    const simd_vb ib = {0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0, 0, 4, 5, 6, 7};
    const simd_vb ma = {63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0};
    const simd_vb mn = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15};
    const simd_vb mb = {0, 0, 0, 0, 0x30, 0x30, 0x30, 0x30, 0, 0, 0, 0, 0x30, 0x30, 0x30, 0x30};
    simd_vb a = __builtin_shuffle(v, ia), hb = __builtin_shuffle(v, ib);
    simd_vb sm = (a & ma) | ((simd_vb)((simd_vw)a >> 4) & mn) | ((simd_vb)((simd_vw)hb >> 2) & mb);
    d0 = simd_block_scale(b);
    d1 = simd_block_scale(b + 2);
    simd_vb_to_f32x16(&sm, 0, d0, d1, f);
}

/* Q4_K's values of one sub-block, f0 * q - f1 for q = 0..15, for the AVX-512 lookup (as
 * simd_q4_table; each entry is the reference's own two operations); unused elsewhere. Q5_K's
 * 32 values would take two tables for only two vectors of lookups, no fewer operations than
 * computing them, and registers the decode tile needs. */
#if SIMD_L == 16 && defined(__AVX512F__)
SIMD_INLINE void simd_kq_table(enum kern_dtype dt, float f0, float f1, simd_vf *tab)
{
    static const float steps[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    if (dt != KERN_DTYPE_Q4_K)
        return;
    memcpy(tab, steps, sizeof *tab);
    *tab = *tab * f0 - f1;
}
#else
SIMD_INLINE void simd_kq_table(enum kern_dtype dt, float f0, float f1, simd_vf *tab)
{
    (void)dt;
    (void)f0;
    (void)f1;
    (void)tab;
}
#endif

/* SIMD_L weights of sub-block j of the super-block b from its element u (a multiple of
 * SIMD_L below 32), given the sub-block's two factors (Q4_K / Q5_K: d * scale and dmin * min;
 * Q6_K: the d * scale of its halves) and, for Q4_K with AVX-512, its table: exactly the values
 * kern_kq_elem gives. AVX-512 looks Q4_K up and adds Q5_K's fifth bit through a lane mask;
 * elsewhere, and for Q6_K, the quants are assembled as bytes, 16 at a time, then converted. */
SIMD_INLINE void simd_kq_vec(enum kern_dtype dt, const uint8_t *b, int j, int u, float f0,
                             float f1, const simd_vf *tab, simd_vf *out)
{
#if SIMD_L == 16 && defined(__AVX512F__)
    if (dt == KERN_DTYPE_Q4_K) { /* as Q4_0: the permute reads only the low 4 bits */
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 16 + 32 * (j / 2) + u)));
        if (j % 2)
            v = _mm512_srli_epi32(v, 4);
        __m512 t0, r;
        memcpy(&t0, &tab[0], sizeof t0);
        r = _mm512_permutexvar_ps(v, t0);
        memcpy(out, &r, sizeof *out);
        return;
    }
    if (dt == KERN_DTYPE_Q5_K) { /* bit 4 as a lane mask: q + 16 where it is set */
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 48 + 32 * (j / 2) + u)));
        v = j % 2 ? _mm512_srli_epi32(v, 4) : _mm512_and_si512(v, _mm512_set1_epi32(15));
        __mmask16 hi5 = _mm_test_epi8_mask(_mm_loadu_si128((const __m128i *)(b + 16 + u)),
                                           _mm_set1_epi8((char)(1 << j)));
        __m512 qf = _mm512_cvtepi32_ps(v);
        qf = _mm512_mask_add_ps(qf, hi5, qf, _mm512_set1_ps(16.0f));
        memcpy(out, &qf, sizeof *out);
        *out = *out * f0 - f1;
        return;
    }
#endif
    /* Bit fields are cut in 16-bit lanes (x86 has no byte shifts): a right shift by at most
     * 7 and a per-byte mask that drops what crossed from the upper byte give the byte result. */
    int u16 = u & 16;
    simd_vw q, hi;
    if (dt == KERN_DTYPE_Q6_K) {
        int h = j / 4, s = j % 4;
        memcpy(&q, b + 64 * h + 32 * (s % 2) + u16, sizeof q);
        memcpy(&hi, b + 128 + 32 * h + u16, sizeof hi);
        q = ((q >> (4 * (s / 2))) & 0x0f0f) | (((hi >> (2 * s)) & 0x0303) << 4);
    } else {
        memcpy(&q, b + (dt == KERN_DTYPE_Q5_K ? 48 : 16) + 32 * (j / 2) + u16, sizeof q);
        q = (q >> (4 * (j % 2))) & 0x0f0f;
        if (dt == KERN_DTYPE_Q5_K) {
            memcpy(&hi, b + 16 + u16, sizeof hi);
            q |= ((hi >> j) & 0x0101) << 4;
        }
    }
    simd_vb qb = (simd_vb)q;
    simd_vi qi;
    simd_vb_to_vi(&qb, u & 15, &qi);
    (void)tab;
    if (dt == KERN_DTYPE_Q6_K)
        *out = __builtin_convertvector(qi - 32, simd_vf) * (u < 16 ? f0 : f1);
    else
        *out = __builtin_convertvector(qi, simd_vf) * f0 - f1;
}

/* simd_tile for the K formats (len and ldw multiples of KERN_QKBLOCK): the same products
 * summed in the same order as simd_tile over the widened rows, each sub-block's factors
 * decoded once for its vectors. */
SIMD_INLINE void simd_tile_kq(enum kern_dtype dt, int mr, int nr, const float *x, int64_t ldx,
                              const void *w, int64_t ldw, float *y, int64_t ldy, int64_t len)
{
    simd_vf acc[SIMD_MR][SIMD_NR];
    simd_acc_zero(acc, mr, nr);
    const uint8_t *wb = w;
    size_t row_bytes = simd_w_bytes(dt, ldw);
    for (int64_t t = 0; t < len; t += KERN_QKBLOCK) {
        const uint8_t *sb = wb + simd_w_bytes(dt, t);
        float fac[SIMD_NR][16];
        for (int j = 0; j < nr; j++) {
            /* Four prefetches per row and super-block, a cache line apart (<= 210 bytes). */
            if (mr == 1)
                for (int c = 0; c < 4; c++)
                    simd_prefetch_ahead(wb, row_bytes, j, nr, (size_t)(sb - wb) + 64 * (size_t)c,
                                        SIMD_PF_BLOCK);
            simd_kq_factors(dt, sb + (size_t)j * row_bytes, fac[j]);
        }
        for (int sub = 0; sub < KERN_QKBLOCK / 32; sub++) {
            float f0[SIMD_NR], f1[SIMD_NR];
            simd_vf tab[SIMD_NR];
            for (int j = 0; j < nr; j++) {
                f0[j] = fac[j][dt == KERN_DTYPE_Q6_K ? 2 * sub : sub];
                f1[j] = fac[j][dt == KERN_DTYPE_Q6_K ? 2 * sub + 1 : 8 + sub];
                simd_kq_table(dt, f0[j], f1[j], &tab[j]);
            }
            for (int u = 0; u < 32; u += SIMD_L) {
                simd_vf wv[SIMD_NR];
                for (int j = 0; j < nr; j++)
                    simd_kq_vec(dt, sb + (size_t)j * row_bytes, sub, u, f0[j], f1[j], &tab[j],
                                &wv[j]);
                for (int i = 0; i < mr; i++) {
                    simd_vf xv;
                    memcpy(&xv, x + i * ldx + t + 32 * sub + u, sizeof xv);
                    for (int j = 0; j < nr; j++)
                        acc[i][j] += xv * wv[j];
                }
            }
        }
    }
    simd_acc_add_to(acc, mr, nr, y, ldy);
}

/* n elements (a multiple of KERN_QKBLOCK) of a K format from the super-block at src, as fp32. */
SIMD_INLINE void simd_kq_body(enum kern_dtype dt, const void *src, float *dst, int64_t n)
{
    for (int64_t t = 0; t < n; t += KERN_QKBLOCK) {
        const uint8_t *sb = (const uint8_t *)src + simd_w_bytes(dt, t);
        float fac[16];
        simd_kq_factors(dt, sb, fac);
        for (int sub = 0; sub < KERN_QKBLOCK / 32; sub++) {
            float f0 = fac[dt == KERN_DTYPE_Q6_K ? 2 * sub : sub];
            float f1 = fac[dt == KERN_DTYPE_Q6_K ? 2 * sub + 1 : 8 + sub];
            simd_vf tab;
            simd_kq_table(dt, f0, f1, &tab);
            for (int u = 0; u < 32; u += SIMD_L) {
                simd_vf v;
                simd_kq_vec(dt, sb, sub, u, f0, f1, &tab, &v);
                memcpy(dst + t + 32 * sub + u, &v, sizeof v);
            }
        }
    }
}

/* One register tile of the gemm, the block formats by their own loop. */
SIMD_INLINE void simd_tile_any(enum kern_dtype dt, int mr, int nr, const float *x, int64_t ldx,
                               const void *w, int64_t ldw, float *y, int64_t ldy, int64_t len)
{
    if (dt == KERN_DTYPE_Q8_0 || dt == KERN_DTYPE_Q4_0)
        simd_tile_block(dt, mr, nr, x, ldx, w, ldw, y, ldy, len);
    else if (simd_is_kq(dt))
        simd_tile_kq(dt, mr, nr, x, ldx, w, ldw, y, ldy, len);
    else
        simd_tile(dt, mr, nr, x, ldx, w, ldw, y, ldy, len);
}

/* y[m, n] += x[m, len] @ w[n, len]^T with w in dt (row stride ldw elements; for a block format
 * ldw and len are multiples of its block). */
SIMD_INLINE void simd_gemm_body(enum kern_dtype dt, const float *x, int64_t ldx, const void *w,
                                int64_t ldw, float *y, int64_t ldy, int64_t m, int64_t n,
                                int64_t len)
{
    const char *wb = w;
    int64_t i = 0;
    for (; i + SIMD_MR <= m; i += SIMD_MR) {
        int64_t j = 0;
        for (; j + SIMD_PNR <= n; j += SIMD_PNR)
            simd_tile_any(dt, SIMD_MR, SIMD_PNR, x + i * ldx, ldx, wb + simd_w_bytes(dt, j * ldw), ldw,
                      y + i * ldy + j, ldy, len);
        for (; j < n; j++)
            simd_tile_any(dt, SIMD_MR, 1, x + i * ldx, ldx, wb + simd_w_bytes(dt, j * ldw), ldw,
                      y + i * ldy + j, ldy, len);
    }
    for (; i < m; i++) {
        /* Leftover rows (and the m = 1 decode case): one x row against SIMD_DNR w rows at a
         * time keeps that many independent streams of w in flight. */
        int64_t j = 0;
        for (; j + SIMD_DNR <= n; j += SIMD_DNR)
            simd_tile_any(dt, 1, SIMD_DNR, x + i * ldx, ldx, wb + simd_w_bytes(dt, j * ldw), ldw,
                      y + i * ldy + j, ldy, len);
        for (; j < n; j++)
            simd_tile_any(dt, 1, 1, x + i * ldx, ldx, wb + simd_w_bytes(dt, j * ldw), ldw,
                      y + i * ldy + j, ldy, len);
    }
}

SIMD_INLINE void simd_bf16_body(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + SIMD_L <= n; i += SIMD_L) {
        simd_vh h;
        memcpy(&h, src + i, sizeof h);
        simd_vu u = __builtin_convertvector(h, simd_vu) << 16;
        memcpy(dst + i, &u, sizeof u);
    }
    for (; i < n; i++)
        dst[i] = kern_bf16_to_f32(src[i]);
}

/* n (a multiple of KERN_QBLOCK) elements of a block format from the block at src, widened
 * to fp32. */
SIMD_INLINE void simd_block_body(enum kern_dtype dt, const void *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i += SIMD_L) {
        simd_vf f;
        simd_load_w(dt, src, i, &f);
        memcpy(dst + i, &f, sizeof f);
    }
}

SIMD_INLINE void simd_f16_body(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + SIMD_L <= n; i += SIMD_L) {
        simd_vf f;
        simd_load_w(KERN_DTYPE_F16, src, i, &f);
        memcpy(dst + i, &f, sizeof f);
    }
    for (; i < n; i++)
        dst[i] = kern_f16_to_f32(src[i]);
}

/* ---- Attention and elementwise bodies ------------------------------------------------- */

/* Lane select: a where mask is all ones, b where it is zero (mask from a vector compare).
 * A macro, as vector values must not cross function boundaries (see above). */
#define SIMD_SEL(mask, a, b) ((simd_vf)(((simd_vi)(a) & (mask)) | ((simd_vi)(b) & ~(mask))))

/* exp(x) lane by lane, within ~2 ulp of the correctly rounded fp32 result: x = n ln2 + r
 * with |r| <= ln2/2 (ln2 split in two so r is exact), exp(r) by its degree-7 Taylor polynomial
 * (truncation 5e-9 relative), then 2^n applied as two exact power-of-two factors so that
 * results down to the fp32 subnormals and up to overflow come out right. NaN stays NaN,
 * -Inf and x < -104 give 0, x > 89 gives +Inf. */
SIMD_INLINE void simd_exp(simd_vf *xp)
{
    simd_vf x = *xp;
    simd_vi under = x < -104.0f;
    simd_vf lo = {0}, hi = {0};
    lo += -104.0f;
    hi += 89.0f;
    simd_vf xc = SIMD_SEL(x > 89.0f, hi, SIMD_SEL(under, lo, x)); /* NaN passes through */
    simd_vf t = xc * 1.44269504f + 0x1.8p23f; /* round-to-nearest of x / ln2 in the low bits */
    simd_vf n = t - 0x1.8p23f;
    simd_vi ni = (simd_vi)t - 0x4b400000;
    simd_vf r = xc - n * 0.693145751953125f; /* ln2 high part: n * it is exact */
    r = r - n * 1.428606765330187e-06f;       /* ln2 low part */
    simd_vf p = r * (1.0f / 5040.0f) + (1.0f / 720.0f);
    p = p * r + (1.0f / 120.0f);
    p = p * r + (1.0f / 24.0f);
    p = p * r + (1.0f / 6.0f);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    simd_vi n1 = ni >> 1, n2 = ni - n1; /* each in [-75, 64]: normal scale factors */
    simd_vf s1 = (simd_vf)((n1 + 127) << 23), s2 = (simd_vf)((n2 + 127) << 23);
    simd_vf zero = {0};
    *xp = SIMD_SEL(under, zero, p * s1 * s2);
}

/* out[u] = the lane sum of v[u] for u < 4, each added up in the order of simd_hsum: the four
 * vectors are folded to four lanes, then transposed and added together. */
SIMD_INLINE void simd_hsum4(const simd_vf *v, float *out)
{
    typedef int32_t simd_v4i __attribute__((vector_size(16)));
    simd_v4f f[4];
    for (int u = 0; u < 4; u++) {
        simd_v4f part[SIMD_L / 4];
        memcpy(part, &v[u], sizeof part);
        for (int w = SIMD_L / 4; w > 1; w /= 2)
            for (int i = 0; i < w / 2; i++)
                part[i] += part[i + w / 2];
        f[u] = part[0];
    }
    const simd_v4i even = {0, 4, 1, 5}, odd = {2, 6, 3, 7}, lo = {0, 1, 4, 5}, hi = {2, 3, 6, 7};
    /* t01 = [f0[0]+f0[2], f1[0]+f1[2], f0[1]+f0[3], f1[1]+f1[3]], likewise t23. */
    simd_v4f t01 = __builtin_shuffle(f[0], f[1], even) + __builtin_shuffle(f[0], f[1], odd);
    simd_v4f t23 = __builtin_shuffle(f[2], f[3], even) + __builtin_shuffle(f[2], f[3], odd);
    simd_v4f r = __builtin_shuffle(t01, t23, lo) + __builtin_shuffle(t01, t23, hi);
    memcpy(out, &r, sizeof r);
}

/* out[j] = scale * dot(q, k[j]) for j < n, over d lanes; returns the largest score (NaN
 * scores are skipped there; they still reach out). Four keys share each load of q. */
SIMD_INLINE float simd_scores_body(const float *q, const float *const *k, int64_t n, int64_t d,
                                   float scale, float *out)
{
    float mx = -__builtin_inff();
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        simd_vf acc[4] = {{0}, {0}, {0}, {0}};
        int64_t e = 0;
        for (; e + SIMD_L <= d; e += SIMD_L) {
            simd_vf qv;
            memcpy(&qv, q + e, sizeof qv);
            for (int u = 0; u < 4; u++) {
                simd_vf kv;
                memcpy(&kv, k[j + u] + e, sizeof kv);
                acc[u] += qv * kv;
            }
        }
        float part[4];
        simd_hsum4(acc, part);
        for (int u = 0; u < 4; u++) {
            float s = part[u];
            for (int64_t f = e; f < d; f++)
                s += q[f] * k[j + u][f];
            s *= scale;
            out[j + u] = s;
            if (s > mx)
                mx = s;
        }
    }
    for (; j < n; j++) {
        simd_vf acc = {0};
        int64_t e = 0;
        for (; e + SIMD_L <= d; e += SIMD_L) {
            simd_vf qv, kv;
            memcpy(&qv, q + e, sizeof qv);
            memcpy(&kv, k[j] + e, sizeof kv);
            acc += qv * kv;
        }
        float s = simd_hsum(&acc);
        for (; e < d; e++)
            s += q[e] * k[j][e];
        s *= scale;
        out[j] = s;
        if (s > mx)
            mx = s;
    }
    return mx;
}

/* x[j] = exp(x[j] - m) for j < n; returns their sum. */
SIMD_INLINE float simd_exp_sum_body(float *x, int64_t n, float m)
{
    simd_vf acc = {0};
    int64_t j = 0;
    for (; j + SIMD_L <= n; j += SIMD_L) {
        simd_vf v;
        memcpy(&v, x + j, sizeof v);
        v -= m;
        simd_exp(&v);
        memcpy(x + j, &v, sizeof v);
        acc += v;
    }
    float s = simd_hsum(&acc);
    if (j < n) {
        float tail[SIMD_L] = {0};
        memcpy(tail, x + j, (size_t)(n - j) * sizeof *tail);
        simd_vf v;
        memcpy(&v, tail, sizeof v);
        v -= m;
        simd_exp(&v);
        memcpy(tail, &v, sizeof v);
        for (int64_t u = 0; j + u < n; u++) {
            x[j + u] = tail[u];
            s += tail[u];
        }
    }
    return s;
}

/* acc[e] += sum_j w[j] * v[j][e] for e < d: the accumulators of 32 lanes stay in registers
 * while every key passes. */
SIMD_INLINE void simd_wsum_body(float *acc, const float *w, const float *const *v, int64_t n,
                                int64_t d)
{
    int64_t e = 0;
    for (; e + 4 * SIMD_L <= d; e += 4 * SIMD_L) {
        simd_vf a[4];
        memcpy(a, acc + e, sizeof a);
        for (int64_t j = 0; j < n; j++) {
            float wj = w[j];
            for (int u = 0; u < 4; u++) {
                simd_vf vv;
                memcpy(&vv, v[j] + e + SIMD_L * u, sizeof vv);
                a[u] += wj * vv;
            }
        }
        memcpy(acc + e, a, sizeof a);
    }
    for (; e + SIMD_L <= d; e += SIMD_L) {
        simd_vf a;
        memcpy(&a, acc + e, sizeof a);
        for (int64_t j = 0; j < n; j++) {
            simd_vf vv;
            memcpy(&vv, v[j] + e, sizeof vv);
            a += w[j] * vv;
        }
        memcpy(acc + e, &a, sizeof a);
    }
    for (; e < d; e++) {
        float a = acc[e];
        for (int64_t j = 0; j < n; j++)
            a += w[j] * v[j][e];
        acc[e] = a;
    }
}

/* sum_i x[i]^2 in fp32 (32 partial sums). */
SIMD_INLINE float simd_sumsq_body(const float *x, int64_t n)
{
    simd_vf a[4] = {{0}, {0}, {0}, {0}};
    int64_t i = 0;
    for (; i + 4 * SIMD_L <= n; i += 4 * SIMD_L) {
        simd_vf v[4];
        memcpy(v, x + i, sizeof v);
        for (int u = 0; u < 4; u++)
            a[u] += v[u] * v[u];
    }
    for (; i + SIMD_L <= n; i += SIMD_L) {
        simd_vf v;
        memcpy(&v, x + i, sizeof v);
        a[0] += v * v;
    }
    a[0] += a[1];
    a[2] += a[3];
    a[0] += a[2];
    float s = simd_hsum(&a[0]);
    for (; i < n; i++)
        s += x[i] * x[i];
    return s;
}

/* out[i] = w[i] * (x[i] * inv), the product x * inv rounded to fp32 first (the activation
 * cast of the rmsnorm contract). out may alias x. */
SIMD_INLINE void simd_scale_mul_body(float *out, const float *x, float inv, const float *w,
                                     int64_t n)
{
    int64_t i = 0;
    for (; i + SIMD_L <= n; i += SIMD_L) {
        simd_vf xv, wv;
        memcpy(&xv, x + i, sizeof xv);
        memcpy(&wv, w + i, sizeof wv);
        simd_vf normed = xv * inv; /* two products, nothing to fuse: each rounds */
        xv = wv * normed;
        memcpy(out + i, &xv, sizeof xv);
    }
    for (; i < n; i++) {
        float normed = x[i] * inv;
        out[i] = w[i] * normed;
    }
}

/* out[i..i+SIMD_L) = silu(g) * u on one vector: sigmoid as 1 / (1 + e) or e / (1 + e) with
 * e = exp(-|g|), which never overflows, so negative g keeps full relative precision down to
 * the point where e leaves the normal range (g < -87). */
SIMD_INLINE void simd_silu_vec(const simd_vf *g, const simd_vf *u, simd_vf *out)
{
    simd_vf one = {0};
    one += 1.0f;
    simd_vi neg = *g < 0.0f;
    simd_vf e = SIMD_SEL(neg, *g, -*g); /* -|g|; NaN stays NaN */
    simd_exp(&e);
    simd_vf sig = SIMD_SEL(neg, e, one) / (one + e);
    *out = *g * sig * *u;
}

/* out[i] = silu(g[i]) * u[i], silu(x) = x / (1 + exp(-x)). */
SIMD_INLINE void simd_silu_mul_body(float *out, const float *g, const float *u, int64_t n)
{
    int64_t i = 0;
    for (; i + SIMD_L <= n; i += SIMD_L) {
        simd_vf gv, uv, r;
        memcpy(&gv, g + i, sizeof gv);
        memcpy(&uv, u + i, sizeof uv);
        simd_silu_vec(&gv, &uv, &r);
        memcpy(out + i, &r, sizeof r);
    }
    if (i < n) {
        float gt[SIMD_L] = {0}, ut[SIMD_L] = {0};
        memcpy(gt, g + i, (size_t)(n - i) * sizeof *gt);
        memcpy(ut, u + i, (size_t)(n - i) * sizeof *ut);
        simd_vf gv, uv, r;
        memcpy(&gv, gt, sizeof gv);
        memcpy(&uv, ut, sizeof uv);
        simd_silu_vec(&gv, &uv, &r);
        memcpy(gt, &r, sizeof r);
        memcpy(out + i, gt, (size_t)(n - i) * sizeof *gt);
    }
}

/* Rotates the pairs (x[i], x[i + h]), i < h, by (c[i], s[i]):
 * x[i] = x[i] c - x[i+h] s, x[i+h] = x[i+h] c + x[i] s. */
SIMD_INLINE void simd_rope_rot_body(float *x, const float *c, const float *s, int64_t h)
{
    int64_t i = 0;
    for (; i + SIMD_L <= h; i += SIMD_L) {
        simd_vf a, b, cv, sv;
        memcpy(&a, x + i, sizeof a);
        memcpy(&b, x + h + i, sizeof b);
        memcpy(&cv, c + i, sizeof cv);
        memcpy(&sv, s + i, sizeof sv);
        simd_vf na = a * cv - b * sv, nb = b * cv + a * sv;
        memcpy(x + i, &na, sizeof na);
        memcpy(x + h + i, &nb, sizeof nb);
    }
    for (; i < h; i++) {
        float a = x[i], b = x[i + h];
        x[i] = a * c[i] - b * s[i];
        x[i + h] = b * c[i] + a * s[i];
    }
}

/* y[i] += x[i]. */
SIMD_INLINE void simd_add_body(float *y, const float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + SIMD_L <= n; i += SIMD_L) {
        simd_vf yv, xv;
        memcpy(&yv, y + i, sizeof yv);
        memcpy(&xv, x + i, sizeof xv);
        yv += xv;
        memcpy(y + i, &yv, sizeof yv);
    }
    for (; i < n; i++)
        y[i] += x[i];
}

#endif
