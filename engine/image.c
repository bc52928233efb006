/* PNG/JPEG decoding (libpng, libjpeg-turbo) and the Phi-3-vision HD transform (see image.h).
 * The arithmetic reproduces PIL's Image.resize(BILINEAR) and torch's bicubic interpolate from
 * their definitions; it is not a general image library (no other formats, no colour management). */
#include "image.h"

#include <math.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h> /* jpeglib.h needs FILE */
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h> /* after jpeglib.h: the message codes */
#include <png.h>

/* Larger progressive scan counts are a denial of service (every scan walks every block), not a
 * real image: encoders write about ten. */
#define JPEG_MAX_SCANS 100
/* libjpeg's own working memory (the coefficient buffer of a progressive 4096x4096 image is
 * about 100 MiB). */
#define JPEG_MAX_MEMORY ((long)512 << 20)
/* Ancillary PNG chunks (text, ICC profiles) are capped and never needed for the pixels. */
#define PNG_MAX_CHUNK_BYTES ((png_alloc_size_t)8 << 20)
#define PNG_MAX_CACHED_CHUNKS 256

/* Checks a decoded or declared size against the limits. */
static int check_dims(uint64_t w, uint64_t h)
{
    if (w == 0 || h == 0 || w > ENG_IMAGE_MAX_SIDE || h > ENG_IMAGE_MAX_SIDE ||
        w * h > (uint64_t)ENG_IMAGE_MAX_PIXELS)
        return ENG_IMAGE_ERR_SIZE;
    return ENG_IMAGE_OK;
}

/* Allocates an RGB buffer for w x h pixels (already within the limits). */
static uint8_t *alloc_rgb(size_t w, size_t h)
{
    size_t n;
    if (__builtin_mul_overflow(w, h, &n) || __builtin_mul_overflow(n, (size_t)3, &n))
        return NULL;
    return malloc(n);
}

/* ---------------------------------------------------------------- PNG */

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

struct png_job {
    const uint8_t *data; /* [len] the file, caller keeps */
    size_t len, pos;
    bool nomem;       /* an allocation failed (libpng then raises an error) */
    uint8_t *raw;     /* [height, rowbytes] samples as libpng delivers them, owned */
    png_bytep *rows;  /* [height] pointers into raw, owned */
    uint8_t *rgb;     /* [height, width, 3] the result, owned until handed over */
    uint32_t width, height;
};

/* libpng's errors end in a longjmp back to png_decode_into; no message is kept or printed. */
static void png_on_error(png_structp png, png_const_charp msg)
{
    (void)msg;
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void png_on_read(png_structp png, png_bytep dst, size_t n)
{
    struct png_job *job = png_get_io_ptr(png);
    if (n > job->len - job->pos)
        png_error(png, "truncated");
    memcpy(dst, job->data + job->pos, n);
    job->pos += n;
}

static png_voidp png_on_malloc(png_structp png, png_alloc_size_t n)
{
    void *p = malloc(n);
    if (p == NULL) {
        struct png_job *job = png_get_mem_ptr(png);
        job->nomem = true;
    }
    return p;
}

static void png_on_free(png_structp png, png_voidp p)
{
    (void)png;
    free(p);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Converts one decoded row (channels samples per pixel, 8 bits, or 16-bit grey when grey16) to
 * RGB the way PIL's convert('RGB') does. */
static void png_row_to_rgb(const uint8_t *in, uint8_t *out, uint32_t w, int channels, bool grey16)
{
    for (uint32_t x = 0; x < w; x++, out += 3) {
        switch (channels) {
        case 1:
            /* PIL's I;16 -> RGB clamps the value: big-endian high byte 0 keeps the low byte. */
            out[0] = grey16 ? (in[2 * x] == 0 ? in[2 * x + 1] : 255) : in[x];
            out[1] = out[2] = out[0];
            break;
        case 2: /* grey + alpha: alpha dropped */
            out[0] = out[1] = out[2] = in[2 * x];
            break;
        case 3:
            memcpy(out, in + 3 * (size_t)x, 3);
            break;
        default: /* RGBA, or palette + tRNS expanded: alpha dropped, not composited */
            memcpy(out, in + 4 * (size_t)x, 3);
            break;
        }
    }
}

/* Runs libpng over job; every libpng error comes back here through the longjmp. Nothing local
 * to this function is used after the longjmp: all state lives in *job. */
static int png_decode_into(struct png_job *job, png_structp png, png_infop info)
{
    if (setjmp(png_jmpbuf(png)))
        return job->nomem ? ENG_IMAGE_ERR_NOMEM : ENG_IMAGE_ERR_DECODE;
    png_set_read_fn(png, job, png_on_read);
    png_set_user_limits(png, ENG_IMAGE_MAX_SIDE, ENG_IMAGE_MAX_SIDE);
    png_set_chunk_malloc_max(png, PNG_MAX_CHUNK_BYTES);
    png_set_chunk_cache_max(png, PNG_MAX_CACHED_CHUNKS);
    png_read_info(png, info);

    png_uint_32 w = 0, h = 0;
    int depth = 0, ctype = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, NULL, NULL, NULL);
    int rc = check_dims(w, h);
    if (rc != ENG_IMAGE_OK)
        return rc;
    /* 16-bit grey is the one kind PIL does not reduce by taking the high byte. */
    bool grey16 = ctype == PNG_COLOR_TYPE_GRAY && depth == 16;
    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png); /* scales like PIL's L;1/L;2/L;4 unpackers */
    if (depth == 16 && !grey16)
        png_set_strip_16(png); /* keeps the high byte, like PIL's ;16B raw modes */
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int channels = png_get_channels(png, info);
    int out_depth = png_get_bit_depth(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    size_t sample_bytes = grey16 ? 2 : 1;
    if (channels < 1 || channels > 4 || out_depth != (grey16 ? 16 : 8) ||
        rowbytes != (size_t)w * (size_t)channels * sample_bytes)
        return ENG_IMAGE_ERR_DECODE;

    size_t raw_bytes;
    if (__builtin_mul_overflow(rowbytes, (size_t)h, &raw_bytes))
        return ENG_IMAGE_ERR_SIZE;
    job->raw = malloc(raw_bytes);
    job->rows = malloc((size_t)h * sizeof(*job->rows));
    job->rgb = alloc_rgb(w, h);
    if (job->raw == NULL || job->rows == NULL || job->rgb == NULL)
        return ENG_IMAGE_ERR_NOMEM;
    for (png_uint_32 y = 0; y < h; y++)
        job->rows[y] = job->raw + (size_t)y * rowbytes;
    png_read_image(png, job->rows);
    for (png_uint_32 y = 0; y < h; y++)
        png_row_to_rgb(job->rows[y], job->rgb + (size_t)y * w * 3, w, channels, grey16);
    job->width = w;
    job->height = h;
    return ENG_IMAGE_OK;
}

static int decode_png(const uint8_t *data, size_t len, struct eng_image *out)
{
    /* The signature, then IHDR first (length 13): the declared size is checked here, before
     * libpng allocates anything for the image. */
    if (len < 8 + 8 + 13 + 4 || be32(data + 8) != 13 || memcmp(data + 12, "IHDR", 4) != 0)
        return ENG_IMAGE_ERR_DECODE;
    int rc = check_dims(be32(data + 16), be32(data + 20));
    if (rc != ENG_IMAGE_OK)
        return rc;

    struct png_job job = {.data = data, .len = len};
    png_structp png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, &job, png_on_error,
                                               png_on_warning, &job, png_on_malloc, png_on_free);
    if (png == NULL)
        return ENG_IMAGE_ERR_NOMEM;
    png_infop info = png_create_info_struct(png);
    rc = info != NULL ? png_decode_into(&job, png, info) : ENG_IMAGE_ERR_NOMEM;
    png_destroy_read_struct(&png, info != NULL ? &info : NULL, NULL);
    free(job.rows);
    free(job.raw);
    if (rc != ENG_IMAGE_OK) {
        free(job.rgb);
        return rc;
    }
    out->width = (int32_t)job.width;
    out->height = (int32_t)job.height;
    out->rgb = job.rgb;
    return ENG_IMAGE_OK;
}

/* ---------------------------------------------------------------- JPEG */

struct jpeg_job {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr err;
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    int status; /* what a longjmp back means */
    uint8_t *rgb; /* [height, width, 3], owned until handed over */
};

static void jpeg_fail(j_common_ptr cinfo, int status)
{
    struct jpeg_job *job = cinfo->client_data;
    job->status = status;
    longjmp(job->jb, 1);
}

static void jpeg_on_error(j_common_ptr cinfo)
{
    jpeg_fail(cinfo, cinfo->err->msg_code == JERR_OUT_OF_MEMORY ? ENG_IMAGE_ERR_NOMEM
                                                                : ENG_IMAGE_ERR_DECODE);
}

/* Warnings are ignored (PIL ignores them too: libjpeg substitutes zeros for a corrupt segment),
 * except running out of data, which PIL reports as a truncated image. */
static void jpeg_on_message(j_common_ptr cinfo, int level)
{
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF)
        jpeg_fail(cinfo, ENG_IMAGE_ERR_DECODE);
}

static void jpeg_on_output(j_common_ptr cinfo)
{
    (void)cinfo;
}

static void jpeg_on_progress(j_common_ptr cinfo)
{
    if (!cinfo->is_decompressor)
        return;
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->progressive_mode && d->input_scan_number > JPEG_MAX_SCANS)
        jpeg_fail(cinfo, ENG_IMAGE_ERR_DECODE);
}

/* Runs libjpeg over job; errors come back through the longjmp, with all state in *job. */
static int jpeg_decode_into(struct jpeg_job *job, const uint8_t *data, size_t len)
{
    struct jpeg_decompress_struct *ci = &job->cinfo;
    if (setjmp(job->jb))
        return job->status;
    jpeg_create_decompress(ci);
    ci->progress = &job->progress;
    ci->mem->max_memory_to_use = JPEG_MAX_MEMORY;
    jpeg_mem_src(ci, data, (unsigned long)len);
    (void)jpeg_read_header(ci, TRUE);
    int rc = check_dims(ci->image_width, ci->image_height);
    if (rc != ENG_IMAGE_OK)
        return rc;
    switch (ci->jpeg_color_space) {
    case JCS_GRAYSCALE:
        ci->out_color_space = JCS_GRAYSCALE;
        break;
    case JCS_YCbCr:
    case JCS_RGB:
        ci->out_color_space = JCS_RGB;
        break;
    default: /* CMYK, YCCK, unknown */
        return ENG_IMAGE_ERR_FORMAT;
    }
    (void)jpeg_start_decompress(ci);
    size_t w = ci->output_width, h = ci->output_height;
    int comps = ci->output_components;
    if (w != ci->image_width || h != ci->image_height || (comps != 1 && comps != 3))
        return ENG_IMAGE_ERR_DECODE;
    job->rgb = alloc_rgb(w, h);
    if (job->rgb == NULL)
        return ENG_IMAGE_ERR_NOMEM;
    while (ci->output_scanline < h) {
        uint8_t *row = job->rgb + (size_t)ci->output_scanline * w * 3;
        JSAMPROW rows[1] = {row};
        if (jpeg_read_scanlines(ci, rows, 1) != 1)
            return ENG_IMAGE_ERR_DECODE; /* cannot happen with a memory source */
        if (comps == 1) /* grey replicated in place, from the right end backwards */
            for (size_t x = w; x-- > 0;)
                row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = row[x];
    }
    return ENG_IMAGE_OK;
}

static int decode_jpeg(const uint8_t *data, size_t len, struct eng_image *out)
{
    struct jpeg_job *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return ENG_IMAGE_ERR_NOMEM;
    job->cinfo.err = jpeg_std_error(&job->err);
    job->err.error_exit = jpeg_on_error;
    job->err.emit_message = jpeg_on_message;
    job->err.output_message = jpeg_on_output;
    job->progress.progress_monitor = jpeg_on_progress;
    job->cinfo.client_data = job;
    job->status = ENG_IMAGE_ERR_DECODE;
    int rc = jpeg_decode_into(job, data, len);
    /* Safe on a half-created struct: jpeg_create_decompress zeroes it first (keeping err and
     * client_data), and destroy skips what was never set up. */
    jpeg_destroy_decompress(&job->cinfo);
    if (rc == ENG_IMAGE_OK) {
        out->width = (int32_t)job->cinfo.image_width;
        out->height = (int32_t)job->cinfo.image_height;
        out->rgb = job->rgb;
    } else {
        free(job->rgb);
    }
    free(job);
    return rc;
}

/* ---------------------------------------------------------------- decode API */

int eng_image_decode(const uint8_t *data, size_t len, struct eng_image *out)
{
    memset(out, 0, sizeof(*out));
    if (data == NULL)
        return ENG_IMAGE_ERR_FORMAT;
    if (len >= sizeof(png_magic) && memcmp(data, png_magic, sizeof(png_magic)) == 0)
        return decode_png(data, len, out);
    if (len >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
        return decode_jpeg(data, len, out);
    return ENG_IMAGE_ERR_FORMAT;
}

const char *eng_image_strerror(int status)
{
    switch (status) {
    case ENG_IMAGE_OK:
        return "OK.";
    case ENG_IMAGE_ERR_FORMAT:
        return "Unsupported image format: only PNG and JPEG (RGB or greyscale) are accepted.";
    case ENG_IMAGE_ERR_DECODE:
        return "The image data is corrupt or truncated.";
    case ENG_IMAGE_ERR_SIZE:
        return "The image dimensions are zero or exceed the limit of 4096 pixels per side.";
    case ENG_IMAGE_ERR_NOMEM:
        return "Out of memory while processing the image.";
    case ENG_IMAGE_ERR_PARAMS:
        return "Invalid image processing parameters.";
    default:
        return "Unknown image error.";
    }
}

void eng_image_free(struct eng_image *img)
{
    if (img == NULL)
        return;
    free(img->rgb);
    memset(img, 0, sizeof(*img));
}

/* ---------------------------------------------------------------- PIL bilinear resize */

/* PIL's 8-bit resampling keeps coefficients as fixed point with 22 fraction bits: 8 bits of
 * pixel and 2 bits of headroom in a 32-bit sum. */
#define RESAMPLE_BITS 22

/* One axis of a separable resize: output i reads count[i] inputs from start[i] on. */
struct resample_axis {
    int32_t ksize;  /* the most taps of any output */
    int32_t *start; /* [out] */
    int32_t *count; /* [out] */
    int32_t *k;     /* [out, ksize] fixed-point weights */
};

static void resample_axis_free(struct resample_axis *ax)
{
    free(ax->start);
    free(ax->count);
    free(ax->k);
    memset(ax, 0, sizeof(*ax));
}

static double triangle(double x)
{
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* PIL's BILINEAR coefficients (ImagingResample with the default box): on a downscale the
 * triangle is stretched by the scale factor (antialiasing); each output's weights are
 * normalised in double, then rounded half away from zero to fixed point. The double arithmetic
 * is written in the same order as PIL's so that the rounding agrees. */
static int resample_axis_init(int32_t in_size, int32_t out_size, struct resample_axis *ax)
{
    memset(ax, 0, sizeof(*ax));
    double scale = (double)in_size / (double)out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale; /* the triangle's radius is 1 */
    double inv_filterscale = 1.0 / filterscale;
    ax->ksize = (int32_t)ceil(support) * 2 + 1;
    size_t n_k;
    if (__builtin_mul_overflow((size_t)out_size, (size_t)ax->ksize, &n_k))
        return ENG_IMAGE_ERR_SIZE;
    ax->start = malloc((size_t)out_size * sizeof(*ax->start));
    ax->count = malloc((size_t)out_size * sizeof(*ax->count));
    ax->k = calloc(n_k, sizeof(*ax->k));
    double *w = malloc((size_t)ax->ksize * sizeof(*w));
    if (ax->start == NULL || ax->count == NULL || ax->k == NULL || w == NULL) {
        free(w);
        resample_axis_free(ax);
        return ENG_IMAGE_ERR_NOMEM;
    }
    for (int32_t xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale;
        /* (int) truncates toward zero, as in PIL; negatives are clamped to 0 anyway. */
        int32_t lo = (int32_t)(center - support + 0.5);
        int32_t hi = (int32_t)(center + support + 0.5);
        if (lo < 0)
            lo = 0;
        if (hi > in_size)
            hi = in_size;
        int32_t n = hi - lo;
        double ww = 0.0;
        for (int32_t x = 0; x < n; x++) {
            w[x] = triangle((x + lo - center + 0.5) * inv_filterscale);
            ww += w[x];
        }
        int32_t *k = ax->k + (size_t)xx * (size_t)ax->ksize;
        for (int32_t x = 0; x < n; x++) {
            double v = ww != 0.0 ? w[x] / ww : w[x];
            double f = v * (double)(1 << RESAMPLE_BITS);
            k[x] = v < 0 ? (int32_t)(-0.5 + f) : (int32_t)(0.5 + f);
        }
        ax->start[xx] = lo;
        ax->count[xx] = n;
    }
    free(w);
    return ENG_IMAGE_OK;
}

/* Rounds a fixed-point sum (which started at half a unit) to uint8, clipping like PIL. */
static uint8_t clip_fixed(int64_t ss)
{
    if (ss < 0)
        return 0;
    ss >>= RESAMPLE_BITS;
    return ss > 255 ? 255 : (uint8_t)ss;
}

/* Resamples along x: src [h, in_w, 3] -> dst [h, out_w, 3]. */
static void resample_x(const uint8_t *src, int32_t in_w, int32_t h, uint8_t *dst, int32_t out_w,
                       const struct resample_axis *ax)
{
    for (int32_t y = 0; y < h; y++) {
        const uint8_t *row = src + (size_t)y * (size_t)in_w * 3;
        uint8_t *o = dst + (size_t)y * (size_t)out_w * 3;
        for (int32_t xx = 0; xx < out_w; xx++) {
            const int32_t *k = ax->k + (size_t)xx * (size_t)ax->ksize;
            const uint8_t *in = row + (size_t)ax->start[xx] * 3;
            int64_t s0 = 1 << (RESAMPLE_BITS - 1), s1 = s0, s2 = s0;
            for (int32_t x = 0; x < ax->count[xx]; x++) {
                s0 += (int64_t)in[3 * x + 0] * k[x];
                s1 += (int64_t)in[3 * x + 1] * k[x];
                s2 += (int64_t)in[3 * x + 2] * k[x];
            }
            o[3 * xx + 0] = clip_fixed(s0);
            o[3 * xx + 1] = clip_fixed(s1);
            o[3 * xx + 2] = clip_fixed(s2);
        }
    }
}

/* Resamples along y: src [in_h, w, 3] -> dst [out_h, w, 3]. */
static void resample_y(const uint8_t *src, int32_t w, uint8_t *dst, int32_t out_h,
                       const struct resample_axis *ax)
{
    size_t stride = (size_t)w * 3;
    for (int32_t yy = 0; yy < out_h; yy++) {
        const int32_t *k = ax->k + (size_t)yy * (size_t)ax->ksize;
        const uint8_t *in = src + (size_t)ax->start[yy] * stride;
        uint8_t *o = dst + (size_t)yy * stride;
        for (size_t i = 0; i < stride; i++) {
            int64_t s = 1 << (RESAMPLE_BITS - 1);
            for (int32_t y = 0; y < ax->count[yy]; y++)
                s += (int64_t)in[(size_t)y * stride + i] * k[y];
            o[i] = clip_fixed(s);
        }
    }
}

/* PIL's Image.resize((out_w, out_h), BILINEAR) of src into *dst (callee allocates). PIL resizes
 * horizontally first and rounds to uint8 between the passes, so the order matters: y_first
 * gives the order PIL used on the transposed image. An axis whose size does not change is not
 * resampled (PIL skips it too; its weights would be the identity). */
static int resize_bilinear(const struct eng_image *src, int32_t out_w, int32_t out_h, bool y_first,
                           uint8_t **dst)
{
    *dst = NULL;
    bool need_x = out_w != src->width, need_y = out_h != src->height;
    struct resample_axis ax_x = {0}, ax_y = {0};
    uint8_t *tmp = NULL, *res = alloc_rgb((size_t)out_w, (size_t)out_h);
    int rc = res != NULL ? ENG_IMAGE_OK : ENG_IMAGE_ERR_NOMEM;
    if (rc == ENG_IMAGE_OK && need_x)
        rc = resample_axis_init(src->width, out_w, &ax_x);
    if (rc == ENG_IMAGE_OK && need_y)
        rc = resample_axis_init(src->height, out_h, &ax_y);
    if (rc == ENG_IMAGE_OK && need_x && need_y) {
        tmp = y_first ? alloc_rgb((size_t)src->width, (size_t)out_h)
                      : alloc_rgb((size_t)out_w, (size_t)src->height);
        if (tmp == NULL)
            rc = ENG_IMAGE_ERR_NOMEM;
    }
    if (rc == ENG_IMAGE_OK) {
        if (need_x && need_y && y_first) {
            resample_y(src->rgb, src->width, tmp, out_h, &ax_y);
            resample_x(tmp, src->width, out_h, res, out_w, &ax_x);
        } else if (need_x && need_y) {
            resample_x(src->rgb, src->width, src->height, tmp, out_w, &ax_x);
            resample_y(tmp, out_w, res, out_h, &ax_y);
        } else if (need_x) {
            resample_x(src->rgb, src->width, src->height, res, out_w, &ax_x);
        } else if (need_y) {
            resample_y(src->rgb, src->width, res, out_h, &ax_y);
        } else {
            memcpy(res, src->rgb, (size_t)out_w * (size_t)out_h * 3);
        }
    }
    free(tmp);
    resample_axis_free(&ax_x);
    resample_axis_free(&ax_y);
    if (rc != ENG_IMAGE_OK) {
        free(res);
        return rc;
    }
    *dst = res;
    return ENG_IMAGE_OK;
}

/* ---------------------------------------------------------------- HD transform */

/* The geometry of steps 1-5, in the image's own orientation. */
struct hd_plan {
    bool transposed;
    int32_t res_w, res_h; /* the resized image */
    int32_t pad_w, pad_h; /* the canvas: multiples of crop */
    int32_t off_x, off_y; /* where the resized image sits in the canvas */
};

static bool params_valid(const struct eng_image *img, const struct eng_hd_params *p)
{
    if (img == NULL || p == NULL || img->rgb == NULL || img->width < 1 || img->height < 1 ||
        img->width > ENG_IMAGE_MAX_SIDE || img->height > ENG_IMAGE_MAX_SIDE ||
        (int64_t)img->width * img->height > ENG_IMAGE_MAX_PIXELS)
        return false;
    if (p->crop < 1 || p->crop > 4096 || p->num_crops < 1 || p->num_crops > 64)
        return false;
    for (int c = 0; c < 3; c++)
        if (!isfinite(p->mean[c]) || !isfinite(p->std[c]) || p->std[c] == 0.0f)
            return false;
    return true;
}

static int hd_plan_make(const struct eng_image *img, const struct eng_hd_params *p,
                        struct hd_plan *pl)
{
    if (!params_valid(img, p))
        return ENG_IMAGE_ERR_PARAMS;
    /* Step 1: work on the landscape orientation (PIL's TRANSPOSE swaps the axes). */
    pl->transposed = img->width < img->height;
    int64_t w = pl->transposed ? img->height : img->width;
    int64_t h = pl->transposed ? img->width : img->height;
    /* Step 2, in Python's double arithmetic: the largest scale with scale * ceil(scale / ratio)
     * crops within the budget. ratio >= 1, so the loop stops by num_crops + 1. */
    double ratio = (double)w / (double)h;
    int64_t scale = 1;
    while ((double)scale * ceil((double)scale / ratio) <= (double)p->num_crops)
        scale++;
    scale--;
    /* Step 3: new_h = int(new_w / ratio) truncates; 0 (where PIL would refuse) becomes 1. */
    int64_t new_w = scale * p->crop;
    int64_t new_h = (int64_t)((double)new_w / ratio);
    if (new_h < 1)
        new_h = 1;
    /* Step 4: white padding of the short side to a multiple of crop, the smaller half first. */
    int64_t tar = (new_h + p->crop - 1) / p->crop * p->crop;
    int64_t before = (tar - new_h) / 2;
    if (new_w > INT32_MAX || tar > INT32_MAX)
        return ENG_IMAGE_ERR_SIZE;
    /* Step 5: back to the original orientation. */
    if (pl->transposed) {
        *pl = (struct hd_plan){true, (int32_t)new_h, (int32_t)new_w, (int32_t)tar, (int32_t)new_w,
                               (int32_t)before, 0};
    } else {
        *pl = (struct hd_plan){false, (int32_t)new_w, (int32_t)new_h, (int32_t)new_w, (int32_t)tar,
                               0, (int32_t)before};
    }
    return ENG_IMAGE_OK;
}

int eng_image_hd_canvas(const struct eng_image *img, const struct eng_hd_params *p,
                        struct eng_image *canvas)
{
    memset(canvas, 0, sizeof(*canvas));
    struct hd_plan pl;
    int rc = hd_plan_make(img, p, &pl);
    if (rc != ENG_IMAGE_OK)
        return rc;
    size_t canvas_bytes;
    if (__builtin_mul_overflow((size_t)pl.pad_w, (size_t)pl.pad_h, &canvas_bytes) ||
        __builtin_mul_overflow(canvas_bytes, (size_t)3, &canvas_bytes))
        return ENG_IMAGE_ERR_SIZE;
    uint8_t *res = NULL;
    rc = resize_bilinear(img, pl.res_w, pl.res_h, pl.transposed, &res);
    if (rc != ENG_IMAGE_OK)
        return rc;
    uint8_t *rgb = malloc(canvas_bytes);
    if (rgb == NULL) {
        free(res);
        return ENG_IMAGE_ERR_NOMEM;
    }
    memset(rgb, 255, canvas_bytes);
    for (int32_t y = 0; y < pl.res_h; y++)
        memcpy(rgb + ((size_t)(y + pl.off_y) * (size_t)pl.pad_w + (size_t)pl.off_x) * 3,
               res + (size_t)y * (size_t)pl.res_w * 3, (size_t)pl.res_w * 3);
    free(res);
    canvas->width = pl.pad_w;
    canvas->height = pl.pad_h;
    canvas->rgb = rgb;
    return ENG_IMAGE_OK;
}

/* torch's cubic convolution weights (A = -0.75) for fraction t, in float as torch computes
 * them for a float tensor. */
static void cubic_weights(float t, float w[4])
{
    const float a = -0.75f;
    float x1 = t + 1.0f, x2 = 1.0f - t, x3 = x2 + 1.0f;
    w[0] = ((a * x1 - 5.0f * a) * x1 + 8.0f * a) * x1 - 4.0f * a;
    w[1] = ((a + 2.0f) * t - (a + 3.0f)) * t * t + 1.0f;
    w[2] = ((a + 2.0f) * x2 - (a + 3.0f)) * x2 * x2 + 1.0f;
    w[3] = ((a * x3 - 5.0f * a) * x3 + 8.0f * a) * x3 - 4.0f * a;
}

/* Output index i's four taps (clamped to [0, in - 1]) and weights, as torch's bicubic with
 * align_corners=False: source index scale * (i + 0.5) - 0.5 with scale = in / out in float. */
static void cubic_taps(int32_t in_size, int32_t out_size, int32_t i, int32_t idx[4], float w[4])
{
    float scale = (float)in_size / (float)out_size;
    float real = scale * ((float)i + 0.5f) - 0.5f;
    int64_t base = (int64_t)floorf(real);
    if (base > in_size - 1)
        base = in_size - 1;
    float t = real - (float)base;
    t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
    cubic_weights(t, w);
    for (int j = 0; j < 4; j++) {
        int64_t v = base - 1 + j;
        idx[j] = (int32_t)(v < 0 ? 0 : (v > in_size - 1 ? in_size - 1 : v));
    }
}

/* F.interpolate(mode='bicubic', align_corners=False) of one plane src [in_h, in_w] to
 * dst [out_h, out_w]: along x within each of four rows, then along y, summed in tap order. */
static void bicubic_plane(const float *src, int32_t in_w, int32_t in_h, float *dst, int32_t out_w,
                          int32_t out_h)
{
    for (int32_t oy = 0; oy < out_h; oy++) {
        int32_t ys[4];
        float wy[4];
        cubic_taps(in_h, out_h, oy, ys, wy);
        for (int32_t ox = 0; ox < out_w; ox++) {
            int32_t xs[4];
            float wx[4];
            cubic_taps(in_w, out_w, ox, xs, wx);
            float acc = 0.0f;
            for (int j = 0; j < 4; j++) {
                const float *row = src + (size_t)ys[j] * (size_t)in_w;
                float r = row[xs[0]] * wx[0];
                r += row[xs[1]] * wx[1];
                r += row[xs[2]] * wx[2];
                r += row[xs[3]] * wx[3];
                acc = j == 0 ? r * wy[0] : acc + r * wy[j];
            }
            dst[(size_t)oy * (size_t)out_w + (size_t)ox] = acc;
        }
    }
}

int eng_image_hd_transform(const struct eng_image *img, const struct eng_hd_params *p,
                           struct eng_hd_image *out)
{
    memset(out, 0, sizeof(*out));
    struct eng_image canvas;
    int rc = eng_image_hd_canvas(img, p, &canvas);
    if (rc != ENG_IMAGE_OK)
        return rc;
    const int32_t crop = p->crop, cw = canvas.width, ch = canvas.height;
    const int32_t h_crop = ch / crop, w_crop = cw / crop, n_views = 1 + h_crop * w_crop;
    size_t plane = (size_t)cw * (size_t)ch, view = (size_t)3 * (size_t)crop * (size_t)crop;
    size_t n_norm, n_pix;
    float *norm = NULL, *pix = NULL;
    if (__builtin_mul_overflow(plane, (size_t)3, &n_norm) ||
        __builtin_mul_overflow(view, (size_t)n_views, &n_pix) ||
        __builtin_mul_overflow(n_norm, sizeof(float), &n_norm) ||
        __builtin_mul_overflow(n_pix, sizeof(float), &n_pix)) {
        rc = ENG_IMAGE_ERR_SIZE;
        goto fail;
    }
    norm = malloc(n_norm); /* [3, ch, cw] */
    pix = malloc(n_pix);   /* [n_views, 3, crop, crop] */
    if (norm == NULL || pix == NULL) {
        rc = ENG_IMAGE_ERR_NOMEM;
        goto fail;
    }
    /* Step 6: ToTensor then Normalize, one float32 rounding per operation as in torch. */
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < plane; i++)
            norm[(size_t)c * plane + i] =
                ((float)canvas.rgb[3 * i + (size_t)c] / 255.0f - p->mean[c]) / p->std[c];
    /* Step 7: the global view from the normalised canvas. */
    for (int c = 0; c < 3; c++)
        bicubic_plane(norm + (size_t)c * plane, cw, ch, pix + (size_t)c * crop * crop, crop, crop);
    /* Step 8: the crops, row of crops by row of crops. */
    for (int32_t i = 0; i < h_crop; i++)
        for (int32_t j = 0; j < w_crop; j++) {
            float *v = pix + (size_t)(1 + i * w_crop + j) * view;
            for (int c = 0; c < 3; c++)
                for (int32_t y = 0; y < crop; y++)
                    memcpy(v + ((size_t)c * crop + (size_t)y) * crop,
                           norm + (size_t)c * plane + (size_t)(i * crop + y) * cw + (size_t)j * crop,
                           (size_t)crop * sizeof(float));
        }
    free(norm);
    eng_image_free(&canvas);
    out->h_crop = h_crop;
    out->w_crop = w_crop;
    out->n_views = n_views;
    out->pixels = pix;
    return ENG_IMAGE_OK;
fail:
    free(norm);
    free(pix);
    eng_image_free(&canvas);
    return rc;
}

void eng_hd_image_free(struct eng_hd_image *hd)
{
    if (hd == NULL)
        return;
    free(hd->pixels);
    memset(hd, 0, sizeof(*hd));
}
