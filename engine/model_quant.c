/* Weight quantization at load (--quantization): the decoder's projection matrices and the
 * untied lm_head re-encoded into a block format of kernels/ops.h, in one buffer the model owns.
 * It changes what the weights point at, nothing else; the kernels do the arithmetic. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

const char *eng_quant_name(enum eng_quant q)
{
    return q == ENG_QUANT_Q8_0 ? "q8_0" : q == ENG_QUANT_Q4_0 ? "q4_0" : "none";
}

/* The matrices a quantization covers, with their input width k (the row length) and, for
 * messages, their checkpoint name and layer (-1: none). */
struct quant_target {
    struct eng_weight *w;
    int64_t k;
    const char *name;
    int64_t layer;
    uint8_t *out;              /* its encoding in the model's buffer */
};

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

static void describe_failure(const struct quant_target *t, enum eng_quant q, char *err,
                             size_t errlen)
{
    char layer[48] = "";
    if (t->layer >= 0)
        snprintf(layer, sizeof layer, "model.layers.%lld.", (long long)t->layer);
    snprintf(err, errlen, "model: %s%s.weight (%zu x %lld) cannot be quantized to %s: it has a "
             "non-finite value, or a block whose scale is beyond fp16", layer, t->name,
             quant_rows(t), (long long)t->k, eng_quant_name(q));
}

/* The encoding work: pieces of QUANT_PIECE_ROWS rows of every target, taken by the threads
 * in turn. */
#define QUANT_PIECE_ROWS 64
#define QUANT_MAX_THREADS 64

struct quant_work {
    const struct quant_target *t;
    int64_t n_targets;
    enum kern_dtype to;
    const int64_t *first_piece; /* [n_targets + 1]: the pieces of target i are
                                   first_piece[i] .. first_piece[i + 1] - 1 */
    atomic_int_fast64_t next;   /* the next piece to take */
    atomic_int_fast64_t failed; /* the lowest target that failed, or INT64_MAX */
};

static void *encode_pieces(void *arg)
{
    struct quant_work *qw = arg;
    int64_t total = qw->first_piece[qw->n_targets], i = 0;
    for (int64_t p; (p = atomic_fetch_add(&qw->next, 1)) < total;) {
        while (qw->first_piece[i + 1] <= p) /* pieces are taken in increasing order */
            i++;
        const struct quant_target *t = &qw->t[i];
        size_t rows = quant_rows(t), r0 = (size_t)(p - qw->first_piece[i]) * QUANT_PIECE_ROWS;
        size_t nr = rows - r0 < QUANT_PIECE_ROWS ? rows - r0 : QUANT_PIECE_ROWS;
        const char *src = (const char *)t->w->data + r0 * src_row_bytes(t);
        uint8_t *dst = t->out + r0 * (size_t)kern_dtype_row_bytes(qw->to, t->k);
        if (kern_quantize(src, t->w->dtype, (int64_t)nr, t->k, qw->to, dst) != KERN_OK) {
            int_fast64_t cur = atomic_load(&qw->failed);
            while (i < cur && !atomic_compare_exchange_weak(&qw->failed, &cur, i))
                ;
        }
    }
    return NULL;
}

/* Encodes every target (w set) into its out with n_threads threads (<= 0: every online CPU).
 * Returns -1 when all succeeded, the index of the first target that failed, or -2 when out
 * of memory. A thread that cannot be started leaves its share to the others. */
static int64_t encode_all(const struct quant_target *t, int64_t n, enum kern_dtype to,
                          int n_threads)
{
    int64_t *first = calloc((size_t)n + 1, sizeof *first);
    if (!first)
        return -2;
    for (int64_t i = 0; i < n; i++)
        first[i + 1] = first[i] + (t[i].w ? ((int64_t)quant_rows(&t[i]) + QUANT_PIECE_ROWS - 1) /
                                                QUANT_PIECE_ROWS : 0);
    struct quant_work qw = {.t = t, .n_targets = n, .to = to, .first_piece = first};
    atomic_init(&qw.next, 0);
    atomic_init(&qw.failed, INT64_MAX);
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
    int_fast64_t failed = atomic_load(&qw.failed);
    return failed == INT64_MAX ? -1 : (int64_t)failed;
}

/* Fills t (room for 4 per layer + 1) and returns the count. Only these feed the matmul op;
 * the experts (moe op), norms, biases, router, embedding and vision tower stay as loaded. */
static int64_t quant_targets(struct eng_model *m, struct quant_target *t)
{
    const struct eng_model_config *c = &m->cfg;
    int64_t n = 0, H = c->hidden_size, attn = c->num_attention_heads * c->head_dim;
    for (int64_t i = 0; i < c->num_hidden_layers; i++) {
        struct eng_phi3_layer *L = &m->layers[i];
        if (L->experts) { /* phimoe: the attention projections */
            t[n++] = (struct quant_target){&L->q, H, "self_attn.q_proj", i, NULL};
            t[n++] = (struct quant_target){&L->k, H, "self_attn.k_proj", i, NULL};
            t[n++] = (struct quant_target){&L->v, H, "self_attn.v_proj", i, NULL};
        } else {
            t[n++] = (struct quant_target){&L->qkv, H, "self_attn.qkv_proj", i, NULL};
            t[n++] = (struct quant_target){&L->gate_up, H, "mlp.gate_up_proj", i, NULL};
            t[n++] = (struct quant_target){&L->down, c->intermediate_size, "mlp.down_proj", i,
                                           NULL};
        }
        t[n++] = (struct quant_target){&L->o, attn, "self_attn.o_proj", i, NULL};
    }
    if (m->lm_head.data && m->lm_head.data != m->embed.data)
        t[n++] = (struct quant_target){&m->lm_head, H, "lm_head", -1, NULL};
    return n;
}

int eng_model_quantize(struct eng_model *m, enum eng_quant q, int n_threads, char *err,
                       size_t errlen)
{
    if (q == ENG_QUANT_NONE)
        return 0;
    if (m->ops || m->quant_data) {
        snprintf(err, errlen, "model: quantize before importing the weights, and only once");
        return -1;
    }
    const enum kern_dtype to = q == ENG_QUANT_Q8_0 ? KERN_DTYPE_Q8_0 : KERN_DTYPE_Q4_0;
    struct quant_target *t = calloc((size_t)(4 * m->cfg.num_hidden_layers + 1), sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int64_t n = quant_targets(m, t);
    /* Sizes first: one buffer for all, each tensor 64-byte aligned. A matrix already in the
     * target format stays as it is; one whose rows are not whole blocks keeps its dtype (no
     * Phi-3 shape has one). Matrices in another block format (a GGUF file's) are requantized
     * from their exact values. */
    size_t total = 0;
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!t[i].w->data || t[i].w->dtype == to) {
            t[i].w = NULL;
            continue;
        }
        int64_t src_row = kern_dtype_row_bytes(t[i].w->dtype, t[i].k);
        int64_t row = kern_dtype_row_bytes(to, t[i].k);
        if (row < 0 || src_row <= 0 || t[i].w->n_bytes % (size_t)src_row != 0) {
            t[i].w = NULL;
            kept++;
            continue;
        }
        total += ((quant_rows(&t[i]) * (size_t)row + 63) & ~(size_t)63);
    }
    uint8_t *buf = total ? aligned_alloc(64, total) : NULL;
    if (total && !buf) {
        free(t);
        snprintf(err, errlen, "model: out of memory for %zu bytes of %s weights", total,
                 eng_quant_name(q));
        return -1;
    }
    /* Encode everything (threads over 64-row pieces), then repoint: a failure leaves the
     * model as it was. */
    size_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        t[i].out = buf + at;
        if (t[i].w)
            at += (quant_rows(&t[i]) * (size_t)kern_dtype_row_bytes(to, t[i].k) + 63) &
                  ~(size_t)63;
    }
    int64_t bad = encode_all(t, n, to, n_threads);
    if (bad == -2 || bad >= 0) {
        if (bad == -2)
            snprintf(err, errlen, "out of memory");
        else
            describe_failure(&t[bad], q, err, errlen);
        free(buf);
        free(t);
        return -1;
    }
    for (int64_t i = 0; i < n; i++)
        if (t[i].w)
            *t[i].w = (struct eng_weight){
                .data = t[i].out, .dtype = to,
                .n_bytes = quant_rows(&t[i]) * (size_t)kern_dtype_row_bytes(to, t[i].k)};
    free(t);
    m->quant_data = buf;
    m->quant = q;
    m->n_quant_kept = kept;
    return 0;
}
