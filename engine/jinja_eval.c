/* Evaluator of the Jinja subset: walks the tree from jinja_parse.c, with jinja2's scoping (a
 * for-loop iteration is a fresh scope, if-blocks are not), Python operator semantics on ints,
 * floats, strings and lists, and jinja2's default Undefined. Every node costs one step of a
 * budget. Filters, tests and methods live in jinja_builtins.c. */
#include "jinja.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct jscope {
    struct jscope *parent;
    struct jdict *vars;
};

enum { FLOW_NONE, FLOW_BREAK, FLOW_CONTINUE };

static int rerr(struct jctx *c, const char *msg, const char *a, const char *b)
{
    return jerr_set(c->err, JERR_RENDER, c->line, 0, msg, a, b);
}

static int nomem(struct jctx *c)
{
    return jerr_set(c->err, JERR_LIMIT, c->line, 0, "render memory limit exceeded");
}

int jinja_step(struct jctx *c)
{
    return jinja_charge(c, 1);
}

int jinja_charge(struct jctx *c, uint64_t units)
{
    c->steps = units > UINT64_MAX - c->steps ? UINT64_MAX : c->steps + units;
    if (c->steps > c->max_steps)
        return jerr_set(c->err, JERR_LIMIT, c->line, 0,
                        "template exceeded the limit of %llu evaluation steps",
                        (unsigned long long)c->max_steps);
    return 0;
}

static int undefined_error(struct jctx *c, const struct jv *v)
{
    return jerr_set(c->err, JERR_RENDER, c->line, 0, "'%.80s' is undefined",
                    v->u.s != NULL ? v->u.s->s : "value");
}

static const struct jv *lookup(const struct jctx *c, const struct jstr *name)
{
    for (const struct jscope *s = c->scope; s != NULL; s = s->parent) {
        const struct jv *v = jdict_get(s->vars, name->s, name->len);
        if (v != NULL)
            return v;
    }
    return NULL;
}

static int eval(struct jctx *c, const struct jnode *n, struct jv *out);
static int exec_body(struct jctx *c, struct jnode *const *body, size_t n);

/* ---- arithmetic ------------------------------------------------------------------------- */

static bool intlike(const struct jv *v) { return v->kind == JV_INT || v->kind == JV_BOOL; }
static bool numeric(const struct jv *v) { return intlike(v) || v->kind == JV_FLOAT; }
static int64_t ival(const struct jv *v) { return v->kind == JV_BOOL ? (int64_t)v->u.b : v->u.i; }
static double fval(const struct jv *v) { return v->kind == JV_FLOAT ? v->u.f : (double)ival(v); }

static int overflow(struct jctx *c) { return jerr_set(c->err, JERR_RENDER, c->line, 0, "integer overflow"); }

static int concat_str(struct jctx *c, const struct jstr *a, const struct jstr *b, struct jv *out)
{
    if (a->len > c->max_string || b->len > c->max_string - a->len)
        return jerr_set(c->err, JERR_LIMIT, c->line, 0, "string value exceeds the %zu-byte limit", c->max_string);
    struct jstr *r = jarena_alloc(c->arena, sizeof *r + a->len + b->len + 1);
    if (r == NULL)
        return nomem(c);
    r->len = a->len + b->len;
    memcpy(r->s, a->s, a->len);
    memcpy(r->s + a->len, b->s, b->len);
    r->s[r->len] = '\0';
    *out = jv_str(r);
    return 0;
}

static int repeat(struct jctx *c, const struct jv *seq, int64_t times, struct jv *out)
{
    if (times < 0)
        times = 0;
    if (seq->kind == JV_STR) {
        size_t len = seq->u.s->len;
        if (len != 0 && (uint64_t)times > c->max_string / len)
            return jerr_set(c->err, JERR_LIMIT, c->line, 0, "string value exceeds the %zu-byte limit", c->max_string);
        size_t total = len * (size_t)times;
        struct jstr *r = jarena_alloc(c->arena, sizeof *r + total + 1);
        if (r == NULL)
            return nomem(c);
        for (int64_t i = 0; i < times; i++)
            memcpy(r->s + (size_t)i * len, seq->u.s->s, len);
        r->len = total;
        r->s[total] = '\0';
        *out = jv_str(r);
        return 0;
    }
    size_t n = seq->u.l->n;
    if (n != 0 && (uint64_t)times > (c->max_steps - c->steps) / n)
        return jerr_set(c->err, JERR_LIMIT, c->line, 0, "list repetition exceeds the step limit");
    struct jlist *l = jlist_new(c->arena, n * (size_t)times);
    if (l == NULL)
        return nomem(c);
    l->tuple = seq->u.l->tuple;
    for (int64_t i = 0; i < times; i++)
        memcpy(l->v + (size_t)i * n, seq->u.l->v, n * sizeof *l->v);
    c->steps += n * (uint64_t)times;
    *out = (struct jv){.kind = JV_LIST, .u.l = l};
    return 0;
}

static int binop(struct jctx *c, enum jop op, const struct jv *a, const struct jv *b, struct jv *out)
{
    if (op == JOP_TILDE) {
        struct jv sa, sb;
        if (jv_to_str(c, a, &sa) < 0 || jv_to_str(c, b, &sb) < 0)
            return -1;
        return concat_str(c, sa.u.s, sb.u.s, out);
    }
    if (a->kind == JV_UNDEF)
        return undefined_error(c, a);
    if (b->kind == JV_UNDEF)
        return undefined_error(c, b);
    if (intlike(a) && intlike(b)) {
        int64_t x = ival(a), y = ival(b), r;
        switch (op) {
        case JOP_ADD: if (__builtin_add_overflow(x, y, &r)) return overflow(c); *out = jv_int(r); return 0;
        case JOP_SUB: if (__builtin_sub_overflow(x, y, &r)) return overflow(c); *out = jv_int(r); return 0;
        case JOP_MUL: if (__builtin_mul_overflow(x, y, &r)) return overflow(c); *out = jv_int(r); return 0;
        case JOP_DIV:
            if (y == 0) return rerr(c, "division by zero%s%s", "", "");
            *out = jv_float((double)x / (double)y);
            return 0;
        case JOP_FLOORDIV:
        case JOP_MOD: {
            if (y == 0) return rerr(c, "integer division or modulo by zero%s%s", "", "");
            if (x == INT64_MIN && y == -1) {
                if (op == JOP_MOD) { *out = jv_int(0); return 0; }
                return overflow(c);
            }
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) { q--; m += y; }
            *out = jv_int(op == JOP_FLOORDIV ? q : m);
            return 0;
        }
        case JOP_POW: {
            if (y < 0) { *out = jv_float(pow((double)x, (double)y)); return 0; }
            int64_t acc = 1;
            for (int64_t i = 0; i < y; i++) {
                if (__builtin_mul_overflow(acc, x, &acc)) return overflow(c);
                if (acc == 0 || acc == 1) break;
                if (acc == -1) { acc = (y - i - 1) % 2 == 0 ? -1 : 1; break; }
            }
            *out = jv_int(acc);
            return 0;
        }
        default: break;
        }
    } else if (numeric(a) && numeric(b)) {
        double x = fval(a), y = fval(b);
        switch (op) {
        case JOP_ADD: *out = jv_float(x + y); return 0;
        case JOP_SUB: *out = jv_float(x - y); return 0;
        case JOP_MUL: *out = jv_float(x * y); return 0;
        case JOP_DIV:
            if (y == 0) return rerr(c, "float division by zero%s%s", "", "");
            *out = jv_float(x / y);
            return 0;
        case JOP_FLOORDIV:
        case JOP_MOD: {
            if (y == 0) return rerr(c, "float modulo by zero%s%s", "", "");
            double m = fmod(x, y);
            if (m != 0 && ((m < 0) != (y < 0)))
                m += y;
            *out = jv_float(op == JOP_MOD ? m : floor(x / y));
            return 0;
        }
        case JOP_POW: *out = jv_float(pow(x, y)); return 0;
        default: break;
        }
    } else if (op == JOP_ADD && a->kind == JV_STR && b->kind == JV_STR) {
        return concat_str(c, a->u.s, b->u.s, out);
    } else if (op == JOP_ADD && a->kind == JV_LIST && b->kind == JV_LIST) {
        size_t n = a->u.l->n + b->u.l->n;
        struct jlist *l = jlist_new(c->arena, n);
        if (l == NULL)
            return nomem(c);
        l->tuple = a->u.l->tuple;
        memcpy(l->v, a->u.l->v, a->u.l->n * sizeof *l->v);
        memcpy(l->v + a->u.l->n, b->u.l->v, b->u.l->n * sizeof *l->v);
        *out = (struct jv){.kind = JV_LIST, .u.l = l};
        return 0;
    } else if (op == JOP_MUL && (a->kind == JV_STR || a->kind == JV_LIST) && intlike(b)) {
        return repeat(c, a, ival(b), out);
    } else if (op == JOP_MUL && intlike(a) && (b->kind == JV_STR || b->kind == JV_LIST)) {
        return repeat(c, b, ival(a), out);
    }
    static const char *const sym[] = {"+", "-", "*", "/", "//", "%", "**"};
    return jerr_set(c->err, JERR_RENDER, c->line, 0,
                    "unsupported operand type(s) for %s: '%s' and '%s'",
                    op <= JOP_POW ? sym[op] : "?", jv_type_name(a), jv_type_name(b));
}

static int contains(struct jctx *c, const struct jv *item, const struct jv *box, bool *found)
{
    *found = false;
    switch (box->kind) {
    case JV_STR:
        if (item->kind != JV_STR)
            return rerr(c, "'in <string>' requires string as left operand, not %s%s", jv_type_name(item), "");
        if (jinja_charge(c, JCOST_BYTES(box->u.s->len)) < 0)
            return -1;
        *found = item->u.s->len == 0 ||
                 memmem(box->u.s->s, box->u.s->len, item->u.s->s, item->u.s->len) != NULL;
        return 0;
    case JV_LIST:
        for (size_t i = 0; i < box->u.l->n && !*found; i++) {
            if (jinja_step(c) < 0 || jv_equal(c, item, &box->u.l->v[i], found) < 0)
                return -1;
        }
        return 0;
    case JV_DICT:
    case JV_NS:
        if (jinja_charge(c, JCOST_ITEMS(box->u.d->n)) < 0)
            return -1;
        *found = item->kind == JV_STR && jdict_get(box->u.d, item->u.s->s, item->u.s->len) != NULL;
        return 0;
    case JV_UNDEF: return 0;
    default: return rerr(c, "argument of type '%s' is not iterable%s", jv_type_name(box), "");
    }
}

static int compare(struct jctx *c, const struct jnode *n, struct jv *out)
{
    struct jv left;
    if (eval(c, n->args[0], &left) < 0)
        return -1;
    for (size_t i = 1; i < n->n_args; i++) {
        struct jv right;
        if (eval(c, n->args[i], &right) < 0)
            return -1;
        bool r = false;
        enum jop op = n->ops[i - 1];
        c->line = n->line;
        if (op == JOP_EQ || op == JOP_NE) {
            if (jv_equal(c, &left, &right, &r) < 0)
                return -1;
            r = op == JOP_EQ ? r : !r;
        } else if (op == JOP_IN || op == JOP_NOTIN) {
            if (contains(c, &left, &right, &r) < 0)
                return -1;
            r = op == JOP_IN ? r : !r;
        } else {
            if (left.kind == JV_UNDEF)
                return undefined_error(c, &left);
            if (right.kind == JV_UNDEF)
                return undefined_error(c, &right);
            int s;
            if (jv_compare(c, &left, &right, &s) < 0)
                return -1;
            r = op == JOP_LT ? s < 0 : op == JOP_LE ? s <= 0 : op == JOP_GT ? s > 0 : s >= 0;
        }
        if (!r) {
            *out = jv_bool(false);
            return 0;
        }
        left = right;
    }
    *out = jv_bool(true);
    return 0;
}

/* ---- access ----------------------------------------------------------------------------- */

static int slice_index(struct jctx *c, const struct jnode *e, int64_t *v, bool *given)
{
    *given = false;
    if (e == NULL)
        return 0;
    struct jv x;
    if (eval(c, e, &x) < 0)
        return -1;
    if (x.kind == JV_NONE)
        return 0;
    if (!intlike(&x))
        return rerr(c, "slice indices must be integers or None, not %s%s", jv_type_name(&x), "");
    *v = ival(&x);
    *given = true;
    return 0;
}

/* Python's PySlice_AdjustIndices: clamps start/stop for a sequence of length len. */
static int64_t adjust(int64_t v, bool given, int64_t len, int64_t step, bool is_start)
{
    if (!given)
        return is_start ? (step > 0 ? 0 : len - 1) : (step > 0 ? len : -1);
    if (v < 0) {
        v += len;
        if (v < 0)
            v = step < 0 ? -1 : 0;
    } else if (v >= len) {
        v = step < 0 ? len - 1 : len;
    }
    return v;
}

static int eval_slice(struct jctx *c, const struct jnode *n, struct jv *out)
{
    struct jv obj;
    if (eval(c, n->a, &obj) < 0)
        return -1;
    int64_t s0 = 0, s1 = 0, st = 1;
    bool g0, g1, gs;
    if (slice_index(c, n->b, &s0, &g0) < 0 || slice_index(c, n->c, &s1, &g1) < 0 ||
        slice_index(c, n->d, &st, &gs) < 0)
        return -1;
    c->line = n->line;
    if (!gs)
        st = 1;
    if (st == 0)
        return rerr(c, "slice step cannot be zero%s%s", "", "");
    if (st == INT64_MIN)
        return overflow(c);
    if (obj.kind == JV_UNDEF)
        return undefined_error(c, &obj);
    if (obj.kind != JV_LIST && obj.kind != JV_STR)
        return rerr(c, "'%s' object is not subscriptable%s", jv_type_name(&obj), "");
    const char *s = obj.kind == JV_STR ? obj.u.s->s : NULL;
    size_t slen = obj.kind == JV_STR ? obj.u.s->len : 0;
    if (jinja_charge(c, JCOST_BYTES(slen)) < 0)
        return -1;
    int64_t len = obj.kind == JV_LIST ? (int64_t)obj.u.l->n : (int64_t)jutf8_count(s, slen);
    int64_t a = adjust(s0, g0, len, st, true), b = adjust(s1, g1, len, st, false);
    int64_t count = 0;
    if (st > 0 && a < b)
        count = (b - a - 1) / st + 1;
    else if (st < 0 && a > b)
        count = (a - b - 1) / (-st) + 1;
    c->steps += (uint64_t)count / 16;
    if (jinja_step(c) < 0)
        return -1;
    if (obj.kind == JV_LIST) {
        struct jlist *l = jlist_new(c->arena, (size_t)count);
        if (l == NULL)
            return nomem(c);
        l->tuple = obj.u.l->tuple;
        for (int64_t i = 0; i < count; i++)
            l->v[i] = obj.u.l->v[a + i * st];
        *out = (struct jv){.kind = JV_LIST, .u.l = l};
        return 0;
    }
    if (st == 1) {
        size_t from = jutf8_offset(s, slen, (size_t)a), to = count ? jutf8_offset(s, slen, (size_t)b) : from;
        return jv_make_str(c, s + from, to - from, out);
    }
    /* general step: index every character once */
    size_t *off = malloc(((size_t)len + 1) * sizeof *off);
    if (off == NULL)
        return jerr_set(c->err, JERR_NOMEM, c->line, 0, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < slen; i = jutf8_next(s, slen, i))
        off[k++] = i;
    off[k] = slen;
    struct jbuf buf;
    jbuf_init(c, &buf);
    int rc = 0;
    for (int64_t i = 0; rc == 0 && i < count; i++) {
        int64_t ch = a + i * st;
        rc = jbuf_put(c, &buf, s + off[ch], off[ch + 1] - off[ch]);
    }
    free(off);
    if (rc < 0) {
        jbuf_free(&buf);
        return -1;
    }
    return jbuf_finish(c, &buf, out);
}

static int attr_of_loop(const struct jloop *L, const char *name, struct jv *out)
{
    int64_t i = L->index0, n = L->length;
    if (strcmp(name, "index") == 0) *out = jv_int(i + 1);
    else if (strcmp(name, "index0") == 0) *out = jv_int(i);
    else if (strcmp(name, "revindex") == 0) *out = jv_int(n - i);
    else if (strcmp(name, "revindex0") == 0) *out = jv_int(n - i - 1);
    else if (strcmp(name, "first") == 0) *out = jv_bool(i == 0);
    else if (strcmp(name, "last") == 0) *out = jv_bool(i == n - 1);
    else if (strcmp(name, "length") == 0) *out = jv_int(n);
    else if (strcmp(name, "depth") == 0) *out = jv_int(1);
    else if (strcmp(name, "depth0") == 0) *out = jv_int(0);
    else if (strcmp(name, "previtem") == 0) *out = i > 0 ? L->seq[i - 1] : jv_undef(NULL);
    else if (strcmp(name, "nextitem") == 0) *out = i + 1 < n ? L->seq[i + 1] : jv_undef(NULL);
    else return -1;
    return 0;
}

int jinja_getattr(struct jctx *c, const struct jv *obj, const struct jstr *name, struct jv *out)
{
    *out = jv_undef(name);
    if (obj->kind == JV_DICT || obj->kind == JV_NS) {
        if (jinja_charge(c, JCOST_ITEMS(obj->u.d->n)) < 0)
            return -1;
        const struct jv *v = jdict_get(obj->u.d, name->s, name->len);
        if (v != NULL)
            *out = *v;
    } else if (obj->kind == JV_LOOP) {
        if (attr_of_loop(obj->u.loop, name->s, out) < 0)
            *out = jv_undef(name);
    }
    return 0;
}

int jinja_getitem(struct jctx *c, const struct jv *obj, const struct jv *key, struct jv *out)
{
    *out = jv_undef(NULL);
    if (key->kind == JV_STR && obj->kind != JV_STR && obj->kind != JV_LIST)
        return jinja_getattr(c, obj, key->u.s, out);
    if (!intlike(key))
        return 0;
    int64_t i = ival(key);
    if (obj->kind == JV_LIST) {
        int64_t n = (int64_t)obj->u.l->n;
        if (i < 0)
            i += n;
        if (i >= 0 && i < n)
            *out = obj->u.l->v[i];
    } else if (obj->kind == JV_STR) {
        const char *s = obj->u.s->s;
        size_t len = obj->u.s->len;
        if (jinja_charge(c, JCOST_BYTES(len)) < 0)
            return -1;
        int64_t n = i < 0 ? (int64_t)jutf8_count(s, len) : 0;
        if (i < 0)
            i += n;
        if (i >= 0) {
            size_t from = jutf8_offset(s, len, (size_t)i);
            if (from < len)
                return jv_make_str(c, s + from, jutf8_next(s, len, from) - from, out);
        }
    }
    return 0;
}

/* ---- expressions ------------------------------------------------------------------------ */

static int eval_args(struct jctx *c, const struct jnode *n, struct jargs *a)
{
    struct jv *pos = NULL, *kwv = NULL;
    if (n->n_args != 0 && (pos = jarena_array(c->arena, n->n_args, sizeof *pos)) == NULL)
        return nomem(c);
    if (n->n_kw != 0 && (kwv = jarena_array(c->arena, n->n_kw, sizeof *kwv)) == NULL)
        return nomem(c);
    for (size_t i = 0; i < n->n_args; i++)
        if (eval(c, n->args[i], &pos[i]) < 0)
            return -1;
    for (size_t i = 0; i < n->n_kw; i++)
        if (eval(c, n->kwv[i], &kwv[i]) < 0)
            return -1;
    *a = (struct jargs){.pos = pos, .n_pos = n->n_args, .kw = n->kw, .kwv = kwv, .n_kw = n->n_kw};
    c->line = n->line;
    return 0;
}

static int eval_call(struct jctx *c, const struct jnode *n, struct jv *out)
{
    const struct jnode *f = n->a;
    struct jargs a;
    if (f->kind == JN_ATTR) {
        struct jv obj;
        if (eval(c, f->a, &obj) < 0)
            return -1;
        if (obj.kind == JV_UNDEF) {
            c->line = n->line;
            return undefined_error(c, &obj);
        }
        if (eval_args(c, n, &a) < 0)
            return -1;
        return jinja_call_method(c, &obj, f->name, &a, out);
    }
    if (f->kind == JN_NAME) {
        const struct jv *v = lookup(c, f->name);
        if (v == NULL || v->kind == JV_UNDEF) {
            bool found = false;
            if (eval_args(c, n, &a) < 0)
                return -1;
            if (jinja_call_global(c, f->name, &a, out, &found) < 0)
                return -1;
            if (found)
                return 0;
            struct jv u = jv_undef(f->name);
            return undefined_error(c, &u);
        }
        return rerr(c, "'%s' object is not callable%s", jv_type_name(v), "");
    }
    struct jv v;
    if (eval(c, f, &v) < 0)
        return -1;
    c->line = n->line;
    if (v.kind == JV_UNDEF)
        return undefined_error(c, &v);
    return rerr(c, "'%s' object is not callable%s", jv_type_name(&v), "");
}

static int eval(struct jctx *c, const struct jnode *n, struct jv *out)
{
    c->line = n->line;
    if (jinja_step(c) < 0)
        return -1;
    struct jv x, y;
    switch (n->kind) {
    case JN_LIT: *out = n->lit; return 0;
    case JN_NAME: {
        const struct jv *v = lookup(c, n->name);
        *out = v != NULL ? *v : jv_undef(n->name);
        return 0;
    }
    case JN_LIST:
    case JN_TUPLE: {
        struct jlist *l = jlist_new(c->arena, n->n_args);
        if (l == NULL)
            return nomem(c);
        l->tuple = n->kind == JN_TUPLE;
        for (size_t i = 0; i < n->n_args; i++)
            if (eval(c, n->args[i], &l->v[i]) < 0)
                return -1;
        *out = (struct jv){.kind = JV_LIST, .u.l = l};
        return 0;
    }
    case JN_DICT: {
        struct jdict *d = jdict_new(c->arena, n->n_args);
        if (d == NULL)
            return nomem(c);
        for (size_t i = 0; i < n->n_args; i++) {
            if (eval(c, n->args[i], &x) < 0 || eval(c, n->vals[i], &y) < 0)
                return -1;
            if (x.kind != JV_STR)
                return rerr(c, "dict literal keys must be strings, not %s%s", jv_type_name(&x), "");
            if (jdict_set(c->arena, d, x.u.s, y) < 0)
                return nomem(c);
        }
        *out = (struct jv){.kind = JV_DICT, .u.d = d};
        return 0;
    }
    case JN_ATTR:
        if (eval(c, n->a, &x) < 0)
            return -1;
        c->line = n->line;
        if (x.kind == JV_UNDEF)
            return undefined_error(c, &x);
        return jinja_getattr(c, &x, n->name, out);
    case JN_INDEX:
        if (eval(c, n->a, &x) < 0 || eval(c, n->b, &y) < 0)
            return -1;
        c->line = n->line;
        if (x.kind == JV_UNDEF)
            return undefined_error(c, &x);
        return jinja_getitem(c, &x, &y, out);
    case JN_SLICE: return eval_slice(c, n, out);
    case JN_CALL: return eval_call(c, n, out);
    case JN_FILTER: {
        struct jargs a;
        if (eval(c, n->a, &x) < 0 || eval_args(c, n, &a) < 0)
            return -1;
        return jinja_apply_filter(c, n->id, &x, &a, out);
    }
    case JN_TEST: {
        struct jargs a;
        bool r;
        if (eval(c, n->a, &x) < 0 || eval_args(c, n, &a) < 0 || jinja_apply_test(c, n->id, &x, &a, &r) < 0)
            return -1;
        *out = jv_bool(r);
        return 0;
    }
    case JN_NEG:
    case JN_POS:
        if (eval(c, n->a, &x) < 0)
            return -1;
        c->line = n->line;
        if (x.kind == JV_UNDEF)
            return undefined_error(c, &x);
        if (intlike(&x)) {
            int64_t i = ival(&x);
            if (n->kind == JN_NEG && i == INT64_MIN)
                return overflow(c);
            *out = jv_int(n->kind == JN_NEG ? -i : i);
        } else if (x.kind == JV_FLOAT) {
            *out = jv_float(n->kind == JN_NEG ? -x.u.f : x.u.f);
        } else {
            return rerr(c, "bad operand type for unary %s: '%s'", n->kind == JN_NEG ? "-" : "+", jv_type_name(&x));
        }
        return 0;
    case JN_NOT:
        if (eval(c, n->a, &x) < 0)
            return -1;
        *out = jv_bool(!jv_truthy(&x));
        return 0;
    case JN_AND:
    case JN_OR:
        if (eval(c, n->a, &x) < 0)
            return -1;
        if (jv_truthy(&x) == (n->kind == JN_OR)) {
            *out = x;
            return 0;
        }
        return eval(c, n->b, out);
    case JN_BINOP:
        if (eval(c, n->a, &x) < 0 || eval(c, n->b, &y) < 0)
            return -1;
        c->line = n->line;
        return binop(c, n->op, &x, &y, out);
    case JN_CMP: return compare(c, n, out);
    case JN_COND:
        if (eval(c, n->b, &x) < 0)
            return -1;
        if (jv_truthy(&x))
            return eval(c, n->a, out);
        if (n->c != NULL)
            return eval(c, n->c, out);
        *out = jv_undef(NULL);
        return 0;
    default:
        return jerr_set(c->err, JERR_RENDER, n->line, n->col, "statement used as an expression");
    }
}

/* ---- statements ------------------------------------------------------------------------- */

static int set_var(struct jctx *c, const struct jstr *name, struct jv v)
{
    return jdict_set(c->arena, c->scope->vars, name, v) < 0 ? nomem(c) : 0;
}

/* The items a for loop walks: list items, dict keys, string characters. */
static int iterate(struct jctx *c, const struct jv *v, const struct jv **items, size_t *n)
{
    *items = NULL;
    *n = 0;
    switch (v->kind) {
    case JV_UNDEF: return 0;
    case JV_LIST: *items = v->u.l->v; *n = v->u.l->n; return 0;
    case JV_DICT: {
        struct jv *k = jarena_array(c->arena, v->u.d->n ? v->u.d->n : 1, sizeof *k);
        if (k == NULL)
            return nomem(c);
        for (size_t i = 0; i < v->u.d->n; i++)
            k[i] = jv_str(v->u.d->k[i]);
        *items = k;
        *n = v->u.d->n;
        return 0;
    }
    case JV_STR: {
        const char *s = v->u.s->s;
        size_t len = v->u.s->len, cnt = jutf8_count(s, len);
        struct jv *k = jarena_array(c->arena, cnt ? cnt : 1, sizeof *k);
        if (k == NULL)
            return nomem(c);
        size_t j = 0;
        for (size_t i = 0; i < len; j++) {
            size_t e = jutf8_next(s, len, i);
            if (jv_make_str(c, s + i, e - i, &k[j]) < 0)
                return -1;
            i = e;
        }
        *items = k;
        *n = cnt;
        return 0;
    }
    default: return rerr(c, "'%s' object is not iterable%s", jv_type_name(v), "");
    }
}

static int bind_targets(struct jctx *c, const struct jnode *n, const struct jv *item)
{
    if (n->n_targets == 1)
        return set_var(c, n->targets[0], *item);
    if (item->kind != JV_LIST || item->u.l->n != n->n_targets)
        return rerr(c, "cannot unpack %s into %s loop variables", jv_type_name(item), "several");
    for (size_t i = 0; i < n->n_targets; i++)
        if (set_var(c, n->targets[i], item->u.l->v[i]) < 0)
            return -1;
    return 0;
}

static int exec_for(struct jctx *c, const struct jnode *n)
{
    struct jv seqv;
    if (eval(c, n->a, &seqv) < 0)
        return -1;
    c->line = n->line;
    const struct jv *items;
    size_t count;
    if (iterate(c, &seqv, &items, &count) < 0)
        return -1;
    struct jscope frame = {.parent = c->scope, .vars = jdict_new(c->arena, 8)};
    if (frame.vars == NULL)
        return nomem(c);
    if (n->b != NULL) {
        /* {% for x in xs if cond %}: filter first, so loop.length counts kept items */
        struct jv *kept = jarena_array(c->arena, count ? count : 1, sizeof *kept);
        if (kept == NULL)
            return nomem(c);
        size_t k = 0;
        c->scope = &frame;
        for (size_t i = 0; i < count; i++) {
            struct jv keep;
            frame.vars->n = 0;
            if (bind_targets(c, n, &items[i]) < 0 || eval(c, n->b, &keep) < 0) {
                c->scope = frame.parent;
                return -1;
            }
            if (jv_truthy(&keep))
                kept[k++] = items[i];
        }
        c->scope = frame.parent;
        items = kept;
        count = k;
    }
    if (count == 0)
        return exec_body(c, n->orelse, n->n_orelse);
    struct jloop *loop = jarena_alloc(c->arena, sizeof *loop);
    if (loop == NULL)
        return nomem(c);
    loop->length = (int64_t)count;
    loop->seq = items;
    const struct jstr *loop_name = jstr_new(c->arena, "loop", 4);
    if (loop_name == NULL)
        return nomem(c);
    c->scope = &frame;
    int rc = 0;
    for (size_t i = 0; i < count; i++) {
        loop->index0 = (int64_t)i;
        frame.vars->n = 0; /* each iteration starts from the enclosing scope, as in jinja2 */
        c->line = n->line;
        if (jinja_step(c) < 0 || set_var(c, loop_name, (struct jv){.kind = JV_LOOP, .u.loop = loop}) < 0 ||
            bind_targets(c, n, &items[i]) < 0 || exec_body(c, n->body, n->n_body) < 0) {
            rc = -1;
            break;
        }
        if (c->flow == FLOW_BREAK) {
            c->flow = FLOW_NONE;
            break;
        }
        c->flow = FLOW_NONE;
    }
    c->scope = frame.parent;
    return rc;
}

static int exec_node(struct jctx *c, const struct jnode *n)
{
    c->line = n->line;
    if (jinja_step(c) < 0)
        return -1;
    struct jv v;
    switch (n->kind) {
    case JN_TEXT: return jbuf_put(c, &c->out, n->lit.u.s->s, n->lit.u.s->len);
    case JN_OUT:
        if (eval(c, n->a, &v) < 0)
            return -1;
        return jv_append_str(c, &c->out, &v);
    case JN_IF:
        if (eval(c, n->a, &v) < 0)
            return -1;
        return jv_truthy(&v) ? exec_body(c, n->body, n->n_body) : exec_body(c, n->orelse, n->n_orelse);
    case JN_FOR: return exec_for(c, n);
    case JN_SET: {
        if (eval(c, n->a, &v) < 0)
            return -1;
        c->line = n->line;
        if (n->name2 == NULL)
            return set_var(c, n->name, v);
        const struct jv *ns = lookup(c, n->name);
        if (ns == NULL || ns->kind != JV_NS)
            return rerr(c, "cannot assign attribute on non-namespace object '%s'%s", n->name->s, "");
        return jdict_set(c->arena, ns->u.d, n->name2, v) < 0 ? nomem(c) : 0;
    }
    case JN_SETBLOCK: {
        struct jbuf saved = c->out;
        jbuf_init(c, &c->out);
        int rc = exec_body(c, n->body, n->n_body);
        struct jbuf captured = c->out;
        c->out = saved;
        if (rc < 0) {
            jbuf_free(&captured);
            return -1;
        }
        if (jbuf_finish(c, &captured, &v) < 0)
            return -1;
        return set_var(c, n->name, v);
    }
    case JN_BREAK: c->flow = FLOW_BREAK; return 0;
    case JN_CONTINUE: c->flow = FLOW_CONTINUE; return 0;
    case JN_BLOCK: return exec_body(c, n->body, n->n_body);
    default: return jerr_set(c->err, JERR_RENDER, n->line, n->col, "expression used as a statement");
    }
}

static int exec_body(struct jctx *c, struct jnode *const *body, size_t n)
{
    for (size_t i = 0; i < n && c->flow == FLOW_NONE; i++)
        if (exec_node(c, body[i]) < 0)
            return -1;
    return 0;
}

int jinja_render(struct jctx *c, const struct jtemplate *t, const struct jdict *globals)
{
    struct jscope top = {.parent = NULL, .vars = jdict_new(c->arena, globals->n + 8)};
    if (top.vars == NULL)
        return nomem(c);
    for (size_t i = 0; i < globals->n; i++)
        if (jdict_set(c->arena, top.vars, globals->k[i], globals->v[i]) < 0)
            return nomem(c);
    c->scope = &top;
    c->flow = FLOW_NONE;
    int rc = exec_body(c, t->body, t->n_body);
    c->scope = NULL;
    return rc;
}
