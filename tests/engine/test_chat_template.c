/* Tests engine/chat_template.c and the Jinja-subset interpreter behind it: unit checks of the
 * API contract, error messages, limits and hostile templates, then every golden case from
 * tests/fixtures/chat (rendered by transformers' apply_chat_template) compared byte for byte.
 * Usage: test_chat_template <fixtures_dir> */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "chat_template.h"

#include "../test_util.h"

static const char *MSGS =
    "[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hi\"},"
    "{\"role\":\"assistant\",\"content\":\"Hello!\"},{\"role\":\"user\",\"content\":\"Bye\"}]";

/* Renders src with MSGS (or msgs_json); returns the status, output in *out (caller frees). */
static int render_src(const char *src, const char *msgs_json, const struct eng_chat_limits *lim,
                      char **out, char *err, size_t errlen)
{
    struct eng_chat_template *t = NULL;
    *out = NULL;
    int rc = eng_chat_template_parse(src, strlen(src), lim, &t, err, errlen);
    if (rc != 0)
        return rc;
    cJSON *msgs = cJSON_Parse(msgs_json ? msgs_json : MSGS);
    struct eng_chat_input in = {.messages = msgs, .bos_token = "<s>", .eos_token = "</s>",
                                .add_generation_prompt = true};
    size_t len;
    rc = eng_chat_template_render(t, &in, lim, out, &len, err, errlen);
    cJSON_Delete(msgs);
    eng_chat_template_destroy(t);
    return rc;
}

static void expect_text(const char *src, const char *want)
{
    char err[512], *out;
    int rc = render_src(src, NULL, NULL, &out, err, sizeof err);
    if (rc != 0)
        FAIL("%s: status %d (%s), want \"%s\"", src, rc, err, want);
    else
        CHECK(strcmp(out, want) == 0, "%s: got \"%s\", want \"%s\"", src, out, want);
    free(out);
}

/* Expects status code and (when not NULL) a substring of the error message. */
static void expect_error(const char *src, const struct eng_chat_limits *lim, int code, const char *needle)
{
    char err[512], *out;
    int rc = render_src(src, NULL, lim, &out, err, sizeof err);
    CHECK(rc == code, "%.80s: status %d (%s), want %d", src, rc, rc ? err : "ok", code);
    CHECK(out == NULL, "%.80s: output must be NULL on error", src);
    if (needle != NULL && rc != 0)
        CHECK(strstr(err, needle) != NULL, "%.80s: error \"%s\" lacks \"%s\"", src, err, needle);
    free(out);
}

/* ---- unit tests --------------------------------------------------------------------------- */

static void test_basics(void)
{
    expect_text("{{ bos_token }}{% for m in messages %}<{{ m.role }}>{% endfor %}{{ eos_token }}",
                "<s><system><user><assistant><user></s>");
    expect_text("{% if add_generation_prompt %}yes{% endif %}|{{ tools is none }}|{{ documents is none }}",
                "yes|True|True");
    expect_text("", "");
    expect_text("plain text only", "plain text only");
    expect_text("{{ messages[1]['content'] ~ '/' ~ messages[1].content }}", "Hi/Hi");
    expect_text("{% generation %}gen {{ 1 }}{% endgeneration %}", "gen 1");
}

static void test_error_messages(void)
{
    /* syntax errors carry line and column */
    expect_error("line one\n{{ 1 + }}", NULL, ENG_CHAT_ERR_SYNTAX, "line 2, column 8");
    expect_error("a\nb\n{% if true %}\nno end", NULL, ENG_CHAT_ERR_SYNTAX, "endif");
    expect_error("{{ x | nope }}", NULL, ENG_CHAT_ERR_SYNTAX, "No filter named 'nope'");
    expect_error("{% macro m() %}{% endmacro %}", NULL, ENG_CHAT_ERR_SYNTAX, "unknown tag 'macro'");
    expect_error("{% for x in xs recursive %}{% endfor %}", NULL, ENG_CHAT_ERR_SYNTAX, "recursive");
    expect_error("{% include 'x' %}", NULL, ENG_CHAT_ERR_SYNTAX, "unknown tag");
    expect_error("{{ '\\x4' }}", NULL, ENG_CHAT_ERR_SYNTAX, "truncated");
    expect_error("{{ 99999999999999999999 }}", NULL, ENG_CHAT_ERR_SYNTAX, "too large");
    expect_error("{{ 1 \x01 }}", NULL, ENG_CHAT_ERR_SYNTAX, "unexpected char");
    /* runtime errors carry the line */
    expect_error("ok\n\n{{ nothing.here }}", NULL, ENG_CHAT_ERR_RENDER, "line 3");
    expect_error("{{ 9223372036854775807 + 1 }}", NULL, ENG_CHAT_ERR_RENDER, "overflow");
    expect_error("{{ -9223372036854775807 - 2 }}", NULL, ENG_CHAT_ERR_RENDER, "overflow");
    expect_error("{{ 2 ** 64 }}", NULL, ENG_CHAT_ERR_RENDER, "overflow");
    /* raise_exception gives its message verbatim, nothing added */
    char err[256], *out;
    int rc = render_src("x{{ raise_exception('Roles must alternate: ' ~ messages|length) }}", NULL, NULL,
                        &out, err, sizeof err);
    CHECK(rc == ENG_CHAT_ERR_RAISED && strcmp(err, "Roles must alternate: 4") == 0,
          "raise_exception: %d \"%s\"", rc, err);
    free(out);
    /* a tiny error buffer is still terminated and nothing overflows */
    char small[8];
    rc = render_src("{{ raise_exception('a long message that does not fit') }}", NULL, NULL, &out, small,
                    sizeof small);
    CHECK(rc == ENG_CHAT_ERR_RAISED && strlen(small) == sizeof small - 1, "small err buffer");
    free(out);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_limits(void)
{
    double t0 = now_s();
    /* endless work is cut by the step budget */
    expect_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", NULL,
                 ENG_CHAT_ERR_LIMIT, "step");
    expect_error("{% for i in range(1000000000000) %}{% endfor %}", NULL, ENG_CHAT_ERR_LIMIT, "step limit");
    /* exponential string doubling hits the string / output bound */
    expect_error("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
                 "{% endfor %}{{ ns.s | length }}", NULL, ENG_CHAT_ERR_LIMIT, "limit");
    expect_error("{{ 'x' * 100000000000 }}", NULL, ENG_CHAT_ERR_LIMIT, "limit");
    expect_error("{{ [1, 2] * 100000000000 }}", NULL, ENG_CHAT_ERR_LIMIT, "limit");
    /* list doubling: memory or steps, whichever first */
    expect_error("{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}"
                 "{% endfor %}", NULL, ENG_CHAT_ERR_LIMIT, NULL);
    /* output bound, configurable */
    struct eng_chat_limits lim = {.max_output_bytes = 100};
    expect_error("{% for i in range(200) %}x{% endfor %}", &lim, ENG_CHAT_ERR_LIMIT, "100-byte limit");
    char err[256], *out;
    CHECK(render_src("{% for i in range(100) %}x{% endfor %}", NULL, &lim, &out, err, sizeof err) == 0 &&
          strlen(out) == 100, "exactly the output limit must pass");
    free(out);
    struct eng_chat_limits steps = {.max_steps = 1000};
    expect_error("{% for i in range(2000) %}{% endfor %}", &steps, ENG_CHAT_ERR_LIMIT, "step");
    struct eng_chat_limits mem = {.max_memory_bytes = 1 << 20};
    expect_error("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [i] %}"
                 "{% endfor %}", &mem, ENG_CHAT_ERR_LIMIT, "memory");
    double dt = now_s() - t0;
    CHECK(dt < 20.0, "limit tests took %.1f s: the bounds do not bound time", dt);
}

/* Work on huge request data is charged by size, so loops over it stay bounded in time. */
static void test_big_inputs(void)
{
    size_t big = 3u << 20;
    char *json = tu_xmalloc(big + 100);
    char *p = json + sprintf(json, "[{\"role\":\"user\",\"content\":\"");
    memset(p, 'a', big);
    strcpy(p + big, "\"}]");
    char err[256], *out;
    double t0 = now_s();
    int rc = render_src("{{ messages[0].content | length }}", json, NULL, &out, err, sizeof err);
    CHECK(rc == 0 && out != NULL && strcmp(out, "3145728") == 0, "3 MiB content: %d", rc);
    free(out);
    static const char *const scans[] = {
        "{% for i in range(1000000) %}{% if 'zz' in messages[0].content %}{% endif %}{% endfor %}",
        "{% for i in range(1000000) %}{% if (messages[0].content | length) > 5 %}{% endif %}{% endfor %}",
        "{% for i in range(1000000) %}{% if messages[0].content == messages[0].content %}{% endif %}{% endfor %}",
        "{% for i in range(1000000) %}{% if messages[0].content[-1] %}{% endif %}{% endfor %}",
        "{% for i in range(1000000) %}{% if messages[0].content.endswith('b') %}{% endif %}{% endfor %}",
        "{% for i in range(1000000) %}{% if messages[0].content.strip('ab') %}{% endif %}{% endfor %}",
    };
    for (size_t i = 0; i < sizeof scans / sizeof scans[0]; i++) {
        double t1 = now_s();
        rc = render_src(scans[i], json, NULL, &out, err, sizeof err);
        CHECK(rc == ENG_CHAT_ERR_LIMIT, "scan %zu: status %d", i, rc);
        CHECK(now_s() - t1 < 5.0, "scan %zu took %.1f s", i, now_s() - t1);
        free(out);
    }
    free(json);
    /* one message with 200k keys: converted in linear time, lookups charged by size */
    size_t n_keys = 200000;
    json = tu_xmalloc(n_keys * 24 + 100);
    p = json + sprintf(json, "[{\"role\":\"user\",\"content\":\"x\"");
    for (size_t i = 0; i < n_keys; i++)
        p += sprintf(p, ",\"k%zu\":%zu", i, i);
    strcpy(p, ",\"k7\":\"last\"}]");
    double t1 = now_s();
    rc = render_src("{{ messages[0].role }} {{ messages[0].k7 }} {{ messages[0] | length }}", json, NULL, &out,
                    err, sizeof err);
    CHECK(rc == 0 && out != NULL && strcmp(out, "user last 200002") == 0, "200k keys: %d %s", rc, out ? out : err);
    free(out);
    CHECK(now_s() - t1 < 5.0, "200k-key conversion took %.1f s", now_s() - t1);
    rc = render_src("{% for i in range(1000000) %}{% if messages[0].k5 %}{% endif %}{% endfor %}", json, NULL,
                    &out, err, sizeof err);
    CHECK(rc == ENG_CHAT_ERR_LIMIT, "dict lookups in a loop: %d", rc);
    free(out);
    rc = render_src("{{ messages[0] == messages[0] }}", json, NULL, &out, err, sizeof err);
    CHECK(rc == ENG_CHAT_ERR_LIMIT, "quadratic dict equality: %d", rc);
    free(out);
    free(json);
    CHECK(now_s() - t0 < 30.0, "big-input tests took %.1f s", now_s() - t0);
}

static char *put(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

static char *repeat_str(const char *head, const char *unit, size_t n, const char *mid, const char *unit2,
                        const char *tail)
{
    size_t len = strlen(head) + n * (strlen(unit) + strlen(unit2)) + strlen(mid) + strlen(tail) + 1;
    char *s = tu_xmalloc(len), *p = put(s, head);
    for (size_t i = 0; i < n; i++)
        p = put(p, unit);
    p = put(p, mid);
    for (size_t i = 0; i < n; i++)
        p = put(p, unit2);
    p = put(p, tail);
    *p = '\0';
    return s;
}

static void test_nesting(void)
{
    /* deep nesting of every recursive construct is refused, never a stack overflow:
     * head + open x n + core + close x n + tail */
    static const struct { const char *head, *open, *core, *close, *tail; } cases[] = {
        {"{{ ", "(", "1", ")", " }}"},
        {"{{ ", "[", "1", "]", " }}"},
        {"{{ ", "{'a': ", "1", "}", " }}"},
        {"{{ ", "not ", "1", "", " }}"},
        {"{{ ", "- ", "1", "", " }}"},
        {"{{ ", "1 if true else ", "2", "", " }}"},
        {"{{ ", "f(", "1", ")", " }}"},
        {"{{ ", "x[", "0", "]", " }}"},
        {"{{ ", "x(y=", "0", ")", " }}"},
        {"", "{% if true %}", "x", "{% endif %}", ""},
        {"", "{% for i in [1] %}", "x", "{% endfor %}", ""},
        {"", "{% set b %}", "x", "{% endset %}", ""},
        {"{% if false %}", "{% elif false %}", "", "", "{% endif %}"},
    };
    size_t depths[] = {200, 100000};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (size_t d = 0; d < 2; d++) {
            char *body = repeat_str(cases[c].head, cases[c].open, depths[d], cases[c].core, cases[c].close, "");
            size_t bl = strlen(body), tl = strlen(cases[c].tail);
            char *src = tu_xmalloc(bl + tl + 1);
            memcpy(src, body, bl);
            memcpy(src + bl, cases[c].tail, tl + 1);
            free(body);
            struct eng_chat_template *t = NULL;
            char err[256];
            int rc = eng_chat_template_parse(src, strlen(src), NULL, &t, err, sizeof err);
            CHECK(rc == ENG_CHAT_ERR_LIMIT, "nesting %s x%zu: status %d (%s)", cases[c].open, depths[d], rc,
                  rc ? err : "parsed");
            eng_chat_template_destroy(t);
            free(src);
        }
    }
    /* a long flat chain is fine below the limit and refused above it */
    char *chain = repeat_str("{{ ('a'", " ~ 'a'", 100, "", "", ") | length }}");
    expect_text(chain, "101");
    free(chain);
    chain = repeat_str("{{ 'a'", " ~ 'a'", 5000, "", "", " }}");
    struct eng_chat_template *t = NULL;
    char err[256];
    CHECK(eng_chat_template_parse(chain, strlen(chain), NULL, &t, err, sizeof err) == ENG_CHAT_ERR_LIMIT,
          "5000-term chain must exceed the depth limit");
    eng_chat_template_destroy(t);
    free(chain);
    /* nested values built at run time (list in list in ...) stop at the depth limit when printed */
    expect_error("{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = [ns.l] %}"
                 "{% endfor %}{{ ns.l }}", NULL, ENG_CHAT_ERR_LIMIT, "depth");
    expect_error("{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = [ns.l] %}"
                 "{% endfor %}{{ ns.l | tojson }}", NULL, ENG_CHAT_ERR_LIMIT, "depth");
    expect_error("{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = [ns.l] %}"
                 "{% endfor %}{{ ns.l == ns.l }}", NULL, ENG_CHAT_ERR_LIMIT, "depth");
    /* deep request JSON */
    char *deep = repeat_str("[{\"role\":\"user\",\"content\":\"x\",\"extra\":", "[", 900, "1", "]", "}]");
    char *out;
    int rc = render_src("{{ messages[0].content }}", deep, NULL, &out, err, sizeof err);
    CHECK(rc == ENG_CHAT_ERR_LIMIT, "deep JSON: %d", rc);
    free(out);
    free(deep);
}

static void test_api_contract(void)
{
    struct eng_chat_template *t = (void *)1;
    char err[128];
    CHECK(eng_chat_template_parse(NULL, 5, NULL, &t, err, sizeof err) == ENG_CHAT_ERR_SYNTAX && t == NULL,
          "NULL source with length");
    CHECK(eng_chat_template_parse("", 0, NULL, &t, err, sizeof err) == 0 && t != NULL, "empty template");
    char *out = (char *)1;
    size_t len = 7;
    struct eng_chat_input in = {0};
    CHECK(eng_chat_template_render(t, &in, NULL, &out, &len, err, sizeof err) == ENG_CHAT_ERR_INPUT &&
          out == NULL, "missing messages");
    cJSON *obj = cJSON_Parse("{\"role\":\"user\"}");
    in.messages = obj;
    CHECK(eng_chat_template_render(t, &in, NULL, &out, &len, err, sizeof err) == ENG_CHAT_ERR_INPUT,
          "messages not an array");
    cJSON_Delete(obj);
    cJSON *arr = cJSON_Parse("[]");
    in.messages = arr;
    CHECK(eng_chat_template_render(t, &in, NULL, &out, &len, err, sizeof err) == 0 && out != NULL &&
          len == 0 && out[0] == '\0', "empty render gives an empty string, not NULL");
    free(out);
    cJSON_Delete(arr);
    eng_chat_template_destroy(t);
    eng_chat_template_destroy(NULL);
    /* NUL inside a template source is treated as data, not as the end */
    static const char nul_src[] = "a\0b{{ 1 }}";
    CHECK(eng_chat_template_parse(nul_src, sizeof nul_src - 1, NULL, &t, err, sizeof err) == 0, "NUL parse");
    arr = cJSON_Parse("[]");
    in.messages = arr;
    CHECK(eng_chat_template_render(t, &in, NULL, &out, &len, err, sizeof err) == 0 && len == 4 &&
          memcmp(out, "a\0b1", 4) == 0, "NUL in template data");
    free(out);
    cJSON_Delete(arr);
    eng_chat_template_destroy(t);
    struct eng_chat_limits l;
    eng_chat_limits_default(&l);
    CHECK(l.max_output_bytes == ENG_CHAT_DEFAULT_MAX_OUTPUT && l.max_depth == ENG_CHAT_DEFAULT_MAX_DEPTH,
          "defaults");
    char *big = tu_xmalloc(ENG_CHAT_MAX_TEMPLATE_BYTES + 1);
    memset(big, 'a', ENG_CHAT_MAX_TEMPLATE_BYTES + 1);
    CHECK(eng_chat_template_parse(big, ENG_CHAT_MAX_TEMPLATE_BYTES + 1, NULL, &t, err, sizeof err) ==
          ENG_CHAT_ERR_LIMIT, "oversized template");
    free(big);
}

static void test_content_parts(void)
{
    char err[256], *out;
    const char *src = "{% for m in messages %}[{{ m.content }}]{% endfor %}";
    int rc = render_src(src, "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"u\"}},{\"type\":\"text\",\"text\":\"b\"}]},"
                        "{\"role\":\"user\",\"content\":[{\"type\":\"image\"}]}]", NULL, &out, err, sizeof err);
    CHECK(rc == 0 && strcmp(out, "[<|image_1|>\na\nb][<|image_2|>\n]") == 0, "flatten: %d %s", rc, out ? out : err);
    free(out);
    rc = render_src(src, "[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]", NULL, &out, err, sizeof err);
    CHECK(rc == ENG_CHAT_ERR_INPUT, "unknown part type: %d", rc);
    free(out);
    rc = render_src(src, "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":5}]}]", NULL, &out, err, sizeof err);
    CHECK(rc == ENG_CHAT_ERR_INPUT, "text part without string: %d", rc);
    free(out);
    rc = render_src(src, "[{\"role\":\"user\",\"content\":[\"bare\"]}]", NULL, &out, err, sizeof err);
    CHECK(rc == ENG_CHAT_ERR_INPUT, "bare string part: %d", rc);
    free(out);
    /* integral JSON numbers become ints, others floats */
    rc = render_src("{{ messages[0].n }} {{ messages[0].f }} {{ messages[0].n + 1 }}",
                    "[{\"n\": 3, \"f\": 2.5}]", NULL, &out, err, sizeof err);
    CHECK(rc == 0 && strcmp(out, "3 2.5 4") == 0, "numbers: %s", out ? out : err);
    free(out);
}

/* ---- goldens ------------------------------------------------------------------------------ */

static const char *str_field(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

struct tally {
    char name[64];
    int total, passed;
};

static void show_mismatch(const char *id, const char *got, size_t got_len, const char *want)
{
    size_t i = 0, wl = strlen(want);
    while (i < got_len && i < wl && got[i] == want[i])
        i++;
    size_t from = i > 20 ? i - 20 : 0;
    FAIL("%s: output differs at byte %zu\n  got:  \"%.60s\"\n  want: \"%.60s\"", id, i, got + from, want + from);
}

static void run_goldens(const char *fixtures, const char *file, bool named_templates)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/chat/%s", fixtures, file);
    char *data = tu_read_file(path, NULL);
    if (data == NULL) {
        FAIL("cannot read %s", path);
        return;
    }
    struct tally tallies[64];
    size_t n_tallies = 0;
    int cases = 0;
    char *cursor = data, *line;
    while ((line = tu_next_line(&cursor)) != NULL) {
        cJSON *row = cJSON_Parse(line);
        if (row == NULL) {
            FAIL("%s: bad JSON line", file);
            continue;
        }
        const char *id = str_field(row, "case");
        const char *name = named_templates ? str_field(row, "template") : "constructs";
        char *src = NULL;
        size_t src_len = 0;
        if (named_templates) {
            char tpath[4096];
            snprintf(tpath, sizeof tpath, "%s/chat/templates/%s.jinja", fixtures, name);
            src = tu_read_file(tpath, &src_len);
        } else if (str_field(row, "template_src") != NULL) {
            src = strdup(str_field(row, "template_src"));
            src_len = strlen(src);
        }
        size_t k;
        for (k = 0; k < n_tallies && strcmp(tallies[k].name, name) != 0; k++)
            ;
        if (k == n_tallies && n_tallies < 64) {
            snprintf(tallies[k].name, sizeof tallies[k].name, "%s", name);
            tallies[k].total = tallies[k].passed = 0;
            n_tallies++;
        }
        struct tally *ty = &tallies[k < 64 ? k : 63];
        ty->total++;
        cases++;
        char full_id[256];
        snprintf(full_id, sizeof full_id, "%s %s", name, id ? id : "?");
        if (src == NULL) {
            FAIL("%s: no template", full_id);
            cJSON_Delete(row);
            continue;
        }
        const char *want = str_field(row, "expected"), *want_err = str_field(row, "error");
        const char *want_msg = str_field(row, "message");
        const cJSON *tools = cJSON_GetObjectItemCaseSensitive(row, "tools");
        struct eng_chat_input in = {
            .messages = cJSON_GetObjectItemCaseSensitive(row, "messages"),
            .tools = cJSON_IsNull(tools) ? NULL : tools,
            .bos_token = str_field(row, "bos_token"),
            .eos_token = str_field(row, "eos_token"),
            .add_generation_prompt = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(row, "add_generation_prompt")),
            .keep_content_parts = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(row, "keep_content_parts")),
        };
        struct eng_chat_template *t = NULL;
        char err[1024] = "";
        char *out = NULL;
        size_t out_len = 0;
        int rc = eng_chat_template_parse(src, src_len, NULL, &t, err, sizeof err);
        if (rc == 0)
            rc = eng_chat_template_render(t, &in, NULL, &out, &out_len, err, sizeof err);
        bool ok;
        if (want != NULL) {
            ok = rc == 0 && out_len == strlen(want) && memcmp(out, want, out_len) == 0;
            if (!ok && rc != 0)
                FAIL("%s: status %d (%s), want text", full_id, rc, err);
            else if (!ok)
                show_mismatch(full_id, out, out_len, want);
        } else {
            int want_rc = strcmp(want_err, "syntax") == 0 ? ENG_CHAT_ERR_SYNTAX
                          : strcmp(want_err, "raise") == 0 ? ENG_CHAT_ERR_RAISED : ENG_CHAT_ERR_RENDER;
            ok = rc == want_rc && (want_rc != ENG_CHAT_ERR_RAISED || strcmp(err, want_msg) == 0);
            if (!ok)
                FAIL("%s: status %d (%s), want %s error (%s)", full_id, rc, rc ? err : out, want_err,
                     want_msg ? want_msg : "");
        }
        ty->passed += ok;
        free(out);
        eng_chat_template_destroy(t);
        free(src);
        cJSON_Delete(row);
    }
    free(data);
    for (size_t k = 0; k < n_tallies; k++)
        printf("%-22s %3d/%3d golden cases match\n", tallies[k].name, tallies[k].passed, tallies[k].total);
    CHECK(cases >= 50, "%s: only %d cases", file, cases);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <fixtures_dir>\n", argv[0]);
        return 2;
    }
    test_basics();
    test_error_messages();
    test_limits();
    test_big_inputs();
    test_nesting();
    test_api_contract();
    test_content_parts();
    run_goldens(argv[1], "constructs.jsonl", false);
    run_goldens(argv[1], "goldens.jsonl", true);
    return tu_finish("test_chat_template");
}
