/* eng_sampler_job against eng_sampler_sample: for seeded sequences with every processor
 * (bias, min_tokens, penalties, temperature, min_p, top_k, top_p) and a growing history, the
 * reference backend's sample op given the job and mods that eng_sampler_job prepares must
 * choose the token the host sampler chooses from the same logits with the same RNG, step after
 * step. Also: the RNG draw each path consumes, the mods' contents, and the refusals. Not a test
 * of the CUDA kernel (tests/gpu/test_gpu_ops.c compares it with the reference op). */
#include "ops.h"
#include "sampler.h"

#include "../test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STEPS 40

static uint64_t rng_state = 0x5eed5eedULL;

static double unif(void)
{
    return (double)(tu_xorshift64(&rng_state) >> 11) * 0x1.0p-53;
}

static int32_t rnd(int32_t n)
{
    return (int32_t)(unif() * n);
}

/* Logits of one step: normal-ish values with a spread, some exact ties, and on request NaN
 * and infinities. */
static void fill_logits(float *x, int64_t V, float spread, bool odd)
{
    for (int64_t i = 0; i < V; i++)
        x[i] = (float)((unif() + unif() + unif() - 1.5) * spread);
    for (int k = 0; k < 8; k++) /* ties, also among the best */
        x[rnd((int32_t)V)] = x[rnd((int32_t)V)];
    if (odd) {
        x[rnd((int32_t)V)] = NAN;
        x[rnd((int32_t)V)] = -INFINITY;
        x[rnd((int32_t)V)] = -INFINITY;
    }
}

struct scenario {
    const char *name;
    struct eng_sampling_params p;
};

static const int32_t eos_ids[] = {2, 7};
static const int32_t stop_ids[] = {11};

/* Runs one seeded sequence for STEPS steps through both paths. */
static void run_scenario(const struct scenario *sc, int64_t V, const struct kern_ops *ops,
                         int *n_cmp)
{
    const struct eng_sampling_params *p = &sc->p;
    int32_t prompt[64];
    for (int i = 0; i < 64; i++)
        prompt[i] = rnd((int32_t)(V < 50 ? V : 50)); /* repeats, and some penalised ids */
    struct eng_sampler_state st;
    struct eng_sampler_ws ws;
    CHECK(eng_sampler_state_init(&st, p, V, prompt, 64, 1) == 0, "%s: state", sc->name);
    CHECK(eng_sampler_ws_init(&ws, V) == 0, "%s: ws", sc->name);
    float *x = tu_xmalloc((size_t)V * sizeof *x);
    float *work = tu_xmalloc((size_t)V * sizeof *work);
    int64_t cap = eng_sampler_job_mods_max(p, &st) + V; /* grows with the history */
    struct kern_sample_mod *mods = tu_xmalloc((size_t)cap * sizeof *mods);
    for (int step = 0; step < STEPS; step++) {
        fill_logits(x, V, step % 3 == 0 ? 12.0f : 4.0f, step % 5 == 4);
        /* The host path on a copy of the state (it shares the history, which neither path
         * changes, and consumes its own copy of the RNG). */
        struct eng_sampler_state host = st;
        struct eng_sample_result res;
        int hrc = eng_sampler_sample(&host, &ws, p, x, V, &res);

        int64_t max_mods = eng_sampler_job_mods_max(p, &st);
        CHECK(max_mods <= cap && max_mods <= V, "%s: mods bound %lld", sc->name,
              (long long)max_mods);
        struct kern_sample_job job;
        CHECK(eng_sampler_job(&st, &ws, p, &job, mods) == 0, "%s step %d: job", sc->name, step);
        CHECK(job.n_mods <= max_mods, "%s step %d: %lld mods over the bound %lld", sc->name, step,
              (long long)job.n_mods, (long long)max_mods);
        /* One entry per token, and the slot map is clean again. */
        for (int64_t i = 0; i < job.n_mods; i++)
            for (int64_t k = i + 1; k < job.n_mods; k++)
                CHECK(mods[i].token != mods[k].token, "%s: token %d twice", sc->name,
                      mods[i].token);
        bool clean = true;
        for (int64_t v = 0; v < V; v++)
            clean &= ws.slot[v] == -1;
        CHECK(clean, "%s step %d: slot map left dirty", sc->name, step);
        /* Both paths consumed the same draws. */
        CHECK(memcmp(&host.rng, &st.rng, sizeof st.rng) == 0 || hrc != 0,
              "%s step %d: the RNGs diverge", sc->name, step);

        job.row = 0;
        job.mod_start = 0;
        int32_t tok = -2;
        float lp = 0.0f;
        struct kern_token_logprob top[KERN_MAX_TOP_LOGPROBS];
        struct kern_sample_params sp = {
            .x = x, .jobs = &job, .mods = mods, .work = work, .out = &tok, .logprob = &lp,
            .top = top, .n_rows = 1, .dim = V, .ldx = V, .n_jobs = 1, .n_mods = job.n_mods,
        };
        CHECK(ops->sample(NULL, &sp) == 0, "%s step %d: sample op", sc->name, step);
        struct eng_sample_result got;
        int trc = eng_sampler_take_logprobs(&st, p, tok, lp, top, V, &got);
        CHECK(trc == hrc, "%s step %d: host rc %d, op rc %d", sc->name, step, hrc, trc);
        CHECK(got.token == res.token, "%s step %d: host token %d, op token %d", sc->name, step,
              res.token, got.token);
        /* The raw logprobs: the same ids; values from the same weights and sum order. */
        bool same = got.n_top == res.n_top &&
                    (got.logprob == res.logprob || fabsf(got.logprob - res.logprob) <= 1e-6f);
        for (int32_t i = 0; same && i < got.n_top; i++)
            same = got.top[i].token == res.top[i].token &&
                   (got.top[i].logprob == res.top[i].logprob ||
                    fabsf(got.top[i].logprob - res.top[i].logprob) <= 1e-6f);
        CHECK(same, "%s step %d: logprobs %g (%d alternatives) from the op, %g (%d) on the host",
              sc->name, step, (double)got.logprob, got.n_top, (double)res.logprob, res.n_top);
        (*n_cmp)++;
        if (res.token < 0)
            continue;
        eng_sampler_accept(&st, res.token);
        if (eng_sampler_job_mods_max(p, &st) > cap) {
            cap *= 2;
            free(mods);
            mods = tu_xmalloc((size_t)cap * sizeof *mods);
        }
    }
    free(mods);
    free(work);
    free(x);
    eng_sampler_ws_free(&ws);
    eng_sampler_state_free(&st);
}

static struct eng_sampling_params base(float temperature, int64_t seed)
{
    struct eng_sampling_params p;
    eng_sampling_params_init_default(&p);
    p.temperature = temperature;
    p.has_seed = true;
    p.seed = seed;
    p.eos_token_ids = eos_ids;
    p.n_eos_token_ids = 2;
    return p;
}

static void test_against_host(const struct kern_ops *ops)
{
    static const struct eng_logit_bias bias[] = {
        {3, 5.0f}, {4, -100.0f}, {5, 250.0f}, {6, NAN}, {-1, 3.0f}, {1 << 30, 1.0f}, {12, 0.5f},
    };
    struct scenario sc[24];
    int n = 0;
    sc[n] = (struct scenario){"plain t=1", base(1.0f, 1)};
    n++;
    sc[n] = (struct scenario){"greedy", base(0.0f, 2)};
    n++;
    sc[n] = (struct scenario){"greedy with penalties", base(0.0f, 3)};
    sc[n].p.repetition_penalty = 1.3f;
    sc[n++].p.frequency_penalty = 0.5f;
    sc[n] = (struct scenario){"t 0.7 top_k 5", base(0.7f, 4)};
    sc[n++].p.top_k = 5;
    sc[n] = (struct scenario){"top_k 1", base(1.0f, 5)};
    sc[n++].p.top_k = 1;
    sc[n] = (struct scenario){"top_p 0.9", base(1.0f, 6)};
    sc[n++].p.top_p = 0.9f;
    sc[n] = (struct scenario){"top_p 0 (best only)", base(1.2f, 7)};
    sc[n++].p.top_p = 0.0f;
    sc[n] = (struct scenario){"top_p NaN (off)", base(1.0f, 8)};
    sc[n++].p.top_p = NAN;
    sc[n] = (struct scenario){"min_p 0.1", base(1.0f, 9)};
    sc[n++].p.min_p = 0.1f;
    sc[n] = (struct scenario){"min_p 2 (acts as 1)", base(1.0f, 10)};
    sc[n++].p.min_p = 2.0f;
    sc[n] = (struct scenario){"top_k 40 top_p 0.8 min_p 0.02", base(0.9f, 11)};
    sc[n].p.top_k = 40;
    sc[n].p.top_p = 0.8f;
    sc[n++].p.min_p = 0.02f;
    sc[n] = (struct scenario){"tiny temperature", base(0.001f, 12)};
    n++;
    sc[n] = (struct scenario){"huge temperature", base(INFINITY, 13)};
    n++;
    sc[n] = (struct scenario){"logit bias", base(1.0f, 14)};
    sc[n].p.logit_bias = bias;
    sc[n++].p.n_logit_bias = (int32_t)(sizeof bias / sizeof bias[0]);
    sc[n] = (struct scenario){"min_tokens with eos and stop ids", base(0.5f, 15)};
    sc[n].p.min_tokens = 25;
    sc[n].p.stop_token_ids = stop_ids;
    sc[n++].p.n_stop_token_ids = 1;
    sc[n] = (struct scenario){"repetition penalty", base(1.0f, 16)};
    sc[n++].p.repetition_penalty = 1.8f;
    sc[n] = (struct scenario){"frequency and presence", base(0.8f, 17)};
    sc[n].p.frequency_penalty = 1.5f;
    sc[n++].p.presence_penalty = -0.5f;
    sc[n] = (struct scenario){"everything", base(0.9f, 18)};
    sc[n].p.top_k = 20;
    sc[n].p.top_p = 0.95f;
    sc[n].p.min_p = 0.01f;
    sc[n].p.repetition_penalty = 1.1f;
    sc[n].p.frequency_penalty = 0.3f;
    sc[n].p.presence_penalty = 0.2f;
    sc[n].p.logit_bias = bias;
    sc[n].p.n_logit_bias = (int32_t)(sizeof bias / sizeof bias[0]);
    sc[n].p.min_tokens = 10;
    sc[n].p.stop_token_ids = stop_ids;
    sc[n++].p.n_stop_token_ids = 1;
    sc[n] = (struct scenario){"logprobs, 5 alternatives", base(0.8f, 20)};
    sc[n].p.logprobs = true;
    sc[n++].p.top_logprobs = 5;
    sc[n] = (struct scenario){"greedy logprobs, 20 alternatives, penalties", base(0.0f, 21)};
    sc[n].p.logprobs = true;
    sc[n].p.top_logprobs = 20;
    sc[n++].p.frequency_penalty = 0.7f;
    sc[n] = (struct scenario){"logprobs, no alternatives, top_p", base(1.0f, 22)};
    sc[n].p.logprobs = true;
    sc[n++].p.top_p = 0.7f;
    sc[n] = (struct scenario){"greedy, bias and bans", base(0.0f, 19)};
    sc[n].p.logit_bias = bias;
    sc[n].p.n_logit_bias = (int32_t)(sizeof bias / sizeof bias[0]);
    sc[n++].p.min_tokens = 15;

    int n_cmp = 0;
    const int64_t vocabs[] = {1, 13, 1000, 32064};
    for (size_t v = 0; v < sizeof vocabs / sizeof vocabs[0]; v++)
        for (int i = 0; i < n; i++)
            run_scenario(&sc[i], vocabs[v], ops, &n_cmp);
    printf("%d draws compared\n", n_cmp);
}

/* The mods of one known state: ids, their changes, merged per token. */
static void test_mods_contents(void)
{
    const int64_t V = 100;
    struct eng_sampling_params p = base(1.0f, 5);
    p.repetition_penalty = 2.0f;
    p.frequency_penalty = 0.25f;
    p.presence_penalty = 1.5f;
    p.min_tokens = 3;
    const struct eng_logit_bias bias[] = {{40, 1.0f}, {41, -3.0f}, {40, 2.0f}, {2, 4.0f}};
    p.logit_bias = bias;
    p.n_logit_bias = 4;
    const int32_t prompt[] = {10, 11, 10};
    struct eng_sampler_state st;
    struct eng_sampler_ws ws;
    CHECK(eng_sampler_state_init(&st, &p, V, prompt, 3, 0) == 0, "state");
    CHECK(eng_sampler_ws_init(&ws, V) == 0, "ws");
    eng_sampler_accept(&st, 11);
    eng_sampler_accept(&st, 50);
    eng_sampler_accept(&st, 50);
    struct kern_sample_mod mods[16];
    struct kern_sample_job job;
    /* 4 bias entries + 2 banned (eos 2 and 7: n_generated 3 = min_tokens bans nothing now) +
     * touched 10, 11, 50 */
    CHECK(eng_sampler_job_mods_max(&p, &st) == 7, "bound %lld",
          (long long)eng_sampler_job_mods_max(&p, &st));
    CHECK(eng_sampler_job(&st, &ws, &p, &job, mods) == 0, "job");
    CHECK(job.n_mods == 6, "%lld mods, want 6 (40, 41, 2, 10, 11, 50)", (long long)job.n_mods);
    for (int64_t i = 0; i < job.n_mods; i++) {
        const struct kern_sample_mod *m = &mods[i];
        switch (m->token) {
        case 40:
            EXPECT(m->bias == 3.0f && m->rep == 1.0f && m->sub_freq == 0.0f && !m->ban);
            break;
        case 41:
            EXPECT(m->bias == -3.0f && m->rep == 1.0f && !m->ban);
            break;
        case 2:
            EXPECT(m->bias == 4.0f && !m->ban);
            break;
        case 10: /* prompt only */
            EXPECT(m->bias == 0.0f && m->rep == 2.0f && m->sub_freq == 0.0f &&
                   m->sub_pres == 0.0f);
            break;
        case 11: /* prompt and once generated */
            EXPECT(m->rep == 2.0f && m->sub_freq == 0.25f && m->sub_pres == 1.5f);
            break;
        case 50: /* generated twice */
            EXPECT(m->rep == 2.0f && m->sub_freq == 0.5f && m->sub_pres == 1.5f);
            break;
        default:
            CHECK(0, "unexpected token %d", m->token);
        }
    }
    CHECK(job.temperature == 1.0f && job.top_k == 0 && job.top_p == 1.0f && job.min_p == 0.0f &&
              job.u >= 0.0 && job.u < 1.0,
          "job params");
    /* Before min_tokens the eos ids are banned too. */
    struct eng_sampler_state fresh;
    CHECK(eng_sampler_state_init(&fresh, &p, V, prompt, 3, 0) == 0, "state");
    CHECK(eng_sampler_job(&fresh, &ws, &p, &job, mods) == 0, "job");
    int bans = 0;
    for (int64_t i = 0; i < job.n_mods; i++)
        bans += mods[i].ban != 0 && (mods[i].token == 2 || mods[i].token == 7);
    CHECK(bans == 2 && job.n_mods == 6, "%d bans in %lld mods, want 2 in 6 (40 41 2 7 10 11)",
          bans, (long long)job.n_mods);
    /* A greedy job draws nothing; logprobs cannot be drawn on a backend. */
    struct eng_rng before = fresh.rng;
    p.temperature = 0.0f;
    CHECK(eng_sampler_job(&fresh, &ws, &p, &job, mods) == 0 && job.temperature == 0.0f &&
              memcmp(&before, &fresh.rng, sizeof before) == 0,
          "greedy job consumed a draw");
    p.logprobs = true;
    p.top_logprobs = 25;
    CHECK(eng_sampler_job(&fresh, &ws, &p, &job, mods) == 0 && job.logprobs && job.n_top == 20,
          "logprobs: the job asks for 20 alternatives (top_logprobs 25 clamped)");
    CHECK(eng_sampler_job(NULL, &ws, &p, &job, mods) == ENG_SAMPLER_ERR_INVALID, "NULL state");
    eng_sampler_state_free(&fresh);
    eng_sampler_state_free(&st);
    eng_sampler_ws_free(&ws);
}

int main(void)
{
    struct kern_ops ops;
    kern_ops_init_ref(&ops);
    test_mods_contents();
    test_against_host(&ops);
    return tu_finish("sampler_job");
}
