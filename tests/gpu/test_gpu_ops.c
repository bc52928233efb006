/* Op-table test of the CUDA backend: every CUDA op against the C reference (kernels/ref) over
 * Phi-3 shapes and awkward ones, with canary guards around every device output, NaN-poisoned
 * unused KV slots and random non-contiguous block tables. Exits 77 (skip) without a GPU.
 * Tolerances (why each holds):
 *  - embed, kv_write, gather_rows: bit-exact (pure copies / the same rounding functions).
 *  - argmax: exact ids (comparisons only), ties, NaN and infinities included.
 *  - sample: exact ids. Its weights are the reference's expressions in fp32 with
 *    kern_weight_exp (kernels/weight_exp.h: no library exp, the same bits on host and GPU);
 *    only the order of the double sums differs, so a token may differ only where the
 *    reference's t lies within 1e-9 of the total from the boundary between the two tokens'
 *    cumulative sums (printed if met). Given tokens exact; top logprob ids exact (comparisons
 *    of x only). Logprob values |d| <= 1e-6 * (1 + |ref|): both take the same
 *    kern_weight_exp weights in double, so only the order of the double sum S and the last
 *    bit of log differ (about 1e-16 relative), then the rounding to float (1 ulp: 6e-8
 *    relative); -inf exactly.
 *  - add, silu_mul, rope, rmsnorm: |d| <= 1e-5 * (1 + |ref|): fp32 elementwise math, only the
 *    rounding of expf/sinf/cosf/sqrtf and the order of an fp32 sum differ.
 *  - attention: |d| <= 3e-5 * (1 + |ref|): fp32 softmax and weighted sums over up to 4k keys
 *    summed in another order (about sqrt(n) * 2^-24 relative), the same bf16 K/V values.
 *  - matmul, bf16/f16 weights: the only deviation allowed is x rounded to the weight type,
 *    so per element |d| <= 2^-8 (bf16) / 2^-10 (f16) * sum_k |x_k w_k| + 1e-5 * |y0|, the
 *    bound computed by the reference itself on |x| and |w|; plus a relative Frobenius error
 *    <= 1e-2. f32 weights: fp32 GEMM, |d| <= 1e-5 * sum_k |x_k w_k|.
 *  - layernorm: |d| <= 1e-5 * (1 + |ref|), as rmsnorm (two-pass fp32 statistics).
 *  - bias_add: bit-exact (one float add of the same converted value), padding untouched.
 *  - moe_route: exact experts (float comparisons as the reference); weights within 1 ulp (both
 *    sum exp in double and round 1 / sum once: only exp's last double bit may differ).
 *  - moe: the matmul rule carried through gate/up, silu and down: a per-element bound that
 *    moe_bound() propagates in double (its comment), plus a relative Frobenius error of the
 *    update <= 1e-2. A token alone must give the same bits as in its batch, and a graph
 *    replay the same bits as the direct call. All of it for both GEMM kernels (the default,
 *    tensor cores for bf16/f16 weights, and PHISERVE_CUDA_MOE=fma); with 16-bit weights the
 *    two must also agree within that bound (the same exact products, summed in another fp32
 *    order).
 *  - act: (7 + a) ulps of the reference's fp64 value plus 2^-133, a = 2 x^2 (GELU) or
 *    2 |1.702 x| (quick_gelu) at finite negative x, else 0: the fp32 argument of erfc / exp is
 *    within about an ulp, which those functions amplify by that much, plus a few ulps of
 *    erfcf / expf themselves (tests/kernels/test_vision_ops.c). NaN and the infinities exact.
 *  - attention_dense: the fp32 attention bound of tests/kernels/test_ops.c per output (score
 *    error 8 sqrt(d) 2^-24 S, S = scale |q| max|k|, weights off by that relative amount, the
 *    weighted sum of n values by about sqrt(n) 2^-24 max|v|); NaN exactly where the
 *    reference has it; a graph replay gives the same bits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "dtype.h"
#include "ops.h"

#include "../test_util.h"

#define GUARD 256 /* canary bytes before and after every device buffer */

static struct kern_ctx *gctx;
static struct kern_ctx *moe_fma_ctx; /* a context with PHISERVE_CUDA_MOE=fma, for test_moe */
static struct kern_ops cu_ops, ref_ops;

/* ---- random data --------------------------------------------------------------------- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rng(void)
{
    return tu_xorshift64(&rng_state);
}

static int64_t rnd(int64_t n)
{
    return (int64_t)(rng() % (uint64_t)n);
}

static float frand(void) /* about N(0, 1) */
{
    float s = 0.0f;
    for (int i = 0; i < 4; i++)
        s += (float)(rng() >> 40) / (float)(1 << 24);
    return (s - 2.0f) * 1.7320508f;
}

static float *rand_f32(size_t n)
{
    float *p = tu_xmalloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand();
    return p;
}

/* n values of dtype dt (random), returned as raw storage. */
static void *rand_typed(size_t n, enum kern_dtype dt, float amp)
{
    void *p = tu_xmalloc(n * kern_dtype_size(dt));
    for (size_t i = 0; i < n; i++) {
        float v = frand() * amp;
        if (dt == KERN_DTYPE_F32)
            ((float *)p)[i] = v;
        else if (dt == KERN_DTYPE_BF16)
            ((uint16_t *)p)[i] = kern_f32_to_bf16(v);
        else
            ((uint16_t *)p)[i] = kern_f32_to_f16(v);
    }
    return p;
}

/* ---- device buffers with canaries ------------------------------------------------------ */

struct dbuf {
    unsigned char *base; /* device: GUARD canary, bytes of data, GUARD canary */
    size_t bytes;
};

static unsigned char canary_byte(size_t i)
{
    return (unsigned char)(0xA5u ^ (i * 29u));
}

/* Uploads bytes of host (or canary pattern when host is NULL) between two guards. */
static struct dbuf dbuf_make(const void *host, size_t bytes)
{
    struct dbuf b = {NULL, bytes};
    size_t total = bytes + 2 * GUARD;
    unsigned char *tmp = tu_xmalloc(total);
    for (size_t i = 0; i < total; i++)
        tmp[i] = canary_byte(i);
    if (host)
        memcpy(tmp + GUARD, host, bytes);
    void *d = NULL;
    if (kern_cuda_alloc(gctx, total, &d) != 0 || kern_cuda_upload(gctx, d, tmp, total) != 0) {
        fprintf(stderr, "device allocation/upload of %zu bytes failed\n", total);
        exit(1);
    }
    free(tmp);
    b.base = d;
    return b;
}

static void *dptr(struct dbuf b)
{
    return b.base + GUARD;
}

/* Downloads the data into host (may be NULL) and checks both guards. */
static void dbuf_fetch(struct dbuf b, void *host, const char *what)
{
    size_t total = b.bytes + 2 * GUARD;
    unsigned char *tmp = tu_xmalloc(total);
    if (kern_cuda_download(gctx, tmp, b.base, total) != 0) {
        fprintf(stderr, "download failed\n");
        exit(1);
    }
    int bad = 0;
    for (size_t i = 0; i < GUARD; i++)
        bad += tmp[i] != canary_byte(i) || tmp[GUARD + b.bytes + i] != canary_byte(GUARD + b.bytes + i);
    CHECK(bad == 0, "%s: %d canary bytes around the output overwritten", what, bad);
    if (host)
        memcpy(host, tmp + GUARD, b.bytes);
    free(tmp);
}

static void dbuf_free(struct dbuf b)
{
    kern_cuda_free(gctx, b.base);
}

static void sync_ok(const char *what)
{
    char err[256] = "";
    int rc = kern_cuda_sync(gctx, err, sizeof err);
    CHECK(rc == 0, "%s: kern_cuda_sync = %d (%s)", what, rc, err);
}

/* Elementwise comparison: |got - want| <= tol[i] (tol NULL: atol + rtol |want|); NaN must
 * meet NaN. Returns the number of mismatches and reports the first. */
static int compare(const char *what, const float *got, const float *want, size_t n, float atol,
                   float rtol, const float *tol)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float g = got[i], w = want[i];
        float lim = tol ? tol[i] : atol + rtol * fabsf(w);
        int ok = (isnan(g) && isnan(w)) || (!isnan(g) && !isnan(w) && fabsf(g - w) <= lim) ||
                 (g == w);
        if (!ok) {
            if (bad == 0)
                fprintf(stderr, "%s: element %zu: got %.9g want %.9g (limit %.3g)\n", what, i,
                        (double)g, (double)w, (double)lim);
            bad++;
        }
    }
    CHECK(bad == 0, "%s: %d of %zu elements out of tolerance", what, bad, n);
    return bad;
}

static const char *dt_name(enum kern_dtype dt)
{
    return kern_dtype_name(dt);
}

/* ---- ops ------------------------------------------------------------------------------- */

static void test_embed(int64_t n_tokens, int64_t vocab, int64_t hidden, enum kern_dtype dt)
{
    char what[128];
    snprintf(what, sizeof what, "embed t=%lld v=%lld h=%lld %s", (long long)n_tokens,
             (long long)vocab, (long long)hidden, dt_name(dt));
    void *table = rand_typed((size_t)(vocab * hidden), dt, 1.0f);
    int32_t *ids = tu_xmalloc((size_t)n_tokens * sizeof *ids);
    for (int64_t t = 0; t < n_tokens; t++)
        ids[t] = (int32_t)(t == 0 ? vocab - 1 : rnd(vocab));
    size_t out_bytes = (size_t)(n_tokens * hidden) * sizeof(float);
    float *want = tu_xmalloc(out_bytes), *got = tu_xmalloc(out_bytes);
    struct kern_embed_params p = {ids, table, dt, want, n_tokens, vocab, hidden};
    CHECK(ref_ops.embed(NULL, &p) == 0, "%s: reference failed", what);

    struct dbuf d_ids = dbuf_make(ids, (size_t)n_tokens * sizeof *ids);
    struct dbuf d_table = dbuf_make(table, (size_t)(vocab * hidden) * kern_dtype_size(dt));
    struct dbuf d_out = dbuf_make(NULL, out_bytes);
    struct kern_embed_params q = {dptr(d_ids), dptr(d_table), dt, dptr(d_out), n_tokens, vocab,
                                  hidden};
    CHECK(cu_ops.embed(gctx, &q) == 0, "%s: launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_out, got, what);
    compare(what, got, want, (size_t)(n_tokens * hidden), 0.0f, 0.0f, NULL);

    /* an id outside the vocabulary is reported at the next sync, never read */
    int32_t bad_id = (int32_t)vocab;
    CHECK(kern_cuda_upload(gctx, dptr(d_ids), &bad_id, sizeof bad_id) == 0, "upload");
    CHECK(cu_ops.embed(gctx, &q) == 0, "%s: launch failed", what);
    CHECK(kern_cuda_sync(gctx, NULL, 0) == KERN_ERR_INVALID, "%s: bad id not reported", what);
    sync_ok("after the fault was reported");
    dbuf_fetch(d_out, NULL, what);

    /* Block-format tables are read by the host backends only (ops.h). */
    q.table_dtype = KERN_DTYPE_Q8_0;
    CHECK(cu_ops.embed(gctx, &q) == KERN_ERR_UNSUPPORTED, "%s: a Q8_0 table not refused", what);
    sync_ok(what);

    dbuf_free(d_ids);
    dbuf_free(d_table);
    dbuf_free(d_out);
    free(table);
    free(ids);
    free(want);
    free(got);
}

static void test_rmsnorm(int64_t n_rows, int64_t dim, enum kern_dtype dt, int in_place)
{
    char what[128];
    snprintf(what, sizeof what, "rmsnorm rows=%lld dim=%lld %s%s", (long long)n_rows,
             (long long)dim, dt_name(dt), in_place ? " in place" : "");
    size_t n = (size_t)(n_rows * dim);
    float *x = rand_f32(n);
    for (size_t i = 0; i < n; i++)
        x[i] *= 3.0f;
    void *w = rand_typed((size_t)dim, dt, 0.5f);
    float *want = tu_xmalloc(n * sizeof *want), *got = tu_xmalloc(n * sizeof *got);
    struct kern_rmsnorm_params p = {x, w, dt, want, n_rows, dim, 1e-5f};
    CHECK(ref_ops.rmsnorm(NULL, &p) == 0, "%s: reference failed", what);

    struct dbuf d_x = dbuf_make(x, n * sizeof(float));
    struct dbuf d_w = dbuf_make(w, (size_t)dim * kern_dtype_size(dt));
    struct dbuf d_out = in_place ? d_x : dbuf_make(NULL, n * sizeof(float));
    struct kern_rmsnorm_params q = {dptr(d_x), dptr(d_w), dt, dptr(d_out), n_rows, dim, 1e-5f};
    CHECK(cu_ops.rmsnorm(gctx, &q) == 0, "%s: launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_out, got, what);
    compare(what, got, want, n, 1e-5f, 1e-5f, NULL);
    dbuf_free(d_x);
    dbuf_free(d_w);
    if (!in_place)
        dbuf_free(d_out);
    free(x);
    free(w);
    free(want);
    free(got);
}

static void test_matmul(int64_t m, int64_t n, int64_t k, enum kern_dtype dt, int accumulate,
                        int64_t pad)
{
    char what[160];
    snprintf(what, sizeof what, "matmul m=%lld n=%lld k=%lld %s%s pad=%lld", (long long)m,
             (long long)n, (long long)k, dt_name(dt), accumulate ? " accumulate" : "",
             (long long)pad);
    int64_t ldx = k + pad, ldy = n + pad;
    size_t nx = (size_t)(m * ldx), ny = (size_t)(m * ldy), nw = (size_t)(n * k);
    float *x = rand_f32(nx);
    void *w = rand_typed(nw, dt, 0.05f);
    float *y0 = rand_f32(ny);
    float *want = tu_xmalloc(ny * sizeof *want), *got = tu_xmalloc(ny * sizeof *got);
    memcpy(want, y0, ny * sizeof *want);
    struct kern_matmul_params p = {x, w, dt, want, m, n, k, ldx, ldy, accumulate};
    CHECK(ref_ops.matmul(NULL, &p) == 0, "%s: reference failed", what);

    /* The error bound: sum_k |x_k w_k| through the reference on absolute values. */
    float *ax = tu_xmalloc(nx * sizeof *ax), *bound = tu_xmalloc(ny * sizeof *bound);
    void *aw = tu_xmalloc(nw * kern_dtype_size(dt));
    for (size_t i = 0; i < nx; i++)
        ax[i] = fabsf(x[i]);
    for (size_t i = 0; i < nw; i++) {
        if (dt == KERN_DTYPE_F32)
            ((float *)aw)[i] = fabsf(((float *)w)[i]);
        else
            ((uint16_t *)aw)[i] = ((uint16_t *)w)[i] & 0x7fffu;
    }
    struct kern_matmul_params pb = {ax, aw, dt, bound, m, n, k, ldx, ldy, 0};
    CHECK(ref_ops.matmul(NULL, &pb) == 0, "%s: reference (bound) failed", what);
    float rel = dt == KERN_DTYPE_BF16 ? 1.0f / 256.0f : dt == KERN_DTYPE_F16 ? 1.0f / 1024.0f
                                                                             : 1e-5f;
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < ldy; c++) {
            size_t i = (size_t)(r * ldy + c);
            if (c < n)
                bound[i] = rel * bound[i] + 1e-5f * (accumulate ? fabsf(y0[i]) : 0.0f) + 1e-30f;
            else
                bound[i] = 0.0f; /* padding columns: untouched, bit for bit */
        }

    struct dbuf d_x = dbuf_make(x, nx * sizeof(float));
    struct dbuf d_w = dbuf_make(w, nw * kern_dtype_size(dt));
    struct dbuf d_y = dbuf_make(y0, ny * sizeof(float));
    struct kern_matmul_params q = {dptr(d_x), dptr(d_w), dt, dptr(d_y), m, n, k, ldx, ldy,
                                   accumulate};
    CHECK(cu_ops.matmul(gctx, &q) == 0, "%s: launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_y, got, what);
    compare(what, got, want, ny, 0.0f, 0.0f, bound);
    double num = 0, den = 0;
    for (size_t i = 0; i < ny; i++) {
        num += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        den += (double)want[i] * want[i];
    }
    double frob = den > 0 ? sqrt(num / den) : sqrt(num);
    CHECK(frob <= 1e-2, "%s: relative Frobenius error %.3g", what, frob);
    dbuf_free(d_x);
    dbuf_free(d_w);
    dbuf_free(d_y);
    free(x);
    free(w);
    free(y0);
    free(want);
    free(got);
    free(ax);
    free(aw);
    free(bound);
}

static void test_rope(int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rot_dim,
                      int with_variant)
{
    char what[128];
    snprintf(what, sizeof what, "rope t=%lld heads=%lld hd=%lld rot=%lld%s", (long long)n_tokens,
             (long long)n_heads, (long long)head_dim, (long long)rot_dim,
             with_variant ? " short/long" : "");
    int64_t stride = n_heads * head_dim + 7; /* a sub-view of a wider (qkv) row */
    size_t n = (size_t)(n_tokens * stride);
    int64_t half = rot_dim / 2;
    float *x = rand_f32(n), *want = tu_xmalloc(n * sizeof(float)), *got = tu_xmalloc(n * sizeof(float));
    int32_t *pos = tu_xmalloc((size_t)n_tokens * sizeof *pos);
    uint8_t *var = tu_xmalloc((size_t)n_tokens);
    float *inv = tu_xmalloc((size_t)(2 * half) * sizeof *inv);
    for (int64_t t = 0; t < n_tokens; t++) {
        pos[t] = (int32_t)(t == 0 ? 131071 : rnd(131072));
        var[t] = (uint8_t)rnd(2);
    }
    for (int v = 0; v < 2; v++)
        for (int64_t i = 0; i < half; i++)
            inv[v * half + i] = powf(10000.0f, -2.0f * (float)i / (float)rot_dim) /
                                (v ? 1.0f + 0.5f * (float)i : 1.0f);
    memcpy(want, x, n * sizeof(float));
    struct kern_rope_params p = {want, pos, with_variant ? var : NULL, inv, n_tokens, n_heads,
                                 head_dim, rot_dim, stride, 2, 1.1902381f};
    CHECK(ref_ops.rope(NULL, &p) == 0, "%s: reference failed", what);

    struct dbuf d_x = dbuf_make(x, n * sizeof(float));
    struct dbuf d_pos = dbuf_make(pos, (size_t)n_tokens * sizeof *pos);
    struct dbuf d_var = dbuf_make(var, (size_t)n_tokens);
    struct dbuf d_inv = dbuf_make(inv, (size_t)(2 * half) * sizeof *inv);
    struct kern_rope_params q = {dptr(d_x), dptr(d_pos), with_variant ? dptr(d_var) : NULL,
                                 dptr(d_inv), n_tokens, n_heads, head_dim, rot_dim, stride, 2,
                                 1.1902381f};
    CHECK(cu_ops.rope(gctx, &q) == 0, "%s: launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_x, got, what);
    compare(what, got, want, n, 1e-5f, 1e-5f, NULL);
    dbuf_free(d_x);
    dbuf_free(d_pos);
    dbuf_free(d_var);
    dbuf_free(d_inv);
    free(x);
    free(want);
    free(got);
    free(pos);
    free(var);
    free(inv);
}

static void test_kv_write(int64_t n_tokens, int64_t n_kv_heads, int64_t head_dim,
                          enum kern_dtype dt)
{
    char what[128];
    snprintf(what, sizeof what, "kv_write t=%lld kvh=%lld hd=%lld %s", (long long)n_tokens,
             (long long)n_kv_heads, (long long)head_dim, dt_name(dt));
    int64_t row = n_kv_heads * head_dim, stride = 3 * row; /* k and v inside a qkv row */
    int64_t n_slots = 2 * n_tokens + 5;
    float *qkv = rand_f32((size_t)(n_tokens * stride));
    int64_t *slots = tu_xmalloc((size_t)n_tokens * sizeof *slots);
    /* distinct random slots (a shuffled prefix of 0..n_slots-1), some tokens skipped */
    int64_t *perm = tu_xmalloc((size_t)n_slots * sizeof *perm);
    for (int64_t i = 0; i < n_slots; i++)
        perm[i] = i;
    for (int64_t i = n_slots - 1; i > 0; i--) {
        int64_t j = rnd(i + 1), tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    for (int64_t t = 0; t < n_tokens; t++)
        slots[t] = rnd(7) == 0 ? -1 : perm[t];
    size_t cache_bytes = (size_t)(n_slots * row) * kern_dtype_size(dt);
    unsigned char *kc = tu_xmalloc(cache_bytes), *vc = tu_xmalloc(cache_bytes);
    for (size_t i = 0; i < cache_bytes; i++)
        kc[i] = vc[i] = 0xff; /* NaN in every type */
    unsigned char *kg = tu_xmalloc(cache_bytes), *vg = tu_xmalloc(cache_bytes);
    struct dbuf d_qkv = dbuf_make(qkv, (size_t)(n_tokens * stride) * sizeof(float));
    struct dbuf d_slots = dbuf_make(slots, (size_t)n_tokens * sizeof *slots);
    struct dbuf d_kc = dbuf_make(kc, cache_bytes), d_vc = dbuf_make(vc, cache_bytes);
    struct kern_kv_write_params p = {qkv + row, qkv + 2 * row, slots, kc, vc, dt, n_tokens,
                                     n_kv_heads, head_dim, stride, n_slots};
    CHECK(ref_ops.kv_write(NULL, &p) == 0, "%s: reference failed", what);
    float *dq = dptr(d_qkv);
    struct kern_kv_write_params q = {dq + row, dq + 2 * row, dptr(d_slots), dptr(d_kc),
                                     dptr(d_vc), dt, n_tokens, n_kv_heads, head_dim, stride,
                                     n_slots};
    CHECK(cu_ops.kv_write(gctx, &q) == 0, "%s: launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_kc, kg, what);
    dbuf_fetch(d_vc, vg, what);
    CHECK(memcmp(kg, kc, cache_bytes) == 0 && memcmp(vg, vc, cache_bytes) == 0,
          "%s: cache differs from the reference", what);
    dbuf_free(d_qkv);
    dbuf_free(d_slots);
    dbuf_free(d_kc);
    dbuf_free(d_vc);
    free(qkv);
    free(slots);
    free(perm);
    free(kc);
    free(vc);
    free(kg);
    free(vg);
}

struct attn_case {
    const char *name;
    int64_t n_heads, n_kv_heads, head_dim, block_size, window;
    enum kern_dtype dt;
    int n_seqs;
    int32_t q_len[8], ctx_len[8];
};

static void test_attention(const struct attn_case *c)
{
    int64_t n_tokens = 0, max_blocks = 0, n_blocks = 0;
    int32_t q_start[8];
    for (int s = 0; s < c->n_seqs; s++) {
        q_start[s] = (int32_t)n_tokens;
        n_tokens += c->q_len[s];
        int64_t nb = (c->ctx_len[s] + c->block_size - 1) / c->block_size;
        max_blocks = nb > max_blocks ? nb : max_blocks;
        n_blocks += nb;
    }
    max_blocks += 2; /* unused entries at the end of every row */
    n_blocks += 3;   /* blocks nobody owns, NaN-poisoned */
    int64_t n_slots = n_blocks * c->block_size;
    int64_t row = c->n_kv_heads * c->head_dim;
    size_t esz = kern_dtype_size(c->dt);
    size_t cache_bytes = (size_t)(n_slots * row) * esz;

    /* Random non-contiguous block tables over a shuffled pool; unused entries point far
     * outside the cache, so that reading one would raise a fault. */
    int32_t *tables = tu_xmalloc((size_t)(c->n_seqs * max_blocks) * sizeof *tables);
    int32_t *pool = tu_xmalloc((size_t)n_blocks * sizeof *pool);
    for (int64_t i = 0; i < n_blocks; i++)
        pool[i] = (int32_t)i;
    for (int64_t i = n_blocks - 1; i > 0; i--) {
        int64_t j = rnd(i + 1);
        int32_t tmp = pool[i];
        pool[i] = pool[j];
        pool[j] = tmp;
    }
    int64_t next = 0;
    for (int s = 0; s < c->n_seqs; s++) {
        int64_t nb = (c->ctx_len[s] + c->block_size - 1) / c->block_size;
        for (int64_t b = 0; b < max_blocks; b++)
            tables[s * max_blocks + b] = b < nb ? pool[next++] : 1000000 + (int32_t)b;
    }
    /* Poison the whole cache, then write the positions below ctx_len. Positions past ctx_len
     * in a sequence's last block stay NaN. */
    unsigned char *kc = tu_xmalloc(cache_bytes), *vc = tu_xmalloc(cache_bytes);
    memset(kc, 0xff, cache_bytes);
    memset(vc, 0xff, cache_bytes);
    for (int s = 0; s < c->n_seqs; s++)
        for (int64_t pos = 0; pos < c->ctx_len[s]; pos++) {
            int64_t slot = tables[s * max_blocks + pos / c->block_size] * c->block_size +
                           pos % c->block_size;
            void *kr = rand_typed((size_t)row, c->dt, 1.0f);
            void *vr = rand_typed((size_t)row, c->dt, 1.0f);
            memcpy(kc + (size_t)(slot * row) * esz, kr, (size_t)row * esz);
            memcpy(vc + (size_t)(slot * row) * esz, vr, (size_t)row * esz);
            free(kr);
            free(vr);
        }
    int64_t q_stride = 3 * c->n_heads * c->head_dim; /* q inside a wider row */
    float *q = rand_f32((size_t)(n_tokens * q_stride));
    for (size_t i = 0; i < (size_t)(n_tokens * q_stride); i++)
        q[i] *= 2.0f;
    size_t out_n = (size_t)(n_tokens * c->n_heads * c->head_dim);
    float *want = tu_xmalloc(out_n * sizeof(float)), *got = tu_xmalloc(out_n * sizeof(float));
    float scale = 1.0f / sqrtf((float)c->head_dim);
    struct kern_attention_params p = {
        q, kc, vc, c->dt, want, q_start, c->q_len, c->ctx_len, tables, n_tokens, c->n_seqs,
        c->n_heads, c->n_kv_heads, c->head_dim, q_stride, max_blocks, c->block_size, n_slots,
        c->window, scale};
    CHECK(ref_ops.attention(NULL, &p) == 0, "%s: reference failed", c->name);

    struct dbuf d_q = dbuf_make(q, (size_t)(n_tokens * q_stride) * sizeof(float));
    struct dbuf d_kc = dbuf_make(kc, cache_bytes), d_vc = dbuf_make(vc, cache_bytes);
    struct dbuf d_out = dbuf_make(NULL, out_n * sizeof(float));
    struct dbuf d_qs = dbuf_make(q_start, (size_t)c->n_seqs * sizeof(int32_t));
    struct dbuf d_ql = dbuf_make(c->q_len, (size_t)c->n_seqs * sizeof(int32_t));
    struct dbuf d_cl = dbuf_make(c->ctx_len, (size_t)c->n_seqs * sizeof(int32_t));
    struct dbuf d_bt = dbuf_make(tables, (size_t)(c->n_seqs * max_blocks) * sizeof(int32_t));
    struct kern_attention_params d = p;
    d.q = dptr(d_q);
    d.k_cache = dptr(d_kc);
    d.v_cache = dptr(d_vc);
    d.out = dptr(d_out);
    d.q_start = dptr(d_qs);
    d.q_len = dptr(d_ql);
    d.ctx_len = dptr(d_cl);
    d.block_tables = dptr(d_bt);
    CHECK(cu_ops.attention(gctx, &d) == 0, "%s: launch failed", c->name);
    sync_ok(c->name);
    dbuf_fetch(d_out, got, c->name);
    compare(c->name, got, want, out_n, 3e-5f, 3e-5f, NULL);

    /* A block id outside the cache inside the context is reported, not followed. */
    int32_t bad = (int32_t)(n_blocks + 5);
    int64_t last = (c->ctx_len[0] - 1) / c->block_size; /* every query of seq 0 reads it */
    CHECK(kern_cuda_upload(gctx, (int32_t *)dptr(d_bt) + last, &bad, sizeof bad) == 0,
          "upload");
    CHECK(cu_ops.attention(gctx, &d) == 0, "%s: launch failed", c->name);
    CHECK(kern_cuda_sync(gctx, NULL, 0) == KERN_ERR_INVALID, "%s: bad block id not reported",
          c->name);
    dbuf_fetch(d_out, NULL, c->name);

    struct dbuf all[] = {d_q, d_kc, d_vc, d_out, d_qs, d_ql, d_cl, d_bt};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        dbuf_free(all[i]);
    free(tables);
    free(pool);
    free(kc);
    free(vc);
    free(q);
    free(want);
    free(got);
}

static void test_silu_add_gather(int64_t n_tokens, int64_t inter)
{
    char what[128];
    snprintf(what, sizeof what, "silu_mul/add/gather t=%lld inter=%lld", (long long)n_tokens,
             (long long)inter);
    size_t ngu = (size_t)(n_tokens * 2 * inter), n = (size_t)(n_tokens * inter);
    float *gu = rand_f32(ngu);
    for (size_t i = 0; i < ngu; i += 97)
        gu[i] = (i % 2) ? 90.0f : -90.0f; /* saturated gates */
    float *want = tu_xmalloc(n * sizeof(float)), *got = tu_xmalloc(n * sizeof(float));
    struct kern_silu_mul_params p = {gu, want, n_tokens, inter};
    CHECK(ref_ops.silu_mul(NULL, &p) == 0, "%s: reference failed", what);
    struct dbuf d_gu = dbuf_make(gu, ngu * sizeof(float)), d_out = dbuf_make(NULL, n * sizeof(float));
    struct kern_silu_mul_params q = {dptr(d_gu), dptr(d_out), n_tokens, inter};
    CHECK(cu_ops.silu_mul(gctx, &q) == 0, "%s: silu launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_out, got, what);
    compare(what, got, want, n, 1e-5f, 1e-5f, NULL);

    /* add: y = out + x */
    float *x = rand_f32(n);
    struct dbuf d_x = dbuf_make(x, n * sizeof(float));
    struct kern_add_params pa = {want, x, (int64_t)n};
    CHECK(ref_ops.add(NULL, &pa) == 0, "%s: reference add failed", what);
    struct kern_add_params qa = {dptr(d_out), dptr(d_x), (int64_t)n};
    CHECK(cu_ops.add(gctx, &qa) == 0, "%s: add launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_out, got, what);
    compare("add", got, want, n, 1e-5f, 1e-5f, NULL);

    /* gather_rows: a few rows (the last one, repeats) of the [n_tokens, inter] result */
    int64_t n_out = n_tokens < 5 ? n_tokens : 5;
    int32_t rows[5];
    for (int64_t i = 0; i < n_out; i++)
        rows[i] = (int32_t)(i == 0 ? n_tokens - 1 : rnd(n_tokens));
    float *gw = tu_xmalloc((size_t)(n_out * inter) * sizeof(float));
    float *gg = tu_xmalloc((size_t)(n_out * inter) * sizeof(float));
    struct kern_gather_rows_params pg = {want, rows, gw, n_tokens, n_out, inter};
    CHECK(ref_ops.gather_rows(NULL, &pg) == 0, "%s: reference gather failed", what);
    struct dbuf d_rows = dbuf_make(rows, (size_t)n_out * sizeof(int32_t));
    struct dbuf d_g = dbuf_make(NULL, (size_t)(n_out * inter) * sizeof(float));
    struct kern_gather_rows_params qg = {dptr(d_out), dptr(d_rows), dptr(d_g), n_tokens, n_out,
                                         inter};
    CHECK(cu_ops.gather_rows(gctx, &qg) == 0, "%s: gather launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_g, gg, what);
    /* gathered from the GPU add result, which matched within 1e-5 */
    compare("gather_rows", gg, gw, (size_t)(n_out * inter), 1e-5f, 1e-5f, NULL);
    struct dbuf all[] = {d_gu, d_out, d_x, d_rows, d_g};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        dbuf_free(all[i]);
    free(gu);
    free(want);
    free(got);
    free(x);
    free(gw);
    free(gg);
}

/* argmax: n_rows rows of dim values, row stride ldx (the padding holds larger values that must
 * never win). The rows cycle through random values, one top value at many positions (among
 * them positions other threads and warps of a block scan: offsets 1, 32, 256, ...), NaNs
 * before the top, several +inf, one finite value among -inf, all -inf, all NaN, and -0 / +0
 * tied on top. */
static void test_argmax(int64_t n_rows, int64_t dim, int64_t ldx)
{
    char what[128];
    snprintf(what, sizeof what, "argmax %lldx%lld ldx %lld", (long long)n_rows, (long long)dim,
             (long long)ldx);
    size_t nx = (size_t)(n_rows * ldx);
    float *x = rand_f32(nx);
    for (int64_t r = 0; r < n_rows; r++) {
        float *row = x + r * ldx;
        switch (r % 8) {
        case 0:
            break;
        case 1: {
            const int64_t offs[] = {0, 1, 31, 32, 255, 256, 257, 1024, 4097};
            int64_t base = rnd(dim);
            for (size_t j = 0; j < sizeof offs / sizeof offs[0]; j++)
                if (base + offs[j] < dim)
                    row[base + offs[j]] = 9.0f;
            for (int j = 0; j < 8; j++)
                row[rnd(dim)] = 9.0f;
            break;
        }
        case 2: {
            int64_t at = rnd(dim);
            row[at] = 8.0f;
            for (int j = 0; j < 1 + (int)(dim / 64); j++)
                row[rnd(dim)] = NAN;
            if (at > 0)
                row[rnd(at)] = NAN;
            row[0] = NAN;
            break;
        }
        case 3:
            for (int j = 0; j < 3; j++)
                row[rnd(dim)] = INFINITY;
            row[rnd(dim)] = NAN;
            break;
        case 4:
            for (int64_t i = 0; i < dim; i++)
                row[i] = -INFINITY;
            row[dim - 1 - rnd(dim < 300 ? dim : 300)] = -1e30f;
            break;
        case 5:
            for (int64_t i = 0; i < dim; i++)
                row[i] = -INFINITY;
            break;
        case 6:
            for (int64_t i = 0; i < dim; i++)
                row[i] = (i % 3) ? NAN : -INFINITY;
            break;
        case 7:
            for (int64_t i = 0; i < dim; i++)
                row[i] = -1.0f - (float)rnd(3);
            row[rnd(dim)] = -0.0f;
            row[rnd(dim)] = 0.0f;
            break;
        }
        for (int64_t i = dim; i < ldx; i++)
            row[i] = (i % 2) ? INFINITY : 1e30f;
    }
    int32_t *want = tu_xmalloc((size_t)n_rows * sizeof *want);
    int32_t *got = tu_xmalloc((size_t)n_rows * sizeof *got);
    struct kern_argmax_params p = {x, want, n_rows, dim, ldx};
    CHECK(ref_ops.argmax(NULL, &p) == 0, "%s: reference failed", what);
    struct dbuf d_x = dbuf_make(x, nx * sizeof(float));
    struct dbuf d_out = dbuf_make(NULL, (size_t)n_rows * sizeof(int32_t));
    struct kern_argmax_params q = {dptr(d_x), dptr(d_out), n_rows, dim, ldx};
    CHECK(cu_ops.argmax(gctx, &q) == 0, "%s: launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_out, got, what);
    int bad = 0;
    for (int64_t r = 0; r < n_rows; r++)
        if (got[r] != want[r]) {
            if (bad == 0)
                fprintf(stderr, "%s: row %lld (kind %d): got %d want %d\n", what, (long long)r,
                        (int)(r % 8), got[r], want[r]);
            bad++;
        }
    CHECK(bad == 0, "%s: %d of %lld rows differ", what, bad, (long long)n_rows);
    /* A bad call is refused before any launch. */
    q.ldx = dim - 1;
    CHECK(dim == 0 || cu_ops.argmax(gctx, &q) == KERN_ERR_INVALID, "%s: ldx < dim accepted", what);
    dbuf_free(d_x);
    dbuf_free(d_out);
    free(x);
    free(want);
    free(got);
}

/* sample: rows of logits (random, peaked, NaN, +inf, all -inf, ties on top, padding with
 * huge values that must be ignored) and jobs cycling through greedy, temperature, min_p,
 * top_k, top_p and all of them, most with mods, several per row. */
static void fill_sample_row(float *row, int64_t dim, int64_t ldx, int kind)
{
    for (int64_t i = 0; i < dim; i++)
        row[i] = 3.0f * frand();
    switch (kind) {
    case 1: /* peaked: a handful far above the rest */
        for (int j = 0; j < 4; j++)
            row[rnd(dim)] = 12.0f + (float)j;
        break;
    case 2: /* NaNs, one before the top */
        for (int64_t j = 0; j < 1 + dim / 50; j++)
            row[rnd(dim)] = NAN;
        row[0] = NAN;
        break;
    case 3: /* +inf takes all the weight (rand_mods likes to turn it into NaN) */
        row[rnd(dim)] = INFINITY;
        row[rnd(dim)] = NAN;
        break;
    case 4:
        for (int64_t i = 0; i < dim; i++)
            row[i] = -INFINITY;
        break;
    case 5: /* quantised logits: many exact ties at every level */
        for (int64_t i = 0; i < dim; i++)
            row[i] = (float)(int)(2.0f * row[i]) * 0.5f;
        break;
    case 6: /* mostly -inf, a few finite values */
        for (int64_t i = 0; i < dim; i++)
            row[i] = rnd(16) ? -INFINITY : row[i];
        break;
    case 7: { /* a flat top: 32 neighbours share the largest value (weight exactly 1 each),
               * so that t = 32u is exact and may fall inside one thread's chunk */
        int64_t at = dim > 32 ? rnd(dim - 32) : 0;
        for (int64_t i = at; i < dim && i < at + 32; i++)
            row[i] = 20.0f;
        break;
    }
    default:
        break;
    }
    for (int64_t i = dim; i < ldx; i++)
        row[i] = (i % 2) ? INFINITY : 1e30f;
}

static double u_rand(void)
{
    switch (rnd(16)) {
    case 0:
        return 0.0;
    case 1:
        return 0x1.fffffffffffffp-1;
    default:
        return (double)(rng() >> 11) * 0x1p-53;
    }
}

static int token_used(const struct kern_sample_mod *mods, int64_t n, int64_t t)
{
    for (int64_t q = 0; q < n; q++)
        if (mods[q].token == t)
            return 1;
    return 0;
}

/* Appends up to max_mods mods with distinct tokens in [0, dim) to mods; returns how many.
 * A bias of -inf goes to the row's +inf logit when it has one (inf - inf: NaN, which counts
 * as -inf, leaving the finite logits to share the weight). */
static int64_t rand_mods(struct kern_sample_mod *mods, int64_t max_mods, const float *row,
                         int64_t dim)
{
    int64_t n = rnd(max_mods + 1);
    for (int64_t k = 0; k < n; k++) {
        int c = (int)rnd(8);
        int64_t t = rnd(dim);
        for (int64_t i = 0; c == 3 && i < dim; i++)
            if (row[i] == INFINITY && !token_used(mods, k, i)) {
                t = i;
                break;
            }
        for (int64_t tries = 0; token_used(mods, k, t) && tries < 100; tries++)
            t = rnd(dim);
        if (token_used(mods, k, t))
            return k;
        struct kern_sample_mod m = {.token = (int32_t)t, .ban = 0, .bias = 0.0f, .rep = 1.0f,
                                    .sub_freq = 0.0f, .sub_pres = 0.0f};
        m.ban = c == 0;
        m.bias = c == 1 ? 5.0f * frand() : (c == 2 ? (rnd(2) ? 100.0f : -100.0f) : 0.0f);
        if (c == 3)
            m.bias = -INFINITY;
        m.rep = rnd(2) ? 1.0f : (rnd(2) ? 1.3f : 0.8f);
        m.sub_freq = rnd(2) ? 0.5f * (float)(1 + rnd(5)) : 0.0f;
        m.sub_pres = rnd(2) ? 0.5f : 0.0f;
        mods[k] = m;
    }
    return n;
}

static struct kern_sample_job rand_job(int64_t j, int64_t n_rows)
{
    static const float temps[] = {0.01f, 0.3f, 0.7f, 1.0f, 1.5f, 1e4f};
    static const float min_ps[] = {0.01f, 0.05f, 0.3f, 1.0f};
    static const int32_t top_ks[] = {1, 2, 5, 50, 1000, 40000};
    static const float top_ps[] = {0.0f, 0.1f, 0.5f, 0.9f, 0.99f, NAN};
    struct kern_sample_job job = {.row = rnd(n_rows), .mod_start = 0, .n_mods = 0,
                                  .u = u_rand(), .temperature = temps[rnd(6)], .min_p = 0.0f,
                                  .top_p = 1.0f, .top_k = 0};
    switch (j % 8) {
    case 0:
        job.temperature = rnd(2) ? 0.0f : NAN; /* greedy */
        break;
    case 1: /* temperature alone */
        break;
    case 2:
        job.min_p = min_ps[rnd(4)];
        if (j % 16 == 10 && n_rows > 7) { /* only a flat top's ties: t on their boundaries */
            job.row = 7 + 8 * rnd((n_rows - 7 + 7) / 8);
            job.min_p = 1.0f;
            job.u = (double)(1 + rnd(31)) / 32.0;
        }
        break;
    case 3:
        job.top_k = top_ks[rnd(6)];
        break;
    case 4:
        job.top_p = top_ps[rnd(6)];
        break;
    case 5:
        job.min_p = min_ps[rnd(3)];
        job.top_k = top_ks[rnd(6)];
        job.top_p = top_ps[rnd(6)];
        break;
    case 6:
        job.top_k = 1 + (int32_t)rnd(3);
        job.top_p = 0.0f;
        break;
    default:
        job.top_k = rnd(2) ? 0 : top_ks[rnd(6)];
        job.top_p = rnd(2) ? 1.0f : top_ps[rnd(6)];
        job.min_p = rnd(2) ? 0.0f : min_ps[rnd(3)];
        break;
    }
    return job;
}

/* Whether the reference's token a and the device's b may differ: no weight between them and
 * the reference's t within 1e-9 * total of the cumulative sum that separates them, but not on
 * it: t exactly on a boundary happens with exact sums (weights of 1 on a flat top), where
 * both backends must give the later token. w is the reference's final weight row
 * (kern_ref_sample leaves it in work). */
static int draw_boundary_tie(const float *w, int64_t dim, double u, int32_t a, int32_t b,
                             long double *dist_out)
{
    int32_t lo = a < b ? a : b, hi = a < b ? b : a;
    long double total = 0.0L, cut = 0.0L;
    for (int64_t i = 0; i < dim; i++) {
        total += w[i];
        if (i == lo)
            cut = total;
        if (i > lo && i < hi && w[i] > 0.0f)
            return 0;
    }
    u = u > 0.0 ? (u < 1.0 ? u : 1.0) : 0.0;
    long double dist = fabsl((long double)u * total - cut);
    *dist_out = dist / total;
    return dist > 0.0L && dist <= 1e-9L * total;
}

/* Whether bytes [off, off + len) of a fetched dbuf still hold the canary dbuf_make put there
 * (a buffer made from NULL): nothing wrote them. */
static int dbuf_untouched(const void *fetched, size_t off, size_t len)
{
    const unsigned char *b = fetched;
    for (size_t k = 0; k < len; k++)
        if (b[off + k] != canary_byte(GUARD + off + k))
            return 0;
    return 1;
}

/* The number of top entries a job with logprobs gets: n_top clamped to [0, 20], at most dim. */
static int top_count(const struct kern_sample_job *job, int64_t dim)
{
    int64_t n = job->n_top < 0 ? 0 : (job->n_top > KERN_MAX_TOP_LOGPROBS ? KERN_MAX_TOP_LOGPROBS
                                                                         : job->n_top);
    return (int)(n < dim ? n : dim);
}

static int logprob_close(float got, float want)
{
    if (isinf(want) || isnan(want) || isnan(got))
        return got == want;
    return fabsf(got - want) <= 1e-6f * (1.0f + fabsf(want));
}

/* Given tokens and logprobs for a random job: about one job in eight has a given token, one
 * in two asks for logprobs (drawn ones included), n_top mostly in [0, 20], sometimes outside. */
static void rand_given_logprobs(struct kern_sample_job *job, int64_t dim)
{
    job->given = rnd(8) == 0;
    job->token = job->given ? (int32_t)rnd(dim) : (int32_t)rnd(3) - 1; /* ignored unless given */
    job->logprobs = rnd(2) == 0;
    job->n_top = rnd(8) ? (int32_t)rnd(KERN_MAX_TOP_LOGPROBS + 1) : (rnd(2) ? -3 : 25);
}

/* Compares the device's logprob[j] and top[j, :] (fetched with their canaries) with the
 * reference's; returns the number of differing jobs. Where the drawn tokens differ (allowed
 * at a boundary, checked by the caller) logprob[j] is of another token and not compared. */
static int compare_logprobs(const char *what, const struct kern_sample_job *jobs, int64_t n_jobs,
                            int64_t dim, const float *got_lp,
                            const struct kern_token_logprob *got_top, const float *want_lp,
                            const struct kern_token_logprob *want_top, const int32_t *got,
                            const int32_t *want)
{
    int bad = 0;
    const size_t row = KERN_MAX_TOP_LOGPROBS * sizeof *got_top;
    for (int64_t j = 0; j < n_jobs; j++) {
        const char *why = NULL;
        int at = 0; /* the top entry reported */
        if (!jobs[j].logprobs) {
            if (!dbuf_untouched(got_lp, (size_t)j * sizeof(float), sizeof(float)) ||
                !dbuf_untouched(got_top, (size_t)j * row, row))
                why = "written for a job without logprobs";
        } else {
            const struct kern_token_logprob *g = got_top + j * KERN_MAX_TOP_LOGPROBS;
            const struct kern_token_logprob *w = want_top + j * KERN_MAX_TOP_LOGPROBS;
            int n = top_count(&jobs[j], dim);
            if (got[j] == want[j] && !logprob_close(got_lp[j], want_lp[j]))
                why = "logprob";
            for (int r = 0; !why && r < n; r++) {
                at = r;
                if (g[r].token != w[r].token)
                    why = "top id";
                else if (!logprob_close(g[r].logprob, w[r].logprob))
                    why = "top logprob";
            }
            if (!why && !dbuf_untouched(got_top, (size_t)j * row + (size_t)n * sizeof *g,
                                        (size_t)(KERN_MAX_TOP_LOGPROBS - n) * sizeof *g))
                why = "top written beyond n_top";
        }
        if (why && bad++ < 5) {
            const struct kern_token_logprob *g = got_top + j * KERN_MAX_TOP_LOGPROBS;
            const struct kern_token_logprob *w = want_top + j * KERN_MAX_TOP_LOGPROBS;
            fprintf(stderr,
                    "%s: job %lld (row %lld, given %d, n_top %d, token %d): %s: logprob %.9g "
                    "want %.9g",
                    what, (long long)j, (long long)jobs[j].row, jobs[j].given, jobs[j].n_top,
                    want[j], why, (double)got_lp[j], (double)want_lp[j]);
            if (at < top_count(&jobs[j], dim))
                fprintf(stderr, "; top[%d] %d %.9g want %d %.9g", at, g[at].token,
                        (double)g[at].logprob, w[at].token, (double)w[at].logprob);
            fprintf(stderr, "\n");
        }
    }
    return bad;
}

static void test_sample(int64_t n_rows, int64_t dim, int64_t ldx, int64_t n_jobs,
                        int64_t max_mods)
{
    char what[128];
    snprintf(what, sizeof what, "sample %lld jobs over %lldx%lld ldx %lld", (long long)n_jobs,
             (long long)n_rows, (long long)dim, (long long)ldx);
    size_t nx = (size_t)(n_rows * ldx);
    float *x = tu_xmalloc(nx * sizeof *x);
    for (int64_t r = 0; r < n_rows; r++)
        fill_sample_row(x + r * ldx, dim, ldx, (int)(r % 8));
    struct kern_sample_job *jobs = tu_xmalloc((size_t)n_jobs * sizeof *jobs);
    struct kern_sample_mod *mods = tu_xmalloc((size_t)(n_jobs * max_mods + 1) * sizeof *mods);
    int64_t n_mods = 0;
    for (int64_t j = 0; j < n_jobs; j++) {
        jobs[j] = rand_job(j, n_rows);
        jobs[j].mod_start = n_mods;
        /* no mods on flat-top jobs: a bias would break the tie */
        int64_t mm = jobs[j].min_p == 1.0f ? 0 : max_mods;
        jobs[j].n_mods = rand_mods(mods + n_mods, mm, x + jobs[j].row * ldx, dim);
        n_mods += jobs[j].n_mods;
        rand_given_logprobs(&jobs[j], dim);
    }
    size_t nw = (size_t)(n_jobs * dim);
    size_t n_top = (size_t)n_jobs * KERN_MAX_TOP_LOGPROBS;
    float *want_w = tu_xmalloc(nw * sizeof(float) + 1);
    int32_t *want = tu_xmalloc((size_t)n_jobs * sizeof *want);
    int32_t *got = tu_xmalloc((size_t)n_jobs * sizeof *got);
    float *want_lp = tu_xmalloc((size_t)n_jobs * sizeof *want_lp);
    float *got_lp = tu_xmalloc((size_t)n_jobs * sizeof *got_lp);
    struct kern_token_logprob *want_top = tu_xmalloc(n_top * sizeof *want_top);
    struct kern_token_logprob *got_top = tu_xmalloc(n_top * sizeof *got_top);
    struct kern_sample_params p = {.x = x, .jobs = jobs, .mods = mods, .work = want_w,
                                   .out = want, .logprob = want_lp, .top = want_top,
                                   .n_rows = n_rows, .dim = dim, .ldx = ldx, .n_jobs = n_jobs,
                                   .n_mods = n_mods};
    CHECK(ref_ops.sample(NULL, &p) == 0, "%s: reference failed", what);

    struct dbuf d_x = dbuf_make(x, nx * sizeof(float));
    struct dbuf d_jobs = dbuf_make(jobs, (size_t)n_jobs * sizeof *jobs);
    struct dbuf d_mods = dbuf_make(mods, (size_t)n_mods * sizeof *mods);
    struct dbuf d_work = dbuf_make(NULL, nw * sizeof(float));
    struct dbuf d_out = dbuf_make(NULL, (size_t)n_jobs * sizeof(int32_t));
    struct dbuf d_lp = dbuf_make(NULL, (size_t)n_jobs * sizeof(float));
    struct dbuf d_top = dbuf_make(NULL, n_top * sizeof(struct kern_token_logprob));
    struct kern_sample_params q = {.x = dptr(d_x), .jobs = dptr(d_jobs), .mods = dptr(d_mods),
                                   .work = dptr(d_work), .out = dptr(d_out),
                                   .logprob = dptr(d_lp), .top = dptr(d_top), .n_rows = n_rows,
                                   .dim = dim, .ldx = ldx, .n_jobs = n_jobs, .n_mods = n_mods};
    CHECK(cu_ops.sample(gctx, &q) == 0, "%s: launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_out, got, what);
    dbuf_fetch(d_lp, got_lp, what);
    dbuf_fetch(d_top, got_top, what);
    float *got_w = tu_xmalloc(nw * sizeof(float) + 1);
    dbuf_fetch(d_work, got_w, what);
    int bad = 0, bad_work = 0;
    for (int64_t j = 0; j < n_jobs; j++) {
        if (jobs[j].given && !dbuf_untouched(got_w, (size_t)(j * dim) * sizeof(float),
                                             (size_t)dim * sizeof(float)))
            bad_work++;
        if (got[j] == want[j])
            continue;
        long double dist = 0.0L;
        int sampled = jobs[j].temperature > 0.0f && !jobs[j].given;
        if (sampled && got[j] >= 0 && want[j] >= 0 &&
            draw_boundary_tie(want_w + j * dim, dim, jobs[j].u, want[j], got[j], &dist)) {
            printf("%s: job %lld: got %d want %d, t %.3Lg of the total from their boundary "
                   "(allowed)\n",
                   what, (long long)j, got[j], want[j], dist);
            continue;
        }
        if (bad++ < 5)
            fprintf(stderr,
                    "%s: job %lld (kind %d, row %lld, T %g, min_p %g, top_k %d, top_p %g, u %.17g, "
                    "%lld mods, given %d): got %d want %d\n",
                    what, (long long)j, (int)(j % 8), (long long)jobs[j].row,
                    (double)jobs[j].temperature, (double)jobs[j].min_p, jobs[j].top_k,
                    (double)jobs[j].top_p, jobs[j].u, (long long)jobs[j].n_mods, jobs[j].given,
                    got[j], want[j]);
    }
    CHECK(bad == 0, "%s: %d of %lld jobs differ", what, bad, (long long)n_jobs);
    CHECK(bad_work == 0, "%s: %d jobs with a given token wrote work", what, bad_work);
    int bad_lp = compare_logprobs(what, jobs, n_jobs, dim, got_lp, got_top, want_lp, want_top,
                                  got, want);
    CHECK(bad_lp == 0, "%s: logprobs of %d of %lld jobs differ", what, bad_lp,
          (long long)n_jobs);
    free(got_w);

    /* Rows, mod ranges, mod ids, given tokens and logprobs without buffers are checked on the
     * device: reported at sync, the bad job gives -1 and nothing else (its logprob and top
     * entries, poisoned here, stay), the others what they gave before (bit for bit: the
     * kernel is deterministic). Cases 0 to 6 make the last job (case 4: the first with mods)
     * bad while it asks for logprobs; 7 and 8 pass a NULL top or logprob, which makes every
     * job asking for logprobs bad. */
    int64_t jb = n_jobs - 1;
    struct kern_sample_job keep = jobs[jb];
    struct kern_sample_mod keep_mod = n_mods > 0 ? mods[0] : (struct kern_sample_mod){0};
    const size_t row_bytes = KERN_MAX_TOP_LOGPROBS * sizeof(struct kern_token_logprob);
    float *poison_lp = tu_xmalloc((size_t)n_jobs * sizeof *poison_lp);
    struct kern_token_logprob *poison_top = tu_xmalloc(n_top * sizeof *poison_top);
    for (int64_t j = 0; j < n_jobs; j++)
        poison_lp[j] = 1234.5f;
    for (size_t k = 0; k < n_top; k++)
        poison_top[k] = (struct kern_token_logprob){.token = -9, .logprob = 1234.5f};
    float *got_lp2 = tu_xmalloc((size_t)n_jobs * sizeof *got_lp2);
    struct kern_token_logprob *got_top2 = tu_xmalloc(n_top * sizeof *got_top2);
    for (int c = 0; c < 9; c++) {
        struct kern_sample_job bj = keep;
        struct kern_sample_params qc = q;
        bj.logprobs = 1;
        bj.n_top = KERN_MAX_TOP_LOGPROBS;
        if (c == 0)
            bj.row = n_rows;
        else if (c == 1)
            bj.row = -1;
        else if (c == 2)
            bj.n_mods = n_mods - bj.mod_start + 1;
        else if (c == 3)
            bj.mod_start = -1;
        else if (c == 5 || c == 6) {
            bj.given = 1;
            bj.token = c == 5 ? (int32_t)dim : -1;
        } else if (c == 7)
            qc.top = NULL;
        else if (c == 8)
            qc.logprob = NULL;
        int64_t owner = jb;
        if (c == 4) {
            if (n_mods == 0)
                continue;
            struct kern_sample_mod bm = keep_mod;
            bm.token = (int32_t)dim;
            CHECK(kern_cuda_upload(gctx, dptr(d_mods), &bm, sizeof bm) == 0, "upload");
            /* the job owning mod 0 is the first with mods */
            for (owner = 0; jobs[owner].n_mods == 0; owner++)
                ;
        } else {
            CHECK(kern_cuda_upload(gctx, (struct kern_sample_job *)dptr(d_jobs) + jb, &bj,
                                   sizeof bj) == 0,
                  "upload");
        }
        /* poison what the bad jobs must leave: the owner's entries, or the whole buffer
         * that the call still passes (7: logprob, 8: top) */
        if (c == 7)
            CHECK(kern_cuda_upload(gctx, dptr(d_lp), poison_lp, (size_t)n_jobs * sizeof(float)) ==
                      0,
                  "upload");
        else if (c == 8)
            CHECK(kern_cuda_upload(gctx, dptr(d_top), poison_top, n_top * sizeof *poison_top) ==
                      0,
                  "upload");
        else
            CHECK(kern_cuda_upload(gctx, (float *)dptr(d_lp) + owner, poison_lp,
                                   sizeof(float)) == 0 &&
                      kern_cuda_upload(gctx,
                                       (struct kern_token_logprob *)dptr(d_top) +
                                           owner * KERN_MAX_TOP_LOGPROBS,
                                       poison_top, row_bytes) == 0,
                  "upload");
        CHECK(cu_ops.sample(gctx, &qc) == 0, "%s: launch failed", what);
        char err[256] = "";
        int rc = kern_cuda_sync(gctx, err, sizeof err);
        CHECK(rc == KERN_ERR_INVALID, "%s: bad job %d not reported (%d)", what, c, rc);
        CHECK(c != 0 || strstr(err, "sample") != NULL, "%s: message '%s'", what, err);
        sync_ok("after the fault was reported");
        int32_t *got2 = tu_xmalloc((size_t)n_jobs * sizeof *got2);
        dbuf_fetch(d_out, got2, what);
        dbuf_fetch(d_lp, got_lp2, what);
        dbuf_fetch(d_top, got_top2, what);
        int wrong = 0, wrote = 0;
        for (int64_t j = 0; j < n_jobs; j++) {
            int is_bad = c >= 7 ? (j == jb || jobs[j].logprobs) : j == owner;
            wrong += got2[j] != (is_bad ? -1 : got[j]);
            const float *lp_want = c == 7 || (c < 7 && is_bad) ? poison_lp : got_lp;
            const struct kern_token_logprob *top_want =
                c == 8 || (c < 7 && is_bad) ? poison_top : got_top;
            wrote += memcmp(&got_lp2[j], &lp_want[j], sizeof(float)) != 0;
            wrote += memcmp(got_top2 + j * KERN_MAX_TOP_LOGPROBS,
                            top_want + j * KERN_MAX_TOP_LOGPROBS, row_bytes) != 0;
        }
        CHECK(wrong == 0, "%s: bad job %d: %d tokens wrong (job %lld: %d)", what, c, wrong,
              (long long)owner, got2[owner]);
        CHECK(wrote == 0, "%s: bad job %d: %d logprob entries differ from before", what, c,
              wrote);
        free(got2);
        /* restore the buffers to their state after the good call */
        CHECK(kern_cuda_upload(gctx, dptr(d_lp), got_lp, (size_t)n_jobs * sizeof(float)) == 0 &&
                  kern_cuda_upload(gctx, dptr(d_top), got_top, n_top * sizeof *got_top) == 0,
              "upload");
        if (c == 4)
            CHECK(kern_cuda_upload(gctx, dptr(d_mods), &keep_mod, sizeof keep_mod) == 0, "upload");
        else
            CHECK(kern_cuda_upload(gctx, (struct kern_sample_job *)dptr(d_jobs) + jb, &keep,
                                   sizeof keep) == 0,
                  "upload");
    }
    free(poison_lp);
    free(poison_top);
    free(got_lp2);
    free(got_top2);
    /* With no job asking for logprobs, logprob and top may be NULL. */
    struct kern_sample_job *plain = tu_xmalloc((size_t)n_jobs * sizeof *plain);
    memcpy(plain, jobs, (size_t)n_jobs * sizeof *plain);
    for (int64_t j = 0; j < n_jobs; j++)
        plain[j].logprobs = 0;
    CHECK(kern_cuda_upload(gctx, dptr(d_jobs), plain, (size_t)n_jobs * sizeof *plain) == 0,
          "upload");
    struct kern_sample_params nolp = q;
    nolp.logprob = NULL;
    nolp.top = NULL;
    CHECK(cu_ops.sample(gctx, &nolp) == 0, "%s: launch without logprob buffers failed", what);
    sync_ok("no job asks for logprobs, no buffers");
    int32_t *got3 = tu_xmalloc((size_t)n_jobs * sizeof *got3);
    dbuf_fetch(d_out, got3, what);
    CHECK(memcmp(got3, got, (size_t)n_jobs * sizeof *got) == 0,
          "%s: tokens differ without logprob buffers", what);
    CHECK(kern_cuda_upload(gctx, dptr(d_jobs), jobs, (size_t)n_jobs * sizeof *jobs) == 0,
          "upload");
    free(got3);
    free(plain);

    /* Bad scalars are refused before any launch. */
    struct kern_sample_params r = q;
    r.ldx = dim - 1;
    CHECK(cu_ops.sample(gctx, &r) == KERN_ERR_INVALID, "%s: ldx < dim accepted", what);
    r = q;
    r.mods = NULL;
    CHECK(n_mods == 0 || cu_ops.sample(gctx, &r) == KERN_ERR_INVALID, "%s: NULL mods accepted",
          what);
    r = q;
    r.n_jobs = INT64_MAX / 2;
    CHECK(cu_ops.sample(gctx, &r) == KERN_ERR_INVALID, "%s: overflowing work accepted", what);
    sync_ok(what);
    dbuf_fetch(d_work, NULL, what);
    dbuf_fetch(d_out, NULL, what);

    dbuf_free(d_x);
    dbuf_free(d_jobs);
    dbuf_free(d_mods);
    dbuf_free(d_work);
    dbuf_free(d_out);
    dbuf_free(d_lp);
    dbuf_free(d_top);
    free(x);
    free(jobs);
    free(mods);
    free(want_w);
    free(want);
    free(got);
    free(want_lp);
    free(got_lp);
    free(want_top);
    free(got_top);
}

/* ---- Phi-3.5-MoE ops: layernorm, bias_add, moe_route, moe ---------------------------- */

static void test_layernorm(int64_t n_rows, int64_t dim, enum kern_dtype dt, int in_place,
                           float offset)
{
    char what[160];
    snprintf(what, sizeof what, "layernorm rows=%lld dim=%lld %s%s offset=%g", (long long)n_rows,
             (long long)dim, dt_name(dt), in_place ? " in place" : "", (double)offset);
    size_t n = (size_t)(n_rows * dim);
    float *x = rand_f32(n);
    for (size_t i = 0; i < n; i++)
        x[i] = offset + 3.0f * x[i];
    if (n_rows > 2)
        x[(size_t)dim + (size_t)rnd(dim)] = NAN; /* row 1: NaN all the way through */
    void *w = rand_typed((size_t)dim, dt, 0.5f);
    void *b = rand_typed((size_t)dim, dt, 0.5f);
    float *want = tu_xmalloc(n * sizeof *want), *got = tu_xmalloc(n * sizeof *got);
    struct kern_layernorm_params p = {x, w, b, dt, want, n_rows, dim, 1e-5f};
    CHECK(ref_ops.layernorm(NULL, &p) == 0, "%s: reference failed", what);

    struct dbuf d_x = dbuf_make(x, n * sizeof(float));
    struct dbuf d_w = dbuf_make(w, (size_t)dim * kern_dtype_size(dt));
    struct dbuf d_b = dbuf_make(b, (size_t)dim * kern_dtype_size(dt));
    struct dbuf d_out = in_place ? d_x : dbuf_make(NULL, n * sizeof(float));
    struct kern_layernorm_params q = {dptr(d_x), dptr(d_w), dptr(d_b), dt, dptr(d_out), n_rows,
                                      dim, 1e-5f};
    CHECK(cu_ops.layernorm(gctx, &q) == 0, "%s: launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_out, got, what);
    compare(what, got, want, n, 1e-5f, 1e-5f, NULL);

    struct kern_layernorm_params r = q;
    r.eps = NAN;
    CHECK(cu_ops.layernorm(gctx, &r) == KERN_ERR_INVALID, "%s: NaN eps accepted", what);
    r = q;
    r.b = NULL;
    CHECK(cu_ops.layernorm(gctx, &r) == KERN_ERR_INVALID, "%s: NULL b accepted", what);
    r = q;
    r.w_dtype = (enum kern_dtype)7;
    CHECK(cu_ops.layernorm(gctx, &r) == KERN_ERR_INVALID, "%s: bad dtype accepted", what);
    dbuf_free(d_x);
    dbuf_free(d_w);
    dbuf_free(d_b);
    if (!in_place)
        dbuf_free(d_out);
    free(x);
    free(w);
    free(b);
    free(want);
    free(got);
}

static void test_bias_add(int64_t n_rows, int64_t dim, int64_t ldy, enum kern_dtype dt)
{
    char what[128];
    snprintf(what, sizeof what, "bias_add rows=%lld dim=%lld ldy=%lld %s", (long long)n_rows,
             (long long)dim, (long long)ldy, dt_name(dt));
    size_t ny = n_rows > 0 ? (size_t)((n_rows - 1) * ldy + dim) : 0;
    float *y = rand_f32(ny);
    void *b = rand_typed((size_t)dim, dt, 1.0f);
    float *want = tu_xmalloc(ny * sizeof *want), *got = tu_xmalloc(ny * sizeof *got);
    memcpy(want, y, ny * sizeof *want);
    struct kern_bias_add_params p = {want, b, dt, n_rows, dim, ldy};
    CHECK(ref_ops.bias_add(NULL, &p) == 0, "%s: reference failed", what);

    struct dbuf d_y = dbuf_make(y, ny * sizeof(float));
    struct dbuf d_b = dbuf_make(b, (size_t)dim * kern_dtype_size(dt));
    struct kern_bias_add_params q = {dptr(d_y), dptr(d_b), dt, n_rows, dim, ldy};
    CHECK(cu_ops.bias_add(gctx, &q) == 0, "%s: launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_y, got, what);
    /* One float add per element, padding columns untouched: bit for bit. */
    CHECK(memcmp(got, want, ny * sizeof *got) == 0, "%s: differs from the reference", what);
    struct kern_bias_add_params r = q;
    r.ldy = dim - 1;
    CHECK(dim == 0 || cu_ops.bias_add(gctx, &r) == KERN_ERR_INVALID, "%s: ldy < dim accepted",
          what);
    dbuf_free(d_y);
    dbuf_free(d_b);
    free(y);
    free(b);
    free(want);
    free(got);
}

/* ---- Phi-3-vision's CLIP ops: act, attention_dense --------------------------------------- */

static void test_act(int64_t n, enum kern_act kind)
{
    char what[96];
    snprintf(what, sizeof what, "act %s n=%lld", kind == KERN_ACT_GELU ? "gelu" : "quick_gelu",
             (long long)n);
    float *x = tu_xmalloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = 4.0f * frand();
    const float special[6] = {NAN, INFINITY, -INFINITY, -60.0f, -0.0f, 1e-30f};
    for (int64_t i = 0; i < 6 && i < n; i++)
        x[i * 7 % n] = special[i];
    float *want = tu_xmalloc((size_t)n * sizeof *want), *got = tu_xmalloc((size_t)n * sizeof *got);
    float *tol = tu_xmalloc((size_t)n * sizeof *tol);
    struct kern_act_params p = {x, want, n, kind};
    CHECK(ref_ops.act(NULL, &p) == 0, "%s: reference failed", what);
    for (int64_t i = 0; i < n; i++) {
        double ax = fabs((double)x[i]), amp = 0.0;
        if (x[i] < 0.0f && isfinite(x[i]))
            amp = kind == KERN_ACT_GELU ? 2.0 * ax * ax : 2.0 * 1.702 * ax;
        tol[i] = (float)((7.0 + amp) * 0x1p-24 * fabs((double)want[i]) + 0x1p-133);
    }
    struct dbuf d_x = dbuf_make(x, (size_t)n * sizeof(float));
    struct dbuf d_out = dbuf_make(NULL, (size_t)n * sizeof(float));
    struct kern_act_params q = {dptr(d_x), dptr(d_out), n, kind};
    CHECK(cu_ops.act(gctx, &q) == 0, "%s: launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_out, got, what);
    compare(what, got, want, (size_t)n, 0.0f, 0.0f, tol);
    /* In place: the same bits. */
    struct kern_act_params ip = {dptr(d_x), dptr(d_x), n, kind};
    CHECK(cu_ops.act(gctx, &ip) == 0, "%s: in-place launch failed", what);
    sync_ok(what);
    float *again = tu_xmalloc((size_t)n * sizeof *again);
    dbuf_fetch(d_x, again, what);
    CHECK(memcmp(again, got, (size_t)n * sizeof *got) == 0, "%s: in place differs", what);
    struct kern_act_params r = q;
    r.kind = (enum kern_act)2;
    CHECK(cu_ops.act(gctx, &r) == KERN_ERR_INVALID, "%s: bad kind accepted", what);
    r = q;
    r.n = -1;
    CHECK(cu_ops.act(gctx, &r) == KERN_ERR_INVALID, "%s: n < 0 accepted", what);
    r = q;
    r.x = NULL;
    CHECK(cu_ops.act(gctx, &r) == KERN_ERR_INVALID, "%s: NULL x accepted", what);
    dbuf_free(d_x);
    dbuf_free(d_out);
    free(x);
    free(want);
    free(got);
    free(tol);
    free(again);
}

struct ad_case {
    int64_t n_seqs, seq_len, n_heads, d, ld_pad;
    float q_amp;
    int nan;                   /* NaN in a query lane and in a key lane */
};

static void test_attention_dense(const struct ad_case *c)
{
    int64_t row = c->n_heads * c->d, tokens = c->n_seqs * c->seq_len, d = c->d, L = c->seq_len;
    int64_t ld = 3 * row + c->ld_pad, n_in = tokens * ld, out_n = tokens * row;
    char what[160];
    snprintf(what, sizeof what, "attention_dense seqs=%lld len=%lld heads=%lld d=%lld ld=%lld%s",
             (long long)c->n_seqs, (long long)L, (long long)c->n_heads, (long long)d,
             (long long)ld, c->nan ? " nan" : "");
    /* q, k, v fused in rows of ld (padding lanes NaN). */
    float *in = tu_xmalloc((size_t)n_in * sizeof *in);
    for (int64_t t = 0; t < tokens; t++)
        for (int64_t e = 0; e < ld; e++)
            in[t * ld + e] = e >= 3 * row ? NAN : (e < row ? c->q_amp : 1.0f) * frand();
    if (c->nan) {
        in[1 * ld + 0 * d + 1] = NAN;                            /* query 1, head 0 */
        in[(tokens - 1) * ld + row + (c->n_heads - 1) * d] = NAN; /* last key, last head */
    }
    const float *q = in, *k = in + row, *v = in + 2 * row;
    float *want = tu_xmalloc((size_t)out_n * sizeof *want);
    float *got = tu_xmalloc((size_t)out_n * sizeof *got), *tol = tu_xmalloc((size_t)out_n * sizeof *tol);
    float scale = (float)(1.0 / sqrt((double)d));
    struct kern_attention_dense_params p = {q, k, v, want, c->n_seqs, L, c->n_heads, d, ld, scale};
    CHECK(ref_ops.attention_dense(NULL, &p) == 0, "%s: reference failed", what);
    for (int64_t s = 0; s < c->n_seqs; s++)
        for (int64_t h = 0; h < c->n_heads; h++) {
            double kn = 0.0, vmax = 0.0;
            for (int64_t u = 0; u < L; u++) {
                double kk = 0.0;
                for (int64_t e = 0; e < d; e++) {
                    double kv = k[(s * L + u) * ld + h * d + e];
                    double vv = fabs((double)v[(s * L + u) * ld + h * d + e]);
                    kk += kv * kv;
                    vmax = vv > vmax ? vv : vmax;
                }
                kn = kk > kn ? kk : kn;
            }
            for (int64_t i = 0; i < L; i++) {
                double qn = 0.0;
                for (int64_t e = 0; e < d; e++)
                    qn += (double)q[(s * L + i) * ld + h * d + e] * q[(s * L + i) * ld + h * d + e];
                double sc = scale * sqrt(qn) * sqrt(kn), n = (double)L;
                for (int64_t e = 0; e < d; e++) {
                    int64_t o = ((s * L + i) * c->n_heads + h) * d + e;
                    tol[o] = (float)(0x1p-24 * (vmax * (8.0 * sqrt((double)d) * sc + 4.0 * sqrt(n) +
                                                        2.0 * (n / 64.0 + 1.0) + 8.0) +
                                                fabs((double)want[o])));
                }
            }
        }
    if (c->nan) {
        int64_t nan_n = 0;
        for (int64_t i = 0; i < out_n; i++)
            nan_n += isnan(want[i]);
        CHECK(nan_n == (1 + L) * d && isnan(want[(1 * c->n_heads + 0) * d]),
              "%s: the reference's NaN pattern (%lld)", what, (long long)nan_n);
    }
    struct dbuf d_in = dbuf_make(in, (size_t)n_in * sizeof(float));
    struct dbuf d_out = dbuf_make(NULL, (size_t)out_n * sizeof(float));
    const float *dq = dptr(d_in);
    struct kern_attention_dense_params g = {dq, dq + row, dq + 2 * row, dptr(d_out), c->n_seqs, L,
                                            c->n_heads, d, ld, scale};
    CHECK(cu_ops.attention_dense(gctx, &g) == 0, "%s: launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_out, got, what);
    compare(what, got, want, (size_t)out_n, 0.0f, 0.0f, tol);

    /* Recorded in a graph and replayed into a cleared output: the same bits. */
    CHECK(kern_cuda_upload(gctx, dptr(d_out), want, (size_t)out_n * sizeof(float)) == 0, "upload");
    struct kern_graph *gr = NULL;
    CHECK(cu_ops.graph_begin(gctx) == 0, "%s: graph_begin", what);
    int rc_op = cu_ops.attention_dense(gctx, &g);
    int rc_end = cu_ops.graph_end(gctx, &gr);
    CHECK(rc_op == 0 && rc_end == 0, "%s: capture failed (%d, %d)", what, rc_op, rc_end);
    if (gr) {
        CHECK(cu_ops.graph_launch(gctx, gr) == 0, "%s: graph_launch", what);
        sync_ok(what);
        float *replay = tu_xmalloc((size_t)out_n * sizeof *replay);
        dbuf_fetch(d_out, replay, what);
        CHECK(memcmp(replay, got, (size_t)out_n * sizeof *replay) == 0, "%s: graph replay differs",
              what);
        free(replay);
        cu_ops.graph_destroy(gctx, gr);
    }

    /* The shared checks: out over q, a head size past 256, ld too small. */
    struct kern_attention_dense_params r = g;
    r.out = (float *)dptr(d_in);
    CHECK(cu_ops.attention_dense(gctx, &r) == KERN_ERR_INVALID, "%s: out over q accepted", what);
    r = g;
    r.head_dim = 257;
    r.ld = 3 * 257 * c->n_heads;
    CHECK(cu_ops.attention_dense(gctx, &r) == KERN_ERR_INVALID, "%s: head_dim 257 accepted", what);
    r = g;
    r.ld = row - 1;
    CHECK(cu_ops.attention_dense(gctx, &r) == KERN_ERR_INVALID, "%s: ld < row accepted", what);
    dbuf_free(d_in);
    dbuf_free(d_out);
    free(in);
    free(want);
    free(got);
    free(tol);
}

/* Distance in units in the last place between two floats (0 for equal values, NaN meeting
 * NaN included; INT64_MAX when only one is NaN). */
static int64_t ulp_dist(float a, float b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b) ? 0 : INT64_MAX;
    if (a == b)
        return 0;
    int32_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    int64_t oa = ia < 0 ? (int64_t)INT32_MIN - ia : ia; /* monotone in the float order */
    int64_t ob = ib < 0 ? (int64_t)INT32_MIN - ib : ib;
    return oa > ob ? oa - ob : ob - oa;
}

/* A router row of n logits on a 1/64 grid (ties and mask boundaries met exactly), with the
 * special rows the sparsemixer rules single out; padding up to ldx is huge so that reading it
 * would change the picks. */
static void fill_route_row(float *row, int64_t n, int64_t ldx, int kind)
{
    for (int64_t k = 0; k < n; k++)
        row[k] = (float)(rnd(257) - 128) / 64.0f;
    for (int64_t k = n; k < ldx; k++)
        row[k] = 1e30f;
    int64_t a = rnd(n), b = rnd(n);
    switch (kind) {
    case 1: /* the largest value twice: the first index wins, the second is the other */
        row[a] = row[b] = 3.0f;
        break;
    case 2: /* NaNs count as -inf */
        row[a] = NAN;
        row[b] = NAN;
        break;
    case 3: /* only one finite logit: the second pick's m is -inf, weight 0 */
        for (int64_t k = 0; k < n; k++)
            row[k] = k == a ? 0.5f : -INFINITY;
        break;
    case 4: /* all -inf: experts {0, 1}, weights 0 */
        for (int64_t k = 0; k < n; k++)
            row[k] = -INFINITY;
        break;
    case 5: /* all NaN, the same */
        for (int64_t k = 0; k < n; k++)
            row[k] = NAN;
        break;
    case 6: /* mask boundary: m = 1, s = 1 - 0.02 (thr with jitter 0.01) and a tie below */
        row[a] = 1.0f;
        row[b] = a == b ? 1.0f : 0.98f;
        break;
    case 7: /* negative maximum: factor = |s_k| for the smaller ones */
        for (int64_t k = 0; k < n; k++)
            row[k] = -1.0f - (float)rnd(64) / 64.0f;
        break;
    case 8: /* some -inf among finite ones */
        row[a] = -INFINITY;
        break;
    case 9: /* +inf: every weight NaN (inf - inf) on both sides */
        row[a] = INFINITY;
        break;
    default:
        break;
    }
}

static void test_moe_route(int64_t n_tokens, int64_t n_experts, int64_t ldx, float jitter_eps)
{
    char what[128];
    snprintf(what, sizeof what, "moe_route t=%lld e=%lld ldx=%lld eps=%g", (long long)n_tokens,
             (long long)n_experts, (long long)ldx, (double)jitter_eps);
    size_t nl = (size_t)(n_tokens * ldx), np = (size_t)(n_tokens * 2);
    float *logits = tu_xmalloc(nl * sizeof *logits);
    for (int64_t t = 0; t < n_tokens; t++)
        fill_route_row(logits + t * ldx, n_experts, ldx, (int)(t % 12));
    int32_t *want_e = tu_xmalloc(np * sizeof *want_e), *got_e = tu_xmalloc(np * sizeof *got_e);
    float *want_w = tu_xmalloc(np * sizeof *want_w), *got_w = tu_xmalloc(np * sizeof *got_w);
    struct kern_moe_route_params p = {logits, want_e, want_w, n_tokens, n_experts, ldx,
                                      jitter_eps};
    CHECK(ref_ops.moe_route(NULL, &p) == 0, "%s: reference failed", what);

    struct dbuf d_l = dbuf_make(logits, nl * sizeof(float));
    struct dbuf d_e = dbuf_make(NULL, np * sizeof(int32_t));
    struct dbuf d_w = dbuf_make(NULL, np * sizeof(float));
    struct kern_moe_route_params q = {dptr(d_l), dptr(d_e), dptr(d_w), n_tokens, n_experts, ldx,
                                      jitter_eps};
    CHECK(cu_ops.moe_route(gctx, &q) == 0, "%s: launch failed", what);
    sync_ok(what);
    dbuf_fetch(d_e, got_e, what);
    dbuf_fetch(d_w, got_w, what);
    CHECK(memcmp(got_e, want_e, np * sizeof *got_e) == 0, "%s: experts differ", what);
    /* Both sum exp in double and round 1 / sum once: only exp's last double bit may differ. */
    int bad = 0;
    for (size_t i = 0; i < np; i++)
        if (ulp_dist(got_w[i], want_w[i]) > 1) {
            if (bad++ == 0)
                fprintf(stderr, "%s: weight %zu: got %.9g want %.9g\n", what, i,
                        (double)got_w[i], (double)want_w[i]);
        }
    CHECK(bad == 0, "%s: %d weights more than 1 ulp off", what, bad);

    struct kern_moe_route_params r = q;
    r.n_experts = 1;
    CHECK(cu_ops.moe_route(gctx, &r) == KERN_ERR_INVALID, "%s: one expert accepted", what);
    r = q;
    r.ldx = n_experts - 1;
    CHECK(cu_ops.moe_route(gctx, &r) == KERN_ERR_INVALID, "%s: ldx < n_experts accepted", what);
    r = q;
    r.jitter_eps = NAN;
    CHECK(cu_ops.moe_route(gctx, &r) == KERN_ERR_INVALID, "%s: NaN jitter accepted", what);
    dbuf_free(d_l);
    dbuf_free(d_e);
    dbuf_free(d_w);
    free(logits);
    free(want_e);
    free(got_e);
    free(want_w);
    free(got_w);
}

enum moe_routing {
    MOE_ROUTE_DISTINCT, /* top_k distinct experts per token from the first half (others empty) */
    MOE_ROUTE_ANY,      /* any experts, duplicates within a token allowed */
    MOE_ROUTE_ONE,      /* every slot on one expert */
};

struct moe_case {
    int64_t n_tokens, hidden, inter, n_experts, top_k;
    enum kern_dtype dt;
    enum moe_routing routing;
    /* 0: each expert's matrices apart. Else expert e's matrices start e * overlap elements
     * into one matrix-and-a-bit per kind: distinct (shifted) weights for 16 real-size experts
     * in the emulator's 2 GiB. */
    int64_t overlap;
};

/* Element i of a host weight array as double. */
static double wload(const void *w, enum kern_dtype dt, int64_t i)
{
    if (dt == KERN_DTYPE_F32)
        return ((const float *)w)[i];
    if (dt == KERN_DTYPE_BF16)
        return kern_bf16_to_f32(((const uint16_t *)w)[i]);
    return kern_f16_to_f32(((const uint16_t *)w)[i]);
}

/* The error bound of the CUDA moe per y element, propagated in double through the three
 * GEMMs. A GEMM whose inputs are rounded to the weight type (relative error rel, plus half
 * the f16 subnormal spacing, 2^-25, for f16) and summed in fp32 (allowance acc, as the matmul
 * test's f32 bound) is within rel' * sum|w||in| of the exact sum; silu is 1.1-Lipschitz, so
 * |act' - act| <= 1.1 dg (|u| + du) + |silu(g)| du (+ 1e-6 |act| for expf); the down GEMM then
 * sees act' rounded: |round(act') - act| <= dact + rel (|act| + dact); the combine adds
 * sum_k |w_k| dD_k and fp32 rounding of the sums, 1e-5 (|y0| + sum_k |w_k D_k|). */
static void moe_bound(const struct moe_case *c, const float *x, const int32_t *experts,
                      const float *weights, const void *const *wg, const void *const *wu,
                      const void *const *wd, const float *y0, float *bound)
{
    int64_t H = c->hidden, I = c->inter, K = c->top_k;
    double rel = c->dt == KERN_DTYPE_BF16 ? 1.0 / 256 : c->dt == KERN_DTYPE_F16 ? 1.0 / 1024 : 0;
    double sub = c->dt == KERN_DTYPE_F16 ? 1.0 / 16777216.0 : 0.0;
    const double acc = 1e-5;
    double *act = tu_xmalloc((size_t)(I > 0 ? I : 1) * sizeof *act);
    double *dact = tu_xmalloc((size_t)(I > 0 ? I : 1) * sizeof *dact);
    double *b = tu_xmalloc((size_t)H * sizeof *b);
    double *mag = tu_xmalloc((size_t)H * sizeof *mag);
    for (int64_t t = 0; t < c->n_tokens; t++) {
        const float *xt = x + t * H;
        for (int64_t o = 0; o < H; o++)
            b[o] = mag[o] = 0.0;
        for (int64_t k = 0; k < K; k++) {
            int64_t e = experts[t * K + k];
            double w = fabs((double)weights[t * K + k]);
            for (int64_t i = 0; i < I; i++) {
                double g = 0, u = 0, ga = 0, ua = 0, gw = 0, uw = 0;
                for (int64_t h = 0; h < H; h++) {
                    double a = wload(wg[e], c->dt, i * H + h);
                    double v = wload(wu[e], c->dt, i * H + h);
                    g += a * xt[h];
                    u += v * xt[h];
                    ga += fabs(a * xt[h]);
                    ua += fabs(v * xt[h]);
                    gw += fabs(a);
                    uw += fabs(v);
                }
                double dg = (rel + acc) * ga + sub * gw, du = (rel + acc) * ua + sub * uw;
                double s = g / (1.0 + exp(-g));
                act[i] = s * u;
                dact[i] = 1.1 * dg * (fabs(u) + du) + fabs(s) * du + 1e-6 * fabs(act[i]);
            }
            for (int64_t o = 0; o < H; o++) {
                double d = 0, dd = 0, da = 0, dw = 0;
                for (int64_t i = 0; i < I; i++) {
                    double a = wload(wd[e], c->dt, o * I + i);
                    d += a * act[i];
                    da += fabs(a * act[i]);
                    dw += fabs(a);
                    dd += fabs(a) * (dact[i] + rel * (fabs(act[i]) + dact[i]));
                }
                dd += acc * da + sub * dw;
                b[o] += w * dd;
                mag[o] += w * fabs(d);
            }
        }
        for (int64_t o = 0; o < H; o++)
            bound[t * H + o] = (float)(b[o] + 1e-5 * (fabs((double)y0[t * H + o]) + mag[o])) +
                               1e-30f;
    }
    free(act);
    free(dact);
    free(b);
    free(mag);
}

/* Device pointer arrays of one weight kind: expert e at base + e * stride bytes, or NULL. */
static void moe_ptrs(const void **ptrs, struct dbuf d, size_t stride, int64_t n_experts)
{
    for (int64_t e = 0; e < n_experts; e++)
        ptrs[e] = (const unsigned char *)dptr(d) + (size_t)e * stride;
}

static void test_moe(const struct moe_case *c)
{
    char what[288];
    static const char *const routing_names[] = {"distinct", "any", "one"};
    snprintf(what, sizeof what, "moe t=%lld h=%lld i=%lld e=%lld k=%lld %s %s",
             (long long)c->n_tokens, (long long)c->hidden, (long long)c->inter,
             (long long)c->n_experts, (long long)c->top_k, dt_name(c->dt),
             routing_names[c->routing]);
    int64_t T = c->n_tokens, H = c->hidden, I = c->inter, E = c->n_experts, K = c->top_k;
    enum kern_dtype dt = c->dt;
    size_t ds = kern_dtype_size(dt), nx = (size_t)(T * H), ns = (size_t)(T * K);
    size_t mat = (size_t)(I * H); /* elements of one expert's matrix */
    size_t stride = c->overlap > 0 ? (size_t)c->overlap : mat; /* elements between experts */
    size_t nw = mat + (size_t)(E - 1) * stride;                 /* elements per kind */
    float *x = rand_f32(nx);
    float *y0 = rand_f32(nx);
    /* Scaled so that g and u are O(3) and the down outputs O(10). */
    float amp_in = 2.0f / sqrtf((float)(H > 0 ? H : 1));
    float amp_out = 1.0f / sqrtf((float)(I > 0 ? I : 1));
    void *wg = rand_typed(nw, dt, amp_in);
    void *wu = rand_typed(nw, dt, amp_in);
    void *wd = rand_typed(nw, dt, amp_out);
    int32_t *experts = tu_xmalloc(ns * sizeof *experts);
    float *weights = tu_xmalloc(ns * sizeof *weights);
    int64_t used = E / 2 > K ? E / 2 : (E > K ? K : E); /* DISTINCT draws from [0, used) */
    for (int64_t t = 0; t < T; t++)
        for (int64_t k = 0; k < K; k++) {
            int32_t e;
            if (c->routing == MOE_ROUTE_ONE) {
                e = (int32_t)(E > 3 ? 3 : E - 1);
            } else if (c->routing == MOE_ROUTE_ANY) {
                e = (int32_t)rnd(E);
            } else {
                int fresh;
                do {
                    e = (int32_t)rnd(used);
                    fresh = 1;
                    for (int64_t j = 0; j < k; j++)
                        fresh &= experts[t * K + j] != e;
                } while (!fresh && used >= K);
            }
            experts[t * K + k] = e;
            weights[t * K + k] = rnd(8) == 0 ? 0.0f : (float)(rng() >> 40) / (float)(1 << 24);
        }
    size_t work_bytes = kern_moe_work_bytes(T, K, H, I, E);
    CHECK(work_bytes > 0, "%s: kern_moe_work_bytes = 0", what);

    /* Reference: host pointer arrays, an expert that no slot uses without weights (NULL is
     * only a bad index where it is used). */
    const void **hg = tu_xmalloc((size_t)E * sizeof *hg), **hu = tu_xmalloc((size_t)E * sizeof *hu);
    const void **hd = tu_xmalloc((size_t)E * sizeof *hd);
    for (int64_t e = 0; e < E; e++) {
        hg[e] = (const unsigned char *)wg + (size_t)e * stride * ds;
        hu[e] = (const unsigned char *)wu + (size_t)e * stride * ds;
        hd[e] = (const unsigned char *)wd + (size_t)e * stride * ds;
    }
    int64_t unused = -1;
    for (int64_t e = E - 1; e >= 0 && unused < 0; e--) {
        int hit = 0;
        for (size_t s = 0; s < ns; s++)
            hit |= experts[s] == e;
        if (!hit)
            unused = e;
    }
    if (unused >= 0)
        hg[unused] = hu[unused] = hd[unused] = NULL;
    float *want = tu_xmalloc(nx * sizeof *want), *got = tu_xmalloc(nx * sizeof *got);
    memcpy(want, y0, nx * sizeof *want);
    void *hwork = tu_xmalloc(work_bytes);
    struct kern_moe_params p = {x, experts, weights, hg, hu, hd, dt, want, hwork, T, H, I, E, K};
    CHECK(ref_ops.moe(NULL, &p) == 0, "%s: reference failed", what);
    float *bound = tu_xmalloc(nx * sizeof *bound);
    moe_bound(c, x, experts, weights, hg, hu, hd, y0, bound);

    struct dbuf d_x = dbuf_make(x, nx * sizeof(float));
    struct dbuf d_y = dbuf_make(y0, nx * sizeof(float));
    struct dbuf d_ex = dbuf_make(experts, ns * sizeof *experts);
    struct dbuf d_wt = dbuf_make(weights, ns * sizeof *weights);
    struct dbuf d_wg = dbuf_make(wg, nw * ds);
    struct dbuf d_wu = dbuf_make(wu, nw * ds);
    struct dbuf d_wd = dbuf_make(wd, nw * ds);
    struct dbuf d_work = dbuf_make(NULL, work_bytes); /* starts as garbage (canary bytes) */
    const void **pg = tu_xmalloc((size_t)E * sizeof *pg), **pu = tu_xmalloc((size_t)E * sizeof *pu);
    const void **pd = tu_xmalloc((size_t)E * sizeof *pd);
    moe_ptrs(pg, d_wg, stride * ds, E);
    moe_ptrs(pu, d_wu, stride * ds, E);
    moe_ptrs(pd, d_wd, stride * ds, E);
    if (unused >= 0)
        pg[unused] = pu[unused] = pd[unused] = NULL;
    struct dbuf d_pg = dbuf_make(pg, (size_t)E * sizeof *pg);
    struct dbuf d_pu = dbuf_make(pu, (size_t)E * sizeof *pu);
    struct dbuf d_pd = dbuf_make(pd, (size_t)E * sizeof *pd);
    /* Everything below on both GEMM kernels (the switch is read when a context is created):
     * the default one (tensor cores for bf16/f16 weights), then the FMA one. */
    struct kern_ctx *const path_ctx[2] = {gctx, moe_fma_ctx};
    static const char *const path_names[2] = {"default", "fma"};
    float *path_got[2] = {got, tu_xmalloc(nx * sizeof(float))};
    char name[sizeof what];
    memcpy(name, what, sizeof name);
    for (int path = 0; path < 2; path++) {
        gctx = path_ctx[path];
        got = path_got[path];
        snprintf(what, sizeof what, "%.200s [%s]", name, path_names[path]);
        CHECK(kern_cuda_upload(gctx, dptr(d_y), y0, nx * sizeof(float)) == 0, "upload");
        struct kern_moe_params q = {dptr(d_x), dptr(d_ex), dptr(d_wt), dptr(d_pg), dptr(d_pu),
                                    dptr(d_pd), dt, dptr(d_y), dptr(d_work), T, H, I, E, K};
        CHECK(cu_ops.moe(gctx, &q) == 0, "%s: launch failed", what);
        sync_ok(what);
        dbuf_fetch(d_y, got, what);
        dbuf_fetch(d_work, NULL, what);
        compare(what, got, want, nx, 0.0f, 0.0f, bound);
        double num = 0, den = 0;
        for (size_t i = 0; i < nx; i++) {
            num += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
            den += ((double)want[i] - y0[i]) * ((double)want[i] - y0[i]);
        }
        double frob = den > 0 ? sqrt(num / den) : sqrt(num);
        CHECK(frob <= 1e-2, "%s: relative Frobenius error of the update %.3g", what, frob);

        /* Batch invariance: the last token alone, in a call of its own, gets the same bits. */
        if (T > 1) {
            int64_t t = T - 1;
            CHECK(kern_cuda_upload(gctx, dptr(d_y), y0 + t * H, (size_t)H * sizeof(float)) == 0,
                  "upload");
            struct kern_moe_params one = q;
            one.x = (const float *)dptr(d_x) + t * H;
            one.experts = (const int32_t *)dptr(d_ex) + t * K;
            one.weights = (const float *)dptr(d_wt) + t * K;
            one.n_tokens = 1;
            CHECK(cu_ops.moe(gctx, &one) == 0, "%s: single-token launch failed", what);
            sync_ok(what);
            float *row = tu_xmalloc((size_t)H * sizeof *row);
            CHECK(kern_cuda_download(gctx, row, dptr(d_y), (size_t)H * sizeof(float)) == 0,
                  "download");
            CHECK(memcmp(row, got + t * H, (size_t)H * sizeof *row) == 0,
                  "%s: token %lld alone differs from the same token in the batch", what,
                  (long long)t);
            free(row);
        }

        /* Recorded in a graph and replayed: the same bits (no allocation, no host sync inside). */
        CHECK(kern_cuda_upload(gctx, dptr(d_y), y0, nx * sizeof(float)) == 0, "upload");
        struct kern_graph *g = NULL;
        CHECK(cu_ops.graph_begin(gctx) == 0, "%s: graph_begin", what);
        int rc_op = cu_ops.moe(gctx, &q);
        int rc_end = cu_ops.graph_end(gctx, &g);
        CHECK(rc_op == 0 && rc_end == 0, "%s: capture failed (%d, %d)", what, rc_op, rc_end);
        if (g) {
            CHECK(cu_ops.graph_launch(gctx, g) == 0, "%s: graph_launch", what);
            sync_ok(what);
            float *replay = tu_xmalloc(nx * sizeof *replay);
            dbuf_fetch(d_y, replay, what);
            CHECK(memcmp(replay, got, nx * sizeof *replay) == 0, "%s: graph replay differs", what);
            free(replay);
            cu_ops.graph_destroy(gctx, g);
        }

        /* Bad indices: reported at sync, nothing written outside the buffers. */
        int32_t bad[2] = {(int32_t)E, -1};
        for (int i = 0; i < 2; i++) {
            size_t at = (size_t)rnd((int64_t)ns);
            CHECK(kern_cuda_upload(gctx, (int32_t *)dptr(d_ex) + at, &bad[i], sizeof bad[i]) == 0,
                  "upload");
            CHECK(cu_ops.moe(gctx, &q) == 0, "%s: launch failed", what);
            char err[256] = "";
            int rc = kern_cuda_sync(gctx, err, sizeof err);
            CHECK(rc == KERN_ERR_INVALID && strstr(err, "moe expert") != NULL,
                  "%s: expert %d not reported (%d, %s)", what, bad[i], rc, err);
            sync_ok("after the moe fault was reported");
            CHECK(kern_cuda_upload(gctx, (int32_t *)dptr(d_ex) + at, experts + at, sizeof bad[i]) ==
                      0,
                  "upload");
        }
        if (unused >= 0 && I > 0) { /* an expert without weights that a slot now uses */
            int32_t e = (int32_t)unused;
            CHECK(kern_cuda_upload(gctx, dptr(d_ex), &e, sizeof e) == 0, "upload");
            CHECK(cu_ops.moe(gctx, &q) == 0, "%s: launch failed", what);
            CHECK(kern_cuda_sync(gctx, NULL, 0) == KERN_ERR_INVALID,
                  "%s: NULL weights of a used expert not reported", what);
            sync_ok("after the moe fault was reported");
            CHECK(kern_cuda_upload(gctx, dptr(d_ex), experts, sizeof e) == 0, "upload");
        }
        dbuf_fetch(d_y, NULL, what);
        dbuf_fetch(d_work, NULL, what);

        /* Bad scalars are refused before any launch. */
        struct kern_moe_params r = q;
        r.top_k = 0;
        CHECK(cu_ops.moe(gctx, &r) == KERN_ERR_INVALID, "%s: top_k 0 accepted", what);
        r = q;
        r.n_experts = 0;
        CHECK(cu_ops.moe(gctx, &r) == KERN_ERR_INVALID, "%s: no experts accepted", what);
        r = q;
        r.work = NULL;
        CHECK(cu_ops.moe(gctx, &r) == KERN_ERR_INVALID, "%s: NULL work accepted", what);
        r = q;
        r.n_tokens = INT64_MAX / 4;
        CHECK(cu_ops.moe(gctx, &r) == KERN_ERR_INVALID, "%s: overflowing sizes accepted", what);
        /* Block-format experts run on the host backends only (ops.h). */
        r = q;
        r.w_dtype = KERN_DTYPE_Q8_0;
        CHECK(cu_ops.moe(gctx, &r) == (r.hidden % KERN_QBLOCK || r.inter % KERN_QBLOCK
                                           ? KERN_ERR_INVALID : KERN_ERR_UNSUPPORTED),
              "%s: Q8_0 experts not refused", what);
        sync_ok(what);
    }
    gctx = path_ctx[0];
    got = path_got[0];
    /* The two kernels: the same rounded inputs and exact products, another fp32 order. */
    if (dt != KERN_DTYPE_F32) {
        snprintf(what, sizeof what, "%.200s: tensor cores vs fma", name);
        compare(what, path_got[0], path_got[1], nx, 0.0f, 0.0f, bound);
    }
    free(path_got[1]);

    dbuf_free(d_x);
    dbuf_free(d_y);
    dbuf_free(d_ex);
    dbuf_free(d_wt);
    dbuf_free(d_wg);
    dbuf_free(d_wu);
    dbuf_free(d_wd);
    dbuf_free(d_work);
    dbuf_free(d_pg);
    dbuf_free(d_pu);
    dbuf_free(d_pd);
    free(x);
    free(y0);
    free(wg);
    free(wu);
    free(wd);
    free(experts);
    free(weights);
    free(hg);
    free(hu);
    free(hd);
    free(pg);
    free(pu);
    free(pd);
    free(want);
    free(got);
    free(hwork);
    free(bound);
}

/* Page-locked host memory (what the engine downloads logits into): copies into it and out of
 * it are exact, device memory cannot be registered, and unregistering makes it plain again. */
static void test_host_register(void)
{
    size_t n = 100003;
    float *src = rand_f32(n), *dst = tu_xmalloc(n * sizeof *dst);
    struct dbuf d = dbuf_make(src, n * sizeof *src);
    int rc = kern_cuda_host_register(gctx, dst, n * sizeof *dst);
    CHECK(rc == 0, "kern_cuda_host_register of %zu bytes = %d", n * sizeof *dst, rc);
    memset(dst, 0, n * sizeof *dst);
    CHECK(kern_cuda_download(gctx, dst, dptr(d), n * sizeof *dst) == 0, "download to pinned");
    CHECK(memcmp(dst, src, n * sizeof *dst) == 0, "download into pinned memory differs");
    CHECK(kern_cuda_host_register(gctx, dptr(d), 1024) != 0, "device memory was registered");
    CHECK(kern_cuda_host_register(gctx, NULL, 16) == KERN_ERR_INVALID, "NULL registered");
    kern_cuda_host_unregister(gctx, dst);
    kern_cuda_host_unregister(gctx, NULL);
    memset(dst, 0, n * sizeof *dst);
    CHECK(kern_cuda_download(gctx, dst, dptr(d), n * sizeof *dst) == 0 &&
              memcmp(dst, src, n * sizeof *dst) == 0,
          "download after unregistering");
    dbuf_free(d);
    free(src);
    free(dst);
}

int main(void)
{
    if (kern_cuda_device_count() == 0) {
        printf("no CUDA device: skipping the GPU op test\n");
        return 77;
    }
    char err[256];
    if (kern_cuda_create(0, &cu_ops, &gctx, err, sizeof err) != 0) {
        fprintf(stderr, "kern_cuda_create: %s\n", err);
        return 1;
    }
    kern_ops_init_ref(&ref_ops);
    char name[128] = "";
    int major = 0, minor = 0, n_sm = 0;
    kern_cuda_device_info(gctx, name, sizeof name, &major, &minor, &n_sm);
    printf("device: %s (sm_%d%d, %d SMs)\n", name, major, minor, n_sm);

    test_embed(33, 32064, 3072, KERN_DTYPE_BF16);
    test_embed(1, 989, 111, KERN_DTYPE_F16);
    test_embed(111, 989, 33, KERN_DTYPE_F32);

    test_rmsnorm(1, 3072, KERN_DTYPE_BF16, 0);
    test_rmsnorm(33, 4096, KERN_DTYPE_BF16, 1);
    test_rmsnorm(111, 5120, KERN_DTYPE_F32, 0);
    test_rmsnorm(7, 33, KERN_DTYPE_F16, 0);

    test_matmul(1, 9216, 3072, KERN_DTYPE_BF16, 0, 0);  /* mini qkv_proj, decode */
    test_matmul(33, 3072, 3072, KERN_DTYPE_BF16, 1, 0); /* o_proj + residual */
    test_matmul(111, 3072, 8192, KERN_DTYPE_BF16, 1, 0); /* down_proj + residual */
    test_matmul(2, 32064, 3072, KERN_DTYPE_BF16, 0, 0); /* lm_head */
    test_matmul(5, 5120, 5120, KERN_DTYPE_BF16, 0, 3);  /* medium, strided views */
    test_matmul(989, 33, 111, KERN_DTYPE_BF16, 0, 1);
    test_matmul(33, 111, 989, KERN_DTYPE_F16, 1, 0);
    test_matmul(33, 989, 111, KERN_DTYPE_F32, 0, 2);
    test_matmul(1, 1, 1, KERN_DTYPE_BF16, 0, 0);

    test_rope(33, 32, 96, 96, 1);
    test_rope(111, 8, 128, 128, 0);
    test_rope(1, 40, 128, 64, 1); /* partial rotary */

    test_kv_write(33, 32, 96, KERN_DTYPE_BF16);
    test_kv_write(111, 8, 128, KERN_DTYPE_F16);
    test_kv_write(1, 32, 96, KERN_DTYPE_F32);

    static const struct attn_case cases[] = {
        {"attention prefill mha hd96 bs16", 32, 32, 96, 16, 0, KERN_DTYPE_BF16, 4,
         {33, 111, 1, 64}, {33, 200, 989, 64}},
        {"attention prefill gqa hd128 bs7 window 5", 32, 8, 128, 7, 5, KERN_DTYPE_BF16, 3,
         {111, 33, 1}, {111, 70, 40}},
        {"attention prefill window 2047 hd96", 8, 8, 96, 16, 2047, KERN_DTYPE_BF16, 2,
         {111, 33}, {3000, 2100}},
        {"attention decode batch hd96 bs16", 32, 32, 96, 16, 0, KERN_DTYPE_BF16, 6,
         {1, 1, 1, 1, 1, 1}, {1, 33, 111, 989, 17, 64}},
        {"attention decode one long seq hd128 gqa", 32, 8, 128, 16, 0, KERN_DTYPE_BF16, 1,
         {1}, {4000}},
        {"attention decode window 2047 f32 cache", 4, 2, 96, 32, 2047, KERN_DTYPE_F32, 2,
         {1, 1}, {3000, 100}},
        {"attention mixed decode+chunk hd64 f16", 4, 4, 64, 16, 0, KERN_DTYPE_F16, 3,
         {1, 2, 1}, {50, 9, 1}},
        /* The fixture models' head sizes (lanes past head_dim 16 own no output dims). */
        {"attention prefill hd16 window 24 bf16", 4, 4, 16, 16, 24, KERN_DTYPE_BF16, 3,
         {60, 25, 1}, {60, 25, 33}},
        {"attention decode hd16 bf16", 4, 4, 16, 16, 0, KERN_DTYPE_BF16, 4,
         {1, 1, 1, 1}, {1, 40, 111, 989}},
        {"attention prefill gqa hd32 bf16", 8, 2, 32, 16, 0, KERN_DTYPE_BF16, 2,
         {40, 7}, {40, 20}},
        {"attention decode gqa hd32 f32 cache", 8, 2, 32, 16, 0, KERN_DTYPE_F32, 3,
         {1, 1, 1}, {1, 48, 2000}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        test_attention(&cases[i]);
    /* The same cases on the fp32 prefill kernel, which bf16 caches otherwise skip for the
     * tensor-core one (the switch is read when a context is created). */
    struct kern_ctx *tc_ctx = gctx;
    setenv("PHISERVE_CUDA_ATTENTION", "fp32", 1);
    struct kern_ops fp32_ops;
    if (kern_cuda_create(0, &fp32_ops, &gctx, err, sizeof err) != 0) {
        fprintf(stderr, "kern_cuda_create (fp32 attention): %s\n", err);
        return 1;
    }
    unsetenv("PHISERVE_CUDA_ATTENTION");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (cases[i].dt == KERN_DTYPE_BF16)
            test_attention(&cases[i]);
    kern_cuda_destroy(gctx);
    gctx = tc_ctx;

    test_host_register();

    test_silu_add_gather(33, 8192);
    test_silu_add_gather(1, 6400);
    test_silu_add_gather(111, 33);

    test_argmax(40, 32064, 32064); /* lm_head rows: Phi-3's vocabulary */
    test_argmax(17, 32064, 32067);
    test_argmax(16, 31, 31);
    test_argmax(24, 31, 40);
    test_argmax(8, 1, 1);
    test_argmax(8, 1, 4);
    test_argmax(70000, 2, 2);      /* more rows than one grid: the grid-stride loop */

    test_sample(16, 32064, 32064, 48, 24); /* Phi-3's vocabulary, 3 jobs per row */
    test_sample(5, 32064, 32067, 24, 4);
    test_sample(8, 600, 600, 40, 8);       /* chunks of 2: most threads own a little */
    test_sample(8, 31, 40, 40, 6);         /* fewer ids than threads: most own none */
    test_sample(4, 1, 4, 16, 1);

    /* Phi-3.5-MoE: hidden 4096, inter 6400, 16 experts, top 2; router_jitter_noise 0.01. */
    test_layernorm(33, 4096, KERN_DTYPE_BF16, 0, 0.0f);
    test_layernorm(5, 4096, KERN_DTYPE_BF16, 1, 8.0f);
    test_layernorm(7, 33, KERN_DTYPE_F16, 0, 0.0f);
    test_layernorm(3, 1, KERN_DTYPE_F32, 0, 0.0f);
    test_layernorm(1, 1001, KERN_DTYPE_F32, 1, -2.0f);

    test_bias_add(37, 4096, 4096, KERN_DTYPE_BF16);
    test_bias_add(3, 6400, 6403, KERN_DTYPE_F32);
    test_bias_add(1, 33, 40, KERN_DTYPE_F16);
    test_bias_add(5, 0, 3, KERN_DTYPE_BF16);

    test_moe_route(1000, 16, 16, 0.01f);
    test_moe_route(37, 16, 19, 0.01f);
    test_moe_route(3, 2, 2, 0.01f);
    test_moe_route(24, 37, 40, 0.0f);
    test_moe_route(1, 16, 16, 0.5f);

    /* Phi-3-vision: quick_gelu over a CLIP MLP row block, GELU of the projector; dense
     * attention at the tiny fixtures' shape, a crop of 577 tokens (2 of its 16 heads), and
     * head sizes that take each register tile (32, 64, 128, 256; 256 needs the shared memory
     * opt-in). A real GPU also runs 4096 tokens (minutes on the emulator). */
    test_act(577 * 64 + 5, KERN_ACT_QUICK_GELU);
    test_act(1000, KERN_ACT_GELU);
    test_act(1, KERN_ACT_GELU);
    static const struct ad_case ad_cases[] = {
        {3, 17, 4, 8, 5, 1.0f, 0},
        {1, 577, 2, 64, 0, 1.0f, 0},
        {2, 33, 3, 80, 7, 1.0f, 0},
        {1, 70, 1, 256, 0, 1.0f, 0},
        {4, 1, 2, 1, 0, 1.0f, 0},
        {1, 100, 1, 128, 1, 5.0f, 0},
        {2, 40, 2, 8, 0, 1.0f, 1},
    };
    for (size_t i = 0; i < sizeof ad_cases / sizeof ad_cases[0]; i++)
        test_attention_dense(&ad_cases[i]);
    if (strstr(name, "emulator") == NULL) {
        static const struct ad_case long_case = {1, 4096, 2, 64, 0, 1.0f, 0};
        test_attention_dense(&long_case);
    }

    static const struct moe_case moe_cases[] = {
        /* cut-down Phi-3.5-MoE: 16 experts, top 2, half of them without a token */
        {37, 96, 80, 16, 2, KERN_DTYPE_BF16, MOE_ROUTE_DISTINCT, 0},
        {1, 132, 70, 16, 2, KERN_DTYPE_F16, MOE_ROUTE_DISTINCT, 0},
        {3, 66, 130, 16, 3, KERN_DTYPE_F32, MOE_ROUTE_ANY, 0},   /* hidden not a multiple of 4 */
        {37, 64, 64, 16, 1, KERN_DTYPE_BF16, MOE_ROUTE_ONE, 0},  /* one expert takes everything */
        {20, 48, 33, 4, 2, KERN_DTYPE_BF16, MOE_ROUTE_ONE, 0},   /* duplicates: 40 rows, 3 tiles */
        {9, 32, 40, 37, 2, KERN_DTYPE_F32, MOE_ROUTE_ANY, 0},    /* more experts than warps */
        {5, 40, 0, 4, 2, KERN_DTYPE_BF16, MOE_ROUTE_ANY, 0},     /* inter 0: an empty sum */
        {70, 24, 20, 16, 2, KERN_DTYPE_F16, MOE_ROUTE_ANY, 0},   /* 140 slots, many tiles */
        /* >= 16 slots per expert: 64-row tensor-core tiles (the last token alone: 16-row) */
        {150, 72, 100, 4, 2, KERN_DTYPE_BF16, MOE_ROUTE_ANY, 0}, /* inter % 8 != 0 */
        {100, 66, 96, 4, 2, KERN_DTYPE_F16, MOE_ROUTE_ONE, 0},   /* hidden % 8 != 0 */
        /* the real shapes, decode-sized */
        {2, 4096, 6400, 16, 2, KERN_DTYPE_BF16, MOE_ROUTE_DISTINCT, 4099},
    };
    setenv("PHISERVE_CUDA_MOE", "fma", 1);
    struct kern_ops fma_ops;
    if (kern_cuda_create(0, &fma_ops, &moe_fma_ctx, err, sizeof err) != 0) {
        fprintf(stderr, "kern_cuda_create (fma moe): %s\n", err);
        return 1;
    }
    unsetenv("PHISERVE_CUDA_MOE");
    for (size_t i = 0; i < sizeof moe_cases / sizeof moe_cases[0]; i++)
        test_moe(&moe_cases[i]);
    kern_cuda_destroy(moe_fma_ctx);

    kern_cuda_destroy(gctx);
    return tu_finish("test_gpu_ops");
}
