/* Phi-3-vision's image encoder: CLIP ViT tower (pre-LN, quick_gelu, the features of layer
 * n_layers_run without CLS), the 2x2 merge and crop stitching with sub_GN / glb_GN separators
 * as one row gather, and the GELU projector (reference/phi3-models.md sections 5.3-5.4). It
 * does not preprocess images (engine/image.c) or place the features in a prompt (the engine). */
#include "models/phi3v.h"

#include "layer_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TRY(call)                                                                                 \
    do {                                                                                          \
        int rc_ = (call);                                                                         \
        if (rc_ != 0)                                                                             \
            return rc_;                                                                           \
    } while (0)

/* Views the tower runs at once: bounds the scratch (8 x 577 rows on the real tower). */
#define VIEW_CHUNK 8

void eng_phi3v_assembly_rows(const struct eng_vision_config *v, int32_t h_crop, int32_t w_crop,
                             int32_t *rows)
{
    int64_t g = v->grid, r2 = g / 2, n1 = g * g + 1;
    int64_t n_views = 1 + (int64_t)h_crop * w_crop;
    int64_t sub = n_views * n1, glb = sub + 4; /* the separators' first rows */
    int64_t k = 0;
    /* One merged cell: patches (2r + dy, 2c + dx) of view `view`, dy then dx. */
#define CELL(view, r, c)                                                                          \
    do {                                                                                          \
        for (int64_t dy_ = 0; dy_ < 2; dy_++)                                                     \
            for (int64_t dx_ = 0; dx_ < 2; dx_++)                                                 \
                rows[k++] = (int32_t)((view) * n1 + 1 + (2 * (r) + dy_) * g + 2 * (c) + dx_);     \
    } while (0)
#define SEP(first)                                                                                \
    do {                                                                                          \
        for (int64_t j_ = 0; j_ < 4; j_++)                                                        \
            rows[k++] = (int32_t)((first) + j_);                                                  \
    } while (0)
    /* The crops stitched into one grid, row-major, sub_GN after every row. */
    for (int64_t R = 0; R < h_crop * r2; R++) {
        for (int64_t Cc = 0; Cc < w_crop * r2; Cc++)
            CELL(1 + (R / r2) * w_crop + Cc / r2, R % r2, Cc % r2);
        SEP(sub);
    }
    SEP(glb);
    /* The global view, sub_GN after every row. */
    for (int64_t R = 0; R < r2; R++) {
        for (int64_t Cc = 0; Cc < r2; Cc++)
            CELL(0, R, Cc);
        SEP(sub);
    }
#undef CELL
#undef SEP
}

static int act(const struct kern_ops *ops, struct kern_ctx *ctx, float *x, int64_t n,
               enum kern_act kind)
{
    struct kern_act_params p = {.x = x, .out = x, .n = n, .kind = kind};
    return ops->act(ctx, &p);
}

/* Backend scratch of one encode call. */
struct enc_ws {
    float *patches;  /* [chunk P, 3 p p] */
    float *x, *h;    /* [chunk (P + 1), C] */
    float *qkv;      /* [chunk (P + 1), 3 C] */
    float *att;      /* [chunk (P + 1), C] */
    float *mid;      /* [chunk (P + 1), Ci] */
    float *feat;     /* [n_views (P + 1) + 8, C] tower outputs, then the separators */
    int32_t *rows;   /* [4 T] */
    float *merged;   /* [T, 4 C] */
    float *proj;     /* [T, H] */
};

#define N_ENC_BUFS 10

static void enc_free(const struct kern_ops *ops, struct kern_ctx *ctx, struct enc_ws *w)
{
    void *bufs[N_ENC_BUFS] = {w->patches, w->x, w->h, w->qkv, w->att, w->mid, w->feat, w->rows,
                              w->merged, w->proj};
    for (int i = 0; i < N_ENC_BUFS; i++)
        ops->buf_free(ctx, bufs[i]);
}

/* One layer of the tower over R rows (nv views of N1 tokens) in w->x. */
static int tower_layer(const struct eng_model *m, const struct kern_ops *ops,
                       struct kern_ctx *ctx, const struct eng_vision_layer *L, struct enc_ws *w,
                       int64_t nv)
{
    const struct eng_vision_config *vc = &m->cfg.vision;
    int64_t C = vc->hidden_size, Ci = vc->intermediate_size, N1 = vc->grid * vc->grid + 1;
    int64_t R = nv * N1, hd = C / vc->num_attention_heads;
    double eps = vc->layer_norm_eps;
    TRY(eng_op_layernorm(ops, ctx, w->x, L->ln1, L->ln1_b, w->h, R, C, eps));
    TRY(eng_op_linear(ops, ctx, w->h, C, L->q, L->q_b, w->qkv, 3 * C, R, C, C, 0));
    TRY(eng_op_linear(ops, ctx, w->h, C, L->k, L->k_b, w->qkv + C, 3 * C, R, C, C, 0));
    TRY(eng_op_linear(ops, ctx, w->h, C, L->v, L->v_b, w->qkv + 2 * C, 3 * C, R, C, C, 0));
    struct kern_attention_dense_params a = {
        .q = w->qkv, .k = w->qkv + C, .v = w->qkv + 2 * C, .out = w->att,
        .n_seqs = nv, .seq_len = N1, .n_heads = vc->num_attention_heads, .head_dim = hd,
        .ld = 3 * C, .scale = (float)(1.0 / sqrt((double)hd)),
    };
    TRY(ops->attention_dense(ctx, &a));
    TRY(eng_op_linear(ops, ctx, w->att, C, L->o, L->o_b, w->x, C, R, C, C, 1));
    TRY(eng_op_layernorm(ops, ctx, w->x, L->ln2, L->ln2_b, w->h, R, C, eps));
    TRY(eng_op_linear(ops, ctx, w->h, C, L->fc1, L->fc1_b, w->mid, Ci, R, Ci, C, 0));
    TRY(act(ops, ctx, w->mid, R * Ci, KERN_ACT_QUICK_GELU));
    return eng_op_linear(ops, ctx, w->mid, Ci, L->fc2, L->fc2_b, w->x, C, R, C, Ci, 1);
}

/* The patch conv as rows: row vi * P + py * g + px holds view v0 + vi's pixels under patch
 * (py, px) in the weight's (channel, ky, kx) order. */
static void im2col(const struct eng_vision_config *vc, const float *views, int64_t v0, int64_t nv,
                   float *out)
{
    int64_t S = vc->image_size, p = vc->patch_size, g = vc->grid, K = 3 * p * p;
    for (int64_t vi = 0; vi < nv; vi++) {
        const float *img = views + (v0 + vi) * 3 * S * S;
        for (int64_t py = 0; py < g; py++)
            for (int64_t px = 0; px < g; px++) {
                float *row = out + ((vi * g + py) * g + px) * K;
                for (int64_t c = 0; c < 3; c++)
                    for (int64_t ky = 0; ky < p; ky++)
                        memcpy(row + (c * p + ky) * p,
                               img + (c * S + py * p + ky) * S + px * p, (size_t)p * sizeof *row);
            }
    }
}

/* Runs the tower over every view and leaves their features in w->feat. */
static int run_tower(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     const float *views, int64_t n_views, int64_t chunk, float *host_patches,
                     struct enc_ws *w)
{
    const struct eng_vision_config *vc = &m->cfg.vision;
    const struct eng_vision *v = m->vision;
    int64_t C = vc->hidden_size, P = vc->grid * vc->grid, N1 = P + 1;
    int64_t K = 3 * vc->patch_size * vc->patch_size;
    for (int64_t v0 = 0; v0 < n_views; v0 += chunk) {
        int64_t nv = n_views - v0 < chunk ? n_views - v0 : chunk, R = nv * N1;
        im2col(vc, views, v0, nv, host_patches);
        TRY(ops->buf_upload(ctx, w->patches, host_patches, (size_t)(nv * P * K) * sizeof(float)));
        /* [class; patches] + positions: the class row is zero, and pos has the class
         * embedding in its row 0. */
        TRY(ops->buf_memset(ctx, w->x, 0, (size_t)(R * C) * sizeof(float)));
        for (int64_t vi = 0; vi < nv; vi++) {
            TRY(eng_op_linear(ops, ctx, w->patches + vi * P * K, K, v->patch, (struct eng_weight){0},
                       w->x + (vi * N1 + 1) * C, C, P, C, K, 0));
            struct kern_add_params ap = {.y = w->x + vi * N1 * C, .x = v->pos.data, .n = N1 * C};
            TRY(ops->add(ctx, &ap));
        }
        TRY(eng_op_layernorm(ops, ctx, w->x, v->pre_ln, v->pre_ln_b, w->x, R, C, vc->layer_norm_eps));
        for (int64_t l = 0; l < vc->n_layers_run; l++)
            TRY(tower_layer(m, ops, ctx, &v->layers[l], w, nv));
        TRY(ops->buf_copy(ctx, w->feat + v0 * N1 * C, w->x, (size_t)(R * C) * sizeof(float)));
    }
    return ops->buf_copy(ctx, w->feat + n_views * N1 * C, v->sep.data, v->sep.n_bytes);
}

/* Bytes of each scratch buffer of an encode with n_views views and T tokens, in struct
 * enc_ws order (the int32 rows included). The config bounds every size (crops <= 64, the tower
 * as loaded; a few views of activations at a time): no overflow in int64. */
static void enc_sizes(const struct eng_model_config *c, int64_t n_views, int64_t T,
                      size_t bytes[N_ENC_BUFS])
{
    const struct eng_vision_config *vc = &c->vision;
    int64_t C = vc->hidden_size, Ci = vc->intermediate_size, H = c->hidden_size;
    int64_t P = vc->grid * vc->grid, N1 = P + 1, K = 3 * vc->patch_size * vc->patch_size;
    int64_t chunk = n_views < VIEW_CHUNK ? n_views : VIEW_CHUNK, R = chunk * N1;
    const int64_t n[N_ENC_BUFS] = {chunk * P * K, R * C, R * C, R * 3 * C, R * C, R * Ci,
                                   (n_views * N1 + 8) * C, 4 * T, T * 4 * C, T * H};
    for (int i = 0; i < N_ENC_BUFS; i++)
        bytes[i] = (size_t)n[i] * 4; /* float or int32 */
}

size_t eng_phi3v_work_bytes(const struct eng_model_config *c)
{
    if (c->arch != ENG_ARCH_PHI3V)
        return 0;
    /* The most views and tokens: all num_crops crops in one column (more rows, more
     * separators). */
    int64_t n = c->vision.num_crops;
    size_t bytes[N_ENC_BUFS], total = 0;
    enc_sizes(c, 1 + n, eng_vision_image_tokens(&c->vision, n, 1), bytes);
    for (int i = 0; i < N_ENC_BUFS; i++)
        total += bytes[i];
    return total;
}

int eng_phi3v_encode(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     const float *views, int32_t h_crop, int32_t w_crop, float *out)
{
    if (!m || !ops || !views || !out || !m->vision || m->cfg.arch != ENG_ARCH_PHI3V)
        return KERN_ERR_INVALID;
    const struct eng_vision_config *vc = &m->cfg.vision;
    if (h_crop < 1 || w_crop < 1 || (int64_t)h_crop * w_crop > vc->num_crops)
        return KERN_ERR_INVALID;
    if (!ops->act || !ops->attention_dense || !ops->layernorm || !ops->bias_add)
        return KERN_ERR_UNSUPPORTED;
    int64_t C = vc->hidden_size, H = m->cfg.hidden_size, N1 = vc->grid * vc->grid + 1;
    int64_t n_views = 1 + (int64_t)h_crop * w_crop;
    int64_t chunk = n_views < VIEW_CHUNK ? n_views : VIEW_CHUNK;
    int64_t T = eng_vision_image_tokens(vc, h_crop, w_crop);

    struct enc_ws w = {0};
    size_t bytes[N_ENC_BUFS];
    enc_sizes(&m->cfg, n_views, T, bytes);
    void **bufs[N_ENC_BUFS] = {(void **)&w.patches, (void **)&w.x, (void **)&w.h,
                               (void **)&w.qkv, (void **)&w.att, (void **)&w.mid,
                               (void **)&w.feat, (void **)&w.rows, (void **)&w.merged,
                               (void **)&w.proj};
    float *host_patches = malloc(bytes[0]);
    int32_t *host_rows = malloc(bytes[7]);
    int rc = !host_patches || !host_rows ? KERN_ERR_NOMEM : 0;
    for (int i = 0; i < N_ENC_BUFS && rc == 0; i++)
        rc = ops->buf_alloc(ctx, bytes[i], bufs[i]);
    if (rc == 0)
        rc = run_tower(m, ops, ctx, views, n_views, chunk, host_patches, &w);
    if (rc == 0) {
        eng_phi3v_assembly_rows(vc, h_crop, w_crop, host_rows);
        rc = ops->buf_upload(ctx, w.rows, host_rows, bytes[7]);
    }
    if (rc == 0) {
        struct kern_gather_rows_params g = {
            .x = w.feat, .rows = w.rows, .out = w.merged,
            .n_in = n_views * N1 + 8, .n_out = 4 * T, .dim = C,
        };
        const struct eng_vision *v = m->vision;
        rc = ops->gather_rows(ctx, &g);
        if (rc == 0)
            rc = eng_op_linear(ops, ctx, w.merged, 4 * C, v->proj0, v->proj0_b, w.proj, H, T, H, 4 * C, 0);
        if (rc == 0)
            rc = act(ops, ctx, w.proj, T * H, KERN_ACT_GELU);
        if (rc == 0)
            rc = eng_op_linear(ops, ctx, w.proj, H, v->proj2, v->proj2_b, out, H, T, H, H, 0);
    }
    enc_free(ops, ctx, &w);
    free(host_patches);
    free(host_rows);
    return rc;
}
