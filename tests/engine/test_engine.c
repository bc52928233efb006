/* Tests of the serving engine (engine/engine.c + scheduler + prefix cache) on the golden
 * fixture models, through the public API only: batch invariance with chunked prefill against
 * runs alone and against transformers' greedy continuations, preemption invariance, prefix
 * caching (hits, identical output, eviction), LongRoPE in both modes, n > 1 block sharing,
 * seeded sampling, prompt logprobs, cancellation storms, the submit-time limits, and greedy
 * rows (the backend's argmax instead of logits) in a mixed batch.
 * Usage: test_engine FIXTURES_DIR unit|golden [ref|cpu]. The 'unit' group holds the fast
 * API tests, 'golden' the invariance runs over every fixture model. */
#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_backend.h"
#include "engine.h"
#include "kv_cache.h"
#include "model.h"
#include "models/phi3.h"

#include "../test_util.h"

static const char *fixtures;
static const char *device = "cpu";

#define MAX_N 8
#define MAX_OUT 600

/* ---- a deterministic RNG for prompts and cancellation points ---- */
static uint64_t rng_state = 0x1234567u;
static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(rng_state >> 33) % n;
}

/* ---- requests and a driver that runs many of them concurrently ---- */

struct req {
    int32_t prompt[600];
    int32_t n_prompt;
    int32_t max_tokens;
    int32_t n;
    float temperature;
    bool seeded;
    int64_t seed;
    bool prompt_logprobs;
    int32_t stop_id;           /* -1: none */
    int cancel_after;          /* -1: never; else cancel once this many events arrived */
    bool release_early;        /* release right after submit, never read */
    const char *stop[2];       /* stop strings */
    int32_t n_stop;
    bool include_stop;
    bool logprobs;             /* sampled-token logprobs with 2 alternatives */
    float presence, repetition; /* penalties; 0 is off for both */
    int32_t min_tokens;
    /* results (from out on) */
    int32_t out[MAX_N][MAX_OUT];
    float lp[MAX_N][MAX_OUT];  /* logprob of each token (when logprobs) */
    char text[MAX_N][2048];
    size_t text_len[MAX_N];
    int32_t n_out[MAX_N];
    enum eng_finish_reason fin[MAX_N];
    struct eng_usage usage;
    struct eng_token_info *plp; /* copy of the prompt logprobs, or NULL */
    struct eng_handle *h;
    int n_events;
    bool done;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t n;
    struct eng_engine *watch;  /* when set, the wake callback samples its metrics */
    int64_t max_used;
    void *gate;                /* the wake of this request parks the engine thread ... */
    bool parked, open;         /* ... until open is set */
} W = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, NULL, 0, NULL, false, false};

static void wake_cb(void *user)
{
    pthread_mutex_lock(&W.mu);
    if (W.gate && user == W.gate) {
        W.parked = true;
        pthread_cond_broadcast(&W.cv);
        while (!W.open)
            pthread_cond_wait(&W.cv, &W.mu);
    }
    if (W.watch) {
        struct eng_metrics m;
        eng_engine_get_metrics(W.watch, &m);
        if (m.kv_blocks_used > W.max_used)
            W.max_used = m.kv_blocks_used;
    }
    W.n++;
    pthread_cond_broadcast(&W.cv);
    pthread_mutex_unlock(&W.mu);
}

static void req_init(struct req *r, const int32_t *prompt, int32_t n_prompt, int32_t max_tokens)
{
    memset(r, 0, sizeof *r);
    memcpy(r->prompt, prompt, (size_t)n_prompt * sizeof *prompt);
    r->n_prompt = n_prompt;
    r->max_tokens = max_tokens;
    r->n = 1;
    r->stop_id = -1;
    r->cancel_after = -1;
}

/* Clears the results of a request (its inputs stay), so it can run again. */
static void req_reset(struct req *r)
{
    free(r->plp);
    memset((char *)r + offsetof(struct req, out), 0, sizeof *r - offsetof(struct req, out));
}

static void req_random(struct req *r, int32_t vocab, int32_t max_prompt, int32_t max_new)
{
    int32_t p[600];
    int32_t n = 1 + (int32_t)rnd((uint32_t)max_prompt);
    for (int32_t i = 0; i < n; i++)
        p[i] = 5 + (int32_t)rnd((uint32_t)(vocab - 5));
    req_init(r, p, n, 1 + (int32_t)rnd((uint32_t)max_new));
}

static int submit(struct eng_engine *e, struct req *r, char *err, size_t errlen)
{
    struct eng_request q;
    memset(&q, 0, sizeof q);
    q.prompt = r->prompt;
    q.n_prompt = r->n_prompt;
    eng_sampling_params_init_default(&q.sampling);
    q.sampling.temperature = r->temperature;
    q.sampling.ignore_eos = true; /* the goldens were made without eos */
    q.sampling.has_seed = r->seeded;
    q.sampling.seed = r->seed;
    q.sampling.stop_token_ids = &r->stop_id;
    q.sampling.n_stop_token_ids = r->stop_id >= 0 ? 1 : 0;
    q.sampling.logprobs = r->logprobs;
    q.sampling.top_logprobs = r->logprobs ? 2 : 0;
    q.sampling.presence_penalty = r->presence;
    q.sampling.repetition_penalty = r->repetition;
    q.sampling.min_tokens = r->min_tokens;
    q.max_tokens = r->max_tokens;
    q.stop = r->stop;
    q.n_stop = r->n_stop;
    q.include_stop_str_in_output = r->include_stop;
    q.n = r->n;
    q.skip_special_tokens = true;
    q.prompt_logprobs = r->prompt_logprobs;
    q.prompt_top_logprobs = r->prompt_logprobs ? 3 : 0;
    return eng_engine_submit(e, &q, wake_cb, r, &r->h, err, errlen);
}

/* Takes every pending event of r; returns true when r is over. */
static bool drain_events(struct req *r)
{
    const struct eng_event *ev;
    int rc;
    while ((rc = eng_handle_next(r->h, &ev)) == 1) {
        r->n_events++;
        CHECK(ev->choice >= 0 && ev->choice < r->n, "choice %d", ev->choice);
        size_t *tl = &r->text_len[ev->choice];
        CHECK(ev->text != NULL && strlen(ev->text) == ev->text_len, "event text");
        if (*tl + ev->text_len < sizeof r->text[0]) {
            memcpy(r->text[ev->choice] + *tl, ev->text, ev->text_len);
            *tl += ev->text_len;
        }
        for (int32_t i = 0; i < ev->n_tokens && r->n_out[ev->choice] < MAX_OUT; i++) {
            r->lp[ev->choice][r->n_out[ev->choice]] = ev->tokens[i].logprob;
            r->out[ev->choice][r->n_out[ev->choice]++] = ev->tokens[i].token;
        }
        if (ev->finish != ENG_FINISH_NONE) {
            CHECK(r->fin[ev->choice] == ENG_FINISH_NONE, "two finishes for one choice");
            r->fin[ev->choice] = ev->finish;
        }
    }
    if (rc < 0) {
        eng_handle_usage(r->h, &r->usage);
        const struct eng_token_info *p = eng_handle_prompt_logprobs(r->h);
        if (p) {
            r->plp = malloc((size_t)r->n_prompt * sizeof *r->plp);
            memcpy(r->plp, p, (size_t)r->n_prompt * sizeof *r->plp);
        }
        return true;
    }
    return false;
}

/* run_all submits under eng_engine_hold: the engine sees every request at once, so two runs
 * of the same set make the same batches. */
static bool hold_submits;

/* Submits every request, reads them concurrently (one thread, woken by the engine), applies
 * the cancellation plan, releases every handle. */

static void run_all(struct eng_engine *e, struct req *rs, int n)
{
    char err[512];
    if (hold_submits)
        eng_engine_hold(e, true);
    for (int i = 0; i < n; i++) {
        rs[i].done = false;
        int rc = submit(e, &rs[i], err, sizeof err);
        CHECK(rc == 0, "submit %d: %d %s", i, rc, err);
        if (rc != 0) {
            rs[i].done = true;
            rs[i].h = NULL;
            continue;
        }
        if (rs[i].cancel_after == 0)
            eng_handle_cancel(rs[i].h);
        if (rs[i].release_early) {
            eng_handle_release(rs[i].h);
            rs[i].h = NULL;
            rs[i].done = true;
        }
    }
    if (hold_submits)
        eng_engine_hold(e, false);
    time_t t0 = time(NULL);
    for (;;) {
        pthread_mutex_lock(&W.mu);
        uint64_t seen = W.n;
        pthread_mutex_unlock(&W.mu);
        int left = 0;
        for (int i = 0; i < n; i++) {
            struct req *r = &rs[i];
            if (r->done)
                continue;
            if (drain_events(r)) {
                r->done = true;
                eng_handle_release(r->h);
                r->h = NULL;
                continue;
            }
            if (r->cancel_after > 0 && r->n_events >= r->cancel_after)
                eng_handle_cancel(r->h);
            left++;
        }
        if (!left)
            break;
        if (time(NULL) - t0 > 300) {
            CHECK(0, "requests did not finish within 300 s");
            break;
        }
        pthread_mutex_lock(&W.mu);
        if (W.n == seen) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&W.cv, &W.mu, &ts);
        }
        pthread_mutex_unlock(&W.mu);
    }
}

static void run_alone(struct eng_engine *e, struct req *rs, int n)
{
    for (int i = 0; i < n; i++)
        run_all(e, &rs[i], 1);
}

static struct eng_engine *make_engine_ex(const char *model, int64_t kv_bytes,
                                         int32_t max_batched, int32_t max_seqs, bool no_cache,
                                         bool long_from_start, bool host_sampling)
{
    char dir[4096], err[512];
    snprintf(dir, sizeof dir, "%s/models/%s", fixtures, model);
    struct eng_engine_options o;
    eng_engine_options_init(&o);
    o.model_dir = dir;
    o.device = device;
    o.n_threads = 2;
    o.kv_cache_bytes = kv_bytes;
    o.max_batched_tokens = max_batched;
    o.max_seqs = max_seqs;
    o.no_prefix_caching = no_cache;
    o.rope_long_from_start = long_from_start;
    o.host_sampling = host_sampling;
    struct eng_engine *e = NULL;
    int rc = eng_engine_create(&o, &e, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "engine %s: %d %s\n", model, rc, err);
        exit(1);
    }
    return e;
}

static struct eng_engine *make_engine(const char *model, int64_t kv_bytes, int32_t max_batched,
                                      int32_t max_seqs, bool no_cache, bool long_from_start)
{
    return make_engine_ex(model, kv_bytes, max_batched, max_seqs, no_cache, long_from_start,
                          false);
}

/* After every request ended, the engine must go idle with no block held. */
static void check_idle(struct eng_engine *e, const char *what)
{
    struct eng_metrics m;
    for (int i = 0; i < 200; i++) {
        eng_engine_get_metrics(e, &m);
        if (m.running == 0 && m.waiting == 0 && m.kv_blocks_used == 0)
            break;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    CHECK(m.running == 0 && m.waiting == 0 && m.kv_blocks_used == 0,
          "%s: not idle: running %d waiting %d blocks %lld", what, m.running, m.waiting,
          (long long)m.kv_blocks_used);
}

static bool same_tokens(const struct req *a, const struct req *b, int choice_a, int choice_b)
{
    return a->n_out[choice_a] == b->n_out[choice_b] &&
           memcmp(a->out[choice_a], b->out[choice_b], (size_t)a->n_out[choice_a] * sizeof(int32_t)) == 0;
}

static int64_t block_bytes_of(struct eng_engine *e)
{
    const struct eng_model_config *c = eng_engine_model_config(e);
    return (int64_t)eng_kv_cache_block_bytes(c->num_hidden_layers, c->num_key_value_heads, c->head_dim,
                                             16, KERN_DTYPE_F32);
}

/* ---- golden fixtures ---- */

struct gcase {
    char name[64];
    int32_t ids[128];
    int32_t n_ids;
    int32_t greedy[128];
    int32_t n_greedy;
    char long_rope[16];
};

static int load_golden(const char *model, struct gcase *gc, int max)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/models/%s/golden/golden.json", fixtures, model);
    char *text = tu_read_file(path, NULL);
    if (!text) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(1);
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases)
    {
        if (n == max)
            break;
        struct gcase *g = &gc[n++];
        memset(g, 0, sizeof *g);
        snprintf(g->name, sizeof g->name, "%s", cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring);
        const cJSON *v;
        cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(c, "input_ids"))
            g->ids[g->n_ids++] = (int32_t)v->valuedouble;
        cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(c, "greedy"))
            g->greedy[g->n_greedy++] = (int32_t)v->valuedouble;
        const cJSON *lr = cJSON_GetObjectItemCaseSensitive(c, "long_rope");
        if (cJSON_IsString(lr))
            snprintf(g->long_rope, sizeof g->long_rope, "%s", lr->valuestring);
    }
    cJSON_Delete(root);
    return n;
}

/* Golden cases + random prompts (at least 16 requests in all). */
static int build_mix(const char *model, struct gcase *gc, int n_gc, int32_t vocab, int32_t max_pos,
                     struct req *rs)
{
    int n = 0;
    for (int i = 0; i < n_gc; i++)
        req_init(&rs[n++], gc[i].ids, gc[i].n_ids, gc[i].n_greedy);
    while (n < 18) {
        req_random(&rs[n], vocab, max_pos / 3 < 90 ? max_pos / 3 : 90, 40);
        n++;
    }
    (void)model;
    return n;
}

static void test_golden_model(const char *model)
{
    static struct gcase gc[16];
    static struct req alone[32], batch[32], tight[32], tight_nc[32];
    int n_gc = load_golden(model, gc, 16);
    struct eng_engine *e = make_engine(model, 0, 0, 0, false, false);
    const struct eng_model_config *cfg = eng_engine_model_config(e);
    int n = build_mix(model, gc, n_gc, (int32_t)cfg->vocab_size, (int32_t)cfg->max_position_embeddings,
                      alone);
    int64_t bb = block_bytes_of(e);
    memcpy(batch, alone, sizeof alone);
    memcpy(tight, alone, sizeof alone);
    memcpy(tight_nc, alone, sizeof alone);
    run_alone(e, alone, n);
    check_idle(e, "alone");
    eng_engine_destroy(e);

    for (int i = 0; i < n_gc; i++)
        CHECK(alone[i].n_out[0] == gc[i].n_greedy &&
                  memcmp(alone[i].out[0], gc[i].greedy, (size_t)gc[i].n_greedy * sizeof(int32_t)) == 0,
              "%s/%s (%s): engine greedy differs from transformers", model, gc[i].name, gc[i].long_rope);
    for (int i = 0; i < n; i++)
        CHECK(alone[i].fin[0] == ENG_FINISH_LENGTH && alone[i].n_out[0] == alone[i].max_tokens,
              "%s req %d: finish %d after %d tokens", model, i, alone[i].fin[0], alone[i].n_out[0]);

    /* All at once, 16 tokens per step: chunked prefills interleave with decodes. */
    e = make_engine(model, 0, 16, 8, false, false);
    run_all(e, batch, n);
    check_idle(e, "batch");
    eng_engine_destroy(e);
    for (int i = 0; i < n; i++)
        CHECK(same_tokens(&alone[i], &batch[i], 0, 0), "%s req %d: batched output differs", model, i);

    /* A pool of 12 blocks (a sequence here needs up to 9): preemption by recompute. */
    for (int nc = 0; nc < 2; nc++) {
        struct req *t = nc ? tight_nc : tight;
        e = make_engine(model, 12 * bb, 32, 16, nc == 1, false);
        run_all(e, t, n);
        struct eng_metrics m;
        eng_engine_get_metrics(e, &m);
        CHECK(m.preemptions > 0, "%s: no preemption with a 12-block pool", model);
        CHECK(m.kv_blocks_total == 12, "pool size %lld", (long long)m.kv_blocks_total);
        check_idle(e, "tight");
        eng_engine_destroy(e);
        for (int i = 0; i < n; i++)
            CHECK(same_tokens(&alone[i], &t[i], 0, 0), "%s req %d: output differs under preemption%s",
                  model, i, nc ? " (no prefix cache)" : "");
        printf("%s: %d requests, preemptions %lld%s\n", model, n, (long long)m.preemptions,
               nc ? " (no prefix caching)" : "");
    }
}

/* The reference for rope_long_from_start: a plain greedy loop that recomputes the whole
 * sequence every step with the long factors (no cache reuse), straight on the forward pass. */
static void greedy_always_long(const int32_t *prompt, int32_t n_prompt, int32_t n_new, int32_t *out)
{
    char dir[4096], err[512];
    snprintf(dir, sizeof dir, "%s/models/longrope", fixtures);
    struct eng_model *m = NULL;
    if (eng_model_load(dir, &m, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    struct kern_ops ops;
    kern_ops_init_ref(&ops);
    const struct eng_model_config *c = &m->cfg;
    int32_t max_len = n_prompt + n_new;
    int32_t nb = (max_len + 15) / 16;
    struct eng_kv_cache *kv = NULL;
    if (eng_kv_cache_create(c->num_hidden_layers, c->num_key_value_heads, c->head_dim, 16, nb,
                            KERN_DTYPE_F32, &kv, err, sizeof err) != 0)
        exit(1);
    int32_t toks[512], pos[512], table[64];
    int64_t slots[512];
    for (int32_t i = 0; i < nb; i++)
        table[i] = nb - 1 - i; /* any table will do */
    memcpy(toks, prompt, (size_t)n_prompt * sizeof *toks);
    struct eng_phi3_ws ws = {0};
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    int32_t n = n_prompt;
    for (int32_t s = 0; s < n_new; s++) {
        for (int32_t p = 0; p < n; p++) {
            pos[p] = p;
            slots[p] = (int64_t)table[p / 16] * 16 + p % 16;
        }
        int32_t q_start = 0, q_len = n, ctx_len = n, row = n - 1;
        uint8_t var = ENG_ROPE_LONG;
        struct eng_batch b = {
            .n_tokens = n, .token_ids = toks, .positions = pos, .slot_mapping = slots, .n_seqs = 1,
            .q_start = &q_start, .q_len = &q_len, .ctx_len = &ctx_len, .block_tables = table,
            .max_blocks = nb, .rope_variant = &var, .n_logit_rows = 1, .logit_rows = &row,
        };
        if (eng_phi3_forward(m, &ops, NULL, kv, &b, &ws, logits, NULL) != 0)
            exit(1);
        int32_t best = 0;
        for (int64_t v = 1; v < c->vocab_size; v++)
            if (logits[v] > logits[best])
                best = (int32_t)v;
        out[s] = best;
        toks[n++] = best;
    }
    free(logits);
    eng_phi3_ws_free(&ws);
    eng_kv_cache_destroy(kv);
    eng_model_destroy(m);
}

static void test_longrope_from_start(void)
{
    static struct gcase gc[16];
    static struct req rs[16];
    int n_gc = load_golden("longrope", gc, 16);
    struct eng_engine *e = make_engine("longrope", 0, 16, 8, false, true);
    for (int i = 0; i < n_gc; i++)
        req_init(&rs[i], gc[i].ids, gc[i].n_ids, gc[i].n_greedy);
    run_all(e, rs, n_gc);
    check_idle(e, "long_from_start");
    eng_engine_destroy(e);
    int n_differ = 0;
    for (int i = 0; i < n_gc; i++) {
        const struct gcase *g = &gc[i];
        bool matches_hf = rs[i].n_out[0] == g->n_greedy &&
                          memcmp(rs[i].out[0], g->greedy, (size_t)g->n_greedy * sizeof(int32_t)) == 0;
        if (g->n_ids + g->n_greedy - 1 <= 32 || g->n_ids > 32) {
            /* Never crosses original_max (short7: its last forward holds exactly 32 tokens), or
             * long from the prompt: identical to transformers. */
            CHECK(matches_hf, "long_from_start %s: should equal transformers", g->name);
        } else {
            int32_t ref[128];
            greedy_always_long(g->ids, g->n_ids, g->n_greedy, ref);
            CHECK(rs[i].n_out[0] == g->n_greedy &&
                      memcmp(rs[i].out[0], ref, (size_t)g->n_greedy * sizeof(int32_t)) == 0,
                  "long_from_start %s: differs from an always-long greedy loop", g->name);
            n_differ += !matches_hf;
        }
    }
    /* The mode must really change something for at least one switch case. */
    CHECK(n_differ > 0, "long_from_start gave transformers' (short-then-long) output everywhere");
    printf("longrope from start: %d switch cases differ from transformers' default mode\n", n_differ);
}

/* ---- unit group ---- */

static void test_prefix_caching(void)
{
    static struct req a[16], ref[16];
    int32_t P[64];
    for (int i = 0; i < 64; i++)
        P[i] = 5 + (int32_t)rnd(500);
    int32_t p[80];
    int n = 0;
    for (int k = 0; k < 10; k++) {
        memcpy(p, P, sizeof P);
        int32_t extra = 3 + k;
        for (int j = 0; j < extra; j++)
            p[64 + j] = 5 + (int32_t)rnd(500);
        req_init(&a[n++], p, 64 + extra, 12 + k);
    }
    memcpy(ref, a, sizeof a);
    struct eng_engine *e = make_engine("mha-window", 0, 0, 0, true, false);
    run_alone(e, ref, n);
    eng_engine_destroy(e);

    /* Sequentially: the second request and later find the 64-token prefix (4 blocks). */
    e = make_engine("mha-window", 0, 0, 0, false, false);
    run_alone(e, a, 2);
    CHECK(a[0].usage.cached_tokens == 0, "first request cached %d", a[0].usage.cached_tokens);
    CHECK(a[1].usage.cached_tokens == 64, "second request cached %d (want 64)", a[1].usage.cached_tokens);
    CHECK(a[1].usage.prompt_tokens == a[1].n_prompt, "prompt_tokens");
    CHECK(same_tokens(&a[0], &ref[0], 0, 0) && same_tokens(&a[1], &ref[1], 0, 0),
          "prefix-cached output differs");
    struct eng_metrics m;
    eng_engine_get_metrics(e, &m);
    CHECK(m.prefix_cache_hits == 64 && m.prefix_cache_queries == a[0].n_prompt + a[1].n_prompt,
          "metrics hits %lld queries %lld", (long long)m.prefix_cache_hits,
          (long long)m.prefix_cache_queries);
    /* Prompt logprobs bypass hits (they need every row). */
    struct req lp;
    memcpy(&lp, &a[1], sizeof lp);
    lp.plp = NULL;
    req_reset(&lp);
    lp.prompt_logprobs = true;
    run_all(e, &lp, 1);
    CHECK(lp.usage.cached_tokens == 0 && lp.plp != NULL, "prompt-logprob request used the cache");
    CHECK(same_tokens(&lp, &ref[1], 0, 0), "prompt-logprob request output differs");
    free(lp.plp);
    check_idle(e, "prefix");
    eng_engine_destroy(e);

    /* Under pressure (10 blocks, sequences need up to 6): evictions, preemptions, same output. */
    e = make_engine("mha-window", 0, 0, 0, false, false);
    int64_t bb = block_bytes_of(e);
    eng_engine_destroy(e);
    e = make_engine("mha-window", 10 * bb, 24, 16, false, false);
    for (int i = 0; i < n; i++) {
        req_reset(&a[i]);
        memcpy(&a[i], &ref[i], offsetof(struct req, out));
    }
    run_all(e, a, n);
    eng_engine_get_metrics(e, &m);
    CHECK(m.prefix_cache_hits > 0, "no prefix hits under pressure");
    check_idle(e, "prefix pressure");
    eng_engine_destroy(e);
    for (int i = 0; i < n; i++)
        CHECK(same_tokens(&a[i], &ref[i], 0, 0), "req %d: output differs with eviction", i);
    printf("prefix cache under pressure: hits %lld of %lld prompt tokens, preemptions %lld\n",
           (long long)m.prefix_cache_hits, (long long)m.prefix_cache_queries,
           (long long)m.preemptions);
}

static void test_n_and_seeds(void)
{
    static struct req r1, rn, seeded_alone, busy[16];
    int32_t p[200];
    for (int i = 0; i < 200; i++)
        p[i] = 5 + (int32_t)rnd(500);
    req_init(&r1, p, 200, 24);
    req_init(&rn, p, 200, 24);
    rn.n = 4;
    struct eng_engine *e = make_engine("mha-window", 0, 0, 0, false, false);
    run_all(e, &r1, 1);
    check_idle(e, "n=1");
    eng_engine_destroy(e);
    e = make_engine("mha-window", 0, 0, 0, true, false);
    pthread_mutex_lock(&W.mu);
    W.watch = e;
    W.max_used = 0;
    pthread_mutex_unlock(&W.mu);
    run_all(e, &rn, 1);
    pthread_mutex_lock(&W.mu);
    W.watch = NULL;
    int64_t max_used = W.max_used;
    pthread_mutex_unlock(&W.mu);
    check_idle(e, "n=4");
    eng_engine_destroy(e);
    /* 200 prompt tokens: 12 full blocks shared by the four choices, then two private blocks
     * each (the copied partial one, and one more as they reach 223 tokens): at most 20 blocks;
     * without sharing it would be 56. */
    CHECK(max_used > 0 && max_used <= 20, "n=4 used up to %lld blocks", (long long)max_used);
    for (int c = 0; c < 4; c++)
        CHECK(same_tokens(&rn, &r1, c, 0) && rn.fin[c] == ENG_FINISH_LENGTH,
              "greedy choice %d differs from n=1", c);
    CHECK(rn.usage.completion_tokens == 4 * 24, "completion tokens %d", rn.usage.completion_tokens);
    printf("n=4: at most %lld blocks in use\n", (long long)max_used);

    /* Seeded sampling: same tokens alone and in a busy batch; choices differ (seed + i). */
    /* A 17-token prompt: the shared partial block has 15 free slots the choices write into. */
    req_init(&seeded_alone, p, 17, 30);
    seeded_alone.n = 2;
    seeded_alone.temperature = 4.0f;
    seeded_alone.seeded = true;
    seeded_alone.seed = 1234;
    e = make_engine("mha-window", 0, 0, 0, false, false);
    run_all(e, &seeded_alone, 1);
    int nb = 12;
    for (int i = 0; i < nb; i++) {
        req_random(&busy[i], 512, 60, 30);
        busy[i].temperature = i % 2 ? 1.5f : 0.0f;
    }
    req_reset(&busy[nb]);
    memcpy(&busy[nb], &seeded_alone, offsetof(struct req, out));
    nb++;
    run_all(e, busy, nb);
    check_idle(e, "seeded");
    eng_engine_destroy(e);
    for (int c = 0; c < 2; c++)
        CHECK(same_tokens(&seeded_alone, &busy[nb - 1], c, c), "seeded choice %d differs in a batch", c);
    CHECK(!same_tokens(&seeded_alone, &seeded_alone, 0, 1), "choices 0 and 1 drew the same tokens");
    /* Choice i is the request with seed + i and n = 1 (so the shared prompt blocks, copied on
     * write, gave each choice exactly its own context). */
    static struct req single[2];
    e = make_engine("mha-window", 0, 0, 0, false, false);
    for (int c = 0; c < 2; c++) {
        memcpy(&single[c], &seeded_alone, offsetof(struct req, out));
        single[c].n = 1;
        single[c].seed = 1234 + c;
    }
    run_all(e, single, 2);
    check_idle(e, "seed + i");
    eng_engine_destroy(e);
    for (int c = 0; c < 2; c++)
        CHECK(same_tokens(&seeded_alone, &single[c], c, 0), "choice %d differs from n=1 with seed + %d", c, c);
}

/* eng_engine_hold: nothing is computed while held (whatever the timing), all of it after. */
static void test_hold(void)
{
    static struct req r;
    struct eng_engine *e = make_engine("mha-window", 0, 64, 8, false, false);
    char err[512];
    req_random(&r, 512, 20, 1);
    r.max_tokens = 5;
    eng_engine_hold(e, true);
    CHECK(submit(e, &r, err, sizeof err) == 0, "submit: %s", err);
    struct timespec nap = {0, 200 * 1000000};
    nanosleep(&nap, NULL);
    const struct eng_event *ev;
    struct eng_metrics m;
    eng_engine_get_metrics(e, &m);
    CHECK(eng_handle_next(r.h, &ev) == 0 && m.prompt_tokens_total == 0,
          "an event or %lld prompt tokens while held", (long long)m.prompt_tokens_total);
    eng_engine_hold(e, false);
    while (!drain_events(&r))
        eng_handle_wait(r.h);
    CHECK(r.fin[0] == ENG_FINISH_LENGTH && r.n_out[0] == 5, "after the hold: finish %d, %d tokens",
          r.fin[0], r.n_out[0]);
    eng_handle_release(r.h);
    check_idle(e, "hold");
    eng_engine_destroy(e);
}

static void test_cancel_storm(void)
{
    static struct req rs[64];
    struct eng_engine *e = make_engine("mha-window", 0, 64, 32, false, false);
    int n_cancel = 0;
    for (int i = 0; i < 64; i++) {
        req_random(&rs[i], 512, 100, 1);
        rs[i].max_tokens = 30 + (int32_t)rnd(30);
        if (i % 2 == 1) {
            rs[i].cancel_after = (int)rnd(8);
            n_cancel++;
        }
        if (i % 16 == 3)
            rs[i].release_early = true;
    }
    run_all(e, rs, 64);
    int n_abort = 0;
    for (int i = 0; i < 64; i++) {
        if (rs[i].release_early)
            continue;
        if (rs[i].cancel_after >= 0) {
            CHECK(rs[i].fin[0] == ENG_FINISH_ABORT || rs[i].fin[0] == ENG_FINISH_LENGTH,
                  "cancelled req %d finished %d", i, rs[i].fin[0]);
            n_abort += rs[i].fin[0] == ENG_FINISH_ABORT;
        } else {
            CHECK(rs[i].fin[0] == ENG_FINISH_LENGTH && rs[i].n_out[0] == rs[i].max_tokens,
                  "req %d: finish %d after %d tokens", i, rs[i].fin[0], rs[i].n_out[0]);
        }
    }
    CHECK(n_abort > 0, "no request was aborted");
    check_idle(e, "cancel storm");
    eng_engine_destroy(e);
    printf("cancel storm: %d of %d cancelled requests aborted\n", n_abort, n_cancel);
}

static void test_limits(void)
{
    char err[512];
    struct eng_engine *e = make_engine("mha-window", 0, 0, 1, false, false);
    static struct req a, b, c, d, x;
    int32_t p[600];
    for (int i = 0; i < 600; i++)
        p[i] = 5 + i % 500;
    /* Context: 500 + 20 > 512. */
    req_init(&x, p, 500, 20);
    int rc = submit(e, &x, err, sizeof err);
    CHECK(rc == ENG_ERR_CONTEXT && strstr(err, "maximum context length is 512 tokens") &&
              strstr(err, "520 tokens (500 in the messages, 20 in the completion)"),
          "context: %d %s", rc, err);
    req_init(&x, p, 512, 0);
    CHECK(submit(e, &x, err, sizeof err) == ENG_ERR_CONTEXT, "512-token prompt, no room");
    /* Invalid ids and n. */
    req_init(&x, p, 5, 5);
    x.prompt[2] = 512;
    CHECK(submit(e, &x, err, sizeof err) == ENG_ERR_INVALID, "token out of vocabulary");
    req_init(&x, p, 5, 5);
    x.n = 0;
    CHECK(submit(e, &x, err, sizeof err) == ENG_ERR_INVALID, "n = 0");

    /* max_tokens <= 0 runs to the end of the context. */
    req_init(&x, p, 500, 0);
    run_all(e, &x, 1);
    CHECK(x.n_out[0] == 12 && x.fin[0] == ENG_FINISH_LENGTH, "to context end: %d tokens, finish %d",
          x.n_out[0], x.fin[0]);
    /* A stop token id ends the choice with STOP, the stop token included in its tokens. */
    req_init(&x, p, 20, 40);
    run_all(e, &x, 1);
    int32_t stop = x.out[0][5];
    int first = 0;
    while (x.out[0][first] != stop)
        first++;
    req_init(&x, p, 20, 40);
    x.stop_id = stop;
    run_all(e, &x, 1);
    CHECK(x.fin[0] == ENG_FINISH_STOP && x.n_out[0] == first + 1, "stop id: finish %d after %d (want %d)",
          x.fin[0], x.n_out[0], first + 1);

    /* Queue full: max_seqs 1, one request running to the end of the context, the waiting
     * queue (1024 by default is too large; this engine has max_waiting 2) fills. */
    eng_engine_destroy(e);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/models/mha-window", fixtures);
    struct eng_engine_options o;
    eng_engine_options_init(&o);
    o.model_dir = dir;
    o.device = device;
    o.n_threads = 1;
    o.max_seqs = 1;
    o.max_waiting = 2;
    CHECK(eng_engine_create(&o, &e, err, sizeof err) == 0, "create: %s", err);
    /* The wake callback of a parks the engine thread between two steps, so b and c stay
     * queued, deterministically. */
    req_init(&a, p, 10, 0);
    pthread_mutex_lock(&W.mu);
    W.gate = &a;
    W.parked = W.open = false;
    pthread_mutex_unlock(&W.mu);
    CHECK(submit(e, &a, err, sizeof err) == 0, "a");
    pthread_mutex_lock(&W.mu);
    while (!W.parked)
        pthread_cond_wait(&W.cv, &W.mu);
    pthread_mutex_unlock(&W.mu);
    req_init(&b, p, 10, 5);
    req_init(&c, p, 11, 5);
    req_init(&d, p, 12, 5);
    rc = submit(e, &b, err, sizeof err);
    CHECK(rc == 0, "b: %d %s", rc, err);
    rc = submit(e, &c, err, sizeof err);
    CHECK(rc == 0, "c: %d %s", rc, err);
    rc = submit(e, &d, err, sizeof err);
    CHECK(rc == ENG_ERR_QUEUE_FULL && strstr(err, "limit 2"), "queue full: %d %s", rc, err);
    struct eng_metrics m;
    eng_engine_get_metrics(e, &m);
    CHECK(m.waiting == 2, "metrics waiting %d", m.waiting);
    eng_engine_drain(e);
    rc = submit(e, &d, err, sizeof err);
    CHECK(rc == ENG_ERR_DRAINING, "draining: %d", rc);
    eng_handle_cancel(a.h); /* before the engine resumes: a ends with ABORT, not LENGTH */
    pthread_mutex_lock(&W.mu);
    W.open = true;
    W.gate = NULL;
    pthread_cond_broadcast(&W.cv);
    pthread_mutex_unlock(&W.mu);
    struct req *left[3] = {&a, &b, &c};
    for (int i = 0; i < 3; i++) {
        while (!drain_events(left[i]))
            eng_handle_wait(left[i]->h);
        eng_handle_release(left[i]->h);
    }
    CHECK(a.fin[0] == ENG_FINISH_ABORT, "a aborted: %d", a.fin[0]);
    CHECK(b.fin[0] == ENG_FINISH_LENGTH && c.fin[0] == ENG_FINISH_LENGTH, "b, c ran after draining");
    check_idle(e, "limits");
    eng_engine_destroy(e);
}

/* Prompt logprobs against transformers' prompt logits (log-softmax of the golden rows). */
/* int8_activations reaches the model: the prompt logprobs of a q8_0 engine move when it is
 * "on" (tests/engine/test_model_quant.c bounds by how much), and stay finite; "auto" is "on"
 * for the quantized model on the cpu device (the same bits) and "off" elsewhere, and leaves a
 * float model alone. "on" without Q8_0/Q4_0/K-quant matrices, "on" with device cuda and an
 * unknown word fail creation saying why. */
static void test_int8_activations(void)
{
    char dir[4096], err[512] = "";
    snprintf(dir, sizeof dir, "%s/models/mha-window", fixtures);
    struct eng_engine_options o;
    eng_engine_options_init(&o);
    o.model_dir = dir;
    o.device = "cuda"; /* refused before anything loads: no GPU needed */
    o.quantization = "q8_0";
    o.int8_activations = "on";
    struct eng_engine *e = NULL;
    int rc = eng_engine_create(&o, &e, err, sizeof err);
    CHECK(rc == ENG_ERR_INVALID && strstr(err, "--int8-activations") && strstr(err, "cpu and ref"),
          "cuda: %d %s", rc, err);
    o.device = device;
    o.quantization = NULL;
    rc = eng_engine_create(&o, &e, err, sizeof err);
    CHECK(rc == ENG_ERR_LOAD && strstr(err, "int8 activations need Q8_0, Q4_0, Q4_K, Q5_K or Q6_K"),
          "float model: %d %s", rc, err);
    o.int8_activations = "sometimes";
    rc = eng_engine_create(&o, &e, err, sizeof err);
    CHECK(rc == ENG_ERR_INVALID && strstr(err, "int8_activations 'sometimes'"), "word: %d %s", rc,
          err);
    o.int8_activations = "auto"; /* a float model: nothing to multiply in int8, no error */
    rc = eng_engine_create(&o, &e, err, sizeof err);
    CHECK(rc == 0, "auto, float model: %d %s", rc, err);
    if (rc == 0)
        eng_engine_destroy(e);
    int32_t p[40];
    for (int i = 0; i < 40; i++)
        p[i] = 5 + (i * 131) % 500;
    static struct req r[3];
    static const char *const modes[3] = {"off", "on", "auto"};
    for (int v = 0; v < 3; v++) {
        o.quantization = "q8_0";
        o.int8_activations = modes[v];
        o.n_threads = 2;
        rc = eng_engine_create(&o, &e, err, sizeof err);
        CHECK(rc == 0, "q8_0 int8 %s: %d %s", modes[v], rc, err);
        if (rc != 0)
            return;
        req_init(&r[v], p, 40, 1);
        r[v].prompt_logprobs = true;
        run_all(e, &r[v], 1);
        eng_engine_destroy(e);
    }
    CHECK(r[0].plp && r[1].plp, "no prompt logprobs");
    if (r[0].plp && r[1].plp) {
        int moved = 0, finite = 1;
        for (int i = 1; i < 40; i++) {
            moved += r[0].plp[i].logprob != r[1].plp[i].logprob;
            finite = finite && isfinite(r[1].plp[i].logprob);
        }
        CHECK(moved > 0 && finite, "int8: %d of 39 prompt logprobs moved, finite %d", moved, finite);
    }
    /* auto: the on run's bits on the cpu device, the off run's on ref */
    const struct req *same = &r[strcmp(device, "cpu") == 0 ? 1 : 0];
    CHECK(r[2].plp && same->plp, "auto: no prompt logprobs");
    for (int i = 1; r[2].plp && same->plp && i < 40; i++)
        if (r[2].plp[i].logprob != same->plp[i].logprob) {
            CHECK(0, "auto on %s: prompt logprob %d is %.9g, want %.9g", device, i,
                  (double)r[2].plp[i].logprob, (double)same->plp[i].logprob);
            break;
        }
    for (int v = 0; v < 3; v++)
        req_reset(&r[v]);
}

static void test_prompt_logprobs(void)
{
    static struct gcase gc[16];
    int n_gc = load_golden("mha-window", gc, 16);
    const struct gcase *g = NULL;
    for (int i = 0; i < n_gc; i++)
        if (strcmp(gc[i].name, "len40") == 0)
            g = &gc[i];
    CHECK(g != NULL, "case len40");
    if (!g)
        return;
    char path[4096];
    snprintf(path, sizeof path, "%s/models/mha-window/golden/len40.f32", fixtures);
    float *lg = (float *)tu_read_file(path, NULL);
    CHECK(lg != NULL, "read %s", path);
    if (!lg)
        return;
    static struct req r;
    req_init(&r, g->ids, g->n_ids, 3);
    r.prompt_logprobs = true;
    struct eng_engine *e = make_engine("mha-window", 0, 16, 0, false, false);
    run_all(e, &r, 1);
    eng_engine_destroy(e);
    CHECK(r.plp != NULL, "no prompt logprobs");
    if (r.plp) {
        CHECK(r.plp[0].token == g->ids[0] && r.plp[0].n_top == 0, "first prompt entry");
        for (int32_t p = 1; p < g->n_ids; p++) {
            const float *row = lg + (size_t)(p - 1) * 512;
            float mx = row[0], amax = 0;
            int32_t best = 0;
            for (int v = 0; v < 512; v++) {
                if (row[v] > mx) {
                    mx = row[v];
                    best = v;
                }
                if (fabsf(row[v]) > amax)
                    amax = fabsf(row[v]);
            }
            double sum = 0;
            for (int v = 0; v < 512; v++)
                sum += exp((double)row[v] - mx);
            double want = (double)row[g->ids[p]] - mx - log(sum);
            /* The golden test's logit tolerance (1e-4 of the row's magnitude), twice: once for
             * the logit, once through the normaliser. */
            CHECK(fabs(r.plp[p].logprob - want) <= 2e-4 * amax, "prompt logprob %d: %g vs %g", p,
                  (double)r.plp[p].logprob, want);
            CHECK(r.plp[p].token == g->ids[p] && r.plp[p].n_top == 3 && r.plp[p].top[0].token == best,
                  "prompt top %d", p);
        }
        free(r.plp);
    }
    free(lg);
}

/* Text through the tokenizer model: deltas concatenate to the detokenizer contract's text,
 * stop strings cut it (with and without the stop string), a stop id's text is left out. */
static void test_text(void)
{
    struct eng_engine *e = make_engine("phi3-demo", 0, 0, 0, false, false);
    const struct eng_tokenizer *tok = eng_engine_tokenizer(e);
    CHECK(tok != NULL, "phi3-demo has a tokenizer");
    if (!tok) {
        eng_engine_destroy(e);
        return;
    }
    const char *prompt = "The capital of France is";
    int32_t *ids = NULL;
    size_t n_ids = 0;
    CHECK(eng_tokenizer_encode(tok, prompt, strlen(prompt), 1, &ids, &n_ids) == 0, "encode");
    static struct req r, s1, s2, s3;
    req_init(&r, ids, (int32_t)n_ids, 24);
    run_all(e, &r, 1);
    /* Expected: decode(tail ++ generated) minus decode(tail), tail = the last 6 prompt ids. */
    int32_t all[64];
    size_t tail = n_ids < 6 ? n_ids : 6;
    memcpy(all, ids + n_ids - tail, tail * sizeof *all);
    memcpy(all + tail, r.out[0], (size_t)r.n_out[0] * sizeof *all);
    char *t_ctx = NULL, *t_all = NULL;
    size_t l_ctx = 0, l_all = 0;
    eng_tokenizer_decode(tok, all, tail, 1, &t_ctx, &l_ctx);
    eng_tokenizer_decode(tok, all, tail + (size_t)r.n_out[0], 1, &t_all, &l_all);
    CHECK(t_ctx && t_all && l_all >= l_ctx && r.text_len[0] == l_all - l_ctx &&
              memcmp(r.text[0], t_all + l_ctx, l_all - l_ctx) == 0,
          "streamed text [%.*s] != [%s]", (int)r.text_len[0], r.text[0], t_all ? t_all + l_ctx : "");
    printf("phi3-demo text: [%.*s]\n", (int)r.text_len[0], r.text[0]);
    /* A stop string from the middle of that text (3 bytes at a third of it, ASCII-safe or not:
     * the matcher works on bytes). */
    size_t at = r.text_len[0] / 3;
    char stop[4] = {0};
    if (r.text_len[0] >= 6) {
        memcpy(stop, r.text[0] + at, 3);
        const char *first = strstr(r.text[0], stop);
        size_t cut = (size_t)(first - r.text[0]);
        req_init(&s1, ids, (int32_t)n_ids, 24);
        s1.stop[0] = stop;
        s1.n_stop = 1;
        memcpy(&s2, &s1, sizeof s2);
        s2.include_stop = true;
        run_all(e, &s1, 1);
        run_all(e, &s2, 1);
        CHECK(s1.fin[0] == ENG_FINISH_STOP && s1.text_len[0] == cut && memcmp(s1.text[0], r.text[0], cut) == 0,
              "stop string: [%.*s] finish %d", (int)s1.text_len[0], s1.text[0], s1.fin[0]);
        CHECK(s2.fin[0] == ENG_FINISH_STOP && s2.text_len[0] == cut + 3 &&
                  memcmp(s2.text[0], r.text[0], cut + 3) == 0,
              "stop string included: [%.*s]", (int)s2.text_len[0], s2.text[0]);
    }
    /* Stop on the id of the 4th token: its text is not in the output. */
    req_init(&s3, ids, (int32_t)n_ids, 24);
    s3.stop_id = r.out[0][3];
    run_all(e, &s3, 1);
    int k = 0;
    while (r.out[0][k] != s3.stop_id)
        k++;
    char *t_k = NULL;
    size_t l_k = 0;
    eng_tokenizer_decode(tok, all, tail + (size_t)k, 1, &t_k, &l_k);
    CHECK(s3.fin[0] == ENG_FINISH_STOP && t_k && s3.text_len[0] == l_k - l_ctx &&
              memcmp(s3.text[0], t_k + l_ctx, l_k - l_ctx) == 0,
          "stop id: [%.*s]", (int)s3.text_len[0], s3.text[0]);
    free(t_k);
    free(t_ctx);
    free(t_all);
    free(ids);
    check_idle(e, "text");
    eng_engine_destroy(e);
}

/* Token rows (a row that comes back as its token instead of its logits): a batch mixing plain
 * greedy requests, greedy with logprobs, seeded sampling, penalties, min_tokens, n = 2 and
 * prompt logprobs gives every request the same tokens (and logprobs) as with host sampling,
 * the golden greedy continuations where there are some, and exactly the expected number of
 * token rows. On a host backend those are the argmax rows: every token of a plain greedy
 * choice except the first of a forked or prompt-logprob request and those under a min_tokens
 * ban. On a device backend every token is drawn there (the sample op), logprobs included,
 * the choices of a forked request from their shared first row, and the prompt logprobs come
 * back as logprobs only. */
static void test_token_rows(void)
{
    bool on_device = strcmp(device, "cuda") == 0;
    static struct gcase gc[16];
    static struct req on[24], off[24];
    int n_gc = load_golden("mha-window", gc, 16);
    int n = 0;
    int64_t want_rows = 0;
    for (int i = 0; i < n_gc; i++) { /* plain greedy: every token */
        req_init(&on[n++], gc[i].ids, gc[i].n_ids, gc[i].n_greedy);
        want_rows += gc[i].n_greedy;
    }
    int first_extra = n;
    for (int i = 0; i < 2; i++) { /* greedy + logprobs: never */
        req_init(&on[n], gc[i + 3].ids, gc[i + 3].n_ids, gc[i + 3].n_greedy);
        on[n++].logprobs = true;
    }
    for (int i = 0; i < 3; i++) { /* seeded sampling (one with logprobs): never */
        req_random(&on[n], 512, 50, 30);
        on[n].temperature = 0.8f + 0.4f * (float)i;
        on[n].seeded = true;
        on[n].seed = 77 + i;
        on[n++].logprobs = i == 1;
    }
    req_init(&on[n], gc[5].ids, gc[5].n_ids, 30); /* greedy with a presence penalty: never */
    on[n++].presence = 0.7f;
    req_init(&on[n], gc[2].ids, gc[2].n_ids, 30); /* greedy, repetition penalty: never */
    on[n++].repetition = 1.3f;
    req_init(&on[n], gc[1].ids, gc[1].n_ids, 30); /* greedy, min_tokens 6 bans eos: after 6 */
    on[n].min_tokens = 6;
    want_rows += on[n++].max_tokens - 6;
    req_init(&on[n], gc[4].ids, gc[4].n_ids, 20); /* greedy n = 2: after the shared first row */
    on[n].n = 2;
    want_rows += 2 * (on[n++].max_tokens - 1);
    req_init(&on[n], gc[6].ids, gc[6].n_ids, 20); /* greedy with prompt logprobs: after the
                                                     first token (a prompt-logprob row) */
    on[n].prompt_logprobs = true;
    want_rows += on[n++].max_tokens - 1;
    memcpy(off, on, sizeof on);

    struct eng_metrics m_on, m_off;
    hold_submits = true; /* the two runs batch alike: their logprobs compare within 1e-4 */
    struct eng_engine *e = make_engine_ex("mha-window", 0, 16, 8, false, false, false);
    run_all(e, on, n);
    check_idle(e, "token rows on");
    eng_engine_get_metrics(e, &m_on);
    eng_engine_destroy(e);
    e = make_engine_ex("mha-window", 0, 16, 8, false, false, true);
    run_all(e, off, n);
    hold_submits = false;
    check_idle(e, "host sampling");
    eng_engine_get_metrics(e, &m_off);
    eng_engine_destroy(e);

    int64_t want_sampled = 0;
    for (int i = 0; i < n; i++) /* every token of every choice */
        for (int c = 0; c < on[i].n; c++)
            want_sampled += on[i].n_out[c];
    if (on_device) {
        want_rows = 0;
    } else {
        want_sampled = 0;
    }
    CHECK(m_on.argmax_rows_total == want_rows, "%lld rows came back as an argmax, want %lld",
          (long long)m_on.argmax_rows_total, (long long)want_rows);
    CHECK(m_on.sampled_rows_total == want_sampled,
          "%lld rows were drawn by the backend, want %lld", (long long)m_on.sampled_rows_total,
          (long long)want_sampled);
    /* The hold made both runs batch alike: on the device, as many decode steps replayed as
     * many graphs. */
    CHECK(m_on.graph_replays_total == m_off.graph_replays_total &&
              m_on.graph_records_total == m_off.graph_records_total,
          "%lld graph replays (%lld records) with token rows, %lld (%lld) without",
          (long long)m_on.graph_replays_total, (long long)m_on.graph_records_total,
          (long long)m_off.graph_replays_total, (long long)m_off.graph_records_total);
    CHECK(m_off.argmax_rows_total == 0 && m_off.sampled_rows_total == 0,
          "%lld argmax rows and %lld drawn rows with host sampling",
          (long long)m_off.argmax_rows_total, (long long)m_off.sampled_rows_total);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < on[i].n; c++) {
            CHECK(same_tokens(&on[i], &off[i], c, c) && on[i].fin[c] == ENG_FINISH_LENGTH &&
                      off[i].fin[c] == ENG_FINISH_LENGTH,
                  "request %d choice %d: %d tokens (finish %d) with token rows, %d (finish %d) "
                  "without",
                  i, c, on[i].n_out[c], on[i].fin[c], off[i].n_out[c], off[i].fin[c]);
            /* Logprobs still come with the tokens that asked for them. Both runs submitted
             * under a hold make the same batches, so the logits are the same bits; only the
             * logprob arithmetic (device or host) differs in its last bits. Without the hold,
             * when the engine thread picks the requests up decides which share a step, and on
             * the device (bf16 KV cache) a one-ulp difference of batch shape can flip a cached
             * value's bf16 rounding: 0.036 was seen once. */
            for (int32_t t = 0; on[i].logprobs && t < on[i].n_out[c] && t < off[i].n_out[c]; t++)
                CHECK(on[i].lp[c][t] <= 0.0f && fabsf(on[i].lp[c][t] - off[i].lp[c][t]) <= 1e-4f,
                      "request %d token %d: logprob %g with token rows, %g without", i, t,
                      (double)on[i].lp[c][t], (double)off[i].lp[c][t]);
        }
    /* The prompt logprobs: on a device they come back as the rows' logprobs alone. */
    for (int i = 0; i < n; i++) {
        if (!on[i].prompt_logprobs)
            continue;
        CHECK(on[i].plp && off[i].plp, "request %d: no prompt logprobs", i);
        for (int32_t p = 1; on[i].plp && off[i].plp && p < on[i].n_prompt; p++) {
            const struct eng_token_info *a = &on[i].plp[p], *b = &off[i].plp[p];
            bool same = a->token == b->token && a->n_top == b->n_top && a->n_top == 3 &&
                        fabsf(a->logprob - b->logprob) <= 1e-4f;
            for (int32_t t = 0; same && t < a->n_top; t++)
                same = a->top[t].token == b->top[t].token &&
                       fabsf(a->top[t].logprob - b->top[t].logprob) <= 1e-4f;
            CHECK(same, "request %d prompt token %d: logprob %g (top %d) with token rows, %g (top "
                  "%d) without", i, p, (double)a->logprob, a->top[0].token, (double)b->logprob,
                  b->top[0].token);
        }
    }
    for (int i = 0; i < first_extra + 2; i++) { /* plain greedy, then greedy + logprobs */
        const struct gcase *g = &gc[i < first_extra ? i : i - first_extra + 3];
        CHECK(on[i].n_out[0] == g->n_greedy &&
                  memcmp(on[i].out[0], g->greedy, (size_t)g->n_greedy * sizeof(int32_t)) == 0,
              "request %d (%s): greedy differs from transformers", i, g->name);
    }
    for (int c = 0; c < 2; c++) /* the n = 2 choices are both the greedy continuation */
        CHECK(memcmp(on[n - 2].out[c], gc[4].greedy, 20 * sizeof(int32_t)) == 0,
              "n = 2 choice %d differs from the golden greedy", c);
    for (int i = 0; i < n; i++) {
        req_reset(&on[i]);
        req_reset(&off[i]);
    }
    printf("token rows of the mixed batch on %s: %lld argmax, %lld drawn by the backend; %lld "
           "graph replays in each run\n", device, (long long)m_on.argmax_rows_total,
           (long long)m_on.sampled_rows_total, (long long)m_on.graph_replays_total);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s FIXTURES_DIR unit|golden|token-rows [ref|cpu|cuda]\n",
                argv[0]);
        return 2;
    }
    fixtures = argv[1];
    if (argc > 3)
        device = argv[3];
    bool unit = strcmp(argv[2], "unit") == 0;
    if (strcmp(argv[2], "token-rows") == 0) {
        if (strcmp(device, "cuda") == 0 && kern_cuda_device_count() == 0) {
            printf("no CUDA device: skipped\n");
            return 77;
        }
        test_token_rows();
        return tu_finish("test_engine token-rows");
    }
    if (unit) {
        test_limits();
        test_text();
        test_prompt_logprobs();
        test_int8_activations();
        test_prefix_caching();
        test_n_and_seeds();
        test_cancel_storm();
        test_hold();
        test_token_rows();
    } else {
        test_golden_model("mha-window");
        test_golden_model("gqa");
        test_golden_model("longrope");
        test_golden_model("moe");
        test_longrope_from_start();
    }
    return tu_finish(unit ? "test_engine unit" : "test_engine golden");
}
