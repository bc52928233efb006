/* Streaming text output of one generated sequence: an incremental detokenizer that turns
 * token ids into UTF-8 text deltas, and a stop-string matcher that finds stop strings across
 * token boundaries and holds back text that might be the start of one. Not the tokenizer
 * itself (engine/tokenizer.h) and not the decision to stop on token ids (engine/sampler.h). */
#ifndef PHISERVE_ENGINE_DETOK_H
#define PHISERVE_ENGINE_DETOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* ---- incremental detokenizer ----
 * Contract: the concatenation of every delta returned for a sequence equals
 *   decode(context ++ generated)[len(decode(context)):]
 * with decode = eng_tokenizer_decode(.., skip_special), where context is the prompt tail given
 * at creation (so a completion's first token keeps its leading space, as OpenAI and vLLM
 * return " Paris" after "The capital of France is"). A delta never ends inside a UTF-8
 * sequence: bytes of an incomplete character are held until it completes (or until
 * eng_detok_finish, which flushes what decode gives for them, U+FFFD included). */
struct eng_detok;

/* Creates a detokenizer for one sequence. context: the last tokens of the prompt (the caller
 * keeps the array; a handful, e.g. 6, is enough; n_context may be 0). Returns 0 and *out, or a
 * negative eng_tok_err. tok must outlive the detokenizer. */
int eng_detok_create(const struct eng_tokenizer *tok, const int32_t *context, size_t n_context,
                     bool skip_special, struct eng_detok **out);

/* Frees; accepts NULL. */
void eng_detok_destroy(struct eng_detok *d);

/* Appends one generated token. On return *delta points to the new text (valid until the next
 * call on d; may be empty, then *len is 0). Returns 0 or a negative eng_tok_err. */
int eng_detok_push(struct eng_detok *d, int32_t token, const char **delta, size_t *len);

/* Flushes held bytes at the end of the sequence (same pointer rules as push). */
int eng_detok_finish(struct eng_detok *d, const char **delta, size_t *len);

/* ---- stop strings ----
 * Finds the first occurrence of any stop string in the streamed text. Text that could still
 * be the beginning of a stop string is held back and released once it cannot be. On a match,
 * the text before the stop string (plus the stop string itself when include_in_output) is
 * released and the matcher reports stopped; the rest is discarded. */
struct eng_stop_matcher;

/* stops: n_stops NUL-terminated, non-empty strings (copied). Returns 0 and *out, or -1 on
 * allocation failure or an empty string. n_stops may be 0 (everything passes through). */
int eng_stop_matcher_create(const char *const *stops, size_t n_stops, bool include_in_output,
                            struct eng_stop_matcher **out);

void eng_stop_matcher_destroy(struct eng_stop_matcher *m);

/* Feeds len bytes of text. *out and *out_len receive the text that is now safe to send (valid until
 * the next call on m); *stopped becomes true when a stop string was found (then later calls
 * release nothing). Never splits a UTF-8 sequence that was whole in the input. Returns 0 or -1
 * on allocation failure. */
int eng_stop_matcher_feed(struct eng_stop_matcher *m, const char *text, size_t len,
                          const char **out, size_t *out_len, bool *stopped);

/* End of the sequence without a match so far: releases the held-back text. A stop string can
 * still be found there (stops "abcd" and "bc" with the text ending in "abc"): then only the text
 * before it (plus it, when include_in_output) is released and *stopped becomes true, so that the
 * sequence finishes as "stop". Same pointer rules as feed. Returns 0, or -1 for NULL arguments. */
int eng_stop_matcher_flush(struct eng_stop_matcher *m, const char **out, size_t *out_len,
                           bool *stopped);

#endif
