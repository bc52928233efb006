/* Benchmark (prints, never fails): greedy generation tokens/s on a model with the reference
 * kernels and with the fast CPU backend, and their ratio, measured in the same process.
 * Usage: bench_generate [MODEL_DIR] [PROMPT_LEN] [NEW_TOKENS] */
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

/* Returns prefill seconds and total seconds of one greedy generation. */
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
    printf("%-10s %16.1f %16.1f\n", "ref", n_prompt / rp, n_new / rt);
    printf("%-10s %16.1f %16.1f\n", "cpu", n_prompt / cp, n_new / ct);
    printf("%-10s %15.2fx %15.2fx\n", "speed-up", rp / cp, rt / ct);
    kern_ctx_destroy(ctx);
    free(prompt);
    eng_model_destroy(m);
    return 0;
}
