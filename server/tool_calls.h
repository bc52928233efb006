/* Tool calling for models without a tool-call format of their own (the Phi-3 family): the
 * tools are described to the model in a system message, its answer is held by a grammar
 * (engine/json_schema.h, eng_json_schema_compile_tools) to a fixed JSON layout, and this file
 * writes that description and reads the layout back into OpenAI's tool_calls, whole or as a
 * stream. It does not parse the request's tools (request.c) nor build the response JSON. */
#ifndef PHISERVE_SERVER_TOOL_CALLS_H
#define PHISERVE_SERVER_TOOL_CALLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SRV_TOOL_NAME_MAX 64

/* ---- reading an answer back ----
 * The layout (eng_json_schema_compile_tools):
 *   {"tool_calls": [{"name": "NAME", "arguments": ARGS}, {"name": ...}]}   or
 *   {"content": "TEXT"}
 * The reader is fed the answer's text in pieces as they are generated and reports what each
 * piece adds: content text (unescaped), the start of a call (its index and name), and pieces
 * of a call's arguments (the JSON text as generated). Text outside the layout (possible only
 * when the grammar was not applied) makes the reader fail; what it reported stays valid. */

enum srv_tool_delta_kind {
    SRV_TOOL_DELTA_CONTENT,    /* text: a piece of the reply's content */
    SRV_TOOL_DELTA_CALL,       /* index, name: a new call */
    SRV_TOOL_DELTA_ARGUMENTS,  /* index, text: a piece of that call's arguments */
};

struct srv_tool_delta {
    enum srv_tool_delta_kind kind;
    int32_t index;             /* CALL and ARGUMENTS: 0, 1, ... */
    const char *name;          /* CALL: NUL-terminated; valid during the callback */
    const char *text;          /* CONTENT and ARGUMENTS: len bytes, valid during the callback */
    size_t len;
};

/* Called for each delta; returns 0, or nonzero to stop feeding (the feed returns it). */
typedef int (*srv_tool_delta_fn)(void *user, const struct srv_tool_delta *d);

struct srv_tool_reader; /* opaque */

/* Returns a reader, or NULL when out of memory. Free with srv_tool_reader_destroy. */
struct srv_tool_reader *srv_tool_reader_create(void);

void srv_tool_reader_destroy(struct srv_tool_reader *r);

/* Feeds len bytes of the answer (text need not end on a token or character boundary), calling
 * fn for each delta in order. Returns 0; -1 when the text leaves the layout or memory runs
 * out (the reader then ignores further input); or fn's nonzero return. */
int srv_tool_reader_feed(struct srv_tool_reader *r, const char *text, size_t len,
                         srv_tool_delta_fn fn, void *user);

/* Whether the whole layout has been read (the answer is complete). */
bool srv_tool_reader_done(const struct srv_tool_reader *r);

/* Whether the answer is (so far) a tool-call answer rather than content. */
bool srv_tool_reader_calls(const struct srv_tool_reader *r);

/* ---- the chat around it ---- */

struct cJSON;

/* The system text that describes the tools (tools_json: a JSON array of {name, description,
 * parameters}, caller keeps) and the layout to answer in: calls, or also content when
 * allow_content; forced (caller keeps, may be NULL) names the one function to call; parallel
 * allows several calls. Returns a malloc'd string, or NULL when out of memory. */
char *srv_tools_prompt(const char *tools_json, bool allow_content, const char *forced,
                       bool parallel);

/* Rewrites a chat's messages (a cJSON array of message objects as the template sees them, in
 * place) for a template that knows no tools: an assistant message's tool_calls become its
 * content, exactly in the answer layout (arguments as the client sent them when they are one
 * JSON value, else as a JSON string); a tool message becomes a user message whose content is
 * {"tool_call_id": ..., "content": ...}; and system (may be NULL) is appended to the first
 * system message, or becomes one at the front. When the template drops system messages
 * (system_role false), system goes before the first user message's text instead (or becomes
 * a user message at the front). Returns 0, or -1 when out of memory. */
int srv_tools_rewrite_messages(struct cJSON *messages, const char *system, bool system_role);

/* Whether any message of the array carries tool_calls or has the role "tool". */
bool srv_tools_in_history(const struct cJSON *messages);

/* Fills an OpenAI chat message object (msg, caller's) from a whole answer text[0..len): its
 * content, or content null and tool_calls [{id, type, function: {name, arguments}}], ids
 * made with srv_make_id. *calls tells which (finish_reason "tool_calls"); *complete whether
 * the layout was read to its end. Returns 0, or -1 when out of memory. */
int srv_tools_message(struct cJSON *msg, const char *text, size_t len, bool *calls,
                      bool *complete);

#endif
