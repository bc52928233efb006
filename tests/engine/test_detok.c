/* Tests of engine/detok.c on the real Phi-3 vocabulary: the incremental detokenizer against
 * one-shot eng_tokenizer_decode (property test over random and real token streams), and the
 * stop-string matcher (table cases plus random splits against a whole-string reference).
 * Usage: test_detok <fixtures_dir>. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "detok.h"
#include "tokenizer.h"

#include "../test_util.h"

/* Stop printing after this many failures so one bug does not flood the log. */
#define MAX_REPORTED_FAILS 20

#define BYTE_ID(b) ((int32_t)(3 + (b))) /* "<0x00>" is id 3 in the Llama-2 vocabulary */
#define PAD_LIMIT 32064                 /* the model's vocab_size: ids n_vocab..32063 are padding */

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t rnd(void)
{
    return tu_xorshift64(&rng_state);
}

static size_t rnd_below(size_t n)
{
    return n > 0 ? (size_t)(rnd() % n) : 0;
}

struct text {
    char *p;
    size_t len, cap;
};

static void text_put(struct text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 64;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *p = realloc(t->p, cap);
        if (p == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        t->p = p;
        t->cap = cap;
    }
    if (n > 0)
        memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

/* 0: ill-formed, 1: complete valid UTF-8, 2: valid but ends inside a character. Written as a
 * table of code point ranges, independently of the validator in detok.c. */
static int utf8_class(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t need;
        unsigned min;
        if (c < 0x80) {
            ++i;
            continue;
        }
        if ((c & 0xE0) == 0xC0)
            need = 1, min = 0x80;
        else if ((c & 0xF0) == 0xE0)
            need = 2, min = 0x800;
        else if ((c & 0xF8) == 0xF0)
            need = 3, min = 0x10000;
        else
            return 0;
        unsigned cp = c & (0x3Fu >> need);
        size_t k = 1;
        for (; k <= need && i + k < n; ++k) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        if (k <= need) {
            /* Truncated: valid only if some completion gives an allowed code point. */
            size_t have = k - 1, missing = need - have;
            unsigned lo = cp << (6 * missing), hi = (cp << (6 * missing)) | ((1u << (6 * missing)) - 1);
            if (hi < min || lo > 0x10FFFF || (lo >= 0xD800 && hi <= 0xDFFF))
                return 0;
            return 2;
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += need + 1;
    }
    return 1;
}

/* ---- detokenizer: property test --------------------------------------------------------- */

struct vocab_lists {
    int32_t *spaced; /* pieces starting with U+2581 */
    size_t n_spaced;
    int32_t *plain;  /* other ordinary pieces */
    size_t n_plain;
};

static bool ignored(const struct eng_tokenizer *tok, int32_t id, int skip)
{
    return id < 0 || id >= eng_tokenizer_get_info(tok)->n_vocab || (skip && eng_tokenizer_is_special(tok, id));
}

static char *decode(const struct eng_tokenizer *tok, const int32_t *ids, size_t n, int skip, size_t *len)
{
    char *t = NULL;
    int rc = eng_tokenizer_decode(tok, ids, n, skip, &t, len);
    if (rc != 0) {
        fprintf(stderr, "decode failed rc=%d\n", rc);
        exit(1);
    }
    return t;
}

static void print_seq(const int32_t *ids, size_t n, size_t n_ctx, int skip)
{
    fprintf(stderr, "  skip_special=%d context=%zu ids [", skip, n_ctx);
    for (size_t i = 0; i < n; ++i)
        fprintf(stderr, "%s%d", i ? ", " : "", (int)ids[i]);
    fprintf(stderr, "]\n");
}

struct stream_stats {
    long sequences, streams, tokens, held_checks;
};

/* Streams ids[n_ctx..n) after context ids[0..n_ctx) and checks, after every token, that the
 * text released so far is exactly what is final: decode(prefix)[base:], minus the open
 * byte-fallback run when that run can still turn out valid or invalid. At the end the whole
 * output must be decode(all)[len(decode(context)):]. Returns false on the first mismatch. */
static bool stream_check(const struct eng_tokenizer *tok, const int32_t *ids, size_t n, size_t n_ctx, int skip,
                         struct stream_stats *st)
{
    size_t base = 0, full_len = 0;
    free(decode(tok, ids, n_ctx, skip, &base));
    char *full = decode(tok, ids, n, skip, &full_len);
    const char *want = full_len > base ? full + base : "";
    size_t want_len = full_len > base ? full_len - base : 0;
    bool base_on_boundary = base >= full_len || (full[base] & 0xC0) != 0x80;

    struct eng_detok *d = NULL;
    int rc = eng_detok_create(tok, ids, n_ctx, skip != 0, &d);
    CHECK(rc == 0, "create rc=%d", rc);
    if (rc != 0) {
        free(full);
        return false;
    }
    struct text got = {0};
    bool ok = true;
    const char *what = "";
    for (size_t i = n_ctx; i <= n && ok; ++i) {
        const char *delta = NULL;
        size_t dlen = 0;
        rc = i < n ? eng_detok_push(d, ids[i], &delta, &dlen) : eng_detok_finish(d, &delta, &dlen);
        if (rc != 0 || delta == NULL) {
            ok = false;
            what = "push/finish failed";
            break;
        }
        bool first = got.len == 0;
        text_put(&got, delta, dlen);
        st->tokens += i < n;
        if (got.len > want_len || memcmp(got.p, want, got.len) != 0) {
            ok = false;
            what = "released text is not a prefix of the final text";
            break;
        }
        /* A delta ends on a character boundary of the final text (it is valid UTF-8 decode
         * output), and is whole UTF-8 unless the context cut the text inside a character. */
        size_t end = base + got.len;
        if (dlen > 0 && end < full_len && (full[end] & 0xC0) == 0x80) {
            ok = false;
            what = "delta ends inside a UTF-8 sequence";
            break;
        }
        if (dlen > 0 && (base_on_boundary || !first) && utf8_class((const unsigned char *)delta, dlen) != 1) {
            ok = false;
            what = "delta is not whole UTF-8";
            break;
        }
        if (i == n)
            break;
        /* What must be out now: everything before the open byte run when that run is still a
         * valid UTF-8 prefix (a later byte may turn it into U+FFFDs), else everything. */
        size_t end_tok = i + 1, run_start = end_tok, n_run = 0;
        unsigned char run[64];
        for (size_t j = end_tok; j-- > 0;) {
            if (ignored(tok, ids[j], skip))
                continue;
            int b = eng_tokenizer_byte_value(tok, ids[j]);
            if (b < 0)
                break;
            run_start = j;
            if (n_run < sizeof run)
                run[n_run] = (unsigned char)b;
            n_run++;
        }
        size_t upto = end_tok;
        if (n_run > 0 && n_run <= sizeof run) {
            for (size_t a = 0, b = n_run - 1; a < b; ++a, --b) {
                unsigned char t = run[a];
                run[a] = run[b];
                run[b] = t;
            }
            if (utf8_class(run, n_run) != 0) {
                upto = run_start;
                st->held_checks++;
            }
        } else if (n_run > sizeof run) {
            upto = run_start; /* not generated; keep the check conservative */
        }
        size_t now_len = 0;
        char *now = decode(tok, ids, upto, skip, &now_len);
        size_t expect = now_len > base ? now_len - base : 0;
        if (upto == end_tok || n_run <= sizeof run) {
            if (got.len != expect || memcmp(got.p, now + (now_len > base ? base : now_len), expect) != 0) {
                fprintf(stderr, "  after token %zu: released %zu bytes, %zu are final\n", i, got.len, expect);
                ok = false;
                what = "released text differs from the final text so far";
            }
        }
        free(now);
    }
    if (ok && (got.len != want_len || (want_len > 0 && memcmp(got.p, want, want_len) != 0))) {
        ok = false;
        what = "concatenated deltas differ from decode(all)[len(decode(context)):]";
    }
    if (!ok) {
        ++tu_failures;
        if (tu_failures <= MAX_REPORTED_FAILS) {
            fprintf(stderr, "FAIL detok stream: %s\n", what);
            print_seq(ids, n, n_ctx, skip);
            fprintf(stderr, "  want \"%.*s\" (%zu bytes)\n  got  \"%.*s\" (%zu bytes)\n", (int)want_len, want,
                    want_len, (int)got.len, got.p ? got.p : "", got.len);
        }
    }
    free(got.p);
    free(full);
    eng_detok_destroy(d);
    st->streams++;
    return ok;
}

static void check_all_splits(const struct eng_tokenizer *tok, const int32_t *ids, size_t n, struct stream_stats *st)
{
    static const size_t ctx_lens[] = {0, 1, 6};
    st->sequences++;
    for (size_t c = 0; c < sizeof ctx_lens / sizeof ctx_lens[0]; ++c) {
        if (ctx_lens[c] > n)
            continue;
        for (int skip = 0; skip <= 1; ++skip)
            stream_check(tok, ids, n, ctx_lens[c], skip, st);
    }
}

static size_t utf8_encode(uint32_t cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

static uint32_t random_code_point(void)
{
    switch (rnd_below(6)) {
    case 0:
        return (uint32_t)rnd_below(0x80); /* NUL, space and newline included */
    case 1:
        return rnd_below(4) == 0 ? 0x20 : 0x80 + (uint32_t)rnd_below(0x800 - 0x80);
    case 2: {
        uint32_t cp = 0x800 + (uint32_t)rnd_below(0x10000 - 0x800);
        return cp >= 0xD800 && cp <= 0xDFFF ? 0x4E2D : cp;
    }
    case 3:
        return 0x4E00 + (uint32_t)rnd_below(0x5000); /* CJK */
    case 4:
        return 0x1F300 + (uint32_t)rnd_below(0x300); /* emoji */
    default:
        return 0x10000 + (uint32_t)rnd_below(0x10FFFF - 0x10000 + 1);
    }
}

/* Byte sequences that are never valid UTF-8, or are cut inside a character. */
static size_t random_bad_bytes(unsigned char *out)
{
    static const unsigned char lone[] = {0x80, 0xBF, 0xC0, 0xC1, 0xF5, 0xF8, 0xFE, 0xFF};
    unsigned char ch[4];
    size_t n;
    switch (rnd_below(7)) {
    case 0:
        out[0] = lone[rnd_below(sizeof lone)];
        return 1;
    case 1: /* a character cut short */
        do
            n = utf8_encode(random_code_point(), ch);
        while (n < 2);
        n = 1 + rnd_below(n - 1);
        memcpy(out, ch, n);
        return n;
    case 2: /* surrogate */
        memcpy(out, "\xed\xa0\x80", 3);
        return 3;
    case 3: /* overlong */
        memcpy(out, rnd_below(2) ? "\xe0\x80\xaf" : "\xc0\xaf", rnd_below(2) ? 3 : 2);
        return out[0] == 0xE0 ? 3 : 2;
    case 4: /* above U+10FFFF */
        memcpy(out, "\xf4\x90\x80\x80", 4);
        return 4;
    case 5: /* a valid character, then a stray byte */
        n = utf8_encode(random_code_point(), out);
        out[n] = lone[rnd_below(sizeof lone)];
        return n + 1;
    default: /* a lead byte followed by ASCII */
        out[0] = 0xE4;
        out[1] = 'a';
        return 2;
    }
}

static size_t put_bytes(const struct eng_tokenizer *tok, int32_t *ids, size_t n, size_t cap, const unsigned char *b,
                        size_t nb)
{
    for (size_t k = 0; k < nb && n < cap; ++k) {
        /* Ids that decode to nothing (or are skipped) inside a run must not end it. */
        if (k > 0 && rnd_below(8) == 0 && n < cap)
            ids[n++] = rnd_below(2) ? (int32_t)(32000 + rnd_below(11))
                                    : eng_tokenizer_get_info(tok)->n_vocab + (int32_t)rnd_below(PAD_LIMIT - 32011);
        if (n < cap)
            ids[n++] = BYTE_ID(b[k]);
    }
    return n;
}

static size_t random_sequence(const struct eng_tokenizer *tok, const struct vocab_lists *v, int32_t *ids, size_t cap)
{
    const struct eng_tokenizer_info *info = eng_tokenizer_get_info(tok);
    size_t want = 1 + rnd_below(cap < 40 ? cap : 40), n = 0;
    unsigned char b[8];
    while (n < want) {
        size_t r = rnd_below(100);
        if (r < 20) {
            ids[n++] = v->spaced[rnd_below(v->n_spaced)];
        } else if (r < 35) {
            ids[n++] = v->plain[rnd_below(v->n_plain)];
        } else if (r < 45) {
            static const int32_t specials[] = {0, 1, 2, 32000, 32001, 32006, 32007, 32010, 32002, 32009};
            ids[n++] = rnd_below(3) == 0 ? (int32_t)(32000 + rnd_below(11))
                                         : specials[rnd_below(sizeof specials / sizeof specials[0])];
        } else if (r < 50) {
            ids[n++] = info->n_vocab + (int32_t)rnd_below(PAD_LIMIT - (size_t)info->n_vocab);
        } else if (r < 55) {
            ids[n++] = rnd_below(2) ? 29871 /* "\xe2\x96\x81" alone */ : BYTE_ID(0x20);
        } else if (r < 80) {
            size_t nb = utf8_encode(random_code_point(), b);
            if (rnd_below(3) == 0) /* two characters in one run */
                nb += utf8_encode(random_code_point(), b + nb);
            n = put_bytes(tok, ids, n, cap, b, nb);
        } else if (r < 92) {
            n = put_bytes(tok, ids, n, cap, b, random_bad_bytes(b));
        } else {
            ids[n++] = (int32_t)rnd_below((size_t)info->n_vocab); /* anything, bytes included */
        }
    }
    return n;
}

/* Real text in many scripts, streamed as the tokenizer encodes it. */
static const char *const real_texts[] = {
    "The capital of France is Paris.",
    " leading space, and  two   spaces\n\nnew paragraph\ttab",
    "\xe4\xb8\xad\xe6\x96\x87\xe6\xb5\x8b\xe8\xaf\x95\xef\xbc\x9a\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96"
    "\xe7\x95\x8c\xe3\x80\x82\xe9\xbe\x98\xe9\xbd\x89\xe7\x88\xa8\xe9\xba\xa4", /* Chinese, rare chars */
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88\xe3\x81\xa7"
    "\xe3\x81\x99\xe3\x80\x82",                                                        /* Japanese */
    "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 \xed\x85\x8c\xec\x8a\xa4\xed\x8a\xb8",       /* Korean */
    "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82, \xd0\xbc\xd0\xb8\xd1\x80!",     /* Russian */
    "\xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7 \xd8\xa8\xd8\xa7\xd9\x84\xd8\xb9\xd8\xa7\xd9\x84\xd9\x85", /* Arabic */
    "\xe0\xa4\xa8\xe0\xa4\xae\xe0\xa4\xb8\xe0\xa5\x8d\xe0\xa4\xa4\xe0\xa5\x87 \xe0\xa4\xa6\xe0\xa5\x81\xe0\xa4\xa8"
    "\xe0\xa4\xbf\xe0\xa4\xaf\xe0\xa4\xbe",                                            /* Hindi */
    "\xce\x93\xce\xb5\xce\xb9\xce\xac \xcf\x83\xce\xbf\xcf\x85 \xce\xba\xcf\x8c\xcf\x83\xce\xbc\xce\xb5",
    "emoji \xf0\x9f\x98\x80\xf0\x9f\x98\x82 family \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f"
    "\x91\xa7 flag \xf0\x9f\x87\xab\xf0\x9f\x87\xb7 skin \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd end",
    "\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80",                                /* emoji only */
    "math \xe2\x88\x80x\xe2\x88\x88\xe2\x84\x9d: x\xc2\xb2 \xe2\x89\xa5 0, \xf0\x9d\x9b\xbc\xf0\x9d\x9b\xbd",
    "caf\xc3\xa9 na\xc3\xafve r\xc3\xa9sum\xc3\xa9 \xc3\x85ngstr\xc3\xb6m",
    "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\nIt is 4.<|end|>\n<|endoftext|>",
    "<|system|>\n\xe4\xbd\xa0\xe6\x98\xaf\xe5\x8a\xa9\xe6\x89\x8b<|end|><|user|>\xf0\x9f\x98\x80<|end|>",
    "code:\n```c\nint main(void) { return 0; }\n```\n",
    "\xe0\xb8\xaa\xe0\xb8\xa7\xe0\xb8\xb1\xe0\xb8\xaa\xe0\xb8\x94\xe0\xb8\xb5 \xe1\x83\x92\xe1\x83\x90\xe1\x83\x9b"
    "\xe1\x83\x90\xe1\x83\xa0\xe1\x83\xaf\xe1\x83\x9d\xe1\x83\x91\xe1\x83\x90",        /* Thai, Georgian */
    "\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d \xe1\x8a\xa0\xe1\x88\x9b\xe1\x88\xad\xe1\x8a\x9b \xf0\x90\x8c\xb0\xf0\x90\x8c"
    "\xb1",                                                                            /* Hebrew, Amharic, Gothic */
};

static void build_vocab_lists(const struct eng_tokenizer *tok, struct vocab_lists *v)
{
    int32_t n_vocab = eng_tokenizer_get_info(tok)->n_vocab;
    v->spaced = malloc((size_t)n_vocab * sizeof *v->spaced);
    v->plain = malloc((size_t)n_vocab * sizeof *v->plain);
    v->n_spaced = v->n_plain = 0;
    for (int32_t id = 0; id < n_vocab; ++id) {
        size_t len = 0;
        const char *p = eng_tokenizer_id_to_piece(tok, id, &len);
        if (p == NULL || eng_tokenizer_byte_value(tok, id) >= 0 || id < 3 || id >= 32000)
            continue;
        if (len >= 3 && memcmp(p, "\xe2\x96\x81", 3) == 0)
            v->spaced[v->n_spaced++] = id;
        else
            v->plain[v->n_plain++] = id;
    }
}

static void test_detok_property(const struct eng_tokenizer *tok, long n_random)
{
    struct vocab_lists v;
    build_vocab_lists(tok, &v);
    CHECK(v.n_spaced > 10000 && v.n_plain > 10000, "vocabulary lists: %zu spaced, %zu plain", v.n_spaced,
          v.n_plain);
    struct stream_stats st = {0};
    int32_t ids[128];
    for (long s = 0; s < n_random && tu_failures < MAX_REPORTED_FAILS; ++s) {
        size_t n = random_sequence(tok, &v, ids, sizeof ids / sizeof ids[0]);
        check_all_splits(tok, ids, n, &st);
    }
    long streams_random = st.streams;

    size_t max_run = 0, n_real_tokens = 0;
    for (size_t t = 0; t < sizeof real_texts / sizeof real_texts[0]; ++t) {
        for (int add_special = 0; add_special <= 1; ++add_special) {
            int32_t *e = NULL;
            size_t ne = 0;
            int rc = eng_tokenizer_encode(tok, real_texts[t], strlen(real_texts[t]), add_special, &e, &ne);
            CHECK(rc == 0 && ne > 0, "encode of real text %zu rc=%d", t, rc);
            if (rc != 0)
                continue;
            size_t run = 0;
            for (size_t i = 0; i < ne; ++i) {
                run = eng_tokenizer_byte_value(tok, e[i]) >= 0 ? run + 1 : 0;
                max_run = run > max_run ? run : max_run;
            }
            n_real_tokens += ne;
            check_all_splits(tok, e, ne, &st);
            /* The same tokens streamed in a different place: after a chat prefix. */
            int32_t with_prefix[512];
            if (ne + 2 <= sizeof with_prefix / sizeof with_prefix[0]) {
                with_prefix[0] = 32010;
                with_prefix[1] = 32001;
                memcpy(with_prefix + 2, e, ne * sizeof *e);
                check_all_splits(tok, with_prefix, ne + 2, &st);
            }
            free(e);
        }
    }
    printf("detok property: %ld sequences (%ld random, rest from %zu real texts, %zu tokens), %ld streams "
           "(contexts 0/1/6 x skip_special 0/1), %ld tokens pushed, %ld checks with a byte run held; "
           "longest byte-fallback run in the real texts: %zu tokens\n",
           st.sequences, n_random, sizeof real_texts / sizeof real_texts[0], n_real_tokens, st.streams,
           st.tokens, st.held_checks, max_run);
    CHECK(streams_random >= 5 * n_random, "too few random streams: %ld", streams_random);
    CHECK(st.held_checks > 1000, "byte runs were hardly exercised: %ld", st.held_checks);
    free(v.spaced);
    free(v.plain);
}

/* ---- detokenizer: cases ----------------------------------------------------------------- */

/* Streams ids after context and returns the deltas joined with '|' (finish's delta last). */
static void stream_deltas(const struct eng_tokenizer *tok, const int32_t *ctx, size_t n_ctx, const int32_t *ids,
                          size_t n, bool skip, struct text *out)
{
    struct eng_detok *d = NULL;
    out->len = 0;
    text_put(out, "", 0);
    int rc = eng_detok_create(tok, ctx, n_ctx, skip, &d);
    CHECK(rc == 0, "create rc=%d", rc);
    if (rc != 0)
        return;
    for (size_t i = 0; i <= n; ++i) {
        const char *delta = NULL;
        size_t len = 0;
        rc = i < n ? eng_detok_push(d, ids[i], &delta, &len) : eng_detok_finish(d, &delta, &len);
        CHECK(rc == 0 && delta != NULL, "push rc=%d", rc);
        if (rc != 0 || delta == NULL)
            break;
        if (i > 0)
            text_put(out, "|", 1);
        text_put(out, delta, len);
    }
    eng_detok_destroy(d);
}

static void expect_deltas(const struct eng_tokenizer *tok, const int32_t *ctx, size_t n_ctx, const int32_t *ids,
                          size_t n, bool skip, const char *want)
{
    struct text got = {0};
    stream_deltas(tok, ctx, n_ctx, ids, n, skip, &got);
    CHECK(got.p != NULL && strcmp(got.p, want) == 0, "deltas\n  got  \"%s\"\n  want \"%s\"", got.p ? got.p : "",
          want);
    free(got.p);
}

static void test_detok_cases(const struct eng_tokenizer *tok)
{
    /* A completion keeps its leading space after the prompt, and loses it with no context. */
    const char prompt[] = "The capital of France is";
    const char whole[] = "The capital of France is Paris";
    int32_t *p = NULL, *w = NULL;
    size_t np = 0, nw = 0;
    CHECK(eng_tokenizer_encode(tok, prompt, strlen(prompt), 1, &p, &np) == 0, "encode prompt");
    CHECK(eng_tokenizer_encode(tok, whole, strlen(whole), 1, &w, &nw) == 0, "encode whole");
    CHECK(nw > np && np >= 6 && memcmp(p, w, np * sizeof *p) == 0, "prompt ids are not a prefix (%zu, %zu)", np, nw);
    if (nw > np && np >= 6 && memcmp(p, w, np * sizeof *p) == 0) {
        struct text got = {0};
        stream_deltas(tok, p + np - 6, 6, w + np, nw - np, true, &got);
        CHECK(got.p != NULL && strncmp(got.p, " Par", 4) == 0, "first delta \"%s\", want \" Par...\"",
              got.p ? got.p : "");
        stream_deltas(tok, NULL, 0, w + np, nw - np, true, &got);
        CHECK(got.p != NULL && strncmp(got.p, "Par", 3) == 0, "no context: \"%s\", want \"Par...\"",
              got.p ? got.p : "");
        free(got.p);
    }
    free(p);
    free(w);

    int32_t ctx1[] = {32001}; /* <|assistant|>, dropped with skip_special */
    int32_t hello[] = {15043};
    expect_deltas(tok, ctx1, 1, hello, 1, true, "Hello|");
    expect_deltas(tok, ctx1, 1, hello, 1, false, " Hello|");

    /* An emoji as four byte tokens: held until the run closes, then all at once. */
    int32_t emoji[] = {BYTE_ID(0xF0), BYTE_ID(0x9F), BYTE_ID(0x98), BYTE_ID(0x80), 15043};
    expect_deltas(tok, hello, 1, emoji, 5, true, "||||\xf0\x9f\x98\x80 Hello|");
    expect_deltas(tok, hello, 1, emoji, 4, true, "||||\xf0\x9f\x98\x80");
    /* A valid character then a stray byte: HF turns the whole run into U+FFFDs. */
    int32_t stray[] = {BYTE_ID(0xE4), BYTE_ID(0xB8), BYTE_ID(0xAD), BYTE_ID(0xFF), BYTE_ID(0x41)};
    expect_deltas(tok, hello, 1, stray, 5, true,
                  "|||\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd|");
    /* An invalid byte streams its U+FFFD at once. */
    int32_t ff[] = {BYTE_ID(0xFF), 15043};
    expect_deltas(tok, hello, 1, ff, 2, true, "\xef\xbf\xbd| Hello|");
    /* A character cut short at the end: finish flushes one U+FFFD per byte. */
    int32_t cut[] = {BYTE_ID(0xE4), BYTE_ID(0xB8)};
    expect_deltas(tok, hello, 1, cut, 2, true, "||\xef\xbf\xbd\xef\xbf\xbd");
    /* A skipped special token and a padding id inside a run do not end it; a kept one does. */
    int32_t split[] = {BYTE_ID(0xE4), 32007, BYTE_ID(0xB8), 32050, BYTE_ID(0xAD), 15043};
    expect_deltas(tok, hello, 1, split, 6, true, "|||||\xe4\xb8\xad Hello|");
    /* Kept, <|end|> ends the run: "\xe4" alone is cut short, and "\xb8" cannot start one. */
    expect_deltas(tok, hello, 1, split, 6, false, "|\xef\xbf\xbd<|end|>|\xef\xbf\xbd||\xef\xbf\xbd| Hello|");
    /* Leading space of the first text: stripped once, whether it comes from a piece or a byte. */
    int32_t sp[] = {29871, 15043};
    expect_deltas(tok, NULL, 0, sp, 2, true, "| Hello|");
    int32_t spb[] = {BYTE_ID(0x20), 15043};
    expect_deltas(tok, NULL, 0, spb, 2, true, "| Hello|");
    /* The prompt ends inside a byte run that the completion continues. */
    int32_t ctx_run[] = {15043, BYTE_ID(0xE4)};
    int32_t cont[] = {BYTE_ID(0xB8), BYTE_ID(0xAD), 15043};
    expect_deltas(tok, ctx_run, 2, cont, 3, true, "|| Hello|");
    /* Padding ids and negative ids decode to nothing. */
    int32_t pads[] = {32011, 32063, 40000, -5};
    expect_deltas(tok, hello, 1, pads, 4, false, "||||");

    struct eng_detok *d = NULL;
    CHECK(eng_detok_create(NULL, NULL, 0, true, &d) == ENG_TOK_ERR_INVALID && d == NULL, "NULL tokenizer");
    CHECK(eng_detok_create(tok, NULL, 2, true, &d) == ENG_TOK_ERR_INVALID && d == NULL, "NULL context");
    CHECK(eng_detok_create(tok, NULL, 0, true, NULL) == ENG_TOK_ERR_INVALID, "NULL out");
    const char *delta = NULL;
    size_t len = 0;
    CHECK(eng_detok_push(NULL, 5, &delta, &len) == ENG_TOK_ERR_INVALID, "push on NULL");
    eng_detok_destroy(NULL);
}

/* ---- a second tokenizer whose decoder keeps the leading space ----------------------------
 * The Phi-3 decoder strips one leading space; a Llama-style tokenizer.json without the Strip
 * step does not. The copy lives in a temporary directory for the duration of the test. */

static const char *const tokenizer_files[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                                              "special_tokens_map.json", "added_tokens.json"};

static bool write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return false;
    bool ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

/* Copies src_dir to a new temporary directory (name in dst) with the decoder's Strip step
 * removed from tokenizer.json. */
static bool make_nostrip_copy(const char *src_dir, char *dst, size_t dst_len)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dst, dst_len, "%s/phiserve_detok_XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(dst) == NULL)
        return false;
    bool ok = true;
    for (size_t i = 0; i < sizeof tokenizer_files / sizeof tokenizer_files[0] && ok; ++i) {
        char src[4096], out[4096];
        if (snprintf(src, sizeof src, "%s/%s", src_dir, tokenizer_files[i]) >= (int)sizeof src ||
            snprintf(out, sizeof out, "%s/%s", dst, tokenizer_files[i]) >= (int)sizeof out) {
            ok = false; /* path too long */
            break;
        }
        size_t len = 0;
        char *data = tu_read_file(src, &len);
        if (data == NULL)
            continue; /* optional files */
        if (strcmp(tokenizer_files[i], "tokenizer.json") == 0) {
            cJSON *root = cJSON_ParseWithLength(data, len);
            cJSON *decs = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "decoder"),
                                                           "decoders");
            bool removed = false;
            for (int k = cJSON_GetArraySize(decs) - 1; k >= 0; --k) {
                const cJSON *type = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(decs, k), "type");
                if (cJSON_IsString(type) && strcmp(type->valuestring, "Strip") == 0) {
                    cJSON_DeleteItemFromArray(decs, k);
                    removed = true;
                }
            }
            char *printed = removed ? cJSON_PrintUnformatted(root) : NULL;
            ok = printed != NULL && write_file(out, printed, strlen(printed));
            free(printed);
            cJSON_Delete(root);
        } else {
            ok = write_file(out, data, len);
        }
        free(data);
    }
    return ok;
}

static void remove_copy(const char *dir)
{
    for (size_t i = 0; i < sizeof tokenizer_files / sizeof tokenizer_files[0]; ++i) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, tokenizer_files[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* Decodes ids and compares with want (NUL-terminated). */
static bool decodes_to(const struct eng_tokenizer *tok, const int32_t *ids, size_t n, const char *want)
{
    size_t len = 0;
    char *t = decode(tok, ids, n, 1, &len);
    bool ok = len == strlen(want) && memcmp(t, want, len) == 0;
    free(t);
    return ok;
}

static void test_detok_nostrip(const char *phi3_dir)
{
    char dir[4096];
    struct eng_tokenizer *tok = NULL;
    char err[256] = "";
    if (!make_nostrip_copy(phi3_dir, dir, sizeof dir) || eng_tokenizer_load_dir(dir, &tok, err, sizeof err) != 0) {
        CHECK(false, "cannot build the no-strip tokenizer copy in %s: %s", dir, err);
        remove_copy(dir);
        return;
    }
    int32_t sp_hello[] = {29871, 15043}, byte_hello[] = {BYTE_ID(0x20), 15043};
    /* The copy must really keep the space, or the tests below prove nothing new. */
    CHECK(decodes_to(tok, sp_hello, 2, "  Hello") && decodes_to(tok, byte_hello, 2, "  Hello"),
          "the copy's decoder still strips");
    expect_deltas(tok, NULL, 0, sp_hello, 2, true, " | Hello|");
    expect_deltas(tok, NULL, 0, byte_hello, 2, true, "|  Hello|");
    test_detok_property(tok, 600);
    eng_tokenizer_destroy(tok);
    remove_copy(dir);
}

/* ---- stop matcher ----------------------------------------------------------------------- */

struct stop_result {
    struct text released;
    bool stopped;
    bool stopped_after_flush;
    size_t max_lag; /* bytes fed but not released, at most, after any feed before a match */
    bool retracted;
};

/* Feeds the pieces (NULL-terminated list of strings, lengths from strlen) and flushes. */
static void run_matcher(const char *const *stops, size_t n_stops, bool include, const char *const *pieces,
                        const size_t *piece_lens, size_t n_pieces, struct stop_result *r)
{
    memset(r, 0, sizeof *r);
    text_put(&r->released, "", 0);
    struct eng_stop_matcher *m = NULL;
    int rc = eng_stop_matcher_create(stops, n_stops, include, &m);
    CHECK(rc == 0, "stop matcher create rc=%d", rc);
    if (rc != 0)
        return;
    size_t fed = 0;
    for (size_t i = 0; i < n_pieces && !r->stopped; ++i) {
        const char *out = NULL;
        size_t out_len = 0;
        rc = eng_stop_matcher_feed(m, pieces[i], piece_lens[i], &out, &out_len, &r->stopped);
        CHECK(rc == 0 && out != NULL, "feed rc=%d", rc);
        if (rc != 0 || out == NULL)
            break;
        text_put(&r->released, out, out_len);
        fed += piece_lens[i];
        if (!r->stopped && fed - r->released.len > r->max_lag)
            r->max_lag = fed - r->released.len;
    }
    if (!r->stopped) {
        const char *out = NULL;
        size_t out_len = 0;
        bool flush_stopped = false, stopped = false;
        rc = eng_stop_matcher_flush(m, &out, &out_len, &flush_stopped);
        CHECK(rc == 0 && out != NULL, "flush rc=%d", rc);
        if (rc == 0 && out != NULL)
            text_put(&r->released, out, out_len);
        r->stopped_after_flush = flush_stopped;
        rc = eng_stop_matcher_feed(m, "more", 4, &out, &out_len, &stopped);
        CHECK(rc == 0 && stopped == flush_stopped && (!stopped || out_len == 0),
              "feed after flush rc=%d stopped=%d (flush said %d) len=%zu", rc, stopped,
              flush_stopped, out_len);
    } else {
        const char *out = NULL;
        size_t out_len = 0;
        bool stopped = false;
        rc = eng_stop_matcher_feed(m, "more", 4, &out, &out_len, &stopped);
        CHECK(rc == 0 && stopped && out_len == 0, "feed after stop released %zu bytes", out_len);
    }
    eng_stop_matcher_destroy(m);
}

struct stop_case {
    const char *stops[4];
    bool include;
    const char *pieces[8];
    const char *want;
    bool want_stop; /* reported by a feed (not only found by flush) */
    bool want_stop_at_flush;
};

static void test_stop_cases(void)
{
    static const struct stop_case cases[] = {
        {{"world"}, false, {"Hel", "lo wo", "rld", "!"}, "Hello ", true, false},
        {{"world"}, true, {"Hel", "lo wo", "rld", "!"}, "Hello world", true, false},
        {{"ab"}, false, {"a", "a", "b", "c"}, "a", true, false},
        {{"ab"}, true, {"aab"}, "aab", true, false},
        {{"ab", "abc"}, false, {"ab", "c"}, "", true, false},
        {{"abc", "ab"}, true, {"a", "bc"}, "ab", true, false},
        {{"abcd", "bc"}, false, {"ab", "c", "e"}, "a", true, false},
        {{"abcd", "bc"}, true, {"ab", "c", "e"}, "abc", true, false},
        {{"abcd", "bc"}, true, {"ab", "cd"}, "abcd", true, false},
        {{"abcd", "bc"}, false, {"ab", "c"}, "a", false, true},
        {{"STOP"}, false, {"STOP here"}, "", true, false},
        {{"STOP"}, false, {"S", "T", "O", "P"}, "", true, false},
        {{"x"}, false, {""}, "", false, false},
        {{"x"}, false, {"", "", ""}, "", false, false},
        {{"<|end|>"}, false, {"a <", " b <|e", "nd", "|> c"}, "a < b ", true, false},
        {{"<|end|>"}, false, {"a <|en"}, "a <|en", false, false},
        {{"\xe4\xb8\xad\xe6\x96\x87"}, false, {"\xe4\xbd\xa0\xe5\xa5\xbd\xe4", "\xb8\xad\xe6", "\x96\x87\xe5\x91\x80"},
         "\xe4\xbd\xa0\xe5\xa5\xbd", true, false},
        {{"\xf0\x9f\x98\x80"}, true, {"hi\xf0\x9f", "\x98", "\x80there"}, "hi\xf0\x9f\x98\x80", true, false},
        {{"\xf0\x9f\x98\x80"}, false, {"hi\xf0\x9f\x98\x81", "!"}, "hi\xf0\x9f\x98\x81!", false, false},
        {{"\n\n", "\n"}, false, {"line", "\n", "\nmore"}, "line", true, false},
        {{"aaa"}, false, {"aa", "aa"}, "", true, false},
        {{"aab"}, false, {"aa", "aa", "b"}, "aa", true, false},
        {{0}, false, {"no ", "stops"}, "no stops", false, false},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        const struct stop_case *k = &cases[c];
        size_t n_stops = 0, n_pieces = 0;
        while (n_stops < 4 && k->stops[n_stops] != NULL)
            n_stops++;
        size_t lens[8];
        while (n_pieces < 8 && k->pieces[n_pieces] != NULL) {
            lens[n_pieces] = strlen(k->pieces[n_pieces]);
            n_pieces++;
        }
        struct stop_result r;
        run_matcher(k->stops, n_stops, k->include, k->pieces, lens, n_pieces, &r);
        CHECK(r.released.p != NULL && strcmp(r.released.p, k->want) == 0, "case %zu: released \"%s\", want \"%s\"",
              c, r.released.p ? r.released.p : "", k->want);
        CHECK(r.stopped == k->want_stop && r.stopped_after_flush == k->want_stop_at_flush,
              "case %zu: stopped %d/%d, want %d/%d", c, r.stopped, r.stopped_after_flush, k->want_stop,
              k->want_stop_at_flush);
        free(r.released.p);
    }

    /* Held text is released as soon as it cannot start a stop string. */
    struct eng_stop_matcher *m = NULL;
    const char *const st[] = {"<|end|>"};
    CHECK(eng_stop_matcher_create(st, 1, false, &m) == 0, "create");
    const char *out = NULL;
    size_t len = 0;
    bool stopped = true;
    CHECK(eng_stop_matcher_feed(m, "a <", 3, &out, &len, &stopped) == 0 && len == 2 && memcmp(out, "a ", 2) == 0 &&
              !stopped,
          "held \"<\": released %zu", len);
    CHECK(eng_stop_matcher_feed(m, "|x", 2, &out, &len, &stopped) == 0 && len == 3 && memcmp(out, "<|x", 3) == 0,
          "released %zu", len);
    eng_stop_matcher_destroy(m);

    /* A stop string that starts with a continuation byte never splits a whole character. */
    const char *const cont[] = {"\xa9x"};
    CHECK(eng_stop_matcher_create(cont, 1, false, &m) == 0, "create");
    CHECK(eng_stop_matcher_feed(m, "\xc3\xa9", 2, &out, &len, &stopped) == 0 && len == 0, "released %zu", len);
    CHECK(eng_stop_matcher_feed(m, "y", 1, &out, &len, &stopped) == 0 && len == 3 && !stopped, "released %zu", len);
    eng_stop_matcher_destroy(m);

    const char *const bad1[] = {"ok", ""};
    const char *const bad2[] = {"ok", NULL};
    m = NULL;
    CHECK(eng_stop_matcher_create(bad1, 2, false, &m) == -1 && m == NULL, "empty stop string accepted");
    CHECK(eng_stop_matcher_create(bad2, 2, false, &m) == -1 && m == NULL, "NULL stop string accepted");
    CHECK(eng_stop_matcher_create(NULL, 0, true, &m) == 0 && m != NULL, "no stop strings refused");
    eng_stop_matcher_destroy(m);
    eng_stop_matcher_destroy(NULL);
}

/* The reference: the earliest-starting occurrence in the whole text, shortest at a tie. */
static bool reference_match(const char *t, size_t n, const char *const *stops, size_t n_stops, size_t *start,
                            size_t *len)
{
    for (size_t i = 0; i < n; ++i) {
        size_t best = 0;
        for (size_t k = 0; k < n_stops; ++k) {
            size_t l = strlen(stops[k]);
            if (l <= n - i && memcmp(t + i, stops[k], l) == 0 && (best == 0 || l < best))
                best = l;
        }
        if (best > 0) {
            *start = i;
            *len = best;
            return true;
        }
    }
    return false;
}

static void test_stop_random(void)
{
    /* Small alphabets so that stop strings occur, overlap and nest often; two multi-byte
     * characters so that splits fall inside them. */
    static const char *const units[] = {"a", "b", "c", "\xc3\xa9", "\xe4\xb8\xad"};
    const long n_cases = 30000;
    long n_stopped = 0, n_flush_stops = 0, n_nomatch = 0;
    for (long c = 0; c < n_cases && tu_failures < MAX_REPORTED_FAILS; ++c) {
        size_t n_units = rnd_below(2) ? 2 : 5;
        char stop_buf[3][16];
        const char *stops[3];
        size_t n_stops = 1 + rnd_below(3), max_len = 0;
        for (size_t k = 0; k < n_stops; ++k) {
            size_t l = 1 + rnd_below(4), pos = 0;
            for (size_t j = 0; j < l; ++j) {
                const char *u = units[rnd_below(n_units)];
                memcpy(stop_buf[k] + pos, u, strlen(u));
                pos += strlen(u);
            }
            stop_buf[k][pos] = '\0';
            stops[k] = stop_buf[k];
            max_len = pos > max_len ? pos : max_len;
        }
        char text[128];
        size_t n = 0, n_text_units = rnd_below(25);
        for (size_t j = 0; j < n_text_units; ++j) {
            const char *u = units[rnd_below(n_units)];
            memcpy(text + n, u, strlen(u));
            n += strlen(u);
        }
        /* Random byte splits, empty pieces included. */
        const char *pieces[130];
        size_t lens[130], n_pieces = 0, at = 0;
        while (at < n || n_pieces == 0) {
            size_t l = rnd_below(5) == 0 ? 0 : 1 + rnd_below(6);
            if (l > n - at)
                l = n - at;
            pieces[n_pieces] = text + at;
            lens[n_pieces++] = l;
            at += l;
        }
        bool include = rnd_below(2) == 0;
        size_t mstart = 0, mlen = 0;
        bool match = reference_match(text, n, stops, n_stops, &mstart, &mlen);
        size_t want_len = match ? mstart + (include ? mlen : 0) : n;

        /* Feed by hand to check every step: nothing released is retracted, the lag is below
         * the longest stop string, and a match is reported once the text decides it. */
        struct eng_stop_matcher *m = NULL;
        if (eng_stop_matcher_create(stops, n_stops, include, &m) != 0) {
            CHECK(false, "create");
            continue;
        }
        struct text rel = {0};
        text_put(&rel, "", 0);
        bool stopped = false, ok = true;
        size_t fed = 0;
        const char *why = "";
        for (size_t i = 0; i < n_pieces && !stopped && ok; ++i) {
            const char *out = NULL;
            size_t out_len = 0;
            if (eng_stop_matcher_feed(m, pieces[i], lens[i], &out, &out_len, &stopped) != 0) {
                ok = false;
                why = "feed failed";
                break;
            }
            text_put(&rel, out, out_len);
            fed += lens[i];
            if (rel.len > want_len || memcmp(rel.p, text, rel.len) != 0) {
                ok = false;
                why = "released text is not a prefix of the expected output";
            } else if (stopped && rel.len != want_len) {
                ok = false;
                why = "stopped with the wrong text";
            } else if (!stopped && fed - rel.len > max_len - 1) {
                ok = false;
                why = "held back more than max_stop_len - 1 bytes";
            } else if (!stopped && match && mstart + mlen <= fed) {
                /* Decided unless an earlier start is still a proper prefix of a stop string. */
                bool open_earlier = false;
                for (size_t j = 0; j < mstart && !open_earlier; ++j)
                    for (size_t k = 0; k < n_stops; ++k)
                        if (strlen(stops[k]) > fed - j && memcmp(text + j, stops[k], fed - j) == 0)
                            open_earlier = true;
                if (!open_earlier) {
                    ok = false;
                    why = "a decided match was not reported";
                }
            }
        }
        bool flush_stop = false;
        if (ok && !stopped) {
            const char *out = NULL;
            size_t out_len = 0;
            bool fed_stop = false;
            eng_stop_matcher_flush(m, &out, &out_len, &flush_stop);
            text_put(&rel, out, out_len);
            eng_stop_matcher_feed(m, NULL, 0, &out, &out_len, &fed_stop);
            if (fed_stop != flush_stop) {
                ok = false;
                why = "flush and a later feed disagree on the stop";
            }
            n_flush_stops += flush_stop;
        }
        if (ok && (rel.len != want_len || memcmp(rel.p, text, want_len) != 0)) {
            ok = false;
            why = "final output differs from the reference";
        }
        if (ok && (stopped || flush_stop) != match) {
            ok = false;
            why = "stop reported differs from the reference";
        }
        n_stopped += stopped;
        n_nomatch += !match;
        if (!ok) {
            ++tu_failures;
            fprintf(stderr, "FAIL stop random case %ld: %s\n  include %d stops:", c, why, include);
            for (size_t k = 0; k < n_stops; ++k)
                fprintf(stderr, " \"%s\"", stops[k]);
            fprintf(stderr, "\n  text \"%.*s\" pieces:", (int)n, text);
            for (size_t i = 0; i < n_pieces; ++i)
                fprintf(stderr, " %zu", lens[i]);
            fprintf(stderr, "\n  released \"%.*s\"\n", (int)rel.len, rel.p);
        }
        free(rel.p);
        eng_stop_matcher_destroy(m);
    }
    printf("stop random: %ld cases, %ld stopped during feed, %ld found at flush, %ld without a match\n", n_cases,
           n_stopped, n_flush_stops, n_nomatch);
    CHECK(n_stopped > n_cases / 4 && n_nomatch > n_cases / 20 && n_flush_stops > 0,
          "random cases do not cover the space: %ld stopped, %ld unmatched, %ld at flush", n_stopped, n_nomatch,
          n_flush_stops);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <fixtures_dir>\n", argv[0]);
        return 2;
    }
    char dir[4096], err[256] = "";
    snprintf(dir, sizeof dir, "%s/tokenizer/phi3", argv[1]);
    struct eng_tokenizer *tok = NULL;
    int rc = eng_tokenizer_load_dir(dir, &tok, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "cannot load %s: %s\n", dir, err);
        return 1;
    }
    CHECK(eng_tokenizer_get_info(tok)->n_vocab == 32011, "n_vocab %d", (int)eng_tokenizer_get_info(tok)->n_vocab);
    CHECK(eng_tokenizer_byte_value(tok, BYTE_ID(0xAB)) == 0xAB, "byte ids are not 3 + value");
    test_detok_cases(tok);
    test_detok_property(tok, 4000);
    test_detok_nostrip(dir);
    test_stop_cases();
    test_stop_random();
    eng_tokenizer_destroy(tok);
    return tu_finish("test_detok");
}
