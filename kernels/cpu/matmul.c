/* Fast CPU matmul: y[m, n] (+)= x[m, k] @ W[n, k]^T in fp32, threaded over blocks of output
 * columns (W rows) and rows, k split into cache-sized chunks, 16-bit weights widened per chunk;
 * for the R16 formats, x rounded to 8-bit blocks and integer products (ops.h).
 * Not a general BLAS: row-major x, W in the nn.Linear layout, fp32 activations only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ref/ref.h"
#include "cpu.h"

/* Two regimes. Decode-like calls (m <= MM_DIRECT_M) are bound by reading W once: a task owns
 * MM_NB_DIRECT whole W rows and the register tile widens 16-bit weights as it loads them, four
 * rows streaming at a time (few enough streams for the hardware prefetcher). Larger m is
 * bound by arithmetic: a task owns MM_NB output columns and up to MM_MB rows; W is widened
 * MM_KC elements of k at a time into a per-thread panel (NB x KC fp32 = 256 KiB, in L2) that
 * every x row of the block reuses, and the x rows of a register tile (4 x 4 KiB) stay in L1. */
#define MM_DIRECT_M 4
#define MM_NB_DIRECT 16
#define MM_NB 64
#define MM_KC 1024
_Static_assert(MM_KC % KERN_QBLOCK == 0 && MM_KC % KERN_QKBLOCK == 0,
               "block-format panels start on a block");
#define MM_MB 256
/* Below this many multiply-adds the wake-up of the pool costs more than it saves. */
#define MM_SERIAL_WORK (1 << 16)

struct mm_job {
    const struct kern_matmul_params *p;
    const struct kern_cpu_isa *isa;
    float *scratch;            /* [n_threads, MM_NB * MM_KC] widened W chunks, or NULL (f32) */
    int64_t n_col_blocks, nb_cols; /* column blocks of nb_cols W rows */
    int64_t w_row_bytes;       /* bytes of one W row (k elements) */
};

/* Decode-like task: nb_cols whole W rows against every x row, no panel. */
static void mm_task_direct(void *arg, int64_t task, int thread)
{
    const struct mm_job *job = arg;
    const struct kern_matmul_params *p = job->p;
    (void)thread;
    int64_t j0 = task * job->nb_cols;
    int64_t nb = p->n - j0 < job->nb_cols ? p->n - j0 : job->nb_cols;
    float *y = p->y + j0;
    if (!p->accumulate)
        for (int64_t i = 0; i < p->m; i++)
            memset(y + i * p->ldy, 0, (size_t)nb * sizeof *y);
    /* All of k in one gemm: a row's rounding is then the same for every m <= MM_DIRECT_M, and
     * for larger m too while k <= MM_KC (mm_task adds its k chunks to y one by one). Cutting
     * k here the same way would make every m agree for the k of real models, but it cost
     * 10-20% of batch-1 decode speed (bench_ops, qkv/down at m = 1), so it is not done. */
    const char *w = (const char *)p->w + (size_t)j0 * (size_t)job->w_row_bytes;
    job->isa->gemm[p->w_dtype](p->x, p->ldx, w, p->k, y, p->ldy, p->m, nb, p->k);
}

static void mm_task(void *arg, int64_t task, int thread)
{
    const struct mm_job *job = arg;
    const struct kern_matmul_params *p = job->p;
    int64_t j0 = (task % job->n_col_blocks) * MM_NB;
    int64_t i0 = (task / job->n_col_blocks) * MM_MB;
    int64_t nb = p->n - j0 < MM_NB ? p->n - j0 : MM_NB;
    int64_t mb = p->m - i0 < MM_MB ? p->m - i0 : MM_MB;
    float *y = p->y + i0 * p->ldy + j0;
    const float *x = p->x + i0 * p->ldx;
    if (!p->accumulate)
        for (int64_t i = 0; i < mb; i++)
            memset(y + i * p->ldy, 0, (size_t)nb * sizeof *y);
    for (int64_t kc = 0; kc < p->k; kc += MM_KC) {
        int64_t len = p->k - kc < MM_KC ? p->k - kc : MM_KC;
        const float *w;
        int64_t ldw;
        if (p->w_dtype == KERN_DTYPE_F32) {
            w = (const float *)p->w + j0 * p->k + kc;
            ldw = p->k;
        } else {
            float *buf = job->scratch + (int64_t)thread * MM_NB * MM_KC;
            const char *row = (const char *)p->w + (size_t)j0 * (size_t)job->w_row_bytes;
            for (int64_t r = 0; r < nb; r++, row += job->w_row_bytes) {
                if (job->isa->block_to_f32[p->w_dtype]) /* kc is a multiple of the block */
                    job->isa->block_to_f32[p->w_dtype](
                        row + kern_dtype_row_bytes(p->w_dtype, kc), buf + r * len, len);
                else if (p->w_dtype == KERN_DTYPE_BF16)
                    job->isa->bf16_to_f32((const uint16_t *)row + kc, buf + r * len, len);
                else
                    job->isa->f16_to_f32((const uint16_t *)row + kc, buf + r * len, len);
            }
            w = buf;
            ldw = len;
        }
        job->isa->gemm[KERN_DTYPE_F32](x + kc, p->ldx, w, ldw, y, p->ldy, mb, nb, len);
    }
}

/* The int8 dot of the R16 formats. x is rounded once, then a task owns whole groups of
 * KERN_R16 columns (R16_GROUPS of them) against a block of rows: all of them for decode-like
 * calls, R16_MB otherwise, in register tiles of KERN_CPU_R16_MR rows. A group's blocks lie
 * one after another, so each task reads W as a few sequential streams, and a prefill task
 * reuses its groups (54 KiB for Q8_0 at k = 3072) from L2 for every tile of rows. There is no
 * k split: a row's sums are the same for every m. */
#define R16_GROUPS 4
#define R16_MB 64

struct r16_job {
    const struct kern_matmul_params *p;
    const struct kern_cpu_isa *isa;
    const int8_t *q;           /* [m, k] x rounded */
    const float *d;            /* [m, nb] block scales */
    const int32_t *s;          /* [m, s_ld] sums of q: per block (s_ld = nb), per 16 for Q6_K */
    const uint8_t *bad;        /* [m] the row holds a non-finite value */
    int64_t nb, s_ld, group_bytes, n_groups, n_group_tasks, rows_per_task;
};

static void r16_task(void *arg, int64_t task, int thread)
{
    const struct r16_job *job = arg;
    const struct kern_matmul_params *p = job->p;
    (void)thread;
    int64_t g0 = (task % job->n_group_tasks) * R16_GROUPS;
    int64_t i0 = (task / job->n_group_tasks) * job->rows_per_task;
    int64_t g1 = g0 + R16_GROUPS < job->n_groups ? g0 + R16_GROUPS : job->n_groups;
    int64_t i1 = i0 + job->rows_per_task < p->m ? i0 + job->rows_per_task : p->m;
    float out[KERN_CPU_R16_MR * KERN_R16];
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *wg = (const uint8_t *)p->w + g * job->group_bytes;
        int64_t c0 = g * KERN_R16, nc = p->n - c0 < KERN_R16 ? p->n - c0 : KERN_R16;
        for (int64_t i = i0; i < i1; i += KERN_CPU_R16_MR) {
            int mr = (int)(i1 - i < KERN_CPU_R16_MR ? i1 - i : KERN_CPU_R16_MR);
            job->isa->gemm_r16[p->w_dtype](job->q + i * p->k, job->d + i * job->nb,
                                           job->s + i * job->s_ld, p->k, job->nb, wg, job->nb,
                                           out, mr);
            for (int r = 0; r < mr; r++) {
                float *y = p->y + (i + r) * p->ldy + c0;
                const float *o = out + r * KERN_R16;
                if (job->bad[i + r])
                    for (int64_t c = 0; c < nc; c++)
                        y[c] = NAN;
                else if (p->accumulate)
                    for (int64_t c = 0; c < nc; c++)
                        y[c] += o[c];
                else
                    memcpy(y, o, (size_t)nc * sizeof *y);
            }
        }
    }
}

/* pool: ctx, or NULL when the call is too small to wake the pool; owner keeps the scratch. */
static int matmul_r16(struct kern_ctx *pool, struct kern_ctx *owner,
                      const struct kern_matmul_params *p, const struct kern_cpu_isa *isa)
{
    if (p->k == 0) { /* no products (x may be NULL): y = 0, or y as it is */
        for (int64_t i = 0; i < p->m && !p->accumulate; i++)
            memset(p->y + i * p->ldy, 0, (size_t)p->n * sizeof *p->y);
        return KERN_OK;
    }
    struct r16_job job = {.p = p, .isa = isa, .nb = p->k / KERN_QBLOCK};
    job.group_bytes = kern_dtype_matrix_bytes(p->w_dtype, KERN_R16, p->k);
    job.n_groups = (p->n + KERN_R16 - 1) / KERN_R16;
    job.n_group_tasks = (job.n_groups + R16_GROUPS - 1) / R16_GROUPS;
    job.rows_per_task = p->m <= MM_DIRECT_M ? p->m : R16_MB;
    /* Scratch: q, then d and s (4-byte aligned: k is a multiple of 32), Q6_K's sums per 16
     * values, then the flags. */
    const int q6 = p->w_dtype == KERN_DTYPE_Q6_K_R16;
    size_t qb = (size_t)p->m * (size_t)p->k, db = (size_t)p->m * (size_t)job.nb * 4;
    size_t s16b = q6 ? 2 * db : 0;
    struct kern_cpu_scratch sc;
    uint8_t *buf = kern_cpu_scratch_get(owner, qb + 2 * db + s16b + (size_t)p->m, &sc);
    if (!buf)
        return KERN_ERR_NOMEM;
    int8_t *q = (int8_t *)buf;
    float *d = (float *)(buf + qb);
    int32_t *s = (int32_t *)(buf + qb + db);
    int32_t *s16 = (int32_t *)(buf + qb + 2 * db);
    uint8_t *bad = buf + qb + 2 * db + s16b;
    for (int64_t i = 0; i < p->m; i++) {
        bad[i] = isa->x8_quant(p->x + i * p->ldx, p->k, q + i * p->k, d + i * job.nb,
                               s + i * job.nb) != 0;
        for (int64_t h = 0; q6 && !bad[i] && h < 2 * job.nb; h++) {
            int32_t sum = 0;
            for (int t = 0; t < 16; t++)
                sum += q[i * p->k + 16 * h + t];
            s16[i * 2 * job.nb + h] = sum;
        }
    }
    job.s_ld = q6 ? 2 * job.nb : job.nb;
    job.q = q;
    job.d = d;
    job.s = q6 ? s16 : s;
    job.bad = bad;
    int64_t n_tasks = job.n_group_tasks * ((p->m + job.rows_per_task - 1) / job.rows_per_task);
    kern_cpu_parallel_for(pool, n_tasks, r16_task, &job);
    kern_cpu_scratch_put(owner, &sc);
    return KERN_OK;
}

static int matmul(struct kern_ctx *ctx, const struct kern_matmul_params *p,
                  const struct kern_cpu_isa *isa)
{
    int rc = kern_ref_matmul_check(p);
    if (rc)
        return rc;
    if (p->m == 0 || p->n == 0)
        return KERN_OK;
    /* m, n, k are each below 2^60 (checked), but their product may not fit: saturate. */
    int64_t work;
    if (p->m > INT64_MAX / p->n || __builtin_mul_overflow(p->m * p->n, p->k, &work))
        work = INT64_MAX;
    struct kern_ctx *owner = ctx; /* keeps the scratch even when the call runs serially */
    if (work < MM_SERIAL_WORK)
        ctx = NULL;
    if (kern_dtype_is_r16(p->w_dtype))
        return matmul_r16(ctx, owner, p, isa);
    struct mm_job job = {.p = p, .isa = isa, .w_row_bytes = kern_dtype_row_bytes(p->w_dtype, p->k)};
    if (p->m <= MM_DIRECT_M || p->k == 0) {
        job.nb_cols = MM_NB_DIRECT;
        job.n_col_blocks = (p->n + MM_NB_DIRECT - 1) / MM_NB_DIRECT;
        kern_cpu_parallel_for(ctx, job.n_col_blocks, mm_task_direct, &job);
        return KERN_OK;
    }
    job.nb_cols = MM_NB;
    job.n_col_blocks = (p->n + MM_NB - 1) / MM_NB;
    struct kern_cpu_scratch sc = {NULL, 0};
    if (p->w_dtype != KERN_DTYPE_F32) {
        size_t n_threads = (size_t)kern_cpu_n_threads(ctx);
        job.scratch = kern_cpu_scratch_get(owner, n_threads * MM_NB * MM_KC * sizeof *job.scratch,
                                           &sc);
        if (!job.scratch)
            return KERN_ERR_NOMEM;
    }
    int64_t n_row_blocks = (p->m + MM_MB - 1) / MM_MB;
    kern_cpu_parallel_for(ctx, n_row_blocks * job.n_col_blocks, mm_task, &job);
    if (job.scratch)
        kern_cpu_scratch_put(owner, &sc);
    return KERN_OK;
}

KERN_CPU_DEFINE_LEVELS(matmul, kern_matmul_params)
