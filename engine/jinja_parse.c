/* Parser of the Jinja subset: tokens from jinja_lex.c into the syntax tree of jinja.h, with
 * jinja2's operator precedence, and a bound on nesting so that neither this recursive-descent
 * parser nor the evaluator can exhaust the stack. It does not evaluate anything. */
#include "jinja.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parser {
    const struct jtok *t;
    size_t n, i;
    struct jarena *a;
    struct jerr *err;
    int max_height;
    int depth;      /* recursion depth of the parser itself */
    int loops;      /* enclosing for loops (break/continue need one) */
};

/* A growable vector of node pointers, copied into the arena when complete. */
struct nvec {
    struct jnode **v;
    size_t n, cap;
};

static const struct jtok *cur(const struct parser *P) { return &P->t[P->i]; }
static const struct jtok *peek(const struct parser *P) { return &P->t[P->i + (P->i + 1 < P->n)]; }
static void next(struct parser *P) { if (P->i + 1 < P->n) P->i++; }

static bool tok_is_name(const struct jtok *t, const char *name)
{
    return t->kind == JT_NAME && t->s->len == strlen(name) && memcmp(t->s->s, name, t->s->len) == 0;
}
static bool tok_is_op(const struct jtok *t, enum jop op) { return t->kind == JT_OP && t->op == op; }

static const char *describe(const struct jtok *t, char *buf, size_t cap)
{
    switch (t->kind) {
    case JT_TEXT: return "template data";
    case JT_VAR_BEGIN: return "begin of print statement";
    case JT_VAR_END: return "end of print statement";
    case JT_BLOCK_BEGIN: return "begin of statement block";
    case JT_BLOCK_END: return "end of statement block";
    case JT_STRING: return "string";
    case JT_INT: return "integer";
    case JT_FLOAT: return "float";
    case JT_EOF: return "end of template";
    case JT_NAME: snprintf(buf, cap, "'%.40s'", t->s->s); return buf;
    case JT_OP: break;
    }
    static const char *const names[] = {"+", "-", "*", "/", "//", "%", "**", "~", "[", "]", "(", ")",
                                        "{", "}", "==", "!=", ">", ">=", "<", "<=", "=", ".", ":", "|",
                                        ",", ";", "in", "not in"};
    snprintf(buf, cap, "'%s'", names[t->op]);
    return buf;
}

static int fail_at(struct parser *P, const struct jtok *t, const char *what)
{
    char b[64];
    return jerr_set(P->err, JERR_SYNTAX, t->line, t->col, "%s, got %s", what, describe(t, b, sizeof b));
}

static int expect_op(struct parser *P, enum jop op, const char *what)
{
    if (!tok_is_op(cur(P), op))
        return fail_at(P, cur(P), what);
    next(P);
    return 0;
}

static int expect_kind(struct parser *P, enum jtok_kind k, const char *what)
{
    if (cur(P)->kind != k)
        return fail_at(P, cur(P), what);
    next(P);
    return 0;
}

static int enter(struct parser *P)
{
    if (++P->depth > P->max_height)
        return jerr_set(P->err, JERR_LIMIT, cur(P)->line, cur(P)->col,
                        "template nesting exceeds the depth limit of %d", P->max_height);
    return 0;
}

static struct jnode *node(struct parser *P, enum jn_kind kind, const struct jtok *at)
{
    struct jnode *n = jarena_alloc(P->a, sizeof *n);
    if (n == NULL) {
        jerr_set(P->err, JERR_NOMEM, 0, 0, "out of memory");
        return NULL;
    }
    n->kind = kind;
    n->line = at->line;
    n->col = at->col;
    return n;
}

static int h_of(struct jnode *const *v, size_t n)
{
    int h = 0;
    for (size_t i = 0; v != NULL && i < n; i++)
        if (v[i] != NULL && v[i]->height > h)
            h = v[i]->height;
    return h;
}

/* Sets n->height from its children; fails when the tree gets taller than the limit. */
static struct jnode *done(struct parser *P, struct jnode *n)
{
    if (n == NULL)
        return NULL;
    int h = 0;
    struct jnode *ch[4] = {n->a, n->b, n->c, n->d};
    int parts[6] = {h_of(ch, 4), h_of(n->args, n->n_args), h_of(n->vals, n->n_args),
                    h_of(n->kwv, n->n_kw), h_of(n->body, n->n_body), h_of(n->orelse, n->n_orelse)};
    for (int i = 0; i < 6; i++)
        if (parts[i] > h)
            h = parts[i];
    n->height = h + 1;
    if (n->height > P->max_height) {
        jerr_set(P->err, JERR_LIMIT, n->line, n->col, "template nesting exceeds the depth limit of %d",
                 P->max_height);
        return NULL;
    }
    return n;
}

static int nvec_push(struct parser *P, struct nvec *v, struct jnode *n)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        struct jnode **p = realloc(v->v, cap * sizeof *p);
        if (p == NULL)
            return jerr_set(P->err, JERR_NOMEM, 0, 0, "out of memory");
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = n;
    return 0;
}

/* Moves the vector into the arena (and frees it either way). */
static int nvec_freeze(struct parser *P, struct nvec *v, struct jnode ***out, size_t *n)
{
    *out = NULL;
    *n = v->n;
    int rc = 0;
    if (v->n != 0) {
        *out = jarena_array(P->a, v->n, sizeof **out);
        if (*out == NULL)
            rc = jerr_set(P->err, JERR_NOMEM, 0, 0, "out of memory");
        else
            memcpy(*out, v->v, v->n * sizeof **out);
    }
    free(v->v);
    v->v = NULL;
    v->n = v->cap = 0;
    return rc;
}

/* ---- expressions ------------------------------------------------------------------------ */

static struct jnode *parse_expression(struct parser *P, bool condexpr);
static struct jnode *parse_or(struct parser *P);
static struct jnode *parse_unary(struct parser *P, bool with_filter);

static bool is_tuple_end(const struct parser *P, const char *extra)
{
    const struct jtok *t = cur(P);
    if (t->kind == JT_VAR_END || t->kind == JT_BLOCK_END || t->kind == JT_EOF || tok_is_op(t, JOP_RPAREN))
        return true;
    return extra != NULL && tok_is_name(t, extra);
}

/* a, b, c  -> a tuple (or the single expression when there is no comma). */
static struct jnode *parse_tuple(struct parser *P, bool condexpr, bool parens, const char *extra_end)
{
    const struct jtok *start = cur(P);
    struct nvec items = {0};
    bool is_tuple = false;
    for (;;) {
        if (items.n != 0 && expect_op(P, JOP_COMMA, "expected ','") < 0)
            goto fail;
        if (is_tuple_end(P, extra_end))
            break;
        struct jnode *e = parse_expression(P, condexpr);
        if (e == NULL || nvec_push(P, &items, e) < 0)
            goto fail;
        if (tok_is_op(cur(P), JOP_COMMA))
            is_tuple = true;
        else
            break;
    }
    if (!is_tuple && items.n == 1) {
        struct jnode *e = items.v[0];
        free(items.v);
        return e;
    }
    if (!is_tuple && !parens) {
        fail_at(P, cur(P), "expected an expression");
        goto fail;
    }
    struct jnode *n = node(P, JN_TUPLE, start);
    if (n == NULL || nvec_freeze(P, &items, &n->args, &n->n_args) < 0)
        goto fail;
    return done(P, n);
fail:
    free(items.v);
    return NULL;
}

static struct jnode *parse_list_or_dict(struct parser *P, bool dict)
{
    const struct jtok *start = cur(P);
    next(P);
    struct nvec keys = {0}, vals = {0};
    enum jop close = dict ? JOP_RBRACE : JOP_RBRACKET;
    while (!tok_is_op(cur(P), close)) {
        if (keys.n != 0 && expect_op(P, JOP_COMMA, "expected ','") < 0)
            goto fail;
        if (tok_is_op(cur(P), close))
            break;
        struct jnode *k = parse_expression(P, true);
        if (k == NULL || nvec_push(P, &keys, k) < 0)
            goto fail;
        if (dict) {
            if (expect_op(P, JOP_COLON, "expected ':' in dict literal") < 0)
                goto fail;
            struct jnode *v = parse_expression(P, true);
            if (v == NULL || nvec_push(P, &vals, v) < 0)
                goto fail;
        }
    }
    next(P);
    struct jnode *n = node(P, dict ? JN_DICT : JN_LIST, start);
    if (n == NULL || nvec_freeze(P, &keys, &n->args, &n->n_args) < 0)
        goto fail;
    size_t nv;
    if (nvec_freeze(P, &vals, &n->vals, &nv) < 0)
        goto fail;
    return done(P, n);
fail:
    free(keys.v);
    free(vals.v);
    return NULL;
}

static struct jnode *lit(struct parser *P, const struct jtok *at, struct jv v)
{
    struct jnode *n = node(P, JN_LIT, at);
    if (n != NULL)
        n->lit = v;
    return done(P, n);
}

static struct jnode *parse_primary(struct parser *P)
{
    const struct jtok *t = cur(P);
    switch (t->kind) {
    case JT_NAME: {
        next(P);
        if (tok_is_name(t, "true") || tok_is_name(t, "True"))
            return lit(P, t, jv_bool(true));
        if (tok_is_name(t, "false") || tok_is_name(t, "False"))
            return lit(P, t, jv_bool(false));
        if (tok_is_name(t, "none") || tok_is_name(t, "None"))
            return lit(P, t, jv_none());
        struct jnode *n = node(P, JN_NAME, t);
        if (n != NULL)
            n->name = t->s;
        return done(P, n);
    }
    case JT_STRING: {
        /* adjacent literals concatenate: 'a' 'b' == 'ab' (one pass, one allocation) */
        size_t total = 0, first = P->i;
        for (; cur(P)->kind == JT_STRING; next(P))
            total += cur(P)->s->len; /* bounded by the template size */
        if (P->i == first + 1)
            return lit(P, t, jv_str(t->s));
        struct jstr *s = jarena_alloc(P->a, sizeof *s + total + 1);
        if (s == NULL) {
            jerr_set(P->err, JERR_NOMEM, 0, 0, "out of memory");
            return NULL;
        }
        s->len = 0;
        for (size_t k = first; k < P->i; k++) {
            memcpy(s->s + s->len, P->t[k].s->s, P->t[k].s->len);
            s->len += P->t[k].s->len;
        }
        s->s[s->len] = '\0';
        return lit(P, t, jv_str(s));
    }
    case JT_INT: next(P); return lit(P, t, jv_int(t->i));
    case JT_FLOAT: next(P); return lit(P, t, jv_float(t->f));
    case JT_OP:
        if (t->op == JOP_LPAREN) {
            next(P);
            struct jnode *e = parse_tuple(P, true, true, NULL);
            if (e == NULL || expect_op(P, JOP_RPAREN, "expected ')'") < 0)
                return NULL;
            return e;
        }
        if (t->op == JOP_LBRACKET || t->op == JOP_LBRACE)
            return parse_list_or_dict(P, t->op == JOP_LBRACE);
        break;
    default: break;
    }
    fail_at(P, t, "expected an expression");
    return NULL;
}

/* ( args, name=value ) -> n->args / n->kw */
static int parse_call_args(struct parser *P, struct jnode *n)
{
    next(P); /* ( */
    struct nvec args = {0}, kwv = {0};
    const struct jstr **kw = NULL;
    size_t kw_cap = 0;
    while (!tok_is_op(cur(P), JOP_RPAREN)) {
        if (args.n + kwv.n != 0 && expect_op(P, JOP_COMMA, "expected ','") < 0)
            goto fail;
        if (tok_is_op(cur(P), JOP_RPAREN))
            break;
        if (cur(P)->kind == JT_NAME && tok_is_op(peek(P), JOP_ASSIGN)) {
            if (kwv.n == kw_cap) {
                kw_cap = kw_cap ? kw_cap * 2 : 4;
                const struct jstr **k = realloc(kw, kw_cap * sizeof *k);
                if (k == NULL) {
                    jerr_set(P->err, JERR_NOMEM, 0, 0, "out of memory");
                    goto fail;
                }
                kw = k;
            }
            kw[kwv.n] = cur(P)->s;
            next(P);
            next(P);
            struct jnode *v = parse_expression(P, true);
            if (v == NULL || nvec_push(P, &kwv, v) < 0)
                goto fail;
        } else {
            if (kwv.n != 0) {
                fail_at(P, cur(P), "positional argument follows keyword argument");
                goto fail;
            }
            struct jnode *v = parse_expression(P, true);
            if (v == NULL || nvec_push(P, &args, v) < 0)
                goto fail;
        }
    }
    next(P); /* ) */
    if (nvec_freeze(P, &args, &n->args, &n->n_args) < 0)
        goto fail;
    if (kwv.n != 0) {
        n->kw = jarena_array(P->a, kwv.n, sizeof *n->kw);
        if (n->kw == NULL) {
            jerr_set(P->err, JERR_NOMEM, 0, 0, "out of memory");
            goto fail;
        }
        memcpy(n->kw, kw, kwv.n * sizeof *kw);
    }
    free(kw);
    return nvec_freeze(P, &kwv, &n->kwv, &n->n_kw);
fail:
    free(args.v);
    free(kwv.v);
    free(kw);
    return -1;
}

static struct jnode *parse_subscript(struct parser *P, struct jnode *obj)
{
    const struct jtok *at = cur(P);
    next(P); /* [ */
    struct jnode *parts[3] = {NULL, NULL, NULL};
    bool slice = false;
    if (!tok_is_op(cur(P), JOP_COLON)) {
        parts[0] = parse_expression(P, true);
        if (parts[0] == NULL)
            return NULL;
    }
    for (int k = 1; k < 3 && tok_is_op(cur(P), JOP_COLON); k++) {
        slice = true;
        next(P);
        if (!tok_is_op(cur(P), JOP_RBRACKET) && !tok_is_op(cur(P), JOP_COLON)) {
            parts[k] = parse_expression(P, true);
            if (parts[k] == NULL)
                return NULL;
        }
    }
    if (expect_op(P, JOP_RBRACKET, "expected ']'") < 0)
        return NULL;
    struct jnode *n = node(P, slice ? JN_SLICE : JN_INDEX, at);
    if (n == NULL)
        return NULL;
    n->a = obj;
    n->b = parts[0];
    n->c = parts[1];
    n->d = parts[2];
    return done(P, n);
}

static struct jnode *parse_postfix(struct parser *P, struct jnode *e)
{
    while (e != NULL) {
        const struct jtok *t = cur(P);
        if (tok_is_op(t, JOP_DOT)) {
            next(P);
            const struct jtok *nt = cur(P);
            if (nt->kind == JT_NAME) {
                struct jnode *n = node(P, JN_ATTR, nt);
                if (n == NULL)
                    return NULL;
                n->a = e;
                n->name = nt->s;
                next(P);
                e = done(P, n);
            } else if (nt->kind == JT_INT) {
                struct jnode *n = node(P, JN_INDEX, nt);
                struct jnode *k = lit(P, nt, jv_int(nt->i));
                if (n == NULL || k == NULL)
                    return NULL;
                n->a = e;
                n->b = k;
                next(P);
                e = done(P, n);
            } else {
                fail_at(P, nt, "expected an attribute name");
                return NULL;
            }
        } else if (tok_is_op(t, JOP_LBRACKET)) {
            e = parse_subscript(P, e);
        } else if (tok_is_op(t, JOP_LPAREN)) {
            struct jnode *n = node(P, JN_CALL, t);
            if (n == NULL)
                return NULL;
            n->a = e;
            if (parse_call_args(P, n) < 0)
                return NULL;
            e = done(P, n);
        } else {
            break;
        }
    }
    return e;
}

static struct jnode *parse_filter_expr(struct parser *P, struct jnode *e)
{
    while (e != NULL) {
        const struct jtok *t = cur(P);
        if (tok_is_op(t, JOP_PIPE)) {
            next(P);
            const struct jtok *nt = cur(P);
            if (nt->kind != JT_NAME) {
                fail_at(P, nt, "expected a filter name");
                return NULL;
            }
            int id = jinja_filter_id(nt->s->s, nt->s->len);
            if (id < 0) {
                jerr_set(P->err, JERR_SYNTAX, nt->line, nt->col, "No filter named '%.60s'.", nt->s->s);
                return NULL;
            }
            struct jnode *n = node(P, JN_FILTER, nt);
            if (n == NULL)
                return NULL;
            n->a = e;
            n->id = id;
            n->name = nt->s;
            next(P);
            if (tok_is_op(cur(P), JOP_LPAREN) && parse_call_args(P, n) < 0)
                return NULL;
            e = done(P, n);
        } else if (tok_is_name(t, "is")) {
            next(P);
            bool negated = false;
            if (tok_is_name(cur(P), "not")) {
                negated = true;
                next(P);
            }
            const struct jtok *nt = cur(P);
            if (nt->kind != JT_NAME) {
                fail_at(P, nt, "expected a test name");
                return NULL;
            }
            int id = jinja_test_id(nt->s->s, nt->s->len);
            if (id < 0) {
                jerr_set(P->err, JERR_SYNTAX, nt->line, nt->col, "No test named '%.60s'.", nt->s->s);
                return NULL;
            }
            struct jnode *n = node(P, JN_TEST, nt);
            if (n == NULL)
                return NULL;
            n->a = e;
            n->id = id;
            n->name = nt->s;
            next(P);
            const struct jtok *at = cur(P);
            if (tok_is_op(at, JOP_LPAREN)) {
                if (parse_call_args(P, n) < 0)
                    return NULL;
            } else if ((at->kind == JT_NAME || at->kind == JT_STRING || at->kind == JT_INT ||
                        at->kind == JT_FLOAT || tok_is_op(at, JOP_LBRACKET) || tok_is_op(at, JOP_LBRACE)) &&
                       !tok_is_name(at, "else") && !tok_is_name(at, "or") && !tok_is_name(at, "and")) {
                /* one bare argument: `x is divisibleby 3`, `x is sameas none` */
                if (tok_is_name(at, "is")) {
                    fail_at(P, at, "You cannot chain multiple tests with is");
                    return NULL;
                }
                struct jnode *arg = parse_postfix(P, parse_primary(P));
                if (arg == NULL)
                    return NULL;
                n->args = jarena_array(P->a, 1, sizeof *n->args);
                if (n->args == NULL) {
                    jerr_set(P->err, JERR_NOMEM, 0, 0, "out of memory");
                    return NULL;
                }
                n->args[0] = arg;
                n->n_args = 1;
            }
            e = done(P, n);
            if (e != NULL && negated) {
                struct jnode *no = node(P, JN_NOT, t);
                if (no == NULL)
                    return NULL;
                no->a = e;
                e = done(P, no);
            }
        } else if (tok_is_op(t, JOP_LPAREN)) {
            e = parse_postfix(P, e);
        } else {
            break;
        }
    }
    return e;
}

static struct jnode *unary_node(struct parser *P, enum jn_kind k, const struct jtok *at, struct jnode *a)
{
    if (a == NULL)
        return NULL;
    struct jnode *n = node(P, k, at);
    if (n == NULL)
        return NULL;
    n->a = a;
    return done(P, n);
}

static struct jnode *parse_unary(struct parser *P, bool with_filter)
{
    const struct jtok *t = cur(P);
    struct jnode *e;
    if (tok_is_op(t, JOP_SUB) || tok_is_op(t, JOP_ADD)) {
        next(P);
        if (enter(P) < 0)
            return NULL;
        e = unary_node(P, t->op == JOP_SUB ? JN_NEG : JN_POS, t, parse_unary(P, false));
        P->depth--;
    } else {
        e = parse_postfix(P, parse_primary(P));
    }
    return with_filter ? parse_filter_expr(P, e) : e;
}

static struct jnode *binop(struct parser *P, enum jn_kind k, enum jop op, const struct jtok *at,
                           struct jnode *l, struct jnode *r)
{
    if (l == NULL || r == NULL)
        return NULL;
    struct jnode *n = node(P, k, at);
    if (n == NULL)
        return NULL;
    n->op = op;
    n->a = l;
    n->b = r;
    return done(P, n);
}

static struct jnode *parse_pow(struct parser *P)
{
    struct jnode *l = parse_unary(P, true);
    while (l != NULL && tok_is_op(cur(P), JOP_POW)) {
        const struct jtok *t = cur(P);
        next(P);
        l = binop(P, JN_BINOP, JOP_POW, t, l, parse_unary(P, true));
    }
    return l;
}

static struct jnode *parse_math2(struct parser *P)
{
    struct jnode *l = parse_pow(P);
    while (l != NULL) {
        const struct jtok *t = cur(P);
        if (!(tok_is_op(t, JOP_MUL) || tok_is_op(t, JOP_DIV) || tok_is_op(t, JOP_FLOORDIV) || tok_is_op(t, JOP_MOD)))
            break;
        next(P);
        l = binop(P, JN_BINOP, t->op, t, l, parse_pow(P));
    }
    return l;
}

static struct jnode *parse_concat(struct parser *P)
{
    struct jnode *l = parse_math2(P);
    while (l != NULL && tok_is_op(cur(P), JOP_TILDE)) {
        const struct jtok *t = cur(P);
        next(P);
        l = binop(P, JN_BINOP, JOP_TILDE, t, l, parse_math2(P));
    }
    return l;
}

static struct jnode *parse_math1(struct parser *P)
{
    struct jnode *l = parse_concat(P);
    while (l != NULL && (tok_is_op(cur(P), JOP_ADD) || tok_is_op(cur(P), JOP_SUB))) {
        const struct jtok *t = cur(P);
        next(P);
        l = binop(P, JN_BINOP, t->op, t, l, parse_concat(P));
    }
    return l;
}

static struct jnode *parse_compare(struct parser *P)
{
    const struct jtok *start = cur(P);
    struct jnode *first = parse_math1(P);
    if (first == NULL)
        return NULL;
    struct nvec operands = {0};
    enum jop ops[64];
    size_t n_ops = 0;
    if (nvec_push(P, &operands, first) < 0)
        return NULL;
    for (;;) {
        const struct jtok *t = cur(P);
        enum jop op;
        if (t->kind == JT_OP && (t->op == JOP_EQ || t->op == JOP_NE || t->op == JOP_LT ||
                                 t->op == JOP_LE || t->op == JOP_GT || t->op == JOP_GE)) {
            op = t->op;
            next(P);
        } else if (tok_is_name(t, "in")) {
            op = JOP_IN;
            next(P);
        } else if (tok_is_name(t, "not") && tok_is_name(peek(P), "in")) {
            op = JOP_NOTIN;
            next(P);
            next(P);
        } else {
            break;
        }
        if (n_ops == sizeof ops / sizeof ops[0]) {
            jerr_set(P->err, JERR_LIMIT, t->line, t->col, "comparison chain too long");
            goto fail;
        }
        ops[n_ops++] = op;
        struct jnode *r = parse_math1(P);
        if (r == NULL || nvec_push(P, &operands, r) < 0)
            goto fail;
    }
    if (n_ops == 0) {
        free(operands.v);
        return first;
    }
    struct jnode *n = node(P, JN_CMP, start);
    if (n == NULL || nvec_freeze(P, &operands, &n->args, &n->n_args) < 0)
        goto fail;
    n->ops = jarena_array(P->a, n_ops, sizeof *n->ops);
    if (n->ops == NULL) {
        jerr_set(P->err, JERR_NOMEM, 0, 0, "out of memory");
        return NULL;
    }
    memcpy(n->ops, ops, n_ops * sizeof *ops);
    return done(P, n);
fail:
    free(operands.v);
    return NULL;
}

static struct jnode *parse_not(struct parser *P)
{
    const struct jtok *t = cur(P);
    if (!tok_is_name(t, "not"))
        return parse_compare(P);
    next(P);
    if (enter(P) < 0)
        return NULL;
    struct jnode *e = unary_node(P, JN_NOT, t, parse_not(P));
    P->depth--;
    return e;
}

static struct jnode *parse_and(struct parser *P)
{
    struct jnode *l = parse_not(P);
    while (l != NULL && tok_is_name(cur(P), "and")) {
        const struct jtok *t = cur(P);
        next(P);
        l = binop(P, JN_AND, JOP_ADD, t, l, parse_not(P));
    }
    return l;
}

static struct jnode *parse_or(struct parser *P)
{
    struct jnode *l = parse_and(P);
    while (l != NULL && tok_is_name(cur(P), "or")) {
        const struct jtok *t = cur(P);
        next(P);
        l = binop(P, JN_OR, JOP_ADD, t, l, parse_and(P));
    }
    return l;
}

static struct jnode *parse_condexpr(struct parser *P)
{
    struct jnode *e = parse_or(P);
    while (e != NULL && tok_is_name(cur(P), "if")) {
        const struct jtok *t = cur(P);
        next(P);
        struct jnode *cond = parse_or(P);
        if (cond == NULL)
            return NULL;
        struct jnode *other = NULL;
        if (tok_is_name(cur(P), "else")) {
            next(P);
            other = parse_expression(P, true);
            if (other == NULL)
                return NULL;
        }
        struct jnode *n = node(P, JN_COND, t);
        if (n == NULL)
            return NULL;
        n->a = e;
        n->b = cond;
        n->c = other;
        e = done(P, n);
    }
    return e;
}

static struct jnode *parse_expression(struct parser *P, bool condexpr)
{
    if (enter(P) < 0)
        return NULL;
    struct jnode *e = condexpr ? parse_condexpr(P) : parse_or(P);
    P->depth--;
    return e;
}

/* ---- statements ------------------------------------------------------------------------- */

static int parse_body(struct parser *P, const char *const *ends, struct jnode ***out, size_t *n_out);

/* Parses a body that must end with one of ends; leaves the end tag's name as the current token. */
static int parse_nested(struct parser *P, const char *const *ends, struct jnode ***out, size_t *n)
{
    if (enter(P) < 0)
        return -1;
    int rc = parse_body(P, ends, out, n);
    P->depth--;
    return rc;
}

static struct jnode *parse_if(struct parser *P, const struct jtok *at)
{
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    struct jnode *n = node(P, JN_IF, at);
    if (n == NULL)
        return NULL;
    n->a = parse_tuple(P, false, false, NULL);
    if (n->a == NULL || expect_kind(P, JT_BLOCK_END, "expected end of statement block") < 0)
        return NULL;
    if (parse_nested(P, ends, &n->body, &n->n_body) < 0)
        return NULL;
    const struct jtok *t = cur(P);
    next(P);
    if (tok_is_name(t, "elif")) {
        if (enter(P) < 0)
            return NULL;
        struct jnode *sub = parse_if(P, t);
        P->depth--;
        if (sub == NULL)
            return NULL;
        n->orelse = jarena_array(P->a, 1, sizeof *n->orelse);
        if (n->orelse == NULL) {
            jerr_set(P->err, JERR_NOMEM, 0, 0, "out of memory");
            return NULL;
        }
        n->orelse[0] = sub;
        n->n_orelse = 1;
        return done(P, n);
    }
    if (tok_is_name(t, "else")) {
        static const char *const end_only[] = {"endif", NULL};
        if (expect_kind(P, JT_BLOCK_END, "expected end of statement block") < 0 ||
            parse_nested(P, end_only, &n->orelse, &n->n_orelse) < 0)
            return NULL;
        next(P);
    }
    if (expect_kind(P, JT_BLOCK_END, "expected end of statement block") < 0)
        return NULL;
    return done(P, n);
}

static struct jnode *parse_for(struct parser *P, const struct jtok *at)
{
    static const char *const ends[] = {"else", "endfor", NULL};
    static const char *const end_only[] = {"endfor", NULL};
    struct jnode *n = node(P, JN_FOR, at);
    if (n == NULL)
        return NULL;
    const struct jstr *targets[8];
    size_t nt = 0;
    bool paren = tok_is_op(cur(P), JOP_LPAREN);
    if (paren)
        next(P);
    for (;;) {
        if (cur(P)->kind != JT_NAME || nt == 8) {
            fail_at(P, cur(P), "expected a loop variable name");
            return NULL;
        }
        targets[nt++] = cur(P)->s;
        next(P);
        if (!tok_is_op(cur(P), JOP_COMMA))
            break;
        next(P);
    }
    if (paren && expect_op(P, JOP_RPAREN, "expected ')'") < 0)
        return NULL;
    n->targets = jarena_array(P->a, nt, sizeof *n->targets);
    if (n->targets == NULL) {
        jerr_set(P->err, JERR_NOMEM, 0, 0, "out of memory");
        return NULL;
    }
    memcpy(n->targets, targets, nt * sizeof *targets);
    n->n_targets = nt;
    if (!tok_is_name(cur(P), "in")) {
        fail_at(P, cur(P), "expected 'in'");
        return NULL;
    }
    next(P);
    n->a = parse_tuple(P, false, false, "recursive");
    if (n->a == NULL)
        return NULL;
    if (tok_is_name(cur(P), "recursive")) {
        fail_at(P, cur(P), "recursive loops are not supported");
        return NULL;
    }
    if (tok_is_name(cur(P), "if")) {
        next(P);
        n->b = parse_expression(P, true);
        if (n->b == NULL)
            return NULL;
    }
    if (expect_kind(P, JT_BLOCK_END, "expected end of statement block") < 0)
        return NULL;
    P->loops++;
    int rc = parse_nested(P, ends, &n->body, &n->n_body);
    P->loops--;
    if (rc < 0)
        return NULL;
    if (tok_is_name(cur(P), "else")) {
        next(P);
        if (expect_kind(P, JT_BLOCK_END, "expected end of statement block") < 0 ||
            parse_nested(P, end_only, &n->orelse, &n->n_orelse) < 0)
            return NULL;
    }
    next(P); /* endfor */
    if (expect_kind(P, JT_BLOCK_END, "expected end of statement block") < 0)
        return NULL;
    return done(P, n);
}

static struct jnode *parse_set(struct parser *P, const struct jtok *at)
{
    if (cur(P)->kind != JT_NAME) {
        fail_at(P, cur(P), "expected a variable name after 'set'");
        return NULL;
    }
    const struct jstr *name = cur(P)->s, *attr = NULL;
    next(P);
    if (tok_is_op(cur(P), JOP_DOT)) {
        next(P);
        if (cur(P)->kind != JT_NAME) {
            fail_at(P, cur(P), "expected an attribute name");
            return NULL;
        }
        attr = cur(P)->s;
        next(P);
    }
    if (tok_is_op(cur(P), JOP_ASSIGN)) {
        next(P);
        struct jnode *n = node(P, JN_SET, at);
        if (n == NULL)
            return NULL;
        n->name = name;
        n->name2 = attr;
        n->a = parse_tuple(P, true, false, NULL);
        if (n->a == NULL || expect_kind(P, JT_BLOCK_END, "expected end of statement block") < 0)
            return NULL;
        return done(P, n);
    }
    if (attr != NULL || cur(P)->kind != JT_BLOCK_END) {
        fail_at(P, cur(P), "expected '='");
        return NULL;
    }
    next(P);
    static const char *const ends[] = {"endset", NULL};
    struct jnode *n = node(P, JN_SETBLOCK, at);
    if (n == NULL)
        return NULL;
    n->name = name;
    if (parse_nested(P, ends, &n->body, &n->n_body) < 0)
        return NULL;
    next(P);
    if (expect_kind(P, JT_BLOCK_END, "expected end of statement block") < 0)
        return NULL;
    return done(P, n);
}

static struct jnode *parse_statement(struct parser *P)
{
    const struct jtok *t = cur(P);
    if (t->kind != JT_NAME) {
        fail_at(P, t, "expected a statement name");
        return NULL;
    }
    next(P);
    if (tok_is_name(t, "if"))
        return parse_if(P, t);
    if (tok_is_name(t, "for"))
        return parse_for(P, t);
    if (tok_is_name(t, "set"))
        return parse_set(P, t);
    if (tok_is_name(t, "break") || tok_is_name(t, "continue")) {
        if (P->loops == 0) {
            jerr_set(P->err, JERR_SYNTAX, t->line, t->col, "'%s' outside of a loop", t->s->s);
            return NULL;
        }
        struct jnode *n = node(P, tok_is_name(t, "break") ? JN_BREAK : JN_CONTINUE, t);
        if (n == NULL || expect_kind(P, JT_BLOCK_END, "expected end of statement block") < 0)
            return NULL;
        return done(P, n);
    }
    if (tok_is_name(t, "generation")) {
        /* transformers' {% generation %} marks assistant text; rendering just emits the body */
        static const char *const ends[] = {"endgeneration", NULL};
        struct jnode *n = node(P, JN_BLOCK, t);
        if (n == NULL || expect_kind(P, JT_BLOCK_END, "expected end of statement block") < 0 ||
            parse_nested(P, ends, &n->body, &n->n_body) < 0)
            return NULL;
        next(P);
        if (expect_kind(P, JT_BLOCK_END, "expected end of statement block") < 0)
            return NULL;
        return done(P, n);
    }
    jerr_set(P->err, JERR_SYNTAX, t->line, t->col, "Encountered unknown tag '%.60s'.", t->s->s);
    return NULL;
}

static bool is_end(const struct jtok *t, const char *const *ends)
{
    for (; ends != NULL && *ends != NULL; ends++)
        if (tok_is_name(t, *ends))
            return true;
    return false;
}

static int parse_body(struct parser *P, const char *const *ends, struct jnode ***out, size_t *n_out)
{
    struct nvec body = {0};
    for (;;) {
        const struct jtok *t = cur(P);
        struct jnode *n = NULL;
        if (t->kind == JT_EOF) {
            if (ends != NULL) {
                const char *const *last = ends;
                while (last[1] != NULL)
                    last++;
                jerr_set(P->err, JERR_SYNTAX, t->line, t->col,
                         "Unexpected end of template. Jinja was looking for the tag '%s'.", *last);
                goto fail;
            }
            break;
        } else if (t->kind == JT_TEXT) {
            n = node(P, JN_TEXT, t);
            if (n != NULL)
                n->lit = jv_str(t->s);
            n = done(P, n);
            next(P);
        } else if (t->kind == JT_VAR_BEGIN) {
            next(P);
            n = node(P, JN_OUT, t);
            if (n == NULL)
                goto fail;
            n->a = parse_tuple(P, true, false, NULL);
            if (n->a == NULL || expect_kind(P, JT_VAR_END, "expected end of print statement") < 0)
                goto fail;
            n = done(P, n);
        } else if (t->kind == JT_BLOCK_BEGIN) {
            next(P);
            if (is_end(cur(P), ends))
                break;
            n = parse_statement(P);
        } else {
            fail_at(P, t, "unexpected token");
            goto fail;
        }
        if (n == NULL || nvec_push(P, &body, n) < 0)
            goto fail;
    }
    return nvec_freeze(P, &body, out, n_out);
fail:
    free(body.v);
    return -1;
}

int jinja_parse(struct jtemplate *t, const char *src, size_t len, int max_height, struct jerr *err)
{
    struct jtok *toks;
    size_t n;
    if (jinja_lex(src, len, &t->arena, &toks, &n, err) < 0)
        return -1;
    struct parser P = {.t = toks, .n = n, .a = &t->arena, .err = err, .max_height = max_height};
    int rc = parse_body(&P, NULL, &t->body, &t->n_body);
    free(toks);
    return rc;
}
