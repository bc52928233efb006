/* The op table's constructors (reference and fast CPU) and the dtype helpers of ops.h.
 * Not an op: kernels live in ref/ and cpu/, one per file; this only wires them in. */
#include "cpu/cpu.h"
#include "ref/ref.h"

size_t kern_dtype_size(enum kern_dtype dtype)
{
    switch (dtype) {
    case KERN_DTYPE_F32:
        return 4;
    case KERN_DTYPE_F16:
    case KERN_DTYPE_BF16:
        return 2;
    default:
        return 0;
    }
}

/* Elements and bytes of one block of a block format; 0 elements for the others. */
static int64_t block_bytes(enum kern_dtype dtype, int64_t *elems)
{
    switch (dtype) {
    case KERN_DTYPE_Q8_0:
        *elems = KERN_QBLOCK;
        return KERN_Q8_0_BLOCK_BYTES;
    case KERN_DTYPE_Q4_0:
        *elems = KERN_QBLOCK;
        return KERN_Q4_0_BLOCK_BYTES;
    case KERN_DTYPE_Q4_K:
        *elems = KERN_QKBLOCK;
        return KERN_Q4_K_BLOCK_BYTES;
    case KERN_DTYPE_Q5_K:
        *elems = KERN_QKBLOCK;
        return KERN_Q5_K_BLOCK_BYTES;
    case KERN_DTYPE_Q6_K:
        *elems = KERN_QKBLOCK;
        return KERN_Q6_K_BLOCK_BYTES;
    default:
        *elems = 0;
        return 0;
    }
}

int64_t kern_dtype_block_elems(enum kern_dtype dtype)
{
    int64_t elems;
    block_bytes(dtype, &elems);
    return elems;
}

int kern_dtype_kq_bits(enum kern_dtype dtype)
{
    return dtype == KERN_DTYPE_Q4_K ? 4 : dtype == KERN_DTYPE_Q5_K ? 5 : dtype == KERN_DTYPE_Q6_K ? 6 : 0;
}

int64_t kern_dtype_row_bytes(enum kern_dtype dtype, int64_t n)
{
    int64_t out, elems;
    if (n < 0)
        return -1;
    int64_t block = block_bytes(dtype, &elems);
    if (elems) {
        if (n % elems != 0 || __builtin_mul_overflow(n / elems, block, &out))
            return -1;
        return out;
    }
    size_t es = kern_dtype_size(dtype);
    if (es == 0 || __builtin_mul_overflow(n, (int64_t)es, &out))
        return -1;
    return out;
}

/* Each plain block format with an R16 form, beside it. */
static const enum kern_dtype r16_pairs[][2] = {
    {KERN_DTYPE_Q8_0, KERN_DTYPE_Q8_0_R16},
    {KERN_DTYPE_Q4_0, KERN_DTYPE_Q4_0_R16},
    {KERN_DTYPE_Q4_K, KERN_DTYPE_Q4_K_R16},
    {KERN_DTYPE_Q5_K, KERN_DTYPE_Q5_K_R16},
    {KERN_DTYPE_Q6_K, KERN_DTYPE_Q6_K_R16},
};

/* The other member of dtype's pair (side 0: dtype is the plain one), or KERN_DTYPE_COUNT. */
static enum kern_dtype r16_partner(enum kern_dtype dtype, int side)
{
    for (size_t i = 0; i < sizeof r16_pairs / sizeof r16_pairs[0]; i++)
        if (r16_pairs[i][side] == dtype)
            return r16_pairs[i][!side];
    return KERN_DTYPE_COUNT;
}

enum kern_dtype kern_dtype_r16_base(enum kern_dtype dtype)
{
    return r16_partner(dtype, 1);
}

enum kern_dtype kern_dtype_r16_of(enum kern_dtype dtype)
{
    return r16_partner(dtype, 0);
}

int kern_dtype_is_r16(enum kern_dtype dtype)
{
    return kern_dtype_r16_base(dtype) != KERN_DTYPE_COUNT;
}

int64_t kern_dtype_matrix_bytes(enum kern_dtype dtype, int64_t n_rows, int64_t k)
{
    int64_t out;
    if (n_rows < 0)
        return -1;
    if (kern_dtype_is_r16(dtype)) {
        if (n_rows > INT64_MAX - KERN_R16)
            return -1;
        n_rows = (n_rows + KERN_R16 - 1) / KERN_R16 * KERN_R16;
        if (dtype == KERN_DTYPE_Q4_K_R16 || dtype == KERN_DTYPE_Q5_K_R16) {
            /* their scales and mins unpacked: 148 and 180 bytes a super-block */
            int64_t sb = dtype == KERN_DTYPE_Q4_K_R16 ? KERN_Q4_K_R16_ROW_BYTES
                                                      : KERN_Q5_K_R16_ROW_BYTES;
            if (k < 0 || k % KERN_QKBLOCK != 0 ||
                __builtin_mul_overflow(k / KERN_QKBLOCK, sb, &out) ||
                __builtin_mul_overflow(out, n_rows, &out))
                return -1;
            return out;
        }
        dtype = kern_dtype_r16_base(dtype); /* the others: as many bytes as their base */
    }
    int64_t row = kern_dtype_row_bytes(dtype, k);
    if (row < 0 || __builtin_mul_overflow(row, n_rows, &out))
        return -1;
    return out;
}

size_t kern_moe_work_bytes(int64_t n_tokens, int64_t top_k, int64_t hidden, int64_t inter,
                           int64_t n_experts)
{
    int64_t slots, a, b, c;
    if (n_tokens < 0 || top_k < 0 || hidden < 0 || inter < 0 || n_experts < 0 ||
        n_experts > INT32_MAX || __builtin_mul_overflow(n_tokens, top_k, &slots) ||
        __builtin_mul_overflow(slots, hidden, &a) ||
        __builtin_mul_overflow(slots, inter, &b) || __builtin_mul_overflow(b, 2, &b) ||
        __builtin_mul_overflow(slots, 4, &c) || __builtin_add_overflow(c, 4 * n_experts + 64, &c))
        return 0;
    const int64_t floats[3] = {a, b, c}; /* the third region holds int32, also 4 bytes each */
    uint64_t total = 0;
    for (int i = 0; i < 3; i++) {
        if ((uint64_t)floats[i] > (uint64_t)(INT64_MAX / 8) / 4)
            return 0;
        total += ((uint64_t)floats[i] * 4 + 255) & ~(uint64_t)255;
    }
    return total > (uint64_t)(SIZE_MAX / 4) ? 0 : (size_t)total;
}

const char *kern_dtype_name(enum kern_dtype dtype)
{
    switch (dtype) {
    case KERN_DTYPE_F32:
        return "f32";
    case KERN_DTYPE_F16:
        return "f16";
    case KERN_DTYPE_BF16:
        return "bf16";
    case KERN_DTYPE_Q8_0:
        return "q8_0";
    case KERN_DTYPE_Q4_0:
        return "q4_0";
    case KERN_DTYPE_Q4_K:
        return "q4_k";
    case KERN_DTYPE_Q5_K:
        return "q5_k";
    case KERN_DTYPE_Q6_K:
        return "q6_k";
    case KERN_DTYPE_Q8_0_R16:
        return "q8_0_r16";
    case KERN_DTYPE_Q4_0_R16:
        return "q4_0_r16";
    case KERN_DTYPE_Q4_K_R16:
        return "q4_k_r16";
    case KERN_DTYPE_Q5_K_R16:
        return "q5_k_r16";
    case KERN_DTYPE_Q6_K_R16:
        return "q6_k_r16";
    }
    return "invalid";
}

void kern_ops_init_ref(struct kern_ops *ops)
{
    ops->name = "ref";
    ops->embed = kern_ref_embed;
    ops->rmsnorm = kern_ref_rmsnorm;
    ops->matmul = kern_ref_matmul;
    ops->rope = kern_ref_rope;
    ops->kv_write = kern_ref_kv_write;
    ops->attention = kern_ref_attention;
    ops->silu_mul = kern_ref_silu_mul;
    ops->add = kern_ref_add;
    ops->gather_rows = kern_ref_gather_rows;
    ops->argmax = kern_ref_argmax;
    ops->sample = kern_ref_sample;
    ops->layernorm = kern_ref_layernorm;
    ops->bias_add = kern_ref_bias_add;
    ops->moe_route = kern_ref_moe_route;
    ops->moe = kern_ref_moe;
    ops->act = kern_ref_act;
    ops->attention_dense = kern_ref_attention_dense;
    ops->host_memory = 1;
    ops->buf_alloc = kern_ref_buf_alloc;
    ops->buf_free = kern_ref_buf_free;
    ops->buf_upload = kern_ref_buf_upload;
    ops->buf_download = kern_ref_buf_download;
    ops->buf_copy = kern_ref_buf_copy;
    ops->buf_memset = kern_ref_buf_memset;
    ops->sync = kern_ref_sync;
    ops->weights_import = kern_ref_weights_import;
    ops->weights_release = kern_ref_weights_release;
    ops->graph_begin = NULL;
    ops->graph_end = NULL;
    ops->graph_launch = NULL;
    ops->graph_destroy = NULL;
}

enum kern_cpu_level kern_cpu_best_level(void)
{
    if (kern_cpu_isa_avx512vnni())
        return KERN_CPU_LEVEL_AVX512_VNNI;
    if (kern_cpu_isa_avx512())
        return KERN_CPU_LEVEL_AVX512;
    return kern_cpu_isa_avx2() ? KERN_CPU_LEVEL_AVX2 : KERN_CPU_LEVEL_GENERIC;
}

/* The ops with one entry per instruction-set level (cpu.h's KERN_CPU_DEFINE_LEVELS). */
#define CPU_LEVEL_OPS(ops, lv)                                                                \
    do {                                                                                      \
        (ops)->matmul = kern_cpu_matmul_##lv;                                                 \
        (ops)->attention = kern_cpu_attention_##lv;                                           \
        (ops)->rmsnorm = kern_cpu_rmsnorm_##lv;                                               \
        (ops)->rope = kern_cpu_rope_##lv;                                                     \
        (ops)->silu_mul = kern_cpu_silu_mul_##lv;                                             \
        (ops)->add = kern_cpu_add_##lv;                                                       \
        (ops)->embed = kern_cpu_embed_##lv;                                                   \
        (ops)->layernorm = kern_cpu_layernorm_##lv;                                           \
        (ops)->bias_add = kern_cpu_bias_add_##lv;                                             \
        (ops)->moe = kern_cpu_moe_##lv;                                                       \
        (ops)->attention_dense = kern_cpu_attention_dense_##lv;                               \
    } while (0)

int kern_cpu_ops_init_level(struct kern_ops *ops, enum kern_cpu_level level)
{
    if (level > kern_cpu_best_level() || level < KERN_CPU_LEVEL_GENERIC)
        return KERN_ERR_UNSUPPORTED;
    ops->name = "cpu";
    switch (level) {
    case KERN_CPU_LEVEL_AVX512_VNNI:
        CPU_LEVEL_OPS(ops, avx512vnni);
        break;
    case KERN_CPU_LEVEL_AVX512:
        CPU_LEVEL_OPS(ops, avx512);
        break;
    case KERN_CPU_LEVEL_AVX2:
        CPU_LEVEL_OPS(ops, avx2);
        break;
    case KERN_CPU_LEVEL_GENERIC:
    default:
        CPU_LEVEL_OPS(ops, generic);
        break;
    }
    ops->gather_rows = kern_cpu_gather_rows;
    ops->argmax = kern_cpu_argmax;
    ops->act = kern_cpu_act;
    return KERN_OK;
}

void kern_ops_init_cpu(struct kern_ops *ops)
{
    /* The instruction set is chosen here, once, from what the CPU reports (never from the
     * build machine: no -march=native): AVX-512 with 16-lane vectors, else AVX2 + FMA, else the
     * portable build of the same loops. kv_write stays on the reference (a converting copy),
     * and so does moe_route (a few dozen router logits a token). AVX-512 with VNNI differs
     * from plain AVX-512 only in the int8 dot of the R16 formats. */
    kern_cpu_ops_init_level(ops, kern_cpu_best_level());
}
