/* phiserve's entry point: dispatches to a subcommand. Each subcommand lives in its own
 * cmd_*.c file; this file only knows their names and the global --help/--version. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "phiserve %s - an OpenAI-compatible inference server for Phi-3 / Phi-3.5 models\n"
            "\n"
            "usage: phiserve <command> [options]\n"
            "\n"
            "commands:\n"
            "  generate   greedy generation from token ids or a prompt, printed to stdout\n"
            "  serve      the OpenAI-compatible HTTP server (see `phiserve serve --help`)\n"
            "  tokenize   text to token ids (or --detokenize ids to text) with the model's tokenizer\n"
            "\n"
            "Every command takes --model PATH (a Hugging Face model directory or a GGUF file); without\n"
            "it the bundled demo model is used. `phiserve <command> --help` lists a command's options.\n"
            "\n"
            "  -h, --help     this text\n"
            "  -V, --version  print the version\n",
            PHISERVE_VERSION);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0) {
        printf("phiserve %s\n", PHISERVE_VERSION);
        return 0;
    }
    if (strcmp(cmd, "generate") == 0)
        return srv_cmd_generate(argc - 1, argv + 1);
    if (strcmp(cmd, "tokenize") == 0)
        return srv_cmd_tokenize(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0)
        return srv_cmd_serve(argc - 1, argv + 1);
    fprintf(stderr, "phiserve: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
