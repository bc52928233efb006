/* Stand-in for cpu/simd_avx2.c on CPUs that are not x86 (meson picks this file there): no
 * AVX2 build exists, so the CPU backend uses the generic inner loops. */
#include "cpu.h"

const struct kern_cpu_isa *kern_cpu_isa_avx2(void)
{
    return NULL;
}
