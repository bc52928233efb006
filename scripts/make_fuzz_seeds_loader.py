#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/fuzz_loader.c into tests/fuzz/corpus/loader/.

Plain Python (no torch). The first byte of each seed selects the parser, as in the target:
0 = safetensors image, 1 = config.json, 2 = generation_config.json merge. Seeds stay small.
Run from the repository root: python3 scripts/make_fuzz_seeds_loader.py
"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fuzz", "corpus", "loader")


def st_image(header, data, pad=True):
    h = json.dumps(header, separators=(",", ":")).encode() if not isinstance(header, bytes) else header
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def tensor(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def seeds():
    s = {}
    good = {"__metadata__": {"format": "pt"},
            "a": tensor("F32", [2, 2], 0, 16),
            "b": tensor("BF16", [3], 16, 22),
            "c": tensor("F16", [0, 4], 22, 22),
            "d": tensor("F16", [1], 22, 24)}
    s["st_good"] = b"\0" + st_image(good, bytes(range(24)))
    s["st_empty_object"] = b"\0" + st_image({}, b"")
    s["st_overflow_shape"] = b"\0" + st_image({"w": tensor("F32", [4194305, 4194305, 211106198978564], 0, 4)}, bytes(4))
    s["st_offsets_reversed"] = b"\0" + st_image({"w": tensor("F32", [4], 16, 0)}, bytes(16))
    s["st_overlap"] = b"\0" + st_image({"a": tensor("F32", [2], 0, 8), "b": tensor("F32", [2], 4, 12)}, bytes(12))
    s["st_gap"] = b"\0" + st_image({"a": tensor("F32", [2], 0, 8), "b": tensor("F32", [2], 12, 20)}, bytes(20))
    s["st_dtype_i8"] = b"\0" + st_image({"w": tensor("I8", [8], 0, 8)}, bytes(8))
    s["st_dup_names"] = b"\0" + st_image(b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                          b'"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8))
    s["st_bad_utf8"] = b"\0" + st_image(b'{"\xc0\xaf":1}', b"")
    s["st_len_huge"] = b"\0" + struct.pack("<Q", 2**63) + b"{}"
    s["st_short"] = b"\0\x02\0\0"
    s["st_not_brace"] = b"\0" + st_image(b"[1,2]", b"")
    s["st_escape"] = b"\0" + st_image(b'{"\\u00e9\\uD83D\\uDE00":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}', bytes(2))

    cfg = {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 64,
           "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": 32064, "max_position_embeddings": 4096,
           "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "sliding_window": 2047, "bos_token_id": 1, "eos_token_id": 32000, "pad_token_id": 32000,
           "tie_word_embeddings": False, "rope_scaling": None, "hidden_act": "silu"}
    s["cfg_4k"] = b"\1" + json.dumps(cfg).encode()
    long_cfg = dict(cfg, max_position_embeddings=131072, sliding_window=262144,
                    rope_scaling={"type": "su", "short_factor": [1.0 + i / 8 for i in range(8)],
                                  "long_factor": [1.5 + i for i in range(8)]})
    s["cfg_longrope"] = b"\1" + json.dumps(long_cfg).encode()
    moe_cfg = dict(long_cfg, original_max_position_embeddings=None,
                   rope_scaling=dict(long_cfg["rope_scaling"], type="longrope", short_mscale=1.243163121016122,
                                     long_mscale=1.243163121016122, original_max_position_embeddings=4096))
    del moe_cfg["original_max_position_embeddings"]
    s["cfg_mscale"] = b"\1" + json.dumps(moe_cfg).encode()
    s["cfg_yarn"] = b"\1" + json.dumps(dict(cfg, rope_scaling={"type": "yarn", "factor": 2.0})).encode()
    s["cfg_phimoe"] = b"\1" + json.dumps(dict(cfg, model_type="phimoe")).encode()  # class mismatch
    real_moe = dict(moe_cfg, architectures=["PhiMoEForCausalLM"], model_type="phimoe",
                    num_local_experts=16, num_experts_per_tok=2, router_jitter_noise=0.01,
                    input_jitter_noise=0.01, attention_bias=True, lm_head_bias=True)
    s["cfg_phimoe_real"] = b"\1" + json.dumps(real_moe).encode()
    s["cfg_phimoe_bad"] = b"\1" + json.dumps(dict(real_moe, num_experts_per_tok=3,
                                                   router_jitter_noise="x",
                                                   num_local_experts=1e9)).encode()
    s["cfg_wrong_types"] = b"\1" + json.dumps(dict(cfg, hidden_size="64", eos_token_id=[1, "2"])).encode()
    s["cfg_truncated"] = b"\1" + json.dumps(cfg).encode()[:77]
    s["gen_list"] = b"\2" + json.dumps({"bos_token_id": 1, "eos_token_id": [32000, 32001, 32007]}).encode()
    s["gen_int"] = b"\2" + b'{"eos_token_id": 32007}'
    s["gen_bad"] = b"\2" + b'{"eos_token_id": [1e999, -1, "x"]}'
    return s


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in sorted(seeds().items()):
        assert len(data) < 4096, name
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds())} seeds to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
