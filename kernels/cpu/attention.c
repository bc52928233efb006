/* Fast CPU paged attention: threaded over (sequence, kv head, block of query rows); each task
 * streams its keys in blocks, widened to fp32 once and shared by the GQA group, with an online
 * (running max) softmax in fp32. Masks and validation are those of the reference. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ref/ref.h"
#include "cpu.h"

#define AT_QB 16  /* query rows per task */
#define AT_KB 64  /* keys widened per step */

struct at_job {
    const struct kern_attention_params *p;
    const struct kern_cpu_isa *isa;
    const int64_t *task_start; /* [n_seqs + 1] first task of each sequence (per kv head) */
    float *scratch;            /* [n_threads, per_thread] */
    int64_t per_thread, group;
};

/* Widens the head_dim elements of a cache row (starting at element elem) to fp32. */
static void widen_row(const struct at_job *job, const void *cache, int64_t elem, float *dst)
{
    int64_t d = job->p->head_dim;
    switch (job->p->cache_dtype) {
    case KERN_DTYPE_BF16:
        job->isa->bf16_to_f32((const uint16_t *)cache + elem, dst, d);
        break;
    case KERN_DTYPE_F16:
        job->isa->f16_to_f32((const uint16_t *)cache + elem, dst, d);
        break;
    case KERN_DTYPE_F32:
    default:
        memcpy(dst, (const float *)cache + elem, (size_t)d * sizeof *dst);
        break;
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
    /* task -> (sequence, kv head, query block): sequences own consecutive task ranges. */
    int64_t lo_s = 0, hi_s = p->n_seqs - 1;
    while (lo_s < hi_s) {
        int64_t mid = (lo_s + hi_s + 1) / 2;
        if (job->task_start[mid] <= task)
            lo_s = mid;
        else
            hi_s = mid - 1;
    }
    int64_t s = lo_s, local = task - job->task_start[s];
    int64_t kvh = local % n_kv, r0 = (local / n_kv) * AT_QB;
    int64_t ql = p->q_len[s], cl = p->ctx_len[s];
    int64_t r1 = ql - r0 < AT_QB ? ql : r0 + AT_QB;
    int64_t n_rows = (r1 - r0) * g_n;
    const int32_t *bt = p->block_tables + s * p->max_blocks;

    float *kf = job->scratch + (int64_t)thread * job->per_thread; /* [AT_KB, d] */
    float *vf = kf + AT_KB * d;                                  /* [AT_KB, d] */
    float *sc = vf + AT_KB * d;                                  /* [AT_KB] */
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
        for (int64_t j = kb0; j < kb1; j++) {
            int64_t slot = (int64_t)bt[j / p->block_size] * p->block_size + j % p->block_size;
            int64_t elem = (slot * n_kv + kvh) * d;
            widen_row(job, p->k_cache, elem, kf + (j - kb0) * d);
            widen_row(job, p->v_cache, elem, vf + (j - kb0) * d);
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
                int64_t r = (i - r0) * g_n + g;
                const float *q = p->q + tok * p->q_stride + (kvh * g_n + g) * d;
                float bmax = -INFINITY;
                for (int64_t j = a; j < b; j++) {
                    float v = job->isa->dot(q, kf + (j - kb0) * d, d) * p->scale;
                    sc[j - kb0] = v;
                    if (v > bmax)
                        bmax = v; /* a NaN score is skipped here and poisons sum below */
                }
                float m_new = bmax > mx[r] ? bmax : mx[r];
                float corr = expf(mx[r] - m_new);
                if (!(corr == 1.0f)) { /* also taken for NaN, which must propagate */
                    sum[r] *= corr;
                    for (int64_t e = 0; e < d; e++)
                        acc[r * d + e] *= corr;
                }
                for (int64_t j = a; j < b; j++) {
                    float w = expf(sc[j - kb0] - m_new);
                    sum[r] += w;
                    job->isa->axpby(acc + r * d, 1.0f, w, vf + (j - kb0) * d, d);
                }
                mx[r] = m_new;
            }
        }
    }
    for (int64_t i = r0; i < r1; i++) {
        int64_t tok = p->q_start[s] + i;
        for (int64_t g = 0; g < g_n; g++) {
            int64_t r = (i - r0) * g_n + g;
            float *out = p->out + (tok * p->n_heads + kvh * g_n + g) * d;
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
    struct at_job job = {.p = p, .isa = isa, .group = p->n_heads / p->n_kv_heads};
    int64_t *task_start = malloc((size_t)(p->n_seqs + 1) * sizeof *task_start);
    if (!task_start)
        return KERN_ERR_NOMEM;
    task_start[0] = 0;
    for (int64_t s = 0; s < p->n_seqs; s++) /* q_len <= n_tokens, so no overflow */
        task_start[s + 1] = task_start[s] + (p->q_len[s] + AT_QB - 1) / AT_QB * p->n_kv_heads;
    /* Per thread: two widened key blocks, their scores, and the softmax state of AT_QB rows of
     * the group's heads. head_dim and n_heads are checked products, so only the final sizes
     * need overflow checks. */
    int64_t rows = AT_QB * job.group, state, blocks, per;
    if (ref_mul(rows, p->head_dim + 2, &state) || ref_mul(2 * AT_KB, p->head_dim, &blocks) ||
        __builtin_add_overflow(state, blocks + AT_KB, &per)) {
        free(task_start);
        return KERN_ERR_NOMEM;
    }
    int n_threads = kern_cpu_n_threads(ctx);
    size_t bytes;
    if (__builtin_mul_overflow((size_t)per, (size_t)n_threads * sizeof(float), &bytes) ||
        !(job.scratch = malloc(bytes))) {
        free(task_start);
        return KERN_ERR_NOMEM;
    }
    job.task_start = task_start;
    job.per_thread = per;
    kern_cpu_parallel_for(ctx, task_start[p->n_seqs], at_task, &job);
    free(job.scratch);
    free(task_start);
    return KERN_OK;
}

int kern_cpu_attention_generic(struct kern_ctx *ctx, const struct kern_attention_params *p)
{
    return attention(ctx, p, kern_cpu_isa_generic());
}

int kern_cpu_attention_avx2(struct kern_ctx *ctx, const struct kern_attention_params *p)
{
    const struct kern_cpu_isa *isa = kern_cpu_isa_avx2();
    return attention(ctx, p, isa ? isa : kern_cpu_isa_generic());
}
