/* Reference sample: one token per job, steps 1 to 6 of kern_sample_params (ops.h) written out
 * literally, one job after another, with a full sort where top_k and top_p rank candidates,
 * then given tokens and raw logprobs. Plain C, the specification of the op; it is slow on
 * purpose and holds no RNG (u is given). */
#include <math.h>
#include <stdlib.h>

#include "../weight_exp.h"
#include "ref.h"

/* A candidate of the ranking: larger w first, then smaller id (a strict total order). */
struct ranked {
    float w;
    int32_t id;
};

static int rank_cmp(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;
    if (x->w != y->w)
        return x->w > y->w ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Fills c with the ids whose weight is positive, in rank order; returns how many. */
static int64_t rank_positive(const float *w, int64_t dim, struct ranked *c)
{
    int64_t n = 0;
    for (int64_t i = 0; i < dim; i++)
        if (w[i] > 0.0f) {
            c[n].w = w[i];
            c[n].id = (int32_t)i;
            n++;
        }
    qsort(c, (size_t)n, sizeof *c, rank_cmp);
    return n;
}

/* Step 1 for one mod. A NaN that the mods make (inf - inf) counts as -inf, as a NaN logit. */
static float apply_mod(float y, const struct kern_sample_mod *m)
{
    y = y + m->bias;
    if (m->ban)
        y = -INFINITY;
    y = y > 0.0f ? y / m->rep : y * m->rep;
    y -= m->sub_freq;
    y -= m->sub_pres;
    return isnan(y) ? -INFINITY : y;
}

/* Every argument the op reads, checked before anything is written. */
static int check(const struct kern_sample_params *p)
{
    int64_t span, work_elems; /* span: only its overflow check matters */
    if (!p || p->n_rows < 0 || p->dim < 0 || p->dim > INT32_MAX || p->n_jobs < 0 ||
        p->n_mods < 0 || ref_span(p->n_rows, p->dim, p->ldx, &span) ||
        ref_mul(p->n_jobs, p->dim, &work_elems))
        return KERN_ERR_INVALID;
    if (p->n_jobs == 0)
        return KERN_OK;
    if (!p->jobs || !p->out || (work_elems > 0 && !p->work) ||
        (p->dim > 0 && p->n_rows > 0 && !p->x) || (p->n_mods > 0 && !p->mods))
        return KERN_ERR_INVALID;
    for (int64_t j = 0; j < p->n_jobs; j++) {
        const struct kern_sample_job *job = &p->jobs[j];
        if (job->row < 0 || job->row >= p->n_rows || job->mod_start < 0 || job->n_mods < 0 ||
            job->mod_start > p->n_mods || job->n_mods > p->n_mods - job->mod_start)
            return KERN_ERR_INVALID;
        if (job->given && (job->token < 0 || job->token >= p->dim))
            return KERN_ERR_INVALID;
        if (job->logprobs && (!p->logprob || !p->top))
            return KERN_ERR_INVALID;
        for (int64_t k = 0; k < job->n_mods; k++) {
            int32_t t = p->mods[job->mod_start + k].token;
            if (t < 0 || t >= p->dim)
                return KERN_ERR_INVALID;
        }
    }
    return KERN_OK;
}

/* One job: fills y (its row of work), turns it into weights and returns the token. cand is
 * scratch for dim candidates. */
static int32_t sample_one(const struct kern_sample_params *p, const struct kern_sample_job *job,
                          float *y, struct ranked *cand)
{
    int64_t dim = p->dim;
    const float *x = p->x + job->row * p->ldx;

    /* 1. NaN as -inf, then the mods. */
    for (int64_t i = 0; i < dim; i++)
        y[i] = isnan(x[i]) ? -INFINITY : x[i];
    for (int64_t k = 0; k < job->n_mods; k++) {
        const struct kern_sample_mod *m = &p->mods[job->mod_start + k];
        y[m->token] = apply_mod(y[m->token], m);
    }

    /* 2. The largest y and its first index (a strict > keeps the earliest of equal values). */
    float m = -INFINITY;
    int64_t best = -1;
    for (int64_t i = 0; i < dim; i++)
        if (y[i] > m) {
            m = y[i];
            best = i;
        }
    if (best < 0)
        return -1; /* no y above -inf */
    if (!(job->temperature > 0.0f))
        return (int32_t)best;

    /* 3. Weights relative to the best (exactly 1 there), then min_p. y == m also covers
     * m = +inf, where y - m would be NaN. */
    float inv_t = 1.0f / job->temperature;
    float *w = y;
    for (int64_t i = 0; i < dim; i++) {
        float v = y[i] == m ? 1.0f
                            : (y[i] == -INFINITY ? 0.0f : kern_weight_exp((y[i] - m) * inv_t));
        w[i] = v < job->min_p ? 0.0f : v;
    }

    /* 4. top_k: the k-th entry of the ranking sets the bar; its equals stay. */
    int64_t n = rank_positive(w, dim, cand);
    if (job->top_k > 0 && job->top_k < n) {
        float bar = cand[job->top_k - 1].w;
        for (int64_t i = 0; i < dim; i++)
            if (w[i] < bar)
                w[i] = 0.0f;
    }

    /* 5. top_p: walk the ranking, keeping rank r while the mass ranked before it is below
     * the target (rank 0 always). */
    if (job->top_p < 1.0f) {
        double sum = 0.0;
        for (int64_t i = 0; i < dim; i++)
            sum += w[i];
        double target = job->top_p > 0.0f ? (double)job->top_p * sum : 0.0;
        n = rank_positive(w, dim, cand);
        double before = 0.0;
        for (int64_t r = 0; r < n; r++) {
            if (r > 0 && !(before < target))
                w[cand[r].id] = 0.0f;
            before += cand[r].w;
        }
    }

    /* 6. The draw in id order. u outside [0, 1) acts as the nearest end (NaN as 0); u = 1
     * gives t = total, which no running sum exceeds. */
    double total = 0.0;
    for (int64_t i = 0; i < dim; i++)
        total += w[i];
    double u = job->u > 0.0 ? (job->u < 1.0 ? job->u : 1.0) : 0.0;
    double t = u * total;
    double run = 0.0;
    int64_t last = -1;
    for (int64_t i = 0; i < dim; i++) {
        if (!(w[i] > 0.0f))
            continue;
        run += w[i];
        if (t < run)
            return (int32_t)i;
        last = i;
    }
    return (int32_t)last; /* -1 only when no weight is positive (min_p above 1) */
}

/* The raw log-softmax of one row: its largest value M and log(S) (0 when M is -inf). */
struct raw_norm {
    float max;
    double log_s;
};

static float sanitize(float v)
{
    return isnan(v) ? -INFINITY : v;
}

/* The raw logprob of a value v of the row, in double, rounded to float. v == max also covers
 * max = +inf, where v - max would be NaN. */
static float raw_logprob(const struct raw_norm *n, float v)
{
    v = sanitize(v);
    if (n->max == -INFINITY || v == -INFINITY)
        return -INFINITY;
    return (float)((v == n->max ? 0.0 : (double)v - (double)n->max) - n->log_s);
}

/* Logprobs of one job over x (its [dim] row): logprob of tok (-1: none) and the best
 * min(n_top, dim) entries in top. */
static void raw_logprobs(const float *x, int64_t dim, const struct kern_sample_job *job,
                         int32_t tok, float *logprob, struct kern_token_logprob *top)
{
    struct raw_norm n = {-INFINITY, 0.0};
    for (int64_t i = 0; i < dim; i++)
        if (sanitize(x[i]) > n.max)
            n.max = sanitize(x[i]);
    if (n.max != -INFINITY) {
        double s = 0.0;
        for (int64_t i = 0; i < dim; i++) {
            float v = sanitize(x[i]);
            s += v == n.max ? 1.0 : (double)kern_weight_exp(v - n.max);
        }
        n.log_s = log(s);
    }
    *logprob = tok < 0 ? -INFINITY : raw_logprob(&n, x[tok]);

    int64_t want = job->n_top < 0 ? 0 : (job->n_top > KERN_MAX_TOP_LOGPROBS ? KERN_MAX_TOP_LOGPROBS
                                                                            : job->n_top);
    if (want > dim)
        want = dim;
    /* Bounded insertion, ids upwards: an equal value never passes an earlier id (ties by
     * ascending id), and while best is not full every value enters, -inf included. */
    struct ranked best[KERN_MAX_TOP_LOGPROBS];
    int64_t filled = 0;
    for (int64_t i = 0; i < dim && want > 0; i++) {
        float v = sanitize(x[i]);
        if (filled == want && !(v > best[want - 1].w))
            continue;
        int64_t r = filled < want ? filled++ : want - 1;
        for (; r > 0 && v > best[r - 1].w; r--)
            best[r] = best[r - 1];
        best[r].w = v;
        best[r].id = (int32_t)i;
    }
    for (int64_t r = 0; r < filled; r++) {
        top[r].token = best[r].id;
        top[r].logprob = raw_logprob(&n, best[r].w);
    }
}

int kern_ref_sample(struct kern_ctx *ctx, const struct kern_sample_params *p)
{
    (void)ctx;
    int rc = check(p);
    if (rc != KERN_OK || p->n_jobs == 0)
        return rc;
    struct ranked *cand = NULL;
    if (p->dim > 0) {
        cand = malloc((size_t)p->dim * sizeof *cand);
        if (!cand)
            return KERN_ERR_NOMEM;
    }
    for (int64_t j = 0; j < p->n_jobs; j++) {
        const struct kern_sample_job *job = &p->jobs[j];
        if (job->given) /* check() saw the token in [0, dim), so dim > 0 */
            p->out[j] = job->token;
        else if (p->dim == 0) /* no y at all, so none above -inf (and x, work may be NULL) */
            p->out[j] = -1;
        else
            p->out[j] = sample_one(p, job, p->work + j * p->dim, cand);
        if (job->logprobs)
            raw_logprobs(p->dim > 0 ? p->x + job->row * p->ldx : NULL, p->dim, job, p->out[j],
                         &p->logprob[j], p->top + j * KERN_MAX_TOP_LOGPROBS);
    }
    free(cand);
    return KERN_OK;
}
