/* config.json and generation_config.json of a Phi-3 model: read with the strict JSON reader
 * (json.h), every field type- and range-checked, defaults as transformers' Phi3Config. It does
 * not look at weights (engine/model.c checks tensor shapes against this struct). */
#include "model_config.h"

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file_util.h"
#include "json.h"

#define CFG_MAX_FILE_BYTES (16u << 20)
#define CFG_MAX_HIDDEN 65536
#define CFG_MAX_INTERMEDIATE (1 << 20)
#define CFG_MAX_LAYERS 1024
#define CFG_MAX_HEADS 1024
#define CFG_MAX_HEAD_DIM 1024
#define CFG_MAX_VOCAB (1 << 24)
#define CFG_MAX_POSITIONS (1 << 24)
#define CFG_JSON_INT_MAX 9007199254740992.0 /* 2^53: above it a float literal is not exact */
#define CFG_MAX_ROPE_FACTOR 1e6              /* far above any real factor, well inside float */
#define CFG_MAX_MSCALE 1e3
#define CFG_MAX_EXPERTS 256

static bool is(const struct eng_json *v, enum eng_json_type type)
{
    return v != NULL && v->type == type;
}

static const char *json_type_name(const struct eng_json *v)
{
    switch ((enum eng_json_type)v->type) {
    case ENG_JSON_NULL: return "null";
    case ENG_JSON_BOOL: return "a boolean";
    case ENG_JSON_NUMBER: return "a number";
    case ENG_JSON_STRING: return "a string";
    case ENG_JSON_ARRAY: return "an array";
    case ENG_JSON_OBJECT: return "an object";
    }
    return "invalid";
}

/* Parses text as one JSON object. The reader refuses what Python's json would read differently
 * and what cannot be represented: duplicate keys at any depth (Python keeps the last, a first-
 * match lookup the first), \u0000 and malformed escapes, invalid UTF-8, trailing bytes. */
static struct eng_json_doc *parse_object(const char *text, size_t len, const char *file, char *err,
                                         size_t errlen)
{
    if (text == NULL || len == 0) {
        eng_set_err(err, errlen, "%s: empty", file);
        return NULL;
    }
    struct eng_json_doc *doc;
    struct eng_json_error je;
    int rc = eng_json_parse(text, len, NULL, &doc, &je);
    if (rc == ENG_JSON_ERR_DUPLICATE_KEY) {
        eng_set_err(err, errlen, "%s: duplicate key '%s'", file, je.path);
        return NULL;
    }
    if (rc == ENG_JSON_ERR_NO_MEMORY) {
        eng_set_err(err, errlen, "%s: out of memory", file);
        return NULL;
    }
    if (rc != 0) {
        eng_set_err(err, errlen, "%s: not valid JSON at byte %zu%s%s%s: %s", file, je.offset,
                    je.path[0] ? ", in '" : "", je.path, je.path[0] ? "'" : "", je.message);
        return NULL;
    }
    if (eng_json_root(doc)->type != ENG_JSON_OBJECT) {
        eng_set_err(err, errlen, "%s: not a JSON object", file);
        eng_json_free(doc);
        return NULL;
    }
    return doc;
}

/* The exact value of an integer literal (any int64), or of a number written with a fraction or
 * an exponent that is integral and below 2^53 in magnitude (3072.0, 1e3). */
static bool integral(const struct eng_json *v, int64_t *out)
{
    if (v->is_int) {
        *out = v->u.num.i;
        return true;
    }
    double d = v->u.num.d;
    if (fabs(d) >= CFG_JSON_INT_MAX || d != floor(d))
        return false;
    *out = (int64_t)d;
    return true;
}

/* Field readers. A key that is absent or null reads as "not given" (*given = 0) for optional
 * fields: transformers treats null as the default for every field we read. */
struct field_ctx {
    const char *file;          /* "config.json" */
    const char *prefix;        /* "" or "rope_scaling." */
    char *err;
    size_t errlen;
};

static int read_int(const struct field_ctx *fc, const struct eng_json *obj, const char *key,
                    bool required, int64_t lo, int64_t hi, int64_t *out, bool *given)
{
    const struct eng_json *v = eng_json_get(obj, key);
    *given = false;
    if (v == NULL || v->type == ENG_JSON_NULL) {
        if (required) {
            eng_set_err(fc->err, fc->errlen, "%s: required field '%s%s' is %s", fc->file, fc->prefix,
                        key, v == NULL ? "missing" : "null");
            return -1;
        }
        return 0;
    }
    if (!is(v, ENG_JSON_NUMBER)) {
        eng_set_err(fc->err, fc->errlen, "%s: field '%s%s' must be an integer, not %s", fc->file,
                    fc->prefix, key, json_type_name(v));
        return -1;
    }
    int64_t x;
    if (!integral(v, &x)) {
        eng_set_err(fc->err, fc->errlen, "%s: field '%s%s' must be an integer, not %g", fc->file,
                    fc->prefix, key, v->u.num.d);
        return -1;
    }
    if (x < lo || x > hi) {
        eng_set_err(fc->err, fc->errlen, "%s: field '%s%s' = %lld is outside [%lld, %lld]", fc->file,
                    fc->prefix, key, (long long)x, (long long)lo, (long long)hi);
        return -1;
    }
    *out = x;
    *given = true;
    return 0;
}

/* A finite number in (lo, hi] (lo exclusive: every real-valued field we read is positive). */
static int read_num(const struct field_ctx *fc, const struct eng_json *obj, const char *key,
                    double lo, double hi, double *out, bool *given)
{
    const struct eng_json *v = eng_json_get(obj, key);
    *given = false;
    if (v == NULL || v->type == ENG_JSON_NULL)
        return 0;
    if (!is(v, ENG_JSON_NUMBER)) {
        eng_set_err(fc->err, fc->errlen, "%s: field '%s%s' must be a number, not %s", fc->file,
                    fc->prefix, key, json_type_name(v));
        return -1;
    }
    double d = v->u.num.d;
    if (!(d > lo) || d > hi) {
        eng_set_err(fc->err, fc->errlen, "%s: field '%s%s' = %g is outside (%g, %g]", fc->file,
                    fc->prefix, key, d, lo, hi);
        return -1;
    }
    *out = d;
    *given = true;
    return 0;
}

static int read_bool(const struct field_ctx *fc, const struct eng_json *obj, const char *key,
                     bool *out, bool *given)
{
    const struct eng_json *v = eng_json_get(obj, key);
    *given = false;
    if (v == NULL || v->type == ENG_JSON_NULL)
        return 0;
    if (!is(v, ENG_JSON_BOOL)) {
        eng_set_err(fc->err, fc->errlen, "%s: field '%s%s' must be a boolean, not %s", fc->file,
                    fc->prefix, key, json_type_name(v));
        return -1;
    }
    *out = v->b;
    *given = true;
    return 0;
}

/* Returns the string value of key, NULL when absent or null, or sets err (wrong type). */
static int read_str(const struct field_ctx *fc, const struct eng_json *obj, const char *key,
                    const char **out)
{
    const struct eng_json *v = eng_json_get(obj, key);
    *out = NULL;
    if (v == NULL || v->type == ENG_JSON_NULL)
        return 0;
    if (!is(v, ENG_JSON_STRING)) {
        eng_set_err(fc->err, fc->errlen, "%s: field '%s%s' must be a string, not %s", fc->file,
                    fc->prefix, key, json_type_name(v));
        return -1;
    }
    *out = v->u.str;
    return 0;
}

/* A token id in [0, vocab) or absent/null (-1). */
static int read_token_id(const struct field_ctx *fc, const struct eng_json *obj, const char *key,
                         int64_t vocab, int32_t *out)
{
    int64_t v;
    bool given;
    *out = -1;
    if (read_int(fc, obj, key, false, 0, vocab - 1, &v, &given) != 0)
        return -1;
    if (given)
        *out = (int32_t)v;
    return 0;
}

static int add_eos(struct eng_model_config *cfg, int64_t id, const char *file, char *err, size_t errlen)
{
    for (int i = 0; i < cfg->n_eos_ids; i++)
        if (cfg->eos_token_ids[i] == id)
            return 0;
    if (cfg->n_eos_ids == ENG_MAX_STOP_IDS) {
        eng_set_err(err, errlen, "%s: field 'eos_token_id' lists more than %d ids", file, ENG_MAX_STOP_IDS);
        return -1;
    }
    cfg->eos_token_ids[cfg->n_eos_ids++] = (int32_t)id;
    return 0;
}

int eng_model_config_add_tokenizer_eos(struct eng_model_config *cfg, int32_t id, char *err,
                                       size_t errlen)
{
    if (id < 0 || id >= cfg->vocab_size) {
        eng_set_err(err, errlen, "tokenizer_config.json: eos token id %d is outside the vocabulary (%lld)",
                    id, (long long)cfg->vocab_size);
        return -1;
    }
    return add_eos(cfg, id, "tokenizer_config.json", err, errlen);
}

/* eos_token_id: an int, a list of ints, or absent/null. Each id must be inside the vocab. */
static int read_eos(const struct field_ctx *fc, const struct eng_json *obj,
                    struct eng_model_config *cfg)
{
    const struct eng_json *v = eng_json_get(obj, "eos_token_id");
    if (v == NULL || v->type == ENG_JSON_NULL)
        return 0;
    if (is(v, ENG_JSON_NUMBER)) {
        int32_t id;
        if (read_token_id(fc, obj, "eos_token_id", cfg->vocab_size, &id) != 0)
            return -1;
        return add_eos(cfg, id, fc->file, fc->err, fc->errlen);
    }
    if (!is(v, ENG_JSON_ARRAY)) {
        eng_set_err(fc->err, fc->errlen, "%s: field 'eos_token_id' must be an integer or a list of "
                    "integers, not %s", fc->file, json_type_name(v));
        return -1;
    }
    int i = 0;
    for (const struct eng_json *e = v->u.child; e != NULL; e = e->next, i++) {
        int64_t id;
        if (!is(e, ENG_JSON_NUMBER) || !integral(e, &id) || id < 0 || id >= cfg->vocab_size) {
            eng_set_err(fc->err, fc->errlen, "%s: field 'eos_token_id[%d]' must be a token id in [0, %lld)",
                        fc->file, i, (long long)cfg->vocab_size);
            return -1;
        }
        if (add_eos(cfg, id, fc->file, fc->err, fc->errlen) != 0)
            return -1;
    }
    return 0;
}

/* short_factor / long_factor: exactly n positive finite numbers. */
static int read_factors(const struct field_ctx *fc, const struct eng_json *rs, const char *key, int n,
                        float *out)
{
    const struct eng_json *v = eng_json_get(rs, key);
    if (!is(v, ENG_JSON_ARRAY)) {
        eng_set_err(fc->err, fc->errlen, "%s: field 'rope_scaling.%s' must be a list of %d numbers, "
                    "not %s", fc->file, key, n, v == NULL ? "missing" : json_type_name(v));
        return -1;
    }
    int i = 0;
    for (const struct eng_json *e = v->u.child; e != NULL; e = e->next, i++) {
        if (i == n) {
            eng_set_err(fc->err, fc->errlen, "%s: field 'rope_scaling.%s' has more than rotary_dim/2 = %d "
                        "entries", fc->file, key, n);
            return -1;
        }
        if (!is(e, ENG_JSON_NUMBER) || !(e->u.num.d > 0.0) || e->u.num.d > CFG_MAX_ROPE_FACTOR) {
            eng_set_err(fc->err, fc->errlen, "%s: field 'rope_scaling.%s[%d]' must be a positive finite "
                        "number", fc->file, key, i);
            return -1;
        }
        out[i] = (float)e->u.num.d;
    }
    if (i != n) {
        eng_set_err(fc->err, fc->errlen, "%s: field 'rope_scaling.%s' has %d entries, rotary_dim/2 = %d "
                    "needed", fc->file, key, i, n);
        return -1;
    }
    return 0;
}

/* rope_scaling (or, from transformers 5, rope_parameters): null, or LongRoPE ("su" and
 * "longrope" name the same algorithm). Sets rope_type, factors, mscales and, when it carries
 * one, the original context length (only when the top level has none). */
static int parse_rope(const struct field_ctx *top, const struct eng_json *root,
                      struct eng_model_config *c, bool orig_given)
{
    const char *rs_key = "rope_scaling";
    const struct eng_json *rs = eng_json_get(root, rs_key);
    if (rs == NULL || rs->type == ENG_JSON_NULL) {
        rs_key = "rope_parameters";
        rs = eng_json_get(root, rs_key);
    }
    c->rope_type = ENG_ROPE_DEFAULT;
    c->short_mscale = c->long_mscale = 1.0;
    c->n_rope_factors = 0;
    if (rs == NULL || rs->type == ENG_JSON_NULL)
        return 0;
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "%s.", rs_key);
    struct field_ctx fc = {top->file, prefix, top->err, top->errlen};
    if (!is(rs, ENG_JSON_OBJECT)) {
        eng_set_err(fc.err, fc.errlen, "%s: field '%s' must be an object or null, not %s", fc.file,
                    rs_key, json_type_name(rs));
        return -1;
    }
    const char *type, *rope_type;
    if (read_str(&fc, rs, "type", &type) != 0 || read_str(&fc, rs, "rope_type", &rope_type) != 0)
        return -1;
    if (type != NULL && rope_type != NULL && strcmp(type, rope_type) != 0) {
        eng_set_err(fc.err, fc.errlen, "%s: '%stype' = '%.32s' and '%srope_type' = '%.32s' disagree",
                    fc.file, prefix, type, prefix, rope_type);
        return -1;
    }
    const char *t = type != NULL ? type : rope_type;
    if (t == NULL) {
        eng_set_err(fc.err, fc.errlen, "%s: field '%s' has neither 'type' nor 'rope_type'", fc.file, rs_key);
        return -1;
    }
    if (strcmp(t, "default") == 0)
        return 0;
    if (strcmp(t, "su") != 0 && strcmp(t, "longrope") != 0) {
        eng_set_err(fc.err, fc.errlen, "%s: %s type '%.32s' is not supported (only 'su'/'longrope')",
                    fc.file, rs_key, t);
        return -1;
    }
    c->rope_type = ENG_ROPE_LONGROPE;

    int64_t orig;
    bool given;
    if (read_int(&fc, rs, "original_max_position_embeddings", false, 1, CFG_MAX_POSITIONS, &orig,
                 &given) != 0)
        return -1;
    if (given && orig_given && orig != c->original_max_position_embeddings) {
        eng_set_err(fc.err, fc.errlen, "%s: '%soriginal_max_position_embeddings' = %lld disagrees with "
                    "the top-level %lld", fc.file, prefix, (long long)orig,
                    (long long)c->original_max_position_embeddings);
        return -1;
    }
    if (given)
        c->original_max_position_embeddings = orig;

    int64_t half = c->rotary_dim / 2;
    if (half > ENG_MAX_ROPE_FACTORS) {
        eng_set_err(fc.err, fc.errlen, "%s: LongRoPE with rotary_dim %lld needs more than %d factors",
                    fc.file, (long long)c->rotary_dim, ENG_MAX_ROPE_FACTORS);
        return -1;
    }
    c->n_rope_factors = (int)half;
    if (read_factors(&fc, rs, "short_factor", (int)half, c->short_factor) != 0 ||
        read_factors(&fc, rs, "long_factor", (int)half, c->long_factor) != 0)
        return -1;

    /* Attention scaling: an explicit per-table mscale (PhiMoE) wins, then attention_factor
     * (transformers' rope utils), then the LongRoPE default from the context extension. */
    double af, sm, lm;
    bool af_given, sm_given, lm_given;
    if (read_num(&fc, rs, "attention_factor", 0.0, CFG_MAX_MSCALE, &af, &af_given) != 0 ||
        read_num(&fc, rs, "short_mscale", 0.0, CFG_MAX_MSCALE, &sm, &sm_given) != 0 ||
        read_num(&fc, rs, "long_mscale", 0.0, CFG_MAX_MSCALE, &lm, &lm_given) != 0)
        return -1;
    double def = 1.0;
    double s = (double)c->max_position_embeddings / (double)c->original_max_position_embeddings;
    if (s > 1.0) {
        /* s > 1 implies original >= 1 and max >= 2, but log(1) = 0 would divide by zero. */
        if (c->original_max_position_embeddings < 2) {
            eng_set_err(fc.err, fc.errlen, "%s: LongRoPE needs original_max_position_embeddings >= 2",
                        fc.file);
            return -1;
        }
        def = sqrt(1.0 + log(s) / log((double)c->original_max_position_embeddings));
    }
    if (af_given)
        def = af;
    c->short_mscale = sm_given ? sm : def;
    c->long_mscale = lm_given ? lm : def;
    return 0;
}

/* The architectures served: model_type and the architectures class names that name each. */
static const struct {
    enum eng_arch arch;
    const char *model_type;
    const char *classes[2];
} arch_names[] = {
    {ENG_ARCH_PHI3, "phi3", {"Phi3ForCausalLM", NULL}},
    /* transformers' class, and the class of the original remote-code release */
    {ENG_ARCH_PHIMOE, "phimoe", {"PhimoeForCausalLM", "PhiMoEForCausalLM"}},
    {ENG_ARCH_PHI3V, "phi3_v", {"Phi3VForCausalLM", NULL}},
};
#define N_ARCHES (sizeof arch_names / sizeof arch_names[0])

/* The arch_names index whose model_type (by_class false) or class (true) is name; -1: none. */
static int arch_lookup(const char *name, bool by_class)
{
    for (size_t i = 0; i < N_ARCHES; i++) {
        if (!by_class && strcmp(arch_names[i].model_type, name) == 0)
            return (int)i;
        for (size_t j = 0; by_class && j < 2; j++)
            if (arch_names[i].classes[j] && strcmp(arch_names[i].classes[j], name) == 0)
                return (int)i;
    }
    return -1;
}

/* model_type and/or architectures; at least one must be present, and they must agree. */
static int check_arch(const struct field_ctx *fc, const struct eng_json *root,
                      struct eng_model_config *c)
{
    const char *mt;
    if (read_str(fc, root, "model_type", &mt) != 0)
        return -1;
    int found = -1;
    if (mt != NULL && (found = arch_lookup(mt, false)) < 0) {
        eng_set_err(fc->err, fc->errlen, "%s: model_type '%.64s' is not supported (only 'phi3', "
                    "'phimoe' and 'phi3_v')", fc->file, mt);
        return -1;
    }
    const struct eng_json *ar = eng_json_get(root, "architectures");
    if (ar != NULL && ar->type != ENG_JSON_NULL) {
        if (!is(ar, ENG_JSON_ARRAY) || ar->len == 0) {
            eng_set_err(fc->err, fc->errlen, "%s: field 'architectures' must be a non-empty list of "
                        "strings", fc->file);
            return -1;
        }
        for (const struct eng_json *e = ar->u.child; e != NULL; e = e->next) {
            if (!is(e, ENG_JSON_STRING)) {
                eng_set_err(fc->err, fc->errlen, "%s: field 'architectures' must be a list of strings, "
                            "found %s", fc->file, json_type_name(e));
                return -1;
            }
            int a = arch_lookup(e->u.str, true);
            if (a < 0) {
                eng_set_err(fc->err, fc->errlen, "%s: architectures entry '%.64s' is not supported "
                            "(only 'Phi3ForCausalLM', 'PhimoeForCausalLM' and 'Phi3VForCausalLM')", fc->file, e->u.str);
                return -1;
            }
            if (found >= 0 && a != found) {
                eng_set_err(fc->err, fc->errlen, "%s: architectures entry '%.64s' does not match "
                            "model_type '%s'", fc->file, e->u.str, arch_names[found].model_type);
                return -1;
            }
            found = a;
        }
    }
    if (found < 0) {
        eng_set_err(fc->err, fc->errlen, "%s: neither 'architectures' nor 'model_type' is given", fc->file);
        return -1;
    }
    c->arch = arch_names[found].arch;
    return 0;
}

/* Features of the wider Phi-3 family that the forward pass does not implement, and the MoE
 * fields (read for phimoe only: phi3 refuses biases, phimoe takes attention and lm_head
 * biases). */
static int check_features(const struct field_ctx *fc, const struct eng_json *root,
                          struct eng_model_config *c)
{
    const char *act;
    if (read_str(fc, root, "hidden_act", &act) != 0)
        return -1;
    if (act != NULL && strcmp(act, "silu") != 0) {
        eng_set_err(fc->err, fc->errlen, "%s: hidden_act '%.32s' is not supported (only 'silu')",
                    fc->file, act);
        return -1;
    }
    bool moe = c->arch == ENG_ARCH_PHIMOE;
    static const char *const biases[] = {"attention_bias", "lm_head_bias", "mlp_bias"};
    int *flags[] = {&c->attention_bias, &c->lm_head_bias, NULL};
    for (size_t i = 0; i < sizeof(biases) / sizeof(biases[0]); i++) {
        bool b = false, given;
        if (read_bool(fc, root, biases[i], &b, &given) != 0)
            return -1;
        if (b && !(moe && flags[i])) {
            eng_set_err(fc->err, fc->errlen, "%s: field '%s' = true is not supported by the %s model",
                        fc->file, biases[i], moe ? "phimoe" : "phi3");
            return -1;
        }
        if (flags[i])
            *flags[i] = b;
    }
    if (!moe)
        return 0;
    bool given;
    c->num_local_experts = 16; /* PhimoeConfig's defaults */
    c->num_experts_per_tok = 2;
    c->router_jitter_noise = 0.01;
    if (read_int(fc, root, "num_local_experts", false, 2, CFG_MAX_EXPERTS, &c->num_local_experts,
                 &given) != 0 ||
        read_int(fc, root, "num_experts_per_tok", false, 1, CFG_MAX_EXPERTS,
                 &c->num_experts_per_tok, &given) != 0 ||
        read_num(fc, root, "router_jitter_noise", -1.0, 1.0, &c->router_jitter_noise, &given) != 0)
        return -1;
    if (c->router_jitter_noise < 0.0) {
        eng_set_err(fc->err, fc->errlen, "%s: field 'router_jitter_noise' = %g is negative",
                    fc->file, c->router_jitter_noise);
        return -1;
    }
    if (c->num_experts_per_tok != 2) {
        eng_set_err(fc->err, fc->errlen, "%s: num_experts_per_tok %lld is not supported (the "
                    "phimoe router picks exactly 2)", fc->file, (long long)c->num_experts_per_tok);
        return -1;
    }
    return 0;
}

#define CFG_MAX_VISION_HIDDEN 8192
#define CFG_MAX_IMAGE_SIZE 4096
#define CFG_MAX_CROPS 64

/* A string field that must be given and equal want (embd_layer's fixed choices). */
static int require_str(const struct field_ctx *fc, const struct eng_json *obj, const char *key,
                       const char *want)
{
    const char *v;
    if (read_str(fc, obj, key, &v) != 0)
        return -1;
    if (v == NULL || strcmp(v, want) != 0) {
        eng_set_err(fc->err, fc->errlen, "%s: field '%s%s' must be '%s'%s", fc->file, fc->prefix,
                    key, want, v == NULL ? " (it is missing)" : " (other values are not supported)");
        return -1;
    }
    return 0;
}

/* A boolean field that, when given, must be true. */
static int require_true(const struct field_ctx *fc, const struct eng_json *obj, const char *key)
{
    bool b = true, given;
    if (read_bool(fc, obj, key, &b, &given) != 0)
        return -1;
    if (!b) {
        eng_set_err(fc->err, fc->errlen, "%s: field '%s%s' = false is not supported", fc->file,
                    fc->prefix, key);
        return -1;
    }
    return 0;
}

/* img_processor.vision_config: the tower's sizes (absent on real checkpoints). */
static int parse_vision_sizes(const struct field_ctx *top, const struct eng_json *vc,
                              struct eng_vision_config *v)
{
    const struct field_ctx fc = {top->file, "img_processor.vision_config.", top->err, top->errlen};
    bool given;
    const char *act;
    if (read_int(&fc, vc, "hidden_size", false, 1, CFG_MAX_VISION_HIDDEN, &v->hidden_size, &given) ||
        read_int(&fc, vc, "intermediate_size", false, 1, CFG_MAX_INTERMEDIATE, &v->intermediate_size,
                 &given) ||
        read_int(&fc, vc, "num_attention_heads", false, 1, CFG_MAX_HEADS, &v->num_attention_heads,
                 &given) ||
        read_int(&fc, vc, "num_hidden_layers", false, 1, CFG_MAX_LAYERS, &v->num_hidden_layers,
                 &given) ||
        read_int(&fc, vc, "image_size", false, 2, CFG_MAX_IMAGE_SIZE, &v->image_size, &given) ||
        read_int(&fc, vc, "patch_size", false, 1, CFG_MAX_IMAGE_SIZE, &v->patch_size, &given) ||
        read_num(&fc, vc, "layer_norm_eps", 0.0, 1.0, &v->layer_norm_eps, &given) ||
        read_str(&fc, vc, "hidden_act", &act))
        return -1;
    if (act != NULL && strcmp(act, "quick_gelu") != 0) {
        eng_set_err(fc.err, fc.errlen, "%s: field 'img_processor.vision_config.hidden_act' '%.32s' "
                    "is not supported (only 'quick_gelu', CLIP's)", fc.file, act);
        return -1;
    }
    return 0;
}

/* Phi-3-vision's embd_layer and img_processor (reference/phi3-models.md section 5.1). */
static int parse_vision(const struct field_ctx *fc, const struct eng_json *root,
                        struct eng_model_config *c)
{
    struct eng_vision_config *v = &c->vision;
    *v = (struct eng_vision_config){
        .hidden_size = 1024, .intermediate_size = 4096, .num_attention_heads = 16,
        .num_hidden_layers = 24, .image_size = 336, .patch_size = 14, .layer_norm_eps = 1e-5,
        .num_crops = 1, /* Phi3VImageProcessor's default */
        .image_mean = {0.48145466f, 0.4578275f, 0.40821073f},
        .image_std = {0.26862954f, 0.26130258f, 0.27577711f},
    };
    const struct eng_json *el = eng_json_get(root, "embd_layer");
    const struct eng_json *ip = eng_json_get(root, "img_processor");
    if (!is(el, ENG_JSON_OBJECT) || !is(ip, ENG_JSON_OBJECT)) {
        eng_set_err(fc->err, fc->errlen, "%s: phi3_v needs the objects 'embd_layer' and "
                    "'img_processor'", fc->file);
        return -1;
    }
    const struct field_ctx efc = {fc->file, "embd_layer.", fc->err, fc->errlen};
    const struct field_ctx ifc = {fc->file, "img_processor.", fc->err, fc->errlen};
    if (require_str(&efc, el, "embedding_cls", "image") ||
        require_str(&efc, el, "hd_transform_order", "sub_glb") ||
        require_str(&efc, el, "projection_cls", "mlp") ||
        require_true(&efc, el, "use_hd_transform") ||
        require_true(&efc, el, "with_learnable_separator") ||
        require_str(&ifc, ip, "name", "clip_vision_model"))
        return -1;
    const struct eng_json *vc = eng_json_get(ip, "vision_config");
    if (vc != NULL && vc->type != ENG_JSON_NULL) {
        if (!is(vc, ENG_JSON_OBJECT)) {
            eng_set_err(fc->err, fc->errlen, "%s: field 'img_processor.vision_config' must be an "
                        "object", fc->file);
            return -1;
        }
        if (parse_vision_sizes(fc, vc, v) != 0)
            return -1;
    }
    if (v->hidden_size % v->num_attention_heads != 0 ||
        v->hidden_size / v->num_attention_heads > 256) {
        eng_set_err(fc->err, fc->errlen, "%s: the vision tower's hidden_size %lld must split into "
                    "num_attention_heads %lld heads of at most 256", fc->file,
                    (long long)v->hidden_size, (long long)v->num_attention_heads);
        return -1;
    }
    if (v->image_size % v->patch_size != 0 || (v->image_size / v->patch_size) % 2 != 0) {
        eng_set_err(fc->err, fc->errlen, "%s: the vision image_size %lld must be an even number of "
                    "patch_size %lld patches", fc->file, (long long)v->image_size,
                    (long long)v->patch_size);
        return -1;
    }
    v->grid = v->image_size / v->patch_size;
    v->tokens_per_crop = (v->grid / 2) * (v->grid / 2);
    bool given;
    int64_t dim_out = v->hidden_size, n_img = v->tokens_per_crop, layer_idx = -2;
    if (read_int(&ifc, ip, "image_dim_out", false, 1, CFG_MAX_VISION_HIDDEN, &dim_out, &given) ||
        read_int(&ifc, ip, "num_img_tokens", false, 1, INT32_MAX, &n_img, &given) ||
        read_int(&ifc, ip, "layer_idx", false, -v->num_hidden_layers, v->num_hidden_layers,
                 &layer_idx, &given))
        return -1;
    if (dim_out != v->hidden_size || n_img != v->tokens_per_crop) {
        eng_set_err(fc->err, fc->errlen, "%s: img_processor image_dim_out %lld / num_img_tokens %lld "
                    "do not match the tower (hidden %lld, %lld tokens per crop)", fc->file,
                    (long long)dim_out, (long long)n_img, (long long)v->hidden_size,
                    (long long)v->tokens_per_crop);
        return -1;
    }
    /* hidden_states[layer_idx] of the HF tower: index 0 is the embedding, k the output of
     * encoder layer k; a negative index counts from num_hidden_layers + 1. */
    v->n_layers_run = layer_idx < 0 ? v->num_hidden_layers + 1 + layer_idx : layer_idx;
    if (v->n_layers_run < 1) {
        eng_set_err(fc->err, fc->errlen, "%s: img_processor.layer_idx %lld selects no encoder "
                    "layer", fc->file, (long long)layer_idx);
        return -1;
    }
    return 0;
}

int64_t eng_vision_image_tokens(const struct eng_vision_config *v, int64_t h_crop, int64_t w_crop)
{
    int64_t r = v->grid / 2;
    return (h_crop * w_crop + 1) * v->tokens_per_crop + 1 + (h_crop + 1) * r;
}

static int read_float3(const struct field_ctx *fc, const struct eng_json *obj, const char *key,
                       bool positive, float *out)
{
    const struct eng_json *v = eng_json_get(obj, key);
    if (v == NULL || v->type == ENG_JSON_NULL)
        return 0;
    int i = 0;
    for (const struct eng_json *e = is(v, ENG_JSON_ARRAY) ? v->u.child : NULL; e; e = e->next, i++) {
        if (i == 3 || !is(e, ENG_JSON_NUMBER) || !isfinite(e->u.num.d) ||
            fabs(e->u.num.d) > 1e3 || (positive && !(e->u.num.d > 1e-6)))
            break;
        out[i] = (float)e->u.num.d;
    }
    if (!is(v, ENG_JSON_ARRAY) || i != 3 || v->len != 3) {
        eng_set_err(fc->err, fc->errlen, "%s: field '%s' must be a list of 3 %snumbers", fc->file,
                    key, positive ? "positive " : "");
        return -1;
    }
    return 0;
}

int eng_model_config_merge_preprocessor(const char *json, size_t len,
                                        struct eng_model_config *cfg, char *err, size_t errlen)
{
    const char *file = "preprocessor_config.json";
    struct eng_json_doc *doc = parse_object(json, len, file, err, errlen);
    if (doc == NULL)
        return -1;
    const struct eng_json *root = eng_json_root(doc);
    const struct field_ctx fc = {file, "", err, errlen};
    struct eng_vision_config v = cfg->vision;
    bool given;
    int64_t n_img = v.tokens_per_crop;
    int rc = read_int(&fc, root, "num_crops", false, 1, CFG_MAX_CROPS, &v.num_crops, &given) ||
             read_int(&fc, root, "num_img_tokens", false, 1, INT32_MAX, &n_img, &given) ||
             read_float3(&fc, root, "image_mean", false, v.image_mean) ||
             read_float3(&fc, root, "image_std", true, v.image_std) ? -1 : 0;
    if (rc == 0 && n_img != v.tokens_per_crop) {
        eng_set_err(err, errlen, "%s: num_img_tokens %lld does not match the tower's %lld tokens "
                    "per crop", file, (long long)n_img, (long long)v.tokens_per_crop);
        rc = -1;
    }
    if (rc == 0)
        cfg->vision = v;
    eng_json_free(doc);
    return rc;
}

static int parse_config(const struct eng_json *root, struct eng_model_config *c, char *err,
                        size_t errlen)
{
    const struct field_ctx fc = {"config.json", "", err, errlen};
    bool given;
    memset(c, 0, sizeof(*c));
    if (check_arch(&fc, root, c) != 0 || check_features(&fc, root, c) != 0 ||
        (c->arch == ENG_ARCH_PHI3V && parse_vision(&fc, root, c) != 0))
        return -1;
    if (read_int(&fc, root, "hidden_size", true, 1, CFG_MAX_HIDDEN, &c->hidden_size, &given) != 0 ||
        read_int(&fc, root, "intermediate_size", true, 1, CFG_MAX_INTERMEDIATE,
                 &c->intermediate_size, &given) != 0 ||
        read_int(&fc, root, "num_hidden_layers", true, 1, CFG_MAX_LAYERS, &c->num_hidden_layers,
                 &given) != 0 ||
        read_int(&fc, root, "num_attention_heads", true, 1, CFG_MAX_HEADS, &c->num_attention_heads,
                 &given) != 0 ||
        read_int(&fc, root, "vocab_size", true, 1, CFG_MAX_VOCAB, &c->vocab_size, &given) != 0 ||
        read_int(&fc, root, "max_position_embeddings", true, 1, CFG_MAX_POSITIONS,
                 &c->max_position_embeddings, &given) != 0)
        return -1;

    if (read_int(&fc, root, "num_key_value_heads", false, 1, CFG_MAX_HEADS, &c->num_key_value_heads,
                 &given) != 0)
        return -1;
    if (!given)
        c->num_key_value_heads = c->num_attention_heads;
    if (c->num_attention_heads % c->num_key_value_heads != 0) {
        eng_set_err(err, errlen, "config.json: num_attention_heads %lld is not a multiple of "
                    "num_key_value_heads %lld", (long long)c->num_attention_heads,
                    (long long)c->num_key_value_heads);
        return -1;
    }

    if (read_int(&fc, root, "head_dim", false, 1, CFG_MAX_HEAD_DIM, &c->head_dim, &given) != 0)
        return -1;
    if (!given) {
        if (c->hidden_size % c->num_attention_heads != 0) {
            eng_set_err(err, errlen, "config.json: hidden_size %lld is not divisible by "
                        "num_attention_heads %lld (and no head_dim is given)",
                        (long long)c->hidden_size, (long long)c->num_attention_heads);
            return -1;
        }
        c->head_dim = c->hidden_size / c->num_attention_heads;
        if (c->head_dim > CFG_MAX_HEAD_DIM) {
            eng_set_err(err, errlen, "config.json: head_dim %lld (hidden_size / num_attention_heads) "
                        "exceeds %d", (long long)c->head_dim, CFG_MAX_HEAD_DIM);
            return -1;
        }
    }

    c->partial_rotary_factor = 1.0;
    if (read_num(&fc, root, "partial_rotary_factor", 0.0, 1.0, &c->partial_rotary_factor, &given) != 0)
        return -1;
    /* transformers: int(head_dim * partial_rotary_factor), truncating. */
    c->rotary_dim = (int64_t)((double)c->head_dim * c->partial_rotary_factor);
    if (c->rotary_dim < 2 || c->rotary_dim % 2 != 0) {
        eng_set_err(err, errlen, "config.json: rotary_dim %lld (head_dim %lld x partial_rotary_factor %g) "
                    "must be even and at least 2", (long long)c->rotary_dim, (long long)c->head_dim,
                    c->partial_rotary_factor);
        return -1;
    }

    c->rms_norm_eps = 1e-5;
    c->rope_theta = 10000.0;
    if (read_num(&fc, root, "rms_norm_eps", 0.0, 1.0, &c->rms_norm_eps, &given) != 0 ||
        read_num(&fc, root, "rope_theta", 0.0, 1e12, &c->rope_theta, &given) != 0)
        return -1;

    bool tie = false;
    if (read_bool(&fc, root, "tie_word_embeddings", &tie, &given) != 0)
        return -1;
    c->tie_word_embeddings = tie ? 1 : 0;

    bool orig_given;
    if (read_int(&fc, root, "original_max_position_embeddings", false, 1, CFG_MAX_POSITIONS,
                 &c->original_max_position_embeddings, &orig_given) != 0)
        return -1;
    if (!orig_given)
        c->original_max_position_embeddings = c->max_position_embeddings;

    /* null means no window; a window at least as long as the context never masks anything. */
    if (read_int(&fc, root, "sliding_window", false, 1, (int64_t)CFG_JSON_INT_MAX - 1,
                 &c->sliding_window, &given) != 0)
        return -1;
    if (!given || c->sliding_window >= c->max_position_embeddings)
        c->sliding_window = 0;

    if (parse_rope(&fc, root, c, orig_given) != 0)
        return -1;
    /* With rope_parameters (transformers 5) rope_theta may live inside it. */
    const struct eng_json *rp = eng_json_get(root, "rope_parameters");
    if (is(rp, ENG_JSON_OBJECT) && eng_json_get(root, "rope_theta") == NULL) {
        const struct field_ctx rfc = {"config.json", "rope_parameters.", err, errlen};
        if (read_num(&rfc, rp, "rope_theta", 0.0, 1e12, &c->rope_theta, &given) != 0)
            return -1;
    }

    if (read_token_id(&fc, root, "bos_token_id", c->vocab_size, &c->bos_token_id) != 0 ||
        read_token_id(&fc, root, "pad_token_id", c->vocab_size, &c->pad_token_id) != 0 ||
        read_eos(&fc, root, c) != 0)
        return -1;
    return 0;
}

int eng_model_config_parse(const char *json, size_t len, struct eng_model_config *cfg,
                           char *err, size_t errlen)
{
    if (cfg == NULL) {
        eng_set_err(err, errlen, "config.json: NULL config");
        return -1;
    }
    struct eng_json_doc *doc = parse_object(json, len, "config.json", err, errlen);
    if (doc == NULL)
        return -1;
    /* Parse into a scratch copy so that cfg is untouched on failure. */
    struct eng_model_config *tmp = malloc(sizeof(*tmp));
    int rc = -1;
    if (tmp == NULL) {
        eng_set_err(err, errlen, "config.json: out of memory");
    } else if (parse_config(eng_json_root(doc), tmp, err, errlen) == 0) {
        *cfg = *tmp;
        rc = 0;
    }
    free(tmp);
    eng_json_free(doc);
    return rc;
}

int eng_model_config_merge_generation(const char *json, size_t len,
                                      struct eng_model_config *cfg, char *err, size_t errlen)
{
    const char *file = "generation_config.json";
    if (cfg == NULL) {
        eng_set_err(err, errlen, "%s: NULL config", file);
        return -1;
    }
    struct eng_json_doc *doc = parse_object(json, len, file, err, errlen);
    if (doc == NULL)
        return -1;
    const struct field_ctx fc = {file, "", err, errlen};
    int32_t ids[ENG_MAX_STOP_IDS];
    int n = cfg->n_eos_ids;
    memcpy(ids, cfg->eos_token_ids, sizeof(ids));
    int rc = read_eos(&fc, eng_json_root(doc), cfg);
    if (rc != 0) {
        /* Leave the eos list as it was. */
        cfg->n_eos_ids = n;
        memcpy(cfg->eos_token_ids, ids, sizeof(ids));
    }
    eng_json_free(doc);
    return rc;
}

/* Reads dir/name whole (bounded). Returns 0, 1 when it does not exist, or -1 with err. */
static int read_file(const char *dir, const char *name, char **out, size_t *len, char *err,
                     size_t errlen)
{
    char path[PATH_MAX];
    if (eng_path_join(path, sizeof(path), dir, name, err, errlen) != 0)
        return -1;
    int rc = eng_file_read_small(path, name, CFG_MAX_FILE_BYTES, out, len, err, errlen);
    return rc == ENG_FILE_ERR_MISSING ? 1 : rc == 0 ? 0 : -1;
}

int eng_model_config_load(const char *dir, struct eng_model_config *cfg, char *err, size_t errlen)
{
    if (dir == NULL || cfg == NULL) {
        eng_set_err(err, errlen, "config.json: NULL argument");
        return -1;
    }
    char *text = NULL;
    size_t len = 0;
    int r = read_file(dir, "config.json", &text, &len, err, errlen);
    if (r == 1)
        eng_set_err(err, errlen, "config.json: not found in %s", dir);
    if (r != 0)
        return -1;
    struct eng_model_config tmp;
    r = eng_model_config_parse(text, len, &tmp, err, errlen);
    free(text);
    if (r != 0)
        return -1;
    text = NULL;
    r = read_file(dir, "generation_config.json", &text, &len, err, errlen);
    if (r < 0)
        return -1;
    if (r == 0) {
        r = eng_model_config_merge_generation(text, len, &tmp, err, errlen);
        free(text);
        if (r != 0)
            return -1;
    }
    if (tmp.arch == ENG_ARCH_PHI3V) {
        text = NULL;
        r = read_file(dir, "preprocessor_config.json", &text, &len, err, errlen);
        if (r < 0)
            return -1;
        if (r == 0) {
            r = eng_model_config_merge_preprocessor(text, len, &tmp, err, errlen);
            free(text);
            if (r != 0)
                return -1;
        }
    }
    *cfg = tmp;
    return 0;
}
