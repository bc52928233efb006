/* Unit tests of the vision-tower ops (act, attention_dense) against expectations written here
 * independently of kernels/ref: GELU and quick_gelu at hand-worked points and against their
 * textbook formulas in fp64, dense attention against a naive fp64 softmax(QK^T)V, every invalid
 * argument, and CPU results identical for one and two threads. Both the reference and the CPU
 * table run every case; test_ops.c compares the two tables at every instruction-set level.
 *
 * Tolerances. The reference computes in fp64 and rounds once: within an ulp of the fp64
 * formula. The CPU computes in fp32. act: the argument of erfc / exp is rounded to fp32 (about
 * an ulp), and both functions amplify a relative error of their argument y by |y d ln f/dy|:
 * 2y^2 = x^2 for erfc(-x / sqrt 2) at negative x, |z| for exp(z) at z = 1.702 x < 0; so
 * (6 + 2 x^2) ulps for GELU and (6 + 2 |z|) for quick_gelu at negative x, 6 ulps elsewhere,
 * plus 2^-133 absolute for results in the subnormal range. attention: the bound of
 * test_ops.c (its file comment): the fp32 score error, about 8 sqrt(d) 2^-24 scale |q| |k|,
 * changes each softmax weight by a relative amount of that size, and the weighted sum of n
 * values rounds like sqrt(n) 2^-24 max|v|. */
#include <float.h>

#include "kt_util.h"

#include "../test_util.h"

#define U24 0x1p-24

static struct kern_ctx *g_ctx1, *g_ctx2; /* CPU contexts of one and two threads */

/* Same class (both NaN, or equal infinities) or both finite within tol. */
static int agree(float got, double want, double tol)
{
    if (isnan(got) || isnan(want))
        return isnan(got) && isnan(want);
    if (isinf(got) || isinf(want))
        return (double)got == want;
    return fabs((double)got - want) <= tol;
}

/* ---------------------------------------------------------------------------------------- */
/* act */

static double gelu_formula(double x) /* the contract's own words: fp64 keeps it within 1e-7
                                       * relative for x >= -6 */
{
    return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
}

static double quick_formula(double x)
{
    return x / (1.0 + exp(-1.702 * x));
}

/* The allowed error of an fp32 act against the fp64 value (file comment); the reference, in
 * fp64, meets the same bound with room to spare. */
static double act_tol(enum kern_act kind, float x, double want)
{
    double ulps = 6.0;
    if (x < 0.0f)
        ulps += kind == KERN_ACT_GELU ? 2.0 * (double)x * (double)x : 2.0 * 1.702 * fabs((double)x);
    return ulps * U24 * fabs(want) + 0x1p-133;
}

static void test_act_hand(const struct kern_ops *ops, struct kern_ctx *ctx)
{
    /* GELU(x) = x Phi(x), Phi the standard normal CDF: Phi(1) = 0.841344746068542948...,
     * Phi(3) = 0.998650101968369896...; GELU(-x) = GELU(x) - x. GELU(-20) = -20 Phi(-20)
     * = -5.5e-88, which rounds to -0 in fp32; GELU(20) = 20 (1 - 2.8e-89) = 20.
     * quick_gelu(x) = x sigmoid(1.702 x): sigmoid(1.702) = 1 / (1 + e^-1.702) =
     * 0.845795765932821...; quick_gelu(-x) = quick_gelu(x) - x. sigmoid(5.106) =
     * 0.993976230097404...; quick_gelu(-20) = -20 e^-34.04 / (1 + e^-34.04) = -3.29341e-14;
     * quick_gelu(20) = 20 - 3.3e-14, 20 in fp32. */
    const float xs[7] = {0.0f, 1.0f, -1.0f, 3.0f, -3.0f, -20.0f, 20.0f};
    const double gelu_want[7] = {0.0,
                                 0.8413447460685429,
                                 0.8413447460685429 - 1.0,
                                 3.0 * 0.9986501019683699,
                                 3.0 * 0.9986501019683699 - 3.0,
                                 -5.507248237212663e-88,
                                 20.0};
    const double quick_want[7] = {0.0,
                                  0.8457957659328212,
                                  0.8457957659328212 - 1.0,
                                  3.0 * 0.9939762300974047,
                                  3.0 * 0.9939762300974047 - 3.0,
                                  -3.2934102413993747e-14,
                                  20.0};
    for (int kind = 0; kind < 2; kind++) {
        const double *want = kind == KERN_ACT_GELU ? gelu_want : quick_want;
        const char *kname = kind == KERN_ACT_GELU ? "gelu" : "quick_gelu";
        float x[10], out[10];
        memcpy(x, xs, sizeof xs);
        x[7] = NAN;
        x[8] = INFINITY;
        x[9] = -INFINITY;
        for (int i = 0; i < 10; i++)
            out[i] = 77.0f;
        struct kern_act_params p = {x, out, 10, (enum kern_act)kind};
        CHECK(ops->act(ctx, &p) == KERN_OK, "%s %s hand", ops->name, kname);
        for (int i = 0; i < 7; i++)
            CHECK(agree(out[i], want[i], act_tol((enum kern_act)kind, xs[i], want[i])),
                  "%s %s(%g) = %.9g, want %.9g", ops->name, kname, (double)xs[i], (double)out[i],
                  want[i]);
        CHECK(out[0] == 0.0f && out[6] == 20.0f, "%s %s: 0 -> %g, 20 -> %.9g", ops->name, kname,
              (double)out[0], (double)out[6]);
        CHECK(kind == KERN_ACT_QUICK_GELU || out[5] == 0.0f, "%s gelu(-20) = %g, want -0",
              ops->name, (double)out[5]);
        /* NaN in, NaN out; the limits at the infinities: +inf and -0. */
        CHECK(isnan(out[7]), "%s %s(NaN) = %g", ops->name, kname, (double)out[7]);
        CHECK(out[8] == INFINITY, "%s %s(+inf) = %g", ops->name, kname, (double)out[8]);
        CHECK(out[9] == 0.0f && signbit(out[9]), "%s %s(-inf) = %g", ops->name, kname,
              (double)out[9]);
    }
}

static void test_act_random(const struct kern_ops *ops, struct kern_ctx *ctx, struct kt_rng *rng)
{
    /* Enough elements for several tasks of the pool, and an odd count. */
    const int64_t n = 100003;
    float *x = kt_alloc((size_t)n * sizeof *x), *out = kt_alloc((size_t)n * sizeof *out);
    float *again = kt_alloc((size_t)n * sizeof *again);
    for (int kind = 0; kind < 2; kind++) {
        const char *kname = kind == KERN_ACT_GELU ? "gelu" : "quick_gelu";
        /* GELU's formula with erf is exact enough in fp64 down to -6 (1 + erf cancels
         * below); quick_gelu's reaches exp(-34). */
        float amp = kind == KERN_ACT_GELU ? 6.0f : 20.0f;
        kt_fill(rng, x, KERN_DTYPE_F32, n, -amp, amp);
        for (int64_t i = 0; i < 100; i++) /* a few tiny arguments */
            x[i * 997] *= 1e-6f;
        struct kern_act_params p = {x, out, n, (enum kern_act)kind};
        CHECK(ops->act(ctx, &p) == KERN_OK, "%s %s random", ops->name, kname);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) {
            double want = kind == KERN_ACT_GELU ? gelu_formula(x[i]) : quick_formula(x[i]);
            if (!agree(out[i], want, act_tol((enum kern_act)kind, x[i], want))) {
                if (bad < 3)
                    fprintf(stderr, "  %s %s(%.9g) = %.9g, want %.17g\n", ops->name, kname,
                            (double)x[i], (double)out[i], want);
                bad++;
            }
        }
        CHECK(bad == 0, "%s %s random: %lld of %lld off the formula", ops->name, kname,
              (long long)bad, (long long)n);
        /* In place gives the same values. */
        memcpy(again, x, (size_t)n * sizeof *again);
        struct kern_act_params ip = {again, again, n, (enum kern_act)kind};
        CHECK(ops->act(ctx, &ip) == KERN_OK && memcmp(again, out, (size_t)n * sizeof *out) == 0,
              "%s %s in place differs", ops->name, kname);
        /* The CPU's result does not depend on the thread count. */
        if (strcmp(ops->name, "cpu") == 0) {
            memset(again, 0, (size_t)n * sizeof *again);
            struct kern_act_params tp = {x, again, n, (enum kern_act)kind};
            CHECK(ops->act(g_ctx1, &tp) == KERN_OK &&
                      memcmp(again, out, (size_t)n * sizeof *out) == 0,
                  "cpu %s: one thread differs", kname);
            memset(again, 0, (size_t)n * sizeof *again);
            CHECK(ops->act(g_ctx2, &tp) == KERN_OK &&
                      memcmp(again, out, (size_t)n * sizeof *out) == 0,
                  "cpu %s: two threads differ", kname);
        }
        /* n = 1 and a prefix: nothing past n is written. */
        out[1] = -3.0f;
        struct kern_act_params one = {x, out, 1, (enum kern_act)kind};
        CHECK(ops->act(ctx, &one) == KERN_OK && out[1] == -3.0f, "%s %s n=1 wrote past n",
              ops->name, kname);
    }
    CHECK(kt_guard_ok(x) && kt_guard_ok(out) && kt_guard_ok(again), "%s act canary", ops->name);
    kt_free(x);
    kt_free(out);
    kt_free(again);
}

static void test_act_invalid(const struct kern_ops *ops, struct kern_ctx *ctx)
{
    float x[4] = {1, 2, 3, 4}, out[4];
    const struct kern_act_params good = {x, out, 4, KERN_ACT_GELU};
    CHECK(ops->act(ctx, &good) == KERN_OK, "%s act good call", ops->name);
    enum { NB = 7 };
    struct kern_act_params bad[NB];
    for (int i = 0; i < NB; i++)
        bad[i] = good;
    bad[0].x = NULL;
    bad[1].out = NULL;
    bad[2].n = -1;
    bad[3].kind = (enum kern_act)2;
    bad[4].kind = (enum kern_act)-1;
    bad[5].n = INT64_MAX; /* more elements than any buffer can hold */
    bad[6].n = INT64_MIN;
    for (int i = 0; i < NB; i++) {
        for (int j = 0; j < 4; j++)
            out[j] = 9.0f;
        CHECK(ops->act(ctx, &bad[i]) == KERN_ERR_INVALID, "%s act bad[%d] accepted", ops->name, i);
        CHECK(out[0] == 9.0f && out[3] == 9.0f, "%s act bad[%d] wrote", ops->name, i);
    }
    CHECK(ops->act(ctx, NULL) == KERN_ERR_INVALID, "%s act NULL params", ops->name);
    struct kern_act_params none = {NULL, NULL, 0, KERN_ACT_QUICK_GELU};
    CHECK(ops->act(ctx, &none) == KERN_OK, "%s act of nothing refused", ops->name);
    none.kind = (enum kern_act)5;
    CHECK(ops->act(ctx, &none) == KERN_ERR_INVALID, "%s act: bad kind with n = 0 accepted",
          ops->name);
}

/* ---------------------------------------------------------------------------------------- */
/* attention_dense */

struct ad_case {
    const char *name;
    int64_t n_seqs, seq_len, n_heads, d, ld_pad;
    int fused;                 /* q, k, v side by side in one row of 3 n_heads d (+ pad) */
    float q_amp;               /* larger: a peakier softmax */
    int special;               /* 1: NaN in q and k; 2: infinite scores */
};

/* The inputs of a case: q, k, v pointers into one or three buffers, rows of stride ld. */
struct ad_data {
    float *buf[3];
    const float *q, *k, *v;
    int64_t ld, tokens, row;
};

static void ad_make(struct kt_rng *rng, const struct ad_case *c, struct ad_data *dd)
{
    dd->row = c->n_heads * c->d;
    dd->tokens = c->n_seqs * c->seq_len;
    dd->ld = (c->fused ? 3 * dd->row : dd->row) + c->ld_pad;
    /* The padding lanes and the rows' unused tail are NaN: a kernel that reads them fails. */
    size_t n = (size_t)(dd->tokens * dd->ld);
    for (int b = 0; b < 3; b++) {
        dd->buf[b] = NULL;
        if (b > 0 && c->fused)
            continue;
        dd->buf[b] = kt_alloc((n ? n : 1) * sizeof(float));
        for (size_t i = 0; i < n; i++)
            dd->buf[b][i] = NAN;
    }
    float *base[3];
    for (int b = 0; b < 3; b++) {
        base[b] = c->fused ? dd->buf[0] + b * dd->row : dd->buf[b];
        float amp = b == 0 ? c->q_amp : 1.0f;
        for (int64_t t = 0; t < dd->tokens; t++)
            for (int64_t e = 0; e < dd->row; e++)
                base[b][t * dd->ld + e] = kt_uniform(rng, -amp, amp);
    }
    dd->q = base[0];
    dd->k = base[1];
    dd->v = base[2];
}

static void ad_free(struct ad_data *dd)
{
    for (int b = 0; b < 3; b++)
        if (dd->buf[b]) {
            CHECK(kt_guard_ok(dd->buf[b]), "attention_dense input canary");
            kt_free(dd->buf[b]);
        }
}

/* The naive fp64 attention of the contract into want, and the tolerance of each output. */
static void ad_naive(const struct ad_data *dd, const struct ad_case *c, float scale, double *want,
                     double *tol)
{
    int64_t L = c->seq_len, d = c->d, ld = dd->ld;
    double *sc = malloc((size_t)L * sizeof *sc);
    for (int64_t s = 0; s < c->n_seqs; s++)
        for (int64_t h = 0; h < c->n_heads; h++) {
            double kmax = 0.0, vmax = 0.0;
            for (int64_t u = 0; u < L; u++) {
                double kk = 0.0;
                for (int64_t e = 0; e < d; e++) {
                    double kv = dd->k[(s * L + u) * ld + h * d + e];
                    double vv = fabs((double)dd->v[(s * L + u) * ld + h * d + e]);
                    kk += kv * kv;
                    vmax = vv > vmax ? vv : vmax;
                }
                kmax = kk > kmax ? kk : kmax;
            }
            for (int64_t i = 0; i < L; i++) {
                const float *q = dd->q + (s * L + i) * ld + h * d;
                double mx = -INFINITY, qq = 0.0;
                for (int64_t e = 0; e < d; e++)
                    qq += (double)q[e] * q[e];
                for (int64_t u = 0; u < L; u++) {
                    const float *k = dd->k + (s * L + u) * ld + h * d;
                    double dot = 0.0;
                    for (int64_t e = 0; e < d; e++)
                        dot += (double)q[e] * (double)k[e];
                    sc[u] = (double)scale * dot;
                    if (sc[u] > mx)
                        mx = sc[u];
                }
                double l = 0.0;
                for (int64_t u = 0; u < L; u++) {
                    sc[u] = exp(sc[u] - mx);
                    l += sc[u];
                }
                double smax = (double)scale * sqrt(qq) * sqrt(kmax), n = (double)L;
                for (int64_t e = 0; e < d; e++) {
                    double acc = 0.0;
                    for (int64_t u = 0; u < L; u++)
                        acc += sc[u] * (double)dd->v[(s * L + u) * ld + h * d + e];
                    int64_t o = ((s * L + i) * c->n_heads + h) * d + e;
                    want[o] = acc / l;
                    tol[o] = U24 * (vmax * (8.0 * sqrt((double)d) * smax + 4.0 * sqrt(n) +
                                            2.0 * (n / 64.0 + 1.0) + 8.0) +
                                    2.0 * fabs(want[o]));
                }
            }
        }
    free(sc);
}

static void check_ad(const struct kern_ops *ops, struct kern_ctx *ctx, struct kt_rng *rng,
                     const struct ad_case *c)
{
    struct ad_data dd;
    ad_make(rng, c, &dd);
    float scale = (float)(1.0 / sqrt((double)c->d));
    int64_t out_n = dd.tokens * dd.row;
    /* special 1: NaN in one lane of query (token 1, head 0), and in one key lane of
     * sequence 1 (head 1): that query's head-0 output and all of sequence 1's head-1 outputs
     * are NaN, the rest finite. special 2: query 0 of head 0 has a lane of -inf against keys
     * whose lane is positive (every score -inf: NaN); query 2 of head 0 has +inf against
     * mixed signs (+inf scores: NaN). */
    float *qw = (float *)dd.q, *kw = (float *)dd.k;
    if (c->special == 1) {
        qw[1 * dd.ld + 0 * c->d + 2] = NAN;
        kw[(1 * c->seq_len + 3) * dd.ld + 1 * c->d + 0] = NAN;
    } else if (c->special == 2) {
        qw[0 * dd.ld + 1] = -INFINITY;
        for (int64_t u = 0; u < c->seq_len; u++)
            kw[u * dd.ld + 1] = 0.25f + fabsf(kw[u * dd.ld + 1]);
        qw[2 * dd.ld + 3] = INFINITY;
    }
    double *want = malloc((size_t)out_n * sizeof *want), *tol = malloc((size_t)out_n * sizeof *tol);
    ad_naive(&dd, c, scale, want, tol);
    float *out = kt_alloc((size_t)out_n * sizeof *out);
    for (int64_t i = 0; i < out_n; i++)
        out[i] = -777.0f;
    struct kern_attention_dense_params p = {dd.q, dd.k, dd.v, out, c->n_seqs, c->seq_len,
                                            c->n_heads, c->d, dd.ld, scale};
    CHECK(ops->attention_dense(ctx, &p) == KERN_OK, "%s attention_dense %s", ops->name, c->name);
    /* The reference rounds fp64 once: an ulp and fp64 noise; the CPU the fp32 bound. */
    int is_ref = strcmp(ops->name, "ref") == 0;
    int64_t bad = 0;
    double worst = 0.0;
    for (int64_t i = 0; i < out_n; i++) {
        double t = is_ref ? U24 * fabs(want[i]) + 1e-12 * (tol[i] / U24) : tol[i];
        if (!agree(out[i], want[i], t)) {
            if (bad < 3)
                fprintf(stderr, "  %s %s [%lld]: got %.9g want %.17g tol %.3g\n", ops->name,
                        c->name, (long long)i, (double)out[i], want[i], t);
            bad++;
        } else if (isfinite(want[i]) && fabs((double)out[i] - want[i]) / t > worst) {
            worst = fabs((double)out[i] - want[i]) / t;
        }
    }
    if (getenv("KT_VERBOSE"))
        printf("  %s attention_dense %-28s worst error / tolerance = %.3f\n", ops->name, c->name,
               worst);
    CHECK(bad == 0, "%s attention_dense %s: %lld of %lld outputs off", ops->name, c->name,
          (long long)bad, (long long)out_n);
    if (c->special) {
        /* The naive loops decide NaN above; here, that the case does what it claims. */
        int64_t H = c->n_heads, d = c->d, nan_n = 0;
        for (int64_t i = 0; i < out_n; i++)
            nan_n += isnan(out[i]);
        if (c->special == 1)
            CHECK(isnan(out[(1 * H + 0) * d]) && !isnan(out[(0 * H + 0) * d]) &&
                      isnan(out[(c->seq_len * H + 1) * d]) && !isnan(out[(c->seq_len * H) * d]) &&
                      nan_n == (1 + c->seq_len) * d,
                  "%s attention_dense %s: NaN pattern (%lld NaN)", ops->name, c->name,
                  (long long)nan_n);
        else
            CHECK(isnan(out[0]) && isnan(out[2 * H * d]) && !isnan(out[1 * H * d]) &&
                      nan_n == 2 * d,
                  "%s attention_dense %s: infinite scores (%lld NaN)", ops->name, c->name,
                  (long long)nan_n);
    }
    /* The CPU gives the same bits with one thread and with two. */
    if (!is_ref) {
        float *o1 = kt_alloc((size_t)out_n * sizeof *o1), *o2 = kt_alloc((size_t)out_n * sizeof *o2);
        p.out = o1;
        CHECK(ops->attention_dense(g_ctx1, &p) == KERN_OK, "cpu attention_dense 1 thread");
        p.out = o2;
        CHECK(ops->attention_dense(g_ctx2, &p) == KERN_OK, "cpu attention_dense 2 threads");
        CHECK(memcmp(o1, out, (size_t)out_n * sizeof *o1) == 0 &&
                  memcmp(o2, out, (size_t)out_n * sizeof *o2) == 0,
              "cpu attention_dense %s: results depend on the thread count", c->name);
        CHECK(kt_guard_ok(o1) && kt_guard_ok(o2), "attention_dense canary");
        kt_free(o1);
        kt_free(o2);
    }
    CHECK(kt_guard_ok(out), "%s attention_dense %s: canary around out", ops->name, c->name);
    ad_free(&dd);
    kt_free(out);
    free(want);
    free(tol);
}

static const struct ad_case ad_cases[] = {
    {"one token", 1, 1, 1, 8, 0, 0, 1.0f, 0},
    {"tiny model 3x17 h4 d8 ld+5", 3, 17, 4, 8, 5, 0, 1.0f, 0},
    {"tiny model fused qkv", 2, 17, 4, 8, 0, 1, 1.0f, 0},
    {"crop 577 h2 d64 fused", 1, 577, 2, 64, 0, 1, 1.0f, 0},
    {"d80 ld+7", 2, 33, 3, 80, 7, 0, 1.0f, 0},
    {"d128 two key blocks", 1, 300, 2, 128, 0, 0, 1.0f, 0},
    {"d256 max", 2, 40, 1, 256, 3, 0, 1.0f, 0},
    {"d1", 1, 20, 3, 1, 0, 0, 1.0f, 0},
    {"257 keys peaky", 1, 257, 1, 64, 0, 1, 6.0f, 0},
    {"nan q and k", 2, 9, 2, 8, 1, 0, 1.0f, 1},
    {"infinite scores", 1, 5, 2, 8, 0, 0, 1.0f, 2},
};

static void test_ad_invalid(const struct kern_ops *ops, struct kern_ctx *ctx)
{
    /* 2 sequences of 3 tokens, 2 heads of 4, ld 10: q, k and v span 58 floats, out 48. All
     * in one pool so that the overlapping cases below point inside it. */
    float pool[400];
    for (int i = 0; i < 400; i++)
        pool[i] = 0.1f * (float)(i % 7);
    float *q = pool, *k = pool + 60, *v = pool + 120, *out = pool + 200;
    const struct kern_attention_dense_params good = {q, k, v, out, 2, 3, 2, 4, 10, 0.5f};
    CHECK(ops->attention_dense(ctx, &good) == KERN_OK, "%s attention_dense good call", ops->name);
    enum { NB = 21 };
    struct kern_attention_dense_params bad[NB];
    for (int i = 0; i < NB; i++)
        bad[i] = good;
    bad[0].q = NULL;
    bad[1].k = NULL;
    bad[2].v = NULL;
    bad[3].out = NULL;
    bad[4].n_seqs = -1;
    bad[5].seq_len = -1;
    bad[6].n_heads = -1;
    bad[7].head_dim = 0;
    bad[8].head_dim = 257;
    bad[9].head_dim = -4;
    bad[10].ld = 7;                      /* < n_heads * head_dim */
    bad[11].ld = -1;
    bad[12].n_seqs = INT64_MAX / 2;      /* n_seqs * seq_len overflows */
    bad[13].n_heads = INT64_MAX / 2;     /* n_heads * head_dim overflows */
    bad[13].ld = INT64_MAX;
    bad[14].ld = INT64_MAX / 4;          /* (tokens - 1) * ld overflows */
    bad[15].seq_len = (int64_t)1 << 40;  /* 2^63 elements spanned */
    bad[15].n_heads = (int64_t)1 << 20;
    bad[15].ld = (int64_t)1 << 22;
    bad[16].q = out;                     /* out overlaps q, k or v */
    bad[17].k = out + 47;                /* k's first element is out's last */
    bad[18].v = out - 57;                /* v's last element is out[0] */
    bad[19].out = q + 12;                /* out inside q's rows */
    bad[20].head_dim = 1000;
    bad[20].ld = 2000;
    for (int i = 0; i < NB; i++) {
        for (int j = 0; j < 48; j++)
            out[j] = 9.0f;
        CHECK(ops->attention_dense(ctx, &bad[i]) == KERN_ERR_INVALID,
              "%s attention_dense bad[%d] accepted", ops->name, i);
        int same = 1;
        for (int j = 0; j < 48; j++)
            same &= out[j] == 9.0f;
        CHECK(same, "%s attention_dense bad[%d] wrote", ops->name, i);
    }
    CHECK(ops->attention_dense(ctx, NULL) == KERN_ERR_INVALID, "%s attention_dense NULL params",
          ops->name);
    /* Nothing to do: no sequences, empty sequences or no heads, with NULL pointers. */
    struct kern_attention_dense_params none = {NULL, NULL, NULL, NULL, 0, 577, 16, 64, 3072, 0.125f};
    CHECK(ops->attention_dense(ctx, &none) == KERN_OK, "%s attention_dense no sequences", ops->name);
    none.n_seqs = 4;
    none.seq_len = 0;
    CHECK(ops->attention_dense(ctx, &none) == KERN_OK, "%s attention_dense empty sequences",
          ops->name);
    none.seq_len = 577;
    none.n_heads = 0;
    CHECK(ops->attention_dense(ctx, &none) == KERN_OK, "%s attention_dense no heads", ops->name);
    /* ...but the head size is checked even then. */
    none.head_dim = 0;
    CHECK(ops->attention_dense(ctx, &none) == KERN_ERR_INVALID,
          "%s attention_dense head_dim 0 with no work accepted", ops->name);
    /* Separate q, k, v may overlap each other (one fused buffer): accepted. */
    struct kern_attention_dense_params fused = good;
    fused.k = q;
    fused.v = q + 1;
    CHECK(ops->attention_dense(ctx, &fused) == KERN_OK, "%s attention_dense q/k/v overlap refused",
          ops->name);
}

int main(void)
{
    struct kern_ops ref, cpu;
    kern_ops_init_ref(&ref);
    kern_ops_init_ref(&cpu);
    kern_ops_init_cpu(&cpu);
    CHECK(ref.act && ref.attention_dense && cpu.act && cpu.attention_dense,
          "vision ops missing from a table");
    struct kern_ctx *ctx = kern_ctx_create_cpu(3);
    g_ctx1 = kern_ctx_create_cpu(1);
    g_ctx2 = kern_ctx_create_cpu(2);
    CHECK(ctx && g_ctx1 && g_ctx2, "kern_ctx_create_cpu");
    struct kt_rng rng = {777001};
    const struct kern_ops *tabs[2] = {&ref, &cpu};
    for (int t = 0; t < 2; t++) {
        struct kern_ctx *c = t == 0 ? NULL : ctx;
        test_act_hand(tabs[t], c);
        test_act_random(tabs[t], c, &rng);
        test_act_invalid(tabs[t], c);
        for (size_t i = 0; i < sizeof ad_cases / sizeof ad_cases[0]; i++)
            check_ad(tabs[t], c, &rng, &ad_cases[i]);
        test_ad_invalid(tabs[t], c);
    }
    kern_ctx_destroy(ctx);
    kern_ctx_destroy(g_ctx1);
    kern_ctx_destroy(g_ctx2);
    return tu_finish("test_vision_ops");
}
