/* Regular expressions compiled into engine/grammar.h rules: vLLM's guided_regex /
 * structured_outputs.regex and JSON Schema's "pattern". It builds grammar rules whose sentences
 * are the texts a regex matches in full; it does not search or match text itself (the grammar
 * matcher does), and it is not a general regex engine.
 *
 * Semantics are Python's re.fullmatch on str patterns, within this subset:
 *   - literals (any UTF-8 text; whitespace is literal), '.' (any code point but '\n');
 *   - escapes \d \D \w \W \s \S with ASCII meanings (\d = [0-9], \w = [A-Za-z0-9_],
 *     \s = [ \t\n\r\f\v]; Python's are Unicode-aware, so they differ on non-ASCII text),
 *     \t \n \r \f \v \a, \xXX, \uXXXX, \UXXXXXXXX, and a backslash before any character that
 *     is not an ASCII letter or digit (\. \\ \/ \( \[ \{ \* \+ \? \| \^ \$ \- ...);
 *   - classes [...] and [^...] with ranges and the escapes above (\b is a backspace there),
 *     ']' first in a class and '-' first or last are literal, as in Python;
 *   - groups (...), (?:...), (?P<name>...), (?<name>...), nested at most ENG_REGEX_MAX_NESTING
 *     deep; alternation |;
 *   - quantifiers * + ? {n} {n,} {,m} {n,m} and their lazy forms (the same language), with
 *     n and m at most ENG_REGEX_MAX_REPEAT; a '{' that does not start a quantifier is literal;
 *   - ^ as the pattern's first byte and $ as its last are ignored (matching is whole-text).
 * '.', negated classes and \D \W \S range over every Unicode scalar value; surrogates
 * (U+D800-DFFF) have no UTF-8 form and are never produced.
 * Refused (ENG_REGEX_ERR_UNSUPPORTED): backreferences, lookahead and lookbehind, inline flags
 * and every other (?...) extension, \b \B \A \Z, octal escapes and \N{...}, possessive
 * quantifiers and atomic groups, ^ or $ anywhere else, deeper nesting, larger counts, and
 * patterns no producible text matches (e.g. only U+0000 in JSON-string mode). */
#ifndef PHISERVE_ENGINE_REGEX_H
#define PHISERVE_ENGINE_REGEX_H

#include <stddef.h>
#include <stdint.h>

#include "grammar.h"

#define ENG_REGEX_MAX_NESTING 64 /* groups inside groups: bounds the compiler's recursion */
#define ENG_REGEX_MAX_REPEAT 1000 /* largest n or m in {n,m} */

enum eng_regex_err {
    ENG_REGEX_ERR_SYNTAX = -1,      /* not a valid pattern (Python's re refuses it too) */
    ENG_REGEX_ERR_UNSUPPORTED = -2, /* valid for Python, outside the subset above */
    ENG_REGEX_ERR_TOO_BIG = -3,     /* the rules would pass the grammar ceilings */
    ENG_REGEX_ERR_NOMEM = -4,
};

/* Flag: the regex describes the decoded content of a JSON string; the rule's sentences are the
 * text between the quotes of a JSON string literal. Each character is written as: '"' as \",
 * '\\' as \\, '/' raw or as \/, U+0008 U+0009 U+000A U+000C U+000D as \b \t \n \f \r, the
 * other controls U+0001-U+001F as \u00XX (hex digits in either case), and everything else raw
 * UTF-8. No other escape is produced, so every sentence decodes to a string the regex matches
 * in full. U+0000 is never produced (the project's JSON reader refuses it). */
#define ENG_REGEX_JSON_STRING 1u

/* Compiles re[0..len) (caller keeps; need not be NUL-terminated) into rules of g, a grammar
 * being built (not finished; its root, rule 0, should already exist, since this makes new
 * rules). flags is 0 or ENG_REGEX_JSON_STRING.
 * On success returns 0 and *rule, a rule of g whose sentences are exactly the texts (UTF-8
 * bytes; with ENG_REGEX_JSON_STRING their JSON-escaped form) that re matches in full; refer to
 * it with eng_grammar_add_ref after this returns (no alternative of g is left open).
 * On failure returns a negative eng_regex_err, leaves *rule unchanged and writes a message in
 * err (errlen bytes, NUL-terminated when errlen > 0; err may be NULL when errlen is 0) naming
 * the construct and its byte offset in re. ENG_REGEX_ERR_SYNTAX and _UNSUPPORTED leave g
 * unchanged; after ENG_REGEX_ERR_TOO_BIG or _NOMEM, g holds unfinished rules and is only good
 * for eng_grammar_destroy. */
int eng_regex_compile(struct eng_grammar *g, const char *re, size_t len, unsigned flags,
                      int32_t *rule, char *err, size_t errlen);

#endif
