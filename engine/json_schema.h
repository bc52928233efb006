/* JSON Schema to grammar: the structured-output half of OpenAI's response_format
 * (json_object and json_schema). It compiles a schema into an engine/grammar.h grammar whose
 * sentences are the JSON texts the schema accepts, within the subset below; it neither parses
 * JSON text (engine/json.h) nor validates documents.
 *
 * The text a grammar accepts: optional whitespace, then one JSON value, and nothing after it
 * (generation ends once the value is complete). Whitespace between tokens is 0 to 32 bytes of
 * space, tab, CR or LF, so a model cannot spin on blank lines forever; integer parts have at
 * most 16 digits, fractions 16 and exponents 2. Object members come in the order of
 * "properties"; optional ones may be left out. Strings are valid UTF-8 with JSON's escapes
 * (\u escapes of surrogates and of U+0000 are left out, so every output is also valid for
 * strict parsers). A grammar cannot see which keys an object already has: where members are
 * open (json_object, additionalProperties), a key may repeat, which JSON allows and strict
 * parsers refuse. Nesting deeper than the matcher follows (ENG_GRAMMAR_MAX_DEPTH stack
 * entries, about 250 objects) ends the text where it is.
 *
 * Supported keywords: type (a name or a list), properties, required, additionalProperties
 * (absent or false: no other members, as OpenAI's strict mode requires; true or a schema:
 * further members after the declared ones), items (a schema, true or false), prefixItems,
 * minItems, maxItems, minLength, maxLength (at most ENG_JSON_SCHEMA_MAX_REPEAT), pattern
 * (engine/regex.h's subset; searched, as JSON Schema says, unless anchored with ^ and $; not
 * together with minLength or maxLength), minimum,
 * maximum, exclusiveMinimum, exclusiveMaximum (on integers; draft 4's boolean forms too; on a
 * "number" they are refused, and without a type they need "integer"), enum, const,
 * anyOf and oneOf (both as "any of": the text cannot tell them apart), allOf with one schema,
 * $ref to "#", "#/$defs/..." or "#/definitions/..." (recursive schemas work), and boolean
 * schemas (true: any value; false: refused where a value is required).
 * Annotations are ignored: title, description, default, examples, $schema, $id, $comment,
 * $defs, definitions, deprecated, readOnly, writeOnly, format (an annotation by default in
 * JSON Schema 2020-12) and keys starting with "x-". Any other keyword (multipleOf, uniqueItems, patternProperties, not, if, ...) is refused with its path:
 * ignoring it would produce documents the schema rejects. */
#ifndef PHISERVE_ENGINE_JSON_SCHEMA_H
#define PHISERVE_ENGINE_JSON_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>

#include "grammar.h"
#include "json.h"

#define ENG_JSON_SCHEMA_MAX_REPEAT 4096 /* largest finite minLength/maxLength/minItems/maxItems */

enum eng_json_schema_err {
    ENG_JSON_SCHEMA_ERR_UNSUPPORTED = -1, /* a keyword or value outside the subset */
    ENG_JSON_SCHEMA_ERR_INVALID = -2,     /* not a valid schema (wrong types, bad $ref,
                                             minItems > maxItems, a schema nothing matches or
                                             only infinite documents match) */
    ENG_JSON_SCHEMA_ERR_TOO_BIG = -3,     /* the grammar would exceed the grammar ceilings, or
                                             keep too many alternatives open at once */
    ENG_JSON_SCHEMA_ERR_NOMEM = -4,
};

/* Compiles schema (caller keeps; NULL means "any JSON object", the json_object mode) into a
 * finished grammar. path names the schema in messages ("response_format.json_schema.schema").
 * Returns 0 and *out (free with eng_grammar_destroy), or a negative eng_json_schema_err with a
 * message in err (errlen bytes, NUL-terminated when errlen > 0) that names the JSON path of the
 * offending keyword. */
int eng_json_schema_compile(const struct eng_json *schema, const char *path,
                            struct eng_grammar **out, char *err, size_t errlen);

/* A tool (a function the model may call) for eng_json_schema_compile_tools. */
struct eng_tool_schema {
    const char *name;                  /* NUL-terminated; written into the grammar as a JSON
                                          string */
    const struct eng_json *parameters; /* JSON Schema of the arguments, its own document for
                                          '$ref'; NULL: any JSON object */
};

/* The grammar of a tool-calling answer, in a fixed layout a stream can be read back from:
 *   {"tool_calls": [CALL, CALL, ...]}   CALL = {"name": "NAME", "arguments": ARGUMENTS}
 * with exactly one space after each ':' and ',' of that frame and no other whitespace in it
 * (inside ARGUMENTS the usual rules of this file apply), one call unless parallel, NAME one of
 * the tools and ARGUMENTS a value of its parameters schema; and, when allow_content, also
 *   {"content": STRING}
 * for an answer without a call. Returns as eng_json_schema_compile; messages name the tool by
 * path + "[i].function.parameters...". */
int eng_json_schema_compile_tools(const struct eng_tool_schema *tools, size_t n_tools,
                                  bool allow_content, bool parallel, const char *path,
                                  struct eng_grammar **out, char *err, size_t errlen);

/* ---- vLLM's other structured-output kinds ---- */

/* A grammar whose sentences are the texts re[0..len) matches in full (engine/regex.h's
 * subset; caller keeps re), for guided_regex. Returns as eng_json_schema_compile, with
 * regex syntax errors as ENG_JSON_SCHEMA_ERR_INVALID. */
int eng_regex_grammar(const char *re, size_t len, struct eng_grammar **out, char *err,
                      size_t errlen);

/* A grammar whose sentences are exactly the n non-empty strings choices[i][0..lens[i]) (caller
 * keeps them), for guided_choice. Returns as eng_json_schema_compile. */
int eng_choice_grammar(const char *const *choices, const size_t *lens, size_t n,
                       struct eng_grammar **out, char *err, size_t errlen);

#endif
