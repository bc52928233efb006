/* The CUDA emulator's runtime API (include/cuda_runtime.h): device queries, memory, copies,
 * streams, capture and graphs, events and kernel attributes, over the emulated device of
 * emu_runtime.cpp. Errors follow CUDA's: the call returns the error and cudaGetLastError
 * reports it once. */
#include <sys/mman.h>

#include <cstdio>

#include "emu_internal.h"

using namespace kern_emu_rt;

/* ---- the runtime API ------------------------------------------------------------------- */

cudaError_t cudaGetDeviceCount(int *count)
{
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device)
{
    if (device != 0)
        return fail(cudaErrorInvalidDevice);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "phiserve CUDA emulator");
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 132;
    prop->sharedMemPerBlock = 48 << 10;
    prop->sharedMemPerBlockOptin = 227 << 10;
    prop->totalGlobalMem = dev().total;
    prop->maxThreadsPerBlock = max_threads;
    prop->warpSize = 32;
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
    device &d = dev();
    cudaError_t e = d.last;
    d.last = cudaSuccess;
    return e;
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess:
        return "no error";
    case cudaErrorInvalidValue:
        return "invalid argument";
    case cudaErrorMemoryAllocation:
        return "out of memory";
    case cudaErrorInvalidConfiguration:
        return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer:
        return "invalid device pointer";
    case cudaErrorStreamCaptureUnsupported:
        return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    default:
        return "emulated CUDA error";
    }
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    *total_bytes = d.total;
    *free_bytes = d.total - d.used;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **ptr, size_t bytes)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    *ptr = nullptr;
    if (capture_forbids(d))
        return cudaErrorStreamCaptureUnsupported;
    if (bytes == 0)
        return cudaSuccess;
    if (bytes > d.total - d.used)
        return fail(cudaErrorMemoryAllocation);
    size_t ps = page_size();
    size_t span = (bytes + 255) & ~(size_t)255;
    size_t body = (span + ps - 1) / ps * ps;
    size_t len = body + 2 * ps;
    char *m = static_cast<char *>(
        mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (m == MAP_FAILED)
        return fail(cudaErrorMemoryAllocation);
    if (mprotect(m + ps, body, PROT_READ | PROT_WRITE) != 0) {
        munmap(m, len);
        return fail(cudaErrorMemoryAllocation);
    }
    /* The end of the 256-byte-rounded span touches the trailing guard page. */
    char *user = m + ps + body - span;
    memset(user, 0xff, span);
    dev_alloc al{m, len, user, bytes, span};
    d.allocs[(uintptr_t)user] = al;
    d.used += bytes;
    set_access(d, d.allocs[(uintptr_t)user], false);
    *ptr = user;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    if (!ptr)
        return cudaSuccess;
    if (capture_forbids(d))
        return cudaErrorStreamCaptureUnsupported;
    auto it = d.allocs.find((uintptr_t)ptr);
    if (it == d.allocs.end())
        return fail(cudaErrorInvalidDevicePointer);
    munmap(it->second.map, it->second.map_len);
    d.used -= it->second.bytes;
    d.allocs.erase(it);
    return cudaSuccess;
}

cudaError_t cudaHostRegister(void *ptr, size_t bytes, unsigned flags)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    (void)flags;
    if (!ptr || bytes == 0 || kind_of(d, ptr, 1) != M_PAGEABLE ||
        kind_of(d, static_cast<char *>(ptr) + bytes - 1, 1) != M_PAGEABLE)
        return fail(cudaErrorInvalidValue); /* device memory, or already registered */
    d.pinned[(uintptr_t)ptr] = bytes;
    return cudaSuccess;
}

cudaError_t cudaHostUnregister(void *ptr)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    auto it = d.pinned.find((uintptr_t)ptr);
    if (it == d.pinned.end())
        return fail(cudaErrorInvalidValue);
    d.pinned.erase(it);
    return cudaSuccess;
}

/* The kind of memory at ptr: device (an allocation), host (a registered range) or plain. */
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *attr, const void *ptr)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    if (!attr)
        return fail(cudaErrorInvalidValue);
    *attr = cudaPointerAttributes{};
    if (!ptr)
        return cudaSuccess;
    int k = kind_of(d, ptr, 1);
    attr->type = k == M_PAGEABLE ? cudaMemoryTypeUnregistered
                                 : (k == M_PINNED ? cudaMemoryTypeHost : cudaMemoryTypeDevice);
    if (attr->type == cudaMemoryTypeDevice)
        attr->devicePointer = const_cast<void *>(ptr);
    else if (attr->type == cudaMemoryTypeHost)
        attr->hostPointer = const_cast<void *>(ptr);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    if (capture_forbids(d))
        return cudaErrorStreamCaptureUnsupported;
    if (bytes == 0)
        return cudaSuccess;
    mem_kind dk, sk;
    cudaError_t e = check_copy(d, dst, src, bytes, kind, false, &dk, &sk);
    if (e != cudaSuccess)
        return fail(e);
    do_copy(dst, src, bytes, dk == M_DEVICE, sk == M_DEVICE);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    if (bytes == 0)
        return cudaSuccess;
    mem_kind dk, sk;
    cudaError_t e = check_copy(d, dst, src, bytes, kind, stream_of(stream)->capturing, &dk, &sk);
    if (e != cudaSuccess) {
        if (stream_of(stream)->capturing)
            stream_of(stream)->invalidated = true;
        return fail(e);
    }
    bool dd = dk == M_DEVICE, sd = sk == M_DEVICE;
    submit(stream, "cudaMemcpyAsync",
           [dst, src, bytes, dd, sd]() { do_copy(dst, src, bytes, dd, sd); });
    return cudaSuccess;
}

cudaError_t cudaMemset(void *dst, int value, size_t bytes)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    if (capture_forbids(d))
        return cudaErrorStreamCaptureUnsupported;
    if (bytes == 0)
        return cudaSuccess;
    if (!find_alloc(d, dst, bytes))
        return fail(cudaErrorInvalidValue);
    do_memset(dst, value, bytes, bytes, 1);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream)
{
    return cudaMemset2DAsync(dst, bytes, value, bytes, 1, stream);
}

cudaError_t cudaMemset2DAsync(void *dst, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t stream)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    if (width == 0 || height == 0)
        return cudaSuccess;
    if (width > pitch || !find_alloc(d, dst, pitch * (height - 1) + width))
        return fail(cudaErrorInvalidValue);
    submit(stream, "cudaMemsetAsync",
           [dst, value, pitch, width, height]() { do_memset(dst, value, pitch, width, height); });
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags)
{
    (void)flags;
    *stream = new kern_emu_stream();
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    if (stream && stream->capturing)
        stop_capture(d, stream);
    delete stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    kern_emu_stream *st = stream_of(stream);
    if (st->capturing) {
        st->invalidated = true;
        return fail(cudaErrorStreamCaptureUnsupported);
    }
    if (capture_forbids(d))
        return cudaErrorStreamCaptureUnsupported;
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    (void)mode;
    if (!stream)
        return fail(cudaErrorStreamCaptureUnsupported); /* the legacy stream cannot capture */
    if (stream->capturing)
        return fail(cudaErrorInvalidValue);
    stream->capturing = true;
    stream->invalidated = false;
    stream->nodes.clear();
    d.capturing.push_back(stream);
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    *graph = nullptr;
    if (!stream || !stream->capturing)
        return fail(cudaErrorInvalidValue);
    stop_capture(d, stream);
    if (stream->invalidated) {
        stream->nodes.clear();
        return fail(cudaErrorStreamCaptureInvalidated);
    }
    kern_emu_graph *g = new kern_emu_graph();
    g->nodes.swap(stream->nodes);
    *graph = g;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                 unsigned long long flags)
{
    (void)flags;
    if (!graph)
        return fail(cudaErrorInvalidValue);
    kern_emu_graph_exec *x = new kern_emu_graph_exec();
    x->nodes = graph->nodes;
    *exec = x;
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    if (!exec)
        return fail(cudaErrorInvalidValue);
    if (stream_of(stream)->capturing)
        return fail(cudaErrorStreamCaptureUnsupported);
    for (const kern_emu_node &n : exec->nodes)
        n.run();
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    delete exec;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
    delete graph;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *event)
{
    *event = new kern_emu_event();
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    delete event;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    if (!event)
        return fail(cudaErrorInvalidResourceHandle);
    submit(stream, "cudaEventRecord", [event]() {
        event->t = now_ms();
        event->recorded = true;
    });
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    if (capture_forbids(d))
        return cudaErrorStreamCaptureUnsupported;
    return event ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    if (!start || !end || !start->recorded || !end->recorded)
        return fail(cudaErrorInvalidResourceHandle);
    *ms = (float)(end->t - start->t);
    return cudaSuccess;
}

cudaError_t kern_emu_func_set_attribute(const void *fn, cudaFuncAttribute attr, int value)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
        value > (227 << 10))
        return fail(cudaErrorInvalidValue);
    d.max_dyn_smem[fn] = value;
    return cudaSuccess;
}
