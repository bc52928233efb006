/* The paged KV cache: one pool of fixed-size blocks per layer (K and V), block reference
 * counts and a free list. The pool lives in the backend's memory (host or device, through the
 * op table's buf_ entries); the bookkeeping stays on the host. It stores and hands out blocks;
 * which sequence owns which block is the scheduler's business, not this file's. */
#ifndef PHISERVE_ENGINE_KV_CACHE_H
#define PHISERVE_ENGINE_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "ops.h"

struct eng_kv_cache {
    int64_t n_layers, n_kv_heads, head_dim;
    int64_t block_size;            /* tokens per block */
    int64_t n_blocks;
    enum kern_dtype dtype;
    const struct kern_ops *ops;    /* the backend the pool lives in; NULL: plain host memory */
    struct kern_ctx *ctx;
    void **k;                      /* [n_layers] -> [n_blocks * block_size, n_kv_heads, head_dim]
                                      in dtype, backend memory */
    void **v;                      /* same */
    int32_t *refcount;             /* [n_blocks] */
    int32_t *free_list;            /* [n_blocks] stack of free block ids */
    int64_t n_free;
};

/* The cache element type a --kv-cache-dtype name asks for: "auto" (or NULL) is fp32 on a host
 * backend (host != 0: the numerics the CPU goldens check) and bf16 on a device; "bf16" (or
 * "bfloat16") and, on a host backend only, "f16" ("fp16", "float16") and "f32" ("fp32",
 * "float32"). Returns 0, or -1 for any other name or a dtype the backend does not keep. */
int eng_kv_cache_dtype_parse(const char *name, int host, enum kern_dtype *out);

/* Bytes one block takes across all layers, K and V; 0 on overflow. */
size_t eng_kv_cache_block_bytes(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim,
                                int64_t block_size, enum kern_dtype dtype);

/* Allocates a pool of n_blocks blocks on the host (malloc'd, zero-filled): usable with the ref
 * and cpu op tables. Returns 0 and *out (caller owns; free with eng_kv_cache_destroy), or -1
 * with a message in err (bad sizes, overflow, out of memory). */
int eng_kv_cache_create(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim,
                        int64_t block_size, int64_t n_blocks, enum kern_dtype dtype,
                        struct eng_kv_cache **out, char *err, size_t errlen);

/* The same, with the pool allocated through ops->buf_alloc in ctx's memory (device memory on
 * CUDA; one buffer per layer for K and one for V, zero-filled). ops and ctx are the caller's
 * and must outlive the cache. ops == NULL is eng_kv_cache_create. */
int eng_kv_cache_create_on(const struct kern_ops *ops, struct kern_ctx *ctx, int64_t n_layers,
                           int64_t n_kv_heads, int64_t head_dim, int64_t block_size,
                           int64_t n_blocks, enum kern_dtype dtype, struct eng_kv_cache **out,
                           char *err, size_t errlen);

/* Frees the pool (through the ops it was created with); accepts NULL. */
void eng_kv_cache_destroy(struct eng_kv_cache *kv);

/* Takes a free block (refcount 1) into *block. Returns 0, or -1 when none is free. */
int eng_kv_cache_alloc_block(struct eng_kv_cache *kv, int32_t *block);

/* Adds a reference to an allocated block (sharing). */
void eng_kv_cache_retain_block(struct eng_kv_cache *kv, int32_t block);

/* Drops a reference; the block returns to the free list when none remain. */
void eng_kv_cache_release_block(struct eng_kv_cache *kv, int32_t block);

/* Blocks currently handed out. */
int64_t eng_kv_cache_used_blocks(const struct eng_kv_cache *kv);

/* Copies the K and V contents of block src into block dst in every layer (copy-on-write of a
 * shared, partially filled block). Both must be allocated and distinct. On a device backend
 * the copies are queued in order with the ops (the next forward sees them) and a failure
 * also shows at the next ops->sync. Returns 0 or a negative enum kern_status. */
int eng_kv_cache_copy_block(struct eng_kv_cache *kv, int32_t src, int32_t dst);

#endif
