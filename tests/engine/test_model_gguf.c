/* The GGUF model loader (engine/model_gguf.c) on files this test writes: a minimal phi3 model
 * loads with the config its metadata stands for, and every metadata or tensor problem of
 * reliability.md's K3 kind (a count or size the model cannot have, a missing or misshapen
 * tensor, a type phiserve does not read) is a load error naming it. The golden suite checks
 * real fixtures numerically; the container's own checks are test_gguf.c's. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtype.h"
#include "gguf.h"
#include "gguf_dequant.h"
#include "model.h"

#include "../test_util.h"

/* A GGUF image under construction: metadata and tensor records, then the data. */
#define W_MAX_KV 48
#define W_MAX_T 32
struct wkv {
    char key[64];
    uint32_t type;             /* 4 u32, 5 i32, 6 f32, 8 string, 9 array */
    uint32_t u;
    float f;
    const char *s;
    uint32_t elem;             /* arrays: 8 strings or 5 i32 */
    const char *const *strs;
    const int32_t *ints;
    uint64_t count;
};
struct wt {
    char name[64];
    uint32_t type;             /* ggml type id */
    int n_dims;
    uint64_t ne[2];
    size_t bytes;
    uint8_t fill;              /* F32 tensors: 0.01 * (i % 7) (+ 0.5 for norms), + 1 when set;
                                  K blocks: a NaN scale when set */
};
struct wfile {
    struct wkv kv[W_MAX_KV];
    int n_kv;
    struct wt t[W_MAX_T];
    int n_t;
};

static void put_bytes(FILE *f, const void *p, size_t n)
{
    fwrite(p, 1, n, f);
}
static void put_u32(FILE *f, uint32_t v)
{
    put_bytes(f, &v, 4); /* x86 and the test machines are little-endian, as the format */
}
static void put_u64(FILE *f, uint64_t v)
{
    put_bytes(f, &v, 8);
}
static void put_str(FILE *f, const char *s)
{
    put_u64(f, strlen(s));
    put_bytes(f, s, strlen(s));
}

static struct wkv *kv_add(struct wfile *w, const char *key, uint32_t type)
{
    struct wkv *k = &w->kv[w->n_kv++];
    memset(k, 0, sizeof *k);
    snprintf(k->key, sizeof k->key, "%s", key);
    k->type = type;
    return k;
}
static void kv_u32(struct wfile *w, const char *key, uint32_t v)
{
    kv_add(w, key, 4)->u = v;
}
static void kv_f32(struct wfile *w, const char *key, float v)
{
    kv_add(w, key, 6)->f = v;
}
static void kv_str(struct wfile *w, const char *key, const char *s)
{
    kv_add(w, key, 8)->s = s;
}
static struct wkv *kv_find(struct wfile *w, const char *key)
{
    for (int i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0)
            return &w->kv[i];
    return NULL;
}
static void kv_del(struct wfile *w, const char *key)
{
    struct wkv *k = kv_find(w, key);
    if (k)
        *k = w->kv[--w->n_kv];
}

static size_t type_bytes(uint32_t type, uint64_t n)
{
    switch (type) {
    case 0: return (size_t)n * 4;
    case 1: case 30: return (size_t)n * 2;
    case 8: return (size_t)n / 32 * 34;
    case 2: return (size_t)n / 32 * 18;
    case 11: return (size_t)n / 256 * 110; /* Q3_K */
    case 12: return (size_t)n / 256 * 144; /* Q4_K */
    case 13: return (size_t)n / 256 * 176; /* Q5_K */
    case 14: return (size_t)n / 256 * 210; /* Q6_K */
    default: return 0;
    }
}

static struct wt *t_add(struct wfile *w, const char *name, uint32_t type, int n_dims, uint64_t ne0,
                        uint64_t ne1)
{
    struct wt *t = &w->t[w->n_t++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = n_dims > 1 ? ne1 : 1;
    t->bytes = type_bytes(type, ne0 * t->ne[1]);
    return t;
}
static struct wt *t_find(struct wfile *w, const char *name)
{
    for (int i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return &w->t[i];
    return NULL;
}
static void t_del(struct wfile *w, const char *name)
{
    struct wt *t = t_find(w, name);
    if (t)
        *t = w->t[--w->n_t];
}

/* A phi3 model: hidden 64, 2 layers, 4 heads (2 kv heads), intermediate 96, vocab V, context
 * 128, sliding window 48, all F32, untied. */
static int64_t H = 64; /* the hidden size (256 for the K-quant cases) */
#define NL 2
#define V 40
static void base_model(struct wfile *w)
{
    memset(w, 0, sizeof *w);
    kv_str(w, "general.architecture", "phi3");
    kv_u32(w, "phi3.context_length", 128);
    kv_u32(w, "phi3.embedding_length", H);
    kv_u32(w, "phi3.feed_forward_length", 96);
    kv_u32(w, "phi3.block_count", NL);
    kv_u32(w, "phi3.attention.head_count", 4);
    kv_u32(w, "phi3.attention.head_count_kv", 2);
    kv_f32(w, "phi3.attention.layer_norm_rms_epsilon", 1e-5f);
    kv_u32(w, "phi3.rope.dimension_count", H / 4);
    kv_f32(w, "phi3.rope.freq_base", 10000.0f);
    kv_u32(w, "phi3.attention.sliding_window", 48);
    t_add(w, "token_embd.weight", 0, 2, H, V);
    t_add(w, "output_norm.weight", 0, 1, H, 1);
    t_add(w, "output.weight", 0, 2, H, V);
    for (int i = 0; i < NL; i++) {
        char n[64];
        snprintf(n, sizeof n, "blk.%d.attn_norm.weight", i);
        t_add(w, n, 0, 1, H, 1);
        snprintf(n, sizeof n, "blk.%d.attn_qkv.weight", i);
        t_add(w, n, 0, 2, H, 2 * H); /* 4 heads of H / 4, 2 kv heads */
        snprintf(n, sizeof n, "blk.%d.attn_output.weight", i);
        t_add(w, n, 0, 2, H, H);
        snprintf(n, sizeof n, "blk.%d.ffn_norm.weight", i);
        t_add(w, n, 0, 1, H, 1);
        snprintf(n, sizeof n, "blk.%d.ffn_up.weight", i);
        t_add(w, n, 0, 2, H, 2 * 96);
        snprintf(n, sizeof n, "blk.%d.ffn_down.weight", i);
        t_add(w, n, 0, 2, 96, H);
    }
}

/* Writes w to path (alignment 32). Q8_0/Q4_0 data: blocks of scale 1/64 and values q = j - 16
 * (Q8_0) or nibbles j % 16 (Q4_0) by element j of the block. */
static void write_file(const struct wfile *w, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    put_bytes(f, "GGUF", 4);
    put_u32(f, 3);
    put_u64(f, (uint64_t)w->n_t);
    put_u64(f, (uint64_t)w->n_kv);
    for (int i = 0; i < w->n_kv; i++) {
        const struct wkv *k = &w->kv[i];
        put_str(f, k->key);
        put_u32(f, k->type);
        if (k->type == 4)
            put_u32(f, k->u);
        else if (k->type == 6)
            put_bytes(f, &k->f, 4);
        else if (k->type == 8)
            put_str(f, k->s);
        else {
            put_u32(f, k->elem);
            put_u64(f, k->count);
            for (uint64_t j = 0; j < k->count; j++) {
                if (k->elem == 8)
                    put_str(f, k->strs[j]);
                else
                    put_bytes(f, &k->ints[j], 4);
            }
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n_t; i++) {
        const struct wt *t = &w->t[i];
        put_str(f, t->name);
        put_u32(f, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            put_u64(f, t->ne[d]);
        put_u32(f, t->type);
        put_u64(f, off);
        off += (t->bytes + 31) / 32 * 32;
    }
    long pos = ftell(f);
    static const uint8_t zero[32];
    put_bytes(f, zero, (size_t)((32 - pos % 32) % 32));
    for (int i = 0; i < w->n_t; i++) {
        const struct wt *t = &w->t[i];
        uint8_t *d = calloc(1, (t->bytes + 31) / 32 * 32 + 1);
        if (t->type == 0)
            for (size_t e = 0; e < t->bytes / 4; e++) {
                float v = 0.01f * (float)(e % 7) + 0.5f * (strstr(t->name, "norm") != NULL) +
                          (t->fill ? 1.0f : 0.0f);
                memcpy(d + e * 4, &v, 4);
            }
        if (t->type == 8 || t->type == 2) {
            size_t bb = t->type == 8 ? 34 : 18;
            for (size_t b = 0; b < t->bytes / bb; b++) {
                uint8_t *blk = d + b * bb;
                blk[0] = 0x00; /* fp16 1/64 = 0x2400 */
                blk[1] = 0x24;
                for (int j = 0; j < (t->type == 8 ? 32 : 16); j++)
                    blk[2 + j] = t->type == 8 ? (uint8_t)(int8_t)(j - 16) : (uint8_t)(j | (15 - j) << 4);
            }
        }
        if (t->type >= 11 && t->type <= 14) { /* K blocks: any bytes, finite fp16 scales */
            size_t bb = t->type == 11 ? 110 : t->type == 12 ? 144 : t->type == 13 ? 176 : 210;
            uint32_t x = 12345;
            for (size_t i = 0; i < t->bytes; i++) {
                x = x * 1103515245u + 12345u;
                d[i] = (uint8_t)(x >> 16);
            }
            for (size_t b = 0; b < t->bytes / bb; b++) {
                uint8_t *blk = d + b * bb;
                /* d (and dmin) */
                uint8_t *sc = t->type == 14 ? blk + 208 : t->type == 11 ? blk + 108 : blk;
                sc[0] = 0x00;
                sc[1] = t->fill ? 0x7e : 0x24; /* 1/64, or NaN when fill is set */
                if (t->type == 12 || t->type == 13) {
                    sc[2] = 0x00;
                    sc[3] = 0x20; /* dmin 1/128 */
                }
            }
        }
        put_bytes(f, d, (t->bytes + 31) / 32 * 32);
        free(d);
    }
    fclose(f);
}

static char path[256];

/* Whether w holds exactly the Q8_0 requantization of the GGUF matrix t's exact values (row by
 * row through eng_gguf_dequant_row and kern_quantize), in t's shape. */
static bool is_q8_0_of(const struct eng_gguf_tensor *t, const struct eng_weight *w)
{
    if (!t || w->dtype != KERN_DTYPE_Q8_0)
        return false;
    int64_t k = t->ne[0], rows = t->ne[1];
    size_t row_bytes = (size_t)kern_dtype_row_bytes(KERN_DTYPE_Q8_0, k);
    size_t src_row = (size_t)(t->n_bytes / (uint64_t)rows);
    float *f = malloc((size_t)k * sizeof *f);
    uint8_t *q = malloc(row_bytes);
    bool ok = f && q && w->n_bytes == row_bytes * (size_t)rows;
    for (int64_t r = 0; ok && r < rows; r++)
        ok = eng_gguf_dequant_row(t->ggml_type, (const uint8_t *)t->data + (size_t)r * src_row, k,
                                  f) == 0 &&
             kern_quantize(f, KERN_DTYPE_F32, 1, k, KERN_DTYPE_Q8_0, q) == KERN_OK &&
             memcmp((const uint8_t *)w->data + (size_t)r * row_bytes, q, row_bytes) == 0;
    free(f);
    free(q);
    return ok;
}

/* Loads w; expects success (want NULL) or an error containing want. */
static struct eng_model *try_load(const struct wfile *w, const char *want, const char *what)
{
    write_file(w, path);
    struct eng_model *m = NULL;
    char err[512] = "";
    int rc = eng_model_load(path, &m, err, sizeof err);
    if (!want) {
        CHECK(rc == 0 && m, "%s: load failed: %s", what, err);
        return m;
    }
    CHECK(rc != 0 && !m, "%s: loaded, expected an error with '%s'", what, want);
    CHECK(rc == 0 || strstr(err, want) != NULL, "%s: message '%s' lacks '%s'", what, err, want);
    eng_model_destroy(m);
    return NULL;
}

int main(void)
{
    snprintf(path, sizeof path, "/tmp/phiserve-test-model-gguf-%d.gguf", (int)getpid());
    struct wfile w;

    /* The base model and the config its metadata stands for. */
    base_model(&w);
    struct eng_model *m = try_load(&w, NULL, "base");
    if (m) {
        const struct eng_model_config *c = &m->cfg;
        CHECK(c->arch == ENG_ARCH_PHI3 && c->hidden_size == H && c->num_hidden_layers == NL &&
                  c->num_attention_heads == 4 && c->num_key_value_heads == 2 && c->head_dim == 16 &&
                  c->intermediate_size == 96 && c->vocab_size == V &&
                  c->max_position_embeddings == 128 && c->sliding_window == 48 &&
                  !c->tie_word_embeddings && c->rope_type == ENG_ROPE_DEFAULT &&
                  (float)c->rms_norm_eps == 1e-5f && c->rope_theta == 10000.0,
              "base: config fields differ from the metadata");
        CHECK(m->layers[1].down.dtype == KERN_DTYPE_F32 && m->lm_head.data != m->embed.data,
              "base: weights not bound as stored");
        eng_model_destroy(m);
    }

    /* No output.weight: the lm_head is the embedding (tied). No sliding window key: none. */
    base_model(&w);
    t_del(&w, "output.weight");
    kv_del(&w, "phi3.attention.sliding_window");
    if ((m = try_load(&w, NULL, "tied")) != NULL) {
        CHECK(m->cfg.tie_word_embeddings && m->lm_head.data == m->embed.data &&
                  m->cfg.sliding_window == 0, "tied: lm_head is not the embedding, or a window is set");
        eng_model_destroy(m);
    }

    /* Q8_0 matrices and a Q4_0 embedding are bound as they are (the embed op reads block
     * rows). */
    base_model(&w);
    t_find(&w, "blk.0.attn_qkv.weight")->type = 8;
    t_find(&w, "blk.0.attn_qkv.weight")->bytes = type_bytes(8, (uint64_t)H * 128);
    t_find(&w, "token_embd.weight")->type = 2;
    t_find(&w, "token_embd.weight")->bytes = type_bytes(2, (uint64_t)H * V);
    if ((m = try_load(&w, NULL, "q8_0 qkv, q4_0 embedding")) != NULL) {
        CHECK(m->layers[0].qkv.dtype == KERN_DTYPE_Q8_0 &&
                  eng_model_block_dtype(m) != KERN_DTYPE_COUNT, "qkv not bound as Q8_0");
        const struct eng_gguf_tensor *t = eng_gguf_find_tensor(m->gguf, "token_embd.weight");
        int bad = m->embed.dtype != KERN_DTYPE_Q4_0 || m->embed.data != t->data;
        for (int i = 0; !bad && i < V * H; i++) {
            int j = i % 32, q = j < 16 ? j : 15 - (j - 16); /* low nibble j, high 15 - j */
            bad = kern_block_elem(1, (const uint8_t *)m->embed.data + (size_t)(i / 32) * 18, j) !=
                  (float)(q - 8) / 64.0f;
        }
        CHECK(!bad, "the Q4_0 embedding is not bound in place with its values");
        eng_model_destroy(m);
    }

    /* LongRoPE from the factor tensors; a wrong count is refused. */
    base_model(&w);
    kv_find(&w, "phi3.context_length")->u = 512;
    kv_u32(&w, "phi3.rope.scaling.original_context_length", 128);
    t_add(&w, "rope_factors_long.weight", 0, 1, 8, 1);
    t_add(&w, "rope_factors_short.weight", 0, 1, 8, 1);
    (void)try_load(&w, "short_factor[0]", "rope factors of zero"); /* 0.01 * (i % 7) from 0 */
    t_find(&w, "rope_factors_long.weight")->fill = 1;
    t_find(&w, "rope_factors_short.weight")->fill = 1;
    kv_f32(&w, "phi3.rope.scaling.attn_factor", 1.25f);
    if ((m = try_load(&w, NULL, "longrope")) != NULL) {
        CHECK(m->cfg.rope_type == ENG_ROPE_LONGROPE && m->n_rope_variants == 2 &&
                  m->cfg.long_factor[3] == 1.03f && m->cfg.short_factor[0] == 1.0f &&
                  m->mscale == 1.25f && m->cfg.original_max_position_embeddings == 128,
              "longrope: factors or attn_factor not taken from the file");
        eng_model_destroy(m);
    }
    t_find(&w, "rope_factors_long.weight")->ne[0] = 7;
    t_find(&w, "rope_factors_long.weight")->bytes = 28;
    (void)try_load(&w, "rope_factors_long.weight", "7 long factors");

    /* Metadata the model cannot have (K3): each refused, naming the field. */
    static const struct {
        const char *key;
        uint32_t v;
        const char *want;
    } bad_u32[] = {
        {"phi3.attention.head_count", 0, "head"},
        {"phi3.block_count", 2000, "num_hidden_layers"},
        {"phi3.embedding_length", 0, "hidden_size"},
        {"phi3.attention.head_count_kv", 3, "num_key_value_heads"},
        {"phi3.context_length", 0, "max_position_embeddings"},
        {"phi3.rope.dimension_count", 8, "partial rotary"},
        {"phi3.feed_forward_length", 95, "ffn_up"},
    };
    for (size_t i = 0; i < sizeof bad_u32 / sizeof bad_u32[0]; i++) {
        base_model(&w);
        kv_find(&w, bad_u32[i].key)->u = bad_u32[i].v;
        (void)try_load(&w, bad_u32[i].want, bad_u32[i].key);
    }
    base_model(&w);
    kv_del(&w, "phi3.block_count");
    (void)try_load(&w, "phi3.block_count", "no block_count");
    base_model(&w);
    kv_find(&w, "phi3.attention.layer_norm_rms_epsilon")->f = NAN;
    (void)try_load(&w, "layer_norm_rms_epsilon", "NaN eps");
    base_model(&w);
    kv_find(&w, "general.architecture")->s = "phimoe";
    (void)try_load(&w, "architecture 'phimoe' is not supported", "phimoe");
    base_model(&w);
    kv_u32(&w, "tokenizer.ggml.bos_token_id", V);
    (void)try_load(&w, "bos_token_id", "bos id out of range");

    /* Tensors: missing, misshapen, of a type phiserve does not read, a norm in a block type. */
    base_model(&w);
    t_del(&w, "blk.1.ffn_down.weight");
    (void)try_load(&w, "'blk.1.ffn_down.weight' is missing", "missing tensor");
    base_model(&w);
    t_find(&w, "blk.0.attn_output.weight")->ne[1] = 32;
    t_find(&w, "blk.0.attn_output.weight")->bytes = (size_t)H * 32 * 4;
    (void)try_load(&w, "'blk.0.attn_output.weight' has dims", "misshapen tensor");
    base_model(&w);
    t_find(&w, "blk.0.attn_qkv.weight")->ne[0] = 256; /* Q4_K needs rows of 256 */
    t_find(&w, "blk.0.attn_qkv.weight")->type = 12;
    t_find(&w, "blk.0.attn_qkv.weight")->bytes = type_bytes(12, 256 * 128);
    (void)try_load(&w, "'blk.0.attn_qkv.weight'", "Q4_K tensor");
    base_model(&w);
    t_find(&w, "blk.0.attn_norm.weight")->type = 8;
    t_find(&w, "blk.0.attn_norm.weight")->bytes = type_bytes(8, H);
    (void)try_load(&w, "vectors", "Q8_0 norm");

    /* K-quants (hidden 256): Q4_K, Q5_K and Q6_K matrices and embedding bound in place as the
     * kernels read them; a type without kernels (Q3_K) requantized to Q8_0 through its exact
     * fp32 values, and as an embedding widened to those values. A NaN scale in the requantized type is a load
     * error naming the tensor (matrices bound in place are not read at load, as float ones
     * are not). */
    H = 256;
    base_model(&w);
    static const struct {
        const char *name;
        uint32_t type;
    } kq[] = {{"blk.0.attn_qkv.weight", 12}, {"blk.1.attn_output.weight", 13},
              {"output.weight", 14}, {"token_embd.weight", 14}, {"blk.0.attn_output.weight", 11}};
    for (size_t i = 0; i < sizeof kq / sizeof kq[0]; i++) {
        struct wt *t = t_find(&w, kq[i].name);
        t->type = kq[i].type;
        t->bytes = type_bytes(t->type, t->ne[0] * t->ne[1]);
    }
    int kq_ok = 1;
    for (size_t i = 0; i < sizeof kq / sizeof kq[0] && kq_ok; i++)
        kq_ok = eng_gguf_dequant_supported(kq[i].type);
    CHECK(kq_ok, "Q3_K, Q4_K, Q5_K and Q6_K must be widened");
    if (kq_ok && (m = try_load(&w, NULL, "k-quants")) != NULL) {
        const struct eng_weight *got[] = {&m->layers[0].qkv, &m->layers[1].o, &m->lm_head,
                                          &m->embed, &m->layers[0].o};
        static const enum kern_dtype native[] = {KERN_DTYPE_Q4_K, KERN_DTYPE_Q5_K, KERN_DTYPE_Q6_K,
                                                 KERN_DTYPE_Q6_K};
        for (size_t i = 0; i < 4; i++) {
            const struct eng_gguf_tensor *t = eng_gguf_find_tensor(m->gguf, kq[i].name);
            CHECK(t && got[i]->dtype == native[i] && got[i]->data == t->data &&
                      got[i]->n_bytes == t->n_bytes,
                  "%s: not bound in place as %s", kq[i].name, kern_dtype_name(native[i]));
        }
        for (size_t i = 4; i < sizeof kq / sizeof kq[0]; i++)
            CHECK(is_q8_0_of(eng_gguf_find_tensor(m->gguf, kq[i].name), got[i]),
                  "%s: not the Q8_0 requantization of its dequantized values", kq[i].name);
        eng_model_destroy(m);
    }
    /* --quantization q8_0 on that file (speed over memory): every K matrix requantized from its
     * exact values, the Q8_0 one (from Q3_K) left as it is, the embedding untouched. */
    char qerr[256];
    if (kq_ok && (m = try_load(&w, NULL, "k-quants for q8_0")) != NULL) {
        const void *before_o = m->layers[0].o.data, *before_embed = m->embed.data;
        CHECK(eng_model_quantize(m, ENG_QUANT_Q8_0, false, 2, qerr, sizeof qerr) == 0, "q8_0: %s", qerr);
        CHECK(m->n_quant_kept == 0, "q8_0: %lld matrices kept their dtype", (long long)m->n_quant_kept);
        CHECK(m->layers[0].o.data == before_o && m->embed.data == before_embed,
              "q8_0: the Q8_0 matrix or the embedding was re-encoded");
        const struct eng_weight *kw[] = {&m->layers[0].qkv, &m->layers[1].o, &m->lm_head};
        for (size_t i = 0; i < 3; i++)
            CHECK(is_q8_0_of(eng_gguf_find_tensor(m->gguf, kq[i].name), kw[i]),
                  "q8_0: %s is not the Q8_0 requantization of its values", kq[i].name);
        eng_model_destroy(m);
    }
    /* An embedding in a type without kernels (Q3_K) is widened to its exact fp32 values. */
    struct wt *emb = t_find(&w, "token_embd.weight");
    emb->type = 11;
    emb->bytes = type_bytes(11, emb->ne[0] * emb->ne[1]);
    if ((m = try_load(&w, NULL, "q3_k embedding")) != NULL) {
        const struct eng_gguf_tensor *t = eng_gguf_find_tensor(m->gguf, "token_embd.weight");
        int64_t k = t->ne[0], rows = t->ne[1];
        float *f = malloc((size_t)k * sizeof *f);
        int bad = m->embed.dtype != KERN_DTYPE_F32;
        for (int64_t r = 0; !bad && r < rows; r++)
            bad = eng_gguf_dequant_row(11, (const uint8_t *)t->data + (size_t)r * (size_t)(t->n_bytes / (uint64_t)rows),
                                       k, f) != 0 ||
                  memcmp((const float *)m->embed.data + r * k, f, (size_t)k * sizeof *f) != 0;
        CHECK(!bad, "the Q3_K embedding is not its exact fp32 values");
        free(f);
        eng_model_destroy(m);
    }
    t_find(&w, "blk.0.attn_output.weight")->fill = 1;
    (void)try_load(&w, "'blk.0.attn_output.weight' (Q3_K) row 0", "NaN K scale");
    H = 64;

    /* A vocabulary whose size is not the embedding's rows. */
    static const char *const toks[3] = {"<unk>", "<s>", "</s>"};
    base_model(&w);
    struct wkv *k = kv_add(&w, "tokenizer.ggml.tokens", 9);
    k->elem = 8;
    k->strs = toks;
    k->count = 3;
    (void)try_load(&w, "vocabulary", "3 tokens for 40 rows");

    unlink(path);
    return tu_finish("model_gguf");
}
