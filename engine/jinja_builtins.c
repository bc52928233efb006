/* Builtins of the Jinja subset: the filters, tests, string/dict methods and global functions
 * that chat templates use, with the semantics of jinja2 + Python (transformers' tojson included).
 * Case mapping (upper/lower/capitalize) covers ASCII, Latin-1, Latin Extended-A, Greek and
 * Cyrillic one-to-one; other letters (and ß -> SS style expansions) pass through unchanged.
 * It does not walk the tree; jinja_eval.c calls in here. */
#include "jinja.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    F_ABS, F_CAPITALIZE, F_DEFAULT, F_FIRST, F_FLOAT, F_INT, F_ITEMS, F_JOIN, F_LAST, F_LENGTH,
    F_LIST, F_LOWER, F_MAP, F_REJECTATTR, F_REPLACE, F_REVERSE, F_SAFE, F_SELECTATTR, F_STRING,
    F_TOJSON, F_TRIM, F_UPPER
};

static const struct { const char *name; int id; } FILTERS[] = {
    {"abs", F_ABS}, {"capitalize", F_CAPITALIZE}, {"count", F_LENGTH}, {"d", F_DEFAULT},
    {"default", F_DEFAULT}, {"first", F_FIRST}, {"float", F_FLOAT}, {"int", F_INT},
    {"items", F_ITEMS}, {"join", F_JOIN}, {"last", F_LAST}, {"length", F_LENGTH}, {"list", F_LIST},
    {"lower", F_LOWER}, {"map", F_MAP}, {"rejectattr", F_REJECTATTR}, {"replace", F_REPLACE},
    {"reverse", F_REVERSE}, {"safe", F_SAFE}, {"selectattr", F_SELECTATTR}, {"string", F_STRING},
    {"tojson", F_TOJSON}, {"trim", F_TRIM}, {"upper", F_UPPER},
};

enum {
    T_BOOLEAN, T_DEFINED, T_DIVISIBLEBY, T_EQ, T_EVEN, T_FALSE, T_FLOAT, T_GE, T_GT, T_IN,
    T_INTEGER, T_ITERABLE, T_LE, T_LOWER, T_LT, T_MAPPING, T_NE, T_NONE, T_NUMBER, T_ODD,
    T_SAMEAS, T_SEQUENCE, T_STRING, T_TRUE, T_UNDEFINED, T_UPPER
};

static const struct { const char *name; int id; } TESTS[] = {
    {"!=", T_NE}, {"<", T_LT}, {"<=", T_LE}, {"==", T_EQ}, {">", T_GT}, {">=", T_GE},
    {"boolean", T_BOOLEAN}, {"defined", T_DEFINED}, {"divisibleby", T_DIVISIBLEBY}, {"eq", T_EQ},
    {"equalto", T_EQ}, {"even", T_EVEN}, {"false", T_FALSE}, {"float", T_FLOAT}, {"ge", T_GE},
    {"greaterthan", T_GT}, {"gt", T_GT}, {"in", T_IN}, {"integer", T_INTEGER},
    {"iterable", T_ITERABLE}, {"le", T_LE}, {"lessthan", T_LT}, {"lower", T_LOWER}, {"lt", T_LT},
    {"mapping", T_MAPPING}, {"ne", T_NE}, {"none", T_NONE}, {"number", T_NUMBER}, {"odd", T_ODD},
    {"sameas", T_SAMEAS}, {"sequence", T_SEQUENCE}, {"string", T_STRING}, {"true", T_TRUE},
    {"undefined", T_UNDEFINED}, {"upper", T_UPPER},
};

static int find_name(const char *name, size_t len, const char *table_name, int id, int *out)
{
    if (strlen(table_name) == len && memcmp(table_name, name, len) == 0) {
        *out = id;
        return 1;
    }
    return 0;
}

int jinja_filter_id(const char *name, size_t len)
{
    int id = -1;
    for (size_t i = 0; i < sizeof FILTERS / sizeof FILTERS[0]; i++)
        if (find_name(name, len, FILTERS[i].name, FILTERS[i].id, &id))
            break;
    return id;
}

int jinja_test_id(const char *name, size_t len)
{
    int id = -1;
    for (size_t i = 0; i < sizeof TESTS / sizeof TESTS[0]; i++)
        if (find_name(name, len, TESTS[i].name, TESTS[i].id, &id))
            break;
    return id;
}

/* ---- helpers ---------------------------------------------------------------------------- */

static int rerr(struct jctx *c, const char *fmt, const char *a)
{
    return jerr_set(c->err, JERR_RENDER, c->line, 0, fmt, a);
}

static int nomem(struct jctx *c)
{
    return jerr_set(c->err, JERR_LIMIT, c->line, 0, "render memory limit exceeded");
}

/* Positional argument i, or the keyword argument called name; NULL when absent. */
static const struct jv *arg(const struct jargs *a, size_t i, const char *name)
{
    if (i < a->n_pos)
        return &a->pos[i];
    for (size_t k = 0; k < a->n_kw; k++)
        if (strcmp(a->kw[k]->s, name) == 0)
            return &a->kwv[k];
    return NULL;
}

static bool intlike(const struct jv *v) { return v->kind == JV_INT || v->kind == JV_BOOL; }
static int64_t ival(const struct jv *v) { return v->kind == JV_BOOL ? (int64_t)v->u.b : v->u.i; }

static int want_str(struct jctx *c, const struct jv *v, const char *what, const struct jstr **out)
{
    if (v == NULL || v->kind != JV_STR)
        return rerr(c, "%s must be a string", what);
    *out = v->u.s;
    return 0;
}

static struct jv list_val(const struct jlist *l) { return (struct jv){.kind = JV_LIST, .u.l = l}; }

/* The items of an iterable as a list value (dict: keys, string: characters). */
static int to_list(struct jctx *c, const struct jv *v, struct jv *out)
{
    if (v->kind == JV_LIST) {
        *out = *v;
        return 0;
    }
    struct jlist *l;
    if (v->kind == JV_UNDEF) {
        l = jlist_new(c->arena, 0);
    } else if (v->kind == JV_DICT || v->kind == JV_NS) {
        l = jlist_new(c->arena, v->u.d->n);
        for (size_t i = 0; l != NULL && i < v->u.d->n; i++)
            l->v[i] = jv_str(v->u.d->k[i]);
    } else if (v->kind == JV_STR) {
        const char *s = v->u.s->s;
        size_t len = v->u.s->len;
        l = jlist_new(c->arena, jutf8_count(s, len));
        size_t j = 0;
        for (size_t i = 0; l != NULL && i < len; j++) {
            size_t e = jutf8_next(s, len, i);
            if (jv_make_str(c, s + i, e - i, &l->v[j]) < 0)
                return -1;
            i = e;
        }
    } else {
        return rerr(c, "'%s' object is not iterable", jv_type_name(v));
    }
    if (l == NULL)
        return nomem(c);
    *out = list_val(l);
    c->steps += l->n / 16;
    return jinja_step(c);
}

static bool in_charset(const struct jstr *chars, const char *s, size_t n)
{
    for (size_t i = 0; i < chars->len;) {
        size_t e = jutf8_next(chars->s, chars->len, i);
        if (e - i == n && memcmp(chars->s + i, s, n) == 0)
            return true;
        i = e;
    }
    return false;
}

/* str.strip / lstrip / rstrip: chars NULL strips Python whitespace. */
static int strip(struct jctx *c, const struct jstr *s, const struct jstr *chars, bool left, bool right,
                 struct jv *out)
{
    if (jinja_charge(c, JCOST_BYTES((uint64_t)s->len * (chars ? chars->len + 1 : 1))) < 0)
        return -1;
    size_t a = 0, b = s->len;
    while (left && a < b) {
        size_t e = jutf8_next(s->s, b, a);
        bool hit = chars ? in_charset(chars, s->s + a, e - a) : jpy_space_at(s->s, b, a) != 0;
        if (!hit)
            break;
        a = chars ? e : a + jpy_space_at(s->s, b, a);
    }
    while (right && b > a) {
        size_t k;
        if (chars == NULL) {
            k = jpy_space_before(s->s, b);
            if (k == 0 || b - k < a)
                break;
        } else {
            k = 1;
            while (k < 4 && k < b - a && ((unsigned char)s->s[b - k] & 0xc0) == 0x80)
                k++;
            if (jutf8_next(s->s, b, b - k) != b)
                k = 1;
            if (!in_charset(chars, s->s + b - k, k))
                break;
        }
        b -= k;
    }
    return jv_make_str(c, s->s + a, b - a, out);
}

static int opt_chars(struct jctx *c, const struct jv *v, const struct jstr **chars)
{
    *chars = NULL;
    if (v == NULL || v->kind == JV_NONE || v->kind == JV_UNDEF)
        return 0;
    return want_str(c, v, "strip argument", chars);
}

/* Simple case mapping of one code point for ASCII, Latin-1, Latin Extended-A, Greek and
 * Cyrillic (what chat content realistically meets); other code points map to themselves. */
static uint32_t case_cp(uint32_t cp, bool up)
{
    if (cp < 0x80)
        return (uint32_t)(up ? toupper((int)cp) : tolower((int)cp));
    if (up) {
        if ((cp >= 0xe0 && cp <= 0xfe && cp != 0xf7) || (cp >= 0x3b1 && cp <= 0x3cb && cp != 0x3c2) ||
            (cp >= 0x430 && cp <= 0x44f))
            return cp - 0x20;
        if (cp == 0xff) return 0x178;
        if (cp == 0x3c2) return 0x3a3;
        if (cp >= 0x450 && cp <= 0x45f) return cp - 0x50;
    } else {
        if ((cp >= 0xc0 && cp <= 0xde && cp != 0xd7) || (cp >= 0x391 && cp <= 0x3ab && cp != 0x3a2) ||
            (cp >= 0x410 && cp <= 0x42f))
            return cp + 0x20;
        if (cp == 0x178) return 0xff;
        if (cp >= 0x400 && cp <= 0x40f) return cp + 0x50;
    }
    /* Latin Extended-A: pairs (upper, lower) on even/odd, shifted by one in 0x139-0x148 and 0x179-0x17e */
    bool odd_pairs = (cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17e);
    bool even_pairs = cp >= 0x100 && cp <= 0x177 && !(cp >= 0x138 && cp <= 0x149) && cp != 0x130 && cp != 0x131;
    if (odd_pairs || even_pairs) {
        bool is_upper = (cp % 2 == 0) == even_pairs;
        if (up && !is_upper) return cp - 1;
        if (!up && is_upper) return cp + 1;
    }
    return cp;
}

static size_t decode_cp(const char *s, size_t len, size_t i, uint32_t *cp)
{
    size_t e = jutf8_next(s, len, i);
    unsigned char c0 = (unsigned char)s[i];
    if (e - i == 1) { *cp = c0 < 0x80 ? c0 : 0xfffd0000u | c0; return e; }
    uint32_t v = c0 & (0xff >> (e - i + 1));
    for (size_t k = i + 1; k < e; k++)
        v = (v << 6) | ((unsigned char)s[k] & 0x3f);
    *cp = v;
    return e;
}

static size_t encode_cp(char *o, uint32_t cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f)); return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* mode 0: lower, 1: upper, 2: capitalize (first upper, rest lower). Mapped characters keep
 * their UTF-8 length in the ranges above, so the result has the input's length. */
static int map_case(struct jctx *c, const struct jv *v, int mode, struct jv *out)
{
    struct jv s;
    if (jv_to_str(c, v, &s) < 0 || jv_make_str(c, s.u.s->s, s.u.s->len, out) < 0)
        return -1;
    struct jstr *r = (struct jstr *)out->u.s;
    for (size_t i = 0; i < r->len;) {
        uint32_t cp;
        size_t e = decode_cp(r->s, r->len, i, &cp);
        if (cp < 0xfffd0000u) {
            uint32_t m = case_cp(cp, mode == 1 || (mode == 2 && i == 0));
            char tmp[4];
            if (encode_cp(tmp, m) == e - i)
                memcpy(r->s + i, tmp, e - i);
        }
        i = e;
    }
    return 0;
}

static int replace(struct jctx *c, const struct jstr *s, const struct jstr *old, const struct jstr *new_,
                   int64_t count, struct jv *out)
{
    struct jbuf b;
    jbuf_init(c, &b);
    size_t i = 0;
    int64_t done = 0;
    int rc = 0;
    if (old->len == 0) {
        /* Python inserts new before every character and at the end */
        for (; rc == 0 && (count < 0 || done < count); done++) {
            rc = jbuf_put(c, &b, new_->s, new_->len);
            if (i >= s->len)
                break;
            size_t e = jutf8_next(s->s, s->len, i);
            if (rc == 0)
                rc = jbuf_put(c, &b, s->s + i, e - i);
            i = e;
        }
    } else {
        while (rc == 0 && (count < 0 || done < count)) {
            const char *hit = memmem(s->s + i, s->len - i, old->s, old->len);
            if (hit == NULL)
                break;
            size_t at = (size_t)(hit - s->s);
            rc = jbuf_put(c, &b, s->s + i, at - i);
            if (rc == 0)
                rc = jbuf_put(c, &b, new_->s, new_->len);
            i = at + old->len;
            done++;
        }
    }
    if (rc == 0 && i < s->len)
        rc = jbuf_put(c, &b, s->s + i, s->len - i);
    if (rc < 0) {
        jbuf_free(&b);
        return -1;
    }
    return jbuf_finish(c, &b, out);
}

/* int(s) for a Python integer literal with optional sign, whitespace and underscores. */
static bool parse_int(const struct jstr *s, int64_t *out)
{
    const char *p = s->s, *end = s->s + s->len;
    while (p < end && jpy_space_at(p, (size_t)(end - p), 0))
        p += jpy_space_at(p, (size_t)(end - p), 0);
    while (end > p && jpy_space_before(p, (size_t)(end - p)))
        end -= jpy_space_before(p, (size_t)(end - p));
    bool neg = false;
    if (p < end && (*p == '+' || *p == '-'))
        neg = *p++ == '-';
    if (p == end)
        return false;
    uint64_t v = 0;
    bool prev_digit = false;
    for (; p < end; p++) {
        if (*p == '_' && prev_digit && p + 1 < end && isdigit((unsigned char)p[1])) {
            prev_digit = false;
            continue;
        }
        if (!isdigit((unsigned char)*p))
            return false;
        if (v > ((uint64_t)INT64_MAX + 1) / 10)
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
        prev_digit = true;
    }
    if (v > (uint64_t)INT64_MAX + (neg ? 1u : 0u))
        return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

static bool parse_float(const struct jstr *s, double *out)
{
    const char *p = s->s, *end = s->s + s->len;
    while (p < end && jpy_space_at(p, (size_t)(end - p), 0))
        p += jpy_space_at(p, (size_t)(end - p), 0);
    while (end > p && jpy_space_before(p, (size_t)(end - p)))
        end -= jpy_space_before(p, (size_t)(end - p));
    size_t n = (size_t)(end - p);
    char buf[64];
    if (n == 0 || n >= sizeof buf || memchr(p, '\0', n) != NULL || memchr(p, 'x', n) || memchr(p, 'X', n))
        return false;
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *stop;
    double d = strtod(buf, &stop);
    if (*stop != '\0')
        return false;
    *out = d;
    return true;
}

/* ---- tests ------------------------------------------------------------------------------ */

static int test_by_id(struct jctx *c, int id, const struct jv *v, const struct jv *x, bool *out)
{
    bool eq;
    int sign;
    switch (id) {
    case T_DEFINED: *out = v->kind != JV_UNDEF; return 0;
    case T_UNDEFINED: *out = v->kind == JV_UNDEF; return 0;
    case T_NONE: *out = v->kind == JV_NONE; return 0;
    case T_STRING: *out = v->kind == JV_STR; return 0;
    case T_NUMBER: *out = v->kind == JV_INT || v->kind == JV_FLOAT || v->kind == JV_BOOL; return 0;
    case T_INTEGER: *out = v->kind == JV_INT; return 0;
    case T_FLOAT: *out = v->kind == JV_FLOAT; return 0;
    case T_BOOLEAN: *out = v->kind == JV_BOOL; return 0;
    case T_TRUE: *out = v->kind == JV_BOOL && v->u.b; return 0;
    case T_FALSE: *out = v->kind == JV_BOOL && !v->u.b; return 0;
    case T_MAPPING: *out = v->kind == JV_DICT; return 0;
    case T_ITERABLE: *out = v->kind == JV_STR || v->kind == JV_LIST || v->kind == JV_DICT || v->kind == JV_UNDEF; return 0;
    case T_SEQUENCE: *out = v->kind == JV_STR || v->kind == JV_LIST || v->kind == JV_DICT || v->kind == JV_UNDEF; return 0;
    case T_LOWER:
    case T_UPPER: {
        struct jv s;
        if (jv_to_str(c, v, &s) < 0)
            return -1;
        bool cased = false, ok = true;
        if (jinja_charge(c, JCOST_BYTES(s.u.s->len)) < 0)
            return -1;
        for (size_t i = 0; i < s.u.s->len; i++) {
            unsigned char ch = (unsigned char)s.u.s->s[i];
            if (isalpha(ch)) {
                cased = true;
                ok = ok && (id == T_LOWER ? islower(ch) : isupper(ch));
            }
        }
        *out = cased && ok;
        return 0;
    }
    case T_ODD:
    case T_EVEN:
    case T_DIVISIBLEBY: {
        if (!intlike(v))
            return rerr(c, "test needs an integer, got %s", jv_type_name(v));
        int64_t d = 2;
        if (id == T_DIVISIBLEBY) {
            if (x == NULL || !intlike(x) || ival(x) == 0)
                return rerr(c, "%s", "divisibleby needs a non-zero integer argument");
            d = ival(x);
        }
        int64_t m = d == -1 ? 0 : ival(v) % d;
        *out = id == T_ODD ? m != 0 : m == 0;
        return 0;
    }
    default: break;
    }
    if (x == NULL)
        return rerr(c, "%s", "test needs an argument");
    switch (id) {
    case T_EQ:
    case T_NE:
        if (jv_equal(c, v, x, &eq) < 0)
            return -1;
        *out = id == T_EQ ? eq : !eq;
        return 0;
    case T_SAMEAS:
        if (v->kind != x->kind)
            *out = false;
        else if (jv_equal(c, v, x, &eq) < 0)
            return -1;
        else
            *out = eq && (v->kind == JV_NONE || v->kind == JV_BOOL || v->kind == JV_UNDEF || v->kind == JV_INT);
        return 0;
    case T_IN: {
        if (x->kind == JV_STR) {
            if (jinja_charge(c, JCOST_BYTES(x->u.s->len)) < 0)
                return -1;
            if (v->kind != JV_STR)
                return rerr(c, "'in <string>' requires string as left operand, not %s", jv_type_name(v));
            *out = memmem(x->u.s->s, x->u.s->len, v->u.s->s, v->u.s->len) != NULL || v->u.s->len == 0;
            return 0;
        }
        if (x->kind == JV_DICT) {
            if (jinja_charge(c, JCOST_ITEMS(x->u.d->n)) < 0)
                return -1;
            *out = v->kind == JV_STR && jdict_get(x->u.d, v->u.s->s, v->u.s->len) != NULL;
            return 0;
        }
        if (x->kind != JV_LIST)
            return rerr(c, "argument of type '%s' is not iterable", jv_type_name(x));
        *out = false;
        for (size_t i = 0; i < x->u.l->n && !*out; i++)
            if (jv_equal(c, v, &x->u.l->v[i], out) < 0)
                return -1;
        return 0;
    }
    default:
        if (v->kind == JV_UNDEF || x->kind == JV_UNDEF)
            return rerr(c, "%s", "comparison with an undefined value");
        if (jv_compare(c, v, x, &sign) < 0)
            return -1;
        *out = id == T_LT ? sign < 0 : id == T_LE ? sign <= 0 : id == T_GT ? sign > 0 : sign >= 0;
        return 0;
    }
}

int jinja_apply_test(struct jctx *c, int id, const struct jv *v, const struct jargs *a, bool *out)
{
    return test_by_id(c, id, v, a->n_pos > 0 ? &a->pos[0] : NULL, out);
}

/* ---- filters ---------------------------------------------------------------------------- */

static int select_attr(struct jctx *c, const struct jv *v, const struct jargs *a, bool reject, struct jv *out)
{
    struct jv seq;
    const struct jstr *attr = NULL, *test_name = NULL;
    if (to_list(c, v, &seq) < 0 || want_str(c, arg(a, 0, "attribute"), "attribute name", &attr) < 0)
        return -1;
    if (a->n_pos > 1 && want_str(c, &a->pos[1], "test name", &test_name) < 0)
        return -1;
    int test = test_name ? jinja_test_id(test_name->s, test_name->len) : -1;
    if (test_name != NULL && test < 0)
        return rerr(c, "No test named '%.60s'", test_name->s);
    struct jlist *l = jlist_new(c->arena, seq.u.l->n);
    if (l == NULL)
        return nomem(c);
    l->n = 0;
    for (size_t i = 0; i < seq.u.l->n; i++) {
        struct jv field;
        bool keep;
        if (jinja_step(c) < 0 || jinja_getattr(c, &seq.u.l->v[i], attr, &field) < 0)
            return -1;
        if (test < 0)
            keep = jv_truthy(&field);
        else if (test_by_id(c, test, &field, a->n_pos > 2 ? &a->pos[2] : NULL, &keep) < 0)
            return -1;
        if (keep != reject)
            l->v[l->n++] = seq.u.l->v[i];
    }
    *out = list_val(l);
    return 0;
}

static int json_filter(struct jctx *c, const struct jv *v, const struct jargs *a, struct jv *out)
{
    const struct jv *ea = arg(a, 0, "ensure_ascii"), *ind = arg(a, 1, "indent"),
                    *sep = arg(a, 2, "separators"), *sk = arg(a, 3, "sort_keys");
    if (ea != NULL && jv_truthy(ea))
        return rerr(c, "%s", "tojson(ensure_ascii=True) is not supported");
    int indent = -1;
    if (ind != NULL && ind->kind != JV_NONE) {
        if (!intlike(ind))
            return rerr(c, "%s", "tojson indent must be an integer");
        int64_t i = ival(ind);
        indent = i < 0 ? 0 : i > 64 ? 64 : (int)i;
    }
    const char *item_sep = NULL, *key_sep = NULL;
    if (sep != NULL && sep->kind != JV_NONE) {
        if (sep->kind != JV_LIST || sep->u.l->n != 2 || sep->u.l->v[0].kind != JV_STR ||
            sep->u.l->v[1].kind != JV_STR)
            return rerr(c, "%s", "tojson separators must be two strings");
        item_sep = sep->u.l->v[0].u.s->s;
        key_sep = sep->u.l->v[1].u.s->s;
    }
    struct jbuf b;
    jbuf_init(c, &b);
    if (jv_append_json(c, &b, v, indent, item_sep, key_sep, sk != NULL && jv_truthy(sk)) < 0) {
        jbuf_free(&b);
        return -1;
    }
    return jbuf_finish(c, &b, out);
}

static int join_filter(struct jctx *c, const struct jv *v, const struct jargs *a, struct jv *out)
{
    struct jv seq;
    const struct jv *sepv = arg(a, 0, "d"), *attrv = arg(a, 1, "attribute");
    const struct jstr *sep = NULL, *attr = NULL;
    if (to_list(c, v, &seq) < 0)
        return -1;
    if (sepv != NULL) {
        struct jv s;
        if (jv_to_str(c, sepv, &s) < 0)
            return -1;
        sep = s.u.s;
    }
    if (attrv != NULL && attrv->kind != JV_NONE && want_str(c, attrv, "attribute", &attr) < 0)
        return -1;
    struct jbuf b;
    jbuf_init(c, &b);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < seq.u.l->n; i++) {
        struct jv item = seq.u.l->v[i];
        if (i && sep)
            rc = jbuf_put(c, &b, sep->s, sep->len);
        if (rc == 0 && attr)
            rc = jinja_getattr(c, &seq.u.l->v[i], attr, &item);
        if (rc == 0)
            rc = jinja_step(c);
        if (rc == 0)
            rc = jv_append_str(c, &b, &item);
    }
    if (rc < 0) {
        jbuf_free(&b);
        return -1;
    }
    return jbuf_finish(c, &b, out);
}

static int filter_simple(struct jctx *c, int id, const struct jv *v, const struct jargs *a, struct jv *out);

static int map_filter(struct jctx *c, const struct jv *v, const struct jargs *a, struct jv *out)
{
    struct jv seq;
    if (to_list(c, v, &seq) < 0)
        return -1;
    const struct jv *attrv = arg(a, 99, "attribute"), *defv = arg(a, 99, "default");
    const struct jstr *attr = NULL, *fname = NULL;
    if (attrv != NULL && want_str(c, attrv, "attribute", &attr) < 0)
        return -1;
    if (attr == NULL && want_str(c, arg(a, 0, "filter"), "map filter name", &fname) < 0)
        return -1;
    int fid = fname ? jinja_filter_id(fname->s, fname->len) : -1;
    if (fname != NULL && (fid < 0 || fid == F_MAP))
        return rerr(c, "No filter named '%.60s'", fname->s);
    struct jargs rest = {.pos = a->n_pos > 1 ? a->pos + 1 : NULL, .n_pos = a->n_pos > 1 ? a->n_pos - 1 : 0};
    struct jlist *l = jlist_new(c->arena, seq.u.l->n);
    if (l == NULL)
        return nomem(c);
    for (size_t i = 0; i < seq.u.l->n; i++) {
        if (jinja_step(c) < 0)
            return -1;
        if (attr != NULL) {
            if (jinja_getattr(c, &seq.u.l->v[i], attr, &l->v[i]) < 0)
                return -1;
            if (l->v[i].kind == JV_UNDEF && defv != NULL)
                l->v[i] = *defv;
        } else if (filter_simple(c, fid, &seq.u.l->v[i], &rest, &l->v[i]) < 0) {
            return -1;
        }
    }
    *out = list_val(l);
    return 0;
}

static int first_last(struct jctx *c, const struct jv *v, bool last, struct jv *out)
{
    *out = jv_undef(NULL);
    if (v->kind == JV_STR) {
        if (jinja_charge(c, JCOST_BYTES(v->u.s->len)) < 0)
            return -1;
        const char *s = v->u.s->s;
        size_t len = v->u.s->len;
        if (len == 0)
            return 0;
        size_t at = 0;
        if (last) {
            for (size_t i = 0; i < len; i = jutf8_next(s, len, i))
                at = i;
        }
        return jv_make_str(c, s + at, jutf8_next(s, len, at) - at, out);
    }
    struct jv seq;
    if (v->kind == JV_UNDEF)
        return 0;
    if (to_list(c, v, &seq) < 0)
        return -1;
    if (seq.u.l->n != 0)
        *out = seq.u.l->v[last ? seq.u.l->n - 1 : 0];
    return 0;
}

static int filter_simple(struct jctx *c, int id, const struct jv *v, const struct jargs *a, struct jv *out)
{
    struct jv s;
    switch (id) {
    case F_SAFE: *out = *v; return 0;
    case F_STRING: return jv_to_str(c, v, out);
    case F_UPPER: return map_case(c, v, 1, out);
    case F_LOWER: return map_case(c, v, 0, out);
    case F_CAPITALIZE: return map_case(c, v, 2, out);
    case F_TRIM: {
        const struct jstr *chars = NULL;
        if (jv_to_str(c, v, &s) < 0 || opt_chars(c, arg(a, 0, "chars"), &chars) < 0)
            return -1;
        return strip(c, s.u.s, chars, true, true, out);
    }
    case F_LENGTH:
        switch (v->kind) {
        case JV_UNDEF: *out = jv_int(0); return 0;
        case JV_STR:
            if (jinja_charge(c, JCOST_BYTES(v->u.s->len)) < 0)
                return -1;
            *out = jv_int((int64_t)jutf8_count(v->u.s->s, v->u.s->len));
            return 0;
        case JV_LIST: *out = jv_int((int64_t)v->u.l->n); return 0;
        case JV_DICT:
        case JV_NS: *out = jv_int((int64_t)v->u.d->n); return 0;
        default: return rerr(c, "object of type '%s' has no len()", jv_type_name(v));
        }
    case F_DEFAULT: {
        const struct jv *dv = arg(a, 0, "default_value"), *bv = arg(a, 1, "boolean");
        bool use = v->kind == JV_UNDEF || (bv != NULL && jv_truthy(bv) && !jv_truthy(v));
        if (!use)
            *out = *v;
        else if (dv != NULL)
            *out = *dv;
        else
            return jv_make_str(c, "", 0, out);
        return 0;
    }
    case F_FIRST: return first_last(c, v, false, out);
    case F_LAST: return first_last(c, v, true, out);
    case F_TOJSON: return json_filter(c, v, a, out);
    case F_JOIN: return join_filter(c, v, a, out);
    case F_REPLACE: {
        const struct jv *cv = arg(a, 2, "count");
        struct jv o, n;
        if (jv_to_str(c, v, &s) < 0)
            return -1;
        if (arg(a, 0, "old") == NULL || arg(a, 1, "new") == NULL)
            return rerr(c, "%s", "replace needs two arguments");
        if (jv_to_str(c, arg(a, 0, "old"), &o) < 0 || jv_to_str(c, arg(a, 1, "new"), &n) < 0)
            return -1;
        if (cv != NULL && cv->kind != JV_NONE && !intlike(cv))
            return rerr(c, "%s", "replace count must be an integer");
        return replace(c, s.u.s, o.u.s, n.u.s, cv && cv->kind != JV_NONE ? ival(cv) : -1, out);
    }
    case F_INT: {
        const struct jv *dv = arg(a, 0, "default");
        struct jv def = dv ? *dv : jv_int(0);
        double d;
        int64_t i;
        if (intlike(v)) {
            *out = jv_int(ival(v));
        } else if (v->kind == JV_FLOAT) {
            *out = (isfinite(v->u.f) && fabs(v->u.f) < 9.2e18) ? jv_int((int64_t)v->u.f) : def;
        } else if (v->kind == JV_STR && parse_int(v->u.s, &i)) {
            *out = jv_int(i);
        } else if (v->kind == JV_STR && parse_float(v->u.s, &d) && isfinite(d) && fabs(d) < 9.2e18) {
            *out = jv_int((int64_t)d);
        } else {
            *out = def;
        }
        return 0;
    }
    case F_FLOAT: {
        const struct jv *dv = arg(a, 0, "default");
        double d;
        if (v->kind == JV_FLOAT)
            *out = *v;
        else if (intlike(v))
            *out = jv_float((double)ival(v));
        else if (v->kind == JV_STR && parse_float(v->u.s, &d))
            *out = jv_float(d);
        else
            *out = dv ? *dv : jv_float(0.0);
        return 0;
    }
    case F_ABS:
        if (intlike(v)) {
            if (ival(v) == INT64_MIN)
                return rerr(c, "%s", "integer overflow");
            *out = jv_int(llabs(ival(v)));
        } else if (v->kind == JV_FLOAT) {
            *out = jv_float(fabs(v->u.f));
        } else {
            return rerr(c, "bad operand type for abs(): '%s'", jv_type_name(v));
        }
        return 0;
    case F_LIST: return to_list(c, v, out);
    case F_REVERSE: {
        if (v->kind == JV_STR) {
            struct jv chars;
            if (to_list(c, v, &chars) < 0)
                return -1;
            struct jbuf b;
            jbuf_init(c, &b);
            for (size_t i = chars.u.l->n; i-- > 0;)
                if (jbuf_put(c, &b, chars.u.l->v[i].u.s->s, chars.u.l->v[i].u.s->len) < 0) {
                    jbuf_free(&b);
                    return -1;
                }
            return jbuf_finish(c, &b, out);
        }
        struct jv seq;
        if (to_list(c, v, &seq) < 0)
            return -1;
        struct jlist *l = jlist_new(c->arena, seq.u.l->n);
        if (l == NULL)
            return nomem(c);
        for (size_t i = 0; i < l->n; i++)
            l->v[i] = seq.u.l->v[l->n - 1 - i];
        *out = list_val(l);
        return 0;
    }
    case F_ITEMS: {
        if (v->kind == JV_UNDEF) {
            struct jlist *l = jlist_new(c->arena, 0);
            if (l == NULL)
                return nomem(c);
            *out = list_val(l);
            return 0;
        }
        if (v->kind != JV_DICT)
            return rerr(c, "Can only get item pairs from a mapping, not %s", jv_type_name(v));
        struct jlist *l = jlist_new(c->arena, v->u.d->n);
        if (l == NULL)
            return nomem(c);
        for (size_t i = 0; i < l->n; i++) {
            struct jlist *p = jlist_new(c->arena, 2);
            if (p == NULL)
                return nomem(c);
            p->tuple = true;
            p->v[0] = jv_str(v->u.d->k[i]);
            p->v[1] = v->u.d->v[i];
            l->v[i] = list_val(p);
        }
        *out = list_val(l);
        return 0;
    }
    case F_SELECTATTR: return select_attr(c, v, a, false, out);
    case F_REJECTATTR: return select_attr(c, v, a, true, out);
    case F_MAP: return map_filter(c, v, a, out);
    default: return rerr(c, "%s", "unknown filter");
    }
}

int jinja_apply_filter(struct jctx *c, int id, const struct jv *v, const struct jargs *a, struct jv *out)
{
    return filter_simple(c, id, v, a, out);
}

/* ---- methods ---------------------------------------------------------------------------- */

static int split(struct jctx *c, const struct jstr *s, const struct jv *sepv, const struct jv *maxv, struct jv *out)
{
    const struct jstr *sep = NULL;
    if (sepv != NULL && sepv->kind != JV_NONE && want_str(c, sepv, "separator", &sep) < 0)
        return -1;
    if (sep != NULL && sep->len == 0)
        return rerr(c, "%s", "empty separator");
    int64_t maxsplit = maxv != NULL && intlike(maxv) ? ival(maxv) : -1;
    /* pieces: at most len + 1 */
    struct jlist *l = jlist_new(c->arena, s->len + 1);
    if (l == NULL)
        return nomem(c);
    l->n = 0;
    size_t i = 0;
    if (sep != NULL) {
        for (;;) {
            const char *hit = (maxsplit < 0 || (int64_t)l->n < maxsplit)
                                  ? memmem(s->s + i, s->len - i, sep->s, sep->len) : NULL;
            size_t at = hit ? (size_t)(hit - s->s) : s->len;
            if (jv_make_str(c, s->s + i, at - i, &l->v[l->n++]) < 0)
                return -1;
            if (hit == NULL)
                break;
            i = at + sep->len;
        }
    } else {
        size_t k;
        for (;;) {
            while (i < s->len && (k = jpy_space_at(s->s, s->len, i)) != 0)
                i += k;
            if (i >= s->len)
                break;
            if (maxsplit >= 0 && (int64_t)l->n >= maxsplit) {
                size_t end = s->len;
                while (end > i && (k = jpy_space_before(s->s, end)) != 0)
                    end -= k;
                if (jv_make_str(c, s->s + i, end - i, &l->v[l->n++]) < 0)
                    return -1;
                break;
            }
            size_t j = i;
            while (j < s->len && jpy_space_at(s->s, s->len, j) == 0)
                j = jutf8_next(s->s, s->len, j);
            if (jv_make_str(c, s->s + i, j - i, &l->v[l->n++]) < 0)
                return -1;
            i = j;
        }
    }
    c->steps += l->n / 16;
    *out = list_val(l);
    return jinja_step(c);
}

static bool affix_match(const struct jstr *s, const struct jstr *p, bool end)
{
    if (p->len > s->len)
        return false;
    return memcmp(s->s + (end ? s->len - p->len : 0), p->s, p->len) == 0;
}

static int affix(struct jctx *c, const struct jstr *s, const struct jv *p, bool end, struct jv *out)
{
    if (p == NULL)
        return rerr(c, "%s", "startswith/endswith need an argument");
    if (jinja_charge(c, JCOST_BYTES(s->len)) < 0)
        return -1;
    if (p->kind == JV_STR) {
        *out = jv_bool(affix_match(s, p->u.s, end));
        return 0;
    }
    if (p->kind == JV_LIST && p->u.l->tuple) {
        bool hit = false;
        for (size_t i = 0; i < p->u.l->n; i++) {
            if (p->u.l->v[i].kind != JV_STR)
                return rerr(c, "%s", "startswith/endswith tuple items must be strings");
            hit = hit || affix_match(s, p->u.l->v[i].u.s, end);
        }
        *out = jv_bool(hit);
        return 0;
    }
    return rerr(c, "startswith/endswith first arg must be str or a tuple of str, not %s", jv_type_name(p));
}

static bool named(const struct jstr *n, const char *s) { return strcmp(n->s, s) == 0; }

static int str_method(struct jctx *c, const struct jstr *s, const struct jstr *name, const struct jargs *a,
                      struct jv *out)
{
    struct jv self = jv_str(s);
    const struct jstr *chars = NULL;
    if (named(name, "strip") || named(name, "lstrip") || named(name, "rstrip")) {
        if (opt_chars(c, arg(a, 0, "chars"), &chars) < 0)
            return -1;
        return strip(c, s, chars, !named(name, "rstrip"), !named(name, "lstrip"), out);
    }
    if (named(name, "startswith") || named(name, "endswith"))
        return affix(c, s, arg(a, 0, "prefix"), named(name, "endswith"), out);
    if (named(name, "split"))
        return split(c, s, arg(a, 0, "sep"), arg(a, 1, "maxsplit"), out);
    if (named(name, "upper"))
        return map_case(c, &self, 1, out);
    if (named(name, "lower"))
        return map_case(c, &self, 0, out);
    if (named(name, "capitalize"))
        return map_case(c, &self, 2, out);
    if (named(name, "replace")) {
        const struct jstr *o = NULL, *n = NULL;
        const struct jv *cv = arg(a, 2, "count");
        if (want_str(c, arg(a, 0, "old"), "replace argument", &o) < 0 ||
            want_str(c, arg(a, 1, "new"), "replace argument", &n) < 0)
            return -1;
        return replace(c, s, o, n, cv && intlike(cv) ? ival(cv) : -1, out);
    }
    if (named(name, "find")) {
        const struct jstr *sub = NULL;
        if (want_str(c, arg(a, 0, "sub"), "find argument", &sub) < 0 ||
            jinja_charge(c, JCOST_BYTES(s->len)) < 0)
            return -1;
        const char *hit = sub->len == 0 ? s->s : memmem(s->s, s->len, sub->s, sub->len);
        *out = jv_int(hit ? (int64_t)jutf8_count(s->s, (size_t)(hit - s->s)) : -1);
        return 0;
    }
    if (named(name, "join")) {
        struct jargs ja = {.pos = &self, .n_pos = 1};
        if (arg(a, 0, "iterable") == NULL)
            return rerr(c, "%s", "join needs an argument");
        return join_filter(c, arg(a, 0, "iterable"), &ja, out);
    }
    return rerr(c, "'str' object has no attribute '%.60s'", name->s);
}

int jinja_call_method(struct jctx *c, const struct jv *obj, const struct jstr *name,
                      const struct jargs *a, struct jv *out)
{
    if (obj->kind == JV_STR)
        return str_method(c, obj->u.s, name, a, out);
    if (obj->kind == JV_DICT) {
        if (named(name, "get")) {
            const struct jv *k = arg(a, 0, "key"), *d = arg(a, 1, "default");
            if (k == NULL)
                return rerr(c, "%s", "get needs a key");
            if (jinja_charge(c, JCOST_ITEMS(obj->u.d->n)) < 0)
                return -1;
            const struct jv *v = k->kind == JV_STR ? jdict_get(obj->u.d, k->u.s->s, k->u.s->len) : NULL;
            *out = v ? *v : d ? *d : jv_none();
            return 0;
        }
        if (named(name, "items"))
            return filter_simple(c, F_ITEMS, obj, a, out);
        if (named(name, "keys"))
            return to_list(c, obj, out);
        if (named(name, "values")) {
            struct jlist *l = jlist_new(c->arena, obj->u.d->n);
            if (l == NULL)
                return nomem(c);
            memcpy(l->v, obj->u.d->v, l->n * sizeof *l->v);
            *out = list_val(l);
            return 0;
        }
    }
    if (obj->kind == JV_LOOP && named(name, "cycle")) {
        if (a->n_pos == 0)
            return rerr(c, "%s", "no items for cycling given");
        *out = a->pos[(size_t)obj->u.loop->index0 % a->n_pos];
        return 0;
    }
    return jerr_set(c->err, JERR_RENDER, c->line, 0, "'%s' object has no method '%.60s'",
                    jv_type_name(obj), name->s);
}

/* ---- globals ---------------------------------------------------------------------------- */

int jinja_call_global(struct jctx *c, const struct jstr *name, const struct jargs *a,
                      struct jv *out, bool *found)
{
    *found = true;
    if (named(name, "raise_exception")) {
        struct jv msg = jv_undef(NULL);
        if (a->n_pos > 0 && jv_to_str(c, &a->pos[0], &msg) < 0)
            return -1;
        return jerr_set(c->err, JERR_RAISE, c->line, 0, "%s", msg.kind == JV_STR ? msg.u.s->s : "");
    }
    if (named(name, "namespace") || named(name, "dict")) {
        struct jdict *d = jdict_new(c->arena, a->n_kw + 4);
        if (d == NULL)
            return nomem(c);
        if (a->n_pos > 0) {
            if (a->n_pos > 1 || a->pos[0].kind != JV_DICT)
                return rerr(c, "%s() takes a single dict argument", name->s);
            for (size_t i = 0; i < a->pos[0].u.d->n; i++)
                if (jdict_set(c->arena, d, a->pos[0].u.d->k[i], a->pos[0].u.d->v[i]) < 0)
                    return nomem(c);
        }
        for (size_t i = 0; i < a->n_kw; i++)
            if (jdict_set(c->arena, d, a->kw[i], a->kwv[i]) < 0)
                return nomem(c);
        *out = (struct jv){.kind = named(name, "dict") ? JV_DICT : JV_NS, .u.d = d};
        return 0;
    }
    if (named(name, "range")) {
        int64_t r[3] = {0, 0, 1};
        if (a->n_pos < 1 || a->n_pos > 3 || a->n_kw != 0)
            return rerr(c, "%s", "range expects 1 to 3 integer arguments");
        for (size_t i = 0; i < a->n_pos; i++)
            if (!intlike(&a->pos[i]))
                return rerr(c, "range argument must be an integer, not %s", jv_type_name(&a->pos[i]));
        if (a->n_pos == 1)
            r[1] = ival(&a->pos[0]);
        else
            for (size_t i = 0; i < a->n_pos; i++)
                r[i] = ival(&a->pos[i]);
        if (r[2] == 0)
            return rerr(c, "%s", "range() arg 3 must not be zero");
        /* count computed in double so extreme arguments cannot overflow */
        double span = r[2] > 0 ? (double)r[1] - (double)r[0] : (double)r[0] - (double)r[1];
        double cnt = span <= 0 ? 0 : ceil(span / fabs((double)r[2]));
        if (cnt > (double)(c->max_steps - c->steps))
            return jerr_set(c->err, JERR_LIMIT, c->line, 0, "range of %.0f items exceeds the step limit", cnt);
        struct jlist *l = jlist_new(c->arena, (size_t)cnt);
        if (l == NULL)
            return nomem(c);
        for (size_t i = 0; i < l->n; i++)
            l->v[i] = jv_int(r[0] + (int64_t)i * r[2]);
        c->steps += l->n;
        *out = list_val(l);
        return 0;
    }
    *found = false;
    return 0;
}
