/* `phiserve serve` configuration: one table of options, each settable by a command-line flag,
 * an environment variable PHISERVE_<NAME> and a line of a config file, in that order of
 * precedence (flags > env > file > defaults). Not the engine's option struct (config fills it)
 * and not a general INI library: the file format is documented in config/phiserve.conf. */
#ifndef PHISERVE_SERVER_CONFIG_H
#define PHISERVE_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct eng_engine_options;

/* A list option (repeatable flag; comma-separated in env and file). Owned by the config. */
struct srv_strlist {
    char **v; /* [n] NUL-terminated */
    size_t n;
};

struct srv_config {
    /* model */
    char *model_dir;              /* default: the bundled demo model */
    char *served_model_name;      /* default (NULL): the model directory's basename */
    char *chat_template;          /* a Jinja file overriding the model's template; NULL: none */
    /* engine (see engine.h struct eng_engine_options) */
    char *device;                 /* cpu, ref or cuda */
    char *quantization;           /* none, q8_0 or q4_0 (weights quantized at load) */
    char *int8_activations;       /* on, off or auto (default): dense matrices in the R16
                                   * layout, int8 activations (engine.h) */
    char *kv_cache_dtype;         /* auto, bf16, f16 or f32 (eng_kv_cache_dtype_parse) */
    double gpu_memory_fraction;   /* cuda: share of the GPU's memory to use, default 0.9 */
    int64_t threads;
    int64_t kv_cache_memory;      /* bytes; 0: engine default */
    int64_t block_size;
    int64_t max_batched_tokens;
    int64_t long_prefill_token_threshold;
    int64_t max_seqs;
    int64_t max_waiting;
    bool rope_long_from_start;
    bool no_prefix_caching;
    bool enforce_eager;           /* cuda: never replay decode steps as CUDA graphs */
    int64_t max_seq_len_to_capture; /* cuda: longest context for which decode steps replay CUDA
                                   * graphs; 0: engine default (8192) */
    /* HTTP */
    char *host;                   /* default 127.0.0.1 */
    int64_t port;                 /* default 8000; 0 picks a free port */
    int64_t max_body_bytes;       /* default 8 MiB */
    int64_t max_connections;      /* MHD connection limit, default 1024 */
    int64_t per_ip_connections;   /* 0: unlimited */
    int64_t timeout;              /* idle connection timeout in seconds, default 60; 0: none */
    int64_t http_threads;         /* MHD polling threads, default 1 */
    int64_t shutdown_timeout;     /* seconds to drain on SIGTERM, default 30 */
    int64_t sse_ping_interval;    /* seconds between ": ping" comments on idle streams, default 15 */
    int64_t max_n;                /* largest n per request, default 8 */
    int64_t stall_timeout;        /* seconds a step may run with work pending before /health/ready
                                   * and /health/decode answer 503, default 60; 0: no check */
    /* security and logs */
    struct srv_strlist api_keys;
    char *api_key_file;           /* one key per line (blank lines and # comments skipped) */
    struct srv_strlist allowed_origins; /* CORS allow-list; empty: CORS off */
    bool log_prompts;             /* put prompt text in the access log (escaped, truncated) */
    bool no_access_log;
    char *config_file;            /* the file that was read, or NULL */
};

/* Results of srv_config_load besides 0. */
#define SRV_CONFIG_HELP 1      /* --help was given: usage printed to stdout, exit 0 */
#define SRV_CONFIG_ERROR (-1)  /* a bad flag, value, env variable or file line: err says which */

/* Fills *cfg from defaults, then the config file (--config FILE, else $PHISERVE_CONFIG, else
 * none), then the environment (PHISERVE_PORT, PHISERVE_API_KEY, ...: the flag's name upper-cased
 * with '-' as '_'), then argv (argv[0] is the subcommand name; one optional positional argument
 * is the model directory). A list given at a higher level replaces the lower levels' list.
 * Returns 0, SRV_CONFIG_HELP or SRV_CONFIG_ERROR with a message in err (errlen bytes). env may
 * be NULL (no environment is read) - tests pass their own envp-style array. The caller frees
 * *cfg with srv_config_free, also after an error. */
int srv_config_load(struct srv_config *cfg, int argc, char **argv, char *const *env, char *err,
                    size_t errlen);

/* Fills the engine's options from cfg: eng_engine_options_init, then every engine field of cfg
 * (model directory, device, sizes, switches). The strings in *o point into cfg: keep cfg alive
 * and unchanged while *o is used. */
void srv_config_engine_options(const struct srv_config *cfg, struct eng_engine_options *o);

/* Reads cfg->api_key_file (when set) and appends its keys to cfg->api_keys. Returns 0 or -1
 * with a message in err. */
int srv_config_read_key_file(struct srv_config *cfg, char *err, size_t errlen);

/* Frees what *cfg owns and zeroes it; accepts a zeroed or half-filled config. */
void srv_config_free(struct srv_config *cfg);

/* Prints the options with their defaults and env names. */
void srv_config_usage(FILE *f);

/* Parses a byte size: digits with an optional K/M/G/T suffix (powers of 1024, an optional
 * trailing 'B' or "iB"). Returns 0 and *out, or -1 on syntax error or overflow. */
int srv_config_parse_bytes(const char *s, int64_t *out);

#endif
