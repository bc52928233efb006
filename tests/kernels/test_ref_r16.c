/* The reference int8 dot of the R16 formats (kernels/ref/matmul.c) against hand-worked values
 * and against the contract of ops.h computed from the plain Q8_0 / Q4_0 / K-format rows
 * (kt_util.h's kt_x8_row and kt_r16_dot), and the ops that must refuse those formats. The
 * layout itself is checked in test_quant.c, the fast CPU kernels against this reference in
 * test_ops.c. */
#include "kt_util.h"

#include "../test_util.h"

#define B KERN_QBLOCK

static struct kern_ops ref_ops, cpu_ops;

/* Plain matrices of hand-set blocks: every scale 1, row j holding w = 1 at column col[j] and 0
 * elsewhere, so that y[i, j] = dw * d * q[col[j]]: the rounded x value itself when d = 1. */
static void one_hot(uint8_t *w, enum kern_dtype base, int64_t n, int64_t k, const int *col)
{
    const int64_t bb = kern_dtype_row_bytes(base, B), row_bytes = k / B * bb;
    memset(w, 0, (size_t)(n * row_bytes));
    for (int64_t j = 0; j < n; j++)
        for (int64_t b = 0; b < k / B; b++) {
            uint8_t *blk = w + j * row_bytes + b * bb;
            blk[0] = 0x00; /* fp16 1.0 */
            blk[1] = 0x3c;
            if (base == KERN_DTYPE_Q4_0)
                memset(blk + 2, 0x88, (size_t)(bb - 2)); /* q = 8: w = 0 */
        }
    for (int64_t j = 0; j < n; j++) {
        uint8_t *blk = w + j * row_bytes + (col[j] / B) * bb;
        int t = col[j] % B;
        if (base == KERN_DTYPE_Q8_0)
            blk[2 + t] = 1;
        else if (t < B / 2)
            blk[2 + t] = (uint8_t)((blk[2 + t] & 0xf0) | 9); /* q = 9: w = 1 */
        else
            blk[2 + t - B / 2] = (uint8_t)((blk[2 + t - B / 2] & 0x0f) | (9 << 4));
    }
}

/* Hand-worked rounding: a block whose largest magnitude is 127 has d = 127 / 127 = 1 and
 * 1 / d = 1, so q is x itself rounded half to even (2.5 -> 2, 3.5 -> 4, -2.5 -> -2, 0.5 -> 0,
 * -126.5 -> -126, 1.5 -> 2; 0.49999997 -> 0); a block whose d is FLT_MIN exactly is kept
 * (127 FLT_MIN / 127), blocks of values near 1e-37 and 1e-36 (d below FLT_MIN) count as
 * zero: the second one's 1 / d is finite, so only the FLT_MIN rule makes its q 0. */
static void test_hand_worked(void)
{
    enum { K = 4 * B, N = 12 };
    float x[2 * K] = {0};
    x[0] = 127.0f;
    x[1] = 2.5f;
    x[2] = 3.5f;
    x[3] = -2.5f;
    x[4] = 0.5f;
    x[5] = -126.5f;
    x[6] = 1.5f;
    x[7] = 0.49999997f;
    x[B + 0] = 127.0f * FLT_MIN;
    x[B + 1] = 2.5f * FLT_MIN;
    x[B + 2] = -3.5f * FLT_MIN;
    for (int t = 0; t < B; t++)
        x[2 * B + t] = (t % 2 ? -1e-37f : 1e-37f) * (1.0f + (float)t / 64.0f);
    for (int t = 0; t < B; t++) /* d = 1.1e-36 / 127, 1 / d = 1.15e38 */
        x[3 * B + t] = (t % 2 ? -1.1e-36f : 1.1e-36f) * (1.0f - (float)t / 64.0f);
    /* A second row: the first block again, scaled by 2 (d = 2: the same q, twice the y). */
    for (int t = 0; t < K; t++)
        x[K + t] = t < B ? 2.0f * x[t] : 0.0f;
    static const int col[N] = {0, 1, 2, 3, 4, 5, 6, 7, B + 0, B + 1, 2 * B + 3, 3 * B};
    static const double want[N] = {127, 2, 4, -2, 0, -126, 2, 0, 127.0 * FLT_MIN,
                                   2.0 * FLT_MIN, 0, 0};
    for (int q4 = 0; q4 < 2; q4++) {
        const enum kern_dtype base = q4 ? KERN_DTYPE_Q4_0 : KERN_DTYPE_Q8_0;
        const enum kern_dtype dt = kern_dtype_r16_of(base);
        uint8_t plain[N * K / B * KERN_Q8_0_BLOCK_BYTES];
        uint8_t w[KERN_R16 * K / B * KERN_Q8_0_BLOCK_BYTES];
        one_hot(plain, base, N, K, col);
        CHECK(kern_repack(plain, base, N, K, w) == KERN_OK, "%s repack", kern_dtype_name(dt));
        for (int acc = 0; acc < 2; acc++) {
            float y[2 * N];
            for (int j = 0; j < 2 * N; j++)
                y[j] = acc ? 0.25f * (float)j : NAN;
            struct kern_matmul_params p = {x, w, dt, y, 2, N, K, K, N, acc};
            CHECK(ref_ops.matmul(NULL, &p) == KERN_OK, "%s hand-worked", kern_dtype_name(dt));
            for (int j = 0; j < N; j++) {
                double y0 = acc ? 0.25 * j : 0.0, y1 = acc ? 0.25 * (N + j) : 0.0;
                /* Exact: without y0 the FLT_MIN-sized results keep every bit too. */
                CHECK(y[j] == (float)(y0 + want[j]), "%s%s column %d: %.9g, want %.9g",
                      kern_dtype_name(dt), acc ? " acc" : "", j, (double)y[j], y0 + want[j]);
                double want1 = j < 8 ? 2.0 * want[j] : 0.0;
                CHECK(y[N + j] == (float)(y1 + want1), "%s%s row 1 column %d: %.9g, want %.9g",
                      kern_dtype_name(dt), acc ? " acc" : "", j, (double)y[N + j], y1 + want1);
            }
        }
    }
}

/* dw * d is one fp32 rounding before the product with s: with dw = fp16 0x3c02 (1 + 2^-9),
 * d = 0.7 / 127 and s = 5 (one-hot W, q = 5), y differs in its last bit from the product
 * taken in fp64 (checked here too, so that the case keeps its point); Q4_K's f0 * d and
 * f1 * d likewise. */
static void test_product_rounding(void)
{
    static const int col[1] = {1};
    float x[B] = {0.7f, 0.0275f};
    const float d = 0.7f / 127.0f, dw = kern_f16_to_f32(0x3c02);
    const float want = (float)((double)(dw * d) * 5.0);
    CHECK(want != (float)((double)dw * (double)d * 5.0), "the case lost its point");
    for (int q4 = 0; q4 < 2; q4++) {
        const enum kern_dtype base = q4 ? KERN_DTYPE_Q4_0 : KERN_DTYPE_Q8_0;
        uint8_t plain[KERN_Q8_0_BLOCK_BYTES], w[KERN_R16 * KERN_Q8_0_BLOCK_BYTES];
        one_hot(plain, base, 1, B, col);
        plain[0] = 0x02;
        CHECK(kern_repack(plain, base, 1, B, w) == KERN_OK, "repack");
        float y = NAN;
        struct kern_matmul_params p = {x, w, kern_dtype_r16_of(base), &y, 1, 1, B, B, 1, 0};
        CHECK(ref_ops.matmul(NULL, &p) == KERN_OK && y == want, "%s: %.9g, want %.9g",
              kern_dtype_name(p.w_dtype), (double)y, (double)want);
    }
    /* Q4_K_R16: f0 * d and f1 * d are each one fp32 rounding. Column 0 has d = 1 + 2^-9,
     * scale 1 (f0 = dw) and quant 1 at value 1 (s = 5), no min; column 1 has dmin = 1 + 2^-9,
     * min 1 (f1 = dw), no scale, and x_s = 127 + 5 - 1 = 131. */
    enum { K = KERN_QKBLOCK };
    float xk[K] = {0.7f, 0.0275f, -0.0055f};
    uint8_t plain[2 * KERN_Q4_K_BLOCK_BYTES] = {0}, w[KERN_R16 * KERN_Q4_K_R16_ROW_BYTES];
    plain[0] = 0x02; /* column 0: d */
    plain[1] = 0x3c;
    plain[4] = 1;      /* scale 1 */
    plain[16 + 1] = 1; /* quant 1 at value 1 */
    plain[KERN_Q4_K_BLOCK_BYTES + 2] = 0x02; /* column 1: dmin */
    plain[KERN_Q4_K_BLOCK_BYTES + 3] = 0x3c;
    plain[KERN_Q4_K_BLOCK_BYTES + 8] = 1; /* min 1 */
    const float want_k[2] = {(float)((double)(dw * d) * 5.0), (float)(-(double)(dw * d) * 131.0)};
    CHECK(want_k[1] != (float)(-(double)dw * (double)d * 131.0), "the min case lost its point");
    CHECK(kern_repack(plain, KERN_DTYPE_Q4_K, 2, K, w) == KERN_OK, "q4_k repack");
    float yk[2] = {NAN, NAN};
    struct kern_matmul_params pk = {xk, w, KERN_DTYPE_Q4_K_R16, yk, 1, 2, K, K, 2, 0};
    CHECK(ref_ops.matmul(NULL, &pk) == KERN_OK && yk[0] == want_k[0] && yk[1] == want_k[1],
          "q4_k_r16: %.9g %.9g, want %.9g %.9g", (double)yk[0], (double)yk[1],
          (double)want_k[0], (double)want_k[1]);
    /* Q6_K_R16: f0 * d likewise, with d = 1 + 2^-9 and sub-block 0's scale 1 (f0 = dw) and
     * quant 33 (w = 1) at value 1 (s = 5). Every other quant is 32 (qh bit pairs 2, w = 0),
     * so that values 0 and 2 (q = 127 and -1) count nothing. */
    uint8_t p6[KERN_Q6_K_BLOCK_BYTES] = {0}, w6[KERN_R16 * KERN_Q6_K_R16_ROW_BYTES];
    memset(p6 + 128, 0xaa, 64); /* qh */
    p6[1] = 0x01;               /* ql: value 1's low nibble */
    p6[192] = 1;                /* scale of sub-block 0 */
    p6[208] = 0x02;             /* d */
    p6[209] = 0x3c;
    CHECK(kern_repack(p6, KERN_DTYPE_Q6_K, 1, K, w6) == KERN_OK, "q6_k repack");
    float y6 = NAN;
    struct kern_matmul_params p6m = {xk, w6, KERN_DTYPE_Q6_K_R16, &y6, 1, 1, K, K, 1, 0};
    CHECK(ref_ops.matmul(NULL, &p6m) == KERN_OK && y6 == want, "q6_k_r16: %.9g, want %.9g",
          (double)y6, (double)want);
}

/* Q4_K_R16 by hand, where the min term matters. Two rows of one super-block: d = 1, dmin
 * = 0.5 (row 1: 0), sub-block 0 with scale 2, min 3 and quants 1, 15, 4, 7 (its first four
 * values), sub-block 5 with scale 1, min 63 and quant 3 first; every other scale and min 0
 * (their quants, and the high nibbles of sub-block 0's bytes, are set to show they count for
 * nothing). x's blocks 0 and 5 have largest magnitude 127, so d = 1 and q is x:
 *  - block 0: 127, 1, 2, -3: s = 127 + 15 + 8 - 21 = 129, x_s = 127, term 2 * 129 - 1.5 * 127
 *    = 67.5 (258 without the min);
 *  - block 5: -127 first and 10 last: s = -381, x_s = -117, term -381 + 31.5 * 117 = 3304.5;
 * y = 3372 (row 1: 258 - 381 = -123), every step exact. Block 2 of x is not zero but its
 * sub-block's factors are. Being exact, y is also the dot of x with the dequantized row. */
static void test_q4_k_hand_worked(void)
{
    enum { K = KERN_QKBLOCK, N = 2 };
    uint8_t plain[N * KERN_Q4_K_BLOCK_BYTES] = {0}, w[KERN_R16 * KERN_Q4_K_R16_ROW_BYTES];
    for (int j = 0; j < N; j++) {
        uint8_t *sb = plain + j * KERN_Q4_K_BLOCK_BYTES, *sc = sb + 4, *qs = sb + 16;
        sb[1] = 0x3c;                 /* d = 1 */
        sb[3] = j == 0 ? 0x38 : 0x00; /* dmin = 0.5 or 0 */
        sc[0] = 2;                    /* sub-block 0: scale 2 */
        sc[4] = 3;                    /* min 3 */
        sc[9] = 0xf1;                 /* sub-block 5: scale 1, min 15 | bits 4-5 from sc[5] */
        sc[5] = 0xc0;                 /* min 63 (and sub-block 1's min 0) */
        qs[0] = 0x91;                 /* sub-block 0: 1, (sub-block 1: 9) */
        qs[1] = 0x0f;
        qs[2] = 0x04;
        qs[3] = 0x07;
        qs[64] = 0x3c; /* sub-block 5: 3, (sub-block 4: 12) */
        qs[32] = 0xff; /* sub-blocks 2 and 3 */
        qs[33] = 0xff;
    }
    int s5, m5;
    kern_k_scale_min(plain + 4, 5, &s5, &m5);
    CHECK(s5 == 1 && m5 == 63, "the hand-set sub-block 5 decodes to %d, %d", s5, m5);
    float x[K] = {0};
    x[0] = 127.0f;
    x[1] = 1.0f;
    x[2] = 2.0f;
    x[3] = -3.0f;
    x[64] = 50.0f;
    x[65] = -7.0f;
    x[160] = -127.0f;
    x[191] = 10.0f;
    CHECK(kern_repack(plain, KERN_DTYPE_Q4_K, N, K, w) == KERN_OK, "q4_k_r16 repack");
    static const float want[N] = {3372.0f, -123.0f};
    for (int acc = 0; acc < 2; acc++) {
        float y[N] = {acc ? 0.25f : NAN, acc ? -0.5f : NAN};
        struct kern_matmul_params p = {x, w, KERN_DTYPE_Q4_K_R16, y, 1, N, K, K, N, acc};
        CHECK(ref_ops.matmul(NULL, &p) == KERN_OK, "q4_k_r16 hand-worked");
        for (int j = 0; j < N; j++) {
            float w0 = want[j] + (acc ? (j ? -0.5f : 0.25f) : 0.0f);
            CHECK(y[j] == w0, "q4_k_r16%s column %d: %.9g, want %.9g", acc ? " acc" : "", j,
                  (double)y[j], (double)w0);
        }
    }
    for (int j = 0; j < N; j++) {
        double dot = 0.0;
        for (int e = 0; e < K; e++)
            dot += (double)x[e] * (double)kern_kq_elem(4, plain + j * KERN_Q4_K_BLOCK_BYTES, e);
        CHECK(dot == (double)want[j], "the hand-worked row %d's dequantized dot is %.9g", j, dot);
    }
}

/* Q6_K_R16 by hand: two rows of one super-block, every quant 32 (w = 0: the qh bit pairs all
 * 2) but the ones set below, which take both ends (0: w = -32, 63: w = 31) and the middle of
 * the range, in low and high nibbles and bit pairs 0 and 2 (the 32-value groups u = 0 and 2 of
 * ql / qh, which read the wrong nibble or pair if u is mistaken) of both 128-value halves.
 * Row 0: d = 1, int8 scales -3 and 5 for sub-blocks 0 and 1 (the two halves of block 0),
 * -128 and 127 for 12 and 13 (block 6); row 1: d = 0.5, sub-blocks 0 and 1 swapped (5 and
 * -3), 12 and 13 zero. x's blocks 0 and 6 have largest magnitude 127 (d = 1, q is x), with
 * w_t - 32 against q:
 *  - sub-block 0: 31 * 127 - 32 * 2 + 0 * -5 - 15 * 4 = 3813; sub-block 1: 13 * 10 - 31 * -2
 *    + 16 * 1 = 208;
 *  - sub-block 12: 31 * -127 = -3937; sub-block 13: -32 * 64 + 1 * 6 = -2042;
 * y = -3 * 3813 + 5 * 208 - 128 * -3937 + 127 * -2042 = -10399 + 244602 = 234203 (row 1:
 * 2.5 * 3813 - 1.5 * 208 = 9220.5, where the halves' scales swapped give -5199.5 and
 * sub-block 0's scale for both 2.5 * 4021 = 10052.5), every step exact. Block 3 of x is not
 * zero but its sub-blocks' scales are, its quants not 32. Being exact, y is also the dot of x
 * with the dequantized row. */
static void test_q6_k_hand_worked(void)
{
    enum { K = KERN_QKBLOCK, N = 2, SB = KERN_Q6_K_BLOCK_BYTES };
    uint8_t plain[N * SB] = {0}, w[KERN_R16 * KERN_Q6_K_R16_ROW_BYTES];
    for (int j = 0; j < N; j++) {
        uint8_t *ql = plain + j * SB, *qh = ql + 128, *sc = ql + 192, *d = ql + 208;
        memset(qh, 0xaa, 64);
        ql[0] = 0x0f;   /* value 0: 63 (bit pair 0 of qh[0]: 3) */
        qh[0] = 0xab;
        qh[1] = 0xa8;   /* value 1: 0 */
        ql[3] = 0x01;   /* value 3: 17 */
        qh[3] = 0xa9;
        ql[16] = 0x0d;  /* value 16: 45 */
        ql[17] = 0x01;  /* value 17: 1 */
        qh[17] = 0xa8;
        qh[31] = 0xab;  /* value 31: 48 */
        ql[36] = 0xf0;  /* value 100 (sub-block 6): 47, a high nibble */
        ql[56] = 0x50;  /* value 120 (sub-block 7): 37 */
        ql[64] = 0xf0;  /* value 192 = 128 + 64: 63, high nibble and bit pair 2 of qh[32] */
        qh[32] = 0xba;
        qh[48] = 0x8a;  /* value 208: 0 */
        ql[95] = 0x10;  /* value 223: 33 */
        sc[0] = (uint8_t)(j == 0 ? -3 : 5);
        sc[1] = (uint8_t)(j == 0 ? 5 : -3);
        sc[12] = (uint8_t)(j == 0 ? -128 : 0);
        sc[13] = j == 0 ? 127 : 0;
        d[1] = j == 0 ? 0x3c : 0x38; /* d = 1 or 0.5 */
    }
    static const int at[10] = {0, 1, 3, 16, 17, 31, 100, 120, 192, 208};
    static const int want_q[10] = {63, 0, 17, 45, 1, 48, 47, 37, 63, 0};
    for (int i = 0; i < 10; i++)
        CHECK(kern_kq_quant(6, plain, at[i]) == want_q[i], "the hand-set value %d decodes to %d",
              at[i], kern_kq_quant(6, plain, at[i]));
    CHECK(kern_kq_quant(6, plain, 223) == 33 && kern_kq_quant(6, plain, 2) == 32,
          "the hand-set values 223 and 2 decode to %d, %d", kern_kq_quant(6, plain, 223),
          kern_kq_quant(6, plain, 2));
    float x[K] = {0};
    x[0] = 127.0f;
    x[1] = 2.0f;
    x[2] = -5.0f;
    x[3] = 4.0f;
    x[16] = 10.0f;
    x[17] = -2.0f;
    x[31] = 1.0f;
    x[100] = 50.0f;
    x[120] = -7.0f;
    x[192] = -127.0f;
    x[208] = 64.0f;
    x[223] = 6.0f;
    CHECK(kern_repack(plain, KERN_DTYPE_Q6_K, N, K, w) == KERN_OK, "q6_k_r16 repack");
    static const float want[N] = {234203.0f, 9220.5f};
    for (int acc = 0; acc < 2; acc++) {
        float y[N] = {acc ? 0.25f : NAN, acc ? -0.5f : NAN};
        struct kern_matmul_params p = {x, w, KERN_DTYPE_Q6_K_R16, y, 1, N, K, K, N, acc};
        CHECK(ref_ops.matmul(NULL, &p) == KERN_OK, "q6_k_r16 hand-worked");
        for (int j = 0; j < N; j++) {
            float w0 = want[j] + (acc ? (j ? -0.5f : 0.25f) : 0.0f);
            CHECK(y[j] == w0, "q6_k_r16%s column %d: %.9g, want %.9g", acc ? " acc" : "", j,
                  (double)y[j], (double)w0);
        }
    }
    for (int j = 0; j < N; j++) {
        double dot = 0.0;
        for (int e = 0; e < K; e++)
            dot += (double)x[e] * (double)kern_kq_elem(6, plain + j * SB, e);
        CHECK(dot == (double)want[j], "the hand-worked row %d's dequantized dot is %.9g", j, dot);
    }
}

/* Random calls against kt_r16_dot, written from the contract. Both form the same fp32
 * products dw * d and the same exact integers s, and sum in fp64; what may differ is the
 * order of the fp64 additions (y first or last: a few 2^-53 of sum |(dw * d) s| + |y|) and
 * then the one rounding to fp32 (2^-24 of |y|). 1e-6 of sum |(dw * d) s| + |y| bounds both
 * with room, while one x value rounded to the wrong integer moves y by |dw * d * w_t|, about
 * 1 / (400 * blocks) of that sum for these random rows (|w_t| near 64 against |s| near 24000
 * for Q8_0, 4 against 1500 for Q4_0): 8e-5 at the largest k here, 32 blocks. For Q4_K_R16
 * the sum holds both products of every block, |(f0 * d) s| + |(f1 * d) x_s|, and a wrong
 * integer moves y by |(f0 * d) w_t - f1 * d|, about 1 / (700 * blocks) of it (measured on
 * kt_fill's random super-blocks): 5e-5 at k = 1024. Q6_K_R16 has a product per 16-value
 * half, |(f0 * d) s|, and a wrong integer moves y by |f0 * d * (w_t - 32)|, about
 * 1 / (540 * blocks) of the sum (test_ops.c's measure): 6e-5 at k = 1024. */
struct r16_case {
    int64_t m, n, k, pad_x, pad_y;
    int accumulate, special;
};

static void check_random(struct kt_rng *rng, enum kern_dtype dt, struct r16_case c)
{
    const enum kern_dtype base = kern_dtype_r16_base(dt);
    const int64_t ldx = c.k + c.pad_x, ldy = c.n + c.pad_y;
    float *x = kt_alloc((size_t)(c.m * ldx) * sizeof *x);
    float *y0 = kt_alloc((size_t)(c.m * ldy) * sizeof *y0);
    float *y = kt_alloc((size_t)(c.m * ldy) * sizeof *y);
    void *plain = kt_alloc(kt_bytes(base, c.n * c.k));
    void *w = kt_alloc((size_t)kern_dtype_matrix_bytes(dt, c.n, c.k));
    kt_fill_r16(rng, w, plain, dt, c.n, c.k, -1.0f, 1.0f);
    for (int64_t i = 0; i < c.m * ldx; i++) /* padding lanes NaN: reading one poisons y */
        x[i] = (i % ldx) < c.k ? kt_uniform(rng, -1.0f, 1.0f) : NAN;
    for (int64_t i = 0; i < c.m * ldy; i++) /* padding lanes of y must keep their sentinel */
        y0[i] = (i % ldy) < c.n ? (c.accumulate ? kt_uniform(rng, -4.0f, 4.0f) : NAN) : 777.0f;
    if (c.m > 0 && c.k >= 3 * B) {
        /* Row 0, block 1: ties (largest 127, d = 1); block 2: tiny (d below FLT_MIN,
         * counts as zero; 1 / d still finite). */
        x[B] = 127.0f;
        x[B + 1] = 2.5f;
        x[B + 2] = -3.5f;
        x[B + 3] = 0.5f;
        for (int t = 0; t < B; t++)
            x[2 * B + t] = 6e-38f * (float)(t - 16);
    }
    const int64_t inf_row = c.special ? c.m - 1 : -1, nan_row = c.special ? c.m - 2 : -1;
    if (c.special) {
        x[inf_row * ldx + c.k / 3] = INFINITY;
        x[nan_row * ldx + c.k - 1] = NAN;
    }
    memcpy(y, y0, (size_t)(c.m * ldy) * sizeof *y);
    int8_t *xq = malloc((size_t)c.k + 1);
    float *xd = malloc((size_t)(c.k / B + 1) * sizeof *xd);
    struct kern_matmul_params p = {x, w, dt, y, c.m, c.n, c.k, ldx, ldy, c.accumulate};
    char what[128];
    snprintf(what, sizeof what, "%s m=%lld n=%lld k=%lld%s%s", kern_dtype_name(dt),
             (long long)c.m, (long long)c.n, (long long)c.k, c.accumulate ? " acc" : "",
             c.special ? " nan/inf" : "");
    CHECK(ref_ops.matmul(NULL, &p) == KERN_OK, "%s: refused", what);
    int64_t bad = 0;
    for (int64_t i = 0; i < c.m; i++)
        for (int64_t j = 0; j < ldy; j++) {
            float got = y[i * ldy + j];
            int ok;
            if (j >= c.n) {
                ok = got == 777.0f;
            } else if (i == inf_row || i == nan_row) {
                ok = isnan(got);
            } else {
                double sum, mag, yin = c.accumulate ? (double)y0[i * ldy + j] : 0.0;
                kt_x8_row(x + i * ldx, c.k, xq, xd);
                kt_r16_dot(xq, xd, plain, base, j, c.k, &sum, &mag);
                ok = fabs((double)got - (yin + sum)) <= 1e-6 * (mag + fabs(yin));
            }
            if (!ok && bad++ < 3)
                fprintf(stderr, "  %s: y[%lld, %lld] = %.9g\n", what, (long long)i, (long long)j,
                        (double)got);
        }
    CHECK(bad == 0, "%s: %lld values differ from the contract", what, (long long)bad);
    CHECK(kt_guard_ok(y) && kt_guard_ok(x) && kt_guard_ok(w), "%s: canary", what);
    free(xq);
    free(xd);
    kt_free(x);
    kt_free(y0);
    kt_free(y);
    kt_free(plain);
    kt_free(w);
}

/* The K formats: k in whole super-blocks; the same paths (groups and their remainders, padded
 * strides, accumulation, NaN / Inf rows, empty shapes). */
static const struct r16_case kq_cases[] = {
    {1, 1, 256, 0, 0, 0, 0},   {1, 17, 256, 3, 0, 0, 0}, {2, 16, 512, 0, 2, 1, 0},
    {3, 15, 1024, 1, 1, 0, 1}, {5, 40, 256, 2, 3, 1, 1}, {4, 33, 512, 0, 0, 1, 0},
    {5, 7, 1024, 0, 5, 0, 0},  {3, 5, 0, 0, 1, 1, 0},    {0, 5, 256, 0, 0, 0, 0},
    {2, 0, 256, 0, 0, 0, 0},
};

static void test_random(void)
{
    static const struct r16_case cases[] = {
        {1, 1, 32, 0, 0, 0, 0},    {1, 17, 96, 3, 0, 0, 0},  {2, 16, 96, 0, 2, 1, 0},
        {3, 15, 1024, 1, 1, 0, 1}, {5, 40, 96, 2, 3, 1, 1},  {4, 33, 64, 0, 0, 1, 0},
        {5, 7, 1024, 0, 5, 0, 0},  {3, 5, 0, 0, 1, 1, 0},    {3, 5, 0, 0, 1, 0, 0},
        {0, 5, 32, 0, 0, 0, 0},    {2, 0, 32, 0, 0, 0, 0},
    };
    struct kt_rng rng = {1616};
    for (int q4 = 0; q4 < 2; q4++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            check_random(&rng, q4 ? KERN_DTYPE_Q4_0_R16 : KERN_DTYPE_Q8_0_R16, cases[i]);
    for (size_t i = 0; i < sizeof kq_cases / sizeof kq_cases[0]; i++) {
        check_random(&rng, KERN_DTYPE_Q4_K_R16, kq_cases[i]);
        check_random(&rng, KERN_DTYPE_Q5_K_R16, kq_cases[i]);
        check_random(&rng, KERN_DTYPE_Q6_K_R16, kq_cases[i]);
    }
}

/* A row with a non-finite x is NaN in every column, accumulating or not, whatever W holds;
 * a NaN weight scale reaches only its own column. */
static void test_nonfinite(void)
{
    enum { K = 2 * B, N = 3 };
    uint8_t plain[N * K / B * KERN_Q8_0_BLOCK_BYTES], w[KERN_R16 * K / B * KERN_Q8_0_BLOCK_BYTES];
    static const int col[N] = {0, 1, B};
    one_hot(plain, KERN_DTYPE_Q8_0, N, K, col);
    plain[2 * (K / B) * KERN_Q8_0_BLOCK_BYTES + 1] = 0x7e; /* row 2, block 0: d = NaN */
    CHECK(kern_repack(plain, KERN_DTYPE_Q8_0, N, K, w) == KERN_OK, "repack");
    float x[3 * K];
    for (int t = 0; t < 3 * K; t++)
        x[t] = 0.5f;
    x[K + 40] = -INFINITY;
    x[2 * K + 3] = NAN;
    float y[3 * N];
    for (int i = 0; i < 3 * N; i++)
        y[i] = 1.0f;
    struct kern_matmul_params p = {x, w, KERN_DTYPE_Q8_0_R16, y, 3, N, K, K, N, 1};
    CHECK(ref_ops.matmul(NULL, &p) == KERN_OK, "non-finite call");
    /* Row 0: d = 0.5 / 127, q = 127: y = 1 + fp32(d) * 127 (column 2: block 1, the same);
     * its column 2 meets a NaN scale in block 0 (NaN * s) and is NaN. */
    float d = 0.5f / 127.0f;
    CHECK(y[0] == (float)(1.0 + (double)d * 127.0) && y[1] == y[0] && isnan(y[2]),
          "row 0: %.9g %.9g %.9g", (double)y[0], (double)y[1], (double)y[2]);
    for (int j = 0; j < N; j++)
        CHECK(isnan(y[N + j]) && isnan(y[2 * N + j]), "column %d of the Inf / NaN rows: %g %g",
              j, (double)y[N + j], (double)y[2 * N + j]);
}

/* The R16 formats are matmul weights only: every other op that takes a weight dtype refuses
 * them, in both host tables; the matmul refuses k not in whole blocks and NULL pointers with
 * work to do, and a cpu table never takes what the reference refuses. */
static void test_refused(void)
{
    const struct kern_ops *tabs[2] = {&ref_ops, &cpu_ops};
    float x[2 * KERN_QKBLOCK] = {0}, y[64] = {0}, out[KERN_QKBLOCK] = {0};
    uint8_t w[KERN_R16 * KERN_Q6_K_R16_ROW_BYTES] = {0}; /* the largest group super-block */
    /* The moe's expert matrices: up to 256 x 256 values in the largest base format, zero. */
    uint8_t *mw = kt_alloc(KERN_QKBLOCK * KERN_Q6_K_BLOCK_BYTES);
    memset(mw, 0, KERN_QKBLOCK * KERN_Q6_K_BLOCK_BYTES);
    int32_t ids[1] = {0};
    static const enum kern_dtype dts[] = {KERN_DTYPE_Q8_0_R16, KERN_DTYPE_Q4_0_R16,
                                          KERN_DTYPE_Q4_K_R16, KERN_DTYPE_Q5_K_R16,
                                          KERN_DTYPE_Q6_K_R16};
    for (int t = 0; t < 2; t++)
        for (size_t di = 0; di < sizeof dts / sizeof dts[0]; di++) {
            const enum kern_dtype dt = dts[di];
            const int kq = kern_dtype_block_elems(kern_dtype_r16_base(dt)) == KERN_QKBLOCK;
            const char *nm = tabs[t]->name;
            const int64_t k = kq ? KERN_QKBLOCK : 2 * B;
            struct kern_matmul_params good = {x, w, dt, y, 1, 2, k, k, 2, 0};
            struct kern_matmul_params bad[5];
            for (int i = 0; i < 5; i++)
                bad[i] = good;
            /* k not whole blocks; the K formats: whole 32-blocks but not whole super-blocks. */
            bad[0].k = kq ? 4 * B : 48;
            bad[0].ldx = bad[0].k;
            bad[1].k = kq ? KERN_QKBLOCK + B : 16;
            bad[1].ldx = bad[1].k;
            bad[2].w = NULL;
            bad[3].x = NULL;
            bad[4].n = INT64_MAX / 16; /* its padded groups' bytes overflow */
            bad[4].ldy = INT64_MAX / 16;
            int rc = tabs[t]->matmul(NULL, &good);
            CHECK(rc == KERN_OK, "%s %s good call: %d", nm, kern_dtype_name(dt), rc);
            for (int i = 0; i < 5; i++) {
                for (int j = 0; j < 64; j++)
                    y[j] = 3.0f;
                CHECK(tabs[t]->matmul(NULL, &bad[i]) == KERN_ERR_INVALID,
                      "%s %s matmul bad[%d] accepted", nm, kern_dtype_name(dt), i);
                CHECK(y[0] == 3.0f, "%s %s matmul bad[%d] wrote", nm, kern_dtype_name(dt), i);
            }
            /* A row of k values: whole blocks of the base format, which the same call takes,
             * so that only the dtype is wrong. */
            struct kern_embed_params e = {ids, w, dt, out, 1, 1, k};
            CHECK(tabs[t]->embed(NULL, &e) == KERN_ERR_INVALID, "%s embed took %s", nm,
                  kern_dtype_name(dt));
            e.table_dtype = kern_dtype_r16_base(dt);
            CHECK(tabs[t]->embed(NULL, &e) == KERN_OK, "%s embed in %s", nm,
                  kern_dtype_name(e.table_dtype));
            struct kern_rmsnorm_params r = {x, w, dt, out, 1, B, 1e-5f};
            CHECK(tabs[t]->rmsnorm(NULL, &r) == KERN_ERR_INVALID, "%s rmsnorm took %s", nm,
                  kern_dtype_name(dt));
            struct kern_layernorm_params l = {x, w, w, dt, out, 1, B, 1e-5f};
            CHECK(tabs[t]->layernorm(NULL, &l) == KERN_ERR_INVALID, "%s layernorm took %s", nm,
                  kern_dtype_name(dt));
            struct kern_bias_add_params ba = {y, w, dt, 1, B, B};
            CHECK(tabs[t]->bias_add(NULL, &ba) == KERN_ERR_INVALID, "%s bias_add took %s", nm,
                  kern_dtype_name(dt));
            /* One token, one expert of hidden = inter = one block of the base format (32, or
             * a super-block): only the dtype is wrong. */
            const int64_t hid = kq ? KERN_QKBLOCK : B;
            int32_t experts[1] = {0};
            float weights[1] = {1.0f};
            const void *pw[1] = {mw};
            float work[4096];
            CHECK(kern_moe_work_bytes(1, 1, hid, hid, 1) <= sizeof work, "moe work size");
            struct kern_moe_params mp = {x, experts, weights, pw, pw, pw, dt, out, work,
                                         1, hid, hid, 1, 1};
            CHECK(tabs[t]->moe(NULL, &mp) == KERN_ERR_INVALID, "%s moe took %s", nm,
                  kern_dtype_name(dt));
            /* The same call in the base format runs. */
            mp.w_dtype = kern_dtype_r16_base(dt);
            CHECK(tabs[t]->moe(NULL, &mp) == KERN_OK, "%s moe in %s", nm,
                  kern_dtype_name(mp.w_dtype));
        }
    CHECK(kt_guard_ok(mw), "moe experts: canary");
    kt_free(mw);
}

int main(void)
{
    kern_ops_init_ref(&ref_ops);
    kern_ops_init_ref(&cpu_ops);
    kern_ops_init_cpu(&cpu_ops);
    test_hand_worked();
    test_product_rounding();
    test_q4_k_hand_worked();
    test_q6_k_hand_worked();
    test_random();
    test_nonfinite();
    test_refused();
    return tu_finish("test_ref_r16");
}
