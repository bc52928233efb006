/* Benchmark (not a test): Phi-3.5-vision's image encoder on the GPU. A model with the real
 * shapes (CLIP ViT-L/14-336 with its 23 feature layers, the 4096 -> 3072 -> 3072 projector)
 * and random bf16 weights is made in device memory, and eng_phi3v_encode is timed on images of
 * 1x1, 2x2 and 4x4 crops (2, 5 and 17 views of 336 x 336). Prints "RESULT key value" lines:
 * the time per image, the views per second, and the TFLOP/s reached (reference/performance.md
 * puts a 16-crop image at about 6 TFLOP, 10 ms on an H200). --tiny uses the vision-demo
 * fixture's shapes instead, to try the program on the CUDA emulator; --cpu runs the 1x1 image
 * once on the fast CPU backend (all cores) instead of the GPU.
 * Usage: bench_gpu_vision [--tiny] [--cpu] */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_backend.h"
#include "dtype.h"
#include "model.h"
#include "models/phi3v.h"

#include "../test_util.h"

#define TRY(call)                                                                              \
    do {                                                                                       \
        int rc_ = (call);                                                                      \
        if (rc_ != 0) {                                                                        \
            fprintf(stderr, "%s:%d: %s failed (%d)\n", __FILE__, __LINE__, #call, rc_);        \
            return rc_;                                                                        \
        }                                                                                      \
    } while (0)

static const char *const CONFIG =
    "{\"architectures\": [\"Phi3VForCausalLM\"], \"model_type\": \"phi3_v\","
    " \"hidden_size\": 3072, \"intermediate_size\": 8192, \"num_hidden_layers\": 32,"
    " \"num_attention_heads\": 32, \"vocab_size\": 32064, \"max_position_embeddings\": 131072,"
    " \"embd_layer\": {\"embedding_cls\": \"image\", \"hd_transform_order\": \"sub_glb\","
    "   \"projection_cls\": \"mlp\", \"use_hd_transform\": true, \"with_learnable_separator\": true},"
    " \"img_processor\": {\"image_dim_out\": 1024, \"name\": \"clip_vision_model\","
    "   \"num_img_tokens\": 144}}";

static const char *const TINY =
    "{\"architectures\": [\"Phi3VForCausalLM\"], \"model_type\": \"phi3_v\","
    " \"hidden_size\": 32, \"intermediate_size\": 64, \"num_hidden_layers\": 2,"
    " \"num_attention_heads\": 2, \"vocab_size\": 32064, \"max_position_embeddings\": 4096,"
    " \"embd_layer\": {\"embedding_cls\": \"image\", \"hd_transform_order\": \"sub_glb\","
    "   \"projection_cls\": \"mlp\", \"use_hd_transform\": true, \"with_learnable_separator\": true},"
    " \"img_processor\": {\"image_dim_out\": 32, \"name\": \"clip_vision_model\","
    "   \"num_img_tokens\": 4, \"vision_config\": {\"hidden_size\": 32, \"intermediate_size\": 64,"
    "   \"num_attention_heads\": 4, \"num_hidden_layers\": 3, \"image_size\": 56, \"patch_size\": 14}}}";

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float uniform_sd1(void)
{
    return ((float)(tu_xorshift64(&rng_state) >> 40) / (float)(1 << 24) - 0.5f) * 3.4641016f;
}

struct bench {
    struct kern_ops ops;
    struct kern_ctx *ctx;
    size_t bytes;
};

/* A device tensor of n values ~ sd * U(-sqrt3, sqrt3) + mean, in bf16 (or fp32). */
static int tensor(struct bench *b, size_t n, float mean, float sd, enum kern_dtype dt,
                  struct eng_weight *w)
{
    size_t es = dt == KERN_DTYPE_F32 ? 4 : 2;
    void *host = malloc(n * es), *dev = NULL;
    if (!host)
        return KERN_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        float v = mean + sd * uniform_sd1();
        if (dt == KERN_DTYPE_F32)
            ((float *)host)[i] = v;
        else
            ((uint16_t *)host)[i] = kern_f32_to_bf16(v);
    }
    int rc = b->ops.buf_alloc(b->ctx, n * es, &dev);
    if (rc == 0)
        rc = b->ops.buf_upload(b->ctx, dev, host, n * es);
    free(host);
    *w = (struct eng_weight){dev, dt, n * es};
    b->bytes += n * es;
    return rc;
}

static int linear(struct bench *b, int64_t n, int64_t k, struct eng_weight *w,
                  struct eng_weight *bias)
{
    TRY(tensor(b, (size_t)(n * k), 0.0f, 1.0f / sqrtf((float)k), KERN_DTYPE_BF16, w));
    return tensor(b, (size_t)n, 0.0f, 0.02f, KERN_DTYPE_BF16, bias);
}

static int norm(struct bench *b, int64_t c, struct eng_weight *w, struct eng_weight *bias)
{
    TRY(tensor(b, (size_t)c, 1.0f, 0.05f, KERN_DTYPE_BF16, w));
    return tensor(b, (size_t)c, 0.0f, 0.02f, KERN_DTYPE_BF16, bias);
}

static int make_model(struct bench *b, const char *config, struct eng_model *m,
                      struct eng_vision *v)
{
    char err[256];
    if (eng_model_config_parse(config, strlen(config), &m->cfg, err, sizeof err) != 0) {
        fprintf(stderr, "config: %s\n", err);
        return KERN_ERR_INVALID;
    }
    struct eng_vision_config *vc = &m->cfg.vision;
    vc->num_crops = 16;
    int64_t C = vc->hidden_size, Ci = vc->intermediate_size, H = m->cfg.hidden_size;
    int64_t p = vc->patch_size, P = vc->grid * vc->grid;
    v->layers = calloc((size_t)vc->n_layers_run, sizeof *v->layers);
    if (!v->layers)
        return KERN_ERR_NOMEM;
    struct eng_weight unused;
    TRY(linear(b, C, 3 * p * p, &v->patch, &unused));
    TRY(norm(b, C, &v->pre_ln, &v->pre_ln_b));
    for (int64_t l = 0; l < vc->n_layers_run; l++) {
        struct eng_vision_layer *L = &v->layers[l];
        TRY(norm(b, C, &L->ln1, &L->ln1_b));
        TRY(linear(b, C, C, &L->q, &L->q_b));
        TRY(linear(b, C, C, &L->k, &L->k_b));
        TRY(linear(b, C, C, &L->v, &L->v_b));
        TRY(linear(b, C, C, &L->o, &L->o_b));
        TRY(norm(b, C, &L->ln2, &L->ln2_b));
        TRY(linear(b, Ci, C, &L->fc1, &L->fc1_b));
        TRY(linear(b, C, Ci, &L->fc2, &L->fc2_b));
    }
    TRY(linear(b, H, 4 * C, &v->proj0, &v->proj0_b));
    TRY(linear(b, H, H, &v->proj2, &v->proj2_b));
    TRY(tensor(b, (size_t)((P + 1) * C), 0.0f, 0.1f, KERN_DTYPE_F32, &v->pos));
    TRY(tensor(b, (size_t)(8 * C), 0.0f, 0.1f, KERN_DTYPE_F32, &v->sep));
    m->vision = v;
    m->ops = &b->ops;
    m->ctx = b->ctx;
    return 0;
}

/* FLOPs of one image: the tower over every view (patch embedding, per layer the four C x C
 * projections, the MLP and attention's two N1 x N1 x C products) and the projector. */
static double image_flops(const struct eng_model *m, int h_crop, int w_crop)
{
    const struct eng_vision_config *vc = &m->cfg.vision;
    double C = (double)vc->hidden_size, Ci = (double)vc->intermediate_size;
    double P = (double)(vc->grid * vc->grid), N1 = P + 1, K = 3.0 * vc->patch_size * vc->patch_size;
    double H = (double)m->cfg.hidden_size;
    double views = 1.0 + h_crop * w_crop;
    double T = (double)eng_vision_image_tokens(vc, h_crop, w_crop);
    double layer = 2 * N1 * (4 * C * C + 2 * C * Ci) + 4 * N1 * N1 * C;
    return views * (2 * P * C * K + (double)vc->n_layers_run * layer) + 2 * T * (4 * C * H + H * H);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    bool tiny = false, cpu = false;
    for (int i = 1; i < argc; i++) {
        tiny |= strcmp(argv[i], "--tiny") == 0;
        cpu |= strcmp(argv[i], "--cpu") == 0;
    }
    static struct bench b;
    char err[256];
    if (cpu) {
        kern_ops_init_ref(&b.ops);
        kern_ops_init_cpu(&b.ops);
        b.ctx = kern_ctx_create_cpu(0);
    } else if (kern_cuda_device_count() == 0) {
        printf("no CUDA device: nothing to benchmark\n");
        return 77;
    } else if (kern_cuda_create(0, &b.ops, &b.ctx, err, sizeof err) != 0) {
        fprintf(stderr, "kern_cuda_create: %s\n", err);
        return 1;
    }
    static struct eng_model m;
    static struct eng_vision v;
    if (make_model(&b, tiny ? TINY : CONFIG, &m, &v) != 0)
        return 1;
    const struct eng_vision_config *vc = &m.cfg.vision;
    int64_t S = vc->image_size, H = m.cfg.hidden_size;
    size_t n_pix = (size_t)17 * 3 * (size_t)(S * S);
    float *views = malloc(n_pix * sizeof *views);
    float *out = NULL;
    if (!views || b.ops.buf_alloc(b.ctx, (size_t)eng_vision_image_tokens(vc, 4, 4) * (size_t)H * 4,
                                  (void **)&out) != 0)
        return 1;
    for (size_t i = 0; i < n_pix; i++)
        views[i] = uniform_sd1();
    printf("vision encoder on %s: tower %lld layers of %lld (heads %lld), %lld patches + CLS per view, "
           "projector -> %lld; weights %.1f MB bf16\n", b.ops.name,
           (long long)vc->n_layers_run, (long long)vc->hidden_size,
           (long long)vc->num_attention_heads, (long long)(vc->grid * vc->grid),
           (long long)H, (double)b.bytes / 1e6);
    static const int grids[3][2] = {{1, 1}, {2, 2}, {4, 4}};
    const int reps = tiny || cpu ? 1 : 10;
    for (int g = 0; g < (cpu && !tiny ? 1 : 3); g++) {
        int hc = grids[g][0], wc = grids[g][1];
        /* one untimed run: the backend's scratch and cuBLASLt plans for these shapes (not on
         * the CPU, where one full-size encode takes seconds) */
        bool warm = !(cpu && !tiny);
        if ((warm && eng_phi3v_encode(&m, &b.ops, b.ctx, views, hc, wc, out) != 0) ||
            b.ops.sync(b.ctx, err, sizeof err) != 0) {
            fprintf(stderr, "encode %dx%d failed %s\n", hc, wc, err);
            return 1;
        }
        double t0 = now_ms();
        for (int r = 0; r < reps; r++)
            if (eng_phi3v_encode(&m, &b.ops, b.ctx, views, hc, wc, out) != 0)
                return 1;
        if (b.ops.sync(b.ctx, err, sizeof err) != 0)
            return 1;
        double ms = (now_ms() - t0) / reps, views_n = 1.0 + hc * wc;
        double tflops = image_flops(&m, hc, wc) / (ms / 1e3) / 1e12;
        printf("RESULT vision_%dx%d_ms %.3f\n", hc, wc, ms);
        printf("RESULT vision_%dx%d_views_per_s %.1f\n", hc, wc, views_n / (ms / 1e3));
        printf("RESULT vision_%dx%d_tflops %.2f\n", hc, wc, tflops);
    }
    free(views);
    return 0;
}
