/* Reading a tool-calling answer back from its fixed layout (see tool_calls.h), byte by byte,
 * so that a stream can report calls and argument pieces as they are generated. */
#include "tool_calls.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "json.h"

enum state {
    ST_LITERAL,     /* matching `expect`, then `next` */
    ST_BRANCH,      /* after `{"`: 't' for calls, 'c' for content */
    ST_NAME,        /* a call's name, up to '"' */
    ST_ARGS,        /* a call's arguments value */
    ST_CALL_NEXT,   /* ',' for another call or ']' for the end */
    ST_CONTENT,     /* the content string's characters */
    ST_ESCAPE,      /* after '\' in the content */
    ST_UNICODE,     /* the 4 hex digits of \u */
    ST_DONE,
    ST_FAILED,
};

struct srv_tool_reader {
    enum state st, next;
    const char *expect;          /* ST_LITERAL */
    size_t epos;
    bool calls;                  /* the answer is {"tool_calls": ...} */
    int32_t index;               /* the current call */
    char name[SRV_TOOL_NAME_MAX + 1];
    size_t name_len;
    /* ST_ARGS */
    int depth;                   /* open objects and arrays */
    bool started, scalar, in_str, esc;
    /* ST_UNICODE */
    uint32_t code;
    int hex;
    /* text of the current feed not yet reported (content or arguments) */
    struct srv_buf pend;
    enum srv_tool_delta_kind pend_kind;
};

struct srv_tool_reader *srv_tool_reader_create(void)
{
    struct srv_tool_reader *r = calloc(1, sizeof *r);
    if (r) {
        r->st = ST_LITERAL;
        r->expect = "{\"";
        r->next = ST_BRANCH;
    }
    return r;
}

void srv_tool_reader_destroy(struct srv_tool_reader *r)
{
    if (!r)
        return;
    srv_buf_free(&r->pend);
    free(r);
}

bool srv_tool_reader_done(const struct srv_tool_reader *r)
{
    return r && r->st == ST_DONE;
}

bool srv_tool_reader_calls(const struct srv_tool_reader *r)
{
    return r && r->calls;
}

static int pend_add(struct srv_tool_reader *r, enum srv_tool_delta_kind kind, const char *s,
                    size_t n)
{
    r->pend_kind = kind;
    return srv_buf_append(&r->pend, s, n);
}

/* Reports the pending text, if any. */
static int flush(struct srv_tool_reader *r, srv_tool_delta_fn fn, void *user)
{
    if (r->pend.len == 0)
        return 0;
    struct srv_tool_delta d = {.kind = r->pend_kind, .index = r->index, .text = r->pend.p,
                               .len = r->pend.len};
    r->pend.len = 0;
    return fn(user, &d);
}

static void expect(struct srv_tool_reader *r, const char *lit, enum state next)
{
    r->st = ST_LITERAL;
    r->expect = lit;
    r->epos = 0;
    r->next = next;
}

/* UTF-8 of code point cp (never a surrogate here: the grammar writes none). */
static size_t utf8_put(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF)
        cp = 0xFFFD;
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* One byte of the arguments value: reports it (unless it is the call's closing brace after a
 * bare scalar) and moves on when the value ends. Returns 0 or -1. */
static int args_byte(struct srv_tool_reader *r, char ch, srv_tool_delta_fn fn, void *user)
{
    if (!r->started) {
        r->started = true;
        r->scalar = ch != '{' && ch != '[' && ch != '"';
        r->in_str = ch == '"';
        r->depth = ch == '{' || ch == '[';
        return pend_add(r, SRV_TOOL_DELTA_ARGUMENTS, &ch, 1);
    }
    if (r->scalar) {
        if (ch != '}')
            return pend_add(r, SRV_TOOL_DELTA_ARGUMENTS, &ch, 1);
        int rc = flush(r, fn, user);
        r->st = ST_CALL_NEXT; /* this '}' closed the call */
        return rc;
    }
    if (pend_add(r, SRV_TOOL_DELTA_ARGUMENTS, &ch, 1) != 0)
        return -1;
    if (r->in_str) {
        if (r->esc)
            r->esc = false;
        else if (ch == '\\')
            r->esc = true;
        else if (ch == '"')
            r->in_str = false;
    } else if (ch == '"') {
        r->in_str = true;
    } else if (ch == '{' || ch == '[') {
        r->depth++;
    } else if (ch == '}' || ch == ']') {
        r->depth--;
    }
    if (!r->in_str && r->depth == 0) {
        int rc = flush(r, fn, user);
        expect(r, "}", ST_CALL_NEXT);
        return rc;
    }
    return 0;
}

static int step(struct srv_tool_reader *r, char ch, srv_tool_delta_fn fn, void *user)
{
    switch (r->st) {
    case ST_LITERAL:
        if (ch != r->expect[r->epos])
            return -1;
        if (r->expect[++r->epos] == '\0') {
            r->st = r->next;
            if (r->st == ST_ARGS) {
                struct srv_tool_delta d = {.kind = SRV_TOOL_DELTA_CALL, .index = r->index,
                                           .name = r->name};
                r->started = r->esc = r->in_str = false;
                r->depth = 0;
                return fn(user, &d);
            }
        }
        return 0;
    case ST_BRANCH:
        if (ch == 't') {
            r->calls = true;
            expect(r, "ool_calls\": [{\"name\": \"", ST_NAME);
            return 0;
        }
        if (ch == 'c') {
            expect(r, "ontent\": \"", ST_CONTENT);
            return 0;
        }
        return -1;
    case ST_NAME:
        if (ch == '"') {
            r->name[r->name_len] = '\0';
            expect(r, ", \"arguments\": ", ST_ARGS);
            return 0;
        }
        if (r->name_len >= SRV_TOOL_NAME_MAX)
            return -1;
        r->name[r->name_len++] = ch;
        return 0;
    case ST_ARGS:
        return args_byte(r, ch, fn, user);
    case ST_CALL_NEXT:
        if (ch == ',') {
            r->index++;
            r->name_len = 0;
            expect(r, " {\"name\": \"", ST_NAME);
            return 0;
        }
        if (ch == ']') {
            expect(r, "}", ST_DONE);
            return 0;
        }
        return -1;
    case ST_CONTENT:
        if (ch == '"') {
            int rc = flush(r, fn, user);
            expect(r, "}", ST_DONE);
            return rc;
        }
        if (ch == '\\') {
            r->st = ST_ESCAPE;
            return 0;
        }
        return pend_add(r, SRV_TOOL_DELTA_CONTENT, &ch, 1);
    case ST_ESCAPE: {
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        const char *p = strchr(from, ch);
        if (ch == 'u') {
            r->st = ST_UNICODE;
            r->code = 0;
            r->hex = 0;
            return 0;
        }
        if (!p || ch == '\0')
            return -1;
        r->st = ST_CONTENT;
        return pend_add(r, SRV_TOOL_DELTA_CONTENT, &to[p - from], 1);
    }
    case ST_UNICODE: {
        int v = eng_hex_digit((unsigned char)ch);
        if (v < 0)
            return -1;
        r->code = r->code * 16 + (uint32_t)v;
        if (++r->hex < 4)
            return 0;
        char u[4];
        r->st = ST_CONTENT;
        return pend_add(r, SRV_TOOL_DELTA_CONTENT, u, utf8_put(r->code, u));
    }
    case ST_DONE:
    case ST_FAILED:
        return -1;
    }
    return -1;
}

int srv_tool_reader_feed(struct srv_tool_reader *r, const char *text, size_t len,
                         srv_tool_delta_fn fn, void *user)
{
    if (!r || r->st == ST_FAILED)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int rc = step(r, text[i], fn, user);
        if (rc != 0) {
            if (rc == -1)
                r->st = ST_FAILED;
            return rc;
        }
    }
    /* What this piece added inside a value is reported now, not held for the next one. */
    return flush(r, fn, user);
}

/* ---- the chat around it ---- */

char *srv_tools_prompt(const char *tools_json, bool allow_content, const char *forced,
                       bool parallel)
{
    static const char *const head =
        "You can call functions. They are listed here as JSON, each with its name, what it "
        "does and the JSON Schema of its arguments:\n";
    static const char *const call_form =
        "{\"tool_calls\": [{\"name\": \"<function name>\", \"arguments\": <arguments as a JSON "
        "object>}]}";
    char rule[512];
    if (forced)
        snprintf(rule, sizeof rule, "Call the function \"%s\": answer with only %s.", forced,
                 call_form);
    else if (allow_content)
        snprintf(rule, sizeof rule,
                 "To call functions, answer with only %s%s. To answer the user directly, answer "
                 "with only {\"content\": \"<your answer>\"}.",
                 call_form, parallel ? ", listing several calls to make them at once" : "");
    else
        snprintf(rule, sizeof rule, "Answer with only %s, calling %s.", call_form,
                 parallel ? "one function or several" : "one function");
    static const char *const results =
        " The result of each call comes back as a user message {\"tool_call_id\": ..., "
        "\"content\": ...}.";
    size_t n = strlen(head) + strlen(tools_json) + 2 + strlen(rule) + strlen(results) + 1;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s%s\n\n%s%s", head, tools_json, rule, results);
    return out;
}

bool srv_tools_in_history(const cJSON *messages)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (cJSON_GetObjectItemCaseSensitive(m, "tool_calls") ||
            (cJSON_IsString(role) && strcmp(role->valuestring, "tool") == 0))
            return true;
    }
    return false;
}

/* The answer layout of an assistant message's tool_calls, exactly as the grammar has the model
 * write it: {"tool_calls": [{"name": "N", "arguments": A}, ...]}, each A the client's text
 * when it is one JSON value and nothing else, else that text as a JSON string. Returns a
 * cJSON_malloc'd string or NULL. */
static char *calls_text(const cJSON *calls)
{
    struct srv_buf out = {0};
    size_t n = 0;
    bool ok = srv_buf_puts(&out, "{\"tool_calls\": [") == 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, calls) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(f, "arguments");
        const char *a = cJSON_IsString(args) ? args->valuestring : "";
        cJSON *parsed = cJSON_ParseWithOpts(a, NULL, true);
        bool raw = parsed != NULL;
        cJSON_Delete(parsed);
        cJSON *nm = cJSON_CreateString(cJSON_IsString(name) ? name->valuestring : "");
        cJSON *as = raw ? NULL : cJSON_CreateString(a);
        char *nm_text = nm ? cJSON_PrintUnformatted(nm) : NULL;
        char *as_text = as ? cJSON_PrintUnformatted(as) : NULL;
        ok = ok && nm_text && (raw || as_text) &&
             srv_buf_puts(&out, n ? ", {\"name\": " : "{\"name\": ") == 0 &&
             srv_buf_puts(&out, nm_text) == 0 && srv_buf_puts(&out, ", \"arguments\": ") == 0 &&
             srv_buf_puts(&out, raw ? a : as_text) == 0 && srv_buf_puts(&out, "}") == 0;
        cJSON_free(nm_text);
        cJSON_free(as_text);
        cJSON_Delete(nm);
        cJSON_Delete(as);
        n++;
    }
    ok = ok && srv_buf_puts(&out, "]}") == 0;
    /* set_content frees with cJSON_free: hand over a copy from cJSON's allocator. */
    char *copy = ok ? cJSON_malloc(out.len + 1) : NULL;
    if (copy)
        memcpy(copy, out.p, out.len + 1);
    srv_buf_free(&out);
    return copy;
}

static int set_content(cJSON *m, char *text)
{
    if (!text)
        return -1;
    cJSON *s = cJSON_CreateString(text);
    cJSON_free(text);
    if (!s)
        return -1;
    if (cJSON_GetObjectItemCaseSensitive(m, "content"))
        cJSON_ReplaceItemInObjectCaseSensitive(m, "content", s);
    else
        cJSON_AddItemToObject(m, "content", s);
    return 0;
}

int srv_tools_rewrite_messages(cJSON *messages, const char *system, bool system_role)
{
    cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        if (calls) {
            char *t = calls_text(calls);
            if (set_content(m, t) != 0)
                return -1;
            cJSON_DeleteItemFromObjectCaseSensitive(m, "tool_calls");
        }
        if (cJSON_IsString(role) && strcmp(role->valuestring, "tool") == 0) {
            cJSON *o = cJSON_CreateObject();
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
            if (!o || !cJSON_AddStringToObject(o, "tool_call_id", cJSON_IsString(id) ? id->valuestring : "") ||
                !cJSON_AddStringToObject(o, "content", cJSON_IsString(content) ? content->valuestring : "")) {
                cJSON_Delete(o);
                return -1;
            }
            char *t = cJSON_PrintUnformatted(o);
            cJSON_Delete(o);
            if (set_content(m, t) != 0 || !cJSON_SetValuestring(role, "user"))
                return -1;
            cJSON_DeleteItemFromObjectCaseSensitive(m, "tool_call_id");
        }
    }
    if (!system)
        return 0;
    /* The first message of the role that carries the text: system, or, for a template that
     * drops system messages, user (the text then goes before the user's). */
    const char *want = system_role ? "system" : "user";
    cJSON *first = NULL;
    cJSON_ArrayForEach(m, messages) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (cJSON_IsString(role) && strcmp(role->valuestring, want) == 0 && cJSON_IsString(content)) {
            first = m;
            break;
        }
    }
    if (first) {
        const char *content = cJSON_GetObjectItemCaseSensitive(first, "content")->valuestring;
        size_t n = strlen(content) + 2 + strlen(system) + 1;
        char *t = cJSON_malloc(n);
        if (!t)
            return -1;
        if (system_role)
            snprintf(t, n, "%s\n\n%s", content, system);
        else
            snprintf(t, n, "%s\n\n%s", system, content);
        return set_content(first, t);
    }
    cJSON *sys = cJSON_CreateObject();
    if (!sys || !cJSON_AddStringToObject(sys, "role", want) ||
        !cJSON_AddStringToObject(sys, "content", system) || !cJSON_InsertItemInArray(messages, 0, sys)) {
        cJSON_Delete(sys);
        return -1;
    }
    return 0;
}

/* Building a whole message: the reader's deltas into content and tool_calls. */
struct build {
    cJSON *calls;             /* the tool_calls array, made at the first call */
    struct srv_buf content, args;
    int32_t open;             /* the call whose arguments are being gathered, or -1 */
};

/* Sets the open call's arguments string from what was gathered. */
static int close_call(struct build *b)
{
    if (b->open < 0)
        return 0;
    cJSON *f = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(b->calls, b->open), "function");
    cJSON *a = cJSON_CreateString(b->args.len ? b->args.p : "");
    b->args.len = 0;
    if (!f || !a) {
        cJSON_Delete(a);
        return -1;
    }
    cJSON_AddItemToObject(f, "arguments", a);
    b->open = -1;
    return 0;
}

/* Returns 0, or 1 when out of memory (-1 would read as text past the layout). */
static int build_delta(void *user, const struct srv_tool_delta *d)
{
    struct build *b = user;
    if (d->kind == SRV_TOOL_DELTA_CONTENT)
        return srv_buf_append(&b->content, d->text, d->len) ? 1 : 0;
    if (d->kind == SRV_TOOL_DELTA_ARGUMENTS)
        return srv_buf_append(&b->args, d->text, d->len) ? 1 : 0;
    if (close_call(b) != 0)
        return 1;
    if (!b->calls && !(b->calls = cJSON_CreateArray()))
        return 1;
    char id[40];
    srv_make_id("call_", id, sizeof id);
    cJSON *t = cJSON_CreateObject();
    cJSON *f = t ? cJSON_CreateObject() : NULL;
    if (!f || !cJSON_AddStringToObject(t, "id", id) || !cJSON_AddStringToObject(t, "type", "function") ||
        !cJSON_AddStringToObject(f, "name", d->name)) {
        cJSON_Delete(t);
        cJSON_Delete(f);
        return 1;
    }
    cJSON_AddItemToObject(t, "function", f);
    cJSON_AddItemToArray(b->calls, t);
    b->open = d->index;
    return 0;
}

int srv_tools_message(cJSON *msg, const char *text, size_t len, bool *calls, bool *complete)
{
    struct srv_tool_reader *r = srv_tool_reader_create();
    struct build b = {.open = -1};
    /* Text past the layout (a stop string cut it, say) ends the reading; what was read
     * stands. Only running out of memory (build_delta's 1) fails. */
    int rc = !r || srv_tool_reader_feed(r, text, len, build_delta, &b) == 1 ? -1 : 0;
    if (rc == 0)
        rc = close_call(&b);
    *calls = b.calls != NULL;
    *complete = r && srv_tool_reader_done(r);
    if (rc == 0 && b.calls) {
        cJSON_AddNullToObject(msg, "content");
        cJSON_AddItemToObject(msg, "tool_calls", b.calls);
        b.calls = NULL;
    } else if (rc == 0 && !cJSON_AddStringToObject(msg, "content", b.content.len ? b.content.p : "")) {
        rc = -1;
    }
    cJSON_Delete(b.calls);
    srv_buf_free(&b.content);
    srv_buf_free(&b.args);
    srv_tool_reader_destroy(r);
    return rc;
}
