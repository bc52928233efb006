/* Helpers shared by the Phi-3-vision golden tests (tests/golden/test_vision.c on the host
 * backends, tests/gpu/test_gpu_vision.c on CUDA): reading the vision-demo fixture's golden/
 * files and preprocessing its images with phiserve's own decode and HD transform. Test code
 * only; header-only. */
#ifndef PHISERVE_TESTS_VISION_GOLDEN_H
#define PHISERVE_TESTS_VISION_GOLDEN_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "image.h"
#include "model_config.h"

#include "../test_util.h"

/* The model directory (argv[1]); its golden/ holds the fixture's files. */
static const char *dir;

static inline char *vg_path(const char *name)
{
    static char p[4096];
    snprintf(p, sizeof p, "%s/golden/%s", dir, name);
    return p;
}

/* golden/name, which must hold exactly want bytes (caller frees). */
static inline void *vg_read_exact(const char *name, size_t want)
{
    size_t len = 0;
    char *d = tu_read_file(vg_path(name), &len);
    REQUIRE(d && len == want, "%s: %zu bytes, want %zu", name, d ? len : 0, want);
    return d;
}

static inline const cJSON *vg_get(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    REQUIRE(v, "golden.json: no '%s'", k);
    return v;
}

static inline int32_t *vg_ints(const cJSON *a, int32_t *n)
{
    *n = cJSON_GetArraySize(a);
    int32_t *v = tu_xmalloc((size_t)(*n ? *n : 1) * sizeof *v);
    for (int32_t i = 0; i < *n; i++)
        v[i] = (int32_t)cJSON_GetArrayItem(a, i)->valuedouble;
    return v;
}

/* max |a - b| over max |b|, both [n]; a NaN or infinity in a counts as infinite. */
static inline double vg_rel_err(const float *a, const float *b, size_t n)
{
    double err = 0, scale = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = isfinite(a[i]) ? fabs((double)a[i] - b[i]) : INFINITY;
        err = d > err ? d : err;
        scale = fabs(b[i]) > scale ? fabs(b[i]) : scale;
    }
    return err / scale;
}

/* The model's HD transform settings. */
static inline struct eng_hd_params vg_hd_params(const struct eng_model_config *c)
{
    struct eng_hd_params hp = {.crop = (int32_t)c->vision.image_size,
                               .num_crops = (int32_t)c->vision.num_crops};
    memcpy(hp.mean, c->vision.image_mean, sizeof hp.mean);
    memcpy(hp.std, c->vision.image_std, sizeof hp.std);
    return hp;
}

/* golden/file decoded into *img (caller frees with eng_image_free). */
static inline void vg_decode(const char *file, struct eng_image *img)
{
    size_t len = 0;
    uint8_t *bytes = (uint8_t *)tu_read_file(vg_path(file), &len);
    REQUIRE(bytes, "read %s", file);
    REQUIRE(eng_image_decode(bytes, len, img) == 0, "decode %s", file);
    free(bytes);
}

/* golden/golden.json parsed (caller frees with cJSON_Delete). */
static inline cJSON *vg_load_golden(void)
{
    size_t len = 0;
    char *text = tu_read_file(vg_path("golden.json"), &len);
    REQUIRE(text, "golden.json");
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    REQUIRE(root, "golden.json: not JSON");
    return root;
}

/* A case's images ("images": file names) as indices into names ([n_names], the image table's
 * files), at most 8. Returns their count. */
static inline int32_t vg_case_images(const cJSON *jc, const char *const *names, int n_names,
                                     int32_t img[8])
{
    const cJSON *ci = vg_get(jc, "images");
    int32_t n = cJSON_GetArraySize(ci);
    REQUIRE(n >= 1 && n <= 8, "a case with %d images", n);
    for (int32_t k = 0; k < n; k++) {
        img[k] = -1;
        for (int j = 0; j < n_names; j++)
            if (strcmp(names[j], cJSON_GetArrayItem(ci, k)->valuestring) == 0)
                img[k] = j;
        REQUIRE(img[k] >= 0, "unknown image %s", cJSON_GetArrayItem(ci, k)->valuestring);
    }
    return n;
}

/* One engine request of a test and what came back of it. */
#define VG_MAX_NEW 64
struct vg_run {
    struct eng_handle *h;
    int32_t tokens[VG_MAX_NEW];
    float lp[VG_MAX_NEW];          /* each token's raw logprob, when asked */
    int32_t n;
    bool logprobs;                 /* the request asked for logprobs */
    enum eng_finish_reason fin;
    struct eng_usage usage;
};

/* Waits for the request to end, collecting its tokens; then releases the handle. An error
 * event fails the test. */
static inline void vg_collect(struct vg_run *r)
{
    const struct eng_event *ev;
    for (;;) {
        int rc = eng_handle_next(r->h, &ev);
        if (rc < 0)
            break;
        if (rc == 0) {
            eng_handle_wait(r->h);
            continue;
        }
        for (int32_t i = 0; i < ev->n_tokens && r->n < VG_MAX_NEW; i++) {
            r->lp[r->n] = ev->tokens[i].logprob;
            r->tokens[r->n++] = ev->tokens[i].token;
        }
        if (ev->finish != ENG_FINISH_NONE)
            r->fin = ev->finish;
        CHECK(ev->finish != ENG_FINISH_ERROR, "request failed: %s", ev->error ? ev->error : "");
    }
    eng_handle_usage(r->h, &r->usage);
    eng_handle_release(r->h);
}

#endif
