/* The CPU worker pool behind struct kern_ctx: persistent pthreads that run one parallel-for at
 * a time, handing out task indices through an atomic counter (the caller works too).
 * Not a general job system: no queues, no nesting, no futures. */
#include <stdatomic.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "cpu.h"

struct kern_pool {
    pthread_mutex_t mu;
    pthread_cond_t wake;       /* workers wait here for a new generation or stop */
    pthread_cond_t done;       /* the caller waits here for busy == 0 */
    pthread_mutex_t run_mu;    /* serialises callers of kern_cpu_parallel_for */
    pthread_t *workers;        /* [n_workers] */
    int n_workers;             /* threads besides the caller */
    int n_started;
    int stop;
    uint64_t generation;
    int busy;                  /* workers not yet finished with the current generation */
    /* The current job, valid while busy > 0 or the caller is working on it. */
    void (*fn)(void *arg, int64_t task, int thread);
    void *arg;
    int64_t n_tasks;
    atomic_int_fast64_t next;
};

static void drain(struct kern_pool *pool, void (*fn)(void *, int64_t, int), void *arg,
                  int64_t n_tasks, int thread)
{
    for (;;) {
        int64_t t = atomic_fetch_add(&pool->next, 1);
        if (t >= n_tasks)
            return;
        fn(arg, t, thread);
    }
}

struct worker_start {
    struct kern_pool *pool;
    int thread;
};

static void *worker_main(void *p)
{
    struct worker_start *ws = p;
    struct kern_pool *pool = ws->pool;
    int thread = ws->thread;
    free(ws);
    uint64_t seen = 0;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (!pool->stop && pool->generation == seen)
            pthread_cond_wait(&pool->wake, &pool->mu);
        if (pool->stop)
            break;
        seen = pool->generation;
        void (*fn)(void *, int64_t, int) = pool->fn;
        void *arg = pool->arg;
        int64_t n_tasks = pool->n_tasks;
        pthread_mutex_unlock(&pool->mu);
        drain(pool, fn, arg, n_tasks, thread);
        pthread_mutex_lock(&pool->mu);
        if (--pool->busy == 0)
            pthread_cond_signal(&pool->done);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

static void pool_destroy(struct kern_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->stop = 1;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->n_started; i++)
        pthread_join(pool->workers[i], NULL);
    free(pool->workers);
    pthread_cond_destroy(&pool->wake);
    pthread_cond_destroy(&pool->done);
    pthread_mutex_destroy(&pool->mu);
    pthread_mutex_destroy(&pool->run_mu);
    free(pool);
}

static struct kern_pool *pool_create(int n_threads)
{
    struct kern_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    if (pthread_mutex_init(&pool->mu, NULL)) {
        free(pool);
        return NULL;
    }
    /* With default attributes these inits cannot fail on Linux; if one ever did, the pool
     * would be unusable, so it is torn down at once (before any thread exists). */
    int bad = pthread_mutex_init(&pool->run_mu, NULL) != 0;
    bad |= pthread_cond_init(&pool->wake, NULL) != 0;
    bad |= pthread_cond_init(&pool->done, NULL) != 0;
    atomic_init(&pool->next, 0);
    pool->n_workers = n_threads - 1;
    pool->workers = calloc((size_t)pool->n_workers + 1, sizeof *pool->workers);
    if (bad || !pool->workers)
        goto fail;
    for (int i = 0; i < pool->n_workers; i++) {
        struct worker_start *ws = malloc(sizeof *ws);
        if (!ws)
            goto fail;
        ws->pool = pool;
        ws->thread = i + 1; /* the caller is thread 0 */
        if (pthread_create(&pool->workers[i], NULL, worker_main, ws)) {
            free(ws);
            goto fail;
        }
        pool->n_started++;
    }
    return pool;
fail:
    pool_destroy(pool);
    return NULL;
}

struct kern_ctx *kern_ctx_create_cpu(int n_threads)
{
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (n > 1024 ? 1024 : (int)n) : 1;
    }
    struct kern_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    if (n_threads > 1) {
        ctx->pool = pool_create(n_threads);
        if (!ctx->pool) {
            free(ctx);
            return NULL;
        }
    }
    return ctx;
}

void kern_ctx_destroy(struct kern_ctx *ctx)
{
    if (!ctx)
        return;
    pool_destroy(ctx->pool);
    free(ctx->scratch);
    free(ctx);
}

void *kern_cpu_scratch_get(struct kern_ctx *ctx, size_t bytes, struct kern_cpu_scratch *s)
{
    if (bytes == 0)
        bytes = 1;
    if (ctx && !__atomic_exchange_n(&ctx->scratch_busy, 1, __ATOMIC_ACQUIRE)) {
        if (ctx->scratch_cap < bytes) { /* the contents need not survive: no realloc */
            free(ctx->scratch);
            ctx->scratch = malloc(bytes);
            ctx->scratch_cap = ctx->scratch ? bytes : 0;
        }
        if (ctx->scratch) {
            s->p = ctx->scratch;
            s->owned = 0;
            return s->p;
        }
        __atomic_store_n(&ctx->scratch_busy, 0, __ATOMIC_RELEASE);
    }
    s->p = malloc(bytes);
    s->owned = 1;
    return s->p;
}

void kern_cpu_scratch_put(struct kern_ctx *ctx, struct kern_cpu_scratch *s)
{
    if (s->owned)
        free(s->p);
    else
        __atomic_store_n(&ctx->scratch_busy, 0, __ATOMIC_RELEASE);
    s->p = NULL;
}

int kern_cpu_n_threads(const struct kern_ctx *ctx)
{
    return ctx && ctx->pool ? ctx->pool->n_workers + 1 : 1;
}

void kern_cpu_parallel_for(struct kern_ctx *ctx, int64_t n_tasks,
                           void (*fn)(void *arg, int64_t task, int thread), void *arg)
{
    if (n_tasks <= 0)
        return;
    struct kern_pool *pool = ctx ? ctx->pool : NULL;
    if (!pool || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++)
            fn(arg, t, 0);
        return;
    }
    pthread_mutex_lock(&pool->run_mu);
    pthread_mutex_lock(&pool->mu);
    pool->fn = fn;
    pool->arg = arg;
    pool->n_tasks = n_tasks;
    atomic_store(&pool->next, 0);
    pool->busy = pool->n_workers;
    pool->generation++;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    drain(pool, fn, arg, n_tasks, 0);
    pthread_mutex_lock(&pool->mu);
    while (pool->busy > 0)
        pthread_cond_wait(&pool->done, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
    pthread_mutex_unlock(&pool->run_mu);
}
