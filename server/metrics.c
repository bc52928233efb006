/* Prometheus metrics: the server's latency histograms and counters plus the engine's gauges,
 * rendered as text exposition format 0.0.4. Scheduler and cache figures use vLLM's metric names
 * (routers such as the Gateway API inference extension read them); the rest are phiserve_*.
 * Not an HTTP route (routes_metrics.c) and not a general Prometheus client. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                     0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
static const double itl_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
                                    0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 1.0, 2.5};
static const double e2e_bounds[] = {0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5,
                                    5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0};

_Static_assert(sizeof ttft_bounds / sizeof ttft_bounds[0] < SRV_HIST_BUCKETS, "buckets");
_Static_assert(sizeof itl_bounds / sizeof itl_bounds[0] < SRV_HIST_BUCKETS, "buckets");
_Static_assert(sizeof e2e_bounds / sizeof e2e_bounds[0] < SRV_HIST_BUCKETS, "buckets");

static void hist_init(struct srv_hist *h, const double *b, int n)
{
    memset(h, 0, sizeof *h);
    h->bounds = b;
    h->n_bounds = n;
}

static void hist_add(struct srv_hist *h, double v, uint64_t count)
{
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    h->counts[i] += count;
    h->count += count;
    h->sum += v * (double)count;
}

void srv_metrics_init(struct srv_metrics *m)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    hist_init(&m->ttft, ttft_bounds, (int)(sizeof ttft_bounds / sizeof ttft_bounds[0]));
    hist_init(&m->itl, itl_bounds, (int)(sizeof itl_bounds / sizeof itl_bounds[0]));
    hist_init(&m->e2e, e2e_bounds, (int)(sizeof e2e_bounds / sizeof e2e_bounds[0]));
}

void srv_metrics_destroy(struct srv_metrics *m)
{
    pthread_mutex_destroy(&m->mu);
}

void srv_metrics_observe(struct srv_metrics *m, double ttft_s, double e2e_s, enum eng_finish_reason f)
{
    pthread_mutex_lock(&m->mu);
    if (ttft_s >= 0)
        hist_add(&m->ttft, ttft_s, 1);
    hist_add(&m->e2e, e2e_s, 1);
    if ((int)f >= 0 && (int)f < 5)
        m->finished[f]++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_observe_itl(struct srv_metrics *m, double itl_s, int64_t count)
{
    pthread_mutex_lock(&m->mu);
    hist_add(&m->itl, itl_s, count > 0 ? (uint64_t)count : 1);
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_count_http(struct srv_metrics *m, int status)
{
    int c = status / 100;
    pthread_mutex_lock(&m->mu);
    if (c >= 1 && c <= 5)
        m->http[c]++;
    pthread_mutex_unlock(&m->mu);
}

static int put(struct srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int put(struct srv_buf *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    return srv_buf_append(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static int hist_put(struct srv_buf *b, const char *name, const char *help, const struct srv_hist *h,
                    const char *lbl)
{
    int rc = put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i <= h->n_bounds; i++) {
        cum += h->counts[i];
        if (i < h->n_bounds)
            rc |= put(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, lbl, h->bounds[i], (unsigned long long)cum);
        else
            rc |= put(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, lbl, (unsigned long long)cum);
    }
    rc |= put(b, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n", name, lbl, h->sum, name, lbl,
              (unsigned long long)h->count);
    return rc;
}

char *srv_metrics_render(struct srv_metrics *m, const struct eng_metrics *em, const char *model_name,
                         size_t *len)
{
    struct srv_buf b = {0};
    char lbl[256];
    /* label values escape backslash, quote and newline */
    size_t k = 0;
    k += (size_t)snprintf(lbl, sizeof lbl, "model_name=\"");
    for (const char *p = model_name; *p && k + 4 < sizeof lbl; p++) {
        if (*p == '\\' || *p == '"') {
            lbl[k++] = '\\';
            lbl[k++] = *p;
        } else if (*p == '\n') {
            lbl[k++] = '\\';
            lbl[k++] = 'n';
        } else {
            lbl[k++] = *p;
        }
    }
    lbl[k++] = '"';
    lbl[k] = '\0';

    double kv = em->kv_blocks_total > 0 ? (double)em->kv_blocks_used / (double)em->kv_blocks_total : 0.0;
    int rc = 0;
    rc |= put(&b, "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
                  "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{%s} %d\n", lbl, em->running);
    rc |= put(&b, "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
                  "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{%s} %d\n", lbl, em->waiting);
    rc |= put(&b, "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
                  "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{%s} %.6g\n", lbl, kv);
    rc |= put(&b, "# HELP vllm:num_preemptions_total Cumulative number of preemptions.\n"
                  "# TYPE vllm:num_preemptions_total counter\nvllm:num_preemptions_total{%s} %lld\n", lbl,
              (long long)em->preemptions);
    rc |= put(&b, "# HELP vllm:prefix_cache_queries_total Prefix-cache queries, in tokens.\n"
                  "# TYPE vllm:prefix_cache_queries_total counter\nvllm:prefix_cache_queries_total{%s} %lld\n",
              lbl, (long long)em->prefix_cache_queries);
    rc |= put(&b, "# HELP vllm:prefix_cache_hits_total Prefix-cache hits, in tokens.\n"
                  "# TYPE vllm:prefix_cache_hits_total counter\nvllm:prefix_cache_hits_total{%s} %lld\n", lbl,
              (long long)em->prefix_cache_hits);
    rc |= put(&b, "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n"
                  "# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{%s} %lld\n", lbl,
              (long long)em->prompt_tokens_total);
    rc |= put(&b, "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
                  "# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total{%s} %lld\n", lbl,
              (long long)em->generation_tokens_total);
    rc |= put(&b, "# HELP phiserve_kv_cache_blocks KV-cache blocks in use and in total.\n"
                  "# TYPE phiserve_kv_cache_blocks gauge\nphiserve_kv_cache_blocks{%s,state=\"used\"} %lld\n"
                  "phiserve_kv_cache_blocks{%s,state=\"total\"} %lld\n",
              lbl, (long long)em->kv_blocks_used, lbl, (long long)em->kv_blocks_total);
    rc |= put(&b, "# HELP phiserve_cuda_graph_replays_total Decode steps that replayed a recorded CUDA graph.\n"
                  "# TYPE phiserve_cuda_graph_replays_total counter\nphiserve_cuda_graph_replays_total{%s} %lld\n",
              lbl, (long long)em->graph_replays_total);
    rc |= put(&b, "# HELP phiserve_cuda_graph_records_total CUDA graphs recorded (one per decode batch size used).\n"
                  "# TYPE phiserve_cuda_graph_records_total counter\nphiserve_cuda_graph_records_total{%s} %lld\n",
              lbl, (long long)em->graph_records_total);
    rc |= put(&b, "# HELP phiserve_device_sampled_rows_total Tokens drawn on the device (only the id came back).\n"
                  "# TYPE phiserve_device_sampled_rows_total counter\nphiserve_device_sampled_rows_total{%s} %lld\n",
              lbl, (long long)em->sampled_rows_total);

    pthread_mutex_lock(&m->mu);
    static const char *const reasons[5] = {"none", "stop", "length", "abort", "error"};
    rc |= put(&b, "# HELP vllm:request_success_total Count of finished requests by finish reason.\n"
                  "# TYPE vllm:request_success_total counter\n");
    for (int i = 1; i < 5; i++)
        rc |= put(&b, "vllm:request_success_total{%s,finished_reason=\"%s\"} %llu\n", lbl, reasons[i],
                  (unsigned long long)m->finished[i]);
    rc |= hist_put(&b, "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                   &m->ttft, lbl);
    rc |= hist_put(&b, "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                   &m->itl, lbl);
    rc |= hist_put(&b, "vllm:e2e_request_latency_seconds", "Histogram of end-to-end request latency in seconds.",
                   &m->e2e, lbl);
    rc |= put(&b, "# HELP phiserve_http_responses_total HTTP responses by status class.\n"
                  "# TYPE phiserve_http_responses_total counter\n");
    for (int c = 1; c <= 5; c++)
        rc |= put(&b, "phiserve_http_responses_total{code=\"%dxx\"} %llu\n", c, (unsigned long long)m->http[c]);
    pthread_mutex_unlock(&m->mu);
    if (rc) {
        srv_buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
