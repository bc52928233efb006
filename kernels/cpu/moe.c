/* Fast CPU mixture-of-experts FFN: the slots (token, k) sorted by expert, each expert's x rows
 * gathered and run through the backend's gemm inner loops (gate and up with the SiLU fused, then
 * down; float or block-format experts, widened in registers), and the top_k outputs of each
 * token combined in ascending expert order and added to y. Not the router (moe_route stays
 * the reference on the CPU: 16 logits a token) and not a general grouped GEMM. Unusual calls
 * go to the reference, which decides. */
#include <string.h>

#include "../ref/ref.h"
#include "cpu.h"

/* Batch invariance. A token's result must not depend on what else is in the batch, yet the
 * number of rows an expert gets does. The matmul op is not usable here: it sums all of k at
 * once for m <= 4 and in 1024-element chunks above, so a row's rounding depends on m. This file
 * drives the gemm inner loops itself with one k split for every row count: chunks of MOE_KC,
 * each summed by the gemm over its first multiple of MOE_VEC elements (fp32 lane partial sums:
 * the same multiply-adds for one output element whatever tile it falls in) and, for the last
 * chunk, the few elements left by the plain loop in expert_gemm. The gemm's own scalar tail is
 * never used: the compiler contracts it into fused multiply-adds differently in different
 * instantiations (measured: AVX2, bf16 against fp32 weights), so its rounding is not a property
 * of the element alone. For the same reason every row count uses the one gemm build of w_dtype,
 * which widens 16-bit weights in registers (no fp32 panel as the matmul op has for m > 4):
 * measured at hidden 4096, inter 1600, bf16, 2 threads, that is 2x faster than a panel for a
 * decode token and 1.3x for 64 tokens over 8 experts. Block-format experts (hidden and inter
 * whole blocks: kern_ref_moe_check) take the same path: every chunk starts on a block and is
 * whole blocks, all multiples of MOE_VEC, so the plain loop never runs for them. */
#define MOE_KC 1024
#define MOE_VEC 16             /* the widest lane count: chunks cut here have no gemm tail */
_Static_assert(MOE_KC % KERN_QBLOCK == 0 && MOE_KC % KERN_QKBLOCK == 0 &&
                   KERN_QBLOCK % MOE_VEC == 0,
               "block-format chunks start on a block and have no gemm tail");
#define MOE_NB1 32             /* inter columns per task of the gate/up pass (2 x 32 W rows) */
#define MOE_NB2 64             /* hidden columns per task of the down pass */
#define MOE_MB 64              /* rows of one expert per task */
/* Below this many multiply-adds the wake-up of the pool costs more than it saves. */
#define MOE_SERIAL_WORK (1 << 16)

/* A run of sorted rows [row0, row1) that all belong to one expert. */
struct moe_block {
    int32_t row0, row1, expert;
};

struct moe_job {
    const struct kern_moe_params *p;
    const struct kern_cpu_isa *isa;
    float *a;                  /* [S, hidden] gathered x rows, then the experts' outputs */
    float *b;                  /* [S, 2 * inter] gate | up, then silu(gate) * up in the gate half */
    const int32_t *slot_of;    /* [S] the slot (t * top_k + k) of each sorted row */
    int32_t *row_of;           /* [S] the sorted row of each slot */
    const struct moe_block *blocks; /* [n_blocks] */
    int64_t n_blocks, n_cb;    /* column blocks per row block of the current pass */
    int64_t rows_per_task;     /* gather and combine passes */
};

/* y[mb, nb] = x[mb, len] @ W[nb, len]^T, W rows of length len at stride ldw elements in
 * w_dtype, y of row stride ldy (overwritten): len split into MOE_KC chunks added one after the
 * other, the last one's elements past a multiple of MOE_VEC summed here in order (see the
 * top). */
static void expert_gemm(const struct moe_job *job, const float *x, int64_t ldx, const void *w,
                        int64_t ldw, float *y, int64_t ldy, int64_t mb, int64_t nb, int64_t len)
{
    enum kern_dtype dt = job->p->w_dtype;
    for (int64_t i = 0; i < mb; i++)
        memset(y + i * ldy, 0, (size_t)nb * sizeof *y);
    for (int64_t kc = 0; kc < len; kc += MOE_KC) {
        int64_t l = len - kc < MOE_KC ? len - kc : MOE_KC, lv = l - l % MOE_VEC;
        const char *wc = (const char *)w + kern_dtype_row_bytes(dt, kc); /* kc: whole blocks */
        if (lv > 0)
            job->isa->gemm[dt](x + kc, ldx, wc, ldw, y, ldy, mb, nb, lv);
        if (lv == l)
            continue;
        for (int64_t i = 0; i < mb; i++)
            for (int64_t j = 0; j < nb; j++) {
                float s = 0.0f;
                for (int64_t t = kc + lv; t < kc + l; t++)
                    s += x[i * ldx + t] * ref_load(w, dt, j * ldw + t);
                y[i * ldy + j] += s;
            }
    }
}

/* Row block task / n_cb, its column block task % n_cb: rows, expert and column range. */
static const struct moe_block *task_block(const struct moe_job *job, int64_t task, int64_t nb_max,
                                          int64_t n_cols, int64_t *j0, int64_t *nb)
{
    const struct moe_block *blk = &job->blocks[task / job->n_cb];
    *j0 = (task % job->n_cb) * nb_max;
    *nb = n_cols - *j0 < nb_max ? n_cols - *j0 : nb_max;
    return blk;
}

/* Pass 1: columns [j0, j0 + nb) of gate and up for one row block, then silu(gate) * up into the
 * gate half (each element on its own, so the column split does not change it). */
static void gate_up_task(void *arg, int64_t task, int thread)
{
    const struct moe_job *job = arg;
    (void)thread;
    const struct kern_moe_params *p = job->p;
    int64_t H = p->hidden, I = p->inter, j0, nb;
    const struct moe_block *blk = task_block(job, task, MOE_NB1, I, &j0, &nb);
    int64_t mb = blk->row1 - blk->row0;
    size_t row0 = (size_t)j0 * (size_t)kern_dtype_row_bytes(p->w_dtype, H); /* W row j0 */
    const float *x = job->a + (int64_t)blk->row0 * H;
    float *gate = job->b + (int64_t)blk->row0 * 2 * I + j0, *up = gate + I;
    const char *wg = (const char *)p->w_gate[blk->expert] + row0;
    const char *wu = (const char *)p->w_up[blk->expert] + row0;
    expert_gemm(job, x, H, wg, H, gate, 2 * I, mb, nb, H);
    expert_gemm(job, x, H, wu, H, up, 2 * I, mb, nb, H);
    for (int64_t i = 0; i < mb; i++)
        job->isa->silu_mul(gate + i * 2 * I, gate + i * 2 * I, up + i * 2 * I, nb);
}

/* Pass 2: columns [j0, j0 + nb) of the down projection of one row block, into region A. */
static void down_task(void *arg, int64_t task, int thread)
{
    const struct moe_job *job = arg;
    (void)thread;
    const struct kern_moe_params *p = job->p;
    int64_t H = p->hidden, I = p->inter, j0, nb;
    const struct moe_block *blk = task_block(job, task, MOE_NB2, H, &j0, &nb);
    const char *wd = (const char *)p->w_down[blk->expert] +
                     (size_t)j0 * (size_t)kern_dtype_row_bytes(p->w_dtype, I);
    expert_gemm(job, job->b + (int64_t)blk->row0 * 2 * I, 2 * I, wd, I,
                job->a + (int64_t)blk->row0 * H + j0, H, blk->row1 - blk->row0, nb, I);
}

/* Copies the x row of every slot to its sorted row of region A. */
static void gather_task(void *arg, int64_t task, int thread)
{
    const struct moe_job *job = arg;
    const struct kern_moe_params *p = job->p;
    (void)thread;
    int64_t s0 = task * job->rows_per_task, n_slots = p->n_tokens * p->top_k;
    int64_t s1 = n_slots - s0 < job->rows_per_task ? n_slots : s0 + job->rows_per_task;
    for (int64_t s = s0; s < s1; s++)
        memcpy(job->a + (int64_t)job->row_of[s] * p->hidden, p->x + (s / p->top_k) * p->hidden,
               (size_t)p->hidden * sizeof *p->x);
}

/* Token t: its slots in ascending expert order, ties by k, which is ascending sorted row (the
 * sort is stable and slot t * top_k + k grows with k). The weighted outputs are summed in fp32
 * into the first of its rows, then added to y. Each row belongs to one token: tasks share
 * nothing. */
static void combine_task(void *arg, int64_t task, int thread)
{
    const struct moe_job *job = arg;
    const struct kern_moe_params *p = job->p;
    (void)thread;
    int64_t H = p->hidden, K = p->top_k;
    int64_t t0 = task * job->rows_per_task;
    int64_t t1 = p->n_tokens - t0 < job->rows_per_task ? p->n_tokens : t0 + job->rows_per_task;
    for (int64_t t = t0; t < t1; t++) {
        int32_t *rows = job->row_of + t * K; /* reordered in place: nothing reads it later */
        for (int64_t k = 1; k < K; k++) {
            int32_t r = rows[k];
            int64_t j = k;
            for (; j > 0 && rows[j - 1] > r; j--)
                rows[j] = rows[j - 1];
            rows[j] = r;
        }
        float *acc = job->a + (int64_t)rows[0] * H;
        float w = p->weights[job->slot_of[rows[0]]];
        for (int64_t o = 0; o < H; o++)
            acc[o] = w * acc[o];
        for (int64_t n = 1; n < K; n++) {
            const float *d = job->a + (int64_t)rows[n] * H;
            w = p->weights[job->slot_of[rows[n]]];
            for (int64_t o = 0; o < H; o++)
                acc[o] += w * d[o];
        }
        job->isa->add(p->y + t * H, acc, H);
    }
}

static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

static int moe(struct kern_ctx *ctx, const struct kern_moe_params *p,
               const struct kern_cpu_isa *isa)
{
    int rc = kern_ref_moe_check(p);
    if (rc != KERN_OK || p->n_tokens == 0 || p->hidden == 0)
        return rc;
    if (p->inter == 0)
        return kern_ref_moe(ctx, p); /* every expert gives 0: nothing worth a fast path */
    int64_t H = p->hidden, I = p->inter, E = p->n_experts, K = p->top_k;
    int64_t S = p->n_tokens * K; /* checked by kern_ref_moe_check */
    /* Region C holds int32 indices: sorted rows must fit. Such a batch would need a work
     * buffer of at least 2^33 * (hidden + 2 * inter) bytes. */
    if (S > INT32_MAX)
        return KERN_ERR_UNSUPPORTED;
    /* The work buffer's layout (kern_moe_work_bytes): regions of S * H floats, S * 2I floats
     * and int32, each rounded up to 256 bytes. Its size was checked (nonzero) above. */
    size_t a_bytes = ((size_t)(S * H) * 4 + 255) & ~(size_t)255;
    size_t b_bytes = ((size_t)(S * 2 * I) * 4 + 255) & ~(size_t)255;
    struct moe_job job = {.p = p, .isa = isa};
    job.a = p->work;
    job.b = (float *)(void *)((char *)p->work + a_bytes);
    /* Region C (4S + 4E + 64 int32): off[E + 1] | cur[E] | slot_of[S] | row_of[S] | blocks.
     * At most S / MOE_MB + min(E, S) blocks of 3 int32 fit in the 2S + 2E + 63 left. */
    int32_t *off = (int32_t *)(void *)((char *)p->work + a_bytes + b_bytes);
    int32_t *cur = off + E + 1;
    int32_t *slot_of = cur + E;
    job.row_of = slot_of + S;
    struct moe_block *blocks = (struct moe_block *)(void *)(job.row_of + S);
    job.slot_of = slot_of;
    job.blocks = blocks;

    /* Stable counting sort of the slots by expert. */
    for (int64_t e = 0; e <= E; e++)
        off[e] = 0;
    for (int64_t s = 0; s < S; s++)
        off[p->experts[s] + 1]++;
    for (int64_t e = 0; e < E; e++) {
        off[e + 1] += off[e];
        cur[e] = off[e];
    }
    for (int64_t s = 0; s < S; s++) {
        int32_t r = cur[p->experts[s]]++;
        slot_of[r] = (int32_t)s;
        job.row_of[s] = r;
    }
    int64_t n_blocks = 0;
    for (int64_t e = 0; e < E; e++)
        for (int32_t r = off[e]; r < off[e + 1]; r += MOE_MB) {
            blocks[n_blocks].row0 = r;
            blocks[n_blocks].row1 = off[e + 1] - r < MOE_MB ? off[e + 1] : r + MOE_MB;
            blocks[n_blocks].expert = (int32_t)e;
            n_blocks++;
        }
    job.n_blocks = n_blocks;

    /* S, H and I are each below 2^60 but their product may not fit: saturate. */
    int64_t work;
    if (__builtin_mul_overflow(S, H, &work) || __builtin_mul_overflow(work, I, &work))
        work = INT64_MAX;
    struct kern_ctx *pool = work < MOE_SERIAL_WORK ? NULL : ctx;
    job.rows_per_task = H >= (1 << 14) ? 1 : (1 << 14) / H;
    kern_cpu_parallel_for(pool, ceil_div(S, job.rows_per_task), gather_task, &job);
    job.n_cb = ceil_div(I, MOE_NB1);
    kern_cpu_parallel_for(pool, n_blocks * job.n_cb, gate_up_task, &job);
    job.n_cb = ceil_div(H, MOE_NB2);
    kern_cpu_parallel_for(pool, n_blocks * job.n_cb, down_task, &job);
    kern_cpu_parallel_for(pool, ceil_div(p->n_tokens, job.rows_per_task), combine_task, &job);
    return KERN_OK;
}

KERN_CPU_DEFINE_LEVELS(moe, kern_moe_params)
