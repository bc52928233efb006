/* Internal types of the Jinja-subset interpreter behind chat_template.h: arena, values, tokens,
 * syntax tree, and the entry points shared by jinja_lex.c, jinja_parse.c, jinja_value.c,
 * jinja_eval.c and jinja_builtins.c. Not a public API; nothing outside those files includes it. */
#ifndef PHISERVE_ENGINE_JINJA_H
#define PHISERVE_ENGINE_JINJA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors --------------------------------------------------------------------------- */

enum jerr_kind { JERR_NONE = 0, JERR_SYNTAX, JERR_RAISE, JERR_RENDER, JERR_LIMIT, JERR_NOMEM };

struct jerr {
    enum jerr_kind kind;
    int line, col;      /* 0 when unknown */
    char msg[256];
};

/* Records the first error only (later ones are consequences); always returns -1. */
int jerr_set(struct jerr *e, enum jerr_kind kind, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ---- arena: every allocation of one parse or one render, freed at once ---------------- */

struct jarena_chunk;
struct jarena {
    struct jarena_chunk *head;
    size_t total;  /* bytes obtained from malloc so far */
    size_t limit;  /* 0 = unlimited */
};

/* Returns n zeroed bytes aligned for any type, or NULL when the limit or malloc fails. */
void *jarena_alloc(struct jarena *a, size_t n);
/* Same, for n * size bytes with the multiplication checked. */
void *jarena_array(struct jarena *a, size_t n, size_t size);
void jarena_release(struct jarena *a);

/* ---- values --------------------------------------------------------------------------- */

struct jstr {
    size_t len;
    char s[];   /* len bytes followed by a NUL; UTF-8 by convention, never trusted to be */
};

enum jv_kind { JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_NS, JV_LOOP };

struct jlist;
struct jdict;
struct jloop;

struct jv {
    enum jv_kind kind;
    union {
        bool b;
        int64_t i;
        double f;
        const struct jstr *s;   /* JV_STR; for JV_UNDEF the name (may be NULL) for messages */
        const struct jlist *l;
        struct jdict *d;        /* JV_DICT (never mutated after build) and JV_NS (mutable) */
        const struct jloop *loop;
    } u;
};

struct jlist {
    size_t n;
    bool tuple;        /* only changes how it prints: (a, b) instead of [a, b] */
    struct jv *v;
};

struct jdict {
    size_t n, cap;
    const struct jstr **k;   /* string keys only, insertion order */
    struct jv *v;
};

struct jloop {
    int64_t index0, length;
    const struct jv *seq;    /* [length] the items being iterated */
};

/* A builder for strings of unknown final length (malloc'd; the arena gets the result). */
struct jbuf {
    char *p;
    size_t len, cap, max;   /* max: appends beyond it fail with a limit error */
};

/* ---- render context ------------------------------------------------------------------- */

struct jscope;

struct jctx {
    struct jarena *arena;
    struct jerr *err;
    struct jbuf out;
    uint64_t steps, max_steps;
    int depth, max_depth;        /* recursion over values (repr, tojson, ==) */
    size_t max_string;           /* largest string value a render may build */
    struct jscope *scope;        /* innermost; the outermost holds the template variables */
    int line;                    /* line of the node being evaluated, for messages */
    int flow;                    /* pending break / continue (jinja_eval.c) */
};

/* ---- value helpers (jinja_value.c) ---------------------------------------------------- */

const struct jstr *jstr_new(struct jarena *a, const char *s, size_t len);
struct jv jv_undef(const struct jstr *name);
struct jv jv_none(void);
struct jv jv_bool(bool b);
struct jv jv_int(int64_t i);
struct jv jv_float(double f);
struct jv jv_str(const struct jstr *s);
/* Returns 0 and a string value, or -1 (error set) when memory or max_string runs out. */
int jv_make_str(struct jctx *c, const char *s, size_t len, struct jv *out);
struct jlist *jlist_new(struct jarena *a, size_t n);
struct jdict *jdict_new(struct jarena *a, size_t cap);
/* Inserts or replaces key; returns 0 or -1 on allocation failure. */
int jdict_set(struct jarena *a, struct jdict *d, const struct jstr *key, struct jv val);
/* Returns a pointer to the value of key, or NULL. */
struct jv *jdict_get(const struct jdict *d, const char *key, size_t len);

bool jv_truthy(const struct jv *v);
const char *jv_type_name(const struct jv *v);
/* Python-style equality (1 == 1.0 == True); -1 on error (too deep), else 0/1 in *eq. */
int jv_equal(struct jctx *c, const struct jv *a, const struct jv *b, bool *eq);
/* Ordering for < <= > >=: numbers with numbers, strings with strings; else a render error. */
int jv_compare(struct jctx *c, const struct jv *a, const struct jv *b, int *sign);

/* str(v) appended to b, as Python/Jinja print it (None, True, [1, 'a'], {'k': 2}). */
int jv_append_str(struct jctx *c, struct jbuf *b, const struct jv *v);
/* json.dumps(v, ensure_ascii=False, indent=indent (<0: none), separators=(item_sep, key_sep),
 * sort_keys) appended to b. NULL separators take Python's defaults for the indent given. */
int jv_append_json(struct jctx *c, struct jbuf *b, const struct jv *v, int indent,
                   const char *item_sep, const char *key_sep, bool sort_keys);
/* str(v) as a string value (no copy for strings). */
int jv_to_str(struct jctx *c, const struct jv *v, struct jv *out);

int jbuf_init(struct jctx *c, struct jbuf *b);
int jbuf_put(struct jctx *c, struct jbuf *b, const char *s, size_t n);
/* Moves the builder's bytes into an arena string value and frees the builder. */
int jbuf_finish(struct jctx *c, struct jbuf *b, struct jv *out);
void jbuf_free(struct jbuf *b);

/* UTF-8 helpers that never read past len and treat an invalid byte as one character. */
size_t jutf8_next(const char *s, size_t len, size_t i);          /* index of next character */
size_t jutf8_count(const char *s, size_t len);                   /* number of characters */
size_t jutf8_offset(const char *s, size_t len, size_t n_chars);  /* byte offset of char n */
/* Length in bytes of the Python whitespace character at s[i], or 0. */
size_t jpy_space_at(const char *s, size_t len, size_t i);
/* Length in bytes of a Python whitespace character ending at s[end-1], or 0. */
size_t jpy_space_before(const char *s, size_t end);

/* ---- tokens and lexer (jinja_lex.c) ---------------------------------------------------- */

enum jtok_kind {
    JT_TEXT, JT_VAR_BEGIN, JT_VAR_END, JT_BLOCK_BEGIN, JT_BLOCK_END,
    JT_NAME, JT_STRING, JT_INT, JT_FLOAT, JT_OP, JT_EOF
};

enum jop {
    JOP_ADD, JOP_SUB, JOP_MUL, JOP_DIV, JOP_FLOORDIV, JOP_MOD, JOP_POW, JOP_TILDE,
    JOP_LBRACKET, JOP_RBRACKET, JOP_LPAREN, JOP_RPAREN, JOP_LBRACE, JOP_RBRACE,
    JOP_EQ, JOP_NE, JOP_GT, JOP_GE, JOP_LT, JOP_LE, JOP_ASSIGN,
    JOP_DOT, JOP_COLON, JOP_PIPE, JOP_COMMA, JOP_SEMICOLON,
    /* comparison kinds used only by the tree */
    JOP_IN, JOP_NOTIN
};

struct jtok {
    enum jtok_kind kind;
    enum jop op;
    int line, col;
    const struct jstr *s;   /* TEXT, NAME, STRING (escapes decoded) */
    int64_t i;
    double f;
};

/* Tokenizes src with trim_blocks and lstrip_blocks on, as transformers renders; newlines
 * (\r\n, \r) become \n first and one trailing newline is dropped, as jinja2 does. Strings go
 * to arena; the token array is malloc'd into *toks (caller frees). Returns 0 or -1 with a
 * syntax or limit error in err. */
int jinja_lex(const char *src, size_t len, struct jarena *arena, struct jtok **toks,
              size_t *n_toks, struct jerr *err);

/* ---- syntax tree (jinja_parse.c) ------------------------------------------------------- */

enum jn_kind {
    /* expressions */
    JN_LIT, JN_NAME, JN_LIST, JN_TUPLE, JN_DICT, JN_ATTR, JN_INDEX, JN_SLICE, JN_CALL,
    JN_FILTER, JN_TEST, JN_NEG, JN_POS, JN_NOT, JN_AND, JN_OR, JN_BINOP, JN_CMP, JN_COND,
    /* statements */
    JN_TEXT, JN_OUT, JN_IF, JN_FOR, JN_SET, JN_SETBLOCK, JN_BREAK, JN_CONTINUE, JN_BLOCK
};

struct jnode {
    enum jn_kind kind;
    enum jop op;                 /* BINOP */
    int line, col;
    int height;                  /* 1 + tallest child: bounds the evaluator's recursion */
    int id;                      /* FILTER / TEST: builtin id; TEST: negated flag in op */
    struct jnode *a, *b, *c, *d; /* operands (SLICE: obj, start, stop, step; COND: then, cond, else) */
    const struct jstr *name;     /* NAME, ATTR, FILTER, TEST, SET target, CALL method */
    const struct jstr *name2;    /* SET: namespace attribute (target is name.name2) */
    struct jv lit;               /* LIT and TEXT */
    struct jnode **args;         /* LIST/TUPLE items, CALL/FILTER/TEST args, DICT keys, CMP operands */
    size_t n_args;
    struct jnode **vals;         /* DICT values */
    enum jop *ops;               /* CMP: n_args - 1 operators */
    const struct jstr **kw;      /* keyword argument names */
    struct jnode **kwv;
    size_t n_kw;
    struct jnode **body;         /* statements: IF then, FOR body, SETBLOCK/BLOCK body */
    size_t n_body;
    struct jnode **orelse;       /* IF else (elif becomes a nested IF), FOR else */
    size_t n_orelse;
    const struct jstr **targets; /* FOR loop variables (more than one: tuple unpacking) */
    size_t n_targets;
};

struct jtemplate {
    struct jarena arena;     /* owns every node and literal */
    struct jnode **body;
    size_t n_body;
};

/* Parses src into t (t->arena must be zeroed). max_height bounds nesting of expressions and
 * blocks. Returns 0, or -1 with a syntax error (line, col) in err. */
int jinja_parse(struct jtemplate *t, const char *src, size_t len, int max_height, struct jerr *err);

/* ---- builtins (jinja_builtins.c) and evaluator (jinja_eval.c) -------------------------- */

/* Resolves a filter / test name at parse time; -1 when unknown (a syntax error, as in Jinja). */
int jinja_filter_id(const char *name, size_t len);
int jinja_test_id(const char *name, size_t len);

struct jargs {
    const struct jv *pos;
    size_t n_pos;
    const struct jstr *const *kw;
    const struct jv *kwv;
    size_t n_kw;
};

int jinja_apply_filter(struct jctx *c, int id, const struct jv *v, const struct jargs *a, struct jv *out);
int jinja_apply_test(struct jctx *c, int id, const struct jv *v, const struct jargs *a, bool *out);
/* obj.name(args): string, dict and loop methods. */
int jinja_call_method(struct jctx *c, const struct jv *obj, const struct jstr *name,
                      const struct jargs *a, struct jv *out);
/* name(args) for the global functions raise_exception, namespace, range, dict. found=false when
 * name is not one of them. */
int jinja_call_global(struct jctx *c, const struct jstr *name, const struct jargs *a,
                      struct jv *out, bool *found);

/* Attribute / subscript access with Jinja's lookup rules; missing gives undefined. */
int jinja_getattr(struct jctx *c, const struct jv *obj, const struct jstr *name, struct jv *out);
int jinja_getitem(struct jctx *c, const struct jv *obj, const struct jv *key, struct jv *out);

/* Renders t's body into c->out with globals as the outermost variables. Returns 0 or -1. */
int jinja_render(struct jctx *c, const struct jtemplate *t, const struct jdict *globals);

/* Counts one evaluation step; -1 with a limit error when the budget is spent. */
int jinja_step(struct jctx *c);
/* Counts units steps for work proportional to data size (a scan of n bytes costs n / 32, a
 * walk over n items n / 4), so the step budget bounds time even on huge strings and dicts:
 * the default budget allows about 160 MB of scanning per render. */
int jinja_charge(struct jctx *c, uint64_t units);
#define JCOST_BYTES(n) ((uint64_t)(n) / 32u)
#define JCOST_ITEMS(n) ((uint64_t)(n) / 4u)

#endif
