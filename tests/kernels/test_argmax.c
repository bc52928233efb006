/* The argmax op (kern_argmax_params) of the reference and the fast CPU tables against a
 * straightforward argmax written here: random rows, rows with many equal maxima, NaN, +inf,
 * -inf, all -inf and all NaN rows, widths 1, 31 and Phi-3's 32064, padded rows (ldx > dim),
 * canaries around the output, and the calls both tables must reject without writing. Not a
 * test of the sampler (tests/engine/test_sampler_argmax.c ties the two rules together). */
#include "kt_util.h"

#include "../test_util.h"

static struct kern_ops ref_ops, cpu_ops;

/* The expected answer, found differently from the op: the largest non-NaN value first, then
 * its first position; -1 when that value is -inf (or there is nothing). */
static int32_t expected(const float *x, int64_t dim)
{
    float m = -INFINITY;
    for (int64_t i = 0; i < dim; i++)
        if (!isnan(x[i]) && x[i] > m)
            m = x[i];
    if (m == -INFINITY)
        return -1;
    for (int64_t i = 0; i < dim; i++)
        if (x[i] == m)
            return (int32_t)i;
    return -1;
}

/* Row kinds of a case. */
enum row_kind {
    ROW_RANDOM,
    ROW_TIES,          /* one largest value repeated at many positions */
    ROW_NAN,           /* NaNs scattered, one of them before the largest value */
    ROW_POS_INF,       /* several +inf, and NaN */
    ROW_NEG_INF,       /* mostly -inf, one finite value late in the row */
    ROW_ALL_NEG_INF,
    ROW_ALL_NAN,
    ROW_NAN_AND_NEG_INF,
    ROW_SIGNED_ZERO,   /* -0 and +0 tie as the largest */
    ROW_N_KINDS,
};

static void fill_row(struct kt_rng *rng, float *x, int64_t dim, enum row_kind kind)
{
    kt_fill(rng, x, KERN_DTYPE_F32, dim, -5.0f, 5.0f);
    switch (kind) {
    case ROW_RANDOM:
        break;
    case ROW_TIES: {
        /* The same top value at a random set of positions, among them positions that other
         * threads or warps of a block would scan (offsets of 1, 32 and 256), so the winner
         * must come from comparing indices, not from who finished first. */
        int64_t n = 2 + kt_below(rng, 40);
        for (int64_t j = 0; j < n; j++)
            x[kt_below(rng, dim)] = 7.5f;
        int64_t base = kt_below(rng, dim);
        const int64_t offs[] = {0, 1, 32, 256, 257, 1024};
        for (size_t j = 0; j < sizeof offs / sizeof offs[0]; j++)
            if (base + offs[j] < dim)
                x[base + offs[j]] = 7.5f;
        break;
    }
    case ROW_NAN: {
        for (int64_t j = 0; j < 1 + dim / 50; j++)
            x[kt_below(rng, dim)] = NAN;
        int64_t at = kt_below(rng, dim);
        x[at] = 6.0f;
        if (at > 0)
            x[kt_below(rng, at)] = NAN;
        x[0] = NAN;
        break;
    }
    case ROW_POS_INF:
        for (int64_t j = 0; j < 3; j++)
            x[kt_below(rng, dim)] = INFINITY;
        x[kt_below(rng, dim)] = NAN;
        break;
    case ROW_NEG_INF:
        for (int64_t i = 0; i < dim; i++)
            x[i] = -INFINITY;
        x[dim - 1 - kt_below(rng, dim < 40 ? dim : 40)] = -1e30f;
        break;
    case ROW_ALL_NEG_INF:
        for (int64_t i = 0; i < dim; i++)
            x[i] = -INFINITY;
        break;
    case ROW_ALL_NAN:
        for (int64_t i = 0; i < dim; i++)
            x[i] = NAN;
        break;
    case ROW_NAN_AND_NEG_INF:
        for (int64_t i = 0; i < dim; i++)
            x[i] = i % 3 ? -INFINITY : NAN;
        break;
    case ROW_SIGNED_ZERO:
        for (int64_t i = 0; i < dim; i++)
            x[i] = -1.0f - (float)kt_below(rng, 4);
        x[kt_below(rng, dim)] = -0.0f;
        x[kt_below(rng, dim)] = 0.0f;
        break;
    case ROW_N_KINDS:
        break;
    }
}

/* n_rows rows of dim values with row stride ldx (the padding holds values larger than any
 * real one, which must never win), every row kind in turn; both tables on every context. */
static void check_case(struct kt_rng *rng, int64_t n_rows, int64_t dim, int64_t ldx,
                       struct kern_ctx **ctxs, int n_ctx)
{
    float *x = kt_alloc((size_t)(n_rows * ldx) * sizeof *x);
    int32_t *out = kt_alloc((size_t)(n_rows + 1) * sizeof *out);
    int32_t *want = malloc((size_t)n_rows * sizeof *want);
    for (int64_t r = 0; r < n_rows; r++) {
        float *row = x + r * ldx;
        fill_row(rng, row, dim, (enum row_kind)(r % ROW_N_KINDS));
        for (int64_t i = dim; i < ldx; i++)
            row[i] = i % 2 ? INFINITY : 1e30f;
        want[r] = expected(row, dim);
    }
    struct kern_argmax_params p = {.x = x, .out = out, .n_rows = n_rows, .dim = dim, .ldx = ldx};
    const struct kern_ops *tabs[2] = {&ref_ops, &cpu_ops};
    for (int t = 0; t < 2; t++)
        for (int c = 0; c < n_ctx; c++) {
            for (int64_t r = 0; r <= n_rows; r++)
                out[r] = -7;
            int rc = tabs[t]->argmax(ctxs[c], &p);
            CHECK(rc == KERN_OK, "%s argmax %lldx%lld ldx %lld: rc %d", tabs[t]->name,
                  (long long)n_rows, (long long)dim, (long long)ldx, rc);
            int64_t bad = 0;
            for (int64_t r = 0; r < n_rows; r++)
                if (out[r] != want[r]) {
                    if (bad++ < 5)
                        fprintf(stderr, "  %s argmax dim %lld row %lld (kind %d): got %d want %d\n",
                                tabs[t]->name, (long long)dim, (long long)r,
                                (int)(r % ROW_N_KINDS), out[r], want[r]);
                }
            CHECK(bad == 0, "%s argmax %lldx%lld ldx %lld ctx %d: %lld rows wrong", tabs[t]->name,
                  (long long)n_rows, (long long)dim, (long long)ldx, c, (long long)bad);
            CHECK(out[n_rows] == -7, "%s argmax wrote past n_rows", tabs[t]->name);
        }
    CHECK(kt_guard_ok(x) && kt_guard_ok(out), "argmax canary (%lldx%lld)", (long long)n_rows,
          (long long)dim);
    kt_free(x);
    kt_free(out);
    free(want);
}

/* Hand-made rows whose answers are written out, so that the expected() above is checked too. */
static void test_fixed(void)
{
    const float inf = INFINITY, nan = NAN;
    struct {
        float x[6];
        int32_t want;
    } rows[] = {
        {{1, 3, 2, 3, 0, -1}, 1},
        {{nan, 3, nan, 3, 4, 4}, 4},
        {{-inf, -inf, -inf, -inf, -inf, -inf}, -1},
        {{nan, nan, nan, nan, nan, nan}, -1},
        {{nan, -inf, nan, -inf, -inf, nan}, -1},
        {{-inf, -3e38f, nan, inf, 5, inf}, 3},
        {{-0.0f, 0.0f, -1, -2, -3, -4}, 0},
        {{-inf, -inf, -inf, -inf, -inf, -1e-30f}, 5},
    };
    int n = (int)(sizeof rows / sizeof rows[0]);
    for (int i = 0; i < n; i++) {
        CHECK(expected(rows[i].x, 6) == rows[i].want, "test's expected(), row %d", i);
        int32_t out[2] = {-7, -7};
        struct kern_argmax_params p = {.x = rows[i].x, .out = out, .n_rows = 1, .dim = 6, .ldx = 6};
        CHECK(ref_ops.argmax(NULL, &p) == KERN_OK && out[0] == rows[i].want,
              "ref argmax fixed row %d: %d, want %d", i, out[0], rows[i].want);
        out[0] = -7;
        CHECK(cpu_ops.argmax(NULL, &p) == KERN_OK && out[0] == rows[i].want,
              "cpu argmax fixed row %d: %d, want %d", i, out[0], rows[i].want);
    }
}

/* Calls both tables must reject with KERN_ERR_INVALID, writing nothing; and the empty ones. */
static void test_invalid(struct kern_ctx *ctx)
{
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)i;
    int32_t out[8];
    struct kern_argmax_params good = {.x = x, .out = out, .n_rows = 2, .dim = 31, .ldx = 32};
    struct kern_argmax_params bad[7];
    for (int i = 0; i < 7; i++)
        bad[i] = good;
    bad[0].ldx = 30;                  /* ldx < dim */
    bad[1].x = NULL;
    bad[2].out = NULL;
    bad[3].n_rows = -1;
    bad[4].dim = -1;
    bad[5].dim = (int64_t)INT32_MAX + 1; /* an index that int32 cannot hold */
    bad[5].ldx = (int64_t)INT32_MAX + 1;
    bad[6].n_rows = INT64_MAX / 4;    /* overflowing span */
    bad[6].ldx = 64;
    const struct kern_ops *tabs[2] = {&ref_ops, &cpu_ops};
    for (int t = 0; t < 2; t++) {
        CHECK(tabs[t]->argmax(ctx, &good) == KERN_OK && out[0] == 30 && out[1] == 30,
              "%s argmax good call: %d %d", tabs[t]->name, out[0], out[1]);
        for (int i = 0; i < 7; i++) {
            out[0] = -7;
            CHECK(tabs[t]->argmax(ctx, &bad[i]) == KERN_ERR_INVALID, "%s argmax bad[%d] accepted",
                  tabs[t]->name, i);
            CHECK(out[0] == -7, "%s argmax bad[%d] wrote", tabs[t]->name, i);
        }
        CHECK(tabs[t]->argmax(ctx, NULL) == KERN_ERR_INVALID, "%s argmax NULL params",
              tabs[t]->name);
        /* No rows: nothing to do, even without buffers. No columns: every row is -1. */
        struct kern_argmax_params none = {.x = NULL, .out = NULL, .n_rows = 0, .dim = 5, .ldx = 5};
        CHECK(tabs[t]->argmax(ctx, &none) == KERN_OK, "%s argmax of no rows", tabs[t]->name);
        struct kern_argmax_params empty = {.x = NULL, .out = out, .n_rows = 3, .dim = 0, .ldx = 0};
        out[0] = out[1] = out[2] = 5;
        CHECK(tabs[t]->argmax(ctx, &empty) == KERN_OK && out[0] == -1 && out[1] == -1 &&
                  out[2] == -1,
              "%s argmax of empty rows", tabs[t]->name);
    }
}

int main(void)
{
    kern_ops_init_ref(&ref_ops);
    kern_ops_init_ref(&cpu_ops);
    kern_ops_init_cpu(&cpu_ops);
    CHECK(ref_ops.argmax && cpu_ops.argmax, "argmax entry empty");
    struct kern_ctx *one = kern_ctx_create_cpu(1), *three = kern_ctx_create_cpu(3);
    struct kern_ctx *all = kern_ctx_create_cpu(0);
    CHECK(one && three && all, "kern_ctx_create_cpu failed");
    struct kern_ctx *ctxs[4] = {NULL, one, three, all};
    struct kt_rng rng = {20250301};

    test_fixed();
    struct {
        int64_t n_rows, dim, ldx;
    } cases[] = {
        {9, 1, 1},         /* one column: NaN and -inf rows give -1, the others 0 */
        {9, 1, 3},
        {18, 31, 31},
        {18, 31, 40},
        {27, 32064, 32064}, /* Phi-3's vocabulary, every row kind three times */
        {9, 32064, 32067},
        {1, 32064, 32064},
        {3, 5000, 5000},
        {2, 4097, 4100},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&rng, cases[i].n_rows, cases[i].dim, cases[i].ldx, ctxs, 4);
    test_invalid(NULL);
    test_invalid(all);

    kern_ctx_destroy(one);
    kern_ctx_destroy(three);
    kern_ctx_destroy(all);
    return tu_finish("test_argmax");
}
