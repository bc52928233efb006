/* Unit tests of engine/safetensors.c: handcrafted good and corrupt files (reliability.md K4, K7
 * and the sharded layout) must load with the right shapes and bytes, or fail with a message
 * naming the check. Not a fuzzer: tests/fuzz/fuzz_loader.c covers arbitrary bytes. */
#include "safetensors.h"

#include "../test_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_root[256];
static int dir_counter;

struct image {
    uint8_t *p;
    size_t n;
};

/* 8-byte little-endian header length, the header (padded with spaces to a multiple of 8 when
 * pad), then data_len bytes of the pattern byte i = i & 0xff. */
static struct image build(const char *header, size_t data_len, int pad)
{
    size_t h = strlen(header);
    size_t hp = pad ? (h + 7) / 8 * 8 : h;
    struct image im = {malloc(8 + hp + data_len + 1), 8 + hp + data_len};
    if (im.p == NULL)
        abort();
    for (int i = 0; i < 8; i++)
        im.p[i] = (uint8_t)((uint64_t)hp >> (8 * i));
    memcpy(im.p + 8, header, h);
    memset(im.p + 8 + h, ' ', hp - h);
    for (size_t i = 0; i < data_len; i++)
        im.p[8 + hp + i] = (uint8_t)i;
    return im;
}

static struct image raw(const void *bytes, size_t n)
{
    struct image im = {malloc(n + 1), n};
    if (im.p == NULL)
        abort();
    if (n > 0)
        memcpy(im.p, bytes, n);
    return im;
}

static void set_len(struct image *im, uint64_t hlen)
{
    for (int i = 0; i < 8; i++)
        im->p[i] = (uint8_t)(hlen >> (8 * i));
}

static char *new_dir(void)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/d%d", tmp_root, dir_counter++);
    if (mkdir(path, 0755) != 0) {
        perror("mkdir");
        abort();
    }
    return path;
}

static void write_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[768];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || (n > 0 && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

static void write_text(const char *dir, const char *name, const char *text)
{
    write_file(dir, name, text, strlen(text));
}

/* want holds one or more alternatives separated by '|'. */
static int matches(const char *err, const char *want)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", want);
    for (char *save = NULL, *tok = strtok_r(buf, "|", &save); tok != NULL;
         tok = strtok_r(NULL, "|", &save))
        if (strstr(err, tok) != NULL)
            return 1;
    return 0;
}

/* The image must be refused both in memory and as dir/model.safetensors, with want in the
 * message. */
static void expect_bad(const char *what, struct image im, const char *want)
{
    char err[512] = "";
    size_t n = 12345;
    int rc = eng_st_validate_buffer(im.p, im.n, &n, err, sizeof(err));
    if (rc != -1 || !matches(err, want)) {
        fprintf(stderr, "[%s] buffer: rc=%d err='%s' (want '%s')\n", what, rc, err, want);
        tu_failures++;
    }
    EXPECT(n == 12345);
    char *dir = new_dir();
    write_file(dir, "model.safetensors", im.p, im.n);
    struct eng_st_set *set = (struct eng_st_set *)&n;
    err[0] = '\0';
    rc = eng_st_open_dir(dir, &set, err, sizeof(err));
    if (rc != -1 || set != NULL || !matches(err, want)) {
        fprintf(stderr, "[%s] file: rc=%d err='%s' (want '%s')\n", what, rc, err, want);
        tu_failures++;
    }
    if (strstr(err, "model.safetensors") == NULL) {
        fprintf(stderr, "[%s] file: message does not name the file: '%s'\n", what, err);
        tu_failures++;
    }
    eng_st_close(rc == 0 ? set : NULL);
    free(im.p);
}

static void expect_bad_hdr(const char *what, const char *header, size_t data_len, const char *want)
{
    expect_bad(what, build(header, data_len, 1), want);
}

static void test_header_bounds(void)
{
    expect_bad("empty", raw("", 0), "empty file");
    expect_bad("5 bytes", raw("\x02\0\0\0\0", 5), "too small to hold");
    struct image im = build("{}", 0, 1);
    set_len(&im, 100000001ull);
    expect_bad("header_len > 100 MB", im, "exceeds the limit");
    im = build("{}", 0, 1);
    set_len(&im, UINT64_MAX);
    expect_bad("header_len 2^64-1", im, "exceeds the limit");
    im = build("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 1);
    set_len(&im, 4096);
    expect_bad("header_len > file", im, "exceeds the file");
    im = build("{}", 0, 0);
    set_len(&im, 1);
    expect_bad("header_len 1", im, "too small for a JSON object");
    im = build("{}", 0, 0);
    set_len(&im, 0);
    expect_bad("header_len 0", im, "too small for a JSON object");
    expect_bad_hdr("not '{'", "[{\"a\":1}]", 0, "does not start with '{'");
    expect_bad_hdr("leading space", " {}", 0, "does not start with '{'");
    expect_bad_hdr("overlong UTF-8", "{\"a\xC0\xAF\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
                   4, "not valid UTF-8");
    expect_bad_hdr("encoded surrogate", "{\"\xED\xA0\x80\":1}", 0, "not valid UTF-8");
    expect_bad_hdr("above U+10FFFF", "{\"\xF5\x80\x80\x80\":1}", 0, "not valid UTF-8");
    expect_bad_hdr("truncated sequence", "{\"\xE2\x82\"}", 0, "not valid UTF-8");
    expect_bad_hdr("not JSON", "{\"a\":", 0, "not valid JSON");
    expect_bad_hdr("object without value after comma", "{\"a\":{},", 0, "not valid JSON");
    expect_bad_hdr("trailing garbage", "{}x", 0, "trailing bytes");
    expect_bad_hdr("two objects", "{}{}", 0, "trailing bytes");
    expect_bad_hdr("\\u0000 in name",
                   "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "NUL");
    static const uint8_t nul_hdr[] = {2, 0, 0, 0, 0, 0, 0, 0, '{', 0};
    expect_bad("raw NUL", raw(nul_hdr, sizeof(nul_hdr)), "NUL");
    expect_bad_hdr("bad \\u escape", "{\"\\uZZZZ\":1}", 0, "malformed \\u escape");
    expect_bad_hdr("short \\u escape", "{\"\\u12\":1}", 0, "malformed \\u escape");
    expect_bad_hdr("\\u at the end", "{\"\\u", 0, "malformed \\u escape");
    expect_bad_hdr("lone surrogate", "{\"\\uD800\":1}", 0, "not valid JSON");
}

static void test_entries(void)
{
    expect_bad_hdr("shape product overflow",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[4194305,4194305,211106198978564],"
                   "\"data_offsets\":[0,4]}}", 4, "element count overflows");
    expect_bad_hdr("byte size overflow",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[4503599627370495,1024],"
                   "\"data_offsets\":[0,4]}}", 4, "byte size overflows");
    expect_bad_hdr("offsets [16,0]",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}}", 16,
                   "begin is after end");
    expect_bad_hdr("negative offset",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
                   "non-negative");
    expect_bad_hdr("fractional offset",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.5]}}", 4,
                   "non-negative integers");
    expect_bad_hdr("offsets not a pair",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8,
                   "data_offsets missing or not an array");
    expect_bad_hdr("end beyond data",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[32],\"data_offsets\":[0,128]}}", 100,
                   "data_offsets end 128 beyond data region of 100 bytes");
    expect_bad_hdr("overlap",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap");
    expect_bad_hdr("same range twice",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "overlap");
    expect_bad_hdr("zero-size inside another",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}", 8, "overlap");
    expect_bad_hdr("gap between",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20,
                   "gap in data region: bytes [8, 12)");
    expect_bad_hdr("gap at start",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                   "gap in data region: bytes [0, 4)");
    expect_bad_hdr("gap at end",
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12,
                   "gap in data region: bytes [8, 12) at its end");
    expect_bad_hdr("data without tensors", "{}", 8, "gap in data region");
    expect_bad_hdr("size mismatch",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                   "span 8 bytes but dtype F32");
    expect_bad_hdr("dtype changes size",
                   "{\"w\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16,
                   "need 8 bytes");
    expect_bad_hdr("I8", "{\"w\":{\"dtype\":\"I8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8,
                   "tensor 'w': dtype I8 is not supported");
    expect_bad_hdr("F64", "{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                   "tensor 'w': dtype F64 is not supported");
    expect_bad_hdr("unknown dtype", "{\"w\":{\"dtype\":\"Q4_K\",\"shape\":[1],\"data_offsets\":[0,8]}}",
                   8, "unknown dtype 'Q4_K'");
    expect_bad_hdr("lowercase dtype", "{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                   4, "unknown dtype");
    expect_bad_hdr("dtype not a string", "{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}",
                   4, "dtype missing or not a string");
    expect_bad_hdr("no dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                   "dtype missing");
    expect_bad_hdr("no shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
                   "shape missing");
    expect_bad_hdr("no offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
                   "data_offsets missing");
    expect_bad_hdr("negative dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
                   4, "shape[0] is not a non-negative integer");
    /* Integers are read exactly up to 2^63 - 1: 2^53 + 1 is not rounded, 2^63 is refused. */
    expect_bad_hdr("dim 2^53 + 1", "{\"w\":{\"dtype\":\"F32\",\"shape\":[9007199254740993],"
                   "\"data_offsets\":[0,4]}}", 4, "shape of 9007199254740993 elements");
    expect_bad_hdr("dim 2^63 - 1", "{\"w\":{\"dtype\":\"F32\",\"shape\":[9223372036854775807],"
                   "\"data_offsets\":[0,4]}}", 4, "byte size overflows");
    expect_bad_hdr("dim 2^63", "{\"w\":{\"dtype\":\"F32\",\"shape\":[9223372036854775808],"
                   "\"data_offsets\":[0,4]}}", 4, "shape[0] is not a non-negative integer below 2^63");
    expect_bad_hdr("dim 1.0", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}",
                   4, "shape[0]");
    expect_bad_hdr("offset 2^53 + 1", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],"
                   "\"data_offsets\":[0,9007199254740993]}}", 4,
                   "data_offsets end 9007199254740993 beyond data region of 4 bytes");
    expect_bad_hdr("offset 2^63", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],"
                   "\"data_offsets\":[0,9223372036854775808]}}", 4, "non-negative integers below 2^63");
    expect_bad_hdr("string dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,\"2\"],\"data_offsets\":[0,4]}}",
                   4, "shape[1]");
    expect_bad_hdr("9 dims",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
                   4, "more than 8 dimensions");
    expect_bad_hdr("entry not an object", "{\"w\":[1,2]}", 0, "tensor 'w': entry is not a JSON object");
    expect_bad_hdr("duplicate tensor names",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                   "duplicate tensor name 'w'");
    expect_bad_hdr("duplicate key in entry",
                   "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                   4, "duplicate key 'dtype'");
    expect_bad_hdr("metadata not object", "{\"__metadata__\":[\"x\"]}", 0, "__metadata__");
    expect_bad_hdr("metadata value not string", "{\"__metadata__\":{\"format\":1}}", 0,
                   "__metadata__ value of 'format'");
    expect_bad_hdr("misaligned F32",
                   "{\"a\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}", 6, "not aligned");
    static const char odd_hdr[] = "{\"a\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]}}";
    EXPECT((8 + strlen(odd_hdr)) % 2 == 1);
    expect_bad("unpadded header misaligns BF16", build(odd_hdr, 2, 0), "not aligned");

    /* Deep nesting and huge numbers: refused, never a crash. */
    size_t depth = 5000;
    char *deep = malloc(depth * 2 + 16);
    if (deep == NULL)
        abort();
    strcpy(deep, "{\"a\":");
    size_t p = strlen(deep);
    for (size_t i = 0; i < depth; i++)
        deep[p++] = '[';
    for (size_t i = 0; i < depth; i++)
        deep[p++] = ']';
    deep[p++] = '}';
    deep[p] = '\0';
    expect_bad_hdr("deep nesting", deep, 0, "not valid JSON");
    free(deep);
    char *num = malloc(20100);
    if (num == NULL)
        abort();
    strcpy(num, "{\"w\":{\"dtype\":\"F32\",\"shape\":[");
    p = strlen(num);
    for (int i = 0; i < 20000; i++)
        num[p++] = '9';
    strcpy(num + p, "],\"data_offsets\":[0,4]}}");
    /* cJSON 1.7.15 stops reading a number after 63 characters; later versions read it whole. */
    expect_bad_hdr("20000-digit dimension", num, 4, "not valid JSON|tensor 'w': shape[0]");
    free(num);
}

static const char GOOD_HDR[] =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
    "\"b16\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[16,28]},"
    "\"empty\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[28,28]},"
    "\"h16\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[28,36]},"
    "\"scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[36,40]}}";

static void check_tensor(const struct eng_st_set *set, const char *name, enum kern_dtype dt,
                         int n_dims, const int64_t *shape, int64_t n_el, size_t n_bytes,
                         const uint8_t *data_base, size_t begin)
{
    const struct eng_tensor *t = eng_st_find(set, name);
    EXPECT(t != NULL);
    if (t == NULL)
        return;
    EXPECT(strcmp(t->name, name) == 0);
    EXPECT(t->dtype == dt);
    EXPECT(t->n_dims == n_dims);
    for (int i = 0; i < n_dims; i++)
        EXPECT(t->shape[i] == shape[i]);
    EXPECT(t->n_elements == n_el);
    EXPECT(t->n_bytes == n_bytes);
    /* The data pattern byte is the offset inside the data region. */
    const uint8_t *d = t->data;
    for (size_t i = 0; i < n_bytes; i++)
        EXPECT(d[i] == (uint8_t)(begin + i));
    if (data_base != NULL)
        EXPECT(d == data_base + begin);
}

static void test_good_single(void)
{
    struct image im = build(GOOD_HDR, 40, 1);
    char err[512] = "";
    size_t n = 0;
    EXPECT(eng_st_validate_buffer(im.p, im.n, &n, err, sizeof(err)) == 0);
    EXPECT(n == 5);
    EXPECT(eng_st_validate_buffer(im.p, im.n, NULL, err, sizeof(err)) == 0);

    char *dir = new_dir();
    write_file(dir, "model.safetensors", im.p, im.n);
    struct eng_st_set *set = NULL;
    int rc = eng_st_open_dir(dir, &set, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "good single: %s\n", err);
    EXPECT(rc == 0 && set != NULL);
    if (set != NULL) {
        EXPECT(eng_st_count(set) == 5);
        static const int64_t s22[] = {2, 2}, s23[] = {2, 3}, s05[] = {0, 5}, s4[] = {4};
        check_tensor(set, "model.norm.weight", KERN_DTYPE_F32, 2, s22, 4, 16, NULL, 0);
        check_tensor(set, "b16", KERN_DTYPE_BF16, 2, s23, 6, 12, NULL, 16);
        check_tensor(set, "empty", KERN_DTYPE_F16, 2, s05, 0, 0, NULL, 28);
        check_tensor(set, "h16", KERN_DTYPE_F16, 1, s4, 4, 8, NULL, 28);
        check_tensor(set, "scalar", KERN_DTYPE_F32, 0, NULL, 1, 4, NULL, 36);
        EXPECT(eng_st_find(set, "__metadata__") == NULL);
        EXPECT(eng_st_find(set, "missing") == NULL);
        EXPECT(eng_st_find(set, "") == NULL);
        /* Indexed access visits every tensor once, sorted by name. */
        for (size_t i = 0; i < eng_st_count(set); i++) {
            const struct eng_tensor *t = eng_st_at(set, i);
            EXPECT(t != NULL && eng_st_find(set, t->name) == t);
            if (i > 0)
                EXPECT(strcmp(eng_st_at(set, i - 1)->name, t->name) < 0);
        }
        EXPECT(eng_st_at(set, 5) == NULL);
        const struct eng_tensor *t = eng_st_find(set, "model.norm.weight");
        EXPECT(t != NULL && ((uintptr_t)t->data % 4) == 0);
    }
    eng_st_close(set);
    eng_st_close(NULL);
    EXPECT(eng_st_count(NULL) == 0 && eng_st_find(NULL, "x") == NULL && eng_st_at(NULL, 0) == NULL);

    /* Truncated by 1 byte and by half: the last tensor runs past the data region. */
    struct image t1 = raw(im.p, im.n - 1);
    expect_bad("truncated by 1 byte", t1, "beyond data region of 39 bytes");
    struct image t2 = raw(im.p, im.n / 2);
    expect_bad("truncated by half", t2, "exceeds the file");
    expect_bad("one byte more than the tensors cover", build(GOOD_HDR, 41, 1),
               "gap in data region: bytes [40, 41)");
    free(im.p);

    /* An empty model (no tensors, no data) is a valid file; the model decides what it needs. */
    im = build("{}", 0, 1);
    EXPECT(eng_st_validate_buffer(im.p, im.n, &n, err, sizeof(err)) == 0 && n == 0);
    free(im.p);
    /* Zero-size tensors may share an offset with the next tensor (the reference allows it). */
    im = build("{\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
               "\"y\":{\"dtype\":\"F32\",\"shape\":[7,0],\"data_offsets\":[8,8]}}", 8, 1);
    rc = eng_st_validate_buffer(im.p, im.n, &n, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "zero-size sharing: %s\n", err);
    EXPECT(rc == 0 && n == 4);
    free(im.p);
    /* Trailing whitespace padding of other kinds is accepted; unknown entry keys are ignored. */
    im = build("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}\n\t\r ", 4, 1);
    EXPECT(eng_st_validate_buffer(im.p, im.n, &n, err, sizeof(err)) == 0 && n == 1);
    free(im.p);
    /* A UTF-8 BOM-free multi-byte name is fine. */
    im = build("{\"\xC3\xA9t\xE2\x82\xAC\xF0\x9F\x98\x80\":{\"dtype\":\"F16\",\"shape\":[1],"
               "\"data_offsets\":[0,2]}}", 2, 1);
    EXPECT(eng_st_validate_buffer(im.p, im.n, &n, err, sizeof(err)) == 0 && n == 1);
    free(im.p);
    EXPECT(eng_st_validate_buffer(NULL, 0, &n, err, sizeof(err)) == -1);
    /* A NULL or zero-length err buffer is allowed. */
    EXPECT(eng_st_validate_buffer((const uint8_t *)"x", 1, NULL, NULL, 0) == -1);
}

static void expect_open_fail(const char *what, const char *dir, const char *want)
{
    char err[512] = "";
    struct eng_st_set *set = NULL;
    int rc = eng_st_open_dir(dir, &set, err, sizeof(err));
    if (rc != -1 || set != NULL || strstr(err, want) == NULL) {
        fprintf(stderr, "[%s] rc=%d err='%s' (want '%s')\n", what, rc, err, want);
        tu_failures++;
    }
    if (rc == 0)
        eng_st_close(set);
}

static void test_files(void)
{
    char path[768];
    snprintf(path, sizeof(path), "%s/does-not-exist", tmp_root);
    expect_open_fail("nonexistent dir", path, "neither model.safetensors nor");
    expect_open_fail("empty dir", new_dir(), "neither model.safetensors nor");

    char *dir = new_dir();
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    EXPECT(mkdir(path, 0755) == 0);
    expect_open_fail("directory instead of file", dir, "model.safetensors: not a regular file");

    dir = new_dir();
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    EXPECT(symlink("/dev/zero", path) == 0);
    expect_open_fail("symlink to /dev/zero", dir, "model.safetensors: not a regular file");

    dir = new_dir();
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    EXPECT(mkfifo(path, 0644) == 0);
    expect_open_fail("FIFO (must not hang)", dir, "not a regular file");

    dir = new_dir();
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    EXPECT(symlink("nowhere", path) == 0);
    expect_open_fail("dangling symlink", dir, "cannot open");

    /* A symlink to a good file (the Hugging Face cache layout) is followed. */
    dir = new_dir();
    struct image im = build(GOOD_HDR, 40, 1);
    write_file(dir, "blob", im.p, im.n);
    free(im.p);
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    EXPECT(symlink("blob", path) == 0);
    char err[512];
    struct eng_st_set *set = NULL;
    EXPECT(eng_st_open_dir(dir, &set, err, sizeof(err)) == 0 && eng_st_count(set) == 5);
    eng_st_close(set);

    if (geteuid() != 0) {
        dir = new_dir();
        im = build(GOOD_HDR, 40, 1);
        write_file(dir, "model.safetensors", im.p, im.n);
        free(im.p);
        snprintf(path, sizeof(path), "%s/model.safetensors", dir);
        EXPECT(chmod(path, 0) == 0);
        expect_open_fail("permission denied", dir, "cannot open");
    }
}

/* Writes shard name with the tensors of header (data pattern as in build()). */
static void write_shard(const char *dir, const char *name, const char *header, size_t data_len)
{
    struct image im = build(header, data_len, 1);
    write_file(dir, name, im.p, im.n);
    free(im.p);
}

#define SHARD1 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}," \
               "\"b\":{\"dtype\":\"BF16\",\"shape\":[3,1],\"data_offsets\":[8,14]}}"
#define SHARD2 "{\"c\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}"
#define S1 "model-00001-of-00002.safetensors"
#define S2 "model-00002-of-00002.safetensors"
#define INDEX_OK "{\"metadata\":{\"total_size\":22},\"weight_map\":{\"a\":\"" S1 "\",\"b\":\"" S1 \
                 "\",\"c\":\"" S2 "\"}}"

static char *sharded_dir(const char *index, int with_s2)
{
    char *dir = new_dir();
    write_shard(dir, S1, SHARD1, 14);
    if (with_s2)
        write_shard(dir, S2, SHARD2, 8);
    write_text(dir, "model.safetensors.index.json", index);
    return dir;
}

static void test_sharded(void)
{
    char err[512] = "";
    struct eng_st_set *set = NULL;
    char *dir = sharded_dir(INDEX_OK, 1);
    int rc = eng_st_open_dir(dir, &set, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "good sharded: %s\n", err);
    EXPECT(rc == 0 && set != NULL);
    if (set != NULL) {
        static const int64_t s2[] = {2}, s31[] = {3, 1}, s22[] = {2, 2};
        EXPECT(eng_st_count(set) == 3);
        check_tensor(set, "a", KERN_DTYPE_F32, 1, s2, 2, 8, NULL, 0);
        check_tensor(set, "b", KERN_DTYPE_BF16, 2, s31, 3, 6, NULL, 8);
        check_tensor(set, "c", KERN_DTYPE_F16, 2, s22, 4, 8, NULL, 0);
        /* a and b live in one mapping, c in another. */
        const uint8_t *pa = eng_st_find(set, "a")->data, *pb = eng_st_find(set, "b")->data;
        EXPECT(pb == pa + 8);
    }
    eng_st_close(set);

    expect_open_fail("index names a missing shard", sharded_dir(INDEX_OK, 0), S2 ": cannot open");
    expect_open_fail("'../' shard name",
                     sharded_dir("{\"weight_map\":{\"a\":\"../" S1 "\"}}", 1),
                     "shard name '../" S1 "' is not a plain file name");
    expect_open_fail("absolute shard name", sharded_dir("{\"weight_map\":{\"a\":\"/etc/passwd\"}}", 1),
                     "not a plain file name");
    expect_open_fail("'..' shard name", sharded_dir("{\"weight_map\":{\"a\":\"..\"}}", 1),
                     "not a plain file name");
    expect_open_fail("empty shard name", sharded_dir("{\"weight_map\":{\"a\":\"\"}}", 1),
                     "not a plain file name");
    expect_open_fail("tensor in index absent from shard",
                     sharded_dir("{\"weight_map\":{\"a\":\"" S1 "\",\"b\":\"" S1 "\",\"c\":\"" S2
                                 "\",\"zz\":\"" S2 "\"}}", 1),
                     "tensor 'zz' is listed in the weight_map but absent from shard " S2);
    expect_open_fail("tensor in the wrong shard",
                     sharded_dir("{\"weight_map\":{\"a\":\"" S1 "\",\"b\":\"" S1 "\",\"c\":\"" S1
                                 "\",\"d\":\"" S2 "\"}}", 1),
                     "tensor 'c' is mapped to shard " S1 " but found in " S2);
    expect_open_fail("tensor mapped elsewhere",
                     sharded_dir("{\"weight_map\":{\"a\":\"" S1 "\",\"b\":\"" S2 "\",\"c\":\"" S2 "\"}}",
                                 1),
                     "tensor 'b' is mapped to shard " S2 " but found in " S1);
    expect_open_fail("shard tensor not in index",
                     sharded_dir("{\"weight_map\":{\"a\":\"" S1 "\",\"c\":\"" S2 "\"}}", 1),
                     "tensor 'b' is not listed");
    expect_open_fail("index lists a tensor twice",
                     sharded_dir("{\"weight_map\":{\"a\":\"" S1 "\",\"a\":\"" S1 "\"}}", 1),
                     "lists tensor 'a' twice");
    expect_open_fail("weight_map missing", sharded_dir("{\"metadata\":{}}", 1), "weight_map missing");
    expect_open_fail("weight_map empty", sharded_dir("{\"weight_map\":{}}", 1), "empty");
    expect_open_fail("weight_map value not a string", sharded_dir("{\"weight_map\":{\"a\":1}}", 1),
                     "is not a string");
    expect_open_fail("index not JSON", sharded_dir("{\"weight_map\":", 1), "not a valid JSON object");
    expect_open_fail("index is an array", sharded_dir("[]", 1), "not a valid JSON object");
    expect_open_fail("index trailing garbage", sharded_dir(INDEX_OK "x", 1), "trailing bytes");

    /* A tensor present in two shards. */
    dir = new_dir();
    write_shard(dir, S1, SHARD1, 14);
    write_shard(dir, S2, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    write_text(dir, "model.safetensors.index.json", INDEX_OK);
    expect_open_fail("tensor in two shards", dir, "tensor 'a' appears in two shards");

    /* A corrupt shard is reported under its own name. */
    dir = new_dir();
    write_shard(dir, S1, SHARD1, 14);
    write_shard(dir, S2, "{\"c\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[8,0]}}", 8);
    write_text(dir, "model.safetensors.index.json", INDEX_OK);
    expect_open_fail("corrupt shard", dir, S2 ": tensor 'c': data_offsets [8, 0]");

    /* The index must be a regular file too. */
    dir = new_dir();
    char path[768];
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    EXPECT(symlink("/dev/zero", path) == 0);
    expect_open_fail("index is /dev/zero", dir, "not a regular file");

    /* model.safetensors wins over an index when both exist (as in transformers). */
    dir = sharded_dir("{\"weight_map\":{\"nope\":\"missing.safetensors\"}}", 1);
    write_shard(dir, "model.safetensors", SHARD2, 8);
    set = NULL;
    EXPECT(eng_st_open_dir(dir, &set, err, sizeof(err)) == 0 && eng_st_count(set) == 1 &&
          eng_st_find(set, "c") != NULL);
    eng_st_close(set);
}

static void rm_rf(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", path);
}

int main(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmp_root, sizeof(tmp_root), "%s/phiserve-st-XXXXXX", t != NULL && *t ? t : "/tmp");
    if (mkdtemp(tmp_root) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_header_bounds();
    test_entries();
    test_good_single();
    test_files();
    test_sharded();
    rm_rf(tmp_root);
    return tu_finish("test_safetensors");
}
