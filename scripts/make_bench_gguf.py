#!/usr/bin/env python3
"""make_bench_gguf.py: writes a Phi-3-mini-shaped GGUF file with random block-format weights (no
download, no checkpoint) for CPU speed and load-time measurements such as
`bench_generate A.gguf 64 49 B.gguf`. Not a fixture and not part of the build or CI: its outputs
are meaningless text at real speed.

Shapes are Phi-3-mini-4k's (hidden 3072, intermediate 8192, 32 heads, vocab 32064, 4096
positions, sliding window 2047); --layers cuts the depth. No tokenizer metadata (bench_generate
feeds token ids) unless --vocab names a GGUF file to copy its tokenizer.* keys from (the real
Phi-3 vocabulary: ../shared/data/phi3-vocab.gguf), which lets `phiserve serve` stream text for
scripts/bench_serve. Mixes (--mix):
  q4_k_m  a Q4_K_M-like mix: attn_qkv Q5_K; attn_output, ffn_up and token_embd Q4_K; ffn_down
          Q6_K in the layers llama-quantize gives more bits (the first and last eighth and
          every third between), Q4_K in the others; output Q6_K;
  q8_0, q4_0, q4_k, q5_k, q6_k  every matrix and the embedding in that type.
Blocks hold random quants and scales, with fp16 super-block / block scales chosen so that weights
have a standard deviation of about 0.02 around zero; norms are F32 ones. Needs numpy and gguf.
Usage: python scripts/make_bench_gguf.py OUT.gguf [--mix q4_k_m] [--layers 32] [--seed 1]
                                       [--vocab VOCAB.gguf]
"""

import argparse

import numpy as np

import gguf

GT = gguf.GGMLQuantizationType
H, I, NH, V, CTX, WINDOW = 3072, 8192, 32, 32064, 4096, 2047
QK_K = 256

# bytes per block, elements per block
LAYOUT = {GT.Q8_0: (34, 32), GT.Q4_0: (18, 32), GT.Q4_K: (144, QK_K), GT.Q5_K: (176, QK_K),
          GT.Q6_K: (210, QK_K)}
PURE = {"q8_0": GT.Q8_0, "q4_0": GT.Q4_0, "q4_k": GT.Q4_K, "q5_k": GT.Q5_K, "q6_k": GT.Q6_K}
FILE_TYPE = {"q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
             "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "q4_k": gguf.LlamaFileType.MOSTLY_Q4_K_S,
             "q5_k": gguf.LlamaFileType.MOSTLY_Q5_K_S, "q6_k": gguf.LlamaFileType.MOSTLY_Q6_K}


def more_bits(i, n):
    """The layers whose ffn_down llama-quantize's Q4_K_M stores as Q6_K."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def mix_type(mix, name, layer, n_layers):
    if mix in PURE:
        return PURE[mix]
    if name == "attn_qkv":
        return GT.Q5_K
    if name == "ffn_down":
        return GT.Q6_K if more_bits(layer, n_layers) else GT.Q4_K
    if name == "output":
        return GT.Q6_K
    return GT.Q4_K


def fp16_bytes(v, n):
    """n little-endian fp16 copies of v, as an (n, 2) uint8 array."""
    return np.full(n, v, dtype=np.float16).view(np.uint8).reshape(n, 2)


def random_blocks(rng, qtype, rows, cols):
    """rows x cols weights of qtype as GGUF stores them: a (rows, bytes per row) uint8 array of
    random quants whose scale fields are set for a spread of about 0.02."""
    bb, be = LAYOUT[qtype]
    n = rows * cols // be
    b = rng.integers(0, 256, size=(n, bb), dtype=np.uint8)
    if qtype == GT.Q8_0:          # d * q, q uniform in -128..127: sd ~74 d
        b[:, 0:2] = fp16_bytes(0.02 / 74, n)
    elif qtype == GT.Q4_0:        # d * (q - 8): sd ~4.6 d
        b[:, 0:2] = fp16_bytes(0.02 / 4.6, n)
    elif qtype == GT.Q6_K:        # d * scale * (q - 32), scale int8: sd ~ 73 * 18.5 d
        b[:, 208:210] = fp16_bytes(0.02 / (73 * 18.5), n)
    else:                         # d * sc * q - dmin * m, sc and m 6-bit (mean 31.5)
        qmax = 15 if qtype == GT.Q4_K else 31
        d = 0.02 / (36.4 * qmax * 0.29)
        b[:, 0:2] = fp16_bytes(d, n)
        b[:, 2:4] = fp16_bytes(d * qmax / 2, n)  # centres the weights: E[m] = E[sc]
    return b.reshape(rows, cols // be * bb)


def copy_tokenizer(r, w):
    """Every tokenizer.* key of reader r into writer w, with its value type."""
    VT = gguf.GGUFValueType
    scalar = {VT.UINT32: w.add_uint32, VT.INT32: w.add_int32, VT.FLOAT32: w.add_float32,
              VT.BOOL: w.add_bool, VT.STRING: w.add_string}
    n = 0
    for f in r.fields.values():
        if not f.name.startswith("tokenizer."):
            continue
        if f.types[0] == VT.STRING:
            w.add_string(f.name, bytes(f.parts[f.data[0]]).decode("utf-8"))
        elif f.types[0] == VT.ARRAY and f.types[1] == VT.STRING:
            w.add_array(f.name, [bytes(f.parts[i]).decode("utf-8") for i in f.data])
        elif f.types[0] == VT.ARRAY:  # numbers: the element type as stored
            w.add_key_value(f.name, [f.parts[i][0].item() for i in f.data], VT.ARRAY, sub_type=f.types[1])
        else:
            scalar[f.types[0]](f.name, f.parts[f.data[0]][0].item())
        n += 1
    if not n:
        raise SystemExit("--vocab: the file has no tokenizer.* keys")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--mix", default="q4_k_m", choices=["q4_k_m", *PURE])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vocab", help="a GGUF file whose tokenizer.* keys are copied")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    n = a.layers

    w = gguf.GGUFWriter(a.out, "phi3")
    w.add_type("model")
    w.add_name(f"phiserve bench phi3-mini {a.mix}")
    w.add_file_type(int(FILE_TYPE[a.mix]))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(CTX)
    w.add_uint32("phi3.rope.scaling.original_context_length", CTX)
    w.add_embedding_length(H)
    w.add_feed_forward_length(I)
    w.add_block_count(n)
    w.add_head_count(NH)
    w.add_head_count_kv(NH)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(H // NH)
    w.add_rope_freq_base(10000.0)
    w.add_uint32("phi3.attention.sliding_window", WINDOW)
    if a.vocab:
        copy_tokenizer(gguf.GGUFReader(a.vocab), w)

    def mat(name, rows, cols, qtype):
        w.add_tensor(name, random_blocks(rng, qtype, rows, cols), raw_dtype=qtype)

    ones = np.ones(H, dtype=np.float32)
    mat("token_embd.weight", V, H, mix_type(a.mix, "token_embd", -1, n))
    for i in range(n):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones)
        mat(p + "attn_qkv.weight", 3 * H, H, mix_type(a.mix, "attn_qkv", i, n))
        mat(p + "attn_output.weight", H, H, mix_type(a.mix, "attn_output", i, n))
        w.add_tensor(p + "ffn_norm.weight", ones)
        mat(p + "ffn_up.weight", 2 * I, H, mix_type(a.mix, "ffn_up", i, n))
        mat(p + "ffn_down.weight", H, I, mix_type(a.mix, "ffn_down", i, n))
    w.add_tensor("output_norm.weight", ones)
    mat("output.weight", V, H, mix_type(a.mix, "output", -1, n))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
