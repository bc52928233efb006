/* Grammar-constrained decoding: a context-free grammar over bytes, a matcher that follows the
 * generated text through it, and the per-step mask of the tokens whose text the grammar still
 * allows (the sampler's "grammar" logit processor). It knows nothing of JSON Schema
 * (engine/json_schema.h builds grammars) and nothing of requests or sampling.
 *
 * A grammar is a set of rules; a rule is a list of alternatives; an alternative is a sequence
 * of elements, each a byte class (a set of bytes, one byte of text) or a reference to a rule.
 * Rule 0 is the root. The matcher keeps every parse still possible (a set of stacks, as
 * llama.cpp's grammar sampler does), so ambiguous grammars work; a reference in tail position
 * adds no stack depth, so right recursion (`list ::= item list | ""`) runs in constant space.
 * Left recursion and cycles of empty rules are not allowed: eng_grammar_finish refuses them.
 *
 * Token text: a token stands for the bytes it adds in the middle of a text, as
 * eng_tokenizer_token_bytes gives them (a SentencePiece piece with U+2581 as spaces, or the
 * byte of a byte-fallback piece). Added and control tokens never match; the caller lets the
 * end-of-sequence tokens through once the grammar is complete. */
#ifndef PHISERVE_ENGINE_GRAMMAR_H
#define PHISERVE_ENGINE_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* Ceilings that bound what one client-supplied grammar may cost. */
#define ENG_GRAMMAR_MAX_ELEMS (1 << 18)  /* elements over all alternatives (1 MiB) */
#define ENG_GRAMMAR_MAX_RULES (1 << 15)
#define ENG_GRAMMAR_MAX_DEPTH 512        /* stack depth of one parse: nesting */
#define ENG_GRAMMAR_MAX_STACKS 256       /* parses followed at once */

enum eng_grammar_err {
    ENG_GRAMMAR_ERR_INVALID = -1,   /* a bad argument, a reference to a missing rule, a rule
                                       without alternatives, or an empty byte class */
    ENG_GRAMMAR_ERR_NOMEM = -2,
    ENG_GRAMMAR_ERR_TOO_BIG = -3,   /* beyond ENG_GRAMMAR_MAX_ELEMS or _RULES */
    ENG_GRAMMAR_ERR_RECURSION = -4, /* left recursion or a cycle of empty rules */
    ENG_GRAMMAR_ERR_REJECTED = -5,  /* matcher: the text or token is not allowed here */
    ENG_GRAMMAR_ERR_AMBIGUOUS = -6, /* matcher: more than ENG_GRAMMAR_MAX_STACKS parses */
    ENG_GRAMMAR_ERR_UNPRODUCTIVE = -7, /* a rule that no finite text completes */
    ENG_GRAMMAR_ERR_BUDGET = -8,    /* matcher: a mask needed more work than one may take */
};

/* ---- building ---- */

struct eng_grammar; /* opaque */

/* An empty grammar to build. Returns 0 and *out (free with eng_grammar_destroy), or
 * ENG_GRAMMAR_ERR_NOMEM. */
int eng_grammar_create(struct eng_grammar **out);

/* Drops a reference (the one eng_grammar_create made, or one eng_grammar_retain added) and
 * frees the grammar with the last; accepts NULL. */
void eng_grammar_destroy(struct eng_grammar *g);

/* Another reference to a finished grammar (atomic: the threads holding references may
 * differ), released with eng_grammar_destroy. Returns g, or NULL when g is NULL or not
 * finished. A finished grammar is read-only, so holders share it. */
struct eng_grammar *eng_grammar_retain(const struct eng_grammar *g);

/* A new rule with no alternatives yet; its id is returned (>= 0; the first one made, 0, is the
 * root), or a negative eng_grammar_err. Rules may be made before the rules that refer to them
 * are finished, so recursive rules are built by making the rule first. */
int32_t eng_grammar_rule(struct eng_grammar *g);

/* Starts a new alternative of rule, which then receives the elements added until the next
 * eng_grammar_alt (of any rule) or eng_grammar_finish. An alternative with no elements matches
 * the empty text. Returns 0 or a negative eng_grammar_err. */
int eng_grammar_alt(struct eng_grammar *g, int32_t rule);

/* Appends a byte class to the current alternative: the 256-bit set (bit b of set[b / 32] for
 * byte b) must not be empty. Returns 0 or a negative eng_grammar_err. */
int eng_grammar_add_class(struct eng_grammar *g, const uint32_t set[8]);

/* Appends the byte class [lo, hi]. */
int eng_grammar_add_range(struct eng_grammar *g, uint8_t lo, uint8_t hi);

/* Appends len literal bytes, one class each (len may be 0). */
int eng_grammar_add_literal(struct eng_grammar *g, const char *s, size_t len);

/* Appends a reference to rule (which may not exist yet; eng_grammar_finish checks it). */
int eng_grammar_add_ref(struct eng_grammar *g, int32_t rule);

/* A new rule matching item between min and max times (max < 0: no upper limit), consecutive
 * items separated by rule sep (sep < 0: nothing between), built as right recursion (no
 * depth in the matcher): max - min optional-item rules for a finite max. Call it with no
 * alternative open that still needs elements (it opens alternatives of its own). Returns the
 * rule, or a negative eng_grammar_err (ENG_GRAMMAR_ERR_INVALID for min < 0 or max < min). */
int32_t eng_grammar_repeat(struct eng_grammar *g, int32_t item, int32_t sep, int64_t min,
                           int64_t max);

/* Ends building: checks that every reference names a rule, that every rule has an
 * alternative, that no rule can reach itself without consuming a byte (left recursion,
 * cycles of empty rules), and that every rule can be completed by some finite text
 * (ENG_GRAMMAR_ERR_UNPRODUCTIVE otherwise: a matcher could enter it and never finish), and
 * that no rule opens more than ENG_GRAMMAR_MAX_STACKS parses where it starts
 * (ENG_GRAMMAR_ERR_AMBIGUOUS: e.g. a choice of 300 literals, every matcher reaching it would
 * fail). Time linear in the grammar's size. After it the grammar is read-only and may be shared by matchers on
 * one thread. Returns 0 or a negative eng_grammar_err; a grammar that failed here is only
 * good for eng_grammar_destroy. */
int eng_grammar_finish(struct eng_grammar *g);

/* Counts for tests and limits. */
size_t eng_grammar_n_elems(const struct eng_grammar *g);
int32_t eng_grammar_n_rules(const struct eng_grammar *g);

/* A deep copy of a finished grammar (the engine keeps its own). Returns 0 and *out, or
 * ENG_GRAMMAR_ERR_INVALID (not finished) / ENG_GRAMMAR_ERR_NOMEM. */
int eng_grammar_clone(const struct eng_grammar *g, struct eng_grammar **out);

/* ---- the vocabulary as byte strings ---- */

struct eng_grammar_vocab; /* opaque: a trie of the tokens' text, shared by all matchers */

/* Builds the trie of every id in [0, vocab) that eng_tokenizer_token_bytes gives text for
 * (other ids, and ids with empty text, are never allowed by a mask). tok is only read during
 * the call. Returns 0 and *out, or ENG_GRAMMAR_ERR_INVALID / ENG_GRAMMAR_ERR_NOMEM. */
int eng_grammar_vocab_create(const struct eng_tokenizer *tok, int64_t vocab,
                             struct eng_grammar_vocab **out);

void eng_grammar_vocab_destroy(struct eng_grammar_vocab *v);

/* ---- matching ---- */

struct eng_grammar_matcher; /* opaque: one sequence's position in the grammar */

/* A matcher at the start of g's root rule. g and v must outlive it (v may be NULL for a
 * matcher fed only bytes). Returns 0 and *out, or ENG_GRAMMAR_ERR_INVALID (g not finished),
 * ENG_GRAMMAR_ERR_AMBIGUOUS (more parses open at the start than a matcher follows) or
 * ENG_GRAMMAR_ERR_NOMEM. */
int eng_grammar_matcher_create(const struct eng_grammar *g, const struct eng_grammar_vocab *v,
                               struct eng_grammar_matcher **out);

void eng_grammar_matcher_destroy(struct eng_grammar_matcher *m);

/* Consumes len bytes of text. Returns 0, or ENG_GRAMMAR_ERR_REJECTED when some byte is not
 * allowed (the matcher is then unchanged), ENG_GRAMMAR_ERR_AMBIGUOUS, ENG_GRAMMAR_ERR_NOMEM. */
int eng_grammar_matcher_accept_bytes(struct eng_grammar_matcher *m, const char *s, size_t len);

/* Consumes the text of token (an id of the vocabulary the matcher was made with). Returns as
 * eng_grammar_matcher_accept_bytes; ENG_GRAMMAR_ERR_REJECTED for an id without text. */
int eng_grammar_matcher_accept_token(struct eng_grammar_matcher *m, int32_t token);

/* Whether the text so far is a whole sentence of the grammar (it may still go on). */
bool eng_grammar_matcher_complete(const struct eng_grammar_matcher *m);

/* Whether some byte may still follow (false: only the end of the text is allowed). */
bool eng_grammar_matcher_can_continue(const struct eng_grammar_matcher *m);

/* Writes into allow ([(vocab + 31) / 32] words, bit t of allow[t / 32], caller's array) the
 * tokens whose whole text the grammar allows next. Bits of ids with no text are 0 (the caller
 * adds the end-of-sequence ids when eng_grammar_matcher_complete). Masks are remembered per
 * matcher position, so a position seen before costs one copy. A mask's work is bounded (about
 * a million expansion steps, tens of milliseconds): past it ENG_GRAMMAR_ERR_BUDGET. Returns
 * the number of allowed tokens (>= 0), or ENG_GRAMMAR_ERR_INVALID (no vocabulary, or vocab
 * differs from its), ENG_GRAMMAR_ERR_BUDGET or ENG_GRAMMAR_ERR_NOMEM. */
int64_t eng_grammar_matcher_mask(struct eng_grammar_matcher *m, int64_t vocab, uint32_t *allow);

#endif
