/* Reference matmul: y[m, n] (+)= x[m, k] @ W[n, k]^T with fp64 accumulation, and the int8 dot
 * of the R16 formats exactly as ops.h words it. Plain C, the specification of the op;
 * deliberately slow (no blocking, threads or SIMD). */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "ref.h"

int kern_ref_matmul_check(const struct kern_matmul_params *p)
{
    int64_t xs, ws, ys;
    if (!p || p->m < 0 || p->n < 0 || p->k < 0 || p->ldx < p->k || p->ldy < p->n)
        return KERN_ERR_INVALID;
    if (kern_dtype_is_r16(p->w_dtype)) {
        /* k in whole blocks, and the padded groups' bytes must fit. */
        if (kern_dtype_matrix_bytes(p->w_dtype, p->n, p->k) < 0)
            return KERN_ERR_INVALID;
    } else if (!ref_dtype_ok(p->w_dtype) && (kern_dtype_block_elems(p->w_dtype) == 0 ||
                                             p->k % kern_dtype_block_elems(p->w_dtype) != 0)) {
        return KERN_ERR_INVALID;
    }
    if (ref_span(p->m, p->k, p->ldx, &xs) || ref_mul(p->n, p->k, &ws) ||
        ref_span(p->m, p->n, p->ldy, &ys))
        return KERN_ERR_INVALID;
    if (ys > 0 && !p->y)
        return KERN_ERR_INVALID;
    if (ys > 0 && p->k > 0 && (!p->x || !p->w))
        return KERN_ERR_INVALID;
    return KERN_OK;
}

/* Block b of row j of a Q8_0_R16 or Q4_0_R16 matrix of k columns: the address of the 16
 * rows' block b, and the row's place r in its group. */
static const uint8_t *r16_block(const struct kern_matmul_params *p, int64_t j, int64_t b, int *r)
{
    enum kern_dtype base = kern_dtype_r16_base(p->w_dtype);
    size_t row_bytes = (size_t)kern_dtype_row_bytes(base, p->k);
    size_t block_bytes = (size_t)kern_dtype_row_bytes(base, KERN_QBLOCK);
    *r = (int)(j % KERN_R16);
    return (const uint8_t *)p->w + (size_t)(j / KERN_R16) * KERN_R16 * row_bytes +
           (size_t)b * KERN_R16 * block_bytes;
}

/* Row r's fp16 scale of a group's block. */
static float r16_scale(const uint8_t *blk, int r)
{
    return kern_f16_to_f32((uint16_t)(blk[2 * r] | (blk[2 * r + 1] << 8)));
}

/* Row r's integer value t (0..31) of a group's block: Q8_0 the int8 of piece t / 4; Q4_0 the
 * nibble of byte t % 16 (piece (t % 16) / 4; low for t < 16, high after) minus 8. */
static int r16_value(int q4, const uint8_t *blk, int r, int t)
{
    const uint8_t *pieces = blk + 2 * KERN_R16;
    if (!q4)
        return (int8_t)pieces[(t / 4) * 4 * KERN_R16 + r * 4 + t % 4];
    int u = t % 16;
    int byte = pieces[(u / 4) * 4 * KERN_R16 + r * 4 + u % 4];
    return (t < 16 ? byte & 15 : byte >> 4) - 8;
}

/* Q4_K_R16 / Q5_K_R16 (ops.h): a group's super-block holds the rows' fp16 d and dmin, the
 * scales and mins of sub-blocks 0..7 as bytes, the nibbles in pieces of 4 bytes (piece p:
 * bytes 4p .. 4p + 3 of each row's 128) and Q5_K's qh pieces, at ops.h's KERN_KR16_*. */

/* Super-block sb of row j's group (Q4_K_R16 or Q5_K_R16). */
static const uint8_t *q4k_superblock(const struct kern_matmul_params *p, int64_t j, int64_t sb)
{
    const size_t sb_bytes = KERN_R16 * (p->w_dtype == KERN_DTYPE_Q5_K_R16
                                            ? KERN_Q5_K_R16_ROW_BYTES
                                            : KERN_Q4_K_R16_ROW_BYTES);
    return (const uint8_t *)p->w +
           ((size_t)(j / KERN_R16) * (size_t)(p->k / KERN_QKBLOCK) + (size_t)sb) * sb_bytes;
}

/* Row r's f0 = d * scale (min != 0: f1 = dmin * min) of sub-block s: an exact fp32 product. */
static float q4k_factor(const uint8_t *sb, int r, int s, int min)
{
    const uint8_t *h = sb + (min ? KERN_KR16_DMIN : 0) + 2 * r;
    return kern_f16_to_f32((uint16_t)(h[0] | (h[1] << 8))) *
           (float)sb[(min ? KERN_KR16_MINS : KERN_KR16_SCALES) + s * KERN_R16 + r];
}

/* Row r's 4-bit quant t (0..31) of sub-block s: the nibble (low for an even s, high for an odd
 * one) of Q4_K / Q5_K nibble byte 32 (s / 2) + t, which is byte t % 4 of piece p = 8 (s / 2) +
 * t / 4 (q5: Q5_K_R16's place for it). */
static int q4k_quant(const uint8_t *sb, int q5, int r, int s, int t)
{
    const int p = 8 * (s / 2) + t / 4;
    int byte = sb[(q5 ? KERN_Q5R16_PIECE(p) : KERN_KR16_QS + p * 4 * KERN_R16) + r * 4 + t % 4];
    return s % 2 ? byte >> 4 : byte & 15;
}

/* Q5_K_R16's fifth bit of row r's value t of sub-block s, as 16 or 0. */
static int q5k_high(const uint8_t *sb, int r, int s, int t)
{
    return ((sb[KERN_Q5R16_QH(t / 4) + r * 4 + t % 4] >> s) & 1) << 4;
}

/* Q6_K_R16 (ops.h): super-block sb of row j's group; row r's f0 = d * scale of sub-block s (0..15,
 * an exact fp32 product); row r's quant (0..63) of value e (0..255) of its super-block, which
 * Q6_K keeps (dtype.h's kern_kq_quant) as e = 128 h + 32 u + l: nibble u / 2 of ql byte
 * 64 h + 32 (u % 2) + l and bits 2u, 2u + 1 of qh byte 32 h + l. With l = 4 j + b, both are byte
 * b of row r's pieces in step 8 h + j: part u % 2 (ql) and part 2 (qh). */
static const uint8_t *q6k_superblock(const struct kern_matmul_params *p, int64_t j, int64_t sb)
{
    return (const uint8_t *)p->w + ((size_t)(j / KERN_R16) * (size_t)(p->k / KERN_QKBLOCK) +
                                    (size_t)sb) * KERN_R16 * KERN_Q6_K_R16_ROW_BYTES;
}

static float q6k_factor(const uint8_t *sb, int r, int s)
{
    return kern_f16_to_f32((uint16_t)(sb[2 * r] | (sb[2 * r + 1] << 8))) *
           (float)(int8_t)sb[KERN_Q6R16_SCALES + s * KERN_R16 + r];
}

static int q6k_quant(const uint8_t *sb, int r, int e)
{
    int h = e / 128, u = (e / 32) % 4, l = e % 32;
    const uint8_t *step = sb + KERN_Q6R16_QS + (8 * h + l / 4) * KERN_Q6R16_STEP + r * 4 + l % 4;
    int lo = step[(u % 2) * 4 * KERN_R16], hi = step[2 * 4 * KERN_R16];
    return ((lo >> (4 * (u / 2))) & 15) | ((hi >> (2 * u)) & 3) << 4;
}

/* Block b's term of row j against an x block rounded to q (scale d, sum of q xsum), in fp64:
 * Q8_0 / Q4_0 (dw * d) * s; Q4_K, Q5_K (f0 * d) * s - (f1 * d) * xsum; Q6_K the sum of its two
 * sub-blocks' (f0 * d) * s. Each fp32 product of two factors is one rounding; its product with
 * an integer (|s| < 2^20) is exact in fp64. */
static double r16_term(const struct kern_matmul_params *p, int64_t j, int64_t b,
                       const int8_t *q, float d, int32_t xsum)
{
    int64_t s = 0;
    if (p->w_dtype == KERN_DTYPE_Q4_K_R16 || p->w_dtype == KERN_DTYPE_Q5_K_R16) {
        const uint8_t *sb = q4k_superblock(p, j, b / 8);
        const int r = (int)(j % KERN_R16), sub = (int)(b % 8);
        const int q5 = p->w_dtype == KERN_DTYPE_Q5_K_R16;
        for (int t = 0; t < KERN_QBLOCK; t++)
            s += (int64_t)(q4k_quant(sb, q5, r, sub, t) | (q5 ? q5k_high(sb, r, sub, t) : 0)) * q[t];
        float f0 = q4k_factor(sb, r, sub, 0) * d, f1 = q4k_factor(sb, r, sub, 1) * d;
        return (double)f0 * (double)s - (double)f1 * (double)xsum;
    }
    if (p->w_dtype == KERN_DTYPE_Q6_K_R16) { /* two sub-blocks of 16, each its own term */
        const uint8_t *sb = q6k_superblock(p, j, b / 8);
        const int r = (int)(j % KERN_R16);
        double term = 0.0;
        for (int h = 0; h < 2; h++) {
            const int sub = (int)(2 * (b % 8) + h);
            int64_t s16 = 0;
            for (int t = 0; t < 16; t++)
                s16 += (int64_t)(q6k_quant(sb, r, 16 * sub + t) - 32) * q[16 * h + t];
            term += (double)(q6k_factor(sb, r, sub) * d) * (double)s16;
        }
        return term;
    }
    const int q4 = p->w_dtype == KERN_DTYPE_Q4_0_R16;
    int r;
    const uint8_t *blk = r16_block(p, j, b, &r);
    for (int t = 0; t < KERN_QBLOCK; t++)
        s += (int64_t)r16_value(q4, blk, r, t) * q[t];
    float f = r16_scale(blk, r) * d; /* one fp32 rounding */
    return (double)f * (double)s;
}

/* The int8 dot of the R16 formats. The quantized x row (k int8, and k / 32 scales and sums of
 * q) lives in scratch buffers, so that each row is rounded once. */
static int matmul_r16(const struct kern_matmul_params *p)
{
    const int64_t n_blocks = p->k / KERN_QBLOCK;
    int8_t *xq = malloc((size_t)p->k + 1);
    float *xd = malloc((size_t)n_blocks * sizeof *xd + 1);
    int32_t *xsum = malloc((size_t)n_blocks * sizeof *xsum + 1);
    if (!xq || !xd || !xsum) {
        free(xq);
        free(xd);
        free(xsum);
        return KERN_ERR_NOMEM;
    }
    for (int64_t i = 0; i < p->m; i++) {
        const float *x = p->x + i * p->ldx;
        float *y = p->y + i * p->ldy;
        int finite = 1;
        for (int64_t t = 0; t < p->k; t++)
            finite &= isfinite(x[t]) != 0;
        if (!finite) { /* the whole row, whatever W and y hold */
            for (int64_t j = 0; j < p->n; j++)
                y[j] = NAN;
            continue;
        }
        for (int64_t b = 0; b < n_blocks; b++)
            xd[b] = kern_x8_block(x + b * KERN_QBLOCK, xq + b * KERN_QBLOCK, &xsum[b]);
        for (int64_t j = 0; j < p->n; j++) {
            double acc = p->accumulate ? (double)y[j] : 0.0;
            for (int64_t b = 0; b < n_blocks; b++)
                acc += r16_term(p, j, b, xq + b * KERN_QBLOCK, xd[b], xsum[b]);
            y[j] = (float)acc;
        }
    }
    free(xq);
    free(xd);
    free(xsum);
    return KERN_OK;
}

int kern_ref_matmul(struct kern_ctx *ctx, const struct kern_matmul_params *p)
{
    (void)ctx;
    int rc = kern_ref_matmul_check(p);
    if (rc)
        return rc;
    if (kern_dtype_is_r16(p->w_dtype)) {
        /* An R16 format of ops.h not written out here (yet) is refused, not read as another. */
        if (p->w_dtype != KERN_DTYPE_Q8_0_R16 && p->w_dtype != KERN_DTYPE_Q4_0_R16 &&
            p->w_dtype != KERN_DTYPE_Q4_K_R16 && p->w_dtype != KERN_DTYPE_Q5_K_R16 &&
            p->w_dtype != KERN_DTYPE_Q6_K_R16)
            return KERN_ERR_UNSUPPORTED;
        return matmul_r16(p);
    }
    for (int64_t i = 0; i < p->m; i++) {
        for (int64_t j = 0; j < p->n; j++) {
            double acc = p->accumulate ? (double)p->y[i * p->ldy + j] : 0.0;
            for (int64_t t = 0; t < p->k; t++)
                acc += (double)p->x[i * p->ldx + t] *
                       (double)ref_load(p->w, p->w_dtype, j * p->k + t);
            p->y[i * p->ldy + j] = (float)acc;
        }
    }
    return KERN_OK;
}
