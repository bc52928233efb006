/* `phiserve serve`: reads the configuration, starts the HTTP server, loads the engine while the
 * server answers "loading" (/health 200, the rest 503), and runs the signal loop: the first
 * SIGTERM/SIGINT drains (readiness 503, new requests 503, running ones get --shutdown-timeout
 * seconds), then exits 0; a second signal exits at once. Not the server itself (http.c) and not
 * option parsing (config.c). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "engine.h"
#include "http.h"

extern char **environ;

static bool loopback(const char *host)
{
    return !strcmp(host, "127.0.0.1") || !strcmp(host, "localhost") || !strcmp(host, "::1") ||
           !strncmp(host, "127.", 4);
}

/* Test only: PHISERVE_TEST_LOAD_DELAY_MS=N sleeps N ms (at most 60 s) before the model load, so
 * that tests can watch the "loading" answers. Unset, it does nothing. */
static void test_load_delay(void)
{
    const char *v = getenv("PHISERVE_TEST_LOAD_DELAY_MS");
    long long ms = v ? strtoll(v, NULL, 10) : 0;
    if (ms <= 0 || ms > 60000)
        return;
    struct timespec t = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

int srv_cmd_serve(int argc, char **argv)
{
    struct srv_config cfg;
    char err[1024] = "";
    int rc = srv_config_load(&cfg, argc, argv, environ, err, sizeof err);
    if (rc == SRV_CONFIG_HELP) {
        srv_config_free(&cfg);
        return 0;
    }
    if (rc != 0 || srv_config_read_key_file(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "phiserve serve: %s\n", err);
        srv_config_free(&cfg);
        return 2;
    }

    /* Signals are taken synchronously by this thread: block them before any thread starts, so
     * the engine and HTTP threads inherit the mask. MHD writes with MSG_NOSIGNAL; SIGPIPE is
     * ignored for everything else. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Listen first, so that a supervisor sees the process alive (/health 200) and not ready
     * (/health/ready 503) during a load that can take minutes, instead of connection refused. */
    struct srv_server *srv = NULL;
    uint16_t port = 0;
    if (srv_server_create(&cfg, NULL, &srv, err, sizeof err) != 0 || srv_server_start(srv, &port, err, sizeof err) != 0) {
        fprintf(stderr, "phiserve serve: %s\n", err);
        srv_server_destroy(srv, 0);
        srv_config_free(&cfg);
        return 1;
    }
    if (!loopback(cfg.host) && cfg.api_keys.n == 0)
        fprintf(stderr, "phiserve: WARNING: listening on %s without --api-key: anyone who can reach this "
                        "address can use the model\n", cfg.host);
    const char *h = cfg.host;
    bool v6 = strchr(h, ':') != NULL;
    fprintf(stderr, "phiserve: loading model '%s'; meanwhile /health answers on http://%s%s%s:%u\n",
            cfg.model_dir, v6 ? "[" : "", h, v6 ? "]" : "", (unsigned)port);
    fflush(stderr);
    test_load_delay();

    struct eng_engine_options eo;
    srv_config_engine_options(&cfg, &eo);
    struct eng_engine *eng = NULL;
    if (eng_engine_create(&eo, &eng, err, sizeof err) != 0) {
        fprintf(stderr, "phiserve serve: cannot load model '%s': %s\n", cfg.model_dir, err);
        srv_server_destroy(srv, 0);
        srv_config_free(&cfg);
        return 1;
    }
    if (srv_server_set_engine(srv, eng, err, sizeof err) != 0) {
        fprintf(stderr, "phiserve serve: %s\n", err);
        srv_server_destroy(srv, 0);
        eng_engine_destroy(eng);
        srv_config_free(&cfg);
        return 1;
    }
    fprintf(stderr, "phiserve: model '%s' served as '%s' (device %s, weights %s%s, KV cache %s)\n",
            cfg.model_dir, cfg.served_model_name, cfg.device,
            cfg.quantization ? cfg.quantization : "as stored",
            eng_engine_int8_activations(eng) ? ", int8 activations" : "",
            cfg.kv_cache_dtype ? cfg.kv_cache_dtype : "auto");
    fprintf(stderr, "phiserve: listening on http://%s%s%s:%u\n", v6 ? "[" : "", h, v6 ? "]" : "", (unsigned)port);
    fflush(stderr);

    int sig;
    while (sigwait(&set, &sig) != 0) {
    }
    fprintf(stderr, "phiserve: %s: draining (up to %lld s; send it again to exit now)\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", (long long)cfg.shutdown_timeout);
    fflush(stderr);
    srv_server_drain(srv);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double waited = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) * 1e-9;
        if (srv_server_active(srv) == 0 || waited >= (double)cfg.shutdown_timeout)
            break;
        struct timespec tick = {0, 100000000};
        int s2 = sigtimedwait(&set, NULL, &tick);
        if (s2 > 0) {
            fprintf(stderr, "phiserve: second %s: exiting now\n", s2 == SIGINT ? "SIGINT" : "SIGTERM");
            fflush(stderr);
            _exit(128 + s2);
        }
    }
    int64_t left = srv_server_active(srv);
    if (left > 0)
        fprintf(stderr, "phiserve: shutdown timeout: aborting %lld running request(s)\n", (long long)left);
    srv_server_destroy(srv, 2000);
    eng_engine_destroy(eng);
    srv_config_free(&cfg);
    fprintf(stderr, "phiserve: stopped\n");
    return 0;
}
