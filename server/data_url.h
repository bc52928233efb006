/* data: URLs (RFC 2397) carrying base64 images, as in OpenAI image_url parts: checks the URL's
 * shape and media type and decodes the payload into bytes. It does not look inside the bytes
 * (engine/image.c sniffs and decodes the image) and never fetches anything. */
#ifndef PHISERVE_SERVER_DATA_URL_H
#define PHISERVE_SERVER_DATA_URL_H

#include <stddef.h>
#include <stdint.h>

/* Parses "data:<mime>[;<attr>=<value>...];base64,<payload>" and decodes the payload.
 * url (caller keeps) is url_len bytes and need not be NUL-terminated. The scheme "data:" and the
 * "base64" marker are matched case-insensitively; the media type must be "image/<subtype>"
 * (case-insensitive, RFC 2045 token characters); parameters between the media type and
 * ";base64" are allowed and ignored. The payload is standard base64 (RFC 4648 alphabet with
 * '+' and '/'), padded to a multiple of 4 characters with at most two '='; no whitespace, no
 * URL-safe alphabet, no percent-encoding. Bits left over after the last byte are ignored (as
 * Python's base64 does). An empty payload is refused.
 * The decoded size is known from the payload's length and its padding; when it exceeds
 * max_bytes the URL is refused before anything is allocated.
 * On success returns 0; *out (callee allocates, caller frees with free()) holds *out_len decoded
 * bytes, and *mime points into url at the media type (not NUL-terminated, *mime_len bytes; valid
 * while url is). On failure returns -1, leaves *out NULL and writes a fixed, NUL-terminated
 * message (no input bytes, no pointers) into err (errlen bytes, truncated to fit; err may be
 * NULL when errlen is 0). */
int srv_data_url_decode(const char *url, size_t url_len, size_t max_bytes, const char **mime,
                        size_t *mime_len, uint8_t **out, size_t *out_len, char *err, size_t errlen);

#endif
