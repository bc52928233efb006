#!/usr/bin/env python3
# make_quant_goldens.py: builds the transformers goldens for `--quantization q8_0` and `q4_0`
# under tests/fixtures/models/<model>/golden/<format>/ for the gqa, mha-window, longrope and moe
# fixtures. It does not build checkpoints (make_fixtures.py does) and is not part of the build or CI.
"""Q8_0 / Q4_0 goldens: the fixture checkpoint with its quantizable weights replaced by their
dequantized values, run in fp32 (eager) by transformers.

For each model the checkpoint is loaded in fp32 exactly like make_fixtures.py loads it; the
weights phiserve quantizes are cut per row into blocks of 32 and quantized, then replaced in place
by their dequantized values:
  q8_0: d = fp16(amax / 127), q = round-half-away-from-zero(x / d) clamped to [-127, 127],
        value d * q;
  q4_0: m = the x with the largest |x| (the first one on ties, sign kept), d = fp16(m / -8),
        q = round-half-away-from-zero(x / d) + 8 clamped to [0, 15] (all 8 when d == 0),
        value (q - 8) * d; stored as fp16 d then 16 bytes, byte j = q[j] | q[j + 16] << 4;
(fp32 divisions, fp16 round-to-nearest-even, rounding computed exactly in float64). Then
the same cases as golden/golden.json (same prompt ids, rows, generation lengths) are run with
make_fixtures.py's own functions: prompt logits, HF greedy generation with raw step logits,
the LongRoPE cache-reset analysis (recompute_step), the MoE routing check, the window check and
the independent forward. Quantized tensors:
  phi3   (gqa, mha-window, longrope): per layer self_attn.qkv_proj, self_attn.o_proj,
         mlp.gate_up_proj, mlp.down_proj (weights);
  phimoe (moe): per layer self_attn.q_proj, k_proj, v_proj, o_proj (weights only: not the
         biases, not the router), then every expert's block_sparse_moe.experts.<e>.w1, w3 and
         w2 (all of a layer's experts or none: phiserve's moe op takes one dtype for them, so
         they stay as they are when hidden_size or intermediate_size is not a multiple of 32);
  both:  lm_head.weight unless tie_word_embeddings. A weight whose in_features is not a
         multiple of 32 stays as it is (printed).

Writes into golden/<format>/: golden.json (same schema as the fp32 one, "quantization": the
format, no bf16 keys), <case>.f32 (prompt rows) and <case>.steps.f32 (step logits), and
quantized.json: per quantized tensor its shape, sum over blocks of float64(d) * sum(q - z) (z the
zero point: 0 for q8_0, 8 for q4_0; every term is a multiple of 2^-24 and the total stays far
below 2^29, so the float64 sum is exact in any order) and sum |q - z| (integer), plus the first
two blocks of layer 0's first tensor verbatim (d as fp16 bits, the 32 stored q, the 32 source
values; for q4_0 also the 18 stored bytes as hex) and the first blocks that hit a rounding tie and
the clamp (for q4_0 also the first block whose largest |x| occurs with both signs).

--int8: the goldens of phiserve's int8 activations (--int8-activations) instead, written into
golden/<format>_int8/ (q8_0_int8, q4_0_int8) with the same files, schema and cases; the plain
golden/<format>/ folders are left alone (and read: they are the comparison). The weights are
quantized exactly as above, and the dense linear layers whose weights were quantized, except the
MoE experts (block_sparse_moe.experts.*, which stay on the plain path: dequantized weights, fp32
activations), i.e. phi3 qkv_proj, o_proj, gate_up_proj, down_proj and phimoe q_proj, k_proj,
v_proj, o_proj, plus lm_head unless tied, compute their output as kernels/ops.h's int8 dot (the
R16 formats paragraph above struct kern_matmul_params) instead of x @ W^T: for every row of the
layer input x (fp32) and every block of 32 consecutive values v_t along the input dimension, all
in fp32: a = max|v_t|, d = a / 127; d < FLT_MIN: d = 0 and every q_t = 0, else id = 1 / d and
q_t = round-half-to-even(v_t * id); a row holding a non-finite value gives an all-NaN output row.
With the weight block's signed values w_t (q8_0: q, q4_0: q - 8) and scale dw (fp16 value),
s_b = sum_t w_t q_t (exact integer) and y = fp32(sum over blocks b, in order, in float64, of
float64(fp32(dw * d)) * s_b) (as kernels/ref/matmul.c), then + bias in fp32. golden.json gains
"activations": "int8", "activation_algorithm", "int8_activation_layers" (the module names) and
per case "greedy_plain_quantized_same"; quantized.json is the plain format's. Every emulated op
is checked against numpy fp32 (division, reciprocal, products, rint) and each layer's output
against a literal numpy loop of the contract. The script also prints (a) the distance of each
int8 golden from the plain golden of its format (prompt and step logits relative to the row's
largest |logit|, steps compared up to the first greedy divergence; greedy differences), after
checking that the same harness with the plain layers reproduces the plain golden bit for bit;
(b) the rounding-flip risk: over every activation rounded in the golden runs, how many v * id
lie within 1e-4 of a half-integer (and exactly on one), and what flipping such a q by 1 would
change that layer's output row by (relative to the row's largest |y|); and the movement of the
final logits when every int8 layer's input is multiplied by (1 +- 2^-23) (random signs, three
fixed seeds: one fp32 ulp of upstream noise), for the int8 and, as a baseline, the plain path.

Pinned environment as make_fixtures.py (python 3.11, torch 2.5.1 CPU, transformers 4.46.3).
Usage (from the repository root; needs no network; deterministic, rerunnable):
  python scripts/make_quant_goldens.py [--only gqa] [--format q4_0] [--int8] [--models tests/fixtures/models]
"""

import argparse
import copy
import json
import math
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_fixtures as mf  # noqa: E402  (sets the offline environment before torch loads)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

MODEL_NAMES = ["gqa", "mha-window", "longrope", "moe"]
QK = 32  # block length of both formats
QMAX = 127  # Q8_0: |q| <= 127
Q4_ZERO = 8  # Q4_0: stored q in [0, 15], value (q - 8) * d
Q4_MAX = 15
# The C golden test's logit tolerance (tests/golden/test_golden.c LOGIT_RTOL): a greedy margin
# under WARN_MARGIN_RTOL of the logit scale could flip within numerical noise.
LOGIT_RTOL = 1e-4
WARN_MARGIN_RTOL = 1e-3

LAYER_WEIGHTS = {
    "phi3": ["self_attn.qkv_proj.weight", "self_attn.o_proj.weight", "mlp.gate_up_proj.weight",
             "mlp.down_proj.weight"],
    "phimoe": ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
               "self_attn.o_proj.weight"],
}

log = mf.log


# ----------------------------------------------------------------------------------------------
# Q8_0


def round_half_away(v):
    """sign(v) * floor(|v| + 0.5) in float64 (exact for fp32 v: |v| + 0.5 needs at most 25 + 1
    significant bits). torch.round would round halves to even."""
    v = v.double()
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


def is_tie(v):
    """Elementwise: v (fp32) sits exactly halfway between two integers."""
    va = v.double().abs()
    return (va - torch.floor(va)) == 0.5


def scale_and_quotients(x, num, div):
    """Blocks x [n, k/32, 32]: d16 = fp16(num / div) (round to nearest even), d = its fp32
    value, zero = (d == 0), v = x / d (fp32; 1 where d is 0)."""
    d32 = num / torch.tensor(div, dtype=torch.float32)
    d16 = d32.to(torch.float16)  # round to nearest even
    if not bool(torch.isfinite(d16).all()):
        raise ValueError("block scale overflows fp16")
    d = d16.to(torch.float32)
    zero = d == 0
    v = x / torch.where(zero, torch.ones_like(d), d)[..., None]
    # torch must divide like IEEE fp32 (no multiply-by-reciprocal shortcut): check against numpy
    assert np.array_equal(d32.numpy(), num.numpy() / np.float32(div))
    assert np.array_equal(v.numpy(), x.numpy() / np.where(zero.numpy(), np.float32(1), d.numpy())[..., None])
    return d16, d, zero, v


def quantize_q8_0(w):
    """w: fp32 [n, k], k % 32 == 0. Returns (d fp32 [n, k/32], d as fp16 [n, k/32],
    q int8 [n, k/32, 32], dequantized fp32 [n, k], number of rounding ties, blocks clamped,
    per block masks [n, k/32] of (holds a tie, is clamped, largest |x| with both signs))."""
    assert w.dtype == torch.float32 and w.dim() == 2 and w.shape[1] % QK == 0, (w.dtype, w.shape)
    if not bool(torch.isfinite(w).all()):
        raise ValueError("non-finite weight")
    n, k = w.shape
    x = w.reshape(n, k // QK, QK)
    amax = x.abs().amax(dim=-1)
    d16, d, zero, v = scale_and_quotients(x, amax, float(QMAX))
    r = round_half_away(v)
    tie = is_tie(v) & ~zero[..., None]
    clamp = ((r.abs() > QMAX) & ~zero[..., None]).any(dim=-1)
    q = torch.where(zero[..., None], torch.zeros_like(r), r.clamp(-QMAX, QMAX)).to(torch.int8)
    deq = (d[..., None] * q.float()).reshape(n, k)
    # d has an 11-bit significand and |q| <= 127, so d * q is exact in fp32
    assert torch.equal(deq.double(), (d.double()[..., None] * q.double()).reshape(n, k))
    return d, d16, q, deq, int(tie.sum()), int(clamp.sum()), tie.any(dim=-1), clamp, None


def quantize_q4_0(w):
    """w: fp32 [n, k], k % 32 == 0. Returns as quantize_q8_0, with q uint8 [n, k/32, 32] the
    stored values 0..15 (value (q - 8) * d) and the third mask filled."""
    assert w.dtype == torch.float32 and w.dim() == 2 and w.shape[1] % QK == 0, (w.dtype, w.shape)
    if not bool(torch.isfinite(w).all()):
        raise ValueError("non-finite weight")
    n, k = w.shape
    x = w.reshape(n, k // QK, QK)
    ax = x.abs()
    # torch.argmax returns the first index of the maximum (== the strict '>' scan from i = 0)
    idx = ax.argmax(dim=-1, keepdim=True)
    assert np.array_equal(idx[..., 0].numpy(), np.argmax(ax.numpy(), axis=-1))
    m = torch.gather(x, -1, idx)[..., 0]
    d16, d, zero, v = scale_and_quotients(x, m, -8.0)
    r = round_half_away(v) + Q4_ZERO
    tie = is_tie(v) & ~zero[..., None]
    clamp = (((r < 0) | (r > Q4_MAX)) & ~zero[..., None]).any(dim=-1)
    q = torch.where(zero[..., None], torch.full_like(r, Q4_ZERO), r.clamp(0, Q4_MAX)).to(torch.uint8)
    deq = (d[..., None] * (q.float() - Q4_ZERO)).reshape(n, k)
    # d has an 11-bit significand and |q - 8| <= 8, so (q - 8) * d is exact in fp32
    assert torch.equal(deq.double(), (d.double()[..., None] * (q.double() - Q4_ZERO)).reshape(n, k))
    amax = ax.amax(dim=-1, keepdim=True)
    sign_tie = ((x == amax).any(dim=-1) & (x == -amax).any(dim=-1)) & (amax[..., 0] > 0)
    return d, d16, q, deq, int(tie.sum()), int(clamp.sum()), tie.any(dim=-1), clamp, sign_tie


def pack_q4_0(d16, q):
    """The 18 stored bytes of one block: fp16 d little-endian, then byte j = q[j] | q[j+16] << 4."""
    qs = q.tolist()
    assert len(qs) == QK and all(0 <= t <= Q4_MAX for t in qs)
    return fp16_bits(d16).to_bytes(2, "little") + bytes(qs[j] | (qs[j + 16] << 4) for j in range(16))


FORMATS = {
    "q8_0": {
        "quantize": quantize_q8_0, "zero": 0, "doc": {},
        "algorithm": "per row, blocks of 32: d = fp16_rne(amax / 127) (fp32 division); "
                     "q = clamp(round_half_away(x / d), -127, 127) (fp32 division), q = 0 if "
                     "d == 0; dequantized = d * q",
        "checksums": "sum_d_times_q = sum over blocks of float64(d) * sum(q) (exact in float64 "
                     "in any summation order); sum_abs_q = sum of |q| over the tensor",
    },
    "q4_0": {
        "quantize": quantize_q4_0, "zero": Q4_ZERO, "doc": {"block_bytes": 2 + QK // 2},
        "algorithm": "per row, blocks of 32: m = the x with the largest |x| (first index on ties, "
                     "sign kept); d = fp16_rne(m / -8) (fp32 division); q = clamp(round_half_away("
                     "x / d) + 8, 0, 15) (fp32 division), q = 8 if d == 0; dequantized = (q - 8) * d; "
                     "stored as fp16 d (little-endian) then 16 bytes, byte j = q[j] | q[j + 16] << 4",
        "checksums": "sum_d_times_q = sum over blocks of float64(d) * sum(q - 8) (exact in float64 "
                     "in any summation order); sum_abs_q = sum of |q - 8| over the tensor; q in "
                     "the block records is the stored value 0..15",
    },
}


def fp16_bits(h):
    return int(h.view(torch.int16).item()) & 0xFFFF


def block_record(fmt, name, d16, q, x, row, blk):
    rec = {"tensor": name, "row": row, "block": blk, "d_fp16_bits": fp16_bits(d16[row, blk]),
           "d": float(d16[row, blk].float()), "q": q[row, blk].tolist(),
           "x": [float(t) for t in x[row, blk * QK:(blk + 1) * QK].tolist()]}
    if fmt == "q4_0":
        rec["bytes_hex"] = pack_q4_0(d16[row, blk], q[row, blk]).hex()
    return rec


def first_block(mask):
    """(row, block) of the first True in a [n, k/32] mask, row-major."""
    return torch.nonzero(mask)[0].tolist()


def quant_targets(model):
    """Names of the weights to quantize, in layer order (phimoe: attention, then the experts)
    then lm_head."""
    cfg = model.config
    arch = cfg.model_type
    names = []
    for i in range(cfg.num_hidden_layers):
        names += [f"model.layers.{i}.{s}" for s in LAYER_WEIGHTS[arch]]
        if arch != "phimoe":
            continue
        if cfg.hidden_size % QK or cfg.intermediate_size % QK:
            log(f"  NOT quantized (hidden {cfg.hidden_size} or inter {cfg.intermediate_size} % {QK}"
                f" != 0): layer {i}'s experts")
            continue
        names += [f"model.layers.{i}.block_sparse_moe.experts.{e}.{w}.weight"
                  for e in range(cfg.num_local_experts) for w in ("w1", "w3", "w2")]
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    else:
        assert model.lm_head.weight is not model.model.embed_tokens.weight
        names.append("lm_head.weight")
    return names


def quantize_model(model, fmt):
    """Replaces the target weights of model in place by their fmt dequantized values. Returns
    (quantized.json document, worst max|deq - w| / max|w| over the tensors, per quantized
    tensor name its (d fp32 [n, k/32], signed values q - z int64 [n, k/32, 32]))."""
    fdef = FORMATS[fmt]
    params = dict(model.named_parameters())
    tensors, skipped = [], []
    blocks = {}
    ties = clamped = 0
    tie_block = clamp_block = first_blocks = sign_tie_block = None
    worst_rel = 0.0
    for name in quant_targets(model):
        p = params[name]
        w = p.detach().clone()
        if w.shape[1] % QK:
            log(f"  NOT quantized (in_features {w.shape[1]} % {QK} != 0): {name}")
            skipped.append(name)
            continue
        d, d16, q, deq, n_ties, n_clamped, tie_mask, clamp_mask, sign_mask = fdef["quantize"](w)
        qv = q.long() - fdef["zero"]  # the signed quantized values
        blocks[name] = (d.clone(), qv.clone())
        # Exact checksum: fp16 d is a multiple of 2^-24, so d * sum(q) * 2^24 is an integer.
        d_units = (d.double() * 2.0 ** 24).tolist()
        qsum = qv.sum(dim=-1).tolist()
        total = 0
        bound = 0
        for du_row, qs_row in zip(d_units, qsum):
            for du, qs in zip(du_row, qs_row):
                assert du == math.floor(du)
                total += int(du) * qs
                bound += abs(int(du) * qs)
        # Every partial sum is a multiple of 2^-24 below 2^29 in magnitude: exact in float64.
        assert bound < 2 ** 53, name
        sum_dq = total / 2.0 ** 24
        assert sum_dq * 2.0 ** 24 == total
        rel = float((deq - w).abs().max()) / float(w.abs().max())
        worst_rel = max(worst_rel, rel)
        tensors.append({"name": name, "shape": list(w.shape), "blocks": int(q.shape[0] * q.shape[1]),
                        "sum_d_times_q": sum_dq, "sum_abs_q": int(qv.abs().sum()),
                        "rounding_ties": n_ties, "blocks_clamped": n_clamped,
                        "max_rel_err": float(f"{rel:.6e}")})
        if first_blocks is None:
            first_blocks = [block_record(fmt, name, d16, q, w, 0, b) for b in range(2)]
        if tie_block is None and n_ties:
            tie_block = block_record(fmt, name, d16, q, w, *first_block(tie_mask))
        if clamp_block is None and n_clamped:
            clamp_block = block_record(fmt, name, d16, q, w, *first_block(clamp_mask))
        if sign_tie_block is None and sign_mask is not None and bool(sign_mask.any()):
            sign_tie_block = block_record(fmt, name, d16, q, w, *first_block(sign_mask))
        ties += n_ties
        clamped += n_clamped
        with torch.no_grad():
            p.copy_(deq)
    doc = {"format": fmt, "block_size": QK, **fdef["doc"],
           "algorithm": fdef["algorithm"], "checksums": fdef["checksums"],
           "tie_word_embeddings": bool(model.config.tie_word_embeddings),
           "skipped": skipped, "rounding_ties": ties, "blocks_clamped": clamped,
           "first_blocks": first_blocks, "first_tie_block": tie_block,
           "first_clamped_block": clamp_block}
    if fmt == "q4_0":
        # a block whose largest |x| occurs as +a and -a: the first one decides d's sign
        doc["first_sign_tie_block"] = sign_tie_block
    doc["tensors"] = tensors
    return doc, worst_rel, blocks


# ----------------------------------------------------------------------------------------------
# int8 activations (--int8): kernels/ops.h's int8 dot of the R16 formats, emulated exactly

FLT_MIN = float(np.finfo(np.float32).tiny)  # 1.1754944e-38, the smallest normal fp32
NEAR_TIE = 1e-4  # |v * id - (nearest half-integer)| below this counts as a near tie
ULP_NOISE = 2.0 ** -23  # x * (1 +- 2^-23): one fp32 ulp of upstream noise
NOISE_SEEDS = (20240601, 20240602, 20240603)  # three independent noise draws
INT8_ALGORITHM = ("int8 dot of kernels/ops.h (R16 formats): per row of the layer input x and block "
                  "of 32 values v, in fp32: a = max|v|, d = a / 127; d < FLT_MIN: d = 0, q = 0; else "
                  "id = 1 / d, q = round_half_even(v * id); a row with a non-finite value gives an "
                  "all-NaN output row; y = fp32(sum over blocks in order, in float64, of "
                  "float64(fp32(dw * d)) * sum(w * q)) (w the weight block's signed values, dw its "
                  "scale) + bias in fp32")

# What every Int8ActLinear does on the next calls: "int8" (the contract) or "plain" (F.linear on
# the dequantized weight, i.e. the plain quantized golden); noise: a torch.Generator when the layer
# inputs get ULP_NOISE of random sign first; stats: a dict collecting the rounding statistics.
ACT = {"mode": "int8", "noise": None, "stats": None}


def new_stats():
    return {"values": 0, "zero_blocks": 0, "exact_ties": 0, "near": 0, "closest": float("inf"),
            "rel": [], "calls": 0}


def quantize_activations(x):
    """x fp32 [M, k] (k % 32 == 0). Returns (d fp32 [M, k/32], q float64 [M, k/32, 32] holding the
    integers, p = v * id fp32 [M, k/32, 32] (0 in zero blocks), finite rows [M])."""
    M, k = x.shape
    v = x.reshape(M, k // QK, QK)
    finite = torch.isfinite(x).all(dim=-1)
    a = v.abs().amax(dim=-1)
    d = a / torch.tensor(float(QMAX), dtype=torch.float32)
    zero = ~(d >= FLT_MIN)  # also NaN (a non-finite row: its output is NaN anyway)
    d = torch.where(zero, torch.zeros_like(d), d)
    inv = torch.tensor(1.0, dtype=torch.float32) / torch.where(zero, torch.ones_like(d), d)
    p = torch.where(zero[..., None], torch.zeros_like(v), v * inv[..., None])
    q = torch.round(p)  # half to even
    # torch must compute these as single IEEE fp32 operations: check against numpy
    fin = finite.numpy()
    an, vn = a.numpy()[fin], v.numpy()[fin]
    dn = an / np.float32(QMAX)
    zn = ~(dn >= np.float32(FLT_MIN))
    dn = np.where(zn, np.float32(0), dn)
    idn = np.float32(1) / np.where(zn, np.float32(1), dn)
    pn = np.where(zn[..., None], np.float32(0), vn * idn[..., None])
    assert dn.dtype == idn.dtype == pn.dtype == np.float32
    assert np.array_equal(d.numpy()[fin], dn) and np.array_equal(inv.numpy()[fin], idn)
    assert np.array_equal(p.numpy()[fin], pn) and np.array_equal(q.numpy()[fin], np.rint(pn))
    if bool(finite.any()):
        assert float(q[finite].abs().max()) <= QMAX
    return d, q.double(), p, finite


def int8_matmul(x, wq, dw):
    """The int8 dot without the bias: x [M, k] (widened / rounded to fp32 first), wq float64
    [n, k/32, 32] (the weight's signed block values), dw fp32 [n, k/32]. Returns (y float64
    [M, n] (the fp64 accumulator, NaN rows for non-finite inputs), d, q, p, c = fp32(dw * d)
    [M, n, k/32])."""
    x = x.to(torch.float32)
    d, q, p, finite = quantize_activations(x)
    # |w q| <= 127 * 127 and 32 of them: every partial sum is an integer < 2^53, exact in float64
    s = torch.einsum("mbt,nbt->mnb", q, wq)
    c = d[:, None, :] * dw[None, :, :]  # one fp32 rounding each
    assert np.array_equal(c.numpy(), d.numpy()[:, None, :] * dw.numpy()[None, :, :])
    acc = torch.zeros(c.shape[:2], dtype=torch.float64)
    for b in range(c.shape[2]):  # in block order, as kernels/ref/matmul.c
        acc = acc + c[:, :, b].double() * s[:, :, b]
    acc[~finite] = float("nan")
    return acc, d, q, p, c


def record_stats(st, y, d, p, flip):
    """Rounding statistics of one int8 call: y the layer output [M, n] (fp32, with the bias);
    flip(mi, bi, ti) gives, for each near-tie value (row mi, block bi, lane ti), how a change of
    its q by 1 moves every column's term [K, n]."""
    live = (d > 0)[..., None].expand_as(p)
    st["calls"] += 1
    st["values"] += int(live.sum())
    st["zero_blocks"] += int((d == 0).sum())
    pa = p.double().abs()
    dist = (pa - pa.floor() - 0.5).abs()
    st["exact_ties"] += int(((dist == 0) & live).sum())
    nonzero = dist[live & (dist > 0)]
    if nonzero.numel():
        st["closest"] = min(st["closest"], float(nonzero.min()))
    near = (dist < NEAR_TIE) & live
    st["near"] += int(near.sum())
    if bool(near.any()):
        mi, bi, ti = near.nonzero(as_tuple=True)
        delta = flip(mi, bi, ti)
        scale = y[mi].double().abs().amax(dim=-1)
        st["rel"].append(delta.abs().amax(dim=-1) / scale)


def with_noise(x):
    """x, or x with one ulp of random-sign noise while ACT["noise"] (a generator) is set."""
    if ACT["noise"] is None:
        return x
    sign = torch.randint(0, 2, x.shape, generator=ACT["noise"]).to(x.dtype) * 2 - 1
    return x * (1 + ULP_NOISE * sign)


class Int8ActLinear(torch.nn.Linear):
    """nn.Linear (same parameters and state dict) whose x @ W^T is the int8 dot; install_int8
    sets int8_wq and int8_dw on each instance."""

    def forward(self, x):
        x = with_noise(x)
        if ACT["mode"] == "plain":
            return torch.nn.functional.linear(x, self.weight, self.bias)
        lead, k = x.shape[:-1], x.shape[-1]
        acc, d, q, p, c = int8_matmul(x.reshape(-1, k), self.int8_wq, self.int8_dw)
        y = acc.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        if self.bias is not None:
            y = y + self.bias
        if ACT["stats"] is not None:
            record_stats(ACT["stats"], y, d, p,
                         lambda mi, bi, ti: c[mi, :, bi].double() * self.int8_wq[:, bi, ti].T)
        return y.reshape(*lead, y.shape[-1])


def int8_layer_names(model, blocks):
    """The modules whose inputs are rounded to int8: the quantized weights' modules except the
    MoE experts (plain path in phiserve)."""
    names = []
    for name in blocks:
        assert name.endswith(".weight"), name
        if ".block_sparse_moe.experts." in name:
            continue
        names.append(name[:-len(".weight")])
    return names


def install_int8(model, blocks):
    """Turns the int8 layers of model into Int8ActLinear in place. Returns their names."""
    names = int8_layer_names(model, blocks)
    for mname in names:
        mod = model.get_submodule(mname)
        assert type(mod) is torch.nn.Linear, (mname, type(mod))
        d, qv = blocks[mname + ".weight"]
        mod.__class__ = Int8ActLinear
        mod.int8_wq = qv.double()
        mod.int8_dw = d.float()
        assert mod.int8_wq.shape[:2] == mod.int8_dw.shape and mod.int8_wq.shape[0] == mod.out_features
    return names


def literal_x8_block(v):
    """One block of 32 finite fp32 values rounded as ops.h says, step by step in numpy: (d
    np.float32, q int64 [32])."""
    a = np.float32(0)
    for t in range(QK):
        a = max(a, np.float32(abs(v[t])))
    d = np.float32(a / np.float32(QMAX))
    if d < np.float32(FLT_MIN):
        return np.float32(0), np.zeros(QK, dtype=np.int64)
    inv = np.float32(np.float32(1) / d)
    return d, np.array([int(np.rint(np.float32(v[t] * inv))) for t in range(QK)], dtype=np.int64)


def literal_linear(x, n, bias, block_term):
    """The frame of ops.h's int8 dot written out as a plain loop in numpy: x np.float32 [M, k];
    per finite row and block b of 32, x rounded by literal_x8_block and block_term(b, d, q) the
    block's float64 terms [n] (each format's products), added in block order in float64; a row
    with a non-finite value is NaN; the sum rounded to fp32, then + bias (np.float32 or None)."""
    M, k = x.shape
    y = np.empty((M, n), dtype=np.float32)
    for i in range(M):
        row = x[i]
        if not np.isfinite(row).all():
            y[i] = np.nan
            continue
        acc = np.zeros(n, dtype=np.float64)
        for b in range(k // QK):
            d, q = literal_x8_block(row[b * QK:(b + 1) * QK])
            acc = acc + block_term(b, d, q)
        y[i] = acc.astype(np.float32)
    return y if bias is None else y + bias


def literal_int8_linear(x, wq, dw, bias):
    """ops.h's Q8_0_R16 / Q4_0_R16 contract (int64 sums, fp32 scalars): x np.float32 [M, k], wq
    int64 [n, k/32, 32], dw np.float32 [n, k/32], bias np.float32 or None."""

    def term(b, d, q):
        s = wq[:, b, :] @ q  # int64, exact
        f = (dw[:, b] * d).astype(np.float32)
        assert f.dtype == np.float32
        return f.astype(np.float64) * s.astype(np.float64)
    assert x.shape[1] == QK * wq.shape[1]
    return literal_linear(x, wq.shape[0], bias, term)


def layer_calls(model, names, results):
    """The named layers' calls during the longest prompt's forward: (modules by name,
    [(name, input, output)] in call order). Every named layer must have been called."""
    mods = {n: model.get_submodule(n) for n in names}
    seen = []
    hooks = [m.register_forward_hook(lambda mod, args, out, n=n: seen.append((n, args[0].detach().clone(),
                                                                             out.detach().clone())))
             for n, m in mods.items()]
    longest = max(results, key=lambda r: r["ids"].shape[0])
    try:
        mf.forward_logits(model, longest["ids"])
    finally:
        for h in hooks:
            h.remove()
    assert sorted({n for n, _, _ in seen}) == sorted(names), "not every int8 layer was called"
    return mods, seen


def literal_check(model, names, results):
    """Every int8 layer's output over the longest prompt's forward against literal_int8_linear,
    bit for bit. Returns the number of (layer call, row) pairs checked."""
    mods, seen = layer_calls(model, names, results)
    rows = 0
    for n, x, out in seen:
        m = mods[n]
        k = x.shape[-1]
        x2 = x.reshape(-1, k).float().numpy()
        want = literal_int8_linear(x2, m.int8_wq.long().numpy(), m.int8_dw.numpy(),
                                   None if m.bias is None else m.bias.detach().numpy())
        got = out.reshape(-1, out.shape[-1]).numpy()
        assert np.array_equal(want, got), f"{n}: emulation differs from the literal loop"
        rows += x2.shape[0]
    return rows


def row_distances(a_rows, b_rows):
    """Per row max|a - b| / max|b| (b the reference rows)."""
    a, b = np.asarray(a_rows, dtype=np.float64), np.asarray(b_rows, dtype=np.float64)
    return np.abs(a - b).max(axis=1) / np.abs(b).max(axis=1)


def results_distance(results, ref):
    """results vs ref ([(prompt rows [R, V], step logits [S, V] or None, greedy)] per case): the
    largest relative prompt-row distance, the largest relative step distance over the steps up to
    the first greedy divergence (inclusive: that step's inputs still agree), and the names of the
    cases whose greedy differs, and every compared row's distance (prompt rows and steps)."""
    worst_p = worst_s = 0.0
    differ, every = [], []
    for r, (rows_ref, steps_ref, greedy_ref) in zip(results, ref):
        rows = r["case_rows"]
        dist = row_distances(r["logits32"][rows].numpy(), rows_ref)
        worst_p = max(worst_p, float(dist.max()))
        every.append(dist)
        if steps_ref is not None:
            first = next((i for i, (a, b) in enumerate(zip(r["greedy32"], greedy_ref)) if a != b), None)
            n = len(greedy_ref) if first is None else first + 1
            dist = row_distances(r["steps32"][:n].numpy(), steps_ref[:n])
            worst_s = max(worst_s, float(dist.max()))
            every.append(dist)
        if r["greedy32"] != greedy_ref:
            differ.append(r["case"]["name"])
    return worst_p, worst_s, differ, np.concatenate(every)


def spread(dist):
    """Percentiles of per-row distances and the share of rows over the C test's tolerance."""
    q = np.percentile(dist, [50, 90, 99])
    return (f"rows: median {q[0]:.1e}, p90 {q[1]:.1e}, p99 {q[2]:.1e}; {float((dist > LOGIT_RTOL).mean()):.0%} "
            f"> {LOGIT_RTOL:g}, {float((dist > 10 * LOGIT_RTOL).mean()):.0%} > {10 * LOGIT_RTOL:g} of {dist.size}")


def stored_reference(gdir, doc):
    """The stored rows, step logits and greedy of a golden folder, per case."""
    V = doc["vocab_size"]
    out = []
    for g in doc["cases"]:
        rows = np.fromfile(gdir / g["logits_file"], dtype="<f4").reshape(len(g["logit_rows"]), V)
        steps = None
        if g["step_logits_file"]:
            steps = np.fromfile(gdir / g["step_logits_file"], dtype="<f4").reshape(-1, V)
        out.append((rows, steps, g["greedy"]))
    return out


def in_memory_reference(results):
    return [(r["logits32"][r["case_rows"]].numpy(), r["steps32"].numpy(), r["greedy32"]) for r in results]


def run_mode(model, spec, fp32_doc, mode, noise_seed=None, stats=None):
    """run_cases with the int8 layers in mode ("int8" / "plain"), optionally with ULP_NOISE on
    their inputs (seeded) and collecting rounding statistics."""
    ACT.update(mode=mode, noise=None if noise_seed is None else torch.Generator().manual_seed(noise_seed),
               stats=stats)
    try:
        results = run_cases(model, spec, fp32_doc)
    finally:
        ACT.update(mode="int8", noise=None, stats=None)
    for r, g in zip(results, fp32_doc["cases"]):
        r["case_rows"] = g["logit_rows"]
    return results



# ----------------------------------------------------------------------------------------------
# goldens


def spec_for(name):
    return next(s for s in mf.MODELS if s["name"] == name)


def run_cases(model, spec, fp32_doc):
    """The fp32 golden's cases on the quantized model, as make_fixtures.evaluate does (fp32 only)."""
    assert [c["name"] for c in spec["cases"]] == [c["name"] for c in fp32_doc["cases"]]
    results = []
    for idx, (c, g) in enumerate(zip(spec["cases"], fp32_doc["cases"])):
        ids = torch.tensor(g["input_ids"], dtype=torch.int64)
        assert c["max_new_tokens"] == g["max_new_tokens"] and c["prompt_len"] == len(g["input_ids"])
        assert torch.equal(ids, mf.prompt_ids(spec, fp32_doc["seed"], c, idx)), c["name"]
        r = {"case": c, "ids": ids, "logits32": mf.forward_logits(model, ids)}
        r["greedy32"], r["margins32"], r["steps32"] = mf.greedy(model, spec, ids, c["max_new_tokens"])
        results.append(r)
    return results


def write_quant_golden(fmt, spec, fp32_doc, gdir, results, lr_info, routing, int8=None):
    """golden.json and logits files with make_fixtures.write_golden's schema minus the bf16 keys;
    int8: None, or (the int8 layers' names, the plain golden's greedy per case)."""
    cases = []
    stop = set(spec["specials"]["stop"])
    for r, g32 in zip(results, fp32_doc["cases"]):
        c = r["case"]
        name = c["name"]
        rows = g32["logit_rows"]
        mf.write_f32(gdir / f"{name}.f32", r["logits32"][rows])
        step_file = g32["step_logits_file"]
        if step_file:
            mf.write_f32(gdir / f"{name}.steps.f32", r["steps32"])
        g = mf.golden_case(r, rows, stop, step_file)
        g["greedy_fp32_unquantized_same"] = r["greedy32"] == g32["greedy"]
        if int8 is not None:
            g["greedy_plain_quantized_same"] = r["greedy32"] == int8[1][len(cases)]
        mf.add_longrope_keys(g, c, lr_info[name] if "long_rope" in c else None)
        cases.append(g)
    doc = {"model": spec["name"]}
    if "arch" in spec:
        doc["arch"] = spec["arch"]
    doc.update({
        "vocab_size": fp32_doc["vocab_size"],
        "dtype": "float32",
        "quantization": fmt,
    })
    if int8 is not None:
        doc.update({"activations": "int8", "activation_algorithm": INT8_ALGORITHM,
                    "int8_activation_layers": int8[0]})
    doc.update({
        "seed": fp32_doc["seed"],
        "generator": "scripts/make_quant_goldens.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "attn_implementation": "eager",
        "stop_token_ids": spec["specials"]["stop"],
        "quantized_tensors_file": "quantized.json",
    })
    if routing is not None:
        doc["min_router_margin"] = round(routing["min_router_margin"], 6)
        doc["router_weights_below_one"] = round(routing["weights_below_one"], 6)
    doc["cases"] = cases
    write_json(gdir / "golden.json", doc)


def write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def compact_json(path, doc):
    """quantized.json: one line per block / tensor record keeps it short and diffable."""
    lines = ["{"]
    items = list(doc.items())
    for i, (k, v) in enumerate(items):
        sep = "," if i + 1 < len(items) else ""
        if isinstance(v, list) and v and isinstance(v[0], dict):
            inner = ",\n".join("  " + json.dumps(e) for e in v)
            lines.append(f" {json.dumps(k)}: [\n{inner}\n ]{sep}")
        else:
            lines.append(f" {json.dumps(k)}: {json.dumps(v)}{sep}")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")


def fp32_distance(results, fp32_doc, gdir32):
    """Largest |quantized - unquantized| prompt logit relative to the row's largest magnitude:
    must exceed the C test's tolerance, or a backend that ignored --quantization would pass."""
    worst = 0.0
    V = fp32_doc["vocab_size"]
    for r, g in zip(results, fp32_doc["cases"]):
        ref = np.fromfile(gdir32 / g["logits_file"], dtype="<f4").reshape(len(g["logit_rows"]), V)
        q = r["logits32"][g["logit_rows"]].numpy()
        scale = np.abs(ref).max(axis=1)
        worst = max(worst, float((np.abs(q - ref).max(axis=1) / scale).max()))
    return worst


def weakest_steps(results, n=3):
    """The n greedy steps with the smallest margin relative to their step row's largest |logit|
    (the C test's tolerance is relative to that row): [(ratio, margin, row scale, case, step)]."""
    steps = []
    for r in results:
        for i, (m, row) in enumerate(zip(r["margins32"], r["steps32"])):
            sc = float(row.abs().max())
            steps.append((m / sc, m, sc, r["case"]["name"], i))
    return sorted(steps)[:n]


def fp64_check(model, spec, results):
    """Noise estimate: the same quantized weights in float64. Returns (largest |fp32 - fp64|
    prompt or step logit relative to its row's largest magnitude, names of the cases whose fp64
    greedy differs). A flip here means the golden's greedy sits within rounding noise."""
    m64 = copy.deepcopy(model).to(torch.float64)
    worst, flipped = 0.0, []
    with torch.no_grad():
        for r in results:
            lg = m64(input_ids=r["ids"][None], use_cache=False).logits[0]
            toks, steps = mf.generate_raw(m64, spec, r["ids"], r["case"]["max_new_tokens"])
            for a, b in ((r["logits32"], lg), (r["steps32"], steps)):
                n = min(a.shape[0], b.shape[0])
                rel = (a[:n].double() - b[:n].double()).abs().amax(-1) / b[:n].double().abs().amax(-1)
                worst = max(worst, float(rel.max()))
            if toks != r["greedy32"]:
                flipped.append(r["case"]["name"])
    return worst, flipped


def make_one(name, models_dir, fmt, int8=False):
    spec = spec_for(name)
    mdir = models_dir / name
    fp32_doc = json.loads((mdir / "golden" / "golden.json").read_text())
    model = mf.load(mdir, torch.float32)
    assert model.config.model_type == spec.get("arch", "phi3")
    qdoc, worst_rel, blocks = quantize_model(model, fmt)
    qdoc = {"model": name, **qdoc}
    extra = {}
    if int8:
        layers = install_int8(model, blocks)
        plain_dir = mdir / "golden" / fmt
        plain_doc = json.loads((plain_dir / "golden.json").read_text())
        plain_ref = stored_reference(plain_dir, plain_doc)
        # the same harness with the plain layers must give the plain golden bit for bit
        base = run_mode(model, spec, fp32_doc, "plain")
        bp, bs, bd, _ = results_distance(base, plain_ref)
        assert bp == 0 and bs == 0 and not bd, f"plain harness differs from {plain_dir}: {bp} {bs} {bd}"
        stats = new_stats()
        results = run_mode(model, spec, fp32_doc, "int8", stats=stats)
        spec_diff = None
        extra["literal_rows"] = literal_check(model, layers, results)
    else:
        results = run_cases(model, spec, fp32_doc)
    mm = mf.min_margin(results, "margins32")
    routing = mf.routing_check(model, spec, results) if spec.get("arch") == "phimoe" else None
    window = mf.window_check(model, spec, results)
    if not int8:  # spec_forward multiplies by the dequantized weights in fp32: the plain path only
        spec_diff = mf.spec_check(model, results)
    lr_info = mf.longrope_report(model, spec, results) if spec["config"].get("rope_scaling") else {}
    gdir = mdir / "golden" / (f"{fmt}_int8" if int8 else fmt)
    shutil.rmtree(gdir, ignore_errors=True)
    gdir.mkdir(parents=True)
    write_quant_golden(fmt, spec, fp32_doc, gdir, results, lr_info, routing,
                       (layers, [g["greedy"] for g in plain_doc["cases"]]) if int8 else None)
    compact_json(gdir / "quantized.json", qdoc)
    if int8:
        same = (gdir / "quantized.json").read_text() == (plain_dir / "quantized.json").read_text()
        assert same, f"quantized.json differs from {plain_dir}'s"
        extra["layers"] = layers
        extra["n_cases"] = len(results)
        extra["vs_plain"] = results_distance(results, plain_ref)
        extra["stats"] = stats
        # one fp32 ulp of noise on every int8 layer input (the engine's upstream arithmetic is
        # not transformers'): how far the int8 goldens move, and as a baseline the plain path
        for mode, ref in (("int8", in_memory_reference(results)), ("plain", plain_ref)):
            runs = [results_distance(run_mode(model, spec, fp32_doc, mode, noise_seed=seed), ref)
                    for seed in NOISE_SEEDS]
            extra[f"noise_{mode}"] = (max(r[0] for r in runs), max(r[1] for r in runs),
                                      sorted({c for r in runs for c in r[2]}),
                                      np.concatenate([r[3] for r in runs]))
    scale = max(float(r["logits32"].abs().max()) for r in results)
    step_scale = max(float(r["steps32"].abs().max()) for r in results)
    noise, flipped = fp64_check(model, spec, results)
    info = {"min_margin": mm, "scale": max(scale, step_scale), "worst_rel": worst_rel,
            "weakest": weakest_steps(results), "fp64_noise": noise, "fp64_flipped": flipped,
            "tensors": len(qdoc["tensors"]), "skipped": qdoc["skipped"], "ties": qdoc["rounding_ties"],
            "clamped": qdoc["blocks_clamped"], "routing": routing, "window": window,
            "spec_diff": spec_diff, "vs_fp32": fp32_distance(results, fp32_doc, mdir / "golden"),
            "greedy_changed": sum(r["greedy32"] != g["greedy"] for r, g in zip(results, fp32_doc["cases"])),
            "recompute": {k: (v["reset_steps"][0] if v["reset_steps"] else None) for k, v in lr_info.items()},
            "recompute32": {g["name"]: g.get("recompute_step") for g in fp32_doc["cases"] if "long_rope" in g},
            **extra}
    return info


def main():
    ap = argparse.ArgumentParser(description="Generate the Q8_0 / Q4_0 goldens of the fixture models.")
    ap.add_argument("--models", default=str(mf.REPO_ROOT / "tests" / "fixtures" / "models"))
    ap.add_argument("--only", action="append", choices=MODEL_NAMES, help="just this model (repeatable)")
    ap.add_argument("--format", action="append", choices=list(FORMATS),
                    help="just this format (repeatable; default: all)")
    ap.add_argument("--int8", action="store_true",
                    help="the int8-activation goldens into golden/<format>_int8/ instead (see the docstring)")
    args = ap.parse_args()
    if transformers.__version__ != mf.PINNED_TRANSFORMERS or not torch.__version__.startswith(mf.PINNED_TORCH):
        log(f"WARNING: pinned transformers {mf.PINNED_TRANSFORMERS} / torch {mf.PINNED_TORCH}, running "
            f"{transformers.__version__} / {torch.__version__}")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    models_dir = Path(args.models)
    summary = {}
    warnings = []
    jobs = [(m, f) for f in FORMATS if not args.format or f in args.format
            for m in MODEL_NAMES if not args.only or m in args.only]
    for mname, fmt in jobs:
        name = f"{mname} {fmt}" + ("+int8" if args.int8 else "")
        log(f"[{name}]")
        s = summary[name] = make_one(mname, models_dir, fmt, args.int8)
        s["format"] = fmt
        for ratio, m, sc, cname, step in s["weakest"]:
            if ratio < WARN_MARGIN_RTOL:
                warnings.append(f"{name}: {cname} greedy step {step}: margin {m:.3e} is only {ratio:.2e} "
                                f"of that row's largest |logit| {sc:.2f} (want >= {WARN_MARGIN_RTOL:g}"
                                + (f"; BELOW the C test's tolerance {LOGIT_RTOL:g})" if ratio < LOGIT_RTOL else ")"))
        if s["fp64_flipped"]:
            warnings.append(f"{name}: greedy differs in float64 for {s['fp64_flipped']}")
        if s["min_margin"] < mf.HARD_MIN_MARGIN:
            warnings.append(f"{name}: min greedy margin {s['min_margin']:.3e} < {mf.HARD_MIN_MARGIN}")
        if s["routing"] is not None and s["routing"]["min_router_margin"] < mf.HARD_MIN_ROUTER_MARGIN:
            warnings.append(f"{name}: min router margin {s['routing']['min_router_margin']:.3e} "
                            f"< {mf.HARD_MIN_ROUTER_MARGIN}")
        if s["vs_fp32"] < 10 * LOGIT_RTOL:
            warnings.append(f"{name}: quantized logits differ from the fp32 goldens by only "
                            f"{s['vs_fp32']:.2e} of the row scale (tolerance {LOGIT_RTOL:g})")
        if args.int8:
            vp, vs, vd, _ = s["vs_plain"]
            if max(vp, vs) < 10 * LOGIT_RTOL and not vd:
                warnings.append(f"{name}: int8 logits differ from the plain {fmt} goldens by only "
                                f"{max(vp, vs):.2e} of the row scale (tolerance {LOGIT_RTOL:g})")
            np_, ns, nd, _ = s["noise_int8"]
            if max(np_, ns) > LOGIT_RTOL or nd:
                warnings.append(f"{name}: one ulp of input noise moves the int8 logits by {max(np_, ns):.2e} "
                                f"of the row scale (> the C test's tolerance {LOGIT_RTOL:g}?)"
                                + (f"; greedy changes for {nd}" if nd else ""))
    log("[summary]")
    for name, s in summary.items():
        log(f"  {name}: {s['tensors']} tensors quantized (skipped: {s['skipped'] or 'none'}), "
            f"max |deq - w| / max|w| {s['worst_rel']:.3e}, ties {s['ties']}, clamped blocks {s['clamped']}")
        log(f"    min greedy margin {s['min_margin']:.6f} (logit scale {s['scale']:.2f}, ratio "
            f"{s['min_margin'] / s['scale']:.2e}); prompt logits vs fp32 goldens up to {s['vs_fp32']:.2e} "
            f"of the row scale; {s['greedy_changed']} case(s) with a different greedy sequence; "
            + (f"independent forward max |diff| {s['spec_diff']:.1e}" if s["spec_diff"] is not None
               else "independent forward: plain path only")
            + (f"; window moves rows >= W by up to {s['window']:.3f}" if s["window"] else ""))
        log(f"    weakest greedy steps (margin / row scale): "
            + ", ".join(f"{c}[{i}] {m:.4f}/{sc:.1f} = {r:.2e}" for r, m, sc, c, i in s["weakest"]))
        log(f"    float64 cross-check: logits differ by up to {s['fp64_noise']:.1e} of the row scale, "
            f"greedy {'differs for ' + str(s['fp64_flipped']) if s['fp64_flipped'] else 'identical'}")
        if s["routing"] is not None:
            log(f"    min router margin {s['routing']['min_router_margin']:.6f}, routings with a weight "
                f"< 1: {s['routing']['weights_below_one']:.3f}, all experts used: {s['routing']['all_experts_used']}")
        if s["recompute"]:
            log(f"    recompute_step {s['format']} {s['recompute']} (fp32 {s['recompute32']})")
        if "vs_plain" in s:
            vp, vs, vd, vrows = s["vs_plain"]
            st = s["stats"]
            rel = torch.cat(st["rel"]) if st["rel"] else torch.zeros(0, dtype=torch.float64)
            log(f"    int8: {len(s['layers'])} layers; emulation == literal numpy loop on {s['literal_rows']} rows")
            log(f"    (a) vs plain {s['format']} golden: prompt logits up to {vp:.2e}, step logits (to the "
                f"first divergence) up to {vs:.2e} of the row scale; greedy differs for "
                f"{len(vd)}/{s['n_cases']} cases {vd if vd else ''}")
            log(f"        {spread(vrows)}")
            log(f"    (b) {st['values']} activations rounded in {st['calls']} int8 calls ({st['zero_blocks']} "
                f"zero blocks): {st['exact_ties']} exact ties, {st['near']} within {NEAR_TIE:g} of a "
                f"half-integer (closest non-tie {st['closest']:.2e}); a flip of such a q by 1 changes the "
                f"layer output row by up to {float(rel.max()) if rel.numel() else 0:.2e} (median "
                f"{float(rel.median()) if rel.numel() else 0:.2e}) of its largest |y|")
            for key, what in (("noise_int8", "int8"), ("noise_plain", "plain")):
                a, b, d, rows = s[key]
                log(f"    (b) 1-ulp input noise ({len(NOISE_SEEDS)} draws), {what} path: prompt logits move up to {a:.2e}, step logits "
                    f"{b:.2e} of the row scale; greedy changes for {d if d else 'no case'}")
                log(f"        {spread(rows)}")
    for w in warnings:
        log(f"WARNING: {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
