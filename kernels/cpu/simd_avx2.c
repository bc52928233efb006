/* The CPU inner loops built for AVX2 + FMA (x86 only; meson picks this file), used when the
 * CPU reports both at kern_ops_init_cpu. The loop bodies live in cpu/simd.h; this file only
 * instantiates them for that target. */
#include "cpu.h"

/* Everything between push and pop, the inlined bodies of simd.h included, targets AVX2 + FMA;
 * the detection function after pop stays baseline so it runs on any x86 CPU. */
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define SIMD_NAME "avx2"
#include "simd_entries.h"
#pragma GCC pop_options

const struct kern_cpu_isa *kern_cpu_isa_avx2(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return &isa;
    return NULL;
}
