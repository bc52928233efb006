/* CPU test of the CUDA kernels' index arithmetic and per-element math (kernels/cuda/index.h):
 * block-table slots, causal/sliding-window visibility, tile key ranges, split-K partitions,
 * GQA mapping, online-softmax merging. Runs everywhere (suite 'unit'); no GPU code here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda/index.h"

#include "../test_util.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    return tu_xorshift64(&rng_state);
}

static int64_t rnd(int64_t n)
{
    return (int64_t)(rng() % (uint64_t)n);
}

/* Slots through a random non-contiguous block table, against the definition in ops.h. */
static void test_slot(void)
{
    enum { max_blocks = 9 };
    int32_t table[max_blocks];
    for (int trial = 0; trial < 200; trial++) {
        int64_t block_size = 1 + rnd(32);
        int64_t n_blocks = 1 + rnd(40);
        int64_t n_slots = n_blocks * block_size;
        for (int b = 0; b < max_blocks; b++)
            table[b] = (int32_t)rnd(n_blocks);
        for (int64_t pos = 0; pos < max_blocks * block_size; pos++) {
            int64_t want = table[pos / block_size] * block_size + pos % block_size;
            EXPECT(kern_idx_slot(table, max_blocks, block_size, n_slots, pos) == want);
        }
        /* outside the table, negative positions, bad block ids, a short cache */
        EXPECT(kern_idx_slot(table, max_blocks, block_size, n_slots, max_blocks * block_size) ==
              -1);
        EXPECT(kern_idx_slot(table, max_blocks, block_size, n_slots, -1) == -1);
        table[0] = -3;
        EXPECT(kern_idx_slot(table, max_blocks, block_size, n_slots, 0) == -1);
        table[0] = (int32_t)n_blocks;
        EXPECT(kern_idx_slot(table, max_blocks, block_size, n_slots, 0) == -1);
        table[0] = (int32_t)(n_blocks - 1);
        EXPECT(kern_idx_slot(table, max_blocks, block_size, n_slots, 0) ==
              (n_blocks - 1) * block_size);
        /* a cache that ends inside the last block: the slot past its end is refused */
        if (block_size > 1)
            EXPECT(kern_idx_slot(table, max_blocks, block_size, n_slots - 1, block_size - 1) ==
                  -1);
    }
    EXPECT(kern_idx_slot(table, max_blocks, 16, 0, 0) == -1);
}

/* Visibility: exactly `window` keys including the query itself, as transformers masks. */
static void test_visibility(void)
{
    for (int64_t window = 0; window < 9; window++) {
        for (int64_t pos = 0; pos < 30; pos++) {
            int64_t count = 0, first = -1;
            for (int64_t j = -2; j < 40; j++) {
                int v = kern_idx_visible(j, pos, window);
                if (v) {
                    count++;
                    if (first < 0)
                        first = j;
                }
                if (j > pos || j < 0)
                    EXPECT(!v);
            }
            int64_t want = window == 0 ? pos + 1 : (pos + 1 < window ? pos + 1 : window);
            EXPECT(count == want);
            EXPECT(first == kern_idx_key_lo(pos, window));
        }
    }
    /* Phi-3 mini: window 2047 => query 3000 sees keys 954..3000 */
    EXPECT(kern_idx_key_lo(3000, 2047) == 954);
    EXPECT(kern_idx_visible(954, 3000, 2047) && !kern_idx_visible(953, 3000, 2047));
}

/* The tile key range is exactly the union of the rows' visible keys. */
static void test_tile_keys(void)
{
    for (int trial = 0; trial < 2000; trial++) {
        int64_t window = rnd(3) == 0 ? 0 : 1 + rnd(50);
        int64_t pos0 = rnd(200), rows = 1 + rnd(40);
        int64_t lo, hi;
        kern_idx_tile_keys(pos0, pos0 + rows, window, &lo, &hi);
        for (int64_t j = -1; j < pos0 + rows + 2; j++) {
            int any = 0;
            for (int64_t p = pos0; p < pos0 + rows; p++)
                any |= kern_idx_visible(j, p, window);
            EXPECT(any == (j >= lo && j < hi));
        }
    }
}

/* Tiles and the work-list bound of the prefill path. */
static void test_tiles(void)
{
    EXPECT(kern_idx_n_tiles(0, 32) == 0);
    EXPECT(kern_idx_n_tiles(1, 32) == 1);
    EXPECT(kern_idx_n_tiles(32, 32) == 1);
    EXPECT(kern_idx_n_tiles(33, 32) == 2);
    EXPECT(kern_idx_n_tiles(-5, 32) == 0);
    for (int trial = 0; trial < 2000; trial++) {
        int64_t n_seqs = 1 + rnd(20), total = 0, tiles = 0, tile = 1 + rnd(64);
        for (int64_t s = 0; s < n_seqs; s++) {
            int64_t q = rnd(3) == 0 ? 0 : 1 + rnd(300);
            total += q;
            tiles += kern_idx_n_tiles(q, tile);
        }
        EXPECT(tiles <= kern_idx_max_q_tiles(total, n_seqs, tile));
    }
}

/* Split-K chunks partition [lo, hi) exactly, in order, and the chunk size honours its
 * bounds and fills the requested number of blocks when the limits allow. */
static void test_split(void)
{
    for (int trial = 0; trial < 2000; trial++) {
        int64_t lo = rnd(100), hi = lo + rnd(5000), chunk = 1 + rnd(700);
        int64_t n = kern_idx_n_tiles(hi - lo, chunk), next = lo;
        for (int64_t c = 0; c < n + 3; c++) {
            int64_t b, e;
            kern_idx_split_bounds(lo, hi, chunk, c, &b, &e);
            if (c < n) {
                EXPECT(b == next && e > b && e - b <= chunk);
                next = e;
            } else {
                EXPECT(b == e);
            }
        }
        EXPECT(next == hi);
    }
    for (int trial = 0; trial < 2000; trial++) {
        int64_t max_keys = rnd(140000), rows = 1 + rnd(300), heads = 1 + rnd(64);
        int64_t chunk = kern_idx_split_chunk(max_keys, rows, heads, 528, 64, 1024);
        EXPECT(chunk >= 64 && chunk <= 1024 && chunk % 32 == 0);
        int64_t want = (528 + rows * heads - 1) / (rows * heads);
        /* never more chunks than wanted, unless the cap forces it ... */
        EXPECT(chunk * want >= max_keys || chunk == 1024);
        /* ... and the smallest multiple of 32 that achieves it, unless the floor holds it */
        EXPECT((chunk - 32) * want < max_keys || chunk == 64);
    }
    /* one 128k-token sequence, 32 heads, 132 SMs x 4: 17 chunks of 7712 would exceed the
     * shared-memory cap, so 128 chunks of 1024 */
    EXPECT(kern_idx_split_chunk(131072, 1, 32, 528, 64, 1024) == 1024);
    EXPECT(kern_idx_split_chunk(4096, 1, 32, 528, 64, 1024) == 256);
}

static void test_gqa(void)
{
    /* Phi-3.5-MoE: 32 heads over 8 kv heads */
    for (int64_t h = 0; h < 32; h++)
        EXPECT(kern_idx_kv_head(h, 32, 8) == h / 4);
    for (int64_t h = 0; h < 32; h++)
        EXPECT(kern_idx_kv_head(h, 32, 32) == h);
    EXPECT(kern_idx_kv_head(5, 6, 1) == 0);
}

/* Merging split softmax partials equals the softmax over all scores. */
static void test_softmax_merge(void)
{
    EXPECT(kern_softmax_scale(-INFINITY, -INFINITY) == 1.0f);
    EXPECT(kern_softmax_scale(-INFINITY, 3.0f) == 0.0f);
    EXPECT(kern_softmax_exp(-INFINITY, -INFINITY) == 0.0f);
    EXPECT(fabsf(kern_softmax_exp(1.0f, 2.0f) - expf(-1.0f)) < 1e-7f);
    for (int trial = 0; trial < 500; trial++) {
        enum { n = 97 };
        float s[n], v[n];
        for (int i = 0; i < n; i++) {
            s[i] = rnd(5) == 0 ? -INFINITY : (float)(rnd(2000) - 1000) / 50.0f;
            v[i] = (float)(rnd(2000) - 1000) / 100.0f;
        }
        s[rnd(n)] = 1.0f; /* at least one visible key */
        double mx = -INFINITY, den = 0, num = 0;
        for (int i = 0; i < n; i++)
            mx = s[i] > mx ? s[i] : mx;
        for (int i = 0; i < n; i++) {
            double p = s[i] == -INFINITY ? 0.0 : exp(s[i] - mx);
            den += p;
            num += p * v[i];
        }
        /* chunked online softmax, as the decode kernel and its combine do */
        int64_t chunk = 1 + rnd(40);
        float M = -INFINITY, L = 0.0f, O = 0.0f;
        for (int64_t c0 = 0; c0 < n; c0 += chunk) {
            float m = -INFINITY, l = 0.0f, o = 0.0f;
            for (int64_t j = c0; j < c0 + chunk && j < n; j++)
                m = s[j] > m ? s[j] : m;
            for (int64_t j = c0; j < c0 + chunk && j < n; j++) {
                float p = kern_softmax_exp(s[j], m);
                l += p;
                o += p * v[j];
            }
            float wa, wb;
            M = kern_softmax_merge(M, m, &wa, &wb);
            L = L * wa + l * wb;
            O = O * wa + o * wb;
            EXPECT(!isnan(L) && !isnan(O));
        }
        double want = num / den;
        EXPECT(fabs(O / L - want) <= 1e-5 * (1.0 + fabs(want)));
    }
}

static void test_elementwise(void)
{
    EXPECT(kern_silu(0.0f) == 0.0f);
    EXPECT(fabsf(kern_silu(2.0f) - 2.0f / (1.0f + expf(-2.0f))) == 0.0f);
    EXPECT(kern_silu(-100.0f) == -0.0f || fabsf(kern_silu(-100.0f)) < 1e-40f);
    float a = 1.0f, b = 0.0f;
    kern_rope_rotate(&a, &b, 0.0f, 1.0f); /* a quarter turn */
    EXPECT(a == 0.0f && b == 1.0f);
    EXPECT(kern_rope_angle(131071, 1.0f) == 131071.0f);
    EXPECT(kern_rope_angle(3, 0.5f) == 1.5f);
    EXPECT(kern_idx_alignment(0) == 256);
    EXPECT(kern_idx_alignment(4096 + 4) == 4);
    EXPECT(kern_idx_alignment(4096 + 2) == 2);
    EXPECT(kern_idx_alignment(4096 + 64) == 64);
    EXPECT(kern_idx_q_pos(10, 3, 0) == 7 && kern_idx_q_pos(10, 3, 2) == 9);
}

int main(void)
{
    test_slot();
    test_visibility();
    test_tile_keys();
    test_tiles();
    test_split();
    test_gqa();
    test_softmax_merge();
    test_elementwise();
    return tu_finish("test_cuda_index");
}
