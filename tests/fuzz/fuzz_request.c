/* Fuzz target: a raw HTTP body through both request parsers (chat and completions), then checks
 * of what came out: an accepted request obeys every documented range, and a refused one renders
 * an OpenAI error body that is itself strict, valid JSON. Not a test of HTTP framing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "request.h"

#include "../test_util.h"

#define VOCAB 32064

/* Walks a NUL-terminated string the parser produced: no embedded NUL, valid UTF-8. */
static void check_text(const char *s, size_t len)
{
    REQUIRE(s != NULL && strlen(s) == len, "string length");
    size_t i = 0;
    while (i < len) {
        size_t k = eng_utf8_seq_len((const unsigned char *)s + i, len - i);
        REQUIRE(k > 0, "string is valid UTF-8");
        i += k;
    }
}

static void check_sampling(const struct srv_sampling *s, const struct srv_limits *lim)
{
    REQUIRE(s->n >= 1 && s->n <= lim->max_n, "n range");
    REQUIRE(s->max_tokens >= 0, "max_tokens range");
    REQUIRE(s->temperature >= 0.0 && s->temperature <= 2.0, "temperature range");
    REQUIRE(s->top_p > 0.0 && s->top_p <= 1.0, "top_p range");
    REQUIRE(s->top_k >= 0 && s->top_k <= VOCAB, "top_k range");
    REQUIRE(s->min_p >= 0.0 && s->min_p <= 1.0, "min_p range");
    REQUIRE(s->presence_penalty >= -2.0 && s->presence_penalty <= 2.0, "presence range");
    REQUIRE(s->frequency_penalty >= -2.0 && s->frequency_penalty <= 2.0, "frequency range");
    REQUIRE(s->repetition_penalty > 0.0 && s->repetition_penalty <= 2.0, "repetition range");
    REQUIRE(s->min_tokens >= 0 && (s->max_tokens == 0 || s->min_tokens <= s->max_tokens), "min_tokens");
    REQUIRE(s->n_stop <= (size_t)lim->max_stop, "stop count");
    for (size_t i = 0; i < s->n_stop; i++) {
        size_t len = strlen(s->stop[i]);
        REQUIRE(len >= 1 && len <= SRV_MAX_STOP_BYTES, "stop length");
        check_text(s->stop[i], len);
    }
    for (size_t i = 0; i < s->n_stop_token_ids; i++)
        REQUIRE(s->stop_token_ids[i] >= 0 && s->stop_token_ids[i] < VOCAB, "stop token id");
    for (size_t i = 0; i < s->n_logit_bias; i++)
        REQUIRE(s->logit_bias[i].token >= 0 && s->logit_bias[i].token < VOCAB &&
                    s->logit_bias[i].bias >= -100.0f && s->logit_bias[i].bias <= 100.0f,
                "logit_bias entry");
    REQUIRE(!s->include_usage || s->stream, "include_usage without stream");
}

static void check_error(const struct srv_error *err, int rc)
{
    REQUIRE(rc < 0 && err->code == rc, "error code");
    int status = srv_error_status(rc);
    REQUIRE(status >= 400 && status < 600, "status");
    /* Only memory exhaustion may be a 5xx on this path: everything else is the client's. */
    REQUIRE(status < 500 || rc == SRV_ERR_NO_MEMORY, "client error reported as 5xx");
    char body[1024];
    size_t n = srv_error_render_err(err, body, sizeof(body));
    REQUIRE(n < sizeof(body), "error body fits");
    struct eng_json_doc *doc = NULL;
    struct srv_error e2;
    REQUIRE(srv_json_parse(body, n, NULL, &doc, &e2) == 0, "error body is strict JSON");
    eng_json_free(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"phi-3-mini", "phi3"};
    struct srv_limits lim;
    srv_limits_default(&lim);
    lim.vocab_size = VOCAB;
    lim.model_names = names;
    lim.n_model_names = 2;
    const char *body = (const char *)data;
    struct srv_error err;

    struct srv_chat_request *chat = NULL;
    int rc = srv_chat_request_parse(body, size, &lim, &chat, &err);
    if (rc == 0) {
        REQUIRE(chat != NULL && chat->n_messages >= 1, "chat messages");
        REQUIRE(chat->n_images <= (size_t)lim.max_images, "image count");
        REQUIRE(chat->top_logprobs >= 0 && chat->top_logprobs <= 20 &&
                    (chat->top_logprobs == 0 || chat->logprobs),
                "top_logprobs");
        check_sampling(&chat->sampling, &lim);
        for (size_t i = 0; i < chat->n_messages; i++) {
            const struct srv_message *m = &chat->messages[i];
            if (m->content_kind == SRV_CONTENT_TEXT)
                check_text(m->text, m->text_len);
            else if (m->content_kind == SRV_CONTENT_PARTS)
                for (size_t j = 0; j < m->n_parts; j++)
                    check_text(m->parts[j].text, m->parts[j].len);
            else
                REQUIRE(m->role == SRV_ROLE_ASSISTANT && m->n_tool_calls > 0, "content-less message");
        }
    } else {
        REQUIRE(chat == NULL, "chat out on error");
        check_error(&err, rc);
    }
    srv_chat_request_destroy(chat);

    struct srv_completion_request *cmpl = NULL;
    rc = srv_completion_request_parse(body, size, &lim, &cmpl, &err);
    if (rc == 0) {
        REQUIRE(cmpl != NULL && cmpl->n_prompts >= 1 && cmpl->n_prompts <= (size_t)lim.max_prompts, "prompts");
        REQUIRE(cmpl->logprobs >= -1 && cmpl->logprobs <= 5, "legacy logprobs");
        check_sampling(&cmpl->sampling, &lim);
        for (size_t i = 0; i < cmpl->n_prompts; i++) {
            const struct srv_prompt *p = &cmpl->prompts[i];
            REQUIRE((p->text != NULL) != (p->ids != NULL), "prompt kind");
            if (p->text != NULL) {
                REQUIRE(p->text_len >= 1, "empty text prompt");
                check_text(p->text, p->text_len);
            } else {
                REQUIRE(p->n_ids >= 1, "empty id prompt");
                for (size_t j = 0; j < p->n_ids; j++)
                    REQUIRE(p->ids[j] >= 0 && p->ids[j] < VOCAB, "prompt token id");
            }
        }
    } else {
        REQUIRE(cmpl == NULL, "completion out on error");
        check_error(&err, rc);
    }
    srv_completion_request_destroy(cmpl);
    return 0;
}
