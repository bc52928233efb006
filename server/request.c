/* Chat-completion and completion request bodies: strict JSON (engine/json.h) walked field by
 * field into request structs, each field checked for type and range with an error that names
 * `param`. Not the HTTP layer (body size, headers) and not the engine (context length). */
#include "request.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "json_schema.h"
#include "sse.h"
#include "tool_calls.h"

/* ---- request-owned memory: a bump arena freed in one go by _destroy ---- */

struct mem_block {
    struct mem_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

#define MEM_BLOCK_MIN 4096u

/* Zeroed memory owned by *mem; NULL when malloc fails or the size overflows. */
static void *mem_alloc(void **mem, size_t size)
{
    if (size > SIZE_MAX - 32)
        return NULL;
    size = (size + 15) & ~(size_t)15;
    struct mem_block *b = *mem;
    if (b == NULL || b->cap - b->used < size) {
        size_t cap = size > MEM_BLOCK_MIN ? size : MEM_BLOCK_MIN;
        if (cap > SIZE_MAX - sizeof(*b))
            return NULL;
        b = malloc(sizeof(*b) + cap);
        if (b == NULL)
            return NULL;
        b->next = *mem;
        b->used = 0;
        b->cap = cap;
        *mem = b;
    }
    void *p = b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

static void *mem_array(void **mem, size_t count, size_t elem)
{
    if (elem != 0 && count > SIZE_MAX / elem)
        return NULL;
    return mem_alloc(mem, count * elem);
}

static void mem_free(void *mem)
{
    struct mem_block *b = mem;
    while (b != NULL) {
        struct mem_block *next = b->next;
        free(b);
        b = next;
    }
}

/* ---- parsing context and error helpers ---- */

struct ctx {
    const struct srv_limits *lim;
    void **mem;
    struct srv_error *err;
};

/* JSON paths for `param`: parent + ".key" or parent + "[i]", cut to PATH_MAX_LEN - 1 bytes. */
#define PATH_MAX_LEN SRV_ERROR_PARAM_MAX

static void path_append(char *out, size_t *n, const char *s)
{
    size_t k = strlen(s);
    if (k > PATH_MAX_LEN - 1 - *n)
        k = PATH_MAX_LEN - 1 - *n;
    memcpy(out + *n, s, k);
    *n += k;
    out[*n] = '\0';
}

static void path_key(char *out, const char *parent, const char *key)
{
    size_t n = 0;
    out[0] = '\0';
    path_append(out, &n, parent);
    if (parent[0] != '\0')
        path_append(out, &n, ".");
    path_append(out, &n, key);
}

static void path_index(char *out, const char *parent, size_t i)
{
    char num[32];
    size_t n = 0;
    snprintf(num, sizeof(num), "[%zu]", i);
    out[0] = '\0';
    path_append(out, &n, parent);
    path_append(out, &n, num);
}

static const char *type_desc(const struct eng_json *v)
{
    switch ((enum eng_json_type)v->type) {
    case ENG_JSON_NULL: return "null";
    case ENG_JSON_BOOL: return "a boolean";
    case ENG_JSON_NUMBER: return v->is_int ? "an integer" : "a number";
    case ENG_JSON_STRING: return "a string";
    case ENG_JSON_ARRAY: return "an array";
    case ENG_JSON_OBJECT: return "an object";
    }
    return "a value";
}

static int type_error(struct ctx *c, const char *param, const char *expected, const struct eng_json *v)
{
    return srv_error_set(c->err, SRV_ERR_INVALID_TYPE, param,
                         "Invalid type for '%s': expected %s, but got %s instead.", param, expected,
                         type_desc(v));
}

static int missing(struct ctx *c, const char *param)
{
    return srv_error_set(c->err, SRV_ERR_MISSING_PARAM, param, "Missing required parameter: '%s'.",
                         param);
}

static int nomem(struct ctx *c)
{
    return srv_error_set(c->err, SRV_ERR_NO_MEMORY, NULL, NULL);
}

/* Bytes of s (NUL-terminated) to quote in a message: at most max, never splitting UTF-8. */
static int quote_len(const char *s, size_t max)
{
    size_t n = strlen(s), len = 0;
    while (len < n) {
        size_t k = eng_utf8_seq_len((const unsigned char *)s + len, n - len);
        if (k == 0 || len + k > max)
            break;
        len += k;
    }
    return (int)len;
}

/* A member that is present and not null; NULL otherwise (null means "absent" for optional
 * fields, since SDKs and agents send explicit nulls for unset options). */
static const struct eng_json *opt(const struct eng_json *obj, const char *key)
{
    const struct eng_json *v = eng_json_get(obj, key);
    return v != NULL && v->type != ENG_JSON_NULL ? v : NULL;
}

/* An integral JSON number as int64 (1.0 and 1e3 count as integers, as in OpenAI's own
 * validation); -1 when v is not an integral number within the int64 range. */
static int as_int64(const struct eng_json *v, int64_t *out)
{
    if (v->type != ENG_JSON_NUMBER)
        return -1;
    if (v->is_int) {
        *out = v->u.num.i;
        return 0;
    }
    double d = v->u.num.d;
    /* [-2^63, 2^63): the doubles that convert to int64 without undefined behaviour. */
    if (d != floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
        return -1;
    *out = (int64_t)d;
    return 0;
}

/* Reads optional integer member key of obj into *out when present; range [lo, hi].
 * Returns 0 (with *given) or an error. */
static int get_int(struct ctx *c, const struct eng_json *obj, const char *key, int64_t lo, int64_t hi,
                   int64_t *out, bool *given)
{
    const struct eng_json *v = opt(obj, key);
    *given = v != NULL;
    if (v == NULL)
        return 0;
    if (v->type != ENG_JSON_NUMBER)
        return type_error(c, key, "an integer", v);
    int64_t x = 0;
    if (as_int64(v, &x) != 0) {
        if (v->u.num.d == floor(v->u.num.d)) /* integral but beyond int64 */
            return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, key,
                                 "'%s' must be between %lld and %lld.", key, (long long)lo,
                                 (long long)hi);
        return type_error(c, key, "an integer", v);
    }
    if (x < lo || x > hi)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, key,
                             "'%s' must be between %lld and %lld, got %lld.", key, (long long)lo,
                             (long long)hi, (long long)x);
    *out = x;
    return 0;
}

/* Reads an optional number in [lo, hi] (lo excluded when lo_open). */
static int get_double(struct ctx *c, const struct eng_json *obj, const char *key, double lo, bool lo_open,
                      double hi, double *out, bool *given)
{
    const struct eng_json *v = opt(obj, key);
    *given = v != NULL;
    if (v == NULL)
        return 0;
    if (v->type != ENG_JSON_NUMBER)
        return type_error(c, key, "a number", v);
    double d = v->u.num.d; /* finite: the parser rejects overflow */
    if ((lo_open ? d <= lo : d < lo) || d > hi)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, key, "'%s' must be in %s%g, %g], got %g.",
                             key, lo_open ? "(" : "[", lo, hi, d);
    *out = d;
    return 0;
}

static int get_bool(struct ctx *c, const struct eng_json *obj, const char *key, bool *out, bool *given)
{
    const struct eng_json *v = opt(obj, key);
    if (given != NULL)
        *given = v != NULL;
    if (v == NULL)
        return 0;
    if (v->type != ENG_JSON_BOOL)
        return type_error(c, key, "a boolean", v);
    *out = v->b;
    return 0;
}

/* Copies a JSON string into request memory. */
static char *copy_str(struct ctx *c, const struct eng_json *v)
{
    char *s = mem_alloc(c->mem, v->len + 1);
    if (s != NULL)
        memcpy(s, v->u.str, v->len + 1);
    return s;
}

/* A required or optional string member at path param; *out NULL when optional and absent. */
static int get_string(struct ctx *c, const struct eng_json *obj, const char *key, const char *param,
                      bool required, char **out)
{
    const struct eng_json *v = eng_json_get(obj, key);
    *out = NULL;
    if (v == NULL || (v->type == ENG_JSON_NULL && !required))
        return required ? missing(c, param) : 0;
    if (v->type != ENG_JSON_STRING)
        return type_error(c, param, "a string", v);
    *out = copy_str(c, v);
    return *out != NULL ? 0 : nomem(c);
}

/* A token id in [0, vocab_size) at path param. */
static int get_token(struct ctx *c, const struct eng_json *v, const char *param, int32_t *out)
{
    if (v->type != ENG_JSON_NUMBER || v->u.num.d != floor(v->u.num.d))
        return type_error(c, param, "an integer token id", v);
    int64_t vocab = c->lim->vocab_size > 0 ? c->lim->vocab_size : INT32_MAX;
    int64_t x = 0;
    if (as_int64(v, &x) != 0 || x < 0 || x >= vocab)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, param,
                             "Token id %.0f in '%s' is out of vocabulary (0 to %lld).", v->u.num.d,
                             param, (long long)vocab - 1);
    *out = (int32_t)x;
    return 0;
}

/* ---- fields shared by both endpoints ---- */

static int parse_model(struct ctx *c, const struct eng_json *root, char **out)
{
    const struct eng_json *v = eng_json_get(root, "model");
    if (v == NULL)
        return missing(c, "model");
    if (v->type != ENG_JSON_STRING)
        return type_error(c, "model", "a string", v);
    if (v->len == 0)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "model", "'model' must not be empty.");
    const struct srv_limits *lim = c->lim;
    bool found = lim->n_model_names == 0;
    for (size_t i = 0; i < lim->n_model_names && !found; i++)
        found = lim->model_names[i] != NULL && strcmp(lim->model_names[i], v->u.str) == 0;
    if (!found)
        return srv_error_set(c->err, SRV_ERR_MODEL_NOT_FOUND, "model",
                             "The model '%.*s' does not exist.", quote_len(v->u.str, 96), v->u.str);
    *out = copy_str(c, v);
    return *out != NULL ? 0 : nomem(c);
}

static int parse_stop(struct ctx *c, const struct eng_json *root, struct srv_sampling *s)
{
    const struct eng_json *v = opt(root, "stop");
    if (v == NULL)
        return 0;
    int32_t max_stop = c->lim->max_stop;
    size_t n = v->type == ENG_JSON_ARRAY ? v->len : 1;
    if (v->type != ENG_JSON_STRING && v->type != ENG_JSON_ARRAY)
        return type_error(c, "stop", "a string or an array of strings", v);
    if (n > (size_t)max_stop)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "stop",
                             "'stop' may hold at most %d strings, got %zu.", max_stop, n);
    s->stop = mem_array(c->mem, n ? n : 1, sizeof(*s->stop));
    if (s->stop == NULL)
        return nomem(c);
    const struct eng_json *e = v->type == ENG_JSON_ARRAY ? v->u.child : v;
    for (size_t i = 0; i < n; i++, e = e->next) {
        char param[PATH_MAX_LEN];
        if (v->type == ENG_JSON_ARRAY)
            path_index(param, "stop", i);
        else
            snprintf(param, sizeof(param), "stop");
        if (e->type != ENG_JSON_STRING)
            return type_error(c, param, "a string", e);
        if (e->len == 0 || e->len > SRV_MAX_STOP_BYTES)
            return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, param,
                                 "Each stop string must be 1 to %d bytes long, got %zu.",
                                 SRV_MAX_STOP_BYTES, e->len);
        if ((s->stop[i] = copy_str(c, e)) == NULL)
            return nomem(c);
    }
    s->n_stop = n;
    return 0;
}

static int parse_stop_token_ids(struct ctx *c, const struct eng_json *root, struct srv_sampling *s)
{
    const struct eng_json *v = opt(root, "stop_token_ids");
    if (v == NULL)
        return 0;
    if (v->type != ENG_JSON_ARRAY)
        return type_error(c, "stop_token_ids", "an array of token ids", v);
    if (v->len > SRV_MAX_STOP_TOKEN_IDS)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "stop_token_ids",
                             "'stop_token_ids' may hold at most %d ids.", SRV_MAX_STOP_TOKEN_IDS);
    s->stop_token_ids = mem_array(c->mem, v->len ? v->len : 1, sizeof(int32_t));
    if (s->stop_token_ids == NULL)
        return nomem(c);
    size_t i = 0;
    for (const struct eng_json *e = v->u.child; e != NULL; e = e->next, i++) {
        char param[PATH_MAX_LEN];
        path_index(param, "stop_token_ids", i);
        int rc = get_token(c, e, param, &s->stop_token_ids[i]);
        if (rc != 0)
            return rc;
    }
    s->n_stop_token_ids = v->len;
    return 0;
}

/* logit_bias: {"<token id>": bias}. Keys are canonical decimal ids (no sign, no leading zero),
 * so two keys naming the same token are already rejected as duplicate JSON keys. */
static int parse_logit_bias(struct ctx *c, const struct eng_json *root, struct srv_sampling *s)
{
    const struct eng_json *v = opt(root, "logit_bias");
    if (v == NULL)
        return 0;
    if (v->type != ENG_JSON_OBJECT)
        return type_error(c, "logit_bias", "an object mapping token ids to biases", v);
    if (v->len > SRV_MAX_LOGIT_BIAS)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "logit_bias",
                             "'logit_bias' may hold at most %d entries.", SRV_MAX_LOGIT_BIAS);
    s->logit_bias = mem_array(c->mem, v->len ? v->len : 1, sizeof(*s->logit_bias));
    if (s->logit_bias == NULL)
        return nomem(c);
    int64_t vocab = c->lim->vocab_size > 0 ? c->lim->vocab_size : INT32_MAX;
    size_t i = 0;
    for (const struct eng_json *e = v->u.child; e != NULL; e = e->next, i++) {
        char param[PATH_MAX_LEN];
        snprintf(param, sizeof(param), "logit_bias.%.*s", quote_len(e->key, 32), e->key);
        int64_t id = 0;
        bool ok = e->key_len >= 1 && e->key_len <= 10 && (e->key[0] != '0' || e->key_len == 1);
        for (size_t k = 0; ok && k < e->key_len; k++) {
            ok = e->key[k] >= '0' && e->key[k] <= '9';
            if (ok)
                id = id * 10 + (e->key[k] - '0');
        }
        if (!ok || id >= vocab)
            return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, param,
                                 "'logit_bias' keys must be token ids from 0 to %lld.",
                                 (long long)vocab - 1);
        if (e->type != ENG_JSON_NUMBER)
            return type_error(c, param, "a number", e);
        double b = e->u.num.d;
        if (b < -100.0 || b > 100.0)
            return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, param,
                                 "'logit_bias' values must be in [-100, 100], got %g.", b);
        s->logit_bias[i] = (struct srv_logit_bias){(int32_t)id, (float)b};
    }
    s->n_logit_bias = v->len;
    return 0;
}

/* Everything in struct srv_sampling. chat selects max_completion_tokens. */
static int parse_sampling(struct ctx *c, const struct eng_json *root, bool chat, struct srv_sampling *s)
{
    const struct srv_limits *lim = c->lim;
    int64_t x = 0;
    bool given;
    int rc;
    s->n = 1;
    s->temperature = 1.0;
    s->top_p = 1.0;
    s->repetition_penalty = 1.0;
    s->skip_special_tokens = true;

    if ((rc = get_int(c, root, "n", 1, lim->max_n, &x, &given)) != 0)
        return rc;
    if (given)
        s->n = (int32_t)x;
    if ((rc = get_int(c, root, "max_tokens", 1, INT32_MAX, &x, &given)) != 0)
        return rc;
    if (given)
        s->max_tokens = (int32_t)x;
    if (chat) {
        /* Newer SDKs send only max_completion_tokens; it replaces the deprecated max_tokens. */
        if ((rc = get_int(c, root, "max_completion_tokens", 1, INT32_MAX, &x, &given)) != 0)
            return rc;
        if (given)
            s->max_tokens = (int32_t)x;
    }
    if ((rc = get_double(c, root, "temperature", 0.0, false, 2.0, &s->temperature,
                         &s->has_temperature)) != 0)
        return rc;
    if ((rc = get_double(c, root, "top_p", 0.0, true, 1.0, &s->top_p, &s->has_top_p)) != 0)
        return rc;
    if ((rc = get_int(c, root, "top_k", -1, INT32_MAX, &x, &s->has_top_k)) != 0)
        return rc;
    if (s->has_top_k) {
        /* -1 (vLLM) and 0 (vLLM's newer spelling) both mean "no top-k". */
        s->top_k = x <= 0 ? 0 : (int32_t)x;
        if (lim->vocab_size > 0 && s->top_k > lim->vocab_size)
            s->top_k = lim->vocab_size;
    }
    if ((rc = get_double(c, root, "min_p", 0.0, false, 1.0, &s->min_p, &s->has_min_p)) != 0)
        return rc;
    if ((rc = get_double(c, root, "presence_penalty", -2.0, false, 2.0, &s->presence_penalty,
                         &given)) != 0)
        return rc;
    if ((rc = get_double(c, root, "frequency_penalty", -2.0, false, 2.0, &s->frequency_penalty,
                         &given)) != 0)
        return rc;
    if ((rc = get_double(c, root, "repetition_penalty", 0.0, true, 2.0, &s->repetition_penalty,
                         &s->has_repetition_penalty)) != 0)
        return rc;
    if ((rc = get_int(c, root, "min_tokens", 0, INT32_MAX, &x, &given)) != 0)
        return rc;
    if (given) {
        if (s->max_tokens > 0 && x > s->max_tokens)
            return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "min_tokens",
                                 "'min_tokens' (%lld) must not exceed the maximum number of "
                                 "tokens (%d).", (long long)x, s->max_tokens);
        s->min_tokens = (int32_t)x;
    }
    if ((rc = get_int(c, root, "seed", INT64_MIN, INT64_MAX, &s->seed, &s->has_seed)) != 0)
        return rc;
    if ((rc = get_bool(c, root, "ignore_eos", &s->ignore_eos, NULL)) != 0 ||
        (rc = get_bool(c, root, "skip_special_tokens", &s->skip_special_tokens, NULL)) != 0 ||
        (rc = get_bool(c, root, "include_stop_str_in_output", &s->include_stop_str_in_output,
                       NULL)) != 0 ||
        (rc = get_bool(c, root, "stream", &s->stream, NULL)) != 0)
        return rc;
    if ((rc = parse_stop(c, root, s)) != 0 || (rc = parse_stop_token_ids(c, root, s)) != 0 ||
        (rc = parse_logit_bias(c, root, s)) != 0)
        return rc;

    const struct eng_json *so = opt(root, "stream_options");
    if (so != NULL) {
        if (so->type != ENG_JSON_OBJECT)
            return type_error(c, "stream_options", "an object", so);
        if (!s->stream)
            return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "stream_options",
                                 "'stream_options' is only allowed when 'stream' is true.");
        const struct eng_json *iu = opt(so, "include_usage");
        if (iu != NULL && iu->type != ENG_JSON_BOOL)
            return type_error(c, "stream_options.include_usage", "a boolean", iu);
        s->include_usage = iu != NULL && iu->b;
    }
    const struct eng_json *user = opt(root, "user");
    if (user != NULL && user->type != ENG_JSON_STRING)
        return type_error(c, "user", "a string", user);
    return 0;
}

/* A field this server refuses instead of silently ignoring (its effect would be missing). */
static int refuse(struct ctx *c, const struct eng_json *root, const char *key, const char *why)
{
    if (opt(root, key) != NULL)
        return srv_error_set(c->err, SRV_ERR_UNSUPPORTED_PARAM, key, "'%s' is not supported: %s.",
                             key, why);
    return 0;
}

/* ---- chat messages ---- */

static int parse_role(struct ctx *c, const struct eng_json *m, const char *mp, enum srv_role *out)
{
    static const struct {
        const char *name;
        enum srv_role role;
    } roles[] = {
        {"system", SRV_ROLE_SYSTEM},       {"developer", SRV_ROLE_SYSTEM}, {"user", SRV_ROLE_USER},
        {"assistant", SRV_ROLE_ASSISTANT}, {"tool", SRV_ROLE_TOOL},
    };
    char param[PATH_MAX_LEN];
    path_key(param, mp, "role");
    const struct eng_json *v = eng_json_get(m, "role");
    if (v == NULL)
        return missing(c, param);
    if (v->type != ENG_JSON_STRING)
        return type_error(c, param, "a string", v);
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        if (strcmp(v->u.str, roles[i].name) == 0) {
            *out = roles[i].role;
            return 0;
        }
    }
    return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, param,
                         "Invalid role '%.*s': expected system, developer, user, assistant or tool.",
                         quote_len(v->u.str, 32), v->u.str);
}

static int parse_image_part(struct ctx *c, const struct eng_json *p, const char *pp,
                            struct srv_content_part *out, size_t *n_images)
{
    char param[PATH_MAX_LEN], uparam[PATH_MAX_LEN];
    path_key(param, pp, "image_url");
    const struct eng_json *iu = eng_json_get(p, "image_url");
    if (iu == NULL || iu->type == ENG_JSON_NULL)
        return missing(c, param);
    if (iu->type != ENG_JSON_OBJECT)
        return type_error(c, param, "an object with a url", iu);
    path_key(uparam, param, "url");
    int rc = get_string(c, iu, "url", uparam, true, &out->text);
    if (rc != 0)
        return rc;
    out->len = strlen(out->text);
    /* Remote fetching is an SSRF risk (vLLM CVE-2025-6242); file:// reads the server's disk. */
    bool data = strncmp(out->text, "data:", 5) == 0;
    bool remote = strncmp(out->text, "http://", 7) == 0 || strncmp(out->text, "https://", 8) == 0;
    if (!data && !(remote && c->lim->allow_remote_image_urls))
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, uparam,
                             c->lim->allow_remote_image_urls
                                 ? "Image URLs must be data: or http(s): URLs."
                                 : "Only data: image URLs are accepted by this server.");
    const struct eng_json *d = opt(iu, "detail");
    out->detail = SRV_IMAGE_DETAIL_AUTO;
    if (d != NULL) {
        char dparam[PATH_MAX_LEN];
        path_key(dparam, param, "detail");
        if (d->type != ENG_JSON_STRING)
            return type_error(c, dparam, "a string", d);
        if (strcmp(d->u.str, "low") == 0)
            out->detail = SRV_IMAGE_DETAIL_LOW;
        else if (strcmp(d->u.str, "high") == 0)
            out->detail = SRV_IMAGE_DETAIL_HIGH;
        else if (strcmp(d->u.str, "auto") != 0)
            return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, dparam,
                                 "'detail' must be auto, low or high.");
    }
    if (++*n_images > (size_t)c->lim->max_images)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, pp,
                             "At most %d images are allowed per request.", c->lim->max_images);
    out->type = SRV_PART_IMAGE_URL;
    return 0;
}

static int parse_parts(struct ctx *c, const struct eng_json *v, const char *cp, enum srv_role role,
                       struct srv_message *msg, size_t *n_images)
{
    if (v->len == 0)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, cp,
                             "'%s' must not be an empty array.", cp);
    if (v->len > (size_t)c->lim->max_content_parts)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, cp,
                             "'%s' may hold at most %d parts.", cp, c->lim->max_content_parts);
    msg->parts = mem_array(c->mem, v->len, sizeof(*msg->parts));
    if (msg->parts == NULL)
        return nomem(c);
    size_t j = 0;
    for (const struct eng_json *p = v->u.child; p != NULL; p = p->next, j++) {
        char pp[PATH_MAX_LEN], tparam[PATH_MAX_LEN];
        path_index(pp, cp, j);
        if (p->type != ENG_JSON_OBJECT)
            return type_error(c, pp, "a content part object", p);
        path_key(tparam, pp, "type");
        const struct eng_json *t = eng_json_get(p, "type");
        if (t == NULL)
            return missing(c, tparam);
        if (t->type != ENG_JSON_STRING)
            return type_error(c, tparam, "a string", t);
        struct srv_content_part *out = &msg->parts[j];
        int rc;
        if (strcmp(t->u.str, "text") == 0) {
            char xparam[PATH_MAX_LEN];
            path_key(xparam, pp, "text");
            if ((rc = get_string(c, p, "text", xparam, true, &out->text)) != 0)
                return rc;
            out->type = SRV_PART_TEXT;
            out->len = eng_json_get(p, "text")->len;
        } else if (strcmp(t->u.str, "image_url") == 0) {
            if (role != SRV_ROLE_USER)
                return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, tparam,
                                     "Image parts are only allowed in user messages.");
            if ((rc = parse_image_part(c, p, pp, out, n_images)) != 0)
                return rc;
        } else {
            return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, tparam,
                                 "Unsupported content part type '%.*s': expected text or image_url.",
                                 quote_len(t->u.str, 32), t->u.str);
        }
    }
    msg->n_parts = v->len;
    msg->content_kind = SRV_CONTENT_PARTS;
    return 0;
}

static int parse_tool_calls(struct ctx *c, const struct eng_json *m, const char *mp,
                            struct srv_message *msg)
{
    char param[PATH_MAX_LEN];
    path_key(param, mp, "tool_calls");
    const struct eng_json *v = opt(m, "tool_calls");
    if (v == NULL)
        return 0;
    if (v->type != ENG_JSON_ARRAY)
        return type_error(c, param, "an array", v);
    if (v->len > SRV_MAX_TOOL_CALLS)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, param, "At most %d tool calls per message.",
                             SRV_MAX_TOOL_CALLS);
    msg->tool_calls = mem_array(c->mem, v->len ? v->len : 1, sizeof(*msg->tool_calls));
    if (msg->tool_calls == NULL)
        return nomem(c);
    size_t k = 0;
    for (const struct eng_json *t = v->u.child; t != NULL; t = t->next, k++) {
        char tp[PATH_MAX_LEN], fp[PATH_MAX_LEN], q[PATH_MAX_LEN];
        path_index(tp, param, k);
        if (t->type != ENG_JSON_OBJECT)
            return type_error(c, tp, "an object", t);
        struct srv_tool_call *out = &msg->tool_calls[k];
        char *type;
        int rc;
        path_key(q, tp, "id");
        if ((rc = get_string(c, t, "id", q, true, &out->id)) != 0)
            return rc;
        path_key(q, tp, "type");
        if ((rc = get_string(c, t, "type", q, true, &type)) != 0)
            return rc;
        if (strcmp(type, "function") != 0)
            return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, q, "Tool call type must be 'function'.");
        path_key(fp, tp, "function");
        const struct eng_json *f = eng_json_get(t, "function");
        if (f == NULL)
            return missing(c, fp);
        if (f->type != ENG_JSON_OBJECT)
            return type_error(c, fp, "an object", f);
        path_key(q, fp, "name");
        if ((rc = get_string(c, f, "name", q, true, &out->name)) != 0)
            return rc;
        path_key(q, fp, "arguments");
        if ((rc = get_string(c, f, "arguments", q, true, &out->arguments)) != 0)
            return rc;
    }
    msg->n_tool_calls = v->len;
    return 0;
}

static int parse_message(struct ctx *c, const struct eng_json *m, size_t i, struct srv_message *msg,
                         size_t *n_images)
{
    char mp[PATH_MAX_LEN], cp[PATH_MAX_LEN], q[PATH_MAX_LEN];
    path_index(mp, "messages", i);
    if (m->type != ENG_JSON_OBJECT)
        return type_error(c, mp, "a message object", m);
    int rc = parse_role(c, m, mp, &msg->role);
    if (rc != 0)
        return rc;
    path_key(q, mp, "name");
    if ((rc = get_string(c, m, "name", q, false, &msg->name)) != 0)
        return rc;
    if (msg->role == SRV_ROLE_ASSISTANT && (rc = parse_tool_calls(c, m, mp, msg)) != 0)
        return rc;
    if (msg->role == SRV_ROLE_TOOL) {
        path_key(q, mp, "tool_call_id");
        if ((rc = get_string(c, m, "tool_call_id", q, true, &msg->tool_call_id)) != 0)
            return rc;
    }
    path_key(cp, mp, "content");
    const struct eng_json *v = eng_json_get(m, "content");
    if (v == NULL || v->type == ENG_JSON_NULL) {
        /* Only an assistant turn that calls tools may have no content (OpenAI's rule). */
        if (msg->role == SRV_ROLE_ASSISTANT && msg->n_tool_calls > 0) {
            msg->content_kind = SRV_CONTENT_NONE;
            return 0;
        }
        if (v == NULL)
            return missing(c, cp);
        return type_error(c, cp, "a string or an array of content parts", v);
    }
    if (v->type == ENG_JSON_STRING) {
        if ((msg->text = copy_str(c, v)) == NULL)
            return nomem(c);
        msg->text_len = v->len;
        msg->content_kind = SRV_CONTENT_TEXT;
        return 0;
    }
    if (v->type == ENG_JSON_ARRAY)
        return parse_parts(c, v, cp, msg->role, msg, n_images);
    return type_error(c, cp, "a string or an array of content parts", v);
}

static int parse_messages(struct ctx *c, const struct eng_json *root, struct srv_chat_request *req)
{
    const struct eng_json *v = eng_json_get(root, "messages");
    if (v == NULL)
        return missing(c, "messages");
    if (v->type != ENG_JSON_ARRAY)
        return type_error(c, "messages", "an array of messages", v);
    if (v->len == 0)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "messages",
                             "'messages' must contain at least one message.");
    if (v->len > (size_t)c->lim->max_messages)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "messages",
                             "'messages' may hold at most %d messages.", c->lim->max_messages);
    req->messages = mem_array(c->mem, v->len, sizeof(*req->messages));
    if (req->messages == NULL)
        return nomem(c);
    size_t i = 0;
    for (const struct eng_json *m = v->u.child; m != NULL; m = m->next, i++) {
        int rc = parse_message(c, m, i, &req->messages[i], &req->n_images);
        if (rc != 0)
            return rc;
    }
    req->n_messages = v->len;
    return 0;
}

/* One entry of tools: {"type": "function", "function": {name, description, parameters,
 * strict}}. Appends its description for the prompt to *text. */
static int parse_tool(struct ctx *c, const struct eng_json *t, size_t i,
                      struct eng_tool_schema *out, struct srv_buf *text)
{
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    path_index(p, "tools", i);
    if (t->type != ENG_JSON_OBJECT)
        return type_error(c, p, "an object", t);
    const struct eng_json *type = eng_json_get(t, "type");
    path_key(q, p, "type");
    if (type == NULL)
        return missing(c, q);
    if (type->type != ENG_JSON_STRING || strcmp(type->u.str, "function") != 0)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, q, "'%s' must be \"function\".", q);
    const struct eng_json *f = eng_json_get(t, "function");
    path_key(q, p, "function");
    if (f == NULL)
        return missing(c, q);
    if (f->type != ENG_JSON_OBJECT)
        return type_error(c, q, "an object", f);
    char fp[PATH_MAX_LEN];
    snprintf(fp, sizeof fp, "%s", q);
    const struct eng_json *name = eng_json_get(f, "name");
    path_key(q, fp, "name");
    if (name == NULL)
        return missing(c, q);
    if (name->type != ENG_JSON_STRING)
        return type_error(c, q, "a string", name);
    bool ok = name->len >= 1 && name->len <= SRV_TOOL_NAME_MAX;
    for (size_t k = 0; ok && k < name->len; k++) {
        char ch = name->u.str[k];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '_' || ch == '-';
    }
    if (!ok)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, q,
                             "'%s' must be 1 to 64 letters, digits, underscores or dashes.", q);
    const struct eng_json *desc = opt(f, "description");
    path_key(q, fp, "description");
    if (desc != NULL && desc->type != ENG_JSON_STRING)
        return type_error(c, q, "a string", desc);
    const struct eng_json *params = opt(f, "parameters");
    path_key(q, fp, "parameters");
    if (params != NULL && params->type != ENG_JSON_OBJECT)
        return type_error(c, q, "an object", params);
    const struct eng_json *strict = opt(f, "strict");
    path_key(q, fp, "strict");
    if (strict != NULL && strict->type != ENG_JSON_BOOL)
        return type_error(c, q, "a boolean", strict);
    out->name = name->u.str;
    out->parameters = params;
    /* {"name":..,"description":..,"parameters":..} for the prompt */
    char *w = NULL;
    size_t wl = 0;
    int rc = srv_buf_append(text, i ? ",{\"name\":" : "{\"name\":", i ? 9 : 8);
    if (rc == 0 && (rc = eng_json_write(name, &w, &wl)) == 0)
        rc = srv_buf_append(text, w, wl);
    free(w);
    if (rc == 0 && desc) {
        rc = srv_buf_append(text, ",\"description\":", 15);
        if (rc == 0 && (rc = eng_json_write(desc, &w, &wl)) == 0)
            rc = srv_buf_append(text, w, wl);
        free(w);
    }
    if (rc == 0 && params) {
        rc = srv_buf_append(text, ",\"parameters\":", 14);
        if (rc == 0 && (rc = eng_json_write(params, &w, &wl)) == 0)
            rc = srv_buf_append(text, w, wl);
        free(w);
    }
    if (rc == 0)
        rc = srv_buf_append(text, "}", 1);
    return rc == 0 ? 0 : nomem(c);
}

/* tool_choice: "none", "auto", "required" or {"type": "function", "function": {"name"}}. */
static int parse_tool_choice(struct ctx *c, const struct eng_json *tc, bool have_tools,
                             struct srv_chat_request *req)
{
    req->tool_choice = have_tools ? SRV_TOOL_CHOICE_AUTO : SRV_TOOL_CHOICE_NONE;
    if (tc == NULL)
        return 0;
    if (tc->type != ENG_JSON_STRING && tc->type != ENG_JSON_OBJECT)
        return type_error(c, "tool_choice", "a string or an object", tc);
    if (tc->type == ENG_JSON_STRING && (strcmp(tc->u.str, "none") == 0 || strcmp(tc->u.str, "auto") == 0)) {
        if (strcmp(tc->u.str, "none") == 0)
            req->tool_choice = SRV_TOOL_CHOICE_NONE;
        return 0;
    }
    if (tc->type == ENG_JSON_STRING && strcmp(tc->u.str, "required") != 0)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "tool_choice",
                             "'tool_choice' must be none, auto, required or a named tool.");
    /* With no tools, "none" and "auto" both mean plain text; anything else needs a tool. */
    if (!have_tools)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "tool_choice",
                             "'tool_choice' requires 'tools'.");
    if (tc->type == ENG_JSON_STRING) {
        req->tool_choice = SRV_TOOL_CHOICE_REQUIRED;
        return 0;
    }
    const struct eng_json *type = eng_json_get(tc, "type");
    const struct eng_json *f = eng_json_get(tc, "function");
    const struct eng_json *name = f && f->type == ENG_JSON_OBJECT ? eng_json_get(f, "name") : NULL;
    if (!type || type->type != ENG_JSON_STRING || strcmp(type->u.str, "function") != 0 || !name ||
        name->type != ENG_JSON_STRING)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "tool_choice",
                             "A named 'tool_choice' is {\"type\": \"function\", \"function\": "
                             "{\"name\": ...}}.");
    req->tool_choice = SRV_TOOL_CHOICE_NAMED;
    req->tool_forced = copy_str(c, name);
    return req->tool_forced ? 0 : nomem(c);
}

/* tools, tool_choice and parallel_tool_calls. With a choice other than none, the answer's
 * grammar is compiled here (a schema outside the subset is a 400 before any work) and the
 * tools' description for the prompt is kept. */
static int parse_tools(struct ctx *c, const struct eng_json *root, struct srv_chat_request *req)
{
    int rc;
    const struct eng_json *tools = opt(root, "tools");
    if (tools != NULL) {
        if (tools->type != ENG_JSON_ARRAY)
            return type_error(c, "tools", "an array", tools);
        if (tools->len == 0)
            return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "tools",
                                 "'tools' must not be an empty array.");
        if (tools->len > SRV_MAX_TOOLS)
            return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "tools",
                                 "At most %d tools are allowed.", SRV_MAX_TOOLS);
    }
    if ((rc = refuse(c, root, "functions", "use 'tools'")) != 0 ||
        (rc = refuse(c, root, "function_call", "use 'tool_choice'")) != 0)
        return rc;
    req->parallel_tool_calls = true;
    if ((rc = get_bool(c, root, "parallel_tool_calls", &req->parallel_tool_calls, NULL)) != 0 ||
        (rc = parse_tool_choice(c, opt(root, "tool_choice"), tools != NULL, req)) != 0)
        return rc;
    if (tools == NULL)
        return 0;
    struct eng_tool_schema ts[SRV_MAX_TOOLS];
    size_t n = 0;
    struct srv_buf text = {0};
    rc = srv_buf_append(&text, "[", 1) == 0 ? 0 : nomem(c);
    for (const struct eng_json *t = tools->u.child; t && rc == 0; t = t->next, n++) {
        rc = parse_tool(c, t, n, &ts[n], &text);
        for (size_t k = 0; rc == 0 && k < n; k++)
            if (strcmp(ts[k].name, ts[n].name) == 0)
                rc = srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "tools",
                                   "Two tools are named \"%s\".", ts[n].name);
    }
    if (rc == 0 && srv_buf_append(&text, "]", 1) != 0)
        rc = nomem(c);
    if (rc == 0) {
        req->tools_json = mem_alloc(c->mem, text.len + 1);
        if (req->tools_json)
            memcpy(req->tools_json, text.p, text.len + 1);
        else
            rc = nomem(c);
    }
    srv_buf_free(&text);
    if (rc != 0 || req->tool_choice == SRV_TOOL_CHOICE_NONE)
        return rc;
    if (req->sampling.grammar)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "tools",
                             "Structured output (response_format, structured_outputs, guided_*) "
                             "cannot be combined with 'tools' (unless 'tool_choice' is \"none\").");
    if (req->logprobs)
        return srv_error_set(c->err, SRV_ERR_UNSUPPORTED_VALUE, "logprobs",
                             "'logprobs' is not supported together with 'tools'.");
    /* The named tool alone, or all of them. */
    const struct eng_tool_schema *use = ts;
    size_t n_use = n;
    if (req->tool_choice == SRV_TOOL_CHOICE_NAMED) {
        size_t k = 0;
        while (k < n && strcmp(ts[k].name, req->tool_forced) != 0)
            k++;
        if (k == n)
            return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "tool_choice",
                                 "'tool_choice' names \"%s\", which is not among 'tools'.",
                                 req->tool_forced);
        use = &ts[k];
        n_use = 1;
    }
    char msg[SRV_ERROR_MESSAGE_MAX];
    rc = eng_json_schema_compile_tools(use, n_use, req->tool_choice == SRV_TOOL_CHOICE_AUTO,
                                       req->parallel_tool_calls &&
                                           req->tool_choice != SRV_TOOL_CHOICE_NAMED,
                                       "tools", &req->sampling.grammar, msg, sizeof msg);
    if (rc == ENG_JSON_SCHEMA_ERR_NOMEM)
        return nomem(c);
    if (rc != 0)
        return srv_error_set(c->err, rc == ENG_JSON_SCHEMA_ERR_UNSUPPORTED ? SRV_ERR_UNSUPPORTED_VALUE
                                                                           : SRV_ERR_INVALID_VALUE,
                             "tools", "%s", msg);
    return 0;
}

/* Fields refused rather than ignored. */
static int parse_chat_refusals(struct ctx *c, const struct eng_json *root)
{
    int rc;
    /* A client-supplied template could reach the engine's internals (vLLM CVE-2025-62426). */
    if ((rc = refuse(c, root, "chat_template", "the server's template is used")) != 0 ||
        (rc = refuse(c, root, "chat_template_kwargs", "the server's template is used")) != 0)
        return rc;
    return 0;
}

/* response_format (OpenAI; vLLM takes it on completions too): text, json_object (any JSON
 * object) or json_schema {name, schema, strict, description}. The schema is compiled here, so
 * that a schema outside the supported subset is a 400 naming the keyword before any work is
 * queued. strict is accepted either way: the schema is always enforced. */
static int parse_response_format(struct ctx *c, const struct eng_json *root, struct srv_sampling *s)
{
    const struct eng_json *rf = opt(root, "response_format");
    if (rf == NULL)
        return 0;
    if (rf->type != ENG_JSON_OBJECT)
        return type_error(c, "response_format", "an object", rf);
    const struct eng_json *t = eng_json_get(rf, "type");
    if (t == NULL)
        return missing(c, "response_format.type");
    if (t->type != ENG_JSON_STRING)
        return type_error(c, "response_format.type", "a string", t);
    const struct eng_json *schema = NULL;
    if (strcmp(t->u.str, "text") == 0)
        return 0;
    if (strcmp(t->u.str, "json_schema") == 0) {
        const struct eng_json *js = opt(rf, "json_schema");
        if (js == NULL)
            return missing(c, "response_format.json_schema");
        if (js->type != ENG_JSON_OBJECT)
            return type_error(c, "response_format.json_schema", "an object", js);
        const struct eng_json *name = opt(js, "name");
        if (name != NULL) {
            if (name->type != ENG_JSON_STRING)
                return type_error(c, "response_format.json_schema.name", "a string", name);
            bool ok = name->len >= 1 && name->len <= 64;
            for (size_t i = 0; ok && i < name->len; i++) {
                char ch = name->u.str[i];
                ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                     (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
            }
            if (!ok)
                return srv_error_set(c->err, SRV_ERR_INVALID_VALUE,
                                     "response_format.json_schema.name",
                                     "'response_format.json_schema.name' must be 1 to 64 letters, "
                                     "digits, underscores or dashes.");
        }
        const struct eng_json *strict = opt(js, "strict");
        if (strict != NULL && strict->type != ENG_JSON_BOOL)
            return type_error(c, "response_format.json_schema.strict", "a boolean", strict);
        schema = opt(js, "schema");
        if (schema == NULL)
            return missing(c, "response_format.json_schema.schema");
        if (schema->type != ENG_JSON_OBJECT && schema->type != ENG_JSON_BOOL)
            return type_error(c, "response_format.json_schema.schema", "an object", schema);
    } else if (strcmp(t->u.str, "json_object") != 0) {
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "response_format.type",
                             "'response_format.type' must be text, json_object or json_schema.");
    }
    char msg[SRV_ERROR_MESSAGE_MAX];
    const char *param = schema ? "response_format.json_schema.schema" : "response_format";
    int rc = eng_json_schema_compile(schema, param, &s->grammar, msg, sizeof msg);
    if (rc == 0)
        return 0;
    if (rc == ENG_JSON_SCHEMA_ERR_NOMEM)
        return nomem(c);
    return srv_error_set(c->err, rc == ENG_JSON_SCHEMA_ERR_UNSUPPORTED ? SRV_ERR_UNSUPPORTED_VALUE
                                                                       : SRV_ERR_INVALID_VALUE,
                         param, "%s", msg);
}

/* One structured-output kind of vLLM's extensions, v at path param, compiled into s->grammar. */
static int compile_guided(struct ctx *c, const char *kind, const struct eng_json *v,
                          const char *param, struct srv_sampling *s)
{
    char msg[SRV_ERROR_MESSAGE_MAX] = "";
    int rc;
    if (strcmp(kind, "json") == 0) {
        struct eng_json_doc *doc = NULL;
        const struct eng_json *schema = v;
        if (v->type == ENG_JSON_STRING) { /* vLLM takes the schema as JSON text too */
            struct eng_json_error jerr;
            if (eng_json_parse(v->u.str, v->len, NULL, &doc, &jerr) != 0)
                return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, param,
                                     "'%s' is not valid JSON: %s.", param, jerr.message);
            schema = eng_json_root(doc);
        } else if (v->type != ENG_JSON_OBJECT && v->type != ENG_JSON_BOOL) {
            return type_error(c, param, "a JSON Schema", v);
        }
        rc = eng_json_schema_compile(schema, param, &s->grammar, msg, sizeof msg);
        eng_json_free(doc);
    } else if (strcmp(kind, "regex") == 0) {
        if (v->type != ENG_JSON_STRING)
            return type_error(c, param, "a string", v);
        rc = eng_regex_grammar(v->u.str, v->len, &s->grammar, msg, sizeof msg);
    } else if (strcmp(kind, "choice") == 0) {
        if (v->type != ENG_JSON_ARRAY || v->len == 0 || v->len > SRV_MAX_CHOICES)
            return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, param,
                                 "'%s' must be an array of 1 to %d strings.", param, SRV_MAX_CHOICES);
        const char *strs[SRV_MAX_CHOICES];
        size_t lens[SRV_MAX_CHOICES], n = 0;
        for (const struct eng_json *e = v->u.child; e; e = e->next, n++) {
            if (e->type != ENG_JSON_STRING || e->len == 0)
                return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, param,
                                     "'%s' must list non-empty strings.", param);
            strs[n] = e->u.str;
            lens[n] = e->len;
        }
        rc = eng_choice_grammar(strs, lens, n, &s->grammar, msg, sizeof msg);
    } else if (strcmp(kind, "json_object") == 0) {
        if (v->type != ENG_JSON_BOOL)
            return type_error(c, param, "a boolean", v);
        rc = v->b ? eng_json_schema_compile(NULL, param, &s->grammar, msg, sizeof msg) : 0;
    } else {
        return srv_error_set(c->err, SRV_ERR_UNSUPPORTED_PARAM, param,
                             "'%s' is not supported: structured output takes a JSON Schema, a "
                             "regex or a list of choices.", param);
    }
    if (rc == 0)
        return 0;
    if (rc == ENG_JSON_SCHEMA_ERR_NOMEM)
        return nomem(c);
    return srv_error_set(c->err, rc == ENG_JSON_SCHEMA_ERR_UNSUPPORTED ? SRV_ERR_UNSUPPORTED_VALUE
                                                                       : SRV_ERR_INVALID_VALUE,
                         param, "%s", msg);
}

/* vLLM's structured-output extensions: structured_outputs {json, regex, choice, json_object,
 * grammar, structural_tag} and the older guided_json, guided_regex, guided_choice,
 * guided_grammar. One kind per request, response_format included (vLLM's rule). */
static int parse_guided(struct ctx *c, const struct eng_json *root, struct srv_sampling *s)
{
    static const char *const kinds[] = {"json", "regex", "choice", "json_object", "grammar",
                                        "structural_tag"};
    static const char *const legacy[] = {"guided_json", "guided_regex", "guided_choice", NULL,
                                         "guided_grammar", NULL};
    const struct eng_json *so = opt(root, "structured_outputs");
    if (so != NULL && so->type != ENG_JSON_OBJECT)
        return type_error(c, "structured_outputs", "an object", so);
    const char *kind = NULL;
    const struct eng_json *val = NULL;
    char param[PATH_MAX_LEN] = "";
    int given = s->grammar != NULL; /* response_format */
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        const struct eng_json *v = so ? opt(so, kinds[k]) : NULL;
        if (v) {
            given++;
            kind = kinds[k];
            val = v;
            path_key(param, "structured_outputs", kinds[k]);
        }
        v = legacy[k] ? opt(root, legacy[k]) : NULL;
        if (v) {
            given++;
            kind = kinds[k];
            val = v;
            snprintf(param, sizeof param, "%s", legacy[k]);
        }
    }
    if (given > 1)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, kind ? param : "structured_outputs",
                             "Only one kind of structured output may be given (response_format, "
                             "structured_outputs or a guided_* field).");
    return kind ? compile_guided(c, kind, val, param, s) : 0;
}

/* ---- entry points ---- */

void srv_limits_default(struct srv_limits *lim)
{
    *lim = (struct srv_limits){
        .vocab_size = 0,
        .max_n = SRV_MAX_N_DEFAULT,
        .max_stop = SRV_MAX_STOP_DEFAULT,
        .max_messages = SRV_MAX_MESSAGES,
        .max_content_parts = SRV_MAX_CONTENT_PARTS,
        .max_images = SRV_MAX_IMAGES,
        .max_prompts = SRV_MAX_PROMPTS,
    };
}

/* The caller's limits with out-of-range settings brought back to the ceilings. */
static struct srv_limits clamp_limits(const struct srv_limits *in)
{
    struct srv_limits l = *in;
    if (l.max_n < 1 || l.max_n > SRV_MAX_N_CEILING)
        l.max_n = l.max_n < 1 ? 1 : SRV_MAX_N_CEILING;
    if (l.max_stop < 0 || l.max_stop > SRV_MAX_STOP_CEILING)
        l.max_stop = l.max_stop < 0 ? 0 : SRV_MAX_STOP_CEILING;
    if (l.max_messages < 1)
        l.max_messages = 1;
    if (l.max_content_parts < 1)
        l.max_content_parts = 1;
    if (l.max_images < 0)
        l.max_images = 0;
    if (l.max_prompts < 1)
        l.max_prompts = 1;
    if (l.vocab_size < 0)
        l.vocab_size = 0;
    return l;
}

/* ---- the body ---- */

int srv_json_parse(const char *body, size_t len, const struct eng_json_opts *opts,
                   struct eng_json_doc **out, struct srv_error *err)
{
    struct eng_json_error je;
    int rc = eng_json_parse(body, len, opts, out, &je);
    if (rc == 0)
        return 0;
    int code;
    switch (rc) {
    case ENG_JSON_ERR_DUPLICATE_KEY: code = SRV_ERR_DUPLICATE_KEY; break;
    case ENG_JSON_ERR_TOO_DEEP: code = SRV_ERR_JSON_TOO_DEEP; break;
    /* The budget and malloc say nothing a client can act on beyond the table's messages. */
    case ENG_JSON_ERR_TOO_COMPLEX: return srv_error_set(err, SRV_ERR_JSON_TOO_COMPLEX, je.path, NULL);
    case ENG_JSON_ERR_NO_MEMORY: return srv_error_set(err, SRV_ERR_NO_MEMORY, je.path, NULL);
    default: code = SRV_ERR_INVALID_JSON; break;
    }
    /* The reader's reasons are lower-case phrases; a client reads a sentence. */
    char reason[sizeof(je.message)];
    memcpy(reason, je.message, sizeof(reason));
    if (reason[0] >= 'a' && reason[0] <= 'z')
        reason[0] = (char)(reason[0] - 'a' + 'A');
    return srv_error_set(err, code, je.path, "%s (at byte %zu of the body).", reason, je.offset);
}

/* Parses the body and checks that it is an object. */
static int parse_body(const char *body, size_t len, const struct srv_limits *lim,
                      struct eng_json_doc **doc, struct srv_error *err)
{
    struct eng_json_opts opts = {.max_depth = lim->json_max_depth, .max_bytes = lim->json_max_bytes};
    /* The reliability target (reference §7 B14) is a peak below 16x the body for the whole
     * request, and the body buffer itself is still held while the tree is built. The JSON
     * reader's own default (16x + 256 KiB) is for the tree alone, so a body of [0,0,...] near
     * the 8 MiB limit peaked at 16.6x; leave two bodies' worth of room for the buffer. */
    if (opts.max_bytes == 0 && len <= (SIZE_MAX - ((size_t)256 << 10)) / 14)
        opts.max_bytes = 14 * len + ((size_t)256 << 10);
    int rc = srv_json_parse(body, len, &opts, doc, err);
    if (rc != 0)
        return rc;
    if (eng_json_root(*doc)->type != ENG_JSON_OBJECT) {
        eng_json_free(*doc);
        *doc = NULL;
        return srv_error_set(err, SRV_ERR_INVALID_JSON, NULL, "The request body must be a JSON object.");
    }
    return 0;
}

/* The start every request parser shares: clamps the limits into *lim, parses the body into
 * *doc (a JSON object) and allocates a zeroed request of size bytes into *req. Returns 0, or an
 * SRV_ERR_* code with err filled and nothing left to free. */
static int begin_request(const char *body, size_t len, const struct srv_limits *lim_in, size_t size,
                         struct srv_limits *lim, struct eng_json_doc **doc, void **req,
                         struct srv_error *err)
{
    *lim = clamp_limits(lim_in);
    int rc = parse_body(body, len, lim, doc, err);
    if (rc != 0)
        return rc;
    *req = calloc(1, size);
    if (*req == NULL) {
        eng_json_free(*doc);
        *doc = NULL;
        return srv_error_set(err, SRV_ERR_NO_MEMORY, NULL, NULL);
    }
    return 0;
}

int srv_chat_request_parse(const char *body, size_t len, const struct srv_limits *lim_in,
                           struct srv_chat_request **out, struct srv_error *err)
{
    *out = NULL;
    struct srv_limits lim;
    struct eng_json_doc *doc;
    void *mem;
    int rc = begin_request(body, len, lim_in, sizeof(struct srv_chat_request), &lim, &doc, &mem, err);
    if (rc != 0)
        return rc;
    struct srv_chat_request *req = mem;
    struct ctx c = {.lim = &lim, .mem = &req->mem, .err = err};
    const struct eng_json *root = eng_json_root(doc);
    int64_t x = 0;
    bool given;
    if ((rc = parse_model(&c, root, &req->model)) != 0 || (rc = parse_messages(&c, root, req)) != 0 ||
        (rc = parse_sampling(&c, root, true, &req->sampling)) != 0 ||
        (rc = parse_response_format(&c, root, &req->sampling)) != 0 ||
        (rc = parse_guided(&c, root, &req->sampling)) != 0 ||
        (rc = get_bool(&c, root, "logprobs", &req->logprobs, NULL)) != 0 ||
        (rc = get_int(&c, root, "top_logprobs", 0, SRV_MAX_TOP_LOGPROBS, &x, &given)) != 0 ||
        (rc = parse_chat_refusals(&c, root)) != 0 || (rc = parse_tools(&c, root, req)) != 0)
        goto fail;
    if (given) {
        if (!req->logprobs) {
            rc = srv_error_set(err, SRV_ERR_INVALID_VALUE, "top_logprobs",
                               "'top_logprobs' requires 'logprobs' to be true.");
            goto fail;
        }
        req->top_logprobs = (int32_t)x;
    }
    eng_json_free(doc);
    *out = req;
    return 0;
fail:
    eng_json_free(doc);
    srv_chat_request_destroy(req);
    return rc;
}

/* One token-id array prompt at path param. */
static int parse_token_prompt(struct ctx *c, const struct eng_json *v, const char *param,
                              struct srv_prompt *p)
{
    if (v->len == 0)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, param, "A prompt must not be empty.");
    p->ids = mem_array(c->mem, v->len, sizeof(int32_t));
    if (p->ids == NULL)
        return nomem(c);
    size_t j = 0;
    for (const struct eng_json *e = v->u.child; e != NULL; e = e->next, j++) {
        char q[PATH_MAX_LEN];
        path_index(q, param, j);
        int rc = get_token(c, e, q, &p->ids[j]);
        if (rc != 0)
            return rc;
    }
    p->n_ids = v->len;
    return 0;
}

static int parse_text_prompt(struct ctx *c, const struct eng_json *v, const char *param,
                             struct srv_prompt *p)
{
    if (v->type != ENG_JSON_STRING)
        return type_error(c, param, "a string", v);
    /* An empty prompt crashed vLLM's engine (CVE-2024-8768); refuse it at the edge. */
    if (v->len == 0)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, param, "A prompt must not be empty.");
    if ((p->text = copy_str(c, v)) == NULL)
        return nomem(c);
    p->text_len = v->len;
    return 0;
}

/* prompt: "text" | ["text", ...] | [id, ...] | [[id, ...], ...]; the first element of an array
 * decides which, and every element must then be of that kind. */
static int parse_prompts(struct ctx *c, const struct eng_json *root, struct srv_completion_request *req)
{
    const struct eng_json *v = eng_json_get(root, "prompt");
    if (v == NULL)
        return missing(c, "prompt");
    if (v->type == ENG_JSON_STRING) {
        req->prompts = mem_array(c->mem, 1, sizeof(*req->prompts));
        if (req->prompts == NULL)
            return nomem(c);
        req->n_prompts = 1;
        return parse_text_prompt(c, v, "prompt", &req->prompts[0]);
    }
    if (v->type != ENG_JSON_ARRAY)
        return type_error(c, "prompt", "a string, an array of strings or an array of token ids", v);
    if (v->len == 0)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "prompt", "'prompt' must not be empty.");
    const struct eng_json *first = v->u.child;
    if (first->type == ENG_JSON_NUMBER) {
        req->prompts = mem_array(c->mem, 1, sizeof(*req->prompts));
        if (req->prompts == NULL)
            return nomem(c);
        req->n_prompts = 1;
        return parse_token_prompt(c, v, "prompt", &req->prompts[0]);
    }
    if (first->type != ENG_JSON_STRING && first->type != ENG_JSON_ARRAY)
        return type_error(c, "prompt[0]", "a string, a token id or an array of token ids", first);
    if (v->len > (size_t)c->lim->max_prompts)
        return srv_error_set(c->err, SRV_ERR_INVALID_VALUE, "prompt",
                             "'prompt' may hold at most %d prompts.", c->lim->max_prompts);
    req->prompts = mem_array(c->mem, v->len, sizeof(*req->prompts));
    if (req->prompts == NULL)
        return nomem(c);
    size_t i = 0;
    for (const struct eng_json *e = v->u.child; e != NULL; e = e->next, i++) {
        char q[PATH_MAX_LEN];
        path_index(q, "prompt", i);
        int rc;
        if (first->type == ENG_JSON_STRING)
            rc = parse_text_prompt(c, e, q, &req->prompts[i]);
        else if (e->type != ENG_JSON_ARRAY)
            rc = type_error(c, q, "an array of token ids", e);
        else
            rc = parse_token_prompt(c, e, q, &req->prompts[i]);
        if (rc != 0)
            return rc;
    }
    req->n_prompts = v->len;
    return 0;
}

int srv_completion_request_parse(const char *body, size_t len, const struct srv_limits *lim_in,
                                 struct srv_completion_request **out, struct srv_error *err)
{
    *out = NULL;
    struct srv_limits lim;
    struct eng_json_doc *doc;
    void *mem;
    int rc = begin_request(body, len, lim_in, sizeof(struct srv_completion_request), &lim, &doc, &mem, err);
    if (rc != 0)
        return rc;
    struct srv_completion_request *req = mem;
    struct ctx c = {.lim = &lim, .mem = &req->mem, .err = err};
    const struct eng_json *root = eng_json_root(doc);
    int64_t x = 0;
    bool given;
    req->logprobs = -1;
    if ((rc = parse_model(&c, root, &req->model)) != 0 || (rc = parse_prompts(&c, root, req)) != 0 ||
        (rc = parse_sampling(&c, root, false, &req->sampling)) != 0 ||
        (rc = parse_response_format(&c, root, &req->sampling)) != 0 ||
        (rc = parse_guided(&c, root, &req->sampling)) != 0 ||
        (rc = get_bool(&c, root, "echo", &req->echo, NULL)) != 0 ||
        (rc = get_int(&c, root, "logprobs", 0, SRV_MAX_LEGACY_LOGPROBS, &x, &given)) != 0)
        goto fail;
    if (given)
        req->logprobs = (int32_t)x;
    if ((rc = get_int(&c, root, "best_of", 1, INT32_MAX, &x, &given)) != 0)
        goto fail;
    if (given && x != 1) {
        rc = srv_error_set(err, SRV_ERR_UNSUPPORTED_VALUE, "best_of",
                           "'best_of' other than 1 is not supported; use 'n'.");
        goto fail;
    }
    const struct eng_json *suffix = opt(root, "suffix");
    if (suffix != NULL) {
        if (suffix->type != ENG_JSON_STRING) {
            rc = type_error(&c, "suffix", "a string", suffix);
            goto fail;
        }
        if (suffix->len > 0) {
            rc = srv_error_set(err, SRV_ERR_UNSUPPORTED_PARAM, "suffix",
                               "'suffix' (fill-in-the-middle) is not supported by this model.");
            goto fail;
        }
    }
    eng_json_free(doc);
    *out = req;
    return 0;
fail:
    eng_json_free(doc);
    srv_completion_request_destroy(req);
    return rc;
}

void srv_chat_request_destroy(struct srv_chat_request *req)
{
    if (req == NULL)
        return;
    eng_grammar_destroy(req->sampling.grammar);
    mem_free(req->mem);
    free(req);
}

void srv_completion_request_destroy(struct srv_completion_request *req)
{
    if (req == NULL)
        return;
    eng_grammar_destroy(req->sampling.grammar);
    mem_free(req->mem);
    free(req);
}
