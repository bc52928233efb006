/* The layout of struct kern_ctx, shared by the backends (private to kernels/, not for the
 * engine). Each backend owns its own member; a context may carry both (CPU pool for host-side
 * work, CUDA state for the device). */
#ifndef PHISERVE_KERNELS_CTX_H
#define PHISERVE_KERNELS_CTX_H

#include "ops.h"

struct kern_pool; /* kernels/cpu/threadpool.c */
struct kern_cuda; /* kernels/cuda: stream, cuBLASLt handle, workspace */

struct kern_ctx {
    struct kern_pool *pool; /* NULL: run on the calling thread */
    struct kern_cuda *cuda; /* NULL unless created by kern_cuda_create */
    /* Host scratch that the CPU ops reuse from call to call (kern_cpu_scratch_get); owned. */
    void *scratch;
    size_t scratch_cap;
    int scratch_busy;       /* taken by a call in progress (GCC __atomic builtins) */
};

#endif
