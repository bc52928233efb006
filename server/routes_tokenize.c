/* POST /tokenize and POST /detokenize in vLLM's shapes: {"prompt"} or {"messages"} (rendered with
 * the chat template, add_generation_prompt default true) to {"count","max_model_len","tokens",
 * "token_strs"}, and {"tokens"} to {"prompt"}. Token counts match the chat route's usage exactly
 * because both go through srv_chat_prompt. Not an OpenAI endpoint. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "json.h"
#include "vision_input.h"

static int parse_body(struct srv_req *r, struct eng_json_doc **doc, const struct eng_json **root)
{
    struct srv_error e = {0};
    int rc = srv_json_parse(r->body.p ? r->body.p : "", r->body.len, NULL, doc, &e);
    if (rc != 0)
        return srv_respond_error(r, e.code, e.param, e.message[0] ? "%s" : NULL, e.message);
    *root = eng_json_root(*doc);
    if ((*root)->type != ENG_JSON_OBJECT) {
        eng_json_free(*doc);
        *doc = NULL;
        return srv_respond_error(r, SRV_ERR_INVALID_JSON, NULL, "The request body must be a JSON object.");
    }
    const struct eng_json *m = eng_json_get(*root, "model");
    if (m && m->type != ENG_JSON_NULL) {
        if (m->type != ENG_JSON_STRING) {
            eng_json_free(*doc);
            *doc = NULL;
            return srv_respond_error(r, SRV_ERR_INVALID_TYPE, "model", "'model' must be a string.");
        }
        if (strcmp(m->u.str, r->srv->model_name) != 0) {
            int rc = srv_respond_error(r, SRV_ERR_MODEL_NOT_FOUND, "model", "The model '%.96s' does not exist.",
                                       m->u.str);
            eng_json_free(*doc); /* after the message used m */
            *doc = NULL;
            return rc;
        }
    }
    if (!r->srv->tok) {
        eng_json_free(*doc);
        *doc = NULL;
        return srv_respond_error(r, SRV_ERR_UNSUPPORTED_VALUE, NULL, "This model has no tokenizer.");
    }
    return -1;
}

/* Optional boolean field: 1/0, or -2 when present with another type. */
static int opt_bool(const struct eng_json *root, const char *key, int dflt)
{
    const struct eng_json *v = eng_json_get(root, key);
    if (!v || v->type == ENG_JSON_NULL)
        return dflt;
    if (v->type != ENG_JSON_BOOL)
        return -2;
    return v->b ? 1 : 0;
}

/* The images of the messages (image_url parts), as the chat route reads them, so that a
 * vision model's count holds their spans; a text model refuses them as chat does. Returns -1
 * when done (im filled), else the queued error response. */
static int load_images(struct srv_req *r, const cJSON *messages, struct srv_images *im)
{
    struct srv_server *s = r->srv;
    const cJSON *msg;
    size_t i = 0;
    cJSON_ArrayForEach(msg, messages) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
        const cJSON *parts = cJSON_IsArray(content) ? content : NULL, *part;
        size_t k = 0;
        cJSON_ArrayForEach(part, parts) {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
            char param[96];
            snprintf(param, sizeof param, "messages[%zu].content[%zu].image_url", i, k++);
            if (!cJSON_IsString(type) || strcmp(type->valuestring, "image_url") != 0)
                continue;
            if (s->mcfg->arch != ENG_ARCH_PHI3V)
                return srv_respond_error(r, SRV_ERR_UNSUPPORTED_VALUE, param,
                                         "This model takes text only; image inputs are not supported.");
            if (im->n >= (size_t)s->limits.max_images)
                return srv_respond_error(r, SRV_ERR_INVALID_VALUE, param,
                                         "At most %d images are allowed per request.",
                                         s->limits.max_images);
            const cJSON *iu = cJSON_GetObjectItemCaseSensitive(part, "image_url");
            const cJSON *url = cJSON_GetObjectItemCaseSensitive(iu, "url");
            if (!cJSON_IsString(url))
                return srv_respond_error(r, SRV_ERR_INVALID_TYPE, param,
                                         "'image_url' must be an object with a string 'url'.");
            struct srv_image_error e = {0};
            if (srv_images_add(im, &s->mcfg->vision, url->valuestring, strlen(url->valuestring),
                               param, &e) != 0)
                return srv_respond_error(r, e.code, e.param[0] ? e.param : NULL, "%s", e.message);
        }
        i++;
    }
    return -1;
}

int srv_route_tokenize(struct srv_req *r)
{
    struct srv_server *s = r->srv;
    struct eng_json_doc *doc = NULL;
    const struct eng_json *root = NULL;
    int rc = parse_body(r, &doc, &root);
    if (rc >= 0)
        return rc;
    const struct eng_json *prompt = eng_json_get(root, "prompt");
    const struct eng_json *msgs = eng_json_get(root, "messages");
    int want_strs = opt_bool(root, "return_token_strs", 0);
    int32_t *ids = NULL;
    size_t n = 0;
    if (want_strs < 0) {
        rc = srv_respond_error(r, SRV_ERR_INVALID_TYPE, "return_token_strs", "'return_token_strs' must be a boolean.");
    } else if (prompt && prompt->type != ENG_JSON_NULL) {
        int add = opt_bool(root, "add_special_tokens", 1);
        if (prompt->type != ENG_JSON_STRING)
            rc = srv_respond_error(r, SRV_ERR_INVALID_TYPE, "prompt", "'prompt' must be a string.");
        else if (add < 0)
            rc = srv_respond_error(r, SRV_ERR_INVALID_TYPE, "add_special_tokens",
                                   "'add_special_tokens' must be a boolean.");
        else if (eng_tokenizer_encode(s->tok, prompt->u.str, prompt->len, add, &ids, &n) != 0)
            rc = srv_respond_error(r, SRV_ERR_INVALID_VALUE, "prompt", "The prompt could not be tokenized.");
    } else if (msgs && msgs->type != ENG_JSON_NULL) {
        int agp = opt_bool(root, "add_generation_prompt", 1);
        if (msgs->type != ENG_JSON_ARRAY || msgs->len == 0)
            rc = srv_respond_error(r, SRV_ERR_INVALID_TYPE, "messages", "'messages' must be a non-empty array.");
        else if (agp < 0)
            rc = srv_respond_error(r, SRV_ERR_INVALID_TYPE, "add_generation_prompt",
                                   "'add_generation_prompt' must be a boolean.");
        else if (!s->tmpl)
            rc = srv_respond_error(r, SRV_ERR_UNSUPPORTED_VALUE, "messages", "This model has no chat template.");
        else {
            /* The strict parser accepted the body (valid UTF-8, no duplicate keys, bounded depth),
             * so cJSON sees the same tree; the template wants cJSON. */
            cJSON *all = cJSON_ParseWithLength(r->body.p, r->body.len);
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(all, "messages");
            struct srv_images im = {0};
            if (!m)
                rc = srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
            else if ((rc = load_images(r, m, &im)) < 0)
                rc = srv_chat_prompt(r, m, agp == 1, &im, &ids, &n, NULL);
            srv_images_free(&im);
            cJSON_Delete(all);
        }
    } else {
        rc = srv_respond_error(r, SRV_ERR_MISSING_PARAM, "prompt", "Either 'prompt' or 'messages' is required.");
    }
    eng_json_free(doc);
    if (rc >= 0) {
        free(ids);
        return rc;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *toks = o ? cJSON_AddArrayToObject(o, "tokens") : NULL;
    for (size_t i = 0; toks && i < n; i++)
        cJSON_AddItemToArray(toks, cJSON_CreateNumber(ids[i]));
    if (o) {
        cJSON_AddNumberToObject(o, "count", (double)n);
        cJSON_AddNumberToObject(o, "max_model_len", s->ctx_len);
        if (want_strs == 1) {
            cJSON *strs = cJSON_AddArrayToObject(o, "token_strs");
            for (size_t i = 0; strs && i < n; i++) {
                const char *p = eng_tokenizer_id_to_piece(s->tok, ids[i], NULL);
                cJSON_AddItemToArray(strs, cJSON_CreateString(p ? p : ""));
            }
        } else {
            cJSON_AddNullToObject(o, "token_strs");
        }
    }
    r->prompt_tokens = (int32_t)n;
    free(ids);
    return srv_respond_json(r, 200, o);
}

int srv_route_detokenize(struct srv_req *r)
{
    struct srv_server *s = r->srv;
    struct eng_json_doc *doc = NULL;
    const struct eng_json *root = NULL;
    int rc = parse_body(r, &doc, &root);
    if (rc >= 0)
        return rc;
    const struct eng_json *t = eng_json_get(root, "tokens");
    if (!t || t->type != ENG_JSON_ARRAY) {
        eng_json_free(doc);
        return t ? srv_respond_error(r, SRV_ERR_INVALID_TYPE, "tokens", "'tokens' must be an array of token ids.")
                 : srv_respond_error(r, SRV_ERR_MISSING_PARAM, "tokens", NULL);
    }
    int32_t *ids = malloc((t->len + 1) * sizeof *ids);
    if (!ids) {
        eng_json_free(doc);
        return srv_respond_error(r, SRV_ERR_NO_MEMORY, NULL, NULL);
    }
    size_t n = 0;
    for (const struct eng_json *v = t->u.child; v; v = v->next, n++) {
        if (v->type != ENG_JSON_NUMBER || !v->is_int || v->u.num.i < 0 || v->u.num.i >= s->limits.vocab_size) {
            char param[48];
            snprintf(param, sizeof param, "tokens[%zu]", n);
            free(ids);
            eng_json_free(doc);
            return srv_respond_error(r, SRV_ERR_INVALID_VALUE, param, "Token ids must be integers in [0, %d).",
                                     s->limits.vocab_size);
        }
        ids[n] = (int32_t)v->u.num.i;
    }
    eng_json_free(doc);
    char *text = NULL;
    size_t len = 0;
    rc = eng_tokenizer_decode(s->tok, ids, n, 0, &text, &len);
    free(ids);
    if (rc != 0)
        return srv_respond_error(r, SRV_ERR_INVALID_VALUE, "tokens", "The tokens could not be decoded.");
    cJSON *o = cJSON_CreateObject();
    if (o)
        cJSON_AddStringToObject(o, "prompt", text);
    free(text);
    return srv_respond_json(r, 200, o);
}
