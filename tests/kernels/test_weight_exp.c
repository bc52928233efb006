/* kern_weight_exp (kernels/weight_exp.h) against exp in double: within 2 ulp of the true value
 * over a sweep of every 97th float in [-104, 0] (results above FLT_MIN; subnormal results
 * within half their spacing plus 2 ulp of FLT_MIN's), exact at 0, 0 below -104 and for NaN
 * and -inf, and never increasing as x decreases. The bit-for-bit agreement between host and
 * GPU that it exists for is checked where both run: tests/gpu/test_gpu_ops.c (sample). */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "weight_exp.h"

#include "../test_util.h"

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

int main(void)
{
    EXPECT(kern_weight_exp(0.0f) == 1.0f);
    EXPECT(kern_weight_exp(-0.0f) == 1.0f);
    EXPECT(kern_weight_exp(-INFINITY) == 0.0f);
    EXPECT(kern_weight_exp(NAN) == 0.0f);
    EXPECT(kern_weight_exp(-104.5f) == 0.0f);
    EXPECT(kern_weight_exp(-1e30f) == 0.0f);

    double worst_ulp = 0.0;
    float worst_x = 0.0f;
    int64_t n = 0, not_monotone = 0;
    float prev = 1.0f;
    /* Bit patterns of negative floats grow with |x|: from -0 down to -104. */
    const uint32_t lo = 0x80000000u, hi = 0xc2d00000u; /* -104.0f */
    for (uint32_t b = lo + 1; b <= hi && b > lo; b += 97) {
        float x = from_bits(b);
        float got = kern_weight_exp(x);
        double want = exp((double)x);
        double ulp = want >= FLT_MIN ? ldexp(1.0, ilogb(want) - 23) : ldexp(1.0, -149);
        double err = fabs((double)got - want) / ulp;
        if (err > worst_ulp) {
            worst_ulp = err;
            worst_x = x;
        }
        if (got > prev)
            not_monotone++;
        prev = got;
        n++;
    }
    printf("%lld points: worst error %.3f ulp at x = %.9g; %lld increases\n", (long long)n,
           worst_ulp, (double)worst_x, (long long)not_monotone);
    CHECK(worst_ulp <= 2.0, "error %.3f ulp at x = %.9g", worst_ulp, (double)worst_x);
    CHECK(not_monotone == 0, "%lld places where the result grows as x falls",
          (long long)not_monotone);
    return tu_finish("weight_exp");
}
