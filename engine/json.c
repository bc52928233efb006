/* The strict JSON reader (see json.h): recursive descent bounded by a depth limit, one bump
 * arena per document with a byte budget, and a path stack so every error names where it
 * happened. It does not print JSON, never trusts a NUL terminator and ignores the locale. */
#include "json.h"

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_BLOCK_MIN (64u * 1024u)
#define ARENA_ALIGN 16u

struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    _Alignas(ARENA_ALIGN) unsigned char data[];
};

struct eng_json_doc {
    struct arena_block *blocks; /* newest first */
    size_t charged;             /* bytes charged against the budget */
    size_t budget;
    struct eng_json root;
};

/* One step of the path to the value being parsed: an object key or an array index. */
struct path_frame {
    const char *key; /* NULL for an array index */
    size_t key_len;
    size_t index;
};

struct parser {
    const unsigned char *s;
    size_t n, pos;
    int max_depth;
    struct eng_json_doc *doc;
    struct eng_json_error *err;
    struct path_frame *path; /* [max_depth + 1] */
    int path_len;
    bool over_budget; /* the last failed arena_alloc hit the budget, not malloc */
    locale_t c_locale; /* numbers are read in the C locale, whatever the process uses */
};

/* ---- arena ---- */

static void *arena_alloc(struct parser *ps, size_t size)
{
    struct eng_json_doc *doc = ps->doc;
    size = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (size > doc->budget || doc->charged > doc->budget - size) {
        ps->over_budget = true;
        return NULL;
    }
    struct arena_block *b = doc->blocks;
    if (b == NULL || b->cap - b->used < size) {
        size_t cap = size > ARENA_BLOCK_MIN ? size : ARENA_BLOCK_MIN;
        b = malloc(sizeof(*b) + cap);
        if (b == NULL)
            return NULL;
        b->next = doc->blocks;
        b->used = 0;
        b->cap = cap;
        doc->blocks = b;
    }
    void *p = b->data + b->used;
    b->used += size;
    doc->charged += size;
    return p;
}

/* Gives back the tail of the most recent allocation p (of old_size bytes), keeping new_size. */
static void arena_shrink_last(struct parser *ps, void *p, size_t old_size, size_t new_size)
{
    struct arena_block *b = ps->doc->blocks;
    old_size = (old_size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    new_size = (new_size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (b != NULL && (unsigned char *)p + old_size == b->data + b->used) {
        b->used -= old_size - new_size;
        ps->doc->charged -= old_size - new_size;
    }
}

/* ---- errors ---- */

/* The longest prefix of s[0..len) of at most max bytes that does not split a UTF-8 sequence
 * (s is valid UTF-8: decoded keys always are). */
static size_t utf8_prefix(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/* Appends s[0..len) to buf (cap bytes, NUL-terminated), cut on a UTF-8 boundary. */
static void append(char *buf, size_t cap, size_t *used, const char *s, size_t len)
{
    size_t k = utf8_prefix(s, len, cap - 1 - *used);
    memcpy(buf + *used, s, k);
    *used += k;
    buf[*used] = '\0';
}

static void render_path(const struct parser *ps, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < ps->path_len; i++) {
        const struct path_frame *f = &ps->path[i];
        if (f->key != NULL) {
            if (i > 0)
                append(buf, cap, &used, ".", 1);
            append(buf, cap, &used, f->key, utf8_prefix(f->key, f->key_len, ENG_JSON_KEY_MAX - 1));
        } else {
            char idx[32];
            int w = snprintf(idx, sizeof(idx), "[%zu]", f->index);
            append(buf, cap, &used, idx, w > 0 ? (size_t)w : 0);
        }
    }
}

static int fail(struct parser *ps, int code, const char *what)
{
    struct eng_json_error *e = ps->err;
    e->code = code;
    e->offset = ps->pos;
    render_path(ps, e->path, sizeof(e->path));
    e->key[0] = '\0';
    if (ps->path_len > 0 && ps->path[ps->path_len - 1].key != NULL) {
        const struct path_frame *f = &ps->path[ps->path_len - 1];
        size_t k = utf8_prefix(f->key, f->key_len, sizeof(e->key) - 1);
        memcpy(e->key, f->key, k);
        e->key[k] = '\0';
    }
    if (code == ENG_JSON_ERR_NO_MEMORY)
        what = "out of memory";
    else if (code == ENG_JSON_ERR_TOO_COMPLEX)
        what = "the values need more memory than the budget allows";
    else if (code == ENG_JSON_ERR_SYNTAX && ps->pos < ps->n && ps->s[ps->pos] == 0)
        what = "unexpected NUL byte"; /* the most useful thing to say about a binary file */
    snprintf(e->message, sizeof(e->message), "%s", what);
    return code;
}

/* Arena exhaustion is either the budget (the input's doing) or malloc (ours). */
static int fail_alloc(struct parser *ps)
{
    return fail(ps, ps->over_budget ? ENG_JSON_ERR_TOO_COMPLEX : ENG_JSON_ERR_NO_MEMORY, NULL);
}

/* ---- UTF-8 ---- */

size_t eng_utf8_seq_len(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    /* Well-formed sequences per the Unicode standard, Table 3-7: the second byte's range depends
     * on the lead byte, which excludes overlong forms, surrogates and code points > U+10FFFF. */
    unsigned char lo = 0x80, hi = 0xBF;
    size_t len;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

static size_t utf8_encode(uint32_t cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- lexing ---- */

static void skip_ws(struct parser *ps)
{
    while (ps->pos < ps->n) {
        unsigned char c = ps->s[ps->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        ps->pos++;
    }
}

static int hex4(const unsigned char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int d = eng_hex_digit(s[i]);
        if (d < 0)
            return -1;
        v = v * 16 + (uint32_t)d;
    }
    *out = v;
    return 0;
}

/* Reads a \uXXXX escape whose backslash is at ps->pos; on success ps->pos is past it. */
static int read_u_escape(struct parser *ps, uint32_t *cp)
{
    if (ps->n - ps->pos < 6 || ps->s[ps->pos + 1] != 'u' || hex4(ps->s + ps->pos + 2, cp) != 0)
        return fail(ps, ENG_JSON_ERR_SYNTAX, "malformed \\u escape in a string");
    ps->pos += 6;
    return 0;
}

/* Stores k bytes of decoded string; dst is NULL while an unterminated string is only checked. */
static void put(unsigned char *dst, size_t *len, const void *src, size_t k)
{
    if (dst != NULL)
        memcpy(dst + *len, src, k);
    *len += k;
}

/* Parses the string whose opening quote is at ps->pos into a NUL-terminated arena copy. */
static int parse_string(struct parser *ps, const char **out, size_t *out_len)
{
    size_t start = ++ps->pos;
    /* First pass: find the closing quote, so the decoded copy (never longer) can be sized. */
    size_t end = start;
    while (end < ps->n && ps->s[end] != '"')
        end += ps->s[end] == '\\' ? 2 : 1;
    /* An unterminated string is still decoded (into nothing) up to the end of the input, so a
     * bad escape or bad UTF-8 before the cut is reported as what it is. */
    bool closed = end < ps->n;
    if (!closed)
        end = ps->n;
    size_t cap = end - start + 1;
    unsigned char *dst = NULL;
    if (closed && (dst = arena_alloc(ps, cap)) == NULL)
        return fail_alloc(ps);
    size_t len = 0;
    while (ps->pos < end) {
        unsigned char c = ps->s[ps->pos];
        if (c == '\\') {
            if (ps->pos + 1 >= end)
                break; /* a backslash as the last byte of the input */
            unsigned char e = ps->s[ps->pos + 1];
            const char *simple = strchr("\"\\/bfnrt", e);
            if (e != 0 && simple != NULL) {
                static const char map[] = "\"\\/\b\f\n\r\t";
                put(dst, &len, &map[simple - "\"\\/bfnrt"], 1);
                ps->pos += 2;
                continue;
            }
            if (e != 'u')
                return fail(ps, ENG_JSON_ERR_SYNTAX, "invalid escape in a string");
            uint32_t cp;
            size_t esc = ps->pos; /* errors about the code point point at its escape */
            if (read_u_escape(ps, &cp) != 0)
                return ps->err->code;
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                ps->pos = esc;
                return fail(ps, ENG_JSON_ERR_SYNTAX, "lone low surrogate \\u escape in a string");
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (ps->pos >= end || ps->s[ps->pos] != '\\' || read_u_escape(ps, &lo) != 0 ||
                    lo < 0xDC00 || lo > 0xDFFF) {
                    ps->pos = esc;
                    return fail(ps, ENG_JSON_ERR_SYNTAX,
                                "high surrogate \\u escape without a low surrogate in a string");
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) {
                ps->pos = esc;
                return fail(ps, ENG_JSON_ERR_SYNTAX, "NUL character (\\u0000) in a string");
            }
            unsigned char enc[4];
            put(dst, &len, enc, utf8_encode(cp, enc));
        } else if (c < 0x20) {
            return fail(ps, ENG_JSON_ERR_SYNTAX, "raw control character in a string");
        } else if (c < 0x80) {
            put(dst, &len, &c, 1);
            ps->pos++;
        } else {
            size_t k = eng_utf8_seq_len(ps->s + ps->pos, end - ps->pos);
            if (k == 0)
                return fail(ps, ENG_JSON_ERR_SYNTAX, "string is not valid UTF-8");
            put(dst, &len, ps->s + ps->pos, k);
            ps->pos += k;
        }
    }
    if (!closed) {
        ps->pos = ps->n;
        return fail(ps, ENG_JSON_ERR_SYNTAX, "unterminated string");
    }
    /* A \u escape read by read_u_escape may not run past the closing quote: the first pass
     * would have treated an escaped quote as content, so the decoder stops exactly at end. */
    dst[len] = '\0';
    arena_shrink_last(ps, dst, cap, len + 1);
    ps->pos = end + 1;
    *out = (const char *)dst;
    *out_len = len;
    return 0;
}

static int parse_number(struct parser *ps, struct eng_json *v)
{
    size_t start = ps->pos, i = ps->pos;
    const unsigned char *s = ps->s;
    bool is_int = true;
    if (i < ps->n && s[i] == '-')
        i++;
    if (i >= ps->n || s[i] < '0' || s[i] > '9')
        return fail(ps, ENG_JSON_ERR_SYNTAX, "invalid number");
    if (s[i] == '0') {
        i++;
    } else {
        while (i < ps->n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i < ps->n && s[i] == '.') {
        is_int = false;
        i++;
        if (i >= ps->n || s[i] < '0' || s[i] > '9')
            return fail(ps, ENG_JSON_ERR_SYNTAX, "invalid number");
        while (i < ps->n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i < ps->n && (s[i] == 'e' || s[i] == 'E')) {
        is_int = false;
        i++;
        if (i < ps->n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= ps->n || s[i] < '0' || s[i] > '9')
            return fail(ps, ENG_JSON_ERR_SYNTAX, "invalid number");
        while (i < ps->n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    size_t len = i - start;
    if (len > ENG_JSON_NUMBER_MAX_CHARS)
        return fail(ps, ENG_JSON_ERR_SYNTAX, "number literal too long");
    char buf[ENG_JSON_NUMBER_MAX_CHARS + 1];
    memcpy(buf, s + start, len);
    buf[len] = '\0';
    /* Plain strtod follows LC_NUMERIC (a German locale would stop at the '.'); strtod_l in the
     * C locale gives the correctly rounded double of the literal, on any thread. */
    double d = strtod_l(buf, NULL, ps->c_locale);
    if (!isfinite(d))
        return fail(ps, ENG_JSON_ERR_SYNTAX, "number out of range");
    int64_t iv = 0;
    if (is_int) {
        /* Exact int64 from the digits; literals beyond the int64 range keep only d. */
        bool neg = buf[0] == '-';
        uint64_t mag = 0, limit = neg ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
        for (size_t k = neg ? 1 : 0; k < len && is_int; k++) {
            uint64_t digit = (uint64_t)(buf[k] - '0');
            if (mag > (limit - digit) / 10)
                is_int = false;
            else
                mag = mag * 10 + digit;
        }
        if (is_int)
            iv = neg ? (mag == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
    }
    v->type = ENG_JSON_NUMBER;
    v->is_int = is_int;
    v->u.num.d = d;
    v->u.num.i = iv;
    ps->pos = i;
    return 0;
}

/* ---- structure ---- */

static int parse_value(struct parser *ps, struct eng_json *v, int depth);

static int key_cmp(const void *a, const void *b)
{
    const struct eng_json *x = *(const struct eng_json *const *)a;
    const struct eng_json *y = *(const struct eng_json *const *)b;
    if (x->key_len != y->key_len)
        return x->key_len < y->key_len ? -1 : 1;
    return memcmp(x->key, y->key, x->key_len);
}

static int report_duplicate(struct parser *ps, const struct eng_json *m)
{
    ps->path[ps->path_len++] = (struct path_frame){m->key, m->key_len, 0};
    return fail(ps, ENG_JSON_ERR_DUPLICATE_KEY, "duplicate key in an object");
}

/* Rejects an object with the same key twice. Small objects compare pairwise; large ones sort a
 * temporary array of members, so an input with a million keys costs n log n, not n squared. */
static int check_duplicates(struct parser *ps, struct eng_json *obj)
{
    size_t n = obj->len;
    if (n <= 16) {
        for (const struct eng_json *a = obj->u.child; a != NULL; a = a->next)
            for (const struct eng_json *b = a->next; b != NULL; b = b->next)
                if (a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0)
                    return report_duplicate(ps, b);
        return 0;
    }
    size_t bytes = n * sizeof(struct eng_json *); /* n <= input length, so no overflow */
    struct eng_json_doc *doc = ps->doc;
    if (bytes > doc->budget || doc->charged > doc->budget - bytes)
        return fail(ps, ENG_JSON_ERR_TOO_COMPLEX, NULL);
    struct eng_json **tmp = malloc(bytes);
    if (tmp == NULL)
        return fail(ps, ENG_JSON_ERR_NO_MEMORY, NULL);
    size_t k = 0;
    for (struct eng_json *m = obj->u.child; m != NULL; m = m->next)
        tmp[k++] = m;
    qsort(tmp, n, sizeof(*tmp), key_cmp);
    int rc = 0;
    for (size_t i = 1; i < n && rc == 0; i++)
        if (key_cmp(&tmp[i - 1], &tmp[i]) == 0)
            rc = report_duplicate(ps, tmp[i]);
    free(tmp);
    return rc;
}

static int parse_object(struct parser *ps, struct eng_json *v, int depth)
{
    v->type = ENG_JSON_OBJECT;
    v->len = 0;
    v->u.child = NULL;
    struct eng_json **tail = &v->u.child;
    ps->pos++; /* '{' */
    skip_ws(ps);
    if (ps->pos < ps->n && ps->s[ps->pos] == '}') {
        ps->pos++;
        return 0;
    }
    for (;;) {
        skip_ws(ps);
        if (ps->pos >= ps->n || ps->s[ps->pos] != '"')
            return fail(ps, ENG_JSON_ERR_SYNTAX, "expected a string key in an object");
        const char *key;
        size_t key_len;
        int rc = parse_string(ps, &key, &key_len);
        if (rc != 0)
            return rc;
        if (key_len > UINT32_MAX)
            return fail(ps, ENG_JSON_ERR_SYNTAX, "object key too long");
        skip_ws(ps);
        if (ps->pos >= ps->n || ps->s[ps->pos] != ':')
            return fail(ps, ENG_JSON_ERR_SYNTAX, "expected ':' after an object key");
        ps->pos++;
        struct eng_json *m = arena_alloc(ps, sizeof(*m));
        if (m == NULL)
            return fail_alloc(ps);
        memset(m, 0, sizeof(*m));
        m->key = key;
        m->key_len = (uint32_t)key_len;
        ps->path[ps->path_len++] = (struct path_frame){key, key_len, 0};
        rc = parse_value(ps, m, depth);
        if (rc != 0)
            return rc;
        ps->path_len--;
        *tail = m;
        tail = &m->next;
        v->len++;
        skip_ws(ps);
        if (ps->pos < ps->n && ps->s[ps->pos] == ',') {
            ps->pos++;
            continue;
        }
        if (ps->pos < ps->n && ps->s[ps->pos] == '}') {
            ps->pos++;
            return check_duplicates(ps, v);
        }
        return fail(ps, ENG_JSON_ERR_SYNTAX, "expected ',' or '}' in an object");
    }
}

static int parse_array(struct parser *ps, struct eng_json *v, int depth)
{
    v->type = ENG_JSON_ARRAY;
    v->len = 0;
    v->u.child = NULL;
    struct eng_json **tail = &v->u.child;
    ps->pos++; /* '[' */
    skip_ws(ps);
    if (ps->pos < ps->n && ps->s[ps->pos] == ']') {
        ps->pos++;
        return 0;
    }
    for (;;) {
        struct eng_json *e = arena_alloc(ps, sizeof(*e));
        if (e == NULL)
            return fail_alloc(ps);
        memset(e, 0, sizeof(*e));
        ps->path[ps->path_len++] = (struct path_frame){NULL, 0, v->len};
        int rc = parse_value(ps, e, depth);
        if (rc != 0)
            return rc;
        ps->path_len--;
        *tail = e;
        tail = &e->next;
        v->len++;
        skip_ws(ps);
        if (ps->pos < ps->n && ps->s[ps->pos] == ',') {
            ps->pos++;
            continue;
        }
        if (ps->pos < ps->n && ps->s[ps->pos] == ']') {
            ps->pos++;
            return 0;
        }
        return fail(ps, ENG_JSON_ERR_SYNTAX, "expected ',' or ']' in an array");
    }
}

static int parse_literal(struct parser *ps, struct eng_json *v, const char *word, uint8_t type,
                         bool b)
{
    size_t len = strlen(word);
    if (ps->n - ps->pos < len || memcmp(ps->s + ps->pos, word, len) != 0)
        return fail(ps, ENG_JSON_ERR_SYNTAX, "invalid literal");
    ps->pos += len;
    v->type = type;
    v->b = b;
    return 0;
}

/* depth: containers already open around v. */
static int parse_value(struct parser *ps, struct eng_json *v, int depth)
{
    skip_ws(ps);
    if (ps->pos >= ps->n)
        return fail(ps, ENG_JSON_ERR_SYNTAX, "unexpected end of the input");
    unsigned char c = ps->s[ps->pos];
    switch (c) {
    case '{':
    case '[':
        if (depth >= ps->max_depth)
            return fail(ps, ENG_JSON_ERR_TOO_DEEP, "nesting deeper than the limit");
        return c == '{' ? parse_object(ps, v, depth + 1) : parse_array(ps, v, depth + 1);
    case '"': {
        const char *str;
        size_t len;
        int rc = parse_string(ps, &str, &len);
        if (rc != 0)
            return rc;
        v->type = ENG_JSON_STRING;
        v->u.str = str;
        v->len = len;
        return 0;
    }
    case 't': return parse_literal(ps, v, "true", ENG_JSON_BOOL, true);
    case 'f': return parse_literal(ps, v, "false", ENG_JSON_BOOL, false);
    case 'n': return parse_literal(ps, v, "null", ENG_JSON_NULL, false);
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return parse_number(ps, v);
        return fail(ps, ENG_JSON_ERR_SYNTAX, "unexpected character");
    }
}

int eng_json_parse(const char *text, size_t len, const struct eng_json_opts *opts,
                   struct eng_json_doc **out, struct eng_json_error *err)
{
    *out = NULL;
    int max_depth = opts != NULL && opts->max_depth > 0 ? opts->max_depth : ENG_JSON_DEPTH_DEFAULT;
    if (max_depth > ENG_JSON_DEPTH_CEILING)
        max_depth = ENG_JSON_DEPTH_CEILING;
    size_t budget = opts != NULL ? opts->max_bytes : 0;
    if (budget == 0)
        budget = len > (SIZE_MAX - (256u << 10)) / 16 ? SIZE_MAX : len * 16 + (256u << 10);

    struct parser ps = {
        .s = (const unsigned char *)text, .n = len, .pos = 0, .max_depth = max_depth,
        .err = err, .path_len = 0,
    };
    ps.doc = calloc(1, sizeof(*ps.doc));
    ps.path = calloc((size_t)max_depth + 1, sizeof(*ps.path));
    ps.c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    int rc;
    if (ps.doc == NULL || ps.path == NULL || ps.c_locale == (locale_t)0) {
        rc = fail(&ps, ENG_JSON_ERR_NO_MEMORY, NULL);
        goto out;
    }
    ps.doc->budget = budget;
    /* A UTF-8 byte-order mark is tolerated, as most JSON readers do. */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        ps.pos = 3;
    skip_ws(&ps);
    if (ps.pos >= len) {
        rc = fail(&ps, ENG_JSON_ERR_SYNTAX, "the input is empty");
    } else {
        rc = parse_value(&ps, &ps.doc->root, 0);
        if (rc == 0) {
            skip_ws(&ps);
            if (ps.pos != len)
                rc = fail(&ps, ENG_JSON_ERR_SYNTAX, "trailing bytes after the JSON value");
        }
    }
out:
    if (ps.c_locale != (locale_t)0)
        freelocale(ps.c_locale);
    free(ps.path);
    if (rc != 0) {
        eng_json_free(ps.doc);
        return rc;
    }
    *out = ps.doc;
    return 0;
}

const struct eng_json *eng_json_root(const struct eng_json_doc *doc) { return &doc->root; }

size_t eng_json_bytes(const struct eng_json_doc *doc) { return doc->charged; }

void eng_json_free(struct eng_json_doc *doc)
{
    if (doc == NULL)
        return;
    struct arena_block *b = doc->blocks;
    while (b != NULL) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(doc);
}

const struct eng_json *eng_json_get(const struct eng_json *obj, const char *key)
{
    if (obj == NULL || obj->type != ENG_JSON_OBJECT)
        return NULL;
    size_t len = strlen(key);
    for (const struct eng_json *m = obj->u.child; m != NULL; m = m->next)
        if (m->key_len == len && memcmp(m->key, key, len) == 0)
            return m;
    return NULL;
}
