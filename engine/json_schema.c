/* JSON Schema (the subset in json_schema.h) compiled into a byte grammar: one rule per
 * schema node, shared rules for the JSON primitives, and rules made before they are filled so
 * that $ref cycles become recursive rules. It does not validate documents. */
#include "json_schema.h"

#include "regex.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_LEN 512
#define WS_MAX 32
#define INT_DIGITS_MAX 16
#define FRAC_DIGITS_MAX 16
#define EXP_DIGITS_MAX 2 /* 16 + 16 digits and e99 stay far below DBL_MAX */
#define REFS_MAX 4096

struct ref_entry {
    const char *name;           /* the '$ref' string (in the schema document) */
    int32_t rule;
};

#define REF_INDEX_SIZE 8192     /* open addressing over refs, > 2 x REFS_MAX */
#define SCHEMA_DEPTH_MAX 256    /* schemas inside schemas, '$ref' targets included */
#define OBJECT_MEMBERS_MAX 1024 /* properties + required names of one object */
#define ENUM_MAX 4096           /* values of one enum (literal_trie recurses once per branch) */

struct cc {
    struct eng_grammar *g;
    const struct eng_json *root;
    char *err;
    size_t errlen;
    int rc;                     /* first error, 0 while none */
    char path[PATH_MAX_LEN];
    /* Shared rules, made on first use (-1 until then). */
    int32_t ws, value, string, chr, number, integer, boolean, null, object_any, array_any;
    struct ref_entry *refs;     /* schemas reached through $ref, each compiled once */
    int32_t n_refs, cap_refs;
    int32_t *ref_index;         /* [REF_INDEX_SIZE] index into refs + 1, 0 empty */
    int depth;                  /* compile's recursion */
};

static int32_t set_err(struct cc *c, int rc, const char *fmt, ...)
{
    if (c->rc != 0)
        return c->rc;
    c->rc = rc;
    if (c->errlen > 0) {
        /* A long path keeps its end, where the keyword at fault is. */
        size_t plen = strlen(c->path);
        int n = plen > 160 ? snprintf(c->err, c->errlen, "...%s: ", c->path + plen - 150)
                           : snprintf(c->err, c->errlen, "%s: ", c->path);
        va_list ap;
        va_start(ap, fmt);
        if (n >= 0 && (size_t)n < c->errlen)
            vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* A grammar call failed: map its code. */
static int32_t grammar_err(struct cc *c, int rc)
{
    if (rc == ENG_GRAMMAR_ERR_TOO_BIG)
        return set_err(c, ENG_JSON_SCHEMA_ERR_TOO_BIG,
                       "the schema is too large to enforce (grammar ceiling reached)");
    if (rc == ENG_GRAMMAR_ERR_NOMEM)
        return set_err(c, ENG_JSON_SCHEMA_ERR_NOMEM, "out of memory");
    return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "internal grammar error %d", rc);
}

/* Building helpers: each returns 0 or the error recorded in c. */
static int32_t new_rule(struct cc *c)
{
    if (c->rc)
        return c->rc;
    int32_t r = eng_grammar_rule(c->g);
    return r < 0 ? grammar_err(c, r) : r;
}

static int alt(struct cc *c, int32_t rule)
{
    int rc = c->rc ? c->rc : eng_grammar_alt(c->g, rule);
    return rc < 0 && !c->rc ? grammar_err(c, rc) : c->rc;
}

static int lit(struct cc *c, const char *s)
{
    int rc = c->rc ? c->rc : eng_grammar_add_literal(c->g, s, strlen(s));
    return rc < 0 && !c->rc ? grammar_err(c, rc) : c->rc;
}

static int lit_n(struct cc *c, const char *s, size_t n)
{
    int rc = c->rc ? c->rc : eng_grammar_add_literal(c->g, s, n);
    return rc < 0 && !c->rc ? grammar_err(c, rc) : c->rc;
}

static int range(struct cc *c, uint8_t lo, uint8_t hi)
{
    int rc = c->rc ? c->rc : eng_grammar_add_range(c->g, lo, hi);
    return rc < 0 && !c->rc ? grammar_err(c, rc) : c->rc;
}

static int cls(struct cc *c, const char *bytes)
{
    uint32_t set[8] = {0};
    for (const unsigned char *p = (const unsigned char *)bytes; *p; p++)
        set[*p >> 5] |= 1u << (*p & 31);
    int rc = c->rc ? c->rc : eng_grammar_add_class(c->g, set);
    return rc < 0 && !c->rc ? grammar_err(c, rc) : c->rc;
}

static int ref(struct cc *c, int32_t rule)
{
    int rc = c->rc ? c->rc : eng_grammar_add_ref(c->g, rule);
    return rc < 0 && !c->rc ? grammar_err(c, rc) : c->rc;
}

/* eng_grammar_repeat, its error recorded in c. */
static int32_t repeat(struct cc *c, int32_t item, int32_t sep, int64_t min, int64_t max)
{
    if (c->rc)
        return c->rc;
    int32_t r = eng_grammar_repeat(c->g, item, sep, min, max);
    return r < 0 ? grammar_err(c, r) : r;
}

/* ---- the JSON primitives ---- */

static int32_t ws_rule(struct cc *c)
{
    if (c->rc) /* a failed build would cache the error code as a rule id */
        return c->rc;
    if (c->ws < 0) {
        int32_t one = new_rule(c);
        alt(c, one);
        cls(c, " \t\n\r");
        c->ws = repeat(c, one, -1, 0, WS_MAX);
    }
    return c->ws;
}

static int32_t digits(struct cc *c, int64_t min, int64_t max)
{
    int32_t d = new_rule(c);
    alt(c, d);
    range(c, '0', '9');
    return repeat(c, d, -1, min, max);
}

/* One hex digit, or one excluding some; written as classes. */
static int hex(struct cc *c)
{
    return cls(c, "0123456789abcdefABCDEF");
}

/* A string character: any valid UTF-8 character but '"', '\\' and controls, or an escape. */
static int32_t char_rule(struct cc *c)
{
    if (c->rc) /* a failed build would cache the error code as a rule id */
        return c->rc;
    if (c->chr >= 0)
        return c->chr;
    int32_t r = c->chr = new_rule(c);
    uint32_t ascii[8] = {0};
    for (int b = 0x20; b < 0x80; b++)
        if (b != '"' && b != '\\')
            ascii[b >> 5] |= 1u << (b & 31);
    alt(c, r);
    if (!c->rc) {
        int rc = eng_grammar_add_class(c->g, ascii);
        if (rc < 0)
            return grammar_err(c, rc);
    }
    /* Multi-byte UTF-8 (RFC 3629): no overlongs, surrogates or code points past U+10FFFF. */
    alt(c, r); range(c, 0xC2, 0xDF); range(c, 0x80, 0xBF);
    alt(c, r); range(c, 0xE0, 0xE0); range(c, 0xA0, 0xBF); range(c, 0x80, 0xBF);
    alt(c, r); range(c, 0xE1, 0xEC); range(c, 0x80, 0xBF); range(c, 0x80, 0xBF);
    alt(c, r); range(c, 0xED, 0xED); range(c, 0x80, 0x9F); range(c, 0x80, 0xBF);
    alt(c, r); range(c, 0xEE, 0xEF); range(c, 0x80, 0xBF); range(c, 0x80, 0xBF);
    alt(c, r); range(c, 0xF0, 0xF0); range(c, 0x90, 0xBF); range(c, 0x80, 0xBF); range(c, 0x80, 0xBF);
    alt(c, r); range(c, 0xF1, 0xF3); range(c, 0x80, 0xBF); range(c, 0x80, 0xBF); range(c, 0x80, 0xBF);
    alt(c, r); range(c, 0xF4, 0xF4); range(c, 0x80, 0x8F); range(c, 0x80, 0xBF); range(c, 0x80, 0xBF);
    /* Escapes; \u never a surrogate (D800-DFFF) nor 0000. */
    alt(c, r); lit(c, "\\"); cls(c, "\"\\/bfnrt");
    alt(c, r); lit(c, "\\u"); cls(c, "123456789abcABC"); hex(c); hex(c); hex(c);
    alt(c, r); lit(c, "\\u"); cls(c, "dD"); range(c, '0', '7'); hex(c); hex(c);
    alt(c, r); lit(c, "\\u"); cls(c, "eEfF"); hex(c); hex(c); hex(c);
    alt(c, r); lit(c, "\\u0"); cls(c, "123456789abcdefABCDEF"); hex(c); hex(c);
    alt(c, r); lit(c, "\\u00"); cls(c, "123456789abcdefABCDEF"); hex(c);
    alt(c, r); lit(c, "\\u000"); cls(c, "123456789abcdefABCDEF");
    return c->rc ? c->rc : r;
}

static int32_t string_rule(struct cc *c, int64_t min, int64_t max)
{
    if (c->rc) /* a failed build would cache the error code as a rule id */
        return c->rc;
    bool plain = min == 0 && max < 0;
    if (plain && c->string >= 0)
        return c->string;
    int32_t chars = repeat(c, char_rule(c), -1, min, max);
    int32_t r = new_rule(c);
    alt(c, r); lit(c, "\""); ref(c, chars); lit(c, "\"");
    if (plain)
        c->string = r;
    return c->rc ? c->rc : r;
}

/* -? (0 | [1-9][0-9]{0,15}) */
static int32_t integer_rule(struct cc *c)
{
    if (c->rc) /* a failed build would cache the error code as a rule id */
        return c->rc;
    if (c->integer >= 0)
        return c->integer;
    int32_t more = digits(c, 0, INT_DIGITS_MAX - 1);
    int32_t mag = new_rule(c);
    alt(c, mag); lit(c, "0");
    alt(c, mag); range(c, '1', '9'); ref(c, more);
    int32_t r = c->integer = new_rule(c);
    alt(c, r); ref(c, mag);
    alt(c, r); lit(c, "-"); ref(c, mag);
    return c->rc ? c->rc : r;
}

static int32_t number_rule(struct cc *c)
{
    if (c->rc) /* a failed build would cache the error code as a rule id */
        return c->rc;
    if (c->number >= 0)
        return c->number;
    int32_t fd = digits(c, 1, FRAC_DIGITS_MAX), ed = digits(c, 1, EXP_DIGITS_MAX);
    int32_t in = integer_rule(c);
    int32_t frac = new_rule(c);
    alt(c, frac);
    alt(c, frac); lit(c, "."); ref(c, fd);
    int32_t exp = new_rule(c);
    alt(c, exp);
    alt(c, exp); cls(c, "eE"); ref(c, ed);
    alt(c, exp); cls(c, "eE"); cls(c, "+-"); ref(c, ed);
    int32_t r = c->number = new_rule(c);
    alt(c, r); ref(c, in); ref(c, frac); ref(c, exp);
    return c->rc ? c->rc : r;
}

static int32_t word_rule(struct cc *c, int32_t *slot, const char *a, const char *b)
{
    if (c->rc) /* a failed build would cache the error code as a rule id */
        return c->rc;
    if (*slot >= 0)
        return *slot;
    int32_t r = *slot = new_rule(c);
    alt(c, r); lit(c, a);
    if (b) {
        alt(c, r); lit(c, b);
    }
    return c->rc ? c->rc : r;
}

/* "sep" between list items: ws "," ws */
static int32_t comma_rule(struct cc *c)
{
    int32_t ws = ws_rule(c);
    int32_t r = new_rule(c);
    alt(c, r); ref(c, ws); lit(c, ","); ref(c, ws);
    return c->rc ? c->rc : r;
}

/* open ws (items sep ...)? ws close, with items = repeat(item, min, max) */
static int32_t list_rule(struct cc *c, const char *open, const char *close, int32_t item,
                         int64_t min, int64_t max)
{
    int32_t ws = ws_rule(c);
    int32_t items = max == 0 ? -1 : repeat(c, item, comma_rule(c), min > 0 ? min : 1, max);
    int32_t r = new_rule(c);
    if (min == 0) {
        alt(c, r); lit(c, open); ref(c, ws); lit(c, close);
    }
    if (items >= 0) {
        alt(c, r); lit(c, open); ref(c, ws); ref(c, items); ref(c, ws); lit(c, close);
    }
    return c->rc ? c->rc : r;
}

static int32_t value_rule(struct cc *c);

static int32_t member_rule(struct cc *c, int32_t value)
{
    int32_t key = string_rule(c, 0, -1), ws = ws_rule(c);
    int32_t r = new_rule(c);
    alt(c, r); ref(c, key); ref(c, ws); lit(c, ":"); ref(c, ws); ref(c, value);
    return c->rc ? c->rc : r;
}

static int32_t object_any_rule(struct cc *c)
{
    if (c->rc) /* a failed build would cache the error code as a rule id */
        return c->rc;
    if (c->object_any < 0) {
        c->object_any = new_rule(c); /* made first: value refers back to it */
        int32_t body = list_rule(c, "{", "}", member_rule(c, value_rule(c)), 0, -1);
        alt(c, c->object_any); ref(c, body);
    }
    return c->rc ? c->rc : c->object_any;
}

static int32_t array_any_rule(struct cc *c)
{
    if (c->rc) /* a failed build would cache the error code as a rule id */
        return c->rc;
    if (c->array_any < 0) {
        c->array_any = new_rule(c);
        int32_t body = list_rule(c, "[", "]", value_rule(c), 0, -1);
        alt(c, c->array_any); ref(c, body);
    }
    return c->rc ? c->rc : c->array_any;
}

/* Any JSON value. */
static int32_t value_rule(struct cc *c)
{
    if (c->rc) /* a failed build would cache the error code as a rule id */
        return c->rc;
    if (c->value >= 0)
        return c->value;
    /* Made first: objects and arrays refer back to it. Every sub-rule is built before an
     * alternative opens, since an open alternative takes every element added meanwhile. */
    int32_t r = c->value = new_rule(c);
    int32_t kinds[6] = {object_any_rule(c), array_any_rule(c), string_rule(c, 0, -1),
                        number_rule(c), word_rule(c, &c->boolean, "true", "false"),
                        word_rule(c, &c->null, "null", NULL)};
    for (int i = 0; i < 6; i++) {
        alt(c, r);
        ref(c, kinds[i]);
    }
    return c->rc ? c->rc : r;
}

/* ---- literals: const and enum values, property names ---- */

/* A literal text for literal_trie. */
struct text {
    const char *p;
    size_t len;
};

static int cmp_text(const void *a, const void *b)
{
    const struct text *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* The rule of t[0..n) (sorted, distinct) past their first d bytes, which they share: their
 * longest common part as one literal, then one alternative per next byte (and an empty one
 * where a text ends). So a set of literals opens one parse per distinct next byte, not one
 * per literal, and the recursion goes one level per branching, not per byte. */
static int32_t literal_trie(struct cc *c, const struct text *t, size_t n, size_t d)
{
    if (c->rc)
        return c->rc;
    size_t common = t[0].len;
    for (size_t k = d; k < common; k++)
        if (t[n - 1].len <= k || t[n - 1].p[k] != t[0].p[k])
            common = k;
    /* children first: no alternative may be open while they are built */
    int32_t kids[257];
    uint8_t bytes[257];
    size_t n_kids = 0, start = t[0].len == common ? 1 : 0;
    for (size_t a = start; a < n && !c->rc;) {
        size_t b = a + 1;
        while (b < n && t[b].p[common] == t[a].p[common])
            b++;
        bytes[n_kids] = (uint8_t)t[a].p[common];
        kids[n_kids++] = literal_trie(c, t + a, b - a, common + 1);
        a = b;
    }
    int32_t r = new_rule(c);
    if (start) {
        alt(c, r); lit_n(c, t[0].p + d, common - d);
    }
    for (size_t k = 0; k < n_kids && !c->rc; k++) {
        alt(c, r); lit_n(c, t[0].p + d, common - d); range(c, bytes[k], bytes[k]); ref(c, kids[k]);
    }
    return c->rc ? c->rc : r;
}

/* rule ::= any of the n texts (n >= 1; duplicates allowed), as a trie. */
static int32_t literals_rule(struct cc *c, struct text *t, size_t n)
{
    qsort(t, n, sizeof *t, cmp_text);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || cmp_text(&t[m - 1], &t[i]) != 0)
            t[m++] = t[i];
    return literal_trie(c, t, m, 0);
}

/* rule ::= the literal JSON of each value. */
static int32_t literal_rule(struct cc *c, const struct eng_json *const *vals, size_t n)
{
    struct text *t = calloc(n, sizeof *t);
    if (!t)
        return set_err(c, ENG_JSON_SCHEMA_ERR_NOMEM, "out of memory");
    size_t k = 0;
    for (; k < n; k++) {
        char *text;
        if (eng_json_write(vals[k], &text, &t[k].len) != 0)
            break;
        t[k].p = text;
    }
    int32_t r = k == n ? literals_rule(c, t, n) : set_err(c, ENG_JSON_SCHEMA_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        free((char *)t[i].p);
    free(t);
    return r;
}

/* ---- schemas ---- */

/* Path helpers: push appends a step to c->path, pop restores its length. */
static size_t path_push(struct cc *c, const char *fmt, ...)
{
    size_t len = strlen(c->path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->path + len, sizeof c->path - len, fmt, ap);
    va_end(ap);
    return len;
}

static void path_pop(struct cc *c, size_t len)
{
    c->path[len] = '\0';
}

static bool is_annotation(const char *k)
{
    static const char *const names[] = {
        "title", "description", "default", "examples", "$schema", "$id", "$comment", "$defs",
        "definitions", "deprecated", "readOnly", "writeOnly", "format", "$anchor"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(k, names[i]) == 0)
            return true;
    return strncmp(k, "x-", 2) == 0;
}

static bool is_supported(const char *k)
{
    static const char *const names[] = {
        "type", "properties", "required", "additionalProperties", "items", "prefixItems",
        "minItems", "maxItems", "minLength", "maxLength", "enum", "const", "anyOf", "oneOf",
        "allOf", "$ref", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "pattern"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(k, names[i]) == 0)
            return true;
    return false;
}

static int32_t compile(struct cc *c, const struct eng_json *s);

/* A non-negative integer keyword, at most ENG_JSON_SCHEMA_MAX_REPEAT; -1 when absent. */
static int64_t count_kw(struct cc *c, const struct eng_json *s, const char *k)
{
    const struct eng_json *v = eng_json_get(s, k);
    if (!v)
        return -1;
    size_t mark = path_push(c, ".%s", k);
    int64_t n = -1;
    if (v->type != ENG_JSON_NUMBER || v->u.num.d < 0 || v->u.num.d != floor(v->u.num.d))
        set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "must be a non-negative integer");
    else if (v->u.num.d > ENG_JSON_SCHEMA_MAX_REPEAT)
        set_err(c, ENG_JSON_SCHEMA_ERR_UNSUPPORTED, "values above %d are not supported",
                ENG_JSON_SCHEMA_MAX_REPEAT);
    else
        n = (int64_t)v->u.num.d;
    path_pop(c, mark);
    return n;
}

/* min/max pair of keywords: *min defaults to 0, *max to -1 (no limit). */
static int bounds(struct cc *c, const struct eng_json *s, const char *kmin, const char *kmax,
                  int64_t *min, int64_t *max)
{
    *min = count_kw(c, s, kmin);
    *max = count_kw(c, s, kmax);
    if (c->rc)
        return c->rc;
    if (*min < 0)
        *min = 0;
    if (*max >= 0 && *max < *min)
        return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "'%s' is larger than '%s'", kmin, kmax);
    return 0;
}

/* A schema-valued keyword: absent or true gives any value (-2 for "nothing" when false). */
static int32_t sub_schema(struct cc *c, const struct eng_json *v, const char *step)
{
    if (!v || (v->type == ENG_JSON_BOOL && v->b))
        return value_rule(c);
    if (v->type == ENG_JSON_BOOL)
        return -2;
    size_t mark = path_push(c, "%s", step);
    int32_t r = compile(c, v);
    path_pop(c, mark);
    return r;
}

static int32_t object_rule(struct cc *c, const struct eng_json *s)
{
    const struct eng_json *props = eng_json_get(s, "properties");
    const struct eng_json *req = eng_json_get(s, "required");
    const struct eng_json *extra = eng_json_get(s, "additionalProperties");
    if (props && props->type != ENG_JSON_OBJECT)
        return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "'properties' must be an object");
    if (req && req->type != ENG_JSON_ARRAY)
        return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "'required' must be an array");
    if (extra && extra->type != ENG_JSON_BOOL && extra->type != ENG_JSON_OBJECT)
        return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID,
                       "'additionalProperties' must be a boolean or a schema");
    size_t n_props = props ? props->len : 0, n_req = req ? req->len : 0;
    if (n_props + n_req > OBJECT_MEMBERS_MAX)
        return set_err(c, ENG_JSON_SCHEMA_ERR_TOO_BIG,
                       "more than %d properties and required names in one object",
                       OBJECT_MEMBERS_MAX);
    /* Members: the declared properties in order, then required names not declared. */
    size_t cap = n_props + n_req;
    const char **names = calloc(cap ? cap : 1, sizeof *names);
    size_t *name_lens = calloc(cap ? cap : 1, sizeof *name_lens);
    const struct eng_json **schemas = calloc(cap ? cap : 1, sizeof *schemas);
    bool *required = calloc(cap ? cap : 1, sizeof *required);
    int32_t *kv = calloc(cap ? cap : 1, sizeof *kv);
    int32_t obj = -1;
    size_t n = 0;
    if (!names || !name_lens || !schemas || !required || !kv) {
        set_err(c, ENG_JSON_SCHEMA_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (const struct eng_json *p = props ? props->u.child : NULL; p; p = p->next) {
        names[n] = p->key;
        name_lens[n] = p->key_len;
        schemas[n++] = p;
    }
    for (const struct eng_json *r = req ? req->u.child : NULL; r && !c->rc; r = r->next) {
        if (r->type != ENG_JSON_STRING) {
            set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "'required' must list strings");
            break;
        }
        size_t k = 0;
        while (k < n && !(name_lens[k] == r->len && memcmp(names[k], r->u.str, r->len) == 0))
            k++;
        if (k < n && required[k]) {
            set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "'required' lists \"%s\" twice", r->u.str);
            break;
        }
        if (k == n) {
            names[n] = r->u.str;
            name_lens[n] = r->len;
            schemas[n++] = NULL; /* any value */
        }
        required[k] = true;
    }
    /* kv_i ::= "name" ws ":" ws value_i */
    int32_t ws = ws_rule(c);
    for (size_t i = 0; i < n && !c->rc; i++) {
        int32_t v;
        if (schemas[i]) {
            size_t mark = path_push(c, ".properties.%s", names[i]);
            v = compile(c, schemas[i]);
            path_pop(c, mark);
        } else if (extra && extra->type == ENG_JSON_BOOL && !extra->b) {
            set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "'required' names \"%s\", which neither "
                    "'properties' nor 'additionalProperties' allows", names[i]);
            break;
        } else {
            /* A required name the properties do not declare: additionalProperties says what
             * its value is (any value when absent or true). */
            v = sub_schema(c, extra, ".additionalProperties");
        }
        char *key;
        size_t key_len;
        if (eng_json_write_string(names[i], name_lens[i], &key, &key_len) != 0) {
            set_err(c, ENG_JSON_SCHEMA_ERR_NOMEM, "out of memory");
            break;
        }
        kv[i] = new_rule(c);
        alt(c, kv[i]); lit_n(c, key, key_len); ref(c, ws); lit(c, ":"); ref(c, ws); ref(c, v);
        free(key);
    }
    int32_t kvx = -1, comma = comma_rule(c);
    if (extra && !(extra->type == ENG_JSON_BOOL && !extra->b)) {
        int32_t v = sub_schema(c, extra, ".additionalProperties");
        kvx = v >= 0 ? member_rule(c, v) : v;
    }
    /* F(i): at least one member from i on, none before; R(i): members from i on after some.
     * R(n) ::= "" | comma kvx R(n) with extra members; F(n) ::= kvx R(n) when allowed. */
    int32_t rn = new_rule(c);
    alt(c, rn);
    if (kvx >= 0) {
        alt(c, rn); ref(c, comma); ref(c, kvx); ref(c, rn);
    }
    int32_t f_next = -1, r_next = rn;
    if (kvx >= 0) {
        f_next = new_rule(c);
        alt(c, f_next); ref(c, kvx); ref(c, rn);
    }
    bool all_optional = true;
    for (size_t i = n; i-- > 0 && !c->rc;) {
        int32_t ri = new_rule(c), fi = new_rule(c);
        alt(c, ri); ref(c, comma); ref(c, kv[i]); ref(c, r_next);
        alt(c, fi); ref(c, kv[i]); ref(c, r_next);
        if (!required[i]) {
            alt(c, ri); ref(c, r_next);
            if (f_next >= 0) {
                alt(c, fi); ref(c, f_next);
            }
        } else {
            all_optional = false;
        }
        r_next = ri;
        f_next = fi;
    }
    obj = new_rule(c);
    if (all_optional) {
        alt(c, obj); lit(c, "{"); ref(c, ws); lit(c, "}");
    }
    if (f_next >= 0) {
        alt(c, obj); lit(c, "{"); ref(c, ws); ref(c, f_next); ref(c, ws); lit(c, "}");
    }
done:
    free(names);
    free(name_lens);
    free(schemas);
    free(required);
    free(kv);
    return c->rc ? c->rc : obj;
}

static int32_t array_rule(struct cc *c, const struct eng_json *s)
{
    int64_t min, max;
    if (bounds(c, s, "minItems", "maxItems", &min, &max) != 0)
        return c->rc;
    const struct eng_json *prefix = eng_json_get(s, "prefixItems");
    if (prefix && (prefix->type != ENG_JSON_ARRAY || prefix->len == 0))
        return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "'prefixItems' must be a non-empty array");
    const struct eng_json *items_kw = eng_json_get(s, "items");
    if (items_kw && items_kw->type != ENG_JSON_BOOL && items_kw->type != ENG_JSON_OBJECT)
        return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "'items' must be a schema");
    int32_t item = sub_schema(c, items_kw, ".items"); /* -2: no further items */
    if (c->rc)
        return c->rc;
    size_t k = prefix ? prefix->len : 0;
    if (item == -2 && (max < 0 || max > (int64_t)k))
        max = (int64_t)k;
    if (max >= 0 && min > max)
        return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID,
                       "'minItems' asks for more items than the schema allows");
    if (k == 0)
        return list_rule(c, "[", "]", item, min, max);
    /* Tuples: T(j), after j items (1 <= j <= k), goes on with item j or ends. */
    int32_t ws = ws_rule(c), comma = comma_rule(c);
    int32_t *elem = calloc(k, sizeof *elem);
    if (!elem)
        return set_err(c, ENG_JSON_SCHEMA_ERR_NOMEM, "out of memory");
    size_t j = 0;
    for (const struct eng_json *p = prefix->u.child; p && !c->rc; p = p->next, j++) {
        size_t mark = path_push(c, ".prefixItems[%zu]", j);
        elem[j] = compile(c, p);
        path_pop(c, mark);
    }
    /* T(k): the items after the prefix, each with its comma. */
    int32_t tail;
    int64_t lo = min > (int64_t)k ? min - (int64_t)k : 0, hi = max < 0 ? -1 : max - (int64_t)k;
    if (item >= 0 && hi != 0) {
        int32_t unit = new_rule(c);
        alt(c, unit); ref(c, comma); ref(c, item);
        tail = repeat(c, unit, -1, lo, hi);
    } else {
        tail = new_rule(c);
        alt(c, tail);
    }
    int32_t next = tail;
    for (size_t t = k - 1; t >= 1 && !c->rc; t--) {
        int32_t r = new_rule(c);
        if ((int64_t)t >= min) {
            alt(c, r);
        }
        if (max < 0 || (int64_t)t < max) {
            alt(c, r); ref(c, comma); ref(c, elem[t]); ref(c, next);
        }
        next = r;
    }
    int32_t arr = new_rule(c);
    if (min == 0) {
        alt(c, arr); lit(c, "["); ref(c, ws); lit(c, "]");
    }
    if (max != 0) {
        alt(c, arr); lit(c, "["); ref(c, ws); ref(c, elem[0]); ref(c, next); ref(c, ws); lit(c, "]");
    }
    free(elem);
    return c->rc ? c->rc : arr;
}

/* ---- integers within bounds ----
 * The decimal texts of the integers in [lo, hi]: per digit count, the fixed-width ranges
 * split at the first digit (the usual construction of a range as a grammar), no leading
 * zeros and no "-0". Magnitudes stay within INT_DIGITS_MAX digits, like unbounded integers. */

#define INT_MAGNITUDE_MAX 9999999999999999LL /* INT_DIGITS_MAX nines */

static const char *const bound_kw[] = {"minimum", "maximum", "exclusiveMinimum",
                                       "exclusiveMaximum"};

static bool has_numeric_bounds(const struct eng_json *s)
{
    for (size_t i = 0; i < 4; i++)
        if (eng_json_get(s, bound_kw[i]))
            return true;
    return false;
}

/* Width-w digit strings (leading zeros allowed) from x to y, x <= y. */
static int32_t fixed_range(struct cc *c, const char *x, const char *y, int w)
{
    if (c->rc)
        return c->rc;
    int32_t r;
    if (w == 1) {
        r = new_rule(c);
        alt(c, r); range(c, (uint8_t)x[0], (uint8_t)y[0]);
        return c->rc ? c->rc : r;
    }
    bool x_low = true, y_high = true;
    for (int i = 1; i < w; i++) {
        x_low &= x[i] == '0';
        y_high &= y[i] == '9';
    }
    if (x[0] == y[0] || (x_low && y_high)) {
        /* One first digit (or a full range of them) and the rest. */
        int32_t rest = x[0] == y[0] ? fixed_range(c, x + 1, y + 1, w - 1) : digits(c, w - 1, w - 1);
        r = new_rule(c);
        alt(c, r); range(c, (uint8_t)x[0], (uint8_t)y[0]); ref(c, rest);
        return c->rc ? c->rc : r;
    }
    char nines[INT_DIGITS_MAX + 1], zeros[INT_DIGITS_MAX + 1];
    memset(nines, '9', (size_t)w - 1);
    memset(zeros, '0', (size_t)w - 1);
    int32_t low = fixed_range(c, x + 1, nines, w - 1);
    int32_t mid = y[0] - x[0] >= 2 ? digits(c, w - 1, w - 1) : -1;
    int32_t high = fixed_range(c, zeros, y + 1, w - 1);
    r = new_rule(c);
    alt(c, r); range(c, (uint8_t)x[0], (uint8_t)x[0]); ref(c, low);
    if (mid >= 0) {
        alt(c, r); range(c, (uint8_t)(x[0] + 1), (uint8_t)(y[0] - 1)); ref(c, mid);
    }
    alt(c, r); range(c, (uint8_t)y[0], (uint8_t)y[0]); ref(c, high);
    return c->rc ? c->rc : r;
}

/* Decimal texts without leading zeros of the integers in [a, b], 0 <= a <= b. */
static int32_t magnitude_rule(struct cc *c, int64_t a, int64_t b)
{
    int32_t parts[INT_DIGITS_MAX];
    int n = 0;
    int64_t p10 = 1; /* 10^(L-1) */
    for (int L = 1; L <= INT_DIGITS_MAX && !c->rc; L++, p10 *= 10) {
        int64_t lo = L == 1 ? a : (a > p10 ? a : p10);
        int64_t top = p10 * 10 - 1;
        int64_t hi = b < top ? b : top;
        if (lo > hi)
            continue;
        char xs[24], ys[24];
        snprintf(xs, sizeof xs, "%0*lld", L, (long long)lo);
        snprintf(ys, sizeof ys, "%0*lld", L, (long long)hi);
        parts[n++] = fixed_range(c, xs, ys, L);
    }
    if (c->rc)
        return c->rc;
    int32_t r = new_rule(c);
    for (int i = 0; i < n; i++) {
        alt(c, r);
        ref(c, parts[i]);
    }
    return c->rc ? c->rc : r;
}

/* An integer, within minimum / maximum / exclusiveMinimum / exclusiveMaximum when given
 * (numbers, or draft 4's booleans next to minimum and maximum). */
static int32_t bounded_integer_rule(struct cc *c, const struct eng_json *s)
{
    if (!has_numeric_bounds(s))
        return integer_rule(c);
    double lo = -(double)INT_MAGNITUDE_MAX, hi = (double)INT_MAGNITUDE_MAX;
    for (size_t i = 0; i < 4; i++) {
        const struct eng_json *v = eng_json_get(s, bound_kw[i]);
        if (!v)
            continue;
        bool exclusive = i >= 2, upper = i == 1 || i == 3;
        if (v->type == ENG_JSON_BOOL && exclusive) {
            /* Draft 4: the flag makes minimum (maximum) exclusive. */
            const struct eng_json *m = eng_json_get(s, upper ? "maximum" : "minimum");
            if (!v->b)
                continue;
            if (!m || m->type != ENG_JSON_NUMBER) {
                size_t mark = path_push(c, ".%s", bound_kw[i]);
                set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "true needs a numeric '%s'",
                        upper ? "maximum" : "minimum");
                path_pop(c, mark);
                return c->rc;
            }
            v = m;
        } else if (v->type != ENG_JSON_NUMBER) {
            size_t mark = path_push(c, ".%s", bound_kw[i]);
            set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "must be a number");
            path_pop(c, mark);
            return c->rc;
        }
        double d = v->u.num.d;
        if (!upper) {
            double b = exclusive ? floor(d) + 1 : ceil(d);
            lo = b > lo ? b : lo;
        } else {
            double b = exclusive ? ceil(d) - 1 : floor(d);
            hi = b < hi ? b : hi;
        }
    }
    if (lo > hi)
        return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "no integer (of at most %d digits) lies "
                       "within the bounds", INT_DIGITS_MAX);
    int64_t ilo = (int64_t)lo, ihi = (int64_t)hi;
    int32_t neg = -1, pos = -1;
    if (ihi >= 0)
        pos = magnitude_rule(c, ilo > 0 ? ilo : 0, ihi);
    if (ilo < 0)
        neg = magnitude_rule(c, ihi < 0 ? -ihi : 1, -ilo);
    if (c->rc)
        return c->rc;
    int32_t r = new_rule(c);
    if (pos >= 0) {
        alt(c, r); ref(c, pos);
    }
    if (neg >= 0) {
        alt(c, r); lit(c, "-"); ref(c, neg);
    }
    return c->rc ? c->rc : r;
}

/* Maps a regex error into c (message included). */
static int32_t regex_err(struct cc *c, int rc, const char *msg)
{
    int code = rc == ENG_REGEX_ERR_UNSUPPORTED ? ENG_JSON_SCHEMA_ERR_UNSUPPORTED
             : rc == ENG_REGEX_ERR_TOO_BIG     ? ENG_JSON_SCHEMA_ERR_TOO_BIG
             : rc == ENG_REGEX_ERR_NOMEM       ? ENG_JSON_SCHEMA_ERR_NOMEM
                                               : ENG_JSON_SCHEMA_ERR_INVALID;
    return set_err(c, code, "%s", msg);
}

/* A string whose content matches pattern. JSON Schema's pattern searches (ECMA-262, not
 * anchored): without a leading ^ or a trailing $ any text may come before or after it. */
static int32_t pattern_rule(struct cc *c, const char *re, size_t len)
{
    bool head = len > 0 && re[0] == '^';
    /* A trailing $ anchors unless it is escaped (an odd run of backslashes before it). */
    size_t bs = 0;
    while (len >= 2 + bs && re[len - 2 - bs] == '\\')
        bs++;
    bool tail = len > (size_t)head && re[len - 1] == '$' && bs % 2 == 0;
    size_t body_len = len - (size_t)head - (size_t)tail;
    char *full = malloc(body_len + 32);
    if (!full)
        return set_err(c, ENG_JSON_SCHEMA_ERR_NOMEM, "out of memory");
    size_t n = 0;
    if (!head) {
        memcpy(full + n, "[\\s\\S]*", 7);
        n += 7;
    }
    memcpy(full + n, "(?:", 3);
    n += 3;
    memcpy(full + n, re + head, body_len);
    n += body_len;
    full[n++] = ')';
    if (!tail) {
        memcpy(full + n, "[\\s\\S]*", 7);
        n += 7;
    }
    int32_t chars = -1;
    char msg[256];
    int rc = eng_regex_compile(c->g, full, n, ENG_REGEX_JSON_STRING, &chars, msg, sizeof msg);
    free(full);
    if (rc != 0)
        return regex_err(c, rc, msg);
    int32_t r = new_rule(c);
    alt(c, r); lit(c, "\""); ref(c, chars); lit(c, "\"");
    return c->rc ? c->rc : r;
}

static int32_t type_rule(struct cc *c, const struct eng_json *s, const char *type)
{
    if (strcmp(type, "string") == 0) {
        int64_t min, max;
        if (bounds(c, s, "minLength", "maxLength", &min, &max) != 0)
            return c->rc;
        const struct eng_json *pat = eng_json_get(s, "pattern");
        if (!pat)
            return string_rule(c, min, max);
        size_t mark = path_push(c, ".pattern");
        int32_t r = c->rc;
        if (pat->type != ENG_JSON_STRING)
            set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "must be a string");
        else if (min > 0 || max >= 0)
            set_err(c, ENG_JSON_SCHEMA_ERR_UNSUPPORTED,
                    "'pattern' together with 'minLength' or 'maxLength' is not supported");
        else
            r = pattern_rule(c, pat->u.str, pat->len);
        path_pop(c, mark);
        return c->rc ? c->rc : r;
    }
    if (strcmp(type, "integer") == 0)
        return bounded_integer_rule(c, s);
    if (strcmp(type, "number") == 0) {
        if (has_numeric_bounds(s))
            return set_err(c, ENG_JSON_SCHEMA_ERR_UNSUPPORTED, "bounds on a \"number\" are not "
                           "supported (they are on an \"integer\")");
        return number_rule(c);
    }
    if (strcmp(type, "boolean") == 0)
        return word_rule(c, &c->boolean, "true", "false");
    if (strcmp(type, "null") == 0)
        return word_rule(c, &c->null, "null", NULL);
    if (strcmp(type, "object") == 0)
        return object_rule(c, s);
    if (strcmp(type, "array") == 0)
        return array_rule(c, s);
    return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "unknown type \"%s\"", type);
}

/* rule ::= one alternative per rule in rules */
static int32_t union_rule(struct cc *c, const int32_t *rules, size_t n)
{
    if (n == 1)
        return rules[0];
    int32_t r = new_rule(c);
    for (size_t i = 0; i < n && !c->rc; i++) {
        alt(c, r);
        ref(c, rules[i]);
    }
    return c->rc ? c->rc : r;
}

/* "#", "#/$defs/name", "#/definitions/name" and deeper JSON pointers into the document. */
static const struct eng_json *resolve_ref(struct cc *c, const char *ref)
{
    if (ref[0] != '#')
        return NULL;
    const struct eng_json *v = c->root;
    const char *p = ref + 1;
    char step[256];
    while (v && *p == '/') {
        p++;
        size_t n = 0;
        while (*p && *p != '/') {
            char ch = *p++;
            if (ch == '~' && (*p == '0' || *p == '1'))
                ch = *p++ == '0' ? '~' : '/';
            if (n + 1 >= sizeof step)
                return NULL;
            step[n++] = ch;
        }
        step[n] = '\0';
        v = v->type == ENG_JSON_OBJECT ? eng_json_get(v, step) : NULL;
    }
    return *p == '\0' ? v : NULL;
}

static int32_t ref_rule(struct cc *c, const struct eng_json *refv)
{
    if (refv->type != ENG_JSON_STRING)
        return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "'$ref' must be a string");
    /* Each '$ref' string is compiled once: looked up by name first, so that many uses of
     * one target cost a hash probe each. */
    if (!c->ref_index && !(c->ref_index = calloc(REF_INDEX_SIZE, sizeof *c->ref_index)))
        return set_err(c, ENG_JSON_SCHEMA_ERR_NOMEM, "out of memory");
    uint32_t h = 2166136261u;
    for (const char *p = refv->u.str; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    size_t slot = h & (REF_INDEX_SIZE - 1);
    while (c->ref_index[slot]) {
        const struct ref_entry *e = &c->refs[c->ref_index[slot] - 1];
        if (strcmp(e->name, refv->u.str) == 0)
            return e->rule;
        slot = (slot + 1) & (REF_INDEX_SIZE - 1);
    }
    if (c->n_refs >= REFS_MAX)
        return set_err(c, ENG_JSON_SCHEMA_ERR_TOO_BIG, "too many '$ref' targets");
    const struct eng_json *target = resolve_ref(c, refv->u.str);
    if (!target)
        return set_err(c, ENG_JSON_SCHEMA_ERR_UNSUPPORTED,
                       "'$ref' \"%s\" does not name a schema in this document", refv->u.str);
    if (c->n_refs == c->cap_refs) {
        int32_t cap = c->cap_refs ? 2 * c->cap_refs : 8;
        struct ref_entry *q = realloc(c->refs, (size_t)cap * sizeof *q);
        if (!q)
            return set_err(c, ENG_JSON_SCHEMA_ERR_NOMEM, "out of memory");
        c->refs = q;
        c->cap_refs = cap;
    }
    /* The rule exists before its schema is compiled, so a cycle back to it refers to it. */
    int32_t r = new_rule(c);
    c->refs[c->n_refs++] = (struct ref_entry){refv->u.str, r};
    c->ref_index[slot] = c->n_refs;
    size_t mark = path_push(c, "($ref %s)", refv->u.str);
    int32_t body = compile(c, target);
    path_pop(c, mark);
    alt(c, r);
    ref(c, body);
    return c->rc ? c->rc : r;
}

/* Whether v is an instance of the type keyword t (a name or a list); -1 when t is malformed. */
static int has_type(const struct eng_json *v, const struct eng_json *t)
{
    if (t->type == ENG_JSON_ARRAY) {
        int any = 0;
        for (const struct eng_json *e = t->u.child; e; e = e->next) {
            int r = has_type(v, e);
            if (r < 0 || e->type == ENG_JSON_ARRAY)
                return -1;
            any |= r;
        }
        return any;
    }
    if (t->type != ENG_JSON_STRING)
        return -1;
    static const char *const names[] = {"null", "boolean", "number", "string", "array", "object"};
    const char *name = t->u.str;
    if (strcmp(name, "integer") == 0)
        return v->type == ENG_JSON_NUMBER && v->u.num.d == floor(v->u.num.d);
    return strcmp(name, names[v->type]) == 0;
}

static int32_t compile_node(struct cc *c, const struct eng_json *s);

/* The recursion through subschemas and '$ref' targets is bounded: each target starts a new
 * nesting of its own, so the document's depth limit alone does not bound it. */
static int32_t compile(struct cc *c, const struct eng_json *s)
{
    if (c->rc)
        return c->rc;
    if (c->depth >= SCHEMA_DEPTH_MAX)
        return set_err(c, ENG_JSON_SCHEMA_ERR_TOO_BIG,
                       "schemas nest deeper than %d levels (counting '$ref' targets)",
                       SCHEMA_DEPTH_MAX);
    c->depth++;
    int32_t r = compile_node(c, s);
    c->depth--;
    return r;
}

static int32_t compile_node(struct cc *c, const struct eng_json *s)
{
    if (c->rc)
        return c->rc;
    if (s->type == ENG_JSON_BOOL) {
        if (s->b)
            return value_rule(c);
        return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "the schema false matches nothing");
    }
    if (s->type != ENG_JSON_OBJECT)
        return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "a schema must be an object or a boolean");
    const struct eng_json *refv = NULL, *en = NULL, *cst = NULL, *any = NULL, *all = NULL,
                          *type = NULL;
    const char *combinator = NULL;
    int n_value_kw = 0; /* keywords that constrain the value besides the one in charge */
    for (const struct eng_json *m = s->u.child; m; m = m->next) {
        if (is_annotation(m->key))
            continue;
        if (!is_supported(m->key)) {
            size_t mark = path_push(c, ".%s", m->key);
            set_err(c, ENG_JSON_SCHEMA_ERR_UNSUPPORTED,
                    "the keyword is not supported by structured output");
            path_pop(c, mark);
            return c->rc;
        }
        if (strcmp(m->key, "$ref") == 0)
            refv = m;
        else if (strcmp(m->key, "enum") == 0)
            en = m;
        else if (strcmp(m->key, "const") == 0)
            cst = m;
        else if (strcmp(m->key, "anyOf") == 0 || strcmp(m->key, "oneOf") == 0) {
            if (any)
                return set_err(c, ENG_JSON_SCHEMA_ERR_UNSUPPORTED,
                               "'anyOf' and 'oneOf' together are not supported");
            any = m;
            combinator = m->key;
        } else if (strcmp(m->key, "allOf") == 0)
            all = m;
        else if (strcmp(m->key, "type") == 0)
            type = m;
        else
            n_value_kw++;
    }
    int n_lead = (refv != NULL) + (cst != NULL) + (en != NULL) + (any != NULL) + (all != NULL);
    /* "type" next to const or enum (pydantic writes both) narrows the values. */
    bool typed_literal = (cst || en) && n_lead == 1 && n_value_kw == 0;
    if (n_lead > 1 || (n_lead == 1 && ((type && !typed_literal) || n_value_kw > 0)))
        return set_err(c, ENG_JSON_SCHEMA_ERR_UNSUPPORTED,
                       "'$ref', 'const', 'enum', 'anyOf', 'oneOf' and 'allOf' are supported only "
                       "on their own (with annotations)");
    if (refv)
        return ref_rule(c, refv);
    if (cst || en) {
        if (en && (en->type != ENG_JSON_ARRAY || en->len == 0))
            return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "'enum' must be a non-empty array");
        if (en && en->len > ENUM_MAX)
            return set_err(c, ENG_JSON_SCHEMA_ERR_TOO_BIG, "'enum' lists more than %d values",
                           ENUM_MAX);
        size_t n = en ? en->len : 1;
        const struct eng_json **vals = malloc(n * sizeof *vals);
        if (!vals)
            return set_err(c, ENG_JSON_SCHEMA_ERR_NOMEM, "out of memory");
        size_t i = 0;
        for (const struct eng_json *v = en ? en->u.child : cst; v; v = en ? v->next : NULL) {
            int ok = type ? has_type(v, type) : 1;
            if (ok < 0) {
                free(vals);
                return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "'type' must be a type name or a "
                               "list of them");
            }
            if (ok)
                vals[i++] = v;
        }
        int32_t r = i > 0 ? literal_rule(c, vals, i)
                          : set_err(c, ENG_JSON_SCHEMA_ERR_INVALID,
                                    "no value of '%s' has the schema's 'type'", en ? "enum" : "const");
        free(vals);
        return r;
    }
    if (all) {
        if (all->type != ENG_JSON_ARRAY || all->len != 1)
            return set_err(c, ENG_JSON_SCHEMA_ERR_UNSUPPORTED,
                           "'allOf' is supported with exactly one schema");
        size_t mark = path_push(c, ".allOf[0]");
        int32_t r = compile(c, all->u.child);
        path_pop(c, mark);
        return r;
    }
    if (any) {
        if (any->type != ENG_JSON_ARRAY || any->len == 0)
            return set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "'%s' must be a non-empty array",
                           combinator);
        int32_t *rules = malloc(any->len * sizeof *rules);
        if (!rules)
            return set_err(c, ENG_JSON_SCHEMA_ERR_NOMEM, "out of memory");
        size_t i = 0;
        for (const struct eng_json *v = any->u.child; v && !c->rc; v = v->next, i++) {
            size_t mark = path_push(c, ".%s[%zu]", combinator, i);
            rules[i] = compile(c, v);
            path_pop(c, mark);
        }
        int32_t r = c->rc ? c->rc : union_rule(c, rules, i);
        free(rules);
        return r;
    }
    if (!type) {
        /* No type: what the keywords imply, else any value. */
        static const char *const obj_kw[] = {"properties", "required", "additionalProperties"};
        static const char *const arr_kw[] = {"items", "prefixItems", "minItems", "maxItems"};
        static const char *const str_kw[] = {"minLength", "maxLength", "pattern"};
        for (size_t i = 0; i < 3; i++)
            if (eng_json_get(s, obj_kw[i]))
                return object_rule(c, s);
        for (size_t i = 0; i < 4; i++)
            if (eng_json_get(s, arr_kw[i]))
                return array_rule(c, s);
        for (size_t i = 0; i < 3; i++)
            if (eng_json_get(s, str_kw[i]))
                return type_rule(c, s, "string");
        if (has_numeric_bounds(s))
            return set_err(c, ENG_JSON_SCHEMA_ERR_UNSUPPORTED,
                           "numeric bounds need \"type\": \"integer\"");
        return value_rule(c);
    }
    size_t mark = path_push(c, ".type");
    if (type->type == ENG_JSON_STRING) {
        path_pop(c, mark);
        return type_rule(c, s, type->u.str);
    }
    if (type->type != ENG_JSON_ARRAY || type->len == 0 || type->len > 7) {
        set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "must be a type name or a list of them");
        path_pop(c, mark);
        return c->rc;
    }
    int32_t rules[7];
    const char *names[7];
    size_t i = 0;
    for (const struct eng_json *t = type->u.child; t; t = t->next) {
        bool dup = false;
        for (size_t k = 0; k < i && t->type == ENG_JSON_STRING; k++)
            dup |= strcmp(names[k], t->u.str) == 0;
        if (t->type != ENG_JSON_STRING || dup) {
            set_err(c, ENG_JSON_SCHEMA_ERR_INVALID, "must list distinct type names");
            path_pop(c, mark);
            return c->rc;
        }
        names[i] = t->u.str;
        rules[i++] = type_rule(c, s, t->u.str);
        if (c->rc) {
            path_pop(c, mark);
            return c->rc;
        }
    }
    path_pop(c, mark);
    return union_rule(c, rules, i);
}

/* Finishes c's grammar (root rule 0 built) and checks that a matcher can start; on success
 * *out takes it. Returns c->rc. */
static int finish(struct cc *c, const char *path, struct eng_grammar **out)
{
    if (!c->rc) {
        int rc = eng_grammar_finish(c->g);
        snprintf(c->path, sizeof c->path, "%s", path ? path : "schema");
        if (rc == ENG_GRAMMAR_ERR_RECURSION) {
            set_err(c, ENG_JSON_SCHEMA_ERR_INVALID,
                    "the schema refers to itself without any text in between ('$ref' cycle)");
        } else if (rc == ENG_GRAMMAR_ERR_AMBIGUOUS) {
            set_err(c, ENG_JSON_SCHEMA_ERR_TOO_BIG,
                    "the schema keeps too many alternatives open at once (more than %d)",
                    ENG_GRAMMAR_MAX_STACKS);
        } else if (rc == ENG_GRAMMAR_ERR_UNPRODUCTIVE) {
            set_err(c, ENG_JSON_SCHEMA_ERR_INVALID,
                    "a part of the schema admits no finite value ('$ref' cycle through required "
                    "members)");
        } else if (rc != 0) {
            grammar_err(c, rc);
        }
    }
    if (!c->rc) {
        /* A matcher must be able to start: too many alternatives open at once are refused
         * here rather than when the request is queued. */
        struct eng_grammar_matcher *m = NULL;
        int rc = eng_grammar_matcher_create(c->g, NULL, &m);
        eng_grammar_matcher_destroy(m);
        if (rc == ENG_GRAMMAR_ERR_AMBIGUOUS)
            set_err(c, ENG_JSON_SCHEMA_ERR_TOO_BIG,
                    "the schema keeps too many alternatives open at once");
        else if (rc != 0)
            grammar_err(c, rc);
    }
    free(c->refs);
    free(c->ref_index);
    c->refs = NULL;
    c->ref_index = NULL;
    if (c->rc) {
        eng_grammar_destroy(c->g);
        return c->rc;
    }
    *out = c->g;
    return 0;
}

static void cc_init(struct cc *c, const struct eng_json *root, const char *path, char *err,
                    size_t errlen)
{
    if (errlen > 0)
        err[0] = '\0';
    *c = (struct cc){.root = root, .err = err, .errlen = errlen, .ws = -1, .value = -1,
                     .string = -1, .chr = -1, .number = -1, .integer = -1, .boolean = -1,
                     .null = -1, .object_any = -1, .array_any = -1};
    snprintf(c->path, sizeof c->path, "%s", path ? path : "schema");
}

int eng_json_schema_compile(const struct eng_json *schema, const char *path,
                            struct eng_grammar **out, char *err, size_t errlen)
{
    if (!out)
        return ENG_JSON_SCHEMA_ERR_INVALID;
    *out = NULL;
    struct cc c;
    cc_init(&c, schema, path, err, errlen);
    if (eng_grammar_create(&c.g) != 0)
        return ENG_JSON_SCHEMA_ERR_NOMEM;
    /* root ::= ws value, with value the schema's (or any object). */
    int32_t root = new_rule(&c);
    int32_t v = schema ? compile(&c, schema) : object_any_rule(&c);
    int32_t ws = ws_rule(&c);
    alt(&c, root);
    ref(&c, ws);
    ref(&c, v);
    return finish(&c, path, out);
}

int eng_json_schema_compile_tools(const struct eng_tool_schema *tools, size_t n_tools,
                                  bool allow_content, bool parallel, const char *path,
                                  struct eng_grammar **out, char *err, size_t errlen)
{
    if (!out)
        return ENG_JSON_SCHEMA_ERR_INVALID;
    *out = NULL;
    struct cc c;
    cc_init(&c, NULL, path, err, errlen);
    if (!tools || n_tools == 0)
        return set_err(&c, ENG_JSON_SCHEMA_ERR_INVALID, "no tools");
    if (eng_grammar_create(&c.g) != 0)
        return ENG_JSON_SCHEMA_ERR_NOMEM;
    int32_t root = new_rule(&c);
    /* One rule per tool: {"name": "NAME", "arguments": VALUE}. Each parameters schema is its
     * own document for '$ref' (refs resolve from it, and its targets are its own). */
    int32_t call = new_rule(&c);
    for (size_t t = 0; t < n_tools && !c.rc; t++) {
        c.root = tools[t].parameters;
        c.n_refs = 0; /* each tool's '$ref's are its own */
        if (c.ref_index)
            memset(c.ref_index, 0, REF_INDEX_SIZE * sizeof *c.ref_index);
        size_t mark = path_push(&c, "[%zu].function.parameters", t);
        int32_t args = tools[t].parameters ? compile(&c, tools[t].parameters) : object_any_rule(&c);
        path_pop(&c, mark);
        char *name;
        size_t name_len;
        if (eng_json_write_string(tools[t].name, strlen(tools[t].name), &name, &name_len) != 0) {
            set_err(&c, ENG_JSON_SCHEMA_ERR_NOMEM, "out of memory");
            break;
        }
        int32_t one = new_rule(&c);
        alt(&c, one);
        lit(&c, "{\"name\": ");
        lit_n(&c, name, name_len);
        lit(&c, ", \"arguments\": ");
        ref(&c, args);
        free(name);
        lit(&c, "}");
        alt(&c, call);
        ref(&c, one);
    }
    /* {"tool_calls": [CALL(, CALL)*]} with the separators fixed, so that a stream can be
     * read back without a JSON parser's whitespace rules; or {"content": STRING}. */
    int32_t more = -1;
    if (parallel) {
        int32_t sep = new_rule(&c);
        alt(&c, sep);
        lit(&c, ", ");
        ref(&c, call);
        more = repeat(&c, sep, -1, 0, -1);
    }
    int32_t str = allow_content ? string_rule(&c, 0, -1) : -1;
    alt(&c, root);
    lit(&c, "{\"tool_calls\": [");
    ref(&c, call);
    if (more >= 0)
        ref(&c, more);
    lit(&c, "]}");
    if (allow_content) {
        alt(&c, root);
        lit(&c, "{\"content\": ");
        ref(&c, str);
        lit(&c, "}");
    }
    return finish(&c, path, out);
}

int eng_regex_grammar(const char *re, size_t len, struct eng_grammar **out, char *err,
                      size_t errlen)
{
    if (!out || (!re && len > 0))
        return ENG_JSON_SCHEMA_ERR_INVALID;
    *out = NULL;
    struct cc c;
    cc_init(&c, NULL, "regex", err, errlen);
    if (eng_grammar_create(&c.g) != 0)
        return ENG_JSON_SCHEMA_ERR_NOMEM;
    int32_t root = new_rule(&c), body = -1;
    char msg[256];
    int rc = eng_regex_compile(c.g, re, len, 0, &body, msg, sizeof msg);
    if (rc != 0) {
        regex_err(&c, rc, msg);
    } else {
        alt(&c, root);
        ref(&c, body);
    }
    return finish(&c, "regex", out);
}

int eng_choice_grammar(const char *const *choices, const size_t *lens, size_t n,
                       struct eng_grammar **out, char *err, size_t errlen)
{
    if (!out)
        return ENG_JSON_SCHEMA_ERR_INVALID;
    *out = NULL;
    struct cc c;
    cc_init(&c, NULL, "choice", err, errlen);
    if (!choices || !lens || n == 0)
        return set_err(&c, ENG_JSON_SCHEMA_ERR_INVALID, "no choices");
    if (eng_grammar_create(&c.g) != 0)
        return ENG_JSON_SCHEMA_ERR_NOMEM;
    int32_t root = new_rule(&c);
    struct text *t = calloc(n, sizeof *t);
    if (!t)
        set_err(&c, ENG_JSON_SCHEMA_ERR_NOMEM, "out of memory");
    for (size_t i = 0; t && i < n && !c.rc; i++) {
        if (lens[i] == 0)
            set_err(&c, ENG_JSON_SCHEMA_ERR_INVALID, "a choice is empty");
        t[i] = (struct text){choices[i], lens[i]};
    }
    int32_t body = c.rc ? c.rc : literals_rule(&c, t, n);
    free(t);
    alt(&c, root);
    ref(&c, body);
    return finish(&c, "choice", out);
}
