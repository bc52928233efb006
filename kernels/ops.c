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
    }
    return 0;
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
}

void kern_ops_init_cpu(struct kern_ops *ops)
{
    /* The instruction set is chosen here, once: AVX2 + FMA when the CPU has both, else the
     * portable build of the same loops. The remaining ops are memory-bound and cheap next to
     * matmul and attention in a forward pass, so they stay on the reference. */
    int avx2 = kern_cpu_isa_avx2() != NULL;
    ops->name = "cpu";
    ops->matmul = avx2 ? kern_cpu_matmul_avx2 : kern_cpu_matmul_generic;
    ops->attention = avx2 ? kern_cpu_attention_avx2 : kern_cpu_attention_generic;
}
