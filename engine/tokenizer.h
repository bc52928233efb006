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
    int add_bos;      /* tokenizer_config.json add_bos_token or GGUF add_bos_token (default 1) */
    int add_eos;      /* tokenizer_config.json add_eos_token or GGUF add_eos_token (default 0) */
    int n_added;      /* number of added tokens (tokenizer.json "added_tokens", GGUF control and
                         user-defined tokens) */
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

struct eng_gguf;

/* Builds the tokenizer from a GGUF file's tokenizer.ggml.* metadata (model "llama": a
 * SentencePiece vocabulary, as llama.cpp's converter writes it). Any other model is refused
 * ("tokenizer model gpt2 is not supported").
 *
 * Read: tokenizer.ggml.tokens (string array), .scores (f32 array) and .token_type (i32 array:
 * 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte), all required, of one
 * length n, 1 <= n <= 2^20; .bos_token_id, .eos_token_id, .unknown_token_id, .padding_token_id
 * (any integer type; when absent 1, 2, 0 and none, llama.cpp's defaults); .add_bos_token and
 * .add_eos_token (bool; absent: 1 and 0); .add_space_prefix (bool; absent: 1); and for the
 * Phi-3 rule general.architecture and general.name. tokenizer.ggml.pre and the chat template
 * are not read.
 *
 * Rules (chosen so that a GGUF converted from a Hugging Face Phi-3 directory tokenizes and
 * decodes exactly as transformers does on that directory):
 * - SentencePiece part: ids 0 .. n_sp-1, n_sp one past the last normal or byte token. It
 *   becomes a BPE model (merges by score), with byte fallback when it has byte pieces, identity
 *   normalizer, spaces escaped as U+2581 and no dummy prefix of its own. Piece types: the
 *   unknown id UNKNOWN; 1 NORMAL; 6 BYTE; 3 and 4 CONTROL; other 2 and 5 UNUSED.
 * - Added tokens (split off before SentencePiece, as HF's added_tokens): every control (3) and
 *   user-defined (4) token and the unknown token. The unknown and control tokens are special
 *   (dropped by skip_special), user-defined ones not: the converter writes HF's special added
 *   tokens as control, the others as user-defined. Never lstrip. rstrip only in the Phi-3 family (general.architecture "phi3"
 *   or "phimoe", or general.name containing "phi3" or "phi-3" in any case): on every added
 *   token except "<unk>", "<s>" and "<|endoftext|>", which are the flags of Microsoft's
 *   tokenizer.json since May 2024 and llama.cpp's hard-coded Phi-3 rule (phi3-models.md 6.3).
 *   Other models get no strip flags, HF's default.
 * - Unknown (2) and unused (5) tokens after the SentencePiece part are padding rows: no piece,
 *   no text maps to them, they decode to nothing, and n_vocab ends after the last other token
 *   (Phi-3: 32064 tokens, n_vocab 32011, as from its HF directory).
 * - add_space_prefix selects HF's legacy Llama normalizer, Prepend(U+2581) on every text
 *   segment including one right after an added token, plus the decoder's one-space strip;
 *   false selects neither. That is Microsoft's Phi-3 tokenizer.json and what llama.cpp does;
 *   a GGUF does not record whether its source used the newer Metaspace "first" scheme.
 *
 * Refused with ENG_TOK_ERR_INVALID and a message naming the key or token: a missing or
 * mistyped key; lengths that differ or are out of range; a type outside 1..6; a piece that is
 * empty, over 4096 bytes, not valid UTF-8 or holding a NUL; a byte piece not spelled "<0xHH>"
 * (uppercase hex); other than 0 or 256 byte pieces; a NaN score in the SentencePiece part; two
 * tokens with the same piece (padding rows aside: sentencepiece and added-token matching need
 * unique pieces); a special id, given or default, not below n_vocab or naming a padding row;
 * an unknown id outside the SentencePiece part or naming a normal or byte piece; over 4096
 * added tokens; tokenizer.ggml.remove_extra_whitespaces true or a precompiled_charsmap
 * (normalizers not implemented here).
 * The caller keeps g; the tokenizer copies what it needs. Returns 0 and *out (free with
 * eng_tokenizer_destroy), or a negative eng_tok_err with *out NULL and a message in err
 * (errlen bytes, NUL-terminated when errlen > 0). */
int eng_tokenizer_load_gguf(const struct eng_gguf *g, struct eng_tokenizer **out, char *err, size_t errlen);

/* The tokenizer of the model at path: eng_tokenizer_load_dir for a directory, for a GGUF file
 * (eng_model_is_gguf) eng_tokenizer_load_gguf on it; a GGUF file without tokenizer.ggml.tokens
 * gives ENG_TOK_ERR_IO, as a directory without tokenizer.model does. */
int eng_tokenizer_load_path(const char *path, struct eng_tokenizer **out, char *err, size_t errlen);

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
