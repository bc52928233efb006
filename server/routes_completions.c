/* POST /v1/completions (legacy): text or token-id prompts (several per request), echo, the legacy
 * logprobs shape {tokens, token_logprobs, top_logprobs, text_offset} including prompt logprobs
 * with echo, streamed as text_completion chunks. Also the OpenAI shapes both completion routes
 * share (usage, response base, chat logprob entries). Not request parsing (request.c). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"

/* ------------------------------------------------------------------ shared shapes */

cJSON *srv_usage_json(const struct eng_usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *d = o ? cJSON_AddObjectToObject(o, "prompt_tokens_details") : NULL;
    if (!d) {
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddNumberToObject(o, "prompt_tokens", u->prompt_tokens);
    cJSON_AddNumberToObject(o, "completion_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(o, "total_tokens", (double)u->prompt_tokens + u->completion_tokens);
    cJSON_AddNumberToObject(d, "cached_tokens", u->cached_tokens);
    return o;
}

const char *srv_finish_string(enum eng_finish_reason f)
{
    return f == ENG_FINISH_LENGTH ? "length" : "stop";
}

cJSON *srv_response_base(const char *id, const char *object, int64_t created, const char *model)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddStringToObject(o, "system_fingerprint", "phiserve-" PHISERVE_VERSION);
    return o;
}

static cJSON *bytes_array(const struct eng_tokenizer *tok, int32_t id)
{
    char raw[256];
    size_t n = srv_token_bytes(tok, id, raw, sizeof raw);
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber((unsigned char)raw[i]));
    return a;
}

static cJSON *chat_top_entry(const struct eng_tokenizer *tok, int32_t id, float lp)
{
    char text[512];
    srv_token_text(tok, id, text, sizeof text);
    cJSON *e = cJSON_CreateObject();
    if (!e)
        return NULL;
    cJSON_AddStringToObject(e, "token", text);
    cJSON_AddNumberToObject(e, "logprob", srv_logprob_value(lp));
    cJSON_AddItemToObject(e, "bytes", bytes_array(tok, id));
    return e;
}

cJSON *srv_chat_logprob_entry(const struct eng_tokenizer *tok, const struct eng_token_info *ti, int32_t n_top)
{
    cJSON *e = chat_top_entry(tok, ti->token, ti->logprob);
    cJSON *tops = e ? cJSON_AddArrayToObject(e, "top_logprobs") : NULL;
    if (!tops) {
        cJSON_Delete(e);
        return NULL;
    }
    int32_t k = ti->n_top < n_top ? ti->n_top : n_top;
    for (int32_t i = 0; i < k; i++) {
        cJSON *t = chat_top_entry(tok, ti->top[i].token, ti->top[i].logprob);
        if (!t) {
            cJSON_Delete(e);
            return NULL;
        }
        cJSON_AddItemToArray(tops, t);
    }
    return e;
}

/* ------------------------------------------------------------------ legacy logprobs */

struct legacy_lp {
    cJSON *obj, *tokens, *lps, *tops, *offs;
};

static int legacy_init(struct legacy_lp *l)
{
    l->obj = cJSON_CreateObject();
    if (!l->obj)
        return -1;
    l->tokens = cJSON_AddArrayToObject(l->obj, "tokens");
    l->lps = cJSON_AddArrayToObject(l->obj, "token_logprobs");
    l->tops = cJSON_AddArrayToObject(l->obj, "top_logprobs");
    l->offs = cJSON_AddArrayToObject(l->obj, "text_offset");
    if (!l->tokens || !l->lps || !l->tops || !l->offs) {
        cJSON_Delete(l->obj);
        l->obj = NULL;
        return -1;
    }
    return 0;
}

/* One token; has_lp false for the first prompt token (no logprob exists for it). The top dict
 * holds the n_top alternatives and the chosen token, keyed by token text (vLLM's shape). */
static void legacy_add(struct legacy_lp *l, const struct eng_tokenizer *tok, const struct eng_token_info *ti,
                       bool has_lp, int32_t n_top, int64_t *offset)
{
    char text[512];
    srv_token_text(tok, ti->token, text, sizeof text);
    cJSON_AddItemToArray(l->tokens, cJSON_CreateString(text));
    cJSON_AddItemToArray(l->offs, cJSON_CreateNumber((double)*offset));
    if (!eng_tokenizer_is_special(tok, ti->token)) {
        char raw[256];
        *offset += (int64_t)srv_token_bytes(tok, ti->token, raw, sizeof raw);
    }
    if (!has_lp) {
        cJSON_AddItemToArray(l->lps, cJSON_CreateNull());
        cJSON_AddItemToArray(l->tops, cJSON_CreateNull());
        return;
    }
    cJSON_AddItemToArray(l->lps, cJSON_CreateNumber(srv_logprob_value(ti->logprob)));
    cJSON *d = cJSON_CreateObject();
    int32_t k = ti->n_top < n_top ? ti->n_top : n_top;
    for (int32_t i = 0; d && i < k; i++) {
        char t[512];
        srv_token_text(tok, ti->top[i].token, t, sizeof t);
        if (!cJSON_GetObjectItemCaseSensitive(d, t))
            cJSON_AddNumberToObject(d, t, srv_logprob_value(ti->top[i].logprob));
    }
    if (d && !cJSON_GetObjectItemCaseSensitive(d, text))
        cJSON_AddNumberToObject(d, text, srv_logprob_value(ti->logprob));
    cJSON_AddItemToArray(l->tops, d ? d : cJSON_CreateNull());
}

/* ------------------------------------------------------------------ route */

struct cmpl_choice {
    struct srv_buf text;
    bool started;                 /* stream: echo (if any) sent */
    enum eng_finish_reason finish;
    int64_t offset;               /* text_offset of the next token */
    struct eng_token_info *toks;  /* non-stream with logprobs: generated tokens */
    size_t n_toks, cap_toks;
};

struct cmpl_prompt {
    char *echo;                   /* the prompt's text for echo (owned) */
    int32_t n_ids;
};

struct cmpl_ctx {
    char id[64];
    int64_t created;
    const char *model;
    const struct eng_tokenizer *tok;
    bool include_usage;
    bool echo;
    int32_t logprobs;             /* -1: none */
    int32_t n;
    int32_t n_prompts;
    struct cmpl_prompt *prompts;  /* [n_prompts] */
    struct cmpl_choice *ch;       /* [n_prompts * n] */
};

static void cmpl_destroy(void *p)
{
    struct cmpl_ctx *c = p;
    if (!c)
        return;
    for (int32_t i = 0; c->prompts && i < c->n_prompts; i++)
        free(c->prompts[i].echo);
    for (int32_t i = 0; c->ch && i < c->n_prompts * c->n; i++) {
        srv_buf_free(&c->ch[i].text);
        free(c->ch[i].toks);
    }
    free(c->prompts);
    free(c->ch);
    free(c);
}

static cJSON *cmpl_chunk(const struct cmpl_ctx *c, int32_t index, const char *text, size_t len, cJSON *lp,
                         enum eng_finish_reason finish)
{
    cJSON *o = srv_response_base(c->id, "text_completion", c->created, c->model);
    cJSON *arr = o ? cJSON_AddArrayToObject(o, "choices") : NULL;
    cJSON *ch = cJSON_CreateObject();
    char *t = malloc(len + 1);
    if (!arr || !ch || !t) {
        cJSON_Delete(o);
        cJSON_Delete(ch);
        cJSON_Delete(lp);
        free(t);
        return NULL;
    }
    memcpy(t, text, len);
    t[len] = '\0';
    cJSON_AddItemToArray(arr, ch);
    cJSON_AddNumberToObject(ch, "index", index);
    cJSON_AddStringToObject(ch, "text", t);
    free(t);
    if (lp)
        cJSON_AddItemToObject(ch, "logprobs", lp);
    else
        cJSON_AddNullToObject(ch, "logprobs");
    if (finish != ENG_FINISH_NONE)
        cJSON_AddStringToObject(ch, "finish_reason", srv_finish_string(finish));
    else
        cJSON_AddNullToObject(ch, "finish_reason");
    if (c->include_usage)
        cJSON_AddNullToObject(o, "usage");
    return o;
}

/* The prompt part of the logprobs (echo), appended to l. */
static void add_prompt_logprobs(const struct cmpl_ctx *c, struct srv_gen *g, int hi, struct legacy_lp *l,
                                int64_t *offset)
{
    const struct eng_token_info *pl = eng_handle_prompt_logprobs(g->h[hi]);
    if (!pl)
        return;
    for (int32_t i = 0; i < c->prompts[hi].n_ids; i++)
        legacy_add(l, c->tok, &pl[i], i > 0, c->logprobs, offset);
}

static int cmpl_event(struct srv_gen *g, int hi, const struct eng_event *ev)
{
    struct cmpl_ctx *c = g->ctx;
    if (ev->choice < 0 || ev->choice >= c->n)
        return 0;
    int32_t idx = hi * c->n + ev->choice;
    struct cmpl_choice *ch = &c->ch[idx];
    if (!g->stream) {
        if (srv_buf_append(&ch->text, ev->text, ev->text_len) != 0)
            return -1;
        if (c->logprobs >= 0 && ev->n_tokens > 0) {
            if (ch->n_toks + (size_t)ev->n_tokens > ch->cap_toks) {
                size_t cap = (ch->cap_toks ? ch->cap_toks * 2 : 16) + (size_t)ev->n_tokens;
                struct eng_token_info *t = realloc(ch->toks, cap * sizeof *t);
                if (!t)
                    return -1;
                ch->toks = t;
                ch->cap_toks = cap;
            }
            memcpy(ch->toks + ch->n_toks, ev->tokens, (size_t)ev->n_tokens * sizeof *ev->tokens);
            ch->n_toks += (size_t)ev->n_tokens;
        }
        if (ev->finish != ENG_FINISH_NONE)
            ch->finish = ev->finish;
        return 0;
    }
    if (!ch->started) {
        ch->started = true;
        if (c->echo) {
            const char *et = c->prompts[hi].echo ? c->prompts[hi].echo : "";
            struct legacy_lp l = {0};
            if (c->logprobs >= 0) {
                if (legacy_init(&l) != 0)
                    return -1;
                add_prompt_logprobs(c, g, hi, &l, &ch->offset);
            }
            ch->offset = (int64_t)strlen(et);
            cJSON *o = cmpl_chunk(c, idx, et, strlen(et), l.obj, ENG_FINISH_NONE);
            if (!o || srv_sse_write_json(&g->out, o) != 0) {
                cJSON_Delete(o);
                return -1;
            }
            cJSON_Delete(o);
        }
    }
    if (ev->text_len == 0 && ev->finish == ENG_FINISH_NONE && !(c->logprobs >= 0 && ev->n_tokens > 0))
        return 0;
    struct legacy_lp l = {0};
    if (c->logprobs >= 0) {
        if (legacy_init(&l) != 0)
            return -1;
        for (int32_t i = 0; i < ev->n_tokens; i++)
            legacy_add(&l, c->tok, &ev->tokens[i], true, c->logprobs, &ch->offset);
    }
    cJSON *o = cmpl_chunk(c, idx, ev->text, ev->text_len, l.obj, ev->finish);
    if (!o)
        return -1;
    int rc = srv_sse_write_json(&g->out, o);
    cJSON_Delete(o);
    return rc;
}

static int cmpl_done(struct srv_gen *g)
{
    struct cmpl_ctx *c = g->ctx;
    cJSON *u = srv_usage_json(&g->usage);
    if (!u)
        return -1;
    if (g->stream) {
        if (c->include_usage) {
            cJSON *o = srv_response_base(c->id, "text_completion", c->created, c->model);
            if (!o || !cJSON_AddArrayToObject(o, "choices")) {
                cJSON_Delete(o);
                cJSON_Delete(u);
                return -1;
            }
            cJSON_AddItemToObject(o, "usage", u);
            int rc = srv_sse_write_json(&g->out, o);
            cJSON_Delete(o);
            if (rc)
                return -1;
        } else {
            cJSON_Delete(u);
        }
        return srv_sse_write_done(&g->out);
    }
    cJSON *o = srv_response_base(c->id, "text_completion", c->created, c->model);
    cJSON *arr = o ? cJSON_AddArrayToObject(o, "choices") : NULL;
    if (!arr) {
        cJSON_Delete(o);
        cJSON_Delete(u);
        return -1;
    }
    cJSON_AddItemToObject(o, "usage", u);
    for (int32_t hi = 0; hi < c->n_prompts; hi++) {
        for (int32_t k = 0; k < c->n; k++) {
            int32_t idx = hi * c->n + k;
            struct cmpl_choice *ch = &c->ch[idx];
            struct srv_buf text = {0};
            const char *et = c->echo && c->prompts[hi].echo ? c->prompts[hi].echo : "";
            struct legacy_lp l = {0};
            int64_t offset = 0;
            if (c->logprobs >= 0) {
                if (legacy_init(&l) != 0) {
                    cJSON_Delete(o);
                    return -1;
                }
                if (c->echo)
                    add_prompt_logprobs(c, g, hi, &l, &offset);
                offset = (int64_t)strlen(et);
                for (size_t i = 0; i < ch->n_toks; i++)
                    legacy_add(&l, c->tok, &ch->toks[i], true, c->logprobs, &offset);
            }
            if (srv_buf_puts(&text, et) || srv_buf_append(&text, ch->text.p ? ch->text.p : "", ch->text.len)) {
                srv_buf_free(&text);
                cJSON_Delete(l.obj);
                cJSON_Delete(o);
                return -1;
            }
            cJSON *cj = cmpl_chunk(c, idx, text.p ? text.p : "", text.len, l.obj, ch->finish);
            srv_buf_free(&text);
            if (!cj) {
                cJSON_Delete(o);
                return -1;
            }
            /* move the choice object out of the chunk wrapper */
            cJSON *carr = cJSON_GetObjectItemCaseSensitive(cj, "choices");
            cJSON *choice = cJSON_DetachItemFromArray(carr, 0);
            cJSON_Delete(cj);
            if (!choice) {
                cJSON_Delete(o);
                return -1;
            }
            cJSON_AddItemToArray(arr, choice);
        }
    }
    return srv_buf_set_json(&g->out, o);
}

static const struct srv_gen_ops cmpl_ops = {cmpl_event, cmpl_done, cmpl_destroy};

int srv_route_completions(struct srv_req *r)
{
    struct srv_server *s = r->srv;
    struct srv_completion_request *q = NULL;
    struct srv_error e = {0};
    int rc = srv_completion_request_parse(r->body.p, r->body.len, &s->limits, &q, &e);
    if (rc != 0)
        return srv_respond_error(r, e.code, e.param, e.message[0] ? "%s" : NULL, e.message);
    const struct srv_sampling *sp = &q->sampling;
    int32_t np = (int32_t)q->n_prompts;
    struct cmpl_ctx *c = calloc(1, sizeof *c);
    int32_t **ids = calloc((size_t)np, sizeof *ids);
    if (c) {
        c->prompts = calloc((size_t)np, sizeof *c->prompts);
        c->ch = calloc((size_t)np * (size_t)sp->n, sizeof *c->ch);
    }
    if (!c || !ids || !c->prompts || !c->ch) {
        free(ids);
        cmpl_destroy(c);
        srv_completion_request_destroy(q);
        return srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
    }
    c->n_prompts = np;
    c->n = sp->n;
    int32_t max_tokens = sp->max_tokens;
    int32_t prompt_total = 0;
    rc = -1;
    for (int32_t i = 0; i < np && rc < 0; i++) {
        const struct srv_prompt *p = &q->prompts[i];
        char param[32];
        snprintf(param, sizeof param, np > 1 ? "prompt[%d]" : "prompt", (int)i);
        size_t n = 0;
        if (p->text) {
            if (!s->tok) {
                rc = srv_respond_error(r, SRV_ERR_UNSUPPORTED_VALUE, param,
                                       "This model has no tokenizer; send the prompt as token ids.");
                break;
            }
            int trc = eng_tokenizer_encode_max(s->tok, p->text, p->text_len, 1, (size_t)s->ctx_len,
                                               &ids[i], &n);
            if (trc == ENG_TOK_ERR_TOO_LONG) {
                rc = srv_respond_error(r, SRV_ERR_CONTEXT_LENGTH, param,
                                       "This model's maximum context length is %d tokens. However, "
                                       "your prompt is longer than that.", s->ctx_len);
                break;
            }
            if (trc != 0) {
                rc = srv_respond_error(r, trc == ENG_TOK_ERR_NOMEM ? SRV_ERR_NO_MEMORY : SRV_ERR_INVALID_VALUE, param,
                                       trc == ENG_TOK_ERR_NOMEM ? NULL : "The prompt could not be tokenized.");
                break;
            }
            c->prompts[i].echo = strdup(p->text);
        } else {
            ids[i] = malloc(p->n_ids * sizeof *ids[i]);
            if (ids[i])
                memcpy(ids[i], p->ids, p->n_ids * sizeof *ids[i]);
            n = p->n_ids;
            if (s->tok && q->echo) {
                size_t tl = 0;
                eng_tokenizer_decode(s->tok, p->ids, p->n_ids, 1, &c->prompts[i].echo, &tl);
            }
        }
        if (!ids[i] && n > 0) {
            rc = srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
            break;
        }
        c->prompts[i].n_ids = (int32_t)n;
        int32_t mt = max_tokens > 0 ? max_tokens : 16;
        if (max_tokens <= 0 && (int64_t)n + mt > s->ctx_len)
            mt = (int32_t)(s->ctx_len - (int64_t)n);
        if (n == 0 || (int64_t)n >= s->ctx_len || (int64_t)n + mt > s->ctx_len) {
            rc = srv_respond_error(r, SRV_ERR_CONTEXT_LENGTH, param,
                                   "This model's maximum context length is %d tokens. However, you requested "
                                   "%lld tokens (%zu in the prompt, %d in the completion). Please reduce the "
                                   "length of the prompt or completion.",
                                   s->ctx_len, (long long)n + mt, n, mt);
            break;
        }
        prompt_total += (int32_t)n;
        if (s->cfg->log_prompts && p->text && !r->log_prompt)
            r->log_prompt = strdup(p->text);
    }
    r->prompt_tokens = prompt_total;
    struct srv_gen *g = NULL;
    struct eng_logit_bias *bias = NULL;
    if (rc < 0) {
        srv_make_id("cmpl-", c->id, sizeof c->id);
        c->created = (int64_t)time(NULL);
        c->model = s->model_name;
        c->tok = s->tok;
        c->include_usage = sp->stream && sp->include_usage;
        c->echo = q->echo;
        c->logprobs = q->logprobs;
        bias = calloc(sp->n_logit_bias + 1, sizeof *bias);
        if (bias) {
            g = srv_gen_create(r, &cmpl_ops, c, np, sp->stream);
            c = NULL; /* owned by g now (or freed by srv_gen_create on failure) */
        }
        if (!g)
            rc = srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
    }
    for (int32_t i = 0; g && rc < 0 && i < np; i++) {
        struct eng_request er = {
            .prompt = ids[i],
            .n_prompt = ((struct cmpl_ctx *)g->ctx)->prompts[i].n_ids,
            .n = sp->n,
            .stop = (const char *const *)sp->stop,
            .n_stop = (int32_t)sp->n_stop,
            .include_stop_str_in_output = sp->include_stop_str_in_output,
            .skip_special_tokens = sp->skip_special_tokens,
            .grammar = sp->grammar,
            .prompt_logprobs = q->echo && q->logprobs >= 0,
            .prompt_top_logprobs = q->echo && q->logprobs >= 0 ? q->logprobs : 0,
        };
        int32_t mt = max_tokens > 0 ? max_tokens : 16;
        if (max_tokens <= 0 && (int64_t)er.n_prompt + mt > s->ctx_len)
            mt = (int32_t)(s->ctx_len - er.n_prompt);
        er.max_tokens = mt;
        srv_fill_sampling(sp, &er.sampling, bias);
        er.sampling.logprobs = q->logprobs >= 0;
        er.sampling.top_logprobs = q->logprobs >= 0 ? q->logprobs : 0;
        char err[256] = "";
        int src = eng_engine_submit(s->eng, &er, srv_gen_wake, g, &g->h[i], err, sizeof err);
        if (src != 0) {
            srv_gen_abandon(g);
            g = NULL;
            rc = srv_respond_submit_error(r, src, err, "prompt");
        }
    }
    for (int32_t i = 0; i < np; i++)
        free(ids[i]);
    free(ids);
    free(bias);
    cmpl_destroy(c);
    srv_completion_request_destroy(q);
    if (rc >= 0)
        return rc;
    return srv_gen_start(g, NULL);
}
