/* Weight quantization at load (--quantization): the decoder's projection matrices and the
 * untied lm_head re-encoded into a block format of kernels/ops.h, in one buffer the model owns.
 * It changes what the weights point at, nothing else; the kernels do the arithmetic. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

int eng_quant_parse(const char *name, enum eng_quant *out)
{
    if (!name || strcmp(name, "none") == 0) {
        *out = ENG_QUANT_NONE;
        return 0;
    }
    if (strcmp(name, "q8_0") == 0 || strcmp(name, "q4_0") == 0) {
        *out = name[1] == '8' ? ENG_QUANT_Q8_0 : ENG_QUANT_Q4_0;
        return 0;
    }
    return -1;
}

const char *eng_quant_name(enum eng_quant q)
{
    return q == ENG_QUANT_Q8_0 ? "q8_0" : q == ENG_QUANT_Q4_0 ? "q4_0" : "none";
}

/* The matrices a quantization covers, with their input width k (the row length) and, for
 * messages, their checkpoint name and layer (-1: none). */
struct quant_target {
    struct eng_weight *w;
    int64_t k;
    const char *name;
    int64_t layer;
};

/* Fills t (room for 4 per layer + 1) and returns the count. Only these feed the matmul op;
 * the experts (moe op), norms, biases, router, embedding and vision tower stay as loaded. */
static int64_t quant_targets(struct eng_model *m, struct quant_target *t)
{
    const struct eng_model_config *c = &m->cfg;
    int64_t n = 0, H = c->hidden_size, attn = c->num_attention_heads * c->head_dim;
    for (int64_t i = 0; i < c->num_hidden_layers; i++) {
        struct eng_phi3_layer *L = &m->layers[i];
        if (L->experts) { /* phimoe: the attention projections */
            t[n++] = (struct quant_target){&L->q, H, "self_attn.q_proj", i};
            t[n++] = (struct quant_target){&L->k, H, "self_attn.k_proj", i};
            t[n++] = (struct quant_target){&L->v, H, "self_attn.v_proj", i};
        } else {
            t[n++] = (struct quant_target){&L->qkv, H, "self_attn.qkv_proj", i};
            t[n++] = (struct quant_target){&L->gate_up, H, "mlp.gate_up_proj", i};
            t[n++] = (struct quant_target){&L->down, c->intermediate_size, "mlp.down_proj", i};
        }
        t[n++] = (struct quant_target){&L->o, attn, "self_attn.o_proj", i};
    }
    if (m->lm_head.data && m->lm_head.data != m->embed.data)
        t[n++] = (struct quant_target){&m->lm_head, H, "lm_head", -1};
    return n;
}

int eng_model_quantize(struct eng_model *m, enum eng_quant q, char *err, size_t errlen)
{
    if (q == ENG_QUANT_NONE)
        return 0;
    if (m->ops || m->quant_data) {
        snprintf(err, errlen, "model: quantize before importing the weights, and only once");
        return -1;
    }
    const enum kern_dtype to = q == ENG_QUANT_Q8_0 ? KERN_DTYPE_Q8_0 : KERN_DTYPE_Q4_0;
    struct quant_target *t = calloc((size_t)(4 * m->cfg.num_hidden_layers + 1), sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int64_t n = quant_targets(m, t);
    /* Sizes first: one buffer for all, each tensor 64-byte aligned. A matrix whose rows are
     * not whole blocks keeps its dtype (no Phi-3 shape has one). */
    size_t total = 0;
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!t[i].w->data) {
            t[i].w = NULL;
            continue;
        }
        size_t es = kern_dtype_size(t[i].w->dtype);
        int64_t row = kern_dtype_row_bytes(to, t[i].k);
        if (row < 0 || es == 0 || t[i].w->n_bytes % ((size_t)t[i].k * es) != 0) {
            t[i].w = NULL;
            kept++;
            continue;
        }
        size_t rows = t[i].w->n_bytes / ((size_t)t[i].k * es);
        total += ((rows * (size_t)row + 63) & ~(size_t)63);
    }
    uint8_t *buf = total ? aligned_alloc(64, total) : NULL;
    if (total && !buf) {
        free(t);
        snprintf(err, errlen, "model: out of memory for %zu bytes of %s weights", total,
                 eng_quant_name(q));
        return -1;
    }
    /* Encode everything, then repoint: a failure leaves the model as it was. */
    size_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!t[i].w)
            continue;
        size_t rows = t[i].w->n_bytes / ((size_t)t[i].k * kern_dtype_size(t[i].w->dtype));
        if (kern_quantize(t[i].w->data, t[i].w->dtype, (int64_t)rows, t[i].k, to, buf + at) !=
            KERN_OK) {
            char layer[48] = "";
            if (t[i].layer >= 0)
                snprintf(layer, sizeof layer, "model.layers.%lld.", (long long)t[i].layer);
            snprintf(err, errlen, "model: %s%s.weight (%zu x %lld) cannot be quantized to %s: "
                     "it has a non-finite value, or a block whose scale is beyond fp16", layer,
                     t[i].name, rows, (long long)t[i].k, eng_quant_name(q));
            free(buf);
            free(t);
            return -1;
        }
        at += (rows * (size_t)kern_dtype_row_bytes(to, t[i].k) + 63) & ~(size_t)63;
    }
    at = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!t[i].w)
            continue;
        size_t rows = t[i].w->n_bytes / ((size_t)t[i].k * kern_dtype_size(t[i].w->dtype));
        size_t bytes = rows * (size_t)kern_dtype_row_bytes(to, t[i].k);
        *t[i].w = (struct eng_weight){.data = buf + at, .dtype = to, .n_bytes = bytes};
        at += (bytes + 63) & ~(size_t)63;
    }
    free(t);
    m->quant_data = buf;
    m->quant = q;
    m->n_quant_kept = kept;
    return 0;
}
