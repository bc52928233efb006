/* Fuzz target for structured output: the input is a JSON Schema text, compiled by
 * engine/json_schema.c into an engine/grammar.h grammar, then walked byte by byte with a
 * matcher along a few seeded random paths. Every sentence a walk completes must be strict JSON
 * (engine/json.h), an object in json_object mode, and valid for the schema as far as the small
 * validator below understands it; a matcher that is not complete must always take some byte.
 * It is not a test of token masks (tests/engine/test_grammar.c does those on the real vocabulary).
 *
 * Known limitation, left to the engine: where a schema lets an object take member names it
 * does not list (json_object mode, additionalProperties, any-value schemas) the grammar cannot
 * stop a key from repeating, and the strict parser refuses duplicate keys; such sentences are
 * let through here (schema_open), duplicates anywhere else fail.
 *
 * The walks' seed is a hash of the whole input, so the corpus files are plain schemas.
 * Replayed in CI through tests/fuzz/replay_main.c. The real fuzzer is a one-off, outside meson,
 * from the repository root (copy the seeds first: libFuzzer writes new inputs into its corpus):
 *   clang++ -O1 -std=c++17 -Iengine -c engine/sp_wrapper.cpp -o /tmp/sp_wrapper.o
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *     -std=c17 -D_GNU_SOURCE -Iengine tests/fuzz/fuzz_json_schema.c engine/json_schema.c \
 *     engine/grammar.c engine/json.c engine/tokenizer.c engine/file_util.c /tmp/sp_wrapper.o \
 *     -lsentencepiece -lcjson -lstdc++ -lm -o /tmp/fuzz_json_schema
 *   cp -r tests/fuzz/corpus/json_schema /tmp/schema-corpus
 *   /tmp/fuzz_json_schema -max_total_time=180 -max_len=2048 /tmp/schema-corpus
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"
#include "json.h"
#include "json_schema.h"

#include "../test_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TEXT_MAX 2000        /* a walk that reaches this many bytes unfinished is dropped */
#define SOFT_MAX 400         /* after a random 8 .. SOFT_MAX bytes a walk heads for the end */
#define TRIES_MAX 200000     /* accept_bytes calls per input, over all walks */
#define SCHEMA_WALKS 8
#define OBJECT_WALKS 2
#define VALIDATE_DEPTH 64

/* Per-input state: the RNG, the tries left, and the input for messages. */
struct fz {
    uint64_t rng;
    long tries_left;
    const uint8_t *input;
    size_t input_len;
    const struct eng_json *root; /* the schema document, NULL in json_object mode */
};

static uint64_t next_rand(struct fz *f)
{
    /* splitmix64 */
    uint64_t z = (f->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* s as a C-escaped, NUL-terminated string in out (cut to fit). */
static const char *escaped(const uint8_t *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        uint8_t c = s[i];
        if (c >= 0x20 && c < 0x7F && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    out[o < cap ? o : cap - 1] = '\0';
    return out;
}

/* Prints the input and the text of the failing walk; the REQUIRE that follows aborts. */
static void report(const struct fz *f, const char *text, size_t len)
{
    char a[2048], b[4 * TEXT_MAX + 8];
    fprintf(stderr, "fuzz_json_schema: schema: \"%s\"\n",
            escaped(f->input, f->input_len, a, sizeof a));
    fprintf(stderr, "fuzz_json_schema: text (%zu bytes): \"%s\"\n", len,
            escaped((const uint8_t *)text, len, b, sizeof b));
}

/* ---- a small validator: JSON Schema semantics for the keywords it knows ---- */

static bool json_equal(const struct eng_json *a, const struct eng_json *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case ENG_JSON_NULL: return true;
    case ENG_JSON_BOOL: return a->b == b->b;
    case ENG_JSON_NUMBER: return a->u.num.d == b->u.num.d;
    case ENG_JSON_STRING: return a->len == b->len && memcmp(a->u.str, b->u.str, a->len) == 0;
    case ENG_JSON_ARRAY: {
        if (a->len != b->len)
            return false;
        for (const struct eng_json *x = a->u.child, *y = b->u.child; x; x = x->next, y = y->next)
            if (!json_equal(x, y))
                return false;
        return true;
    }
    default: {
        if (a->len != b->len)
            return false;
        for (const struct eng_json *x = a->u.child; x; x = x->next) {
            const struct eng_json *y = eng_json_get(b, x->key);
            if (!y || !json_equal(x, y))
                return false;
        }
        return true;
    }
    }
}

static bool type_is(const struct eng_json *v, const char *name)
{
    static const char *const names[] = {"null", "boolean", "number", "string", "array", "object"};
    if (strcmp(name, "integer") == 0)
        return v->type == ENG_JSON_NUMBER && v->u.num.d == floor(v->u.num.d);
    return strcmp(name, names[v->type]) == 0;
}

static bool type_ok(const struct eng_json *v, const struct eng_json *t)
{
    if (t->type == ENG_JSON_STRING)
        return type_is(v, t->u.str);
    for (const struct eng_json *e = t->u.child; e; e = e->next)
        if (e->type == ENG_JSON_STRING && type_is(v, e->u.str))
            return true;
    return false;
}

/* A count keyword's value, or dflt when absent. */
static double count_of(const struct eng_json *s, const char *k, double dflt)
{
    const struct eng_json *v = eng_json_get(s, k);
    return v && v->type == ENG_JSON_NUMBER ? v->u.num.d : dflt;
}

static size_t code_points(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((uint8_t)s[i] & 0xC0) != 0x80;
    return k;
}

/* Whether v is valid for schema s (a schema the compiler accepted). Subschemas behind $ref are
 * not followed (taken as valid); anyOf/oneOf need one match (the grammar does not tell them
 * apart), allOf all. */
static bool valid(const struct eng_json *s, const struct eng_json *v, int depth)
{
    if (depth > VALIDATE_DEPTH)
        return true;
    if (s->type == ENG_JSON_BOOL)
        return s->b;
    if (s->type != ENG_JSON_OBJECT || eng_json_get(s, "$ref"))
        return true;
    const struct eng_json *k;
    if ((k = eng_json_get(s, "const")) && !json_equal(k, v))
        return false;
    if ((k = eng_json_get(s, "enum"))) {
        bool any = false;
        for (const struct eng_json *e = k->u.child; e && !any; e = e->next)
            any = json_equal(e, v);
        if (!any)
            return false;
    }
    if ((k = eng_json_get(s, "type")) && !type_ok(v, k))
        return false;
    if ((k = eng_json_get(s, "allOf")))
        for (const struct eng_json *e = k->u.child; e; e = e->next)
            if (!valid(e, v, depth + 1))
                return false;
    const char *combinators[] = {"anyOf", "oneOf"};
    for (int i = 0; i < 2; i++) {
        if (!(k = eng_json_get(s, combinators[i])))
            continue;
        bool any = false;
        for (const struct eng_json *e = k->u.child; e && !any; e = e->next)
            any = valid(e, v, depth + 1);
        if (!any)
            return false;
    }
    if (v->type == ENG_JSON_OBJECT) {
        const struct eng_json *props = eng_json_get(s, "properties");
        const struct eng_json *extra = eng_json_get(s, "additionalProperties");
        for (const struct eng_json *m = v->u.child; m; m = m->next) {
            const struct eng_json *p = eng_json_get(props, m->key);
            if (p ? !valid(p, m, depth + 1) : extra && !valid(extra, m, depth + 1))
                return false;
        }
        if ((k = eng_json_get(s, "required")))
            for (const struct eng_json *r = k->u.child; r; r = r->next)
                if (r->type == ENG_JSON_STRING && !eng_json_get(v, r->u.str))
                    return false;
    }
    if (v->type == ENG_JSON_ARRAY) {
        if ((double)v->len < count_of(s, "minItems", 0) ||
            (double)v->len > count_of(s, "maxItems", INFINITY))
            return false;
        const struct eng_json *prefix = eng_json_get(s, "prefixItems");
        const struct eng_json *items = eng_json_get(s, "items");
        const struct eng_json *p = prefix ? prefix->u.child : NULL;
        for (const struct eng_json *e = v->u.child; e; e = e->next) {
            const struct eng_json *sub = p ? p : items;
            if (p)
                p = p->next;
            if (sub && !valid(sub, e, depth + 1))
                return false;
        }
    }
    if (v->type == ENG_JSON_STRING) {
        double n = (double)code_points(v->u.str, v->len);
        if (n < count_of(s, "minLength", 0) || n > count_of(s, "maxLength", INFINITY))
            return false;
    }
    return true;
}

/* Whether s lets some object take member names the schema does not list: json_object mode,
 * any-value schemas (true, {}, a missing "items", required names without a schema),
 * additionalProperties true or a schema. A context-free grammar cannot keep such names apart,
 * so those objects may repeat a key (see the file comment). $ref is not followed: taken as open. */
static bool schema_open(const struct eng_json *s, int depth)
{
    if (depth > VALIDATE_DEPTH || s->type == ENG_JSON_BOOL)
        return true;
    if (s->type != ENG_JSON_OBJECT || eng_json_get(s, "$ref"))
        return true;
    if (eng_json_get(s, "const") || eng_json_get(s, "enum"))
        return false;
    const char *combinators[] = {"anyOf", "oneOf", "allOf"};
    for (int i = 0; i < 3; i++) {
        const struct eng_json *k = eng_json_get(s, combinators[i]);
        for (const struct eng_json *e = k ? k->u.child : NULL; e; e = e->next)
            if (schema_open(e, depth + 1))
                return true;
        if (k)
            return false;
    }
    const struct eng_json *props = eng_json_get(s, "properties");
    const struct eng_json *req = eng_json_get(s, "required");
    const struct eng_json *extra = eng_json_get(s, "additionalProperties");
    const struct eng_json *items = eng_json_get(s, "items");
    const struct eng_json *prefix = eng_json_get(s, "prefixItems");
    const struct eng_json *type = eng_json_get(s, "type");
    bool obj = props || req || extra, arr = items || prefix || eng_json_get(s, "minItems") ||
                                           eng_json_get(s, "maxItems");
    bool str = eng_json_get(s, "minLength") || eng_json_get(s, "maxLength");
    if (type) {
        struct eng_json any_obj = {.type = ENG_JSON_OBJECT}, any_arr = {.type = ENG_JSON_ARRAY};
        obj = type_ok(&any_obj, type);
        arr = type_ok(&any_arr, type);
    } else if (!obj && !arr && !str) {
        return true; /* any value */
    }
    if (obj) {
        if (extra && !(extra->type == ENG_JSON_BOOL && !extra->b))
            return true;
        for (const struct eng_json *p = props ? props->u.child : NULL; p; p = p->next)
            if (schema_open(p, depth + 1))
                return true;
        for (const struct eng_json *r = req ? req->u.child : NULL; r; r = r->next)
            if (r->type == ENG_JSON_STRING && !eng_json_get(props, r->u.str))
                return true;
    }
    if (arr) {
        if (!items || schema_open(items, depth + 1))
            return true;
        for (const struct eng_json *p = prefix ? prefix->u.child : NULL; p; p = p->next)
            if (schema_open(p, depth + 1))
                return true;
    }
    return false;
}

/* ---- walks ---- */

/* Bytes tried first once a walk heads for the end: close strings, objects and arrays, then
 * the shortest values. Every other byte follows in random order. */
static const char closing[] = "\"}]0n";

/* One try of byte c: 1 accepted, 0 rejected, -1 too many parses (the matcher is unchanged). */
static int try_byte(struct fz *f, struct eng_grammar_matcher *m, uint8_t c)
{
    f->tries_left--;
    int rc = eng_grammar_matcher_accept_bytes(m, (const char *)&c, 1);
    if (rc == 0)
        return 1;
    REQUIRE(rc == ENG_GRAMMAR_ERR_REJECTED || rc == ENG_GRAMMAR_ERR_AMBIGUOUS,
            "accept_bytes returned %d", rc);
    return rc == ENG_GRAMMAR_ERR_AMBIGUOUS ? -1 : 0;
}

/* The text again, fed to a fresh matcher in random pieces: the same verdict as byte by byte. */
static void replay_in_pieces(struct fz *f, const struct eng_grammar *g, const char *text,
                             size_t len)
{
    struct eng_grammar_matcher *m = NULL;
    REQUIRE(eng_grammar_matcher_create(g, NULL, &m) == 0, "matcher_create");
    size_t at = 0;
    while (at < len) {
        size_t n = 1 + (size_t)(next_rand(f) % 64);
        if (n > len - at)
            n = len - at;
        int rc = eng_grammar_matcher_accept_bytes(m, text + at, n);
        if (rc == ENG_GRAMMAR_ERR_AMBIGUOUS)
            break; /* more parses in flight than one byte at a time had; not a verdict */
        if (rc != 0)
            report(f, text, len);
        REQUIRE(rc == 0, "the walk's text fed in pieces is refused (%d) at byte %zu", rc, at);
        at += n;
    }
    if (at == len && !eng_grammar_matcher_complete(m))
        report(f, text, len);
    REQUIRE(at < len || eng_grammar_matcher_complete(m), "the walk's text fed in pieces is not complete");
    eng_grammar_matcher_destroy(m);
}

/* A finished walk's text: strict JSON, an object in json_object mode, valid for the schema. */
static void check_sentence(struct fz *f, const struct eng_grammar *g, const char *text, size_t len)
{
    struct eng_json_opts opts = {.max_depth = ENG_JSON_DEPTH_CEILING};
    struct eng_json_doc *doc = NULL;
    struct eng_json_error err;
    int rc = eng_json_parse(text, len, &opts, &doc, &err);
    if (rc == ENG_JSON_ERR_DUPLICATE_KEY && (!f->root || schema_open(f->root, 0)))
        return; /* the known limitation of open objects (file comment) */
    if (rc != 0)
        report(f, text, len);
    REQUIRE(rc == 0, "a sentence of the grammar is not strict JSON: %s at byte %zu (%s)",
            err.message, err.offset, err.path);
    const struct eng_json *v = eng_json_root(doc);
    if (!f->root) {
        if (v->type != ENG_JSON_OBJECT)
            report(f, text, len);
        REQUIRE(v->type == ENG_JSON_OBJECT, "json_object mode produced a non-object");
    } else {
        bool ok = valid(f->root, v, 0);
        if (!ok)
            report(f, text, len);
        REQUIRE(ok, "the document does not satisfy the schema");
    }
    eng_json_free(doc);
    replay_in_pieces(f, g, text, len);
}

static void walk(struct fz *f, const struct eng_grammar *g)
{
    struct eng_grammar_matcher *m = NULL;
    int rc = eng_grammar_matcher_create(g, NULL, &m);
    /* More than ENG_GRAMMAR_MAX_STACKS parses at the very start (an anyOf of hundreds of
     * distinct branches) is refused like any other step. */
    if (rc == ENG_GRAMMAR_ERR_AMBIGUOUS)
        return;
    REQUIRE(rc == 0, "matcher_create: %d", rc);
    char text[TEXT_MAX];
    size_t len = 0;
    size_t soft = 8 + (size_t)(next_rand(f) % SOFT_MAX);
    uint8_t order[256];
    for (;;) {
        bool complete = eng_grammar_matcher_complete(m);
        bool cont = eng_grammar_matcher_can_continue(m);
        if (!complete && !cont)
            report(f, text, len);
        REQUIRE(complete || cont, "the matcher is neither complete nor able to go on");
        if (complete && (!cont || len >= soft || next_rand(f) % 4 != 0)) {
            if (!cont) {
                /* can_continue false: no byte at all may follow. */
                for (int c = 0; c < 256; c++)
                    REQUIRE(try_byte(f, m, (uint8_t)c) != 1,
                            "byte 0x%02x accepted where can_continue is false", c);
            }
            check_sentence(f, g, text, len);
            break;
        }
        if (len == TEXT_MAX || f->tries_left <= 0)
            break; /* too long: unfinished, nothing to check */
        /* The order to try bytes in: a random permutation, the closing bytes first once the
         * walk is past its soft length. */
        for (int i = 0; i < 256; i++)
            order[i] = (uint8_t)i;
        for (int i = 255; i > 0; i--) {
            int j = (int)(next_rand(f) % (uint64_t)(i + 1));
            uint8_t t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        int accepted = -1;
        bool ambiguous = false;
        for (size_t i = 0; len >= soft && closing[i] && accepted < 0; i++) {
            int r = try_byte(f, m, (uint8_t)closing[i]);
            ambiguous |= r < 0;
            accepted = r == 1 ? (uint8_t)closing[i] : -1;
        }
        for (int i = 0; i < 256 && accepted < 0; i++) {
            int r = try_byte(f, m, order[i]);
            ambiguous |= r < 0;
            accepted = r == 1 ? order[i] : -1;
        }
        if (accepted >= 0) {
            text[len++] = (char)accepted;
            continue;
        }
        if (ambiguous)
            break; /* too many parses at once: the matcher's documented refusal */
        if (!complete)
            report(f, text, len);
        REQUIRE(complete, "stuck: not complete and every byte is refused");
        REQUIRE(!cont, "can_continue is true, yet every byte is refused");
    }
    eng_grammar_matcher_destroy(m);
}

/* Compiles schema (NULL: json_object mode) and walks its grammar; a refused schema must say why. */
static void run_schema(struct fz *f, const struct eng_json *schema, int walks)
{
    struct eng_grammar *g = NULL;
    char err[512];
    memset(err, 'x', sizeof err);
    int rc = eng_json_schema_compile(schema, "schema", &g, err, sizeof err);
    REQUIRE(memchr(err, '\0', sizeof err) != NULL, "the error message is not NUL-terminated");
    if (rc != 0) {
        REQUIRE(schema != NULL, "json_object mode failed to compile: %d %s", rc, err);
        REQUIRE(rc >= ENG_JSON_SCHEMA_ERR_NOMEM && rc <= ENG_JSON_SCHEMA_ERR_UNSUPPORTED,
                "unknown error code %d", rc);
        REQUIRE(g == NULL, "a failed compile left a grammar");
        REQUIRE(strncmp(err, "schema", 6) == 0 && strlen(err) > strlen("schema: "),
                "a refused schema without a message naming its path: \"%s\"", err);
        return;
    }
    REQUIRE(g != NULL && err[0] == '\0', "compiled, yet no grammar or a message");
    f->root = schema;
    for (int i = 0; i < walks && f->tries_left > 0; i++)
        walk(f, g);
    /* A clone walks the same. */
    struct eng_grammar *c = NULL;
    REQUIRE(eng_grammar_clone(g, &c) == 0, "clone of a compiled grammar");
    REQUIRE(eng_grammar_n_rules(c) == eng_grammar_n_rules(g) &&
            eng_grammar_n_elems(c) == eng_grammar_n_elems(g), "clone differs in size");
    eng_grammar_destroy(g);
    if (f->tries_left > 0)
        walk(f, c);
    eng_grammar_destroy(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* FNV-1a of the input seeds the walks. */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 1099511628211ull;
    struct fz f = {.rng = h, .tries_left = TRIES_MAX, .input = data, .input_len = size};
    run_schema(&f, NULL, OBJECT_WALKS);
    struct eng_json_doc *doc = NULL;
    struct eng_json_error jerr;
    if (eng_json_parse((const char *)data, size, NULL, &doc, &jerr) != 0)
        return 0;
    f.tries_left = TRIES_MAX;
    run_schema(&f, eng_json_root(doc), SCHEMA_WALKS);
    eng_json_free(doc);
    return 0;
}
