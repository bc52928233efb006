/* Unit tests of engine/tokenizer_gguf.c: the tokenizer built from the real Phi-3 GGUF vocabulary
 * against the Hugging Face directory tokenizers (every id's lookups, the golden corpora and
 * hostile strings, encoded and decoded), and small GGUF images built in memory (valid ones,
 * and one refusal per check). Not a fuzzer and not a test of the GGUF reader.
 * Usage: test_tokenizer_gguf <fixtures_dir> <path of phi3-vocab.gguf>
 *        test_tokenizer_gguf --write-seeds <dir>  (the fuzz seeds of fuzz_tokenizer_gguf.c) */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "gguf.h"
#include "tokenizer.h"

#include "../test_util.h"
#include "tok_corpus.h"

/* ---- comparing two tokenizers ------------------------------------------------------------ */


/* Whether both tokenizers encode text alike (with add_special as given); prints when not and
 * counts a failure when must is set. */
static bool encode_alike(const struct eng_tokenizer *a, const struct eng_tokenizer *b, const char *text, size_t len,
                         int add_special, bool must, const char *label)
{
    int32_t *ia = NULL, *ib = NULL;
    size_t na = 0, nb = 0;
    int ra = eng_tokenizer_encode(a, text, len, add_special, &ia, &na);
    int rb = eng_tokenizer_encode(b, text, len, add_special, &ib, &nb);
    bool ok = ra == 0 && rb == 0 && same_ids(ia, na, ib, nb);
    if (!ok && must) {
        FAIL("encode(add_special=%d) of %s: rc %d / %d", add_special, label, ra, rb);
        print_ids("gguf", ia, na);
        print_ids("dir ", ib, nb);
    }
    free(ia);
    free(ib);
    return ok;
}

static void decode_alike(const struct eng_tokenizer *a, const struct eng_tokenizer *b, const int32_t *ids, size_t n,
                         const char *label)
{
    for (int skip = 0; skip <= 1; ++skip) {
        char *ta = NULL, *tb = NULL;
        size_t la = 0, lb = 0;
        int ra = eng_tokenizer_decode(a, ids, n, skip, &ta, &la);
        int rb = eng_tokenizer_decode(b, ids, n, skip, &tb, &lb);
        CHECK(ra == 0 && rb == 0 && la == lb && memcmp(ta, tb, la) == 0,
              "decode(skip_special=%d) of %s: \"%.80s\" vs \"%.80s\"", skip, label, ta ? ta : "(null)",
              tb ? tb : "(null)");
        free(ta);
        free(tb);
    }
}

/* Encodes text with a, then decodes those ids with both. */
static void roundtrip_alike(const struct eng_tokenizer *a, const struct eng_tokenizer *b, const char *text,
                            size_t len, const char *label)
{
    for (int special = 0; special <= 1; ++special) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (eng_tokenizer_encode(a, text, len, special, &ids, &n) == 0)
            decode_alike(a, b, ids, n, label);
        free(ids);
    }
}

static void info_alike(const struct eng_tokenizer *a, const struct eng_tokenizer *b, const char *what)
{
    const struct eng_tokenizer_info *x = eng_tokenizer_get_info(a), *y = eng_tokenizer_get_info(b);
    CHECK(x->n_vocab == y->n_vocab && x->bos_id == y->bos_id && x->eos_id == y->eos_id && x->unk_id == y->unk_id &&
              x->pad_id == y->pad_id && x->add_bos == y->add_bos && x->add_eos == y->add_eos &&
              x->n_added == y->n_added,
          "info differs from %s: n_vocab %d/%d bos %d/%d eos %d/%d unk %d/%d pad %d/%d add_bos %d/%d "
          "add_eos %d/%d n_added %d/%d",
          what, x->n_vocab, y->n_vocab, x->bos_id, y->bos_id, x->eos_id, y->eos_id, x->unk_id, y->unk_id, x->pad_id,
          y->pad_id, x->add_bos, y->add_bos, x->add_eos, y->add_eos, x->n_added, y->n_added);
}

/* Every id's piece, special flag, byte value and token bytes; every piece's id. */
static void lookups_alike(const struct eng_tokenizer *a, const struct eng_tokenizer *b)
{
    int bad = 0;
    int32_t n = eng_tokenizer_get_info(a)->n_vocab + 60;
    for (int32_t id = -2; id < n && bad < 10; ++id) {
        size_t la = 0, lb = 0;
        const char *pa = eng_tokenizer_id_to_piece(a, id, &la), *pb = eng_tokenizer_id_to_piece(b, id, &lb);
        bool ok = (pa == NULL) == (pb == NULL) && (pa == NULL || (la == lb && memcmp(pa, pb, la) == 0));
        ok &= eng_tokenizer_is_special(a, id) == eng_tokenizer_is_special(b, id);
        ok &= eng_tokenizer_byte_value(a, id) == eng_tokenizer_byte_value(b, id);
        char ba[64], bb[64];
        int na = eng_tokenizer_token_bytes(a, id, ba, sizeof ba), nb = eng_tokenizer_token_bytes(b, id, bb, sizeof bb);
        ok &= na == nb && (na <= 0 || memcmp(ba, bb, (size_t)na) == 0);
        if (pa != NULL)
            ok &= eng_tokenizer_piece_to_id(a, pa, la) == id && eng_tokenizer_piece_to_id(b, pa, la) == id;
        if (!ok) {
            FAIL("lookups of id %d differ: \"%s\" / \"%s\"", (int)id, pa ? pa : "(null)", pb ? pb : "(null)");
            ++bad;
        }
    }
}

/* ---- the golden corpora ------------------------------------------------------------------ */


static void expect_ids(const struct eng_tokenizer *tok, const char *text, size_t len, int add_special,
                       const cJSON *want_json, const char *label)
{
    size_t nw = 0, ng = 0;
    int32_t *want = json_ids(want_json, &nw), *got = NULL;
    int rc = eng_tokenizer_encode(tok, text, len, add_special, &got, &ng);
    if (rc != 0 || !same_ids(got, ng, want, nw)) {
        FAIL("encode(add_special=%d) of %s differs from transformers", add_special, label);
        print_ids("want", want, nw);
        print_ids("got ", got, ng);
    }
    free(want);
    free(got);
}

static void expect_decode(const struct eng_tokenizer *tok, const cJSON *ids_json, int skip, const cJSON *want_hex,
                          const char *label)
{
    size_t n = 0, nw = 0, ng = 0;
    int32_t *ids = json_ids(ids_json, &n);
    char *want = unhex(want_hex, &nw), *got = NULL;
    int rc = eng_tokenizer_decode(tok, ids, n, skip, &got, &ng);
    CHECK(want != NULL && rc == 0 && ng == nw && memcmp(got, want, nw) == 0,
          "decode(skip_special=%d) of %s differs from transformers", skip, label);
    free(ids);
    free(want);
    free(got);
}

/* Whether the prefix schemes (legacy Prepend on every segment, Metaspace "first") cannot differ
 * on text: no added token in it, so one segment at offset 0, which does not start with a space. */
static bool prefix_rule_irrelevant(const struct eng_tokenizer *tok, const char *text, size_t len)
{
    if (len > 0 && (text[0] == ' ' || (len >= 3 && memcmp(text, "\xe2\x96\x81", 3) == 0)))
        return false;
    int32_t n = eng_tokenizer_get_info(tok)->n_vocab;
    for (int32_t id = 0; id < n; ++id) {
        size_t plen = 0;
        const char *p = eng_tokenizer_id_to_piece(tok, id, &plen);
        bool added = eng_tokenizer_is_special(tok, id) || (p != NULL && strcmp(p, "</s>") == 0);
        if (added && p != NULL && plen <= len && memmem(text, len, p, plen) != NULL)
            return false;
    }
    return true;
}

struct totals {
    int texts, goldens, decode_only, meta_same, meta_differ;
};

/* corpus: transformers' goldens for the directory tokenizer `legacy` (the prefix rule the GGUF
 * tokenizer uses); `meta` is the Metaspace-"first" directory tokenizer. */
static void run_corpus(const struct eng_tokenizer *gg, const struct eng_tokenizer *legacy,
                       const struct eng_tokenizer *meta, const char *path, bool goldens_are_legacy,
                       struct totals *t)
{
    char *all = tu_read_file(path, NULL);
    CHECK(all != NULL, "cannot read %s", path);
    if (all == NULL)
        return;
    char *cursor = all, *line;
    int lineno = 0;
    while ((line = tu_next_line(&cursor)) != NULL) {
        ++lineno;
        if (*line == '\0')
            continue;
        cJSON *rec = cJSON_Parse(line);
        CHECK(rec != NULL, "%s:%d: bad JSON", path, lineno);
        char label[160];
        const cJSON *text_hex = cJSON_GetObjectItemCaseSensitive(rec, "text_hex");
        if (text_hex != NULL) {
            size_t len = 0;
            char *text = unhex(text_hex, &len);
            snprintf(label, sizeof label, "%s:%d \"%.60s\"", path, lineno, text ? text : "");
            for (int special = 0; special <= 1; ++special) {
                encode_alike(gg, legacy, text, len, special, true, label);
                bool same = encode_alike(gg, meta, text, len, special, false, label);
                if (prefix_rule_irrelevant(gg, text, len))
                    CHECK(same, "%s: differs from the Metaspace tokenizer where the prefix rule cannot matter", label);
                t->meta_same += same;
                t->meta_differ += !same;
            }
            roundtrip_alike(gg, legacy, text, len, label);
            roundtrip_alike(gg, meta, text, len, label);
            if (goldens_are_legacy) {
                const cJSON *ids = cJSON_GetObjectItemCaseSensitive(rec, "ids");
                const cJSON *ids_ns = cJSON_GetObjectItemCaseSensitive(rec, "ids_nospecial");
                expect_ids(gg, text, len, 1, ids, label);
                expect_ids(gg, text, len, 0, ids_ns, label);
                expect_decode(gg, ids, 0, cJSON_GetObjectItemCaseSensitive(rec, "decode_hex"), label);
                expect_decode(gg, ids, 1, cJSON_GetObjectItemCaseSensitive(rec, "decode_skip_hex"), label);
                expect_decode(gg, ids_ns, 0, cJSON_GetObjectItemCaseSensitive(rec, "decode_nospecial_hex"), label);
                ++t->goldens;
            }
            free(text);
            ++t->texts;
        } else {
            snprintf(label, sizeof label, "%s:%d (decode-only)", path, lineno);
            const cJSON *ids_json = cJSON_GetObjectItemCaseSensitive(rec, "decode_ids");
            size_t n = 0;
            int32_t *ids = json_ids(ids_json, &n);
            decode_alike(gg, legacy, ids, n, label);
            decode_alike(gg, meta, ids, n, label);
            expect_decode(gg, ids_json, 0, cJSON_GetObjectItemCaseSensitive(rec, "decode_hex"), label);
            expect_decode(gg, ids_json, 1, cJSON_GetObjectItemCaseSensitive(rec, "decode_skip_hex"), label);
            free(ids);
            ++t->decode_only;
        }
        cJSON_Delete(rec);
    }
    free(all);
}

/* Strings aimed at the seams: added tokens next to whitespace, literal special-token text,
 * byte fallback, scripts, empty and whitespace-only input. */
static const char *const nasty[] = {
    "",
    " ",
    "   ",
    "\n",
    "\n\n\t \r\n",
    "<s>",
    "<s> hello",
    " <s>",
    "</s>",
    "a</s>  b",
    "</s>\n\nx",
    "<unk>",
    "x <unk> y",
    "<|endoftext|>",
    "<|endoftext|>  after",
    "  <|endoftext|>",
    "<|user|>\nhi<|end|>\n<|assistant|>",
    "<|user|>\nhi<|end|>\n<|assistant|>\n",
    "<|system|>\nYou are helpful.<|end|>\n<|user|>\n  two spaces<|end|>\n<|assistant|>\n",
    "<|user|>\nSYS\nHI<|end|>\n<|assistant|>\n",
    "<|user|>",
    "<|user|>   ",
    "   <|user|>",
    "<|user|><|user|><|end|>",
    "<|user|>\xe2\x80\x83\xe3\x80\x80x", /* EM SPACE, IDEOGRAPHIC SPACE: swallowed by rstrip */
    "<|user|>\xe2\x96\x81x",
    "<|end",
    "<|end|",
    "<|end|>>",
    "<<|end|>",
    "<|placeholder1|><|placeholder6|>",
    "[PAD32011]",
    "<0x0A>",
    "\xf0\x9f\x98\x80",
    "emoji \xf0\x9f\xa6\x84\xf0\x9f\x8f\xb3\xef\xb8\x8f\xe2\x80\x8d\xf0\x9f\x8c\x88 end",
    "\xf3\xa0\x84\x80\xf3\xa0\x84\x80",
    "\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97\xe7\xac\xa6 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4",
    "\xd7\xa2\xd7\x91\xd7\xa8\xd7\x99\xd7\xaa \xd8\xa7\xd9\x84\xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a\xd8\xa9",
    "naïve café résumé",
    "x86_64 3.14159 1234567890",
    "\x01\x02\x7f",
    "tab\tseparated\tvalues\n",
    "a\xff" "b",
    "\xc0\xaf<|end|> z",
};

static void run_nasty(const struct eng_tokenizer *gg, const struct eng_tokenizer *legacy,
                      const struct eng_tokenizer *meta, struct totals *t)
{
    for (size_t i = 0; i < sizeof nasty / sizeof nasty[0]; ++i) {
        char label[96];
        snprintf(label, sizeof label, "nasty string %zu \"%.40s\"", i, nasty[i]);
        size_t len = strlen(nasty[i]);
        for (int special = 0; special <= 1; ++special) {
            encode_alike(gg, legacy, nasty[i], len, special, true, label);
            bool same = encode_alike(gg, meta, nasty[i], len, special, false, label);
            if (prefix_rule_irrelevant(gg, nasty[i], len))
                CHECK(same, "%s: differs from the Metaspace tokenizer where the prefix rule cannot matter", label);
            t->meta_same += same;
            t->meta_differ += !same;
        }
        roundtrip_alike(gg, legacy, nasty[i], len, label);
        roundtrip_alike(gg, meta, nasty[i], len, label);
        ++t->texts;
    }
    /* reference/phi3-models.md 6.3: llama.cpp's ids for this prompt (with its Phi-3 rstrip). */
    static const char prompt[] = "<|user|>\nSYS\nHI<|end|>\n<|assistant|>\n";
    static const int32_t want[] = {1, 32010, 317, 21554, 13, 17628, 32007, 32001};
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(eng_tokenizer_encode(gg, prompt, strlen(prompt), 1, &ids, &n) == 0 &&
              same_ids(ids, n, want, sizeof want / sizeof want[0]),
          "the 6.3 prompt does not give llama.cpp's ids");
    free(ids);
    /* A NUL inside the text is text too. */
    static const char with_nul[] = "a\0<|end|>\0b";
    encode_alike(gg, legacy, with_nul, sizeof with_nul - 1, 1, true, "text with NUL bytes");
}

static void test_phi3_vocab(const char *fixtures, const char *gguf_path)
{
    char err[256] = "", dir[1024];
    struct eng_gguf *g = NULL;
    if (eng_gguf_open_file(gguf_path, &g, err, sizeof err) != 0) {
        FAIL("open %s: %s", gguf_path, err);
        return;
    }
    struct eng_tokenizer *gg = NULL, *legacy = NULL, *meta = NULL;
    int rc = eng_tokenizer_load_gguf(g, &gg, err, sizeof err);
    CHECK(rc == 0 && gg != NULL, "load_gguf: %d %s", rc, err);
    eng_gguf_close(g); /* the tokenizer must not refer to the file any more */
    snprintf(dir, sizeof dir, "%s/tokenizer/phi3-legacy", fixtures);
    CHECK(eng_tokenizer_load_dir(dir, &legacy, err, sizeof err) == 0, "load %s: %s", dir, err);
    snprintf(dir, sizeof dir, "%s/tokenizer/phi3", fixtures);
    CHECK(eng_tokenizer_load_dir(dir, &meta, err, sizeof err) == 0, "load %s: %s", dir, err);
    if (gg == NULL || legacy == NULL || meta == NULL)
        goto out;

    const struct eng_tokenizer_info *info = eng_tokenizer_get_info(gg);
    CHECK(info->n_vocab == 32011 && info->bos_id == 1 && info->eos_id == 32000 && info->unk_id == 0 &&
              info->pad_id == 32000 && info->add_bos == 1 && info->add_eos == 0 && info->n_added == 14,
          "info: n_vocab %d bos %d eos %d unk %d pad %d add_bos %d add_eos %d n_added %d", info->n_vocab,
          info->bos_id, info->eos_id, info->unk_id, info->pad_id, info->add_bos, info->add_eos, info->n_added);
    info_alike(gg, legacy, "phi3-legacy");
    info_alike(gg, meta, "phi3");
    lookups_alike(gg, legacy);
    lookups_alike(gg, meta);

    struct totals t = {0};
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/corpus-legacy.jsonl", fixtures);
    run_corpus(gg, legacy, meta, path, true, &t);
    snprintf(path, sizeof path, "%s/tokenizer/corpus.jsonl", fixtures);
    run_corpus(gg, legacy, meta, path, false, &t);
    run_nasty(gg, legacy, meta, &t);
    printf("phi3-vocab.gguf: %d texts encoded (with and without special tokens) and decoded alike with "
           "phi3-legacy, %d against transformers' goldens, %d decode-only cases; against the Metaspace "
           "phi3 directory %d encodes equal, %d differ (the prefix rule)\n",
           t.texts, t.goldens, t.decode_only, t.meta_same, t.meta_differ);
    CHECK(t.goldens >= 300 && t.decode_only >= 20, "corpus too small: %d goldens %d decode-only", t.goldens,
          t.decode_only);
out:
    eng_tokenizer_destroy(gg);
    eng_tokenizer_destroy(legacy);
    eng_tokenizer_destroy(meta);
}

/* ---- small GGUF images ------------------------------------------------------------------- */

struct gb {
    uint8_t *p;
    size_t n, cap;
    uint64_t n_kv;
};

static void gb_bytes(struct gb *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (b->p == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void gb_le(struct gb *b, uint64_t v, int bytes)
{
    uint8_t x[8];
    for (int i = 0; i < bytes; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    gb_bytes(b, x, (size_t)bytes);
}

static void gb_strn(struct gb *b, const char *s, size_t n)
{
    gb_le(b, n, 8);
    gb_bytes(b, s, n);
}

static void gb_key(struct gb *b, const char *key, enum eng_gguf_type t)
{
    gb_strn(b, key, strlen(key));
    gb_le(b, (uint32_t)t, 4);
    b->n_kv++;
}

static void gb_kv_str(struct gb *b, const char *key, const char *v)
{
    gb_key(b, key, ENG_GGUF_STRING);
    gb_strn(b, v, strlen(v));
}

static void gb_kv_u32(struct gb *b, const char *key, uint32_t v)
{
    gb_key(b, key, ENG_GGUF_U32);
    gb_le(b, v, 4);
}

static void gb_kv_bool(struct gb *b, const char *key, int v)
{
    gb_key(b, key, ENG_GGUF_BOOL);
    gb_le(b, (uint64_t)v, 1);
}

static void gb_arr(struct gb *b, const char *key, enum eng_gguf_type et, uint64_t count)
{
    gb_key(b, key, ENG_GGUF_ARRAY);
    gb_le(b, (uint32_t)et, 4);
    gb_le(b, count, 8);
}

#define MAX_MINI 300

/* A small vocabulary and the keys around it; each refusal test changes one thing. */
struct mini {
    int n;
    const char *piece[MAX_MINI];
    size_t piece_len[MAX_MINI]; /* 0: strlen */
    float score[MAX_MINI];
    int32_t type[MAX_MINI];
    const char *model;          /* NULL: no tokenizer.ggml.model */
    const char *arch;           /* NULL: no general.architecture */
    bool no_tokens, tokens_as_i32;
    int scores_delta;           /* written scores count minus n */
    int64_t bos, eos, unk, pad; /* -1: key absent */
    bool bos_as_string, add_bos_as_u32, remove_extra_ws;
    int add_bos, add_space_prefix; /* -1: key absent */
};

/* <unk> <s> </s> ▁ a b ▁a ab <|end|> [PAD9]: SentencePiece part 0..7, <|end|> an added token,
 * one padding row. */
static struct mini mini_base(void)
{
    static const char *const pieces[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "\xe2\x96\x81" "a", "ab",
                                         "<|end|>", "[PAD9]"};
    static const int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1, 3, 2};
    static const float scores[] = {0, 0, 0, -5, -6, -7, -1, -2, 0, 0};
    struct mini m;
    memset(&m, 0, sizeof m);
    m.n = 10;
    for (int i = 0; i < m.n; ++i) {
        m.piece[i] = pieces[i];
        m.type[i] = types[i];
        m.score[i] = scores[i];
    }
    m.model = "llama";
    m.bos = 1;
    m.eos = 2;
    m.unk = 0;
    m.pad = -1;
    m.add_bos = 1;
    m.add_space_prefix = -1;
    return m;
}

/* mini_base with the 256 byte pieces appended to the SentencePiece part. */
static struct mini mini_bytes(int n_bytes)
{
    static char names[256][7];
    struct mini m = mini_base();
    m.n = 8;
    for (int v = 0; v < n_bytes; ++v) {
        snprintf(names[v], sizeof names[v], "<0x%02X>", v);
        m.piece[m.n] = names[v];
        m.type[m.n] = 6;
        m.score[m.n] = 0;
        m.n++;
    }
    return m;
}

static uint8_t *build(const struct mini *m, size_t *len)
{
    struct gb b = {0};
    gb_bytes(&b, "GGUF", 4);
    gb_le(&b, 3, 4);
    gb_le(&b, 0, 8); /* tensors */
    gb_le(&b, 0, 8); /* n_kv, patched below */
    if (m->arch != NULL)
        gb_kv_str(&b, "general.architecture", m->arch);
    if (m->model != NULL)
        gb_kv_str(&b, "tokenizer.ggml.model", m->model);
    if (m->tokens_as_i32) {
        gb_arr(&b, "tokenizer.ggml.tokens", ENG_GGUF_I32, (uint64_t)m->n);
        for (int i = 0; i < m->n; ++i)
            gb_le(&b, (uint64_t)i, 4);
    } else if (!m->no_tokens) {
        gb_arr(&b, "tokenizer.ggml.tokens", ENG_GGUF_STRING, (uint64_t)m->n);
        for (int i = 0; i < m->n; ++i)
            gb_strn(&b, m->piece[i], m->piece_len[i] ? m->piece_len[i] : strlen(m->piece[i]));
    }
    int n_scores = m->n + m->scores_delta;
    gb_arr(&b, "tokenizer.ggml.scores", ENG_GGUF_F32, (uint64_t)n_scores);
    for (int i = 0; i < n_scores; ++i) {
        uint32_t bits;
        float f = i < m->n ? m->score[i] : 0.0f;
        memcpy(&bits, &f, 4);
        gb_le(&b, bits, 4);
    }
    gb_arr(&b, "tokenizer.ggml.token_type", ENG_GGUF_I32, (uint64_t)m->n);
    for (int i = 0; i < m->n; ++i)
        gb_le(&b, (uint32_t)m->type[i], 4);
    if (m->bos_as_string)
        gb_kv_str(&b, "tokenizer.ggml.bos_token_id", "1");
    else if (m->bos >= 0)
        gb_kv_u32(&b, "tokenizer.ggml.bos_token_id", (uint32_t)m->bos);
    if (m->eos >= 0)
        gb_kv_u32(&b, "tokenizer.ggml.eos_token_id", (uint32_t)m->eos);
    if (m->unk >= 0)
        gb_kv_u32(&b, "tokenizer.ggml.unknown_token_id", (uint32_t)m->unk);
    if (m->pad >= 0)
        gb_kv_u32(&b, "tokenizer.ggml.padding_token_id", (uint32_t)m->pad);
    if (m->add_bos_as_u32)
        gb_kv_u32(&b, "tokenizer.ggml.add_bos_token", 1);
    else if (m->add_bos >= 0)
        gb_kv_bool(&b, "tokenizer.ggml.add_bos_token", m->add_bos);
    if (m->add_space_prefix >= 0)
        gb_kv_bool(&b, "tokenizer.ggml.add_space_prefix", m->add_space_prefix);
    if (m->remove_extra_ws)
        gb_kv_bool(&b, "tokenizer.ggml.remove_extra_whitespaces", 1);
    for (int i = 0; i < 8; i++)
        b.p[16 + i] = (uint8_t)(b.n_kv >> (8 * i));
    /* An exactly-sized copy: ASan then sees any read past the image. */
    uint8_t *img = tu_xmalloc(b.n);
    memcpy(img, b.p, b.n);
    *len = b.n;
    free(b.p);
    return img;
}

/* Loads m; returns the tokenizer (NULL on failure, with rc and err filled). */
static struct eng_tokenizer *load_mini(const struct mini *m, uint8_t **img, int *rc, char *err, size_t errlen)
{
    size_t len = 0;
    *img = build(m, &len);
    struct eng_gguf *g = NULL;
    struct eng_tokenizer *tok = NULL;
    if (eng_gguf_open_buffer(*img, len, &g, err, errlen) != 0) {
        *rc = 1;
        return NULL;
    }
    *rc = eng_tokenizer_load_gguf(g, &tok, err, errlen);
    eng_gguf_close(g);
    return tok;
}

static void expect_refused(const char *label, const struct mini *m, const char *want)
{
    char err[256] = "";
    uint8_t *img = NULL;
    int rc = 0;
    struct eng_tokenizer *tok = load_mini(m, &img, &rc, err, sizeof err);
    CHECK(tok == NULL && rc == ENG_TOK_ERR_INVALID && strstr(err, want) != NULL,
          "%s: rc %d, message \"%s\" (want one with \"%s\")", label, rc, err, want);
    eng_tokenizer_destroy(tok);
    free(img);
}

static void expect_encode(const struct eng_tokenizer *tok, const char *text, int add_special, const int32_t *want,
                          size_t n_want, const char *label)
{
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = eng_tokenizer_encode(tok, text, strlen(text), add_special, &ids, &n);
    if (rc != 0 || !same_ids(ids, n, want, n_want)) {
        FAIL("%s: encode \"%s\" rc %d", label, text, rc);
        print_ids("want", want, n_want);
        print_ids("got ", ids, n);
    }
    free(ids);
}

#define EXPECT_ENCODE(tok, text, special, label, ...)                                                              \
    do {                                                                                                           \
        static const int32_t want_[] = {__VA_ARGS__};                                                              \
        expect_encode(tok, text, special, want_, sizeof want_ / sizeof want_[0], label);                           \
    } while (0)

static void test_mini_valid(void)
{
    char err[256] = "";
    uint8_t *img = NULL;
    int rc = 0;
    struct mini m = mini_base();
    struct eng_tokenizer *tok = load_mini(&m, &img, &rc, err, sizeof err);
    CHECK(tok != NULL && rc == 0, "mini vocabulary: %d %s", rc, err);
    free(img);
    if (tok != NULL) {
        const struct eng_tokenizer_info *info = eng_tokenizer_get_info(tok);
        CHECK(info->n_vocab == 9 && info->n_added == 4 && info->bos_id == 1 && info->eos_id == 2 &&
                  info->unk_id == 0 && info->pad_id == -1 && info->add_bos == 1 && info->add_eos == 0,
              "mini info: n_vocab %d n_added %d", info->n_vocab, info->n_added);
        /* "ab a" -> "▁ab▁a": the merge of highest score first (▁a), twice. */
        EXPECT_ENCODE(tok, "ab a", 1, "mini", 1, 6, 5, 6);
        EXPECT_ENCODE(tok, "ab a", 0, "mini", 6, 5, 6);
        /* Not a Phi-3 file: <|end|> keeps the space after it, and the next segment gets "▁" too. */
        EXPECT_ENCODE(tok, "<|end|> a", 0, "mini", 8, 3, 6);
        /* No byte pieces: a character without a piece is <unk>. */
        EXPECT_ENCODE(tok, "z", 0, "mini", 3, 0);
        CHECK(eng_tokenizer_is_special(tok, 8) == 1 && eng_tokenizer_is_special(tok, 0) == 1 &&
                  eng_tokenizer_is_special(tok, 4) == 0,
              "mini special flags");
        CHECK(eng_tokenizer_id_to_piece(tok, 9, NULL) == NULL, "padding row has a piece");
        char *text = NULL;
        size_t len = 0;
        static const int32_t ids[] = {1, 6, 5, 8, 9, 6};
        CHECK(eng_tokenizer_decode(tok, ids, 6, 0, &text, &len) == 0 && strcmp(text, "<s> ab<|end|> a") == 0,
              "mini decode \"%s\"", text ? text : "(null)");
        free(text);
        CHECK(eng_tokenizer_decode(tok, ids, 6, 1, &text, &len) == 0 && strcmp(text, "ab a") == 0,
              "mini decode skip \"%s\"", text ? text : "(null)");
        free(text);
    }
    eng_tokenizer_destroy(tok);

    /* A Phi-3 file: <|end|> swallows the whitespace after it. */
    m.arch = "phi3";
    tok = load_mini(&m, &img, &rc, err, sizeof err);
    free(img);
    CHECK(tok != NULL, "mini phi3: %s", err);
    if (tok != NULL)
        EXPECT_ENCODE(tok, "<|end|> \n a", 0, "mini phi3", 8, 6);
    eng_tokenizer_destroy(tok);

    /* add_space_prefix false: no "▁" in front, none stripped in decode. */
    m = mini_base();
    m.add_space_prefix = 0;
    tok = load_mini(&m, &img, &rc, err, sizeof err);
    free(img);
    CHECK(tok != NULL, "mini no prefix: %s", err);
    if (tok != NULL) {
        EXPECT_ENCODE(tok, "ab a", 0, "mini no prefix", 7, 6);
        char *text = NULL;
        size_t len = 0;
        static const int32_t ids[] = {6, 5};
        CHECK(eng_tokenizer_decode(tok, ids, 2, 0, &text, &len) == 0 && strcmp(text, " ab") == 0,
              "mini no prefix decode \"%s\"", text ? text : "(null)");
        free(text);
    }
    eng_tokenizer_destroy(tok);

    /* Defaults: no special-id keys and no add_bos key (bos 1, eos 2, unk 0, pad none, add_bos). */
    m = mini_base();
    m.bos = m.eos = m.unk = m.pad = -1;
    m.add_bos = -1;
    tok = load_mini(&m, &img, &rc, err, sizeof err);
    free(img);
    CHECK(tok != NULL, "mini defaults: %s", err);
    if (tok != NULL) {
        const struct eng_tokenizer_info *info = eng_tokenizer_get_info(tok);
        CHECK(info->bos_id == 1 && info->eos_id == 2 && info->unk_id == 0 && info->pad_id == -1 && info->add_bos,
              "mini defaults info");
    }
    eng_tokenizer_destroy(tok);

    /* A single-character control or user-defined token inside the SentencePiece part: an added
     * token, and sentencepiece still encodes that character (found by fuzzing: as a control
     * piece it failed every encode of a space). */
    m = mini_base();
    m.type[3] = 4;
    tok = load_mini(&m, &img, &rc, err, sizeof err);
    free(img);
    CHECK(tok != NULL, "mini user-defined U+2581: %s", err);
    if (tok != NULL) {
        EXPECT_ENCODE(tok, "b b", 0, "mini user-defined U+2581", 3, 5, 3, 5);
        EXPECT_ENCODE(tok, "\xe2\x96\x81", 0, "mini user-defined U+2581", 3); /* the added token */
        CHECK(eng_tokenizer_get_info(tok)->n_added == 5 && eng_tokenizer_is_special(tok, 3) == 0,
              "mini user-defined U+2581: added, not special");
    }
    eng_tokenizer_destroy(tok);

    /* All 256 byte pieces: byte fallback for a character without a piece. */
    m = mini_bytes(256);
    tok = load_mini(&m, &img, &rc, err, sizeof err);
    free(img);
    CHECK(tok != NULL, "mini bytes: %s", err);
    if (tok != NULL) {
        EXPECT_ENCODE(tok, "\xe4\xb8\xad", 0, "mini bytes", 3, 8 + 0xe4, 8 + 0xb8, 8 + 0xad);
        CHECK(eng_tokenizer_byte_value(tok, 8 + 0x41) == 0x41, "byte value of <0x41>");
        char *text = NULL;
        size_t len = 0;
        static const int32_t ids[] = {3, 8 + 0xe4, 8 + 0xb8, 8 + 0xad};
        CHECK(eng_tokenizer_decode(tok, ids, 4, 0, &text, &len) == 0 && strcmp(text, "\xe4\xb8\xad") == 0,
              "mini bytes decode");
        free(text);
    }
    eng_tokenizer_destroy(tok);
}

static void test_mini_refusals(void)
{
    struct mini m = mini_base();
    m.scores_delta = -1;
    expect_refused("scores count", &m, "scores");
    m = mini_base();
    m.scores_delta = 1;
    expect_refused("scores count +1", &m, "scores");

    m = mini_base();
    m.bos = 100;
    expect_refused("bos out of range", &m, "bos_token_id 100");
    m = mini_base();
    m.eos = 9; /* the padding row: in the file, not a token */
    expect_refused("eos on a padding row", &m, "eos_token_id 9");
    m = mini_base();
    m.pad = 9;
    expect_refused("pad on a padding row", &m, "padding_token_id 9");
    m = mini_base();
    m.bos_as_string = true;
    expect_refused("bos id a string", &m, "bos_token_id");
    m = mini_base();
    m.add_bos_as_u32 = true;
    expect_refused("add_bos not a bool", &m, "add_bos_token");

    /* reliability.md K3 / L7: a tiny vocabulary and default special ids, never re-checked. */
    m = mini_base();
    m.n = 2;
    m.piece[0] = "<unk>";
    m.piece[1] = "a";
    m.type[1] = 1;
    m.bos = m.eos = m.unk = m.pad = -1;
    expect_refused("default eos out of range", &m, "eos_token_id 2");

    m = mini_base();
    m.piece[4] = "\xff";
    expect_refused("non-UTF-8 piece", &m, "token 4 is not valid UTF-8");
    m = mini_base();
    m.piece[5] = "\xed\xa0\x80"; /* a surrogate */
    expect_refused("surrogate piece", &m, "token 5 is not valid UTF-8");
    m = mini_base();
    m.piece[9] = "[PAD\xc0]"; /* even on a padding row */
    expect_refused("non-UTF-8 padding row", &m, "token 9 is not valid UTF-8");
    m = mini_base();
    m.piece[4] = "a\0b";
    m.piece_len[4] = 3;
    expect_refused("NUL in a piece", &m, "NUL");
    m = mini_base();
    m.piece[4] = "";
    expect_refused("empty piece", &m, "token 4 is 0 bytes long");

    m = mini_bytes(256);
    m.piece[8 + 7] = "<0xZZ>";
    expect_refused("byte piece <0xZZ>", &m, "byte token 15 is not spelled <0xHH>");
    m = mini_bytes(256);
    m.piece[8 + 10] = "<0x0a>";
    expect_refused("lowercase byte piece", &m, "byte token 18");
    m = mini_bytes(256);
    m.piece[8 + 10] = "<0x0A>x";
    expect_refused("long byte piece", &m, "byte token 18");
    m = mini_bytes(255);
    expect_refused("255 byte pieces", &m, "255 byte tokens");
    m = mini_bytes(256);
    m.type[8 + 3] = 1;
    expect_refused("a byte piece typed normal", &m, "255 byte tokens");

    m = mini_base();
    m.model = "gpt2";
    expect_refused("gpt2", &m, "tokenizer model gpt2 is not supported");
    m = mini_base();
    m.model = "t5\n";
    expect_refused("unprintable model", &m, "tokenizer model (unprintable name) is not supported");
    m = mini_base();
    m.model = NULL;
    expect_refused("no model", &m, "tokenizer.ggml.model: missing");
    m = mini_base();
    m.remove_extra_ws = true;
    expect_refused("remove_extra_whitespaces", &m, "remove_extra_whitespaces");

    m = mini_base();
    m.no_tokens = true;
    expect_refused("no tokens array", &m, "tokenizer.ggml.tokens: missing");
    m = mini_base();
    m.tokens_as_i32 = true;
    expect_refused("tokens not strings", &m, "not an array of strings");
    m = mini_base();
    m.n = 0;
    expect_refused("0 tokens", &m, "0 tokens");

    m = mini_base();
    m.type[4] = 7;
    expect_refused("type 7", &m, "token 4 has type 7");
    m = mini_base();
    m.type[4] = 0;
    expect_refused("type 0", &m, "token 4 has type 0");
    m = mini_base();
    for (int i = 3; i < 8; ++i)
        m.type[i] = 3;
    expect_refused("no normal pieces", &m, "no normal or byte tokens");

    m = mini_base();
    m.piece[7] = "a";
    expect_refused("duplicate normal pieces", &m, "tokens 4 and 7 have the same piece");
    m = mini_base();
    m.piece[8] = "<s>";
    expect_refused("duplicate added token", &m, "tokens 1 and 8 have the same piece");

    m = mini_base();
    m.score[5] = NAN;
    expect_refused("NaN score", &m, "token 5 has a NaN score");

    m = mini_base();
    m.unk = 4;
    expect_refused("unk on a normal piece", &m, "unknown_token_id 4");
    m = mini_base();
    m.unk = 8; /* <|end|>: a control token after the SentencePiece part */
    expect_refused("unk outside the SentencePiece part", &m, "unknown_token_id 8");
}

/* Writes small images (accepted ones and refusals) as seeds for tests/fuzz/fuzz_tokenizer_gguf.c. */
static int write_seeds(const char *dir)
{
    struct seed {
        const char *name;
        struct mini m;
    } seeds[11];
    int n = 0;
    seeds[n].name = "mini";
    seeds[n++].m = mini_base();
    seeds[n].name = "mini_phi3";
    seeds[n].m = mini_base();
    seeds[n++].m.arch = "phi3";
    seeds[n].name = "mini_no_space_prefix";
    seeds[n].m = mini_base();
    seeds[n++].m.add_space_prefix = 0;
    seeds[n].name = "mini_defaults";
    seeds[n].m = mini_base();
    seeds[n].m.bos = seeds[n].m.eos = seeds[n].m.unk = seeds[n].m.pad = -1;
    seeds[n++].m.add_bos = -1;
    seeds[n].name = "mini_user_defined_space"; /* once failed every encode of a space */
    seeds[n].m = mini_base();
    seeds[n++].m.type[3] = 4;
    seeds[n].name = "bytes256";
    seeds[n++].m = mini_bytes(256);
    seeds[n].name = "bad_byte_piece";
    seeds[n].m = mini_bytes(256);
    seeds[n++].m.piece[8 + 7] = "<0xZZ>";
    seeds[n].name = "bad_gpt2";
    seeds[n].m = mini_base();
    seeds[n++].m.model = "gpt2";
    seeds[n].name = "bad_duplicate";
    seeds[n].m = mini_base();
    seeds[n++].m.piece[7] = "a";
    seeds[n].name = "bad_scores_count";
    seeds[n].m = mini_base();
    seeds[n++].m.scores_delta = -1;
    seeds[n].name = "bad_bos_id";
    seeds[n].m = mini_base();
    seeds[n++].m.bos = 100;
    for (int i = 0; i < n; ++i) {
        char path[1024];
        size_t len = 0;
        uint8_t *img = build(&seeds[i].m, &len);
        snprintf(path, sizeof path, "%s/%s", dir, seeds[i].name);
        FILE *f = fopen(path, "wb");
        if (f == NULL || fwrite(img, 1, len, f) != len || fclose(f) != 0) {
            perror(path);
            free(img);
            return 1;
        }
        free(img);
    }
    printf("wrote %d seeds to %s\n", n, dir);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0)
        return write_seeds(argv[2]);
    if (argc < 3) {
        fprintf(stderr, "usage: %s <fixtures_dir> <phi3-vocab.gguf> | --write-seeds <dir>\n", argv[0]);
        return 2;
    }
    test_mini_valid();
    test_mini_refusals();
    test_phi3_vocab(argv[1], argv[2]);
    return tu_finish("test_tokenizer_gguf");
}
