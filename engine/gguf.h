/* GGUF model files (llama.cpp's container, versions 2 and 3, little-endian): a strict reader
 * that validates the header, every key/value pair and every tensor record against the file's
 * size before anything is handed out, then gives typed access to metadata and tensor data.
 * It does not know which keys or tensors a model needs, nor any tokenizer: later steps map those. */
#ifndef PHISERVE_ENGINE_GGUF_H
#define PHISERVE_ENGINE_GGUF_H

#include <stddef.h>
#include <stdint.h>

#define ENG_GGUF_MAX_DIMS 4

/* Metadata value types, numbered as in the file. */
enum eng_gguf_type {
    ENG_GGUF_U8 = 0,
    ENG_GGUF_I8 = 1,
    ENG_GGUF_U16 = 2,
    ENG_GGUF_I16 = 3,
    ENG_GGUF_U32 = 4,
    ENG_GGUF_I32 = 5,
    ENG_GGUF_F32 = 6,
    ENG_GGUF_BOOL = 7,   /* one byte, 0 or 1 (anything else is refused at open) */
    ENG_GGUF_STRING = 8, /* u64 length + bytes, no NUL */
    ENG_GGUF_ARRAY = 9,  /* u32 element type + u64 count + elements; never of arrays */
    ENG_GGUF_U64 = 10,
    ENG_GGUF_I64 = 11,
    ENG_GGUF_F64 = 12,
};

/* A string inside the file. Points into the mapping (or the caller's buffer): valid while the
 * file object is open; not NUL-terminated. Keys are valid UTF-8 without NUL bytes; string
 * values are bounded by the file but otherwise raw bytes (the tokenizer judges its pieces). */
struct eng_gguf_str {
    const char *data;
    uint64_t len;
};

struct eng_gguf_kv {
    struct eng_gguf_str key;
    enum eng_gguf_type type;
    enum eng_gguf_type elem_type; /* arrays: the element type; otherwise equal to type */
    uint64_t count;               /* arrays: number of elements; 1 otherwise */
    /* Into the mapping, unaligned: the raw little-endian value, or an array's first element
     * (read with memcpy). For a string (or a string array) it is the u64 length field in front
     * of the bytes: use eng_gguf_get_str / eng_gguf_array_str rather than decoding it. */
    const uint8_t *value;
};

struct eng_gguf_tensor {
    const char *name;              /* NUL-terminated copy (1-63 bytes of UTF-8), owned by the file object */
    uint32_t ggml_type;            /* a known ggml type id (eng_gguf_type_name is not NULL) */
    int n_dims;                    /* 1..ENG_GGUF_MAX_DIMS */
    int64_t ne[ENG_GGUF_MAX_DIMS]; /* ne[0] innermost; unused dims are 1; all >= 1 */
    uint64_t offset;               /* from the data section start; a multiple of the alignment */
    uint64_t n_bytes;              /* (ne[0] / block) * block bytes * ne[1] * ne[2] * ne[3] */
    const void *data;              /* into the mapping: n_bytes bytes; valid while the file is open */
};

struct eng_gguf; /* opaque: one validated GGUF image */

/* Validates a whole GGUF image in memory (header, metadata, tensor records, data ranges) and
 * frees what it built. For the fuzz target and tests. Returns 0, or -1 with a message naming
 * the failed check in err (always NUL-terminated when errlen > 0). */
int eng_gguf_validate_buffer(const uint8_t *buf, size_t len, char *err, size_t errlen);

/* Validates the image buf[0..len) and returns a file object in *out (the caller closes it with
 * eng_gguf_close). The caller keeps buf alive and unchanged for the object's life: strings,
 * values and tensor data point into it. Returns 0, or -1 with *out NULL and a message in err.
 *
 * What is refused: bad magic; versions other than 2 and 3; n_kv or n_tensors more than the
 * rest of the file could hold, or above 1 << 20; strings longer than the bytes left; empty keys,
 * keys that are not UTF-8 or hold a NUL, duplicate keys; unknown value types, arrays of arrays,
 * array counts larger than the bytes left or above 1 << 26; bools other than 0 and 1;
 * general.alignment that is not a nonzero power-of-two u32; tensor names empty, of 64 bytes or
 * more, not UTF-8, with a NUL, or duplicated; n_dims outside 1..4; ne of 0 or above INT64_MAX;
 * element counts or byte sizes that overflow; unknown ggml types; ne[0] not a multiple of the
 * type's block; offsets not aligned; tensor data (padded to the alignment, as llama.cpp writes
 * and requires it) past the end of the file; overlapping tensors. A file with neither keys nor
 * tensors is valid; bytes after the last tensor's padding are ignored. */
int eng_gguf_open_buffer(const uint8_t *buf, size_t len, struct eng_gguf **out, char *err, size_t errlen);

/* Maps the regular file at path read-only (via eng_file_open_regular) and validates it like
 * eng_gguf_open_buffer; the object owns the mapping. Messages are prefixed with path.
 * Returns 0 and *out, or -1 with *out NULL and a message in err. */
int eng_gguf_open_file(const char *path, struct eng_gguf **out, char *err, size_t errlen);

/* Unmaps (when opened from a file) and frees everything; accepts NULL. */
void eng_gguf_close(struct eng_gguf *g);

/* The file's format version (2 or 3). */
uint32_t eng_gguf_version(const struct eng_gguf *g);

/* Metadata in file order. eng_gguf_kv_at returns NULL when i >= eng_gguf_n_kv(g). Returned
 * pointers are valid while g is open. */
size_t eng_gguf_n_kv(const struct eng_gguf *g);
const struct eng_gguf_kv *eng_gguf_kv_at(const struct eng_gguf *g, size_t i);

/* The pair whose key equals the NUL-terminated key exactly, or NULL (O(log n_kv)). */
const struct eng_gguf_kv *eng_gguf_find_kv(const struct eng_gguf *g, const char *key);

/* Tensors in file order; NULL when i is out of range. Valid while g is open. */
size_t eng_gguf_n_tensors(const struct eng_gguf *g);
const struct eng_gguf_tensor *eng_gguf_tensor_at(const struct eng_gguf *g, size_t i);

/* The tensor called name, or NULL (O(log n_tensors)). */
const struct eng_gguf_tensor *eng_gguf_find_tensor(const struct eng_gguf *g, const char *name);

/* Typed getters. Each returns 0 and the value in *out, or -1 with a message naming the key in
 * err when the key is absent, of another type, or its value does not fit.
 * - get_u32 accepts any integer type (u8..u64, i8..i64) whose value lies in 0..UINT32_MAX.
 * - get_f32 accepts f32, or an f64 converted (finite values beyond the float range are
 *   refused; NaN and infinities pass through).
 * - get_bool gives 0 or 1 from a bool.
 * - get_str gives the string's bytes (into the mapping, not NUL-terminated). */
int eng_gguf_get_u32(const struct eng_gguf *g, const char *key, uint32_t *out, char *err, size_t errlen);
int eng_gguf_get_f32(const struct eng_gguf *g, const char *key, float *out, char *err, size_t errlen);
int eng_gguf_get_bool(const struct eng_gguf *g, const char *key, int *out, char *err, size_t errlen);
int eng_gguf_get_str(const struct eng_gguf *g, const char *key, struct eng_gguf_str *out, char *err,
                     size_t errlen);

/* Element i of an array. Returns 0 and *out, or -1 when kv is NULL, not an array, its element
 * type is not the one asked for, or i >= kv->count. eng_gguf_array_str is O(1): the offsets of
 * every string array's elements are indexed at open; kv must come from g. */
int eng_gguf_array_str(const struct eng_gguf *g, const struct eng_gguf_kv *kv, uint64_t i,
                       struct eng_gguf_str *out);
int eng_gguf_array_f32(const struct eng_gguf_kv *kv, uint64_t i, float *out);
int eng_gguf_array_i32(const struct eng_gguf_kv *kv, uint64_t i, int32_t *out);

/* The name of a ggml type id ("Q4_K"), or NULL for an id this reader does not know. */
const char *eng_gguf_type_name(uint32_t ggml_type);

#endif
