/* Golden test: a fixture model's logits and greedy continuations from transformers (fp32,
 * eager) against phiserve's forward pass on one backend. Usage: test_golden MODEL_DIR ref|cpu
 * [q8_0|q4_0] [gguf=FILE] (FILE: the same model as a llama.cpp GGUF file, its matrices stored
 * in the format named, compared with the same goldens), or test_golden MODEL_DIR ref|cpu
 * golden=NAME gguf=FILE (FILE as loaded, e.g. K-quants widened and requantized to Q8_0,
 * compared with golden/NAME/, which scripts/make_gguf_fixtures.py made from FILE's bytes; no
 * quantization, no quantized.json). Checks each case alone, all cases in one batch, a prompt
 * split into two chunks over the cache, and greedy generation alone and batched (token for
 * token). With q8_0 or q4_0 the model is quantized at load and compared with golden/<format>/
 * (scripts/make_quant_goldens.py: transformers run on the same checkpoint with those matrices
 * replaced by their dequantized values, so the tolerance stays the fp32 one), after checking
 * the quantized tensors against the script's checksums and verbatim blocks. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "generate.h"
#include "kv_cache.h"
#include "model.h"
#include "models/phi3.h"

#include "../test_util.h"

/* Tolerance on logits: everything is fp32 on both sides and only the summation order differs
 * (transformers' BLAS vs our loops), which gives relative errors around sqrt(k) * 2^-24 per
 * matmul, ~1e-6 for these sizes. 1e-4 of the row's largest magnitude leaves room for that
 * error to compound over layers, yet stays an order of magnitude below the fixtures' smallest
 * top-1 margin (>= 1e-3), so a greedy token can't flip within tolerance. */
#define LOGIT_RTOL 1e-4

/* Int8 activations round every dense layer's input to a grid, so an fp32 difference of an ulp
 * upstream (our summation order against transformers') flips a value that sits on a rounding
 * boundary, and these small random models carry one flip into several percent of the logits
 * of the rows after it (make_quant_goldens.py --int8 measures both: about 1 value in 2,500 sits
 * within 1e-4 of a boundary, and 1-ulp noise on the layer inputs moves up to 7% of the logits
 * of some rows). Row by row the fp32 tolerance cannot hold, so the rule is statistical: the
 * median over every compared row (prompt rows of all three runs, decode steps up to the first
 * token that differs from transformers') is within LOGIT_RTOL, and every value is finite. The
 * plain Q8_0 / Q4_0 path sits 3e-2 of the row scale (median) from these goldens, so running it
 * instead, or rounding at other layers, fails. */
#define INT8_MEDIAN_RTOL LOGIT_RTOL

/* Relative row errors collected in int8 mode (the median rule), or NULL in the others. */
static double *int8_errs;
static size_t int8_n, int8_cap;

static void int8_note(double rel)
{
    if (int8_n == int8_cap) {
        int8_cap = int8_cap ? 2 * int8_cap : 256;
        int8_errs = realloc(int8_errs, int8_cap * sizeof *int8_errs);
        if (!int8_errs) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
    }
    int8_errs[int8_n++] = rel;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct gcase {
    char name[64];
    int32_t *ids;
    int32_t n_ids;
    int32_t *rows;          /* prompt rows with stored logits */
    int32_t n_rows;
    float *logits;          /* [n_rows, vocab] */
    int32_t *greedy;
    int32_t n_greedy;
    float *step_logits;     /* [n_greedy, vocab] logits of each generation step, or NULL */
    int32_t n_sure;         /* greedy tokens determinate at the tolerance (see load_cases) */
    int32_t recompute_step; /* step at which transformers recomputed with long factors, or -1 */
};

static int32_t *int_array(const cJSON *a, int32_t *n)
{
    *n = cJSON_GetArraySize(a);
    int32_t *v = malloc((size_t)(*n ? *n : 1) * sizeof *v);
    for (int32_t i = 0; v && i < *n; i++)
        v[i] = (int32_t)cJSON_GetArrayItem(a, i)->valuedouble;
    return v;
}

static int load_cases(const char *dir, const char *gdir, int64_t vocab, struct gcase **out,
                      int *n_out)
{
    char path[4096];
    size_t len = 0;
    snprintf(path, sizeof path, "%s/%s/golden.json", dir, gdir);
    char *text = tu_read_file(path, &len);
    if (!text) {
        fprintf(stderr, "cannot read %s\n", path);
        return -1;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "vocab_size");
    if (!cJSON_IsArray(cases) || !cJSON_IsNumber(v) || (int64_t)v->valuedouble != vocab) {
        fprintf(stderr, "%s: bad golden.json (cases / vocab_size)\n", path);
        cJSON_Delete(root);
        return -1;
    }
    int n = cJSON_GetArraySize(cases);
    struct gcase *gc = calloc((size_t)n, sizeof *gc);
    for (int i = 0; i < n; i++) {
        const cJSON *c = cJSON_GetArrayItem(cases, i);
        struct gcase *g = &gc[i];
        snprintf(g->name, sizeof g->name, "%s", cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring);
        g->ids = int_array(cJSON_GetObjectItemCaseSensitive(c, "input_ids"), &g->n_ids);
        g->rows = int_array(cJSON_GetObjectItemCaseSensitive(c, "logit_rows"), &g->n_rows);
        g->greedy = int_array(cJSON_GetObjectItemCaseSensitive(c, "greedy"), &g->n_greedy);
        snprintf(path, sizeof path, "%s/%s/%s", dir, gdir,
                 cJSON_GetObjectItemCaseSensitive(c, "logits_file")->valuestring);
        g->logits = (float *)tu_read_file(path, &len);
        if (!g->logits || len != (size_t)g->n_rows * (size_t)vocab * sizeof(float)) {
            fprintf(stderr, "%s: missing or wrong size (%zu bytes)\n", path, len);
            cJSON_Delete(root);
            return -1;
        }
        const cJSON *steps = cJSON_GetObjectItemCaseSensitive(c, "step_logits_file");
        if (cJSON_IsString(steps)) {
            snprintf(path, sizeof path, "%s/%s/%s", dir, gdir, steps->valuestring);
            g->step_logits = (float *)tu_read_file(path, &len);
            if (!g->step_logits || len != (size_t)g->n_greedy * (size_t)vocab * sizeof(float)) {
                fprintf(stderr, "%s: missing or wrong size\n", path);
                cJSON_Delete(root);
                return -1;
            }
        }
        /* A step whose top-1 margin is within twice the tolerance of the row scale could go
         * either way for a backend inside the tolerance, and so could everything after it:
         * tokens are compared up to that step, logits up to and including it. The fp32
         * fixtures' margins are all far above it (make_fixtures.py picks their seeds); the
         * quantized goldens (same prompts, other weights) have a few such steps. */
        g->n_sure = g->n_greedy;
        const cJSON *margins = cJSON_GetObjectItemCaseSensitive(c, "greedy_margins");
        if (g->step_logits && cJSON_GetArraySize(margins) == g->n_greedy)
            for (int32_t t = 0; t < g->n_greedy && g->n_sure == g->n_greedy; t++) {
                const float *row = g->step_logits + (size_t)t * (size_t)vocab;
                double scale = 0;
                for (int64_t v = 0; v < vocab; v++)
                    scale = fmax(scale, fabs((double)row[v]));
                if (cJSON_GetArrayItem(margins, t)->valuedouble <= 2 * LOGIT_RTOL * scale)
                    g->n_sure = t;
            }
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(c, "recompute_step");
        g->recompute_step = cJSON_IsNumber(rs) ? (int32_t)rs->valuedouble : -1;
    }
    cJSON_Delete(root);
    *out = gc;
    *n_out = n;
    return 0;
}

/* transformers' rule for one forward call over a whole prompt: long iff it is longer than
 * original_max_position_embeddings. */
static uint8_t prompt_variant(const struct eng_model_config *c, int32_t n)
{
    return c->rope_type == ENG_ROPE_LONGROPE && n > c->original_max_position_embeddings
               ? ENG_ROPE_LONG : ENG_ROPE_SHORT;
}

/* Runs the given prompts as one batch. chunk > 0 first prefills each prompt's first `chunk`
 * tokens (no logits), then the rest. Blocks are handed out in a scattered order so block
 * tables are not contiguous. Writes every stored row's logits into out[case] (same layout as
 * the fixture). */
static int run_prefill(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                       struct gcase **cs, int n, int32_t chunk, float **out)
{
    const struct eng_model_config *c = &m->cfg;
    const int64_t bs = 16;
    int32_t max_blocks = 0, total = 0, total_rows = 0;
    for (int i = 0; i < n; i++) {
        int32_t nb = (int32_t)((cs[i]->n_ids + bs - 1) / bs);
        max_blocks = nb > max_blocks ? nb : max_blocks;
        total += cs[i]->n_ids;
        total_rows += cs[i]->n_rows;
    }
    int64_t n_blocks = (int64_t)n * max_blocks + 7;
    struct eng_kv_cache *kv = NULL;
    char err[256];
    if (eng_kv_cache_create(c->num_hidden_layers, c->num_key_value_heads, c->head_dim, bs, n_blocks,
                            KERN_DTYPE_F32, &kv, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    /* Take a few blocks first and keep them, so the sequences' blocks start mid-pool. */
    int32_t spare[7], tables_n = n * max_blocks;
    for (int i = 0; i < 7; i++)
        eng_kv_cache_alloc_block(kv, &spare[i]);
    int32_t *tables = calloc((size_t)tables_n, sizeof *tables);
    for (int i = n - 1; i >= 0; i--)           /* reverse order: later sequences get lower ids */
        for (int32_t b = max_blocks - 1; b >= 0; b--)
            eng_kv_cache_alloc_block(kv, &tables[i * max_blocks + b]);

    int32_t *ids = malloc((size_t)total * sizeof *ids), *pos = malloc((size_t)total * sizeof *pos);
    int64_t *slots = malloc((size_t)total * sizeof *slots);
    int32_t qs[64], ql[64], cl[64];
    uint8_t var[64];
    int32_t *rows = malloc((size_t)(total_rows ? total_rows : 1) * sizeof *rows);
    int32_t *row_case = malloc((size_t)(total_rows ? total_rows : 1) * sizeof *row_case);
    int32_t *row_r = malloc((size_t)(total_rows ? total_rows : 1) * sizeof *row_r);
    float *logits = malloc((size_t)(total_rows ? total_rows : 1) * (size_t)c->vocab_size * sizeof *logits);
    struct eng_phi3_ws ws = {0};
    int rc = 0;

    for (int pass = chunk > 0 ? 0 : 1; pass < 2 && rc == 0; pass++) {
        int32_t T = 0, R = 0;
        for (int i = 0; i < n; i++) {
            const struct gcase *g = cs[i];
            int32_t split = chunk < g->n_ids ? chunk : g->n_ids;
            int32_t lo = pass == 0 || chunk == 0 ? 0 : split;
            int32_t hi = pass == 0 ? split : g->n_ids;
            qs[i] = T;
            ql[i] = hi - lo;
            cl[i] = hi;
            var[i] = prompt_variant(c, g->n_ids);
            for (int32_t p = lo; p < hi; p++, T++) {
                ids[T] = g->ids[p];
                pos[T] = p;
                slots[T] = (int64_t)tables[i * max_blocks + p / bs] * bs + p % bs;
            }
            for (int32_t r = 0; r < g->n_rows; r++) {
                if (g->rows[r] >= lo && g->rows[r] < hi) {
                    rows[R] = qs[i] + g->rows[r] - lo;
                    row_case[R] = i;
                    row_r[R++] = r;
                }
            }
        }
        struct eng_batch b = {
            .n_tokens = T, .token_ids = ids, .positions = pos, .slot_mapping = slots,
            .n_seqs = n, .q_start = qs, .q_len = ql, .ctx_len = cl, .block_tables = tables,
            .max_blocks = max_blocks, .rope_variant = var, .n_logit_rows = R, .logit_rows = rows,
        };
        rc = eng_phi3_forward(m, ops, ctx, kv, &b, &ws, logits, NULL);
        for (int32_t k = 0; k < R && rc == 0; k++)
            memcpy(out[row_case[k]] + (size_t)row_r[k] * (size_t)c->vocab_size,
                   logits + (size_t)k * (size_t)c->vocab_size, (size_t)c->vocab_size * sizeof *logits);
    }
    free(row_case);
    free(row_r);
    eng_phi3_ws_free(&ws);
    free(ids);
    free(pos);
    free(slots);
    free(rows);
    free(logits);
    free(tables);
    eng_kv_cache_destroy(kv);
    return rc;
}

/* Largest |x - ref| over one row of logits, relative to the row's scale (>= 1). */
static double row_error(const float *x, const float *ref, int64_t vocab, double *scale_out)
{
    double scale = 1.0, err = 0;
    for (int64_t j = 0; j < vocab; j++)
        scale = fmax(scale, fabs(ref[j]));
    for (int64_t j = 0; j < vocab; j++)
        err = fmax(err, isfinite(x[j]) ? fabs((double)x[j] - ref[j]) : INFINITY);
    *scale_out = scale;
    return err / scale;
}

static double compare_rows(const struct gcase *g, const float *got, int64_t vocab, const char *what)
{
    double worst = 0, scale;
    for (int32_t r = 0; r < g->n_rows; r++) {
        double rel = row_error(got + (size_t)r * (size_t)vocab, g->logits + (size_t)r * (size_t)vocab,
                               vocab, &scale);
        if (int8_cap) {
            CHECK(isfinite(rel), "%s %s row %d: non-finite logits", g->name, what, g->rows[r]);
            int8_note(rel);
        } else {
            CHECK(rel <= LOGIT_RTOL, "%s %s row %d: max |diff| %.3g > %.3g", g->name, what,
                  g->rows[r], rel * scale, LOGIT_RTOL * scale);
        }
        worst = fmax(worst, rel);
    }
    return worst;
}

/* Generation callback: each step's logits against transformers' (decode through the cache). */
/* Tokens to generate for a case: its determinate ones and the step after them (whose logits
 * are still compared). */
static int32_t gen_len(const struct gcase *g)
{
    return g->n_sure < g->n_greedy ? g->n_sure + 1 : g->n_greedy;
}

struct step_check {
    struct gcase *cases;
    const int32_t *case_of_seq;
    const struct eng_gen_seq *seqs; /* their tokens so far (int8 mode) */
    int64_t vocab;
    double worst;
};

static void check_step(void *user, int32_t seq, int32_t step, const float *logits, int64_t vocab)
{
    struct step_check *sc = user;
    const struct gcase *g = &sc->cases[sc->case_of_seq[seq]];
    if (!g->step_logits || step >= g->n_greedy)
        return;
    double scale;
    double rel = row_error(logits, g->step_logits + (size_t)step * (size_t)vocab, vocab, &scale);
    if (int8_cap) {
        /* Only while the sequence is transformers' own: after a different token the rows
         * describe different texts. */
        const struct eng_gen_seq *s = &sc->seqs[seq];
        for (int32_t t = 0; t < step; t++)
            if (t >= s->n_out || s->out[t] != g->greedy[t])
                return;
        CHECK(isfinite(rel), "%s step %d: non-finite logits", g->name, step);
        int8_note(rel);
    } else {
        CHECK(rel <= LOGIT_RTOL, "%s step %d logits: max |diff| %.3g > %.3g", g->name, step,
              rel * scale, LOGIT_RTOL * scale);
    }
    sc->worst = fmax(sc->worst, rel);
}

/* ---- q8_0 / q4_0: the quantized tensors against the fixture script's record ---- */

/* The weight a checkpoint tensor name was quantized into, or NULL. */
static const struct eng_weight *weight_named(const struct eng_model *m, const char *name)
{
    if (strcmp(name, "lm_head.weight") == 0)
        return &m->lm_head;
    int layer = -1, used = 0;
    if (sscanf(name, "model.layers.%d.%n", &layer, &used) != 1 || used == 0 || layer < 0 ||
        layer >= m->cfg.num_hidden_layers)
        return NULL;
    const struct eng_phi3_layer *L = &m->layers[layer];
    /* phimoe's experts: w1 (gate) at e, w3 (up) at E + e, w2 (down) at 2 E + e */
    static const char *const parts[3] = {"w1", "w3", "w2"};
    int64_t E = m->cfg.num_local_experts;
    int expert = -1, end = 0;
    char part[3] = "";
    if (L->experts &&
        sscanf(name + used, "block_sparse_moe.experts.%d.%2[w123].weight%n", &expert, part,
               &end) == 2 &&
        end > 0 && name[used + end] == '\0' && expert >= 0 && expert < E) {
        for (int k = 0; k < 3; k++)
            if (strcmp(part, parts[k]) == 0)
                return &L->experts[k * E + expert];
        return NULL;
    }
    static const struct {
        const char *suffix;
        size_t offset;
    } map[] = {
        {"self_attn.qkv_proj.weight", offsetof(struct eng_phi3_layer, qkv)},
        {"self_attn.q_proj.weight", offsetof(struct eng_phi3_layer, q)},
        {"self_attn.k_proj.weight", offsetof(struct eng_phi3_layer, k)},
        {"self_attn.v_proj.weight", offsetof(struct eng_phi3_layer, v)},
        {"self_attn.o_proj.weight", offsetof(struct eng_phi3_layer, o)},
        {"mlp.gate_up_proj.weight", offsetof(struct eng_phi3_layer, gate_up)},
        {"mlp.down_proj.weight", offsetof(struct eng_phi3_layer, down)},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(name + used, map[i].suffix) == 0)
            return (const struct eng_weight *)((const char *)L + map[i].offset);
    return NULL;
}

/* How many of the model's matrices (lm_head, the decoder's projections, phimoe's experts) are
 * in dt: the record must name every one of them, so that a matrix quantized here but not by
 * the script (or the other way round) cannot pass unnoticed. */
static int count_in_dtype(const struct eng_model *m, enum kern_dtype dt)
{
    int n = m->lm_head.dtype == dt && m->lm_head.data != m->embed.data;
    for (int64_t i = 0; i < m->cfg.num_hidden_layers; i++) {
        const struct eng_phi3_layer *L = &m->layers[i];
        const struct eng_weight *w[] = {&L->qkv, &L->q, &L->k, &L->v, &L->o, &L->gate_up, &L->down};
        for (size_t j = 0; j < sizeof w / sizeof w[0]; j++)
            n += w[j]->data && w[j]->dtype == dt;
        for (int64_t j = 0; L->experts && j < 3 * m->cfg.num_local_experts; j++)
            n += L->experts[j].dtype == dt;
    }
    return n;
}

/* The record's entry for a tensor name (shape, checksums), or NULL. */
static const cJSON *tensor_entry(const cJSON *rec, const char *name)
{
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(rec, "tensors")) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(t, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
            return t;
    }
    return NULL;
}

static int64_t json_int(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

/* Block blk of row `row` of a quantized matrix with rows of k elements. */
static const uint8_t *block_at(const struct eng_weight *w, int64_t k, int64_t row, int64_t blk)
{
    return (const uint8_t *)w->data + (size_t)row * (size_t)kern_dtype_row_bytes(w->dtype, k) +
           (size_t)blk * (size_t)kern_dtype_row_bytes(w->dtype, KERN_QBLOCK);
}

/* Value e of a block as the record writes it: Q8_0's int8, Q4_0's nibble (0..15). */
static int block_value(enum kern_dtype dt, const uint8_t *blk, int e)
{
    if (dt == KERN_DTYPE_Q8_0)
        return (int8_t)blk[2 + e];
    return e < KERN_QBLOCK / 2 ? blk[2 + e] & 15 : blk[2 + e - KERN_QBLOCK / 2] >> 4;
}

/* One verbatim block of the record: its scale's bits and its 32 values, bit for bit. */
static void check_block(const struct eng_model *m, const cJSON *rec, const cJSON *b,
                        const char *what)
{
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(b, "tensor");
    const struct eng_weight *w = cJSON_IsString(name) ? weight_named(m, name->valuestring) : NULL;
    const cJSON *t = cJSON_IsString(name) ? tensor_entry(rec, name->valuestring) : NULL;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(b, "q");
    if (!w || !t || kern_dtype_size(w->dtype) != 0 || cJSON_GetArraySize(q) != KERN_QBLOCK) {
        CHECK(0, "%s: not a quantized tensor of the record, or not 32 values", what);
        return;
    }
    int64_t k = (int64_t)cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(t, "shape"), 1)->valuedouble;
    const uint8_t *blk = block_at(w, k, json_int(b, "row"), json_int(b, "block"));
    int bits = (int)json_int(b, "d_fp16_bits");
    CHECK((blk[0] | (blk[1] << 8)) == bits, "%s: scale bits %04x, script %04x", what,
          blk[0] | (blk[1] << 8), bits);
    for (int i = 0; i < KERN_QBLOCK; i++) {
        int want = (int)cJSON_GetArrayItem(q, i)->valuedouble;
        CHECK(block_value(w->dtype, blk, i) == want, "%s: q[%d] = %d, script %d", what, i,
              block_value(w->dtype, blk, i), want);
    }
}

/* Every quantized tensor against the script's checksums (exact: the sum of d * (q - zero)
 * over a tensor is exact in fp64), and its verbatim blocks. Returns the number of tensors
 * checked. */
static int check_quantized(const struct eng_model *m, const char *dir, enum kern_dtype dt)
{
    char path[4096];
    size_t len = 0;
    snprintf(path, sizeof path, "%s/golden/%s/quantized.json", dir, kern_dtype_name(dt));
    int zero = dt == KERN_DTYPE_Q4_0 ? 8 : 0;
    char *text = tu_read_file(path, &len);
    cJSON *rec = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    CHECK(rec != NULL, "cannot read %s", path);
    if (!rec)
        return 0;
    int n = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(rec, "tensors")) {
        const char *name = cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring;
        const struct eng_weight *w = weight_named(m, name);
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
        int64_t rows = (int64_t)cJSON_GetArrayItem(shape, 0)->valuedouble;
        int64_t k = (int64_t)cJSON_GetArrayItem(shape, 1)->valuedouble;
        if (!w || w->dtype != dt ||
            w->n_bytes != (size_t)rows * (size_t)kern_dtype_row_bytes(dt, k)) {
            CHECK(0, "%s: not quantized, or not %lld x %lld", name, (long long)rows, (long long)k);
            continue;
        }
        double sum = 0;
        long long sum_abs = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t b = 0; b < k / KERN_QBLOCK; b++) {
                const uint8_t *blk = block_at(w, k, r, b);
                int qs = 0;
                for (int i = 0; i < KERN_QBLOCK; i++) {
                    qs += block_value(dt, blk, i) - zero;
                    sum_abs += abs(block_value(dt, blk, i) - zero);
                }
                sum += (double)kern_f16_to_f32((uint16_t)(blk[0] | (blk[1] << 8))) * qs;
            }
        double want = cJSON_GetObjectItemCaseSensitive(t, "sum_d_times_q")->valuedouble;
        long long want_abs = (long long)json_int(t, "sum_abs_q");
        CHECK(sum == want && sum_abs == want_abs, "%s: sum d*q %.17g (script %.17g), sum |q| %lld "
              "(script %lld)", name, sum, want, sum_abs, want_abs);
        n++;
    }
    const cJSON *b;
    cJSON_ArrayForEach(b, cJSON_GetObjectItemCaseSensitive(rec, "first_blocks"))
        check_block(m, rec, b, "first blocks");
    check_block(m, rec, cJSON_GetObjectItemCaseSensitive(rec, "first_tie_block"),
                "a block with rounding ties");
    cJSON_Delete(rec);
    return n;
}

int main(int argc, char **argv)
{
    enum eng_quant quant = ENG_QUANT_NONE;
    /* gguf=FILE (last): the same model as a GGUF file, whose tensors are already in the
     * format named before it (none: the fp32 goldens). */
    const char *gguf = argc >= 4 && strncmp(argv[argc - 1], "gguf=", 5) == 0 ? argv[argc - 1] + 5 : NULL;
    int nargs = gguf ? argc - 1 : argc;
    /* golden=NAME (with gguf=FILE only): the file as loaded against golden/NAME/. */
    const char *gname = nargs == 4 && strncmp(argv[3], "golden=", 7) == 0 ? argv[3] + 7 : NULL;
    /* q8_0+int8 / q4_0+int8 (no gguf=): --int8-activations against golden/<format>_int8/. */
    char qname[16] = "";
    bool int8 = false;
    if (nargs == 4 && !gname) {
        snprintf(qname, sizeof qname, "%s", argv[3]);
        char *plus = strchr(qname, '+');
        if (plus && strcmp(plus, "+int8") == 0 && !gguf) {
            *plus = '\0';
            int8 = true;
        }
    }
    if ((nargs != 3 && nargs != 4) ||
        (gname && (!gguf || gname[0] == '\0' || strchr(gname, '/') || strlen(gname) > 32)) ||
        (nargs == 4 && !gname &&
         (eng_quant_parse(qname, &quant) != 0 || quant == ENG_QUANT_NONE))) {
        fprintf(stderr, "usage: test_golden MODEL_DIR ref|cpu [q8_0|q4_0] [gguf=FILE]\n"
                        "       test_golden MODEL_DIR ref|cpu q8_0+int8|q4_0+int8\n"
                        "       test_golden MODEL_DIR ref|cpu golden=NAME[_int8] gguf=FILE\n");
        return 2;
    }
    /* golden=NAME_int8 gguf=FILE: the file as loaded with --int8-activations */
    if (gname && strlen(gname) > 5 && strcmp(gname + strlen(gname) - 5, "_int8") == 0)
        int8 = true;
    if (int8) {
        int8_cap = 256;
        int8_errs = malloc(int8_cap * sizeof *int8_errs);
    }
    bool quantized = quant != ENG_QUANT_NONE;
    enum kern_dtype qdt = quant == ENG_QUANT_Q4_0 ? KERN_DTYPE_Q4_0 : KERN_DTYPE_Q8_0;
    char gdir[64];
    snprintf(gdir, sizeof gdir, nargs == 4 ? "golden/%s%s" : "golden",
             gname ? gname : nargs == 4 ? qname : argv[nargs - 1], int8 && !gname ? "_int8" : "");
    char err[512];
    struct eng_model *m = NULL;
    const char *src = gguf ? gguf : argv[1];
    if (eng_model_load(src, &m, err, sizeof err) != 0) {
        fprintf(stderr, "load %s: %s\n", src, err);
        return 1;
    }
    int n_quantized = 0;
    if (quantized) {
        if (!gguf && eng_model_quantize(m, quant, int8, 0, err, sizeof err) != 0) {
            fprintf(stderr, "quantize %s: %s\n", argv[1], err);
            return 1;
        }
    }
    if (int8 && gguf && eng_model_quantize(m, ENG_QUANT_NONE, true, 0, err, sizeof err) != 0) {
        fprintf(stderr, "int8 %s: %s\n", gguf, err);
        return 1;
    }
    if (int8 && gguf) {
        /* every K format took its R16 form (kmix holds all three) */
        static const enum kern_dtype kq[] = {KERN_DTYPE_Q4_K, KERN_DTYPE_Q5_K, KERN_DTYPE_Q6_K};
        CHECK(m->int8_dot, "%s: not in int8 mode", gguf);
        for (size_t i = 0; i < sizeof kq / sizeof kq[0]; i++)
            CHECK(count_in_dtype(m, kq[i]) == 0 && count_in_dtype(m, kern_dtype_r16_of(kq[i])) > 0,
                  "%s: %d %s and %d %s matrices", gguf, count_in_dtype(m, kq[i]),
                  kern_dtype_name(kq[i]), count_in_dtype(m, kern_dtype_r16_of(kq[i])),
                  kern_dtype_name(kern_dtype_r16_of(kq[i])));
    } else if (int8) {
        /* The R16 layout and its bytes are test_model_quant's; here, that the dense matrices
         * took it and the experts did not. */
        enum kern_dtype r16 = kern_dtype_r16_of(qdt);
        CHECK(m->int8_dot && count_in_dtype(m, r16) > 0, "no matrix in %s", kern_dtype_name(r16));
        CHECK(count_in_dtype(m, qdt) == (m->experts ? 3 * m->cfg.num_local_experts *
                                                         m->cfg.num_hidden_layers : 0),
              "%d matrices in %s besides the experts", count_in_dtype(m, qdt), kern_dtype_name(qdt));
    } else if (quantized) {
        n_quantized = check_quantized(m, argv[1], qdt);
        CHECK(n_quantized > 0 && m->n_quant_kept == 0, "%d tensors checked, %lld kept their dtype",
              n_quantized, (long long)m->n_quant_kept);
        CHECK(count_in_dtype(m, qdt) == n_quantized, "%d matrices are %s, the record names %d",
              count_in_dtype(m, qdt), kern_dtype_name(qdt), n_quantized);
    } else if (gguf && !gname) {
        CHECK(eng_model_block_dtype(m) == KERN_DTYPE_COUNT, "%s holds %s matrices", gguf,
              kern_dtype_name(eng_model_block_dtype(m)));
    }
    struct kern_ops ops;
    struct kern_ctx *ctx = NULL;
    kern_ops_init_ref(&ops);
    if (strcmp(argv[2], "cpu") == 0) {
        kern_ops_init_cpu(&ops);
        ctx = kern_ctx_create_cpu(0);
    }
    const int64_t V = m->cfg.vocab_size;
    struct gcase *gc = NULL;
    int n = 0;
    if (load_cases(argv[1], gdir, V, &gc, &n) != 0 || n <= 0 || n > 64)
        return 1;

    struct gcase **all = malloc((size_t)n * sizeof *all);
    float **out = malloc((size_t)n * sizeof *out);
    for (int i = 0; i < n; i++) {
        all[i] = &gc[i];
        out[i] = malloc((size_t)(gc[i].n_rows ? gc[i].n_rows : 1) * (size_t)V * sizeof(float));
    }
    double worst = 0;

    /* 1. each case alone, one prefill call */
    for (int i = 0; i < n; i++) {
        CHECK(run_prefill(m, &ops, ctx, &all[i], 1, 0, &out[i]) == 0, "%s: forward failed", gc[i].name);
        worst = fmax(worst, compare_rows(&gc[i], out[i], V, "alone"));
    }
    /* 2. all cases in one batch */
    CHECK(run_prefill(m, &ops, ctx, all, n, 0, out) == 0, "batched forward failed");
    for (int i = 0; i < n; i++)
        worst = fmax(worst, compare_rows(&gc[i], out[i], V, "batched"));
    /* 3. chunked prefill: 5 tokens first, then the rest attends to them through the cache */
    CHECK(run_prefill(m, &ops, ctx, all, n, 5, out) == 0, "chunked forward failed");
    for (int i = 0; i < n; i++)
        worst = fmax(worst, compare_rows(&gc[i], out[i], V, "chunked"));

    /* 4. greedy continuations, alone and all together */
    const int64_t bs = 16;
    int64_t blocks = 0;
    for (int i = 0; i < n; i++)
        blocks += (gc[i].n_ids + gc[i].n_greedy + bs - 1) / bs + 1;
    struct eng_kv_cache *kv = NULL;
    if (eng_kv_cache_create(m->cfg.num_hidden_layers, m->cfg.num_key_value_heads, m->cfg.head_dim, bs,
                            blocks, KERN_DTYPE_F32, &kv, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int32_t *case_of_seq = malloc((size_t)n * sizeof *case_of_seq);
    struct eng_gen_seq *seqs = calloc((size_t)n, sizeof *seqs);
    struct step_check sc = {.cases = gc, .case_of_seq = case_of_seq, .seqs = seqs, .vocab = V};
    struct eng_generator gen = {.model = m, .ops = &ops, .ctx = ctx, .kv = kv,
                                .on_logits = check_step, .user = &sc};
    int recomputes = 0, int8_diverged = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++) {
            seqs[i] = (struct eng_gen_seq){.prompt = gc[i].ids, .n_prompt = gc[i].n_ids,
                                           .max_new = gen_len(&gc[i]), .ignore_eos = 1,
                                           .out = malloc((size_t)(gc[i].n_greedy + 1) * sizeof(int32_t))};
        }
        if (pass == 0) {
            for (int i = 0; i < n; i++) {
                case_of_seq[0] = i;
                CHECK(eng_generate_greedy(&gen, &seqs[i], 1, err, sizeof err) == 0, "%s: %s", gc[i].name, err);
            }
        } else {
            for (int i = 0; i < n; i++)
                case_of_seq[i] = i;
            CHECK(eng_generate_greedy(&gen, seqs, n, err, sizeof err) == 0, "batched generate: %s", err);
        }
        for (int i = 0; i < n; i++) {
            int32_t first_diff = -1, want = gen_len(&gc[i]);
            for (int32_t t = 0; t < gc[i].n_sure && first_diff < 0; t++)
                if (t >= seqs[i].n_out || seqs[i].out[t] != gc[i].greedy[t])
                    first_diff = t;
            if (int8) /* a flipped rounding may pick another token: counted, not failed */
                int8_diverged += first_diff >= 0;
            CHECK(seqs[i].n_out == want && (first_diff < 0 || int8),
                  "%s greedy (%s): %d tokens, first difference at %d", gc[i].name,
                  pass ? "batched" : "alone", seqs[i].n_out, first_diff);
            /* The LongRoPE recompute happens exactly when transformers dropped its cache (if
             * the generation gets that far). */
            CHECK(seqs[i].n_recomputes ==
                      (gc[i].recompute_step >= 0 && gc[i].recompute_step < want),
                  "%s: %d LongRoPE recomputes, transformers recomputed at step %d", gc[i].name,
                  seqs[i].n_recomputes, gc[i].recompute_step);
            recomputes += seqs[i].n_recomputes;
            free(seqs[i].out);
        }
        CHECK(eng_kv_cache_used_blocks(kv) == 0, "KV blocks leaked after generation");
    }
    printf("%s [%s%s%s]: %d cases, worst logit error %.3g (prompt) %.3g (decode steps) of row scale "
           "(tolerance %.0e), LongRoPE recomputes %d, %d failures\n",
           src, argv[2], nargs == 4 ? ", " : "", nargs == 4 ? argv[3] : "", n, worst,
           sc.worst, LOGIT_RTOL, recomputes, tu_failures);
    for (int i = 0; i < n; i++)
        if (gc[i].n_sure < gc[i].n_greedy)
            printf("%s: greedy compared on its first %d of %d tokens (step %d's margin is within "
                   "twice the tolerance)\n", gc[i].name, gc[i].n_sure, gc[i].n_greedy, gc[i].n_sure);
    if (int8) {
        qsort(int8_errs, int8_n, sizeof *int8_errs, cmp_double);
        double median = int8_n ? int8_errs[int8_n / 2] : INFINITY;
        size_t within = 0;
        while (within < int8_n && int8_errs[within] <= LOGIT_RTOL)
            within++;
        CHECK(median <= INT8_MEDIAN_RTOL, "int8: median row error %.3g of the row scale > %.0e",
              median, INT8_MEDIAN_RTOL);
        printf("int8: %zu rows compared, median error %.3g, %zu within %.0e, largest %.3g; "
               "greedy differs from transformers' in %d of %d runs\n", int8_n, median, within,
               LOGIT_RTOL, int8_n ? int8_errs[int8_n - 1] : 0.0, int8_diverged, 2 * n);
        free(int8_errs);
    } else if (quantized) {
        printf("%s: %d tensors match the script's checksums and blocks\n", eng_quant_name(quant),
               n_quantized);
    }
    if (gname) {
        enum kern_dtype bdt = eng_model_block_dtype(m);
        printf("%s: matrices held as %s\n", gguf,
               bdt == KERN_DTYPE_COUNT ? "float" : kern_dtype_name(bdt));
    }

    for (int i = 0; i < n; i++) {
        free(gc[i].ids);
        free(gc[i].rows);
        free(gc[i].greedy);
        free(gc[i].logits);
        free(gc[i].step_logits);
        free(out[i]);
    }
    free(gc);
    free(all);
    free(out);
    free(seqs);
    free(case_of_seq);
    eng_generator_free(&gen);
    eng_kv_cache_destroy(kv);
    kern_ctx_destroy(ctx);
    eng_model_destroy(m);
    return tu_failures ? 1 : 0;
}
