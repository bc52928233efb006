/* Stand-in for cpu/simd_avx2.c and cpu/simd_avx512.c on CPUs that are not x86 (meson picks
 * this file there): no such build exists, so the CPU backend uses the generic inner loops. */
#include "cpu.h"

const struct kern_cpu_isa *kern_cpu_isa_avx2(void)
{
    return NULL;
}

const struct kern_cpu_isa *kern_cpu_isa_avx512(void)
{
    return NULL;
}

const struct kern_cpu_isa *kern_cpu_isa_avx512vnni(void)
{
    return NULL;
}
