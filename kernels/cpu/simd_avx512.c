/* The CPU inner loops built for AVX-512 (F, VL, BW, DQ) with 16-lane vectors (x86 only; meson
 * picks this file), used when the CPU reports them at kern_ops_init_cpu. The loop bodies live
 * in cpu/simd.h; this file only instantiates them for that target and width. */
#include "cpu.h"

/* As in cpu/simd_avx2.c: only the code between push and pop targets AVX-512. */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")
#define SIMD_L 16
#define SIMD_NAME "avx512"
#include "simd_entries.h"
#pragma GCC pop_options

const struct kern_cpu_isa *kern_cpu_isa_avx512(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("f16c"))
        return &isa;
    return NULL;
}
