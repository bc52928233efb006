/* Tests server/config.c for the engine options it carries into struct eng_engine_options: each
 * reaches the struct from a flag, a PHISERVE_* variable and a config-file line, in that order of
 * precedence, and a bad value is refused naming the option and its source. Not a test of the
 * server (tests/http starts the real binary) nor of the engine's use of the options. */
#include "config.h"
#include "engine.h"

#include "../test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])) - 1)

/* Loads argv (NULL-terminated, argv[0] the subcommand) with env; returns srv_config_load's result
 * and fills *o from the config when it succeeded. */
static int load(char **argv, int argc, char *const *env, struct eng_engine_options *o, char *err,
                size_t errlen)
{
    struct srv_config cfg;
    int rc = srv_config_load(&cfg, argc, argv, env, err, errlen);
    static char int8[16];
    if (rc == 0) {
        srv_config_engine_options(&cfg, o);
        /* the strings point into cfg, which is freed below; int8_activations is kept */
        o->model_dir = NULL;
        o->device = NULL;
        snprintf(int8, sizeof int8, "%s", o->int8_activations ? o->int8_activations : "(null)");
        o->int8_activations = int8;
    }
    srv_config_free(&cfg);
    return rc;
}

static void test_defaults(void)
{
    char *argv[] = {"serve", NULL};
    char *env[] = {NULL};
    struct eng_engine_options o;
    char err[512];
    EXPECT(load(argv, ARGC(argv), env, &o, err, sizeof(err)) == 0);
    EXPECT(!o.enforce_eager);
    CHECK(o.max_seq_len_to_capture == 0, "max_seq_len_to_capture %d (0 leaves the engine's 8192)",
          o.max_seq_len_to_capture);
    EXPECT(o.gpu_memory_fraction == 0.9);
}

/* The fields that existed before the CUDA-graph options still arrive. */
static void test_other_engine_fields(void)
{
    char *argv[] = {"serve", "--device", "ref", "--threads", "3", "--kv-cache-memory", "64M", "--block-size",
                    "32", "--max-batched-tokens", "512", "--long-prefill-token-threshold", "64",
                    "--max-seqs", "7", "--max-waiting", "9",
                    "--rope-long-from-start", "--no-prefix-caching", "--gpu-memory-fraction", "0.5", NULL};
    char *env[] = {NULL};
    struct srv_config cfg;
    char err[512];
    EXPECT(srv_config_load(&cfg, ARGC(argv), argv, env, err, sizeof(err)) == 0);
    struct eng_engine_options o;
    srv_config_engine_options(&cfg, &o);
    EXPECT(o.device != NULL && strcmp(o.device, "ref") == 0);
    EXPECT(o.model_dir == cfg.model_dir);
    EXPECT(o.n_threads == 3 && o.kv_cache_bytes == (int64_t)64 << 20 && o.block_size == 32);
    EXPECT(o.max_batched_tokens == 512 && o.max_seqs == 7 && o.max_waiting == 9);
    EXPECT(o.long_prefill_token_threshold == 64);
    EXPECT(o.rope_long_from_start && o.no_prefix_caching && o.gpu_memory_fraction == 0.5);
    EXPECT(!o.enforce_eager && o.max_seq_len_to_capture == 0 && !o.host_sampling);
    srv_config_free(&cfg);
}

static void test_flags(void)
{
    char *env[] = {NULL};
    struct eng_engine_options o;
    char err[512];
    char *a1[] = {"serve", "--enforce-eager", "--max-seq-len-to-capture", "4096", NULL};
    EXPECT(load(a1, ARGC(a1), env, &o, err, sizeof(err)) == 0);
    EXPECT(o.enforce_eager && o.max_seq_len_to_capture == 4096);

    char *a2[] = {"serve", "--enforce-eager=false", "--max-seq-len-to-capture=1", NULL};
    EXPECT(load(a2, ARGC(a2), env, &o, err, sizeof(err)) == 0);
    EXPECT(!o.enforce_eager && o.max_seq_len_to_capture == 1);

    /* 0 is the engine default, like --max-seqs 0; 1 << 24 is the largest value. */
    char *a3[] = {"serve", "--max-seq-len-to-capture", "0", "--enforce-eager=on", NULL};
    EXPECT(load(a3, ARGC(a3), env, &o, err, sizeof(err)) == 0);
    EXPECT(o.enforce_eager && o.max_seq_len_to_capture == 0);
    char *a4[] = {"serve", "--max-seq-len-to-capture", "16777216", NULL};
    EXPECT(load(a4, ARGC(a4), env, &o, err, sizeof(err)) == 0);
    EXPECT(o.max_seq_len_to_capture == 1 << 24);

    /* Accepted with every device: only cuda uses graphs, the others ignore them (as vLLM). */
    char *a5[] = {"serve", "--device", "cpu", "--enforce-eager", "--max-seq-len-to-capture", "64", NULL};
    EXPECT(load(a5, ARGC(a5), env, &o, err, sizeof(err)) == 0);
    EXPECT(o.enforce_eager && o.max_seq_len_to_capture == 64);
}

static void test_bad_values(void)
{
    char *env[] = {NULL};
    struct eng_engine_options o;
    static const char *const bad[] = {"abc", "-1", "16777217", "", "12x", "1.5", "99999999999999999999", " "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *argv[] = {"serve", "--max-seq-len-to-capture", (char *)bad[i], NULL};
        char err[512] = "";
        int rc = load(argv, ARGC(argv), env, &o, err, sizeof(err));
        CHECK(rc == SRV_CONFIG_ERROR, "'%s' gave %d", bad[i], rc);
        CHECK(strstr(err, "--max-seq-len-to-capture") != NULL && strstr(err, "16777216") != NULL,
              "'%s': message '%s'", bad[i], err);
    }
    char *argv[] = {"serve", "--enforce-eager=maybe", NULL};
    char err[512] = "";
    EXPECT(load(argv, ARGC(argv), env, &o, err, sizeof(err)) == SRV_CONFIG_ERROR);
    CHECK(strstr(err, "--enforce-eager") && strstr(err, "not a boolean"), "message '%s'", err);
    /* a missing value is a usage error, not a silent default */
    char *a2[] = {"serve", "--max-seq-len-to-capture", NULL};
    EXPECT(load(a2, ARGC(a2), env, &o, err, sizeof(err)) == SRV_CONFIG_ERROR);
    CHECK(strstr(err, "--max-seq-len-to-capture") != NULL, "message '%s'", err);
}

static void test_env(void)
{
    struct eng_engine_options o;
    char err[512] = "";
    char *argv[] = {"serve", NULL};
    char *env[] = {"PHISERVE_ENFORCE_EAGER=true", "PHISERVE_MAX_SEQ_LEN_TO_CAPTURE=2048", NULL};
    EXPECT(load(argv, ARGC(argv), env, &o, err, sizeof(err)) == 0);
    EXPECT(o.enforce_eager && o.max_seq_len_to_capture == 2048);

    /* flags win over the environment */
    char *a2[] = {"serve", "--enforce-eager=no", "--max-seq-len-to-capture", "4096", NULL};
    EXPECT(load(a2, ARGC(a2), env, &o, err, sizeof(err)) == 0);
    EXPECT(!o.enforce_eager && o.max_seq_len_to_capture == 4096);

    char *e2[] = {"PHISERVE_MAX_SEQ_LEN_TO_CAPTURE=-5", NULL};
    EXPECT(load(argv, ARGC(argv), e2, &o, err, sizeof(err)) == SRV_CONFIG_ERROR);
    CHECK(strstr(err, "PHISERVE_MAX_SEQ_LEN_TO_CAPTURE") != NULL && strstr(err, "'-5'") != NULL,
          "message '%s'", err);
    char *e3[] = {"PHISERVE_ENFORCE_EAGER=2", NULL};
    EXPECT(load(argv, ARGC(argv), e3, &o, err, sizeof(err)) == SRV_CONFIG_ERROR);
    CHECK(strstr(err, "PHISERVE_ENFORCE_EAGER") != NULL, "message '%s'", err);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

/* A fresh temporary folder (dir), the config file path in it and the --config=PATH argument;
 * 0, or -1 (counted as a failure) when the folder cannot be made. */
static int conf_dir(char dir[256], char path[400], char arg[420])
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, 256, "%s/phiserve-srvcfg-XXXXXX", t != NULL && *t ? t : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        tu_failures++;
        return -1;
    }
    snprintf(path, 400, "%s/phiserve.conf", dir);
    snprintf(arg, 420, "--config=%s", path);
    return 0;
}

static void test_file(void)
{
    char dir[256], path[400], arg[420];
    if (conf_dir(dir, path, arg) != 0)
        return;
    struct eng_engine_options o;
    char err[512] = "";

    /* '-' and '_' both work in keys */
    write_file(path, "# graphs\nenforce-eager = yes\nmax_seq_len_to_capture = 1024\n");
    char *a1[] = {"serve", arg, NULL};
    char *none[] = {NULL};
    EXPECT(load(a1, ARGC(a1), none, &o, err, sizeof(err)) == 0);
    EXPECT(o.enforce_eager && o.max_seq_len_to_capture == 1024);

    /* PHISERVE_CONFIG names the file too; the environment wins over it, flags over both */
    char envconf[440];
    snprintf(envconf, sizeof(envconf), "PHISERVE_CONFIG=%s", path);
    char *a2[] = {"serve", NULL};
    char *e2[] = {envconf, "PHISERVE_MAX_SEQ_LEN_TO_CAPTURE=2048", NULL};
    EXPECT(load(a2, ARGC(a2), e2, &o, err, sizeof(err)) == 0);
    EXPECT(o.enforce_eager && o.max_seq_len_to_capture == 2048);
    char *a3[] = {"serve", "--max-seq-len-to-capture", "4096", "--enforce-eager=0", NULL};
    EXPECT(load(a3, ARGC(a3), e2, &o, err, sizeof(err)) == 0);
    EXPECT(!o.enforce_eager && o.max_seq_len_to_capture == 4096);

    /* a bad line names the file and the line */
    write_file(path, "enforce-eager = true\nmax-seq-len-to-capture = 8k\n");
    EXPECT(load(a1, ARGC(a1), none, &o, err, sizeof(err)) == SRV_CONFIG_ERROR);
    CHECK(strstr(err, "phiserve.conf:2") != NULL && strstr(err, "--max-seq-len-to-capture") != NULL,
          "message '%s'", err);
    write_file(path, "enforce_eager = sometimes\n");
    EXPECT(load(a1, ARGC(a1), none, &o, err, sizeof(err)) == SRV_CONFIG_ERROR);
    CHECK(strstr(err, "phiserve.conf:1") != NULL && strstr(err, "--enforce-eager") != NULL,
          "message '%s'", err);

    unlink(path);
    rmdir(dir);
}

/* --int8-activations: auto by default; a bare flag, PHISERVE_INT8_ACTIVATIONS and a file line
 * ('-' or '_') set it, in the usual precedence, to "on", "off" or "auto" (the boolean words
 * and auto, any case, normalized); a bad value names the option. */
static void test_int8_activations(void)
{
    struct eng_engine_options o;
    char err[512] = "";
    char *none[] = {NULL};
    char *a0[] = {"serve", NULL};
    EXPECT(load(a0, ARGC(a0), none, &o, err, sizeof(err)) == 0 &&
           strcmp(o.int8_activations, "auto") == 0);
    char *a1[] = {"serve", "--quantization", "q4_0", "--int8-activations", NULL};
    EXPECT(load(a1, ARGC(a1), none, &o, err, sizeof(err)) == 0);
    EXPECT(strcmp(o.int8_activations, "on") == 0 && o.quantization != NULL);
    char *e1[] = {"PHISERVE_INT8_ACTIVATIONS=yes", NULL};
    EXPECT(load(a0, ARGC(a0), e1, &o, err, sizeof(err)) == 0 &&
           strcmp(o.int8_activations, "on") == 0);
    char *a2[] = {"serve", "--int8-activations=false", NULL};
    EXPECT(load(a2, ARGC(a2), e1, &o, err, sizeof(err)) == 0 &&
           strcmp(o.int8_activations, "off") == 0);
    char *a5[] = {"serve", "--int8-activations=AUTO", NULL};
    EXPECT(load(a5, ARGC(a5), e1, &o, err, sizeof(err)) == 0 &&
           strcmp(o.int8_activations, "auto") == 0);
    char *a3[] = {"serve", "--int8-activations=often", NULL};
    EXPECT(load(a3, ARGC(a3), none, &o, err, sizeof(err)) == SRV_CONFIG_ERROR);
    CHECK(strstr(err, "--int8-activations") && strstr(err, "'often' is not on, off or auto"),
          "message '%s'", err);

    char dir[256], path[400], arg[420];
    if (conf_dir(dir, path, arg) != 0)
        return;
    write_file(path, "quantization = q8_0\nint8_activations = on\n");
    char *a4[] = {"serve", arg, NULL};
    EXPECT(load(a4, ARGC(a4), none, &o, err, sizeof(err)) == 0 &&
           strcmp(o.int8_activations, "on") == 0);
    char *e2[] = {"PHISERVE_INT8_ACTIVATIONS=0", NULL};
    EXPECT(load(a4, ARGC(a4), e2, &o, err, sizeof(err)) == 0 &&
           strcmp(o.int8_activations, "off") == 0);
    unlink(path);
    rmdir(dir);
}

static void test_usage(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL) {
        perror("open_memstream");
        tu_failures++;
        return;
    }
    srv_config_usage(f);
    fclose(f);
    EXPECT(strstr(text, "--enforce-eager ") != NULL && strstr(text, "[PHISERVE_ENFORCE_EAGER]") != NULL);
    EXPECT(strstr(text, "--max-seq-len-to-capture N") != NULL &&
           strstr(text, "[PHISERVE_MAX_SEQ_LEN_TO_CAPTURE]") != NULL);
    EXPECT(strstr(text, "default 8192") != NULL && strstr(text, "accepted with any device") != NULL);
    EXPECT(strstr(text, "--int8-activations[=on|off|auto] ") != NULL &&
           strstr(text, "[PHISERVE_INT8_ACTIVATIONS]") != NULL);
    free(text);
}

int main(void)
{
    test_defaults();
    test_other_engine_fields();
    test_flags();
    test_bad_values();
    test_env();
    test_file();
    test_int8_activations();
    test_usage();
    return tu_finish("test_config");
}
