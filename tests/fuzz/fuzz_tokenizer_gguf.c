/* Fuzz target for the tokenizer built from GGUF metadata (engine/tokenizer_gguf.c): arbitrary
 * bytes as a GGUF image; the ones the reader accepts go to eng_tokenizer_load_gguf. A refusal
 * must come with a message; an accepted vocabulary must encode and decode without leaving its
 * ids, and every piece must name its own id. Not a test of the GGUF reader (fuzz_gguf.c).
 *
 * Replayed in CI through tests/fuzz/replay_main.c; the seeds are written by
 * `test_tokenizer_gguf --write-seeds tests/fuzz/corpus/tokenizer_gguf`. The real fuzzer is a
 * one-off, outside meson, linked against a sanitizer build's engine library, e.g.
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iengine \
 *     tests/fuzz/fuzz_tokenizer_gguf.c build-asan/engine/libphiserve_engine.a \
 *     -lsentencepiece -lcjson -lstdc++ -lm -o /tmp/fuzz_tokenizer_gguf
 *   cp -r tests/fuzz/corpus/tokenizer_gguf /tmp/tg-corpus
 *   /tmp/fuzz_tokenizer_gguf -max_total_time=180 -malloc_limit_mb=256 /tmp/tg-corpus
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"

#include "../test_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_ids(const struct eng_tokenizer *tok, const char *text, size_t len, int special)
{
    int32_t n_vocab = eng_tokenizer_get_info(tok)->n_vocab;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = eng_tokenizer_encode(tok, text, len, special, &ids, &n);
    REQUIRE(rc == 0, "encode rc %d", rc);
    for (size_t i = 0; i < n; i++)
        REQUIRE(ids[i] >= 0 && ids[i] < n_vocab, "id %d outside 0 .. %d", (int)ids[i], (int)n_vocab - 1);
    for (int skip = 0; skip <= 1; skip++) {
        char *out = NULL;
        size_t olen = 0;
        REQUIRE(eng_tokenizer_decode(tok, ids, n, skip, &out, &olen) == 0 && out != NULL && out[olen] == '\0',
                "decode of encoded ids");
        free(out);
    }
    free(ids);
}

static void check_accepted(const struct eng_tokenizer *tok, const uint8_t *data, size_t size)
{
    const struct eng_tokenizer_info *info = eng_tokenizer_get_info(tok);
    REQUIRE(info->n_vocab >= 1 && info->n_vocab <= (1 << 20), "n_vocab %d", (int)info->n_vocab);
    const int32_t special[4] = {info->bos_id, info->eos_id, info->unk_id, info->pad_id};
    for (int k = 0; k < 4; k++)
        REQUIRE(special[k] >= -1 && special[k] < info->n_vocab, "special id %d", (int)special[k]);
    int32_t n_check = info->n_vocab < 4096 ? info->n_vocab : 4096;
    for (int32_t id = 0; id < n_check; id++) {
        size_t len = 0;
        const char *p = eng_tokenizer_id_to_piece(tok, id, &len);
        if (p != NULL)
            REQUIRE(p[len] == '\0' && eng_tokenizer_piece_to_id(tok, p, len) == id, "piece of id %d names another id",
                    (int)id);
        char buf[8192];
        (void)eng_tokenizer_token_bytes(tok, id, buf, sizeof buf);
        (void)eng_tokenizer_byte_value(tok, id);
    }
    int32_t *all = malloc((size_t)n_check * sizeof *all);
    REQUIRE(all != NULL, "out of memory");
    for (int32_t id = 0; id < n_check; id++)
        all[id] = id;
    char *out = NULL;
    size_t olen = 0;
    REQUIRE(eng_tokenizer_decode(tok, all, (size_t)n_check, 0, &out, &olen) == 0, "decode of every id");
    free(out);
    free(all);
    static const char *const texts[] = {"", " ", "Hello world", "<s>x</s>", "<|end|>\n a", "\xe4\xb8\xad\xf0\x9f\x98\x80"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        check_ids(tok, texts[i], strlen(texts[i]), (int)(i & 1));
    /* The image's own last bytes as text (whatever pieces it holds, spelled with their bytes). */
    size_t tail = size < 256 ? size : 256;
    check_ids(tok, (const char *)data + size - tail, tail, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    struct eng_gguf *g = NULL;
    if (eng_gguf_open_buffer(data, size, &g, err, sizeof err) != 0)
        return 0;
    struct eng_tokenizer *tok = NULL;
    err[0] = '\0';
    int rc = eng_tokenizer_load_gguf(g, &tok, err, sizeof err);
    REQUIRE((rc == 0) == (tok != NULL), "rc %d with tokenizer %p", rc, (void *)tok);
    REQUIRE(rc == 0 || (rc < 0 && err[0] != '\0' && strlen(err) < sizeof err), "rc %d, message '%s'", rc, err);
    eng_gguf_close(g); /* the tokenizer keeps nothing of the image */
    if (tok != NULL)
        check_accepted(tok, data, size);
    eng_tokenizer_destroy(tok);
    return 0;
}
