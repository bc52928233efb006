/* GET /health (liveness: the process answers, also while the model loads), GET /health/ready
 * (200 once the model is loaded, while not draining and while the engine makes progress; 503
 * otherwise), GET /health/decode (the forward-progress check alone) and GET /version. Public,
 * detail-free answers. Not the metrics (routes_metrics.c). */
#include <cjson/cJSON.h>

#include "http.h"

/* Seconds the engine has had work (running or waiting) without finishing a step, when that is
 * longer than --stall-timeout; 0 otherwise (idle, progressing, still loading, or the check is
 * off). A wedged step is what this catches: a busy engine finishes a step every few ms to s. */
static int64_t stalled_seconds(struct srv_server *s)
{
    if (s->cfg->stall_timeout <= 0 || !atomic_load(&s->loaded))
        return 0;
    struct eng_metrics m;
    eng_engine_get_metrics(s->eng, &m);
    if (m.running + m.waiting == 0)
        return 0;
    int64_t secs = (srv_now_ns() - m.progress_ns) / 1000000000;
    return secs >= s->cfg->stall_timeout ? secs : 0;
}

static int respond_status(struct srv_req *r, const char *status)
{
    cJSON *o = cJSON_CreateObject();
    if (o)
        cJSON_AddStringToObject(o, "status", status);
    return srv_respond_json(r, 200, o);
}

int srv_route_health(struct srv_req *r, bool ready)
{
    struct srv_server *s = r->srv;
    bool loaded = atomic_load(&s->loaded);
    if (!ready)
        return respond_status(r, loaded ? "ok" : "loading");
    if (atomic_load(&s->draining))
        return srv_respond_error(r, SRV_ERR_UNAVAILABLE, NULL, "The server is shutting down.");
    if (!loaded)
        return srv_respond_error(r, SRV_ERR_UNAVAILABLE, NULL, "The model is loading.");
    int64_t stall = stalled_seconds(s);
    if (stall > 0)
        return srv_respond_error(r, SRV_ERR_UNAVAILABLE, NULL,
                                 "The engine has made no progress for %lld s.", (long long)stall);
    return respond_status(r, "ready");
}

int srv_route_health_decode(struct srv_req *r)
{
    int64_t stall = stalled_seconds(r->srv);
    if (stall > 0)
        return srv_respond_error(r, SRV_ERR_UNAVAILABLE, NULL,
                                 "The engine has made no progress for %lld s.", (long long)stall);
    return respond_status(r, "ok");
}

int srv_route_version(struct srv_req *r)
{
    cJSON *o = cJSON_CreateObject();
    if (o)
        cJSON_AddStringToObject(o, "version", PHISERVE_VERSION);
    return srv_respond_json(r, 200, o);
}
