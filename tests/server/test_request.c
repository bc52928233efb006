/* Tests server/request.c: OpenAI chat-completion and completion bodies against the reliability
 * catalogue (groups B, C, D and the request-validation parts of E and F), as a table of
 * body -> HTTP status, param and code, plus checks of the decoded values of valid requests. */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "request.h"

#include "../test_util.h"

#define VOCAB 32064
static const char *const served[] = {"phi-3-mini", "phi3"};

static struct srv_limits limits(void)
{
    struct srv_limits l;
    srv_limits_default(&l);
    l.vocab_size = VOCAB;
    l.model_names = served;
    l.n_model_names = 2;
    return l;
}

enum endpoint { CHAT, COMPL };

struct rcase {
    const char *id; /* catalogue reference */
    enum endpoint ep;
    const char *body;
    int status;         /* 200 = accepted */
    const char *param;  /* NULL = null param */
    const char *code;   /* expected `code` string; NULL = null or not checked for 200 */
};

#define MODEL "\"model\":\"phi-3-mini\""
#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define CHAT_OK(extra) "{" MODEL "," MSGS extra "}"
#define MSG1(msg) "{" MODEL ",\"messages\":[" msg "]}"
#define COMPL_OK(extra) "{" MODEL ",\"prompt\":\"Once\"" extra "}"
#define PROMPT(p) "{" MODEL ",\"prompt\":" p "}"

static const struct rcase cases[] = {
    /* baseline */
    {"ok", CHAT, CHAT_OK(""), 200, NULL, NULL},
    /* vLLM takes response_format on completions too */
    {"P8", COMPL, COMPL_OK(",\"response_format\":{\"type\":\"json_object\"}"), 200, NULL, NULL},
    /* vLLM's structured-output extensions, one kind per request */
    {"P8", COMPL, COMPL_OK(",\"guided_choice\":[\"yes\",\"no\"]"), 200, NULL, NULL},
    {"P8", COMPL, COMPL_OK(",\"guided_regex\":\"[0-9]{3}-[a-z]+\""), 200, NULL, NULL},
    {"P8", COMPL, COMPL_OK(",\"guided_json\":{\"type\":\"integer\"}"), 200, NULL, NULL},
    {"P8", COMPL, COMPL_OK(",\"guided_json\":\"{\\\"type\\\":\\\"integer\\\"}\""), 200, NULL, NULL},
    {"P8", COMPL, COMPL_OK(",\"guided_json\":\"{\""), 400, "guided_json", "invalid_value"},
    {"P8", COMPL, COMPL_OK(",\"structured_outputs\":{\"choice\":[\"a\",\"b\"]}"), 200, NULL, NULL},
    {"P8", COMPL, COMPL_OK(",\"structured_outputs\":{\"regex\":\"a|b\"}"), 200, NULL, NULL},
    {"P8", COMPL, COMPL_OK(",\"structured_outputs\":{\"json_object\":true}"), 200, NULL, NULL},
    {"P8", COMPL, COMPL_OK(",\"structured_outputs\":{\"regex\":\"(?=a)\"}"), 400, "structured_outputs.regex",
     "unsupported_value"},
    {"P8", COMPL, COMPL_OK(",\"structured_outputs\":{\"regex\":\"(a\"}"), 400, "structured_outputs.regex",
     "invalid_value"},
    {"P8", COMPL, COMPL_OK(",\"structured_outputs\":{\"grammar\":\"root ::= x\"}"), 400,
     "structured_outputs.grammar", "unsupported_parameter"},
    {"P8", COMPL, COMPL_OK(",\"structured_outputs\":{\"choice\":[]}"), 400, "structured_outputs.choice",
     "invalid_value"},
    {"P8", COMPL, COMPL_OK(",\"structured_outputs\":{\"choice\":[\"a\",1]}"), 400, "structured_outputs.choice",
     "invalid_value"},
    {"P8", COMPL, COMPL_OK(",\"structured_outputs\":[]"), 400, "structured_outputs", "invalid_type"},
    {"P8", COMPL, COMPL_OK(",\"guided_choice\":[\"a\"],\"guided_regex\":\"a\""), 400, "guided_choice",
     "invalid_value"},
    {"P8", COMPL, COMPL_OK(",\"guided_choice\":[\"a\"],\"response_format\":{\"type\":\"json_object\"}"), 400,
     "guided_choice", "invalid_value"},
    {"P8", COMPL, COMPL_OK(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":"
                           "{\"minimum\":1}}}"), 400, "response_format.json_schema.schema", "unsupported_value"},
    {"ok", COMPL, COMPL_OK(""), 200, NULL, NULL},
    /* B1: not an object */
    {"B1", CHAT, "", 400, NULL, "invalid_json"},
    {"B1", CHAT, "   ", 400, NULL, "invalid_json"},
    {"B1", CHAT, "null", 400, NULL, "invalid_json"},
    {"B1", CHAT, "42", 400, NULL, "invalid_json"},
    {"B1", CHAT, "\"str\"", 400, NULL, "invalid_json"},
    {"B1", CHAT, "[]", 400, NULL, "invalid_json"},
    {"B1", CHAT, "not json{{{", 400, NULL, "invalid_json"},
    {"B1", COMPL, "[1,2]", 400, NULL, "invalid_json"},
    /* B3 */
    {"B3", CHAT, CHAT_OK("") "xyz", 400, NULL, "invalid_json"},
    {"B3", CHAT, "{}{}", 400, NULL, "invalid_json"},
    /* B4 */
    {"B4", CHAT, "{" MODEL ",\"messages\":[{\"role\":\"user\",\"content\":\"hi\\", 400,
     "messages[0].content", "invalid_json"},
    /* B6 */
    {"B6", CHAT, MSG1("{\"role\":\"user\",\"content\":\"\\uZZZZ\"}"), 400, "messages[0].content", "invalid_json"},
    {"B6", CHAT, MSG1("{\"role\":\"user\",\"content\":\"\\u12\"}"), 400, "messages[0].content", "invalid_json"},
    /* B7 */
    {"B7", CHAT, MSG1("{\"role\":\"user\",\"content\":\"\\uD800\"}"), 400, "messages[0].content", "invalid_json"},
    {"B7", CHAT, MSG1("{\"role\":\"user\",\"content\":\"\\uDC00\"}"), 400, "messages[0].content", "invalid_json"},
    {"B7", CHAT, MSG1("{\"role\":\"user\",\"content\":\"\\uD800\\u0041\"}"), 400, "messages[0].content",
     "invalid_json"},
    /* B8 */
    {"B8", CHAT, MSG1("{\"role\":\"user\",\"content\":\"a\\u0000b\"}"), 400, "messages[0].content",
     "invalid_json"},
    /* B9 */
    {"B9", CHAT, MSG1("{\"role\":\"user\",\"content\":\"\xC0\xAF\"}"), 400, "messages[0].content", "invalid_json"},
    {"B9", CHAT, MSG1("{\"role\":\"user\",\"content\":\"\xED\xA0\x80\"}"), 400, "messages[0].content",
     "invalid_json"},
    {"B9", CHAT, MSG1("{\"role\":\"user\",\"content\":\"\xF5\x80\x80\x80\"}"), 400, "messages[0].content",
     "invalid_json"},
    {"B9", CHAT, MSG1("{\"role\":\"user\",\"content\":\"\xE2\x82\"}"), 400, "messages[0].content", "invalid_json"},
    /* B10 */
    {"B10", CHAT, MSG1("{\"role\":\"user\",\"content\":\"a\x01\"}"), 400, "messages[0].content", "invalid_json"},
    {"B10", CHAT, MSG1("{\"role\":\"user\",\"content\":\"a\nb\"}"), 400, "messages[0].content", "invalid_json"},
    /* B11: a UTF-8 BOM is tolerated (documented) */
    {"B11", CHAT, "\xEF\xBB\xBF" CHAT_OK(""), 200, NULL, NULL},
    /* B12 */
    {"B12", CHAT, CHAT_OK(",\"max_tokens\":1,\"max_tokens\":100000"), 400, "max_tokens", "duplicate_key"},
    {"B12", CHAT, "{" MODEL "," MSGS "," MODEL "}", 400, "model", "duplicate_key"},
    /* B13: case variants are unknown fields */
    {"B13", CHAT, CHAT_OK(",\"Max_Tokens\":\"x\",\"MODEL\":5"), 200, NULL, NULL},
    /* C1 */
    {"C1", CHAT, "{" MODEL "}", 400, "messages", "missing_required_parameter"},
    {"C1", CHAT, "{" MODEL ",\"messages\":[]}", 400, "messages", "invalid_value"},
    {"C1", CHAT, "{" MODEL ",\"messages\":{}}", 400, "messages", "invalid_type"},
    {"C1", CHAT, "{" MODEL ",\"messages\":\"hi\"}", 400, "messages", "invalid_type"},
    {"C1", CHAT, "{" MODEL ",\"messages\":null}", 400, "messages", "invalid_type"},
    /* C2 */
    {"C2", CHAT, MSG1("{\"content\":\"hi\"}"), 400, "messages[0].role", "missing_required_parameter"},
    {"C2", CHAT, MSG1("{\"role\":\"wizard\",\"content\":\"hi\"}"), 400, "messages[0].role", "invalid_value"},
    {"C2", CHAT, MSG1("{\"role\":\"function\",\"content\":\"hi\"}"), 400, "messages[0].role", "invalid_value"},
    {"C2", CHAT, MSG1("{\"role\":\"USER\",\"content\":\"hi\"}"), 400, "messages[0].role", "invalid_value"},
    {"C2", CHAT, MSG1("{\"role\":7,\"content\":\"hi\"}"), 400, "messages[0].role", "invalid_type"},
    {"C2", CHAT, MSG1("{\"role\":\"user\",\"content\":5}"), 400, "messages[0].content", "invalid_type"},
    {"C2", CHAT, MSG1("{\"role\":\"user\",\"content\":null}"), 400, "messages[0].content", "invalid_type"},
    {"C2", CHAT, MSG1("{\"role\":\"user\"}"), 400, "messages[0].content", "missing_required_parameter"},
    {"C2", CHAT, MSG1("{\"role\":\"user\",\"content\":{\"text\":\"hi\"}}"), 400, "messages[0].content",
     "invalid_type"},
    {"C2", CHAT, MSG1("\"hi\""), 400, "messages[0]", "invalid_type"},
    {"C2", CHAT, MSG1("{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":null}"), 400,
     "messages[1].content", "invalid_type"},
    {"C2", CHAT, MSG1("{\"role\":\"tool\",\"content\":\"42\"}"), 400, "messages[0].tool_call_id",
     "missing_required_parameter"},
    {"C2", CHAT, MSG1("{\"role\":\"user\",\"content\":\"hi\",\"name\":5}"), 400, "messages[0].name",
     "invalid_type"},
    /* C3: content parts */
    {"C3", CHAT, MSG1("{\"role\":\"user\",\"content\":[{\"type\":\"video\",\"video\":1}]}"), 400,
     "messages[0].content[0].type", "invalid_value"},
    {"C3", CHAT, MSG1("{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}"), 400,
     "messages[0].content[0].type", "invalid_value"},
    {"C3", CHAT, MSG1("{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}"), 400,
     "messages[0].content[0].text", "missing_required_parameter"},
    {"C3", CHAT, MSG1("{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":null}]}"), 400,
     "messages[0].content[0].text", "invalid_type"},
    {"C3", CHAT, MSG1("{\"role\":\"user\",\"content\":[{\"text\":\"a\"}]}"), 400,
     "messages[0].content[0].type", "missing_required_parameter"},
    {"C3", CHAT, MSG1("{\"role\":\"user\",\"content\":[\"a\"]}"), 400, "messages[0].content[0]", "invalid_type"},
    {"C3", CHAT, MSG1("{\"role\":\"user\",\"content\":[]}"), 400, "messages[0].content", "invalid_value"},
    {"C3", CHAT, MSG1("{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":5}]}"), 400,
     "messages[0].content[1].type", "invalid_type"},
    {"C3", CHAT, MSG1("{\"role\":\"system\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
                      "\"data:image/png;base64,AAAA\"}}]}"),
     400, "messages[0].content[0].type", "invalid_value"},
    {"C3", CHAT, MSG1("{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}"), 400,
     "messages[0].content[0].image_url", "missing_required_parameter"},
    {"C3", CHAT, MSG1("{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":\"data:x\"}]}"),
     400, "messages[0].content[0].image_url", "invalid_type"},
    {"C3", CHAT, MSG1("{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}"), 400,
     "messages[0].content[0].image_url.url", "missing_required_parameter"},
    {"C3", CHAT, MSG1("{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
                      "\"data:image/png;base64,AAAA\",\"detail\":\"ultra\"}}]}"),
     400, "messages[0].content[0].image_url.detail", "invalid_value"},
    /* G6 at the edge: no remote or file URLs by default */
    {"G6", CHAT, MSG1("{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
                      "\"http://169.254.169.254/x\"}}]}"),
     400, "messages[0].content[0].image_url.url", "invalid_value"},
    {"G6", CHAT, MSG1("{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
                      "\"file:///etc/passwd\"}}]}"),
     400, "messages[0].content[0].image_url.url", "invalid_value"},
    /* C4 */
    {"C4", CHAT, CHAT_OK(",\"max_tokens\":\"10\""), 400, "max_tokens", "invalid_type"},
    {"C4", CHAT, CHAT_OK(",\"max_tokens\":true"), 400, "max_tokens", "invalid_type"},
    {"C4", CHAT, CHAT_OK(",\"max_tokens\":[10]"), 400, "max_tokens", "invalid_type"},
    {"C4", CHAT, CHAT_OK(",\"max_tokens\":{}"), 400, "max_tokens", "invalid_type"},
    /* C5 */
    {"C5", CHAT, CHAT_OK(",\"stream\":\"yes\""), 400, "stream", "invalid_type"},
    {"C5", CHAT, CHAT_OK(",\"stream\":1"), 400, "stream", "invalid_type"},
    {"C5", CHAT, CHAT_OK(",\"stream_options\":{\"include_usage\":true}"), 400, "stream_options", "invalid_value"},
    {"C5", CHAT, CHAT_OK(",\"stream\":false,\"stream_options\":{}"), 400, "stream_options", "invalid_value"},
    {"C5", CHAT, CHAT_OK(",\"stream\":true,\"stream_options\":{\"include_usage\":true}"), 200, NULL, NULL},
    {"C5", CHAT, CHAT_OK(",\"stream\":true,\"stream_options\":{\"include_usage\":\"y\"}"), 400,
     "stream_options.include_usage", "invalid_type"},
    {"C5", CHAT, CHAT_OK(",\"stream\":true,\"stream_options\":true"), 400, "stream_options", "invalid_type"},
    {"C5", CHAT, CHAT_OK(",\"stream_options\":null"), 200, NULL, NULL},
    {"C5", COMPL, COMPL_OK(",\"stream_options\":{\"include_usage\":true}"), 400, "stream_options",
     "invalid_value"},
    /* C6 */
    {"C6", CHAT, "{\"model\":\"does-not-exist\"," MSGS "}", 404, "model", "model_not_found"},
    {"C6", CHAT, "{\"model\":\"PHI3\"," MSGS "}", 404, "model", "model_not_found"},
    {"C6", CHAT, "{\"model\":\"\"," MSGS "}", 400, "model", "invalid_value"},
    {"C6", CHAT, "{\"model\":5," MSGS "}", 400, "model", "invalid_type"},
    {"C6", CHAT, "{\"model\":null," MSGS "}", 400, "model", "invalid_type"},
    {"C6", CHAT, "{" MSGS "}", 400, "model", "missing_required_parameter"},
    {"C6", CHAT, "{\"model\":\"phi3\"," MSGS "}", 200, NULL, NULL},
    {"C6", COMPL, "{\"model\":\"gpt-4\",\"prompt\":\"x\"}", 404, "model", "model_not_found"},
    /* C7 */
    {"C7", CHAT, CHAT_OK(",\"logprobs\":true,\"top_logprobs\":\"5\""), 400, "top_logprobs", "invalid_type"},
    /* C8: tools, tool_choice and response_format: what is outside the supported subset is refused, not ignored */
    {"C8", CHAT, CHAT_OK(",\"tools\":[]"), 400, "tools", "invalid_value"},
    /* tools: parsed, and with a tool_choice other than none compiled into the answer grammar */
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}]"), 200, NULL, NULL},
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],\"tool_choice\":\"required\",\"parallel_tool_calls\":false"), 200, NULL, NULL},
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}"), 200,
     NULL, NULL},
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}"), 400,
     "tool_choice", "invalid_value"},
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],\"tool_choice\":{\"type\":\"function\"}"), 400, "tool_choice", "invalid_value"},
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],\"response_format\":{\"type\":\"json_object\"}"), 400, "tools",
     "invalid_value"},
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],\"response_format\":{\"type\":\"json_object\"},\"tool_choice\":\"none\""), 200,
     NULL, NULL},
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],\"logprobs\":true"), 400, "logprobs", "unsupported_value"},
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],\"parallel_tool_calls\":1"), 400, "parallel_tool_calls", "invalid_type"},
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
                         "{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]"), 400, "tools", "invalid_value"},
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]"), 400,
     "tools[0].function.name", "invalid_value"},
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"tool\",\"function\":{\"name\":\"f\"}}]"), 400,
     "tools[0].type", "invalid_value"},
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"function\"}]"), 400, "tools[0].function",
     "missing_required_parameter"},
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":[]}}]"),
     400, "tools[0].function.parameters", "invalid_type"},
    {"C8", CHAT, CHAT_OK(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
                         "{\"type\":\"string\",\"not\":{}}}}]"), 400, "tools", "unsupported_value"},
    {"C8", CHAT, CHAT_OK(",\"function_call\":\"auto\""), 400, "function_call", "unsupported_parameter"},
    {"C8", CHAT, CHAT_OK(",\"tools\":{}"), 400, "tools", "invalid_type"},
    {"C8", CHAT, CHAT_OK(",\"tool_choice\":\"required\""), 400, "tool_choice", "invalid_value"},
    {"C8", CHAT, CHAT_OK(",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}"), 400,
     "tool_choice", "invalid_value"},
    {"C8", CHAT, CHAT_OK(",\"tool_choice\":\"sometimes\""), 400, "tool_choice", "invalid_value"},
    {"C8", CHAT, CHAT_OK(",\"tool_choice\":\"none\",\"tools\":null"), 200, NULL, NULL},
    {"C8", CHAT, CHAT_OK(",\"functions\":[{\"name\":\"f\"}]"), 400, "functions", "unsupported_parameter"},
    /* response_format: json_object and json_schema compile at parse time (engine/json_schema.h) */
    {"C8", CHAT, CHAT_OK(",\"response_format\":{\"type\":\"json_object\"}"), 200, NULL, NULL},
    {"C8", CHAT, CHAT_OK(",\"response_format\":{\"type\":\"json_schema\"}"), 400,
     "response_format.json_schema", "missing_required_parameter"},
    {"C8", CHAT, CHAT_OK(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\"}}"),
     400, "response_format.json_schema.schema", "missing_required_parameter"},
    {"C8", CHAT, CHAT_OK(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":[]}"), 400,
     "response_format.json_schema", "invalid_type"},
    {"C8", CHAT, CHAT_OK(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"a b\","
                         "\"schema\":{}}}"), 400, "response_format.json_schema.name", "invalid_value"},
    {"C8", CHAT, CHAT_OK(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
                         "\"strict\":1,\"schema\":{}}}"), 400, "response_format.json_schema.strict", "invalid_type"},
    {"C8", CHAT, CHAT_OK(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
                         "\"schema\":\"s\"}}"), 400, "response_format.json_schema.schema", "invalid_type"},
    {"C8", CHAT, CHAT_OK(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
                         "\"strict\":true,\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":"
                         "\"integer\"}},\"required\":[\"a\"]}}}"), 200, NULL, NULL},
    {"C8", CHAT, CHAT_OK(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
                         "\"schema\":{\"type\":\"string\",\"not\":{}}}}"), 400,
     "response_format.json_schema.schema", "unsupported_value"},
    {"C8", CHAT, CHAT_OK(",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\","
                         "\"schema\":{\"type\":\"strin\"}}}"), 400, "response_format.json_schema.schema",
     "invalid_value"},
    {"C8", CHAT, CHAT_OK(",\"response_format\":{\"type\":\"yaml\"}"), 400, "response_format.type",
     "invalid_value"},
    {"C8", CHAT, CHAT_OK(",\"response_format\":{}"), 400, "response_format.type", "missing_required_parameter"},
    {"C8", CHAT, CHAT_OK(",\"response_format\":\"text\""), 400, "response_format", "invalid_type"},
    {"C8", CHAT, CHAT_OK(",\"response_format\":{\"type\":\"text\"}"), 200, NULL, NULL},
    /* C9: unknown fields are ignored, as are user/metadata/store */
    {"C9", CHAT, CHAT_OK(",\"foo\":1,\"metadata\":{\"a\":\"b\"},\"store\":false,\"user\":\"u-1\""), 200, NULL, NULL},
    {"C9", CHAT, CHAT_OK(",\"user\":5"), 400, "user", "invalid_type"},
    /* D1 */
    {"D1", CHAT, CHAT_OK(",\"max_tokens\":0"), 400, "max_tokens", "invalid_value"},
    {"D1", CHAT, CHAT_OK(",\"max_tokens\":-1"), 400, "max_tokens", "invalid_value"},
    {"D1", CHAT, CHAT_OK(",\"max_tokens\":-2147483648"), 400, "max_tokens", "invalid_value"},
    {"D1", CHAT, CHAT_OK(",\"max_tokens\":2147483648"), 400, "max_tokens", "invalid_value"},
    {"D1", CHAT, CHAT_OK(",\"max_tokens\":1e308"), 400, "max_tokens", "invalid_value"},
    {"D1", CHAT, CHAT_OK(",\"max_tokens\":1.5"), 400, "max_tokens", "invalid_type"},
    {"D1", CHAT, CHAT_OK(",\"max_tokens\":1e999"), 400, "max_tokens", "invalid_json"},
    {"D1", CHAT, CHAT_OK(",\"max_tokens\":2147483647"), 200, NULL, NULL},
    {"D1", CHAT, CHAT_OK(",\"max_tokens\":1e3"), 200, NULL, NULL},
    {"D1", CHAT, CHAT_OK(",\"max_completion_tokens\":0"), 400, "max_completion_tokens", "invalid_value"},
    {"D1", CHAT, CHAT_OK(",\"max_completion_tokens\":\"5\""), 400, "max_completion_tokens", "invalid_type"},
    {"D1", COMPL, COMPL_OK(",\"max_tokens\":-1"), 400, "max_tokens", "invalid_value"},
    /* D4 */
    {"D4", CHAT, CHAT_OK(",\"n\":0"), 400, "n", "invalid_value"},
    {"D4", CHAT, CHAT_OK(",\"n\":-1"), 400, "n", "invalid_value"},
    {"D4", CHAT, CHAT_OK(",\"n\":9"), 400, "n", "invalid_value"},
    {"D4", CHAT, CHAT_OK(",\"n\":1000000"), 400, "n", "invalid_value"},
    {"D4", CHAT, CHAT_OK(",\"n\":9223372036854775808"), 400, "n", "invalid_value"},
    {"D4", CHAT, CHAT_OK(",\"n\":2.5"), 400, "n", "invalid_type"},
    {"D4", CHAT, CHAT_OK(",\"n\":8"), 200, NULL, NULL},
    {"D4", COMPL, COMPL_OK(",\"n\":1000000"), 400, "n", "invalid_value"},
    /* D5: n > 1 with greedy sampling is accepted (OpenAI does; choices are then identical) */
    {"D5", CHAT, CHAT_OK(",\"n\":2,\"temperature\":0"), 200, NULL, NULL},
    /* D6 */
    {"D6", CHAT, CHAT_OK(",\"temperature\":-0.1"), 400, "temperature", "invalid_value"},
    {"D6", CHAT, CHAT_OK(",\"temperature\":2.01"), 400, "temperature", "invalid_value"},
    {"D6", CHAT, CHAT_OK(",\"temperature\":1e999"), 400, "temperature", "invalid_json"},
    {"D6", CHAT, CHAT_OK(",\"temperature\":\"hot\""), 400, "temperature", "invalid_type"},
    {"D6", CHAT, CHAT_OK(",\"temperature\":0,\"top_p\":1.0"), 200, NULL, NULL},
    {"D6", CHAT, CHAT_OK(",\"temperature\":2"), 200, NULL, NULL},
    {"D6", CHAT, CHAT_OK(",\"top_p\":0"), 400, "top_p", "invalid_value"},
    {"D6", CHAT, CHAT_OK(",\"top_p\":1.01"), 400, "top_p", "invalid_value"},
    {"D6", CHAT, CHAT_OK(",\"top_k\":-2"), 400, "top_k", "invalid_value"},
    {"D6", CHAT, CHAT_OK(",\"top_k\":2.5"), 400, "top_k", "invalid_type"},
    {"D6", CHAT, CHAT_OK(",\"top_k\":-1"), 200, NULL, NULL},
    {"D6", CHAT, CHAT_OK(",\"top_k\":0"), 200, NULL, NULL},
    {"D6", CHAT, CHAT_OK(",\"min_p\":1.5"), 400, "min_p", "invalid_value"},
    {"D6", CHAT, CHAT_OK(",\"min_p\":-0.01"), 400, "min_p", "invalid_value"},
    {"D6", CHAT, CHAT_OK(",\"min_p\":1"), 200, NULL, NULL},
    /* D7 */
    {"D7", CHAT, CHAT_OK(",\"presence_penalty\":2.01"), 400, "presence_penalty", "invalid_value"},
    {"D7", CHAT, CHAT_OK(",\"presence_penalty\":-2.01"), 400, "presence_penalty", "invalid_value"},
    {"D7", CHAT, CHAT_OK(",\"frequency_penalty\":2.01"), 400, "frequency_penalty", "invalid_value"},
    {"D7", CHAT, CHAT_OK(",\"frequency_penalty\":-2.01"), 400, "frequency_penalty", "invalid_value"},
    {"D7", CHAT, CHAT_OK(",\"presence_penalty\":-2,\"frequency_penalty\":2"), 200, NULL, NULL},
    {"D7", CHAT, CHAT_OK(",\"repetition_penalty\":0"), 400, "repetition_penalty", "invalid_value"},
    {"D7", CHAT, CHAT_OK(",\"repetition_penalty\":-1"), 400, "repetition_penalty", "invalid_value"},
    {"D7", CHAT, CHAT_OK(",\"repetition_penalty\":2.5"), 400, "repetition_penalty", "invalid_value"},
    {"D7", CHAT, CHAT_OK(",\"repetition_penalty\":2"), 200, NULL, NULL},
    /* D8 */
    {"D8", CHAT, CHAT_OK(",\"seed\":-1"), 200, NULL, NULL},
    {"D8", CHAT, CHAT_OK(",\"seed\":9223372036854775807"), 200, NULL, NULL},
    {"D8", CHAT, CHAT_OK(",\"seed\":-9223372036854775808"), 200, NULL, NULL},
    {"D8", CHAT, CHAT_OK(",\"seed\":9007199254740993"), 200, NULL, NULL},
    {"D8", CHAT, CHAT_OK(",\"seed\":9223372036854775808"), 400, "seed", "invalid_value"},
    {"D8", CHAT, CHAT_OK(",\"seed\":1.5"), 400, "seed", "invalid_type"},
    {"D8", CHAT, CHAT_OK(",\"seed\":\"42\""), 400, "seed", "invalid_type"},
    /* D9: server-extension integers */
    {"D9", CHAT, CHAT_OK(",\"min_tokens\":-1"), 400, "min_tokens", "invalid_value"},
    {"D9", CHAT, CHAT_OK(",\"min_tokens\":-2147483648"), 400, "min_tokens", "invalid_value"},
    {"D9", CHAT, CHAT_OK(",\"max_tokens\":5,\"min_tokens\":6"), 400, "min_tokens", "invalid_value"},
    {"D9", CHAT, CHAT_OK(",\"max_tokens\":5,\"min_tokens\":5"), 200, NULL, NULL},
    {"D9", CHAT, CHAT_OK(",\"top_k\":-2147483648"), 400, "top_k", "invalid_value"},
    /* D10 */
    {"D10", CHAT, CHAT_OK(",\"logit_bias\":{\"-1\":5}"), 400, "logit_bias.-1", "invalid_value"},
    {"D10", CHAT, CHAT_OK(",\"logit_bias\":{\"999999999\":5}"), 400, "logit_bias.999999999", "invalid_value"},
    {"D10", CHAT, CHAT_OK(",\"logit_bias\":{\"32064\":5}"), 400, "logit_bias.32064", "invalid_value"},
    {"D10", CHAT, CHAT_OK(",\"logit_bias\":{\"abc\":5}"), 400, "logit_bias.abc", "invalid_value"},
    {"D10", CHAT, CHAT_OK(",\"logit_bias\":{\"05\":5}"), 400, "logit_bias.05", "invalid_value"},
    {"D10", CHAT, CHAT_OK(",\"logit_bias\":{\"\":5}"), 400, "logit_bias.", "invalid_value"},
    {"D10", CHAT, CHAT_OK(",\"logit_bias\":{\"99999999999999999999\":5}"), 400, "logit_bias.99999999999999999999",
     "invalid_value"},
    {"D10", CHAT, CHAT_OK(",\"logit_bias\":{\"5\":1e9}"), 400, "logit_bias.5", "invalid_value"},
    {"D10", CHAT, CHAT_OK(",\"logit_bias\":{\"5\":-100.5}"), 400, "logit_bias.5", "invalid_value"},
    {"D10", CHAT, CHAT_OK(",\"logit_bias\":{\"5\":-1e999}"), 400, "logit_bias.5", "invalid_json"},
    {"D10", CHAT, CHAT_OK(",\"logit_bias\":{\"5\":\"x\"}"), 400, "logit_bias.5", "invalid_type"},
    {"D10", CHAT, CHAT_OK(",\"logit_bias\":[5]"), 400, "logit_bias", "invalid_type"},
    {"D10", CHAT, CHAT_OK(",\"logit_bias\":{\"5\":1,\"5\":2}"), 400, "logit_bias.5", "duplicate_key"},
    {"D10", CHAT, CHAT_OK(",\"logit_bias\":{\"0\":-100,\"32063\":100}"), 200, NULL, NULL},
    /* D11 */
    {"D11", CHAT, CHAT_OK(",\"logprobs\":true,\"top_logprobs\":21"), 400, "top_logprobs", "invalid_value"},
    {"D11", CHAT, CHAT_OK(",\"logprobs\":true,\"top_logprobs\":-1"), 400, "top_logprobs", "invalid_value"},
    {"D11", CHAT, CHAT_OK(",\"logprobs\":false,\"top_logprobs\":5"), 400, "top_logprobs", "invalid_value"},
    {"D11", CHAT, CHAT_OK(",\"top_logprobs\":5"), 400, "top_logprobs", "invalid_value"},
    {"D11", CHAT, CHAT_OK(",\"logprobs\":\"true\""), 400, "logprobs", "invalid_type"},
    {"D11", CHAT, CHAT_OK(",\"logprobs\":true,\"top_logprobs\":20"), 200, NULL, NULL},
    {"D11", COMPL, COMPL_OK(",\"logprobs\":6"), 400, "logprobs", "invalid_value"},
    {"D11", COMPL, COMPL_OK(",\"logprobs\":-1"), 400, "logprobs", "invalid_value"},
    {"D11", COMPL, COMPL_OK(",\"logprobs\":true"), 400, "logprobs", "invalid_type"},
    {"D11", COMPL, COMPL_OK(",\"logprobs\":5,\"echo\":true"), 200, NULL, NULL},
    /* E1: empty chat content is a valid message (the template adds tokens); an empty
     * completions prompt is refused (vLLM CVE-2024-8768) */
    {"E1", CHAT, MSG1("{\"role\":\"user\",\"content\":\"\"}"), 200, NULL, NULL},
    {"E1", CHAT, MSG1("{\"role\":\"user\",\"content\":\"   \"}"), 200, NULL, NULL},
    {"E1", COMPL, PROMPT("\"\""), 400, "prompt", "invalid_value"},
    {"E1", COMPL, PROMPT("[\"a\",\"\"]"), 400, "prompt[1]", "invalid_value"},
    /* E2: token-id prompts */
    {"E2", COMPL, PROMPT("[-1]"), 400, "prompt[0]", "invalid_value"},
    {"E2", COMPL, PROMPT("[32064]"), 400, "prompt[0]", "invalid_value"},
    {"E2", COMPL, PROMPT("[1,2147483648]"), 400, "prompt[1]", "invalid_value"},
    {"E2", COMPL, PROMPT("[1,1e300]"), 400, "prompt[1]", "invalid_value"},
    {"E2", COMPL, PROMPT("[1.5]"), 400, "prompt[0]", "invalid_type"},
    {"E2", COMPL, PROMPT("[[1,2],[-1]]"), 400, "prompt[1][0]", "invalid_value"},
    {"E2", COMPL, PROMPT("[[1,2],[]]"), 400, "prompt[1]", "invalid_value"},
    {"E2", COMPL, PROMPT("[[1,2],3]"), 400, "prompt[1]", "invalid_type"},
    {"E2", COMPL, PROMPT("[[\"a\"]]"), 400, "prompt[0][0]", "invalid_type"},
    {"E2", COMPL, PROMPT("[1,\"a\"]"), 400, "prompt[1]", "invalid_type"},
    {"E2", COMPL, PROMPT("[\"a\",1]"), 400, "prompt[1]", "invalid_type"},
    {"E2", COMPL, PROMPT("[true]"), 400, "prompt[0]", "invalid_type"},
    {"E2", COMPL, PROMPT("[]"), 400, "prompt", "invalid_value"},
    {"E2", COMPL, PROMPT("5"), 400, "prompt", "invalid_type"},
    {"E2", COMPL, PROMPT("null"), 400, "prompt", "invalid_type"},
    {"E2", COMPL, "{" MODEL "}", 400, "prompt", "missing_required_parameter"},
    {"E2", COMPL, PROMPT("[0,32063]"), 200, NULL, NULL},
    {"E2", COMPL, PROMPT("[[0],[32063,1]]"), 200, NULL, NULL},
    {"E2", COMPL, PROMPT("[\"a\",\"b\"]"), 200, NULL, NULL},
    /* E6: request-supplied templates */
    {"E6", CHAT, CHAT_OK(",\"chat_template\":\"{{ x }}\""), 400, "chat_template", "unsupported_parameter"},
    {"E6", CHAT, CHAT_OK(",\"chat_template_kwargs\":{\"tokenize\":true}"), 400, "chat_template_kwargs",
     "unsupported_parameter"},
    /* F1/F2: stop lists */
    {"F1", CHAT, CHAT_OK(",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]"), 400, "stop", "invalid_value"},
    {"F1", CHAT, CHAT_OK(",\"stop\":[\"a\",\"b\",\"c\",\"d\"]"), 200, NULL, NULL},
    {"F2", CHAT, CHAT_OK(",\"stop\":[\"\"]"), 400, "stop[0]", "invalid_value"},
    {"F2", CHAT, CHAT_OK(",\"stop\":\"\""), 400, "stop", "invalid_value"},
    {"F2", CHAT, CHAT_OK(",\"stop\":[\"a\",\"\xC3\"]"), 400, "stop[1]", "invalid_json"},
    {"F2", CHAT, CHAT_OK(",\"stop\":\"0123456789012345678901234567890123456789012345678901234567890123x\""),
     400, "stop", "invalid_value"},
    {"F2", CHAT, CHAT_OK(",\"stop\":[1]"), 400, "stop[0]", "invalid_type"},
    {"F2", CHAT, CHAT_OK(",\"stop\":5"), 400, "stop", "invalid_type"},
    {"F2", CHAT, CHAT_OK(",\"stop\":[]"), 200, NULL, NULL},
    {"F2", COMPL, COMPL_OK(",\"stop\":[\"\\n\\n\"]"), 200, NULL, NULL},
    /* other fields of the issue */
    {"ext", CHAT, CHAT_OK(",\"stop_token_ids\":[32064]"), 400, "stop_token_ids[0]", "invalid_value"},
    {"ext", CHAT, CHAT_OK(",\"stop_token_ids\":[\"1\"]"), 400, "stop_token_ids[0]", "invalid_type"},
    {"ext", CHAT, CHAT_OK(",\"stop_token_ids\":7"), 400, "stop_token_ids", "invalid_type"},
    {"ext", CHAT, CHAT_OK(",\"ignore_eos\":\"no\""), 400, "ignore_eos", "invalid_type"},
    {"ext", CHAT, CHAT_OK(",\"skip_special_tokens\":1"), 400, "skip_special_tokens", "invalid_type"},
    {"ext", CHAT, CHAT_OK(",\"include_stop_str_in_output\":[]"), 400, "include_stop_str_in_output",
     "invalid_type"},
    {"ext", COMPL, COMPL_OK(",\"echo\":\"y\""), 400, "echo", "invalid_type"},
    {"ext", COMPL, COMPL_OK(",\"best_of\":2"), 400, "best_of", "unsupported_value"},
    {"ext", COMPL, COMPL_OK(",\"best_of\":1"), 200, NULL, NULL},
    {"ext", COMPL, COMPL_OK(",\"suffix\":\"end\""), 400, "suffix", "unsupported_parameter"},
    {"ext", COMPL, COMPL_OK(",\"suffix\":null"), 200, NULL, NULL},
    /* explicit nulls mean "not given" */
    {"null", CHAT, CHAT_OK(",\"max_tokens\":null,\"stop\":null,\"seed\":null,\"logit_bias\":null,\"n\":null,"
                           "\"temperature\":null,\"top_p\":null,\"user\":null,\"tools\":null,"
                           "\"tool_choice\":null,\"response_format\":null,\"logprobs\":null,"
                           "\"top_logprobs\":null,\"stream\":null"),
     200, NULL, NULL},
    /* roles and tool turns */
    {"role", CHAT, MSG1("{\"role\":\"developer\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"x\"}"),
     200, NULL, NULL},
    {"role", CHAT, MSG1("{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
                        "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
                        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"}"),
     200, NULL, NULL},
    {"role", CHAT, MSG1("{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\"}]}"), 400,
     "messages[0].tool_calls[0].function", "missing_required_parameter"},
    {"role", CHAT, MSG1("{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"tool\",\"function\":"
                        "{\"name\":\"f\",\"arguments\":\"{}\"}}]}"),
     400, "messages[0].tool_calls[0].type", "invalid_value"},
    {"role", CHAT, MSG1("{\"role\":\"assistant\",\"tool_calls\":{}}"), 400, "messages[0].tool_calls",
     "invalid_type"},
    {"role", CHAT, MSG1("{\"role\":\"assistant\",\"content\":[{\"type\":\"image_url\",\"image_url\":"
                        "{\"url\":\"data:,\"}}]}"),
     400, "messages[0].content[0].type", "invalid_value"},
};

/* Three or more hex digits after 0x look like an address: no error body may contain one. */
static int has_address(const char *s)
{
    for (const char *p = strstr(s, "0x"); p != NULL; p = strstr(p + 2, "0x"))
        if (isxdigit((unsigned char)p[2]) && isxdigit((unsigned char)p[3]) && isxdigit((unsigned char)p[4]))
            return 1;
    return 0;
}

/* Parses body on ep; returns the status, and checks the error against param/code. */
static int run_one(const char *id, enum endpoint ep, const char *body, size_t len, const struct srv_limits *lim,
                   int want_status, const char *want_param, const char *want_code)
{
    struct srv_error err;
    memset(&err, 0x5A, sizeof(err));
    int rc;
    if (ep == CHAT) {
        struct srv_chat_request *req = (struct srv_chat_request *)&err; /* poison: must be reset */
        rc = srv_chat_request_parse(body, len, lim, &req, &err);
        CHECK((rc == 0) == (req != NULL), "[%s] out pointer vs rc", id);
        srv_chat_request_destroy(rc == 0 ? req : NULL);
    } else {
        struct srv_completion_request *req = (struct srv_completion_request *)&err;
        rc = srv_completion_request_parse(body, len, lim, &req, &err);
        CHECK((rc == 0) == (req != NULL), "[%s] out pointer vs rc", id);
        srv_completion_request_destroy(rc == 0 ? req : NULL);
    }
    int status = rc == 0 ? 200 : srv_error_status(rc);
    CHECK(status == want_status, "[%s] %.120s: status %d, want %d (%s: %s, param '%s')", id, body, status,
          want_status, rc ? srv_error_name(rc) : "ok", rc ? err.message : "", rc ? err.param : "");
    if (rc == 0 || status != want_status)
        return status;
    CHECK(err.code == rc, "[%s] err.code", id);
    /* A want_param ending in '*' matches by prefix ("*" alone: any param). */
    const char *wp = want_param ? want_param : "";
    size_t wl = strlen(wp);
    bool prefix = wl > 0 && wp[wl - 1] == '*';
    bool param_ok = prefix ? strncmp(err.param, wp, wl - 1) == 0 : strcmp(err.param, wp) == 0;
    CHECK(param_ok, "[%s] %.120s: param '%s', want '%s' (%s)", id, body, err.param, wp, err.message);
    const char *cs = srv_error_code_string(rc);
    CHECK((want_code == NULL && cs == NULL) || (want_code && cs && strcmp(cs, want_code) == 0),
          "[%s] %.120s: code %s, want %s (%s)", id, body, cs ? cs : "null", want_code ? want_code : "null",
          err.message);
    /* Every error renders to a strict-valid OpenAI body without addresses. */
    char out[1024];
    size_t n = srv_error_render_err(&err, out, sizeof(out));
    struct eng_json_doc *doc = NULL;
    struct srv_error e2;
    CHECK(n < sizeof(out) && srv_json_parse(out, n, NULL, &doc, &e2) == 0, "[%s] rendered body: %s", id, out);
    eng_json_free(doc);
    CHECK(!has_address(out), "[%s] address-like text in %s", id, out);
    return status;
}

static void test_table(void)
{
    struct srv_limits lim = limits();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct rcase *c = &cases[i];
        run_one(c->id, c->ep, c->body, strlen(c->body), &lim, c->status, c->param, c->code);
    }
}

/* A growing string buffer for generated bodies. */
struct sbuf {
    char *s;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        if (b->s == NULL)
            abort();
    }
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

static void sb_repeat(struct sbuf *b, const char *s, size_t times, const char *sep)
{
    for (size_t i = 0; i < times; i++) {
        if (i > 0)
            sb_add(b, sep);
        sb_add(b, s);
    }
}

/* Generated cases: sizes too large to spell in the table. */
static void test_generated(void)
{
    struct srv_limits lim = limits();
    struct sbuf b = {0};

    /* B5: nesting 129 deep inside messages[0].content, and 100000 deep in response_format. */
    b.len = 0;
    sb_add(&b, "{" MODEL ",\"messages\":[{\"role\":\"user\",\"content\":");
    sb_repeat(&b, "[", 126, ""); /* root object (1) + messages (2) + message (3) + 126 = 129 */
    sb_repeat(&b, "]", 126, "");
    sb_add(&b, "}]}");
    run_one("B5", CHAT, b.s, b.len, &lim, 400, "messages[0].content[0]*", "invalid_json");
    b.len = 0;
    sb_add(&b, "{" MODEL "," MSGS ",\"response_format\":");
    sb_repeat(&b, "[", 100000, "");
    sb_repeat(&b, "]", 100000, "");
    sb_add(&b, "}");
    run_one("B5", CHAT, b.s, b.len, &lim, 400, "response_format[0]*", "invalid_json");

    /* C3: 10 000 content parts; 65 is one over the default limit of 64. */
    size_t counts[] = {10000, 65, 64};
    for (size_t k = 0; k < 3; k++) {
        b.len = 0;
        sb_add(&b, "{" MODEL ",\"messages\":[{\"role\":\"user\",\"content\":[");
        sb_repeat(&b, "{\"type\":\"text\",\"text\":\"a\"}", counts[k], ",");
        sb_add(&b, "]}]}");
        run_one("C3", CHAT, b.s, b.len, &lim, counts[k] > 64 ? 400 : 200, "messages[0].content", "invalid_value");
    }
    /* G5 at the edge: 9 images (limit 8). */
    b.len = 0;
    sb_add(&b, "{" MODEL ",\"messages\":[{\"role\":\"user\",\"content\":[");
    sb_repeat(&b, "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AA==\"}}", 9, ",");
    sb_add(&b, "]}]}");
    run_one("G5", CHAT, b.s, b.len, &lim, 400, "messages[0].content[8]", "invalid_value");

    /* Message count over the limit. */
    struct srv_limits small = lim;
    small.max_messages = 3;
    b.len = 0;
    sb_add(&b, "{" MODEL ",\"messages\":[");
    sb_repeat(&b, "{\"role\":\"user\",\"content\":\"x\"}", 4, ",");
    sb_add(&b, "]}");
    run_one("C1", CHAT, b.s, b.len, &small, 400, "messages", "invalid_value");
    run_one("C1", CHAT, b.s, b.len, &lim, 200, NULL, NULL);

    /* F1: 10 000 stop strings; and a configured limit of 16. */
    b.len = 0;
    sb_add(&b, "{" MODEL "," MSGS ",\"stop\":[");
    sb_repeat(&b, "\"s\"", 10000, ",");
    sb_add(&b, "]}");
    run_one("F1", CHAT, b.s, b.len, &lim, 400, "stop", "invalid_value");
    struct srv_limits sixteen = lim;
    sixteen.max_stop = 1000; /* clamped to the ceiling of 16 */
    b.len = 0;
    sb_add(&b, "{" MODEL "," MSGS ",\"stop\":[");
    sb_repeat(&b, "\"s\"", 16, ",");
    sb_add(&b, "]}");
    run_one("F1", CHAT, b.s, b.len, &sixteen, 200, NULL, NULL);
    b.len = 0;
    sb_add(&b, "{" MODEL "," MSGS ",\"stop\":[");
    sb_repeat(&b, "\"s\"", 17, ",");
    sb_add(&b, "]}");
    run_one("F1", CHAT, b.s, b.len, &sixteen, 400, "stop", "invalid_value");

    /* F2: one stop string of 1 MiB. */
    b.len = 0;
    sb_add(&b, "{" MODEL "," MSGS ",\"stop\":[\"");
    sb_repeat(&b, "abcdefghijklmnop", 65536, "");
    sb_add(&b, "\"]}");
    run_one("F2", CHAT, b.s, b.len, &lim, 400, "stop[0]", "invalid_value");

    /* D10: 301 logit_bias entries (limit 300). */
    b.len = 0;
    sb_add(&b, "{" MODEL "," MSGS ",\"logit_bias\":{");
    for (int i = 0; i < 301; i++) {
        char e[32];
        snprintf(e, sizeof(e), "%s\"%d\":1", i ? "," : "", i);
        sb_add(&b, e);
    }
    sb_add(&b, "}}");
    run_one("D10", CHAT, b.s, b.len, &lim, 400, "logit_bias", "invalid_value");

    /* Too many completions prompts (limit 32). */
    b.len = 0;
    sb_add(&b, "{" MODEL ",\"prompt\":[");
    sb_repeat(&b, "\"p\"", 33, ",");
    sb_add(&b, "]}");
    run_one("E2", COMPL, b.s, b.len, &lim, 400, "prompt", "invalid_value");

    /* B2 at the request level: every strict prefix of a valid body is a 400. */
    const char *full = CHAT_OK(",\"max_tokens\":7,\"stop\":[\"x\"],\"logit_bias\":{\"3\":1}");
    for (size_t cut = 0; cut < strlen(full); cut++) {
        char *p = malloc(cut ? cut : 1);
        if (p == NULL)
            abort();
        memcpy(p, full, cut);
        run_one("B2", CHAT, p, cut, &lim, 400, "*", "invalid_json");
        free(p);
    }
    free(b.s);
}

static void test_chat_values(void)
{
    struct srv_limits lim = limits();
    const char *body =
        "{\"model\":\"phi3\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"Be brief.\",\"name\":\"sys\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"What is \\u00e9?\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\",\"detail\":\"low\"}}]},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
        "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"},"
        "{\"role\":\"developer\",\"content\":\"\"}],"
        "\"n\":3,\"max_tokens\":100,\"max_completion_tokens\":50,\"temperature\":0.7,\"top_p\":0.9,"
        "\"top_k\":99999,\"min_p\":0.05,\"presence_penalty\":-1.5,\"frequency_penalty\":0.5,"
        "\"repetition_penalty\":1.1,\"min_tokens\":2,\"seed\":9007199254740993,\"ignore_eos\":true,"
        "\"skip_special_tokens\":false,\"include_stop_str_in_output\":true,\"stop\":\"END\","
        "\"stop_token_ids\":[32000,32007],\"logit_bias\":{\"13\":-100,\"32063\":2.5},"
        "\"logprobs\":true,\"top_logprobs\":3,\"stream\":true,\"stream_options\":{\"include_usage\":true},"
        "\"user\":\"u\"}";
    struct srv_chat_request *r = NULL;
    struct srv_error err;
    int rc = srv_chat_request_parse(body, strlen(body), &lim, &r, &err);
    CHECK(rc == 0, "full chat body: %s %s (%s)", srv_error_name(rc), err.message, err.param);
    if (rc != 0)
        return;
    CHECK(strcmp(r->model, "phi3") == 0, "model");
    CHECK(r->n_messages == 5 && r->n_images == 1, "messages %zu images %zu", r->n_messages, r->n_images);
    const struct srv_message *m = r->messages;
    CHECK(m[0].role == SRV_ROLE_SYSTEM && m[0].content_kind == SRV_CONTENT_TEXT && strcmp(m[0].text, "Be brief.") == 0 &&
              m[0].text_len == 9 && strcmp(m[0].name, "sys") == 0,
          "system message");
    CHECK(m[1].role == SRV_ROLE_USER && m[1].content_kind == SRV_CONTENT_PARTS && m[1].n_parts == 2, "user parts");
    if (m[1].n_parts == 2) {
        CHECK(m[1].parts[0].type == SRV_PART_TEXT && strcmp(m[1].parts[0].text, "What is \xC3\xA9?") == 0 &&
                  m[1].parts[0].len == 11,
              "text part");
        CHECK(m[1].parts[1].type == SRV_PART_IMAGE_URL &&
                  strcmp(m[1].parts[1].text, "data:image/png;base64,AAAA") == 0 &&
                  m[1].parts[1].detail == SRV_IMAGE_DETAIL_LOW,
              "image part");
    }
    CHECK(m[2].role == SRV_ROLE_ASSISTANT && m[2].content_kind == SRV_CONTENT_NONE && m[2].n_tool_calls == 1,
          "assistant tool call");
    if (m[2].n_tool_calls == 1)
        CHECK(strcmp(m[2].tool_calls[0].id, "c1") == 0 && strcmp(m[2].tool_calls[0].name, "f") == 0 &&
                  strcmp(m[2].tool_calls[0].arguments, "{\"a\":1}") == 0,
              "tool call fields");
    CHECK(m[3].role == SRV_ROLE_TOOL && strcmp(m[3].tool_call_id, "c1") == 0 && strcmp(m[3].text, "42") == 0,
          "tool message");
    CHECK(m[4].role == SRV_ROLE_SYSTEM && m[4].content_kind == SRV_CONTENT_TEXT && m[4].text_len == 0 &&
              m[4].name == NULL,
          "developer -> system");
    const struct srv_sampling *s = &r->sampling;
    CHECK(s->n == 3, "n");
    CHECK(s->max_tokens == 50, "max_completion_tokens wins: %d", s->max_tokens);
    CHECK(s->has_temperature && s->temperature == 0.7, "temperature");
    CHECK(s->has_top_p && s->top_p == 0.9, "top_p");
    CHECK(s->has_top_k && s->top_k == VOCAB, "top_k clamped to vocab: %d", s->top_k);
    CHECK(s->has_min_p && s->min_p == 0.05, "min_p");
    CHECK(s->presence_penalty == -1.5 && s->frequency_penalty == 0.5, "penalties");
    CHECK(s->has_repetition_penalty && s->repetition_penalty == 1.1, "repetition_penalty");
    CHECK(s->min_tokens == 2, "min_tokens");
    CHECK(s->has_seed && s->seed == 9007199254740993LL, "seed exact above 2^53: %lld", (long long)s->seed);
    CHECK(s->ignore_eos && !s->skip_special_tokens && s->include_stop_str_in_output, "bools");
    CHECK(s->n_stop == 1 && strcmp(s->stop[0], "END") == 0, "stop string");
    CHECK(s->n_stop_token_ids == 2 && s->stop_token_ids[0] == 32000 && s->stop_token_ids[1] == 32007,
          "stop_token_ids");
    CHECK(s->n_logit_bias == 2 && s->logit_bias[0].token == 13 && s->logit_bias[0].bias == -100.0f &&
              s->logit_bias[1].token == 32063 && s->logit_bias[1].bias == 2.5f,
          "logit_bias");
    CHECK(r->logprobs && r->top_logprobs == 3, "logprobs");
    CHECK(s->stream && s->include_usage, "stream");
    srv_chat_request_destroy(r);

    /* Defaults of a minimal request. */
    const char *min = CHAT_OK("");
    rc = srv_chat_request_parse(min, strlen(min), &lim, &r, &err);
    CHECK(rc == 0, "minimal chat");
    if (rc != 0)
        return;
    s = &r->sampling;
    CHECK(s->n == 1 && s->max_tokens == 0 && !s->has_temperature && s->temperature == 1.0 && !s->has_top_p &&
              s->top_p == 1.0 && !s->has_top_k && s->top_k == 0 && !s->has_min_p && s->min_p == 0.0 &&
              s->presence_penalty == 0.0 && s->frequency_penalty == 0.0 && !s->has_repetition_penalty &&
              s->repetition_penalty == 1.0 && s->min_tokens == 0 && !s->has_seed && !s->ignore_eos &&
              s->skip_special_tokens && !s->include_stop_str_in_output && s->n_stop == 0 &&
              s->n_stop_token_ids == 0 && s->n_logit_bias == 0 && !s->stream && !s->include_usage,
          "sampling defaults");
    CHECK(!r->logprobs && r->top_logprobs == 0 && r->n_images == 0, "chat defaults");
    CHECK(r->messages[0].role == SRV_ROLE_USER && strcmp(r->messages[0].text, "hi") == 0, "message");
    srv_chat_request_destroy(r);

    /* top_k -1 means off; stream_options present without include_usage means false. */
    const char *off = CHAT_OK(",\"top_k\":-1,\"stream\":true,\"stream_options\":{}");
    rc = srv_chat_request_parse(off, strlen(off), &lim, &r, &err);
    CHECK(rc == 0 && r->sampling.has_top_k && r->sampling.top_k == 0 && !r->sampling.include_usage, "top_k -1");
    srv_chat_request_destroy(r);

    /* Any model name is accepted when the caller lists none. */
    struct srv_limits any = lim;
    any.n_model_names = 0;
    const char *other = "{\"model\":\"whatever\"," MSGS "}";
    rc = srv_chat_request_parse(other, strlen(other), &any, &r, &err);
    CHECK(rc == 0 && strcmp(r->model, "whatever") == 0, "any model");
    srv_chat_request_destroy(r);

    /* Remote image URLs when the caller allows them. */
    struct srv_limits remote = lim;
    remote.allow_remote_image_urls = true;
    const char *img = MSG1("{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
                           "\"https://example.com/a.png\"}}]}");
    rc = srv_chat_request_parse(img, strlen(img), &remote, &r, &err);
    CHECK(rc == 0 && r->n_images == 1, "remote image allowed");
    srv_chat_request_destroy(r);
    srv_chat_request_destroy(NULL);
}

static void test_completion_values(void)
{
    struct srv_limits lim = limits();
    struct srv_completion_request *r = NULL;
    struct srv_error err;
    const char *b1 = COMPL_OK(",\"echo\":true,\"logprobs\":0,\"max_tokens\":16,\"n\":2,\"stop\":[\"\\n\"]");
    int rc = srv_completion_request_parse(b1, strlen(b1), &lim, &r, &err);
    CHECK(rc == 0, "completion: %s", err.message);
    if (rc == 0) {
        CHECK(r->n_prompts == 1 && strcmp(r->prompts[0].text, "Once") == 0 && r->prompts[0].text_len == 4 &&
                  r->prompts[0].ids == NULL,
              "text prompt");
        CHECK(r->echo && r->logprobs == 0 && r->sampling.max_tokens == 16 && r->sampling.n == 2 &&
                  r->sampling.n_stop == 1 && strcmp(r->sampling.stop[0], "\n") == 0,
              "completion fields");
    }
    srv_completion_request_destroy(r);

    const char *b2 = PROMPT("[[1,2,3],[32063]]");
    rc = srv_completion_request_parse(b2, strlen(b2), &lim, &r, &err);
    CHECK(rc == 0 && r->n_prompts == 2, "batched ids");
    if (rc == 0) {
        CHECK(r->prompts[0].text == NULL && r->prompts[0].n_ids == 3 && r->prompts[0].ids[2] == 3 &&
                  r->prompts[1].n_ids == 1 && r->prompts[1].ids[0] == 32063,
              "id prompts");
        CHECK(r->logprobs == -1 && !r->echo && r->sampling.max_tokens == 0, "completion defaults");
    }
    srv_completion_request_destroy(r);

    const char *b3 = PROMPT("[5,6]");
    rc = srv_completion_request_parse(b3, strlen(b3), &lim, &r, &err);
    CHECK(rc == 0 && r->n_prompts == 1 && r->prompts[0].n_ids == 2 && r->prompts[0].ids[1] == 6, "flat ids");
    srv_completion_request_destroy(r);

    const char *b4 = PROMPT("[\"a\",\"bc\"]");
    rc = srv_completion_request_parse(b4, strlen(b4), &lim, &r, &err);
    CHECK(rc == 0 && r->n_prompts == 2 && strcmp(r->prompts[1].text, "bc") == 0, "string prompts");
    srv_completion_request_destroy(r);
    srv_completion_request_destroy(NULL);
}

int main(void)
{
    test_table();
    test_generated();
    test_chat_values();
    test_completion_values();
    printf("test_request: %zu table cases\n", sizeof(cases) / sizeof(cases[0]));
    return tu_finish("test_request");
}
