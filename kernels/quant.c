/* Weight quantization into the block formats of ops.h (Q8_0), done once at model load.
 * Not an op: plain C on the caller's thread; the matmul kernels read what it writes. */
#include <math.h>
#include <string.h>

#include "dtype.h"
#include "ops.h"

/* Element i of a row of src, widened to fp32 (exact for every stored type). */
static float widen(const void *src, enum kern_dtype dt, int64_t i)
{
    if (dt == KERN_DTYPE_F32)
        return ((const float *)src)[i];
    uint16_t h = ((const uint16_t *)src)[i];
    return dt == KERN_DTYPE_BF16 ? kern_bf16_to_f32(h) : kern_f16_to_f32(h);
}

/* One block of KERN_Q8_0_BLOCK values; returns KERN_ERR_INVALID for a non-finite value or a
 * scale beyond fp16. */
static int quantize_block(const float *x, uint8_t *out)
{
    float amax = 0.0f;
    for (int i = 0; i < KERN_Q8_0_BLOCK; i++) {
        if (!isfinite(x[i]))
            return KERN_ERR_INVALID;
        amax = fmaxf(amax, fabsf(x[i]));
    }
    uint16_t dh = kern_f32_to_f16(amax / 127.0f);
    float d = kern_f16_to_f32(dh);
    if (!isfinite(d))
        return KERN_ERR_INVALID;
    out[0] = (uint8_t)(dh & 0xff);
    out[1] = (uint8_t)(dh >> 8);
    for (int i = 0; i < KERN_Q8_0_BLOCK; i++) {
        /* d rounded to fp16 may sit just below max|x| / 127: the quotient can pass 127. */
        float q = d == 0.0f ? 0.0f : roundf(x[i] / d);
        q = fminf(fmaxf(q, -127.0f), 127.0f);
        out[2 + i] = (uint8_t)(int8_t)q;
    }
    return KERN_OK;
}

int kern_quantize_q8_0(const void *src, enum kern_dtype src_dtype, int64_t n_rows, int64_t k,
                       void *dst)
{
    int64_t row_bytes = kern_dtype_row_bytes(KERN_DTYPE_Q8_0, k);
    if (!src || !dst || n_rows < 0 || row_bytes < 0 ||
        (src_dtype != KERN_DTYPE_F32 && src_dtype != KERN_DTYPE_F16 &&
         src_dtype != KERN_DTYPE_BF16))
        return KERN_ERR_INVALID;
    size_t es = kern_dtype_size(src_dtype);
    for (int64_t r = 0; r < n_rows; r++) {
        const char *row = (const char *)src + (size_t)r * (size_t)k * es;
        uint8_t *out = (uint8_t *)dst + (size_t)r * (size_t)row_bytes;
        for (int64_t b = 0; b < k / KERN_Q8_0_BLOCK; b++) {
            float x[KERN_Q8_0_BLOCK];
            for (int i = 0; i < KERN_Q8_0_BLOCK; i++)
                x[i] = widen(row, src_dtype, b * KERN_Q8_0_BLOCK + i);
            int rc = quantize_block(x, out + b * KERN_Q8_0_BLOCK_BYTES);
            if (rc)
                return rc;
        }
    }
    return KERN_OK;
}
