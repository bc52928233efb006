/* The CUDA backend's context (stream, cuBLASLt handle and workspace, scratch, fault word),
 * the op-table fill and the device memory helpers of kernels/cuda_backend.h.
 * No kernels here: one op per .cu file beside this one. */
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "../cuda_backend.h"
#include "cuda_internal.h"

/* cuBLASLt workspace: 32 MiB is what NVIDIA recommends for Hopper GEMMs. */
static const size_t lt_workspace_bytes = (size_t)32 << 20;

static void set_err(char *err, size_t errlen, const char *what, cudaError_t e)
{
    if (err && errlen > 0)
        snprintf(err, errlen, "%s: %s", what, cudaGetErrorString(e));
}

int kern_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* no driver / no device: clear the sticky-less error */
        return 0;
    }
    return n;
}

int kern_cuda_launch_status(void)
{
    return cudaGetLastError() == cudaSuccess ? KERN_OK : KERN_ERR_DEVICE;
}

/* Replaces the scratch buffer by one of at least bytes (rounded up to 1 MiB, at least 1.5x
 * the old size so that a growing batch reallocates rarely). Work queued on the stream may
 * still read the old buffer: wait for it first. */
static int grow_scratch(struct kern_cuda *cu, size_t bytes)
{
    size_t want = bytes + bytes / 2;
    if (want < bytes)
        want = bytes;
    want = (want + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
    if (want < bytes)
        return KERN_ERR_NOMEM;
    if (cudaSetDevice(cu->device) != cudaSuccess || cudaStreamSynchronize(cu->stream) != cudaSuccess)
        return KERN_ERR_DEVICE;
    cudaFree(cu->scratch);
    cu->scratch = nullptr;
    cu->scratch_size = 0;
    if (cudaMalloc(&cu->scratch, want) != cudaSuccess) {
        (void)cudaGetLastError();
        cu->scratch = nullptr;
        return KERN_ERR_NOMEM;
    }
    cu->scratch_size = want;
    cu->scratch_gen++;
    return KERN_OK;
}

void *kern_cuda_scratch(struct kern_cuda *cu, size_t bytes)
{
    if (bytes <= cu->scratch_size)
        return cu->scratch;
    if (cu->capturing || grow_scratch(cu, bytes) != 0)
        return nullptr;
    return cu->scratch;
}

/* The memory entries of the op table that are not kern_cuda_* functions themselves. */
static int buf_alloc_zeroed(struct kern_ctx *ctx, size_t bytes, void **ptr)
{
    int rc = kern_cuda_alloc(ctx, bytes, ptr);
    if (rc != KERN_OK || !*ptr)
        return rc;
    /* The contract promises zeros; cudaMalloc gives whatever the memory held. */
    rc = kern_cuda_memset(ctx, *ptr, 0, bytes);
    if (rc != KERN_OK) {
        kern_cuda_free(ctx, *ptr);
        *ptr = nullptr;
    }
    return rc;
}

static int weights_import(struct kern_ctx *ctx, const void *host, size_t bytes, const void **dev)
{
    if (!dev || (bytes > 0 && !host))
        return KERN_ERR_INVALID;
    *dev = nullptr;
    void *p = nullptr;
    int rc = kern_cuda_alloc(ctx, bytes, &p);
    if (rc != KERN_OK || !p)
        return rc;
    rc = kern_cuda_upload(ctx, p, host, bytes);
    if (rc != KERN_OK) {
        kern_cuda_free(ctx, p);
        return rc;
    }
    *dev = p;
    return KERN_OK;
}

static void weights_release(struct kern_ctx *ctx, const void *dev)
{
    kern_cuda_free(ctx, const_cast<void *>(dev));
}

extern "C" {

void kern_cuda_destroy(struct kern_ctx *ctx)
{
    if (!ctx)
        return;
    struct kern_cuda *cu = ctx->cuda;
    if (cu) {
        if (cudaSetDevice(cu->device) == cudaSuccess) {
            if (cu->stream)
                cudaStreamSynchronize(cu->stream);
            if (cu->lt)
                cublasLtDestroy(cu->lt);
            cudaFree(cu->lt_workspace);
            cudaFree(cu->scratch);
            cudaFree(cu->fault);
            if (cu->t0)
                cudaEventDestroy(cu->t0);
            if (cu->t1)
                cudaEventDestroy(cu->t1);
            if (cu->stream)
                cudaStreamDestroy(cu->stream);
        }
        free(cu);
    }
    free(ctx);
}

int kern_cuda_create(int device, struct kern_ops *ops, struct kern_ctx **out, char *err,
                     size_t errlen)
{
    if (!out || !ops) {
        if (err && errlen > 0)
            snprintf(err, errlen, "kern_cuda_create: ops and out are required");
        return KERN_ERR_INVALID;
    }
    *out = nullptr;
    int n = kern_cuda_device_count();
    if (n == 0) {
        if (err && errlen > 0)
            snprintf(err, errlen, "no CUDA device found (check the driver and "
                                  "CUDA_VISIBLE_DEVICES)");
        return KERN_ERR_DEVICE;
    }
    if (device < 0 || device >= n) {
        if (err && errlen > 0)
            snprintf(err, errlen, "CUDA device %d does not exist (%d found)", device, n);
        return KERN_ERR_DEVICE;
    }

    struct kern_ctx *ctx = static_cast<struct kern_ctx *>(calloc(1, sizeof *ctx));
    struct kern_cuda *cu = static_cast<struct kern_cuda *>(calloc(1, sizeof *cu));
    cudaError_t e = cudaSuccess;
    cudaDeviceProp prop;
    int rc = KERN_ERR_DEVICE;
    if (!ctx || !cu) {
        free(ctx);
        free(cu);
        if (err && errlen > 0)
            snprintf(err, errlen, "out of host memory");
        return KERN_ERR_NOMEM;
    }
    ctx->cuda = cu;
    cu->device = device;

    if ((e = cudaSetDevice(device)) != cudaSuccess) {
        set_err(err, errlen, "cudaSetDevice", e);
        goto fail;
    }
    if ((e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) {
        set_err(err, errlen, "cudaGetDeviceProperties", e);
        goto fail;
    }
    cu->n_sm = prop.multiProcessorCount;
    {
        const char *att = getenv("PHISERVE_CUDA_ATTENTION");
        cu->attention_tc = !(att && strcmp(att, "fp32") == 0);
        const char *moe = getenv("PHISERVE_CUDA_MOE");
        cu->moe_tc = !(moe && strcmp(moe, "fma") == 0);
        const char *algo = getenv("PHISERVE_CUDA_GEMM_ALGO");
        cu->gemm_algo = algo && algo[0] >= '0' && algo[0] <= '7' && !algo[1] ? algo[0] - '0' : 0;
    }
    cu->max_smem_optin = prop.sharedMemPerBlockOptin;
    if ((e = cudaStreamCreateWithFlags(&cu->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        set_err(err, errlen, "cudaStreamCreate", e);
        goto fail;
    }
    if (cublasLtCreate(&cu->lt) != CUBLAS_STATUS_SUCCESS) {
        cu->lt = nullptr;
        if (err && errlen > 0)
            snprintf(err, errlen, "cublasLtCreate failed");
        goto fail;
    }
    if ((e = cudaMalloc(&cu->lt_workspace, lt_workspace_bytes)) != cudaSuccess) {
        cu->lt_workspace = nullptr;
        set_err(err, errlen, "cudaMalloc (cuBLASLt workspace)", e);
        rc = KERN_ERR_NOMEM;
        goto fail;
    }
    cu->lt_workspace_size = lt_workspace_bytes;
    if ((e = cudaMalloc(&cu->fault, sizeof(int))) != cudaSuccess) {
        cu->fault = nullptr;
        set_err(err, errlen, "cudaMalloc (fault word)", e);
        rc = KERN_ERR_NOMEM;
        goto fail;
    }
    if ((e = cudaMemsetAsync(cu->fault, 0, sizeof(int), cu->stream)) != cudaSuccess ||
        (e = cudaEventCreate(&cu->t0)) != cudaSuccess ||
        (e = cudaEventCreate(&cu->t1)) != cudaSuccess ||
        (e = cudaStreamSynchronize(cu->stream)) != cudaSuccess) {
        set_err(err, errlen, "CUDA context set-up", e);
        goto fail;
    }

    ops->name = "cuda";
    ops->embed = kern_cuda_embed;
    ops->rmsnorm = kern_cuda_rmsnorm;
    ops->matmul = kern_cuda_matmul;
    ops->rope = kern_cuda_rope;
    ops->kv_write = kern_cuda_kv_write;
    ops->attention = kern_cuda_attention;
    ops->silu_mul = kern_cuda_silu_mul;
    ops->add = kern_cuda_add;
    ops->gather_rows = kern_cuda_gather_rows;
    ops->argmax = kern_cuda_argmax;
    ops->sample = kern_cuda_sample;
    ops->layernorm = kern_cuda_layernorm;
    ops->bias_add = kern_cuda_bias_add;
    ops->moe_route = kern_cuda_moe_route;
    ops->moe = kern_cuda_moe;
    ops->act = kern_cuda_act;
    ops->attention_dense = kern_cuda_attention_dense;
    ops->host_memory = 0;
    ops->buf_alloc = buf_alloc_zeroed;
    ops->buf_free = kern_cuda_free;
    ops->buf_upload = kern_cuda_upload;
    ops->buf_download = kern_cuda_download;
    ops->buf_copy = kern_cuda_copy;
    ops->buf_memset = kern_cuda_memset;
    ops->sync = kern_cuda_sync;
    ops->weights_import = weights_import;
    ops->weights_release = weights_release;
    ops->graph_begin = kern_cuda_graph_begin;
    ops->graph_end = kern_cuda_graph_end;
    ops->graph_launch = kern_cuda_graph_launch;
    ops->graph_destroy = kern_cuda_graph_destroy;
    *out = ctx;
    return KERN_OK;

fail:
    kern_cuda_destroy(ctx);
    return rc;
}

int kern_cuda_alloc(struct kern_ctx *ctx, size_t bytes, void **ptr)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !ptr)
        return KERN_ERR_INVALID;
    *ptr = nullptr;
    if (bytes == 0)
        return KERN_OK;
    if (cudaSetDevice(cu->device) != cudaSuccess)
        return KERN_ERR_DEVICE;
    if (cudaMalloc(ptr, bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        *ptr = nullptr;
        return KERN_ERR_NOMEM;
    }
    return KERN_OK;
}

void kern_cuda_free(struct kern_ctx *ctx, void *ptr)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !ptr)
        return;
    cudaStreamSynchronize(cu->stream);
    cudaFree(ptr);
}

int kern_cuda_upload(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || (bytes && (!dst || !src)))
        return KERN_ERR_INVALID;
    if (bytes == 0)
        return KERN_OK;
    if (cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cu->stream) != cudaSuccess ||
        cudaStreamSynchronize(cu->stream) != cudaSuccess)
        return KERN_ERR_DEVICE;
    return KERN_OK;
}

int kern_cuda_download(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || (bytes && (!dst || !src)))
        return KERN_ERR_INVALID;
    if (bytes == 0)
        return KERN_OK;
    if (cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cu->stream) != cudaSuccess ||
        cudaStreamSynchronize(cu->stream) != cudaSuccess)
        return KERN_ERR_DEVICE;
    return KERN_OK;
}

int kern_cuda_memset(struct kern_ctx *ctx, void *dst, int value, size_t bytes)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || (bytes && !dst))
        return KERN_ERR_INVALID;
    if (bytes == 0)
        return KERN_OK;
    return cudaMemsetAsync(dst, value, bytes, cu->stream) == cudaSuccess ? KERN_OK
                                                                          : KERN_ERR_DEVICE;
}

int kern_cuda_copy(struct kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || (bytes && (!dst || !src)))
        return KERN_ERR_INVALID;
    if (bytes == 0)
        return KERN_OK;
    return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cu->stream) == cudaSuccess
               ? KERN_OK
               : KERN_ERR_DEVICE;
}

int kern_cuda_sync(struct kern_ctx *ctx, char *err, size_t errlen)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu)
        return KERN_ERR_INVALID;
    cudaError_t e = cudaStreamSynchronize(cu->stream);
    if (e == cudaSuccess)
        e = cudaGetLastError();
    if (e != cudaSuccess) {
        set_err(err, errlen, "CUDA stream", e);
        return KERN_ERR_DEVICE;
    }
    int fault = 0;
    if ((e = cudaMemcpy(&fault, cu->fault, sizeof fault, cudaMemcpyDeviceToHost)) !=
        cudaSuccess) {
        set_err(err, errlen, "reading the fault word", e);
        return KERN_ERR_DEVICE;
    }
    if (fault == 0)
        return KERN_OK;
    if ((e = cudaMemset(cu->fault, 0, sizeof(int))) != cudaSuccess) {
        set_err(err, errlen, "clearing the fault word", e);
        return KERN_ERR_DEVICE;
    }
    if (err && errlen > 0)
        snprintf(err, errlen, "invalid index met on the device:%s%s%s%s%s%s%s%s",
                 (fault & KERN_CUDA_FAULT_EMBED_ID) ? " embedding id outside the vocabulary;"
                                                    : "",
                 (fault & KERN_CUDA_FAULT_KV_SLOT) ? " kv slot outside the cache;" : "",
                 (fault & KERN_CUDA_FAULT_BLOCK_TABLE) ? " block table entry outside the cache;"
                                                       : "",
                 (fault & KERN_CUDA_FAULT_SEQ_RANGE) ? " sequence range outside the batch;" : "",
                 (fault & KERN_CUDA_FAULT_ROPE_VARIANT) ? " rope variant outside the tables;"
                                                        : "",
                 (fault & KERN_CUDA_FAULT_GATHER_ROW) ? " gather row outside the input;" : "",
                 (fault & KERN_CUDA_FAULT_SAMPLE_JOB)
                     ? " sample job row, mod or given token outside the call, or logprobs"
                       " without buffers;"
                     : "",
                 (fault & KERN_CUDA_FAULT_MOE_EXPERT)
                     ? " moe expert outside [0, n_experts) or without weights;"
                     : "");
    return KERN_ERR_INVALID;
}

int kern_cuda_host_register(struct kern_ctx *ctx, void *host, size_t bytes)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !host || bytes == 0)
        return KERN_ERR_INVALID;
    /* Device, managed or already registered memory is refused here, not by a failing call
     * (which compute-sanitizer reports as an API error). */
    cudaPointerAttributes attr;
    if (cudaPointerGetAttributes(&attr, host) != cudaSuccess) {
        (void)cudaGetLastError();
        return KERN_ERR_DEVICE;
    }
    if (attr.type != cudaMemoryTypeUnregistered)
        return KERN_ERR_INVALID;
    if (cudaHostRegister(host, bytes, cudaHostRegisterDefault) != cudaSuccess) {
        (void)cudaGetLastError();
        return KERN_ERR_DEVICE;
    }
    return KERN_OK;
}

void kern_cuda_host_unregister(struct kern_ctx *ctx, void *host)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !host)
        return;
    if (cudaHostUnregister(host) != cudaSuccess)
        (void)cudaGetLastError();
}

int kern_cuda_mem_info(struct kern_ctx *ctx, size_t *free_bytes, size_t *total_bytes)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !free_bytes || !total_bytes)
        return KERN_ERR_INVALID;
    if (cudaSetDevice(cu->device) != cudaSuccess ||
        cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess)
        return KERN_ERR_DEVICE;
    return KERN_OK;
}

int kern_cuda_reserve(struct kern_ctx *ctx, size_t bytes)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu)
        return KERN_ERR_INVALID;
    return bytes <= cu->scratch_size ? KERN_OK : grow_scratch(cu, bytes);
}

int kern_cuda_device_info(struct kern_ctx *ctx, char *name, size_t namelen, int *cc_major,
                          int *cc_minor, int *n_sm)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu)
        return KERN_ERR_INVALID;
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, cu->device) != cudaSuccess)
        return KERN_ERR_DEVICE;
    if (name && namelen > 0)
        snprintf(name, namelen, "%s", prop.name);
    if (cc_major)
        *cc_major = prop.major;
    if (cc_minor)
        *cc_minor = prop.minor;
    if (n_sm)
        *n_sm = prop.multiProcessorCount;
    return KERN_OK;
}

int kern_cuda_timer_start(struct kern_ctx *ctx)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu)
        return KERN_ERR_INVALID;
    return cudaEventRecord(cu->t0, cu->stream) == cudaSuccess ? KERN_OK : KERN_ERR_DEVICE;
}

int kern_cuda_timer_stop(struct kern_ctx *ctx, float *ms)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !ms)
        return KERN_ERR_INVALID;
    if (cudaEventRecord(cu->t1, cu->stream) != cudaSuccess ||
        cudaEventSynchronize(cu->t1) != cudaSuccess ||
        cudaEventElapsedTime(ms, cu->t0, cu->t1) != cudaSuccess)
        return KERN_ERR_DEVICE;
    return KERN_OK;
}

} /* extern "C" */
