/* The kernel op table: every compute op the models use, declared once.
 * Backends (ref, cpu, cuda) fill a struct kern_ops; the engine calls only through it.
 * This header knows nothing of models, requests or files: raw pointers, shapes, strides. */
#ifndef PHISERVE_KERNELS_OPS_H
#define PHISERVE_KERNELS_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* the CUDA backend's .cu files are C++ */
#endif

/* Element types of weights and caches. Activations on the CPU backends are always fp32.
 * Q8_0, Q4_0 and the K formats are block formats for matmul weights only (the CPU backends),
 * laid out as llama.cpp's ggml types of the same names, all fields little-endian, every
 * element exact in fp32 as written below (each product and difference one fp32 operation, in
 * the order shown). Q8_0 and Q4_0 (kern_quantize makes them) are blocks of KERN_QBLOCK
 * elements, the block's fp16 scale d followed by its values:
 *  - Q8_0: KERN_QBLOCK int8 values q; element = d * q;
 *  - Q4_0: KERN_QBLOCK / 2 bytes, byte j holding q_j in its low nibble and q_{j+16} in its
 *    high nibble (0..15); element = d * (q - 8).
 * The K formats (read from GGUF files as stored) are super-blocks of KERN_QKBLOCK elements,
 * in sub-blocks of 32 (Q4_K, Q5_K) or 16 (Q6_K) with their own 6- or 8-bit scales
 * (dtype.h's kern_kq_elem decodes one element):
 *  - Q4_K: fp16 d, fp16 dmin, 12 bytes of eight 6-bit (scale, min) pairs, 128 bytes of
 *    nibbles; element = (d * scale) * q - dmin * min, q in 0..15;
 *  - Q5_K: the same with 32 bytes of fifth bits before the nibbles, q in 0..31;
 *  - Q6_K: 128 bytes of low nibbles, 64 of high bit pairs, 16 int8 scales, fp16 d;
 *    element = (d * scale) * (q - 32), q in 0..63.
 * A row of k elements (k a multiple of kern_dtype_block_elems) takes whole blocks of
 * kern_dtype_row_bytes(dtype, kern_dtype_block_elems(dtype)) bytes; rows follow one another.
 *
 * Q8_0_R16 and Q4_0_R16 are Q8_0 and Q4_0 matrices with their rows interleaved in groups of
 * KERN_R16 for the int8 dot (kern_repack makes them; matmul weights only, the host backends
 * only, see kern_matmul_params). A matrix of n rows and k columns is ceil(n / 16) groups of
 * 16 * kern_dtype_row_bytes(Q8_0 or Q4_0, k) bytes (kern_dtype_matrix_bytes), the rows past n
 * all zero (d = 0, q = 0 or 8). Within a group, for each block b of k in order: the 16 rows'
 * fp16 scales d (32 bytes, row 0 first), then their values as 4-byte pieces, piece t of rows
 * 0..15 side by side (64 bytes per t):
 *  - Q8_0_R16: t = 0..7, piece t = int8 values 4t .. 4t+3 of the row's block;
 *  - Q4_0_R16: t = 0..3, piece t = bytes 4t .. 4t+3 of the row's Q4_0 block (low nibbles:
 *    values 4t .. 4t+3, high nibbles: values 16+4t .. 16+4t+3).
 * Q4_K_R16 is Q4_K so interleaved, its scales and mins unpacked: a matrix is
 * ceil(n / 16) * (k / 256) super-blocks of KERN_R16 * KERN_Q4_K_R16_ROW_BYTES bytes (148 per
 * row and super-block instead of 144), each: the 16 rows' fp16 d (32 bytes), their fp16 dmin
 * (32 bytes), the 6-bit scales of sub-blocks 0..7 as bytes (16 per sub-block, row 0 first:
 * 128 bytes), the mins likewise (128 bytes), then for each 64-element chunk c = 0..3 and t =
 * 0..7 the rows' bytes 32c + 4t .. 32c + 4t + 3 of the Q4_K nibbles (64 bytes per t; low
 * nibbles: sub-block 2c's values 4t .. 4t+3, high nibbles: sub-block 2c + 1's); padding rows
 * all zero.
 * Q5_K_R16 is Q5_K so interleaved (180 bytes per row and super-block instead of 176): d, dmin,
 * scales and mins as Q4_K_R16's, then the same 32 nibble pieces, each of the first eight (c =
 * 0, t = 0..7) followed by the rows' bytes 4t .. 4t + 3 of the Q5_K fifth bits qh (64 bytes;
 * bit j of a byte is the fifth bit of sub-block j's value), the order in which the int8 dot
 * first reads them; padding rows all zero.
 * Q6_K_R16 is Q6_K so interleaved, KERN_R16 * KERN_Q6_K_R16_ROW_BYTES bytes a group's
 * super-block (210 per row, as Q6_K), each: the 16 rows' fp16 d (32 bytes), the int8 scales of
 * sub-blocks 0..15 (16 per sub-block, row 0 first: 256 bytes), then 16 steps of 192 bytes in
 * the order the int8 dot reads them: step 8h + j (h = 0..1, j = 0..7) holds the rows' Q6_K
 * low-nibble bytes ql[64h + 4j .. 64h + 4j + 3], their ql[64h + 32 + 4j ..] and their high-bit
 * pairs qh[32h + 4j ..], each as 16 4-byte pieces side by side (64 bytes, row 0 first);
 * padding rows all zero.
 * kern_dtype_block_elems and kern_dtype_row_bytes treat them as no format at all (0 and -1),
 * so that nothing but the matmul op takes them. */
enum kern_dtype {
    KERN_DTYPE_F32 = 0,
    KERN_DTYPE_F16 = 1,
    KERN_DTYPE_BF16 = 2,
    KERN_DTYPE_Q8_0 = 3,
    KERN_DTYPE_Q4_0 = 4,
    KERN_DTYPE_Q4_K = 5,
    KERN_DTYPE_Q5_K = 6,
    KERN_DTYPE_Q6_K = 7,
    KERN_DTYPE_Q8_0_R16 = 8,
    KERN_DTYPE_Q4_0_R16 = 9,
    KERN_DTYPE_Q4_K_R16 = 10,
    KERN_DTYPE_Q5_K_R16 = 11,
    KERN_DTYPE_Q6_K_R16 = 12,
};
#define KERN_DTYPE_COUNT 13
#define KERN_R16 16
#define KERN_Q4_K_R16_ROW_BYTES 148
#define KERN_Q5_K_R16_ROW_BYTES 180
/* Byte offsets within a Q4_K_R16 / Q5_K_R16 group's super-block (the layout above): d at 0,
 * then dmin, the scales and mins (sub-block j's 16 at + 16 j), then the quants: nibble piece
 * p = 8c + t (64 bytes) at KERN_KR16_QS + 64 p in Q4_K_R16 and at KERN_Q5R16_PIECE(p) in
 * Q5_K_R16, whose fifth-bit piece t is at KERN_Q5R16_QH(t). */
#define KERN_KR16_DMIN (2 * KERN_R16)
#define KERN_KR16_SCALES (4 * KERN_R16)
#define KERN_KR16_MINS (KERN_KR16_SCALES + 8 * KERN_R16)
#define KERN_KR16_QS (KERN_KR16_MINS + 8 * KERN_R16)
#define KERN_Q5R16_PIECE(p) (KERN_KR16_QS + ((p) < 8 ? 128 * (p) : 64 * (p) + 512))
#define KERN_Q5R16_QH(t) (KERN_KR16_QS + 128 * (t) + 64)
#define KERN_Q6_K_R16_ROW_BYTES 210
/* Byte offsets within a Q6_K_R16 group's super-block: d at 0, then the scales (sub-block j's
 * 16 at + 16 j), then the steps of KERN_Q6R16_STEP bytes (their three 64-byte parts in order:
 * ql, ql + 32, qh). */
#define KERN_Q6R16_SCALES (2 * KERN_R16)
#define KERN_Q6R16_QS (KERN_Q6R16_SCALES + 16 * KERN_R16)
#define KERN_Q6R16_STEP (3 * 4 * KERN_R16)
#define KERN_QBLOCK 32
#define KERN_Q8_0_BLOCK_BYTES 34
#define KERN_Q4_0_BLOCK_BYTES 18
#define KERN_QKBLOCK 256
#define KERN_Q4_K_BLOCK_BYTES 144
#define KERN_Q5_K_BLOCK_BYTES 176
#define KERN_Q6_K_BLOCK_BYTES 210

/* Error codes returned by every op (0 on success). */
enum kern_status {
    KERN_OK = 0,
    KERN_ERR_INVALID = -1,     /* a shape, index or pointer argument is out of range */
    KERN_ERR_UNSUPPORTED = -2, /* the backend does not implement this dtype/shape */
    KERN_ERR_NOMEM = -3,
    KERN_ERR_DEVICE = -4,      /* a device (CUDA) call failed */
    KERN_ERR_STALE = -5,       /* a graph refers to memory the backend has since replaced */
};

/* Size in bytes of one element of dtype; 0 for the block formats (see kern_dtype_row_bytes). */
size_t kern_dtype_size(enum kern_dtype dtype);
/* Elements per block of a block format (KERN_QBLOCK or KERN_QKBLOCK); 0 for the others. */
int64_t kern_dtype_block_elems(enum kern_dtype dtype);
/* The bits argument of dtype.h's K-format decoders: 4 (Q4_K), 5 (Q5_K), 6 (Q6_K); 0 for the
 * others. */
int kern_dtype_kq_bits(enum kern_dtype dtype);
/* Bytes of a row of n elements of dtype, or -1 when n < 0, when a block format's row is not
 * whole blocks, or on overflow. */
int64_t kern_dtype_row_bytes(enum kern_dtype dtype, int64_t n);
/* Bytes of a matrix of n_rows rows of k elements in dtype (for the R16 formats, whole groups
 * of KERN_R16 rows), or -1 when a dimension is negative, a row is not whole blocks, or on
 * overflow. */
int64_t kern_dtype_matrix_bytes(enum kern_dtype dtype, int64_t n_rows, int64_t k);
/* The plain block format an R16 format interleaves (Q8_0, Q4_0, Q4_K, Q5_K or Q6_K), the R16 format
 * of a plain one (or KERN_DTYPE_COUNT when there is none), and whether dtype is an R16
 * format. */
enum kern_dtype kern_dtype_r16_base(enum kern_dtype dtype);
enum kern_dtype kern_dtype_r16_of(enum kern_dtype dtype);
int kern_dtype_is_r16(enum kern_dtype dtype);
/* Name ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k", "q8_0_r16", "q4_0_r16",
 * "q4_k_r16", "q5_k_r16", "q6_k_r16") for messages. */
const char *kern_dtype_name(enum kern_dtype dtype);

/* Quantizes src [n_rows, k] (any dtype: float, or a block format widened exactly first; k a
 * multiple of KERN_QBLOCK and of the source's block) into dst, which
 * holds n_rows * kern_dtype_row_bytes(to, k) bytes, to being Q8_0 or Q4_0. Per block of 32
 * values x (widened to fp32), with fp16() rounding to nearest even and round() rounding half
 * away from zero, quotients in fp32:
 *  - Q8_0: d = fp16(max|x| / 127); q = clamp(round(x / d), -127, 127);
 *  - Q4_0: m = the first x of largest magnitude (sign kept); d = fp16(m / -8);
 *    q = clamp(round(x / d) + 8, 0, 15) (so m itself is q = 0, i.e. -8 d);
 * and every value is 0 (q = 0 or 8) when d is 0. Returns KERN_ERR_INVALID (dst then
 * undefined) for a bad shape or dtype, a non-finite value, or a block whose scale overflows
 * fp16. Plain C on the calling thread; not an op. */
int kern_quantize(const void *src, enum kern_dtype src_dtype, int64_t n_rows, int64_t k,
                  enum kern_dtype to, void *dst);

/* Interleaves src, n_rows rows of k elements in Q8_0, Q4_0 (k a multiple of KERN_QBLOCK),
 * Q4_K, Q5_K or Q6_K (of KERN_QKBLOCK), into dst in the matching R16 format
 * (kern_dtype_matrix_bytes(kern_dtype_r16_of(from), n_rows, k) bytes; the padding rows zero).
 * Moves bytes only (Q4_K's packed 6-bit scales and mins are unpacked to a byte each): every
 * value and scale is kept. Returns KERN_ERR_INVALID for a bad shape or dtype. Plain C on the
 * calling thread. */
int kern_repack(const void *src, enum kern_dtype from, int64_t n_rows, int64_t k, void *dst);

/* A recorded sequence of ops that a device backend replays with one call (a CUDA graph).
 * Opaque; made by kern_ops.graph_end. */
struct kern_graph;

/* Execution context of a backend: a thread pool on the CPU, a stream on CUDA.
 * Created by the backend (kern_ctx_create_cpu); opaque to callers. */
struct kern_ctx;

/* embed: out[t, :] = table[ids[t], :] converted to fp32. Fails with KERN_ERR_INVALID if any
 * id is outside [0, vocab). */
struct kern_embed_params {
    const int32_t *ids;        /* [n_tokens] */
    const void *table;         /* [vocab, hidden] in table_dtype (a block format: rows of whole
                                  blocks; the host backends only) */
    enum kern_dtype table_dtype;
    float *out;                /* [n_tokens, hidden] */
    int64_t n_tokens, vocab, hidden;
};

/* rmsnorm: out[t] = w * (x[t] * 1/sqrt(mean(x[t]^2) + eps)), statistics in fp32 or wider.
 * out may alias x. HF casts the normalised value to the activation dtype before the gain;
 * with fp32 activations that cast is the identity. */
struct kern_rmsnorm_params {
    const float *x;            /* [n_rows, dim], row stride dim */
    const void *w;             /* [dim] in w_dtype */
    enum kern_dtype w_dtype;
    float *out;                /* [n_rows, dim] */
    int64_t n_rows, dim;
    float eps;
};

/* matmul: y[m, n] (+)= x[m, k] @ W[n, k]^T, W stored row-major [n, k] in w_dtype (the
 * PyTorch nn.Linear layout). accumulate != 0 adds into y (used for the residual add). Q8_0 and
 * Q4_0 weights need k to be a multiple of KERN_QBLOCK (the host backends only; CUDA returns
 * KERN_ERR_UNSUPPORTED).
 *
 * The R16 formats (host backends only) are the int8 dot: x is rounded to 8-bit blocks first
 * and the products are integer. For every row i of x and block b of 32 of its values v_t,
 * every operation in fp32 unless said otherwise:
 *  - a = max |v_t|; d = a / 127; when d < FLT_MIN (a zero or tiny block) d = 0 and every
 *    q_t = 0, else q_t = nearbyint(v_t * (1 / d)), rounding half to even (|q_t| <= 127);
 *  - when any v_t is not finite, row i of y becomes NaN (every column; also when
 *    accumulating);
 *  - with W's block values w_t and scale dw (Q8_0: w_t = q; Q4_0: w_t = q - 8), the integer
 *    s = sum_t w_t * q_t is exact, and y[i, j] (+)= sum_b (dw * d) * s, each product dw * d
 *    one fp32 rounding, the sum over b in fp32 in an order of the backend's choosing (the
 *    reference: fp64);
 *  - Q4_K_R16 and Q5_K_R16: block b is sub-block b of its super-block, with f0 = d * scale
 *    and f1 = dmin * min (exact fp32 products) and its quants w_t (0..15, Q5_K 0..31): with
 *    s as above and x_s = sum_t q_t, y[i, j] (+)= sum_b ((f0 * d) * s - (f1 * d) * x_s),
 *    each product of two factors one fp32 rounding, the rest as above.
 *  - Q6_K_R16: block b is sub-blocks 2b and 2b + 1 (16 values each) of its super-block, each
 *    with f0 = d * scale (an exact fp32 product) and its quants w_t (0..63): with
 *    s = sum_t (w_t - 32) * q_t over the sub-block's 16 values (exact), y[i, j] (+)= the sum
 *    over sub-blocks of (f0 * d) * s, each product of two factors one fp32 rounding, the rest
 *    as above.
 * W holds ceil(n / KERN_R16) groups (kern_dtype_matrix_bytes); w points at the first. */
struct kern_matmul_params {
    const float *x;            /* [m, k], row stride ldx >= k */
    const void *w;             /* [n, k] in w_dtype, contiguous */
    enum kern_dtype w_dtype;
    float *y;                  /* [m, n], row stride ldy >= n */
    int64_t m, n, k, ldx, ldy;
    int accumulate;
};

/* rope: rotates, in place, the first rot_dim lanes of every head of every token in the
 * NeoX / rotate_half layout (lane i pairs with lane i + rot_dim/2):
 *   angle = positions[t] * inv_freq[variant[t]][i mod rot_dim/2]   (fp32 product)
 *   c = mscale * cos(angle), s = mscale * sin(angle)
 *   x[i] = x[i]*c - x[i+h]*s ;  x[i+h] = x[i+h]*c + x[i]*s      (h = rot_dim/2, i < h)
 * Lanes rot_dim..head_dim-1 pass through (partial rotary). variant may be NULL (all 0). */
struct kern_rope_params {
    float *x;                  /* [n_tokens, n_heads, head_dim], token stride token_stride */
    const int32_t *positions;  /* [n_tokens] */
    const uint8_t *variant;    /* [n_tokens] index into inv_freq tables, or NULL */
    const float *inv_freq;     /* [n_variants, rot_dim/2] */
    int64_t n_tokens, n_heads, head_dim, rot_dim, token_stride;
    int n_variants;
    float mscale;
};

/* kv_write: copies each token's K and V rows into the paged cache at slot_mapping[t]
 * (slot = block * block_size + offset); slot < 0 skips the token. Converts fp32 to
 * cache_dtype. The cache of one layer is [n_slots, n_kv_heads, head_dim] for K and for V. */
struct kern_kv_write_params {
    const float *k;            /* [n_tokens, n_kv_heads, head_dim], token stride token_stride */
    const float *v;            /* same layout as k */
    const int64_t *slot_mapping; /* [n_tokens] */
    void *k_cache;             /* [n_slots, n_kv_heads, head_dim] in cache_dtype */
    void *v_cache;
    enum kern_dtype cache_dtype;
    int64_t n_tokens, n_kv_heads, head_dim, token_stride, n_slots;
};

/* attention: causal paged attention over variable-length sequences (prefill and decode in one
 * call). Sequence s owns query rows [q_start[s], q_start[s] + q_len[s]) of q and out; its keys
 * are cache positions 0 .. ctx_len[s]-1, position p living in slot
 * block_tables[s * max_blocks + p / block_size] * block_size + p % block_size.
 * Query row i of sequence s sits at position ctx_len[s] - q_len[s] + i and sees key j iff
 * j <= pos and (sliding_window == 0 or j > pos - sliding_window): exactly sliding_window keys
 * including itself, as transformers masks. GQA: query head h reads kv head h / (n_heads/n_kv_heads).
 * Scores are scaled by `scale`, softmax in fp32 or wider. */
struct kern_attention_params {
    const float *q;            /* [n_tokens, n_heads, head_dim], token stride q_stride */
    const void *k_cache;       /* [n_slots, n_kv_heads, head_dim] in cache_dtype */
    const void *v_cache;
    enum kern_dtype cache_dtype;
    float *out;                /* [n_tokens, n_heads, head_dim], contiguous */
    const int32_t *q_start;    /* [n_seqs] */
    const int32_t *q_len;      /* [n_seqs] */
    const int32_t *ctx_len;    /* [n_seqs] */
    const int32_t *block_tables; /* [n_seqs, max_blocks] */
    int64_t n_tokens, n_seqs, n_heads, n_kv_heads, head_dim, q_stride;
    int64_t max_blocks, block_size, n_slots;
    int64_t sliding_window;    /* 0 = none */
    float scale;
};

/* silu_mul: out[t, i] = silu(gu[t, i]) * gu[t, inter + i], silu(x) = x / (1 + exp(-x)).
 * gu is the fused [gate | up] projection output. */
struct kern_silu_mul_params {
    const float *gu;           /* [n_tokens, 2 * inter] */
    float *out;                /* [n_tokens, inter] */
    int64_t n_tokens, inter;
};

/* add: y[i] += x[i] for i < n (the residual add). */
struct kern_add_params {
    float *y;                  /* [n] */
    const float *x;            /* [n] */
    int64_t n;
};

/* gather_rows: out[i, :] = x[rows[i], :]; selects the rows whose logits are needed. */
struct kern_gather_rows_params {
    const float *x;            /* [n_in, dim] */
    const int32_t *rows;       /* [n_out], each in [0, n_in) */
    float *out;                /* [n_out, dim] */
    int64_t n_in, n_out, dim;
};

/* argmax: out[r] = the index of the largest x[r, i], i < dim: the sampler's greedy rule on
 * raw logits, so that a greedy row needs only its token id back from a device. NaN counts as
 * -inf; among equal largest values (+inf included) the smallest index wins; a row with no
 * element above -inf (all -inf or NaN, or dim == 0) gives -1, where the sampler would fail
 * with "no token has a finite logit". dim must be at most INT32_MAX. */
struct kern_argmax_params {
    const float *x;            /* [n_rows, dim], row stride ldx >= dim */
    int32_t *out;              /* [n_rows] */
    int64_t n_rows, dim, ldx;
};

/* sample: one token per job, drawn from a row of x by the engine sampler's rules
 * (engine/sampler.h, steps 1 to 8), so that a sampled row needs only its id back from a
 * device. The host prepares what depends on a sequence's history: the per-token changes of
 * step 1 and 2 (mods) and the uniform draw u. Job j reads row jobs[j].row of x into
 * work[j, :] and there:
 *  1. y_i = x_i, NaN as -inf. Each of its mods (ids unique within a job) then sets, in float,
 *     y = y + bias; y = -inf if ban; y = y > 0 ? y / rep : y * rep; y -= sub_freq; y -= sub_pres
 *     (a NaN this makes, as inf - inf, counts as -inf too).
 *  2. temperature <= 0 or NaN (greedy): out[j] = the first index of the largest y.
 *  3. Otherwise, m = max y, then in float w_i = 1 where y_i == m, 0 where y_i == -inf, else
 *     kern_weight_exp((y_i - m) * (1.0f / temperature)) (kernels/weight_exp.h: the same bits
 *     on every backend); then w_i = 0 where w_i < min_p.
 *  4. top_k, when 0 < top_k < the number of w_i > 0: w_i = 0 where w_i is below the top_k-th
 *     largest w (every w equal to it is kept).
 *  5. top_p, when top_p < 1 (NaN: off): target = top_p > 0 ? top_p * sum(w) : 0 (sums in
 *     double). Ranking the w_i > 0 by w descending, then by id ascending, rank r is kept when
 *     the mass ranked before it is below target; rank 0 is always kept. w_i = 0 for the rest.
 *  6. t = u * sum(w); out[j] = the first i with w_i > 0 whose running sum w_0 + ... + w_i
 *     exceeds t, or the last i with w_i > 0 when none does (t rounded up to the sum).
 * out[j] = -1 when no y is above -inf (the sampler's "no token has a finite logit"). Sums of
 * weights are in double and may be taken in any order: two backends agree except where t or a
 * top_p target falls within rounding of a boundary. Each job's result depends on that job
 * alone (not on the batch). The caller clamps temperature and min_p as the sampler does; u
 * outside [0, 1) acts as the nearest end (u >= 1 as 1, NaN as 0). dim must be at most
 * INT32_MAX. Host backends check rows, mod ranges and mod ids and return KERN_ERR_INVALID; a
 * device backend reports them at sync.
 *
 * Given tokens. A job with given set draws nothing: out[j] = token, and steps 1 to 6, its
 * mods and u are skipped (work[j, :] is left as it was). A token outside [0, dim) is a bad
 * job, as a bad row (prompt logprobs use this: the token is the prompt's next one).
 *
 * Logprobs. A job with logprobs set also gets the raw logprobs of its row, vLLM's default
 * (the log-softmax of x itself, before any step above; see engine/sampler.h): with x_i NaN
 * as -inf, M = the largest x_i and S = the sum of (x_i == M ? 1 : kern_weight_exp(x_i - M))
 * in double, the logprob of a value v is -inf when M or v is -inf, else
 * (v == M ? 0 : v - M) - log(S) in double, rounded to float. logprob[j] = that of x[out[j]]
 * (-inf when out[j] is -1); top[j * KERN_MAX_TOP_LOGPROBS + r] for r < min(n_top clamped to
 * [0, 20], dim) = the r-th largest x_i (NaN as -inf, ties by ascending id, -inf entries
 * included when fewer are finite) with its logprob. Nothing of logprob[j] or top[j, :] is
 * written for a job without logprobs; both may be NULL when no job asks (a job that asks
 * then is a bad job). Logprob values may differ
 * between backends by the rounding of log and of the sum's order (about 1e-7). */
#define KERN_MAX_TOP_LOGPROBS 20

struct kern_token_logprob {
    int32_t token;
    float logprob;
};

struct kern_sample_mod {
    int32_t token;             /* in [0, dim) */
    int32_t ban;               /* nonzero: the token is banned (-inf; min_tokens) */
    float bias;                /* logit_bias (0: none) */
    float rep;                 /* repetition penalty (1: none) */
    float sub_freq;            /* frequency_penalty * count (0: none) */
    float sub_pres;            /* presence_penalty when generated before (0: none) */
};

struct kern_sample_job {
    int64_t row;               /* in [0, n_rows) */
    int64_t mod_start, n_mods; /* its mods: mods[mod_start .. mod_start + n_mods) */
    double u;                  /* the uniform draw, [0, 1) */
    float temperature;         /* <= 0 or NaN: greedy */
    float min_p;               /* <= 0: off */
    float top_p;               /* >= 1 or NaN: off */
    int32_t top_k;             /* <= 0: off */
    int32_t given;             /* nonzero: out = token, nothing drawn */
    int32_t token;             /* the given token, in [0, dim) */
    int32_t logprobs;          /* nonzero: logprob[j] and n_top alternatives in top[j, :] */
    int32_t n_top;             /* alternatives wanted; clamped to [0, 20] */
};

struct kern_sample_params {
    const float *x;            /* [n_rows, dim], row stride ldx >= dim */
    const struct kern_sample_job *jobs; /* [n_jobs] */
    const struct kern_sample_mod *mods; /* [n_mods] */
    float *work;               /* [n_jobs, dim] scratch: the processed row of each job. Only
                                  a job that draws uses its row j, so a caller that puts
                                  those D jobs first needs D rows only. */
    int32_t *out;              /* [n_jobs] token ids */
    float *logprob;            /* [n_jobs] raw logprob of out[j] (jobs with logprobs set) */
    struct kern_token_logprob *top; /* [n_jobs, KERN_MAX_TOP_LOGPROBS] */
    int64_t n_rows, dim, ldx, n_jobs, n_mods;
};

/* layernorm: out[t] = (x[t] - mean) / sqrt(var + eps) * w + b per row, var the biased
 * variance (nn.LayerNorm, Phi-3.5-MoE's norms), statistics in fp32 or wider. out may alias x.
 * w and b are [dim] in w_dtype. */
struct kern_layernorm_params {
    const float *x;            /* [n_rows, dim], row stride dim */
    const void *w;             /* [dim] in w_dtype */
    const void *b;             /* [dim] in w_dtype */
    enum kern_dtype w_dtype;
    float *out;                /* [n_rows, dim] */
    int64_t n_rows, dim;
    float eps;
};

/* bias_add: y[r * ldy + i] += b[i] for r < n_rows, i < dim: the bias of a linear layer, added
 * after its matmul (b converted to fp32, one float add). */
struct kern_bias_add_params {
    float *y;                  /* [n_rows, dim], row stride ldy >= dim */
    const void *b;             /* [dim] in b_dtype */
    enum kern_dtype b_dtype;
    int64_t n_rows, dim, ldy;
};

/* moe_route: Phi-3.5-MoE's sparsemixer at inference, top-2 of n_experts >= 2 per token, from
 * the router logits s = logits[t, :] (NaN as -inf), all in float:
 *  1. i1 = the first index of the largest s, m1 = s[i1]. With factor_k = max(|s_k|, m1), s_k is
 *     kept when NOT ((m1 - s_k) / factor_k > thr), thr = (float)(2 * jitter_eps) (a NaN
 *     quotient keeps it). weights[t, 0] = 1 / sum over kept k of exp(s_k - m1).
 *  2. i2 = the first index of the largest s_k, k != i1, m2 = s[i2]. The mask of step 1 is
 *     redone with m2 for m1 (still over the original s, i1 included), and
 *     weights[t, 1] = 1 / sum over kept k != i1 of exp(s_k - m2).
 * experts[t, :] = {i1, i2}. The weights are not renormalised. A pick whose m is -inf gets
 * weight 0 (its index is still the first one not taken: 0 or 1). Sums may be in any order and
 * precision at least fp32, so backends agree to a few ulp. */
struct kern_moe_route_params {
    const float *logits;       /* [n_tokens, n_experts], row stride ldx >= n_experts */
    int32_t *experts;          /* [n_tokens, 2] */
    float *weights;            /* [n_tokens, 2] */
    int64_t n_tokens, n_experts, ldx;
    float jitter_eps;          /* router_jitter_noise, >= 0 */
};

/* moe: the experts of every token in one call (not a loop over experts per token):
 *   y[t, :] += sum over k < top_k, in ascending order of experts[t, k] (ties by k), of
 *              weights[t, k] * Wd_e (silu(Wg_e x[t]) * (Wu_e x[t])),  e = experts[t, k]
 * with Wg_e = w_gate[e], Wu_e = w_up[e] ([inter, hidden]) and Wd_e = w_down[e] ([hidden,
 * inter]), all in w_dtype, silu(v) = v / (1 + exp(-v)). w_dtype may be a block format (Q8_0,
 * Q4_0, the K formats: the host backends only; CUDA returns KERN_ERR_UNSUPPORTED) when hidden
 * and inter are both multiples of its block, else the call is KERN_ERR_INVALID. The sum of the
 * top_k terms is formed first and then added to y (HF: the experts' sum, then the residual
 * add), in fp32 or wider. Every pair is computed, weight 0 included. The pointer arrays are backend memory (device
 * memory on CUDA) holding backend addresses. An expert outside [0, n_experts) or a NULL
 * weight pointer is a bad index: KERN_ERR_INVALID on host backends, reported at sync on a
 * device. work is scratch of kern_moe_work_bytes() bytes. */
struct kern_moe_params {
    const float *x;            /* [n_tokens, hidden], the normalised input */
    const int32_t *experts;    /* [n_tokens, top_k] */
    const float *weights;      /* [n_tokens, top_k] */
    const void *const *w_gate; /* [n_experts] each -> [inter, hidden] (w1) */
    const void *const *w_up;   /* [n_experts] each -> [inter, hidden] (w3) */
    const void *const *w_down; /* [n_experts] each -> [hidden, inter] (w2) */
    enum kern_dtype w_dtype;
    float *y;                  /* [n_tokens, hidden], accumulated into */
    void *work;                /* [kern_moe_work_bytes(...)] scratch */
    int64_t n_tokens, hidden, inter, n_experts, top_k;
};

/* Bytes of the moe op's work buffer for these sizes, the same for every backend: with
 * S = n_tokens * top_k slots, S * hidden floats, S * 2 * inter floats and
 * 4 * S + 4 * n_experts + 64 int32 (each region rounded up to 256 bytes). 0 on a negative
 * size or overflow. */
size_t kern_moe_work_bytes(int64_t n_tokens, int64_t top_k, int64_t hidden, int64_t inter,
                           int64_t n_experts);

/* act: out[i] = f(x[i]) for i < n. KERN_ACT_GELU is the exact GELU, 0.5 x (1 + erf(x / sqrt(2)))
 * (nn.GELU(), the Phi-3-vision projector); KERN_ACT_QUICK_GELU is x * sigmoid(1.702 x) (CLIP's
 * quick_gelu). fp32 in and out, computed in fp32 or wider. out may alias x. NaN gives NaN;
 * +Inf gives +Inf and -Inf gives -0 (both functions' limits), on every backend. */
enum kern_act { KERN_ACT_GELU = 0, KERN_ACT_QUICK_GELU = 1 };

struct kern_act_params {
    const float *x;            /* [n] */
    float *out;                /* [n], may be x */
    int64_t n;
    enum kern_act kind;
};

/* attention_dense: bidirectional self-attention within each of n_seqs sequences of seq_len
 * consecutive tokens (no cache, no mask; the CLIP vision tower). Token t = s * seq_len + i of
 * sequence s reads its query head h at q[t * ld + h * head_dim], and attends to every token u
 * of the same sequence through k[u * ld + h * head_dim] and v[u * ld + h * head_dim]:
 *   out[t, h, :] = sum_u softmax_u(scale * q_t . k_u) v_u
 * softmax and sums in fp32 or wider. out is [n_seqs * seq_len, n_heads, head_dim], contiguous.
 * Sizes are >= 0 (no tokens: nothing done), head_dim in [1, 256], ld >= n_heads * head_dim;
 * out must not overlap q, k or v. A query with a NaN or +inf score, or with every score -inf,
 * gets NaN; otherwise a -inf score weighs 0 (only infinite inputs make such scores). Results
 * do not depend on the number of threads. */
#define KERN_ATTENTION_DENSE_MAX_HEAD_DIM 256

struct kern_attention_dense_params {
    const float *q, *k, *v;    /* rows of stride ld (the fused or separate q/k/v projections) */
    float *out;                /* [n_seqs * seq_len, n_heads * head_dim] */
    int64_t n_seqs, seq_len, n_heads, head_dim, ld;
    float scale;
};

/* The op table. Every entry returns 0 or a negative enum kern_status.
 *
 * Memory. The pointers inside op params live in the backend's memory: host memory for ref and
 * cpu, device memory for cuda. The buf_ and weights_ entries below are the only way the engine
 * creates, fills and reads such memory, so that it never needs to know which backend it
 * drives. Host backends implement them with malloc/memcpy. On a device backend every entry
 * is ordered on the context's stream with the ops: a buffer written by buf_upload is seen by
 * the next op, buf_download sees every op queued before it. */
struct kern_ops {
    const char *name;          /* backend name of the last init applied: "ref", "cpu", "cuda" */
    int host_memory;           /* nonzero: backend buffers are ordinary host memory (ref, cpu) */
    int (*embed)(struct kern_ctx *ctx, const struct kern_embed_params *p);
    int (*rmsnorm)(struct kern_ctx *ctx, const struct kern_rmsnorm_params *p);
    int (*matmul)(struct kern_ctx *ctx, const struct kern_matmul_params *p);
    int (*rope)(struct kern_ctx *ctx, const struct kern_rope_params *p);
    int (*kv_write)(struct kern_ctx *ctx, const struct kern_kv_write_params *p);
    int (*attention)(struct kern_ctx *ctx, const struct kern_attention_params *p);
    int (*silu_mul)(struct kern_ctx *ctx, const struct kern_silu_mul_params *p);
    int (*add)(struct kern_ctx *ctx, const struct kern_add_params *p);
    int (*gather_rows)(struct kern_ctx *ctx, const struct kern_gather_rows_params *p);
    int (*argmax)(struct kern_ctx *ctx, const struct kern_argmax_params *p);
    int (*sample)(struct kern_ctx *ctx, const struct kern_sample_params *p);
    int (*layernorm)(struct kern_ctx *ctx, const struct kern_layernorm_params *p);
    int (*bias_add)(struct kern_ctx *ctx, const struct kern_bias_add_params *p);
    int (*moe_route)(struct kern_ctx *ctx, const struct kern_moe_route_params *p);
    int (*moe)(struct kern_ctx *ctx, const struct kern_moe_params *p);
    int (*act)(struct kern_ctx *ctx, const struct kern_act_params *p);
    int (*attention_dense)(struct kern_ctx *ctx, const struct kern_attention_dense_params *p);

    /* Allocates bytes of backend memory into *ptr (the caller owns it; free with buf_free).
     * The buffer reads as zeros. bytes == 0 gives *ptr == NULL and 0. Returns KERN_ERR_NOMEM
     * when the memory is exhausted, KERN_ERR_INVALID when ptr is NULL. */
    int (*buf_alloc)(struct kern_ctx *ctx, size_t bytes, void **ptr);
    /* Frees a buf_alloc buffer once the work queued before the call is done; accepts NULL. */
    void (*buf_free)(struct kern_ctx *ctx, void *ptr);
    /* Copies bytes from host memory src into backend memory dst. Complete when the call
     * returns: src may be reused at once. Returns 0, KERN_ERR_INVALID (NULL pointer with
     * bytes > 0) or KERN_ERR_DEVICE. */
    int (*buf_upload)(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes);
    /* Copies bytes from backend memory src into host memory dst after every op queued
     * before it; complete when the call returns. Returns 0, KERN_ERR_INVALID or
     * KERN_ERR_DEVICE. */
    int (*buf_download)(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes);
    /* Copies bytes between two backend buffers (which must not overlap), ordered with the
     * ops. Returns 0, KERN_ERR_INVALID or KERN_ERR_DEVICE. */
    int (*buf_copy)(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes);
    /* Fills bytes of backend memory with the byte value, ordered with the ops. Returns 0,
     * KERN_ERR_INVALID or KERN_ERR_DEVICE. */
    int (*buf_memset)(struct kern_ctx *ctx, void *dst, int value, size_t bytes);
    /* Waits for every queued op and reports what could only be checked on the device: returns
     * KERN_ERR_DEVICE when a device call or kernel failed, KERN_ERR_INVALID when a kernel met
     * an index the contracts above reject (an embedding id outside the vocabulary, a slot or
     * block outside the cache, ...), with a message in err (errlen bytes, terminated; err may
     * be NULL). Host backends check such indices in the op itself and return 0 here. */
    int (*sync)(struct kern_ctx *ctx, char *err, size_t errlen);
    /* Makes bytes of read-only host data (a weight tensor inside the model's mapping) visible
     * to the ops and gives its backend address in *dev. Host backends give host itself back
     * (zero copy: the mapping is used in place); a device backend allocates and uploads once.
     * host must stay valid until weights_release only on host backends. Returns 0,
     * KERN_ERR_NOMEM or KERN_ERR_DEVICE. */
    int (*weights_import)(struct kern_ctx *ctx, const void *host, size_t bytes,
                          const void **dev);
    /* Releases what weights_import gave (nothing on host backends); accepts NULL. */
    void (*weights_release)(struct kern_ctx *ctx, const void *dev);

    /* Graphs: NULL on the host backends, which have no launch cost to save.
     * graph_begin makes the ops queued on ctx from then on be recorded instead of run, until
     * graph_end, which returns the recording in *out as a graph the caller owns (free with
     * graph_destroy). Between the two only ops may be called (no buf_ entry, no sync), and
     * every argument, pointer or scalar, is frozen into the graph: a replay reads and writes
     * the same buffers again, whatever they hold by then, so the caller refreshes their
     * contents (with buf_upload) before each replay. An op that cannot be recorded (one that
     * would need to allocate) fails, and then graph_end fails too; graph_end must be called
     * after every successful graph_begin, and returns 0, KERN_ERR_DEVICE or KERN_ERR_NOMEM.
     * graph_launch queues one replay in order with the other ops; it returns KERN_ERR_STALE
     * when the backend has since replaced memory the graph refers to (its own scratch
     * buffer grew): destroy it and record again. graph_destroy accepts NULL. */
    int (*graph_begin)(struct kern_ctx *ctx);
    int (*graph_end)(struct kern_ctx *ctx, struct kern_graph **out);
    int (*graph_launch)(struct kern_ctx *ctx, struct kern_graph *g);
    void (*graph_destroy)(struct kern_ctx *ctx, struct kern_graph *g);
};

/* Fills every entry with the plain-C reference (kernels/ref), memory entries included (host
 * memory). The reference ignores ctx. */
void kern_ops_init_ref(struct kern_ops *ops);
/* Overrides the entries the fast CPU backend implements (kernels/cpu); call after _ref. */
void kern_ops_init_cpu(struct kern_ops *ops);

/* A CPU execution context with n_threads worker threads (n_threads <= 0: one per core).
 * Returns NULL on allocation failure. The reference backend accepts NULL as ctx. */
struct kern_ctx *kern_ctx_create_cpu(int n_threads);
/* Joins the threads and frees the context; accepts NULL. */
void kern_ctx_destroy(struct kern_ctx *ctx);

#ifdef __cplusplus
}
#endif

#endif
