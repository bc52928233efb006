/* The engine's token loop does not allocate per token: one streaming request of 300 tokens
 * whose consumer keeps up, with every malloc, calloc and realloc of the process counted
 * (the executable links with --wrap for the three). Over 200 tokens in the middle of the
 * request, the threads other than this one (the engine thread, and the CPU backend's workers)
 * may allocate a few times for amortised growth (a sequence's token array doubles), never once
 * per token. Runs one request at a time on the given fixture model and device.
 * Usage: test_engine_allocs MODEL_DIR [cpu|ref|cuda] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

#include "../test_util.h"

#define N_TOKENS 300
#define WINDOW_FROM 50
#define WINDOW_TO 250
/* Allocations allowed in the window: amortised growth only (the per-token cost it guards
 * against would be 200 or more). */
#define MAX_WINDOW_ALLOCS 12

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);

static pthread_t main_thread;
static atomic_long other_allocs;

static void count(void)
{
    if (!pthread_equal(pthread_self(), main_thread))
        atomic_fetch_add(&other_allocs, 1);
}

void *__wrap_malloc(size_t n)
{
    count();
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    count();
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    count();
    return __real_realloc(p, n);
}

static void wake(void *user)
{
    (void)user;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [cpu|ref|cuda]\n", argv[0]);
        return 2;
    }
    main_thread = pthread_self();
    struct eng_engine_options o;
    eng_engine_options_init(&o);
    o.model_dir = argv[1];
    o.device = argc > 2 ? argv[2] : "cpu";
    o.n_threads = 2;
    o.max_seqs = 4;
    struct eng_engine *e = NULL;
    char err[512];
    if (eng_engine_create(&o, &e, err, sizeof err) != 0) {
        fprintf(stderr, "engine: %s\n", err);
        return 1;
    }
    int32_t prompt[16];
    for (int i = 0; i < 16; i++)
        prompt[i] = 100 + 7 * i;
    struct eng_request q;
    memset(&q, 0, sizeof q);
    q.prompt = prompt;
    q.n_prompt = 16;
    eng_sampling_params_init_default(&q.sampling);
    q.sampling.temperature = 0.8f; /* sampled: the drawn path on a device, the host's here */
    q.sampling.has_seed = true;
    q.sampling.seed = 3;
    q.sampling.ignore_eos = true;
    q.max_tokens = N_TOKENS;
    q.n = 1;
    q.skip_special_tokens = true;
    struct eng_handle *h = NULL;
    CHECK(eng_engine_submit(e, &q, wake, NULL, &h, err, sizeof err) == 0, "submit: %s", err);

    int32_t tokens = 0;
    long at_from = 0, at_to = 0;
    for (;;) {
        const struct eng_event *ev;
        int rc = eng_handle_next(h, &ev);
        if (rc < 0)
            break;
        if (rc == 0) {
            eng_handle_wait(h);
            continue;
        }
        int32_t before = tokens;
        tokens += ev->n_tokens;
        if (before < WINDOW_FROM && tokens >= WINDOW_FROM)
            at_from = atomic_load(&other_allocs);
        if (before < WINDOW_TO && tokens >= WINDOW_TO)
            at_to = atomic_load(&other_allocs);
        CHECK(ev->finish == ENG_FINISH_NONE || ev->finish == ENG_FINISH_LENGTH, "finish %d",
              ev->finish);
    }
    CHECK(tokens == N_TOKENS, "%d tokens, want %d", tokens, N_TOKENS);
    long window = at_to - at_from;
    printf("allocations by the engine's threads over tokens %d..%d: %ld\n", WINDOW_FROM,
           WINDOW_TO, window);
    CHECK(window <= MAX_WINDOW_ALLOCS, "%ld allocations over %d tokens: one per token?", window,
          WINDOW_TO - WINDOW_FROM);
    eng_handle_release(h);
    eng_engine_destroy(e);
    return tu_finish("test_engine_allocs");
}
