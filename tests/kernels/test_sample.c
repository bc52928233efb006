/* The reference sample op (kern_sample_params, kernels/ref/sample.c) against hand-checkable
 * cases: greedy ties, NaN and infinities, each mod and their order, temperature, min_p, top_k
 * and top_p at their boundaries, the draw at u on and around cumulative boundaries, a grid
 * of u against exact probabilities, given tokens, raw logprobs and their top entries, and the
 * calls it must reject without writing. Not a test of the CUDA op (tests/gpu/test_gpu_ops.c
 * compares it with this reference). */
#include "kt_util.h"

#include "../test_util.h"

static struct kern_ops ref_ops;

/* A job over row 0 with the given temperature and u, no truncation and mods [0, n_mods). */
static struct kern_sample_job job_of(float temperature, double u, int64_t n_mods)
{
    struct kern_sample_job j = {.row = 0, .mod_start = 0, .n_mods = n_mods, .u = u,
                                .temperature = temperature, .min_p = 0.0f, .top_p = 1.0f,
                                .top_k = 0};
    return j;
}

/* Runs one job over x[0..dim) with mods; copies the job's work row into w (may be NULL).
 * Returns the token, or -100 when the call fails. */
static int32_t run(const float *x, int64_t dim, struct kern_sample_job job,
                   const struct kern_sample_mod *mods, int64_t n_mods, float *w)
{
    float *work = kt_alloc((size_t)dim * sizeof *work);
    int32_t *out = kt_alloc(sizeof *out);
    struct kern_sample_params p = {.x = x, .jobs = &job, .mods = mods, .work = work, .out = out,
                                   .n_rows = 1, .dim = dim, .ldx = dim, .n_jobs = 1,
                                   .n_mods = n_mods};
    int rc = ref_ops.sample(NULL, &p);
    int32_t tok = rc == KERN_OK ? out[0] : -100;
    CHECK(rc == KERN_OK, "sample rc %d", rc);
    CHECK(kt_guard_ok(work) && kt_guard_ok(out), "sample wrote outside work/out");
    if (w)
        memcpy(w, work, (size_t)dim * sizeof *w);
    kt_free(work);
    kt_free(out);
    return tok;
}

/* Survivor bit mask (w > 0) of the first dim <= 32 weights. */
static unsigned survivors(const float *w, int64_t dim)
{
    unsigned m = 0;
    for (int64_t i = 0; i < dim; i++)
        if (w[i] > 0.0f)
            m |= 1u << i;
    return m;
}

static void test_greedy(void)
{
    const float inf = INFINITY, nan = NAN;
    struct {
        float x[5];
        int32_t want;
    } rows[] = {
        {{1, 3, 2, 3, 0}, 1},          /* ties: the first index */
        {{nan, 1, inf, inf, nan}, 2},  /* +inf wins, first of two */
        {{nan, -inf, nan, -inf, nan}, -1},
        {{-inf, -inf, -inf, -inf, -3e38f}, 4},
        {{-1, -0.0f, 0.0f, -2, -3}, 1}, /* -0 and +0 tie */
        {{nan, 2, nan, 1, 2}, 1},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const float temps[] = {0.0f, -1.0f, nan, -inf};
        for (size_t t = 0; t < 4; t++) {
            int32_t got = run(rows[i].x, 5, job_of(temps[t], 0.99, 0), NULL, 0, NULL);
            CHECK(got == rows[i].want, "greedy row %zu temperature %g: %d, want %d", i,
                  (double)temps[t], got, rows[i].want);
        }
    }
    /* a sampled job with nothing above -inf is -1 as well, whatever u */
    float dead[3] = {-inf, nan, -inf};
    CHECK(run(dead, 3, job_of(1.0f, 0.0, 0), NULL, 0, NULL) == -1, "all -inf sampled");
    CHECK(run(dead, 3, job_of(1.0f, 0.999, 0), NULL, 0, NULL) == -1, "all -inf sampled");
    float one[1] = {-5.0f};
    CHECK(run(one, 1, job_of(1.0f, 0.7, 0), NULL, 0, NULL) == 0, "dim 1");
    /* +inf logits sampled: every +inf has weight 1, the rest 0 (inf - inf never made) */
    float infs[4] = {3, inf, 7, inf};
    float w[4];
    CHECK(run(infs, 4, job_of(1.0f, 0.49, 0), NULL, 0, w) == 1, "two +inf, low u");
    CHECK(w[0] == 0.0f && w[1] == 1.0f && w[2] == 0.0f && w[3] == 1.0f,
          "+inf weights %g %g %g %g", (double)w[0], (double)w[1], (double)w[2], (double)w[3]);
    CHECK(run(infs, 4, job_of(1.0f, 0.51, 0), NULL, 0, NULL) == 3, "two +inf, high u");
}

static struct kern_sample_mod mod_of(int32_t token)
{
    struct kern_sample_mod m = {.token = token, .ban = 0, .bias = 0.0f, .rep = 1.0f,
                                .sub_freq = 0.0f, .sub_pres = 0.0f};
    return m;
}

static void test_mods(void)
{
    float w[4];
    struct kern_sample_mod m[2];

    float x1[3] = {1, 2, 3};
    m[0] = mod_of(0);
    m[0].bias = 5.0f;
    CHECK(run(x1, 3, job_of(0.0f, 0.0, 1), m, 1, w) == 0 && w[0] == 6.0f, "bias: %g", (double)w[0]);
    CHECK(w[1] == 2.0f && w[2] == 3.0f, "bias touched other tokens");

    m[0] = mod_of(2);
    m[0].ban = 1;
    CHECK(run(x1, 3, job_of(0.0f, 0.0, 1), m, 1, w) == 1 && w[2] == -INFINITY, "ban");
    m[0].bias = 100.0f; /* a ban wins over any bias */
    CHECK(run(x1, 3, job_of(0.0f, 0.0, 1), m, 1, w) == 1 && w[2] == -INFINITY, "ban + bias");

    float x2[2] = {2.0f, 1.5f};
    m[0] = mod_of(0);
    m[0].rep = 2.0f; /* positive: divided */
    CHECK(run(x2, 2, job_of(0.0f, 0.0, 1), m, 1, w) == 1 && w[0] == 1.0f, "rep > 0: %g",
          (double)w[0]);
    float x3[2] = {-1.0f, -1.5f};
    CHECK(run(x3, 2, job_of(0.0f, 0.0, 1), m, 1, w) == 1 && w[0] == -2.0f, "rep < 0: %g",
          (double)w[0]);
    float x4[2] = {0.0f, -1.0f};
    CHECK(run(x4, 2, job_of(0.0f, 0.0, 1), m, 1, w) == 0 && w[0] == 0.0f, "rep on 0: %g",
          (double)w[0]);

    float x5[2] = {3.0f, 2.0f};
    m[0] = mod_of(0);
    m[0].sub_freq = 0.75f;
    m[0].sub_pres = 0.5f;
    CHECK(run(x5, 2, job_of(0.0f, 0.0, 1), m, 1, w) == 1 && w[0] == 1.75f, "subs: %g",
          (double)w[0]);

    /* order: bias, then rep, then the subtractions */
    float x6[1] = {1.0f};
    m[0] = mod_of(0);
    m[0].bias = 1.0f;
    m[0].rep = 4.0f;
    run(x6, 1, job_of(0.0f, 0.0, 1), m, 1, w);
    CHECK(w[0] == 0.5f, "bias before rep: %g (rep first gives 1.25)", (double)w[0]);
    m[0].bias = -3.0f;
    m[0].rep = 2.0f;
    run(x6, 1, job_of(0.0f, 0.0, 1), m, 1, w);
    CHECK(w[0] == -4.0f, "rep sees the biased sign: %g", (double)w[0]);
    float x7[1] = {2.0f};
    m[0] = mod_of(0);
    m[0].rep = 2.0f;
    m[0].sub_freq = 1.5f;
    run(x7, 1, job_of(0.0f, 0.0, 1), m, 1, w);
    CHECK(w[0] == -0.5f, "rep before sub: %g (sub first gives 0.25)", (double)w[0]);
    m[0].sub_freq = 0.0f;
    m[0].sub_pres = 1.5f;
    run(x7, 1, job_of(0.0f, 0.0, 1), m, 1, w);
    CHECK(w[0] == -0.5f, "rep before sub_pres: %g", (double)w[0]);

    /* a NaN logit stays -inf under a bias; +inf - inf made by a bias counts as -inf */
    float x8[3] = {NAN, INFINITY, -7.0f};
    m[0] = mod_of(0);
    m[0].bias = 5.0f;
    m[1] = mod_of(1);
    m[1].bias = -INFINITY;
    CHECK(run(x8, 3, job_of(0.0f, 0.0, 2), m, 2, w) == 2, "NaN + bias / inf - inf");
    CHECK(w[0] == -INFINITY && w[1] == -INFINITY && w[2] == -7.0f, "NaN handling %g %g %g",
          (double)w[0], (double)w[1], (double)w[2]);

    /* two jobs on one row with their own mod ranges; the row itself is never modified */
    float x9[3] = {1, 2, 3};
    struct kern_sample_mod ms[3] = {mod_of(2), mod_of(0), mod_of(1)};
    ms[0].ban = 1;
    ms[1].bias = 10.0f;
    ms[2].bias = -10.0f;
    struct kern_sample_job jobs[3] = {job_of(0.0f, 0.0, 1), job_of(0.0f, 0.0, 2),
                                      job_of(0.0f, 0.0, 0)};
    jobs[1].mod_start = 1;
    float work[9];
    int32_t out[3];
    struct kern_sample_params p = {.x = x9, .jobs = jobs, .mods = ms, .work = work, .out = out,
                                   .n_rows = 1, .dim = 3, .ldx = 3, .n_jobs = 3, .n_mods = 3};
    CHECK(ref_ops.sample(NULL, &p) == KERN_OK && out[0] == 1 && out[1] == 0 && out[2] == 2,
          "jobs with own mods: %d %d %d", out[0], out[1], out[2]);
    CHECK(x9[0] == 1 && x9[1] == 2 && x9[2] == 3, "x modified");
}

static void test_temperature_min_p(void)
{
    float w[8];
    const float l3 = logf(3.0f);
    float x[2] = {0.0f, l3};
    /* T = 1: weights {1/3, 1}, probabilities 1/4, 3/4 */
    CHECK(run(x, 2, job_of(1.0f, 0.2, 0), NULL, 0, w) == 0, "T=1 low u");
    CHECK(w[1] == 1.0f && w[0] == expf((0.0f - l3) * (1.0f / 1.0f)), "T=1 weights %.9g %.9g",
          (double)w[0], (double)w[1]);
    CHECK(run(x, 2, job_of(1.0f, 0.3, 0), NULL, 0, NULL) == 1, "T=1 high u");
    /* T = 0.5: weights {1/9, 1}, probabilities 0.1, 0.9 */
    CHECK(run(x, 2, job_of(0.5f, 0.09, 0), NULL, 0, w) == 0, "T=0.5 u 0.09");
    CHECK(w[0] == expf((0.0f - l3) * (1.0f / 0.5f)), "T=0.5 weight %.9g", (double)w[0]);
    CHECK(run(x, 2, job_of(0.5f, 0.11, 0), NULL, 0, NULL) == 1, "T=0.5 u 0.11");
    /* T = 2: weights {1/sqrt 3, 1}, probabilities 0.366, 0.634 */
    CHECK(run(x, 2, job_of(2.0f, 0.35, 0), NULL, 0, w) == 0, "T=2 u 0.35");
    CHECK(w[0] == expf((0.0f - l3) * (1.0f / 2.0f)), "T=2 weight %.9g", (double)w[0]);
    CHECK(run(x, 2, job_of(2.0f, 0.38, 0), NULL, 0, NULL) == 1, "T=2 u 0.38");

    /* min_p compares the relative weight: w < min_p drops, w == min_p stays */
    float y[4] = {0.0f, logf(0.5f), logf(0.25f), logf(0.1f)};
    run(y, 4, job_of(1.0f, 0.0, 0), NULL, 0, w);
    float w1 = w[1], w2 = w[2];
    struct kern_sample_job j = job_of(1.0f, 0.0, 0);
    j.min_p = 0.3f;
    run(y, 4, j, NULL, 0, w);
    CHECK(survivors(w, 4) == 0x3u, "min_p 0.3: %#x", survivors(w, 4));
    j.min_p = w2;
    run(y, 4, j, NULL, 0, w);
    CHECK(survivors(w, 4) == 0x7u, "min_p == w2 keeps it: %#x", survivors(w, 4));
    j.min_p = nextafterf(w2, 1.0f);
    run(y, 4, j, NULL, 0, w);
    CHECK(survivors(w, 4) == 0x3u, "min_p just above w2 drops it: %#x", survivors(w, 4));
    CHECK(w[1] == w1 && w[0] == 1.0f, "min_p changed a kept weight");
    j.min_p = 1.0f; /* only the best (weight exactly 1) */
    j.u = 0.999;
    CHECK(run(y, 4, j, NULL, 0, w) == 0 && survivors(w, 4) == 0x1u, "min_p 1");
}

static void test_top_k(void)
{
    /* weights: 1 at ids 1 and 3; e^-1 at 2, 4, 5; e^-2 at 0; e^-3 at 6 */
    float x[7] = {1, 3, 2, 3, 2, 2, 0};
    float w[7];
    const struct {
        int32_t k;
        unsigned want;
    } cases[] = {
        {1, 0x0au},   /* the k-th is tied with id 3: both stay */
        {2, 0x0au},
        {3, 0x3eu},   /* the 3rd largest is e^-1: all three of them */
        {5, 0x3eu},
        {6, 0x3fu},   /* e^-2 */
        {7, 0x7fu},   /* k = the number of positive weights: off */
        {100, 0x7fu},
        {0, 0x7fu},
        {-3, 0x7fu},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct kern_sample_job j = job_of(1.0f, 0.5, 0);
        j.top_k = cases[i].k;
        run(x, 7, j, NULL, 0, w);
        CHECK(survivors(w, 7) == cases[i].want, "top_k %d: %#x, want %#x", cases[i].k,
              survivors(w, 7), cases[i].want);
    }
    /* top_k counts only what min_p left: 2 of the 2 survivors is off */
    struct kern_sample_job j = job_of(1.0f, 0.5, 0);
    j.min_p = 0.5f;
    j.top_k = 2;
    run(x, 7, j, NULL, 0, w);
    CHECK(survivors(w, 7) == 0x0au, "min_p then top_k: %#x", survivors(w, 7));
}

static void test_top_p(void)
{
    float w[8];
    /* four equal weights (1 each, sum 4): the target 4 * top_p against masses 0, 1, 2, 3 */
    float flat[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    const struct {
        float top_p;
        unsigned want;
    } flat_cases[] = {
        {0.5f, 0x3u},            /* target 2: rank 2 has mass 2 before it, not below */
        {0x1.000002p-1f, 0x7u},  /* just above 0.5: rank 2 stays */
        {0.25f, 0x1u},
        {0x1.000002p-2f, 0x3u},
        {0.0f, 0x1u},            /* rank 0 only */
        {-1.0f, 0x1u},
        {0.999f, 0xfu},
        {1.0f, 0xfu},
        {NAN, 0xfu},
    };
    for (size_t i = 0; i < sizeof flat_cases / sizeof flat_cases[0]; i++) {
        struct kern_sample_job j = job_of(1.0f, 0.0, 0);
        j.top_p = flat_cases[i].top_p;
        run(flat, 4, j, NULL, 0, w);
        CHECK(survivors(w, 4) == flat_cases[i].want, "top_p %a flat: %#x, want %#x",
              (double)flat_cases[i].top_p, survivors(w, 4), flat_cases[i].want);
    }
    /* two levels: 1 at ids 1, 3; a = e^-1 at 0, 2, 4. Ranks: 1, 3, 0, 2, 4 with masses
     * before them 0, 1, 2, 2 + a, 2 + 2a; the sum is 2 + 3a = 3.104 */
    float x[5] = {0, 1, 0, 1, 0};
    const struct {
        float top_p;
        unsigned want;
    } cases[] = {
        {0.5f, 0x0au},  /* target 1.55 */
        {0.7f, 0x0bu},  /* 2.17: the tie at the cut, lower id (0) first */
        {0.8f, 0x0fu},  /* 2.48 */
        {0.9f, 0x1fu},  /* 2.79 */
        {0.0f, 0x02u},  /* rank 0 is id 1, the lower of the two ties */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct kern_sample_job j = job_of(1.0f, 0.0, 0);
        j.top_p = cases[i].top_p;
        int32_t tok = run(x, 5, j, NULL, 0, w);
        CHECK(survivors(w, 5) == cases[i].want, "top_p %g: %#x, want %#x",
              (double)cases[i].top_p, survivors(w, 5), cases[i].want);
        CHECK(tok == __builtin_ctz(cases[i].want), "top_p %g u 0: %d", (double)cases[i].top_p,
              tok);
    }
    /* top_p after top_k: top_k 2 keeps ids 1, 3 (sum 2); top_p 0.5 keeps rank 0 only */
    struct kern_sample_job j = job_of(1.0f, 0.99, 0);
    j.top_k = 2;
    j.top_p = 0.5f;
    CHECK(run(x, 5, j, NULL, 0, w) == 1 && survivors(w, 5) == 0x02u, "top_k then top_p: %#x",
          survivors(w, 5));
}

static void test_draw(void)
{
    /* four survivors of weight 1 (ids 0, 2, 4, 5) between dropped ids: t = 4u */
    const float ninf = -INFINITY;
    float x[7] = {0, ninf, 0, ninf, 0, 0, ninf};
    const struct {
        double u;
        int32_t want;
    } cases[] = {
        {0.0, 0},
        {0x1.fffffffffffffp-3, 0}, /* t just below 1 */
        {0.25, 2},                 /* t = 1: the running sum must exceed it */
        {0x1.fffffffffffffp-2, 2},
        {0.5, 4},
        {0x1.7ffffffffffffp-1, 4}, /* just below 0.75 */
        {0.75, 5},
        {0x1.fffffffffffffp-1, 5}, /* 1 - eps: the last survivor */
        {1.0, 5},                  /* outside [0, 1): the nearest end */
        {7.0, 5},
        {INFINITY, 5},
        {-0.5, 0},
        {NAN, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t got = run(x, 7, job_of(1.0f, cases[i].u, 0), NULL, 0, NULL);
        CHECK(got == cases[i].want, "draw u %a: %d, want %d", cases[i].u, got, cases[i].want);
    }
}

/* A grid of n u values (k + 1/2) / n: the number landing on each token is within 1 of
 * n * p exactly, p = w / sum(w) from weights computed here by the formula of step 3. */
static void check_grid(const float *x, int64_t dim, struct kern_sample_job j, unsigned keep,
                       const char *what)
{
    float m = -INFINITY;
    for (int64_t i = 0; i < dim; i++)
        if (x[i] > m)
            m = x[i];
    double wt[16], sum = 0.0;
    for (int64_t i = 0; i < dim; i++) {
        float inv_t = 1.0f / j.temperature;
        float v = x[i] == m ? 1.0f : (x[i] == -INFINITY ? 0.0f : expf((x[i] - m) * inv_t));
        wt[i] = (keep >> i) & 1u ? v : 0.0;
        sum += wt[i];
    }
    enum { N = 20000 };
    long count[16] = {0};
    for (int k = 0; k < N; k++) {
        j.u = (k + 0.5) / N;
        int32_t t = run(x, dim, j, NULL, 0, NULL);
        if (t >= 0 && t < dim)
            count[t]++;
    }
    for (int64_t i = 0; i < dim; i++) {
        double want = N * wt[i] / sum;
        CHECK(fabs((double)count[i] - want) <= 1.0, "%s: token %lld drawn %ld times, want %.2f",
              what, (long long)i, count[i], want);
    }
}

static void test_distribution(void)
{
    float x[8] = {2.0f, 1.0f, 0.5f, 3.0f, -1.0f, 1.0f, -INFINITY, 2.5f};
    check_grid(x, 8, job_of(0.8f, 0.0, 0), 0xbfu, "T 0.8");
    struct kern_sample_job j = job_of(0.8f, 0.0, 0);
    j.top_k = 4; /* 3, 7, 0 then the tie 1 = 5 */
    check_grid(x, 8, j, 0xabu, "T 0.8 top_k 4");
    j = job_of(1.5f, 0.0, 0);
    j.top_p = 0.6f; /* w 1 (3), .717 (7), .513 (0), .264 (1, 5), .189, .069: target 1.81 */
    check_grid(x, 8, j, 0x89u, "T 1.5 top_p 0.6");
}

/* ---- given tokens and raw logprobs ---- */

#define CANARY_TOKEN (-7)
#define CANARY_LOGPROB 99.0f

/* Runs one job with logprobs set over x[0..dim). *logprob and every top entry start as
 * canaries; work starts as 42s and is copied into w when w is not NULL. Returns the token, or
 * -100 when the call fails. */
static int32_t run_lp(const float *x, int64_t dim, struct kern_sample_job job,
                      const struct kern_sample_mod *mods, int64_t n_mods, float *logprob,
                      struct kern_token_logprob *top, float *w)
{
    job.logprobs = 1;
    float *work = kt_alloc((size_t)dim * sizeof *work);
    int32_t *out = kt_alloc(sizeof *out);
    float *lp = kt_alloc(sizeof *lp);
    struct kern_token_logprob *t = kt_alloc(KERN_MAX_TOP_LOGPROBS * sizeof *t);
    for (int64_t i = 0; i < dim; i++)
        work[i] = 42.0f;
    *lp = CANARY_LOGPROB;
    for (int r = 0; r < KERN_MAX_TOP_LOGPROBS; r++)
        t[r] = (struct kern_token_logprob){CANARY_TOKEN, CANARY_LOGPROB};
    struct kern_sample_params p = {.x = x, .jobs = &job, .mods = mods, .work = work, .out = out,
                                   .logprob = lp, .top = t, .n_rows = 1, .dim = dim, .ldx = dim,
                                   .n_jobs = 1, .n_mods = n_mods};
    int rc = ref_ops.sample(NULL, &p);
    int32_t tok = rc == KERN_OK ? out[0] : -100;
    CHECK(rc == KERN_OK, "sample with logprobs rc %d", rc);
    CHECK(kt_guard_ok(work) && kt_guard_ok(out) && kt_guard_ok(lp) && kt_guard_ok(t),
          "sample wrote outside its buffers");
    *logprob = *lp;
    memcpy(top, t, KERN_MAX_TOP_LOGPROBS * sizeof *t);
    if (w)
        memcpy(w, work, (size_t)dim * sizeof *w);
    kt_free(work);
    kt_free(out);
    kt_free(lp);
    kt_free(t);
    return tok;
}

/* The raw logprob of each x[i] by the formula of ops.h, with exp and log of the C library
 * (the op's kern_weight_exp is within 2 ulp of exp: far inside the 1e-6 the checks allow). */
static void want_logprobs(const float *x, int64_t dim, double *want)
{
    double m = -INFINITY;
    for (int64_t i = 0; i < dim; i++)
        if (!isnan(x[i]) && x[i] > m)
            m = x[i];
    double s = 0.0;
    for (int64_t i = 0; i < dim; i++)
        if (!isnan(x[i]) && x[i] != -INFINITY)
            s += x[i] == m ? 1.0 : exp((double)x[i] - m);
    for (int64_t i = 0; i < dim; i++) {
        if (m == -INFINITY || isnan(x[i]) || x[i] == -INFINITY)
            want[i] = -INFINITY;
        else
            want[i] = (x[i] == m ? 0.0 : (double)x[i] - m) - log(s);
    }
}

static int lp_close(float got, double want)
{
    if (isinf(want) || isnan(want))
        return got == (float)want;
    return fabs((double)got - want) <= 1e-6;
}

/* Checks top[0..n) against the ids want_ids (logprobs from the formula) and that every entry
 * from n on is still the canary. */
static void check_top(const char *what, const float *x, int64_t dim,
                      const struct kern_token_logprob *top, const int32_t *want_ids, int n)
{
    double want[64];
    want_logprobs(x, dim, want);
    for (int r = 0; r < n; r++) {
        int32_t id = want_ids[r];
        CHECK(top[r].token == id, "%s: top[%d] is id %d, want %d", what, r, top[r].token, id);
        CHECK(lp_close(top[r].logprob, want[id]), "%s: top[%d] logprob %.9g, want %.9g", what,
              r, (double)top[r].logprob, want[id]);
    }
    for (int r = n; r < KERN_MAX_TOP_LOGPROBS; r++)
        CHECK(top[r].token == CANARY_TOKEN && top[r].logprob == CANARY_LOGPROB,
              "%s: top[%d] written beyond the %d wanted (%d, %g)", what, r, n, top[r].token,
              (double)top[r].logprob);
}

static void test_given(void)
{
    float x[5] = {1, 3, 2, 3, 0};
    struct kern_sample_mod m[1] = {mod_of(0)};
    m[0].bias = 100.0f; /* would make 0 the token of any draw */
    for (int t = 0; t < 5; t++) {
        const float temps[] = {0.0f, 1.0f};
        for (int k = 0; k < 2; k++) {
            struct kern_sample_job j = job_of(temps[k], 0.99, 1);
            j.top_k = 1;
            j.min_p = 0.5f;
            j.given = 1;
            j.token = t;
            float *work = kt_alloc(5 * sizeof *work);
            int32_t *out = kt_alloc(sizeof *out);
            for (int i = 0; i < 5; i++)
                work[i] = 42.0f;
            *out = -7;
            struct kern_sample_params p = {.x = x, .jobs = &j, .mods = m, .work = work,
                                           .out = out, .n_rows = 1, .dim = 5, .ldx = 5,
                                           .n_jobs = 1, .n_mods = 1};
            CHECK(ref_ops.sample(NULL, &p) == KERN_OK && *out == t, "given %d, T %g: %d", t,
                  (double)temps[k], *out);
            int untouched = 1;
            for (int i = 0; i < 5; i++)
                untouched &= work[i] == 42.0f;
            CHECK(untouched && kt_guard_ok(work) && kt_guard_ok(out), "given %d: work written",
                  t);
            kt_free(work);
            kt_free(out);
        }
    }
    /* given 0 is a draw as before; a given token on an all -inf row is still the token */
    struct kern_sample_job j = job_of(0.0f, 0.0, 0);
    j.token = 4;
    CHECK(run(x, 5, j, NULL, 0, NULL) == 1, "given unset: the greedy token");
    float dead[3] = {-INFINITY, NAN, -INFINITY};
    j.given = 1;
    j.token = 1;
    float lp;
    struct kern_token_logprob top[KERN_MAX_TOP_LOGPROBS];
    j.n_top = 2;
    CHECK(run_lp(dead, 3, j, NULL, 0, &lp, top, NULL) == 1 && lp == -INFINITY,
          "given on a dead row: logprob %g", (double)lp);
    const int32_t ids[] = {0, 1};
    check_top("given on a dead row", dead, 3, top, ids, 2);
    /* prompt logprobs: the given token's raw logprob, whatever mods and temperature say */
    j = job_of(0.7f, 0.3, 1);
    j.given = 1;
    j.token = 4;
    j.n_top = 1;
    float w[5];
    CHECK(run_lp(x, 5, j, m, 1, &lp, top, w) == 4, "given 4 with logprobs");
    double want[5];
    want_logprobs(x, 5, want);
    CHECK(lp_close(lp, want[4]), "given 4: logprob %.9g, want %.9g", (double)lp, want[4]);
    const int32_t ids1[] = {1};
    check_top("given 4", x, 5, top, ids1, 1);
    CHECK(w[0] == 42.0f && w[4] == 42.0f, "given with logprobs wrote work");
}

static void test_logprobs(void)
{
    const float inf = INFINITY, nan = NAN;
    float lp;
    struct kern_token_logprob top[KERN_MAX_TOP_LOGPROBS];
    double want[64];

    /* M = 3 (ids 1 and 3), S = 2 + e^-1 + e^-2 + e^-2.5; NaN (id 4) and -inf (id 5) last,
     * in id order */
    float x[7] = {1, 3, 2, 3, nan, -inf, 0.5f};
    want_logprobs(x, 7, want);
    double s = 2.0 + exp(-1.0) + exp(-2.0) + exp(-2.5);
    CHECK(fabs(want[1] + log(s)) < 1e-12 && fabs(want[0] - (-2.0 - log(s))) < 1e-12,
          "the test's own formula");
    const int32_t order[7] = {1, 3, 2, 0, 6, 4, 5};
    const struct {
        int32_t n_top;
        int n;
    } counts[] = {{7, 7}, {3, 3}, {1, 1}, {0, 0}, {-5, 0}, {8, 7}, {25, 7}, {INT32_MAX, 7},
                  {INT32_MIN, 0}};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        struct kern_sample_job j = job_of(0.0f, 0.0, 0);
        j.n_top = counts[c].n_top;
        char what[64];
        snprintf(what, sizeof what, "n_top %d", counts[c].n_top);
        CHECK(run_lp(x, 7, j, NULL, 0, &lp, top, NULL) == 1, "%s: greedy token", what);
        CHECK(lp_close(lp, -log(s)), "%s: logprob %.9g, want %.9g", what, (double)lp, -log(s));
        check_top(what, x, 7, top, order, counts[c].n);
    }

    /* ties by id when the list is full: the later 5 never displaces an earlier one */
    float ties[8] = {5, 2, 5, 2, 2, 5, 7, 2};
    const int32_t tie_order[8] = {6, 0, 2, 5, 1, 3, 4, 7};
    for (int n = 1; n <= 8; n++) {
        struct kern_sample_job j = job_of(0.0f, 0.0, 0);
        j.n_top = n;
        char what[64];
        snprintf(what, sizeof what, "ties, n_top %d", n);
        run_lp(ties, 8, j, NULL, 0, &lp, top, NULL);
        check_top(what, ties, 8, top, tie_order, n);
    }

    /* more than 20 elements: 20 at most, the 20 largest (x_i = i % 7 - i / 7: ties and
     * order both matter) */
    float wide[30];
    int32_t wide_order[30];
    for (int i = 0; i < 30; i++) {
        wide[i] = (float)(i % 7) - (float)(i / 7);
        wide_order[i] = i;
    }
    for (int a = 1; a < 30; a++) /* insertion sort by (value desc, id asc) */
        for (int b = a; b > 0 && wide[wide_order[b]] > wide[wide_order[b - 1]]; b--) {
            int32_t t = wide_order[b];
            wide_order[b] = wide_order[b - 1];
            wide_order[b - 1] = t;
        }
    struct kern_sample_job jw = job_of(0.0f, 0.0, 0);
    jw.n_top = 30;
    run_lp(wide, 30, jw, NULL, 0, &lp, top, NULL);
    check_top("30 elements, n_top 30", wide, 30, top, wide_order, KERN_MAX_TOP_LOGPROBS);
    jw.n_top = 20;
    run_lp(wide, 30, jw, NULL, 0, &lp, top, NULL);
    check_top("30 elements, n_top 20", wide, 30, top, wide_order, KERN_MAX_TOP_LOGPROBS);

    /* +inf: M = +inf, each +inf has logprob -log(2) (x == M gives 0), every other -inf */
    float infs[5] = {1, inf, 2, inf, nan};
    struct kern_sample_job j = job_of(1.0f, 0.9, 0);
    j.n_top = 5;
    CHECK(run_lp(infs, 5, j, NULL, 0, &lp, top, NULL) == 3, "+inf drawn");
    CHECK(lp_close(lp, -log(2.0)), "+inf logprob %.9g", (double)lp);
    const int32_t inf_order[5] = {1, 3, 2, 0, 4};
    check_top("+inf row", infs, 5, top, inf_order, 5);
    CHECK(top[2].logprob == -INFINITY && top[3].logprob == -INFINITY,
          "finite logits beside +inf: %g %g", (double)top[2].logprob, (double)top[3].logprob);

    /* nothing above -inf: out = -1, logprob -inf, every entry -inf in id order */
    float dead[4] = {-inf, nan, nan, -inf};
    for (int k = 0; k < 2; k++) {
        j = job_of(k ? 1.0f : 0.0f, 0.5, 0);
        j.n_top = 3;
        CHECK(run_lp(dead, 4, j, NULL, 0, &lp, top, NULL) == -1 && lp == -INFINITY,
              "dead row: logprob %g", (double)lp);
        const int32_t dead_order[3] = {0, 1, 2};
        check_top("dead row", dead, 4, top, dead_order, 3);
    }

    /* the logprob of a drawn token is the raw one of that token: mods, temperature and
     * truncation change the draw, not the logprobs */
    struct kern_sample_mod m[2] = {mod_of(6), mod_of(1)};
    m[0].bias = 10.0f;
    m[1].ban = 1;
    j = job_of(0.0f, 0.0, 2);
    j.n_top = 2;
    CHECK(run_lp(x, 7, j, m, 2, &lp, top, NULL) == 6, "biased greedy token");
    CHECK(lp_close(lp, want[6]), "biased token: logprob %.9g, want raw %.9g", (double)lp,
          want[6]);
    check_top("with mods", x, 7, top, order, 2);
    const double us[] = {0.0, 0.3, 0.6, 0.8, 0.95, 0.999};
    for (size_t k = 0; k < sizeof us / sizeof us[0]; k++) {
        j = job_of(1.3f, us[k], 0);
        j.top_p = 0.9f;
        j.n_top = 7;
        int32_t tok = run_lp(x, 7, j, NULL, 0, &lp, top, NULL);
        CHECK(tok >= 0 && tok < 7 && lp_close(lp, want[tok]), "u %g: token %d logprob %.9g",
              us[k], tok, (double)lp);
        for (int r = 0; r < 7; r++)
            if (tok >= 0 && top[r].token == tok)
                CHECK(top[r].logprob == lp, "u %g: drawn token's logprob %.9g, its entry %.9g",
                      us[k], (double)lp, (double)top[r].logprob);
    }

    /* several jobs over rows with ldx > dim: each its own row, and nothing of logprob[j] or
     * top[j, :] is written for a job without logprobs */
    float rows[2 * 8] = {1, 3, 2, 3, nan, -inf, 0.5f, inf, 4, 0, 0, 4, 1, 1, 1, nan};
    struct kern_sample_job jobs[3] = {job_of(0.0f, 0.0, 0), job_of(0.0f, 0.0, 0),
                                      job_of(1.0f, 0.5, 0)};
    jobs[0].row = 1;
    jobs[0].logprobs = 1;
    jobs[0].n_top = 20;
    jobs[1].row = 1;
    jobs[1].n_top = 3; /* no logprobs */
    jobs[2].logprobs = 1;
    jobs[2].n_top = 1;
    jobs[2].given = 1;
    jobs[2].token = 5;
    float work[3 * 7], lps[3] = {CANARY_LOGPROB, CANARY_LOGPROB, CANARY_LOGPROB};
    int32_t out[3];
    struct kern_token_logprob tops[3 * KERN_MAX_TOP_LOGPROBS];
    for (int r = 0; r < 3 * KERN_MAX_TOP_LOGPROBS; r++)
        tops[r] = (struct kern_token_logprob){CANARY_TOKEN, CANARY_LOGPROB};
    struct kern_sample_params p = {.x = rows, .jobs = jobs, .work = work, .out = out,
                                   .logprob = lps, .top = tops, .n_rows = 2, .dim = 7, .ldx = 8,
                                   .n_jobs = 3};
    CHECK(ref_ops.sample(NULL, &p) == KERN_OK, "three jobs");
    double want1[7];
    want_logprobs(rows + 8, 7, want1);
    CHECK(out[0] == 0 && out[1] == 0 && out[2] == 5, "three jobs: %d %d %d", out[0], out[1],
          out[2]);
    CHECK(lp_close(lps[0], want1[0]) && lps[1] == CANARY_LOGPROB && lps[2] == -INFINITY,
          "three jobs: logprobs %g %g %g", (double)lps[0], (double)lps[1], (double)lps[2]);
    const int32_t order1[7] = {0, 3, 4, 5, 6, 1, 2};
    check_top("row 1 of 2", rows + 8, 7, tops, order1, 7);
    check_top("no logprobs", rows + 8, 7, tops + KERN_MAX_TOP_LOGPROBS, order1, 0);
    check_top("given -inf", rows, 7, tops + 2 * KERN_MAX_TOP_LOGPROBS, order, 1);

    /* dim 0: out -1, logprob -inf, no entries */
    struct kern_sample_job j0 = job_of(1.0f, 0.5, 0);
    j0.logprobs = 1;
    j0.n_top = 5;
    int32_t o = 7;
    float l0 = CANARY_LOGPROB;
    struct kern_token_logprob t0[KERN_MAX_TOP_LOGPROBS];
    for (int r = 0; r < KERN_MAX_TOP_LOGPROBS; r++)
        t0[r] = (struct kern_token_logprob){CANARY_TOKEN, CANARY_LOGPROB};
    struct kern_sample_params zero = {.jobs = &j0, .out = &o, .logprob = &l0, .top = t0,
                                      .n_rows = 1, .dim = 0, .ldx = 0, .n_jobs = 1};
    CHECK(ref_ops.sample(NULL, &zero) == KERN_OK && o == -1 && l0 == -INFINITY,
          "dim 0 with logprobs: %d %g", o, (double)l0);
    check_top("dim 0", NULL, 0, t0, NULL, 0);
}

/* Calls the op must reject with KERN_ERR_INVALID before writing anything. */
static void test_invalid(void)
{
    float x[2 * 8];
    for (int i = 0; i < 16; i++)
        x[i] = (float)i;
    struct kern_sample_mod mods[3] = {mod_of(1), mod_of(6), mod_of(0)};
    struct kern_sample_job jobs[3] = {job_of(0.0f, 0.0, 1), job_of(1.0f, 0.5, 2),
                                      job_of(1.0f, 0.3, 0)};
    jobs[1].row = 1;
    jobs[1].mod_start = 1;
    float work[3 * 7];
    int32_t out[3];
    struct kern_sample_params good = {.x = x, .jobs = jobs, .mods = mods, .work = work,
                                      .out = out, .n_rows = 2, .dim = 7, .ldx = 8, .n_jobs = 3,
                                      .n_mods = 3};
    CHECK(ref_ops.sample(NULL, &good) == KERN_OK && out[0] == 6 && out[2] >= 0,
          "the good call: %d", out[0]);

    struct kern_sample_job bad_jobs[16][3];
    struct kern_sample_mod bad_mods[2][3];
    struct kern_sample_params bad[32];
    int n = 0;
    for (int i = 0; i < 32; i++)
        bad[i] = good;
    bad[n++].n_rows = -1;
    bad[n++].dim = -1;
    bad[n].dim = (int64_t)INT32_MAX + 1;
    bad[n++].ldx = (int64_t)INT32_MAX + 1;
    bad[n++].ldx = 6;
    bad[n++].n_jobs = -1;
    bad[n++].n_mods = -1;
    bad[n++].x = NULL;
    bad[n++].jobs = NULL;
    bad[n++].mods = NULL;
    bad[n++].work = NULL;
    bad[n++].out = NULL;
    bad[n].n_rows = INT64_MAX / 4; /* the span overflows */
    bad[n++].ldx = 64;
    bad[n++].n_jobs = INT64_MAX / 4; /* n_jobs * dim overflows */
    /* job problems, in the last job so that earlier valid jobs would have been written */
    const int64_t rows[] = {2, -1}, starts[] = {-1, 4, 3}, counts[] = {-1, 4};
    int nj = 0;
    for (int i = 0; i < 2; i++, nj++) {
        memcpy(bad_jobs[nj], jobs, sizeof jobs);
        bad_jobs[nj][2].row = rows[i];
        bad[n].jobs = bad_jobs[nj];
        n++;
    }
    for (int i = 0; i < 3; i++, nj++) {
        memcpy(bad_jobs[nj], jobs, sizeof jobs);
        bad_jobs[nj][2].mod_start = starts[i];
        bad_jobs[nj][2].n_mods = starts[i] == 3 ? 1 : 0; /* 3 + 1 > n_mods */
        bad[n].jobs = bad_jobs[nj];
        n++;
    }
    for (int i = 0; i < 2; i++, nj++) {
        memcpy(bad_jobs[nj], jobs, sizeof jobs);
        bad_jobs[nj][2].n_mods = counts[i];
        bad[n].jobs = bad_jobs[nj];
        n++;
    }
    const int32_t toks[] = {7, -1};
    for (int i = 0; i < 2; i++) {
        memcpy(bad_mods[i], mods, sizeof mods);
        bad_mods[i][2].token = toks[i];
        memcpy(bad_jobs[nj], jobs, sizeof jobs);
        bad_jobs[nj][2].mod_start = 2;
        bad_jobs[nj][2].n_mods = 1;
        bad[n].jobs = bad_jobs[nj++];
        bad[n].mods = bad_mods[i];
        n++;
    }
    /* given tokens outside [0, dim), after a valid job with logprobs */
    float lp_buf[3];
    struct kern_token_logprob top_buf[3 * KERN_MAX_TOP_LOGPROBS];
    const int32_t given[] = {7, -1, INT32_MAX};
    for (int i = 0; i < 3; i++, nj++) {
        memcpy(bad_jobs[nj], jobs, sizeof jobs);
        bad_jobs[nj][0].logprobs = 1;
        bad_jobs[nj][0].n_top = 5;
        bad_jobs[nj][2].given = 1;
        bad_jobs[nj][2].token = given[i];
        bad[n].jobs = bad_jobs[nj];
        bad[n].logprob = lp_buf;
        bad[n].top = top_buf;
        n++;
    }
    /* a job asking for logprobs while logprob or top is NULL */
    for (int i = 0; i < 2; i++, nj++) {
        memcpy(bad_jobs[nj], jobs, sizeof jobs);
        bad_jobs[nj][2].logprobs = 1;
        bad[n].jobs = bad_jobs[nj];
        bad[n].logprob = i ? lp_buf : NULL;
        bad[n].top = i ? NULL : top_buf;
        n++;
    }
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < 3; k++)
            out[k] = -7;
        for (int k = 0; k < 21; k++)
            work[k] = 42.0f;
        for (int k = 0; k < 3; k++)
            lp_buf[k] = 42.0f;
        for (int k = 0; k < 3 * KERN_MAX_TOP_LOGPROBS; k++)
            top_buf[k] = (struct kern_token_logprob){-7, 42.0f};
        int rc = ref_ops.sample(NULL, &bad[i]);
        CHECK(rc == KERN_ERR_INVALID, "bad call %d accepted: %d", i, rc);
        int untouched = out[0] == -7 && out[1] == -7 && out[2] == -7;
        for (int k = 0; k < 21; k++)
            untouched &= work[k] == 42.0f;
        for (int k = 0; k < 3; k++)
            untouched &= lp_buf[k] == 42.0f;
        for (int k = 0; k < 3 * KERN_MAX_TOP_LOGPROBS; k++)
            untouched &= top_buf[k].token == -7 && top_buf[k].logprob == 42.0f;
        CHECK(untouched, "bad call %d wrote output", i);
    }
    CHECK(ref_ops.sample(NULL, NULL) == KERN_ERR_INVALID, "NULL params");

    /* the empty calls: no jobs (nothing read), and dim 0 (every job -1) */
    struct kern_sample_params empty = {.n_rows = 0, .dim = 5, .ldx = 5, .n_jobs = 0};
    CHECK(ref_ops.sample(NULL, &empty) == KERN_OK, "no jobs");
    struct kern_sample_job j0 = job_of(1.0f, 0.5, 0);
    int32_t o = 7;
    struct kern_sample_params zero = {.jobs = &j0, .out = &o, .n_rows = 1, .dim = 0, .ldx = 0,
                                      .n_jobs = 1};
    CHECK(ref_ops.sample(NULL, &zero) == KERN_OK && o == -1, "dim 0: %d", o);
    struct kern_sample_job jg = j0;
    jg.given = 1;
    jg.token = 0;
    zero.jobs = &jg;
    o = 7;
    CHECK(ref_ops.sample(NULL, &zero) == KERN_ERR_INVALID && o == 7, "dim 0, given 0: %d", o);
}

int main(void)
{
    kern_ops_init_ref(&ref_ops);
    struct kern_ops cpu_ops;
    kern_ops_init_ref(&cpu_ops);
    kern_ops_init_cpu(&cpu_ops);
    CHECK(ref_ops.sample != NULL && cpu_ops.sample == ref_ops.sample,
          "the ref table has sample and the cpu table inherits it");
    test_greedy();
    test_mods();
    test_temperature_min_p();
    test_top_k();
    test_top_p();
    test_draw();
    test_distribution();
    test_given();
    test_logprobs();
    test_invalid();
    return tu_finish("test_sample");
}
