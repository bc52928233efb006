/* POST /v1/chat/completions: validated request -> chat template (add_generation_prompt, the
 * template carries BOS) -> token ids without extra special tokens -> engine, and the OpenAI
 * chat.completion / chat.completion.chunk shapes back (role chunk, content deltas, an empty
 * final delta with finish_reason, optional usage chunk, [DONE]). Not request parsing
 * (request.c) and not the streaming mechanics (sse.c). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_template.h"
#include "http.h"
#include "tool_calls.h"
#include "vision_input.h"

struct chat_choice {
    struct srv_buf text;    /* non-stream: the whole content */
    cJSON *lp;              /* non-stream with logprobs: array of entries */
    enum eng_finish_reason finish;
    struct srv_tool_reader *reader; /* stream with tools: reads the answer's layout */
};

struct chat_ctx {
    char id[64];
    int64_t created;
    const char *model;
    const struct eng_tokenizer *tok;
    bool include_usage;
    bool logprobs;
    int32_t top_logprobs;
    int32_t n;
    bool tools;              /* the answers are in the tool-calling layout (tool_calls.h) */
    bool tool_named;         /* a named tool_choice: OpenAI ends those calls with "stop" */
    struct chat_choice *ch;  /* [n] */
};

static void chat_destroy(void *p)
{
    struct chat_ctx *c = p;
    if (!c)
        return;
    for (int32_t i = 0; c->ch && i < c->n; i++) {
        srv_buf_free(&c->ch[i].text);
        cJSON_Delete(c->ch[i].lp);
        srv_tool_reader_destroy(c->ch[i].reader);
    }
    free(c->ch);
    free(c);
}

static cJSON *chunk(const struct chat_ctx *c, int32_t index, cJSON **delta, cJSON **choice)
{
    cJSON *o = srv_response_base(c->id, "chat.completion.chunk", c->created, c->model);
    cJSON *arr = o ? cJSON_AddArrayToObject(o, "choices") : NULL;
    cJSON *ch = cJSON_CreateObject();
    if (!arr || !ch) {
        cJSON_Delete(o);
        cJSON_Delete(ch);
        return NULL;
    }
    cJSON_AddItemToArray(arr, ch);
    cJSON_AddNumberToObject(ch, "index", index);
    *delta = cJSON_AddObjectToObject(ch, "delta");
    *choice = ch;
    if (c->include_usage)
        cJSON_AddNullToObject(o, "usage");
    return *delta ? o : (cJSON_Delete(o), NULL);
}

static int emit(struct srv_gen *g, cJSON *o)
{
    if (!o)
        return -1;
    int rc = srv_sse_write_json(&g->out, o);
    cJSON_Delete(o);
    return rc;
}

static cJSON *logprobs_of(const struct chat_ctx *c, const struct eng_event *ev)
{
    cJSON *lp = cJSON_CreateObject();
    cJSON *content = lp ? cJSON_AddArrayToObject(lp, "content") : NULL;
    if (!content) {
        cJSON_Delete(lp);
        return NULL;
    }
    for (int32_t i = 0; i < ev->n_tokens; i++) {
        cJSON *e = srv_chat_logprob_entry(c->tok, &ev->tokens[i], c->top_logprobs);
        if (!e) {
            cJSON_Delete(lp);
            return NULL;
        }
        cJSON_AddItemToArray(content, e);
    }
    cJSON_AddNullToObject(lp, "refusal");
    return lp;
}

/* A stream with tools: each delta of the layout as a chunk of content or of tool_calls (the
 * first chunk of a call carries its id, type, name and empty arguments; the next ones pieces
 * of the arguments). */
struct tool_emit {
    struct srv_gen *g;
    const struct chat_ctx *c;
    int32_t choice;
};

static int tool_delta(void *user, const struct srv_tool_delta *d)
{
    struct tool_emit *te = user;
    cJSON *delta, *choice;
    cJSON *o = chunk(te->c, te->choice, &delta, &choice);
    if (!o)
        return 1;
    char *t = malloc(d->len + 1);
    if (t) {
        memcpy(t, d->text ? d->text : "", d->len);
        t[d->len] = '\0';
    }
    bool ok = t != NULL;
    if (ok && d->kind == SRV_TOOL_DELTA_CONTENT) {
        ok = cJSON_AddStringToObject(delta, "content", t) != NULL;
    } else if (ok) {
        cJSON *arr = cJSON_AddArrayToObject(delta, "tool_calls");
        cJSON *tc = cJSON_CreateObject();
        cJSON *f = tc ? cJSON_AddObjectToObject(tc, "function") : NULL;
        ok = arr && f;
        if (tc)
            cJSON_AddItemToArray(arr ? arr : o, tc);
        if (ok) {
            cJSON_AddNumberToObject(tc, "index", d->index);
            if (d->kind == SRV_TOOL_DELTA_CALL) {
                char id[40];
                srv_make_id("call_", id, sizeof id);
                ok = cJSON_AddStringToObject(tc, "id", id) && cJSON_AddStringToObject(tc, "type", "function") &&
                     cJSON_AddStringToObject(f, "name", d->name) &&
                     cJSON_AddStringToObject(f, "arguments", "");
            } else {
                ok = cJSON_AddStringToObject(f, "arguments", t) != NULL;
            }
        }
    }
    free(t);
    cJSON_AddNullToObject(choice, "logprobs");
    cJSON_AddNullToObject(choice, "finish_reason");
    if (!ok) {
        cJSON_Delete(o);
        return 1;
    }
    return emit(te->g, o) != 0 ? 1 : 0;
}

static const char *finish_of(const struct chat_ctx *c, enum eng_finish_reason f, bool calls,
                             bool complete)
{
    if (c->tools && !c->tool_named && calls && complete && f == ENG_FINISH_STOP)
        return "tool_calls";
    return srv_finish_string(f);
}

static int chat_event(struct srv_gen *g, int hi, const struct eng_event *ev)
{
    struct chat_ctx *c = g->ctx;
    (void)hi;
    if (ev->choice < 0 || ev->choice >= c->n)
        return 0;
    struct chat_choice *ch = &c->ch[ev->choice];
    if (!g->stream) {
        if (srv_buf_append(&ch->text, ev->text, ev->text_len) != 0)
            return -1;
        if (c->logprobs) {
            if (!ch->lp && !(ch->lp = cJSON_CreateArray()))
                return -1;
            for (int32_t i = 0; i < ev->n_tokens; i++) {
                cJSON *e = srv_chat_logprob_entry(c->tok, &ev->tokens[i], c->top_logprobs);
                if (!e)
                    return -1;
                cJSON_AddItemToArray(ch->lp, e);
            }
        }
        if (ev->finish != ENG_FINISH_NONE)
            ch->finish = ev->finish;
        return 0;
    }
    cJSON *delta, *choice;
    if (c->tools) {
        /* Text past the layout is left out (-1); only a failed write or allocation (1)
         * ends the stream. */
        struct tool_emit te = {g, c, ev->choice};
        if (ch->reader && srv_tool_reader_feed(ch->reader, ev->text, ev->text_len, tool_delta, &te) == 1)
            return -1;
    } else if (ev->text_len > 0 || (c->logprobs && ev->n_tokens > 0)) {
        cJSON *o = chunk(c, ev->choice, &delta, &choice);
        if (!o)
            return -1;
        /* text deltas are valid UTF-8 without NUL (detok.h); cJSON copies up to the NUL */
        char *t = malloc(ev->text_len + 1);
        if (!t) {
            cJSON_Delete(o);
            return -1;
        }
        memcpy(t, ev->text, ev->text_len);
        t[ev->text_len] = '\0';
        cJSON_AddStringToObject(delta, "content", t);
        free(t);
        if (c->logprobs) {
            cJSON *lp = logprobs_of(c, ev);
            if (!lp) {
                cJSON_Delete(o);
                return -1;
            }
            cJSON_AddItemToObject(choice, "logprobs", lp);
        } else {
            cJSON_AddNullToObject(choice, "logprobs");
        }
        cJSON_AddNullToObject(choice, "finish_reason");
        if (emit(g, o) != 0)
            return -1;
    }
    if (ev->finish != ENG_FINISH_NONE) {
        cJSON *o = chunk(c, ev->choice, &delta, &choice);
        if (!o)
            return -1;
        cJSON_AddNullToObject(choice, "logprobs");
        cJSON_AddStringToObject(choice, "finish_reason",
                                finish_of(c, ev->finish, srv_tool_reader_calls(ch->reader),
                                          srv_tool_reader_done(ch->reader)));
        if (emit(g, o) != 0)
            return -1;
    }
    return 0;
}

static int chat_done(struct srv_gen *g)
{
    struct chat_ctx *c = g->ctx;
    if (g->stream) {
        if (c->include_usage) {
            cJSON *o = srv_response_base(c->id, "chat.completion.chunk", c->created, c->model);
            if (!o || !cJSON_AddArrayToObject(o, "choices")) {
                cJSON_Delete(o);
                return -1;
            }
            cJSON *u = srv_usage_json(&g->usage);
            if (!u) {
                cJSON_Delete(o);
                return -1;
            }
            cJSON_AddItemToObject(o, "usage", u);
            if (emit(g, o) != 0)
                return -1;
        }
        return srv_sse_write_done(&g->out);
    }
    cJSON *o = srv_response_base(c->id, "chat.completion", c->created, c->model);
    cJSON *arr = o ? cJSON_AddArrayToObject(o, "choices") : NULL;
    if (!arr) {
        cJSON_Delete(o);
        return -1;
    }
    for (int32_t i = 0; i < c->n; i++) {
        cJSON *ch = cJSON_CreateObject();
        if (ch)
            cJSON_AddNumberToObject(ch, "index", i);
        cJSON *msg = ch ? cJSON_AddObjectToObject(ch, "message") : NULL;
        if (!msg) {
            cJSON_Delete(ch);
            cJSON_Delete(o);
            return -1;
        }
        cJSON_AddItemToArray(arr, ch);
        cJSON_AddStringToObject(msg, "role", "assistant");
        bool calls = false, complete = false;
        if (c->tools) {
            const struct srv_buf *t = &c->ch[i].text;
            if (srv_tools_message(msg, t->p ? t->p : "", t->len, &calls, &complete) != 0) {
                cJSON_Delete(o);
                return -1;
            }
        } else {
            cJSON_AddStringToObject(msg, "content", c->ch[i].text.p ? c->ch[i].text.p : "");
        }
        cJSON_AddNullToObject(msg, "refusal");
        if (c->logprobs) {
            cJSON *lp = cJSON_CreateObject();
            if (!lp) {
                cJSON_Delete(o);
                return -1;
            }
            cJSON_AddItemToObject(lp, "content", c->ch[i].lp ? c->ch[i].lp : cJSON_CreateArray());
            c->ch[i].lp = NULL;
            cJSON_AddNullToObject(lp, "refusal");
            cJSON_AddItemToObject(ch, "logprobs", lp);
        } else {
            cJSON_AddNullToObject(ch, "logprobs");
        }
        cJSON_AddStringToObject(ch, "finish_reason",
                                finish_of(c, c->ch[i].finish, calls, complete));
    }
    cJSON *u = srv_usage_json(&g->usage);
    if (!u) {
        cJSON_Delete(o);
        return -1;
    }
    cJSON_AddItemToObject(o, "usage", u);
    return srv_buf_set_json(&g->out, o);
}

static const struct srv_gen_ops chat_ops = {chat_event, chat_done, chat_destroy};

static const char *role_name(enum srv_role r)
{
    switch (r) {
    case SRV_ROLE_SYSTEM: return "system";
    case SRV_ROLE_USER: return "user";
    case SRV_ROLE_ASSISTANT: return "assistant";
    case SRV_ROLE_TOOL: return "tool";
    }
    return "user";
}

static bool has_image(const struct srv_message *m)
{
    for (size_t k = 0; k < m->n_parts; k++)
        if (m->parts[k].type == SRV_PART_IMAGE_URL)
            return true;
    return false;
}

/* content as a parts array of {type: text, text} and {type: image_url} (the url stays out). */
static cJSON *parts_json(cJSON *o, const struct srv_message *m)
{
    cJSON *arr = cJSON_AddArrayToObject(o, "content");
    for (size_t k = 0; arr && k < m->n_parts; k++) {
        cJSON *p = cJSON_CreateObject();
        if (!p)
            return NULL;
        cJSON_AddItemToArray(arr, p);
        bool text = m->parts[k].type == SRV_PART_TEXT;
        if (!cJSON_AddStringToObject(p, "type", text ? "text" : "image_url") ||
            (text && !cJSON_AddStringToObject(p, "text", m->parts[k].text)))
            return NULL;
    }
    return arr;
}

/* The messages as the template sees them: content flattened to one string (text parts joined
 * with "\n", as vLLM does for string-content templates), or, for a message with images (a
 * vision model), its parts. */
static cJSON *messages_json(const struct srv_chat_request *q)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < q->n_messages; i++) {
        const struct srv_message *m = &q->messages[i];
        cJSON *o = cJSON_CreateObject();
        if (!o)
            goto oom;
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "role", role_name(m->role));
        if (m->content_kind == SRV_CONTENT_TEXT) {
            cJSON_AddStringToObject(o, "content", m->text);
        } else if (m->content_kind == SRV_CONTENT_PARTS && has_image(m)) {
            /* As parts: the template puts each image's <|image_N|> tag before the text. */
            if (!parts_json(o, m))
                goto oom;
        } else if (m->content_kind == SRV_CONTENT_PARTS) {
            struct srv_buf b = {0};
            bool first = true;
            for (size_t k = 0; k < m->n_parts; k++) {
                if (m->parts[k].type != SRV_PART_TEXT)
                    continue;
                if ((!first && srv_buf_puts(&b, "\n")) || srv_buf_append(&b, m->parts[k].text, m->parts[k].len)) {
                    srv_buf_free(&b);
                    goto oom;
                }
                first = false;
            }
            cJSON_AddStringToObject(o, "content", b.p ? b.p : "");
            srv_buf_free(&b);
        } else {
            /* An assistant turn of tool calls only: "" rather than null, which templates that
             * concatenate content (Phi-3's) cannot take. */
            cJSON_AddStringToObject(o, "content", "");
        }
        if (m->name)
            cJSON_AddStringToObject(o, "name", m->name);
        if (m->tool_call_id)
            cJSON_AddStringToObject(o, "tool_call_id", m->tool_call_id);
        if (m->n_tool_calls) {
            cJSON *tc = cJSON_AddArrayToObject(o, "tool_calls");
            for (size_t k = 0; tc && k < m->n_tool_calls; k++) {
                cJSON *t = cJSON_CreateObject();
                cJSON *f = t ? cJSON_AddObjectToObject(t, "function") : NULL;
                if (!f) {
                    cJSON_Delete(t);
                    goto oom;
                }
                cJSON_AddItemToArray(tc, t);
                cJSON_AddStringToObject(t, "id", m->tool_calls[k].id ? m->tool_calls[k].id : "");
                cJSON_AddStringToObject(t, "type", "function");
                cJSON_AddStringToObject(f, "name", m->tool_calls[k].name ? m->tool_calls[k].name : "");
                cJSON_AddStringToObject(f, "arguments", m->tool_calls[k].arguments ? m->tool_calls[k].arguments : "");
            }
        }
    }
    return arr;
oom:
    cJSON_Delete(arr);
    return NULL;
}

int srv_chat_prompt(struct srv_req *r, const cJSON *messages, bool add_generation_prompt,
                    struct srv_images *im, int32_t **ids, size_t *n_ids, char **text_out)
{
    struct srv_server *s = r->srv;
    struct eng_chat_input in = {
        .messages = messages,
        .bos_token = s->bos_text,
        .eos_token = s->eos_text,
        .add_generation_prompt = add_generation_prompt,
    };
    char *text = NULL, err[512] = "";
    size_t len = 0;
    int rc = eng_chat_template_render(s->tmpl, &in, NULL, &text, &len, err, sizeof err);
    if (rc == ENG_CHAT_ERR_NOMEM)
        return srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
    if (rc != 0)
        return srv_respond_error(r, SRV_ERR_INVALID_VALUE, "messages", "The chat template failed: %s", err);
    if (im && im->n > 0) { /* the Phi-3-vision processor's rule */
        struct srv_image_error ie = {0};
        rc = srv_images_tokenize(s->tok, &s->mcfg->vision, text, len, (size_t)s->ctx_len, im,
                                 ids, n_ids, &ie);
        if (rc != 0) {
            free(text);
            return srv_respond_error(r, ie.code, ie.param[0] ? ie.param : NULL, "%s", ie.message);
        }
        if (text_out)
            *text_out = text;
        else
            free(text);
        return -1;
    }
    /* HF apply_chat_template(tokenize=True): the template already holds BOS, add nothing.
     * A prompt that cannot fit the context is refused before it is fully tokenized. */
    rc = eng_tokenizer_encode_max(s->tok, text, len, 0, (size_t)s->ctx_len, ids, n_ids);
    if (rc != 0) {
        free(text);
        if (rc == ENG_TOK_ERR_TOO_LONG)
            return srv_respond_error(r, SRV_ERR_CONTEXT_LENGTH, "messages",
                                     "This model's maximum context length is %d tokens. However, "
                                     "your messages are longer than that.", s->ctx_len);
        return rc == ENG_TOK_ERR_NOMEM ? srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL)
                                       : srv_respond_error(r, SRV_ERR_INVALID_VALUE, "messages",
                                                           "The prompt could not be tokenized.");
    }
    if (text_out)
        *text_out = text;
    else
        free(text);
    return -1;
}

int srv_route_chat(struct srv_req *r)
{
    struct srv_server *s = r->srv;
    if (!s->tok || !s->tmpl)
        return srv_respond_error(r, SRV_ERR_UNSUPPORTED_VALUE, "messages",
                                 "This model has no %s; use /v1/completions with token ids.",
                                 s->tok ? "chat template" : "tokenizer");
    struct srv_chat_request *q = NULL;
    struct srv_error e = {0};
    int rc = srv_chat_request_parse(r->body.p, r->body.len, &s->limits, &q, &e);
    if (rc != 0)
        return srv_respond_error(r, e.code, e.param, e.message[0] ? "%s" : NULL, e.message);
    bool vision = s->mcfg->arch == ENG_ARCH_PHI3V;
    for (size_t i = 0; i < q->n_messages && !vision; i++)
        for (size_t k = 0; k < q->messages[i].n_parts; k++)
            if (q->messages[i].parts[k].type == SRV_PART_IMAGE_URL) {
                char param[64];
                snprintf(param, sizeof param, "messages[%zu].content[%zu]", i, k);
                srv_chat_request_destroy(q);
                return srv_respond_error(r, SRV_ERR_UNSUPPORTED_VALUE, param,
                                         "This model takes text only; image inputs are not supported.");
            }
    struct srv_images im = {0};
    struct srv_image_error ie = {0};
    if (vision && srv_images_load(q, &s->mcfg->vision, &im, &ie) != 0) {
        srv_images_free(&im);
        srv_chat_request_destroy(q);
        return srv_respond_error(r, ie.code, ie.param[0] ? ie.param : NULL, "%s", ie.message);
    }
    cJSON *msgs = messages_json(q);
    /* Tool calling: the tools described in the system message, and the history's calls and
     * results in the layout the model answers in (tool_calls.h). */
    char *tools_sys = NULL;
    if (msgs && q->tool_choice != SRV_TOOL_CHOICE_NONE) {
        tools_sys = srv_tools_prompt(q->tools_json, q->tool_choice == SRV_TOOL_CHOICE_AUTO,
                                     q->tool_choice == SRV_TOOL_CHOICE_NAMED ? q->tool_forced : NULL,
                                     q->parallel_tool_calls);
        if (!tools_sys) {
            cJSON_Delete(msgs);
            msgs = NULL;
        }
    }
    /* Only a request that gives tools has its history rewritten: without tools the template
     * sees the messages as sent (a template of its own may know tool messages). */
    if (msgs && q->tools_json && (tools_sys || srv_tools_in_history(msgs)) &&
        srv_tools_rewrite_messages(msgs, tools_sys, s->tmpl_system) != 0) {
        cJSON_Delete(msgs);
        msgs = NULL;
    }
    free(tools_sys);
    if (!msgs) {
        srv_images_free(&im);
        srv_chat_request_destroy(q);
        return srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    char *text = NULL;
    rc = srv_chat_prompt(r, msgs, true, &im, &ids, &n_ids, &text);
    cJSON_Delete(msgs);
    if (rc >= 0) {
        srv_images_free(&im);
        srv_chat_request_destroy(q);
        return rc;
    }
    if (s->cfg->log_prompts)
        r->log_prompt = text;
    else
        free(text);
    r->prompt_tokens = (int32_t)n_ids;

    const struct srv_sampling *sp = &q->sampling;
    int32_t max_tokens = sp->max_tokens;
    if (n_ids == 0 || (int64_t)n_ids >= s->ctx_len ||
        (max_tokens > 0 && (int64_t)n_ids + max_tokens > s->ctx_len)) {
        rc = srv_respond_error(r, SRV_ERR_CONTEXT_LENGTH, "messages",
                               "This model's maximum context length is %d tokens. However, you requested "
                               "%lld tokens (%zu in the messages, %d in the completion). Please reduce the "
                               "length of the messages or completion.",
                               s->ctx_len, (long long)n_ids + max_tokens, n_ids, max_tokens);
        free(ids);
        srv_images_free(&im);
        srv_chat_request_destroy(q);
        return rc;
    }

    struct chat_ctx *c = calloc(1, sizeof *c);
    if (c)
        c->ch = calloc((size_t)sp->n, sizeof *c->ch);
    if (!c || !c->ch) {
        chat_destroy(c);
        free(ids);
        srv_images_free(&im);
        srv_chat_request_destroy(q);
        return srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
    }
    srv_make_id("chatcmpl-", c->id, sizeof c->id);
    c->created = (int64_t)time(NULL);
    c->model = s->model_name;
    c->tok = s->tok;
    c->include_usage = sp->stream && sp->include_usage;
    c->logprobs = q->logprobs;
    c->top_logprobs = q->top_logprobs;
    c->n = sp->n;
    c->tools = q->tool_choice != SRV_TOOL_CHOICE_NONE;
    c->tool_named = q->tool_choice == SRV_TOOL_CHOICE_NAMED;
    for (int32_t i = 0; c->tools && sp->stream && i < c->n; i++)
        if (!(c->ch[i].reader = srv_tool_reader_create())) {
            chat_destroy(c);
            free(ids);
            srv_images_free(&im);
            srv_chat_request_destroy(q);
            return srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
        }

    struct eng_logit_bias *bias = calloc(sp->n_logit_bias + 1, sizeof *bias);
    struct srv_gen *g = bias ? srv_gen_create(r, &chat_ops, c, 1, sp->stream) : NULL;
    if (!g) {
        if (!bias)
            chat_destroy(c);
        free(bias);
        free(ids);
        srv_images_free(&im);
        srv_chat_request_destroy(q);
        return srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
    }
    struct eng_request er = {
        .prompt = ids,
        .n_prompt = (int32_t)n_ids,
        .max_tokens = max_tokens,
        .n = sp->n,
        .stop = (const char *const *)sp->stop,
        .n_stop = (int32_t)sp->n_stop,
        .include_stop_str_in_output = sp->include_stop_str_in_output,
        .skip_special_tokens = sp->skip_special_tokens,
        .grammar = sp->grammar,
        .images = im.in,
        .n_images = im.n_in,
    };
    srv_fill_sampling(sp, &er.sampling, bias);
    er.sampling.logprobs = q->logprobs;
    er.sampling.top_logprobs = q->top_logprobs;
    char err[256] = "";
    rc = eng_engine_submit(s->eng, &er, srv_gen_wake, g, &g->h[0], err, sizeof err);
    free(bias);
    free(ids);
    srv_images_free(&im); /* the engine copied the views */
    if (rc != 0) {
        srv_gen_abandon(g);
        srv_chat_request_destroy(q);
        return srv_respond_submit_error(r, rc, err, "messages");
    }
    /* Role chunks first, one per choice, as OpenAI sends them. */
    struct srv_buf pre = {0};
    bool stream = sp->stream;
    srv_chat_request_destroy(q);
    if (stream) {
        for (int32_t i = 0; i < c->n; i++) {
            cJSON *delta, *choice;
            cJSON *o = chunk(c, i, &delta, &choice);
            if (!o)
                break;
            cJSON_AddStringToObject(delta, "role", "assistant");
            cJSON_AddStringToObject(delta, "content", "");
            cJSON_AddNullToObject(choice, "logprobs");
            cJSON_AddNullToObject(choice, "finish_reason");
            srv_sse_write_json(&pre, o);
            cJSON_Delete(o);
        }
    }
    rc = srv_gen_start(g, &pre);
    srv_buf_free(&pre);
    return rc;
}
