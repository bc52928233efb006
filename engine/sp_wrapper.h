/* A thin C interface over sentencepiece::SentencePieceProcessor (the only C++ in phiserve).
 * It loads a serialized model, encodes one already-prepared segment and answers piece
 * queries. It knows nothing of Hugging Face added tokens, prefixes or decoding rules. */
#ifndef PHISERVE_ENGINE_SP_WRAPPER_H
#define PHISERVE_ENGINE_SP_WRAPPER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct eng_sp; /* opaque: one loaded SentencePiece model */

enum eng_sp_err {
    ENG_SP_ERR_INVALID = -1, /* the model bytes do not parse, or an argument is out of range */
    ENG_SP_ERR_NOMEM = -2,   /* allocation failed */
    ENG_SP_ERR_INTERNAL = -3 /* sentencepiece reported an error while encoding */
};

/* Loads a model from a serialized ModelProto (the bytes of a tokenizer.model file). The
 * caller keeps buf; it is copied. Returns 0 and *out (free with eng_sp_destroy), or a negative
 * eng_sp_err with a NUL-terminated message in err (errlen bytes, may be 0). */
int eng_sp_load(const void *buf, size_t len, struct eng_sp **out, char *err, size_t errlen);

/* Frees the model; accepts NULL. */
void eng_sp_destroy(struct eng_sp *sp);

/* Encodes len bytes of text (valid UTF-8; not NUL-terminated) exactly as sentencepiece does,
 * with the normalizer settings of the loaded model. On success returns 0 and a malloc'd array
 * in *ids (the caller frees it with free(); NULL when *n_ids is 0). Returns a negative
 * eng_sp_err on failure, leaving *ids NULL and *n_ids 0. */
int eng_sp_encode(const struct eng_sp *sp, const char *text, size_t len, int32_t **ids, size_t *n_ids);

/* Number of pieces in the model (ids 0 .. n-1). */
int32_t eng_sp_n_pieces(const struct eng_sp *sp);

/* The piece string of id (e.g. "\xe2\x96\x81the", "<0x0A>"), NUL-terminated, its byte length in
 * *len when len is not NULL. Valid until eng_sp_destroy. NULL when id is out of range. */
const char *eng_sp_id_to_piece(const struct eng_sp *sp, int32_t id, size_t *len);

/* The id of the piece spelled exactly by the len bytes at piece, or -1 when no piece is. */
int32_t eng_sp_piece_to_id(const struct eng_sp *sp, const char *piece, size_t len);

/* Piece type queries; all return 0 for ids out of range. */
int eng_sp_is_byte(const struct eng_sp *sp, int32_t id);
int eng_sp_is_unknown(const struct eng_sp *sp, int32_t id);
int eng_sp_is_control(const struct eng_sp *sp, int32_t id);

/* The piece's score (log probability or merge rank); 0 for ids out of range. */
float eng_sp_score(const struct eng_sp *sp, int32_t id);

#ifdef __cplusplus
}
#endif

#endif
