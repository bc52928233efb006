/* A loaded model: its parsed config, its mapped weights checked against the architecture's
 * tensor inventory, and the RoPE frequency tables; optionally imported into a backend's memory
 * (eng_model_upload). Read-only after that, shared by every forward call. It does not run
 * anything; engine/models/ does. */
#ifndef PHISERVE_ENGINE_MODEL_H
#define PHISERVE_ENGINE_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#include "model_config.h"
#include "ops.h"
#include "safetensors.h"

/* RoPE table variants; a sequence uses one at a time (engine/models/phi3.c). */
enum eng_rope_variant {
    ENG_ROPE_SHORT = 0, /* default RoPE, or LongRoPE short factors */
    ENG_ROPE_LONG = 1,  /* LongRoPE long factors */
};

/* One weight tensor: its address for the ops (into the mapping, or its device copy after
 * eng_model_upload), its element type and size. */
struct eng_weight {
    const void *data;
    enum kern_dtype dtype;
    size_t n_bytes;
};

/* One decoder layer. Dense Phi-3 fills the fused qkv and gate_up; Phi-3.5-MoE (phimoe) fills
 * the separate q/k/v projections, the norms' and projections' biases, the router and the
 * experts. A weight that the architecture does not have has data == NULL. */
struct eng_phi3_layer {
    struct eng_weight input_norm;  /* [H] gain */
    struct eng_weight input_norm_b; /* [H] LayerNorm bias (phimoe) */
    struct eng_weight qkv;         /* [(nh + 2 nkv) hd, H] rows: Q heads, K heads, V heads */
    struct eng_weight q, k, v;     /* phimoe: [nh hd, H], [nkv hd, H], [nkv hd, H] */
    struct eng_weight q_b, k_b, v_b, o_b; /* phimoe with attention_bias: [nh hd], [nkv hd] x 2, [H] */
    struct eng_weight o;           /* [H, nh hd] */
    struct eng_weight post_norm;   /* [H] */
    struct eng_weight post_norm_b; /* [H] LayerNorm bias (phimoe) */
    struct eng_weight gate_up;     /* [2 I, H] rows: gate, then up */
    struct eng_weight down;        /* [H, I] */
    struct eng_weight router;      /* phimoe: [E, H] block_sparse_moe.gate */
    /* phimoe: [3 E] (into eng_model.experts): expert e's w1 (gate, [I, H]) at e, its w3 (up,
     * [I, H]) at E + e, its w2 (down, [H, I]) at 2 E + e; NULL for phi3. */
    struct eng_weight *experts;
    /* phimoe: [3 E] addresses of those tensors in the ops' memory, in the same order: the moe
     * op's w_gate, w_up and w_down arrays (host memory after load, the backend's after
     * eng_model_upload). NULL for phi3. */
    const void *const *expert_ptrs;
};

/* One encoder layer of Phi-3-vision's CLIP tower (pre-LayerNorm, biased projections). */
struct eng_vision_layer {
    struct eng_weight ln1, ln1_b;  /* [C] layer_norm1 */
    struct eng_weight q, q_b, k, k_b, v, v_b; /* [C, C], [C] */
    struct eng_weight o, o_b;      /* [C, C], [C] self_attn.out_proj */
    struct eng_weight ln2, ln2_b;  /* [C] layer_norm2 */
    struct eng_weight fc1, fc1_b;  /* [Ci, C], [Ci] */
    struct eng_weight fc2, fc2_b;  /* [C, Ci], [C] */
};

/* Phi-3-vision's image side: the CLIP tower (only the layers the features come from), the
 * separators and the projector. C = vision hidden size, P = grid^2 patches, H = text hidden. */
struct eng_vision {
    struct eng_weight patch;       /* [C, 3 p p]: the patch conv [C, 3, p, p], no bias */
    struct eng_weight pre_ln, pre_ln_b; /* [C] pre_layrnorm */
    struct eng_vision_layer *layers; /* [vision.n_layers_run], owned */
    struct eng_weight proj0, proj0_b; /* [H, 4 C], [H] img_projection.0 */
    struct eng_weight proj2, proj2_b; /* [H, H], [H] img_projection.2 */
    /* fp32 tables made at load (host_consts): pos [P + 1, C] is the position embedding with
     * the class embedding added to row 0 (what the tower adds to [0; patches]); sep [8, C] is
     * sub_GN's 4C values as 4 rows, then glb_GN's. */
    struct eng_weight pos, sep;
    float *host_consts;            /* owned: pos, then sep */
};

/* Weight quantization at load (eng_model_quantize). */
enum eng_quant {
    ENG_QUANT_NONE = 0,
    ENG_QUANT_Q8_0 = 1, /* KERN_DTYPE_Q8_0: 8-bit values, one fp16 scale per 32 */
    ENG_QUANT_Q4_0 = 2, /* KERN_DTYPE_Q4_0: 4-bit values, one fp16 scale per 32 */
};

struct eng_gguf;

struct eng_model {
    struct eng_model_config cfg;
    struct eng_st_set *weights;    /* owns the mappings every eng_weight points into (or: */
    struct eng_gguf *gguf;         /* a GGUF file's mapping; one of the two is NULL) */
    /* owned: GGUF tensors converted at load (an embedding in a block format widened to fp32,
     * matrices in types without kernels requantized to Q8_0) */
    void **gguf_bufs;
    int64_t n_gguf_bufs;
    struct eng_weight embed;       /* [V, H] */
    struct eng_weight final_norm;  /* [H] */
    struct eng_weight final_norm_b; /* [H] LayerNorm bias (phimoe) */
    struct eng_weight lm_head;     /* [V, H]; the embedding when tied */
    struct eng_weight lm_head_b;   /* [V] (phimoe with lm_head_bias) */
    struct eng_phi3_layer *layers; /* [num_hidden_layers] */
    struct eng_weight *experts;    /* phimoe: [num_hidden_layers * 3 E], owned */
    struct eng_vision *vision;     /* phi3_v: owned; NULL otherwise */
    /* phimoe: [num_hidden_layers * 3 E] the experts' host addresses (into the mapping, or
     * eng_model_quantize's buffer); eng_model_upload turns them into backend addresses */
    const void **expert_ptrs_host;
    void *expert_ptrs_dev;         /* after eng_model_upload: their backend copy (buf_alloc) */
    /* [n_rope_variants, rotary_dim / 2]: inv_freq[v * rotary_dim/2 + j] =
     * 1 / (factor_v[j] * theta^(2j / rotary_dim)), in fp32 as transformers computes it */
    float inv_freq[2 * ENG_MAX_ROPE_FACTORS];
    int n_rope_variants;           /* 1 (default RoPE) or 2 (LongRoPE) */
    float mscale;                  /* cos/sin scaling (equal for both Phi-3 variants) */
    /* inv_freq as the ops read it: this struct's own table after load, its backend copy after
     * eng_model_upload. */
    const float *rope_inv_freq;
    /* Set by eng_model_upload: the backend every weight pointer above now belongs to, and
     * the imports to release (distinct backend addresses). NULL / 0 before. */
    const struct kern_ops *ops;
    struct kern_ctx *ctx;
    const void **imports;          /* [n_imports] */
    const void *embed_host;        /* the embedding's address in the mapping (tied lm_head) */
    int64_t n_imports;
    /* Set by eng_model_quantize: the quantized weights (owned, one buffer), the format, and
     * how many eligible matrices kept their dtype (rows not whole blocks). int8_dot: the dense
     * matrices are in an R16 format, so the matmul op rounds their activations to int8. */
    void *quant_data;
    enum eng_quant quant;
    bool int8_dot;
    int64_t n_quant_kept;
};

/* Loads the Hugging Face model directory at path: config.json (+ generation_config.json), the
 * safetensors weights (single or sharded), and checks that every tensor the architecture needs
 * is present with exactly the expected shape. A path that is a file is read as a llama.cpp
 * GGUF file instead (architecture phi3): the config comes from its phi3.* and tokenizer.ggml.*
 * metadata, the weights are its tensors (F32, F16, BF16, and for the matrices the block
 * formats the kernels read: Q8_0, Q4_0, Q4_K, Q5_K, Q6_K) bound in place; matrices in the
 * other block types eng_gguf_dequant_row widens (Q4_1, Q5_0, Q5_1, Q2_K, Q3_K) are
 * requantized to Q8_0 at load, and an embedding in any block type is widened to fp32. Returns 0 and *out
 * (caller owns; free with eng_model_destroy), or -1 with a message in err. */
int eng_model_load(const char *path, struct eng_model **out, char *err, size_t errlen);

/* Whether path names a file (a GGUF model) rather than a model directory. */
int eng_model_is_gguf(const char *path);

/* The block format (ops.h: Q8_0, Q4_0, a K format, or an R16 interleaving) of the first
 * matrix stored in one, or KERN_DTYPE_COUNT when every weight is a plain float type. */
enum kern_dtype eng_model_block_dtype(const struct eng_model *model);

/* Imports every weight (and the RoPE tables) into the backend of ops/ctx through
 * ops->weights_import and points the model at the imported copies. Host backends keep using
 * the mapping in place (zero copy); CUDA allocates and uploads each tensor once (a tied
 * lm_head shares the embedding's copy). ops and ctx are the caller's and must outlive the
 * model (eng_model_destroy releases the imports through them). Call at most once, before any
 * forward. Returns 0, or -1 with a message in err; the model must then be destroyed. */
int eng_model_upload(struct eng_model *model, const struct kern_ops *ops, struct kern_ctx *ctx,
                     char *err, size_t errlen);

/* "none" (or NULL), "q8_0" and "q4_0" into *out; -1 for any other name. */
int eng_quant_parse(const char *name, enum eng_quant *out);
/* "none", "q8_0" or "q4_0". */
const char *eng_quant_name(enum eng_quant q);

/* Quantizes (Q8_0 or Q4_0), in host memory, every matrix the matmul and moe ops read: each
 * decoder layer's qkv, o, gate_up and down projections (phimoe: q, k, v and o, and every
 * expert's w1, w3 and w2, which expert_ptrs_host then points at) and the lm_head unless it is
 * tied to the embedding. A matrix already in that format stays as it is; one in another block
 * format (a GGUF file's K-quants, say) is requantized from its exact values; one whose rows are
 * not whole blocks keeps its dtype and counts in n_quant_kept (a layer's experts share one
 * dtype: all of them, or none when hidden or inter is not whole blocks). Norms, biases,
 * router, embedding and the vision tower are untouched.
 *
 * int8_dot (--int8-activations, host backends only) stores the dense matrices (all of the
 * above but the experts, which the moe op reads in the plain formats) in the R16 interleaving
 * of their plain format (kern_dtype_r16_of; n_bytes = kern_dtype_matrix_bytes), which the
 * matmul op multiplies with activations rounded to int8. The plain format is q's or, with
 * ENG_QUANT_NONE, the matrix's own when it is Q8_0, Q4_0, Q4_K, Q5_K or Q6_K (a GGUF file's;
 * then only moved, never requantized), and the other matrices (floats) stay as loaded. Fails
 * when no matrix ends up in an R16 format (a float model without q, say). Sets int8_dot.
 *
 * Call after eng_model_load, before eng_model_upload; the model owns the new buffer (a GGUF
 * matrix that was converted at load into a buffer of its own is freed once replaced).
 * n_threads threads share the work (<= 0: one per online CPU). ENG_QUANT_NONE without int8_dot
 * does nothing. Returns 0, or -1 with a message in err (a weight that cannot be encoded, no
 * matrix with an R16 form for int8_dot, or out of memory); the model is then unchanged. */
int eng_model_quantize(struct eng_model *model, enum eng_quant q, bool int8_dot, int n_threads,
                       char *err, size_t errlen);

/* --int8-activations: off, on, or auto (the default of serve and generate): on for the cpu
 * device when eng_model_int8_auto says the weights are quantized anyway, off otherwise. */
enum eng_int8 {
    ENG_INT8_OFF = 0,
    ENG_INT8_ON = 1,
    ENG_INT8_AUTO = 2,
};

/* NULL (a bare flag) or "on" / "true" / "yes" / "1": ON; "off" / "false" / "no" / "0": OFF;
 * "auto": AUTO (case-insensitive). Returns 0, or -1 for anything else. */
int eng_int8_parse(const char *name, enum eng_int8 *out);

/* "off", "on" or "auto": the word eng_int8_parse reads back as mode. */
const char *eng_int8_name(enum eng_int8 mode);

/* Whether mode turns the int8 dot on for model (loaded, not yet quantized) with q on device:
 * ON always, OFF never, AUTO on the "cpu" device when q is a quantization or a dense matrix
 * is already in a format with an R16 form (a GGUF file's Q8_0, Q4_0 or K-quants): the weights
 * were rounded already, and llama.cpp multiplies such matrices with int8 activations too. */
bool eng_model_int8_wanted(const struct eng_model *model, enum eng_quant q, const char *device,
                           enum eng_int8 mode);

/* Bytes of distinct weight tensors the forward pass reads (what eng_model_upload copies to a
 * device), overflow-free for any model that loaded. */
size_t eng_model_weight_bytes(const struct eng_model *model);

/* Releases the imports (before unmapping), frees the model and unmaps its weights; accepts
 * NULL. */
void eng_model_destroy(struct eng_model *model);

/* Fills inv_freq for one variant from the config (exposed for tests). factors may be NULL
 * (all 1). */
void eng_rope_inv_freq(const struct eng_model_config *cfg, const float *factors, float *inv_freq);

#endif
