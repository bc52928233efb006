/* Benchmark of the fast CPU kernels against the reference on Phi-3-mini shapes: matmul
 * (decode m = 1 and prefill m = 128, bf16 weights), decode attention at ctx 1024, and the
 * elementwise ops of a 128-token prefill (rmsnorm, rope, silu_mul, add), the MoE FFN, and
 * the block formats (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K) against bf16 on the fast path (the same
 * shapes, timed in turn).
 * Usage: bench_ops [all|quant] [generic|avx2] (the second argument: a narrower instruction set
 * than the CPU's best). Prints a table and always exits 0; it is a measurement, never a test. */
#include "cpu/cpu.h"
#include "kt_util.h"

/* Runs fn until at least min_s seconds (and 2 calls) have passed; returns seconds per call. */
static double time_calls(int (*fn)(struct kern_ctx *, const void *), struct kern_ctx *ctx,
                         const void *p, double min_s)
{
    fn(ctx, p); /* warm-up: page faults, caches, thread wake-up */
    int n = 0;
    double t0 = kt_now(), t;
    do {
        fn(ctx, p);
        n++;
        t = kt_now() - t0;
    } while (t < min_s || n < 2);
    return t / n;
}

/* Adapters from the typed entries to one signature for time_calls. */
static int (*mm_fn)(struct kern_ctx *, const struct kern_matmul_params *);
static int (*at_fn)(struct kern_ctx *, const struct kern_attention_params *);
static int call_mm(struct kern_ctx *ctx, const void *p)
{
    return mm_fn(ctx, p);
}
static int call_at(struct kern_ctx *ctx, const void *p)
{
    return at_fn(ctx, p);
}

/* A matmul over copies of its weights taken in turn: with more bytes than the last-level
 * cache holds, every call reads W from memory as a decode step of a real model does (a
 * single copy of a 16-56 MiB matrix partly stays in a 32 MiB L3 between calls). */
#define BENCH_COLD_BYTES ((size_t)192 << 20)
#define BENCH_COLD_MAX 64
struct bench_mm_cold {
    struct kern_matmul_params p;
    const void *w[BENCH_COLD_MAX];
    int n, next;
};
static int call_mm_cold(struct kern_ctx *ctx, const void *arg)
{
    struct bench_mm_cold *c = (struct bench_mm_cold *)arg;
    struct kern_matmul_params p = c->p;
    p.w = c->w[c->next];
    c->next = (c->next + 1) % c->n;
    return mm_fn(ctx, &p);
}
/* Copies of w (bytes each) up to BENCH_COLD_BYTES in all; c->w[0] is w itself. Returns 0, or
 * -1 when out of memory (then nothing is left allocated but w). */
static int cold_copies(struct bench_mm_cold *c, const void *w, size_t bytes)
{
    c->n = (int)(BENCH_COLD_BYTES / bytes) + 1;
    if (c->n > BENCH_COLD_MAX)
        c->n = BENCH_COLD_MAX;
    c->w[0] = w;
    c->next = 0;
    for (int i = 1; i < c->n; i++) {
        void *cp = malloc(bytes);
        if (!cp) {
            for (int j = 1; j < i; j++)
                free((void *)c->w[j]);
            return -1;
        }
        memcpy(cp, w, bytes);
        c->w[i] = cp;
    }
    return 0;
}
static void cold_free(struct bench_mm_cold *c)
{
    for (int i = 1; i < c->n; i++)
        free((void *)c->w[i]);
}
static int (*rn_fn)(struct kern_ctx *, const struct kern_rmsnorm_params *);
static int (*rp_fn)(struct kern_ctx *, const struct kern_rope_params *);
static int (*sm_fn)(struct kern_ctx *, const struct kern_silu_mul_params *);
static int (*add_fn)(struct kern_ctx *, const struct kern_add_params *);
static int call_rn(struct kern_ctx *ctx, const void *p)
{
    return rn_fn(ctx, p);
}
static int call_rp(struct kern_ctx *ctx, const void *p)
{
    return rp_fn(ctx, p);
}
static int call_sm(struct kern_ctx *ctx, const void *p)
{
    return sm_fn(ctx, p);
}
static int call_add(struct kern_ctx *ctx, const void *p)
{
    return add_fn(ctx, p);
}

/* The elementwise ops of one 128-token prefill of Phi-3-mini: ms per call and speed-up. */
static void bench_elementwise(const struct kern_ops *ref, const struct kern_ops *cpu,
                              struct kern_ctx *ctx, struct kt_rng *rng)
{
    const int64_t t = 128, hidden = 3072, inter = 8192, heads = 32, hd = 96;
    float *x = malloc((size_t)(t * 2 * inter) * sizeof *x);
    float *y = malloc((size_t)(t * 2 * inter) * sizeof *y);
    uint16_t *w = malloc((size_t)hidden * sizeof *w);
    int32_t *pos = malloc((size_t)t * sizeof *pos);
    float inv_freq[48];
    if (!x || !y || !w || !pos) {
        printf("out of memory\n");
        free(x);
        free(y);
        free(w);
        free(pos);
        return;
    }
    kt_fill(rng, x, KERN_DTYPE_F32, t * 2 * inter, -3.0f, 3.0f);
    kt_fill(rng, y, KERN_DTYPE_F32, t * 2 * inter, -3.0f, 3.0f);
    kt_fill(rng, w, KERN_DTYPE_BF16, hidden, 0.5f, 1.5f);
    for (int64_t i = 0; i < t; i++)
        pos[i] = (int32_t)(1000 + i);
    for (int i = 0; i < 48; i++)
        inv_freq[i] = (float)pow(10000.0, -(double)i / 48.0);
    struct kern_rmsnorm_params rn = {x, w, KERN_DTYPE_BF16, y, t, hidden, 1e-5f};
    struct kern_rope_params rp = {y, pos, NULL, inv_freq, t, heads, hd, hd, 3 * heads * hd, 1, 1.0f};
    struct kern_silu_mul_params sm = {x, y, t, inter};
    struct kern_add_params ad = {y, x, t * hidden};
    printf("\n%-20s %5s %12s %12s %9s\n", "elementwise", "T", "ref ms/call", "cpu ms/call",
           "speed-up");
    for (int op = 0; op < 4; op++) {
        static const char *const names[] = {"rmsnorm 3072 bf16", "rope 32x96", "silu_mul 8192",
                                            "add 3072"};
        int (*call)(struct kern_ctx *, const void *) =
            op == 0 ? call_rn : op == 1 ? call_rp : op == 2 ? call_sm : call_add;
        const void *p = op == 0 ? (const void *)&rn : op == 1 ? (const void *)&rp
                        : op == 2 ? (const void *)&sm : (const void *)&ad;
        rn_fn = ref->rmsnorm;
        rp_fn = ref->rope;
        sm_fn = ref->silu_mul;
        add_fn = ref->add;
        double t_ref = time_calls(call, NULL, p, 0.2);
        rn_fn = cpu->rmsnorm;
        rp_fn = cpu->rope;
        sm_fn = cpu->silu_mul;
        add_fn = cpu->add;
        double t_cpu = time_calls(call, ctx, p, 0.2);
        printf("%-20s %5lld %12.3f %12.3f %8.1fx\n", names[op], (long long)t, t_ref * 1e3,
               t_cpu * 1e3, t_ref / t_cpu);
    }
    free(x);
    free(y);
    free(w);
    free(pos);
}

/* The MoE FFN at Phi-3.5-MoE's hidden 4096 with 8 experts of a quarter inter (1600, to keep
 * the weights at 300 MiB), top 2, bf16 and the same experts quantized to Q8_0 (what
 * --quantization q8_0 gives the moe op): the moe op against the same work as per-expert matmul
 * calls on pre-gathered rows (gate, up, down; no SiLU, gather or combine), which is what the
 * op would cost as a loop of matmuls, for a decode token and a 64-token prefill chunk. */
struct bench_moe_loop {
    const struct kern_ops *ops;
    const void *const *wg, *const *wu, *const *wd;
    enum kern_dtype dt;
    const float *xg;           /* [S, hidden] rows gathered by expert */
    float *g, *u, *d;          /* [S, inter], [S, inter], [S, hidden] */
    const int64_t *cnt;        /* [E] rows per expert, in gathered order */
    int64_t E, H, I;
};

static int (*moe_fn)(struct kern_ctx *, const struct kern_moe_params *);
static int call_moe(struct kern_ctx *ctx, const void *p)
{
    return moe_fn(ctx, p);
}
static int call_moe_loop(struct kern_ctx *ctx, const void *p)
{
    const struct bench_moe_loop *l = p;
    int64_t r0 = 0;
    for (int64_t e = 0; e < l->E; e++) {
        int64_t m = l->cnt[e];
        if (m == 0)
            continue;
        struct kern_matmul_params gp = {l->xg + r0 * l->H, l->wg[e], l->dt,
                                        l->g + r0 * l->I, m, l->I, l->H, l->H, l->I, 0};
        struct kern_matmul_params up = gp;
        up.w = l->wu[e];
        up.y = l->u + r0 * l->I;
        struct kern_matmul_params dp = {l->g + r0 * l->I, l->wd[e], l->dt,
                                        l->d + r0 * l->H, m, l->H, l->I, l->I, l->H, 0};
        l->ops->matmul(ctx, &gp);
        l->ops->matmul(ctx, &up);
        l->ops->matmul(ctx, &dp);
        r0 += m;
    }
    return 0;
}

static void bench_moe(const struct kern_ops *ref, const struct kern_ops *cpu,
                      struct kern_ctx *ctx, struct kt_rng *rng)
{
    enum { E = 8, K = 2, TMAX = 64 };
    const int64_t H = 4096, I = 1600;
    size_t per = (size_t)(H * I);
    uint16_t *w = malloc(3 * E * per * sizeof *w);
    size_t per_q = (size_t)kern_dtype_row_bytes(KERN_DTYPE_Q8_0, H * I);
    uint8_t *wq = malloc(3 * E * per_q);
    float *x = malloc((size_t)(TMAX * H) * sizeof *x), *y = malloc((size_t)(TMAX * H) * sizeof *y);
    float *xg = malloc((size_t)(TMAX * K * H) * sizeof *xg);
    float *g = malloc((size_t)(TMAX * K * I) * sizeof *g), *u = malloc((size_t)(TMAX * K * I) * sizeof *u);
    float *d = malloc((size_t)(TMAX * K * H) * sizeof *d);
    void *work = malloc(kern_moe_work_bytes(TMAX, K, H, I, E));
    if (!w || !wq || !x || !y || !xg || !g || !u || !d || !work) {
        printf("out of memory\n");
        goto done;
    }
    kt_fill(rng, w, KERN_DTYPE_BF16, 3 * E * (int64_t)per, -0.02f, 0.02f);
    kt_fill(rng, x, KERN_DTYPE_F32, TMAX * H, -1.0f, 1.0f);
    kt_fill(rng, xg, KERN_DTYPE_F32, TMAX * K * H, -1.0f, 1.0f);
    /* gate and up: 2 E matrices of rows of H; down: E of rows of I. */
    if (kern_quantize(w, KERN_DTYPE_BF16, 2 * E * I, H, KERN_DTYPE_Q8_0, wq) != KERN_OK ||
        kern_quantize(w + 2 * E * per, KERN_DTYPE_BF16, E * H, I, KERN_DTYPE_Q8_0,
                      wq + 2 * E * per_q) != KERN_OK) {
        printf("quantizing the experts failed\n");
        goto done;
    }
    const void *wg[2][E], *wu[2][E], *wd[2][E];
    for (int e = 0; e < E; e++) {
        wg[0][e] = w + (size_t)e * per;
        wu[0][e] = w + (size_t)(E + e) * per;
        wd[0][e] = w + (size_t)(2 * E + e) * per;
        wg[1][e] = wq + (size_t)e * per_q;
        wu[1][e] = wq + (size_t)(E + e) * per_q;
        wd[1][e] = wq + (size_t)(2 * E + e) * per_q;
    }
    int32_t experts[TMAX * K];
    float weights[TMAX * K];
    printf("\n%-20s %5s %12s %12s %12s %9s\n", "moe H4096 I1600 E8", "T", "ref ms/call",
           "cpu ms/call", "loop ms/call", "loop/cpu");
    const int64_t ts[2] = {1, TMAX};
    const enum kern_dtype dts[2] = {KERN_DTYPE_BF16, KERN_DTYPE_Q8_0};
    double t_cpus[2][2];
    for (int run = 0; run < 4; run++) { /* bf16 then Q8_0, each at T = 1 and TMAX */
        int di = run / 2, ti = run % 2;
        int64_t T = ts[ti], cnt[E] = {0};
        for (int64_t s = 0; s < T * K; s++) {
            experts[s] = (int32_t)((s % K == 0 ? kt_below(rng, E) : experts[s - 1] + 1 + kt_below(rng, E - 1)) % E);
            weights[s] = 0.5f;
            cnt[experts[s]]++;
        }
        struct kern_moe_params p = {x, experts, weights, wg[di], wu[di], wd[di], dts[di], y,
                                    work, T, H, I, E, K};
        struct bench_moe_loop loop = {cpu, wg[di], wu[di], wd[di], dts[di], xg, g, u, d, cnt,
                                      E, H, I};
        /* The reference on one token (fp64 and scalar: seconds for a chunk). */
        struct kern_moe_params pr = p;
        pr.n_tokens = 1;
        moe_fn = ref->moe;
        double t_ref = time_calls(call_moe, NULL, &pr, 0.2) * (double)T;
        moe_fn = cpu->moe;
        double t_cpu = time_calls(call_moe, ctx, &p, 0.5);
        double t_loop = time_calls(call_moe_loop, ctx, &loop, 0.5);
        t_cpus[di][ti] = t_cpu;
        printf("%-15s top2 %5lld %12.1f %12.2f %12.2f %8.2fx\n", kern_dtype_name(dts[di]),
               (long long)T, t_ref * 1e3, t_cpu * 1e3, t_loop * 1e3, t_loop / t_cpu);
    }
    printf("q8_0 experts against bf16 (moe op): %.2fx the speed at T=1, %.2fx at T=%d\n",
           t_cpus[0][0] / t_cpus[1][0], t_cpus[0][1] / t_cpus[1][1], TMAX);
done:
    free(w);
    free(wq);
    free(x);
    free(y);
    free(xg);
    free(g);
    free(u);
    free(d);
    free(work);
}

/* Phi-3-mini's matmul shapes (k, n), each at decode (m = 1) and prefill (m = 128). */
static const struct {
    const char *name;
    int64_t k, n;
} shapes[] = {{"qkv 3072x9216", 3072, 9216}, {"gate_up 3072x16384", 3072, 16384},
              {"down 8192x3072", 8192, 3072}};
static const int64_t ms[2] = {1, 128};

/* The block formats against bf16 weights on the fast path (the "matmul quantized" table):
 * Q8_0 and Q4_0 made by kern_quantize from the bf16 weights, their R16 forms (the int8 dot)
 * repacked from those, the K formats random valid super-blocks (kt_fill; only their speed is
 * measured here). */
static void bench_quantized(const struct kern_ops *ops, struct kern_ctx *ctx, struct kt_rng *rng)
{
    enum { NV = 11 };
    static const enum kern_dtype vdt[NV] = {KERN_DTYPE_BF16,     KERN_DTYPE_Q8_0,
                                            KERN_DTYPE_Q4_0,     KERN_DTYPE_Q8_0_R16,
                                            KERN_DTYPE_Q4_0_R16, KERN_DTYPE_Q4_K,
                                            KERN_DTYPE_Q4_K_R16, KERN_DTYPE_Q5_K,
                                            KERN_DTYPE_Q5_K_R16, KERN_DTYPE_Q6_K,
                                            KERN_DTYPE_Q6_K_R16};
    struct kern_ops cpu = *ops;
    /* Every format on the same x and shapes, timed in turn (three rounds each, the best kept)
     * so that the neighbours' load hits all. Decode (m = 1) reads W once, so its speed is
     * weight bytes over bandwidth (GB/s columns); "x" is bf16's time over the format's. */
    printf("\n%-20s %5s", "matmul quantized", "m");
    for (int v = 0; v < NV; v++)
        printf(" %7s ms", kern_dtype_name(vdt[v]));
    for (int v = 0; v < NV; v++)
        printf(" %5s GB/s", kern_dtype_name(vdt[v]));
    for (int v = 1; v < NV; v++)
        printf(" %6s x", kern_dtype_name(vdt[v]));
    printf("\n");
    for (int si = 0; si < 3; si++) {
        int64_t k = shapes[si].k, n = shapes[si].n;
        size_t bytes[NV];
        void *w[NV] = {0};
        float *x = malloc((size_t)(128 * k) * sizeof *x), *y = malloc((size_t)(128 * n) * sizeof *y);
        int ok = x && y;
        for (int v = 0; v < NV; v++) {
            bytes[v] = (size_t)kern_dtype_matrix_bytes(vdt[v], n, k);
            ok = ok && (w[v] = malloc(bytes[v])) != NULL;
        }
        if (!ok) {
            printf("out of memory\n");
            return;
        }
        kt_fill(rng, w[0], KERN_DTYPE_BF16, n * k, -1.0f, 1.0f);
        kt_fill(rng, x, KERN_DTYPE_F32, 128 * k, -1.0f, 1.0f);
        for (int v = 1; v < NV; v++) {
            if (kern_dtype_block_elems(vdt[v]) == KERN_QKBLOCK)
                kt_fill(rng, w[v], vdt[v], n * k, -1.0f, 1.0f);
            else if (kern_dtype_is_r16(vdt[v])) { /* after its plain format (vdt's order) */
                int base = 0;
                while (vdt[base] != kern_dtype_r16_base(vdt[v]))
                    base++;
                if (kern_repack(w[base], vdt[base], n, k, w[v]) != KERN_OK) {
                    printf("repack failed\n");
                    return;
                }
            } else if (kern_quantize(w[0], KERN_DTYPE_BF16, n, k, vdt[v], w[v]) != KERN_OK) {
                printf("quantize failed\n");
                return;
            }
        }
        mm_fn = cpu.matmul;
        for (int mi = 0; mi < 2; mi++) {
            int64_t m = ms[mi];
            /* Decode (m = 1) from memory (call_mm_cold), prefill on one copy (compute-bound). */
            struct bench_mm_cold c[NV];
            for (int v = 0; v < NV; v++) {
                c[v] = (struct bench_mm_cold){.p = {x, w[v], vdt[v], y, m, n, k, k, n, 0}};
                if (m > 1) {
                    c[v].n = 1;
                    c[v].w[0] = c[v].p.w;
                } else if (cold_copies(&c[v], c[v].p.w, bytes[v]) != 0) {
                    printf("out of memory\n");
                    return;
                }
            }
            double t[NV];
            for (int v = 0; v < NV; v++)
                t[v] = 1e30;
            for (int round = 0; round < 3; round++)
                for (int v = 0; v < NV; v++)
                    t[v] = fmin(t[v], time_calls(call_mm_cold, ctx, &c[v], 0.3));
            for (int v = 0; v < NV; v++)
                cold_free(&c[v]);
            printf("%-20s %5lld", shapes[si].name, (long long)m);
            for (int v = 0; v < NV; v++)
                printf(" %10.2f", t[v] * 1e3);
            /* Weight bytes per second: what bounds decode; prefill reuses each weight m times. */
            for (int v = 0; v < NV; v++)
                if (m == 1)
                    printf(" %10.1f", (double)bytes[v] / t[v] * 1e-9);
                else
                    printf(" %10s", "-");
            for (int v = 1; v < NV; v++)
                printf(" %7.2fx", t[0] / t[v]);
            printf("\n");
        }
        for (int v = 0; v < NV; v++)
            free(w[v]);
        free(x);
        free(y);
    }
}

int main(int argc, char **argv)
{
    struct kern_ops ref, cpu;
    kern_ops_init_ref(&ref);
    kern_ops_init_ref(&cpu);
    kern_ops_init_cpu(&cpu);
    struct kern_ctx *ctx = kern_ctx_create_cpu(0);
    if (!ctx) {
        printf("bench_ops: no context\n");
        return 0;
    }
    static const char *const level_names[] = {"generic", "avx2", "avx512", "avx512vnni"};
    enum kern_cpu_level level = kern_cpu_best_level();
    /* A narrower level to measure, as the second argument (e.g. "bench_ops quant avx2"). */
    for (int l = 0; argc > 2 && l < (int)level; l++)
        if (strcmp(argv[2], level_names[l]) == 0 &&
            kern_cpu_ops_init_level(&cpu, (enum kern_cpu_level)l) == 0)
            level = (enum kern_cpu_level)l;
    printf("bench_ops: %d thread(s), inner loops: %s\n", kern_cpu_n_threads(ctx),
           level_names[level]);
    struct kt_rng rng = {7};
    if (argc > 1 && strcmp(argv[1], "quant") == 0) { /* only the quantized table */
        bench_quantized(&cpu, ctx, &rng);
        kern_ctx_destroy(ctx);
        return 0;
    }

    printf("\n%-20s %5s %12s %12s %12s %9s\n", "matmul (bf16 W)", "m", "ref GFLOP/s",
           "cpu GFLOP/s", "cpu ms/call", "speed-up");
    for (int si = 0; si < 3; si++) {
        int64_t k = shapes[si].k, n = shapes[si].n;
        uint16_t *w = malloc((size_t)(n * k) * sizeof *w);
        float *x = malloc((size_t)(128 * k) * sizeof *x), *y = malloc((size_t)(128 * n) * sizeof *y);
        if (!w || !x || !y) {
            printf("out of memory\n");
            return 0;
        }
        kt_fill(&rng, w, KERN_DTYPE_BF16, n * k, -1.0f, 1.0f);
        kt_fill(&rng, x, KERN_DTYPE_F32, 128 * k, -1.0f, 1.0f);
        for (int mi = 0; mi < 2; mi++) {
            int64_t m = ms[mi];
            struct kern_matmul_params p = {x, w, KERN_DTYPE_BF16, y, m, n, k, k, n, 0};
            /* The reference is slow (fp64, scalar): time it on a slice of the output columns,
             * which has the same per-FLOP cost. */
            struct kern_matmul_params pr = p;
            pr.n = m == 1 ? n : 256;
            mm_fn = ref.matmul;
            double t_ref = time_calls(call_mm, NULL, &pr, 0.2);
            mm_fn = cpu.matmul;
            double t_cpu = time_calls(call_mm, ctx, &p, 0.5);
            double g_ref = 2.0 * (double)(m * pr.n * k) / t_ref * 1e-9;
            double g_cpu = 2.0 * (double)(m * n * k) / t_cpu * 1e-9;
            printf("%-20s %5lld %12.2f %12.2f %12.2f %8.1fx\n", shapes[si].name, (long long)m,
                   g_ref, g_cpu, t_cpu * 1e3, g_cpu / g_ref);
        }
        free(w);
        free(x);
        free(y);
    }

    /* Decode attention: Phi-3-mini (32 heads, MHA, head_dim 96), bf16 cache, block 16,
     * ctx 1024, batches of 1 and 8 sequences. FLOPs: 4 * ctx * head_dim per head and row. */
    printf("\n%-20s %5s %12s %12s %12s %9s\n", "attention decode", "seqs", "ref GFLOP/s",
           "cpu GFLOP/s", "cpu ms/call", "speed-up");
    for (int bi = 0; bi < 2; bi++) {
        int64_t n_seqs = bi == 0 ? 1 : 8, heads = 32, d = 96, ctx_len = 1024, bs = 16;
        int64_t max_blocks = ctx_len / bs, n_slots = n_seqs * ctx_len, kv_row = heads * d;
        uint16_t *kc = malloc((size_t)(n_slots * kv_row) * sizeof *kc);
        uint16_t *vc = malloc((size_t)(n_slots * kv_row) * sizeof *vc);
        float *q = malloc((size_t)(n_seqs * kv_row) * sizeof *q), *out = malloc((size_t)(n_seqs * kv_row) * sizeof *out);
        int32_t *bt = malloc((size_t)(n_seqs * max_blocks) * sizeof *bt);
        int32_t qs[8], ql[8], cl[8];
        if (!kc || !vc || !q || !out || !bt) {
            printf("out of memory\n");
            return 0;
        }
        kt_fill(&rng, kc, KERN_DTYPE_BF16, n_slots * kv_row, -1.0f, 1.0f);
        kt_fill(&rng, vc, KERN_DTYPE_BF16, n_slots * kv_row, -1.0f, 1.0f);
        kt_fill(&rng, q, KERN_DTYPE_F32, n_seqs * kv_row, -1.0f, 1.0f);
        for (int64_t i = 0; i < n_seqs * max_blocks; i++)
            bt[i] = (int32_t)((i * 37) % (n_seqs * max_blocks)); /* scattered blocks */
        for (int64_t s = 0; s < n_seqs; s++) {
            qs[s] = (int32_t)s;
            ql[s] = 1;
            cl[s] = (int32_t)ctx_len;
        }
        struct kern_attention_params p = {
            .q = q, .k_cache = kc, .v_cache = vc, .cache_dtype = KERN_DTYPE_BF16, .out = out,
            .q_start = qs, .q_len = ql, .ctx_len = cl, .block_tables = bt, .n_tokens = n_seqs,
            .n_seqs = n_seqs, .n_heads = heads, .n_kv_heads = heads, .head_dim = d,
            .q_stride = kv_row, .max_blocks = max_blocks, .block_size = bs, .n_slots = n_slots,
            .sliding_window = 0, .scale = 0.1f,
        };
        at_fn = ref.attention;
        double t_ref = time_calls(call_at, NULL, &p, 0.2);
        at_fn = cpu.attention;
        double t_cpu = time_calls(call_at, ctx, &p, 0.3);
        double flop = 4.0 * (double)(n_seqs * heads * ctx_len * d);
        printf("%-20s %5lld %12.2f %12.2f %12.3f %8.1fx\n", "ctx 1024 mini", (long long)n_seqs,
               flop / t_ref * 1e-9, flop / t_cpu * 1e-9, t_cpu * 1e3, t_ref / t_cpu);
        free(kc);
        free(vc);
        free(q);
        free(out);
        free(bt);
    }
    bench_quantized(&cpu, ctx, &rng);
    bench_elementwise(&ref, &cpu, ctx, &rng);
    bench_moe(&ref, &cpu, ctx, &rng);
    kern_ctx_destroy(ctx);
    return 0;
}
