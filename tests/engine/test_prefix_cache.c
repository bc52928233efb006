/* Unit test of the prefix cache index (engine/prefix_cache.c): hash chain keys, verified hits,
 * the LRU of evictable blocks, eviction order, block accounting, and the disabled mode; and of
 * the KV cache's dtype names (eng_kv_cache_dtype_parse, engine/kv_cache.c). */
#include <stdio.h>
#include <stdlib.h>

#include "kv_cache.h"
#include "prefix_cache.h"

#include "../test_util.h"

#define BS 4

static struct eng_kv_cache *make_kv(int64_t n_blocks)
{
    struct eng_kv_cache *kv = NULL;
    char err[128];
    if (eng_kv_cache_create(1, 1, 2, BS, n_blocks, KERN_DTYPE_F32, &kv, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    return kv;
}

static void test_hash(void)
{
    int32_t a[BS] = {1, 2, 3, 4}, b[BS] = {1, 2, 3, 5};
    uint64_t h = eng_prefix_hash(0, a, BS, 0);
    CHECK(h == eng_prefix_hash(0, a, BS, 0), "hash not deterministic");
    CHECK(h != eng_prefix_hash(0, b, BS, 0), "tokens not in the hash");
    CHECK(h != eng_prefix_hash(0, a, BS, 1), "RoPE variant not in the hash");
    CHECK(h != eng_prefix_hash(h, a, BS, 0), "parent not in the hash");
}

static void test_lru_and_eviction(void)
{
    struct eng_kv_cache *kv = make_kv(4);
    struct eng_prefix_cache *pc = NULL;
    CHECK(eng_prefix_cache_create(kv, true, &pc) == 0, "create");
    int32_t toks[3][BS] = {{10, 11, 12, 13}, {14, 15, 16, 17}, {18, 19, 20, 21}};
    int32_t blk[4];
    for (int i = 0; i < 4; i++)
        CHECK(eng_prefix_cache_alloc(pc, &blk[i]) == 0, "alloc %d", i);
    int32_t extra;
    CHECK(eng_prefix_cache_alloc(pc, &extra) != 0, "alloc from a full pool with nothing evictable");
    /* A chain of three blocks. */
    uint64_t h[3], parent = 0;
    for (int i = 0; i < 3; i++) {
        h[i] = eng_prefix_hash(parent, toks[i], BS, 0);
        eng_prefix_cache_insert(pc, blk[i], h[i], parent, toks[i], 0);
        parent = h[i];
    }
    CHECK(eng_prefix_cache_n_registered(pc) == 3, "registered %lld", (long long)eng_prefix_cache_n_registered(pc));
    CHECK(kv->refcount[blk[0]] == 2, "the cache holds a reference");
    /* Release in order 2, 0, 1, 3: LRU order of the registered ones is 2, 0, 1. */
    eng_prefix_cache_release(pc, blk[2]);
    eng_prefix_cache_release(pc, blk[0]);
    eng_prefix_cache_release(pc, blk[1]);
    eng_prefix_cache_release(pc, blk[3]);
    CHECK(eng_prefix_cache_n_evictable(pc) == 3, "evictable %lld", (long long)eng_prefix_cache_n_evictable(pc));
    CHECK(eng_prefix_cache_n_used(pc) == 0, "used %lld", (long long)eng_prefix_cache_n_used(pc));
    CHECK(eng_prefix_cache_n_available(pc) == 4, "available");
    /* A hit takes the block off the LRU. */
    int32_t got = eng_prefix_cache_acquire(pc, h[0], 0, toks[0], 0);
    CHECK(got == blk[0], "hit on block 0: %d", got);
    CHECK(eng_prefix_cache_n_evictable(pc) == 2 && eng_prefix_cache_n_used(pc) == 1, "after hit");
    /* Misses: other variant, other parent, same hash with other tokens (a forged collision). */
    CHECK(eng_prefix_cache_acquire(pc, h[1], h[0], toks[1], 1) < 0, "variant must miss");
    CHECK(eng_prefix_cache_acquire(pc, h[1], 0, toks[1], 0) < 0, "parent must miss");
    CHECK(eng_prefix_cache_acquire(pc, h[1], h[0], toks[2], 0) < 0, "collision must miss");
    /* Allocations: the free block first, then evictions in LRU order (2, then 1). */
    int32_t a1, a2, a3;
    CHECK(eng_prefix_cache_alloc(pc, &a1) == 0 && a1 == blk[3], "free block first: %d", a1);
    CHECK(eng_prefix_cache_alloc(pc, &a2) == 0 && a2 == blk[2], "evict LRU (block 2): %d", a2);
    CHECK(eng_prefix_cache_acquire(pc, h[2], h[1], toks[2], 0) < 0, "evicted block must miss");
    CHECK(eng_prefix_cache_alloc(pc, &a3) == 0 && a3 == blk[1], "then block 1: %d", a3);
    CHECK(eng_prefix_cache_alloc(pc, &extra) != 0, "block 0 is in use, nothing left");
    CHECK(eng_prefix_cache_n_registered(pc) == 1, "only block 0 still registered");
    eng_prefix_cache_release(pc, a1);
    eng_prefix_cache_release(pc, a2);
    eng_prefix_cache_release(pc, a3);
    eng_prefix_cache_release(pc, got);
    CHECK(eng_prefix_cache_n_used(pc) == 0, "all released");
    eng_prefix_cache_destroy(pc);
    CHECK(eng_kv_cache_used_blocks(kv) == 0, "destroy drops the cache's references: %lld",
          (long long)eng_kv_cache_used_blocks(kv));
    eng_kv_cache_destroy(kv);
}

static void test_duplicate_and_disabled(void)
{
    struct eng_kv_cache *kv = make_kv(3);
    struct eng_prefix_cache *pc = NULL;
    CHECK(eng_prefix_cache_create(kv, true, &pc) == 0, "create");
    int32_t t[BS] = {7, 7, 7, 7};
    uint64_t h = eng_prefix_hash(0, t, BS, 0);
    int32_t b0, b1;
    eng_prefix_cache_alloc(pc, &b0);
    eng_prefix_cache_alloc(pc, &b1);
    eng_prefix_cache_insert(pc, b0, h, 0, t, 0);
    eng_prefix_cache_insert(pc, b1, h, 0, t, 0); /* same key: stays private */
    CHECK(eng_prefix_cache_n_registered(pc) == 1, "duplicate registered");
    eng_prefix_cache_release(pc, b1);
    CHECK(kv->refcount[b1] == 0, "a private duplicate is freed on release");
    eng_prefix_cache_release(pc, b0);
    eng_prefix_cache_destroy(pc);
    CHECK(eng_kv_cache_used_blocks(kv) == 0, "leak");

    CHECK(eng_prefix_cache_create(kv, false, &pc) == 0, "create disabled");
    eng_prefix_cache_alloc(pc, &b0);
    eng_prefix_cache_insert(pc, b0, h, 0, t, 0);
    CHECK(eng_prefix_cache_n_registered(pc) == 0, "disabled cache registered a block");
    CHECK(eng_prefix_cache_acquire(pc, h, 0, t, 0) < 0, "disabled cache hit");
    eng_prefix_cache_release(pc, b0);
    CHECK(eng_kv_cache_used_blocks(kv) == 0, "disabled: leak");
    eng_prefix_cache_destroy(pc);
    eng_kv_cache_destroy(kv);
}

/* --kv-cache-dtype names: auto per backend kind, aliases, and cuda's bf16-only rule. */
static void test_kv_dtype_names(void)
{
    enum kern_dtype dt = KERN_DTYPE_Q8_0;
    CHECK(eng_kv_cache_dtype_parse(NULL, 1, &dt) == 0 && dt == KERN_DTYPE_F32, "auto on a host");
    CHECK(eng_kv_cache_dtype_parse("auto", 0, &dt) == 0 && dt == KERN_DTYPE_BF16, "auto on a device");
    static const char *const bf[] = {"bf16", "bfloat16"}, *const f16[] = {"f16", "fp16", "float16"},
                             *const f32[] = {"f32", "fp32", "float32"};
    for (int i = 0; i < 2; i++) {
        CHECK(eng_kv_cache_dtype_parse(bf[i], 1, &dt) == 0 && dt == KERN_DTYPE_BF16, "%s", bf[i]);
        CHECK(eng_kv_cache_dtype_parse(bf[i], 0, &dt) == 0 && dt == KERN_DTYPE_BF16, "%s on cuda", bf[i]);
    }
    for (int i = 0; i < 3; i++) {
        CHECK(eng_kv_cache_dtype_parse(f16[i], 1, &dt) == 0 && dt == KERN_DTYPE_F16, "%s", f16[i]);
        CHECK(eng_kv_cache_dtype_parse(f32[i], 1, &dt) == 0 && dt == KERN_DTYPE_F32, "%s", f32[i]);
        CHECK(eng_kv_cache_dtype_parse(f16[i], 0, &dt) == -1, "%s refused on cuda", f16[i]);
        CHECK(eng_kv_cache_dtype_parse(f32[i], 0, &dt) == -1, "%s refused on cuda", f32[i]);
    }
    static const char *const bad[] = {"fp8", "q8_0", "", "BF16", "auto "};
    for (int i = 0; i < 5; i++)
        CHECK(eng_kv_cache_dtype_parse(bad[i], 1, &dt) == -1, "'%s' accepted", bad[i]);
}

int main(void)
{
    test_kv_dtype_names();
    test_hash();
    test_lru_and_eviction();
    test_duplicate_and_disabled();
    return tu_finish("test_prefix_cache");
}
