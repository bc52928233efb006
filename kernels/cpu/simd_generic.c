/* The CPU inner loops built for the baseline instruction set (any x86-64, any other CPU GCC
 * vectorises for). The loop bodies live in cpu/simd.h; this file only instantiates them. */
#define SIMD_NAME "generic"
#include "simd_entries.h"

const struct kern_cpu_isa *kern_cpu_isa_generic(void)
{
    return &isa;
}
