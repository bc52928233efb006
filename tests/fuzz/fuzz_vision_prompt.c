/* Fuzz target for server/vision_input.c's prompt rule (srv_images_tokenize): arbitrary prompt
 * text with <|image_N|> tags, against 0 to 3 images of assorted grids. Checks the invariants:
 * on success the ids are in the vocabulary or the placeholder, every image has exactly one
 * span of its token count, in prompt order, all inside the prompt; on failure nothing is
 * returned. The tokenizer comes from $PHISERVE_TOKENIZER_DIR. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_config.h"
#include "fuzz_tokenizer_env.h"
#include "tokenizer.h"
#include "vision_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_vision_prompt: invariant broken: %s\n", what);
    abort();
}

static const struct eng_tokenizer *tokenizer(void)
{
    return fuzz_tokenizer_from_env("fuzz_vision_prompt");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* Phi-3.5-vision's tower: 144 tokens per crop, 12 rows. */
    struct eng_vision_config vc = {.grid = 24, .tokens_per_crop = 144, .num_crops = 16};
    static const int32_t grids[3][2] = {{1, 1}, {2, 3}, {4, 4}};
    static float pixel;
    struct eng_hd_image hd[3];
    struct srv_images im = {.hd = hd, .n = data[0] % 4};
    for (size_t k = 0; k < 3; k++)
        hd[k] = (struct eng_hd_image){.h_crop = grids[k][0], .w_crop = grids[k][1],
                                      .n_views = 1 + grids[k][0] * grids[k][1], .pixels = &pixel};
    size_t max_ids = 256 + (size_t)(data[0] >> 2) * 64;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    struct srv_image_error e = {0};
    const char *text = (const char *)data + 1;
    int rc = srv_images_tokenize(tokenizer(), &vc, text, size - 1, max_ids, &im, &ids, &n_ids, &e);
    if (rc != 0) {
        if (ids != NULL || n_ids != 0 || e.message[0] == 0)
            fail("a failure returned ids or no message");
    } else {
        if (n_ids > max_ids || im.n_in != (int32_t)im.n)
            fail("too many ids, or not one span per image");
        int64_t V = eng_tokenizer_get_info(tokenizer())->n_vocab;
        for (size_t i = 0; i < n_ids; i++)
            if (ids[i] < 0 || ids[i] >= V)
                fail("an id outside the vocabulary");
        int32_t end = 0;
        bool seen[3] = {false, false, false};
        for (int32_t k = 0; k < im.n_in; k++) {
            const struct eng_image_input *in = &im.in[k];
            int64_t span = eng_vision_image_tokens(&vc, in->h_crop, in->w_crop);
            if (in->pos < end || in->pos + span > (int64_t)n_ids || in->views != &pixel)
                fail("a span overlaps, leaves the prompt or points elsewhere");
            for (size_t j = 0; j < im.n; j++)
                if (in->h_crop == hd[j].h_crop && in->w_crop == hd[j].w_crop)
                    seen[j] = true;
            for (int64_t p = in->pos; p < in->pos + span; p++)
                if (ids[p] != 0)
                    fail("a span position is not the placeholder");
            end = in->pos + (int32_t)span;
        }
        for (size_t j = 0; j < im.n; j++)
            if (!seen[j])
                fail("an image without its span");
    }
    free(ids);
    free(im.in);
    return 0;
}
