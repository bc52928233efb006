/* The op-table calls the model files share: a linear layer (matmul, then its bias when it has
 * one) and a LayerNorm, with the weights as struct eng_weight. Header-only; no state. */
#ifndef PHISERVE_ENGINE_MODELS_LAYER_OPS_H
#define PHISERVE_ENGINE_MODELS_LAYER_OPS_H

#include "model.h"
#include "ops.h"

/* y[m, n] (+)= x[m, k] @ W^T, then + b when b.data is set; x rows ldx apart, y rows ldy
 * apart. Returns 0 or the failing op's error. */
static inline int eng_op_linear(const struct kern_ops *ops, struct kern_ctx *ctx, const float *x,
                                int64_t ldx, struct eng_weight w, struct eng_weight b, float *y,
                                int64_t ldy, int64_t m, int64_t n, int64_t k, int accumulate)
{
    struct kern_matmul_params p = {
        .x = x, .w = w.data, .w_dtype = w.dtype, .y = y,
        .m = m, .n = n, .k = k, .ldx = ldx, .ldy = ldy, .accumulate = accumulate,
    };
    int rc = ops->matmul(ctx, &p);
    if (rc != 0 || !b.data)
        return rc;
    struct kern_bias_add_params bp = {
        .y = y, .b = b.data, .b_dtype = b.dtype, .n_rows = m, .dim = n, .ldy = ldy,
    };
    return ops->bias_add(ctx, &bp);
}

/* out[rows, dim] = LayerNorm(x) with gain w and bias b (one dtype); out may alias x. */
static inline int eng_op_layernorm(const struct kern_ops *ops, struct kern_ctx *ctx,
                                   const float *x, struct eng_weight w, struct eng_weight b,
                                   float *out, int64_t rows, int64_t dim, double eps)
{
    struct kern_layernorm_params p = {
        .x = x, .w = w.data, .b = b.data, .w_dtype = w.dtype, .out = out,
        .n_rows = rows, .dim = dim, .eps = (float)eps,
    };
    return ops->layernorm(ctx, &p);
}

#endif
