/* Structured output through the engine (engine.c with grammar.c and json_schema.c): every
 * choice of every request with a schema produces text that is strict JSON, that the schema's
 * grammar accepts whole, that ends as "stop" right after the value, and whose tokens spell
 * exactly that text; a max_tokens cut ends as "length" with a valid prefix. On a device backend
 * (the cuda-emu suite) the grammar's bans travel as sample-op mods: the tokens must equal host
 * sampling's, seeded draws included. Runs the tiny random phi3-demo, which knows nothing of
 * JSON, so only the grammar makes the text valid. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "engine.h"
#include "json.h"
#include "json_schema.h"
#include "../test_util.h"

#define MAX_N 4
#define MAX_OUT 512

static const char *fixtures;
static const char *device = "cpu";

struct run {
    const char *schema;     /* NULL: json_object */
    int32_t n, max_tokens;
    float temperature;
    bool seeded;
    int64_t seed;
    int32_t favour;         /* >= 0: this id gets logit_bias +100 */
    /* results */
    int32_t out[MAX_N][MAX_OUT];
    int32_t n_out[MAX_N];
    char text[MAX_N][8192];
    size_t text_len[MAX_N];
    enum eng_finish_reason fin[MAX_N];
    char error[256];
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static uint64_t wakes;

static void wake_cb(void *user)
{
    (void)user;
    pthread_mutex_lock(&mu);
    wakes++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static struct eng_grammar *compile(const char *schema)
{
    struct eng_json_doc *doc = NULL;
    struct eng_json_error jerr;
    if (schema && eng_json_parse(schema, strlen(schema), NULL, &doc, &jerr) != 0) {
        FAIL("bad schema %s", schema);
        return NULL;
    }
    struct eng_grammar *g = NULL;
    char err[256];
    int rc = eng_json_schema_compile(doc ? eng_json_root(doc) : NULL, "schema", &g, err, sizeof err);
    CHECK(rc == 0, "compile %s: %s", schema ? schema : "json_object", err);
    eng_json_free(doc);
    return g;
}

/* Runs one request to the end. Returns the submit code. */
static int run_one(struct eng_engine *e, const int32_t *prompt, int32_t n_prompt, struct run *r)
{
    struct eng_grammar *g = compile(r->schema);
    if (!g)
        return -1;
    struct eng_request q;
    memset(&q, 0, sizeof q);
    q.prompt = prompt;
    q.n_prompt = n_prompt;
    eng_sampling_params_init_default(&q.sampling);
    q.sampling.temperature = r->temperature;
    q.sampling.has_seed = r->seeded;
    q.sampling.seed = r->seed;
    struct eng_logit_bias bias = {r->favour, 100.0f};
    if (r->favour >= 0) {
        q.sampling.logit_bias = &bias;
        q.sampling.n_logit_bias = 1;
    }
    q.max_tokens = r->max_tokens;
    q.n = r->n;
    q.skip_special_tokens = true;
    q.grammar = g;
    struct eng_handle *h = NULL;
    char err[256];
    int rc = eng_engine_submit(e, &q, wake_cb, r, &h, err, sizeof err);
    eng_grammar_destroy(g); /* the engine keeps its own copy */
    if (rc != 0) {
        snprintf(r->error, sizeof r->error, "%s", err);
        return rc;
    }
    for (;;) {
        pthread_mutex_lock(&mu);
        uint64_t seen = wakes;
        pthread_mutex_unlock(&mu);
        const struct eng_event *ev;
        int k;
        while ((k = eng_handle_next(h, &ev)) == 1) {
            int c = ev->choice;
            if (r->text_len[c] + ev->text_len < sizeof r->text[c]) {
                memcpy(r->text[c] + r->text_len[c], ev->text, ev->text_len);
                r->text_len[c] += ev->text_len;
            }
            for (int32_t i = 0; i < ev->n_tokens && r->n_out[c] < MAX_OUT; i++)
                r->out[c][r->n_out[c]++] = ev->tokens[i].token;
            if (ev->finish != ENG_FINISH_NONE)
                r->fin[c] = ev->finish;
            if (ev->error)
                snprintf(r->error, sizeof r->error, "%s", ev->error);
        }
        if (k < 0)
            break;
        pthread_mutex_lock(&mu);
        while (wakes == seen)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
    }
    eng_handle_release(h);
    return 0;
}

/* The text's bytes are the concatenation of its tokens' bytes (no leading-space strip applies:
 * the prompt renders text before it). */
static bool tokens_spell_text(const struct eng_tokenizer *tok, const struct run *r, int c)
{
    char buf[8192], piece[256];
    size_t len = 0;
    for (int32_t i = 0; i < r->n_out[c]; i++) {
        int n = eng_tokenizer_token_bytes(tok, r->out[c][i], piece, sizeof piece);
        if (n < 0)
            return false; /* an eos would end the text; the grammar stops before one */
        if (len + (size_t)n > sizeof buf)
            return false;
        memcpy(buf + len, piece, (size_t)n);
        len += (size_t)n;
    }
    return len == r->text_len[c] && memcmp(buf, r->text[c], len) == 0;
}

/* Whether text is a whole sentence (or, for a cut, a prefix) of schema's grammar. */
static bool grammar_takes(const char *schema, const char *text, size_t len, bool whole)
{
    struct eng_grammar *g = compile(schema);
    struct eng_grammar_matcher *m = NULL;
    bool ok = g && eng_grammar_matcher_create(g, NULL, &m) == 0 &&
              eng_grammar_matcher_accept_bytes(m, text, len) == 0 &&
              (!whole || (eng_grammar_matcher_complete(m) && !eng_grammar_matcher_can_continue(m)));
    eng_grammar_matcher_destroy(m);
    eng_grammar_destroy(g);
    return ok;
}

static const char *const schemas[] = {
    NULL, /* json_object */
    "{\"type\": \"object\", \"properties\": {\"ok\": {\"type\": \"boolean\"}, \"color\": {\"enum\":"
    " [\"red\", \"green\", \"blue\"]}, \"name\": {\"type\": \"string\", \"maxLength\": 6}, \"n\":"
    " {\"type\": \"integer\"}, \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\","
    " \"maxLength\": 3}, \"maxItems\": 2}}, \"required\": [\"ok\", \"color\", \"name\", \"n\","
    " \"tags\"], \"additionalProperties\": false}",
    "{\"type\": \"array\", \"items\": {\"anyOf\": [{\"type\": \"null\"}, {\"type\": \"number\"}]},"
    " \"minItems\": 1, \"maxItems\": 4}",
    "{\"enum\": [\"alpha\", \"beta\", \"gamma delta\", 42]}",
    "{\"const\": true}",
    "{\"$defs\": {\"t\": {\"type\": \"object\", \"properties\": {\"v\": {\"type\": \"boolean\"},"
    " \"k\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/$defs/t\"}, \"maxItems\": 2}},"
    " \"required\": [\"v\", \"k\"]}}, \"$ref\": \"#/$defs/t\"}",
};
#define N_SCHEMAS (sizeof schemas / sizeof schemas[0])

static void check_run(const struct eng_tokenizer *tok, const struct run *r, const char *what)
{
    for (int c = 0; c < r->n; c++) {
        const char *t = r->text[c];
        size_t len = r->text_len[c];
        CHECK(tokens_spell_text(tok, r, c), "%s choice %d: the tokens do not spell the text", what, c);
        if (r->fin[c] == ENG_FINISH_LENGTH) {
            CHECK(r->n_out[c] == r->max_tokens, "%s: length after %d tokens", what, r->n_out[c]);
            CHECK(grammar_takes(r->schema, t, len, false), "%s: cut text [%.*s] leaves the grammar",
                  what, (int)len, t);
            continue;
        }
        CHECK(r->fin[c] == ENG_FINISH_STOP, "%s choice %d: finish %d (%s)", what, c, r->fin[c],
              r->error);
        struct eng_json_doc *doc = NULL;
        struct eng_json_error jerr;
        CHECK(eng_json_parse(t, len, NULL, &doc, &jerr) == 0, "%s choice %d: not JSON (%s): [%.*s]",
              what, c, jerr.message, (int)len, t);
        if (doc && !r->schema)
            CHECK(eng_json_root(doc)->type == ENG_JSON_OBJECT, "json_object gave [%.*s]", (int)len, t);
        eng_json_free(doc);
        CHECK(grammar_takes(r->schema, t, len, true), "%s choice %d: [%.*s] is not a whole sentence",
              what, c, (int)len, t);
        CHECK(len > 0 && t[len - 1] != ' ' && t[len - 1] != '\n', "%s: text goes on after the value",
              what);
    }
}

static struct eng_engine *make_engine(bool host_sampling)
{
    char dir[4096], err[512];
    snprintf(dir, sizeof dir, "%s/models/phi3-demo", fixtures);
    struct eng_engine_options o;
    eng_engine_options_init(&o);
    o.model_dir = dir;
    o.device = device;
    o.n_threads = 2;
    o.kv_cache_bytes = (int64_t)16 << 20;
    o.max_batched_tokens = 256; /* small activations: two engines fit the emulator's memory */
    o.max_seqs = 8;
    o.host_sampling = host_sampling;
    struct eng_engine *e = NULL;
    if (eng_engine_create(&o, &e, err, sizeof err) != 0) {
        fprintf(stderr, "engine: %s\n", err);
        exit(1);
    }
    return e;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURES_DIR [cpu|ref|cuda]\n", argv[0]);
        return 2;
    }
    fixtures = argv[1];
    if (argc > 2)
        device = argv[2];
    bool on_device = strcmp(device, "cuda") == 0;
    if (on_device && kern_cuda_device_count() == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    struct eng_engine *e = make_engine(false);
    /* On a device, the same requests with every row's logits brought back to the host: the
     * masked host sampler is the reference for the sample op's bans. */
    struct eng_engine *host = on_device ? make_engine(true) : NULL;
    const struct eng_tokenizer *tok = eng_engine_tokenizer(e);
    const char *chat = "<|user|>\nAnswer in JSON.<|end|>\n<|assistant|>\n";
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (eng_tokenizer_encode(tok, chat, strlen(chat), 1, &ids, &n_ids) != 0) {
        fprintf(stderr, "encode failed\n");
        return 1;
    }
    static struct run r, hr;
    int runs = 0, stops = 0;
    for (size_t s = 0; s < N_SCHEMAS; s++) {
        for (int mode = 0; mode < 3; mode++) {
            memset(&r, 0, sizeof r);
            r.favour = -1;
            r.schema = schemas[s];
            r.n = mode == 2 ? 3 : 1;
            r.max_tokens = 400;
            r.temperature = mode == 0 ? 0.0f : 1.0f;
            r.seeded = true;
            r.seed = 1000 + (int64_t)s;
            char what[64];
            snprintf(what, sizeof what, "schema %zu mode %d", s, mode);
            CHECK(run_one(e, ids, (int32_t)n_ids, &r) == 0, "%s: submit: %s", what, r.error);
            check_run(tok, &r, what);
            for (int c = 0; c < r.n; c++) {
                stops += r.fin[c] == ENG_FINISH_STOP;
                if (s == 1 && c == 0)
                    printf("%s: [%.*s]\n", what, (int)r.text_len[c], r.text[c]);
            }
            runs += r.n;
            if (host) {
                memset(&hr, 0, sizeof hr);
                hr.schema = r.schema;
                hr.n = r.n;
                hr.max_tokens = r.max_tokens;
                hr.temperature = r.temperature;
                hr.seeded = r.seeded;
                hr.seed = r.seed;
                hr.favour = -1;
                CHECK(run_one(host, ids, (int32_t)n_ids, &hr) == 0, "host submit");
                for (int c = 0; c < r.n; c++)
                    CHECK(hr.n_out[c] == r.n_out[c] &&
                              memcmp(hr.out[c], r.out[c], (size_t)r.n_out[c] * sizeof r.out[c][0]) == 0,
                          "%s choice %d: device and host sampling differ: [%.*s] vs [%.*s]", what, c,
                          (int)r.text_len[c], r.text[c], (int)hr.text_len[c], hr.text[c]);
            }
        }
    }
    /* Every schema here can end within 400 tokens; a random model still wanders, but most
     * choices must close their value (a grammar that never lets the text end would fail). */
    printf("%d of %d choices ended with a complete value\n", stops, runs);
    CHECK(stops * 2 > runs, "only %d of %d choices completed", stops, runs);
    /* A cut: 3 tokens of an object. */
    memset(&r, 0, sizeof r);
    r.favour = -1;
    r.schema = schemas[1];
    r.n = 1;
    r.max_tokens = 3;
    CHECK(run_one(e, ids, (int32_t)n_ids, &r) == 0, "cut submit");
    CHECK(r.fin[0] == ENG_FINISH_LENGTH, "cut: finish %d", r.fin[0]);
    check_run(tok, &r, "cut");
    /* {"const": true}: exactly "true" (with leading whitespace at most). */
    memset(&r, 0, sizeof r);
    r.favour = -1;
    r.schema = "{\"const\": true}";
    r.n = 1;
    r.max_tokens = 50;
    CHECK(run_one(e, ids, (int32_t)n_ids, &r) == 0, "const submit");
    size_t lead = 0;
    while (lead < r.text_len[0] && strchr(" \t\r\n", r.text[0][lead]))
        lead++;
    CHECK(r.fin[0] == ENG_FINISH_STOP && r.text_len[0] - lead == 4 &&
              memcmp(r.text[0] + lead, "true", 4) == 0,
          "const: [%.*s]", (int)r.text_len[0], r.text[0]);
    /* An integer may always take one more digit, so only eos can end it: eos is allowed once
     * the text is complete, and not before (a strong bias on it still yields one digit). */
    memset(&r, 0, sizeof r);
    r.schema = "{\"type\": \"integer\"}";
    r.n = 1;
    r.max_tokens = 50;
    r.favour = eng_engine_model_config(e)->eos_token_ids[0];
    CHECK(run_one(e, ids, (int32_t)n_ids, &r) == 0, "integer submit");
    CHECK(r.fin[0] == ENG_FINISH_STOP && r.n_out[0] >= 2 && r.out[0][r.n_out[0] - 1] == r.favour,
          "integer then eos: finish %d, %d tokens", r.fin[0], r.n_out[0]);
    CHECK(r.text_len[0] > 0 && r.text[0][r.text_len[0] - 1] >= '0' && r.text[0][r.text_len[0] - 1] <= '9' &&
              grammar_takes(r.schema, r.text[0], r.text_len[0], false),
          "integer: [%.*s]", (int)r.text_len[0], r.text[0]);
    free(ids);
    eng_engine_destroy(host);
    eng_engine_destroy(e);
    return tu_finish("structured");
}
