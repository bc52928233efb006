/* Weight quantization at load (--quantization, --int8-activations): the decoder's projection
 * matrices, phimoe's experts and the untied lm_head re-encoded into a block format of
 * kernels/ops.h (the dense ones optionally in its R16 interleaving), in one buffer the model
 * owns. It changes what the weights (and the experts' address array) point at, nothing else;
 * the kernels do the arithmetic. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model.h"

int eng_quant_parse(const char *name, enum eng_quant *out)
{
    if (!name || strcmp(name, "none") == 0) {
        *out = ENG_QUANT_NONE;
        return 0;
    }
    if (strcmp(name, "q8_0") == 0 || strcmp(name, "q4_0") == 0) {
        *out = name[1] == '8' ? ENG_QUANT_Q8_0 : ENG_QUANT_Q4_0;
        return 0;
    }
    return -1;
}

int eng_int8_parse(const char *name, enum eng_int8 *out)
{
    static const struct {
        const char *word;
        enum eng_int8 mode;
    } words[] = {{"on", ENG_INT8_ON},   {"true", ENG_INT8_ON},  {"yes", ENG_INT8_ON},
                 {"1", ENG_INT8_ON},    {"off", ENG_INT8_OFF},  {"false", ENG_INT8_OFF},
                 {"no", ENG_INT8_OFF},  {"0", ENG_INT8_OFF},    {"auto", ENG_INT8_AUTO}};
    if (!name) {
        *out = ENG_INT8_ON;
        return 0;
    }
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (strcasecmp(name, words[i].word) == 0) {
            *out = words[i].mode;
            return 0;
        }
    }
    return -1;
}

const char *eng_int8_name(enum eng_int8 mode)
{
    return mode == ENG_INT8_ON ? "on" : mode == ENG_INT8_AUTO ? "auto" : "off";
}

const char *eng_quant_name(enum eng_quant q)
{
    return q == ENG_QUANT_Q8_0 ? "q8_0" : q == ENG_QUANT_Q4_0 ? "q4_0" : "none";
}

/* The matrices a quantization covers, with their input width k (the row length) and, for
 * messages, their checkpoint name, layer (-1: none) and expert (-1: not an expert; name is
 * then its part, "w1", "w3" or "w2"). */
struct quant_target {
    struct eng_weight *w;
    int64_t k;
    const char *name;
    int64_t layer, expert;
    uint8_t *out;              /* its encoding in the model's buffer */
    enum kern_dtype to;        /* its format there: Q8_0 / Q4_0, or their R16 interleaving */
    bool mapped;               /* its source lies in the model's file mapping (not a buffer
                                  the loader made: eng_model.gguf_bufs) */
};

/* The plain block format a target's rows are encoded in (its R16 format's base). */
static enum kern_dtype plain_of(enum kern_dtype to)
{
    return kern_dtype_is_r16(to) ? kern_dtype_r16_base(to) : to;
}

/* Bytes of one row of a target's matrix in its dtype, and its rows (whole rows: checked
 * before encoding). */
static size_t src_row_bytes(const struct quant_target *t)
{
    return (size_t)kern_dtype_row_bytes(t->w->dtype, t->k);
}

static size_t quant_rows(const struct quant_target *t)
{
    return t->w->n_bytes / src_row_bytes(t);
}

static void describe_failure(const struct quant_target *t, char *err, size_t errlen)
{
    char layer[96] = "";
    if (t->layer >= 0 && t->expert >= 0)
        snprintf(layer, sizeof layer, "model.layers.%lld.block_sparse_moe.experts.%lld.",
                 (long long)t->layer, (long long)t->expert);
    else if (t->layer >= 0)
        snprintf(layer, sizeof layer, "model.layers.%lld.", (long long)t->layer);
    snprintf(err, errlen, "model: %s%s.weight (%zu x %lld) cannot be quantized to %s: it has a "
             "non-finite value, or a block whose scale is beyond fp16", layer, t->name,
             quant_rows(t), (long long)t->k, kern_dtype_name(plain_of(t->to)));
}

/* The encoding work: pieces of QUANT_PIECE_ROWS rows of every target, taken by the threads
 * in turn. A multiple of KERN_R16, so that a piece of an R16 target is whole groups (the last
 * one padded) and starts where its rows' groups start. */
#define QUANT_PIECE_ROWS 64
#define QUANT_MAX_THREADS 64
_Static_assert(QUANT_PIECE_ROWS % KERN_R16 == 0, "pieces must be whole R16 groups");

struct quant_work {
    const struct quant_target *t;
    int64_t n_targets;
    const int64_t *first_piece; /* [n_targets + 1]: the pieces of target i are
                                   first_piece[i] .. first_piece[i + 1] - 1 */
    atomic_int_fast64_t next;   /* the next piece to take */
    atomic_int_fast64_t failed; /* the lowest target that failed, or INT64_MAX */
    atomic_bool no_memory;      /* a thread could not get its piece buffer */
};

static void note_failure(struct quant_work *qw, int64_t i)
{
    int_fast64_t cur = atomic_load(&qw->failed);
    while (i < cur && !atomic_compare_exchange_weak(&qw->failed, &cur, i))
        ;
}

/* An encoded source's pages, page-aligned inside [p, p + n), dropped from the process: a
 * matrix read from a file mapping (safetensors, GGUF) is clean file memory that would
 * otherwise stay in the resident set though nothing reads it again (a Q4_0 GGUF with int8
 * activations peaked at twice its size). MADV_DONTNEED on a read-only file mapping only
 * unmaps: the page cache keeps the pages for the next start, and a later read would fault
 * the same bytes back in. Only for mapped sources (quant_target.mapped): on heap memory it
 * would discard data. */
static void release_source(const void *p, size_t n)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        return;
    uintptr_t lo = ((uintptr_t)p + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t hi = ((uintptr_t)p + n) & ~((uintptr_t)page - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* Encodes rows r0 .. r0 + nr - 1 of t into its out. An R16 target's rows are first put in the
 * plain format, in *tmp (grown as needed, *cap bytes) unless they already are (a GGUF file's
 * Q8_0 / Q4_0 / K-quant matrix: bytes moved, never requantized), then interleaved. Its piece
 * starts at group r0 / 16 (kern_dtype_matrix_bytes of the r0 rows before it). Returns
 * KERN_OK, a kern error, or KERN_ERR_NOMEM. */
static int encode_one(const struct quant_target *t, size_t r0, size_t nr, uint8_t **tmp,
                      size_t *cap)
{
    enum kern_dtype plain = plain_of(t->to);
    size_t row = (size_t)kern_dtype_row_bytes(plain, t->k);
    const char *src = (const char *)t->w->data + r0 * src_row_bytes(t);
    if (!kern_dtype_is_r16(t->to))
        return kern_quantize(src, t->w->dtype, (int64_t)nr, t->k, plain, t->out + r0 * row);
    /* r0 is a multiple of KERN_R16: its rows start a group */
    uint8_t *dst = t->out + kern_dtype_matrix_bytes(t->to, (int64_t)r0, t->k);
    if (t->w->dtype != plain) {
        if (nr * row > *cap) {
            free(*tmp);
            *cap = 0;
            if (!(*tmp = malloc(nr * row)))
                return KERN_ERR_NOMEM;
            *cap = nr * row;
        }
        int rc = kern_quantize(src, t->w->dtype, (int64_t)nr, t->k, plain, *tmp);
        if (rc != KERN_OK)
            return rc;
        src = (const char *)*tmp;
    }
    return kern_repack(src, plain, (int64_t)nr, t->k, dst);
}

/* encode_one, then the piece's source rows released (release_source): read once, so the
 * process never holds a whole second copy of the weights. A failure leaves them: the model
 * keeps its weights then. */
static int encode_piece(const struct quant_target *t, size_t r0, size_t nr, uint8_t **tmp,
                        size_t *cap)
{
    int rc = encode_one(t, r0, nr, tmp, cap);
    if (rc == KERN_OK && t->mapped)
        release_source((const char *)t->w->data + r0 * src_row_bytes(t), nr * src_row_bytes(t));
    return rc;
}

static void *encode_pieces(void *arg)
{
    struct quant_work *qw = arg;
    int64_t total = qw->first_piece[qw->n_targets], i = 0;
    uint8_t *tmp = NULL; /* this thread's piece in the plain format (R16 targets) */
    size_t cap = 0;
    for (int64_t p; (p = atomic_fetch_add(&qw->next, 1)) < total;) {
        while (qw->first_piece[i + 1] <= p) /* pieces are taken in increasing order */
            i++;
        const struct quant_target *t = &qw->t[i];
        size_t rows = quant_rows(t), r0 = (size_t)(p - qw->first_piece[i]) * QUANT_PIECE_ROWS;
        size_t nr = rows - r0 < QUANT_PIECE_ROWS ? rows - r0 : QUANT_PIECE_ROWS;
        int rc = encode_piece(t, r0, nr, &tmp, &cap);
        if (rc == KERN_ERR_NOMEM)
            atomic_store(&qw->no_memory, true);
        else if (rc != KERN_OK)
            note_failure(qw, i);
    }
    free(tmp);
    return NULL;
}

/* Encodes every target (w set) into its out with n_threads threads (<= 0: every online CPU).
 * Returns -1 when all succeeded, the index of the first target that failed, or -2 when out
 * of memory. A thread that cannot be started leaves its share to the others. */
static int64_t encode_all(const struct quant_target *t, int64_t n, int n_threads)
{
    int64_t *first = calloc((size_t)n + 1, sizeof *first);
    if (!first)
        return -2;
    for (int64_t i = 0; i < n; i++)
        first[i + 1] = first[i] + (t[i].w ? ((int64_t)quant_rows(&t[i]) + QUANT_PIECE_ROWS - 1) /
                                                QUANT_PIECE_ROWS : 0);
    struct quant_work qw = {.t = t, .n_targets = n, .first_piece = first};
    atomic_init(&qw.next, 0);
    atomic_init(&qw.failed, INT64_MAX);
    atomic_init(&qw.no_memory, false);
    if (n_threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = cpus > 0 ? (int)(cpus < QUANT_MAX_THREADS ? cpus : QUANT_MAX_THREADS) : 1;
    }
    if (n_threads > QUANT_MAX_THREADS)
        n_threads = QUANT_MAX_THREADS;
    pthread_t th[QUANT_MAX_THREADS];
    int started = 0;
    while (started < n_threads - 1 && pthread_create(&th[started], NULL, encode_pieces, &qw) == 0)
        started++;
    encode_pieces(&qw); /* the calling thread works too */
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    free(first);
    if (atomic_load(&qw.no_memory))
        return -2;
    int_fast64_t failed = atomic_load(&qw.failed);
    return failed == INT64_MAX ? -1 : (int64_t)failed;
}

/* Whether a layer's experts can all be stored in `to`: the moe op takes one dtype for all of
 * them, so they are quantized together or not at all (Phi-3.5-MoE's hidden 4096 and inter
 * 6400 are whole blocks). Every expert of a layer has its shape and dtype (checked at load). */
static bool experts_fit(const struct eng_phi3_layer *L, int64_t H, int64_t I, enum kern_dtype to)
{
    enum kern_dtype from = L->experts[0].dtype;
    return kern_dtype_row_bytes(to, H) > 0 && kern_dtype_row_bytes(to, I) > 0 &&
           kern_dtype_row_bytes(from, H) > 0 && kern_dtype_row_bytes(from, I) > 0;
}

/* Room quant_targets needs: 4 per layer, phimoe's 3 E experts per layer, and the lm_head. */
static int64_t max_targets(const struct eng_model *m)
{
    const struct eng_model_config *c = &m->cfg;
    return c->num_hidden_layers * (4 + (m->experts ? 3 * c->num_local_experts : 0)) + 1;
}

/* A target as quant_targets lists it; eng_model_quantize fills out and to. */
static struct quant_target target(struct eng_weight *w, int64_t k, const char *name,
                                  int64_t layer, int64_t expert)
{
    return (struct quant_target){.w = w, .k = k, .name = name, .layer = layer,
                                 .expert = expert, .to = KERN_DTYPE_COUNT};
}

/* Fills t (room for max_targets) and returns the count; adds to *kept the experts that must
 * keep their dtype (experts_fit). These feed the matmul op or, for the experts, the moe op;
 * norms, biases, router, embedding and vision tower stay as loaded. */
static int64_t quant_targets(struct eng_model *m, enum kern_dtype to, struct quant_target *t,
                             int64_t *kept)
{
    static const char *const parts[3] = {"w1", "w3", "w2"}; /* eng_phi3_layer.experts' order */
    const struct eng_model_config *c = &m->cfg;
    int64_t n = 0, H = c->hidden_size, I = c->intermediate_size, E = c->num_local_experts;
    int64_t attn = c->num_attention_heads * c->head_dim;
    for (int64_t i = 0; i < c->num_hidden_layers; i++) {
        struct eng_phi3_layer *L = &m->layers[i];
        if (L->experts) { /* phimoe: the attention projections, then the experts */
            t[n++] = target(&L->q, H, "self_attn.q_proj", i, -1);
            t[n++] = target(&L->k, H, "self_attn.k_proj", i, -1);
            t[n++] = target(&L->v, H, "self_attn.v_proj", i, -1);
            if (!experts_fit(L, H, I, to))
                *kept += 3 * E;
            else
                for (int64_t j = 0; j < 3 * E; j++) /* gate and up [I, H], down [H, I] */
                    t[n++] = target(&L->experts[j], j < 2 * E ? H : I, parts[j / E], i, j % E);
        } else {
            t[n++] = target(&L->qkv, H, "self_attn.qkv_proj", i, -1);
            t[n++] = target(&L->gate_up, H, "mlp.gate_up_proj", i, -1);
            t[n++] = target(&L->down, I, "mlp.down_proj", i, -1);
        }
        t[n++] = target(&L->o, attn, "self_attn.o_proj", i, -1);
    }
    if (m->lm_head.data && m->lm_head.data != m->embed.data)
        t[n++] = target(&m->lm_head, H, "lm_head", -1, -1);
    return n;
}

/* The format target t is stored in, or KERN_DTYPE_COUNT when it stays as it is. q NONE (with
 * int8_dot) takes a matrix already in Q8_0, Q4_0, Q4_K, Q5_K or Q6_K (the formats with an R16
 * form) as its plain format and leaves the others (floats) alone; int8_dot interleaves every
 * dense matrix (the matmul op's), never an expert (the moe op reads the plain formats only). */
static enum kern_dtype target_format(const struct quant_target *t, enum eng_quant q,
                                     bool int8_dot)
{
    enum kern_dtype from = t->w->dtype, plain = KERN_DTYPE_COUNT;
    if (q == ENG_QUANT_Q8_0)
        plain = KERN_DTYPE_Q8_0;
    else if (q == ENG_QUANT_Q4_0)
        plain = KERN_DTYPE_Q4_0;
    else if (t->expert < 0 && (from == KERN_DTYPE_Q8_0 || from == KERN_DTYPE_Q4_0 ||
                               (int8_dot && kern_dtype_block_elems(from) == KERN_QKBLOCK)))
        plain = from;
    if (plain == KERN_DTYPE_COUNT)
        return KERN_DTYPE_COUNT;
    enum kern_dtype to = int8_dot && t->expert < 0 ? kern_dtype_r16_of(plain) : plain;
    return to == from ? KERN_DTYPE_COUNT : to;
}

bool eng_model_int8_wanted(const struct eng_model *model, enum eng_quant q, const char *device,
                           enum eng_int8 mode)
{
    if (mode != ENG_INT8_AUTO)
        return mode == ENG_INT8_ON;
    if (!device || strcmp(device, "cpu") != 0)
        return false;
    if (q != ENG_QUANT_NONE)
        return true;
    struct eng_model *m = (struct eng_model *)model; /* quant_targets only reads */
    struct quant_target *t = calloc((size_t)max_targets(m), sizeof *t);
    if (!t)
        return false; /* then the plain path: slower, never wrong */
    int64_t kept = 0, n = quant_targets(m, KERN_DTYPE_Q8_0, t, &kept);
    bool any = false;
    for (int64_t i = 0; i < n && !any; i++)
        any = t[i].w->data && target_format(&t[i], ENG_QUANT_NONE, true) != KERN_DTYPE_COUNT;
    free(t);
    return any;
}

int eng_model_quantize(struct eng_model *m, enum eng_quant q, bool int8_dot, int n_threads,
                       char *err, size_t errlen)
{
    if (q == ENG_QUANT_NONE && !int8_dot)
        return 0;
    if (m->ops || m->quant_data) {
        snprintf(err, errlen, "model: quantize before importing the weights, and only once");
        return -1;
    }
    struct quant_target *t = calloc((size_t)max_targets(m), sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* Experts that cannot take the format are counted as kept; with q NONE no expert is a
     * target, so that count means nothing there. */
    int64_t kept = 0;
    int64_t n = quant_targets(m, q == ENG_QUANT_Q4_0 ? KERN_DTYPE_Q4_0 : KERN_DTYPE_Q8_0, t,
                              &kept);
    if (q == ENG_QUANT_NONE)
        kept = 0;
    /* Sizes first: one buffer for all, each tensor 64-byte aligned. A matrix already in the
     * target format stays as it is (with int8_dot, one in the plain format is only moved into
     * the R16 layout); one whose rows are not whole blocks keeps its dtype (no Phi-3 shape has
     * one). Matrices in another block format (a GGUF file's) are requantized from their exact
     * values. */
    size_t total = 0;
    int64_t n_r16 = 0;
    for (int64_t i = 0; i < n; i++) {
        t[i].to = t[i].w->data ? target_format(&t[i], q, int8_dot) : KERN_DTYPE_COUNT;
        if (t[i].to == KERN_DTYPE_COUNT) {
            t[i].w = NULL;
            continue;
        }
        int64_t src_row = kern_dtype_row_bytes(t[i].w->dtype, t[i].k);
        int64_t row = kern_dtype_row_bytes(plain_of(t[i].to), t[i].k);
        if (row < 0 || src_row <= 0 || t[i].w->n_bytes % (size_t)src_row != 0) {
            t[i].w = NULL;
            kept += q != ENG_QUANT_NONE;
            continue;
        }
        t[i].mapped = m->weights || m->gguf; /* loaded from files (the only way there is) */
        for (int64_t b = 0; b < m->n_gguf_bufs; b++)
            t[i].mapped = t[i].mapped && m->gguf_bufs[b] != t[i].w->data;
        /* The source's bytes are in its mapping, so its rows (and whole groups of them) are
         * far from overflowing. */
        total += ((size_t)kern_dtype_matrix_bytes(t[i].to, (int64_t)quant_rows(&t[i]), t[i].k) +
                  63) & ~(size_t)63;
        n_r16 += kern_dtype_is_r16(t[i].to);
    }
    if (int8_dot && n_r16 == 0) {
        free(t);
        snprintf(err, errlen, "int8 activations need Q8_0, Q4_0, Q4_K, Q5_K or Q6_K weight "
                 "matrices: add --quantization q8_0|q4_0 (or use a GGUF file with such matrices)");
        return -1;
    }
    uint8_t *buf = total ? aligned_alloc(64, total) : NULL;
    if (total && !buf) {
        free(t);
        snprintf(err, errlen, "model: out of memory for %zu bytes of %s weights", total,
                 int8_dot ? "int8-dot" : eng_quant_name(q));
        return -1;
    }
    /* Encode everything (threads over 64-row pieces), then repoint: a failure leaves the
     * model as it was. */
    size_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        t[i].out = buf + at;
        if (t[i].w)
            at += ((size_t)kern_dtype_matrix_bytes(t[i].to, (int64_t)quant_rows(&t[i]), t[i].k) +
                   63) & ~(size_t)63;
    }
    int64_t bad = encode_all(t, n, n_threads);
    if (bad == -2 || bad >= 0) {
        if (bad == -2)
            snprintf(err, errlen, "out of memory");
        else
            describe_failure(&t[bad], err, errlen);
        free(buf);
        free(t);
        return -1;
    }
    for (int64_t i = 0; i < n; i++) {
        if (!t[i].w)
            continue;
        /* A GGUF matrix converted at load (into a buffer of its own) is now a copy nobody
         * reads: free it rather than hold the weights twice. A tied lm_head is no target, so
         * only the embedding could share such a buffer. */
        for (int64_t b = 0; b < m->n_gguf_bufs; b++) {
            if (m->gguf_bufs[b] == t[i].w->data && t[i].w->data != m->embed.data) {
                free(m->gguf_bufs[b]);
                m->gguf_bufs[b] = NULL;
            }
        }

        *t[i].w = (struct eng_weight){
            .data = t[i].out, .dtype = t[i].to,
            .n_bytes = (size_t)kern_dtype_matrix_bytes(t[i].to, (int64_t)quant_rows(&t[i]),
                                                       t[i].k)};
    }
    free(t);
    /* The moe op reads the experts through this array (eng_model_upload rebuilds it from
     * eng_model.experts for the backend): point it at the new encodings. */
    int64_t n_experts = m->experts ? m->cfg.num_hidden_layers * 3 * m->cfg.num_local_experts : 0;
    for (int64_t j = 0; j < n_experts; j++)
        m->expert_ptrs_host[j] = m->experts[j].data;
    m->quant_data = buf;
    m->quant = q;
    m->int8_dot = int8_dot;
    m->n_quant_kept = kept;
    return 0;
}
