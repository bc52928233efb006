/* Fuzz target for the GGUF reader (engine/gguf.c): arbitrary bytes as a GGUF image. A refusal
 * must come with a message; an accepted image must keep every promise of gguf.h (tensor data
 * inside the image, aligned offsets, unique names and keys found by lookup, every string array
 * element readable). Not a test of file-system handling (tests/engine/test_gguf.c does that).
 *
 * Replayed in CI through tests/fuzz/replay_main.c. The real fuzzer is a one-off, outside meson,
 * from the repository root (copy the seeds first: libFuzzer writes new inputs into its corpus;
 * -rss_limit_mb and -malloc_limit_mb catch allocations driven by declared counts):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *     -D_GNU_SOURCE -Iengine tests/fuzz/fuzz_gguf.c engine/gguf.c engine/json.c \
 *     engine/file_util.c -lm -o /tmp/fuzz_gguf
 *   cp -r tests/fuzz/corpus/gguf /tmp/gguf-corpus
 *   /tmp/fuzz_gguf -max_total_time=180 -max_len=8192 -malloc_limit_mb=64 /tmp/gguf-corpus
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

#include "../test_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads every byte of [p, p + n) so that ASan sees a range outside the input. */
static unsigned touch(const void *p, uint64_t n)
{
    const volatile uint8_t *b = p;
    unsigned x = 0;
    for (uint64_t i = 0; i < n; i++)
        x += b[i];
    return x;
}

static int inside(const void *p, uint64_t n, const uint8_t *data, size_t size)
{
    uintptr_t a = (uintptr_t)p, lo = (uintptr_t)data;
    return a >= lo && a - lo <= size && n <= size - (a - lo);
}

static void check_accepted(const struct eng_gguf *g, const uint8_t *data, size_t size)
{
    uint32_t v = eng_gguf_version(g);
    REQUIRE(v == 2 || v == 3, "version %u accepted", v);
    size_t n_kv = eng_gguf_n_kv(g);
    for (size_t i = 0; i < n_kv; i++) {
        const struct eng_gguf_kv *kv = eng_gguf_kv_at(g, i);
        REQUIRE(kv != NULL && kv->key.len > 0 && inside(kv->key.data, kv->key.len, data, size), "kv %zu key", i);
        REQUIRE(memchr(kv->key.data, 0, (size_t)kv->key.len) == NULL, "kv %zu key holds a NUL", i);
        char *key = malloc((size_t)kv->key.len + 1);
        REQUIRE(key != NULL, "out of memory");
        memcpy(key, kv->key.data, (size_t)kv->key.len);
        key[kv->key.len] = '\0';
        REQUIRE(eng_gguf_find_kv(g, key) == kv, "kv %zu not found by its key", i);
        free(key);
        REQUIRE(kv->type <= ENG_GGUF_F64 && kv->elem_type <= ENG_GGUF_F64 && kv->elem_type != ENG_GGUF_ARRAY,
                "kv %zu types", i);
        REQUIRE(kv->value != NULL && inside(kv->value, 0, data, size), "kv %zu value outside the input", i);
        if (kv->type == ENG_GGUF_ARRAY && kv->elem_type == ENG_GGUF_STRING) {
            for (uint64_t k = 0; k < kv->count; k++) {
                struct eng_gguf_str s;
                REQUIRE(eng_gguf_array_str(g, kv, k, &s) == 0, "kv %zu element %llu", i, (unsigned long long)k);
                REQUIRE(inside(s.data, s.len, data, size), "kv %zu element %llu outside", i, (unsigned long long)k);
                (void)touch(s.data, s.len);
            }
            struct eng_gguf_str s;
            REQUIRE(eng_gguf_array_str(g, kv, kv->count, &s) == -1, "kv %zu element past count", i);
        }
        if (kv->type == ENG_GGUF_ARRAY && kv->elem_type == ENG_GGUF_F32 && kv->count > 0) {
            float f;
            REQUIRE(eng_gguf_array_f32(kv, kv->count - 1, &f) == 0, "kv %zu last f32", i);
        }
        if (kv->type == ENG_GGUF_ARRAY && kv->elem_type == ENG_GGUF_I32 && kv->count > 0) {
            int32_t x;
            REQUIRE(eng_gguf_array_i32(kv, kv->count - 1, &x) == 0, "kv %zu last i32", i);
        }
    }
    /* The getters on whatever the image holds under the keys a model loader asks for. */
    static const char *const keys[] = {"general.alignment", "general.architecture", "tokenizer.chat_template",
                                       "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token",
                                       "phi3.attention.layer_norm_rms_epsilon"};
    char err[256];
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        uint32_t u;
        float f;
        int b;
        struct eng_gguf_str s;
        err[0] = '\0';
        if (eng_gguf_get_u32(g, keys[i], &u, err, sizeof(err)) != 0)
            REQUIRE(err[0] != '\0', "get_u32 without a message");
        (void)eng_gguf_get_f32(g, keys[i], &f, err, sizeof(err));
        if (eng_gguf_get_bool(g, keys[i], &b, err, sizeof(err)) == 0)
            REQUIRE(b == 0 || b == 1, "bool %d", b);
        if (eng_gguf_get_str(g, keys[i], &s, err, sizeof(err)) == 0) {
            REQUIRE(inside(s.data, s.len, data, size), "string '%s' outside the input", keys[i]);
            (void)touch(s.data, s.len);
        }
    }

    size_t n_t = eng_gguf_n_tensors(g);
    for (size_t i = 0; i < n_t; i++) {
        const struct eng_gguf_tensor *t = eng_gguf_tensor_at(g, i);
        REQUIRE(t != NULL && t->name != NULL && strlen(t->name) > 0 && strlen(t->name) < 64, "tensor %zu name", i);
        REQUIRE(eng_gguf_find_tensor(g, t->name) == t, "tensor '%s' not found by name", t->name);
        REQUIRE(eng_gguf_type_name(t->ggml_type) != NULL, "tensor '%s' type %u", t->name, t->ggml_type);
        REQUIRE(t->n_dims >= 1 && t->n_dims <= ENG_GGUF_MAX_DIMS, "tensor '%s' n_dims", t->name);
        for (int d = 0; d < ENG_GGUF_MAX_DIMS; d++)
            REQUIRE(t->ne[d] >= 1 && (d < t->n_dims || t->ne[d] == 1), "tensor '%s' ne[%d]", t->name, d);
        REQUIRE(t->n_bytes > 0 && inside(t->data, t->n_bytes, data, size), "tensor '%s' data outside the input",
                t->name);
        (void)touch(t->data, t->n_bytes);
        for (size_t k = 0; k < i && n_t <= 1024; k++) {
            const struct eng_gguf_tensor *o = eng_gguf_tensor_at(g, k);
            const uint8_t *a = t->data, *b = o->data;
            REQUIRE(a + t->n_bytes <= b || b + o->n_bytes <= a, "tensors '%s' and '%s' overlap", t->name, o->name);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    err[0] = '\0';
    int rc = eng_gguf_validate_buffer(data, size, err, sizeof(err));
    REQUIRE(rc == 0 || (rc == -1 && err[0] != '\0' && strlen(err) < sizeof(err)), "rc %d, message '%s'", rc, err);
    struct eng_gguf *g = NULL;
    int rc2 = eng_gguf_open_buffer(data, size, &g, err, sizeof(err));
    REQUIRE(rc2 == rc && (rc2 == 0) == (g != NULL), "validate and open disagree: %d vs %d", rc, rc2);
    if (g != NULL)
        check_accepted(g, data, size);
    eng_gguf_close(g);
    return 0;
}
