/* Lexer of the Jinja subset: splits a template into text and tag tokens exactly as jinja2's
 * lexer does with trim_blocks=True, lstrip_blocks=True and keep_trailing_newline=False (the
 * transformers environment), including {%- -%} / {%+ +%} whitespace control and comments.
 * It does not know statements or expressions; jinja_parse.c does. */
#include "jinja.h"
#include "json.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BRACKETS 1024

struct lexer {
    const char *s;        /* newline-normalized source */
    size_t n;
    struct jarena *arena;
    struct jerr *err;
    struct jtok *toks;
    size_t n_toks, cap;
    /* line tracking: positions are asked for in increasing order */
    size_t at;
    int line;
    size_t line_start;
};

static void locate(struct lexer *L, size_t pos, int *line, int *col)
{
    if (pos < L->at) {
        L->at = 0;
        L->line = 1;
        L->line_start = 0;
    }
    for (; L->at < pos && L->at < L->n; L->at++)
        if (L->s[L->at] == '\n') {
            L->line++;
            L->line_start = L->at + 1;
        }
    *line = L->line;
    *col = (int)(pos - L->line_start) + 1;
}

static int fail(struct lexer *L, size_t pos, const char *msg, const char *detail)
{
    int line, col;
    locate(L, pos, &line, &col);
    return jerr_set(L->err, JERR_SYNTAX, line, col, "%s%s", msg, detail ? detail : "");
}

static struct jtok *push(struct lexer *L, enum jtok_kind kind, size_t pos)
{
    if (L->n_toks == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 64;
        struct jtok *t = realloc(L->toks, cap * sizeof *t);
        if (t == NULL) {
            jerr_set(L->err, JERR_NOMEM, 0, 0, "out of memory");
            return NULL;
        }
        L->toks = t;
        L->cap = cap;
    }
    struct jtok *t = &L->toks[L->n_toks++];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    locate(L, pos, &t->line, &t->col);
    return t;
}

static int push_str(struct lexer *L, enum jtok_kind kind, size_t pos, const char *s, size_t len)
{
    struct jtok *t = push(L, kind, pos);
    if (t == NULL)
        return -1;
    t->s = jstr_new(L->arena, s, len);
    if (t->s == NULL)
        return jerr_set(L->err, JERR_NOMEM, 0, 0, "out of memory");
    return 0;
}

static bool starts(const struct lexer *L, size_t p, const char *lit)
{
    size_t k = strlen(lit);
    return p <= L->n && L->n - p >= k && memcmp(L->s + p, lit, k) == 0;
}

static size_t skip_space(const struct lexer *L, size_t p)
{
    size_t k;
    while (p < L->n && (k = jpy_space_at(L->s, L->n, p)) != 0)
        p += k;
    return p;
}

/* ---- string literals: Python "unicode-escape" decoding --------------------------------- */

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f)); return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Decodes body [p, q) of a quoted literal. The output never exceeds the input length. */
static int lex_string_body(struct lexer *L, size_t start, size_t p, size_t q)
{
    char *o = malloc(q - p + 1);
    if (o == NULL)
        return jerr_set(L->err, JERR_NOMEM, 0, 0, "out of memory");
    size_t n = 0;
    while (p < q) {
        char ch = L->s[p];
        if (ch != '\\' || p + 1 >= q) {
            o[n++] = ch;
            p++;
            continue;
        }
        char e = L->s[p + 1];
        p += 2;
        switch (e) {
        case '\\': o[n++] = '\\'; break;
        case '\'': o[n++] = '\''; break;
        case '"': o[n++] = '"'; break;
        case 'a': o[n++] = '\a'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'n': o[n++] = '\n'; break;
        case 'r': o[n++] = '\r'; break;
        case 't': o[n++] = '\t'; break;
        case 'v': o[n++] = '\v'; break;
        case '\n': break; /* line continuation */
        case 'x': case 'u': case 'U': {
            int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t cp = 0;
            for (int k = 0; k < digits; k++) {
                int h = p < q ? eng_hex_digit((unsigned char)L->s[p]) : -1;
                if (h < 0) {
                    free(o);
                    return fail(L, start, "truncated \\", e == 'x' ? "xXX escape" : e == 'u' ? "uXXXX escape" : "UXXXXXXXX escape");
                }
                cp = cp * 16 + (uint32_t)h;
                p++;
            }
            if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
                free(o);
                return fail(L, start, "illegal Unicode character in string escape", NULL);
            }
            /* Every escape is at least as long as its UTF-8 encoding (\xXX -> <= 2 bytes). */
            n += put_utf8(o + n, cp);
            break;
        }
        default:
            if (e >= '0' && e <= '7') {
                uint32_t cp = (uint32_t)(e - '0');
                for (int k = 0; k < 2 && p < q && L->s[p] >= '0' && L->s[p] <= '7'; k++)
                    cp = cp * 8 + (uint32_t)(L->s[p++] - '0');
                n += put_utf8(o + n, cp);
            } else if (e == 'N') {
                free(o);
                return fail(L, start, "\\N{...} escapes are not supported", NULL);
            } else {
                o[n++] = '\\';
                o[n++] = e;
            }
        }
    }
    int rc = push_str(L, JT_STRING, start, o, n);
    free(o);
    return rc;
}

/* ---- numbers ---------------------------------------------------------------------------- */

static size_t scan_digits(const struct lexer *L, size_t p, int (*ok)(int))
{
    /* digits, single '_' allowed between digits */
    if (p >= L->n || !ok((unsigned char)L->s[p]))
        return p;
    p++;
    while (p < L->n) {
        if (ok((unsigned char)L->s[p]))
            p++;
        else if (L->s[p] == '_' && p + 1 < L->n && ok((unsigned char)L->s[p + 1]))
            p += 2;
        else
            break;
    }
    return p;
}

static int is_dec(int ch) { return ch >= '0' && ch <= '9'; }
static int is_hex(int ch) { return isxdigit(ch) != 0; }
static int is_oct(int ch) { return ch >= '0' && ch <= '7'; }
static int is_bin(int ch) { return ch == '0' || ch == '1'; }

static int lex_number(struct lexer *L, size_t p, size_t *end)
{
    size_t start = p;
    const char *s = L->s;
    bool prev_dot = p > 0 && s[p - 1] == '.';
    size_t q = scan_digits(L, p, is_dec);
    bool is_float = false;
    if (!prev_dot) {
        size_t r = q;
        if (r + 1 < L->n && s[r] == '.' && is_dec((unsigned char)s[r + 1])) {
            r = scan_digits(L, r + 1, is_dec);
            is_float = true;
        }
        if (r < L->n && (s[r] == 'e' || s[r] == 'E')) {
            size_t t = r + 1;
            if (t < L->n && (s[t] == '+' || s[t] == '-'))
                t++;
            size_t u = scan_digits(L, t, is_dec);
            if (u > t) {
                r = u;
                is_float = true;
            }
        }
        if (is_float)
            q = r;
    }
    char buf[400];
    size_t nb = 0;
    if (is_float) {
        for (size_t i = start; i < q && nb < sizeof buf - 1; i++)
            if (s[i] != '_')
                buf[nb++] = s[i];
        buf[nb] = '\0';
        struct jtok *t = push(L, JT_FLOAT, start);
        if (t == NULL)
            return -1;
        t->f = strtod(buf, NULL);
        *end = q;
        return 0;
    }
    int base = 10;
    size_t ds = start;
    if (s[start] == '0' && start + 1 < L->n) {
        char b = (char)tolower((unsigned char)s[start + 1]);
        int (*ok)(int) = b == 'x' ? is_hex : b == 'o' ? is_oct : b == 'b' ? is_bin : NULL;
        if (ok != NULL) {
            base = b == 'x' ? 16 : b == 'o' ? 8 : 2;
            size_t t = start + 2;
            if (t < L->n && s[t] == '_')
                t++;
            ds = t;
            q = scan_digits(L, t, ok);
            if (q == t)
                return fail(L, start, "invalid integer literal", NULL);
        } else if (q - start > 1) {
            for (size_t i = start; i < q; i++)
                if (s[i] != '0' && s[i] != '_')
                    return fail(L, start, "leading zeros in decimal integer literals are not permitted", NULL);
        }
    }
    uint64_t v = 0;
    for (size_t i = ds; i < q; i++) {
        if (s[i] == '_')
            continue;
        int d = eng_hex_digit((unsigned char)s[i]);
        if (v > (uint64_t)INT64_MAX / (uint64_t)base ||
            v * (uint64_t)base + (uint64_t)d > (uint64_t)INT64_MAX)
            return fail(L, start, "integer literal too large", NULL);
        v = v * (uint64_t)base + (uint64_t)d;
    }
    struct jtok *t = push(L, JT_INT, start);
    if (t == NULL)
        return -1;
    t->i = (int64_t)v;
    *end = q;
    return 0;
}

/* ---- operators -------------------------------------------------------------------------- */

static const struct { const char *text; enum jop op; } OPS[] = {
    {"//", JOP_FLOORDIV}, {"**", JOP_POW}, {"==", JOP_EQ}, {"!=", JOP_NE}, {">=", JOP_GE},
    {"<=", JOP_LE}, {"+", JOP_ADD}, {"-", JOP_SUB}, {"/", JOP_DIV}, {"*", JOP_MUL},
    {"%", JOP_MOD}, {"~", JOP_TILDE}, {"[", JOP_LBRACKET}, {"]", JOP_RBRACKET},
    {"(", JOP_LPAREN}, {")", JOP_RPAREN}, {"{", JOP_LBRACE}, {"}", JOP_RBRACE},
    {">", JOP_GT}, {"<", JOP_LT}, {"=", JOP_ASSIGN}, {".", JOP_DOT}, {":", JOP_COLON},
    {"|", JOP_PIPE}, {",", JOP_COMMA}, {";", JOP_SEMICOLON},
};

/* ---- one tag: {{ ... }} or {% ... %} ---------------------------------------------------- */

static int lex_tag(struct lexer *L, size_t p, bool block, size_t *end)
{
    char stack[MAX_BRACKETS];
    size_t depth = 0;
    size_t tag_start = p;
    for (;;) {
        if (p >= L->n)
            return fail(L, tag_start, block ? "unexpected end of template, expected end of block tag"
                                            : "unexpected end of template, expected end of print statement", NULL);
        if (depth == 0) {
            size_t e = 0;
            if (block) {
                if (starts(L, p, "+%}"))
                    e = p + 3;
                else if (starts(L, p, "-%}"))
                    e = skip_space(L, p + 3);
                else if (starts(L, p, "%}"))
                    e = p + 2 + (p + 2 < L->n && L->s[p + 2] == '\n');
            } else {
                if (starts(L, p, "-}}"))
                    e = skip_space(L, p + 3);
                else if (starts(L, p, "}}"))
                    e = p + 2;
            }
            if (e != 0) {
                if (push(L, block ? JT_BLOCK_END : JT_VAR_END, p) == NULL)
                    return -1;
                *end = e;
                return 0;
            }
        }
        size_t k = jpy_space_at(L->s, L->n, p);
        if (k != 0) {
            p += k;
            continue;
        }
        unsigned char ch = (unsigned char)L->s[p];
        if (is_dec(ch)) {
            if (lex_number(L, p, &p) < 0)
                return -1;
            continue;
        }
        if (isalpha(ch) || ch == '_') {
            size_t q = p + 1;
            while (q < L->n && (isalnum((unsigned char)L->s[q]) || L->s[q] == '_'))
                q++;
            if (push_str(L, JT_NAME, p, L->s + p, q - p) < 0)
                return -1;
            p = q;
            continue;
        }
        if (ch == '\'' || ch == '"') {
            size_t q = p + 1;
            while (q < L->n && L->s[q] != (char)ch)
                q += (L->s[q] == '\\' && q + 1 < L->n) ? 2 : 1;
            if (q >= L->n)
                return fail(L, p, "unterminated string literal", NULL);
            if (lex_string_body(L, p, p + 1, q) < 0)
                return -1;
            p = q + 1;
            continue;
        }
        size_t i;
        for (i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
            if (starts(L, p, OPS[i].text))
                break;
        if (i == sizeof OPS / sizeof OPS[0]) {
            char d[8] = {0};
            if (ch >= 0x20 && ch < 0x7f)
                d[0] = (char)ch;
            return fail(L, p, "unexpected char ", d[0] ? d : "(non-ASCII or control byte)");
        }
        enum jop op = OPS[i].op;
        if (op == JOP_LPAREN || op == JOP_LBRACKET || op == JOP_LBRACE) {
            if (depth == MAX_BRACKETS) {
                int line, col;
                locate(L, p, &line, &col);
                return jerr_set(L->err, JERR_LIMIT, line, col, "brackets nested more than %d deep", MAX_BRACKETS);
            }
            stack[depth++] = op == JOP_LPAREN ? ')' : op == JOP_LBRACKET ? ']' : '}';
        } else if (op == JOP_RPAREN || op == JOP_RBRACKET || op == JOP_RBRACE) {
            char d[2] = {OPS[i].text[0], 0};
            if (depth == 0)
                return fail(L, p, "unexpected ", d);
            if (stack[--depth] != d[0])
                return fail(L, p, "unexpected closing bracket ", d);
        }
        struct jtok *t = push(L, JT_OP, p);
        if (t == NULL)
            return -1;
        t->op = op;
        p += strlen(OPS[i].text);
    }
}

/* ---- the template ----------------------------------------------------------------------- */

static int lex_all(struct lexer *L)
{
    size_t pos = 0;
    bool line_starting = true;
    while (pos < L->n) {
        const char *hit = NULL;
        for (const char *q = memchr(L->s + pos, '{', L->n - pos); q != NULL;
             q = memchr(q + 1, '{', (size_t)(L->s + L->n - q - 1))) {
            if ((size_t)(q - L->s) + 1 < L->n && (q[1] == '{' || q[1] == '%' || q[1] == '#')) {
                hit = q;
                break;
            }
        }
        if (hit == NULL)
            return push_str(L, JT_TEXT, pos, L->s + pos, L->n - pos);
        size_t t = (size_t)(hit - L->s);
        char kind = hit[1];
        char sign = (t + 2 < L->n && (hit[2] == '-' || hit[2] == '+')) ? hit[2] : 0;
        size_t text_end = t;
        if (sign == '-') {
            size_t k;
            while (text_end > pos && (k = jpy_space_before(L->s, text_end)) != 0 && text_end - k >= pos)
                text_end -= k;
        } else if (sign != '+' && kind != '{') {
            /* lstrip_blocks: drop spaces between the line start and a block or comment tag */
            size_t l_pos = text_end;
            while (l_pos > pos && L->s[l_pos - 1] != '\n')
                l_pos--;
            if ((l_pos > pos || line_starting) && l_pos < text_end) {
                size_t q = l_pos, k;
                while (q < text_end && (k = jpy_space_at(L->s, text_end, q)) != 0)
                    q += k;
                if (q == text_end)
                    text_end = l_pos;
            }
        }
        if (text_end > pos && push_str(L, JT_TEXT, pos, L->s + pos, text_end - pos) < 0)
            return -1;
        size_t p = t + 2 + (sign ? 1 : 0);
        size_t end;
        if (kind == '#') {
            size_t q = p;
            for (; q < L->n; q++)
                if (starts(L, q, "+#}") || starts(L, q, "-#}") || starts(L, q, "#}"))
                    break;
            if (q >= L->n)
                return fail(L, t, "Missing end of comment tag", NULL);
            if (L->s[q] == '+')
                end = q + 3;
            else if (L->s[q] == '-')
                end = skip_space(L, q + 3);
            else
                end = q + 2 + (q + 2 < L->n && L->s[q + 2] == '\n');
        } else {
            if (push(L, kind == '{' ? JT_VAR_BEGIN : JT_BLOCK_BEGIN, t) == NULL)
                return -1;
            if (lex_tag(L, p, kind == '%', &end) < 0)
                return -1;
        }
        line_starting = L->s[end - 1] == '\n';
        pos = end;
    }
    return 0;
}

int jinja_lex(const char *src, size_t len, struct jarena *arena, struct jtok **toks,
              size_t *n_toks, struct jerr *err)
{
    *toks = NULL;
    *n_toks = 0;
    /* Newlines become \n everywhere (as jinja2 does) and one trailing newline is dropped. */
    char *s = malloc(len + 1);
    if (s == NULL)
        return jerr_set(err, JERR_NOMEM, 0, 0, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n > 0 && s[n - 1] == '\n')
        n--;
    s[n] = '\0';
    struct lexer L = {.s = s, .n = n, .arena = arena, .err = err, .line = 1};
    int rc = lex_all(&L);
    struct jtok *eof = rc == 0 ? push(&L, JT_EOF, n) : NULL;
    if (rc == 0 && eof == NULL)
        rc = -1;
    free(s);
    if (rc < 0) {
        free(L.toks);
        return -1;
    }
    *toks = L.toks;
    *n_toks = L.n_toks;
    return 0;
}
