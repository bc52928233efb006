/* Tests engine/image.c against tests/fixtures/images (scripts/make_image_fixtures.py: PIL's
 * decoding, the HD canvas byte for byte, the normalised views of the HF processor), then bad
 * input: malformed and refused files, truncation at every length, garbage, size bombs (with
 * the allocations counted through --wrap), tiny and extreme sides, invalid parameters, and
 * allocation failure at every point. Usage: test_image <fixtures_dir>. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "image.h"

#include "../test_util.h"

/* The normalised views: crops are expected bit-exact (one float rounding per operation, as in
 * torch); the bicubic global view within float rounding of torch's summation. */
#define VIEW_TOL 1e-5
/* A view's sum may move by this much per value (well under VIEW_TOL per value). */
#define SUM_TOL_PER_VALUE 1e-6

/* ---------------------------------------------------------------- allocation hooks */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);

/* Counts and sizes of the allocations made by phiserve's own objects (libpng allocates through
 * image.c's callbacks, so it is counted too; libjpeg's internal pools are not). fail_at >= 0
 * makes allocation number fail_at (0-based, after arming) return NULL. Single-threaded. */
static struct {
    long count;
    size_t bytes;
    long fail_at;
} allocs = {0, 0, -1};

static bool alloc_should_fail(size_t n)
{
    long i = allocs.count++;
    allocs.bytes += n;
    return allocs.fail_at >= 0 && i == allocs.fail_at;
}

void *__wrap_malloc(size_t n)
{
    return alloc_should_fail(n) ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return alloc_should_fail(n * size) ? NULL : __real_calloc(n, size);
}

static void allocs_reset(long fail_at)
{
    allocs.count = 0;
    allocs.bytes = 0;
    allocs.fail_at = fail_at;
}

/* ---------------------------------------------------------------- helpers */

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
    uint64_t h = 0xCBF29CE484222325u;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001B3u;
    }
    return h;
}

static bool hash_equals(const uint8_t *p, size_t n, const char *hex)
{
    char got[17];
    snprintf(got, sizeof(got), "%016llx", (unsigned long long)fnv1a64(p, n));
    return hex != NULL && strcmp(got, hex) == 0;
}

static uint8_t *read_fixture(const char *dir, const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    uint8_t *data = (uint8_t *)tu_read_file(path, len);
    if (data == NULL) {
        FAIL("cannot read %s", path);
        *len = 0;
    }
    return data;
}

static int decode_file(const char *dir, const char *name, struct eng_image *img)
{
    size_t len = 0;
    uint8_t *data = read_fixture(dir, name, &len);
    if (data == NULL) {
        memset(img, 0, sizeof(*img));
        return ENG_IMAGE_ERR_DECODE;
    }
    int rc = eng_image_decode(data, len, img);
    free(data);
    return rc;
}

static const char *json_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double json_num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static struct eng_hd_params clip_params(int32_t crop, int32_t num_crops)
{
    return (struct eng_hd_params){crop, num_crops, {0.48145466f, 0.4578275f, 0.40821073f},
                                  {0.26862954f, 0.26130258f, 0.27577711f}};
}

/* ---------------------------------------------------------------- golden cases */

static int status_of(const char *name)
{
    if (strcmp(name, "ERR_FORMAT") == 0)
        return ENG_IMAGE_ERR_FORMAT;
    if (strcmp(name, "ERR_DECODE") == 0)
        return ENG_IMAGE_ERR_DECODE;
    if (strcmp(name, "ERR_SIZE") == 0)
        return ENG_IMAGE_ERR_SIZE;
    return 1;
}

/* Decoded pixels against PIL's convert('RGB'). JPEG: also the raw bytes, reporting any
 * difference (PIL bundles a newer libjpeg-turbo than the system's). */
static void check_decode(const char *dir, const cJSON *c, const struct eng_image *img,
                         const char *name)
{
    CHECK(img->width == (int32_t)json_num(c, "width") && img->height == (int32_t)json_num(c, "height"),
          "%s: decoded %dx%d", name, img->width, img->height);
    size_t n = (size_t)img->width * (size_t)img->height * 3;
    const char *rgb_file = json_str(c, "rgb_file");
    if (rgb_file != NULL) {
        size_t len = 0;
        uint8_t *want = read_fixture(dir, rgb_file, &len);
        if (want != NULL && len == n) {
            int max_diff = 0;
            size_t n_diff = 0;
            for (size_t i = 0; i < n; i++) {
                int d = abs((int)want[i] - (int)img->rgb[i]);
                n_diff += d != 0;
                max_diff = d > max_diff ? d : max_diff;
            }
            CHECK(n_diff == 0, "%s: %zu of %zu JPEG samples differ from PIL's (max %d)", name,
                  n_diff, n, max_diff);
        } else {
            CHECK(want != NULL && len == n, "%s: %s has %zu bytes, want %zu", name, rgb_file, len, n);
        }
        free(want);
    }
    CHECK(hash_equals(img->rgb, n, json_str(c, "rgb_fnv1a64")), "%s: pixels differ from PIL's", name);
}

static void check_canvas(const char *dir, const cJSON *hd, const struct eng_image *canvas,
                         const char *label)
{
    CHECK(canvas->width == (int32_t)json_num(hd, "w_pad") &&
              canvas->height == (int32_t)json_num(hd, "h_pad"),
          "%s: canvas %dx%d", label, canvas->width, canvas->height);
    size_t n = (size_t)canvas->width * (size_t)canvas->height * 3;
    const char *file = json_str(hd, "canvas");
    if (file != NULL) {
        struct eng_image want;
        int rc = decode_file(dir, file, &want);
        CHECK(rc == ENG_IMAGE_OK, "%s: %s: %s", label, file, eng_image_strerror(rc));
        if (rc == ENG_IMAGE_OK && want.width == canvas->width && want.height == canvas->height) {
            size_t n_diff = 0, first = n;
            for (size_t i = 0; i < n; i++)
                if (want.rgb[i] != canvas->rgb[i]) {
                    n_diff++;
                    first = first < i ? first : i;
                }
            CHECK(n_diff == 0,
                  "%s: %zu canvas bytes differ from PIL's; first at pixel (%zu, %zu) channel %zu: "
                  "%d, want %d",
                  label, n_diff, first / 3 % (size_t)canvas->width,
                  first / 3 / (size_t)canvas->width, first % 3, first < n ? canvas->rgb[first] : 0,
                  first < n ? want.rgb[first] : 0);
        }
        eng_image_free(&want);
    }
    CHECK(hash_equals(canvas->rgb, n, json_str(hd, "canvas_fnv1a64")),
          "%s: canvas differs from PIL's", label);
}

/* Worst differences seen, for the report. */
static double worst_global = 0.0, worst_crop = 0.0;

static void check_views(const char *dir, const cJSON *hd, const struct eng_hd_image *v,
                        int32_t crop, const char *label)
{
    CHECK(v->h_crop == (int32_t)json_num(hd, "h_crop") && v->w_crop == (int32_t)json_num(hd, "w_crop") &&
              v->n_views == (int32_t)json_num(hd, "n_views"),
          "%s: grid %dx%d, %d views", label, v->h_crop, v->w_crop, v->n_views);
    size_t per_view = (size_t)3 * (size_t)crop * (size_t)crop;
    size_t n = per_view * (size_t)v->n_views;
    if (v->n_views != (int32_t)json_num(hd, "n_views"))
        return;
    const char *file = json_str(hd, "views");
    if (file != NULL) {
        size_t len = 0;
        uint8_t *raw = read_fixture(dir, file, &len);
        CHECK(raw == NULL || len == n * sizeof(float), "%s: %s has %zu bytes", label, file, len);
        if (raw != NULL && len == n * sizeof(float)) {
            double max_g = 0.0, max_c = 0.0;
            for (size_t i = 0; i < n; i++) {
                float want;
                memcpy(&want, raw + i * sizeof(float), sizeof(float)); /* little-endian hosts */
                double d = fabs((double)want - (double)v->pixels[i]);
                if (!(d <= VIEW_TOL)) {
                    FAIL("%s: view %zu value %zu: %.9g, want %.9g", label, i / per_view,
                         i % per_view, (double)v->pixels[i], (double)want);
                    break;
                }
                if (i < per_view)
                    max_g = d > max_g ? d : max_g;
                else
                    max_c = d > max_c ? d : max_c;
            }
            worst_global = max_g > worst_global ? max_g : worst_global;
            worst_crop = max_c > worst_crop ? max_c : worst_crop;
        }
        free(raw);
    }
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(hd, "samples"))
    {
        size_t i = (size_t)cJSON_GetArrayItem(s, 0)->valuedouble;
        double want = cJSON_GetArrayItem(s, 1)->valuedouble;
        CHECK(i < n && fabs(want - (double)v->pixels[i]) <= VIEW_TOL, "%s: sample %zu: %.9g, want %.9g",
              label, i, i < n ? (double)v->pixels[i] : NAN, want);
    }
    const cJSON *sums = cJSON_GetObjectItemCaseSensitive(hd, "view_sums");
    const cJSON *abs_sums = cJSON_GetObjectItemCaseSensitive(hd, "view_abs_sums");
    CHECK(cJSON_GetArraySize(sums) == v->n_views && cJSON_GetArraySize(abs_sums) == v->n_views,
          "%s: sums", label);
    for (int32_t k = 0; k < v->n_views && k < cJSON_GetArraySize(sums); k++) {
        double sum = 0.0, abs_sum = 0.0;
        for (size_t i = 0; i < per_view; i++) {
            double x = v->pixels[(size_t)k * per_view + i];
            sum += x;
            abs_sum += fabs(x);
        }
        double tol = SUM_TOL_PER_VALUE * (double)per_view;
        double ws = cJSON_GetArrayItem(sums, k)->valuedouble;
        double wa = cJSON_GetArrayItem(abs_sums, k)->valuedouble;
        CHECK(fabs(sum - ws) <= tol && fabs(abs_sum - wa) <= tol,
              "%s: view %d sum %.6f |sum| %.6f, want %.6f %.6f", label, k, sum, abs_sum, ws, wa);
    }
}

static void test_golden(const char *dir)
{
    size_t len = 0;
    char *text = (char *)read_fixture(dir, "index.json", &len);
    cJSON *index = text != NULL ? cJSON_Parse(text) : NULL;
    free(text);
    if (index == NULL) {
        FAIL("index.json missing or not JSON");
        return;
    }
    const cJSON *mean = cJSON_GetObjectItemCaseSensitive(index, "mean");
    const cJSON *std = cJSON_GetObjectItemCaseSensitive(index, "std");
    int n_cases = 0, n_hd = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(index, "cases"))
    {
        const char *name = json_str(c, "name");
        struct eng_image img;
        int rc = decode_file(dir, json_str(c, "file"), &img);
        CHECK(rc == ENG_IMAGE_OK, "%s: %s", name, eng_image_strerror(rc));
        if (rc != ENG_IMAGE_OK)
            continue;
        n_cases++;
        check_decode(dir, c, &img, name);
        const cJSON *hd;
        cJSON_ArrayForEach(hd, cJSON_GetObjectItemCaseSensitive(c, "hd"))
        {
            struct eng_hd_params p = {(int32_t)json_num(hd, "crop"), (int32_t)json_num(hd, "num_crops"),
                                      {0}, {0}};
            for (int k = 0; k < 3; k++) {
                p.mean[k] = (float)cJSON_GetArrayItem(mean, k)->valuedouble;
                p.std[k] = (float)cJSON_GetArrayItem(std, k)->valuedouble;
            }
            char label[96];
            snprintf(label, sizeof(label), "%s crop %d x%d", name, p.crop, p.num_crops);
            struct eng_image canvas;
            rc = eng_image_hd_canvas(&img, &p, &canvas);
            CHECK(rc == ENG_IMAGE_OK, "%s: canvas: %s", label, eng_image_strerror(rc));
            if (rc == ENG_IMAGE_OK)
                check_canvas(dir, hd, &canvas, label);
            eng_image_free(&canvas);
            struct eng_hd_image views;
            rc = eng_image_hd_transform(&img, &p, &views);
            CHECK(rc == ENG_IMAGE_OK, "%s: transform: %s", label, eng_image_strerror(rc));
            if (rc == ENG_IMAGE_OK)
                check_views(dir, hd, &views, p.crop, label);
            eng_hd_image_free(&views);
            n_hd++;
        }
        eng_image_free(&img);
    }
    CHECK(n_cases >= 20 && n_hd >= 23, "only %d cases / %d transforms in index.json", n_cases, n_hd);
    printf("golden: %d images, %d transforms; worst |diff| global view %.3g, crops %.3g\n", n_cases,
           n_hd, worst_global, worst_crop);

    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(index, "bad"))
    {
        const char *file = json_str(c, "file");
        int want = status_of(json_str(c, "status"));
        struct eng_image img;
        allocs_reset(-1);
        int rc = decode_file(dir, file, &img);
        CHECK(rc == want, "%s: %d (%s), want %d", file, rc, eng_image_strerror(rc), want);
        CHECK(img.rgb == NULL && img.width == 0 && img.height == 0, "%s: output not zeroed", file);
        eng_image_free(&img);
    }
    cJSON_Delete(index);
}

/* ---------------------------------------------------------------- bad input */

/* Every proper prefix of a file decodes to an error, never a crash; for PNG every prefix that
 * ends before the last image data, for JPEG every prefix up to the entropy data's last bytes
 * (libjpeg may not need the final padding byte). */
static void test_truncation(const char *dir, const char *name, size_t must_fail_below)
{
    size_t len = 0;
    uint8_t *data = read_fixture(dir, name, &len);
    if (data == NULL)
        return;
    size_t limit = must_fail_below < len ? len - must_fail_below : 0;
    int failed_ok = 0;
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = tu_xmalloc(n); /* exact size: ASan sees any over-read */
        memcpy(copy, data, n);
        struct eng_image img;
        int rc = eng_image_decode(copy, n, &img);
        if (n < limit) {
            CHECK(rc == ENG_IMAGE_ERR_DECODE || (n < 8 && rc == ENG_IMAGE_ERR_FORMAT),
                  "%s cut to %zu of %zu bytes: %d", name, n, len, rc);
        }
        failed_ok += rc != ENG_IMAGE_OK;
        eng_image_free(&img);
        free(copy);
    }
    CHECK((size_t)failed_ok >= limit, "%s: only %d prefixes refused", name, failed_ok);
    free(data);
}

static void test_garbage(void)
{
    uint64_t rng = 0x1234567887654321u;
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    for (int round = 0; round < 300; round++) {
        size_t n = (size_t)(tu_xorshift64(&rng) % 200);
        uint8_t *buf = tu_xmalloc(n + 8);
        for (size_t i = 0; i < n + 8; i++)
            buf[i] = (uint8_t)tu_xorshift64(&rng);
        int kind = round % 3; /* plain garbage, garbage after the PNG magic, after JPEG SOI */
        if (kind == 1)
            memcpy(buf, png_magic, 8);
        if (kind == 2)
            memcpy(buf, "\xFF\xD8\xFF", 3);
        struct eng_image img;
        int rc = eng_image_decode(buf, n + 8, &img);
        if (kind == 0 && !(buf[0] == 0xFF || buf[0] == 0x89))
            CHECK(rc == ENG_IMAGE_ERR_FORMAT, "garbage round %d: %d", round, rc);
        else
            CHECK(rc != ENG_IMAGE_OK, "garbage round %d (kind %d) decoded", round, kind);
        eng_image_free(&img);
        free(buf);
    }
    struct eng_image img;
    CHECK(eng_image_decode(NULL, 0, &img) == ENG_IMAGE_ERR_FORMAT, "NULL data");
    CHECK(eng_image_decode((const uint8_t *)"", 0, &img) == ENG_IMAGE_ERR_FORMAT, "empty data");
    CHECK(eng_image_decode((const uint8_t *)"GIF89a\x01\x00\x01\x00", 10, &img) == ENG_IMAGE_ERR_FORMAT,
          "GIF header");
    CHECK(eng_image_decode((const uint8_t *)"RIFF\x10\x00\x00\x00WEBPVP8 ", 16, &img) ==
              ENG_IMAGE_ERR_FORMAT,
          "WebP header");
    CHECK(eng_image_decode((const uint8_t *)"BM\x36\x00", 4, &img) == ENG_IMAGE_ERR_FORMAT, "BMP");
}

/* Size bombs are refused from the header with next to no allocation: a PNG claiming 20000x20000
 * (from the fixtures) and a JPEG whose SOF0 is patched to 20000x20000 or to height 0. */
static void test_bombs(const char *dir)
{
    struct eng_image img;
    size_t len = 0;
    uint8_t *png = read_fixture(dir, "bad/bomb_20000.png", &len);
    if (png != NULL) {
        allocs_reset(-1);
        int rc = eng_image_decode(png, len, &img);
        CHECK(rc == ENG_IMAGE_ERR_SIZE && allocs.count == 0, "PNG bomb: %d after %ld allocation(s)",
              rc, allocs.count);
        free(png);
    }
    uint8_t *jpg = read_fixture(dir, "jpeg.jpg", &len);
    if (jpg == NULL)
        return;
    size_t sof = 0;
    for (size_t i = 2; i + 9 < len && sof == 0; i++)
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0)
            sof = i;
    CHECK(sof != 0, "no SOF0 in jpeg.jpg");
    if (sof != 0) {
        /* FF C0, length (2), precision (1), height (2), width (2). */
        jpg[sof + 5] = 20000 >> 8;
        jpg[sof + 6] = 20000 & 0xFF;
        jpg[sof + 7] = 20000 >> 8;
        jpg[sof + 8] = 20000 & 0xFF;
        allocs_reset(-1);
        int rc = eng_image_decode(jpg, len, &img);
        CHECK(rc == ENG_IMAGE_ERR_SIZE && allocs.bytes < 64 * 1024,
              "JPEG bomb: %d after %zu bytes allocated", rc, allocs.bytes);
        /* A zero height (a DNL marker would be needed) is refused by libjpeg's header check. */
        jpg[sof + 5] = 0;
        jpg[sof + 6] = 0;
        rc = eng_image_decode(jpg, len, &img);
        CHECK(rc == ENG_IMAGE_ERR_DECODE || rc == ENG_IMAGE_ERR_SIZE, "JPEG height 0: %d", rc);
        CHECK(img.rgb == NULL, "JPEG height 0: pixels");
    }
    free(jpg);
}

/* A progressive JPEG with its last scan repeated: libjpeg only warns about the bogus
 * progression, so 40 copies still decode, while 150 copies pass the scan limit and are refused
 * (bounded time for scan-count bombs). */
static void test_scan_limit(const char *dir)
{
    size_t len = 0;
    uint8_t *jpg = read_fixture(dir, "jpeg_prog.jpg", &len);
    if (jpg == NULL)
        return;
    size_t last_sos = 0;
    for (size_t i = 2; i + 1 < len; i++)
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xDA)
            last_sos = i;
    CHECK(last_sos != 0 && len >= 2 && jpg[len - 2] == 0xFF && jpg[len - 1] == 0xD9,
          "jpeg_prog.jpg: no SOS or no EOI at the end");
    if (last_sos == 0) {
        free(jpg);
        return;
    }
    size_t scan = len - 2 - last_sos; /* the SOS segment and its entropy-coded data */
    static const int copies[] = {40, 150};
    for (size_t t = 0; t < 2; t++) {
        size_t n = len + (size_t)copies[t] * scan;
        uint8_t *buf = tu_xmalloc(n);
        memcpy(buf, jpg, len - 2);
        for (int k = 0; k < copies[t]; k++)
            memcpy(buf + len - 2 + (size_t)k * scan, jpg + last_sos, scan);
        memcpy(buf + n - 2, "\xFF\xD9", 2);
        struct eng_image img;
        int rc = eng_image_decode(buf, n, &img);
        CHECK(rc == (copies[t] < 100 ? ENG_IMAGE_OK : ENG_IMAGE_ERR_DECODE),
              "%d extra scans: %d", copies[t], rc);
        eng_image_free(&img);
        free(buf);
    }
    free(jpg);
}

/* ---------------------------------------------------------------- tiny and extreme sides */

static bool all_finite(const struct eng_hd_image *v, int32_t crop)
{
    size_t n = (size_t)v->n_views * 3 * (size_t)crop * (size_t)crop;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v->pixels[i]))
            return false;
    return true;
}

/* The whole transform on synthetic images of awkward sizes and many parameter sets: a valid
 * grid every time, padding white, values finite. */
static void test_shapes(void)
{
    static const int32_t sides[][2] = {{1, 1}, {1, 2}, {2, 1}, {1, 4096}, {4096, 1}, {2, 4096},
                                       {4096, 3}, {7, 5}, {336, 336}, {337, 335}, {1000, 17},
                                       {17, 1000}, {4096, 4096}};
    static const int32_t params[][2] = {{336, 4}, {336, 16}, {336, 1}, {56, 4}, {14, 64}, {1, 1},
                                        {1, 7}, {4096, 1}};
    uint64_t rng = 7;
    for (size_t s = 0; s < sizeof(sides) / sizeof(sides[0]); s++) {
        struct eng_image img = {sides[s][0], sides[s][1], NULL};
        size_t n = (size_t)img.width * (size_t)img.height * 3;
        img.rgb = tu_xmalloc(n);
        for (size_t i = 0; i < n; i++)
            img.rgb[i] = (uint8_t)(tu_xorshift64(&rng) >> 56);
        for (size_t q = 0; q < sizeof(params) / sizeof(params[0]); q++) {
            struct eng_hd_params p = clip_params(params[q][0], params[q][1]);
            /* Keep the big ones cheap: canvases up to 16 views of 336 or one of 4096. */
            if ((int64_t)img.width * img.height > 1 << 20 && p.crop != 336)
                continue;
            struct eng_image canvas;
            int rc = eng_image_hd_canvas(&img, &p, &canvas);
            CHECK(rc == ENG_IMAGE_OK, "%dx%d crop %d x%d: %s", img.width, img.height, p.crop,
                  p.num_crops, eng_image_strerror(rc));
            if (rc != ENG_IMAGE_OK)
                continue;
            int32_t hc = canvas.height / p.crop, wc = canvas.width / p.crop;
            CHECK(canvas.width % p.crop == 0 && canvas.height % p.crop == 0 && hc >= 1 && wc >= 1 &&
                      hc * wc <= p.num_crops,
                  "%dx%d crop %d x%d: canvas %dx%d", img.width, img.height, p.crop, p.num_crops,
                  canvas.width, canvas.height);
            /* The resized image spans the long side entirely: the corners of the short side's
             * padding are white unless there is no padding. */
            eng_image_free(&canvas);
            if ((int64_t)hc * wc * p.crop * p.crop > 16 * 336 * 336)
                continue;
            struct eng_hd_image v;
            rc = eng_image_hd_transform(&img, &p, &v);
            CHECK(rc == ENG_IMAGE_OK && v.n_views == 1 + hc * wc && v.h_crop == hc && v.w_crop == wc,
                  "%dx%d crop %d x%d: transform %d", img.width, img.height, p.crop, p.num_crops, rc);
            if (rc == ENG_IMAGE_OK)
                CHECK(all_finite(&v, p.crop), "%dx%d crop %d: non-finite values", img.width,
                      img.height, p.crop);
            eng_hd_image_free(&v);
        }
        free(img.rgb);
    }

    /* 1x4096 with 336 x 4: new_h would be int(1344 / 4096) = 0; clamped to 1 row, centred in
     * 336 of white: column 167 holds the image (336 - 1 = 335, top = 167), the rest is white. */
    struct eng_image thin = {1, 4096, tu_xmalloc(4096 * 3)};
    memset(thin.rgb, 0, 4096 * 3);
    struct eng_hd_params p = clip_params(336, 4);
    struct eng_image canvas;
    int rc = eng_image_hd_canvas(&thin, &p, &canvas);
    CHECK(rc == ENG_IMAGE_OK && canvas.width == 336 && canvas.height == 1344, "1x4096: %d %dx%d", rc,
          canvas.width, canvas.height);
    if (rc == ENG_IMAGE_OK) {
        bool ok = true;
        for (int32_t y = 0; y < canvas.height; y++)
            for (int32_t x = 0; x < canvas.width; x++)
                for (int ch = 0; ch < 3; ch++)
                    ok &= canvas.rgb[((size_t)y * 336 + (size_t)x) * 3 + (size_t)ch] == (x == 167 ? 0 : 255);
        CHECK(ok, "1x4096: black column 167 on white expected");
    }
    eng_image_free(&canvas);
    free(thin.rgb);
}

static void test_params(void)
{
    uint8_t px[12] = {0};
    struct eng_image img = {2, 2, px};
    struct eng_hd_params good = clip_params(336, 4);
    struct eng_hd_params bad[] = {good, good, good, good, good, good, good};
    bad[0].crop = 0;
    bad[1].crop = 4097;
    bad[2].num_crops = 0;
    bad[3].num_crops = 65;
    bad[4].std[1] = 0.0f;
    bad[5].mean[2] = NAN;
    bad[6].std[0] = INFINITY;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct eng_hd_image v;
        struct eng_image canvas;
        CHECK(eng_image_hd_transform(&img, &bad[i], &v) == ENG_IMAGE_ERR_PARAMS && v.pixels == NULL,
              "bad params %zu accepted", i);
        CHECK(eng_image_hd_canvas(&img, &bad[i], &canvas) == ENG_IMAGE_ERR_PARAMS && canvas.rgb == NULL,
              "bad params %zu accepted (canvas)", i);
    }
    struct eng_image bad_imgs[] = {{0, 2, px}, {2, 0, px}, {2, 2, NULL}, {-1, 2, px},
                                   {4097, 1, px}, {1, 4097, px}};
    for (size_t i = 0; i < sizeof(bad_imgs) / sizeof(bad_imgs[0]); i++) {
        struct eng_hd_image v;
        CHECK(eng_image_hd_transform(&bad_imgs[i], &good, &v) == ENG_IMAGE_ERR_PARAMS,
              "bad image %zu accepted", i);
    }
    struct eng_hd_image v;
    CHECK(eng_image_hd_transform(NULL, &good, &v) == ENG_IMAGE_ERR_PARAMS, "NULL image");
    CHECK(eng_image_hd_transform(&img, NULL, &v) == ENG_IMAGE_ERR_PARAMS, "NULL params");
    eng_image_free(NULL);
    eng_hd_image_free(NULL);
}

/* Fixed messages: non-empty, no pointer-like hex, no format directives, distinct per status. */
static void test_strerror(void)
{
    static const int codes[] = {ENG_IMAGE_OK, ENG_IMAGE_ERR_FORMAT, ENG_IMAGE_ERR_DECODE,
                                ENG_IMAGE_ERR_SIZE, ENG_IMAGE_ERR_NOMEM, ENG_IMAGE_ERR_PARAMS, -99, 42};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const char *m = eng_image_strerror(codes[i]);
        CHECK(m != NULL && m[0] != '\0' && strstr(m, "0x") == NULL && strchr(m, '%') == NULL,
              "message for %d", codes[i]);
        for (size_t j = 0; j < i && i < 6; j++) /* the last two are both "unknown" */
            CHECK(strcmp(m, eng_image_strerror(codes[j])) != 0, "duplicate message %d", codes[i]);
    }
}

/* ---------------------------------------------------------------- allocation failure */

/* Fails allocation 0, 1, 2, ... of a decode (or transform) until one run needs no more; each
 * run must end in OK or ERR_NOMEM with outputs zeroed on failure (ASan reports any leak). */
static void test_alloc_failures(const char *dir, const char *name)
{
    size_t len = 0;
    uint8_t *data = read_fixture(dir, name, &len);
    if (data == NULL)
        return;
    int nomem = 0;
    for (long k = 0; k < 10000; k++) {
        struct eng_image img;
        allocs_reset(k);
        int rc = eng_image_decode(data, len, &img);
        bool reached = allocs.count > k;
        allocs_reset(-1);
        CHECK(rc == ENG_IMAGE_OK || rc == ENG_IMAGE_ERR_NOMEM, "%s: allocation %ld failed: %d", name, k,
              rc);
        CHECK(rc == ENG_IMAGE_OK || img.rgb == NULL, "%s: pixels left after failure", name);
        nomem += rc == ENG_IMAGE_ERR_NOMEM;
        if (rc == ENG_IMAGE_OK) {
            struct eng_hd_params p = clip_params(28, 4);
            for (long t = 0; t < 10000; t++) {
                struct eng_hd_image v;
                allocs_reset(t);
                int r2 = eng_image_hd_transform(&img, &p, &v);
                bool r2_reached = allocs.count > t;
                allocs_reset(-1);
                CHECK(r2 == (r2_reached ? ENG_IMAGE_ERR_NOMEM : ENG_IMAGE_OK), "%s: transform, allocation %ld: %d",
                      name, t, r2);
                CHECK(r2 == ENG_IMAGE_OK || v.pixels == NULL, "%s: views left after failure", name);
                eng_hd_image_free(&v);
                if (!r2_reached)
                    break;
            }
        }
        eng_image_free(&img);
        if (!reached)
            break;
    }
    CHECK(nomem > 0, "%s: no allocation failure was reported", name);
    free(data);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <fixtures_dir>\n", argv[0]);
        return 2;
    }
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/images", argv[1]);
    test_golden(dir);
    test_truncation(dir, "rgb.png", 12);       /* all but IEND */
    test_truncation(dir, "interlaced.png", 12);
    test_truncation(dir, "palette4.png", 12);
    test_truncation(dir, "jpeg.jpg", 4);       /* EOI and the last padding byte may go */
    test_truncation(dir, "jpeg_prog.jpg", 4);
    test_garbage();
    test_bombs(dir);
    test_scan_limit(dir);
    test_shapes();
    test_params();
    test_strerror();
    test_alloc_failures(dir, "interlaced.png");
    test_alloc_failures(dir, "palette.png");
    test_alloc_failures(dir, "jpeg_prog.jpg");
    return tu_finish("test_image");
}
