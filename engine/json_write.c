/* The compact JSON writer of engine/json.h trees: what a grammar must spell out for a const
 * or enum value and what a prompt shows of a request's schemas. Not the reader (json.c). */
#include "json.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct wbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void put(struct wbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

const char *eng_json_escape(unsigned char ch, char esc[8])
{
    switch (ch) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    case '\b': return "\\b";
    case '\f': return "\\f";
    default:
        if (ch >= 0x20)
            return NULL;
        snprintf(esc, 8, "\\u%04x", ch);
        return esc;
    }
}

static void put_string(struct wbuf *b, const char *s, size_t n)
{
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        const char *e = eng_json_escape(ch, esc);
        if (e)
            put(b, e, strlen(e));
        else
            put(b, (const char *)&ch, 1);
    }
    put(b, "\"", 1);
}

static void put_number(struct wbuf *b, const struct eng_json *v)
{
    char num[40];
    if (v->is_int) {
        snprintf(num, sizeof num, "%lld", (long long)v->u.num.i);
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(num, sizeof num, "%.*g", prec, v->u.num.d);
            if (strtod(num, NULL) == v->u.num.d)
                break;
        }
    }
    put(b, num, strlen(num));
}

static void put_value(struct wbuf *b, const struct eng_json *v)
{
    switch (v->type) {
    case ENG_JSON_NULL: put(b, "null", 4); break;
    case ENG_JSON_BOOL: v->b ? put(b, "true", 4) : put(b, "false", 5); break;
    case ENG_JSON_NUMBER: put_number(b, v); break;
    case ENG_JSON_STRING: put_string(b, v->u.str, v->len); break;
    case ENG_JSON_ARRAY:
    case ENG_JSON_OBJECT: {
        bool obj = v->type == ENG_JSON_OBJECT;
        put(b, obj ? "{" : "[", 1);
        for (const struct eng_json *m = v->u.child; m; m = m->next) {
            if (m != v->u.child)
                put(b, ",", 1);
            if (obj) {
                put_string(b, m->key, m->key_len);
                put(b, ":", 1);
            }
            put_value(b, m);
        }
        put(b, obj ? "}" : "]", 1);
        break;
    }
    }
}

static int finish(struct wbuf *b, char **out, size_t *len)
{
    if (b->oom || !b->p) {
        free(b->p);
        *out = NULL;
        *len = 0;
        return -1;
    }
    *out = b->p;
    *len = b->len;
    return 0;
}

int eng_json_write(const struct eng_json *v, char **out, size_t *len)
{
    struct wbuf b = {0};
    put_value(&b, v);
    return finish(&b, out, len);
}

int eng_json_write_string(const char *s, size_t n, char **out, size_t *len)
{
    struct wbuf b = {0};
    put_string(&b, s, n);
    return finish(&b, out, len);
}
