/* Weight quantization into the block formats of ops.h (Q8_0, Q4_0) and the interleaving of
 * those and of Q4_K into the R16 formats, done once at model load. Not an op: plain C on the
 * caller's thread; the matmul kernels read what it writes. */
#include <math.h>
#include <string.h>

#include "dtype.h"
#include "ops.h"
#include "ref/ref.h"

/* The fp16 scale s / div (fp32 quotient, rounded to nearest even) into out[0..1] and *d; -1
 * when it is not finite. */
static int block_scale(float s, float div, uint8_t *out, float *d)
{
    uint16_t dh = kern_f32_to_f16(s / div);
    *d = kern_f16_to_f32(dh);
    out[0] = (uint8_t)(dh & 0xff);
    out[1] = (uint8_t)(dh >> 8);
    return isfinite(*d) ? 0 : -1;
}

/* v rounded half away from zero, for finite |v| < 2^30 (quotients here stay below 300):
 * exact, and inline where roundf would be a library call. */
static int round_away(float v)
{
    int i = (int)v;                 /* truncated toward zero */
    float frac = v - (float)i;      /* exact: both in the same binade or below */
    return i + (frac >= 0.5f) - (frac <= -0.5f);
}

static int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* One block of KERN_QBLOCK finite values into out (ops.h's layouts); returns
 * KERN_ERR_INVALID for a scale beyond fp16. */
static int quantize_block(const float *x, enum kern_dtype to, uint8_t *out)
{
    float amax = 0.0f, m = 0.0f;
    for (int i = 0; i < KERN_QBLOCK; i++)
        if (fabsf(x[i]) > amax) { /* the first of the largest magnitudes */
            amax = fabsf(x[i]);
            m = x[i];
        }
    float d;
    if (block_scale(to == KERN_DTYPE_Q8_0 ? amax : m, to == KERN_DTYPE_Q8_0 ? 127.0f : -8.0f,
                    out, &d) != 0)
        return KERN_ERR_INVALID;
    /* d rounded to fp16 may sit just below max|x| / 127 (or 8), and a subnormal d further:
     * the quotient can pass the range and is clamped. */
    if (to == KERN_DTYPE_Q8_0) {
        for (int i = 0; i < KERN_QBLOCK; i++)
            out[2 + i] =
                (uint8_t)(int8_t)(d == 0.0f ? 0 : clamp_int(round_away(x[i] / d), -127, 127));
        return KERN_OK;
    }
    for (int i = 0; i < KERN_QBLOCK / 2; i++) {
        int lo = d == 0.0f ? 8 : clamp_int(round_away(x[i] / d) + 8, 0, 15);
        int hi = d == 0.0f ? 8 : clamp_int(round_away(x[i + KERN_QBLOCK / 2] / d) + 8, 0, 15);
        out[2 + i] = (uint8_t)(lo | (hi << 4));
    }
    return KERN_OK;
}

/* Elements [start, start + n) of a row of src_dtype as fp32 into x: n = KERN_QKBLOCK (one
 * super-block) for a K format, else KERN_QBLOCK. Exact: every stored type widens exactly. */
static void load_chunk(const char *row, enum kern_dtype src_dtype, int64_t start, int n, float *x)
{
    switch (src_dtype) {
    case KERN_DTYPE_Q4_K:
    case KERN_DTYPE_Q5_K:
    case KERN_DTYPE_Q6_K:
        kern_kq_widen(kern_dtype_kq_bits(src_dtype),
                      (const uint8_t *)row + kern_dtype_row_bytes(src_dtype, start), x);
        return;
    default:
        for (int i = 0; i < n; i++)
            x[i] = ref_load(row, src_dtype, start + i);
    }
}

int kern_quantize(const void *src, enum kern_dtype src_dtype, int64_t n_rows, int64_t k,
                  enum kern_dtype to, void *dst)
{
    int64_t row_bytes = kern_dtype_row_bytes(to, k);
    int64_t src_row = kern_dtype_row_bytes(src_dtype, k);
    if (!src || !dst || n_rows < 0 || row_bytes < 0 || src_row < 0 ||
        (to != KERN_DTYPE_Q8_0 && to != KERN_DTYPE_Q4_0))
        return KERN_ERR_INVALID;
    size_t block_bytes = (size_t)kern_dtype_row_bytes(to, KERN_QBLOCK);
    int chunk = kern_dtype_block_elems(src_dtype) == KERN_QKBLOCK ? KERN_QKBLOCK : KERN_QBLOCK;
    for (int64_t r = 0; r < n_rows; r++) {
        const char *row = (const char *)src + (size_t)r * (size_t)src_row;
        uint8_t *out = (uint8_t *)dst + (size_t)r * (size_t)row_bytes;
        for (int64_t c = 0; c < k; c += chunk) {
            float x[KERN_QKBLOCK];
            load_chunk(row, src_dtype, c, chunk, x);
            for (int i = 0; i < chunk; i++)
                if (!isfinite(x[i]))
                    return KERN_ERR_INVALID;
            for (int b = 0; b < chunk / KERN_QBLOCK; b++) {
                int rc = quantize_block(x + b * KERN_QBLOCK, to,
                                        out + (size_t)(c / KERN_QBLOCK + b) * block_bytes);
                if (rc)
                    return rc;
            }
        }
    }
    return KERN_OK;
}

/* The R16 formats store a block's values as pieces of 4 bytes (ops.h). */
#define R16_PIECE 4

/* A K super-block's nibble bytes and Q5_K's fifth-bit bytes. */
#define Q4K_QS_BYTES (KERN_QKBLOCK / 2)
#define Q5K_QH_BYTES (KERN_QKBLOCK / 8)
/* A Q6_K super-block (ops.h): ql, then qh, then 16 int8 scales at Q6K_SCALES, then d. */
#define Q6K_QL_BYTES (KERN_QKBLOCK / 2)
#define Q6K_QH_BYTES (KERN_QKBLOCK / 4)
#define Q6K_SCALES (Q6K_QL_BYTES + Q6K_QH_BYTES)
#define Q6K_D (Q6K_SCALES + 16)
_Static_assert(Q6K_D + 2 == KERN_Q6_K_BLOCK_BYTES, "Q6_K's parts fill its block");

/* kern_repack from Q4_K (q5 0) or Q5_K (q5 1): n_rows rows of n_sb super-blocks into n_padded
 * rows (whole groups) of Q4_K_R16 / Q5_K_R16. The 6-bit scales and mins are unpacked here
 * once, so that the matmul reads each as a byte. */
static void repack_k(int q5, const uint8_t *src, int64_t n_rows, int64_t n_padded,
                     int64_t n_sb, uint8_t *dst)
{
    /* The padding rows past n_rows copy this super-block: d = dmin = 0, scales, mins and
     * quants 0. Q5_K's 32 fifth-bit bytes qh come before its nibbles. */
    static const uint8_t zero_sb[KERN_Q5_K_BLOCK_BYTES];
    const size_t sb_in = q5 ? KERN_Q5_K_BLOCK_BYTES : KERN_Q4_K_BLOCK_BYTES;
    const size_t sb_out = KERN_R16 * (q5 ? KERN_Q5_K_R16_ROW_BYTES : KERN_Q4_K_R16_ROW_BYTES);
    const size_t qs_in = q5 ? 48 : 16;
    for (int64_t j = 0; j < n_padded; j++) {
        int r = (int)(j % KERN_R16);
        uint8_t *group = dst + (size_t)(j / KERN_R16) * (size_t)n_sb * sb_out;
        for (int64_t b = 0; b < n_sb; b++) {
            const uint8_t *in = j < n_rows ? src + (size_t)(j * n_sb + b) * sb_in : zero_sb;
            uint8_t *out = group + (size_t)b * sb_out;
            memcpy(out + 2 * r, in, 2); /* d and dmin, bytes as stored */
            memcpy(out + KERN_KR16_DMIN + 2 * r, in + 2, 2);
            for (int s = 0; s < 8; s++) {
                int sc, mn;
                kern_k_scale_min(in + 4, s, &sc, &mn);
                out[KERN_KR16_SCALES + s * KERN_R16 + r] = (uint8_t)sc;
                out[KERN_KR16_MINS + s * KERN_R16 + r] = (uint8_t)mn;
            }
            for (int p = 0; p < Q4K_QS_BYTES / R16_PIECE; p++)
                memcpy(out + (q5 ? KERN_Q5R16_PIECE(p) : KERN_KR16_QS + p * KERN_R16 * R16_PIECE) +
                           r * R16_PIECE,
                       in + qs_in + p * R16_PIECE, R16_PIECE);
            for (int p = 0; q5 && p < Q5K_QH_BYTES / R16_PIECE; p++)
                memcpy(out + KERN_Q5R16_QH(p) + r * R16_PIECE, in + 16 + p * R16_PIECE, R16_PIECE);
        }
    }
}

/* kern_repack from Q6_K: its 16 int8 scales one per sub-block, its ql and qh bytes as pieces,
 * three to a step (ops.h). */
static void repack_q6k(const uint8_t *src, int64_t n_rows, int64_t n_padded, int64_t n_sb,
                       uint8_t *dst)
{
    static const uint8_t zero_sb[KERN_Q6_K_BLOCK_BYTES]; /* the padding rows: d = 0, all 0 */
    const size_t sb_out = KERN_R16 * KERN_Q6_K_R16_ROW_BYTES;
    for (int64_t j = 0; j < n_padded; j++) {
        int r = (int)(j % KERN_R16);
        uint8_t *group = dst + (size_t)(j / KERN_R16) * (size_t)n_sb * sb_out;
        for (int64_t b = 0; b < n_sb; b++) {
            const uint8_t *in =
                j < n_rows ? src + (size_t)(j * n_sb + b) * KERN_Q6_K_BLOCK_BYTES : zero_sb;
            uint8_t *out = group + (size_t)b * sb_out;
            memcpy(out + 2 * r, in + Q6K_D, 2); /* d, bytes as stored */
            for (int s = 0; s < 16; s++)
                out[KERN_Q6R16_SCALES + s * KERN_R16 + r] = in[Q6K_SCALES + s];
            for (int s = 0; s < 16; s++) { /* step s = 8h + j */
                const int h = s / 8, j = s % 8;
                const int from[3] = {64 * h + 4 * j, 64 * h + 32 + 4 * j,
                                     Q6K_QL_BYTES + 32 * h + 4 * j};
                for (int part = 0; part < 3; part++)
                    memcpy(out + KERN_Q6R16_QS + s * KERN_Q6R16_STEP +
                               part * KERN_R16 * R16_PIECE + r * R16_PIECE,
                           in + from[part], R16_PIECE);
            }
        }
    }
}

int kern_repack(const void *src, enum kern_dtype from, int64_t n_rows, int64_t k, void *dst)
{
    enum kern_dtype to = kern_dtype_r16_of(from);
    /* Only the sources interleaved below: an R16 format that ops.h has and this file does not
     * yet write is refused, not taken for Q8_0 / Q4_0. kern_dtype_matrix_bytes rounds n_rows
     * up to whole groups: keep it clear of INT64_MAX so that the rounding cannot overflow. */
    if ((from != KERN_DTYPE_Q8_0 && from != KERN_DTYPE_Q4_0 && from != KERN_DTYPE_Q4_K &&
         from != KERN_DTYPE_Q5_K && from != KERN_DTYPE_Q6_K) ||
        to == KERN_DTYPE_COUNT || n_rows < 0 || n_rows > INT64_MAX - KERN_R16 || k < 0)
        return KERN_ERR_INVALID;
    int64_t row_bytes = kern_dtype_row_bytes(from, k);
    int64_t dst_bytes = kern_dtype_matrix_bytes(to, n_rows, k);
    if (row_bytes < 0 || dst_bytes < 0 || (dst_bytes > 0 && (!src || !dst)))
        return KERN_ERR_INVALID;
    if (dst_bytes == 0) /* no rows or no columns: nothing to move */
        return KERN_OK;
    const int64_t n_padded = (n_rows + KERN_R16 - 1) / KERN_R16 * KERN_R16; /* whole groups */
    if (from == KERN_DTYPE_Q4_K || from == KERN_DTYPE_Q5_K) {
        repack_k(from == KERN_DTYPE_Q5_K, src, n_rows, n_padded, k / KERN_QKBLOCK, dst);
        return KERN_OK;
    }
    if (from == KERN_DTYPE_Q6_K) {
        repack_q6k(src, n_rows, n_padded, k / KERN_QKBLOCK, dst);
        return KERN_OK;
    }
    /* src's n_rows * row_bytes is at most dst_bytes, so every offset below fits. */
    const size_t bb = (size_t)kern_dtype_row_bytes(from, KERN_QBLOCK);
    const size_t n_pieces = (bb - 2) / R16_PIECE; /* 8 (Q8_0) or 4 (Q4_0) */
    const int64_t n_blocks = k / KERN_QBLOCK;
    /* The padding rows past n_rows copy this block: every byte 0, so d = 0. */
    static const uint8_t zero_block[KERN_Q8_0_BLOCK_BYTES];
    for (int64_t j = 0; j < n_padded; j++) {
        int r = (int)(j % KERN_R16);
        uint8_t *group = (uint8_t *)dst + (size_t)(j - r) * (size_t)row_bytes;
        const uint8_t *row = j < n_rows ? (const uint8_t *)src + (size_t)j * (size_t)row_bytes
                                        : NULL;
        for (int64_t b = 0; b < n_blocks; b++) {
            const uint8_t *blk = row ? row + (size_t)b * bb : zero_block;
            uint8_t *out = group + (size_t)b * KERN_R16 * bb;
            memcpy(out + 2 * r, blk, 2); /* the fp16 scale, bytes as stored */
            for (size_t t = 0; t < n_pieces; t++)
                memcpy(out + 2 * KERN_R16 + t * KERN_R16 * R16_PIECE + (size_t)r * R16_PIECE,
                       blk + 2 + t * R16_PIECE, R16_PIECE);
        }
    }
    return KERN_OK;
}
