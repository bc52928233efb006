/* The CUDA emulator's stand-in for <cuda_fp16.h>: the 16-bit float type and the bit casts and
 * conversions the kernels use, through the project's own conversions (kernels/dtype.h). */
#ifndef PHISERVE_KERNELS_CUDA_EMU_FP16_H
#define PHISERVE_KERNELS_CUDA_EMU_FP16_H

#include "../../../dtype.h"
#include "../cuda_emu.h"

struct __half {
    unsigned short bits;
};

static inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
static inline float __half2float(__half h) { return kern_f16_to_f32(h.bits); }

#endif
