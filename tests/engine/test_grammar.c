/* Tests of engine/grammar.c: building and checking byte grammars, the matcher on bytes (flags,
 * rejection without side effects, right recursion, the depth and ambiguity ceilings), token
 * masks on the real Phi-3 vocabulary against a brute force that feeds each token's bytes to a
 * fresh matcher, and eng_tokenizer_token_bytes. Mask timings are printed, never asserted.
 * Usage: test_grammar <fixtures_dir>. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "grammar.h"
#include "json_schema.h"
#include "tokenizer.h"

#include "../test_util.h"

/* Stop printing mismatches after this many per mask so one bug does not flood the log. */
#define MAX_REPORTED 12

#define BYTE_ID(b) ((int32_t)(3 + (b))) /* "<0x00>" is id 3 in the Llama-2 vocabulary */
#define EXTRA_PAD 53                    /* ids past n_vocab in the second vocabulary */

/* ---- small builders: each failing call is a failed check ---- */

static void lit(struct eng_grammar *g, const char *s)
{
    CHECK(eng_grammar_add_literal(g, s, strlen(s)) == 0, "literal \"%s\"", s);
}

static void range(struct eng_grammar *g, uint8_t lo, uint8_t hi)
{
    CHECK(eng_grammar_add_range(g, lo, hi) == 0, "range %02x-%02x", lo, hi);
}

static void ref(struct eng_grammar *g, int32_t rule)
{
    CHECK(eng_grammar_add_ref(g, rule) == 0, "ref %d", (int)rule);
}

static void alt(struct eng_grammar *g, int32_t rule)
{
    CHECK(eng_grammar_alt(g, rule) == 0, "alt of rule %d", (int)rule);
}

static int32_t rule(struct eng_grammar *g)
{
    int32_t r = eng_grammar_rule(g);
    CHECK(r >= 0, "eng_grammar_rule gave %d", (int)r);
    return r;
}

static void set_bytes(uint32_t set[8], const char *bytes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)bytes[i];
        set[b >> 5] |= 1u << (b & 31);
    }
}

static void cls(struct eng_grammar *g, const char *bytes, size_t n)
{
    uint32_t set[8] = {0};
    set_bytes(set, bytes, n);
    CHECK(eng_grammar_add_class(g, set) == 0, "class of %zu bytes", n);
}

static struct eng_grammar *new_grammar(void)
{
    struct eng_grammar *g = NULL;
    if (eng_grammar_create(&g) != 0 || g == NULL) {
        fprintf(stderr, "eng_grammar_create failed\n");
        exit(1);
    }
    return g;
}

static struct eng_grammar *finished(struct eng_grammar *g, const char *name)
{
    int rc = eng_grammar_finish(g);
    CHECK(rc == 0, "finish %s: %d", name, rc);
    return g;
}

/* Feeds s (len bytes) to a fresh matcher of g; returns the rc of accept_bytes, the flags in
 * *complete and *cont when they are not NULL. */
static int run_bytes(const struct eng_grammar *g, const char *s, size_t len, bool *complete, bool *cont)
{
    struct eng_grammar_matcher *m = NULL;
    int rc = eng_grammar_matcher_create(g, NULL, &m);
    if (rc != 0)
        return rc;
    rc = eng_grammar_matcher_accept_bytes(m, s, len);
    if (complete)
        *complete = eng_grammar_matcher_complete(m);
    if (cont)
        *cont = eng_grammar_matcher_can_continue(m);
    eng_grammar_matcher_destroy(m);
    return rc;
}

/* accepted: accept_bytes gives 0; whole: and the text is complete. */
static void expect_text(const struct eng_grammar *g, const char *s, bool accepted, bool whole)
{
    bool complete = false;
    int rc = run_bytes(g, s, strlen(s), &complete, NULL);
    if (accepted)
        CHECK(rc == 0 && complete == whole, "\"%s\": rc %d complete %d, want 0 and %d", s, rc, complete, whole);
    else
        CHECK(rc == ENG_GRAMMAR_ERR_REJECTED, "\"%s\": rc %d, want REJECTED", s, rc);
}

/* ---- grammars ---- */

/* root ::= "ab" | "a" rest;  rest ::= [0-9] rest | "" */
static struct eng_grammar *grammar_ab_rest(void)
{
    struct eng_grammar *g = new_grammar();
    int32_t root = rule(g), rest = rule(g);
    alt(g, root), lit(g, "ab");
    alt(g, root), lit(g, "a"), ref(g, rest);
    alt(g, rest), range(g, '0', '9'), ref(g, rest);
    alt(g, rest);
    return finished(g, "ab_rest");
}

/* root ::= [0-9] root | [0-9] */
static struct eng_grammar *grammar_digits(void)
{
    struct eng_grammar *g = new_grammar();
    int32_t root = rule(g);
    alt(g, root), range(g, '0', '9'), ref(g, root);
    alt(g, root), range(g, '0', '9');
    return finished(g, "digits");
}

/* root ::= " hello" */
static struct eng_grammar *grammar_hello(void)
{
    struct eng_grammar *g = new_grammar();
    int32_t root = rule(g);
    alt(g, root), lit(g, " hello");
    return finished(g, "hello");
}

/* P ::= "(" P ")" | "" : nesting costs one stack level per "(" */
static struct eng_grammar *grammar_parens(void)
{
    struct eng_grammar *g = new_grammar();
    int32_t p = rule(g);
    alt(g, p), lit(g, "("), ref(g, p), lit(g, ")");
    alt(g, p);
    return finished(g, "parens");
}

/* A JSON grammar written out by hand, strings exact UTF-8 (lead byte, then its continuation
 * bytes):
 *   root ::= ws value ws
 *   value ::= object | array | string | number | "true" | "false" | "null"
 *   object ::= "{" ws "}" | "{" ws members ws "}"
 *   members ::= member mtail;  mtail ::= ws "," ws member mtail | ""
 *   member ::= string ws ":" ws value
 *   array ::= "[" ws "]" | "[" ws elems ws "]"
 *   elems ::= value etail;  etail ::= ws "," ws value etail | ""
 *   string ::= "\"" chars "\"";  chars ::= ch chars | ""
 *   ch ::= [\x20-\x7f except " and \] | "\\" esc | [\xc2-\xdf] cont
 *        | [\xe0-\xef] cont cont | [\xf0-\xf4] cont cont cont
 *   esc ::= ["\\/bfnrt] | "u" hex hex hex hex;  hex ::= [0-9a-fA-F];  cont ::= [\x80-\xbf]
 *   number ::= "-" unsigned | unsigned;  unsigned ::= int frac exp
 *   int ::= "0" | [1-9] digits;  digits ::= [0-9] digits | ""
 *   frac ::= "." [0-9] digits | "";  exp ::= [eE] sign [0-9] digits | "";  sign ::= "+" | "-" | ""
 *   ws ::= [ \t\n\r] ws | "" */
static struct eng_grammar *grammar_json(void)
{
    struct eng_grammar *g = new_grammar();
    int32_t root = rule(g), value = rule(g), object = rule(g), members = rule(g), mtail = rule(g);
    int32_t member = rule(g), array = rule(g), elems = rule(g), etail = rule(g), string = rule(g);
    int32_t chars = rule(g), ch = rule(g), esc = rule(g), hex = rule(g), cont = rule(g);
    int32_t number = rule(g), unsig = rule(g), intp = rule(g), digits = rule(g), frac = rule(g);
    int32_t exp = rule(g), sign = rule(g), ws = rule(g);

    alt(g, root), ref(g, ws), ref(g, value), ref(g, ws);
    alt(g, value), ref(g, object);
    alt(g, value), ref(g, array);
    alt(g, value), ref(g, string);
    alt(g, value), ref(g, number);
    alt(g, value), lit(g, "true");
    alt(g, value), lit(g, "false");
    alt(g, value), lit(g, "null");
    alt(g, object), lit(g, "{"), ref(g, ws), lit(g, "}");
    alt(g, object), lit(g, "{"), ref(g, ws), ref(g, members), ref(g, ws), lit(g, "}");
    alt(g, members), ref(g, member), ref(g, mtail);
    alt(g, mtail), ref(g, ws), lit(g, ","), ref(g, ws), ref(g, member), ref(g, mtail);
    alt(g, mtail);
    alt(g, member), ref(g, string), ref(g, ws), lit(g, ":"), ref(g, ws), ref(g, value);
    alt(g, array), lit(g, "["), ref(g, ws), lit(g, "]");
    alt(g, array), lit(g, "["), ref(g, ws), ref(g, elems), ref(g, ws), lit(g, "]");
    alt(g, elems), ref(g, value), ref(g, etail);
    alt(g, etail), ref(g, ws), lit(g, ","), ref(g, ws), ref(g, value), ref(g, etail);
    alt(g, etail);
    alt(g, string), lit(g, "\""), ref(g, chars), lit(g, "\"");
    alt(g, chars), ref(g, ch), ref(g, chars);
    alt(g, chars);
    {
        uint32_t plain[8] = {0};
        for (int b = 0x20; b <= 0x7f; b++)
            if (b != '"' && b != '\\')
                plain[b >> 5] |= 1u << (b & 31);
        alt(g, ch);
        CHECK(eng_grammar_add_class(g, plain) == 0, "json plain class");
    }
    alt(g, ch), lit(g, "\\"), ref(g, esc);
    alt(g, ch), range(g, 0xc2, 0xdf), ref(g, cont);
    alt(g, ch), range(g, 0xe0, 0xef), ref(g, cont), ref(g, cont);
    alt(g, ch), range(g, 0xf0, 0xf4), ref(g, cont), ref(g, cont), ref(g, cont);
    alt(g, esc), cls(g, "\"\\/bfnrt", 8);
    alt(g, esc), lit(g, "u"), ref(g, hex), ref(g, hex), ref(g, hex), ref(g, hex);
    alt(g, hex), cls(g, "0123456789abcdefABCDEF", 22);
    alt(g, cont), range(g, 0x80, 0xbf);
    alt(g, number), lit(g, "-"), ref(g, unsig);
    alt(g, number), ref(g, unsig);
    alt(g, unsig), ref(g, intp), ref(g, frac), ref(g, exp);
    alt(g, intp), lit(g, "0");
    alt(g, intp), range(g, '1', '9'), ref(g, digits);
    alt(g, digits), range(g, '0', '9'), ref(g, digits);
    alt(g, digits);
    alt(g, frac), lit(g, "."), range(g, '0', '9'), ref(g, digits);
    alt(g, frac);
    alt(g, exp), cls(g, "eE", 2), ref(g, sign), range(g, '0', '9'), ref(g, digits);
    alt(g, exp);
    alt(g, sign), lit(g, "+");
    alt(g, sign), lit(g, "-");
    alt(g, sign);
    alt(g, ws), cls(g, " \t\n\r", 4), ref(g, ws);
    alt(g, ws);
    return finished(g, "json");
}

/* root ::= C root | C with C the non-contiguous class {0x00, 'a', 'c', 0x80, 0xff}. */
static const char sparse_bytes[] = {0x00, 'a', 'c', (char)0x80, (char)0xff};

static struct eng_grammar *grammar_sparse(void)
{
    struct eng_grammar *g = new_grammar();
    int32_t root = rule(g);
    alt(g, root), cls(g, sparse_bytes, sizeof sparse_bytes), ref(g, root);
    alt(g, root), cls(g, sparse_bytes, sizeof sparse_bytes);
    return finished(g, "sparse");
}

/* ---- 1. building ---- */

static void test_build_errors(void)
{
    struct eng_grammar *g;
    int rc;

    /* A reference to a rule that is never made. */
    g = new_grammar();
    int32_t r0 = rule(g);
    alt(g, r0), lit(g, "a"), ref(g, 7);
    rc = eng_grammar_finish(g);
    CHECK(rc == ENG_GRAMMAR_ERR_INVALID, "missing rule: %d", rc);
    struct eng_grammar_matcher *m = NULL;
    CHECK(eng_grammar_matcher_create(g, NULL, &m) == ENG_GRAMMAR_ERR_INVALID && m == NULL,
          "matcher of a grammar that failed finish");
    struct eng_grammar *c = NULL;
    CHECK(eng_grammar_clone(g, &c) == ENG_GRAMMAR_ERR_INVALID, "clone of a failed grammar");
    eng_grammar_destroy(g);

    /* A reference to a rule id past what an element can hold is a missing rule too: it must
     * not alias a rule that exists (1 << 30 aliased onto rule 0 would pass finish). */
    g = new_grammar();
    r0 = rule(g);
    alt(g, r0), lit(g, "a");
    int rr = eng_grammar_add_ref(g, (int32_t)1 << 30); /* may be refused here or by finish */
    eng_grammar_alt(g, r0);
    eng_grammar_add_literal(g, "b", 1);
    rc = eng_grammar_finish(g);
    CHECK(rc == ENG_GRAMMAR_ERR_INVALID && (rr == 0 || rr == ENG_GRAMMAR_ERR_INVALID),
          "reference to rule 1<<30 (only rule 0 exists): add_ref gave %d, finish %d", rr, rc);
    eng_grammar_destroy(g);

    /* A rule without alternatives. */
    g = new_grammar();
    r0 = rule(g);
    int32_t r1 = rule(g);
    alt(g, r0), lit(g, "a"), ref(g, r1);
    rc = eng_grammar_finish(g);
    CHECK(rc == ENG_GRAMMAR_ERR_INVALID, "rule without alternatives: %d", rc);
    eng_grammar_destroy(g);

    /* No rules at all. */
    g = new_grammar();
    CHECK(eng_grammar_finish(g) == ENG_GRAMMAR_ERR_INVALID, "empty grammar");
    eng_grammar_destroy(g);

    /* An empty class, a reversed range, elements before any alternative, an alternative of a
     * rule that does not exist; each poisons the grammar, so finish fails after it. */
    uint32_t empty[8] = {0};
    g = new_grammar();
    r0 = rule(g);
    alt(g, r0);
    CHECK(eng_grammar_add_class(g, empty) == ENG_GRAMMAR_ERR_INVALID, "empty class accepted");
    CHECK(eng_grammar_finish(g) != 0, "finish after a failed add_class");
    eng_grammar_destroy(g);

    g = new_grammar();
    r0 = rule(g);
    alt(g, r0);
    CHECK(eng_grammar_add_range(g, 'z', 'a') == ENG_GRAMMAR_ERR_INVALID, "reversed range accepted");
    eng_grammar_destroy(g);

    g = new_grammar();
    r0 = rule(g);
    CHECK(eng_grammar_add_literal(g, "a", 1) == ENG_GRAMMAR_ERR_INVALID, "literal outside an alternative");
    eng_grammar_destroy(g);

    g = new_grammar();
    r0 = rule(g);
    CHECK(eng_grammar_alt(g, 1) == ENG_GRAMMAR_ERR_INVALID, "alternative of a rule not made");
    CHECK(eng_grammar_alt(g, -1) == ENG_GRAMMAR_ERR_INVALID, "alternative of rule -1");
    eng_grammar_destroy(g);

    g = new_grammar();
    r0 = rule(g);
    alt(g, r0);
    CHECK(eng_grammar_add_ref(g, -3) == ENG_GRAMMAR_ERR_INVALID, "ref -3");
    eng_grammar_destroy(g);

    CHECK(eng_grammar_create(NULL) == ENG_GRAMMAR_ERR_INVALID, "create(NULL)");
    CHECK(eng_grammar_rule(NULL) == ENG_GRAMMAR_ERR_INVALID, "rule(NULL)");
    CHECK(eng_grammar_finish(NULL) == ENG_GRAMMAR_ERR_INVALID, "finish(NULL)");
    eng_grammar_destroy(NULL);
}

/* Each case: rules given as a tiny text, one rule per string: "A=B x|y" means
 * A ::= B "x" | "y"; upper-case letters are rules, lower-case letters literal bytes, '_' an
 * empty alternative. Rule ids by first letter order A=0, B=1, ... */
static int build_tiny(const char *const *rules, int n, struct eng_grammar **out)
{
    struct eng_grammar *g = new_grammar();
    for (int i = 0; i < n; i++)
        rule(g);
    for (int i = 0; i < n; i++) {
        const char *s = rules[i];
        int32_t r = s[0] - 'A';
        s += 2;
        alt(g, r);
        for (; *s; s++) {
            if (*s == '|')
                alt(g, r);
            else if (*s >= 'A' && *s <= 'Z')
                ref(g, *s - 'A');
            else if (*s >= 'a' && *s <= 'z')
                CHECK(eng_grammar_add_literal(g, s, 1) == 0, "tiny literal");
        }
    }
    int rc = eng_grammar_finish(g);
    *out = g;
    return rc;
}

static void test_recursion_checks(void)
{
    struct {
        const char *rules[4];
        int n;
        int want;
        const char *what;
    } cases[] = {
        {{"A=Ax|y"}, 1, ENG_GRAMMAR_ERR_RECURSION, "direct left recursion A ::= A x | y"},
        {{"A=Bx", "B=A|y"}, 2, ENG_GRAMMAR_ERR_RECURSION, "indirect A ::= B x, B ::= A | y"},
        {{"A=B", "B=A|_"}, 2, ENG_GRAMMAR_ERR_RECURSION, "empty cycle A ::= B, B ::= A | ''"},
        {{"A=B|a", "B=C", "C=A"}, 3, ENG_GRAMMAR_ERR_RECURSION, "three-rule cycle"},
        {{"A=BAx|z", "B=_"}, 2, ENG_GRAMMAR_ERR_RECURSION, "through a nullable prefix A ::= B A x, B ::= ''"},
        {{"A=BBAx|z", "B=_|m"}, 2, ENG_GRAMMAR_ERR_RECURSION, "through two nullable references"},
        {{"A=BCAx|z", "B=_|b", "C=B"}, 3, ENG_GRAMMAR_ERR_RECURSION, "through an indirectly nullable rule"},
        {{"A=xB", "B=C", "C=B|y"}, 3, ENG_GRAMMAR_ERR_RECURSION, "empty cycle below the root"},
        {{"A=A"}, 1, ENG_GRAMMAR_ERR_RECURSION, "A ::= A"},
        /* No finite text completes: a matcher could enter and never leave. */
        {{"A=xA"}, 1, ENG_GRAMMAR_ERR_UNPRODUCTIVE, "A ::= x A"},
        {{"A=y|xB", "B=zB"}, 2, ENG_GRAMMAR_ERR_UNPRODUCTIVE, "an unproductive rule beside a good one"},
        /* Fine: right recursion, recursion behind a byte, a diamond, a non-nullable prefix. */
        {{"A=xA|_"}, 1, 0, "right recursion"},
        {{"A=xAy|_"}, 1, 0, "nesting"},
        {{"A=BC", "B=D", "C=D", "D=d"}, 4, 0, "diamond"},
        {{"A=BAx|z", "B=b"}, 2, 0, "non-nullable prefix"},
        {{"A=BC", "B=_|n", "C=c|BBc"}, 3, 0, "nullable prefixes without a cycle"},
        {{"A=BxA|_", "B=_"}, 2, 0, "recursion after a byte behind a nullable prefix"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct eng_grammar *g = NULL;
        int rc = build_tiny(cases[i].rules, cases[i].n, &g);
        CHECK(rc == cases[i].want, "%s: finish gave %d, want %d", cases[i].what, rc, cases[i].want);
        eng_grammar_destroy(g);
    }
}

static void test_after_finish_and_clone(void)
{
    struct eng_grammar *g = grammar_ab_rest();
    int32_t n_rules = eng_grammar_n_rules(g);
    size_t n_elems = eng_grammar_n_elems(g);
    CHECK(n_rules == 2, "n_rules %d", (int)n_rules);
    /* "ab" 2, "a" rest 2, [0-9] rest 2, "" 0, plus one end per alternative. */
    CHECK(n_elems == 10, "n_elems %zu", n_elems);

    CHECK(eng_grammar_rule(g) < 0, "rule after finish");
    CHECK(eng_grammar_alt(g, 0) < 0, "alt after finish");
    CHECK(eng_grammar_add_literal(g, "x", 1) < 0, "literal after finish");
    CHECK(eng_grammar_add_range(g, 'a', 'b') < 0, "range after finish");
    uint32_t set[8] = {1, 0, 0, 0, 0, 0, 0, 1};
    CHECK(eng_grammar_add_class(g, set) < 0, "class after finish");
    CHECK(eng_grammar_add_ref(g, 0) < 0, "ref after finish");
    CHECK(eng_grammar_finish(g) < 0, "second finish");
    CHECK(eng_grammar_n_rules(g) == n_rules && eng_grammar_n_elems(g) == n_elems, "counts changed after refused calls");
    /* The refused calls leave a usable grammar. */
    expect_text(g, "a12", true, true);

    struct eng_grammar *c = NULL;
    CHECK(eng_grammar_clone(g, &c) == 0 && c != NULL, "clone");
    CHECK(eng_grammar_clone(g, NULL) == ENG_GRAMMAR_ERR_INVALID, "clone to NULL");
    eng_grammar_destroy(g); /* the clone must not share anything with it */
    if (c == NULL)
        return;
    CHECK(eng_grammar_n_rules(c) == n_rules && eng_grammar_n_elems(c) == n_elems, "clone counts");
    expect_text(c, "ab", true, true);
    expect_text(c, "a", true, true);
    expect_text(c, "a0123456789", true, true);
    expect_text(c, "", true, false);
    expect_text(c, "abc", false, false);
    expect_text(c, "a1b", false, false);
    expect_text(c, "b", false, false);
    struct eng_grammar *c2 = NULL;
    CHECK(eng_grammar_clone(c, &c2) == 0, "clone of a clone");
    eng_grammar_destroy(c);
    if (c2) {
        expect_text(c2, "a9", true, true);
        expect_text(c2, "ax", false, false);
    }
    eng_grammar_destroy(c2);

    /* A clone of a grammar with a byte class (stored apart from the elements). */
    struct eng_grammar *s = grammar_sparse(), *sc = NULL;
    CHECK(eng_grammar_clone(s, &sc) == 0, "clone sparse");
    eng_grammar_destroy(s);
    if (sc) {
        expect_text(sc, "acac", true, true);
        expect_text(sc, "ab", false, false);
    }
    eng_grammar_destroy(sc);
}

static void test_limits(void)
{
    /* Rules past ENG_GRAMMAR_MAX_RULES. */
    struct eng_grammar *g = new_grammar();
    int32_t last = 0;
    for (int32_t i = 0; i < ENG_GRAMMAR_MAX_RULES && last >= 0; i++)
        last = eng_grammar_rule(g);
    CHECK(last == ENG_GRAMMAR_MAX_RULES - 1, "last rule id %d", (int)last);
    CHECK(eng_grammar_rule(g) == ENG_GRAMMAR_ERR_TOO_BIG, "rule past the ceiling");
    eng_grammar_destroy(g);

    /* Elements past ENG_GRAMMAR_MAX_ELEMS: a literal of exactly the ceiling leaves no room for
     * the alternative's end. */
    size_t n = ENG_GRAMMAR_MAX_ELEMS;
    char *big = tu_xmalloc(n);
    memset(big, 'x', n);
    g = new_grammar();
    int32_t r = rule(g);
    alt(g, r);
    CHECK(eng_grammar_add_literal(g, big, n - 1) == 0, "literal of MAX_ELEMS - 1");
    CHECK(eng_grammar_finish(g) == 0, "finish at exactly MAX_ELEMS elements");
    CHECK(eng_grammar_n_elems(g) == n, "n_elems %zu", eng_grammar_n_elems(g));
    eng_grammar_destroy(g);
    g = new_grammar();
    r = rule(g);
    alt(g, r);
    int rc = eng_grammar_add_literal(g, big, n);
    if (rc == 0)
        rc = eng_grammar_finish(g);
    CHECK(rc == ENG_GRAMMAR_ERR_TOO_BIG, "MAX_ELEMS + 1 elements: %d", rc);
    eng_grammar_destroy(g);
    free(big);
}

/* ---- 2. the matcher on bytes ---- */

static void test_matcher_basic(void)
{
    struct eng_grammar *g = grammar_ab_rest();
    expect_text(g, "ab", true, true);
    expect_text(g, "a", true, true);
    expect_text(g, "a7", true, true);
    expect_text(g, "", true, false);
    expect_text(g, "abb", false, false);
    expect_text(g, "ab1", false, false);
    expect_text(g, "x", false, false);
    expect_text(g, "a12x", false, false);

    struct eng_grammar_matcher *m = NULL;
    CHECK(eng_grammar_matcher_create(g, NULL, &m) == 0 && m, "matcher");
    if (!m) {
        eng_grammar_destroy(g);
        return;
    }
    CHECK(!eng_grammar_matcher_complete(m) && eng_grammar_matcher_can_continue(m), "start flags");
    CHECK(eng_grammar_matcher_accept_bytes(m, NULL, 0) == 0, "empty accept");
    CHECK(eng_grammar_matcher_accept_bytes(m, NULL, 1) == ENG_GRAMMAR_ERR_INVALID, "NULL bytes");
    CHECK(eng_grammar_matcher_accept_bytes(m, "a", 1) == 0, "a");
    CHECK(eng_grammar_matcher_complete(m) && eng_grammar_matcher_can_continue(m), "flags after a");
    /* Rejected texts leave the matcher where it was, even when a prefix of them was fine. */
    CHECK(eng_grammar_matcher_accept_bytes(m, "x", 1) == ENG_GRAMMAR_ERR_REJECTED, "x after a");
    CHECK(eng_grammar_matcher_accept_bytes(m, "1x", 2) == ENG_GRAMMAR_ERR_REJECTED, "1x after a");
    CHECK(eng_grammar_matcher_accept_bytes(m, "b1", 2) == ENG_GRAMMAR_ERR_REJECTED, "b1 after a");
    CHECK(eng_grammar_matcher_complete(m) && eng_grammar_matcher_can_continue(m), "flags after rejections");
    /* "b" is only valid if neither "1" nor "b" of the rejected texts stuck. */
    CHECK(eng_grammar_matcher_accept_bytes(m, "b", 1) == 0, "b after the rejections");
    CHECK(eng_grammar_matcher_complete(m) && !eng_grammar_matcher_can_continue(m), "flags after ab");
    CHECK(eng_grammar_matcher_accept_bytes(m, "1", 1) == ENG_GRAMMAR_ERR_REJECTED, "anything after ab");
    CHECK(eng_grammar_matcher_accept_token(m, 5) == ENG_GRAMMAR_ERR_INVALID, "token without a vocabulary");
    uint32_t w[1];
    CHECK(eng_grammar_matcher_mask(m, 1, w) == ENG_GRAMMAR_ERR_INVALID, "mask without a vocabulary");
    eng_grammar_matcher_destroy(m);

    /* Byte by byte and at once agree. */
    CHECK(eng_grammar_matcher_create(g, NULL, &m) == 0, "matcher");
    CHECK(eng_grammar_matcher_accept_bytes(m, "a", 1) == 0 && eng_grammar_matcher_accept_bytes(m, "3", 1) == 0 &&
              eng_grammar_matcher_accept_bytes(m, "45", 2) == 0,
          "a 3 45 in pieces");
    CHECK(eng_grammar_matcher_complete(m) && eng_grammar_matcher_can_continue(m), "flags after a345");
    eng_grammar_matcher_destroy(m);

    /* An unfinished grammar has no matcher. */
    struct eng_grammar *u = new_grammar();
    int32_t r = rule(u);
    alt(u, r), lit(u, "x");
    CHECK(eng_grammar_matcher_create(u, NULL, &m) == ENG_GRAMMAR_ERR_INVALID, "matcher of an unfinished grammar");
    CHECK(eng_grammar_matcher_create(NULL, NULL, &m) == ENG_GRAMMAR_ERR_INVALID, "matcher of NULL");
    eng_grammar_destroy(u);
    eng_grammar_matcher_destroy(NULL);
    eng_grammar_destroy(g);
}

static long max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Right recursion keeps the parse depth constant: 100000 digits, in pieces and in one call.
 * One call must not cost memory in proportion to its length either (the peak RSS growth is
 * compared with a bound far above what a constant-space matcher needs). Run first, while the
 * process's peak RSS is still low. */
static void test_right_recursion(void)
{
    const size_t n = 100000;
    char *text = tu_xmalloc(n);
    for (size_t i = 0; i < n; i++)
        text[i] = (char)('0' + i % 10);
    struct eng_grammar *g = grammar_digits();
    struct eng_grammar_matcher *m = NULL;
    CHECK(eng_grammar_matcher_create(g, NULL, &m) == 0, "matcher");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i += 7)
        rc = eng_grammar_matcher_accept_bytes(m, text + i, n - i < 7 ? n - i : 7);
    CHECK(rc == 0, "100000 digits in pieces: %d", rc);
    CHECK(eng_grammar_matcher_complete(m) && eng_grammar_matcher_can_continue(m), "flags after 100000 digits");
    CHECK(eng_grammar_matcher_accept_bytes(m, "x", 1) == ENG_GRAMMAR_ERR_REJECTED, "x after the digits");
    eng_grammar_matcher_destroy(m);

    long before = max_rss_kb();
    CHECK(eng_grammar_matcher_create(g, NULL, &m) == 0, "matcher");
    rc = eng_grammar_matcher_accept_bytes(m, text, n);
    CHECK(rc == 0, "100000 digits at once: %d", rc);
    CHECK(eng_grammar_matcher_complete(m), "complete after 100000 digits at once");
    eng_grammar_matcher_destroy(m);
    long grown = max_rss_kb() - before;
    printf("right recursion: one accept_bytes of %zu bytes grew the peak RSS by %ld KiB\n", n, grown);
    CHECK(grown < 32 * 1024, "one accept_bytes of %zu bytes grew the peak RSS by %ld KiB (scratch per byte?)", n,
          grown);

    /* The same through a JSON array of many numbers: ws "," ws value etail is tail-recursive. */
    struct eng_grammar *j = grammar_json();
    CHECK(eng_grammar_matcher_create(j, NULL, &m) == 0, "json matcher");
    rc = eng_grammar_matcher_accept_bytes(m, "[0", 2);
    for (int i = 0; i < 20000 && rc == 0; i++)
        rc = eng_grammar_matcher_accept_bytes(m, ", 12", 4);
    if (rc == 0)
        rc = eng_grammar_matcher_accept_bytes(m, "]", 1);
    CHECK(rc == 0 && eng_grammar_matcher_complete(m), "json array of 20001 numbers: %d", rc);
    eng_grammar_matcher_destroy(m);
    eng_grammar_destroy(j);
    eng_grammar_destroy(g);
    free(text);
}

/* Feeds k "(" and then k ")" one byte at a time; returns the number of "(" accepted before the
 * first refusal (k when none) and the rc of that refusal in *refusal. Closes whatever was
 * opened and reports whether that completed. */
static int nest(const struct eng_grammar *g, int k, int *refusal, bool *closed_ok)
{
    struct eng_grammar_matcher *m = NULL;
    *refusal = 0;
    *closed_ok = false;
    if (eng_grammar_matcher_create(g, NULL, &m) != 0)
        return -1;
    int opened = 0;
    for (; opened < k; opened++) {
        int rc = eng_grammar_matcher_accept_bytes(m, "(", 1);
        if (rc != 0) {
            *refusal = rc;
            break;
        }
    }
    int rc = 0;
    for (int i = 0; i < opened && rc == 0; i++)
        rc = eng_grammar_matcher_accept_bytes(m, ")", 1);
    *closed_ok = rc == 0 && eng_grammar_matcher_complete(m) && eng_grammar_matcher_accept_bytes(m, ")", 1) ==
                                                                    ENG_GRAMMAR_ERR_REJECTED;
    eng_grammar_matcher_destroy(m);
    return opened;
}

static void test_depth(void)
{
    struct eng_grammar *g = grammar_parens();
    int refusal;
    bool closed;
    int shallow[] = {1, 2, 100, ENG_GRAMMAR_MAX_DEPTH / 2, ENG_GRAMMAR_MAX_DEPTH - 1};
    for (size_t i = 0; i < sizeof shallow / sizeof shallow[0]; i++) {
        int k = shallow[i];
        int opened = nest(g, k, &refusal, &closed);
        CHECK(opened == k && refusal == 0 && closed, "nesting %d: opened %d refusal %d closed %d", k, opened, refusal,
              closed);
    }
    enum { deep = ENG_GRAMMAR_MAX_DEPTH + 50 };
    int opened = nest(g, deep, &refusal, &closed);
    CHECK(opened < deep && opened >= ENG_GRAMMAR_MAX_DEPTH - 1, "nesting %d: opened %d", deep, opened);
    CHECK(refusal == ENG_GRAMMAR_ERR_REJECTED, "nesting past the depth refused with %d, want REJECTED", refusal);
    CHECK(closed, "after the refusal at depth %d the matcher still closes what it opened", opened);

    /* One accept_bytes of the whole deep text is refused and leaves the matcher at the start. */
    char text[2 * deep];
    size_t len = sizeof text;
    memset(text, '(', (size_t)deep);
    memset(text + deep, ')', (size_t)deep);
    bool complete = true;
    CHECK(run_bytes(g, text, len, &complete, NULL) == ENG_GRAMMAR_ERR_REJECTED, "deep text at once");
    size_t ok = (size_t)(ENG_GRAMMAR_MAX_DEPTH - 1);
    memset(text, '(', ok);
    memset(text + ok, ')', ok);
    CHECK(run_bytes(g, text, 2 * ok, &complete, NULL) == 0 && complete, "nesting %zu at once", ok);
    eng_grammar_destroy(g);

    /* JSON arrays: each level costs at least one stack level, so 600 levels are refused (at
     * the first "[" too deep, not by any other error), and 200 levels pass. */
    struct eng_grammar *j = grammar_json();
    struct eng_grammar_matcher *m = NULL;
    CHECK(eng_grammar_matcher_create(j, NULL, &m) == 0, "json matcher");
    int levels = 0, rc = 0;
    for (; m && levels < 600; levels++)
        if ((rc = eng_grammar_matcher_accept_bytes(m, "[", 1)) != 0)
            break;
    CHECK(rc == ENG_GRAMMAR_ERR_REJECTED && levels < 600 && levels >= 200, "json 600 levels: %d after %d", rc, levels);
    for (int i = 0; m && i < levels && rc != 0; i++)
        CHECK(eng_grammar_matcher_accept_bytes(m, "]", 1) == 0, "closing json level %d", i);
    CHECK(m && eng_grammar_matcher_complete(m), "json closed after the refusal");
    eng_grammar_matcher_destroy(m);
    char arr[400];
    memset(arr, '[', 200);
    memset(arr + 200, ']', 200);
    CHECK(run_bytes(j, arr, sizeof arr, &complete, NULL) == 0 && complete, "json 200 levels");
    eng_grammar_destroy(j);
}

static void test_ambiguity(void)
{
    /* A rule opening more than ENG_GRAMMAR_MAX_STACKS parses where it starts is refused at
     * finish (counted by alternatives, an upper bound): S ::= A | A | ... 300 times. */
    struct eng_grammar *g = new_grammar();
    int32_t s = rule(g), a = rule(g);
    for (int i = 0; i < 300; i++)
        alt(g, s), ref(g, a);
    alt(g, a), lit(g, "a"), ref(g, s);
    alt(g, a);
    CHECK(eng_grammar_finish(g) == ENG_GRAMMAR_ERR_AMBIGUOUS, "300 alternatives at one start");
    eng_grammar_destroy(g);
    /* 200 identical alternatives pass, and the matcher folds their equal parses into one. */
    g = new_grammar();
    s = rule(g);
    a = rule(g);
    for (int i = 0; i < 200; i++)
        alt(g, s), ref(g, a);
    alt(g, a), lit(g, "a"), ref(g, s);
    alt(g, a);
    finished(g, "many identical alternatives");
    struct eng_grammar_matcher *m = NULL;
    CHECK(eng_grammar_matcher_create(g, NULL, &m) == 0, "matcher");
    int rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++)
        rc = eng_grammar_matcher_accept_bytes(m, "a", 1);
    CHECK(rc == 0 || rc == ENG_GRAMMAR_ERR_AMBIGUOUS, "identical alternatives: %d", rc);
    if (rc == 0)
        CHECK(eng_grammar_matcher_complete(m), "identical alternatives: complete");
    CHECK(eng_grammar_matcher_accept_bytes(m, "b", 1) == ENG_GRAMMAR_ERR_REJECTED, "b");
    eng_grammar_matcher_destroy(m);
    eng_grammar_destroy(g);

    /* (a|a)*:  R ::= G R | "";  G ::= "a" | "a" */
    g = new_grammar();
    int32_t r = rule(g), gg = rule(g);
    alt(g, r), ref(g, gg), ref(g, r);
    alt(g, r);
    alt(g, gg), lit(g, "a");
    alt(g, gg), lit(g, "a");
    finished(g, "(a|a)*");
    char as[2000];
    memset(as, 'a', sizeof as);
    bool complete = false;
    rc = run_bytes(g, as, sizeof as, &complete, NULL);
    CHECK((rc == 0 && complete) || rc == ENG_GRAMMAR_ERR_AMBIGUOUS, "(a|a)* on 2000 a: %d", rc);
    eng_grammar_destroy(g);

    /* P ::= "a" P "b" | "a" P "c" | "": after k "a" there are 2^k distinct pending tails. */
    g = new_grammar();
    int32_t p = rule(g);
    alt(g, p), lit(g, "a"), ref(g, p), lit(g, "b");
    alt(g, p), lit(g, "a"), ref(g, p), lit(g, "c");
    alt(g, p);
    finished(g, "exponential");
    CHECK(eng_grammar_matcher_create(g, NULL, &m) == 0, "matcher");
    int k = 0;
    rc = 0;
    for (; k < 24; k++) {
        rc = eng_grammar_matcher_accept_bytes(m, "a", 1);
        if (rc != 0)
            break;
    }
    CHECK(rc == 0 || rc == ENG_GRAMMAR_ERR_AMBIGUOUS, "exponential: %d after %d a", rc, k);
    /* Whatever was accepted, the matcher is intact: it closes with any mix of b and c. */
    CHECK(eng_grammar_matcher_accept_bytes(m, "x", 1) == ENG_GRAMMAR_ERR_REJECTED, "x in the exponential grammar");
    int rc2 = 0;
    for (int i = 0; i < k && rc2 == 0; i++)
        rc2 = eng_grammar_matcher_accept_bytes(m, i % 3 ? "b" : "c", 1);
    CHECK(rc2 == 0 || rc2 == ENG_GRAMMAR_ERR_AMBIGUOUS, "closing %d: %d", k, rc2);
    if (rc2 == 0)
        CHECK(eng_grammar_matcher_complete(m), "closed %d", k);
    eng_grammar_matcher_destroy(m);
    eng_grammar_destroy(g);

    /* Many nullable references in a row: a lot of expansion, no crash. */
    g = new_grammar();
    int32_t root = rule(g), n = rule(g);
    alt(g, root);
    for (int i = 0; i < 40; i++)
        ref(g, n);
    lit(g, "z");
    alt(g, n);
    alt(g, n), lit(g, "n");
    finished(g, "nullable run");
    rc = run_bytes(g, "nnz", 3, &complete, NULL);
    CHECK((rc == 0 && complete) || rc == ENG_GRAMMAR_ERR_AMBIGUOUS, "nullable run: %d", rc);
    eng_grammar_destroy(g);
}

static void test_classes_and_high_bytes(void)
{
    struct eng_grammar *g = grammar_sparse();
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        bool in = memchr(sparse_bytes, b, sizeof sparse_bytes) != NULL;
        bool complete = false;
        int rc = run_bytes(g, &c, 1, &complete, NULL);
        CHECK(in ? rc == 0 && complete : rc == ENG_GRAMMAR_ERR_REJECTED, "sparse class, byte %02x: %d", b, rc);
    }
    CHECK(run_bytes(g, "a\0c\x80\xff", 5, NULL, NULL) == 0, "sparse class run with a NUL");
    eng_grammar_destroy(g);

    /* A class that is one contiguous run is still the same set. */
    g = new_grammar();
    int32_t r = rule(g);
    uint32_t set[8] = {0};
    for (int b = 0x7e; b <= 0x81; b++)
        set[b >> 5] |= 1u << (b & 31);
    alt(g, r);
    CHECK(eng_grammar_add_class(g, set) == 0, "contiguous class");
    finished(g, "contiguous class");
    for (int b = 0x70; b <= 0x90; b++) {
        char c = (char)b;
        int rc = run_bytes(g, &c, 1, NULL, NULL);
        CHECK((b >= 0x7e && b <= 0x81) == (rc == 0), "contiguous class, byte %02x: %d", b, rc);
    }
    eng_grammar_destroy(g);

    /* Literal bytes >= 0x80: "é" = C3 A9, also "中" = E4 B8 AD. */
    g = new_grammar();
    r = rule(g);
    alt(g, r), lit(g, "\xc3\xa9");
    alt(g, r), lit(g, "\xe4\xb8\xad!");
    finished(g, "high literals");
    expect_text(g, "\xc3\xa9", true, true);
    expect_text(g, "\xe4\xb8\xad!", true, true);
    expect_text(g, "\xe4\xb8\xad", true, false);
    expect_text(g, "\xc3\xa8", false, false);
    expect_text(g, "\xc3", true, false);
    expect_text(g, "\x43\xa9", false, false);
    struct eng_grammar_matcher *m = NULL;
    CHECK(eng_grammar_matcher_create(g, NULL, &m) == 0, "matcher");
    CHECK(eng_grammar_matcher_accept_bytes(m, "\xc3", 1) == 0 && eng_grammar_matcher_accept_bytes(m, "\xa9", 1) == 0 &&
              eng_grammar_matcher_complete(m) && !eng_grammar_matcher_can_continue(m),
          "C3 then A9");
    eng_grammar_matcher_destroy(m);
    eng_grammar_destroy(g);
}

/* ---- 3. masks against brute force on the real vocabulary ---- */

struct vocab_ctx {
    const struct eng_tokenizer *tok;
    int32_t n_vocab;
    struct eng_grammar_vocab *v, *v_pad; /* over n_vocab and over n_vocab + EXTRA_PAD */
    char (*text)[64];                    /* [n_vocab] each id's bytes */
    int *len;                            /* [n_vocab] eng_tokenizer_token_bytes, <= 0: none */
};

static size_t words_of(int64_t vocab)
{
    return (size_t)(vocab + 31) / 32;
}

static bool bit(const uint32_t *w, int32_t id)
{
    return (w[id >> 5] >> (id & 31)) & 1u;
}

static int64_t popcount(const uint32_t *w, size_t words)
{
    int64_t n = 0;
    for (size_t i = 0; i < words; i++)
        n += __builtin_popcount(w[i]);
    return n;
}

/* s (n bytes) printable: bytes outside ASCII's printable range as \xNN. */
static void escape(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f)
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    out[o] = '\0';
}

static void print_piece(const struct vocab_ctx *cx, int32_t id, char *out, size_t cap)
{
    size_t plen = 0;
    const char *p = eng_tokenizer_id_to_piece(cx->tok, id, &plen);
    escape(p ? p : "", p ? plen : 0, out, cap);
}

/* A matcher of g with vocabulary v after prefix; NULL (and a failed check) when refused. */
static struct eng_grammar_matcher *at(const struct eng_grammar *g, const struct eng_grammar_vocab *v,
                                      const char *prefix, size_t plen)
{
    struct eng_grammar_matcher *m = NULL;
    if (eng_grammar_matcher_create(g, v, &m) != 0) {
        FAIL("matcher_create");
        return NULL;
    }
    int rc = eng_grammar_matcher_accept_bytes(m, prefix, plen);
    if (rc != 0) {
        char shown[128];
        escape(prefix, plen, shown, sizeof shown);
        FAIL("prefix \"%s\" refused: %d", shown, rc);
        eng_grammar_matcher_destroy(m);
        return NULL;
    }
    return m;
}

/* Computes the mask of g after prefix and checks it bit by bit against the brute force, its
 * count, a second (cached) call, the padded vocabulary, and accept_token on a sample of ids.
 * Returns the mask (caller frees) or NULL when the position could not be reached. */
static uint32_t *check_mask_at(const struct vocab_ctx *cx, const struct eng_grammar *g, const char *prefix,
                               size_t plen, const char *label)
{
    int32_t nv = cx->n_vocab;
    size_t words = words_of(nv), pad_words = words_of(nv + EXTRA_PAD);
    struct eng_grammar_matcher *m = at(g, cx->v, prefix, plen);
    if (!m)
        return NULL;
    uint32_t *allow = tu_xmalloc(words * sizeof *allow), *again = tu_xmalloc(words * sizeof *again);
    memset(allow, 0xA5, words * sizeof *allow); /* garbage the mask must overwrite */
    int64_t n = eng_grammar_matcher_mask(m, nv, allow);
    CHECK(n >= 0, "%s: mask gave %lld", label, (long long)n);
    CHECK(n == popcount(allow, words), "%s: count %lld but %lld bits set", label, (long long)n,
          (long long)popcount(allow, words));
    CHECK(nv % 32 == 0 || (allow[words - 1] >> (nv % 32)) == 0, "%s: bits past the vocabulary", label);
    memset(again, 0x5A, words * sizeof *again);
    int64_t n2 = eng_grammar_matcher_mask(m, nv, again);
    CHECK(n2 == n && memcmp(again, allow, words * sizeof *allow) == 0, "%s: second (cached) mask differs", label);
    CHECK(eng_grammar_matcher_mask(m, nv + 1, again) == ENG_GRAMMAR_ERR_INVALID, "%s: mask of a wrong size", label);
    CHECK(eng_grammar_matcher_mask(m, nv, NULL) == ENG_GRAMMAR_ERR_INVALID, "%s: mask into NULL", label);

    /* Brute force: a fresh matcher, the prefix, the token's bytes. */
    int reported = 0;
    int64_t n_brute = 0;
    char buf[256];
    for (int32_t id = 0; id < nv; id++) {
        bool want = false;
        int len = eng_tokenizer_token_bytes(cx->tok, id, buf, sizeof buf);
        if (len > 0) {
            struct eng_grammar_matcher *b = at(g, NULL, prefix, plen);
            if (!b)
                break;
            int rc = eng_grammar_matcher_accept_bytes(b, buf, (size_t)len);
            CHECK(rc == 0 || rc == ENG_GRAMMAR_ERR_REJECTED, "%s: id %d: accept_bytes %d", label, (int)id, rc);
            want = rc == 0;
            eng_grammar_matcher_destroy(b);
        }
        n_brute += want;
        if (bit(allow, id) != want && reported++ < MAX_REPORTED) {
            char piece[128];
            print_piece(cx, id, piece, sizeof piece);
            FAIL("%s: id %d \"%s\": mask %d, brute force %d", label, (int)id, piece, bit(allow, id), want);
        }
    }
    CHECK(reported == 0, "%s: %d ids differ from the brute force (%lld allowed by it, %lld by the mask)", label,
          reported, (long long)n_brute, (long long)n);

    /* The padded vocabulary: the same bits, padding ids 0. */
    struct eng_grammar_matcher *mp = at(g, cx->v_pad, prefix, plen);
    if (mp) {
        uint32_t *pad = tu_xmalloc(pad_words * sizeof *pad);
        memset(pad, 0xFF, pad_words * sizeof *pad);
        int64_t np = eng_grammar_matcher_mask(mp, nv + EXTRA_PAD, pad);
        CHECK(np == n, "%s: padded vocabulary count %lld vs %lld", label, (long long)np, (long long)n);
        bool same = true, pad_zero = true;
        for (int32_t id = 0; id < nv + EXTRA_PAD; id++) {
            if (id < nv)
                same = same && bit(pad, id) == bit(allow, id);
            else
                pad_zero = pad_zero && !bit(pad, id);
        }
        CHECK(same, "%s: padded vocabulary mask differs on real ids", label);
        CHECK(pad_zero, "%s: a padding id is allowed", label);
        CHECK((nv + EXTRA_PAD) % 32 == 0 || (pad[pad_words - 1] >> ((nv + EXTRA_PAD) % 32)) == 0,
              "%s: bits past the padded vocabulary", label);
        CHECK(eng_grammar_matcher_accept_token(mp, nv + 3) == ENG_GRAMMAR_ERR_REJECTED, "%s: padding token", label);
        free(pad);
        eng_grammar_matcher_destroy(mp);
    }

    /* accept_token agrees with the mask: every allowed id (up to a few hundred) and a sample of
     * the others, each on a fresh matcher. */
    int tried_allowed = 0;
    for (int32_t id = 0; id < nv; id++) {
        bool allowed = bit(allow, id);
        if (allowed ? tried_allowed++ >= 300 : id % 97 != 0)
            continue;
        struct eng_grammar_matcher *t = at(g, cx->v, prefix, plen);
        if (!t)
            break;
        int rc = eng_grammar_matcher_accept_token(t, id);
        CHECK(allowed ? rc == 0 : rc == ENG_GRAMMAR_ERR_REJECTED, "%s: accept_token(%d) %d, mask bit %d", label,
              (int)id, rc, allowed);
        eng_grammar_matcher_destroy(t);
    }
    CHECK(eng_grammar_matcher_accept_token(m, -1) == ENG_GRAMMAR_ERR_REJECTED, "%s: token -1", label);
    CHECK(eng_grammar_matcher_accept_token(m, nv) == ENG_GRAMMAR_ERR_REJECTED, "%s: token n_vocab", label);
    CHECK(eng_grammar_matcher_accept_token(m, 1) == ENG_GRAMMAR_ERR_REJECTED, "%s: <s>", label);
    eng_grammar_matcher_destroy(m);
    free(again);
    return allow;
}

static int32_t id_of(const struct vocab_ctx *cx, const char *piece)
{
    int32_t id = eng_tokenizer_piece_to_id(cx->tok, piece, strlen(piece));
    CHECK(id >= 0, "piece \"%s\" not in the vocabulary", piece);
    return id;
}

/* Checks that each listed piece is allowed (want = true) or not in mask. */
static void expect_pieces(const struct vocab_ctx *cx, const uint32_t *mask, const char *label, bool want,
                          const char *const *pieces)
{
    if (!mask)
        return;
    for (; *pieces; pieces++) {
        int32_t id = id_of(cx, *pieces);
        if (id >= 0)
            CHECK(bit(mask, id) == want, "%s: piece \"%s\" (%d) allowed %d, want %d", label, *pieces, (int)id,
                  bit(mask, id), want);
    }
}

static void expect_bytes(const uint32_t *mask, const char *label, bool want, const char *bytes, size_t n)
{
    if (!mask)
        return;
    for (size_t i = 0; i < n; i++) {
        int32_t id = BYTE_ID((uint8_t)bytes[i]);
        CHECK(bit(mask, id) == want, "%s: byte token <0x%02X> allowed %d, want %d", label, (uint8_t)bytes[i],
              bit(mask, id), want);
    }
}

#define PIECES(...) ((const char *const[]){__VA_ARGS__, NULL})
#define SP "\xe2\x96\x81" /* U+2581, SentencePiece's space */

static void test_masks_json(const struct vocab_ctx *cx)
{
    struct eng_grammar *g = grammar_json();
    struct {
        const char *prefix;
        size_t len;
    } pos[] = {
        {"", 0},
        {"{", 1},
        {"{\"", 2},
        {"{\"ab", 4},
        {"{\"a\"", 4},
        {"{\"a\":", 5},
        {"{\"a\": [", 7},
        {"[1", 2},
        {"[1.5e", 5},
        {"[\"x\\", 4},
        {"[\"\xe4", 3},
        {"[\"\xe4\xb8", 4},
        {"[\"\xe4\xb8\xad", 5},
        {"[true", 5},
        {"[true]", 6},
        {"  {\"k\": {\"n\": [null, -0.5E+3, {}], \"s\": \"x\"}", 0},
    };
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) {
        size_t len = pos[i].len ? pos[i].len : strlen(pos[i].prefix);
        char label[160], shown[128];
        escape(pos[i].prefix, len, shown, sizeof shown);
        snprintf(label, sizeof label, "json after \"%s\"", shown);
        uint32_t *mask = check_mask_at(cx, g, pos[i].prefix, len, label);
        if (!mask)
            continue;
        int64_t count = popcount(mask, words_of(cx->n_vocab));
        switch (i) {
        case 0: /* a value, or white space first */
            expect_pieces(cx, mask, label, true, PIECES("{", SP "{", "[", SP "true", "true", "\"", "0", SP));
            expect_pieces(cx, mask, label, false, PIECES("}", "]", "hello", ",", "},"));
            expect_bytes(mask, label, true, "{[\"-0 \n", 7);
            expect_bytes(mask, label, false, "}x\xe4", 3);
            break;
        case 1: /* after "{": white space, a key, or "}" */
            expect_pieces(cx, mask, label, true, PIECES("\"", "}", SP));
            expect_pieces(cx, mask, label, false, PIECES(SP "{", "{", "[", "true", "},", ","));
            break;
        case 3: /* inside a key: nearly everything, including the key's end with a colon */
            expect_pieces(cx, mask, label, true,
                          PIECES("hello", SP "hello", "\xe4\xb8\xad", "\xc3\xa9", "\":", "\"", SP "{"));
            expect_pieces(cx, mask, label, false, PIECES("\"}", "\","));
            expect_bytes(mask, label, true, "\xe4\xc3\xf0\x22\x5c a", 7);
            expect_bytes(mask, label, false, "\x80\xbf\xc0\xc1\xf5\xff\n\x01", 8);
            CHECK(count > cx->n_vocab / 2, "%s: only %lld allowed", label, (long long)count);
            break;
        case 5: /* after "{\"a\":": white space then a value */
            expect_pieces(cx, mask, label, true, PIECES(SP "{", SP "true", "{", SP "[", SP "\""));
            expect_pieces(cx, mask, label, false, PIECES("}", "},", ":"));
            break;
        case 7: /* "[1": digits, fraction, exponent, separator, end */
            expect_pieces(cx, mask, label, true, PIECES("0", ".", "e", "E", ",", "]", SP));
            expect_pieces(cx, mask, label, false, PIECES("-", "+", "\"", "x"));
            break;
        case 10: /* after a UTF-8 lead byte: exactly its continuation bytes, as byte tokens */
            for (int b = 0x80; b <= 0xbf; b++)
                CHECK(bit(mask, BYTE_ID(b)), "%s: <0x%02X> not allowed", label, b);
            CHECK(count == 64, "%s: %lld allowed, want the 64 continuation byte tokens", label, (long long)count);
            break;
        case 12: /* after a whole CJK character inside a string */
            expect_pieces(cx, mask, label, true, PIECES("\xe6\x96\x87", "\"", "\",", "\"]", "a"));
            expect_bytes(mask, label, true, "\xe4", 1);
            break;
        case 14: /* complete: only white space may follow */
            expect_pieces(cx, mask, label, true, PIECES(SP, SP SP));
            expect_pieces(cx, mask, label, false, PIECES(",", "]", SP "{"));
            break;
        default:
            break;
        }
        free(mask);
    }
    eng_grammar_destroy(g);
}

static void test_masks_small(const struct vocab_ctx *cx)
{
    struct eng_grammar *d = grammar_digits();
    uint32_t *m0 = check_mask_at(cx, d, "", 0, "digits at the start");
    if (m0) {
        expect_pieces(cx, m0, "digits", true, PIECES("0", "1", "9"));
        expect_pieces(cx, m0, "digits", false, PIECES(SP, "a", "."));
        expect_bytes(m0, "digits", true, "0123456789", 10);
        expect_bytes(m0, "digits", false, " a/:", 4);
    }
    uint32_t *m1 = check_mask_at(cx, d, "12", 2, "digits after 12");
    if (m0 && m1)
        CHECK(memcmp(m0, m1, words_of(cx->n_vocab) * 4) == 0, "digits: the mask after 12 differs from the start");
    free(m0);
    free(m1);

    /* The same parse set after each digit: the cached mask of one position serves the next. */
    struct eng_grammar_matcher *m = at(d, cx->v, "", 0);
    size_t words = words_of(cx->n_vocab);
    uint32_t *a = tu_xmalloc(words * 4), *b = tu_xmalloc(words * 4);
    if (m) {
        int32_t one = id_of(cx, "1"), seven = id_of(cx, "7");
        CHECK(eng_grammar_matcher_accept_token(m, one) == 0, "token 1");
        int64_t na = eng_grammar_matcher_mask(m, cx->n_vocab, a);
        CHECK(eng_grammar_matcher_accept_token(m, seven) == 0, "token 7");
        CHECK(eng_grammar_matcher_accept_token(m, BYTE_ID('3')) == 0, "token <0x33>");
        int64_t nb = eng_grammar_matcher_mask(m, cx->n_vocab, b);
        CHECK(na == nb && na > 0 && memcmp(a, b, words * 4) == 0, "digits: masks after 1 and after 173 differ");
        CHECK(eng_grammar_matcher_accept_token(m, id_of(cx, SP)) == ENG_GRAMMAR_ERR_REJECTED, "space token in digits");
        eng_grammar_matcher_destroy(m);
    }
    eng_grammar_destroy(d);

    /* Only " hello". */
    struct eng_grammar *h = grammar_hello();
    uint32_t *hm = check_mask_at(cx, h, "", 0, "hello at the start");
    expect_pieces(cx, hm, "hello at the start", true, PIECES(SP "hello", SP "hel", SP "h", SP));
    expect_pieces(cx, hm, "hello at the start", false, PIECES("hello", SP "Hello", SP "{", "lo", SP SP));
    expect_bytes(hm, "hello at the start", true, " ", 1);
    expect_bytes(hm, "hello at the start", false, "h", 1);
    uint32_t *hm2 = check_mask_at(cx, h, " hel", 4, "hello after \" hel\"");
    expect_pieces(cx, hm2, "hello after \" hel\"", true, PIECES("lo", "l"));
    expect_pieces(cx, hm2, "hello after \" hel\"", false, PIECES(SP "hel", SP "hello", "hello", SP "lo"));
    uint32_t *hm3 = check_mask_at(cx, h, " hello", 6, "hello complete");
    if (hm3)
        CHECK(popcount(hm3, words) == 0, "hello complete: %lld tokens allowed", (long long)popcount(hm3, words));

    /* Accepting a token moves the mask: one matcher through " hel" + "lo". */
    m = at(h, cx->v, "", 0);
    if (m && hm && hm2) {
        int64_t n0 = eng_grammar_matcher_mask(m, cx->n_vocab, a);
        CHECK(n0 == popcount(hm, words) && memcmp(a, hm, words * 4) == 0, "hello: start mask");
        CHECK(eng_grammar_matcher_accept_token(m, id_of(cx, "hello")) == ENG_GRAMMAR_ERR_REJECTED,
              "hello without space");
        CHECK(eng_grammar_matcher_accept_token(m, id_of(cx, SP "hel")) == 0, "token ' hel'");
        int64_t n1 = eng_grammar_matcher_mask(m, cx->n_vocab, b);
        CHECK(n1 == popcount(hm2, words) && memcmp(b, hm2, words * 4) == 0, "hello: mask after ' hel'");
        CHECK(memcmp(a, b, words * 4) != 0, "hello: the mask did not change after a token");
        CHECK(eng_grammar_matcher_accept_token(m, id_of(cx, SP "hel")) == ENG_GRAMMAR_ERR_REJECTED, "' hel' twice");
        CHECK(eng_grammar_matcher_accept_token(m, id_of(cx, "lo")) == 0, "token 'lo'");
        CHECK(eng_grammar_matcher_complete(m) && !eng_grammar_matcher_can_continue(m), "hello: flags at the end");
        CHECK(eng_grammar_matcher_mask(m, cx->n_vocab, b) == 0 && popcount(b, words) == 0, "hello: mask at the end");
    }
    eng_grammar_matcher_destroy(m);
    free(hm);
    free(hm2);
    free(hm3);
    eng_grammar_destroy(h);

    /* Masks where many parses are alive: P ::= "a" P "b" | "a" P "c" | "" after k "a" has
     * 2^k pending tails. Either a mask equal to the brute force or ENG_GRAMMAR_ERR_AMBIGUOUS. */
    struct eng_grammar *e = new_grammar();
    int32_t p = rule(e);
    alt(e, p), lit(e, "a"), ref(e, p), lit(e, "b");
    alt(e, p), lit(e, "a"), ref(e, p), lit(e, "c");
    alt(e, p);
    finished(e, "exponential");
    uint32_t *em = check_mask_at(cx, e, "a", 1, "exponential after a");
    expect_pieces(cx, em, "exponential after a", true, PIECES("a", "b", "c", "ab", "aaaa"));
    expect_pieces(cx, em, "exponential after a", false, PIECES("d", SP "a", "bc", "cb"));
    free(em);
    /* Deeper, the walk reaches "aaaa" (the vocabulary's longest run of a), whose parses pass
     * ENG_GRAMMAR_MAX_STACKS: the whole mask may then be refused. */
    for (int k = 0; k < 14; k++) {
        char as[16];
        memset(as, 'a', (size_t)k);
        struct eng_grammar_matcher *em2 = NULL;
        CHECK(eng_grammar_matcher_create(e, cx->v, &em2) == 0, "matcher");
        int rc = eng_grammar_matcher_accept_bytes(em2, as, (size_t)k);
        CHECK(rc == 0 || rc == ENG_GRAMMAR_ERR_AMBIGUOUS, "exponential, %d a: %d", k, rc);
        if (rc == 0) {
            /* A byte whose parses pass the ceiling leaves its tokens out of the mask (the
             * rest still counts): 'a' is in the mask exactly when accepting it works. */
            int64_t n = eng_grammar_matcher_mask(em2, cx->n_vocab, a);
            int arc = eng_grammar_matcher_accept_bytes(em2, "a", 1);
            CHECK(n > 0 && n == popcount(a, words) && (k == 0 || bit(a, BYTE_ID('b'))) &&
                      bit(a, BYTE_ID('a')) == (arc == 0) &&
                      (arc == 0 || arc == ENG_GRAMMAR_ERR_AMBIGUOUS),
                  "exponential, mask after %d a: %lld (accepting a: %d)", k, (long long)n, arc);
        }
        eng_grammar_matcher_destroy(em2);
    }
    eng_grammar_destroy(e);

    /* Deep inside JSON arrays: 100 levels (a long stack under every parse). */
    struct eng_grammar *j = grammar_json();
    char deep[104];
    memset(deep, '[', 100);
    memcpy(deep + 100, "1, ", 3);
    uint32_t *jm = check_mask_at(cx, j, deep, 103, "json 100 levels deep");
    expect_pieces(cx, jm, "json 100 levels deep", true, PIECES("[", "[[", "1", "\"", "true", "{"));
    expect_pieces(cx, jm, "json 100 levels deep", false, PIECES("]", ","));
    free(jm);
    eng_grammar_destroy(j);

    /* The sparse class, including the NUL byte token. */
    struct eng_grammar *s = grammar_sparse();
    uint32_t *sm = check_mask_at(cx, s, "", 0, "sparse class");
    expect_bytes(sm, "sparse class", true, sparse_bytes, sizeof sparse_bytes);
    expect_bytes(sm, "sparse class", false, "b\x01\x81\xfe", 4);
    expect_pieces(cx, sm, "sparse class", true, PIECES("a", "c"));
    expect_pieces(cx, sm, "sparse class", false, PIECES("b", SP "a"));
    free(sm);
    eng_grammar_destroy(s);

    free(a);
    free(b);
}

/* A small vocabulary (the first 300 ids: the 3 control pieces, the 256 byte tokens, then a few
 * pieces) gives exactly the byte tokens a grammar allows. */
static void test_small_vocab(const struct vocab_ctx *cx)
{
    struct eng_grammar_vocab *v = NULL;
    CHECK(eng_grammar_vocab_create(cx->tok, 300, &v) == 0, "vocab of 300");
    struct eng_grammar *d = grammar_digits();
    struct eng_grammar_matcher *m = NULL;
    if (v && eng_grammar_matcher_create(d, v, &m) == 0) {
        uint32_t w[(300 + 31) / 32];
        int64_t n = eng_grammar_matcher_mask(m, 300, w);
        bool ok = n == 10;
        for (int32_t id = 0; id < 300; id++)
            ok = ok && bit(w, id) == (id >= BYTE_ID('0') && id <= BYTE_ID('9'));
        CHECK(ok, "vocab of 300, digits: %lld allowed, want exactly <0x30>..<0x39>", (long long)n);
        CHECK(eng_grammar_matcher_accept_token(m, 300) == ENG_GRAMMAR_ERR_REJECTED, "token past a small vocab");
        eng_grammar_matcher_destroy(m);
    }
    eng_grammar_destroy(d);
    eng_grammar_vocab_destroy(v);
    v = NULL;
    CHECK(eng_grammar_vocab_create(cx->tok, 0, &v) == ENG_GRAMMAR_ERR_INVALID, "vocab of 0");
    CHECK(eng_grammar_vocab_create(NULL, 10, &v) == ENG_GRAMMAR_ERR_INVALID, "vocab without tokenizer");
    CHECK(eng_grammar_vocab_create(cx->tok, 10, NULL) == ENG_GRAMMAR_ERR_INVALID, "vocab to NULL");
    eng_grammar_vocab_destroy(NULL);
}

/* A real JSON text, tokenized, fed token by token: each token must be in the mask before it is
 * accepted, and each mask (cached or not in the walking matcher) must equal a fresh matcher's
 * at the same position. */
static void test_token_walk(const struct vocab_ctx *cx)
{
    static const char doc[] = "{\"name\": \"Zoë 中文 \\\"q\\\"\", \"n\": [1, 2.50, -3e+7, true, null],\n"
                              "  \"nested\": {\"a\": {\"b\": [[], {}]}}, \"name\": \"Zoë\"}";
    int32_t *ids = NULL;
    size_t n_ids = 0;
    CHECK(eng_tokenizer_encode(cx->tok, doc, strlen(doc), 0, &ids, &n_ids) == 0 && n_ids > 10, "encode the document");
    struct eng_grammar *g = grammar_json();
    struct eng_grammar_matcher *m = NULL;
    CHECK(eng_grammar_matcher_create(g, cx->v, &m) == 0, "matcher");
    size_t words = words_of(cx->n_vocab);
    uint32_t *a = tu_xmalloc(words * 4), *b = tu_xmalloc(words * 4);
    char *prefix = tu_xmalloc(n_ids * 64 + 1);
    size_t plen = 0;
    int fails = 0;
    for (size_t i = 0; m && i < n_ids && fails < MAX_REPORTED; i++) {
        int32_t id = ids[i];
        int64_t na = eng_grammar_matcher_mask(m, cx->n_vocab, a);
        struct eng_grammar_matcher *f = at(g, cx->v, prefix, plen);
        int64_t nb = f ? eng_grammar_matcher_mask(f, cx->n_vocab, b) : -100;
        eng_grammar_matcher_destroy(f);
        if (na < 0 || na != nb || memcmp(a, b, words * 4) != 0) {
            FAIL("walk step %zu: mask %lld differs from a fresh matcher's %lld", i, (long long)na, (long long)nb);
            fails++;
        }
        if (!bit(a, id)) {
            FAIL("walk step %zu: the document's token %d is not allowed", i, (int)id);
            fails++;
        }
        int rc = eng_grammar_matcher_accept_token(m, id);
        if (rc != 0) {
            FAIL("walk step %zu: accept_token(%d) %d", i, (int)id, rc);
            break;
        }
        int len = cx->len[id];
        if (len > 0) {
            memcpy(prefix + plen, cx->text[id], (size_t)len);
            plen += (size_t)len;
        }
    }
    if (m) {
        CHECK(eng_grammar_matcher_complete(m), "the document is complete");
        CHECK(plen == strlen(doc) + 1 && prefix[0] == ' ' && memcmp(prefix + 1, doc, plen - 1) == 0,
              "the tokens' bytes are the document after a space (%zu bytes)", plen);
    }
    eng_grammar_matcher_destroy(m);
    eng_grammar_destroy(g);
    free(prefix);
    free(a);
    free(b);
    free(ids);
}

/* ---- 4. eng_tokenizer_token_bytes ---- */

static void test_token_bytes(const struct vocab_ctx *cx)
{
    const struct eng_tokenizer *tok = cx->tok;
    char buf[64];
    int32_t hello = id_of(cx, SP "Hello");
    int n = eng_tokenizer_token_bytes(tok, hello, buf, sizeof buf);
    CHECK(n == 6 && memcmp(buf, " Hello", 6) == 0, "' Hello': %d", n);
    int32_t three = id_of(cx, SP SP SP);
    n = eng_tokenizer_token_bytes(tok, three, buf, sizeof buf);
    CHECK(n == 3 && memcmp(buf, "   ", 3) == 0, "three spaces: %d", n);
    n = eng_tokenizer_token_bytes(tok, id_of(cx, "hello"), buf, sizeof buf);
    CHECK(n == 5 && memcmp(buf, "hello", 5) == 0, "'hello': %d", n);
    n = eng_tokenizer_token_bytes(tok, id_of(cx, "<0x0A>"), buf, sizeof buf);
    CHECK(n == 1 && buf[0] == '\n', "<0x0A>: %d", n);
    CHECK(id_of(cx, "<0x0A>") == BYTE_ID('\n'), "<0x0A> id");
    n = eng_tokenizer_token_bytes(tok, BYTE_ID(0xe4), buf, sizeof buf);
    CHECK(n == 1 && (uint8_t)buf[0] == 0xe4, "<0xE4>: %d", n);
    n = eng_tokenizer_token_bytes(tok, BYTE_ID(0), buf, sizeof buf);
    CHECK(n == 1 && buf[0] == 0, "<0x00>: %d", n);
    n = eng_tokenizer_token_bytes(tok, id_of(cx, "\xe4\xb8\xad"), buf, sizeof buf);
    CHECK(n == 3 && memcmp(buf, "\xe4\xb8\xad", 3) == 0, "'中': %d", n);
    /* Not text: control, unknown and added tokens, ids out of range. */
    CHECK(eng_tokenizer_token_bytes(tok, 0, buf, sizeof buf) == -1, "<unk>");
    CHECK(eng_tokenizer_token_bytes(tok, 1, buf, sizeof buf) == -1, "<s>");
    CHECK(eng_tokenizer_token_bytes(tok, 2, buf, sizeof buf) == -1, "</s>");
    CHECK(eng_tokenizer_token_bytes(tok, id_of(cx, "<|end|>"), buf, sizeof buf) == -1, "<|end|>");
    CHECK(eng_tokenizer_token_bytes(tok, id_of(cx, "<|endoftext|>"), buf, sizeof buf) == -1, "<|endoftext|>");
    CHECK(eng_tokenizer_token_bytes(tok, id_of(cx, "<|user|>"), buf, sizeof buf) == -1, "<|user|>");
    CHECK(eng_tokenizer_token_bytes(tok, -1, buf, sizeof buf) == -1, "id -1");
    CHECK(eng_tokenizer_token_bytes(tok, cx->n_vocab, buf, sizeof buf) == -1, "id n_vocab");
    CHECK(eng_tokenizer_token_bytes(tok, cx->n_vocab + 40, buf, sizeof buf) == -1, "id past n_vocab");
    CHECK(eng_tokenizer_token_bytes(tok, hello, NULL, 64) == -1, "NULL buffer");
    /* A buffer shorter than the bytes is refused; the piece's length always suffices. */
    CHECK(eng_tokenizer_token_bytes(tok, hello, buf, 5) == -1, "' Hello' into 5 bytes");
    CHECK(eng_tokenizer_token_bytes(tok, hello, buf, 8) == 6, "' Hello' into its piece's 8 bytes");
    CHECK(eng_tokenizer_token_bytes(tok, BYTE_ID('\n'), buf, 0) == -1, "<0x0A> into 0 bytes");
    CHECK(eng_tokenizer_token_bytes(tok, BYTE_ID('\n'), buf, 1) == 1, "<0x0A> into 1 byte");
    /* Over the vocabulary: every piece with text gives at most its piece's length. */
    int with_text = 0, longer = 0;
    for (int32_t id = 0; id < cx->n_vocab; id++) {
        size_t plen = 0;
        eng_tokenizer_id_to_piece(tok, id, &plen);
        if (cx->len[id] > 0) {
            with_text++;
            longer += (size_t)cx->len[id] > plen;
        }
    }
    CHECK(longer == 0, "%d ids give more bytes than their piece", longer);
    /* The 32000 SentencePiece pieces less <unk>, <s>, </s>; the added tokens have none. */
    CHECK(with_text == 32000 - 3, "%d ids with text", with_text);
}

/* ---- 5. timing ---- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void time_masks(const struct vocab_ctx *cx)
{
    struct eng_grammar *g = grammar_json();
    size_t words = words_of(cx->n_vocab);
    uint32_t *w = tu_xmalloc(words * 4);
    const int reps = 10;
    double uncached = 0;
    int64_t n = 0;
    for (int i = 0; i < reps; i++) {
        struct eng_grammar_matcher *m = at(g, cx->v, "{\"ab", 4);
        if (!m)
            break;
        double t0 = now_ms();
        n = eng_grammar_matcher_mask(m, cx->n_vocab, w);
        uncached += now_ms() - t0;
        eng_grammar_matcher_destroy(m);
    }
    struct eng_grammar_matcher *m = at(g, cx->v, "{\"ab", 4);
    double cached = 0;
    const int creps = 1000;
    if (m) {
        eng_grammar_matcher_mask(m, cx->n_vocab, w);
        double t0 = now_ms();
        for (int i = 0; i < creps; i++)
            eng_grammar_matcher_mask(m, cx->n_vocab, w);
        cached = now_ms() - t0;
    }
    eng_grammar_matcher_destroy(m);
    printf("mask inside a JSON string (%lld of %d tokens allowed): %.3f ms uncached, %.4f ms cached\n", (long long)n,
           (int)cx->n_vocab, uncached / reps, cached / creps);
    free(w);
    eng_grammar_destroy(g);
}

/* A grammar built to make masks expensive (27 overlapping 250-character branches after a
 * free prefix: thousands of parse sets per mask) gets ENG_GRAMMAR_ERR_BUDGET from its first
 * mask, quickly, instead of holding the engine thread for seconds. */
static void test_mask_budget(const struct vocab_ctx *cx)
{
    char re[4096];
    size_t n = (size_t)snprintf(re, sizeof re, "[a-z ]*(?:");
    for (char ch = 'a'; ch <= 'z'; ch++)
        n += (size_t)snprintf(re + n, sizeof re - n, "%s%c[a-z ]{250}", ch == 'a' ? "" : "|", ch);
    n += (size_t)snprintf(re + n, sizeof re - n, "| [a-z ]{250})");
    struct eng_grammar *g = NULL;
    char err[256];
    CHECK(eng_regex_grammar(re, n, &g, err, sizeof err) == 0, "hostile regex: %s", err);
    struct eng_grammar_matcher *m = NULL;
    if (g && eng_grammar_matcher_create(g, cx->v, &m) == 0) {
        size_t words = ((size_t)cx->n_vocab + 31) / 32;
        uint32_t *a = tu_xcalloc(words, sizeof *a);
        double t0 = now_ms();
        int64_t k = eng_grammar_matcher_mask(m, cx->n_vocab, a);
        double dt = now_ms() - t0;
        CHECK(k == ENG_GRAMMAR_ERR_BUDGET, "hostile mask: %lld", (long long)k);
        printf("hostile mask refused after %.1f ms\n", dt);
        free(a);
    }
    eng_grammar_matcher_destroy(m);
    eng_grammar_destroy(g);
}

/* eng_grammar_repeat: "a" items, with and without a "," between them, every (min, max) up
 * to 3 + 3: k items are a sentence exactly when min <= k <= max. */
static void test_repeat(void)
{
    for (int with_sep = 0; with_sep < 2; with_sep++)
        for (int64_t min = 0; min <= 3; min++)
            for (int64_t max = -1; max <= min + 3; max++) {
                if (max >= 0 && max < min)
                    continue;
                struct eng_grammar *g = new_grammar();
                int32_t root = rule(g), item = rule(g), sep = with_sep ? rule(g) : -1;
                alt(g, item), lit(g, "a");
                if (sep >= 0)
                    alt(g, sep), lit(g, ",");
                int32_t r = eng_grammar_repeat(g, item, sep, min, max);
                CHECK(r > 0, "repeat %lld..%lld: %d", (long long)min, (long long)max, r);
                alt(g, root), ref(g, r);
                finished(g, "repeat");
                for (int k = 0; k <= 8; k++) {
                    char text[32] = "";
                    size_t n = 0;
                    for (int i = 0; i < k; i++) {
                        if (i > 0 && with_sep)
                            text[n++] = ',';
                        text[n++] = 'a';
                    }
                    bool complete = false, cont = false;
                    bool ok = run_bytes(g, text, n, &complete, &cont) == 0 && complete;
                    CHECK(ok == (k >= min && (max < 0 || k <= max)), "repeat %lld..%lld sep %d: %d items %s",
                          (long long)min, (long long)max, with_sep, k, ok ? "taken" : "refused");
                }
                eng_grammar_destroy(g);
            }
    struct eng_grammar *g = new_grammar();
    int32_t item = rule(g);
    alt(g, item), lit(g, "a");
    EXPECT(eng_grammar_repeat(g, item, -1, -1, 3) == ENG_GRAMMAR_ERR_INVALID);
    eng_grammar_destroy(g);
    /* References: an unfinished grammar has none to share; a finished one outlives the
     * destroy of its first holder (ASan sees a double free or a leak otherwise). */
    g = new_grammar();
    item = rule(g);
    alt(g, item), lit(g, "a");
    EXPECT(eng_grammar_retain(g) == NULL);
    finished(g, "retain");
    struct eng_grammar *g2 = eng_grammar_retain(g);
    EXPECT(g2 == g);
    eng_grammar_destroy(g);
    bool complete = false;
    EXPECT(run_bytes(g2, "a", 1, &complete, NULL) == 0 && complete);
    eng_grammar_destroy(g2);
    g = new_grammar();
    item = rule(g);
    alt(g, item), lit(g, "a");
    EXPECT(eng_grammar_repeat(g, item, -1, 3, 2) == ENG_GRAMMAR_ERR_INVALID);
    eng_grammar_destroy(g);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <fixtures_dir>\n", argv[0]);
        return 2;
    }
    test_right_recursion(); /* first: it measures the peak RSS */
    test_build_errors();
    test_recursion_checks();
    test_after_finish_and_clone();
    test_limits();
    test_matcher_basic();
    test_depth();
    test_ambiguity();
    test_classes_and_high_bytes();
    test_repeat();

    char dir[4096], err[256] = "";
    snprintf(dir, sizeof dir, "%s/tokenizer/phi3", argv[1]);
    struct eng_tokenizer *tok = NULL;
    if (eng_tokenizer_load_dir(dir, &tok, err, sizeof err) != 0) {
        fprintf(stderr, "cannot load %s: %s\n", dir, err);
        return 1;
    }
    struct vocab_ctx cx = {.tok = tok, .n_vocab = eng_tokenizer_get_info(tok)->n_vocab};
    CHECK(cx.n_vocab == 32011, "n_vocab %d", (int)cx.n_vocab);
    CHECK(eng_tokenizer_byte_value(tok, BYTE_ID(0xAB)) == 0xAB, "byte ids are not 3 + value");
    cx.text = tu_xcalloc((size_t)cx.n_vocab, sizeof *cx.text);
    cx.len = tu_xcalloc((size_t)cx.n_vocab, sizeof *cx.len);
    for (int32_t id = 0; id < cx.n_vocab; id++)
        cx.len[id] = eng_tokenizer_token_bytes(tok, id, cx.text[id], sizeof cx.text[id]);
    double t0 = now_ms();
    CHECK(eng_grammar_vocab_create(tok, cx.n_vocab, &cx.v) == 0 && cx.v, "vocab");
    double t1 = now_ms();
    CHECK(eng_grammar_vocab_create(tok, (int64_t)cx.n_vocab + EXTRA_PAD, &cx.v_pad) == 0 && cx.v_pad, "padded vocab");
    test_mask_budget(&cx);
    printf("vocabulary trie of %d ids: %.1f ms\n", (int)cx.n_vocab, t1 - t0);
    if (cx.v && cx.v_pad) {
        test_token_bytes(&cx);
        test_small_vocab(&cx);
        test_masks_small(&cx);
        test_masks_json(&cx);
        test_token_walk(&cx);
        time_masks(&cx);
    }
    eng_grammar_vocab_destroy(cx.v);
    eng_grammar_vocab_destroy(cx.v_pad);
    free(cx.text);
    free(cx.len);
    eng_tokenizer_destroy(tok);
    return tu_finish("test_grammar");
}
