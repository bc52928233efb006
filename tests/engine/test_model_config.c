/* Unit tests of engine/model_config.c: real Phi-3 configs (mini-4k, mini-128k LongRoPE, a
 * PhiMoE-style explicit mscale) parse to the documented values; every malformed or unsupported
 * field is refused with a message naming it. Not a fuzzer (tests/fuzz/fuzz_loader.c is). */
#include "model_config.h"

#include "../test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Phi-3-mini-4k-instruct config.json as saved by transformers 4.46 (after the July 2024 update). */
static const char MINI_4K[] =
    "{\n"
    "  \"_name_or_path\": \"Phi-3-mini-4k-instruct\",\n"
    "  \"architectures\": [\"Phi3ForCausalLM\"],\n"
    "  \"attention_bias\": false,\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"auto_map\": {\"AutoConfig\": \"configuration_phi3.Phi3Config\",\n"
    "               \"AutoModelForCausalLM\": \"modeling_phi3.Phi3ForCausalLM\"},\n"
    "  \"bos_token_id\": 1,\n"
    "  \"embd_pdrop\": 0.0,\n"
    "  \"eos_token_id\": 32000,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 3072,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 8192,\n"
    "  \"max_position_embeddings\": 4096,\n"
    "  \"model_type\": \"phi3\",\n"
    "  \"num_attention_heads\": 32,\n"
    "  \"num_hidden_layers\": 32,\n"
    "  \"num_key_value_heads\": 32,\n"
    "  \"original_max_position_embeddings\": 4096,\n"
    "  \"pad_token_id\": 32000,\n"
    "  \"resid_pdrop\": 0.0,\n"
    "  \"rms_norm_eps\": 1e-05,\n"
    "  \"rope_scaling\": null,\n"
    "  \"rope_theta\": 10000.0,\n"
    "  \"sliding_window\": 2047,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.40.2\",\n"
    "  \"use_cache\": true,\n"
    "  \"vocab_size\": 32064\n"
    "}\n";

static char *cat3(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *s = tu_xmalloc(n);
    if (s == NULL)
        abort();
    snprintf(s, n, "%s%s%s", a, b, c);
    return s;
}

/* rope_scaling object text with the given type and factor lists. */
static char *rope_json(const char *type, const char *sf, const char *lf)
{
    size_t n = strlen(sf) + strlen(lf) + strlen(type) + 96;
    char *s = tu_xmalloc(n);
    snprintf(s, n, "{\"type\": \"%s\", \"short_factor\": %s, \"long_factor\": %s}", type, sf, lf);
    return s;
}

/* A JSON list of n factors base + i * step. */
static char *factor_list(int n, double base, double step)
{
    size_t cap = (size_t)n * 32 + 4;
    char *s = tu_xmalloc(cap);
    if (s == NULL)
        abort();
    size_t p = 0;
    s[p++] = '[';
    for (int i = 0; i < n; i++)
        p += (size_t)snprintf(s + p, cap - p, "%s%.17g", i ? "," : "", base + i * step);
    s[p++] = ']';
    s[p] = '\0';
    return s;
}

/* The mini-4k config with `field` replaced by `value` (value NULL removes it). The field is
 * found as "\n  \"field\": " and runs to the end of its line. */
static char *with_field(const char *base, const char *field, const char *value)
{
    char key[96];
    snprintf(key, sizeof(key), "\n  \"%s\": ", field);
    const char *at = strstr(base, key);
    if (at == NULL) { /* add it as the first member */
        if (value == NULL)
            return cat3(base, "", "");
        size_t mn = strlen(field) + strlen(value) + 16;
        char *mid = tu_xmalloc(mn);
        snprintf(mid, mn, "\n  \"%s\": %s,", field, value);
        char *head = tu_xmalloc(3);
        strcpy(head, "{");
        char *out = cat3(head, mid, base + 1);
        free(mid);
        free(head);
        return out;
    }
    const char *eol = strchr(at + 1, '\n');
    size_t pre = (size_t)(at - base);
    /* Keep the trailing comma if the original line had one. */
    int comma = eol[-1] == ',';
    size_t n = strlen(base) + (value ? strlen(value) : 0) + strlen(key) + 8;
    char *s = tu_xmalloc(n);
    memcpy(s, base, pre);
    s[pre] = '\0';
    if (value != NULL) {
        strcat(s, key);
        strcat(s, value);
        if (comma)
            strcat(s, ",");
        strcat(s, eol);
    } else if (comma) {
        strcat(s, eol);
    } else {
        /* Removing the last member: drop the previous line's comma. */
        size_t l = strlen(s);
        if (l > 0 && s[l - 1] == ',')
            s[l - 1] = '\0';
        strcat(s, eol);
    }
    return s;
}

static void expect_bad(const char *what, const char *json, const char *want)
{
    struct eng_model_config cfg;
    memset(&cfg, 0x5a, sizeof(cfg));
    char err[512] = "";
    int rc = eng_model_config_parse(json, strlen(json), &cfg, err, sizeof(err));
    if (rc != -1 || strstr(err, want) == NULL) {
        fprintf(stderr, "[%s] rc=%d err='%s' (want '%s')\n", what, rc, err, want);
        tu_failures++;
    }
    /* cfg is left untouched on failure. */
    const unsigned char *b = (const unsigned char *)&cfg;
    int untouched = 1;
    for (size_t i = 0; i < sizeof(cfg); i++)
        untouched &= b[i] == 0x5a;
    if (!untouched) {
        fprintf(stderr, "[%s] cfg modified on failure\n", what);
        tu_failures++;
    }
}

static void expect_bad_field(const char *what, const char *field, const char *value, const char *want)
{
    char *j = with_field(MINI_4K, field, value);
    expect_bad(what, j, want);
    free(j);
}

static int parse_ok(const char *what, const char *json, struct eng_model_config *cfg)
{
    char err[512] = "";
    int rc = eng_model_config_parse(json, strlen(json), cfg, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "[%s] unexpected failure: %s\n", what, err);
        tu_failures++;
    }
    return rc;
}

static void test_mini_4k(void)
{
    struct eng_model_config c;
    if (parse_ok("mini-4k", MINI_4K, &c) != 0)
        return;
    EXPECT(c.arch == ENG_ARCH_PHI3);
    EXPECT(c.hidden_size == 3072 && c.intermediate_size == 8192 && c.num_hidden_layers == 32);
    EXPECT(c.num_attention_heads == 32 && c.num_key_value_heads == 32 && c.head_dim == 96);
    EXPECT(c.rotary_dim == 96 && c.vocab_size == 32064);
    EXPECT(c.max_position_embeddings == 4096 && c.original_max_position_embeddings == 4096);
    EXPECT(c.sliding_window == 2047);
    EXPECT(c.rms_norm_eps == 1e-5 && c.rope_theta == 10000.0 && c.partial_rotary_factor == 1.0);
    EXPECT(c.tie_word_embeddings == 0);
    EXPECT(c.rope_type == ENG_ROPE_DEFAULT && c.n_rope_factors == 0);
    EXPECT(c.short_mscale == 1.0 && c.long_mscale == 1.0);
    EXPECT(c.bos_token_id == 1 && c.pad_token_id == 32000);
    EXPECT(c.n_eos_ids == 1 && c.eos_token_ids[0] == 32000);

    /* Not NUL-terminated: parse exactly len bytes of a buffer followed by garbage. */
    size_t n = strlen(MINI_4K);
    char *buf = tu_xmalloc(n + 4);
    memcpy(buf, MINI_4K, n);
    memcpy(buf + n, "xyz{", 4);
    char err[256];
    EXPECT(eng_model_config_parse(buf, n, &c, err, sizeof(err)) == 0 && c.hidden_size == 3072);
    free(buf);

    /* generation_config.json adds stop ids, deduplicated. */
    const char *gen = "{\"bos_token_id\": 1, \"eos_token_id\": [32000, 32001, 32007], "
                      "\"pad_token_id\": 32000, \"transformers_version\": \"4.40.2\"}";
    EXPECT(eng_model_config_merge_generation(gen, strlen(gen), &c, err, sizeof(err)) == 0);
    EXPECT(c.n_eos_ids == 3 && c.eos_token_ids[0] == 32000 && c.eos_token_ids[1] == 32001 &&
          c.eos_token_ids[2] == 32007);
    const char *gen2 = "{\"eos_token_id\": 32007}";
    EXPECT(eng_model_config_merge_generation(gen2, strlen(gen2), &c, err, sizeof(err)) == 0);
    EXPECT(c.n_eos_ids == 3);
    const char *gen3 = "{\"do_sample\": true}";
    EXPECT(eng_model_config_merge_generation(gen3, strlen(gen3), &c, err, sizeof(err)) == 0);
    EXPECT(c.n_eos_ids == 3);
    static const struct { const char *json, *want; } bad_gen[] = {
        {"{\"eos_token_id\": [32000, 40000]}", "eos_token_id[1]"},
        {"{\"eos_token_id\": -1}", "eos_token_id"},
        {"{\"eos_token_id\": \"32000\"}", "eos_token_id"},
        {"{\"eos_token_id\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]}", "more than 16"},
        {"[32000]", "not a JSON object"},
        {"{\"eos_token_id\": 2,}", "not valid JSON"},
        {"", "empty"},
    };
    for (size_t i = 0; i < sizeof(bad_gen) / sizeof(bad_gen[0]); i++) {
        err[0] = '\0';
        int rc = eng_model_config_merge_generation(bad_gen[i].json, strlen(bad_gen[i].json), &c, err,
                                                   sizeof(err));
        if (rc != -1 || strstr(err, bad_gen[i].want) == NULL ||
            strstr(err, "generation_config.json") == NULL) {
            fprintf(stderr, "[generation %zu] rc=%d err='%s'\n", i, rc, err);
            tu_failures++;
        }
        EXPECT(c.n_eos_ids == 3 && c.eos_token_ids[2] == 32007); /* unchanged */
    }
}

static void test_defaults(void)
{
    /* The smallest accepted config: Phi3Config defaults fill the rest. */
    const char *j = "{\"model_type\":\"phi3\",\"hidden_size\":64,\"intermediate_size\":128,"
                    "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100,"
                    "\"max_position_embeddings\":256}";
    struct eng_model_config c;
    if (parse_ok("defaults", j, &c) != 0)
        return;
    EXPECT(c.num_key_value_heads == 4 && c.head_dim == 16 && c.rotary_dim == 16);
    EXPECT(c.rms_norm_eps == 1e-5 && c.rope_theta == 10000.0 && c.partial_rotary_factor == 1.0);
    EXPECT(c.original_max_position_embeddings == 256 && c.sliding_window == 0);
    EXPECT(c.tie_word_embeddings == 0 && c.rope_type == ENG_ROPE_DEFAULT);
    EXPECT(c.bos_token_id == -1 && c.pad_token_id == -1 && c.n_eos_ids == 0);
    EXPECT(c.short_mscale == 1.0 && c.long_mscale == 1.0);

    /* Phi-4-mini-like: GQA, partial rotary, tied embeddings, big vocab, window past max. */
    char *f = factor_list(48, 1.0, 0.5);
    char *rs = rope_json("longrope", f, f);
    const char *p4 =
        "{\"architectures\":[\"Phi3ForCausalLM\"],\"model_type\":\"phi3\",\"hidden_size\":3072,"
        "\"intermediate_size\":8192,\"num_hidden_layers\":32,\"num_attention_heads\":24,"
        "\"num_key_value_heads\":8,\"vocab_size\":200064,\"partial_rotary_factor\":0.75,"
        "\"max_position_embeddings\":131072,\"original_max_position_embeddings\":4096,"
        "\"tie_word_embeddings\":true,\"bos_token_id\":199999,\"eos_token_id\":199999,"
        "\"pad_token_id\":199999,\"sliding_window\":262144,\"lm_head_bias\":false,"
        "\"mlp_bias\":false,\"full_attn_mod\":1,\"rope_scaling\":";
    char *p4j = cat3(p4, rs, "}");
    if (parse_ok("phi-4-mini-like", p4j, &c) == 0) {
        EXPECT(c.head_dim == 128 && c.rotary_dim == 96 && c.n_rope_factors == 48);
        EXPECT(c.num_key_value_heads == 8 && c.tie_word_embeddings == 1 && c.sliding_window == 0);
        EXPECT(c.bos_token_id == 199999 && c.n_eos_ids == 1 && c.eos_token_ids[0] == 199999);
        EXPECT(c.short_factor[47] == (float)(1.0 + 47 * 0.5));
        EXPECT(fabs(c.long_mscale - sqrt(1.0 + log(32.0) / log(4096.0))) < 1e-12);
    }
    free(p4j);
    free(f);
    free(rs);
}

/* LongRoPE config of Phi-3-mini-128k (type "su" as released in April 2024). */
static char *mini_128k(const char *type, const char *extra_rs, int n_short, int n_long)
{
    char *sf = factor_list(n_short, 1.05, 0.05);
    char *lf = factor_list(n_long, 1.0299999713897705, 1.25);
    size_t tn = strlen(sf) + strlen(lf) + strlen(type) + strlen(extra_rs) + 128;
    char *t = tu_xmalloc(tn);
    snprintf(t, tn, "{\"type\": %s, \"short_factor\": %s, \"long_factor\": %s%s}", type, sf, lf, extra_rs);
    char *a = with_field(MINI_4K, "rope_scaling", t);
    char *b = with_field(a, "max_position_embeddings", "131072");
    char *c = with_field(b, "sliding_window", "262144");
    free(sf);
    free(lf);
    free(t);
    free(a);
    free(b);
    return c;
}

static void test_longrope(void)
{
    struct eng_model_config c;
    char *j = mini_128k("\"su\"", "", 48, 48);
    if (parse_ok("mini-128k su", j, &c) == 0) {
        EXPECT(c.rope_type == ENG_ROPE_LONGROPE && c.n_rope_factors == 48);
        EXPECT(c.max_position_embeddings == 131072 && c.original_max_position_embeddings == 4096);
        EXPECT(c.sliding_window == 0);
        EXPECT(fabs(c.short_mscale - 1.1902380714) < 1e-9);
        EXPECT(fabs(c.long_mscale - 1.1902380714) < 1e-9);
        EXPECT(fabs(c.short_mscale - sqrt(17.0 / 12.0)) < 1e-15); /* 1 + ln32/ln4096 = 17/12 */
        EXPECT(c.short_factor[0] == 1.05f && c.short_factor[47] == (float)(1.05 + 47 * 0.05));
        EXPECT(c.long_factor[0] == 1.0299999713897705f && c.long_factor[47] == (float)(1.0299999713897705 + 47 * 1.25));
    }
    free(j);
    j = mini_128k("\"longrope\"", "", 48, 48);
    if (parse_ok("mini-128k longrope", j, &c) == 0)
        EXPECT(c.rope_type == ENG_ROPE_LONGROPE);
    free(j);

    /* transformers' explicit attention_factor wins over the derived value. */
    j = mini_128k("\"longrope\"", ", \"attention_factor\": 1.5", 48, 48);
    if (parse_ok("attention_factor", j, &c) == 0)
        EXPECT(c.short_mscale == 1.5 && c.long_mscale == 1.5);
    free(j);

    /* LongRoPE with max == original: s = 1, no scaling. */
    char *t = mini_128k("\"longrope\"", "", 48, 48);
    char *u = with_field(t, "max_position_embeddings", "4096");
    if (parse_ok("longrope s=1", u, &c) == 0)
        EXPECT(c.short_mscale == 1.0 && c.long_mscale == 1.0 && c.sliding_window == 0);
    free(t);
    free(u);

    /* Phi-3.5-MoE-style: explicit short/long mscale and original length inside rope_scaling,
     * head_dim 128 (64 factors), GQA 32/8. */
    char *sf = factor_list(64, 1.0, 0.01), *lf = factor_list(64, 1.0199999809265137, 1.0);
    size_t rn = strlen(sf) + strlen(lf) + 300;
    char *rs = tu_xmalloc(rn);
    snprintf(rs, rn, "{\"long_factor\": %s, \"long_mscale\": 1.243163121016122, "
                "\"original_max_position_embeddings\": 4096, \"rope_type\": \"longrope\", "
                "\"short_factor\": %s, \"short_mscale\": 1.243163121016122, \"type\": \"longrope\"}",
            lf, sf);
    const char *moe_head =
        "{\"architectures\":[\"Phi3ForCausalLM\"],\"model_type\":\"phi3\",\"hidden_size\":4096,"
        "\"intermediate_size\":6400,\"num_hidden_layers\":32,\"num_attention_heads\":32,"
        "\"num_key_value_heads\":8,\"vocab_size\":32064,\"max_position_embeddings\":131072,"
        "\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,\"sliding_window\":131072,"
        "\"bos_token_id\":1,\"eos_token_id\":32000,\"pad_token_id\":32000,\"rope_scaling\":";
    j = cat3(moe_head, rs, "}");
    if (parse_ok("moe-style mscale", j, &c) == 0) {
        EXPECT(c.head_dim == 128 && c.rotary_dim == 128 && c.n_rope_factors == 64);
        EXPECT(c.num_key_value_heads == 8 && c.sliding_window == 0);
        EXPECT(c.original_max_position_embeddings == 4096);
        EXPECT(c.short_mscale == 1.243163121016122 && c.long_mscale == 1.243163121016122);
        EXPECT(c.long_factor[63] == (float)(1.0199999809265137 + 63.0));
    }
    free(j);
    /* Only long_mscale given: the short table keeps the derived value. */
    snprintf(rs, rn, "{\"type\": \"longrope\", \"short_factor\": %s, \"long_factor\": %s, "
                "\"long_mscale\": 2.0, \"original_max_position_embeddings\": 4096}", sf, lf);
    j = cat3(moe_head, rs, "}");
    if (parse_ok("long_mscale only", j, &c) == 0)
        EXPECT(c.long_mscale == 2.0 && fabs(c.short_mscale - sqrt(17.0 / 12.0)) < 1e-15);
    free(j);
    free(rs);
    free(sf);
    free(lf);

    /* Refusals inside rope_scaling. */
    j = mini_128k("\"yarn\"", "", 48, 48);
    expect_bad("yarn", j, "rope_scaling type 'yarn' is not supported");
    free(j);
    j = mini_128k("\"linear\"", "", 48, 48);
    expect_bad("linear", j, "type 'linear' is not supported");
    free(j);
    j = mini_128k("\"dynamic\"", "", 48, 48);
    expect_bad("dynamic", j, "type 'dynamic' is not supported");
    free(j);
    j = mini_128k("3", "", 48, 48);
    expect_bad("type not a string", j, "'rope_scaling.type' must be a string");
    free(j);
    j = mini_128k("\"su\"", ", \"rope_type\": \"yarn\"", 48, 48);
    expect_bad("type and rope_type disagree", j, "disagree");
    free(j);
    j = mini_128k("\"su\"", "", 47, 48);
    expect_bad("47 short factors", j, "'rope_scaling.short_factor' has 47 entries, rotary_dim/2 = 48");
    free(j);
    j = mini_128k("\"su\"", "", 48, 49);
    expect_bad("49 long factors", j, "'rope_scaling.long_factor' has more than rotary_dim/2 = 48");
    free(j);
    j = mini_128k("\"su\"", "", 48, 0);
    expect_bad("empty long factors", j, "long_factor' has 0 entries");
    free(j);
    j = with_field(MINI_4K, "rope_scaling", "{\"type\": \"su\", \"long_factor\": [1]}");
    expect_bad("short_factor missing", j, "'rope_scaling.short_factor' must be a list");
    free(j);
    /* 48 factors in both lists, the first one bad. */
    static const struct {
        const char *what, *first, *want;
    } bad_first[] = {
        {"negative factor", "[-1.0, ", "'rope_scaling.short_factor[0]' must be a positive finite number"},
        {"string factor", "[\"1.0\", ", "short_factor[0]"},
        {"infinite factor", "[1e999, ", "short_factor[0]"},
    };
    sf = factor_list(47, 1.0, 0.1);
    for (size_t i = 0; i < sizeof(bad_first) / sizeof(bad_first[0]); i++) {
        char *bad_list = cat3(bad_first[i].first, sf + 1, "");
        char *rs2 = rope_json("su", bad_list, bad_list);
        j = with_field(MINI_4K, "rope_scaling", rs2);
        expect_bad(bad_first[i].what, j, bad_first[i].want);
        free(j);
        free(rs2);
        free(bad_list);
    }
    free(sf);
    j = mini_128k("\"su\"", ", \"attention_factor\": -1", 48, 48);
    expect_bad("negative attention_factor", j, "'rope_scaling.attention_factor'");
    free(j);
    j = mini_128k("\"su\"", ", \"short_mscale\": \"1.2\"", 48, 48);
    expect_bad("string mscale", j, "'rope_scaling.short_mscale' must be a number");
    free(j);
    j = mini_128k("\"su\"", ", \"original_max_position_embeddings\": 8192", 48, 48);
    expect_bad("original mismatch", j, "disagrees with the top-level 4096");
    free(j);
    j = mini_128k("\"su\"", ", \"type\": \"su\"", 48, 48);
    expect_bad("duplicate key in rope_scaling", j, "duplicate key 'rope_scaling.type'");
    free(j);
    expect_bad_field("rope_scaling not an object", "rope_scaling", "\"su\"",
                     "'rope_scaling' must be an object or null");
    expect_bad_field("rope_scaling without type", "rope_scaling", "{\"factor\": 2.0}",
                     "neither 'type' nor 'rope_type'");
    /* 1024 / 1 heads: rotary_dim 1024 needs 512 factors, above ENG_MAX_ROPE_FACTORS. */
    char *a = mini_128k("\"su\"", "", 48, 48);
    char *b = with_field(a, "num_attention_heads", "3");
    char *d = with_field(b, "num_key_value_heads", "3");
    char *e = with_field(d, "hidden_size", "3072");
    char *g = with_field(e, "head_dim", "1024");
    expect_bad("too many factors", g, "needs more than 256 factors");
    free(a);
    free(b);
    free(d);
    free(e);
    free(g);
}

static void test_refusals(void)
{
    expect_bad("empty", "", "config.json: empty");
    expect_bad("not JSON", "{\"hidden_size\": 3072", "not valid JSON");
    expect_bad("array", "[1, 2]", "not a JSON object");
    expect_bad("null", "null", "not a JSON object");
    expect_bad("trailing garbage", "{} {}", "trailing bytes");
    char *j = cat3(MINI_4K, "x", "");
    expect_bad("trailing x", j, "trailing bytes");
    free(j);
    expect_bad("\\u0000", "{\"model_type\": \"phi3\\u0000x\"}", "\\u0000");
    expect_bad("malformed \\u", "{\"model_type\": \"\\uZZZZ\"}", "malformed \\u escape");
    expect_bad("duplicate key", "{\"hidden_size\": 1, \"hidden_size\": 3072}", "duplicate key 'hidden_size'");

    expect_bad_field("model_type phimoe, class phi3", "model_type", "\"phimoe\"",
                     "architectures entry 'Phi3ForCausalLM' does not match model_type 'phimoe'");
    expect_bad_field("model_type phi3_v, class phi3", "model_type", "\"phi3_v\"",
                     "architectures entry 'Phi3ForCausalLM' does not match model_type 'phi3_v'");
    expect_bad_field("model_type phi4mm", "model_type", "\"phi4mm\"", "model_type 'phi4mm'");
    expect_bad_field("model_type number", "model_type", "3", "'model_type' must be a string");
    expect_bad_field("architectures moe, model_type phi3", "architectures", "[\"PhiMoEForCausalLM\"]",
                     "architectures entry 'PhiMoEForCausalLM' does not match model_type 'phi3'");
    expect_bad_field("architectures mixed", "architectures",
                     "[\"Phi3ForCausalLM\", \"PhimoeForCausalLM\"]", "does not match");
    expect_bad_field("architectures vision", "architectures", "[\"Phi3VForCausalLM\"]",
                     "architectures entry 'Phi3VForCausalLM' does not match model_type 'phi3'");
    expect_bad_field("architectures string", "architectures", "\"Phi3ForCausalLM\"",
                     "'architectures' must be a non-empty list");
    expect_bad_field("architectures empty", "architectures", "[]", "'architectures' must be a non-empty list");
    expect_bad_field("architectures [1]", "architectures", "[1]", "'architectures' must be a list of strings");
    char *a = with_field(MINI_4K, "architectures", NULL);
    char *b = with_field(a, "model_type", NULL);
    expect_bad("neither arch nor model_type", b, "neither 'architectures' nor 'model_type'");
    struct eng_model_config c;
    if (parse_ok("model_type only", a, &c) == 0)
        EXPECT(c.arch == ENG_ARCH_PHI3);
    free(a);
    free(b);
    a = with_field(MINI_4K, "model_type", NULL);
    if (parse_ok("architectures only", a, &c) == 0)
        EXPECT(c.hidden_size == 3072);
    free(a);

    static const char *const required[] = {"hidden_size", "intermediate_size", "num_hidden_layers",
                                           "num_attention_heads", "vocab_size",
                                           "max_position_embeddings"};
    /* Each required field replaced by each of these values; want is a format of the field name. */
    static const struct {
        const char *value; /* NULL: the field is removed */
        const char *want;
    } bad_required[] = {
        {NULL, "required field '%s' is missing"},
        {"null", "required field '%s' is null"},
        {"\"64\"", "field '%s' must be an integer, not a string"},
        {"true", "field '%s' must be an integer, not a boolean"},
        {"[64]", "field '%s' must be an integer, not an array"},
        {"0", "field '%s' = 0 is outside"},
        {"-64", "field '%s' = -64 is outside"},
        {"64.5", "field '%s' must be an integer, not 64.5"},
        {"1e999", "in '%s': number out of range"},
        {"1e300", "field '%s' must be an integer"},
    };
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        for (size_t k = 0; k < sizeof(bad_required) / sizeof(bad_required[0]); k++) {
            char want[96];
            snprintf(want, sizeof(want), bad_required[k].want, required[i]);
            expect_bad_field(required[i], required[i], bad_required[k].value, want);
        }
    }

    /* One field of MINI_4K replaced (value) and the message that must name the problem. */
    static const struct {
        const char *what, *field, *value, *want;
    } bad_fields[] = {
        {"hidden too big", "hidden_size", "65537", "'hidden_size' = 65537 is outside [1, 65536]"},
        {"layers too many", "num_hidden_layers", "1025", "'num_hidden_layers' = 1025"},
        {"heads too many", "num_attention_heads", "1025", "'num_attention_heads' = 1025"},
        {"vocab 2^24+1", "vocab_size", "16777217", "'vocab_size' = 16777217"},
        {"positions 2^24+1", "max_position_embeddings", "16777217", "'max_position_embeddings'"},
        {"hidden not divisible", "hidden_size", "3000",
         "hidden_size 3000 is not divisible by num_attention_heads 32"},
        {"kv heads not dividing", "num_key_value_heads", "5",
         "num_attention_heads 32 is not a multiple of num_key_value_heads 5"},
        {"kv heads 0", "num_key_value_heads", "0", "'num_key_value_heads' = 0"},
        {"kv heads string", "num_key_value_heads", "\"8\"", "'num_key_value_heads' must be an integer"},
        {"head_dim 0", "head_dim", "0", "'head_dim' = 0"},
        {"head_dim odd", "head_dim", "95", "rotary_dim 95"},
        {"partial rotary 0", "partial_rotary_factor", "0", "'partial_rotary_factor' = 0 is outside"},
        {"partial rotary 1.5", "partial_rotary_factor", "1.5", "'partial_rotary_factor' = 1.5"},
        {"partial rotary tiny", "partial_rotary_factor", "0.01", "rotary_dim 0"},
        {"partial rotary odd", "partial_rotary_factor", "0.52", "rotary_dim 49 (head_dim 96"},
        {"rms_norm_eps 0", "rms_norm_eps", "0", "'rms_norm_eps' = 0 is outside"},
        {"rms_norm_eps string", "rms_norm_eps", "\"1e-5\"", "'rms_norm_eps' must be a number"},
        {"rope_theta -1", "rope_theta", "-1", "'rope_theta' = -1"},
        {"rope_theta inf", "rope_theta", "1e999", "'rope_theta'"},
        {"tie string", "tie_word_embeddings", "\"false\"", "'tie_word_embeddings' must be a boolean"},
        {"tie 0", "tie_word_embeddings", "0", "'tie_word_embeddings' must be a boolean"},
        {"sliding_window -1", "sliding_window", "-1", "'sliding_window' = -1"},
        {"sliding_window 0", "sliding_window", "0", "'sliding_window' = 0"},
        {"sliding_window string", "sliding_window", "\"2047\"", "'sliding_window' must be an integer"},
        {"original 0", "original_max_position_embeddings", "0", "'original_max_position_embeddings' = 0"},
        {"bos out of vocab", "bos_token_id", "32064", "'bos_token_id' = 32064 is outside [0, 32063]"},
        {"bos negative", "bos_token_id", "-1", "'bos_token_id' = -1"},
        {"pad out of vocab", "pad_token_id", "100000", "'pad_token_id'"},
        {"eos out of vocab", "eos_token_id", "32064", "'eos_token_id' = 32064"},
        {"eos list out of vocab", "eos_token_id", "[32000, 32064]", "'eos_token_id[1]'"},
        {"eos list of strings", "eos_token_id", "[\"32000\"]", "'eos_token_id[0]'"},
        {"eos object", "eos_token_id", "{}", "'eos_token_id' must be an integer or a list"},
        {"eos 17 ids", "eos_token_id", "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]", "more than 16 ids"},
        {"hidden_act gelu", "hidden_act", "\"gelu\"", "hidden_act 'gelu' is not supported"},
        {"attention_bias", "attention_bias", "true", "'attention_bias' = true is not supported"},
        {"mlp_bias", "mlp_bias", "true", "'mlp_bias' = true"},
        {"lm_head_bias string", "lm_head_bias", "\"no\"", "'lm_head_bias' must be a boolean"},
    };
    for (size_t i = 0; i < sizeof(bad_fields) / sizeof(bad_fields[0]); i++)
        expect_bad_field(bad_fields[i].what, bad_fields[i].field, bad_fields[i].value, bad_fields[i].want);

    a = with_field(MINI_4K, "hidden_size", "3000");
    b = with_field(a, "head_dim", "128");
    if (parse_ok("head_dim given, hidden not divisible", b, &c) == 0)
        EXPECT(c.head_dim == 128 && c.rotary_dim == 128 && c.hidden_size == 3000);
    free(a);
    free(b);

    /* Accepted variations. */
    char *d;
    a = with_field(MINI_4K, "eos_token_id", "[32000, 32001, 32000]");
    if (parse_ok("eos list", a, &c) == 0)
        EXPECT(c.n_eos_ids == 2 && c.eos_token_ids[1] == 32001);
    free(a);
    a = with_field(MINI_4K, "sliding_window", "null");
    if (parse_ok("sliding_window null", a, &c) == 0)
        EXPECT(c.sliding_window == 0);
    free(a);
    a = with_field(MINI_4K, "sliding_window", "4096");
    if (parse_ok("sliding_window == max", a, &c) == 0)
        EXPECT(c.sliding_window == 0);
    free(a);
    a = with_field(MINI_4K, "sliding_window", "4095");
    if (parse_ok("sliding_window == max - 1", a, &c) == 0)
        EXPECT(c.sliding_window == 4095);
    free(a);
    a = with_field(MINI_4K, "pad_token_id", "null");
    if (parse_ok("pad null", a, &c) == 0)
        EXPECT(c.pad_token_id == -1);
    free(a);
    a = with_field(MINI_4K, "num_key_value_heads", "null");
    if (parse_ok("kv heads null", a, &c) == 0)
        EXPECT(c.num_key_value_heads == 32);
    free(a);
    a = with_field(MINI_4K, "original_max_position_embeddings", NULL);
    if (parse_ok("original absent", a, &c) == 0)
        EXPECT(c.original_max_position_embeddings == 4096);
    free(a);
    a = with_field(MINI_4K, "rope_scaling", "{\"rope_type\": \"default\"}");
    if (parse_ok("rope default", a, &c) == 0)
        EXPECT(c.rope_type == ENG_ROPE_DEFAULT && c.short_mscale == 1.0);
    free(a);
    a = with_field(MINI_4K, "hidden_size", "64.0");
    b = with_field(a, "num_attention_heads", "4.0");
    d = with_field(b, "num_key_value_heads", "2e0");
    c.hidden_size = 0;
    if (parse_ok("integral floats", d, &c) == 0)
        EXPECT(c.hidden_size == 64 && c.head_dim == 16 && c.num_key_value_heads == 2);
    free(a);
    free(b);
    free(d);
    /* transformers 5 layout: rope_parameters holding rope_theta. */
    a = with_field(MINI_4K, "rope_theta", NULL);
    b = with_field(a, "rope_scaling", NULL);
    d = with_field(b, "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 250000.0}");
    if (parse_ok("rope_parameters", d, &c) == 0)
        EXPECT(c.rope_theta == 250000.0 && c.rope_type == ENG_ROPE_DEFAULT);
    free(a);
    free(b);
    free(d);
    /* A NULL err buffer is allowed. */
    EXPECT(eng_model_config_parse("{}", 2, &c, NULL, 0) == -1);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(text, 1, strlen(text), f) != strlen(text) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

static void test_load(void)
{
    char root[256];
    const char *t = getenv("TMPDIR");
    snprintf(root, sizeof(root), "%s/phiserve-cfg-XXXXXX", t != NULL && *t ? t : "/tmp");
    if (mkdtemp(root) == NULL) {
        perror("mkdtemp");
        tu_failures++;
        return;
    }
    struct eng_model_config c;
    char err[512] = "";
    EXPECT(eng_model_config_load(root, &c, err, sizeof(err)) == -1 && strstr(err, "config.json: not found"));

    write_text(root, "config.json", MINI_4K);
    EXPECT(eng_model_config_load(root, &c, err, sizeof(err)) == 0 && c.n_eos_ids == 1);

    write_text(root, "generation_config.json", "{\"eos_token_id\": [32000, 32001, 32007]}");
    EXPECT(eng_model_config_load(root, &c, err, sizeof(err)) == 0 && c.n_eos_ids == 3);

    write_text(root, "generation_config.json", "{\"eos_token_id\": [99999]}");
    err[0] = '\0';
    EXPECT(eng_model_config_load(root, &c, err, sizeof(err)) == -1 &&
          strstr(err, "generation_config.json: field 'eos_token_id[0]'"));

    char path[600];
    snprintf(path, sizeof(path), "%s/generation_config.json", root);
    unlink(path);
    EXPECT(mkdir(path, 0755) == 0);
    EXPECT(eng_model_config_load(root, &c, err, sizeof(err)) == -1 &&
          strstr(err, "generation_config.json: not a regular file"));
    rmdir(path);

    snprintf(path, sizeof(path), "%s/config.json", root);
    unlink(path);
    EXPECT(symlink("/dev/zero", path) == 0);
    EXPECT(eng_model_config_load(root, &c, err, sizeof(err)) == -1 &&
          strstr(err, "config.json: not a regular file"));
    unlink(path);
    EXPECT(mkfifo(path, 0644) == 0);
    EXPECT(eng_model_config_load(root, &c, err, sizeof(err)) == -1 && strstr(err, "not a regular file"));
    unlink(path);
    write_text(root, "config.json", "{\"model_type\": \"phi3_v\"}");
    EXPECT(eng_model_config_load(root, &c, err, sizeof(err)) == -1 && strstr(err, "'embd_layer'"));
    unlink(path);
    rmdir(root);
}

/* Phi-3.5-MoE-instruct's config.json (values of reference/phi3-models.md §4.1; rope_scaling
 * cut to its keys with short lists, as in the LongRoPE tests). */
static const char MOE[] =
    "{\n"
    "  \"architectures\": [\"PhiMoEForCausalLM\"],\n"
    "  \"attention_bias\": true,\n"
    "  \"bos_token_id\": 1,\n"
    "  \"eos_token_id\": 32000,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 4096,\n"
    "  \"input_jitter_noise\": 0.01,\n"
    "  \"intermediate_size\": 6400,\n"
    "  \"lm_head_bias\": true,\n"
    "  \"max_position_embeddings\": 131072,\n"
    "  \"model_type\": \"phimoe\",\n"
    "  \"num_attention_heads\": 32,\n"
    "  \"num_experts_per_tok\": 2,\n"
    "  \"num_hidden_layers\": 32,\n"
    "  \"num_key_value_heads\": 8,\n"
    "  \"num_local_experts\": 16,\n"
    "  \"original_max_position_embeddings\": 4096,\n"
    "  \"rms_norm_eps\": 1e-05,\n"
    "  \"rope_theta\": 10000.0,\n"
    "  \"router_aux_loss_coef\": 0.0,\n"
    "  \"router_jitter_noise\": 0.01,\n"
    "  \"sliding_window\": 131072,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"vocab_size\": 32064\n"
    "}\n";

/* The MoE fields parse, default as PhimoeConfig does, and are checked; phi3 never reads them. */
static void test_phimoe(void)
{
    struct eng_model_config c;
    char err[256];
    EXPECT(eng_model_config_parse(MOE, strlen(MOE), &c, err, sizeof(err)) == 0);
    EXPECT(c.arch == ENG_ARCH_PHIMOE && c.hidden_size == 4096 && c.intermediate_size == 6400 &&
           c.head_dim == 128 && c.num_key_value_heads == 8 && c.num_local_experts == 16 &&
           c.num_experts_per_tok == 2 && c.router_jitter_noise == 0.01 && c.attention_bias &&
           c.lm_head_bias && c.sliding_window == 0 && c.rope_type == ENG_ROPE_DEFAULT);

    char *a = with_field(MOE, "num_local_experts", NULL);
    char *b = with_field(a, "router_jitter_noise", NULL);
    char *d = with_field(b, "attention_bias", NULL);
    char *e = with_field(d, "architectures", NULL);
    EXPECT(eng_model_config_parse(e, strlen(e), &c, err, sizeof(err)) == 0);
    EXPECT(c.arch == ENG_ARCH_PHIMOE && c.num_local_experts == 16 && c.router_jitter_noise == 0.01 &&
           !c.attention_bias && c.lm_head_bias);
    free(a);
    free(b);
    free(d);
    free(e);
    char *f = with_field(MOE, "model_type", NULL);
    char *g = with_field(f, "architectures", "[\"PhimoeForCausalLM\"]");
    char *h = with_field(g, "router_jitter_noise", "0");
    EXPECT(eng_model_config_parse(h, strlen(h), &c, err, sizeof(err)) == 0);
    EXPECT(c.arch == ENG_ARCH_PHIMOE && c.router_jitter_noise == 0.0);
    free(f);
    free(g);
    free(h);

    EXPECT(eng_model_config_parse(MINI_4K, strlen(MINI_4K), &c, err, sizeof(err)) == 0);
    EXPECT(c.arch == ENG_ARCH_PHI3 && c.num_local_experts == 0 && !c.attention_bias && !c.lm_head_bias);

    static const struct {
        const char *field, *value, *want;
    } bad[] = {
        {"num_experts_per_tok", "1", "num_experts_per_tok 1 is not supported"},
        {"num_experts_per_tok", "3", "num_experts_per_tok 3 is not supported"},
        {"num_experts_per_tok", "0", "'num_experts_per_tok'"},
        {"num_local_experts", "1", "'num_local_experts'"},
        {"num_local_experts", "257", "'num_local_experts'"},
        {"num_local_experts", "\"16\"", "'num_local_experts'"},
        {"router_jitter_noise", "-0.01", "'router_jitter_noise' = -0.01 is negative"},
        {"router_jitter_noise", "2", "'router_jitter_noise'"},
        {"router_jitter_noise", "null", NULL},
        {"mlp_bias", "true", "'mlp_bias' = true is not supported by the phimoe model"},
        {"lm_head_bias", "1", "'lm_head_bias' must be a boolean"},
        {"hidden_act", "\"gelu\"", "hidden_act 'gelu'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *j = with_field(MOE, bad[i].field, bad[i].value);
        int rc = eng_model_config_parse(j, strlen(j), &c, err, sizeof(err));
        if (bad[i].want == NULL)
            EXPECT(rc == 0 && c.router_jitter_noise == 0.01);
        else
            EXPECT(rc == -1 && strstr(err, bad[i].want));
        if (bad[i].want && (rc != -1 || !strstr(err, bad[i].want)))
            fprintf(stderr, "  %s = %s: %s\n", bad[i].field, bad[i].value, err);
        free(j);
    }
}

/* The tokenizer's eos joins the stop ids once; ids outside the vocab are refused. */
static void test_tokenizer_eos(void)
{
    struct eng_model_config c;
    char err[256] = "";
    if (parse_ok("mini-4k", MINI_4K, &c) != 0)
        return;
    int n = c.n_eos_ids;
    EXPECT(n >= 1 && c.eos_token_ids[0] == 32000);
    EXPECT(eng_model_config_add_tokenizer_eos(&c, 32000, err, sizeof err) == 0 && c.n_eos_ids == n);
    EXPECT(eng_model_config_add_tokenizer_eos(&c, 2, err, sizeof err) == 0 && c.n_eos_ids == n + 1 &&
          c.eos_token_ids[n] == 2);
    EXPECT(eng_model_config_add_tokenizer_eos(&c, 32064, err, sizeof err) != 0 &&
          strstr(err, "tokenizer_config.json") != NULL && c.n_eos_ids == n + 1);
    EXPECT(eng_model_config_add_tokenizer_eos(&c, -1, err, sizeof err) != 0);
}

/* Phi-3.5-vision-instruct's config.json (reference/phi3-models.md section 5.1), rope factors
 * cut to default RoPE: the vision fields are what this test is about. */
static const char *const VISION =
    "{\n"
    "  \"architectures\": [\"Phi3VForCausalLM\"],\n"
    "  \"model_type\": \"phi3_v\",\n"
    "  \"bos_token_id\": 1,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"embd_layer\": {\"embedding_cls\": \"image\", \"hd_transform_order\": \"sub_glb\",\n"
    "                  \"projection_cls\": \"mlp\", \"use_hd_transform\": true,\n"
    "                  \"with_learnable_separator\": true},\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 3072,\n"
    "  \"img_processor\": {\"image_dim_out\": 1024,\n"
    "                     \"model_name\": \"openai/clip-vit-large-patch14-336\",\n"
    "                     \"name\": \"clip_vision_model\", \"num_img_tokens\": 144},\n"
    "  \"intermediate_size\": 8192,\n"
    "  \"max_position_embeddings\": 131072,\n"
    "  \"num_attention_heads\": 32,\n"
    "  \"num_hidden_layers\": 32,\n"
    "  \"num_key_value_heads\": 32,\n"
    "  \"original_max_position_embeddings\": 4096,\n"
    "  \"pad_token_id\": 32000,\n"
    "  \"rms_norm_eps\": 1e-05,\n"
    "  \"rope_theta\": 10000.0,\n"
    "  \"sliding_window\": 262144,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"vocab_size\": 32064\n"
    "}\n";

/* A copy of VISION with the first occurrence of from replaced by to (caller frees). */
static char *replaced(const char *from, const char *to)
{
    const char *at = strstr(VISION, from);
    if (!at)
        return NULL;
    size_t a = (size_t)(at - VISION), lf = strlen(from), lt = strlen(to), n = strlen(VISION);
    char *out = malloc(n - lf + lt + 1);
    memcpy(out, VISION, a);
    memcpy(out + a, to, lt);
    memcpy(out + a + lt, at + lf, n - a - lf + 1);
    return out;
}

/* phi3_v: the CLIP-L/14-336 defaults, layer_idx -2 = 23 layers, the token count formula, the
 * tiny-model override, preprocessor_config.json, and every refusal. */
static void test_phi3v(void)
{
    struct eng_model_config c;
    char err[256];
    EXPECT(eng_model_config_parse(VISION, strlen(VISION), &c, err, sizeof(err)) == 0);
    const struct eng_vision_config *v = &c.vision;
    EXPECT(c.arch == ENG_ARCH_PHI3V && c.hidden_size == 3072 && v->hidden_size == 1024 &&
           v->intermediate_size == 4096 && v->num_attention_heads == 16 &&
           v->num_hidden_layers == 24 && v->n_layers_run == 23 && v->image_size == 336 &&
           v->patch_size == 14 && v->grid == 24 && v->tokens_per_crop == 144 &&
           v->num_crops == 1 && v->layer_norm_eps == 1e-5);
    /* reference/phi3-models.md 5.2 step 10: 1x1 -> 313, 2x2 -> 757, 4x4 -> 2509. */
    EXPECT(eng_vision_image_tokens(v, 1, 1) == 313 && eng_vision_image_tokens(v, 2, 2) == 757 &&
           eng_vision_image_tokens(v, 4, 4) == 2509 && eng_vision_image_tokens(v, 1, 16) == 2473);
    EXPECT(eng_model_config_parse(MINI_4K, strlen(MINI_4K), &c, err, sizeof(err)) == 0 &&
           c.vision.hidden_size == 0 && c.vision.grid == 0);

    char *tiny = replaced("\"num_img_tokens\": 144}",
                          "\"num_img_tokens\": 4, \"layer_idx\": -2, \"image_dim_out\": 32,"
                          " \"vision_config\": {\"hidden_size\": 32, \"intermediate_size\": 64,"
                          " \"num_attention_heads\": 4, \"num_hidden_layers\": 3,"
                          " \"image_size\": 56, \"patch_size\": 14, \"hidden_act\": \"quick_gelu\"}}");
    char *tiny2 = NULL;
    if (tiny)
        tiny2 = strdup(tiny);
    if (tiny2) {
        char *p = strstr(tiny2, "\"image_dim_out\": 1024,");
        if (p)
            memcpy(p, "                      ", 22); /* drop the real model's value */
    }
    EXPECT(tiny2 && eng_model_config_parse(tiny2, strlen(tiny2), &c, err, sizeof(err)) == 0);
    EXPECT(c.vision.hidden_size == 32 && c.vision.n_layers_run == 2 && c.vision.grid == 4 &&
           c.vision.tokens_per_crop == 4 && eng_vision_image_tokens(&c.vision, 2, 2) == 27);
    free(tiny);
    free(tiny2);

    EXPECT(eng_model_config_parse(VISION, strlen(VISION), &c, err, sizeof(err)) == 0);
    static const char PRE[] = "{\"num_crops\": 4, \"num_img_tokens\": 144, "
                              "\"image_mean\": [0.5, 0.25, 0.125], \"image_std\": [1, 2, 4], "
                              "\"do_convert_rgb\": true}";
    EXPECT(eng_model_config_merge_preprocessor(PRE, strlen(PRE), &c, err, sizeof(err)) == 0 &&
           c.vision.num_crops == 4 && c.vision.image_mean[1] == 0.25f && c.vision.image_std[2] == 4.0f);
    static const char *const bad_pre[] = {
        "{\"num_crops\": 0}", "{\"num_crops\": 65}", "{\"num_img_tokens\": 100}",
        "{\"image_std\": [1, 0, 1]}", "{\"image_mean\": [1, 2]}", "{\"image_mean\": \"x\"}",
    };
    for (size_t i = 0; i < sizeof bad_pre / sizeof bad_pre[0]; i++) {
        struct eng_model_config d = c;
        int rc = eng_model_config_merge_preprocessor(bad_pre[i], strlen(bad_pre[i]), &d, err,
                                                     sizeof(err));
        EXPECT(rc == -1 && strstr(err, "preprocessor_config.json") && d.vision.num_crops == 4);
        if (rc != -1)
            fprintf(stderr, "  accepted: %s\n", bad_pre[i]);
    }

    static const struct {
        const char *from, *to, *want;
    } bad[] = {
        {"\"hd_transform_order\": \"sub_glb\"", "\"hd_transform_order\": \"glb_sub\"", "hd_transform_order"},
        {"\"projection_cls\": \"mlp\"", "\"projection_cls\": \"linear\"", "projection_cls"},
        {"\"use_hd_transform\": true", "\"use_hd_transform\": false", "use_hd_transform"},
        {"\"with_learnable_separator\": true", "\"with_learnable_separator\": 1", "must be a boolean"},
        {"\"name\": \"clip_vision_model\"", "\"name\": \"siglip\"", "img_processor.name"},
        {"\"num_img_tokens\": 144", "\"num_img_tokens\": 576", "num_img_tokens 576"},
        {"\"image_dim_out\": 1024", "\"image_dim_out\": 768", "image_dim_out 768"},
        {"\"num_img_tokens\": 144}", "\"num_img_tokens\": 144, \"layer_idx\": -25}", "layer_idx"},
        {"\"num_img_tokens\": 144}", "\"num_img_tokens\": 144, \"layer_idx\": 0}", "selects no encoder"},
        {"\"num_img_tokens\": 144}", "\"num_img_tokens\": 144, \"vision_config\": {\"patch_size\": 16}}",
         "even number of patch_size"},
        {"\"num_img_tokens\": 144}", "\"num_img_tokens\": 144, \"vision_config\": {\"num_attention_heads\": 3}}",
         "num_attention_heads 3"},
        {"\"num_img_tokens\": 144}", "\"num_img_tokens\": 144, \"vision_config\": {\"hidden_act\": \"gelu\"}}",
         "quick_gelu"},
        {"\"num_img_tokens\": 144}", "\"num_img_tokens\": 144, \"vision_config\": [1]}", "must be an object"},
        {"\"embd_layer\":", "\"embd_layer_x\":", "'embd_layer'"},
        {"\"architectures\": [\"Phi3VForCausalLM\"]", "\"architectures\": [\"Phi3ForCausalLM\"]",
         "does not match"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *j = replaced(bad[i].from, bad[i].to);
        int rc = j ? eng_model_config_parse(j, strlen(j), &c, err, sizeof(err)) : 0;
        EXPECT(rc == -1 && strstr(err, bad[i].want));
        if (rc != -1 || !strstr(err, bad[i].want))
            fprintf(stderr, "  case %zu: rc %d err '%s'\n", i, rc, err);
        free(j);
    }
}

int main(void)
{
    test_mini_4k();
    test_tokenizer_eos();
    test_defaults();
    test_longrope();
    test_refusals();
    test_load();
    test_phimoe();
    test_phi3v();
    return tu_finish("test_model_config");
}
