/* Widening of ggml's Q4_1, Q5_0, Q5_1 and K block types to fp32 (gguf_dequant.h): one scalar
 * routine per type, each doing the reference dequantizer's fp32 operations in its order so that
 * results are bit-identical. It does not requantize, look at tensor shapes or read GGUF files. */
#include "gguf_dequant.h"

#include <stddef.h>
#include <string.h>

#include "dtype.h"

enum {
    QK = 32,    /* elements per Q4_1 / Q5_0 / Q5_1 block */
    QK_K = 256, /* elements per K-type super-block */
};

static float load_f16(const uint8_t *p)
{
    return kern_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}

static uint32_t load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- 32-element blocks ---- */

/* Q4_1: fp16 d, fp16 m, 16 bytes of nibbles (low nibbles are elements 0-15). */
static void dequant_q4_1(const uint8_t *b, float *y) // y: [32] fp32
{
    float d = load_f16(b), m = load_f16(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = d * (float)(qs[j] & 15) + m;
        y[j + QK / 2] = d * (float)(qs[j] >> 4) + m;
    }
}

/* Q5_0: fp16 d, u32 of fifth bits (bit j for element j), 16 bytes of nibbles; zero point 16. */
static void dequant_q5_0(const uint8_t *b, float *y) // y: [32] fp32
{
    float d = load_f16(b);
    uint32_t qh = load_u32(b + 2);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < QK / 2; j++) {
        int lo = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | (int)((qh >> (j + QK / 2)) & 1) << 4;
        y[j] = d * (float)(lo - 16);
        y[j + QK / 2] = d * (float)(hi - 16);
    }
}

/* Q5_1: fp16 d, fp16 m, u32 of fifth bits, 16 bytes of nibbles. */
static void dequant_q5_1(const uint8_t *b, float *y) // y: [32] fp32
{
    float d = load_f16(b), m = load_f16(b + 2);
    uint32_t qh = load_u32(b + 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < QK / 2; j++) {
        int lo = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | (int)((qh >> (j + QK / 2)) & 1) << 4;
        y[j] = d * (float)lo + m;
        y[j + QK / 2] = d * (float)hi + m;
    }
}

/* ---- 256-element super-blocks ---- */

/* Q2_K: scales[16] (low nibble scale, high nibble min, one byte per 16 elements), qs[64] of
 * 2-bit values, fp16 d, fp16 dmin. Each 128-element half reads 32 bytes four times, two bits
 * further each time. */
static void dequant_q2_k(const uint8_t *b, float *y) // y: [256] fp32
{
    const uint8_t *scales = b, *qs = b + 16;
    float d = load_f16(b + 80), dmin = load_f16(b + 82);
    for (int e = 0; e < QK_K; e++) {
        int h = e / 128, s = (e / 32) % 4, l = e % 32;
        uint8_t sc = scales[e / 16];
        float dl = d * (float)(sc & 15);
        float ml = dmin * (float)(sc >> 4);
        int q = (qs[32 * h + l] >> (2 * s)) & 3;
        y[e] = dl * (float)q - ml;
    }
}

/* Q3_K's sixteen 6-bit scales: low nibbles from scales[0..7] (low nibbles first, then high
 * nibbles), bits 4-5 from scales[8..11] (two bits per scale, k % 4 picks the byte), minus 32. */
static int q3_k_scale(const uint8_t *scales, int k)
{
    int lo = (scales[k % 8] >> (4 * (k / 8))) & 15;
    int hi = (scales[8 + k % 4] >> (2 * (k / 4))) & 3;
    return (lo | hi << 4) - 32;
}

/* Q3_K: hmask[32] (bit e / 32 of byte e % 32 set means no -4 offset), qs[64] of 2-bit values laid
 * out as Q2_K's, scales[12], fp16 d. */
static void dequant_q3_k(const uint8_t *b, float *y) // y: [256] fp32
{
    const uint8_t *hmask = b, *qs = b + 32, *scales = b + 96;
    float d = load_f16(b + 108);
    for (int e = 0; e < QK_K; e++) {
        int h = e / 128, s = (e / 32) % 4, l = e % 32;
        float dl = d * (float)q3_k_scale(scales, e / 16);
        int low = (qs[32 * h + l] >> (2 * s)) & 3;
        int q = (hmask[l] >> (e / 32)) & 1 ? low : low - 4;
        y[e] = dl * (float)q;
    }
}

/* Q4_K, Q5_K and Q6_K: the kernels' own element decoder (dtype.h), which follows the
 * reference's operations. */
static void dequant_q4_k(const uint8_t *b, float *y) // y: [256] fp32
{
    kern_kq_widen(4, b, y);
}

static void dequant_q5_k(const uint8_t *b, float *y) // y: [256] fp32
{
    kern_kq_widen(5, b, y);
}

static void dequant_q6_k(const uint8_t *b, float *y) // y: [256] fp32
{
    kern_kq_widen(6, b, y);
}

/* ---- dispatch ---- */

struct dequant_type {
    int block;       /* elements per block; 0: not widened here */
    int block_bytes; /* bytes per block */
    void (*fn)(const uint8_t *b, float *y);
};

/* Indexed by ggml type id. */
static const struct dequant_type DEQUANT_TYPES[] = {
    [3] = {QK, 20, dequant_q4_1},     [6] = {QK, 22, dequant_q5_0},
    [7] = {QK, 24, dequant_q5_1},     [10] = {QK_K, 84, dequant_q2_k},
    [11] = {QK_K, 110, dequant_q3_k}, [12] = {QK_K, 144, dequant_q4_k},
    [13] = {QK_K, 176, dequant_q5_k}, [14] = {QK_K, 210, dequant_q6_k},
};

static const struct dequant_type *dequant_lookup(uint32_t ggml_type)
{
    if (ggml_type >= sizeof DEQUANT_TYPES / sizeof DEQUANT_TYPES[0])
        return NULL;
    const struct dequant_type *t = &DEQUANT_TYPES[ggml_type];
    return t->block > 0 ? t : NULL;
}

int eng_gguf_dequant_supported(uint32_t ggml_type)
{
    return dequant_lookup(ggml_type) != NULL;
}

int eng_gguf_dequant_row(uint32_t ggml_type, const void *src, int64_t n, float *dst)
{
    const struct dequant_type *t = dequant_lookup(ggml_type);
    if (t == NULL || n < 0 || n % t->block != 0)
        return -1;
    if (n > 0 && (src == NULL || dst == NULL))
        return -1;
    /* The caller's buffers hold n floats and n / block blocks, so no size here can overflow. */
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / t->block; i++)
        t->fn(b + i * t->block_bytes, dst + i * t->block);
    return 0;
}
