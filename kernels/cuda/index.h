/* Index arithmetic and per-element math of the CUDA kernels, as small inline functions that
 * compile as C too, so that tests/gpu/test_cuda_index.c checks them on machines without a GPU.
 * This is not a kernel: no loads, no stores, no launch logic beyond the numbers. */
#ifndef PHISERVE_KERNELS_CUDA_INDEX_H
#define PHISERVE_KERNELS_CUDA_INDEX_H

#include <math.h>
#include <stdint.h>

#include "../dtype.h" /* KERN_HD */

/* ---- Paged KV cache ---------------------------------------------------------------------- */

/* Slot of cache position pos of a sequence whose block-table row is table (max_blocks
 * entries): table[pos / block_size] * block_size + pos % block_size. Returns -1 when pos is
 * outside the table, the block id is negative, or the slot is not below n_slots, so that a
 * kernel can refuse to load instead of reading out of bounds. */
static inline KERN_HD int64_t kern_idx_slot(const int32_t *table, int64_t max_blocks,
                                            int64_t block_size, int64_t n_slots, int64_t pos)
{
    if (pos < 0 || block_size <= 0)
        return -1;
    int64_t b = pos / block_size;
    if (b >= max_blocks)
        return -1;
    int64_t block = table[b];
    if (block < 0 || block > (n_slots - 1) / block_size)
        return -1;
    int64_t slot = block * block_size + pos % block_size;
    return slot < n_slots ? slot : -1;
}

/* Position of query row i of a sequence with q_len new tokens and ctx_len cached keys
 * (the new tokens are the last q_len positions of the context). */
static inline KERN_HD int64_t kern_idx_q_pos(int64_t ctx_len, int64_t q_len, int64_t i)
{
    return ctx_len - q_len + i;
}

/* First key a query at position pos sees: 0 without a window, else pos - window + 1 (the
 * window counts the query itself, as transformers masks), never below 0. */
static inline KERN_HD int64_t kern_idx_key_lo(int64_t pos, int64_t window)
{
    if (window <= 0)
        return 0;
    int64_t lo = pos - window + 1;
    return lo > 0 ? lo : 0;
}

/* Whether a query at position pos sees key position j (causal, optional sliding window). */
static inline KERN_HD int kern_idx_visible(int64_t j, int64_t pos, int64_t window)
{
    return j >= 0 && j <= pos && (window <= 0 || j > pos - window);
}

/* Key range [*lo, *hi) a tile of query positions [pos0, pos1) (pos1 > pos0) must read:
 * every key in it is visible to at least one row of the tile, and every key visible to a
 * row of the tile is in it. */
static inline KERN_HD void kern_idx_tile_keys(int64_t pos0, int64_t pos1, int64_t window,
                                              int64_t *lo, int64_t *hi)
{
    *lo = kern_idx_key_lo(pos0, window);
    *hi = pos1; /* last row is at pos1 - 1 and sees itself */
}

/* ---- Tiles and partitions ---------------------------------------------------------------- */

/* Number of tiles of size tile covering n items (ceil(n / tile)); 0 when n <= 0. */
static inline KERN_HD int64_t kern_idx_n_tiles(int64_t n, int64_t tile)
{
    return n <= 0 ? 0 : (n + tile - 1) / tile;
}

/* Upper bound on the number of query tiles of size tile over sequences whose query
 * lengths sum to at most n_tokens: each sequence adds at most one partial tile. */
static inline KERN_HD int64_t kern_idx_max_q_tiles(int64_t n_tokens, int64_t n_seqs,
                                                   int64_t tile)
{
    return n_tokens / tile + (n_seqs < n_tokens ? n_seqs : n_tokens);
}

/* Split-K (flash-decoding) partition: the keys [lo, hi) of one query row are cut into
 * consecutive chunks of `chunk` keys starting at lo; chunk c covers [*b, *e), empty
 * (*b == *e) when c is past the end. */
static inline KERN_HD void kern_idx_split_bounds(int64_t lo, int64_t hi, int64_t chunk,
                                                 int64_t c, int64_t *b, int64_t *e)
{
    int64_t s = lo + c * chunk;
    if (s > hi)
        s = hi;
    int64_t t = s + chunk;
    if (t > hi)
        t = hi;
    *b = s;
    *e = t;
}

/* Chunk size of the split-K path: enough chunks over max_keys that n_rows * n_heads * n_chunks
 * blocks reach target_blocks, each chunk at least min_chunk and at most max_chunk keys,
 * rounded up to a multiple of 32 (one key per lane of a warp). */
static inline KERN_HD int64_t kern_idx_split_chunk(int64_t max_keys, int64_t n_rows,
                                                   int64_t n_heads, int64_t target_blocks,
                                                   int64_t min_chunk, int64_t max_chunk)
{
    int64_t rows = n_rows * n_heads;
    if (rows < 1)
        rows = 1;
    int64_t want = (target_blocks + rows - 1) / rows; /* chunks per row wanted */
    if (want < 1)
        want = 1;
    int64_t chunk = (max_keys + want - 1) / want;
    if (chunk < min_chunk)
        chunk = min_chunk;
    chunk = (chunk + 31) / 32 * 32;
    if (chunk > max_chunk)
        chunk = max_chunk;
    return chunk;
}

/* GQA: the kv head read by query head h (n_heads a multiple of n_kv_heads). */
static inline KERN_HD int64_t kern_idx_kv_head(int64_t h, int64_t n_heads, int64_t n_kv_heads)
{
    return h / (n_heads / n_kv_heads);
}

/* ---- Per-element math -------------------------------------------------------------------- */

/* exp(a - b) for the online softmax, defined as 0 when a is -inf (a masked score, or an
 * empty partial) and as 1 when both are -inf, so that empty rows never produce NaN. */
static inline KERN_HD float kern_softmax_scale(float a, float b)
{
    if (a == -INFINITY)
        return b == -INFINITY ? 1.0f : 0.0f;
    return expf(a - b);
}

/* exp(s - m) of a score against the running max: 0 for a masked score (-inf) whatever m is. */
static inline KERN_HD float kern_softmax_exp(float s, float m)
{
    return s == -INFINITY ? 0.0f : expf(s - m);
}

/* Merge of two online-softmax partials (max m, sum l): the new max and the weights by which
 * each side's sum and unnormalised output are multiplied. */
static inline KERN_HD float kern_softmax_merge(float m_a, float m_b, float *w_a, float *w_b)
{
    float m = m_a > m_b ? m_a : m_b;
    *w_a = kern_softmax_scale(m_a, m);
    *w_b = kern_softmax_scale(m_b, m);
    return m;
}

/* silu(x) = x / (1 + exp(-x)), as the reference writes it. */
static inline KERN_HD float kern_silu(float x)
{
    return x / (1.0f + expf(-x));
}

/* RoPE angle: position times inverse frequency, one fp32 product (no fused operation can
 * change a single product). */
static inline KERN_HD float kern_rope_angle(int32_t pos, float inv_freq)
{
    return (float)pos * inv_freq;
}

/* The rotate_half pair update: (a, b) = lanes (i, i + rot_dim/2), c and s already scaled. */
static inline KERN_HD void kern_rope_rotate(float *a, float *b, float c, float s)
{
    float x = *a, y = *b;
    *a = x * c - y * s;
    *b = y * c + x * s;
}

/* Power-of-two alignment of an address, capped at 256 bytes (what cuBLASLt asks about). */
static inline KERN_HD uint32_t kern_idx_alignment(uintptr_t addr)
{
    uint32_t a = 256;
    while (a > 1 && (addr & (uintptr_t)(a - 1)) != 0)
        a >>= 1;
    return a;
}

#endif
