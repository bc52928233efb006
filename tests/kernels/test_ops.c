/* Walks the kernel op table: every op of the fast CPU table against the reference table over
 * real Phi-3 shapes and awkward ones, with canaries around outputs, NaN-poisoned padding and
 * unused KV slots, and NaN/Inf agreement. Not a benchmark and not a test of the reference
 * itself (tests/kernels/test_ref.c checks that against hand-computed values).
 *
 * Tolerances. The reference accumulates in fp64 and rounds once; the CPU backend accumulates
 * in fp32 (8- or 16-lane partial sums, k chunks, fused multiply-adds). For a dot product of
 * length k the fp32 rounding error with random-sign terms grows like sqrt(k) * 2^-24 times
 * sum|x_i w_i| (the deterministic worst case is k * 2^-24, reached only when every partial sum
 * rounds the same way, which random-sign data does not do); we bound sum|x_i w_i| by the
 * Cauchy-Schwarz product |x|_2 |w|_2 and allow a factor of 4 over sqrt(k), plus one rounding of
 * the result. That is loose enough never to flag correct fp32 code (observed errors sit near
 * 2^-24 |x||w|), yet tight enough to catch a dropped or doubled term (size |x||w|/k on
 * average, larger than 4 sqrt(k) 2^-24 |x||w| for every k below ~26000). Attention adds the
 * softmax: a score error e changes each weight by a relative e, so the output error is about
 * max|v| (2e + sqrt(n) 2^-24 + a few roundings); see attention_tol. */
#include "cpu/cpu.h" /* private: to run the portable inner loops on this CPU too */
#include "kt_util.h"

#include "../test_util.h"

#define U24 0x1p-24

static struct kern_ops ref_ops, cpu_ops;

/* Same class (both NaN, or the same infinity) or both finite and within tol. */
static int agree(float r, float g, double tol)
{
    if (isnan(r) || isnan(g))
        return isnan(r) && isnan(g);
    if (isinf(r) || isinf(g))
        return r == g;
    return fabs((double)r - (double)g) <= tol;
}

/* Compares n values; tol[i] per element (or tol_const when tol is NULL). Reports the first
 * few mismatches and returns how many there were. */
static int64_t compare(const char *what, const float *ref, const float *got, int64_t n,
                       const double *tol, double tol_const)
{
    int64_t bad = 0;
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double t = tol ? tol[i] : tol_const;
        if (!agree(ref[i], got[i], t)) {
            if (bad < 5)
                fprintf(stderr, "  %s[%lld]: ref %.9g got %.9g tol %.3g\n", what, (long long)i,
                        (double)ref[i], (double)got[i], t);
            bad++;
        } else if (isfinite(ref[i]) && t > 0 && fabs((double)ref[i] - (double)got[i]) / t > worst) {
            worst = fabs((double)ref[i] - (double)got[i]) / t;
        }
    }
    CHECK(bad == 0, "%s: %lld of %lld values differ", what, (long long)bad, (long long)n);
    if (getenv("KT_VERBOSE"))
        printf("  %-48s worst error / tolerance = %.3f\n", what, worst);
    return bad;
}

static void fill_f32(float *p, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = v;
}

/* ---------------------------------------------------------------------------------------- */
/* matmul */

struct mm_case {
    int64_t m, n, k, pad_x, pad_y;
    enum kern_dtype dt;
    int accumulate, special;
};

static void check_matmul(struct kt_rng *rng, struct mm_case c, struct kern_ctx **ctxs, int n_ctx)
{
    int64_t ldx = c.k + c.pad_x, ldy = c.n + c.pad_y;
    size_t xs = (size_t)(c.m * ldx), ws = (size_t)(c.n * c.k), ys = (size_t)(c.m * ldy);
    float *x = kt_alloc(xs * sizeof *x);
    void *w = kt_alloc(kt_bytes(c.dt, (int64_t)ws));
    float *y0 = kt_alloc(ys * sizeof *y0);
    float *yr = kt_alloc(ys * sizeof *yr);
    float *yg = kt_alloc(ys * sizeof *yg);
    double *tol = malloc((size_t)(c.m * c.n) * sizeof *tol);
    float *vr = malloc((size_t)(c.m * c.n + 1) * sizeof *vr), *vg = malloc((size_t)(c.m * c.n + 1) * sizeof *vg);
    double *nx = malloc((size_t)(c.m + 1) * sizeof *nx), *nw = malloc((size_t)(c.n + 1) * sizeof *nw);
    /* Padding lanes of x are NaN: reading them would poison the result. Padding lanes of y
     * hold a sentinel that must survive. */
    fill_f32(x, (int64_t)xs, NAN);
    for (int64_t i = 0; i < c.m; i++)
        for (int64_t t = 0; t < c.k; t++)
            x[i * ldx + t] = kt_uniform(rng, -1.0f, 1.0f);
    kt_fill(rng, w, c.dt, (int64_t)ws, -1.0f, 1.0f);
    fill_f32(y0, (int64_t)ys, 12345.0f);
    for (int64_t i = 0; i < c.m; i++)
        for (int64_t j = 0; j < c.n; j++)
            y0[i * ldy + j] = c.accumulate ? kt_uniform(rng, -4.0f, 4.0f) : NAN;
    if (c.special && c.m > 2 && c.n > 2 && c.k > 2) {
        x[0 * ldx + c.k / 2] = INFINITY;       /* row 0: +-Inf (NaN where w is NaN) */
        x[1 * ldx + c.k - 1] = NAN;            /* row 1: NaN */
        kt_set(w, c.dt, (c.n - 1) * c.k, NAN); /* last column: NaN */
    }
    for (int64_t i = 0; i < c.m; i++) {
        double s = 0;
        for (int64_t t = 0; t < c.k; t++)
            s += (double)x[i * ldx + t] * x[i * ldx + t];
        nx[i] = sqrt(s);
    }
    for (int64_t j = 0; j < c.n; j++) {
        double s = 0;
        for (int64_t t = 0; t < c.k; t++) {
            double v = kt_get(w, c.dt, j * c.k + t);
            s += v * v;
        }
        nw[j] = sqrt(s);
    }
    struct kern_matmul_params p = {
        .x = x, .w = w, .w_dtype = c.dt, .y = yr, .m = c.m, .n = c.n, .k = c.k,
        .ldx = ldx, .ldy = ldy, .accumulate = c.accumulate,
    };
    memcpy(yr, y0, ys * sizeof *yr);
    CHECK(ref_ops.matmul(NULL, &p) == KERN_OK, "ref matmul failed");
    for (int64_t i = 0; i < c.m; i++)
        for (int64_t j = 0; j < c.n; j++) {
            double y_in = c.accumulate ? fabs((double)y0[i * ldy + j]) : 0.0;
            tol[i * c.n + j] = U24 * (4.0 * sqrt((double)c.k + 1.0) * (nx[i] * nw[j] + y_in) +
                                      fabs((double)yr[i * ldy + j]));
        }
    for (int ci = 0; ci < n_ctx; ci++) {
        char what[160];
        snprintf(what, sizeof what, "matmul m=%lld n=%lld k=%lld %s%s%s ctx#%d", (long long)c.m,
                 (long long)c.n, (long long)c.k, kern_dtype_name(c.dt),
                 c.accumulate ? " acc" : "", c.special ? " nan/inf" : "", ci);
        memcpy(yg, y0, ys * sizeof *yg);
        p.y = yg;
        CHECK(cpu_ops.matmul(ctxs[ci], &p) == KERN_OK, "%s: cpu matmul failed", what);
        /* Gather the valid lanes into contiguous rows for the comparison. */
        for (int64_t i = 0; i < c.m; i++) {
            memcpy(vr + i * c.n, yr + i * ldy, (size_t)c.n * sizeof *vr);
            memcpy(vg + i * c.n, yg + i * ldy, (size_t)c.n * sizeof *vg);
        }
        compare(what, vr, vg, c.m * c.n, tol, 0.0);
        for (int64_t i = 0; i < c.m; i++)
            for (int64_t j = c.n; j < ldy; j++)
                CHECK(yg[i * ldy + j] == 12345.0f, "%s: padding lane y[%lld, %lld] written", what,
                      (long long)i, (long long)j);
        CHECK(kt_guard_ok(yg), "%s: canary around y overwritten", what);
        if (!c.special)
            for (int64_t i = 0; i < c.m * ldy; i++)
                if (!isfinite(yr[i])) {
                    CHECK(0, "%s: reference not finite at %lld", what, (long long)i);
                    break;
                }
    }
    if (c.special && c.m > 2 && c.n > 2 && c.k > 2) {
        CHECK(isnan(yr[1 * ldy]), "matmul: NaN in x row 1 did not reach y");
        /* Inf times a zero weight (a block format can hold an exact 0) is NaN. */
        CHECK(kt_get(w, c.dt, c.k / 2) != 0.0f ? isinf(yr[0]) : isnan(yr[0]),
              "matmul: Inf in x row 0 did not reach y");
        CHECK(isnan(yr[2 * ldy + c.n - 1]), "matmul: NaN weight did not reach y");
    }
    CHECK(kt_guard_ok(x) && kt_guard_ok(w) && kt_guard_ok(yr), "matmul: input/ref canary");
    kt_free(x);
    kt_free(w);
    kt_free(y0);
    kt_free(yr);
    kt_free(yg);
    free(tol);
    free(vr);
    free(vg);
    free(nx);
    free(nw);
}

/* The R16 formats (ops.h's int8 dot) against the reference. Both backends form the same fp32
 * products dw * d and the same exact integers s, so the only freedom is the order and width
 * of the sum over blocks: the reference sums in fp64 and rounds once, the CPU in fp32 in its
 * own order. With S = sum_b |(dw * d) * s| (computed here from the plain rows, kt_r16_dot),
 * each fp32 product and addition errs by at most 2^-24 of S, and with random signs the total
 * grows like sqrt(blocks) 2^-24 S: 1e-6 S at k = 8192. The bound 1e-5 S leaves ten times that,
 * plus 2^-23 |y| for the two final roundings when y is accumulated into (the reference rounds
 * y + sum once, the CPU its fp32 sum and then y + sum), plus 1e-30 for an S of 0. A single x
 * value rounded to the wrong integer moves y by |dw * d * w_t|, about S / (400 * blocks) for
 * these random rows (|w_t| near 64 against |s| near 24000 for Q8_0, 4 against 1500 for
 * Q4_0): 2.6e-5 S at k = 3072, 1e-5 S at k = 8192, so every wrong rounding shows up to k
 * = 3072 and a systematic one at every k. Q4_K_R16 has two products per block, (f0 * d) * s
 * and (f1 * d) * x_s, and S sums the magnitudes of both; a wrong integer moves y by
 * |(f0 * d) w_t - f1 * d|, about S / (700 * blocks) on kt_fill's random super-blocks: 1.5e-5 S
 * at k = 3072. Q6_K_R16 has a product per 16-value half, (f0 * d) * s; a wrong integer moves
 * y by |f0 * d * (w_t - 32)|, about S / (540 * blocks): 1.9e-5 S at k = 3072. A non-finite x
 * row must be NaN in every column. */
static void check_matmul_r16(struct kt_rng *rng, struct mm_case c, struct kern_ctx **ctxs,
                             int n_ctx)
{
    const enum kern_dtype base = kern_dtype_r16_base(c.dt);
    const int64_t ldx = c.k + c.pad_x, ldy = c.n + c.pad_y;
    const size_t xs = (size_t)(c.m * ldx), ys = (size_t)(c.m * ldy);
    float *x = kt_alloc(xs * sizeof *x);
    void *plain = kt_alloc(kt_bytes(base, c.n * c.k));
    void *w = kt_alloc((size_t)kern_dtype_matrix_bytes(c.dt, c.n, c.k));
    float *y0 = kt_alloc(ys * sizeof *y0), *yr = kt_alloc(ys * sizeof *yr);
    float *yg = kt_alloc(ys * sizeof *yg);
    double *tol = malloc((size_t)(c.m * c.n + 1) * sizeof *tol);
    float *vr = malloc((size_t)(c.m * c.n + 1) * sizeof *vr);
    float *vg = malloc((size_t)(c.m * c.n + 1) * sizeof *vg);
    int8_t *xq = malloc((size_t)c.k + 1);
    float *xd = malloc((size_t)(c.k / KERN_QBLOCK + 1) * sizeof *xd);
    /* Padding lanes of x are NaN (reading one makes its row NaN); those of y hold a sentinel
     * that must survive. */
    fill_f32(x, (int64_t)xs, NAN);
    for (int64_t i = 0; i < c.m; i++)
        for (int64_t t = 0; t < c.k; t++)
            x[i * ldx + t] = kt_uniform(rng, -1.0f, 1.0f);
    kt_fill_r16(rng, w, plain, c.dt, c.n, c.k, -1.0f, 1.0f);
    fill_f32(y0, (int64_t)ys, 12345.0f);
    for (int64_t i = 0; i < c.m; i++)
        for (int64_t j = 0; j < c.n; j++)
            y0[i * ldy + j] = c.accumulate ? kt_uniform(rng, -4.0f, 4.0f) : NAN;
    const int special = c.special && c.m > 2 && c.k > 2;
    if (special) {
        x[0 * ldx + c.k / 2] = INFINITY; /* row 0: Inf */
        x[1 * ldx + c.k - 1] = NAN;      /* row 1: NaN */
    }
    /* Rounding no random row reaches. Row 2's last block is all ties: its largest magnitude
     * 127 makes d = 1 and 1 / d = 1, so q is v rounded half to even, and one tie rounded the
     * other way moves y by about 1e-3 S. Row 3 is tiny everywhere (d below FLT_MIN, 1 / d
     * still finite): every q is 0 and y is exactly its input, which no tolerance would show
     * (the products are near 1e-37), so it is compared exactly below. */
    const int exact_row = special && c.m > 3 ? 3 : -1;
    if (special && c.m > 3) {
        static const float ties[8] = {127.0f, 2.5f, -3.5f, 0.5f, -0.5f, 1.5f, -126.5f, 4.5f};
        for (int t = 0; t < KERN_QBLOCK; t++)
            x[2 * ldx + c.k - KERN_QBLOCK + t] = ties[t % 8];
        for (int64_t t = 0; t < c.k; t++)
            x[3 * ldx + t] = 1.1e-36f * kt_uniform(rng, -1.0f, 1.0f);
    }
    struct kern_matmul_params p = {
        .x = x, .w = w, .w_dtype = c.dt, .y = yr, .m = c.m, .n = c.n, .k = c.k,
        .ldx = ldx, .ldy = ldy, .accumulate = c.accumulate,
    };
    memcpy(yr, y0, ys * sizeof *yr);
    CHECK(ref_ops.matmul(NULL, &p) == KERN_OK, "ref matmul failed");
    for (int64_t i = 0; i < c.m; i++) {
        int finite_row = !(special && i < 2);
        if (finite_row)
            kt_x8_row(x + i * ldx, c.k, xq, xd);
        for (int64_t j = 0; j < c.n; j++) {
            double sum = 0.0, mag = 0.0;
            if (finite_row)
                kt_r16_dot(xq, xd, plain, base, j, c.k, &sum, &mag);
            tol[i * c.n + j] = 1e-5 * mag + 0x1p-23 * fabs((double)yr[i * ldy + j]) + 1e-30;
        }
    }
    for (int ci = 0; ci < n_ctx; ci++) {
        char what[160];
        snprintf(what, sizeof what, "matmul m=%lld n=%lld k=%lld ldx=%lld ldy=%lld %s%s%s ctx#%d",
                 (long long)c.m, (long long)c.n, (long long)c.k, (long long)ldx, (long long)ldy,
                 kern_dtype_name(c.dt), c.accumulate ? " acc" : "", special ? " nan/inf" : "", ci);
        memcpy(yg, y0, ys * sizeof *yg);
        p.y = yg;
        int rc = cpu_ops.matmul(ctxs[ci], &p);
        CHECK(rc == KERN_OK, "%s: cpu matmul failed (%d%s)", what, rc,
              rc == KERN_ERR_UNSUPPORTED ? ": unsupported" : "");
        if (rc != KERN_OK)
            continue;
        for (int64_t i = 0; i < c.m; i++) {
            memcpy(vr + i * c.n, yr + i * ldy, (size_t)c.n * sizeof *vr);
            memcpy(vg + i * c.n, yg + i * ldy, (size_t)c.n * sizeof *vg);
        }
        compare(what, vr, vg, c.m * c.n, tol, 0.0);
        for (int64_t j = 0; exact_row >= 0 && j < c.n; j++)
            if (vg[exact_row * c.n + j] != vr[exact_row * c.n + j]) {
                CHECK(0, "%s: the tiny row's y[%lld] = %g, want %g", what, (long long)j,
                      (double)vg[exact_row * c.n + j], (double)vr[exact_row * c.n + j]);
                break;
            }
        for (int64_t i = 0; i < c.m; i++)
            for (int64_t j = c.n; j < ldy; j++)
                CHECK(yg[i * ldy + j] == 12345.0f, "%s: padding lane y[%lld, %lld] written", what,
                      (long long)i, (long long)j);
        CHECK(kt_guard_ok(yg), "%s: canary around y overwritten", what);
    }
    for (int64_t j = 0; exact_row >= 0 && j < c.n; j++)
        if (yr[exact_row * ldy + j] != (c.accumulate ? y0[exact_row * ldy + j] : 0.0f)) {
            CHECK(0, "matmul %s: the reference's tiny row is not its input", kern_dtype_name(c.dt));
            break;
        }
    /* The reference itself: NaN across the non-finite rows, finite everywhere else. */
    for (int64_t i = 0; i < c.m; i++)
        for (int64_t j = 0; j < c.n; j++)
            if ((special && i < 2) != (isnan(yr[i * ldy + j]) != 0)) {
                CHECK(0, "matmul %s m=%lld n=%lld k=%lld: reference y[%lld, %lld] = %g",
                      kern_dtype_name(c.dt), (long long)c.m, (long long)c.n, (long long)c.k,
                      (long long)i, (long long)j, (double)yr[i * ldy + j]);
                i = c.m;
                break;
            }
    CHECK(kt_guard_ok(x) && kt_guard_ok(w) && kt_guard_ok(plain) && kt_guard_ok(yr),
          "matmul %s: input/ref canary", kern_dtype_name(c.dt));
    kt_free(x);
    kt_free(plain);
    kt_free(w);
    kt_free(y0);
    kt_free(yr);
    kt_free(yg);
    free(tol);
    free(vr);
    free(vg);
    free(xq);
    free(xd);
}

static void test_matmul(struct kt_rng *rng, struct kern_ctx **ctxs, int n_ctx, int with_real)
{
    struct kern_ctx *pool_only[1] = {ctxs[n_ctx - 1]};
    /* Awkward shapes on every context (NULL, 1 thread, several threads). */
    const struct mm_case awkward[] = {
        {1, 1, 1, 0, 0, KERN_DTYPE_F32, 0, 0},
        {1, 33, 111, 0, 0, KERN_DTYPE_BF16, 0, 0},
        {33, 111, 989, 3, 5, KERN_DTYPE_F16, 0, 0},
        {989, 33, 111, 1, 0, KERN_DTYPE_BF16, 1, 0},
        {111, 989, 33, 0, 7, KERN_DTYPE_F32, 1, 0},
        {7, 3, 17, 2, 2, KERN_DTYPE_BF16, 0, 0},
        {5, 7, 0, 0, 1, KERN_DTYPE_F32, 0, 0},
        {5, 7, 0, 0, 1, KERN_DTYPE_F16, 1, 0},
        {33, 130, 300, 4, 3, KERN_DTYPE_BF16, 0, 1},
        {6, 9, 70, 0, 0, KERN_DTYPE_F16, 1, 1},
        {300, 260, 520, 0, 0, KERN_DTYPE_F32, 0, 0},
        /* Q8_0 and Q4_0 (k in whole blocks): decode tiles, a register tile's leftovers, the panel
         * path, k past one 1024-element chunk, NaN/Inf. */
        {1, 33, 96, 0, 0, KERN_DTYPE_Q8_0, 0, 0},
        {3, 17, 32, 1, 2, KERN_DTYPE_Q8_0, 1, 0},
        {33, 111, 992, 3, 5, KERN_DTYPE_Q8_0, 0, 0},
        {989, 33, 64, 1, 0, KERN_DTYPE_Q8_0, 1, 0},
        {5, 7, 0, 0, 1, KERN_DTYPE_Q8_0, 1, 0},
        {33, 130, 320, 4, 3, KERN_DTYPE_Q8_0, 0, 1},
        {300, 260, 1056, 0, 0, KERN_DTYPE_Q8_0, 0, 0},
        {1, 33, 96, 0, 0, KERN_DTYPE_Q4_0, 0, 0},
        {3, 17, 32, 1, 2, KERN_DTYPE_Q4_0, 1, 0},
        {33, 111, 992, 3, 5, KERN_DTYPE_Q4_0, 1, 0},
        {989, 33, 64, 1, 0, KERN_DTYPE_Q4_0, 0, 0},
        {33, 130, 320, 4, 3, KERN_DTYPE_Q4_0, 0, 1},
        {300, 260, 1056, 0, 0, KERN_DTYPE_Q4_0, 1, 0},
        /* The K formats (k in whole 256-element super-blocks), the same paths. */
        {1, 33, 256, 0, 0, KERN_DTYPE_Q4_K, 0, 0},
        {3, 17, 512, 1, 2, KERN_DTYPE_Q4_K, 1, 0},
        {33, 111, 1280, 3, 5, KERN_DTYPE_Q4_K, 0, 0},
        {989, 33, 256, 1, 0, KERN_DTYPE_Q4_K, 1, 0},
        {5, 7, 0, 0, 1, KERN_DTYPE_Q4_K, 1, 0},
        {33, 130, 512, 4, 3, KERN_DTYPE_Q4_K, 0, 1},
        {1, 33, 256, 0, 0, KERN_DTYPE_Q5_K, 1, 0},
        {3, 17, 512, 1, 2, KERN_DTYPE_Q5_K, 0, 0},
        {33, 111, 1280, 3, 5, KERN_DTYPE_Q5_K, 1, 0},
        {989, 33, 256, 1, 0, KERN_DTYPE_Q5_K, 0, 0},
        {33, 130, 512, 4, 3, KERN_DTYPE_Q5_K, 0, 1},
        {1, 33, 256, 0, 0, KERN_DTYPE_Q6_K, 0, 0},
        {3, 17, 512, 1, 2, KERN_DTYPE_Q6_K, 1, 0},
        {33, 111, 1280, 3, 5, KERN_DTYPE_Q6_K, 0, 0},
        {989, 33, 256, 1, 0, KERN_DTYPE_Q6_K, 1, 0},
        {5, 7, 0, 0, 1, KERN_DTYPE_Q6_K, 0, 0},
        {33, 130, 512, 4, 3, KERN_DTYPE_Q6_K, 1, 1},
    };
    for (size_t i = 0; i < sizeof awkward / sizeof awkward[0]; i++)
        check_matmul(rng, awkward[i], ctxs, n_ctx);
    /* The R16 formats (the int8 dot; k in whole blocks): one and several groups of 16 columns
     * and their remainders, decode and prefill row counts with their leftovers, k of one
     * block up to 96 blocks, padded strides, accumulation, NaN/Inf rows, an empty k. */
    const struct mm_case r16[] = {
        {1, 1, 32, 0, 0, 0, 0, 0},     {1, 15, 96, 3, 1, 0, 1, 0},
        {3, 16, 1024, 0, 2, 0, 0, 1},  {4, 17, 1056, 5, 0, 0, 1, 0},
        {5, 40, 3072, 1, 3, 0, 0, 1},  {33, 130, 96, 2, 0, 0, 1, 1},
        {300, 17, 1056, 0, 1, 0, 0, 0}, {300, 130, 3072, 4, 5, 0, 1, 1},
        {33, 1, 1024, 0, 0, 0, 0, 0},  {5, 16, 32, 0, 0, 0, 1, 1},
        {4, 40, 96, 0, 0, 0, 0, 1},    {3, 130, 32, 7, 0, 0, 1, 0},
        {5, 7, 0, 0, 1, 0, 1, 0},      {300, 1, 96, 0, 0, 0, 0, 1},
    };
    static const enum kern_dtype r16_dts[5] = {KERN_DTYPE_Q8_0_R16, KERN_DTYPE_Q4_0_R16,
                                               KERN_DTYPE_Q4_K_R16, KERN_DTYPE_Q5_K_R16,
                                               KERN_DTYPE_Q6_K_R16};
    for (size_t di = 0; di < sizeof r16_dts / sizeof r16_dts[0]; di++)
        for (size_t i = 0; i < sizeof r16 / sizeof r16[0]; i++) {
            struct mm_case c = r16[i];
            c.dt = r16_dts[di];
            if (kern_dtype_block_elems(kern_dtype_r16_base(c.dt)) == KERN_QKBLOCK)
                /* whole super-blocks: 32, 96 -> 256, 1056 -> 1280 */
                c.k = (c.k + KERN_QKBLOCK - 1) / KERN_QKBLOCK * KERN_QKBLOCK;
            check_matmul_r16(rng, c, ctxs, n_ctx);
        }
    /* The K formats at two super-blocks, which the rounded list above lacks. */
    const struct mm_case q4k_r16 = {5, 17, 512, 2, 1, KERN_DTYPE_Q4_K_R16, 1, 1};
    const struct mm_case q5k_r16 = {5, 17, 512, 2, 1, KERN_DTYPE_Q5_K_R16, 0, 1};
    const struct mm_case q6k_r16 = {5, 17, 512, 2, 1, KERN_DTYPE_Q6_K_R16, 1, 1};
    check_matmul_r16(rng, q4k_r16, ctxs, n_ctx);
    check_matmul_r16(rng, q5k_r16, ctxs, n_ctx);
    check_matmul_r16(rng, q6k_r16, ctxs, n_ctx);
    /* Phi-3 projections: mini qkv (3072 -> 9216) and down (8192 -> 3072), small qkv (4096),
     * medium qkv (5120 -> 7680), the lm head (3072 -> 32064); decode (m = 1) and a chunk
     * (m = 33). Only the pool context, and only when with_real: the reference dominates the
     * run time, and the awkward shapes above already reach every code path. */
    if (!with_real)
        return;
    const struct mm_case real[] = {
        {1, 9216, 3072, 0, 0, KERN_DTYPE_BF16, 0, 0},
        {1, 3072, 8192, 0, 0, KERN_DTYPE_F16, 1, 0},
        {1, 32064, 3072, 0, 0, KERN_DTYPE_BF16, 0, 0},
        {1, 4096, 4096, 0, 0, KERN_DTYPE_F32, 0, 0},
        {33, 7680, 5120, 0, 0, KERN_DTYPE_BF16, 0, 0},
        {33, 3072, 8192, 0, 0, KERN_DTYPE_F16, 1, 0},
        {33, 5120, 1024, 0, 0, KERN_DTYPE_F32, 0, 0},
        {1, 9216, 3072, 0, 0, KERN_DTYPE_Q8_0, 0, 0},
        {33, 3072, 8192, 0, 0, KERN_DTYPE_Q8_0, 1, 0},
        {1, 3072, 8192, 0, 0, KERN_DTYPE_Q4_0, 0, 0},
        {33, 9216, 3072, 0, 0, KERN_DTYPE_Q4_0, 0, 0},
        {1, 9216, 3072, 0, 0, KERN_DTYPE_Q4_K, 0, 0},
        {33, 3072, 8192, 0, 0, KERN_DTYPE_Q5_K, 0, 0},
        {1, 3072, 8192, 0, 0, KERN_DTYPE_Q6_K, 1, 0},
    };
    for (size_t i = 0; i < sizeof real / sizeof real[0]; i++)
        check_matmul(rng, real[i], pool_only, 1);
    /* The R16 formats at m = 1 and 5 (a full register tile of 4 and a leftover row): their
     * reference reads every value through the interleaving, so 33 rows would cost minutes. */
    const struct mm_case real_r16[] = {
        {1, 9216, 3072, 0, 0, KERN_DTYPE_Q8_0_R16, 0, 0},
        {5, 9216, 3072, 0, 0, KERN_DTYPE_Q8_0_R16, 0, 0},
        {1, 3072, 8192, 0, 0, KERN_DTYPE_Q8_0_R16, 1, 0},
        {5, 3072, 8192, 0, 0, KERN_DTYPE_Q8_0_R16, 1, 0},
        {1, 9216, 3072, 0, 0, KERN_DTYPE_Q4_0_R16, 1, 0},
        {5, 9216, 3072, 0, 0, KERN_DTYPE_Q4_0_R16, 0, 0},
        {1, 3072, 8192, 0, 0, KERN_DTYPE_Q4_0_R16, 0, 0},
        {5, 3072, 8192, 0, 0, KERN_DTYPE_Q4_0_R16, 1, 0},
        {1, 9216, 3072, 0, 0, KERN_DTYPE_Q4_K_R16, 0, 0},
        {5, 9216, 3072, 0, 0, KERN_DTYPE_Q4_K_R16, 1, 0},
        {1, 3072, 8192, 0, 0, KERN_DTYPE_Q4_K_R16, 1, 0},
        {5, 3072, 8192, 0, 0, KERN_DTYPE_Q4_K_R16, 0, 0},
        {1, 9216, 3072, 0, 0, KERN_DTYPE_Q5_K_R16, 0, 0},
        {5, 3072, 8192, 0, 0, KERN_DTYPE_Q5_K_R16, 1, 0},
        {1, 3072, 8192, 0, 0, KERN_DTYPE_Q6_K_R16, 0, 0},
        {5, 9216, 3072, 0, 0, KERN_DTYPE_Q6_K_R16, 1, 0},
    };
    for (size_t i = 0; i < sizeof real_r16 / sizeof real_r16[0]; i++)
        check_matmul_r16(rng, real_r16[i], pool_only, 1);
}

/* ---------------------------------------------------------------------------------------- */
/* attention */

#define AT_MAX_SEQS 6

struct at_case {
    const char *name;
    int64_t n_heads, n_kv, d, block_size, window;
    enum kern_dtype dt;
    int n_seqs;
    int32_t q_len[AT_MAX_SEQS], ctx_len[AT_MAX_SEQS];
    float q_amp; /* q amplitude: larger makes the softmax peakier */
    int special;
};

static void check_attention(struct kt_rng *rng, const struct at_case *c, struct kern_ctx **ctxs,
                            int n_ctx)
{
    int64_t d = c->d, n_kv = c->n_kv, kv_row = n_kv * d, group = c->n_heads / n_kv;
    int64_t q_row = c->n_heads * d, q_stride = q_row + 8;
    int32_t q_start[AT_MAX_SEQS], blocks_of[AT_MAX_SEQS];
    /* Queries: sequences laid out with one foreign row between them (no sequence owns it, so
     * no backend may write it) and sequence 0 placed last to break any ordering assumption. */
    int64_t n_tokens = 0, max_blocks = 0, total_blocks = 3; /* 3 spare blocks, never used */
    for (int s = 1; s <= c->n_seqs; s++) {
        int si = s % c->n_seqs;
        q_start[si] = (int32_t)(n_tokens + 1);
        n_tokens += 1 + c->q_len[si];
    }
    for (int s = 0; s < c->n_seqs; s++) {
        blocks_of[s] = (int32_t)((c->ctx_len[s] + c->block_size - 1) / c->block_size);
        if (blocks_of[s] + 2 > max_blocks)
            max_blocks = blocks_of[s] + 2;
        total_blocks += blocks_of[s];
    }
    int64_t n_slots = total_blocks * c->block_size;
    /* Block ids: a shuffled permutation handed out in order, so tables are non-contiguous. */
    int32_t *perm = malloc((size_t)total_blocks * sizeof *perm);
    for (int64_t i = 0; i < total_blocks; i++)
        perm[i] = (int32_t)i;
    for (int64_t i = total_blocks - 1; i > 0; i--) {
        int64_t j = kt_below(rng, i + 1);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int32_t *bt = kt_alloc((size_t)(c->n_seqs * max_blocks) * sizeof *bt);
    int64_t next = 0;
    for (int s = 0; s < c->n_seqs; s++)
        for (int64_t b = 0; b < max_blocks; b++)
            /* Entries past the last used block are garbage the kernel must not follow. */
            bt[s * max_blocks + b] = b < blocks_of[s] ? perm[next++] : 0x3fffffff;
    /* The cache: every slot NaN, then the positions < ctx_len of each sequence filled. */
    size_t es = kern_dtype_size(c->dt);
    void *kc = kt_alloc((size_t)(n_slots * kv_row) * es);
    void *vc = kt_alloc((size_t)(n_slots * kv_row) * es);
    for (int64_t i = 0; i < n_slots * kv_row; i++) {
        kt_set(kc, c->dt, i, NAN);
        kt_set(vc, c->dt, i, NAN);
    }
    for (int s = 0; s < c->n_seqs; s++)
        for (int64_t pos = 0; pos < c->ctx_len[s]; pos++) {
            int64_t slot = (int64_t)bt[s * max_blocks + pos / c->block_size] * c->block_size +
                           pos % c->block_size;
            kt_fill(rng, (char *)kc + (size_t)(slot * kv_row) * es, c->dt, kv_row, -1.0f, 1.0f);
            kt_fill(rng, (char *)vc + (size_t)(slot * kv_row) * es, c->dt, kv_row, -1.0f, 1.0f);
        }
    float *q = kt_alloc((size_t)(n_tokens * q_stride) * sizeof *q);
    fill_f32(q, n_tokens * q_stride, NAN); /* padding lanes and foreign rows */
    for (int s = 0; s < c->n_seqs; s++)
        for (int64_t i = 0; i < c->q_len[s]; i++)
            for (int64_t e = 0; e < q_row; e++)
                q[(q_start[s] + i) * q_stride + e] = kt_uniform(rng, -c->q_amp, c->q_amp);
    int nan_tok = -1;
    if (c->special) {
        /* NaN in one lane of one query head; Inf in one key of sequence 1 (kv head 0). */
        nan_tok = q_start[0];
        q[nan_tok * q_stride + 1 * d + 3] = NAN;
        int64_t slot = (int64_t)bt[1 * max_blocks] * c->block_size + 0;
        kt_set(kc, c->dt, slot * kv_row + 0, INFINITY);
    }
    int64_t out_n = n_tokens * q_row;
    float *out_r = kt_alloc((size_t)out_n * sizeof *out_r);
    float *out_g = kt_alloc((size_t)out_n * sizeof *out_g);
    double *tol = malloc((size_t)out_n * sizeof *tol);
    struct kern_attention_params p = {
        .q = q, .k_cache = kc, .v_cache = vc, .cache_dtype = c->dt, .out = out_r,
        .q_start = q_start, .q_len = c->q_len, .ctx_len = c->ctx_len, .block_tables = bt,
        .n_tokens = n_tokens, .n_seqs = c->n_seqs, .n_heads = c->n_heads, .n_kv_heads = n_kv,
        .head_dim = d, .q_stride = q_stride, .max_blocks = max_blocks,
        .block_size = c->block_size, .n_slots = n_slots, .sliding_window = c->window,
        .scale = (float)(1.0 / sqrt((double)d)),
    };
    fill_f32(out_r, out_n, -777.0f);
    CHECK(ref_ops.attention(NULL, &p) == KERN_OK, "%s: ref attention failed", c->name);
    /* Tolerance per output row (see the file comment): S bounds every |score| by
     * Cauchy-Schwarz, V = max |v| over the visible keys, n their number. */
    for (int64_t i = 0; i < out_n; i++)
        tol[i] = 0.0;
    for (int s = 0; s < c->n_seqs; s++)
        for (int64_t i = 0; i < c->q_len[s]; i++) {
            int64_t tok = q_start[s] + i, pos = c->ctx_len[s] - c->q_len[s] + i;
            int64_t lo = c->window > 0 && pos - c->window + 1 > 0 ? pos - c->window + 1 : 0;
            for (int64_t h = 0; h < c->n_heads; h++) {
                double qn = 0, kn = 0, vmax = 0;
                for (int64_t e = 0; e < d; e++)
                    qn += (double)q[tok * q_stride + h * d + e] * q[tok * q_stride + h * d + e];
                for (int64_t j = lo; j <= pos; j++) {
                    int64_t slot = (int64_t)bt[s * max_blocks + j / c->block_size] * c->block_size +
                                   j % c->block_size;
                    double kk = 0;
                    for (int64_t e = 0; e < d; e++) {
                        double kv = kt_get(kc, c->dt, slot * kv_row + (h / group) * d + e);
                        double vv = fabs(kt_get(vc, c->dt, slot * kv_row + (h / group) * d + e));
                        kk += kv * kv;
                        vmax = vv > vmax ? vv : vmax;
                    }
                    kn = kk > kn ? kk : kn;
                }
                double sc = p.scale * sqrt(qn) * sqrt(kn), n = (double)(pos - lo + 1);
                for (int64_t e = 0; e < d; e++) {
                    int64_t o = (tok * c->n_heads + h) * d + e;
                    tol[o] = U24 * (vmax * (8.0 * sqrt((double)d) * sc + 4.0 * sqrt(n) +
                                            2.0 * (n / 64.0 + 1.0) + 8.0) +
                                    fabs((double)out_r[o]));
                }
            }
        }
    if (!c->special) {
        int64_t nonfinite = 0;
        for (int s = 0; s < c->n_seqs; s++)
            for (int64_t i = 0; i < c->q_len[s] * q_row; i++)
                nonfinite += !isfinite(out_r[q_start[s] * q_row + i]);
        CHECK(nonfinite == 0, "%s: reference read a poisoned slot (%lld non-finite)", c->name,
              (long long)nonfinite);
    } else {
        CHECK(isnan(out_r[(nan_tok * c->n_heads + 1) * d]), "%s: NaN query did not propagate",
              c->name);
        CHECK(!isnan(out_r[(nan_tok * c->n_heads + 0) * d]), "%s: NaN leaked to another head",
              c->name);
    }
    for (int ci = 0; ci < n_ctx; ci++) {
        char what[160];
        snprintf(what, sizeof what, "attention %s ctx#%d", c->name, ci);
        fill_f32(out_g, out_n, -777.0f);
        p.out = out_g;
        CHECK(cpu_ops.attention(ctxs[ci], &p) == KERN_OK, "%s: cpu attention failed", what);
        compare(what, out_r, out_g, out_n, tol, 0.0);
        for (int64_t t = 0; t < n_tokens; t++) {
            int owned = 0;
            for (int s = 0; s < c->n_seqs; s++)
                owned |= t >= q_start[s] && t < q_start[s] + c->q_len[s];
            if (!owned)
                for (int64_t e = 0; e < q_row; e++)
                    if (out_g[t * q_row + e] != -777.0f || out_r[t * q_row + e] != -777.0f) {
                        CHECK(0, "%s: foreign row %lld written", what, (long long)t);
                        break;
                    }
        }
        CHECK(kt_guard_ok(out_g), "%s: canary around out overwritten", what);
    }
    CHECK(kt_guard_ok(out_r) && kt_guard_ok(q) && kt_guard_ok(kc) && kt_guard_ok(vc) &&
              kt_guard_ok(bt),
          "%s: canary", c->name);
    free(perm);
    kt_free(bt);
    kt_free(kc);
    kt_free(vc);
    kt_free(q);
    kt_free(out_r);
    kt_free(out_g);
    free(tol);
}

static void test_attention(struct kt_rng *rng, struct kern_ctx **ctxs, int n_ctx)
{
    const struct at_case cases[] = {
        /* Phi-3-mini: MHA, head_dim 96, bf16 cache: prefill, decode, chunked prefill continuing
         * a cached prefix, and a first decode step (ctx 1). */
        {"mini mha d96 bf16", 32, 32, 96, 16, 0, KERN_DTYPE_BF16, 4, {33, 1, 20, 1}, {33, 111, 75, 1},
         1.0f, 0},
        /* Phi-3-medium: GQA 4:1 (40/10), head_dim 128, fp16 cache, sliding window 24. */
        {"medium gqa4 d128 f16 win24", 40, 10, 128, 16, 24, KERN_DTYPE_F16, 3, {1, 50, 17},
         {989, 50, 60}, 1.0f, 0},
        /* fp32 cache, block size 3, window 1 (self only) and window 2. */
        {"gqa4 d96 f32 bs3 win1", 8, 2, 96, 3, 1, KERN_DTYPE_F32, 2, {5, 1}, {9, 4}, 1.0f, 0},
        {"gqa4 d128 bf16 bs5 win2", 8, 2, 128, 5, 2, KERN_DTYPE_BF16, 2, {7, 1}, {7, 33}, 1.0f, 0},
        /* Peaky softmax (large scores) over a long prefill. */
        {"mha d128 bf16 peaky prefill", 4, 4, 128, 16, 0, KERN_DTYPE_BF16, 1, {300}, {300}, 6.0f, 0},
        /* A sequence with no query rows next to real ones. */
        {"gqa4 d96 bf16 empty seq", 8, 2, 96, 16, 0, KERN_DTYPE_BF16, 3, {0, 3, 1}, {40, 3, 1024},
         1.0f, 0},
        /* head_dim 40: lanes left over after the 32- and 16-lane steps of the inner loops. */
        {"gqa2 d40 f32 bs7", 4, 2, 40, 7, 0, KERN_DTYPE_F32, 2, {9, 1}, {20, 150}, 2.0f, 0},
        /* NaN in a query lane and Inf in a key. */
        {"mha d96 bf16 nan/inf", 4, 4, 96, 16, 0, KERN_DTYPE_BF16, 2, {3, 2}, {3, 40}, 1.0f, 1},
        {"gqa4 d128 f16 win24 nan/inf", 8, 2, 128, 16, 24, KERN_DTYPE_F16, 2, {30, 1}, {30, 40},
         1.0f, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_attention(rng, &cases[i], ctxs, n_ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* The remaining ops: embed, rmsnorm, rope, silu_mul, add and gather_rows run on every level;
 * kv_write (still the reference in the CPU table) runs once, so a fast version added later is
 * checked. */

static void test_embed(struct kt_rng *rng, struct kern_ctx *ctx)
{
    const int64_t vocab = 32064, hidden = 3072;
    /* Every table dtype; the block formats are GGUF embeddings used as stored. */
    const enum kern_dtype dts[] = {KERN_DTYPE_BF16, KERN_DTYPE_F16, KERN_DTYPE_F32,
                                   KERN_DTYPE_Q8_0, KERN_DTYPE_Q4_0, KERN_DTYPE_Q4_K,
                                   KERN_DTYPE_Q5_K, KERN_DTYPE_Q6_K};
    for (size_t di = 0; di < sizeof dts / sizeof dts[0]; di++) {
        void *table = kt_alloc(kt_bytes(dts[di], vocab * hidden));
        kt_fill(rng, table, dts[di], vocab * hidden, -1.0f, 1.0f);
        int32_t ids[5] = {0, (int32_t)vocab - 1, 17, 17, 31999};
        float *a = kt_alloc(5 * hidden * sizeof *a), *b = kt_alloc(5 * hidden * sizeof *b);
        struct kern_embed_params p = {ids, table, dts[di], a, 5, vocab, hidden};
        CHECK(ref_ops.embed(NULL, &p) == KERN_OK, "ref embed %s", kern_dtype_name(dts[di]));
        p.out = b;
        CHECK(cpu_ops.embed(ctx, &p) == KERN_OK, "cpu embed %s", kern_dtype_name(dts[di]));
        compare("embed", a, b, 5 * hidden, NULL, 0.0);
        CHECK(a[hidden] == kt_get(table, dts[di], (vocab - 1) * hidden), "embed row vocab-1");
        ids[2] = (int32_t)vocab;
        fill_f32(b, 5 * hidden, 1.0f);
        CHECK(cpu_ops.embed(ctx, &p) == KERN_ERR_INVALID, "embed id == vocab accepted");
        ids[2] = -1;
        CHECK(cpu_ops.embed(ctx, &p) == KERN_ERR_INVALID, "embed id -1 accepted");
        CHECK(b[0] == 1.0f && b[5 * hidden - 1] == 1.0f, "embed wrote before failing");
        CHECK(kt_guard_ok(a) && kt_guard_ok(b) && kt_guard_ok(table), "embed canary");
        if (kern_dtype_block_elems(dts[di]) > 0) { /* rows must be whole blocks */
            ids[2] = 17;
            struct kern_embed_params q = {ids, table, dts[di], b, 5, vocab * 2, hidden / 2 + 16};
            CHECK(ref_ops.embed(NULL, &q) == KERN_ERR_INVALID &&
                      cpu_ops.embed(ctx, &q) == KERN_ERR_INVALID,
                  "embed %s: rows of partial blocks accepted", kern_dtype_name(dts[di]));
        }
        kt_free(table);
        kt_free(a);
        kt_free(b);
    }
}

static void test_rmsnorm(struct kt_rng *rng, struct kern_ctx **ctxs, int n_ctx)
{
    /* Phi-3 widths, and odd ones that leave vector tails; the rows of 3072 and 33 are enough
     * to be split over the pool. */
    const int64_t dims[] = {3072, 4096, 5120, 33, 1, 17}, n_rows[] = {17, 3, 3, 1000, 3, 5};
    for (int di = 0; di < 6; di++) {
        int64_t dim = dims[di], rows = n_rows[di], n = rows * dim;
        enum kern_dtype dt = (enum kern_dtype)(di % 3);
        float *x0 = kt_alloc((size_t)n * sizeof *x0), *x = kt_alloc((size_t)n * sizeof *x);
        float *a = kt_alloc((size_t)n * sizeof *a), *b = kt_alloc((size_t)n * sizeof *b);
        void *w = kt_alloc((size_t)dim * kern_dtype_size(dt));
        kt_fill(rng, x0, KERN_DTYPE_F32, n, -3.0f, 3.0f);
        kt_fill(rng, w, dt, dim, 0.5f, 1.5f);
        if (dim > 1)
            x0[2 * dim + 1] = INFINITY; /* row 2: Inf / Inf = NaN everywhere */
        struct kern_rmsnorm_params p = {x0, w, dt, a, rows, dim, 1e-5f};
        CHECK(ref_ops.rmsnorm(NULL, &p) == KERN_OK, "ref rmsnorm");
        /* fp32 statistics: the sum of squares carries ~sqrt(dim) 2^-24 relative error, halved
         * by the square root, plus a few roundings. */
        double *tol = malloc((size_t)n * sizeof *tol);
        for (int64_t i = 0; i < n; i++)
            tol[i] = U24 * (8.0 + 2.0 * sqrt((double)dim)) * fabs((double)a[i]);
        for (int ci = 0; ci < n_ctx; ci++) {
            char what[96];
            snprintf(what, sizeof what, "rmsnorm dim=%lld rows=%lld %s ctx#%d", (long long)dim,
                     (long long)rows, kern_dtype_name(dt), ci);
            p.x = x0;
            p.out = b;
            CHECK(cpu_ops.rmsnorm(ctxs[ci], &p) == KERN_OK, "%s: cpu rmsnorm", what);
            compare(what, a, b, n, tol, 0.0);
            memcpy(x, x0, (size_t)n * sizeof *x);
            p.x = x;
            p.out = x; /* in place */
            CHECK(cpu_ops.rmsnorm(ctxs[ci], &p) == KERN_OK, "%s: cpu rmsnorm in place", what);
            compare(what, a, x, n, tol, 0.0);
        }
        CHECK(kt_guard_ok(a) && kt_guard_ok(b) && kt_guard_ok(x) && kt_guard_ok(x0) &&
                  kt_guard_ok(w),
              "rmsnorm canary");
        free(tol);
        kt_free(x0);
        kt_free(x);
        kt_free(a);
        kt_free(b);
        kt_free(w);
    }
}

static void test_rope(struct kt_rng *rng, struct kern_ctx **ctxs, int n_ctx)
{
    /* head_dim 96 full rotary with two variants (short/long factors), head_dim 128 partial,
     * and head_dim 40 with rot_dim 36 (18 pairs: a vector tail at every width). */
    const int64_t hds[3] = {96, 128, 40}, rots[3] = {96, 64, 36}, heads[3] = {32, 10, 3};
    for (int ci = 0; ci < 3; ci++) {
        int64_t nt = 7, hd = hds[ci], rot = rots[ci], stride = heads[ci] * hd + 5;
        float inv_freq[2 * 64];
        for (int64_t i = 0; i < rot / 2; i++) {
            inv_freq[i] = (float)pow(10000.0, -2.0 * (double)i / (double)rot);
            inv_freq[rot / 2 + i] = inv_freq[i] / kt_uniform(rng, 1.0f, 40.0f);
        }
        int32_t pos[7] = {0, 1, 2, 4095, 4096, 131071, 77};
        uint8_t var[7] = {0, 1, 0, 1, 1, 1, 0};
        size_t bytes = (size_t)(nt * stride) * sizeof(float);
        float *x0 = kt_alloc(bytes), *a = kt_alloc(bytes), *b = kt_alloc(bytes);
        kt_fill(rng, x0, KERN_DTYPE_F32, nt * stride, -2.0f, 2.0f);
        x0[3 * stride + 2] = NAN;
        memcpy(a, x0, bytes);
        struct kern_rope_params p = {a, pos, var, inv_freq, nt, heads[ci], hd, rot, stride, 2, 1.19f};
        CHECK(ref_ops.rope(NULL, &p) == KERN_OK, "ref rope");
        for (int k = 0; k < n_ctx; k++) {
            char what[96];
            snprintf(what, sizeof what, "rope hd=%lld rot=%lld ctx#%d", (long long)hd,
                     (long long)rot, k);
            memcpy(b, x0, bytes);
            p.x = b;
            var[1] = 1;
            CHECK(cpu_ops.rope(ctxs[k], &p) == KERN_OK, "%s: cpu rope", what);
            /* Each output is a*c - b*s: a few roundings of values of size mscale * max|x|. */
            compare(what, a, b, nt * stride, NULL, 8.0 * U24 * 1.19 * 2.0 * 2.0);
            memcpy(b, x0, bytes);
            var[1] = 2;
            CHECK(cpu_ops.rope(ctxs[k], &p) == KERN_ERR_INVALID,
                  "%s: rope variant out of range accepted", what);
            CHECK(memcmp(b, x0, bytes) == 0, "%s: rope wrote before failing", what);
        }
        CHECK(kt_guard_ok(a) && kt_guard_ok(b) && kt_guard_ok(x0), "rope canary");
        kt_free(x0);
        kt_free(a);
        kt_free(b);
    }
}

static void test_kv_write(struct kt_rng *rng, struct kern_ctx *ctx)
{
    const enum kern_dtype dts[] = {KERN_DTYPE_BF16, KERN_DTYPE_F16, KERN_DTYPE_F32};
    for (int di = 0; di < 3; di++) {
        int64_t nt = 6, nkv = 10, hd = 128, row = nkv * hd, stride = 3 * row, n_slots = 48;
        size_t cache_bytes = (size_t)(n_slots * row) * kern_dtype_size(dts[di]);
        float *k = kt_alloc((size_t)(nt * stride) * sizeof *k), *v = kt_alloc((size_t)(nt * stride) * sizeof *v);
        kt_fill(rng, k, KERN_DTYPE_F32, nt * stride, -70000.0f, 70000.0f); /* f16 overflow too */
        kt_fill(rng, v, KERN_DTYPE_F32, nt * stride, -1.0f, 1.0f);
        v[1] = NAN;
        int64_t slots[6] = {47, 0, -1, 13, 31, -7};
        void *ka = kt_alloc(cache_bytes), *va = kt_alloc(cache_bytes);
        void *kb = kt_alloc(cache_bytes), *vb = kt_alloc(cache_bytes);
        memset(ka, 0x5a, cache_bytes);
        memset(va, 0x5a, cache_bytes);
        memset(kb, 0x5a, cache_bytes);
        memset(vb, 0x5a, cache_bytes);
        struct kern_kv_write_params p = {k, v, slots, ka, va, dts[di], nt, nkv, hd, stride, n_slots};
        CHECK(ref_ops.kv_write(NULL, &p) == KERN_OK, "ref kv_write");
        p.k_cache = kb;
        p.v_cache = vb;
        CHECK(cpu_ops.kv_write(ctx, &p) == KERN_OK, "cpu kv_write");
        CHECK(memcmp(ka, kb, cache_bytes) == 0 && memcmp(va, vb, cache_bytes) == 0,
              "kv_write %s caches differ", kern_dtype_name(dts[di]));
        slots[3] = n_slots;
        memset(kb, 0x5a, cache_bytes);
        CHECK(cpu_ops.kv_write(ctx, &p) == KERN_ERR_INVALID, "kv_write slot n_slots accepted");
        CHECK(((unsigned char *)kb)[47 * row * (int64_t)kern_dtype_size(dts[di])] == 0x5a,
              "kv_write wrote before failing");
        CHECK(kt_guard_ok(ka) && kt_guard_ok(va) && kt_guard_ok(kb) && kt_guard_ok(vb), "kv_write canary");
        kt_free(k);
        kt_free(v);
        kt_free(ka);
        kt_free(va);
        kt_free(kb);
        kt_free(vb);
    }
}

struct silu_case {
    int64_t nt, inter;
    float lo, hi;
    int special;
};

static void check_silu(struct kt_rng *rng, struct silu_case c, struct kern_ctx **ctxs, int n_ctx)
{
    int64_t nt = c.nt, inter = c.inter, n = nt * inter;
    float *gu = kt_alloc((size_t)(2 * n) * sizeof *gu);
    float *a = kt_alloc((size_t)n * sizeof *a), *b = kt_alloc((size_t)n * sizeof *b);
    kt_fill(rng, gu, KERN_DTYPE_F32, 2 * n, c.lo, c.hi);
    if (c.special) {
        gu[5] = -1000.0f;
        gu[6] = NAN;
        gu[inter + 7] = INFINITY;
        gu[8] = 1000.0f;
        gu[9] = -INFINITY; /* -Inf / (1 + Inf) = NaN */
        gu[10] = INFINITY;
    }
    struct kern_silu_mul_params sp = {gu, a, nt, inter};
    CHECK(ref_ops.silu_mul(NULL, &sp) == KERN_OK, "ref silu_mul");
    double *tol = malloc((size_t)n * sizeof *tol);
    for (int64_t i = 0; i < n; i++)
        tol[i] = 16.0 * U24 * fabs((double)a[i]); /* exp, divide, multiply: a few ulps */
    for (int ci = 0; ci < n_ctx; ci++) {
        char what[96];
        snprintf(what, sizeof what, "silu_mul nt=%lld inter=%lld [%g, %g] ctx#%d", (long long)nt,
                 (long long)inter, (double)c.lo, (double)c.hi, ci);
        fill_f32(b, n, -777.0f);
        sp.out = b;
        CHECK(cpu_ops.silu_mul(ctxs[ci], &sp) == KERN_OK, "%s: cpu silu_mul", what);
        compare(what, a, b, n, tol, 0.0);
    }
    if (c.special)
        CHECK(isnan(a[6]) && isinf(a[7]) && isnan(a[9]) && isinf(a[10]),
              "silu_mul NaN/Inf did not propagate");
    CHECK(kt_guard_ok(a) && kt_guard_ok(b) && kt_guard_ok(gu), "silu_mul canary");
    kt_free(gu);
    kt_free(a);
    kt_free(b);
    free(tol);
}

static void test_silu_add_gather(struct kt_rng *rng, struct kern_ctx **ctxs, int n_ctx)
{
    /* Phi-3-mini's width with NaN/Inf, a prefill split over the pool, and an odd width over
     * nearly the whole range where silu is a normal fp32 number (the vectorised exp's edges). */
    const struct silu_case sc[] = {
        {3, 8192, -12.0f, 12.0f, 1},
        {40, 1000, -12.0f, 12.0f, 0},
        {5, 37, -87.0f, 87.0f, 0},
    };
    for (size_t i = 0; i < sizeof sc / sizeof sc[0]; i++)
        check_silu(rng, sc[i], ctxs, n_ctx);

    /* add: a decode row, an odd length, and a prefill-sized one split over the pool. */
    const int64_t an[3] = {3072, 111, 100003};
    for (int i = 0; i < 3; i++) {
        int64_t n = an[i];
        float *x = kt_alloc((size_t)n * sizeof *x), *y0 = kt_alloc((size_t)(n + 1) * sizeof *y0);
        float *a = kt_alloc((size_t)(n + 1) * sizeof *a), *b = kt_alloc((size_t)(n + 1) * sizeof *b);
        kt_fill(rng, x, KERN_DTYPE_F32, n, -12.0f, 12.0f);
        kt_fill(rng, y0, KERN_DTYPE_F32, n + 1, -12.0f, 12.0f);
        x[1] = NAN;
        x[2] = INFINITY;
        y0[3] = -INFINITY;
        memcpy(a, y0, (size_t)(n + 1) * sizeof *a);
        struct kern_add_params ap = {a, x, n};
        CHECK(ref_ops.add(NULL, &ap) == KERN_OK, "ref add");
        for (int ci = 0; ci < n_ctx; ci++) {
            memcpy(b, y0, (size_t)(n + 1) * sizeof *b);
            ap.y = b;
            CHECK(cpu_ops.add(ctxs[ci], &ap) == KERN_OK, "cpu add");
            compare("add", a, b, n, NULL, 0.0); /* one fp32 rounding either way: exact */
            CHECK(b[n] == y0[n], "add wrote past n");
        }
        CHECK(kt_guard_ok(a) && kt_guard_ok(b) && kt_guard_ok(x) && kt_guard_ok(y0), "add canary");
        kt_free(x);
        kt_free(y0);
        kt_free(a);
        kt_free(b);
    }

    int64_t vocab = 32064, n_in = 33;
    float *x = kt_alloc((size_t)(n_in * vocab) * sizeof *x);
    float *ga = kt_alloc(3 * (size_t)vocab * sizeof *ga), *gb = kt_alloc(3 * (size_t)vocab * sizeof *gb);
    kt_fill(rng, x, KERN_DTYPE_F32, n_in * vocab, -5.0f, 5.0f);
    int32_t rows[3] = {32, 0, 5};
    struct kern_gather_rows_params gp = {x, rows, ga, n_in, 3, vocab};
    CHECK(ref_ops.gather_rows(NULL, &gp) == KERN_OK, "ref gather_rows");
    gp.out = gb;
    CHECK(cpu_ops.gather_rows(ctxs[n_ctx - 1], &gp) == KERN_OK, "cpu gather_rows");
    compare("gather_rows", ga, gb, 3 * vocab, NULL, 0.0);
    CHECK(ga[0] == x[32 * vocab], "gather_rows picked the wrong row");
    rows[1] = 33;
    fill_f32(gb, 3 * vocab, 1.0f);
    CHECK(cpu_ops.gather_rows(ctxs[n_ctx - 1], &gp) == KERN_ERR_INVALID,
          "gather_rows row n_in accepted");
    CHECK(gb[0] == 1.0f, "gather_rows wrote before failing");
    CHECK(kt_guard_ok(x) && kt_guard_ok(ga) && kt_guard_ok(gb), "gather_rows canary");
    kt_free(x);
    kt_free(ga);
    kt_free(gb);
}

/* ---------------------------------------------------------------------------------------- */
/* Phi-3.5-MoE ops: layernorm, bias_add and moe on every level (moe_route is the reference in
 * the CPU table; tests/kernels/test_moe.c checks it by hand on both tables). */

static void test_layernorm(struct kt_rng *rng, struct kern_ctx **ctxs, int n_ctx)
{
    /* Phi-3.5-MoE's width, other Phi widths, and odd ones that leave vector tails; 1000 rows
     * of 33 are split over the pool. Row 1 sits at +100 (the mean must not eat the spread),
     * row 2 holds an Inf (NaN everywhere, as in the reference). */
    const int64_t dims[] = {4096, 3072, 33, 1, 17, 5120}, n_rows[] = {9, 17, 1000, 3, 5, 3};
    for (int di = 0; di < 6; di++) {
        int64_t dim = dims[di], rows = n_rows[di], n = rows * dim;
        enum kern_dtype dt = (enum kern_dtype)(di % 3);
        float *x0 = kt_alloc((size_t)n * sizeof *x0), *x = kt_alloc((size_t)n * sizeof *x);
        float *a = kt_alloc((size_t)n * sizeof *a), *b = kt_alloc((size_t)n * sizeof *b);
        void *w = kt_alloc((size_t)dim * kern_dtype_size(dt));
        void *bias = kt_alloc((size_t)dim * kern_dtype_size(dt));
        kt_fill(rng, x0, KERN_DTYPE_F32, n, -3.0f, 3.0f);
        kt_fill(rng, w, dt, dim, 0.5f, 1.5f);
        kt_fill(rng, bias, dt, dim, -1.0f, 1.0f);
        for (int64_t i = 0; i < dim; i++)
            x0[dim + i] += 100.0f;
        if (dim > 1)
            x0[2 * dim + 1] = INFINITY;
        struct kern_layernorm_params p = {x0, w, bias, dt, a, rows, dim, 1e-5f};
        CHECK(ref_ops.layernorm(NULL, &p) == KERN_OK, "ref layernorm");
        /* fp32 statistics as in rmsnorm (test_rmsnorm): the centred sum of squares carries
         * ~sqrt(dim) 2^-24 relative error, halved by the square root, plus a few roundings of
         * the normalised term (a - b, what the gain scaled); then the bias add rounds once
         * more, an ulp of the result. The term, not the result, sets the scale: a result near
         * 0 by cancellation with b keeps the term's absolute error. */
        double *tol = malloc((size_t)n * sizeof *tol);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; i < dim; i++) {
                double term = (double)a[r * dim + i] - (double)kt_get(bias, dt, i);
                tol[r * dim + i] = U24 * ((8.0 + 2.0 * sqrt((double)dim)) * fabs(term) +
                                          2.0 * fabs((double)a[r * dim + i]));
            }
        if (rows > 2 && dim > 1)
            CHECK(isnan(a[2 * dim]) && isfinite(a[dim]), "layernorm Inf row / offset row");
        for (int ci = 0; ci < n_ctx; ci++) {
            char what[96];
            snprintf(what, sizeof what, "layernorm dim=%lld rows=%lld %s ctx#%d", (long long)dim,
                     (long long)rows, kern_dtype_name(dt), ci);
            p.x = x0;
            p.out = b;
            fill_f32(b, n, -777.0f);
            CHECK(cpu_ops.layernorm(ctxs[ci], &p) == KERN_OK, "%s: cpu layernorm", what);
            compare(what, a, b, n, tol, 0.0);
            memcpy(x, x0, (size_t)n * sizeof *x);
            p.x = x;
            p.out = x; /* in place */
            CHECK(cpu_ops.layernorm(ctxs[ci], &p) == KERN_OK, "%s: cpu layernorm in place", what);
            compare(what, a, x, n, tol, 0.0);
        }
        CHECK(kt_guard_ok(a) && kt_guard_ok(b) && kt_guard_ok(x) && kt_guard_ok(x0) &&
                  kt_guard_ok(w) && kt_guard_ok(bias),
              "layernorm canary");
        free(tol);
        kt_free(x0);
        kt_free(x);
        kt_free(a);
        kt_free(b);
        kt_free(w);
        kt_free(bias);
    }
}

static void test_bias_add(struct kt_rng *rng, struct kern_ctx **ctxs, int n_ctx)
{
    /* A decode row of Phi-3.5-MoE's q bias, a prefill over the pool with padded rows (ldy >
     * dim), and an odd width. One fp32 add of an exactly widened value: bit-exact. */
    const int64_t shapes[3][3] = {{1, 4096, 4096}, {300, 1024, 1031}, {7, 33, 40}};
    for (int si = 0; si < 3; si++) {
        int64_t rows = shapes[si][0], dim = shapes[si][1], ldy = shapes[si][2];
        enum kern_dtype dt = (enum kern_dtype)((si + 2) % 3);
        size_t ys = (size_t)(rows * ldy);
        float *y0 = kt_alloc(ys * sizeof *y0), *a = kt_alloc(ys * sizeof *a), *b = kt_alloc(ys * sizeof *b);
        void *bias = kt_alloc((size_t)dim * kern_dtype_size(dt));
        kt_fill(rng, y0, KERN_DTYPE_F32, (int64_t)ys, -8.0f, 8.0f);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = dim; i < ldy; i++)
                y0[r * ldy + i] = 12345.0f;
        kt_fill(rng, bias, dt, dim, -1.0f, 1.0f);
        kt_set(bias, dt, 1, NAN);
        kt_set(bias, dt, 2, -INFINITY);
        y0[3] = INFINITY; /* Inf + -Inf = NaN in row 0 ... */
        y0[2] = INFINITY;
        memcpy(a, y0, ys * sizeof *a);
        struct kern_bias_add_params p = {a, bias, dt, rows, dim, ldy};
        CHECK(ref_ops.bias_add(NULL, &p) == KERN_OK, "ref bias_add");
        CHECK(isnan(a[1]) && isnan(a[2]), "bias_add reference NaN/Inf");
        for (int ci = 0; ci < n_ctx; ci++) {
            char what[96];
            snprintf(what, sizeof what, "bias_add rows=%lld dim=%lld ldy=%lld %s ctx#%d",
                     (long long)rows, (long long)dim, (long long)ldy, kern_dtype_name(dt), ci);
            memcpy(b, y0, ys * sizeof *b);
            p.y = b;
            CHECK(cpu_ops.bias_add(ctxs[ci], &p) == KERN_OK, "%s: cpu bias_add", what);
            compare(what, a, b, (int64_t)ys, NULL, 0.0); /* padding lanes included */
            CHECK(kt_guard_ok(b), "%s: canary", what);
        }
        CHECK(kt_guard_ok(a) && kt_guard_ok(y0) && kt_guard_ok(bias), "bias_add canary");
        kt_free(y0);
        kt_free(a);
        kt_free(b);
        kt_free(bias);
    }
}

/* moe tolerance. Per slot (token t, expert e, weight w) the CPU forms g_i = Wg_i . x and
 * u_i = Wu_i . x as fp32 dot products of length hidden (error within the matmul bound
 * dg_i = 4 sqrt(hidden + 1) 2^-24 |Wg_i| |x|, see the file comment), then act_i = silu(g_i) u_i
 * with a vectorised exp (a few ulps), so act_i is off by at most
 *   da_i = 1.1 |u_i| dg_i + |silu(g_i)| du_i + 8 2^-24 |act_i|     (|silu'| <= 1.1),
 * then d_o = Wd_o . act, off by sum_i |Wd_oi| da_i + 4 sqrt(inter + 1) 2^-24 |Wd_o| |act|.
 * The weighted fp32 sum over the top_k slots and the add to y round once per term:
 * 2 2^-24 (|y| + sum_k |w_k d_ko|), plus an ulp of the result. Everything is computed here in
 * fp64 from the data, so a dropped, doubled or misweighted expert (error ~ |w d|) is far
 * outside it. */
static void moe_tolerance(const struct kern_moe_params *p, const float *y0, const float *ref,
                          double *tol)
{
    int64_t H = p->hidden, I = p->inter, K = p->top_k, T = p->n_tokens;
    double *g = malloc((size_t)I * sizeof *g), *u = malloc((size_t)I * sizeof *u);
    double *act = malloc((size_t)I * sizeof *act), *da = malloc((size_t)I * sizeof *da);
    for (int64_t i = 0; i < T * H; i++)
        tol[i] = 2.0 * U24 * fabs((double)y0[i]) + U24 * fabs((double)ref[i]);
    for (int64_t t = 0; t < T; t++) {
        const float *x = p->x + t * H;
        double nx = 0.0;
        for (int64_t h = 0; h < H; h++)
            nx += (double)x[h] * x[h];
        nx = sqrt(nx);
        for (int64_t k = 0; k < K; k++) {
            int32_t e = p->experts[t * K + k];
            double w = fabs((double)p->weights[t * K + k]), nact = 0.0;
            for (int64_t i = 0; i < I; i++) {
                double gs = 0, us = 0, ng = 0, nu = 0;
                for (int64_t h = 0; h < H; h++) {
                    double wg = kt_get(p->w_gate[e], p->w_dtype, i * H + h);
                    double wu = kt_get(p->w_up[e], p->w_dtype, i * H + h);
                    gs += wg * x[h];
                    us += wu * x[h];
                    ng += wg * wg;
                    nu += wu * wu;
                }
                double sg = gs / (1.0 + exp(-gs));
                g[i] = 4.0 * sqrt((double)H + 1.0) * U24 * sqrt(ng) * nx;
                u[i] = 4.0 * sqrt((double)H + 1.0) * U24 * sqrt(nu) * nx;
                act[i] = sg * us;
                da[i] = 1.1 * fabs(us) * g[i] + fabs(sg) * u[i] + 8.0 * U24 * fabs(act[i]);
                nact += act[i] * act[i];
            }
            nact = sqrt(nact);
            for (int64_t o = 0; o < H; o++) {
                double d = 0, dd = 0, nd = 0;
                for (int64_t i = 0; i < I; i++) {
                    double wd = kt_get(p->w_down[e], p->w_dtype, o * I + i);
                    d += wd * act[i];
                    dd += fabs(wd) * da[i];
                    nd += wd * wd;
                }
                dd += 4.0 * sqrt((double)I + 1.0) * U24 * sqrt(nd) * nact;
                tol[t * H + o] += w * (dd + 4.0 * U24 * fabs(d));
            }
        }
    }
    free(g);
    free(u);
    free(act);
    free(da);
}

struct moe_case {
    const char *name;
    int64_t n_tokens, hidden, inter, n_experts, top_k;
    enum kern_dtype dt;
    int skew;                  /* route half of the slots to expert 0 (several row blocks) */
    int special;               /* NaN in token 1's x: that row only goes NaN */
};

/* Weights of n_experts experts in one allocation each for gate, up and down, plus the
 * pointer arrays a moe call takes. */
struct moe_weights {
    void *gate, *up, *down;
    const void *pg[32], *pu[32], *pd[32];
};

static void moe_weights_fill(struct kt_rng *rng, struct moe_weights *mw, int64_t E, int64_t H,
                             int64_t I, enum kern_dtype dt)
{
    size_t per = kt_bytes(dt, H * I); /* block formats: H and I whole blocks */
    mw->gate = kt_alloc(per * (size_t)E);
    mw->up = kt_alloc(per * (size_t)E);
    mw->down = kt_alloc(per * (size_t)E);
    /* Gate and up of scale 1/sqrt(H) and down of 1/sqrt(I) keep activations O(1). */
    float sh = (float)(1.7 / sqrt((double)H)), si = (float)(1.7 / sqrt((double)I));
    kt_fill(rng, mw->gate, dt, E * H * I, -sh, sh);
    kt_fill(rng, mw->up, dt, E * H * I, -sh, sh);
    kt_fill(rng, mw->down, dt, E * H * I, -si, si);
    for (int64_t e = 0; e < E; e++) {
        mw->pg[e] = (const char *)mw->gate + per * (size_t)e;
        mw->pu[e] = (const char *)mw->up + per * (size_t)e;
        mw->pd[e] = (const char *)mw->down + per * (size_t)e;
    }
}

static void moe_weights_free(struct moe_weights *mw)
{
    kt_free(mw->gate);
    kt_free(mw->up);
    kt_free(mw->down);
}

/* Random routing: top_k experts per token (repeats allowed), weights in [0, 1) with every
 * seventh 0; skew sends half of the slots to expert 0. */
static void moe_route_random(struct kt_rng *rng, int32_t *experts, float *weights, int64_t T,
                             int64_t K, int64_t E, int skew)
{
    for (int64_t s = 0; s < T * K; s++) {
        experts[s] = skew && kt_below(rng, 2) ? 0 : (int32_t)kt_below(rng, E);
        weights[s] = s % 7 == 3 ? 0.0f : kt_uniform(rng, 0.0f, 1.0f);
    }
}

static void check_moe(struct kt_rng *rng, const struct moe_case *c, struct kern_ctx **ctxs,
                      int n_ctx)
{
    int64_t T = c->n_tokens, H = c->hidden, I = c->inter, E = c->n_experts, K = c->top_k;
    struct moe_weights mw;
    moe_weights_fill(rng, &mw, E, H, I, c->dt);
    int32_t *experts = kt_alloc((size_t)(T * K) * sizeof *experts);
    float *weights = kt_alloc((size_t)(T * K) * sizeof *weights);
    moe_route_random(rng, experts, weights, T, K, E, c->skew);
    float *x = kt_alloc((size_t)(T * H) * sizeof *x), *y0 = kt_alloc((size_t)(T * H) * sizeof *y0);
    float *a = kt_alloc((size_t)(T * H) * sizeof *a), *b = kt_alloc((size_t)(T * H) * sizeof *b);
    kt_fill(rng, x, KERN_DTYPE_F32, T * H, -1.0f, 1.0f);
    kt_fill(rng, y0, KERN_DTYPE_F32, T * H, -2.0f, 2.0f);
    if (c->special)
        x[1 * H + H / 2] = NAN;
    size_t wb = kern_moe_work_bytes(T, K, H, I, E);
    void *work = kt_alloc(wb);
    memcpy(a, y0, (size_t)(T * H) * sizeof *a);
    struct kern_moe_params p = {x, experts, weights, mw.pg, mw.pu, mw.pd, c->dt, a, work,
                                T, H, I, E, K};
    CHECK(ref_ops.moe(NULL, &p) == KERN_OK, "%s: ref moe", c->name);
    double *tol = malloc((size_t)(T * H) * sizeof *tol);
    moe_tolerance(&p, y0, a, tol);
    int64_t nonfinite = 0;
    for (int64_t i = 0; i < T * H; i++)
        nonfinite += !isfinite(a[i]);
    CHECK(nonfinite == (c->special ? H : 0), "%s: %lld non-finite reference values", c->name,
          (long long)nonfinite);
    for (int ci = 0; ci < n_ctx; ci++) {
        char what[160];
        snprintf(what, sizeof what, "moe %s T=%lld H=%lld I=%lld E=%lld K=%lld %s ctx#%d",
                 c->name, (long long)T, (long long)H, (long long)I, (long long)E, (long long)K,
                 kern_dtype_name(c->dt), ci);
        memcpy(b, y0, (size_t)(T * H) * sizeof *b);
        memset(work, 0x7f, wb); /* stale work contents must not matter */
        p.y = b;
        CHECK(cpu_ops.moe(ctxs[ci], &p) == KERN_OK, "%s: cpu moe", what);
        compare(what, a, b, T * H, tol, 0.0);
        CHECK(kt_guard_ok(b) && kt_guard_ok(work), "%s: canary around y or work", what);
        p.y = a;
    }
    CHECK(kt_guard_ok(x) && kt_guard_ok(a) && kt_guard_ok(experts) && kt_guard_ok(weights) &&
              kt_guard_ok(mw.gate) && kt_guard_ok(mw.up) && kt_guard_ok(mw.down),
          "%s: canary", c->name);
    moe_weights_free(&mw);
    kt_free(experts);
    kt_free(weights);
    kt_free(x);
    kt_free(y0);
    kt_free(a);
    kt_free(b);
    kt_free(work);
    free(tol);
}

static void test_moe(struct kt_rng *rng, struct kern_ctx **ctxs, int n_ctx, int with_real)
{
    struct kern_ctx *pool_only[1] = {ctxs[n_ctx - 1]};
    /* Awkward shapes on every context: tiny (serial), vector tails, top_k 1 and 3, k chunks
     * (hidden and inter above 1024), row blocks of 64 (skew), NaN in one token. */
    const struct moe_case awkward[] = {
        {"tiny", 3, 17, 5, 4, 2, KERN_DTYPE_F32, 0, 0},
        {"top1", 20, 33, 40, 5, 1, KERN_DTYPE_BF16, 0, 0},
        {"top3", 9, 40, 24, 3, 3, KERN_DTYPE_F16, 0, 1},
        {"skew", 90, 48, 72, 6, 2, KERN_DTYPE_BF16, 1, 0},
        {"chunks", 6, 1100, 1030, 3, 2, KERN_DTYPE_F16, 1, 1},
        {"chunks f32", 5, 1030, 1100, 4, 2, KERN_DTYPE_F32, 0, 0},
        /* Block-format experts: hidden and inter whole blocks (32, or 256 for the K formats),
         * above 1024 for chunks that start inside a row. */
        {"q8_0", 20, 64, 96, 5, 2, KERN_DTYPE_Q8_0, 0, 0},
        {"q4_0 skew", 90, 96, 64, 6, 2, KERN_DTYPE_Q4_0, 1, 1},
        {"q8_0 chunks", 4, 256, 1088, 3, 2, KERN_DTYPE_Q8_0, 1, 0},
        {"q4_k chunks", 4, 1280, 256, 3, 2, KERN_DTYPE_Q4_K, 0, 1},
        {"q5_k", 5, 256, 512, 3, 2, KERN_DTYPE_Q5_K, 0, 0},
        {"q6_k", 5, 512, 256, 3, 1, KERN_DTYPE_Q6_K, 1, 0},
    };
    for (size_t i = 0; i < sizeof awkward / sizeof awkward[0]; i++)
        check_moe(rng, &awkward[i], ctxs, n_ctx);
    if (!with_real)
        return;
    /* Phi-3.5-MoE-like: 16 experts, top 2, on a prefill chunk at a quarter of the width (the
     * reference at hidden 4096 / inter 6400 would take minutes), and the real hidden 4096 on
     * two decode tokens with a narrower inter. */
    const struct moe_case real[] = {
        {"phimoe/4", 33, 1024, 1600, 16, 2, KERN_DTYPE_BF16, 0, 0},
        {"phimoe hidden", 2, 4096, 1280, 4, 2, KERN_DTYPE_BF16, 0, 0},
        {"phimoe/4 q8_0", 33, 1024, 1600, 16, 2, KERN_DTYPE_Q8_0, 0, 0},
        {"phimoe hidden q4_k", 2, 4096, 1280, 4, 2, KERN_DTYPE_Q4_K, 0, 0},
    };
    for (size_t i = 0; i < sizeof real / sizeof real[0]; i++)
        check_moe(rng, &real[i], pool_only, 1);
}

/* ---------------------------------------------------------------------------------------- */
/* Phi-3-vision's CLIP ops: act and attention_dense on every level (tests/kernels/
 * test_vision_ops.c checks both tables by hand and against naive loops). */

static void test_act(struct kt_rng *rng, struct kern_ctx **ctxs, int n_ctx)
{
    /* A CLIP MLP's width over the pool, a short odd row, in and out of place; NaN, the
     * infinities and subnormal results included. fp32 against fp64: the argument of erfc or
     * exp rounded to fp32 is amplified by x^2 (GELU) or |1.702 x| (quick_gelu) at negative x
     * (test_vision_ops.c's file comment), plus a few ulps of the functions themselves. */
    const int64_t ns[2] = {577 * 4096 + 3, 37};
    for (int kind = 0; kind < 2; kind++)
        for (int ni = 0; ni < 2; ni++) {
            int64_t n = ns[ni];
            float *x = kt_alloc((size_t)n * sizeof *x), *a = kt_alloc((size_t)n * sizeof *a);
            float *b = kt_alloc((size_t)n * sizeof *b);
            kt_fill(rng, x, KERN_DTYPE_F32, n, -12.0f, 12.0f);
            x[0] = NAN;
            x[1] = INFINITY;
            x[2] = -INFINITY;
            x[3] = -60.0f; /* quick_gelu: a subnormal result */
            x[4] = -0.0f;
            struct kern_act_params p = {x, a, n, (enum kern_act)kind};
            CHECK(ref_ops.act(NULL, &p) == KERN_OK, "ref act");
            double *tol = malloc((size_t)n * sizeof *tol);
            for (int64_t i = 0; i < n; i++) {
                double ax = fabs((double)x[i]);
                double amp = 0.0; /* at -inf the result is exactly -0 */
                if (x[i] < 0.0f && isfinite(x[i]))
                    amp = kind == KERN_ACT_GELU ? 2.0 * ax * ax : 2.0 * 1.702 * ax;
                tol[i] = (7.0 + amp) * U24 * fabs((double)a[i]) + 0x1p-133;
            }
            for (int ci = 0; ci < n_ctx; ci++) {
                char what[96];
                snprintf(what, sizeof what, "act %s n=%lld ctx#%d",
                         kind == KERN_ACT_GELU ? "gelu" : "quick_gelu", (long long)n, ci);
                fill_f32(b, n, -777.0f);
                p.out = b;
                CHECK(cpu_ops.act(ctxs[ci], &p) == KERN_OK, "%s: cpu act", what);
                compare(what, a, b, n, tol, 0.0);
                memcpy(b, x, (size_t)n * sizeof *b);
                struct kern_act_params ip = {b, b, n, (enum kern_act)kind};
                CHECK(cpu_ops.act(ctxs[ci], &ip) == KERN_OK, "%s: cpu act in place", what);
                compare(what, a, b, n, tol, 0.0);
            }
            CHECK(kt_guard_ok(x) && kt_guard_ok(a) && kt_guard_ok(b), "act canary");
            free(tol);
            kt_free(x);
            kt_free(a);
            kt_free(b);
        }
}

struct ad_case {
    const char *name;
    int64_t n_seqs, seq_len, n_heads, d, ld;
    float q_amp;
};

static void check_attention_dense(struct kt_rng *rng, const struct ad_case *c,
                                  struct kern_ctx **ctxs, int n_ctx)
{
    /* q, k and v in one buffer of rows ld = 3 n_heads d or more (the fused projection), the
     * lanes past them NaN. */
    int64_t row = c->n_heads * c->d, tokens = c->n_seqs * c->seq_len, d = c->d, L = c->seq_len;
    int64_t n_in = tokens * c->ld, out_n = tokens * row;
    float *in = kt_alloc((size_t)n_in * sizeof *in);
    fill_f32(in, n_in, NAN);
    for (int64_t t = 0; t < tokens; t++)
        for (int64_t e = 0; e < 3 * row; e++)
            in[t * c->ld + e] = kt_uniform(rng, e < row ? -c->q_amp : -1.0f, e < row ? c->q_amp : 1.0f);
    const float *q = in, *k = in + row, *v = in + 2 * row;
    float *out_r = kt_alloc((size_t)out_n * sizeof *out_r);
    float *out_g = kt_alloc((size_t)out_n * sizeof *out_g);
    double *tol = malloc((size_t)out_n * sizeof *tol);
    struct kern_attention_dense_params p = {q, k, v, out_r, c->n_seqs, L, c->n_heads, d, c->ld,
                                            (float)(1.0 / sqrt((double)d))};
    CHECK(ref_ops.attention_dense(NULL, &p) == KERN_OK, "%s: ref attention_dense", c->name);
    /* The attention bound of the file comment: S bounds every |score|, V = max |v|, n keys. */
    for (int64_t s = 0; s < c->n_seqs; s++)
        for (int64_t h = 0; h < c->n_heads; h++) {
            double kn = 0.0, vmax = 0.0;
            for (int64_t u = 0; u < L; u++) {
                double kk = 0.0;
                for (int64_t e = 0; e < d; e++) {
                    double kv = k[(s * L + u) * c->ld + h * d + e];
                    double vv = fabs((double)v[(s * L + u) * c->ld + h * d + e]);
                    kk += kv * kv;
                    vmax = vv > vmax ? vv : vmax;
                }
                kn = kk > kn ? kk : kn;
            }
            for (int64_t i = 0; i < L; i++) {
                double qn = 0.0;
                for (int64_t e = 0; e < d; e++)
                    qn += (double)q[(s * L + i) * c->ld + h * d + e] * q[(s * L + i) * c->ld + h * d + e];
                double sc = p.scale * sqrt(qn) * sqrt(kn), n = (double)L;
                for (int64_t e = 0; e < d; e++) {
                    int64_t o = ((s * L + i) * c->n_heads + h) * d + e;
                    tol[o] = U24 * (vmax * (8.0 * sqrt((double)d) * sc + 4.0 * sqrt(n) +
                                            2.0 * (n / 64.0 + 1.0) + 8.0) +
                                    fabs((double)out_r[o]));
                }
            }
        }
    int64_t nonfinite = 0;
    for (int64_t i = 0; i < out_n; i++)
        nonfinite += !isfinite(out_r[i]);
    CHECK(nonfinite == 0, "%s: reference read a NaN padding lane", c->name);
    float *first = NULL;
    for (int ci = 0; ci < n_ctx; ci++) {
        char what[128];
        snprintf(what, sizeof what, "attention_dense %s ctx#%d", c->name, ci);
        fill_f32(out_g, out_n, -777.0f);
        p.out = out_g;
        CHECK(cpu_ops.attention_dense(ctxs[ci], &p) == KERN_OK, "%s: cpu attention_dense", what);
        compare(what, out_r, out_g, out_n, tol, 0.0);
        CHECK(kt_guard_ok(out_g), "%s: canary", what);
        /* The same bits on every context, whatever its thread count. */
        if (!first) {
            first = malloc((size_t)out_n * sizeof *first);
            memcpy(first, out_g, (size_t)out_n * sizeof *first);
        } else {
            CHECK(memcmp(first, out_g, (size_t)out_n * sizeof *first) == 0,
                  "%s: differs from ctx#0", what);
        }
    }
    CHECK(kt_guard_ok(in) && kt_guard_ok(out_r), "%s: canary", c->name);
    free(first);
    free(tol);
    kt_free(in);
    kt_free(out_r);
    kt_free(out_g);
}

static void test_attention_dense(struct kt_rng *rng, struct kern_ctx **ctxs, int n_ctx,
                                 int with_real)
{
    /* The tiny fixtures' shape, head sizes that leave vector tails, key blocks with a tail of
     * one, a peaky softmax, and a sequence of one token. */
    const struct ad_case awkward[] = {
        {"tiny 3x17 h4 d8", 3, 17, 4, 8, 3 * 32 + 5, 1.0f},
        {"2x33 h3 d80", 2, 33, 3, 80, 3 * 240, 1.0f},
        {"300 h2 d128", 1, 300, 2, 128, 3 * 256 + 1, 1.0f},
        {"257 h1 d64 peaky", 1, 257, 1, 64, 3 * 64, 6.0f},
        {"2x40 h1 d256", 2, 40, 1, 256, 3 * 256, 1.0f},
        {"4x1 h2 d40", 4, 1, 2, 40, 3 * 80, 1.0f},
        {"1x20 h3 d1", 1, 20, 3, 1, 3 * 3, 1.0f},
    };
    for (size_t i = 0; i < sizeof awkward / sizeof awkward[0]; i++)
        check_attention_dense(rng, &awkward[i], ctxs, n_ctx);
    if (!with_real)
        return;
    /* Phi-3-vision's CLIP tower: 577 tokens a crop, 16 heads of 64, fused qkv of 3072. */
    const struct ad_case real = {"clip 577 h16 d64", 1, 577, 16, 64, 3 * 1024, 1.0f};
    struct kern_ctx *two[2] = {ctxs[1], ctxs[n_ctx - 1]};
    check_attention_dense(rng, &real, two, 2);
}

/* Batch invariance of matmul: a row's result is the same bits whatever m is (a decode token
 * alone, with 2 others, in a batch of 5 or 300), every weight dtype and thread count, for k
 * up to the 1024-element chunk and a multiple of the lane count (the fixtures' shapes). Larger
 * k is summed in one pass for m <= 4 and in chunks above (kernels/cpu/matmul.c says why); the
 * R16 formats' int8 dot has no k chunks, so they are held to it at a Phi-3 k (3072) too. */
static void test_matmul_batch_invariance(struct kt_rng *rng, struct kern_ctx **ctxs, int n_ctx)
{
    enum { M = 300, N = 40 };
    static const int64_t ks[] = {1024, 256, 512 + 96, 3072};
    for (int ki = 0; ki < 4; ki++) {
        int64_t k = ks[ki];
        for (int dt = 0; dt < KERN_DTYPE_COUNT; dt++) {
            const int64_t w_bytes = kern_dtype_matrix_bytes((enum kern_dtype)dt, N, k);
            if (w_bytes < 0 || (k > 1024 && !kern_dtype_is_r16((enum kern_dtype)dt)))
                continue; /* k is not whole blocks of this format, or beyond one chunk */
            void *w = kt_alloc((size_t)w_bytes);
            float *x = kt_alloc((size_t)(M * k) * sizeof *x);
            float *yb = kt_alloc((size_t)(M * N) * sizeof *yb), *ys = kt_alloc((size_t)(M * N) * sizeof *ys);
            if (kern_dtype_is_r16((enum kern_dtype)dt)) { /* N = 40: a partial group too */
                void *plain = kt_alloc(kt_bytes(kern_dtype_r16_base((enum kern_dtype)dt), N * k));
                kt_fill_r16(rng, w, plain, (enum kern_dtype)dt, N, k, -0.05f, 0.05f);
                kt_free(plain);
            } else {
                kt_fill(rng, w, (enum kern_dtype)dt, N * k, -0.05f, 0.05f);
            }
            kt_fill(rng, x, KERN_DTYPE_F32, M * k, -1.0f, 1.0f);
            struct kern_matmul_params p = {x, w, (enum kern_dtype)dt, yb, M, N, k, k, N, 0};
            CHECK(cpu_ops.matmul(ctxs[n_ctx - 1], &p) == KERN_OK, "matmul invariance batch");
            int64_t diff = 0;
            static const int64_t ms[] = {1, 3, 5, 17};
            for (int mi = 0; mi < 4; mi++) {
                struct kern_matmul_params q = p;
                q.y = ys;
                q.m = ms[mi];
                CHECK(cpu_ops.matmul(ctxs[mi % n_ctx], &q) == KERN_OK, "matmul invariance m");
                diff += memcmp(ys, yb, (size_t)(ms[mi] * N) * sizeof *ys) != 0;
            }
            CHECK(diff == 0, "matmul k %lld %s: %lld of 4 smaller batches round rows differently",
                  (long long)k, kern_dtype_name((enum kern_dtype)dt), (long long)diff);
            kt_free(w);
            kt_free(x);
            kt_free(yb);
            kt_free(ys);
        }
    }
}

/* Batch invariance: a token's result is the same bits whatever else is in the batch (how many
 * rows its experts get: 1 alone, more than 4 and more than 64 in the batch) and whatever the
 * thread count. hidden and inter above 1024 put k chunks in both projections (whole blocks
 * for the block formats). */
static void test_moe_batch_invariance(struct kt_rng *rng, struct kern_ctx **ctxs, int n_ctx)
{
    enum { T = 80, E = 4, K = 2 };
    static const struct {
        enum kern_dtype dt;
        int64_t hidden, inter;
    } shapes[] = {
        {KERN_DTYPE_F32, 1100, 1030}, {KERN_DTYPE_F16, 1100, 1030}, {KERN_DTYPE_BF16, 1100, 1030},
        {KERN_DTYPE_Q8_0, 1088, 1056}, {KERN_DTYPE_Q4_0, 1056, 1088},
        {KERN_DTYPE_Q4_K, 1280, 1280},
    };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const enum kern_dtype dt = shapes[si].dt;
        const int64_t H = shapes[si].hidden, I = shapes[si].inter;
        struct moe_weights mw;
        moe_weights_fill(rng, &mw, E, H, I, dt);
        int32_t experts[T * K];
        float weights[T * K];
        moe_route_random(rng, experts, weights, T, K, E, 1); /* expert 0: ~80 rows */
        float *x = kt_alloc((size_t)(T * H) * sizeof *x), *y0 = kt_alloc((size_t)(T * H) * sizeof *y0);
        float *yb = kt_alloc((size_t)(T * H) * sizeof *yb), *ys = kt_alloc((size_t)H * sizeof *ys);
        kt_fill(rng, x, KERN_DTYPE_F32, T * H, -1.0f, 1.0f);
        kt_fill(rng, y0, KERN_DTYPE_F32, T * H, -2.0f, 2.0f);
        void *work = kt_alloc(kern_moe_work_bytes(T, K, H, I, E));
        memcpy(yb, y0, (size_t)(T * H) * sizeof *yb);
        struct kern_moe_params p = {x, experts, weights, mw.pg, mw.pu, mw.pd, dt,
                                    yb, work, T, H, I, E, K};
        CHECK(cpu_ops.moe(ctxs[n_ctx - 1], &p) == KERN_OK, "moe invariance batch");
        /* Tokens alone (serial context) and the first 5 as a batch of their own (3 threads). */
        int64_t diff = 0;
        const int64_t alone[4] = {0, 1, 41, T - 1};
        for (int j = 0; j < 4; j++) {
            int64_t t = alone[j];
            struct kern_moe_params q = p;
            q.x = x + t * H;
            q.experts = experts + t * K;
            q.weights = weights + t * K;
            q.y = ys;
            q.n_tokens = 1;
            memcpy(ys, y0 + t * H, (size_t)H * sizeof *ys);
            CHECK(cpu_ops.moe(ctxs[0], &q) == KERN_OK, "moe invariance alone");
            diff += memcmp(ys, yb + t * H, (size_t)H * sizeof *ys) != 0;
        }
        struct kern_moe_params q = p;
        float *y5 = kt_alloc((size_t)(5 * H) * sizeof *y5);
        memcpy(y5, y0, (size_t)(5 * H) * sizeof *y5);
        q.y = y5;
        q.n_tokens = 5;
        CHECK(cpu_ops.moe(ctxs[n_ctx - 2], &q) == KERN_OK, "moe invariance batch of 5");
        diff += memcmp(y5, yb, (size_t)(5 * H) * sizeof *y5) != 0;
        CHECK(diff == 0, "moe %s: %lld token results change with the batch",
              kern_dtype_name(dt), (long long)diff);
        moe_weights_free(&mw);
        kt_free(x);
        kt_free(y0);
        kt_free(yb);
        kt_free(ys);
        kt_free(y5);
        kt_free(work);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Invalid arguments: the CPU table rejects exactly what the reference rejects, and writes
 * nothing. */

static void test_invalid(struct kern_ctx *ctx)
{
    float x[64], y[64], q[64], out[64];
    uint16_t w[64] = {0}, kc[256] = {0}, vc[256] = {0};
    for (int i = 0; i < 64; i++)
        x[i] = q[i] = 1.0f;
    struct kern_matmul_params good = {x, w, KERN_DTYPE_BF16, y, 2, 4, 8, 8, 4, 0};
    struct kern_matmul_params bad[12];
    for (int i = 0; i < 12; i++)
        bad[i] = good;
    bad[0].ldx = 7;          /* ldx < k */
    bad[1].ldy = 3;          /* ldy < n */
    bad[2].m = -1;
    bad[3].x = NULL;
    bad[4].w_dtype = (enum kern_dtype)7;
    bad[5].k = INT64_MAX / 2; /* overflowing sizes */
    bad[5].ldx = INT64_MAX / 2;
    bad[6].y = NULL;
    bad[7].n = INT64_MAX / 4;
    bad[7].ldy = INT64_MAX / 4;
    bad[8].w_dtype = KERN_DTYPE_Q8_0; /* k = 8: not whole blocks */
    bad[9].w_dtype = KERN_DTYPE_Q8_0_R16; /* the same for the R16 formats */
    bad[10].w_dtype = KERN_DTYPE_Q4_0_R16;
    bad[11].w_dtype = KERN_DTYPE_Q4_K_R16;
    const struct kern_ops *tabs[2] = {&ref_ops, &cpu_ops};
    for (int t = 0; t < 2; t++) {
        CHECK(tabs[t]->matmul(ctx, &good) == KERN_OK, "%s matmul good call", tabs[t]->name);
        for (int i = 0; i < 12; i++) {
            fill_f32(y, 64, 3.0f);
            CHECK(tabs[t]->matmul(ctx, &bad[i]) == KERN_ERR_INVALID, "%s matmul bad[%d] accepted",
                  tabs[t]->name, i);
            CHECK(y[0] == 3.0f, "%s matmul bad[%d] wrote", tabs[t]->name, i);
        }
        CHECK(tabs[t]->matmul(ctx, NULL) == KERN_ERR_INVALID, "%s matmul NULL params", tabs[t]->name);
    }

    /* One sequence of 3 keys in block 1 of a 2-block (8-slot) cache, 2 heads of dim 4. */
    int32_t qs[1] = {0}, ql[1] = {2}, cl[1] = {3}, btab[2] = {1, 0};
    struct kern_attention_params ag = {
        .q = q, .k_cache = kc, .v_cache = vc, .cache_dtype = KERN_DTYPE_BF16, .out = out,
        .q_start = qs, .q_len = ql, .ctx_len = cl, .block_tables = btab, .n_tokens = 2,
        .n_seqs = 1, .n_heads = 2, .n_kv_heads = 1, .head_dim = 4, .q_stride = 8,
        .max_blocks = 2, .block_size = 4, .n_slots = 8, .sliding_window = 0, .scale = 0.5f,
    };
    for (int t = 0; t < 2; t++) {
        CHECK(tabs[t]->attention(ctx, &ag) == KERN_OK, "%s attention good call", tabs[t]->name);
        for (int i = 0; i < 13; i++) {
            struct kern_attention_params a = ag;
            int32_t qs2[1] = {0}, ql2[1] = {2}, cl2[1] = {3}, bt2[2] = {1, 0};
            a.q_start = qs2;
            a.q_len = ql2;
            a.ctx_len = cl2;
            a.block_tables = bt2;
            switch (i) {
            case 0: bt2[0] = 2; break;             /* block id past the cache */
            case 1: bt2[0] = -1; break;            /* negative block id */
            case 2: cl2[0] = 1; break;             /* ctx_len < q_len */
            case 3: cl2[0] = 9; break;             /* ctx_len > max_blocks * block_size */
            case 4: qs2[0] = 1; break;             /* rows past n_tokens */
            case 5: a.n_heads = 3; a.n_kv_heads = 2; a.q_stride = 12; break; /* 3 heads on 2 kv heads */
            case 6: a.q_stride = 7; break;         /* stride < n_heads * head_dim */
            case 7: a.block_size = 0; break;
            case 8: a.sliding_window = -1; break;
            case 9: a.n_slots = 6; break;          /* block 1 would end past the cache */
            case 10: a.k_cache = NULL; break;
            case 11: ql2[0] = -1; break;
            case 12: a.n_kv_heads = 0; break;
            }
            fill_f32(out, 64, 3.0f);
            CHECK(tabs[t]->attention(ctx, &a) == KERN_ERR_INVALID, "%s attention bad[%d] accepted",
                  tabs[t]->name, i);
            CHECK(out[0] == 3.0f, "%s attention bad[%d] wrote", tabs[t]->name, i);
        }
        /* The last block may be partial: 3 keys of block 1 need slots 4..6 only. */
        struct kern_attention_params a = ag;
        a.n_slots = 7;
        CHECK(tabs[t]->attention(ctx, &a) == KERN_OK, "%s attention partial last block",
              tabs[t]->name);
    }
}

/* The memory entries of a host table (kern_ops contract): zero-filled allocation, the three
 * copies and memset round-trip bytes exactly, sync has nothing to report, weights are used in
 * place, and NULL pointers with a non-zero size are refused. */
static void test_memory(const struct kern_ops *ops, struct kern_ctx *ctx)
{
    const size_t n = 1000;
    unsigned char src[1000], back[1000];
    for (size_t i = 0; i < n; i++)
        src[i] = (unsigned char)(i * 37 + 11);
    CHECK(ops->host_memory == 1, "%s: host_memory not set", ops->name);
    void *a = NULL, *b = NULL, *z = (void *)src;
    CHECK(ops->buf_alloc(ctx, n, &a) == KERN_OK && a, "%s: buf_alloc failed", ops->name);
    CHECK(ops->buf_alloc(ctx, n, &b) == KERN_OK && b, "%s: buf_alloc failed", ops->name);
    CHECK(ops->buf_alloc(ctx, 0, &z) == KERN_OK && z == NULL, "%s: buf_alloc(0) not NULL", ops->name);
    CHECK(ops->buf_alloc(ctx, n, NULL) == KERN_ERR_INVALID, "%s: buf_alloc(NULL) accepted", ops->name);
    if (!a || !b)
        return;
    int zero = 1;
    CHECK(ops->buf_download(ctx, back, a, n) == KERN_OK, "%s: buf_download", ops->name);
    for (size_t i = 0; i < n; i++)
        zero &= back[i] == 0;
    CHECK(zero, "%s: buf_alloc memory is not zero-filled", ops->name);

    CHECK(ops->buf_upload(ctx, a, src, n) == KERN_OK, "%s: buf_upload", ops->name);
    CHECK(ops->buf_copy(ctx, b, a, n) == KERN_OK, "%s: buf_copy", ops->name);
    CHECK(ops->buf_memset(ctx, a, 0x5a, n / 2) == KERN_OK, "%s: buf_memset", ops->name);
    char err[64] = "x";
    CHECK(ops->sync(ctx, err, sizeof err) == KERN_OK && err[0] == '\0', "%s: sync", ops->name);
    memset(back, 0, n);
    CHECK(ops->buf_download(ctx, back, b, n) == KERN_OK && memcmp(back, src, n) == 0,
          "%s: upload -> copy -> download changed the bytes", ops->name);
    CHECK(ops->buf_download(ctx, back, a, n) == KERN_OK, "%s: buf_download", ops->name);
    int ok = 1;
    for (size_t i = 0; i < n; i++)
        ok &= back[i] == (i < n / 2 ? 0x5a : src[i]);
    CHECK(ok, "%s: buf_memset wrote the wrong bytes", ops->name);

    CHECK(ops->buf_upload(ctx, NULL, src, n) == KERN_ERR_INVALID &&
              ops->buf_download(ctx, back, NULL, n) == KERN_ERR_INVALID &&
              ops->buf_copy(ctx, b, NULL, n) == KERN_ERR_INVALID &&
              ops->buf_memset(ctx, NULL, 0, n) == KERN_ERR_INVALID,
          "%s: NULL buffers accepted", ops->name);
    CHECK(ops->buf_copy(ctx, NULL, NULL, 0) == KERN_OK, "%s: empty copy refused", ops->name);

    const void *dev = NULL;
    CHECK(ops->weights_import(ctx, src, n, &dev) == KERN_OK && dev == src,
          "%s: weights_import is not zero copy", ops->name);
    ops->weights_release(ctx, dev);
    ops->buf_free(ctx, a);
    ops->buf_free(ctx, b);
    ops->buf_free(ctx, NULL);
}

int main(void)
{
    kern_ops_init_ref(&ref_ops);
    kern_ops_init_ref(&cpu_ops);
    kern_ops_init_cpu(&cpu_ops);
    CHECK(strcmp(ref_ops.name, "ref") == 0 && strcmp(cpu_ops.name, "cpu") == 0, "table names");
    /* Every entry of both tables is filled. */
    const struct kern_ops *tabs[2] = {&ref_ops, &cpu_ops};
    for (int t = 0; t < 2; t++)
        CHECK(tabs[t]->embed && tabs[t]->rmsnorm && tabs[t]->matmul && tabs[t]->rope &&
                  tabs[t]->kv_write && tabs[t]->attention && tabs[t]->silu_mul && tabs[t]->add &&
                  tabs[t]->gather_rows && tabs[t]->layernorm && tabs[t]->bias_add &&
                  tabs[t]->moe_route && tabs[t]->moe && tabs[t]->act &&
                  tabs[t]->attention_dense && tabs[t]->buf_alloc && tabs[t]->buf_free &&
                  tabs[t]->buf_upload && tabs[t]->buf_download && tabs[t]->buf_copy &&
                  tabs[t]->buf_memset && tabs[t]->sync && tabs[t]->weights_import &&
                  tabs[t]->weights_release,
              "table %s has an empty entry", tabs[t]->name);
    struct kern_ctx *one = kern_ctx_create_cpu(1), *three = kern_ctx_create_cpu(3);
    struct kern_ctx *all = kern_ctx_create_cpu(0);
    CHECK(one && three && all, "kern_ctx_create_cpu failed");
    struct kern_ctx *ctxs[4] = {NULL, one, three, all};
    struct kt_rng rng = {20240917};

    /* Every instruction-set level this CPU runs, widest (the one kern_ops_init_cpu picks)
     * first, down to the portable build that CPUs without AVX2 get. */
    static const char *const level_names[KERN_CPU_LEVEL_AVX512_VNNI + 1] = {
        "generic", "avx2", "avx512", "avx512vnni"};
    enum kern_cpu_level best = kern_cpu_best_level();
    struct kern_ops chosen = cpu_ops;
    double t0 = kt_now();
    for (int lv = (int)best; lv >= (int)KERN_CPU_LEVEL_GENERIC; lv--) {
        kern_ops_init_ref(&cpu_ops);
        CHECK(kern_cpu_ops_init_level(&cpu_ops, (enum kern_cpu_level)lv) == KERN_OK,
              "level %s refused", level_names[lv]);
        if (lv == (int)best)
            CHECK(memcmp(&cpu_ops, &chosen, sizeof chosen) == 0,
                  "kern_ops_init_cpu did not pick the widest level (%s)", level_names[lv]);
        printf("inner loops: %s\n", level_names[lv]);
        /* The Phi-3 shapes on the widest and the portable level; every level gets the rest. */
        test_matmul(&rng, ctxs, 4, lv == (int)best || lv == (int)KERN_CPU_LEVEL_GENERIC);
        test_attention(&rng, ctxs, 4);
        test_embed(&rng, all);
        test_rmsnorm(&rng, ctxs, 4);
        test_rope(&rng, ctxs, 4);
        test_silu_add_gather(&rng, ctxs, 4);
        test_layernorm(&rng, ctxs, 4);
        test_bias_add(&rng, ctxs, 4);
        test_moe(&rng, ctxs, 4, lv == (int)best || lv == (int)KERN_CPU_LEVEL_GENERIC);
        test_moe_batch_invariance(&rng, ctxs, 4);
        test_act(&rng, ctxs, 4);
        test_attention_dense(&rng, ctxs, 4, lv == (int)best || lv == (int)KERN_CPU_LEVEL_GENERIC);
        test_matmul_batch_invariance(&rng, ctxs, 4);
    }
    if (best < KERN_CPU_LEVEL_AVX512_VNNI) {
        struct kern_ops probe = chosen;
        CHECK(kern_cpu_ops_init_level(&probe, KERN_CPU_LEVEL_AVX512_VNNI) ==
                      KERN_ERR_UNSUPPORTED &&
                  memcmp(&probe, &chosen, sizeof chosen) == 0,
              "a level the CPU lacks was accepted");
    }
    cpu_ops = chosen;
    double t1 = kt_now(), t2 = t1;
    test_kv_write(&rng, all);
    test_invalid(NULL);
    test_invalid(all);
    test_memory(&ref_ops, NULL);
    test_memory(&cpu_ops, all);
    printf("matmul + attention %.1f s, rest %.1f s\n", t1 - t0, kt_now() - t2);

    kern_ctx_destroy(one);
    kern_ctx_destroy(three);
    kern_ctx_destroy(all);
    kern_ctx_destroy(NULL);
    return tu_finish("test_ops");
}
