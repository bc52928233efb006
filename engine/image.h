/* Image input for the vision models: PNG/JPEG decoding into 8-bit RGB with the size limits
 * enforced before any pixel memory is allocated, and the Phi-3-vision HD transform (resize, pad,
 * normalise, global view + crops) matching the Hugging Face processor (PIL + torchvision).
 * It knows nothing of data: URLs, HTTP or the vision tower; no function here prints or exits. */
#ifndef PHISERVE_ENGINE_IMAGE_H
#define PHISERVE_ENGINE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#define ENG_IMAGE_MAX_SIDE 4096
#define ENG_IMAGE_MAX_PIXELS (4096 * 4096)

enum eng_image_status {
    ENG_IMAGE_OK = 0,
    ENG_IMAGE_ERR_FORMAT = -1, /* not PNG/JPEG (GIF, WebP, ...), or a kind of PNG/JPEG refused */
    ENG_IMAGE_ERR_DECODE = -2, /* corrupt or truncated data */
    ENG_IMAGE_ERR_SIZE = -3,   /* a side 0, a side > ENG_IMAGE_MAX_SIDE, pixels > MAX_PIXELS */
    ENG_IMAGE_ERR_NOMEM = -4,
    ENG_IMAGE_ERR_PARAMS = -5, /* invalid eng_hd_params or image struct (a caller's bug) */
};

struct eng_image {
    int32_t width, height;
    uint8_t *rgb; /* [height, width, 3] RGB, owned (eng_image_free) */
};

/* Decodes a PNG or JPEG held in data[0, len) (caller keeps) into *out as 8-bit RGB, the pixels
 * PIL gives for Image.open(...).convert('RGB'). The format is sniffed from the magic bytes (the
 * media type a client claims is not trusted). The dimensions are read from the header and the
 * limits checked before pixel memory is allocated, so a small file declaring 20000x20000 costs
 * nothing (decompression bombs).
 * PNG: every standard colour type and bit depth, interlaced or not. Grey, grey+alpha, palette
 * (with or without tRNS) and RGBA become RGB the way PIL's convert('RGB') does it: grey is
 * replicated and alpha is dropped, never composited. 16-bit RGB, RGBA and grey+alpha keep the
 * high byte of each sample (PIL opens them with the "RGB;16B" family of raw modes); 16-bit grey
 * opens in PIL as mode I;16, whose conversion to RGB clamps the 16-bit value to 255 rather than
 * scaling it, and that is reproduced too. Gamma, colour profiles and sBIT are ignored, as by
 * PIL. Pixel data must be complete; chunks after the last image row are not read.
 * JPEG: baseline, extended, progressive and arithmetic-coded, grey or YCbCr/RGB; libjpeg's
 * default decoder settings (accurate integer IDCT, fancy upsampling), which PIL uses too.
 * CMYK/YCCK JPEGs are refused (ENG_IMAGE_ERR_FORMAT). A JPEG whose data end early is refused
 * (ENG_IMAGE_ERR_DECODE), and so is a progressive JPEG with more than 100 scans (bounded time).
 * EXIF orientation is not applied (the HF processor does not apply it either).
 * Returns ENG_IMAGE_OK and fills *out (caller frees with eng_image_free), or a negative
 * eng_image_status with *out zeroed; decoder messages never reach the caller. */
int eng_image_decode(const uint8_t *data, size_t len, struct eng_image *out);

/* A fixed English sentence for a status (no input bytes, no pointers); static storage. */
const char *eng_image_strerror(int status);

/* Frees img's pixels and zeroes it; accepts a zeroed or half-built struct and NULL. */
void eng_image_free(struct eng_image *img);

struct eng_hd_params {
    int32_t crop;      /* side of a view in pixels: 336 on real models; [1, 4096] */
    int32_t num_crops; /* hd_num: the most local crops; [1, 64] */
    float mean[3];     /* per-channel normalisation: (x / 255 - mean) / std, all finite */
    float std[3];      /* nonzero */
};

/* Steps 1-5 of the HD transform (reference/phi3-models.md section 5.2), in uint8 and exact:
 * the image is transposed when narrower than tall; scale = the largest s with
 * s * ceil(s / ratio) <= num_crops; it is resized with PIL's antialiased BILINEAR filter (the
 * same two fixed-point passes, horizontal first in the transposed frame, with the same
 * coefficients and rounding) to new_w = scale * crop by new_h = int(new_w / ratio), padded with
 * white to a multiple of crop (top = int(pad / 2)), and transposed back. The result equals PIL's
 * byte for byte; w_pad and h_pad are multiples of crop with (w_pad / crop) * (h_pad / crop) <=
 * num_crops.
 * Tiny sides: where Python's new_h = int(new_w / ratio) is 0 (an aspect ratio beyond
 * scale * crop : 1, e.g. 1x4096 with crop 336 and 4 crops) the Hugging Face processor raises an
 * error inside PIL; here new_h is clamped to 1 instead, so such images (1x1, 1xN, Nx1 within
 * the decode limits) always give a valid canvas. Every other size matches HF exactly.
 * img (caller keeps) must hold 1..ENG_IMAGE_MAX_SIDE by 1..ENG_IMAGE_MAX_SIDE pixels.
 * Returns ENG_IMAGE_OK and fills *canvas (caller frees with eng_image_free), ENG_IMAGE_ERR_PARAMS
 * for invalid params or image, ENG_IMAGE_ERR_SIZE when a size overflows, or
 * ENG_IMAGE_ERR_NOMEM; *canvas is zeroed on failure. */
int eng_image_hd_canvas(const struct eng_image *img, const struct eng_hd_params *p,
                        struct eng_image *canvas);

struct eng_hd_image {
    int32_t h_crop, w_crop; /* local crop grid, h_crop * w_crop <= num_crops */
    int32_t n_views;        /* 1 + h_crop * w_crop: the global view first, then the crops row-major */
    float *pixels;          /* [n_views, 3, crop, crop] normalised, owned (eng_hd_image_free) */
};

/* The whole HD transform (steps 1-8 of section 5.2) without the zero padding to num_crops + 1
 * views, which belongs to batching: the canvas of eng_image_hd_canvas, ToTensor (u8 / 255 in
 * float32) and Normalize ((x - mean) / std in float32), as torchvision computes them, so the
 * crops equal the HF processor's bit for bit; then the global view, the normalised canvas
 * resized to crop x crop as torch's F.interpolate(mode='bicubic', align_corners=False) does it
 * (cubic convolution with A = -0.75 in float32, source index scale * (dst + 0.5) - 0.5 with
 * scale = in / out, taps clamped to the border, no antialiasing; within float rounding of
 * torch), followed by the h_crop * w_crop crops in row-major order.
 * Arguments, ownership, tiny sides and errors as for eng_image_hd_canvas; out (caller frees with
 * eng_hd_image_free) is zeroed on failure. */
int eng_image_hd_transform(const struct eng_image *img, const struct eng_hd_params *p,
                           struct eng_hd_image *out);

/* Frees hd's pixels and zeroes it; accepts a zeroed struct and NULL. */
void eng_hd_image_free(struct eng_hd_image *hd);

#endif
