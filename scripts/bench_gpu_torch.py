#!/usr/bin/env python3
"""Side-by-side baseline for scripts/gpu-check: transformers + torch on the same Phi-3.5-mini
shapes as tests/gpu/bench_gpu_model.c (random bf16 weights, sdpa attention, greedy generate).
Prints "RESULT key value" lines. Developer/GPU-machine tool only: CI has no torch."""
import sys
import time

import torch
from transformers import Phi3Config, Phi3ForCausalLM


def sync_time(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def main():
    if not torch.cuda.is_available():
        print("no CUDA device for torch")
        return 77
    torch.manual_seed(0)
    cfg = Phi3Config(vocab_size=32064, hidden_size=3072, intermediate_size=8192,
                     num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                     max_position_embeddings=4096, rms_norm_eps=1e-5, pad_token_id=32000,
                     eos_token_id=None, bos_token_id=1, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Phi3ForCausalLM(cfg)
    model.eval()

    def gen(batch, prompt, new):
        ids = torch.randint(0, 32000, (batch, prompt), device="cuda")
        mask = torch.ones_like(ids)
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                           min_new_tokens=new, do_sample=False, pad_token_id=32000)

    gen(1, 16, 4)  # warm-up
    t_all = sync_time(lambda: gen(1, 128, 128))
    t_pre = sync_time(lambda: gen(1, 128, 1))
    print(f"RESULT decode_b1_tok_s {127 / (t_all - t_pre):.1f}")

    ids = torch.randint(0, 32000, (1, 2048), device="cuda")
    with torch.no_grad():
        model(input_ids=ids)
        t = sync_time(lambda: model(input_ids=ids))
    print(f"RESULT prefill_2048_tok_s {2048 / t:.1f}")

    for n in (16, 64, 256):
        t = sync_time(lambda: gen(n, 128, 128))
        print(f"RESULT out_tok_s_c{n} {n * 128 / t:.1f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
