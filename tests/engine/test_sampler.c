/* Unit tests of engine/sampler.c: greedy choice, chi-square goodness-of-fit of many seeded
 * draws against distributions computed independently here in double, seeded reproducibility
 * and batch independence, raw logprobs, stop rules and odd parameter values. Not a benchmark
 * (timings are not tested) and not a test of the server's parameter validation. */
#include "sampler.h"

#include "../test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_DRAWS 200000
#define MAX_V 1024

/* ---- chi-square machinery ---- */

/* Upper 0.999 quantiles of chi-square for df = 1..30, from the standard table (checked
 * against the regularised upper incomplete gamma function: Q(df/2, x/2) = 0.001 +- 3e-7). */
static const double chi2_999_table[31] = {
    0.0,    10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588,
    31.264, 32.909, 34.528, 36.123, 37.697, 39.252, 40.790, 42.312, 43.820, 45.315,
    46.797, 48.268, 49.728, 51.179, 52.620, 54.052, 55.476, 56.892, 58.301, 59.703};

/* The Wilson-Hilferty approximation of the same quantile: df * (1 - 2/(9 df) + z *
 * sqrt(2/(9 df)))^3 with z = Phi^-1(0.999). It errs high (conservative) by 0.17% at df 30
 * and less beyond. */
static double wilson_hilferty_999(int df)
{
    const double z = 3.090232306167813;
    double a = 2.0 / (9.0 * df);
    double c = 1.0 - a + z * sqrt(a);
    return df * c * c * c;
}

/* Critical value at p = 0.001: the table up to df 30, Wilson-Hilferty above. */
static double chi2_crit_999(int df)
{
    return df <= 30 ? chi2_999_table[df] : wilson_hilferty_999(df);
}

struct chi2 {
    double stat;
    int df;
    double crit;
    int64_t impossible_hits; /* draws of tokens whose probability is (numerically) zero */
};

/* Pearson's statistic of observed counts against probabilities prob[0..n) over n_draws
 * draws. Cells expected below 5 are pooled into one cell; cells with probability below 1e-12
 * are left out and any draw of them is counted as impossible. */
static struct chi2 chi2_test(const int64_t *obs, const double *prob, int n, int64_t n_draws)
{
    struct chi2 c = {0.0, 0, 0.0, 0};
    double pool_e = 0.0;
    int64_t pool_o = 0;
    int cells = 0;
    for (int i = 0; i < n; i++) {
        double e = prob[i] * (double)n_draws;
        if (prob[i] < 1e-12) {
            c.impossible_hits += obs[i];
            continue;
        }
        if (e < 5.0) {
            pool_e += e;
            pool_o += obs[i];
            continue;
        }
        c.stat += ((double)obs[i] - e) * ((double)obs[i] - e) / e;
        cells++;
    }
    if (pool_e > 0.0) {
        c.stat += ((double)pool_o - pool_e) * ((double)pool_o - pool_e) / pool_e;
        cells++;
    }
    c.df = cells - 1;
    c.crit = c.df > 0 ? chi2_crit_999(c.df) : 0.0;
    return c;
}

/* ---- reference distribution, written from the definitions in double ---- */

struct history {
    const int32_t *prompt;
    int n_prompt;
    const int32_t *generated;
    int n_generated;
};

static const double *cmp_vals;

static int by_value_desc(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    if (cmp_vals[i] != cmp_vals[j])
        return cmp_vals[i] > cmp_vals[j] ? -1 : 1;
    return i < j ? -1 : (i > j);
}

static void sort_desc(const double *v, int *order, int n)
{
    for (int i = 0; i < n; i++)
        order[i] = i;
    cmp_vals = v;
    qsort(order, (size_t)n, sizeof *order, by_value_desc);
}

static bool contains(const int32_t *ids, int n, int t)
{
    for (int i = 0; i < n; i++)
        if (ids != NULL && ids[i] == t)
            return true;
    return false;
}

static void ref_probs(const float *logits, int V, const struct eng_sampling_params *p,
                      const struct history *h, double *prob)
{
    double x[MAX_V], q[MAX_V];
    int order[MAX_V];
    for (int i = 0; i < V; i++)
        x[i] = isnan(logits[i]) ? -INFINITY : logits[i];
    for (int i = 0; i < p->n_logit_bias; i++) {
        int t = p->logit_bias[i].token;
        if (isnan(p->logit_bias[i].bias))
            continue;
        double b = fmax(-100.0, fmin(100.0, p->logit_bias[i].bias));
        if (t >= 0 && t < V)
            x[t] += b;
    }
    if (h->n_generated < p->min_tokens)
        for (int t = 0; t < V; t++)
            if (contains(p->eos_token_ids, p->n_eos_token_ids, t) ||
                contains(p->stop_token_ids, p->n_stop_token_ids, t))
                x[t] = -INFINITY;
    for (int t = 0; t < V; t++) {
        int count = 0;
        for (int i = 0; i < h->n_generated; i++)
            count += h->generated[i] == t;
        bool seen = count > 0 || contains(h->prompt, h->n_prompt, t);
        if (seen && p->repetition_penalty > 0)
            x[t] = x[t] > 0 ? x[t] / p->repetition_penalty : x[t] * p->repetition_penalty;
        x[t] -= p->frequency_penalty * count + (count > 0 ? p->presence_penalty : 0.0);
    }
    if (!(p->temperature > 0)) {
        sort_desc(x, order, V);
        for (int t = 0; t < V; t++)
            prob[t] = t == order[0];
        return;
    }
    double temp = fmin(fmax(p->temperature, 0.01), 1e4);
    double mx = -INFINITY, z = 0.0;
    for (int t = 0; t < V; t++)
        mx = fmax(mx, x[t] / temp);
    for (int t = 0; t < V; t++)
        z += q[t] = exp(x[t] / temp - mx);
    for (int t = 0; t < V; t++)
        q[t] /= z;
    /* min_p against the largest probability */
    double qmax = 0.0;
    for (int t = 0; t < V; t++)
        qmax = fmax(qmax, q[t]);
    for (int t = 0; t < V; t++)
        if (q[t] < p->min_p * qmax)
            q[t] = 0.0;
    sort_desc(q, order, V);
    /* top_k: everything below the k-th largest goes */
    if (p->top_k > 0 && p->top_k < V) {
        double kth = q[order[p->top_k - 1]];
        for (int t = 0; t < V; t++)
            if (q[t] < kth)
                q[t] = 0.0;
    }
    /* top_p: keep a token while the mass ranked above it is below top_p */
    if (p->top_p < 1.0f) {
        double total = 0.0, above = 0.0;
        for (int t = 0; t < V; t++)
            total += q[t];
        for (int r = 0; r < V; r++) {
            double qr = q[order[r]];
            if (r > 0 && above >= p->top_p * total)
                q[order[r]] = 0.0;
            above += qr;
        }
    }
    double total = 0.0;
    for (int t = 0; t < V; t++)
        total += q[t];
    for (int t = 0; t < V; t++)
        prob[t] = q[t] / total;
}

/* ---- goodness-of-fit runner ---- */

static struct eng_sampler_ws ws;

static void make_state(struct eng_sampler_state *st, const struct eng_sampling_params *p, int V,
                       const struct history *h)
{
    int rc = eng_sampler_state_init(st, p, V, h->prompt, h->n_prompt, 99);
    if (rc != 0) {
        fprintf(stderr, "state init failed: %d\n", rc);
        exit(1);
    }
    for (int i = 0; i < h->n_generated; i++)
        eng_sampler_accept(st, h->generated[i]);
}

/* Draws n_draws tokens (without accepting them, so the distribution stays fixed) and checks
 * them against expect (or, when expect is NULL, against ref_probs). Returns the statistic. */
static struct chi2 gof(const char *name, const float *logits, int V,
                       const struct eng_sampling_params *p, const struct history *h,
                       const double *expect)
{
    static const struct history none = {NULL, 0, NULL, 0};
    if (h == NULL)
        h = &none;
    double prob[MAX_V];
    if (expect == NULL) {
        ref_probs(logits, V, p, h, prob);
        expect = prob;
    }
    struct eng_sampler_state st;
    make_state(&st, p, V, h);
    int64_t *obs = tu_xcalloc((size_t)V, sizeof *obs);
    int bad = 0;
    for (int n = 0; n < N_DRAWS; n++) {
        struct eng_sample_result r;
        int rc = eng_sampler_sample(&st, &ws, p, logits, V, &r);
        if (rc != 0 || r.token < 0 || r.token >= V) {
            bad++;
            continue;
        }
        obs[r.token]++;
    }
    EXPECT(bad == 0);
    struct chi2 c = chi2_test(obs, expect, V, N_DRAWS);
    printf("%-44s chi2 = %8.2f  df = %3d  crit(p=0.001) = %6.2f  impossible draws = %lld\n",
           name, c.stat, c.df, c.crit, (long long)c.impossible_hits);
    EXPECT(c.impossible_hits == 0);
    if (c.df == 0) /* one possible token: every draw must be it */
        EXPECT(c.stat == 0.0);
    else
        EXPECT(c.stat < c.crit);
    free(obs);
    eng_sampler_state_free(&st);
    return c;
}

static struct eng_sampling_params seeded(float temperature, int64_t seed)
{
    struct eng_sampling_params p;
    eng_sampling_params_init_default(&p);
    p.temperature = temperature;
    p.has_seed = true;
    p.seed = seed;
    return p;
}

/* 12 logits with a spread of probabilities and one negative-positive mix. */
static const float base12[12] = {1.5f, 0.2f, -0.7f, 2.3f, 0.9f, -1.8f,
                                 0.0f, 1.1f, -0.3f, 2.0f, 0.5f, -2.5f};

/* ---- tests ---- */

static void test_rng_known_answers(void)
{
    uint64_t x = 0;
    EXPECT(eng_splitmix64_next(&x) == 0xe220a8397b1dcdafu);
    struct eng_rng r = {{1, 2, 3, 4}};
    EXPECT(eng_rng_next(&r) == 11520u);
    EXPECT(eng_rng_next(&r) == 0u);
    eng_rng_seed(&r, 7);
    for (int i = 0; i < 1000; i++) {
        double u = eng_rng_uniform(&r);
        EXPECT(u >= 0.0 && u < 1.0);
    }
}

static void test_chi2_helper(void)
{
    /* The approximation agrees with the table where they meet, and with the table value
     * 149.449 at df 100; it never falls below the table (which would reject too often). */
    for (int df = 3; df <= 30; df++)
        EXPECT(wilson_hilferty_999(df) >= chi2_999_table[df]);
    for (int df = 10; df <= 30; df++)
        EXPECT(wilson_hilferty_999(df) < chi2_999_table[df] * 1.006);
    EXPECT(fabs(wilson_hilferty_999(100) - 149.449) < 0.1);

    /* A wrong hypothesis must be rejected: draws at temperature 1 tested against the
     * temperature-1.1 distribution, and against one with two probabilities swapped. */
    struct eng_sampling_params p = seeded(1.0f, 1);
    struct eng_sampling_params q = seeded(1.1f, 1);
    struct history none = {NULL, 0, NULL, 0};
    double wrong[MAX_V];
    ref_probs(base12, 12, &q, &none, wrong);
    struct eng_sampler_state st;
    make_state(&st, &p, 12, &none);
    int64_t obs[12] = {0};
    for (int n = 0; n < N_DRAWS; n++) {
        struct eng_sample_result r;
        EXPECT(eng_sampler_sample(&st, &ws, &p, base12, 12, &r) == 0);
        obs[r.token]++;
    }
    struct chi2 c = chi2_test(obs, wrong, 12, N_DRAWS);
    printf("%-44s chi2 = %8.2f  df = %3d  crit(p=0.001) = %6.2f  (must reject)\n",
           "wrong: T=1 draws vs T=1.1 distribution", c.stat, c.df, c.crit);
    EXPECT(c.stat > c.crit);

    double swapped[MAX_V];
    ref_probs(base12, 12, &p, &none, swapped);
    double t = swapped[0]; /* 0.113 vs 0.0936 */
    swapped[0] = swapped[7];
    swapped[7] = t;
    c = chi2_test(obs, swapped, 12, N_DRAWS);
    printf("%-44s chi2 = %8.2f  df = %3d  crit(p=0.001) = %6.2f  (must reject)\n",
           "wrong: two probabilities swapped", c.stat, c.df, c.crit);
    EXPECT(c.stat > c.crit);

    /* A draw of a zero-probability token is caught. */
    double zero_first[MAX_V];
    memcpy(zero_first, swapped, sizeof zero_first);
    zero_first[0] = 0.0;
    c = chi2_test(obs, zero_first, 12, N_DRAWS);
    EXPECT(c.impossible_hits == obs[0] && obs[0] > 0);
    eng_sampler_state_free(&st);
}

static int32_t sample_once(struct eng_sampler_state *st, const struct eng_sampling_params *p,
                           const float *logits, int V)
{
    struct eng_sample_result r;
    int rc = eng_sampler_sample(st, &ws, p, logits, V, &r);
    EXPECT(rc == 0);
    return rc == 0 ? r.token : -1;
}

static void test_greedy(void)
{
    struct history none = {NULL, 0, NULL, 0};
    struct eng_sampling_params p = seeded(0.0f, 1);
    struct eng_sampler_state st;
    make_state(&st, &p, 12, &none);
    EXPECT(sample_once(&st, &p, base12, 12) == 3);
    /* ties: the first index */
    const float tie[6] = {0.0f, 4.0f, 1.0f, 4.0f, NAN, 4.0f};
    eng_sampler_state_free(&st);
    make_state(&st, &p, 6, &none);
    EXPECT(sample_once(&st, &p, tie, 6) == 1);
    /* NaN is never the argmax, even first */
    const float nan_first[4] = {NAN, -3.0f, -2.0f, -5.0f};
    eng_sampler_state_free(&st);
    make_state(&st, &p, 4, &none);
    EXPECT(sample_once(&st, &p, nan_first, 4) == 2);
    eng_sampler_state_free(&st);

    /* greedy sees the processed logits: bias and penalties move the argmax */
    struct eng_logit_bias b = {1, 2.5f};
    p.logit_bias = &b;
    p.n_logit_bias = 1;
    make_state(&st, &p, 12, &none);
    EXPECT(sample_once(&st, &p, base12, 12) == 1); /* 0.2 + 2.5 > 2.3 */
    eng_sampler_state_free(&st);
    p.logit_bias = NULL;
    p.n_logit_bias = 0;
    p.presence_penalty = 0.5f;
    make_state(&st, &p, 12, &none);
    eng_sampler_accept(&st, 3); /* 2.3 - 0.5 < 2.0 */
    EXPECT(sample_once(&st, &p, base12, 12) == 9);
    eng_sampler_state_free(&st);

    /* negative and NaN temperatures are greedy as well */
    p = seeded(-1.0f, 1);
    make_state(&st, &p, 12, &none);
    for (int i = 0; i < 50; i++)
        EXPECT(sample_once(&st, &p, base12, 12) == 3);
    eng_sampler_state_free(&st);
    p.temperature = NAN;
    make_state(&st, &p, 12, &none);
    for (int i = 0; i < 50; i++)
        EXPECT(sample_once(&st, &p, base12, 12) == 3);
    eng_sampler_state_free(&st);
}

static void test_temperature(void)
{
    struct eng_sampling_params p = seeded(1.0f, 11);
    gof("temperature 1", base12, 12, &p, NULL, NULL);
    p = seeded(0.5f, 12);
    gof("temperature 0.5", base12, 12, &p, NULL, NULL);
    p = seeded(2.0f, 13);
    gof("temperature 2", base12, 12, &p, NULL, NULL);

    /* 0 < T < 0.01 acts as 0.01 (vLLM's clamp): logits 0.01 apart give exp(0, 1, 2). */
    const float close[3] = {0.0f, 0.01f, 0.02f};
    double e = exp(0.0) + exp(1.0) + exp(2.0);
    const double expect[3] = {1.0 / e, exp(1.0) / e, exp(2.0) / e};
    p = seeded(0.001f, 14);
    gof("temperature 0.001 clamped to 0.01", close, 3, &p, NULL, expect);
}

static void test_top_k(void)
{
    struct eng_sampling_params p = seeded(1.0f, 21);
    p.top_k = 3;
    gof("top_k 3", base12, 12, &p, NULL, NULL);
    /* a tie at the k-th place keeps both tied tokens */
    const float tied[8] = {3.0f, 1.0f, 2.0f, 0.5f, 2.0f, -1.0f, 0.0f, 1.9f};
    double z = exp(3.0) + 2 * exp(2.0);
    const double expect[8] = {exp(3.0) / z, 0, exp(2.0) / z, 0, exp(2.0) / z, 0, 0, 0};
    p.top_k = 2;
    gof("top_k 2 with a tie at the 2nd place", tied, 8, &p, NULL, expect);
    p.top_k = 12;
    gof("top_k = vocab (no-op)", base12, 12, &p, NULL, NULL);
    p.temperature = 0.7f;
    p.top_k = 5;
    gof("top_k 5, temperature 0.7", base12, 12, &p, NULL, NULL);
}

static void test_top_p(void)
{
    /* probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps {0.5, 0.3} (0.5 < 0.75, the 0.3
     * that crosses it is kept); top_p 0.8 + eps keeps three. */
    const float lp[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    const double keep2[4] = {0.5 / 0.8, 0.3 / 0.8, 0, 0};
    const double keep3[4] = {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0};
    struct eng_sampling_params p = seeded(1.0f, 31);
    p.top_p = 0.75f;
    gof("top_p 0.75: boundary token kept", lp, 4, &p, NULL, keep2);
    p.top_p = 0.81f;
    gof("top_p 0.81: next token enters", lp, 4, &p, NULL, keep3);
    p.top_p = 0.4f;
    const double keep1[4] = {1, 0, 0, 0};
    gof("top_p 0.4: only the best", lp, 4, &p, NULL, keep1);
    p.top_p = 0.9f;
    gof("top_p 0.9 on base12", base12, 12, &p, NULL, NULL);
    p.top_k = 4;
    p.top_p = 0.8f;
    gof("top_k 4 then top_p 0.8", base12, 12, &p, NULL, NULL);
}

static void test_min_p(void)
{
    struct eng_sampling_params p = seeded(1.0f, 41);
    p.min_p = 0.2f;
    gof("min_p 0.2", base12, 12, &p, NULL, NULL);
    p.temperature = 1.5f;
    p.min_p = 0.3f;
    gof("min_p 0.3, temperature 1.5", base12, 12, &p, NULL, NULL);
    /* vLLM V1 order: min_p before top_p (the other order keeps a different set here) */
    p.temperature = 1.0f;
    p.min_p = 0.25f;
    p.top_p = 0.6f;
    gof("min_p 0.25 then top_p 0.6", base12, 12, &p, NULL, NULL);
}

static void test_penalties(void)
{
    static const int32_t gen[] = {3, 3, 3, 9, 0, 11, 3};
    static const int32_t prompt[] = {1, 2, 5, 9};
    struct history h = {prompt, 4, gen, 7};
    struct eng_sampling_params p = seeded(1.0f, 51);
    p.presence_penalty = 0.8f;
    gof("presence 0.8 with history", base12, 12, &p, &h, NULL);
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.4f;
    gof("frequency 0.4 with history", base12, 12, &p, &h, NULL);
    p.presence_penalty = -0.5f;
    p.frequency_penalty = -0.3f;
    gof("presence -0.5, frequency -0.3", base12, 12, &p, &h, NULL);

    /* The prompt does not count for presence/frequency: a prompt-only history changes
     * nothing, checked against the plain temperature-1 distribution. */
    struct history prompt_only = {prompt, 4, NULL, 0};
    struct eng_sampling_params plain = seeded(1.0f, 52);
    double expect[MAX_V];
    ref_probs(base12, 12, &plain, &prompt_only, expect);
    p.presence_penalty = 1.5f;
    p.frequency_penalty = 1.5f;
    gof("presence/frequency ignore prompt tokens", base12, 12, &p, &prompt_only, expect);

    /* repetition: prompt and output tokens, positive logits divided, negative multiplied
     * (tokens 1, 2, 5, 9 from the prompt; 0, 3, 11 generated; 2, 5, 11 are negative) */
    p = seeded(1.0f, 53);
    p.repetition_penalty = 1.3f;
    gof("repetition 1.3 (prompt + output)", base12, 12, &p, &h, NULL);
    /* hand-computed: logits {2, -1, 0.5}, token 0 and 1 seen, r = 2: {1, -2, 0.5} */
    const float three[3] = {2.0f, -1.0f, 0.5f};
    static const int32_t seen01[] = {0, 1};
    struct history hs = {seen01, 1, seen01 + 1, 1};
    double z = exp(1.0) + exp(-2.0) + exp(0.5);
    const double expect3[3] = {exp(1.0) / z, exp(-2.0) / z, exp(0.5) / z};
    p.repetition_penalty = 2.0f;
    gof("repetition 2: 2 -> 1, -1 -> -2", three, 3, &p, &hs, expect3);
    p.repetition_penalty = 0.5f;
    gof("repetition 0.5 (encourages)", base12, 12, &p, &h, NULL);
}

static void test_logit_bias(void)
{
    struct eng_logit_bias b[] = {{3, -100.0f}, {5, 2.0f}, {9, -1.0f}, {5, 0.5f},
                                 {-4, 50.0f}, {12, 50.0f}, {7, NAN}};
    struct eng_sampling_params p = seeded(1.0f, 61);
    p.logit_bias = b;
    p.n_logit_bias = 7;
    struct chi2 c = gof("logit_bias -100 / +2.5 / -1 (+ bad ids)", base12, 12, &p, NULL, NULL);
    EXPECT(c.df == 10); /* token 3 is left out as impossible */

    /* +100 forces a token: every draw, even at temperature 2 */
    struct eng_logit_bias force = {11, 100.0f};
    p = seeded(2.0f, 62);
    p.logit_bias = &force;
    p.n_logit_bias = 1;
    struct eng_sampler_state st;
    struct history none = {NULL, 0, NULL, 0};
    make_state(&st, &p, 12, &none);
    int hits = 0;
    for (int n = 0; n < N_DRAWS; n++)
        hits += sample_once(&st, &p, base12, 12) == 11;
    EXPECT(hits == N_DRAWS);
    eng_sampler_state_free(&st);

    /* A bias beyond [-100, 100] is clamped: +1e9 on two tokens behaves as +100 on both, so
     * they keep their relative odds instead of both rounding to the same huge float. */
    struct eng_logit_bias huge[] = {{0, 1e9f}, {1, 1e9f}};
    p = seeded(1.0f, 63);
    p.logit_bias = huge;
    p.n_logit_bias = 2;
    double z = exp(1.5) + exp(0.2);
    double expect[12] = {exp(1.5) / z, exp(0.2) / z};
    gof("logit_bias 1e9 clamped to 100", base12, 12, &p, NULL, expect);
}

static void test_min_tokens(void)
{
    static const int32_t eos[] = {3, 40};   /* 40 is out of range: ignored */
    static const int32_t stop[] = {9};
    static const int32_t gen[] = {0, 1};
    struct history h = {NULL, 0, gen, 2};
    struct eng_sampling_params p = seeded(1.0f, 71);
    p.eos_token_ids = eos;
    p.n_eos_token_ids = 2;
    p.stop_token_ids = stop;
    p.n_stop_token_ids = 1;
    p.min_tokens = 3;
    p.ignore_eos = true; /* vLLM bans eos during min_tokens even then */
    struct chi2 c = gof("min_tokens 3 after 2: eos + stop banned", base12, 12, &p, &h, NULL);
    EXPECT(c.df == 9);
    /* the reference agrees that 3 and 9 are impossible */
    double prob[MAX_V];
    ref_probs(base12, 12, &p, &h, prob);
    EXPECT(prob[3] == 0.0 && prob[9] == 0.0);

    static const int32_t gen3[] = {0, 1, 2};
    struct history h3 = {NULL, 0, gen3, 3};
    c = gof("min_tokens 3 after 3: eos allowed again", base12, 12, &p, &h3, NULL);
    EXPECT(c.df == 11);

    /* greedy too: eos (token 3, the argmax) is skipped until min_tokens */
    p.temperature = 0.0f;
    struct eng_sampler_state st;
    make_state(&st, &p, 12, &h);
    EXPECT(sample_once(&st, &p, base12, 12) == 0); /* 3 and 9 banned: 1.5 is next */
    eng_sampler_accept(&st, 0);
    EXPECT(sample_once(&st, &p, base12, 12) == 3);
    eng_sampler_state_free(&st);
}

static void test_combined(void)
{
    static const int32_t gen[] = {9, 9, 4};
    static const int32_t prompt[] = {0, 7};
    struct history h = {prompt, 2, gen, 3};
    struct eng_logit_bias b[] = {{6, 1.2f}, {2, -100.0f}};
    struct eng_sampling_params p = seeded(0.8f, 81);
    p.logit_bias = b;
    p.n_logit_bias = 2;
    p.repetition_penalty = 1.1f;
    p.frequency_penalty = 0.3f;
    p.presence_penalty = 0.2f;
    p.min_p = 0.05f;
    p.top_k = 8;
    p.top_p = 0.9f;
    gof("all processors together", base12, 12, &p, &h, NULL);
}

/* A larger vocabulary: top_p and top_k sets of hundreds of tokens take the selection by
 * partitioning through many rounds, with exact ties in the logits. */
static void test_large_vocab(void)
{
    enum { V = 1000 };
    static float lg[V];
    struct eng_rng r;
    eng_rng_seed(&r, 2024);
    for (int i = 0; i < V; i++) /* sum of uniforms: a rough bell, with some exact ties */
        lg[i] = (float)(eng_rng_uniform(&r) + eng_rng_uniform(&r) + eng_rng_uniform(&r));
    lg[500] = lg[17];
    struct eng_sampling_params p = seeded(1.0f, 91);
    p.top_p = 0.6f;
    gof("vocab 1000, top_p 0.6 (deep cut)", lg, V, &p, NULL, NULL);
    p.top_p = 0.95f;
    p.temperature = 0.5f;
    gof("vocab 1000, top_p 0.95, temperature 0.5", lg, V, &p, NULL, NULL);
    p.top_p = 1.0f;
    p.top_k = 300;
    gof("vocab 1000, top_k 300", lg, V, &p, NULL, NULL);
    p.top_p = 0.5f;
    gof("vocab 1000, top_k 300, top_p 0.5", lg, V, &p, NULL, NULL);
}

static bool same_draws(int64_t seed_a, uint64_t ent_a, bool seeded_a, int64_t seed_b,
                       uint64_t ent_b, bool seeded_b)
{
    static const int32_t prompt[] = {1, 2};
    struct eng_sampling_params pa = seeded(1.0f, seed_a), pb = seeded(1.0f, seed_b);
    pa.has_seed = seeded_a;
    pb.has_seed = seeded_b;
    struct eng_sampler_state a, b;
    EXPECT(eng_sampler_state_init(&a, &pa, 12, prompt, 2, ent_a) == 0);
    EXPECT(eng_sampler_state_init(&b, &pb, 12, prompt, 2, ent_b) == 0);
    bool same = true;
    for (int i = 0; i < 200; i++) {
        int32_t ta = sample_once(&a, &pa, base12, 12);
        int32_t tb = sample_once(&b, &pb, base12, 12);
        same = same && ta == tb;
        eng_sampler_accept(&a, ta);
        eng_sampler_accept(&b, tb);
    }
    eng_sampler_state_free(&a);
    eng_sampler_state_free(&b);
    return same;
}

static void test_seeds(void)
{
    EXPECT(same_draws(42, 1, true, 42, 2, true));    /* a seed overrides the entropy */
    EXPECT(!same_draws(42, 1, true, 43, 1, true));   /* different seeds differ */
    EXPECT(!same_draws(-1, 1, true, 1, 1, true));
    EXPECT(same_draws(0, 5, false, 0, 5, false));    /* unseeded: the entropy decides */
    EXPECT(!same_draws(0, 5, false, 0, 6, false));

    /* batch independence: a seeded sequence draws the same tokens whether or not another
     * sequence samples between its steps (and with penalties making history matter) */
    struct eng_sampling_params pa = seeded(1.0f, 7), pc = seeded(0.7f, 8);
    pa.frequency_penalty = 0.5f;
    pc.top_p = 0.8f;
    int32_t alone[300], mixed[300];
    struct eng_sampler_state a, c;
    EXPECT(eng_sampler_state_init(&a, &pa, 12, NULL, 0, 0) == 0);
    for (int i = 0; i < 300; i++) {
        alone[i] = sample_once(&a, &pa, base12, 12);
        eng_sampler_accept(&a, alone[i]);
    }
    eng_sampler_state_free(&a);
    EXPECT(eng_sampler_state_init(&a, &pa, 12, NULL, 0, 0) == 0);
    EXPECT(eng_sampler_state_init(&c, &pc, 12, NULL, 0, 0) == 0);
    for (int i = 0; i < 300; i++) {
        for (int j = 0; j < i % 3; j++)
            eng_sampler_accept(&c, sample_once(&c, &pc, base12, 12));
        mixed[i] = sample_once(&a, &pa, base12, 12);
        eng_sampler_accept(&a, mixed[i]);
    }
    EXPECT(memcmp(alone, mixed, sizeof alone) == 0);
    eng_sampler_state_free(&a);
    eng_sampler_state_free(&c);

    /* greedy draws no random numbers: interleaving greedy calls changes nothing */
    struct eng_sampling_params pg = seeded(0.0f, 7);
    pa.frequency_penalty = 0.0f;
    int32_t plain[100];
    EXPECT(eng_sampler_state_init(&a, &pa, 12, NULL, 0, 0) == 0);
    for (int i = 0; i < 100; i++)
        plain[i] = sample_once(&a, &pa, base12, 12);
    eng_sampler_state_free(&a);
    EXPECT(eng_sampler_state_init(&a, &pa, 12, NULL, 0, 0) == 0);
    for (int i = 0; i < 100; i++) {
        EXPECT(sample_once(&a, &pg, base12, 12) == 3);
        EXPECT(sample_once(&a, &pa, base12, 12) == plain[i]);
    }
    eng_sampler_state_free(&a);
}

static void check_logprobs(const float *lg, int V, const struct eng_sampling_params *p)
{
    double *ls = tu_xcalloc((size_t)V, sizeof *ls);
    int *order = tu_xcalloc((size_t)V, sizeof *order);
    double mx = -INFINITY, s = 0.0;
    for (int i = 0; i < V; i++)
        mx = fmax(mx, isnan(lg[i]) ? -INFINITY : (double)lg[i]);
    for (int i = 0; i < V; i++)
        s += isnan(lg[i]) ? 0.0 : exp((double)lg[i] - mx);
    for (int i = 0; i < V; i++)
        ls[i] = isnan(lg[i]) ? -INFINITY : (double)lg[i] - mx - log(s);
    sort_desc(ls, order, V);

    struct eng_sampler_state st;
    struct history none = {NULL, 0, NULL, 0};
    make_state(&st, p, V, &none);
    for (int rep = 0; rep < 20; rep++) {
        struct eng_sample_result r;
        EXPECT(eng_sampler_sample(&st, &ws, p, lg, V, &r) == 0);
        EXPECT(r.token >= 0 && r.token < V);
        if (r.token < 0 || r.token >= V)
            break;
        EXPECT(fabs(r.logprob - ls[r.token]) < 1e-5);
        int want = p->top_logprobs < 20 ? p->top_logprobs : 20;
        want = want < V ? want : V;
        EXPECT(r.n_top == want);
        for (int j = 0; j < r.n_top && j < want; j++) {
            EXPECT(r.top[j].token == order[j]);
            EXPECT(fabs(r.top[j].logprob - ls[order[j]]) < 1e-5 ||
                  (isinf(r.top[j].logprob) && isinf(ls[order[j]])));
            if (j > 0)
                EXPECT(r.top[j].logprob <= r.top[j - 1].logprob);
        }
        eng_sampler_accept(&st, r.token);
    }
    eng_sampler_state_free(&st);
    free(ls);
    free(order);
}

static void test_logprobs(void)
{
    enum { V = 1000 };
    static float lg[V];
    struct eng_rng r;
    eng_rng_seed(&r, 5);
    for (int i = 0; i < V; i++)
        lg[i] = (float)(20.0 * eng_rng_uniform(&r) - 10.0);
    lg[10] = lg[20] = lg[30] = 11.0f; /* a three-way tie at the top: ids ascending */
    lg[40] = -INFINITY;
    lg[50] = NAN;

    /* raw logprobs: the same whatever the processing */
    struct eng_logit_bias b[] = {{20, -100.0f}, {999, 30.0f}};
    struct eng_sampling_params p = seeded(0.7f, 3);
    p.logprobs = true;
    p.top_logprobs = 5;
    p.logit_bias = b;
    p.n_logit_bias = 2;
    p.frequency_penalty = 1.0f;
    p.top_k = 10;
    check_logprobs(lg, V, &p);
    p.top_logprobs = 20;
    p.temperature = 0.0f;
    check_logprobs(lg, V, &p);
    p.top_logprobs = 50; /* clamped to 20 */
    p.temperature = 1.3f;
    p.top_p = 0.5f;
    check_logprobs(lg, V, &p);
    p.top_logprobs = 0;
    check_logprobs(lg, V, &p);

    /* vocabulary smaller than top_logprobs, with -inf entries */
    const float small[4] = {0.5f, -INFINITY, 2.0f, 0.5f};
    p = seeded(1.0f, 4);
    p.logprobs = true;
    p.top_logprobs = 10;
    check_logprobs(small, 4, &p);

    /* no logprobs asked: none given */
    p.logprobs = false;
    struct eng_sampler_state st;
    struct history none = {NULL, 0, NULL, 0};
    make_state(&st, &p, 4, &none);
    struct eng_sample_result res;
    EXPECT(eng_sampler_sample(&st, &ws, &p, small, 4, &res) == 0);
    EXPECT(res.n_top == 0);
    eng_sampler_state_free(&st);
}

static void test_is_stop(void)
{
    static const int32_t eos[] = {7};
    static const int32_t stop[] = {2, 5};
    struct eng_sampling_params p = seeded(1.0f, 1);
    p.eos_token_ids = eos;
    p.n_eos_token_ids = 1;
    p.stop_token_ids = stop;
    p.n_stop_token_ids = 2;
    p.min_tokens = 2;
    struct eng_sampler_state st;
    EXPECT(eng_sampler_state_init(&st, &p, 12, NULL, 0, 0) == 0);
    eng_sampler_accept(&st, 7);
    EXPECT(!eng_sampler_is_stop(&st, &p, 7)); /* 1 < min_tokens */
    eng_sampler_accept(&st, 5);
    EXPECT(eng_sampler_is_stop(&st, &p, 5));
    EXPECT(eng_sampler_is_stop(&st, &p, 7));
    EXPECT(!eng_sampler_is_stop(&st, &p, 4));
    p.ignore_eos = true;
    EXPECT(!eng_sampler_is_stop(&st, &p, 7));
    EXPECT(eng_sampler_is_stop(&st, &p, 2));
    eng_sampler_state_free(&st);
}

static void test_odd_values(void)
{
    struct history none = {NULL, 0, NULL, 0};
    struct eng_sampler_state st;
    struct eng_sample_result r;

    /* NaN / out-of-range knobs act as documented: off, or their limit */
    struct eng_sampling_params p = seeded(1.0f, 101);
    p.top_p = NAN;
    p.top_k = 1000;
    p.min_p = NAN;
    p.presence_penalty = INFINITY;
    p.frequency_penalty = NAN;
    p.repetition_penalty = 0.0f;
    struct eng_sampling_params plain = seeded(1.0f, 101);
    double expect[MAX_V];
    ref_probs(base12, 12, &plain, &none, expect);
    static const int32_t gen[] = {3, 9};
    struct history h = {gen, 2, gen, 2};
    gof("NaN/inf/out-of-range knobs are off", base12, 12, &p, &h, expect);

    p = seeded(1.0f, 102);
    p.top_p = 0.0f; /* keeps only the best token */
    p.min_p = 7.0f; /* acts as 1: only the best token */
    make_state(&st, &p, 12, &none);
    for (int i = 0; i < 100; i++)
        EXPECT(sample_once(&st, &p, base12, 12) == 3);
    eng_sampler_state_free(&st);

    /* huge and infinite temperatures: uniform over the finite logits, never NaN */
    p = seeded(INFINITY, 103);
    const float with_inf[6] = {1.0f, -INFINITY, 3.0f, NAN, -2.0f, 0.0f};
    const double uniform4[6] = {0.25, 0, 0.25, 0, 0.25, 0.25};
    gof("temperature +inf: uniform over finite logits", with_inf, 6, &p, NULL, uniform4);

    /* +inf logits share all the mass */
    const float pinf[5] = {INFINITY, 1.0f, INFINITY, 2.0f, NAN};
    const double half[5] = {0.5, 0, 0.5, 0, 0};
    p = seeded(1.0f, 104);
    gof("+inf logits share the mass", pinf, 5, &p, NULL, half);
    p.logprobs = true;
    p.top_logprobs = 3;
    make_state(&st, &p, 5, &none);
    EXPECT(eng_sampler_sample(&st, &ws, &p, pinf, 5, &r) == 0);
    EXPECT(fabsf(r.logprob - logf(0.5f)) < 1e-6f);
    EXPECT(r.n_top == 3 && r.top[0].token == 0 && r.top[1].token == 2 && r.top[2].token == 3);
    EXPECT(r.top[2].logprob == -INFINITY);
    eng_sampler_state_free(&st);

    /* nothing left: an error, not a token */
    const float none_left[3] = {-INFINITY, NAN, -INFINITY};
    p = seeded(1.0f, 105);
    make_state(&st, &p, 3, &none);
    EXPECT(eng_sampler_sample(&st, &ws, &p, none_left, 3, &r) == ENG_SAMPLER_ERR_NO_CANDIDATE);
    EXPECT(r.token == -1);
    p.temperature = 0.0f;
    EXPECT(eng_sampler_sample(&st, &ws, &p, none_left, 3, &r) == ENG_SAMPLER_ERR_NO_CANDIDATE);
    eng_sampler_state_free(&st);
    /* min_tokens banning the only finite token */
    static const int32_t eos[] = {1};
    const float one_finite[3] = {-INFINITY, 0.0f, -INFINITY};
    p = seeded(1.0f, 106);
    p.eos_token_ids = eos;
    p.n_eos_token_ids = 1;
    p.min_tokens = 1;
    make_state(&st, &p, 3, &none);
    EXPECT(eng_sampler_sample(&st, &ws, &p, one_finite, 3, &r) == ENG_SAMPLER_ERR_NO_CANDIDATE);
    eng_sampler_state_free(&st);

    /* bad arguments */
    p = seeded(1.0f, 107);
    EXPECT(eng_sampler_state_init(&st, &p, 0, NULL, 0, 0) == ENG_SAMPLER_ERR_INVALID);
    EXPECT(eng_sampler_state_init(&st, &p, 10, NULL, 3, 0) == ENG_SAMPLER_ERR_INVALID);
    EXPECT(eng_sampler_state_init(&st, &p, (int64_t)INT32_MAX + 1, NULL, 0, 0) ==
          ENG_SAMPLER_ERR_INVALID);
    EXPECT(eng_sampler_state_init(&st, NULL, 10, NULL, 0, 0) == ENG_SAMPLER_ERR_INVALID);
    eng_sampler_state_free(&st); /* a failed init left it freed: harmless */
    static const int32_t odd_prompt[] = {-5, 3, 1 << 30};
    EXPECT(eng_sampler_state_init(&st, &p, 12, odd_prompt, 3, 0) == 0);
    EXPECT(eng_sampler_sample(&st, &ws, &p, base12, 13, &r) == ENG_SAMPLER_ERR_INVALID);
    EXPECT(eng_sampler_sample(&st, &ws, &p, NULL, 12, &r) == ENG_SAMPLER_ERR_INVALID);
    EXPECT(eng_sampler_sample(&st, NULL, &p, base12, 12, &r) == ENG_SAMPLER_ERR_INVALID);
    EXPECT(eng_sampler_sample(&st, &ws, &p, base12, 12, NULL) == ENG_SAMPLER_ERR_INVALID);
    eng_sampler_accept(&st, -1);
    eng_sampler_accept(&st, 99);
    EXPECT(st.n_generated == 2);
    EXPECT(eng_sampler_sample(&st, &ws, &p, base12, 12, &r) == 0);
    eng_sampler_state_free(&st);
    eng_sampler_state_free(&st);
    struct eng_sampler_ws small;
    EXPECT(eng_sampler_ws_init(&small, 0) == ENG_SAMPLER_ERR_INVALID);
    EXPECT(eng_sampler_ws_init(&small, 4) == 0);
    EXPECT(eng_sampler_state_init(&st, &p, 12, NULL, 0, 0) == 0);
    EXPECT(eng_sampler_sample(&st, &small, &p, base12, 12, &r) == ENG_SAMPLER_ERR_INVALID);
    eng_sampler_state_free(&st);
    eng_sampler_ws_free(&small);
    eng_sampler_ws_free(&small);
}

/* eng_sampler_raw_logprobs, the function prompt logprobs use (engine.c fill_logprob). Its
 * engine copy once ranked by raw logits: a NaN that took a top slot first (id 0 here) was
 * never displaced, since no comparison with NaN is true, and the top-1 of {NaN, 1, 2} was the
 * NaN. A +inf logit made every logprob NaN instead of giving it the whole mass. */
static void test_raw_logprobs_odd(void)
{
    struct eng_token_logprob top[3];
    const float a[] = {NAN, 1.0f, 2.0f, NAN};
    float lp = eng_sampler_raw_logprobs(a, 4, 1, 1, top);
    CHECK(top[0].token == 2, "NaN ranked: top-1 of {NaN, 1, 2, NaN} is id %d", top[0].token);
    double want = 1.0 - (2.0 + log1p(exp(-1.0))); /* log_softmax over the finite {1, 2} */
    CHECK(fabs(lp - want) < 1e-5, "logprob of id 1: %g, want %g", (double)lp, want);
    CHECK(fabs(top[0].logprob - (want + 1.0)) < 1e-5, "top logprob %g", (double)top[0].logprob);
    lp = eng_sampler_raw_logprobs(a, 4, 0, 3, top);
    CHECK(lp == -INFINITY, "a NaN token's logprob is -inf, got %g", (double)lp);
    CHECK(top[0].token == 2 && top[1].token == 1 && top[2].token == 0 &&
              top[2].logprob == -INFINITY,
          "top-3 of {NaN, 1, 2, NaN}: %d %d %d (%g)", top[0].token, top[1].token, top[2].token,
          (double)top[2].logprob);

    const float b[] = {0.0f, INFINITY, 1.0f};
    lp = eng_sampler_raw_logprobs(b, 3, 1, 2, top);
    CHECK(lp == 0.0f, "the only +inf logit has logprob 0, got %g", (double)lp);
    CHECK(top[0].token == 1 && top[0].logprob == 0.0f && top[1].token == 2 &&
              top[1].logprob == -INFINITY,
          "top-2 with +inf: %d (%g) %d (%g)", top[0].token, (double)top[0].logprob, top[1].token,
          (double)top[1].logprob);
    lp = eng_sampler_raw_logprobs(b, 3, 0, 0, top);
    CHECK(lp == -INFINITY, "a finite logit beside +inf has logprob -inf, got %g", (double)lp);

    const float c[] = {-INFINITY, NAN};
    lp = eng_sampler_raw_logprobs(c, 2, 0, 2, top);
    CHECK(lp == -INFINITY && top[0].logprob == -INFINITY && top[1].logprob == -INFINITY &&
              top[0].token == 0 && top[1].token == 1,
          "no finite logit: %g, top %d %d", (double)lp, top[0].token, top[1].token);
}

int main(void)
{
    if (eng_sampler_ws_init(&ws, MAX_V) != 0) {
        fprintf(stderr, "workspace init failed\n");
        return 1;
    }
    test_rng_known_answers();
    test_chi2_helper();
    test_greedy();
    test_temperature();
    test_top_k();
    test_top_p();
    test_min_p();
    test_penalties();
    test_logit_bias();
    test_min_tokens();
    test_combined();
    test_large_vocab();
    test_seeds();
    test_logprobs();
    test_raw_logprobs_odd();
    test_is_stop();
    test_odd_values();
    eng_sampler_ws_free(&ws);
    return tu_finish("test_sampler");
}
