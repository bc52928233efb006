/* Small helpers shared by the phiserve subcommands: backend selection and number parsing.
 * Not an option framework; each subcommand parses its own flags with getopt_long. */
#ifndef PHISERVE_SERVER_CLI_H
#define PHISERVE_SERVER_CLI_H

#include <stdint.h>

#include "ops.h"

/* Fills ops/ctx for the device name ("cpu": fast CPU path, "ref": the plain reference, "cuda":
 * GPU 0). n_threads <= 0 uses every core. Returns 0, or -1 with a message on stderr. The caller
 * frees ctx with srv_cli_backend_free. */
int srv_cli_backend(const char *device, int n_threads, struct kern_ops *ops, struct kern_ctx **ctx);

/* Frees a context made by srv_cli_backend for the same device name; accepts NULL. */
void srv_cli_backend_free(const char *device, struct kern_ctx *ctx);

/* Parses a decimal integer in [lo, hi]; returns 0 or -1. */
int srv_cli_parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out);

/* Parses "1,2,3" into a malloc'd array (caller frees). Returns 0 or -1 (message on stderr). */
int srv_cli_parse_ids(const char *s, int32_t **ids, int32_t *n);

/* Subcommands. argv[0] is the subcommand name. Return the process exit code. */
int srv_cmd_generate(int argc, char **argv);
int srv_cmd_tokenize(int argc, char **argv);
int srv_cmd_serve(int argc, char **argv);

#endif
