/* The sparsemixer's rule for one router row (kern_moe_route_params in ops.h), written once for
 * the reference op (kernels/ref/moe_route.c) and the CUDA kernel (kernels/cuda/moe_route.cu),
 * so that both pick the same experts by the same float expressions. Header-only, for C and
 * CUDA alike; not an op. */
#ifndef PHISERVE_KERNELS_MOE_ROUTE_H
#define PHISERVE_KERNELS_MOE_ROUTE_H

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define KERN_ROUTE_FN static __host__ __device__ __forceinline__
#else
#define KERN_ROUTE_FN static inline
#endif

/* Logit k of a row with NaN as -inf. */
KERN_ROUTE_FN float kern_route_score(const float *s, int64_t k)
{
    float v = s[k];
    return v != v ? -INFINITY : v;
}

/* The first index of the largest score other than skip (-1: none skipped). */
KERN_ROUTE_FN int64_t kern_route_first_max(const float *s, int64_t n, int64_t skip)
{
    int64_t best = -1;
    float bv = -INFINITY;
    for (int64_t k = 0; k < n; k++) {
        if (k == skip)
            continue;
        float v = kern_route_score(s, k);
        if (best < 0 || v > bv) {
            best = k;
            bv = v;
        }
    }
    return best;
}

/* 1 / sum of exp(s_k - m) over the k != skip that the mask of threshold m keeps: s_k is
 * dropped when (m - s_k) / max(|s_k|, m) > thr, all in float (a NaN quotient keeps it); exp
 * and the sum in double. 0 when m is -inf. */
KERN_ROUTE_FN float kern_route_weight(const float *s, int64_t n, int64_t skip, float m,
                                      float thr)
{
    if (m == -INFINITY)
        return 0.0f;
    double sum = 0.0;
    for (int64_t k = 0; k < n; k++) {
        float sk = kern_route_score(s, k);
        float factor = fabsf(sk) > m ? fabsf(sk) : m;
        if (k == skip || (m - sk) / factor > thr)
            continue;
        sum += exp((double)sk - (double)m);
    }
    return (float)(1.0 / sum);
}

/* Routes one row of n scores: experts[0..1] and weights[0..1] as ops.h states. */
KERN_ROUTE_FN void kern_route_row(const float *s, int64_t n, float thr, int32_t *experts,
                                  float *weights)
{
    int64_t i1 = kern_route_first_max(s, n, -1);
    int64_t i2 = kern_route_first_max(s, n, i1);
    experts[0] = (int32_t)i1;
    experts[1] = (int32_t)i2;
    weights[0] = kern_route_weight(s, n, -1, kern_route_score(s, i1), thr);
    weights[1] = kern_route_weight(s, n, i1, kern_route_score(s, i2), thr);
}

#endif
