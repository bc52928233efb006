/* Readers of the tokenizer golden corpora (scripts/make_tokenizer_goldens.py: texts as hex,
 * ids as JSON arrays) and the id-list helpers the tokenizer tests share. Test code only. */
#ifndef PHISERVE_TESTS_ENGINE_TOK_CORPUS_H
#define PHISERVE_TESTS_ENGINE_TOK_CORPUS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* Hex string -> malloc'd bytes (NUL-terminated for convenience); NULL on malformed hex. */
static inline char *unhex(const cJSON *v, size_t *len)
{
    if (!cJSON_IsString(v))
        return NULL;
    size_t n = strlen(v->valuestring);
    if (n % 2 != 0)
        return NULL;
    char *out = malloc(n / 2 + 1);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n / 2; ++i) {
        unsigned b;
        if (sscanf(v->valuestring + 2 * i, "%2x", &b) != 1) {
            free(out);
            return NULL;
        }
        out[i] = (char)b;
    }
    out[n / 2] = '\0';
    *len = n / 2;
    return out;
}

/* A JSON array of ids -> malloc'd int32 array (one spare slot); NULL when out of memory. */
static inline int32_t *json_ids(const cJSON *arr, size_t *n)
{
    *n = (size_t)cJSON_GetArraySize(arr);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    if (ids == NULL)
        return NULL;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) ids[i++] = (int32_t)e->valuedouble;
    return ids;
}

/* Up to 40 ids of a failing case, to stderr. */
static inline void print_ids(const char *what, const int32_t *ids, size_t n)
{
    fprintf(stderr, "  %s [", what);
    for (size_t i = 0; i < n && i < 40; ++i)
        fprintf(stderr, "%s%d", i ? ", " : "", (int)ids[i]);
    fprintf(stderr, "%s] (%zu ids)\n", n > 40 ? ", ..." : "", n);
}

static inline bool same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

#endif
