/* The model's config.json and generation_config.json, parsed and validated into one struct.
 * Only what the forward pass, the tokenizer glue and the scheduler need; not a JSON mirror. */
#ifndef PHISERVE_ENGINE_MODEL_CONFIG_H
#define PHISERVE_ENGINE_MODEL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define ENG_MAX_ROPE_FACTORS 256   /* rotary_dim / 2 upper bound */
#define ENG_MAX_STOP_IDS 16

enum eng_arch {
    ENG_ARCH_PHI3 = 0,             /* Phi3ForCausalLM, model_type "phi3" */
    ENG_ARCH_PHIMOE = 1,           /* PhimoeForCausalLM (Phi-3.5-MoE), model_type "phimoe" */
    ENG_ARCH_PHI3V = 2,            /* Phi3VForCausalLM (Phi-3/3.5-vision), model_type "phi3_v":
                                      the phi3 text stack plus eng_vision_config */
};

/* Phi-3-vision's image side (ENG_ARCH_PHI3V): the CLIP tower, the HD transform and the
 * projector. The real checkpoints name "openai/clip-vit-large-patch14-336" and carry no tower
 * sizes (the remote code hardcodes them), so these default to CLIP ViT-L/14-336;
 * img_processor.vision_config (a phiserve extension, HF CLIPVisionConfig names) overrides them
 * for tiny test models. The crop of the HD transform is image_size (336). */
struct eng_vision_config {
    int64_t hidden_size;           /* 1024 */
    int64_t intermediate_size;     /* 4096 */
    int64_t num_attention_heads;   /* 16 */
    int64_t num_hidden_layers;     /* 24 (in the file) */
    int64_t image_size;            /* 336: the crop side */
    int64_t patch_size;            /* 14 */
    double layer_norm_eps;         /* 1e-5 */
    int64_t n_layers_run;          /* encoder layers whose output is the feature (layer_idx -2:
                                      num_hidden_layers - 1) */
    int64_t grid;                  /* image_size / patch_size patches per side (24) */
    int64_t tokens_per_crop;       /* (grid / 2)^2 after the 2x2 merge (144) */
    /* preprocessor_config.json */
    int64_t num_crops;             /* the HD transform's crop budget (default 1) */
    float image_mean[3], image_std[3];
};

enum eng_rope_type {
    ENG_ROPE_DEFAULT = 0,          /* rope_scaling null */
    ENG_ROPE_LONGROPE = 1,         /* rope_scaling type "su" or "longrope" */
};

struct eng_model_config {
    enum eng_arch arch;
    int64_t hidden_size;
    int64_t intermediate_size;
    int64_t num_hidden_layers;
    int64_t num_attention_heads;
    int64_t num_key_value_heads;   /* defaults to num_attention_heads */
    int64_t head_dim;              /* hidden_size / num_attention_heads unless given */
    int64_t rotary_dim;            /* int(head_dim * partial_rotary_factor), even */
    int64_t vocab_size;
    int64_t max_position_embeddings;
    int64_t original_max_position_embeddings; /* = max_position_embeddings when absent */
    int64_t sliding_window;        /* 0 when null/absent or >= max_position_embeddings */
    double rms_norm_eps;
    double rope_theta;
    double partial_rotary_factor;  /* 1.0 when absent */
    int tie_word_embeddings;
    enum eng_rope_type rope_type;
    int n_rope_factors;            /* rotary_dim / 2 when LONGROPE, else 0 */
    float short_factor[ENG_MAX_ROPE_FACTORS];
    float long_factor[ENG_MAX_ROPE_FACTORS];
    /* attention scaling applied to cos and sin: short_mscale for the short table, long_mscale
     * for the long one. From rope_scaling.short_mscale/long_mscale or attention_factor when
     * given, else sqrt(1 + ln(s)/ln(orig)) with s = max/orig (1.0 when s <= 1). */
    double short_mscale, long_mscale;
    /* Phi-3.5-MoE (ENG_ARCH_PHIMOE); zero for phi3. intermediate_size is then per expert. */
    int64_t num_local_experts;     /* experts per layer, default 16 */
    int64_t num_experts_per_tok;   /* 2: the sparsemixer router is top-2 only */
    double router_jitter_noise;    /* the router's mask band, default 0.01 */
    int attention_bias;            /* q/k/v/o projections have biases (phimoe only) */
    int lm_head_bias;              /* lm_head has a bias (phimoe only) */
    struct eng_vision_config vision; /* ENG_ARCH_PHI3V only; zero otherwise */
    int32_t bos_token_id;          /* -1 when absent */
    int32_t pad_token_id;          /* -1 when absent */
    /* eos ids: union of config.json and generation_config.json eos_token_id (int or list) */
    int n_eos_ids;
    int32_t eos_token_ids[ENG_MAX_STOP_IDS];
};

/* Parses config.json text (len bytes, need not be NUL-terminated) into *cfg. Returns 0, or
 * -1 with a message naming the offending field written to err (errlen bytes, NUL-terminated).
 * Unknown architectures/model_types and inconsistent values are refused. */
int eng_model_config_parse(const char *json, size_t len, struct eng_model_config *cfg,
                           char *err, size_t errlen);

/* Merges generation_config.json text into cfg: adds its eos_token_id(s) to eos_token_ids
 * (deduplicated). Returns 0 or -1 with a message in err. */
int eng_model_config_merge_generation(const char *json, size_t len,
                                      struct eng_model_config *cfg, char *err, size_t errlen);

/* Adds the tokenizer's eos id (tokenizer_config.json eos_token) to the eos ids, so that
 * generation stops on the union of config.json, generation_config.json and the tokenizer's.
 * Returns 0, or -1 with a message in err when id is outside the vocab or the list is full. */
int eng_model_config_add_tokenizer_eos(struct eng_model_config *cfg, int32_t id, char *err,
                                       size_t errlen);

/* Merges preprocessor_config.json text (Phi-3-vision: num_crops, num_img_tokens, image_mean,
 * image_std) into cfg->vision. Returns 0 or -1 with a message in err. */
int eng_model_config_merge_preprocessor(const char *json, size_t len,
                                        struct eng_model_config *cfg, char *err, size_t errlen);

/* The number of prompt positions an image takes whose HD transform gave an h_crop x w_crop
 * grid of crops: (h_crop w_crop + 1) T + 1 + (h_crop + 1) R with R = grid / 2 merged rows per
 * crop and T = R^2 (Phi-3-vision: (h w + 1) 144 + 1 + (h + 1) 12). */
int64_t eng_vision_image_tokens(const struct eng_vision_config *v, int64_t h_crop, int64_t w_crop);

/* Reads dir/config.json and, when present, dir/generation_config.json (and for phi3_v
 * dir/preprocessor_config.json). A missing config.json is an error; a missing
 * generation_config.json or preprocessor_config.json is not. */
int eng_model_config_load(const char *dir, struct eng_model_config *cfg, char *err, size_t errlen);

#endif
