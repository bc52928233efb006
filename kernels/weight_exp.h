/* The exponential of the samplers' weights, exp(x) for x <= 0 in fp32, written with IEEE
 * multiplies, adds and a power-of-two scaling only, so that the
 * host sampler (engine/sampler.c), the reference sample op and the CUDA kernel compute the
 * same bits for the same input, where each library's expf may differ in the last bits. With
 * equal weights a seeded request draws the same tokens on every backend. Not a general exp:
 * x > 0 is outside its domain. Header-only, for C and CUDA alike. */
#ifndef PHISERVE_KERNELS_WEIGHT_EXP_H
#define PHISERVE_KERNELS_WEIGHT_EXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define KERN_WEIGHT_EXP_FN static __host__ __device__ __forceinline__
#else
#define KERN_WEIGHT_EXP_FN static inline
#endif

/* a * b + c with two roundings: never fused, in device code either (nvcc fuses a plain
 * a * b + c by default; GCC does not in ISO C, and the emulator library is built with
 * -ffp-contract=off). */
KERN_WEIGHT_EXP_FN float kern_weight_mul_add(float a, float b, float c)
{
#if defined(__CUDA_ARCH__)
    return __fadd_rn(__fmul_rn(a, b), c);
#else
    return a * b + c;
#endif
}

/* 2^e for e in [-126, 127]. */
KERN_WEIGHT_EXP_FN float kern_weight_pow2(int e)
{
    uint32_t bits = (uint32_t)(e + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* exp(x) for x <= 0: 1 at 0, 0 below -104 (under the smallest subnormal) and for NaN. Range
 * reduction x = k ln2 + r, |r| <= ln2 / 2, with ln2 in two parts (k * KERN_LN2_HI exact for
 * |k| < 2^15), then the degree-7 Taylor polynomial of exp(r) (truncation below 2^-27) and
 * 2^k. Error within 2 ulp of exp(x) for results above FLT_MIN (tests/kernels/test_weight_exp.c). */
KERN_WEIGHT_EXP_FN float kern_weight_exp(float x)
{
    if (!(x > -104.0f))
        return 0.0f;
    if (x >= 0.0f)
        return 1.0f;
    /* round(x / ln2) to nearest even by the 1.5 * 2^23 shift: no rintf call on the host */
    float k = kern_weight_mul_add(x, 1.44269504f, 12582912.0f) - 12582912.0f;
    float r = kern_weight_mul_add(k, -0.693359375f, x);  /* x - k * ln2_hi, exact */
    r = kern_weight_mul_add(k, 2.12194440e-4f, r);       /* - k * ln2_lo */
    float p = 1.0f / 5040.0f;
    p = kern_weight_mul_add(p, r, 1.0f / 720.0f);
    p = kern_weight_mul_add(p, r, 1.0f / 120.0f);
    p = kern_weight_mul_add(p, r, 1.0f / 24.0f);
    p = kern_weight_mul_add(p, r, 1.0f / 6.0f);
    p = kern_weight_mul_add(p, r, 0.5f);
    p = kern_weight_mul_add(p, r, 1.0f);
    p = kern_weight_mul_add(p, r, 1.0f);
    /* times 2^k, k in [-150, 0]: one rounding at most (where the result is subnormal), as
     * ldexpf would, without its call */
    int e = (int)k;
    if (e < -126) {
        p *= kern_weight_pow2(e + 64);
        return p * kern_weight_pow2(-64);
    }
    return p * kern_weight_pow2(e);
}

#undef KERN_WEIGHT_EXP_FN
#endif
