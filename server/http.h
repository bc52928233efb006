/* The HTTP server of `phiserve serve`: a libmicrohttpd daemon (internal epoll thread,
 * suspend/resume) with the OpenAI-compatible routes, auth, CORS, metrics, access log and
 * graceful drain. This header is the server's public API (create, start, drain, destroy) and
 * the shared internals of its files (http.c, routes_*.c, sse.c, auth.c, metrics.c,
 * access_log.c). It does not parse request JSON (request.h) or run models (engine.h). */
#ifndef PHISERVE_SERVER_HTTP_H
#define PHISERVE_SERVER_HTTP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "engine.h"
#include "errors.h"
#include "request.h"
#include "sse.h"

struct cJSON;
struct MHD_Daemon;
struct MHD_Response;
struct eng_chat_template;

/* ---------------------------------------------------------------- public API */

struct srv_server;

/* Builds the server (caller keeps cfg and eng; both must outlive the server) and hashes the API
 * keys. eng may be NULL: the server then answers as "loading" (/health 200, /health/ready and
 * every other route 503 with Retry-After) until srv_server_set_engine. With an engine, does
 * what srv_server_set_engine does. Does not listen yet. Returns 0 and *out, or -1 with a
 * message in err. */
int srv_server_create(const struct srv_config *cfg, struct eng_engine *eng, struct srv_server **out,
                      char *err, size_t errlen);

/* Attaches the running engine to a server created without one (caller keeps eng; it must
 * outlive the server), loads the chat template (cfg->chat_template, else the model's
 * chat_template.jinja, else tokenizer_config.json "chat_template"; a model without one serves
 * no chat), then publishes the engine: from then on the routes serve. Call once, from the
 * thread that created the server; the daemon may already be running. Returns 0, or -1 with a
 * message in err (the server then stays "loading"). */
int srv_server_set_engine(struct srv_server *s, struct eng_engine *eng, char *err, size_t errlen);

/* Binds cfg->host:cfg->port and starts the daemon and the ticker thread. *port is the bound
 * port (useful with port 0). Returns 0 or -1 with a message in err. */
int srv_server_start(struct srv_server *s, uint16_t *port, char *err, size_t errlen);

/* Starts draining: /health/ready answers 503, new generation requests 503, the engine refuses
 * new work; running requests continue. Idempotent. */
void srv_server_drain(struct srv_server *s);

/* Number of generations in flight (streams and non-stream requests still running). */
int64_t srv_server_active(struct srv_server *s);

/* Cancels every running generation (their streams end with an error event), waits up to
 * wait_ms for them to finish, resumes what is still suspended, stops the daemon and frees
 * everything. Accepts NULL. The engine may be destroyed afterwards. */
void srv_server_destroy(struct srv_server *s, int wait_ms);

/* ---------------------------------------------------------------- internals */

/* auth.c: API keys kept only as SHA-256 digests; checks compare digests in constant time over
 * every key, so neither the matching key nor a matched prefix shows in the timing. */
struct srv_auth {
    size_t n;               /* 0: auth off */
    uint8_t (*digest)[32];  /* [n] */
};
int srv_auth_init(struct srv_auth *a, const struct srv_strlist *keys);
void srv_auth_free(struct srv_auth *a);
/* true when auth is off or header is "Bearer <a configured key>" (header may be NULL). */
bool srv_auth_check(const struct srv_auth *a, const char *header);
void srv_sha256(const void *data, size_t len, uint8_t out[32]);

/* metrics.c: server-side counters and latency histograms, rendered with the engine's gauges
 * as Prometheus text (vLLM names where routers read them). */
#define SRV_HIST_BUCKETS 20
struct srv_hist {
    int n_bounds;
    const double *bounds;              /* [n_bounds] upper bounds, seconds */
    uint64_t counts[SRV_HIST_BUCKETS]; /* per bucket, not cumulative; last = +Inf */
    double sum;
    uint64_t count;
};
struct srv_metrics {
    pthread_mutex_t mu;
    struct srv_hist ttft, itl, e2e;
    uint64_t finished[5];      /* by enum eng_finish_reason */
    uint64_t http[6];          /* responses by status class 1xx..5xx (index 1..5) */
};
void srv_metrics_init(struct srv_metrics *m);
void srv_metrics_destroy(struct srv_metrics *m);
void srv_metrics_observe(struct srv_metrics *m, double ttft_s, double e2e_s, enum eng_finish_reason f);
void srv_metrics_observe_itl(struct srv_metrics *m, double itl_s, int64_t count);
void srv_metrics_count_http(struct srv_metrics *m, int status);
/* Returns a malloc'd NUL-terminated exposition (caller frees), or NULL when out of memory. */
char *srv_metrics_render(struct srv_metrics *m, const struct eng_metrics *em, const char *model_name,
                         size_t *len);

struct srv_server {
    const struct srv_config *cfg;
    /* eng, tok, mcfg, tmpl, bos/eos_text, ctx_len and limits.vocab_size are written once by
     * srv_server_set_engine before loaded turns true, and only read after loaded is seen true. */
    atomic_bool loaded;
    struct eng_engine *eng;
    const struct eng_tokenizer *tok;        /* NULL: the model has no tokenizer */
    const struct eng_model_config *mcfg;
    struct eng_chat_template *tmpl;         /* NULL: no chat template */
    bool tmpl_system;                       /* tmpl renders system messages (Phi-3-mini's
                                               first template drops them) */
    char *bos_text, *eos_text;              /* template variables */
    const char *model_name;
    const char *model_names[1];
    int64_t created;                        /* start time, for /v1/models */
    int32_t ctx_len;                        /* max_position_embeddings */
    struct srv_limits limits;
    struct srv_auth auth;
    struct srv_metrics metrics;
    struct MHD_Daemon *daemon;
    uint16_t port;
    atomic_bool draining;
    atomic_uint_fast64_t next_id;
    pthread_mutex_t mu;                     /* guards gens, n_active, stop */
    pthread_cond_t cv;
    struct srv_gen *gens;
    int64_t n_active;
    bool stop;
    bool ticker_started;
    pthread_t ticker;
    pthread_mutex_t log_mu;                 /* one access-log line at a time */
};

/* One HTTP request (MHD's req_cls). */
struct srv_req {
    struct srv_server *srv;
    struct MHD_Connection *conn;
    char method[16];
    char path[256];         /* as received (percent-decoded by MHD), cut to fit */
    char ip[64];
    char id[72];            /* X-Request-Id: the client's when sane, else generated */
    const char *origin;     /* the request's Origin when CORS allows it, else NULL */
    int64_t t_start_ns;
    struct srv_buf body;
    bool body_too_large;
    bool responded;
    int status;
    int32_t prompt_tokens, completion_tokens;
    char *log_prompt;       /* --log-prompts: the prompt text, owned */
    struct srv_gen *gen;    /* a running completion, or NULL */
};

/* Queue a response and record its status. body: callee takes (malloc'd, may be NULL when
 * len is 0). extra: NULL or a NULL-terminated list of header name, value pairs. */
int srv_respond(struct srv_req *r, int status, const char *content_type, char *body, size_t len,
                const char *const *extra);
/* Compact JSON of obj (callee takes obj). */
int srv_respond_json(struct srv_req *r, int status, struct cJSON *obj);
/* The OpenAI error body of code with param (NULL: null) and a printf message (NULL: default).
 * Adds Retry-After to 429/503 and WWW-Authenticate to 401. */
int srv_respond_error(struct srv_req *r, int code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Request id, CORS and the fixed security headers. */
void srv_add_common_headers(const struct srv_req *r, struct MHD_Response *resp);

/* Fresh 32-hex-digit random id with a prefix ("chatcmpl-"). out holds at least 48 bytes. */
void srv_make_id(const char *prefix, char *out, size_t cap);

/* Token text for logprobs: the bytes token id stands for in output ("\xe2\x96\x81" as a space,
 * byte-fallback pieces as their byte, special tokens as their text). Writes up to cap bytes into
 * out and returns the length. */
size_t srv_token_bytes(const struct eng_tokenizer *tok, int32_t id, char *out, size_t cap);
/* The same as valid UTF-8 (ill-formed bytes become U+FFFD), NUL-terminated, for "token". */
void srv_token_text(const struct eng_tokenizer *tok, int32_t id, char *out, size_t cap);
/* A logprob as JSON can carry it: -inf / NaN become -9999.0. */
double srv_logprob_value(float lp);

/* Routes: each reads r->body and queues a response or starts a generation. */
int srv_route_chat(struct srv_req *r);
int srv_route_completions(struct srv_req *r);
int srv_route_models(struct srv_req *r, const char *id); /* id NULL: the list */
int srv_route_tokenize(struct srv_req *r);
int srv_route_detokenize(struct srv_req *r);
/* /health (ready false) and /health/ready (ready true); /health/decode is the forward-progress
 * check alone: 503 once the engine has had work and no finished step for --stall-timeout. */
int srv_route_health(struct srv_req *r, bool ready);
int srv_route_health_decode(struct srv_req *r);
int srv_route_metrics(struct srv_req *r);
int srv_route_version(struct srv_req *r);

/* Shared by the chat and completions routes: the eng_request sampling fields from a parsed
 * request. bias: caller's array of at least s->n_logit_bias entries, filled here. */
void srv_fill_sampling(const struct srv_sampling *s, struct eng_sampling_params *p,
                       struct eng_logit_bias *bias);
/* Maps an eng_engine_submit error to the HTTP answer (429 with Retry-After, 503, 400). */
int srv_respond_submit_error(struct srv_req *r, int eng_rc, const char *msg, const char *param);

/* Shared OpenAI shapes (routes_completions.c): the usage object (with
 * prompt_tokens_details.cached_tokens), "stop"/"length", and the fields every response and chunk
 * starts with (id, object, created, model, system_fingerprint). NULL when out of memory. */
struct cJSON *srv_usage_json(const struct eng_usage *u);
const char *srv_finish_string(enum eng_finish_reason f);
struct cJSON *srv_response_base(const char *id, const char *object, int64_t created, const char *model);
/* A chat logprobs entry {token, logprob, bytes, top_logprobs} for one generated token. */
struct cJSON *srv_chat_logprob_entry(const struct eng_tokenizer *tok, const struct eng_token_info *ti,
                                     int32_t n_top);
/* routes_chat.c: renders messages (a cJSON array of message objects, caller keeps) with the
 * chat template and tokenizes the text without adding special tokens, or, when im holds
 * images (a vision model), as srv_images_tokenize does (filling im->in). Returns -1 on success
 * with *ids (malloc'd, caller frees), *n_ids and, when text_out is not NULL, the rendered text
 * (malloc'd); otherwise an error response was queued and its MHD result is returned. */
struct srv_images;
int srv_chat_prompt(struct srv_req *r, const struct cJSON *messages, bool add_generation_prompt,
                    struct srv_images *im, int32_t **ids, size_t *n_ids, char **text_out);

/* access_log.c: one line per finished request on stderr; control characters escaped. */
void srv_access_log(struct srv_server *s, const struct srv_req *r, bool completed_ok);

#endif
