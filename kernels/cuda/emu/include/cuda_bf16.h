/* The CUDA emulator's stand-in for <cuda_bf16.h>: the bfloat16 type, its bit casts and its
 * round-to-nearest-even conversions, through the project's own (kernels/dtype.h). */
#ifndef PHISERVE_KERNELS_CUDA_EMU_BF16_H
#define PHISERVE_KERNELS_CUDA_EMU_BF16_H

#include "../../../dtype.h"
#include "../cuda_emu.h"

struct __nv_bfloat16 {
    unsigned short bits;
};

static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }
static inline float __bfloat162float(__nv_bfloat16 h) { return kern_bf16_to_f32(h.bits); }
static inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16{kern_f32_to_bf16(f)}; }

#endif
