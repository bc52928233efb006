/* The server's one error table: every error code the HTTP layer can answer with, mapped to its
 * HTTP status, OpenAI error `type`, string `code` (or null) and default message, plus the
 * renderer of OpenAI's {"error":{...}} body. It does not send anything or log anything. */
#ifndef PHISERVE_SERVER_ERRORS_H
#define PHISERVE_SERVER_ERRORS_H

#include <stddef.h>

/* X(name, value, http status, OpenAI type, code string or NULL, default message).
 * Client mistakes are 4xx, always: the OpenAI SDKs retry 408/409/429/5xx, so a 5xx for a
 * request that can never succeed would triple the load. Only transient conditions are 429/503. */
#define SRV_ERROR_TABLE(X)                                                                         \
    X(SRV_ERR_INVALID_JSON, -1, 400, "invalid_request_error", "invalid_json",                     \
      "We could not parse the JSON body of your request.")                                        \
    X(SRV_ERR_DUPLICATE_KEY, -2, 400, "invalid_request_error", "duplicate_key",                   \
      "The JSON body contains the same key twice in one object.")                                 \
    X(SRV_ERR_JSON_TOO_DEEP, -3, 400, "invalid_request_error", "invalid_json",                    \
      "The JSON body is nested too deeply.")                                                      \
    X(SRV_ERR_JSON_TOO_COMPLEX, -4, 400, "invalid_request_error", "request_too_complex",          \
      "The JSON body holds too many values to process.")                                          \
    X(SRV_ERR_INVALID_TYPE, -5, 400, "invalid_request_error", "invalid_type",                     \
      "A parameter has the wrong type.")                                                          \
    X(SRV_ERR_INVALID_VALUE, -6, 400, "invalid_request_error", "invalid_value",                   \
      "A parameter has an invalid value.")                                                        \
    X(SRV_ERR_MISSING_PARAM, -7, 400, "invalid_request_error", "missing_required_parameter",      \
      "A required parameter is missing.")                                                         \
    X(SRV_ERR_UNSUPPORTED_PARAM, -8, 400, "invalid_request_error", "unsupported_parameter",       \
      "This parameter is not supported by this server.")                                          \
    X(SRV_ERR_UNSUPPORTED_VALUE, -9, 400, "invalid_request_error", "unsupported_value",           \
      "This value is not supported by this server.")                                              \
    X(SRV_ERR_INVALID_IMAGE, -10, 400, "invalid_request_error", "invalid_image",                  \
      "The image could not be decoded.")                                                          \
    X(SRV_ERR_CONTEXT_LENGTH, -11, 400, "invalid_request_error", "context_length_exceeded",       \
      "The request does not fit in the model's context window.")                                  \
    X(SRV_ERR_INVALID_API_KEY, -12, 401, "invalid_request_error", "invalid_api_key",              \
      "Incorrect or missing API key.")                                                            \
    X(SRV_ERR_NOT_FOUND, -13, 404, "invalid_request_error", "not_found",                          \
      "No such route.")                                                                           \
    X(SRV_ERR_MODEL_NOT_FOUND, -14, 404, "invalid_request_error", "model_not_found",              \
      "The model does not exist on this server.")                                                 \
    X(SRV_ERR_METHOD_NOT_ALLOWED, -15, 405, "invalid_request_error", "method_not_allowed",        \
      "This method is not allowed on this route.")                                                \
    X(SRV_ERR_REQUEST_TOO_LARGE, -16, 413, "invalid_request_error", "request_too_large",          \
      "The request body is too large.")                                                           \
    X(SRV_ERR_UNSUPPORTED_MEDIA_TYPE, -17, 415, "invalid_request_error", "unsupported_media_type", \
      "The request body must be application/json.")                                               \
    X(SRV_ERR_OVERLOADED, -18, 429, "rate_limit_error", "server_overloaded",                      \
      "The server is overloaded; retry later.")                                                   \
    X(SRV_ERR_NO_MEMORY, -19, 503, "service_unavailable_error", NULL,                              \
      "The server is out of memory for this request; retry later.")                              \
    X(SRV_ERR_UNAVAILABLE, -20, 503, "service_unavailable_error", NULL,                            \
      "The server is not ready or is shutting down; retry later.")                                \
    X(SRV_ERR_INTERNAL, -21, 500, "server_error", NULL,                                           \
      "The server had an error while processing your request.")

enum srv_error_code {
    SRV_OK = 0,
#define SRV_ERROR_ENUM(name, value, status, type, code, msg) name = value,
    SRV_ERROR_TABLE(SRV_ERROR_ENUM)
#undef SRV_ERROR_ENUM
};

/* Bounds of the fixed buffers in struct srv_error; longer text is cut on a UTF-8 boundary. */
#define SRV_ERROR_PARAM_MAX 160
#define SRV_ERROR_MESSAGE_MAX 320

/* One error as produced by a parser or handler. code is a negative SRV_ERR_* value; param is
 * the JSON path of the offending field ("messages[2].content") or "" for a null param;
 * message is "" to use the table's default message. */
struct srv_error {
    int code;
    char param[SRV_ERROR_PARAM_MAX];
    char message[SRV_ERROR_MESSAGE_MAX];
};

/* Table look-ups. An unknown code (including 0 and positive values) is treated as
 * SRV_ERR_INTERNAL. srv_error_code_string returns NULL where the body's code is null. The
 * returned strings are static. */
int srv_error_status(int code);
const char *srv_error_type(int code);
const char *srv_error_code_string(int code);
const char *srv_error_default_message(int code);
/* The enum constant's name ("SRV_ERR_INVALID_JSON"), for logs and test output. */
const char *srv_error_name(int code);

/* Fills e (caller keeps it) and returns code, so parsers can write `return srv_error_set(...)`.
 * param may be NULL (null param); fmt may be NULL (default message); both are copied and cut
 * to the buffer sizes above without splitting a UTF-8 sequence. */
int srv_error_set(struct srv_error *e, int code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes {"error":{"message":...,"type":...,"param":...,"code":...}} into buf (cap bytes,
 * always NUL-terminated when cap > 0) and returns the length the full body needs, without the
 * NUL, like snprintf; a return >= cap means the body was cut. message NULL or "" uses the
 * default message, param NULL or "" renders null. Strings are escaped for JSON; bytes that are
 * not valid UTF-8 become U+FFFD, so the body is always valid JSON and valid UTF-8. */
size_t srv_error_render(int code, const char *param, const char *message, char *buf, size_t cap);

/* Same, from a filled struct srv_error. */
size_t srv_error_render_err(const struct srv_error *e, char *buf, size_t cap);

#endif
