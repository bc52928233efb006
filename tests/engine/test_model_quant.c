/* Tests engine/model_quant.c's int8_dot (--int8-activations) on the fixture models: the dense
 * matrices in the R16 layout holding exactly the plain quantization's bytes (or a GGUF file's,
 * moved; Q4_K's and Q5_K's with their scales unpacked), the experts untouched, the refusal
 * without Q8_0 / Q4_0 / K-quant matrices, and the forward pass: finite logits near the plain
 * path's on the cpu backend, and the ref backend's equal to the cpu backend's. Not a test of
 * the int8 matmul itself (tests/kernels checks it op by op). Usage: test_model_quant
 * FIXTURES_DIR */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "kv_cache.h"
#include "model.h"
#include "models/phi3.h"

#include "../test_util.h"

static const char *fixtures;

static struct eng_model *load(const char *model, const char *file, enum eng_quant q,
                              bool int8_dot)
{
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/models/%s%s%s", fixtures, model, file ? "/" : "",
             file ? file : "");
    struct eng_model *m = NULL;
    if (eng_model_load(path, &m, err, sizeof err) != 0) {
        fprintf(stderr, "load %s: %s\n", path, err);
        exit(1);
    }
    if (eng_model_quantize(m, q, int8_dot, 2, err, sizeof err) != 0) {
        fprintf(stderr, "quantize %s (%s%s): %s\n", path, eng_quant_name(q),
                int8_dot ? ", int8" : "", err);
        exit(1);
    }
    return m;
}

/* ---- the dense matrices (what the matmul op reads) and the R16 layout ---- */

#define MAX_DENSE 64

struct dense {
    struct eng_weight *w;
    int64_t k;
    char name[48];
};

/* The matrices int8_dot interleaves, in a fixed order: per layer qkv, gate_up, down (or
 * phimoe's q, k, v), o; then an untied lm_head. Returns the count. */
static int dense_of(struct eng_model *m, struct dense *d)
{
    const struct eng_model_config *c = &m->cfg;
    int n = 0;
    for (int64_t i = 0; i < c->num_hidden_layers; i++) {
        struct eng_phi3_layer *L = &m->layers[i];
        struct {
            struct eng_weight *w;
            int64_t k;
            const char *name;
        } lw[] = {{&L->qkv, c->hidden_size, "qkv"}, {&L->gate_up, c->hidden_size, "gate_up"},
                  {&L->down, c->intermediate_size, "down"}, {&L->q, c->hidden_size, "q"},
                  {&L->k, c->hidden_size, "k"}, {&L->v, c->hidden_size, "v"},
                  {&L->o, c->num_attention_heads * c->head_dim, "o"}};
        for (size_t j = 0; j < sizeof lw / sizeof lw[0] && n < MAX_DENSE; j++) {
            if (!lw[j].w->data)
                continue;
            d[n] = (struct dense){lw[j].w, lw[j].k, ""};
            snprintf(d[n++].name, sizeof d[0].name, "layer %lld %s", (long long)i, lw[j].name);
        }
    }
    if (m->lm_head.data != m->embed.data && n < MAX_DENSE)
        d[n++] = (struct dense){&m->lm_head, c->hidden_size, "lm_head"};
    return n;
}

/* Un-interleaves an R16 matrix of `rows` rows of k into its plain format, written from the
 * layout ops.h describes (not with the kernels' code): per group of 16 rows and per block,
 * the 16 scales, then piece t of the 16 rows side by side. *pad_ok says whether every padding
 * row of the last group has scale 0 and the values ops.h gives it (bytes 0, or Q4_0's 8s). */
static void unpack_r16(const uint8_t *src, enum kern_dtype r16, int64_t rows, int64_t k,
                       uint8_t *plain, bool *pad_ok)
{
    enum kern_dtype base = kern_dtype_r16_base(r16);
    const size_t bb = (size_t)kern_dtype_row_bytes(base, KERN_QBLOCK);
    const size_t row_bytes = (size_t)kern_dtype_row_bytes(base, k), n_pieces = (bb - 2) / 4;
    const int64_t n_padded = (rows + KERN_R16 - 1) / KERN_R16 * KERN_R16;
    *pad_ok = true;
    for (int64_t j = 0; j < n_padded; j++) {
        const uint8_t *group = src + (size_t)(j / KERN_R16) * KERN_R16 * row_bytes;
        size_t r = (size_t)(j % KERN_R16);
        for (int64_t b = 0; b < k / KERN_QBLOCK; b++) {
            const uint8_t *g = group + (size_t)b * KERN_R16 * bb;
            uint8_t blk[KERN_Q8_0_BLOCK_BYTES] = {0};
            memcpy(blk, g + 2 * r, 2);
            for (size_t t = 0; t < n_pieces; t++)
                memcpy(blk + 2 + 4 * t, g + 2 * KERN_R16 + t * KERN_R16 * 4 + r * 4, 4);
            if (j < rows) {
                memcpy(plain + (size_t)j * row_bytes + (size_t)b * bb, blk, bb);
                continue;
            }
            bool ok = blk[0] == 0 && blk[1] == 0;
            for (size_t e = 2; e < bb; e++)
                ok = ok && (blk[e] == 0 || (base == KERN_DTYPE_Q4_0 && blk[e] == 0x88));
            *pad_ok = *pad_ok && ok;
        }
    }
}

/* Q4_K_R16 / Q5_K_R16 (q5) against its plain rows, from ops.h's layout: per group of 16 rows
 * and super-block, the d and dmin bytes, the scales and mins unpacked (kern_k_scale_min of the
 * plain block), the nibble pieces, Q5_K's qh pieces; padding rows all zero. */
static bool kq_r16_matches(int q5, const uint8_t *src, const uint8_t *plain, int64_t rows,
                           int64_t k)
{
    const int64_t nsb = k / KERN_QKBLOCK, n_padded = (rows + KERN_R16 - 1) / KERN_R16 * KERN_R16;
    const size_t sb_bytes =
        (size_t)KERN_R16 * (q5 ? KERN_Q5_K_R16_ROW_BYTES : KERN_Q4_K_R16_ROW_BYTES);
    const size_t sb_in = q5 ? KERN_Q5_K_BLOCK_BYTES : KERN_Q4_K_BLOCK_BYTES, qs = q5 ? 48 : 16;
    bool ok = true;
    for (int64_t j = 0; j < n_padded; j++) {
        size_t r = (size_t)(j % KERN_R16);
        for (int64_t s = 0; s < nsb; s++) {
            const uint8_t *g = src + (size_t)((j / KERN_R16) * nsb + s) * sb_bytes;
            static const uint8_t zero[KERN_Q5_K_BLOCK_BYTES];
            const uint8_t *b = j < rows ? plain + (size_t)(j * nsb + s) * sb_in : zero;
            ok = ok && memcmp(g + 2 * r, b, 2) == 0 && memcmp(g + 32 + 2 * r, b + 2, 2) == 0;
            for (int sub = 0; sub < 8; sub++) {
                int sc = 0, mn = 0;
                if (j < rows)
                    kern_k_scale_min(b + 4, sub, &sc, &mn);
                ok = ok && g[64 + 16 * sub + r] == sc && g[192 + 16 * sub + r] == mn;
            }
            /* Q5_K: the first eight nibble pieces each followed by a qh piece */
            for (int c = 0; c < 4; c++)
                for (int t = 0; t < 8; t++) {
                    size_t at = !q5 ? 320 + 64 * (8 * c + t)
                                    : c ? 832 + 64 * (8 * c + t) : 320 + 128 * t;
                    ok = ok && memcmp(g + at + 4 * r, b + qs + 32 * c + 4 * t, 4) == 0;
                }
            for (int t = 0; q5 && t < 8; t++)
                ok = ok && memcmp(g + 384 + 128 * t + 4 * r, b + 16 + 4 * t, 4) == 0;
        }
    }
    return ok;
}

/* Q6_K_R16 against its plain rows, from ops.h's layout: per group of 16 rows and super-block,
 * the d bytes (the plain block's last two), the 16 int8 scales one sub-block apart, the ql and
 * qh bytes in 4-byte pieces, three pieces to a step; padding rows all zero. */
static bool q6k_r16_matches(const uint8_t *src, const uint8_t *plain, int64_t rows, int64_t k)
{
    const int64_t nsb = k / KERN_QKBLOCK, n_padded = (rows + KERN_R16 - 1) / KERN_R16 * KERN_R16;
    const size_t sb_bytes = (size_t)KERN_R16 * KERN_Q6_K_R16_ROW_BYTES;
    bool ok = true;
    for (int64_t j = 0; j < n_padded; j++) {
        size_t r = (size_t)(j % KERN_R16);
        for (int64_t s = 0; s < nsb; s++) {
            const uint8_t *g = src + (size_t)((j / KERN_R16) * nsb + s) * sb_bytes;
            static const uint8_t zero[KERN_Q6_K_BLOCK_BYTES];
            const uint8_t *b = j < rows ? plain + (size_t)(j * nsb + s) * KERN_Q6_K_BLOCK_BYTES
                                        : zero;
            ok = ok && memcmp(g + 2 * r, b + 208, 2) == 0;
            for (int sub = 0; sub < 16; sub++)
                ok = ok && g[32 + 16 * sub + r] == b[192 + sub];
            for (int st = 0; st < 16; st++) { /* step 8h + j: ql 64h + 4j, ql + 32, qh 32h + 4j */
                const uint8_t *at = g + 288 + 192 * st + 4 * r;
                const int h = st / 8, j = st % 8;
                ok = ok && memcmp(at, b + 64 * h + 4 * j, 4) == 0 &&
                     memcmp(at + 64, b + 64 * h + 32 + 4 * j, 4) == 0 &&
                     memcmp(at + 128, b + 128 + 32 * h + 4 * j, 4) == 0;
            }
        }
    }
    return ok;
}

/* Checks that w (in the int8 model) is the R16 form of plain (the same matrix in the plain
 * model, `rows` rows of k): dtype, size, and every byte of every row, padding zero. */
static void check_interleaved(const char *what, const struct eng_weight *w,
                              const struct eng_weight *plain, int64_t k)
{
    enum kern_dtype r16 = kern_dtype_r16_of(plain->dtype);
    if (r16 == KERN_DTYPE_COUNT || w->dtype != r16) {
        FAIL("%s: %s in the int8 model, %s in the plain one", what, kern_dtype_name(w->dtype),
             kern_dtype_name(plain->dtype));
        return;
    }
    int64_t row = kern_dtype_row_bytes(plain->dtype, k), rows = (int64_t)plain->n_bytes / row;
    CHECK(w->n_bytes == (size_t)kern_dtype_matrix_bytes(r16, rows, k),
          "%s: %zu bytes, kern_dtype_matrix_bytes says %lld", what, w->n_bytes,
          (long long)kern_dtype_matrix_bytes(r16, rows, k));
    if (r16 == KERN_DTYPE_Q4_K_R16 || r16 == KERN_DTYPE_Q5_K_R16) {
        CHECK(kq_r16_matches(r16 == KERN_DTYPE_Q5_K_R16, w->data, plain->data, rows, k),
              "%s: the interleaved rows are not the plain %s blocks (or padding not zero)", what,
              kern_dtype_name(plain->dtype));
        return;
    }
    if (r16 == KERN_DTYPE_Q6_K_R16) {
        CHECK(q6k_r16_matches(w->data, plain->data, rows, k),
              "%s: the interleaved rows are not the plain q6_k blocks (or padding not zero)", what);
        return;
    }
    uint8_t *un = tu_xcalloc(plain->n_bytes, 1);
    bool pad_ok;
    unpack_r16(w->data, r16, rows, k, un, &pad_ok);
    CHECK(memcmp(un, plain->data, plain->n_bytes) == 0,
          "%s: the interleaved rows are not the plain %s bytes", what,
          kern_dtype_name(plain->dtype));
    CHECK(pad_ok, "%s: a padding row of the last group is not zero", what);
    free(un);
}

/* The int8 model b against the plain model a (same file, same q): every dense matrix
 * interleaved, every expert as in a. Returns the number of R16 matrices. */
static int check_pair(const char *what, struct eng_model *a, struct eng_model *b)
{
    struct dense da[MAX_DENSE], db[MAX_DENSE];
    int n = dense_of(a, da), nb = dense_of(b, db), n_r16 = 0;
    CHECK(n == nb && n > 0, "%s: %d and %d dense matrices", what, n, nb);
    for (int i = 0; i < n && i < nb; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s %s", what, da[i].name);
        if (kern_dtype_r16_of(da[i].w->dtype) == KERN_DTYPE_COUNT) {
            /* not Q8_0 / Q4_0 in the plain model: stays as it is */
            CHECK(db[i].w->dtype == da[i].w->dtype && db[i].w->n_bytes == da[i].w->n_bytes &&
                      memcmp(db[i].w->data, da[i].w->data, da[i].w->n_bytes) == 0,
                  "%s: %s changed to %s", name, kern_dtype_name(da[i].w->dtype),
                  kern_dtype_name(db[i].w->dtype));
            continue;
        }
        check_interleaved(name, db[i].w, da[i].w, da[i].k);
        n_r16++;
    }
    int64_t n_experts = a->experts ? a->cfg.num_hidden_layers * 3 * a->cfg.num_local_experts : 0;
    for (int64_t j = 0; j < n_experts; j++) {
        const struct eng_weight *x = &a->experts[j], *y = &b->experts[j];
        CHECK(y->dtype == x->dtype && !kern_dtype_is_r16(y->dtype) && y->n_bytes == x->n_bytes &&
                  memcmp(y->data, x->data, x->n_bytes) == 0,
              "%s expert %lld: %s, the plain model's %s", what, (long long)j,
              kern_dtype_name(y->dtype), kern_dtype_name(x->dtype));
        CHECK(b->expert_ptrs_host[j] == y->data, "%s expert %lld: stale address", what,
              (long long)j);
    }
    CHECK(b->int8_dot && !a->int8_dot, "%s: int8_dot %d (int8) %d (plain)", what, b->int8_dot,
          a->int8_dot);
    /* the first block matrix is the lm_head's, the first layer's or (K-quant file) the
     * embedding's: never none */
    enum kern_dtype first = eng_model_block_dtype(b);
    CHECK(first != KERN_DTYPE_COUNT && (kern_dtype_is_r16(first) || first == a->embed.dtype),
          "%s: eng_model_block_dtype says %s", what, kern_dtype_name(first));
    return n_r16;
}

/* --quantization q8_0 / q4_0 with and without int8 on the directory fixtures. */
static void test_quantized_dirs(void)
{
    static const char *const models[] = {"mha-window", "gqa", "moe"};
    static const enum eng_quant qs[] = {ENG_QUANT_Q8_0, ENG_QUANT_Q4_0};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        for (size_t j = 0; j < 2; j++) {
            struct eng_model *a = load(models[i], NULL, qs[j], false);
            struct eng_model *b = load(models[i], NULL, qs[j], true);
            char what[64];
            snprintf(what, sizeof what, "%s %s", models[i], eng_quant_name(qs[j]));
            struct dense d[MAX_DENSE];
            int n = dense_of(a, d);
            CHECK(check_pair(what, a, b) == n, "%s: not every dense matrix interleaved", what);
            CHECK(b->quant == qs[j] && b->n_quant_kept == 0, "%s: quant %s, %lld kept", what,
                  eng_quant_name(b->quant), (long long)b->n_quant_kept);
            if (a->experts)
                CHECK(a->experts[0].dtype == (qs[j] == ENG_QUANT_Q8_0 ? KERN_DTYPE_Q8_0
                                                                      : KERN_DTYPE_Q4_0),
                      "%s: the experts are %s", what, kern_dtype_name(a->experts[0].dtype));
            eng_model_destroy(a);
            eng_model_destroy(b);
        }
    }
}

/* A row count that is not whole groups, and whose last 64-row piece is short: the fixtures'
 * matrices all have multiples of 64 rows, so the lm_head is cut to its first 500 rows (7
 * pieces and 52 rows: 3 groups and 4 rows of a fourth, 12 padding rows). */
static void test_partial_group(void)
{
    for (int j = 0; j < 2; j++) {
        enum eng_quant q = j ? ENG_QUANT_Q4_0 : ENG_QUANT_Q8_0;
        struct eng_model *m[2];
        char err[512];
        for (int v = 0; v < 2; v++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/models/mha-window", fixtures);
            if (eng_model_load(path, &m[v], err, sizeof err) != 0) {
                FAIL("load %s: %s", path, err);
                return;
            }
            int64_t H = m[v]->cfg.hidden_size;
            m[v]->lm_head.n_bytes = (size_t)(500 * kern_dtype_row_bytes(m[v]->lm_head.dtype, H));
            CHECK(eng_model_quantize(m[v], q, v == 1, 3, err, sizeof err) == 0, "%s", err);
        }
        char what[64];
        snprintf(what, sizeof what, "500-row lm_head %s", eng_quant_name(q));
        check_interleaved(what, &m[1]->lm_head, &m[0]->lm_head, m[0]->cfg.hidden_size);
        eng_model_destroy(m[0]);
        eng_model_destroy(m[1]);
    }
}

/* int8 without quantization: a float model is refused and left as it was. */
static void test_refusal(void)
{
    char path[4096], err[512] = "";
    snprintf(path, sizeof path, "%s/models/gqa", fixtures);
    struct eng_model *m = NULL;
    if (eng_model_load(path, &m, err, sizeof err) != 0) {
        FAIL("load %s: %s", path, err);
        return;
    }
    enum kern_dtype before = m->layers[0].qkv.dtype;
    const void *data = m->layers[0].qkv.data;
    CHECK(eng_model_quantize(m, ENG_QUANT_NONE, true, 0, err, sizeof err) == -1,
          "int8 on a %s model without quantization succeeded", kern_dtype_name(before));
    CHECK(strstr(err, "int8 activations need Q8_0, Q4_0, Q4_K, Q5_K or Q6_K weight matrices") &&
              strstr(err, "--quantization q8_0|q4_0"),
          "message '%s'", err);
    CHECK(!m->int8_dot && !m->quant_data && m->layers[0].qkv.dtype == before &&
              m->layers[0].qkv.data == data,
          "the refused model changed");
    /* and the model can still be quantized after the refusal */
    CHECK(eng_model_quantize(m, ENG_QUANT_Q8_0, true, 0, err, sizeof err) == 0, "%s", err);
    CHECK(m->int8_dot && m->layers[0].qkv.dtype == KERN_DTYPE_Q8_0_R16, "qkv is %s",
          kern_dtype_name(m->layers[0].qkv.dtype));
    eng_model_destroy(m);
}

/* Dense matrices of m in dtype dt. */
static int count_dtype(struct eng_model *m, enum kern_dtype dt)
{
    struct dense d[MAX_DENSE];
    int n = dense_of(m, d), c = 0;
    for (int i = 0; i < n; i++)
        c += d[i].w->dtype == dt;
    return c;
}

/* GGUF files: int8 without quantization moves a Q8_0 / Q4_0 / K-quant file's matrices into
 * the R16 layout byte for byte (Q4_K's and Q5_K's scales unpacked), and the one matrix
 * converted to Q8_0 at load is interleaved (and its converted buffer freed). With q8_0, the K
 * matrices are requantized and interleaved: the plain q8_0 bytes. */
static void test_gguf(void)
{
    static const char *const files[][2] = {{"mha-window", "gguf/q8_0.gguf"},
                                           {"mha-window", "gguf/q4_0.gguf"},
                                           {"longrope", "gguf/q4_0.gguf"},
                                           {"gqa", "gguf/kmix.gguf"}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        struct eng_model *a = load(files[i][0], files[i][1], ENG_QUANT_NONE, false);
        struct eng_model *b = load(files[i][0], files[i][1], ENG_QUANT_NONE, true);
        char what[96];
        snprintf(what, sizeof what, "%s/%s", files[i][0], files[i][1]);
        int n_r16 = check_pair(what, a, b);
        CHECK(n_r16 > 0 && b->quant == ENG_QUANT_NONE, "%s: %d R16 matrices", what, n_r16);
        /* every buffer the model still owns from the load is one that a weight reads */
        struct dense d[MAX_DENSE];
        int n = dense_of(b, d);
        for (int64_t k = 0; k < b->n_gguf_bufs; k++) {
            bool used = !b->gguf_bufs[k] || b->gguf_bufs[k] == b->embed.data;
            for (int j = 0; j < n && !used; j++)
                used = b->gguf_bufs[k] == d[j].w->data;
            CHECK(used, "%s: converted buffer %lld is held but no weight reads it", what,
                  (long long)k);
        }
        if (strstr(files[i][1], "kmix")) {
            /* every K format interleaved (each checked byte for byte above) */
            CHECK(n_r16 == n, "%s: %d of %d dense matrices interleaved", what, n_r16, n);
            CHECK(count_dtype(b, KERN_DTYPE_Q6_K_R16) > 0 && count_dtype(b, KERN_DTYPE_Q6_K) == 0,
                  "%s: %d q6_k_r16 and %d q6_k matrices", what, count_dtype(b, KERN_DTYPE_Q6_K_R16),
                  count_dtype(b, KERN_DTYPE_Q6_K));
            CHECK(count_dtype(b, KERN_DTYPE_Q5_K_R16) > 0 && count_dtype(b, KERN_DTYPE_Q5_K) == 0,
                  "%s: %d q5_k_r16 and %d q5_k matrices", what, count_dtype(b, KERN_DTYPE_Q5_K_R16),
                  count_dtype(b, KERN_DTYPE_Q5_K));
            CHECK(count_dtype(b, KERN_DTYPE_Q4_K_R16) > 0 && count_dtype(b, KERN_DTYPE_Q4_K) == 0,
                  "%s: %d q4_k_r16 and %d q4_k matrices", what, count_dtype(b, KERN_DTYPE_Q4_K_R16),
                  count_dtype(b, KERN_DTYPE_Q4_K));
            /* its Q5_0 matrix was converted to Q8_0 at load: that buffer is gone now */
            int64_t freed = 0;
            for (int64_t k = 0; k < b->n_gguf_bufs; k++)
                freed += !b->gguf_bufs[k];
            CHECK(freed == 1, "%s: %lld converted buffers freed, want 1", what, (long long)freed);
            struct eng_model *c = load(files[i][0], files[i][1], ENG_QUANT_Q8_0, false);
            struct eng_model *e = load(files[i][0], files[i][1], ENG_QUANT_Q8_0, true);
            snprintf(what, sizeof what, "%s/%s q8_0", files[i][0], files[i][1]);
            CHECK(check_pair(what, c, e) == n, "%s: not every dense matrix interleaved", what);
            eng_model_destroy(c);
            eng_model_destroy(e);
        } else {
            CHECK(n_r16 == n, "%s: %d of %d dense matrices interleaved", what, n_r16, n);
        }
        eng_model_destroy(a);
        eng_model_destroy(b);
    }
}

/* ---- the forward pass ---- */

#define N_TOKENS 40
#define N_PREFILL 32

/* Logits [N_TOKENS, V] of one sequence: the first N_PREFILL tokens in one prefill call (every
 * row's logits), then one token per call through the cache (the decode path, m = 1). */
static int run_logits(const struct eng_model *m, const char *device, float *out)
{
    const struct eng_model_config *c = &m->cfg;
    struct kern_ops ops;
    struct kern_ctx *ctx = NULL;
    kern_ops_init_ref(&ops);
    if (strcmp(device, "cpu") == 0) {
        kern_ops_init_cpu(&ops);
        ctx = kern_ctx_create_cpu(2);
    }
    const int64_t bs = 16, n_blocks = (N_TOKENS + bs - 1) / bs;
    struct eng_kv_cache *kv = NULL;
    char err[256];
    if (eng_kv_cache_create(c->num_hidden_layers, c->num_key_value_heads, c->head_dim, bs,
                            n_blocks, KERN_DTYPE_F32, &kv, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        kern_ctx_destroy(ctx);
        return -1;
    }
    int32_t table[8], ids[N_TOKENS], pos[N_TOKENS], rows[N_TOKENS];
    int64_t slots[N_TOKENS];
    for (int64_t b = 0; b < n_blocks; b++)
        eng_kv_cache_alloc_block(kv, &table[b]);
    for (int32_t t = 0; t < N_TOKENS; t++) {
        ids[t] = (int32_t)((t * 7919 + 13) % c->vocab_size);
        pos[t] = t;
        rows[t] = t;
        slots[t] = (int64_t)table[t / bs] * bs + t % bs;
    }
    struct eng_phi3_ws ws = {0};
    int rc = 0;
    for (int32_t t = 0; t < N_TOKENS && rc == 0; t = t ? t + 1 : N_PREFILL) {
        int32_t n = t ? 1 : N_PREFILL, qs = 0, cl = t + n;
        uint8_t var = ENG_ROPE_SHORT;
        struct eng_batch b = {
            .n_tokens = n, .token_ids = ids + t, .positions = pos + t, .slot_mapping = slots + t,
            .n_seqs = 1, .q_start = &qs, .q_len = &n, .ctx_len = &cl, .block_tables = table,
            .max_blocks = (int32_t)n_blocks, .rope_variant = &var, .n_logit_rows = n,
            .logit_rows = rows,
        };
        rc = eng_phi3_forward(m, &ops, ctx, kv, &b, &ws, out + (size_t)t * (size_t)c->vocab_size,
                              NULL);
    }
    eng_phi3_ws_free(&ws);
    eng_kv_cache_destroy(kv);
    kern_ctx_destroy(ctx);
    return rc;
}

/* Largest over rows of max |x - y| / max(1, max |y|) (the golden tests' row error), each
 * row's in rows[N_TOKENS] unless NULL, and whether every x is finite. */
static double worst_row_error(const float *x, const float *y, int64_t vocab, bool *finite,
                              double *rows)
{
    double worst = 0;
    *finite = true;
    for (int32_t r = 0; r < N_TOKENS; r++) {
        double scale = 1.0, err = 0;
        for (int64_t j = 0; j < vocab; j++) {
            size_t at = (size_t)r * (size_t)vocab + (size_t)j;
            scale = fmax(scale, fabs(y[at]));
            *finite = *finite && isfinite(x[at]);
            err = fmax(err, fabs((double)x[at] - y[at]));
        }
        worst = fmax(worst, err / scale);
        if (rows)
            rows[r] = err / scale;
    }
    return worst;
}

/* int8 against the plain path of the same quantization, and the ref backend against cpu.
 *
 * The bound for int8 is relative to what the plain path's own rounding does: rounding the
 * activations to 8-bit blocks is the same kind of error as rounding the weights to Q8_0
 * (half a step of 1/127 of a block's largest magnitude, on the other factor of each product),
 * so with q8_0 the int8 deviation must be of the order of q8_0's deviation from the
 * unquantized model, and with q4_0 (weights rounded to 1/7 of a block's range) below q4_0's.
 * The bound is that deviation times INT8_RATIO. Measured on these fixtures (worst row of 40,
 * relative to the row's largest logit): the ratio is 1.21-1.25 with q8_0, 0.07-0.49 with q4_0.
 * These random models amplify any rounding (q8_0 weights alone move their logits by 7%), so
 * the numbers are large; a wrong value in one interleaved block moves them far more. */
#define INT8_RATIO 2.0

/* The golden tests' tolerance for the ref and cpu backends against transformers (quantized
 * models included): both within 1e-4 of the truth, so within twice that of each other.
 *
 * With int8 that holds only until the backends round one activation differently: their fp32
 * activations differ by ~1e-7 (summation order), which now and then straddles a rounding
 * boundary of the int8 blocks, and that one step of one value (1/127 of its block's largest)
 * is amplified by these random models into a 1e-2 difference of every later row that attends
 * to it. Measured: mha-window q8_0, moe q8_0 and q4_0 within 6e-7 on all 40 rows; mha-window
 * q4_0 10 rows, gqa q8_0 19 and gqa q4_0 20 rows from 5e-3 to 3.4e-2 after such a step. So a
 * row is either within BACKEND_RTOL, or (a step of a few values) within the model's whole
 * int8 deviation, which rounds every value; and at least MIN_SAME_ROWS rows are within
 * BACKEND_RTOL, which a backend rounding by another rule (thousands of values per row) could
 * not give. */
#define BACKEND_RTOL 2e-4
#define MIN_SAME_ROWS (N_TOKENS / 4)

static void test_forward(void)
{
    static const char *const models[] = {"mha-window", "gqa", "moe"};
    static const enum eng_quant qs[] = {ENG_QUANT_Q8_0, ENG_QUANT_Q4_0};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        struct eng_model *f = load(models[i], NULL, ENG_QUANT_NONE, false);
        const int64_t V = f->cfg.vocab_size;
        const size_t n = (size_t)N_TOKENS * (size_t)V;
        float *lf = tu_xmalloc(n * sizeof *lf), *lp = tu_xmalloc(n * sizeof *lp);
        float *li = tu_xmalloc(n * sizeof *li), *lr = tu_xmalloc(n * sizeof *lr);
        CHECK(run_logits(f, "cpu", lf) == 0, "%s: float forward failed", models[i]);
        for (size_t j = 0; j < 2; j++) {
            struct eng_model *p = load(models[i], NULL, qs[j], false);
            struct eng_model *q = load(models[i], NULL, qs[j], true);
            struct eng_model *r = load(models[i], NULL, qs[j], true);
            const char *qn = eng_quant_name(qs[j]);
            CHECK(run_logits(p, "cpu", lp) == 0 && run_logits(q, "cpu", li) == 0 &&
                      run_logits(r, "ref", lr) == 0,
                  "%s %s: forward failed", models[i], qn);
            bool fin_p, fin_i, fin_r;
            double ref_rows[N_TOKENS];
            double weight_dev = worst_row_error(lp, lf, V, &fin_p, NULL);
            double int8_dev = worst_row_error(li, lp, V, &fin_i, NULL);
            double ref_dev = worst_row_error(lr, li, V, &fin_r, ref_rows);
            CHECK(fin_p && fin_i && fin_r, "%s %s: non-finite logits (plain %d, int8 %d, ref %d)",
                  models[i], qn, fin_p, fin_i, fin_r);
            /* int8 must change something (else the R16 path did not run) and stay within
             * the bound */
            CHECK(int8_dev > 0 && int8_dev <= INT8_RATIO * weight_dev,
                  "%s %s: int8 deviates %.3g from the plain path, whose own deviation from the "
                  "unquantized model is %.3g (bound: %.1fx that)",
                  models[i], qn, int8_dev, weight_dev, INT8_RATIO);
            int same = 0;
            for (int t = 0; t < N_TOKENS; t++) {
                same += ref_rows[t] <= BACKEND_RTOL;
                CHECK(ref_rows[t] <= BACKEND_RTOL || ref_rows[t] <= int8_dev,
                      "%s %s int8 row %d: ref deviates %.3g from cpu (> %.0e, and more than "
                      "int8's own %.3g)", models[i], qn, t, ref_rows[t], BACKEND_RTOL, int8_dev);
            }
            CHECK(same >= MIN_SAME_ROWS, "%s %s int8: ref and cpu agree within %.0e on %d of "
                  "%d rows only", models[i], qn, BACKEND_RTOL, same, N_TOKENS);
            printf("%s %s: worst row error (of the row's max |logit|) plain vs unquantized "
                   "%.3g, int8 vs plain %.3g (ratio %.2f); int8 ref vs cpu %.3g, %d of %d rows "
                   "within %.0e\n", models[i], qn, weight_dev, int8_dev, int8_dev / weight_dev,
                   ref_dev, same, N_TOKENS, BACKEND_RTOL);
            eng_model_destroy(p);
            eng_model_destroy(q);
            eng_model_destroy(r);
        }
        free(lf);
        free(lp);
        free(li);
        free(lr);
        eng_model_destroy(f);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    fixtures = argv[1];
    test_quantized_dirs();
    test_partial_group();
    test_refusal();
    test_gguf();
    test_forward();
    return tu_finish("test_model_quant");
}
