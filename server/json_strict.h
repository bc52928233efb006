/* A strict JSON parser for request bodies: RFC 8259 plus the rules a server edge needs (valid
 * UTF-8 only, no \u0000, no lone surrogates, no duplicate keys, bounded depth and memory, finite
 * numbers). It builds a read-only tree and names the JSON path of any problem. It is not a
 * general JSON library (no writer, no editing) and knows nothing of the OpenAI schema. */
#ifndef PHISERVE_SERVER_JSON_STRICT_H
#define PHISERVE_SERVER_JSON_STRICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"

/* Defaults and hard ceilings of struct srv_json_opts. */
#define SRV_JSON_DEPTH_DEFAULT 128
#define SRV_JSON_DEPTH_CEILING 512 /* the parser recurses once per level */
#define SRV_JSON_NUMBER_MAX_CHARS 256

enum srv_json_type {
    SRV_JSON_NULL,
    SRV_JSON_BOOL,
    SRV_JSON_NUMBER,
    SRV_JSON_STRING,
    SRV_JSON_ARRAY,
    SRV_JSON_OBJECT,
};

/* One value. Children of an array or object form a singly linked list (child, then next), in
 * document order. All pointers stay valid until srv_json_free of the document. */
struct srv_json {
    uint8_t type;      /* enum srv_json_type */
    bool b;            /* BOOL: the value */
    bool is_int;       /* NUMBER: written as an integer literal that fits int64 (then i is exact) */
    uint32_t key_len;  /* bytes of key, when this value is an object member */
    size_t len;        /* STRING: bytes, without the NUL; ARRAY/OBJECT: number of children */
    union {
        struct {
            double d;  /* NUMBER: always set and finite */
            int64_t i; /* NUMBER: exact when is_int */
        } num;
        const char *str;        /* STRING: decoded UTF-8, NUL-terminated, no NUL inside */
        struct srv_json *child; /* ARRAY/OBJECT: first child or NULL */
    } u;
    const char *key;       /* object member: decoded key, NUL-terminated; NULL otherwise */
    struct srv_json *next; /* next sibling or NULL */
};

struct srv_json_opts {
    int max_depth;    /* nested arrays/objects allowed; <= 0 means SRV_JSON_DEPTH_DEFAULT, capped
                         at SRV_JSON_DEPTH_CEILING. The top-level container is depth 1. */
    size_t max_bytes; /* memory the tree may use; 0 means 16 x body length + 256 KiB */
};

struct srv_json_doc; /* opaque: owns the tree */

/* Parses body[0..len) (need not be NUL-terminated; caller keeps it). Accepts one JSON value of
 * any type, surrounded by optional whitespace; a leading UTF-8 byte-order mark is skipped.
 * opts may be NULL (defaults). On success returns 0 and *out (free with srv_json_free).
 * On failure returns a negative SRV_ERR_* code, *out = NULL, and fills err (caller keeps it)
 * with param = the JSON path of the offending value ("" at the top level) and a message that
 * gives the byte offset:
 *   SRV_ERR_INVALID_JSON      syntax, trailing data, invalid UTF-8 (overlong forms, UTF-8-
 *                             encoded surrogates, > U+10FFFF, truncated), raw control chars,
 *                             bad or lone \u surrogate escapes, \u0000, numbers that overflow
 *                             to +-inf or longer than SRV_JSON_NUMBER_MAX_CHARS;
 *   SRV_ERR_DUPLICATE_KEY     the same key twice in one object (param names the key);
 *   SRV_ERR_JSON_TOO_DEEP     deeper than max_depth;
 *   SRV_ERR_JSON_TOO_COMPLEX  the tree would exceed max_bytes;
 *   SRV_ERR_NO_MEMORY         malloc failed. */
int srv_json_parse(const char *body, size_t len, const struct srv_json_opts *opts,
                   struct srv_json_doc **out, struct srv_error *err);

/* The root value; valid until srv_json_free. */
const struct srv_json *srv_json_root(const struct srv_json_doc *doc);

/* Bytes of memory the tree holds (for tests of the budget). */
size_t srv_json_bytes(const struct srv_json_doc *doc);

/* Frees the document and its tree; accepts NULL. */
void srv_json_free(struct srv_json_doc *doc);

/* The member of object obj whose key is exactly key (case-sensitive), or NULL. Returns NULL when
 * obj is NULL or not an object. */
const struct srv_json *srv_json_get(const struct srv_json *obj, const char *key);

/* Returns the length (1-4) of the valid UTF-8 sequence at s[0..n), or 0 when it is not one
 * (overlong forms, surrogates U+D800-DFFF, code points above U+10FFFF, truncation, stray
 * continuation bytes are all invalid). */
size_t srv_utf8_seq_len(const unsigned char *s, size_t n);

#endif
