/* GET /metrics: the Prometheus exposition of metrics.c with the engine's current gauges. */
#include "http.h"

int srv_route_metrics(struct srv_req *r)
{
    struct eng_metrics em;
    eng_engine_get_metrics(r->srv->eng, &em);
    size_t len = 0;
    char *text = srv_metrics_render(&r->srv->metrics, &em, r->srv->model_name, &len);
    if (!text)
        return srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
    return srv_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL);
}
