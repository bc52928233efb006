/* Server-sent events and the generation runner behind every completion response: a growable
 * byte buffer with SSE framing (`data: {...}\n\n`, `data: [DONE]`, `: ping` comments, error
 * events), and struct srv_gen, which ties engine handles to one MHD connection: it drains the
 * handles' events through route-specific callbacks, suspends the connection when nothing is
 * pending and is resumed by the engine's wake callback. It knows no OpenAI chunk shapes (the
 * routes format those) and does no routing or parsing. */
#ifndef PHISERVE_SERVER_SSE_H
#define PHISERVE_SERVER_SSE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

struct cJSON;
struct MHD_Connection;
struct srv_server;
struct srv_req;

/* A growable byte buffer; zero-initialised is empty. */
struct srv_buf {
    char *p;    /* [cap] owned; NUL-terminated when len > 0 */
    size_t len;
    size_t cap;
};

/* Append bytes / a string; return 0 or -1 (out of memory; the buffer is unchanged). */
int srv_buf_append(struct srv_buf *b, const void *data, size_t len);
int srv_buf_puts(struct srv_buf *b, const char *s);
void srv_buf_free(struct srv_buf *b);

/* SSE framing into b. Each returns 0 or -1 (out of memory). */
int srv_sse_write_json(struct srv_buf *b, const struct cJSON *obj); /* data: <compact json>\n\n */
/* Replaces b's contents with obj as compact JSON (a whole non-streamed body) and deletes obj
 * (callee takes it, also on failure). Returns 0 or -1. */
int srv_buf_set_json(struct srv_buf *b, struct cJSON *obj);
int srv_sse_write_done(struct srv_buf *b);                          /* data: [DONE]\n\n */
int srv_sse_write_ping(struct srv_buf *b);                          /* : ping\n\n */
int srv_sse_write_error(struct srv_buf *b, int code, const char *message); /* data: {"error":..}\n\n */

/* Route callbacks of one generation; all run with g->mu held on an MHD thread. */
struct srv_gen;
struct srv_gen_ops {
    /* One event of handle hi (choice ev->choice), never ENG_FINISH_ABORT / _ERROR (the runner
     * turns those into an error). Stream: append SSE chunks to g->out; else accumulate.
     * Returns 0 or -1 (out of memory). */
    int (*on_event)(struct srv_gen *g, int hi, const struct eng_event *ev);
    /* Once, after every handle finished: stream: the usage chunk and [DONE]; otherwise the
     * whole JSON body into g->out. Returns 0 or -1. */
    int (*on_done)(struct srv_gen *g);
    /* Frees ctx; may be NULL. */
    void (*destroy)(void *ctx);
};

struct srv_gen {
    struct srv_server *srv;
    struct srv_req *req;             /* NULL once MHD finished the request */
    struct MHD_Connection *conn;
    const struct srv_gen_ops *ops;
    void *ctx;                       /* route state, owned (ops->destroy) */
    pthread_mutex_t mu;              /* guards everything below against the wake and ticker */
    int refs;                        /* the request's and the streaming response's */
    bool stream;
    bool suspended;                  /* conn suspended by us and not resumed yet */
    bool closed;                     /* the request finished: conn must not be resumed */
    bool done;                       /* every handle finished and on_done ran, or failed */
    bool failed;                     /* ended by an error (fail_code) */
    bool responded;                  /* non-stream: the response was queued */
    bool ping_due;
    bool peer_gone;                  /* the ticker saw the client hang up while parked */
    int fd;                          /* the connection's socket (-1: unknown); MHD owns it */
    int fail_code;                   /* SRV_ERR_* when failed */
    int n_handles;
    struct eng_handle **h;           /* [n_handles]; released when the request finishes */
    bool *h_done;                    /* [n_handles] */
    struct srv_buf out;              /* stream: SSE bytes not yet given to MHD; else the body */
    size_t out_pos;
    int64_t t_start_ns, t_first_ns, t_last_ns, last_write_ns;
    int64_t n_tokens;
    int64_t fault_after_tokens;      /* test-only fault injection (sse.c): 0 = off */
    enum eng_finish_reason finish;   /* the last choice's finish (for metrics) */
    struct eng_usage usage;          /* summed over handles, filled before on_done */
    struct srv_gen *prev, *next;     /* the server's list of running generations */
};

/* Creates a generation for request r with n_handles empty handle slots (the route fills g->h
 * by eng_engine_submit with srv_gen_wake and g as the wake argument). ctx: callee takes (freed
 * with ops->destroy, also on failure). Returns NULL when out of memory. */
struct srv_gen *srv_gen_create(struct srv_req *r, const struct srv_gen_ops *ops, void *ctx,
                               int n_handles, bool stream);

/* Frees a generation that was never started (after a failed submit): cancels and releases the
 * handles submitted so far. */
void srv_gen_abandon(struct srv_gen *g);

/* Starts the response: stream: queues a 200 text/event-stream response whose reader pulls from
 * the handles; otherwise polls once and suspends the connection until the engine wakes it.
 * pre (may be NULL, callee takes a copy) is written to the stream first (role chunks).
 * Returns the MHD result for the access handler. */
int srv_gen_start(struct srv_gen *g, const struct srv_buf *pre);

/* Non-stream: called by the access handler when the connection was resumed. */
int srv_gen_poll(struct srv_gen *g);

/* The engine's wake callback (user = the srv_gen). */
void srv_gen_wake(void *user);

/* MHD finished the request (toe_ok: completed normally). Cancels unfinished handles, releases
 * every handle exactly once, records metrics, and drops the request's reference. */
void srv_gen_finish(struct srv_gen *g, bool toe_ok);

/* Ticker (server thread, server list lock held): marks a ping due on a stream idle for
 * ping_ns and resumes it; cancel: cancels the handles (shutdown). A parked (suspended)
 * connection whose client hung up has its handles cancelled and is resumed, and MHD then
 * closes it (stream or not). */
void srv_gen_tick(struct srv_gen *g, int64_t now_ns, int64_t ping_ns, bool cancel, bool resume);

int64_t srv_now_ns(void);

#endif
