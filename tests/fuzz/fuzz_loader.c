/* Fuzz target for the model-file loaders: the first byte picks the parser (safetensors image,
 * config.json, or config.json followed by a generation_config.json merge), the rest is input.
 * Not a test of file-system handling (tests/engine/test_safetensors.c does that).
 *
 * Replayed in CI through tests/fuzz/replay_main.c. The real fuzzer is a one-off, outside meson,
 * from the repository root (copy the seeds first: libFuzzer writes new inputs into its corpus):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *     -D_GNU_SOURCE -Iengine -Ikernels tests/fuzz/fuzz_loader.c engine/safetensors.c \
 *     engine/model_config.c engine/json.c -lm -o /tmp/fuzz_loader
 *   cp -r tests/fuzz/corpus/loader /tmp/loader-corpus
 *   /tmp/fuzz_loader -max_total_time=180 -max_len=8192 /tmp/loader-corpus
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model_config.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A valid base config for the merge mode, so the generation parser is reached every time. */
static const char BASE_CONFIG[] =
    "{\"model_type\":\"phi3\",\"hidden_size\":64,\"intermediate_size\":128,"
    "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":32064,"
    "\"max_position_embeddings\":4096,\"eos_token_id\":32000}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    char err[256];
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    struct eng_model_config cfg;
    switch (data[0] % 3) {
    case 0: {
        size_t n_tensors = 0;
        (void)eng_st_validate_buffer(in, n, &n_tensors, err, sizeof(err));
        break;
    }
    case 1:
        (void)eng_model_config_parse((const char *)in, n, &cfg, err, sizeof(err));
        break;
    default:
        if (eng_model_config_parse(BASE_CONFIG, strlen(BASE_CONFIG), &cfg, err, sizeof(err)) == 0)
            (void)eng_model_config_merge_generation((const char *)in, n, &cfg, err, sizeof(err));
        break;
    }
    /* Every error message must be a NUL-terminated string. */
    (void)strlen(err);
    return 0;
}
