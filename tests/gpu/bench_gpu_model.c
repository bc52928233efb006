/* Benchmark of the CUDA op table on a full-size Phi-3.5-mini-shaped model with random bf16
 * weights: batch-1 decode (and its fraction of the HBM roofline), a 2048-token prefill, and
 * output tok/s at 16/64/256 concurrent sequences (128-token prompts, 128 new tokens).
 * Not a test (prints numbers, never fails on a time) and not the engine: a plain layer loop
 * mirroring the Phi-3 forward, no sampling (next ids are fixed random tokens). Batch-1 decode
 * is also run as a replayed CUDA graph (the engine's decode path), wall-clock timed against
 * the same steps launched op by op. Last, drawing 256 tokens with the sample op against
 * bringing the 256 rows of logits back to page-locked host memory (what the host sampler
 * needs first), both wall clock. Then one Phi-3.5-MoE layer's experts: the grouped moe op
 * against one matmul chain per expert (bench_moe).
 * Usage: bench_gpu_model [hbm_GBps]   (prints "RESULT key value" lines and a table) */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "dtype.h"
#include "ops.h"

#include "../test_util.h"

/* Phi-3.5-mini-instruct */
enum {
    HIDDEN = 3072,
    INTER = 8192,
    LAYERS = 32,
    HEADS = 32,
    KV_HEADS = 32,
    HEAD_DIM = 96,
    VOCAB = 32064,
    BLOCK = 16,
    QKV = (HEADS + 2 * KV_HEADS) * HEAD_DIM,
};

#define MAX_TOKENS 32768 /* 256 prompts x 128 tokens in one prefill */
#define MAX_SEQS 256
#define MAX_SLOTS (MAX_SEQS * 256)

struct layer {
    void *ln1, *qkv, *o, *ln2, *gate_up, *down; /* bf16 */
    void *k_cache, *v_cache;                    /* [MAX_SLOTS, KV_HEADS, HEAD_DIM] bf16 */
};

struct bench {
    struct kern_ctx *ctx;
    struct kern_ops ops;
    struct layer layers[LAYERS];
    void *embed, *norm, *lm_head;
    float *inv_freq;
    float *h, *xn, *qkv, *attn, *gu, *act, *last, *logits; /* activations */
    double weight_bytes;                                   /* read per decode step */
};

/* A batch descriptor in device memory (the same layout the engine's scheduler builds). */
struct batch {
    int64_t n_tokens, n_seqs, max_blocks;
    int32_t *ids, *pos, *q_start, *q_len, *ctx_len, *tables, *rows;
    int64_t *slots;
};

static uint64_t rng_state = 0x853c49e6748fea9bull;

static uint64_t rng(void)
{
    return tu_xorshift64(&rng_state);
}

#define TRY(call)                                                                              \
    do {                                                                                       \
        int rc_ = (call);                                                                      \
        if (rc_ != 0) {                                                                        \
            fprintf(stderr, "%s:%d: %s failed (%d)\n", __FILE__, __LINE__, #call, rc_);        \
            return rc_;                                                                        \
        }                                                                                      \
    } while (0)

/* Device bf16 tensor of n random values of standard deviation sd, filled from a reused
 * 16 MiB host pattern (shifted per tensor) so that set-up stays seconds, not minutes. */
static int rand_bf16(struct bench *b, size_t n, float sd, void **out)
{
    static const size_t chunk = (size_t)8 << 20; /* elements */
    TRY(kern_cuda_alloc(b->ctx, n * 2, out));
    uint16_t *host = malloc(chunk * 2);
    if (!host)
        return KERN_ERR_NOMEM;
    for (size_t i = 0; i < chunk; i++) {
        float u = ((float)(rng() >> 40) / (float)(1 << 24) - 0.5f) * 3.4641016f; /* sd 1 */
        host[i] = kern_f32_to_bf16(u * sd);
    }
    size_t start = (size_t)(rng() % chunk);
    for (size_t off = 0; off < n; off += chunk) {
        size_t len = n - off < chunk ? n - off : chunk;
        size_t s = (start + off) % chunk, first = chunk - s < len ? chunk - s : len;
        int rc = kern_cuda_upload(b->ctx, (uint16_t *)*out + off, host + s, first * 2);
        if (rc == 0 && first < len)
            rc = kern_cuda_upload(b->ctx, (uint16_t *)*out + off + first, host, (len - first) * 2);
        if (rc != 0) {
            free(host);
            return rc;
        }
    }
    free(host);
    return 0;
}

static int setup(struct bench *b)
{
    const size_t kv = (size_t)MAX_SLOTS * KV_HEADS * HEAD_DIM;
    b->weight_bytes = 0;
    for (int l = 0; l < LAYERS; l++) {
        struct layer *L = &b->layers[l];
        TRY(rand_bf16(b, HIDDEN, 0.1f, &L->ln1));
        TRY(rand_bf16(b, HIDDEN, 0.1f, &L->ln2));
        TRY(rand_bf16(b, (size_t)QKV * HIDDEN, 0.02f, &L->qkv));
        TRY(rand_bf16(b, (size_t)HIDDEN * HIDDEN, 0.02f, &L->o));
        TRY(rand_bf16(b, (size_t)2 * INTER * HIDDEN, 0.02f, &L->gate_up));
        TRY(rand_bf16(b, (size_t)HIDDEN * INTER, 0.02f, &L->down));
        TRY(kern_cuda_alloc(b->ctx, kv * 2, &L->k_cache));
        TRY(kern_cuda_alloc(b->ctx, kv * 2, &L->v_cache));
        b->weight_bytes += 2.0 * ((double)QKV * HIDDEN + (double)HIDDEN * HIDDEN +
                                  2.0 * INTER * HIDDEN + (double)HIDDEN * INTER + 2.0 * HIDDEN);
    }
    TRY(rand_bf16(b, (size_t)VOCAB * HIDDEN, 0.02f, &b->embed));
    TRY(rand_bf16(b, HIDDEN, 0.1f, &b->norm));
    TRY(rand_bf16(b, (size_t)VOCAB * HIDDEN, 0.02f, &b->lm_head));
    b->weight_bytes += 2.0 * ((double)VOCAB * HIDDEN + HIDDEN);

    float inv[HEAD_DIM / 2];
    for (int i = 0; i < HEAD_DIM / 2; i++)
        inv[i] = powf(10000.0f, -2.0f * (float)i / (float)HEAD_DIM);
    TRY(kern_cuda_alloc(b->ctx, sizeof inv, (void **)&b->inv_freq));
    TRY(kern_cuda_upload(b->ctx, b->inv_freq, inv, sizeof inv));
    const size_t T = MAX_TOKENS;
    TRY(kern_cuda_alloc(b->ctx, T * HIDDEN * 4, (void **)&b->h));
    TRY(kern_cuda_alloc(b->ctx, T * HIDDEN * 4, (void **)&b->xn));
    TRY(kern_cuda_alloc(b->ctx, T * QKV * 4, (void **)&b->qkv));
    TRY(kern_cuda_alloc(b->ctx, T * HIDDEN * 4, (void **)&b->attn));
    TRY(kern_cuda_alloc(b->ctx, T * 2 * INTER * 4, (void **)&b->gu));
    TRY(kern_cuda_alloc(b->ctx, T * INTER * 4, (void **)&b->act));
    TRY(kern_cuda_alloc(b->ctx, (size_t)MAX_SEQS * HIDDEN * 4, (void **)&b->last));
    TRY(kern_cuda_alloc(b->ctx, (size_t)MAX_SEQS * VOCAB * 4, (void **)&b->logits));
    return 0;
}

/* Per-op device time (prof_run): each op between two events with a sync after it, so a
 * launch's latency (a few us) counts in its op: exact for prefill's ms-long ops, an upper
 * bound for decode's. */
enum { P_EMBED, P_RMSNORM, P_QKV, P_ROPE, P_KV_WRITE, P_ATTENTION, P_O, P_GATE_UP, P_SILU,
       P_DOWN, P_LM_HEAD, P_N };
static const char *const prof_name[P_N] = {"embed", "rmsnorm", "qkv", "rope", "kv_write",
                                           "attention", "o_proj", "gate_up", "silu_mul",
                                           "down", "lm_head"};
static bool profiling;
static double prof_ms[P_N];

#define OP(slot, call)                                                                         \
    do {                                                                                       \
        if (profiling)                                                                         \
            TRY(kern_cuda_timer_start(c));                                                     \
        TRY(call);                                                                             \
        if (profiling) {                                                                       \
            float t_ = 0;                                                                      \
            TRY(kern_cuda_timer_stop(c, &t_));                                                 \
            prof_ms[slot] += t_;                                                               \
        }                                                                                      \
    } while (0)

/* The Phi-3 forward over one batch, through the op table only. */
static int forward(struct bench *b, const struct batch *bt)
{
    const struct kern_ops *o = &b->ops;
    struct kern_ctx *c = b->ctx;
    const int64_t T = bt->n_tokens;
    struct kern_embed_params pe = {bt->ids, b->embed, KERN_DTYPE_BF16, b->h, T, VOCAB, HIDDEN};
    OP(P_EMBED, o->embed(c, &pe));
    for (int l = 0; l < LAYERS; l++) {
        const struct layer *L = &b->layers[l];
        struct kern_rmsnorm_params n1 = {b->h, L->ln1, KERN_DTYPE_BF16, b->xn, T, HIDDEN, 1e-5f};
        OP(P_RMSNORM, o->rmsnorm(c, &n1));
        struct kern_matmul_params mq = {b->xn, L->qkv, KERN_DTYPE_BF16, b->qkv, T, QKV, HIDDEN,
                                        HIDDEN, QKV, 0};
        OP(P_QKV, o->matmul(c, &mq));
        struct kern_rope_params rq = {b->qkv, bt->pos, NULL, b->inv_freq, T, HEADS, HEAD_DIM,
                                      HEAD_DIM, QKV, 1, 1.0f};
        OP(P_ROPE, o->rope(c, &rq));
        struct kern_rope_params rk = rq;
        rk.x = b->qkv + HEADS * HEAD_DIM;
        rk.n_heads = KV_HEADS;
        OP(P_ROPE, o->rope(c, &rk));
        struct kern_kv_write_params kw = {b->qkv + HEADS * HEAD_DIM,
                                          b->qkv + (HEADS + KV_HEADS) * HEAD_DIM, bt->slots,
                                          L->k_cache, L->v_cache, KERN_DTYPE_BF16, T, KV_HEADS,
                                          HEAD_DIM, QKV, MAX_SLOTS};
        OP(P_KV_WRITE, o->kv_write(c, &kw));
        struct kern_attention_params at = {b->qkv, L->k_cache, L->v_cache, KERN_DTYPE_BF16,
                                           b->attn, bt->q_start, bt->q_len, bt->ctx_len,
                                           bt->tables, T, bt->n_seqs, HEADS, KV_HEADS, HEAD_DIM,
                                           QKV, bt->max_blocks, BLOCK, MAX_SLOTS, 0,
                                           1.0f / sqrtf((float)HEAD_DIM)};
        OP(P_ATTENTION, o->attention(c, &at));
        struct kern_matmul_params mo = {b->attn, L->o, KERN_DTYPE_BF16, b->h, T, HIDDEN, HIDDEN,
                                        HIDDEN, HIDDEN, 1};
        OP(P_O, o->matmul(c, &mo));
        struct kern_rmsnorm_params n2 = {b->h, L->ln2, KERN_DTYPE_BF16, b->xn, T, HIDDEN, 1e-5f};
        OP(P_RMSNORM, o->rmsnorm(c, &n2));
        struct kern_matmul_params mg = {b->xn, L->gate_up, KERN_DTYPE_BF16, b->gu, T, 2 * INTER,
                                        HIDDEN, HIDDEN, 2 * INTER, 0};
        OP(P_GATE_UP, o->matmul(c, &mg));
        struct kern_silu_mul_params sm = {b->gu, b->act, T, INTER};
        OP(P_SILU, o->silu_mul(c, &sm));
        struct kern_matmul_params md = {b->act, L->down, KERN_DTYPE_BF16, b->h, T, HIDDEN, INTER,
                                        INTER, HIDDEN, 1};
        OP(P_DOWN, o->matmul(c, &md));
    }
    struct kern_rmsnorm_params nf = {b->h, b->norm, KERN_DTYPE_BF16, b->xn, T, HIDDEN, 1e-5f};
    OP(P_RMSNORM, o->rmsnorm(c, &nf));
    struct kern_gather_rows_params g = {b->xn, bt->rows, b->last, T, bt->n_seqs, HIDDEN};
    OP(P_LM_HEAD, o->gather_rows(c, &g));
    struct kern_matmul_params lm = {b->last, b->lm_head, KERN_DTYPE_BF16, b->logits, bt->n_seqs,
                                    VOCAB, HIDDEN, HIDDEN, VOCAB, 0};
    OP(P_LM_HEAD, o->matmul(c, &lm));
    return 0;
}

/* Device copies of the descriptors of every step of a run: step 0 prefills n_seqs prompts
 * of `prompt` tokens, steps 1..gen decode one token per sequence. Sequence s owns blocks
 * perm[s * max_blocks ...] of a shuffled pool (non-contiguous, as after churn). */
struct run {
    int n_steps;
    struct batch steps[130];
    void *mem[8];
};

static int upload_new(struct bench *b, const void *host, size_t bytes, void **dev)
{
    TRY(kern_cuda_alloc(b->ctx, bytes, dev));
    return kern_cuda_upload(b->ctx, *dev, host, bytes);
}

static void run_free(struct bench *b, struct run *r)
{
    for (int i = 0; i < 8; i++)
        kern_cuda_free(b->ctx, r->mem[i]);
    memset(r, 0, sizeof *r);
}

static int run_build(struct bench *b, struct run *r, int n_seqs, int prompt, int gen)
{
    memset(r, 0, sizeof *r);
    const int64_t max_blocks = (prompt + gen + BLOCK - 1) / BLOCK;
    const int64_t pool = MAX_SLOTS / BLOCK;
    if ((int64_t)n_seqs * max_blocks > pool || (int64_t)n_seqs * prompt > MAX_TOKENS || gen > 129)
        return KERN_ERR_INVALID;
    int32_t *perm = malloc((size_t)pool * sizeof *perm);
    size_t per_step = (size_t)n_seqs * prompt; /* upper bound of tokens per step */
    int32_t *ids = malloc(per_step * (gen + 1) * sizeof *ids);
    int32_t *pos = malloc(per_step * (gen + 1) * sizeof *pos);
    int64_t *slots = malloc(per_step * (gen + 1) * sizeof *slots);
    int32_t *meta = malloc((size_t)n_seqs * 4 * (gen + 1) * sizeof *meta);
    if (!perm || !ids || !pos || !slots || !meta)
        return KERN_ERR_NOMEM;
    for (int64_t i = 0; i < pool; i++)
        perm[i] = (int32_t)i;
    for (int64_t i = pool - 1; i > 0; i--) {
        int64_t j = (int64_t)(rng() % (uint64_t)(i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    size_t tok = 0;
    for (int st = 0; st <= gen; st++) {
        int q = st == 0 ? prompt : 1;
        int32_t *m = meta + (size_t)st * n_seqs * 4; /* q_start, q_len, ctx_len, rows */
        for (int s = 0; s < n_seqs; s++) {
            int ctx = st == 0 ? prompt : prompt + st;
            m[s] = (int32_t)((size_t)s * q);
            m[n_seqs + s] = q;
            m[2 * n_seqs + s] = ctx;
            m[3 * n_seqs + s] = (int32_t)((size_t)s * q + q - 1);
            for (int i = 0; i < q; i++) {
                int p = ctx - q + i;
                ids[tok] = (int32_t)(rng() % VOCAB);
                pos[tok] = p;
                slots[tok] = (int64_t)perm[s * max_blocks + p / BLOCK] * BLOCK + p % BLOCK;
                tok++;
            }
        }
    }
    int rc = 0;
    if ((rc = upload_new(b, ids, tok * sizeof *ids, &r->mem[0])) != 0 ||
        (rc = upload_new(b, pos, tok * sizeof *pos, &r->mem[1])) != 0 ||
        (rc = upload_new(b, slots, tok * sizeof *slots, &r->mem[2])) != 0 ||
        (rc = upload_new(b, meta, (size_t)n_seqs * 4 * (gen + 1) * sizeof *meta, &r->mem[3])) !=
            0 ||
        (rc = upload_new(b, perm, (size_t)n_seqs * max_blocks * sizeof *perm, &r->mem[4])) != 0)
        goto out;
    r->n_steps = gen + 1;
    tok = 0;
    for (int st = 0; st <= gen; st++) {
        struct batch *bt = &r->steps[st];
        int q = st == 0 ? prompt : 1;
        int32_t *m = (int32_t *)r->mem[3] + (size_t)st * n_seqs * 4;
        bt->n_tokens = (int64_t)n_seqs * q;
        bt->n_seqs = n_seqs;
        bt->max_blocks = max_blocks;
        bt->ids = (int32_t *)r->mem[0] + tok;
        bt->pos = (int32_t *)r->mem[1] + tok;
        bt->slots = (int64_t *)r->mem[2] + tok;
        bt->q_start = m;
        bt->q_len = m + n_seqs;
        bt->ctx_len = m + 2 * n_seqs;
        bt->rows = m + 3 * n_seqs;
        bt->tables = r->mem[4];
        tok += (size_t)bt->n_tokens;
    }
out:
    free(perm);
    free(ids);
    free(pos);
    free(slots);
    free(meta);
    return rc;
}

/* Runs steps [from, to) and returns their device time in ms. */
static int time_steps(struct bench *b, struct run *r, int from, int to, float *ms)
{
    TRY(kern_cuda_timer_start(b->ctx));
    for (int st = from; st < to; st++)
        TRY(forward(b, &r->steps[st]));
    TRY(kern_cuda_timer_stop(b->ctx, ms));
    char err[256] = "";
    int rc = kern_cuda_sync(b->ctx, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "forward: %s\n", err);
    return rc;
}

/* One profiled pass over steps [from, to): "RESULT prof_<tag>_<op>_ms" per step, and the
 * sum of the ops against the plain timing of the same steps. */
static int prof_run(struct bench *b, struct run *r, int from, int to, const char *tag,
                    float plain_ms)
{
    memset(prof_ms, 0, sizeof prof_ms);
    profiling = true; /* the ops time themselves: no timer around the steps */
    int rc = 0;
    for (int st = from; st < to && rc == 0; st++)
        rc = forward(b, &r->steps[st]);
    profiling = false;
    char err[256] = "";
    if (rc == 0 && (rc = kern_cuda_sync(b->ctx, err, sizeof err)) != 0)
        fprintf(stderr, "forward: %s\n", err);
    if (rc != 0)
        return rc;
    double sum = 0;
    for (int i = 0; i < P_N; i++) {
        printf("RESULT prof_%s_%s_ms %.4f\n", tag, prof_name[i], prof_ms[i] / (to - from));
        sum += prof_ms[i];
    }
    printf("RESULT prof_%s_sum_ms %.4f\n", tag, sum / (to - from));
    printf("RESULT prof_%s_plain_ms %.4f\n", tag, plain_ms / (to - from));
    return 0;
}

/* Times step 0 of r (second of two runs) in a second context created with var=val set:
 * device memory is shared by every context of the process. b's context is kept. */
static int time_with_env(struct bench *b, struct run *r, const char *var, const char *val,
                         float *ms)
{
    struct kern_ctx *keep = b->ctx;
    struct kern_ops ops;
    char err[256];
    setenv(var, val, 1);
    int rc = kern_cuda_create(0, &ops, &b->ctx, err, sizeof err);
    unsetenv(var);
    if (rc != 0) {
        fprintf(stderr, "kern_cuda_create (%s=%s): %s\n", var, val, err);
        b->ctx = keep;
        return rc;
    }
    rc = time_steps(b, r, 0, 1, ms);
    if (rc == 0)
        rc = time_steps(b, r, 0, 1, ms);
    kern_cuda_destroy(b->ctx);
    b->ctx = keep;
    return rc;
}

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Copies step st's descriptor (batch-1 decode: one token, one sequence) into fixed's arrays,
 * which a graph was recorded with. */
static int stage_step(struct bench *b, const struct batch *st, const struct batch *fixed)
{
    const struct kern_ops *o = &b->ops;
    TRY(o->buf_copy(b->ctx, fixed->ids, st->ids, sizeof(int32_t)));
    TRY(o->buf_copy(b->ctx, fixed->pos, st->pos, sizeof(int32_t)));
    TRY(o->buf_copy(b->ctx, fixed->slots, st->slots, sizeof(int64_t)));
    TRY(o->buf_copy(b->ctx, fixed->q_start, st->q_start, sizeof(int32_t)));
    TRY(o->buf_copy(b->ctx, fixed->q_len, st->q_len, sizeof(int32_t)));
    TRY(o->buf_copy(b->ctx, fixed->ctx_len, st->ctx_len, sizeof(int32_t)));
    return o->buf_copy(b->ctx, fixed->rows, st->rows, sizeof(int32_t));
}

/* Wall-clock ms of decode steps [1, n_steps) of a batch-1 run, staged into fixed buffers and
 * then either launched op by op (g == NULL) or replayed from g; synchronised at the end. */
static int time_decode_wall(struct bench *b, struct run *r, const struct batch *fixed,
                            struct kern_graph *g, double *ms)
{
    char err[256] = "";
    TRY(kern_cuda_sync(b->ctx, err, sizeof err));
    double t0 = wall_ms();
    for (int st = 1; st < r->n_steps; st++) {
        TRY(stage_step(b, &r->steps[st], fixed));
        TRY(g ? b->ops.graph_launch(b->ctx, g) : forward(b, fixed));
    }
    TRY(kern_cuda_sync(b->ctx, err, sizeof err));
    *ms = wall_ms() - t0;
    return 0;
}

/* Batch-1 decode, eager against a replayed graph, both wall-clock timed in this process. */
static int bench_graph(struct bench *b, struct run *r)
{
    struct batch fixed = r->steps[1];
    void *mem = NULL;
    TRY(b->ops.buf_alloc(b->ctx, 7 * 256, &mem));
    char *p = mem;
    fixed.ids = (int32_t *)(void *)p;
    fixed.pos = (int32_t *)(void *)(p + 256);
    fixed.slots = (int64_t *)(void *)(p + 512);
    fixed.q_start = (int32_t *)(void *)(p + 768);
    fixed.q_len = (int32_t *)(void *)(p + 1024);
    fixed.ctx_len = (int32_t *)(void *)(p + 1280);
    fixed.rows = (int32_t *)(void *)(p + 1536);
    struct kern_graph *g = NULL;
    double eager = 0, graph = 0;
    int rc = stage_step(b, &r->steps[1], &fixed);
    if (rc == 0)
        rc = forward(b, &fixed); /* warm-up: sizes the scratch buffer for this shape */
    if (rc == 0 && (rc = b->ops.graph_begin(b->ctx)) == 0) {
        int rc_rec = forward(b, &fixed);
        rc = b->ops.graph_end(b->ctx, &g);
        if (rc == 0)
            rc = rc_rec;
    }
    if (rc == 0)
        rc = time_decode_wall(b, r, &fixed, NULL, &eager);
    if (rc == 0)
        rc = time_decode_wall(b, r, &fixed, g, &graph);
    if (rc == 0) {
        double steps = r->n_steps - 1;
        printf("RESULT decode_b1_eager_wall_tok_s %.1f\n", steps / (eager / 1e3));
        printf("RESULT decode_b1_graph_wall_tok_s %.1f\n", steps / (graph / 1e3));
        printf("RESULT decode_b1_graph_speedup %.3f\n", eager / graph);
    }
    b->ops.graph_destroy(b->ctx, g);
    b->ops.buf_free(b->ctx, mem);
    return rc;
}

/* Wall-clock ms per call of the sample op over n jobs on the rows of b->logits (whatever the
 * last forward left there) with these params, and of the download of those rows. */
static int bench_sampling(struct bench *b, int n, float top_p, int32_t top_k, double *ms_sample,
                          double *ms_download)
{
    enum { REPS = 20 };
    struct kern_sample_job jobs[MAX_SEQS];
    for (int j = 0; j < n; j++)
        jobs[j] = (struct kern_sample_job){.row = j, .u = (double)(rng() >> 11) * 0x1.0p-53,
                                           .temperature = 1.0f, .top_p = top_p, .top_k = top_k};
    size_t row_bytes = (size_t)VOCAB * sizeof(float);
    void *d_jobs = NULL, *work = NULL, *out = NULL;
    float *host = malloc((size_t)n * row_bytes);
    if (!host)
        return KERN_ERR_NOMEM;
    int rc = b->ops.buf_alloc(b->ctx, sizeof jobs, &d_jobs);
    if (rc == 0)
        rc = b->ops.buf_alloc(b->ctx, (size_t)n * row_bytes, &work);
    if (rc == 0)
        rc = b->ops.buf_alloc(b->ctx, (size_t)n * sizeof(int32_t), &out);
    if (rc == 0)
        rc = b->ops.buf_upload(b->ctx, d_jobs, jobs, (size_t)n * sizeof jobs[0]);
    bool pinned = rc == 0 && kern_cuda_host_register(b->ctx, host, (size_t)n * row_bytes) == 0;
    struct kern_sample_params sp = {
        .x = b->logits, .jobs = d_jobs, .work = work, .out = out,
        .n_rows = n, .dim = VOCAB, .ldx = VOCAB, .n_jobs = n,
    };
    int32_t ids[MAX_SEQS];
    char err[256] = "";
    for (int pass = 0; pass < 2 && rc == 0; pass++) { /* the first pass warms up */
        double t0 = wall_ms();
        for (int k = 0; k < REPS && rc == 0; k++) {
            rc = b->ops.sample(b->ctx, &sp);
            if (rc == 0)
                rc = b->ops.buf_download(b->ctx, ids, out, (size_t)n * sizeof ids[0]);
        }
        if (rc == 0)
            rc = kern_cuda_sync(b->ctx, err, sizeof err);
        *ms_sample = (wall_ms() - t0) / REPS;
        t0 = wall_ms();
        for (int k = 0; k < REPS && rc == 0; k++)
            rc = b->ops.buf_download(b->ctx, host, b->logits, (size_t)n * row_bytes);
        *ms_download = (wall_ms() - t0) / REPS;
    }
    if (rc != 0)
        fprintf(stderr, "sampling benchmark: %d %s\n", rc, err);
    if (pinned)
        kern_cuda_host_unregister(b->ctx, host);
    free(host);
    b->ops.buf_free(b->ctx, out);
    b->ops.buf_free(b->ctx, work);
    b->ops.buf_free(b->ctx, d_jobs);
    return rc;
}

/* ---- Phi-3.5-MoE's experts ---- */

enum { MOE_H = 4096, MOE_I = 6400, MOE_E = 16, MOE_K = 2, MOE_MAX_T = 2048 };

/* One buffer of each kind for bench_moe; freed with moe_bufs_free. */
struct moe_bufs {
    void *w[3 * MOE_E];          /* gate (w1), up (w3), down (w2) of each expert, bf16 */
    void *ptrs;                  /* [3 E] device copy of w's addresses */
    float *x, *y, *xg, *gu, *act, *out;
    int32_t *experts, *rows;
    float *weights;
    void *work;
};

static void moe_bufs_free(struct bench *b, struct moe_bufs *m)
{
    void *all[] = {m->ptrs, m->x, m->y, m->xg, m->gu, m->act, m->out, m->experts, m->rows,
                   m->weights, m->work};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        b->ops.buf_free(b->ctx, all[i]);
    for (int i = 0; i < 3 * MOE_E; i++)
        kern_cuda_free(b->ctx, m->w[i]);
}

/* The baseline: each expert's rows (gathered on the device by a permutation the host sorted)
 * through gate|up, SiLU-gate and down with one matmul call each, as per-expert cuBLASLt calls
 * with host-known counts would run; the combine is left out, so this is a lower bound. */
static int moe_loop(struct bench *b, struct moe_bufs *m, int T, const int32_t *count)
{
    const struct kern_ops *o = &b->ops;
    struct kern_gather_rows_params g = {.x = m->x, .rows = m->rows, .out = m->xg,
                                        .n_in = T, .n_out = (int64_t)T * MOE_K, .dim = MOE_H};
    TRY(o->gather_rows(b->ctx, &g));
    int64_t off = 0;
    for (int e = 0; e < MOE_E; e++) {
        int64_t n = count[e];
        if (n == 0)
            continue;
        for (int half = 0; half < 2; half++) { /* gate into columns [0, I), up into [I, 2I) */
            struct kern_matmul_params mm = {
                .x = m->xg + off * MOE_H, .w = m->w[half * MOE_E + e], .w_dtype = KERN_DTYPE_BF16,
                .y = m->gu + off * 2 * MOE_I + half * MOE_I, .m = n, .n = MOE_I, .k = MOE_H,
                .ldx = MOE_H, .ldy = 2 * MOE_I,
            };
            TRY(o->matmul(b->ctx, &mm));
        }
        struct kern_silu_mul_params sm = {.gu = m->gu + off * 2 * MOE_I, .out = m->act + off * MOE_I,
                                          .n_tokens = n, .inter = MOE_I};
        TRY(o->silu_mul(b->ctx, &sm));
        struct kern_matmul_params dn = {
            .x = m->act + off * MOE_I, .w = m->w[2 * MOE_E + e], .w_dtype = KERN_DTYPE_BF16,
            .y = m->out + off * MOE_H, .m = n, .n = MOE_H, .k = MOE_I, .ldx = MOE_I, .ldy = MOE_H,
        };
        TRY(o->matmul(b->ctx, &dn));
        off += n;
    }
    return 0;
}

/* One Phi-3.5-MoE layer's 16 experts (hidden 4096, inter 6400, bf16: 2.5 GB) at 1 to 2048
 * tokens with uniform random top-2 routing: the grouped moe op against moe_loop, device time,
 * and at 1 token the grouped op's rate of reading its two experts' weights. The grouped op
 * also on its FMA GEMM kernel: a second context created with PHISERVE_CUDA_MOE=fma (device
 * memory is shared by every context of the process). */
static int bench_moe(struct bench *b, double hbm)
{
    enum { REPS = 10 };
    static struct moe_bufs m;
    const struct kern_ops *o = &b->ops;
    const size_t wsz = (size_t)MOE_I * MOE_H;
    int rc = 0;
    for (int i = 0; i < 3 * MOE_E && rc == 0; i++)
        rc = rand_bf16(b, wsz, 0.02f, &m.w[i]);
    const size_t T = MOE_MAX_T, S = T * MOE_K;
    size_t work = kern_moe_work_bytes(MOE_MAX_T, MOE_K, MOE_H, MOE_I, MOE_E);
    void **bufs[] = {&m.ptrs, (void **)&m.x, (void **)&m.y, (void **)&m.xg, (void **)&m.gu,
                     (void **)&m.act, (void **)&m.out, (void **)&m.experts, (void **)&m.rows,
                     (void **)&m.weights, &m.work};
    const size_t bytes[] = {sizeof m.w, T * MOE_H * 4, T * MOE_H * 4, S * MOE_H * 4,
                            S * 2 * MOE_I * 4, S * MOE_I * 4, S * MOE_H * 4, S * 4, S * 4, S * 4,
                            work};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0] && rc == 0; i++)
        rc = o->buf_alloc(b->ctx, bytes[i], bufs[i]);
    float *hx = malloc(T * MOE_H * sizeof *hx), *hw = malloc(S * sizeof *hw);
    int32_t *he = malloc(S * sizeof *he), *hr = malloc(S * sizeof *hr);
    if (rc == 0 && (!hx || !hw || !he || !hr))
        rc = KERN_ERR_NOMEM;
    struct kern_ctx *fma_ctx = NULL;
    struct kern_ops fma_ops;
    char err[256] = "";
    if (rc == 0) {
        setenv("PHISERVE_CUDA_MOE", "fma", 1);
        rc = kern_cuda_create(0, &fma_ops, &fma_ctx, err, sizeof err);
        unsetenv("PHISERVE_CUDA_MOE");
        if (rc != 0) {
            fprintf(stderr, "moe benchmark: kern_cuda_create (fma moe): %s\n", err);
            fma_ctx = NULL;
        }
    }
    if (rc == 0)
        rc = o->buf_upload(b->ctx, m.ptrs, m.w, sizeof m.w);
    for (size_t i = 0; rc == 0 && i < T * MOE_H; i++)
        hx[i] = ((float)(rng() >> 40) / (float)(1 << 24) - 0.5f);
    if (rc == 0)
        rc = o->buf_upload(b->ctx, m.x, hx, T * MOE_H * sizeof *hx);
    static const int tokens[] = {1, 16, 64, 256, 2048};
    for (size_t ti = 0; ti < sizeof tokens / sizeof tokens[0] && rc == 0; ti++) {
        int nt = tokens[ti];
        int32_t count[MOE_E] = {0}, start[MOE_E];
        for (int t = 0; t < nt; t++) {
            int32_t e0 = (int32_t)(rng() % MOE_E), e1 = (int32_t)(rng() % (MOE_E - 1));
            e1 += e1 >= e0;
            he[t * MOE_K] = e0;
            he[t * MOE_K + 1] = e1;
            hw[t * MOE_K] = hw[t * MOE_K + 1] = 0.5f;
            count[e0]++;
            count[e1]++;
        }
        for (int e = 0, acc = 0; e < MOE_E; acc += count[e], e++)
            start[e] = acc;
        for (int s = 0; s < nt * MOE_K; s++) /* the host's sort: x row of each sorted slot */
            hr[start[he[s]]++] = s / MOE_K;
        rc = o->buf_upload(b->ctx, m.experts, he, (size_t)nt * MOE_K * sizeof *he);
        if (rc == 0)
            rc = o->buf_upload(b->ctx, m.weights, hw, (size_t)nt * MOE_K * sizeof *hw);
        if (rc == 0)
            rc = o->buf_upload(b->ctx, m.rows, hr, (size_t)nt * MOE_K * sizeof *hr);
        struct kern_moe_params p = {
            .x = m.x, .experts = m.experts, .weights = m.weights,
            .w_gate = (const void *const *)m.ptrs, .w_up = (const void *const *)m.ptrs + MOE_E,
            .w_down = (const void *const *)m.ptrs + 2 * MOE_E, .w_dtype = KERN_DTYPE_BF16,
            .y = m.y, .work = m.work, .n_tokens = nt, .hidden = MOE_H, .inter = MOE_I,
            .n_experts = MOE_E, .top_k = MOE_K,
        };
        float ms_grouped = 0, ms_loop = 0, ms_fma = 0;
        for (int pass = 0; pass < 2 && rc == 0; pass++) { /* the first pass warms up */
            rc = kern_cuda_timer_start(b->ctx);
            for (int k = 0; k < REPS && rc == 0; k++)
                rc = o->moe(b->ctx, &p);
            if (rc == 0)
                rc = kern_cuda_timer_stop(b->ctx, &ms_grouped);
            if (rc == 0)
                rc = kern_cuda_timer_start(b->ctx);
            for (int k = 0; k < REPS && rc == 0; k++)
                rc = moe_loop(b, &m, nt, count);
            if (rc == 0)
                rc = kern_cuda_timer_stop(b->ctx, &ms_loop);
            if (rc == 0) /* the timer's stop waited for b->ctx's stream: no overlap */
                rc = kern_cuda_timer_start(fma_ctx);
            for (int k = 0; k < REPS && rc == 0; k++)
                rc = fma_ops.moe(fma_ctx, &p);
            if (rc == 0)
                rc = kern_cuda_timer_stop(fma_ctx, &ms_fma);
        }
        if (rc == 0)
            rc = kern_cuda_sync(b->ctx, err, sizeof err);
        if (rc == 0)
            rc = kern_cuda_sync(fma_ctx, err, sizeof err);
        if (rc != 0) {
            fprintf(stderr, "moe benchmark: %d %s\n", rc, err);
            break;
        }
        printf("RESULT moe_t%d_ms %.3f\n", nt, ms_grouped / REPS);
        printf("RESULT moe_loop_t%d_ms %.3f\n", nt, ms_loop / REPS);
        printf("RESULT moe_fma_t%d_ms %.3f\n", nt, ms_fma / REPS);
        if (nt == 1) {
            double gbps = 2.0 * 3.0 * (double)wsz * 2.0 / (ms_grouped / REPS * 1e-3) / 1e9;
            printf("RESULT moe_t1_weight_GBps %.1f\n", gbps);
            printf("RESULT moe_t1_roofline_fraction %.3f\n", gbps / hbm);
        }
    }
    if (fma_ctx)
        kern_cuda_destroy(fma_ctx);
    free(hx);
    free(hw);
    free(he);
    free(hr);
    moe_bufs_free(b, &m);
    return rc;
}

int main(int argc, char **argv)
{
    double hbm = argc > 1 ? atof(argv[1]) : 4800.0; /* GB/s, H200 datasheet */
    if (kern_cuda_device_count() == 0) {
        printf("no CUDA device: nothing to benchmark\n");
        return 77;
    }
    static struct bench b;
    char err[256];
    if (kern_cuda_create(0, &b.ops, &b.ctx, err, sizeof err) != 0) {
        fprintf(stderr, "kern_cuda_create: %s\n", err);
        return 1;
    }
    if (setup(&b) != 0)
        return 1;
    static struct run r;
    float ms = 0, ms_pre = 0;

    /* batch-1 decode: 128-token prompt, 128 new tokens, the first decode step as warm-up */
    if (run_build(&b, &r, 1, 128, 128) || time_steps(&b, &r, 0, 2, &ms) ||
        time_steps(&b, &r, 2, r.n_steps, &ms))
        return 1;
    double steps = r.n_steps - 2;
    double tps1 = steps / (ms / 1e3);
    /* bytes per step: all weights but the embedding table (one row), plus the KV cache read
     * at the mean context (128 + 65 tokens) */
    double kv_bytes = 2.0 * LAYERS * KV_HEADS * HEAD_DIM * 2.0 * (128 + 65);
    double bytes = b.weight_bytes - 2.0 * VOCAB * HIDDEN + kv_bytes;
    double roof = hbm * 1e9 / bytes;
    printf("RESULT decode_b1_tok_s %.1f\n", tps1);
    printf("RESULT decode_b1_ms_per_token %.3f\n", ms / steps);
    printf("RESULT decode_b1_roofline_tok_s %.1f\n", roof);
    printf("RESULT decode_b1_roofline_fraction %.3f\n", tps1 / roof);
    if (prof_run(&b, &r, 2, r.n_steps, "decode_b1", ms) != 0)
        return 1;
    if (bench_graph(&b, &r) != 0) {
        fprintf(stderr, "graph benchmark failed\n");
        return 1;
    }
    run_free(&b, &r);

    /* prefill of one 2048-token prompt (second run timed) */
    if (run_build(&b, &r, 1, 2048, 0) || time_steps(&b, &r, 0, 1, &ms) ||
        time_steps(&b, &r, 0, 1, &ms))
        return 1;
    printf("RESULT prefill_2048_tok_s %.1f\n", 2048.0 / (ms / 1e3));
    printf("RESULT prefill_2048_ms %.2f\n", ms);
    if (prof_run(&b, &r, 0, 1, "prefill_2048", ms) != 0)
        return 1;
    /* The same prefill with attention on the CUDA cores, then with cuBLASLt's 2nd..4th
     * heuristic answer for every GEMM (is the first one the fastest?). */
    float ms_fp32 = 0;
    if (time_with_env(&b, &r, "PHISERVE_CUDA_ATTENTION", "fp32", &ms_fp32) != 0)
        return 1;
    printf("RESULT prefill_2048_fp32_attention_ms %.2f\n", ms_fp32);
    for (int a = 1; a <= 3; a++) {
        char val[2] = {(char)('0' + a), 0};
        float ms_a = 0;
        if (time_with_env(&b, &r, "PHISERVE_CUDA_GEMM_ALGO", val, &ms_a) != 0)
            return 1;
        printf("RESULT prefill_2048_gemm_algo%d_ms %.2f\n", a, ms_a);
    }
    printf("RESULT prefill_2048_tensor_core_speedup %.3f\n", ms_fp32 / ms);
    run_free(&b, &r);

    static const int conc[] = {16, 64, 256};
    for (int i = 0; i < 3; i++) {
        int n = conc[i];
        /* warm-up pass over the first steps, then the full run timed */
        if (run_build(&b, &r, n, 128, 128) || time_steps(&b, &r, 0, 2, &ms) ||
            time_steps(&b, &r, 0, 1, &ms_pre) || time_steps(&b, &r, 1, r.n_steps, &ms))
            return 1;
        double out_tokens = (double)n * 128.0; /* the prefill yields the first token */
        printf("RESULT out_tok_s_c%d %.1f\n", n, out_tokens / ((ms_pre + ms) / 1e3));
        printf("RESULT decode_tok_s_c%d %.1f\n", n, (double)n * (r.n_steps - 1) / (ms / 1e3));
        printf("RESULT prefill_ms_c%d %.2f\n", n, ms_pre);
        if (n == 256 && prof_run(&b, &r, 1, 9, "decode_c256", ms * 8 / (r.n_steps - 1)) != 0)
            return 1;
        run_free(&b, &r);
    }

    /* 256 rows of the last run's logits: t = 1 alone, and with top_p 0.95 and top_k 50 */
    double ms_plain = 0, ms_trunc = 0, ms_dl = 0;
    if (bench_sampling(&b, MAX_SEQS, 1.0f, 0, &ms_plain, &ms_dl) ||
        bench_sampling(&b, MAX_SEQS, 0.95f, 50, &ms_trunc, &ms_dl))
        return 1;
    printf("RESULT sample_256_ms %.3f\n", ms_plain);
    printf("RESULT sample_256_top_p_top_k_ms %.3f\n", ms_trunc);
    printf("RESULT logits_download_256_ms %.3f\n", ms_dl);
    if (bench_moe(&b, hbm) != 0)
        return 1;
    return 0;
}
