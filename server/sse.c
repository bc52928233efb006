/* SSE framing and the generation runner (see sse.h). The locking contract that makes
 * suspend/resume race-free: the reader checks for events and suspends under g->mu, and the
 * engine's wake resumes under g->mu, so a wake either finds the event already taken or the
 * connection already suspended. Not the OpenAI chunk formats (routes_chat.c, routes_completions.c). */
#include "sse.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "http.h"

int64_t srv_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int srv_buf_append(struct srv_buf *b, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    if (len > SIZE_MAX - b->len - 1)
        return -1;
    size_t need = b->len + len + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
    return 0;
}

int srv_buf_puts(struct srv_buf *b, const char *s)
{
    return srv_buf_append(b, s, strlen(s));
}

void srv_buf_free(struct srv_buf *b)
{
    free(b->p);
    *b = (struct srv_buf){0};
}

int srv_sse_write_json(struct srv_buf *b, const struct cJSON *obj)
{
    char *s = cJSON_PrintUnformatted(obj);
    if (!s)
        return -1;
    int rc = srv_buf_puts(b, "data: ") || srv_buf_puts(b, s) || srv_buf_puts(b, "\n\n") ? -1 : 0;
    free(s);
    return rc;
}

int srv_buf_set_json(struct srv_buf *b, struct cJSON *obj)
{
    char *s = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!s)
        return -1;
    b->len = 0;
    int rc = srv_buf_puts(b, s);
    free(s);
    return rc;
}

int srv_sse_write_done(struct srv_buf *b)
{
    return srv_buf_puts(b, "data: [DONE]\n\n");
}

int srv_sse_write_ping(struct srv_buf *b)
{
    return srv_buf_puts(b, ": ping\n\n");
}

int srv_sse_write_error(struct srv_buf *b, int code, const char *message)
{
    char body[1024];
    size_t n = srv_error_render(code, NULL, message, body, sizeof body);
    if (n >= sizeof body)
        n = srv_error_render(code, NULL, NULL, body, sizeof body);
    return srv_buf_puts(b, "data: ") || srv_buf_append(b, body, n) || srv_buf_puts(b, "\n\n") ? -1 : 0;
}

/* ------------------------------------------------------------------ runner */

/* Test-only fault injection (catalogue H7: an engine error mid-stream). When the environment
 * holds PHISERVE_TEST_FAULT_AFTER_TOKENS=N (N > 0), every generation fails like an engine error
 * (ENG_FINISH_ERROR) once it has produced N tokens: the stream gets an error event, a
 * non-stream request a 500. The engine has no error a test could trigger on purpose, so this
 * is the only way to drive that path end to end (tests/http/test_catalogue.py). Read per
 * request, not cached: no global state. Unset or not a positive integer: off. */
static int64_t fault_after_tokens(void)
{
    const char *v = getenv("PHISERVE_TEST_FAULT_AFTER_TOKENS");
    if (!v || !*v)
        return 0;
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    return *end == '\0' && n > 0 ? (int64_t)n : 0;
}

struct srv_gen *srv_gen_create(struct srv_req *r, const struct srv_gen_ops *ops, void *ctx,
                               int n_handles, bool stream)
{
    struct srv_gen *g = calloc(1, sizeof *g);
    if (!g || n_handles < 1) {
        free(g);
        if (ops->destroy)
            ops->destroy(ctx);
        return NULL;
    }
    g->h = calloc((size_t)n_handles, sizeof *g->h);
    g->h_done = calloc((size_t)n_handles, sizeof *g->h_done);
    if (!g->h || !g->h_done) {
        free(g->h);
        free(g->h_done);
        free(g);
        if (ops->destroy)
            ops->destroy(ctx);
        return NULL;
    }
    pthread_mutex_init(&g->mu, NULL);
    g->srv = r->srv;
    g->req = r;
    g->conn = r->conn;
    g->ops = ops;
    g->ctx = ctx;
    g->refs = 1;
    g->stream = stream;
    g->n_handles = n_handles;
    g->t_start_ns = r->t_start_ns;
    g->last_write_ns = srv_now_ns();
    g->fault_after_tokens = fault_after_tokens();
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    g->fd = ci ? ci->connect_fd : -1;
    return g;
}

static void gen_free(struct srv_gen *g)
{
    if (g->ops->destroy)
        g->ops->destroy(g->ctx);
    srv_buf_free(&g->out);
    free(g->h);
    free(g->h_done);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static void gen_unref(struct srv_gen *g)
{
    pthread_mutex_lock(&g->mu);
    int left = --g->refs;
    pthread_mutex_unlock(&g->mu);
    if (left == 0)
        gen_free(g);
}

void srv_gen_abandon(struct srv_gen *g)
{
    for (int i = 0; i < g->n_handles; i++)
        if (g->h[i])
            eng_handle_release(g->h[i]);
    gen_free(g);
}

static void list_add(struct srv_gen *g)
{
    struct srv_server *s = g->srv;
    pthread_mutex_lock(&s->mu);
    g->next = s->gens;
    if (s->gens)
        s->gens->prev = g;
    s->gens = g;
    s->n_active++;
    pthread_mutex_unlock(&s->mu);
}

static void list_remove(struct srv_gen *g)
{
    struct srv_server *s = g->srv;
    pthread_mutex_lock(&s->mu);
    if (g->prev)
        g->prev->next = g->next;
    else if (s->gens == g)
        s->gens = g->next;
    if (g->next)
        g->next->prev = g->prev;
    g->prev = g->next = NULL;
    s->n_active--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Ends the generation with an error (mu held). */
static void gen_fail(struct srv_gen *g, int code, const char *msg)
{
    if (g->done)
        return;
    g->done = true;
    g->failed = true;
    g->fail_code = code;
    for (int i = 0; i < g->n_handles; i++)
        if (!g->h_done[i])
            eng_handle_cancel(g->h[i]);
    if (g->stream) {
        /* Headers are out: the error becomes an event and the stream ends without [DONE]. */
        if (srv_sse_write_error(&g->out, code, msg) != 0)
            g->out.len = g->out_pos; /* nothing more can be said; the stream just ends */
    }
}

/* Takes every pending event (mu held). */
static void gen_pump(struct srv_gen *g)
{
    if (g->done)
        return;
    bool all = true;
    for (int i = 0; i < g->n_handles && !g->done; i++) {
        if (g->h_done[i])
            continue;
        const struct eng_event *ev = NULL;
        int k;
        while ((k = eng_handle_next(g->h[i], &ev)) == 1) {
            if (g->fault_after_tokens > 0 && g->n_tokens >= g->fault_after_tokens) {
                g->finish = ENG_FINISH_ERROR;
                gen_fail(g, SRV_ERR_INTERNAL, "Injected engine fault (PHISERVE_TEST_FAULT_AFTER_TOKENS).");
                return;
            }
            if (ev->finish == ENG_FINISH_ERROR) {
                g->finish = ENG_FINISH_ERROR;
                gen_fail(g, SRV_ERR_INTERNAL, ev->error && *ev->error ? ev->error : NULL);
                return;
            }
            if (ev->finish == ENG_FINISH_ABORT) {
                g->finish = ENG_FINISH_ABORT;
                gen_fail(g, SRV_ERR_UNAVAILABLE, "The request was aborted: the server is shutting down.");
                return;
            }
            if (ev->n_tokens > 0) {
                int64_t now = srv_now_ns();
                if (g->t_first_ns == 0) {
                    g->t_first_ns = now;
                } else if (g->t_last_ns) {
                    srv_metrics_observe_itl(&g->srv->metrics, (double)(now - g->t_last_ns) * 1e-9 / ev->n_tokens,
                                            ev->n_tokens);
                }
                g->t_last_ns = now;
                g->n_tokens += ev->n_tokens;
            }
            if (ev->finish != ENG_FINISH_NONE)
                g->finish = ev->finish;
            if (g->ops->on_event(g, i, ev) != 0) {
                gen_fail(g, SRV_ERR_NO_MEMORY, NULL);
                return;
            }
        }
        if (k < 0)
            g->h_done[i] = true;
        else
            all = false;
    }
    if (all && !g->done) {
        g->usage = (struct eng_usage){0};
        for (int i = 0; i < g->n_handles; i++) {
            struct eng_usage u;
            eng_handle_usage(g->h[i], &u);
            g->usage.prompt_tokens += u.prompt_tokens;
            g->usage.completion_tokens += u.completion_tokens;
            g->usage.cached_tokens += u.cached_tokens;
        }
        if (g->req) {
            g->req->prompt_tokens = g->usage.prompt_tokens;
            g->req->completion_tokens = g->usage.completion_tokens;
        }
        g->done = true;
        if (g->ops->on_done(g) != 0)
            gen_fail(g, SRV_ERR_NO_MEMORY, NULL);
    }
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct srv_gen *g = cls;
    (void)pos;
    pthread_mutex_lock(&g->mu);
    if (g->closed || g->peer_gone) {
        pthread_mutex_unlock(&g->mu);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (g->out_pos == g->out.len) {
        g->out_pos = g->out.len = 0;
        gen_pump(g);
        if (g->out.len == 0 && g->ping_due && !g->done)
            srv_sse_write_ping(&g->out);
    }
    g->ping_due = false;
    size_t avail = g->out.len - g->out_pos;
    if (avail > 0) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, g->out.p + g->out_pos, n);
        g->out_pos += n;
        g->last_write_ns = srv_now_ns();
        pthread_mutex_unlock(&g->mu);
        return (ssize_t)n;
    }
    if (g->done) {
        pthread_mutex_unlock(&g->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    /* Nothing to say yet: park the connection until the engine (or the ticker) wakes it. */
    g->suspended = true;
    MHD_suspend_connection(g->conn);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

static void stream_free(void *cls)
{
    gen_unref(cls);
}

void srv_gen_wake(void *user)
{
    struct srv_gen *g = user;
    pthread_mutex_lock(&g->mu);
    if (g->suspended && !g->closed) {
        g->suspended = false;
        MHD_resume_connection(g->conn);
    }
    pthread_mutex_unlock(&g->mu);
}

/* Non-stream: answer when done, else suspend (mu held). */
static int poll_locked(struct srv_gen *g)
{
    if (g->peer_gone)
        return MHD_NO; /* MHD closes the connection; on_completed cancels and releases */
    gen_pump(g);
    if (!g->done) {
        g->suspended = true;
        MHD_suspend_connection(g->conn);
        return MHD_YES;
    }
    if (g->responded)
        return MHD_YES;
    g->responded = true;
    if (g->failed)
        return srv_respond_error(g->req, g->fail_code, NULL, NULL);
    char *body = g->out.p;
    size_t len = g->out.len;
    g->out = (struct srv_buf){0};
    return srv_respond(g->req, 200, "application/json", body, len, NULL);
}

int srv_gen_start(struct srv_gen *g, const struct srv_buf *pre)
{
    struct srv_req *r = g->req;
    r->gen = g;
    list_add(g);
    if (!g->stream) {
        pthread_mutex_lock(&g->mu);
        int rc = poll_locked(g);
        pthread_mutex_unlock(&g->mu);
        return rc;
    }
    if (pre && pre->len && srv_buf_append(&g->out, pre->p, pre->len) != 0)
        return srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
    /* Small blocks: each SSE event goes out as soon as it exists. */
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader,
                                                                  g, stream_free);
    if (!resp)
        return srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
    pthread_mutex_lock(&g->mu);
    g->refs++;
    pthread_mutex_unlock(&g->mu);
    MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    srv_add_common_headers(r, resp);
    r->status = 200;
    r->responded = true;
    srv_metrics_count_http(&r->srv->metrics, 200);
    enum MHD_Result rc = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return rc;
}

int srv_gen_poll(struct srv_gen *g)
{
    pthread_mutex_lock(&g->mu);
    int rc = poll_locked(g);
    pthread_mutex_unlock(&g->mu);
    return rc;
}

void srv_gen_finish(struct srv_gen *g, bool toe_ok)
{
    list_remove(g);
    pthread_mutex_lock(&g->mu);
    g->closed = true;
    g->req = NULL;
    bool finished = g->done && !g->failed;
    int64_t now = srv_now_ns();
    double e2e = (double)(now - g->t_start_ns) * 1e-9;
    double ttft = g->t_first_ns ? (double)(g->t_first_ns - g->t_start_ns) * 1e-9 : -1.0;
    enum eng_finish_reason f = finished ? g->finish : (g->failed ? g->finish : ENG_FINISH_ABORT);
    if (f == ENG_FINISH_NONE)
        f = ENG_FINISH_ABORT;
    pthread_mutex_unlock(&g->mu);
    /* Released outside g->mu: eng_handle_release waits for a running wake, which takes g->mu.
     * closed is set, so such a wake no longer touches the connection. The client went away
     * (or the response failed) before the end: cancel first, so the work stops now. */
    for (int i = 0; i < g->n_handles; i++) {
        if (!toe_ok || !g->h_done[i])
            eng_handle_cancel(g->h[i]);
        eng_handle_release(g->h[i]);
    }
    pthread_mutex_lock(&g->mu);
    for (int i = 0; i < g->n_handles; i++)
        g->h[i] = NULL;
    pthread_mutex_unlock(&g->mu);
    srv_metrics_observe(&g->srv->metrics, ttft, e2e, f);
    gen_unref(g);
}

/* Whether the client of a parked connection hung up: its socket reads end-of-file (FIN) or an
 * error (RST). Pending bytes (a pipelined request) are not a hang-up. */
static bool peer_hung_up(int fd)
{
    if (fd < 0)
        return false;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return true;
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

void srv_gen_tick(struct srv_gen *g, int64_t now_ns, int64_t ping_ns, bool cancel, bool resume)
{
    pthread_mutex_lock(&g->mu);
    /* Client disconnects while a connection is parked. MHD 0.9.75 does not watch the socket of
     * a suspended connection, and MHD_OPTION_NOTIFY_COMPLETED fires only once it is resumed
     * and closed. A non-stream request waiting in the queue or in a long prefill gets no wake
     * at all, so it ran to the end for nobody; a decoding one is resumed by every engine step,
     * and MHD noticed the close late, if at all. Keeping it resumed with a callback response
     * would commit a 200 status before the result is known, and a reader with nothing to say
     * would spin. So the ticker (every 250 ms) peeks at the socket of each parked connection:
     * one non-blocking recv(MSG_PEEK) per parked request and tick, no extra thread or fd set.
     * On a hang-up the handles are cancelled at once (KV blocks return within one engine
     * step) and the connection is resumed so that MHD ends it: the access handler answers
     * MHD_NO, the stream reader END_WITH_ERROR. As in nginx, a half-close (FIN) counts as a
     * hang-up: over TCP it cannot be told from a close until the server writes. The fd is
     * valid here: MHD closes it only after on_completed, which sets g->closed under g->mu. */
    if (g->suspended && !g->closed && !g->peer_gone && peer_hung_up(g->fd)) {
        g->peer_gone = true;
        cancel = true;
        resume = true;
    }
    if (cancel) {
        for (int i = 0; i < g->n_handles; i++)
            if (g->h[i] && !g->h_done[i])
                eng_handle_cancel(g->h[i]);
    }
    bool wake = resume;
    if (g->stream && !g->done && now_ns - g->last_write_ns >= ping_ns) {
        g->ping_due = true;
        wake = true;
    }
    if (wake && g->suspended && !g->closed) {
        g->suspended = false;
        MHD_resume_connection(g->conn);
    }
    pthread_mutex_unlock(&g->mu);
}
