/* Unit tests of the Phi-3.5-MoE ops (layernorm, bias_add, moe_route, moe) against expectations
 * written here independently of kernels/ref: sparsemixer cases worked out by hand, LayerNorm
 * by its formula, bias_add exactly, moe by a naive per-token loop, every invalid argument, and
 * kern_moe_work_bytes. Both the reference and the CPU table run every case; test_ops.c compares
 * the two tables on larger shapes. */
#include "kt_util.h"

#include "../test_util.h"

/* A hand value given in fp64, got rounded from an fp64 or fp32 computation: a few fp32 ulps. */
static int near(float got, double want)
{
    return fabs((double)got - want) <= 4e-7 * fabs(want) + 1e-30;
}

/* ---------------------------------------------------------------------------------------- */
/* moe_route: each case is one row of logits and the picks and weights worked out by hand from
 * ops.h's rule (thr = 2 * jitter_eps; s_k kept unless (m - s_k) / max(|s_k|, m) > thr). The
 * weights are written as the closed forms 1 / sum exp(s_k - m) over the kept k, with the float
 * values of the logits. */

struct route_case {
    const char *name;
    int n;                     /* n_experts */
    float s[16];
    float eps;
    int32_t e1, e2;
    double w1, w2;
};

static double ex(float a, float b) /* exp(a - b) of two float logits */
{
    return exp((double)a - (double)b);
}

static void test_route_cases(const struct kern_ops *ops, struct kern_ctx *ctx)
{
    const float NI = -INFINITY;
    struct route_case c[16];
    int nc = 0;
    /* A clear winner: everything else is masked in both picks; weights exactly 1. */
    c[nc++] = (struct route_case){"clear winner", 4, {1.0f, 3.0f, 0.5f, 2.0f}, 0.01f, 1, 3, 1.0, 1.0};
    /* A near tie inside the 2 * eps band: (2 - 1.99) / 2 = 0.005 <= 0.02. */
    c[nc++] = (struct route_case){"near tie", 4, {2.0f, 1.99f, -1.0f, 0.0f}, 0.01f, 0, 1,
                                  1.0 / (1.0 + ex(1.99f, 2.0f)), 1.0};
    /* Three within the band of the max (gaps /5: 0.01, 0.016; 4.5 at 0.1 is out); the second
     * pick keeps 4.92 ((4.95 - 4.92) / 4.95 = 0.006). */
    c[nc++] = (struct route_case){"three near", 5, {5.0f, 4.95f, 4.92f, 4.5f, 1.0f}, 0.01f, 0, 1,
                                  1.0 / (1.0 + ex(4.95f, 5.0f) + ex(4.92f, 5.0f)),
                                  1.0 / (1.0 + ex(4.92f, 4.95f))};
    /* The second pick's mask is taken afresh from the original scores with m2: 1.99 is masked
     * by m1 = 4 but kept by m2 = 2 ((2 - 1.99) / 2 = 0.005); the first pick does not count. */
    c[nc++] = (struct route_case){"second mask fresh", 3, {4.0f, 2.0f, 1.99f}, 0.01f, 0, 1, 1.0,
                                  1.0 / (1.0 + ex(1.99f, 2.0f))};
    /* A tie for the max: the first index wins, the tie shares the first weight. */
    c[nc++] = (struct route_case){"tie", 4, {0.5f, 3.0f, 3.0f, 1.0f}, 0.01f, 1, 2, 0.5, 1.0};
    /* Negative maxima: factor = max(|s_k|, m1) = |s_k|, so a gap of 0.0202 under -1.0202 is
     * 0.0198 (kept), where |m1| = 1 would give 0.0202 (masked) and a minimum would keep -3. */
    c[nc++] = (struct route_case){"negative max", 4, {-1.0f, -1.0202f, -3.0f, -1.5f}, 0.01f, 0, 1,
                                  1.0 / (1.0 + ex(-1.0202f, -1.0f)), 1.0};
    /* m1 = 0: the winner's own gap is 0 / 0 (NaN: kept); -0.001 has gap 1 (masked). */
    c[nc++] = (struct route_case){"zero max", 3, {0.0f, -0.001f, -5.0f}, 0.01f, 0, 1, 1.0, 1.0};
    /* NaN counts as -inf; -inf logits are kept by the NaN gap but weigh exp(-inf) = 0. */
    c[nc++] = (struct route_case){"nan and -inf", 5, {NAN, NI, 2.0f, 1.995f, NAN}, 0.01f, 2, 3,
                                  1.0 / (1.0 + ex(1.995f, 2.0f)), 1.0};
    /* One finite logit: the second pick has m2 = -inf, weight 0, index the first not taken. */
    c[nc++] = (struct route_case){"one finite", 4, {NI, NAN, 0.7f, NI}, 0.01f, 2, 0, 1.0, 0.0};
    c[nc++] = (struct route_case){"one finite first", 3, {0.7f, NI, NAN}, 0.01f, 0, 1, 1.0, 0.0};
    /* Nothing finite: picks 0 and 1, both weights 0. */
    c[nc++] = (struct route_case){"all -inf", 3, {NAN, NI, NI}, 0.01f, 0, 1, 0.0, 0.0};
    /* Two experts. */
    c[nc++] = (struct route_case){"two experts", 2, {1.0f, 1.01f}, 0.01f, 1, 0,
                                  1.0 / (1.0 + ex(1.0f, 1.01f)), 1.0};
    /* Sixteen experts (Phi-3.5-MoE): s_k = -k / 2 except 3 at 9 and 2.97 at 13. */
    c[nc] = (struct route_case){"sixteen", 16, {0}, 0.01f, 9, 13, 1.0 / (1.0 + ex(2.97f, 3.0f)), 1.0};
    for (int k = 0; k < 16; k++)
        c[nc].s[k] = -0.5f * (float)k;
    c[nc].s[9] = 3.0f;
    c[nc++].s[13] = 2.97f;
    /* The jitter sets the band: with 0.01 only the maxima survive, with 0.25 (thr 0.5) gaps
     * 0.25 and 0.4 are kept in the first pick and 0.2 in the second. */
    c[nc++] = (struct route_case){"jitter 0.01", 4, {2.0f, 1.5f, 1.2f, -0.3f}, 0.01f, 0, 1, 1.0, 1.0};
    c[nc++] = (struct route_case){"jitter 0.25", 4, {2.0f, 1.5f, 1.2f, -0.3f}, 0.25f, 0, 1,
                                  1.0 / (1.0 + ex(1.5f, 2.0f) + ex(1.2f, 2.0f)),
                                  1.0 / (1.0 + ex(1.2f, 1.5f))};
    for (int i = 0; i < nc; i++) {
        int32_t e[2] = {-7, -7};
        float w[2] = {-7.0f, -7.0f};
        struct kern_moe_route_params p = {c[i].s, e, w, 1, c[i].n, c[i].n, c[i].eps};
        CHECK(ops->moe_route(ctx, &p) == KERN_OK, "%s route %s failed", ops->name, c[i].name);
        CHECK(e[0] == c[i].e1 && e[1] == c[i].e2, "%s route %s: experts %d %d, want %d %d",
              ops->name, c[i].name, e[0], e[1], c[i].e1, c[i].e2);
        CHECK(near(w[0], c[i].w1) && near(w[1], c[i].w2), "%s route %s: weights %.9g %.9g, want %.9g %.9g",
              ops->name, c[i].name, (double)w[0], (double)w[1], c[i].w1, c[i].w2);
    }

    /* Several tokens at a row stride ldx > n_experts: the padding (100, larger than any logit)
     * must not be read. Tokens: the clear winner, the tie, and the jitter row. */
    float rows[3 * 7];
    for (int i = 0; i < 21; i++)
        rows[i] = 100.0f;
    const int pick[3] = {0, 4, 13};
    for (int t = 0; t < 3; t++)
        memcpy(rows + 7 * t, c[pick[t]].s, 4 * sizeof(float));
    int32_t e[3 * 2 + 1];
    float w[3 * 2 + 1];
    e[6] = 99;
    w[6] = 99.0f;
    struct kern_moe_route_params p = {rows, e, w, 3, 4, 7, 0.01f};
    CHECK(ops->moe_route(ctx, &p) == KERN_OK, "%s route ldx", ops->name);
    for (int t = 0; t < 3; t++)
        CHECK(e[2 * t] == c[pick[t]].e1 && e[2 * t + 1] == c[pick[t]].e2 &&
                  near(w[2 * t], c[pick[t]].w1) && near(w[2 * t + 1], c[pick[t]].w2),
              "%s route ldx token %d: %d %d %g %g", ops->name, t, e[2 * t], e[2 * t + 1],
              (double)w[2 * t], (double)w[2 * t + 1]);
    CHECK(e[6] == 99 && w[6] == 99.0f, "%s route wrote past n_tokens", ops->name);
}

static void test_route_invalid(const struct kern_ops *ops, struct kern_ctx *ctx)
{
    float s[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int32_t e[4];
    float w[4];
    const struct kern_moe_route_params good = {s, e, w, 2, 4, 4, 0.01f};
    CHECK(ops->moe_route(ctx, &good) == KERN_OK, "%s route good call", ops->name);
    struct kern_moe_route_params bad[13];
    for (int i = 0; i < 13; i++)
        bad[i] = good;
    bad[0].logits = NULL;
    bad[1].experts = NULL;
    bad[2].weights = NULL;
    bad[3].n_tokens = -1;
    bad[4].n_experts = 1;      /* routing needs two */
    bad[5].n_experts = 0;
    bad[6].ldx = 3;            /* ldx < n_experts */
    bad[7].jitter_eps = -0.01f;
    bad[8].jitter_eps = NAN;
    bad[9].n_experts = (int64_t)INT32_MAX + 1;
    bad[9].ldx = (int64_t)INT32_MAX + 1;
    bad[10].n_tokens = INT64_MAX / 4; /* n_tokens * ldx overflows */
    bad[11].ldx = INT64_MAX / 2;
    bad[12].n_experts = -2;
    for (int i = 0; i < 13; i++) {
        for (int j = 0; j < 4; j++) {
            e[j] = 77;
            w[j] = 77.0f;
        }
        CHECK(ops->moe_route(ctx, &bad[i]) == KERN_ERR_INVALID, "%s route bad[%d] accepted",
              ops->name, i);
        CHECK(e[0] == 77 && e[3] == 77 && w[0] == 77.0f && w[3] == 77.0f,
              "%s route bad[%d] wrote", ops->name, i);
    }
    CHECK(ops->moe_route(ctx, NULL) == KERN_ERR_INVALID, "%s route NULL params", ops->name);
    struct kern_moe_route_params none = {NULL, NULL, NULL, 0, 16, 16, 0.01f};
    CHECK(ops->moe_route(ctx, &none) == KERN_OK, "%s route of no tokens refused", ops->name);
}

/* ---------------------------------------------------------------------------------------- */
/* layernorm */

static void test_layernorm(const struct kern_ops *ops, struct kern_ctx *ctx, struct kt_rng *rng)
{
    /* [1, 2, 3, 4]: mean 2.5, biased variance 1.25, so (x - mean) / sqrt(1.25) is
     * -+1.3416407864998738 and -+0.4472135954999579; gains 2, 0.5, -1, 1 and biases
     * 0.25, -1, 3, 0 (exact in every dtype). Run from and into x itself. */
    const double n1 = 1.3416407864998738, n2 = 0.4472135954999579;
    const double want[4] = {-n1 * 2 + 0.25, -n2 * 0.5 - 1.0, n2 * -1.0 + 3.0, n1};
    const float wf[4] = {2.0f, 0.5f, -1.0f, 1.0f}, bf[4] = {0.25f, -1.0f, 3.0f, 0.0f};
    for (int dt = 0; dt < 3; dt++) {
        uint16_t w16[4], b16[4];
        float w32[4], b32[4];
        for (int i = 0; i < 4; i++) {
            kt_set(dt == KERN_DTYPE_F32 ? (void *)w32 : (void *)w16, (enum kern_dtype)dt, i, wf[i]);
            kt_set(dt == KERN_DTYPE_F32 ? (void *)b32 : (void *)b16, (enum kern_dtype)dt, i, bf[i]);
        }
        float x[4] = {1, 2, 3, 4};
        struct kern_layernorm_params p = {
            x, dt == KERN_DTYPE_F32 ? (const void *)w32 : w16,
            dt == KERN_DTYPE_F32 ? (const void *)b32 : b16, (enum kern_dtype)dt, x, 1, 4, 0.0f};
        CHECK(ops->layernorm(ctx, &p) == KERN_OK, "%s layernorm", ops->name);
        CHECK(near(x[0], want[0]) && near(x[1], want[1]) && near(x[2], want[2]) &&
                  near(x[3], want[3]),
              "%s layernorm [1,2,3,4] %s in place: %.9g %.9g %.9g %.9g", ops->name,
              kern_dtype_name((enum kern_dtype)dt), (double)x[0], (double)x[1], (double)x[2],
              (double)x[3]);
    }
    /* eps matters: [0, 2] has variance 1; eps 3 gives 1 / sqrt(4): [-0.5, 0.5]. */
    float x2[2] = {0, 2}, o2[2], one[2] = {1, 1}, zero[2] = {0, 0};
    struct kern_layernorm_params pe = {x2, one, zero, KERN_DTYPE_F32, o2, 1, 2, 3.0f};
    CHECK(ops->layernorm(ctx, &pe) == KERN_OK && o2[0] == -0.5f && o2[1] == 0.5f,
          "%s layernorm eps: %g %g", ops->name, (double)o2[0], (double)o2[1]);

    /* Random rows (some far from zero) against the formula in fp64: the result is rounded once
     * from fp64 on the reference (half an ulp) and from fp32 statistics on the CPU (rmsnorm's
     * tolerance in test_ops: (8 + 2 sqrt(dim)) ulps of the normalised term, plus an ulp of the
     * result). */
    const int64_t rows = 5, dim = 97;
    float *x = kt_alloc(rows * dim * sizeof *x), *out = kt_alloc(rows * dim * sizeof *out);
    uint16_t *wb = kt_alloc(2 * dim * sizeof *wb);
    kt_fill(rng, x, KERN_DTYPE_F32, rows * dim, -2.0f, 2.0f);
    for (int64_t i = 0; i < dim; i++)
        x[3 * dim + i] += 300.0f; /* row 3: mean 300, spread 2 */
    kt_fill(rng, wb, KERN_DTYPE_BF16, dim, 0.5f, 1.5f);
    kt_fill(rng, wb + dim, KERN_DTYPE_BF16, dim, -1.0f, 1.0f);
    struct kern_layernorm_params p = {x, wb, wb + dim, KERN_DTYPE_BF16, out, rows, dim, 1e-5f};
    CHECK(ops->layernorm(ctx, &p) == KERN_OK, "%s layernorm random", ops->name);
    int bad = 0;
    for (int64_t r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < dim; i++)
            mean += x[r * dim + i];
        mean /= (double)dim;
        for (int64_t i = 0; i < dim; i++)
            var += (x[r * dim + i] - mean) * (x[r * dim + i] - mean);
        var /= (double)dim;
        for (int64_t i = 0; i < dim; i++) {
            double term = (x[r * dim + i] - mean) / sqrt(var + 1e-5f) * kt_get(wb, KERN_DTYPE_BF16, i);
            double want_i = term + kt_get(wb, KERN_DTYPE_BF16, dim + i);
            double tol = 0x1p-24 * ((8.0 + 2.0 * sqrt((double)dim)) * fabs(term) + 2.0 * fabs(want_i));
            bad += !(fabs((double)out[r * dim + i] - want_i) <= tol);
        }
    }
    CHECK(bad == 0, "%s layernorm random: %d values off the formula", ops->name, bad);
    CHECK(kt_guard_ok(x) && kt_guard_ok(out) && kt_guard_ok(wb), "%s layernorm canary", ops->name);

    /* Invalid arguments: KERN_ERR_INVALID and out untouched. */
    struct kern_layernorm_params bads[10];
    for (int i = 0; i < 10; i++)
        bads[i] = p;
    bads[0].x = NULL;
    bads[1].w = NULL;
    bads[2].b = NULL;
    bads[3].out = NULL;
    bads[4].n_rows = -1;
    bads[5].dim = -1;
    bads[6].eps = -1e-5f;
    bads[7].eps = NAN;
    bads[8].w_dtype = (enum kern_dtype)3;
    bads[9].n_rows = INT64_MAX / 2; /* n_rows * dim overflows */
    for (int i = 0; i < 10; i++) {
        for (int64_t j = 0; j < rows * dim; j++)
            out[j] = 5.0f;
        CHECK(ops->layernorm(ctx, &bads[i]) == KERN_ERR_INVALID, "%s layernorm bad[%d] accepted",
              ops->name, i);
        CHECK(out[0] == 5.0f && out[rows * dim - 1] == 5.0f, "%s layernorm bad[%d] wrote",
              ops->name, i);
    }
    CHECK(ops->layernorm(ctx, NULL) == KERN_ERR_INVALID, "%s layernorm NULL params", ops->name);
    struct kern_layernorm_params none = {NULL, NULL, NULL, KERN_DTYPE_F32, NULL, 0, 4096, 1e-5f};
    CHECK(ops->layernorm(ctx, &none) == KERN_OK, "%s layernorm of no rows refused", ops->name);
    kt_free(x);
    kt_free(out);
    kt_free(wb);
}

/* ---------------------------------------------------------------------------------------- */
/* bias_add: one fp32 add of the exactly widened bias, so exact; the padding lanes of y
 * (ldy > dim) keep their sentinel. */

static void test_bias_add(const struct kern_ops *ops, struct kern_ctx *ctx, struct kt_rng *rng)
{
    const int64_t rows = 3, dim = 21, ldy = 24;
    for (int dt = 0; dt < 3; dt++) {
        float y0[3 * 24], y[3 * 24];
        float bsrc[21];
        uint16_t b16[21];
        float b32[21];
        kt_fill(rng, y0, KERN_DTYPE_F32, rows * ldy, -4.0f, 4.0f);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = dim; i < ldy; i++)
                y0[r * ldy + i] = -555.0f;
        void *b = dt == KERN_DTYPE_F32 ? (void *)b32 : (void *)b16;
        kt_fill(rng, b, (enum kern_dtype)dt, dim, -1.0f, 1.0f);
        kt_set(b, (enum kern_dtype)dt, 4, INFINITY);
        kt_set(b, (enum kern_dtype)dt, 5, NAN);
        for (int64_t i = 0; i < dim; i++)
            bsrc[i] = kt_get(b, (enum kern_dtype)dt, i);
        memcpy(y, y0, sizeof y);
        struct kern_bias_add_params p = {y, b, (enum kern_dtype)dt, rows, dim, ldy};
        CHECK(ops->bias_add(ctx, &p) == KERN_OK, "%s bias_add %s", ops->name,
              kern_dtype_name((enum kern_dtype)dt));
        int bad = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; i < ldy; i++) {
                float want = i < dim ? y0[r * ldy + i] + bsrc[i] : -555.0f;
                float got = y[r * ldy + i];
                bad += !(got == want || (isnan(got) && isnan(want)));
            }
        CHECK(bad == 0, "%s bias_add %s: %d lanes wrong", ops->name,
              kern_dtype_name((enum kern_dtype)dt), bad);
        CHECK(isinf(y[4]) && isnan(y[ldy + 5]), "%s bias_add Inf/NaN", ops->name);

        struct kern_bias_add_params bads[8];
        for (int i = 0; i < 8; i++)
            bads[i] = p;
        bads[0].y = NULL;
        bads[1].b = NULL;
        bads[2].n_rows = -1;
        bads[3].dim = -1;
        bads[4].ldy = dim - 1;
        bads[5].b_dtype = (enum kern_dtype)-1;
        bads[6].n_rows = INT64_MAX / 8; /* (n_rows - 1) * ldy overflows */
        bads[7].ldy = INT64_MAX;
        bads[7].n_rows = 2;
        for (int i = 0; i < 8; i++) {
            memcpy(y, y0, sizeof y);
            CHECK(ops->bias_add(ctx, &bads[i]) == KERN_ERR_INVALID, "%s bias_add bad[%d] accepted",
                  ops->name, i);
            CHECK(memcmp(y, y0, sizeof y) == 0, "%s bias_add bad[%d] wrote", ops->name, i);
        }
    }
    CHECK(ops->bias_add(ctx, NULL) == KERN_ERR_INVALID, "%s bias_add NULL params", ops->name);
    struct kern_bias_add_params none = {NULL, NULL, KERN_DTYPE_BF16, 0, 3072, 3072};
    CHECK(ops->bias_add(ctx, &none) == KERN_OK, "%s bias_add of no rows refused", ops->name);
}

/* ---------------------------------------------------------------------------------------- */
/* moe */

/* A small hand case: hidden 2, inter 1. Expert 0: Wg = [1 0], Wu = [0 1], Wd = [1 2]^T, so for
 * x = [1, 2]: g = 1, u = 2, a = 2 silu(1), out = [a, 2a]. Expert 1: Wg = [0 1], Wu = [1 1],
 * Wd = [-1 0.5]^T: g = 2, u = 3, a = 3 silu(2), out = [-a, a / 2]. Weights 0.75 and 0.5. */
static void test_moe_hand(const struct kern_ops *ops, struct kern_ctx *ctx)
{
    const float wg[2][2] = {{1, 0}, {0, 1}}, wu[2][2] = {{0, 1}, {1, 1}}, wd[2][2] = {{1, 2}, {-1, 0.5f}};
    const void *g[2] = {wg[0], wg[1]}, *u[2] = {wu[0], wu[1]}, *d[2] = {wd[0], wd[1]};
    const float x[2] = {1, 2}, wts[2] = {0.5f, 0.75f};
    const int32_t experts[2] = {1, 0}; /* listed out of order: the sum runs 0 then 1 */
    float y[3] = {10, -10, 42};
    size_t wb = kern_moe_work_bytes(1, 2, 2, 1, 2);
    void *work = kt_alloc(wb);
    struct kern_moe_params p = {x, experts, wts, g, u, d, KERN_DTYPE_F32, y, work, 1, 2, 1, 2, 2};
    CHECK(ops->moe(ctx, &p) == KERN_OK, "%s moe hand", ops->name);
    double a0 = 2.0 / (1.0 + exp(-1.0)), a1 = 3.0 * 2.0 / (1.0 + exp(-2.0));
    CHECK(near(y[0], 10.0 + 0.75 * a0 - 0.5 * a1) && near(y[1], -10.0 + 0.75 * 2.0 * a0 + 0.5 * 0.5 * a1) &&
              y[2] == 42.0f,
          "%s moe hand: %.9g %.9g", ops->name, (double)y[0], (double)y[1]);
    CHECK(kt_guard_ok(work), "%s moe hand: work overrun", ops->name);
    kt_free(work);
}

/* The naive per-token computation: for each token its top_k (expert, weight) pairs in
 * ascending expert order (ties by k), each expert's SiLU-gated MLP in fp64, their weighted
 * sum, then the add to y. */
static void naive_moe(const struct kern_moe_params *p, float *y)
{
    int64_t H = p->hidden, I = p->inter, K = p->top_k;
    double *sum = malloc((size_t)H * sizeof *sum), *act = malloc((size_t)I * sizeof *act);
    for (int64_t t = 0; t < p->n_tokens; t++) {
        for (int64_t o = 0; o < H; o++)
            sum[o] = 0.0;
        int done[8] = {0};
        for (int64_t n = 0; n < K; n++) {
            int64_t k = -1; /* the smallest expert not done yet, first k on ties */
            for (int64_t j = 0; j < K; j++)
                if (!done[j] && (k < 0 || p->experts[t * K + j] < p->experts[t * K + k]))
                    k = j;
            done[k] = 1;
            int32_t e = p->experts[t * K + k];
            for (int64_t i = 0; i < I; i++) {
                double gs = 0, us = 0;
                for (int64_t h = 0; h < H; h++) {
                    gs += (double)kt_get(p->w_gate[e], p->w_dtype, i * H + h) * p->x[t * H + h];
                    us += (double)kt_get(p->w_up[e], p->w_dtype, i * H + h) * p->x[t * H + h];
                }
                act[i] = gs / (1.0 + exp(-gs)) * us;
            }
            for (int64_t o = 0; o < H; o++) {
                double ds = 0;
                for (int64_t i = 0; i < I; i++)
                    ds += (double)kt_get(p->w_down[e], p->w_dtype, o * I + i) * act[i];
                sum[o] += (double)p->weights[t * K + k] * ds;
            }
        }
        for (int64_t o = 0; o < H; o++)
            y[t * H + o] = (float)((double)y[t * H + o] + sum[o]);
    }
    free(sum);
    free(act);
}

struct moe_case {
    const char *name;
    int64_t n_tokens, hidden, inter, n_experts, top_k;
    enum kern_dtype dt;
    int32_t experts[24];
    float weights[24];
};

static void check_moe_case(const struct kern_ops *ops, struct kern_ctx *ctx, struct kt_rng *rng,
                           const struct moe_case *c)
{
    int64_t T = c->n_tokens, H = c->hidden, I = c->inter, E = c->n_experts, K = c->top_k;
    /* Weights in [-amp, amp): 0.5 up to width 64, less beyond so that the values stay O(1)
     * for the tolerance below. */
    int64_t width = H > I ? H : I;
    float amp = width <= 64 ? 0.5f : (float)(4.0 / sqrt((double)width));
    void *wts[3][8];
    const void *ptr[3][8];
    int used[8] = {0};
    for (int64_t s = 0; s < T * K; s++)
        used[c->experts[s]] = 1;
    for (int m = 0; m < 3; m++)
        for (int64_t e = 0; e < E; e++) {
            wts[m][e] = kt_alloc(kt_bytes(c->dt, H * I));
            kt_fill(rng, wts[m][e], c->dt, H * I, -amp, amp);
            if (!used[e]) /* never read: NaN would show if it were (a block's scale) */
                for (int64_t i = 0; i < H * I; i++)
                    kt_set(wts[m][e], c->dt, i, NAN);
            ptr[m][e] = wts[m][e];
        }
    float *x = kt_alloc((size_t)(T * H) * sizeof *x);
    float *y = kt_alloc((size_t)(T * H) * sizeof *y), *want = kt_alloc((size_t)(T * H) * sizeof *want);
    kt_fill(rng, x, KERN_DTYPE_F32, T * H, -1.0f, 1.0f);
    kt_fill(rng, y, KERN_DTYPE_F32, T * H, -2.0f, 2.0f);
    memcpy(want, y, (size_t)(T * H) * sizeof *y);
    size_t wb = kern_moe_work_bytes(T, K, H, I, E);
    void *work = kt_alloc(wb);
    struct kern_moe_params p = {x, c->experts, c->weights, ptr[0], ptr[1], ptr[2], c->dt, y, work,
                                T, H, I, E, K};
    naive_moe(&p, want);
    CHECK(ops->moe(ctx, &p) == KERN_OK, "%s moe %s failed", ops->name, c->name);
    /* The reference is fp64 (one rounding); the CPU table is fp32 with inner products of
     * length hidden and inter: test_ops.c bounds that error from the data. Here the values are
     * O(1) and both dimensions at most 64 (or the weights scaled down beyond), so 1e-5 of the
     * magnitude is ample either way and far below a dropped or misweighted expert (O(0.1)). */
    int bad = 0;
    for (int64_t i = 0; i < T * H; i++)
        bad += !(fabs((double)y[i] - (double)want[i]) <= 1e-5 * (1.0 + fabs((double)want[i])));
    CHECK(bad == 0, "%s moe %s: %d of %lld values off the naive sum (first %.9g vs %.9g)",
          ops->name, c->name, bad, (long long)(T * H), (double)y[0], (double)want[0]);
    CHECK(kt_guard_ok(y) && kt_guard_ok(work), "%s moe %s: canary", ops->name, c->name);
    for (int m = 0; m < 3; m++)
        for (int64_t e = 0; e < E; e++)
            kt_free(wts[m][e]);
    kt_free(x);
    kt_free(y);
    kt_free(want);
    kt_free(work);
}

static void test_moe_cases(const struct kern_ops *ops, struct kern_ctx *ctx, struct kt_rng *rng)
{
    const struct moe_case cases[] = {
        /* top_k 1; expert 2 of 4 gets nothing. */
        {"top1", 4, 19, 7, 4, 1, KERN_DTYPE_F32, {3, 0, 1, 0}, {1.0f, 0.5f, -0.25f, 2.0f}},
        /* top_k 2 (Phi-3.5-MoE), bf16; experts 1 and 5 of 6 get nothing; a zero weight. */
        {"top2 bf16", 5, 33, 20, 6, 2, KERN_DTYPE_BF16, {4, 0, 2, 3, 0, 4, 3, 2, 0, 2},
         {0.9f, 0.4f, 1.0f, 0.0f, 0.3f, 0.6f, 1.0f, 1.0f, 0.25f, 0.75f}},
        /* top_k 3 with duplicate experts in one token and the largest index first. */
        {"top3 dup f16", 3, 24, 13, 3, 3, KERN_DTYPE_F16, {2, 1, 2, 0, 0, 0, 1, 2, 0},
         {0.5f, -0.5f, 0.25f, 1.0f, 0.5f, 0.25f, 0.3f, 0.2f, 0.1f}},
        /* One expert (moe allows it; routing needs two), weights above 1. */
        {"one expert", 2, 8, 40, 1, 2, KERN_DTYPE_BF16, {0, 0, 0, 0}, {1.5f, 2.5f, 0.0f, 1.0f}},
        /* Block-format experts (quantized at load, or a GGUF file's): hidden and inter whole
         * blocks, 32 for Q8_0 / Q4_0 and 256 for the K formats. */
        {"top2 q8_0", 5, 64, 32, 6, 2, KERN_DTYPE_Q8_0, {4, 0, 2, 3, 0, 4, 3, 2, 0, 2},
         {0.9f, 0.4f, 1.0f, 0.0f, 0.3f, 0.6f, 1.0f, 1.0f, 0.25f, 0.75f}},
        {"top3 dup q4_0", 3, 32, 96, 3, 3, KERN_DTYPE_Q4_0, {2, 1, 2, 0, 0, 0, 1, 2, 0},
         {0.5f, -0.5f, 0.25f, 1.0f, 0.5f, 0.25f, 0.3f, 0.2f, 0.1f}},
        {"top2 q4_k", 3, 256, 512, 4, 2, KERN_DTYPE_Q4_K, {3, 0, 0, 1, 3, 3}, {0.7f, 0.3f, 1.0f, 0.5f, 0.2f, 0.9f}},
        {"top2 q5_k", 2, 512, 256, 2, 2, KERN_DTYPE_Q5_K, {1, 0, 0, 0}, {0.6f, 0.4f, 1.0f, 0.5f}},
        {"top1 q6_k", 2, 256, 256, 3, 1, KERN_DTYPE_Q6_K, {2, 0}, {1.0f, 0.5f}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_moe_case(ops, ctx, rng, &cases[i]);
}

/* Every pair is computed, weight 0 included: an Inf in an expert's output times a zero
 * weight is NaN in y, for that token only. */
static void test_moe_zero_weight_inf(const struct kern_ops *ops, struct kern_ctx *ctx)
{
    float ones[4] = {1, 1, 1, 1}, big[4] = {INFINITY, 1, 1, 1};
    const void *g[2] = {ones, ones}, *u[2] = {ones, ones}, *d[2] = {ones, big};
    float x[4] = {1, 1, 1, 1}, wts[4] = {1.0f, 0.0f, 1.0f, 1.0f}, y[4] = {0, 0, 0, 0};
    int32_t experts[4] = {0, 1, 0, 0};
    void *work = kt_alloc(kern_moe_work_bytes(2, 2, 2, 2, 2));
    struct kern_moe_params p = {x, experts, wts, g, u, d, KERN_DTYPE_F32, y, work, 2, 2, 2, 2, 2};
    CHECK(ops->moe(ctx, &p) == KERN_OK, "%s moe zero weight", ops->name);
    /* token 0: expert 1's output is [Inf * a + a, 2a] with weight 0: NaN, then finite */
    CHECK(isnan(y[0]) && isfinite(y[1]) && isfinite(y[2]) && isfinite(y[3]),
          "%s moe zero weight x Inf: %g %g %g %g", ops->name, (double)y[0], (double)y[1],
          (double)y[2], (double)y[3]);
    kt_free(work);
}

static void test_moe_invalid(const struct kern_ops *ops, struct kern_ctx *ctx)
{
    float x[8] = {1, 1, 1, 1, 1, 1, 1, 1}, wf[8] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    float wts[4] = {1, 1, 1, 1}, y[8];
    int32_t experts[4] = {0, 1, 1, 0};
    const void *g[2] = {wf, wf}, *u[2] = {wf, wf}, *d[2] = {wf, wf}, *gn[2] = {wf, NULL};
    void *work = kt_alloc(kern_moe_work_bytes(2, 2, 4, 2, 2));
    /* 2 tokens, hidden 4, inter 2, 2 experts, top 2 */
    const struct kern_moe_params good = {x, experts, wts, g, u, d, KERN_DTYPE_F32, y, work, 2, 4, 2, 2, 2};
    for (int i = 0; i < 8; i++)
        y[i] = 0.0f;
    CHECK(ops->moe(ctx, &good) == KERN_OK && y[0] != 0.0f, "%s moe good call", ops->name);
    int32_t ex_hi[4] = {0, 2, 1, 0}, ex_lo[4] = {0, 1, -1, 0};
    enum { NB = 28 };
    struct kern_moe_params bad[NB];
    for (int i = 0; i < NB; i++)
        bad[i] = good;
    bad[0].x = NULL;
    bad[1].experts = NULL;
    bad[2].weights = NULL;
    bad[3].w_gate = NULL;
    bad[4].w_up = NULL;
    bad[5].w_down = NULL;
    bad[6].y = NULL;
    bad[7].work = NULL;
    bad[8].experts = ex_hi;     /* expert == n_experts */
    bad[9].experts = ex_lo;     /* expert -1 */
    bad[10].w_gate = gn;        /* NULL weight pointer of a used expert (1) */
    bad[11].w_up = gn;
    bad[12].w_down = gn;
    bad[13].n_tokens = -1;
    bad[14].hidden = -1;
    bad[15].inter = -1;
    bad[16].top_k = 0;
    bad[17].top_k = -2;
    bad[18].n_experts = 0;
    bad[19].n_experts = (int64_t)INT32_MAX + 1;
    bad[20].w_dtype = KERN_DTYPE_Q4_K; /* block formats need hidden and inter whole blocks */
    bad[21].n_tokens = INT64_MAX / 2; /* n_tokens * hidden overflows */
    bad[22].hidden = (int64_t)1 << 31; /* hidden * inter = 2^62: too many elements */
    bad[22].inter = (int64_t)1 << 31;
    bad[23].inter = INT64_MAX / 8;    /* the work buffer's size overflows */
    bad[23].hidden = 1;
    bad[24].w_dtype = KERN_DTYPE_Q8_0;  /* hidden 4, inter 2: not whole blocks of 32 */
    bad[25].w_dtype = KERN_DTYPE_Q4_0;  /* hidden whole blocks, inter 2 not */
    bad[25].hidden = KERN_QBLOCK;
    bad[26].w_dtype = KERN_DTYPE_COUNT;
    bad[27].w_dtype = (enum kern_dtype)-1;
    for (int i = 0; i < NB; i++) {
        for (int j = 0; j < 8; j++)
            y[j] = 9.0f;
        CHECK(ops->moe(ctx, &bad[i]) == KERN_ERR_INVALID, "%s moe bad[%d] accepted", ops->name, i);
        int same = 1;
        for (int j = 0; j < 8; j++)
            same &= y[j] == 9.0f;
        CHECK(same, "%s moe bad[%d] wrote y", ops->name, i);
    }
    CHECK(ops->moe(ctx, NULL) == KERN_ERR_INVALID, "%s moe NULL params", ops->name);
    /* No tokens, or hidden 0: nothing to do, nothing read. */
    struct kern_moe_params none = {NULL, NULL, NULL, NULL, NULL, NULL, KERN_DTYPE_BF16, NULL, NULL,
                                   0, 4096, 6400, 16, 2};
    CHECK(ops->moe(ctx, &none) == KERN_OK, "%s moe of no tokens refused", ops->name);
    /* inter 0: every expert gives 0, y keeps its values. */
    struct kern_moe_params empty = good;
    empty.inter = 0;
    for (int j = 0; j < 8; j++)
        y[j] = (float)j - 3.5f;
    CHECK(ops->moe(ctx, &empty) == KERN_OK, "%s moe inter 0", ops->name);
    for (int j = 0; j < 8; j++)
        CHECK(y[j] == (float)j - 3.5f, "%s moe inter 0 changed y[%d]", ops->name, j);
    CHECK(kt_guard_ok(work), "%s moe invalid: work canary", ops->name);
    kt_free(work);
}

static size_t up256(size_t b)
{
    return (b + 255) / 256 * 256;
}

static void test_work_bytes(void)
{
    /* S = 6 slots, hidden 5, inter 7, 4 experts: 120 -> 256, 336 -> 512, (24 + 16 + 64) * 4 =
     * 416 -> 512 bytes. */
    CHECK(kern_moe_work_bytes(3, 2, 5, 7, 4) == 256 + 512 + 512, "work bytes small: %zu",
          kern_moe_work_bytes(3, 2, 5, 7, 4));
    /* Phi-3.5-MoE decode of one token: 2 x 4096 floats, 2 x 12800 floats, 8 + 64 + 64 int32. */
    CHECK(kern_moe_work_bytes(1, 2, 4096, 6400, 16) == 32768 + 102400 + 768,
          "work bytes phi3.5-moe: %zu", kern_moe_work_bytes(1, 2, 4096, 6400, 16));
    size_t big = kern_moe_work_bytes(512, 2, 4096, 6400, 16);
    CHECK(big == up256(1024 * 4096 * 4) + up256(1024 * 12800 * 4) + up256((4096 + 64 + 64) * 4),
          "work bytes prefill: %zu", big);
    /* No tokens: the int32 region alone. */
    CHECK(kern_moe_work_bytes(0, 2, 4096, 6400, 16) == up256((64 + 64) * 4), "work bytes empty");
    /* Large but representable: 2^40 floats in region A. */
    CHECK(kern_moe_work_bytes(1 << 20, 1, 1 << 20, 0, 2) == ((size_t)1 << 42) + up256((4 * ((size_t)1 << 20) + 8 + 64) * 4),
          "work bytes 2^40 floats");
    /* Negative sizes and overflow give 0. */
    CHECK(kern_moe_work_bytes(-1, 2, 4, 4, 2) == 0 && kern_moe_work_bytes(1, -1, 4, 4, 2) == 0 &&
              kern_moe_work_bytes(1, 2, -4, 4, 2) == 0 && kern_moe_work_bytes(1, 2, 4, -4, 2) == 0 &&
              kern_moe_work_bytes(1, 2, 4, 4, -2) == 0,
          "work bytes of a negative size");
    CHECK(kern_moe_work_bytes(1, 2, 4, 4, (int64_t)INT32_MAX + 1) == 0, "work bytes n_experts > INT32_MAX");
    CHECK(kern_moe_work_bytes(INT64_MAX / 2, 4, 1, 1, 2) == 0, "work bytes slot overflow");
    CHECK(kern_moe_work_bytes(1 << 20, 2, INT64_MAX / 4, 1, 2) == 0, "work bytes region A overflow");
    CHECK(kern_moe_work_bytes(1 << 20, 2, 1, INT64_MAX / 4, 2) == 0, "work bytes region B overflow");
    CHECK(kern_moe_work_bytes(1, 1, (int64_t)1 << 60, 1, 2) == 0, "work bytes of 2^62 bytes");
    CHECK(kern_moe_work_bytes(INT64_MAX / 8, 2, 0, 0, 2) == 0, "work bytes region C overflow");
}

int main(void)
{
    struct kern_ops ref, cpu;
    kern_ops_init_ref(&ref);
    kern_ops_init_ref(&cpu);
    kern_ops_init_cpu(&cpu);
    struct kern_ctx *ctx = kern_ctx_create_cpu(3);
    CHECK(ctx != NULL, "kern_ctx_create_cpu");
    struct kt_rng rng = {1234567};
    const struct kern_ops *tabs[2] = {&ref, &cpu};
    for (int t = 0; t < 2; t++) {
        struct kern_ctx *c = t == 0 ? NULL : ctx;
        test_route_cases(tabs[t], c);
        test_route_invalid(tabs[t], c);
        test_layernorm(tabs[t], c, &rng);
        test_bias_add(tabs[t], c, &rng);
        test_moe_hand(tabs[t], c);
        test_moe_cases(tabs[t], c, &rng);
        test_moe_zero_weight_inf(tabs[t], c);
        test_moe_invalid(tabs[t], c);
    }
    test_work_bytes();
    kern_ctx_destroy(ctx);
    return tu_finish("test_moe");
}
