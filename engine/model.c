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
    *out = m;
    return 0;
fail:
    eng_model_destroy(m);
    return -1;
}

void eng_model_destroy(struct eng_model *model)
{
    if (!model)
        return;
    free(model->layers);
    eng_st_close(model->weights);
    free(model);
}
