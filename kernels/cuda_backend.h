/* Public API of the CUDA backend: context creation, the op-table fill and device memory.
 * Plain C; compiles without CUDA. Built from kernels/cuda when CUDA is enabled and from
 * kernels/cuda_stub.c otherwise (every call then fails with KERN_ERR_DEVICE). */
#ifndef PHISERVE_KERNELS_CUDA_BACKEND_H
#define PHISERVE_KERNELS_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is none, the driver is missing, or the build
 * has no CUDA. Never fails. */
int kern_cuda_device_count(void);

/* Creates a context on device `device`: one non-blocking stream, a cuBLASLt handle, a
 * cuBLASLt workspace, a growable scratch buffer and a device error word. Fills ops with the
 * CUDA entries (every op and every memory entry: buf_alloc is kern_cuda_alloc followed by a
 * zero fill, buf_copy kern_cuda_copy, sync kern_cuda_sync, weights_import an allocation and
 * one upload; host_memory is 0); the pointers inside op params are then DEVICE pointers
 * (cudaMalloc'd or from kern_cuda_alloc / ops->buf_alloc), except the scalars. Ops are asynchronous on the context's stream: they
 * return after validating the scalar arguments and enqueuing the work.
 * On success *out holds a context the caller owns (free with kern_cuda_destroy) and 0 is
 * returned. On failure returns KERN_ERR_DEVICE (no GPU, no CUDA in the build, a CUDA call
 * failed) or KERN_ERR_NOMEM, writes a message into err (errlen bytes, always terminated when
 * errlen > 0; err may be NULL) and leaves *out NULL.
 * A context is used by one thread at a time. */
int kern_cuda_create(int device, struct kern_ops *ops, struct kern_ctx **out, char *err,
                     size_t errlen);

/* Nonzero when the CUDA attention kernels take heads of head_dim lanes (16, 32, 64, 96 or
 * 128: the tensor-core prefill tiles need multiples of 16); 0 otherwise and without CUDA. The
 * engine refuses other models on --device cuda at start-up instead of failing every step. */
int kern_cuda_attention_supports(int64_t head_dim);

/* Synchronises and frees everything the context holds; accepts NULL and half-built
 * contexts. Device buffers from kern_cuda_alloc must be freed before. */
void kern_cuda_destroy(struct kern_ctx *ctx);

/* Allocates bytes of device memory on the context's device into *ptr (caller owns it; free
 * with kern_cuda_free). bytes == 0 gives *ptr == NULL and 0. Returns KERN_ERR_NOMEM when the
 * device is out of memory, KERN_ERR_INVALID on bad arguments. */
int kern_cuda_alloc(struct kern_ctx *ctx, size_t bytes, void **ptr);
/* Frees a kern_cuda_alloc buffer after the stream's pending work; accepts NULL. */
void kern_cuda_free(struct kern_ctx *ctx, void *ptr);

/* Copies bytes from host memory src to device memory dst (dst owned by the caller). The
 * copy is ordered on the context's stream and complete when the call returns, so src may be
 * reused at once. Returns 0 or KERN_ERR_DEVICE. */
int kern_cuda_upload(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes);
/* Copies bytes from device memory src to host memory dst after all work queued on the
 * stream; complete when the call returns. Returns 0 or KERN_ERR_DEVICE. */
int kern_cuda_download(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes);
/* Fills bytes of device memory with the byte value, ordered on the stream. */
int kern_cuda_memset(struct kern_ctx *ctx, void *dst, int value, size_t bytes);
/* Copies bytes between two device buffers (not overlapping), ordered on the stream; returns
 * without waiting. Returns 0, KERN_ERR_INVALID or KERN_ERR_DEVICE. */
int kern_cuda_copy(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes);

/* Waits for the stream. Returns KERN_ERR_DEVICE (message in err) when a CUDA call or kernel
 * failed, and KERN_ERR_INVALID when a kernel since the previous sync met an index the
 * contract of ops.h rejects (an embedding id outside the vocabulary, a slot or block id
 * outside the cache, a sequence range outside the batch, a RoPE variant outside the
 * tables). Device-resident indices can only be checked on the device, so that part of the
 * contract is reported here, not by the op; such elements are skipped, never read out of
 * bounds. The flag is cleared by the call. err may be NULL. */
int kern_cuda_sync(struct kern_ctx *ctx, char *err, size_t errlen);

/* Page-locks bytes of host memory at host (the caller allocated it and keeps it) so that
 * downloads into it and uploads from it run at the bus's speed instead of through a staging
 * copy. Undo with kern_cuda_host_unregister before the memory is freed or reallocated.
 * Returns 0, KERN_ERR_INVALID or KERN_ERR_DEVICE (the memory then stays pageable and still
 * works for every copy). */
int kern_cuda_host_register(struct kern_ctx *ctx, void *host, size_t bytes);
/* Undoes kern_cuda_host_register; accepts NULL. */
void kern_cuda_host_unregister(struct kern_ctx *ctx, void *host);

/* Free and total memory of the context's device in bytes. Returns 0 or KERN_ERR_DEVICE. */
int kern_cuda_mem_info(struct kern_ctx *ctx, size_t *free_bytes, size_t *total_bytes);

/* Grows the scratch buffer (bf16 copies of GEMM inputs, attention work lists and split-K
 * partials) to at least bytes now, so that later ops allocate nothing (needed before
 * capturing a CUDA graph). Ops grow it themselves otherwise. Returns 0 or KERN_ERR_NOMEM. */
int kern_cuda_reserve(struct kern_ctx *ctx, size_t bytes);

/* Name of the device ("NVIDIA H200"), its compute capability and multiprocessor count.
 * Returns 0 or KERN_ERR_DEVICE. name gets at most namelen bytes, terminated. */
int kern_cuda_device_info(struct kern_ctx *ctx, char *name, size_t namelen, int *cc_major,
                          int *cc_minor, int *n_sm);

/* Device event timing for benchmarks: records a point on the stream and returns the
 * milliseconds between two recorded points after synchronising. Returns 0 or
 * KERN_ERR_DEVICE. */
int kern_cuda_timer_start(struct kern_ctx *ctx);
int kern_cuda_timer_stop(struct kern_ctx *ctx, float *ms);

#ifdef __cplusplus
}
#endif

#endif
