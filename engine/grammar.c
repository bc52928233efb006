/* Byte-level context-free grammars for constrained decoding: building and checking a grammar,
 * the matcher's set of parse stacks, and the token mask computed by walking a trie of the
 * vocabulary. JSON Schema is engine/json_schema.c's; sampling is engine/sampler.c's. */
#include "grammar.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- elements ----
 * One uint32 each: the top two bits say what it is. An alternative is a run of elements
 * ending with ELEM_END. */
#define ELEM_END 0u
#define ELEM_REF 1u   /* low 30 bits: rule id */
#define ELEM_RANGE 2u /* bits 0-7: lo, 8-15: hi */
#define ELEM_CLASS 3u /* low 30 bits: index into classes */
#define ELEM_KIND(e) ((e) >> 30)
#define ELEM_VAL(e) ((e) & 0x3FFFFFFFu)
#define ELEM(kind, val) (((uint32_t)(kind) << 30) | (uint32_t)(val))

#define CLASS_HASH_BITS 12

struct alt {
    int32_t rule;
    uint32_t start; /* first element */
};

struct eng_grammar {
    atomic_int refs;     /* eng_grammar_retain / eng_grammar_destroy */
    uint32_t *elems;
    size_t n_elems, cap_elems;
    uint32_t (*classes)[8];
    int32_t n_classes, cap_classes;
    int32_t class_hash[1 << CLASS_HASH_BITS]; /* class index + 1, 0 empty; a cache only */
    struct alt *alts;
    int32_t n_alts, cap_alts;
    int32_t n_rules;
    bool open;      /* an alternative is being built */
    bool finished;
    bool failed;
    /* After finish: rule r's alternatives' starts are alt_start[rule_alt[r] .. rule_alt[r+1]). */
    int32_t *rule_alt;   /* [n_rules + 1] */
    uint32_t *alt_start; /* [n_alts] */
};

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem)
            return ENG_GRAMMAR_ERR_NOMEM;
        c *= 2;
    }
    void *q = realloc(*p, c * elem);
    if (!q)
        return ENG_GRAMMAR_ERR_NOMEM;
    *p = q;
    *cap = c;
    return 0;
}

int eng_grammar_create(struct eng_grammar **out)
{
    if (!out)
        return ENG_GRAMMAR_ERR_INVALID;
    *out = calloc(1, sizeof **out);
    if (!*out)
        return ENG_GRAMMAR_ERR_NOMEM;
    atomic_init(&(*out)->refs, 1);
    return 0;
}

struct eng_grammar *eng_grammar_retain(const struct eng_grammar *g)
{
    if (!g || !g->finished)
        return NULL;
    struct eng_grammar *m = (struct eng_grammar *)g; /* the count is the one mutable part */
    atomic_fetch_add(&m->refs, 1);
    return m;
}

void eng_grammar_destroy(struct eng_grammar *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) > 1)
        return;
    free(g->elems);
    free(g->classes);
    free(g->alts);
    free(g->rule_alt);
    free(g->alt_start);
    free(g);
}

static bool building(const struct eng_grammar *g)
{
    return g && !g->finished && !g->failed;
}

/* A failed building call spoils the grammar being built; a finished one stays untouched (it
 * may be shared read-only). */
static int fail(struct eng_grammar *g, int rc)
{
    if (!g->finished)
        g->failed = true;
    return rc;
}

static int push_elem(struct eng_grammar *g, uint32_t e)
{
    if (g->n_elems >= ENG_GRAMMAR_MAX_ELEMS)
        return fail(g, ENG_GRAMMAR_ERR_TOO_BIG);
    if (grow((void **)&g->elems, &g->cap_elems, g->n_elems + 1, sizeof *g->elems) != 0)
        return fail(g, ENG_GRAMMAR_ERR_NOMEM);
    g->elems[g->n_elems++] = e;
    return 0;
}

int32_t eng_grammar_rule(struct eng_grammar *g)
{
    if (!building(g))
        return ENG_GRAMMAR_ERR_INVALID;
    if (g->n_rules >= ENG_GRAMMAR_MAX_RULES)
        return fail(g, ENG_GRAMMAR_ERR_TOO_BIG);
    return g->n_rules++;
}

int eng_grammar_alt(struct eng_grammar *g, int32_t rule)
{
    if (!building(g) || rule < 0 || rule >= g->n_rules)
        return g ? fail(g, ENG_GRAMMAR_ERR_INVALID) : ENG_GRAMMAR_ERR_INVALID;
    int rc;
    if (g->open && (rc = push_elem(g, ELEM(ELEM_END, 0))) != 0)
        return rc;
    size_t cap = (size_t)g->cap_alts;
    if (grow((void **)&g->alts, &cap, (size_t)g->n_alts + 1, sizeof *g->alts) != 0)
        return fail(g, ENG_GRAMMAR_ERR_NOMEM);
    g->cap_alts = (int32_t)cap;
    g->alts[g->n_alts++] = (struct alt){.rule = rule, .start = (uint32_t)g->n_elems};
    g->open = true;
    return 0;
}

static bool class_empty(const uint32_t set[8])
{
    uint32_t any = 0;
    for (int i = 0; i < 8; i++)
        any |= set[i];
    return any == 0;
}

static uint32_t class_hash(const uint32_t set[8])
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 8; i++)
        h = (h ^ set[i]) * 16777619u;
    return h >> (32 - CLASS_HASH_BITS);
}

int eng_grammar_add_class(struct eng_grammar *g, const uint32_t set[8])
{
    if (!building(g) || !g->open || !set || class_empty(set))
        return g ? fail(g, ENG_GRAMMAR_ERR_INVALID) : ENG_GRAMMAR_ERR_INVALID;
    /* A contiguous range fits in the element itself. */
    int lo = -1, hi = -1;
    bool contiguous = true;
    for (int b = 0; b < 256; b++) {
        bool in = (set[b >> 5] >> (b & 31)) & 1u;
        if (in && lo < 0)
            lo = b;
        if (in && hi >= 0 && hi != b - 1)
            contiguous = false;
        if (in)
            hi = b;
    }
    if (contiguous)
        return push_elem(g, ELEM(ELEM_RANGE, (uint32_t)lo | ((uint32_t)hi << 8)));
    uint32_t h = class_hash(set);
    int32_t k = g->class_hash[h] - 1;
    if (k < 0 || memcmp(g->classes[k], set, sizeof g->classes[k]) != 0) {
        size_t cap = (size_t)g->cap_classes;
        if (g->n_classes >= ENG_GRAMMAR_MAX_RULES)
            return fail(g, ENG_GRAMMAR_ERR_TOO_BIG);
        if (grow((void **)&g->classes, &cap, (size_t)g->n_classes + 1, sizeof *g->classes) != 0)
            return fail(g, ENG_GRAMMAR_ERR_NOMEM);
        g->cap_classes = (int32_t)cap;
        k = g->n_classes++;
        memcpy(g->classes[k], set, sizeof g->classes[k]);
        g->class_hash[h] = k + 1;
    }
    return push_elem(g, ELEM(ELEM_CLASS, (uint32_t)k));
}

int eng_grammar_add_range(struct eng_grammar *g, uint8_t lo, uint8_t hi)
{
    if (!building(g) || !g->open || lo > hi)
        return g ? fail(g, ENG_GRAMMAR_ERR_INVALID) : ENG_GRAMMAR_ERR_INVALID;
    return push_elem(g, ELEM(ELEM_RANGE, (uint32_t)lo | ((uint32_t)hi << 8)));
}

int eng_grammar_add_literal(struct eng_grammar *g, const char *s, size_t len)
{
    if (!building(g) || !g->open || (!s && len > 0))
        return g ? fail(g, ENG_GRAMMAR_ERR_INVALID) : ENG_GRAMMAR_ERR_INVALID;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        int rc = push_elem(g, ELEM(ELEM_RANGE, (uint32_t)c | ((uint32_t)c << 8)));
        if (rc != 0)
            return rc;
    }
    return 0;
}

int eng_grammar_add_ref(struct eng_grammar *g, int32_t rule)
{
    /* Ids past the ceiling would spill into the element's kind bits. */
    if (!building(g) || !g->open || rule < 0 || rule >= ENG_GRAMMAR_MAX_RULES)
        return g ? fail(g, ENG_GRAMMAR_ERR_INVALID) : ENG_GRAMMAR_ERR_INVALID;
    return push_elem(g, ELEM(ELEM_REF, (uint32_t)rule));
}

int32_t eng_grammar_repeat(struct eng_grammar *g, int32_t item, int32_t sep, int64_t min,
                           int64_t max)
{
    if (!building(g) || min < 0 || (max >= 0 && max < min))
        return g ? fail(g, ENG_GRAMMAR_ERR_INVALID) : ENG_GRAMMAR_ERR_INVALID;
    int rc = 0;
    /* more: the items after the first, each preceded by sep. */
    int32_t more = -1;
    int64_t more_min = min > 1 ? min - 1 : 0, more_max = max < 0 ? -1 : max - 1;
    if (max < 0) {
        /* L ::= sep item L | "" */
        if ((more = eng_grammar_rule(g)) < 0)
            return more;
        rc = eng_grammar_alt(g, more);
        if (rc == 0 && sep >= 0)
            rc = eng_grammar_add_ref(g, sep);
        if (rc == 0)
            rc = eng_grammar_add_ref(g, item);
        if (rc == 0)
            rc = eng_grammar_add_ref(g, more);
        if (rc == 0)
            rc = eng_grammar_alt(g, more);
    } else {
        /* O_k ::= sep item O_(k-1) | "", k = 1 .. more_max - more_min */
        for (int64_t k = 1; k <= more_max - more_min && rc == 0; k++) {
            int32_t o = eng_grammar_rule(g);
            if (o < 0)
                return o;
            rc = eng_grammar_alt(g, o);
            if (rc == 0 && sep >= 0)
                rc = eng_grammar_add_ref(g, sep);
            if (rc == 0)
                rc = eng_grammar_add_ref(g, item);
            if (rc == 0 && more >= 0)
                rc = eng_grammar_add_ref(g, more);
            if (rc == 0)
                rc = eng_grammar_alt(g, o);
            more = o;
        }
    }
    int32_t r = rc == 0 ? eng_grammar_rule(g) : rc;
    if (r < 0)
        return r;
    if (min == 0) {
        if ((rc = eng_grammar_alt(g, r)) != 0 || max == 0)
            return rc != 0 ? rc : r;
    }
    rc = eng_grammar_alt(g, r);
    if (rc == 0)
        rc = eng_grammar_add_ref(g, item);
    for (int64_t k = 0; k < more_min && rc == 0; k++) {
        if (sep >= 0)
            rc = eng_grammar_add_ref(g, sep);
        if (rc == 0)
            rc = eng_grammar_add_ref(g, item);
    }
    if (rc == 0 && more >= 0)
        rc = eng_grammar_add_ref(g, more);
    return rc != 0 ? rc : r;
}

/* A least fixpoint over the rules, in time linear in the grammar (a worklist, so that a long
 * chain of rules costs one pass, not one per link). out[r] becomes true for every rule with an
 * alternative whose references are all to true rules and, when nullable, that has no byte
 * class: with nullable, the rules that can derive the empty text; without, the rules some
 * finite text completes (productive). */
static int fixpoint(const struct eng_grammar *g, bool nullable, bool *out)
{
    int32_t R = g->n_rules, A = g->n_alts;
    int64_t *need = calloc((size_t)A, sizeof *need); /* blocking references left; -1: never */
    int32_t *occ_start = calloc((size_t)R + 1, sizeof *occ_start);
    int32_t *queue = malloc(((size_t)R + 1) * sizeof *queue);
    int32_t *occ = NULL;
    int rc = ENG_GRAMMAR_ERR_NOMEM;
    if (!need || !occ_start || !queue)
        goto done;
    size_t n_occ = 0;
    for (int32_t a = 0; a < A; a++)
        for (uint32_t p = g->alts[a].start; g->elems[p] != ELEM(ELEM_END, 0); p++) {
            uint32_t e = g->elems[p];
            if (ELEM_KIND(e) == ELEM_REF) {
                occ_start[ELEM_VAL(e) + 1]++;
                n_occ++;
                if (need[a] >= 0)
                    need[a]++;
            } else if (nullable) {
                need[a] = -1;
            }
        }
    for (int32_t r = 0; r < R; r++)
        occ_start[r + 1] += occ_start[r];
    occ = malloc((n_occ ? n_occ : 1) * sizeof *occ);
    int32_t *fill = malloc(((size_t)R + 1) * sizeof *fill);
    if (!occ || !fill) {
        free(fill);
        goto done;
    }
    memcpy(fill, occ_start, ((size_t)R + 1) * sizeof *fill);
    for (int32_t a = 0; a < A; a++)
        for (uint32_t p = g->alts[a].start; g->elems[p] != ELEM(ELEM_END, 0); p++)
            if (ELEM_KIND(g->elems[p]) == ELEM_REF)
                occ[fill[ELEM_VAL(g->elems[p])]++] = a;
    free(fill);
    memset(out, 0, (size_t)R * sizeof *out);
    int32_t head = 0, tail = 0;
    for (int32_t a = 0; a < A; a++)
        if (need[a] == 0 && !out[g->alts[a].rule]) {
            out[g->alts[a].rule] = true;
            queue[tail++] = g->alts[a].rule;
        }
    while (head < tail) {
        int32_t r = queue[head++];
        for (int32_t k = occ_start[r]; k < occ_start[r + 1]; k++) {
            int32_t a = occ[k];
            if (need[a] > 0 && --need[a] == 0 && !out[g->alts[a].rule]) {
                out[g->alts[a].rule] = true;
                queue[tail++] = g->alts[a].rule;
            }
        }
    }
    rc = 0;
done:
    free(need);
    free(occ_start);
    free(queue);
    free(occ);
    return rc;
}

/* Left edges: rule r -> every rule referenced in r's alternatives before the first element
 * that must consume a byte. A cycle among them is left recursion or a cycle of empty rules,
 * either of which would make the matcher's expansion loop forever. Iterative DFS; post gets
 * the rules in post-order (each after the rules it reaches by left edges). */
static int check_left_recursion(const struct eng_grammar *g, const bool *nullable, int32_t *post)
{
    int32_t R = g->n_rules, n_post = 0;
    uint8_t *color = calloc((size_t)R, 1);
    /* frame: rule, index of its next alternative, position inside it */
    struct frame {
        int32_t rule, alt;
        uint32_t pos;
    } *st = malloc((size_t)R * sizeof *st);
    if (!color || !st) {
        free(color);
        free(st);
        return ENG_GRAMMAR_ERR_NOMEM;
    }
    int rc = 0;
    for (int32_t root = 0; root < R && rc == 0; root++) {
        if (color[root])
            continue;
        int32_t sp = 0;
        st[sp++] = (struct frame){root, g->rule_alt[root], g->alt_start[g->rule_alt[root]]};
        color[root] = 1;
        while (sp > 0 && rc == 0) {
            struct frame *f = &st[sp - 1];
            if (f->alt >= g->rule_alt[f->rule + 1]) {
                color[f->rule] = 2;
                post[n_post++] = f->rule; /* after every rule it reaches by left edges */
                sp--;
                continue;
            }
            uint32_t e = g->elems[f->pos];
            if (ELEM_KIND(e) != ELEM_REF) {
                /* END, or a byte: this alternative has no more left edges. */
                f->alt++;
                if (f->alt < g->rule_alt[f->rule + 1])
                    f->pos = g->alt_start[f->alt];
                continue;
            }
            int32_t t = (int32_t)ELEM_VAL(e);
            if (nullable[t])
                f->pos++; /* later elements are left edges too */
            else {
                f->alt++;
                if (f->alt < g->rule_alt[f->rule + 1])
                    f->pos = g->alt_start[f->alt];
            }
            if (color[t] == 1) {
                rc = ENG_GRAMMAR_ERR_RECURSION;
            } else if (color[t] == 0) {
                color[t] = 1;
                st[sp++] = (struct frame){t, g->rule_alt[t], g->alt_start[g->rule_alt[t]]};
            }
        }
    }
    free(color);
    free(st);
    return rc;
}

/* How many parses entering each rule opens at once, at least (its alternatives' first byte
 * classes, through nullable prefixes), capped past ENG_GRAMMAR_MAX_STACKS: computed in the
 * left-edge post-order, so each rule after those it starts with. A rule past the ceiling
 * would fail every matcher that reaches it, so the grammar is refused instead. */
static int check_breadth(const struct eng_grammar *g, const bool *nullable, const int32_t *post)
{
    int32_t *breadth = calloc((size_t)g->n_rules, sizeof *breadth);
    if (!breadth)
        return ENG_GRAMMAR_ERR_NOMEM;
    int rc = 0;
    for (int32_t i = 0; i < g->n_rules && rc == 0; i++) {
        int32_t r = post[i];
        int64_t b = 0;
        for (int32_t k = g->rule_alt[r]; k < g->rule_alt[r + 1]; k++)
            for (uint32_t p = g->alt_start[k]; g->elems[p] != ELEM(ELEM_END, 0); p++) {
                uint32_t e = g->elems[p];
                if (ELEM_KIND(e) != ELEM_REF) {
                    b++;
                    break;
                }
                b += breadth[ELEM_VAL(e)];
                if (!nullable[ELEM_VAL(e)])
                    break;
            }
        breadth[r] = b > ENG_GRAMMAR_MAX_STACKS ? ENG_GRAMMAR_MAX_STACKS + 1 : (int32_t)b;
        if (breadth[r] > ENG_GRAMMAR_MAX_STACKS)
            rc = ENG_GRAMMAR_ERR_AMBIGUOUS;
    }
    free(breadth);
    return rc;
}

int eng_grammar_finish(struct eng_grammar *g)
{
    if (!building(g) || g->n_rules == 0)
        return g ? fail(g, ENG_GRAMMAR_ERR_INVALID) : ENG_GRAMMAR_ERR_INVALID;
    int rc;
    if (g->open && (rc = push_elem(g, ELEM(ELEM_END, 0))) != 0)
        return rc;
    g->open = false;
    for (size_t i = 0; i < g->n_elems; i++)
        if (ELEM_KIND(g->elems[i]) == ELEM_REF && (int32_t)ELEM_VAL(g->elems[i]) >= g->n_rules)
            return fail(g, ENG_GRAMMAR_ERR_INVALID);
    g->rule_alt = calloc((size_t)g->n_rules + 1, sizeof *g->rule_alt);
    g->alt_start = malloc(((size_t)g->n_alts + 1) * sizeof *g->alt_start);
    bool *nullable = calloc((size_t)g->n_rules, sizeof *nullable);
    if (!g->rule_alt || !g->alt_start || !nullable) {
        free(nullable);
        return fail(g, ENG_GRAMMAR_ERR_NOMEM);
    }
    /* Counting sort of the alternatives by rule, keeping their order within a rule. */
    for (int32_t a = 0; a < g->n_alts; a++)
        g->rule_alt[g->alts[a].rule + 1]++;
    for (int32_t r = 0; r < g->n_rules; r++) {
        if (g->rule_alt[r + 1] == 0) {
            free(nullable);
            return fail(g, ENG_GRAMMAR_ERR_INVALID);
        }
        g->rule_alt[r + 1] += g->rule_alt[r];
    }
    int32_t *fill = malloc((size_t)g->n_rules * sizeof *fill);
    if (!fill) {
        free(nullable);
        return fail(g, ENG_GRAMMAR_ERR_NOMEM);
    }
    memcpy(fill, g->rule_alt, (size_t)g->n_rules * sizeof *fill);
    for (int32_t a = 0; a < g->n_alts; a++)
        g->alt_start[fill[g->alts[a].rule]++] = g->alts[a].start;
    free(fill);
    int32_t *post = malloc((size_t)g->n_rules * sizeof *post);
    rc = post ? fixpoint(g, true, nullable) : ENG_GRAMMAR_ERR_NOMEM;
    if (rc == 0)
        rc = check_left_recursion(g, nullable, post);
    if (rc == 0)
        rc = check_breadth(g, nullable, post);
    /* Productive rules (the array is reused). */
    if (rc == 0)
        rc = fixpoint(g, false, nullable);
    for (int32_t r = 0; r < g->n_rules && rc == 0; r++)
        if (!nullable[r])
            rc = ENG_GRAMMAR_ERR_UNPRODUCTIVE;
    free(post);
    free(nullable);
    if (rc != 0)
        return fail(g, rc);
    g->finished = true;
    return 0;
}

size_t eng_grammar_n_elems(const struct eng_grammar *g)
{
    return g ? g->n_elems : 0;
}

int32_t eng_grammar_n_rules(const struct eng_grammar *g)
{
    return g ? g->n_rules : 0;
}

static void *dup_mem(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

int eng_grammar_clone(const struct eng_grammar *g, struct eng_grammar **out)
{
    if (!out || !g || !g->finished)
        return ENG_GRAMMAR_ERR_INVALID;
    struct eng_grammar *c = calloc(1, sizeof *c);
    if (!c)
        return ENG_GRAMMAR_ERR_NOMEM;
    *c = *g;
    atomic_init(&c->refs, 1);
    c->elems = dup_mem(g->elems, g->n_elems * sizeof *g->elems);
    c->classes = dup_mem(g->classes, (size_t)g->n_classes * sizeof *g->classes);
    c->alts = dup_mem(g->alts, (size_t)g->n_alts * sizeof *g->alts);
    c->rule_alt = dup_mem(g->rule_alt, ((size_t)g->n_rules + 1) * sizeof *g->rule_alt);
    c->alt_start = dup_mem(g->alt_start, ((size_t)g->n_alts + 1) * sizeof *g->alt_start);
    c->cap_elems = g->n_elems;
    c->cap_classes = g->n_classes;
    c->cap_alts = g->n_alts;
    if (!c->elems || !c->classes || !c->alts || !c->rule_alt || !c->alt_start) {
        eng_grammar_destroy(c);
        return ENG_GRAMMAR_ERR_NOMEM;
    }
    *out = c;
    return 0;
}

static bool elem_matches(const struct eng_grammar *g, uint32_t e, uint8_t c)
{
    if (ELEM_KIND(e) == ELEM_RANGE)
        return c >= (e & 0xFFu) && c <= ((e >> 8) & 0xFFu);
    const uint32_t *set = g->classes[ELEM_VAL(e)];
    return (set[c >> 5] >> (c & 31)) & 1u;
}

/* ---- the vocabulary trie ---- */

struct trie_node {
    int32_t first_child, next_sibling; /* -1: none */
    int32_t tok_start, n_tok;          /* ids ending here: vocab->ids[tok_start ..) */
    int32_t sub_start, sub_end;        /* ids here and below: vocab->ids[sub_start, sub_end) */
    uint8_t byte;
};

struct eng_grammar_vocab {
    int64_t vocab;
    struct trie_node *nodes; /* [n_nodes]; 0 is the root (no byte) */
    int32_t n_nodes;
    int32_t *ids;            /* [n_ids] sorted by their text */
    int32_t n_ids;
    int32_t max_len;
    uint32_t (*below)[8];    /* [n_nodes] the bytes on the edges below each node */
    char *text;              /* every id's text, back to back */
    uint32_t *off, *len;     /* [vocab] id's text: text[off .. off + len); len 0: none */
};

struct tok_text {
    int32_t id;
    uint32_t off, len;
    const char *base;
};

static int cmp_text(const void *pa, const void *pb)
{
    const struct tok_text *a = pa, *b = pb;
    uint32_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->base + a->off, b->base + b->off, n);
    if (c != 0)
        return c;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

void eng_grammar_vocab_destroy(struct eng_grammar_vocab *v)
{
    if (!v)
        return;
    free(v->nodes);
    free(v->ids);
    free(v->below);
    free(v->text);
    free(v->off);
    free(v->len);
    free(v);
}

int eng_grammar_vocab_create(const struct eng_tokenizer *tok, int64_t vocab,
                             struct eng_grammar_vocab **out)
{
    if (!out || !tok || vocab < 1 || vocab > INT32_MAX / 2)
        return ENG_GRAMMAR_ERR_INVALID;
    *out = NULL;
    struct eng_grammar_vocab *v = calloc(1, sizeof *v);
    struct tok_text *tt = malloc((size_t)vocab * sizeof *tt);
    char *text = NULL;
    int32_t *last_child = NULL;
    size_t n_text = 0, cap_text = 0;
    int rc = ENG_GRAMMAR_ERR_NOMEM;
    if (!v || !tt)
        goto fail;
    v->vocab = vocab;
    v->off = calloc((size_t)vocab, sizeof *v->off);
    v->len = calloc((size_t)vocab, sizeof *v->len);
    if (!v->off || !v->len)
        goto fail;
    int32_t n = 0;
    for (int32_t id = 0; id < vocab; id++) {
        size_t plen = 0;
        if (!eng_tokenizer_id_to_piece(tok, id, &plen))
            continue;
        if (grow((void **)&text, &cap_text, n_text + plen + 1, 1) != 0)
            goto fail;
        int len = eng_tokenizer_token_bytes(tok, id, text + n_text, plen + 1);
        if (len <= 0)
            continue;
        tt[n++] = (struct tok_text){.id = id, .off = (uint32_t)n_text, .len = (uint32_t)len};
        v->off[id] = (uint32_t)n_text;
        v->len[id] = (uint32_t)len;
        n_text += (size_t)len;
    }
    for (int32_t i = 0; i < n; i++)
        tt[i].base = text;
    qsort(tt, (size_t)n, sizeof *tt, cmp_text);
    v->ids = malloc(((size_t)n + 1) * sizeof *v->ids);
    size_t cap_nodes = 0;
    if (!v->ids || grow((void **)&v->nodes, &cap_nodes, 1, sizeof *v->nodes) != 0)
        goto fail;
    v->nodes[0] = (struct trie_node){.first_child = -1, .next_sibling = -1};
    v->n_nodes = 1;
    /* Sorted insertion: path[d] is the node of the previous text's first d bytes; the new
     * text keeps the common prefix and hangs new nodes below it. A node's children come in
     * byte order, its last child is the latest one made below it. */
    int32_t path[257];
    size_t cap_last = 0;
    uint32_t prev_len = 0;
    const char *prev = NULL;
    path[0] = 0;
    for (int32_t i = 0; i < n; i++) {
        const char *s = text + tt[i].off;
        uint32_t len = tt[i].len;
        if (len > 256)
            continue; /* no piece is this long; a guard for the fixed path */
        uint32_t lcp = 0;
        while (prev && lcp < prev_len && lcp < len && prev[lcp] == s[lcp])
            lcp++;
        for (uint32_t d = lcp; d < len; d++) {
            if (grow((void **)&v->nodes, &cap_nodes, (size_t)v->n_nodes + 1, sizeof *v->nodes) != 0 ||
                grow((void **)&last_child, &cap_last, (size_t)v->n_nodes + 1, sizeof *last_child) != 0)
                goto fail;
            int32_t k = v->n_nodes++, parent = path[d];
            v->nodes[k] = (struct trie_node){.first_child = -1, .next_sibling = -1,
                                             .tok_start = 0, .n_tok = 0, .byte = (uint8_t)s[d]};
            if (v->nodes[parent].first_child < 0)
                v->nodes[parent].first_child = k;
            else
                v->nodes[last_child[parent]].next_sibling = k;
            last_child[parent] = k;
            path[d + 1] = k;
        }
        struct trie_node *end = &v->nodes[path[len]];
        if (end->n_tok == 0)
            end->tok_start = v->n_ids;
        end->n_tok++;
        v->ids[v->n_ids++] = tt[i].id;
        if (len > (uint32_t)v->max_len)
            v->max_len = (int32_t)len;
        prev = s;
        prev_len = len;
    }
    /* Nodes were made in preorder, so a subtree is a run of nodes and its ids a run of ids;
     * children come after their parent, so one backward pass sums the subtrees up. */
    v->below = calloc((size_t)v->n_nodes, sizeof *v->below);
    if (!v->below)
        goto fail;
    for (int32_t k = v->n_nodes - 1; k >= 0; k--) {
        struct trie_node *tn = &v->nodes[k];
        tn->sub_start = tn->n_tok ? tn->tok_start : INT32_MAX;
        tn->sub_end = tn->n_tok ? tn->tok_start + tn->n_tok : 0;
        for (int32_t c = tn->first_child; c >= 0; c = v->nodes[c].next_sibling) {
            const struct trie_node *cn = &v->nodes[c];
            if (cn->sub_start < tn->sub_start)
                tn->sub_start = cn->sub_start;
            if (cn->sub_end > tn->sub_end)
                tn->sub_end = cn->sub_end;
            v->below[k][cn->byte >> 5] |= 1u << (cn->byte & 31);
            for (int i = 0; i < 8; i++)
                v->below[k][i] |= v->below[c][i];
        }
    }
    free(last_child);
    free(tt);
    v->text = text;
    *out = v;
    return 0;
fail:
    free(last_child);
    free(tt);
    free(text);
    eng_grammar_vocab_destroy(v);
    return rc;
}

/* ---- matcher ----
 * A parse is a stack of continuation positions, linked towards the bottom: the top is the
 * byte class to match next; each node below is where to go on when the rule above it ends.
 * A reference in tail position pushes nothing (its rule returns straight to the parent), so
 * right recursion keeps the depth constant. Nodes live in bump arenas: the current set in one
 * of two "keep" arenas (copied into the other after each accepted token, which drops the dead
 * parses), and everything a mask or an advance computes in the scratch arena, released
 * level by level as the trie walk returns. */

struct stack_node {
    uint32_t pos;   /* an element: a byte class for a top, a continuation below */
    uint32_t depth; /* nodes from here to the bottom */
    uint32_t hash;  /* of the positions from here to the bottom: equal stacks, equal hashes */
    const struct stack_node *parent;
};

struct set_info;

struct set {
    const struct stack_node **s; /* [n], room for ENG_GRAMMAR_MAX_STACKS */
    int32_t n;
    bool complete;               /* the text so far is a whole sentence */
    struct set_info *info;       /* a mask's transitions from it (see walk); else NULL */
};

#define ARENA_CHUNK ((size_t)1 << 16)

struct arena {
    char **chunks;
    int32_t n_chunks, cap_chunks;
    int32_t cur;
    size_t off;
};

struct arena_mark {
    int32_t cur;
    size_t off;
};

static void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    if (n > ARENA_CHUNK)
        return NULL;
    if (a->n_chunks == 0 || a->off + n > ARENA_CHUNK) {
        int32_t next = a->n_chunks == 0 ? 0 : a->cur + 1;
        if (next == a->n_chunks) {
            size_t cap = (size_t)a->cap_chunks;
            if (grow((void **)&a->chunks, &cap, (size_t)a->n_chunks + 1, sizeof *a->chunks) != 0)
                return NULL;
            a->cap_chunks = (int32_t)cap;
            if (!(a->chunks[a->n_chunks] = malloc(ARENA_CHUNK)))
                return NULL;
            a->n_chunks++;
        }
        a->cur = next;
        a->off = 0;
    }
    void *p = a->chunks[a->cur] + a->off;
    a->off += n;
    return p;
}

static struct arena_mark arena_mark(const struct arena *a)
{
    return (struct arena_mark){a->cur, a->off};
}

static void arena_release(struct arena *a, struct arena_mark m)
{
    a->cur = m.cur;
    a->off = m.off;
}

static void arena_reset(struct arena *a)
{
    a->cur = 0;
    a->off = 0;
    if (a->n_chunks == 0)
        a->off = ARENA_CHUNK; /* the first alloc makes chunk 0 */
}

static void arena_free(struct arena *a);

/* Resets a, giving back all but a few chunks (a large mask should not stay allocated). */
static void arena_trim(struct arena *a)
{
    while (a->n_chunks > 4)
        free(a->chunks[--a->n_chunks]);
    arena_reset(a);
}

static void arena_free(struct arena *a)
{
    for (int32_t i = 0; i < a->n_chunks; i++)
        free(a->chunks[i]);
    free(a->chunks);
    memset(a, 0, sizeof *a);
}

#define CACHE_SLOTS 16
#define INTERN_BITS 12
#define MASK_WORK_MAX ((uint64_t)1 << 20) /* a mask's expansion steps: tens of ms at most */
#define INTERN_SIZE ((size_t)1 << INTERN_BITS)

struct intern_entry {
    struct set *set;
    uint32_t hash;
};
#define EXPAND_STEPS_MAX (1 << 16)

struct cache_entry {
    uint32_t *key;  /* the set it was computed for (serialize_set) */
    size_t key_len, key_cap;
    uint32_t *mask; /* [words] */
    int64_t n_allowed;
    uint64_t used;  /* clock of the last hit; 0: empty */
};

struct work {
    uint32_t pos;
    const struct stack_node *parent;
};

struct eng_grammar_matcher {
    const struct eng_grammar *g;
    const struct eng_grammar_vocab *v;
    struct arena keep[2];
    int keep_i;
    struct set cur;               /* in keep[keep_i] */
    struct arena tmp;
    struct arena mid[2];          /* accept_bytes: long inputs compact into these in turn */
    struct arena memo_arena;      /* one mask's memoized transitions */
    struct intern_entry *interned; /* [INTERN_SIZE] during a mask, else NULL */
    const struct stack_node *scratch[ENG_GRAMMAR_MAX_STACKS]; /* advance's set being built */
    uint64_t spent;               /* expansion steps and parses made by the current mask */
    struct work *work;
    size_t cap_work;
    uint32_t *key;                /* serialize_set scratch */
    size_t key_len, key_cap;
    struct cache_entry cache[CACHE_SLOTS];
    uint64_t clock;
};

static bool stack_equal(const struct stack_node *a, const struct stack_node *b)
{
    while (a && b) {
        if (a == b)
            return true;
        if (a->pos != b->pos || a->hash != b->hash)
            return false;
        a = a->parent;
        b = b->parent;
    }
    return a == b;
}

static int set_init(struct arena *a, struct set *s)
{
    s->s = arena_alloc(a, ENG_GRAMMAR_MAX_STACKS * sizeof *s->s);
    s->n = 0;
    s->complete = false;
    s->info = NULL;
    return s->s ? 0 : ENG_GRAMMAR_ERR_NOMEM;
}

static struct stack_node *node_new(struct arena *a, uint32_t pos, const struct stack_node *parent)
{
    struct stack_node *n = arena_alloc(a, sizeof *n);
    if (n) {
        uint32_t h = ((parent ? parent->hash : 0x2545F491u) ^ pos) * 0x9E3779B1u;
        *n = (struct stack_node){pos, parent ? parent->depth + 1 : 1, h ^ (h >> 15), parent};
    }
    return n;
}

static int push_work(struct eng_grammar_matcher *m, size_t *nw, uint32_t pos,
                     const struct stack_node *parent)
{
    if (grow((void **)&m->work, &m->cap_work, *nw + 1, sizeof *m->work) != 0)
        return ENG_GRAMMAR_ERR_NOMEM;
    m->work[(*nw)++] = (struct work){pos, parent};
    return 0;
}

/* Adds to out every parse that starts at element pos with parent below it, each with a byte
 * class on top (or the whole text complete). Iterative: the grammar's depth never becomes the
 * C stack's. */
static int expand(struct eng_grammar_matcher *m, struct arena *a, uint32_t pos,
                  const struct stack_node *parent, struct set *out)
{
    const struct eng_grammar *g = m->g;
    size_t nw = 0;
    int rc = push_work(m, &nw, pos, parent);
    long steps = 0;
    while (rc == 0 && nw > 0) {
        struct work w = m->work[--nw];
        uint32_t p = w.pos;
        const struct stack_node *pr = w.parent;
        for (;;) {
            if (++steps > EXPAND_STEPS_MAX)
                return ENG_GRAMMAR_ERR_AMBIGUOUS;
            m->spent++;
            uint32_t e = g->elems[p];
            if (e == ELEM(ELEM_END, 0)) {
                if (!pr) {
                    out->complete = true;
                    break;
                }
                p = pr->pos;
                pr = pr->parent;
                continue;
            }
            if (ELEM_KIND(e) == ELEM_REF) {
                const struct stack_node *cont = pr;
                if (g->elems[p + 1] != ELEM(ELEM_END, 0)) {
                    if ((pr ? pr->depth : 0) + 1 > ENG_GRAMMAR_MAX_DEPTH)
                        break; /* too deep: this parse is dropped */
                    if (!(cont = node_new(a, p + 1, pr)))
                        return ENG_GRAMMAR_ERR_NOMEM;
                }
                int32_t r = (int32_t)ELEM_VAL(e);
                /* Pushed last first, so that alternatives are tried in order. */
                for (int32_t k = g->rule_alt[r + 1] - 1; k >= g->rule_alt[r] && rc == 0; k--)
                    rc = push_work(m, &nw, g->alt_start[k], cont);
                break;
            }
            bool dup = false;
            for (int32_t i = 0; i < out->n && !dup; i++)
                dup = out->s[i]->pos == p && stack_equal(out->s[i]->parent, pr);
            if (!dup) {
                if (out->n >= ENG_GRAMMAR_MAX_STACKS)
                    return ENG_GRAMMAR_ERR_AMBIGUOUS;
                struct stack_node *n = node_new(a, p, pr);
                if (!n)
                    return ENG_GRAMMAR_ERR_NOMEM;
                out->s[out->n++] = n;
            }
            break;
        }
    }
    return rc;
}

/* out = the parses of in after byte c (out's array and nodes from a). */
static int advance(struct eng_grammar_matcher *m, struct arena *a, const struct set *in,
                   uint8_t c, struct set *out)
{
    /* Built in the matcher's scratch, then kept at its exact size: a walk keeps many sets. */
    struct set tmp = {.s = m->scratch};
    int rc = 0;
    for (int32_t i = 0; i < in->n && rc == 0; i++) {
        const struct stack_node *s = in->s[i];
        if (elem_matches(m->g, m->g->elems[s->pos], c))
            rc = expand(m, a, s->pos + 1, s->parent, &tmp);
    }
    m->spent += (uint64_t)tmp.n;
    *out = (struct set){.n = tmp.n, .complete = tmp.complete};
    if (rc == 0 && tmp.n > 0) {
        out->s = arena_alloc(a, (size_t)tmp.n * sizeof *out->s);
        if (!out->s)
            return ENG_GRAMMAR_ERR_NOMEM;
        memcpy(out->s, tmp.s, (size_t)tmp.n * sizeof *out->s);
    }
    return rc;
}

/* A deep copy of the stack into a (sharing is not kept; depth is bounded). */
static const struct stack_node *copy_stack(struct arena *a, const struct stack_node *s)
{
    const struct stack_node *chain[ENG_GRAMMAR_MAX_DEPTH + 1];
    int32_t n = 0;
    for (; s && n <= ENG_GRAMMAR_MAX_DEPTH; s = s->parent)
        chain[n++] = s;
    const struct stack_node *below = NULL;
    while (n > 0) {
        struct stack_node *c = node_new(a, chain[--n]->pos, below);
        if (!c)
            return NULL;
        below = c;
    }
    return below;
}

/* *out = a deep copy of in, in dst (reset first: nothing in it may be referred to). */
static int copy_set(struct arena *dst, const struct set *in, struct set *out)
{
    arena_reset(dst);
    int rc = set_init(dst, out);
    for (int32_t i = 0; i < in->n && rc == 0; i++)
        if (!(out->s[out->n++] = copy_stack(dst, in->s[i])))
            rc = ENG_GRAMMAR_ERR_NOMEM;
    out->complete = in->complete;
    return rc;
}

/* Makes next (built in scratch) the current set, in the other keep arena. */
static int commit(struct eng_grammar_matcher *m, const struct set *next)
{
    struct set s;
    int rc = copy_set(&m->keep[1 - m->keep_i], next, &s);
    if (rc != 0)
        return rc;
    m->cur = s;
    m->keep_i = 1 - m->keep_i;
    return 0;
}

int eng_grammar_matcher_create(const struct eng_grammar *g, const struct eng_grammar_vocab *v,
                               struct eng_grammar_matcher **out)
{
    if (!out || !g || !g->finished)
        return ENG_GRAMMAR_ERR_INVALID;
    *out = NULL;
    struct eng_grammar_matcher *m = calloc(1, sizeof *m);
    if (!m)
        return ENG_GRAMMAR_ERR_NOMEM;
    m->g = g;
    m->v = v;
    arena_reset(&m->keep[0]);
    arena_reset(&m->keep[1]);
    arena_reset(&m->tmp);
    arena_reset(&m->mid[0]);
    arena_reset(&m->mid[1]);
    arena_reset(&m->memo_arena);
    struct set start;
    int rc = set_init(&m->tmp, &start);
    for (int32_t k = g->rule_alt[0]; k < g->rule_alt[1] && rc == 0; k++)
        rc = expand(m, &m->tmp, g->alt_start[k], NULL, &start);
    if (rc == 0)
        rc = commit(m, &start);
    arena_reset(&m->tmp);
    if (rc != 0) {
        eng_grammar_matcher_destroy(m);
        return rc;
    }
    *out = m;
    return 0;
}

void eng_grammar_matcher_destroy(struct eng_grammar_matcher *m)
{
    if (!m)
        return;
    arena_free(&m->keep[0]);
    arena_free(&m->keep[1]);
    arena_free(&m->tmp);
    arena_free(&m->mid[0]);
    arena_free(&m->mid[1]);
    arena_free(&m->memo_arena);
    free(m->work);
    free(m->key);
    for (int i = 0; i < CACHE_SLOTS; i++) {
        free(m->cache[i].key);
        free(m->cache[i].mask);
    }
    free(m);
}

int eng_grammar_matcher_accept_bytes(struct eng_grammar_matcher *m, const char *s, size_t len)
{
    if (!m || (!s && len > 0))
        return ENG_GRAMMAR_ERR_INVALID;
    arena_reset(&m->tmp);
    struct set cur = m->cur, next;
    int rc = 0, mid_i = 0;
    for (size_t i = 0; i < len && rc == 0; i++) {
        rc = advance(m, &m->tmp, &cur, (uint8_t)s[i], &next);
        if (rc == 0 && next.n == 0 && !(next.complete && i + 1 == len))
            rc = ENG_GRAMMAR_ERR_REJECTED;
        cur = next;
        /* Each byte's parses point at the previous byte's, so a long input would keep them
         * all: past a few chunks, the live set moves to a mid arena (the other one holds the
         * previous move, which nothing refers to any more) and the scratch starts over. The
         * current set stays untouched until the whole input is accepted. */
        if (rc == 0 && m->tmp.cur >= 16) {
            rc = copy_set(&m->mid[mid_i], &cur, &next);
            cur = next;
            arena_reset(&m->tmp);
            mid_i = 1 - mid_i;
        }
    }
    if (rc == 0 && len > 0)
        rc = commit(m, &cur);
    arena_reset(&m->tmp);
    return rc;
}

int eng_grammar_matcher_accept_token(struct eng_grammar_matcher *m, int32_t token)
{
    if (!m || !m->v)
        return ENG_GRAMMAR_ERR_INVALID;
    if (token < 0 || token >= m->v->vocab || m->v->len[token] == 0)
        return ENG_GRAMMAR_ERR_REJECTED;
    return eng_grammar_matcher_accept_bytes(m, m->v->text + m->v->off[token], m->v->len[token]);
}

bool eng_grammar_matcher_complete(const struct eng_grammar_matcher *m)
{
    return m && m->cur.complete;
}

bool eng_grammar_matcher_can_continue(const struct eng_grammar_matcher *m)
{
    return m && m->cur.n > 0;
}

/* Whether a and b hold the same parses (in any order). */
static bool set_same(const struct set *a, const struct set *b)
{
    if (a->n != b->n || a->complete != b->complete)
        return false;
    for (int32_t i = 0; i < a->n; i++) {
        bool found = false;
        for (int32_t j = 0; j < b->n && !found; j++)
            found = a->s[i]->pos == b->s[j]->pos && stack_equal(a->s[i]->parent, b->s[j]->parent);
        if (!found)
            return false;
    }
    return true;
}

/* ---- the trie walk ----
 * The walk advances parse sets by one byte per trie edge, and most edges repeat a transition
 * already made: inside a string every plain character leads back to the same parses, and
 * below a bounded repetition every edge at one depth leads to the same next count. So within
 * one mask, sets are interned (equal sets reached by different paths become one), and each
 * interned set keeps its transitions per byte class: bytes that every parse treats alike
 * (all in or all out of each top's class) lead to the same set, computed once. Where a byte
 * leads from the root's set back to it and a whole subtree is made of such bytes, its tokens
 * are allowed at once. Everything here lives in the memo arena for the duration of a mask. */

struct set_info {
    uint8_t cls[256];          /* byte -> class; 0: no parse takes the byte */
    int32_t n_cls;
    struct set *next[256];     /* per class: the interned set after it (NULL: dead) */
    bool done[256];
};

/* Equal parse sets have equal hashes (the sum over their stacks: order does not matter). */
static uint32_t set_hash(const struct set *s)
{
    uint32_t h = s->complete ? 0x68E31DA4u : 0;
    for (int32_t i = 0; i < s->n; i++)
        h += s->s[i]->hash;
    return h;
}

/* The one set of this mask equal to s: an earlier one, or s itself, remembered. */
static struct set *intern(struct eng_grammar_matcher *m, struct set *s, bool *found)
{
    uint32_t h = set_hash(s);
    size_t at = (size_t)((h * 0x9E3779B1u) >> (32 - INTERN_BITS));
    *found = false;
    for (size_t probe = 0; probe < 16; probe++) {
        struct intern_entry *e = &m->interned[(at + probe) & (INTERN_SIZE - 1)];
        if (!e->set) {
            *e = (struct intern_entry){s, h};
            return s;
        }
        if (e->hash == h && set_same(e->set, s)) {
            *found = true;
            return e->set;
        }
    }
    return s; /* table crowded: s stays its own */
}

/* s's byte classes, made on first use. */
static struct set_info *info_of(struct eng_grammar_matcher *m, struct set *s)
{
    if (s->info)
        return s->info;
    struct set_info *in = arena_alloc(&m->memo_arena, sizeof *in);
    if (!in)
        return NULL;
    memset(in, 0, sizeof *in);
    uint64_t sigs[256];
    in->n_cls = 1;
    for (int b = 0; b < 256; b++) {
        uint64_t sig = 0;
        for (int32_t i = 0; i < s->n; i++)
            if (elem_matches(m->g, m->g->elems[s->s[i]->pos], (uint8_t)b))
                sig = (sig ^ (uint64_t)(i + 1)) * 0x100000001B3u + 0x9E3779B97F4A7C15u;
        if (sig == 0)
            continue; /* class 0 */
        int32_t k = 1;
        while (k < in->n_cls && sigs[k] != sig)
            k++;
        if (k == in->n_cls)
            sigs[in->n_cls++] = sig;
        in->cls[b] = (uint8_t)k;
    }
    in->done[0] = true; /* next[0] stays NULL */
    s->info = in;
    return in;
}

/* *to = the interned parses of `from` after byte b (NULL when none survive, or too many). */
static int transition(struct eng_grammar_matcher *m, struct set *from, uint8_t b, struct set **to)
{
    struct set_info *in = info_of(m, from);
    if (!in)
        return ENG_GRAMMAR_ERR_NOMEM;
    uint8_t k = in->cls[b];
    if (in->done[k]) {
        *to = in->next[k];
        return 0;
    }
    /* A mask's work is bounded: a hostile grammar must not hold the engine thread. */
    if (m->spent > MASK_WORK_MAX)
        return ENG_GRAMMAR_ERR_BUDGET;
    struct arena_mark mark = arena_mark(&m->memo_arena);
    struct set *next = arena_alloc(&m->memo_arena, sizeof *next);
    if (!next)
        return ENG_GRAMMAR_ERR_NOMEM;
    int rc = advance(m, &m->memo_arena, from, b, next);
    if (rc != 0 && rc != ENG_GRAMMAR_ERR_AMBIGUOUS)
        return rc;
    if (rc != 0 || (next->n == 0 && !next->complete)) {
        arena_release(&m->memo_arena, mark);
        next = NULL; /* too many parses below this byte: its tokens are left out */
    } else {
        bool found;
        struct set *canon = intern(m, next, &found);
        if (found)
            arena_release(&m->memo_arena, mark);
        next = canon;
    }
    in->next[k] = next;
    in->done[k] = true;
    *to = next;
    return 0;
}

static void allow_ids(const struct eng_grammar_vocab *v, int32_t from, int32_t to, uint32_t *allow)
{
    for (int32_t k = from; k < to; k++)
        allow[v->ids[k] >> 5] |= 1u << (v->ids[k] & 31);
}

static bool subset(const uint32_t a[8], const uint32_t b[8])
{
    for (int i = 0; i < 8; i++)
        if (a[i] & ~b[i])
            return false;
    return true;
}

/* Below trie node `node`, with the parses `in` of the text up to it, sets the bits of every
 * token whose text the grammar allows. self: the bytes leading from root back to root.
 * Returns the count or an error. */
static int64_t walk(struct eng_grammar_matcher *m, const struct set *root, const uint32_t self[8],
                    int32_t node, struct set *in, uint32_t *allow)
{
    const struct eng_grammar_vocab *v = m->v;
    int64_t count = 0;
    for (int32_t c = v->nodes[node].first_child; c >= 0; c = v->nodes[c].next_sibling) {
        const struct trie_node *tn = &v->nodes[c];
        if (in == root && ((self[tn->byte >> 5] >> (tn->byte & 31)) & 1u) &&
            subset(v->below[c], self)) {
            allow_ids(v, tn->sub_start, tn->sub_end, allow);
            count += tn->sub_end - tn->sub_start;
            continue;
        }
        struct set *next;
        int rc = transition(m, in, tn->byte, &next);
        if (rc != 0)
            return rc;
        if (!next)
            continue;
        allow_ids(v, tn->tok_start, tn->tok_start + tn->n_tok, allow);
        count += tn->n_tok;
        if (next->n > 0 && tn->first_child >= 0) {
            int64_t sub = walk(m, root, self, c, next, allow);
            if (sub < 0)
                return sub;
            count += sub;
        }
    }
    return count;
}

/* The whole mask from the current set. */
static int64_t walk_root(struct eng_grammar_matcher *m, uint32_t *allow)
{
    bool found;
    struct set *root = intern(m, &m->cur, &found);
    uint32_t self[8] = {0};
    for (int b = 0; b < 256; b++) {
        struct set *to;
        int rc = transition(m, root, (uint8_t)b, &to);
        if (rc != 0)
            return rc;
        if (to == root)
            self[b >> 5] |= 1u << (b & 31);
    }
    return walk(m, root, self, 0, root, allow);
}

/* m->key = the current set, written out: complete flag, then each stack's positions from the
 * top down, each stack ended by UINT32_MAX. Equal keys mean equal sets (same order). */
static int serialize_set(struct eng_grammar_matcher *m)
{
    m->key_len = 0;
    size_t need = 1;
    for (int32_t i = 0; i < m->cur.n; i++)
        need += m->cur.s[i]->depth + 1;
    if (grow((void **)&m->key, &m->key_cap, need, sizeof *m->key) != 0)
        return ENG_GRAMMAR_ERR_NOMEM;
    m->key[m->key_len++] = m->cur.complete;
    for (int32_t i = 0; i < m->cur.n; i++) {
        for (const struct stack_node *s = m->cur.s[i]; s; s = s->parent)
            m->key[m->key_len++] = s->pos;
        m->key[m->key_len++] = UINT32_MAX;
    }
    return 0;
}

int64_t eng_grammar_matcher_mask(struct eng_grammar_matcher *m, int64_t vocab, uint32_t *allow)
{
    if (!m || !m->v || !allow || vocab != m->v->vocab)
        return ENG_GRAMMAR_ERR_INVALID;
    size_t words = (size_t)(vocab + 31) / 32;
    int rc = serialize_set(m);
    if (rc != 0)
        return rc;
    m->clock++;
    struct cache_entry *slot = &m->cache[0];
    for (int i = 0; i < CACHE_SLOTS; i++) {
        struct cache_entry *c = &m->cache[i];
        if (c->used && c->key_len == m->key_len &&
            memcmp(c->key, m->key, m->key_len * sizeof *m->key) == 0) {
            c->used = m->clock;
            memcpy(allow, c->mask, words * sizeof *allow);
            return c->n_allowed;
        }
        if (c->used < slot->used)
            slot = c;
    }
    memset(allow, 0, words * sizeof *allow);
    arena_reset(&m->tmp);
    /* The memo is scratch of this mask only: a matcher keeps no large table between masks. */
    m->interned = calloc(INTERN_SIZE, sizeof *m->interned);
    m->spent = 0;
    arena_reset(&m->memo_arena);
    int64_t n = m->interned ? walk_root(m, allow) : ENG_GRAMMAR_ERR_NOMEM;
    free(m->interned);
    m->interned = NULL;
    m->cur.info = NULL; /* it pointed into the memo arena */
    arena_trim(&m->memo_arena);
    arena_trim(&m->tmp);
    if (n < 0)
        return n;
    /* Remember it in the least recently used slot; a failed allocation only skips this. */
    if (!slot->mask)
        slot->mask = malloc(words * sizeof *slot->mask);
    if (slot->mask && grow((void **)&slot->key, &slot->key_cap, m->key_len, sizeof *slot->key) == 0) {
        memcpy(slot->mask, allow, words * sizeof *allow);
        memcpy(slot->key, m->key, m->key_len * sizeof *m->key);
        slot->key_len = m->key_len;
        slot->n_allowed = n;
        slot->used = m->clock;
    }
    return n;
}
