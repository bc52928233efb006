/* The server's view of the strict JSON reader, which lives in engine/json.h (the one reader of
 * untrusted JSON in the project): the srv_json names the request code is written in, and
 * srv_json_parse, which reports a failure as an OpenAI-shaped srv_error. No parsing here. */
#ifndef PHISERVE_SERVER_JSON_STRICT_H
#define PHISERVE_SERVER_JSON_STRICT_H

#include <stddef.h>

#include "errors.h"
#include "json.h"

/* The tree types and constants are the engine's, under server names. */
#define srv_json eng_json
#define srv_json_doc eng_json_doc
#define srv_json_opts eng_json_opts
#define SRV_JSON_NULL ENG_JSON_NULL
#define SRV_JSON_BOOL ENG_JSON_BOOL
#define SRV_JSON_NUMBER ENG_JSON_NUMBER
#define SRV_JSON_STRING ENG_JSON_STRING
#define SRV_JSON_ARRAY ENG_JSON_ARRAY
#define SRV_JSON_OBJECT ENG_JSON_OBJECT
#define SRV_JSON_DEPTH_DEFAULT ENG_JSON_DEPTH_DEFAULT
#define SRV_JSON_DEPTH_CEILING ENG_JSON_DEPTH_CEILING
#define SRV_JSON_NUMBER_MAX_CHARS ENG_JSON_NUMBER_MAX_CHARS

/* eng_json_parse of a request body, its failure translated into err (caller keeps it):
 *   ENG_JSON_ERR_SYNTAX -> SRV_ERR_INVALID_JSON, DUPLICATE_KEY -> SRV_ERR_DUPLICATE_KEY,
 *   TOO_DEEP -> SRV_ERR_JSON_TOO_DEEP, TOO_COMPLEX -> SRV_ERR_JSON_TOO_COMPLEX (default
 *   message), NO_MEMORY -> SRV_ERR_NO_MEMORY (default message);
 * param = the JSON path of the offending value (null at the top level), message = the reader's
 * reason with the byte offset: "Duplicate key in an object (at byte 31 of the body)."
 * Returns 0 and *out (free with srv_json_free), or the negative SRV_ERR_* code and *out = NULL.
 * Defined in request.c, next to its main user. */
int srv_json_parse(const char *body, size_t len, const struct eng_json_opts *opts,
                   struct eng_json_doc **out, struct srv_error *err);

static inline const struct eng_json *srv_json_root(const struct eng_json_doc *doc)
{
    return eng_json_root(doc);
}

static inline size_t srv_json_bytes(const struct eng_json_doc *doc) { return eng_json_bytes(doc); }

static inline void srv_json_free(struct eng_json_doc *doc) { eng_json_free(doc); }

static inline const struct eng_json *srv_json_get(const struct eng_json *obj, const char *key)
{
    return eng_json_get(obj, key);
}

static inline size_t srv_utf8_seq_len(const unsigned char *s, size_t n)
{
    return eng_utf8_seq_len(s, n);
}

#endif
