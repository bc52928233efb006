/* OpenAI request bodies (POST /v1/chat/completions, POST /v1/completions) decoded and validated
 * into C structs: every field type-checked and range-checked at the edge, errors naming `param`.
 * It does not tokenize, render templates, decode images or check the context length. */
#ifndef PHISERVE_SERVER_REQUEST_H
#define PHISERVE_SERVER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "grammar.h"
#include "json.h"

/* Defaults of struct srv_limits (srv_limits_default) and hard ceilings. */
#define SRV_MAX_N_DEFAULT 8
#define SRV_MAX_N_CEILING 128
#define SRV_MAX_STOP_DEFAULT 4
#define SRV_MAX_STOP_CEILING 16
#define SRV_MAX_STOP_BYTES 64
#define SRV_MAX_TOP_LOGPROBS 20
#define SRV_MAX_LEGACY_LOGPROBS 5
#define SRV_MAX_LOGIT_BIAS 300
#define SRV_MAX_STOP_TOKEN_IDS 64
#define SRV_MAX_MESSAGES 2048
#define SRV_MAX_CONTENT_PARTS 64
#define SRV_MAX_IMAGES 8
#define SRV_MAX_TOOL_CALLS 64
#define SRV_MAX_PROMPTS 32

/* What the caller allows; filled by srv_limits_default, then adjusted. The parser keeps no
 * pointer to it after returning. */
struct srv_limits {
    int32_t vocab_size;              /* token ids must be in [0, vocab_size); 0 = unchecked */
    int32_t max_n;                   /* n in [1, max_n]; clamped to SRV_MAX_N_CEILING */
    int32_t max_stop;                /* stop strings per request; clamped to SRV_MAX_STOP_CEILING */
    int32_t max_messages;            /* chat messages per request */
    int32_t max_content_parts;       /* parts per message content array */
    int32_t max_images;              /* image_url parts per request */
    int32_t max_prompts;             /* prompts in one completions request */
    bool allow_remote_image_urls;    /* false: only data: URLs (no fetching on the edge's behalf) */
    const char *const *model_names;  /* served names (caller keeps); n_model_names = 0: any name */
    size_t n_model_names;
    int json_max_depth;              /* 0: ENG_JSON_DEPTH_DEFAULT */
    size_t json_max_bytes;           /* 0: 14 x body + 256 KiB (request.c parse_body) */
};

void srv_limits_default(struct srv_limits *lim);

/* Sampling and stopping controls common to both endpoints. A has_* flag is true when the
 * request gave the field (not null); the value next to it is then the request's, otherwise the
 * OpenAI default shown, and the server may apply its own (generation_config.json) instead. */
struct srv_logit_bias {
    int32_t token; /* in [0, vocab_size) */
    float bias;    /* in [-100, 100] */
};

struct srv_sampling {
    int32_t n;                    /* [1, max_n]; default 1 */
    int32_t max_tokens;           /* >= 1; 0 = not given: caller's default (OpenAI: chat = rest
                                     of the context, completions = 16). max_completion_tokens
                                     wins over max_tokens when both are given. */
    bool has_temperature;
    double temperature;           /* [0, 2]; default 1; 0 = greedy */
    bool has_top_p;
    double top_p;                 /* (0, 1]; default 1 */
    bool has_top_k;
    int32_t top_k;                /* 0 = off (the request's -1 and 0 both mean off); else >= 1,
                                     clamped to vocab_size */
    bool has_min_p;
    double min_p;                 /* [0, 1]; default 0 */
    double presence_penalty;      /* [-2, 2]; default 0 */
    double frequency_penalty;     /* [-2, 2]; default 0 */
    bool has_repetition_penalty;
    double repetition_penalty;    /* (0, 2]; default 1 */
    int32_t min_tokens;           /* [0, max_tokens]; default 0 */
    bool has_seed;
    int64_t seed;                 /* any int64 */
    bool ignore_eos;              /* default false */
    bool skip_special_tokens;     /* default true */
    bool include_stop_str_in_output; /* default false */
    char **stop;                  /* [n_stop] NUL-terminated, non-empty, <= SRV_MAX_STOP_BYTES */
    size_t n_stop;
    int32_t *stop_token_ids;      /* [n_stop_token_ids], each in [0, vocab_size) */
    size_t n_stop_token_ids;
    struct srv_logit_bias *logit_bias; /* [n_logit_bias], distinct tokens, in request order */
    size_t n_logit_bias;
    bool stream;
    bool include_usage;           /* stream_options.include_usage (only with stream = true) */
    /* response_format json_object / json_schema: the compiled grammar every choice follows
     * (engine/json_schema.h); NULL for text. Owned by the request (freed by _destroy). */
    struct eng_grammar *grammar;
};

enum srv_role {
    SRV_ROLE_SYSTEM,    /* also "developer", OpenAI's newer name for it */
    SRV_ROLE_USER,
    SRV_ROLE_ASSISTANT,
    SRV_ROLE_TOOL,
};

enum srv_part_type {
    SRV_PART_TEXT,
    SRV_PART_IMAGE_URL,
};

enum srv_image_detail {
    SRV_IMAGE_DETAIL_AUTO,
    SRV_IMAGE_DETAIL_LOW,
    SRV_IMAGE_DETAIL_HIGH,
};

struct srv_content_part {
    enum srv_part_type type;
    char *text;                   /* TEXT: NUL-terminated UTF-8 (may be ""); IMAGE_URL: the url */
    size_t len;                   /* bytes of text */
    enum srv_image_detail detail; /* IMAGE_URL only */
};

enum srv_content_kind {
    SRV_CONTENT_NONE,  /* null or absent: only an assistant message with tool_calls */
    SRV_CONTENT_TEXT,  /* content was a string */
    SRV_CONTENT_PARTS, /* content was an array of parts */
};

struct srv_tool_call {
    char *id;
    char *name;
    char *arguments; /* the JSON text as the client sent it; not parsed here */
};

struct srv_message {
    enum srv_role role;
    enum srv_content_kind content_kind;
    char *text;                     /* SRV_CONTENT_TEXT: NUL-terminated UTF-8 (may be "") */
    size_t text_len;
    struct srv_content_part *parts; /* SRV_CONTENT_PARTS: [n_parts], n_parts >= 1 */
    size_t n_parts;
    char *name;                     /* optional, NULL when absent */
    char *tool_call_id;             /* SRV_ROLE_TOOL: required */
    struct srv_tool_call *tool_calls; /* SRV_ROLE_ASSISTANT: [n_tool_calls], may be 0 */
    size_t n_tool_calls;
};

enum srv_tool_choice {
    SRV_TOOL_CHOICE_NONE,     /* no tools, or tool_choice "none": plain text */
    SRV_TOOL_CHOICE_AUTO,     /* the model calls tools or answers in text (the default) */
    SRV_TOOL_CHOICE_REQUIRED, /* at least one call */
    SRV_TOOL_CHOICE_NAMED,    /* one call of tool_forced */
};

#define SRV_MAX_TOOLS 128
#define SRV_MAX_CHOICES 1024 /* guided_choice / structured_outputs.choice entries */

struct srv_chat_request {
    char *model;                  /* one of limits.model_names (or any when none are given) */
    struct srv_message *messages; /* [n_messages], n_messages >= 1 */
    size_t n_messages;
    size_t n_images;              /* image_url parts over all messages */
    struct srv_sampling sampling;
    bool logprobs;                /* default false */
    int32_t top_logprobs;         /* [0, 20]; needs logprobs = true; default 0 */
    /* Tool calling (server/tool_calls.h): with tool_choice other than NONE the answer's
     * grammar is sampling.grammar (engine/json_schema.h eng_json_schema_compile_tools). */
    enum srv_tool_choice tool_choice;
    char *tools_json;             /* the tools for the prompt: a compact JSON array of
                                     {name, description, parameters}; NULL when the request
                                     gives no tools */
    char *tool_forced;            /* NAMED: the function's name */
    bool parallel_tool_calls;     /* default true */
    void *mem;                    /* private: the arena that owns every pointer above */
};

/* One prompt of a completions request: text, or token ids (exactly one of the two). */
struct srv_prompt {
    char *text;     /* NUL-terminated UTF-8, non-empty; NULL for a token prompt */
    size_t text_len;
    int32_t *ids;   /* [n_ids], n_ids >= 1, each in [0, vocab_size); NULL for a text prompt */
    size_t n_ids;
};

struct srv_completion_request {
    char *model;
    struct srv_prompt *prompts; /* [n_prompts], 1 <= n_prompts <= max_prompts */
    size_t n_prompts;
    struct srv_sampling sampling;
    bool echo;                  /* default false */
    int32_t logprobs;           /* legacy: -1 = not requested, else [0, 5] alternatives */
    void *mem;                  /* private */
};

/* eng_json_parse of a request body, its failure translated into err (caller keeps it):
 *   ENG_JSON_ERR_SYNTAX -> SRV_ERR_INVALID_JSON, DUPLICATE_KEY -> SRV_ERR_DUPLICATE_KEY,
 *   TOO_DEEP -> SRV_ERR_JSON_TOO_DEEP, TOO_COMPLEX -> SRV_ERR_JSON_TOO_COMPLEX (default
 *   message), NO_MEMORY -> SRV_ERR_NO_MEMORY (default message);
 * param = the JSON path of the offending value (null at the top level), message = the reader's
 * reason with the byte offset: "Duplicate key in an object (at byte 31 of the body)."
 * Returns 0 and *out (free with eng_json_free), or the negative SRV_ERR_* code and *out = NULL. */
int srv_json_parse(const char *body, size_t len, const struct eng_json_opts *opts,
                   struct eng_json_doc **out, struct srv_error *err);

/* Decode and validate a body (body[0..len), caller keeps it; need not be NUL-terminated) under
 * lim (caller keeps it). On success return 0 and *out, owned by the caller and freed with the
 * matching _destroy. On failure return a negative SRV_ERR_* code, set *out = NULL and fill err
 * (caller keeps it) with the code, the JSON path of the field at fault as param ("" = null),
 * and a message. Errors: everything of srv_json_parse; SRV_ERR_INVALID_JSON when the body is
 * not an object; SRV_ERR_MISSING_PARAM; SRV_ERR_INVALID_TYPE; SRV_ERR_INVALID_VALUE (range);
 * SRV_ERR_UNSUPPORTED_PARAM / _VALUE for fields this server refuses rather than ignores (tools,
 * functions, JSON Schema keywords outside engine/json_schema.h's subset, chat_template,
 * suffix, best_of > 1);
 * SRV_ERR_MODEL_NOT_FOUND (404) for a model name not in lim->model_names; SRV_ERR_NO_MEMORY.
 * Unknown fields are ignored; a field given as null is treated as absent, except where a
 * required field must be present. */
int srv_chat_request_parse(const char *body, size_t len, const struct srv_limits *lim,
                           struct srv_chat_request **out, struct srv_error *err);
int srv_completion_request_parse(const char *body, size_t len, const struct srv_limits *lim,
                                 struct srv_completion_request **out, struct srv_error *err);

/* Free a request and everything it points to; accept NULL. */
void srv_chat_request_destroy(struct srv_chat_request *req);
void srv_completion_request_destroy(struct srv_completion_request *req);

#endif
