/* CUDA sample: one token per job by the steps of kern_sample_params (kernels/ops.h), one block
 * per job (grid-stride over jobs), deterministic: no floating atomics, every sum reduced in a
 * fixed order, so a job gives the same token whatever else is in the batch. No RNG here (the
 * host gives u) and no sorting: top_k and top_p find their bar by bisection over the weights'
 * bit patterns, the draw walks contiguous per-thread chunks in id order, and the top
 * logprobs are picked one block reduction at a time. */
#include "../weight_exp.h"
#include "cuda_internal.h"

#define SAMPLE_THREADS 512
#define SAMPLE_WARPS (SAMPLE_THREADS / 32)
/* Every weight lies in [0, 1] (1 at the best token, the exp of a non-positive number elsewhere),
 * and the bit patterns of non-negative floats order as the floats do: the bisections search
 * the patterns [0, 1.0f]; SAMPLE_ABOVE_ONE is the first pattern above every weight. */
#define SAMPLE_ABOVE_ONE 0x3f800001u

/* Block-shared scratch. The reductions leave their slots free again before they return. */
struct sample_shared {
    double d[SAMPLE_WARPS];
    long long n[SAMPLE_WARPS];
    float v[SAMPLE_WARPS];
    int i[SAMPLE_WARPS];
    double mass[SAMPLE_THREADS + 1]; /* chunk sums, then their exclusive scan (+ the total) */
    long long ties[SAMPLE_THREADS];  /* tie counts per chunk, then their exclusive scan */
};

/* The block's sum of every thread's v, the same in every thread: a butterfly inside each warp
 * (addition commutes, so every lane ends with the same bits), then the warps in order. */
template <typename T>
static __device__ T block_sum(T v, T *slot)
{
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    if ((threadIdx.x & 31) == 0)
        slot[threadIdx.x / 32] = v;
    __syncthreads();
    T s = slot[0];
    for (int w = 1; w < SAMPLE_WARPS; w++)
        s += slot[w];
    __syncthreads(); /* slot is reused by the next reduction */
    return s;
}

/* The block's largest v, in every thread. */
static __device__ long long block_max(long long v, long long *slot)
{
    for (int off = 16; off > 0; off >>= 1) {
        long long o = __shfl_xor_sync(0xffffffffu, v, off);
        v = o > v ? o : v;
    }
    if ((threadIdx.x & 31) == 0)
        slot[threadIdx.x / 32] = v;
    __syncthreads();
    long long m = slot[0];
    for (int w = 1; w < SAMPLE_WARPS; w++)
        m = slot[w] > m ? slot[w] : m;
    __syncthreads();
    return m;
}

/* Step 1 for one mod (the same expressions as the reference, in float). */
static __device__ __forceinline__ float sample_apply_mod(float y, const struct kern_sample_mod &m)
{
    y = y + m.bias;
    if (m.ban)
        y = -INFINITY;
    y = y > 0.0f ? y / m.rep : y * m.rep;
    y -= m.sub_freq;
    y -= m.sub_pres;
    return isnan(y) ? -INFINITY : y;
}

/* Whether the job's row and mod range lie inside the call and all its mod ids inside
 * [0, dim); the same answer in every thread. */
static __device__ bool job_ok(const struct kern_sample_params &p, const struct kern_sample_job &job,
                              struct sample_shared *sh)
{
    if (job.row < 0 || job.row >= p.n_rows || job.mod_start < 0 || job.n_mods < 0 ||
        job.mod_start > p.n_mods || job.n_mods > p.n_mods - job.mod_start)
        return false;
    long long bad = 0;
    for (int64_t k = threadIdx.x; k < job.n_mods; k += SAMPLE_THREADS) {
        int32_t t = p.mods[job.mod_start + k].token;
        bad += t < 0 || t >= p.dim;
    }
    return block_sum(bad, sh->n) == 0;
}

/* top_k (step 4): zeroes every weight below the k-th largest, found as the largest v with
 * count(w >= v) >= k. Call only when 0 < k < count(w > 0). */
static __device__ void keep_top_k(float *w, int64_t dim, int32_t k, struct sample_shared *sh)
{
    unsigned lo = 0, hi = SAMPLE_ABOVE_ONE; /* count(w >= lo) >= k; count(w >= hi) = 0 */
    while (hi - lo > 1) {
        unsigned mid = lo + (hi - lo) / 2;
        float v = __uint_as_float(mid);
        long long c = 0;
        for (int64_t i = threadIdx.x; i < dim; i += SAMPLE_THREADS)
            c += w[i] >= v;
        if (block_sum(c, sh->n) >= k)
            lo = mid;
        else
            hi = mid;
    }
    float bar = __uint_as_float(lo);
    for (int64_t i = threadIdx.x; i < dim; i += SAMPLE_THREADS)
        if (w[i] < bar)
            w[i] = 0.0f;
    __syncthreads();
}

/* top_p (step 5). The last kept weight value is bar = the largest v with mass(w >= v) >=
 * target: every w above it is kept, every w below it dropped, and the ties at bar are kept in
 * ascending id order while the mass ranked before them (mass above bar, plus bar for each
 * earlier tie) is below target; the first ranked weight is always kept. Ties are numbered
 * over contiguous per-thread chunks [c0, c1) with an exclusive scan of their counts. */
static __device__ void keep_top_p(float *w, int64_t dim, float top_p, int64_t c0, int64_t c1,
                                  struct sample_shared *sh)
{
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < dim; i += SAMPLE_THREADS)
        s += w[i];
    double target = top_p > 0.0f ? (double)top_p * block_sum(s, sh->d) : 0.0;
    unsigned lo = 0, hi = SAMPLE_ABOVE_ONE; /* mass(w >= lo) = the sum >= target */
    while (hi - lo > 1) {
        unsigned mid = lo + (hi - lo) / 2;
        float v = __uint_as_float(mid);
        double ms = 0.0;
        for (int64_t i = threadIdx.x; i < dim; i += SAMPLE_THREADS)
            ms += w[i] >= v ? w[i] : 0.0f;
        if (block_sum(ms, sh->d) >= target)
            lo = mid;
        else
            hi = mid;
    }
    if (lo == 0)
        return; /* no positive bar reaches the target (rounding): everything is kept */
    float bar = __uint_as_float(lo);
    double above = 0.0;
    long long n_above = 0;
    for (int64_t i = threadIdx.x; i < dim; i += SAMPLE_THREADS)
        if (w[i] > bar) {
            above += w[i];
            n_above++;
        }
    above = block_sum(above, sh->d);
    n_above = block_sum(n_above, sh->n);

    long long ties = 0;
    for (int64_t i = c0; i < c1; i++)
        ties += w[i] == bar;
    sh->ties[threadIdx.x] = ties;
    __syncthreads();
    if (threadIdx.x == 0) {
        long long run = 0;
        for (int t = 0; t < SAMPLE_THREADS; t++) {
            long long c = sh->ties[t];
            sh->ties[t] = run;
            run += c;
        }
    }
    __syncthreads();
    long long q = sh->ties[threadIdx.x]; /* the ordinal of this chunk's first tie */
    for (int64_t i = c0; i < c1; i++) {
        if (w[i] == bar) {
            bool keep = above + (double)q * bar < target || (q == 0 && n_above == 0);
            if (!keep)
                w[i] = 0.0f;
            q++;
        } else if (w[i] < bar) {
            w[i] = 0.0f;
        }
    }
    __syncthreads(); /* sh->ties is free again */
}

/* The draw (step 6) over contiguous chunks: chunk sums, their exclusive scan, and the one
 * chunk whose range holds t walks its weights. Its running sum starts from the same 0.0 and
 * adds the same weights as its chunk sum did, so at the chunk's end it meets the next
 * prefix exactly and the first crossing is always found there (at a positive weight). */
static __device__ int draw(const float *w, double u, int64_t c0, int64_t c1,
                           struct sample_shared *sh)
{
    double s = 0.0;
    long long last = -1;
    for (int64_t i = c0; i < c1; i++) {
        s += w[i];
        if (w[i] > 0.0f)
            last = i;
    }
    sh->mass[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double run = 0.0;
        for (int t = 0; t < SAMPLE_THREADS; t++) {
            double c = sh->mass[t];
            sh->mass[t] = run;
            run = run + c;
        }
        sh->mass[SAMPLE_THREADS] = run;
    }
    __syncthreads();
    u = u > 0.0 ? (u < 1.0 ? u : 1.0) : 0.0; /* the nearest end; NaN as 0 */
    double t = u * sh->mass[SAMPLE_THREADS];
    double base = sh->mass[threadIdx.x];
    long long pick = -1;
    if (base <= t && t < sh->mass[threadIdx.x + 1]) {
        double run = 0.0;
        for (int64_t i = c0; i < c1; i++) {
            run += w[i];
            if (w[i] > 0.0f && t < base + run) {
                pick = i;
                break;
            }
        }
    }
    pick = block_max(pick, sh->n);
    last = block_max(last, sh->n);
    return (int)(pick >= 0 ? pick : last); /* t = total: the last positive weight */
}

/* Steps 1 to 6 for one valid job; work is its [dim] row. Returns the token (or -1). */
static __device__ int sample_job(const struct kern_sample_params &p,
                                 const struct kern_sample_job &job, float *work,
                                 struct sample_shared *sh)
{
    const int64_t dim = p.dim;
    const float *x = p.x + job.row * p.ldx;
    for (int64_t i = threadIdx.x; i < dim; i += SAMPLE_THREADS)
        work[i] = isnan(x[i]) ? -INFINITY : x[i];
    __syncthreads();
    /* The ids of a job's mods are unique, so no two threads touch one element. */
    for (int64_t k = threadIdx.x; k < job.n_mods; k += SAMPLE_THREADS) {
        struct kern_sample_mod mod = p.mods[job.mod_start + k];
        work[mod.token] = sample_apply_mod(work[mod.token], mod);
    }
    __syncthreads();

    float m;
    int best = kern_cuda_block_argmax<SAMPLE_THREADS>(work, dim, &m, sh->v, sh->i);
    if (best < 0 || !(job.temperature > 0.0f))
        return best;

    /* Weights (step 3) in the reference's expressions, with kern_weight_exp: the same bits
     * as the reference and the host sampler. */
    float inv_t = 1.0f / job.temperature;
    long long pos = 0;
    for (int64_t i = threadIdx.x; i < dim; i += SAMPLE_THREADS) {
        float y = work[i];
        float v = y == m ? 1.0f : (y == -INFINITY ? 0.0f : kern_weight_exp((y - m) * inv_t));
        v = v < job.min_p ? 0.0f : v;
        work[i] = v;
        pos += v > 0.0f;
    }
    long long n_pos = block_sum(pos, sh->n);

    int64_t chunk = (dim + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
    int64_t c0 = threadIdx.x * chunk < dim ? threadIdx.x * chunk : dim;
    int64_t c1 = dim - c0 > chunk ? c0 + chunk : dim;
    if (job.top_k > 0 && job.top_k < n_pos)
        keep_top_k(work, dim, job.top_k, sh);
    if (job.top_p < 1.0f)
        keep_top_p(work, dim, job.top_p, c0, c1, sh);
    return draw(work, job.u, c0, c1, sh);
}

/* The pair order of the top list: larger value first, then smaller index; -inf values count,
 * and an empty pair (index -1) loses to every real one. */
struct top_order {
    __device__ bool operator()(float v, int i, float bv, int bi) const
    {
        return i >= 0 && (bi < 0 || v > bv || (v == bv && i < bi));
    }
};

/* The best pair (sanitized x[i], i) of the row that ranks strictly after (pv, pi) (pi < 0:
 * no previous pick), in every thread; index -1 when none is left. */
static __device__ int block_next_best(const float *x, int64_t dim, float pv, int pi, float *bv_out,
                                      struct sample_shared *sh)
{
    float bv = -INFINITY;
    int bi = -1;
    for (int64_t i = threadIdx.x; i < dim; i += SAMPLE_THREADS) {
        float v = isnan(x[i]) ? -INFINITY : x[i];
        bool after = pi < 0 || v < pv || (v == pv && (int)i > pi);
        if (after && top_order()(v, (int)i, bv, bi)) {
            bv = v;
            bi = (int)i;
        }
    }
    return kern_cuda_block_best<SAMPLE_THREADS>(bv, bi, bv_out, sh->v, sh->i, top_order());
}

/* The raw logprob of v (ops.h) given the row's largest value m and log_s = log(S). */
static __device__ __forceinline__ float raw_logprob(float v, float m, double log_s)
{
    v = isnan(v) ? -INFINITY : v;
    if (m == -INFINITY || v == -INFINITY)
        return -INFINITY;
    return (float)((v == m ? 0.0 : (double)v - (double)m) - log_s); /* v == m covers m = +inf */
}

/* The raw logprobs of job j over the original row of x (not work): logprob[j] of tok (-1:
 * none) and the best min(n_top, dim) entries in top[j, :], written by thread 0. */
static __device__ void raw_logprobs(const struct kern_sample_params &p,
                                    const struct kern_sample_job &job, int tok, int64_t j,
                                    struct sample_shared *sh)
{
    const int64_t dim = p.dim;
    const float *x = dim > 0 ? p.x + job.row * p.ldx : nullptr;
    float m;
    kern_cuda_block_argmax<SAMPLE_THREADS>(x, dim, &m, sh->v, sh->i); /* NaN as -inf */
    double log_s = 0.0;
    if (m != -INFINITY) {
        double s = 0.0;
        for (int64_t i = threadIdx.x; i < dim; i += SAMPLE_THREADS) {
            float v = isnan(x[i]) ? -INFINITY : x[i];
            s += v == m ? 1.0 : (double)kern_weight_exp(v - m);
        }
        log_s = log(block_sum(s, sh->d));
    }
    if (threadIdx.x == 0)
        p.logprob[j] = tok < 0 ? -INFINITY : raw_logprob(x[tok], m, log_s);

    int n = job.n_top < 0 ? 0 : (job.n_top > KERN_MAX_TOP_LOGPROBS ? KERN_MAX_TOP_LOGPROBS
                                                                   : job.n_top);
    n = n < dim ? n : (int)dim;
    struct kern_token_logprob *top = p.top + j * KERN_MAX_TOP_LOGPROBS;
    float pv = -INFINITY;
    int pi = -1;
    for (int r = 0; r < n; r++) { /* n <= dim: every round finds a pair */
        pi = block_next_best(x, dim, pv, pi, &pv, sh);
        if (threadIdx.x == 0) {
            top[r].token = pi;
            top[r].logprob = raw_logprob(pv, m, log_s);
        }
    }
}

static __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_kernel(struct kern_sample_params p, int *fault)
{
    __shared__ struct sample_shared sh;
    for (int64_t j = blockIdx.x; j < p.n_jobs; j += gridDim.x) {
        const struct kern_sample_job job = p.jobs[j];
        /* Every thread reads the same job, so each branch below is taken by the whole block. */
        int tok = -1;
        bool ok = job_ok(p, job, &sh) && (!job.given || (job.token >= 0 && job.token < p.dim)) &&
                  (!job.logprobs || (p.logprob && p.top));
        if (ok) {
            if (job.given)
                tok = job.token;
            else if (p.dim > 0) /* with no element, nothing is above -inf (work may be NULL) */
                tok = sample_job(p, job, p.work + j * p.dim, &sh);
            if (job.logprobs)
                raw_logprobs(p, job, tok, j, &sh);
        } else if (threadIdx.x == 0) {
            kern_cuda_raise(fault, KERN_CUDA_FAULT_SAMPLE_JOB);
        }
        if (threadIdx.x == 0)
            p.out[j] = tok;
    }
}

int kern_cuda_sample(struct kern_ctx *ctx, const struct kern_sample_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    /* The reference's scalar checks (kernels/ref/sample.c): no element count may exceed
     * INT64_MAX / 8. Rows, mod ranges, mod ids, given tokens and whether a job asks for
     * logprobs (logprob and top may be NULL when none does) live on the device: the kernel
     * checks them. */
    const int64_t max_elems = INT64_MAX / 8;
    if (!cu || !p || p->n_rows < 0 || p->dim < 0 || p->dim > INT32_MAX || p->ldx < p->dim ||
        p->n_jobs < 0 || p->n_mods < 0 ||
        (p->n_rows > 0 && p->ldx > 0 && p->n_rows - 1 > (max_elems - p->dim) / p->ldx) ||
        (p->dim > 0 && p->n_jobs > max_elems / p->dim))
        return KERN_ERR_INVALID;
    if (p->n_jobs == 0)
        return KERN_OK;
    if (!p->jobs || !p->out || (p->dim > 0 && !p->work) ||
        (p->dim > 0 && p->n_rows > 0 && !p->x) || (p->n_mods > 0 && !p->mods))
        return KERN_ERR_INVALID;
    KERN_CUDA_LAUNCH(sample_kernel, kern_cuda_grid(p->n_jobs, 1, 65535), SAMPLE_THREADS, 0,
                     cu->stream)(*p, cu->fault);
    return kern_cuda_launch_status();
}
