/* The int8 dot of the R16 weight formats (ops.h): activations rounded to 8-bit blocks, integer
 * products, one fp32 multiply-add per block. Bodies for cpu/simd_entries.h, compiled once per
 * instruction set like cpu/simd.h; no entry points.
 *
 * An R16 group holds 16 W rows (output columns) interleaved by 4 values (ops.h), so one vector
 * load gives every column its next 4 weights and one broadcast gives x's matching 4 values:
 * each 32-bit lane of the integer accumulator is one column's running block sum, with no
 * horizontal sums. Per block and x row the lanes are converted once and added into fp32
 * accumulators with the block's scales, dw * dx (ops.h's rounding). Everything a row computes
 * depends only on that row, so a token's result is the same bits whatever the batch holds. */
#ifndef PHISERVE_KERNELS_CPU_SIMD_R16_H
#define PHISERVE_KERNELS_CPU_SIMD_R16_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../dtype.h"
#include "../ops.h"
#include "cpu.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

/* Bytes of one block of a group: 16 scales and 16 rows' values. */
SIMD_INLINE int64_t simd_r16_block_bytes(enum kern_dtype dt)
{
    return dt == KERN_DTYPE_Q8_0_R16 ? KERN_R16 * KERN_Q8_0_BLOCK_BYTES
                                     : KERN_R16 * KERN_Q4_0_BLOCK_BYTES;
}

/* Bytes of a Q4_K_R16 / Q5_K_R16 group's super-block (its parts at ops.h's KERN_KR16_*). */
SIMD_INLINE int64_t simd_r16k_bytes(int q5)
{
    return KERN_R16 * (q5 ? KERN_Q5_K_R16_ROW_BYTES : KERN_Q4_K_R16_ROW_BYTES);
}

/* Offset of nibble piece p (0..31) in a Q4_K_R16 / Q5_K_R16 group's super-block. */
SIMD_INLINE int simd_r16k_piece(int q5, int p)
{
    return q5 ? KERN_Q5R16_PIECE(p) : KERN_KR16_QS + 64 * p;
}

/* The 4 int8 values at p as one 32-bit word (for a broadcast). */
SIMD_INLINE int32_t simd_r16_word(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

#if SIMD_L == 16 && defined(__AVX512BW__)
/* A block of 32 as two vectors: non-finite values leave through the ordered compare (NaN and
 * +-Inf fail |v| <= FLT_MAX); the conversion rounds half to even (the default MXCSR mode). */
SIMD_INLINE int simd_x8_block(const float *x, int8_t *q, float *d, int32_t *s)
{
    __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    __m512 a0 = _mm512_abs_ps(v0), a1 = _mm512_abs_ps(v1);
    const __m512 big = _mm512_set1_ps(FLT_MAX);
    if ((__mmask16)(_mm512_cmp_ps_mask(a0, big, _CMP_LE_OQ) &
                    _mm512_cmp_ps_mask(a1, big, _CMP_LE_OQ)) != 0xFFFF)
        return -1;
    float a = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
    *d = a / 127.0f;
    if (*d < FLT_MIN) {
        *d = 0.0f;
        memset(q, 0, KERN_QBLOCK);
        *s = 0;
        return 0;
    }
    __m512 id = _mm512_set1_ps(1.0f / *d);
    __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
    __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
    _mm_storeu_si128((__m128i *)q, _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtsepi32_epi8(q1));
    *s = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    return 0;
}
#elif SIMD_L == 8 && defined(__AVX2__)
SIMD_INLINE int simd_x8_block(const float *x, int8_t *q, float *d, int32_t *s)
{
    const __m256 sign = _mm256_set1_ps(-0.0f), big = _mm256_set1_ps(FLT_MAX);
    __m256 v[4], amax = _mm256_setzero_ps();
    int ok = 1;
    for (int u = 0; u < 4; u++) {
        v[u] = _mm256_loadu_ps(x + 8 * u);
        __m256 a = _mm256_andnot_ps(sign, v[u]);
        ok &= _mm256_movemask_ps(_mm256_cmp_ps(a, big, _CMP_LE_OQ)) == 0xFF;
        amax = _mm256_max_ps(amax, a);
    }
    if (!ok)
        return -1;
    float lanes[8];
    _mm256_storeu_ps(lanes, amax);
    float a = 0.0f;
    for (int l = 0; l < 8; l++)
        a = lanes[l] > a ? lanes[l] : a;
    *d = a / 127.0f;
    if (*d < FLT_MIN) {
        *d = 0.0f;
        memset(q, 0, KERN_QBLOCK);
        *s = 0;
        return 0;
    }
    __m256 id = _mm256_set1_ps(1.0f / *d);
    int32_t r[KERN_QBLOCK];
    for (int u = 0; u < 4; u++)
        _mm256_storeu_si256((__m256i *)(r + 8 * u), _mm256_cvtps_epi32(_mm256_mul_ps(v[u], id)));
    int32_t sum = 0;
    for (int t = 0; t < KERN_QBLOCK; t++) {
        q[t] = (int8_t)(r[t] > 127 ? 127 : r[t] < -127 ? -127 : r[t]);
        sum += q[t];
    }
    *s = sum;
    return 0;
}
#else
SIMD_INLINE int simd_x8_block(const float *x, int8_t *q, float *d, int32_t *s)
{
    for (int t = 0; t < KERN_QBLOCK; t++)
        if (!isfinite(x[t]))
            return -1;
    *d = kern_x8_block(x, q, s);
    return 0;
}
#endif

/* A row of len (a multiple of KERN_QBLOCK) values: q[len], d and s [len / 32]. Returns 0, or
 * -1 when a value is not finite (the rest then unspecified). */
SIMD_INLINE int simd_x8_body(const float *x, int64_t len, int8_t *q, float *d, int32_t *s)
{
    for (int64_t b = 0; b < len / KERN_QBLOCK; b++)
        if (simd_x8_block(x + b * KERN_QBLOCK, q + b * KERN_QBLOCK, d + b, s + b) != 0)
            return -1;
    return 0;
}

/* The offset subtracted from each block sum: Q4_0's values are q - 8 (their nibbles enter the
 * product unsigned); with VNNI, Q8_0's enter as q + 128 (vpdpbusd multiplies unsigned by
 * signed bytes), elsewhere as |q| against x with q's sign. */
#if SIMD_L == 16 && defined(__AVX512VNNI__)
#define SIMD_R16_Q8_OFFSET 128
#else
#define SIMD_R16_Q8_OFFSET 0
#endif

#if SIMD_L == 16 && defined(__AVX512BW__)
/* acc += per-lane sums of w's 4 unsigned bytes times x's 4 signed bytes (w <= 128, so the
 * 16-bit pair sums of the non-VNNI form stay below 2^15). */
SIMD_INLINE __m512i simd_r16_dot(__m512i acc, __m512i w, __m512i x)
{
#ifdef __AVX512VNNI__
    return _mm512_dpbusd_epi32(acc, w, x);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(w, x),
                                                   _mm512_set1_epi16(1)));
#endif
}

/* out[r * 16 + c] for r < mr (a compile-time constant <= 4): one group of nb blocks. */
SIMD_INLINE void simd_r16_tile(enum kern_dtype dt, int mr, const int8_t *xq, const float *xd,
                               const int32_t *xs, int64_t ldq, int64_t ldb, const uint8_t *wg,
                               int64_t nb, float *out)
{
    const int64_t bb = simd_r16_block_bytes(dt);
    const int32_t off = dt == KERN_DTYPE_Q8_0_R16 ? SIMD_R16_Q8_OFFSET : 8;
    const __m512i nib = _mm512_set1_epi8(0x0F);
    __m512 accf[4];
    __m512i acc[4];
    for (int r = 0; r < mr; r++)
        accf[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = wg + b * bb;
        const int8_t *x = xq + b * KERN_QBLOCK;
        for (int r = 0; r < mr; r++)
            acc[r] = _mm512_set1_epi32(-off * xs[r * ldb + b]);
        if (dt == KERN_DTYPE_Q8_0_R16) {
            for (int t = 0; t < 8; t++) {
                __m512i wv = _mm512_loadu_si512(blk + 32 + 64 * t);
#ifdef __AVX512VNNI__
                __m512i wu = _mm512_xor_si512(wv, _mm512_set1_epi8((char)0x80));
                for (int r = 0; r < mr; r++)
                    acc[r] = simd_r16_dot(acc[r], wu,
                                          _mm512_set1_epi32(simd_r16_word(x + r * ldq + 4 * t)));
#else
                __m512i wa = _mm512_abs_epi8(wv);
                __mmask64 neg = _mm512_movepi8_mask(wv);
                for (int r = 0; r < mr; r++) {
                    __m512i xv = _mm512_set1_epi32(simd_r16_word(x + r * ldq + 4 * t));
                    xv = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
                    acc[r] = simd_r16_dot(acc[r], wa, xv);
                }
#endif
            }
        } else {
            for (int t = 0; t < 4; t++) {
                __m512i v = _mm512_loadu_si512(blk + 32 + 64 * t);
                __m512i lo = _mm512_and_si512(v, nib);
                __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
                for (int r = 0; r < mr; r++) {
                    const int8_t *xr = x + r * ldq;
                    acc[r] = simd_r16_dot(acc[r], lo, _mm512_set1_epi32(simd_r16_word(xr + 4 * t)));
                    acc[r] = simd_r16_dot(acc[r], hi,
                                          _mm512_set1_epi32(simd_r16_word(xr + 16 + 4 * t)));
                }
            }
        }
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        for (int r = 0; r < mr; r++)
            accf[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r]),
                                      _mm512_mul_ps(dw, _mm512_set1_ps(xd[r * ldb + b])), accf[r]);
    }
    for (int r = 0; r < mr; r++)
        _mm512_storeu_ps(out + 16 * r, accf[r]);
}

/* Q4_K_R16 (ops.h): per super-block and 64-element chunk, sub-blocks 2c (low nibbles) and
 * 2c + 1 (high nibbles) summed into their own integer lanes, then per sub-block and row
 * y += (f0 * dx) * s - (f1 * dx) * x_s with the 16 columns' f0 = d * scale, f1 = dmin * min. */
SIMD_INLINE void simd_r16k_tile(int q5, int mr, const int8_t *xq, const float *xd, const int32_t *xs,
                                int64_t ldq, int64_t ldb, const uint8_t *wg, int64_t nsb,
                                float *out)
{
    const __m512i nib = _mm512_set1_epi8(0x0F);
    __m512 accf[4];
    __m512i acc[4][2];
    for (int r = 0; r < mr; r++)
        accf[r] = _mm512_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *blk = wg + sb * simd_r16k_bytes(q5);
        __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        __m512 mv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + KERN_KR16_DMIN)));
        for (int c = 0; c < 4; c++) {
            for (int r = 0; r < mr; r++)
                acc[r][0] = acc[r][1] = _mm512_setzero_si512();
            for (int t = 0; t < 8; t++) {
                __m512i v = _mm512_loadu_si512(blk + simd_r16k_piece(q5, 8 * c + t));
                __m512i lo = _mm512_and_si512(v, nib);
                __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
                if (q5) { /* bit 2c (lo) and 2c + 1 (hi) of the qh bytes, moved to bit 4 */
                    __m512i h = _mm512_loadu_si512(blk + KERN_Q5R16_QH(t));
                    const __m512i b4 = _mm512_set1_epi8(0x10);
                    __m512i hl = 2 * c <= 4 ? _mm512_sll_epi16(h, _mm_cvtsi32_si128(4 - 2 * c))
                                            : _mm512_srl_epi16(h, _mm_cvtsi32_si128(2 * c - 4));
                    __m512i hh = 2 * c + 1 <= 4
                                     ? _mm512_sll_epi16(h, _mm_cvtsi32_si128(3 - 2 * c))
                                     : _mm512_srl_epi16(h, _mm_cvtsi32_si128(2 * c - 3));
                    lo = _mm512_or_si512(lo, _mm512_and_si512(hl, b4));
                    hi = _mm512_or_si512(hi, _mm512_and_si512(hh, b4));
                }
                for (int r = 0; r < mr; r++) {
                    const int8_t *x = xq + r * ldq + 256 * sb + 64 * c + 4 * t;
                    acc[r][0] = simd_r16_dot(acc[r][0], lo, _mm512_set1_epi32(simd_r16_word(x)));
                    acc[r][1] = simd_r16_dot(acc[r][1], hi,
                                             _mm512_set1_epi32(simd_r16_word(x + 32)));
                }
            }
            for (int h = 0; h < 2; h++) {
                int j = 2 * c + h;
                __m512 f0 = _mm512_mul_ps(dv, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                    _mm_loadu_si128((const __m128i *)(blk + KERN_KR16_SCALES + 16 * j)))));
                __m512 f1 = _mm512_mul_ps(mv, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                    _mm_loadu_si128((const __m128i *)(blk + KERN_KR16_MINS + 16 * j)))));
                for (int r = 0; r < mr; r++) {
                    int64_t b = r * ldb + 8 * sb + j;
                    __m512 dx = _mm512_set1_ps(xd[b]);
                    accf[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][h]), _mm512_mul_ps(f0, dx),
                                              accf[r]);
                    accf[r] = _mm512_fnmadd_ps(_mm512_mul_ps(f1, dx), _mm512_set1_ps((float)xs[b]),
                                               accf[r]);
                }
            }
        }
    }
    for (int r = 0; r < mr; r++)
        _mm512_storeu_ps(out + 16 * r, accf[r]);
}

/* Q6_K_R16 (ops.h): per super-block, 128-value half h and 16-value part i of its four 32-value
 * runs u, the sub-blocks 8h + 2u + i summed into their own integer lanes (started at -32 times
 * x's sum over the sub-block, for the quants' offset), then per sub-block and row
 * y += (f0 * dx) * s with the 16 columns' f0 = d * scale. xs16: x's sums per 16 values. */
SIMD_INLINE void simd_r16q6_tile(int mr, const int8_t *xq, const float *xd, const int32_t *xs16,
                                 int64_t ldq, int64_t ldb, const uint8_t *wg, int64_t nsb,
                                 float *out)
{
    const __m512i nib = _mm512_set1_epi8(0x0F), b45 = _mm512_set1_epi8(0x30);
    __m512 accf[4];
    __m512i acc[4][4];
    for (int r = 0; r < mr; r++)
        accf[r] = _mm512_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *blk = wg + sb * (KERN_R16 * KERN_Q6_K_R16_ROW_BYTES);
        __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < 2; i++) {
                for (int r = 0; r < mr; r++)
                    for (int u = 0; u < 4; u++)
                        acc[r][u] = _mm512_set1_epi32(
                            -32 * xs16[r * 2 * ldb + 16 * sb + 8 * h + 2 * u + i]);
                for (int t = 0; t < 4; t++) {
                    const uint8_t *st = blk + KERN_Q6R16_QS + KERN_Q6R16_STEP * (8 * h + 4 * i + t);
                    __m512i a = _mm512_loadu_si512(st), b = _mm512_loadu_si512(st + 64);
                    __m512i qh = _mm512_loadu_si512(st + 128);
                    __m512i w[4];
                    w[0] = _mm512_or_si512(_mm512_and_si512(a, nib),
                                           _mm512_and_si512(_mm512_slli_epi16(qh, 4), b45));
                    w[1] = _mm512_or_si512(_mm512_and_si512(b, nib),
                                           _mm512_and_si512(_mm512_slli_epi16(qh, 2), b45));
                    w[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(a, 4), nib),
                                           _mm512_and_si512(qh, b45));
                    w[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(b, 4), nib),
                                           _mm512_and_si512(_mm512_srli_epi16(qh, 2), b45));
                    for (int r = 0; r < mr; r++) {
                        const int8_t *x = xq + r * ldq + 256 * sb + 128 * h + 16 * i + 4 * t;
                        for (int u = 0; u < 4; u++)
                            acc[r][u] = simd_r16_dot(acc[r][u], w[u],
                                                     _mm512_set1_epi32(simd_r16_word(x + 32 * u)));
                    }
                }
                for (int u = 0; u < 4; u++) {
                    int j = 8 * h + 2 * u + i;
                    __m512 f0 = _mm512_mul_ps(dv, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                        _mm_loadu_si128((const __m128i *)(blk + KERN_Q6R16_SCALES + 16 * j)))));
                    for (int r = 0; r < mr; r++)
                        accf[r] = _mm512_fmadd_ps(
                            _mm512_cvtepi32_ps(acc[r][u]),
                            _mm512_mul_ps(f0, _mm512_set1_ps(xd[r * ldb + 8 * sb + j / 2])),
                            accf[r]);
                }
            }
    }
    for (int r = 0; r < mr; r++)
        _mm512_storeu_ps(out + 16 * r, accf[r]);
}
#elif SIMD_L == 8 && defined(__AVX2__)
/* Two 8-column halves, one or two rows at a time (16 registers). Q8_0 as |q| against x with
 * q's sign (vpsignb): pair sums below 2^15 as with AVX-512 BW. */
SIMD_INLINE void simd_r16_rows(enum kern_dtype dt, int mr, const int8_t *xq, const float *xd,
                               const int32_t *xs, int64_t ldq, int64_t ldb, const uint8_t *wg,
                               int64_t nb, float *out)
{
    const int64_t bb = simd_r16_block_bytes(dt);
    const int32_t off = dt == KERN_DTYPE_Q8_0_R16 ? 0 : 8;
    const __m256i nib = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 accf[2][2];
    __m256i acc[2][2];
    for (int r = 0; r < mr; r++)
        accf[r][0] = accf[r][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = wg + b * bb;
        const int8_t *x = xq + b * KERN_QBLOCK;
        for (int r = 0; r < mr; r++)
            acc[r][0] = acc[r][1] = _mm256_set1_epi32(-off * xs[r * ldb + b]);
        for (int h = 0; h < 2; h++) {
            if (dt == KERN_DTYPE_Q8_0_R16) {
                for (int t = 0; t < 8; t++) {
                    __m256i wv = _mm256_loadu_si256((const __m256i *)(blk + 32 + 64 * t + 32 * h));
                    __m256i wa = _mm256_abs_epi8(wv);
                    for (int r = 0; r < mr; r++) {
                        __m256i xv = _mm256_set1_epi32(simd_r16_word(x + r * ldq + 4 * t));
                        __m256i p = _mm256_maddubs_epi16(wa, _mm256_sign_epi8(xv, wv));
                        acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(p, ones));
                    }
                }
            } else {
                for (int t = 0; t < 4; t++) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(blk + 32 + 64 * t + 32 * h));
                    __m256i lo = _mm256_and_si256(v, nib);
                    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
                    for (int r = 0; r < mr; r++) {
                        const int8_t *xr = x + r * ldq;
                        __m256i pl = _mm256_maddubs_epi16(
                            lo, _mm256_set1_epi32(simd_r16_word(xr + 4 * t)));
                        __m256i ph = _mm256_maddubs_epi16(
                            hi, _mm256_set1_epi32(simd_r16_word(xr + 16 + 4 * t)));
                        acc[r][h] = _mm256_add_epi32(
                            acc[r][h], _mm256_madd_epi16(_mm256_add_epi16(pl, ph), ones));
                    }
                }
            }
        }
        for (int h = 0; h < 2; h++) {
            __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * h)));
            for (int r = 0; r < mr; r++)
                accf[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][h]),
                                             _mm256_mul_ps(dw, _mm256_set1_ps(xd[r * ldb + b])),
                                             accf[r][h]);
        }
    }
    for (int r = 0; r < mr; r++)
        for (int h = 0; h < 2; h++)
            _mm256_storeu_ps(out + 16 * r + 8 * h, accf[r][h]);
}

SIMD_INLINE void simd_r16_tile(enum kern_dtype dt, int mr, const int8_t *xq, const float *xd,
                               const int32_t *xs, int64_t ldq, int64_t ldb, const uint8_t *wg,
                               int64_t nb, float *out)
{
    int r = 0;
    for (; r + 2 <= mr; r += 2)
        simd_r16_rows(dt, 2, xq + r * ldq, xd + r * ldb, xs + r * ldb, ldq, ldb, wg, nb,
                      out + 16 * r);
    if (r < mr)
        simd_r16_rows(dt, 1, xq + r * ldq, xd + r * ldb, xs + r * ldb, ldq, ldb, wg, nb,
                      out + 16 * r);
}

/* Q4_K_R16 as the AVX-512 build does it, one 8-column half and one or two rows at a time. */
SIMD_INLINE void simd_r16k_rows(int q5, int mr, const int8_t *xq, const float *xd, const int32_t *xs,
                                int64_t ldq, int64_t ldb, const uint8_t *wg, int64_t nsb,
                                float *out)
{
    const __m256i nib = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 accf[2][2];
    for (int r = 0; r < mr; r++)
        accf[r][0] = accf[r][1] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *blk = wg + sb * simd_r16k_bytes(q5);
        for (int h = 0; h < 2; h++) {
            __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * h)));
            __m256 mv = _mm256_cvtph_ps(
                _mm_loadu_si128((const __m128i *)(blk + KERN_KR16_DMIN + 16 * h)));
            for (int c = 0; c < 4; c++) {
                __m256i acc[2][2];
                for (int r = 0; r < mr; r++)
                    acc[r][0] = acc[r][1] = _mm256_setzero_si256();
                for (int t = 0; t < 8; t++) {
                    __m256i v = _mm256_loadu_si256(
                        (const __m256i *)(blk + simd_r16k_piece(q5, 8 * c + t) + 32 * h));
                    __m256i lo = _mm256_and_si256(v, nib);
                    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
                    if (q5) {
                        __m256i qh = _mm256_loadu_si256(
                            (const __m256i *)(blk + KERN_Q5R16_QH(t) + 32 * h));
                        const __m256i b4 = _mm256_set1_epi8(0x10);
                        __m256i hl = 2 * c <= 4
                                         ? _mm256_sll_epi16(qh, _mm_cvtsi32_si128(4 - 2 * c))
                                         : _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c - 4));
                        __m256i hh = 2 * c + 1 <= 4
                                         ? _mm256_sll_epi16(qh, _mm_cvtsi32_si128(3 - 2 * c))
                                         : _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c - 3));
                        lo = _mm256_or_si256(lo, _mm256_and_si256(hl, b4));
                        hi = _mm256_or_si256(hi, _mm256_and_si256(hh, b4));
                    }
                    for (int r = 0; r < mr; r++) {
                        const int8_t *x = xq + r * ldq + 256 * sb + 64 * c + 4 * t;
                        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(
                            _mm256_maddubs_epi16(lo, _mm256_set1_epi32(simd_r16_word(x))), ones));
                        acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(
                            _mm256_maddubs_epi16(hi, _mm256_set1_epi32(simd_r16_word(x + 32))),
                            ones));
                    }
                }
                for (int u = 0; u < 2; u++) {
                    int j = 2 * c + u;
                    __m256 f0 = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
                        _mm_loadl_epi64((const __m128i *)(blk + KERN_KR16_SCALES + 16 * j + 8 * h)))));
                    __m256 f1 = _mm256_mul_ps(mv, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
                        _mm_loadl_epi64((const __m128i *)(blk + KERN_KR16_MINS + 16 * j + 8 * h)))));
                    for (int r = 0; r < mr; r++) {
                        int64_t b = r * ldb + 8 * sb + j;
                        __m256 dx = _mm256_set1_ps(xd[b]);
                        accf[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][u]),
                                                     _mm256_mul_ps(f0, dx), accf[r][h]);
                        accf[r][h] = _mm256_fnmadd_ps(_mm256_mul_ps(f1, dx),
                                                      _mm256_set1_ps((float)xs[b]), accf[r][h]);
                    }
                }
            }
        }
    }
    for (int r = 0; r < mr; r++)
        for (int h = 0; h < 2; h++)
            _mm256_storeu_ps(out + 16 * r + 8 * h, accf[r][h]);
}

SIMD_INLINE void simd_r16k_tile(int q5, int mr, const int8_t *xq, const float *xd, const int32_t *xs,
                                int64_t ldq, int64_t ldb, const uint8_t *wg, int64_t nsb,
                                float *out)
{
    int r = 0;
    for (; r + 2 <= mr; r += 2)
        simd_r16k_rows(q5, 2, xq + r * ldq, xd + r * ldb, xs + r * ldb, ldq, ldb, wg, nsb,
                       out + 16 * r);
    if (r < mr)
        simd_r16k_rows(q5, 1, xq + r * ldq, xd + r * ldb, xs + r * ldb, ldq, ldb, wg, nsb,
                       out + 16 * r);
}

/* Q6_K_R16 as the AVX-512 build does it, one 8-column half and one or two rows at a time. */
SIMD_INLINE void simd_r16q6_rows(int mr, const int8_t *xq, const float *xd, const int32_t *xs16,
                                 int64_t ldq, int64_t ldb, const uint8_t *wg, int64_t nsb,
                                 float *out)
{
    const __m256i nib = _mm256_set1_epi8(0x0F), b45 = _mm256_set1_epi8(0x30),
                  ones = _mm256_set1_epi16(1);
    __m256 accf[2][2];
    for (int r = 0; r < mr; r++)
        accf[r][0] = accf[r][1] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *blk = wg + sb * (KERN_R16 * KERN_Q6_K_R16_ROW_BYTES);
        for (int c = 0; c < 2; c++) {
            __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk + 16 * c)));
            for (int h = 0; h < 2; h++)
                for (int i = 0; i < 2; i++) {
                    __m256i acc[2][4];
                    for (int r = 0; r < mr; r++)
                        for (int u = 0; u < 4; u++)
                            acc[r][u] = _mm256_set1_epi32(
                                -32 * xs16[r * 2 * ldb + 16 * sb + 8 * h + 2 * u + i]);
                    for (int t = 0; t < 4; t++) {
                        const uint8_t *st = blk + KERN_Q6R16_QS +
                                            KERN_Q6R16_STEP * (8 * h + 4 * i + t) + 32 * c;
                        __m256i a = _mm256_loadu_si256((const __m256i *)st);
                        __m256i b = _mm256_loadu_si256((const __m256i *)(st + 64));
                        __m256i qh = _mm256_loadu_si256((const __m256i *)(st + 128));
                        __m256i w[4];
                        w[0] = _mm256_or_si256(_mm256_and_si256(a, nib),
                                               _mm256_and_si256(_mm256_slli_epi16(qh, 4), b45));
                        w[1] = _mm256_or_si256(_mm256_and_si256(b, nib),
                                               _mm256_and_si256(_mm256_slli_epi16(qh, 2), b45));
                        w[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), nib),
                                               _mm256_and_si256(qh, b45));
                        w[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), nib),
                                               _mm256_and_si256(_mm256_srli_epi16(qh, 2), b45));
                        for (int r = 0; r < mr; r++) {
                            const int8_t *x = xq + r * ldq + 256 * sb + 128 * h + 16 * i + 4 * t;
                            for (int u = 0; u < 4; u++) {
                                __m256i xv = _mm256_set1_epi32(simd_r16_word(x + 32 * u));
                                acc[r][u] = _mm256_add_epi32(
                                    acc[r][u],
                                    _mm256_madd_epi16(_mm256_maddubs_epi16(w[u], xv), ones));
                            }
                        }
                    }
                    for (int u = 0; u < 4; u++) {
                        int j = 8 * h + 2 * u + i;
                        __m256 f0 = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                            _mm_loadl_epi64((const __m128i *)(blk + KERN_Q6R16_SCALES + 16 * j +
                                                              8 * c)))));
                        for (int r = 0; r < mr; r++)
                            accf[r][c] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(acc[r][u]),
                                _mm256_mul_ps(f0, _mm256_set1_ps(xd[r * ldb + 8 * sb + j / 2])),
                                accf[r][c]);
                    }
                }
        }
    }
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < 2; c++)
            _mm256_storeu_ps(out + 16 * r + 8 * c, accf[r][c]);
}

SIMD_INLINE void simd_r16q6_tile(int mr, const int8_t *xq, const float *xd, const int32_t *xs16,
                                 int64_t ldq, int64_t ldb, const uint8_t *wg, int64_t nsb,
                                 float *out)
{
    int r = 0;
    for (; r + 2 <= mr; r += 2)
        simd_r16q6_rows(2, xq + r * ldq, xd + r * ldb, xs16 + r * 2 * ldb, ldq, ldb, wg, nsb,
                        out + 16 * r);
    if (r < mr)
        simd_r16q6_rows(1, xq + r * ldq, xd + r * ldb, xs16 + r * 2 * ldb, ldq, ldb, wg, nsb,
                        out + 16 * r);
}
#else
/* Portable: plain integer loops, one row at a time. */
SIMD_INLINE void simd_r16_tile(enum kern_dtype dt, int mr, const int8_t *xq, const float *xd,
                               const int32_t *xs, int64_t ldq, int64_t ldb, const uint8_t *wg,
                               int64_t nb, float *out)
{
    const int64_t bb = simd_r16_block_bytes(dt);
    for (int r = 0; r < mr; r++) {
        float accf[KERN_R16] = {0};
        const int8_t *xr = xq + r * ldq;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = wg + b * bb;
            const int8_t *x = xr + b * KERN_QBLOCK;
            int32_t s[KERN_R16];
            for (int c = 0; c < KERN_R16; c++)
                s[c] = dt == KERN_DTYPE_Q8_0_R16 ? 0 : -8 * xs[r * ldb + b];
            if (dt == KERN_DTYPE_Q8_0_R16) {
                for (int t = 0; t < 8; t++)
                    for (int c = 0; c < KERN_R16; c++)
                        for (int e = 0; e < 4; e++)
                            s[c] += (int8_t)blk[32 + 64 * t + 4 * c + e] * x[4 * t + e];
            } else {
                for (int t = 0; t < 4; t++)
                    for (int c = 0; c < KERN_R16; c++)
                        for (int e = 0; e < 4; e++) {
                            int v = blk[32 + 64 * t + 4 * c + e];
                            s[c] += (v & 15) * x[4 * t + e] + (v >> 4) * x[16 + 4 * t + e];
                        }
            }
            for (int c = 0; c < KERN_R16; c++) {
                float dw = kern_f16_to_f32((uint16_t)(blk[2 * c] | (blk[2 * c + 1] << 8)));
                accf[c] += (dw * xd[r * ldb + b]) * (float)s[c];
            }
        }
        memcpy(out + 16 * r, accf, sizeof accf);
    }
}

SIMD_INLINE void simd_r16k_tile(int q5, int mr, const int8_t *xq, const float *xd, const int32_t *xs,
                                int64_t ldq, int64_t ldb, const uint8_t *wg, int64_t nsb,
                                float *out)
{
    for (int r = 0; r < mr; r++) {
        float accf[KERN_R16] = {0};
        for (int64_t sb = 0; sb < nsb; sb++) {
            const uint8_t *blk = wg + sb * simd_r16k_bytes(q5);
            const int8_t *x = xq + r * ldq + 256 * sb;
            for (int j = 0; j < 8; j++) {
                int c = j / 2, shift = 4 * (j % 2);
                int64_t b = r * ldb + 8 * sb + j;
                for (int col = 0; col < KERN_R16; col++) {
                    int32_t sum = 0;
                    for (int t = 0; t < 8; t++)
                        for (int e = 0; e < 4; e++) {
                            int w = (blk[simd_r16k_piece(q5, 8 * c + t) + 4 * col + e] >> shift) & 15;
                            if (q5)
                                w |= ((blk[KERN_Q5R16_QH(t) + 4 * col + e] >> j) & 1) << 4;
                            sum += w * x[32 * j + 4 * t + e];
                        }
                    float f0 = kern_f16_to_f32((uint16_t)(blk[2 * col] | (blk[2 * col + 1] << 8))) *
                               (float)blk[KERN_KR16_SCALES + 16 * j + col];
                    float f1 = kern_f16_to_f32((uint16_t)(blk[KERN_KR16_DMIN + 2 * col] |
                                                          (blk[KERN_KR16_DMIN + 2 * col + 1] << 8))) *
                               (float)blk[KERN_KR16_MINS + 16 * j + col];
                    accf[col] += (f0 * xd[b]) * (float)sum;
                    accf[col] -= (f1 * xd[b]) * (float)xs[b];
                }
            }
        }
        memcpy(out + 16 * r, accf, sizeof accf);
    }
}

/* Q6_K_R16: value e = 16 j + l of sub-block j is e = 128 h + 32 u + l32 of ops.h's Q6_K. */
SIMD_INLINE void simd_r16q6_tile(int mr, const int8_t *xq, const float *xd, const int32_t *xs16,
                                 int64_t ldq, int64_t ldb, const uint8_t *wg, int64_t nsb,
                                 float *out)
{
    (void)xs16; /* the quants' offset is taken off each one here */
    for (int r = 0; r < mr; r++) {
        float accf[KERN_R16] = {0};
        for (int64_t sb = 0; sb < nsb; sb++) {
            const uint8_t *blk = wg + sb * (KERN_R16 * KERN_Q6_K_R16_ROW_BYTES);
            const int8_t *x = xq + r * ldq + 256 * sb;
            for (int j = 0; j < 16; j++) {
                int h = j / 8, u = (j / 2) % 4, i = j % 2;
                for (int col = 0; col < KERN_R16; col++) {
                    int32_t sum = 0;
                    for (int l = 0; l < 16; l++) { /* byte l32 % 4 of step 8h + l32 / 4 */
                        const int l32 = 16 * i + l;
                        const uint8_t *st = blk + KERN_Q6R16_QS +
                                            KERN_Q6R16_STEP * (8 * h + l32 / 4) + 4 * col + l32 % 4;
                        int lo = st[64 * (u % 2)], hi = st[128];
                        int w = ((lo >> (4 * (u / 2))) & 15) | ((hi >> (2 * u)) & 3) << 4;
                        sum += (w - 32) * x[16 * j + l];
                    }
                    float f0 = kern_f16_to_f32((uint16_t)(blk[2 * col] | (blk[2 * col + 1] << 8))) *
                               (float)(int8_t)blk[KERN_Q6R16_SCALES + 16 * j + col];
                    accf[col] += (f0 * xd[r * ldb + 8 * sb + j / 2]) * (float)sum;
                }
            }
        }
        memcpy(out + 16 * r, accf, sizeof accf);
    }
}
#endif

/* simd_r16_tile with mr made a compile-time constant. */
SIMD_INLINE void simd_r16_body(enum kern_dtype dt, const int8_t *xq, const float *xd,
                               const int32_t *xs, int64_t ldq, int64_t ldb, const uint8_t *wg,
                               int64_t nb, float *out, int mr)
{
    if (dt == KERN_DTYPE_Q6_K_R16) { /* nb / 8 super-blocks; xs: the sums per 16 */
        switch (mr) {
        case 1:
            simd_r16q6_tile(1, xq, xd, xs, ldq, ldb, wg, nb / 8, out);
            break;
        case 2:
            simd_r16q6_tile(2, xq, xd, xs, ldq, ldb, wg, nb / 8, out);
            break;
        case 3:
            simd_r16q6_tile(3, xq, xd, xs, ldq, ldb, wg, nb / 8, out);
            break;
        default:
            simd_r16q6_tile(4, xq, xd, xs, ldq, ldb, wg, nb / 8, out);
            break;
        }
        return;
    }
    if (dt == KERN_DTYPE_Q4_K_R16 || dt == KERN_DTYPE_Q5_K_R16) { /* nb / 8 super-blocks */
        const int q5 = dt == KERN_DTYPE_Q5_K_R16;
        switch (mr) {
        case 1:
            simd_r16k_tile(q5, 1, xq, xd, xs, ldq, ldb, wg, nb / 8, out);
            break;
        case 2:
            simd_r16k_tile(q5, 2, xq, xd, xs, ldq, ldb, wg, nb / 8, out);
            break;
        case 3:
            simd_r16k_tile(q5, 3, xq, xd, xs, ldq, ldb, wg, nb / 8, out);
            break;
        default:
            simd_r16k_tile(q5, 4, xq, xd, xs, ldq, ldb, wg, nb / 8, out);
            break;
        }
        return;
    }
    switch (mr) {
    case 1:
        simd_r16_tile(dt, 1, xq, xd, xs, ldq, ldb, wg, nb, out);
        break;
    case 2:
        simd_r16_tile(dt, 2, xq, xd, xs, ldq, ldb, wg, nb, out);
        break;
    case 3:
        simd_r16_tile(dt, 3, xq, xd, xs, ldq, ldb, wg, nb, out);
        break;
    default:
        simd_r16_tile(dt, 4, xq, xd, xs, ldq, ldb, wg, nb, out);
        break;
    }
}

#endif
