/* Fuzz target for the stop-string matcher of engine/detok.c: the input chooses stop strings,
 * include_in_output, a text and the split of the text into feeds; the streamed result must
 * equal a whole-string reference. It needs no tokenizer and is not a test of the detokenizer.
 * Input layout: byte 0 = flags (bit 0 include, bits 1-2 number of stop strings 0..3), then per
 * stop string a length byte (1 + b % 8) and that many bytes (NUL becomes 'a'), then one byte
 * seeding the split sizes, then the text. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_STOPS 3
#define MAX_STOP_LEN 8
/* A stop string that starts with a UTF-8 continuation byte may hold up to 3 more bytes (the
 * matcher does not release part of a whole character). */
#define MAX_EXTRA_HOLD 3

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_stop: invariant broken: %s\n", what);
    abort();
}

/* Earliest-starting occurrence, shortest at a tie. */
static bool reference(const uint8_t *t, size_t n, char stops[][MAX_STOP_LEN + 1], size_t n_stops, size_t *start,
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    bool include = data[0] & 1;
    size_t n_stops = (data[0] >> 1) & 3;
    if (n_stops > MAX_STOPS)
        n_stops = MAX_STOPS;
    size_t at = 1, max_len = 0;
    char stops[MAX_STOPS][MAX_STOP_LEN + 1];
    const char *stop_ptrs[MAX_STOPS];
    for (size_t k = 0; k < n_stops; ++k) {
        if (at >= size)
            return 0;
        size_t l = 1 + data[at++] % MAX_STOP_LEN;
        if (l > size - at)
            return 0;
        for (size_t j = 0; j < l; ++j)
            stops[k][j] = data[at + j] != 0 ? (char)data[at + j] : 'a';
        stops[k][l] = '\0';
        stop_ptrs[k] = stops[k];
        at += l;
        max_len = l > max_len ? l : max_len;
    }
    if (at >= size)
        return 0;
    uint32_t seed = 0x2545F491u ^ data[at++];
    const uint8_t *text = data + at;
    size_t n = size - at;

    size_t mstart = 0, mlen = 0;
    bool match = reference(text, n, stops, n_stops, &mstart, &mlen);
    size_t want = match ? mstart + (include ? mlen : 0) : n;

    struct eng_stop_matcher *m = NULL;
    if (eng_stop_matcher_create(stop_ptrs, n_stops, include, &m) != 0)
        fail("create");
    uint8_t *got = malloc(n > 0 ? n : 1);
    if (got == NULL)
        fail("out of memory");
    size_t got_len = 0, pos = 0;
    bool stopped = false;
    while (pos < n && !stopped) {
        seed = seed * 1103515245u + 12345u;
        size_t l = (seed >> 16) % 9; /* 0..8 bytes, empty feeds included */
        if (l > n - pos)
            l = n - pos;
        const char *out = NULL;
        size_t out_len = 0;
        if (eng_stop_matcher_feed(m, (const char *)text + pos, l, &out, &out_len, &stopped) != 0)
            fail("feed");
        pos += l;
        if (out_len > want - got_len || memcmp(out, text + got_len, out_len) != 0)
            fail("released text is not a prefix of the reference output");
        memcpy(got + got_len, out, out_len);
        got_len += out_len;
        if (stopped && got_len != want)
            fail("stopped with the wrong text");
        if (!stopped && n_stops > 0 && pos - got_len > max_len - 1 + MAX_EXTRA_HOLD)
            fail("held back too much");
        if (!stopped && n_stops == 0 && got_len != pos)
            fail("no stop strings, yet text held back");
    }
    bool flush_stop = false;
    if (!stopped) {
        const char *out = NULL;
        size_t out_len = 0;
        bool fed_stop = false;
        if (eng_stop_matcher_flush(m, &out, &out_len, &flush_stop) != 0)
            fail("flush");
        if (out_len != want - got_len || memcmp(out, text + got_len, out_len) != 0)
            fail("flushed text differs from the reference output");
        got_len += out_len;
        if (eng_stop_matcher_feed(m, NULL, 0, &out, &out_len, &fed_stop) != 0 || out_len != 0 ||
            fed_stop != flush_stop)
            fail("feed after flush");
    }
    if (got_len != want)
        fail("output length differs from the reference");
    if ((stopped || flush_stop) != match)
        fail("stop reported differs from the reference");
    free(got);
    eng_stop_matcher_destroy(m);
    return 0;
}
