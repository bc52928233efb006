/* Streaming text output of one sequence (see detok.h): the incremental detokenizer and the
 * stop-string matcher. It does not tokenize (tokenizer.c renders every piece) and does not
 * decide when generation ends on token ids (sampler.h); it keeps only the text still held. */
#include "detok.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static const char REPLACEMENT_CHAR[] = "\xef\xbf\xbd";
#define REPLACEMENT_CHAR_LEN 3

struct bytes {
    char *p;
    size_t len, cap;
};

static int bytes_reserve(struct bytes *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1)
        return -1;
    size_t need = b->len + extra + 1; /* + 1: room for a NUL, so p is never NULL once used */
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap > 0 ? b->cap : 64;
    while (cap < need)
        cap = cap <= SIZE_MAX / 2 ? cap * 2 : need;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int bytes_put(struct bytes *b, const void *src, size_t n)
{
    if (n == 0)
        return 0;
    if (bytes_reserve(b, n) != 0)
        return -1;
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

/* ---- incremental detokenizer ------------------------------------------------------------
 * eng_tokenizer_decode is a concatenation of units followed by one strip: every non-byte
 * token renders on its own (a piece with U+2581 as spaces, or an added token's text), a
 * maximal run of byte-fallback tokens renders as its bytes when they are valid UTF-8 and as
 * one U+FFFD per byte otherwise, ids that decode to nothing (padding rows, special tokens
 * under skip_special) neither render nor end a run, and finally one leading space of the
 * whole text is removed. So everything before the open byte run at the end is final. The
 * open run is not: HF judges a run as a whole, so a valid "\xe4\xb8\xad" becomes four U+FFFD
 * when a stray <0xFF> follows it. A valid run is therefore held until a later token closes
 * it; once it can no longer be valid, its U+FFFDs are final and stream byte by byte.
 * This costs O(piece) per token and holds at most the open run, instead of re-decoding a
 * window of tokens. */

/* Incremental UTF-8 well-formedness (RFC 3629: no overlongs, surrogates or > U+10FFFF). */
struct utf8_state {
    unsigned need;         /* continuation bytes still expected */
    unsigned char lo, hi;  /* allowed range of the next continuation byte */
};

/* Feeds one byte; false when the bytes so far can no longer be a prefix of valid UTF-8. */
static bool utf8_step(struct utf8_state *s, unsigned char c)
{
    if (s->need > 0) {
        if (c < s->lo || c > s->hi)
            return false;
        s->need--;
        s->lo = 0x80;
        s->hi = 0xBF;
        return true;
    }
    s->lo = 0x80;
    s->hi = 0xBF;
    if (c < 0x80)
        return true;
    if (c >= 0xC2 && c <= 0xDF) {
        s->need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        s->need = 2;
        if (c == 0xE0)
            s->lo = 0xA0; /* overlong */
        else if (c == 0xED)
            s->hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        s->need = 3;
        if (c == 0xF0)
            s->lo = 0x90; /* overlong */
        else if (c == 0xF4)
            s->hi = 0x8F; /* above U+10FFFF */
    } else {
        return false;
    }
    return true;
}

struct eng_detok {
    const struct eng_tokenizer *tok; /* not owned */
    int32_t n_vocab;
    int skip_special;
    int32_t anchor;      /* a plain token whose text has no leading space (see find_anchor) */
    size_t anchor_len;   /* bytes of decode([anchor]) */
    size_t base;         /* len(decode(context)): the output is the text from this byte on */
    size_t pos;          /* bytes of decode(context ++ generated) that are final */
    bool started;        /* some unit rendered text, so the leading-space strip is settled */
    bool run_open;       /* the last token that rendered was a byte-fallback token */
    bool run_bad;        /* the open run is not valid UTF-8 whatever follows */
    int32_t run_first;   /* its first token */
    struct utf8_state run_utf8;
    struct bytes run;    /* bytes of the open run while it may still be valid */
    struct bytes out;    /* the delta of the current call */
};

/* decode(ids) into a malloc'd text and its length. */
static int decode_ids(const struct eng_detok *d, const int32_t *ids, size_t n, char **text, size_t *len)
{
    return eng_tokenizer_decode(d->tok, ids, n, d->skip_special, text, len);
}

/* Pieces render independently of their neighbours but the decoder strips the first leading
 * space of the whole text, so a piece is rendered after a fixed token that does not start with
 * a space: decode([anchor, id]) = decode([anchor]) ++ text of id. The anchor is the first
 * token that is not a byte, not special (skip_special would drop it), renders non-empty
 * without a leading space and concatenates with itself. Every tokenizer with a usable
 * vocabulary has one; "</s>" or "er" for Llama-2 vocabularies. */
static int find_anchor(struct eng_detok *d)
{
    for (int32_t id = 0; id < d->n_vocab; ++id) {
        size_t plen = 0;
        const char *p = eng_tokenizer_id_to_piece(d->tok, id, &plen);
        if (p == NULL || plen == 0 || p[0] == ' ' || (plen >= 3 && memcmp(p, "\xe2\x96\x81", 3) == 0) ||
            eng_tokenizer_byte_value(d->tok, id) >= 0 || eng_tokenizer_is_special(d->tok, id))
            continue;
        int32_t two[2] = {id, id};
        char *one_text = NULL, *two_text = NULL;
        size_t one_len = 0, two_len = 0;
        int rc = decode_ids(d, two, 1, &one_text, &one_len);
        if (rc == 0)
            rc = decode_ids(d, two, 2, &two_text, &two_len);
        bool ok = rc == 0 && one_len > 0 && one_text[0] != ' ' && two_len == 2 * one_len &&
                  memcmp(two_text, one_text, one_len) == 0 && memcmp(two_text + one_len, one_text, one_len) == 0;
        free(one_text);
        free(two_text);
        if (rc == ENG_TOK_ERR_NOMEM)
            return rc;
        if (ok) {
            d->anchor = id;
            d->anchor_len = one_len;
            return 0;
        }
    }
    return ENG_TOK_ERR_INVALID;
}

/* Appends n final bytes s of the raw (not yet stripped) text. probe is a token whose text on
 * its own is the first probe_len bytes of s: decoding it alone shows whether the decoder strips
 * a leading space, which only matters for the first text of the sequence. */
static int append_final(struct eng_detok *d, const char *s, size_t n, int32_t probe, size_t probe_len)
{
    if (n == 0)
        return 0;
    if (!d->started) {
        d->started = true;
        if (s[0] == ' ') {
            char *alone = NULL;
            size_t alone_len = 0;
            int rc = decode_ids(d, &probe, 1, &alone, &alone_len);
            free(alone);
            if (rc != 0)
                return rc;
            if (alone_len < probe_len) {
                s++;
                n--;
            }
        }
    }
    /* These are bytes [pos, pos + n) of decode(context ++ generated); the caller gets the part
     * from base on. */
    size_t skip = d->pos < d->base ? d->base - d->pos : 0;
    if (skip > n)
        skip = n;
    d->pos += n;
    return bytes_put(&d->out, s + skip, n - skip) == 0 ? 0 : ENG_TOK_ERR_NOMEM;
}

static int append_replacements(struct eng_detok *d, size_t count, int32_t probe)
{
    for (size_t i = 0; i < count; ++i) {
        int rc = append_final(d, REPLACEMENT_CHAR, REPLACEMENT_CHAR_LEN, probe, REPLACEMENT_CHAR_LEN);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Ends the open byte run: its bytes when they are valid UTF-8, one U+FFFD per byte when the
 * run stopped inside a character (a run already known bad has streamed its U+FFFDs). */
static int close_run(struct eng_detok *d)
{
    if (!d->run_open)
        return 0;
    d->run_open = false;
    int rc = 0;
    if (!d->run_bad && d->run_utf8.need == 0)
        rc = append_final(d, d->run.p, d->run.len, d->run_first, 1);
    else if (!d->run_bad)
        rc = append_replacements(d, d->run.len, d->run_first);
    d->run.len = 0;
    return rc;
}

static int push_byte(struct eng_detok *d, int32_t token, unsigned char byte)
{
    if (!d->run_open) {
        d->run_open = true;
        d->run_bad = false;
        d->run_first = token;
        d->run.len = 0;
        memset(&d->run_utf8, 0, sizeof d->run_utf8);
    }
    if (d->run_bad)
        return append_replacements(d, 1, token);
    if (utf8_step(&d->run_utf8, byte))
        return bytes_put(&d->run, &byte, 1) == 0 ? 0 : ENG_TOK_ERR_NOMEM;
    /* No later byte can make this run valid: decode gives one U+FFFD per byte of it. */
    d->run_bad = true;
    size_t count = d->run.len + 1;
    d->run.len = 0;
    return append_replacements(d, count, d->run_first);
}

static int push_token(struct eng_detok *d, int32_t token)
{
    /* Like decode: padding rows and skipped special tokens render nothing and leave an open
     * byte run open (HF drops them before the ByteFallback step). */
    if (token < 0 || token >= d->n_vocab || (d->skip_special && eng_tokenizer_is_special(d->tok, token)))
        return 0;
    int byte = eng_tokenizer_byte_value(d->tok, token);
    if (byte >= 0)
        return push_byte(d, token, (unsigned char)byte);
    int rc = close_run(d);
    if (rc != 0)
        return rc;
    int32_t ids[2] = {d->anchor, token};
    char *text = NULL;
    size_t len = 0;
    rc = decode_ids(d, ids, 2, &text, &len);
    if (rc == 0 && len < d->anchor_len)
        rc = ENG_TOK_ERR_INTERNAL; /* the decoder is not concatenative: find_anchor's check failed */
    if (rc == 0)
        rc = append_final(d, text + d->anchor_len, len - d->anchor_len, token, len - d->anchor_len);
    free(text);
    return rc;
}

int eng_detok_create(const struct eng_tokenizer *tok, const int32_t *context, size_t n_context,
                     bool skip_special, struct eng_detok **out)
{
    if (out == NULL)
        return ENG_TOK_ERR_INVALID;
    *out = NULL;
    if (tok == NULL || (context == NULL && n_context > 0))
        return ENG_TOK_ERR_INVALID;
    if (n_context > ENG_TOK_MAX_DECODE_IDS)
        return ENG_TOK_ERR_TOO_LONG;
    struct eng_detok *d = calloc(1, sizeof *d);
    if (d == NULL)
        return ENG_TOK_ERR_NOMEM;
    d->tok = tok;
    d->n_vocab = eng_tokenizer_get_info(tok)->n_vocab;
    d->skip_special = skip_special ? 1 : 0;
    int rc = find_anchor(d);
    if (rc != 0)
        goto fail;
    char *ctx_text = NULL;
    rc = decode_ids(d, context, n_context, &ctx_text, &d->base);
    free(ctx_text);
    if (rc != 0)
        goto fail;
    /* Replay the context so that the state (open run, strip, position) is the one after it.
     * Its final text is a prefix of decode(context), so nothing reaches the output yet. */
    for (size_t i = 0; i < n_context && rc == 0; ++i)
        rc = push_token(d, context[i]);
    if (rc != 0)
        goto fail;
    assert(d->out.len == 0 && d->pos <= d->base);
    *out = d;
    return 0;
fail:
    eng_detok_destroy(d);
    return rc;
}

void eng_detok_destroy(struct eng_detok *d)
{
    if (d == NULL)
        return;
    free(d->run.p);
    free(d->out.p);
    free(d);
}

static int detok_result(struct eng_detok *d, int rc, const char **delta, size_t *len)
{
    if (rc != 0)
        d->out.len = 0;
    *delta = d->out.len > 0 ? d->out.p : "";
    *len = d->out.len;
    return rc;
}

int eng_detok_push(struct eng_detok *d, int32_t token, const char **delta, size_t *len)
{
    if (d == NULL || delta == NULL || len == NULL)
        return ENG_TOK_ERR_INVALID;
    d->out.len = 0;
    return detok_result(d, push_token(d, token), delta, len);
}

int eng_detok_finish(struct eng_detok *d, const char **delta, size_t *len)
{
    if (d == NULL || delta == NULL || len == NULL)
        return ENG_TOK_ERR_INVALID;
    d->out.len = 0;
    return detok_result(d, close_run(d), delta, len);
}

/* ---- stop strings -----------------------------------------------------------------------
 * Match rule: the occurrence that starts earliest in the text wins; among stop strings that
 * start at the same byte, the shortest. Matching is on bytes. A position of the text is
 * settled once no stop string can start there (the bytes differ) or one has matched there;
 * text is released up to the first unsettled position, which is where a stop string may
 * still begin, so at most max_len - 1 bytes are held. When the sequence ends, flush settles
 * the rest (a shorter stop string inside a longer one that never completed can still match
 * then; a later feed reports stopped). */

struct eng_stop_matcher {
    char **stops;          /* n_stops owned copies */
    size_t *lens;
    size_t n_stops;
    bool first_byte[256];  /* some stop string starts with this byte */
    bool include;
    bool stopped;
    struct bytes buf;      /* [0, released) went out with the last call; the rest is held */
    size_t released;
};

int eng_stop_matcher_create(const char *const *stops, size_t n_stops, bool include_in_output,
                            struct eng_stop_matcher **out)
{
    if (out == NULL)
        return -1;
    *out = NULL;
    if (stops == NULL && n_stops > 0)
        return -1;
    struct eng_stop_matcher *m = calloc(1, sizeof *m);
    if (m == NULL)
        return -1;
    m->include = include_in_output;
    if (n_stops > 0) {
        m->stops = calloc(n_stops, sizeof *m->stops);
        m->lens = calloc(n_stops, sizeof *m->lens);
        if (m->stops == NULL || m->lens == NULL)
            goto fail;
    }
    for (size_t k = 0; k < n_stops; ++k) {
        if (stops[k] == NULL || stops[k][0] == '\0')
            goto fail;
        m->lens[k] = strlen(stops[k]);
        m->stops[k] = malloc(m->lens[k] + 1);
        if (m->stops[k] == NULL)
            goto fail;
        memcpy(m->stops[k], stops[k], m->lens[k] + 1);
        m->n_stops = k + 1;
        m->first_byte[(unsigned char)stops[k][0]] = true;
    }
    *out = m;
    return 0;
fail:
    eng_stop_matcher_destroy(m);
    return -1;
}

void eng_stop_matcher_destroy(struct eng_stop_matcher *m)
{
    if (m == NULL)
        return;
    for (size_t k = 0; k < m->n_stops; ++k)
        free(m->stops[k]);
    free(m->stops);
    free(m->lens);
    free(m->buf.p);
    free(m);
}

/* Moves a release boundary i back to the start of the UTF-8 sequence that contains it, when
 * that sequence is whole in s[0..n) (only a stop string that starts with a continuation byte
 * can put a boundary there). */
static size_t char_boundary(const unsigned char *s, size_t i, size_t n)
{
    if (i >= n || (s[i] & 0xC0) != 0x80)
        return i;
    for (size_t back = 1; back <= 3 && back <= i; ++back) {
        unsigned char c = s[i - back];
        if ((c & 0xC0) == 0x80)
            continue;
        size_t seq = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 1;
        if (seq <= back || seq > n - (i - back))
            return i; /* not a sequence covering i, or not whole in the input */
        for (size_t k = 1; k < seq; ++k)
            if ((s[i - back + k] & 0xC0) != 0x80)
                return i;
        return i - back;
    }
    return i;
}

/* Settles the positions of the held text; at_end: no more text will come, so a partial stop
 * string can no longer complete. Sets released and, on a match, stopped. */
static void stop_scan(struct eng_stop_matcher *m, bool at_end)
{
    const unsigned char *s = (const unsigned char *)m->buf.p;
    size_t n = m->buf.len;
    size_t i = 0;
    for (; i < n; ++i) {
        if (!m->first_byte[s[i]])
            continue;
        size_t best = 0;
        bool partial = false;
        for (size_t k = 0; k < m->n_stops; ++k) {
            size_t len = m->lens[k];
            if (len <= n - i) {
                if ((best == 0 || len < best) && memcmp(s + i, m->stops[k], len) == 0)
                    best = len;
            } else if (!at_end && !partial && memcmp(s + i, m->stops[k], n - i) == 0) {
                partial = true;
            }
        }
        if (best > 0) {
            /* The shortest stop string starting here wins even while a longer one that starts
             * here is still partial. */
            m->stopped = true;
            m->released = i + (m->include ? best : 0);
            m->buf.len = m->released;
            return;
        }
        if (partial)
            break;
    }
    m->released = char_boundary(s, i, n);
}

static void drop_released(struct eng_stop_matcher *m)
{
    if (m->released == 0)
        return;
    memmove(m->buf.p, m->buf.p + m->released, m->buf.len - m->released);
    m->buf.len -= m->released;
    m->released = 0;
}

static void stop_result(struct eng_stop_matcher *m, const char **out, size_t *out_len)
{
    *out = m->released > 0 ? m->buf.p : "";
    *out_len = m->released;
}

int eng_stop_matcher_feed(struct eng_stop_matcher *m, const char *text, size_t len,
                          const char **out, size_t *out_len, bool *stopped)
{
    if (out == NULL || out_len == NULL || stopped == NULL)
        return -1;
    *out = "";
    *out_len = 0;
    *stopped = m != NULL && m->stopped;
    if (m == NULL || (text == NULL && len > 0))
        return -1;
    if (m->stopped)
        return 0;
    /* The text released by the previous call is no longer needed by the caller. */
    drop_released(m);
    if (bytes_put(&m->buf, text, len) != 0)
        return -1;
    stop_scan(m, false);
    stop_result(m, out, out_len);
    *stopped = m->stopped;
    return 0;
}

int eng_stop_matcher_flush(struct eng_stop_matcher *m, const char **out, size_t *out_len,
                           bool *stopped)
{
    if (out == NULL || out_len == NULL || stopped == NULL)
        return -1;
    *out = "";
    *out_len = 0;
    *stopped = false;
    if (m == NULL)
        return -1;
    if (m->stopped)
        return 0;
    drop_released(m);
    stop_scan(m, true);
    stop_result(m, out, out_len);
    *stopped = m->stopped;
    /* Flushed text is gone from the matcher; a later feed starts from empty. */
    if (!m->stopped)
        m->buf.len = m->released;
    return 0;
}
