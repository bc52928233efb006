/* Safetensors model files: mmap, validate every header field and offset before use, and look
 * tensors up by name. Handles one file or a sharded set with model.safetensors.index.json.
 * It does not know which tensors a model needs; engine/model.c checks that. */
#ifndef PHISERVE_ENGINE_SAFETENSORS_H
#define PHISERVE_ENGINE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "ops.h"

#define ENG_ST_MAX_DIMS 8

struct eng_tensor {
    const char *name;              /* valid while the set is open */
    enum kern_dtype dtype;         /* BF16, F16 or F32; other dtypes are refused at open */
    int n_dims;
    int64_t shape[ENG_ST_MAX_DIMS];
    int64_t n_elements;
    const void *data;              /* into the read-only mapping; valid while the set is open */
    size_t n_bytes;
};

struct eng_st_set; /* opaque: all shards of one model */

/* Validates one safetensors image in memory (the header and all offsets against len).
 * Used by the file loader and by the fuzz target. Returns 0, or -1 with a message naming the
 * check that failed in err. On success, *n_tensors receives the number of tensors. */
int eng_st_validate_buffer(const uint8_t *buf, size_t len, size_t *n_tensors, char *err, size_t errlen);

/* Opens dir/model.safetensors, or every shard named by dir/model.safetensors.index.json.
 * Every file is mmap'd read-only and fully validated (header length bounds, JSON, dtypes,
 * shape products without overflow, offsets inside the data region, no overlaps, complete
 * coverage); a tensor name present twice across shards is an error. Returns 0 and *out, or
 * -1 with a message in err. */
int eng_st_open_dir(const char *dir, struct eng_st_set **out, char *err, size_t errlen);

/* Returns the tensor called name, or NULL. */
const struct eng_tensor *eng_st_find(const struct eng_st_set *set, const char *name);

/* Number of tensors and indexed access (for listings and tests). */
size_t eng_st_count(const struct eng_st_set *set);
const struct eng_tensor *eng_st_at(const struct eng_st_set *set, size_t i);

/* Unmaps and frees; accepts NULL. */
void eng_st_close(struct eng_st_set *set);

#endif
