/* Image inputs of a chat request for a Phi-3-vision model: the image_url parts decoded and
 * run through the HD transform, and the rendered prompt tokenized around its <|image_N|> tags
 * into the engine's image spans. Not request parsing (request.c) or the model (engine). */
#ifndef PHISERVE_SERVER_VISION_INPUT_H
#define PHISERVE_SERVER_VISION_INPUT_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "image.h"
#include "request.h"
#include "tokenizer.h"

/* Bytes an image may have once its data: URL is decoded (reference/openai-api.md). */
#define SRV_MAX_IMAGE_BYTES (20u << 20)

/* The images of a request, numbered 1.. in the order the chat template numbers them (every
 * image_url part, message by message). */
struct srv_images {
    struct eng_hd_image *hd;       /* [n], owned */
    size_t n;
    struct eng_image_input *in;    /* [n_in] one per tag in the prompt (srv_images_tokenize) */
    int32_t n_in;
};

/* A failure with the error to answer: code a negative SRV_ERR_*, param the JSON path. */
struct srv_image_error {
    int code;
    char param[96];
    char message[256];
};

/* Decodes one image file's bytes (PNG or JPEG), runs the model's HD transform over it and
 * appends it to im as image im->n + 1. param names it in errors. Returns 0, or -1 with *e
 * filled (im keeps the images before it). */
int srv_images_add_bytes(struct srv_images *im, const struct eng_vision_config *vc,
                         const uint8_t *bytes, size_t len, const char *param,
                         struct srv_image_error *e);

/* The same from a data: URL of url_len bytes (the only image URLs this server takes). */
int srv_images_add(struct srv_images *im, const struct eng_vision_config *vc, const char *url,
                   size_t url_len, const char *param, struct srv_image_error *e);

/* Decodes and transforms every image_url part of q (data: URLs only) with the model's
 * preprocessor settings. Returns 0, or -1 with *e filled (the images decoded so far stay in
 * out: free them with srv_images_free). */
int srv_images_load(const struct srv_chat_request *q, const struct eng_vision_config *vc,
                    struct srv_images *out, struct srv_image_error *e);

/* Tokenizes the rendered prompt text as the Phi-3-vision processor does: split at the tags
 * <|image_N|>, each text piece encoded on its own with the tokenizer's special tokens (BOS
 * when it adds one), and each tag replaced by image N's span of placeholder ids (0). The
 * tags' numbers must be exactly 1..n, each once (the processor would take a repeated tag;
 * refusing it keeps a request's work bounded by its images). Sets im->in (one per tag, in
 * prompt order) and *ids (caller frees). Returns 0, or -1 with *e filled
 * (SRV_ERR_CONTEXT_LENGTH when the prompt exceeds max_ids). */
int srv_images_tokenize(const struct eng_tokenizer *tok, const struct eng_vision_config *vc,
                        const char *text, size_t len, size_t max_ids, struct srv_images *im,
                        int32_t **ids, size_t *n_ids, struct srv_image_error *e);

void srv_images_free(struct srv_images *im);

#endif
