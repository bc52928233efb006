/* The tokenizer's object and the two loading steps its loaders share: tokenizer.c (a Hugging
 * Face directory; encode, decode, lookups) and tokenizer_gguf.c (GGUF metadata). Private to
 * those two files; everything else goes through tokenizer.h. */
#ifndef PHISERVE_ENGINE_TOKENIZER_INTERNAL_H
#define PHISERVE_ENGINE_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

struct eng_sp;

/* How a segment of plain text (between added tokens) is prepared for SentencePiece. */
enum prefix_rule {
    PREFIX_NEVER = 0,      /* spaces become the mark, nothing is prepended */
    PREFIX_LEGACY,         /* normalizer Prepend(mark) + Replace(" ", mark): every segment */
    PREFIX_META_ALWAYS,    /* Metaspace "always": every segment not already starting with the mark */
    PREFIX_META_FIRST,     /* Metaspace "first": only the segment at offset 0 of the input */
};

struct added_token {
    char *content;
    size_t len;
    int32_t id;
    bool lstrip, rstrip, special;
};

struct eng_tokenizer {
    struct eng_sp *sp;
    struct eng_tokenizer_info info;
    enum prefix_rule prefix;
    bool strip_leading_space;    /* decoder removes one leading space of the result */
    struct added_token *added;   /* [info.n_added], capacity cap_added */
    int cap_added;
    int32_t *added_of_id;        /* [info.n_vocab]: index into added, or -1 */
    int16_t *byte_of_id;         /* [n_sp_pieces]: byte value of a byte-fallback piece, or -1 */
    int32_t n_sp;
    size_t max_piece_bytes;      /* longest SentencePiece piece: no id covers more text bytes */
    bool first_byte[256];        /* some added token starts with this byte */
};

/* Registers an added token (content NUL-terminated, copied; the caller keeps it). Refuses ids
 * outside 0 .. 2^24-1, empty content, an id already added, and more than 4096 added tokens.
 * Returns 0 or a negative eng_tok_err with a message in err. */
int eng_tokenizer_add_token(struct eng_tokenizer *tok, const char *content, int64_t id, bool lstrip, bool rstrip,
                            bool special, char *err, size_t errlen);

/* The last loading step, once tok->sp, tok->n_sp and the added tokens are in place: sets
 * info.n_vocab (SentencePiece pieces and added-token ids), max_piece_bytes, and the id tables
 * (added_of_id, byte_of_id). Returns 0 or a negative eng_tok_err with a message in err. */
int eng_tokenizer_build_tables(struct eng_tokenizer *tok, char *err, size_t errlen);

#endif
