/* Backend memory of the host backends (ref and cpu): buffers are malloc'd host memory, copies
 * are memcpy, sync has nothing to wait for and weights are used in place. Not an allocator:
 * no pooling, no alignment beyond malloc's. */
#include <stdlib.h>
#include <string.h>

#include "ref.h"

int kern_ref_buf_alloc(struct kern_ctx *ctx, size_t bytes, void **ptr)
{
    (void)ctx;
    if (!ptr)
        return KERN_ERR_INVALID;
    *ptr = NULL;
    if (bytes == 0)
        return KERN_OK;
    /* calloc: the contract promises zeros, and untouched pages of a large KV pool stay
     * unmapped until used. */
    *ptr = calloc(1, bytes);
    return *ptr ? KERN_OK : KERN_ERR_NOMEM;
}

void kern_ref_buf_free(struct kern_ctx *ctx, void *ptr)
{
    (void)ctx;
    free(ptr);
}

/* The three copies are the same memcpy on the host; the checks are the contract's. */
static int copy(void *dst, const void *src, size_t bytes)
{
    if (bytes == 0)
        return KERN_OK;
    if (!dst || !src)
        return KERN_ERR_INVALID;
    memcpy(dst, src, bytes);
    return KERN_OK;
}

int kern_ref_buf_upload(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    (void)ctx;
    return copy(dst, src, bytes);
}

int kern_ref_buf_download(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    (void)ctx;
    return copy(dst, src, bytes);
}

int kern_ref_buf_copy(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    (void)ctx;
    return copy(dst, src, bytes);
}

int kern_ref_buf_memset(struct kern_ctx *ctx, void *dst, int value, size_t bytes)
{
    (void)ctx;
    if (bytes == 0)
        return KERN_OK;
    if (!dst)
        return KERN_ERR_INVALID;
    memset(dst, value, bytes);
    return KERN_OK;
}

int kern_ref_sync(struct kern_ctx *ctx, char *err, size_t errlen)
{
    (void)ctx;
    if (err && errlen > 0)
        err[0] = '\0';
    return KERN_OK;
}

int kern_ref_weights_import(struct kern_ctx *ctx, const void *host, size_t bytes, const void **dev)
{
    (void)ctx;
    (void)bytes;
    if (!dev || (bytes > 0 && !host))
        return KERN_ERR_INVALID;
    *dev = host;
    return KERN_OK;
}

void kern_ref_weights_release(struct kern_ctx *ctx, const void *dev)
{
    (void)ctx;
    (void)dev;
}
