/* Fast CPU paged attention: threaded over (sequence, group of kv heads, block of query rows);
 * each task streams its keys in blocks, widened to fp32 once and shared by the GQA group, with
 * an online (running max) softmax in fp32: per block of keys one pass for the scores, one
 * vectorised exp pass and one weighted sum of the values. Masks and validation are those of
 * the reference. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ref/ref.h"
#include "cpu.h"

#define AT_QB 16  /* query rows per task */
#define AT_KB 32  /* keys widened per step */
/* A task reads the rows of up to this many fp32 lanes of adjacent kv heads per key: the cache
 * is [slot, kv head, head_dim], so one head alone touches a new page for every key, while a
 * group of heads reads one contiguous stretch (fewer TLB misses, prefetch-friendly). */
#define AT_GROUP_LANES 1024

struct at_job {
    const struct kern_attention_params *p;
    const struct kern_cpu_isa *isa;
    const int64_t *task_start; /* [n_seqs + 1] first task of each sequence */
    float *scratch;            /* [n_threads, per_thread] */
    int64_t per_thread, group; /* group: query heads per kv head */
    int64_t hg, n_hg;          /* kv heads per task, and such groups per query block */
};

/* Widens n elements of a cache (starting at element elem) to fp32. */
static void widen(const struct at_job *job, const void *cache, int64_t elem, int64_t n,
                  float *dst)
{
    switch (job->p->cache_dtype) {
    case KERN_DTYPE_BF16:
        job->isa->bf16_to_f32((const uint16_t *)cache + elem, dst, n);
        break;
    case KERN_DTYPE_F16:
        job->isa->f16_to_f32((const uint16_t *)cache + elem, dst, n);
        break;
    case KERN_DTYPE_F32:
    default:
        memcpy(dst, (const float *)cache + elem, (size_t)n * sizeof *dst);
        break;
    }
}

static int64_t slot_of(const struct kern_attention_params *p, const int32_t *bt, int64_t j)
{
    return (int64_t)bt[j / p->block_size] * p->block_size + j % p->block_size;
}

/* Asks for the K and V cache rows (n elements from kv head kvh0) of keys [j0, j1) ahead of
 * use: consecutive keys sit a whole cache row apart, a stride the hardware prefetcher does not
 * follow across pages. */
static void prefetch_rows(const struct kern_attention_params *p, const int32_t *bt, int64_t kvh0,
                          int64_t n, int64_t j0, int64_t j1)
{
    size_t es = kern_dtype_size(p->cache_dtype), row_bytes = (size_t)n * es;
    for (int64_t j = j0; j < j1; j++) {
        size_t off = (size_t)((slot_of(p, bt, j) * p->n_kv_heads + kvh0) * p->head_dim) * es;
        for (size_t b = 0; b < row_bytes; b += 64) {
            __builtin_prefetch((const char *)p->k_cache + off + b);
            __builtin_prefetch((const char *)p->v_cache + off + b);
        }
    }
}

/* First visible key of the query at position pos (the window keeps exactly W keys). */
static int64_t first_key(const struct kern_attention_params *p, int64_t pos)
{
    if (p->sliding_window > 0 && pos - p->sliding_window + 1 > 0)
        return pos - p->sliding_window + 1;
    return 0;
}

static void at_task(void *arg, int64_t task, int thread)
{
    const struct at_job *job = arg;
    const struct kern_attention_params *p = job->p;
    int64_t n_kv = p->n_kv_heads, d = p->head_dim, g_n = job->group;
    /* task -> (sequence, kv head group, query block): sequences own consecutive ranges. */
    int64_t lo_s = 0, hi_s = p->n_seqs - 1;
    while (lo_s < hi_s) {
        int64_t mid = (lo_s + hi_s + 1) / 2;
        if (job->task_start[mid] <= task)
            lo_s = mid;
        else
            hi_s = mid - 1;
    }
    int64_t s = lo_s, local = task - job->task_start[s];
    int64_t kvh0 = (local % job->n_hg) * job->hg, r0 = (local / job->n_hg) * AT_QB;
    int64_t hn = n_kv - kvh0 < job->hg ? n_kv - kvh0 : job->hg; /* kv heads of this task */
    int64_t ql = p->q_len[s], cl = p->ctx_len[s];
    int64_t r1 = ql - r0 < AT_QB ? ql : r0 + AT_QB;
    int64_t n_rows = (r1 - r0) * hn * g_n, lanes = hn * d;
    const int32_t *bt = p->block_tables + s * p->max_blocks;

    float *kf = job->scratch + (int64_t)thread * job->per_thread; /* [AT_KB, lanes] */
    float *vf = kf + AT_KB * lanes;                              /* [AT_KB, lanes] */
    float *sc = vf + AT_KB * lanes;                              /* [AT_KB] */
    float *mx = sc + AT_KB;                                      /* [n_rows] running max */
    float *sum = mx + n_rows;                                    /* [n_rows] running sum */
    float *acc = sum + n_rows;                                   /* [n_rows, d] */
    for (int64_t r = 0; r < n_rows; r++) {
        mx[r] = -INFINITY;
        sum[r] = 0.0f;
    }
    memset(acc, 0, (size_t)(n_rows * d) * sizeof *acc);

    int64_t pos0 = cl - ql + r0, pos1 = cl - ql + r1 - 1;
    for (int64_t kb0 = first_key(p, pos0); kb0 <= pos1; kb0 += AT_KB) {
        int64_t kb1 = pos1 + 1 - kb0 < AT_KB ? pos1 + 1 : kb0 + AT_KB;
        prefetch_rows(p, bt, kvh0, lanes, kb1, pos1 + 1 - kb1 < AT_KB ? pos1 + 1 : kb1 + AT_KB);
        /* Where key j's rows of the group start: in the cache itself for fp32, in the widened
         * copies for 16-bit caches (row stride kstride either way). */
        const float *kbase[AT_KB], *vbase[AT_KB];
        for (int64_t j = kb0; j < kb1; j++) {
            int64_t elem = (slot_of(p, bt, j) * n_kv + kvh0) * d;
            if (p->cache_dtype == KERN_DTYPE_F32) {
                kbase[j - kb0] = (const float *)p->k_cache + elem;
                vbase[j - kb0] = (const float *)p->v_cache + elem;
            } else {
                widen(job, p->k_cache, elem, lanes, kf + (j - kb0) * lanes);
                widen(job, p->v_cache, elem, lanes, vf + (j - kb0) * lanes);
                kbase[j - kb0] = kf + (j - kb0) * lanes;
                vbase[j - kb0] = vf + (j - kb0) * lanes;
            }
        }
        for (int64_t h = 0; h < hn; h++) {
            const float *kp[AT_KB], *vp[AT_KB];
            for (int64_t j = 0; j < kb1 - kb0; j++) {
                kp[j] = kbase[j] + h * d;
                vp[j] = vbase[j] + h * d;
            }
            for (int64_t i = r0; i < r1; i++) {
                int64_t pos = cl - ql + i, tok = p->q_start[s] + i;
                int64_t a = first_key(p, pos), b = pos + 1; /* visible keys [a, b) */
                if (a < kb0)
                    a = kb0;
                if (b > kb1)
                    b = kb1;
                if (a >= b)
                    continue;
                for (int64_t g = 0; g < g_n; g++) {
                    int64_t r = ((i - r0) * hn + h) * g_n + g;
                    const float *q = p->q + tok * p->q_stride + ((kvh0 + h) * g_n + g) * d;
                    /* Scores of the whole block at once; a NaN score is skipped by the max
                     * and poisons the sum through its weight. */
                    float bmax = job->isa->scores(q, kp + (a - kb0), b - a, d, p->scale, sc);
                    float m_new = bmax > mx[r] ? bmax : mx[r];
                    float corr = expf(mx[r] - m_new);
                    if (!(corr == 1.0f)) { /* also taken for NaN, which must propagate */
                        sum[r] *= corr;
                        for (int64_t e = 0; e < d; e++)
                            acc[r * d + e] *= corr;
                    }
                    sum[r] += job->isa->exp_sum(sc, b - a, m_new);
                    job->isa->wsum(acc + r * d, sc, vp + (a - kb0), b - a, d);
                    mx[r] = m_new;
                }
            }
        }
    }
    for (int64_t i = r0; i < r1; i++) {
        int64_t tok = p->q_start[s] + i;
        for (int64_t h = 0; h < hn; h++)
            for (int64_t g = 0; g < g_n; g++) {
                int64_t r = ((i - r0) * hn + h) * g_n + g;
                float *out = p->out + (tok * p->n_heads + (kvh0 + h) * g_n + g) * d;
                float inv = 1.0f / sum[r];
                for (int64_t e = 0; e < d; e++)
                    out[e] = acc[r * d + e] * inv;
            }
    }
}

static int attention(struct kern_ctx *ctx, const struct kern_attention_params *p,
                     const struct kern_cpu_isa *isa)
{
    int rc = kern_ref_attention_check(p);
    if (rc)
        return rc;
    if (p->n_seqs == 0)
        return KERN_OK;
    struct at_job job = {.p = p, .isa = isa, .group = p->n_heads / p->n_kv_heads, .hg = 1};
    int n_threads = kern_cpu_n_threads(ctx);
    int64_t q_blocks = 0;
    for (int64_t s = 0; s < p->n_seqs; s++) /* q_len <= n_tokens, so no overflow */
        q_blocks += (p->q_len[s] + AT_QB - 1) / AT_QB;
    /* Widen the kv-head groups while every thread still gets four tasks or more. */
    while (job.hg * 2 <= p->n_kv_heads && job.hg * 2 * p->head_dim <= AT_GROUP_LANES &&
           q_blocks * (p->n_kv_heads / (job.hg * 2)) >= 4 * (int64_t)n_threads)
        job.hg *= 2;
    job.n_hg = (p->n_kv_heads + job.hg - 1) / job.hg;
    /* Per thread: two widened key blocks of the group's heads, their scores, and the softmax
     * state of AT_QB rows of the group's query heads. head_dim and n_heads are checked
     * products, so only the final sizes need overflow checks. One scratch holds the task
     * starts ([n_seqs + 1] int64) and then, 64-byte aligned, the threads' floats. */
    int64_t rows, lanes, state, blocks, per;
    size_t starts = ((size_t)(p->n_seqs + 1) * sizeof(int64_t) + 63) & ~(size_t)63, bytes;
    if (ref_mul(AT_QB * job.group, job.hg, &rows) || ref_mul(rows, p->head_dim + 2, &state) ||
        ref_mul(job.hg, p->head_dim, &lanes) || ref_mul(2 * AT_KB, lanes, &blocks) ||
        __builtin_add_overflow(state, blocks + AT_KB, &per) ||
        __builtin_mul_overflow((size_t)per, (size_t)n_threads * sizeof(float), &bytes) ||
        __builtin_add_overflow(bytes, starts, &bytes))
        return KERN_ERR_NOMEM;
    struct kern_cpu_scratch sc;
    char *mem = kern_cpu_scratch_get(ctx, bytes, &sc);
    if (!mem)
        return KERN_ERR_NOMEM;
    int64_t *task_start = (int64_t *)(void *)mem;
    task_start[0] = 0;
    for (int64_t s = 0; s < p->n_seqs; s++)
        task_start[s + 1] = task_start[s] + (p->q_len[s] + AT_QB - 1) / AT_QB * job.n_hg;
    job.task_start = task_start;
    job.scratch = (float *)(void *)(mem + starts);
    job.per_thread = per;
    kern_cpu_parallel_for(ctx, task_start[p->n_seqs], at_task, &job);
    kern_cpu_scratch_put(ctx, &sc);
    return KERN_OK;
}

KERN_CPU_DEFINE_LEVELS(attention, kern_attention_params)
