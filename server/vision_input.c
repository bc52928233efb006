/* Image inputs for Phi-3-vision chat requests: data: URL -> PNG/JPEG decode -> HD transform,
 * and the processor's prompt rule (text split at <|image_N|>, each piece tokenized on its
 * own, each tag replaced by its image's span; reference/phi3-models.md section 5.5). Error
 * messages are fixed strings: no decoder text reaches a client (reliability V8). */
#include "vision_input.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_url.h"
#include "errors.h"
#include "model_config.h"

__attribute__((format(printf, 4, 5))) static int fail(struct srv_image_error *e, int code,
                                                      const char *param, const char *fmt, ...)
{
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

int srv_images_add_bytes(struct srv_images *im, const struct eng_vision_config *vc,
                         const uint8_t *bytes, size_t len, const char *param,
                         struct srv_image_error *e)
{
    struct eng_hd_image *hd = realloc(im->hd, (im->n + 1) * sizeof *hd);
    if (!hd)
        return fail(e, SRV_ERR_NO_MEMORY, NULL, "out of memory");
    im->hd = hd;
    struct eng_hd_params hp = {.crop = (int32_t)vc->image_size, .num_crops = (int32_t)vc->num_crops};
    memcpy(hp.mean, vc->image_mean, sizeof hp.mean);
    memcpy(hp.std, vc->image_std, sizeof hp.std);
    struct eng_image img = {0};
    int rc = eng_image_decode(bytes, len, &img);
    if (rc == ENG_IMAGE_OK) {
        rc = eng_image_hd_transform(&img, &hp, &hd[im->n]);
        eng_image_free(&img);
    }
    if (rc == ENG_IMAGE_ERR_NOMEM)
        return fail(e, SRV_ERR_NO_MEMORY, NULL, "out of memory");
    if (rc == ENG_IMAGE_ERR_PARAMS) /* the model's preprocessor settings: not the client's */
        return fail(e, SRV_ERR_INTERNAL, NULL, "The image preprocessor is misconfigured.");
    if (rc != ENG_IMAGE_OK)
        return fail(e, SRV_ERR_INVALID_IMAGE, param, "The image could not be used: %s",
                    eng_image_strerror(rc));
    im->n++;
    return 0;
}

int srv_images_add(struct srv_images *im, const struct eng_vision_config *vc, const char *url,
                   size_t len, const char *param, struct srv_image_error *e)
{
    if (len < 5 || strncmp(url, "data:", 5) != 0)
        return fail(e, SRV_ERR_INVALID_IMAGE, param,
                    "Only data: image URLs are accepted; this server fetches no remote images.");
    const char *mime;
    size_t mime_len, n = 0;
    uint8_t *bytes = NULL;
    char derr[128];
    if (srv_data_url_decode(url, len, SRV_MAX_IMAGE_BYTES, &mime, &mime_len, &bytes, &n, derr,
                            sizeof derr) != 0)
        return fail(e, SRV_ERR_INVALID_IMAGE, param, "The image data URL is invalid: %s", derr);
    int rc = srv_images_add_bytes(im, vc, bytes, n, param, e);
    free(bytes);
    return rc;
}

int srv_images_load(const struct srv_chat_request *q, const struct eng_vision_config *vc,
                    struct srv_images *out, struct srv_image_error *e)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < q->n_messages; i++) {
        const struct srv_message *m = &q->messages[i];
        for (size_t k = 0; k < m->n_parts; k++) {
            if (m->parts[k].type != SRV_PART_IMAGE_URL)
                continue;
            char param[96];
            snprintf(param, sizeof param, "messages[%zu].content[%zu].image_url", i, k);
            if (srv_images_add(out, vc, m->parts[k].text, m->parts[k].len, param, e) != 0)
                return -1;
        }
    }
    return 0;
}

/* The next tag <|image_N|> at or after text[from]: its offset and length and N (0 when N is
 * out of range). Returns false when there is none. */
static bool next_tag(const char *text, size_t len, size_t from, size_t *at, size_t *tag_len,
                     size_t *id)
{
    static const char head[] = "<|image_";
    for (size_t i = from; i + sizeof head - 1 < len; i++) {
        if (memcmp(text + i, head, sizeof head - 1) != 0)
            continue;
        size_t j = i + sizeof head - 1, v = 0;
        while (j < len && text[j] >= '0' && text[j] <= '9') {
            v = v < 100000 ? v * 10 + (size_t)(text[j] - '0') : 100000;
            j++;
        }
        if (j == i + sizeof head - 1 || j + 1 >= len || text[j] != '|' || text[j + 1] != '>')
            continue;
        *at = i;
        *tag_len = j + 2 - i;
        *id = v;
        return true;
    }
    return false;
}

/* Appends src[n] to *ids (grown as needed). */
static int append(int32_t **ids, size_t *n_ids, size_t *cap, const int32_t *src, size_t n,
                  int32_t fill)
{
    if (*n_ids + n > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < *n_ids + n)
            c *= 2;
        int32_t *p = realloc(*ids, c * sizeof *p);
        if (!p)
            return -1;
        *ids = p;
        *cap = c;
    }
    for (size_t i = 0; i < n; i++)
        (*ids)[*n_ids + i] = src ? src[i] : fill;
    *n_ids += n;
    return 0;
}

/* Encodes one text piece and appends it. Returns 0 or a negative ENG_TOK_ERR_*. */
static int add_text(const struct eng_tokenizer *tok, const char *text, size_t len, size_t max_ids,
                    int32_t **ids, size_t *n_ids, size_t *cap)
{
    int32_t *piece = NULL;
    size_t n = 0;
    if (*n_ids > max_ids)
        return ENG_TOK_ERR_TOO_LONG;
    int rc = eng_tokenizer_encode_max(tok, text, len, 1, max_ids - *n_ids, &piece, &n);
    if (rc == 0 && append(ids, n_ids, cap, piece, n, 0) != 0)
        rc = ENG_TOK_ERR_NOMEM;
    free(piece);
    return rc;
}

int srv_images_tokenize(const struct eng_tokenizer *tok, const struct eng_vision_config *vc,
                        const char *text, size_t len, size_t max_ids, struct srv_images *im,
                        int32_t **ids, size_t *n_ids, struct srv_image_error *e)
{
    *ids = NULL;
    *n_ids = 0;
    size_t cap = 0, from = 0, at = 0, tag_len = 0, id = 0;
    bool *used = calloc(im->n + 1, sizeof *used);
    im->in = calloc(im->n + 1, sizeof *im->in);
    im->n_in = 0;
    int rc = !used || !im->in ? ENG_TOK_ERR_NOMEM : 0;
    for (;;) {
        bool more = rc == 0 && next_tag(text, len, from, &at, &tag_len, &id);
        size_t end = more ? at : len;
        if (rc == 0)
            rc = add_text(tok, text + from, end - from, max_ids, ids, n_ids, &cap);
        if (rc != 0 || !more)
            break;
        if (id < 1 || id > im->n) {
            fail(e, SRV_ERR_INVALID_VALUE, "messages",
                 "The prompt refers to <|image_%zu|> but the request has %zu image%s.", id,
                 im->n, im->n == 1 ? "" : "s");
            goto bad;
        }
        if (used[id]) { /* each image once: the work a request costs stays bounded by its images */
            fail(e, SRV_ERR_INVALID_VALUE, "messages",
                 "The prompt names <|image_%zu|> more than once.", id);
            goto bad;
        }
        const struct eng_hd_image *hd = &im->hd[id - 1];
        int64_t span = eng_vision_image_tokens(vc, hd->h_crop, hd->w_crop);
        im->in[im->n_in++] = (struct eng_image_input){
            .views = hd->pixels, .h_crop = hd->h_crop, .w_crop = hd->w_crop,
            .pos = (int32_t)*n_ids};
        used[id] = true;
        if (*n_ids + (size_t)span > max_ids)
            rc = ENG_TOK_ERR_TOO_LONG;
        else if (append(ids, n_ids, &cap, NULL, (size_t)span, 0) != 0)
            rc = ENG_TOK_ERR_NOMEM;
        from = at + tag_len;
    }
    for (size_t k = 1; rc == 0 && k <= im->n; k++)
        if (!used[k]) {
            fail(e, SRV_ERR_INVALID_VALUE, "messages",
                 "Image %zu is not referenced by the prompt (no <|image_%zu|> tag).", k, k);
            goto bad;
        }
    if (rc == 0) {
        free(used);
        return 0;
    }
    if (rc == ENG_TOK_ERR_TOO_LONG)
        fail(e, SRV_ERR_CONTEXT_LENGTH, "messages",
             "This model's maximum context length is %zu tokens. However, your messages and "
             "images take more than that.", max_ids);
    else if (rc == ENG_TOK_ERR_NOMEM)
        fail(e, SRV_ERR_NO_MEMORY, NULL, "out of memory");
    else
        fail(e, SRV_ERR_INVALID_VALUE, "messages", "The prompt could not be tokenized.");
bad:
    free(used);
    free(*ids);
    *ids = NULL;
    *n_ids = 0;
    return -1;
}

void srv_images_free(struct srv_images *im)
{
    for (size_t i = 0; im->hd && i < im->n; i++)
        eng_hd_image_free(&im->hd[i]);
    free(im->hd);
    free(im->in);
    memset(im, 0, sizeof *im);
}
