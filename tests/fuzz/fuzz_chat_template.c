/* Fuzz target for the chat-template interpreter (engine/chat_template.c, engine/jinja_*.c).
 * Input: one flag byte (bit 0 add_generation_prompt, bit 1 keep_content_parts, bit 2 pass
 * tools), then the template source; an optional "\n@@MESSAGES@@\n" line splits off a JSON
 * messages array that replaces the built-in conversation. Not a correctness test
 * (tests/engine/test_chat_template.c compares with transformers): it only looks for crashes,
 * sanitizer reports and unbounded time or memory.
 *
 * Replayed in CI through tests/fuzz/replay_main.c. The real fuzzer is a one-off, outside meson,
 * from the repository root (copy the seeds first: libFuzzer writes new inputs into its corpus):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *     -D_GNU_SOURCE -Iengine tests/fuzz/fuzz_chat_template.c engine/chat_template.c \
 *     engine/jinja_lex.c engine/jinja_parse.c engine/jinja_eval.c engine/jinja_value.c \
 *     engine/jinja_builtins.c -lcjson -lm -o /tmp/fuzz_chat_template
 *   cp -r tests/fuzz/corpus/chat_template /tmp/chat-corpus
 *   /tmp/fuzz_chat_template -max_total_time=180 -max_len=4096 /tmp/chat-corpus
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat_template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char DEFAULT_MESSAGES[] =
    "[{\"role\":\"system\",\"content\":\"sys\",\"tools\":\"[]\"},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}},"
    "{\"type\":\"text\",\"text\":\"hi \\u00e9 \\ud83d\\ude80\"}]},"
    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
    "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\": 1}\"}}]},"
    "{\"role\":\"tool\",\"content\":\"2.5\",\"tool_call_id\":\"c1\"},"
    "{\"role\":\"user\",\"content\":\"  bye  \",\"name\":\"n\"}]";

static const char TOOLS[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":\"d\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\",\"default\":0.5}}}}}]";

static const char SPLIT[] = "\n@@MESSAGES@@\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t flags = data[0];
    const char *src = (const char *)data + 1;
    size_t src_len = size - 1;
    cJSON *messages = NULL;
    const char *split = memmem(src, src_len, SPLIT, sizeof SPLIT - 1);
    if (split != NULL) {
        size_t tpl_len = (size_t)(split - src);
        messages = cJSON_ParseWithLength(split + sizeof SPLIT - 1, src_len - tpl_len - (sizeof SPLIT - 1));
        src_len = tpl_len;
    }
    if (messages == NULL)
        messages = cJSON_Parse(DEFAULT_MESSAGES);
    cJSON *tools = (flags & 4) ? cJSON_Parse(TOOLS) : NULL;
    /* small bounds keep each execution fast; the bounds themselves are what is being tested */
    struct eng_chat_limits lim = {
        .max_output_bytes = 1 << 20,
        .max_steps = 200000,
        .max_depth = 64,
        .max_memory_bytes = 64 << 20,
    };
    char err[256];
    struct eng_chat_template *t = NULL;
    if (eng_chat_template_parse(src, src_len, &lim, &t, err, sizeof err) == 0) {
        struct eng_chat_input in = {
            .messages = messages,
            .tools = tools,
            .bos_token = "<s>",
            .eos_token = "<|endoftext|>",
            .add_generation_prompt = (flags & 1) != 0,
            .keep_content_parts = (flags & 2) != 0,
        };
        char *out = NULL;
        size_t out_len = 0;
        int rc = eng_chat_template_render(t, &in, &lim, &out, &out_len, err, sizeof err);
        /* the contract: output exactly on success, terminated; a terminated message on failure */
        if ((rc == 0) != (out != NULL) || (rc == 0 && out[out_len] != '\0') ||
            (rc != 0 && memchr(err, '\0', sizeof err) == NULL))
            abort();
        free(out);
    }
    eng_chat_template_destroy(t);
    cJSON_Delete(tools);
    cJSON_Delete(messages);
    return 0;
}
