/* Unit tests of the reference backend against tiny hand-computed cases, and of the scalar
 * dtype conversions in kernels/dtype.h. The reference is the spec of every op, so these pin
 * the spec down; the fast backends are compared with it in test_ops.c, not here. */
#include "kt_util.h"

#include "../test_util.h"

static struct kern_ops ops;

/* Hand-computed values are given to 7+ significant digits; the reference rounds an fp64
 * result once, so it must agree to a couple of fp32 ulps. */
static int near(float got, double want)
{
    return fabs((double)got - want) <= 4e-7 * (1.0 + fabs(want));
}

static void test_rmsnorm(void)
{
    /* [1, 2, 3]: mean square 14/3, 1/rms = 0.4629100498862757; gains 1, 0.5, 2. */
    float x[3] = {1, 2, 3}, w[3] = {1, 0.5f, 2}, out[3];
    struct kern_rmsnorm_params p = {x, w, KERN_DTYPE_F32, out, 1, 3, 0.0f};
    CHECK(ops.rmsnorm(NULL, &p) == KERN_OK, "rmsnorm");
    CHECK(near(out[0], 0.4629100498862757) && near(out[1], 0.4629100498862757) &&
              near(out[2], 2.777460299317654),
          "rmsnorm [1,2,3]: %g %g %g", (double)out[0], (double)out[1], (double)out[2]);
    /* eps matters: x = [0, 0], eps 1 -> 0; x = [1, 1], eps 3 -> 1/sqrt(4) = 0.5 (bf16 gains). */
    uint16_t wb[2] = {kern_f32_to_bf16(1.0f), kern_f32_to_bf16(3.0f)};
    float x2[2] = {1, 1};
    struct kern_rmsnorm_params p2 = {x2, wb, KERN_DTYPE_BF16, x2, 1, 2, 3.0f};
    CHECK(ops.rmsnorm(NULL, &p2) == KERN_OK && x2[0] == 0.5f && x2[1] == 1.5f,
          "rmsnorm eps/in place/bf16: %g %g", (double)x2[0], (double)x2[1]);
    p.n_rows = -1;
    CHECK(ops.rmsnorm(NULL, &p) == KERN_ERR_INVALID, "rmsnorm negative rows");
    p.n_rows = 1;
    p.w = NULL;
    CHECK(ops.rmsnorm(NULL, &p) == KERN_ERR_INVALID, "rmsnorm NULL w");
}

static void test_rope(void)
{
    /* head_dim 6, rot_dim 4 (lanes 4, 5 pass through), position 1, inv_freq 1: angle 1,
     * cos 1 = 0.5403023058681398, sin 1 = 0.8414709848078965. Lane i pairs with i + 2. */
    float x[6] = {1, 2, 3, 4, 5, 6}, inv_freq[2] = {1, 1};
    int32_t pos[1] = {1};
    struct kern_rope_params p = {x, pos, NULL, inv_freq, 1, 1, 6, 4, 6, 1, 1.0f};
    CHECK(ops.rope(NULL, &p) == KERN_OK, "rope");
    double c = 0.5403023058681398, s = 0.8414709848078965;
    CHECK(near(x[0], 1 * c - 3 * s) && near(x[1], 2 * c - 4 * s) && near(x[2], 3 * c + 1 * s) &&
              near(x[3], 4 * c + 2 * s) && x[4] == 5 && x[5] == 6,
          "rope pos 1: %g %g %g %g %g %g", (double)x[0], (double)x[1], (double)x[2], (double)x[3],
          (double)x[4], (double)x[5]);
    /* Position 0 with mscale 2 only scales; variant 1 picks the second frequency table. */
    float y[4] = {1, 2, 3, 4}, freqs[4] = {1, 1, 0.5f, 0.25f};
    int32_t pos0[1] = {0};
    uint8_t var[1] = {1};
    struct kern_rope_params p0 = {y, pos0, var, freqs, 1, 1, 4, 4, 4, 2, 2.0f};
    CHECK(ops.rope(NULL, &p0) == KERN_OK && y[0] == 2 && y[1] == 4 && y[2] == 6 && y[3] == 8,
          "rope pos 0 mscale 2");
    float z[4] = {1, 0, 0, 0};
    int32_t pos2[1] = {2};
    struct kern_rope_params p1 = {z, pos2, var, freqs, 1, 1, 4, 4, 4, 2, 1.0f};
    /* variant 1, lane 0: angle = 2 * 0.5 = 1 -> x0 = cos 1, x2 = sin 1. */
    CHECK(ops.rope(NULL, &p1) == KERN_OK && near(z[0], c) && near(z[2], s) && z[1] == 0,
          "rope variant 1: %g %g", (double)z[0], (double)z[2]);
    struct kern_rope_params bad = p;
    bad.rot_dim = 3;
    CHECK(ops.rope(NULL, &bad) == KERN_ERR_INVALID, "rope odd rot_dim");
    bad.rot_dim = 8;
    CHECK(ops.rope(NULL, &bad) == KERN_ERR_INVALID, "rope rot_dim > head_dim");
    bad = p;
    bad.token_stride = 5;
    CHECK(ops.rope(NULL, &bad) == KERN_ERR_INVALID, "rope stride < heads * head_dim");
    var[0] = 2;
    CHECK(ops.rope(NULL, &p1) == KERN_ERR_INVALID, "rope variant >= n_variants");
}

/* A one-sequence attention call over an fp32 cache with block_size 2 whose table is
 * {2, 0, 1, ...}: position p lives in slot table[p / 2] * 2 + p % 2. */
static int attend(float *q, float *kc, float *vc, float *out, int64_t n_heads, int64_t n_kv,
                  int64_t d, int32_t q_len, int32_t ctx_len, int64_t window, float scale)
{
    static const int32_t table[4] = {2, 0, 1, 3};
    int32_t qs[1] = {0}, ql[1] = {q_len}, cl[1] = {ctx_len};
    struct kern_attention_params p = {
        .q = q, .k_cache = kc, .v_cache = vc, .cache_dtype = KERN_DTYPE_F32, .out = out,
        .q_start = qs, .q_len = ql, .ctx_len = cl, .block_tables = table, .n_tokens = q_len,
        .n_seqs = 1, .n_heads = n_heads, .n_kv_heads = n_kv, .head_dim = d,
        .q_stride = n_heads * d, .max_blocks = 4, .block_size = 2, .n_slots = 8,
        .sliding_window = window, .scale = scale,
    };
    return ops.attention(NULL, &p);
}

static int64_t slot_of(int64_t pos)
{
    static const int32_t table[4] = {2, 0, 1, 3};
    return table[pos / 2] * 2 + pos % 2;
}

static void test_attention(void)
{
    float kc[8 * 2 * 2], vc[8 * 2 * 2], q[6 * 2 * 2], out[6 * 2 * 2];
    /* Unused slots are NaN: the reference must never read them. */
    for (int i = 0; i < 32; i++)
        kc[i] = vc[i] = NAN;
    /* One key: the output is its value whatever the score. */
    kc[slot_of(0) * 2 + 0] = 3;
    kc[slot_of(0) * 2 + 1] = -1;
    vc[slot_of(0) * 2 + 0] = 7;
    vc[slot_of(0) * 2 + 1] = -2;
    q[0] = 5;
    q[1] = 4;
    CHECK(attend(q, kc, vc, out, 1, 1, 2, 1, 1, 0, 0.3f) == KERN_OK && out[0] == 7 && out[1] == -2,
          "attention with one key: %g %g", (double)out[0], (double)out[1]);
    /* Two keys with scores 0 and ln 3: weights 1/4, 3/4. */
    kc[slot_of(0) * 2 + 0] = 0;
    kc[slot_of(0) * 2 + 1] = 0;
    kc[slot_of(1) * 2 + 0] = 1;
    kc[slot_of(1) * 2 + 1] = 0;
    vc[slot_of(0) * 2 + 0] = 4;
    vc[slot_of(0) * 2 + 1] = 0;
    vc[slot_of(1) * 2 + 0] = 0;
    vc[slot_of(1) * 2 + 1] = 8;
    q[0] = (float)log(3.0);
    q[1] = 0;
    CHECK(attend(q, kc, vc, out, 1, 1, 2, 1, 2, 0, 1.0f) == KERN_OK && near(out[0], 1.0) &&
              near(out[1], 6.0),
          "attention softmax 1/4, 3/4: %g %g", (double)out[0], (double)out[1]);
    /* Sliding window 3 over 6 positions, all scores equal (k = 0), v = position: the output of
     * the query at position p is the mean of the W = 3 positions max(0, p-2) .. p. */
    for (int p = 0; p < 6; p++) {
        kc[slot_of(p) * 2 + 0] = kc[slot_of(p) * 2 + 1] = 0;
        vc[slot_of(p) * 2 + 0] = vc[slot_of(p) * 2 + 1] = (float)p;
    }
    for (int i = 0; i < 12; i++)
        q[i] = 1;
    static const double win_mean[6] = {0, 0.5, 1, 2, 3, 4};
    CHECK(attend(q, kc, vc, out, 1, 1, 2, 6, 6, 3, 1.0f) == KERN_OK, "attention window");
    for (int p = 0; p < 6; p++)
        CHECK(near(out[p * 2], win_mean[p]), "window 3, position %d: %g want %g", p,
              (double)out[p * 2], win_mean[p]);
    /* No window: the mean of 0..p. Decode of the last position only (q_len 1, ctx 6). */
    CHECK(attend(q, kc, vc, out, 1, 1, 2, 1, 6, 0, 1.0f) == KERN_OK && near(out[0], 2.5),
          "causal decode: %g", (double)out[0]);
    /* Chunked prefill: 2 new rows at positions 4, 5 over a 6-key context. */
    CHECK(attend(q, kc, vc, out, 1, 1, 2, 2, 6, 0, 1.0f) == KERN_OK && near(out[0], 2.0) &&
              near(out[2], 2.5),
          "chunked prefill: %g %g", (double)out[0], (double)out[2]);
    /* GQA: 4 query heads on 2 kv heads (head_dim 1): heads 0, 1 read kv head 0 (v = 10),
     * heads 2, 3 read kv head 1 (v = 20). */
    for (int i = 0; i < 32; i++)
        kc[i] = vc[i] = NAN;
    kc[slot_of(0) * 2 + 0] = kc[slot_of(0) * 2 + 1] = 0;
    vc[slot_of(0) * 2 + 0] = 10;
    vc[slot_of(0) * 2 + 1] = 20;
    CHECK(attend(q, kc, vc, out, 4, 2, 1, 1, 1, 0, 1.0f) == KERN_OK && out[0] == 10 &&
              out[1] == 10 && out[2] == 20 && out[3] == 20,
          "GQA mapping: %g %g %g %g", (double)out[0], (double)out[1], (double)out[2], (double)out[3]);
    /* Invalid: q_len > ctx_len, heads not a multiple of kv heads, ctx beyond the table. */
    CHECK(attend(q, kc, vc, out, 1, 1, 2, 3, 2, 0, 1.0f) == KERN_ERR_INVALID, "q_len > ctx_len");
    CHECK(attend(q, kc, vc, out, 3, 2, 1, 1, 1, 0, 1.0f) == KERN_ERR_INVALID, "3 heads on 2 kv");
    CHECK(attend(q, kc, vc, out, 1, 1, 2, 1, 9, 0, 1.0f) == KERN_ERR_INVALID, "ctx 9 > 4 * 2");
}

static void test_small_ops(void)
{
    /* matmul: x = [[1, 2], [3, 4]], W = [[1, 0], [1, 1]] -> y = [[1, 3], [3, 7]]. */
    float x[4] = {1, 2, 3, 4}, y[4] = {10, 20, 30, 40};
    uint16_t w[4] = {kern_f32_to_f16(1), 0, kern_f32_to_f16(1), kern_f32_to_f16(1)};
    struct kern_matmul_params mp = {x, w, KERN_DTYPE_F16, y, 2, 2, 2, 2, 2, 1};
    CHECK(ops.matmul(NULL, &mp) == KERN_OK && y[0] == 11 && y[1] == 23 && y[2] == 33 && y[3] == 47,
          "matmul accumulate");
    mp.accumulate = 0;
    CHECK(ops.matmul(NULL, &mp) == KERN_OK && y[0] == 1 && y[1] == 3 && y[2] == 3 && y[3] == 7,
          "matmul");

    /* embed: id == vocab and id < 0 are rejected, nothing written. */
    uint16_t table[6];
    for (int i = 0; i < 6; i++)
        table[i] = kern_f32_to_bf16((float)i);
    int32_t ids[2] = {2, 0};
    float eo[4] = {-1, -1, -1, -1};
    struct kern_embed_params ep = {ids, table, KERN_DTYPE_BF16, eo, 2, 3, 2};
    CHECK(ops.embed(NULL, &ep) == KERN_OK && eo[0] == 4 && eo[1] == 5 && eo[2] == 0 && eo[3] == 1,
          "embed");
    ids[1] = 3;
    eo[0] = -1;
    CHECK(ops.embed(NULL, &ep) == KERN_ERR_INVALID && eo[0] == -1, "embed id == vocab");
    ids[1] = -1;
    CHECK(ops.embed(NULL, &ep) == KERN_ERR_INVALID, "embed id < 0");

    /* kv_write: slot -1 skipped, values rounded to bf16 (1 + 2^-8 is a tie -> 1). */
    float k[4] = {1.0f + 0x1p-8f, 2, 3, 4}, v[4] = {5, 6, 7, 8};
    int64_t slots[2] = {-1, 1};
    uint16_t kcache[4] = {0}, vcache[4] = {0};
    struct kern_kv_write_params kp = {k, v, slots, kcache, vcache, KERN_DTYPE_BF16, 2, 1, 2, 2, 2};
    CHECK(ops.kv_write(NULL, &kp) == KERN_OK && kcache[0] == 0 && kcache[1] == 0 &&
              kern_bf16_to_f32(kcache[2]) == 3 && kern_bf16_to_f32(vcache[3]) == 8,
          "kv_write skip");
    slots[0] = 0;
    CHECK(ops.kv_write(NULL, &kp) == KERN_OK && kcache[0] == 0x3f80, "kv_write bf16 rounding");
    slots[1] = 2;
    CHECK(ops.kv_write(NULL, &kp) == KERN_ERR_INVALID, "kv_write slot == n_slots");

    /* silu_mul: silu(0) * 5 = 0; silu(1) * 2 = 2 / (1 + e^-1) = 1.4621171572600098. */
    float gu[4] = {0, 1, 5, 2}, so[2];
    struct kern_silu_mul_params sp = {gu, so, 1, 2};
    CHECK(ops.silu_mul(NULL, &sp) == KERN_OK && so[0] == 0 && near(so[1], 1.4621171572600098),
          "silu_mul: %g", (double)so[1]);

    float ay[3] = {1, 2, 3}, ax[3] = {0.5f, -2, 4};
    struct kern_add_params ap = {ay, ax, 3};
    CHECK(ops.add(NULL, &ap) == KERN_OK && ay[0] == 1.5f && ay[1] == 0 && ay[2] == 7, "add");
    ap.n = -1;
    CHECK(ops.add(NULL, &ap) == KERN_ERR_INVALID, "add n < 0");

    float gx[6] = {0, 1, 10, 11, 20, 21}, go[4];
    int32_t rows[2] = {2, 0};
    struct kern_gather_rows_params gp = {gx, rows, go, 3, 2, 2};
    CHECK(ops.gather_rows(NULL, &gp) == KERN_OK && go[0] == 20 && go[1] == 21 && go[2] == 0 &&
              go[3] == 1,
          "gather_rows");
    rows[0] = 3;
    CHECK(ops.gather_rows(NULL, &gp) == KERN_ERR_INVALID, "gather_rows row == n_in");
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void test_dtype(void)
{
    /* Every 16-bit pattern round-trips (NaN stays NaN). */
    int bad_bf = 0, bad_h = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float fb = kern_bf16_to_f32((uint16_t)h), fh = kern_f16_to_f32((uint16_t)h);
        if (isnan(fb) ? !isnan(kern_bf16_to_f32(kern_f32_to_bf16(fb))) : kern_f32_to_bf16(fb) != h)
            bad_bf++;
        if (isnan(fh) ? !isnan(kern_f16_to_f32(kern_f32_to_f16(fh))) : kern_f32_to_f16(fh) != h)
            bad_h++;
    }
    CHECK(bad_bf == 0 && bad_h == 0, "round trips: %d bf16, %d f16 tu_failures", bad_bf, bad_h);
    /* Widening is exact: known values. */
    CHECK(kern_f16_to_f32(0x3c00) == 1.0f && kern_f16_to_f32(0xc000) == -2.0f &&
              kern_f16_to_f32(0x7bff) == 65504.0f && kern_f16_to_f32(0x0001) == 0x1p-24f &&
              kern_f16_to_f32(0x03ff) == 0x3ffp-24f && kern_f16_to_f32(0x0400) == 0x1p-14f,
          "f16 widening");
    CHECK(kern_bf16_to_f32(0x3f80) == 1.0f && kern_bf16_to_f32(0x0001) == from_bits(0x00010000u),
          "bf16 widening");
    /* Round to nearest, ties to even. bf16 ulp at 1 is 2^-7, f16 ulp at 1 is 2^-10. */
    CHECK(kern_f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80, "bf16 tie down to even");
    CHECK(kern_f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82, "bf16 tie up to even");
    CHECK(kern_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 0x3f81, "bf16 above the tie");
    CHECK(kern_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00, "f16 tie down to even");
    CHECK(kern_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02, "f16 tie up to even");
    CHECK(kern_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01, "f16 above the tie");
    /* f16 subnormals and underflow: 2^-25 is a tie with 0 (-> 0), 3 * 2^-26 rounds up. */
    CHECK(kern_f32_to_f16(0x1p-24f) == 0x0001 && kern_f32_to_f16(0x1p-25f) == 0x0000 &&
              kern_f32_to_f16(3 * 0x1p-26f) == 0x0001 && kern_f32_to_f16(3 * 0x1p-25f) == 0x0002 &&
              kern_f32_to_f16(-0x1p-30f) == 0x8000 && kern_f32_to_f16(0x1p-14f) == 0x0400,
          "f16 subnormals");
    /* f16 overflow: 65519 rounds to 65504, 65520 (the tie) to infinity. */
    CHECK(kern_f32_to_f16(65519.0f) == 0x7bff && kern_f32_to_f16(65520.0f) == 0x7c00 &&
              kern_f32_to_f16(-1e10f) == 0xfc00,
          "f16 overflow");
    /* Inf and NaN. */
    CHECK(kern_f32_to_f16(INFINITY) == 0x7c00 && kern_f32_to_f16(-INFINITY) == 0xfc00 &&
              (kern_f32_to_f16(NAN) & 0x7fff) > 0x7c00,
          "f16 inf/nan");
    CHECK(kern_f32_to_bf16(INFINITY) == 0x7f80 && kern_f32_to_bf16(-INFINITY) == 0xff80 &&
              (kern_f32_to_bf16(NAN) & 0x7fff) > 0x7f80 &&
              (kern_f32_to_bf16(from_bits(0x7f800001u)) & 0x7fff) > 0x7f80,
          "bf16 inf/nan (a NaN with only low payload bits must not become Inf)");
    CHECK(kern_f32_to_bf16(from_bits(0x7f7fffffu)) == 0x7f80, "bf16 FLT_MAX rounds to Inf");
    CHECK(bits(kern_f16_to_f32(0x8000)) == 0x80000000u, "f16 -0");
    CHECK(kern_dtype_size(KERN_DTYPE_F32) == 4 && kern_dtype_size(KERN_DTYPE_BF16) == 2 &&
              kern_dtype_size(KERN_DTYPE_F16) == 2 && strcmp(kern_dtype_name(KERN_DTYPE_BF16), "bf16") == 0,
          "dtype size/name");
}

int main(void)
{
    kern_ops_init_ref(&ops);
    test_rmsnorm();
    test_rope();
    test_attention();
    test_small_ops();
    test_dtype();
    return tu_finish("test_ref");
}
