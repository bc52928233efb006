/* Values of the Jinja-subset interpreter: the arena they live in, Python-compatible truthiness,
 * equality, ordering, str()/repr() and json.dumps() formatting, and small UTF-8 helpers.
 * It does not evaluate anything; jinja_eval.c and jinja_builtins.c do. */
#include "jinja.h"
#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ----------------------------------------------------------------------------- */

int jerr_set(struct jerr *e, enum jerr_kind kind, int line, int col, const char *fmt, ...)
{
    if (e->kind != JERR_NONE)
        return -1;
    e->kind = kind;
    e->line = line;
    e->col = col;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- arena ------------------------------------------------------------------------------ */

struct jarena_chunk {
    struct jarena_chunk *next;
    size_t cap, used;
    max_align_t data[];
};

#define JARENA_CHUNK (64u * 1024u)

void *jarena_alloc(struct jarena *a, size_t n)
{
    const size_t align = sizeof(max_align_t);
    if (n > SIZE_MAX / 2)
        return NULL;
    n = (n + align - 1) / align * align;
    if (n == 0)
        n = align;
    struct jarena_chunk *h = a->head;
    if (h == NULL || h->cap - h->used < n) {
        size_t cap = n > JARENA_CHUNK ? n : JARENA_CHUNK;
        size_t bytes = sizeof(struct jarena_chunk) + cap;
        if (a->limit != 0 && (a->total > a->limit || bytes > a->limit - a->total))
            return NULL;
        struct jarena_chunk *nc = calloc(1, bytes);
        if (nc == NULL)
            return NULL;
        nc->cap = cap;
        a->total += bytes;
        /* A big one-off block goes behind the head so the head's free space stays usable. */
        if (h != NULL && cap > JARENA_CHUNK) {
            nc->next = h->next;
            h->next = nc;
            nc->used = n;
            return nc->data;
        }
        nc->next = h;
        a->head = h = nc;
    }
    void *p = (char *)h->data + h->used;
    h->used += n;
    return p;
}

void *jarena_array(struct jarena *a, size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    return jarena_alloc(a, n * size);
}

void jarena_release(struct jarena *a)
{
    struct jarena_chunk *c = a->head;
    while (c != NULL) {
        struct jarena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->total = 0;
}

/* ---- constructors ----------------------------------------------------------------------- */

const struct jstr *jstr_new(struct jarena *a, const char *s, size_t len)
{
    if (len > SIZE_MAX - sizeof(struct jstr) - 1)
        return NULL;
    struct jstr *r = jarena_alloc(a, sizeof(struct jstr) + len + 1);
    if (r == NULL)
        return NULL;
    r->len = len;
    if (len != 0)
        memcpy(r->s, s, len);
    r->s[len] = '\0';
    return r;
}

struct jv jv_undef(const struct jstr *name) { return (struct jv){.kind = JV_UNDEF, .u.s = name}; }
struct jv jv_none(void) { return (struct jv){.kind = JV_NONE}; }
struct jv jv_bool(bool b) { return (struct jv){.kind = JV_BOOL, .u.b = b}; }
struct jv jv_int(int64_t i) { return (struct jv){.kind = JV_INT, .u.i = i}; }
struct jv jv_float(double f) { return (struct jv){.kind = JV_FLOAT, .u.f = f}; }
struct jv jv_str(const struct jstr *s) { return (struct jv){.kind = JV_STR, .u.s = s}; }

int jv_make_str(struct jctx *c, const char *s, size_t len, struct jv *out)
{
    if (len > c->max_string)
        return jerr_set(c->err, JERR_LIMIT, c->line, 0, "string value exceeds the %zu-byte limit",
                        c->max_string);
    const struct jstr *r = jstr_new(c->arena, s, len);
    if (r == NULL)
        return jerr_set(c->err, JERR_LIMIT, c->line, 0, "render memory limit exceeded");
    *out = jv_str(r);
    return 0;
}

struct jlist *jlist_new(struct jarena *a, size_t n)
{
    struct jlist *l = jarena_alloc(a, sizeof *l);
    if (l == NULL)
        return NULL;
    l->n = n;
    l->v = jarena_array(a, n ? n : 1, sizeof(struct jv));
    return l->v ? l : NULL;
}

struct jdict *jdict_new(struct jarena *a, size_t cap)
{
    struct jdict *d = jarena_alloc(a, sizeof *d);
    if (d == NULL)
        return NULL;
    d->cap = cap ? cap : 4;
    d->k = jarena_array(a, d->cap, sizeof *d->k);
    d->v = jarena_array(a, d->cap, sizeof *d->v);
    return (d->k && d->v) ? d : NULL;
}

struct jv *jdict_get(const struct jdict *d, const char *key, size_t len)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i]->len == len && memcmp(d->k[i]->s, key, len) == 0)
            return &d->v[i];
    return NULL;
}

int jdict_set(struct jarena *a, struct jdict *d, const struct jstr *key, struct jv val)
{
    struct jv *slot = jdict_get(d, key->s, key->len);
    if (slot != NULL) {
        *slot = val;
        return 0;
    }
    if (d->n == d->cap) {
        if (d->cap > SIZE_MAX / 4)
            return -1;
        size_t cap = d->cap * 2;
        const struct jstr **k = jarena_array(a, cap, sizeof *k);
        struct jv *v = jarena_array(a, cap, sizeof *v);
        if (k == NULL || v == NULL)
            return -1;
        memcpy(k, d->k, d->n * sizeof *k);
        memcpy(v, d->v, d->n * sizeof *v);
        d->k = k;
        d->v = v;
        d->cap = cap;
    }
    d->k[d->n] = key;
    d->v[d->n] = val;
    d->n++;
    return 0;
}

/* ---- truthiness, types, equality, ordering --------------------------------------------- */

bool jv_truthy(const struct jv *v)
{
    switch (v->kind) {
    case JV_UNDEF:
    case JV_NONE: return false;
    case JV_BOOL: return v->u.b;
    case JV_INT: return v->u.i != 0;
    case JV_FLOAT: return v->u.f != 0.0;
    case JV_STR: return v->u.s->len != 0;
    case JV_LIST: return v->u.l->n != 0;
    case JV_DICT: return v->u.d->n != 0;
    case JV_NS:
    case JV_LOOP: return true;
    }
    return false;
}

const char *jv_type_name(const struct jv *v)
{
    switch (v->kind) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v->u.l->tuple ? "tuple" : "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_LOOP: return "LoopContext";
    }
    return "?";
}

static bool is_num(const struct jv *v) { return v->kind == JV_BOOL || v->kind == JV_INT || v->kind == JV_FLOAT; }
static int64_t as_i64(const struct jv *v) { return v->kind == JV_BOOL ? (int64_t)v->u.b : v->u.i; }
static double as_f64(const struct jv *v) { return v->kind == JV_FLOAT ? v->u.f : (double)as_i64(v); }

static int enter(struct jctx *c)
{
    if (++c->depth > c->max_depth) {
        c->depth--;
        return jerr_set(c->err, JERR_LIMIT, c->line, 0,
                        "value nesting exceeds the depth limit of %d", c->max_depth);
    }
    return 0;
}

int jv_equal(struct jctx *c, const struct jv *a, const struct jv *b, bool *eq)
{
    *eq = false;
    if (is_num(a) && is_num(b)) {
        if (a->kind == JV_FLOAT || b->kind == JV_FLOAT)
            *eq = as_f64(a) == as_f64(b);
        else
            *eq = as_i64(a) == as_i64(b);
        return 0;
    }
    if (a->kind != b->kind)
        return 0;
    switch (a->kind) {
    case JV_UNDEF:
    case JV_NONE: *eq = true; return 0;
    case JV_STR:
        if (a->u.s->len == b->u.s->len && jinja_charge(c, JCOST_BYTES(a->u.s->len)) < 0)
            return -1;
        *eq = a->u.s->len == b->u.s->len && memcmp(a->u.s->s, b->u.s->s, a->u.s->len) == 0;
        return 0;
    case JV_NS: *eq = a->u.d == b->u.d; return 0;
    case JV_LOOP: *eq = a->u.loop == b->u.loop; return 0;
    case JV_LIST: {
        if (a->u.l->n != b->u.l->n || a->u.l->tuple != b->u.l->tuple)
            return 0;
        if (jinja_charge(c, JCOST_ITEMS(a->u.l->n)) < 0)
            return -1;
        if (enter(c) < 0)
            return -1;
        bool all = true;
        for (size_t i = 0; i < a->u.l->n && all; i++)
            if (jv_equal(c, &a->u.l->v[i], &b->u.l->v[i], &all) < 0) {
                c->depth--;
                return -1;
            }
        c->depth--;
        *eq = all;
        return 0;
    }
    case JV_DICT: {
        if (a->u.d->n != b->u.d->n)
            return 0;
        /* each key is looked up linearly in b: quadratic, and charged so */
        uint64_t n = a->u.d->n;
        if (jinja_charge(c, n > (1u << 31) ? UINT64_MAX : JCOST_ITEMS(n * n)) < 0)
            return -1;
        if (enter(c) < 0)
            return -1;
        bool all = true;
        for (size_t i = 0; i < a->u.d->n && all; i++) {
            const struct jv *o = jdict_get(b->u.d, a->u.d->k[i]->s, a->u.d->k[i]->len);
            if (o == NULL)
                all = false;
            else if (jv_equal(c, &a->u.d->v[i], o, &all) < 0) {
                c->depth--;
                return -1;
            }
        }
        c->depth--;
        *eq = all;
        return 0;
    }
    default: return 0;
    }
}

int jv_compare(struct jctx *c, const struct jv *a, const struct jv *b, int *sign)
{
    if (is_num(a) && is_num(b)) {
        if (a->kind == JV_FLOAT || b->kind == JV_FLOAT) {
            double x = as_f64(a), y = as_f64(b);
            *sign = (x > y) - (x < y);
        } else {
            int64_t x = as_i64(a), y = as_i64(b);
            *sign = (x > y) - (x < y);
        }
        return 0;
    }
    if (a->kind == JV_STR && b->kind == JV_STR) {
        size_t n = a->u.s->len < b->u.s->len ? a->u.s->len : b->u.s->len;
        if (jinja_charge(c, JCOST_BYTES(n)) < 0)
            return -1;
        int r = n ? memcmp(a->u.s->s, b->u.s->s, n) : 0;
        if (r == 0)
            r = (a->u.s->len > b->u.s->len) - (a->u.s->len < b->u.s->len);
        *sign = (r > 0) - (r < 0);
        return 0;
    }
    return jerr_set(c->err, JERR_RENDER, c->line, 0,
                    "comparison not supported between instances of '%s' and '%s'",
                    jv_type_name(a), jv_type_name(b));
}

/* ---- builders --------------------------------------------------------------------------- */

int jbuf_init(struct jctx *c, struct jbuf *b)
{
    (void)c;
    b->p = NULL;
    b->len = b->cap = 0;
    b->max = c->max_string;
    return 0;
}

int jbuf_put(struct jctx *c, struct jbuf *b, const char *s, size_t n)
{
    if (n > b->max || b->len > b->max - n)
        return jerr_set(c->err, JERR_LIMIT, c->line, 0, "output exceeds the %zu-byte limit", b->max);
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return jerr_set(c->err, JERR_NOMEM, c->line, 0, "out of memory");
        b->p = p;
        b->cap = cap;
    }
    if (n != 0)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int jbuf_finish(struct jctx *c, struct jbuf *b, struct jv *out)
{
    int rc = jv_make_str(c, b->p ? b->p : "", b->len, out);
    jbuf_free(b);
    return rc;
}

void jbuf_free(struct jbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

#define PUTS(c, b, lit) jbuf_put((c), (b), (lit), sizeof(lit) - 1)

/* ---- number formatting ------------------------------------------------------------------ */

/* Python's repr(float): the shortest digits that round-trip, fixed notation for exponents in
 * [-4, 16), scientific (e+XX) otherwise. */
static size_t fmt_float(double x, bool json, char *out, size_t cap)
{
    if (isnan(x))
        return (size_t)snprintf(out, cap, "%s", json ? "NaN" : "nan");
    if (isinf(x))
        return (size_t)snprintf(out, cap, "%s", x < 0 ? (json ? "-Infinity" : "-inf") : (json ? "Infinity" : "inf"));
    char e[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, x);
        if (strtod(e, NULL) == x)
            break;
    }
    /* e = [-]d[.ddd]e(+|-)XX */
    const char *q = e;
    bool neg = *q == '-';
    if (neg)
        q++;
    char digits[24];
    size_t nd = 0;
    for (; *q && *q != 'e'; q++)
        if (*q != '.' && nd < sizeof digits - 1)
            digits[nd++] = *q;
    int exp10 = *q == 'e' ? atoi(q + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';
    char *o = out;
    size_t left = cap;
#define EMIT(...) do { int k_ = snprintf(o, left, __VA_ARGS__); if (k_ < 0 || (size_t)k_ >= left) return cap - 1; o += k_; left -= (size_t)k_; } while (0)
    if (neg)
        EMIT("-");
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 >= 0) {
            for (int i = 0; i <= exp10; i++)
                EMIT("%c", (size_t)i < nd ? digits[i] : '0');
            EMIT(".");
            if ((size_t)exp10 + 1 < nd)
                EMIT("%s", digits + exp10 + 1);
            else
                EMIT("0");
        } else {
            EMIT("0.");
            for (int i = 0; i < -exp10 - 1; i++)
                EMIT("0");
            EMIT("%s", digits);
        }
    } else {
        EMIT("%c", digits[0]);
        if (nd > 1)
            EMIT(".%s", digits + 1);
        EMIT("e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
#undef EMIT
    return (size_t)(o - out);
}

static int put_num(struct jctx *c, struct jbuf *b, const struct jv *v, bool json)
{
    char t[64];
    size_t n;
    if (v->kind == JV_FLOAT)
        n = fmt_float(v->u.f, json, t, sizeof t);
    else
        n = (size_t)snprintf(t, sizeof t, "%lld", (long long)v->u.i);
    return jbuf_put(c, b, t, n);
}

/* ---- str() / repr() --------------------------------------------------------------------- */

static int put_repr_str(struct jctx *c, struct jbuf *b, const struct jstr *s)
{
    bool has_sq = memchr(s->s, '\'', s->len) != NULL, has_dq = memchr(s->s, '"', s->len) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    if (jbuf_put(c, b, &q, 1) < 0)
        return -1;
    size_t run = 0;
    for (size_t i = 0; i < s->len; i++) {
        unsigned char ch = (unsigned char)s->s[i];
        char esc[8];
        const char *rep = NULL;
        size_t skip = 1;
        if (ch == (unsigned char)q || ch == '\\') {
            esc[0] = '\\'; esc[1] = (char)ch; esc[2] = 0; rep = esc;
        } else if (ch == '\n') rep = "\\n";
        else if (ch == '\r') rep = "\\r";
        else if (ch == '\t') rep = "\\t";
        else if (ch < 0x20 || ch == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", ch); rep = esc;
        } else if (ch == 0xc2 && i + 1 < s->len && (unsigned char)s->s[i + 1] >= 0x80 &&
                   (unsigned char)s->s[i + 1] <= 0x9f) {
            snprintf(esc, sizeof esc, "\\x%02x", (unsigned char)s->s[i + 1]); rep = esc; skip = 2;
        }
        if (rep == NULL) {
            run++;
            continue;
        }
        if (jbuf_put(c, b, s->s + i - run, run) < 0 || jbuf_put(c, b, rep, strlen(rep)) < 0)
            return -1;
        run = 0;
        i += skip - 1;
    }
    if (jbuf_put(c, b, s->s + s->len - run, run) < 0)
        return -1;
    return jbuf_put(c, b, &q, 1);
}

static int put_repr(struct jctx *c, struct jbuf *b, const struct jv *v);

static int put_container(struct jctx *c, struct jbuf *b, const struct jv *v)
{
    if (enter(c) < 0)
        return -1;
    int rc = 0;
    if (v->kind == JV_LIST) {
        const struct jlist *l = v->u.l;
        rc = jbuf_put(c, b, l->tuple ? "(" : "[", 1);
        for (size_t i = 0; rc == 0 && i < l->n; i++) {
            if (i)
                rc = PUTS(c, b, ", ");
            if (rc == 0)
                rc = put_repr(c, b, &l->v[i]);
        }
        if (rc == 0 && l->tuple && l->n == 1)
            rc = PUTS(c, b, ",");
        if (rc == 0)
            rc = jbuf_put(c, b, l->tuple ? ")" : "]", 1);
    } else {
        const struct jdict *d = v->u.d;
        if (v->kind == JV_NS)
            rc = PUTS(c, b, "<Namespace ");
        if (rc == 0)
            rc = PUTS(c, b, "{");
        for (size_t i = 0; rc == 0 && i < d->n; i++) {
            if (i)
                rc = PUTS(c, b, ", ");
            if (rc == 0)
                rc = put_repr_str(c, b, d->k[i]);
            if (rc == 0)
                rc = PUTS(c, b, ": ");
            if (rc == 0)
                rc = put_repr(c, b, &d->v[i]);
        }
        if (rc == 0)
            rc = PUTS(c, b, "}");
        if (rc == 0 && v->kind == JV_NS)
            rc = PUTS(c, b, ">");
    }
    c->depth--;
    return rc;
}

static int put_repr(struct jctx *c, struct jbuf *b, const struct jv *v)
{
    if (v->kind == JV_STR)
        return put_repr_str(c, b, v->u.s);
    if (v->kind == JV_UNDEF)
        return PUTS(c, b, "Undefined");
    return jv_append_str(c, b, v);
}

int jv_append_str(struct jctx *c, struct jbuf *b, const struct jv *v)
{
    switch (v->kind) {
    case JV_UNDEF: return 0;
    case JV_NONE: return PUTS(c, b, "None");
    case JV_BOOL: return v->u.b ? PUTS(c, b, "True") : PUTS(c, b, "False");
    case JV_INT:
    case JV_FLOAT: return put_num(c, b, v, false);
    case JV_STR: return jbuf_put(c, b, v->u.s->s, v->u.s->len);
    case JV_LIST:
    case JV_DICT:
    case JV_NS: return put_container(c, b, v);
    case JV_LOOP: return PUTS(c, b, "<LoopContext>");
    }
    return 0;
}

int jv_to_str(struct jctx *c, const struct jv *v, struct jv *out)
{
    if (v->kind == JV_STR) {
        *out = *v;
        return 0;
    }
    struct jbuf b;
    jbuf_init(c, &b);
    if (jv_append_str(c, &b, v) < 0) {
        jbuf_free(&b);
        return -1;
    }
    return jbuf_finish(c, &b, out);
}

/* ---- json.dumps ------------------------------------------------------------------------- */

static int put_json_str(struct jctx *c, struct jbuf *b, const struct jstr *s)
{
    if (PUTS(c, b, "\"") < 0)
        return -1;
    size_t run = 0;
    for (size_t i = 0; i < s->len; i++) {
        char esc[8];
        const char *rep = eng_json_escape((unsigned char)s->s[i], esc);
        if (rep == NULL) {
            run++;
            continue;
        }
        if (jbuf_put(c, b, s->s + i - run, run) < 0 || jbuf_put(c, b, rep, strlen(rep)) < 0)
            return -1;
        run = 0;
    }
    if (jbuf_put(c, b, s->s + s->len - run, run) < 0)
        return -1;
    return PUTS(c, b, "\"");
}

static int put_indent(struct jctx *c, struct jbuf *b, int indent, int level)
{
    if (PUTS(c, b, "\n") < 0)
        return -1;
    for (int i = 0; i < indent * level; i++)
        if (PUTS(c, b, " ") < 0)
            return -1;
    return 0;
}

struct kv_ref {
    const struct jstr *k;
    const struct jv *v;
};

static int cmp_kv(const void *pa, const void *pb)
{
    const struct kv_ref *a = pa, *b = pb;
    size_t n = a->k->len < b->k->len ? a->k->len : b->k->len;
    int r = n ? memcmp(a->k->s, b->k->s, n) : 0;
    if (r != 0)
        return r;
    return (a->k->len > b->k->len) - (a->k->len < b->k->len);
}

struct json_fmt {
    int indent;
    const char *item_sep, *key_sep;
    bool sort;
};

static int put_json(struct jctx *c, struct jbuf *b, const struct jv *v, const struct json_fmt *f, int level)
{
    switch (v->kind) {
    case JV_NONE: return PUTS(c, b, "null");
    case JV_BOOL: return v->u.b ? PUTS(c, b, "true") : PUTS(c, b, "false");
    case JV_INT:
    case JV_FLOAT: return put_num(c, b, v, true);
    case JV_STR: return put_json_str(c, b, v->u.s);
    case JV_LIST:
    case JV_DICT: break;
    default:
        return jerr_set(c->err, JERR_RENDER, c->line, 0, "Object of type %s is not JSON serializable",
                        jv_type_name(v));
    }
    int indent = f->indent;
    bool is_list = v->kind == JV_LIST;
    size_t n = is_list ? v->u.l->n : v->u.d->n;
    if (n == 0)
        return is_list ? PUTS(c, b, "[]") : PUTS(c, b, "{}");
    if (enter(c) < 0)
        return -1;
    struct kv_ref *kv = NULL;
    int rc = jbuf_put(c, b, is_list ? "[" : "{", 1);
    if (rc == 0 && !is_list) {
        kv = jarena_array(c->arena, n, sizeof *kv);
        if (kv == NULL)
            rc = jerr_set(c->err, JERR_LIMIT, c->line, 0, "render memory limit exceeded");
        for (size_t i = 0; rc == 0 && i < n; i++)
            kv[i] = (struct kv_ref){v->u.d->k[i], &v->u.d->v[i]};
        if (rc == 0 && f->sort)
            qsort(kv, n, sizeof *kv, cmp_kv);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (i)
            rc = jbuf_put(c, b, f->item_sep, strlen(f->item_sep));
        if (rc == 0 && indent >= 0)
            rc = put_indent(c, b, indent, level + 1);
        if (rc != 0)
            break;
        if (is_list) {
            rc = put_json(c, b, &v->u.l->v[i], f, level + 1);
        } else {
            rc = put_json_str(c, b, kv[i].k);
            if (rc == 0)
                rc = jbuf_put(c, b, f->key_sep, strlen(f->key_sep));
            if (rc == 0)
                rc = put_json(c, b, kv[i].v, f, level + 1);
        }
    }
    if (rc == 0 && indent >= 0)
        rc = put_indent(c, b, indent, level);
    if (rc == 0)
        rc = jbuf_put(c, b, is_list ? "]" : "}", 1);
    c->depth--;
    return rc;
}

int jv_append_json(struct jctx *c, struct jbuf *b, const struct jv *v, int indent,
                   const char *item_sep, const char *key_sep, bool sort_keys)
{
    struct json_fmt f = {
        .indent = indent,
        .item_sep = item_sep != NULL ? item_sep : indent >= 0 ? "," : ", ",
        .key_sep = key_sep != NULL ? key_sep : ": ",
        .sort = sort_keys,
    };
    return put_json(c, b, v, &f, 0);
}

/* ---- UTF-8 ------------------------------------------------------------------------------ */

size_t jutf8_next(const char *s, size_t len, size_t i)
{
    unsigned char c0 = (unsigned char)s[i];
    size_t n = c0 < 0x80 ? 1 : (c0 >> 5) == 6 ? 2 : (c0 >> 4) == 14 ? 3 : (c0 >> 3) == 30 ? 4 : 0;
    if (n <= 1 || i + n > len)
        return i + 1;
    for (size_t k = 1; k < n; k++)
        if (((unsigned char)s[i + k] & 0xc0) != 0x80)
            return i + 1;
    return i + n;
}

size_t jutf8_count(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i = jutf8_next(s, len, i))
        n++;
    return n;
}

size_t jutf8_offset(const char *s, size_t len, size_t n_chars)
{
    size_t i = 0;
    while (n_chars-- > 0 && i < len)
        i = jutf8_next(s, len, i);
    return i;
}

size_t jpy_space_at(const char *s, size_t len, size_t i)
{
    const unsigned char *u = (const unsigned char *)s + i;
    size_t left = len - i;
    if (left == 0)
        return 0;
    if (u[0] == ' ' || (u[0] >= 0x09 && u[0] <= 0x0d) || (u[0] >= 0x1c && u[0] <= 0x1f))
        return 1;
    if (left >= 2 && u[0] == 0xc2 && (u[1] == 0x85 || u[1] == 0xa0))
        return 2;
    if (left >= 3) {
        if (u[0] == 0xe1 && u[1] == 0x9a && u[2] == 0x80)
            return 3;
        if (u[0] == 0xe2 && u[1] == 0x80 &&
            ((u[2] >= 0x80 && u[2] <= 0x8a) || u[2] == 0xa8 || u[2] == 0xa9 || u[2] == 0xaf))
            return 3;
        if (u[0] == 0xe2 && u[1] == 0x81 && u[2] == 0x9f)
            return 3;
        if (u[0] == 0xe3 && u[1] == 0x80 && u[2] == 0x80)
            return 3;
    }
    return 0;
}

size_t jpy_space_before(const char *s, size_t end)
{
    for (size_t n = 1; n <= 3 && n <= end; n++)
        if (jpy_space_at(s, end, end - n) == n)
            return n;
    return 0;
}
