/* CUDA matmul: y[m, n] (+)= x[m, k] @ W[n, k]^T through cuBLASLt (kern_matmul_params in
 * kernels/ops.h). bf16/f16 weights: x is rounded to the weight type in scratch and the GEMM
 * runs on the tensor cores with fp32 accumulation and fp32 output; f32 weights: a plain fp32
 * GEMM (no TF32). No fused epilogues (bias, activation) yet. */
#include <cstring>

#include "cuda_internal.h"
#include "index.h"

/* x[m, k] (row stride ldx) in fp32 -> xs[m, ldb] in the 16-bit type dt (columns < k). */
static __global__ void convert_rows_kernel(const float *x, void *xs, enum kern_dtype dt,
                                           int64_t m, int64_t k, int64_t ldx, int64_t ldb)
{
    int64_t n = m * k;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        int64_t r = e / k, c = e % k;
        kern_cuda_store(xs, dt, r * ldb + c, x[r * ldx + c]);
    }
}

static bool key_equal(const struct kern_cuda_gemm_key *a, const struct kern_cuda_gemm_key *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

/* The algorithm for key: from the cache, else from the cuBLASLt heuristic (then cached).
 * Returns 0, or KERN_ERR_UNSUPPORTED when cuBLASLt offers none. */
static int find_algo(struct kern_cuda *cu, const struct kern_cuda_gemm_key *key,
                     cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t la,
                     cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc,
                     cublasLtMatmulAlgo_t *algo)
{
    for (int i = 0; i < KERN_CUDA_GEMM_CACHE; i++) {
        if (cu->gemm_cache[i].valid && key_equal(&cu->gemm_cache[i].key, key)) {
            *algo = cu->gemm_cache[i].algo;
            return KERN_OK;
        }
    }
    cublasLtMatmulPreference_t pref = nullptr;
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS)
        return KERN_ERR_DEVICE;
    size_t ws = cu->lt_workspace_size;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                         sizeof ws);
    /* The heuristic otherwise assumes 256-byte aligned pointers; sub-views are not. */
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                         &key->align_a, sizeof key->align_a);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                         &key->align_b, sizeof key->align_b);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                         &key->align_c, sizeof key->align_c);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                         &key->align_c, sizeof key->align_c);
    cublasLtMatmulHeuristicResult_t res[8];
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(cu->lt, desc, la, lb, lc, lc, pref,
                                                       cu->gemm_algo + 1, res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0)
        return KERN_ERR_UNSUPPORTED;
    int pick = cu->gemm_algo < found ? cu->gemm_algo : found - 1;
    struct kern_cuda_gemm_entry *slot = &cu->gemm_cache[cu->gemm_cache_next];
    cu->gemm_cache_next = (cu->gemm_cache_next + 1) % KERN_CUDA_GEMM_CACHE;
    slot->key = *key;
    slot->algo = res[pick].algo;
    slot->valid = 1;
    *algo = res[pick].algo;
    return KERN_OK;
}

/* D = C = y (col-major n x m, ld ldy) = op(A) B + beta y with A = W (col-major k x n, ld k,
 * transposed) and B = x (col-major k x m, ld ldb): the row-major y = x W^T. */
static int run_gemm(struct kern_cuda *cu, const void *w, cudaDataType_t ab_type,
                    const void *b, int64_t ldb, float *y, int64_t m, int64_t n, int64_t k,
                    int64_t ldy, float beta)
{
    /* Descriptors in this frame (cuBLASLt's Init calls): a GEMM allocates no host memory. */
    cublasLtMatmulDescOpaque_t desc_mem;
    cublasLtMatrixLayoutOpaque_t la_mem, lb_mem, lc_mem;
    cublasLtMatmulDesc_t desc = &desc_mem;
    cublasLtMatrixLayout_t la = &la_mem, lb = &lb_mem, lc = &lc_mem;
    cublasLtMatmulAlgo_t algo;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const float alpha = 1.0f;
    struct kern_cuda_gemm_key key;
    memset(&key, 0, sizeof key); /* padding too: the key is compared with memcmp */
    key.m = m;
    key.n = n;
    key.k = k;
    key.lda = k;
    key.ldb = ldb;
    key.ldc = ldy;
    key.a_type = (int)ab_type;
    key.b_type = (int)ab_type;
    key.c_type = (int)CUDA_R_32F;
    key.align_a = kern_idx_alignment((uintptr_t)w);
    key.align_b = kern_idx_alignment((uintptr_t)b);
    key.align_c = kern_idx_alignment((uintptr_t)y);
    key.beta_one = beta != 0.0f;

    if (cublasLtMatmulDescInit(desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutInit(la, ab_type, (uint64_t)k, (uint64_t)n, k) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutInit(lb, ab_type, (uint64_t)k, (uint64_t)m, ldb) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutInit(lc, CUDA_R_32F, (uint64_t)n, (uint64_t)m, ldy) !=
            CUBLAS_STATUS_SUCCESS)
        return KERN_ERR_DEVICE;
    int rc = find_algo(cu, &key, desc, la, lb, lc, &algo);
    if (rc != KERN_OK)
        return rc;
    return cublasLtMatmul(cu->lt, desc, &alpha, w, la, b, lb, &beta, y, lc, y, lc, &algo,
                          cu->lt_workspace, cu->lt_workspace_size,
                          cu->stream) == CUBLAS_STATUS_SUCCESS
               ? KERN_OK
               : KERN_ERR_DEVICE;
}

int kern_cuda_matmul(struct kern_ctx *ctx, const struct kern_matmul_params *p)
{
    struct kern_cuda *cu = kern_cuda_of(ctx);
    if (!cu || !p || p->m < 0 || p->n < 0 || p->k < 0 || p->ldx < p->k || p->ldy < p->n)
        return KERN_ERR_INVALID;
    if (!kern_cuda_dtype_ok(p->w_dtype))
        return KERN_ERR_UNSUPPORTED;
    if (p->m == 0 || p->n == 0)
        return KERN_OK;
    if (!p->y || (p->k > 0 && (!p->x || !p->w)))
        return KERN_ERR_INVALID;
    float beta = p->accumulate ? 1.0f : 0.0f;
    if (p->k == 0) { /* an empty sum: y = 0, or y unchanged when accumulating */
        if (p->accumulate)
            return KERN_OK;
        return cudaMemset2DAsync(p->y, (size_t)p->ldy * sizeof(float), 0,
                                 (size_t)p->n * sizeof(float), (size_t)p->m,
                                 cu->stream) == cudaSuccess
                   ? KERN_OK
                   : KERN_ERR_DEVICE;
    }
    if (p->w_dtype == KERN_DTYPE_F32)
        return run_gemm(cu, p->w, CUDA_R_32F, p->x, p->ldx, p->y, p->m, p->n, p->k, p->ldy,
                        beta);

    /* Round x to the weight type; rows padded to 8 elements (16 bytes) for the tensor cores. */
    int64_t ldb = (p->k + 7) / 8 * 8;
    if (p->m > INT64_MAX / 2 / ldb)
        return KERN_ERR_INVALID;
    void *xs = kern_cuda_scratch(cu, (size_t)(p->m * ldb) * 2);
    if (!xs)
        return KERN_ERR_NOMEM;
    unsigned grid = kern_cuda_grid(p->m * p->k, 256, (int64_t)cu->n_sm * 16);
    KERN_CUDA_LAUNCH(convert_rows_kernel, grid, 256, 0, cu->stream)(p->x, xs, p->w_dtype, p->m,
                                                                    p->k, p->ldx, ldb);
    int rc = kern_cuda_launch_status();
    if (rc != KERN_OK)
        return rc;
    cudaDataType_t t = p->w_dtype == KERN_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    return run_gemm(cu, p->w, t, xs, ldb, p->y, p->m, p->n, p->k, p->ldy, beta);
}
