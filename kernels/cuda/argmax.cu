/* CUDA argmax: for each row the first index of its largest value, NaN counting as -inf, -1
 * when no value is above -inf (kern_argmax_params in kernels/ops.h; the sampler's greedy rule).
 * One block per row (grid-stride over rows), each thread scans a strided slice, then the
 * (value, index) pairs meet through warp shuffles and shared memory. No sampling here. */
#include "cuda_internal.h"

#define ARGMAX_THREADS 256

/* Whether the pair (v, i) beats (bv, bi): larger value, or the same value at a smaller index.
 * An empty pair is (-inf, -1) and nothing ever compares below it: values enter a pair only
 * through a strict >, so a NaN or a -inf never does, and a real pair always has i >= 0. */
static __device__ __forceinline__ bool argmax_beats(float v, int i, float bv, int bi)
{
    return v > bv || (v == bv && i < bi);
}

static __global__ void argmax_kernel(const float *x, int32_t *out, int64_t n_rows, int64_t dim,
                                     int64_t ldx)
{
    __shared__ float wv[ARGMAX_THREADS / 32];
    __shared__ int wi[ARGMAX_THREADS / 32];
    for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
        float bv = -INFINITY;
        int bi = -1;
        /* Each thread visits its indices in ascending order: a strict > keeps its first
         * occurrence of its largest value. */
        for (int64_t i = threadIdx.x; i < dim; i += ARGMAX_THREADS) {
            float v = x[r * ldx + i];
            if (v > bv) {
                bv = v;
                bi = (int)i;
            }
        }
        /* The comparison is a strict total order on the pairs that occur, so every lane of
         * the butterfly ends with the same winner. */
        for (int off = 16; off > 0; off >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, off);
            int oi = __shfl_xor_sync(0xffffffffu, bi, off);
            if (argmax_beats(ov, oi, bv, bi)) {
                bv = ov;
                bi = oi;
            }
        }
        if ((threadIdx.x & 31) == 0) {
            wv[threadIdx.x / 32] = bv;
            wi[threadIdx.x / 32] = bi;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < ARGMAX_THREADS / 32; w++)
                if (argmax_beats(wv[w], wi[w], bv, bi)) {
                    bv = wv[w];
                    bi = wi[w];
                }
            out[r] = bi;
        }
        __syncthreads(); /* wv and wi are reused by the next row */
    }
}

int kern_cuda_argmax(struct kern_ctx *ctx, const struct kern_argmax_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !p || p->n_rows < 0 || p->dim < 0 || p->dim > INT32_MAX || p->ldx < p->dim ||
        (p->n_rows > 0 && p->ldx > 0 && p->n_rows - 1 > (INT64_MAX - p->dim) / p->ldx))
        return KERN_ERR_INVALID;
    if (p->n_rows == 0)
        return KERN_OK;
    if (!p->out || (p->dim > 0 && !p->x))
        return KERN_ERR_INVALID;
    KERN_CUDA_LAUNCH(argmax_kernel, kern_cuda_grid(p->n_rows, 1, 65535), ARGMAX_THREADS, 0,
                     cu->stream)(p->x, p->out, p->n_rows, p->dim, p->ldx);
    return kern_cuda_launch_status();
}
