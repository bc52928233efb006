/* Golden tests of engine/tokenizer.c against transformers' AutoTokenizer (fast) on the real
 * Phi-3 vocabulary: tests/fixtures/tokenizer/corpus.jsonl from scripts/make_tokenizer_goldens.py.
 * Usage: test_tokenizer <fixtures_dir> [tokenizer subdir] [corpus file name]. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tokenizer.h"

#include "../test_util.h"
#include "tok_corpus.h"



/* Encodes text and compares with the golden ids; returns true on match. */
static bool check_encode(const struct eng_tokenizer *tok, const char *text, size_t len, int add_special,
                         const cJSON *want_json, const char *label)
{
    size_t n_want;
    int32_t *want = json_ids(want_json, &n_want);
    int32_t *got = NULL;
    size_t n_got = 0;
    int rc = eng_tokenizer_encode(tok, text, len, add_special, &got, &n_got);
    bool ok = rc == 0 && same_ids(got, n_got, want, n_want);
    if (!ok) {
        ++tu_failures;
        fprintf(stderr, "FAIL encode(add_special=%d) rc=%d of %s\n", add_special, rc, label);
        print_ids("want", want, n_want);
        print_ids("got ", got, n_got);
    }
    free(want);
    free(got);
    return ok;
}

static bool check_decode(const struct eng_tokenizer *tok, const cJSON *ids_json, int skip, const cJSON *want_hex,
                         const char *label)
{
    size_t n_ids, n_want = 0;
    int32_t *ids = json_ids(ids_json, &n_ids);
    char *want = unhex(want_hex, &n_want);
    char *got = NULL;
    size_t n_got = 0;
    int rc = eng_tokenizer_decode(tok, ids, n_ids, skip, &got, &n_got);
    bool ok = want != NULL && rc == 0 && n_got == n_want && memcmp(got, want, n_want) == 0 && got[n_got] == '\0';
    if (!ok) {
        ++tu_failures;
        fprintf(stderr, "FAIL decode(skip_special=%d) rc=%d of %s\n  want \"%.200s\"\n  got  \"%.200s\"\n", skip, rc,
                label, want ? want : "(bad hex)", got ? got : "(null)");
    }
    free(ids);
    free(want);
    free(got);
    return ok;
}

static void run_corpus(const struct eng_tokenizer *tok, const char *path)
{
    char *all = tu_read_file(path, NULL);
    CHECK(all != NULL, "cannot read %s", path);
    if (all == NULL)
        return;
    int n_enc = 0, n_dec = 0, ok_enc = 0, ok_dec = 0, n_roundtrip = 0, n_hf_not_roundtrip = 0;
    char *cursor = all, *line;
    while ((line = tu_next_line(&cursor)) != NULL) {
        if (*line != '\0') {
            cJSON *rec = cJSON_Parse(line);
            CHECK(rec != NULL, "bad JSON line in %s", path);
            const cJSON *text_hex = cJSON_GetObjectItemCaseSensitive(rec, "text_hex");
            if (text_hex != NULL) {
                size_t tlen = 0;
                char *text = unhex(text_hex, &tlen);
                char label[96];
                snprintf(label, sizeof label, "corpus line %d \"%.40s\"", n_enc + n_dec + 1, text);
                const cJSON *ids = cJSON_GetObjectItemCaseSensitive(rec, "ids");
                const cJSON *ids_ns = cJSON_GetObjectItemCaseSensitive(rec, "ids_nospecial");
                bool ok = check_encode(tok, text, tlen, 1, ids, label);
                ok &= check_encode(tok, text, tlen, 0, ids_ns, label);
                ok &= check_decode(tok, ids, 0, cJSON_GetObjectItemCaseSensitive(rec, "decode_hex"), label);
                ok &= check_decode(tok, ids, 1, cJSON_GetObjectItemCaseSensitive(rec, "decode_skip_hex"), label);
                ok &= check_decode(tok, ids_ns, 0, cJSON_GetObjectItemCaseSensitive(rec, "decode_nospecial_hex"),
                                   label);
                /* Round trip: decode(encode(x)) is x wherever HF's own decode gives x back; where
                 * it does not (whitespace swallowed by rstrip tokens, the stripped leading space)
                 * the decode goldens above are the reference. */
                int32_t *e = NULL;
                size_t ne = 0, nd = 0, hlen = 0;
                char *d = NULL;
                char *hf = unhex(cJSON_GetObjectItemCaseSensitive(rec, "decode_nospecial_hex"), &hlen);
                if (eng_tokenizer_encode(tok, text, tlen, 0, &e, &ne) == 0 &&
                    eng_tokenizer_decode(tok, e, ne, 0, &d, &nd) == 0 && hf != NULL) {
                    bool hf_rt = hlen == tlen && memcmp(hf, text, tlen) == 0;
                    bool our_rt = nd == tlen && memcmp(d, text, tlen) == 0;
                    CHECK(hf_rt == our_rt, "round trip differs from HF for %s", label);
                    n_roundtrip += our_rt;
                    n_hf_not_roundtrip += !hf_rt;
                }
                free(e);
                free(d);
                free(hf);
                free(text);
                ++n_enc;
                ok_enc += ok;
            } else {
                char label[64];
                snprintf(label, sizeof label, "decode-only line %d", n_enc + n_dec + 1);
                const cJSON *ids = cJSON_GetObjectItemCaseSensitive(rec, "decode_ids");
                bool ok = check_decode(tok, ids, 0, cJSON_GetObjectItemCaseSensitive(rec, "decode_hex"), label);
                ok &= check_decode(tok, ids, 1, cJSON_GetObjectItemCaseSensitive(rec, "decode_skip_hex"), label);
                ++n_dec;
                ok_dec += ok;
            }
            cJSON_Delete(rec);
        }
    }
    printf("%s: %d/%d encode cases match (ids with and without special tokens, 3 decodes each), "
           "%d/%d decode-only cases match; %d round-trip exactly, %d do not round-trip in HF either\n",
           path, ok_enc, n_enc, ok_dec, n_dec, n_roundtrip, n_hf_not_roundtrip);
    CHECK(n_enc >= 300, "corpus too small: %d", n_enc);
    free(all);
}

static void expect_piece(const struct eng_tokenizer *tok, int32_t id, const char *piece)
{
    size_t len = 0;
    const char *p = eng_tokenizer_id_to_piece(tok, id, &len);
    CHECK(p != NULL && len == strlen(piece) && strcmp(p, piece) == 0, "piece of %d is \"%s\", want \"%s\"", (int)id,
          p ? p : "(null)", piece);
    CHECK(eng_tokenizer_piece_to_id(tok, piece, strlen(piece)) == id, "id of \"%s\" is %d, want %d", piece,
          (int)eng_tokenizer_piece_to_id(tok, piece, strlen(piece)), (int)id);
}

static void expect_same_encode(const struct eng_tokenizer *tok, const char *a, size_t na, const char *b, size_t nb)
{
    int32_t *ia = NULL, *ib = NULL;
    size_t la = 0, lb = 0;
    int ra = eng_tokenizer_encode(tok, a, na, 1, &ia, &la);
    int rb = eng_tokenizer_encode(tok, b, nb, 1, &ib, &lb);
    CHECK(ra == 0 && rb == 0 && same_ids(ia, la, ib, lb), "invalid UTF-8 %zu bytes not encoded as its replacement",
          na);
    free(ia);
    free(ib);
}

static void test_lookups(const struct eng_tokenizer *tok)
{
    const struct eng_tokenizer_info *info = eng_tokenizer_get_info(tok);
    CHECK(info->n_vocab == 32011, "n_vocab %d", (int)info->n_vocab);
    CHECK(info->bos_id == 1 && info->eos_id == 32000 && info->unk_id == 0 && info->pad_id == 32000,
          "special ids bos %d eos %d unk %d pad %d", (int)info->bos_id, (int)info->eos_id, (int)info->unk_id,
          (int)info->pad_id);
    CHECK(info->add_bos == 1 && info->add_eos == 0, "add_bos %d add_eos %d", info->add_bos, info->add_eos);
    CHECK(info->n_added == 14, "n_added %d", info->n_added);

    expect_piece(tok, 0, "<unk>");
    expect_piece(tok, 1, "<s>");
    expect_piece(tok, 2, "</s>");
    expect_piece(tok, 3, "<0x00>");
    expect_piece(tok, 13, "<0x0A>");
    expect_piece(tok, 258, "<0xFF>");
    expect_piece(tok, 259, "\xe2\x96\x81\xe2\x96\x81");
    expect_piece(tok, 15043, "\xe2\x96\x81Hello");
    expect_piece(tok, 29871, "\xe2\x96\x81");
    expect_piece(tok, 31999, "\xe7\xbb\x99");
    expect_piece(tok, 32000, "<|endoftext|>");
    expect_piece(tok, 32001, "<|assistant|>");
    expect_piece(tok, 32007, "<|end|>");
    expect_piece(tok, 32010, "<|user|>");
    CHECK(eng_tokenizer_id_to_piece(tok, 32011, NULL) == NULL, "padding row 32011 has a piece");
    CHECK(eng_tokenizer_id_to_piece(tok, 32063, NULL) == NULL, "padding row 32063 has a piece");
    CHECK(eng_tokenizer_id_to_piece(tok, -1, NULL) == NULL, "id -1 has a piece");
    CHECK(eng_tokenizer_piece_to_id(tok, "no such piece", 13) == -1, "unknown piece found");
    CHECK(eng_tokenizer_piece_to_id(tok, "<|end|", 6) == -1, "prefix of an added token found");
    CHECK(eng_tokenizer_piece_to_id(tok, "", 0) == -1, "empty piece found");

    CHECK(eng_tokenizer_byte_value(tok, 3) == 0, "byte of <0x00>");
    CHECK(eng_tokenizer_byte_value(tok, 13) == 10, "byte of <0x0A>");
    CHECK(eng_tokenizer_byte_value(tok, 258) == 255, "byte of <0xFF>");
    CHECK(eng_tokenizer_byte_value(tok, 259) == -1, "byte of a normal piece");
    CHECK(eng_tokenizer_byte_value(tok, 32007) == -1, "byte of an added token");
    CHECK(eng_tokenizer_byte_value(tok, 40000) == -1, "byte of an id out of range");

    static const int32_t special[] = {0, 1, 32000, 32001, 32002, 32005, 32006, 32007, 32009, 32010};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; ++i)
        CHECK(eng_tokenizer_is_special(tok, special[i]) == 1, "%d not special", (int)special[i]);
    static const int32_t plain[] = {2, 3, 13, 29871, 31999, 32011, 32063, -5, 1 << 30};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; ++i)
        CHECK(eng_tokenizer_is_special(tok, plain[i]) == 0, "%d special", (int)plain[i]);
}

static void test_untrusted_input(const struct eng_tokenizer *tok)
{
    /* Ill-formed UTF-8 encodes as Python's errors="replace" text would. */
    expect_same_encode(tok, "a\xff" "b", 3, "a\xef\xbf\xbd" "b", 5);
    expect_same_encode(tok, "x\xe4\xb8", 3, "x\xef\xbf\xbd", 4);
    expect_same_encode(tok, "\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 9);
    expect_same_encode(tok, "\xc0\xaf<|end|> z", 11, "\xef\xbf\xbd\xef\xbf\xbd<|end|> z", 15);
    expect_same_encode(tok, "\xf4\x90\x80\x80", 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 12);

    size_t big = ENG_TOK_MAX_TEXT_BYTES + 1;
    char *text = malloc(big);
    CHECK(text != NULL, "malloc");
    if (text != NULL) {
        memset(text, 'a', big);
        int32_t *ids = (int32_t *)text;
        size_t n = 7;
        CHECK(eng_tokenizer_encode(tok, text, big, 1, &ids, &n) == ENG_TOK_ERR_TOO_LONG && ids == NULL && n == 0,
              "oversized input not refused");
        free(text);
    }
    char *out = (char *)"x";
    size_t len = 3;
    int32_t one = 15043;
    CHECK(eng_tokenizer_decode(tok, &one, ENG_TOK_MAX_DECODE_IDS + 1, 0, &out, &len) == ENG_TOK_ERR_TOO_LONG &&
              out == NULL && len == 0,
          "oversized decode not refused");
    CHECK(eng_tokenizer_decode(tok, NULL, 0, 0, &out, &len) == 0 && out != NULL && len == 0 && out[0] == '\0',
          "empty decode");
    free(out);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(eng_tokenizer_encode(tok, NULL, 0, 0, &ids, &n) == 0 && n == 0 && ids == NULL, "empty encode");
    CHECK(eng_tokenizer_encode(tok, NULL, 5, 0, &ids, &n) == ENG_TOK_ERR_INVALID, "NULL text accepted");
}

/* encode_max refuses exactly the texts with more than max ids, and gives the same ids otherwise;
 * whitespace swallowed by an rstrip token costs nothing; a huge byte-fallback text is refused
 * without being tokenized. */
static void test_encode_max(const struct eng_tokenizer *tok)
{
    static const char *texts[] = {
        "Hello world", "<|user|>   x<|end|>\n<|assistant|>", "\xf3\xa0\x84\x80\xf3\xa0\x84\x80 emoji \xf0\x9f\x98\x80",
        "a", "", "   leading and trailing   ", "\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97",
    };
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        for (int special = 0; special <= 1; special++) {
            int32_t *want = NULL, *got = NULL;
            size_t nw = 0, ng = 0;
            size_t len = strlen(texts[t]);
            if (eng_tokenizer_encode(tok, texts[t], len, special, &want, &nw) != 0) {
                FAIL("encode '%s'", texts[t]);
                continue;
            }
            CHECK(eng_tokenizer_encode_max(tok, texts[t], len, special, nw, &got, &ng) == 0 && ng == nw &&
                      (nw == 0 || memcmp(got, want, nw * sizeof *want) == 0),
                  "'%s': encode_max(%zu) differs from encode", texts[t], nw);
            free(got);
            got = NULL;
            if (nw > 0)
                CHECK(eng_tokenizer_encode_max(tok, texts[t], len, special, nw - 1, &got, &ng) ==
                              ENG_TOK_ERR_TOO_LONG && got == NULL && ng == 0,
                      "'%s': %zu ids accepted under a limit of %zu", texts[t], nw, nw - 1);
            free(want);
        }
    }
    /* <|end|> swallows the whitespace after it: 100k spaces are one id, not 100k bytes of text. */
    size_t big = 100000;
    char *ws = malloc(big + 8);
    if (ws == NULL) {
        FAIL("malloc");
        return;
    }
    memcpy(ws, "<|end|>", 7);
    memset(ws + 7, ' ', big);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(eng_tokenizer_encode_max(tok, ws, big + 7, 0, 4, &ids, &n) == 0 && n == 1 && ids[0] == 32007,
          "rstrip whitespace counted against the limit (%zu ids)", n);
    free(ids);
    free(ws);
    /* 4 MiB of a character with no piece (4 byte-fallback ids each): refused at once. */
    size_t nchars = 1u << 20;
    char *fb = malloc(4 * nchars);
    if (fb == NULL) {
        FAIL("malloc");
        return;
    }
    for (size_t i = 0; i < nchars; i++)
        memcpy(fb + 4 * i, "\xf3\xa0\x84\x80", 4);
    ids = NULL;
    CHECK(eng_tokenizer_encode_max(tok, fb, 4 * nchars, 1, 4096, &ids, &n) == ENG_TOK_ERR_TOO_LONG && ids == NULL,
          "4 MiB byte-fallback text not refused");
    free(fb);
}

static void test_load_errors(const char *fixtures)
{
    struct eng_tokenizer *tok = (struct eng_tokenizer *)&tu_failures;
    char err[256] = "";
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/does-not-exist", fixtures);
    CHECK(eng_tokenizer_load_dir(path, &tok, err, sizeof err) == ENG_TOK_ERR_IO && tok == NULL &&
              strstr(err, "tokenizer.model") != NULL,
          "missing dir: %s", err);
    /* A directory with tokenizer files but no tokenizer.model: the models fixture dir itself. */
    snprintf(path, sizeof path, "%s/tokenizer", fixtures);
    CHECK(eng_tokenizer_load_dir(path, &tok, err, sizeof err) == ENG_TOK_ERR_IO && tok == NULL, "no model: %s", err);
    eng_tokenizer_destroy(NULL);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <fixtures_dir> [tokenizer subdir] [corpus]\n", argv[0]);
        return 2;
    }
    const char *fixtures = argv[1];
    const char *sub = argc > 2 ? argv[2] : "phi3";
    const char *corpus = argc > 3 ? argv[3] : "corpus.jsonl";
    char dir[1024], corpus_path[1024], err[256] = "";
    snprintf(dir, sizeof dir, "%s/tokenizer/%s", fixtures, sub);
    snprintf(corpus_path, sizeof corpus_path, "%s/tokenizer/%s", fixtures, corpus);

    struct eng_tokenizer *tok = NULL;
    int rc = eng_tokenizer_load_dir(dir, &tok, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "FAIL loading %s: %d %s\n", dir, rc, err);
        return 1;
    }
    if (strcmp(sub, "phi3") == 0) {
        test_lookups(tok);
        test_untrusted_input(tok);
        test_encode_max(tok);
        test_load_errors(fixtures);
    }
    run_corpus(tok, corpus_path);
    eng_tokenizer_destroy(tok);
    return tu_finish("test_tokenizer");
}
