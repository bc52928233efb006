/* Tests of engine/regex.c: the golden table of tests/fixtures/regex/cases.json (texts each
 * pattern's grammar must accept or refuse, per Python's re.fullmatch, and refused patterns with
 * their codes), fed byte by byte through the grammar matcher; '.' against every code point;
 * limits. With "--walk OUT.json" it instead writes random sentences of every pattern's grammar
 * for scripts/make_regex_cases.py --check-walk to verify with Python. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"
#include "json.h"
#include "regex.h"
#include "../test_util.h"

#define WALKS 12         /* random sentences per pattern */
#define WALK_MAX 4096    /* a walk this long unfinished is dropped */

/* A grammar root ::= the pattern's rule (in JSON-string mode, between quotes when quoted).
 * Returns the finished grammar, or NULL with *rc the compile error. */
static struct eng_grammar *build(const char *re, size_t len, unsigned flags, bool quoted,
                                 int *rc, char *err, size_t errlen)
{
    struct eng_grammar *g = NULL;
    EXPECT(eng_grammar_create(&g) == 0);
    int32_t root = eng_grammar_rule(g), rule = -7;
    EXPECT(root == 0);
    *rc = eng_regex_compile(g, re, len, flags, &rule, err, errlen);
    if (*rc != 0) {
        CHECK(rule == -7, "a failed compile changed *rule");
        eng_grammar_destroy(g);
        return NULL;
    }
    EXPECT(eng_grammar_alt(g, root) == 0);
    if (quoted)
        EXPECT(eng_grammar_add_literal(g, "\"", 1) == 0);
    EXPECT(eng_grammar_add_ref(g, rule) == 0);
    if (quoted)
        EXPECT(eng_grammar_add_literal(g, "\"", 1) == 0);
    int frc = eng_grammar_finish(g);
    CHECK(frc == 0, "eng_grammar_finish refused the grammar of /%s/: %d", re, frc);
    if (frc != 0) {
        eng_grammar_destroy(g);
        *rc = frc;
        return NULL;
    }
    return g;
}

/* 1: the whole text is a sentence, 0: it is not, -1: the matcher gave up (ambiguity). */
static int accepts(const struct eng_grammar *g, const char *text, size_t len, bool then_quote)
{
    struct eng_grammar_matcher *m = NULL;
    if (eng_grammar_matcher_create(g, NULL, &m) != 0)
        return -1;
    int rc = eng_grammar_matcher_accept_bytes(m, text, len);
    int verdict = rc == 0                          ? eng_grammar_matcher_complete(m)
                  : rc == ENG_GRAMMAR_ERR_REJECTED ? 0
                                                   : -1;
    if (then_quote && rc == 0)
        CHECK(eng_grammar_matcher_accept_bytes(m, "\"", 1) == ENG_GRAMMAR_ERR_REJECTED,
              "a raw '\"' is accepted after \"%s\"", text);
    eng_grammar_matcher_destroy(m);
    return verdict;
}

/* ---- the golden table ---- */

static void run_case(const struct eng_json *c)
{
    const struct eng_json *jre = eng_json_get(c, "re"), *js = eng_json_get(c, "json");
    const char *re = jre->u.str;
    unsigned flags = js->b ? ENG_REGEX_JSON_STRING : 0;
    char err[256];
    int rc;
    struct eng_grammar *g = build(re, jre->len, flags, false, &rc, err, sizeof err);
    CHECK(g != NULL, "/%s/ refused (%d): %s", re, rc, err);
    if (!g)
        return;
    static const char *const lists[2] = {"no", "yes"};
    for (int want = 0; want < 2; want++) {
        for (const struct eng_json *t = eng_json_get(c, lists[want])->u.child; t; t = t->next) {
            int got = accepts(g, t->u.str, t->len, js->b && want);
            CHECK(got == want, "/%s/%s on \"%s\": got %d, want %d", re, js->b ? " (json)" : "",
                  t->u.str, got, want);
        }
    }
    eng_grammar_destroy(g);
}

static void run_refused(const struct eng_json *c)
{
    const struct eng_json *jre = eng_json_get(c, "re");
    const char *re = jre->u.str, *msg = eng_json_get(c, "message")->u.str;
    unsigned flags = eng_json_get(c, "json")->b ? ENG_REGEX_JSON_STRING : 0;
    int code = (int)eng_json_get(c, "code")->u.num.i;
    struct eng_grammar *g = NULL;
    EXPECT(eng_grammar_create(&g) == 0);
    EXPECT(eng_grammar_rule(g) == 0);
    char err[256];
    memset(err, 'x', sizeof err);
    int32_t rule = -7;
    int rc = eng_regex_compile(g, re, jre->len, flags, &rule, err, sizeof err);
    CHECK(rc == code, "/%s/: rc %d, want %d (%s)", re, rc, code, rc ? err : "");
    CHECK(rule == -7, "/%s/: *rule changed on failure", re);
    CHECK(memchr(err, '\0', sizeof err) && strstr(err, msg),
          "/%s/: message \"%.200s\" lacks \"%s\"", re, err, msg);
    /* Syntax and unsupported patterns leave the grammar as it was. */
    CHECK(eng_grammar_n_rules(g) == 1 && eng_grammar_n_elems(g) == 0,
          "/%s/: the refused compile changed the grammar", re);
    eng_grammar_destroy(g);
}

/* ---- hand-written checks ---- */

static size_t utf8(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Sets over every code point: '.' and classes whose bounds sit on UTF-8 boundaries, each
 * code point fed alone; stride 1 in the BMP, 7 above it plus each plane's ends. */
static void every_code_point(void)
{
    static const struct {
        const char *re;
        uint32_t lo, hi; /* in the set iff in [lo, hi] ... */
        bool negated;    /* ... or, when negated, outside it */
    } sets[] = {
        {".", '\n', '\n', true},
        {"[^\\x7f-\\u0800]", 0x7F, 0x800, true},
        {"[\\x80-\\uFFFF]", 0x80, 0xFFFF, false},
        {"[\\u07ff-\\U00010000]", 0x7FF, 0x10000, false},
        {"[\\u0fc1-\\U0004003f]", 0xFC1, 0x4003F, false},
        {"[^\\u0041-\\U0010fffe]", 0x41, 0x10FFFE, true},
    };
    char buf[4];
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++) {
        int rc;
        char err[128];
        struct eng_grammar *g =
            build(sets[s].re, strlen(sets[s].re), 0, false, &rc, err, sizeof err);
        CHECK(g != NULL, "/%s/: %d %s", sets[s].re, rc, err);
        if (!g)
            continue;
        int bad = 0;
        for (uint32_t cp = 0; cp <= 0x10FFFF && bad < 5; cp += cp < 0x10000 ? 1 : 7) {
            for (uint32_t q = cp; q <= cp + 1 && q <= 0x10FFFF; q++) {
                if (q >= 0xD800 && q <= 0xDFFF)
                    continue;
                bool in = (q >= sets[s].lo && q <= sets[s].hi) != sets[s].negated;
                int got = accepts(g, buf, utf8(q, buf), false);
                if (got != in) {
                    FAIL("/%s/ on U+%04X: got %d, want %d", sets[s].re, (unsigned)q, got, in);
                    bad++;
                }
                if (cp < 0x10000)
                    break;
            }
        }
        /* Never anything that is not UTF-8. */
        static const char *const invalid[] = {
            "\xC0\x80", "\xC1\xBF", "\xED\xA0\x80", "\xED\xBF\xBF", "\xF4\x90\x80\x80",
            "\xF5\x80\x80\x80", "\x80", "\xE0\x80\x80", "\xF0\x80\x80\x80", "\xFF"};
        for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++)
            CHECK(accepts(g, invalid[i], strlen(invalid[i]), false) == 0,
                  "/%s/ accepts invalid UTF-8 #%zu", sets[s].re, i);
        eng_grammar_destroy(g);
    }
}

static void limits(void)
{
    char err[256];
    int rc;
    /* 64 nested groups compile and match; 65 are refused (regex_cases.json). */
    char re[200];
    size_t n = 0;
    for (int i = 0; i < ENG_REGEX_MAX_NESTING; i++)
        re[n++] = '(';
    re[n++] = 'a';
    re[n++] = '*';
    for (int i = 0; i < ENG_REGEX_MAX_NESTING; i++)
        re[n++] = ')';
    re[n++] = '+';
    struct eng_grammar *g = build(re, n, 0, false, &rc, err, sizeof err);
    CHECK(g != NULL, "64 nested groups: %d %s", rc, err);
    if (g) {
        EXPECT(accepts(g, "aaaa", 4, false) == 1);
        EXPECT(accepts(g, "", 0, false) == 1);
        EXPECT(accepts(g, "ab", 2, false) == 0);
        eng_grammar_destroy(g);
    }
    /* {1000} is the largest count; a{0,1000} nested inside another stays small. */
    g = build("(?:a{0,1000}b){1000}", 20, 0, false, &rc, err, sizeof err);
    CHECK(g != NULL, "(?:a{0,1000}b){1000}: %d %s", rc, err);
    if (g) {
        CHECK(eng_grammar_n_rules(g) < 3000, "%d rules", (int)eng_grammar_n_rules(g));
        eng_grammar_destroy(g);
    }
    /* Past the grammar's rule ceiling: 140 x a{0,1000} is about 140 000 rules. */
    size_t big_n = 140 * 9;
    char *big = tu_xmalloc(big_n);
    for (size_t i = 0; i < big_n; i += 9)
        memcpy(big + i, "a{0,1000}", 9);
    g = build(big, big_n, 0, false, &rc, err, sizeof err);
    CHECK(g == NULL && rc == ENG_REGEX_ERR_TOO_BIG, "140 x a{0,1000}: %d", rc);
    CHECK(strstr(err, "too large") != NULL, "message: %s", err);
    free(big);
    /* Past the element ceiling: a literal of 1.1 M bytes. */
    big_n = (size_t)ENG_GRAMMAR_MAX_ELEMS + 100000;
    big = tu_xmalloc(big_n);
    memset(big, 'z', big_n);
    g = build(big, big_n, 0, false, &rc, err, sizeof err);
    CHECK(g == NULL && rc == ENG_REGEX_ERR_TOO_BIG, "a 1.1 MB literal: %d", rc);
    free(big);
    /* Bad arguments, no error buffer, a short one (truncated but terminated). */
    int32_t rule = -7;
    g = NULL;
    EXPECT(eng_grammar_create(&g) == 0);
    EXPECT(eng_regex_compile(NULL, "a", 1, 0, &rule, err, sizeof err) == ENG_REGEX_ERR_SYNTAX);
    EXPECT(eng_regex_compile(g, "a", 1, 0, NULL, err, sizeof err) == ENG_REGEX_ERR_SYNTAX);
    EXPECT(eng_regex_compile(g, "a", 1, 4, &rule, err, sizeof err) == ENG_REGEX_ERR_SYNTAX);
    EXPECT(eng_regex_compile(g, "(?=a)", 5, 0, &rule, NULL, 0) == ENG_REGEX_ERR_UNSUPPORTED);
    char small[8];
    memset(small, 'x', sizeof small);
    EXPECT(eng_regex_compile(g, "(?=a)", 5, 0, &rule, small, sizeof small) ==
           ENG_REGEX_ERR_UNSUPPORTED);
    EXPECT(memchr(small, '\0', sizeof small) != NULL);
    EXPECT(rule == -7);
    /* Not NUL-terminated: len counts, not the terminator. */
    EXPECT(eng_regex_compile(g, "ab)", 2, 0, &rule, err, sizeof err) == 0 && rule >= 0);
    /* Invalid UTF-8 in the pattern. */
    EXPECT(eng_regex_compile(g, "a\xC3(", 3, 0, &rule, err, sizeof err) == ENG_REGEX_ERR_SYNTAX);
    CHECK(strstr(err, "invalid UTF-8 at byte 1") != NULL, "%s", err);
    eng_grammar_destroy(g);
    /* Quoted JSON-string mode, as a caller would use it: the quotes around, escapes inside. */
    g = build("[^a]*", 5, ENG_REGEX_JSON_STRING, true, &rc, err, sizeof err);
    CHECK(g != NULL, "quoted: %d %s", rc, err);
    if (g) {
        EXPECT(accepts(g, "\"x\\\"y\\n\"", 8, false) == 1);
        EXPECT(accepts(g, "\"x\"y\"", 5, false) == 0);
        EXPECT(accepts(g, "\"xay\"", 5, false) == 0);
        EXPECT(accepts(g, "\"\"", 2, false) == 1);
        eng_grammar_destroy(g);
    }
}

/* ---- random walks ---- */

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* One random sentence of g into text (len in *len); false when the walk ran too long. Checks
 * the matcher's invariants on the way and that the sentence replays whole. */
static bool walk(const struct eng_grammar *g, uint64_t *rng, char *text, size_t *len,
                 const char *re)
{
    struct eng_grammar_matcher *m = NULL;
    REQUIRE(eng_grammar_matcher_create(g, NULL, &m) == 0, "matcher for /%s/", re);
    size_t n = 0, soft = 1 + next_rand(rng) % 48;
    uint8_t order[256];
    bool done = false;
    while (n < WALK_MAX) {
        bool complete = eng_grammar_matcher_complete(m);
        bool cont = eng_grammar_matcher_can_continue(m);
        CHECK(complete || cont, "/%s/: a walk is stuck after %zu bytes", re, n);
        if (!complete && !cont)
            break;
        if (complete && (!cont || n >= soft || next_rand(rng) % 4 == 0)) {
            if (!cont)
                for (int b = 0; b < 256; b++) {
                    char c = (char)b;
                    CHECK(eng_grammar_matcher_accept_bytes(m, &c, 1) != 0,
                          "/%s/: byte %d accepted where can_continue is false", re, b);
                }
            done = true;
            break;
        }
        for (int i = 0; i < 256; i++)
            order[i] = (uint8_t)i;
        for (int i = 255; i > 0; i--) {
            int j = (int)(next_rand(rng) % (uint64_t)(i + 1));
            uint8_t t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        int took = -1;
        for (int i = 0; i < 256 && took < 0; i++) {
            char c = (char)order[i];
            int rc = eng_grammar_matcher_accept_bytes(m, &c, 1);
            CHECK(rc == 0 || rc == ENG_GRAMMAR_ERR_REJECTED, "/%s/: accept_bytes %d", re, rc);
            if (rc == 0)
                took = order[i];
        }
        CHECK(took >= 0 || complete, "/%s/: can_continue, yet every byte is refused", re);
        if (took < 0) {
            done = true;
            break;
        }
        text[n++] = (char)took;
    }
    eng_grammar_matcher_destroy(m);
    *len = n;
    if (done)
        CHECK(accepts(g, text, n, false) == 1, "/%s/: a walked sentence does not replay", re);
    return done;
}

static void json_string(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

/* Walks every pattern of the table; writes the sentences to out (NULL: only the checks). */
static void walks(const struct eng_json *cases, FILE *out)
{
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    char *text = tu_xmalloc(WALK_MAX);
    int index = 0, dropped = 0, total = 0;
    if (out)
        fputs("{\"walks\": [\n", out);
    for (const struct eng_json *c = cases->u.child; c; c = c->next, index++) {
        const struct eng_json *jre = eng_json_get(c, "re");
        unsigned flags = eng_json_get(c, "json")->b ? ENG_REGEX_JSON_STRING : 0;
        int rc;
        char err[256];
        struct eng_grammar *g = build(jre->u.str, jre->len, flags, false, &rc, err, sizeof err);
        if (!g)
            continue; /* reported by the table */
        if (out) {
            fprintf(out, "%s{\"case\": %d, \"re\": ", index ? ",\n" : "", index);
            json_string(out, jre->u.str, jre->len);
            fputs(", \"sentences\": [", out);
        }
        int written = 0;
        for (int w = 0; w < WALKS; w++) {
            size_t len;
            if (!walk(g, &rng, text, &len, jre->u.str)) {
                dropped++;
                continue;
            }
            total++;
            if (out) {
                fprintf(out, "%s\"", written++ ? ", " : "");
                for (size_t i = 0; i < len; i++)
                    fprintf(out, "%02x", (unsigned char)text[i]);
                fputc('"', out);
            }
        }
        if (out)
            fputs("]}", out);
        eng_grammar_destroy(g);
    }
    if (out)
        fputs("\n]}\n", out);
    free(text);
    printf("walks: %d sentences, %d dropped as too long\n", total, dropped);
    CHECK(total > 0, "no walk finished");
}

int main(int argc, char **argv)
{
    if (argc != 2 && !(argc == 4 && strcmp(argv[2], "--walk") == 0)) {
        fprintf(stderr, "usage: %s FIXTURES_DIR [--walk OUT.json]\n", argv[0]);
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/regex/cases.json", argv[1]);
    size_t len;
    char *text = tu_read_file(path, &len);
    if (!text) {
        fprintf(stderr, "cannot read %s\n", path);
        return 1;
    }
    struct eng_json_doc *doc = NULL;
    struct eng_json_error jerr;
    if (eng_json_parse(text, len, NULL, &doc, &jerr) != 0) {
        fprintf(stderr, "%s: %s at byte %zu\n", path, jerr.message, jerr.offset);
        return 1;
    }
    const struct eng_json *cases = eng_json_get(eng_json_root(doc), "cases");
    const struct eng_json *refused = eng_json_get(eng_json_root(doc), "refused");
    REQUIRE(cases && refused && cases->len > 50 && refused->len > 20, "%s: too few cases", path);
    if (argc == 4) {
        FILE *out = fopen(argv[3], "w");
        if (!out) {
            fprintf(stderr, "cannot write %s\n", argv[3]);
            return 1;
        }
        walks(cases, out);
        if (fclose(out) != 0)
            FAIL("writing %s failed", argv[3]);
    } else {
        for (const struct eng_json *c = cases->u.child; c; c = c->next)
            run_case(c);
        for (const struct eng_json *c = refused->u.child; c; c = c->next)
            run_refused(c);
        every_code_point();
        limits();
        walks(cases, NULL);
    }
    eng_json_free(doc);
    free(text);
    return tu_finish("test_regex");
}
