/* Tests server/json_strict.c: the strict JSON parser of request bodies (reliability catalogue
 * group B) — every rejection with its error code and JSON path, exact numbers, decoding, the
 * depth limit and the memory budget. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_strict.h"

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

struct bad_case {
    const char *body;
    size_t len; /* 0: strlen(body) */
    int code;
    const char *path; /* expected err.param */
};

/* Bodies that must be refused, with the error and the path each must name. */
static const struct bad_case bad_cases[] = {
    /* B1: empty and whitespace-only */
    {"", 0, SRV_ERR_INVALID_JSON, ""},
    {"   \n\t ", 0, SRV_ERR_INVALID_JSON, ""},
    /* B2/B3: truncation, trailing garbage, two objects, raw NUL after the object (A11) */
    {"{\"a\":1", 0, SRV_ERR_INVALID_JSON, ""},
    {"{\"a\":", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":1}xyz", 0, SRV_ERR_INVALID_JSON, ""},
    {"{}{}", 0, SRV_ERR_INVALID_JSON, ""},
    {"{\"model\":\"m\"}\0{\"n\":1000}", 25, SRV_ERR_INVALID_JSON, ""},
    {"{\"a\":[1,2,]}", 0, SRV_ERR_INVALID_JSON, "a[2]"},
    {"{\"a\":1,}", 0, SRV_ERR_INVALID_JSON, ""},
    {"{'a':1}", 0, SRV_ERR_INVALID_JSON, ""},
    {"{\"a\" 1}", 0, SRV_ERR_INVALID_JSON, ""},
    {"[1 2]", 0, SRV_ERR_INVALID_JSON, ""},
    {"{\"a\":tru}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":nul}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":undefined}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":NaN}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":Infinity}", 0, SRV_ERR_INVALID_JSON, "a"},
    /* B4: a lone backslash at the end of a string / of the body */
    {"{\"a\":\"x\\", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":\"x\\\"}", 0, SRV_ERR_INVALID_JSON, "a"},
    /* B6: bad \u escapes */
    {"{\"a\":\"\\uZZZZ\"}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":\"\\u12\"}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":\"\\u", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":\"\\x41\"}", 0, SRV_ERR_INVALID_JSON, "a"},
    /* B7: lone and mis-paired surrogates */
    {"{\"a\":\"\\uD800\"}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":\"\\uDC00\"}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":\"\\uD800\\u0041\"}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":\"\\uD800x\"}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":\"\\uDBFF\\uDBFF\"}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":\"\\uD800\\n\"}", 0, SRV_ERR_INVALID_JSON, "a"},
    /* B8: \u0000 anywhere, keys included */
    {"{\"messages\":[{\"content\":\"a\\u0000b\"}]}", 0, SRV_ERR_INVALID_JSON, "messages[0].content"},
    {"{\"a\\u0000\":1}", 0, SRV_ERR_INVALID_JSON, ""},
    /* B9: invalid UTF-8 in raw strings */
    {"{\"messages\":[{\"content\":\"\xC0\xAF\"}]}", 0, SRV_ERR_INVALID_JSON, "messages[0].content"},
    {"{\"messages\":[{\"content\":\"\xED\xA0\x80\"}]}", 0, SRV_ERR_INVALID_JSON, "messages[0].content"},
    {"{\"messages\":[{\"content\":\"\xF5\x80\x80\x80\"}]}", 0, SRV_ERR_INVALID_JSON, "messages[0].content"},
    {"{\"messages\":[{\"content\":\"\xE2\x82\"}]}", 0, SRV_ERR_INVALID_JSON, "messages[0].content"},
    {"{\"a\":\"\xF4\x90\x80\x80\"}", 0, SRV_ERR_INVALID_JSON, "a"},      /* U+110000 */
    {"{\"a\":\"\xE0\x80\xAF\"}", 0, SRV_ERR_INVALID_JSON, "a"},          /* overlong 3-byte */
    {"{\"a\":\"\xF0\x80\x80\xAF\"}", 0, SRV_ERR_INVALID_JSON, "a"},      /* overlong 4-byte */
    {"{\"a\":\"\x80\"}", 0, SRV_ERR_INVALID_JSON, "a"},                  /* stray continuation */
    {"{\"a\":\"\xFF\"}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"\xC3\":1}", 0, SRV_ERR_INVALID_JSON, ""},                       /* in a key */
    {"{\"a\":1}\xC3", 0, SRV_ERR_INVALID_JSON, ""},                      /* outside strings */
    /* B10: raw control characters in strings */
    {"{\"a\":\"x\x01y\"}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":\"line\nbreak\"}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":\"tab\there\"}", 0, SRV_ERR_INVALID_JSON, "a"},
    /* B12: duplicate keys, at the top, nested, and in a large object (the sorted path) */
    {"{\"max_tokens\":1,\"max_tokens\":100000}", 0, SRV_ERR_DUPLICATE_KEY, "max_tokens"},
    {"{\"messages\":[{\"role\":\"user\",\"role\":\"system\"}]}", 0, SRV_ERR_DUPLICATE_KEY,
     "messages[0].role"},
    {"{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,"
     "\"k10\":0,\"k11\":1,\"k12\":2,\"k13\":3,\"k14\":4,\"k15\":5,\"k16\":6,\"k7\":7}",
     0, SRV_ERR_DUPLICATE_KEY, "k7"},
    /* An escaped spelling of the same key is the same key. */
    {"{\"n\":1,\"\\u006e\":2}", 0, SRV_ERR_DUPLICATE_KEY, "n"},
    /* Numbers: JSON grammar and overflow to inf */
    {"{\"max_tokens\":1e999}", 0, SRV_ERR_INVALID_JSON, "max_tokens"},
    {"{\"a\":-1e400}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":01}", 0, SRV_ERR_INVALID_JSON, ""},
    {"{\"a\":+1}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":.5}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":1.}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":1e}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":-}", 0, SRV_ERR_INVALID_JSON, "a"},
    {"{\"a\":0x10}", 0, SRV_ERR_INVALID_JSON, ""},
};

static void test_bad_cases(void)
{
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *c = &bad_cases[i];
        size_t len = c->len ? c->len : strlen(c->body);
        struct srv_json_doc *doc = (struct srv_json_doc *)1;
        struct srv_error err;
        int rc = srv_json_parse(c->body, len, NULL, &doc, &err);
        CHECK(rc == c->code && err.code == c->code, "case %zu: rc %s, want %s (%s)", i,
              srv_error_name(rc), srv_error_name(c->code), err.message);
        CHECK(doc == NULL, "case %zu: doc not NULL on error", i);
        if (rc != 0)
            CHECK(strcmp(err.param, c->path) == 0, "case %zu: path '%s', want '%s'", i, err.param,
                  c->path);
        if (rc == 0)
            srv_json_free(doc);
    }
}

static struct srv_json_doc *parse_ok(const char *body, size_t len)
{
    struct srv_json_doc *doc = NULL;
    struct srv_error err;
    int rc = srv_json_parse(body, len, NULL, &doc, &err);
    CHECK(rc == 0, "parse of %.60s failed: %s %s (%s)", body, srv_error_name(rc), err.message, err.param);
    return rc == 0 ? doc : NULL;
}

static void test_values(void)
{
    const char *body =
        "\xEF\xBB\xBF {\"i\":9007199254740993,\"min\":-9223372036854775808,"
        "\"big\":9223372036854775808,\"f\":1.5,\"e\":1e3,\"neg0\":-0,\"tiny\":1e-999,"
        "\"s\":\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\xE2\x82\xAC\",\"t\":true,"
        "\"fa\":false,\"nu\":null,\"arr\":[1,[2,{}],[]],\"Case\":1,\"case\":2,\"\":3} ";
    struct srv_json_doc *doc = parse_ok(body, strlen(body));
    if (doc == NULL)
        return;
    const struct srv_json *r = srv_json_root(doc);
    CHECK(r->type == SRV_JSON_OBJECT && r->len == 15, "root type %d len %zu", r->type, r->len);
    const struct srv_json *v = srv_json_get(r, "i");
    CHECK(v && v->is_int && v->u.num.i == 9007199254740993LL, "exact int above 2^53");
    v = srv_json_get(r, "min");
    CHECK(v && v->is_int && v->u.num.i == INT64_MIN, "INT64_MIN");
    v = srv_json_get(r, "big");
    CHECK(v && !v->is_int && v->u.num.d == 9223372036854775808.0, "2^63 is not an int64");
    v = srv_json_get(r, "f");
    CHECK(v && !v->is_int && v->u.num.d == 1.5, "1.5");
    v = srv_json_get(r, "e");
    CHECK(v && !v->is_int && v->u.num.d == 1000.0, "1e3");
    v = srv_json_get(r, "neg0");
    CHECK(v && v->is_int && v->u.num.i == 0, "-0");
    v = srv_json_get(r, "tiny");
    CHECK(v && v->u.num.d == 0.0, "underflow is 0, not an error");
    v = srv_json_get(r, "s");
    const char *want = "a\"\\/\b\f\n\r\t\xC3\xA9\xF0\x9F\x98\x80\xE2\x82\xAC";
    CHECK(v && v->type == SRV_JSON_STRING && v->len == strlen(want) && memcmp(v->u.str, want, v->len) == 0 &&
              v->u.str[v->len] == '\0',
          "decoded string");
    CHECK(srv_json_get(r, "t")->b && !srv_json_get(r, "fa")->b, "booleans");
    CHECK(srv_json_get(r, "nu")->type == SRV_JSON_NULL, "null");
    v = srv_json_get(r, "arr");
    CHECK(v && v->len == 3 && v->u.child->u.num.i == 1 && v->u.child->next->len == 2 &&
              v->u.child->next->next->len == 0,
          "nested arrays");
    /* Look-ups are case-sensitive (B13; cJSON_GetObjectItem is not). */
    CHECK(srv_json_get(r, "Case")->u.num.i == 1 && srv_json_get(r, "case")->u.num.i == 2, "case");
    CHECK(srv_json_get(r, "CASE") == NULL, "no case folding");
    CHECK(srv_json_get(r, "")->u.num.i == 3, "empty key");
    CHECK(srv_json_get(v, "x") == NULL && srv_json_get(NULL, "x") == NULL, "get on non-objects");
    srv_json_free(doc);

    /* Scalars are values too (the request layer rejects non-objects, B1). */
    const char *scalars[] = {"null", "42", "\"str\"", "[]", "true"};
    for (size_t i = 0; i < 5; i++) {
        doc = parse_ok(scalars[i], strlen(scalars[i]));
        srv_json_free(doc);
    }
    /* Input is not read past len: a prefix of a longer buffer parses alone. */
    doc = parse_ok("{\"a\":1}GARBAGE", 7);
    srv_json_free(doc);
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
        struct srv_json_doc *doc = NULL;
        struct srv_error err;
        int rc = srv_json_parse(s, strlen(s), NULL, &doc, &err);
        int want = depths[i] <= SRV_JSON_DEPTH_DEFAULT ? 0 : SRV_ERR_JSON_TOO_DEEP;
        CHECK(rc == want, "depth %d: %s", depths[i], srv_error_name(rc));
        if (rc == SRV_ERR_JSON_TOO_DEEP)
            CHECK(strncmp(err.param, "[0][0][0]", 9) == 0, "depth path '%s'", err.param);
        srv_json_free(doc);
        free(s);
    }
    /* A custom limit, and objects count like arrays. */
    struct srv_json_opts opts = {.max_depth = 3};
    struct srv_json_doc *doc = NULL;
    struct srv_error err;
    const char *ok3 = "{\"a\":{\"b\":[1]}}", *bad4 = "{\"a\":{\"b\":[{}]}}";
    CHECK(srv_json_parse(ok3, strlen(ok3), &opts, &doc, &err) == 0, "depth 3 of 3");
    srv_json_free(doc);
    CHECK(srv_json_parse(bad4, strlen(bad4), &opts, &doc, &err) == SRV_ERR_JSON_TOO_DEEP &&
              strcmp(err.param, "a.b[0]") == 0,
          "depth 4 of 3: %s at '%s'", srv_error_name(err.code), err.param);
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
    struct srv_json_doc *doc = NULL;
    struct srv_error err;
    int rc = srv_json_parse(s, k, NULL, &doc, &err);
    CHECK(rc == SRV_ERR_JSON_TOO_COMPLEX, "8 MiB of zeros: %s", srv_error_name(rc));
    CHECK(srv_error_status(rc) == 400, "budget status");
    srv_json_free(doc);

    /* The same shape, smaller, fits; and its memory stays within the budget. */
    const size_t small = 1000;
    k = (size_t)sprintf(s, "{\"foo\":[");
    for (size_t i = 0; i < small; i++) {
        s[k++] = '7';
        s[k++] = ',';
    }
    s[k - 1] = ']';
    s[k++] = '}';
    rc = srv_json_parse(s, k, NULL, &doc, &err);
    CHECK(rc == 0, "small array: %s", srv_error_name(rc));
    if (rc == 0) {
        CHECK(srv_json_root(doc)->u.child->len == small, "small array length");
        CHECK(srv_json_bytes(doc) <= 16 * k + (256u << 10), "bytes %zu", srv_json_bytes(doc));
    }
    srv_json_free(doc);

    /* An explicit tiny budget. */
    struct srv_json_opts opts = {.max_bytes = 256};
    const char *body = "{\"a\":\"0123456789012345678901234567890123456789\",\"b\":[1,2,3,4,5,6,7,8]}";
    CHECK(srv_json_parse(body, strlen(body), &opts, &doc, &err) == SRV_ERR_JSON_TOO_COMPLEX,
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
    struct srv_json_doc *doc = NULL;
    struct srv_error err;
    CHECK(srv_json_parse(body, len, NULL, &doc, &err) == 0, "full body: %s", err.message);
    srv_json_free(doc);
    for (size_t cut = 0; cut < len; cut++) {
        char *copy = malloc(cut ? cut : 1); /* exact size: ASan catches any read past it */
        if (copy == NULL)
            abort();
        memcpy(copy, body, cut);
        int rc = srv_json_parse(copy, cut, NULL, &doc, &err);
        CHECK(rc == SRV_ERR_INVALID_JSON, "prefix of %zu bytes: %s", cut, srv_error_name(rc));
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
        size_t got = srv_utf8_seq_len((const unsigned char *)cases[i].s, strlen(cases[i].s));
        CHECK(got == cases[i].want, "utf8 case %zu: %zu, want %zu", i, got, cases[i].want);
    }
    CHECK(srv_utf8_seq_len((const unsigned char *)"x", 0) == 0, "empty input");
}

int main(void)
{
    test_bad_cases();
    test_values();
    test_depth();
    test_budget();
    test_truncation();
    test_utf8_seq_len();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("test_json_strict: all checks passed\n");
    return 0;
}
