/* The CUDA emulator's device side: what a kernel source needs from CUDA (thread and block
 * indices, __syncthreads, warp shuffles, atomics, vector types) and the launcher behind
 * KERN_CUDA_LAUNCH, so that the .cu files of kernels/cuda build with the host C++ compiler and
 * run on the CPU, one CUDA thread per fiber (WMMA is in include/mma.h). It is a test tool for
 * machines without a GPU: it checks indexing, barriers, warp-collective use, launch limits and
 * graph capture, not speed, and says nothing about races between threads (they run one after
 * another, lane order within a warp) or the GPU's own rounding beyond fp32 order.
 * Rules it enforces (each a CUDA rule; a violation aborts with a message):
 *  - every thread of a block that has not exited waits at the same __syncthreads;
 *  - every lane of a warp takes part in each full-mask warp collective;
 *  - block size <= 1024, grid y/z <= 65535, dynamic shared memory within the opt-in limit. */
#ifndef PHISERVE_KERNELS_CUDA_EMU_H
#define PHISERVE_KERNELS_CUDA_EMU_H

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <utility>

/* ---- qualifiers ----------------------------------------------------------------------- */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
/* Shared memory is a static local: blocks run one after another on one host thread, so a
 * static is exactly "one copy per block, shared by its threads". */
#define __shared__ static

/* ---- vector types --------------------------------------------------------------------- */

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned x, y, z;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};
struct alignas(8) int2 {
    int x, y;
};
struct alignas(8) uint2 {
    unsigned x, y;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline int2 make_int2(int x, int y) { return {x, y}; }
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w)
{
    return {x, y, z, w};
}

/* ---- the emulated thread -------------------------------------------------------------- */

/* Indices of the running thread. They live in the runtime, per host thread. */
const uint3 &kern_emu_thread_idx(void);
const uint3 &kern_emu_block_idx(void);
const dim3 &kern_emu_block_dim(void);
const dim3 &kern_emu_grid_dim(void);
#define threadIdx (kern_emu_thread_idx())
#define blockIdx (kern_emu_block_idx())
#define blockDim (kern_emu_block_dim())
#define gridDim (kern_emu_grid_dim())

/* The block barrier. Each call names its place in the source: threads waiting at different
 * __syncthreads of one block are a divergent barrier, which CUDA leaves undefined. */
void kern_emu_syncthreads(const char *file, int line);
#define __syncthreads() kern_emu_syncthreads(__FILE__, __LINE__)

/* A full-warp exchange: every lane passes 8 bytes and the index of the lane it reads from
 * (its own index for a lane that only contributes); returns that lane's 8 bytes. mask must
 * be 0xffffffff (the only mask the kernels use). */
uint64_t kern_emu_warp_exchange(unsigned mask, uint64_t value, int src_lane);
/* The running thread's lane (0..31). */
int kern_emu_lane(void);

template <typename T>
static inline T kern_emu_shfl_from(unsigned mask, T v, int src)
{
    static_assert(sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = kern_emu_warp_exchange(mask, bits, src);
    T out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

/* The source lane of each shuffle, as CUDA defines it for a width that divides 32; a lane
 * whose source falls outside its segment reads its own value. */
template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{
    int lane = kern_emu_lane();
    int src = lane ^ lane_mask;
    if (src / width != lane / width)
        src = lane;
    return kern_emu_shfl_from(mask, v, src);
}

/* Every lane's predicate as a bit mask; a warp barrier, which is what __syncwarp needs. */
unsigned kern_emu_ballot(unsigned mask, int pred);
#define __syncwarp(...) ((void)kern_emu_ballot(0xffffffffu, 1))
/* The lanes' predicates as a bit mask (full-warp mask only, as the shuffles), and the bit
 * count that goes with it. */
static inline unsigned __ballot_sync(unsigned mask, int pred)
{
    return kern_emu_ballot(mask, pred);
}
static inline int __popc(unsigned x)
{
    return __builtin_popcount(x);
}

/* ---- atomics: the emulator runs one CUDA thread at a time ----------------------------- */

template <typename T>
static inline T atomicOr(T *p, T v)
{
    T old = *p;
    *p = old | v;
    return old;
}

/* ---- math and bit casts --------------------------------------------------------------- */

static inline float __uint_as_float(unsigned u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- launches ------------------------------------------------------------------------- */

typedef struct kern_emu_stream *cudaStream_t;

/* Dynamic shared memory of the running block (KERN_CUDA_DYN_SMEM): 128-byte aligned, as a
 * block's shared memory window starts on the GPU, and filled with NaN bytes. */
void *kern_emu_dyn_smem(void);

/* Queues one launch of body on stream: run now, or recorded when the stream is capturing.
 * fn identifies the kernel (for its attributes); name is for messages. Sets the error that
 * cudaGetLastError reports when the configuration is invalid. */
void kern_emu_submit(cudaStream_t stream, const void *fn, const char *name, dim3 grid,
                     dim3 block, size_t smem, std::function<void()> body);

template <typename... P>
struct kern_emu_launch {
    void (*fn)(P...);
    const char *name;
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;

    /* The arguments are converted to the kernel's parameter types and copied now, as a
     * launch (or a graph capture) copies them. */
    template <typename... A>
    void operator()(A &&...args) const
    {
        std::tuple<P...> params(static_cast<P>(std::forward<A>(args))...);
        void (*f)(P...) = fn;
        kern_emu_submit(stream, reinterpret_cast<const void *>(f), name, grid, block, smem,
                        [f, params]() { std::apply(f, params); });
    }
};

template <typename... P>
static inline kern_emu_launch<P...> kern_emu_launcher(void (*fn)(P...), const char *name,
                                                      dim3 grid, dim3 block, size_t smem,
                                                      cudaStream_t stream)
{
    return kern_emu_launch<P...>{fn, name, grid, block, smem, stream};
}

#endif
