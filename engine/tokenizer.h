/* The text tokenizer: a SentencePiece model (through sp_wrapper) plus Hugging Face fast-tokenizer
 * rules read from the model directory (added tokens with rstrip/lstrip, the "\xe2\x96\x81" prefix
 * scheme, BOS/EOS, byte-fallback decoding). Ids and text match transformers' AutoTokenizer.
 * It is not a chat-template renderer and not an incremental (streaming) detokenizer. */
#ifndef PHISERVE_ENGINE_TOKENIZER_H
#define PHISERVE_ENGINE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

/* Inputs larger than this are refused (ENG_TOK_ERR_TOO_LONG): text bytes for encode, ids for
 * decode. Far above any context length; it bounds memory and time on hostile input. */
#define ENG_TOK_MAX_TEXT_BYTES ((size_t)16 << 20)
#define ENG_TOK_MAX_DECODE_IDS ((size_t)4 << 20)

enum eng_tok_err {
    ENG_TOK_ERR_INVALID = -1,  /* a file or argument is malformed or inconsistent */
    ENG_TOK_ERR_NOMEM = -2,    /* allocation failed */
    ENG_TOK_ERR_IO = -3,       /* a required file could not be read */
    ENG_TOK_ERR_TOO_LONG = -4, /* input above ENG_TOK_MAX_TEXT_BYTES / ENG_TOK_MAX_DECODE_IDS */
    ENG_TOK_ERR_INTERNAL = -5  /* sentencepiece failed while encoding */
};

struct eng_tokenizer; /* opaque */

struct eng_tokenizer_info {
    int32_t n_vocab;  /* ids 0 .. n_vocab-1 have a piece; a model's larger vocab_size rows are
                         padding rows no text maps to and that decode to nothing */
    int32_t bos_id;   /* -1 when the tokenizer has none; likewise eos_id, unk_id, pad_id */
    int32_t eos_id;
    int32_t unk_id;
    int32_t pad_id;
    int add_bos;      /* tokenizer_config.json add_bos_token (default 1) */
    int add_eos;      /* tokenizer_config.json add_eos_token (default 0) */
    int n_added;      /* number of added tokens (tokenizer.json "added_tokens") */
};

/* Loads the tokenizer of a Hugging Face model directory: dir/tokenizer.model (required),
 * dir/tokenizer.json (required: its added_tokens with their flags, normalizer, pre_tokenizer
 * and decoder select the HF rules), dir/tokenizer_config.json (bos/eos/unk/pad tokens,
 * add_bos_token, add_eos_token; special_tokens_map.json is the fallback for the tokens) and
 * dir/added_tokens.json if present (entries not already in tokenizer.json become plain,
 * non-special added tokens). The caller keeps dir. Returns 0 and *out (free with
 * eng_tokenizer_destroy), or a negative eng_tok_err with a message naming the file and field
 * in err (errlen bytes, NUL-terminated when errlen > 0). Unsupported HF configurations
 * (another normalizer or pre-tokenizer, single_word added tokens) are refused, not guessed. */
int eng_tokenizer_load_dir(const char *dir, struct eng_tokenizer **out, char *err, size_t errlen);

/* Frees the tokenizer; accepts NULL and half-built objects. */
void eng_tokenizer_destroy(struct eng_tokenizer *tok);

/* Facts about the loaded tokenizer; the pointer is valid until eng_tokenizer_destroy. */
const struct eng_tokenizer_info *eng_tokenizer_get_info(const struct eng_tokenizer *tok);

/* Encodes len bytes of text (need not be NUL-terminated, may contain NUL) as HF's
 * tokenizer(text, add_special_tokens=add_special) does: split on added tokens first (leftmost,
 * then longest match; whitespace right of an rstrip token and left of an lstrip token is
 * swallowed), prefix/escape each remaining segment as tokenizer.json says, run SentencePiece
 * on it, then add BOS/EOS per add_bos/add_eos when add_special is nonzero.
 * Text is meant to be valid UTF-8 (the server rejects anything else earlier). Invalid UTF-8 is
 * not an error here: each maximal ill-formed subsequence is replaced by U+FFFD, as Python's
 * bytes.decode("utf-8", "replace") would, and the result is encoded.
 * On success returns 0 and a malloc'd array in *ids (the caller frees it with free(); NULL
 * when *n_ids is 0). On failure returns a negative eng_tok_err with *ids NULL, *n_ids 0. */
int eng_tokenizer_encode(const struct eng_tokenizer *tok, const char *text, size_t len, int add_special,
                         int32_t **ids, size_t *n_ids);

/* As eng_tokenizer_encode, but stops with ENG_TOK_ERR_TOO_LONG as soon as the result is
 * certain to hold more than max_ids ids, before SentencePiece sees a segment that must exceed it
 * (a token never stands for more text bytes than its piece is long). Only texts whose ids
 * really exceed max_ids are refused; it bounds the time and memory a long hostile prompt costs
 * (a prompt of byte-fallback characters costs one id per byte). */
int eng_tokenizer_encode_max(const struct eng_tokenizer *tok, const char *text, size_t len, int add_special,
                             size_t max_ids, int32_t **ids, size_t *n_ids);

/* Decodes ids as HF's tokenizer.decode(ids, skip_special_tokens=skip_special) does: pieces
 * with "\xe2\x96\x81" turned into spaces, runs of byte-fallback pieces assembled into bytes (a
 * run that is not valid UTF-8 becomes one U+FFFD per byte), added tokens as their text
 * (special ones left out when skip_special), one leading space of the result removed. Ids
 * outside 0 .. n_vocab-1 (padding rows) decode to nothing. On success returns 0 and a malloc'd,
 * NUL-terminated UTF-8 string in *text (the caller frees it with free()) with its length
 * (excluding the NUL; the text may contain NUL bytes) in *len. On failure returns a negative
 * eng_tok_err with *text NULL and *len 0. */
int eng_tokenizer_decode(const struct eng_tokenizer *tok, const int32_t *ids, size_t n_ids, int skip_special,
                         char **text, size_t *len);

/* The vocabulary spelling of id ("\xe2\x96\x81Hello", "<0x0A>", "<|end|>"), NUL-terminated, with
 * its byte length in *len when len is not NULL, or NULL when id is not in 0 .. n_vocab-1.
 * Valid until eng_tokenizer_destroy. */
const char *eng_tokenizer_id_to_piece(const struct eng_tokenizer *tok, int32_t id, size_t *len);

/* The id whose vocabulary spelling is exactly the len bytes at piece (added tokens first),
 * or -1 when there is none. */
int32_t eng_tokenizer_piece_to_id(const struct eng_tokenizer *tok, const char *piece, size_t len);

/* 1 when id is an added token marked special (the ones decode drops with skip_special),
 * else 0 (also for ids out of range). */
int eng_tokenizer_is_special(const struct eng_tokenizer *tok, int32_t id);

/* The byte value 0..255 of a byte-fallback piece ("<0x41>" -> 65), or -1 for any other id. */
int eng_tokenizer_byte_value(const struct eng_tokenizer *tok, int32_t id);

/* The bytes id adds in the middle of a decoded text (no leading-space strip applies there):
 * a SentencePiece piece with U+2581 as spaces, or the byte of a byte-fallback piece. Writes
 * them to buf (cap bytes, caller's; the piece's length always suffices) and returns their
 * number, or -1 for ids that are not plain text (added tokens, control and unknown pieces,
 * ids out of range) or when cap is too small. Grammars match tokens by these bytes. */
int eng_tokenizer_token_bytes(const struct eng_tokenizer *tok, int32_t id, char *buf, size_t cap);

#endif
