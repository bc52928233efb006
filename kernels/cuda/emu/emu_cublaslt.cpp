/* The CUDA emulator's cuBLASLt: handles, descriptors and a host GEMM with cuBLAS's meaning
 * (see include/cublasLt.h). It checks what a real call would reject (dimension mismatches,
 * leading dimensions, unsupported types, operands outside device memory, an algorithm from
 * another shape) and computes in fp32 with the inputs' exact values. Not fast. */
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "../../dtype.h"
#include "include/cublasLt.h"

struct kern_emu_lt {
    int unused;
};

typedef cublasLtMatmulDescOpaque_t kern_emu_lt_desc;
typedef cublasLtMatrixLayoutOpaque_t kern_emu_lt_layout;

/* The tags of initialised descriptors. */
#define DESC_TAG 0x656d752d64657363ull   /* "emu-desc" */
#define LAYOUT_TAG 0x656d752d6c61796full /* "emu-layo" */

struct kern_emu_lt_pref {
    size_t max_workspace;
};

namespace {

size_t type_size(cudaDataType_t t)
{
    return t == CUDA_R_32F ? 4 : 2;
}

bool type_ok(cudaDataType_t t)
{
    return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF;
}

float load(const void *base, cudaDataType_t t, size_t i)
{
    if (t == CUDA_R_32F)
        return static_cast<const float *>(base)[i];
    uint16_t h = static_cast<const uint16_t *>(base)[i];
    return t == CUDA_R_16BF ? kern_bf16_to_f32(h) : kern_f16_to_f32(h);
}

void store(void *base, cudaDataType_t t, size_t i, float v)
{
    if (t == CUDA_R_32F)
        static_cast<float *>(base)[i] = v;
    else if (t == CUDA_R_16BF)
        static_cast<uint16_t *>(base)[i] = kern_f32_to_bf16(v);
    else
        static_cast<uint16_t *>(base)[i] = kern_f32_to_f16(v);
}

/* Bytes a column-major layout spans. */
size_t span_bytes(const kern_emu_lt_layout *l)
{
    if (l->rows == 0 || l->cols == 0)
        return 0;
    return ((size_t)l->ld * (l->cols - 1) + l->rows) * type_size(l->type);
}

/* The GEMM's shape from the layouts and operations: op(A) is m x k, op(B) k x n, C and D
 * m x n. Returns false when they do not agree. */
bool shape(const kern_emu_lt_desc *desc, const kern_emu_lt_layout *a,
           const kern_emu_lt_layout *b, const kern_emu_lt_layout *c,
           const kern_emu_lt_layout *d, uint64_t *m, uint64_t *n, uint64_t *k)
{
    if (desc->tag != DESC_TAG || a->tag != LAYOUT_TAG || b->tag != LAYOUT_TAG ||
        c->tag != LAYOUT_TAG || d->tag != LAYOUT_TAG)
        return false; /* storage no Init call filled */
    uint64_t am = desc->ta == CUBLAS_OP_N ? a->rows : a->cols;
    uint64_t ak = desc->ta == CUBLAS_OP_N ? a->cols : a->rows;
    uint64_t bk = desc->tb == CUBLAS_OP_N ? b->rows : b->cols;
    uint64_t bn = desc->tb == CUBLAS_OP_N ? b->cols : b->rows;
    if (ak != bk || c->rows != am || c->cols != bn || d->rows != am || d->cols != bn)
        return false;
    for (const kern_emu_lt_layout *l : {a, b, c, d})
        if (!type_ok(l->type) || l->ld < (int64_t)l->rows || l->ld < 1)
            return false;
    if (a->type != b->type)
        return false;
    *m = am;
    *n = bn;
    *k = ak;
    return true;
}

/* What an algorithm from the heuristic records: the shape it was chosen for. */
void algo_encode(cublasLtMatmulAlgo_t *algo, uint64_t m, uint64_t n, uint64_t k)
{
    memset(algo, 0, sizeof *algo);
    algo->data[0] = 0x656d752d6c74ull; /* a tag: "emu-lt" */
    algo->data[1] = m;
    algo->data[2] = n;
    algo->data[3] = k;
}

/* Rows first..first+count-1 of op(A), or columns of op(B), as fp32 panels of k values each;
 * k_along_ld: the k index steps by the leading dimension (op(A) = A, or op(B) = B^T). */
void panel(const void *base, const kern_emu_lt_layout &l, bool k_along_ld, uint64_t first,
           uint64_t count, uint64_t k, float *out)
{
    for (uint64_t r = 0; r < count; r++)
        for (uint64_t p = 0; p < k; p++) {
            uint64_t x = first + r;
            out[r * k + p] = load(base, l.type, k_along_ld ? x + p * (size_t)l.ld
                                                           : p + x * (size_t)l.ld);
        }
}

/* The sums of the panels' rows: each in ascending p, as the plain triple loop. Only local
 * panels are read here (the operands' ranges were checked at the call), so AddressSanitizer's
 * checks per element, which made this loop most of an ASan run, are left out. */
__attribute__((no_sanitize("address"))) void dots(const float *ap, const float *bp,
                                                  uint64_t rows, uint64_t cols, uint64_t k,
                                                  float *out)
{
    for (uint64_t j = 0; j < cols; j++)
        for (uint64_t i = 0; i < rows; i++) {
            float acc = 0.0f;
            const float *x = ap + i * k, *y = bp + j * k;
            for (uint64_t p = 0; p < k; p++)
                acc += x[p] * y[p];
            out[j * rows + i] = acc;
        }
}

/* D = alpha op(A) op(B) + beta C in fp32, tile by tile: each tile's rows of op(A) and columns
 * of op(B) are widened to fp32 once. */
void gemm(const kern_emu_lt_desc &ds, const kern_emu_lt_layout &la, const kern_emu_lt_layout &lb,
          const kern_emu_lt_layout &lc, const kern_emu_lt_layout &ld, uint64_t m, uint64_t n,
          uint64_t k, float al, float be, const void *a, const void *b, const void *c, void *d)
{
    const uint64_t tile = 64;
    std::vector<float> ap(tile * k), bp(tile * k), acc(tile * tile);
    for (uint64_t j0 = 0; j0 < n; j0 += tile) {
        uint64_t cols = std::min(tile, n - j0);
        panel(b, lb, ds.tb != CUBLAS_OP_N, j0, cols, k, bp.data());
        for (uint64_t i0 = 0; i0 < m; i0 += tile) {
            uint64_t rows = std::min(tile, m - i0);
            panel(a, la, ds.ta == CUBLAS_OP_N, i0, rows, k, ap.data());
            dots(ap.data(), bp.data(), rows, cols, k, acc.data());
            for (uint64_t j = 0; j < cols; j++)
                for (uint64_t i = 0; i < rows; i++) {
                    float v = al * acc[j * rows + i];
                    size_t ci = (i0 + i) + (j0 + j) * (size_t)lc.ld;
                    if (be != 0.0f)
                        v += be * load(c, lc.type, ci);
                    store(d, ld.type, (i0 + i) + (j0 + j) * (size_t)ld.ld, v);
                }
        }
    }
}

} /* namespace */

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle)
{
    *handle = new kern_emu_lt();
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle)
{
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescInit(cublasLtMatmulDesc_t desc, cublasComputeType_t compute,
                                      cudaDataType_t scale)
{
    if (!desc)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    *desc = kern_emu_lt_desc{DESC_TAG, CUBLAS_OP_N, CUBLAS_OP_N};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size)
{
    if (!desc || desc->tag != DESC_TAG || !buf || size != sizeof(cublasOperation_t))
        return CUBLAS_STATUS_INVALID_VALUE;
    cublasOperation_t op;
    memcpy(&op, buf, sizeof op);
    if (op != CUBLAS_OP_N && op != CUBLAS_OP_T)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (attr == CUBLASLT_MATMUL_DESC_TRANSA)
        desc->ta = op;
    else if (attr == CUBLASLT_MATMUL_DESC_TRANSB)
        desc->tb = op;
    else
        return CUBLAS_STATUS_NOT_SUPPORTED;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutInit(cublasLtMatrixLayout_t layout, cudaDataType_t type,
                                        uint64_t rows, uint64_t cols, int64_t ld)
{
    if (!layout)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!type_ok(type))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    *layout = kern_emu_lt_layout{LAYOUT_TAG, type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref)
{
    *pref = new kern_emu_lt_pref{0};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref)
{
    delete pref;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size)
{
    if (!pref || !buf)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
        if (size != sizeof(uint64_t))
            return CUBLAS_STATUS_INVALID_VALUE;
        uint64_t v;
        memcpy(&v, buf, sizeof v);
        pref->max_workspace = (size_t)v;
        return CUBLAS_STATUS_SUCCESS;
    }
    if (attr >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES &&
        attr <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES)
        return size == sizeof(uint32_t) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_NOT_SUPPORTED;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t *results,
                                              int *returned)
{
    uint64_t m, n, k;
    if (!handle || !desc || !pref || requested < 1 || !results || !returned)
        return CUBLAS_STATUS_INVALID_VALUE;
    *returned = 0;
    if (!shape(desc, a, b, c, d, &m, &n, &k))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    memset(&results[0], 0, sizeof results[0]);
    algo_encode(&results[0].algo, m, n, k);
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                              const void *alpha, const void *a, cublasLtMatrixLayout_t adesc,
                              const void *b, cublasLtMatrixLayout_t bdesc, const void *beta,
                              const void *c, cublasLtMatrixLayout_t cdesc, void *d,
                              cublasLtMatrixLayout_t ddesc, const cublasLtMatmulAlgo_t *algo,
                              void *workspace, size_t workspace_bytes, cudaStream_t stream)
{
    uint64_t m, n, k;
    if (!handle || !desc || !alpha || !beta || !adesc || !bdesc || !cdesc || !ddesc)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!shape(desc, adesc, bdesc, cdesc, ddesc, &m, &n, &k))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (algo) {
        cublasLtMatmulAlgo_t want;
        algo_encode(&want, m, n, k);
        if (memcmp(&want, algo, sizeof want) != 0) {
            fprintf(stderr, "cuda-emu: cublasLtMatmul with an algorithm chosen for another "
                            "shape\n");
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    }
    if (workspace_bytes > 0 && !kern_emu_is_device_range(workspace, workspace_bytes))
        return CUBLAS_STATUS_INVALID_VALUE;
    float al, be;
    memcpy(&al, alpha, sizeof al); /* host pointer mode */
    memcpy(&be, beta, sizeof be);
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    /* Every operand must be device memory, C only when it is read. */
    if ((k > 0 && (!kern_emu_is_device_range(a, span_bytes(adesc)) ||
                   !kern_emu_is_device_range(b, span_bytes(bdesc)))) ||
        (be != 0.0f && !kern_emu_is_device_range(c, span_bytes(cdesc))) ||
        !kern_emu_is_device_range(d, span_bytes(ddesc))) {
        fprintf(stderr, "cuda-emu: cublasLtMatmul operand outside device memory\n");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    kern_emu_lt_desc ds = *desc;
    kern_emu_lt_layout la = *adesc, lb = *bdesc, lc = *cdesc, ld = *ddesc;
    kern_emu_submit_host(stream, "cublasLtMatmul", [=]() {
        gemm(ds, la, lb, lc, ld, m, n, k, al, be, a, b, c, d);
    });
    return CUBLAS_STATUS_SUCCESS;
}
