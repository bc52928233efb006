/* Model loading: config + weights + the checks that tie them together (every tensor the
 * architecture reads exists with exactly the expected shape). Parsing of the files themselves
 * lives in model_config.c and safetensors.c. */
#include "model.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "dtype.h"
#include "gguf.h"
#include "model_internal.h"

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

/* Phi3ForCausalLM's layer i: RMSNorm gains, fused qkv and gate_up. */
static int bind_phi3_layer(const struct eng_model *m, int64_t i, struct eng_phi3_layer *L,
                           char *err, size_t errlen)
{
    const struct eng_model_config *c = &m->cfg;
    const struct eng_st_set *st = m->weights;
    int64_t H = c->hidden_size, I = c->intermediate_size, hd = c->head_dim;
    int64_t q_width = c->num_attention_heads * hd;
    int64_t qkv_width = q_width + 2 * c->num_key_value_heads * hd;
    char name[160];
#define NAME(suffix) (snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)i, suffix), name)
    return bind1(st, NAME("input_layernorm.weight"), H, &L->input_norm, err, errlen) ||
           bind2(st, NAME("self_attn.qkv_proj.weight"), qkv_width, H, &L->qkv, err, errlen) ||
           bind2(st, NAME("self_attn.o_proj.weight"), H, q_width, &L->o, err, errlen) ||
           bind1(st, NAME("post_attention_layernorm.weight"), H, &L->post_norm, err, errlen) ||
           bind2(st, NAME("mlp.gate_up_proj.weight"), 2 * I, H, &L->gate_up, err, errlen) ||
           bind2(st, NAME("mlp.down_proj.weight"), H, I, &L->down, err, errlen)
               ? -1 : 0;
}

/* A LayerNorm's gain and bias ("<prefix>.weight", "<prefix>.bias"), which the layernorm op
 * reads in one dtype. */
static int bind_layernorm(const struct eng_st_set *st, const char *prefix, int64_t H,
                          struct eng_weight *w, struct eng_weight *b, char *err, size_t errlen)
{
    char name[192];
    snprintf(name, sizeof name, "%s.weight", prefix);
    if (bind1(st, name, H, w, err, errlen))
        return -1;
    snprintf(name, sizeof name, "%s.bias", prefix);
    if (bind1(st, name, H, b, err, errlen))
        return -1;
    if (w->dtype != b->dtype) {
        snprintf(err, errlen, "weights: '%s' has dtype %s but its weight %s", name,
                 kern_dtype_name(b->dtype), kern_dtype_name(w->dtype));
        return -1;
    }
    return 0;
}

/* PhimoeForCausalLM's layer i: LayerNorms, separate (biased) q/k/v/o, router and experts, all
 * experts in one dtype (the moe op reads them so). */
static int bind_phimoe_layer(const struct eng_model *m, int64_t i, struct eng_phi3_layer *L,
                             char *err, size_t errlen)
{
    const struct eng_model_config *c = &m->cfg;
    const struct eng_st_set *st = m->weights;
    int64_t H = c->hidden_size, I = c->intermediate_size, hd = c->head_dim;
    int64_t E = c->num_local_experts, q_width = c->num_attention_heads * hd;
    int64_t kv_width = c->num_key_value_heads * hd;
    char name[192];
#define LNAME(suffix) (snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)i, suffix), name)
    if (bind_layernorm(st, LNAME("input_layernorm"), H, &L->input_norm, &L->input_norm_b, err,
                       errlen) ||
        bind_layernorm(st, LNAME("post_attention_layernorm"), H, &L->post_norm, &L->post_norm_b,
                       err, errlen) ||
        bind2(st, LNAME("self_attn.q_proj.weight"), q_width, H, &L->q, err, errlen) ||
        bind2(st, LNAME("self_attn.k_proj.weight"), kv_width, H, &L->k, err, errlen) ||
        bind2(st, LNAME("self_attn.v_proj.weight"), kv_width, H, &L->v, err, errlen) ||
        bind2(st, LNAME("self_attn.o_proj.weight"), H, q_width, &L->o, err, errlen) ||
        bind2(st, LNAME("block_sparse_moe.gate.weight"), E, H, &L->router, err, errlen))
        return -1;
    if (c->attention_bias &&
        (bind1(st, LNAME("self_attn.q_proj.bias"), q_width, &L->q_b, err, errlen) ||
         bind1(st, LNAME("self_attn.k_proj.bias"), kv_width, &L->k_b, err, errlen) ||
         bind1(st, LNAME("self_attn.v_proj.bias"), kv_width, &L->v_b, err, errlen) ||
         bind1(st, LNAME("self_attn.o_proj.bias"), H, &L->o_b, err, errlen)))
        return -1;
#undef LNAME
    static const char *const parts[3] = {"w1", "w3", "w2"}; /* gate, up, down */
    for (int64_t e = 0; e < E; e++) {
        for (int k = 0; k < 3; k++) {
            struct eng_weight *w = &L->experts[k * E + e];
            snprintf(name, sizeof name, "model.layers.%lld.block_sparse_moe.experts.%lld.%s.weight",
                     (long long)i, (long long)e, parts[k]);
            if (bind2(st, name, k == 2 ? H : I, k == 2 ? I : H, w, err, errlen))
                return -1;
            if (w->dtype != L->experts[0].dtype) {
                snprintf(err, errlen, "weights: '%s' has dtype %s, other experts %s", name,
                         kern_dtype_name(w->dtype), kern_dtype_name(L->experts[0].dtype));
                return -1;
            }
        }
    }
    return 0;
}

/* A weight's n values as fp32 (out: [n]); the weight holds exactly n. */
static void weight_to_f32(const struct eng_weight *w, int64_t n, float *out)
{
    for (int64_t i = 0; i < n; i++) {
        if (w->dtype == KERN_DTYPE_F32)
            out[i] = ((const float *)w->data)[i];
        else if (w->dtype == KERN_DTYPE_BF16)
            out[i] = kern_bf16_to_f32(((const uint16_t *)w->data)[i]);
        else
            out[i] = kern_f16_to_f32(((const uint16_t *)w->data)[i]);
    }
}

/* A linear layer's weight [n, k] and bias [n] ("<prefix>.weight", "<prefix>.bias"). */
static int bind_linear(const struct eng_st_set *st, const char *prefix, int64_t n, int64_t k,
                       struct eng_weight *w, struct eng_weight *b, char *err, size_t errlen)
{
    char name[256];
    snprintf(name, sizeof name, "%s.weight", prefix);
    if (bind2(st, name, n, k, w, err, errlen))
        return -1;
    snprintf(name, sizeof name, "%s.bias", prefix);
    return bind1(st, name, n, b, err, errlen);
}

#define VISION_PREFIX "model.vision_embed_tokens."
#define TOWER_PREFIX VISION_PREFIX "img_processor.vision_model."

static int bind_vision_layer(const struct eng_st_set *st, const struct eng_vision_config *vc,
                             int64_t i, struct eng_vision_layer *L, char *err, size_t errlen)
{
    int64_t C = vc->hidden_size, Ci = vc->intermediate_size;
    char p[160];
#define VNAME(suffix) (snprintf(p, sizeof p, TOWER_PREFIX "encoder.layers.%lld.%s", (long long)i, \
                                suffix), p)
    return bind_layernorm(st, VNAME("layer_norm1"), C, &L->ln1, &L->ln1_b, err, errlen) ||
           bind_linear(st, VNAME("self_attn.q_proj"), C, C, &L->q, &L->q_b, err, errlen) ||
           bind_linear(st, VNAME("self_attn.k_proj"), C, C, &L->k, &L->k_b, err, errlen) ||
           bind_linear(st, VNAME("self_attn.v_proj"), C, C, &L->v, &L->v_b, err, errlen) ||
           bind_linear(st, VNAME("self_attn.out_proj"), C, C, &L->o, &L->o_b, err, errlen) ||
           bind_layernorm(st, VNAME("layer_norm2"), C, &L->ln2, &L->ln2_b, err, errlen) ||
           bind_linear(st, VNAME("mlp.fc1"), Ci, C, &L->fc1, &L->fc1_b, err, errlen) ||
           bind_linear(st, VNAME("mlp.fc2"), C, Ci, &L->fc2, &L->fc2_b, err, errlen)
               ? -1 : 0;
#undef VNAME
}

/* Phi-3-vision's tower, separators and projector (reference/phi3-models.md section 5.4), and
 * the fp32 tables made from them. */
static int bind_vision(struct eng_model *m, char *err, size_t errlen)
{
    const struct eng_vision_config *vc = &m->cfg.vision;
    const struct eng_st_set *st = m->weights;
    int64_t C = vc->hidden_size, H = m->cfg.hidden_size, p = vc->patch_size;
    int64_t P = vc->grid * vc->grid;
    struct eng_vision *v = calloc(1, sizeof *v);
    m->vision = v;
    if (v)
        v->layers = calloc((size_t)vc->n_layers_run, sizeof *v->layers);
    if (!v || !v->layers) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct eng_weight cls, pos, glb, sub;
    int64_t patch_shape[4] = {C, 3, p, p}, glb_shape[3] = {1, 1, 4 * C},
            sub_shape[4] = {1, 1, 1, 4 * C};
    if (bind(st, TOWER_PREFIX "embeddings.patch_embedding.weight", 4, patch_shape, &v->patch, err,
             errlen) ||
        bind1(st, TOWER_PREFIX "embeddings.class_embedding", C, &cls, err, errlen) ||
        bind2(st, TOWER_PREFIX "embeddings.position_embedding.weight", P + 1, C, &pos, err,
              errlen) ||
        bind_layernorm(st, TOWER_PREFIX "pre_layrnorm", C, &v->pre_ln, &v->pre_ln_b, err, errlen) ||
        bind(st, VISION_PREFIX "glb_GN", 3, glb_shape, &glb, err, errlen) ||
        bind(st, VISION_PREFIX "sub_GN", 4, sub_shape, &sub, err, errlen) ||
        bind_linear(st, VISION_PREFIX "img_projection.0", H, 4 * C, &v->proj0, &v->proj0_b, err,
                    errlen) ||
        bind_linear(st, VISION_PREFIX "img_projection.2", H, H, &v->proj2, &v->proj2_b, err,
                    errlen))
        return -1;
    for (int64_t i = 0; i < vc->n_layers_run; i++)
        if (bind_vision_layer(st, vc, i, &v->layers[i], err, errlen))
            return -1;
    /* Sized after the position table was found in the file: P + 1 rows of C exist already,
     * so P + 9 rows of fp32 cannot overflow. */
    v->host_consts = malloc((size_t)(P + 1 + 8) * (size_t)C * sizeof(float));
    if (!v->host_consts) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    float *tab = v->host_consts, *sep = tab + (P + 1) * C;
    weight_to_f32(&pos, (P + 1) * C, tab);
    float *cls32 = sep; /* scratch until sep is written */
    weight_to_f32(&cls, C, cls32);
    for (int64_t j = 0; j < C; j++)
        tab[j] += cls32[j];
    weight_to_f32(&sub, 4 * C, sep);
    weight_to_f32(&glb, 4 * C, sep + 4 * C);
    v->pos = (struct eng_weight){tab, KERN_DTYPE_F32, (size_t)((P + 1) * C) * sizeof(float)};
    v->sep = (struct eng_weight){sep, KERN_DTYPE_F32, (size_t)(8 * C) * sizeof(float)};
    return 0;
}

static int bind_model(struct eng_model *m, char *err, size_t errlen)
{
    const struct eng_model_config *c = &m->cfg;
    const struct eng_st_set *st = m->weights;
    int64_t H = c->hidden_size, V = c->vocab_size, L = c->num_hidden_layers;
    bool moe = c->arch == ENG_ARCH_PHIMOE;

    if (bind2(st, "model.embed_tokens.weight", V, H, &m->embed, err, errlen))
        return -1;
    if (moe ? bind_layernorm(st, "model.norm", H, &m->final_norm, &m->final_norm_b, err, errlen)
            : bind1(st, "model.norm.weight", H, &m->final_norm, err, errlen))
        return -1;
    if (c->tie_word_embeddings && !eng_st_find(st, "lm_head.weight"))
        m->lm_head = m->embed;
    else if (bind2(st, "lm_head.weight", V, H, &m->lm_head, err, errlen))
        return -1;
    if (c->lm_head_bias && bind1(st, "lm_head.bias", V, &m->lm_head_b, err, errlen))
        return -1;

    m->layers = calloc((size_t)L, sizeof *m->layers);
    if (!m->layers) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int64_t per_layer = moe ? 3 * c->num_local_experts : 0;
    if (moe) { /* L <= 1024 and E <= 256 (config limits): no overflow */
        m->experts = calloc((size_t)(L * per_layer), sizeof *m->experts);
        m->expert_ptrs_host = calloc((size_t)(L * per_layer), sizeof *m->expert_ptrs_host);
        if (!m->experts || !m->expert_ptrs_host) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    for (int64_t i = 0; i < L; i++) {
        struct eng_phi3_layer *ly = &m->layers[i];
        if (!moe) {
            if (bind_phi3_layer(m, i, ly, err, errlen))
                return -1;
            continue;
        }
        ly->experts = m->experts + i * per_layer;
        if (bind_phimoe_layer(m, i, ly, err, errlen))
            return -1;
        for (int64_t j = 0; j < per_layer; j++)
            m->expert_ptrs_host[i * per_layer + j] = ly->experts[j].data;
        ly->expert_ptrs = m->expert_ptrs_host + i * per_layer;
    }
    return c->arch == ENG_ARCH_PHI3V ? bind_vision(m, err, errlen) : 0;
}

int eng_model_init_rope(struct eng_model *m, char *err, size_t errlen)
{
    const struct eng_model_config *c = &m->cfg;
    if (c->rope_type == ENG_ROPE_LONGROPE) {
        /* The op table carries one mscale; every Phi-3 LongRoPE config derives the same value
         * for both tables. Configs with distinct explicit mscales (PhiMoE) need a per-variant
         * scale in the rope op before they can be served. */
        if (c->short_mscale != c->long_mscale) {
            snprintf(err, errlen, "config: rope_scaling short_mscale %g != long_mscale %g is not supported",
                     c->short_mscale, c->long_mscale);
            return -1;
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
    return 0;
}

int eng_model_load(const char *path, struct eng_model **out, char *err, size_t errlen)
{
    *out = NULL;
    if (eng_model_is_gguf(path))
        return eng_model_load_gguf(path, out, err, errlen);
    struct eng_model *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (eng_model_config_load(path, &m->cfg, err, errlen) ||
        eng_st_open_dir(path, &m->weights, err, errlen) ||
        bind_model(m, err, errlen) || eng_model_init_rope(m, err, errlen)) {
        eng_model_destroy(m);
        return -1;
    }
    *out = m;
    return 0;
}

/* Calls fn on every weight tensor that the architecture has (data != NULL), in a fixed order:
 * embed, lm_head, final norm, then per layer, then the experts in eng_model.experts order;
 * stops at the first nonzero return and gives it back. */
typedef int (*weight_fn)(struct eng_model *m, struct eng_weight *w, void *arg);

static int each_weight(struct eng_model *m, weight_fn fn, void *arg)
{
    struct eng_weight *top[] = {&m->embed, &m->lm_head, &m->lm_head_b, &m->final_norm,
                                &m->final_norm_b};
    for (size_t j = 0; j < sizeof top / sizeof top[0]; j++)
        if (top[j]->data && fn(m, top[j], arg))
            return -1;
    for (int64_t i = 0; i < m->cfg.num_hidden_layers; i++) {
        struct eng_phi3_layer *L = &m->layers[i];
        struct eng_weight *lw[] = {&L->input_norm, &L->input_norm_b, &L->qkv, &L->q, &L->k,
                                   &L->v, &L->q_b, &L->k_b, &L->v_b, &L->o_b, &L->o,
                                   &L->post_norm, &L->post_norm_b, &L->gate_up, &L->down,
                                   &L->router};
        for (size_t j = 0; j < sizeof lw / sizeof lw[0]; j++)
            if (lw[j]->data && fn(m, lw[j], arg))
                return -1;
    }
    int64_t n_experts = m->cfg.num_hidden_layers * 3 * m->cfg.num_local_experts;
    for (int64_t j = 0; m->experts && j < n_experts; j++)
        if (fn(m, &m->experts[j], arg))
            return -1;
    struct eng_vision *v = m->vision;
    if (!v)
        return 0;
    struct eng_weight *vw[] = {&v->patch, &v->pre_ln, &v->pre_ln_b, &v->proj0, &v->proj0_b,
                               &v->proj2, &v->proj2_b, &v->pos, &v->sep};
    for (size_t j = 0; j < sizeof vw / sizeof vw[0]; j++)
        if (fn(m, vw[j], arg))
            return -1;
    for (int64_t i = 0; i < m->cfg.vision.n_layers_run; i++) {
        struct eng_vision_layer *L = &v->layers[i];
        struct eng_weight *lw[] = {&L->ln1, &L->ln1_b, &L->q, &L->q_b, &L->k, &L->k_b, &L->v,
                                   &L->v_b, &L->o, &L->o_b, &L->ln2, &L->ln2_b, &L->fc1,
                                   &L->fc1_b, &L->fc2, &L->fc2_b};
        for (size_t j = 0; j < sizeof lw / sizeof lw[0]; j++)
            if (fn(m, lw[j], arg))
                return -1;
    }
    return 0;
}

/* The tied lm_head is the embedding itself: counted and imported once. */
static bool is_tied_head(const struct eng_model *m, const struct eng_weight *w)
{
    return w == &m->lm_head && m->lm_head.data == m->embed.data;
}

static int add_bytes(struct eng_model *m, struct eng_weight *w, void *arg)
{
    if (!is_tied_head(m, w))
        *(size_t *)arg += w->n_bytes;
    return 0;
}

size_t eng_model_weight_bytes(const struct eng_model *model)
{
    /* A loaded model's tensors lie in its mappings, so their sum fits in size_t. each_weight
     * only reads through m here. */
    size_t total = 0;
    each_weight((struct eng_model *)model, add_bytes, &total);
    return total;
}

static int find_block(struct eng_model *m, struct eng_weight *w, void *arg)
{
    (void)m;
    /* The R16 formats have no block size of their own (ops.h), but are block formats. */
    if (kern_dtype_block_elems(w->dtype) == 0 && !kern_dtype_is_r16(w->dtype))
        return 0;
    *(enum kern_dtype *)arg = w->dtype;
    return 1;
}

enum kern_dtype eng_model_block_dtype(const struct eng_model *model)
{
    enum kern_dtype dt = KERN_DTYPE_COUNT;
    each_weight((struct eng_model *)model, find_block, &dt); /* reads only */
    return dt;
}

static int count_weight(struct eng_model *m, struct eng_weight *w, void *arg)
{
    (void)m;
    (void)w;
    ++*(int64_t *)arg;
    return 0;
}

struct import_state {
    char *err;
    size_t errlen;
};

/* Imports one tensor into the model's backend and points it at the copy. The embedding comes
 * before lm_head, so a tied head finds the embedding's copy already in place. */
static int import_weight(struct eng_model *m, struct eng_weight *w, void *arg)
{
    struct import_state *is = arg;
    if (w == &m->lm_head && m->lm_head.data == m->embed_host) {
        w->data = m->embed.data;
        return 0;
    }
    const void *dev = NULL;
    int rc = m->ops->weights_import(m->ctx, w->data, w->n_bytes, &dev);
    if (rc != 0) {
        snprintf(is->err, is->errlen, "model: importing %zu bytes of weights into the %s backend "
                 "failed (%d)", w->n_bytes, m->ops->name, rc);
        return -1;
    }
    m->imports[m->n_imports++] = dev;
    w->data = dev;
    return 0;
}

int eng_model_upload(struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     char *err, size_t errlen)
{
    if (m->ops) {
        snprintf(err, errlen, "model: weights were already imported");
        return -1;
    }
    int64_t n_w = 0;
    each_weight(m, count_weight, &n_w);
    m->imports = calloc((size_t)n_w + 1, sizeof *m->imports);
    if (!m->imports) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    m->ops = ops;
    m->ctx = ctx;
    m->embed_host = m->embed.data;
    struct import_state is = {err, errlen};
    if (each_weight(m, import_weight, &is))
        return -1;
    const void *dev = NULL;
    size_t freq_bytes = (size_t)m->n_rope_variants * (size_t)(m->cfg.rotary_dim / 2) * sizeof(float);
    if (ops->weights_import(ctx, m->inv_freq, freq_bytes, &dev) != 0) {
        snprintf(err, errlen, "model: importing the RoPE tables into the %s backend failed",
                 ops->name);
        return -1;
    }
    m->imports[m->n_imports++] = dev;
    m->rope_inv_freq = dev;
    if (!m->experts)
        return 0;
    /* The moe op reads the experts' addresses from backend memory: one array for all layers,
     * the imported addresses in the order of expert_ptrs_host. */
    int64_t per_layer = 3 * m->cfg.num_local_experts, n = m->cfg.num_hidden_layers * per_layer;
    for (int64_t j = 0; j < n; j++)
        m->expert_ptrs_host[j] = m->experts[j].data;
    size_t bytes = (size_t)n * sizeof *m->expert_ptrs_host;
    if (ops->buf_alloc(ctx, bytes, &m->expert_ptrs_dev) != 0 ||
        ops->buf_upload(ctx, m->expert_ptrs_dev, m->expert_ptrs_host, bytes) != 0) {
        snprintf(err, errlen, "model: uploading the experts' addresses into the %s backend "
                 "failed", ops->name);
        return -1;
    }
    for (int64_t i = 0; i < m->cfg.num_hidden_layers; i++)
        m->layers[i].expert_ptrs = (const void *const *)m->expert_ptrs_dev + i * per_layer;
    return 0;
}

void eng_model_destroy(struct eng_model *model)
{
    if (!model)
        return;
    if (model->ops && model->expert_ptrs_dev)
        model->ops->buf_free(model->ctx, model->expert_ptrs_dev);
    for (int64_t i = 0; i < model->n_imports; i++)
        model->ops->weights_release(model->ctx, model->imports[i]);
    free(model->imports);
    free(model->layers);
    free(model->experts);
    free(model->expert_ptrs_host);
    if (model->vision) {
        free(model->vision->layers);
        free(model->vision->host_consts);
        free(model->vision);
    }
    free(model->quant_data);
    for (int64_t i = 0; i < model->n_gguf_bufs; i++)
        free(model->gguf_bufs[i]);
    free(model->gguf_bufs);
    eng_st_close(model->weights);
    eng_gguf_close(model->gguf);
    free(model);
}
