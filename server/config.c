/* The option table of `phiserve serve` and its three sources: config file, environment, flags
 * (see config.h). Not the HTTP server and not the engine: it only fills struct srv_config. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "kv_cache.h"
#include "model.h"

enum opt_type { OPT_STR, OPT_INT, OPT_BYTES, OPT_BOOL, OPT_LIST, OPT_FRACTION, OPT_INT8 };

struct opt {
    const char *name;   /* flag name without "--"; env PHISERVE_<NAME>; file key */
    enum opt_type type;
    size_t off;         /* offset in struct srv_config */
    int64_t lo, hi;     /* OPT_INT / OPT_BYTES range */
    const char *meta;
    const char *help;
};
/* OPT_FRACTION values are doubles in (0, 1]. OPT_INT8 is a string "on", "off" or "auto"
 * (eng_int8_parse's words, normalized), a bare flag meaning "on". */

#define OFF(f) offsetof(struct srv_config, f)

static const struct opt opts[] = {
    {"model", OPT_STR, OFF(model_dir), 0, 0, "PATH", "Hugging Face model directory or GGUF file (default: the bundled demo model)"},
    {"served-model-name", OPT_STR, OFF(served_model_name), 0, 0, "NAME", "model id in the API (default: the model directory's name)"},
    {"chat-template", OPT_STR, OFF(chat_template), 0, 0, "FILE", "Jinja chat template overriding the model's"},
    {"device", OPT_STR, OFF(device), 0, 0, "cpu|ref|cuda", "compute backend (default cpu; cuda: GPU 0)"},
    {"quantization", OPT_STR, OFF(quantization), 0, 0, "none|q8_0|q4_0", "quantize the weight matrices at load: q8_0 / q4_0 = 8-bit / 4-bit values with an fp16 scale per 32 (cpu and ref devices; default none)"},
    {"int8-activations", OPT_INT8, OFF(int8_activations), 0, 0, "[=on|off|auto]", "multiply the Q8_0/Q4_0/K-quant weight matrices (from --quantization or a GGUF file) with activations rounded to int8: faster prefill and decode on the CPU, results slightly off the plain path; Phi-3.5-MoE experts unaffected (cpu and ref devices; default auto: on for such weights on the cpu device)"},
    {"gpu-memory-fraction", OPT_FRACTION, OFF(gpu_memory_fraction), 0, 0, "F", "this server's share of GPU memory for weights, activations and KV cache (default 0.9)"},
    {"threads", OPT_INT, OFF(threads), 0, 4096, "N", "CPU threads (default 0: all cores)"},
    {"kv-cache-dtype", OPT_STR, OFF(kv_cache_dtype), 0, 0, "auto|bf16|f16|f32", "KV-cache element type (default auto: f32 on cpu/ref, bf16 on cuda; cuda keeps only bf16); bf16 or f16 halves the cache's memory and reads"},
    {"kv-cache-memory", OPT_BYTES, OFF(kv_cache_memory), 0, INT64_MAX, "BYTES", "KV-cache budget, e.g. 512M or 4G (default: engine's)"},
    {"block-size", OPT_INT, OFF(block_size), 0, 4096, "N", "tokens per KV block (default 16)"},
    {"max-batched-tokens", OPT_INT, OFF(max_batched_tokens), 0, INT32_MAX, "N", "token budget per engine step (default 2048)"},
    {"long-prefill-token-threshold", OPT_INT, OFF(long_prefill_token_threshold), 0, INT32_MAX, "N", "a prompt's prefill takes at most N tokens of a step, so that steps with running decodes stay short (default 0: off)"},
    {"max-seqs", OPT_INT, OFF(max_seqs), 0, 1 << 20, "N", "running sequences cap (default 256)"},
    {"max-waiting", OPT_INT, OFF(max_waiting), 0, 1 << 24, "N", "waiting-queue bound; beyond it 429 (default 1024)"},
    {"rope-long-from-start", OPT_BOOL, OFF(rope_long_from_start), 0, 0, NULL, "LongRoPE: long factors at admission when the request may cross"},
    {"no-prefix-caching", OPT_BOOL, OFF(no_prefix_caching), 0, 0, NULL, "disable automatic prefix caching"},
    {"enforce-eager", OPT_BOOL, OFF(enforce_eager), 0, 0, NULL, "never replay decode steps as CUDA graphs (cuda only; accepted with any device)"},
    {"max-seq-len-to-capture", OPT_INT, OFF(max_seq_len_to_capture), 0, 1 << 24, "N", "decode steps whose contexts are all <= N tokens replay CUDA graphs (default 8192; cuda only; accepted with any device)"},
    {"host", OPT_STR, OFF(host), 0, 0, "ADDR", "listen address (default 127.0.0.1)"},
    {"port", OPT_INT, OFF(port), 0, 65535, "N", "listen port (default 8000; 0 picks a free one)"},
    {"max-body-bytes", OPT_BYTES, OFF(max_body_bytes), 1, (int64_t)1 << 34, "BYTES", "request body limit; larger bodies get 413 (default 8M)"},
    {"max-connections", OPT_INT, OFF(max_connections), 1, 1 << 20, "N", "open connections limit (default 1024)"},
    {"per-ip-connections", OPT_INT, OFF(per_ip_connections), 0, 1 << 20, "N", "open connections per client IP (default 0: unlimited)"},
    {"timeout", OPT_INT, OFF(timeout), 0, 86400, "SECONDS", "idle connection timeout (default 60; 0: none)"},
    {"http-threads", OPT_INT, OFF(http_threads), 1, 256, "N", "HTTP polling threads (default 1)"},
    {"shutdown-timeout", OPT_INT, OFF(shutdown_timeout), 0, 86400, "SECONDS", "drain time on SIGTERM before aborting (default 30)"},
    {"sse-ping-interval", OPT_INT, OFF(sse_ping_interval), 1, 3600, "SECONDS", "': ping' comment on idle streams (default 15)"},
    {"stall-timeout", OPT_INT, OFF(stall_timeout), 0, 86400, "SECONDS", "engine step stall after which /health/ready and /health/decode answer 503 (default 60; 0: off)"},
    {"max-n", OPT_INT, OFF(max_n), 1, 128, "N", "largest n (choices) per request (default 8)"},
    {"api-key", OPT_LIST, OFF(api_keys), 0, 0, "KEY", "require 'Authorization: Bearer KEY' (repeatable)"},
    {"api-key-file", OPT_STR, OFF(api_key_file), 0, 0, "FILE", "read API keys from FILE, one per line"},
    {"allowed-origins", OPT_LIST, OFF(allowed_origins), 0, 0, "ORIGIN", "enable CORS for these origins (repeatable or comma-separated)"},
    {"log-prompts", OPT_BOOL, OFF(log_prompts), 0, 0, NULL, "put prompt text (escaped, truncated) in the access log"},
    {"no-access-log", OPT_BOOL, OFF(no_access_log), 0, 0, NULL, "no access-log line per request"},
};

#define N_OPTS (sizeof opts / sizeof opts[0])

/* Source levels; a list set at a level replaces lists of lower levels. */
enum { LVL_DEFAULT, LVL_FILE, LVL_ENV, LVL_FLAG };

struct loader {
    struct srv_config *cfg;
    int list_level[N_OPTS];
    char *err;
    size_t errlen;
};

static int fail(struct loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct loader *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (L->errlen)
        vsnprintf(L->err, L->errlen, fmt, ap);
    va_end(ap);
    return SRV_CONFIG_ERROR;
}

int srv_config_parse_bytes(const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    int shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    case 'T': shift = 40; end++; break;
    default: break;
    }
    if (shift && *end == 'i')
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end != '\0')
        return -1;
    if (v > ((unsigned long long)INT64_MAX >> shift))
        return -1;
    *out = (int64_t)(v << shift);
    return 0;
}

static char *dup_trim(const char *s, size_t n)
{
    while (n && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static void list_clear(struct srv_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int list_push(struct srv_strlist *l, const char *s, size_t n)
{
    char *d = dup_trim(s, n);
    if (!d)
        return -1;
    if (!*d) {
        free(d);
        return 0;
    }
    char **v = realloc(l->v, (l->n + 1) * sizeof *v);
    if (!v) {
        free(d);
        return -1;
    }
    v[l->n++] = d;
    l->v = v;
    return 0;
}

/* Sets option o from text val (NULL for a bare boolean flag) at level lvl; where names the
 * source for messages (an environment variable, file:line), NULL on the command line, where
 * the flag itself says it. */
static int set_opt(struct loader *L, size_t oi, const char *val, int lvl, const char *where)
{
    const struct opt *o = &opts[oi];
    char who[600];
    if (where)
        snprintf(who, sizeof who, "%s: --%s", where, o->name);
    else
        snprintf(who, sizeof who, "--%s", o->name);
    char *base = (char *)L->cfg + o->off;
    switch (o->type) {
    case OPT_INT8: {
        char *t = val ? dup_trim(val, strlen(val)) : NULL;
        if (val && !t)
            return fail(L, "out of memory");
        enum eng_int8 mode;
        int bad = eng_int8_parse(t, &mode) != 0;
        free(t);
        if (bad)
            return fail(L, "%s: '%s' is not on, off or auto", who, val);
        char **p = (char **)(void *)base, *d = strdup(eng_int8_name(mode));
        if (!d)
            return fail(L, "out of memory");
        free(*p);
        *p = d;
        return 0;
    }
    case OPT_STR: {
        char **p = (char **)(void *)base;
        char *d = dup_trim(val, strlen(val));
        if (!d)
            return fail(L, "out of memory");
        free(*p);
        *p = d;
        return 0;
    }
    case OPT_INT:
    case OPT_BYTES: {
        int64_t v = 0;
        char *t = dup_trim(val, strlen(val));
        if (!t)
            return fail(L, "out of memory");
        int rc;
        if (o->type == OPT_BYTES) {
            rc = srv_config_parse_bytes(t, &v);
        } else {
            char *end = NULL;
            errno = 0;
            long long x = strtoll(t, &end, 10);
            rc = (errno || end == t || *end) ? -1 : 0;
            v = x;
        }
        free(t);
        if (rc != 0 || v < o->lo || v > o->hi)
            return fail(L, "%s: '%s' is not %s in [%lld, %lld]", who, val,
                        o->type == OPT_BYTES ? "a byte size" : "an integer", (long long)o->lo,
                        (long long)o->hi);
        *(int64_t *)(void *)base = v;
        return 0;
    }
    case OPT_FRACTION: {
        char *t = dup_trim(val, strlen(val));
        if (!t)
            return fail(L, "out of memory");
        char *end = NULL;
        errno = 0;
        double x = strtod(t, &end);
        int bad = errno || end == t || *end || !(x > 0.0 && x <= 1.0);
        free(t);
        if (bad)
            return fail(L, "%s: '%s' is not a fraction in (0, 1]", who, val);
        *(double *)(void *)base = x;
        return 0;
    }
    case OPT_BOOL: {
        bool *b = (bool *)(void *)base;
        if (!val) {
            *b = true;
            return 0;
        }
        char *t = dup_trim(val, strlen(val));
        if (!t)
            return fail(L, "out of memory");
        int ok = 1;
        if (!strcmp(t, "1") || !strcasecmp(t, "true") || !strcasecmp(t, "yes") || !strcasecmp(t, "on"))
            *b = true;
        else if (!strcmp(t, "0") || !strcasecmp(t, "false") || !strcasecmp(t, "no") || !strcasecmp(t, "off"))
            *b = false;
        else
            ok = 0;
        free(t);
        if (!ok)
            return fail(L, "%s: '%s' is not a boolean (true/false)", who, val);
        return 0;
    }
    case OPT_LIST: {
        struct srv_strlist *l = (struct srv_strlist *)(void *)base;
        if (L->list_level[oi] < lvl) {
            list_clear(l);
            L->list_level[oi] = lvl;
        }
        /* Flags add one item each (a key may contain a comma); env and file split on commas. */
        if (lvl == LVL_FLAG)
            return list_push(l, val, strlen(val)) ? fail(L, "out of memory") : 0;
        for (const char *p = val;;) {
            size_t n = strcspn(p, ",");
            if (list_push(l, p, n))
                return fail(L, "out of memory");
            if (!p[n])
                break;
            p += n + 1;
        }
        return 0;
    }
    }
    return 0;
}

static int find_opt(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strlen(opts[i].name) == len && !strncmp(opts[i].name, name, len))
            return (int)i;
    /* underscores are accepted in file keys too */
    for (size_t i = 0; i < N_OPTS; i++) {
        if (strlen(opts[i].name) != len)
            continue;
        size_t k = 0;
        while (k < len && (opts[i].name[k] == name[k] || (opts[i].name[k] == '-' && name[k] == '_')))
            k++;
        if (k == len)
            return (int)i;
    }
    return -1;
}

static int load_file(struct loader *L, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return fail(L, "cannot open config file '%s': %s", path, strerror(errno));
    char line[4096];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            rc = fail(L, "%s:%d: line too long", path, lineno);
            break;
        }
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '#' || *p == ';' || *p == '\0')
            continue;
        char *eq = strchr(p, '=');
        if (!eq) {
            rc = fail(L, "%s:%d: expected 'key = value'", path, lineno);
            break;
        }
        char *ke = eq;
        while (ke > p && isspace((unsigned char)ke[-1]))
            ke--;
        int oi = find_opt(p, (size_t)(ke - p));
        if (oi < 0) {
            rc = fail(L, "%s:%d: unknown key '%.*s'", path, lineno, (int)(ke - p), p);
            break;
        }
        char where[512];
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        rc = set_opt(L, (size_t)oi, eq + 1, LVL_FILE, where);
    }
    fclose(f);
    return rc;
}

static int load_env(struct loader *L, char *const *env)
{
    if (!env)
        return 0;
    for (size_t i = 0; i < N_OPTS; i++) {
        char name[96] = "PHISERVE_";
        size_t k = strlen(name);
        for (const char *s = opts[i].name; *s && k + 1 < sizeof name; s++)
            name[k++] = *s == '-' ? '_' : (char)toupper((unsigned char)*s);
        name[k] = '\0';
        for (char *const *e = env; *e; e++) {
            if (strncmp(*e, name, k) || (*e)[k] != '=')
                continue;
            int rc = set_opt(L, i, *e + k + 1, LVL_ENV, name);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static const char *env_get(char *const *env, const char *name)
{
    size_t k = strlen(name);
    for (char *const *e = env; env && *e; e++)
        if (!strncmp(*e, name, k) && (*e)[k] == '=')
            return *e + k + 1;
    return NULL;
}

static int set_str_default(char **p, const char *v)
{
    if (*p)
        return 0;
    *p = strdup(v);
    return *p ? 0 : -1;
}

int srv_config_load(struct srv_config *cfg, int argc, char **argv, char *const *env, char *err,
                    size_t errlen)
{
    struct loader L = {.cfg = cfg, .err = err, .errlen = errlen};
    memset(cfg, 0, sizeof *cfg);
    if (errlen)
        err[0] = '\0';
    cfg->port = 8000;
    cfg->gpu_memory_fraction = 0.9;
    cfg->max_body_bytes = (int64_t)8 << 20;
    cfg->max_connections = 1024;
    cfg->timeout = 60;
    cfg->http_threads = 1;
    cfg->shutdown_timeout = 30;
    cfg->sse_ping_interval = 15;
    cfg->max_n = 8;
    cfg->stall_timeout = 60;

    /* getopt table: every option plus --config and --help */
    struct option lo[N_OPTS + 3];
    for (size_t i = 0; i < N_OPTS; i++)
        lo[i] = (struct option){opts[i].name,
                                opts[i].type == OPT_BOOL || opts[i].type == OPT_INT8
                                    ? optional_argument
                                    : required_argument,
                                NULL, 1000 + (int)i};
    lo[N_OPTS] = (struct option){"config", required_argument, NULL, 'c'};
    lo[N_OPTS + 1] = (struct option){"help", no_argument, NULL, 'h'};
    lo[N_OPTS + 2] = (struct option){NULL, 0, NULL, 0};

    /* First pass: only --config / --help, so the file can be read before env and flags. */
    const char *file = env_get(env, "PHISERVE_CONFIG");
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        if (c == 'c')
            file = optarg;
        else if (c == 'h') {
            srv_config_usage(stdout);
            return SRV_CONFIG_HELP;
        }
    }
    if (file && *file) {
        cfg->config_file = strdup(file);
        if (!cfg->config_file)
            return fail(&L, "out of memory");
        int rc = load_file(&L, file);
        if (rc)
            return rc;
    }
    int rc = load_env(&L, env);
    if (rc)
        return rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        if (c == 'c' || c == 'h')
            continue;
        if (c == '?' || c == ':') {
            const char *bad = argv[optind - 1];
            return fail(&L, "unknown option or missing value: '%s' (see phiserve serve --help)", bad ? bad : "");
        }
        rc = set_opt(&L, (size_t)(c - 1000), optarg, LVL_FLAG, NULL);
        if (rc)
            return rc;
    }
    if (optind < argc) {
        if (argc - optind > 1)
            return fail(&L, "unexpected argument '%s'", argv[optind + 1]);
        free(cfg->model_dir);
        cfg->model_dir = strdup(argv[optind]);
        if (!cfg->model_dir)
            return fail(&L, "out of memory");
    }
    if (set_str_default(&cfg->model_dir, PHISERVE_DEMO_MODEL) || set_str_default(&cfg->device, "cpu") ||
        set_str_default(&cfg->host, "127.0.0.1") || set_str_default(&cfg->int8_activations, "auto"))
        return fail(&L, "out of memory");
    if (!cfg->served_model_name) {
        /* basename of the model dir, ignoring trailing slashes */
        const char *d = cfg->model_dir;
        size_t n = strlen(d);
        while (n > 1 && d[n - 1] == '/')
            n--;
        size_t b = n;
        while (b > 0 && d[b - 1] != '/')
            b--;
        cfg->served_model_name = dup_trim(d + b, n - b);
        if (!cfg->served_model_name)
            return fail(&L, "out of memory");
    }
    if (!*cfg->served_model_name)
        return fail(&L, "--served-model-name must not be empty");
    enum eng_quant quant;
    if (eng_quant_parse(cfg->quantization, &quant) != 0)
        return fail(&L, "--quantization: expected none, q8_0 or q4_0, not '%s'", cfg->quantization);
    enum kern_dtype kv_dtype;
    if (eng_kv_cache_dtype_parse(cfg->kv_cache_dtype, 1, &kv_dtype) != 0)
        return fail(&L, "--kv-cache-dtype: expected auto, bf16, f16 or f32, not '%s'",
                    cfg->kv_cache_dtype);
    return 0;
}

void srv_config_engine_options(const struct srv_config *cfg, struct eng_engine_options *o)
{
    eng_engine_options_init(o);
    o->model_dir = cfg->model_dir;
    o->device = cfg->device;
    o->quantization = cfg->quantization;
    o->int8_activations = cfg->int8_activations;
    o->kv_cache_dtype = cfg->kv_cache_dtype;
    o->gpu_memory_fraction = cfg->gpu_memory_fraction;
    /* The casts are safe: each option's table range fits the engine's type. */
    o->n_threads = (int)cfg->threads;
    o->kv_cache_bytes = cfg->kv_cache_memory;
    o->block_size = (int32_t)cfg->block_size;
    o->max_batched_tokens = (int32_t)cfg->max_batched_tokens;
    o->long_prefill_token_threshold = (int32_t)cfg->long_prefill_token_threshold;
    o->max_seqs = (int32_t)cfg->max_seqs;
    o->max_waiting = (int32_t)cfg->max_waiting;
    o->rope_long_from_start = cfg->rope_long_from_start;
    o->no_prefix_caching = cfg->no_prefix_caching;
    o->enforce_eager = cfg->enforce_eager;
    o->max_seq_len_to_capture = (int32_t)cfg->max_seq_len_to_capture;
}

int srv_config_read_key_file(struct srv_config *cfg, char *err, size_t errlen)
{
    if (!cfg->api_key_file)
        return 0;
    FILE *f = fopen(cfg->api_key_file, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open --api-key-file '%s': %s", cfg->api_key_file, strerror(errno));
        return -1;
    }
    char line[4096];
    int rc = 0;
    size_t before = cfg->api_keys.n;
    while (fgets(line, sizeof line, f)) {
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '#' || *p == '\0')
            continue;
        if (list_push(&cfg->api_keys, p, strlen(p))) {
            rc = -1;
            snprintf(err, errlen, "out of memory");
            break;
        }
    }
    fclose(f);
    if (rc == 0 && cfg->api_keys.n == before) {
        snprintf(err, errlen, "--api-key-file '%s' holds no key", cfg->api_key_file);
        rc = -1;
    }
    return rc;
}

void srv_config_free(struct srv_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < N_OPTS; i++) {
        char *base = (char *)cfg + opts[i].off;
        if (opts[i].type == OPT_STR || opts[i].type == OPT_INT8) {
            free(*(char **)(void *)base);
        } else if (opts[i].type == OPT_LIST) {
            list_clear((struct srv_strlist *)(void *)base);
        }
    }
    free(cfg->config_file);
    memset(cfg, 0, sizeof *cfg);
}

void srv_config_usage(FILE *f)
{
    fprintf(f, "usage: phiserve serve [MODEL_DIR] [options]\n\n"
               "Serves the model over an OpenAI-compatible HTTP API. Every option can also be set\n"
               "by the environment variable shown, or by a 'name = value' line in a config file\n"
               "(--config FILE or PHISERVE_CONFIG; see config/phiserve.conf). Flags win over the\n"
               "environment, which wins over the file.\n\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        char flag[64], env[64] = "PHISERVE_";
        snprintf(flag, sizeof flag, "--%s%s%s", opts[i].name,
                 opts[i].meta && opts[i].meta[0] != '[' ? " " : "", opts[i].meta ? opts[i].meta : "");
        size_t k = strlen(env);
        for (const char *s = opts[i].name; *s && k + 1 < sizeof env; s++)
            env[k++] = *s == '-' ? '_' : (char)toupper((unsigned char)*s);
        env[k] = '\0';
        fprintf(f, "  %-30s %s\n  %-30s [%s]\n", flag, opts[i].help, "", env);
    }
    fprintf(f, "  %-30s %s\n  %-30s %s\n", "--config FILE", "read options from FILE [PHISERVE_CONFIG]",
            "-h, --help", "this text");
}
