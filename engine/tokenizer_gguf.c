/* The tokenizer built from a GGUF file's tokenizer.ggml.* metadata (llama.cpp's "llama", i.e.
 * SentencePiece, vocabulary): validates tokens, scores and types, writes a SentencePiece
 * ModelProto for the plain pieces and registers control and user-defined tokens as added tokens.
 * Not a GGUF parser (gguf.c) and not an encoder: tokenizer.c encodes and decodes. */
#include "tokenizer.h"
#include "tokenizer_internal.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "file_util.h"
#include "gguf.h"
#include "json.h"
#include "model.h"
#include "sp_wrapper.h"

#define MAX_TOKENS ((uint64_t)1 << 20)
#define MAX_PIECE_BYTES 4096
/* sentencepiece parses its ModelProto with an int length. */
#define MAX_MODEL_BYTES ((uint64_t)INT32_MAX)

/* GGUF token types; SentencePiece numbers its piece types the same way. */
enum tok_type {
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

/* Field numbers of sentencepiece_model.proto (ModelProto, its SentencePiece, TrainerSpec and
 * NormalizerSpec messages). */
enum sp_proto {
    SP_PROTO_MODEL_PIECES = 1,
    SP_PROTO_MODEL_TRAINER_SPEC = 2,
    SP_PROTO_MODEL_NORMALIZER_SPEC = 3,
    SP_PROTO_PIECE_PIECE = 1,
    SP_PROTO_PIECE_SCORE = 2,
    SP_PROTO_PIECE_TYPE = 3,
    SP_PROTO_TRAINER_MODEL_TYPE = 3,
    SP_PROTO_TRAINER_VOCAB_SIZE = 4,
    SP_PROTO_TRAINER_ALLOW_WHITESPACE_ONLY_PIECES = 26,
    SP_PROTO_TRAINER_BYTE_FALLBACK = 35,
    SP_PROTO_TRAINER_UNK_ID = 40,
    SP_PROTO_TRAINER_BOS_ID = 41,
    SP_PROTO_TRAINER_EOS_ID = 42,
    SP_PROTO_TRAINER_PAD_ID = 43,
    SP_PROTO_NORMALIZER_NAME = 1,
    SP_PROTO_NORMALIZER_ADD_DUMMY_PREFIX = 3,
    SP_PROTO_NORMALIZER_REMOVE_EXTRA_WHITESPACES = 4,
    SP_PROTO_NORMALIZER_ESCAPE_WHITESPACES = 5,
    SP_PROTO_MODEL_TYPE_BPE = 2,
};

/* What the metadata says, checked. Pieces point into the GGUF image. */
struct vocab {
    uint32_t n;                  /* tokens in the file */
    struct eng_gguf_str *piece;  /* [n] */
    float *score;                /* [n] */
    uint8_t *type;               /* [n] enum tok_type */
    int32_t n_sp;                /* SentencePiece part: ids 0 .. n_sp-1 */
    int32_t n_vocab;             /* one past the last token that is not a padding row */
    int n_byte;                  /* byte pieces */
    uint64_t sp_piece_bytes;     /* sum of the SentencePiece part's piece lengths */
    int64_t bos, eos, unk, pad;  /* -1: none */
    int add_bos, add_eos, add_space_prefix;
    bool phi3;                   /* the Phi-3 family's rstrip rule applies */
};

/* ---- metadata --------------------------------------------------------------------------- */

static bool str_eq(const struct eng_gguf_str *s, const char *want)
{
    size_t n = strlen(want);
    return s->len == n && memcmp(s->data, want, n) == 0;
}

/* A name fit for an error message: printable ASCII up to 32 bytes, else a placeholder. */
static const char *printable(const struct eng_gguf_str *s, char *buf, size_t cap)
{
    if (s->len == 0 || s->len >= cap || s->len > 32)
        return "(unprintable name)";
    for (uint64_t i = 0; i < s->len; ++i)
        if (s->data[i] < 0x20 || s->data[i] > 0x7e)
            return "(unprintable name)";
    memcpy(buf, s->data, (size_t)s->len);
    buf[s->len] = '\0';
    return buf;
}

static int check_model(const struct eng_gguf *g, char *err, size_t errlen)
{
    struct eng_gguf_str model;
    if (eng_gguf_find_kv(g, "tokenizer.ggml.model") == NULL) {
        eng_set_err(err, errlen, "tokenizer.ggml.model: missing (the file has no tokenizer)");
        return ENG_TOK_ERR_INVALID;
    }
    if (eng_gguf_get_str(g, "tokenizer.ggml.model", &model, err, errlen) != 0)
        return ENG_TOK_ERR_INVALID;
    if (!str_eq(&model, "llama")) {
        char name[40];
        eng_set_err(err, errlen, "tokenizer model %s is not supported (only \"llama\", a SentencePiece vocabulary)",
                    printable(&model, name, sizeof name));
        return ENG_TOK_ERR_INVALID;
    }
    /* Normalizers llama.cpp reads for other tokenizer models: refused rather than ignored. */
    int remove_ws = 0;
    if (eng_gguf_find_kv(g, "tokenizer.ggml.remove_extra_whitespaces") != NULL &&
        (eng_gguf_get_bool(g, "tokenizer.ggml.remove_extra_whitespaces", &remove_ws, err, errlen) != 0 || remove_ws)) {
        if (remove_ws)
            eng_set_err(err, errlen, "tokenizer.ggml.remove_extra_whitespaces: not supported for a llama tokenizer");
        return ENG_TOK_ERR_INVALID;
    }
    if (eng_gguf_find_kv(g, "tokenizer.ggml.precompiled_charsmap") != NULL) {
        eng_set_err(err, errlen, "tokenizer.ggml.precompiled_charsmap: not supported for a llama tokenizer");
        return ENG_TOK_ERR_INVALID;
    }
    return 0;
}

/* The array key, of element type et, with n elements (n_want 0: any count, returned in *n). */
static const struct eng_gguf_kv *array_kv(const struct eng_gguf *g, const char *key, enum eng_gguf_type et,
                                          const char *et_name, uint64_t *n, char *err, size_t errlen)
{
    const struct eng_gguf_kv *kv = eng_gguf_find_kv(g, key);
    if (kv == NULL) {
        eng_set_err(err, errlen, "%s: missing", key);
        return NULL;
    }
    if (kv->type != ENG_GGUF_ARRAY || kv->elem_type != et) {
        eng_set_err(err, errlen, "%s: not an array of %s", key, et_name);
        return NULL;
    }
    *n = kv->count;
    return kv;
}

static int read_arrays(const struct eng_gguf *g, struct vocab *v, char *err, size_t errlen)
{
    uint64_t n, n_scores, n_types;
    const struct eng_gguf_kv *tokens = array_kv(g, "tokenizer.ggml.tokens", ENG_GGUF_STRING, "strings", &n, err, errlen);
    if (tokens == NULL)
        return ENG_TOK_ERR_INVALID;
    if (n < 1 || n > MAX_TOKENS) {
        eng_set_err(err, errlen, "tokenizer.ggml.tokens: %llu tokens (want 1 .. %llu)", (unsigned long long)n,
                    (unsigned long long)MAX_TOKENS);
        return ENG_TOK_ERR_INVALID;
    }
    const struct eng_gguf_kv *scores =
        array_kv(g, "tokenizer.ggml.scores", ENG_GGUF_F32, "f32", &n_scores, err, errlen);
    if (scores == NULL)
        return ENG_TOK_ERR_INVALID;
    const struct eng_gguf_kv *types =
        array_kv(g, "tokenizer.ggml.token_type", ENG_GGUF_I32, "i32", &n_types, err, errlen);
    if (types == NULL)
        return ENG_TOK_ERR_INVALID;
    if (n_scores != n || n_types != n) {
        eng_set_err(err, errlen, "tokenizer.ggml: %llu tokens but %llu scores and %llu token types",
                    (unsigned long long)n, (unsigned long long)n_scores, (unsigned long long)n_types);
        return ENG_TOK_ERR_INVALID;
    }
    v->n = (uint32_t)n;
    v->piece = malloc((size_t)n * sizeof *v->piece);
    v->score = malloc((size_t)n * sizeof *v->score);
    v->type = malloc((size_t)n * sizeof *v->type);
    if (v->piece == NULL || v->score == NULL || v->type == NULL) {
        eng_set_err(err, errlen, "out of memory");
        return ENG_TOK_ERR_NOMEM;
    }
    for (uint32_t i = 0; i < v->n; ++i) {
        int32_t t = 0;
        if (eng_gguf_array_str(g, tokens, i, &v->piece[i]) != 0 || eng_gguf_array_f32(scores, i, &v->score[i]) != 0 ||
            eng_gguf_array_i32(types, i, &t) != 0) {
            eng_set_err(err, errlen, "tokenizer.ggml: cannot read token %u", (unsigned)i);
            return ENG_TOK_ERR_INVALID;
        }
        if (t < TOK_TYPE_NORMAL || t > TOK_TYPE_BYTE) {
            eng_set_err(err, errlen, "tokenizer.ggml.token_type: token %u has type %d (want 1 .. 6)", (unsigned)i,
                        (int)t);
            return ENG_TOK_ERR_INVALID;
        }
        v->type[i] = (uint8_t)t;
    }
    return 0;
}

/* An optional id key: its value, or dflt when absent. */
static int opt_id(const struct eng_gguf *g, const char *key, int64_t dflt, int64_t *out, char *err, size_t errlen)
{
    *out = dflt;
    if (eng_gguf_find_kv(g, key) == NULL)
        return 0;
    uint32_t id;
    if (eng_gguf_get_u32(g, key, &id, err, errlen) != 0)
        return ENG_TOK_ERR_INVALID;
    *out = id;
    return 0;
}

static int opt_bool(const struct eng_gguf *g, const char *key, int dflt, int *out, char *err, size_t errlen)
{
    *out = dflt;
    if (eng_gguf_find_kv(g, key) == NULL)
        return 0;
    return eng_gguf_get_bool(g, key, out, err, errlen) == 0 ? 0 : ENG_TOK_ERR_INVALID;
}

/* Whether s holds the lowercase ASCII word want, compared case-insensitively. */
static bool contains_ci(const struct eng_gguf_str *s, const char *want)
{
    size_t n = strlen(want);
    for (uint64_t i = 0; i + n <= s->len; ++i) {
        size_t k = 0;
        while (k < n && tolower((unsigned char)s->data[i + k]) == want[k])
            ++k;
        if (k == n)
            return true;
    }
    return false;
}

/* llama.cpp's test is general.name containing "phi-3" or "phi3"; Phi-3.5 files are named
 * "Phi 3.5 ..." by newer converters, so general.architecture counts too. */
static bool is_phi3_family(const struct eng_gguf *g)
{
    struct eng_gguf_str s;
    if (eng_gguf_find_kv(g, "general.architecture") != NULL &&
        eng_gguf_get_str(g, "general.architecture", &s, NULL, 0) == 0 &&
        (str_eq(&s, "phi3") || str_eq(&s, "phimoe")))
        return true;
    return eng_gguf_find_kv(g, "general.name") != NULL && eng_gguf_get_str(g, "general.name", &s, NULL, 0) == 0 &&
           (contains_ci(&s, "phi3") || contains_ci(&s, "phi-3"));
}

static int read_settings(const struct eng_gguf *g, struct vocab *v, char *err, size_t errlen)
{
    /* Defaults are llama.cpp's for a llama vocabulary; they are range-checked like given ids. */
    if (opt_id(g, "tokenizer.ggml.bos_token_id", 1, &v->bos, err, errlen) != 0 ||
        opt_id(g, "tokenizer.ggml.eos_token_id", 2, &v->eos, err, errlen) != 0 ||
        opt_id(g, "tokenizer.ggml.unknown_token_id", 0, &v->unk, err, errlen) != 0 ||
        opt_id(g, "tokenizer.ggml.padding_token_id", -1, &v->pad, err, errlen) != 0 ||
        opt_bool(g, "tokenizer.ggml.add_bos_token", 1, &v->add_bos, err, errlen) != 0 ||
        opt_bool(g, "tokenizer.ggml.add_eos_token", 0, &v->add_eos, err, errlen) != 0 ||
        opt_bool(g, "tokenizer.ggml.add_space_prefix", 1, &v->add_space_prefix, err, errlen) != 0)
        return ENG_TOK_ERR_INVALID;
    v->phi3 = is_phi3_family(g);
    return 0;
}

/* ---- pieces ----------------------------------------------------------------------------- */

static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1; /* sentencepiece spells byte pieces with uppercase hex only */
}

/* The byte of a piece spelled exactly "<0xHH>", or -1. */
static int byte_piece_value(const struct eng_gguf_str *s)
{
    const unsigned char *p = (const unsigned char *)s->data;
    if (s->len != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>')
        return -1;
    int hi = hex_digit(p[3]), lo = hex_digit(p[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static bool is_padding_row(const struct vocab *v, uint32_t i)
{
    return (int64_t)i >= v->n_sp && (v->type[i] == TOK_TYPE_UNKNOWN || v->type[i] == TOK_TYPE_UNUSED);
}

static int check_pieces(struct vocab *v, char *err, size_t errlen)
{
    v->n_sp = 0;
    for (uint32_t i = 0; i < v->n; ++i) {
        const struct eng_gguf_str *s = &v->piece[i];
        if (s->len < 1 || s->len > MAX_PIECE_BYTES) {
            eng_set_err(err, errlen, "tokenizer.ggml.tokens: token %u is %llu bytes long (want 1 .. %d)", (unsigned)i,
                        (unsigned long long)s->len, MAX_PIECE_BYTES);
            return ENG_TOK_ERR_INVALID;
        }
        const unsigned char *p = (const unsigned char *)s->data;
        for (size_t k = 0; k < s->len;) {
            size_t w = eng_utf8_seq_len(p + k, (size_t)s->len - k);
            if (w == 0 || p[k] == 0) {
                eng_set_err(err, errlen, "tokenizer.ggml.tokens: token %u is %s", (unsigned)i,
                            w == 0 ? "not valid UTF-8" : "holding a NUL byte");
                return ENG_TOK_ERR_INVALID;
            }
            k += w;
        }
        if (v->type[i] == TOK_TYPE_BYTE) {
            if (byte_piece_value(s) < 0) {
                eng_set_err(err, errlen, "tokenizer.ggml.tokens: byte token %u is not spelled <0xHH>", (unsigned)i);
                return ENG_TOK_ERR_INVALID;
            }
            v->n_byte++;
        }
        if (v->type[i] == TOK_TYPE_NORMAL || v->type[i] == TOK_TYPE_BYTE)
            v->n_sp = (int32_t)i + 1;
    }
    if (v->n_sp == 0) {
        eng_set_err(err, errlen, "tokenizer.ggml.token_type: no normal or byte tokens");
        return ENG_TOK_ERR_INVALID;
    }
    if (v->n_byte != 0 && v->n_byte != 256) {
        eng_set_err(err, errlen, "tokenizer.ggml.tokens: %d byte tokens (want 0 or 256)", v->n_byte);
        return ENG_TOK_ERR_INVALID;
    }
    v->sp_piece_bytes = 0;
    for (int32_t i = 0; i < v->n_sp; ++i) {
        if (isnan(v->score[i])) {
            eng_set_err(err, errlen, "tokenizer.ggml.scores: token %d has a NaN score", (int)i);
            return ENG_TOK_ERR_INVALID;
        }
        v->sp_piece_bytes += v->piece[i].len;
    }
    v->n_vocab = v->n_sp;
    for (uint32_t i = (uint32_t)v->n_sp; i < v->n; ++i)
        if (!is_padding_row(v, i))
            v->n_vocab = (int32_t)i + 1;
    return 0;
}

static int check_special_ids(const struct vocab *v, char *err, size_t errlen)
{
    static const char *const names[4] = {"bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id"};
    const int64_t ids[4] = {v->bos, v->eos, v->unk, v->pad};
    for (int k = 0; k < 4; ++k) {
        if (ids[k] < 0)
            continue;
        if (ids[k] >= v->n_vocab || is_padding_row(v, (uint32_t)ids[k])) {
            eng_set_err(err, errlen, "tokenizer.ggml.%s %lld is not a token (n_vocab %d%s)", names[k],
                        (long long)ids[k], (int)v->n_vocab, ids[k] < v->n_vocab ? ", a padding row" : "");
            return ENG_TOK_ERR_INVALID;
        }
    }
    /* sentencepiece needs its unknown piece inside the model. */
    if (v->unk >= v->n_sp || v->type[v->unk] == TOK_TYPE_NORMAL || v->type[v->unk] == TOK_TYPE_BYTE) {
        eng_set_err(err, errlen, "tokenizer.ggml.unknown_token_id %lld is not an unknown or control token of the "
                    "SentencePiece part (ids 0 .. %d)", (long long)v->unk, (int)v->n_sp - 1);
        return ENG_TOK_ERR_INVALID;
    }
    return 0;
}

struct piece_ref {
    const char *p;
    size_t len;
    uint32_t id;
};

static int cmp_piece_ref(const void *pa, const void *pb)
{
    const struct piece_ref *a = pa, *b = pb;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    int c = memcmp(a->p, b->p, a->len);
    if (c != 0)
        return c;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Two tokens with one piece are refused: sentencepiece refuses duplicate pieces, and an added
 * token's text must name one id. Padding rows never match text and are left out. */
static int check_unique(const struct vocab *v, char *err, size_t errlen)
{
    struct piece_ref *refs = malloc((size_t)v->n_vocab * sizeof *refs);
    if (refs == NULL) {
        eng_set_err(err, errlen, "out of memory");
        return ENG_TOK_ERR_NOMEM;
    }
    size_t n = 0;
    for (uint32_t i = 0; i < (uint32_t)v->n_vocab; ++i)
        if (!is_padding_row(v, i))
            refs[n++] = (struct piece_ref){v->piece[i].data, (size_t)v->piece[i].len, i};
    qsort(refs, n, sizeof *refs, cmp_piece_ref);
    int rc = 0;
    for (size_t k = 1; k < n && rc == 0; ++k) {
        if (refs[k].len == refs[k - 1].len && memcmp(refs[k].p, refs[k - 1].p, refs[k].len) == 0) {
            eng_set_err(err, errlen, "tokenizer.ggml.tokens: tokens %u and %u have the same piece",
                        (unsigned)refs[k - 1].id, (unsigned)refs[k].id);
            rc = ENG_TOK_ERR_INVALID;
        }
    }
    free(refs);
    return rc;
}

/* ---- the SentencePiece ModelProto ---------------------------------------------------------- */

/* A protobuf writer: with p NULL it only counts the bytes, so one function sizes and writes. */
struct pb {
    uint8_t *p;
    size_t n;
};

static void pb_byte(struct pb *w, uint8_t b)
{
    if (w->p != NULL)
        w->p[w->n] = b;
    w->n++;
}

static void pb_varint(struct pb *w, uint64_t v)
{
    while (v >= 0x80) {
        pb_byte(w, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    pb_byte(w, (uint8_t)v);
}

enum pb_wire { PB_WIRE_VARINT = 0, PB_WIRE_LEN = 2, PB_WIRE_FIXED32 = 5 };

static void pb_tag(struct pb *w, int field, enum pb_wire wire)
{
    pb_varint(w, ((uint64_t)field << 3) | (uint64_t)wire);
}

/* int32 and enum fields: negative values go out sign-extended to 10 bytes, as protobuf says. */
static void pb_int(struct pb *w, int field, int64_t v)
{
    pb_tag(w, field, PB_WIRE_VARINT);
    pb_varint(w, (uint64_t)v);
}

static void pb_bytes(struct pb *w, int field, const void *data, size_t len)
{
    pb_tag(w, field, PB_WIRE_LEN);
    pb_varint(w, len);
    if (w->p != NULL && len > 0)
        memcpy(w->p + w->n, data, len);
    w->n += len;
}

static void pb_f32(struct pb *w, int field, float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    pb_tag(w, field, PB_WIRE_FIXED32);
    for (int k = 0; k < 4; ++k)
        pb_byte(w, (uint8_t)(bits >> (8 * k)));
}

static enum tok_type sp_piece_type(const struct vocab *v, int32_t id)
{
    if (id == v->unk)
        return TOK_TYPE_UNKNOWN;
    switch (v->type[id]) {
    case TOK_TYPE_NORMAL:
    case TOK_TYPE_BYTE:
        return (enum tok_type)v->type[id];
    case TOK_TYPE_CONTROL:
    case TOK_TYPE_USER_DEFINED:
        /* Added tokens are split off before sentencepiece sees the text; as control pieces it
         * never produces them either (user-defined pieces it would match itself). Except a
         * single character: sentencepiece's BPE starts from characters, and one that spells a
         * control piece fails the whole encode (0.1.97: "all normalized characters are not
         * consumed"); as a normal piece it is that character's id, as in llama.cpp. */
        if (eng_utf8_seq_len((const unsigned char *)v->piece[id].data, (size_t)v->piece[id].len) ==
            v->piece[id].len)
            return TOK_TYPE_NORMAL;
        return TOK_TYPE_CONTROL;
    default:
        return TOK_TYPE_UNUSED;
    }
}

static void put_piece(struct pb *w, const struct vocab *v, int32_t id)
{
    pb_bytes(w, SP_PROTO_PIECE_PIECE, v->piece[id].data, (size_t)v->piece[id].len);
    pb_f32(w, SP_PROTO_PIECE_SCORE, v->score[id]);
    pb_int(w, SP_PROTO_PIECE_TYPE, sp_piece_type(v, id));
}

static void put_trainer_spec(struct pb *w, const struct vocab *v)
{
    /* BPE: llama.cpp's llama tokenizer merges by score the way sentencepiece's BPE does. BOS,
     * EOS and padding are added by tokenizer.c, never by sentencepiece. */
    pb_int(w, SP_PROTO_TRAINER_MODEL_TYPE, SP_PROTO_MODEL_TYPE_BPE);
    pb_int(w, SP_PROTO_TRAINER_VOCAB_SIZE, v->n_sp);
    pb_int(w, SP_PROTO_TRAINER_ALLOW_WHITESPACE_ONLY_PIECES, 1);
    pb_int(w, SP_PROTO_TRAINER_BYTE_FALLBACK, v->n_byte > 0);
    pb_int(w, SP_PROTO_TRAINER_UNK_ID, v->unk);
    pb_int(w, SP_PROTO_TRAINER_BOS_ID, -1);
    pb_int(w, SP_PROTO_TRAINER_EOS_ID, -1);
    pb_int(w, SP_PROTO_TRAINER_PAD_ID, -1);
}

static void put_normalizer_spec(struct pb *w)
{
    /* No dummy prefix: tokenizer.c's prefix rule places the U+2581 per segment. */
    pb_bytes(w, SP_PROTO_NORMALIZER_NAME, "identity", 8);
    pb_int(w, SP_PROTO_NORMALIZER_ADD_DUMMY_PREFIX, 0);
    pb_int(w, SP_PROTO_NORMALIZER_REMOVE_EXTRA_WHITESPACES, 0);
    pb_int(w, SP_PROTO_NORMALIZER_ESCAPE_WHITESPACES, 1);
}

static void put_model(struct pb *w, const struct vocab *v)
{
    for (int32_t id = 0; id < v->n_sp; ++id) {
        struct pb size = {NULL, 0};
        put_piece(&size, v, id);
        pb_tag(w, SP_PROTO_MODEL_PIECES, PB_WIRE_LEN);
        pb_varint(w, size.n);
        put_piece(w, v, id);
    }
    struct pb size = {NULL, 0};
    put_trainer_spec(&size, v);
    pb_tag(w, SP_PROTO_MODEL_TRAINER_SPEC, PB_WIRE_LEN);
    pb_varint(w, size.n);
    put_trainer_spec(w, v);
    size.n = 0;
    put_normalizer_spec(&size);
    pb_tag(w, SP_PROTO_MODEL_NORMALIZER_SPEC, PB_WIRE_LEN);
    pb_varint(w, size.n);
    put_normalizer_spec(w);
}

static int load_sp(struct eng_tokenizer *tok, const struct vocab *v, char *err, size_t errlen)
{
    /* Each piece costs at most 32 bytes besides its text: tags, lengths, score, type. */
    if (v->sp_piece_bytes + 32 * (uint64_t)v->n_sp + 256 > MAX_MODEL_BYTES) {
        eng_set_err(err, errlen, "tokenizer.ggml.tokens: too large for a SentencePiece model");
        return ENG_TOK_ERR_INVALID;
    }
    struct pb size = {NULL, 0};
    put_model(&size, v);
    struct pb w = {malloc(size.n), 0};
    if (w.p == NULL) {
        eng_set_err(err, errlen, "out of memory");
        return ENG_TOK_ERR_NOMEM;
    }
    put_model(&w, v); /* the same deterministic walk as the sizing pass: exactly size.n bytes */
    if (w.n != size.n) {
        free(w.p);
        eng_set_err(err, errlen, "internal error: the SentencePiece model changed size");
        return ENG_TOK_ERR_INTERNAL;
    }
    int rc = eng_sp_load(w.p, w.n, &tok->sp, err, errlen);
    free(w.p);
    if (rc != 0)
        return rc == ENG_SP_ERR_NOMEM ? ENG_TOK_ERR_NOMEM : ENG_TOK_ERR_INVALID;
    tok->n_sp = eng_sp_n_pieces(tok->sp);
    if (tok->n_sp != v->n_sp) {
        eng_set_err(err, errlen, "sentencepiece: %d pieces loaded of %d", (int)tok->n_sp, (int)v->n_sp);
        return ENG_TOK_ERR_INVALID;
    }
    return 0;
}

/* ---- added tokens ----------------------------------------------------------------------- */

/* The Phi-3 family's tokens that keep the whitespace after them (HF rstrip false). */
static bool phi3_keeps_whitespace(const char *content)
{
    return strcmp(content, "<unk>") == 0 || strcmp(content, "<s>") == 0 || strcmp(content, "<|endoftext|>") == 0;
}

static int add_tokens(struct eng_tokenizer *tok, const struct vocab *v, char *err, size_t errlen)
{
    char *content = malloc(MAX_PIECE_BYTES + 1);
    if (content == NULL) {
        eng_set_err(err, errlen, "out of memory");
        return ENG_TOK_ERR_NOMEM;
    }
    int rc = 0;
    for (int32_t id = 0; id < v->n_vocab && rc == 0; ++id) {
        bool user = v->type[id] == TOK_TYPE_USER_DEFINED;
        if (!user && v->type[id] != TOK_TYPE_CONTROL && id != v->unk)
            continue;
        memcpy(content, v->piece[id].data, (size_t)v->piece[id].len);
        content[v->piece[id].len] = '\0';
        bool rstrip = v->phi3 && !phi3_keeps_whitespace(content);
        rc = eng_tokenizer_add_token(tok, content, id, false, rstrip, !user || id == v->unk, err, errlen);
    }
    free(content);
    return rc;
}

/* ---- entry ------------------------------------------------------------------------------ */

int eng_tokenizer_load_gguf(const struct eng_gguf *g, struct eng_tokenizer **out, char *err, size_t errlen)
{
    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (g == NULL) {
        eng_set_err(err, errlen, "tokenizer: no GGUF file");
        return ENG_TOK_ERR_INVALID;
    }
    struct vocab v = {0};
    struct eng_tokenizer *tok = NULL;
    int rc;
    if ((rc = check_model(g, err, errlen)) != 0 || (rc = read_arrays(g, &v, err, errlen)) != 0 ||
        (rc = read_settings(g, &v, err, errlen)) != 0 || (rc = check_pieces(&v, err, errlen)) != 0 ||
        (rc = check_special_ids(&v, err, errlen)) != 0 || (rc = check_unique(&v, err, errlen)) != 0)
        goto fail;
    tok = calloc(1, sizeof *tok);
    if (tok == NULL) {
        eng_set_err(err, errlen, "out of memory");
        rc = ENG_TOK_ERR_NOMEM;
        goto fail;
    }
    if ((rc = load_sp(tok, &v, err, errlen)) != 0 || (rc = add_tokens(tok, &v, err, errlen)) != 0 ||
        (rc = eng_tokenizer_build_tables(tok, err, errlen)) != 0)
        goto fail;
    if (tok->info.n_vocab != v.n_vocab) {
        eng_set_err(err, errlen, "internal error: %d tokens built for a vocabulary of %d",
                    tok->info.n_vocab, (int)v.n_vocab);
        rc = ENG_TOK_ERR_INTERNAL;
        goto fail;
    }
    tok->prefix = v.add_space_prefix ? PREFIX_LEGACY : PREFIX_NEVER;
    tok->strip_leading_space = v.add_space_prefix != 0;
    tok->info.bos_id = (int32_t)v.bos;
    tok->info.eos_id = (int32_t)v.eos;
    tok->info.unk_id = (int32_t)v.unk;
    tok->info.pad_id = (int32_t)v.pad;
    tok->info.add_bos = v.add_bos;
    tok->info.add_eos = v.add_eos;
    free(v.piece);
    free(v.score);
    free(v.type);
    *out = tok;
    return 0;
fail:
    free(v.piece);
    free(v.score);
    free(v.type);
    eng_tokenizer_destroy(tok);
    return rc;
}

int eng_tokenizer_load_path(const char *path, struct eng_tokenizer **out, char *err, size_t errlen)
{
    if (!eng_model_is_gguf(path))
        return eng_tokenizer_load_dir(path, out, err, errlen);
    *out = NULL;
    struct eng_gguf *g = NULL;
    if (eng_gguf_open_file(path, &g, err, errlen) != 0)
        return ENG_TOK_ERR_IO;
    int rc;
    if (eng_gguf_find_kv(g, "tokenizer.ggml.tokens") == NULL) {
        eng_set_err(err, errlen, "the GGUF file has no tokenizer (no tokenizer.ggml.tokens)");
        rc = ENG_TOK_ERR_IO;
    } else {
        rc = eng_tokenizer_load_gguf(g, out, err, errlen);
    }
    eng_gguf_close(g);
    return rc;
}
