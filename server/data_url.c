/* data: URL parsing and strict base64 decoding for image_url parts (see data_url.h).
 * It is not a general URL parser: only the data: scheme with a base64 image payload. */
#include "data_url.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", msg);
    return -1;
}

static bool ascii_ieq(const char *s, size_t n, const char *lit)
{
    if (strlen(lit) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)s[i], b = (unsigned char)lit[i];
        if (a >= 'A' && a <= 'Z')
            a = (unsigned char)(a - 'A' + 'a');
        if (a != b)
            return false;
    }
    return true;
}

/* RFC 2045 token characters: printable ASCII except space and tspecials. */
static bool is_token_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* The 6-bit value of a base64 character, or -1. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Checks "image/<subtype>" over s[0, n). */
static bool is_image_mime(const char *s, size_t n)
{
    if (n <= 6 || !ascii_ieq(s, 6, "image/"))
        return false;
    for (size_t i = 6; i < n; i++)
        if (!is_token_char((unsigned char)s[i]))
            return false;
    return true;
}

int srv_data_url_decode(const char *url, size_t url_len, size_t max_bytes, const char **mime,
                        size_t *mime_len, uint8_t **out, size_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    *mime = NULL;
    *mime_len = 0;
    if (url == NULL || url_len < 5 || !ascii_ieq(url, 5, "data:"))
        return fail(err, errlen, "The image URL is not a data: URL.");
    const char *hdr = url + 5;
    const char *comma = memchr(hdr, ',', url_len - 5);
    if (comma == NULL)
        return fail(err, errlen, "The data: URL has no ',' before its payload.");
    size_t hdr_len = (size_t)(comma - hdr);

    /* The media type runs to the first ';' (or the comma). */
    const char *semi = memchr(hdr, ';', hdr_len);
    size_t type_len = semi != NULL ? (size_t)(semi - hdr) : hdr_len;
    if (!is_image_mime(hdr, type_len))
        return fail(err, errlen, "The data: URL's media type is not an image type (image/...).");

    /* Parameters, the last of which must be "base64". */
    bool base64 = false;
    size_t at = type_len;
    while (at < hdr_len) {
        /* hdr[at] == ';' here */
        size_t start = at + 1, end = start;
        while (end < hdr_len && hdr[end] != ';')
            end++;
        if (ascii_ieq(hdr + start, end - start, "base64")) {
            if (end != hdr_len)
                return fail(err, errlen, "The data: URL's ';base64' must come right before ','.");
            base64 = true;
        } else {
            const char *eq = memchr(hdr + start, '=', end - start);
            if (eq == NULL || eq == hdr + start)
                return fail(err, errlen, "The data: URL has a malformed media type parameter.");
            for (const char *q = hdr + start; q < hdr + end; q++)
                if (q != eq && !is_token_char((unsigned char)*q))
                    return fail(err, errlen, "The data: URL has a malformed media type parameter.");
        }
        at = end;
    }
    if (!base64)
        return fail(err, errlen, "The data: URL must be base64-encoded (';base64,').");

    const unsigned char *p = (const unsigned char *)comma + 1;
    size_t n = url_len - (size_t)((const char *)p - url);
    if (n == 0)
        return fail(err, errlen, "The data: URL has an empty payload.");
    if (n % 4 != 0)
        return fail(err, errlen, "The data: URL's base64 payload has an invalid length or padding.");
    size_t pad = p[n - 1] == '=' ? (p[n - 2] == '=' ? 2 : 1) : 0;
    /* n / 4 * 3 cannot overflow; the size check comes before any allocation. */
    size_t dec_len = n / 4 * 3 - pad;
    if (dec_len > max_bytes)
        return fail(err, errlen, "The image is larger than this server accepts.");

    uint8_t *buf = malloc(dec_len > 0 ? dec_len : 1);
    if (buf == NULL)
        return fail(err, errlen, "Out of memory while decoding the image.");
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        bool last = i + 4 == n;
        int v[4];
        for (size_t k = 0; k < 4; k++) {
            v[k] = b64_value(p[i + k]);
            /* '=' only as the final one or two characters of the payload. */
            bool pad_ok = last && k >= 4 - pad && p[i + k] == '=';
            if (v[k] < 0 && !pad_ok) {
                free(buf);
                return fail(err, errlen, "The data: URL's payload is not valid base64.");
            }
        }
        uint32_t bits = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12;
        buf[o++] = (uint8_t)(bits >> 16);
        if (last && pad == 2)
            break;
        bits |= (uint32_t)v[2] << 6;
        buf[o++] = (uint8_t)(bits >> 8);
        if (last && pad == 1)
            break;
        bits |= (uint32_t)v[3];
        buf[o++] = (uint8_t)bits;
    }
    *out = buf;
    *out_len = o;
    *mime = hdr;
    *mime_len = type_len;
    return 0;
}
