/* The tokenizer of the fuzz targets that need one: loaded from $PHISERVE_TOKENIZER_DIR on
 * first use and kept for the process (fuzz entry points have no context argument, so a static
 * handle is the only option). Aborts, naming the target, when it cannot be loaded. */
#ifndef PHISERVE_TESTS_FUZZ_TOKENIZER_ENV_H
#define PHISERVE_TESTS_FUZZ_TOKENIZER_ENV_H

#include <stdio.h>
#include <stdlib.h>

#include "tokenizer.h"

static inline const struct eng_tokenizer *fuzz_tokenizer_from_env(const char *target)
{
    static struct eng_tokenizer *tok;
    if (tok == NULL) {
        const char *dir = getenv("PHISERVE_TOKENIZER_DIR");
        char err[256] = "";
        if (dir == NULL || eng_tokenizer_load_dir(dir, &tok, err, sizeof err) != 0) {
            fprintf(stderr, "%s: set PHISERVE_TOKENIZER_DIR to a tokenizer directory (%s)\n",
                    target, err);
            abort();
        }
    }
    return tok;
}

#endif
