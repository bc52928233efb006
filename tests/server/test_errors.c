/* Tests server/errors.c: the error table (status, OpenAI type, code string per error) and the
 * {"error":{...}} renderer (escaping, UTF-8 repair, truncation, null param/code), checked by
 * parsing the rendered body back with the strict parser. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "request.h"

#include "../test_util.h"

static const int all_codes[] = {
#define CODE(name, value, status, type, code, msg) name,
    SRV_ERROR_TABLE(CODE)
#undef CODE
};
#define N_CODES (sizeof(all_codes) / sizeof(all_codes[0]))

static void test_table(void)
{
    for (size_t i = 0; i < N_CODES; i++) {
        int c = all_codes[i];
        CHECK(c < 0, "%s is not negative", srv_error_name(c));
        int st = srv_error_status(c);
        CHECK(st >= 400 && st <= 599, "%s status %d", srv_error_name(c), st);
        CHECK(srv_error_type(c)[0] != '\0' && srv_error_default_message(c)[0] != '\0',
              "%s type/message", srv_error_name(c));
        CHECK(strncmp(srv_error_name(c), "SRV_ERR_", 8) == 0, "name %s", srv_error_name(c));
        for (size_t j = 0; j < i; j++)
            CHECK(all_codes[j] != c, "%s has a duplicate value", srv_error_name(c));
    }
    /* The OpenAI status table (openai-api.md 7b). */
    struct {
        int code, status;
        const char *type, *code_string;
    } want[] = {
        {SRV_ERR_INVALID_JSON, 400, "invalid_request_error", "invalid_json"},
        {SRV_ERR_DUPLICATE_KEY, 400, "invalid_request_error", "duplicate_key"},
        {SRV_ERR_JSON_TOO_DEEP, 400, "invalid_request_error", "invalid_json"},
        {SRV_ERR_JSON_TOO_COMPLEX, 400, "invalid_request_error", "request_too_complex"},
        {SRV_ERR_INVALID_TYPE, 400, "invalid_request_error", "invalid_type"},
        {SRV_ERR_INVALID_VALUE, 400, "invalid_request_error", "invalid_value"},
        {SRV_ERR_MISSING_PARAM, 400, "invalid_request_error", "missing_required_parameter"},
        {SRV_ERR_INVALID_IMAGE, 400, "invalid_request_error", "invalid_image"},
        {SRV_ERR_CONTEXT_LENGTH, 400, "invalid_request_error", "context_length_exceeded"},
        {SRV_ERR_INVALID_API_KEY, 401, "invalid_request_error", "invalid_api_key"},
        {SRV_ERR_NOT_FOUND, 404, "invalid_request_error", "not_found"},
        {SRV_ERR_MODEL_NOT_FOUND, 404, "invalid_request_error", "model_not_found"},
        {SRV_ERR_METHOD_NOT_ALLOWED, 405, "invalid_request_error", "method_not_allowed"},
        {SRV_ERR_REQUEST_TOO_LARGE, 413, "invalid_request_error", "request_too_large"},
        {SRV_ERR_UNSUPPORTED_MEDIA_TYPE, 415, "invalid_request_error", "unsupported_media_type"},
        {SRV_ERR_OVERLOADED, 429, "rate_limit_error", "server_overloaded"},
        {SRV_ERR_UNAVAILABLE, 503, "service_unavailable_error", NULL},
        {SRV_ERR_INTERNAL, 500, "server_error", NULL},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        int c = want[i].code;
        CHECK(srv_error_status(c) == want[i].status, "%s status %d", srv_error_name(c), srv_error_status(c));
        CHECK(strcmp(srv_error_type(c), want[i].type) == 0, "%s type %s", srv_error_name(c), srv_error_type(c));
        const char *cs = srv_error_code_string(c);
        CHECK((cs == NULL && want[i].code_string == NULL) ||
                  (cs != NULL && want[i].code_string != NULL && strcmp(cs, want[i].code_string) == 0),
              "%s code %s", srv_error_name(c), cs ? cs : "null");
    }
    /* Client mistakes are never 5xx: the SDKs would retry them. */
    for (size_t i = 0; i < N_CODES; i++) {
        int c = all_codes[i];
        if (c != SRV_ERR_INTERNAL && c != SRV_ERR_UNAVAILABLE && c != SRV_ERR_NO_MEMORY)
            CHECK(srv_error_status(c) < 500, "%s is a 5xx", srv_error_name(c));
    }
    /* Unknown codes fall back to the internal error. */
    CHECK(srv_error_status(12345) == 500 && srv_error_status(0) == 500, "unknown code");
    CHECK(strcmp(srv_error_name(-9999), "SRV_ERR_INTERNAL") == 0, "unknown name");
}

/* Renders, parses back strictly and checks each field. want_param/want_code NULL = null. */
static void check_render(int code, const char *param, const char *message, const char *want_msg,
                         const char *want_param)
{
    char buf[2048];
    size_t n = srv_error_render(code, param, message, buf, sizeof(buf));
    CHECK(n < sizeof(buf) && strlen(buf) == n, "render length %zu", n);
    struct eng_json_doc *doc = NULL;
    struct srv_error err;
    int rc = srv_json_parse(buf, n, NULL, &doc, &err);
    CHECK(rc == 0, "rendered body does not parse: %s (%s): %s", srv_error_name(rc), err.message, buf);
    if (rc != 0)
        return;
    const struct eng_json *root = eng_json_root(doc);
    CHECK(root->type == ENG_JSON_OBJECT && root->len == 1, "envelope");
    const struct eng_json *e = eng_json_get(root, "error");
    CHECK(e != NULL && e->type == ENG_JSON_OBJECT && e->len == 4, "error object: %s", buf);
    const struct eng_json *m = eng_json_get(e, "message"), *t = eng_json_get(e, "type"),
                          *p = eng_json_get(e, "param"), *c = eng_json_get(e, "code");
    CHECK(m && m->type == ENG_JSON_STRING && strcmp(m->u.str, want_msg) == 0, "message: %s", buf);
    CHECK(t && t->type == ENG_JSON_STRING && strcmp(t->u.str, srv_error_type(code)) == 0, "type: %s", buf);
    if (want_param == NULL)
        CHECK(p && p->type == ENG_JSON_NULL, "param not null: %s", buf);
    else
        CHECK(p && p->type == ENG_JSON_STRING && strcmp(p->u.str, want_param) == 0, "param: %s", buf);
    const char *cs = srv_error_code_string(code);
    if (cs == NULL)
        CHECK(c && c->type == ENG_JSON_NULL, "code not null: %s", buf);
    else
        CHECK(c && c->type == ENG_JSON_STRING && strcmp(c->u.str, cs) == 0, "code: %s", buf);
    eng_json_free(doc);
}

static void test_render(void)
{
    char buf[512];
    size_t n = srv_error_render(SRV_ERR_MODEL_NOT_FOUND, "model", "The model 'x' does not exist.",
                                buf, sizeof(buf));
    const char *want = "{\"error\":{\"message\":\"The model 'x' does not exist.\",\"type\":"
                       "\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}";
    CHECK(n == strlen(want) && strcmp(buf, want) == 0, "exact body: %s", buf);

    n = srv_error_render(SRV_ERR_INTERNAL, NULL, NULL, buf, sizeof(buf));
    want = "{\"error\":{\"message\":\"The server had an error while processing your request.\","
           "\"type\":\"server_error\",\"param\":null,\"code\":null}}";
    CHECK(strcmp(buf, want) == 0, "null param/code: %s", buf);

    check_render(SRV_ERR_INVALID_VALUE, "messages[0].content", "quote \" backslash \\ nl \n tab \t "
                 "ctl \x01 del \x7F", "quote \" backslash \\ nl \n tab \t ctl \x01 del \x7F",
                 "messages[0].content");
    /* Valid multi-byte text is kept; invalid bytes become U+FFFD. */
    check_render(SRV_ERR_INVALID_VALUE, "logit_bias.\xC3\xA9", "caf\xC3\xA9 \xF0\x9F\x98\x80 bad\xC3 \xFF end",
                 "caf\xC3\xA9 \xF0\x9F\x98\x80 bad\xEF\xBF\xBD \xEF\xBF\xBD end", "logit_bias.\xC3\xA9");
    check_render(SRV_ERR_UNAVAILABLE, "", "", srv_error_default_message(SRV_ERR_UNAVAILABLE), NULL);
    for (size_t i = 0; i < N_CODES; i++)
        check_render(all_codes[i], NULL, NULL, srv_error_default_message(all_codes[i]), NULL);

    /* Truncation: snprintf-like return, always NUL-terminated, never past cap. */
    char small[16];
    memset(small, 'Z', sizeof(small));
    size_t full = srv_error_render(SRV_ERR_INVALID_JSON, "p", "m", NULL, 0);
    n = srv_error_render(SRV_ERR_INVALID_JSON, "p", "m", small, 10);
    CHECK(n == full && n > 10, "cut length %zu vs %zu", n, full);
    CHECK(small[9] == '\0' && small[10] == 'Z' && strncmp(small, "{\"error\":", 9) == 0, "cut body");
}

static void test_set(void)
{
    struct srv_error e;
    int rc = srv_error_set(&e, SRV_ERR_INVALID_TYPE, "max_tokens", "got %s", "a string");
    CHECK(rc == SRV_ERR_INVALID_TYPE && e.code == rc && strcmp(e.param, "max_tokens") == 0 &&
              strcmp(e.message, "got a string") == 0,
          "set");
    srv_error_set(&e, SRV_ERR_INTERNAL, NULL, NULL);
    CHECK(e.param[0] == '\0' && e.message[0] == '\0', "NULL param and message");
    /* Long UTF-8 text is cut on a character boundary. */
    char longp[600];
    size_t k = 0;
    while (k + 2 < sizeof(longp)) {
        longp[k++] = '\xC3';
        longp[k++] = '\xA9';
    }
    longp[k] = '\0';
    srv_error_set(&e, SRV_ERR_INVALID_VALUE, longp, "%s", longp);
    size_t pl = strlen(e.param), ml = strlen(e.message);
    CHECK(pl <= SRV_ERROR_PARAM_MAX - 1 && pl >= SRV_ERROR_PARAM_MAX - 2 && pl % 2 == 0, "param cut %zu", pl);
    CHECK(ml <= SRV_ERROR_MESSAGE_MAX - 1 && ml >= SRV_ERROR_MESSAGE_MAX - 2 && ml % 2 == 0, "message cut %zu", ml);
    check_render(SRV_ERR_INVALID_VALUE, e.param, e.message, e.message, e.param);
}

int main(void)
{
    test_table();
    test_render();
    test_set();
    return tu_finish("test_errors");
}
