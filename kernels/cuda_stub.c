/* The CUDA backend's API when phiserve is built without CUDA: every call reports that.
 * Not a fallback implementation: the CPU backends serve such builds. */
#include <stdio.h>

#include "cuda_backend.h"

static const char no_cuda[] = "phiserve was built without CUDA";

int kern_cuda_device_count(void)
{
    return 0;
}

int kern_cuda_create(int device, struct kern_ops *ops, struct kern_ctx **out, char *err,
                     size_t errlen)
{
    (void)device;
    (void)ops;
    if (out)
        *out = NULL;
    if (err && errlen > 0)
        snprintf(err, errlen, "%s", no_cuda);
    return KERN_ERR_DEVICE;
}

int kern_cuda_attention_supports(int64_t head_dim)
{
    (void)head_dim;
    return 0;
}

void kern_cuda_destroy(struct kern_ctx *ctx)
{
    (void)ctx;
}

int kern_cuda_alloc(struct kern_ctx *ctx, size_t bytes, void **ptr)
{
    (void)ctx;
    (void)bytes;
    if (ptr)
        *ptr = NULL;
    return KERN_ERR_DEVICE;
}

void kern_cuda_free(struct kern_ctx *ctx, void *ptr)
{
    (void)ctx;
    (void)ptr;
}

int kern_cuda_upload(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    (void)ctx;
    (void)dst;
    (void)src;
    (void)bytes;
    return KERN_ERR_DEVICE;
}

int kern_cuda_download(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    (void)ctx;
    (void)dst;
    (void)src;
    (void)bytes;
    return KERN_ERR_DEVICE;
}

int kern_cuda_memset(struct kern_ctx *ctx, void *dst, int value, size_t bytes)
{
    (void)ctx;
    (void)dst;
    (void)value;
    (void)bytes;
    return KERN_ERR_DEVICE;
}

int kern_cuda_copy(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    (void)ctx;
    (void)dst;
    (void)src;
    (void)bytes;
    return KERN_ERR_DEVICE;
}

int kern_cuda_sync(struct kern_ctx *ctx, char *err, size_t errlen)
{
    (void)ctx;
    if (err && errlen > 0)
        snprintf(err, errlen, "%s", no_cuda);
    return KERN_ERR_DEVICE;
}

int kern_cuda_host_register(struct kern_ctx *ctx, void *host, size_t bytes)
{
    (void)ctx;
    (void)host;
    (void)bytes;
    return KERN_ERR_DEVICE;
}

void kern_cuda_host_unregister(struct kern_ctx *ctx, void *host)
{
    (void)ctx;
    (void)host;
}

int kern_cuda_mem_info(struct kern_ctx *ctx, size_t *free_bytes, size_t *total_bytes)
{
    (void)ctx;
    if (free_bytes)
        *free_bytes = 0;
    if (total_bytes)
        *total_bytes = 0;
    return KERN_ERR_DEVICE;
}

int kern_cuda_reserve(struct kern_ctx *ctx, size_t bytes)
{
    (void)ctx;
    (void)bytes;
    return KERN_ERR_DEVICE;
}

int kern_cuda_device_info(struct kern_ctx *ctx, char *name, size_t namelen, int *cc_major,
                          int *cc_minor, int *n_sm)
{
    (void)ctx;
    if (name && namelen > 0)
        snprintf(name, namelen, "%s", no_cuda);
    if (cc_major)
        *cc_major = 0;
    if (cc_minor)
        *cc_minor = 0;
    if (n_sm)
        *n_sm = 0;
    return KERN_ERR_DEVICE;
}

int kern_cuda_timer_start(struct kern_ctx *ctx)
{
    (void)ctx;
    return KERN_ERR_DEVICE;
}

int kern_cuda_timer_stop(struct kern_ctx *ctx, float *ms)
{
    (void)ctx;
    if (ms)
        *ms = 0.0f;
    return KERN_ERR_DEVICE;
}
