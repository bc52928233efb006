/* Golden test of Phi-3-vision: a fixture model's images, image features, logits and greedy
 * continuations from transformers (scripts/make_fixtures_vision.py) against phiserve's whole
 * image path on one backend: PNG decode and HD transform (engine/image.c), the vision encoder
 * (models/phi3v.c), the forward with image rows (batch embed spans, whole and chunked inside
 * an image), the engine (images in requests, batching, the prefix cache keyed by pixels) and
 * the server's prompt rule (server/vision_input.c). Usage: test_vision MODEL_DIR ref|cpu. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "image.h"
#include "kv_cache.h"
#include "model.h"
#include "models/phi3.h"
#include "models/phi3v.h"
#include "errors.h"
#include "tokenizer.h"
#include "vision_input.h"

#include "../test_util.h"
#include "vision_golden.h"

/* fp32 on both sides, only summation orders differ (as test_golden.c): 1e-4 of the largest
 * magnitude, an order of magnitude below the fixture's smallest greedy margin (>= 0.05). */
#define RTOL 1e-4
/* The HD views: torch's float ops against ours, a few ulp of values around 2. */
#define VIEW_ATOL 1e-5

struct vimage {
    char file[96];
    int32_t h_crop, w_crop, n_tokens;
    struct eng_hd_image hd;        /* from phiserve's own decode + transform */
    int32_t hd_side;               /* its views' side (vision.image_size) */
    float *embeds;                 /* [n_tokens, H] transformers' */
};

struct vcase {
    char name[64];
    int32_t *ids;                  /* HF's: image k's span is -k */
    int32_t n_ids;
    int32_t img[8];                /* indices into the image table */
    int32_t n_img;
    int32_t *rows, n_rows;
    float *logits;                 /* [n_rows, V] */
    int32_t *greedy, n_greedy;
    const cJSON *json;
};

static int64_t V, H;

/* Decode + HD transform in C against PIL/torchvision: the canvas exactly, the global view
 * within VIEW_ATOL, the grid. */
static void check_image(const cJSON *ji, const struct eng_model_config *c, struct vimage *im)
{
    snprintf(im->file, sizeof im->file, "%s", vg_get(ji, "file")->valuestring);
    im->h_crop = (int32_t)vg_get(ji, "h_crop")->valuedouble;
    im->w_crop = (int32_t)vg_get(ji, "w_crop")->valuedouble;
    im->n_tokens = (int32_t)vg_get(ji, "n_tokens")->valuedouble;
    EXPECT(eng_vision_image_tokens(&c->vision, im->h_crop, im->w_crop) == im->n_tokens);
    struct eng_image img = {0}, canvas = {0};
    vg_decode(im->file, &img);
    struct eng_hd_params hp = vg_hd_params(c);
    REQUIRE(eng_image_hd_canvas(&img, &hp, &canvas) == 0, "canvas %s", im->file);
    int32_t ch = (int32_t)vg_get(ji, "canvas_height")->valuedouble;
    int32_t cw = (int32_t)vg_get(ji, "canvas_width")->valuedouble;
    CHECK(canvas.height == ch && canvas.width == cw, "%s: canvas %dx%d, want %dx%d", im->file,
          canvas.width, canvas.height, cw, ch);
    if (canvas.height == ch && canvas.width == cw) {
        uint8_t *want = vg_read_exact(vg_get(ji, "canvas_file")->valuestring, (size_t)ch * cw * 3);
        CHECK(memcmp(want, canvas.rgb, (size_t)ch * cw * 3) == 0, "%s: canvas differs", im->file);
        free(want);
    }
    REQUIRE(eng_image_hd_transform(&img, &hp, &im->hd) == 0, "transform %s", im->file);
    im->hd_side = hp.crop;
    CHECK(im->hd.h_crop == im->h_crop && im->hd.w_crop == im->w_crop, "%s: grid %dx%d, want %dx%d",
          im->file, im->hd.h_crop, im->hd.w_crop, im->h_crop, im->w_crop);
    size_t S = (size_t)c->vision.image_size;
    float *glob = vg_read_exact(vg_get(ji, "global_view_file")->valuestring, 3 * S * S * sizeof(float));
    double worst = 0;
    for (size_t i = 0; i < 3 * S * S; i++) {
        double d = fabs((double)glob[i] - im->hd.pixels[i]);
        worst = d > worst || isnan(d) ? d : worst;
    }
    CHECK(worst <= VIEW_ATOL, "%s: global view off by %g", im->file, worst);
    free(glob);
    eng_image_free(&img);
    eng_image_free(&canvas);
    im->embeds = vg_read_exact(vg_get(ji, "embeds_file")->valuestring,
                            (size_t)im->n_tokens * (size_t)H * sizeof(float));
}

/* The backend memory an encode holds at its peak (counted through buf_alloc / buf_free),
 * which the device budget reserves as eng_phi3v_work_bytes. */
static const struct kern_ops *count_base;
static size_t count_live, count_peak;

static int counting_alloc(struct kern_ctx *ctx, size_t bytes, void **ptr)
{
    int rc = count_base->buf_alloc(ctx, bytes + 16, ptr);
    if (rc == 0 && *ptr) {
        memcpy(*ptr, &bytes, sizeof bytes); /* host backends: the size ahead of the buffer */
        *ptr = (char *)*ptr + 16;
        count_live += bytes;
        count_peak = count_live > count_peak ? count_live : count_peak;
    }
    return rc;
}

static void counting_free(struct kern_ctx *ctx, void *ptr)
{
    if (!ptr)
        return;
    size_t bytes;
    memcpy(&bytes, (char *)ptr - 16, sizeof bytes);
    count_live -= bytes;
    count_base->buf_free(ctx, (char *)ptr - 16);
}

static void check_work_bytes(const struct eng_model *m, const struct kern_ops *ops,
                             struct kern_ctx *ctx, const struct vimage *im)
{
    struct kern_ops counted = *ops;
    counted.buf_alloc = counting_alloc;
    counted.buf_free = counting_free;
    count_base = ops;
    count_live = count_peak = 0;
    float *out = tu_xmalloc((size_t)im->n_tokens * (size_t)H * sizeof(float));
    CHECK(eng_phi3v_encode(m, &counted, ctx, im->hd.pixels, im->h_crop, im->w_crop, out) == 0,
          "%s: counted encode", im->file);
    CHECK(count_live == 0 && count_peak > 0 && count_peak <= eng_phi3v_work_bytes(&m->cfg),
          "%s: encode peak %zu bytes (live after %zu), budget %zu", im->file, count_peak,
          count_live, eng_phi3v_work_bytes(&m->cfg));
    free(out);
}

/* The encoder on the backend from phiserve's own views against transformers' features. */
static float *encode(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     const struct vimage *im)
{
    float *out = NULL;
    REQUIRE(ops->buf_alloc(ctx, (size_t)im->n_tokens * (size_t)H * sizeof(float), (void **)&out) == 0,
            "alloc");
    int rc = eng_phi3v_encode(m, ops, ctx, im->hd.pixels, im->h_crop, im->w_crop, out);
    CHECK(rc == 0, "%s: encode rc %d", im->file, rc);
    double e = vg_rel_err(out, im->embeds, (size_t)im->n_tokens * (size_t)H);
    CHECK(e <= RTOL, "%s: image features off by %g of their scale", im->file, e);
    printf("  %-22s %dx%d crops, %3d tokens, features rel err %.2e\n", im->file, im->h_crop,
           im->w_crop, im->n_tokens, e);
    return out;
}

/* One sequence's prompt through eng_phi3_forward, split at `split` (0: whole), with the image
 * rows taken from feats; compares the stored rows' logits. */
static void run_case(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     const struct vcase *g, float *const *feats, int32_t split)
{
    const int64_t bs = 16;
    int32_t nb = (int32_t)((g->n_ids + bs - 1) / bs);
    struct eng_kv_cache *kv = NULL;
    char err[256];
    REQUIRE(eng_kv_cache_create(m->cfg.num_hidden_layers, m->cfg.num_key_value_heads,
                                m->cfg.head_dim, bs, nb + 3, KERN_DTYPE_F32, &kv, err,
                                sizeof err) == 0, "%s", err);
    int32_t *table = tu_xcalloc((size_t)nb, sizeof *table), spare[3];
    for (int i = 0; i < 3; i++)
        eng_kv_cache_alloc_block(kv, &spare[i]);
    for (int32_t b = nb - 1; b >= 0; b--)
        eng_kv_cache_alloc_block(kv, &table[b]);
    int32_t *ids = tu_xmalloc((size_t)g->n_ids * sizeof *ids);
    int32_t *pos = tu_xmalloc((size_t)g->n_ids * sizeof *pos);
    int64_t *slots = tu_xmalloc((size_t)g->n_ids * sizeof *slots);
    float *logits = tu_xmalloc((size_t)g->n_rows * (size_t)V * sizeof *logits);
    float *got = tu_xmalloc((size_t)g->n_rows * (size_t)V * sizeof *got);
    struct eng_phi3_ws ws = {0};
    int32_t bounds[3] = {0, split > 0 ? split : g->n_ids, g->n_ids};
    for (int part = 0; part < 2; part++) {
        int32_t lo = bounds[part], hi = bounds[part + 1];
        if (lo == hi)
            continue;
        int32_t T = hi - lo, rows[16], R = 0, row_idx[16];
        struct eng_embed_span spans[16];
        int32_t n_spans = 0;
        for (int32_t p = lo; p < hi; p++) {
            ids[p - lo] = g->ids[p] < 0 ? 0 : g->ids[p];
            pos[p - lo] = p;
            slots[p - lo] = (int64_t)table[p / bs] * bs + p % bs;
        }
        /* Image k's span: the run of -k; each run's rows inside [lo, hi). */
        for (int32_t p = 0, k = 0; p < g->n_ids; k++) {
            while (p < g->n_ids && g->ids[p] >= 0)
                p++;
            if (p == g->n_ids)
                break;
            int32_t start = p, id = g->ids[p];
            while (p < g->n_ids && g->ids[p] == id)
                p++;
            int32_t a = start > lo ? start : lo, b = p < hi ? p : hi;
            if (a < b)
                spans[n_spans++] = (struct eng_embed_span){
                    .row = a - lo, .n_rows = b - a,
                    .src = feats[g->img[-id - 1]] + (int64_t)(a - start) * H};
        }
        for (int32_t r = 0; r < g->n_rows; r++)
            if (g->rows[r] >= lo && g->rows[r] < hi) {
                row_idx[R] = r;
                rows[R++] = g->rows[r] - lo;
            }
        int32_t qs = 0, ql = T, cl = hi;
        uint8_t var = 0;
        struct eng_batch b = {
            .n_tokens = T, .token_ids = ids, .positions = pos, .slot_mapping = slots,
            .n_seqs = 1, .q_start = &qs, .q_len = &ql, .ctx_len = &cl, .block_tables = table,
            .max_blocks = nb, .rope_variant = &var, .n_logit_rows = R, .logit_rows = rows,
            .n_embed_spans = n_spans, .embed_spans = spans,
        };
        int rc = eng_phi3_forward(m, ops, ctx, kv, &b, &ws, logits, NULL);
        CHECK(rc == 0, "%s: forward rc %d", g->name, rc);
        for (int32_t k = 0; k < R; k++)
            memcpy(got + (size_t)row_idx[k] * V, logits + (size_t)k * V, (size_t)V * sizeof *got);
    }
    double e = vg_rel_err(got, g->logits, (size_t)g->n_rows * (size_t)V);
    CHECK(e <= RTOL, "%s (split %d): logits off by %g of their scale", g->name, split, e);
    printf("  %-12s split %3d: logits rel err %.2e\n", g->name, split, e);
    eng_phi3_ws_free(&ws);
    free(ids);
    free(pos);
    free(slots);
    free(logits);
    free(got);
    free(table);
    eng_kv_cache_destroy(kv);
}

/* The request of a case: ids with 0 in the spans, one image input per span. */
static void make_request(const struct vcase *g, const struct vimage *imgs, int32_t *ids,
                         struct eng_image_input *in, int32_t *n_in)
{
    *n_in = 0;
    for (int32_t p = 0; p < g->n_ids; p++) {
        ids[p] = g->ids[p] < 0 ? 0 : g->ids[p];
        if (g->ids[p] < 0 && (p == 0 || g->ids[p - 1] != g->ids[p])) {
            const struct vimage *im = &imgs[g->img[-g->ids[p] - 1]];
            in[(*n_in)++] = (struct eng_image_input){
                .views = im->hd.pixels, .h_crop = im->h_crop, .w_crop = im->w_crop, .pos = p};
        }
    }
}

static int submit(struct eng_engine *e, const struct vcase *g, const struct vimage *imgs,
                  struct vg_run *r, const struct vimage *swap)
{
    int32_t *ids = tu_xmalloc((size_t)g->n_ids * sizeof *ids), n_in;
    struct eng_image_input in[8];
    make_request(g, imgs, ids, in, &n_in);
    if (swap) /* the same prompt with another image of the same grid in the first span */
        in[0].views = swap->hd.pixels;
    struct eng_request q = {.prompt = ids, .n_prompt = g->n_ids, .max_tokens = g->n_greedy,
                            .n = 1, .images = in, .n_images = n_in};
    char err[256] = "";
    memset(r, 0, sizeof *r);
    int rc = eng_engine_submit(e, &q, NULL, NULL, &r->h, err, sizeof err);
    CHECK(rc == 0, "%s: submit: %s", g->name, err);
    free(ids);
    return rc;
}

/* Greedy through the engine: all cases at once (batched, chunked by a small token budget),
 * then again one by one (prefix-cache hits over text and images), then a swapped image. */
static void check_engine(const struct eng_model_config *c, const char *device, struct vcase *cs,
                         int n, const struct vimage *imgs)
{
    struct eng_engine_options o;
    eng_engine_options_init(&o);
    o.model_dir = dir;
    o.device = device;
    o.n_threads = 2;
    o.max_batched_tokens = 24; /* chunks cut through the image spans */
    struct eng_engine *e = NULL;
    char err[512];
    REQUIRE(eng_engine_create(&o, &e, err, sizeof err) == 0, "engine: %s", err);
    struct vg_run *runs = tu_xcalloc((size_t)n, sizeof *runs);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++) {
            if (submit(e, &cs[i], imgs, &runs[i], NULL) == 0 && pass == 1)
                vg_collect(&runs[i]);
        }
        for (int i = 0; i < n && pass == 0; i++)
            vg_collect(&runs[i]);
        for (int i = 0; i < n; i++) {
            CHECK(runs[i].n == cs[i].n_greedy &&
                      memcmp(runs[i].tokens, cs[i].greedy, (size_t)cs[i].n_greedy * 4) == 0,
                  "%s (pass %d): greedy differs from transformers", cs[i].name, pass);
            /* The second time every full block of the prompt is a hit. */
            if (pass == 1)
                CHECK(runs[i].usage.cached_tokens >= (cs[i].n_ids - 1) / 16 * 16,
                      "%s: %d cached tokens of %d", cs[i].name, runs[i].usage.cached_tokens,
                      cs[i].n_ids);
        }
    }
    /* The first image changed (its views brightened): no block holding it may hit, and the
     * continuation changes. */
    for (int i = 0; i < n; i++) {
        const struct vimage *first = &imgs[cs[i].img[0]];
        struct vimage other = *first;
        size_t nv = (size_t)first->hd.n_views * 3 * (size_t)first->hd_side * first->hd_side;
        other.hd.pixels = tu_xmalloc(nv * sizeof(float));
        for (size_t k = 0; k < nv; k++)
            other.hd.pixels[k] = first->hd.pixels[k] + 0.5f;
        int32_t start = 0;
        while (cs[i].ids[start] >= 0)
            start++;
        struct vg_run r;
        if (submit(e, &cs[i], imgs, &r, &other) == 0) {
            vg_collect(&r);
            CHECK(r.usage.cached_tokens <= start, "%s: %d tokens hit past the image at %d",
                  cs[i].name, r.usage.cached_tokens, start);
            CHECK(r.n != cs[i].n_greedy ||
                      memcmp(r.tokens, cs[i].greedy, (size_t)cs[i].n_greedy * 4) != 0,
                  "%s: another image gave the same continuation", cs[i].name);
        }
        free(other.hd.pixels);
    }
    free(runs);
    eng_engine_destroy(e);

    /* A pool of 9 blocks for six prompts of 3 to 5 blocks each: sequences are preempted and
     * recomputed, image rows included, and still give transformers' tokens. */
    o.kv_cache_bytes = (int64_t)eng_kv_cache_block_bytes(c->num_hidden_layers, c->num_key_value_heads,
                                                          c->head_dim, 16, KERN_DTYPE_F32) * 9;
    o.no_prefix_caching = true;
    REQUIRE(eng_engine_create(&o, &e, err, sizeof err) == 0, "engine: %s", err);
    runs = tu_xcalloc((size_t)n, sizeof *runs);
    for (int i = 0; i < n; i++)
        submit(e, &cs[i], imgs, &runs[i], NULL);
    for (int i = 0; i < n; i++) {
        vg_collect(&runs[i]);
        CHECK(runs[i].n == cs[i].n_greedy &&
                  memcmp(runs[i].tokens, cs[i].greedy, (size_t)cs[i].n_greedy * 4) == 0,
              "%s (preempted): greedy differs from transformers", cs[i].name);
    }
    struct eng_metrics mt;
    eng_engine_get_metrics(e, &mt);
    CHECK(mt.preemptions > 0, "no preemption happened (%lld)", (long long)mt.preemptions);
    printf("  %d requests in 9 blocks: %lld preemptions\n", n, (long long)mt.preemptions);
    free(runs);
    eng_engine_destroy(e);
}

/* The server's prompt rule against the processor's ids for the chat cases. */
static void check_chat_tokens(const struct eng_model_config *c, const struct vcase *g,
                              const struct vimage *imgs)
{
    struct eng_tokenizer *tok = NULL;
    char err[256];
    REQUIRE(eng_tokenizer_load_dir(dir, &tok, err, sizeof err) == 0, "tokenizer: %s", err);
    const char *prompt = vg_get(g->json, "prompt")->valuestring;
    struct srv_images im = {0};
    im.n = (size_t)g->n_img;
    im.hd = tu_xcalloc(im.n, sizeof *im.hd);
    for (size_t k = 0; k < im.n; k++)
        im.hd[k] = imgs[g->img[k]].hd; /* borrowed: not freed through im */
    int32_t *ids = NULL;
    size_t n_ids = 0;
    struct srv_image_error e = {0};
    int rc = srv_images_tokenize(tok, &c->vision, prompt, strlen(prompt), 4096, &im, &ids, &n_ids,
                                 &e);
    CHECK(rc == 0, "%s: tokenize: %s", g->name, e.message);
    bool same = rc == 0 && n_ids == (size_t)g->n_ids;
    for (size_t p = 0; same && p < n_ids; p++)
        same = ids[p] == (g->ids[p] < 0 ? 0 : g->ids[p]);
    CHECK(same, "%s: %zu ids differ from the processor's %d", g->name, n_ids, g->n_ids);
    CHECK(rc != 0 || im.n_in == g->n_img, "%s: %d image spans", g->name, im.n_in);
    for (int32_t k = 0; rc == 0 && k < im.n_in; k++) {
        int32_t p = im.in[k].pos;
        CHECK(p >= 0 && p < g->n_ids && g->ids[p] == -(k + 1) && (p == 0 || g->ids[p - 1] != -(k + 1)),
              "%s: span %d at %d", g->name, k, p);
    }
    free(ids);
    /* A tag for a missing image, and an image no tag names. */
    static const struct {
        const char *prompt, *want;
    } bad[] = {
        {"<|user|>\n<|image_9|>\nx<|end|>\n", "<|image_9|>"},
        {"<|user|>\nnothing<|end|>\n", "not referenced"},
        {"<|image_1|>x<|image_1|>", "more than once"},
    };
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        free(im.in);
        im.in = NULL;
        rc = srv_images_tokenize(tok, &c->vision, bad[b].prompt, strlen(bad[b].prompt), 4096, &im,
                                 &ids, &n_ids, &e);
        CHECK(rc == -1 && ids == NULL && strstr(e.message, bad[b].want),
              "%s: bad prompt %zu accepted (%s)", g->name, b, e.message);
    }
    /* The context bound: the spans count. */
    free(im.in);
    im.in = NULL;
    rc = srv_images_tokenize(tok, &c->vision, prompt, strlen(prompt), (size_t)g->n_ids - 1, &im,
                             &ids, &n_ids, &e);
    CHECK(rc == -1 && ids == NULL && e.code == SRV_ERR_CONTEXT_LENGTH, "%s: too long accepted",
          g->name);
    free(im.in);
    free(im.hd);
    eng_tokenizer_destroy(tok);
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[2], "ref") != 0 && strcmp(argv[2], "cpu") != 0)) {
        fprintf(stderr, "usage: test_vision MODEL_DIR ref|cpu\n");
        return 2;
    }
    dir = argv[1];
    char err[512];
    struct eng_model *m = NULL;
    REQUIRE(eng_model_load(dir, &m, err, sizeof err) == 0, "load: %s", err);
    V = m->cfg.vocab_size;
    H = m->cfg.hidden_size;
    struct kern_ops ops;
    struct kern_ctx *ctx = NULL;
    kern_ops_init_ref(&ops);
    if (strcmp(argv[2], "cpu") == 0) {
        kern_ops_init_cpu(&ops);
        ctx = kern_ctx_create_cpu(2);
    }
    cJSON *root = vg_load_golden();

    const cJSON *jimgs = vg_get(root, "images"), *jcases = vg_get(root, "cases");
    int n_imgs = cJSON_GetArraySize(jimgs), n = cJSON_GetArraySize(jcases);
    REQUIRE(n_imgs > 0 && n_imgs <= 16 && n > 0 && n <= 16, "sizes");
    struct vimage *imgs = tu_xcalloc((size_t)n_imgs, sizeof *imgs);
    float **feats = tu_xcalloc((size_t)n_imgs, sizeof *feats);
    const char *names[16];
    printf("images (%s):\n", argv[2]);
    for (int i = 0; i < n_imgs; i++) {
        check_image(cJSON_GetArrayItem(jimgs, i), &m->cfg, &imgs[i]);
        names[i] = imgs[i].file;
        feats[i] = encode(m, &ops, ctx, &imgs[i]);
        check_work_bytes(m, &ops, ctx, &imgs[i]);
    }

    struct vcase *cs = tu_xcalloc((size_t)n, sizeof *cs);
    printf("prompts:\n");
    for (int i = 0; i < n; i++) {
        const cJSON *jc = cJSON_GetArrayItem(jcases, i);
        struct vcase *g = &cs[i];
        g->json = jc;
        snprintf(g->name, sizeof g->name, "%s", vg_get(jc, "name")->valuestring);
        g->ids = vg_ints(vg_get(jc, "input_ids"), &g->n_ids);
        g->rows = vg_ints(vg_get(jc, "logit_rows"), &g->n_rows);
        g->greedy = vg_ints(vg_get(jc, "greedy"), &g->n_greedy);
        REQUIRE(g->n_rows <= 16 && g->n_greedy <= 64, "%s: sizes", g->name);
        g->n_img = vg_case_images(jc, names, n_imgs, g->img);
        g->logits = vg_read_exact(vg_get(jc, "logits_file")->valuestring,
                               (size_t)g->n_rows * (size_t)V * sizeof(float));
        int32_t first = 0;
        while (first < g->n_ids && g->ids[first] >= 0)
            first++;
        run_case(m, &ops, ctx, g, feats, 0);
        /* Split inside the first image's span, then just before it. */
        run_case(m, &ops, ctx, g, feats, first + imgs[g->img[0]].n_tokens / 2);
        if (first > 0)
            run_case(m, &ops, ctx, g, feats, first);
        if (strcmp(vg_get(jc, "kind")->valuestring, "chat") == 0)
            check_chat_tokens(&m->cfg, g, imgs);
    }
    printf("engine greedy (%s):\n", argv[2]);
    check_engine(&m->cfg, argv[2], cs, n, imgs);

    for (int i = 0; i < n; i++) {
        free(cs[i].ids);
        free(cs[i].rows);
        free(cs[i].greedy);
        free(cs[i].logits);
    }
    for (int i = 0; i < n_imgs; i++) {
        ops.buf_free(ctx, feats[i]);
        eng_hd_image_free(&imgs[i].hd);
        free(imgs[i].embeds);
    }
    free(cs);
    free(imgs);
    free(feats);
    cJSON_Delete(root);
    if (ctx)
        kern_ctx_destroy(ctx);
    eng_model_destroy(m);
    return tu_finish("test_vision");
}
