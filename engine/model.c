/* Model loading: config + weights + the checks that tie them together (every tensor the
 * architecture reads exists with exactly the expected shape). Parsing of the files themselves
 * lives in model_config.c and safetensors.c. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Looks name up and checks its shape against the n_dims values in shape. */
static int bind(const struct eng_st_set *st, const char *name, int n_dims, const int64_t *shape,
                struct eng_weight *w, char *err, size_t errlen)
{
    const struct eng_tensor *t = eng_st_find(st, name);
    if (!t) {
        snprintf(err, errlen, "weights: tensor '%s' is missing", name);
        return -1;
    }
    int ok = t->n_dims == n_dims;
    for (int i = 0; ok && i < n_dims; i++)
        ok = t->shape[i] == shape[i];
    if (!ok) {
        char got[128] = "", want[128] = "";
        size_t g = 0, h = 0;
        for (int i = 0; i < t->n_dims && g < sizeof got; i++)
            g += (size_t)snprintf(got + g, sizeof got - g, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        for (int i = 0; i < n_dims && h < sizeof want; i++)
            h += (size_t)snprintf(want + h, sizeof want - h, "%s%lld", i ? ", " : "", (long long)shape[i]);
        snprintf(err, errlen, "weights: tensor '%s' has shape [%s], expected [%s]", name, got, want);
        return -1;
    }
    w->data = t->data;
    w->dtype = t->dtype;
    w->n_bytes = t->n_bytes;
    return 0;
}

static int bind1(const struct eng_st_set *st, const char *name, int64_t d0, struct eng_weight *w,
                 char *err, size_t errlen)
{
    int64_t shape[1] = {d0};
    return bind(st, name, 1, shape, w, err, errlen);
}

static int bind2(const struct eng_st_set *st, const char *name, int64_t d0, int64_t d1,
                 struct eng_weight *w, char *err, size_t errlen)
{
    int64_t shape[2] = {d0, d1};
    return bind(st, name, 2, shape, w, err, errlen);
}

void eng_rope_inv_freq(const struct eng_model_config *cfg, const float *factors, float *inv_freq)
{
    /* transformers: 1.0 / (factor * base ** (arange(0, d, 2).float() / d)), all in fp32. */
    int64_t d = cfg->rotary_dim;
    for (int64_t j = 0; j < d / 2; j++) {
        float expo = (float)(2 * j) / (float)d;
        float base_pow = powf((float)cfg->rope_theta, expo);
        float f = factors ? factors[j] : 1.0f;
        inv_freq[j] = 1.0f / (f * base_pow);
    }
}

static int bind_phi3(struct eng_model *m, char *err, size_t errlen)
{
    const struct eng_model_config *c = &m->cfg;
    const struct eng_st_set *st = m->weights;
    int64_t H = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, hd = c->head_dim;
    int64_t q_width = c->num_attention_heads * hd;
    int64_t qkv_width = q_width + 2 * c->num_key_value_heads * hd;

    if (bind2(st, "model.embed_tokens.weight", V, H, &m->embed, err, errlen) ||
        bind1(st, "model.norm.weight", H, &m->final_norm, err, errlen))
        return -1;
    if (c->tie_word_embeddings && !eng_st_find(st, "lm_head.weight"))
        m->lm_head = m->embed;
    else if (bind2(st, "lm_head.weight", V, H, &m->lm_head, err, errlen))
        return -1;

    m->layers = calloc((size_t)c->num_hidden_layers, sizeof *m->layers);
    if (!m->layers) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int64_t i = 0; i < c->num_hidden_layers; i++) {
        struct eng_phi3_layer *L = &m->layers[i];
        char name[160];
#define NAME(suffix) (snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)i, suffix), name)
        if (bind1(st, NAME("input_layernorm.weight"), H, &L->input_norm, err, errlen) ||
            bind2(st, NAME("self_attn.qkv_proj.weight"), qkv_width, H, &L->qkv, err, errlen) ||
            bind2(st, NAME("self_attn.o_proj.weight"), H, q_width, &L->o, err, errlen) ||
            bind1(st, NAME("post_attention_layernorm.weight"), H, &L->post_norm, err, errlen) ||
            bind2(st, NAME("mlp.gate_up_proj.weight"), 2 * I, H, &L->gate_up, err, errlen) ||
            bind2(st, NAME("mlp.down_proj.weight"), H, I, &L->down, err, errlen))
            return -1;
#undef NAME
    }
    return 0;
}

int eng_model_load(const char *dir, struct eng_model **out, char *err, size_t errlen)
{
    *out = NULL;
    struct eng_model *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (eng_model_config_load(dir, &m->cfg, err, errlen) ||
        eng_st_open_dir(dir, &m->weights, err, errlen) ||
        bind_phi3(m, err, errlen))
        goto fail;

    const struct eng_model_config *c = &m->cfg;
    if (c->rope_type == ENG_ROPE_LONGROPE) {
        /* The op table carries one mscale; every Phi-3 LongRoPE config derives the same value
         * for both tables. Configs with distinct explicit mscales (PhiMoE) need a per-variant
         * scale in the rope op before they can be served. */
        if (c->short_mscale != c->long_mscale) {
            snprintf(err, errlen, "config: rope_scaling short_mscale %g != long_mscale %g is not supported",
                     c->short_mscale, c->long_mscale);
            goto fail;
        }
        int64_t half = c->rotary_dim / 2;
        eng_rope_inv_freq(c, c->short_factor, m->inv_freq + ENG_ROPE_SHORT * half);
        eng_rope_inv_freq(c, c->long_factor, m->inv_freq + ENG_ROPE_LONG * half);
        m->n_rope_variants = 2;
        m->mscale = (float)c->short_mscale;
    } else {
        eng_rope_inv_freq(c, NULL, m->inv_freq);
        m->n_rope_variants = 1;
        m->mscale = 1.0f;
    }
    m->rope_inv_freq = m->inv_freq;
    *out = m;
    return 0;
fail:
    eng_model_destroy(m);
    return -1;
}

/* Every weight of the model, in a fixed order (embed, final norm, lm_head, then per layer);
 * n must hold 3 + 6 * layers. */
static int64_t list_weights(struct eng_model *m, struct eng_weight **w)
{
    int64_t n = 0;
    w[n++] = &m->embed;
    w[n++] = &m->final_norm;
    w[n++] = &m->lm_head;
    for (int64_t i = 0; i < m->cfg.num_hidden_layers; i++) {
        struct eng_phi3_layer *L = &m->layers[i];
        w[n++] = &L->input_norm;
        w[n++] = &L->qkv;
        w[n++] = &L->o;
        w[n++] = &L->post_norm;
        w[n++] = &L->gate_up;
        w[n++] = &L->down;
    }
    return n;
}

size_t eng_model_weight_bytes(const struct eng_model *model)
{
    /* A loaded model's tensors lie in its mappings, so their sum fits in size_t; the tied
     * lm_head is the embedding itself and counts once. */
    const struct eng_model *m = model;
    size_t total = m->embed.n_bytes + m->final_norm.n_bytes;
    if (m->lm_head.data != m->embed.data)
        total += m->lm_head.n_bytes;
    for (int64_t i = 0; i < m->cfg.num_hidden_layers; i++) {
        const struct eng_phi3_layer *L = &m->layers[i];
        total += L->input_norm.n_bytes + L->qkv.n_bytes + L->o.n_bytes + L->post_norm.n_bytes +
                 L->gate_up.n_bytes + L->down.n_bytes;
    }
    return total;
}

int eng_model_upload(struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     char *err, size_t errlen)
{
    if (m->ops) {
        snprintf(err, errlen, "model: weights were already imported");
        return -1;
    }
    int64_t n_w = 3 + 6 * m->cfg.num_hidden_layers;
    struct eng_weight **w = malloc((size_t)n_w * sizeof *w);
    m->imports = calloc((size_t)n_w + 1, sizeof *m->imports);
    if (!w || !m->imports) {
        free(w);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    m->ops = ops;
    m->ctx = ctx;
    n_w = list_weights(m, w);
    const void *embed_host = m->embed.data;
    for (int64_t i = 0; i < n_w; i++) {
        /* The tied lm_head (index 2) is the embedding: share its copy, import it once. */
        if (i == 2 && w[i]->data == embed_host) {
            w[i]->data = m->embed.data;
            continue;
        }
        const void *dev = NULL;
        int rc = ops->weights_import(ctx, w[i]->data, w[i]->n_bytes, &dev);
        if (rc != 0) {
            snprintf(err, errlen, "model: importing %zu bytes of weights into the %s backend "
                     "failed (%d)", w[i]->n_bytes, ops->name, rc);
            free(w);
            return -1;
        }
        m->imports[m->n_imports++] = dev;
        w[i]->data = dev;
    }
    free(w);
    const void *dev = NULL;
    size_t freq_bytes = (size_t)m->n_rope_variants * (size_t)(m->cfg.rotary_dim / 2) * sizeof(float);
    if (ops->weights_import(ctx, m->inv_freq, freq_bytes, &dev) != 0) {
        snprintf(err, errlen, "model: importing the RoPE tables into the %s backend failed",
                 ops->name);
        return -1;
    }
    m->imports[m->n_imports++] = dev;
    m->rope_inv_freq = dev;
    return 0;
}

void eng_model_destroy(struct eng_model *model)
{
    if (!model)
        return;
    for (int64_t i = 0; i < model->n_imports; i++)
        model->ops->weights_release(model->ctx, model->imports[i]);
    free(model->imports);
    free(model->layers);
    eng_st_close(model->weights);
    free(model);
}
