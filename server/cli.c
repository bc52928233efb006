/* Shared helpers of the phiserve subcommands (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"

int srv_cli_backend(const char *device, int n_threads, struct kern_ops *ops, struct kern_ctx **ctx)
{
    *ctx = NULL;
    kern_ops_init_ref(ops);
    if (strcmp(device, "ref") == 0)
        return 0;
    if (strcmp(device, "cpu") == 0) {
        kern_ops_init_cpu(ops);
        *ctx = kern_ctx_create_cpu(n_threads);
        if (!*ctx) {
            fprintf(stderr, "error: cannot start %d CPU threads\n", n_threads);
            return -1;
        }
        return 0;
    }
    if (strcmp(device, "cuda") == 0) {
        char err[256];
        if (kern_cuda_create(0, ops, ctx, err, sizeof err) != 0) {
            fprintf(stderr, "error: --device cuda: %s\n", err);
            return -1;
        }
        return 0;
    }
    fprintf(stderr, "error: unknown --device '%s' (expected cpu, ref or cuda)\n", device);
    return -1;
}

void srv_cli_backend_free(const char *device, struct kern_ctx *ctx)
{
    if (strcmp(device, "cuda") == 0)
        kern_cuda_destroy(ctx);
    else
        kern_ctx_destroy(ctx);
}

int srv_cli_parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int srv_cli_parse_ids(const char *s, int32_t **ids, int32_t *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int32_t *a = malloc(cap * sizeof *a);
    if (!a)
        return -1;
    int32_t k = 0;
    const char *p = s;
    for (;;) {
        char buf[32];
        size_t len = strcspn(p, ",");
        int64_t v = 0;
        if (len == 0 || len >= sizeof buf) {
            fprintf(stderr, "error: --tokens: expected comma-separated ids, got '%s'\n", s);
            free(a);
            return -1;
        }
        memcpy(buf, p, len);
        buf[len] = '\0';
        if (srv_cli_parse_int(buf, 0, INT32_MAX, &v) != 0) {
            fprintf(stderr, "error: --tokens: '%s' is not a token id\n", buf);
            free(a);
            return -1;
        }
        a[k++] = (int32_t)v;
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    *ids = a;
    *n = k;
    return 0;
}
