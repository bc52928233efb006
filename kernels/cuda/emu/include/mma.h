/* The CUDA emulator's stand-in for <mma.h>: the WMMA API (nvcuda::wmma) for 16x16x16 tiles of
 * bf16 / fp16 inputs with fp32 accumulators. A fragment's layout across the lanes of a warp is
 * unspecified in CUDA; here every lane holds the whole tile, so kernels that only apply the
 * same operation to every element (x[i] *= s) behave as on the GPU, and a kernel that assumed a
 * layout would not. What CUDA requires is checked: the whole warp takes part in each load and
 * mma (a warp barrier after it), pointers are 256-bit aligned, ldm is a multiple of 16 bytes.
 * Each lane reads memory as it loads and writes only its share of a stored tile (element i by
 * lane i % 32), so a missing __syncwarp between lanes' writes and a load shows as wrong data. */
#ifndef PHISERVE_KERNELS_CUDA_EMU_MMA_H
#define PHISERVE_KERNELS_CUDA_EMU_MMA_H

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "../cuda_emu.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
    static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
    static constexpr int num_elements = rows * cols;
    T x[num_elements]; /* the whole tile, row-major */
};

static inline float emu_to_f32(float v) { return v; }
static inline float emu_to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
static inline float emu_to_f32(__half v) { return __half2float(v); }

/* The checks of a load or store address; aborts with a message on a violation. */
template <typename T>
static inline void emu_check(const T *p, unsigned ldm, int min_cols, const char *what)
{
    if ((uintptr_t)p % 32 != 0 || (ldm * sizeof(T)) % 16 != 0 || (int)ldm < min_cols) {
        fprintf(stderr, "cuda-emu: wmma %s: pointer %p must be 32-byte aligned and ldm %u a "
                        "multiple of 16 bytes and at least %d\n", what, (const void *)p, ldm,
                min_cols);
        abort();
    }
}

template <typename Use, int M, int N, int K, typename T, typename Layout>
static inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout> &f, const T *p,
                                    unsigned ldm)
{
    typedef fragment<Use, M, N, K, T, Layout> F;
    bool rm = std::is_same<Layout, row_major>::value;
    emu_check(p, ldm, rm ? F::cols : F::rows, "load_matrix_sync");
    for (int r = 0; r < F::rows; r++)
        for (int c = 0; c < F::cols; c++)
            f.x[r * F::cols + c] = rm ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
    __syncwarp();
}

template <int M, int N, int K>
static inline void load_matrix_sync(fragment<accumulator, M, N, K, float> &f, const float *p,
                                    unsigned ldm, layout_t layout)
{
    bool rm = layout == mem_row_major;
    emu_check(p, ldm, rm ? N : M, "load_matrix_sync (accumulator)");
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++)
            f.x[r * N + c] = rm ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
    __syncwarp();
}

template <int M, int N, int K>
static inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f,
                                     unsigned ldm, layout_t layout)
{
    bool rm = layout == mem_row_major;
    emu_check(p, ldm, rm ? N : M, "store_matrix_sync");
    int lane = kern_emu_lane();
    for (int i = lane; i < M * N; i += 32) {
        int r = i / N, c = i % N;
        p[rm ? (size_t)r * ldm + c : (size_t)c * ldm + r] = f.x[i];
    }
}

template <typename Use, int M, int N, int K, typename T, typename Layout>
static inline void fill_fragment(fragment<Use, M, N, K, T, Layout> &f, T v)
{
    for (int i = 0; i < fragment<Use, M, N, K, T, Layout>::num_elements; i++)
        f.x[i] = v;
}

/* d = a b + c in fp32: the products of the 16-bit inputs are exact in fp32. */
template <int M, int N, int K, typename T, typename LA, typename LB>
static inline void mma_sync(fragment<accumulator, M, N, K, float> &d,
                            const fragment<matrix_a, M, N, K, T, LA> &a,
                            const fragment<matrix_b, M, N, K, T, LB> &b,
                            const fragment<accumulator, M, N, K, float> &c)
{
    /* Every lane holds the whole tiles, and the lanes of a warp normally hold the same ones:
     * the last product is kept (per host thread, which runs the lanes one after another),
     * and a lane whose inputs are bit for bit the same takes it instead of summing again. A
     * lane with other inputs computes its own; either way d is a function of its inputs. */
    struct memo {
        bool valid;
        T a[M * K], b[K * N];
        float c[M * N], d[M * N];
    };
    static thread_local memo last;
    if (!last.valid || memcmp(last.a, a.x, sizeof last.a) != 0 ||
        memcmp(last.b, b.x, sizeof last.b) != 0 || memcmp(last.c, c.x, sizeof last.c) != 0) {
        /* Each element sums its products in ascending k. */
        float af[M * K], bf[K * N], out[M * N];
        for (int i = 0; i < M * K; i++)
            af[i] = emu_to_f32(a.x[i]);
        for (int i = 0; i < K * N; i++)
            bf[i] = emu_to_f32(b.x[i]);
        for (int i = 0; i < M * N; i++)
            out[i] = c.x[i];
        for (int i = 0; i < M; i++)
            for (int k = 0; k < K; k++)
                for (int j = 0; j < N; j++)
                    out[i * N + j] += af[i * K + k] * bf[k * N + j];
        memcpy(last.a, a.x, sizeof last.a);
        memcpy(last.b, b.x, sizeof last.b);
        memcpy(last.c, c.x, sizeof last.c);
        memcpy(last.d, out, sizeof last.d);
        last.valid = true;
    }
    memcpy(d.x, last.d, sizeof last.d);
    __syncwarp();
}

} /* namespace wmma */
} /* namespace nvcuda */

#endif
