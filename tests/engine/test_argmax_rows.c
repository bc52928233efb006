/* Greedy rows, the pieces below the engine: the sampler's eng_sampler_is_greedy_argmax and
 * eng_sampler_take, the argmax op agreeing with the sampler's greedy pick on odd logits, and
 * eng_phi3_forward with token rows on a fixture model (argmax rows and rows drawn by the
 * sample op come back as ids only, the others bit-identical, with one download for each kind
 * of ids and one per run of other rows). The engine's use of all this is tested in
 * test_engine.c (test_token_rows).
 * Usage: test_argmax_rows FIXTURES_DIR. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_cache.h"
#include "model.h"
#include "models/phi3.h"
#include "ops.h"
#include "sampler.h"

#include "../test_util.h"

static const char *fixtures;

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(rng_state >> 33) % n;
}

/* ---- the sampler ---- */

static void test_is_greedy_argmax(void)
{
    const int64_t V = 50;
    int32_t eos = 7, stop = 9, out_of_range = 500;
    struct eng_logit_bias bias = {3, 1.0f};
    struct eng_sampling_params p;
    struct eng_sampler_state st;

    /* One change at a time from a greedy request without extras. */
    for (int k = 0; k < 16; k++) {
        eng_sampling_params_init_default(&p);
        p.temperature = 0.0f;
        bool want = true;
        const char *what = "";
        switch (k) {
        case 0: what = "temperature 0"; break;
        case 1: what = "temperature 0.7"; p.temperature = 0.7f; want = false; break;
        case 2: what = "temperature NaN (greedy)"; p.temperature = NAN; break;
        case 3: what = "temperature -1 (greedy)"; p.temperature = -1.0f; break;
        case 4: what = "logit_bias"; p.logit_bias = &bias; p.n_logit_bias = 1; want = false; break;
        case 5: what = "logit_bias array, 0 entries"; p.logit_bias = &bias; break;
        case 6: what = "presence"; p.presence_penalty = 0.5f; want = false; break;
        case 7: what = "frequency"; p.frequency_penalty = -0.5f; want = false; break;
        case 8: what = "repetition 1.1"; p.repetition_penalty = 1.1f; want = false; break;
        case 9: what = "repetition 0 (off)"; p.repetition_penalty = 0.0f; break;
        case 10: what = "repetition inf (off)"; p.repetition_penalty = INFINITY; break;
        case 11: what = "presence NaN (off)"; p.presence_penalty = NAN; break;
        case 12: what = "logprobs"; p.logprobs = true; want = false; break;
        case 13: what = "top_k/top_p/min_p (unused when greedy)";
            p.top_k = 3; p.top_p = 0.5f; p.min_p = 0.2f; break;
        case 14: what = "min_tokens with only out-of-range stop ids (bans nothing)";
            p.min_tokens = 5; p.stop_token_ids = &out_of_range; p.n_stop_token_ids = 1; break;
        case 15: what = "seeded"; p.has_seed = true; p.seed = 3; break;
        }
        CHECK(eng_sampler_state_init(&st, &p, V, NULL, 0, 1) == 0, "state init");
        CHECK(eng_sampler_is_greedy_argmax(&p, &st) == want, "%s: want %d", what, want);
        eng_sampler_state_free(&st);
    }

    /* min_tokens bans eos and stop ids until that many tokens were generated. */
    eng_sampling_params_init_default(&p);
    p.temperature = 0.0f;
    p.min_tokens = 2;
    p.eos_token_ids = &eos;
    p.n_eos_token_ids = 1;
    p.stop_token_ids = &stop;
    p.n_stop_token_ids = 1;
    CHECK(eng_sampler_state_init(&st, &p, V, NULL, 0, 1) == 0, "state init");
    CHECK(!eng_sampler_is_greedy_argmax(&p, &st), "min_tokens ban active at 0 tokens");
    eng_sampler_accept(&st, 1);
    CHECK(!eng_sampler_is_greedy_argmax(&p, &st), "min_tokens ban active at 1 token");
    eng_sampler_accept(&st, 2);
    CHECK(eng_sampler_is_greedy_argmax(&p, &st), "min_tokens ban over at 2 tokens");
    eng_sampler_state_free(&st);
    CHECK(!eng_sampler_is_greedy_argmax(NULL, &st) && !eng_sampler_is_greedy_argmax(&p, NULL),
          "NULL accepted");
}

/* Rows of odd logits: NaN, infinities, ties, all -inf. */
static void odd_row(float *x, int64_t V, int kind)
{
    for (int64_t i = 0; i < V; i++)
        x[i] = (float)rnd(2000) / 100.0f - 10.0f;
    switch (kind % 7) {
    case 0:
        break;
    case 1: /* ties */
        for (int j = 0; j < 5; j++)
            x[rnd((uint32_t)V)] = 20.0f;
        break;
    case 2: /* NaN everywhere, one before the best */
        for (int j = 0; j < 9; j++)
            x[rnd((uint32_t)V)] = NAN;
        x[0] = NAN;
        break;
    case 3:
        x[rnd((uint32_t)V)] = INFINITY;
        x[rnd((uint32_t)V)] = INFINITY;
        break;
    case 4:
        for (int64_t i = 0; i < V; i++)
            x[i] = -INFINITY;
        x[V - 1] = -5.0f;
        break;
    case 5:
        for (int64_t i = 0; i < V; i++)
            x[i] = -INFINITY;
        break;
    case 6:
        for (int64_t i = 0; i < V; i++)
            x[i] = i % 2 ? NAN : -INFINITY;
        break;
    }
}

/* The op's answer is the sampler's greedy answer, and eng_sampler_take turns it into the
 * result eng_sampler_sample gives (or the same error). */
static void test_op_matches_sampler(void)
{
    const int64_t V = 1000;
    struct kern_ops ops;
    kern_ops_init_ref(&ops);
    struct kern_ops cpu = ops;
    kern_ops_init_cpu(&cpu);
    struct eng_sampling_params p;
    eng_sampling_params_init_default(&p);
    p.temperature = 0.0f;
    struct eng_sampler_state st;
    struct eng_sampler_ws ws;
    CHECK(eng_sampler_state_init(&st, &p, V, NULL, 0, 1) == 0 && eng_sampler_ws_init(&ws, V) == 0,
          "init");
    float *x = malloc((size_t)V * sizeof *x);
    for (int k = 0; k < 70; k++) {
        odd_row(x, V, k);
        int32_t a_ref = -7, a_cpu = -7;
        struct kern_argmax_params ap = {.x = x, .out = &a_ref, .n_rows = 1, .dim = V, .ldx = V};
        CHECK(ops.argmax(NULL, &ap) == KERN_OK, "ref argmax");
        ap.out = &a_cpu;
        CHECK(cpu.argmax(NULL, &ap) == KERN_OK, "cpu argmax");
        CHECK(eng_sampler_is_greedy_argmax(&p, &st), "greedy params not recognised");
        struct eng_sample_result s, t;
        memset(&s, 0x55, sizeof s);
        memset(&t, 0x55, sizeof t);
        int rs = eng_sampler_sample(&st, &ws, &p, x, V, &s);
        int rt = eng_sampler_take(&st, &p, a_ref, V, &t);
        CHECK(rs == rt && s.token == t.token && s.token == a_ref && a_cpu == a_ref &&
                  s.n_top == t.n_top && (s.logprob == t.logprob || (isnan(s.logprob) && isnan(t.logprob))),
              "row kind %d: sample rc %d token %d logprob %g n_top %d; take rc %d token %d "
              "logprob %g n_top %d; op %d/%d",
              k % 7, rs, s.token, (double)s.logprob, s.n_top, rt, t.token, (double)t.logprob,
              t.n_top, a_ref, a_cpu);
        if (k % 7 >= 5)
            CHECK(rs == ENG_SAMPLER_ERR_NO_CANDIDATE && a_ref == -1, "row kind %d: a token", k % 7);
    }
    /* take: bad calls, and it leaves the history alone. */
    struct eng_sample_result t;
    int64_t n_gen = st.n_generated;
    CHECK(eng_sampler_take(&st, &p, 3, V, &t) == 0 && t.token == 3 && t.n_top == 0 &&
              t.logprob == -INFINITY && st.n_generated == n_gen,
          "take 3");
    CHECK(eng_sampler_take(&st, &p, (int32_t)V, V, &t) == ENG_SAMPLER_ERR_INVALID && t.token == -1,
          "take token vocab");
    CHECK(eng_sampler_take(&st, &p, 3, V + 1, &t) == ENG_SAMPLER_ERR_INVALID, "take vocab mismatch");
    CHECK(eng_sampler_take(NULL, &p, 3, V, &t) == ENG_SAMPLER_ERR_INVALID, "take NULL state");
    CHECK(eng_sampler_take(&st, &p, 3, V, NULL) == ENG_SAMPLER_ERR_INVALID, "take NULL out");
    p.logprobs = true;
    CHECK(eng_sampler_take(&st, &p, 3, V, &t) == ENG_SAMPLER_ERR_INVALID, "take with logprobs");
    free(x);
    eng_sampler_ws_free(&ws);
    eng_sampler_state_free(&st);
}

/* ---- the forward pass ---- */

/* Counts the downloads a forward makes (the test wraps the table's buf_download). */
static struct {
    int (*inner)(struct kern_ctx *, void *, const void *, size_t);
    int calls;
    size_t bytes;
} dl;

static int counting_download(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    dl.calls++;
    dl.bytes += bytes;
    return dl.inner(ctx, dst, src, bytes);
}

static int32_t plain_argmax(const float *x, int64_t V)
{
    int32_t best = -1;
    for (int64_t i = 0; i < V; i++)
        if (!isnan(x[i]) && x[i] != -INFINITY && (best < 0 || x[i] > x[best]))
            best = (int32_t)i;
    return best;
}

static void test_forward(const char *model, bool cpu_backend)
{
    char dir[4096], err[512];
    snprintf(dir, sizeof dir, "%s/models/%s", fixtures, model);
    struct eng_model *m = NULL;
    if (eng_model_load(dir, &m, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    struct kern_ops ops;
    kern_ops_init_ref(&ops);
    struct kern_ctx *ctx = NULL;
    if (cpu_backend) {
        kern_ops_init_cpu(&ops);
        ctx = kern_ctx_create_cpu(2);
    }
    dl.inner = ops.buf_download;
    ops.buf_download = counting_download;
    const struct eng_model_config *c = &m->cfg;
    const int64_t V = c->vocab_size;
    enum { T = 24 };
    struct eng_kv_cache *kv = NULL;
    if (eng_kv_cache_create(c->num_hidden_layers, c->num_key_value_heads, c->head_dim, 16, 2,
                            KERN_DTYPE_F32, &kv, err, sizeof err) != 0)
        exit(1);
    /* One prompt of T tokens, every row wanted (as prompt logprobs would). */
    int32_t toks[T], pos[T], rows[T], table[2] = {1, 0};
    int64_t slots[T];
    for (int32_t i = 0; i < T; i++) {
        toks[i] = 5 + (int32_t)rnd((uint32_t)(V - 5));
        pos[i] = i;
        rows[i] = i;
        slots[i] = (int64_t)table[i / 16] * 16 + i % 16;
    }
    int32_t q_start = 0, q_len = T, ctx_len = T;
    uint8_t var = 0;
    struct eng_batch b = {
        .n_tokens = T, .token_ids = toks, .positions = pos, .slot_mapping = slots, .n_seqs = 1,
        .q_start = &q_start, .q_len = &q_len, .ctx_len = &ctx_len, .block_tables = table,
        .max_blocks = 2, .rope_variant = &var, .n_logit_rows = T, .logit_rows = rows,
    };
    struct eng_phi3_ws ws = {0};
    float *full = malloc((size_t)T * (size_t)V * sizeof *full);
    float *got = malloc((size_t)T * (size_t)V * sizeof *got);
    dl.calls = 0;
    dl.bytes = 0;
    CHECK(eng_phi3_forward(m, &ops, ctx, kv, &b, &ws, full, NULL) == 0, "forward");
    CHECK(dl.calls == 1 && dl.bytes == (size_t)T * (size_t)V * sizeof(float),
          "%s: without flags: %d downloads, %zu bytes", model, dl.calls, dl.bytes);

    const float canary = 12345.0f;
    for (int pat = 0; pat < 8; pat++) {
        uint8_t flags[T];
        for (int32_t r = 0; r < T; r++) {
            switch (pat) {
            case 0: flags[r] = 0; break;                       /* given, but none set */
            case 1: flags[r] = 1; break;                       /* all */
            case 2: flags[r] = (uint8_t)(r % 2); break;        /* alternating */
            case 3: flags[r] = r == 0; break;                  /* the first */
            case 4: flags[r] = r == T - 1; break;              /* the last */
            case 5: flags[r] = (uint8_t)(r >= 3 && r < 10); break;
            case 6: flags[r] = (uint8_t)(r != 5 && r != 17); break;
            default: flags[r] = (uint8_t)(rnd(3) == 0 ? 2 : 0); break; /* any nonzero */
            }
        }
        int n_runs = 0, n_flagged = 0;
        for (int32_t r = 0; r < T; r++) {
            n_flagged += flags[r] != 0;
            if (!flags[r] && (r == 0 || flags[r - 1]))
                n_runs++;
        }
        int32_t tokens[T];
        for (int32_t r = 0; r < T; r++)
            tokens[r] = -7;
        for (int64_t i = 0; i < (int64_t)T * V; i++)
            got[i] = canary;
        dl.calls = 0;
        dl.bytes = 0;
        struct eng_phi3_tokens tk = {.argmax_rows = flags, .tokens = tokens};
        int rc = eng_phi3_forward(m, &ops, ctx, kv, &b, &ws, got, &tk);
        CHECK(rc == 0, "%s pattern %d: forward %d", model, pat, rc);
        int want_calls = n_runs + (n_flagged > 0);
        size_t want_bytes = (size_t)(T - n_flagged) * (size_t)V * sizeof(float) +
                            (n_flagged > 0 ? (size_t)T * sizeof(int32_t) : 0);
        CHECK(dl.calls == want_calls && dl.bytes == want_bytes,
              "%s pattern %d: %d downloads of %zu bytes, want %d of %zu", model, pat, dl.calls,
              dl.bytes, want_calls, want_bytes);
        for (int32_t r = 0; r < T; r++) {
            const float *g = got + (size_t)r * (size_t)V, *f = full + (size_t)r * (size_t)V;
            if (flags[r]) {
                bool untouched = true;
                for (int64_t i = 0; i < V; i++)
                    untouched &= g[i] == canary;
                CHECK(untouched, "%s pattern %d: flagged row %d was written", model, pat, r);
                CHECK(tokens[r] == plain_argmax(f, V), "%s pattern %d row %d: token %d, want %d",
                      model, pat, r, tokens[r], plain_argmax(f, V));
            } else {
                CHECK(memcmp(g, f, (size_t)V * sizeof *g) == 0,
                      "%s pattern %d: row %d differs from the full download", model, pat, r);
            }
        }
    }
    /* Rows drawn by the sample op: jobs on some rows, argmax flags on others. The drawn rows
     * come back as ids only, equal to the op run on the full logits. */
    for (int pat = 0; pat < 4; pat++) {
        uint8_t flags[T] = {0};
        struct kern_sample_job jobs[T + 2];
        struct kern_sample_mod mods[2 * T + 4];
        int64_t n_jobs = 0, n_mods = 0;
        for (int32_t r = 0; r < T; r++) {
            bool job = pat == 0 ? r % 3 != 1 : pat == 1 ? r == T - 1 : pat == 2 ? true : rnd(2);
            if (!job) {
                flags[r] = pat != 1 && rnd(2);
                continue;
            }
            struct kern_sample_job *jb = &jobs[n_jobs++];
            *jb = (struct kern_sample_job){
                .row = r, .mod_start = n_mods, .n_mods = rnd(3),
                .u = (double)rnd(1000) / 1000.0, .temperature = rnd(4) == 0 ? 0.0f : 0.8f,
                .min_p = rnd(2) ? 0.05f : 0.0f, .top_p = rnd(2) ? 0.9f : 1.0f,
                .top_k = rnd(2) ? 0 : 1 + (int32_t)rnd(40),
            };
            for (int64_t k = 0; k < jb->n_mods; k++)
                mods[n_mods++] = (struct kern_sample_mod){
                    .token = (int32_t)(k * 7 + rnd(5)), .ban = rnd(4) == 0,
                    .bias = (float)rnd(5), .rep = 1.2f, .sub_freq = 0.5f, .sub_pres = 0.25f};
        }
        /* Two more jobs on the last job's row, as the choices of an n > 1 request draw. */
        for (int extra = 0; extra < 2 && n_jobs > 0 && pat != 1; extra++) {
            jobs[n_jobs] = jobs[n_jobs - 1];
            jobs[n_jobs].u = (double)rnd(1000) / 1000.0;
            jobs[n_jobs].n_mods = 0;
            n_jobs++;
        }
        /* Reversed order: jobs need not follow the rows. */
        for (int64_t j = 0; j < n_jobs / 2; j++) {
            struct kern_sample_job t = jobs[j];
            jobs[j] = jobs[n_jobs - 1 - j];
            jobs[n_jobs - 1 - j] = t;
        }
        int32_t want[T + 2], tokens[T], job_tokens[T + 2];
        float *work = malloc((size_t)(T + 2) * (size_t)V * sizeof *work);
        struct kern_sample_params sp = {
            .x = full, .jobs = jobs, .mods = mods, .work = work, .out = want,
            .n_rows = T, .dim = V, .ldx = V, .n_jobs = n_jobs, .n_mods = n_mods,
        };
        CHECK(ops.sample(ctx, &sp) == 0, "%s jobs %d: the op on the full logits", model, pat);
        free(work);
        for (int64_t i = 0; i < (int64_t)T * V; i++)
            got[i] = canary;
        int n_runs = 0, n_flagged = 0;
        bool taken[T] = {false};
        for (int32_t r = 0; r < T; r++)
            taken[r] = flags[r] != 0;
        for (int64_t j = 0; j < n_jobs; j++)
            taken[jobs[j].row] = true;
        for (int32_t r = 0; r < T; r++) {
            n_flagged += flags[r] != 0;
            if (!taken[r] && (r == 0 || taken[r - 1]))
                n_runs++;
        }
        dl.calls = 0;
        dl.bytes = 0;
        struct eng_phi3_tokens tk = {.argmax_rows = flags, .jobs = jobs, .n_jobs = n_jobs,
                                     .mods = mods, .n_mods = n_mods, .tokens = tokens,
                                     .job_tokens = job_tokens};
        CHECK(eng_phi3_forward(m, &ops, ctx, kv, &b, &ws, got, &tk) == 0, "%s jobs %d: forward",
              model, pat);
        /* No logits buffer: fine when every row brings back tokens, refused otherwise. */
        bool all_taken = true;
        for (int32_t r = 0; r < T; r++)
            all_taken &= taken[r];
        int no_buf = eng_phi3_forward(m, &ops, ctx, kv, &b, &ws, NULL, &tk);
        CHECK(no_buf == (all_taken ? 0 : KERN_ERR_INVALID),
              "%s jobs %d: no logits buffer, %s: %d", model, pat,
              all_taken ? "every row brings back tokens" : "rows of logits", no_buf);
        CHECK(pat != 2 || all_taken, "pattern 2 puts a job on every row");
        dl.calls = 0;
        dl.bytes = 0;
        CHECK(eng_phi3_forward(m, &ops, ctx, kv, &b, &ws, got, &tk) == 0, "%s jobs %d: forward",
              model, pat);
        int64_t n_taken = 0;
        for (int32_t r = 0; r < T; r++)
            n_taken += taken[r];
        int want_calls = n_runs + (n_flagged > 0) + (n_jobs > 0);
        size_t want_bytes = (size_t)(T - n_taken) * (size_t)V * sizeof(float) +
                            (n_flagged > 0 ? (size_t)T * sizeof(int32_t) : 0) +
                            (size_t)n_jobs * sizeof(int32_t);
        CHECK(dl.calls == want_calls && dl.bytes == want_bytes,
              "%s jobs %d: %d downloads of %zu bytes, want %d of %zu", model, pat, dl.calls,
              dl.bytes, want_calls, want_bytes);
        for (int64_t j = 0; j < n_jobs; j++) {
            int64_t r = jobs[j].row;
            CHECK(job_tokens[j] == want[j], "%s jobs %d job %lld (row %lld): token %d, want %d",
                  model, pat, (long long)j, (long long)r, job_tokens[j], want[j]);
            CHECK(got[r * V] == canary && got[r * V + V - 1] == canary,
                  "%s jobs %d: drawn row %lld was written", model, pat, (long long)r);
        }
        for (int32_t r = 0; r < T; r++) {
            const float *f = full + (size_t)r * (size_t)V;
            if (flags[r])
                CHECK(tokens[r] == plain_argmax(f, V), "%s jobs %d row %d: argmax %d, want %d",
                      model, pat, r, tokens[r], plain_argmax(f, V));
            else if (!taken[r])
                CHECK(memcmp(got + (size_t)r * (size_t)V, f, (size_t)V * sizeof *got) == 0,
                      "%s jobs %d: row %d differs from the full download", model, pat, r);
        }
        /* Refused before anything runs: a row taken twice, a row or mods out of range, jobs
         * on a backend without the op. */
        if (n_jobs > 0) {
            struct kern_sample_job keep = jobs[0];
            uint8_t all[T];
            memset(all, 1, sizeof all);
            struct eng_phi3_tokens bad = tk;
            bad.argmax_rows = all;
            CHECK(eng_phi3_forward(m, &ops, ctx, kv, &b, &ws, got, &bad) == KERN_ERR_INVALID,
                  "a row both argmax and drawn accepted");
            bad = tk;
            jobs[0].row = T;
            CHECK(eng_phi3_forward(m, &ops, ctx, kv, &b, &ws, got, &bad) == KERN_ERR_INVALID,
                  "a job row past the logit rows accepted");
            jobs[0] = keep;
            jobs[0].mod_start = n_mods - jobs[0].n_mods + 1;
            CHECK(eng_phi3_forward(m, &ops, ctx, kv, &b, &ws, got, &bad) == KERN_ERR_INVALID,
                  "mods past n_mods accepted");
            jobs[0] = keep;
            struct kern_ops no_op = ops;
            no_op.sample = NULL;
            CHECK(eng_phi3_forward(m, &no_op, ctx, kv, &b, &ws, got, &bad) == KERN_ERR_INVALID,
                  "jobs without a sample op accepted");
            bad.job_tokens = NULL;
            CHECK(eng_phi3_forward(m, &ops, ctx, kv, &b, &ws, got, &bad) == KERN_ERR_INVALID,
                  "jobs without tokens accepted");
        }
    }
    /* Flags without a tokens buffer are refused. */
    uint8_t one[T] = {1};
    struct eng_phi3_tokens no_tokens = {.argmax_rows = one};
    CHECK(eng_phi3_forward(m, &ops, ctx, kv, &b, &ws, got, &no_tokens) == KERN_ERR_INVALID,
          "flags without tokens accepted");
    free(full);
    free(got);
    eng_phi3_ws_free(&ws);
    eng_kv_cache_destroy(kv);
    kern_ctx_destroy(ctx);
    eng_model_destroy(m);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    fixtures = argv[1];
    test_is_greedy_argmax();
    test_op_matches_sampler();
    test_forward("mha-window", false);
    test_forward("mha-window", true);
    test_forward("phi3-demo", true); /* Phi-3's real vocabulary width */
    return tu_finish("test_argmax_rows");
}
