/* The CUDA emulator's device: memory that is guarded host memory, CUDA threads as fibers
 * scheduled block by block, streams that run their work at once (or record it while a graph
 * is captured), and the device-side entry points of cuda_emu.h. The runtime API over it is in
 * emu_api.cpp. A test tool (the 'cuda-emu' suite); the phiserve server never links it.
 *
 * Device memory: every allocation is its own mapping, placed so that it ends at a page
 * boundary with an inaccessible page after it (a kernel that reads past the end faults), and
 * filled with 0xff bytes (NaN in every float type) as cudaMalloc leaves memory undefined.
 * With KERN_EMU_PROTECT=1 the allocations are inaccessible outside kernels and copies, so
 * host code that dereferences a device pointer faults at once. That costs two mprotect calls
 * per allocation and launch (slow with many allocations), and allocations above
 * KERN_EMU_PROTECT_MAX bytes (16 MiB by default: a KV pool, a large logits buffer) are left
 * accessible. KERN_EMU_DEVICE_MEM sets the device's size (2 GiB by default). */
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "emu_internal.h"

#if EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif

namespace kern_emu_rt {

/* ---- fatal kernel bugs ---------------------------------------------------------------- */

[[noreturn]] void die(const char *fmt, const char *a = "", long long b = 0, long long c = 0)
{
    fprintf(stderr, "cuda-emu: ");
    fprintf(stderr, fmt, a, b, c);
    fprintf(stderr, "\n");
    fflush(stderr);
    abort();
}

/* ---- the fiber switch (x86-64 System V) ----------------------------------------------- */

extern "C" void kern_emu_switch(void **save_sp, void *load_sp);
asm(R"(
    .text
    .globl kern_emu_switch
    .type kern_emu_switch,@function
kern_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size kern_emu_switch, .-kern_emu_switch
)");

/* One running block: its fibers and what they share. */
struct block_run {
    fiber *fibers;
    int n;
    const std::function<void()> *body;
    void *sched_sp;
    fiber *cur;
    uint3 bidx;
    dim3 bdim, gdim;
    char *dyn_smem;
    void *asan_fake;
};

thread_local block_run *g_run;

device &dev()
{
    static device d; /* constructed once, thread-safely, on first use */
    return d;
}

size_t page_size()
{
    static size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    return ps;
}

/* The allocation holding [p, p + bytes), or nullptr. */
dev_alloc *find_alloc(device &d, const void *p, size_t bytes)
{
    uintptr_t a = (uintptr_t)p;
    auto it = d.allocs.upper_bound(a);
    if (it == d.allocs.begin())
        return nullptr;
    --it;
    dev_alloc &al = it->second;
    uintptr_t u = (uintptr_t)al.user;
    if (a < u || a - u > al.bytes || bytes > al.bytes - (a - u))
        return nullptr;
    return &al;
}

void set_access(device &d, dev_alloc &al, bool on)
{
    if (!d.protect || al.span > d.protect_max)
        return;
    size_t ps = page_size();
    char *first = al.map + ps; /* after the leading guard page */
    size_t len = al.map_len - 2 * ps;
    if (mprotect(first, len, on ? PROT_READ | PROT_WRITE : PROT_NONE) != 0)
        die("mprotect failed");
}

void set_access_all(device &d, bool on)
{
    if (!d.protect)
        return;
    for (auto &kv : d.allocs)
        set_access(d, kv.second, on);
}

/* ---- running a grid ------------------------------------------------------------------- */

void fiber_entry()
{
    block_run *r = g_run;
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
    (*r->body)();
    r = g_run;
    fiber *f = r->cur;
    f->state = F_DONE;
#if EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, nullptr, 0);
#endif
    kern_emu_switch(&f->sp, r->sched_sp);
    die("a finished fiber was resumed");
}

void prepare_fiber(fiber *f)
{
    char *top = f->stack + stack_bytes;
    uint64_t *sp = reinterpret_cast<uint64_t *>(top - 72);
    uint32_t mxcsr = 0x1f80;
    uint16_t fpucw = 0x037f;
    memset(sp, 0, 72);
    memcpy(&sp[0], &mxcsr, 4);
    memcpy(reinterpret_cast<char *>(&sp[0]) + 4, &fpucw, 2);
    sp[7] = (uint64_t)(uintptr_t)&fiber_entry; /* after r15..rbp: the return address */
    f->sp = sp;
    f->state = F_READY;
}

void resume(block_run *r, fiber *f)
{
    r->cur = f;
#if EMU_ASAN
    __sanitizer_start_switch_fiber(&r->asan_fake, f->stack, stack_bytes);
#endif
    kern_emu_switch(&r->sched_sp, f->sp);
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(r->asan_fake, nullptr, nullptr);
#endif
    r->cur = nullptr;
}

/* Called on a fiber: parks it in state s and returns to the scheduler. */
void park(fiber_state s)
{
    block_run *r = g_run;
    fiber *f = r->cur;
    if (!f)
        die("a barrier or warp collective was called outside a kernel");
    f->state = s;
#if EMU_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, nullptr, 0);
#endif
    kern_emu_switch(&f->sp, r->sched_sp);
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

const char *state_name(fiber_state s)
{
    switch (s) {
    case F_READY:
        return "running";
    case F_BARRIER:
        return "__syncthreads";
    case F_WARP:
        return "a warp collective";
    default:
        return "exited";
    }
}

/* Completes the warp collectives every lane of a warp has reached. Returns whether any was
 * completed; dies when a warp waits on a lane that exited or waits elsewhere. */
bool release_warps(block_run *r, const char *name)
{
    bool any = false;
    for (int w0 = 0; w0 < r->n; w0 += 32) {
        fiber *lanes = r->fibers + w0;
        int n_warp = 0, n_done = 0;
        for (int l = 0; l < 32; l++) {
            n_warp += lanes[l].state == F_WARP;
            n_done += lanes[l].state == F_DONE;
        }
        if (n_warp == 0)
            continue;
        if (n_warp < 32) {
            if (n_done > 0)
                die("kernel %s: warp %lld waits in a warp collective for lanes that exited "
                    "(block thread %lld)", name, w0 / 32, w0);
            continue; /* the other lanes may still get there */
        }
        warp_op op = lanes[0].wop;
        unsigned ballot = 0;
        for (int l = 0; l < 32; l++) {
            if (lanes[l].wop != op)
                die("kernel %s: lanes of warp %lld are in different warp collectives", name,
                    w0 / 32);
            if (lanes[l].xval)
                ballot |= 1u << l;
        }
        for (int l = 0; l < 32; l++) {
            lanes[l].xres = op == W_BALLOT ? ballot : lanes[lanes[l].xsrc].xval;
            lanes[l].state = F_READY;
        }
        any = true;
    }
    return any;
}

void run_block(block_run *r, const char *name)
{
    for (int i = 0; i < r->n; i++)
        prepare_fiber(&r->fibers[i]);
    for (;;) {
        bool ran = false;
        for (int i = 0; i < r->n; i++) {
            if (r->fibers[i].state == F_READY) {
                resume(r, &r->fibers[i]);
                ran = true;
            }
        }
        if (ran)
            continue;
        if (release_warps(r, name))
            continue;
        int n_done = 0, n_bar = 0;
        for (int i = 0; i < r->n; i++) {
            n_done += r->fibers[i].state == F_DONE;
            n_bar += r->fibers[i].state == F_BARRIER;
        }
        if (n_done == r->n)
            return;
        if (n_bar + n_done == r->n) {
            const fiber *first = nullptr;
            for (int i = 0; i < r->n; i++) {
                fiber *f = &r->fibers[i];
                if (f->state != F_BARRIER)
                    continue;
                if (!first)
                    first = f;
                else if (f->bar_line != first->bar_line || strcmp(f->bar_file, first->bar_file))
                    die("kernel %s: divergent __syncthreads: threads wait at lines %lld and "
                        "%lld", name, first->bar_line, f->bar_line);
                f->state = F_READY;
            }
            continue;
        }
        for (int i = 0; i < r->n; i++)
            if (r->fibers[i].state != F_DONE && r->fibers[i].state != F_BARRIER)
                fprintf(stderr, "cuda-emu: thread %d waits in %s\n", i,
                        state_name(r->fibers[i].state));
        die("kernel %s: deadlock in block (%lld, %lld, ...): some threads wait at "
            "__syncthreads while others wait in a warp collective",
            name, r->bidx.x, r->bidx.y);
    }
}

void run_grid(const char *name, dim3 grid, dim3 block, size_t smem,
              const std::function<void()> &body)
{
    device &d = dev();
    if (!d.stacks) {
        size_t ps = page_size();
        size_t per = stack_bytes + ps;
        char *m = static_cast<char *>(mmap(nullptr, per * max_threads, PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
        if (m == MAP_FAILED)
            die("cannot map the fiber stacks");
        for (int i = 0; i < max_threads; i++) {
            char *base = m + (size_t)i * per;
            mprotect(base, ps, PROT_NONE); /* overflow guard */
            d.fibers[i].stack = base + ps;
        }
        d.stacks = m;
    }
    block_run r{};
    r.n = (int)(block.x * block.y * block.z);
    r.fibers = d.fibers;
    r.body = &body;
    r.bdim = block;
    r.gdim = grid;
    d.dyn.assign(smem + 128, (char)0xff); /* uninitialised: NaN */
    uintptr_t a = ((uintptr_t)d.dyn.data() + 127) & ~(uintptr_t)127;
    r.dyn_smem = reinterpret_cast<char *>(a);
    for (int i = 0; i < r.n; i++) {
        fiber &f = d.fibers[i];
        f.linear = i;
        f.tid.x = (unsigned)i % block.x;
        f.tid.y = (unsigned)(i / block.x) % block.y;
        f.tid.z = (unsigned)(i / (block.x * block.y));
    }
    block_run *saved = g_run;
    g_run = &r;
    set_access_all(d, true);
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                r.bidx = uint3{x, y, z};
                run_block(&r, name);
            }
    set_access_all(d, false);
    g_run = saved;
}

/* ---- streams and capture -------------------------------------------------------------- */

kern_emu_stream *stream_of(cudaStream_t s)
{
    return s ? s : &dev().default_stream;
}

/* Runs op now, or records it when the stream is capturing. */
void submit(cudaStream_t s, const char *name, std::function<void()> op)
{
    kern_emu_stream *st = stream_of(s);
    if (st->capturing) {
        st->nodes.push_back(kern_emu_node{name, std::move(op)});
        return;
    }
    op();
}

/* A call that is not allowed while a stream captures (it would synchronise or allocate):
 * invalidates every capture and returns the error, as CUDA's global capture mode does. */
bool capture_forbids(device &d)
{
    if (d.capturing.empty())
        return false;
    for (kern_emu_stream *st : d.capturing)
        st->invalidated = true;
    d.last = cudaErrorStreamCaptureUnsupported;
    return true;
}

void stop_capture(device &d, kern_emu_stream *st)
{
    st->capturing = false;
    for (size_t i = 0; i < d.capturing.size(); i++)
        if (d.capturing[i] == st) {
            d.capturing.erase(d.capturing.begin() + (long)i);
            break;
        }
}

cudaError_t fail(cudaError_t e)
{
    dev().last = e;
    return e;
}

double now_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}


mem_kind kind_of(device &d, const void *p, size_t bytes)
{
    if (find_alloc(d, p, bytes))
        return M_DEVICE;
    uintptr_t a = (uintptr_t)p;
    auto it = d.pinned.upper_bound(a);
    if (it != d.pinned.begin()) {
        --it;
        if (a >= it->first && a - it->first <= it->second && bytes <= it->second - (a - it->first))
            return M_PINNED;
    }
    return M_PAGEABLE;
}

bool overlaps_device(device &d, const void *p, size_t bytes)
{
    uintptr_t a = (uintptr_t)p, e = a + bytes;
    auto it = d.allocs.lower_bound(e);
    if (it == d.allocs.begin())
        return false;
    --it;
    uintptr_t m = (uintptr_t)it->second.map;
    return m < e && a < m + it->second.map_len;
}

/* Checks a copy's pointers against its kind; returns the error or cudaSuccess. */
cudaError_t check_copy(device &d, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                       bool async_capture, mem_kind *dk, mem_kind *sk)
{
    *dk = kind_of(d, dst, bytes);
    *sk = kind_of(d, src, bytes);
    bool dst_dev = kind == cudaMemcpyDeviceToDevice || kind == cudaMemcpyHostToDevice;
    bool src_dev = kind == cudaMemcpyDeviceToDevice || kind == cudaMemcpyDeviceToHost;
    if (kind == cudaMemcpyDefault) {
        dst_dev = *dk == M_DEVICE;
        src_dev = *sk == M_DEVICE;
    }
    if (dst_dev != (*dk == M_DEVICE) || src_dev != (*sk == M_DEVICE))
        return cudaErrorInvalidValue; /* outside an allocation, or the wrong kind */
    if ((!dst_dev && overlaps_device(d, dst, bytes)) || (!src_dev && overlaps_device(d, src, bytes)))
        return cudaErrorInvalidValue;
    if (async_capture && ((!dst_dev && *dk == M_PAGEABLE) || (!src_dev && *sk == M_PAGEABLE)))
        return cudaErrorStreamCaptureUnsupported; /* pageable memory cannot be captured */
    return cudaSuccess;
}

/* The copy itself, when the stream reaches it; dst_dev / src_dev say which side was device
 * memory when it was queued (a graph may replay it after that memory was freed). */
void do_copy(void *dst, const void *src, size_t bytes, bool dst_dev, bool src_dev)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    dev_alloc *da = find_alloc(d, dst, bytes), *sa = find_alloc(d, src, bytes);
    if ((dst_dev && !da) || (src_dev && !sa))
        die("a copy reaches device memory that was freed after it was queued%s", "");
    if (da)
        set_access(d, *da, true);
    if (sa && sa != da)
        set_access(d, *sa, true);
    memmove(dst, src, bytes);
    if (da)
        set_access(d, *da, false);
    if (sa && sa != da)
        set_access(d, *sa, false);
}

void do_memset(void *dst, int value, size_t pitch, size_t width, size_t height)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    dev_alloc *da = find_alloc(d, dst, pitch * (height - 1) + width);
    if (!da)
        die("a memset reaches device memory that was freed after it was queued%s", "");
    set_access(d, *da, true);
    for (size_t r = 0; r < height; r++)
        memset(static_cast<char *>(dst) + r * pitch, value, width);
    set_access(d, *da, false);
}

} /* namespace kern_emu_rt */

using namespace kern_emu_rt;

/* ---- device-side entry points ---------------------------------------------------------- */

const uint3 &kern_emu_thread_idx(void)
{
    if (!g_run || !g_run->cur)
        die("threadIdx read outside a kernel");
    return g_run->cur->tid;
}

const uint3 &kern_emu_block_idx(void)
{
    return g_run->bidx;
}

const dim3 &kern_emu_block_dim(void)
{
    return g_run->bdim;
}

const dim3 &kern_emu_grid_dim(void)
{
    return g_run->gdim;
}

void kern_emu_syncthreads(const char *file, int line)
{
    fiber *f = g_run ? g_run->cur : nullptr;
    if (!f)
        die("__syncthreads called outside a kernel%s", "");
    f->bar_file = file;
    f->bar_line = line;
    park(F_BARRIER);
}

int kern_emu_lane(void)
{
    return g_run->cur->linear & 31;
}

static void check_warp(unsigned mask)
{
    if (mask != 0xffffffffu)
        die("warp collective with mask %s%llx: only the full mask is emulated", "0x",
            (long long)mask);
    if (g_run->n % 32 != 0)
        die("warp collective in a block of %s%lld threads (not whole warps)", "",
            (long long)g_run->n);
}

uint64_t kern_emu_warp_exchange(unsigned mask, uint64_t value, int src_lane)
{
    check_warp(mask);
    fiber *f = g_run->cur;
    f->wop = W_EXCHANGE;
    f->xval = value;
    f->xsrc = src_lane;
    park(F_WARP);
    return g_run->cur->xres;
}

unsigned kern_emu_ballot(unsigned mask, int pred)
{
    check_warp(mask);
    fiber *f = g_run->cur;
    f->wop = W_BALLOT;
    f->xval = pred != 0;
    f->xsrc = 0;
    park(F_WARP);
    return (unsigned)g_run->cur->xres;
}

void *kern_emu_dyn_smem(void)
{
    return g_run->dyn_smem;
}

void kern_emu_submit(cudaStream_t stream, const void *fn, const char *name, dim3 grid,
                     dim3 block, size_t smem, std::function<void()> body)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    uint64_t threads = (uint64_t)block.x * block.y * block.z;
    if (threads == 0 || threads > (uint64_t)max_threads || block.z > 64 || grid.x == 0 ||
        grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
        grid.z > 65535) {
        fprintf(stderr, "cuda-emu: kernel %s: invalid launch configuration (grid %u,%u,%u "
                "block %u,%u,%u)\n", name, grid.x, grid.y, grid.z, block.x, block.y, block.z);
        d.last = cudaErrorInvalidConfiguration;
        return;
    }
    size_t limit = 48 << 10;
    auto it = d.max_dyn_smem.find(fn);
    if (it != d.max_dyn_smem.end() && (size_t)it->second > limit)
        limit = (size_t)it->second;
    if (smem > limit) {
        fprintf(stderr, "cuda-emu: kernel %s: %zu bytes of dynamic shared memory over the "
                "limit %zu (cudaFuncSetAttribute)\n", name, smem, limit);
        d.last = cudaErrorInvalidValue;
        return;
    }
    std::string nm(name);
    submit(stream, name, [nm, grid, block, smem, body]() {
        device &dd = dev();
        std::lock_guard<std::recursive_mutex> l2(dd.mu);
        run_grid(nm.c_str(), grid, block, smem, body);
    });
}

void kern_emu_submit_host(cudaStream_t stream, const char *name, std::function<void()> body)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    submit(stream, name, [body]() {
        device &dd = dev();
        std::lock_guard<std::recursive_mutex> l2(dd.mu);
        set_access_all(dd, true);
        body();
        set_access_all(dd, false);
    });
}

bool kern_emu_is_device_range(const void *p, size_t bytes)
{
    device &d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    return find_alloc(d, p, bytes) != nullptr;
}

