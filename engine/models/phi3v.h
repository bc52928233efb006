/* Phi-3-vision's image encoder (Phi3VForCausalLM's vision_embed_tokens): the CLIP tower over
 * an image's HD views, the HD feature assembly ("sub_glb" order with the learned separators)
 * and the projector, producing the image's prompt embeddings. The text stack is Phi-3's
 * (models/phi3.h); preprocessing (decode, HD transform) is engine/image.h. Runs on whatever
 * backend the op table holds. */
#ifndef PHISERVE_ENGINE_MODELS_PHI3V_H
#define PHISERVE_ENGINE_MODELS_PHI3V_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "ops.h"

/* Encodes one image whose HD transform gave an h_crop x w_crop grid of crops.
 * views: HOST memory [1 + h_crop * w_crop, 3, S, S] normalised pixels, S = vision.image_size,
 *        the global view first, then the crops row-major (struct eng_hd_image's layout).
 * out:   backend memory [eng_vision_image_tokens(h_crop, w_crop), hidden_size] fp32: the
 *        projected features in prompt order (reference/phi3-models.md section 5.4).
 * The tower runs a few views at a time; its scratch comes from ops->buf_alloc and goes back
 * before the call returns (ordered with the ops). m must be a phi3_v model whose weights live
 * in this backend's memory. Returns 0, KERN_ERR_INVALID (not a vision model, a grid of more
 * than num_crops crops, NULL pointers), KERN_ERR_UNSUPPORTED (the backend lacks an op the
 * tower needs), KERN_ERR_NOMEM or an op's error. */
int eng_phi3v_encode(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
                     const float *views, int32_t h_crop, int32_t w_crop, float *out);

/* Backend bytes of the scratch eng_phi3v_encode takes for the largest image of this model
 * (num_crops crops), for the device memory budget; 0 for other architectures. */
size_t eng_phi3v_work_bytes(const struct eng_model_config *c);

/* Fills rows ([4 * n_tokens]) with the gather that assembles an image's features: the merged
 * token k is the concatenation of feature rows rows[4k .. 4k + 3] of a [n_views * (P + 1) + 8, C]
 * table holding each view's tower output (CLS row first, P = grid^2 patches), then sub_GN as 4
 * rows and glb_GN as 4 rows. n_tokens = eng_vision_image_tokens(v, h_crop, w_crop).
 * Exposed for tests. */
void eng_phi3v_assembly_rows(const struct eng_vision_config *v, int32_t h_crop, int32_t w_crop,
                             int32_t *rows);

#endif
