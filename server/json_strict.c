/* The strict JSON parser of request bodies (see json_strict.h): recursive descent bounded by a
 * depth limit, one bump arena per document with a byte budget, and a path stack so every
 * error names where it happened. It does not print JSON and never trusts a NUL terminator. */
#include "json_strict.h"

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

struct srv_json_doc {
    struct arena_block *blocks; /* newest first */
    size_t charged;             /* bytes charged against the budget */
    size_t budget;
    struct srv_json root;
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
    struct srv_json_doc *doc;
    struct srv_error *err;
    struct path_frame *path; /* [max_depth + 1] */
    int path_len;
    bool over_budget; /* the last failed arena_alloc hit the budget, not malloc */
};

/* ---- arena ---- */

static void *arena_alloc(struct parser *ps, size_t size)
{
    struct srv_json_doc *doc = ps->doc;
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

static void render_path(const struct parser *ps, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < ps->path_len && len + 1 < cap; i++) {
        const struct path_frame *f = &ps->path[i];
        int w;
        if (f->key != NULL) {
            int klen = f->key_len > 128 ? 128 : (int)f->key_len;
            w = snprintf(buf + len, cap - len, "%s%.*s", i > 0 ? "." : "", klen, f->key);
        } else {
            w = snprintf(buf + len, cap - len, "[%zu]", f->index);
        }
        if (w < 0)
            break;
        len += (size_t)w;
        if (len >= cap) {
            len = cap - 1;
            break;
        }
    }
}

static int fail(struct parser *ps, int code, const char *what)
{
    char path[SRV_ERROR_PARAM_MAX * 2];
    render_path(ps, path, sizeof(path));
    if (code == SRV_ERR_NO_MEMORY || code == SRV_ERR_JSON_TOO_COMPLEX)
        return srv_error_set(ps->err, code, path[0] ? path : NULL, NULL);
    return srv_error_set(ps->err, code, path[0] ? path : NULL, "%s (at byte %zu of the body).", what,
                         ps->pos);
}

/* Arena exhaustion is either the budget (the client's doing) or malloc (ours). */
static int fail_alloc(struct parser *ps)
{
    return fail(ps, ps->over_budget ? SRV_ERR_JSON_TOO_COMPLEX : SRV_ERR_NO_MEMORY, NULL);
}

/* ---- UTF-8 ---- */

size_t srv_utf8_seq_len(const unsigned char *s, size_t n)
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
        unsigned char c = s[i];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (uint32_t)(c - 'A' + 10);
        else
            return -1;
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

/* Reads a \uXXXX escape whose backslash is at ps->pos; on success ps->pos is past it. */
static int read_u_escape(struct parser *ps, uint32_t *cp)
{
    if (ps->n - ps->pos < 6 || ps->s[ps->pos + 1] != 'u' || hex4(ps->s + ps->pos + 2, cp) != 0)
        return fail(ps, SRV_ERR_INVALID_JSON, "Invalid \\u escape in a string");
    ps->pos += 6;
    return 0;
}

/* Parses the string whose opening quote is at ps->pos into a NUL-terminated arena copy. */
static int parse_string(struct parser *ps, const char **out, size_t *out_len)
{
    size_t start = ++ps->pos;
    /* First pass: find the closing quote, so the decoded copy (never longer) can be sized. */
    size_t end = start;
    while (end < ps->n && ps->s[end] != '"')
        end += ps->s[end] == '\\' ? 2 : 1;
    if (end >= ps->n) {
        ps->pos = ps->n;
        return fail(ps, SRV_ERR_INVALID_JSON, "Unterminated string");
    }
    size_t cap = end - start + 1;
    unsigned char *dst = arena_alloc(ps, cap);
    if (dst == NULL)
        return fail_alloc(ps);
    size_t len = 0;
    while (ps->pos < end) {
        unsigned char c = ps->s[ps->pos];
        if (c == '\\') {
            unsigned char e = ps->s[ps->pos + 1];
            const char *simple = strchr("\"\\/bfnrt", e);
            if (e != 0 && simple != NULL) {
                static const char map[] = "\"\\/\b\f\n\r\t";
                dst[len++] = (unsigned char)map[simple - "\"\\/bfnrt"];
                ps->pos += 2;
                continue;
            }
            if (e != 'u')
                return fail(ps, SRV_ERR_INVALID_JSON, "Invalid escape in a string");
            uint32_t cp;
            if (read_u_escape(ps, &cp) != 0)
                return ps->err->code;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return fail(ps, SRV_ERR_INVALID_JSON, "Lone low surrogate \\u escape in a string");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (ps->pos >= end || ps->s[ps->pos] != '\\' || read_u_escape(ps, &lo) != 0 ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return fail(ps, SRV_ERR_INVALID_JSON,
                                "High surrogate \\u escape without a low surrogate in a string");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0)
                return fail(ps, SRV_ERR_INVALID_JSON, "\\u0000 is not allowed in a string");
            len += utf8_encode(cp, dst + len);
        } else if (c < 0x20) {
            return fail(ps, SRV_ERR_INVALID_JSON, "Raw control character in a string");
        } else if (c < 0x80) {
            dst[len++] = c;
            ps->pos++;
        } else {
            size_t k = srv_utf8_seq_len(ps->s + ps->pos, end - ps->pos);
            if (k == 0)
                return fail(ps, SRV_ERR_INVALID_JSON, "Invalid UTF-8 in a string");
            memcpy(dst + len, ps->s + ps->pos, k);
            len += k;
            ps->pos += k;
        }
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

static int parse_number(struct parser *ps, struct srv_json *v)
{
    size_t start = ps->pos, i = ps->pos;
    const unsigned char *s = ps->s;
    bool is_int = true;
    if (i < ps->n && s[i] == '-')
        i++;
    if (i >= ps->n || s[i] < '0' || s[i] > '9')
        return fail(ps, SRV_ERR_INVALID_JSON, "Invalid number");
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
            return fail(ps, SRV_ERR_INVALID_JSON, "Invalid number");
        while (i < ps->n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i < ps->n && (s[i] == 'e' || s[i] == 'E')) {
        is_int = false;
        i++;
        if (i < ps->n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= ps->n || s[i] < '0' || s[i] > '9')
            return fail(ps, SRV_ERR_INVALID_JSON, "Invalid number");
        while (i < ps->n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    size_t len = i - start;
    if (len > SRV_JSON_NUMBER_MAX_CHARS)
        return fail(ps, SRV_ERR_INVALID_JSON, "Number literal too long");
    char buf[SRV_JSON_NUMBER_MAX_CHARS + 1];
    memcpy(buf, s + start, len);
    buf[len] = '\0';
    /* strtod follows LC_NUMERIC; the server never calls setlocale, so '.' is the separator. */
    double d = strtod(buf, NULL);
    if (!isfinite(d))
        return fail(ps, SRV_ERR_INVALID_JSON, "Number out of range");
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
    v->type = SRV_JSON_NUMBER;
    v->is_int = is_int;
    v->u.num.d = d;
    v->u.num.i = iv;
    ps->pos = i;
    return 0;
}

/* ---- structure ---- */

static int parse_value(struct parser *ps, struct srv_json *v, int depth);

static int key_cmp(const void *a, const void *b)
{
    const struct srv_json *x = *(const struct srv_json *const *)a;
    const struct srv_json *y = *(const struct srv_json *const *)b;
    if (x->key_len != y->key_len)
        return x->key_len < y->key_len ? -1 : 1;
    return memcmp(x->key, y->key, x->key_len);
}

static int report_duplicate(struct parser *ps, const struct srv_json *m)
{
    ps->path[ps->path_len++] = (struct path_frame){m->key, m->key_len, 0};
    return fail(ps, SRV_ERR_DUPLICATE_KEY, "Duplicate key in an object");
}

/* Rejects an object with the same key twice. Small objects compare pairwise; large ones sort a
 * temporary array of members, so a body with a million keys costs n log n, not n squared. */
static int check_duplicates(struct parser *ps, struct srv_json *obj)
{
    size_t n = obj->len;
    if (n <= 16) {
        for (const struct srv_json *a = obj->u.child; a != NULL; a = a->next)
            for (const struct srv_json *b = a->next; b != NULL; b = b->next)
                if (a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0)
                    return report_duplicate(ps, b);
        return 0;
    }
    size_t bytes = n * sizeof(struct srv_json *); /* n <= body length, so no overflow */
    struct srv_json_doc *doc = ps->doc;
    if (bytes > doc->budget || doc->charged > doc->budget - bytes)
        return fail(ps, SRV_ERR_JSON_TOO_COMPLEX, NULL);
    struct srv_json **tmp = malloc(bytes);
    if (tmp == NULL)
        return fail(ps, SRV_ERR_NO_MEMORY, NULL);
    size_t k = 0;
    for (struct srv_json *m = obj->u.child; m != NULL; m = m->next)
        tmp[k++] = m;
    qsort(tmp, n, sizeof(*tmp), key_cmp);
    int rc = 0;
    for (size_t i = 1; i < n && rc == 0; i++)
        if (key_cmp(&tmp[i - 1], &tmp[i]) == 0)
            rc = report_duplicate(ps, tmp[i]);
    free(tmp);
    return rc;
}

static int parse_object(struct parser *ps, struct srv_json *v, int depth)
{
    v->type = SRV_JSON_OBJECT;
    v->len = 0;
    v->u.child = NULL;
    struct srv_json **tail = &v->u.child;
    ps->pos++; /* '{' */
    skip_ws(ps);
    if (ps->pos < ps->n && ps->s[ps->pos] == '}') {
        ps->pos++;
        return 0;
    }
    for (;;) {
        skip_ws(ps);
        if (ps->pos >= ps->n || ps->s[ps->pos] != '"')
            return fail(ps, SRV_ERR_INVALID_JSON, "Expected a string key in an object");
        const char *key;
        size_t key_len;
        int rc = parse_string(ps, &key, &key_len);
        if (rc != 0)
            return rc;
        if (key_len > UINT32_MAX)
            return fail(ps, SRV_ERR_INVALID_JSON, "Object key too long");
        skip_ws(ps);
        if (ps->pos >= ps->n || ps->s[ps->pos] != ':')
            return fail(ps, SRV_ERR_INVALID_JSON, "Expected ':' after an object key");
        ps->pos++;
        struct srv_json *m = arena_alloc(ps, sizeof(*m));
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
        return fail(ps, SRV_ERR_INVALID_JSON, "Expected ',' or '}' in an object");
    }
}

static int parse_array(struct parser *ps, struct srv_json *v, int depth)
{
    v->type = SRV_JSON_ARRAY;
    v->len = 0;
    v->u.child = NULL;
    struct srv_json **tail = &v->u.child;
    ps->pos++; /* '[' */
    skip_ws(ps);
    if (ps->pos < ps->n && ps->s[ps->pos] == ']') {
        ps->pos++;
        return 0;
    }
    for (;;) {
        struct srv_json *e = arena_alloc(ps, sizeof(*e));
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
        return fail(ps, SRV_ERR_INVALID_JSON, "Expected ',' or ']' in an array");
    }
}

static int parse_literal(struct parser *ps, struct srv_json *v, const char *word, uint8_t type, bool b)
{
    size_t len = strlen(word);
    if (ps->n - ps->pos < len || memcmp(ps->s + ps->pos, word, len) != 0)
        return fail(ps, SRV_ERR_INVALID_JSON, "Invalid literal");
    ps->pos += len;
    v->type = type;
    v->b = b;
    return 0;
}

/* depth: containers already open around v. */
static int parse_value(struct parser *ps, struct srv_json *v, int depth)
{
    skip_ws(ps);
    if (ps->pos >= ps->n)
        return fail(ps, SRV_ERR_INVALID_JSON, "Unexpected end of the body");
    unsigned char c = ps->s[ps->pos];
    switch (c) {
    case '{':
    case '[':
        if (depth >= ps->max_depth)
            return fail(ps, SRV_ERR_JSON_TOO_DEEP, "Nesting deeper than the limit");
        return c == '{' ? parse_object(ps, v, depth + 1) : parse_array(ps, v, depth + 1);
    case '"': {
        const char *str;
        size_t len;
        int rc = parse_string(ps, &str, &len);
        if (rc != 0)
            return rc;
        v->type = SRV_JSON_STRING;
        v->u.str = str;
        v->len = len;
        return 0;
    }
    case 't': return parse_literal(ps, v, "true", SRV_JSON_BOOL, true);
    case 'f': return parse_literal(ps, v, "false", SRV_JSON_BOOL, false);
    case 'n': return parse_literal(ps, v, "null", SRV_JSON_NULL, false);
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return parse_number(ps, v);
        return fail(ps, SRV_ERR_INVALID_JSON, "Unexpected character");
    }
}

int srv_json_parse(const char *body, size_t len, const struct srv_json_opts *opts,
                   struct srv_json_doc **out, struct srv_error *err)
{
    *out = NULL;
    int max_depth = opts != NULL && opts->max_depth > 0 ? opts->max_depth : SRV_JSON_DEPTH_DEFAULT;
    if (max_depth > SRV_JSON_DEPTH_CEILING)
        max_depth = SRV_JSON_DEPTH_CEILING;
    size_t budget = opts != NULL ? opts->max_bytes : 0;
    if (budget == 0)
        budget = len > (SIZE_MAX - (256u << 10)) / 16 ? SIZE_MAX : len * 16 + (256u << 10);

    struct srv_json_doc *doc = calloc(1, sizeof(*doc));
    struct path_frame *path = calloc((size_t)max_depth + 1, sizeof(*path));
    if (doc == NULL || path == NULL) {
        free(doc);
        free(path);
        return srv_error_set(err, SRV_ERR_NO_MEMORY, NULL, NULL);
    }
    doc->budget = budget;
    struct parser ps = {
        .s = (const unsigned char *)body, .n = len, .pos = 0, .max_depth = max_depth,
        .doc = doc, .err = err, .path = path, .path_len = 0,
    };
    /* A UTF-8 byte-order mark is tolerated, as cJSON and most servers do. */
    if (len >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0)
        ps.pos = 3;
    int rc;
    skip_ws(&ps);
    if (ps.pos >= len) {
        rc = fail(&ps, SRV_ERR_INVALID_JSON, "The body is empty");
    } else {
        rc = parse_value(&ps, &doc->root, 0);
        if (rc == 0) {
            skip_ws(&ps);
            if (ps.pos != len)
                rc = fail(&ps, SRV_ERR_INVALID_JSON, "Unexpected data after the JSON value");
        }
    }
    free(path);
    if (rc != 0) {
        srv_json_free(doc);
        return rc;
    }
    *out = doc;
    return 0;
}

const struct srv_json *srv_json_root(const struct srv_json_doc *doc) { return &doc->root; }

size_t srv_json_bytes(const struct srv_json_doc *doc) { return doc->charged; }

void srv_json_free(struct srv_json_doc *doc)
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

const struct srv_json *srv_json_get(const struct srv_json *obj, const char *key)
{
    if (obj == NULL || obj->type != SRV_JSON_OBJECT)
        return NULL;
    size_t len = strlen(key);
    for (const struct srv_json *m = obj->u.child; m != NULL; m = m->next)
        if (m->key_len == len && memcmp(m->key, key, len) == 0)
            return m;
    return NULL;
}
