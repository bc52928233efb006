/* Benchmark (prints, never fails): greedy generation tokens/s on a model with the reference
 * kernels and with the fast CPU backend, and their ratio, measured in the same process. With
 * q8_0 or q4_0 it compares instead the fast backend on the model as loaded and on a second
 * copy quantized so (runs alternated, best of three; the reference is skipped, too slow for
 * real sizes: scripts/make_bench_model.py writes a Phi-3-mini-shaped one). With a second model
 * path instead it compares the two models the same way (e.g. two GGUF files of one model in
 * different formats: scripts/make_bench_gguf.py). With q8_0+int8 or q4_0+int8 both copies are
 * quantized so, the second with int8 activations (--int8-activations); with int8 alone, the
 * model as loaded against a copy with int8 activations (e.g. a Q4_K_M GGUF file).
 * Usage: bench_generate [MODEL] [PROMPT_LEN] [NEW_TOKENS] [q8_0|q4_0[+int8]|int8|OTHER_MODEL] */
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "generate.h"
#include "kv_cache.h"
#include "model.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Times one greedy generation: *t_prefill is the prompt and the first token (a run of its
 * own), *t_total a whole run of n_new tokens (prompt included). Decode speed is then the
 * n_new - 1 later tokens over the difference (decode_rate). */
static int run(const struct eng_model *m, const struct kern_ops *ops, struct kern_ctx *ctx,
               const int32_t *prompt, int32_t n_prompt, int32_t n_new, double *t_prefill, double *t_total)
{
    char err[256];
    struct eng_kv_cache *kv = NULL;
    int64_t blocks = (n_prompt + n_new + 15) / 16 + 1;
    if (eng_kv_cache_create(m->cfg.num_hidden_layers, m->cfg.num_key_value_heads, m->cfg.head_dim, 16,
                            blocks, KERN_DTYPE_F32, &kv, err, sizeof err) != 0)
        return -1;
    int32_t *out = malloc((size_t)n_new * sizeof *out);
    struct eng_generator g = {.model = m, .ops = ops, .ctx = ctx, .kv = kv};
    struct eng_gen_seq one = {.prompt = prompt, .n_prompt = n_prompt, .max_new = 1, .ignore_eos = 1, .out = out};
    struct eng_gen_seq all = {.prompt = prompt, .n_prompt = n_prompt, .max_new = n_new, .ignore_eos = 1, .out = out};
    double t0 = now();
    int rc = eng_generate_greedy(&g, &one, 1, err, sizeof err);
    double t1 = now();
    rc = rc ? rc : eng_generate_greedy(&g, &all, 1, err, sizeof err);
    double t2 = now();
    *t_prefill = t1 - t0;
    *t_total = t2 - t1;
    eng_generator_free(&g);
    free(out);
    eng_kv_cache_destroy(kv);
    return rc;
}

static double decode_rate(int32_t n_new, double t_prefill, double t_total)
{
    return n_new > 1 && t_total > t_prefill ? (n_new - 1) / (t_total - t_prefill) : 0.0;
}

/* The fast backend on m as loaded and on a second model, alternated three times, best kept:
 * the model at other, or with other NULL a copy of m's quantized to quant (with int8, m is
 * quantized to quant first and the copy also gets int8 activations). */
static int bench_pair(const char *dir, struct eng_model *m, const char *other,
                      enum eng_quant quant, bool int8, const int32_t *prompt, int32_t n_prompt,
                      int32_t n_new)
{
    char err[512];
    struct eng_model *q = NULL;
    if (int8 && eng_model_quantize(m, quant, false, 0, err, sizeof err) != 0) {
        fprintf(stderr, "bench_generate: %s\n", err);
        return 1;
    }
    if (eng_model_load(other ? other : dir, &q, err, sizeof err) != 0 ||
        eng_model_quantize(q, other ? ENG_QUANT_NONE : quant, int8, 0, err, sizeof err) != 0) {
        fprintf(stderr, "bench_generate: %s\n", err);
        return 1;
    }
    if (q->cfg.vocab_size != m->cfg.vocab_size || q->cfg.hidden_size != m->cfg.hidden_size) {
        fprintf(stderr, "bench_generate: %s is not the same model's shape\n", other);
        eng_model_destroy(q);
        return 1;
    }
    struct kern_ops cpu;
    kern_ops_init_ref(&cpu);
    kern_ops_init_cpu(&cpu);
    struct kern_ctx *ctx = kern_ctx_create_cpu(0);
    double best[2][2] = {{1e30, 1e30}, {1e30, 1e30}};
    for (int round = 0; round < 3; round++)
        for (int v = 0; v < 2; v++) {
            double tp, tt;
            if (run(v ? q : m, &cpu, ctx, prompt, n_prompt, n_new, &tp, &tt)) {
                fprintf(stderr, "bench_generate: generation failed\n");
                return 1;
            }
            best[v][0] = fmin(best[v][0], tp);
            best[v][1] = fmin(best[v][1], tt);
        }
    /* Decode time: the best whole run less the best prefill run (the best of their differences
     * would pick a run whose prefill happened to be slow and overstate decode speed). */
    for (int v = 0; v < 2; v++)
        best[v][1] = best[v][1] > best[v][0] ? best[v][1] - best[v][0] : 0.0;
    printf("model %s: %lld layers, hidden %lld, vocab %lld, %s weights; prompt %d tokens, %d new "
           "tokens; cpu backend, best of 3\n", dir, (long long)m->cfg.num_hidden_layers,
           (long long)m->cfg.hidden_size, (long long)m->cfg.vocab_size,
           kern_dtype_name(m->layers[0].o.dtype), n_prompt, n_new);
    if (other)
        printf("against %s (%s weights)\n", other, kern_dtype_name(q->layers[0].o.dtype));
    printf("%-10s %16s %16s %16s\n", "weights", "prefill tok/s", "decode tok/s", "weight GiB");
    printf("%-10s %16.2f %16.2f %16.2f\n", kern_dtype_name(m->layers[0].o.dtype),
           n_prompt / best[0][0], decode_rate(n_new, 0, best[0][1]),
           (double)eng_model_weight_bytes(m) / (1 << 30));
    printf("%-10s %16.2f %16.2f %16.2f\n",
           other || int8 ? kern_dtype_name(q->layers[0].o.dtype) : eng_quant_name(quant),
           n_prompt / best[1][0],
           decode_rate(n_new, 0, best[1][1]), (double)eng_model_weight_bytes(q) / (1 << 30));
    printf("%-10s %15.2fx %15.2fx\n", "speed-up", best[0][0] / best[1][0], best[0][1] / best[1][1]);
    kern_ctx_destroy(ctx);
    eng_model_destroy(q);
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : PHISERVE_DEMO_MODEL;
    int32_t n_prompt = argc > 2 ? atoi(argv[2]) : 128;
    int32_t n_new = argc > 3 ? atoi(argv[3]) : 64;
    char err[512];
    struct eng_model *m = NULL;
    if (n_prompt < 1 || n_new < 1 || eng_model_load(dir, &m, err, sizeof err) != 0) {
        fprintf(stderr, "bench_generate: %s\n", n_prompt < 1 || n_new < 1 ? "bad sizes" : err);
        return 1;
    }
    int32_t *prompt = malloc((size_t)n_prompt * sizeof *prompt);
    for (int32_t i = 0; i < n_prompt; i++)
        prompt[i] = 5 + (int32_t)((i * 7919) % (m->cfg.vocab_size - 100 > 1 ? m->cfg.vocab_size - 100 : 1));
    enum eng_quant quant = ENG_QUANT_NONE;
    if (argc > 4) {
        /* "q8_0+int8": the name before the '+' */
        char name[16] = "";
        size_t len = strlen(argv[4]);
        bool int8 = len > 5 && strcmp(argv[4] + len - 5, "+int8") == 0 && len - 5 < sizeof name;
        if (int8)
            memcpy(name, argv[4], len - 5);
        int is_quant = eng_quant_parse(int8 ? name : argv[4], &quant) == 0 &&
                       quant != ENG_QUANT_NONE;
        /* "int8": the model as loaded against itself with int8 activations */
        bool as_loaded = strcmp(argv[4], "int8") == 0;
        int rc = bench_pair(dir, m, is_quant || as_loaded ? NULL : argv[4], quant,
                            (int8 && is_quant) || as_loaded, prompt, n_prompt, n_new);
        free(prompt);
        eng_model_destroy(m);
        return rc;
    }

    struct kern_ops ref, cpu;
    kern_ops_init_ref(&ref);
    kern_ops_init_ref(&cpu);
    kern_ops_init_cpu(&cpu);
    struct kern_ctx *ctx = kern_ctx_create_cpu(0);
    double rp, rt, cp, ct;
    if (run(m, &ref, NULL, prompt, n_prompt, n_new, &rp, &rt) || run(m, &cpu, ctx, prompt, n_prompt, n_new, &cp, &ct)) {
        fprintf(stderr, "bench_generate: generation failed\n");
        return 1;
    }
    printf("model %s: %lld layers, hidden %lld, vocab %lld; prompt %d tokens, %d new tokens\n", dir,
           (long long)m->cfg.num_hidden_layers, (long long)m->cfg.hidden_size,
           (long long)m->cfg.vocab_size, n_prompt, n_new);
    printf("%-10s %16s %16s\n", "backend", "prefill tok/s", "decode tok/s");
    printf("%-10s %16.1f %16.1f\n", "ref", n_prompt / rp, decode_rate(n_new, rp, rt));
    printf("%-10s %16.1f %16.1f\n", "cpu", n_prompt / cp, decode_rate(n_new, cp, ct));
    printf("%-10s %15.2fx %15.2fx\n", "speed-up", rp / cp,
           decode_rate(n_new, cp, ct) / decode_rate(n_new, rp, rt));
    kern_ctx_destroy(ctx);
    free(prompt);
    eng_model_destroy(m);
    return 0;
}
