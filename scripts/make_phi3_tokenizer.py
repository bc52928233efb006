#!/usr/bin/env python3
"""Builds the Phi-3 tokenizer fixture (tests/fixtures/tokenizer/phi3/) from the llama.cpp
vocabulary GGUF: tokenizer.model rebuilt piece by piece, tokenizer.json by transformers' own
slow->fast conversion, and the Hugging Face config files with the real Phi-3-mini-4k-instruct
added-token flags (post 2024-05 rstrip update). Developer-run; CI only reads the output.

Usage: scripts/make_phi3_tokenizer.py [path/to/phi3-vocab.gguf] [--shared-model path] [--legacy]

--legacy writes tests/fixtures/tokenizer/phi3-legacy/ instead: the same files converted with
legacy=True, whose tokenizer.json has the older Llama normalizer (Prepend + Replace of U+2581,
no pre-tokenizer) that prefixes every text segment, including the one after an added token.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import gguf
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "tokenizer", "phi3")

# GGUF token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte.
# The GGUF marks tokens that HF lists as added tokens as control (special) or user-defined
# (non-special); inside the 32000-piece SentencePiece model <unk> is UNKNOWN and <s>, </s>
# are CONTROL, as in Llama-2's tokenizer.model.
SP = sp_pb2.ModelProto.SentencePiece
N_SP_PIECES = 32000

# The real Phi-3-mini-4k-instruct added tokens after Hub commit "#53 Adjusts rstrip of special
# tokens" (reference/phi3-models.md 6.2-6.3): (id, content, rstrip, special).
# </s> is a non-special added token there, which is why llama.cpp's GGUF marks it
# USER_DEFINED (type 4) while all others are CONTROL (type 3); checked below against the GGUF.
ADDED = [
    (0, "<unk>", False, True),
    (1, "<s>", False, True),
    (2, "</s>", True, False),
    (32000, "<|endoftext|>", False, True),
    (32001, "<|assistant|>", True, True),
    (32002, "<|placeholder1|>", True, True),
    (32003, "<|placeholder2|>", True, True),
    (32004, "<|placeholder3|>", True, True),
    (32005, "<|placeholder4|>", True, True),
    (32006, "<|system|>", True, True),
    (32007, "<|end|>", True, True),
    (32008, "<|placeholder5|>", True, True),
    (32009, "<|placeholder6|>", True, True),
    (32010, "<|user|>", True, True),
]


def read_gguf(path):
    r = gguf.GGUFReader(path)
    f = r.fields

    def arr(name, conv):
        fld = f[name]
        return [conv(fld.parts[i]) for i in fld.data]

    toks = arr("tokenizer.ggml.tokens", lambda p: bytes(p).decode("utf-8"))
    scores = arr("tokenizer.ggml.scores", lambda p: float(p[0]))
    types = arr("tokenizer.ggml.token_type", lambda p: int(p[0]))
    meta = {k: f[k].contents() for k in (
        "tokenizer.ggml.model", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.chat_template")}
    return toks, scores, types, meta


def build_sp_model(toks, scores, types):
    m = sp_pb2.ModelProto()
    for i in range(N_SP_PIECES):
        p = m.pieces.add()
        p.piece = toks[i]
        p.score = scores[i]
        t = types[i]
        if i == 0:
            p.type = SP.UNKNOWN
        elif i in (1, 2):
            p.type = SP.CONTROL
        elif t == 6:
            p.type = SP.BYTE
        elif t == 1:
            p.type = SP.NORMAL
        else:
            sys.exit(f"unexpected GGUF token type {t} for piece {i} {toks[i]!r}")
    ts = m.trainer_spec
    ts.model_type = sp_pb2.TrainerSpec.BPE
    ts.vocab_size = N_SP_PIECES
    ts.split_digits = True
    ts.allow_whitespace_only_pieces = True
    ts.byte_fallback = True
    ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = 0, 1, 2, -1
    ts.unk_surface = " \u2047 "
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = True
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    return m


def compare_with_shared(built, shared_path):
    shared = sp_pb2.ModelProto()
    with open(shared_path, "rb") as fh:
        shared.ParseFromString(fh.read())
    if len(shared.pieces) != len(built.pieces):
        sys.exit(f"{shared_path}: {len(shared.pieces)} pieces, built {len(built.pieces)}")
    diffs = 0
    for i, (a, b) in enumerate(zip(shared.pieces, built.pieces)):
        if a.piece != b.piece or a.score != b.score or a.type != b.type:
            diffs += 1
            if diffs <= 10:
                print(f"piece {i}: shared {a.piece!r} {a.score} {a.type} built {b.piece!r} {b.score} {b.type}")
    for spec in ("trainer_spec", "normalizer_spec"):
        for name in ("model_type", "vocab_size", "byte_fallback", "split_digits", "unk_id", "bos_id",
                     "eos_id", "pad_id", "name", "add_dummy_prefix", "remove_extra_whitespaces",
                     "escape_whitespaces", "allow_whitespace_only_pieces"):
            sa, sb = getattr(shared, spec), getattr(built, spec)
            if hasattr(sa, name) and getattr(sa, name) != getattr(sb, name):
                diffs += 1
                print(f"{spec}.{name}: shared {getattr(sa, name)!r} built {getattr(sb, name)!r}")
    print(f"compared {len(built.pieces)} pieces with {shared_path}: {diffs} differences")
    return diffs == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf", nargs="?", default=os.path.join(REPO, "..", "shared", "data", "phi3-vocab.gguf"))
    ap.add_argument("--shared-model", default=os.path.join(REPO, "..", "shared", "data", "phi3-tokenizer.model"))
    ap.add_argument("--legacy", action="store_true")
    args = ap.parse_args()
    out_dir = OUT + "-legacy" if args.legacy else OUT

    toks, scores, types, meta = read_gguf(args.gguf)
    assert meta["tokenizer.ggml.model"] == "llama"
    assert len(toks) == 32064, len(toks)
    for tid, content, _rstrip, special in ADDED:
        assert toks[tid] == content, (tid, toks[tid], content)
        if tid >= N_SP_PIECES or tid == 2:
            want = 3 if special else 4
            assert types[tid] == want, (tid, content, types[tid], "GGUF disagrees on special flag")

    model = build_sp_model(toks, scores, types)
    if os.path.exists(args.shared_model) and not compare_with_shared(model, args.shared_model):
        sys.exit("the shared tokenizer.model differs from the GGUF rebuild")

    # Imported late: transformers is slow to import and only the conversion needs it.
    from transformers import AddedToken, AutoTokenizer, LlamaTokenizer, LlamaTokenizerFast
    from transformers.convert_slow_tokenizer import convert_slow_tokenizer

    tmp = tempfile.mkdtemp()
    try:
        model_path = os.path.join(tmp, "tokenizer.model")
        with open(model_path, "wb") as fh:
            fh.write(model.SerializeToString())
        added = {tid: AddedToken(c, lstrip=False, rstrip=r, normalized=False, special=s, single_word=False)
                 for tid, c, r, s in ADDED}
        common = dict(
            bos_token=added[1], eos_token=added[32000], unk_token=added[0], pad_token=added[32000],
            add_bos_token=bool(meta["tokenizer.ggml.add_bos_token"]),
            add_eos_token=bool(meta["tokenizer.ggml.add_eos_token"]),
            legacy=args.legacy, clean_up_tokenization_spaces=False, model_max_length=4096,
            padding_side="left", use_default_system_prompt=False, sp_model_kwargs={},
            added_tokens_decoder=added, chat_template=meta["tokenizer.chat_template"],
        )
        slow = LlamaTokenizer(vocab_file=model_path, **common)
        backend = convert_slow_tokenizer(slow)
        fast = LlamaTokenizerFast(tokenizer_object=backend, vocab_file=model_path, **common)

        os.makedirs(out_dir, exist_ok=True)
        for name in os.listdir(out_dir):
            os.remove(os.path.join(out_dir, name))
        fast.save_pretrained(out_dir)
        shutil.copyfile(model_path, os.path.join(out_dir, "tokenizer.model"))
    finally:
        shutil.rmtree(tmp)

    # added_tokens.json as in the real repo: the added tokens beyond the SentencePiece model.
    with open(os.path.join(out_dir, "added_tokens.json"), "w") as fh:
        json.dump({c: tid for tid, c, _r, _s in ADDED if tid >= N_SP_PIECES}, fh, indent=2, sort_keys=True)
        fh.write("\n")

    # Check the written files carry exactly the flags above.
    with open(os.path.join(out_dir, "tokenizer.json")) as fh:
        tj = json.load(fh)
    got = {t["id"]: t for t in tj["added_tokens"]}
    for tid, c, r, s in ADDED:
        t = got[tid]
        assert (t["content"], t["rstrip"], t["lstrip"], t["normalized"], t["special"]) == (c, r, False, False, s), t
    assert len(got) == len(ADDED), sorted(got)
    print("normalizer:", json.dumps(tj["normalizer"]))
    print("pre_tokenizer:", json.dumps(tj["pre_tokenizer"]))
    print("post_processor:", json.dumps(tj["post_processor"])[:200])
    print("decoder:", json.dumps(tj["decoder"]))

    tok = AutoTokenizer.from_pretrained(out_dir)
    assert tok.is_fast
    text = "<|user|>\nSYS\nHI<|end|>\n<|assistant|>\n"
    ids = tok(text)["input_ids"]
    want = [1, 32010, 317, 21554, 13, 17628, 32007, 32001]
    print("reference 6.3 check:", ids, [tok.convert_ids_to_tokens(i) for i in ids])
    if ids != want:
        print("NOTE: differs from the llama.cpp ids", want)
    print("wrote", out_dir)


if __name__ == "__main__":
    main()
