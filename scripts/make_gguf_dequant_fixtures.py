#!/usr/bin/env python3
# make_gguf_dequant_fixtures.py: writes tests/fixtures/gguf_dequant/, random ggml blocks and their
# fp32 widening by gguf-py, for tests/engine/test_gguf_dequant.c. It does not build GGUF files and
# is not part of the build or CI (the committed files are what the test reads).
"""Fixtures for engine/gguf_dequant.c: for each block type phiserve widens at load (Q4_1, Q5_0,
Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), a run of blocks of random bytes whose fp16 scale fields
(d, and m / dmin where the type has one) are then overwritten:
  - most blocks: a random finite fp16 with |x| log-uniform in [1e-4, 1e-1] and a random sign;
  - the first blocks hit the edges, field by field: +0, -0, a negative value, the smallest and the
    largest positive subnormal, a negative subnormal, and 65504 (the largest finite fp16).
The reference output is gguf.quants.dequantize (gguf 0.19.0), which does ggml's reference
dequantize_row_* arithmetic in fp32.

Writes, per type (lower-case name, e.g. q4_k):
  <name>.blocks  the raw block bytes, n_blocks * type_size bytes;
  <name>.f32     the widened values, n_blocks * block_size little-endian fp32.
The number of elements is the .f32 size / 4. 160 blocks of the 32-element types and 32 of the
256-element types keep the directory near 260 KB.

Usage (from the repository root; no network; deterministic, rerunnable):
  /path/to/venv/bin/python scripts/make_gguf_dequant_fixtures.py [--out tests/fixtures/gguf_dequant]
"""
import argparse
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

# type -> (file name, byte offsets of the fp16 scale fields in a block, number of blocks)
TYPES = {
    T.Q4_1: ("q4_1", [0, 2], 160),
    T.Q5_0: ("q5_0", [0], 160),
    T.Q5_1: ("q5_1", [0, 2], 160),
    T.Q2_K: ("q2_k", [80, 82], 32),
    T.Q3_K: ("q3_k", [108], 32),
    T.Q4_K: ("q4_k", [0, 2], 32),
    T.Q5_K: ("q5_k", [0, 2], 32),
    T.Q6_K: ("q6_k", [208], 32),
}

# fp16 bit patterns for the edge blocks.
EDGES = [
    0x0000,  # +0
    0x8000,  # -0
    0xAA66,  # -0.05 (about)
    0x0001,  # smallest positive subnormal, 2^-24
    0x03FF,  # largest subnormal
    0x8200,  # negative subnormal
    0x7BFF,  # 65504
]


def random_scales(rng, n):
    mag = np.exp(rng.uniform(np.log(1e-4), np.log(1e-1), size=n))
    sign = np.where(rng.integers(0, 2, size=n) == 1, -1.0, 1.0)
    h = (mag * sign).astype(np.float16)
    assert np.all(np.isfinite(h)) and np.all(h != 0)
    return h.view(np.uint16)


def make_type(rng, qtype, offsets, n_blocks):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for k, off in enumerate(offsets):
        bits = random_scales(rng, n_blocks)
        # Field k takes the edge values in blocks k * len(EDGES) ..: one field at a time, the
        # others random, so that each edge shows in each role (d, m / dmin).
        first = k * len(EDGES)
        assert first + len(EDGES) <= n_blocks
        bits[first:first + len(EDGES)] = EDGES
        blocks[:, off] = (bits & 0xFF).astype(np.uint8)
        blocks[:, off + 1] = (bits >> 8).astype(np.uint8)
    out = dequantize(blocks.reshape(-1), qtype)
    assert out.dtype == np.float32 and out.shape == (n_blocks * block_size,)
    assert np.all(np.isfinite(out)), qtype.name
    return blocks, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join("tests", "fixtures", "gguf_dequant"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(20240611)
    total = 0
    for qtype, (name, offsets, n_blocks) in TYPES.items():
        blocks, out = make_type(rng, qtype, offsets, n_blocks)
        for suffix, data in ((".blocks", blocks.tobytes()), (".f32", out.astype("<f4").tobytes())):
            with open(os.path.join(args.out, name + suffix), "wb") as f:
                f.write(data)
            total += len(data)
        n_zero = int(np.count_nonzero(out == 0))
        print(f"{name}: {n_blocks} blocks, {out.size} values ({n_zero} zeros), "
              f"max |y| {float(np.max(np.abs(out))):.6g}")
    print(f"wrote {total} bytes to {args.out}")


if __name__ == "__main__":
    main()
