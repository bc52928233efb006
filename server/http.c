/* The libmicrohttpd daemon: connection lifecycle (body limits, auth, CORS, routing, request
 * completion), response helpers, the ticker thread (SSE pings, shutdown) and server start/stop.
 * The routes themselves live in routes_*.c and the streaming runner in sse.c. */
#include "http.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "chat_template.h"
#include "gguf.h"
#include "json.h"
#include "model.h"

/* ------------------------------------------------------------------ helpers */

void srv_make_id(const char *prefix, char *out, size_t cap)
{
    uint8_t rnd[16];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        /* Ids need to be unique, not secret: fall back to the clock. */
        int64_t t = srv_now_ns();
        for (size_t i = 0; i < sizeof rnd; i++)
            rnd[i] = (uint8_t)(t >> (8 * (i % 8))) ^ (uint8_t)(i * 37u);
    }
    char hex[33];
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    snprintf(out, cap, "%s%s", prefix, hex);
}

size_t srv_token_bytes(const struct eng_tokenizer *tok, int32_t id, char *out, size_t cap)
{
    if (!tok || cap == 0)
        return 0;
    int bv = eng_tokenizer_byte_value(tok, id);
    if (bv >= 0) {
        out[0] = (char)bv;
        return 1;
    }
    size_t plen = 0;
    const char *piece = eng_tokenizer_id_to_piece(tok, id, &plen);
    if (!piece)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < plen && n < cap;) {
        if (i + 3 <= plen && (unsigned char)piece[i] == 0xe2 && (unsigned char)piece[i + 1] == 0x96 &&
            (unsigned char)piece[i + 2] == 0x81) {
            out[n++] = ' ';
            i += 3;
        } else {
            out[n++] = piece[i++];
        }
    }
    return n;
}

void srv_token_text(const struct eng_tokenizer *tok, int32_t id, char *out, size_t cap)
{
    char raw[256];
    size_t n = srv_token_bytes(tok, id, raw, sizeof raw);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = eng_utf8_seq_len((const unsigned char *)raw + i, n - i);
        if (k == 0) {
            if (o + 4 > cap)
                break;
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
            continue;
        }
        if (raw[i] == '\0') { /* keep strings NUL-free */
            i++;
            continue;
        }
        if (o + k + 1 > cap)
            break;
        memcpy(out + o, raw + i, k);
        o += k;
        i += k;
    }
    out[o] = '\0';
}

double srv_logprob_value(float lp)
{
    if (!(lp > -9999.0f))
        return -9999.0;
    return (double)lp;
}

void srv_fill_sampling(const struct srv_sampling *s, struct eng_sampling_params *p,
                       struct eng_logit_bias *bias)
{
    eng_sampling_params_init_default(p);
    p->temperature = s->has_temperature ? (float)s->temperature : 1.0f;
    p->top_p = s->has_top_p ? (float)s->top_p : 1.0f;
    p->top_k = s->has_top_k ? s->top_k : 0;
    p->min_p = s->has_min_p ? (float)s->min_p : 0.0f;
    p->presence_penalty = (float)s->presence_penalty;
    p->frequency_penalty = (float)s->frequency_penalty;
    p->repetition_penalty = s->has_repetition_penalty ? (float)s->repetition_penalty : 1.0f;
    for (size_t i = 0; i < s->n_logit_bias; i++)
        bias[i] = (struct eng_logit_bias){s->logit_bias[i].token, s->logit_bias[i].bias};
    p->logit_bias = s->n_logit_bias ? bias : NULL;
    p->n_logit_bias = (int32_t)s->n_logit_bias;
    p->min_tokens = s->min_tokens;
    p->ignore_eos = s->ignore_eos;
    p->stop_token_ids = s->stop_token_ids;
    p->n_stop_token_ids = (int32_t)s->n_stop_token_ids;
    p->has_seed = s->has_seed;
    p->seed = s->seed;
}

int srv_respond_submit_error(struct srv_req *r, int eng_rc, const char *msg, const char *param)
{
    const char *m = msg && *msg ? msg : NULL;
    switch (eng_rc) {
    case ENG_ERR_QUEUE_FULL: return srv_respond_error(r, SRV_ERR_OVERLOADED, NULL, NULL);
    case ENG_ERR_DRAINING: return srv_respond_error(r, SRV_ERR_UNAVAILABLE, NULL, NULL);
    case ENG_ERR_NOMEM: return srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
    case ENG_ERR_CONTEXT: return srv_respond_error(r, SRV_ERR_CONTEXT_LENGTH, param, m ? "%s" : NULL, m);
    case ENG_ERR_INVALID: return srv_respond_error(r, SRV_ERR_INVALID_VALUE, NULL, m ? "%s" : NULL, m);
    default: return srv_respond_error(r, SRV_ERR_INTERNAL, NULL, NULL);
    }
}

/* ------------------------------------------------------------------ responses */

void srv_add_common_headers(const struct srv_req *r, struct MHD_Response *resp)
{
    if (r->id[0])
        MHD_add_response_header(resp, "X-Request-Id", r->id);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (r->origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->origin);
        MHD_add_response_header(resp, "Vary", "Origin");
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
    }
}

int srv_respond(struct srv_req *r, int status, const char *content_type, char *body, size_t len,
                const char *const *extra)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body ? body : (char *)"", body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    if (content_type)
        MHD_add_response_header(resp, "Content-Type", content_type);
    for (const char *const *h = extra; h && h[0] && h[1]; h += 2)
        MHD_add_response_header(resp, h[0], h[1]);
    srv_add_common_headers(r, resp);
    r->status = status;
    r->responded = true;
    srv_metrics_count_http(&r->srv->metrics, status);
    enum MHD_Result rc = MHD_queue_response(r->conn, (unsigned int)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

int srv_respond_json(struct srv_req *r, int status, struct cJSON *obj)
{
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!s)
        return srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
    return srv_respond(r, status, "application/json", s, strlen(s), NULL);
}

int srv_respond_error(struct srv_req *r, int code, const char *param, const char *fmt, ...)
{
    char msg[SRV_ERROR_MESSAGE_MAX] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    size_t need = srv_error_render(code, param, msg, NULL, 0);
    char *body = malloc(need + 1);
    if (!body)
        return MHD_NO;
    srv_error_render(code, param, msg, body, need + 1);
    int status = srv_error_status(code);
    const char *extra[8] = {0};
    int k = 0;
    if (status == 429 || status == 503) {
        extra[k++] = "Retry-After";
        extra[k++] = status == 429 ? "1" : "5";
    }
    if (status == 401) {
        extra[k++] = "WWW-Authenticate";
        extra[k++] = "Bearer";
    }
    if (status == 413 || status == 431) {
        extra[k++] = "Connection";
        extra[k++] = "close";
    }
    return srv_respond(r, status, "application/json", body, need, extra);
}

/* ------------------------------------------------------------------ routing */

enum route_id {
    R_NONE,
    R_CHAT,
    R_COMPLETIONS,
    R_MODELS,
    R_MODEL,
    R_TOKENIZE,
    R_DETOKENIZE,
    R_HEALTH,
    R_READY,
    R_DECODE,
    R_METRICS,
    R_VERSION,
};

struct route {
    const char *path;
    enum route_id id;
    bool post;      /* POST with a JSON body; otherwise GET (and HEAD) */
    bool is_public; /* no API key needed */
};

static const struct route routes[] = {
    {"/v1/chat/completions", R_CHAT, true, false},
    {"/v1/completions", R_COMPLETIONS, true, false},
    {"/v1/models", R_MODELS, false, false},
    {"/tokenize", R_TOKENIZE, true, false},
    {"/detokenize", R_DETOKENIZE, true, false},
    {"/health", R_HEALTH, false, true},
    {"/health/ready", R_READY, false, true},
    {"/health/decode", R_DECODE, false, true},
    {"/metrics", R_METRICS, false, false},
    {"/version", R_VERSION, false, false},
};

static const struct route model_route = {"/v1/models/", R_MODEL, false, false};

static const struct route *find_route(const char *path)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!strcmp(routes[i].path, path))
            return &routes[i];
    if (!strncmp(path, model_route.path, strlen(model_route.path)) && path[strlen(model_route.path)])
        return &model_route;
    return NULL;
}

static bool sane_request_id(const char *v)
{
    size_t n = 0;
    for (; v[n]; n++) {
        char c = v[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.' || c == ':'))
            return false;
    }
    return n >= 1 && n <= 64;
}

static const char *allowed_origin(const struct srv_server *s, const char *origin)
{
    if (!origin)
        return NULL;
    for (size_t i = 0; i < s->cfg->allowed_origins.n; i++)
        if (!strcmp(s->cfg->allowed_origins.v[i], origin))
            return s->cfg->allowed_origins.v[i];
    return NULL;
}

static bool json_content_type(const char *ct)
{
    if (!ct)
        return true; /* absent: take the body as JSON, as most servers do */
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strlen("application/json");
    if (strncasecmp(ct, "application/json", n) != 0)
        return false;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

static void init_req(struct srv_server *s, struct srv_req *r, struct MHD_Connection *c, const char *url,
                     const char *method)
{
    r->srv = s;
    r->conn = c;
    r->t_start_ns = srv_now_ns();
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->path, sizeof r->path, "%s", url);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, r->ip, sizeof r->ip);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, r->ip, sizeof r->ip);
    }
    if (!r->ip[0])
        snprintf(r->ip, sizeof r->ip, "-");
    const char *rid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (rid && sane_request_id(rid))
        snprintf(r->id, sizeof r->id, "%s", rid);
    else
        srv_make_id("req-", r->id, sizeof r->id);
    r->origin = allowed_origin(s, MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin"));
}

static int preflight(struct srv_req *r, const struct route *rt)
{
    const char *allow = rt->post ? "POST, OPTIONS" : "GET, HEAD, OPTIONS";
    if (!r->origin) {
        const char *extra[] = {"Allow", allow, NULL};
        return srv_respond(r, 204, NULL, NULL, 0, extra);
    }
    const char *extra[] = {"Allow", allow,
                           "Access-Control-Allow-Methods", allow,
                           "Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id",
                           "Access-Control-Max-Age", "600",
                           NULL};
    return srv_respond(r, 204, NULL, NULL, 0, extra);
}

/* Checks that need only the headers. Returns -1 to go on, else the MHD result of a response. */
static int check_headers(struct srv_req *r, const struct route *rt)
{
    struct srv_server *s = r->srv;
    bool is_get = !strcmp(r->method, "GET") || !strcmp(r->method, "HEAD");
    bool is_post = !strcmp(r->method, "POST");
    if (rt && !strcmp(r->method, "OPTIONS"))
        return preflight(r, rt);
    if (!(rt && rt->is_public) &&
        !srv_auth_check(&s->auth, MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization")))
        return srv_respond_error(r, SRV_ERR_INVALID_API_KEY, NULL, NULL);
    if (!rt)
        return srv_respond_error(r, SRV_ERR_NOT_FOUND, NULL, "No route for %s %.160s.", r->method, r->path);
    if ((rt->post && !is_post) || (!rt->post && !is_get)) {
        const char *allow = rt->post ? "POST, OPTIONS" : "GET, HEAD, OPTIONS";
        const char *extra[] = {"Allow", allow, NULL};
        char body[512];
        size_t n = srv_error_render(SRV_ERR_METHOD_NOT_ALLOWED, NULL, NULL, body, sizeof body);
        char *b = strdup(body);
        return srv_respond(r, 405, "application/json", b, b ? n : 0, extra);
    }
    /* Until the model is loaded only the health checks answer; a POST is refused on its
     * headers, before its body is read. */
    if (rt->id != R_HEALTH && rt->id != R_READY && rt->id != R_DECODE && !atomic_load(&s->loaded))
        return srv_respond_error(r, SRV_ERR_UNAVAILABLE, NULL, "The model is loading; retry shortly.");
    if (rt->post) {
        if (!json_content_type(MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Type")))
            return srv_respond_error(r, SRV_ERR_UNSUPPORTED_MEDIA_TYPE, NULL, NULL);
        const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
        /* Both framings at once is how requests are smuggled past proxies; MHD 0.9.75 lets the
         * chunked one win, we refuse the request outright. */
        if (cl && MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Transfer-Encoding"))
            return srv_respond_error(r, SRV_ERR_INVALID_VALUE, NULL,
                                     "Content-Length and Transfer-Encoding must not be sent together.");
        if (cl) {
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (errno == ERANGE || v > (unsigned long long)s->cfg->max_body_bytes)
                return srv_respond_error(r, SRV_ERR_REQUEST_TOO_LARGE, NULL,
                                         "The request body is larger than %lld bytes.",
                                         (long long)s->cfg->max_body_bytes);
        }
        if ((rt->id == R_CHAT || rt->id == R_COMPLETIONS) && atomic_load(&s->draining))
            return srv_respond_error(r, SRV_ERR_UNAVAILABLE, NULL, "The server is shutting down.");
    }
    return -1;
}

static int dispatch(struct srv_req *r, const struct route *rt)
{
    switch (rt->id) {
    case R_CHAT: return srv_route_chat(r);
    case R_COMPLETIONS: return srv_route_completions(r);
    case R_MODELS: return srv_route_models(r, NULL);
    case R_MODEL: return srv_route_models(r, r->path + strlen(model_route.path));
    case R_TOKENIZE: return srv_route_tokenize(r);
    case R_DETOKENIZE: return srv_route_detokenize(r);
    case R_HEALTH: return srv_route_health(r, false);
    case R_READY: return srv_route_health(r, true);
    case R_DECODE: return srv_route_health_decode(r);
    case R_METRICS: return srv_route_metrics(r);
    case R_VERSION: return srv_route_version(r);
    case R_NONE: break;
    }
    return srv_respond_error(r, SRV_ERR_NOT_FOUND, NULL, NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **req_cls)
{
    struct srv_server *s = cls;
    struct srv_req *r = *req_cls;
    (void)version;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        *req_cls = r;
        init_req(s, r, c, url, method);
        /* Requests with a body are judged on their headers before the body is read (413, 401,
         * 415 without reading megabytes); the others once they are complete, so that an error
         * answer keeps the connection alive. */
        if (strcmp(r->method, "POST") != 0)
            return MHD_YES;
        int rc = check_headers(r, find_route(r->path));
        return rc < 0 ? MHD_YES : (enum MHD_Result)rc;
    }
    if (r->gen)
        return (enum MHD_Result)srv_gen_poll(r->gen);
    if (r->responded)
        return MHD_YES;
    if (*upload_size) {
        /* Count every byte; keep them only while under the limit (chunked bodies have no
         * Content-Length to refuse up front). */
        if (!r->body_too_large) {
            if (r->body.len + *upload_size > (size_t)s->cfg->max_body_bytes) {
                r->body_too_large = true;
                srv_buf_free(&r->body);
            } else if (srv_buf_append(&r->body, upload, *upload_size) != 0) {
                r->body_too_large = true; /* treat memory exhaustion like an oversized body */
                srv_buf_free(&r->body);
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->body_too_large)
        return (enum MHD_Result)srv_respond_error(r, SRV_ERR_REQUEST_TOO_LARGE, NULL,
                                                  "The request body is larger than %lld bytes.",
                                                  (long long)s->cfg->max_body_bytes);
    const struct route *rt = find_route(r->path);
    if (strcmp(r->method, "POST") != 0) {
        int rc = check_headers(r, rt);
        if (rc >= 0)
            return (enum MHD_Result)rc;
    }
    return (enum MHD_Result)dispatch(r, rt);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls, enum MHD_RequestTerminationCode toe)
{
    struct srv_server *s = cls;
    struct srv_req *r = *req_cls;
    (void)c;
    if (!r)
        return;
    *req_cls = NULL;
    bool ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (r->gen) {
        /* The gen's last usage figures were copied into r while it ran. */
        srv_gen_finish(r->gen, ok);
        r->gen = NULL;
    }
    srv_access_log(s, r, ok);
    srv_buf_free(&r->body);
    free(r->log_prompt);
    free(r);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    fprintf(stderr, "phiserve: http: %s\n", line);
}

/* ------------------------------------------------------------------ ticker */

static void *ticker_main(void *arg)
{
    struct srv_server *s = arg;
    int64_t ping_ns = s->cfg->sse_ping_interval * 1000000000LL;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        if (s->stop)
            break;
        /* Pings idle streams, and ends parked connections whose client hung up: MHD does not
         * watch a suspended connection's socket, so this tick is how such a disconnect is
         * noticed (why this design: srv_gen_tick in sse.c). */
        int64_t now = srv_now_ns();
        for (struct srv_gen *g = s->gens; g; g = g->next)
            srv_gen_tick(g, now, ping_ns, false, false);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ------------------------------------------------------------------ lifecycle */

static char *read_text_file(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct srv_buf b = {0};
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + n > max || srv_buf_append(&b, chunk, n) != 0) {
            srv_buf_free(&b);
            fclose(f);
            return NULL;
        }
    }
    fclose(f);
    if (!b.p && srv_buf_append(&b, "", 1) == 0)
        b.len = 0;
    *len = b.len;
    return b.p;
}

/* A GGUF model's tokenizer.chat_template (*src NULL when it has none). */
static int gguf_template(const char *path, char **src, size_t *len, char *err, size_t errlen)
{
    struct eng_gguf *g = NULL;
    struct eng_gguf_str t;
    if (eng_gguf_open_file(path, &g, err, errlen) != 0)
        return -1;
    int rc = 0;
    if (eng_gguf_find_kv(g, "tokenizer.chat_template")) {
        if (eng_gguf_get_str(g, "tokenizer.chat_template", &t, err, errlen) != 0) {
            rc = -1;
        } else if (t.len > ENG_CHAT_MAX_TEMPLATE_BYTES) {
            snprintf(err, errlen, "the GGUF chat template is larger than %zu bytes",
                     ENG_CHAT_MAX_TEMPLATE_BYTES);
            rc = -1;
        } else if ((*src = malloc((size_t)t.len + 1)) == NULL) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
        } else {
            memcpy(*src, t.data, (size_t)t.len);
            (*src)[t.len] = '\0';
            *len = (size_t)t.len;
        }
    }
    eng_gguf_close(g);
    return rc;
}

/* The template source: --chat-template, else for a GGUF file its tokenizer.chat_template, else
 * chat_template.jinja, else tokenizer_config.json's
 * chat_template (a string, or a list of {name, template} where "default" is taken). *src is
 * NULL (and 0 returned) when the model has none. */
static int find_template(const struct srv_config *cfg, char **src, size_t *len, char *err, size_t errlen)
{
    char path[4096];
    *src = NULL;
    if (cfg->chat_template) {
        *src = read_text_file(cfg->chat_template, ENG_CHAT_MAX_TEMPLATE_BYTES, len);
        if (!*src) {
            snprintf(err, errlen, "cannot read --chat-template '%s'", cfg->chat_template);
            return -1;
        }
        return 0;
    }
    if (eng_model_is_gguf(cfg->model_dir))
        return gguf_template(cfg->model_dir, src, len, err, errlen);
    snprintf(path, sizeof path, "%s/chat_template.jinja", cfg->model_dir);
    if ((*src = read_text_file(path, ENG_CHAT_MAX_TEMPLATE_BYTES, len)) != NULL)
        return 0;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", cfg->model_dir);
    size_t jl = 0;
    char *json = read_text_file(path, (size_t)64 << 20, &jl);
    if (!json)
        return 0;
    cJSON *root = cJSON_ParseWithLength(json, jl);
    free(json);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
    const char *text = NULL;
    if (cJSON_IsString(t)) {
        text = t->valuestring;
    } else if (cJSON_IsArray(t)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, t)
        {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
            const cJSON *tp = cJSON_GetObjectItemCaseSensitive(it, "template");
            if (cJSON_IsString(nm) && cJSON_IsString(tp) && !strcmp(nm->valuestring, "default"))
                text = tp->valuestring;
        }
    }
    if (text) {
        *src = strdup(text);
        *len = strlen(text);
    }
    cJSON_Delete(root);
    if (text && !*src) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static char *token_string(const struct eng_tokenizer *tok, int32_t id)
{
    size_t n = 0;
    const char *p = id >= 0 && tok ? eng_tokenizer_id_to_piece(tok, id, &n) : NULL;
    return strdup(p ? p : "");
}

int srv_server_create(const struct srv_config *cfg, struct eng_engine *eng, struct srv_server **out,
                      char *err, size_t errlen)
{
    *out = NULL;
    struct srv_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->cfg = cfg;
    s->model_name = cfg->served_model_name;
    s->model_names[0] = s->model_name;
    s->created = (int64_t)time(NULL);
    atomic_init(&s->loaded, false);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->log_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    srv_metrics_init(&s->metrics);
    atomic_init(&s->draining, false);
    atomic_init(&s->next_id, 1);

    srv_limits_default(&s->limits);
    s->limits.max_n = (int32_t)cfg->max_n;
    s->limits.model_names = s->model_names;
    s->limits.n_model_names = 1;
    s->limits.json_max_bytes = 0;

    if (srv_auth_init(&s->auth, &cfg->api_keys) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (eng && srv_server_set_engine(s, eng, err, errlen) != 0)
        goto fail;
    *out = s;
    return 0;
fail:
    srv_server_destroy(s, 0);
    return -1;
}

/* Whether the chat template renders a system message: one probe render (tool calling puts
 * the tools' description there, or before the first user message when it would be lost). */
static bool template_shows_system(const struct srv_server *s)
{
    static const char probe[] = "phiserve-system-probe";
    cJSON *msgs = cJSON_Parse("[{\"role\": \"system\", \"content\": \"phiserve-system-probe\"},"
                              " {\"role\": \"user\", \"content\": \"x\"}]");
    struct eng_chat_input in = {.messages = msgs, .bos_token = s->bos_text,
                                .eos_token = s->eos_text, .add_generation_prompt = true};
    char *text = NULL, err[64];
    size_t len = 0;
    bool shown = msgs && eng_chat_template_render(s->tmpl, &in, NULL, &text, &len, err, sizeof err) == 0 &&
                 strstr(text, probe) != NULL;
    free(text);
    cJSON_Delete(msgs);
    return shown;
}

int srv_server_set_engine(struct srv_server *s, struct eng_engine *eng, char *err, size_t errlen)
{
    const struct srv_config *cfg = s->cfg;
    if (atomic_load(&s->loaded)) {
        snprintf(err, errlen, "the server already has an engine");
        return -1;
    }
    s->eng = eng;
    s->tok = eng_engine_tokenizer(eng);
    s->mcfg = eng_engine_model_config(eng);
    s->ctx_len = (int32_t)s->mcfg->max_position_embeddings;
    s->limits.vocab_size = (int32_t)s->mcfg->vocab_size;
    if (s->tok) {
        const struct eng_tokenizer_info *ti = eng_tokenizer_get_info(s->tok);
        s->bos_text = token_string(s->tok, ti->bos_id);
        s->eos_text = token_string(s->tok, ti->eos_id);
        if (!s->bos_text || !s->eos_text) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        char *src = NULL;
        size_t len = 0;
        if (find_template(cfg, &src, &len, err, errlen) != 0)
            return -1;
        if (src) {
            char perr[512];
            int rc = eng_chat_template_parse(src, len, NULL, &s->tmpl, perr, sizeof perr);
            free(src);
            if (rc != 0) {
                snprintf(err, errlen, "chat template: %s", perr);
                return -1;
            }
            s->tmpl_system = template_shows_system(s);
        }
    } else if (cfg->chat_template) {
        snprintf(err, errlen, "--chat-template: the model has no tokenizer");
        return -1;
    }
    /* Publishes everything above to the daemon's threads (a sequentially consistent store; the
     * routes load the flag before they touch any of it). */
    atomic_store(&s->loaded, true);
    return 0;
}

static int make_addr(const char *host, uint16_t port, struct sockaddr_storage *ss, bool *v6, char *err,
                     size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char ps[8];
    snprintf(ps, sizeof ps, "%u", (unsigned)port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "--host '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return 0;
}

int srv_server_start(struct srv_server *s, uint16_t *port, char *err, size_t errlen)
{
    const struct srv_config *cfg = s->cfg;
    struct sockaddr_storage ss;
    bool v6 = false;
    if (make_addr(cfg->host, (uint16_t)cfg->port, &ss, &v6, err, errlen) != 0)
        return -1;
    unsigned int base = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
                        MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    /* epoll where the library has it, else whatever it picks */
    const unsigned int pollers[2] = {MHD_USE_EPOLL, MHD_USE_AUTO};
    for (int i = 0; i < 2 && !s->daemon; i++) {
        struct MHD_OptionItem ops[] = {
            {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL},
            {MHD_OPTION_SOCK_ADDR, 0, &ss},
            {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s},
            {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)cfg->max_connections, NULL},
            {MHD_OPTION_PER_IP_CONNECTION_LIMIT, (intptr_t)cfg->per_ip_connections, NULL},
            {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)cfg->timeout, NULL},
            /* request line + headers must fit here; MHD answers 431/414 itself otherwise */
            {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)(32 * 1024), NULL},
            {MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL},
            /* 0.9.75 predates MHD_OPTION_CLIENT_DISCIPLINE_LVL; this is its level-1 equivalent */
            {MHD_OPTION_STRICT_FOR_CLIENT, 1, NULL},
            {MHD_OPTION_SIGPIPE_HANDLED_BY_APP, 1, NULL},
            {cfg->http_threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
             (intptr_t)cfg->http_threads, NULL},
            {MHD_OPTION_END, 0, NULL},
        };
        s->daemon = MHD_start_daemon(base | pollers[i], 0, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, ops,
                                     MHD_OPTION_END);
    }
    if (!s->daemon) {
        snprintf(err, errlen, "cannot listen on %s:%lld (address in use or not available?)", cfg->host,
                 (long long)cfg->port);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : (uint16_t)cfg->port;
    *port = s->port;
    if (pthread_create(&s->ticker, NULL, ticker_main, s) != 0) {
        snprintf(err, errlen, "cannot start the ticker thread");
        return -1;
    }
    s->ticker_started = true;
    return 0;
}

void srv_server_drain(struct srv_server *s)
{
    atomic_store(&s->draining, true);
    if (atomic_load(&s->loaded))
        eng_engine_drain(s->eng);
}

int64_t srv_server_active(struct srv_server *s)
{
    pthread_mutex_lock(&s->mu);
    int64_t n = s->n_active;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void wait_idle(struct srv_server *s, int wait_ms)
{
    int64_t deadline = srv_now_ns() + (int64_t)wait_ms * 1000000;
    pthread_mutex_lock(&s->mu);
    while (s->n_active > 0 && srv_now_ns() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
}

void srv_server_destroy(struct srv_server *s, int wait_ms)
{
    if (!s)
        return;
    if (s->daemon) {
        /* Cancel what runs: the engine finishes the handles with ABORT and wakes their
         * connections, whose streams end with an error event. */
        pthread_mutex_lock(&s->mu);
        int64_t now = srv_now_ns();
        for (struct srv_gen *g = s->gens; g; g = g->next)
            srv_gen_tick(g, now, INT64_MAX, true, true);
        pthread_mutex_unlock(&s->mu);
        wait_idle(s, wait_ms);
    }
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->ticker_started)
        pthread_join(s->ticker, NULL);
    if (s->daemon) {
        /* MHD must not be stopped with suspended connections: resume every one, and let the
         * daemon thread run their readers (which end them) before stopping. */
        for (int round = 0; round < 20; round++) {
            pthread_mutex_lock(&s->mu);
            bool any = s->gens != NULL;
            int64_t now = srv_now_ns();
            for (struct srv_gen *g = s->gens; g; g = g->next)
                srv_gen_tick(g, now, INT64_MAX, true, true);
            pthread_mutex_unlock(&s->mu);
            if (!any)
                break;
            struct timespec ts = {0, 25000000};
            nanosleep(&ts, NULL);
        }
        MHD_stop_daemon(s->daemon);
    }
    eng_chat_template_destroy(s->tmpl);
    free(s->bos_text);
    free(s->eos_text);
    srv_auth_free(&s->auth);
    srv_metrics_destroy(&s->metrics);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->log_mu);
    free(s);
}
