/* Benchmark (prints, never fails): the cost of grammar-constrained decoding on the real Phi-3
 * vocabulary: building the vocabulary trie, one token mask at a structural position, inside a
 * string and inside a number (uncached, then the same position again from the matcher's cache),
 * and whole ~100-token generations of mask + accept_token per step. Not a correctness test
 * (tests/engine/test_grammar.c checks the masks against brute force).
 * Usage: bench_grammar [FIXTURES_DIR] [TOKENS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grammar.h"
#include "json.h"
#include "json_schema.h"
#include "tokenizer.h"

#define VOCAB 32064 /* Phi-3's vocab_size: the logits' width, past the tokenizer's 32011 ids */
#define WORDS ((VOCAB + 31) / 32)
#define REPS 5

struct schema_case {
    const char *name;
    const char *schema;  /* NULL: json_object mode */
    const char *in_string, *in_number; /* prefixes that end inside a string / a number */
};

static const struct schema_case cases[] = {
    {"json_object", NULL, "{\"name\": \"ab", "{\"n\": 12"},
    {"person",
     "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":"
     "\"integer\"},\"email\":{\"type\":\"string\",\"maxLength\":64},\"tags\":{\"type\":\"array\","
     "\"items\":{\"type\":\"string\"},\"maxItems\":8}},\"required\":[\"name\",\"age\"],"
     "\"additionalProperties\":false}",
     "{\"name\": \"ab", "{\"name\": \"ab\", \"age\": 12"},
    {"scores",
     "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"minLength\":1,"
     "\"maxLength\":200},\"score\":{\"type\":\"number\"},\"grade\":{\"enum\":[\"A\",\"B\",\"C\"]}},"
     "\"required\":[\"name\",\"score\",\"grade\"]}",
     "{\"name\": \"ab", "{\"name\": \"ab\", \"score\": 1.5"},
    {"tree",
     "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"
     "\"value\":{\"anyOf\":[{\"type\":\"number\"},{\"type\":\"null\"}]},\"children\":{\"type\":"
     "\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":[\"name\"]}},"
     "\"$ref\":\"#/$defs/node\"}",
     "{\"name\": \"ab", "{\"name\": \"ab\", \"value\": 12"},
    /* Several parses alive at once inside the string. */
    {"anyOf-strings",
     "{\"anyOf\":[{\"type\":\"string\",\"maxLength\":100},{\"type\":\"string\",\"minLength\":2},"
     "{\"enum\":[\"abc\",\"abd\",12.5]},{\"type\":\"number\"}]}",
     "\"ab", "12"},
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median ms of an uncached mask after prefix (a fresh matcher each time), and of the same
 * mask again from the cache; *allowed is the mask's count. Returns 0, or -1 when the grammar
 * refuses the prefix or a mask fails. */
static int time_mask(const struct eng_grammar *g, const struct eng_grammar_vocab *v,
                     const char *prefix, uint32_t *allow, double *uncached, double *cached,
                     int64_t *allowed)
{
    double t_un[REPS], t_ca[REPS];
    for (int r = 0; r < REPS; r++) {
        struct eng_grammar_matcher *m = NULL;
        if (eng_grammar_matcher_create(g, v, &m) != 0)
            return -1;
        if (eng_grammar_matcher_accept_bytes(m, prefix, strlen(prefix)) != 0) {
            eng_grammar_matcher_destroy(m);
            return -1;
        }
        double t0 = now_ms();
        int64_t n = eng_grammar_matcher_mask(m, VOCAB, allow);
        double t1 = now_ms();
        int64_t n2 = eng_grammar_matcher_mask(m, VOCAB, allow);
        double t2 = now_ms();
        eng_grammar_matcher_destroy(m);
        if (n < 0 || n2 != n)
            return -1;
        t_un[r] = t1 - t0;
        t_ca[r] = t2 - t1;
        *allowed = n;
    }
    qsort(t_un, REPS, sizeof t_un[0], cmp_double);
    qsort(t_ca, REPS, sizeof t_ca[0], cmp_double);
    *uncached = t_un[REPS / 2];
    *cached = t_ca[REPS / 2];
    return 0;
}

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A generation of up to n_tokens steps of mask + accept_token: the allowed token with the
 * smallest id (random == false) or a uniformly drawn allowed one. It ends early when the text
 * is complete and nothing may follow, or (random walks) complete at a coin toss, as if the
 * model chose the end-of-sequence token. Gives the steps done, the ms, and the bytes made. */
static int generate(const struct eng_grammar *g, const struct eng_grammar_vocab *v,
                    const struct eng_tokenizer *tok, bool random, int n_tokens, uint32_t *allow,
                    int *steps, double *ms, size_t *bytes, bool *complete, char *sample,
                    size_t sample_cap)
{
    struct eng_grammar_matcher *m = NULL;
    if (eng_grammar_matcher_create(g, v, &m) != 0)
        return -1;
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int rc = 0;
    *steps = 0;
    *bytes = 0;
    double t0 = now_ms();
    while (*steps < n_tokens) {
        if (eng_grammar_matcher_complete(m) &&
            (!eng_grammar_matcher_can_continue(m) || (random && next_rand(&rng) % 8 == 0)))
            break;
        int64_t n = eng_grammar_matcher_mask(m, VOCAB, allow);
        if (n <= 0) {
            rc = n < 0 ? -1 : 0;
            break;
        }
        int64_t pick = random ? (int64_t)(next_rand(&rng) % (uint64_t)n) : 0;
        int32_t id = -1;
        for (int32_t w = 0; w < WORDS && id < 0; w++) {
            uint32_t bits = allow[w];
            int c = __builtin_popcount(bits);
            if (pick >= c) {
                pick -= c;
                continue;
            }
            for (; pick > 0; pick--)
                bits &= bits - 1;
            id = w * 32 + __builtin_ctz(bits);
        }
        if (id < 0 || eng_grammar_matcher_accept_token(m, id) != 0) {
            rc = -1;
            break;
        }
        char buf[64];
        int len = eng_tokenizer_token_bytes(tok, id, buf, sizeof buf);
        /* The first bytes, printable ASCII as is and anything else as '.', for the table. */
        for (int k = 0; k < len; k++, (*bytes)++)
            if (*bytes + 1 < sample_cap)
                sample[*bytes] = buf[k] >= 0x20 && buf[k] < 0x7F ? buf[k] : '.';
        (*steps)++;
    }
    *ms = now_ms() - t0;
    sample[*bytes < sample_cap ? *bytes : sample_cap - 1] = '\0';
    *complete = eng_grammar_matcher_complete(m);
    eng_grammar_matcher_destroy(m);
    return rc;
}

static void print_mask(const char *what, int rc, double un, double ca, int64_t n)
{
    if (rc != 0)
        printf("  %-22s %12s\n", what, "n/a");
    else
        printf("  %-22s %10.3f ms %10.4f ms %9lld\n", what, un, ca, (long long)n);
}

int main(int argc, char **argv)
{
    const char *fixtures = argc > 1 ? argv[1] : "tests/fixtures";
    int n_tokens = argc > 2 ? atoi(argv[2]) : 100;
    if (n_tokens < 1)
        n_tokens = 100;
    char dir[4096], err[512] = "";
    snprintf(dir, sizeof dir, "%s/tokenizer/phi3", fixtures);
    struct eng_tokenizer *tok = NULL;
    if (eng_tokenizer_load_dir(dir, &tok, err, sizeof err) != 0) {
        fprintf(stderr, "bench_grammar: cannot load %s: %s\n", dir, err);
        return 1;
    }
    double t0 = now_ms();
    struct eng_grammar_vocab *v = NULL;
    int rc = eng_grammar_vocab_create(tok, VOCAB, &v);
    double t_vocab = now_ms() - t0;
    uint32_t *allow = malloc(WORDS * sizeof *allow);
    if (rc != 0 || !allow) {
        fprintf(stderr, "bench_grammar: vocab_create failed (%d)\n", rc);
        return 1;
    }
    printf("bench_grammar: Phi-3 vocabulary (%d ids): trie built in %.1f ms\n", VOCAB, t_vocab);
    printf("masks: median of %d, uncached (fresh matcher) then the same position again\n", REPS);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct schema_case *sc = &cases[i];
        struct eng_json_doc *doc = NULL;
        struct eng_json_error jerr;
        struct eng_grammar *g = NULL;
        t0 = now_ms();
        if (sc->schema && eng_json_parse(sc->schema, strlen(sc->schema), NULL, &doc, &jerr) != 0) {
            fprintf(stderr, "bench_grammar: %s: bad schema text: %s\n", sc->name, jerr.message);
            return 1;
        }
        if (eng_json_schema_compile(doc ? eng_json_root(doc) : NULL, "schema", &g, err,
                                    sizeof err) != 0) {
            fprintf(stderr, "bench_grammar: %s: %s\n", sc->name, err);
            return 1;
        }
        double t_compile = now_ms() - t0;
        printf("\n%s: compiled in %.3f ms (%d rules, %zu elements)\n", sc->name, t_compile,
               (int)eng_grammar_n_rules(g), eng_grammar_n_elems(g));
        printf("  %-22s %13s %13s %9s\n", "position", "uncached", "cached", "allowed");
        double un, ca;
        int64_t n = 0;
        rc = time_mask(g, v, "", allow, &un, &ca, &n);
        print_mask("start", rc, un, ca, n);
        rc = time_mask(g, v, "{", allow, &un, &ca, &n);
        print_mask("after {", rc, un, ca, n);
        rc = time_mask(g, v, sc->in_string, allow, &un, &ca, &n);
        print_mask("inside a string", rc, un, ca, n);
        rc = time_mask(g, v, sc->in_number, allow, &un, &ca, &n);
        print_mask("inside a number", rc, un, ca, n);
        for (int r = 0; r < 2; r++) {
            int steps;
            size_t bytes;
            double ms;
            bool complete;
            char sample[48];
            rc = generate(g, v, tok, r == 1, n_tokens, allow, &steps, &ms, &bytes, &complete,
                          sample, sizeof sample);
            if (rc != 0)
                printf("  generate (%s): failed\n", r ? "random" : "smallest id");
            else
                printf("  generate (%-11s) %4d tokens %5zu bytes %9.2f ms %8.3f ms/token%s\n"
                       "    %s...\n", r ? "random" : "smallest id", steps, bytes, ms,
                       steps ? ms / steps : 0.0, complete ? " (complete)" : "", sample);
        }
        eng_grammar_destroy(g);
        eng_json_free(doc);
    }
    free(allow);
    eng_grammar_vocab_destroy(v);
    eng_tokenizer_destroy(tok);
    return 0;
}
