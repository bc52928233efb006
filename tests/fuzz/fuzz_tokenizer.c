/* Fuzz target for engine/tokenizer.c: arbitrary bytes are encoded (both add_special settings)
 * and decoded, and arbitrary ids are decoded. It checks invariants, not HF goldens
 * (test_tokenizer does that). The tokenizer comes from $PHISERVE_TOKENIZER_DIR. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_tokenizer_env.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            ++i;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF)
            need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4)
            need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        else
            return false;
        if (n - i <= need || s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= need; ++k)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return false;
        i += need + 1;
    }
    return true;
}

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_tokenizer: invariant broken: %s\n", what);
    abort();
}

static const struct eng_tokenizer *tokenizer(void)
{
    return fuzz_tokenizer_from_env("fuzz_tokenizer");
}

static void check_decode(const struct eng_tokenizer *tok, const int32_t *ids, size_t n, int skip)
{
    char *text = NULL;
    size_t len = 0;
    if (eng_tokenizer_decode(tok, ids, n, skip, &text, &len) != 0)
        fail("decode failed");
    if (text[len] != '\0' || !valid_utf8((const unsigned char *)text, len))
        fail("decode produced invalid UTF-8");
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct eng_tokenizer *tok = tokenizer();
    const struct eng_tokenizer_info *info = eng_tokenizer_get_info(tok);
    for (int add_special = 0; add_special <= 1; ++add_special) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (eng_tokenizer_encode(tok, (const char *)data, size, add_special, &ids, &n) != 0)
            fail("encode failed");
        if (size > 0 && n == 0)
            fail("non-empty text encoded to nothing");
        for (size_t i = 0; i < n; ++i)
            if (ids[i] < 0 || ids[i] >= info->n_vocab || eng_tokenizer_id_to_piece(tok, ids[i], NULL) == NULL)
                fail("encode produced an id without a piece");
        check_decode(tok, ids, n, 0);
        check_decode(tok, ids, n, 1);
        free(ids);
    }
    /* The same bytes as raw ids: negative, padding-row and huge ids must decode safely. */
    size_t n_raw = size / sizeof(int32_t);
    int32_t *raw = malloc(n_raw * sizeof *raw + 1);
    if (raw == NULL)
        fail("malloc");
    memcpy(raw, data, n_raw * sizeof *raw);
    for (size_t i = 0; i < n_raw; ++i)
        if (i % 2 == 0)
            raw[i] = (int32_t)((uint32_t)raw[i] % 32100u); /* mostly in range, some padding rows */
    check_decode(tok, raw, n_raw, 0);
    check_decode(tok, raw, n_raw, 1);
    for (size_t i = 0; i < n_raw; ++i) {
        size_t len;
        const char *p = eng_tokenizer_id_to_piece(tok, raw[i], &len);
        if (p != NULL && eng_tokenizer_piece_to_id(tok, p, len) != raw[i])
            fail("piece lookup does not round-trip");
    }
    free(raw);
    return 0;
}
