/* Engine set-up and tear-down (see engine.h): loading the model and tokenizer, choosing the
 * backend, sizing the KV pool (from the GPU's memory on CUDA), the workspace and CUDA graphs,
 * and starting the engine thread; destroy undoes it in reverse. The step loop is engine.c's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cuda_backend.h"
#include "engine_internal.h"
#include "gguf.h"
#include "models/phi3v.h"
#include "rng.h"

/* ---- create / destroy ---- */

static bool file_exists(const char *dir, const char *name)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s", dir, name);
    return n > 0 && (size_t)n < sizeof path && access(path, R_OK) == 0;
}

#define GIB(x) ((double)(x) / (double)(1 << 30))
/* Room reserved at start for the logit changes (bias, bans, penalised tokens) of each
 * sequence drawn on the device; more grows on demand. */
#define SAMPLE_MODS_PER_SEQ 256

/* Images whose features the GPU budget holds room for besides the KV pool (the server takes
 * up to 8 per request). */
#define VISION_RESERVE_IMAGES 8

/* The KV pool on a GPU. fraction is this instance's share of the device's memory, as vLLM's
 * gpu_memory_utilization: weights + the activation workspace + the pool take fraction of the
 * total, whatever other processes (another server, say) hold, but never more than what is
 * free less HEADROOM of the total (the backend's scratch and CUDA graphs grow later); the
 * CUDA context, made already, comes on top. kv_cache_bytes > 0 asks for that pool exactly;
 * otherwise the pool takes the rest, and must hold at least one step's tokens. Sets
 * *n_blocks, or fails with the numbers in err. */
#define HEADROOM 0.02
static int size_memory_budget(struct eng_engine *e, const struct eng_engine_options *o,
                              double fraction, size_t ws_bytes, size_t block_bytes,
                              int32_t max_tokens, int64_t bs, int64_t *n_blocks, char *err,
                              size_t errlen)
{
    size_t free_b = 0, total_b = 0;
    if (kern_cuda_mem_info(e->ctx, &free_b, &total_b) != 0 || free_b > total_b)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_BACKEND, "--device cuda: cannot read the GPU's "
                        "memory size");
    double avail = fraction * (double)total_b;
    double usable = (double)free_b - HEADROOM * (double)total_b;
    if (avail > usable)
        avail = usable > 0 ? usable : 0;
    double weights = (double)eng_model_weight_bytes(e->model);
    double fixed = weights + (double)ws_bytes;
    double min_kv = (double)block_bytes * (double)((max_tokens + bs - 1) / bs);
    double kv = o->kv_cache_bytes > 0 ? (double)o->kv_cache_bytes : avail - fixed;
    if (kv < min_kv)
        kv = min_kv;
    if (fixed + kv > avail)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_BACKEND,
                        "model needs %.2f GiB (weights %.2f + activations %.2f + KV cache "
                        "%.2f), %.2f GiB available (--gpu-memory-fraction %.2f of %.2f GiB, "
                        "%.2f GiB free)",
                        GIB(fixed + kv), GIB(weights), GIB(ws_bytes), GIB(kv), GIB(avail),
                        fraction, GIB(total_b), GIB(free_b));
    double nb = kv / (double)block_bytes;
    *n_blocks = nb > (double)INT32_MAX ? INT32_MAX : (int64_t)nb;
    return 0;
}

void eng_engine_destroy(struct eng_engine *e)
{
    if (!e)
        return;
    if (e->thread_started) {
        pthread_mutex_lock(&e->mu);
        e->stop = true;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    if (e->sched_ready)
        eng_sched_free(&e->sched);
    eng_prefix_cache_destroy(e->pc);
    /* Everything held in the backend's memory goes before the backend itself. */
    eng_kv_cache_destroy(e->kv);
    eng_phi3_ws_free(&e->ws);
    eng_model_destroy(e->model);
    eng_sampler_ws_free(&e->sws);
    eng_grammar_vocab_destroy(e->gvocab);
    free(e->allow);
    if (e->logits_pinned)
        kern_cuda_host_unregister(e->ctx, e->logits);
    free(e->logits);
    free(e->argmax_rows);
    free(e->row_tokens);
    free(e->jobs);
    free(e->job_tokens);
    free(e->row_job);
    free(e->job_logprob);
    free(e->job_top);
    free(e->mods);
    free(e->spans);
    free(e->tbuf);
    if (e->cuda)
        kern_cuda_destroy(e->ctx);
    else
        kern_ctx_destroy(e->ctx);
    eng_tokenizer_destroy(e->tok);
    if (e->mu_ready) {
        pthread_mutex_destroy(&e->mu);
        pthread_cond_destroy(&e->cv);
    }
    free(e);
}

int eng_engine_create(const struct eng_engine_options *o, struct eng_engine **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    if (!o || !o->model_dir)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID, "no model directory");
    const char *dev = o->device ? o->device : "cpu";
    if (strcmp(dev, "cpu") != 0 && strcmp(dev, "ref") != 0 && strcmp(dev, "cuda") != 0)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID, "unknown device '%s' (cpu, ref or cuda)",
                        dev);
    enum eng_quant quant;
    if (eng_quant_parse(o->quantization, &quant) != 0)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID,
                                   "unknown quantization '%s' (none, q8_0 or q4_0)", o->quantization);
    enum eng_int8 int8 = ENG_INT8_OFF;
    if (o->int8_activations && eng_int8_parse(o->int8_activations, &int8) != 0)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID,
                                   "unknown int8_activations '%s' (on, off or auto)",
                                   o->int8_activations);
    if (int8 == ENG_INT8_ON && strcmp(dev, "cuda") == 0)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID,
                                   "int8_activations (--int8-activations) runs on the cpu and ref "
                                   "devices; the CUDA backend has no int8-dot matmul");
    if (quant != ENG_QUANT_NONE && strcmp(dev, "cuda") == 0)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID,
                                   "quantization %s runs on the cpu and ref devices; the CUDA "
                                   "backend has no %s kernels yet", eng_quant_name(quant),
                                   eng_quant_name(quant));
    double fraction = o->gpu_memory_fraction > 0 ? o->gpu_memory_fraction : 0.9;
    if (!(fraction <= 1.0))
        return eng_engine_fail_msg(err, errlen, ENG_ERR_INVALID,
                        "gpu_memory_fraction %g is outside (0, 1]", o->gpu_memory_fraction);
    struct eng_engine *e = calloc(1, sizeof *e);
    if (!e)
        return eng_engine_fail_msg(err, errlen, ENG_ERR_NOMEM, "out of memory");
    int rc = ENG_ERR_LOAD;
    char msg[512];
    if (pthread_mutex_init(&e->mu, NULL) != 0 || pthread_cond_init(&e->cv, NULL) != 0) {
        free(e);
        return eng_engine_fail_msg(err, errlen, ENG_ERR_NOMEM, "cannot create a mutex");
    }
    e->mu_ready = true;
    if (eng_model_load(o->model_dir, &e->model, msg, sizeof msg) != 0 ||
        eng_model_quantize(e->model, quant,
                           eng_model_int8_wanted(e->model, quant, dev, int8),
                           o->n_threads, msg, sizeof msg) != 0) {
        eng_engine_fail_msg(err, errlen, rc, "%s", msg);
        goto fail;
    }
    /* The tokenizer is optional (test models have none): a GGUF file's vocabulary, or the
     * directory's tokenizer.model with its Hugging Face files. */
    if ((e->model->gguf ? eng_gguf_find_kv(e->model->gguf, "tokenizer.ggml.tokens") != NULL
                        : file_exists(o->model_dir, "tokenizer.model")) &&
        (e->model->gguf ? eng_tokenizer_load_gguf(e->model->gguf, &e->tok, msg, sizeof msg)
                        : eng_tokenizer_load_dir(o->model_dir, &e->tok, msg, sizeof msg)) != 0) {
        eng_engine_fail_msg(err, errlen, rc, "%s", msg);
        goto fail;
    }
    /* Stop ids: config.json ∪ generation_config.json (the loader) ∪ the tokenizer's eos. */
    if (e->tok && eng_tokenizer_get_info(e->tok)->eos_id >= 0 &&
        eng_model_config_add_tokenizer_eos(&e->model->cfg, eng_tokenizer_get_info(e->tok)->eos_id,
                                           msg, sizeof msg) != 0) {
        eng_engine_fail_msg(err, errlen, rc, "%s", msg);
        goto fail;
    }
    kern_ops_init_ref(&e->ops);
    if (strcmp(dev, "cpu") == 0) {
        kern_ops_init_cpu(&e->ops);
        e->ctx = kern_ctx_create_cpu(o->n_threads > 0 ? o->n_threads : 0);
        if (!e->ctx) {
            rc = ENG_ERR_BACKEND;
            eng_engine_fail_msg(err, errlen, rc, "cannot start the CPU thread pool");
            goto fail;
        }
    } else if (strcmp(dev, "cuda") == 0) {
        if (kern_cuda_create(0, &e->ops, &e->ctx, msg, sizeof msg) != 0) {
            rc = ENG_ERR_BACKEND;
            eng_engine_fail_msg(err, errlen, rc, "--device cuda: %s", msg);
            goto fail;
        }
        e->cuda = true;
    }

    const struct eng_model_config *c = &e->model->cfg;
    if (c->arch == ENG_ARCH_PHIMOE && (!e->ops.layernorm || !e->ops.bias_add ||
                                       !e->ops.moe_route || !e->ops.moe)) {
        rc = ENG_ERR_BACKEND;
        eng_engine_fail_msg(err, errlen, rc, "the %s backend cannot run Phi-3.5-MoE models "
                            "(it lacks the MoE ops)", e->ops.name);
        goto fail;
    }
    if (e->cuda && eng_model_block_dtype(e->model) != KERN_DTYPE_COUNT) {
        rc = ENG_ERR_BACKEND;
        eng_engine_fail_msg(err, errlen, rc, "--device cuda: the model stores %s matrices and the "
                            "CUDA backend has no %s kernels yet (use a bf16/f16 file, or --device cpu)",
                            kern_dtype_name(eng_model_block_dtype(e->model)),
                            kern_dtype_name(eng_model_block_dtype(e->model)));
        goto fail;
    }
    if (e->cuda && !kern_cuda_attention_supports(c->head_dim)) {
        rc = ENG_ERR_BACKEND;
        eng_engine_fail_msg(err, errlen, rc, "--device cuda: the model's head_dim %lld is not "
                            "supported by the CUDA attention kernels (16, 32, 64, 96 or 128)",
                            (long long)c->head_dim);
        goto fail;
    }
    if (c->arch == ENG_ARCH_PHI3V && (!e->ops.layernorm || !e->ops.bias_add || !e->ops.act ||
                                      !e->ops.attention_dense)) {
        rc = ENG_ERR_BACKEND;
        eng_engine_fail_msg(err, errlen, rc, "the %s backend cannot run Phi-3-vision models "
                            "(it lacks the vision tower's ops)", e->ops.name);
        goto fail;
    }
    int64_t bs = o->block_size > 0 ? o->block_size : 16;
    int32_t max_seqs = o->max_seqs > 0 ? o->max_seqs : 256;
    int32_t max_tokens = o->max_batched_tokens > 0 ? o->max_batched_tokens : 2048;
    /* Device backends keep the cache in bf16 (the attention and kv_write ops convert); the
     * host backends compute the fp32 numerics the CPU goldens check unless told otherwise. */
    enum kern_dtype kv_dtype;
    rc = ENG_ERR_INVALID;
    if (eng_kv_cache_dtype_parse(o->kv_cache_dtype, e->ops.host_memory, &kv_dtype) != 0) {
        eng_engine_fail_msg(err, errlen, rc, "kv cache dtype '%s': expected auto, bf16%s",
                            o->kv_cache_dtype, e->ops.host_memory ? ", f16 or f32" :
                                                                    " (the only one on cuda)");
        goto fail;
    }
    size_t block_bytes = eng_kv_cache_block_bytes(c->num_hidden_layers, c->num_key_value_heads,
                                                  c->head_dim, bs, kv_dtype);
    if (block_bytes == 0 || bs > 4096) {
        eng_engine_fail_msg(err, errlen, rc, "invalid KV block size %lld", (long long)bs);
        goto fail;
    }
    /* The largest step the scheduler plans: max_tokens tokens and logit rows (a prompt-logprob
     * chunk has one row per token), max_seqs sequences with full-context block tables. */
    int64_t per_seq = (c->max_position_embeddings + bs - 1) / bs;
    int64_t table_entries = per_seq * max_seqs;
    int64_t n_blocks = 0;
    if (e->cuda) {
        size_t ws_bytes = eng_phi3_ws_bytes(c, max_tokens, max_tokens, max_seqs, table_entries);
        size_t sample_bytes =
            eng_phi3_ws_sampling_bytes(c->vocab_size, max_tokens, max_seqs,
                                       max_seqs * SAMPLE_MODS_PER_SEQ);
        if (ws_bytes == 0 || sample_bytes == 0 || sample_bytes > SIZE_MAX - ws_bytes) {
            eng_engine_fail_msg(err, errlen, rc, "max_batched_tokens / max_seqs are too large");
            goto fail;
        }
        ws_bytes += sample_bytes;
        /* Phi-3-vision: one encode's scratch and the features of one request's images at the
         * most crops (those of more requests come out of what the fraction leaves). */
        ws_bytes += eng_phi3v_work_bytes(c) +
                    (c->arch == ENG_ARCH_PHI3V
                         ? (size_t)VISION_RESERVE_IMAGES * sizeof(float) * (size_t)c->hidden_size *
                               (size_t)eng_vision_image_tokens(&c->vision, c->vision.num_crops, 1)
                         : 0);
        if (size_memory_budget(e, o, fraction, ws_bytes, block_bytes, max_tokens, bs, &n_blocks,
                               err, errlen) != 0) {
            rc = ENG_ERR_BACKEND;
            goto fail;
        }
    } else if (o->kv_cache_bytes > 0) {
        n_blocks = o->kv_cache_bytes / (int64_t)block_bytes;
    } else {
        /* 1 GiB, or less when that already holds max_seqs sequences of the full context. */
        n_blocks = DEFAULT_KV_BYTES / (int64_t)block_bytes;
        if (per_seq <= INT64_MAX / max_seqs && per_seq * max_seqs < n_blocks)
            n_blocks = per_seq * max_seqs;
    }
    if (n_blocks < 1 || n_blocks > INT32_MAX) {
        eng_engine_fail_msg(err, errlen, rc, "kv_cache_bytes gives %lld blocks of %zu bytes",
                 (long long)n_blocks, block_bytes);
        goto fail;
    }
    /* Weights into the backend (zero copy on the host), then the pool and, on a device, the
     * workspace for the largest step, so that the step loop allocates nothing there. */
    if (eng_model_upload(e->model, &e->ops, e->ctx, msg, sizeof msg) != 0) {
        rc = ENG_ERR_BACKEND;
        eng_engine_fail_msg(err, errlen, rc, "%s", msg);
        goto fail;
    }
    if (eng_kv_cache_create_on(&e->ops, e->ctx, c->num_hidden_layers, c->num_key_value_heads,
                               c->head_dim, bs, n_blocks, kv_dtype, &e->kv, msg,
                               sizeof msg) != 0) {
        rc = ENG_ERR_NOMEM;
        eng_engine_fail_msg(err, errlen, rc, "%s", msg);
        goto fail;
    }
    e->host_sampling = o->host_sampling;
    if (e->cuda) {
        rc = ENG_ERR_NOMEM;
        if (eng_engine_reserve_rows(e, max_tokens) != 0 ||
            eng_phi3_ws_reserve(&e->ws, c, &e->ops, e->ctx, max_tokens, max_tokens, max_seqs,
                                table_entries) != 0 ||
            eng_phi3_ws_reserve_sampling(&e->ws, c->vocab_size, max_tokens, max_seqs,
                                         max_seqs * SAMPLE_MODS_PER_SEQ) != 0) {
            eng_engine_fail_msg(err, errlen, rc, "out of memory for the activation workspace");
            goto fail;
        }
        /* With host sampling, logits come back into page-locked memory: twice the speed of a
         * pageable copy, and a sampled row of a 32k vocabulary is 128 KiB. Pageable memory
         * works too. Otherwise no row of logits comes back at all (plan_token_rows). */
        if (e->logits)
            e->logits_pinned = kern_cuda_host_register(e->ctx, e->logits,
                                                       (size_t)max_tokens * (size_t)c->vocab_size *
                                                           sizeof *e->logits) == 0;
        /* Decode steps of up to max_seqs sequences (and no more than a step's tokens) whose
         * contexts fit max_seq_len_to_capture replay CUDA graphs. */
        if (!o->enforce_eager) {
            int64_t cap_len = o->max_seq_len_to_capture > 0 ? o->max_seq_len_to_capture : 8192;
            if (cap_len > c->max_position_embeddings)
                cap_len = c->max_position_embeddings;
            int64_t graph_blocks = (cap_len + bs - 1) / bs;
            if (graph_blocks > per_seq)
                graph_blocks = per_seq;
            int64_t graph_batch = max_seqs < max_tokens ? max_seqs : max_tokens;
            if (eng_phi3_graphs_enable(&e->ws, graph_batch, graph_blocks) != 0) {
                eng_engine_fail_msg(err, errlen, rc, "cannot set up CUDA graphs (try --enforce-eager)");
                goto fail;
            }
        }
    }
    rc = ENG_ERR_NOMEM;
    if (eng_prefix_cache_create(e->kv, !o->no_prefix_caching, &e->pc) != 0 ||
        eng_sampler_ws_init(&e->sws, c->vocab_size) != 0 ||
        !(e->allow = calloc((size_t)(c->vocab_size + 31) / 32, sizeof *e->allow)) ||
        (e->tok && eng_grammar_vocab_create(e->tok, c->vocab_size, &e->gvocab) != 0)) {
        eng_engine_fail_msg(err, errlen, rc, "out of memory");
        goto fail;
    }
    struct eng_sched_config sc = {
        .max_batched_tokens = max_tokens,
        .max_seqs = max_seqs,
        .long_prefill_token_threshold =
            o->long_prefill_token_threshold > 0 ? o->long_prefill_token_threshold : 0,
        .rope_original_max = c->rope_type == ENG_ROPE_LONGROPE
                                 ? c->original_max_position_embeddings : 0,
    };
    if (eng_sched_init(&e->sched, &sc, e->kv, e->pc) != 0) {
        rc = ENG_ERR_INVALID;
        eng_engine_fail_msg(err, errlen, rc, "invalid scheduler limits");
        goto fail;
    }
    e->sched_ready = true;
    e->max_waiting = o->max_waiting > 0 ? o->max_waiting : 1024;
    e->long_from_start = o->rope_long_from_start;
    const char *nap = getenv("PHISERVE_TEST_STEP_SLEEP_MS");
    if (nap) {
        long long ms = strtoll(nap, NULL, 10);
        e->test_step_sleep_ms = ms > 0 && ms <= 600000 ? ms : 0;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t seed = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ (uint64_t)(uintptr_t)e;
    atomic_init(&e->entropy, eng_splitmix64_next(&seed));
    eng_engine_snapshot_metrics(e);
    if (pthread_create(&e->thread, NULL, eng_engine_main, e) != 0) {
        rc = ENG_ERR_BACKEND;
        eng_engine_fail_msg(err, errlen, rc, "cannot start the engine thread");
        goto fail;
    }
    e->thread_started = true;
    *out = e;
    return 0;
fail:
    eng_engine_destroy(e);
    return rc;
}
