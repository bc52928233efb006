/* Tests server/tool_calls.c: the reader of the tool-calling answer layout, fed valid answers
 * split at every byte and in random chunkings (the names, argument texts and decoded content
 * must come back exactly, as early as the bytes allow), its failure on text outside the layout,
 * callbacks that stop a feed, the whole-answer message, the prompt and the rewriting of a chat's
 * tool history. The grammar behind the layout is tested in tests/engine; here it only confirms
 * that the texts fed are (or are not) its sentences, so reader and grammar agree. */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "json_schema.h"
#include "tool_calls.h"

#include "../test_util.h"

#define MAX_CALLS 8
#define TEXT_CAP 1024

/* ---- what the reader reported ---- */

struct got {
    int32_t n_calls;
    char names[MAX_CALLS][SRV_TOOL_NAME_MAX + 1];
    char args[MAX_CALLS][TEXT_CAP];
    size_t args_len[MAX_CALLS];
    char content[TEXT_CAP];
    size_t content_len;
    int n_deltas;
    int stop_at;  /* the delta (1-based) at which to return stop_rc; 0: never */
    int stop_rc;
};

/* Collects the deltas and checks their order: calls numbered 0, 1, ... with arguments only for
 * the newest call, content only in an answer without calls, and no empty pieces. */
static int collect(void *user, const struct srv_tool_delta *d)
{
    struct got *g = user;
    g->n_deltas++;
    switch (d->kind) {
    case SRV_TOOL_DELTA_CALL:
        CHECK(d->index == g->n_calls && g->n_calls < MAX_CALLS, "call index %d after %d calls",
              (int)d->index, (int)g->n_calls);
        CHECK(g->content_len == 0, "a call after content");
        CHECK(d->name != NULL && strlen(d->name) <= SRV_TOOL_NAME_MAX, "call name");
        if (g->n_calls < MAX_CALLS && d->name != NULL) {
            snprintf(g->names[g->n_calls], sizeof g->names[0], "%s", d->name);
            g->n_calls++;
        }
        break;
    case SRV_TOOL_DELTA_ARGUMENTS: {
        CHECK(g->n_calls > 0 && d->index == g->n_calls - 1, "arguments of call %d after %d calls",
              (int)d->index, (int)g->n_calls);
        CHECK(d->text != NULL && d->len > 0, "empty arguments piece");
        int32_t i = g->n_calls > 0 ? g->n_calls - 1 : 0;
        if (d->text != NULL && g->args_len[i] + d->len < TEXT_CAP) {
            memcpy(g->args[i] + g->args_len[i], d->text, d->len);
            g->args_len[i] += d->len;
        } else {
            FAIL("arguments overflow the test's buffer");
        }
        break;
    }
    case SRV_TOOL_DELTA_CONTENT:
        CHECK(g->n_calls == 0, "content in an answer with calls");
        CHECK(d->text != NULL && d->len > 0, "empty content piece");
        if (d->text != NULL && g->content_len + d->len < TEXT_CAP) {
            memcpy(g->content + g->content_len, d->text, d->len);
            g->content_len += d->len;
        } else {
            FAIL("content overflows the test's buffer");
        }
        break;
    default:
        FAIL("unknown delta kind %d", (int)d->kind);
    }
    return g->stop_at == g->n_deltas ? g->stop_rc : 0;
}

/* ---- valid answers ---- */

struct want {
    const char *id;
    const char *text;
    int32_t n_calls;
    const char *names[MAX_CALLS];
    const char *args[MAX_CALLS];   /* the arguments' JSON text as written in text */
    const char *content;           /* decoded (a content answer); NULL for calls */
    size_t off[MAX_CALLS];         /* filled in: where each call's arguments start in text */
};

/* A 64-character name, the longest allowed. */
#define NAME64 "n123456789_123456789-123456789_123456789-123456789_123456789-123"

static struct want valid[] = {
    {"one call", "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", "
     "\"unit\": \"c\"}}]}",
     1, {"get_weather"}, {"{\"city\": \"Paris\", \"unit\": \"c\"}"}, NULL, {0}},
    {"nested, strings with braces", "{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {\"s\": "
     "\"x}]{[\\\"y\\\\\", \"n\": [1, {\"k\": \"]\"}, [[]]], \"e\": {}}}, {\"name\": \"b-2\", "
     "\"arguments\": []}, {\"name\": \"c_3\", \"arguments\": {\"q\": \"\\u00e9\\\"}\\\\\"}}]}",
     3, {"a", "b-2", "c_3"},
     {"{\"s\": \"x}]{[\\\"y\\\\\", \"n\": [1, {\"k\": \"]\"}, [[]]], \"e\": {}}", "[]",
      "{\"q\": \"\\u00e9\\\"}\\\\\"}"}, NULL, {0}},
    {"whitespace inside arguments", "{\"tool_calls\": [{\"name\": \"w\", \"arguments\": { \"a\" :\n"
     "\t[ 1 , 2 ] ,\"b\":{ } }}]}",
     1, {"w"}, {"{ \"a\" :\n\t[ 1 , 2 ] ,\"b\":{ } }"}, NULL, {0}},
    {"scalar arguments", "{\"tool_calls\": [{\"name\": \"n\", \"arguments\": 42}, {\"name\": \"t\", "
     "\"arguments\": true}, {\"name\": \"s\", \"arguments\": \"a}b\\\"]{\\\\\"}, {\"name\": \"f\", "
     "\"arguments\": -1.5e+3}, {\"name\": \"z\", \"arguments\": null}, {\"name\": \"e\", "
     "\"arguments\": \"\"}, {\"name\": \"o\", \"arguments\": 0}]}",
     7, {"n", "t", "s", "f", "z", "e", "o"},
     {"42", "true", "\"a}b\\\"]{\\\\\"", "-1.5e+3", "null", "\"\"", "0"}, NULL, {0}},
    {"longest name", "{\"tool_calls\": [{\"name\": \"" NAME64 "\", \"arguments\": {}}]}",
     1, {NAME64}, {"{}"}, NULL, {0}},
    {"content with every escape", "{\"content\": \"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t \\u00e9 "
     "\\u4E2D \\u0041\\u007e plain \xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80 {\\\"x\\\": [1]}\"}",
     0, {NULL}, {NULL},
     "q\" b\\ s/ \b\f\n\r\t \xc3\xa9 \xe4\xb8\xad A~ plain \xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80 "
     "{\"x\": [1]}", {0}},
    {"empty content", "{\"content\": \"\"}", 0, {NULL}, {NULL}, "", {0}},
    {"content that looks like calls", "{\"content\": \"{\\\"tool_calls\\\": []}\"}", 0, {NULL}, {NULL},
     "{\"tool_calls\": []}", {0}},
};

#define N_VALID (sizeof valid / sizeof valid[0])

/* Fills w->off from the text and checks the fixture's own consistency. */
static bool locate(struct want *w)
{
    size_t pos = 0;
    for (int32_t i = 0; i < w->n_calls; i++) {
        char head[128];
        snprintf(head, sizeof head, "\"name\": \"%s\", \"arguments\": ", w->names[i]);
        const char *p = strstr(w->text + pos, head);
        if (p == NULL || strncmp(p + strlen(head), w->args[i], strlen(w->args[i])) != 0) {
            FAIL("%s: fixture text does not hold call %d", w->id, (int)i);
            return false;
        }
        w->off[i] = (size_t)(p - w->text) + strlen(head);
        pos = w->off[i] + strlen(w->args[i]);
    }
    return true;
}

/* What the reader must have reported after the first k bytes of w's text: every call whose
 * arguments start within them, the arguments' bytes read so far, and content that is a prefix
 * of the decoded content (an escape may be half read). The flags follow the bytes. */
static void check_after(const struct want *w, const struct got *g, const struct srv_tool_reader *r,
                        size_t k, const char *how)
{
    size_t len = strlen(w->text);
    int32_t n = 0;
    while (n < w->n_calls && w->off[n] <= k)
        n++;
    CHECK(g->n_calls == n, "%s (%s, %zu bytes): %d calls reported, want %d", w->id, how, k,
          (int)g->n_calls, (int)n);
    for (int32_t i = 0; i < n && i < g->n_calls; i++) {
        CHECK(strcmp(g->names[i], w->names[i]) == 0, "%s (%s, %zu): name %d '%s'", w->id, how, k,
              (int)i, g->names[i]);
        size_t alen = strlen(w->args[i]);
        size_t have = k - w->off[i] < alen ? k - w->off[i] : alen;
        CHECK(g->args_len[i] == have && memcmp(g->args[i], w->args[i], have) == 0,
              "%s (%s, %zu): arguments %d '%.*s', want '%.*s'", w->id, how, k, (int)i,
              (int)g->args_len[i], g->args[i], (int)have, w->args[i]);
    }
    if (w->content != NULL) {
        size_t clen = strlen(w->content);
        CHECK(g->content_len <= clen && memcmp(g->content, w->content, g->content_len) == 0,
              "%s (%s, %zu): content '%.*s' is no prefix", w->id, how, k, (int)g->content_len,
              g->content);
        if (k == len)
            CHECK(g->content_len == clen, "%s (%s): content '%.*s'", w->id, how,
                  (int)g->content_len, g->content);
    } else {
        CHECK(g->content_len == 0, "%s (%s, %zu): content in a calls answer", w->id, how, k);
    }
    CHECK(srv_tool_reader_done(r) == (k == len), "%s (%s, %zu bytes): done %d", w->id, how, k,
          (int)srv_tool_reader_done(r));
    /* "{\"t" is the third byte of a calls answer. */
    bool calls = w->n_calls > 0 && k >= 3;
    CHECK(srv_tool_reader_calls(r) == calls, "%s (%s, %zu bytes): calls %d", w->id, how, k,
          (int)srv_tool_reader_calls(r));
}

/* Feeds w's text in the pieces that end at cuts[0..n_cuts) (the last cut is the text's length),
 * checking the reports after each piece. */
static void feed_pieces(const struct want *w, const size_t *cuts, size_t n_cuts, const char *how)
{
    struct srv_tool_reader *r = srv_tool_reader_create();
    struct got *g = tu_xcalloc(1, sizeof *g);
    if (r == NULL) {
        FAIL("reader create");
        free(g);
        return;
    }
    size_t at = 0;
    for (size_t c = 0; c < n_cuts; c++) {
        int rc = srv_tool_reader_feed(r, w->text + at, cuts[c] - at, collect, g);
        CHECK(rc == 0, "%s (%s): feed of [%zu, %zu) returned %d", w->id, how, at, cuts[c], rc);
        at = cuts[c];
        check_after(w, g, r, at, how);
    }
    /* Nothing may follow a finished layout; not even an empty feed reports anything. */
    int before = g->n_deltas;
    CHECK(srv_tool_reader_feed(r, "", 0, collect, g) == 0, "%s: empty feed at the end", w->id);
    CHECK(srv_tool_reader_feed(r, " ", 1, collect, g) == -1, "%s: a byte after the layout", w->id);
    CHECK(srv_tool_reader_feed(r, "}", 1, collect, g) == -1, "%s: fed after failing", w->id);
    CHECK(g->n_deltas == before, "%s: deltas after the end", w->id);
    srv_tool_reader_destroy(r);
    free(g);
}

static void test_valid_splits(void)
{
    uint64_t rng = 0x9e3779b97f4a7c15u;
    for (size_t v = 0; v < N_VALID; v++) {
        struct want *w = &valid[v];
        if (!locate(w))
            continue;
        size_t len = strlen(w->text);
        /* whole, then every two-piece split (an empty first piece included) */
        size_t cuts[TEXT_CAP];
        cuts[0] = len;
        feed_pieces(w, cuts, 1, "whole");
        for (size_t k = 0; k < len; k++) {
            cuts[0] = k;
            cuts[1] = len;
            feed_pieces(w, cuts, 2, "split");
        }
        /* byte by byte */
        for (size_t k = 0; k < len; k++)
            cuts[k] = k + 1;
        feed_pieces(w, cuts, len, "bytes");
        /* random chunkings: pieces of 0 to 8 bytes */
        for (int round = 0; round < 200; round++) {
            size_t n = 0, at = 0;
            while (at < len && n + 1 < TEXT_CAP) {
                at += tu_xorshift64(&rng) % 9;
                cuts[n++] = at < len ? at : len;
            }
            cuts[n - 1] = len;
            feed_pieces(w, cuts, n, "random");
        }
    }
}

/* ---- the grammar agrees on what the layout is ---- */

/* Whether text is a whole sentence of the tools grammar over the given names, each taking any
 * JSON value as arguments, with content and parallel calls allowed. */
static int grammar_accepts(const char *text, const char *const *names, size_t n_names)
{
    struct eng_json_doc *any = NULL;
    struct eng_json_error jerr;
    if (eng_json_parse("{}", 2, NULL, &any, &jerr) != 0)
        return -1;
    struct eng_tool_schema tools[16];
    for (size_t i = 0; i < n_names && i < 16; i++)
        tools[i] = (struct eng_tool_schema){.name = names[i], .parameters = eng_json_root(any)};
    struct eng_grammar *gr = NULL;
    char err[256];
    int rc = eng_json_schema_compile_tools(tools, n_names, true, true, "tools", &gr, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "tools grammar: %s\n", err);
        eng_json_free(any);
        return -1;
    }
    struct eng_grammar_matcher *m = NULL;
    int ok = -1;
    if (eng_grammar_matcher_create(gr, NULL, &m) == 0)
        ok = eng_grammar_matcher_accept_bytes(m, text, strlen(text)) == 0 &&
             eng_grammar_matcher_complete(m);
    eng_grammar_matcher_destroy(m);
    eng_grammar_destroy(gr);
    eng_json_free(any);
    return ok;
}

static const char *const grammar_names[] = {"get_weather", "a", "b-2", "c_3", "w", "n", "t", "s",
                                            "f", "z", "e", "o", NAME64};
#define N_GRAMMAR_NAMES (sizeof grammar_names / sizeof grammar_names[0])

static void test_valid_are_grammar_sentences(void)
{
    for (size_t v = 0; v < N_VALID; v++)
        CHECK(grammar_accepts(valid[v].text, grammar_names, N_GRAMMAR_NAMES) == 1,
              "%s: the grammar refuses the fixture", valid[v].id);
}

/* ---- text outside the layout ---- */

struct bad {
    const char *id;
    const char *text;
    size_t bad_at;   /* the first byte the reader must refuse */
};

#define CALL1 "{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {\"x\": 1}}]}"
#define CALL1_LEN (sizeof CALL1 - 1)
#define CONTENT1 "{\"content\": \"hi\"}"
#define CONTENT1_LEN (sizeof CONTENT1 - 1)

static const struct bad bad[] = {
    {"text after calls", CALL1 "x", CALL1_LEN},
    {"newline after calls", CALL1 "\n", CALL1_LEN},
    {"second value after calls", CALL1 "{}", CALL1_LEN},
    {"text after content", CONTENT1 " ", CONTENT1_LEN},
    {"brace after content", CONTENT1 "}", CONTENT1_LEN},
    {"compact frame", "{\"tool_calls\":[{\"name\":\"a\",\"arguments\":{}}]}", 14},
    {"leading space", " {\"content\": \"\"}", 0},
    {"array answer", "[{\"name\": \"a\"}]", 0},
    {"other key", "{\"x\": 1}", 2},
    {"misspelt key", "{\"tool_call\": [{", 11},
    {"content not a string", "{\"content\": 5}", 12},
    {"bad escape", "{\"content\": \"a\\qb\"}", 15},
    {"bad unicode escape", "{\"content\": \"\\u00g1\"}", 17},
    {"raw quote ends content early", "{\"content\": \"a\"b\"}", 15},
    {"name too long", "{\"tool_calls\": [{\"name\": \"" NAME64 "x\"", 26 + 64},
    {"calls not closed by ]", "{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {}}}", 46},
    {"trailing comma", "{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {}}, ]}", 48},
    {"comma without space", "{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {}},{\"name\"", 47},
    {"extra member in a call", "{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {}, \"id\": 1}]}", 45},
    {"no space after arguments:", "{\"tool_calls\": [{\"name\": \"a\", \"arguments\":{}}]}", 42},
    {"content member after calls",
     "{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {}}], \"content\": \"\"}", 47},
};

#define N_BAD (sizeof bad / sizeof bad[0])

static void test_outside_layout(void)
{
    for (size_t b = 0; b < N_BAD; b++) {
        const struct bad *x = &bad[b];
        size_t len = strlen(x->text);
        CHECK(x->bad_at < len, "%s: fixture", x->id);
        /* byte by byte: accepted up to bad_at, refused there, ignored after */
        struct srv_tool_reader *r = srv_tool_reader_create();
        struct got *g = tu_xcalloc(1, sizeof *g);
        int first_fail = -1;
        for (size_t k = 0; k < len && r != NULL; k++) {
            int rc = srv_tool_reader_feed(r, x->text + k, 1, collect, g);
            if (rc != 0 && first_fail < 0)
                first_fail = (int)k;
            if (first_fail >= 0)
                CHECK(rc == -1, "%s: byte %zu returned %d", x->id, k, rc);
        }
        CHECK(first_fail == (int)x->bad_at, "%s: refused at byte %d, want %zu", x->id, first_fail,
              x->bad_at);
        int deltas = g->n_deltas;
        CHECK(srv_tool_reader_feed(r, "\"}]}", 4, collect, g) == -1, "%s: fed after failing", x->id);
        CHECK(srv_tool_reader_feed(r, "", 0, collect, g) == -1, "%s: empty feed after failing", x->id);
        CHECK(g->n_deltas == deltas, "%s: deltas after failing", x->id);
        CHECK(!srv_tool_reader_done(r), "%s: done after failing", x->id);
        srv_tool_reader_destroy(r);
        /* whole: -1, and what it reported is a prefix of the byte-wise reports (the failing
         * piece's unreported text may be dropped) */
        r = srv_tool_reader_create();
        struct got *h = tu_xcalloc(1, sizeof *h);
        CHECK(r != NULL && srv_tool_reader_feed(r, x->text, len, collect, h) == -1,
              "%s: whole text accepted", x->id);
        CHECK(h->n_calls <= g->n_calls && h->content_len <= g->content_len &&
                  memcmp(h->content, g->content, h->content_len) == 0,
              "%s: whole reports are no prefix of the byte-wise ones", x->id);
        for (int32_t i = 0; i < h->n_calls && i < g->n_calls; i++)
            CHECK(strcmp(h->names[i], g->names[i]) == 0 && h->args_len[i] <= g->args_len[i] &&
                      memcmp(h->args[i], g->args[i], h->args_len[i]) == 0,
                  "%s: call %d differs", x->id, (int)i);
        srv_tool_reader_destroy(r);
        free(g);
        free(h);
        CHECK(grammar_accepts(x->text, grammar_names, N_GRAMMAR_NAMES) == 0,
              "%s: the grammar accepts what the reader refuses", x->id);
    }
    /* What was reported before the failure stands: the call and its arguments. */
    struct srv_tool_reader *r = srv_tool_reader_create();
    struct got *g = tu_xcalloc(1, sizeof *g);
    CHECK(srv_tool_reader_feed(r, CALL1 "x", CALL1_LEN + 1, collect, g) == -1, "past the layout");
    CHECK(g->n_calls == 1 && strcmp(g->names[0], "a") == 0 && g->args_len[0] == 8 &&
              memcmp(g->args[0], "{\"x\": 1}", 8) == 0,
          "reports before the failure");
    srv_tool_reader_destroy(r);
    free(g);
    /* No reader. */
    CHECK(srv_tool_reader_feed(NULL, "{", 1, collect, NULL) == -1, "NULL reader");
    EXPECT(!srv_tool_reader_done(NULL) && !srv_tool_reader_calls(NULL));
    srv_tool_reader_destroy(NULL);
}

/* ---- a callback that stops the feed ---- */

static void stop_case(const char *text, const size_t *cuts, size_t n_cuts, int stop_at, int rc_want,
                      const char *id)
{
    struct srv_tool_reader *r = srv_tool_reader_create();
    struct got *g = tu_xcalloc(1, sizeof *g);
    g->stop_at = stop_at;
    g->stop_rc = rc_want;
    size_t at = 0;
    int rc = 0;
    for (size_t c = 0; c < n_cuts && rc == 0 && r != NULL; c++) {
        rc = srv_tool_reader_feed(r, text + at, cuts[c] - at, collect, g);
        at = cuts[c];
    }
    CHECK(rc == rc_want, "%s: feed returned %d, want %d", id, rc, rc_want);
    CHECK(g->n_deltas == stop_at, "%s: %d deltas after stopping at %d", id, g->n_deltas, stop_at);
    srv_tool_reader_destroy(r);
    free(g);
}

static void test_callback_stops(void)
{
    static const char two[] = "{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {\"x\": 1}}, "
                              "{\"name\": \"b\", \"arguments\": [true]}]}";
    size_t whole[] = {sizeof two - 1};
    /* whole: CALL a, ARGUMENTS a, CALL b, ARGUMENTS b */
    stop_case(two, whole, 1, 1, 5, "stop at the first call");
    stop_case(two, whole, 1, 2, 7, "stop at the first arguments");
    stop_case(two, whole, 1, 3, 1, "stop at the second call");
    stop_case(two, whole, 1, 4, 9, "stop at the last arguments");
    /* the arguments reported by the flush at the end of a piece */
    size_t mid[] = {50, sizeof two - 1};
    stop_case(two, mid, 2, 2, 3, "stop at the end-of-piece flush");
    static const char content[] = "{\"content\": \"hello \\u00e9\"}";
    size_t cwhole[] = {sizeof content - 1};
    stop_case(content, cwhole, 1, 1, 4, "stop at content");
    size_t cmid[] = {15, sizeof content - 1};
    stop_case(content, cmid, 2, 2, 2, "stop at the second content piece");
}

/* ---- srv_tools_message ---- */

/* Runs srv_tools_message on text[0..len) and returns the message (caller deletes). */
static cJSON *message(const char *text, size_t len, bool *calls, bool *complete)
{
    cJSON *msg = cJSON_CreateObject();
    *calls = *complete = true;
    int rc = srv_tools_message(msg, text, len, calls, complete);
    CHECK(rc == 0, "srv_tools_message returned %d for '%.*s'", rc, (int)len, text);
    return msg;
}

static bool is_null_content(const cJSON *msg)
{
    return cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(msg, "content"));
}

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Checks a message's tool_calls against the first n calls of w, the last one's arguments
 * holding have_last bytes. */
static void check_calls(const cJSON *msg, const struct want *w, int32_t n, size_t have_last,
                        const char *how)
{
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
    CHECK(cJSON_IsArray(tc) && cJSON_GetArraySize(tc) == n, "%s (%s): %d tool_calls", w->id, how,
          cJSON_GetArraySize(tc));
    CHECK(is_null_content(msg), "%s (%s): content not null", w->id, how);
    const char *ids[MAX_CALLS] = {0};
    for (int32_t i = 0; i < n && i < cJSON_GetArraySize(tc); i++) {
        const cJSON *t = cJSON_GetArrayItem(tc, i);
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "function");
        const char *id = str_of(t, "id"), *type = str_of(t, "type");
        const char *name = str_of(f, "name"), *args = str_of(f, "arguments");
        CHECK(id != NULL && strncmp(id, "call_", 5) == 0 && strlen(id) > 5, "%s: id '%s'", w->id,
              id ? id : "(none)");
        for (int32_t j = 0; id != NULL && j < i; j++)
            CHECK(ids[j] == NULL || strcmp(ids[j], id) != 0, "%s: calls %d and %d share id %s",
                  w->id, (int)j, (int)i, id);
        ids[i] = id;
        CHECK(type != NULL && strcmp(type, "function") == 0, "%s: type", w->id);
        CHECK(name != NULL && strcmp(name, w->names[i]) == 0, "%s (%s): name %d '%s'", w->id, how,
              (int)i, name ? name : "(none)");
        size_t alen = i == n - 1 ? have_last : strlen(w->args[i]);
        CHECK(args != NULL && strlen(args) == alen && memcmp(args, w->args[i], alen) == 0,
              "%s (%s): arguments %d '%s', want '%.*s'", w->id, how, (int)i, args ? args : "(none)",
              (int)alen, w->args[i]);
    }
}

static void test_message(void)
{
    for (size_t v = 0; v < N_VALID; v++) {
        const struct want *w = &valid[v];
        size_t len = strlen(w->text);
        /* every prefix: what a length cut leaves */
        for (size_t k = 0; k <= len; k++) {
            bool calls, complete;
            cJSON *msg = message(w->text, k, &calls, &complete);
            CHECK(complete == (k == len), "%s (%zu bytes): complete %d", w->id, k, (int)complete);
            int32_t n = 0;
            while (n < w->n_calls && w->off[n] <= k)
                n++;
            CHECK(calls == (n > 0), "%s (%zu bytes): calls %d", w->id, k, (int)calls);
            if (n > 0) {
                size_t alen = strlen(w->args[n - 1]);
                size_t have = k - w->off[n - 1] < alen ? k - w->off[n - 1] : alen;
                check_calls(msg, w, n, have, "prefix");
            } else {
                const char *content = str_of(msg, "content");
                CHECK(cJSON_GetObjectItemCaseSensitive(msg, "tool_calls") == NULL,
                      "%s: tool_calls without a call", w->id);
                CHECK(content != NULL, "%s (%zu bytes): content not a string", w->id, k);
                const char *full = w->content ? w->content : "";
                CHECK(content != NULL && strncmp(content, full, strlen(content)) == 0 &&
                          (k < len || strcmp(content, full) == 0),
                      "%s (%zu bytes): content '%s'", w->id, k, content ? content : "(none)");
            }
            cJSON_Delete(msg);
        }
    }
    /* Text after a complete layout is left out; the calls read stand. */
    bool calls, complete;
    cJSON *msg = message(CALL1 "trailing", CALL1_LEN + 8, &calls, &complete);
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
    CHECK(calls && cJSON_GetArraySize(tc) == 1 &&
              strcmp(str_of(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(tc, 0), "function"),
                            "arguments"), "{\"x\": 1}") == 0,
          "calls before trailing text");
    cJSON_Delete(msg);
    /* Garbage from the start: an empty content, not a failure. */
    msg = message("Hello there", 11, &calls, &complete);
    CHECK(!calls && !complete && str_of(msg, "content") != NULL && strcmp(str_of(msg, "content"), "") == 0,
          "garbage answer");
    cJSON_Delete(msg);
    /* Empty text; and a text pointer with no bytes. */
    msg = message("", 0, &calls, &complete);
    CHECK(!calls && !complete && str_of(msg, "content") && strcmp(str_of(msg, "content"), "") == 0,
          "empty answer");
    CHECK(cJSON_GetObjectItemCaseSensitive(msg, "tool_calls") == NULL, "empty answer tool_calls");
    cJSON_Delete(msg);
    /* The same answer twice gets fresh ids. */
    cJSON *m1 = message(CALL1, CALL1_LEN, &calls, &complete);
    cJSON *m2 = message(CALL1, CALL1_LEN, &calls, &complete);
    const char *id1 = str_of(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(m1, "tool_calls"), 0), "id");
    const char *id2 = str_of(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(m2, "tool_calls"), 0), "id");
    CHECK(id1 && id2 && strcmp(id1, id2) != 0, "ids repeat across answers: %s", id1 ? id1 : "(none)");
    cJSON_Delete(m1);
    cJSON_Delete(m2);
}

/* ---- srv_tools_prompt ---- */

static void test_prompt(void)
{
    static const char tools[] = "[{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\"}}]";
    char *p = srv_tools_prompt(tools, true, NULL, true);
    CHECK(p && strstr(p, tools) && strstr(p, "{\"tool_calls\": [{\"name\": ") &&
              strstr(p, "{\"content\": ") && strstr(p, "several"),
          "auto, parallel: %s", p ? p : "(null)");
    free(p);
    p = srv_tools_prompt(tools, true, NULL, false);
    CHECK(p && strstr(p, "{\"content\": ") && !strstr(p, "several"), "auto, one call: %s", p ? p : "(null)");
    free(p);
    p = srv_tools_prompt(tools, false, NULL, false);
    CHECK(p && strstr(p, tools) && !strstr(p, "{\"content\": ") && strstr(p, "one function") &&
              !strstr(p, "several"),
          "required, one call: %s", p ? p : "(null)");
    free(p);
    p = srv_tools_prompt(tools, false, NULL, true);
    CHECK(p && !strstr(p, "{\"content\": ") && strstr(p, "several"), "required, parallel: %s", p ? p : "(null)");
    free(p);
    p = srv_tools_prompt(tools, false, "get_weather", false);
    CHECK(p && strstr(p, tools) && strstr(p, "\"get_weather\"") && !strstr(p, "{\"content\": "),
          "named: %s", p ? p : "(null)");
    free(p);
}

/* ---- srv_tools_rewrite_messages and srv_tools_in_history ---- */

static cJSON *parse_or_die(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    if (j == NULL) {
        fprintf(stderr, "bad test JSON: %s\n", text);
        exit(1);
    }
    return j;
}

static const char *role_of(const cJSON *m)
{
    return str_of(m, "role");
}

/* The content of message i of arr, parsed as JSON (caller deletes), or NULL. */
static cJSON *content_json(const cJSON *arr, int i)
{
    const char *c = str_of(cJSON_GetArrayItem(arr, i), "content");
    return c ? cJSON_Parse(c) : NULL;
}

static bool json_equal_text(const cJSON *v, const char *want)
{
    cJSON *w = parse_or_die(want);
    bool eq = cJSON_Compare(v, w, true);
    cJSON_Delete(w);
    return eq;
}

static const char history[] =
    "[{\"role\": \"user\", \"content\": \"Weather in Paris and Rome?\"},"
    " {\"role\": \"assistant\", \"content\": null, \"tool_calls\": ["
    "  {\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\","
    "   \"arguments\": \"{\\\"city\\\": \\\"Paris\\\", \\\"days\\\": [1, 2]}\"}},"
    "  {\"id\": \"call_2\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\","
    "   \"arguments\": \"not json {\"}},"
    "  {\"id\": \"call_3\", \"type\": \"function\", \"function\": {\"name\": \"count\","
    "   \"arguments\": \"42\"}},"
    "  {\"id\": \"call_4\", \"type\": \"function\", \"function\": {\"name\": \"nothing\","
    "   \"arguments\": \"\"}},"
    "  {\"id\": \"call_5\", \"type\": \"function\", \"function\": {\"name\": \"trailing\","
    "   \"arguments\": \"{\\\"a\\\": 1} and more\"}}]},"
    " {\"role\": \"tool\", \"tool_call_id\": \"call_1\", \"content\": \"18 C \\\"sunny\\\"\"},"
    " {\"role\": \"tool\", \"tool_call_id\": \"call_2\", \"content\": \"\"},"
    " {\"role\": \"assistant\", \"content\": \"Paris is sunny.\"}]";

/* The calls of the history's assistant message as the layout must carry them. */
static const char history_calls[] =
    "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2]}},"
    " {\"name\": \"get_weather\", \"arguments\": \"not json {\"},"
    " {\"name\": \"count\", \"arguments\": 42},"
    " {\"name\": \"nothing\", \"arguments\": \"\"},"
    " {\"name\": \"trailing\", \"arguments\": \"{\\\"a\\\": 1} and more\"}]}";

static void check_rewritten_history(const cJSON *arr, int first, const char *how)
{
    /* the user turn untouched */
    CHECK(strcmp(role_of(cJSON_GetArrayItem(arr, first)), "user") == 0 &&
              strcmp(str_of(cJSON_GetArrayItem(arr, first), "content"), "Weather in Paris and Rome?") == 0,
          "%s: user turn", how);
    /* the assistant's calls: content in the layout, tool_calls gone */
    const cJSON *a = cJSON_GetArrayItem(arr, first + 1);
    CHECK(strcmp(role_of(a), "assistant") == 0, "%s: assistant role", how);
    CHECK(cJSON_GetObjectItemCaseSensitive(a, "tool_calls") == NULL, "%s: tool_calls kept", how);
    cJSON *calls = content_json(arr, first + 1);
    CHECK(calls != NULL && json_equal_text(calls, history_calls), "%s: assistant content '%s'", how,
          str_of(a, "content") ? str_of(a, "content") : "(none)");
    cJSON_Delete(calls);
    /* The content is the very layout the model is made to answer in (the grammar's spacing),
     * so that its past answers read like the ones it writes: the reader takes it whole. */
    const char *text = str_of(a, "content");
    struct srv_tool_reader *r = srv_tool_reader_create();
    struct got *g = tu_xcalloc(1, sizeof *g);
    CHECK(text && srv_tool_reader_feed(r, text, strlen(text), collect, g) == 0 &&
              srv_tool_reader_done(r) && g->n_calls == 5,
          "%s: the assistant's content is not in the answer layout: %s", how, text ? text : "(none)");
    srv_tool_reader_destroy(r);
    free(g);
    /* the results: user turns holding {"tool_call_id", "content"} */
    static const char *const results[] = {"{\"tool_call_id\": \"call_1\", \"content\": \"18 C \\\"sunny\\\"\"}",
                                          "{\"tool_call_id\": \"call_2\", \"content\": \"\"}"};
    for (int i = 0; i < 2; i++) {
        const cJSON *m = cJSON_GetArrayItem(arr, first + 2 + i);
        CHECK(strcmp(role_of(m), "user") == 0, "%s: tool result %d role '%s'", how, i, role_of(m));
        CHECK(cJSON_GetObjectItemCaseSensitive(m, "tool_call_id") == NULL, "%s: tool_call_id kept", how);
        cJSON *c = content_json(arr, first + 2 + i);
        CHECK(c != NULL && json_equal_text(c, results[i]), "%s: tool result %d '%s'", how, i,
              str_of(m, "content") ? str_of(m, "content") : "(none)");
        cJSON_Delete(c);
    }
    /* a plain assistant turn untouched */
    const cJSON *last = cJSON_GetArrayItem(arr, first + 4);
    CHECK(strcmp(role_of(last), "assistant") == 0 && strcmp(str_of(last, "content"), "Paris is sunny.") == 0,
          "%s: plain assistant turn", how);
}

static void test_rewrite(void)
{
    /* no system message: one is inserted at the front */
    cJSON *arr = parse_or_die(history);
    EXPECT(srv_tools_in_history(arr));
    CHECK(srv_tools_rewrite_messages(arr, "TOOLS HERE", true) == 0, "rewrite");
    CHECK(cJSON_GetArraySize(arr) == 6, "%d messages", cJSON_GetArraySize(arr));
    const cJSON *sys = cJSON_GetArrayItem(arr, 0);
    CHECK(strcmp(role_of(sys), "system") == 0 && strcmp(str_of(sys, "content"), "TOOLS HERE") == 0,
          "inserted system message");
    check_rewritten_history(arr, 1, "inserted system");
    CHECK(!srv_tools_in_history(arr), "history still has tools after the rewrite");
    cJSON_Delete(arr);

    /* a system message first: the text is appended to it */
    arr = parse_or_die(history);
    cJSON_InsertItemInArray(arr, 0, parse_or_die("{\"role\": \"system\", \"content\": \"Be brief.\"}"));
    CHECK(srv_tools_rewrite_messages(arr, "TOOLS HERE", true) == 0, "rewrite");
    CHECK(cJSON_GetArraySize(arr) == 6, "%d messages", cJSON_GetArraySize(arr));
    sys = cJSON_GetArrayItem(arr, 0);
    CHECK(strcmp(role_of(sys), "system") == 0 && strcmp(str_of(sys, "content"), "Be brief.\n\nTOOLS HERE") == 0,
          "appended system text: '%s'", str_of(sys, "content"));
    check_rewritten_history(arr, 1, "appended system");
    cJSON_Delete(arr);

    /* a template that drops system messages: the text goes before the first user's, and a
     * system message elsewhere stays as it is */
    arr = parse_or_die(history);
    cJSON_InsertItemInArray(arr, 0, parse_or_die("{\"role\": \"system\", \"content\": \"Be brief.\"}"));
    CHECK(srv_tools_rewrite_messages(arr, "TOOLS HERE", false) == 0, "rewrite");
    CHECK(cJSON_GetArraySize(arr) == 6, "%d messages", cJSON_GetArraySize(arr));
    CHECK(strcmp(str_of(cJSON_GetArrayItem(arr, 0), "content"), "Be brief.") == 0, "system message changed");
    const cJSON *user = cJSON_GetArrayItem(arr, 1);
    CHECK(strcmp(role_of(user), "user") == 0 &&
              strcmp(str_of(user, "content"), "TOOLS HERE\n\nWeather in Paris and Rome?") == 0,
          "tools before the user's text: '%s'", str_of(user, "content"));
    cJSON_Delete(arr);
    /* ... and with no user message, a user message at the front */
    arr = cJSON_CreateArray();
    CHECK(srv_tools_rewrite_messages(arr, "S", false) == 0 && cJSON_GetArraySize(arr) == 1 &&
              strcmp(role_of(cJSON_GetArrayItem(arr, 0)), "user") == 0,
          "empty chat, no system role");
    cJSON_Delete(arr);
    /* a system message that is not first still takes the text */
    arr = parse_or_die("[{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"system\", \"content\": \"s\"}]");
    CHECK(srv_tools_rewrite_messages(arr, "T", true) == 0 && cJSON_GetArraySize(arr) == 2 &&
              strcmp(str_of(cJSON_GetArrayItem(arr, 1), "content"), "s\n\nT") == 0,
          "later system message");
    cJSON_Delete(arr);

    /* no system text (tool_choice none with tools in the history): only the history changes */
    arr = parse_or_die(history);
    CHECK(srv_tools_rewrite_messages(arr, NULL, true) == 0, "rewrite without system");
    CHECK(cJSON_GetArraySize(arr) == 5, "%d messages", cJSON_GetArraySize(arr));
    check_rewritten_history(arr, 0, "no system");
    cJSON_Delete(arr);

    /* an empty chat gets the system message alone */
    arr = cJSON_CreateArray();
    CHECK(srv_tools_rewrite_messages(arr, "S", true) == 0 && cJSON_GetArraySize(arr) == 1 &&
              strcmp(str_of(cJSON_GetArrayItem(arr, 0), "content"), "S") == 0,
          "empty chat");
    cJSON_Delete(arr);

    /* srv_tools_in_history */
    arr = parse_or_die("[{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"u\"},"
                       " {\"role\": \"assistant\", \"content\": \"a\"}]");
    EXPECT(!srv_tools_in_history(arr));
    cJSON_Delete(arr);
    arr = parse_or_die("[{\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"tool\", \"tool_call_id\": \"x\","
                       " \"content\": \"r\"}]");
    EXPECT(srv_tools_in_history(arr));
    cJSON_Delete(arr);
    arr = parse_or_die("[{\"role\": \"assistant\", \"content\": null, \"tool_calls\": []}]");
    EXPECT(srv_tools_in_history(arr));
    cJSON_Delete(arr);
    arr = cJSON_CreateArray();
    EXPECT(!srv_tools_in_history(arr));
    cJSON_Delete(arr);
}

int main(void)
{
    test_valid_splits();
    test_valid_are_grammar_sentences();
    test_outside_layout();
    test_callback_stops();
    test_message();
    test_prompt();
    test_rewrite();
    return tu_finish("test_tool_calls");
}
