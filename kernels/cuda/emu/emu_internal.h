/* Private to the CUDA emulator (kernels/cuda/emu): the emulated device's state and the
 * helpers that emu_runtime.cpp (fibers, grids, memory, streams) gives emu_api.cpp (the CUDA
 * runtime API). Not included by kernel sources. */
#ifndef PHISERVE_KERNELS_CUDA_EMU_INTERNAL_H
#define PHISERVE_KERNELS_CUDA_EMU_INTERNAL_H

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "include/cuda_runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

namespace kern_emu_rt {

enum fiber_state { F_READY, F_BARRIER, F_WARP, F_DONE };
enum warp_op { W_EXCHANGE, W_BALLOT };

const size_t stack_bytes = EMU_ASAN ? (size_t)1 << 20 : (size_t)256 << 10;
const int max_threads = 1024;

struct fiber {
    void *sp;
    char *stack; /* lowest usable byte; a guard page lies below */
    uint3 tid;
    int linear;
    fiber_state state;
    warp_op wop;
    uint64_t xval, xres;
    int xsrc;
    const char *bar_file; /* where the thread waits at __syncthreads */
    int bar_line;
};

/* ---- the device --------------------------------------------------------------------- */

struct dev_alloc {
    char *map;
    size_t map_len;
    char *user;
    size_t bytes;
    size_t span; /* accessible bytes from user: bytes rounded up to 256 */
};

struct kern_emu_node {
    std::string name;
    std::function<void()> run;
};

} /* namespace kern_emu_rt */

struct kern_emu_stream {
    bool capturing;
    bool invalidated;
    std::vector<kern_emu_rt::kern_emu_node> nodes;
};

struct kern_emu_event {
    double t;
    bool recorded;
};

struct kern_emu_graph {
    std::vector<kern_emu_rt::kern_emu_node> nodes;
};

struct kern_emu_graph_exec {
    std::vector<kern_emu_rt::kern_emu_node> nodes;
};

namespace kern_emu_rt {

struct device {
    std::recursive_mutex mu;
    std::map<uintptr_t, dev_alloc> allocs; /* by user address */
    std::map<uintptr_t, size_t> pinned;    /* cudaHostRegister ranges */
    std::map<const void *, int> max_dyn_smem;
    size_t used = 0, total = 0;
    bool protect = false;
    size_t protect_max = 0; /* allocations above this size are never made inaccessible */
    std::vector<kern_emu_stream *> capturing; /* streams in capture */
    cudaError_t last = cudaSuccess;
    kern_emu_stream default_stream{};
    fiber fibers[max_threads];
    char *stacks = nullptr;
    std::vector<char> dyn; /* dynamic shared memory of the running block */

    /* The settings from the environment (see emu_runtime.cpp). */
    device()
    {
        const char *p = getenv("KERN_EMU_PROTECT");
        protect = p && strcmp(p, "1") == 0;
        const char *pm = getenv("KERN_EMU_PROTECT_MAX");
        protect_max = pm ? strtoull(pm, nullptr, 10) : (size_t)16 << 20;
        const char *m = getenv("KERN_EMU_DEVICE_MEM");
        total = m ? strtoull(m, nullptr, 10) : (size_t)2 << 30;
    }
};

/* Classifies a pointer for a copy: device (inside an allocation), pinned host or pageable. */
enum mem_kind { M_DEVICE, M_PINNED, M_PAGEABLE };

/* The one emulated device. */
device &dev();
/* The host's page size. */
size_t page_size();
/* The allocation holding [p, p + bytes), or nullptr. */
dev_alloc *find_alloc(device &d, const void *p, size_t bytes);
/* Makes an allocation accessible or not (KERN_EMU_PROTECT). */
void set_access(device &d, dev_alloc &al, bool on);
/* The stream object of a handle (nullptr: the legacy default stream). */
kern_emu_stream *stream_of(cudaStream_t s);
/* Runs op now, or records it when the stream is capturing. */
void submit(cudaStream_t s, const char *name, std::function<void()> op);
/* A call that is not allowed while a stream captures (it would synchronise or allocate):
 * invalidates every capture, records the error and returns true when one is open. */
bool capture_forbids(device &d);
/* Takes st out of the list of capturing streams. */
void stop_capture(device &d, kern_emu_stream *st);
/* Records e as the last error and returns it. */
cudaError_t fail(cudaError_t e);
/* CLOCK_MONOTONIC in milliseconds. */
double now_ms();
/* Whether [p, p + bytes) is device memory, pinned host memory or pageable. */
mem_kind kind_of(device &d, const void *p, size_t bytes);
/* Checks a copy's pointers against its kind (and, when it is being captured, that no
 * pageable host memory takes part); returns the error or cudaSuccess and the two kinds. */
cudaError_t check_copy(device &d, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                       bool async_capture, mem_kind *dk, mem_kind *sk);
/* The copy and the memset themselves, when the stream reaches them. */
void do_copy(void *dst, const void *src, size_t bytes, bool dst_dev, bool src_dev);
void do_memset(void *dst, int value, size_t pitch, size_t width, size_t height);

} /* namespace kern_emu_rt */

#endif
