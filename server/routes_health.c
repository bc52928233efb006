/* GET /health (liveness: the process answers), GET /health/ready (the model is loaded and the
 * server is not draining: 200, else 503) and GET /version. Public, detail-free answers. */
#include <cjson/cJSON.h>

#include "http.h"

int srv_route_health(struct srv_req *r, bool ready)
{
    if (ready && atomic_load(&r->srv->draining))
        return srv_respond_error(r, SRV_ERR_UNAVAILABLE, NULL, "The server is shutting down.");
    cJSON *o = cJSON_CreateObject();
    if (o)
        cJSON_AddStringToObject(o, "status", ready ? "ready" : "ok");
    return srv_respond_json(r, 200, o);
}

int srv_route_version(struct srv_req *r)
{
    cJSON *o = cJSON_CreateObject();
    if (o)
        cJSON_AddStringToObject(o, "version", PHISERVE_VERSION);
    return srv_respond_json(r, 200, o);
}
