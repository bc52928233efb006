/* A loaded model: its parsed config, its mapped weights checked against the architecture's
 * tensor inventory, and the RoPE frequency tables. Read-only after load, shared by every
 * forward call. It does not run anything; engine/models/ does. */
#ifndef PHISERVE_ENGINE_MODEL_H
#define PHISERVE_ENGINE_MODEL_H

#include <stddef.h>

#include "model_config.h"
#include "ops.h"
#include "safetensors.h"

/* RoPE table variants; a sequence uses one at a time (engine/models/phi3.c). */
enum eng_rope_variant {
    ENG_ROPE_SHORT = 0, /* default RoPE, or LongRoPE short factors */
    ENG_ROPE_LONG = 1,  /* LongRoPE long factors */
};

/* One weight tensor: a pointer into the mapping and its element type. */
struct eng_weight {
    const void *data;
    enum kern_dtype dtype;
};

struct eng_phi3_layer {
    struct eng_weight input_norm;  /* [H] */
    struct eng_weight qkv;         /* [(nh + 2 nkv) hd, H] rows: Q heads, K heads, V heads */
    struct eng_weight o;           /* [H, nh hd] */
    struct eng_weight post_norm;   /* [H] */
    struct eng_weight gate_up;     /* [2 I, H] rows: gate, then up */
    struct eng_weight down;        /* [H, I] */
};

struct eng_model {
    struct eng_model_config cfg;
    struct eng_st_set *weights;    /* owns the mappings every eng_weight points into */
    struct eng_weight embed;       /* [V, H] */
    struct eng_weight final_norm;  /* [H] */
    struct eng_weight lm_head;     /* [V, H]; the embedding when tied */
    struct eng_phi3_layer *layers; /* [num_hidden_layers] */
    /* [n_rope_variants, rotary_dim / 2]: inv_freq[v * rotary_dim/2 + j] =
     * 1 / (factor_v[j] * theta^(2j / rotary_dim)), in fp32 as transformers computes it */
    float inv_freq[2 * ENG_MAX_ROPE_FACTORS];
    int n_rope_variants;           /* 1 (default RoPE) or 2 (LongRoPE) */
    float mscale;                  /* cos/sin scaling (equal for both Phi-3 variants) */
};

/* Loads the Hugging Face model directory dir: config.json (+ generation_config.json), the
 * safetensors weights (single or sharded), and checks that every tensor the architecture needs
 * is present with exactly the expected shape. Returns 0 and *out (caller owns; free with
 * eng_model_destroy), or -1 with a message in err. */
int eng_model_load(const char *dir, struct eng_model **out, char *err, size_t errlen);

/* Frees the model and unmaps its weights; accepts NULL. */
void eng_model_destroy(struct eng_model *model);

/* Fills inv_freq for one variant from the config (exposed for tests). factors may be NULL
 * (all 1). */
void eng_rope_inv_freq(const struct eng_model_config *cfg, const float *factors, float *inv_freq);

#endif
