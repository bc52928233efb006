/* Fuzz target for engine/image.c: the input is an image file given to eng_image_decode; when it
 * decodes and is small, the HD transform runs on it with small views, and the results must be
 * consistent (sizes within the limits, a valid crop grid, finite values). Not a test of exact
 * pixels (tests/engine/test_image.c compares against PIL and torch). The last input byte also
 * picks num_crops, so the same corpus walks several grids. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "image.h"

#include "../test_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Transforms only images up to this many pixels, so that each input stays fast. */
#define FUZZ_MAX_TRANSFORM_PIXELS (512 * 512)
#define FUZZ_CROP 14

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct eng_image img;
    int rc = eng_image_decode(data, size, &img);
    REQUIRE(eng_image_strerror(rc)[0] != '\0', "empty message");
    if (rc != ENG_IMAGE_OK) {
        REQUIRE(rc == ENG_IMAGE_ERR_FORMAT || rc == ENG_IMAGE_ERR_DECODE || rc == ENG_IMAGE_ERR_SIZE ||
                    rc == ENG_IMAGE_ERR_NOMEM,
                "unexpected status %d", rc);
        REQUIRE(img.rgb == NULL && img.width == 0 && img.height == 0, "output not zeroed");
        return 0;
    }
    REQUIRE(img.rgb != NULL && img.width >= 1 && img.height >= 1 && img.width <= ENG_IMAGE_MAX_SIDE &&
                img.height <= ENG_IMAGE_MAX_SIDE &&
                (int64_t)img.width * img.height <= ENG_IMAGE_MAX_PIXELS,
            "decoded %dx%d", img.width, img.height);
    /* Touch every pixel so that ASan sees a short buffer. */
    unsigned sum = 0;
    for (size_t i = 0; i < (size_t)img.width * (size_t)img.height * 3; i++)
        sum += img.rgb[i];
    (void)sum;
    if ((int64_t)img.width * img.height <= FUZZ_MAX_TRANSFORM_PIXELS) {
        struct eng_hd_params p = {FUZZ_CROP, 1 + data[size - 1] % 16, {0.5f, 0.5f, 0.5f},
                                  {0.25f, 0.25f, 0.25f}};
        struct eng_hd_image hd;
        rc = eng_image_hd_transform(&img, &p, &hd);
        REQUIRE(rc == ENG_IMAGE_OK, "transform: %d", rc);
        REQUIRE(hd.h_crop >= 1 && hd.w_crop >= 1 && hd.h_crop * hd.w_crop <= p.num_crops &&
                    hd.n_views == 1 + hd.h_crop * hd.w_crop,
                "grid %dx%d, %d views", hd.h_crop, hd.w_crop, hd.n_views);
        size_t n = (size_t)hd.n_views * 3 * FUZZ_CROP * FUZZ_CROP;
        for (size_t i = 0; i < n; i++)
            REQUIRE(isfinite(hd.pixels[i]) && fabsf(hd.pixels[i]) <= 4.0f, "value %zu: %g", i,
                    (double)hd.pixels[i]);
        eng_hd_image_free(&hd);
    }
    eng_image_free(&img);
    return 0;
}
