/* Fast CPU dense attention (kern_attention_dense_params, the CLIP vision tower): threaded over
 * (sequence, head, block of AD_QB queries). A task walks the keys in blocks of AD_KB: the
 * block's scores S = Q K^T with the register-tiled gemm of its instruction set, an online
 * (running max) softmax over them in fp32, the block's values transposed once so that
 * O += P V is the same gemm. Not the paged causal attention (cpu/attention.c). Validation
 * is the reference's. The work of a task depends on the shapes alone, never on the number of
 * threads, so neither do the results. */
#include <math.h>
#include <string.h>

#include "../ref/ref.h"
#include "cpu.h"

#define AD_QB 64  /* query rows per task: each key block (and its transposed V) serves them all */
#define AD_KB 256 /* keys per step: a block's K and V of one head stay in L2 */

struct ad_job {
    const struct kern_attention_dense_params *p;
    const struct kern_cpu_isa *isa;
    float *scratch;            /* [n_threads, per_thread] */
    int64_t per_thread, n_qb;  /* n_qb: query blocks per sequence */
};

/* The online softmax update of one query row for a block of n scores (scaled in place and
 * replaced by their weights): returns the factor that the row's running sum and output must
 * be multiplied by before this block's weights are added. A -inf score weighs 0; a NaN
 * score gives a NaN weight (NaN output); a row whose scores so far are all -inf keeps
 * nothing. */
static float ad_softmax_block(const struct kern_cpu_isa *isa, float *sc, int64_t n, float scale,
                              float *m, float *l)
{
    float bmax = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        sc[j] *= scale;
        if (sc[j] > bmax) /* NaN skipped: it reaches the sum through its weight */
            bmax = sc[j];
    }
    float m_new = bmax > *m ? bmax : *m;
    float corr;
    if (*m == -INFINITY) /* nothing weighed yet: sum and output are 0 (or NaN) */
        corr = m_new == -INFINITY ? 1.0f : 0.0f;
    else
        corr = expf(*m - m_new); /* NaN when both are +inf, as the reference */
    /* With m_new == -inf every score is -inf or NaN: exp(s - 0) gives 0 or NaN. */
    *l = *l * corr + isa->exp_sum(sc, n, m_new == -INFINITY ? 0.0f : m_new);
    *m = m_new;
    return corr;
}

static void ad_task(void *arg, int64_t task, int thread)
{
    const struct ad_job *job = arg;
    const struct kern_attention_dense_params *p = job->p;
    const struct kern_cpu_isa *isa = job->isa;
    const int64_t d = p->head_dim, L = p->seq_len, ld = p->ld;
    int64_t qb = task % job->n_qb, sh = task / job->n_qb;
    int64_t h = sh % p->n_heads, s = sh / p->n_heads;
    int64_t t0 = s * L, i0 = qb * AD_QB;
    int64_t rows = L - i0 < AD_QB ? L - i0 : AD_QB;

    float *sc = job->scratch + (int64_t)thread * job->per_thread; /* [rows, nk] scores */
    float *vt = sc + AD_QB * AD_KB;                              /* [d, nk] V^T of a block */
    float *acc = vt + d * AD_KB;                                 /* [rows, d] */
    float *mx = acc + AD_QB * d;                                 /* [rows] running max */
    float *sum = mx + AD_QB;                                     /* [rows] running sum */
    for (int64_t r = 0; r < rows; r++) {
        mx[r] = -INFINITY;
        sum[r] = 0.0f;
    }
    memset(acc, 0, (size_t)(rows * d) * sizeof *acc);

    const float *q = p->q + (t0 + i0) * ld + h * d;
    for (int64_t kb = 0; kb < L; kb += AD_KB) {
        int64_t nk = L - kb < AD_KB ? L - kb : AD_KB;
        const float *k = p->k + (t0 + kb) * ld + h * d;
        const float *v = p->v + (t0 + kb) * ld + h * d;
        memset(sc, 0, (size_t)(rows * nk) * sizeof *sc);
        isa->gemm[KERN_DTYPE_F32](q, ld, k, ld, sc, nk, rows, nk, d);
        for (int64_t r = 0; r < rows; r++) {
            float corr = ad_softmax_block(isa, sc + r * nk, nk, p->scale, &mx[r], &sum[r]);
            if (!(corr == 1.0f)) /* also taken for NaN, which must propagate */
                for (int64_t e = 0; e < d; e++)
                    acc[r * d + e] *= corr;
        }
        for (int64_t j = 0; j < nk; j++)
            for (int64_t e = 0; e < d; e++)
                vt[e * nk + j] = v[j * ld + e];
        isa->gemm[KERN_DTYPE_F32](sc, nk, vt, nk, acc, d, rows, d, nk);
    }
    for (int64_t r = 0; r < rows; r++) {
        float inv = 1.0f / sum[r]; /* every score -inf: 0 * inf = NaN, as the reference */
        float *out = p->out + ((t0 + i0 + r) * p->n_heads + h) * d;
        for (int64_t e = 0; e < d; e++)
            out[e] = acc[r * d + e] * inv;
    }
}

static int attention_dense(struct kern_ctx *ctx, const struct kern_attention_dense_params *p,
                           const struct kern_cpu_isa *isa)
{
    int rc = kern_ref_attention_dense_check(p);
    if (rc != KERN_OK || p->n_seqs == 0 || p->seq_len == 0 || p->n_heads == 0)
        return rc;
    struct ad_job job = {.p = p, .isa = isa, .n_qb = (p->seq_len + AD_QB - 1) / AD_QB};
    /* Per thread: scores and transposed values of one key block, the output rows and their
     * (max, sum); head_dim <= 256 bounds it (about 400 KB), rounded to 64 bytes. */
    job.per_thread = (AD_QB * AD_KB + p->head_dim * AD_KB + AD_QB * p->head_dim + 2 * AD_QB +
                      15) / 16 * 16;
    int n_threads = kern_cpu_n_threads(ctx);
    size_t bytes;
    if (__builtin_mul_overflow((size_t)job.per_thread * sizeof(float), (size_t)n_threads, &bytes))
        return KERN_ERR_NOMEM;
    struct kern_cpu_scratch sc;
    job.scratch = kern_cpu_scratch_get(ctx, bytes, &sc);
    if (!job.scratch)
        return KERN_ERR_NOMEM;
    /* n_seqs * n_heads * n_qb <= n_seqs * seq_len * n_heads, a checked product. */
    int64_t n_tasks = p->n_seqs * p->n_heads * job.n_qb;
    kern_cpu_parallel_for(ctx, n_tasks, ad_task, &job);
    kern_cpu_scratch_put(ctx, &sc);
    return KERN_OK;
}

KERN_CPU_DEFINE_LEVELS(attention_dense, kern_attention_dense_params)
