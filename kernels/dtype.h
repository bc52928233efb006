/* Scalar conversions between fp32 and the 16-bit storage types (bf16, fp16).
 * Header-only so that C, the CPU tests and CUDA code (under __CUDACC__) share one definition;
 * this is not a vector library. */
#ifndef PHISERVE_KERNELS_DTYPE_H
#define PHISERVE_KERNELS_DTYPE_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define KERN_HD __host__ __device__
#else
#define KERN_HD
#endif

static inline KERN_HD float kern_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even, as PyTorch does; NaN stays a (quiet) NaN. */
static inline KERN_HD uint16_t kern_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline KERN_HD float kern_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while ((man & 0x400u) == 0) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ffu;
            u = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even; overflow goes to infinity. */
static inline KERN_HD uint16_t kern_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (absu >= 0x477ff000u) /* rounds to >= 65520: infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (absu < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (absu < 0x33000000u)
            return (uint16_t)sign;
        uint32_t exp = absu >> 23;
        uint32_t man = (absu & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - exp; /* 14..24 */
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1u);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t r = absu + 0xfffu + ((absu >> 13) & 1u);
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

/* Element e (0..31) of one block of ops.h's block formats, as fp32: the block's fp16 scale
 * times its integer (Q8_0: an int8; q4 != 0, Q4_0: a nibble minus 8), an exact product. */
static inline KERN_HD float kern_block_elem(int q4, const uint8_t *blk, int e)
{
    float d = kern_f16_to_f32((uint16_t)(blk[0] | (blk[1] << 8)));
    if (!q4)
        return d * (float)(int8_t)blk[2 + e];
    int q = e < 16 ? blk[2 + e] & 15 : blk[2 + e - 16] >> 4;
    return d * (float)(q - 8);
}

/* Sub-block j (0..7) of a Q4_K / Q5_K super-block: its 6-bit scale and min from the 12 packed
 * bytes s. Pairs 0-3 are the low 6 bits of s[j] (scale) and s[j + 4] (min); pairs 4-7 take
 * their low 4 bits from s[j + 4] (scale: low nibble, min: high nibble) and bits 4-5 from the top
 * two bits of s[j - 4] (scale) and s[j] (min). */
static inline KERN_HD void kern_k_scale_min(const uint8_t *s, int j, int *sc, int *mn)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 2) & 0x30);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
    }
}

/* The integer quant of element e (0..255) of one super-block of ops.h's K formats, bits = 4
 * (Q4_K: 0..15), 5 (Q5_K: 0..31) or 6 (Q6_K: 0..63). Q4_K / Q5_K: e = 64 c + 32 s + l is nibble
 * s of qs[32 c + l] (Q5_K: bit 4 = bit e / 32 of qh[l]); Q6_K: e = 128 h + 32 s + l takes nibble
 * s / 2 of ql[64 h + 32 (s % 2) + l] and bits 2s..2s+1 of qh[32 h + l] as bits 4-5. */
static inline KERN_HD int kern_kq_quant(int bits, const uint8_t *b, int e)
{
    if (bits == 6) {
        int h = e / 128, s = (e / 32) % 4, l = e % 32;
        int lo = (b[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 15;
        int hi = (b[128 + 32 * h + l] >> (2 * s)) & 3;
        return lo | hi << 4;
    }
    int q = (b[(bits == 5 ? 48 : 16) + 32 * (e / 64) + e % 32] >> (4 * ((e / 32) % 2))) & 15;
    if (bits == 5)
        q |= ((b[16 + e % 32] >> (e / 32)) & 1) << 4;
    return q;
}

/* The two factors of 32-element sub-block j (0..7), exact fp32 products: Q4_K / Q5_K
 * f0 = d * scale_j, f1 = dmin * min_j; Q6_K the d * scale of its two 16-element halves. */
static inline KERN_HD void kern_kq_factors(int bits, const uint8_t *b, int j, float *f0, float *f1)
{
    if (bits == 6) {
        float d = kern_f16_to_f32((uint16_t)(b[208] | (b[209] << 8)));
        *f0 = d * (float)(int8_t)b[192 + 2 * j];
        *f1 = d * (float)(int8_t)b[193 + 2 * j];
        return;
    }
    int sc, mn;
    kern_k_scale_min(b + 4, j, &sc, &mn);
    *f0 = kern_f16_to_f32((uint16_t)(b[0] | (b[1] << 8))) * (float)sc;
    *f1 = kern_f16_to_f32((uint16_t)(b[2] | (b[3] << 8))) * (float)mn;
}

/* Element e's value from its sub-block's factors and its quant, by exactly the operations (and
 * their order) of ggml's reference dequantizer: Q4_K / Q5_K (d * scale) * q - dmin * min,
 * Q6_K (d * scale) * (q - 32). */
static inline KERN_HD float kern_kq_value(int bits, float f0, float f1, int q, int e)
{
    if (bits == 6)
        return (e % 32 < 16 ? f0 : f1) * (float)(q - 32);
    return f0 * (float)q - f1;
}

/* Element e (0..255) of one K super-block as fp32. */
static inline KERN_HD float kern_kq_elem(int bits, const uint8_t *b, int e)
{
    float f0, f1;
    kern_kq_factors(bits, b, e / 32, &f0, &f1);
    return kern_kq_value(bits, f0, f1, kern_kq_quant(bits, b, e), e);
}

/* The 256 elements of one K super-block into y, as kern_kq_elem gives them. */
static inline KERN_HD void kern_kq_widen(int bits, const uint8_t *b, float *y)
{
    for (int j = 0; j < 8; j++) {
        float f0, f1;
        kern_kq_factors(bits, b, j, &f0, &f1);
        for (int l = 0; l < 32; l++)
            y[32 * j + l] = kern_kq_value(bits, f0, f1, kern_kq_quant(bits, b, 32 * j + l), 32 * j + l);
    }
}

/* One block of KERN_QBLOCK finite activations rounded for the int8 dot of the R16 formats
 * (ops.h, kern_matmul_params), every step one fp32 operation: q[t] (|q| <= 127), returns the
 * block's d (0 for a zero or tiny block, whose q are all 0) and sets *sum to the sum of q.
 * Host code only: the reference and the portable CPU build. */
static inline float kern_x8_block(const float *v, int8_t *q, int32_t *sum)
{
    float a = 0.0f;
    for (int t = 0; t < 32; t++)
        a = fabsf(v[t]) > a ? fabsf(v[t]) : a;
    float d = a / 127.0f;
    *sum = 0;
    if (d < FLT_MIN) {
        memset(q, 0, 32);
        return 0.0f;
    }
    float id = 1.0f / d;
    for (int t = 0; t < 32; t++) {
        q[t] = (int8_t)nearbyintf(v[t] * id); /* the default rounding: half to even */
        *sum += q[t];
    }
    return d;
}

#endif
