#!/usr/bin/env python3
"""make_bench_model.py: writes a Phi-3-mini-shaped checkpoint with random bf16 weights (no
download) for CPU speed measurements such as `bench_generate DIR 128 32 q8_0`. Not a fixture and
not part of the build or CI: its outputs are meaningless text at real speed.

Shapes are Phi-3-mini-4k's (hidden 3072, intermediate 8192, 32 heads, vocab 32064, 4096
positions, sliding window 2047); --layers cuts the depth (decode time scales with it, ratios do
not). Weights are N(0, 0.02) rounded to bf16, norm gains 1. Needs numpy.
Usage: python scripts/make_bench_model.py OUT_DIR [--layers 32] [--seed 1]
"""

import argparse
import json
import struct
from pathlib import Path

import numpy as np

H, I, NH, V = 3072, 8192, 32, 32064


def tensors(layers):
    """(name, shape, kind) in file order; kind 'w' = random, 'one' = norm gain."""
    out = [("model.embed_tokens.weight", (V, H), "w")]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (H,), "one"),
                (p + "self_attn.qkv_proj.weight", (3 * H, H), "w"),
                (p + "self_attn.o_proj.weight", (H, H), "w"),
                (p + "post_attention_layernorm.weight", (H,), "one"),
                (p + "mlp.gate_up_proj.weight", (2 * I, H), "w"),
                (p + "mlp.down_proj.weight", (H, I), "w")]
    out += [("model.norm.weight", (H,), "one"), ("lm_head.weight", (V, H), "w")]
    return out


def bf16_bits(x):
    """float32 array to bf16 bit patterns, rounded to nearest even (no NaNs here)."""
    u = x.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_act": "silu",
           "hidden_size": H, "intermediate_size": I, "num_hidden_layers": a.layers,
           "num_attention_heads": NH, "num_key_value_heads": NH, "vocab_size": V,
           "max_position_embeddings": 4096, "original_max_position_embeddings": 4096,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
           "sliding_window": 2047, "tie_word_embeddings": False, "bos_token_id": 1,
           "eos_token_id": 32000, "pad_token_id": 32000, "torch_dtype": "bfloat16"}
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    header, off = {}, 0
    specs = tensors(a.layers)
    for name, shape, _ in specs:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    rng = np.random.default_rng(a.seed)
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for name, shape, kind in specs:
            if kind == "one":
                f.write(np.full(shape, 0x3F80, dtype=np.uint16).tobytes())
                continue
            rows = shape[0]
            for r0 in range(0, rows, 1024):  # bounded memory per write
                x = rng.standard_normal((min(1024, rows - r0),) + shape[1:], dtype=np.float32)
                f.write(bf16_bits(x * np.float32(0.02)).tobytes())
    print(f"{out}: {a.layers} layers, {off / 2**30:.2f} GiB of bf16 weights")


if __name__ == "__main__":
    main()
