/* Chat templates: parse a model's Jinja chat template once, then render prompts from a request's
 * messages. The interpreter covers the Jinja subset that Phi-3 / 3.5 / 3-vision / Phi-4-mini and
 * common community templates use, rendered exactly as transformers' apply_chat_template does
 * (trim_blocks, lstrip_blocks, default Undefined, its tojson). It is not a general Jinja engine:
 * no macros, includes, inheritance, or call blocks. Every render is bounded in output, steps,
 * nesting and memory, so a hostile template or request ends in an error, never a crash. */
#ifndef PHISERVE_ENGINE_CHAT_TEMPLATE_H
#define PHISERVE_ENGINE_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cJSON;

/* Results: 0 or one of these negative codes. */
enum eng_chat_status {
    ENG_CHAT_OK = 0,
    ENG_CHAT_ERR_SYNTAX = -1,  /* the template source is not valid (in the supported subset) */
    ENG_CHAT_ERR_RAISED = -2,  /* the template called raise_exception(msg): err holds msg verbatim */
    ENG_CHAT_ERR_RENDER = -3,  /* a runtime error: undefined misuse, type error, bad operand */
    ENG_CHAT_ERR_LIMIT = -4,   /* output, step, nesting or memory limit reached */
    ENG_CHAT_ERR_INPUT = -5,   /* messages / tools / content parts not of an accepted shape */
    ENG_CHAT_ERR_NOMEM = -6,   /* malloc failed */
};

/* Bounds on one parse or render. Zero in any field means its default. */
struct eng_chat_limits {
    size_t max_output_bytes;   /* rendered prompt, and any single string value (default 4 MiB) */
    uint64_t max_steps;        /* evaluated nodes + loop iterations (default 5,000,000) */
    int max_depth;             /* template nesting and value nesting (default 128) */
    size_t max_memory_bytes;   /* all values of one render together (default 128 MiB) */
};

#define ENG_CHAT_DEFAULT_MAX_OUTPUT ((size_t)4 << 20)
#define ENG_CHAT_DEFAULT_MAX_STEPS ((uint64_t)5000000)
#define ENG_CHAT_DEFAULT_MAX_DEPTH 128
#define ENG_CHAT_DEFAULT_MAX_MEMORY ((size_t)128 << 20)
#define ENG_CHAT_MAX_TEMPLATE_BYTES ((size_t)1 << 20)

/* What a template sees. Variables: messages, tools (none when NULL), documents (always none),
 * add_generation_prompt, bos_token, eos_token. Nothing else from a request reaches it. */
struct eng_chat_input {
    const struct cJSON *messages;  /* caller keeps; a JSON array (usually of message objects) */
    const struct cJSON *tools;     /* caller keeps; any JSON value, or NULL for none */
    const char *bos_token;         /* caller keeps; NUL-terminated; NULL means "" */
    const char *eos_token;         /* caller keeps; NUL-terminated; NULL means "" */
    bool add_generation_prompt;
    /* false (the normal case): a message whose "content" is an array of parts is shown to the
     * template as one string, see eng_chat_template_render. true: the array is passed as is,
     * for templates that walk content parts themselves. */
    bool keep_content_parts;
};

struct eng_chat_template; /* opaque; immutable after parse */

/* Fills *l with the defaults above. */
void eng_chat_limits_default(struct eng_chat_limits *l);

/* Parses a template of len bytes (src need not be NUL-terminated; at most
 * ENG_CHAT_MAX_TEMPLATE_BYTES). limits may be NULL; only max_depth is used here. On success
 * returns 0 and *out (the caller destroys it). On failure returns ENG_CHAT_ERR_SYNTAX,
 * ENG_CHAT_ERR_LIMIT (nesting too deep, template too big) or ENG_CHAT_ERR_NOMEM, sets *out to
 * NULL and writes a message with the line and column into err (errlen > 0; always
 * NUL-terminated, truncated to fit). Unknown filters and tests are syntax errors, as in Jinja. */
int eng_chat_template_parse(const char *src, size_t len, const struct eng_chat_limits *limits,
                            struct eng_chat_template **out, char *err, size_t errlen);

/* Renders t with in (limits may be NULL for the defaults). On success returns 0, *out is a
 * malloc'd NUL-terminated string the caller frees, and *out_len its length (the text may
 * contain NUL bytes if the messages did). On failure returns a negative code above, *out is
 * NULL, and err holds a message: the raise_exception argument verbatim for
 * ENG_CHAT_ERR_RAISED, otherwise a description with the template line.
 *
 * Content parts (unless keep_content_parts): a "content" array becomes the "\n"-join of its
 * {"type": "text", "text": ...} parts, as vLLM flattens for string-content templates. Each
 * {"type": "image"} / {"type": "image_url"} part is numbered in order across the whole
 * conversation (1, 2, ...) and its tag <|image_N|> is put on its own line before the text of
 * its message, unless the text already contains that tag (Phi-3-vision's prompt format).
 * Any other part type, or a text part without a string "text", is ENG_CHAT_ERR_INPUT.
 * JSON numbers that are integral and below 2^53 in magnitude become integers.
 * t may be shared by concurrent renders: rendering never modifies it. */
int eng_chat_template_render(const struct eng_chat_template *t, const struct eng_chat_input *in,
                             const struct eng_chat_limits *limits, char **out, size_t *out_len,
                             char *err, size_t errlen);

/* Frees a template; accepts NULL. */
void eng_chat_template_destroy(struct eng_chat_template *t);

#endif
