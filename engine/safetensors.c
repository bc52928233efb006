/* Safetensors loader: maps model files read-only and validates every header field and offset
 * (the checks of the safetensors reference implementation, plus duplicate names and dtypes we
 * cannot compute with) before any tensor byte is handed out. It does not know model layouts. */
#include "safetensors.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file_util.h"
#include "json.h"

#define ST_MAX_HEADER 100000000ull        /* the reference implementation's MAX_HEADER_SIZE */
#define ST_MAX_INDEX_BYTES (16u << 20)    /* model.safetensors.index.json */
#define ST_MAX_SHARDS 4096
#define ST_NAME_SHOWN 96                   /* tensor names are cut to this in messages */

static const char ST_SINGLE[] = "model.safetensors";
static const char ST_INDEX[] = "model.safetensors.index.json";

struct st_shard {
    char *file;                /* plain file name inside the model dir, owned */
    const uint8_t *map;        /* read-only mapping of the whole file */
    size_t map_len;
};

struct eng_st_set {
    struct st_shard *shards;   /* [n_shards], owned */
    size_t n_shards;
    struct eng_tensor *tensors; /* [n_tensors] sorted by name; names owned (strdup) */
    size_t *tensor_shard;      /* [n_tensors] index into shards */
    size_t n_tensors;
};

/* One validated header entry; name is owned by the caller of parse_image. */
struct st_entry {
    char *name;
    enum kern_dtype dtype;
    int n_dims;
    int64_t shape[ENG_ST_MAX_DIMS];
    int64_t n_elements;
    uint64_t begin, end;       /* relative to the data region */
};

struct st_image {
    struct st_entry *entries;  /* [n] */
    size_t n;
    const uint8_t *data;       /* start of the data region */
};

/* Length of a name as shown in messages (hostile names can be megabytes long). */
static int shown(const char *name)
{
    size_t n = strlen(name);
    if (n <= ST_NAME_SHOWN)
        return (int)n;
    n = ST_NAME_SHOWN;
    while (n > 0 && ((unsigned char)name[n] & 0xC0) == 0x80)
        n--; /* do not cut a UTF-8 sequence: messages end up in JSON logs */
    return (int)n;
}

static uint64_t read_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Says why a JSON text (the header, or the index) failed to parse, in the words of what
 * ("header is not valid JSON") and with its byte offset in the text (of: " of the header").
 * Duplicate keys are the caller's to describe. */
static void json_error(const char *file, const char *what, const char *of,
                       const struct eng_json_error *je, char *err, size_t errlen)
{
    if (je->code == ENG_JSON_ERR_NO_MEMORY) {
        eng_set_err(err, errlen, "%s: out of memory", file);
        return;
    }
    bool at = je->path[0] != '\0';
    eng_set_err(err, errlen, "%s: %s at byte %zu%s%s%.*s%s: %s", file, what, je->offset, of,
                at ? ", in '" : "", shown(je->path), je->path, at ? "'" : "", je->message);
}

/* Every dtype of the safetensors format, so refusals can say "unsupported" rather than
 * "unknown". Only the three with a kern_dtype are accepted. */
struct st_dtype_info {
    const char *name;
    int kern;                  /* enum kern_dtype, or -1 when we cannot compute with it */
    size_t size;
};

static const struct st_dtype_info ST_DTYPES[] = {
    {"BF16", KERN_DTYPE_BF16, 2}, {"F16", KERN_DTYPE_F16, 2}, {"F32", KERN_DTYPE_F32, 4},
    {"BOOL", -1, 1}, {"U8", -1, 1}, {"I8", -1, 1}, {"F8_E5M2", -1, 1}, {"F8_E4M3", -1, 1},
    {"F8_E8M0", -1, 1}, {"I16", -1, 2}, {"U16", -1, 2}, {"I32", -1, 4}, {"U32", -1, 4},
    {"F64", -1, 8}, {"I64", -1, 8}, {"U64", -1, 8}, {"C64", -1, 8}, {"F4", -1, 1},
    {"F6_E2M3", -1, 1}, {"F6_E3M2", -1, 1},
};

static const struct st_dtype_info *dtype_lookup(const char *name)
{
    for (size_t i = 0; i < sizeof(ST_DTYPES) / sizeof(ST_DTYPES[0]); i++)
        if (strcmp(ST_DTYPES[i].name, name) == 0)
            return &ST_DTYPES[i];
    return NULL;
}

/* A JSON integer literal in [0, 2^63), read exactly. Like the reference implementation (serde
 * into usize), a number written with a fraction or exponent is not an integer here. */
static bool json_uint(const struct eng_json *v, uint64_t *out)
{
    if (v == NULL || v->type != ENG_JSON_NUMBER || !v->is_int || v->u.num.i < 0)
        return false;
    *out = (uint64_t)v->u.num.i;
    return true;
}

static void free_entries(struct st_entry *e, size_t n)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(e[i].name);
    free(e);
}

/* Validates one header entry (a tensor) against the data region of data_len bytes. */
static int parse_entry(const struct eng_json *item, const char *file, uint64_t data_len,
                       uint64_t data_pos, struct st_entry *e, char *err, size_t errlen)
{
    const char *name = item->key;
    if (item->type != ENG_JSON_OBJECT) {
        eng_set_err(err, errlen, "%s: tensor '%.*s': entry is not a JSON object", file, shown(name), name);
        return -1;
    }

    const struct eng_json *dt = eng_json_get(item, "dtype");
    if (dt == NULL || dt->type != ENG_JSON_STRING) {
        eng_set_err(err, errlen, "%s: tensor '%.*s': dtype missing or not a string", file, shown(name), name);
        return -1;
    }
    const struct st_dtype_info *info = dtype_lookup(dt->u.str);
    if (info == NULL) {
        eng_set_err(err, errlen, "%s: tensor '%.*s': unknown dtype '%.*s'", file, shown(name), name,
                    shown(dt->u.str), dt->u.str);
        return -1;
    }
    if (info->kern < 0) {
        eng_set_err(err, errlen, "%s: tensor '%.*s': dtype %s is not supported (BF16, F16 and F32 are)",
                    file, shown(name), name, info->name);
        return -1;
    }
    e->dtype = (enum kern_dtype)info->kern;

    const struct eng_json *shape = eng_json_get(item, "shape");
    if (shape == NULL || shape->type != ENG_JSON_ARRAY) {
        eng_set_err(err, errlen, "%s: tensor '%.*s': shape missing or not an array", file, shown(name), name);
        return -1;
    }
    int n_dims = 0;
    int64_t n_elements = 1;
    bool overflow = false;
    for (const struct eng_json *d = shape->u.child; d != NULL; d = d->next) {
        uint64_t v;
        if (n_dims == ENG_ST_MAX_DIMS) {
            eng_set_err(err, errlen, "%s: tensor '%.*s': shape has more than %d dimensions", file,
                        shown(name), name, ENG_ST_MAX_DIMS);
            return -1;
        }
        if (!json_uint(d, &v)) {
            eng_set_err(err, errlen, "%s: tensor '%.*s': shape[%d] is not a non-negative integer below 2^63",
                        file, shown(name), name, n_dims);
            return -1;
        }
        e->shape[n_dims++] = (int64_t)v;
        /* Keep multiplying after an overflow is impossible; stop at the first one. */
        if (!overflow && __builtin_mul_overflow(n_elements, (int64_t)v, &n_elements))
            overflow = true;
    }
    if (overflow) {
        eng_set_err(err, errlen, "%s: tensor '%.*s': shape element count overflows 64 bits", file,
                    shown(name), name);
        return -1;
    }
    e->n_dims = n_dims;
    e->n_elements = n_elements;
    int64_t n_bytes;
    if (__builtin_mul_overflow(n_elements, (int64_t)info->size, &n_bytes)) {
        eng_set_err(err, errlen, "%s: tensor '%.*s': shape byte size overflows 64 bits", file,
                    shown(name), name);
        return -1;
    }

    const struct eng_json *off = eng_json_get(item, "data_offsets");
    if (off == NULL || off->type != ENG_JSON_ARRAY || off->len != 2) {
        eng_set_err(err, errlen, "%s: tensor '%.*s': data_offsets missing or not an array [begin, end]",
                    file, shown(name), name);
        return -1;
    }
    uint64_t begin, end;
    if (!json_uint(off->u.child, &begin) || !json_uint(off->u.child->next, &end)) {
        eng_set_err(err, errlen, "%s: tensor '%.*s': data_offsets must be non-negative integers below 2^63",
                    file, shown(name), name);
        return -1;
    }
    if (begin > end) {
        eng_set_err(err, errlen, "%s: tensor '%.*s': data_offsets [%llu, %llu]: begin is after end", file,
                    shown(name), name, (unsigned long long)begin, (unsigned long long)end);
        return -1;
    }
    if (end > data_len) {
        eng_set_err(err, errlen, "%s: tensor '%.*s': data_offsets end %llu beyond data region of %llu bytes",
                    file, shown(name), name, (unsigned long long)end, (unsigned long long)data_len);
        return -1;
    }
    if (end - begin != (uint64_t)n_bytes) {
        eng_set_err(err, errlen,
                    "%s: tensor '%.*s': data_offsets span %llu bytes but dtype %s and shape of %lld "
                    "elements need %lld bytes",
                    file, shown(name), name, (unsigned long long)(end - begin), info->name,
                    (long long)n_elements, (long long)n_bytes);
        return -1;
    }
    /* The mapping is page-aligned, so an aligned file offset gives an aligned pointer; the
     * kernels read elements directly from it. Writers pad the header to 8 bytes for this. */
    if (n_bytes > 0 && (data_pos + begin) % info->size != 0) {
        eng_set_err(err, errlen,
                    "%s: tensor '%.*s': data at file offset %llu is not aligned to its %zu-byte elements",
                    file, shown(name), name, (unsigned long long)(data_pos + begin), info->size);
        return -1;
    }
    e->begin = begin;
    e->end = end;
    e->name = strdup(name);
    if (e->name == NULL) {
        eng_set_err(err, errlen, "%s: out of memory", file);
        return -1;
    }
    return 0;
}

static int cmp_entry_offsets(const void *a, const void *b)
{
    const struct st_entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Sorted by offsets, the tensors must tile the data region exactly: each begins where the
 * previous ended (zero-size tensors may share an offset), the last ends at the region's end. */
static int check_coverage(struct st_entry *e, size_t n, uint64_t data_len, const char *file,
                          char *err, size_t errlen)
{
    qsort(e, n, sizeof(*e), cmp_entry_offsets);
    uint64_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i].begin < pos) {
            eng_set_err(err, errlen,
                        "%s: tensor '%.*s': data_offsets [%llu, %llu] overlap tensor '%.*s' [%llu, %llu]",
                        file, shown(e[i].name), e[i].name, (unsigned long long)e[i].begin,
                        (unsigned long long)e[i].end, shown(e[i - 1].name), e[i - 1].name,
                        (unsigned long long)e[i - 1].begin, (unsigned long long)e[i - 1].end);
            return -1;
        }
        if (e[i].begin > pos) {
            eng_set_err(err, errlen,
                        "%s: gap in data region: bytes [%llu, %llu) before tensor '%.*s' belong to no tensor",
                        file, (unsigned long long)pos, (unsigned long long)e[i].begin, shown(e[i].name),
                        e[i].name);
            return -1;
        }
        pos = e[i].end;
    }
    if (pos != data_len) {
        eng_set_err(err, errlen,
                    "%s: gap in data region: bytes [%llu, %llu) at its end belong to no tensor", file,
                    (unsigned long long)pos, (unsigned long long)data_len);
        return -1;
    }
    return 0;
}

/* Validates a whole safetensors image; on success fills img (entries sorted by offset). */
static int parse_image(const uint8_t *buf, size_t len, const char *file, struct st_image *img,
                       char *err, size_t errlen)
{
    memset(img, 0, sizeof(*img));
    if (len == 0) {
        eng_set_err(err, errlen, "%s: empty file", file);
        return -1;
    }
    if (len < 8) {
        eng_set_err(err, errlen, "%s: %zu bytes is too small to hold the 8-byte header length", file, len);
        return -1;
    }
    uint64_t hlen = read_le64(buf);
    if (hlen > ST_MAX_HEADER) {
        eng_set_err(err, errlen, "%s: header length %llu exceeds the limit of %llu bytes", file,
                    (unsigned long long)hlen, ST_MAX_HEADER);
        return -1;
    }
    if (hlen < 2) {
        eng_set_err(err, errlen, "%s: header length %llu is too small for a JSON object", file,
                    (unsigned long long)hlen);
        return -1;
    }
    if (hlen > len - 8) {
        eng_set_err(err, errlen, "%s: header length %llu exceeds the file: only %zu bytes follow it",
                    file, (unsigned long long)hlen, len - 8);
        return -1;
    }
    const uint8_t *hdr = buf + 8;
    size_t hn = (size_t)hlen;
    if (hdr[0] != '{') {
        eng_set_err(err, errlen, "%s: header does not start with '{'", file);
        return -1;
    }
    /* The strict reader refuses what would make names ambiguous or the text misread: invalid
     * UTF-8, NUL bytes and \u0000 (names are C strings), duplicate keys at any depth (a tensor
     * named twice), trailing bytes (writers pad with spaces only). */
    struct eng_json_doc *doc;
    struct eng_json_error je;
    int rc = eng_json_parse((const char *)hdr, hn, NULL, &doc, &je);
    if (rc == ENG_JSON_ERR_DUPLICATE_KEY && strcmp(je.path, je.key) == 0) {
        eng_set_err(err, errlen, "%s: duplicate tensor name '%.*s' in header", file, shown(je.key), je.key);
        return -1;
    }
    if (rc == ENG_JSON_ERR_DUPLICATE_KEY) {
        eng_set_err(err, errlen, "%s: duplicate key '%.*s' in header, at '%.*s'", file, shown(je.key),
                    je.key, shown(je.path), je.path);
        return -1;
    }
    if (rc != 0) {
        json_error(file, "header is not valid JSON", " of the header", &je, err, errlen);
        return -1;
    }
    const struct eng_json *root = eng_json_root(doc);
    if (root->type != ENG_JSON_OBJECT) {
        eng_set_err(err, errlen, "%s: header is not a JSON object", file);
        eng_json_free(doc);
        return -1;
    }

    uint64_t data_pos = 8 + hlen;
    uint64_t data_len = (uint64_t)len - data_pos;
    size_t n = root->len;
    struct st_entry *e = calloc(n > 0 ? n : 1, sizeof(*e));
    if (e == NULL) {
        eng_set_err(err, errlen, "%s: out of memory", file);
        eng_json_free(doc);
        return -1;
    }
    size_t k = 0;
    for (const struct eng_json *c = root->u.child; c != NULL; c = c->next) {
        if (strcmp(c->key, "__metadata__") == 0) {
            /* Free-form string pairs (format, ...); nothing we use, but it must be well-formed. */
            if (c->type != ENG_JSON_OBJECT) {
                eng_set_err(err, errlen, "%s: __metadata__ is not a JSON object", file);
                goto fail;
            }
            for (const struct eng_json *m = c->u.child; m != NULL; m = m->next) {
                if (m->type != ENG_JSON_STRING) {
                    eng_set_err(err, errlen, "%s: __metadata__ value of '%.*s' is not a string", file,
                                shown(m->key), m->key);
                    goto fail;
                }
            }
            continue;
        }
        if (parse_entry(c, file, data_len, data_pos, &e[k], err, errlen) != 0)
            goto fail;
        k++;
    }
    eng_json_free(doc);
    doc = NULL;
    if (check_coverage(e, k, data_len, file, err, errlen) != 0)
        goto fail;
    img->entries = e;
    img->n = k;
    img->data = buf + data_pos;
    return 0;
fail:
    free_entries(e, n);
    eng_json_free(doc);
    return -1;
}

int eng_st_validate_buffer(const uint8_t *buf, size_t len, size_t *n_tensors, char *err, size_t errlen)
{
    struct st_image img;
    if (buf == NULL && len > 0) {
        eng_set_err(err, errlen, "<buffer>: NULL buffer");
        return -1;
    }
    if (parse_image(buf, len, "<buffer>", &img, err, errlen) != 0)
        return -1;
    if (n_tensors != NULL)
        *n_tensors = img.n;
    free_entries(img.entries, img.n);
    return 0;
}

/* ---- files ---- */

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const struct eng_tensor *)a)->name, ((const struct eng_tensor *)b)->name);
}

/* Maps dir/file, validates it and appends its tensors to set (as shard number set->n_shards). */
static int add_shard(struct eng_st_set *set, const char *dir, const char *file, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (eng_path_join(path, sizeof(path), dir, file, err, errlen) != 0)
        return -1;
    struct st_shard *sh = &set->shards[set->n_shards];
    sh->file = strdup(file);
    if (sh->file == NULL) {
        eng_set_err(err, errlen, "%s: out of memory", file);
        return -1;
    }
    set->n_shards++; /* from here the destructor owns sh, mapped or not */
    if (eng_file_map(path, file, &sh->map, &sh->map_len, err, errlen) != 0)
        return -1;
    struct st_image img;
    if (parse_image(sh->map, sh->map_len, file, &img, err, errlen) != 0)
        return -1;
    size_t total;
    struct eng_tensor *t = NULL;
    size_t *ts = NULL;
    if (__builtin_add_overflow(set->n_tensors, img.n, &total) || total > SIZE_MAX / sizeof(*t) ||
        (t = realloc(set->tensors, (total > 0 ? total : 1) * sizeof(*t))) == NULL) {
        eng_set_err(err, errlen, "%s: out of memory", file);
        free_entries(img.entries, img.n);
        return -1;
    }
    set->tensors = t;
    if ((ts = realloc(set->tensor_shard, (total > 0 ? total : 1) * sizeof(*ts))) == NULL) {
        eng_set_err(err, errlen, "%s: out of memory", file);
        free_entries(img.entries, img.n);
        return -1;
    }
    set->tensor_shard = ts;
    for (size_t i = 0; i < img.n; i++) {
        const struct st_entry *e = &img.entries[i];
        struct eng_tensor *dst = &set->tensors[set->n_tensors];
        memset(dst, 0, sizeof(*dst));
        dst->name = e->name; /* ownership moves to the set */
        dst->dtype = e->dtype;
        dst->n_dims = e->n_dims;
        memcpy(dst->shape, e->shape, sizeof(e->shape));
        dst->n_elements = e->n_elements;
        dst->data = img.data + e->begin;
        dst->n_bytes = (size_t)(e->end - e->begin);
        set->tensor_shard[set->n_tensors] = set->n_shards - 1;
        set->n_tensors++;
    }
    free(img.entries); /* names now belong to set->tensors */
    return 0;
}

/* A shard named in the index must be a plain file name inside the model directory. */
static bool plain_file_name(const char *s)
{
    if (s[0] == '\0' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0 || strstr(s, "..") != NULL)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p == '/' || *p == '\\' || *p < 0x20)
            return false;
    return true;
}

struct st_map_entry {
    const char *tensor;        /* into the index's JSON tree */
    const char *file;
};

static int cmp_map_entry(const void *a, const void *b)
{
    return strcmp(((const struct st_map_entry *)a)->tensor, ((const struct st_map_entry *)b)->tensor);
}

static int cmp_map_file(const void *a, const void *b)
{
    return strcmp(((const struct st_map_entry *)a)->file, ((const struct st_map_entry *)b)->file);
}

/* Checks that the tensors found (set, sorted by name) are exactly the index's weight_map. */
static int check_against_index(const struct eng_st_set *set, struct st_map_entry *map, size_t n_map,
                               char *err, size_t errlen)
{
    qsort(map, n_map, sizeof(*map), cmp_map_entry);
    size_t j = 0;
    for (size_t i = 0; i < n_map; i++) {
        if (j < set->n_tensors && strcmp(set->tensors[j].name, map[i].tensor) < 0) {
            const char *nm = set->tensors[j].name;
            eng_set_err(err, errlen, "%s: tensor '%.*s' is not listed in %s's weight_map",
                        set->shards[set->tensor_shard[j]].file, shown(nm), nm, ST_INDEX);
            return -1;
        }
        if (j == set->n_tensors || strcmp(set->tensors[j].name, map[i].tensor) != 0) {
            eng_set_err(err, errlen, "%s: tensor '%.*s' is listed in the weight_map but absent from shard %s",
                        ST_INDEX, shown(map[i].tensor), map[i].tensor, map[i].file);
            return -1;
        }
        const char *in = set->shards[set->tensor_shard[j]].file;
        if (strcmp(in, map[i].file) != 0) {
            eng_set_err(err, errlen, "%s: tensor '%.*s' is mapped to shard %s but found in %s", ST_INDEX,
                        shown(map[i].tensor), map[i].tensor, map[i].file, in);
            return -1;
        }
        j++;
    }
    if (j < set->n_tensors) {
        const char *nm = set->tensors[j].name;
        eng_set_err(err, errlen, "%s: tensor '%.*s' is not listed in %s's weight_map",
                    set->shards[set->tensor_shard[j]].file, shown(nm), nm, ST_INDEX);
        return -1;
    }
    return 0;
}

/* Sorts the tensors by name (for lookups) and refuses a name found in two shards. */
static int sort_and_check_unique(struct eng_st_set *set, char *err, size_t errlen)
{
    /* Sort (tensor, shard) pairs together: build a permutation through a temporary array. */
    size_t n = set->n_tensors;
    if (n < 2)
        return 0;
    struct pair { struct eng_tensor t; size_t shard; } *tmp = malloc(n * sizeof(*tmp));
    if (tmp == NULL) {
        eng_set_err(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        tmp[i].t = set->tensors[i];
        tmp[i].shard = set->tensor_shard[i];
    }
    qsort(tmp, n, sizeof(*tmp), cmp_tensor_name); /* t is the first member */
    for (size_t i = 0; i < n; i++) {
        set->tensors[i] = tmp[i].t;
        set->tensor_shard[i] = tmp[i].shard;
    }
    free(tmp);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(set->tensors[i - 1].name, set->tensors[i].name) == 0) {
            const char *nm = set->tensors[i].name;
            eng_set_err(err, errlen, "tensor '%.*s' appears in two shards: %s and %s", shown(nm), nm,
                        set->shards[set->tensor_shard[i - 1]].file, set->shards[set->tensor_shard[i]].file);
            return -1;
        }
    }
    return 0;
}

static int open_sharded(struct eng_st_set *set, const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX];
    char *text = NULL;
    size_t len = 0;
    struct eng_json_doc *doc = NULL;
    struct st_map_entry *map = NULL;
    int rc = -1;
    if (eng_path_join(path, sizeof(path), dir, ST_INDEX, err, errlen) != 0)
        return -1;
    if (eng_file_read_small(path, ST_INDEX, ST_MAX_INDEX_BYTES, &text, &len, err, errlen) != 0)
        return -1;
    struct eng_json_error je;
    int prc = eng_json_parse(text, len, NULL, &doc, &je);
    if (prc == ENG_JSON_ERR_DUPLICATE_KEY && strcmp(je.path, je.key) == 0) {
        eng_set_err(err, errlen, "%s: duplicate key '%.*s'", ST_INDEX, shown(je.key), je.key);
        goto out;
    }
    if (prc == ENG_JSON_ERR_DUPLICATE_KEY && strncmp(je.path, "weight_map.", 11) == 0 &&
        strcmp(je.path + 11, je.key) == 0) {
        eng_set_err(err, errlen, "%s: weight_map lists tensor '%.*s' twice", ST_INDEX, shown(je.key), je.key);
        goto out;
    }
    if (prc == ENG_JSON_ERR_DUPLICATE_KEY) {
        eng_set_err(err, errlen, "%s: duplicate key '%.*s' at '%.*s'", ST_INDEX, shown(je.key), je.key,
                    shown(je.path), je.path);
        goto out;
    }
    if (prc != 0) {
        json_error(ST_INDEX, "not a valid JSON object", "", &je, err, errlen);
        goto out;
    }
    const struct eng_json *root = eng_json_root(doc);
    if (root->type != ENG_JSON_OBJECT) {
        eng_set_err(err, errlen, "%s: not a valid JSON object", ST_INDEX);
        goto out;
    }
    const struct eng_json *wm = eng_json_get(root, "weight_map");
    if (wm == NULL || wm->type != ENG_JSON_OBJECT || wm->len == 0) {
        eng_set_err(err, errlen, "%s: weight_map missing, not an object, or empty", ST_INDEX);
        goto out;
    }
    size_t n_map = wm->len;
    map = malloc(n_map * sizeof(*map));
    if (map == NULL) {
        eng_set_err(err, errlen, "%s: out of memory", ST_INDEX);
        goto out;
    }
    size_t i = 0;
    for (const struct eng_json *c = wm->u.child; c != NULL; c = c->next, i++) {
        if (c->type != ENG_JSON_STRING) {
            eng_set_err(err, errlen, "%s: weight_map entry of tensor '%.*s' is not a string", ST_INDEX,
                        shown(c->key), c->key);
            goto out;
        }
        if (!plain_file_name(c->u.str)) {
            eng_set_err(err, errlen, "%s: tensor '%.*s': shard name '%.*s' is not a plain file name in "
                        "the model directory", ST_INDEX, shown(c->key), c->key, shown(c->u.str),
                        c->u.str);
            goto out;
        }
        map[i].tensor = c->key;
        map[i].file = c->u.str;
    }
    /* Open each distinct shard once, in file-name order. */
    qsort(map, n_map, sizeof(*map), cmp_map_file);
    size_t n_files = 0;
    for (i = 0; i < n_map; i++)
        if (i == 0 || strcmp(map[i - 1].file, map[i].file) != 0)
            n_files++;
    if (n_files > ST_MAX_SHARDS) {
        eng_set_err(err, errlen, "%s: %zu shards exceed the limit of %d", ST_INDEX, n_files, ST_MAX_SHARDS);
        goto out;
    }
    set->shards = calloc(n_files, sizeof(*set->shards));
    if (set->shards == NULL) {
        eng_set_err(err, errlen, "%s: out of memory", ST_INDEX);
        goto out;
    }
    for (i = 0; i < n_map; i++) {
        if (i > 0 && strcmp(map[i - 1].file, map[i].file) == 0)
            continue;
        if (add_shard(set, dir, map[i].file, err, errlen) != 0)
            goto out;
    }
    if (sort_and_check_unique(set, err, errlen) != 0)
        goto out;
    if (check_against_index(set, map, n_map, err, errlen) != 0)
        goto out;
    rc = 0;
out:
    free(map);
    eng_json_free(doc);
    free(text);
    return rc;
}

int eng_st_open_dir(const char *dir, struct eng_st_set **out, char *err, size_t errlen)
{
    if (out == NULL || dir == NULL) {
        eng_set_err(err, errlen, "eng_st_open_dir: NULL argument");
        return -1;
    }
    *out = NULL;
    struct eng_st_set *set = calloc(1, sizeof(*set));
    if (set == NULL) {
        eng_set_err(err, errlen, "out of memory");
        return -1;
    }
    char path[PATH_MAX];
    struct stat st;
    /* Like transformers, a single model.safetensors wins over an index when both exist. */
    if (eng_path_join(path, sizeof(path), dir, ST_SINGLE, err, errlen) != 0)
        goto fail;
    /* lstat: a dangling symlink is a broken model file, not an absent one. */
    if (lstat(path, &st) == 0 || errno != ENOENT) {
        set->shards = calloc(1, sizeof(*set->shards));
        if (set->shards == NULL) {
            eng_set_err(err, errlen, "out of memory");
            goto fail;
        }
        if (add_shard(set, dir, ST_SINGLE, err, errlen) != 0)
            goto fail;
        if (sort_and_check_unique(set, err, errlen) != 0)
            goto fail;
    } else {
        if (eng_path_join(path, sizeof(path), dir, ST_INDEX, err, errlen) != 0)
            goto fail;
        if (lstat(path, &st) != 0 && errno == ENOENT) {
            eng_set_err(err, errlen, "%s: neither %s nor %s found", dir, ST_SINGLE, ST_INDEX);
            goto fail;
        }
        if (open_sharded(set, dir, err, errlen) != 0)
            goto fail;
    }
    *out = set;
    return 0;
fail:
    eng_st_close(set);
    return -1;
}

const struct eng_tensor *eng_st_find(const struct eng_st_set *set, const char *name)
{
    if (set == NULL || name == NULL || set->n_tensors == 0)
        return NULL;
    struct eng_tensor key;
    memset(&key, 0, sizeof(key));
    key.name = name;
    return bsearch(&key, set->tensors, set->n_tensors, sizeof(key), cmp_tensor_name);
}

size_t eng_st_count(const struct eng_st_set *set)
{
    return set != NULL ? set->n_tensors : 0;
}

const struct eng_tensor *eng_st_at(const struct eng_st_set *set, size_t i)
{
    if (set == NULL || i >= set->n_tensors)
        return NULL;
    return &set->tensors[i];
}

void eng_st_close(struct eng_st_set *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->n_tensors; i++)
        free((char *)set->tensors[i].name);
    free(set->tensors);
    free(set->tensor_shard);
    for (size_t i = 0; i < set->n_shards; i++) {
        if (set->shards[i].map != NULL)
            munmap((void *)set->shards[i].map, set->shards[i].map_len);
        free(set->shards[i].file);
    }
    free(set->shards);
    free(set);
}
