/* Private declarations of the plain-C reference backend (kernels/ref) and the small helpers
 * its ops share: checked size arithmetic, dtype loads and the argument checks that the fast
 * backends reuse so that every backend rejects exactly the same calls. Not a public header. */
#ifndef PHISERVE_KERNELS_REF_H
#define PHISERVE_KERNELS_REF_H

#include <stddef.h>
#include <stdint.h>

#include "../dtype.h"
#include "../ops.h"

#ifdef __cplusplus
extern "C" { /* the CUDA backend (C++) shares the argument checks below */
#endif

/* The reference ops. Each validates every argument first and returns KERN_ERR_INVALID (with
 * no output written) when a pointer is NULL, a size negative, an index out of range, or a
 * size product overflows. They compute in fp64 and ignore ctx. */
int kern_ref_embed(struct kern_ctx *ctx, const struct kern_embed_params *p);
int kern_ref_rmsnorm(struct kern_ctx *ctx, const struct kern_rmsnorm_params *p);
/* Also KERN_ERR_NOMEM (nothing written) for the R16 formats when the scratch of one
 * quantized x row cannot be had, and KERN_ERR_UNSUPPORTED for an R16 format other than
 * Q8_0_R16, Q4_0_R16 and Q4_K_R16. */
int kern_ref_matmul(struct kern_ctx *ctx, const struct kern_matmul_params *p);
int kern_ref_rope(struct kern_ctx *ctx, const struct kern_rope_params *p);
int kern_ref_kv_write(struct kern_ctx *ctx, const struct kern_kv_write_params *p);
int kern_ref_attention(struct kern_ctx *ctx, const struct kern_attention_params *p);
int kern_ref_silu_mul(struct kern_ctx *ctx, const struct kern_silu_mul_params *p);
int kern_ref_add(struct kern_ctx *ctx, const struct kern_add_params *p);
int kern_ref_gather_rows(struct kern_ctx *ctx, const struct kern_gather_rows_params *p);
int kern_ref_argmax(struct kern_ctx *ctx, const struct kern_argmax_params *p);
/* Also KERN_ERR_NOMEM (before any output is written) when its ranking scratch cannot be had.
 * It leaves in work[j, :] what job j ended with: the processed logits y of a greedy job or of
 * one with no y above -inf, else the final weights w (0 for every dropped token); tests read
 * them. A job with a given token leaves its row as it was. */
int kern_ref_sample(struct kern_ctx *ctx, const struct kern_sample_params *p);
int kern_ref_layernorm(struct kern_ctx *ctx, const struct kern_layernorm_params *p);
int kern_ref_bias_add(struct kern_ctx *ctx, const struct kern_bias_add_params *p);
int kern_ref_moe_route(struct kern_ctx *ctx, const struct kern_moe_route_params *p);
/* Also KERN_ERR_NOMEM (nothing written) when its per-token scratch cannot be had. */
int kern_ref_moe(struct kern_ctx *ctx, const struct kern_moe_params *p);
int kern_ref_act(struct kern_ctx *ctx, const struct kern_act_params *p);
int kern_ref_attention_dense(struct kern_ctx *ctx, const struct kern_attention_dense_params *p);

/* The memory entries of host backends (kernels/ref/mem.c): malloc, memcpy and memset, the
 * contracts of struct kern_ops. Shared by the ref and cpu tables; they ignore ctx. */
int kern_ref_buf_alloc(struct kern_ctx *ctx, size_t bytes, void **ptr);
void kern_ref_buf_free(struct kern_ctx *ctx, void *ptr);
int kern_ref_buf_upload(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes);
int kern_ref_buf_download(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes);
int kern_ref_buf_copy(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes);
int kern_ref_buf_memset(struct kern_ctx *ctx, void *dst, int value, size_t bytes);
int kern_ref_sync(struct kern_ctx *ctx, char *err, size_t errlen);
int kern_ref_weights_import(struct kern_ctx *ctx, const void *host, size_t bytes, const void **dev);
void kern_ref_weights_release(struct kern_ctx *ctx, const void *dev);

/* Argument checks shared with kernels/cpu: 0 or KERN_ERR_INVALID. */
int kern_ref_matmul_check(const struct kern_matmul_params *p);
int kern_ref_attention_check(const struct kern_attention_params *p);
/* The MoE ops' checks, shared with kernels/cuda too: sizes, scalars and (when the call has
 * work) the pointers. kern_ref_moe_args_check reads no array, so a device backend runs it on
 * the host; kern_ref_moe_check also reads every experts[] entry and the pointer arrays. */
int kern_ref_layernorm_check(const struct kern_layernorm_params *p);
int kern_ref_bias_add_check(const struct kern_bias_add_params *p);
int kern_ref_moe_route_check(const struct kern_moe_route_params *p);
int kern_ref_moe_args_check(const struct kern_moe_params *p);
int kern_ref_moe_check(const struct kern_moe_params *p);
/* The vision ops' checks, shared with kernels/cpu and kernels/cuda: sizes, the kind, and (when
 * the call has work) the pointers; attention_dense also rejects an out overlapping q, k or v.
 * They read no array, so a device backend runs them on the host. */
int kern_ref_act_check(const struct kern_act_params *p);
int kern_ref_attention_dense_check(const struct kern_attention_dense_params *p);

/* The largest element count any tensor may have: its byte size must fit in size_t and in
 * int64_t with room for an 8-byte element. */
#define REF_MAX_ELEMS (INT64_MAX / 8)

/* *out = a * b; returns 0, or -1 when a or b is negative or the product exceeds
 * REF_MAX_ELEMS. */
static inline int ref_mul(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r) || r > REF_MAX_ELEMS)
        return -1;
    *out = r;
    return 0;
}

/* Elements spanned by `rows` rows of `cols` elements with row stride `stride` (stride >= cols):
 * (rows - 1) * stride + cols, or 0 for no rows. Returns 0 or -1 on overflow. */
static inline int ref_span(int64_t rows, int64_t cols, int64_t stride, int64_t *out)
{
    int64_t r;
    if (rows < 0 || cols < 0 || stride < cols)
        return -1;
    if (rows == 0) {
        *out = 0;
        return 0;
    }
    if (ref_mul(rows - 1, stride, &r) || r > REF_MAX_ELEMS - cols)
        return -1;
    *out = r + cols;
    return 0;
}

static inline int ref_dtype_ok(enum kern_dtype dt)
{
    return dt == KERN_DTYPE_F32 || dt == KERN_DTYPE_F16 || dt == KERN_DTYPE_BF16;
}

/* Element i of an array of dtype dt, as fp32 (exact: every stored type widens exactly; a
 * block format's element is what ops.h defines it to be). */
static inline float ref_load(const void *base, enum kern_dtype dt, int64_t i)
{
    switch (dt) {
    case KERN_DTYPE_Q8_0:
        return kern_block_elem(0, (const uint8_t *)base + (i / KERN_QBLOCK) * KERN_Q8_0_BLOCK_BYTES,
                               (int)(i % KERN_QBLOCK));
    case KERN_DTYPE_Q4_0:
        return kern_block_elem(1, (const uint8_t *)base + (i / KERN_QBLOCK) * KERN_Q4_0_BLOCK_BYTES,
                               (int)(i % KERN_QBLOCK));
    case KERN_DTYPE_Q4_K:
    case KERN_DTYPE_Q5_K:
    case KERN_DTYPE_Q6_K:
        return kern_kq_elem(kern_dtype_kq_bits(dt),
                            (const uint8_t *)base +
                                (i / KERN_QKBLOCK) * kern_dtype_row_bytes(dt, KERN_QKBLOCK),
                            (int)(i % KERN_QKBLOCK));
    case KERN_DTYPE_F16:
        return kern_f16_to_f32(((const uint16_t *)base)[i]);
    case KERN_DTYPE_BF16:
        return kern_bf16_to_f32(((const uint16_t *)base)[i]);
    case KERN_DTYPE_F32:
    default:
        return ((const float *)base)[i];
    }
}

/* Stores v into element i of an array of dtype dt, rounding to nearest even. */
static inline void ref_store(void *base, enum kern_dtype dt, int64_t i, float v)
{
    switch (dt) {
    case KERN_DTYPE_F16:
        ((uint16_t *)base)[i] = kern_f32_to_f16(v);
        break;
    case KERN_DTYPE_BF16:
        ((uint16_t *)base)[i] = kern_f32_to_bf16(v);
        break;
    case KERN_DTYPE_F32:
    default:
        ((float *)base)[i] = v;
        break;
    }
}

#ifdef __cplusplus
}
#endif

#endif
