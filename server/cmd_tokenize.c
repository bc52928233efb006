/* `phiserve tokenize`: the model's tokenizer from the command line, for users and tests:
 * text -> ids, or ids -> text with --detokenize. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: phiserve tokenize [--model PATH] (--text TEXT | --detokenize IDS) [options]\n"
            "\n"
            "  --model PATH       Hugging Face model directory or GGUF file (default: the demo model)\n"
            "  --text TEXT        print the token ids of TEXT, comma separated\n"
            "  --no-special       do not add BOS/EOS (add_special_tokens=False)\n"
            "  --detokenize IDS   print the text of comma-separated token ids\n"
            "  --skip-special     leave special tokens out of the text\n"
            "  -h, --help         this text\n");
}

int srv_cmd_tokenize(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},
        {"text", required_argument, NULL, 't'},
        {"no-special", no_argument, NULL, 'n'},
        {"detokenize", required_argument, NULL, 'd'},
        {"skip-special", no_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model_dir = PHISERVE_DEMO_MODEL, *text = NULL, *ids_arg = NULL;
    int add_special = 1, skip_special = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 't': text = optarg; break;
        case 'n': add_special = 0; break;
        case 'd': ids_arg = optarg; break;
        case 's': skip_special = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || (!text) == (!ids_arg)) {
        fprintf(stderr, "error: give exactly one of --text or --detokenize\n");
        usage(stderr);
        return 2;
    }

    char err[512] = "";
    struct eng_tokenizer *tok = NULL;
    if (eng_tokenizer_load_path(model_dir, &tok, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s: %s\n", model_dir, err);
        return 1;
    }
    int status = 1;
    if (text) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (eng_tokenizer_encode(tok, text, strlen(text), add_special, &ids, &n) != 0) {
            fprintf(stderr, "error: tokenization failed\n");
        } else {
            for (size_t i = 0; i < n; i++)
                printf("%s%d", i ? "," : "", ids[i]);
            printf("\n");
            status = 0;
        }
        free(ids);
    } else {
        int32_t *ids = NULL, n = 0;
        char *out = NULL;
        size_t len = 0;
        if (srv_cli_parse_ids(ids_arg, &ids, &n) == 0) {
            if (eng_tokenizer_decode(tok, ids, (size_t)n, skip_special, &out, &len) != 0) {
                fprintf(stderr, "error: detokenization failed\n");
            } else {
                fwrite(out, 1, len, stdout);
                printf("\n");
                status = 0;
            }
        }
        free(out);
        free(ids);
    }
    eng_tokenizer_destroy(tok);
    return status;
}
