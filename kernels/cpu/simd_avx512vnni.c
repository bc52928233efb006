/* The CPU inner loops built for AVX-512 with VNNI (x86 only; meson picks this file): the
 * AVX-512 build of cpu/simd_avx512.c, except that the int8 dot of the R16 formats
 * (cpu/simd_r16.h) multiplies and adds 4 byte pairs per lane in one instruction. */
#include "cpu.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")
#define SIMD_L 16
#define SIMD_NAME "avx512vnni"
#include "simd_entries.h"
#pragma GCC pop_options

const struct kern_cpu_isa *kern_cpu_isa_avx512vnni(void)
{
    __builtin_cpu_init();
    if (kern_cpu_isa_avx512() && __builtin_cpu_supports("avx512vnni"))
        return &isa;
    return NULL;
}
