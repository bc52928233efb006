/* The sampler's processors and draw (see sampler.h for the order and the semantics). Plain
 * C over one sequence's logits at a time; batching across sequences is the caller's loop,
 * and nothing here runs on the GPU. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "weight_exp.h"

/* vLLM clamps temperatures below this up to it (smaller ones overflow exp in fp32). */
#define MIN_TEMPERATURE 0.01f
/* Larger temperatures act as this one: the distribution is already flat, and it keeps
 * 1 / temperature away from 0 (where -inf * 0 would give NaN). */
#define MAX_TEMPERATURE 1e4f
#define MAX_BIAS 100.0f

void eng_sampling_params_init_default(struct eng_sampling_params *p)
{
    memset(p, 0, sizeof *p);
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->top_k = 0;
    p->min_p = 0.0f;
    p->repetition_penalty = 1.0f;
}

/* The penalties as applied: odd values turned off (repetition 1, frequency and presence 0). */
struct penalties {
    float rep, freq, pres;
    bool on;                 /* any of them changes a logit */
};

static struct penalties penalties_of(const struct eng_sampling_params *p)
{
    float r = p->repetition_penalty;
    struct penalties pn = {
        .rep = isfinite(r) && r > 0.0f ? r : 1.0f,
        .freq = isfinite(p->frequency_penalty) ? p->frequency_penalty : 0.0f,
        .pres = isfinite(p->presence_penalty) ? p->presence_penalty : 0.0f,
    };
    pn.on = pn.rep != 1.0f || pn.freq != 0.0f || pn.pres != 0.0f;
    return pn;
}

static bool penalties_on(const struct eng_sampling_params *p)
{
    return penalties_of(p).on;
}

static bool in_prompt(const struct eng_sampler_state *st, int32_t t)
{
    return (st->in_prompt[t >> 3] >> (t & 7)) & 1u;
}

static bool in_list(const int32_t *ids, int32_t n, int32_t token)
{
    if (ids == NULL)
        return false;
    for (int32_t i = 0; i < n; i++)
        if (ids[i] == token)
            return true;
    return false;
}

static void add_banned(struct eng_sampler_state *st, const int32_t *ids, int32_t n)
{
    if (ids == NULL)
        return;
    for (int32_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < st->vocab && !in_list(st->banned, st->n_banned, ids[i]))
            st->banned[st->n_banned++] = ids[i];
}

void eng_sampler_state_free(struct eng_sampler_state *st)
{
    if (st == NULL)
        return;
    free(st->counts);
    free(st->in_prompt);
    free(st->banned);
    free(st->touched);
    st->counts = NULL;
    st->in_prompt = NULL;
    st->banned = NULL;
    st->n_banned = 0;
    st->touched = NULL;
    st->n_touched = 0;
}

int eng_sampler_state_init(struct eng_sampler_state *st, const struct eng_sampling_params *p,
                           int64_t vocab, const int32_t *prompt, int32_t n_prompt,
                           uint64_t entropy_seed)
{
    if (st == NULL)
        return ENG_SAMPLER_ERR_INVALID;
    memset(st, 0, sizeof *st);
    if (p == NULL || vocab < 1 || vocab > INT32_MAX || n_prompt < 0 ||
        (n_prompt > 0 && prompt == NULL))
        return ENG_SAMPLER_ERR_INVALID;
    st->vocab = vocab;
    int32_t n_eos = p->eos_token_ids != NULL && p->n_eos_token_ids > 0 ? p->n_eos_token_ids : 0;
    int32_t n_stop =
        p->stop_token_ids != NULL && p->n_stop_token_ids > 0 ? p->n_stop_token_ids : 0;
    /* calloc checks count * size for overflow; both counts are at most INT32_MAX. */
    size_t n_ban_max = (size_t)n_eos + (size_t)n_stop;
    st->counts = calloc((size_t)vocab, sizeof *st->counts);
    st->in_prompt = calloc(((size_t)vocab + 7) / 8, 1);
    st->banned = calloc(n_ban_max > 0 ? n_ban_max : 1, sizeof *st->banned);
    /* Each id enters the list once, so vocab entries always suffice. */
    if (penalties_on(p))
        st->touched = malloc((size_t)vocab * sizeof *st->touched);
    if (st->counts == NULL || st->in_prompt == NULL || st->banned == NULL ||
        (penalties_on(p) && st->touched == NULL)) {
        eng_sampler_state_free(st);
        return ENG_SAMPLER_ERR_NOMEM;
    }
    for (int32_t i = 0; i < n_prompt; i++) {
        int32_t t = prompt[i];
        if (t < 0 || t >= vocab || in_prompt(st, t))
            continue;
        st->in_prompt[t >> 3] |= (uint8_t)(1u << (t & 7));
        if (st->touched)
            st->touched[st->n_touched++] = t;
    }
    add_banned(st, p->eos_token_ids, n_eos);
    add_banned(st, p->stop_token_ids, n_stop);
    /* Reinterpreting the int64 seed as uint64 keeps every seed distinct. */
    eng_rng_seed(&st->rng, p->has_seed ? (uint64_t)p->seed : entropy_seed);
    return 0;
}

void eng_sampler_ws_free(struct eng_sampler_ws *ws)
{
    if (ws == NULL)
        return;
    free(ws->w);
    free(ws->idx);
    free(ws->slot);
    ws->w = NULL;
    ws->idx = NULL;
    ws->slot = NULL;
    ws->vocab = 0;
}

int eng_sampler_ws_init(struct eng_sampler_ws *ws, int64_t vocab)
{
    if (ws == NULL)
        return ENG_SAMPLER_ERR_INVALID;
    memset(ws, 0, sizeof *ws);
    if (vocab < 1 || vocab > INT32_MAX)
        return ENG_SAMPLER_ERR_INVALID;
    ws->w = calloc((size_t)vocab, sizeof *ws->w);
    ws->idx = calloc((size_t)vocab, sizeof *ws->idx);
    ws->slot = malloc((size_t)vocab * sizeof *ws->slot);
    if (ws->w == NULL || ws->idx == NULL || ws->slot == NULL) {
        eng_sampler_ws_free(ws);
        return ENG_SAMPLER_ERR_NOMEM;
    }
    for (int64_t v = 0; v < vocab; v++)
        ws->slot[v] = -1;
    ws->vocab = vocab;
    return 0;
}

void eng_sampler_accept(struct eng_sampler_state *st, int32_t token)
{
    if (st == NULL)
        return;
    st->n_generated++;
    if (st->counts == NULL || token < 0 || token >= st->vocab || st->counts[token] == INT32_MAX)
        return;
    if (st->counts[token]++ == 0 && st->touched && !in_prompt(st, token))
        st->touched[st->n_touched++] = token;
}

bool eng_sampler_is_stop(const struct eng_sampler_state *st, const struct eng_sampling_params *p,
                         int32_t token)
{
    if (st == NULL || p == NULL || st->n_generated < p->min_tokens)
        return false;
    if (in_list(p->stop_token_ids, p->n_stop_token_ids, token))
        return true;
    return !p->ignore_eos && in_list(p->eos_token_ids, p->n_eos_token_ids, token);
}

/* ---- processors on the logits (x: [vocab], NaN already replaced by -inf) ---- */

static float clamp_bias(float b)
{
    return b < -MAX_BIAS ? -MAX_BIAS : (b > MAX_BIAS ? MAX_BIAS : b);
}

static void apply_logit_bias(float *x, int64_t vocab, const struct eng_sampling_params *p)
{
    if (p->logit_bias == NULL)
        return;
    for (int32_t i = 0; i < p->n_logit_bias; i++) {
        int32_t t = p->logit_bias[i].token;
        float b = p->logit_bias[i].bias;
        if (t < 0 || t >= vocab || isnan(b))
            continue;
        x[t] += clamp_bias(b);
    }
}

static void apply_min_tokens(float *x, const struct eng_sampler_state *st,
                             const struct eng_sampling_params *p)
{
    if (st->n_generated >= p->min_tokens)
        return;
    for (int32_t i = 0; i < st->n_banned; i++)
        x[st->banned[i]] = -INFINITY;
}

/* vLLM (model_executor/layers/utils.py apply_penalties): the repetition penalty first, over
 * prompt and output tokens, then frequency * count, then presence, over output tokens. */
static void apply_penalties(float *x, const struct eng_sampler_state *st,
                            const struct eng_sampling_params *p)
{
    struct penalties pn = penalties_of(p);
    if (!pn.on)
        return;
    /* Only the tokens of the prompt or the output: the touched list holds each once. */
    for (int32_t i = 0; i < st->n_touched; i++) {
        int32_t v = st->touched[i];
        int32_t c = st->counts[v];
        float y = x[v];
        if (pn.rep != 1.0f)
            y = y > 0.0f ? y / pn.rep : y * pn.rep;
        if (c > 0) {
            y -= pn.freq * (float)c;
            y -= pn.pres;
        }
        x[v] = y;
    }
}

/* ---- ordering of candidates: larger weight first, then smaller id (a strict total order,
 * so selection and sorting are deterministic) ---- */

static inline bool ranks_before(const float *w, int32_t a, int32_t b)
{
    return w[a] > w[b] || (w[a] == w[b] && a < b);
}

static inline void swap_ids(int32_t *a, int32_t i, int32_t j)
{
    int32_t t = a[i];
    a[i] = a[j];
    a[j] = t;
}

/* Position (0, n/2 or n-1) of the median of those three entries of a[0..n). */
static int32_t median_of_three(const float *w, const int32_t *a, int32_t n)
{
    int32_t i = 0, j = n / 2, k = n - 1;
    if (ranks_before(w, a[j], a[i])) {
        int32_t t = i;
        i = j;
        j = t;
    }
    if (ranks_before(w, a[k], a[j])) {
        j = k;
        if (ranks_before(w, a[j], a[i]))
            j = i;
    }
    return j;
}

/* Partitions a[0..n) around the entry at position piv; returns where it ends up. Entries
 * before it rank before it, entries after rank after. */
static int32_t partition(const float *w, int32_t *a, int32_t n, int32_t piv)
{
    swap_ids(a, piv, n - 1);
    int32_t pv = a[n - 1];
    int32_t store = 0;
    for (int32_t i = 0; i < n - 1; i++)
        if (ranks_before(w, a[i], pv))
            swap_ids(a, i, store++);
    swap_ids(a, store, n - 1);
    return store;
}

/* Rearranges a[0..n) so that its first m entries are the m best, in no particular order
 * (quickselect, expected O(n)). */
static void select_best(const float *w, int32_t *a, int32_t n, int32_t m)
{
    int32_t lo = 0, hi = n;
    while (hi - lo > 1) {
        int32_t len = hi - lo;
        int32_t pos = lo + partition(w, a + lo, len, median_of_three(w, a + lo, len));
        if (pos == m)
            return;
        if (pos < m)
            lo = pos + 1;
        else
            hi = pos;
    }
}

/* top_k: keeps the k best of a[0..n) plus every entry tied with the k-th. Returns the new n;
 * the survivors are a[0..new n). */
static int32_t keep_top_k(const float *w, int32_t *a, int32_t n, int32_t k)
{
    if (k <= 0 || k >= n)
        return n;
    select_best(w, a, n, k);
    float wk = w[a[0]];
    for (int32_t i = 1; i < k; i++)
        if (w[a[i]] < wk)
            wk = w[a[i]];
    int32_t kept = k;
    for (int32_t i = k; i < n; i++)
        if (w[a[i]] == wk)
            swap_ids(a, i, kept++);
    return kept;
}

/* top_p: keeps the smallest prefix of a[0..n), in rank order, whose mass reaches target
 * (rank 0 always), i.e. rank r survives when the mass ranked before it is below target.
 * Found like quickselect, partitioning by rank and steering by mass, so no sort is needed
 * (expected O(n) even when the cut is deep in a flat distribution). The survivors end up in
 * a[0..returned n), in no particular order. */
static int32_t keep_top_p(const float *w, int32_t *a, int32_t n, double target)
{
    /* Invariant: a[0..lo) rank before a[lo..hi), which rank before a[hi..n); above is the
     * mass of a[0..lo); the answer K (number kept) lies in [lo + 1, hi]. */
    int32_t lo = 0, hi = n;
    double above = 0.0;
    while (hi - lo > 1) {
        int32_t len = hi - lo;
        int32_t pos = lo + partition(w, a + lo, len, median_of_three(w, a + lo, len));
        double better = above;
        for (int32_t i = lo; i < pos; i++)
            better += w[a[i]];
        if (better + w[a[pos]] < target) { /* the pivot and all before it survive, and more */
            above = better + w[a[pos]];
            lo = pos + 1;
        } else if (pos > 0 && better >= target) { /* the cut is before the pivot */
            hi = pos;
        } else { /* the pivot is the last survivor */
            return pos + 1;
        }
    }
    return hi;
}

/* ---- raw logprobs ---- */

static inline float sanitize(float v)
{
    return isnan(v) ? -INFINITY : v;
}

struct log_softmax {
    double max;    /* largest logit (-inf when all are -inf or NaN) */
    double log_s;  /* log of sum(exp(logit - max)) */
};

static double log_softmax_at(const struct log_softmax *ls, float v)
{
    v = sanitize(v);
    if (ls->max == -INFINITY || v == -INFINITY)
        return -INFINITY;
    /* v == max also covers max = +inf, where v - max would be NaN. */
    return (v == ls->max ? 0.0 : (double)v - ls->max) - ls->log_s;
}

/* Fills the log-softmax normaliser of the raw logits and their n_top best entries. */
static struct log_softmax raw_logprobs(const float *l, int64_t vocab, int32_t n_top,
                                       struct eng_token_logprob *top)
{
    float m = -INFINITY;
    for (int64_t i = 0; i < vocab; i++) {
        float v = sanitize(l[i]);
        if (v > m)
            m = v;
    }
    double s = 0.0;
    if (m != -INFINITY)
        for (int64_t i = 0; i < vocab; i++) {
            float v = sanitize(l[i]);
            s += v == m ? 1.0 : (double)kern_weight_exp(v - m);
        }
    struct log_softmax ls = {m, m == -INFINITY ? 0.0 : log(s)};

    /* Bounded insertion, scanning ids upwards: an equal value never displaces an earlier
     * id, which gives ties by ascending id. top[].logprob holds the raw logit meanwhile. */
    int32_t filled = 0;
    for (int64_t i = 0; i < vocab && n_top > 0; i++) {
        float v = sanitize(l[i]);
        if (filled == n_top && !(v > top[n_top - 1].logprob))
            continue;
        int32_t j = filled < n_top ? filled++ : n_top - 1;
        while (j > 0 && v > top[j - 1].logprob) {
            top[j] = top[j - 1];
            j--;
        }
        top[j].token = (int32_t)i;
        top[j].logprob = v;
    }
    for (int32_t j = 0; j < filled; j++)
        top[j].logprob = (float)log_softmax_at(&ls, top[j].logprob);
    return ls;
}

float eng_sampler_raw_logprobs(const float *logits, int64_t vocab, int32_t token, int32_t n_top,
                               struct eng_token_logprob *top)
{
    struct log_softmax ls = raw_logprobs(logits, vocab, n_top, top);
    return (float)log_softmax_at(&ls, logits[token]);
}

/* ---- the draw ---- */

static int32_t greedy(const float *x, int64_t vocab)
{
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; i++)
        if (x[i] > x[best])
            best = i;
    return x[best] == -INFINITY ? -1 : (int32_t)best;
}

/* Block length of the dense draw: a block's sum is computed with four accumulators (no
 * serial dependency), and only the block holding the target is scanned one by one. */
#define DRAW_BLOCK 256

static double block_sum(const float *w, int64_t n)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += w[i];
        s1 += w[i + 1];
        s2 += w[i + 2];
        s3 += w[i + 3];
    }
    for (; i < n; i++)
        s0 += w[i];
    return (s0 + s1) + (s2 + s3);
}

/* Draws index i of w[0..n) with probability w[i] / sum(w) (weights >= 0, not all 0). The
 * total and the running sum are built from the same block sums, so they agree exactly. */
static int32_t draw_dense(struct eng_rng *rng, const float *w, int64_t n)
{
    double total = 0.0;
    for (int64_t b = 0; b < n; b += DRAW_BLOCK)
        total += block_sum(w + b, n - b < DRAW_BLOCK ? n - b : DRAW_BLOCK);
    double u = eng_rng_uniform(rng) * total;
    double cum = 0.0;
    int64_t last = -1;
    for (int64_t b = 0; b < n; b += DRAW_BLOCK) {
        int64_t len = n - b < DRAW_BLOCK ? n - b : DRAW_BLOCK;
        double bs = block_sum(w + b, len);
        if (u < cum + bs) {
            double c = cum;
            for (int64_t i = b; i < b + len; i++) {
                if (w[i] > 0.0f)
                    last = i;
                c += w[i];
                if (u < c && w[i] > 0.0f)
                    return (int32_t)i;
            }
        } else {
            for (int64_t i = b + len - 1; i >= b && last < b; i--)
                if (w[i] > 0.0f)
                    last = i;
        }
        cum += bs;
    }
    return (int32_t)last; /* u rounded up to the total: the last positive weight */
}

/* The temperature a draw uses for t > 0. */
static float clamp_temperature(float t)
{
    return t < MIN_TEMPERATURE ? MIN_TEMPERATURE : (t > MAX_TEMPERATURE ? MAX_TEMPERATURE : t);
}

/* min_p as a weight threshold: 0 when off (<= 0 or NaN), at most 1. */
static float clamp_min_p(float min_p)
{
    return min_p > 0.0f ? (min_p < 1.0f ? min_p : 1.0f) : 0.0f;
}

/* Temperature, min_p, top_k, top_p, then one draw. x: [vocab] processed logits, overwritten
 * by weights; idx: [vocab] scratch. Returns the token or -1 when nothing survives. */
static int32_t draw(struct eng_sampler_state *st, const struct eng_sampling_params *p, float *x,
                    int32_t *idx, int64_t vocab)
{
    float inv_t = 1.0f / clamp_temperature(p->temperature);
    float m = -INFINITY;
    for (int64_t v = 0; v < vocab; v++)
        if (x[v] > m)
            m = x[v];
    if (m == -INFINITY)
        return -1;

    /* Weights relative to the best token (whose weight is exactly 1), so min_p compares a
     * weight with min_p directly: p_i < min_p * p_max  <=>  w_i < min_p. Excluded tokens
     * get weight 0. x == m also covers m = +inf, where x - m would be NaN. */
    float min_p = clamp_min_p(p->min_p);
    float *w = x;
    for (int64_t v = 0; v < vocab; v++) {
        float xv = x[v];
        float wv = xv == m ? 1.0f : (xv == -INFINITY ? 0.0f : kern_weight_exp((xv - m) * inv_t));
        w[v] = wv >= min_p ? wv : 0.0f;
    }

    bool top_k_on = p->top_k > 0 && p->top_k < vocab;
    bool top_p_on = p->top_p < 1.0f; /* false for NaN: off */
    if (!top_k_on && !top_p_on)
        return draw_dense(&st->rng, w, vocab);

    int32_t n_all = 0;
    for (int64_t v = 0; v < vocab; v++)
        if (w[v] > 0.0f)
            idx[n_all++] = (int32_t)v;
    int32_t n = keep_top_k(w, idx, n_all, p->top_k);
    if (top_p_on) {
        double total = 0.0;
        for (int32_t i = 0; i < n; i++)
            total += w[idx[i]];
        double target = p->top_p > 0.0f ? (double)p->top_p * total : 0.0;
        n = keep_top_p(w, idx, n, target);
    }
    /* The survivors are drawn in id order, as the dense draw does, so the same u picks the
     * same token here and in a backend's sample op (kernels/ops.h). */
    for (int32_t i = n; i < n_all; i++)
        w[idx[i]] = 0.0f;
    return draw_dense(&st->rng, w, vocab);
}

/* The alternatives a logprobs request gets: top_logprobs in [0, 20], at most vocab. */
static int32_t n_top_of(const struct eng_sampling_params *p, int64_t vocab)
{
    int32_t n_top = p->top_logprobs < 0 ? 0 : p->top_logprobs;
    if (n_top > ENG_SAMPLER_MAX_TOP_LOGPROBS)
        n_top = ENG_SAMPLER_MAX_TOP_LOGPROBS;
    return n_top > vocab ? (int32_t)vocab : n_top;
}

static bool allowed(const uint32_t *allow, int64_t t)
{
    return (allow[t >> 5] >> (t & 31)) & 1u;
}

int eng_sampler_sample(struct eng_sampler_state *st, struct eng_sampler_ws *ws,
                       const struct eng_sampling_params *p, const float *logits, int64_t vocab,
                       struct eng_sample_result *out)
{
    return eng_sampler_sample_masked(st, ws, p, logits, vocab, NULL, out);
}

int eng_sampler_sample_masked(struct eng_sampler_state *st, struct eng_sampler_ws *ws,
                              const struct eng_sampling_params *p, const float *logits,
                              int64_t vocab, const uint32_t *allow, struct eng_sample_result *out)
{
    if (out == NULL)
        return ENG_SAMPLER_ERR_INVALID;
    out->token = -1;
    out->logprob = -INFINITY;
    out->n_top = 0;
    if (st == NULL || ws == NULL || p == NULL || logits == NULL || st->counts == NULL ||
        ws->w == NULL || vocab < 1 || vocab != st->vocab || vocab > ws->vocab)
        return ENG_SAMPLER_ERR_INVALID;

    float *x = ws->w;
    for (int64_t v = 0; v < vocab; v++)
        x[v] = sanitize(logits[v]);
    if (allow) /* the grammar first: nothing below can bring a -inf back */
        for (int64_t v = 0; v < vocab; v++)
            if (!allowed(allow, v))
                x[v] = -INFINITY;
    apply_logit_bias(x, vocab, p);
    apply_min_tokens(x, st, p);
    apply_penalties(x, st, p);

    struct log_softmax ls = {0.0, 0.0};
    if (p->logprobs) {
        int32_t n_top = n_top_of(p, vocab);
        ls = raw_logprobs(logits, vocab, n_top, out->top);
        out->n_top = n_top;
    }

    /* Greedy is decided on the processed logits before temperature, as vLLM does; NaN
     * temperatures fall here too. */
    int32_t tok = p->temperature > 0.0f ? draw(st, p, x, ws->idx, vocab) : greedy(x, vocab);
    if (tok < 0) {
        out->n_top = 0;
        return ENG_SAMPLER_ERR_NO_CANDIDATE;
    }
    out->token = tok;
    if (p->logprobs)
        out->logprob = (float)log_softmax_at(&ls, logits[tok]);
    return 0;
}

bool eng_sampler_is_greedy_argmax(const struct eng_sampling_params *p,
                                  const struct eng_sampler_state *st)
{
    if (p == NULL || st == NULL)
        return false;
    /* Each test mirrors the step of eng_sampler_sample that would otherwise touch the logits:
     * the draw (temperature > 0), apply_logit_bias, apply_min_tokens, apply_penalties and
     * the raw logprobs. */
    bool greedy = !(p->temperature > 0.0f);
    bool bias = p->logit_bias != NULL && p->n_logit_bias > 0;
    bool banning = st->n_generated < p->min_tokens && st->n_banned > 0;
    return greedy && !bias && !banning && !penalties_on(p) && !p->logprobs;
}

int eng_sampler_take(struct eng_sampler_state *st, const struct eng_sampling_params *p,
                     int32_t token, int64_t vocab, struct eng_sample_result *out)
{
    if (p != NULL && p->logprobs) {
        if (out != NULL)
            out->token = -1;
        return ENG_SAMPLER_ERR_INVALID;
    }
    return eng_sampler_take_logprobs(st, p, token, -INFINITY, NULL, vocab, out);
}

int eng_sampler_take_logprobs(struct eng_sampler_state *st, const struct eng_sampling_params *p,
                              int32_t token, float logprob, const struct kern_token_logprob *top,
                              int64_t vocab, struct eng_sample_result *out)
{
    if (out == NULL)
        return ENG_SAMPLER_ERR_INVALID;
    out->token = -1;
    out->logprob = -INFINITY;
    out->n_top = 0;
    if (st == NULL || p == NULL || vocab < 1 || vocab != st->vocab || token >= vocab ||
        (p->logprobs && top == NULL && n_top_of(p, vocab) > 0))
        return ENG_SAMPLER_ERR_INVALID;
    if (token < 0)
        return ENG_SAMPLER_ERR_NO_CANDIDATE;
    out->token = token;
    if (p->logprobs) {
        out->logprob = logprob;
        out->n_top = n_top_of(p, vocab);
        for (int32_t i = 0; i < out->n_top; i++)
            out->top[i] = (struct eng_token_logprob){top[i].token, top[i].logprob};
    }
    return 0;
}

/* ---- the draw on a backend (kernels/ops.h, sample) ---- */

int64_t eng_sampler_job_mods_max(const struct eng_sampling_params *p,
                                 const struct eng_sampler_state *st)
{
    if (p == NULL || st == NULL)
        return 0;
    int64_t n = 0;
    if (p->logit_bias != NULL && p->n_logit_bias > 0)
        n += p->n_logit_bias;
    if (st->n_generated < p->min_tokens)
        n += st->n_banned;
    if (penalties_on(p))
        n += st->n_touched;
    return n < st->vocab ? n : st->vocab; /* one entry per token */
}

/* The entry of token t in mods[0 .. *n), appended (with no change yet) when t has none. */
static struct kern_sample_mod *mod_of(struct eng_sampler_ws *ws, struct kern_sample_mod *mods,
                                      int64_t *n, int32_t t)
{
    if (ws->slot[t] < 0) {
        ws->slot[t] = (int32_t)*n;
        mods[*n] = (struct kern_sample_mod){.token = t, .rep = 1.0f};
        (*n)++;
    }
    return &mods[ws->slot[t]];
}

int eng_sampler_job(struct eng_sampler_state *st, struct eng_sampler_ws *ws,
                    const struct eng_sampling_params *p, struct kern_sample_job *job,
                    struct kern_sample_mod *mods)
{
    return eng_sampler_job_masked(st, ws, p, NULL, job, mods);
}

int eng_sampler_job_masked(struct eng_sampler_state *st, struct eng_sampler_ws *ws,
                           const struct eng_sampling_params *p, const uint32_t *allow,
                           struct kern_sample_job *job, struct kern_sample_mod *mods)
{
    if (st == NULL || ws == NULL || p == NULL || job == NULL || ws->slot == NULL ||
        st->counts == NULL || st->vocab != ws->vocab ||
        (mods == NULL && (allow || eng_sampler_job_mods_max(p, st) > 0)))
        return ENG_SAMPLER_ERR_INVALID;
    int64_t n = 0;
    if (p->logit_bias != NULL)
        for (int32_t i = 0; i < p->n_logit_bias; i++) {
            int32_t t = p->logit_bias[i].token;
            float b = p->logit_bias[i].bias;
            if (t >= 0 && t < st->vocab && !isnan(b))
                mod_of(ws, mods, &n, t)->bias += clamp_bias(b);
        }
    if (st->n_generated < p->min_tokens)
        for (int32_t i = 0; i < st->n_banned; i++)
            mod_of(ws, mods, &n, st->banned[i])->ban = 1;
    struct penalties pn = penalties_of(p);
    if (pn.on) /* as apply_penalties applies them */
        for (int32_t i = 0; i < st->n_touched; i++) {
            int32_t t = st->touched[i];
            struct kern_sample_mod *md = mod_of(ws, mods, &n, t);
            md->rep = pn.rep;
            if (st->counts[t] > 0) {
                md->sub_freq = pn.freq * (float)st->counts[t];
                md->sub_pres = pn.pres;
            }
        }
    if (allow)
        for (int64_t t = 0; t < st->vocab; t++)
            if (!allowed(allow, t))
                mod_of(ws, mods, &n, (int32_t)t)->ban = 1;
    for (int64_t i = 0; i < n; i++)
        ws->slot[mods[i].token] = -1;

    bool greedy = !(p->temperature > 0.0f);
    *job = (struct kern_sample_job){
        .n_mods = n,
        .u = greedy ? 0.0 : eng_rng_uniform(&st->rng),
        .temperature = greedy ? 0.0f : clamp_temperature(p->temperature),
        .min_p = clamp_min_p(p->min_p),
        .top_p = p->top_p,
        .top_k = p->top_k,
        .logprobs = p->logprobs,
        .n_top = p->logprobs ? n_top_of(p, st->vocab) : 0,
    };
    return 0;
}
