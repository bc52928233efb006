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

/* Block b of row j of an R16 matrix of k columns: the address of the 16 rows' block b, and
 * the row's place r in its group. */
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

/* The int8 dot of the R16 formats. The quantized x row (k int8 and k / 32 scales) lives in
 * one scratch buffer, so that each row is rounded once. */
static int matmul_r16(const struct kern_matmul_params *p)
{
    const int q4 = kern_dtype_r16_base(p->w_dtype) == KERN_DTYPE_Q4_0;
    const int64_t n_blocks = p->k / KERN_QBLOCK;
    int8_t *xq = malloc((size_t)p->k + 1);
    float *xd = malloc((size_t)n_blocks * sizeof *xd + 1);
    if (!xq || !xd) {
        free(xq);
        free(xd);
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
        int32_t sum; /* the block's sum of q: not needed here */
        for (int64_t b = 0; b < n_blocks; b++)
            xd[b] = kern_x8_block(x + b * KERN_QBLOCK, xq + b * KERN_QBLOCK, &sum);
        for (int64_t j = 0; j < p->n; j++) {
            double acc = p->accumulate ? (double)y[j] : 0.0;
            for (int64_t b = 0; b < n_blocks; b++) {
                int r;
                const uint8_t *blk = r16_block(p, j, b, &r);
                int64_t s = 0;
                for (int t = 0; t < KERN_QBLOCK; t++)
                    s += (int64_t)r16_value(q4, blk, r, t) * xq[b * KERN_QBLOCK + t];
                float f = r16_scale(blk, r) * xd[b]; /* one fp32 rounding */
                acc += (double)f * (double)s;
            }
            y[j] = (float)acc;
        }
    }
    free(xq);
    free(xd);
    return KERN_OK;
}

int kern_ref_matmul(struct kern_ctx *ctx, const struct kern_matmul_params *p)
{
    (void)ctx;
    int rc = kern_ref_matmul_check(p);
    if (rc)
        return rc;
    if (kern_dtype_is_r16(p->w_dtype))
        return matmul_r16(p);
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
