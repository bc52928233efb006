/* Tests engine/json.c: the strict JSON reader of request bodies and model files (reliability
 * catalogue group B) — every rejection with its error code, JSON path, key, offset and reason,
 * exact numbers in any locale, decoding, the depth limit and the memory budget. */
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#include "../test_util.h"

static const char *code_name(int code)
{
    switch (code) {
    case 0: return "OK";
    case ENG_JSON_ERR_SYNTAX: return "SYNTAX";
    case ENG_JSON_ERR_DUPLICATE_KEY: return "DUPLICATE_KEY";
    case ENG_JSON_ERR_TOO_DEEP: return "TOO_DEEP";
    case ENG_JSON_ERR_TOO_COMPLEX: return "TOO_COMPLEX";
    case ENG_JSON_ERR_NO_MEMORY: return "NO_MEMORY";
    }
    return "?";
}

struct bad_case {
    const char *body;
    size_t len; /* 0: strlen(body) */
    int code;
    const char *path; /* expected err.path */
};

/* Bodies that must be refused, with the error and the path each must name. */
static const struct bad_case bad_cases[] = {
    /* B1: empty and whitespace-only */
    {"", 0, ENG_JSON_ERR_SYNTAX, ""},
    {"   \n\t ", 0, ENG_JSON_ERR_SYNTAX, ""},
    /* B2/B3: truncation, trailing garbage, two objects, raw NUL after the object (A11) */
    {"{\"a\":1", 0, ENG_JSON_ERR_SYNTAX, ""},
    {"{\"a\":", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":1}xyz", 0, ENG_JSON_ERR_SYNTAX, ""},
    {"{}{}", 0, ENG_JSON_ERR_SYNTAX, ""},
    {"{\"model\":\"m\"}\0{\"n\":1000}", 25, ENG_JSON_ERR_SYNTAX, ""},
    {"{\"a\":[1,2,]}", 0, ENG_JSON_ERR_SYNTAX, "a[2]"},
    {"{\"a\":1,}", 0, ENG_JSON_ERR_SYNTAX, ""},
    {"{'a':1}", 0, ENG_JSON_ERR_SYNTAX, ""},
    {"{\"a\" 1}", 0, ENG_JSON_ERR_SYNTAX, ""},
    {"[1 2]", 0, ENG_JSON_ERR_SYNTAX, ""},
    {"{\"a\":tru}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":nul}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":undefined}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":NaN}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":Infinity}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    /* B4: a lone backslash at the end of a string / of the body */
    {"{\"a\":\"x\\", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":\"x\\\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    /* B6: bad \u escapes */
    {"{\"a\":\"\\uZZZZ\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":\"\\u12\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":\"\\u", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":\"\\x41\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    /* B7: lone and mis-paired surrogates */
    {"{\"a\":\"\\uD800\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":\"\\uDC00\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":\"\\uD800\\u0041\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":\"\\uD800x\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":\"\\uDBFF\\uDBFF\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":\"\\uD800\\n\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    /* B8: \u0000 anywhere, keys included */
    {"{\"messages\":[{\"content\":\"a\\u0000b\"}]}", 0, ENG_JSON_ERR_SYNTAX, "messages[0].content"},
    {"{\"a\\u0000\":1}", 0, ENG_JSON_ERR_SYNTAX, ""},
    /* B9: invalid UTF-8 in raw strings */
    {"{\"messages\":[{\"content\":\"\xC0\xAF\"}]}", 0, ENG_JSON_ERR_SYNTAX, "messages[0].content"},
    {"{\"messages\":[{\"content\":\"\xED\xA0\x80\"}]}", 0, ENG_JSON_ERR_SYNTAX, "messages[0].content"},
    {"{\"messages\":[{\"content\":\"\xF5\x80\x80\x80\"}]}", 0, ENG_JSON_ERR_SYNTAX, "messages[0].content"},
    {"{\"messages\":[{\"content\":\"\xE2\x82\"}]}", 0, ENG_JSON_ERR_SYNTAX, "messages[0].content"},
    {"{\"a\":\"\xF4\x90\x80\x80\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},      /* U+110000 */
    {"{\"a\":\"\xE0\x80\xAF\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},          /* overlong 3-byte */
    {"{\"a\":\"\xF0\x80\x80\xAF\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},      /* overlong 4-byte */
    {"{\"a\":\"\x80\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},                  /* stray continuation */
    {"{\"a\":\"\xFF\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"\xC3\":1}", 0, ENG_JSON_ERR_SYNTAX, ""},                       /* in a key */
    {"{\"a\":1}\xC3", 0, ENG_JSON_ERR_SYNTAX, ""},                      /* outside strings */
    /* B10: raw control characters in strings */
    {"{\"a\":\"x\x01y\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":\"line\nbreak\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":\"tab\there\"}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    /* B12: duplicate keys, at the top, nested, and in a large object (the sorted path) */
    {"{\"max_tokens\":1,\"max_tokens\":100000}", 0, ENG_JSON_ERR_DUPLICATE_KEY, "max_tokens"},
    {"{\"messages\":[{\"role\":\"user\",\"role\":\"system\"}]}", 0, ENG_JSON_ERR_DUPLICATE_KEY,
     "messages[0].role"},
    {"{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,"
     "\"k10\":0,\"k11\":1,\"k12\":2,\"k13\":3,\"k14\":4,\"k15\":5,\"k16\":6,\"k7\":7}",
     0, ENG_JSON_ERR_DUPLICATE_KEY, "k7"},
    /* An escaped spelling of the same key is the same key. */
    {"{\"n\":1,\"\\u006e\":2}", 0, ENG_JSON_ERR_DUPLICATE_KEY, "n"},
    /* Numbers: JSON grammar and overflow to inf */
    {"{\"max_tokens\":1e999}", 0, ENG_JSON_ERR_SYNTAX, "max_tokens"},
    {"{\"a\":-1e400}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":01}", 0, ENG_JSON_ERR_SYNTAX, ""},
    {"{\"a\":+1}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":.5}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":1.}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":1e}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":-}", 0, ENG_JSON_ERR_SYNTAX, "a"},
    {"{\"a\":0x10}", 0, ENG_JSON_ERR_SYNTAX, ""},
};

static void test_bad_cases(void)
{
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *c = &bad_cases[i];
        size_t len = c->len ? c->len : strlen(c->body);
        struct eng_json_doc *doc = (struct eng_json_doc *)1;
        struct eng_json_error err;
        int rc = eng_json_parse(c->body, len, NULL, &doc, &err);
        CHECK(rc == c->code && err.code == c->code, "case %zu: rc %s, want %s (%s)", i,
              code_name(rc), code_name(c->code), err.message);
        CHECK(doc == NULL, "case %zu: doc not NULL on error", i);
        if (rc != 0)
            CHECK(strcmp(err.path, c->path) == 0, "case %zu: path '%s', want '%s'", i, err.path,
                  c->path);
        if (rc == 0)
            eng_json_free(doc);
    }
}

static struct eng_json_doc *parse_ok(const char *body, size_t len)
{
    struct eng_json_doc *doc = NULL;
    struct eng_json_error err;
    int rc = eng_json_parse(body, len, NULL, &doc, &err);
    CHECK(rc == 0, "parse of %.60s failed: %s %s (%s)", body, code_name(rc), err.message, err.path);
    return rc == 0 ? doc : NULL;
}

static void test_values(void)
{
    const char *body =
        "\xEF\xBB\xBF {\"i\":9007199254740993,\"min\":-9223372036854775808,"
        "\"big\":9223372036854775808,\"f\":1.5,\"e\":1e3,\"neg0\":-0,\"tiny\":1e-999,"
        "\"s\":\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\xE2\x82\xAC\",\"t\":true,"
        "\"fa\":false,\"nu\":null,\"arr\":[1,[2,{}],[]],\"Case\":1,\"case\":2,\"\":3} ";
    struct eng_json_doc *doc = parse_ok(body, strlen(body));
    if (doc == NULL)
        return;
    const struct eng_json *r = eng_json_root(doc);
    CHECK(r->type == ENG_JSON_OBJECT && r->len == 15, "root type %d len %zu", r->type, r->len);
    const struct eng_json *v = eng_json_get(r, "i");
    CHECK(v && v->is_int && v->u.num.i == 9007199254740993LL, "exact int above 2^53");
    v = eng_json_get(r, "min");
    CHECK(v && v->is_int && v->u.num.i == INT64_MIN, "INT64_MIN");
    v = eng_json_get(r, "big");
    CHECK(v && !v->is_int && v->u.num.d == 9223372036854775808.0, "2^63 is not an int64");
    v = eng_json_get(r, "f");
    CHECK(v && !v->is_int && v->u.num.d == 1.5, "1.5");
    v = eng_json_get(r, "e");
    CHECK(v && !v->is_int && v->u.num.d == 1000.0, "1e3");
    v = eng_json_get(r, "neg0");
    CHECK(v && v->is_int && v->u.num.i == 0, "-0");
    v = eng_json_get(r, "tiny");
    CHECK(v && v->u.num.d == 0.0, "underflow is 0, not an error");
    v = eng_json_get(r, "s");
    const char *want = "a\"\\/\b\f\n\r\t\xC3\xA9\xF0\x9F\x98\x80\xE2\x82\xAC";
    CHECK(v && v->type == ENG_JSON_STRING && v->len == strlen(want) && memcmp(v->u.str, want, v->len) == 0 &&
              v->u.str[v->len] == '\0',
          "decoded string");
    CHECK(eng_json_get(r, "t")->b && !eng_json_get(r, "fa")->b, "booleans");
    CHECK(eng_json_get(r, "nu")->type == ENG_JSON_NULL, "null");
    v = eng_json_get(r, "arr");
    CHECK(v && v->len == 3 && v->u.child->u.num.i == 1 && v->u.child->next->len == 2 &&
              v->u.child->next->next->len == 0,
          "nested arrays");
    /* Look-ups are case-sensitive (B13; cJSON_GetObjectItem is not). */
    CHECK(eng_json_get(r, "Case")->u.num.i == 1 && eng_json_get(r, "case")->u.num.i == 2, "case");
    CHECK(eng_json_get(r, "CASE") == NULL, "no case folding");
    CHECK(eng_json_get(r, "")->u.num.i == 3, "empty key");
    CHECK(eng_json_get(v, "x") == NULL && eng_json_get(NULL, "x") == NULL, "get on non-objects");
    eng_json_free(doc);

    /* Scalars are values too (the request layer rejects non-objects, B1). */
    const char *scalars[] = {"null", "42", "\"str\"", "[]", "true"};
    for (size_t i = 0; i < 5; i++) {
        doc = parse_ok(scalars[i], strlen(scalars[i]));
        eng_json_free(doc);
    }
    /* Input is not read past len: a prefix of a longer buffer parses alone. */
    doc = parse_ok("{\"a\":1}GARBAGE", 7);
    eng_json_free(doc);
}

static char *nested(int depth, const char *inner)
{
    size_t n = (size_t)depth * 2 + strlen(inner) + 1;
    char *s = malloc(n);
    if (s == NULL)
        abort();
    memset(s, '[', (size_t)depth);
    strcpy(s + depth, inner);
    memset(s + depth + strlen(inner), ']', (size_t)depth);
    s[n - 1] = '\0';
    return s;
}

/* B5: depth 127 and 128 pass, 129 and 100000 fail without exhausting the stack. */
static void test_depth(void)
{
    int depths[] = {1, 127, 128, 129, 100000};
    for (size_t i = 0; i < 5; i++) {
        char *s = nested(depths[i], "0");
        struct eng_json_doc *doc = NULL;
        struct eng_json_error err;
        int rc = eng_json_parse(s, strlen(s), NULL, &doc, &err);
        int want = depths[i] <= ENG_JSON_DEPTH_DEFAULT ? 0 : ENG_JSON_ERR_TOO_DEEP;
        CHECK(rc == want, "depth %d: %s", depths[i], code_name(rc));
        if (rc == ENG_JSON_ERR_TOO_DEEP)
            CHECK(strncmp(err.path, "[0][0][0]", 9) == 0, "depth path '%s'", err.path);
        eng_json_free(doc);
        free(s);
    }
    /* A custom limit, and objects count like arrays. */
    struct eng_json_opts opts = {.max_depth = 3};
    struct eng_json_doc *doc = NULL;
    struct eng_json_error err;
    const char *ok3 = "{\"a\":{\"b\":[1]}}", *bad4 = "{\"a\":{\"b\":[{}]}}";
    CHECK(eng_json_parse(ok3, strlen(ok3), &opts, &doc, &err) == 0, "depth 3 of 3");
    eng_json_free(doc);
    CHECK(eng_json_parse(bad4, strlen(bad4), &opts, &doc, &err) == ENG_JSON_ERR_TOO_DEEP &&
              strcmp(err.path, "a.b[0]") == 0,
          "depth 4 of 3: %s at '%s'", code_name(err.code), err.path);
}

/* B14: 8 MiB of [0,0,...] in an ignored field exceeds the 16x budget: refused, not built. */
static void test_budget(void)
{
    size_t n = 4u << 20; /* values */
    size_t len = 2 * n + 16;
    char *s = malloc(len);
    if (s == NULL)
        abort();
    size_t k = 0;
    k += (size_t)sprintf(s, "{\"foo\":[");
    for (size_t i = 0; i < n; i++) {
        s[k++] = '0';
        s[k++] = ',';
    }
    s[k - 1] = ']';
    s[k++] = '}';
    struct eng_json_doc *doc = NULL;
    struct eng_json_error err;
    int rc = eng_json_parse(s, k, NULL, &doc, &err);
    CHECK(rc == ENG_JSON_ERR_TOO_COMPLEX, "8 MiB of zeros: %s", code_name(rc));
    eng_json_free(doc);

    /* The same shape, smaller, fits; and its memory stays within the budget. */
    const size_t small = 1000;
    k = (size_t)sprintf(s, "{\"foo\":[");
    for (size_t i = 0; i < small; i++) {
        s[k++] = '7';
        s[k++] = ',';
    }
    s[k - 1] = ']';
    s[k++] = '}';
    rc = eng_json_parse(s, k, NULL, &doc, &err);
    CHECK(rc == 0, "small array: %s", code_name(rc));
    if (rc == 0) {
        CHECK(eng_json_root(doc)->u.child->len == small, "small array length");
        CHECK(eng_json_bytes(doc) <= 16 * k + (256u << 10), "bytes %zu", eng_json_bytes(doc));
    }
    eng_json_free(doc);

    /* An explicit tiny budget. */
    struct eng_json_opts opts = {.max_bytes = 256};
    const char *body = "{\"a\":\"0123456789012345678901234567890123456789\",\"b\":[1,2,3,4,5,6,7,8]}";
    CHECK(eng_json_parse(body, strlen(body), &opts, &doc, &err) == ENG_JSON_ERR_TOO_COMPLEX,
          "tiny budget");
    free(s);
}

/* B2: every strict prefix of a valid body is refused (and nothing crashes under ASan). */
static void test_truncation(void)
{
    const char *body = "{\"model\":\"phi-3\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
                       "\"text\",\"text\":\"h\\u00e9llo \\uD83D\\uDE00 \xE2\x82\xAC\"}]}],"
                       "\"max_tokens\":-12.5e-3,\"stop\":[\"a\"],\"stream\":false,\"x\":null}";
    size_t len = strlen(body);
    struct eng_json_doc *doc = NULL;
    struct eng_json_error err;
    CHECK(eng_json_parse(body, len, NULL, &doc, &err) == 0, "full body: %s", err.message);
    eng_json_free(doc);
    for (size_t cut = 0; cut < len; cut++) {
        char *copy = malloc(cut ? cut : 1); /* exact size: ASan catches any read past it */
        if (copy == NULL)
            abort();
        memcpy(copy, body, cut);
        int rc = eng_json_parse(copy, cut, NULL, &doc, &err);
        CHECK(rc == ENG_JSON_ERR_SYNTAX, "prefix of %zu bytes: %s", cut, code_name(rc));
        CHECK(doc == NULL, "prefix %zu: doc", cut);
        free(copy);
    }
}

static void test_utf8_seq_len(void)
{
    struct {
        const char *s;
        size_t want;
    } cases[] = {
        {"A", 1}, {"\xC2\x80", 2}, {"\xDF\xBF", 2}, {"\xE0\xA0\x80", 3}, {"\xED\x9F\xBF", 3},
        {"\xEE\x80\x80", 3}, {"\xF0\x90\x80\x80", 4}, {"\xF4\x8F\xBF\xBF", 4},
        {"\xC1\xBF", 0}, {"\xE0\x9F\xBF", 0}, {"\xED\xA0\x80", 0}, {"\xED\xBF\xBF", 0},
        {"\xF0\x8F\xBF\xBF", 0}, {"\xF4\x90\x80\x80", 0}, {"\xF8\x88\x80\x80\x80", 0},
        {"\xC2", 0}, {"\xE2\x82", 0}, {"\xBF", 0}, {"\xC2\x41", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t got = eng_utf8_seq_len((const unsigned char *)cases[i].s, strlen(cases[i].s));
        CHECK(got == cases[i].want, "utf8 case %zu: %zu, want %zu", i, got, cases[i].want);
    }
    CHECK(eng_utf8_seq_len((const unsigned char *)"x", 0) == 0, "empty input");
}

/* A walk over s: true when it is all valid UTF-8. */
static int valid_utf8(const char *s)
{
    size_t n = strlen(s), i = 0;
    while (i < n) {
        size_t k = eng_utf8_seq_len((const unsigned char *)s + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

struct detail_case {
    const char *body;
    size_t len; /* 0: strlen(body) */
    int code;
    const char *path, *key;
    size_t offset;
    const char *reason; /* a substring of err.message */
};

/* What callers build their messages from: path, key, offset and a reason that names the rule. */
static const struct detail_case detail_cases[] = {
    {"{\"k\":1,\"k\":2}", 0, ENG_JSON_ERR_DUPLICATE_KEY, "k", "k", 13, "duplicate key"},
    {"{\"a\":{\"b\":[{\"c\":1,\"c\":2}]}}", 0, ENG_JSON_ERR_DUPLICATE_KEY, "a.b[0].c", "c", 24,
     "duplicate key"},
    {"{\"a\":[1,\"x\\u0000\"]}", 0, ENG_JSON_ERR_SYNTAX, "a[1]", "", 10, "NUL character (\\u0000)"},
    {"{\"a\":\"\\uD800\\u0041\"}", 0, ENG_JSON_ERR_SYNTAX, "a", "a", 6, "high surrogate"},
    {"{\"a\":\"\\uZZZZ\"}", 0, ENG_JSON_ERR_SYNTAX, "a", "a", 6, "malformed \\u escape"},
    /* An unterminated string still reports the first real problem before the cut. */
    {"{\"a\":\"xy\\u12", 0, ENG_JSON_ERR_SYNTAX, "a", "a", 8, "malformed \\u escape"},
    {"{\"a\":\"ok", 0, ENG_JSON_ERR_SYNTAX, "a", "a", 8, "unterminated string"},
    {"{\"a\":\"\xC3(\"}", 0, ENG_JSON_ERR_SYNTAX, "a", "a", 6, "not valid UTF-8"},
    {"{\"a\":\"x\ty\"}", 0, ENG_JSON_ERR_SYNTAX, "a", "a", 7, "raw control character"},
    {"{\"a\":1} x", 0, ENG_JSON_ERR_SYNTAX, "", "", 8, "trailing bytes"},
    {"{\"a\":1}\0", 8, ENG_JSON_ERR_SYNTAX, "", "", 7, "unexpected NUL byte"},
    {"{\0}", 3, ENG_JSON_ERR_SYNTAX, "", "", 1, "unexpected NUL byte"},
    {" \n ", 0, ENG_JSON_ERR_SYNTAX, "", "", 3, "empty"},
    {"[[1]]", 0, ENG_JSON_ERR_TOO_DEEP, "[0]", "", 1, "nesting deeper"},
    {"{\"a\":1e400}", 0, ENG_JSON_ERR_SYNTAX, "a", "a", 5, "number out of range"},
};

static void test_error_details(void)
{
    struct eng_json_opts depth1 = {.max_depth = 1};
    for (size_t i = 0; i < sizeof(detail_cases) / sizeof(detail_cases[0]); i++) {
        const struct detail_case *c = &detail_cases[i];
        size_t len = c->len ? c->len : strlen(c->body);
        struct eng_json_doc *doc = NULL;
        struct eng_json_error err;
        memset(&err, 0x55, sizeof(err)); /* every field must be written */
        int rc = eng_json_parse(c->body, len, c->code == ENG_JSON_ERR_TOO_DEEP ? &depth1 : NULL,
                                &doc, &err);
        CHECK(rc == c->code && err.code == c->code, "detail %zu: %s", i, code_name(rc));
        if (rc != c->code) {
            eng_json_free(doc);
            continue;
        }
        CHECK(strcmp(err.path, c->path) == 0, "detail %zu: path '%s', want '%s'", i, err.path, c->path);
        CHECK(strcmp(err.key, c->key) == 0, "detail %zu: key '%s', want '%s'", i, err.key, c->key);
        CHECK(err.offset == c->offset, "detail %zu: offset %zu, want %zu", i, err.offset, c->offset);
        CHECK(strstr(err.message, c->reason) != NULL, "detail %zu: message '%s', want '%s'", i,
              err.message, c->reason);
    }

    /* Long keys are cut to ENG_JSON_KEY_MAX - 1 bytes on a UTF-8 boundary, in key and path alike,
     * so "path equals key" still tells a member of the root object. */
    char body[1024];
    size_t k = 0;
    k += (size_t)sprintf(body, "{\"");
    char key[512];
    size_t kl = 0;
    key[kl++] = 'x';
    for (int i = 0; i < 100; i++) {
        key[kl++] = '\xC3';
        key[kl++] = '\xA9'; /* e acute */
    }
    key[kl] = '\0';
    k += (size_t)sprintf(body + k, "%s\":1,\"%s\":2}", key, key);
    struct eng_json_doc *doc = NULL;
    struct eng_json_error err;
    int rc = eng_json_parse(body, k, NULL, &doc, &err);
    CHECK(rc == ENG_JSON_ERR_DUPLICATE_KEY, "long duplicate key: %s", code_name(rc));
    CHECK(strlen(err.key) == 127 && memcmp(err.key, key, 127) == 0 && valid_utf8(err.key),
          "long key cut: %zu bytes", strlen(err.key));
    CHECK(strcmp(err.path, err.key) == 0, "long top-level key: path '%s'", err.path);

    /* A deep path is cut to ENG_JSON_PATH_MAX - 1 bytes, again without splitting a character. */
    struct eng_json_opts deep = {.max_depth = 400};
    size_t n = 0, cap = 400 * 8 + 16;
    char *s = malloc(cap);
    if (s == NULL)
        abort();
    for (int i = 0; i < 300; i++)
        n += (size_t)sprintf(s + n, "{\"\xC3\xA9\":");
    n += (size_t)sprintf(s + n, "tru");
    rc = eng_json_parse(s, n, &deep, &doc, &err);
    CHECK(rc == ENG_JSON_ERR_SYNTAX, "deep path: %s", code_name(rc));
    CHECK(strlen(err.path) < ENG_JSON_PATH_MAX && strlen(err.path) >= ENG_JSON_PATH_MAX - 4 &&
              valid_utf8(err.path) && strncmp(err.path, "\xC3\xA9.\xC3\xA9.", 6) == 0,
          "deep path cut: %zu bytes", strlen(err.path));
    CHECK(strcmp(err.key, "\xC3\xA9") == 0, "deep path key '%s'", err.key);
    free(s);
}

/* Tricky literals: each must give exactly the double that strtod gives in the C locale. */
static const char *const exact_literals[] = {
    "0.1", "1e23", "8.98846567431158e307", "2.2250738585072011e-308", "4.9406564584124654e-324",
    "1.7976931348623157e308", "0.30000000000000004", "-123.456e-7", "9007199254740993.0",
    "123456789012345678901234567890", "3.0517578125e-05", "1.00000000000000011102230246251565",
};

static void check_literals(const double *want, const char *where)
{
    for (size_t i = 0; i < sizeof(exact_literals) / sizeof(exact_literals[0]); i++) {
        struct eng_json_doc *doc = NULL;
        struct eng_json_error err;
        int rc = eng_json_parse(exact_literals[i], strlen(exact_literals[i]), NULL, &doc, &err);
        CHECK(rc == 0, "%s: %s: %s", where, exact_literals[i], err.message);
        if (rc != 0)
            continue;
        double got = eng_json_root(doc)->u.num.d;
        CHECK(memcmp(&got, &want[i], sizeof(got)) == 0, "%s: %s read as %.17g, strtod says %.17g",
              where, exact_literals[i], got, want[i]);
        eng_json_free(doc);
    }
}

/* Numbers are read as strtod reads them in the C locale, whatever locale the process runs in. */
static void test_number_locale(void)
{
    double want[sizeof(exact_literals) / sizeof(exact_literals[0])];
    setlocale(LC_ALL, "C");
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        want[i] = strtod(exact_literals[i], NULL);
    check_literals(want, "C locale");

    /* A locale whose decimal separator is ',' makes plain strtod stop at the '.'. */
    static const char *const comma_locales[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8",
                                                "fr_FR.utf8", "nl_NL.UTF-8", "ru_RU.UTF-8"};
    const char *used = NULL;
    for (size_t i = 0; i < sizeof(comma_locales) / sizeof(comma_locales[0]) && used == NULL; i++)
        if (setlocale(LC_ALL, comma_locales[i]) != NULL && strcmp(localeconv()->decimal_point, ",") == 0)
            used = comma_locales[i];
    if (used == NULL) {
        printf("test_json: no locale with a ',' decimal separator installed; locale part not run\n");
    } else {
        CHECK(strtod("1.5", NULL) == 1.0, "%s: plain strtod should stop at '.'", used);
        check_literals(want, used);
    }
    setlocale(LC_ALL, "C");
}

int main(void)
{
    test_bad_cases();
    test_values();
    test_depth();
    test_budget();
    test_truncation();
    test_utf8_seq_len();
    test_error_details();
    test_number_locale();
    return tu_finish("test_json");
}
