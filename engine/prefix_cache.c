/* The prefix cache's index (see prefix_cache.h): a chained hash table keyed by block hash and
 * an intrusive doubly linked LRU list of evictable blocks, both indexed by block id. It keeps
 * a copy of each registered block's token ids so a hit is verified, not trusted. */
#include "prefix_cache.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

struct entry {
    uint64_t hash, parent;
    int32_t hnext;          /* next block in the same bucket, -1 at the end */
    int32_t lru_prev, lru_next;
    uint8_t variant;
    bool registered;
    bool in_lru;
};

struct eng_prefix_cache {
    struct eng_kv_cache *kv;
    bool enabled;
    int64_t bs;
    struct entry *e;        /* [n_blocks] */
    int32_t *tokens;        /* [n_blocks, bs] token ids of registered blocks */
    int32_t *buckets;       /* [n_buckets] first block of each chain, -1 when empty */
    uint64_t n_buckets;     /* a power of two */
    int32_t lru_head, lru_tail; /* head: least recently used */
    int64_t n_evictable, n_registered;
};

uint64_t eng_prefix_hash(uint64_t parent, const int32_t *tokens, int32_t n, uint8_t variant)
{
    /* splitmix64 as a mixing function over the chain: every input word is folded into the
     * state and stirred; not cryptographic, and lookups compare tokens anyway. */
    uint64_t x = parent ^ 0x51ed270b27a1c3f5u;
    uint64_t h = eng_splitmix64_next(&x) ^ ((uint64_t)variant + 1) * 0x9e3779b97f4a7c15u;
    for (int32_t i = 0; i < n; i++) {
        x = h ^ (uint64_t)(uint32_t)tokens[i];
        h = eng_splitmix64_next(&x);
    }
    x = h ^ (uint64_t)n;
    return eng_splitmix64_next(&x);
}

int eng_prefix_cache_create(struct eng_kv_cache *kv, bool enabled, struct eng_prefix_cache **out)
{
    *out = NULL;
    struct eng_prefix_cache *pc = calloc(1, sizeof *pc);
    if (!pc)
        return -1;
    pc->kv = kv;
    pc->enabled = enabled;
    pc->bs = kv->block_size;
    pc->lru_head = pc->lru_tail = -1;
    uint64_t nb = 16;
    while (nb < (uint64_t)kv->n_blocks * 2)
        nb *= 2;
    pc->n_buckets = nb;
    pc->e = calloc((size_t)kv->n_blocks, sizeof *pc->e);
    pc->buckets = malloc((size_t)nb * sizeof *pc->buckets);
    /* calloc checks n_blocks * block_size for overflow. */
    pc->tokens = enabled ? calloc((size_t)kv->n_blocks, (size_t)pc->bs * sizeof *pc->tokens) : NULL;
    if (!pc->e || !pc->buckets || (enabled && !pc->tokens)) {
        eng_prefix_cache_destroy(pc);
        return -1;
    }
    for (uint64_t i = 0; i < nb; i++)
        pc->buckets[i] = -1;
    for (int64_t b = 0; b < kv->n_blocks; b++)
        pc->e[b].hnext = pc->e[b].lru_prev = pc->e[b].lru_next = -1;
    *out = pc;
    return 0;
}

static void lru_remove(struct eng_prefix_cache *pc, int32_t b)
{
    struct entry *en = &pc->e[b];
    assert(en->in_lru);
    if (en->lru_prev >= 0)
        pc->e[en->lru_prev].lru_next = en->lru_next;
    else
        pc->lru_head = en->lru_next;
    if (en->lru_next >= 0)
        pc->e[en->lru_next].lru_prev = en->lru_prev;
    else
        pc->lru_tail = en->lru_prev;
    en->lru_prev = en->lru_next = -1;
    en->in_lru = false;
    pc->n_evictable--;
}

static void lru_push_tail(struct eng_prefix_cache *pc, int32_t b)
{
    struct entry *en = &pc->e[b];
    assert(!en->in_lru);
    en->lru_prev = pc->lru_tail;
    en->lru_next = -1;
    if (pc->lru_tail >= 0)
        pc->e[pc->lru_tail].lru_next = b;
    else
        pc->lru_head = b;
    pc->lru_tail = b;
    en->in_lru = true;
    pc->n_evictable++;
}

/* Removes b from the hash table and drops the cache's reference. */
static void unregister(struct eng_prefix_cache *pc, int32_t b)
{
    struct entry *en = &pc->e[b];
    assert(en->registered);
    if (en->in_lru)
        lru_remove(pc, b);
    int32_t *link = &pc->buckets[en->hash & (pc->n_buckets - 1)];
    while (*link != b) {
        assert(*link >= 0);
        link = &pc->e[*link].hnext;
    }
    *link = en->hnext;
    en->hnext = -1;
    en->registered = false;
    pc->n_registered--;
    eng_kv_cache_release_block(pc->kv, b);
}

void eng_prefix_cache_destroy(struct eng_prefix_cache *pc)
{
    if (!pc)
        return;
    if (pc->e && pc->buckets)
        for (int64_t b = 0; b < pc->kv->n_blocks; b++)
            if (pc->e[b].registered)
                unregister(pc, (int32_t)b);
    free(pc->e);
    free(pc->tokens);
    free(pc->buckets);
    free(pc);
}

int eng_prefix_cache_alloc(struct eng_prefix_cache *pc, int32_t *block)
{
    if (eng_kv_cache_alloc_block(pc->kv, block) == 0)
        return 0;
    if (pc->lru_head < 0)
        return -1;
    unregister(pc, pc->lru_head);
    return eng_kv_cache_alloc_block(pc->kv, block);
}

void eng_prefix_cache_release(struct eng_prefix_cache *pc, int32_t block)
{
    eng_kv_cache_release_block(pc->kv, block);
    if (pc->e[block].registered && pc->kv->refcount[block] == 1)
        lru_push_tail(pc, block);
}

static int32_t find(const struct eng_prefix_cache *pc, uint64_t hash, uint64_t parent,
                    const int32_t *tokens, uint8_t variant)
{
    for (int32_t b = pc->buckets[hash & (pc->n_buckets - 1)]; b >= 0; b = pc->e[b].hnext) {
        const struct entry *en = &pc->e[b];
        if (en->hash == hash && en->parent == parent && en->variant == variant &&
            memcmp(pc->tokens + (size_t)b * (size_t)pc->bs, tokens,
                   (size_t)pc->bs * sizeof *tokens) == 0)
            return b;
    }
    return -1;
}

int32_t eng_prefix_cache_acquire(struct eng_prefix_cache *pc, uint64_t hash, uint64_t parent,
                                 const int32_t *tokens, uint8_t variant)
{
    if (!pc->enabled)
        return -1;
    int32_t b = find(pc, hash, parent, tokens, variant);
    if (b < 0)
        return -1;
    if (pc->e[b].in_lru)
        lru_remove(pc, b);
    eng_kv_cache_retain_block(pc->kv, b);
    return b;
}

void eng_prefix_cache_insert(struct eng_prefix_cache *pc, int32_t block, uint64_t hash,
                             uint64_t parent, const int32_t *tokens, uint8_t variant)
{
    assert(pc->kv->refcount[block] > 0);
    if (!pc->enabled || pc->e[block].registered || find(pc, hash, parent, tokens, variant) >= 0)
        return;
    struct entry *en = &pc->e[block];
    en->hash = hash;
    en->parent = parent;
    en->variant = variant;
    en->registered = true;
    memcpy(pc->tokens + (size_t)block * (size_t)pc->bs, tokens, (size_t)pc->bs * sizeof *tokens);
    int32_t *head = &pc->buckets[hash & (pc->n_buckets - 1)];
    en->hnext = *head;
    *head = block;
    pc->n_registered++;
    eng_kv_cache_retain_block(pc->kv, block);
}

int64_t eng_prefix_cache_n_evictable(const struct eng_prefix_cache *pc)
{
    return pc->n_evictable;
}

int64_t eng_prefix_cache_n_available(const struct eng_prefix_cache *pc)
{
    return pc->kv->n_free + pc->n_evictable;
}

int64_t eng_prefix_cache_n_used(const struct eng_prefix_cache *pc)
{
    return eng_kv_cache_used_blocks(pc->kv) - pc->n_evictable;
}

int64_t eng_prefix_cache_n_registered(const struct eng_prefix_cache *pc)
{
    return pc->n_registered;
}
