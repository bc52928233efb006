#!/usr/bin/env python3
# make_gguf_fixtures.py: writes GGUF (llama.cpp's format) copies of the mha-window, longrope,
# phi3-demo and gqa fixture checkpoints into tests/fixtures/models/<model>/gguf/, and the golden of
# gqa's K-quant file. It builds no checkpoints and no other goldens (make_fixtures.py,
# make_quant_goldens.py do) and is not part of the build or CI.
"""GGUF copies of the tiny Phi-3 fixtures, laid out as llama.cpp's convert_hf_to_gguf.py lays out
a Phi3ForCausalLM, written and read back with gguf-py (llama.cpp's own Python package).

Files:
  mha-window/gguf/, longrope/gguf/: f32.gguf, bf16.gguf, q8_0.gguf, q4_0.gguf (no tokenizer: these
      directories have none);
  phi3-demo/gguf/: q4_0.gguf, with the tokenizer metadata Phi3MiniModel.set_vocab writes;
  gqa/gguf/: kmix.gguf, a Q4_K_M-like mix of Q4_K / Q5_K / Q6_K with one Q5_0 matrix, varied per
      layer, and its golden gqa/golden/kmix/.

Metadata: general.architecture "phi3", general.type "model", general.name "phiserve test <model>",
general.file_type (gguf.LlamaFileType), general.quantization_version; phi3.context_length
(max_position_embeddings), phi3.rope.scaling.original_context_length, phi3.embedding_length,
phi3.feed_forward_length, phi3.block_count, phi3.attention.head_count, .head_count_kv,
.layer_norm_rms_epsilon, phi3.rope.dimension_count (int(partial_rotary_factor * hidden) // heads),
phi3.rope.freq_base, phi3.attention.sliding_window (0 when null); with LongRoPE ("longrope"/"su")
also phi3.rope.scaling.attn_factor = sqrt(1 + ln(max/orig) / ln(orig)) (1.0 unless max > orig)
and the F32 tensors rope_factors_long.weight / rope_factors_short.weight (rope_dims / 2 each).

Tensors: names from gguf.get_tensor_name_map(MODEL_ARCH.PHI3, n_layers) (checked against the
converter's table below); fused qkv and gate_up (gate rows first) as they are, no Q/K permutation;
an HF [out, in] matrix is the numpy array (out, in), GGUF ne = (in, out). Types:
  f32.gguf   every tensor F32 (the bf16 checkpoint values, exact);
  bf16.gguf  2-D tensors BF16 (the checkpoint's bits), 1-D tensors F32 (convert --outtype bf16);
  q8_0.gguf, q4_0.gguf  the weights phiserve's --quantization quantizes (make_quant_goldens.py's
             quant_targets: qkv, o, gate_up, down, lm_head unless tied) as Q8_0 / Q4_0 bytes made
             by make_quant_goldens.py's own quantize_q8_0 / quantize_q4_0 / pack_q4_0;
             token_embd BF16; norms and rope factors F32.
  kmix.gguf  per KMIX_BLOCKS / KMIX_GLOBAL: token_embd Q4_K; blk.0 attn_qkv Q4_K, attn_output
             Q5_K, ffn_up Q4_K, ffn_down Q6_K; blk.1 attn_qkv Q5_K, attn_output Q5_0, ffn_up
             Q4_K, ffn_down Q6_K; output Q6_K; norms F32 (general.file_type MOSTLY_Q4_K_M).
             gguf-py cannot quantize K types: those blocks are written here by a simple encoder
             (encode_q4_k / encode_q5_k / encode_q6_k: per super-block fp16 d (and dmin) from the
             largest sub-block scale (and min), 6-bit / int8 sub-block scales rounded, q rounded
             and clamped; valid, not optimal); the Q5_0 blocks by gguf.quants.quantize (gguf-py's
             port of ggml's reference quantizer). gguf.quants.dequantize of the bytes is the truth.
So golden/*.f32 is the reference for f32.gguf and bf16.gguf, golden/q8_0 and golden/q4_0 for
the Q8_0 / Q4_0 files (phi3-demo has no quantized golden), golden/kmix for kmix.gguf.

golden/kmix (gqa): phiserve's loader uses Q4_K, Q5_K and Q6_K matrices natively (KMIX_NATIVE:
their values are exactly gguf.quants.dequantize of the bytes, nothing requantized); it widens a
matrix of a block type without kernels (Q4_1, Q5_0, Q5_1, Q2_K, Q3_K; here the Q5_0 one,
KMIX_REQUANT) exactly to fp32 and requantizes it to Q8_0 with its own quantizer; a block-format
token_embd keeps its exact values (read as stored in a type with kernels, widened to fp32 in
another). So the reference is
transformers (fp32, eager, as make_quant_goldens.py runs it) on the checkpoint with each Q4_K /
Q5_K / Q6_K matrix (output.weight as lm_head included) replaced by gguf.quants.dequantize(the
file's bytes), the Q5_0 matrix by make_quant_goldens.py's quantize_q8_0 dequantized output of
gguf.quants.dequantize(its bytes), and the embedding by gguf.quants.dequantize(its bytes); the
norms stay the checkpoint's (kmix_weights). The cases are the fp32 golden's (run_cases), written
by write_quant_golden (golden.json with "quantization": "kmix" and "gguf_file", without
"quantized_tensors_file": there is no quantized.json), then the same noise and margin
diagnostics as make_quant_goldens.py prints, and a sensitivity report: how far the prompt logits
move (relative to the row scale) if the K matrices were requantized to Q8_0 (the earlier
loader), if the Q5_0 matrix were not requantized, and if the embedding were requantized; each
must be far above the C test's tolerance (a WARNING under 10x it).

--int8: golden/kmix_int8/ (gqa only), the golden of kmix.gguf as phiserve runs it with
--int8-activations and no --quantization, instead of writing anything else. kmix.gguf is not
rewritten: it is read back and checked, as verify checks a file it has just written, to be exactly
what this script would write (metadata, every tensor's type, shape and bytes), and its sha256 and
those of golden/kmix/'s files must be the same after the run as before. The weights are
golden/kmix's (kmix_weights' defaults); per matrix (not token_embd), its GGUF type (kmix_types)
decides the path: a Q4_K, Q5_K or Q6_K matrix (KMIX_INT8_NATIVE: used natively, each has an R16
form; lm_head included) and a Q5_0 one (KMIX_REQUANT: requantized to Q8_0 at load, exactly
make_quant_goldens.py's quantize_q8_0 of gguf.quants.dequantize(its bytes) as golden/kmix uses it)
are interleaved and run the int8 dot of kernels/ops.h (the R16 paragraph above struct
kern_matmul_params).
The int8 dot is make_quant_goldens.py's emulation (its quantize_activations: per row of the layer
input and block of 32 values v, in fp32, a = max|v|, d = a / 127, d < FLT_MIN: d = 0 and q = 0,
else q = round_half_even(v * (1 / d)); a non-finite row gives a NaN output row), with per weight
block b:
  Q8_0  term = float64(fp32(dw * d)) * s, s = sum w q (exact integer), w the int8 values;
  Q4_K, Q5_K  block b = sub-block b % 8 of super-block b / 8; f0 = d_sb * sc_b, f1 = dmin_sb *
        m_b (exact fp32 products: fp16 times a 6-bit integer), w the quants (Q4_K 0..15, Q5_K
        0..31: the low 4 bits as Q4_K's, bit 4 = bit b % 8 of qh[t]), decoded here from the bytes
        (decode_q4_k / decode_q5_k: fp32(f0 * w) - f1 must equal gguf.quants.dequantize bit for
        bit); term = float64(fp32(f0 * d)) * s - float64(fp32(f1 * d)) * x_s, s = sum w q,
        x_s = sum q (both products exact, the difference one float64 rounding);
  Q6_K  block b = sub-blocks 2 (b % 8) and 2 (b % 8) + 1 (16 values each) of super-block b / 8;
        per sub-block f0 = d_sb * sc (exact fp32: fp16 times an int8), w the quants 0..63 (the low
        4 bits a nibble of ql, bits 4-5 a pair of qh, decode_q6_k; fp32(f0 * (w - 32)) must equal
        gguf.quants.dequantize bit for bit); term = float64(fp32(f0_0 * d)) * s_0 +
        float64(fp32(f0_1 * d)) * s_1, s_h = sum (w - 32) q over sub-block h's 16 values (both
        products exact, the sum one float64 rounding);
  y = fp32(sum of the terms over b in order, in float64) (+ bias in fp32; Phi-3 has none), as
kernels/ref/matmul.c computes it. golden.json is golden/kmix's schema plus "activations": "int8",
"activation_algorithm", "int8_activation_layers" (module names, in model order),
"int8_activation_formats" (each one's "q4_k" / "q5_k" / "q6_k" / "q8_0") and per case
"greedy_plain_quantized_same" (against golden/kmix). Self-checks: the same harness with the int8
layers switched to the plain path reproduces golden/kmix bit for bit; every int8 layer's output
over the longest prompt equals a literal numpy loop of the contract (int64 sums, float64
accumulation) bit for bit; every emulated fp32 op is checked against numpy. It prints, as
make_quant_goldens.py --int8 does: the distance of kmix_int8 from golden/kmix (per compared row
max |diff| / the row's largest |logit|: median, p90, p99, max; steps up to the first greedy
divergence), the rounding statistics (values near a rounding boundary, what a flip would move),
and the movement of the logits when every int8 layer's input gets one fp32 ulp of random-sign
noise (three seeds), for the int8 path and, as a baseline, the plain one.

Tokenizer (phi3-demo): tokenizer.ggml.model "llama", .pre "default", .tokens / .scores /
.token_type from tokenizer.model (types 1 normal, 2 unknown, 3 control, 5 unused, 6 byte), padded
to vocab_size with "[PAD{i}]" (score -10000, type 5), then the added tokens of added_tokens.json,
tokenizer_config.json added_tokens_decoder and tokenizer.json added_tokens in that order at their
ids (score -1000, type 4, or 3 when "special": true; later sources override earlier ones and the
sentencepiece entries); then gguf.SpecialVocab(dir, n_vocab).add_to_gguf (special ids, add_bos /
add_eos, chat_template).

Every file is read back with gguf.GGUFReader and the run fails unless: the metadata keys, types
and values are exactly the intended ones; every tensor's name, type and shape are as intended and
in order; F32 / BF16 data are bit-equal to the safetensors values; gguf.quants.dequantize of each
Q8_0 / Q4_0 tensor equals make_quant_goldens.py's dequantized values bit for bit (phiserve's block
layout is llama.cpp's); every kmix Q4_K / Q5_K / Q6_K / Q5_0 tensor's stored bytes are the
encoder's, its fp16 scales are finite, its dequantized values finite and within K_MAX_REL_ERR of
the largest |checkpoint value| (the script prints each tensor's error); the quantized tensors'
checksums (sum_d_times_q, sum_abs_q, computed from the file's bytes) and the block records in
golden/<fmt>/quantized.json match the file; the tokenizer arrays are the intended ones and agree
with tokenizer.json's vocabulary. It also prints (no assertion) how many Q8_0 / Q4_0 blocks
gguf-py's port of ggml's reference quantizer would write differently.

Pinned environment as make_fixtures.py, plus gguf 0.19.0.
Usage (from the repository root; needs no network; deterministic, rerunnable):
  python scripts/make_gguf_fixtures.py [--only longrope] [--models tests/fixtures/models]
  (--only gqa rewrites gqa/gguf/kmix.gguf and gqa/golden/kmix/)
  python scripts/make_gguf_fixtures.py --int8   (writes gqa/golden/kmix_int8/ only)
"""

import argparse
import hashlib
import importlib.metadata
import json
import math
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_fixtures as mf  # noqa: E402  (sets the offline environment before torch loads)
import make_quant_goldens as mq  # noqa: E402
import gguf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from sentencepiece import SentencePieceProcessor  # noqa: E402

PINNED_GGUF = "0.19.0"
JOBS = {
    "mha-window": ["f32", "bf16", "q8_0", "q4_0"],
    "longrope": ["bf16", "q8_0", "q4_0"],
    "phi3-demo": ["q4_0"],
    "gqa": ["kmix"],
}
WITH_TOKENIZER = {"phi3-demo"}
PURE = {"phi3-demo"}  # every matrix quantized, token_embd included (phiserve widens it at load)
GT = gguf.GGMLQuantizationType
VT = gguf.GGUFValueType
FILE_TYPE = {"f32": gguf.LlamaFileType.ALL_F32, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
             "kmix": gguf.LlamaFileType.MOSTLY_Q4_K_M}
QTYPE = {"q8_0": GT.Q8_0, "q4_0": GT.Q4_0}
BLOCK_BYTES = {"q8_0": 2 + mq.QK, "q4_0": 2 + mq.QK // 2}
# kmix: the type of each 2-D tensor by its GGUF name (".weight" left off), a Q4_K_M-like mix varied
# per layer so that one file covers both ways phiserve loads a block-format matrix: Q4_K, Q5_K and
# Q6_K used natively (KMIX_NATIVE) and Q5_0 widened and requantized to Q8_0 (KMIX_REQUANT); the
# Q4_K token_embd is read as stored (its exact values). Everything 1-D stays F32.
KMIX_BLOCKS = {  # blk.i.<name>: (blk.0 type, blk.1 type, ...), one per layer
    "attn_qkv": (GT.Q4_K, GT.Q5_K),
    "attn_output": (GT.Q5_K, GT.Q5_0),
    "ffn_up": (GT.Q4_K, GT.Q4_K),
    "ffn_down": (GT.Q6_K, GT.Q6_K),
}
KMIX_GLOBAL = {"token_embd": GT.Q4_K, "output": GT.Q6_K}
# How phiserve's loader treats a block-format matrix (other than token_embd) of each kmix type:
KMIX_NATIVE = {GT.Q4_K, GT.Q5_K, GT.Q6_K}  # kept as stored: its values are gguf.quants.dequantize(bytes)
KMIX_REQUANT = {GT.Q5_0}  # no kernel: widened exactly, then requantized by its Q8_0 quantizer
# With --int8-activations (no --quantization) the matrices whose format has an R16 form run the
# int8 dot: the native ones of these types, and every KMIX_REQUANT one (held as Q8_0).
KMIX_INT8_NATIVE = {GT.Q4_K, GT.Q5_K, GT.Q6_K}
KMIX_INT8_ALGORITHM = (
    "int8 dot of kernels/ops.h (R16 formats): per row of the layer input x and block of 32 values v, "
    "in fp32: a = max|v|, d = a / 127; d < FLT_MIN: d = 0, q = 0; else id = 1 / d, q = "
    "round_half_even(v * id); a row with a non-finite value gives an all-NaN output row; per weight "
    "block b, q8_0 (the Q5_0 matrix requantized at load): term = float64(fp32(dw * d)) * sum(w * q) "
    "(w the int8 values, dw the fp16 scale); q4_k and q5_k (sub-block b % 8 of super-block b / 8, "
    "f0 = d * scale, f1 = dmin * min, w the quants: q4_k 0..15, q5_k 0..31): term = "
    "float64(fp32(f0 * d)) * sum(w * q) - float64(fp32(f1 * d)) * sum(q); q6_k (sub-blocks "
    "2 (b % 8) and 2 (b % 8) + 1 of super-block b / 8, 16 values each, f0 = d * scale, w the quants "
    "0..63): term = float64(fp32(f0_0 * d)) * sum((w - 32) * q)_0 + float64(fp32(f0_1 * d)) * "
    "sum((w - 32) * q)_1; y = fp32(sum of the terms over the blocks in order, in float64) + bias "
    "in fp32")
QK_K = gguf.QK_K  # 256 elements per K-quant super-block
K_BLOCK_BYTES = {GT.Q4_K: 144, GT.Q5_K: 176, GT.Q6_K: 210, GT.Q5_0: 22}  # bytes per block (Q5_0: 32 elements)
# Sanity bound on max |dequantized - checkpoint| / max |checkpoint| per tensor: about half a step
# of a 4-bit (5-bit, 6-bit) grid over a sub-block's range, plus the 6-bit / int8 sub-scale
# rounding; Q5_0 (gguf-py's quantizer, d = max / -16, q - 16 in -16..15): half a step of a
# 32-element block's max |x| / 16, a whole step where -max clamps to 15.
K_MAX_REL_ERR = {GT.Q4_K: 0.08, GT.Q5_K: 0.04, GT.Q6_K: 0.02, GT.Q5_0: 0.07}
# convert_hf_to_gguf.py's table for Phi-3 (used to check gguf-py's TensorNameMap, which names the tensors)
CONVERTER_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.qkv_proj.weight": "attn_qkv.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
PAD_SCORE = -10000.0
ADDED_SCORE = -1000.0

log = mf.log


def fail(msg):
    raise SystemExit(f"make_gguf_fixtures: FAILED: {msg}")


def check(cond, msg):
    if not cond:
        fail(msg)


# ----------------------------------------------------------------------------------------------
# checkpoint and names


def load_checkpoint(mdir):
    """(config dict, [(hf name, bf16 tensor)] in the file's order, fp32 model as make_quant_goldens loads it)."""
    cfg = json.loads((mdir / "config.json").read_text())
    check(cfg["architectures"] == ["Phi3ForCausalLM"], f"{mdir}: not a Phi3ForCausalLM")
    with safe_open(str(mdir / "model.safetensors"), framework="pt") as f:
        tensors = [(k, f.get_tensor(k)) for k in f.keys()]
    for k, t in tensors:
        check(t.dtype == torch.bfloat16, f"{mdir.name}: {k} is {t.dtype}, expected bfloat16")
    model = mf.load(mdir, torch.float32)
    params = dict(model.named_parameters())
    for k, t in tensors:
        check(torch.equal(params[k].detach(), t.float()), f"{mdir.name}: {k}: fp32 model != checkpoint")
    return cfg, tensors, model


def gguf_name(tmap, hf):
    """gguf-py's name for an HF tensor, checked against the converter's table."""
    name = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
    check(name is not None, f"gguf-py has no PHI3 name for {hf}")
    parts = hf.split(".")
    if parts[:2] == ["model", "layers"]:
        want = f"blk.{parts[2]}." + CONVERTER_NAMES[".".join(parts[3:])]
    else:
        want = CONVERTER_NAMES[hf]
    check(name == want, f"gguf-py names {hf} {name!r}, the converter table says {want!r}")
    return name


def rope_info(cfg):
    """(rope_dims, attn_factor or None, long factors, short factors) as convert_hf_to_gguf.py computes them."""
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    rope_dims = int(cfg.get("partial_rotary_factor", 1.0) * hidden) // heads
    rs = cfg.get("rope_scaling")
    if not rs:
        return rope_dims, None, None, None
    kind = (rs.get("type") or rs.get("rope_type") or "").lower()
    check(kind in ("longrope", "su"), f"rope_scaling type {kind!r} is not LongRoPE")
    mx, orig = cfg["max_position_embeddings"], cfg["original_max_position_embeddings"]
    attn = math.sqrt(1 + math.log(mx / orig) / math.log(orig)) if mx > orig else 1.0
    lf, sf = rs["long_factor"], rs["short_factor"]
    check(len(lf) == len(sf) == rope_dims // 2 and rope_dims % 2 == 0,
          f"rope factors: {len(lf)} long, {len(sf)} short, want {rope_dims // 2}")
    return rope_dims, attn, np.array(lf, dtype=np.float32), np.array(sf, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# quantization (make_quant_goldens.py's functions; only the Q8_0 byte layout is written here)


def quantize_bytes(w, fmt):
    """w fp32 [n, k] -> (uint8 [n, k/32 * block bytes], dequantized fp32 [n, k]) with
    make_quant_goldens.py's quantizer; Q4_0 blocks packed by its pack_q4_0, Q8_0 blocks as
    llama.cpp's block_q8_0 (fp16 d little-endian, then the 32 int8 q)."""
    _, d16, q, deq = mq.FORMATS[fmt]["quantize"](w)[:4]
    n, nb = d16.shape
    if fmt == "q8_0":
        dbytes = d16.view(torch.int16).numpy().astype("<i2").view(np.uint8).reshape(n, nb, 2)
        qbytes = q.numpy().astype(np.int8).view(np.uint8).reshape(n, nb, mq.QK)
        blocks = np.concatenate([dbytes, qbytes], axis=-1)
    else:
        blocks = np.frombuffer(b"".join(mq.pack_q4_0(d16[r, b], q[r, b]) for r in range(n) for b in range(nb)),
                               dtype=np.uint8).reshape(n, nb, BLOCK_BYTES[fmt])
    return np.ascontiguousarray(blocks.reshape(n, nb * BLOCK_BYTES[fmt])), deq


def decode_blocks(raw, fmt):
    """File bytes [n, nb * block bytes] -> (fp16 d bits [n, nb], signed q - z int64 [n, nb, 32],
    stored q [n, nb, 32]), decoded here from llama.cpp's block layout."""
    n = raw.shape[0]
    b = raw.reshape(n, -1, BLOCK_BYTES[fmt])
    dbits = b[..., 0:2].copy().view("<u2")[..., 0].astype(np.int64)
    if fmt == "q8_0":
        stored = b[..., 2:].copy().view(np.int8).astype(np.int64)
        return dbits, stored, stored
    qs = b[..., 2:].astype(np.int64)
    stored = np.concatenate([qs & 0xF, qs >> 4], axis=-1)
    return dbits, stored - mq.Q4_ZERO, stored


def checksums(raw, fmt):
    """(sum over blocks of float64(d) * sum(q - z), sum |q - z|) from the file's bytes, exactly:
    an fp16 d is a multiple of 2^-24."""
    dbits, qv, _ = decode_blocks(raw, fmt)
    d = dbits.astype(np.uint16).view(np.float16).astype(np.float64)
    check(bool(np.isfinite(d).all()), "non-finite block scale")
    du = d * 2.0 ** 24
    check(bool((du == np.floor(du)).all()), "fp16 d not a multiple of 2^-24")
    terms = du.astype(np.int64) * qv.sum(axis=-1)
    check(int(np.abs(terms).sum()) < 2 ** 53, "checksum bound")
    total = int(terms.sum())
    return total / 2.0 ** 24, int(np.abs(qv).sum())


# ----------------------------------------------------------------------------------------------
# K-quants (kmix): a simple valid encoder; gguf.quants.dequantize of its bytes is the truth


def kmix_types(n_layers):
    """{GGUF tensor name: ggml type} of kmix's 2-D tensors, from KMIX_BLOCKS and KMIX_GLOBAL."""
    check(all(len(v) == n_layers for v in KMIX_BLOCKS.values()), f"KMIX_BLOCKS: not one type per layer ({n_layers})")
    types = {f"{n}.weight": t for n, t in KMIX_GLOBAL.items()}
    for n, per_layer in KMIX_BLOCKS.items():
        types.update({f"blk.{i}.{n}.weight": t for i, t in enumerate(per_layer)})
    return types


def fp16_scale(v):
    """fp16 (round to nearest even) of an fp32 array of scales, checked finite; (fp16, its fp32 value)."""
    h = v.astype(np.float32).astype(np.float16)
    check(bool(np.isfinite(h).all()), "K-quant scale overflows fp16")
    return h, h.astype(np.float32)


def round_int(v, lo, hi):
    """Round half away from zero (ggml's nearest_int differs only on exact ties), clamped to [lo, hi]."""
    return np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), lo, hi).astype(np.int64)


def sub_scales(scale, d, top):
    """Sub-block scales scale / d rounded to 0..top, at least 1 where the sub-block is not flat."""
    safe = np.where(d > 0, d, np.float32(1))[:, None]
    s = round_int(scale / safe, 0, top)
    s = np.where(scale > 0, np.maximum(s, 1), 0)
    return np.where(d[:, None] > 0, s, 0)


def scale_min_blocks(w, qmax):
    """The part Q4_K and Q5_K share: w fp32 [n, k], k % 256 == 0 -> (per super-block: fp16 d, fp16
    dmin, the 12 packed bytes of eight 6-bit scale / min pairs; q int64 [super-blocks, 8, 32] in
    0..qmax). Per 32-element sub-block: min = min(x, 0), scale = (max(x) - min) / qmax; d =
    fp16(largest scale / 63), dmin = fp16(largest -min / 63); sc, m rounded to 0..63; q =
    round((x + dmin * m) / (d * sc)) clamped to 0..qmax; y = d * sc * q - dmin * m."""
    x = w.reshape(-1, 8, 32).astype(np.float32)
    lo = np.minimum(x.min(axis=-1), 0)
    hi = np.maximum(x.max(axis=-1), lo)
    scale, mins = (hi - lo) / np.float32(qmax), -lo
    d16, d = fp16_scale(scale.max(axis=-1) / np.float32(63))
    m16, dmin = fp16_scale(mins.max(axis=-1) / np.float32(63))
    sc = sub_scales(scale, d, 63)
    mn = sub_scales(mins, dmin, 63)
    ds = d[:, None] * sc.astype(np.float32)
    dm = dmin[:, None] * mn.astype(np.float32)
    q = round_int((x + dm[..., None]) / np.where(ds > 0, ds, np.float32(1))[..., None], 0, qmax)
    q = np.where(ds[..., None] > 0, q, 0)
    packed = np.zeros((x.shape[0], 12), dtype=np.int64)
    # scales[j] / scales[j + 4] (j < 4): sc / m of sub-block j, the top 2 bits those of sub-block
    # j + 4; scales[j + 8]: the low 4 bits of sub-block j + 4's sc (low nibble) and m (high nibble)
    for j in range(4):
        packed[:, j] = sc[:, j] | (sc[:, j + 4] >> 4) << 6
        packed[:, j + 4] = mn[:, j] | (mn[:, j + 4] >> 4) << 6
        packed[:, j + 8] = (sc[:, j + 4] & 15) | (mn[:, j + 4] & 15) << 4
    return d16, m16, packed.astype(np.uint8), q


def encode_q4_k(w):
    """w fp32 [n, k], k % 256 == 0 -> uint8 [n, k / 256 * 144], llama.cpp's block_q4_K: fp16 d,
    fp16 dmin, scales[12] (eight 6-bit scale / min pairs), qs[128]; y = d * sc * q - dmin * m,
    q 0..15 (scale_min_blocks with qmax 15). Element 64 c + 32 s + l is nibble s of qs[32 c + l]."""
    n, k = w.shape
    d16, m16, packed, q = scale_min_blocks(w, 15)
    qf = q.reshape(-1, 4, 2, 32)
    qs = (qf[:, :, 0, :] | qf[:, :, 1, :] << 4).reshape(-1, 128)
    blocks = np.concatenate([d16.view(np.uint8).reshape(-1, 2), m16.view(np.uint8).reshape(-1, 2),
                             packed, qs.astype(np.uint8)], axis=1)
    return np.ascontiguousarray(blocks.reshape(n, k // QK_K * K_BLOCK_BYTES[GT.Q4_K]))


def encode_q5_k(w):
    """w fp32 [n, k], k % 256 == 0 -> uint8 [n, k / 256 * 176], llama.cpp's block_q5_K: fp16 d,
    fp16 dmin, scales[12] (packed as Q4_K's), qh[32], qs[128]; y = d * sc * q - dmin * m, q 0..31
    (scale_min_blocks with qmax 31). Element e = 64 c + 32 s + l keeps its low 4 bits in nibble s
    of qs[32 c + l] and bit 4 in bit e / 32 = 2 c + s of qh[l]."""
    n, k = w.shape
    d16, m16, packed, q = scale_min_blocks(w, 31)
    qf = q.reshape(-1, 4, 2, 32)
    qs = ((qf[:, :, 0, :] & 15) | (qf[:, :, 1, :] & 15) << 4).reshape(-1, 128)
    qh = ((q.reshape(-1, 8, 32) >> 4) << np.arange(8, dtype=np.int64)[:, None]).sum(axis=1)
    blocks = np.concatenate([d16.view(np.uint8).reshape(-1, 2), m16.view(np.uint8).reshape(-1, 2),
                             packed, qh.astype(np.uint8), qs.astype(np.uint8)], axis=1)
    return np.ascontiguousarray(blocks.reshape(n, k // QK_K * K_BLOCK_BYTES[GT.Q5_K]))


def encode_q6_k(w):
    """w fp32 [n, k], k % 256 == 0 -> uint8 [n, k / 256 * 210], llama.cpp's block_q6_K: ql[128],
    qh[64], int8 scales[16], fp16 d; y = d * scale * (q - 32). Per 16-element sub-block
    scale = max|x| / 31; d = fp16(largest scale / 127); scales rounded to 0..127; q - 32 =
    round(x / (d * scale)) clamped to -32..31."""
    n, k = w.shape
    x = w.reshape(-1, 16, 16).astype(np.float32)
    scale = np.abs(x).max(axis=-1) / np.float32(31)
    d16, d = fp16_scale(scale.max(axis=-1) / np.float32(127))
    sc = sub_scales(scale, d, 127)
    ds = d[:, None] * sc.astype(np.float32)
    q = round_int(x / np.where(ds > 0, ds, np.float32(1))[..., None], -32, 31) + 32
    q = np.where(ds[..., None] > 0, q, 32).reshape(-1, 2, 4, 32)  # element 128 h + 32 s + l
    lo, hi = q & 15, q >> 4
    ql = np.concatenate([lo[:, :, 0] | lo[:, :, 2] << 4, lo[:, :, 1] | lo[:, :, 3] << 4], axis=-1)
    qh = hi[:, :, 0] | hi[:, :, 1] << 2 | hi[:, :, 2] << 4 | hi[:, :, 3] << 6
    blocks = np.concatenate([ql.reshape(-1, 128).astype(np.uint8), qh.reshape(-1, 64).astype(np.uint8),
                             sc.astype(np.int8).view(np.uint8), d16.view(np.uint8).reshape(-1, 2)], axis=1)
    return np.ascontiguousarray(blocks.reshape(n, k // QK_K * K_BLOCK_BYTES[GT.Q6_K]))


def encode_q5_0(w):
    """w fp32 [n, k], k % 32 == 0 -> uint8 [n, k / 32 * 22], llama.cpp's block_q5_0 as gguf-py's
    port of ggml's reference quantizer writes it (fp16 d, qh[4], qs[16]; y = d * (q - 16))."""
    n, k = w.shape
    raw = gguf.quants.quantize(w.astype(np.float32), GT.Q5_0)
    check(raw.dtype == np.uint8 and raw.shape == (n, k // 32 * K_BLOCK_BYTES[GT.Q5_0]), f"Q5_0 bytes {raw.shape}")
    return np.ascontiguousarray(raw)


KMIX_ENCODERS = {GT.Q4_K: encode_q4_k, GT.Q5_K: encode_q5_k, GT.Q6_K: encode_q6_k, GT.Q5_0: encode_q5_0}


def k_fp16_scales(raw, qtype):
    """The fp16 block scales of a kmix tensor's bytes as fp32: Q4_K / Q5_K d and dmin, Q6_K d, Q5_0 d."""
    lo, hi = {GT.Q4_K: (0, 4), GT.Q5_K: (0, 4), GT.Q6_K: (208, 210), GT.Q5_0: (0, 2)}[qtype]
    b = raw.reshape(-1, K_BLOCK_BYTES[qtype])
    return b[:, lo:hi].copy().view(np.float16).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# tokenizer (Phi3MiniModel.set_vocab)


def phi3_vocab(mdir, vocab_size):
    """(tokens as bytes, scores, token types, log lines) as Phi3MiniModel.set_vocab builds them."""
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(mdir / "tokenizer.model"))
    check(sp.vocab_size() <= vocab_size, "tokenizer.model larger than vocab_size")
    TT = gguf.TokenType
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [PAD_SCORE] * vocab_size
    types = [int(TT.UNUSED)] * vocab_size
    for i in range(sp.vocab_size()):
        if sp.IsUnknown(i):
            t = TT.UNKNOWN
        elif sp.IsControl(i):
            t = TT.CONTROL
        elif sp.IsUnused(i):
            t = TT.UNUSED
        elif sp.IsByte(i):
            t = TT.BYTE
        else:
            t = TT.NORMAL
        tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode(), sp.GetScore(i), int(t)
    notes = []

    def put(tid, content, special, source):
        if types[tid] != TT.UNUSED and tokens[tid] != content.encode():
            notes.append(f"{source}: replacing token {tid} {tokens[tid]!r} -> {content!r}")
        if types[tid] != TT.UNUSED and types[tid] != (TT.CONTROL if special else TT.USER_DEFINED):
            notes.append(f"{source}: token {tid} {content!r} type {TT(types[tid]).name} -> "
                         f"{(TT.CONTROL if special else TT.USER_DEFINED).name}, score {scores[tid]} -> {ADDED_SCORE}")
        tokens[tid], scores[tid] = content.encode(), ADDED_SCORE
        types[tid] = int(TT.CONTROL if special else TT.USER_DEFINED)

    p = mdir / "added_tokens.json"
    if p.is_file():
        for content, tid in json.loads(p.read_text()).items():
            if tid < vocab_size:
                put(tid, content, False, "added_tokens.json")
    p = mdir / "tokenizer_config.json"
    if p.is_file():
        for tid, e in json.loads(p.read_text()).get("added_tokens_decoder", {}).items():
            put(int(tid), e["content"], bool(e.get("special")), "tokenizer_config.json")
    p = mdir / "tokenizer.json"
    if p.is_file():
        for e in json.loads(p.read_text()).get("added_tokens", []):
            put(int(e["id"]), e["content"], bool(e.get("special")), "tokenizer.json")
    return tokens, scores, types, notes


# ----------------------------------------------------------------------------------------------
# writing


def plan(name, fmt, cfg, tensors, model):
    """The intended file: (metadata [(key, value, GGUFValueType)], tensors [dict], notes).
    Tensor dict: name, hf, ggml type, numpy shape, data (what add_tensor gets), and for checking
    ref_f32 / ref_bf16_bits / deq."""
    n_layers = cfg["num_hidden_layers"]
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.PHI3, n_layers)
    ktypes = kmix_types(n_layers) if fmt == "kmix" else {}
    rope_dims, attn_factor, lf, sf = rope_info(cfg)
    params = dict(model.named_parameters())
    targets = set(mq.quant_targets(model)) if fmt in QTYPE else set()
    if name in PURE and fmt in QTYPE:  # llama-quantize --pure: the embedding too
        targets.add("model.embed_tokens.weight")
    sw = cfg.get("sliding_window")
    meta = [
        ("general.architecture", "phi3", VT.STRING),
        ("general.type", "model", VT.STRING),
        ("general.name", f"phiserve test {name}", VT.STRING),
        ("phi3.context_length", cfg["max_position_embeddings"], VT.UINT32),
        ("phi3.rope.scaling.original_context_length", cfg["original_max_position_embeddings"], VT.UINT32),
        ("phi3.embedding_length", cfg["hidden_size"], VT.UINT32),
        ("phi3.feed_forward_length", cfg["intermediate_size"], VT.UINT32),
        ("phi3.block_count", n_layers, VT.UINT32),
        ("phi3.attention.head_count", cfg["num_attention_heads"], VT.UINT32),
        ("phi3.attention.head_count_kv", cfg["num_key_value_heads"], VT.UINT32),
        ("phi3.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"], VT.FLOAT32),
        ("phi3.rope.dimension_count", rope_dims, VT.UINT32),
        ("phi3.rope.freq_base", cfg["rope_theta"], VT.FLOAT32),
        ("general.file_type", int(FILE_TYPE[fmt]), VT.UINT32),
        ("phi3.attention.sliding_window", 0 if sw is None else sw, VT.UINT32),
    ]
    if attn_factor is not None:
        meta.append(("phi3.rope.scaling.attn_factor", attn_factor, VT.FLOAT32))
    meta.append(("general.quantization_version", gguf.GGML_QUANT_VERSION, VT.UINT32))

    out, notes = [], []
    if lf is not None:  # the converter yields these before the checkpoint's tensors
        for kind, arr in ((gguf.MODEL_TENSOR.ROPE_FACTORS_LONG, lf), (gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT, sf)):
            out.append({"name": gguf.TENSOR_NAMES[kind] + ".weight", "hf": None, "type": GT.F32,
                        "shape": arr.shape, "data": arr, "ref_f32": arr})
    for hf, t in tensors:
        w = params[hf].detach().clone()
        e = {"name": gguf_name(tmap, hf), "hf": hf, "shape": tuple(t.shape), "ref_f32": w.numpy(),
             "ref_bf16_bits": t.view(torch.int16).numpy().view(np.uint16)}
        if t.dim() == 1 or fmt == "f32":
            e["type"], e["data"] = GT.F32, w.numpy()
        elif fmt == "kmix":
            qt = ktypes.get(e["name"])
            check(qt is not None and t.shape[1] % QK_K == 0, f"{hf}: no kmix type, or in_features % {QK_K} != 0")
            check(hf == "model.embed_tokens.weight" or qt in KMIX_NATIVE | KMIX_REQUANT,
                  f"{hf}: {qt.name} is neither native nor requantized")
            e["type"] = qt
            e["data"] = KMIX_ENCODERS[qt](w.numpy())
            e["deq"] = gguf.quants.dequantize(e["data"], qt)
        elif hf in targets and t.shape[1] % mq.QK == 0:
            e["type"] = QTYPE[fmt]
            e["data"], deq = quantize_bytes(w, fmt)
            e["deq"] = deq.numpy()
        else:
            if hf in targets:
                notes.append(f"{hf}: in_features {t.shape[1]} % {mq.QK} != 0, kept BF16 (as make_quant_goldens.py keeps it)")
            e["type"], e["data"] = GT.BF16, np.ascontiguousarray(e["ref_bf16_bits"].view(np.uint8))
        out.append(e)
    check(set(ktypes) <= {e["name"] for e in out}, f"kmix types for tensors the model lacks: "
          f"{sorted(set(ktypes) - {e['name'] for e in out})}")
    return meta, out, notes


def write_file(path, name, fmt, cfg, meta, tensors, vocab, mdir):
    """Writes with GGUFWriter's typed setters (the converter's calls). Returns the SpecialVocab used or None."""
    w = gguf.GGUFWriter(str(path), "phi3")
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"phiserve test {name}")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_rope_scaling_orig_ctx_len(cfg["original_max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    rope_dims, attn_factor, _, _ = rope_info(cfg)
    w.add_rope_dimension_count(rope_dims)
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_file_type(FILE_TYPE[fmt])
    sw = cfg.get("sliding_window")
    w.add_sliding_window(0 if sw is None else sw)
    if attn_factor is not None:
        w.add_rope_scaling_attn_factors(attn_factor)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    special = None
    if vocab is not None:
        tokens, scores, types, _ = vocab
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        special = gguf.SpecialVocab(mdir, n_vocab=len(tokens))
        special.add_to_gguf(w, quiet=True)
    for e in tensors:
        if e["type"] == GT.F32:
            w.add_tensor(e["name"], e["data"])
        else:  # BF16 bits or quantized blocks as uint8, shape in bytes
            w.add_tensor(e["name"], e["data"], raw_dtype=e["type"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return special


def tokenizer_meta(vocab, special, mdir):
    """The tokenizer keys the file must hold, from the vocab and SpecialVocab's picks."""
    tokens, scores, types, _ = vocab
    meta = [("tokenizer.ggml.model", "llama", VT.STRING), ("tokenizer.ggml.pre", "default", VT.STRING),
            ("tokenizer.ggml.tokens", [t.decode() for t in tokens], VT.ARRAY),
            ("tokenizer.ggml.scores", scores, VT.ARRAY), ("tokenizer.ggml.token_type", types, VT.ARRAY)]
    key = {"bos": "tokenizer.ggml.bos_token_id", "eos": "tokenizer.ggml.eos_token_id",
           "unk": "tokenizer.ggml.unknown_token_id", "pad": "tokenizer.ggml.padding_token_id",
           "sep": "tokenizer.ggml.seperator_token_id", "cls": "tokenizer.ggml.cls_token_id",
           "mask": "tokenizer.ggml.mask_token_id", "eot": "tokenizer.ggml.eot_token_id",
           "eom": "tokenizer.ggml.eom_token_id"}
    for typ, tid in special.special_token_ids.items():
        meta.append((key[typ], tid, VT.UINT32))
    for typ, v in special.add_special_token.items():
        meta.append((f"tokenizer.ggml.add_{typ}_token", v, VT.BOOL))
    if special.chat_template is not None:
        meta.append(("tokenizer.chat_template", special.chat_template, VT.STRING))
    # what the Phi-3 files say, independently of SpecialVocab
    tc = json.loads((mdir / "tokenizer_config.json").read_text())
    want = {"tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 32000,
            "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.padding_token_id": 32000,
            "tokenizer.ggml.add_bos_token": tc["add_bos_token"], "tokenizer.ggml.add_eos_token": tc["add_eos_token"],
            "tokenizer.chat_template": tc["chat_template"]}
    got = {k: v for k, v, _ in meta}
    for k, v in want.items():
        check(got.get(k) == v, f"SpecialVocab: {k} = {got.get(k)!r}, the tokenizer files say {v!r}")
    return meta


# ----------------------------------------------------------------------------------------------
# reading back


def verify(path, fmt, mdir, meta, tensors, vocab):
    """Reads path with GGUFReader and checks everything against the plan. Returns (listing lines, stats)."""
    r = gguf.GGUFReader(str(path))
    listing = []
    # --- metadata
    fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    want_keys = [k for k, _, _ in meta]
    check(list(fields) == want_keys, f"{path}: keys {list(fields)} != intended {want_keys}")
    for key, val, vt in meta:
        f = fields[key]
        check(f.types[0] == vt, f"{path}: {key} has type {f.types[0].name}, want {vt.name}")
        got = f.contents()
        if vt == VT.FLOAT32:
            ok = np.float32(got) == np.float32(val)
        elif key == "tokenizer.ggml.scores":
            check(f.types[-1] == VT.FLOAT32, f"{path}: scores not float32")
            ok = np.array_equal(np.array(got, dtype=np.float32), np.array(val, dtype=np.float32))
        elif key == "tokenizer.ggml.token_type":
            check(f.types[-1] == VT.INT32, f"{path}: token_type not int32")
            ok = list(got) == list(val)
        elif key == "tokenizer.ggml.tokens":
            check(f.types[-1] == VT.STRING, f"{path}: tokens not strings")
            ok = got == val
        else:
            ok = got == val
        check(ok, f"{path}: {key} = {str(got)[:80]!r}, want {str(val)[:80]!r}")
        if vt == VT.ARRAY:
            shown = f"[{len(got)} x {f.types[-1].name}] {str(got[:3])[:-1]}, ...]"
        elif key == "tokenizer.chat_template":
            shown = f"{len(got)} chars"
        else:
            shown = repr(got)
        listing.append(f"    {key} ({vt.name}): {shown}")
    # --- tensors
    check([t.name for t in r.tensors] == [e["name"] for e in tensors],
          f"{path}: tensors {[t.name for t in r.tensors]} != intended {[e['name'] for e in tensors]}")
    stats = {"q_tensors": 0, "blocks": 0, "ref_quant_diff_blocks": 0}
    qdoc = None
    if fmt in QTYPE and (mdir / "golden" / fmt / "quantized.json").is_file():
        qdoc = json.loads((mdir / "golden" / fmt / "quantized.json").read_text())
        check(qdoc["format"] == fmt and qdoc["block_size"] == mq.QK, f"{path}: quantized.json format")
    raw_by_hf = {}
    for t, e in zip(r.tensors, tensors):
        ne = tuple(int(x) for x in t.shape)
        check(t.tensor_type == e["type"], f"{path}: {t.name} is {t.tensor_type.name}, want {e['type'].name}")
        check(ne == tuple(reversed(e["shape"])), f"{path}: {t.name} ne {ne}, want {tuple(reversed(e['shape']))}")
        data = np.asarray(t.data)
        if e["type"] == GT.F32:
            got = data.reshape(e["shape"])
            check(np.array_equal(got.view(np.uint32), np.ascontiguousarray(e["ref_f32"]).view(np.uint32)),
                  f"{path}: {t.name}: F32 data differ from the checkpoint / config values")
        elif e["type"] == GT.BF16:
            got = data.view(np.uint16).reshape(e["shape"]) if data.dtype == np.uint8 else data.reshape(e["shape"]).view(np.uint16)
            check(np.array_equal(got, e["ref_bf16_bits"]), f"{path}: {t.name}: BF16 bits differ from the checkpoint")
            # the bits are also what gguf-py's (= ggml's) fp32 -> bf16 conversion makes of the values
            check(np.array_equal(gguf.quants.quantize(e["ref_f32"], GT.BF16).view(np.uint16).reshape(e["shape"]), got),
                  f"{path}: {t.name}: gguf.quants BF16 of the values differs")
        elif e["type"] in K_BLOCK_BYTES:
            raw = data.reshape(e["shape"][0], -1)
            check(raw.dtype == np.uint8 and np.array_equal(raw, e["data"]), f"{path}: {t.name}: stored bytes differ")
            check(bool(np.isfinite(k_fp16_scales(raw, e["type"])).all()), f"{path}: {t.name}: non-finite fp16 scale")
            deq = gguf.quants.dequantize(raw, e["type"])
            check(deq.shape == e["shape"] and np.array_equal(deq.view(np.uint32), e["deq"].view(np.uint32))
                  and bool(np.isfinite(deq).all()), f"{path}: {t.name}: dequantized values differ or are not finite")
            rel = float(np.abs(deq - e["ref_f32"]).max() / np.abs(e["ref_f32"]).max())
            check(rel <= K_MAX_REL_ERR[e["type"]], f"{path}: {t.name}: {e['type'].name} max relative error "
                  f"{rel:.3e} > {K_MAX_REL_ERR[e['type']]}: the encoder is broken")
            stats.setdefault("k_errors", []).append((t.name, e["type"].name, rel))
            stats["q_tensors"] += 1
            stats["blocks"] += raw.size // K_BLOCK_BYTES[e["type"]]
        else:
            raw = data.reshape(e["shape"][0], -1)
            check(raw.dtype == np.uint8 and np.array_equal(raw, e["data"]), f"{path}: {t.name}: stored bytes differ")
            deq = gguf.quants.dequantize(raw, e["type"])
            check(deq.shape == e["shape"] and np.array_equal(deq.view(np.uint32), e["deq"].view(np.uint32)),
                  f"{path}: {t.name}: gguf.quants.dequantize != make_quant_goldens.py's dequantized values")
            ref = gguf.quants.quantize(e["ref_f32"], e["type"]).reshape(raw.shape[0], -1, BLOCK_BYTES[fmt])
            stats["ref_quant_diff_blocks"] += int((ref != raw.reshape(ref.shape)).any(axis=-1).sum())
            stats["q_tensors"] += 1
            stats["blocks"] += raw.size // BLOCK_BYTES[fmt]
            raw_by_hf[e["hf"]] = raw
        listing.append(f"    {t.name}: {t.tensor_type.name} ne {list(ne)} ({t.n_bytes} bytes)")
    # --- against golden/<fmt>/quantized.json
    if qdoc is not None:
        recs = {q["name"]: q for q in qdoc["tensors"]}
        check(set(recs) == set(raw_by_hf), f"{path}: quantized tensors {sorted(raw_by_hf)} != quantized.json {sorted(recs)}")
        check(not qdoc["skipped"], f"{path}: quantized.json skipped {qdoc['skipped']}")
        for hf, raw in raw_by_hf.items():
            q = recs[hf]
            sdq, saq = checksums(raw, fmt)
            check(list(q["shape"]) == [raw.shape[0], raw.shape[1] // BLOCK_BYTES[fmt] * mq.QK], f"{path}: {hf}: shape")
            check(q["blocks"] == raw.size // BLOCK_BYTES[fmt], f"{path}: {hf}: block count")
            check(sdq == q["sum_d_times_q"], f"{path}: {hf}: sum_d_times_q {sdq!r} != quantized.json {q['sum_d_times_q']!r}")
            check(saq == q["sum_abs_q"], f"{path}: {hf}: sum_abs_q {saq} != quantized.json {q['sum_abs_q']}")
        recs = list(qdoc["first_blocks"])
        recs += [qdoc[k] for k in ("first_tie_block", "first_clamped_block", "first_sign_tie_block") if qdoc.get(k)]
        for b in recs:
            raw = raw_by_hf[b["tensor"]]
            dbits, _, stored = decode_blocks(raw, fmt)
            row, blk = b["row"], b["block"]
            check(int(dbits[row, blk]) == b["d_fp16_bits"] and stored[row, blk].tolist() == b["q"],
                  f"{path}: {b['tensor']} block ({row}, {blk}) differs from quantized.json")
            if "bytes_hex" in b:
                bb = BLOCK_BYTES[fmt]
                check(raw[row, blk * bb:(blk + 1) * bb].tobytes().hex() == b["bytes_hex"],
                      f"{path}: {b['tensor']} block ({row}, {blk}) bytes differ from quantized.json")
        stats["quantized_json_blocks"] = len(recs)
    elif fmt in QTYPE:
        stats["checksums"] = {hf: checksums(raw, fmt) for hf, raw in raw_by_hf.items()}
    # --- tokenizer: independent cross-check against tokenizer.json's vocabulary
    if vocab is not None:
        tokens, _, types, _ = vocab
        tj = json.loads((mdir / "tokenizer.json").read_text())
        added = {e["id"]: e for e in tj["added_tokens"]}
        for piece, tid in tj["model"]["vocab"].items():
            check(tid in added or tokens[tid] == piece.encode(),
                  f"{path}: token {tid} {tokens[tid]!r} != tokenizer.json {piece!r}")
        for tid, e in added.items():
            check(tokens[tid] == e["content"].encode() and types[tid] == (3 if e["special"] else 4),
                  f"{path}: added token {tid}")
        n_model = len(tj["model"]["vocab"])
        top = max(max(added), n_model - 1)
        check(all(tokens[i] == f"[PAD{i}]".encode() and types[i] == 5 for i in range(top + 1, len(tokens))),
              f"{path}: padding tokens")
    return listing, stats


# ----------------------------------------------------------------------------------------------
# the kmix golden


def kmix_weights(tensors, requant=KMIX_REQUANT, embed_requant=False):
    """{hf name: (fp32 tensor, how)}: kmix's block-format tensors as a loader sees them that widens
    every one exactly (gguf.quants.dequantize of the file's bytes) and then requantizes the
    matrices of the types in requant (and token_embd if embed_requant) with make_quant_goldens.py's
    quantize_q8_0. The defaults are phiserve's loader; others make the sensitivity report."""
    out = {}
    for e in tensors:
        if e["type"] not in K_BLOCK_BYTES:
            continue
        deq = torch.from_numpy(np.ascontiguousarray(e["deq"]))
        embed = e["hf"] == "model.embed_tokens.weight"
        if embed_requant if embed else e["type"] in requant:
            out[e["hf"]] = (mq.quantize_q8_0(deq)[3], f"{e['type'].name} -> Q8_0")
        else:
            out[e["hf"]] = (deq, f"{e['type'].name} {'widened' if embed else 'native'}")
    return out


def set_weights(model, weights):
    params = dict(model.named_parameters())
    with torch.no_grad():
        for hf, (w, _) in weights.items():
            params[hf].copy_(w)


def prompt_distance(model, results, fp32_doc):
    """Largest |model's prompt logit - results' prompt logit| over the golden's logit rows,
    relative to the results row's largest |logit| (the C test's tolerance is relative to that)."""
    worst = 0.0
    for r, g in zip(results, fp32_doc["cases"]):
        rows = g["logit_rows"]
        ref = r["logits32"][rows]
        alt = mf.forward_logits(model, r["ids"])[rows]
        worst = max(worst, float(((alt - ref).abs().amax(-1) / ref.abs().amax(-1)).max()))
    return worst


def kmix_golden(name, mdir, tensors):
    """golden/kmix/: transformers on the checkpoint with the block-format tensors as phiserve loads
    them (kmix_weights' defaults: Q4_K / Q5_K / Q6_K matrices exactly their dequantized values,
    Q5_0 the Q8_0 of its exact widening, token_embd its exact widening). Returns report lines."""
    torch.use_deterministic_algorithms(True)
    spec = mq.spec_for(name)
    fp32_doc = json.loads((mdir / "golden" / "golden.json").read_text())
    model = mf.load(mdir, torch.float32)
    check(not model.config.tie_word_embeddings, f"{name}: kmix expects an untied lm_head")
    lines = []
    ckpt = {k: p.detach().clone() for k, p in model.named_parameters()}
    weights = kmix_weights(tensors)
    set_weights(model, weights)
    gname = {e["hf"]: e["name"] for e in tensors}
    for hf, (w, how) in weights.items():
        rel = float((w - ckpt[hf]).abs().max() / ckpt[hf].abs().max())
        lines.append(f"{gname[hf]}: {how}, max |w' - w| / max |w| {rel:.2e}")
    results = mq.run_cases(model, spec, fp32_doc)
    gdir = mdir / "golden" / "kmix"
    shutil.rmtree(gdir, ignore_errors=True)
    gdir.mkdir(parents=True)
    mq.write_quant_golden("kmix", spec, fp32_doc, gdir, results, {}, None)
    doc = json.loads((gdir / "golden.json").read_text())
    del doc["quantized_tensors_file"]
    doc["generator"] = "scripts/make_gguf_fixtures.py"
    doc["gguf_file"] = "gguf/kmix.gguf"
    native = " / ".join(t.name for t in sorted(KMIX_NATIVE))
    requant = " / ".join(t.name for t in sorted(KMIX_REQUANT))
    doc["weights"] = (f"{native} matrices (output as lm_head included): gguf.quants.dequantize(bytes) (used "
                      f"natively); {requant} matrices: make_quant_goldens.py's Q8_0 of "
                      "gguf.quants.dequantize(bytes) (requantized at load); token_embd: "
                      "gguf.quants.dequantize(bytes); norms: the checkpoint's")
    mq.write_json(gdir / "golden.json", doc)
    mm = mf.min_margin(results, "margins32")
    scale = max(max(float(r["logits32"].abs().max()), float(r["steps32"].abs().max())) for r in results)
    noise, flipped = mq.fp64_check(model, spec, results)
    weakest = mq.weakest_steps(results)
    lines.append(f"min greedy margin {mm:.6f} (logit scale {scale:.2f}); prompt logits vs fp32 goldens up to "
                 f"{mq.fp32_distance(results, fp32_doc, mdir / 'golden'):.2e} of the row scale; "
                 f"{sum(r['greedy32'] != g['greedy'] for r, g in zip(results, fp32_doc['cases']))} case(s) with "
                 f"a different greedy sequence; independent forward max |diff| {mf.spec_check(model, results):.1e}")
    lines.append("weakest greedy steps (margin / row scale): "
                 + ", ".join(f"{c}[{i}] {m:.4f}/{sc:.1f} = {r:.2e}" for r, m, sc, c, i in weakest))
    lines.append(f"float64 cross-check: logits differ by up to {noise:.1e} of the row scale, greedy "
                 + (f"differs for {flipped}" if flipped else "identical"))
    for r, m, sc, c, i in weakest:
        if r < mq.WARN_MARGIN_RTOL:
            lines.append(f"WARNING: {c} greedy step {i}: margin {m:.3e} is only {r:.2e} of the row scale "
                         f"(test_golden compares greedy tokens up to the first step under {2 * mq.LOGIT_RTOL:g})")
    # sensitivity: a loader that took another path for some tensors must miss the golden by far more
    # than the C test's tolerance (LOGIT_RTOL of the row scale)
    alternatives = {
        f"{native} matrices requantized to Q8_0 (the old loader)": kmix_weights(tensors, KMIX_NATIVE | KMIX_REQUANT),
        f"{requant} matrices not requantized": kmix_weights(tensors, set()),
        "token_embd requantized to Q8_0": kmix_weights(tensors, KMIX_REQUANT, embed_requant=True),
    }
    for what, alt in alternatives.items():
        set_weights(model, alt)
        dist = prompt_distance(model, results, fp32_doc)
        lines.append(f"sensitivity: {what}: prompt logits move up to {dist:.2e} of the row scale "
                     f"({dist / mq.LOGIT_RTOL:.0f}x the test tolerance {mq.LOGIT_RTOL:g})")
        if dist < 10 * mq.LOGIT_RTOL:
            lines.append(f"WARNING: {what}: only {dist:.2e} of the row scale from the golden")
    set_weights(model, weights)
    lines = [f"{name}/golden/kmix: " + ln for ln in lines]
    for ln in lines:
        log("  " + ln)
    return lines


# ----------------------------------------------------------------------------------------------
# the kmix golden with int8 activations (--int8): make_quant_goldens.py's emulation of the int8
# dot, with the Q4_K_R16, Q5_K_R16 and Q6_K_R16 forms added


def kmix_int8_kind(qtype):
    """How phiserve runs a kmix matrix (not token_embd) of this GGUF type with --int8-activations
    and no --quantization: "q4_k", "q5_k", "q6_k" or "q8_0" (interleaved: the int8 dot), None (the
    plain path)."""
    if qtype in KMIX_INT8_NATIVE:
        return qtype.name.lower()
    if qtype in KMIX_REQUANT:  # held as Q8_0 after the load
        return "q8_0"
    return None


def decode_k_scale_min(raw, qtype):
    """Q4_K or Q5_K bytes [n, k / 256 * block bytes] -> (f0, f1 fp32 [n, k/32], w int64
    [n, k/32, 32]) per 32-element sub-block in element order: f0 = d * sc and f1 = dmin * m (exact
    fp32 products: an fp16 times a 6-bit integer), w the quants (Q4_K 0..15, Q5_K 0..31), value
    f0 * w - f1. Decoded here from llama.cpp's block_q4_K / block_q5_K (encode_q4_k's /
    encode_q5_k's layout: d, dmin, scales[12], Q5_K's qh[32], qs[128]) and checked against
    gguf.quants.dequantize bit for bit."""
    check(qtype in (GT.Q4_K, GT.Q5_K), f"decode_k_scale_min: {qtype.name}")
    name = qtype.name
    n = raw.shape[0]
    b = raw.reshape(n, -1, K_BLOCK_BYTES[qtype])
    ns = b.shape[1]
    d = b[..., 0:2].copy().view("<f2")[..., 0].astype(np.float32)
    dmin = b[..., 2:4].copy().view("<f2")[..., 0].astype(np.float32)
    s = b[..., 4:16].astype(np.int64)
    sc = np.zeros((n, ns, 8), dtype=np.int64)
    mn = np.zeros((n, ns, 8), dtype=np.int64)
    for j in range(4):  # the inverse of scale_min_blocks' packing
        sc[..., j] = s[..., j] & 63
        mn[..., j] = s[..., j + 4] & 63
        sc[..., j + 4] = (s[..., j + 8] & 15) | (s[..., j] >> 6) << 4
        mn[..., j + 4] = (s[..., j + 8] >> 4) | (s[..., j + 4] >> 6) << 4
    # element 64 c + 32 h + l is nibble h of qs[32 c + l]: sub-block 2 c + h
    q0 = 16 if qtype == GT.Q4_K else 48
    qs = b[..., q0:q0 + 128].astype(np.int64).reshape(n, ns, 4, 1, 32)
    w = ((qs >> np.array([0, 4], dtype=np.int64).reshape(1, 1, 1, 2, 1)) & 15).reshape(n, ns, 8, 32)
    if qtype == GT.Q5_K:  # bit 4 of element 32 j + l (sub-block j) is bit j of qh[l]
        qh = b[..., 16:48].astype(np.int64).reshape(n, ns, 1, 32)
        w = w | ((qh >> np.arange(8, dtype=np.int64).reshape(1, 1, 8, 1)) & 1) << 4
    w = w.reshape(n, ns * 8, 32)
    f0 = (d[..., None] * sc.astype(np.float32)).reshape(n, ns * 8)
    f1 = (dmin[..., None] * mn.astype(np.float32)).reshape(n, ns * 8)
    check(np.array_equal(f0.astype(np.float64), (d.astype(np.float64)[..., None] * sc).reshape(n, -1))
          and np.array_equal(f1.astype(np.float64), (dmin.astype(np.float64)[..., None] * mn).reshape(n, -1)),
          f"{name}: d * sc or dmin * m not exact in fp32")
    deq = (f0[..., None] * w.astype(np.float32) - f1[..., None]).reshape(n, -1)
    ref = gguf.quants.dequantize(raw, qtype)
    check(deq.dtype == np.float32 and np.array_equal(deq.view(np.uint32), ref.view(np.uint32)),
          f"{name}: decoded f0 * w - f1 != gguf.quants.dequantize")
    return f0, f1, w


def decode_q4_k(raw):
    """decode_k_scale_min of Q4_K bytes [n, k / 256 * 144]: w in 0..15."""
    return decode_k_scale_min(raw, GT.Q4_K)


def decode_q5_k(raw):
    """decode_k_scale_min of Q5_K bytes [n, k / 256 * 176]: w in 0..31 (low 4 bits from qs as
    Q4_K's, bit 4 of sub-block j's element l = bit j of qh[l])."""
    return decode_k_scale_min(raw, GT.Q5_K)


def decode_q6_k(raw):
    """Q6_K bytes [n, k / 256 * 210] -> (f0 fp32 [n, k/32, 2], None, w int64 [n, k/32, 32]): per
    32-element block in element order, the d * scale of its two 16-element sub-blocks (exact fp32
    products: an fp16 times an int8) and its quants 0..63, value f0 * (w - 32). Decoded here from
    llama.cpp's block_q6_K (encode_q6_k's layout: ql[128], qh[64], scales[16], d): element
    128 h + 32 u + l is nibble u // 2 of ql[64 h + 32 (u % 2) + l] with bits 2u, 2u + 1 of
    qh[32 h + l] above it; checked against gguf.quants.dequantize bit for bit."""
    n = raw.shape[0]
    b = raw.reshape(n, -1, K_BLOCK_BYTES[GT.Q6_K])
    ns = b.shape[1]
    ql = b[..., 0:128].astype(np.int64).reshape(n, ns, 2, 2, 32)  # [.., h, u % 2, l]
    qh = b[..., 128:192].astype(np.int64).reshape(n, ns, 2, 1, 32)  # [.., h, -, l]
    sc = b[..., 192:208].copy().view(np.int8).astype(np.int64)
    d = b[..., 208:210].copy().view("<f2")[..., 0].astype(np.float32)
    w = np.empty((n, ns, 2, 4, 32), dtype=np.int64)
    for u in range(4):
        w[..., u, :] = ((ql[..., u % 2, :] >> (4 * (u // 2))) & 15) | ((qh[..., 0, :] >> (2 * u)) & 3) << 4
    w = w.reshape(n, ns * 8, 32)
    f0 = d[..., None] * sc.astype(np.float32)  # [n, ns, 16]
    check(np.array_equal(f0.astype(np.float64), d.astype(np.float64)[..., None] * sc),
          "Q6_K: d * sc not exact in fp32")
    f0 = f0.reshape(n, ns * 8, 2)
    deq = (np.repeat(f0, 16, axis=-1) * (w - 32).astype(np.float32)).reshape(n, -1)
    ref = gguf.quants.dequantize(raw, GT.Q6_K)
    check(deq.dtype == np.float32 and np.array_equal(deq.view(np.uint32), ref.view(np.uint32)),
          "Q6_K: decoded f0 * (w - 32) != gguf.quants.dequantize")
    return f0, None, w


def k_values(kind, f0, f1, w):
    """The fp32 values [n, k/32, 32] that kind's decoded (f0, f1, w) stand for."""
    if kind == "q6_k":
        return np.repeat(f0, 16, axis=-1) * (w - 32).astype(np.float32)
    return f0[..., None] * w.astype(np.float32) - f1[..., None]


# the int8 kinds with a K super-block dot (K_R16), and their decoders
KMIX_INT8_K_DECODERS = {"q4_k": decode_q4_k, "q5_k": decode_q5_k, "q6_k": decode_q6_k}


def kmix_int8_layers(model, tensors, weights):
    """{module name: ("q4_k", "q5_k" or "q6_k", (f0, f1, w)) or ("q8_0", (dw fp32 [n, k/32], signed
    q int64 [n, k/32, 32]))} of the matrices phiserve runs with int8 activations, by their GGUF type
    (kmix_types); each one's values are checked equal to weights' (the golden/kmix values)."""
    ktypes = kmix_types(model.config.num_hidden_layers)
    layers = {}
    for e in tensors:
        if e["type"] not in K_BLOCK_BYTES or e["hf"] == "model.embed_tokens.weight":
            continue
        check(ktypes[e["name"]] == e["type"], f"{e['name']}: planned {e['type'].name}, kmix_types says "
              f"{ktypes[e['name']].name}")
        kind = kmix_int8_kind(ktypes[e["name"]])
        if kind is None:
            continue
        w_ref = weights[e["hf"]][0]
        if kind in KMIX_INT8_K_DECODERS:
            f0, f1, w = KMIX_INT8_K_DECODERS[kind](e["data"])
            arrays = (torch.from_numpy(f0), None if f1 is None else torch.from_numpy(f1), torch.from_numpy(w))
            deq = torch.from_numpy(k_values(kind, f0, f1, w).reshape(w_ref.shape))
        else:  # the same call as kmix_weights: the Q8_0 that phiserve's loader makes of the Q5_0
            dw, _, q, deq = mq.quantize_q8_0(torch.from_numpy(np.ascontiguousarray(e["deq"])))[:4]
            arrays = (dw, q.long())
        check(torch.equal(deq.view(torch.int32), w_ref.view(torch.int32)),
              f"{e['name']}: int8 layer values != golden/kmix's weights")
        layers[e["hf"][:-len(".weight")]] = (kind, arrays)
    return layers


def int8_matmul_k(x, f0, f1, w):
    """ops.h's Q4_K_R16 / Q5_K_R16 int8 dot without the bias: x [M, k] (rounded to fp32 first),
    f0 / f1 fp32 [n, k/32], w float64 [n, k/32, 32] (the quants 0..15 or 0..31). Returns
    (y float64 [M, n] (the fp64 accumulator, NaN rows for non-finite inputs), d, q, p
    (mq.quantize_activations'),
    c0 = fp32(f0 * d), c1 = fp32(f1 * d) [M, n, k/32])."""
    x = x.to(torch.float32)
    d, q, p, finite = mq.quantize_activations(x)
    assert float(w.min()) >= 0 and float(w.max()) <= 31
    # |w q| <= 31 * 127, 32 of them: every partial sum is an integer, exact in float64
    s = torch.einsum("mbt,nbt->mnb", q, w)
    xs = q.sum(dim=-1)
    c0 = d[:, None, :] * f0[None, :, :]  # one fp32 rounding each
    c1 = d[:, None, :] * f1[None, :, :]
    assert np.array_equal(c0.numpy(), d.numpy()[:, None, :] * f0.numpy()[None, :, :])
    assert np.array_equal(c1.numpy(), d.numpy()[:, None, :] * f1.numpy()[None, :, :])
    acc = torch.zeros(c0.shape[:2], dtype=torch.float64)
    for b in range(c0.shape[2]):  # in block order, each term as kernels/ref/matmul.c's r16_term
        acc = acc + (c0[:, :, b].double() * s[:, :, b] - c1[:, :, b].double() * xs[:, None, b])
    acc[~finite] = float("nan")
    return acc, d, q, p, c0, c1


def int8_matmul_q6(x, f0, w):
    """ops.h's Q6_K_R16 int8 dot without the bias: x [M, k] (rounded to fp32 first), f0 fp32
    [n, k/32, 2], w float64 [n, k/32, 32] (the quants 0..63). Returns (y float64 [M, n] (NaN rows
    for non-finite inputs), d, q, p (mq.quantize_activations'), c = fp32(f0 * d) [M, n, k/32, 2])."""
    x = x.to(torch.float32)
    d, q, p, finite = mq.quantize_activations(x)
    assert float(w.min()) >= 0 and float(w.max()) <= 63
    M, nb = q.shape[:2]
    # |(w - 32) q| <= 32 * 127, 16 of them: every partial sum is an integer, exact in float64
    s = torch.einsum("mbht,nbht->mnbh", q.reshape(M, nb, 2, 16), (w - 32).reshape(w.shape[0], nb, 2, 16))
    c = d[:, None, :, None] * f0[None, :, :, :]  # one fp32 rounding each
    assert np.array_equal(c.numpy(), d.numpy()[:, None, :, None] * f0.numpy()[None, :, :, :])
    acc = torch.zeros(c.shape[:2], dtype=torch.float64)
    for b in range(nb):  # in block order, each term as kernels/ref/matmul.c's r16_term
        acc = acc + (c[:, :, b, 0].double() * s[:, :, b, 0] + c[:, :, b, 1].double() * s[:, :, b, 1])
    acc[~finite] = float("nan")
    return acc, d, q, p, c


class KInt8Linear(mq.Int8ActLinear):
    """mq.Int8ActLinear for a Q4_K, Q5_K or Q6_K matrix (same parameters, mq.ACT's modes): its
    int8 dot is the Q4_K_R16 / Q5_K_R16 one (int8_matmul_k) or the Q6_K_R16 one
    (int8_matmul_q6). kmix_install_int8 sets int8_kind ("q4_k" / "q5_k" / "q6_k"), int8_f0,
    int8_f1 (None for q6_k) and int8_w on each instance."""

    def forward(self, x):
        if mq.ACT["mode"] == "plain":
            return super().forward(x)  # the noise if any, then x @ W^T on the dequantized weight
        x = mq.with_noise(x)  # as mq.Int8ActLinear
        lead, k = x.shape[:-1], x.shape[-1]
        if self.int8_kind == "q6_k":
            acc, d, q, p, c = int8_matmul_q6(x.reshape(-1, k), self.int8_f0, self.int8_w)

            def flip(mi, bi, ti):  # moves block b's term by c (of t's sub-block) * (w_t - 32)
                return c[mi, :, bi, ti // 16].double() * (self.int8_w[:, bi, ti].T - 32)
        else:
            acc, d, q, p, c0, c1 = int8_matmul_k(x.reshape(-1, k), self.int8_f0, self.int8_f1,
                                                 self.int8_w)

            def flip(mi, bi, ti):  # moves block b's term by c0 * w_t - c1 (x_s moves by 1 too)
                return c0[mi, :, bi].double() * self.int8_w[:, bi, ti].T - c1[mi, :, bi].double()
        y = acc.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        if self.bias is not None:
            y = y + self.bias
        if mq.ACT["stats"] is not None:
            mq.record_stats(mq.ACT["stats"], y, d, p, flip)
        return y.reshape(*lead, y.shape[-1])


def kmix_install_int8(model, layers):
    """Turns the layers of kmix_int8_layers into int8 modules in place (Q8_0: make_quant_goldens'
    install_int8). Returns their names in model order."""
    mq.install_int8(model, {n + ".weight": a for n, (kind, a) in layers.items() if kind == "q8_0"})
    for name, (kind, arrays) in layers.items():
        if kind == "q8_0":
            continue
        assert kind in KMIX_INT8_K_DECODERS, (name, kind)
        f0, f1, w = arrays
        mod = model.get_submodule(name)
        assert type(mod) is torch.nn.Linear, (name, type(mod))
        mod.__class__ = KInt8Linear
        mod.int8_kind, mod.int8_f0, mod.int8_f1, mod.int8_w = kind, f0, f1, w.double()
        assert f0.shape[:2] == w.shape[:2] and w.shape[0] == mod.out_features
        assert (f1 is None) == (kind == "q6_k") and (f1 is None or f1.shape == f0.shape)
        assert w.shape[1] * mq.QK == mod.in_features
    names = [n for n, _ in model.named_modules() if n in layers]
    assert sorted(names) == sorted(layers)
    for n in names:
        assert isinstance(model.get_submodule(n), mq.Int8ActLinear), n
    return names


def literal_k_linear(x, w, f0, f1, bias):
    """ops.h's Q4_K_R16 / Q5_K_R16 contract in make_quant_goldens.py's literal loop (int64 sums,
    fp32 scalars, float64 accumulation): x np.float32 [M, k], w int64 [n, k/32, 32] (0..15 or
    0..31), f0 / f1 np.float32 [n, k/32], bias np.float32 or None."""

    def term(b, d, q):
        s = w[:, b, :] @ q  # int64, exact
        xs = int(q.sum())
        g0 = (f0[:, b] * d).astype(np.float32)
        g1 = (f1[:, b] * d).astype(np.float32)
        assert g0.dtype == g1.dtype == np.float32
        return g0.astype(np.float64) * s.astype(np.float64) - g1.astype(np.float64) * np.float64(xs)
    assert x.shape[1] == mq.QK * w.shape[1]
    return mq.literal_linear(x, w.shape[0], bias, term)


def literal_q6_linear(x, w, f0, bias):
    """ops.h's Q6_K_R16 contract in make_quant_goldens.py's literal loop: x np.float32 [M, k], w
    int64 [n, k/32, 32] (0..63), f0 np.float32 [n, k/32, 2], bias np.float32 or None."""

    def term(b, d, q):
        t = np.zeros(w.shape[0], dtype=np.float64)
        for h in range(2):
            s = (w[:, b, 16 * h:16 * h + 16] - 32) @ q[16 * h:16 * h + 16]  # int64, exact
            g = (f0[:, b, h] * d).astype(np.float32)
            assert g.dtype == np.float32
            t = t + g.astype(np.float64) * s.astype(np.float64)
        return t
    assert x.shape[1] == mq.QK * w.shape[1]
    return mq.literal_linear(x, w.shape[0], bias, term)


def kmix_literal_check(model, names, results):
    """Every int8 layer's output over the longest prompt's forward against the literal loops
    (literal_k_linear, make_quant_goldens' literal_int8_linear), bit for bit. Returns the
    number of (layer call, row) pairs checked per format."""
    mods, seen = mq.layer_calls(model, names, results)
    rows = {}
    for n, x, out in seen:
        m = mods[n]
        x2 = x.reshape(-1, x.shape[-1]).float().numpy()
        bias = None if m.bias is None else m.bias.detach().numpy()
        if isinstance(m, KInt8Linear) and m.int8_kind == "q6_k":
            kind = m.int8_kind
            want = literal_q6_linear(x2, m.int8_w.long().numpy(), m.int8_f0.numpy(), bias)
        elif isinstance(m, KInt8Linear):
            kind = m.int8_kind
            want = literal_k_linear(x2, m.int8_w.long().numpy(), m.int8_f0.numpy(), m.int8_f1.numpy(), bias)
        else:
            kind = "q8_0"
            want = mq.literal_int8_linear(x2, m.int8_wq.long().numpy(), m.int8_dw.numpy(), bias)
        got = out.reshape(-1, out.shape[-1]).numpy()
        check(np.array_equal(want.view(np.uint32), got.view(np.uint32)),
              f"{n}: emulation differs from the literal loop")
        rows[kind] = rows.get(kind, 0) + x2.shape[0]
    return rows


def same_bits(results, ref):
    """results (run_mode's) equal ref (stored_reference's) bit for bit: prompt rows, every step's
    logits and the greedy tokens."""
    for r, (rows_ref, steps_ref, greedy_ref) in zip(results, ref, strict=True):
        rows = r["logits32"][r["case_rows"]].numpy()
        if rows.shape != rows_ref.shape or not np.array_equal(rows.view(np.uint32), rows_ref.view(np.uint32)):
            return False
        if steps_ref is not None:
            steps = r["steps32"].numpy()
            if steps.shape != steps_ref.shape or not np.array_equal(steps.view(np.uint32), steps_ref.view(np.uint32)):
                return False
        if r["greedy32"] != greedy_ref:
            return False
    return True


def kmix_int8_golden(name, mdir, tensors):
    """golden/kmix_int8/: golden/kmix's model with the Q4_K, Q5_K, Q6_K and requantized Q8_0
    matrices run as the int8 dot (see the docstring). Returns report lines."""
    torch.use_deterministic_algorithms(True)
    spec = mq.spec_for(name)
    fp32_doc = json.loads((mdir / "golden" / "golden.json").read_text())
    model = mf.load(mdir, torch.float32)
    check(not model.config.tie_word_embeddings, f"{name}: kmix expects an untied lm_head")
    weights = kmix_weights(tensors)
    set_weights(model, weights)
    layers = kmix_int8_layers(model, tensors, weights)
    names = kmix_install_int8(model, layers)
    formats = {n: layers[n][0] for n in names}
    plain_dir = mdir / "golden" / "kmix"
    plain_doc = json.loads((plain_dir / "golden.json").read_text())
    plain_ref = mq.stored_reference(plain_dir, plain_doc)
    # the same harness with the int8 layers on the plain path must give golden/kmix bit for bit
    base = mq.run_mode(model, spec, fp32_doc, "plain")
    check(same_bits(base, plain_ref),
          f"the plain harness differs from {plain_dir}: {mq.results_distance(base, plain_ref)[:3]}")
    stats = mq.new_stats()
    results = mq.run_mode(model, spec, fp32_doc, "int8", stats=stats)
    literal_rows = kmix_literal_check(model, names, results)
    gdir = mdir / "golden" / "kmix_int8"
    shutil.rmtree(gdir, ignore_errors=True)
    gdir.mkdir(parents=True)
    mq.write_quant_golden("kmix", spec, fp32_doc, gdir, results, {}, None,
                          (names, [g["greedy"] for g in plain_doc["cases"]]))
    doc = json.loads((gdir / "golden.json").read_text())
    del doc["quantized_tensors_file"]
    out = {}
    for k, v in doc.items():
        if k == "activation_algorithm":
            v = KMIX_INT8_ALGORITHM
        elif k == "generator":
            v = "scripts/make_gguf_fixtures.py --int8"
        out[k] = v
        if k == "int8_activation_layers":
            out["int8_activation_formats"] = formats
        elif k == "stop_token_ids":
            out["gguf_file"] = plain_doc["gguf_file"]
            out["weights"] = plain_doc["weights"]
    check(list(out)[:4] == ["model", "vocab_size", "dtype", "quantization"] and out["quantization"] == "kmix"
          and out["activations"] == "int8", "golden.json layout")
    mq.write_json(gdir / "golden.json", out)

    lines = ["int8 layers: " + ", ".join(f"{n} ({formats[n]})" for n in names)
             + "; plain harness == golden/kmix bit for bit; emulation == literal numpy loop on "
             + ", ".join(f"{c} {k} rows" for k, c in sorted(literal_rows.items()))]
    mm = mf.min_margin(results, "margins32")
    scale = max(max(float(r["logits32"].abs().max()), float(r["steps32"].abs().max())) for r in results)
    noise64, flipped = mq.fp64_check(model, spec, results)
    weakest = mq.weakest_steps(results)
    lines.append(f"min greedy margin {mm:.6f} (logit scale {scale:.2f}); "
                 f"{sum(r['greedy32'] != g['greedy'] for r, g in zip(results, plain_doc['cases']))} case(s) with "
                 f"a greedy sequence different from golden/kmix")
    lines.append("weakest greedy steps (margin / row scale): "
                 + ", ".join(f"{c}[{i}] {m:.4f}/{sc:.1f} = {r:.2e}" for r, m, sc, c, i in weakest))
    lines.append(f"float64 cross-check: logits differ by up to {noise64:.1e} of the row scale, greedy "
                 + (f"differs for {flipped}" if flipped else "identical"))
    for r, m, sc, c, i in weakest:
        if r < mq.WARN_MARGIN_RTOL:
            lines.append(f"WARNING: {c} greedy step {i}: margin {m:.3e} is only {r:.2e} of the row scale")
    vp, vs, vd, vrows = mq.results_distance(results, plain_ref)
    lines.append(f"vs golden/kmix: prompt logits up to {vp:.2e}, step logits (to the first divergence) up to "
                 f"{vs:.2e} of the row scale; greedy differs for {len(vd)}/{len(results)} cases {vd if vd else ''}")
    lines.append(f"  {mq.spread(vrows)}; max {float(vrows.max()):.1e}")
    if max(vp, vs) < 10 * mq.LOGIT_RTOL and not vd:
        lines.append(f"WARNING: int8 logits differ from golden/kmix by only {max(vp, vs):.2e} of the row scale")
    if float(np.median(vrows)) < 10 * mq.LOGIT_RTOL:
        lines.append(f"WARNING: the median row distance from golden/kmix {float(np.median(vrows)):.1e} is under 10x "
                     f"the C test's median tolerance {mq.LOGIT_RTOL:g}")
    rel = torch.cat(stats["rel"]) if stats["rel"] else torch.zeros(0, dtype=torch.float64)
    lines.append(f"{stats['values']} activations rounded in {stats['calls']} int8 calls ({stats['zero_blocks']} zero "
                 f"blocks): {stats['exact_ties']} exact ties, {stats['near']} within {mq.NEAR_TIE:g} of a "
                 f"half-integer (closest non-tie {stats['closest']:.2e}); a flip of such a q by 1 changes the "
                 f"layer output row by up to {float(rel.max()) if rel.numel() else 0:.2e} (median "
                 f"{float(rel.median()) if rel.numel() else 0:.2e}) of its largest |y|")
    # one fp32 ulp of noise on every int8 layer input: how far the golden moves (and the plain path)
    for mode, ref in (("int8", mq.in_memory_reference(results)), ("plain", plain_ref)):
        runs = [mq.results_distance(mq.run_mode(model, spec, fp32_doc, mode, noise_seed=seed), ref)
                for seed in mq.NOISE_SEEDS]
        a, b = max(r[0] for r in runs), max(r[1] for r in runs)
        d = sorted({c for r in runs for c in r[2]})
        rows = np.concatenate([r[3] for r in runs])
        lines.append(f"1-ulp input noise ({len(mq.NOISE_SEEDS)} draws), {mode} path: prompt logits move up to {a:.2e}, "
                     f"step logits {b:.2e} of the row scale; greedy changes for {d if d else 'no case'}")
        lines.append(f"  {mq.spread(rows)}; max {float(rows.max()):.1e}")
        if mode == "int8" and (float(np.median(rows)) > mq.LOGIT_RTOL or d):
            lines.append(f"WARNING: 1-ulp noise moves the int8 rows by a median {float(np.median(rows)):.1e} "
                         f"(> the C test's median tolerance {mq.LOGIT_RTOL:g}?)"
                         + (f"; greedy changes for {d}" if d else ""))
    lines = [f"{name}/golden/kmix_int8: " + ln for ln in lines]
    for ln in lines:
        log("  " + ln)
    return lines


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_kmix_int8(models_dir):
    """--int8: gqa/golden/kmix_int8/ from the gqa/gguf/kmix.gguf on disk, which is read (and
    checked to be exactly what make_model writes) but never rewritten; it and golden/kmix/ must
    hash the same after the run as before."""
    name = "gqa"
    mdir = models_dir / name
    path = mdir / "gguf" / "kmix.gguf"
    check(path.is_file() and (mdir / "golden" / "kmix" / "golden.json").is_file(),
          f"{path} or golden/kmix missing: run without --int8 first")
    kept = [path] + sorted((mdir / "golden" / "kmix").iterdir())
    before = {p: sha256(p) for p in kept}
    cfg, tensors, model = load_checkpoint(mdir)
    meta, plan_tensors, notes = plan(name, "kmix", cfg, tensors, model)
    for n in notes:
        log(f"  NOTE {n}")
    _, stats = verify(path, "kmix", mdir, meta, plan_tensors, None)
    report = [f"{name}/gguf/kmix.gguf (sha256 {before[path][:16]}...): read back, metadata and all "
              f"{len(plan_tensors)} tensors ({stats['q_tensors']} block-format) exactly what this script writes"]
    log("  " + report[0])
    report += kmix_int8_golden(name, mdir, plan_tensors)
    after = {p: sha256(p) for p in kept}
    changed = [str(p) for p in kept if after[p] != before[p]]
    check(not changed, f"changed by --int8: {changed}")
    report.append(f"{name}/gguf/kmix.gguf and the {len(kept) - 1} files of golden/kmix/ unchanged "
                  "(sha256 before == after)")
    log("  " + report[-1])
    return report


# ----------------------------------------------------------------------------------------------


def make_model(name, models_dir):
    mdir = models_dir / name
    cfg, tensors, model = load_checkpoint(mdir)
    vocab = phi3_vocab(mdir, cfg["vocab_size"]) if name in WITH_TOKENIZER else None
    if vocab is not None:
        for n in vocab[3]:
            log(f"  vocab: {n}")
        counts = {gguf.TokenType(t).name: vocab[2].count(t) for t in sorted(set(vocab[2]))}
        log(f"  vocab: {len(vocab[0])} tokens, types {counts}")
    gdir = mdir / "gguf"
    shutil.rmtree(gdir, ignore_errors=True)
    gdir.mkdir()
    report = []
    for fmt in JOBS[name]:
        path = gdir / f"{fmt}.gguf"
        meta, plan_tensors, notes = plan(name, fmt, cfg, tensors, model)
        for n in notes:
            log(f"  NOTE {n}")
        special = write_file(path, name, fmt, cfg, meta, plan_tensors, vocab, mdir)
        if special is not None:
            log(f"  SpecialVocab picked: ids {special.special_token_ids}, add {special.add_special_token}, "
                f"chat_template {'set' if special.chat_template else 'none'}")
            meta = meta + tokenizer_meta(vocab, special, mdir)
        listing, stats = verify(path, fmt, mdir, meta, plan_tensors, vocab)
        size = path.stat().st_size
        line = f"{name}/gguf/{fmt}.gguf: {size} bytes, {len(plan_tensors)} tensors, {len(meta)} keys"
        if fmt == "kmix":
            line += (f"; {stats['q_tensors']} block-format tensors ({stats['blocks']} blocks), max |deq - w| / "
                     "max |w|: " + ", ".join(f"{n} {tn} {r:.2e}" for n, tn, r in stats["k_errors"]))
        if fmt in QTYPE:
            line += (f"; {stats['q_tensors']} {fmt} tensors ({stats['blocks']} blocks) dequantize exactly to "
                     f"make_quant_goldens.py's values")
            if "quantized_json_blocks" in stats:
                line += f", checksums and {stats['quantized_json_blocks']} block records match golden/{fmt}/quantized.json"
            else:
                line += f" (no golden/{fmt}; checksums {stats['checksums']})"
            line += (f"; gguf-py's port of ggml's reference quantizer would write {stats['ref_quant_diff_blocks']} "
                     f"of these blocks differently")
        log("  " + line)
        for ln in listing:
            log(ln)
        report.append(line)
        if fmt == "kmix":
            report += kmix_golden(name, mdir, plan_tensors)
    return report


def main():
    ap = argparse.ArgumentParser(description="Write the GGUF copies of the fixture models.")
    ap.add_argument("--models", default=str(mf.REPO_ROOT / "tests" / "fixtures" / "models"))
    ap.add_argument("--only", action="append", choices=list(JOBS), help="just this model (repeatable)")
    ap.add_argument("--int8", action="store_true",
                    help="only gqa/golden/kmix_int8/ (--int8-activations) from the existing kmix.gguf, "
                         "which is not rewritten (see the docstring)")
    args = ap.parse_args()
    gv = importlib.metadata.version("gguf")
    if gv != PINNED_GGUF:
        log(f"WARNING: pinned gguf {PINNED_GGUF}, running {gv}")
    torch.set_num_threads(1)
    report = []
    if args.int8:
        check(not args.only or set(args.only) == {"gqa"}, "--int8 writes gqa's golden only (--only gqa or nothing)")
        log("[gqa --int8]")
        report += make_kmix_int8(Path(args.models))
    else:
        for name in JOBS:
            if args.only and name not in args.only:
                continue
            log(f"[{name}]")
            report += make_model(name, Path(args.models))
    log("[summary]")
    for line in report:
        log("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
