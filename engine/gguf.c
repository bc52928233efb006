/* GGUF reader (gguf.h): walks a hostile image once, checking every count against the bytes
 * left before allocating, every size with overflow-checked arithmetic and every tensor range
 * against the file, then indexes keys, string arrays and tensor names for lookups.
 * It does not interpret metadata or tensor contents and never writes GGUF. */
#include "gguf.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "file_util.h"
#include "json.h"

#define GGUF_HEADER_BYTES 24u           /* magic, u32 version, u64 n_tensors, u64 n_kv */
#define GGUF_MAX_KV (1ull << 20)        /* caps on declared counts: a small hostile file must */
#define GGUF_MAX_TENSORS (1ull << 20)   /* not make us allocate gigabytes of bookkeeping */
#define GGUF_MAX_ARRAY (1ull << 26)
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_NAME 64u               /* ggml's GGML_MAX_NAME, NUL included */
#define GGUF_KEY_SHOWN 96               /* keys are cut to this in messages */
/* The fewest bytes a key/value pair (8-byte length, a 1-byte key, type, a 1-byte value) and a
 * tensor record (8-byte length, a 1-byte name, n_dims, one ne, type, offset) can take. */
#define GGUF_MIN_KV_BYTES 14u
#define GGUF_MIN_TENSOR_BYTES 33u

struct eng_gguf {
    const uint8_t *buf;              /* the image: the caller's buffer or map */
    size_t len;
    void *map;                       /* our read-only mapping (open_file), else NULL */
    size_t map_len;
    uint32_t version;
    uint32_t alignment;
    struct eng_gguf_kv *kvs;         /* [n_kv] in file order */
    size_t n_kv;
    const struct eng_gguf_kv **kv_sorted; /* [n_kv] sorted by key */
    size_t **str_index;              /* [n_kv]: for a string array, [count] offsets into buf of
                                      * each element's length field; NULL for other kinds */
    struct eng_gguf_tensor *tensors; /* [n_tensors] in file order; names owned */
    size_t n_tensors;
    const struct eng_gguf_tensor **tensor_sorted; /* [n_tensors] sorted by name */
};

/* ---- ggml types ---- */

struct ggml_type_info {
    const char *name;
    uint32_t block;                  /* elements per block */
    uint32_t bytes;                  /* bytes per block */
};

/* Indexed by ggml type id; ids without a name are unknown (removed or not supported here). */
static const struct ggml_type_info GGML_TYPES[] = {
    [0] = {"F32", 1, 4},       [1] = {"F16", 1, 2},       [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},    [6] = {"Q5_0", 32, 22},    [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},    [9] = {"Q8_1", 32, 36},    [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110}, [12] = {"Q4_K", 256, 144}, [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210}, [15] = {"Q8_K", 256, 292}, [24] = {"I8", 1, 1},
    [25] = {"I16", 1, 2},      [26] = {"I32", 1, 4},      [27] = {"I64", 1, 8},
    [28] = {"F64", 1, 8},      [30] = {"BF16", 1, 2},
};

static const struct ggml_type_info *ggml_type_lookup(uint32_t id)
{
    if (id >= sizeof(GGML_TYPES) / sizeof(GGML_TYPES[0]) || GGML_TYPES[id].name == NULL)
        return NULL;
    return &GGML_TYPES[id];
}

const char *eng_gguf_type_name(uint32_t ggml_type)
{
    const struct ggml_type_info *t = ggml_type_lookup(ggml_type);
    return t != NULL ? t->name : NULL;
}

/* ---- metadata value types ---- */

static const char *const VALUE_TYPE_NAMES[] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

static bool value_type_known(uint32_t t)
{
    return t <= ENG_GGUF_F64;
}

static const char *value_type_name(uint32_t t)
{
    return value_type_known(t) ? VALUE_TYPE_NAMES[t] : "unknown";
}

/* Bytes of one fixed-size value; a string counts its 8-byte length (its fewest bytes). */
static size_t value_min_bytes(enum eng_gguf_type t)
{
    switch (t) {
    case ENG_GGUF_U8: case ENG_GGUF_I8: case ENG_GGUF_BOOL:
        return 1;
    case ENG_GGUF_U16: case ENG_GGUF_I16:
        return 2;
    case ENG_GGUF_U32: case ENG_GGUF_I32: case ENG_GGUF_F32:
        return 4;
    case ENG_GGUF_U64: case ENG_GGUF_I64: case ENG_GGUF_F64: case ENG_GGUF_STRING:
        return 8;
    case ENG_GGUF_ARRAY:
        break;
    }
    return 0;
}

/* ---- reading ---- */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* A cursor over the image with the context of messages: what is being read. */
struct rd {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    char *err;
    size_t errlen;
};

static size_t left(const struct rd *r)
{
    return r->len - r->pos;
}

/* Reads n fixed bytes (4 or 8) as what; fails with "truncated" when the file ends first. */
static int rd_fixed(struct rd *r, size_t n, const char *what, uint64_t *out)
{
    if (left(r) < n) {
        eng_set_err(r->err, r->errlen, "truncated: %s at byte %zu needs %zu bytes, %zu left", what,
                    r->pos, n, left(r));
        return -1;
    }
    *out = n == 4 ? le32(r->buf + r->pos) : le64(r->buf + r->pos);
    r->pos += n;
    return 0;
}

static int rd_u32(struct rd *r, const char *what, uint32_t *out)
{
    uint64_t v;
    if (rd_fixed(r, 4, what, &v) != 0)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int rd_u64(struct rd *r, const char *what, uint64_t *out)
{
    return rd_fixed(r, 8, what, out);
}

/* Reads a gguf string (u64 length + bytes), checking the length against the bytes left. */
static int rd_str(struct rd *r, const char *what, struct eng_gguf_str *out)
{
    uint64_t n;
    size_t at = r->pos;
    if (rd_u64(r, what, &n) != 0)
        return -1;
    if (n > left(r)) {
        eng_set_err(r->err, r->errlen, "%s at byte %zu: string length %llu exceeds the %zu bytes left in the file",
                    what, at, (unsigned long long)n, left(r));
        return -1;
    }
    out->data = (const char *)(r->buf + r->pos);
    out->len = n;
    r->pos += (size_t)n;
    return 0;
}

/* 0 when s is valid UTF-8 without NUL bytes; 1 when it holds a NUL; 2 when it is not UTF-8. */
static int text_check(const struct eng_gguf_str *s)
{
    const unsigned char *p = (const unsigned char *)s->data;
    size_t n = (size_t)s->len;
    for (size_t i = 0; i < n;) {
        if (p[i] == 0)
            return 1;
        size_t k = eng_utf8_seq_len(p + i, n - i);
        if (k == 0)
            return 2;
        i += k;
    }
    return 0;
}

/* Bytes of a (valid UTF-8) key to show in messages: hostile keys can be megabytes long. */
static int shown(const struct eng_gguf_str *s)
{
    size_t n = (size_t)s->len;
    if (n <= GGUF_KEY_SHOWN)
        return (int)n;
    n = GGUF_KEY_SHOWN;
    while (n > 0 && ((unsigned char)s->data[n] & 0xC0) == 0x80)
        n--; /* do not cut a UTF-8 sequence: messages end up in JSON logs */
    return (int)n;
}

/* ---- key/value pairs ---- */

/* Checks and skips count values of type t (not an array) at the cursor; for strings, records
 * each element's offset in index (when not NULL). kv_no and key name the pair in messages. */
static int skip_values(struct rd *r, enum eng_gguf_type t, uint64_t count, size_t *index, size_t kv_no,
                       const struct eng_gguf_str *key)
{
    if (t == ENG_GGUF_STRING) {
        for (uint64_t i = 0; i < count; i++) {
            if (index != NULL)
                index[i] = r->pos;
            struct eng_gguf_str s;
            if (rd_str(r, "string value", &s) != 0) {
                char inner[160], elem[48] = "";
                snprintf(inner, sizeof(inner), "%s", r->err != NULL ? r->err : "");
                if (index != NULL) /* an array's element, not a single string */
                    snprintf(elem, sizeof(elem), ", element %llu", (unsigned long long)i);
                eng_set_err(r->err, r->errlen, "kv %zu ('%.*s')%s: %s", kv_no, shown(key), key->data, elem, inner);
                return -1;
            }
        }
        return 0;
    }
    size_t m = value_min_bytes(t);
    /* The caller bounded count by the bytes left, so this product cannot overflow. */
    if (count > left(r) / m) {
        eng_set_err(r->err, r->errlen,
                    "kv %zu ('%.*s'): truncated: %llu %s value(s) at byte %zu need %llu bytes, %zu left",
                    kv_no, shown(key), key->data, (unsigned long long)count, value_type_name(t), r->pos,
                    (unsigned long long)(count * m), left(r));
        return -1;
    }
    if (t == ENG_GGUF_BOOL) {
        for (uint64_t i = 0; i < count; i++) {
            uint8_t b = r->buf[r->pos + (size_t)i];
            if (b > 1) {
                eng_set_err(r->err, r->errlen, "kv %zu ('%.*s'): bool value %u at byte %zu is not 0 or 1",
                            kv_no, shown(key), key->data, b, r->pos + (size_t)i);
                return -1;
            }
        }
    }
    r->pos += (size_t)(count * m);
    return 0;
}

static int cmp_key(const struct eng_gguf_str *a, const struct eng_gguf_str *b)
{
    size_t n = (size_t)(a->len < b->len ? a->len : b->len);
    int c = n > 0 ? memcmp(a->data, b->data, n) : 0;
    if (c != 0)
        return c;
    return a->len < b->len ? -1 : a->len > b->len ? 1 : 0;
}

static int cmp_kv_ptr(const void *a, const void *b)
{
    const struct eng_gguf_kv *x = *(const struct eng_gguf_kv *const *)a;
    const struct eng_gguf_kv *y = *(const struct eng_gguf_kv *const *)b;
    return cmp_key(&x->key, &y->key);
}

static int parse_kv(struct eng_gguf *g, struct rd *r, size_t i)
{
    struct eng_gguf_kv *kv = &g->kvs[i];
    char what[48];
    snprintf(what, sizeof(what), "kv %zu key", i);
    if (rd_str(r, what, &kv->key) != 0)
        return -1;
    if (kv->key.len == 0) {
        eng_set_err(r->err, r->errlen, "kv %zu: empty key", i);
        return -1;
    }
    int tc = text_check(&kv->key);
    if (tc != 0) {
        eng_set_err(r->err, r->errlen, "kv %zu: key %s", i, tc == 1 ? "contains a NUL byte" : "is not valid UTF-8");
        return -1;
    }
    const struct eng_gguf_str *key = &kv->key;
    uint32_t type;
    snprintf(what, sizeof(what), "kv %zu value type", i);
    if (rd_u32(r, what, &type) != 0)
        return -1;
    if (!value_type_known(type)) {
        eng_set_err(r->err, r->errlen, "kv %zu ('%.*s'): unknown value type %u", i, shown(key), key->data, type);
        return -1;
    }
    kv->type = (enum eng_gguf_type)type;
    kv->elem_type = kv->type;
    kv->count = 1;
    if (kv->type != ENG_GGUF_ARRAY) {
        kv->value = r->buf + r->pos;
        return skip_values(r, kv->type, 1, NULL, i, key);
    }

    uint32_t et;
    uint64_t count;
    snprintf(what, sizeof(what), "kv %zu array element type", i);
    if (rd_u32(r, what, &et) != 0)
        return -1;
    if (et == ENG_GGUF_ARRAY) {
        eng_set_err(r->err, r->errlen, "kv %zu ('%.*s'): arrays of arrays are not supported", i, shown(key), key->data);
        return -1;
    }
    if (!value_type_known(et)) {
        eng_set_err(r->err, r->errlen, "kv %zu ('%.*s'): unknown array element type %u", i, shown(key), key->data, et);
        return -1;
    }
    snprintf(what, sizeof(what), "kv %zu array count", i);
    if (rd_u64(r, what, &count) != 0)
        return -1;
    size_t m = value_min_bytes((enum eng_gguf_type)et);
    if (count > left(r) / m) {
        eng_set_err(r->err, r->errlen,
                    "kv %zu ('%.*s'): array count %llu is larger than the %zu bytes left in the file could hold",
                    i, shown(key), key->data, (unsigned long long)count, left(r));
        return -1;
    }
    if (count > GGUF_MAX_ARRAY) {
        eng_set_err(r->err, r->errlen, "kv %zu ('%.*s'): too many array elements: %llu (the limit is %llu)", i,
                    shown(key), key->data, (unsigned long long)count, (unsigned long long)GGUF_MAX_ARRAY);
        return -1;
    }
    kv->elem_type = (enum eng_gguf_type)et;
    kv->count = count;
    kv->value = r->buf + r->pos;
    size_t *index = NULL;
    if (kv->elem_type == ENG_GGUF_STRING && count > 0) {
        /* Bounded: count <= bytes left / 8, so the index is no larger than the file. */
        index = malloc((size_t)count * sizeof(*index));
        if (index == NULL) {
            eng_set_err(r->err, r->errlen, "kv %zu ('%.*s'): out of memory", i, shown(key), key->data);
            return -1;
        }
        g->str_index[i] = index;
    }
    return skip_values(r, kv->elem_type, count, index, i, key);
}

/* Reads general.alignment (default 32): only a nonzero power-of-two u32, like llama.cpp. */
static int read_alignment(struct eng_gguf *g, char *err, size_t errlen)
{
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const struct eng_gguf_kv *kv = eng_gguf_find_kv(g, "general.alignment");
    if (kv == NULL)
        return 0;
    if (kv->type != ENG_GGUF_U32) {
        eng_set_err(err, errlen, "general.alignment has type %s%s%s, not u32", value_type_name(kv->type),
                    kv->type == ENG_GGUF_ARRAY ? " of " : "",
                    kv->type == ENG_GGUF_ARRAY ? value_type_name(kv->elem_type) : "");
        return -1;
    }
    uint32_t a = le32(kv->value);
    if (a == 0 || (a & (a - 1)) != 0) {
        eng_set_err(err, errlen, "general.alignment %u is not a nonzero power of two", a);
        return -1;
    }
    g->alignment = a;
    return 0;
}

/* ---- tensor records ---- */

static int cmp_tensor_name_ptr(const void *a, const void *b)
{
    const struct eng_gguf_tensor *x = *(const struct eng_gguf_tensor *const *)a;
    const struct eng_gguf_tensor *y = *(const struct eng_gguf_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_tensor_offset_ptr(const void *a, const void *b)
{
    const struct eng_gguf_tensor *x = *(const struct eng_gguf_tensor *const *)a;
    const struct eng_gguf_tensor *y = *(const struct eng_gguf_tensor *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int parse_tensor(struct eng_gguf *g, struct rd *r, size_t i)
{
    struct eng_gguf_tensor *t = &g->tensors[i];
    struct eng_gguf_str name;
    char what[64];
    snprintf(what, sizeof(what), "tensor %zu name", i);
    if (rd_str(r, what, &name) != 0)
        return -1;
    if (name.len == 0) {
        eng_set_err(r->err, r->errlen, "tensor %zu: empty name", i);
        return -1;
    }
    if (name.len >= GGUF_MAX_NAME) {
        eng_set_err(r->err, r->errlen, "tensor %zu: name of %llu bytes is too long (at most %u)", i,
                    (unsigned long long)name.len, GGUF_MAX_NAME - 1);
        return -1;
    }
    int tc = text_check(&name);
    if (tc != 0) {
        eng_set_err(r->err, r->errlen, "tensor %zu: name %s", i,
                    tc == 1 ? "contains a NUL byte" : "is not valid UTF-8");
        return -1;
    }
    char *copy = malloc((size_t)name.len + 1);
    if (copy == NULL) {
        eng_set_err(r->err, r->errlen, "tensor %zu: out of memory", i);
        return -1;
    }
    memcpy(copy, name.data, (size_t)name.len);
    copy[name.len] = '\0';
    t->name = copy; /* owned by g from here: eng_gguf_close frees it */
    const char *nm = copy;

    uint32_t n_dims;
    snprintf(what, sizeof(what), "tensor '%s' n_dims", nm);
    if (rd_u32(r, what, &n_dims) != 0)
        return -1;
    if (n_dims == 0 || n_dims > ENG_GGUF_MAX_DIMS) {
        eng_set_err(r->err, r->errlen, "tensor '%s': n_dims %u is not in 1..%d", nm, n_dims, ENG_GGUF_MAX_DIMS);
        return -1;
    }
    t->n_dims = (int)n_dims;
    int64_t n_elements = 1;
    for (int d = 0; d < ENG_GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims)
            continue;
        uint64_t ne;
        snprintf(what, sizeof(what), "tensor '%s' ne[%d]", nm, d);
        if (rd_u64(r, what, &ne) != 0)
            return -1;
        if (ne == 0) {
            eng_set_err(r->err, r->errlen, "tensor '%s': ne[%d] is 0 (zero dimensions are refused)", nm, d);
            return -1;
        }
        if (ne > (uint64_t)INT64_MAX) {
            eng_set_err(r->err, r->errlen, "tensor '%s': ne[%d] = %llu exceeds INT64_MAX", nm, d,
                        (unsigned long long)ne);
            return -1;
        }
        t->ne[d] = (int64_t)ne;
        if (__builtin_mul_overflow(n_elements, t->ne[d], &n_elements)) {
            eng_set_err(r->err, r->errlen, "tensor '%s': element count overflows 64 bits", nm);
            return -1;
        }
    }

    snprintf(what, sizeof(what), "tensor '%s' type", nm);
    if (rd_u32(r, what, &t->ggml_type) != 0)
        return -1;
    const struct ggml_type_info *ti = ggml_type_lookup(t->ggml_type);
    if (ti == NULL) {
        eng_set_err(r->err, r->errlen, "tensor '%s': unknown ggml type %u", nm, t->ggml_type);
        return -1;
    }
    if (t->ne[0] % ti->block != 0) {
        eng_set_err(r->err, r->errlen, "tensor '%s': ne[0] = %lld is not a multiple of the %s block size %u", nm,
                    (long long)t->ne[0], ti->name, ti->block);
        return -1;
    }
    int64_t n_bytes = t->ne[0] / ti->block;
    bool overflow = __builtin_mul_overflow(n_bytes, (int64_t)ti->bytes, &n_bytes);
    for (int d = 1; d < ENG_GGUF_MAX_DIMS && !overflow; d++)
        overflow = __builtin_mul_overflow(n_bytes, t->ne[d], &n_bytes);
    if (overflow) {
        eng_set_err(r->err, r->errlen, "tensor '%s': byte size of %s data overflows 64 bits", nm, ti->name);
        return -1;
    }
    t->n_bytes = (uint64_t)n_bytes;

    snprintf(what, sizeof(what), "tensor '%s' offset", nm);
    if (rd_u64(r, what, &t->offset) != 0)
        return -1;
    if (t->offset % g->alignment != 0) {
        eng_set_err(r->err, r->errlen, "tensor '%s': offset %llu is not a multiple of the alignment %u", nm,
                    (unsigned long long)t->offset, g->alignment);
        return -1;
    }
    return 0;
}

/* Places every tensor in the data section and checks that the data (padded to the alignment,
 * which writers always add and llama.cpp reads) lies inside the file without overlaps. */
static int place_tensors(struct eng_gguf *g, size_t info_end, char *err, size_t errlen)
{
    uint64_t a = g->alignment;
    uint64_t data_start;
    if (__builtin_add_overflow((uint64_t)info_end, a - 1, &data_start)) {
        eng_set_err(err, errlen, "data section start overflows 64 bits");
        return -1;
    }
    data_start -= data_start % a;
    /* A file without tensors may end before the padding (writers stop after the metadata). */
    uint64_t data_len = data_start < g->len ? g->len - data_start : 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        struct eng_gguf_tensor *t = &g->tensors[i];
        uint64_t end, padded;
        if (__builtin_add_overflow(t->offset, t->n_bytes, &end) ||
            __builtin_add_overflow(end, a - 1, &padded)) {
            eng_set_err(err, errlen, "tensor '%s': offset %llu + size %llu overflows 64 bits", t->name,
                        (unsigned long long)t->offset, (unsigned long long)t->n_bytes);
            return -1;
        }
        padded -= padded % a;
        if (padded > data_len) {
            eng_set_err(err, errlen,
                        "tensor '%s': data [%llu, %llu) padded to %llu runs past the end of the file: the data "
                        "section at byte %llu holds %llu bytes",
                        t->name, (unsigned long long)t->offset, (unsigned long long)end,
                        (unsigned long long)padded, (unsigned long long)data_start, (unsigned long long)data_len);
            return -1;
        }
        t->data = g->buf + data_start + t->offset;
    }
    if (g->n_tensors < 2)
        return 0;
    const struct eng_gguf_tensor **by_off = malloc(g->n_tensors * sizeof(*by_off));
    if (by_off == NULL) {
        eng_set_err(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < g->n_tensors; i++)
        by_off[i] = &g->tensors[i];
    qsort(by_off, g->n_tensors, sizeof(*by_off), cmp_tensor_offset_ptr);
    for (size_t i = 1; i < g->n_tensors; i++) {
        const struct eng_gguf_tensor *p = by_off[i - 1], *t = by_off[i];
        /* Both ranges lie inside the file (checked above), so p's end does not overflow. */
        if (t->offset < p->offset + p->n_bytes) {
            eng_set_err(err, errlen, "tensor '%s': data [%llu, %llu) overlaps tensor '%s' [%llu, %llu)", t->name,
                        (unsigned long long)t->offset, (unsigned long long)(t->offset + t->n_bytes), p->name,
                        (unsigned long long)p->offset, (unsigned long long)(p->offset + p->n_bytes));
            free(by_off);
            return -1;
        }
    }
    free(by_off);
    return 0;
}

/* ---- the whole image ---- */

static int parse_image(struct eng_gguf *g, char *err, size_t errlen)
{
    struct rd r = {g->buf, g->len, 0, err, errlen};
    if (g->len < 4 || memcmp(g->buf, "GGUF", 4) != 0) {
        if (g->len < 4)
            eng_set_err(err, errlen, "file of %zu bytes is too small for the GGUF magic", g->len);
        else
            eng_set_err(err, errlen, "bad magic: not a GGUF file (the first 4 bytes are %02x %02x %02x %02x)",
                        g->buf[0], g->buf[1], g->buf[2], g->buf[3]);
        return -1;
    }
    r.pos = 4;
    uint64_t n_tensors, n_kv;
    if (rd_u32(&r, "header version", &g->version) != 0)
        return -1;
    if (g->version == 1) {
        eng_set_err(err, errlen, "GGUF version 1 is not supported (only 2 and 3)");
        return -1;
    }
    if (g->version != 2 && g->version != 3) {
        /* A big-endian file reads as version 0x03000000 here. */
        eng_set_err(err, errlen, "unsupported GGUF version %u (only 2 and 3%s)", g->version,
                    g->version > 0xFFFF ? "; a big-endian file?" : "");
        return -1;
    }
    if (rd_u64(&r, "header n_tensors", &n_tensors) != 0 || rd_u64(&r, "header n_kv", &n_kv) != 0)
        return -1;

    /* Counts are checked against the bytes that follow before anything is allocated. */
    size_t rest = left(&r);
    if (n_kv > rest / GGUF_MIN_KV_BYTES) {
        eng_set_err(err, errlen, "n_kv = %llu: the %zu bytes after the header cannot hold that many key/value pairs",
                    (unsigned long long)n_kv, rest);
        return -1;
    }
    if (n_tensors > rest / GGUF_MIN_TENSOR_BYTES) {
        eng_set_err(err, errlen,
                    "n_tensors = %llu: the %zu bytes after the header cannot hold that many tensor records",
                    (unsigned long long)n_tensors, rest);
        return -1;
    }
    if (n_kv * GGUF_MIN_KV_BYTES + n_tensors * GGUF_MIN_TENSOR_BYTES > rest) {
        eng_set_err(err, errlen,
                    "n_kv = %llu and n_tensors = %llu: the %zu bytes after the header cannot hold them all",
                    (unsigned long long)n_kv, (unsigned long long)n_tensors, rest);
        return -1;
    }
    if (n_kv > GGUF_MAX_KV) {
        eng_set_err(err, errlen, "too many key/value pairs: %llu (the limit is %llu)", (unsigned long long)n_kv,
                    (unsigned long long)GGUF_MAX_KV);
        return -1;
    }
    if (n_tensors > GGUF_MAX_TENSORS) {
        eng_set_err(err, errlen, "too many tensors: %llu (the limit is %llu)", (unsigned long long)n_tensors,
                    (unsigned long long)GGUF_MAX_TENSORS);
        return -1;
    }

    size_t nk = (size_t)n_kv, nt = (size_t)n_tensors;
    g->kvs = calloc(nk > 0 ? nk : 1, sizeof(*g->kvs));
    g->str_index = calloc(nk > 0 ? nk : 1, sizeof(*g->str_index));
    g->kv_sorted = calloc(nk > 0 ? nk : 1, sizeof(*g->kv_sorted));
    g->tensors = calloc(nt > 0 ? nt : 1, sizeof(*g->tensors));
    g->tensor_sorted = calloc(nt > 0 ? nt : 1, sizeof(*g->tensor_sorted));
    if (g->kvs == NULL || g->str_index == NULL || g->kv_sorted == NULL || g->tensors == NULL ||
        g->tensor_sorted == NULL) {
        eng_set_err(err, errlen, "out of memory");
        return -1;
    }

    for (size_t i = 0; i < nk; i++) {
        g->n_kv = i + 1; /* the destructor frees the string index parse_kv may leave behind */
        if (parse_kv(g, &r, i) != 0)
            return -1;
        g->kv_sorted[i] = &g->kvs[i];
    }
    if (nk > 1)
        qsort(g->kv_sorted, nk, sizeof(*g->kv_sorted), cmp_kv_ptr);
    for (size_t i = 1; i < nk; i++) {
        if (cmp_key(&g->kv_sorted[i - 1]->key, &g->kv_sorted[i]->key) == 0) {
            const struct eng_gguf_str *k = &g->kv_sorted[i]->key;
            eng_set_err(err, errlen, "duplicate key '%.*s'", shown(k), k->data);
            return -1;
        }
    }
    if (read_alignment(g, err, errlen) != 0)
        return -1;

    for (size_t i = 0; i < nt; i++) {
        g->n_tensors = i + 1; /* the destructor frees the name parse_tensor may leave behind */
        if (parse_tensor(g, &r, i) != 0)
            return -1;
        g->tensor_sorted[i] = &g->tensors[i];
    }
    if (nt > 1)
        qsort(g->tensor_sorted, nt, sizeof(*g->tensor_sorted), cmp_tensor_name_ptr);
    for (size_t i = 1; i < nt; i++) {
        if (strcmp(g->tensor_sorted[i - 1]->name, g->tensor_sorted[i]->name) == 0) {
            eng_set_err(err, errlen, "duplicate tensor name '%s'", g->tensor_sorted[i]->name);
            return -1;
        }
    }
    return place_tensors(g, r.pos, err, errlen);
}

int eng_gguf_open_buffer(const uint8_t *buf, size_t len, struct eng_gguf **out, char *err, size_t errlen)
{
    if (out == NULL) {
        eng_set_err(err, errlen, "no output pointer");
        return -1;
    }
    *out = NULL;
    if (buf == NULL && len > 0) {
        eng_set_err(err, errlen, "no buffer");
        return -1;
    }
    struct eng_gguf *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        eng_set_err(err, errlen, "out of memory");
        return -1;
    }
    static const uint8_t empty[1] = {0};
    g->buf = buf != NULL ? buf : empty;
    g->len = len;
    if (parse_image(g, err, errlen) != 0) {
        eng_gguf_close(g);
        return -1;
    }
    *out = g;
    return 0;
}

int eng_gguf_validate_buffer(const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    struct eng_gguf *g;
    if (eng_gguf_open_buffer(buf, len, &g, err, errlen) != 0)
        return -1;
    eng_gguf_close(g);
    return 0;
}

int eng_gguf_open_file(const char *path, struct eng_gguf **out, char *err, size_t errlen)
{
    if (out == NULL || path == NULL) {
        eng_set_err(err, errlen, "no path or output pointer");
        return -1;
    }
    *out = NULL;
    const uint8_t *p;
    size_t size;
    if (eng_file_map(path, path, &p, &size, err, errlen) != 0)
        return -1;
    if (size < GGUF_HEADER_BYTES) {
        eng_set_err(err, errlen, "%s: file of %zu bytes is too small for the %u-byte GGUF header", path,
                    size, GGUF_HEADER_BYTES);
        munmap((void *)p, size);
        return -1;
    }
    char inner[512];
    struct eng_gguf *g;
    if (eng_gguf_open_buffer(p, size, &g, inner, sizeof(inner)) != 0) {
        eng_set_err(err, errlen, "%s: %s", path, inner);
        munmap((void *)p, size);
        return -1;
    }
    g->map = (void *)p; /* munmap takes it back non-const */
    g->map_len = size;
    *out = g;
    return 0;
}

void eng_gguf_close(struct eng_gguf *g)
{
    if (g == NULL)
        return;
    if (g->str_index != NULL)
        for (size_t i = 0; i < g->n_kv; i++)
            free(g->str_index[i]);
    free(g->str_index);
    free(g->kvs);
    free(g->kv_sorted);
    if (g->tensors != NULL)
        for (size_t i = 0; i < g->n_tensors; i++)
            free((char *)g->tensors[i].name);
    free(g->tensors);
    free(g->tensor_sorted);
    if (g->map != NULL)
        munmap(g->map, g->map_len);
    free(g);
}

/* ---- access ---- */

uint32_t eng_gguf_version(const struct eng_gguf *g)
{
    return g != NULL ? g->version : 0;
}

size_t eng_gguf_n_kv(const struct eng_gguf *g)
{
    return g != NULL ? g->n_kv : 0;
}

const struct eng_gguf_kv *eng_gguf_kv_at(const struct eng_gguf *g, size_t i)
{
    return g != NULL && i < g->n_kv ? &g->kvs[i] : NULL;
}

const struct eng_gguf_kv *eng_gguf_find_kv(const struct eng_gguf *g, const char *key)
{
    if (g == NULL || key == NULL || g->n_kv == 0)
        return NULL;
    struct eng_gguf_kv probe;
    memset(&probe, 0, sizeof(probe));
    probe.key.data = key;
    probe.key.len = strlen(key);
    const struct eng_gguf_kv *pp = &probe;
    const struct eng_gguf_kv *const *hit =
        bsearch(&pp, g->kv_sorted, g->n_kv, sizeof(*g->kv_sorted), cmp_kv_ptr);
    return hit != NULL ? *hit : NULL;
}

size_t eng_gguf_n_tensors(const struct eng_gguf *g)
{
    return g != NULL ? g->n_tensors : 0;
}

const struct eng_gguf_tensor *eng_gguf_tensor_at(const struct eng_gguf *g, size_t i)
{
    return g != NULL && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const struct eng_gguf_tensor *eng_gguf_find_tensor(const struct eng_gguf *g, const char *name)
{
    if (g == NULL || name == NULL || g->n_tensors == 0)
        return NULL;
    struct eng_gguf_tensor probe;
    memset(&probe, 0, sizeof(probe));
    probe.name = name;
    const struct eng_gguf_tensor *pp = &probe;
    const struct eng_gguf_tensor *const *hit =
        bsearch(&pp, g->tensor_sorted, g->n_tensors, sizeof(*g->tensor_sorted), cmp_tensor_name_ptr);
    return hit != NULL ? *hit : NULL;
}

/* The pair for key, or NULL with "key '...' not found" in err. */
static const struct eng_gguf_kv *need_kv(const struct eng_gguf *g, const char *key, char *err, size_t errlen)
{
    const struct eng_gguf_kv *kv = eng_gguf_find_kv(g, key);
    if (kv == NULL)
        eng_set_err(err, errlen, "key '%s' not found", key != NULL ? key : "(null)");
    return kv;
}

static void wrong_type(const struct eng_gguf_kv *kv, const char *key, const char *want, char *err, size_t errlen)
{
    eng_set_err(err, errlen, "key '%s' has type %s%s%s, not %s", key, value_type_name(kv->type),
                kv->type == ENG_GGUF_ARRAY ? " of " : "",
                kv->type == ENG_GGUF_ARRAY ? value_type_name(kv->elem_type) : "",
                want);
}

int eng_gguf_get_u32(const struct eng_gguf *g, const char *key, uint32_t *out, char *err, size_t errlen)
{
    const struct eng_gguf_kv *kv = need_kv(g, key, err, errlen);
    if (kv == NULL)
        return -1;
    const uint8_t *p = kv->value;
    bool neg = false;
    uint64_t v;
    switch (kv->type) {
    case ENG_GGUF_U8: v = p[0]; break;
    case ENG_GGUF_I8: v = (uint64_t)(int64_t)(int8_t)p[0]; neg = (int8_t)p[0] < 0; break;
    case ENG_GGUF_U16: v = (uint64_t)p[0] | (uint64_t)p[1] << 8; break;
    case ENG_GGUF_I16: {
        int16_t s = (int16_t)(uint16_t)(p[0] | p[1] << 8);
        v = (uint64_t)(int64_t)s;
        neg = s < 0;
        break;
    }
    case ENG_GGUF_U32: v = le32(p); break;
    case ENG_GGUF_I32: v = (uint64_t)(int64_t)(int32_t)le32(p); neg = (int32_t)le32(p) < 0; break;
    case ENG_GGUF_U64: v = le64(p); break;
    case ENG_GGUF_I64: v = le64(p); neg = (int64_t)v < 0; break;
    default:
        wrong_type(kv, key, "an integer", err, errlen);
        return -1;
    }
    if (neg || v > UINT32_MAX) {
        if (neg)
            eng_set_err(err, errlen, "key '%s': value %lld is out of range for u32", key, (long long)(int64_t)v);
        else
            eng_set_err(err, errlen, "key '%s': value %llu is out of range for u32", key, (unsigned long long)v);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

int eng_gguf_get_f32(const struct eng_gguf *g, const char *key, float *out, char *err, size_t errlen)
{
    const struct eng_gguf_kv *kv = need_kv(g, key, err, errlen);
    if (kv == NULL)
        return -1;
    if (kv->type == ENG_GGUF_F32) {
        uint32_t bits = le32(kv->value);
        memcpy(out, &bits, sizeof(*out));
        return 0;
    }
    if (kv->type == ENG_GGUF_F64) {
        uint64_t bits = le64(kv->value);
        double d;
        memcpy(&d, &bits, sizeof(d));
        /* NaN compares false and passes; so do the infinities, which are not finite. */
        if (d == d && d - d == 0.0 && (d > FLT_MAX || d < -FLT_MAX)) {
            eng_set_err(err, errlen, "key '%s': value %g is out of range for f32", key, d);
            return -1;
        }
        *out = (float)d;
        return 0;
    }
    wrong_type(kv, key, "f32 or f64", err, errlen);
    return -1;
}

int eng_gguf_get_bool(const struct eng_gguf *g, const char *key, int *out, char *err, size_t errlen)
{
    const struct eng_gguf_kv *kv = need_kv(g, key, err, errlen);
    if (kv == NULL)
        return -1;
    if (kv->type != ENG_GGUF_BOOL) {
        wrong_type(kv, key, "bool", err, errlen);
        return -1;
    }
    *out = kv->value[0]; /* 0 or 1: checked at open */
    return 0;
}

int eng_gguf_get_str(const struct eng_gguf *g, const char *key, struct eng_gguf_str *out, char *err,
                     size_t errlen)
{
    const struct eng_gguf_kv *kv = need_kv(g, key, err, errlen);
    if (kv == NULL)
        return -1;
    if (kv->type != ENG_GGUF_STRING) {
        wrong_type(kv, key, "string", err, errlen);
        return -1;
    }
    out->len = le64(kv->value);
    out->data = (const char *)kv->value + 8;
    return 0;
}

int eng_gguf_array_str(const struct eng_gguf *g, const struct eng_gguf_kv *kv, uint64_t i,
                       struct eng_gguf_str *out)
{
    if (g == NULL || kv == NULL || g->n_kv == 0 || kv->type != ENG_GGUF_ARRAY ||
        kv->elem_type != ENG_GGUF_STRING || i >= kv->count)
        return -1;
    /* kv must be one of g's pairs: compared as addresses, since pointers into different
     * objects may not be compared with < in C. */
    uintptr_t base = (uintptr_t)g->kvs, at = (uintptr_t)kv;
    if (at < base || at - base >= g->n_kv * sizeof(*g->kvs) || (at - base) % sizeof(*g->kvs) != 0)
        return -1;
    size_t k = (at - base) / sizeof(*g->kvs);
    const uint8_t *p = g->buf + g->str_index[k][i];
    out->len = le64(p);
    out->data = (const char *)p + 8;
    return 0;
}

int eng_gguf_array_f32(const struct eng_gguf_kv *kv, uint64_t i, float *out)
{
    if (kv == NULL || kv->type != ENG_GGUF_ARRAY || kv->elem_type != ENG_GGUF_F32 || i >= kv->count)
        return -1;
    uint32_t bits = le32(kv->value + 4 * (size_t)i);
    memcpy(out, &bits, sizeof(*out));
    return 0;
}

int eng_gguf_array_i32(const struct eng_gguf_kv *kv, uint64_t i, int32_t *out)
{
    if (kv == NULL || kv->type != ENG_GGUF_ARRAY || kv->elem_type != ENG_GGUF_I32 || i >= kv->count)
        return -1;
    *out = (int32_t)le32(kv->value + 4 * (size_t)i);
    return 0;
}
