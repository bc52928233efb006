/* The project's one reader of untrusted JSON (request bodies, config.json, safetensors headers):
 * RFC 8259 plus strict rules (valid UTF-8 only, no \u0000, no lone surrogates, no duplicate keys,
 * bounded depth and memory, finite numbers, exact int64 for integer literals). It builds a
 * read-only tree and names the JSON path of any problem; json_write.c writes such a tree back
 * out compactly. It is not a general JSON library (no editing) and knows no schema; callers
 * turn its errors into their own. */
#ifndef PHISERVE_ENGINE_JSON_H
#define PHISERVE_ENGINE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Defaults and hard ceilings of struct eng_json_opts. */
#define ENG_JSON_DEPTH_DEFAULT 128
#define ENG_JSON_DEPTH_CEILING 512 /* the parser recurses once per level */
#define ENG_JSON_NUMBER_MAX_CHARS 256

/* Buffer sizes of struct eng_json_error. Each key in a path is cut to ENG_JSON_KEY_MAX - 1
 * bytes on a UTF-8 boundary, and the whole path to ENG_JSON_PATH_MAX - 1 bytes. */
#define ENG_JSON_KEY_MAX 129
#define ENG_JSON_PATH_MAX 320
#define ENG_JSON_MESSAGE_MAX 96

enum eng_json_err {
    ENG_JSON_ERR_SYNTAX = -1,        /* grammar, trailing data, invalid UTF-8, raw control
                                        characters, bad or lone \u surrogate escapes, \u0000,
                                        numbers that overflow to +-inf or are longer than
                                        ENG_JSON_NUMBER_MAX_CHARS, empty input */
    ENG_JSON_ERR_DUPLICATE_KEY = -2, /* the same key twice in one object */
    ENG_JSON_ERR_TOO_DEEP = -3,      /* nested deeper than max_depth */
    ENG_JSON_ERR_TOO_COMPLEX = -4,   /* the tree would exceed max_bytes */
    ENG_JSON_ERR_NO_MEMORY = -5,     /* malloc failed */
};

/* Where and why a parse failed. All strings are NUL-terminated UTF-8. */
struct eng_json_error {
    int code;                          /* enum eng_json_err */
    size_t offset;                     /* byte of the input where the problem was found */
    char path[ENG_JSON_PATH_MAX];      /* JSON path of the offending value, keys joined by '.'
                                          and indices as [i]: "messages[2].content"; "" at the
                                          top level. DUPLICATE_KEY: ends with the repeated key. */
    char key[ENG_JSON_KEY_MAX];        /* the last step of path when it is an object key (for
                                          DUPLICATE_KEY: the repeated key), else "". path equals
                                          key exactly when it is a member of the root object. */
    char message[ENG_JSON_MESSAGE_MAX]; /* what is wrong, lower case, without the position:
                                          "duplicate key in an object" */
};

enum eng_json_type {
    ENG_JSON_NULL,
    ENG_JSON_BOOL,
    ENG_JSON_NUMBER,
    ENG_JSON_STRING,
    ENG_JSON_ARRAY,
    ENG_JSON_OBJECT,
};

/* One value. Children of an array or object form a singly linked list (child, then next), in
 * document order. All pointers stay valid until eng_json_free of the document. */
struct eng_json {
    uint8_t type;      /* enum eng_json_type */
    bool b;            /* BOOL: the value */
    bool is_int;       /* NUMBER: written as an integer literal that fits int64 (then i is exact) */
    uint32_t key_len;  /* bytes of key, when this value is an object member */
    size_t len;        /* STRING: bytes, without the NUL; ARRAY/OBJECT: number of children */
    union {
        struct {
            double d;  /* NUMBER: always set and finite; the double strtod gives in the C
                          locale (correctly rounded), whatever the process's locale is */
            int64_t i; /* NUMBER: exact when is_int */
        } num;
        const char *str;        /* STRING: decoded UTF-8, NUL-terminated, no NUL inside */
        struct eng_json *child; /* ARRAY/OBJECT: first child or NULL */
    } u;
    const char *key;       /* object member: decoded key, NUL-terminated; NULL otherwise */
    struct eng_json *next; /* next sibling or NULL */
};

struct eng_json_opts {
    int max_depth;    /* nested arrays/objects allowed; <= 0 means ENG_JSON_DEPTH_DEFAULT, capped
                         at ENG_JSON_DEPTH_CEILING. The top-level container is depth 1. */
    size_t max_bytes; /* memory the tree may use; 0 means 16 x input length + 256 KiB */
};

struct eng_json_doc; /* opaque: owns the tree */

/* Parses text[0..len) (need not be NUL-terminated; caller keeps it). Accepts one JSON value of
 * any type, surrounded by optional whitespace; a leading UTF-8 byte-order mark is skipped.
 * opts may be NULL (defaults). On success returns 0 and *out (free with eng_json_free). On
 * failure returns a negative ENG_JSON_ERR_* code, *out = NULL, and fills err (caller keeps it;
 * err->code is the same code). Errors are reported in document order: the first problem wins. */
int eng_json_parse(const char *text, size_t len, const struct eng_json_opts *opts,
                   struct eng_json_doc **out, struct eng_json_error *err);

/* The root value; valid until eng_json_free. */
const struct eng_json *eng_json_root(const struct eng_json_doc *doc);

/* Bytes of memory the tree holds (for tests of the budget). */
size_t eng_json_bytes(const struct eng_json_doc *doc);

/* Frees the document and its tree; accepts NULL. */
void eng_json_free(struct eng_json_doc *doc);

/* The member of object obj whose key is exactly key (case-sensitive), or NULL. Returns NULL when
 * obj is NULL or not an object. */
const struct eng_json *eng_json_get(const struct eng_json *obj, const char *key);

/* Returns the length (1-4) of the valid UTF-8 sequence at s[0..n), or 0 when it is not one
 * (overlong forms, surrogates U+D800-DFFF, code points above U+10FFFF, truncation, stray
 * continuation bytes are all invalid). */
size_t eng_utf8_seq_len(const unsigned char *s, size_t n);

/* The value 0-15 of the hex digit ch (either case), or -1: for \u escapes and their kin. */
static inline int eng_hex_digit(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* ---- writing (json_write.c) ---- */

/* The escape JSON needs for byte ch inside a string (\" \\ \n \r \t \b \f, \u00XX for the
 * other control characters), written into esc (8 bytes, the caller's) when it is built there;
 * NULL for a byte written as it is. Shared by eng_json_write and the templates' tojson. */
const char *eng_json_escape(unsigned char ch, char esc[8]);

/* v as compact JSON: no whitespace, members in document order, strings with the short escapes
 * (\" \\ \n \r \t \b \f), \u00XX for the other control characters and every other
 * character as it is, integer literals exactly and other numbers in the shortest form that
 * reads back as the same double. Returns 0 and a malloc'd, NUL-terminated *out of *len bytes
 * (the caller frees it), or -1 when out of memory (*out NULL). */
int eng_json_write(const struct eng_json *v, char **out, size_t *len);

/* The JSON string literal of s[0..n) (caller keeps s), written as eng_json_write writes
 * strings. Same returns. */
int eng_json_write_string(const char *s, size_t n, char **out, size_t *len);

#endif
