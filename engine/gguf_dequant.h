/* Exact fp32 widening of ggml block types: those phiserve has no kernels for (the loader widens
 * them at load, then requantizes matrices to Q8_0) and the K types Q4_K, Q5_K and Q6_K, which
 * the kernels read as stored but an embedding needs widened. Bit-identical to ggml's reference
 * dequantize_row_* (gguf-py's gguf.quants.dequantize); it knows nothing of GGUF files or shapes.
 *
 * Block layouts (little-endian, unaligned; "fp16" fields are IEEE half; y is the output block):
 *   Q4_1 (3), 32 elems, 20 bytes: fp16 d, fp16 m, qs[16]. q[j] = qs[j] & 15, q[j+16] = qs[j] >> 4;
 *        y = d * q + m.
 *   Q5_0 (6), 32 elems, 22 bytes: fp16 d, u32 qh, qs[16]. q as Q4_1 with bit 4 = bit j of qh
 *        (j = element index); y = d * (q - 16).
 *   Q5_1 (7), 32 elems, 24 bytes: fp16 d, fp16 m, u32 qh, qs[16]. q as Q5_0; y = d * q + m.
 *   Q2_K (10), 256 elems, 84 bytes: scales[16], qs[64], fp16 d, fp16 dmin. Element
 *        e = 128 h + 32 s + l takes bits 2s..2s+1 of qs[32 h + l]; sub-block e / 16 has scale
 *        byte sc: y = (d * (sc & 15)) * q - dmin * (sc >> 4).
 *   Q3_K (11), 256 elems, 110 bytes: hmask[32], qs[64], scales[12], fp16 d. Low 2 bits as Q2_K;
 *        q = low - 4 when bit e / 32 of hmask[e % 32] is clear, low otherwise. Sixteen 6-bit
 *        scales (low nibbles of scales[0..7], then their high nibbles; bits 4-5 from
 *        scales[8 + k % 4] >> 2 (k / 4)), minus 32; y = (d * scale[e / 16]) * q.
 *   Q4_K (12), 256 elems, 144 bytes: fp16 d, fp16 dmin, scales[12], qs[128]. Element
 *        e = 64 c + 32 s + l is nibble s of qs[32 c + l]; eight 6-bit (scale, min) pairs per
 *        block, one per 32 elements (packing in gguf_dequant.c);
 *        y = (d * scale) * q - dmin * min.
 *   Q5_K (13), 256 elems, 176 bytes: fp16 d, fp16 dmin, scales[12], qh[32], qs[128]. As Q4_K with
 *        bit 4 of q = bit e / 32 of qh[e % 32].
 *   Q6_K (14), 256 elems, 210 bytes: ql[128], qh[64], int8 scales[16], fp16 d. Element
 *        e = 128 h + 32 s + l: low nibble (s / 2 ? high : low) of ql[64 h + 32 (s & 1) + l],
 *        bits 4-5 = bits 2s..2s+1 of qh[32 h + l]; y = (d * scales[e / 16]) * (q - 32).
 * Every product and difference is one fp32 operation, in the parenthesised order above. */
#ifndef PHISERVE_ENGINE_GGUF_DEQUANT_H
#define PHISERVE_ENGINE_GGUF_DEQUANT_H

#include <stdint.h>

/* 1 when eng_gguf_dequant_row widens ggml_type: Q4_1 (3), Q5_0 (6), Q5_1 (7), Q2_K (10),
 * Q3_K (11), Q4_K (12), Q5_K (13), Q6_K (14); 0 otherwise (F32, F16, BF16, Q4_0 and Q8_0 are
 * read as they are everywhere and are not widened here). */
int eng_gguf_dequant_supported(uint32_t ggml_type);

/* Widens n elements of ggml_type at src (n / block blocks of the layout above, read unaligned;
 * caller keeps) into dst[n] fp32 (caller keeps), exactly as ggml's reference dequantizer: the same
 * fp32 operations in the same order, fp16 scales converted exactly, so the results are
 * bit-identical. n must be a non-negative multiple of the type's block (32, or 256 for the
 * K types); n == 0 writes nothing and succeeds. Returns 0, or -1 for an unsupported type, a bad n
 * or a NULL pointer with n > 0 (nothing written). Non-finite fp16 scales give non-finite values:
 * callers check. Plain C: no allocation, no state, safe from any thread. */
int eng_gguf_dequant_row(uint32_t ggml_type, const void *src, int64_t n, float *dst);

#endif
