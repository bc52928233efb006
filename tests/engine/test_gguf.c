/* Unit tests of engine/gguf.c: GGUF images built byte by byte in memory (valid ones with F32,
 * Q8_0 and Q4_0 tensors, and one corrupt case per check, reliability.md K1/K2 and llama.cpp's
 * test-gguf cases), a truncation sweep, the typed getters, and the real Phi-3 vocabulary file.
 * Not a fuzzer: tests/fuzz/fuzz_gguf.c feeds arbitrary bytes.
 * Usage: test_gguf <path of phi3-vocab.gguf> */
#include "gguf.h"

#include "../test_util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- building images ---- */

struct gb {
    uint8_t *p;
    size_t n, cap;
};

static void gb_bytes(struct gb *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (np == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        b->p = np;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void gb_u8(struct gb *b, uint8_t v)
{
    gb_bytes(b, &v, 1);
}

static void gb_u32(struct gb *b, uint32_t v)
{
    uint8_t x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    gb_bytes(b, x, 4);
}

static void gb_u64(struct gb *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    gb_bytes(b, x, 8);
}

static void gb_f32(struct gb *b, float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    gb_u32(b, bits);
}

static void gb_strn(struct gb *b, const void *s, size_t n)
{
    gb_u64(b, n);
    gb_bytes(b, s, n);
}

static void gb_str(struct gb *b, const char *s)
{
    gb_strn(b, s, strlen(s));
}

static void gb_header(struct gb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    gb_bytes(b, "GGUF", 4);
    gb_u32(b, version);
    gb_u64(b, n_tensors);
    gb_u64(b, n_kv);
}

/* Key and value type of one pair; the value follows. */
static void gb_kv(struct gb *b, const char *key, enum eng_gguf_type t)
{
    gb_str(b, key);
    gb_u32(b, (uint32_t)t);
}

static void gb_kv_u32(struct gb *b, const char *key, uint32_t v)
{
    gb_kv(b, key, ENG_GGUF_U32);
    gb_u32(b, v);
}

/* An array header: element type and count; the elements follow. */
static void gb_kv_arr(struct gb *b, const char *key, enum eng_gguf_type et, uint64_t count)
{
    gb_kv(b, key, ENG_GGUF_ARRAY);
    gb_u32(b, (uint32_t)et);
    gb_u64(b, count);
}

/* One tensor record with ne[0..n_dims). */
static void gb_tensor(struct gb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                      uint64_t offset)
{
    gb_str(b, name);
    gb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        gb_u64(b, ne[d]);
    gb_u32(b, type);
    gb_u64(b, offset);
}

static void gb_pad(struct gb *b, size_t align)
{
    while (b->n % align != 0)
        gb_u8(b, 0);
}

/* n bytes of a pattern that differs per tensor (seed) and per byte. */
static void gb_data(struct gb *b, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        gb_u8(b, (uint8_t)(seed * 31u + i * 7u));
}

/* An exactly-sized heap copy of b (ASan then sees any read past the image). */
static uint8_t *exact_copy(const struct gb *b)
{
    uint8_t *p = tu_xmalloc(b->n);
    memcpy(p, b->p, b->n);
    return p;
}

/* ---- expectations ---- */

static int n_cases;

/* Asserts that the image is refused by both entry points, *out stays NULL, and the message
 * contains want. */
static void expect_fail_n(const char *label, const uint8_t *buf, size_t len, const char *want)
{
    n_cases++;
    uint8_t *p = tu_xmalloc(len);
    if (len > 0)
        memcpy(p, buf, len);
    char err[512] = "";
    int rc = eng_gguf_validate_buffer(p, len, err, sizeof(err));
    CHECK(rc == -1, "%s: validate accepted the image", label);
    CHECK(strstr(err, want) != NULL, "%s: message '%s' does not contain '%s'", label, err, want);
    struct eng_gguf *g = (struct eng_gguf *)(uintptr_t)1;
    char err2[512] = "";
    rc = eng_gguf_open_buffer(p, len, &g, err2, sizeof(err2));
    CHECK(rc == -1 && g == NULL, "%s: open_buffer accepted the image or left *out set", label);
    CHECK(strcmp(err, err2) == 0, "%s: messages differ: '%s' vs '%s'", label, err, err2);
    if (rc == 0)
        eng_gguf_close(g);
    free(p);
}

static void expect_fail(const char *label, struct gb *b, const char *want)
{
    expect_fail_n(label, b->p, b->n, want);
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Opens the image (an exact copy kept in *copy for the object's life) and returns the object,
 * or NULL after counting a failure. */
static struct eng_gguf *expect_open(const char *label, const struct gb *b, uint8_t **copy)
{
    n_cases++;
    *copy = exact_copy(b);
    char err[512] = "";
    struct eng_gguf *g = NULL;
    int rc = eng_gguf_open_buffer(*copy, b->n, &g, err, sizeof(err));
    CHECK(rc == 0 && g != NULL, "%s: refused: %s", label, err);
    return rc == 0 ? g : NULL;
}

static void expect_ok(const char *label, struct gb *b)
{
    uint8_t *copy;
    struct eng_gguf *g = expect_open(label, b, &copy);
    eng_gguf_close(g);
    free(copy);
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- a small valid image with tensors ---- */

struct small {
    struct gb b;
    size_t data_start;
    size_t off[3];       /* tensor offsets from the data start */
    size_t bytes[3];
};

/* Keys: general.architecture, general.alignment (when align != 32, or always when
 * write_align), a string array and a bool. Tensors: "tok_embd.weight" F32 [32, 3],
 * "blk.0.ffn_up.weight" Q8_0 [64, 2], "output.weight" Q4_0 [32, 4, 1, 2], each padded to align;
 * the last tensor is padded too, as writers do. */
static struct small small_image(uint32_t align, int write_align)
{
    struct small s;
    memset(&s, 0, sizeof(s));
    struct gb *b = &s.b;
    int with_align = write_align || align != 32;
    gb_header(b, 3, 3, with_align ? 4 : 3);
    gb_kv(b, "general.architecture", ENG_GGUF_STRING);
    gb_str(b, "phi3");
    if (with_align)
        gb_kv_u32(b, "general.alignment", align);
    gb_kv_arr(b, "tokenizer.ggml.tokens", ENG_GGUF_STRING, 3);
    gb_str(b, "<unk>");
    gb_str(b, "");
    gb_str(b, "h\xc3\xa9");
    gb_kv(b, "tokenizer.ggml.add_bos_token", ENG_GGUF_BOOL);
    gb_u8(b, 1);

    s.bytes[0] = 32 * 3 * 4;
    s.bytes[1] = 2 * 2 * 34;
    s.bytes[2] = 4 * 2 * 18;
    size_t pos = 0;
    for (int i = 0; i < 3; i++) {
        s.off[i] = pos;
        pos = (pos + s.bytes[i] + align - 1) / align * align;
    }
    const uint64_t ne0[] = {32, 3}, ne1[] = {64, 2}, ne2[] = {32, 4, 1, 2};
    gb_tensor(b, "tok_embd.weight", 2, ne0, 0, s.off[0]);
    gb_tensor(b, "blk.0.ffn_up.weight", 2, ne1, 8, s.off[1]);
    gb_tensor(b, "output.weight", 4, ne2, 2, s.off[2]);
    gb_pad(b, align);
    s.data_start = b->n;
    for (int i = 0; i < 3; i++) {
        gb_data(b, s.bytes[i], (uint8_t)(i + 1));
        gb_pad(b, align);
    }
    return s;
}

static void check_small(const char *label, uint32_t align, int write_align)
{
    struct small s = small_image(align, write_align);
    uint8_t *copy;
    struct eng_gguf *g = expect_open(label, &s.b, &copy);
    if (g == NULL) {
        free(s.b.p);
        return;
    }
    CHECK(eng_gguf_version(g) == 3, "%s: version %u", label, eng_gguf_version(g));
    CHECK(eng_gguf_n_kv(g) == (write_align || align != 32 ? 4u : 3u), "%s: n_kv %zu", label, eng_gguf_n_kv(g));
    CHECK(eng_gguf_n_tensors(g) == 3, "%s: n_tensors %zu", label, eng_gguf_n_tensors(g));
    static const char *const names[] = {"tok_embd.weight", "blk.0.ffn_up.weight", "output.weight"};
    static const uint32_t types[] = {0, 8, 2};
    static const int dims[] = {2, 2, 4};
    static const int64_t shapes[3][4] = {{32, 3, 1, 1}, {64, 2, 1, 1}, {32, 4, 1, 2}};
    for (size_t i = 0; i < 3; i++) {
        const struct eng_gguf_tensor *t = eng_gguf_tensor_at(g, i);
        if (t == NULL) {
            FAIL("%s: tensor %zu missing", label, i);
            continue;
        }
        CHECK(strcmp(t->name, names[i]) == 0, "%s: tensor %zu is '%s'", label, i, t->name);
        CHECK(eng_gguf_find_tensor(g, names[i]) == t, "%s: find_tensor('%s')", label, names[i]);
        CHECK(t->ggml_type == types[i], "%s: '%s' type %u", label, t->name, t->ggml_type);
        CHECK(t->n_dims == dims[i], "%s: '%s' n_dims %d", label, t->name, t->n_dims);
        for (int d = 0; d < 4; d++)
            CHECK(t->ne[d] == shapes[i][d], "%s: '%s' ne[%d] = %lld", label, t->name, d, (long long)t->ne[d]);
        CHECK(t->offset == s.off[i], "%s: '%s' offset %llu, want %zu", label, t->name,
              (unsigned long long)t->offset, s.off[i]);
        CHECK(t->offset % align == 0, "%s: '%s' offset not aligned", label, t->name);
        CHECK(t->n_bytes == s.bytes[i], "%s: '%s' n_bytes %llu, want %zu", label, t->name,
              (unsigned long long)t->n_bytes, s.bytes[i]);
        CHECK((const uint8_t *)t->data == copy + s.data_start + s.off[i], "%s: '%s' data pointer", label, t->name);
        CHECK(s.data_start % align == 0, "%s: data start %zu not aligned", label, s.data_start);
        const uint8_t *d = t->data;
        int same = 1;
        for (size_t k = 0; k < s.bytes[i]; k++)
            same &= d[k] == (uint8_t)((i + 1) * 31u + k * 7u);
        CHECK(same, "%s: '%s' data bytes differ from what was written", label, t->name);
    }
    EXPECT(eng_gguf_tensor_at(g, 3) == NULL);
    EXPECT(eng_gguf_find_tensor(g, "output") == NULL);
    EXPECT(eng_gguf_find_tensor(g, "output.weightx") == NULL);
    EXPECT(strcmp(eng_gguf_type_name(8), "Q8_0") == 0);

    const struct eng_gguf_kv *kv = eng_gguf_kv_at(g, 0);
    CHECK(kv != NULL && kv->type == ENG_GGUF_STRING && kv->count == 1 && kv->key.len == 20 &&
              memcmp(kv->key.data, "general.architecture", 20) == 0,
          "%s: kv 0", label);
    struct eng_gguf_str str;
    char err[256];
    CHECK(eng_gguf_get_str(g, "general.architecture", &str, err, sizeof(err)) == 0 && str.len == 4 &&
              memcmp(str.data, "phi3", 4) == 0,
          "%s: general.architecture", label);
    kv = eng_gguf_find_kv(g, "tokenizer.ggml.tokens");
    CHECK(kv != NULL && kv->type == ENG_GGUF_ARRAY && kv->elem_type == ENG_GGUF_STRING && kv->count == 3,
          "%s: tokens array", label);
    const char *want[] = {"<unk>", "", "h\xc3\xa9"};
    for (uint64_t i = 0; i < 3; i++) {
        int rc = eng_gguf_array_str(g, kv, i, &str);
        CHECK(rc == 0 && str.len == strlen(want[i]) && memcmp(str.data, want[i], str.len) == 0,
              "%s: token %llu", label, (unsigned long long)i);
    }
    EXPECT(eng_gguf_array_str(g, kv, 3, &str) == -1);
    int bv = -1;
    CHECK(eng_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &bv, err, sizeof(err)) == 0 && bv == 1,
          "%s: add_bos_token", label);
    uint32_t a = 0;
    if (write_align || align != 32)
        CHECK(eng_gguf_get_u32(g, "general.alignment", &a, err, sizeof(err)) == 0 && a == align,
              "%s: general.alignment", label);
    else
        EXPECT(eng_gguf_find_kv(g, "general.alignment") == NULL);
    eng_gguf_close(g);
    free(copy);
    free(s.b.p);
}

static void test_valid(void)
{
    check_small("align 32 (default)", 32, 0);
    check_small("align 32 (explicit)", 32, 1);
    check_small("align 64", 64, 1);
    check_small("align 1", 1, 1);

    /* Header only: neither keys nor tensors is a valid (if useless) file, as in llama.cpp. */
    struct gb b = {0};
    gb_header(&b, 3, 0, 0);
    uint8_t *copy;
    struct eng_gguf *g = expect_open("header only", &b, &copy);
    CHECK(g != NULL && eng_gguf_n_kv(g) == 0 && eng_gguf_n_tensors(g) == 0, "header only: counts");
    EXPECT(eng_gguf_find_kv(g, "general.alignment") == NULL);
    EXPECT(eng_gguf_find_tensor(g, "x") == NULL);
    EXPECT(eng_gguf_kv_at(g, 0) == NULL);
    eng_gguf_close(g);
    free(copy);
    free(b.p);

    /* Version 2 has the same layout. */
    memset(&b, 0, sizeof(b));
    gb_header(&b, 2, 0, 1);
    gb_kv_u32(&b, "k", 7);
    expect_ok("version 2", &b);

    /* Trailing bytes after the data are ignored. */
    struct small s = small_image(32, 0);
    gb_data(&s.b, 100, 9);
    expect_ok("trailing bytes after the data", &s.b);

    /* Bytes after metadata-only files too; and such files may stop before the padding. */
    memset(&b, 0, sizeof(b));
    gb_header(&b, 3, 0, 1);
    gb_kv_u32(&b, "k", 7);
    gb_u8(&b, 0xEE);
    expect_ok("trailing byte after metadata", &b);

    /* A tensor name of 63 bytes is the longest ggml takes. */
    memset(&b, 0, sizeof(b));
    char n63[64];
    memset(n63, 'n', 63);
    n63[63] = '\0';
    gb_header(&b, 3, 1, 0);
    const uint64_t ne[] = {4};
    gb_tensor(&b, n63, 1, ne, 0, 0);
    gb_pad(&b, 32);
    gb_data(&b, 32, 1);
    expect_ok("63-byte tensor name", &b);

    /* Gaps between tensors and records out of offset order are allowed; only overlaps are not. */
    memset(&b, 0, sizeof(b));
    gb_header(&b, 3, 2, 0);
    gb_tensor(&b, "b", 1, ne, 0, 64);
    gb_tensor(&b, "a", 1, ne, 0, 0);
    gb_pad(&b, 32);
    gb_data(&b, 96, 1);
    expect_ok("tensors out of order with a gap", &b);

    /* String values are raw bytes (a NUL or invalid UTF-8 is the consumer's to judge); keys
     * are not. Bool arrays of 0 and 1 and empty arrays are fine. */
    memset(&b, 0, sizeof(b));
    gb_header(&b, 3, 0, 4);
    gb_kv(&b, "s", ENG_GGUF_STRING);
    gb_strn(&b, "a\0\xff", 3);
    gb_kv_arr(&b, "bools", ENG_GGUF_BOOL, 3);
    gb_u8(&b, 0);
    gb_u8(&b, 1);
    gb_u8(&b, 0);
    gb_kv_arr(&b, "empty", ENG_GGUF_STRING, 0);
    gb_kv_arr(&b, "empty_f32", ENG_GGUF_F32, 0);
    g = expect_open("raw string values, bool array, empty arrays", &b, &copy);
    if (g != NULL) {
        struct eng_gguf_str str;
        char err[128];
        CHECK(eng_gguf_get_str(g, "s", &str, err, sizeof(err)) == 0 && str.len == 3 &&
                  memcmp(str.data, "a\0\xff", 3) == 0,
              "raw string value");
        const struct eng_gguf_kv *kv = eng_gguf_find_kv(g, "empty");
        CHECK(kv != NULL && kv->count == 0 && eng_gguf_array_str(g, kv, 0, &str) == -1, "empty string array");
    }
    eng_gguf_close(g);
    free(copy);
    free(b.p);
}

/* ---- corrupt images: one per check ---- */

static void test_header(void)
{
    struct gb b = {0};
    expect_fail_n("empty buffer", NULL, 0, "too small");
    gb_bytes(&b, "GGU", 3);
    expect_fail("3 bytes", &b, "too small");

    gb_bytes(&b, "GGUX", 4);
    gb_u32(&b, 3);
    gb_u64(&b, 0);
    gb_u64(&b, 0);
    expect_fail("bad magic", &b, "bad magic");

    gb_header(&b, 0, 0, 0);
    expect_fail("version 0", &b, "unsupported GGUF version 0");
    gb_header(&b, 1, 0, 0);
    expect_fail("version 1", &b, "version 1 is not supported");
    gb_header(&b, 4, 0, 0);
    expect_fail("version 4", &b, "unsupported GGUF version 4");
    gb_header(&b, 0x03000000, 0, 0);
    expect_fail("big-endian version", &b, "big-endian");

    gb_bytes(&b, "GGUF", 4);
    gb_u32(&b, 3);
    gb_u64(&b, 0);
    gb_u32(&b, 0);
    expect_fail("header cut in n_kv", &b, "truncated: header n_kv");

    gb_header(&b, 3, UINT64_MAX, 0);
    expect_fail("n_tensors = -1", &b, "n_tensors = 18446744073709551615: the 0 bytes after the header cannot hold");
    gb_header(&b, 3, 0, UINT64_MAX);
    expect_fail("n_kv = -1", &b, "n_kv = 18446744073709551615: the 0 bytes after the header cannot hold");
    gb_header(&b, 3, 0, 2);
    gb_kv_u32(&b, "k", 1);
    expect_fail("n_kv = 2 with one pair's bytes", &b, "n_kv = 2: the 17 bytes after the header cannot hold");
    gb_header(&b, 3, 1, 1);
    gb_kv_u32(&b, "key.of.some.length.here", 1);
    gb_data(&b, 5, 0); /* 44 bytes: room for either record's minimum, not for both (47) */
    expect_fail("n_kv + n_tensors", &b, "n_kv = 1 and n_tensors = 1");
    /* A pair that does not fit its declared count's share of bytes is caught while walking. */
    gb_header(&b, 3, 0, 2);
    gb_kv_u32(&b, "k", 1);
    gb_data(&b, 14, 0);
    expect_fail("second pair cut", &b, "kv 1");

    /* The caps, with enough bytes that the count passes the bytes-left check. */
    size_t big = 24 + (size_t)((1u << 20) + 1) * 14;
    uint8_t *p = tu_xcalloc(big, 1);
    memcpy(p, "GGUF", 4);
    p[4] = 3;
    uint64_t n = (1u << 20) + 1;
    for (int i = 0; i < 8; i++)
        p[16 + i] = (uint8_t)(n >> (8 * i));
    expect_fail_n("n_kv above 1 << 20", p, big, "too many key/value pairs: 1048577");
    free(p);
    big = 24 + (size_t)((1u << 20) + 1) * 33;
    p = tu_xcalloc(big, 1);
    memcpy(p, "GGUF", 4);
    p[4] = 3;
    for (int i = 0; i < 8; i++)
        p[8 + i] = (uint8_t)(n >> (8 * i));
    expect_fail_n("n_tensors above 1 << 20", p, big, "too many tensors: 1048577");
    free(p);
}

static void test_kv(void)
{
    struct gb b = {0};
    gb_header(&b, 3, 0, 1);
    gb_u64(&b, UINT64_MAX);
    gb_data(&b, 16, 0);
    expect_fail("key length -1", &b,
                "kv 0 key at byte 24: string length 18446744073709551615 exceeds the 16 bytes left");
    gb_header(&b, 3, 0, 1);
    gb_u64(&b, 100);
    gb_data(&b, 20, 0);
    expect_fail("key length past the end", &b, "string length 100 exceeds the 20 bytes left");

    gb_header(&b, 3, 0, 1);
    gb_kv_u32(&b, "", 1);
    expect_fail("empty key", &b, "kv 0: empty key");
    gb_header(&b, 3, 0, 1);
    gb_strn(&b, "ab\xff", 3);
    gb_u32(&b, ENG_GGUF_U32);
    gb_u32(&b, 1);
    expect_fail("key not UTF-8", &b, "kv 0: key is not valid UTF-8");
    gb_header(&b, 3, 0, 1);
    gb_strn(&b, "\xc0\xaf", 2); /* an overlong '/' */
    gb_u32(&b, ENG_GGUF_U32);
    gb_u32(&b, 1);
    expect_fail("key overlong UTF-8", &b, "not valid UTF-8");
    gb_header(&b, 3, 0, 1);
    gb_strn(&b, "a\0b", 3);
    gb_u32(&b, ENG_GGUF_U32);
    gb_u32(&b, 1);
    expect_fail("key with NUL", &b, "kv 0: key contains a NUL byte");

    gb_header(&b, 3, 0, 3);
    gb_kv_u32(&b, "general.x", 1);
    gb_kv_u32(&b, "general.y", 1);
    gb_kv(&b, "general.x", ENG_GGUF_STRING);
    gb_str(&b, "again");
    expect_fail("duplicate key", &b, "duplicate key 'general.x'");

    gb_header(&b, 3, 0, 1);
    gb_kv(&b, "k", (enum eng_gguf_type)13);
    gb_u32(&b, 0);
    expect_fail("unknown value type 13", &b, "kv 0 ('k'): unknown value type 13");
    gb_header(&b, 3, 0, 1);
    gb_kv(&b, "k", (enum eng_gguf_type)0xFFFFFFFFu);
    gb_u32(&b, 0);
    expect_fail("unknown value type -1", &b, "unknown value type 4294967295");
    gb_header(&b, 3, 0, 1);
    gb_kv_arr(&b, "k", (enum eng_gguf_type)13, 1);
    gb_u32(&b, 0);
    expect_fail("unknown array element type", &b, "unknown array element type 13");

    gb_header(&b, 3, 0, 1);
    gb_kv_arr(&b, "nested", ENG_GGUF_ARRAY, 1);
    gb_u32(&b, ENG_GGUF_U8);
    gb_u64(&b, 1);
    gb_u8(&b, 0);
    expect_fail("array of arrays", &b, "kv 0 ('nested'): arrays of arrays are not supported");

    gb_header(&b, 3, 0, 1);
    gb_kv_arr(&b, "k", ENG_GGUF_U32, 5);
    gb_data(&b, 16, 0);
    expect_fail("array count past the end", &b, "array count 5 is larger than the 16 bytes left");
    gb_header(&b, 3, 0, 1);
    gb_kv_arr(&b, "k", ENG_GGUF_STRING, UINT64_MAX);
    gb_data(&b, 16, 0);
    expect_fail("string array count -1", &b, "array count 18446744073709551615 is larger");
    gb_header(&b, 3, 0, 1);
    gb_kv_arr(&b, "tokenizer.ggml.tokens", ENG_GGUF_STRING, 2);
    gb_str(&b, "ok");
    gb_u64(&b, 1000); /* a token piece longer than the file (reliability.md L3) */
    gb_data(&b, 8, 0);
    expect_fail("string element past the end", &b,
                "kv 0 ('tokenizer.ggml.tokens'), element 1: string value at byte");
    gb_header(&b, 3, 0, 1);
    gb_kv(&b, "k", ENG_GGUF_STRING);
    gb_u64(&b, 5);
    gb_bytes(&b, "abc", 3);
    expect_fail("string value past the end", &b,
                "kv 0 ('k'): string value at byte 37: string length 5 exceeds the 3 bytes left");
    gb_header(&b, 3, 0, 1);
    gb_kv(&b, "k", ENG_GGUF_U64);
    gb_u32(&b, 1);
    gb_data(&b, 3, 0);
    expect_fail("u64 value cut", &b, "truncated: 1 u64 value(s)");

    /* The array cap, with the bytes to back the count. */
    size_t n = ((size_t)1 << 26) + 1;
    struct gb big = {0};
    gb_header(&big, 3, 0, 1);
    gb_kv_arr(&big, "k", ENG_GGUF_U8, n);
    size_t len = big.n + n;
    uint8_t *p = tu_xcalloc(len, 1);
    memcpy(p, big.p, big.n);
    expect_fail_n("array count above 1 << 26", p, len, "too many array elements: 67108865");
    free(p);
    free(big.p);

    gb_header(&b, 3, 0, 1);
    gb_kv(&b, "flag", ENG_GGUF_BOOL);
    gb_u8(&b, 2);
    expect_fail("bool 2", &b, "kv 0 ('flag'): bool value 2");
    gb_header(&b, 3, 0, 1);
    gb_kv_arr(&b, "flags", ENG_GGUF_BOOL, 3);
    gb_u8(&b, 1);
    gb_u8(&b, 0);
    gb_u8(&b, 0xFF);
    expect_fail("bool array element 255", &b, "bool value 255");

    gb_header(&b, 3, 0, 1);
    gb_kv(&b, "general.alignment", ENG_GGUF_I32);
    gb_u32(&b, 32);
    expect_fail("alignment of type i32", &b, "general.alignment has type i32, not u32");
    gb_header(&b, 3, 0, 1);
    gb_kv_arr(&b, "general.alignment", ENG_GGUF_U32, 1);
    gb_u32(&b, 32);
    expect_fail("alignment of type array", &b, "general.alignment has type array of u32, not u32");
    gb_header(&b, 3, 0, 1);
    gb_kv_u32(&b, "general.alignment", 0);
    expect_fail("alignment 0", &b, "general.alignment 0 is not a nonzero power of two");
    gb_header(&b, 3, 0, 1);
    gb_kv_u32(&b, "general.alignment", 13);
    expect_fail("alignment 13", &b, "general.alignment 13 is not a nonzero power of two");
    gb_header(&b, 3, 0, 1);
    gb_kv_u32(&b, "general.alignment", 0x80000001u);
    expect_fail("alignment 2^31 + 1", &b, "not a nonzero power of two");
}

/* A header with one pair "general.alignment" = align (when align != 0) and n_tensors records
 * to follow. */
static void tensor_header(struct gb *b, uint64_t n_tensors, uint32_t align)
{
    gb_header(b, 3, n_tensors, align != 0 ? 1 : 0);
    if (align != 0)
        gb_kv_u32(b, "general.alignment", align);
}

static void test_tensors(void)
{
    struct gb b = {0};
    const uint64_t ne4[] = {4}, ne8[] = {8};

    tensor_header(&b, 1, 0);
    gb_tensor(&b, "", 1, ne4, 0, 0);
    gb_data(&b, 32, 0);
    expect_fail("empty tensor name", &b, "tensor 0: empty name");
    char n64[65];
    memset(n64, 'n', 64);
    n64[64] = '\0';
    tensor_header(&b, 1, 0);
    gb_tensor(&b, n64, 1, ne4, 0, 0);
    gb_data(&b, 32, 0);
    expect_fail("64-byte tensor name", &b, "tensor 0: name of 64 bytes is too long (at most 63)");
    tensor_header(&b, 1, 0);
    gb_u64(&b, UINT64_MAX);
    gb_data(&b, 40, 0);
    expect_fail("tensor name length -1", &b, "tensor 0 name at byte 24: string length 18446744073709551615");
    tensor_header(&b, 1, 0);
    gb_strn(&b, "w\0x", 3);
    gb_u32(&b, 1);
    gb_u64(&b, 4);
    gb_u32(&b, 0);
    gb_u64(&b, 0);
    gb_data(&b, 32, 0);
    expect_fail("tensor name with NUL", &b, "tensor 0: name contains a NUL byte");
    tensor_header(&b, 1, 0);
    gb_strn(&b, "w\xe2\x82", 3);
    gb_u32(&b, 1);
    gb_u64(&b, 4);
    gb_u32(&b, 0);
    gb_u64(&b, 0);
    gb_data(&b, 32, 0);
    expect_fail("tensor name not UTF-8", &b, "tensor 0: name is not valid UTF-8");
    tensor_header(&b, 2, 0);
    gb_tensor(&b, "w", 1, ne4, 0, 0);
    gb_tensor(&b, "w", 1, ne4, 0, 32);
    gb_pad(&b, 32);
    gb_data(&b, 64, 0);
    expect_fail("duplicate tensor name", &b, "duplicate tensor name 'w'");

    const uint64_t ne5[] = {4, 1, 1, 1, 1};
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 0, ne4, 0, 0);
    gb_data(&b, 64, 0);
    expect_fail("n_dims 0", &b, "tensor 'w': n_dims 0 is not in 1..4");
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 5, ne5, 0, 0);
    gb_data(&b, 64, 0);
    expect_fail("n_dims 5", &b, "tensor 'w': n_dims 5 is not in 1..4");

    const uint64_t ne_zero[] = {4, 0};
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 2, ne_zero, 0, 0);
    gb_data(&b, 64, 0);
    expect_fail("ne 0", &b, "tensor 'w': ne[1] is 0");
    const uint64_t ne_big[] = {(uint64_t)INT64_MAX + 1};
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 1, ne_big, 24, 0);
    gb_data(&b, 64, 0);
    expect_fail("ne above INT64_MAX", &b, "tensor 'w': ne[0] = 9223372036854775808 exceeds INT64_MAX");
    const uint64_t ne_ovf[] = {(uint64_t)1 << 62, 4};
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 2, ne_ovf, 24, 0);
    gb_data(&b, 64, 0);
    expect_fail("ne product 2^62 x 4", &b, "tensor 'w': element count overflows 64 bits");
    const uint64_t ne_ovf3[] = {1u << 21, 1u << 21, 1u << 21, 2};
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 4, ne_ovf3, 24, 0);
    gb_data(&b, 64, 0);
    expect_fail("ne product 2^63 over 4 dims", &b, "element count overflows 64 bits");
    const uint64_t ne_bytes[] = {(uint64_t)1 << 62};
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 1, ne_bytes, 0, 0);
    gb_data(&b, 64, 0);
    expect_fail("F32 byte size 2^64", &b, "tensor 'w': byte size of F32 data overflows 64 bits");
    const uint64_t ne_q[] = {0x7FFFFFFFFFFFFFE0ull, 1};
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 2, ne_q, 8, 0); /* 2^58 - 1 blocks x 34 bytes */
    gb_data(&b, 64, 0);
    expect_fail("Q8_0 byte size overflow", &b, "byte size of Q8_0 data overflows 64 bits");

    /* Two I8 tensors of 0x7FFFFFFFFFFFFFC0 bytes each (llama.cpp DATA_MEM_SIZE_OVERFLOW): each
     * size fits, together they pass 2^63, and neither is in the file. */
    const uint64_t ne_huge[] = {0x7FFFFFFFFFFFFFC0ull};
    tensor_header(&b, 2, 0);
    gb_tensor(&b, "a", 1, ne_huge, 24, 0);
    gb_tensor(&b, "b", 1, ne_huge, 24, 0x7FFFFFFFFFFFFFC0ull);
    gb_pad(&b, 32);
    gb_data(&b, 64, 0);
    expect_fail("two I8 tensors of 0x7FFFFFFFFFFFFFC0", &b, "tensor 'a': data [0, 9223372036854775744)");
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 1, ne8, 24, 0xFFFFFFFFFFFFFFE0ull);
    gb_pad(&b, 32);
    gb_data(&b, 64, 0);
    expect_fail("offset + size past 2^64", &b, "tensor 'w': offset 18446744073709551584 + size 8 overflows 64 bits");

    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 1, ne4, 4, 0);
    gb_data(&b, 64, 0);
    expect_fail("removed ggml type 4", &b, "tensor 'w': unknown ggml type 4");
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 1, ne4, 31, 0);
    gb_data(&b, 64, 0);
    expect_fail("ggml type 31", &b, "unknown ggml type 31");
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 1, ne4, 0xFFFFFFFFu, 0);
    gb_data(&b, 64, 0);
    expect_fail("ggml type -1", &b, "unknown ggml type 4294967295");

    const uint64_t ne33[] = {33, 2};
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 2, ne33, 2, 0);
    gb_data(&b, 64, 0);
    expect_fail("Q4_0 ne[0] = 33", &b, "tensor 'w': ne[0] = 33 is not a multiple of the Q4_0 block size 32");
    const uint64_t ne128[] = {128};
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 1, ne128, 12, 0);
    gb_data(&b, 256, 0);
    expect_fail("Q4_K ne[0] = 128", &b, "not a multiple of the Q4_K block size 256");

    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 1, ne4, 0, 4);
    gb_data(&b, 64, 0);
    expect_fail("offset 4 with alignment 32", &b, "tensor 'w': offset 4 is not a multiple of the alignment 32");
    tensor_header(&b, 1, 64);
    gb_tensor(&b, "w", 1, ne4, 0, 32);
    gb_pad(&b, 64);
    gb_data(&b, 128, 0);
    expect_fail("offset 32 with alignment 64", &b, "offset 32 is not a multiple of the alignment 64");

    const uint64_t ne16[] = {16};
    tensor_header(&b, 2, 0);
    gb_tensor(&b, "a", 1, ne16, 0, 0);
    gb_tensor(&b, "b", 1, ne8, 0, 32);
    gb_pad(&b, 32);
    gb_data(&b, 64, 0);
    expect_fail("overlapping tensors", &b, "tensor 'b': data [32, 64) overlaps tensor 'a' [0, 64)");
    tensor_header(&b, 2, 0);
    gb_tensor(&b, "a", 1, ne4, 0, 0);
    gb_tensor(&b, "b", 1, ne4, 0, 0);
    gb_pad(&b, 32);
    gb_data(&b, 32, 0);
    expect_fail("tensors at the same offset", &b, "overlaps tensor 'a' [0, 16)");

    /* Data past the end: no data section at all, and one byte short. */
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 1, ne4, 0, 0);
    expect_fail("no data section", &b, "tensor 'w': data [0, 16) padded to 32 runs past the end of the file");
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 1, ne8, 0, 0);
    gb_pad(&b, 32);
    gb_data(&b, 31, 0);
    expect_fail("data one byte short", &b, "holds 31 bytes");
    tensor_header(&b, 1, 0);
    gb_tensor(&b, "w", 1, ne4, 0, 0x1000);
    gb_pad(&b, 32);
    gb_data(&b, 64, 0);
    expect_fail("offset past the end", &b, "tensor 'w': data [4096, 4112)");
    /* Truncated inside a tensor record. */
    tensor_header(&b, 1, 0);
    gb_str(&b, "w");
    gb_u32(&b, 4);
    gb_u64(&b, 4);
    gb_u64(&b, 3);
    gb_u32(&b, 5);
    expect_fail("tensor record cut", &b, "truncated: tensor 'w' ne[2] at byte 53 needs 8 bytes, 4 left");
}

/* Every prefix of a valid image is refused cleanly (and with a message); the whole is accepted. */
static void test_truncation(void)
{
    struct small s = small_image(32, 1);
    size_t n = s.b.n;
    char label[64];
    for (size_t k = 0; k < n; k++) {
        snprintf(label, sizeof(label), "prefix of %zu/%zu bytes", k, n);
        uint8_t *p = tu_xmalloc(k);
        memcpy(p, s.b.p, k);
        char err[512] = "";
        int rc = eng_gguf_validate_buffer(k > 0 ? p : NULL, k, err, sizeof(err));
        CHECK(rc == -1 && err[0] != '\0', "%s: rc %d, message '%s'", label, rc, err);
        free(p);
    }
    n_cases++;
    /* The two cuts of reliability.md K2 with their messages: one byte, and half. The half cut
     * lands in the tensor data here, the one-byte cut in the last tensor's padding. */
    expect_fail_n("truncated by one byte", s.b.p, n - 1, "tensor 'output.weight': data [");
    expect_fail_n("truncated by half", s.b.p, n / 2, "runs past the end of the file");
    CHECK(n / 2 > s.data_start, "the half cut is meant to land in the data (data start %zu, half %zu)",
          s.data_start, n / 2);
    expect_fail_n("truncated before the data", s.b.p, s.data_start, "runs past the end of the file");
    expect_fail_n("truncated to the header", s.b.p, 24, "cannot hold");
    uint8_t *copy;
    struct eng_gguf *g = expect_open("whole image", &s.b, &copy);
    eng_gguf_close(g);
    free(copy);
    free(s.b.p);
}

static void test_getters(void)
{
    struct gb b = {0};
    gb_header(&b, 3, 0, 14);
    gb_kv(&b, "u8", ENG_GGUF_U8);
    gb_u8(&b, 200);
    gb_kv(&b, "i8neg", ENG_GGUF_I8);
    gb_u8(&b, 0xFF);
    gb_kv(&b, "i16", ENG_GGUF_I16);
    gb_u8(&b, 0x34);
    gb_u8(&b, 0x12);
    gb_kv(&b, "i32", ENG_GGUF_I32);
    gb_u32(&b, 32000);
    gb_kv(&b, "u64big", ENG_GGUF_U64);
    gb_u64(&b, (uint64_t)UINT32_MAX + 1);
    gb_kv(&b, "u64max32", ENG_GGUF_U64);
    gb_u64(&b, UINT32_MAX);
    gb_kv(&b, "i64neg", ENG_GGUF_I64);
    gb_u64(&b, (uint64_t)-5);
    gb_kv(&b, "f32", ENG_GGUF_F32);
    gb_f32(&b, 1e-5f);
    gb_kv(&b, "f64", ENG_GGUF_F64);
    double d = 0.25;
    uint64_t bits;
    memcpy(&bits, &d, 8);
    gb_u64(&b, bits);
    gb_kv(&b, "f64big", ENG_GGUF_F64);
    d = 1e300;
    memcpy(&bits, &d, 8);
    gb_u64(&b, bits);
    gb_kv(&b, "no", ENG_GGUF_BOOL);
    gb_u8(&b, 0);
    gb_kv_arr(&b, "scores", ENG_GGUF_F32, 2);
    gb_f32(&b, -1000.0f);
    gb_f32(&b, 2.5f);
    gb_kv_arr(&b, "types", ENG_GGUF_I32, 2);
    gb_u32(&b, 3);
    gb_u32(&b, (uint32_t)-7);
    gb_kv(&b, "name", ENG_GGUF_STRING);
    gb_str(&b, "x");
    uint8_t *copy;
    struct eng_gguf *g = expect_open("getters image", &b, &copy);
    if (g == NULL) {
        free(b.p);
        return;
    }
    char err[256];
    uint32_t u = 0;
    CHECK(eng_gguf_get_u32(g, "u8", &u, err, sizeof(err)) == 0 && u == 200, "u8 as u32");
    CHECK(eng_gguf_get_u32(g, "i16", &u, err, sizeof(err)) == 0 && u == 0x1234, "i16 as u32");
    CHECK(eng_gguf_get_u32(g, "i32", &u, err, sizeof(err)) == 0 && u == 32000, "i32 as u32");
    CHECK(eng_gguf_get_u32(g, "u64max32", &u, err, sizeof(err)) == 0 && u == UINT32_MAX, "u64 max u32");
    err[0] = '\0';
    CHECK(eng_gguf_get_u32(g, "i8neg", &u, err, sizeof(err)) == -1 && strstr(err, "'i8neg': value -1 is out of range"),
          "negative i8: '%s'", err);
    CHECK(eng_gguf_get_u32(g, "i64neg", &u, err, sizeof(err)) == -1 && strstr(err, "'i64neg': value -5"),
          "negative i64: '%s'", err);
    CHECK(eng_gguf_get_u32(g, "u64big", &u, err, sizeof(err)) == -1 &&
              strstr(err, "'u64big': value 4294967296 is out of range"),
          "u64 too big: '%s'", err);
    CHECK(eng_gguf_get_u32(g, "name", &u, err, sizeof(err)) == -1 &&
              strstr(err, "'name' has type string, not an integer"),
          "string as u32: '%s'", err);
    CHECK(eng_gguf_get_u32(g, "no", &u, err, sizeof(err)) == -1 && strstr(err, "'no' has type bool"),
          "bool as u32: '%s'", err);
    CHECK(eng_gguf_get_u32(g, "absent.key", &u, err, sizeof(err)) == -1 && strstr(err, "key 'absent.key' not found"),
          "absent: '%s'", err);
    float f = 0;
    CHECK(eng_gguf_get_f32(g, "f32", &f, err, sizeof(err)) == 0 && f == 1e-5f, "f32");
    CHECK(eng_gguf_get_f32(g, "f64", &f, err, sizeof(err)) == 0 && f == 0.25f, "f64 as f32");
    CHECK(eng_gguf_get_f32(g, "f64big", &f, err, sizeof(err)) == -1 && strstr(err, "'f64big'") &&
              strstr(err, "out of range for f32"),
          "f64 beyond float: '%s'", err);
    CHECK(eng_gguf_get_f32(g, "i32", &f, err, sizeof(err)) == -1 && strstr(err, "'i32' has type i32, not f32 or f64"),
          "i32 as f32: '%s'", err);
    CHECK(eng_gguf_get_f32(g, "scores", &f, err, sizeof(err)) == -1 && strstr(err, "type array of f32"),
          "array as f32: '%s'", err);
    int bv = -1;
    CHECK(eng_gguf_get_bool(g, "no", &bv, err, sizeof(err)) == 0 && bv == 0, "bool");
    CHECK(eng_gguf_get_bool(g, "u8", &bv, err, sizeof(err)) == -1 && strstr(err, "'u8' has type u8, not bool"),
          "u8 as bool: '%s'", err);
    struct eng_gguf_str str;
    CHECK(eng_gguf_get_str(g, "name", &str, err, sizeof(err)) == 0 && str.len == 1 && str.data[0] == 'x', "str");
    CHECK(eng_gguf_get_str(g, "f32", &str, err, sizeof(err)) == -1 && strstr(err, "'f32' has type f32, not string"),
          "f32 as str: '%s'", err);

    const struct eng_gguf_kv *sc = eng_gguf_find_kv(g, "scores"), *ty = eng_gguf_find_kv(g, "types");
    int32_t iv = 0;
    CHECK(eng_gguf_array_f32(sc, 0, &f) == 0 && f == -1000.0f, "scores[0]");
    CHECK(eng_gguf_array_f32(sc, 1, &f) == 0 && f == 2.5f, "scores[1]");
    EXPECT(eng_gguf_array_f32(sc, 2, &f) == -1);
    EXPECT(eng_gguf_array_i32(sc, 0, &iv) == -1);
    EXPECT(eng_gguf_array_str(g, sc, 0, &str) == -1);
    CHECK(eng_gguf_array_i32(ty, 1, &iv) == 0 && iv == -7, "types[1]");
    EXPECT(eng_gguf_array_i32(ty, 2, &iv) == -1);
    EXPECT(eng_gguf_array_f32(ty, 0, &f) == -1);
    EXPECT(eng_gguf_array_f32(eng_gguf_find_kv(g, "f32"), 0, &f) == -1);
    EXPECT(eng_gguf_array_f32(NULL, 0, &f) == -1);

    /* A string array kv from another file object is refused, not read through. */
    struct small s = small_image(32, 0);
    uint8_t *copy2;
    struct eng_gguf *g2 = expect_open("second object", &s.b, &copy2);
    const struct eng_gguf_kv *tok = eng_gguf_find_kv(g2, "tokenizer.ggml.tokens");
    CHECK(tok != NULL && eng_gguf_array_str(g2, tok, 0, &str) == 0, "tokens of its own object");
    EXPECT(eng_gguf_array_str(g, tok, 0, &str) == -1);
    struct eng_gguf_kv fake = *tok;
    EXPECT(eng_gguf_array_str(g2, &fake, 0, &str) == -1);
    eng_gguf_close(g2);
    free(copy2);
    free(s.b.p);

    EXPECT(eng_gguf_find_kv(NULL, "u8") == NULL);
    EXPECT(eng_gguf_n_kv(NULL) == 0);
    EXPECT(eng_gguf_type_name(4) == NULL && eng_gguf_type_name(31) == NULL && eng_gguf_type_name(1000) == NULL);
    EXPECT(strcmp(eng_gguf_type_name(30), "BF16") == 0 && strcmp(eng_gguf_type_name(12), "Q4_K") == 0);
    eng_gguf_close(NULL);
    eng_gguf_close(g);
    free(copy);
    free(b.p);
}

/* The file entry point: a written copy of the small image, a missing path, a directory. */
static void test_open_file(void)
{
    const char *t = getenv("TMPDIR");
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/phiserve-gguf-XXXXXX", t != NULL && *t ? t : "/tmp");
    if (mkdtemp(dir) == NULL) {
        FAIL("mkdtemp failed");
        return;
    }
    char path[320];
    snprintf(path, sizeof(path), "%s/small.gguf", dir);
    struct small s = small_image(64, 1);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(s.b.p, 1, s.b.n, f) != s.b.n || fclose(f) != 0) {
        FAIL("cannot write %s", path);
        free(s.b.p);
        return;
    }
    n_cases++;
    char err[512] = "";
    struct eng_gguf *g = NULL;
    CHECK(eng_gguf_open_file(path, &g, err, sizeof(err)) == 0 && g != NULL, "open_file: %s", err);
    const struct eng_gguf_tensor *w = eng_gguf_find_tensor(g, "blk.0.ffn_up.weight");
    CHECK(w != NULL && w->n_bytes == 136 && memcmp(w->data, s.b.p + s.data_start + s.off[1], 136) == 0,
          "open_file: mapped tensor bytes");
    eng_gguf_close(g);

    /* A corrupt file's message names the path and the check. */
    n_cases++;
    f = fopen(path, "wb");
    if (f == NULL || fwrite(s.b.p, 1, s.b.n - 1, f) != s.b.n - 1 || fclose(f) != 0) {
        FAIL("cannot write %s", path);
    } else {
        g = (struct eng_gguf *)(uintptr_t)1;
        CHECK(eng_gguf_open_file(path, &g, err, sizeof(err)) == -1 && g == NULL && strstr(err, path) == err &&
                  strstr(err, "runs past the end of the file"),
              "truncated file: '%s'", err);
    }
    n_cases++;
    f = fopen(path, "wb");
    if (f == NULL || fwrite("GGUF", 1, 4, f) != 4 || fclose(f) != 0)
        FAIL("cannot write %s", path);
    else
        CHECK(eng_gguf_open_file(path, &g, err, sizeof(err)) == -1 &&
                  strstr(err, "too small for the 24-byte GGUF header"),
              "4-byte file: '%s'", err);
    unlink(path);
    n_cases++;
    CHECK(eng_gguf_open_file(path, &g, err, sizeof(err)) == -1 && strstr(err, "cannot open"),
          "missing file: '%s'", err);
    n_cases++;
    CHECK(eng_gguf_open_file(dir, &g, err, sizeof(err)) == -1 && strstr(err, "not a regular file"),
          "directory: '%s'", err);
    rmdir(dir);
    free(s.b.p);
}

/* The real Phi-3 vocabulary as llama.cpp publishes it (values checked with python gguf). */
static void test_vocab_file(const char *path)
{
    n_cases++;
    char err[512] = "";
    struct eng_gguf *g = NULL;
    if (eng_gguf_open_file(path, &g, err, sizeof(err)) != 0) {
        FAIL("%s", err);
        return;
    }
    CHECK(eng_gguf_version(g) == 3, "vocab: version %u", eng_gguf_version(g));
    CHECK(eng_gguf_n_kv(g) == 26, "vocab: n_kv %zu", eng_gguf_n_kv(g));
    CHECK(eng_gguf_n_tensors(g) == 0, "vocab: n_tensors %zu", eng_gguf_n_tensors(g));

    const struct eng_gguf_kv *tok = eng_gguf_find_kv(g, "tokenizer.ggml.tokens");
    CHECK(tok != NULL && tok->type == ENG_GGUF_ARRAY && tok->elem_type == ENG_GGUF_STRING && tok->count == 32064,
          "vocab: tokenizer.ggml.tokens");
    struct eng_gguf_str s;
    CHECK(eng_gguf_array_str(g, tok, 0, &s) == 0 && s.len == 5 && memcmp(s.data, "<unk>", 5) == 0, "vocab: token 0");
    CHECK(eng_gguf_array_str(g, tok, 1, &s) == 0 && s.len == 3 && memcmp(s.data, "<s>", 3) == 0, "vocab: token 1");
    CHECK(eng_gguf_array_str(g, tok, 3, &s) == 0 && s.len == 6 && memcmp(s.data, "<0x00>", 6) == 0, "vocab: token 3");
    CHECK(eng_gguf_array_str(g, tok, 32063, &s) == 0 && s.len == 10 && memcmp(s.data, "[PAD32063]", 10) == 0,
          "vocab: token 32063");
    EXPECT(eng_gguf_array_str(g, tok, 32064, &s) == -1);

    const struct eng_gguf_kv *sc = eng_gguf_find_kv(g, "tokenizer.ggml.scores");
    CHECK(sc != NULL && sc->type == ENG_GGUF_ARRAY && sc->elem_type == ENG_GGUF_F32 && sc->count == 32064,
          "vocab: tokenizer.ggml.scores");
    float f = 0;
    CHECK(eng_gguf_array_f32(sc, 0, &f) == 0 && f == -1000.0f, "vocab: score 0 = %g", (double)f);
    CHECK(eng_gguf_array_f32(sc, 300, &f) == 0 && f == -41.0f, "vocab: score 300 = %g", (double)f);
    const struct eng_gguf_kv *tt = eng_gguf_find_kv(g, "tokenizer.ggml.token_type");
    CHECK(tt != NULL && tt->type == ENG_GGUF_ARRAY && tt->elem_type == ENG_GGUF_I32 && tt->count == 32064,
          "vocab: tokenizer.ggml.token_type");
    int32_t iv = 0;
    /* llama.cpp token types: 1 normal, 3 control, 4 user-defined, 6 byte. */
    CHECK(eng_gguf_array_i32(tt, 1, &iv) == 0 && iv == 3, "vocab: token_type[1] = %d", iv);
    CHECK(eng_gguf_array_i32(tt, 2, &iv) == 0 && iv == 4, "vocab: token_type[2] = %d", iv);
    CHECK(eng_gguf_array_i32(tt, 3, &iv) == 0 && iv == 6, "vocab: token_type[3] = %d", iv);
    CHECK(eng_gguf_array_i32(tt, 300, &iv) == 0 && iv == 1, "vocab: token_type[300] = %d", iv);

    uint32_t u = 0;
    CHECK(eng_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &u, err, sizeof(err)) == 0 && u == 32000,
          "vocab: eos %u (%s)", u, err);
    CHECK(eng_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u, err, sizeof(err)) == 0 && u == 1,
          "vocab: bos %u (%s)", u, err);
    CHECK(eng_gguf_get_u32(g, "phi3.context_length", &u, err, sizeof(err)) == 0 && u == 4096,
          "vocab: context length %u (%s)", u, err);
    CHECK(eng_gguf_get_f32(g, "phi3.attention.layer_norm_rms_epsilon", &f, err, sizeof(err)) == 0 && f == 1e-5f,
          "vocab: rms eps %g (%s)", (double)f, err);
    int bv = -1;
    CHECK(eng_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &bv, err, sizeof(err)) == 0 && bv == 1,
          "vocab: add_bos_token");
    CHECK(eng_gguf_get_str(g, "general.architecture", &s, err, sizeof(err)) == 0 && s.len == 4 &&
              memcmp(s.data, "phi3", 4) == 0,
          "vocab: architecture");
    CHECK(eng_gguf_get_str(g, "tokenizer.chat_template", &s, err, sizeof(err)) == 0 && s.len > 100 &&
              memcmp(s.data, "{{ bos_token }}", 15) == 0,
          "vocab: chat template (%s)", err);
    eng_gguf_close(g);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <phi3-vocab.gguf>\n", argv[0]);
        return 2;
    }
    test_valid();
    test_header();
    test_kv();
    test_tensors();
    test_truncation();
    test_getters();
    test_open_file();
    test_vocab_file(argv[1]);
    printf("test_gguf: %d cases\n", n_cases);
    return tu_finish("test_gguf");
}
