/* `phiserve generate`: greedy generation on one prompt, for trying a model and for scripted
 * checks. Not the serving path: no sampling options, no batching across requests. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "errors.h"
#include "file_util.h"
#include "generate.h"
#include "kv_cache.h"
#include "model.h"
#include "models/phi3v.h"
#include "request.h"
#include "tokenizer.h"
#include "vision_input.h"

struct dump {
    FILE *f;
    int failed;
};

static void dump_logits(void *user, int32_t seq, int32_t step, const float *logits, int64_t vocab)
{
    struct dump *d = user;
    (void)seq;
    (void)step;
    if (d->f && fwrite(logits, sizeof *logits, (size_t)vocab, d->f) != (size_t)vocab)
        d->failed = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: phiserve generate [--model PATH] (--prompt TEXT | --tokens 1,2,3) [options]\n"
            "\n"
            "Greedy generation (temperature 0). Prints the generated token ids on one line and,\n"
            "when the model has a tokenizer, their text on the next.\n"
            "\n"
            "  --model PATH         Hugging Face model directory or GGUF file (default: the demo model)\n"
            "  --prompt TEXT        prompt text, tokenized with the model's tokenizer (BOS as configured)\n"
            "  --tokens IDS         prompt as comma-separated token ids\n"
            "  --image FILE         a PNG or JPEG for a Phi-3-vision model, image 1, 2, ... in order\n"
            "                       (up to 8); --prompt names each as <|image_N|>\n"
            "  --max-tokens N       tokens to generate (default 32)\n"
            "  --ignore-eos         keep generating past the model's end-of-sequence ids\n"
            "  --device cpu|ref|cuda  fast CPU backend (default), the plain C reference, or GPU 0\n"
            "  --threads N          CPU threads (default: all cores)\n"
            "  --quantization none|q8_0|q4_0  quantize the weight matrices at load (cpu, ref)\n"
            "  --int8-activations[=on|off|auto]  multiply the Q8_0/Q4_0/K-quant matrices with\n"
            "                       int8-rounded activations (faster on the CPU, slightly different\n"
            "                       logits; cpu, ref; default auto: on for such weights on cpu)\n"
            "  --kv-cache-dtype auto|bf16|f16|f32  KV-cache element type (auto: f32 on cpu/ref,\n"
            "                       bf16 on cuda)\n"
            "  --dump-logits FILE   write the logits of every step as raw float32 [steps, vocab]\n"
            "  -h, --help           this text\n");
}

/* --image: the files decoded and transformed with the model's preprocessor settings, and the
 * prompt tokenized around its <|image_N|> tags as the server does. Returns 0 or -1 (said). */
static int load_images(const char *model_dir, const char *const *files, int n_files,
                       const struct eng_tokenizer *tok, const char *text, struct srv_images *im,
                       int32_t **prompt, int32_t *n_prompt)
{
    struct eng_model_config cfg;
    char err[512];
    if (eng_model_config_load(model_dir, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s: %s\n", model_dir, err);
        return -1;
    }
    if (cfg.arch != ENG_ARCH_PHI3V) {
        fprintf(stderr, "error: %s: --image needs a Phi-3-vision model\n", model_dir);
        return -1;
    }
    struct srv_image_error e = {0};
    for (int i = 0; i < n_files; i++) {
        char *bytes = NULL;
        size_t len = 0;
        if (eng_file_read_small(files[i], files[i], SRV_MAX_IMAGE_BYTES, &bytes, &len, err,
                                sizeof err) != 0) {
            fprintf(stderr, "error: %s\n", err);
            return -1;
        }
        int rc = srv_images_add_bytes(im, &cfg.vision, (const uint8_t *)bytes, len, files[i], &e);
        free(bytes);
        if (rc != 0) {
            fprintf(stderr, "error: %s: %s\n", files[i], e.message);
            return -1;
        }
    }
    size_t n = 0;
    if (srv_images_tokenize(tok, &cfg.vision, text, strlen(text),
                            (size_t)cfg.max_position_embeddings, im, prompt, &n, &e) != 0) {
        fprintf(stderr, "error: %s\n", e.message);
        return -1;
    }
    *n_prompt = (int32_t)n;
    return 0;
}

int srv_cmd_generate(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},
        {"tokens", required_argument, NULL, 't'},
        {"prompt", required_argument, NULL, 'p'},
        {"max-tokens", required_argument, NULL, 'n'},
        {"ignore-eos", no_argument, NULL, 'e'},
        {"device", required_argument, NULL, 'd'},
        {"threads", required_argument, NULL, 'j'},
        {"quantization", required_argument, NULL, 'q'},
        {"int8-activations", optional_argument, NULL, 'a'},
        {"kv-cache-dtype", required_argument, NULL, 'k'},
        {"dump-logits", required_argument, NULL, 'l'},
        {"image", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model_dir = PHISERVE_DEMO_MODEL, *tokens = NULL, *text = NULL, *device = "cpu";
    const char *dump_path = NULL, *image_files[SRV_MAX_IMAGES];
    enum eng_quant quant = ENG_QUANT_NONE;
    const char *kv_name = NULL;
    int n_image_files = 0;
    int64_t max_new = 32, threads = 0;
    int ignore_eos = 0;
    enum eng_int8 int8 = ENG_INT8_AUTO;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 't': tokens = optarg; break;
        case 'p': text = optarg; break;
        case 'e': ignore_eos = 1; break;
        case 'a':
            if (eng_int8_parse(optarg, &int8) != 0) {
                fprintf(stderr, "error: --int8-activations: expected on, off or auto\n");
                return 2;
            }
            break;
        case 'd': device = optarg; break;
        case 'l': dump_path = optarg; break;
        case 'k': {
            enum kern_dtype dt;
            if (eng_kv_cache_dtype_parse(optarg, 1, &dt) != 0) {
                fprintf(stderr, "error: --kv-cache-dtype: expected auto, bf16, f16 or f32\n");
                return 2;
            }
            kv_name = optarg;
            break;
        }
        case 'q':
            if (eng_quant_parse(optarg, &quant) != 0) {
                fprintf(stderr, "error: --quantization: expected none, q8_0 or q4_0\n");
                return 2;
            }
            break;
        case 'i':
            if (n_image_files == SRV_MAX_IMAGES) {
                fprintf(stderr, "error: at most %d --image\n", SRV_MAX_IMAGES);
                return 2;
            }
            image_files[n_image_files++] = optarg;
            break;
        case 'n':
            if (srv_cli_parse_int(optarg, 0, 1 << 24, &max_new) != 0) {
                fprintf(stderr, "error: --max-tokens: expected an integer in [0, 16777216]\n");
                return 2;
            }
            break;
        case 'j':
            if (srv_cli_parse_int(optarg, 0, 1024, &threads) != 0) {
                fprintf(stderr, "error: --threads: expected an integer in [0, 1024]\n");
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if ((!tokens) == (!text)) {
        fprintf(stderr, "error: give the prompt with either --prompt TEXT or --tokens 1,2,3\n");
        usage(stderr);
        return 2;
    }
    if (n_image_files > 0 && !text) {
        fprintf(stderr, "error: --image needs --prompt (naming the images as <|image_N|>)\n");
        return 2;
    }

    int status = 1;
    char err[512] = "";
    struct eng_model *model = NULL;
    struct eng_kv_cache *kv = NULL;
    struct kern_ctx *ctx = NULL;
    struct kern_ops ops;
    struct dump dump = {0};
    int32_t *prompt = NULL, *out = NULL, n_prompt = 0;
    struct eng_generator gen = {0};
    struct eng_tokenizer *tok = NULL;
    char *out_text = NULL;
    size_t out_len = 0;
    struct srv_images im = {0};
    struct eng_embed_span spans[SRV_MAX_IMAGES] = {{0}};

    /* The tokenizer is optional for --tokens (test models have none) and needed for --prompt. */
    int tok_rc = eng_tokenizer_load_path(model_dir, &tok, err, sizeof err);
    if (n_image_files > 0) {
        if (tok_rc != 0) {
            fprintf(stderr, "error: %s: --prompt needs the model's tokenizer: %s\n", model_dir, err);
            goto done;
        }
        if (load_images(model_dir, image_files, n_image_files, tok, text, &im, &prompt,
                        &n_prompt) != 0)
            goto done;
    } else if (text) {
        size_t n = 0;
        if (tok_rc != 0) {
            fprintf(stderr, "error: %s: --prompt needs the model's tokenizer: %s\n", model_dir, err);
            goto done;
        }
        if (eng_tokenizer_encode(tok, text, strlen(text), 1, &prompt, &n) != 0 || n == 0 ||
            n > INT32_MAX) {
            fprintf(stderr, "error: cannot tokenize the prompt\n");
            goto done;
        }
        n_prompt = (int32_t)n;
    } else if (srv_cli_parse_ids(tokens, &prompt, &n_prompt) != 0) {
        goto done;
    }
    if (int8 == ENG_INT8_ON && strcmp(device, "cuda") == 0) {
        fprintf(stderr, "error: --int8-activations runs on the cpu and ref devices\n");
        goto done;
    }
    if (quant != ENG_QUANT_NONE && strcmp(device, "cuda") == 0) {
        fprintf(stderr, "error: --quantization %s runs on the cpu and ref devices\n",
                eng_quant_name(quant));
        goto done;
    }
    if (eng_model_load(model_dir, &model, err, sizeof err) != 0 ||
        eng_model_quantize(model, quant, eng_model_int8_wanted(model, quant, device, int8),
                           (int)threads, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s: %s\n", model_dir, err);
        goto done;
    }
    if (tok && eng_tokenizer_get_info(tok)->eos_id >= 0 &&
        eng_model_config_add_tokenizer_eos(&model->cfg, eng_tokenizer_get_info(tok)->eos_id, err,
                                           sizeof err) != 0) {
        fprintf(stderr, "error: %s: %s\n", model_dir, err);
        goto done;
    }
    for (int32_t i = 0; i < n_prompt; i++) {
        if (prompt[i] >= model->cfg.vocab_size) {
            fprintf(stderr, "error: token id %d is outside the vocabulary (%lld)\n", prompt[i],
                    (long long)model->cfg.vocab_size);
            goto done;
        }
    }
    if (n_prompt > model->cfg.max_position_embeddings) {
        fprintf(stderr, "error: the prompt has %d tokens; the model's context is %lld\n", n_prompt,
                (long long)model->cfg.max_position_embeddings);
        goto done;
    }
    if (strcmp(device, "cuda") == 0 && eng_model_block_dtype(model) != KERN_DTYPE_COUNT) {
        fprintf(stderr, "error: %s: the model stores %s matrices; the CUDA backend has no %s "
                "kernels yet (use --device cpu)\n", model_dir,
                kern_dtype_name(eng_model_block_dtype(model)),
                kern_dtype_name(eng_model_block_dtype(model)));
        goto done;
    }
    if (srv_cli_backend(device, (int)threads, &ops, &ctx) != 0)
        goto done;
    if (eng_model_upload(model, &ops, ctx, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s\n", err);
        goto done;
    }
    for (int32_t k = 0; k < im.n_in; k++) { /* the image features, in the backend's memory */
        const struct eng_image_input *in = &im.in[k];
        int64_t n = eng_vision_image_tokens(&model->cfg.vision, in->h_crop, in->w_crop);
        void *feat = NULL;
        if (ops.buf_alloc(ctx, (size_t)n * (size_t)model->cfg.hidden_size * sizeof(float),
                          &feat) != 0) {
            fprintf(stderr, "error: out of memory for image %d\n", k + 1);
            goto done;
        }
        spans[k] = (struct eng_embed_span){.row = in->pos, .n_rows = (int32_t)n, .src = feat};
        if (eng_phi3v_encode(model, &ops, ctx, in->views, in->h_crop, in->w_crop, feat) != 0 ||
            ops.sync(ctx, err, sizeof err) != 0) {
            fprintf(stderr, "error: encoding image %d failed %s\n", k + 1, err);
            goto done;
        }
    }

    const int64_t block_size = 16;
    int64_t n_blocks = ((int64_t)n_prompt + max_new + block_size - 1) / block_size + 1;
    const struct eng_model_config *cfg = &model->cfg;
    /* Host backends keep the cache in fp32 by default (exact against the fp32 reference); the
     * GPU in bf16. */
    enum kern_dtype kv_dtype;
    if (eng_kv_cache_dtype_parse(kv_name, ops.host_memory, &kv_dtype) != 0) {
        fprintf(stderr, "error: --kv-cache-dtype %s: expected auto, bf16%s\n", kv_name,
                ops.host_memory ? ", f16 or f32" : " (the only one on cuda)");
        goto done;
    }
    if (eng_kv_cache_create_on(&ops, ctx, cfg->num_hidden_layers, cfg->num_key_value_heads,
                               cfg->head_dim, block_size, n_blocks, kv_dtype, &kv, err,
                               sizeof err) != 0) {
        fprintf(stderr, "error: %s\n", err);
        goto done;
    }
    if (dump_path) {
        dump.f = fopen(dump_path, "wb");
        if (!dump.f) {
            fprintf(stderr, "error: cannot open %s for writing\n", dump_path);
            goto done;
        }
    }
    out = malloc((size_t)(max_new > 0 ? max_new : 1) * sizeof *out);
    if (!out)
        goto done;
    gen = (struct eng_generator){.model = model, .ops = &ops, .ctx = ctx, .kv = kv,
                                 .on_logits = dump_path ? dump_logits : NULL, .user = &dump};
    struct eng_gen_seq seq = {.prompt = prompt, .n_prompt = n_prompt, .max_new = (int32_t)max_new,
                              .ignore_eos = ignore_eos, .out = out, .embeds = spans,
                              .n_embeds = im.n_in};
    if (eng_generate_greedy(&gen, &seq, 1, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s\n", err);
        goto done;
    }
    for (int32_t i = 0; i < seq.n_out; i++)
        printf("%s%d", i ? "," : "", out[i]);
    printf("\n");
    if (tok && eng_tokenizer_decode(tok, out, (size_t)seq.n_out, 1, &out_text, &out_len) == 0) {
        fwrite(out_text, 1, out_len, stdout);
        printf("\n");
    }
    if (dump.failed) {
        fprintf(stderr, "error: writing %s failed\n", dump_path);
        goto done;
    }
    status = 0;
done:
    if (dump.f && fclose(dump.f) != 0 && status == 0) {
        fprintf(stderr, "error: writing %s failed\n", dump_path);
        status = 1;
    }
    eng_generator_free(&gen);
    for (int32_t k = 0; k < im.n_in; k++)
        if (spans[k].src)
            ops.buf_free(ctx, (void *)spans[k].src);
    srv_images_free(&im);
    free(out_text);
    eng_tokenizer_destroy(tok);
    free(out);
    free(prompt);
    /* Device memory (cache, weights) goes before the context that owns it. */
    eng_kv_cache_destroy(kv);
    eng_model_destroy(model);
    if (ctx)
        srv_cli_backend_free(device, ctx);
    return status;
}
