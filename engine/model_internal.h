/* What the model loaders (model.c for Hugging Face directories, model_gguf.c for GGUF files)
 * share and nobody else calls. */
#ifndef PHISERVE_ENGINE_MODEL_INTERNAL_H
#define PHISERVE_ENGINE_MODEL_INTERNAL_H

#include <stddef.h>

#include "model.h"

/* Fills the RoPE tables (inv_freq, n_rope_variants, mscale, rope_inv_freq) from m->cfg.
 * Returns 0, or -1 with a message in err for a config the rope op cannot serve. */
int eng_model_init_rope(struct eng_model *m, char *err, size_t errlen);

/* Loads the GGUF file at path (architecture phi3) into *out, as eng_model_load does a
 * directory. */
int eng_model_load_gguf(const char *path, struct eng_model **out, char *err, size_t errlen);

#endif
