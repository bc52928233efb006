/* GET /v1/models and GET /v1/models/{id}: the one served model as OpenAI model objects (plus
 * vLLM's max_model_len). An unknown id is 404 model_not_found. */
#include <cjson/cJSON.h>
#include <string.h>

#include "http.h"

static cJSON *model_object(const struct srv_server *s)
{
    cJSON *m = cJSON_CreateObject();
    if (!m)
        return NULL;
    cJSON_AddStringToObject(m, "id", s->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)s->created);
    cJSON_AddStringToObject(m, "owned_by", "phiserve");
    cJSON_AddStringToObject(m, "root", s->model_name);
    cJSON_AddNumberToObject(m, "max_model_len", s->ctx_len);
    return m;
}

int srv_route_models(struct srv_req *r, const char *id)
{
    struct srv_server *s = r->srv;
    if (id) {
        if (strcmp(id, s->model_name) != 0)
            return srv_respond_error(r, SRV_ERR_MODEL_NOT_FOUND, "model", "The model '%.96s' does not exist.", id);
        return srv_respond_json(r, 200, model_object(s));
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *data = o ? cJSON_AddArrayToObject(o, "data") : NULL;
    cJSON *m = model_object(s);
    if (!o || !data || !m) {
        cJSON_Delete(o);
        cJSON_Delete(m);
        return srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
    }
    cJSON_AddStringToObject(o, "object", "list");
    cJSON_AddItemToArray(data, m);
    return srv_respond_json(r, 200, o);
}
