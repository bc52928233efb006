/* A regex (the subset in regex.h) parsed into a small syntax tree, then emitted as grammar
 * rules: one rule per tree node that needs one, character sets as UTF-8 byte-range sequences.
 * Nothing here matches text; the grammar matcher does that. */
#include "regex.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define CP_MAX 0x10FFFFu
#define SEQ_MAX 6 /* byte classes in one encoded character: "\u001f" is the longest */

enum node_kind {
    NODE_EMPTY, /* the empty text */
    NODE_SET,   /* one character of a set of code points */
    NODE_CAT,   /* the children in order */
    NODE_ALT,   /* any one child */
    NODE_REP,   /* child {min, max}, max < 0: no limit */
};

struct cp_range {
    uint32_t lo, hi;
};

struct node {
    uint8_t kind;
    bool nullable;     /* the empty text is in the language */
    bool has_ne;       /* some non-empty text is in the language */
    int32_t child;     /* CAT, ALT, REP: first child */
    int32_t next;      /* next sibling in the parent's list, -1 at the end */
    int32_t min, max;  /* REP */
    size_t set_at;     /* SET: ranges[set_at .. set_at + set_n), sorted, disjoint */
    size_t set_n;
    int32_t rule[2];   /* emitted rule for the language [0] and for it without "" [1]; -1 */
};

/* One encoded character: n byte classes in a row. */
struct seq {
    int n;
    uint32_t cls[SEQ_MAX][8];
};

struct seqs {
    struct seq *v;
    size_t n, cap;
};

struct name {
    size_t at, len;
};

struct rx {
    const char *re;
    size_t len, pos;
    bool json;
    int depth;
    struct node *nodes;
    size_t n_nodes, cap_nodes;
    struct cp_range *ranges;   /* every set's ranges */
    size_t n_ranges, cap_ranges;
    struct cp_range *scratch;  /* the class being parsed */
    size_t n_scratch, cap_scratch;
    struct name *names;        /* group names, to refuse a repeated one as Python does */
    size_t n_names, cap_names;
    struct seqs seqs;          /* emission scratch */
    struct eng_grammar *g;
    char *err;
    size_t errlen;
    int rc;                    /* first error, 0 while none */
};

static int set_err(struct rx *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_err(struct rx *c, int rc, const char *fmt, ...)
{
    if (c->rc != 0)
        return c->rc;
    c->rc = rc;
    if (c->errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static int nomem(struct rx *c)
{
    return set_err(c, ENG_REGEX_ERR_NOMEM, "out of memory");
}

/* Makes room for need elements of size elem in *p (capacity *cap). */
static int grow(struct rx *c, void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2)
            return nomem(c);
        n *= 2;
    }
    if (n > SIZE_MAX / elem)
        return nomem(c);
    void *q = realloc(*p, n * elem);
    if (!q)
        return nomem(c);
    *p = q;
    *cap = n;
    return 0;
}

/* ---- the tree ---- */

/* A new node of kind, or -1 (error recorded). */
static int32_t node_new(struct rx *c, enum node_kind kind)
{
    if (c->n_nodes >= INT32_MAX ||
        grow(c, (void **)&c->nodes, &c->cap_nodes, c->n_nodes + 1, sizeof *c->nodes))
        return c->rc ? -1 : (nomem(c), -1);
    struct node *n = &c->nodes[c->n_nodes];
    *n = (struct node){.kind = (uint8_t)kind, .child = -1, .next = -1, .rule = {-1, -1}};
    n->nullable = kind == NODE_EMPTY;
    return (int32_t)c->n_nodes++;
}

static int scratch_add(struct rx *c, uint32_t lo, uint32_t hi)
{
    if (grow(c, (void **)&c->scratch, &c->cap_scratch, c->n_scratch + 1, sizeof *c->scratch))
        return c->rc;
    c->scratch[c->n_scratch++] = (struct cp_range){lo, hi};
    return 0;
}

static int cmp_range(const void *a, const void *b)
{
    const struct cp_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Sorts and merges the scratch ranges in place; with negate, replaces them by their
 * complement in [0, CP_MAX]. */
static int scratch_normalize(struct rx *c, bool negate)
{
    qsort(c->scratch, c->n_scratch, sizeof *c->scratch, cmp_range);
    size_t n = 0;
    for (size_t i = 0; i < c->n_scratch; i++) {
        if (n > 0 && c->scratch[i].lo <= c->scratch[n - 1].hi + 1) {
            if (c->scratch[i].hi > c->scratch[n - 1].hi)
                c->scratch[n - 1].hi = c->scratch[i].hi;
        } else {
            c->scratch[n++] = c->scratch[i];
        }
    }
    c->n_scratch = n;
    if (!negate)
        return 0;
    /* The complement has at most one range more; build it at the end, then move it down. */
    if (grow(c, (void **)&c->scratch, &c->cap_scratch, 2 * n + 1, sizeof *c->scratch))
        return c->rc;
    size_t m = n;
    uint32_t from = 0;
    bool open = true; /* from is still below CP_MAX + 1 */
    for (size_t i = 0; i < n; i++) {
        if (c->scratch[i].lo > from)
            c->scratch[m++] = (struct cp_range){from, c->scratch[i].lo - 1};
        if (c->scratch[i].hi >= CP_MAX)
            open = false;
        else
            from = c->scratch[i].hi + 1;
    }
    if (open)
        c->scratch[m++] = (struct cp_range){from, CP_MAX};
    memmove(c->scratch, c->scratch + n, (m - n) * sizeof *c->scratch);
    c->n_scratch = m - n;
    return 0;
}

/* A SET node of the scratch ranges (normalized), less what can never be produced: surrogates,
 * and U+0000 in JSON-string mode. Clears the scratch. Returns the node or -1. */
static int32_t set_node(struct rx *c)
{
    int32_t id = node_new(c, NODE_SET);
    if (id < 0)
        return -1;
    size_t at = c->n_ranges;
    for (size_t i = 0; i < c->n_scratch; i++) {
        /* Pieces of [lo, hi] outside [lo_cut, hi_cut]: at most three per range. */
        uint32_t lo = c->scratch[i].lo, hi = c->scratch[i].hi;
        uint32_t cut[2][2] = {{0xD800, 0xDFFF}, {0, c->json ? 0 : UINT32_MAX}};
        struct cp_range piece[3];
        int np = 0;
        piece[np++] = (struct cp_range){lo, hi};
        for (int k = 0; k < 2; k++) {
            if (cut[k][1] == UINT32_MAX)
                continue;
            struct cp_range kept[3];
            int nk = 0;
            for (int p = 0; p < np; p++) {
                if (piece[p].hi < cut[k][0] || piece[p].lo > cut[k][1]) {
                    kept[nk++] = piece[p];
                    continue;
                }
                if (piece[p].lo < cut[k][0])
                    kept[nk++] = (struct cp_range){piece[p].lo, cut[k][0] - 1};
                if (piece[p].hi > cut[k][1])
                    kept[nk++] = (struct cp_range){cut[k][1] + 1, piece[p].hi};
            }
            memcpy(piece, kept, sizeof kept);
            np = nk;
        }
        for (int p = 0; p < np; p++) {
            if (grow(c, (void **)&c->ranges, &c->cap_ranges, c->n_ranges + 1, sizeof *c->ranges))
                return -1;
            c->ranges[c->n_ranges++] = piece[p];
        }
    }
    c->n_scratch = 0;
    struct node *n = &c->nodes[id];
    n->set_at = at;
    n->set_n = c->n_ranges - at;
    n->has_ne = n->set_n > 0;
    return id;
}

/* A SET node of the single code point cp. */
static int32_t char_node(struct rx *c, uint32_t cp)
{
    c->n_scratch = 0;
    if (scratch_add(c, cp, cp))
        return -1;
    return set_node(c);
}

/* Appends child to parent's list (last is the list's current last child or -1). */
static void append_child(struct rx *c, int32_t parent, int32_t *last, int32_t child)
{
    if (*last < 0)
        c->nodes[parent].child = child;
    else
        c->nodes[*last].next = child;
    *last = child;
}

/* ---- parsing ---- */

static int32_t parse_alt(struct rx *c);

static bool at_end(const struct rx *c)
{
    return c->pos >= c->len;
}

static int peek(const struct rx *c)
{
    return at_end(c) ? -1 : (unsigned char)c->re[c->pos];
}

/* Decodes the UTF-8 character at c->pos and moves past it; -1 (error recorded) when invalid. */
static int64_t next_char(struct rx *c)
{
    const unsigned char *s = (const unsigned char *)c->re + c->pos;
    size_t n = eng_utf8_seq_len(s, c->len - c->pos);
    if (n == 0)
        return set_err(c, ENG_REGEX_ERR_SYNTAX, "invalid UTF-8 at byte %zu", c->pos), -1;
    uint32_t cp = n == 1 ? s[0] : (uint32_t)(s[0] & (0x7F >> n));
    for (size_t i = 1; i < n; i++)
        cp = cp << 6 | (s[i] & 0x3F);
    c->pos += n;
    return cp;
}

/* The class escapes \d \w \s (negated: \D \W \S) as ranges added to the scratch. */
static int add_class_escape(struct rx *c, int letter)
{
    static const struct cp_range d[] = {{'0', '9'}};
    static const struct cp_range w[] = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
    static const struct cp_range s[] = {{'\t', '\r'}, {' ', ' '}}; /* \t \n \v \f \r, space */
    const struct cp_range *r;
    size_t n;
    switch (letter | 0x20) {
    case 'd': r = d; n = 1; break;
    case 'w': r = w; n = 4; break;
    default: r = s; n = 2; break;
    }
    if (letter >= 'a') {
        for (size_t i = 0; i < n; i++)
            if (scratch_add(c, r[i].lo, r[i].hi))
                return c->rc;
        return 0;
    }
    uint32_t from = 0;
    for (size_t i = 0; i < n; i++) {
        if (r[i].lo > from && scratch_add(c, from, r[i].lo - 1))
            return c->rc;
        from = r[i].hi + 1;
    }
    return scratch_add(c, from, CP_MAX);
}

/* Parses the escape whose backslash is at c->pos. Sets *cp (a single character) and returns 0,
 * or adds a class escape's ranges to the scratch and returns 1, or returns -1 (error). Inside
 * a class \b is a backspace; outside it is refused, as are the other anchors. */
static int parse_escape(struct rx *c, bool in_class, uint32_t *cp)
{
    size_t at = c->pos++;
    if (at_end(c))
        return set_err(c, ENG_REGEX_ERR_SYNTAX, "a trailing backslash at byte %zu", at), -1;
    int ch = peek(c);
    switch (ch) {
    case 'd': case 'D': case 'w': case 'W': case 's': case 'S':
        c->pos++;
        return add_class_escape(c, ch) ? -1 : 1;
    case 't': c->pos++; *cp = '\t'; return 0;
    case 'n': c->pos++; *cp = '\n'; return 0;
    case 'r': c->pos++; *cp = '\r'; return 0;
    case 'f': c->pos++; *cp = '\f'; return 0;
    case 'v': c->pos++; *cp = '\v'; return 0;
    case 'a': c->pos++; *cp = '\a'; return 0;
    case 'x': case 'u': case 'U': {
        int digits = ch == 'x' ? 2 : ch == 'u' ? 4 : 8;
        c->pos++;
        uint32_t v = 0;
        for (int i = 0; i < digits; i++) {
            int h = eng_hex_digit(peek(c));
            if (h < 0)
                return set_err(c, ENG_REGEX_ERR_SYNTAX, "incomplete escape \\%c at byte %zu",
                               ch, at), -1;
            v = v << 4 | (uint32_t)h;
            c->pos++;
        }
        if (v > CP_MAX)
            return set_err(c, ENG_REGEX_ERR_SYNTAX, "bad escape \\U beyond U+10FFFF at byte %zu",
                           at), -1;
        *cp = v;
        return 0;
    }
    case 'b':
        if (in_class) {
            c->pos++;
            *cp = '\b';
            return 0;
        }
        return set_err(c, ENG_REGEX_ERR_UNSUPPORTED, "word boundary \\b at byte %zu", at), -1;
    case 'B': case 'A': case 'Z':
        if (in_class)
            return set_err(c, ENG_REGEX_ERR_SYNTAX, "bad escape \\%c at byte %zu", ch, at), -1;
        return set_err(c, ENG_REGEX_ERR_UNSUPPORTED, "anchor \\%c at byte %zu", ch, at), -1;
    case 'N':
        return set_err(c, ENG_REGEX_ERR_UNSUPPORTED, "named character \\N at byte %zu", at), -1;
    default:
        break;
    }
    if (ch >= '0' && ch <= '9') {
        if (ch == '0' || in_class)
            return set_err(c, ENG_REGEX_ERR_UNSUPPORTED, "octal escape at byte %zu", at), -1;
        return set_err(c, ENG_REGEX_ERR_UNSUPPORTED, "backreference \\%c at byte %zu", ch, at),
               -1;
    }
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
        return set_err(c, ENG_REGEX_ERR_SYNTAX, "bad escape \\%c at byte %zu", ch, at), -1;
    /* Any other character escaped stands for itself. */
    int64_t v = next_char(c);
    if (v < 0)
        return -1;
    *cp = (uint32_t)v;
    return 0;
}

/* A class item at c->pos: returns 0 with *cp, 1 for a class escape (ranges in the scratch), or
 * -1 (error). */
static int class_item(struct rx *c, uint32_t *cp)
{
    if (peek(c) == '\\')
        return parse_escape(c, true, cp);
    int64_t v = next_char(c);
    if (v < 0)
        return -1;
    *cp = (uint32_t)v;
    return 0;
}

/* [...] with c->pos on the '['. */
static int32_t parse_class(struct rx *c)
{
    size_t open = c->pos++;
    bool negate = peek(c) == '^';
    if (negate)
        c->pos++;
    c->n_scratch = 0;
    bool first = true;
    for (;;) {
        if (at_end(c))
            return set_err(c, ENG_REGEX_ERR_SYNTAX, "unterminated character set at byte %zu",
                           open), -1;
        if (peek(c) == ']' && !first) {
            c->pos++;
            break;
        }
        first = false;
        size_t item_at = c->pos;
        uint32_t lo;
        int k = class_item(c, &lo);
        if (k < 0)
            return -1;
        /* '-' makes a range unless it comes last ("[a-]"). */
        bool range = peek(c) == '-' && c->pos + 1 < c->len && c->re[c->pos + 1] != ']';
        if (!range) {
            if (k == 0 && scratch_add(c, lo, lo))
                return -1;
            continue;
        }
        c->pos++;
        uint32_t hi;
        int kh = class_item(c, &hi);
        if (kh < 0)
            return -1;
        if (k != 0 || kh != 0)
            return set_err(c, ENG_REGEX_ERR_SYNTAX, "bad character range at byte %zu", item_at),
                   -1;
        if (lo > hi)
            return set_err(c, ENG_REGEX_ERR_SYNTAX,
                           "character range out of order at byte %zu", item_at), -1;
        if (scratch_add(c, lo, hi))
            return -1;
    }
    if (scratch_normalize(c, negate))
        return -1;
    return set_node(c);
}

/* Whether a {n}, {n,}, {,m}, {n,m} or {,} quantifier starts at c->pos (on a '{'); if so, gives
 * its counts (*max -1: no limit, counts above ENG_REGEX_MAX_REPEAT saturate one above it) and
 * its end. "{}" and anything else are not quantifiers: Python reads them as literal text. */
static bool brace_quantifier(const struct rx *c, int32_t *min, int32_t *max, size_t *end)
{
    size_t p = c->pos + 1;
    int32_t v[2] = {0, 0};
    bool digits[2] = {false, false}, comma = false;
    for (int part = 0; part < 2; part++) {
        while (p < c->len && c->re[p] >= '0' && c->re[p] <= '9') {
            if (v[part] <= ENG_REGEX_MAX_REPEAT)
                v[part] = v[part] * 10 + (c->re[p] - '0');
            digits[part] = true;
            p++;
        }
        if (part == 0) {
            if (p < c->len && c->re[p] == ',') {
                comma = true;
                p++;
            } else {
                break;
            }
        }
    }
    if (p >= c->len || c->re[p] != '}' || (!digits[0] && !comma))
        return false;
    *min = digits[0] ? v[0] : 0;
    *max = !comma ? *min : digits[1] ? v[1] : -1;
    *end = p + 1;
    return true;
}

/* Whether a quantifier starts at c->pos. */
static bool quantifier_here(const struct rx *c)
{
    int ch = peek(c);
    int32_t a, b;
    size_t e;
    return ch == '*' || ch == '+' || ch == '?' || (ch == '{' && brace_quantifier(c, &a, &b, &e));
}

/* Whether ch may be in a group name (digits not first). */
static bool ident_char(int ch, bool digits)
{
    return ch == '_' || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (digits && ch >= '0' && ch <= '9');
}

/* (...) with c->pos on the '('. */
static int32_t parse_group(struct rx *c)
{
    size_t open = c->pos++;
    if (peek(c) == '?') {
        c->pos++;
        int ch = peek(c);
        bool named = false;
        if (ch == ':') {
            c->pos++;
        } else if (ch == 'P' && c->pos + 1 < c->len && c->re[c->pos + 1] == '<') {
            c->pos += 2;
            named = true;
        } else if (ch == '<' && c->pos + 1 < c->len && c->re[c->pos + 1] != '=' &&
                   c->re[c->pos + 1] != '!') {
            c->pos++;
            named = true;
        } else if (ch == '=' || ch == '!' || ch == '<') {
            return set_err(c, ENG_REGEX_ERR_UNSUPPORTED, "lookaround (?%c at byte %zu", ch, open),
                   -1;
        } else if (ch == 'P') {
            return set_err(c, ENG_REGEX_ERR_UNSUPPORTED,
                           "backreference or extension (?P at byte %zu", open), -1;
        } else if (ch == '>') {
            return set_err(c, ENG_REGEX_ERR_UNSUPPORTED, "atomic group (?> at byte %zu", open), -1;
        } else if (ch == '#') {
            return set_err(c, ENG_REGEX_ERR_UNSUPPORTED, "comment group (?# at byte %zu", open), -1;
        } else if (ch == '(') {
            return set_err(c, ENG_REGEX_ERR_UNSUPPORTED, "conditional group (?( at byte %zu",
                           open), -1;
        } else if (ch > 0 && strchr("aiLmsux-", ch)) {
            return set_err(c, ENG_REGEX_ERR_UNSUPPORTED, "inline flags (?%c at byte %zu", ch, open),
                   -1;
        } else {
            return set_err(c, ENG_REGEX_ERR_SYNTAX, "unknown extension (? at byte %zu", open), -1;
        }
        if (named) {
            size_t at = c->pos;
            while (!at_end(c) && ident_char(peek(c), c->pos > at))
                c->pos++;
            if (peek(c) >= 0x80) /* Python allows Unicode identifiers; this ASCII only */
                return set_err(c, ENG_REGEX_ERR_UNSUPPORTED,
                               "non-ASCII group name at byte %zu", at), -1;
            if (c->pos == at || peek(c) != '>')
                return set_err(c, ENG_REGEX_ERR_SYNTAX, "bad group name at byte %zu", at), -1;
            size_t nl = c->pos - at;
            for (size_t i = 0; i < c->n_names; i++)
                if (c->names[i].len == nl && memcmp(c->re + c->names[i].at, c->re + at, nl) == 0)
                    return set_err(c, ENG_REGEX_ERR_SYNTAX,
                                   "redefinition of group name at byte %zu", at), -1;
            if (grow(c, (void **)&c->names, &c->cap_names, c->n_names + 1, sizeof *c->names))
                return -1;
            c->names[c->n_names++] = (struct name){at, nl};
            c->pos++;
        }
    }
    if (++c->depth > ENG_REGEX_MAX_NESTING)
        return set_err(c, ENG_REGEX_ERR_UNSUPPORTED,
                       "groups nested deeper than %d at byte %zu", ENG_REGEX_MAX_NESTING, open),
               -1;
    int32_t inner = parse_alt(c);
    c->depth--;
    if (inner < 0)
        return -1;
    if (peek(c) != ')')
        return set_err(c, ENG_REGEX_ERR_SYNTAX, "missing ) for the group at byte %zu", open), -1;
    c->pos++;
    return inner;
}

/* One atom: returns its node, -1 on error, or -2 for an ignored anchor (^ first, $ last). */
static int32_t parse_atom(struct rx *c)
{
    size_t at = c->pos;
    int ch = peek(c);
    switch (ch) {
    case '(':
        return parse_group(c);
    case '[':
        return parse_class(c);
    case '.':
        c->pos++;
        c->n_scratch = 0;
        if (scratch_add(c, '\n', '\n') || scratch_normalize(c, true))
            return -1;
        return set_node(c);
    case '^':
        if (at != 0)
            return set_err(c, ENG_REGEX_ERR_UNSUPPORTED,
                           "anchor ^ not at the start of the pattern at byte %zu", at), -1;
        c->pos++;
        return -2;
    case '$':
        if (at != c->len - 1)
            return set_err(c, ENG_REGEX_ERR_UNSUPPORTED,
                           "anchor $ not at the end of the pattern at byte %zu", at), -1;
        c->pos++;
        return -2;
    case '\\': {
        uint32_t cp;
        c->n_scratch = 0;
        int k = parse_escape(c, false, &cp);
        if (k < 0)
            return -1;
        if (k == 0)
            return char_node(c, cp);
        if (scratch_normalize(c, false))
            return -1;
        return set_node(c);
    }
    default:
        break;
    }
    if (quantifier_here(c))
        return set_err(c, ENG_REGEX_ERR_SYNTAX, "nothing to repeat at byte %zu", at), -1;
    int64_t v = next_char(c);
    return v < 0 ? -1 : char_node(c, (uint32_t)v);
}

/* An atom and its quantifier; -2 for an ignored anchor. */
static int32_t parse_piece(struct rx *c)
{
    int32_t atom = parse_atom(c);
    if (atom == -1)
        return -1;
    if (!quantifier_here(c))
        return atom;
    size_t at = c->pos;
    if (atom == -2)
        return set_err(c, ENG_REGEX_ERR_SYNTAX, "nothing to repeat at byte %zu", at), -1;
    int32_t min, max;
    int ch = peek(c);
    if (ch == '{') {
        size_t end;
        brace_quantifier(c, &min, &max, &end);
        c->pos = end;
        if (min > ENG_REGEX_MAX_REPEAT || max > ENG_REGEX_MAX_REPEAT)
            return set_err(c, ENG_REGEX_ERR_UNSUPPORTED,
                           "repeat count above %d at byte %zu", ENG_REGEX_MAX_REPEAT, at), -1;
        if (max >= 0 && max < min)
            return set_err(c, ENG_REGEX_ERR_SYNTAX,
                           "min repeat greater than max repeat at byte %zu", at), -1;
    } else {
        c->pos++;
        min = ch == '+';
        max = ch == '?' ? 1 : -1;
    }
    if (peek(c) == '?') {
        c->pos++; /* lazy: the same language */
    } else if (peek(c) == '+') {
        return set_err(c, ENG_REGEX_ERR_UNSUPPORTED, "possessive quantifier at byte %zu",
                       c->pos), -1;
    }
    if (quantifier_here(c))
        return set_err(c, ENG_REGEX_ERR_SYNTAX, "multiple repeat at byte %zu", c->pos), -1;
    int32_t r = node_new(c, NODE_REP);
    if (r < 0)
        return -1;
    struct node *n = &c->nodes[r], *x = &c->nodes[atom];
    n->child = atom;
    n->min = min;
    n->max = max;
    n->nullable = max == 0 || min == 0 || x->nullable;
    n->has_ne = max != 0 && x->has_ne;
    return r;
}

/* Pieces up to '|', ')' or the end. */
static int32_t parse_concat(struct rx *c)
{
    int32_t cat = node_new(c, NODE_CAT);
    if (cat < 0)
        return -1;
    int32_t last = -1, count = 0, only = -1;
    bool nullable = true, has_ne = false, empty = false;
    while (!at_end(c) && peek(c) != '|' && peek(c) != ')') {
        int32_t p = parse_piece(c);
        if (p == -1)
            return -1;
        if (p == -2)
            continue;
        append_child(c, cat, &last, p);
        only = p;
        count++;
        const struct node *x = &c->nodes[p];
        nullable &= x->nullable;
        has_ne |= x->has_ne;
        empty |= !x->nullable && !x->has_ne;
    }
    if (count == 1)
        return only; /* cat stays behind unused */
    struct node *n = &c->nodes[cat];
    if (count == 0)
        n->kind = NODE_EMPTY;
    n->nullable = nullable;
    n->has_ne = has_ne && !empty;
    return cat;
}

static int32_t parse_alt(struct rx *c)
{
    int32_t first = parse_concat(c);
    if (first < 0 || peek(c) != '|')
        return first;
    int32_t alt = node_new(c, NODE_ALT);
    if (alt < 0)
        return -1;
    int32_t last = -1;
    append_child(c, alt, &last, first);
    while (peek(c) == '|') {
        c->pos++;
        int32_t b = parse_concat(c);
        if (b < 0)
            return -1;
        append_child(c, alt, &last, b);
    }
    struct node *n = &c->nodes[alt];
    for (int32_t k = n->child; k >= 0; k = c->nodes[k].next) {
        n->nullable |= c->nodes[k].nullable;
        n->has_ne |= c->nodes[k].has_ne;
    }
    return alt;
}

/* ---- character sets as byte-class sequences ---- */

static void cls_add(uint32_t cls[8], unsigned lo, unsigned hi)
{
    for (unsigned b = lo; b <= hi; b++)
        cls[b >> 5] |= 1u << (b & 31);
}

static int seq_push(struct rx *c, const struct seq *s)
{
    if (grow(c, (void **)&c->seqs.v, &c->seqs.cap, c->seqs.n + 1, sizeof *c->seqs.v))
        return c->rc;
    c->seqs.v[c->seqs.n++] = *s;
    return 0;
}

/* A literal escape text (JSON mode) as a sequence. */
static int seq_text(struct rx *c, const char *t)
{
    struct seq s = {0};
    for (; *t; t++)
        cls_add(s.cls[s.n++], (unsigned char)*t, (unsigned char)*t);
    return seq_push(c, &s);
}

static int utf8_encode(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* The UTF-8 forms of [lo, hi] (no surrogates inside) as sequences of byte ranges: split first
 * where the encoded length changes, then wherever lo and hi differ in a leading part while the
 * trailing bytes do not span their full range, until each piece is a product of byte ranges.
 * The recursion is at most a few levels deep (each split fixes one more boundary). */
static int utf8_ranges(struct rx *c, uint32_t lo, uint32_t hi)
{
    static const uint32_t len_max[] = {0x7F, 0x7FF, 0xFFFF};
    if (hi <= 0x7F) {
        struct seq s = {.n = 1};
        cls_add(s.cls[0], lo, hi);
        return seq_push(c, &s);
    }
    for (int i = 0; i < 3; i++)
        if (lo <= len_max[i] && hi > len_max[i])
            return utf8_ranges(c, lo, len_max[i]) || utf8_ranges(c, len_max[i] + 1, hi);
    for (int i = 1; i < 4; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if ((lo & m) != 0)
                return utf8_ranges(c, lo, lo | m) || utf8_ranges(c, (lo | m) + 1, hi);
            if ((hi & m) != m)
                return utf8_ranges(c, lo, (hi & ~m) - 1) || utf8_ranges(c, hi & ~m, hi);
        }
    }
    uint8_t a[4], b[4];
    struct seq s = {0};
    s.n = utf8_encode(lo, a);
    utf8_encode(hi, b);
    for (int k = 0; k < s.n; k++)
        cls_add(s.cls[k], a[k], b[k]);
    return seq_push(c, &s);
}

/* c->seqs = the encoded forms of set node id's characters. In JSON-string mode, '"', '\\' and
 * the controls become their escapes (regex.h) and '/' has both forms. */
static int encode_set(struct rx *c, int32_t id)
{
    const struct node *n = &c->nodes[id];
    c->seqs.n = 0;
    for (size_t i = 0; i < n->set_n && !c->rc; i++) {
        uint32_t lo = c->ranges[n->set_at + i].lo, hi = c->ranges[n->set_at + i].hi;
        if (!c->json) {
            utf8_ranges(c, lo, hi);
            continue;
        }
        for (uint32_t cp = lo; cp <= hi && cp < 0x20 && !c->rc; cp++) {
            static const char short_esc[] = "btn\0fr"; /* for U+0008 .. U+000D */
            if (cp >= 8 && cp <= 13 && short_esc[cp - 8]) {
                char t[3] = {'\\', short_esc[cp - 8], '\0'};
                seq_text(c, t);
                continue;
            }
            static const char hexd[] = "0123456789abcdef";
            struct seq s = {0};
            const char *pre = "\\u00";
            for (const char *p = pre; *p; p++)
                cls_add(s.cls[s.n++], (unsigned char)*p, (unsigned char)*p);
            cls_add(s.cls[s.n++], hexd[cp >> 4], hexd[cp >> 4]);
            unsigned low = hexd[cp & 15], up = low >= 'a' ? low - 0x20 : low;
            cls_add(s.cls[s.n], low, low);
            cls_add(s.cls[s.n++], up, up);
            seq_push(c, &s);
        }
        /* The rest of the range, less '"' and '\\' (escaped) and with '/' also as "\/". */
        if (hi < 0x20)
            continue;
        if (lo < 0x20)
            lo = 0x20;
        static const uint32_t special[] = {'"', '/', '\\'};
        for (int k = 0; k < 3; k++) {
            uint32_t sp = special[k];
            if (sp < lo || sp > hi)
                continue;
            seq_text(c, sp == '"' ? "\\\"" : sp == '/' ? "\\/" : "\\\\");
            if (sp == '/')
                continue; /* '/' also stays raw */
            if (lo < sp)
                utf8_ranges(c, lo, sp - 1);
            lo = sp + 1;
        }
        if (lo <= hi)
            utf8_ranges(c, lo, hi);
    }
    if (c->rc)
        return c->rc;
    /* All one-byte forms become one class, kept first. */
    size_t w = 0;
    struct seq one = {0};
    bool any_one = false;
    for (size_t i = 0; i < c->seqs.n; i++) {
        if (c->seqs.v[i].n == 1) {
            for (int k = 0; k < 8; k++)
                one.cls[0][k] |= c->seqs.v[i].cls[0][k];
            any_one = true;
        } else {
            c->seqs.v[w++] = c->seqs.v[i];
        }
    }
    c->seqs.n = w;
    if (any_one) {
        one.n = 1;
        if (seq_push(c, &one))
            return c->rc;
        memmove(c->seqs.v + 1, c->seqs.v, w * sizeof *c->seqs.v);
        c->seqs.v[0] = one;
    }
    return 0;
}

/* ---- emission ---- */

static int grammar_err(struct rx *c, int rc)
{
    if (rc == ENG_GRAMMAR_ERR_TOO_BIG)
        return set_err(c, ENG_REGEX_ERR_TOO_BIG,
                       "the pattern is too large to enforce (grammar ceiling reached)");
    if (rc == ENG_GRAMMAR_ERR_NOMEM)
        return nomem(c);
    return set_err(c, ENG_REGEX_ERR_NOMEM, "internal grammar error %d", rc);
}

static int32_t new_rule(struct rx *c)
{
    if (c->rc)
        return -1;
    int32_t r = eng_grammar_rule(c->g);
    return r < 0 ? (grammar_err(c, r), -1) : r;
}

static int alt(struct rx *c, int32_t rule)
{
    int rc = c->rc ? c->rc : eng_grammar_alt(c->g, rule);
    return rc < 0 && !c->rc ? grammar_err(c, rc) : c->rc;
}

static int ref(struct rx *c, int32_t rule)
{
    int rc = c->rc ? c->rc : eng_grammar_add_ref(c->g, rule);
    return rc < 0 && !c->rc ? grammar_err(c, rc) : c->rc;
}

static int add_seq(struct rx *c, const struct seq *s)
{
    for (int k = 0; k < s->n && !c->rc; k++) {
        int rc = eng_grammar_add_class(c->g, s->cls[k]);
        if (rc < 0)
            grammar_err(c, rc);
    }
    return c->rc;
}

/* Whether node id is a set with one encoded form (a single character, or single bytes only):
 * then it is written inline instead of as a reference. */
static bool inline_set(struct rx *c, int32_t id)
{
    return c->nodes[id].kind == NODE_SET && encode_set(c, id) == 0 && c->seqs.n == 1;
}

static int32_t get(struct rx *c, int32_t id, bool ne);

/* Builds what element k of an alternative will need: a rule, unless it is written inline. */
static int prepare(struct rx *c, int32_t id, bool ne)
{
    if (!inline_set(c, id))
        get(c, id, ne);
    return c->rc;
}

/* Appends node id to the open alternative: inline classes or a reference to its rule (which
 * prepare has built). */
static int put(struct rx *c, int32_t id, bool ne)
{
    if (inline_set(c, id))
        return add_seq(c, &c->seqs.v[0]);
    return ref(c, get(c, id, ne));
}

/* rule ::= item{min, max} (max < 0: no limit) through eng_grammar_repeat, for a rule item
 * that never matches "", so that no loop can go round without consuming a byte. Its error is
 * recorded in c (-1 then). */
static int32_t repeat(struct rx *c, int32_t item, int32_t min, int32_t max)
{
    if (c->rc)
        return -1;
    int32_t r = eng_grammar_repeat(c->g, item, -1, min, max);
    return r < 0 ? (grammar_err(c, r), -1) : r;
}

/* A rule for node id's language, or (ne) for it without the empty text. The caller makes sure
 * that language is not empty. Memoized per node, so that each node is emitted at most twice. */
static int32_t get(struct rx *c, int32_t id, bool ne)
{
    if (c->rc)
        return -1;
    struct node *n = &c->nodes[id];
    if (!n->nullable)
        ne = false;
    if (n->rule[ne] >= 0)
        return n->rule[ne];
    int32_t r = -1;
    switch (n->kind) {
    case NODE_EMPTY:
        r = new_rule(c);
        alt(c, r);
        break;
    case NODE_SET:
        if (encode_set(c, id))
            return -1;
        r = new_rule(c);
        for (size_t i = 0; i < c->seqs.n && !c->rc; i++) {
            alt(c, r);
            add_seq(c, &c->seqs.v[i]);
        }
        break;
    case NODE_ALT: {
        /* Branches that add nothing (no text, or only "" when ne) are left out. */
        for (int32_t k = n->child; k >= 0 && !c->rc; k = c->nodes[k].next) {
            const struct node *b = &c->nodes[k];
            if (ne ? b->has_ne : b->nullable || b->has_ne)
                prepare(c, k, ne);
        }
        r = new_rule(c);
        for (int32_t k = n->child; k >= 0 && !c->rc; k = c->nodes[k].next) {
            const struct node *b = &c->nodes[k];
            if (ne ? b->has_ne : b->nullable || b->has_ne) {
                alt(c, r);
                put(c, k, ne);
            }
        }
        break;
    }
    case NODE_CAT:
        if (!ne) {
            for (int32_t k = n->child; k >= 0 && !c->rc; k = c->nodes[k].next)
                prepare(c, k, false);
            r = new_rule(c);
            alt(c, r);
            for (int32_t k = n->child; k >= 0 && !c->rc; k = c->nodes[k].next)
                put(c, k, false);
        } else {
            /* Every child can be empty; a non-empty text has a first non-empty child k:
             * S_k ::= ne(child k) R_(k+1) | S_(k+1), with R_k ::= child k R_(k+1) the whole
             * rest. Built from the last child back, so the rules stay linear in size. */
            int32_t n_children = 0;
            for (int32_t k = n->child; k >= 0; k = c->nodes[k].next)
                n_children++;
            int32_t *kids = malloc((size_t)n_children * sizeof *kids);
            if (!kids)
                return nomem(c), -1;
            int32_t i = 0;
            for (int32_t k = n->child; k >= 0; k = c->nodes[k].next)
                kids[i++] = k;
            int32_t below = -1, rest = -1; /* S_(k+1), R_(k+1) */
            for (i = n_children - 1; i >= 0 && !c->rc; i--) {
                int32_t k = kids[i];
                if (c->nodes[k].has_ne) { /* else S_k = S_(k+1) */
                    prepare(c, k, true);
                    int32_t s = new_rule(c);
                    alt(c, s);
                    put(c, k, true);
                    if (rest >= 0)
                        ref(c, rest);
                    if (below >= 0) {
                        alt(c, s);
                        ref(c, below);
                    }
                    below = s;
                }
                if (i > 0) {
                    prepare(c, k, false);
                    int32_t t = new_rule(c);
                    alt(c, t);
                    put(c, k, false);
                    if (rest >= 0)
                        ref(c, rest);
                    rest = t;
                }
            }
            free(kids);
            r = below;
        }
        break;
    case NODE_REP: {
        const struct node *x = &c->nodes[n->child];
        int32_t min = n->min;
        if (n->max == 0 || !x->has_ne) {
            r = new_rule(c); /* only "" (the caller never asks for ne here) */
            alt(c, r);
            break;
        }
        /* x{min,max} with x nullable is x'{0,max}, x' = x without "": each x^k contains the
         * shorter powers. The item never matches "", so no empty loop arises. */
        int32_t item = get(c, n->child, true);
        if (x->nullable)
            min = 0;
        if (ne && min == 0)
            min = 1;
        r = repeat(c, item, min, n->max);
        break;
    }
    default:
        break;
    }
    if (c->rc)
        return -1;
    n = &c->nodes[id];
    n->rule[ne] = r;
    return r;
}

int eng_regex_compile(struct eng_grammar *g, const char *re, size_t len, unsigned flags,
                      int32_t *rule, char *err, size_t errlen)
{
    if (err && errlen > 0)
        err[0] = '\0';
    struct rx c = {.re = re, .len = len, .json = (flags & ENG_REGEX_JSON_STRING) != 0, .g = g,
                   .err = err, .errlen = err ? errlen : 0};
    if (!g || (!re && len > 0) || !rule || (flags & ~ENG_REGEX_JSON_STRING)) {
        set_err(&c, ENG_REGEX_ERR_SYNTAX, "bad arguments");
        return c.rc;
    }
    int32_t root = parse_alt(&c);
    if (root >= 0 && !at_end(&c))
        set_err(&c, ENG_REGEX_ERR_SYNTAX, "unbalanced parenthesis at byte %zu", c.pos);
    if (root >= 0 && !c.rc && !c.nodes[root].nullable && !c.nodes[root].has_ne)
        set_err(&c, ENG_REGEX_ERR_UNSUPPORTED,
                "the pattern matches no text that can be produced%s",
                c.json ? " (U+0000 and surrogates cannot be)" : " (surrogates cannot be)");
    int32_t r = c.rc ? -1 : get(&c, root, false);
    free(c.nodes);
    free(c.ranges);
    free(c.scratch);
    free(c.names);
    free(c.seqs.v);
    if (c.rc)
        return c.rc;
    *rule = r;
    return 0;
}
