/* Loading a llama.cpp GGUF file of architecture "phi3": its metadata is written out as the
 * config.json Hugging Face would have (and checked by the same parser, so both sources obey
 * the same limits), its tensors are bound to the model's weights by llama.cpp's names. The
 * container is gguf.c's and the tokenizer tokenizer_gguf.c's; nothing here reads either. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dtype.h"
#include "file_util.h"
#include "gguf.h"
#include "gguf_dequant.h"
#include "model.h"
#include "model_internal.h"

/* ggml type ids of the tensor types bound as they are. */
#define GGML_F32 0
#define GGML_F16 1
#define GGML_Q4_0 2
#define GGML_Q8_0 8
#define GGML_Q4_K 12
#define GGML_Q5_K 13
#define GGML_Q6_K 14
#define GGML_BF16 30

/* GGUF token types (llama.cpp): 3 control, 4 user-defined. */
#define GGUF_TOKEN_CONTROL 3
#define GGUF_TOKEN_USER_DEFINED 4

int eng_model_is_gguf(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The kern dtype a ggml type is read as; -1 for the types phiserve does not read. */
static int dtype_of(uint32_t ggml_type)
{
    switch (ggml_type) {
    case GGML_F32: return KERN_DTYPE_F32;
    case GGML_F16: return KERN_DTYPE_F16;
    case GGML_BF16: return KERN_DTYPE_BF16;
    case GGML_Q8_0: return KERN_DTYPE_Q8_0;
    case GGML_Q4_0: return KERN_DTYPE_Q4_0;
    case GGML_Q4_K: return KERN_DTYPE_Q4_K;
    case GGML_Q5_K: return KERN_DTYPE_Q5_K;
    case GGML_Q6_K: return KERN_DTYPE_Q6_K;
    default: return -1;
    }
}

/* Takes ownership of buf (freed with the model); -1 (buf freed) when out of memory. */
static int own(struct eng_model *m, void *buf, char *err, size_t errlen)
{
    void **b = realloc(m->gguf_bufs, (size_t)(m->n_gguf_bufs + 1) * sizeof *b);
    if (!b) {
        free(buf);
        eng_set_err(err, errlen, "out of memory");
        return -1;
    }
    m->gguf_bufs = b;
    b[m->n_gguf_bufs++] = buf;
    return 0;
}

/* Conversion work: pieces of CONVERT_PIECE_ROWS rows taken by the threads in turn. */
#define CONVERT_PIECE_ROWS 64
#define CONVERT_MAX_THREADS 64

struct convert_work {
    const struct eng_gguf_tensor *t;
    bool to_f32;
    int64_t ne0, rows;
    size_t src_row, dst_row;
    uint8_t *dst;
    atomic_int_fast64_t next;   /* the next piece to take */
    atomic_int_fast64_t failed; /* the lowest row that failed (-1: out of memory), or INT64_MAX */
};

static void fail_row(struct convert_work *cw, int64_t r)
{
    int_fast64_t cur = atomic_load(&cw->failed);
    while (r < cur && !atomic_compare_exchange_weak(&cw->failed, &cur, r))
        ;
}

static void *convert_pieces(void *arg)
{
    struct convert_work *cw = arg;
    float *tmp = cw->to_f32 ? NULL : malloc((size_t)cw->ne0 * sizeof *tmp);
    if (!cw->to_f32 && !tmp) {
        fail_row(cw, -1);
        return NULL;
    }
    int64_t n_pieces = (cw->rows + CONVERT_PIECE_ROWS - 1) / CONVERT_PIECE_ROWS;
    for (int64_t p; (p = atomic_fetch_add(&cw->next, 1)) < n_pieces;) {
        int64_t r1 = (p + 1) * CONVERT_PIECE_ROWS < cw->rows ? (p + 1) * CONVERT_PIECE_ROWS : cw->rows;
        for (int64_t r = p * CONVERT_PIECE_ROWS; r < r1; r++) {
            const uint8_t *src = (const uint8_t *)cw->t->data + (size_t)r * cw->src_row;
            uint8_t *out = cw->dst + (size_t)r * cw->dst_row;
            float *f = cw->to_f32 ? (float *)out : tmp;
            int bad = eng_gguf_dequant_row(cw->t->ggml_type, src, cw->ne0, f) != 0;
            for (int64_t i = 0; !bad && i < cw->ne0; i++)
                bad = !isfinite(f[i]);
            if (!bad && !cw->to_f32)
                bad = kern_quantize(f, KERN_DTYPE_F32, 1, cw->ne0, KERN_DTYPE_Q8_0, out) != KERN_OK;
            if (bad)
                fail_row(cw, r);
        }
    }
    free(tmp);
    return NULL;
}

/* A tensor of a block type without kernels, rows of ne0 elements, widened exactly by
 * eng_gguf_dequant_row: requantized to Q8_0 row by row through fp32 (one more rounding: at most
 * half a Q8_0 step of its block's largest magnitude), or with to_f32 kept as those fp32 values
 * (the embedding).
 * Every online CPU takes pieces of rows (the bytes do not depend on how). */
static int convert(struct eng_model *m, const struct eng_gguf_tensor *t, bool to_f32,
                   struct eng_weight *w, char *err, size_t errlen)
{
    struct convert_work cw = {.t = t, .to_f32 = to_f32, .ne0 = t->ne[0],
                              .rows = t->ne[1] * t->ne[2] * t->ne[3]};
    cw.src_row = (size_t)(t->n_bytes / (uint64_t)cw.rows);
    /* Both sizes are at most 34/32 or 4 bytes per element of a tensor that lies in the file
     * as at least 1/8 byte per element (Q2_K is 84 bytes per 256): no overflow on 64 bits. */
    cw.dst_row = to_f32 ? (size_t)cw.ne0 * sizeof(float)
                        : (size_t)kern_dtype_row_bytes(KERN_DTYPE_Q8_0, cw.ne0);
    cw.dst = malloc(cw.dst_row * (size_t)cw.rows);
    if (!cw.dst) {
        eng_set_err(err, errlen, "out of memory converting '%s'", t->name);
        return -1;
    }
    atomic_init(&cw.next, 0);
    atomic_init(&cw.failed, INT64_MAX);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t n_threads = cpus < 1 ? 1 : cpus > CONVERT_MAX_THREADS ? CONVERT_MAX_THREADS : cpus;
    int64_t n_pieces = (cw.rows + CONVERT_PIECE_ROWS - 1) / CONVERT_PIECE_ROWS;
    if (n_threads > n_pieces)
        n_threads = n_pieces;
    pthread_t th[CONVERT_MAX_THREADS];
    int started = 0;
    while (started < n_threads - 1 && pthread_create(&th[started], NULL, convert_pieces, &cw) == 0)
        started++;
    convert_pieces(&cw); /* the calling thread works too; a thread not started leaves its share */
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    int_fast64_t failed = atomic_load(&cw.failed);
    if (failed != INT64_MAX) {
        free(cw.dst);
        const char *tn = eng_gguf_type_name(t->ggml_type);
        if (failed < 0)
            eng_set_err(err, errlen, "out of memory converting '%s'", t->name);
        else
            eng_set_err(err, errlen, "GGUF: tensor '%s' (%s) row %lld has a non-finite value or a "
                        "scale Q8_0 cannot hold", t->name, tn ? tn : "?", (long long)failed);
        return -1;
    }
    if (own(m, cw.dst, err, errlen) != 0)
        return -1;
    w->data = cw.dst;
    w->dtype = to_f32 ? KERN_DTYPE_F32 : KERN_DTYPE_Q8_0;
    w->n_bytes = cw.dst_row * (size_t)cw.rows;
    return 0;
}

/* Binds tensor name, whose GGUF dims (innermost first) must be exactly ne[0..n_dims). Block
 * types only where block_ok (matrices; the norms are float vectors): those the kernels read
 * (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K) as stored, the others eng_gguf_dequant_row widens requantized
 * to Q8_0 (convert). */
static int bind_t(struct eng_model *m, const char *name, int n_dims, const int64_t *ne,
                  bool block_ok, struct eng_weight *w, char *err, size_t errlen)
{
    const struct eng_gguf_tensor *t = eng_gguf_find_tensor(m->gguf, name);
    if (!t) {
        eng_set_err(err, errlen, "GGUF: tensor '%s' is missing", name);
        return -1;
    }
    bool ok = t->n_dims == n_dims;
    for (int i = 0; ok && i < n_dims; i++)
        ok = t->ne[i] == ne[i];
    if (!ok) {
        eng_set_err(err, errlen, "GGUF: tensor '%s' has dims [%lld, %lld, %lld, %lld] (%d used), "
                    "expected [%lld, %lld]", name, (long long)t->ne[0], (long long)t->ne[1],
                    (long long)t->ne[2], (long long)t->ne[3], t->n_dims, (long long)ne[0],
                    n_dims > 1 ? (long long)ne[1] : 1LL);
        return -1;
    }
    int dt = dtype_of(t->ggml_type);
    const char *tn = eng_gguf_type_name(t->ggml_type);
    if (block_ok && dt < 0 && eng_gguf_dequant_supported(t->ggml_type))
        return convert(m, t, false, w, err, errlen);
    if (dt < 0 || (!block_ok && kern_dtype_block_elems((enum kern_dtype)dt) != 0)) {
        eng_set_err(err, errlen, "GGUF: tensor '%s' has type %s; phiserve reads %s", name,
                    tn ? tn : "?", block_ok ? "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and "
                                              "the K-quants Q2_K to Q6_K for matrices"
                                            : "F32, F16 and BF16 vectors");
        return -1;
    }
    w->data = t->data;
    w->dtype = (enum kern_dtype)dt;
    w->n_bytes = (size_t)t->n_bytes;
    return 0;
}

/* A matrix [rows, cols] in the nn.Linear layout: GGUF dims (cols, rows). */
static int bind_mat(struct eng_model *m, const char *name, int64_t rows, int64_t cols,
                    struct eng_weight *w, char *err, size_t errlen)
{
    int64_t ne[2] = {cols, rows};
    return bind_t(m, name, 2, ne, true, w, err, errlen);
}

static int bind_vec(struct eng_model *m, const char *name, int64_t n, struct eng_weight *w,
                    char *err, size_t errlen)
{
    int64_t ne[1] = {n};
    return bind_t(m, name, 1, ne, false, w, err, errlen);
}

/* A growable text buffer for the synthesized config.json. */
struct text {
    char *p;
    size_t len, cap;
    bool oom;
};

__attribute__((format(printf, 2, 3))) static void put(struct text *t, const char *fmt, ...)
{
    for (int pass = 0; pass < 2 && !t->oom; pass++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = true;
            return;
        }
        if (t->p && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap ? t->cap : 256) + (size_t)n + 256;
        char *np = realloc(t->p, cap);
        if (!np) {
            t->oom = true;
            return;
        }
        t->p = np;
        t->cap = cap;
    }
}

/* An optional integer key: put '"field": value' when present, -1 on a bad value. */
static int put_u32(struct text *t, const struct eng_gguf *g, const char *key, const char *field,
                   bool required, char *err, size_t errlen)
{
    uint32_t v;
    if (!eng_gguf_find_kv(g, key)) {
        if (required) {
            eng_set_err(err, errlen, "GGUF: metadata key '%s' is missing", key);
            return -1;
        }
        return 0;
    }
    if (eng_gguf_get_u32(g, key, &v, err, errlen) != 0)
        return -1;
    put(t, ",\"%s\":%u", field, v);
    return 0;
}

static int put_f32(struct text *t, const struct eng_gguf *g, const char *key, const char *field,
                   char *err, size_t errlen)
{
    float v;
    if (!eng_gguf_find_kv(g, key))
        return 0;
    if (eng_gguf_get_f32(g, key, &v, err, errlen) != 0)
        return -1;
    if (!isfinite(v)) {
        eng_set_err(err, errlen, "GGUF: metadata key '%s' is not finite", key);
        return -1;
    }
    put(t, ",\"%s\":%.9g", field, (double)v);
    return 0;
}

/* '"name":[f0,...]' from a 1-D F32 tensor of n values. */
static int put_factors(struct text *t, const struct eng_gguf *g, const char *tensor,
                       const char *field, int64_t n, char *err, size_t errlen)
{
    const struct eng_gguf_tensor *f = eng_gguf_find_tensor(g, tensor);
    if (!f || f->ggml_type != GGML_F32 || f->n_dims != 1 || f->ne[0] != n) {
        eng_set_err(err, errlen, "GGUF: LongRoPE needs '%s' as F32 of %lld values", tensor,
                    (long long)n);
        return -1;
    }
    put(t, ",\"%s\":[", field);
    for (int64_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, (const char *)f->data + i * 4, sizeof v);
        put(t, "%s%.9g", i ? "," : "", (double)v); /* non-finite values fail the parser */
    }
    put(t, "]");
    return 0;
}

/* The eos ids: tokenizer.ggml.eos_token_id and .eot_token_id, and the Phi-3 chat's end
 * tokens <|end|> and <|endoftext|> where the vocabulary has them as special (control or
 * user-defined) tokens, which is what Phi-3's generation_config.json lists. */
static int put_eos(struct text *t, const struct eng_gguf *g, char *err, size_t errlen)
{
    put(t, ",\"eos_token_id\":[");
    int n = 0;
    static const char *const keys[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        uint32_t id;
        if (!eng_gguf_find_kv(g, keys[i]))
            continue;
        if (eng_gguf_get_u32(g, keys[i], &id, err, errlen) != 0)
            return -1;
        put(t, "%s%u", n++ ? "," : "", id);
    }
    const struct eng_gguf_kv *tokens = eng_gguf_find_kv(g, "tokenizer.ggml.tokens");
    const struct eng_gguf_kv *types = eng_gguf_find_kv(g, "tokenizer.ggml.token_type");
    if (tokens && types && tokens->type == ENG_GGUF_ARRAY && types->type == ENG_GGUF_ARRAY &&
        tokens->elem_type == ENG_GGUF_STRING && types->elem_type == ENG_GGUF_I32 &&
        types->count == tokens->count) {
        static const char *const ends[] = {"<|end|>", "<|endoftext|>"};
        for (uint64_t id = 0; id < tokens->count; id++) {
            struct eng_gguf_str s;
            int32_t ty;
            if (eng_gguf_array_i32(types, id, &ty) != 0 ||
                (ty != GGUF_TOKEN_CONTROL && ty != GGUF_TOKEN_USER_DEFINED) ||
                eng_gguf_array_str(g, tokens, id, &s) != 0)
                continue;
            for (size_t e = 0; e < sizeof ends / sizeof ends[0]; e++)
                if (s.len == strlen(ends[e]) && memcmp(s.data, ends[e], s.len) == 0)
                    put(t, "%s%llu", n++ ? "," : "", (unsigned long long)id);
        }
    }
    put(t, "]");
    return 0;
}

/* config.json as Hugging Face writes it for this file's model, from the phi3.* metadata and
 * the tensors' shapes (vocab from token_embd, tie from a missing output.weight, LongRoPE from
 * the rope_factors tensors), then parsed by eng_model_config_parse. */
static int gguf_config(const struct eng_gguf *g, struct eng_model_config *cfg, char *err,
                       size_t errlen)
{
    struct eng_gguf_str arch;
    if (eng_gguf_get_str(g, "general.architecture", &arch, err, errlen) != 0)
        return -1;
    if (arch.len != 4 || memcmp(arch.data, "phi3", 4) != 0) {
        eng_set_err(err, errlen, "GGUF: architecture '%.*s' is not supported (only phi3: Phi-3 and "
                    "Phi-3.5-mini; use the Hugging Face checkpoint for the others)",
                    (int)(arch.len > 64 ? 64 : arch.len), arch.data);
        return -1;
    }
    const struct eng_gguf_tensor *emb = eng_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2) {
        eng_set_err(err, errlen, "GGUF: tensor 'token_embd.weight' is missing or not a matrix");
        return -1;
    }
    uint32_t heads = 0, hidden = 0, rot = 0;
    bool rot_given = eng_gguf_find_kv(g, "phi3.rope.dimension_count") != NULL;
    if (eng_gguf_get_u32(g, "phi3.attention.head_count", &heads, err, errlen) != 0 ||
        eng_gguf_get_u32(g, "phi3.embedding_length", &hidden, err, errlen) != 0 ||
        (rot_given && eng_gguf_get_u32(g, "phi3.rope.dimension_count", &rot, err, errlen) != 0))
        return -1;
    const struct eng_gguf_kv *tokens = eng_gguf_find_kv(g, "tokenizer.ggml.tokens");
    if (tokens && (uint64_t)emb->ne[1] != tokens->count) {
        eng_set_err(err, errlen, "GGUF: token_embd.weight has %lld rows but the vocabulary %llu "
                    "tokens", (long long)emb->ne[1], (unsigned long long)tokens->count);
        return -1;
    }
    uint32_t window = 0;
    if (eng_gguf_find_kv(g, "phi3.attention.sliding_window") &&
        eng_gguf_get_u32(g, "phi3.attention.sliding_window", &window, err, errlen) != 0)
        return -1;

    struct text t = {0};
    put(&t, "{\"architectures\":[\"Phi3ForCausalLM\"],\"model_type\":\"phi3\"");
    put(&t, ",\"vocab_size\":%lld", (long long)emb->ne[1]);
    put(&t, ",\"tie_word_embeddings\":%s", eng_gguf_find_tensor(g, "output.weight") ? "false" : "true");
    if (window)
        put(&t, ",\"sliding_window\":%u", window);
    int rc = put_u32(&t, g, "phi3.embedding_length", "hidden_size", true, err, errlen) ||
             put_u32(&t, g, "phi3.feed_forward_length", "intermediate_size", true, err, errlen) ||
             put_u32(&t, g, "phi3.block_count", "num_hidden_layers", true, err, errlen) ||
             put_u32(&t, g, "phi3.attention.head_count", "num_attention_heads", true, err, errlen) ||
             put_u32(&t, g, "phi3.attention.head_count_kv", "num_key_value_heads", false, err, errlen) ||
             put_u32(&t, g, "phi3.context_length", "max_position_embeddings", true, err, errlen) ||
             put_u32(&t, g, "phi3.rope.scaling.original_context_length",
                     "original_max_position_embeddings", false, err, errlen) ||
             put_f32(&t, g, "phi3.attention.layer_norm_rms_epsilon", "rms_norm_eps", err, errlen) ||
             put_f32(&t, g, "phi3.rope.freq_base", "rope_theta", err, errlen) ||
             put_u32(&t, g, "tokenizer.ggml.bos_token_id", "bos_token_id", false, err, errlen) ||
             put_u32(&t, g, "tokenizer.ggml.padding_token_id", "pad_token_id", false, err, errlen) ||
             put_eos(&t, g, err, errlen)
                 ? -1 : 0;
    bool longrope = eng_gguf_find_tensor(g, "rope_factors_long.weight") ||
                    eng_gguf_find_tensor(g, "rope_factors_short.weight");
    if (rc == 0 && longrope) {
        int64_t half = heads ? (int64_t)(hidden / heads) / 2 : 0;
        put(&t, ",\"rope_scaling\":{\"type\":\"longrope\"");
        rc = put_factors(&t, g, "rope_factors_short.weight", "short_factor", half, err, errlen) ||
             put_factors(&t, g, "rope_factors_long.weight", "long_factor", half, err, errlen) ||
             put_f32(&t, g, "phi3.rope.scaling.attn_factor", "attention_factor", err, errlen)
                 ? -1 : 0;
        put(&t, "}");
    }
    put(&t, "}");
    if (rc == 0 && t.oom) {
        eng_set_err(err, errlen, "out of memory");
        rc = -1;
    }
    if (rc == 0) {
        char msg[384];
        if (eng_model_config_parse(t.p, t.len, cfg, msg, sizeof msg) != 0) {
            eng_set_err(err, errlen, "GGUF: the phi3 metadata, read as %s", msg);
            rc = -1;
        } else if (rot_given && rot != cfg->head_dim) {
            /* partial_rotary_factor would not round-trip through a decimal; Phi-3 rotates
             * whole heads. */
            eng_set_err(err, errlen, "GGUF: phi3.rope.dimension_count %u is not the head size "
                        "%lld (partial rotary is not supported)", rot, (long long)cfg->head_dim);
            rc = -1;
        }
    }
    free(t.p);
    return rc;
}

/* The embedding as the embed op reads it: the types the kernels read (floats, Q8_0, Q4_0 and
 * the K formats) as stored; another block type widened to fp32 into a buffer the model owns
 * (convert: exact, the values the blocks stand for). */
static int bind_embed(struct eng_model *m, char *err, size_t errlen)
{
    int64_t V = m->cfg.vocab_size, H = m->cfg.hidden_size;
    const struct eng_gguf_tensor *t = eng_gguf_find_tensor(m->gguf, "token_embd.weight");
    if (t && dtype_of(t->ggml_type) < 0 && eng_gguf_dequant_supported(t->ggml_type) &&
        t->n_dims == 2 && t->ne[0] == H && t->ne[1] == V)
        return convert(m, t, true, &m->embed, err, errlen);
    int64_t ne[2] = {H, V};
    return bind_t(m, "token_embd.weight", 2, ne, true, &m->embed, err, errlen);
}

static int bind_gguf_model(struct eng_model *m, char *err, size_t errlen)
{
    const struct eng_model_config *c = &m->cfg;
    int64_t H = c->hidden_size, I = c->intermediate_size, hd = c->head_dim;
    int64_t q_width = c->num_attention_heads * hd;
    int64_t qkv_width = q_width + 2 * c->num_key_value_heads * hd;
    if (bind_embed(m, err, errlen) != 0 ||
        bind_vec(m, "output_norm.weight", H, &m->final_norm, err, errlen) != 0)
        return -1;
    if (c->tie_word_embeddings)
        m->lm_head = m->embed;
    else if (bind_mat(m, "output.weight", c->vocab_size, H, &m->lm_head, err, errlen) != 0)
        return -1;
    m->layers = calloc((size_t)c->num_hidden_layers, sizeof *m->layers);
    if (!m->layers) {
        eng_set_err(err, errlen, "out of memory");
        return -1;
    }
    for (int64_t i = 0; i < c->num_hidden_layers; i++) {
        struct eng_phi3_layer *L = &m->layers[i];
        char name[96];
#define BLK(suffix) (snprintf(name, sizeof name, "blk.%lld.%s", (long long)i, suffix), name)
        if (bind_vec(m, BLK("attn_norm.weight"), H, &L->input_norm, err, errlen) != 0 ||
            bind_mat(m, BLK("attn_qkv.weight"), qkv_width, H, &L->qkv, err, errlen) != 0 ||
            bind_mat(m, BLK("attn_output.weight"), H, q_width, &L->o, err, errlen) != 0 ||
            bind_vec(m, BLK("ffn_norm.weight"), H, &L->post_norm, err, errlen) != 0 ||
            bind_mat(m, BLK("ffn_up.weight"), 2 * I, H, &L->gate_up, err, errlen) != 0 ||
            bind_mat(m, BLK("ffn_down.weight"), H, I, &L->down, err, errlen) != 0)
            return -1;
#undef BLK
    }
    return 0;
}

int eng_model_load_gguf(const char *path, struct eng_model **out, char *err, size_t errlen)
{
    *out = NULL;
    struct eng_model *m = calloc(1, sizeof *m);
    if (!m) {
        eng_set_err(err, errlen, "out of memory");
        return -1;
    }
    char msg[512];
    if (eng_gguf_open_file(path, &m->gguf, msg, sizeof msg) != 0) {
        /* Callers name the model path already: drop the reader's "path: " prefix. */
        size_t n = strlen(path);
        bool prefixed = strncmp(msg, path, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ';
        eng_set_err(err, errlen, "%s", prefixed ? msg + n + 2 : msg);
        eng_model_destroy(m);
        return -1;
    }
    if (gguf_config(m->gguf, &m->cfg, err, errlen) != 0 ||
        bind_gguf_model(m, err, errlen) != 0 || eng_model_init_rope(m, err, errlen) != 0) {
        eng_model_destroy(m);
        return -1;
    }
    *out = m;
    return 0;
}
