/* Chat-template glue: the public API of chat_template.h over the Jinja-subset interpreter
 * (jinja_*.c). Turns the request's cJSON messages into template values (flattening content
 * parts), applies the limits and maps interpreter errors to status codes and messages.
 * It knows nothing about HTTP; the server validates the request before calling in. */
#include "chat_template.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jinja.h"

struct eng_chat_template {
    struct jtemplate t;
};

void eng_chat_limits_default(struct eng_chat_limits *l)
{
    l->max_output_bytes = ENG_CHAT_DEFAULT_MAX_OUTPUT;
    l->max_steps = ENG_CHAT_DEFAULT_MAX_STEPS;
    l->max_depth = ENG_CHAT_DEFAULT_MAX_DEPTH;
    l->max_memory_bytes = ENG_CHAT_DEFAULT_MAX_MEMORY;
}

static struct eng_chat_limits resolve(const struct eng_chat_limits *in)
{
    struct eng_chat_limits l;
    eng_chat_limits_default(&l);
    if (in != NULL) {
        if (in->max_output_bytes)
            l.max_output_bytes = in->max_output_bytes;
        if (in->max_steps)
            l.max_steps = in->max_steps;
        if (in->max_depth > 0)
            l.max_depth = in->max_depth;
        if (in->max_memory_bytes)
            l.max_memory_bytes = in->max_memory_bytes;
    }
    return l;
}

static int report(const struct jerr *e, char *err, size_t errlen)
{
    static const char *const what[] = {
        [JERR_SYNTAX] = "chat template syntax error",
        [JERR_RENDER] = "chat template error",
        [JERR_LIMIT] = "chat template limit exceeded",
        [JERR_NOMEM] = "chat template out of memory",
    };
    int code;
    switch (e->kind) {
    case JERR_SYNTAX: code = ENG_CHAT_ERR_SYNTAX; break;
    case JERR_RAISE: code = ENG_CHAT_ERR_RAISED; break;
    case JERR_LIMIT: code = ENG_CHAT_ERR_LIMIT; break;
    case JERR_NOMEM: code = ENG_CHAT_ERR_NOMEM; break;
    default: code = ENG_CHAT_ERR_RENDER; break;
    }
    if (err == NULL || errlen == 0)
        return code;
    if (e->kind == JERR_RAISE)
        snprintf(err, errlen, "%s", e->msg);
    else if (e->line > 0 && e->col > 0)
        snprintf(err, errlen, "%s at line %d, column %d: %s", what[e->kind], e->line, e->col, e->msg);
    else if (e->line > 0)
        snprintf(err, errlen, "%s at line %d: %s", what[e->kind], e->line, e->msg);
    else
        snprintf(err, errlen, "%s: %s", what[e->kind == JERR_NONE ? JERR_RENDER : e->kind], e->msg);
    return code;
}

int eng_chat_template_parse(const char *src, size_t len, const struct eng_chat_limits *limits,
                            struct eng_chat_template **out, char *err, size_t errlen)
{
    struct eng_chat_limits l = resolve(limits);
    struct jerr e = {0};
    *out = NULL;
    if (src == NULL && len != 0) {
        jerr_set(&e, JERR_SYNTAX, 0, 0, "no template source");
        return report(&e, err, errlen);
    }
    if (len > ENG_CHAT_MAX_TEMPLATE_BYTES) {
        jerr_set(&e, JERR_LIMIT, 0, 0, "template is %zu bytes, more than the %zu allowed", len,
                 ENG_CHAT_MAX_TEMPLATE_BYTES);
        return report(&e, err, errlen);
    }
    struct eng_chat_template *t = calloc(1, sizeof *t);
    if (t == NULL) {
        jerr_set(&e, JERR_NOMEM, 0, 0, "out of memory");
        return report(&e, err, errlen);
    }
    if (jinja_parse(&t->t, src ? src : "", len, l.max_depth, &e) < 0) {
        eng_chat_template_destroy(t);
        return report(&e, err, errlen);
    }
    *out = t;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    return 0;
}

void eng_chat_template_destroy(struct eng_chat_template *t)
{
    if (t == NULL)
        return;
    jarena_release(&t->t.arena);
    free(t);
}

/* ---- JSON to template values ------------------------------------------------------------ */

struct convert {
    struct jctx *c;
    bool keep_parts;
    int64_t images;   /* images numbered so far across the conversation */
};

static int nomem(struct jctx *c)
{
    return jerr_set(c->err, JERR_LIMIT, 0, 0, "render memory limit exceeded");
}

static int bad_input(struct jctx *c, const char *msg)
{
    jerr_set(c->err, JERR_RENDER, 0, 0, "%s", msg);
    return -2; /* distinguished from limit errors by the caller */
}

static int from_json(struct convert *cv, const cJSON *j, int depth, struct jv *out);

static const char *part_type(const cJSON *part)
{
    const cJSON *t = cJSON_IsObject(part) ? cJSON_GetObjectItemCaseSensitive(part, "type") : NULL;
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* content: [{type: text, text}, {type: image_url, ...}] -> "<|image_1|>\n...\ntext1\ntext2" */
static int flatten(struct convert *cv, const cJSON *parts, struct jv *out)
{
    struct jctx *c = cv->c;
    struct jbuf text, result;
    jbuf_init(c, &text);
    jbuf_init(c, &result);
    int64_t first_image = cv->images + 1;
    bool any_text = false;
    int rc = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, parts) {
        const char *type = part_type(p);
        if (type == NULL) {
            rc = bad_input(c, "content part without a string \"type\"");
            break;
        }
        if (strcmp(type, "text") == 0) {
            const cJSON *tx = cJSON_GetObjectItemCaseSensitive(p, "text");
            if (!cJSON_IsString(tx)) {
                rc = bad_input(c, "text content part without a string \"text\"");
                break;
            }
            if ((any_text && jbuf_put(c, &text, "\n", 1) < 0) ||
                jbuf_put(c, &text, tx->valuestring, strlen(tx->valuestring)) < 0) {
                rc = -1;
                break;
            }
            any_text = true;
        } else if (strcmp(type, "image") == 0 || strcmp(type, "image_url") == 0) {
            cv->images++;
        } else {
            rc = bad_input(c, "unsupported content part type");
            break;
        }
        if ((rc = jinja_step(c)) < 0)
            break;
    }
    for (int64_t k = first_image; rc == 0 && k <= cv->images; k++) {
        char tag[40];
        int n = snprintf(tag, sizeof tag, "<|image_%lld|>", (long long)k);
        if (text.p != NULL && memmem(text.p, text.len, tag, (size_t)n) != NULL)
            continue;
        if (jbuf_put(c, &result, tag, (size_t)n) < 0 || jbuf_put(c, &result, "\n", 1) < 0)
            rc = -1;
    }
    if (rc == 0 && jbuf_put(c, &result, text.p ? text.p : "", text.len) < 0)
        rc = -1;
    jbuf_free(&text);
    if (rc != 0) {
        jbuf_free(&result);
        return rc;
    }
    return jbuf_finish(c, &result, out);
}

/* A JSON object as a dict. Duplicate keys keep the last value at the first key's position, as
 * Python's json does; a temporary hash index keeps that linear for request-sized objects. */
static int object_from_json(struct convert *cv, const cJSON *j, int depth, struct jv *out)
{
    struct jctx *c = cv->c;
    size_t n = 0;
    for (const cJSON *e = j->child; e != NULL; e = e->next)
        n++;
    struct jdict *d = jdict_new(c->arena, n);
    size_t n_slots = 16;
    while (n_slots < 2 * n)
        n_slots *= 2;
    size_t *slots = n > 8 ? calloc(n_slots, sizeof *slots) : NULL; /* index + 1; 0 = empty */
    if (d == NULL || (n > 8 && slots == NULL)) {
        free(slots);
        return nomem(c);
    }
    int rc = 0;
    for (const cJSON *e = j->child; e != NULL && rc == 0; e = e->next) {
        if (e->string == NULL)
            continue;
        struct jv v;
        if (!cv->keep_parts && depth == 1 && strcmp(e->string, "content") == 0 && cJSON_IsArray(e))
            rc = flatten(cv, e, &v);
        else
            rc = from_json(cv, e, depth + 1, &v);
        if (rc != 0)
            break;
        size_t klen = strlen(e->string);
        struct jv *existing = NULL;
        size_t slot = 0;
        if (slots != NULL) {
            uint64_t h = 1469598103934665603u;
            for (size_t i = 0; i < klen; i++)
                h = (h ^ (unsigned char)e->string[i]) * 1099511628211u;
            for (slot = (size_t)h & (n_slots - 1); slots[slot] != 0; slot = (slot + 1) & (n_slots - 1)) {
                const struct jstr *k = d->k[slots[slot] - 1];
                if (k->len == klen && memcmp(k->s, e->string, klen) == 0) {
                    existing = &d->v[slots[slot] - 1];
                    break;
                }
            }
        } else {
            existing = jdict_get(d, e->string, klen);
        }
        if (existing != NULL) {
            *existing = v;
            continue;
        }
        const struct jstr *k = jstr_new(c->arena, e->string, klen);
        if (k == NULL) {
            rc = nomem(c);
            break;
        }
        if (slots != NULL)
            slots[slot] = d->n + 1;
        d->k[d->n] = k;
        d->v[d->n] = v;
        d->n++;
    }
    free(slots);
    if (rc == 0)
        *out = (struct jv){.kind = JV_DICT, .u.d = d};
    return rc;
}

static int from_json(struct convert *cv, const cJSON *j, int depth, struct jv *out)
{
    struct jctx *c = cv->c;
    if (depth > c->max_depth)
        return jerr_set(c->err, JERR_LIMIT, 0, 0, "request JSON nesting exceeds the depth limit of %d",
                        c->max_depth);
    if (jinja_step(c) < 0)
        return -1;
    if (cJSON_IsTrue(j) || cJSON_IsFalse(j)) {
        *out = jv_bool(cJSON_IsTrue(j));
    } else if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (isfinite(d) && d == floor(d) && fabs(d) < 9007199254740992.0)
            *out = jv_int((int64_t)d);
        else
            *out = jv_float(d);
    } else if (cJSON_IsString(j)) {
        return jv_make_str(c, j->valuestring, strlen(j->valuestring), out);
    } else if (cJSON_IsArray(j)) {
        struct jlist *l = jlist_new(c->arena, (size_t)cJSON_GetArraySize(j));
        if (l == NULL)
            return nomem(c);
        size_t i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, j) {
            if (i >= l->n)
                break;
            int rc = from_json(cv, e, depth + 1, &l->v[i++]);
            if (rc != 0)
                return rc;
        }
        *out = (struct jv){.kind = JV_LIST, .u.l = l};
    } else if (cJSON_IsObject(j)) {
        return object_from_json(cv, j, depth, out);
    } else {
        *out = jv_none();
    }
    return 0;
}

static int put_global(struct jctx *c, struct jdict *g, const char *name, struct jv v)
{
    const struct jstr *k = jstr_new(c->arena, name, strlen(name));
    return (k == NULL || jdict_set(c->arena, g, k, v) < 0) ? nomem(c) : 0;
}

static int put_token(struct jctx *c, struct jdict *g, const char *name, const char *tok)
{
    struct jv v;
    if (jv_make_str(c, tok ? tok : "", tok ? strlen(tok) : 0, &v) < 0)
        return -1;
    return put_global(c, g, name, v);
}

int eng_chat_template_render(const struct eng_chat_template *t, const struct eng_chat_input *in,
                             const struct eng_chat_limits *limits, char **out, size_t *out_len,
                             char *err, size_t errlen)
{
    struct eng_chat_limits l = resolve(limits);
    struct jerr e = {0};
    struct jarena arena = {.limit = l.max_memory_bytes};
    struct jctx c = {
        .arena = &arena,
        .err = &e,
        .max_steps = l.max_steps,
        .max_depth = l.max_depth,
        .max_string = l.max_output_bytes,
    };
    *out = NULL;
    if (out_len != NULL)
        *out_len = 0;
    jbuf_init(&c, &c.out);
    c.out.max = l.max_output_bytes;
    int code = 0;
    if (t == NULL || in == NULL || in->messages == NULL || !cJSON_IsArray(in->messages)) {
        jerr_set(&e, JERR_RENDER, 0, 0, "messages must be a JSON array");
        code = ENG_CHAT_ERR_INPUT;
        goto done;
    }
    struct convert cv = {.c = &c, .keep_parts = in->keep_content_parts};
    struct jv messages, tools = jv_none();
    int rc = from_json(&cv, in->messages, 0, &messages);
    if (rc == 0 && in->tools != NULL) {
        cv.keep_parts = true; /* only message content is flattened */
        rc = from_json(&cv, in->tools, 0, &tools);
    }
    if (rc == -2) {
        code = ENG_CHAT_ERR_INPUT;
        goto done;
    }
    struct jdict *g = rc == 0 ? jdict_new(&arena, 8) : NULL;
    if (rc != 0 || g == NULL) {
        if (g == NULL && rc == 0)
            nomem(&c);
        goto done;
    }
    if (put_global(&c, g, "messages", messages) < 0 || put_global(&c, g, "tools", tools) < 0 ||
        put_global(&c, g, "documents", jv_none()) < 0 ||
        put_global(&c, g, "add_generation_prompt", jv_bool(in->add_generation_prompt)) < 0 ||
        put_token(&c, g, "bos_token", in->bos_token) < 0 || put_token(&c, g, "eos_token", in->eos_token) < 0)
        goto done;
    if (jinja_render(&c, &t->t, g) < 0)
        goto done;
    if (jbuf_put(&c, &c.out, "", 0) < 0) /* makes sure a buffer exists for empty output */
        goto done;
    *out = c.out.p;
    if (out_len != NULL)
        *out_len = c.out.len;
    c.out.p = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
done:
    jbuf_free(&c.out);
    jarena_release(&arena);
    if (*out != NULL)
        return 0;
    if (e.kind == JERR_NONE)
        jerr_set(&e, JERR_RENDER, 0, 0, "render failed");
    int rep = report(&e, err, errlen);
    return code != 0 ? code : rep;
}
