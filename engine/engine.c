/* The serving engine (see engine.h): request handles with their event queues, the engine
 * thread and its step loop (plan -> forward -> sample -> detokenize -> events), cancellation,
 * draining and metrics. The planning itself is scheduler.c's and block reuse prefix_cache.c's.
 *
 * Threads and locks. Caller threads (HTTP) call submit / next / wait / cancel / release; the
 * engine thread owns the model, the scheduler, the KV cache, the sampler workspace and every
 * handle's per-choice state (sampler state, detokenizer, stop matcher). Two kinds of mutex:
 *   e->mu  the engine's inbox of new requests, the flags (stop, draining, cancel_pending) and
 *          the metrics snapshot;
 *   h->mu  one handle's event queue, usage, published prompt logprobs and wake bookkeeping.
 * Lock order: e->mu before h->mu; code holding h->mu never takes e->mu (in practice they are
 * never held together). The wake callback runs with no lock held; eng_handle_release waits
 * for a running wake to return, so no wake starts after release returns. Handle lifetime is
 * an atomic reference count: one for the caller, one for the engine until every choice has
 * finished and its last events were queued; whoever drops the last one frees the handle. */
#include "engine.h"
#include "engine_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cuda_backend.h"
#include "detok.h"
#include "kv_cache.h"
#include "model.h"
#include "models/phi3.h"
#include "models/phi3v.h"
#include "ops.h"
#include "prefix_cache.h"
#include "rng.h"
#include "scheduler.h"


static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void eng_engine_options_init(struct eng_engine_options *o)
{
    memset(o, 0, sizeof *o);
    o->device = "cpu";
    o->gpu_memory_fraction = 0.9;
}

const struct eng_model_config *eng_engine_model_config(const struct eng_engine *e)
{
    return &e->model->cfg;
}

const struct eng_tokenizer *eng_engine_tokenizer(const struct eng_engine *e)
{
    return e->tok;
}

bool eng_engine_int8_activations(const struct eng_engine *e)
{
    return e->model->int8_dot;
}

/* ---- handles ---- */

static void handle_free(struct eng_handle *h)
{
    if (h->choices)
        for (int32_t i = 0; i < h->n; i++) {
            eng_sampler_state_free(&h->choices[i].st);
            eng_detok_destroy(h->choices[i].detok);
            eng_stop_matcher_destroy(h->choices[i].stop);
            eng_grammar_matcher_destroy(h->choices[i].gm);
        }
    struct pending_event *lists[] = {h->head, h->spare};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        for (struct pending_event *p = lists[i], *n; p; p = n) {
            n = p->next;
            free(p);
        }
    free(h->current);
    for (int32_t i = 0; h->images && i < h->n_images; i++)
        free(h->images[i].views);
    free(h->images);
    free(h->choices);
    free(h->plp);
    free(h->prompt);
    free(h->bias);
    free(h->stop_ids);
    free(h->eos_ids);
    eng_grammar_destroy(h->grammar);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
}

static void handle_unref(struct eng_handle *h)
{
    if (atomic_fetch_sub(&h->refs, 1) == 1)
        handle_free(h);
}

int eng_handle_next(struct eng_handle *h, const struct eng_event **ev)
{
    pthread_mutex_lock(&h->mu);
    if (h->current && h->n_spare < EVENT_MAX_SPARES) {
        h->current->next = h->spare;
        h->spare = h->current;
        h->n_spare++;
    } else {
        free(h->current);
    }
    h->current = NULL;
    int rc;
    if (h->head) {
        h->current = h->head;
        h->head = h->head->next;
        if (!h->head)
            h->tail = NULL;
        *ev = &h->current->ev;
        rc = 1;
    } else {
        rc = h->done ? -1 : 0;
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

void eng_handle_wait(struct eng_handle *h)
{
    pthread_mutex_lock(&h->mu);
    while (!h->head && !h->done)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

const struct eng_token_info *eng_handle_prompt_logprobs(struct eng_handle *h)
{
    pthread_mutex_lock(&h->mu);
    const struct eng_token_info *p = h->plp_ready ? h->plp : NULL;
    pthread_mutex_unlock(&h->mu);
    return p;
}

void eng_handle_usage(struct eng_handle *h, struct eng_usage *u)
{
    pthread_mutex_lock(&h->mu);
    *u = h->usage;
    pthread_mutex_unlock(&h->mu);
}

void eng_handle_cancel(struct eng_handle *h)
{
    if (atomic_exchange(&h->cancelled, true))
        return;
    struct eng_engine *e = h->e;
    pthread_mutex_lock(&e->mu);
    e->cancel_pending = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void eng_handle_release(struct eng_handle *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->released = true;
    while (h->waking > 0)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    eng_handle_cancel(h);
    handle_unref(h);
}

/* ---- events (engine thread) ---- */

static void mark_dirty(struct eng_engine *e, struct eng_handle *h)
{
    if (!h->dirty) {
        h->dirty = true;
        h->next = e->dirty;
        e->dirty = h;
    }
}

/* An event with room for need bytes of text: a spare of h when one is large enough (h->mu
 * held), else a new allocation; NULL when out of memory. */
static struct pending_event *event_alloc(struct eng_handle *h, size_t need)
{
    struct pending_event *p = h->spare;
    if (p) {
        h->spare = p->next;
        h->n_spare--;
        if (p->cap >= need)
            return p;
        free(p);
    }
    size_t cap = need > EVENT_MIN_TEXT ? need : EVENT_MIN_TEXT;
    p = malloc(sizeof *p + cap);
    if (p)
        p->cap = cap;
    return p;
}

/* Queues one event of choice c. A failed allocation drops the text of this event but never
 * its finish: the finish is then delivered without text. */
static void push_event(struct eng_engine *e, struct eng_handle *h, int32_t c, const char *text,
                       size_t len, const struct eng_token_info *tok, enum eng_finish_reason finish,
                       const char *error)
{
    size_t elen = error ? strlen(error) + 1 : 0;
    struct pending_event *p = NULL;
    pthread_mutex_lock(&h->mu);
    if (len < SIZE_MAX / 2 - sizeof *p - elen)
        p = event_alloc(h, len + 1 + elen);
    if (!p && finish != ENG_FINISH_NONE) {
        len = 0;
        elen = 0;
        error = NULL;
        p = event_alloc(h, 1);
    }
    if (p) {
        size_t cap = p->cap;
        memset(p, 0, sizeof *p);
        p->cap = cap;
        if (len)
            memcpy(p->text, text, len);
        p->text[len] = '\0';
        p->ev.choice = c;
        p->ev.text = p->text;
        p->ev.text_len = len;
        if (tok) {
            p->token = *tok;
            p->ev.tokens = &p->token;
            p->ev.n_tokens = 1;
        }
        p->ev.finish = finish;
        if (error) {
            memcpy(p->text + len + 1, error, elen);
            p->ev.error = p->text + len + 1;
        }
        if (h->tail)
            h->tail->next = p;
        else
            h->head = p;
        h->tail = p;
    }
    h->usage.completion_tokens = h->completion_tokens;
    h->usage.cached_tokens = h->cached_tokens;
    if (finish != ENG_FINISH_NONE && h->n_finished == h->n)
        h->done = true;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    mark_dirty(e, h);
}

/* Marks choice c finished and queues its last event. */
static void finish_choice(struct eng_engine *e, struct eng_handle *h, int32_t c, const char *text,
                          size_t len, const struct eng_token_info *tok,
                          enum eng_finish_reason finish, const char *error)
{
    if (h->choices[c].finished)
        return;
    h->choices[c].finished = true;
    h->n_finished++;
    if (h->n_finished == h->n)
        e->requests_finished++;
    push_event(e, h, c, text, len, tok, finish, error);
}

/* Ends a sequence that is not producing a token now (abort, error): its choice, and when it
 * is a request's prompt still waiting to fork, every choice it would have become. */
static void end_seq(struct eng_engine *e, struct eng_seq *seq, enum eng_finish_reason finish,
                    const char *error)
{
    struct eng_handle *h = seq->owner;
    int32_t c = seq->choice;
    int32_t n_fork = seq->n_fork;
    eng_sched_remove(&e->sched, seq);
    finish_choice(e, h, c, "", 0, NULL, finish, error);
    for (int32_t i = 1; i < n_fork; i++)
        finish_choice(e, h, i, "", 0, NULL, finish, error);
}

/* Wakes every handle that got events, then drops the engine's reference on finished ones. */
static void flush_wakes(struct eng_engine *e)
{
    while (e->dirty) {
        struct eng_handle *h = e->dirty;
        e->dirty = h->next;
        h->dirty = false;
        h->next = NULL;
        pthread_mutex_lock(&h->mu);
        bool call = !h->released && h->wake;
        if (call)
            h->waking++;
        pthread_mutex_unlock(&h->mu);
        if (call) {
            h->wake(h->user);
            pthread_mutex_lock(&h->mu);
            h->waking--;
            pthread_cond_broadcast(&h->cv);
            pthread_mutex_unlock(&h->mu);
        }
        if (h->n_finished == h->n && h->engine_ref) {
            h->engine_ref = false;
            e->ops.buf_free(e->ctx, h->img_embeds); /* engine thread: ordered with the ops */
            h->img_embeds = NULL;
            handle_unref(h);
        }
    }
}

/* ---- text assembly ---- */

static int tbuf_add(struct eng_engine *e, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (n > SIZE_MAX / 2 - e->tbuf_len)
        return -1;
    if (e->tbuf_len + n > e->tbuf_cap) {
        size_t cap = e->tbuf_cap ? e->tbuf_cap : 64;
        while (cap < e->tbuf_len + n)
            cap *= 2;
        char *p = realloc(e->tbuf, cap);
        if (!p)
            return -1;
        e->tbuf = p;
        e->tbuf_cap = cap;
    }
    memcpy(e->tbuf + e->tbuf_len, s, n);
    e->tbuf_len += n;
    return 0;
}

/* Passes decoded text through the choice's stop matcher (if any) into the event text. */
static int emit_text(struct eng_engine *e, struct choice *ch, const char *s, size_t n, bool *stopped)
{
    if (!ch->stop)
        return tbuf_add(e, s, n);
    const char *out;
    size_t out_len;
    if (*stopped)
        return 0;
    if (eng_stop_matcher_feed(ch->stop, s, n, &out, &out_len, stopped) != 0)
        return -1;
    return tbuf_add(e, out, out_len);
}

/* ---- logprobs ---- */

/* out = logprob of token under log_softmax(x) plus the n_top best alternatives (descending,
 * ties by ascending id). The sampler's rule for raw logits applies (NaN counts as -inf, +inf
 * takes the mass), so prompt and sampled logprobs agree. One implementation on purpose:
 * ranking by raw logits lets a NaN hold a top slot, since no comparison with NaN is true. */
/* n_top clamped to [0, 20] and to the vocabulary. */
static int32_t n_top_clamped(int32_t n_top, int64_t V)
{
    if (n_top > ENG_SAMPLER_MAX_TOP_LOGPROBS)
        n_top = ENG_SAMPLER_MAX_TOP_LOGPROBS;
    if (n_top > V)
        n_top = (int32_t)V;
    return n_top < 0 ? 0 : n_top;
}

static void fill_logprob(const float *x, int64_t V, int32_t token, int32_t n_top,
                         struct eng_token_info *out)
{
    memset(out, 0, sizeof *out);
    n_top = n_top_clamped(n_top, V);
    out->token = token;
    out->logprob = eng_sampler_raw_logprobs(x, V, token, n_top, out->top);
    out->n_top = n_top;
}

/* ---- structured output ---- */

static bool is_end_id(const struct eng_handle *h, int32_t t)
{
    for (int32_t i = 0; i < h->sp.n_eos_token_ids; i++)
        if (h->sp.eos_token_ids[i] == t)
            return true;
    for (int32_t i = 0; i < h->sp.n_stop_token_ids; i++)
        if (h->sp.stop_token_ids[i] == t)
            return true;
    return false;
}

/* Fills e->allow with what choice ch's grammar allows next: the tokens whose text continues
 * it, and the eos and stop ids once the text is complete. When the mask cannot be made
 * (eng_grammar_matcher_mask failed) it allows nothing and ch->grammar_err says why, so that
 * nothing is drawn and on_token ends the choice. */
static void grammar_mask(struct eng_engine *e, const struct eng_handle *h, struct choice *ch)
{
    const int64_t V = e->model->cfg.vocab_size;
    int64_t n = eng_grammar_matcher_mask(ch->gm, V, e->allow);
    if (n < 0) {
        ch->grammar_err = (int)n;
        memset(e->allow, 0, (size_t)(V + 31) / 32 * sizeof *e->allow);
        return;
    }
    if (!eng_grammar_matcher_complete(ch->gm))
        return;
    const int32_t *lists[2] = {h->sp.eos_token_ids, h->sp.stop_token_ids};
    int32_t counts[2] = {h->sp.n_eos_token_ids, h->sp.n_stop_token_ids};
    for (int l = 0; l < 2; l++)
        for (int32_t i = 0; i < counts[l]; i++)
            if (lists[l][i] >= 0 && lists[l][i] < V)
                e->allow[lists[l][i] >> 5] |= 1u << (lists[l][i] & 31);
}

/* ---- one generated token of one choice ---- */

/* lg: the sequence's [vocab] logits, or NULL when its row was a token row (plan_token_rows)
 * and token is what the backend chose from those logits (-1 when none was above -inf), with
 * job the index of its job (-1 for an argmax row), whose results hold the logprobs. */
static void on_token(struct eng_engine *e, struct eng_seq *seq, const float *lg, int32_t token,
                     int32_t job)
{
    struct eng_handle *h = seq->owner;
    int32_t c = seq->choice;
    struct choice *ch = &h->choices[c];
    const int64_t V = e->model->cfg.vocab_size;
    struct eng_sample_result res;
    int src;
    if (lg && ch->gm)
        grammar_mask(e, h, ch);
    if (lg)
        src = eng_sampler_sample_masked(&ch->st, &e->sws, &h->sp, lg, V,
                                        ch->gm ? e->allow : NULL, &res);
    else if (job >= 0)
        src = eng_sampler_take_logprobs(&ch->st, &h->sp, token, e->job_logprob[job],
                                        e->job_top + (size_t)job * KERN_MAX_TOP_LOGPROBS, V,
                                        &res);
    else
        src = eng_sampler_take(&ch->st, &h->sp, token, V, &res);
    if (src != 0 && ch->grammar_err == ENG_GRAMMAR_ERR_BUDGET) {
        end_seq(e, seq, ENG_FINISH_ERROR,
                "structured output failed: the schema takes too much work per token to follow");
        return;
    }
    if (src != 0 && ch->grammar_err == ENG_GRAMMAR_ERR_NOMEM) {
        end_seq(e, seq, ENG_FINISH_ERROR, "structured output failed: out of memory");
        return;
    }
    if (src != 0 && ch->gm) {
        end_seq(e, seq, ENG_FINISH_ERROR,
                "structured output failed: no token the schema allows can follow");
        return;
    }
    if (src != 0) {
        end_seq(e, seq, ENG_FINISH_ERROR, "sampling failed: no token has a finite logit");
        return;
    }
    int32_t tok = res.token;
    eng_sampler_accept(&ch->st, tok);
    if (eng_sched_append(seq, tok) != 0) {
        end_seq(e, seq, ENG_FINISH_ERROR, "out of memory");
        return;
    }
    h->completion_tokens++;
    e->generation_tokens_total++;
    if (c == 0 && ch->st.n_generated == 1)
        h->cached_tokens = seq->n_cached_tokens;
    /* The grammar follows the text; once it is whole and nothing may follow, the choice
     * stops here instead of spending a step on a forced eos. */
    bool grammar_done = false;
    if (ch->gm && !is_end_id(h, tok)) {
        int grc = eng_grammar_matcher_accept_token(ch->gm, tok);
        if (grc != 0) {
            end_seq(e, seq, ENG_FINISH_ERROR,
                    grc == ENG_GRAMMAR_ERR_REJECTED
                        ? "structured output failed: a token outside the schema was drawn"
                        : "structured output failed: the schema keeps too many parses open");
            return;
        }
        grammar_done = eng_grammar_matcher_complete(ch->gm) &&
                       !eng_grammar_matcher_can_continue(ch->gm);
    }

    struct eng_token_info info;
    memset(&info, 0, sizeof info);
    info.token = tok;
    if (h->sp.logprobs) {
        info.logprob = res.logprob;
        info.n_top = res.n_top;
        memcpy(info.top, res.top, (size_t)res.n_top * sizeof *info.top);
    }

    e->tbuf_len = 0;
    enum eng_finish_reason finish = ENG_FINISH_NONE;
    bool stop_id = eng_sampler_is_stop(&ch->st, &h->sp, tok);
    bool stopped = false;
    int trc = 0;
    const char *d;
    size_t dn;
    /* The text of a stop token is left out unless include_stop_str_in_output (vLLM). */
    if (ch->detok && (!stop_id || h->include_stop)) {
        trc |= eng_detok_push(ch->detok, tok, &d, &dn);
        if (trc == 0)
            trc |= emit_text(e, ch, d, dn, &stopped);
    }
    if (stopped || stop_id || grammar_done)
        finish = ENG_FINISH_STOP;
    else if (seq->n_tokens >= h->max_len)
        finish = ENG_FINISH_LENGTH;
    if (finish != ENG_FINISH_NONE && !stopped) {
        /* Flush held bytes and held-back text: the sequence ends without a stop string. */
        if (ch->detok && eng_detok_finish(ch->detok, &d, &dn) == 0)
            trc |= emit_text(e, ch, d, dn, &stopped);
        if (ch->stop && !stopped && eng_stop_matcher_flush(ch->stop, &d, &dn, &stopped) == 0)
            trc |= tbuf_add(e, d, dn);
        if (stopped)
            finish = ENG_FINISH_STOP;
    }
    if (trc != 0) {
        end_seq(e, seq, ENG_FINISH_ERROR, "detokenization failed");
        return;
    }
    if (finish == ENG_FINISH_NONE) {
        push_event(e, h, c, e->tbuf, e->tbuf_len, &info, ENG_FINISH_NONE, NULL);
        return;
    }
    eng_sched_remove(&e->sched, seq);
    finish_choice(e, h, c, e->tbuf, e->tbuf_len, &info, finish, NULL);
}

/* Stores the prompt logprobs of the rows of item it (every token of the chunk): from the
 * backend's results where a row had a job (jobs: plan_token_rows' were used), else from its
 * logits. */
static void on_prompt_rows(struct eng_engine *e, const struct eng_sched_item *it, const float *logits,
                           bool jobs)
{
    struct eng_seq *seq = it->seq;
    struct eng_handle *h = seq->owner;
    const int64_t V = e->model->cfg.vocab_size;
    for (int32_t j = 0; j < it->n_rows; j++) {
        int32_t p = it->pos0 + j + 1;  /* the row of position p - 1 predicts token p */
        if (p >= h->n_prompt)
            break;
        int32_t job = jobs ? e->row_job[it->row0 + j] : -1;
        if (job < 0) {
            fill_logprob(logits + (size_t)(it->row0 + j) * (size_t)V, V, h->prompt[p],
                         h->prompt_top, &h->plp[p]);
            continue;
        }
        struct eng_token_info *out = &h->plp[p];
        memset(out, 0, sizeof *out);
        out->token = h->prompt[p];
        out->logprob = e->job_logprob[job];
        out->n_top = n_top_clamped(h->prompt_top, V);
        const struct kern_token_logprob *top = e->job_top + (size_t)job * KERN_MAX_TOP_LOGPROBS;
        for (int32_t i = 0; i < out->n_top; i++)
            out->top[i] = (struct eng_token_logprob){top[i].token, top[i].logprob};
    }
    if (seq->n_computed >= h->n_prompt) {
        pthread_mutex_lock(&h->mu);
        h->plp_ready = true;
        pthread_mutex_unlock(&h->mu);
    }
}

/* ---- the step ---- */

static void fail_items(struct eng_engine *e, const char *msg)
{
    for (int32_t k = 0; k < e->sched.n_items; k++)
        end_seq(e, e->sched.items[k].seq, ENG_FINISH_ERROR, msg);
    e->sched.n_items = 0;
}

/* Resizes the array *p to n elements of size bytes (n * size fits: n is bounded by the step's
 * sizes). Returns 0, or -1 when out of memory (then *p is unchanged). */
static int resize(void **p, int64_t n, size_t size)
{
    void *q = realloc(*p, (size_t)n * size);
    if (!q)
        return -1;
    *p = q;
    return 0;
}

/* Room for n jobs of a step and their results. Returns 0 or -1 when out of memory. */
static int reserve_jobs(struct eng_engine *e, int64_t n)
{
    if (n <= e->cap_jobs)
        return 0;
    e->cap_jobs = 0; /* until every array has grown */
    if (resize((void **)&e->jobs, n, sizeof *e->jobs) != 0 ||
        resize((void **)&e->job_tokens, n, sizeof *e->job_tokens) != 0 ||
        resize((void **)&e->job_logprob, n, sizeof *e->job_logprob) != 0 ||
        resize((void **)&e->job_top, n, KERN_MAX_TOP_LOGPROBS * sizeof *e->job_top) != 0)
        return -1;
    e->cap_jobs = n;
    return 0;
}

int eng_engine_reserve_rows(struct eng_engine *e, int64_t R)
{
    if (R <= e->cap_rows)
        return 0;
    const int64_t V = e->model->cfg.vocab_size;
    if (e->logits_pinned) { /* never on a device in practice: its rows are reserved at start */
        kern_cuda_host_unregister(e->ctx, e->logits);
        e->logits_pinned = false;
    }
    e->cap_rows = 0; /* until every array has grown */
    /* A device backend draws every row where the logits are (plan_token_rows): its logits
     * never come back, unless the host samples. */
    if (((!e->cuda || e->host_sampling) &&
         resize((void **)&e->logits, R, (size_t)V * sizeof *e->logits) != 0) ||
        resize((void **)&e->argmax_rows, R, sizeof *e->argmax_rows) != 0 ||
        resize((void **)&e->row_tokens, R, sizeof *e->row_tokens) != 0 ||
        resize((void **)&e->row_job, R, sizeof *e->row_job) != 0)
        return -1;
    e->cap_rows = R;
    return reserve_jobs(e, R);
}

/* Room for n mods in e->mods; grows geometrically, so a steady load allocates nothing. */
static int reserve_mods(struct eng_engine *e, int64_t n)
{
    if (n <= e->cap_mods)
        return 0;
    int64_t cap = e->cap_mods > 0 ? e->cap_mods : 256;
    while (cap < n)
        cap *= 2;
    struct kern_sample_mod *m = realloc(e->mods, (size_t)cap * sizeof *m);
    if (!m)
        return -1;
    e->mods = m;
    e->cap_mods = cap;
    return 0;
}

/* Decides which rows of this plan bring back only tokens, and fills *tk for the forward pass.
 * On a device backend with a sample op every item's sampled (last) row is drawn there,
 * logprobs and all: one job per choice, consecutive, when the sequence is about to fork
 * (n > 1: every choice draws its first token from that row with its own state).
 * eng_sampler_job consumes the choices' RNG draws now. The prompt-logprob rows come back as
 * their logprobs (jobs with the prompt's next token given, after the drawing jobs).
 * Elsewhere, a sampled row of a sequence not about to fork whose token is the plain argmax
 * comes back as that (never a prompt-logprob item's). Returns 0, or -1 when out of memory. */
static int plan_token_rows(struct eng_engine *e, struct eng_phi3_tokens *tk)
{
    struct eng_scheduler *s = &e->sched;
    int64_t R = s->batch.n_logit_rows, n_argmax = 0, n_jobs = 0, n_mods = 0;
    *tk = (struct eng_phi3_tokens){.tokens = e->row_tokens, .job_tokens = e->job_tokens,
                                   .logprob = e->job_logprob, .top = e->job_top};
    if (e->host_sampling || R == 0)
        return 0;
    bool on_device = e->ops.sample != NULL && !e->ops.host_memory;
    int64_t extra = 0; /* jobs beyond one per row: the other choices of forking rows */
    for (int32_t k = 0; on_device && k < s->n_items; k++)
        if (s->items[k].sample && s->items[k].seq->n_fork > 1)
            extra += s->items[k].seq->n_fork - 1;
    if (reserve_jobs(e, R + extra) != 0)
        return -1;
    memset(e->argmax_rows, 0, (size_t)R);
    for (int64_t r = 0; r < R; r++)
        e->row_job[r] = -1;
    for (int32_t k = 0; k < s->n_items; k++) {
        const struct eng_sched_item *it = &s->items[k];
        struct eng_seq *seq = it->seq;
        if (!it->sample || it->n_rows < 1 ||
            (!on_device && (seq->n_fork > 1 || it->prompt_rows)))
            continue;
        struct eng_handle *h = seq->owner;
        int64_t row = it->row0 + it->n_rows - 1;
        if (on_device) {
            int32_t n_choices = seq->n_fork > 1 ? seq->n_fork : 1;
            e->row_job[row] = (int32_t)n_jobs;
            for (int32_t c = 0; c < n_choices; c++) {
                struct choice *ch = &h->choices[seq->choice + c];
                struct eng_sampler_state *st = &ch->st;
                int64_t need = eng_sampler_job_mods_max(&h->sp, st);
                if (ch->gm) { /* a grammar bans what it leaves out: up to every token */
                    grammar_mask(e, h, ch);
                    need = e->model->cfg.vocab_size;
                }
                if (reserve_mods(e, n_mods + need) != 0)
                    return -1;
                struct kern_sample_job *jb = &e->jobs[n_jobs++];
                /* Cannot fail: its conditions hold (states and workspace of this vocab). */
                (void)eng_sampler_job_masked(st, &e->sws, &h->sp, ch->gm ? e->allow : NULL, jb,
                                             e->mods + n_mods);
                jb->row = row;
                jb->mod_start = n_mods;
                n_mods += jb->n_mods;
            }
        } else if (!h->choices[seq->choice].gm &&
                   eng_sampler_is_greedy_argmax(&h->sp, &h->choices[seq->choice].st)) {
            e->argmax_rows[row] = 1;
            n_argmax++;
        }
    }
    e->sampled_rows_total += n_jobs;
    /* The prompt-logprob rows: row j predicts prompt token pos0 + j + 1. */
    for (int32_t k = 0; on_device && k < s->n_items; k++) {
        const struct eng_sched_item *it = &s->items[k];
        struct eng_handle *h = it->seq->owner;
        if (!it->prompt_rows || !h->plp)
            continue;
        for (int32_t j = 0; j < it->n_rows; j++) {
            int32_t p = it->pos0 + j + 1;
            if (p >= h->n_prompt)
                break;
            e->jobs[n_jobs] = (struct kern_sample_job){
                .row = it->row0 + j, .given = 1, .token = h->prompt[p], .logprobs = 1,
                .n_top = h->prompt_top};
            e->row_job[it->row0 + j] = (int32_t)n_jobs++;
        }
    }
    tk->argmax_rows = n_argmax > 0 ? e->argmax_rows : NULL;
    tk->jobs = e->jobs;
    tk->n_jobs = n_jobs;
    tk->mods = e->mods;
    tk->n_mods = n_mods;
    e->argmax_rows_total += n_argmax;
    return 0;
}

/* Points the plan's batch at the image features its rows take: the part of each image span
 * that falls in a scheduled chunk. Returns 0 or -1 when out of memory. */
static int plan_image_spans(struct eng_engine *e)
{
    struct eng_scheduler *s = &e->sched;
    int64_t n = 0, H = e->model->cfg.hidden_size;
    for (int32_t k = 0; k < s->n_items; k++) {
        const struct eng_sched_item *it = &s->items[k];
        const struct eng_handle *h = it->seq->owner;
        for (int32_t i = 0; i < h->n_images; i++) {
            const struct handle_image *im = &h->images[i];
            int32_t a = im->pos > it->pos0 ? im->pos : it->pos0;
            int32_t b = im->pos + im->n_tokens < it->pos0 + it->q_len ? im->pos + im->n_tokens
                                                                      : it->pos0 + it->q_len;
            if (a >= b)
                continue;
            if (n == e->cap_spans) {
                int64_t cap = n ? 2 * n : 8;
                if (resize((void **)&e->spans, cap, sizeof *e->spans) != 0)
                    return -1;
                e->cap_spans = cap;
            }
            e->spans[n++] = (struct eng_embed_span){
                .row = s->batch.q_start[k] + (a - it->pos0), .n_rows = b - a,
                .src = h->img_embeds + (im->row + (a - im->pos)) * H};
        }
    }
    s->batch.n_embed_spans = (int32_t)n;
    s->batch.embed_spans = n > 0 ? e->spans : NULL;
    return 0;
}

static void step(struct eng_engine *e)
{
    struct eng_scheduler *s = &e->sched;
    const int64_t V = e->model->cfg.vocab_size;
    if (eng_sched_plan(s) != 0) {
        fail_items(e, "out of memory while scheduling");
        return;
    }
    if (s->n_items == 0)
        return;
    if (plan_image_spans(e) != 0) {
        fail_items(e, "out of memory while scheduling");
        return;
    }
    int64_t R = s->batch.n_logit_rows;
    struct eng_phi3_tokens tk;
    if (eng_engine_reserve_rows(e, R) != 0 || plan_token_rows(e, &tk) != 0) {
        fail_items(e, "out of memory for logits");
        return;
    }
    int rc = eng_phi3_forward(e->model, &e->ops, e->ctx, e->kv, &s->batch, &e->ws, e->logits,
                              &tk);
    if (rc != 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "the backend failed (forward pass error %d)", rc);
        fail_items(e, msg);
        return;
    }
    /* Once per step: a device backend reports here what only the device could check (and
     * any failed kernel). The step's tokens are dropped and its requests end with an error;
     * the process and the other requests go on. */
    char serr[256], msg[320];
    if (e->ops.sync(e->ctx, serr, sizeof serr) != 0) {
        snprintf(msg, sizeof msg, "the %s backend failed: %s", e->ops.name, serr);
        fail_items(e, msg);
        return;
    }
    eng_sched_commit(s);
    /* Items are processed in plan order; on_token may remove the item's own sequence and
     * forks add new ones at the end of the running list, neither disturbs the item array. */
    for (int32_t k = 0; k < s->n_items; k++) {
        const struct eng_sched_item *it = &s->items[k];
        struct eng_seq *seq = it->seq;
        struct eng_handle *h = seq->owner;
        if (it->prompt_rows && h->plp)
            on_prompt_rows(e, it, e->logits, tk.n_jobs > 0);
        if (!it->sample)
            continue;
        int64_t row = it->row0 + it->n_rows - 1;
        const float *lg = e->logits ? e->logits + (size_t)row * (size_t)V : NULL;
        int32_t token = -1, job = -1; /* job: the first choice's; choice c has job + c */
        if (tk.argmax_rows && e->argmax_rows[row]) {
            lg = NULL; /* not downloaded: the backend chose the token */
            token = e->row_tokens[row];
        } else if (tk.n_jobs > 0 && e->row_job[row] >= 0) { /* a drawn row (never a given one) */
            lg = NULL;
            job = e->row_job[row];
            token = e->job_tokens[job];
        }
        struct eng_seq *kids[MAX_CHOICES];
        int32_t n_kids = 0;
        if (seq->n_fork > 1) {
            /* n > 1: the choices share the prompt's blocks and all draw their first token
             * from these logits. */
            for (int32_t c = 1; c < seq->n_fork; c++) {
                struct eng_seq *kid = eng_sched_fork(s, seq, c);
                if (kid)
                    kids[n_kids++] = kid;
                else
                    finish_choice(e, h, c, "", 0, NULL, ENG_FINISH_ERROR, "out of memory");
            }
            seq->n_fork = 0;
        }
        on_token(e, seq, lg, token, job);
        for (int32_t c = 0; c < n_kids; c++) {
            /* A drawn row: each choice's own job. Never an argmax row (plan_token_rows). */
            int32_t kj = job >= 0 ? job + kids[c]->choice : -1;
            on_token(e, kids[c], lg, kj >= 0 ? e->job_tokens[kj] : token, kj);
        }
    }
}

/* Runs the vision encoder over a request's images into h->img_embeds (engine thread). The
 * host copies of the views go once encoded. Returns 0 or -1 (the buffer is freed then). */
static int encode_images(struct eng_engine *e, struct eng_handle *h)
{
    size_t bytes = (size_t)h->n_image_tokens * (size_t)e->model->cfg.hidden_size * sizeof(float);
    void *buf = NULL;
    if (e->ops.buf_alloc(e->ctx, bytes, &buf) != 0)
        return -1;
    h->img_embeds = buf;
    int64_t H = e->model->cfg.hidden_size;
    for (int32_t i = 0; i < h->n_images; i++) {
        struct handle_image *im = &h->images[i];
        if (eng_phi3v_encode(e->model, &e->ops, e->ctx, im->views, im->h_crop, im->w_crop,
                             h->img_embeds + im->row * H) != 0 ||
            e->ops.sync(e->ctx, NULL, 0) != 0) {
            e->ops.buf_free(e->ctx, h->img_embeds);
            h->img_embeds = NULL;
            return -1;
        }
        free(im->views);
        im->views = NULL;
    }
    return 0;
}

/* Moves new requests from the inbox into the scheduler (engine thread, no lock held). */
static void intake(struct eng_engine *e, struct eng_handle *list)
{
    while (list) {
        struct eng_handle *h = list;
        list = h->next;
        h->next = NULL;
        e->prompt_tokens_total += h->n_prompt;
        if (h->n_images > 0 && encode_images(e, h) != 0) {
            for (int32_t c = 0; c < h->n; c++)
                finish_choice(e, h, c, "", 0, NULL, ENG_FINISH_ERROR,
                              "the images could not be encoded (out of memory or backend failure)");
            continue;
        }
        struct eng_seq *seq = eng_seq_create(h, 0, h->prompt, h->n_prompt);
        if (seq) {
            seq->variant = h->variant;
            seq->variant_fixed = h->variant_fixed;
            seq->allow_cache_hits = !h->prompt_logprobs;
            seq->want_prompt_logits = h->prompt_logprobs;
            seq->n_fork = h->n;
            if (eng_sched_add(&e->sched, seq) == 0)
                continue;
            eng_seq_destroy(seq);
        }
        for (int32_t c = 0; c < h->n; c++)
            finish_choice(e, h, c, "", 0, NULL, ENG_FINISH_ERROR, "out of memory");
    }
}

/* Ends every sequence whose request was cancelled (or all of them when all is set). */
static void reap(struct eng_engine *e, bool all)
{
    struct eng_scheduler *s = &e->sched;
    for (int32_t i = s->n_running - 1; i >= 0; i--) {
        struct eng_seq *seq = s->running[i];
        if (all || atomic_load(&((struct eng_handle *)seq->owner)->cancelled))
            end_seq(e, seq, ENG_FINISH_ABORT, NULL);
    }
    for (int32_t i = s->n_waiting - 1; i >= 0; i--) {
        struct eng_seq *seq = s->waiting[i];
        if (all || atomic_load(&((struct eng_handle *)seq->owner)->cancelled))
            end_seq(e, seq, ENG_FINISH_ABORT, NULL);
    }
}

void eng_engine_snapshot_metrics(struct eng_engine *e)
{
    struct eng_metrics *m = &e->metrics;
    m->running = e->sched.n_running;
    m->waiting = e->sched.n_waiting;
    m->kv_blocks_used = eng_prefix_cache_n_used(e->pc);
    m->kv_blocks_total = e->kv->n_blocks;
    m->preemptions = e->sched.n_preemptions;
    m->prefix_cache_queries = e->sched.prefix_queries;
    m->prefix_cache_hits = e->sched.prefix_hits;
    m->prompt_tokens_total = e->prompt_tokens_total;
    m->generation_tokens_total = e->generation_tokens_total;
    m->requests_finished = e->requests_finished;
    m->argmax_rows_total = e->argmax_rows_total;
    m->sampled_rows_total = e->sampled_rows_total;
    m->graph_replays_total = e->ws.graph_replays;
    m->graph_records_total = e->ws.graph_records;
    m->progress_ns = mono_ns();
}

void *eng_engine_main(void *arg)
{
    struct eng_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->stop && (e->held || (!e->inbox_head && !e->cancel_pending &&
                                        e->sched.n_running == 0 && e->sched.n_waiting == 0)))
            pthread_cond_wait(&e->cv, &e->mu);
        if (e->stop)
            break;
        /* A step starts now: a stall is measured from here, not from an idle spell before. */
        e->metrics.progress_ns = mono_ns();
        struct eng_handle *list = e->inbox_head;
        e->inbox_head = e->inbox_tail = NULL;
        /* They count as waiting until the next snapshot, so the queue bound never has a gap. */
        e->metrics.waiting += e->n_inbox;
        e->n_inbox = 0;
        bool cancels = e->cancel_pending;
        e->cancel_pending = false;
        pthread_mutex_unlock(&e->mu);

        intake(e, list);
        if (cancels || list)
            reap(e, false);
        if (e->test_step_sleep_ms > 0) {
            struct timespec nap = {e->test_step_sleep_ms / 1000,
                                   (e->test_step_sleep_ms % 1000) * 1000000};
            nanosleep(&nap, NULL);
        }
        step(e);
        /* Cancellations that arrived during the forward free their blocks now, not a step
         * later. */
        reap(e, false);
        /* The snapshot comes before the wakes, so a woken caller sees this step's state. */
        pthread_mutex_lock(&e->mu);
        eng_engine_snapshot_metrics(e);
        pthread_mutex_unlock(&e->mu);
        flush_wakes(e);
        pthread_mutex_lock(&e->mu);
    }
    struct eng_handle *list = e->inbox_head;
    e->inbox_head = e->inbox_tail = NULL;
    e->n_inbox = 0;
    pthread_mutex_unlock(&e->mu);
    intake(e, list);
    reap(e, true);
    flush_wakes(e);
    pthread_mutex_lock(&e->mu);
    eng_engine_snapshot_metrics(e);
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* ---- submit ---- */

int eng_engine_fail_msg(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}


/* Under e->mu: ENG_ERR_DRAINING or ENG_ERR_QUEUE_FULL, or 0. */
static int admission_state(const struct eng_engine *e)
{
    if (e->draining || e->stop)
        return ENG_ERR_DRAINING;
    if ((int64_t)e->n_inbox + e->metrics.waiting >= e->max_waiting)
        return ENG_ERR_QUEUE_FULL;
    return 0;
}

static int admission_msg(int rc, const struct eng_engine *e, char *err, size_t errlen)
{
    if (rc == ENG_ERR_DRAINING)
        return eng_engine_fail_msg(err, errlen, rc, "the server is shutting down and accepts no new requests");
    return eng_engine_fail_msg(err, errlen, rc, "too many requests waiting (limit %d); retry later",
                    (int)e->max_waiting);
}

static void *dup_array(const void *p, size_t n, size_t sz, bool *fail)
{
    if (!p || n == 0)
        return NULL;
    void *q = malloc(n * sz);
    if (!q)
        *fail = true;
    else
        memcpy(q, p, n * sz);
    return q;
}

static int32_t image_span(const struct eng_model_config *cfg, const struct eng_image_input *im)
{
    return (int32_t)eng_vision_image_tokens(&cfg->vision, im->h_crop, im->w_crop);
}

/* A request's images: only for a vision model, each grid within num_crops, the spans
 * ascending, disjoint and inside the prompt. */
static int check_images(const struct eng_engine *e, const struct eng_request *r, char *err,
                        size_t errlen)
{
    const struct eng_model_config *cfg = &e->model->cfg;
    if (r->n_images == 0)
        return 0;
    if (cfg->arch != ENG_ARCH_PHI3V)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID, "this model takes no images");
    if (r->n_images < 0 || r->n_images > ENG_MAX_IMAGES || !r->images)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID,
                                   "a request takes 0 to %d images", ENG_MAX_IMAGES);
    if (r->prompt_logprobs)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID,
                                   "prompt logprobs are not available with images");
    int64_t end = 0;
    for (int32_t i = 0; i < r->n_images; i++) {
        const struct eng_image_input *im = &r->images[i];
        if (!im->views || im->h_crop < 1 || im->w_crop < 1 ||
            (int64_t)im->h_crop * im->w_crop > cfg->vision.num_crops)
            return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID,
                                       "image %d: a grid of %d x %d crops is not valid for this "
                                       "model (at most %lld crops)", i + 1, im->h_crop,
                                       im->w_crop, (long long)cfg->vision.num_crops);
        int64_t span = image_span(cfg, im);
        if (im->pos < end || (int64_t)im->pos + span > r->n_prompt)
            return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID,
                                       "image %d: its %lld prompt positions from %d overlap "
                                       "another image or leave the prompt", i + 1,
                                       (long long)span, im->pos);
        end = im->pos + span;
    }
    return 0;
}

/* The prefix cache keys a block by its token ids: the positions of an image get negative
 * ids made from a hash of its pixels, so that only the same image at the same place hits. The
 * scheduler feeds negative ids to the embedding as 0, and the image rows overwrite them. */
static uint64_t image_hash(const float *v, size_t n, int32_t h_crop, int32_t w_crop)
{
    uint64_t x = 0x9e3779b97f4a7c15u ^ ((uint64_t)(uint32_t)h_crop << 32 | (uint32_t)w_crop);
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        x = (x ^ bits) * 0xff51afd7ed558ccdu;
        x ^= x >> 32;
    }
    return x;
}

/* Copies the request's images into h and marks their spans in h->prompt. Returns 0 or -1
 * when out of memory. */
static int take_images(const struct eng_engine *e, const struct eng_request *r,
                       struct eng_handle *h)
{
    if (r->n_images == 0)
        return 0;
    const struct eng_vision_config *vc = &e->model->cfg.vision;
    h->images = calloc((size_t)r->n_images, sizeof *h->images);
    if (!h->images)
        return -1;
    h->n_images = r->n_images;
    int64_t row = 0;
    for (int32_t i = 0; i < r->n_images; i++) {
        const struct eng_image_input *in = &r->images[i];
        struct handle_image *im = &h->images[i];
        size_t n = (size_t)(1 + in->h_crop * in->w_crop) * 3 * (size_t)(vc->image_size * vc->image_size);
        im->views = malloc(n * sizeof *im->views);
        if (!im->views)
            return -1;
        memcpy(im->views, in->views, n * sizeof *im->views);
        im->h_crop = in->h_crop;
        im->w_crop = in->w_crop;
        im->pos = in->pos;
        im->n_tokens = image_span(&e->model->cfg, in);
        im->row = row;
        row += im->n_tokens;
        uint64_t hash = image_hash(im->views, n, in->h_crop, in->w_crop);
        for (int32_t j = 0; j < im->n_tokens; j++)
            h->prompt[im->pos + j] =
                -(int32_t)(1 + ((hash + (uint64_t)j * 0x9e3779b97f4a7c15u) >> 34));
    }
    h->n_image_tokens = row;
    return 0;
}

int eng_engine_submit(struct eng_engine *e, const struct eng_request *r, eng_wake_fn wake,
                      void *user, struct eng_handle **out, char *err, size_t errlen)
{
    *out = NULL;
    const struct eng_model_config *cfg = &e->model->cfg;
    if (!r || !r->prompt || r->n_prompt < 1)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID, "the prompt must hold at least one token");
    if (r->grammar && !e->gvocab)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID,
                                   "structured output needs the model's tokenizer");
    int rc = check_images(e, r, err, errlen);
    if (rc != 0)
        return rc;
    for (int32_t i = 0, k = 0; i < r->n_prompt; i++) {
        if (k < r->n_images && i >= r->images[k].pos) { /* ids inside a span are ignored */
            i = r->images[k].pos + image_span(cfg, &r->images[k]) - 1;
            k++;
            continue;
        }
        if (r->prompt[i] < 0 || r->prompt[i] >= cfg->vocab_size)
            return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID,
                            "prompt token %d at index %d is outside the vocabulary [0, %lld)",
                            r->prompt[i], i, (long long)cfg->vocab_size);
    }
    if (r->n < 1 || r->n > MAX_CHOICES)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID, "n must be between 1 and %d", MAX_CHOICES);
    if (r->n_stop < 0 || (r->n_stop > 0 && !r->stop))
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID, "invalid stop list");
    for (int32_t i = 0; i < r->n_stop; i++)
        if (!r->stop[i] || !r->stop[i][0])
            return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID, "stop strings must not be empty");
    if (r->prompt_top_logprobs < 0 || r->prompt_top_logprobs > ENG_SAMPLER_MAX_TOP_LOGPROBS)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID, "prompt_logprobs must be between 0 and %d",
                        ENG_SAMPLER_MAX_TOP_LOGPROBS);
    const struct eng_sampling_params *sp = &r->sampling;
    if ((sp->n_logit_bias > 0 && !sp->logit_bias) || sp->n_logit_bias < 0 ||
        (sp->n_stop_token_ids > 0 && !sp->stop_token_ids) || sp->n_stop_token_ids < 0 ||
        (sp->n_eos_token_ids > 0 && !sp->eos_token_ids) || sp->n_eos_token_ids < 0)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID, "invalid sampling arrays");

    int64_t max_pos = cfg->max_position_embeddings;
    int64_t completion = r->max_tokens > 0 ? r->max_tokens : 0;
    if ((int64_t)r->n_prompt + completion > max_pos ||
        (completion == 0 && (int64_t)r->n_prompt >= max_pos))
        return eng_engine_fail_msg(err, errlen, ENG_ERR_CONTEXT,
                        "This model's maximum context length is %lld tokens. However, you "
                        "requested %lld tokens (%d in the messages, %lld in the completion). "
                        "Please reduce the length of the messages or completion.",
                        (long long)max_pos, (long long)r->n_prompt + completion, r->n_prompt,
                        (long long)completion);
    int64_t max_len = completion > 0 ? (int64_t)r->n_prompt + completion : max_pos;
    /* A sequence computes at most max_len - 1 tokens (its last token is never fed back); it
     * must fit in the pool on its own, or preemption could never make room for it. */
    int64_t need = (max_len - 1 + e->kv->block_size - 1) / e->kv->block_size;
    if (need > e->kv->n_blocks)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_CONTEXT,
                        "This request needs up to %lld tokens of KV cache but the cache holds "
                        "%lld; reduce the prompt or max_tokens.",
                        (long long)max_len - 1,
                        (long long)(e->kv->n_blocks * e->kv->block_size));

    pthread_mutex_lock(&e->mu);
    int arc = admission_state(e);
    pthread_mutex_unlock(&e->mu);
    if (arc != 0)
        return admission_msg(arc, e, err, errlen);

    struct eng_handle *h = calloc(1, sizeof *h);
    if (!h)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    atomic_init(&h->refs, 2);
    atomic_init(&h->cancelled, false);
    h->e = e;
    h->n = r->n;
    h->n_prompt = r->n_prompt;
    h->max_len = (int32_t)max_len;
    h->include_stop = r->include_stop_str_in_output;
    h->prompt_logprobs = r->prompt_logprobs;
    h->prompt_top = r->prompt_top_logprobs;
    h->wake = wake;
    h->user = user;
    h->engine_ref = true;
    h->usage.prompt_tokens = r->n_prompt;
    bool oom = false;
    h->prompt = dup_array(r->prompt, (size_t)r->n_prompt, sizeof *h->prompt, &oom);
    h->sp = *sp;
    h->bias = dup_array(sp->logit_bias, (size_t)sp->n_logit_bias, sizeof *h->bias, &oom);
    h->stop_ids = dup_array(sp->stop_token_ids, (size_t)sp->n_stop_token_ids, sizeof *h->stop_ids, &oom);
    if (sp->n_eos_token_ids > 0) {
        h->eos_ids = dup_array(sp->eos_token_ids, (size_t)sp->n_eos_token_ids, sizeof *h->eos_ids, &oom);
    } else {
        h->eos_ids = dup_array(cfg->eos_token_ids, (size_t)cfg->n_eos_ids, sizeof *h->eos_ids, &oom);
        h->sp.n_eos_token_ids = cfg->n_eos_ids;
    }
    h->sp.logit_bias = h->bias;
    h->sp.stop_token_ids = h->stop_ids;
    h->sp.eos_token_ids = h->eos_ids;
    h->choices = calloc((size_t)r->n, sizeof *h->choices);
    if (r->prompt_logprobs) {
        h->plp = calloc((size_t)r->n_prompt, sizeof *h->plp);
        if (h->plp)
            h->plp[0].token = r->prompt[0];
    }
    if (oom || !h->choices || (r->prompt_logprobs && !h->plp) || take_images(e, r, h) != 0 ||
        (r->grammar && !(h->grammar = eng_grammar_retain(r->grammar))))
        goto nomem;

    /* LongRoPE: the variant is chosen at admission by the scheduler (transformers' rule)
     * unless rope_long_from_start decides now. The longest sequence ever fed to the model is
     * max_len - 1 tokens (the last generated token is never computed), so "long from the
     * start" applies exactly when that crosses original_max. */
    if (e->long_from_start && cfg->rope_type == ENG_ROPE_LONGROPE) {
        h->variant_fixed = true;
        h->variant = max_len - 1 > cfg->original_max_position_embeddings ? ENG_ROPE_LONG
                                                                          : ENG_ROPE_SHORT;
    }

    uint64_t entropy = atomic_fetch_add(&e->entropy, 0x9e3779b97f4a7c15u);
    /* The detokenizer's context: the prompt's last text tokens (none past an image). */
    int32_t n_ctx = 0;
    while (n_ctx < DETOK_CONTEXT && n_ctx < r->n_prompt && h->prompt[r->n_prompt - 1 - n_ctx] >= 0)
        n_ctx++;
    for (int32_t c = 0; c < r->n; c++) {
        struct choice *ch = &h->choices[c];
        struct eng_sampling_params p = h->sp;
        /* Choice i of a seeded request uses seed + i (vLLM); wraps instead of overflowing. */
        p.seed = (int64_t)((uint64_t)sp->seed + (uint64_t)c);
        int src = eng_sampler_state_init(&ch->st, &p, cfg->vocab_size, h->prompt, h->n_prompt,
                                         eng_splitmix64_next(&entropy));
        if (src != 0)
            goto nomem;
        if (e->tok && eng_detok_create(e->tok, h->prompt + r->n_prompt - n_ctx, (size_t)n_ctx,
                                       r->skip_special_tokens, &ch->detok) != 0)
            goto nomem;
        if (r->n_stop > 0 && eng_stop_matcher_create(r->stop, (size_t)r->n_stop,
                                                     r->include_stop_str_in_output, &ch->stop) != 0)
            goto nomem;
        int grc = h->grammar ? eng_grammar_matcher_create(h->grammar, e->gvocab, &ch->gm) : 0;
        if (grc == ENG_GRAMMAR_ERR_AMBIGUOUS) {
            handle_free(h);
            return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID,
                                       "the grammar keeps too many alternatives open at once");
        }
        if (grc != 0)
            goto nomem;
    }

    pthread_mutex_lock(&e->mu);
    arc = admission_state(e);
    if (arc == 0) {
        if (e->inbox_tail)
            e->inbox_tail->next = h;
        else
            e->inbox_head = h;
        e->inbox_tail = h;
        /* Work arriving at an idle engine restarts the progress clock here, not when the engine
         * thread wakes: until then the request already counts as waiting, and the idle spell
         * before it is no stall. */
        if (e->n_inbox == 0 && e->metrics.running == 0 && e->metrics.waiting == 0)
            e->metrics.progress_ns = mono_ns();
        e->n_inbox++;
        pthread_cond_signal(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    if (arc != 0) {
        handle_free(h);
        return admission_msg(arc, e, err, errlen);
    }
    *out = h;
    return 0;
nomem:
    handle_free(h);
    return eng_engine_fail_msg(err, errlen, ENG_ERR_NOMEM, "out of memory");
}

void eng_engine_drain(struct eng_engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->draining = true;
    pthread_mutex_unlock(&e->mu);
}

void eng_engine_hold(struct eng_engine *e, bool hold)
{
    pthread_mutex_lock(&e->mu);
    e->held = hold;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void eng_engine_get_metrics(struct eng_engine *e, struct eng_metrics *m)
{
    pthread_mutex_lock(&e->mu);
    *m = e->metrics;
    m->waiting += e->n_inbox;
    pthread_mutex_unlock(&e->mu);
}
