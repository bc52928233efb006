/* kern_quantize (kernels/quant.c) against hand-worked blocks: the scale rounded to fp16,
 * quotients rounded half away from zero and clamped, Q4_0's signed scale and nibble packing,
 * zero blocks, every source dtype, each element within half a step of its value, and every
 * input it must refuse; kern_repack (Q8_0, Q4_0 and the K formats) byte for byte against an
 * un-interleave written here. The matmul kernels that read the formats are checked in
 * test_ops.c; the whole quantized model in the golden suite. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "kt_util.h"
#include "ops.h"

#include "../test_util.h"

#define B KERN_QBLOCK
#define BB KERN_Q8_0_BLOCK_BYTES
#define Q4B KERN_Q4_0_BLOCK_BYTES

static uint16_t scale_bits(const uint8_t *blk)
{
    return (uint16_t)(blk[0] | (blk[1] << 8));
}

static int8_t q_of(const uint8_t *blk, int i)
{
    return (int8_t)blk[2 + i];
}

/* A block whose largest magnitude is 127 has d = 1 exactly: q is x rounded, ties away. */
static void test_rounding(void)
{
    float x[B] = {0};
    x[0] = 127.0f;
    x[1] = 2.5f;
    x[2] = -2.5f;
    x[3] = 0.5f;
    x[4] = -0.5f;
    x[5] = 0.49999997f;
    x[6] = 1.5f;
    x[7] = -126.5f;
    uint8_t out[BB];
    CHECK(kern_quantize(x, KERN_DTYPE_F32, 1, B, KERN_DTYPE_Q8_0, out) == KERN_OK, "d = 1 block");
    CHECK(kern_f16_to_f32(scale_bits(out)) == 1.0f, "d = %g, want 1", (double)kern_f16_to_f32(scale_bits(out)));
    static const int8_t want[8] = {127, 3, -3, 1, -1, 0, 2, -127};
    for (int i = 0; i < 8; i++)
        CHECK(q_of(out, i) == want[i], "q[%d] = %d, want %d", i, q_of(out, i), want[i]);
    for (int i = 8; i < B; i++)
        CHECK(q_of(out, i) == 0, "q[%d] of 0.0 = %d", i, q_of(out, i));
}

/* max|x| / 127 is not an fp16 value: d rounds to nearest even, and where it rounds down the
 * largest quotient passes 127 and is clamped. */
static void test_scale_and_clamp(void)
{
    float x[B];
    for (int i = 0; i < B; i++)
        x[i] = (float)(i - 16) * 0.01f;
    x[31] = 1.0f;
    uint8_t out[BB];
    CHECK(kern_quantize(x, KERN_DTYPE_F32, 1, B, KERN_DTYPE_Q8_0, out) == KERN_OK, "ramp block");
    uint16_t want_d = kern_f32_to_f16(1.0f / 127.0f);
    CHECK(scale_bits(out) == want_d, "scale bits %04x, want %04x", scale_bits(out), want_d);
    float d = kern_f16_to_f32(want_d);
    for (int i = 0; i < B; i++) {
        float deq = d * (float)q_of(out, i);
        float lim = fminf(fmaxf(roundf(x[i] / d), -127.0f), 127.0f) * d;
        CHECK(deq == lim, "element %d: %g, want %g", i, (double)deq, (double)lim);
        CHECK(fabsf(deq - x[i]) <= 0.5f * d + 1e-7f || abs(q_of(out, i)) == 127,
              "element %d off by more than half a step", i);
    }
    /* 1/127 in fp16 rounds down (0x2008 = 0.0078773...), so 1 / d > 127: clamped. */
    CHECK(d < 1.0f / 127.0f && q_of(out, 31) == 127, "clamp: d %.9g, q %d", (double)d, q_of(out, 31));
}

/* Random rows in every source dtype: each element within half a step (or clamped), and the
 * 16-bit sources give the bits their fp32 widening gives. */
static void test_rows(void)
{
    enum { ROWS = 5, K = 4 * B };
    float xf[ROWS * K];
    uint16_t xb[ROWS * K], xh[ROWS * K];
    uint32_t s = 12345;
    for (int i = 0; i < ROWS * K; i++) {
        s = s * 1664525u + 1013904223u;
        float v = ((float)(s >> 8) / 16777216.0f - 0.5f) * (i % 64 < 32 ? 4.0f : 0.001f);
        xb[i] = kern_f32_to_bf16(v);
        xh[i] = kern_f32_to_f16(v);
        xf[i] = v;
    }
    uint8_t qf[ROWS * K / B * BB], qb[sizeof qf], qh[sizeof qf], qw[sizeof qf];
    CHECK(kern_quantize(xf, KERN_DTYPE_F32, ROWS, K, KERN_DTYPE_Q8_0, qf) == KERN_OK, "f32 rows");
    CHECK(kern_quantize(xb, KERN_DTYPE_BF16, ROWS, K, KERN_DTYPE_Q8_0, qb) == KERN_OK, "bf16 rows");
    CHECK(kern_quantize(xh, KERN_DTYPE_F16, ROWS, K, KERN_DTYPE_Q8_0, qh) == KERN_OK, "f16 rows");
    for (int i = 0; i < ROWS * K; i++) {
        const uint8_t *blk = qf + (i / B) * BB;
        float d = kern_f16_to_f32(scale_bits(blk));
        float deq = d * (float)q_of(blk, i % B);
        CHECK(fabsf(deq - xf[i]) <= 0.5f * d * 1.0001f || abs(q_of(blk, i % B)) == 127,
              "f32 element %d: %g -> %g (d %g)", i, (double)xf[i], (double)deq, (double)d);
    }
    float wide[ROWS * K];
    for (int i = 0; i < ROWS * K; i++)
        wide[i] = kern_bf16_to_f32(xb[i]);
    CHECK(kern_quantize(wide, KERN_DTYPE_F32, ROWS, K, KERN_DTYPE_Q8_0, qw) == KERN_OK, "widened bf16");
    CHECK(memcmp(qw, qb, sizeof qb) == 0, "bf16 source differs from its fp32 widening");
    for (int i = 0; i < ROWS * K; i++)
        wide[i] = kern_f16_to_f32(xh[i]);
    CHECK(kern_quantize(wide, KERN_DTYPE_F32, ROWS, K, KERN_DTYPE_Q8_0, qw) == KERN_OK, "widened f16");
    CHECK(memcmp(qw, qh, sizeof qh) == 0, "f16 source differs from its fp32 widening");
}

static void test_zero_and_tiny(void)
{
    float x[2 * B] = {0};
    x[B + 3] = 1e-30f; /* its scale underflows fp16: d = 0, every q = 0 */
    x[B + 4] = -0.0f;
    uint8_t out[2 * BB];
    memset(out, 0xa5, sizeof out);
    CHECK(kern_quantize(x, KERN_DTYPE_F32, 1, 2 * B, KERN_DTYPE_Q8_0, out) == KERN_OK, "zero blocks");
    for (int b = 0; b < 2; b++) {
        CHECK(kern_f16_to_f32(scale_bits(out + b * BB)) == 0.0f, "block %d: d not 0", b);
        for (int i = 0; i < B; i++)
            CHECK(q_of(out + b * BB, i) == 0, "block %d q[%d] = %d", b, i, q_of(out + b * BB, i));
    }
}

/* Q4_0 value e of a block: its nibble (0..15). */
static int nib(const uint8_t *blk, int e)
{
    return e < B / 2 ? blk[2 + e] & 15 : blk[2 + e - B / 2] >> 4;
}

/* Q4_0: d = m / -8 for the first value m of largest magnitude, q = round(x / d) + 8 in
 * [0, 15], nibbles packed as ops.h says. */
static void test_q4_0(void)
{
    uint8_t out[2 * Q4B];
    float x[2 * B] = {0};
    x[0] = -8.0f; /* d = 1 */
    x[1] = 7.0f;
    x[2] = 7.5f;  /* rounds to 8, +8 = 16: clamped to 15 */
    x[3] = 2.5f;
    x[4] = -2.5f;
    x[5] = 0.5f;
    x[17] = -0.49f;
    x[31] = 3.0f;
    x[B + 0] = 4.0f; /* ties in magnitude: the first (4) gives the scale, d = -0.5 */
    x[B + 1] = -4.0f;
    x[B + 2] = 1.0f;
    CHECK(kern_quantize(x, KERN_DTYPE_F32, 1, 2 * B, KERN_DTYPE_Q4_0, out) == KERN_OK, "q4_0 blocks");
    CHECK(kern_f16_to_f32(scale_bits(out)) == 1.0f, "q4_0 d = %g, want 1",
          (double)kern_f16_to_f32(scale_bits(out)));
    static const int want[8] = {0, 15, 15, 11, 5, 9, 8, 11}; /* elements 0-5, 17, 31 */
    static const int at[8] = {0, 1, 2, 3, 4, 5, 17, 31};
    for (int i = 0; i < 8; i++)
        CHECK(nib(out, at[i]) == want[i], "q4_0 q[%d] = %d, want %d", at[i], nib(out, at[i]), want[i]);
    CHECK(nib(out, 6) == 8 && nib(out, 16) == 8, "q4_0 zeros are 8");
    CHECK(out[2 + 1] == (15 | (8 << 4)) && out[2 + 15] == (8 | (11 << 4)), "q4_0 packing: %02x %02x",
          out[3], out[17]);
    const uint8_t *b2 = out + Q4B;
    CHECK(kern_f16_to_f32(scale_bits(b2)) == -0.5f, "q4_0 signed scale %g, want -0.5",
          (double)kern_f16_to_f32(scale_bits(b2)));
    CHECK(nib(b2, 0) == 0 && nib(b2, 1) == 15 && nib(b2, 2) == 6,
          "q4_0 second block: %d %d %d, want 0 15 6", nib(b2, 0), nib(b2, 1), nib(b2, 2));
    /* Random rows: within half a step, or one step at the clamped +8 end. */
    enum { K = 8 * B };
    float xr[K];
    uint8_t qr[K / B * Q4B];
    uint32_t s = 777;
    for (int i = 0; i < K; i++) {
        s = s * 1664525u + 1013904223u;
        xr[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * (i < K / 2 ? 2.0f : 0.01f);
    }
    CHECK(kern_quantize(xr, KERN_DTYPE_F32, 2, K / 2, KERN_DTYPE_Q4_0, qr) == KERN_OK, "q4_0 rows");
    for (int i = 0; i < K; i++) {
        const uint8_t *blk = qr + (i / B) * Q4B;
        float d = kern_f16_to_f32(scale_bits(blk));
        float deq = d * (float)(nib(blk, i % B) - 8);
        CHECK(fabsf(deq - xr[i]) <= 0.5f * fabsf(d) * 1.0001f ||
                  (nib(blk, i % B) == 15 && fabsf(deq - xr[i]) <= fabsf(d) * 1.0001f),
              "q4_0 element %d: %g -> %g (d %g)", i, (double)xr[i], (double)deq, (double)d);
    }
    CHECK(kern_dtype_row_bytes(KERN_DTYPE_Q4_0, 3 * B) == 3 * Q4B, "q4_0 row bytes");
    CHECK(strcmp(kern_dtype_name(KERN_DTYPE_Q4_0), "q4_0") == 0, "q4_0 name");
    x[5] = INFINITY;
    CHECK(kern_quantize(x, KERN_DTYPE_F32, 1, 2 * B, KERN_DTYPE_Q4_0, out) == KERN_ERR_INVALID, "q4_0 Inf");
    x[5] = -8.0f * 70000.0f;
    CHECK(kern_quantize(x, KERN_DTYPE_F32, 1, 2 * B, KERN_DTYPE_Q4_0, out) == KERN_ERR_INVALID,
          "q4_0 scale overflow");
    CHECK(kern_quantize(x, KERN_DTYPE_F32, 1, B, KERN_DTYPE_BF16, out) == KERN_ERR_INVALID,
          "bf16 is not a quantized format");
}

static void test_refused(void)
{
    float x[2 * B] = {0};
    uint8_t out[2 * BB];
    CHECK(kern_quantize(x, KERN_DTYPE_F32, 1, B + 1, KERN_DTYPE_Q8_0, out) == KERN_ERR_INVALID, "k not whole blocks");
    CHECK(kern_quantize(x, KERN_DTYPE_F32, -1, B, KERN_DTYPE_Q8_0, out) == KERN_ERR_INVALID, "negative rows");
    CHECK(kern_quantize(x, KERN_DTYPE_Q4_K, 1, 2 * B, KERN_DTYPE_Q8_0, out) == KERN_ERR_INVALID,
          "k not whole super-blocks of a K source");
    CHECK(kern_quantize(x, (enum kern_dtype)KERN_DTYPE_COUNT, 1, B, KERN_DTYPE_Q8_0, out) ==
              KERN_ERR_INVALID, "unknown source dtype");
    CHECK(kern_quantize(NULL, KERN_DTYPE_F32, 1, B, KERN_DTYPE_Q8_0, out) == KERN_ERR_INVALID, "NULL source");
    CHECK(kern_quantize(x, KERN_DTYPE_F32, 1, B, KERN_DTYPE_Q8_0, NULL) == KERN_ERR_INVALID, "NULL destination");
    x[B + 5] = NAN;
    CHECK(kern_quantize(x, KERN_DTYPE_F32, 1, 2 * B, KERN_DTYPE_Q8_0, out) == KERN_ERR_INVALID, "NaN weight");
    x[B + 5] = -INFINITY;
    CHECK(kern_quantize(x, KERN_DTYPE_F32, 1, 2 * B, KERN_DTYPE_Q8_0, out) == KERN_ERR_INVALID, "Inf weight");
    x[B + 5] = 127.0f * 65504.0f; /* d = 65504, the largest half: still fine */
    CHECK(kern_quantize(x, KERN_DTYPE_F32, 1, 2 * B, KERN_DTYPE_Q8_0, out) == KERN_OK, "largest scale");
    x[B + 5] = 127.0f * 70000.0f; /* d overflows fp16 */
    CHECK(kern_quantize(x, KERN_DTYPE_F32, 1, 2 * B, KERN_DTYPE_Q8_0, out) == KERN_ERR_INVALID, "scale overflow");
    CHECK(kern_dtype_row_bytes(KERN_DTYPE_Q8_0, 3 * B) == 3 * BB, "row bytes");
    CHECK(kern_dtype_row_bytes(KERN_DTYPE_Q8_0, B + 1) == -1, "row bytes of a partial block");
    CHECK(kern_dtype_row_bytes(KERN_DTYPE_Q8_0, INT64_MAX - 31) == -1, "row bytes overflow");
    CHECK(kern_dtype_row_bytes(KERN_DTYPE_BF16, 7) == 14, "bf16 row bytes");
    CHECK(strcmp(kern_dtype_name(KERN_DTYPE_Q8_0), "q8_0") == 0, "name");
}

/* Block-format sources (GGUF matrices requantized at load): every K format and Q4_0 give
 * exactly the bytes their exactly widened values give as fp32; a NaN super-block scale is
 * refused. */
static void test_block_sources(void)
{
    enum { K = 2 * KERN_QKBLOCK };
    static const enum kern_dtype src[] = {KERN_DTYPE_Q4_K, KERN_DTYPE_Q5_K, KERN_DTYPE_Q6_K,
                                          KERN_DTYPE_Q4_0};
    static const int sb_bytes[] = {KERN_Q4_K_BLOCK_BYTES, KERN_Q5_K_BLOCK_BYTES,
                                   KERN_Q6_K_BLOCK_BYTES, 8 * Q4B};
    for (size_t t = 0; t < sizeof src / sizeof src[0]; t++) {
        uint8_t in[2 * KERN_Q6_K_BLOCK_BYTES];
        uint32_t r = 2024u + (uint32_t)t;
        for (size_t i = 0; i < sizeof in; i++) {
            r = r * 1103515245u + 12345u;
            in[i] = (uint8_t)(r >> 16);
        }
        for (int b = 0; b < 2; b++) { /* finite scales: fp16 1/256 (and dmin 1/512) */
            uint8_t *blk = in + b * sb_bytes[t];
            if (src[t] == KERN_DTYPE_Q4_0) {
                for (int q = 0; q < 8; q++) {
                    blk[q * Q4B] = 0x00;
                    blk[q * Q4B + 1] = 0x1c;
                }
                continue;
            }
            uint8_t *d = blk + (src[t] == KERN_DTYPE_Q6_K ? 208 : 0);
            d[0] = 0x00;
            d[1] = 0x1c;
            if (src[t] != KERN_DTYPE_Q6_K) {
                d[2] = 0x00;
                d[3] = 0x18;
            }
        }
        float wide[K];
        for (int e = 0; e < K; e++) {
            if (src[t] == KERN_DTYPE_Q4_0)
                wide[e] = kern_block_elem(1, in + (e / B) * Q4B, e % B);
            else
                wide[e] = kern_kq_elem(kern_dtype_kq_bits(src[t]),
                                       in + (e / KERN_QKBLOCK) * sb_bytes[t], e % KERN_QKBLOCK);
        }
        for (int to = 0; to < 2; to++) {
            enum kern_dtype dt = to ? KERN_DTYPE_Q4_0 : KERN_DTYPE_Q8_0;
            uint8_t got[K / B * BB], want[K / B * BB];
            CHECK(kern_quantize(in, src[t], 1, K, dt, got) == KERN_OK, "%s source to %s",
                  kern_dtype_name(src[t]), kern_dtype_name(dt));
            CHECK(kern_quantize(wide, KERN_DTYPE_F32, 1, K, dt, want) == KERN_OK, "widened %s",
                  kern_dtype_name(src[t]));
            CHECK(memcmp(got, want, (size_t)kern_dtype_row_bytes(dt, K)) == 0,
                  "%s source to %s: not the bytes of its widened values", kern_dtype_name(src[t]),
                  kern_dtype_name(dt));
        }
        uint8_t *d = in + (src[t] == KERN_DTYPE_Q6_K ? 208 : 0); /* the first block's d */
        d[1] = 0x7e; /* NaN */
        uint8_t out[K / B * BB];
        CHECK(kern_quantize(in, src[t], 1, K, KERN_DTYPE_Q8_0, out) == KERN_ERR_INVALID,
              "%s source with a NaN scale", kern_dtype_name(src[t]));
    }
}

/* Block b of row j of an R16 matrix of k columns put back together in its base format
 * (scale, then the values as kern_quantize lays them out), read by ops.h's words alone: the
 * group's block b starts at group * 16 * row_bytes + b * 16 * block_bytes, the row's scale at
 * 2 r, its piece t at 32 + 64 t + 4 r. */
static void r16_unpack(const uint8_t *m, enum kern_dtype base, int64_t k, int64_t j, int64_t b,
                       uint8_t *blk)
{
    const int64_t bb = base == KERN_DTYPE_Q8_0 ? BB : Q4B, row_bytes = k / B * bb;
    const int64_t r = j % KERN_R16;
    const uint8_t *at = m + (j / KERN_R16) * KERN_R16 * row_bytes + b * KERN_R16 * bb;
    blk[0] = at[2 * r];
    blk[1] = at[2 * r + 1];
    for (int e = 0; e < bb - 2; e++) /* value byte e sits in piece e / 4 */
        blk[2 + e] = at[32 + (e / 4) * 64 + r * 4 + e % 4];
}

/* kern_repack moves every byte of the source to where ops.h puts it, fills the padding rows
 * with zero bytes and writes nothing outside its matrix. The sources are random bytes: NaN
 * scales and all, repacking only moves them. */
static void test_repack(void)
{
    static const int64_t rows[] = {1, 15, 16, 17, 33, 64};
    static const int64_t ks[] = {32, 96, 1024};
    struct kt_rng rng = {4242};
    for (int q4 = 0; q4 < 2; q4++) {
        const enum kern_dtype base = q4 ? KERN_DTYPE_Q4_0 : KERN_DTYPE_Q8_0;
        const enum kern_dtype to = kern_dtype_r16_of(base);
        const int64_t bb = q4 ? Q4B : BB;
        CHECK(kern_dtype_r16_base(to) == base && kern_dtype_is_r16(to) && !kern_dtype_is_r16(base),
              "%s: r16 helpers", kern_dtype_name(to));
        for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++)
            for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
                const int64_t n = rows[ri], k = ks[ki], row_bytes = k / B * bb;
                const int64_t padded = (n + KERN_R16 - 1) / KERN_R16 * KERN_R16;
                CHECK(kern_dtype_matrix_bytes(to, n, k) == padded * row_bytes,
                      "%s n=%lld k=%lld: matrix bytes %lld", kern_dtype_name(to), (long long)n,
                      (long long)k, (long long)kern_dtype_matrix_bytes(to, n, k));
                uint8_t *src = kt_alloc((size_t)(n * row_bytes));
                uint8_t *dst = kt_alloc((size_t)(padded * row_bytes));
                for (int64_t i = 0; i < n * row_bytes; i++)
                    src[i] = (uint8_t)kt_next(&rng);
                memset(dst, 0x5a, (size_t)(padded * row_bytes)); /* no byte is left as it was */
                CHECK(kern_repack(src, base, n, k, dst) == KERN_OK, "%s n=%lld k=%lld refused",
                      kern_dtype_name(to), (long long)n, (long long)k);
                int64_t bad = 0;
                for (int64_t j = 0; j < padded; j++)
                    for (int64_t b = 0; b < k / B; b++) {
                        uint8_t blk[BB], want[BB] = {0}; /* padding rows: all zero */
                        r16_unpack(dst, base, k, j, b, blk);
                        if (j < n)
                            memcpy(want, src + j * row_bytes + b * bb, (size_t)bb);
                        if (memcmp(blk, want, (size_t)bb) != 0 && bad++ < 3)
                            fprintf(stderr, "  %s n=%lld k=%lld: row %lld block %lld differs\n",
                                    kern_dtype_name(to), (long long)n, (long long)k, (long long)j,
                                    (long long)b);
                    }
                CHECK(bad == 0, "%s n=%lld k=%lld: %lld blocks not where ops.h puts them",
                      kern_dtype_name(to), (long long)n, (long long)k, (long long)bad);
                CHECK(kt_guard_ok(dst) && kt_guard_ok(src), "%s n=%lld k=%lld: canary",
                      kern_dtype_name(to), (long long)n, (long long)k);
                kt_free(src);
                kt_free(dst);
            }
    }
    /* A hand-placed check of one layout detail the loop above would share with a wrong
     * un-interleave: Q4_0 row 1's block byte 5 (values 5 and 21) is piece 1, byte 1. */
    uint8_t src[2 * Q4B] = {0}, dst[KERN_R16 * Q4B];
    src[Q4B + 2 + 5] = 0x9c;
    src[Q4B + 1] = 0x3c;
    CHECK(kern_repack(src, KERN_DTYPE_Q4_0, 2, B, dst) == KERN_OK, "q4_0 two rows");
    CHECK(dst[32 + 64 + 4 + 1] == 0x9c && dst[3] == 0x3c, "q4_0 byte placement: %02x %02x",
          dst[32 + 64 + 4 + 1], dst[3]);

    /* Refusals: dtypes, shapes, NULL with bytes to move, sizes past int64. */
    uint8_t in[4 * BB] = {0}, out[KERN_R16 * 4 * BB];
    CHECK(kern_repack(in, KERN_DTYPE_Q8_0, 1, 4 * B, out) == KERN_OK, "repack good call");
    CHECK(kern_repack(in, KERN_DTYPE_Q8_0, 1, B + 16, out) == KERN_ERR_INVALID, "k not whole blocks");
    CHECK(kern_repack(in, KERN_DTYPE_Q4_0, 1, 16, out) == KERN_ERR_INVALID, "k below a block");
    CHECK(kern_repack(in, KERN_DTYPE_Q8_0, -1, B, out) == KERN_ERR_INVALID, "negative rows");
    CHECK(kern_repack(in, KERN_DTYPE_Q8_0, 1, -B, out) == KERN_ERR_INVALID, "negative k");
    /* The K formats are sources too, refused here only for k = 32 (their own tests below). */
    static const enum kern_dtype not_from[] = {
        KERN_DTYPE_F32,      KERN_DTYPE_F16,      KERN_DTYPE_BF16,
        KERN_DTYPE_Q8_0_R16, KERN_DTYPE_Q4_0_R16, KERN_DTYPE_Q4_K_R16,
        KERN_DTYPE_Q5_K_R16, KERN_DTYPE_Q6_K_R16, (enum kern_dtype)KERN_DTYPE_COUNT,
    };
    for (size_t i = 0; i < sizeof not_from / sizeof not_from[0]; i++)
        CHECK(kern_repack(in, not_from[i], 1, B, out) == KERN_ERR_INVALID, "repack from %s",
              kern_dtype_name(not_from[i]));
    CHECK(kern_repack(NULL, KERN_DTYPE_Q8_0, 1, B, out) == KERN_ERR_INVALID, "NULL source");
    CHECK(kern_repack(in, KERN_DTYPE_Q4_0, 1, B, NULL) == KERN_ERR_INVALID, "NULL destination");
    CHECK(kern_repack(NULL, KERN_DTYPE_Q8_0, 0, B, NULL) == KERN_OK, "no rows: nothing to move");
    CHECK(kern_repack(NULL, KERN_DTYPE_Q4_0, 5, 0, NULL) == KERN_OK, "no columns: nothing to move");
    CHECK(kern_repack(in, KERN_DTYPE_Q8_0, INT64_MAX / 16, 1024, out) == KERN_ERR_INVALID,
          "size overflow");
    CHECK(kern_repack(in, KERN_DTYPE_Q4_0, INT64_MAX, B, out) == KERN_ERR_INVALID,
          "rows past int64 once rounded to groups");
    CHECK(kern_repack(in, KERN_DTYPE_Q8_0, 1, (INT64_MAX / B) * B, out) == KERN_ERR_INVALID,
          "row bytes overflow");
    /* The R16 formats are no block format to anything but the matmul op. */
    CHECK(kern_dtype_block_elems(KERN_DTYPE_Q8_0_R16) == 0 &&
              kern_dtype_row_bytes(KERN_DTYPE_Q4_0_R16, B) == -1 &&
              kern_dtype_size(KERN_DTYPE_Q8_0_R16) == 0,
          "r16 dtypes look like a row format");
    CHECK(kern_quantize(in, KERN_DTYPE_F32, 1, B, KERN_DTYPE_Q8_0_R16, out) == KERN_ERR_INVALID &&
              kern_quantize(out, KERN_DTYPE_Q4_0_R16, 1, B, KERN_DTYPE_Q8_0, in) == KERN_ERR_INVALID,
          "kern_quantize took an r16 dtype");
    CHECK(strcmp(kern_dtype_name(KERN_DTYPE_Q8_0_R16), "q8_0_r16") == 0 &&
              strcmp(kern_dtype_name(KERN_DTYPE_Q4_0_R16), "q4_0_r16") == 0 &&
              strcmp(kern_dtype_name(KERN_DTYPE_Q4_K_R16), "q4_k_r16") == 0,
          "r16 names");
}

/* One row's super-block of a Q4_K_R16 matrix as ops.h lays it out: d, dmin, the scales and
 * mins of sub-blocks 0..7 one byte each, the 128 nibble bytes. */
struct q4k_r16_row {
    uint8_t d[2], dmin[2], sc[8], mn[8], qs[128];
};

/* Super-block b of row j of a Q4_K_R16 matrix of k columns, read by ops.h's words alone: the
 * group's super-block b starts at (group * k / 256 + b) * 16 * 148; within it the row's d at
 * 2 r, dmin at 32 + 2 r, scale of sub-block s at 64 + 16 s + r, min at 192 + 16 s + r, and
 * nibble bytes 32 c + 4 t .. + 3 at 320 + 64 (8 c + t) + 4 r. */
static void q4k_r16_unpack(const uint8_t *m, int64_t k, int64_t j, int64_t b,
                           struct q4k_r16_row *o)
{
    const int64_t r = j % KERN_R16;
    const uint8_t *at = m + ((j / KERN_R16) * (k / 256) + b) * KERN_R16 * 148;
    memcpy(o->d, at + 2 * r, 2);
    memcpy(o->dmin, at + 32 + 2 * r, 2);
    for (int s = 0; s < 8; s++) {
        o->sc[s] = at[64 + 16 * s + r];
        o->mn[s] = at[192 + 16 * s + r];
    }
    for (int c = 0; c < 4; c++)
        for (int t = 0; t < 8; t++)
            for (int i = 0; i < 4; i++)
                o->qs[32 * c + 4 * t + i] = at[320 + 64 * (8 * c + t) + 4 * r + i];
}

/* The 12 bytes ggml packs eight 6-bit (scale, min) pairs into: pairs 0-3 in the low 6 bits of
 * bytes 0-3 (scales) and 4-7 (mins); pairs 4-7 with their low 4 bits in bytes 8-11 (scale low
 * nibble, min high nibble) and their top 2 bits in the top 2 bits of bytes 0-3 (scales) and 4-7
 * (mins). The 96 bits are all used, so packing the unpacked pairs gives back any 12 bytes. */
static void q4k_pack_scales(const uint8_t *sc, const uint8_t *mn, uint8_t *out)
{
    for (int i = 0; i < 4; i++) {
        out[i] = (uint8_t)((sc[i] & 63) | ((sc[i + 4] >> 4) << 6));
        out[i + 4] = (uint8_t)((mn[i] & 63) | ((mn[i + 4] >> 4) << 6));
        out[i + 8] = (uint8_t)((sc[i + 4] & 15) | ((mn[i + 4] & 15) << 4));
    }
}

/* kern_repack from Q4_K: every row's super-block, un-interleaved here and its scales packed
 * again, is its source byte for byte; every scale and min is a 6-bit byte; the padding rows are
 * all zero; nothing outside the matrix is written. The sources are random bytes (NaN d and
 * all): repacking only moves and unpacks them. */
static void test_repack_q4_k(void)
{
    enum { SB = KERN_Q4_K_BLOCK_BYTES };
    static const int64_t rows[] = {1, 15, 16, 17, 33};
    static const int64_t ks[] = {256, 512, 1024};
    struct kt_rng rng = {4343};
    const enum kern_dtype to = KERN_DTYPE_Q4_K_R16;
    CHECK(kern_dtype_r16_of(KERN_DTYPE_Q4_K) == to && kern_dtype_r16_base(to) == KERN_DTYPE_Q4_K &&
              kern_dtype_is_r16(to) && !kern_dtype_is_r16(KERN_DTYPE_Q4_K),
          "q4_k_r16: r16 helpers");
    for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++)
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
            const int64_t n = rows[ri], k = ks[ki], row_bytes = k / 256 * SB;
            const int64_t padded = (n + KERN_R16 - 1) / KERN_R16 * KERN_R16;
            const int64_t bytes = padded * (k / 256) * 148;
            CHECK(kern_dtype_matrix_bytes(to, n, k) == bytes,
                  "q4_k_r16 n=%lld k=%lld: matrix bytes %lld", (long long)n, (long long)k,
                  (long long)kern_dtype_matrix_bytes(to, n, k));
            uint8_t *src = kt_alloc((size_t)(n * row_bytes));
            uint8_t *dst = kt_alloc((size_t)bytes);
            for (int64_t i = 0; i < n * row_bytes; i++)
                src[i] = (uint8_t)kt_next(&rng);
            memset(dst, 0x5a, (size_t)bytes); /* no byte is left as it was */
            CHECK(kern_repack(src, KERN_DTYPE_Q4_K, n, k, dst) == KERN_OK,
                  "q4_k_r16 n=%lld k=%lld refused", (long long)n, (long long)k);
            int64_t bad = 0;
            for (int64_t j = 0; j < padded; j++)
                for (int64_t b = 0; b < k / 256; b++) {
                    struct q4k_r16_row o;
                    q4k_r16_unpack(dst, k, j, b, &o);
                    int ok = 1;
                    for (int s = 0; s < 8; s++)
                        ok &= o.sc[s] < 64 && o.mn[s] < 64;
                    uint8_t got[SB], want[SB] = {0}; /* padding rows: all zero */
                    memcpy(got, o.d, 2);
                    memcpy(got + 2, o.dmin, 2);
                    q4k_pack_scales(o.sc, o.mn, got + 4);
                    memcpy(got + 16, o.qs, 128);
                    if (j < n)
                        memcpy(want, src + j * row_bytes + b * SB, SB);
                    ok &= memcmp(got, want, SB) == 0;
                    if (!ok && bad++ < 3)
                        fprintf(stderr,
                                "  q4_k_r16 n=%lld k=%lld: row %lld super-block %lld differs\n",
                                (long long)n, (long long)k, (long long)j, (long long)b);
                }
            CHECK(bad == 0, "q4_k_r16 n=%lld k=%lld: %lld super-blocks not where ops.h puts them",
                  (long long)n, (long long)k, (long long)bad);
            CHECK(kt_guard_ok(dst) && kt_guard_ok(src), "q4_k_r16 n=%lld k=%lld: canary",
                  (long long)n, (long long)k);
            kt_free(src);
            kt_free(dst);
        }
    /* Hand-placed bytes, against an un-interleave and a packer that could share a mistake:
     * row 2's sub-block 5 has scale (s[9] & 15) | (s[1] >> 6) << 4 = 0xb | 0x20 = 43 at
     * 64 + 16 * 5 + 2 and min (s[9] >> 4) | (s[5] >> 6) << 4 = 7 | 0x30 = 55 at 192 + 82; its
     * nibble byte 77 (c = 2, t = 3, byte 1 of the piece) is at 320 + 64 * 19 + 8 + 1; its dmin
     * at 32 + 4. */
    uint8_t one[3 * SB] = {0}, out[KERN_R16 * 148];
    one[2 * SB + 3] = 0x3c;
    one[2 * SB + 4 + 9] = 0x7b;
    one[2 * SB + 4 + 1] = 0x80;
    one[2 * SB + 4 + 5] = 0xc0;
    one[2 * SB + 16 + 77] = 0xe4;
    CHECK(kern_repack(one, KERN_DTYPE_Q4_K, 3, 256, out) == KERN_OK, "q4_k three rows");
    CHECK(out[64 + 80 + 2] == 43 && out[192 + 80 + 2] == 55 && out[320 + 64 * 19 + 8 + 1] == 0xe4 &&
              out[32 + 5] == 0x3c && out[64 + 16 + 2] == 0 && out[192 + 16 + 2] == 0,
          "q4_k byte placement: %d %d %02x %02x", out[64 + 80 + 2], out[192 + 80 + 2],
          out[320 + 64 * 19 + 8 + 1], out[32 + 5]);

    /* Refusals: k not whole super-blocks (whole 32-blocks are not enough), bad sizes. */
    uint8_t in[2 * SB] = {0}, big[KERN_R16 * 2 * 148];
    CHECK(kern_repack(in, KERN_DTYPE_Q4_K, 1, 512, big) == KERN_OK, "q4_k good call");
    static const int64_t bad_k[] = {32, 128, 288, 255, -256};
    for (size_t i = 0; i < sizeof bad_k / sizeof bad_k[0]; i++)
        CHECK(kern_repack(in, KERN_DTYPE_Q4_K, 1, bad_k[i], big) == KERN_ERR_INVALID,
              "q4_k k=%lld accepted", (long long)bad_k[i]);
    CHECK(kern_dtype_matrix_bytes(to, 1, 288) == -1 && kern_dtype_matrix_bytes(to, 1, 128) == -1,
          "q4_k_r16 matrix bytes of a k not whole super-blocks");
    CHECK(kern_repack(in, KERN_DTYPE_Q4_K, -1, 256, big) == KERN_ERR_INVALID, "q4_k negative rows");
    CHECK(kern_repack(NULL, KERN_DTYPE_Q4_K, 1, 256, big) == KERN_ERR_INVALID, "q4_k NULL source");
    CHECK(kern_repack(in, KERN_DTYPE_Q4_K, 1, 256, NULL) == KERN_ERR_INVALID,
          "q4_k NULL destination");
    CHECK(kern_repack(NULL, KERN_DTYPE_Q4_K, 0, 256, NULL) == KERN_OK, "q4_k no rows");
    CHECK(kern_repack(in, KERN_DTYPE_Q4_K, INT64_MAX / 16, 1024, big) == KERN_ERR_INVALID,
          "q4_k size overflow");
    CHECK(kern_repack(in, KERN_DTYPE_Q4_K, INT64_MAX, 256, big) == KERN_ERR_INVALID,
          "q4_k rows past int64 once rounded to groups");
    CHECK(kern_dtype_block_elems(to) == 0 && kern_dtype_row_bytes(to, 256) == -1 &&
              kern_dtype_size(to) == 0,
          "q4_k_r16 looks like a row format");
    CHECK(kern_quantize(in, KERN_DTYPE_F32, 1, B, to, big) == KERN_ERR_INVALID,
          "kern_quantize made q4_k_r16");
}

/* kern_repack of n random rows of k (each of ks) from a K format (sb bytes a super-block, rb a
 * row's share of the R16 one) against unpack, the un-interleave of row r's super-block from its
 * group's super-block at `at` written from ops.h's words: every row's super-block must be its
 * source byte for byte, every padding row's all zero, and nothing outside the matrix written.
 * The sources are random bytes (NaN d and all): repacking only moves them. */
typedef void (*kr16_unpack_fn)(const uint8_t *at, int r, uint8_t *got);

static void check_repack_rows(enum kern_dtype from, int64_t sb, int64_t rb, const int64_t *rows,
                              size_t n_rows, const int64_t *ks, size_t n_ks, struct kt_rng *rng,
                              kr16_unpack_fn unpack)
{
    const enum kern_dtype to = kern_dtype_r16_of(from);
    const char *name = kern_dtype_name(to);
    for (size_t ri = 0; ri < n_rows; ri++)
        for (size_t ki = 0; ki < n_ks; ki++) {
            const int64_t n = rows[ri], k = ks[ki], row_bytes = k / 256 * sb;
            const int64_t padded = (n + KERN_R16 - 1) / KERN_R16 * KERN_R16;
            const int64_t bytes = padded * (k / 256) * rb;
            CHECK(kern_dtype_matrix_bytes(to, n, k) == bytes, "%s n=%lld k=%lld: matrix bytes %lld",
                  name, (long long)n, (long long)k, (long long)kern_dtype_matrix_bytes(to, n, k));
            uint8_t *src = kt_alloc((size_t)(n * row_bytes));
            uint8_t *dst = kt_alloc((size_t)bytes);
            for (int64_t i = 0; i < n * row_bytes; i++)
                src[i] = (uint8_t)kt_next(rng);
            memset(dst, 0x5a, (size_t)bytes); /* no byte is left as it was */
            CHECK(kern_repack(src, from, n, k, dst) == KERN_OK, "%s n=%lld k=%lld refused", name,
                  (long long)n, (long long)k);
            int64_t bad = 0;
            for (int64_t j = 0; j < padded; j++)
                for (int64_t b = 0; b < k / 256; b++) {
                    const uint8_t *at = dst + ((j / KERN_R16) * (k / 256) + b) * KERN_R16 * rb;
                    uint8_t got[KERN_Q6_K_BLOCK_BYTES], want[KERN_Q6_K_BLOCK_BYTES] = {0};
                    unpack(at, (int)(j % KERN_R16), got);
                    if (j < n)
                        memcpy(want, src + j * row_bytes + b * sb, (size_t)sb);
                    if (memcmp(got, want, (size_t)sb) != 0 && bad++ < 3)
                        fprintf(stderr, "  %s n=%lld k=%lld: row %lld super-block %lld differs\n",
                                name, (long long)n, (long long)k, (long long)j, (long long)b);
                }
            CHECK(bad == 0, "%s n=%lld k=%lld: %lld super-blocks not where ops.h puts them", name,
                  (long long)n, (long long)k, (long long)bad);
            CHECK(kt_guard_ok(dst) && kt_guard_ok(src), "%s n=%lld k=%lld: canary", name,
                  (long long)n, (long long)k);
            kt_free(src);
            kt_free(dst);
        }
}

/* Q5_K_R16 row r (ops.h): d, dmin at 2 r and 32 + 2 r, scales and mins at 64 + 16 s + r and
 * 192 + 16 s + r, nibble piece t of c = 0 at 320 + 128 t + 4 r followed by qh piece t at
 * 384 + 128 t + 4 r, the other nibble pieces at 832 + 64 (8c + t) + 4 r. */
static void unpack_q5_k_r16(const uint8_t *at, int r, uint8_t *got)
{
    uint8_t sc[8], mn[8];
    memcpy(got, at + 2 * r, 2);
    memcpy(got + 2, at + 32 + 2 * r, 2);
    for (int s = 0; s < 8; s++) {
        sc[s] = at[64 + 16 * s + r];
        mn[s] = at[192 + 16 * s + r];
    }
    q4k_pack_scales(sc, mn, got + 4);
    for (int t = 0; t < 8; t++)
        memcpy(got + 16 + 4 * t, at + 384 + 128 * t + 4 * r, 4);
    for (int c = 0; c < 4; c++)
        for (int t = 0; t < 8; t++)
            memcpy(got + 48 + 32 * c + 4 * t,
                   at + (c ? 832 + 64 * (8 * c + t) : 320 + 128 * t) + 4 * r, 4);
}

/* Q6_K_R16 row r (ops.h): d at 2 r, the scale of sub-block s at 32 + 16 s + r, and for step
 * 8h + j (h < 2, j < 8) at 288 + 192 (8h + j) + 4 r the 4 bytes ql[64h + 4j ..], 64 bytes on
 * ql[64h + 32 + 4j ..] and 128 bytes on qh[32h + 4j ..]. */
static void unpack_q6_k_r16(const uint8_t *at, int r, uint8_t *got)
{
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 8; j++) {
            const uint8_t *st = at + 288 + 192 * (8 * h + j) + 4 * r;
            memcpy(got + 64 * h + 4 * j, st, 4);
            memcpy(got + 64 * h + 32 + 4 * j, st + 64, 4);
            memcpy(got + 128 + 32 * h + 4 * j, st + 128, 4);
        }
    for (int s = 0; s < 16; s++)
        got[192 + s] = at[32 + 16 * s + r];
    memcpy(got + 208, at + 2 * r, 2);
}

/* kern_repack from Q5_K (180 bytes a row and super-block), un-interleaved by unpack_q5_k_r16;
 * a k of whole 32-blocks but not whole super-blocks is refused. */
static void test_repack_q5_k(void)
{
    enum { SB = KERN_Q5_K_BLOCK_BYTES, RB = KERN_Q5_K_R16_ROW_BYTES };
    static const int64_t rows[] = {1, 16, 17, 33};
    static const int64_t ks[] = {256, 768};
    struct kt_rng rng = {5353};
    const enum kern_dtype to = KERN_DTYPE_Q5_K_R16;
    CHECK(kern_dtype_r16_of(KERN_DTYPE_Q5_K) == to && kern_dtype_r16_base(to) == KERN_DTYPE_Q5_K &&
              strcmp(kern_dtype_name(to), "q5_k_r16") == 0 && RB == 180,
          "q5_k_r16: r16 helpers");
    check_repack_rows(KERN_DTYPE_Q5_K, SB, 180, rows, sizeof rows / sizeof rows[0], ks,
                      sizeof ks / sizeof ks[0], &rng, unpack_q5_k_r16);
    uint8_t in[SB] = {0}, out[KERN_R16 * RB];
    CHECK(kern_repack(in, KERN_DTYPE_Q5_K, 1, 128, out) == KERN_ERR_INVALID, "q5_k k=128 accepted");
}

/* kern_repack from Q6_K (ql 128 bytes, qh 64, 16 int8 scales, fp16 d: 210 a super-block, as
 * many a row and super-block of Q6_K_R16; the group's super-block b starts at
 * (group * k / 256 + b) * 16 * 210), un-interleaved by unpack_q6_k_r16; then bytes placed by
 * hand and the refusals. */
static void test_repack_q6_k(void)
{
    enum { SB = KERN_Q6_K_BLOCK_BYTES, RB = KERN_Q6_K_R16_ROW_BYTES };
    static const int64_t rows[] = {1, 15, 16, 17, 33};
    static const int64_t ks[] = {256, 512, 768};
    struct kt_rng rng = {6363};
    const enum kern_dtype to = KERN_DTYPE_Q6_K_R16;
    CHECK(kern_dtype_r16_of(KERN_DTYPE_Q6_K) == to && kern_dtype_r16_base(to) == KERN_DTYPE_Q6_K &&
              kern_dtype_is_r16(to) && !kern_dtype_is_r16(KERN_DTYPE_Q6_K) &&
              strcmp(kern_dtype_name(to), "q6_k_r16") == 0 && RB == 210 && SB == 210,
          "q6_k_r16: r16 helpers");
    /* The offsets the kernels use, against the numbers above. */
    CHECK(KERN_Q6R16_SCALES == 32 && KERN_Q6R16_QS == 288 && KERN_Q6R16_STEP == 192,
          "q6_k_r16 offsets %d %d %d", KERN_Q6R16_SCALES, KERN_Q6R16_QS, KERN_Q6R16_STEP);
    check_repack_rows(KERN_DTYPE_Q6_K, SB, 210, rows, sizeof rows / sizeof rows[0], ks,
                      sizeof ks / sizeof ks[0], &rng, unpack_q6_k_r16);
    /* Hand-placed bytes of row 2 (r = 2) in its second super-block (k = 512), against an
     * un-interleave that could share a mistake with the one above: its d (0x3c01) at
     * 3360 + 4, the scale of sub-block 13 (-5) at 3360 + 32 + 208 + 2, ql byte 77 (h 1, j 3,
     * byte 1: step 11) at 3360 + 288 + 2112 + 8 + 1, ql byte 109 (ql + 32 of step 11) 64 bytes
     * on and qh byte 45 (step 11) 128 bytes on; row 1 is zero, so its d and scale bytes there
     * are 0, and so is row 2's d in the first super-block. */
    uint8_t one[3 * 2 * SB] = {0}, out[KERN_R16 * 2 * RB];
    uint8_t *sb = one + 2 * 2 * SB + SB;
    sb[208] = 0x01;
    sb[209] = 0x3c;
    sb[192 + 13] = (uint8_t)-5;
    sb[77] = 0xe4;
    sb[109] = 0x6b;
    sb[128 + 45] = 0x9d;
    CHECK(kern_repack(one, KERN_DTYPE_Q6_K, 3, 512, out) == KERN_OK, "q6_k three rows");
    const uint8_t *o = out + KERN_R16 * RB;
    CHECK(o[4] == 0x01 && o[5] == 0x3c && (int8_t)o[32 + 208 + 2] == -5 &&
              o[288 + 2112 + 8 + 1] == 0xe4 && o[288 + 2112 + 64 + 8 + 1] == 0x6b &&
              o[288 + 2112 + 128 + 8 + 1] == 0x9d && o[2] == 0 && o[32 + 208 + 1] == 0 &&
              out[4] == 0 && out[5] == 0,
          "q6_k byte placement: %02x %02x %d %02x %02x %02x", o[4], o[5], (int8_t)o[32 + 208 + 2],
          o[288 + 2112 + 8 + 1], o[288 + 2112 + 64 + 8 + 1], o[288 + 2112 + 128 + 8 + 1]);

    /* Refusals: k not whole super-blocks (whole 32-blocks are not enough), bad sizes. */
    uint8_t in[2 * SB] = {0}, big[KERN_R16 * 2 * RB];
    CHECK(kern_repack(in, KERN_DTYPE_Q6_K, 1, 512, big) == KERN_OK, "q6_k good call");
    static const int64_t bad_k[] = {32, 128, 288, 255, -256};
    for (size_t i = 0; i < sizeof bad_k / sizeof bad_k[0]; i++)
        CHECK(kern_repack(in, KERN_DTYPE_Q6_K, 1, bad_k[i], big) == KERN_ERR_INVALID,
              "q6_k k=%lld accepted", (long long)bad_k[i]);
    CHECK(kern_dtype_matrix_bytes(to, 1, 288) == -1 && kern_dtype_matrix_bytes(to, 1, 128) == -1,
          "q6_k_r16 matrix bytes of a k not whole super-blocks");
    CHECK(kern_repack(in, KERN_DTYPE_Q6_K, -1, 256, big) == KERN_ERR_INVALID, "q6_k negative rows");
    CHECK(kern_repack(NULL, KERN_DTYPE_Q6_K, 1, 256, big) == KERN_ERR_INVALID, "q6_k NULL source");
    CHECK(kern_repack(in, KERN_DTYPE_Q6_K, 1, 256, NULL) == KERN_ERR_INVALID,
          "q6_k NULL destination");
    CHECK(kern_repack(NULL, KERN_DTYPE_Q6_K, 0, 256, NULL) == KERN_OK, "q6_k no rows");
    CHECK(kern_repack(NULL, KERN_DTYPE_Q6_K, 5, 0, NULL) == KERN_OK, "q6_k no columns");
    CHECK(kern_repack(in, KERN_DTYPE_Q6_K, INT64_MAX / 16, 1024, big) == KERN_ERR_INVALID,
          "q6_k size overflow");
    CHECK(kern_repack(in, KERN_DTYPE_Q6_K, INT64_MAX, 256, big) == KERN_ERR_INVALID,
          "q6_k rows past int64 once rounded to groups");
    CHECK(kern_repack(in, to, 1, 256, big) == KERN_ERR_INVALID, "repack from q6_k_r16");
    CHECK(kern_dtype_block_elems(to) == 0 && kern_dtype_row_bytes(to, 256) == -1 &&
              kern_dtype_size(to) == 0,
          "q6_k_r16 looks like a row format");
    CHECK(kern_quantize(in, KERN_DTYPE_F32, 1, B, to, big) == KERN_ERR_INVALID &&
              kern_quantize(in, to, 1, 256, KERN_DTYPE_Q8_0, big) == KERN_ERR_INVALID,
          "kern_quantize took q6_k_r16");
}

int main(void)
{
    test_rounding();
    test_scale_and_clamp();
    test_rows();
    test_zero_and_tiny();
    test_q4_0();
    test_refused();
    test_block_sources();
    test_repack();
    test_repack_q4_k();
    test_repack_q5_k();
    test_repack_q6_k();
    return tu_finish("test_quant");
}
