/* Automatic prefix caching over the paged KV cache: full, computed blocks are registered under
 * a hash chain (parent block's hash, the block's token ids, RoPE variant) so that a later
 * sequence with the same prefix reuses them. The cache holds one reference on every registered
 * block; a registered block no sequence uses any more is "evictable" and sits in an LRU list,
 * evicted (unregistered and freed) only when an allocation finds the free list empty.
 * It does not decide what to cache or when (the scheduler does) and knows nothing of requests.
 * Every block allocation and release of the engine goes through here, so the LRU stays exact.
 * Not thread-safe: the engine thread owns it. */
#ifndef PHISERVE_ENGINE_PREFIX_CACHE_H
#define PHISERVE_ENGINE_PREFIX_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "kv_cache.h"

struct eng_prefix_cache;

/* The hash of the block of n token ids following a prefix whose last block hashed to parent
 * (0 for the first block), computed with RoPE variant `variant`. */
uint64_t eng_prefix_hash(uint64_t parent, const int32_t *tokens, int32_t n, uint8_t variant);

/* Creates the index for kv's blocks (kv: caller keeps, must outlive the cache). enabled false
 * gives a cache that never registers anything (lookups miss; allocation and release still work).
 * Returns 0 and *out (free with eng_prefix_cache_destroy), or -1 on allocation failure. */
int eng_prefix_cache_create(struct eng_kv_cache *kv, bool enabled, struct eng_prefix_cache **out);

/* Unregisters everything (dropping the cache's references) and frees; accepts NULL. */
void eng_prefix_cache_destroy(struct eng_prefix_cache *pc);

/* Takes a block for writing (refcount 1): from the free list, else by evicting the least
 * recently used evictable block. Returns 0 and *block, or -1 when every block is in use. */
int eng_prefix_cache_alloc(struct eng_prefix_cache *pc, int32_t *block);

/* Drops a sequence's reference on block; when only the cache's reference remains the block
 * becomes evictable (most recently used end of the LRU). */
void eng_prefix_cache_release(struct eng_prefix_cache *pc, int32_t block);

/* Looks up the block registered as (hash, parent, tokens[block_size], variant); the tokens are
 * compared, so a hash collision is a miss, never a wrong hit. On a hit, adds a reference for
 * the caller (taking the block off the LRU if it was evictable) and returns the block id;
 * returns -1 on a miss. */
int32_t eng_prefix_cache_acquire(struct eng_prefix_cache *pc, uint64_t hash, uint64_t parent,
                                 const int32_t *tokens, uint8_t variant);

/* Registers a full, computed block the caller holds a reference on. Does nothing when the
 * cache is disabled, the block is already registered, or another block is registered under
 * the same key (the duplicate then simply stays private to its sequence). */
void eng_prefix_cache_insert(struct eng_prefix_cache *pc, int32_t block, uint64_t hash,
                             uint64_t parent, const int32_t *tokens, uint8_t variant);

/* Registered blocks no sequence holds (they count as free for admission). */
int64_t eng_prefix_cache_n_evictable(const struct eng_prefix_cache *pc);

/* Blocks that can be had now: free plus evictable. */
int64_t eng_prefix_cache_n_available(const struct eng_prefix_cache *pc);

/* Blocks held by sequences (handed out, minus those only the cache holds). */
int64_t eng_prefix_cache_n_used(const struct eng_prefix_cache *pc);

/* Registered blocks (for tests). */
int64_t eng_prefix_cache_n_registered(const struct eng_prefix_cache *pc);

#endif
