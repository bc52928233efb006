/* Unit tests of engine/gguf_dequant.c: every widened type against gguf-py's dequantize on random
 * blocks (bit-equality, fixtures from scripts/make_gguf_dequant_fixtures.py), unaligned sources,
 * block-by-block calls, NaN scales, and refusals (bad n, NULL, unsupported types) that write nothing.
 * Usage: test_gguf_dequant FIXTURES_DIR (tests/fixtures/gguf_dequant) */
#include "gguf_dequant.h"

#include "../test_util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dq_case {
    const char *name; /* fixture stem */
    uint32_t type;    /* ggml type id */
    int block;        /* elements per block */
    int block_bytes;  /* bytes per block */
    int d_off;        /* byte offset of the fp16 d field in a block */
};

static const struct dq_case CASES[] = {
    {"q4_1", 3, 32, 20, 0},      {"q5_0", 6, 32, 22, 0},      {"q5_1", 7, 32, 24, 0},
    {"q2_k", 10, 256, 84, 80},   {"q3_k", 11, 256, 110, 108}, {"q4_k", 12, 256, 144, 0},
    {"q5_k", 13, 256, 176, 0},   {"q6_k", 14, 256, 210, 208},
};
enum { N_CASES = sizeof CASES / sizeof CASES[0] };

/* Canary floats on each side of every output, and the byte pattern of untouched output. */
enum { GUARD = 64 };
static const uint8_t POISON = 0xA5;

static float *poisoned(int64_t n) // [GUARD + n + GUARD] fp32, all bytes POISON
{
    size_t bytes = (size_t)(n + 2 * GUARD) * sizeof(float);
    float *buf = tu_xmalloc(bytes);
    memset(buf, POISON, bytes);
    return buf;
}

static int all_poison(const void *p, size_t bytes)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < bytes; i++)
        if (b[i] != POISON)
            return 0;
    return 1;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Bit-equality of got[n] with want[n]; on a difference, names the first element and its block. */
static void check_equal(const struct dq_case *c, const char *what, const float *got,
                        const float *want, int64_t n)
{
    if (memcmp(got, want, (size_t)n * sizeof(float)) == 0)
        return;
    for (int64_t i = 0; i < n; i++) {
        if (f32_bits(got[i]) != f32_bits(want[i])) {
            FAIL("%s %s: element %lld (block %lld, index %lld): got %.9g (0x%08x), want %.9g "
                 "(0x%08x)",
                 c->name, what, (long long)i, (long long)(i / c->block), (long long)(i % c->block),
                 (double)got[i], f32_bits(got[i]), (double)want[i], f32_bits(want[i]));
            return;
        }
    }
}

static void test_case(const char *dir, const struct dq_case *c)
{
    char path[4096];
    size_t n_blk_bytes = 0, n_f32_bytes = 0;
    snprintf(path, sizeof path, "%s/%s.blocks", dir, c->name);
    char *blocks = tu_read_file(path, &n_blk_bytes);
    snprintf(path, sizeof path, "%s/%s.f32", dir, c->name);
    char *want_raw = tu_read_file(path, &n_f32_bytes);
    if (blocks == NULL || want_raw == NULL) {
        FAIL("%s: cannot read the fixture under %s", c->name, dir);
        free(blocks);
        free(want_raw);
        return;
    }
    int64_t n = (int64_t)(n_f32_bytes / sizeof(float));
    int64_t n_blocks = n / c->block;
    if (n <= 0 || n % c->block != 0 || (size_t)n_blocks * (size_t)c->block_bytes != n_blk_bytes) {
        FAIL("%s: fixture sizes %zu / %zu do not match", c->name, n_blk_bytes, n_f32_bytes);
        free(blocks);
        free(want_raw);
        return;
    }
    float *want = tu_xmalloc((size_t)n * sizeof(float)); /* aligned copy of the reference */
    memcpy(want, want_raw, (size_t)n * sizeof(float));

    CHECK(eng_gguf_dequant_supported(c->type) == 1, "%s", c->name);

    /* The whole run in one call, canaries on both sides. */
    float *buf = poisoned(n);
    CHECK(eng_gguf_dequant_row(c->type, blocks, n, buf + GUARD) == 0, "%s", c->name);
    check_equal(c, "whole run", buf + GUARD, want, n);
    CHECK(all_poison(buf, GUARD * sizeof(float)) &&
              all_poison(buf + GUARD + n, GUARD * sizeof(float)),
          "%s: wrote outside dst[n]", c->name);

    /* Unaligned source: the same bytes one past an aligned address. */
    uint8_t *shifted = tu_xmalloc(n_blk_bytes + 1);
    memcpy(shifted + 1, blocks, n_blk_bytes);
    memset(buf, POISON, (size_t)(n + 2 * GUARD) * sizeof(float));
    CHECK(eng_gguf_dequant_row(c->type, shifted + 1, n, buf + GUARD) == 0, "%s", c->name);
    check_equal(c, "unaligned source", buf + GUARD, want, n);

    /* One block per call, each into its own exact-size slot: nothing depends on the position. */
    for (int64_t b = 0; b < n_blocks; b++) {
        float *one = poisoned(c->block);
        CHECK(eng_gguf_dequant_row(c->type, blocks + b * c->block_bytes, c->block, one + GUARD) == 0,
              "%s block %lld", c->name, (long long)b);
        check_equal(c, "single block", one + GUARD, want + b * c->block, c->block);
        CHECK(all_poison(one, GUARD * sizeof(float)) &&
                  all_poison(one + GUARD + c->block, GUARD * sizeof(float)),
              "%s: single block wrote outside dst", c->name);
        free(one);
    }

    /* A NaN d turns the whole block into NaN (it multiplies every element). */
    memcpy(shifted, blocks, (size_t)c->block_bytes);
    shifted[c->d_off] = 0x00;
    shifted[c->d_off + 1] = 0x7e;
    memset(buf, POISON, (size_t)(n + 2 * GUARD) * sizeof(float));
    CHECK(eng_gguf_dequant_row(c->type, shifted, c->block, buf + GUARD) == 0, "%s", c->name);
    int n_nan = 0;
    for (int i = 0; i < c->block; i++)
        n_nan += isnan(buf[GUARD + i]) != 0;
    CHECK(n_nan == c->block, "%s: NaN d gave %d NaN of %d", c->name, n_nan, c->block);

    /* Refusals write nothing: negative, partial-block and odd n, NULL pointers. */
    const int64_t bad_n[] = {-1, -(int64_t)c->block, 1, c->block - 1, c->block + 1,
                             n - 1, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof bad_n / sizeof bad_n[0]; i++) {
        memset(buf, POISON, (size_t)(n + 2 * GUARD) * sizeof(float));
        CHECK(eng_gguf_dequant_row(c->type, blocks, bad_n[i], buf + GUARD) == -1, "%s n=%lld",
              c->name, (long long)bad_n[i]);
        CHECK(all_poison(buf, (size_t)(n + 2 * GUARD) * sizeof(float)), "%s n=%lld wrote",
              c->name, (long long)bad_n[i]);
    }
    memset(buf, POISON, (size_t)(n + 2 * GUARD) * sizeof(float));
    CHECK(eng_gguf_dequant_row(c->type, NULL, c->block, buf + GUARD) == -1, "%s", c->name);
    CHECK(eng_gguf_dequant_row(c->type, blocks, c->block, NULL) == -1, "%s", c->name);
    CHECK(eng_gguf_dequant_row(c->type, blocks, 0, buf + GUARD) == 0, "%s", c->name);
    CHECK(eng_gguf_dequant_row(c->type, NULL, 0, NULL) == 0, "%s", c->name);
    CHECK(all_poison(buf, (size_t)(n + 2 * GUARD) * sizeof(float)), "%s: n=0 wrote", c->name);

    free(shifted);
    free(buf);
    free(want);
    free(want_raw);
    free(blocks);
}

/* Types that are not widened here, native ones included: refused whatever n, nothing written. */
static void test_unsupported(void)
{
    const uint32_t types[] = {0,  1,  2,  4,  5,  8,  9,  15, 16, 17, 18, 19, 20, 21,
                              22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 39, 40, 1000, UINT32_MAX};
    uint8_t src[4096];
    memset(src, 0x11, sizeof src);
    float *buf = poisoned(1024);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        CHECK(eng_gguf_dequant_supported(types[i]) == 0, "type %u", types[i]);
        const int64_t ns[] = {0, 32, 256, 1024};
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
            CHECK(eng_gguf_dequant_row(types[i], src, ns[k], buf + GUARD) == -1, "type %u n=%lld",
                  types[i], (long long)ns[k]);
    }
    CHECK(all_poison(buf, (1024 + 2 * GUARD) * sizeof(float)), "an unsupported type wrote");
    free(buf);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < N_CASES; i++)
        test_case(argv[1], &CASES[i]);
    test_unsupported();
    return tu_finish("test_gguf_dequant");
}
