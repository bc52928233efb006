/* Tests server/data_url.c: accepted data: URL shapes, the decoded bytes (against RFC 4648 test
 * vectors and a round trip of every byte value), and each refusal (scheme, media type, missing
 * ;base64, bad characters and padding, whitespace, size limit checked before decoding). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_url.h"

#include "../test_util.h"

/* Decodes the NUL-terminated url; returns the status and, on success, the bytes (caller frees). */
static int decode(const char *url, size_t max_bytes, uint8_t **out, size_t *out_len, char *mime,
                  size_t mime_cap, char *err, size_t errlen)
{
    const char *m = NULL;
    size_t ml = 0;
    int rc = srv_data_url_decode(url, strlen(url), max_bytes, &m, &ml, out, out_len, err, errlen);
    if (rc == 0 && mime != NULL) {
        CHECK(ml < mime_cap && m >= url && m + ml <= url + strlen(url), "mime span");
        snprintf(mime, mime_cap, "%.*s", (int)ml, m);
    }
    return rc;
}

static void expect_ok(const char *url, const char *want, size_t want_len, const char *want_mime)
{
    uint8_t *out = NULL;
    size_t n = 0;
    char mime[64] = "", err[128] = "";
    int rc = decode(url, 1 << 20, &out, &n, mime, sizeof(mime), err, sizeof(err));
    CHECK(rc == 0, "'%s' refused: %s", url, err);
    if (rc != 0)
        return;
    CHECK(n == want_len && memcmp(out, want, want_len) == 0, "'%s' decoded to %zu byte(s)", url, n);
    CHECK(strcmp(mime, want_mime) == 0, "'%s' mime '%s'", url, mime);
    free(out);
}

static void expect_bad(const char *url, size_t max_bytes, const char *why)
{
    uint8_t *out = (uint8_t *)url; /* must be reset to NULL */
    size_t n = 99;
    char err[128] = "";
    int rc = decode(url, max_bytes, &out, &n, NULL, 0, err, sizeof(err));
    CHECK(rc == -1, "'%s' (%s) accepted", url, why);
    CHECK(out == NULL && n == 0, "'%s' left outputs set", url);
    CHECK(err[0] != '\0' && strstr(err, "0x") == NULL, "'%s' message '%s'", url, err);
    if (rc == 0)
        free(out);
}

static void test_vectors(void)
{
    /* RFC 4648 section 10. */
    expect_ok("data:image/png;base64,Zg==", "f", 1, "image/png");
    expect_ok("data:image/png;base64,Zm8=", "fo", 2, "image/png");
    expect_ok("data:image/png;base64,Zm9v", "foo", 3, "image/png");
    expect_ok("data:image/png;base64,Zm9vYg==", "foob", 4, "image/png");
    expect_ok("data:image/png;base64,Zm9vYmE=", "fooba", 5, "image/png");
    expect_ok("data:image/png;base64,Zm9vYmFy", "foobar", 6, "image/png");
    /* Case-insensitive scheme, type and marker; parameters before ;base64. */
    expect_ok("DATA:Image/JPEG;BASE64,Zm9v", "foo", 3, "Image/JPEG");
    expect_ok("data:image/webp;name=x.webp;q=1;base64,Zm9v", "foo", 3, "image/webp");
    /* The URL need not be NUL-terminated: only url_len bytes are read. */
    const char *u = "data:image/png;base64,Zm9vXXXX";
    uint8_t *out = NULL;
    size_t n = 0;
    const char *m = NULL;
    size_t ml = 0;
    char err[64];
    CHECK(srv_data_url_decode(u, strlen(u) - 4, 100, &m, &ml, &out, &n, err, sizeof(err)) == 0 &&
              n == 3 && memcmp(out, "foo", 3) == 0,
          "length-bounded URL");
    free(out);
}

/* Every byte value and every length 1..300 round-trips through an independent encoder. */
static void test_round_trip(void)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t src[300];
    uint64_t rng = 0x9E3779B97F4A7C15u;
    for (size_t i = 0; i < sizeof(src); i++)
        src[i] = i < 256 ? (uint8_t)i : (uint8_t)tu_xorshift64(&rng);
    char *url = tu_xmalloc(64 + sizeof(src) / 3 * 4 + 4);
    for (size_t len = 1; len <= sizeof(src); len++) {
        size_t o = (size_t)sprintf(url, "data:image/png;base64,");
        for (size_t i = 0; i < len; i += 3) {
            uint32_t b = (uint32_t)src[i] << 16;
            if (i + 1 < len)
                b |= (uint32_t)src[i + 1] << 8;
            if (i + 2 < len)
                b |= src[i + 2];
            url[o++] = alpha[b >> 18 & 63];
            url[o++] = alpha[b >> 12 & 63];
            url[o++] = i + 1 < len ? alpha[b >> 6 & 63] : '=';
            url[o++] = i + 2 < len ? alpha[b & 63] : '=';
        }
        url[o] = '\0';
        uint8_t *dec = NULL;
        size_t n = 0;
        char err[128];
        int rc = decode(url, len, &dec, &n, NULL, 0, err, sizeof(err));
        CHECK(rc == 0 && n == len && memcmp(dec, src, len) == 0, "round trip of %zu byte(s): %s", len,
              rc == 0 ? "wrong bytes" : err);
        free(dec);
        /* One byte less than the decoded size is refused. */
        rc = decode(url, len - 1, &dec, &n, NULL, 0, err, sizeof(err));
        CHECK(rc == -1 && dec == NULL, "limit %zu for %zu byte(s)", len - 1, len);
    }
    free(url);
}

static void test_refusals(void)
{
    expect_bad("", 100, "empty");
    expect_bad("data", 100, "short");
    expect_bad("http://example.com/x.png", 100, "not data:");
    expect_bad("file:///etc/passwd", 100, "file URL");
    expect_bad("data:image/png;base64", 100, "no comma");
    expect_bad("data:image/png,Zm9v", 100, "no ;base64");
    expect_bad("data:image/png;base64;x=y,Zm9v", 100, ";base64 not last");
    expect_bad("data:;base64,Zm9v", 100, "no media type");
    expect_bad("data:text/plain;base64,Zm9v", 100, "not an image type");
    expect_bad("data:video/jpeg;base64,Zm9v", 100, "video");
    expect_bad("data:image/;base64,Zm9v", 100, "empty subtype");
    expect_bad("data:image;base64,Zm9v", 100, "no subtype");
    expect_bad("data:image/pn g;base64,Zm9v", 100, "space in type");
    expect_bad("data:image/png;charset;base64,Zm9v", 100, "parameter without value");
    expect_bad("data:image/png;=x;base64,Zm9v", 100, "parameter without name");
    expect_bad("data:image/png;base64,", 100, "empty payload");
    expect_bad("data:image/png;base64,Zm9", 100, "length not a multiple of 4");
    expect_bad("data:image/png;base64,Zg", 100, "missing padding");
    expect_bad("data:image/png;base64,Zm9v Zm9v", 100, "space");
    expect_bad("data:image/png;base64,Zm9v\nZm9v", 100, "newline");
    expect_bad("data:image/png;base64,Zm9v\r\n", 100, "CRLF");
    expect_bad("data:image/png;base64,Zm-v", 100, "URL-safe alphabet");
    expect_bad("data:image/png;base64,Zm_v", 100, "URL-safe alphabet");
    expect_bad("data:image/png;base64,Zm%2F", 100, "percent-encoding");
    expect_bad("data:image/png;base64,Z===", 100, "three pad characters");
    expect_bad("data:image/png;base64,====", 100, "only padding");
    expect_bad("data:image/png;base64,Zm=v", 100, "padding inside a group");
    expect_bad("data:image/png;base64,Zg==Zm9v", 100, "padding before the end");
    expect_bad("data:image/png;base64,Zm9v\x80\x80\x80\x80", 100, "non-ASCII");
    expect_bad("data:image/png;base64,Zm9vYmFy", 5, "6 bytes over a limit of 5");
    expect_bad("data:image/png;base64,Zm9vYg==", 3, "4 bytes over a limit of 3");

    /* An embedded NUL inside the given length is invalid base64. */
    const char nul[] = "data:image/png;base64,Zm\0v";
    uint8_t *out = NULL;
    size_t n = 0;
    const char *m = NULL;
    size_t ml = 0;
    char err[64];
    CHECK(srv_data_url_decode(nul, sizeof(nul) - 1, 100, &m, &ml, &out, &n, err, sizeof(err)) == -1,
          "NUL in payload accepted");

    /* The message is truncated to errlen and may be omitted entirely. */
    char small[8];
    memset(small, 'x', sizeof(small));
    CHECK(srv_data_url_decode("x", 1, 100, &m, &ml, &out, &n, small, sizeof(small)) == -1 &&
              strlen(small) == sizeof(small) - 1,
          "truncated message");
    CHECK(srv_data_url_decode("x", 1, 100, &m, &ml, &out, &n, NULL, 0) == -1, "no message buffer");
}

/* The size check uses the payload's length alone: a URL announcing ~1 GiB with an invalid
 * character near the end is refused for size, not scanned or allocated. */
static void test_limit_before_decode(void)
{
    size_t payload = (size_t)1 << 20; /* 768 KiB decoded */
    char *url = tu_xmalloc(32 + payload + 1);
    size_t o = (size_t)sprintf(url, "data:image/png;base64,");
    memset(url + o, 'A', payload);
    url[o + payload - 5] = '*';
    url[o + payload] = '\0';
    uint8_t *out = NULL;
    size_t n = 0;
    char err[128] = "";
    CHECK(decode(url, payload / 4 * 3 - 1, &out, &n, NULL, 0, err, sizeof(err)) == -1 &&
              strstr(err, "larger") != NULL,
          "size limit not reported first: %s", err);
    CHECK(decode(url, payload, &out, &n, NULL, 0, err, sizeof(err)) == -1 &&
              strstr(err, "base64") != NULL,
          "invalid character not reported: %s", err);
    free(url);
}

int main(void)
{
    test_vectors();
    test_round_trip();
    test_refusals();
    test_limit_before_decode();
    return tu_finish("test_data_url");
}
