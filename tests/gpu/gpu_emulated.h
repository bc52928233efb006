/* The CUDA matmul's numerics on the CPU, shared by the GPU tests' CPU references: x rounded to
 * bf16 as kernels/cuda/matmul.cu does before a bf16 GEMM, then the CPU backend's fp32
 * accumulating product. Test-only and header-only; it emulates no other op. */
#ifndef PHISERVE_TESTS_GPU_EMULATED_H
#define PHISERVE_TESTS_GPU_EMULATED_H

#include <stdint.h>
#include <stdlib.h>

#include "dtype.h"
#include "ops.h"

/* A kern_ops matmul entry: bf16 weights get x rounded to bf16 (into a temporary copy, rows
 * packed), every other case goes to the CPU backend's matmul unchanged. Returns its status,
 * or KERN_ERR_NOMEM. */
static inline int emulated_matmul(struct kern_ctx *ctx, const struct kern_matmul_params *p)
{
    struct kern_ops cpu;
    kern_ops_init_ref(&cpu);
    kern_ops_init_cpu(&cpu);
    if (p->w_dtype != KERN_DTYPE_BF16 || p->m <= 0 || p->k <= 0)
        return cpu.matmul(ctx, p);
    float *xr = malloc((size_t)p->m * (size_t)p->k * sizeof *xr);
    if (!xr)
        return KERN_ERR_NOMEM;
    for (int64_t r = 0; r < p->m; r++)
        for (int64_t c = 0; c < p->k; c++)
            xr[r * p->k + c] = kern_bf16_to_f32(kern_f32_to_bf16(p->x[r * p->ldx + c]));
    struct kern_matmul_params q = *p;
    q.x = xr;
    q.ldx = p->k;
    int rc = cpu.matmul(ctx, &q);
    free(xr);
    return rc;
}

#endif
