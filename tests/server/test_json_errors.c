/* Tests srv_json_parse (declared in server/request.h, defined in request.c): the engine's strict JSON
 * reader seen from the request edge — each reader error becomes the right SRV_ERR_* code with
 * param = the JSON path and a sentence that gives the byte offset. The reader's own rules are
 * tested in tests/engine/test_json.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

#include "../test_util.h"

struct xlate_case {
    const char *body;
    int code;
    const char *param;   /* expected err.param */
    const char *message; /* expected err.message */
};

static const struct xlate_case cases[] = {
    {"", SRV_ERR_INVALID_JSON, "", "The input is empty (at byte 0 of the body)."},
    {"{\"a\":[1,2,]}", SRV_ERR_INVALID_JSON, "a[2]",
     "Unexpected character (at byte 10 of the body)."},
    {"{\"messages\":[{\"content\":\"a\\u0000b\"}]}", SRV_ERR_INVALID_JSON, "messages[0].content",
     "NUL character (\\u0000) in a string (at byte 26 of the body)."},
    {"{\"a\":1}xyz", SRV_ERR_INVALID_JSON, "",
     "Trailing bytes after the JSON value (at byte 7 of the body)."},
    {"{\"messages\":[{\"role\":\"user\",\"role\":\"system\"}]}", SRV_ERR_DUPLICATE_KEY,
     "messages[0].role", "Duplicate key in an object (at byte 44 of the body)."},
};

static void test_translation(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct xlate_case *c = &cases[i];
        struct eng_json_doc *doc = (struct eng_json_doc *)1;
        struct srv_error err;
        int rc = srv_json_parse(c->body, strlen(c->body), NULL, &doc, &err);
        CHECK(rc == c->code && err.code == c->code, "case %zu: %s, want %s", i, srv_error_name(rc),
              srv_error_name(c->code));
        CHECK(doc == NULL, "case %zu: doc not NULL on error", i);
        CHECK(strcmp(err.param, c->param) == 0, "case %zu: param '%s', want '%s'", i, err.param,
              c->param);
        CHECK(strcmp(err.message, c->message) == 0, "case %zu: message '%s', want '%s'", i,
              err.message, c->message);
    }
    /* One level too deep: SRV_ERR_JSON_TOO_DEEP at the innermost path. */
    char nest[2 * (ENG_JSON_DEPTH_DEFAULT + 1) + 1];
    memset(nest, '[', ENG_JSON_DEPTH_DEFAULT + 1);
    memset(nest + ENG_JSON_DEPTH_DEFAULT + 1, ']', ENG_JSON_DEPTH_DEFAULT + 1);
    nest[sizeof(nest) - 1] = '\0';
    struct eng_json_doc *doc = NULL;
    struct srv_error err;
    int rc = srv_json_parse(nest, strlen(nest), NULL, &doc, &err);
    CHECK(rc == SRV_ERR_JSON_TOO_DEEP && strncmp(err.param, "[0][0][0]", 9) == 0 &&
              strcmp(err.message, "Nesting deeper than the limit (at byte 128 of the body).") == 0,
          "too deep: %s at '%.20s': %s", srv_error_name(rc), err.param, err.message);
    /* The budget: SRV_ERR_JSON_TOO_COMPLEX (HTTP 400) with the table's message and the path. */
    struct eng_json_opts opts = {.max_bytes = 256};
    const char *body = "{\"a\":\"0123456789012345678901234567890123456789\",\"b\":[1,2,3,4,5,6,7,8]}";
    rc = srv_json_parse(body, strlen(body), &opts, &doc, &err);
    CHECK(rc == SRV_ERR_JSON_TOO_COMPLEX && srv_error_status(rc) == 400, "tiny budget: %s",
          srv_error_name(rc));
    CHECK(err.message[0] == '\0' && strncmp(err.param, "b", 1) == 0, "budget error '%s' at '%s'",
          err.message, err.param);
    /* A long path is cut to the param buffer on a UTF-8 boundary: "a" then ".\u00e9" steps put
     * byte 159 inside a character, so the param stops one byte short, after a '.'. */
    char deep[4096];
    size_t n = (size_t)sprintf(deep, "{\"a\":");
    for (int i = 0; i < 100; i++)
        n += (size_t)sprintf(deep + n, "{\"\xC3\xA9\":");
    n += (size_t)sprintf(deep + n, "x");
    rc = srv_json_parse(deep, n, NULL, &doc, &err);
    size_t pl = strlen(err.param);
    CHECK(rc == SRV_ERR_INVALID_JSON && pl == SRV_ERROR_PARAM_MAX - 2 && err.param[pl - 1] == '.' &&
              strncmp(err.param, "a.\xC3\xA9.", 5) == 0,
          "deep param %zu bytes: '%s'", pl, err.param);
}

/* srv_json_parse hands back the engine's tree. */
static void test_names(void)
{
    const char *body = "{\"n\":9007199254740993,\"s\":\"\xE2\x82\xAC\",\"o\":{\"k\":null}}";
    struct eng_json_doc *doc = NULL;
    struct srv_error err;
    CHECK(srv_json_parse(body, strlen(body), NULL, &doc, &err) == 0, "parse: %s", err.message);
    if (doc == NULL)
        return;
    const struct eng_json *r = eng_json_root(doc);
    CHECK(r->type == ENG_JSON_OBJECT && r->len == 3, "root");
    const struct eng_json *v = eng_json_get(r, "n");
    CHECK(v && v->type == ENG_JSON_NUMBER && v->is_int && v->u.num.i == 9007199254740993LL, "n");
    v = eng_json_get(r, "s");
    CHECK(v && v->type == ENG_JSON_STRING &&
              eng_utf8_seq_len((const unsigned char *)v->u.str, v->len) == 3,
          "s");
    CHECK(eng_json_get(eng_json_get(r, "o"), "k")->type == ENG_JSON_NULL, "o.k");
    CHECK(eng_json_bytes(doc) > 0, "bytes");
    eng_json_free(doc);
}

int main(void)
{
    test_translation();
    test_names();
    return tu_finish("test_json_strict");
}
