/* Paged KV cache storage and block accounting (see kv_cache.h). Prefix caching and
 * copy-on-write live above this, in the scheduler. */
#include "kv_cache.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int mul_ok(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0 || (a != 0 && b > INT64_MAX / a))
        return 0;
    *out = a * b;
    return 1;
}

int eng_kv_cache_dtype_parse(const char *name, int host, enum kern_dtype *out)
{
    static const struct {
        const char *name;
        enum kern_dtype dtype;
        int host_only;
    } names[] = {
        {"bf16", KERN_DTYPE_BF16, 0}, {"bfloat16", KERN_DTYPE_BF16, 0},
        {"f16", KERN_DTYPE_F16, 1},   {"fp16", KERN_DTYPE_F16, 1},
        {"float16", KERN_DTYPE_F16, 1}, {"f32", KERN_DTYPE_F32, 1},
        {"fp32", KERN_DTYPE_F32, 1},  {"float32", KERN_DTYPE_F32, 1},
    };
    if (!name || strcmp(name, "auto") == 0) {
        *out = host ? KERN_DTYPE_F32 : KERN_DTYPE_BF16;
        return 0;
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0) {
            if (names[i].host_only && !host)
                return -1;
            *out = names[i].dtype;
            return 0;
        }
    return -1;
}

size_t eng_kv_cache_block_bytes(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim,
                                int64_t block_size, enum kern_dtype dtype)
{
    int64_t n = 0;
    if (!mul_ok(n_layers, n_kv_heads, &n) || !mul_ok(n, head_dim, &n) ||
        !mul_ok(n, block_size, &n) || !mul_ok(n, 2 * (int64_t)kern_dtype_size(dtype), &n))
        return 0;
    return (size_t)n;
}

/* Pool memory through the op table, or calloc/free when the cache has none. */
static void *pool_alloc(struct eng_kv_cache *kv, size_t bytes)
{
    void *p = NULL;
    if (!kv->ops)
        return calloc(1, bytes);
    return kv->ops->buf_alloc(kv->ctx, bytes, &p) == 0 ? p : NULL;
}

static void pool_free(struct eng_kv_cache *kv, void *p)
{
    if (!kv->ops)
        free(p);
    else
        kv->ops->buf_free(kv->ctx, p);
}

int eng_kv_cache_create(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim,
                        int64_t block_size, int64_t n_blocks, enum kern_dtype dtype,
                        struct eng_kv_cache **out, char *err, size_t errlen)
{
    return eng_kv_cache_create_on(NULL, NULL, n_layers, n_kv_heads, head_dim, block_size,
                                  n_blocks, dtype, out, err, errlen);
}

int eng_kv_cache_create_on(const struct kern_ops *ops, struct kern_ctx *ctx, int64_t n_layers,
                           int64_t n_kv_heads, int64_t head_dim, int64_t block_size,
                           int64_t n_blocks, enum kern_dtype dtype, struct eng_kv_cache **out,
                           char *err, size_t errlen)
{
    *out = NULL;
    if (n_layers <= 0 || n_kv_heads <= 0 || head_dim <= 0 || block_size <= 0 || n_blocks <= 0 ||
        n_blocks > INT32_MAX) {
        snprintf(err, errlen, "kv cache: invalid sizes");
        return -1;
    }
    int64_t layer_elems = 0;
    if (!mul_ok(n_blocks, block_size, &layer_elems) || !mul_ok(layer_elems, n_kv_heads, &layer_elems) ||
        !mul_ok(layer_elems, head_dim, &layer_elems) ||
        !mul_ok(layer_elems, (int64_t)kern_dtype_size(dtype), &layer_elems)) {
        snprintf(err, errlen, "kv cache: size overflows");
        return -1;
    }
    struct eng_kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv)
        goto fail;
    kv->n_layers = n_layers;
    kv->n_kv_heads = n_kv_heads;
    kv->head_dim = head_dim;
    kv->block_size = block_size;
    kv->n_blocks = n_blocks;
    kv->dtype = dtype;
    kv->ops = ops;
    kv->ctx = ctx;
    kv->k = calloc((size_t)n_layers, sizeof *kv->k);
    kv->v = calloc((size_t)n_layers, sizeof *kv->v);
    kv->refcount = calloc((size_t)n_blocks, sizeof *kv->refcount);
    kv->free_list = malloc((size_t)n_blocks * sizeof *kv->free_list);
    if (!kv->k || !kv->v || !kv->refcount || !kv->free_list)
        goto fail;
    for (int64_t l = 0; l < n_layers; l++) {
        kv->k[l] = pool_alloc(kv, (size_t)layer_elems);
        kv->v[l] = pool_alloc(kv, (size_t)layer_elems);
        if (!kv->k[l] || !kv->v[l])
            goto fail;
    }
    /* Stack order: block 0 is handed out first. */
    for (int64_t i = 0; i < n_blocks; i++)
        kv->free_list[i] = (int32_t)(n_blocks - 1 - i);
    kv->n_free = n_blocks;
    *out = kv;
    return 0;
fail:
    eng_kv_cache_destroy(kv);
    snprintf(err, errlen, "kv cache: out of memory allocating %lld blocks", (long long)n_blocks);
    return -1;
}

void eng_kv_cache_destroy(struct eng_kv_cache *kv)
{
    if (!kv)
        return;
    for (int64_t l = 0; l < kv->n_layers; l++) {
        if (kv->k)
            pool_free(kv, kv->k[l]);
        if (kv->v)
            pool_free(kv, kv->v[l]);
    }
    free(kv->k);
    free(kv->v);
    free(kv->refcount);
    free(kv->free_list);
    free(kv);
}

int eng_kv_cache_alloc_block(struct eng_kv_cache *kv, int32_t *block)
{
    if (kv->n_free == 0)
        return -1;
    int32_t b = kv->free_list[--kv->n_free];
    assert(kv->refcount[b] == 0);
    kv->refcount[b] = 1;
    *block = b;
    return 0;
}

void eng_kv_cache_retain_block(struct eng_kv_cache *kv, int32_t block)
{
    assert(block >= 0 && block < kv->n_blocks && kv->refcount[block] > 0);
    kv->refcount[block]++;
}

void eng_kv_cache_release_block(struct eng_kv_cache *kv, int32_t block)
{
    assert(block >= 0 && block < kv->n_blocks && kv->refcount[block] > 0);
    if (--kv->refcount[block] == 0)
        kv->free_list[kv->n_free++] = block;
}

int64_t eng_kv_cache_used_blocks(const struct eng_kv_cache *kv)
{
    return kv->n_blocks - kv->n_free;
}

int eng_kv_cache_copy_block(struct eng_kv_cache *kv, int32_t src, int32_t dst)
{
    assert(src >= 0 && src < kv->n_blocks && dst >= 0 && dst < kv->n_blocks && src != dst);
    assert(kv->refcount[src] > 0 && kv->refcount[dst] > 0);
    /* The sizes were overflow-checked for the whole pool at create. */
    size_t block = (size_t)(kv->block_size * kv->n_kv_heads * kv->head_dim) * kern_dtype_size(kv->dtype);
    size_t d = (size_t)dst * block, s = (size_t)src * block;
    for (int64_t l = 0; l < kv->n_layers; l++) {
        char *k = kv->k[l], *v = kv->v[l];
        if (!kv->ops) {
            memcpy(k + d, k + s, block);
            memcpy(v + d, v + s, block);
            continue;
        }
        int rc = kv->ops->buf_copy(kv->ctx, k + d, k + s, block);
        if (rc == 0)
            rc = kv->ops->buf_copy(kv->ctx, v + d, v + s, block);
        if (rc != 0)
            return rc;
    }
    return 0;
}
