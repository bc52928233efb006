/* Tests of engine/json_schema.c: which texts a compiled schema accepts and rejects, and which
 * schemas are refused with which path. The documents are fed byte by byte through the
 * grammar matcher; token masks are test_grammar's and test_structured's business. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "json_schema.h"
#include "../test_util.h"

static struct eng_json_doc *parse(const char *text)
{
    struct eng_json_doc *doc = NULL;
    struct eng_json_error jerr;
    if (eng_json_parse(text, strlen(text), NULL, &doc, &jerr) != 0) {
        fprintf(stderr, "bad test schema: %s\n", text);
        exit(1);
    }
    return doc;
}

/* Whether the whole text is a complete sentence of schema's grammar (schema NULL: json_object). */
static int accepts(const char *schema, const char *text)
{
    struct eng_json_doc *doc = schema ? parse(schema) : NULL;
    struct eng_grammar *g = NULL;
    char err[256];
    int rc = eng_json_schema_compile(doc ? eng_json_root(doc) : NULL, "schema", &g, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "compile failed (%d): %s for %s\n", rc, err, schema);
        eng_json_free(doc);
        return -1;
    }
    struct eng_grammar_matcher *m = NULL;
    EXPECT(eng_grammar_matcher_create(g, NULL, &m) == 0);
    int ok = eng_grammar_matcher_accept_bytes(m, text, strlen(text)) == 0 &&
             eng_grammar_matcher_complete(m);
    eng_grammar_matcher_destroy(m);
    eng_grammar_destroy(g);
    eng_json_free(doc);
    return ok;
}

#define YES(schema, text) CHECK(accepts(schema, text) == 1, "should accept %s", text)
#define NO(schema, text) CHECK(accepts(schema, text) == 0, "should reject %s", text)

/* Compiling fails with code and a message containing want. */
static void refused(const char *schema, int code, const char *want)
{
    struct eng_json_doc *doc = parse(schema);
    struct eng_grammar *g = NULL;
    char err[256];
    int rc = eng_json_schema_compile(eng_json_root(doc), "response_format.json_schema.schema", &g,
                                     err, sizeof err);
    CHECK(rc == code && g == NULL, "%.200s: rc %d, want %d", schema, rc, code);
    CHECK(strstr(err, want) != NULL, "%.200s: message \"%s\" lacks \"%s\"", schema, err, want);
    eng_json_free(doc);
}

static void test_json_object_mode(void)
{
    YES(NULL, "{}");
    YES(NULL, "{\"a\": 1}");
    YES(NULL, " {\"a\": [1, 2.5e-3, -0, true, false, null, {\"b\": \"\\u00e9\\n\"}]}");
    YES(NULL, "{\n  \"k\" : \"v\"\n}");
    YES(NULL, "{\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\": \"\"}");
    NO(NULL, "[]");        /* json_object: an object */
    NO(NULL, "\"x\"");
    NO(NULL, "{\"a\": 1,}");
    NO(NULL, "{\"a\" 1}");
    NO(NULL, "{'a': 1}");
    NO(NULL, "{\"a\": 01}");
    NO(NULL, "{\"a\": 1.}");
    NO(NULL, "{\"a\": .5}");
    NO(NULL, "{\"a\": +1}");
    NO(NULL, "{\"a\": tru}");
    NO(NULL, "{\"a\": \"\x01\"}");     /* raw control character */
    NO(NULL, "{\"a\": \"\\x\"}");       /* bad escape */
    NO(NULL, "{\"a\": \"\\ud800\"}");   /* surrogate escape */
    NO(NULL, "{\"a\": \"\\u0000\"}");
    NO(NULL, "{\"a\": \"\xc0\x80\"}");  /* overlong */
    NO(NULL, "{\"a\": \"\xed\xa0\x80\"}"); /* UTF-8 surrogate */
    NO(NULL, "{\"a\": \"\xff\"}");
    NO(NULL, "{} ");       /* nothing after the value */
    NO(NULL, "{}{}");
    YES(NULL, "{\"a\": 1234567890123456}");
    NO(NULL, "{\"a\": 12345678901234567}"); /* 17 integer digits */
    YES(NULL, "{\"a\": -1.5e+99}");
    NO(NULL, "{\"a\": 1e999}");                /* would overflow a double */
    /* 32 whitespace bytes at most between tokens */
    char buf[128];
    snprintf(buf, sizeof buf, "{%32s}", "");
    YES(NULL, buf);
    snprintf(buf, sizeof buf, "{%33s}", "");
    NO(NULL, buf);
    EXPECT(accepts(NULL, "{") == 0);
}

static void test_objects(void)
{
    const char *s = "{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\"},"
                    " \"age\": {\"type\": \"integer\"}}, \"required\": [\"name\", \"age\"],"
                    " \"additionalProperties\": false}";
    YES(s, "{\"name\": \"Ann\", \"age\": 31}");
    YES(s, "{ \"name\":\"\",\"age\":-4 }");
    NO(s, "{\"age\": 31, \"name\": \"Ann\"}");   /* declared order */
    NO(s, "{\"name\": \"Ann\"}");                /* required */
    NO(s, "{\"name\": \"Ann\", \"age\": 3.5}");
    NO(s, "{\"name\": 5, \"age\": 3}");
    NO(s, "{\"name\": \"Ann\", \"age\": 31, \"x\": 1}");
    /* Optional members, in any subset, commas right. */
    const char *o = "{\"properties\": {\"a\": {\"type\": \"integer\"}, \"b\": {\"type\": \"integer\"},"
                    " \"c\": {\"type\": \"integer\"}}, \"required\": [\"b\"]}";
    YES(o, "{\"b\": 1}");
    YES(o, "{\"a\": 1, \"b\": 2}");
    YES(o, "{\"b\": 2, \"c\": 3}");
    YES(o, "{\"a\": 1, \"b\": 2, \"c\": 3}");
    NO(o, "{}");
    NO(o, "{\"a\": 1}");
    NO(o, "{\"a\": 1, \"c\": 3}");
    NO(o, "{, \"b\": 2}");
    NO(o, "{\"b\": 2,}");
    const char *all_opt = "{\"type\": \"object\", \"properties\": {\"a\": {}, \"b\": {}}}";
    YES(all_opt, "{}");
    YES(all_opt, "{\"b\": [1]}");
    YES(all_opt, "{\"a\": null, \"b\": {}}");
    NO(all_opt, "{\"z\": 1}"); /* additionalProperties absent: none (strict mode) */
    const char *extra = "{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\"}},"
                        " \"additionalProperties\": {\"type\": \"string\"}}";
    YES(extra, "{\"a\": 1, \"z\": \"s\", \"y\": \"t\"}");
    YES(extra, "{\"z\": \"s\"}");
    YES(extra, "{}");
    NO(extra, "{\"a\": 1, \"z\": 2}");
    const char *extra_any = "{\"type\": \"object\", \"additionalProperties\": true}";
    YES(extra_any, "{\"q\": [1, {\"r\": null}]}");
    /* A required name not among the properties: any value. */
    YES("{\"type\": \"object\", \"required\": [\"id\"]}", "{\"id\": [true]}");
    /* ... whose value follows additionalProperties when that is a schema */
    YES("{\"type\": \"object\", \"required\": [\"x\"], \"additionalProperties\": {\"type\": \"integer\"}}",
        "{\"x\": 3}");
    NO("{\"type\": \"object\", \"required\": [\"x\"], \"additionalProperties\": {\"type\": \"integer\"}}",
       "{\"x\": \"s\"}");
    NO("{\"type\": \"object\", \"required\": [\"id\"]}", "{}");
    /* Keys are escaped as JSON strings. */
    YES("{\"properties\": {\"a\\\"b\": {\"const\": 1}}, \"required\": [\"a\\\"b\"]}",
        "{\"a\\\"b\": 1}");
    YES("{\"properties\": {\"\xc3\xa9t\xc3\xa9\": {\"type\": \"boolean\"}}}", "{\"\xc3\xa9t\xc3\xa9\": false}");
}

static void test_arrays_strings_literals(void)
{
    const char *a = "{\"type\": \"array\", \"items\": {\"type\": \"number\"}, \"minItems\": 2,"
                    " \"maxItems\": 3}";
    NO(a, "[]");
    NO(a, "[1]");
    YES(a, "[1, 2]");
    YES(a, "[1,2.5,3e10]");
    NO(a, "[1, 2, 3, 4]");
    NO(a, "[1, \"2\"]");
    YES("{\"type\": \"array\"}", "[1, \"a\", [null]]");
    YES("{\"type\": \"array\", \"items\": false}", "[]");
    NO("{\"type\": \"array\", \"items\": false}", "[1]");
    const char *t = "{\"type\": \"array\", \"prefixItems\": [{\"type\": \"string\"}, {\"type\": \"integer\"}],"
                    " \"items\": false, \"minItems\": 1}";
    YES(t, "[\"a\"]");
    YES(t, "[\"a\", 2]");
    NO(t, "[]");
    NO(t, "[2]");
    NO(t, "[\"a\", 2, 3]");
    const char *t2 = "{\"prefixItems\": [{\"const\": \"x\"}], \"items\": {\"type\": \"boolean\"}}";
    YES(t2, "[]");
    YES(t2, "[\"x\"]");
    YES(t2, "[\"x\", true, false]");
    NO(t2, "[true]");
    const char *s = "{\"type\": \"string\", \"minLength\": 2, \"maxLength\": 3}";
    NO(s, "\"a\"");
    YES(s, "\"ab\"");
    YES(s, "\"\xe4\xb8\xad\xe6\x96\x87\""); /* characters, not bytes */
    YES(s, "\"a\\nb\"");                    /* an escape is one character */
    NO(s, "\"abcd\"");
    const char *e = "{\"enum\": [\"red\", \"green\", 3, null, {\"k\": [1, true]}, 0.1]}";
    YES(e, "\"red\"");
    YES(e, "\"green\"");
    YES(e, "3");
    YES(e, "null");
    YES(e, "{\"k\":[1,true]}");
    YES(e, "0.1");
    NO(e, "\"blue\"");
    NO(e, "\"re\"");
    NO(e, "4");
    YES("{\"const\": \"a\\u0001\\\"\"}", "\"a\\u0001\\\"\"");
    YES("{\"type\": [\"string\", \"null\"], \"maxLength\": 1}", "null");
    YES("{\"type\": [\"string\", \"null\"], \"maxLength\": 1}", "\"x\"");
    NO("{\"type\": [\"string\", \"null\"], \"maxLength\": 1}", "\"xy\"");
    YES("{\"type\": \"boolean\"}", "true");
    /* type next to enum narrows it (pydantic writes both) */
    const char *te = "{\"type\": \"integer\", \"enum\": [1, \"1\", 2.0, 2.5]}";
    YES(te, "1");
    YES(te, "2");
    NO(te, "\"1\"");
    NO(te, "2.5");
    NO("{\"type\": \"boolean\"}", "1");
    YES("true", "[{\"a\": \"b\"}]");
    YES("{}", "12");
}

static void test_combinators_and_refs(void)
{
    const char *any = "{\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"object\", \"properties\":"
                      " {\"x\": {\"type\": \"integer\"}}, \"required\": [\"x\"]}]}";
    YES(any, "7");
    YES(any, "{\"x\": 7}");
    NO(any, "\"7\"");
    const char *one = "{\"oneOf\": [{\"const\": \"a\"}, {\"const\": \"ab\"}]}";
    YES(one, "\"a\"");
    YES(one, "\"ab\"");
    YES("{\"allOf\": [{\"type\": \"null\"}], \"title\": \"t\"}", "null");
    /* Pydantic's shape: $defs, $ref, anyOf with null, annotations everywhere. */
    const char *py =
        "{\"$defs\": {\"Pet\": {\"properties\": {\"kind\": {\"enum\": [\"cat\", \"dog\"], \"title\": \"Kind\","
        " \"type\": \"string\"}}, \"required\": [\"kind\"], \"title\": \"Pet\", \"type\": \"object\"}},"
        " \"properties\": {\"name\": {\"title\": \"Name\", \"type\": \"string\"},"
        " \"pet\": {\"anyOf\": [{\"$ref\": \"#/$defs/Pet\"}, {\"type\": \"null\"}], \"default\": null},"
        " \"born\": {\"format\": \"date-time\", \"type\": \"string\"}},"
        " \"required\": [\"name\"], \"title\": \"Owner\", \"type\": \"object\"}";
    YES(py, "{\"name\": \"Bo\"}");
    YES(py, "{\"name\": \"Bo\", \"pet\": {\"kind\": \"cat\"}}");
    YES(py, "{\"name\": \"Bo\", \"pet\": null, \"born\": \"2020-01-01T00:00:00Z\"}");
    NO(py, "{\"name\": \"Bo\", \"pet\": {\"kind\": \"cow\"}}");
    /* Recursion through $ref: a tree. */
    const char *tree = "{\"$defs\": {\"node\": {\"type\": \"object\", \"properties\": {\"v\": {\"type\":"
                       " \"integer\"}, \"kids\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/$defs/node\"}}},"
                       " \"required\": [\"v\"]}}, \"$ref\": \"#/$defs/node\"}";
    YES(tree, "{\"v\": 1, \"kids\": [{\"v\": 2}, {\"v\": 3, \"kids\": [{\"v\": 4, \"kids\": []}]}]}");
    NO(tree, "{\"v\": 1, \"kids\": [{\"w\": 2}]}");
    const char *root = "{\"type\": \"array\", \"items\": {\"$ref\": \"#\"}}";
    YES(root, "[[], [[]]]");
    NO(root, "[1]");
    YES("{\"definitions\": {\"a~b/c\": {\"const\": 1}}, \"$ref\": \"#/definitions/a~0b~1c\"}", "1");
}

static void test_refusals(void)
{
    const int U = ENG_JSON_SCHEMA_ERR_UNSUPPORTED, I = ENG_JSON_SCHEMA_ERR_INVALID;
    refused("{\"type\": \"string\", \"pattern\": \"^(?=a)\"}", U, "schema.pattern: ");
    refused("{\"type\": \"string\", \"pattern\": \"(a\"}", I, "schema.pattern: ");
    refused("{\"type\": \"string\", \"pattern\": \"a\", \"maxLength\": 3}", U, "together");
    refused("{\"type\": \"string\", \"pattern\": 3}", I, "schema.pattern: must be a string");
    refused("{\"properties\": {\"n\": {\"type\": \"integer\", \"multipleOf\": 2}}}", U,
            "schema.properties.n.multipleOf");
    refused("{\"type\": \"array\", \"uniqueItems\": true}", U, "uniqueItems");
    refused("{\"not\": {}}", U, "not");
    refused("{\"type\": \"strin\"}", I, "unknown type \"strin\"");
    refused("{\"type\": 3}", I, "schema.type: ");
    refused("{\"type\": [\"string\", \"string\"]}", I, "distinct");
    refused("{\"type\": \"string\", \"minLength\": 3, \"maxLength\": 2}", I, "larger");
    refused("{\"type\": \"string\", \"maxLength\": 5000}", U, "schema.maxLength");
    refused("{\"type\": \"string\", \"maxLength\": -1}", I, "non-negative");
    refused("{\"type\": \"string\", \"maxLength\": 1.5}", I, "non-negative");
    refused("{\"enum\": []}", I, "non-empty");
    refused("{\"anyOf\": []}", I, "non-empty");
    refused("{\"allOf\": [{}, {}]}", U, "exactly one");
    refused("{\"$ref\": \"#/$defs/missing\"}", U, "does not name");
    refused("{\"$ref\": \"http://example.com/s.json\"}", U, "does not name");
    refused("{\"$ref\": \"#\"}", I, "refers to itself");
    refused("{\"$defs\": {\"a\": {\"$ref\": \"#/$defs/b\"}, \"b\": {\"anyOf\": [{\"$ref\": \"#/$defs/a\"}]}},"
            " \"$ref\": \"#/$defs/a\"}", I, "refers to itself");
    refused("{\"type\": \"object\", \"anyOf\": [{}]}", U, "on their own");
    refused("false", I, "matches nothing");
    refused("[1]", I, "object or a boolean");
    refused("{\"properties\": {\"a\": false}}", I, "schema.properties.a: ");
    refused("{\"type\": \"array\", \"items\": false, \"minItems\": 1}", I, "minItems");
    refused("{\"required\": [\"a\", \"a\"]}", I, "twice");
    refused("{\"properties\": []}", I, "'properties' must be an object");
    /* errors found by fuzz_json_schema */
    refused("{\"properties\": {\"a\": {\"type\": \"x\"}}, \"additionalProperties\": true}", I,
            "unknown type");
    refused("{\"type\": \"object\", \"properties\": {\"a\": {}}, \"required\": [\"b\"],"
            " \"additionalProperties\": false}", I, "neither");
    refused("{\"type\": \"object\", \"properties\": {\"a\": {\"$ref\": \"#\"}}, \"required\": [\"a\"]}", I,
            "no finite value");
    refused("{\"type\": \"string\", \"const\": 1}", I, "no value of 'const'");
    refused("{\"type\": \"string\", \"enum\": [\"a\"], \"maxLength\": 3}", U, "on their own");
}

/* Big schemas end in a clear error, not in unbounded memory. */
static void test_too_big(void)
{
    size_t n = 200, cap = n * 64 + 64;
    char *s = tu_xmalloc(cap);
    size_t len = (size_t)snprintf(s, cap, "{\"properties\": {");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s\"p%zu\": {\"maxLength\": 4096}", i ? "," : "", i);
    snprintf(s + len, cap - len, "}}");
    refused(s, ENG_JSON_SCHEMA_ERR_TOO_BIG, "too large");
    free(s);
}

/* pattern: JSON Schema searches unless anchored; the content is JSON-escaped. */
static void test_pattern(void)
{
    const char *anchored = "{\"type\": \"string\", \"pattern\": \"^[a-c]+$\"}";
    YES(anchored, "\"abc\"");
    NO(anchored, "\"abd\"");
    NO(anchored, "\"\"");
    NO(anchored, "\"xabc\"");
    const char *search = "{\"pattern\": \"b[0-9]\"}"; /* no type: a string */
    YES(search, "\"ab1c\"");
    YES(search, "\"b2\"");
    NO(search, "\"ab c\"");
    NO(search, "3");
    const char *head = "{\"type\": \"string\", \"pattern\": \"^ab\"}";
    YES(head, "\"abzz\"");
    NO(head, "\"zab\"");
    const char *quote = "{\"type\": \"string\", \"pattern\": \"^a\\\"b\\\\\\\\$\"}"; /* the regex ^a"b\\$: a"b, then a backslash */
    YES(quote, "\"a\\\"b\\\\\"");
    NO(quote, "\"a\\\"b\\\\x\"");
    NO(quote, "\"a\"b\\\\\"");
    const char *dollar = "{\"type\": \"string\", \"pattern\": \"^a\\\\$\"}"; /* ^a\$: a literal $ */
    YES(dollar, "\"a$\"");
    YES(dollar, "\"a$x\"");
    NO(dollar, "\"a\"");
    /* pydantic's shape for constr(pattern=...) */
    YES("{\"properties\": {\"zip\": {\"pattern\": \"^\\\\d{5}$\", \"title\": \"Zip\", \"type\": \"string\"}},"
        " \"required\": [\"zip\"]}", "{\"zip\": \"12345\"}");
}

/* Integer bounds: every integer in a window is accepted exactly when it is within them. */
static void test_integer_bounds(void)
{
    static const struct {
        const char *schema;
        long long lo, hi;
    } cases[] = {
        {"{\"type\": \"integer\", \"minimum\": -37, \"maximum\": 1234}", -37, 1234},
        {"{\"type\": \"integer\", \"exclusiveMinimum\": 0}", 1, 9999999999999999LL},
        {"{\"type\": \"integer\", \"maximum\": -5}", -9999999999999999LL, -5},
        {"{\"type\": \"integer\", \"minimum\": 7, \"maximum\": 7}", 7, 7},
        {"{\"type\": \"integer\", \"minimum\": 1.5, \"exclusiveMaximum\": 100.5}", 2, 100},
        {"{\"type\": \"integer\", \"minimum\": 100, \"maximum\": 19999}", 100, 19999},
        {"{\"type\": \"integer\", \"minimum\": 5, \"exclusiveMinimum\": true}", 6, 9999999999999999LL},
        {"{\"type\": [\"integer\", \"null\"], \"minimum\": 0, \"maximum\": 10}", 0, 10},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct eng_json_doc *doc = parse(cases[k].schema);
        struct eng_grammar *g = NULL;
        char err[256];
        EXPECT(eng_json_schema_compile(eng_json_root(doc), "schema", &g, err, sizeof err) == 0);
        int bad = 0;
        for (long long v = -2100; v <= 21000 && g; v++) {
            char t[32];
            snprintf(t, sizeof t, "%lld", v);
            struct eng_grammar_matcher *m = NULL;
            EXPECT(eng_grammar_matcher_create(g, NULL, &m) == 0);
            bool ok = eng_grammar_matcher_accept_bytes(m, t, strlen(t)) == 0 &&
                      eng_grammar_matcher_complete(m);
            eng_grammar_matcher_destroy(m);
            if (ok != (v >= cases[k].lo && v <= cases[k].hi) && bad++ < 5)
                FAIL("%s: %s %s", cases[k].schema, t, ok ? "accepted" : "refused");
        }
        eng_grammar_destroy(g);
        eng_json_free(doc);
    }
    const char *r = "{\"type\": \"integer\", \"minimum\": -37, \"maximum\": 1234}";
    NO(r, "-0");
    NO(r, "007");
    NO(r, "12.0");
    YES("{\"type\": \"integer\", \"exclusiveMinimum\": 0}", "9999999999999999");
    NO("{\"type\": \"integer\", \"exclusiveMinimum\": 0}", "10000000000000000");
    YES("{\"type\": \"integer\", \"maximum\": -5}", "-9999999999999999");
    YES("{\"type\": [\"integer\", \"null\"], \"minimum\": 0, \"maximum\": 10}", "null");
    /* Bounds apply to numbers only: a string type ignores them, as JSON Schema says. */
    YES("{\"type\": \"string\", \"minimum\": 3}", "\"x\"");
    const int U = ENG_JSON_SCHEMA_ERR_UNSUPPORTED, I = ENG_JSON_SCHEMA_ERR_INVALID;
    refused("{\"type\": \"number\", \"minimum\": 0}", U, "\"number\"");
    refused("{\"minimum\": 0}", U, "need \"type\": \"integer\"");
    refused("{\"type\": \"integer\", \"minimum\": 5, \"maximum\": 4}", I, "no integer");
    refused("{\"type\": \"integer\", \"exclusiveMinimum\": 1, \"exclusiveMaximum\": 2}", I, "no integer");
    refused("{\"type\": \"integer\", \"minimum\": \"3\"}", I, "schema.minimum: must be a number");
    refused("{\"type\": \"integer\", \"exclusiveMaximum\": true}", I, "exclusiveMaximum: true needs");
    refused("{\"type\": \"integer\", \"minimum\": 1e17}", I, "no integer");
}

/* An anyOf of many overlapping strings: every branch is open at the start. */
static void test_too_ambiguous(void)
{
    char s[16384];
    size_t len = (size_t)snprintf(s, sizeof s, "{\"anyOf\": [");
    for (int k = 1; k < 300; k++)
        len += (size_t)snprintf(s + len, sizeof s - len, "%s{\"type\": \"string\", \"maxLength\": %d}",
                                k > 1 ? "," : "", k % 20);
    snprintf(s + len, sizeof s - len, "]}");
    refused(s, ENG_JSON_SCHEMA_ERR_TOO_BIG, "too many alternatives");
    /* ... also deep inside, where only a matcher reaching it would fail */
    len = (size_t)snprintf(s, sizeof s, "{\"properties\": {\"a\": {\"anyOf\": [");
    for (int k = 0; k < 300; k++)
        len += (size_t)snprintf(s + len, sizeof s - len, "%s{\"type\": \"array\", \"maxItems\": %d}",
                                k ? "," : "", k % 7);
    snprintf(s + len, sizeof s - len, "]}}}");
    refused(s, ENG_JSON_SCHEMA_ERR_TOO_BIG, "too many alternatives");
    /* Literals are a trie: 1000 enum values open one parse per distinct next byte. */
    len = (size_t)snprintf(s, sizeof s, "{\"enum\": [");
    for (int k = 0; k < 1000; k++)
        len += (size_t)snprintf(s + len, sizeof s - len, "%s\"v%d\"", k ? "," : "", k);
    snprintf(s + len, sizeof s - len, "]}");
    YES(s, "\"v0\"");
    YES(s, "\"v999\"");
    YES(s, "\"v10\"");
    YES(s, "\"v1\"");
    NO(s, "\"v1000\"");
    NO(s, "\"v\"");
    NO(s, "\"v01\"");
}

/* Hostile shapes end in a clear error, fast, with bounded recursion. */
static void test_hostile(void)
{
    /* 400 $defs chained by $ref, each 20 levels deep: 8000 nested schemas */
    size_t cap = 1u << 20, len = 0;
    char *s = tu_xmalloc(cap);
    len += (size_t)snprintf(s + len, cap - len, "{\"$defs\": {");
    for (int d = 0; d < 400; d++) {
        len += (size_t)snprintf(s + len, cap - len, "%s\"d%d\": ", d ? "," : "", d);
        for (int k = 0; k < 20; k++)
            len += (size_t)snprintf(s + len, cap - len, "{\"properties\": {\"x\": ");
        len += (size_t)snprintf(s + len, cap - len, "{\"$ref\": \"#/$defs/d%d\"}", d + 1);
        for (int k = 0; k < 20; k++)
            len += (size_t)snprintf(s + len, cap - len, "}}");
    }
    len += (size_t)snprintf(s + len, cap - len, ", \"d400\": {\"type\": \"null\"}}, \"$ref\": \"#/$defs/d0\"}");
    struct eng_json_doc *doc = NULL;
    struct eng_json_error jerr;
    EXPECT(eng_json_parse(s, len, NULL, &doc, &jerr) == 0);
    struct eng_grammar *g = NULL;
    char err[256];
    int rc = doc ? eng_json_schema_compile(eng_json_root(doc), "schema", &g, err, sizeof err) : -1;
    CHECK(rc == ENG_JSON_SCHEMA_ERR_TOO_BIG && strstr(err, "nest deeper"), "deep $ref chain: %d %s", rc, err);
    eng_json_free(doc);
    /* 100000 required names: refused before any quadratic work */
    len = (size_t)snprintf(s, cap, "{\"type\": \"object\", \"required\": [");
    for (int k = 0; k < 100000 && len + 32 < cap; k++)
        len += (size_t)snprintf(s + len, cap - len, "%s\"k%d\"", k ? "," : "", k);
    len += (size_t)snprintf(s + len, cap - len, "]}");
    EXPECT(eng_json_parse(s, len, NULL, &doc, &jerr) == 0);
    rc = doc ? eng_json_schema_compile(eng_json_root(doc), "schema", &g, err, sizeof err) : -1;
    CHECK(rc == ENG_JSON_SCHEMA_ERR_TOO_BIG && strstr(err, "more than 1024"), "many required: %d %s", rc, err);
    eng_json_free(doc);
    free(s);
}

int main(void)
{
    test_json_object_mode();
    test_objects();
    test_arrays_strings_literals();
    test_combinators_and_refs();
    test_refusals();
    test_too_big();
    test_too_ambiguous();
    test_hostile();
    test_integer_bounds();
    test_pattern();
    return tu_finish("json_schema");
}
