#!/usr/bin/env python3
"""Writes tests/fixtures/chat/token_goldens.jsonl: the token ids transformers' apply_chat_template
gives for the chat-template golden conversations, checked by tests/engine/test_chat_tokens.c.

Developer-run (needs transformers, e.g. the fixtures venv); CI only reads the output.

  python scripts/make_chat_token_goldens.py      # from the repository root

Source of the conversations: tests/fixtures/chat/goldens.jsonl (scripts/make_chat_goldens.py),
every case that renders without error, on every template whose prompt is meant for the Phi-3
vocabulary (SKIP below says which are not and why). Each case is tokenized with both tokenizer
fixtures: phi3-legacy (Prepend + Replace normalizer, as the microsoft tokenizer.json has) and phi3
(Metaspace, prepend_scheme "first").

Reference call: tokenizer.apply_chat_template(messages, chat_template=src, tools=tools,
add_generation_prompt=agp, tokenize=True). In transformers 4.46.3 that renders the text and then
calls tokenizer(text, add_special_tokens=False): the ids are exactly what the template wrote, no
BOS/EOS added on top (add_special_tokens is recorded per row as false). The script asserts both
facts for every row: the rendered text equals the text golden, and the ids equal
tokenizer(text, add_special_tokens=False). An empty conversation cannot go through
apply_chat_template (it indexes conversation[0]); for those rows the ids are that same
tokenizer(text, add_special_tokens=False) call on the golden text, and the row says via "encode".

goldens.jsonl has 40 conversations per template (fewer render on variant-strict); EXTRA below adds
conversations aimed at the tokenizer side (whitespace next to special tokens, added-token text in
content, byte fallback, scripts), all with alternating roles so that every template renders them.
Their text comes from the same apply_chat_template(tokenize=False) call and is checked by the C test
as the goldens' text is. Every conversation runs with add_generation_prompt true and false.

Content parts are flattened in Python exactly as for the text goldens (make_chat_goldens.flatten),
except on templates that walk parts themselves (keep_content_parts).

Each output line: template, case, messages, tools, add_generation_prompt, keep_content_parts, and
tokenizers: {fixture name: {bos_token, eos_token, add_special_tokens, via, text, ids}}.
"""
import json
import os
import sys

from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from make_chat_goldens import A, S, U, flatten  # noqa: E402  (same helpers as the text goldens)

CHAT = os.path.join(ROOT, "tests", "fixtures", "chat")
TOKENIZERS = ["phi3-legacy", "phi3"]

# Templates whose real model has another vocabulary: their prompts never meet this tokenizer.
SKIP = {
    "phi4-mini": "Phi-4-mini has a 200k-entry tiktoken-style vocabulary, not Phi-3's",
    "phi3-small": "Phi-3-small has a cl100k tiktoken vocabulary, not Phi-3's",
}

# (name, messages): tokenizer-oriented conversations, user/assistant alternating after an optional system.
EXTRA = [
    ("x-leading-space", [U(" leading space")]),
    ("x-trailing-spaces", [U("trailing spaces   "), A("ok  "), U("x")]),
    ("x-newline-edges", [U("\nstarts and ends with a newline\n")]),
    ("x-newlines-after-tags", [S("\n\nsys"), U("\n\n\nq")]),
    ("x-sp-marker", [U("\u2581already\u2581marked \u2581 x\u2581")]),
    ("x-eos-piece-in-content", [U("a </s> b </s>\n c")]),
    ("x-bos-in-content", [U("<s>start <s> mid<s>")]),
    ("x-endoftext-in-content", [U("stop<|endoftext|> here"), A("<|endoftext|>"), U("again")]),
    ("x-placeholders", [U("<|placeholder1|>  x<|placeholder6|>\ty")]),
    ("x-unk-in-content", [U("<unk> <unk>x")]),
    ("x-partial-tags", [U("<|user| <|end <| |> <|endoftext| <|assistant|<|end|")]),
    ("x-only-specials", [U("<|end|>"), A("<|assistant|>\n"), U("<|system|> ")]),
    ("x-byte-fallback", [U("rare: \U0001F9EC \u2C80 \uA9C0 \U00010348 \u0F00 \U0001D11E")]),
    ("x-cjk", [S("日本語で答えて。"), U("東京の天気は？"), A("晴れです。"), U("ありがとう")]),
    ("x-scripts", [U("Привет мир, Γειά σου, مرحبا, नमस्ते, 안녕하세요")]),
    ("x-digits-punct", [U("1234567890 3.14159 -42 1e-9 0x1F (a) [b] {c} #$%&* ...")]),
    ("x-space-runs", [U("a" + " " * 17 + "b\t\t\tc  \n  d")]),
    ("x-code", [U("```python\ndef f(x):\n    return x * 2\n```"), A("```\nok\n```"), U("Explain.")]),
    ("x-markdown", [S("Format:\n- one\n- two"), U("* a\n* b\n\n1. c")]),
    ("x-url", [U("See https://example.com/a?b=c&d=e#f or mail x.y@z.org")]),
    ("x-padded-turns", [S(" s "), U("u1 "), A(" a1"), U("\tu2"), A("a2\n"), U("u3")]),
    ("x-invisible", [U("non\u00a0breaking\u2009thin\ufeffbom\u200bzw")]),
]


def extra_cases():
    """EXTRA as goldens.jsonl-shaped rows; the text is rendered below, not taken from a file."""
    for name, messages in EXTRA:
        for agp in (True, False):
            yield dict(case=f"{name}/agp={int(agp)}/tools=0", messages=messages, tools=None,
                       add_generation_prompt=agp, keep_content_parts=False, expected=None)


def renders(tok, src, messages, agp):
    try:
        tok.apply_chat_template(messages, chat_template=src, add_generation_prompt=agp, tokenize=False)
        return True
    except Exception as e:  # a template's raise_exception or a runtime error: not a token golden
        print(f"  (skipped: {type(e).__name__}: {e})")
        return False


def main():
    with open(os.path.join(CHAT, "goldens.jsonl"), encoding="utf-8") as f:
        goldens = [json.loads(line) for line in f]
    toks = {name: AutoTokenizer.from_pretrained(os.path.join(ROOT, "tests", "fixtures", "tokenizer", name))
            for name in TOKENIZERS}
    tdir = os.path.join(CHAT, "templates")
    sources = {}
    rows, counts = [], {}
    cases = goldens + [dict(c, template=t) for t in sorted({g["template"] for g in goldens})
                       for c in extra_cases()]
    for g in cases:
        name = g["template"]
        if name in SKIP or "error" in g:
            continue
        if name not in sources:
            with open(os.path.join(tdir, name + ".jinja"), encoding="utf-8") as f:
                sources[name] = f.read()
        src = sources[name]
        given = g["messages"] if g["keep_content_parts"] else flatten(g["messages"])
        if g["expected"] is None and not renders(toks[TOKENIZERS[0]], src, given, g["add_generation_prompt"]):
            continue
        row = {k: g[k] for k in ("template", "case", "messages", "tools", "add_generation_prompt",
                                 "keep_content_parts")}
        row["tokenizers"] = {}
        for tname, tok in toks.items():
            if g["expected"] is not None and (tok.bos_token, tok.eos_token) != (g["bos_token"], g["eos_token"]):
                sys.exit(f"{tname}: bos/eos differ from the text goldens'; render them per tokenizer")
            if given:
                text = tok.apply_chat_template(given, chat_template=src, tools=g["tools"],
                                               add_generation_prompt=g["add_generation_prompt"], tokenize=False)
                ids = tok.apply_chat_template(given, chat_template=src, tools=g["tools"],
                                              add_generation_prompt=g["add_generation_prompt"], tokenize=True)
                via = "apply_chat_template"
            else:
                text = g["expected"]
                ids = tok(text, add_special_tokens=False)["input_ids"]
                via = "encode"
            if g["expected"] is not None and text != g["expected"]:
                sys.exit(f"{name} {g['case']} ({tname}): text differs from goldens.jsonl")
            if ids != tok(text, add_special_tokens=False)["input_ids"]:
                sys.exit(f"{name} {g['case']} ({tname}): apply_chat_template added or dropped special tokens")
            row["tokenizers"][tname] = dict(bos_token=tok.bos_token, eos_token=tok.eos_token,
                                            add_special_tokens=False, via=via, text=text, ids=ids)
        rows.append(row)
        counts[name] = counts.get(name, 0) + 1
    with open(os.path.join(CHAT, "token_goldens.jsonl"), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
    for name in sorted(counts):
        conv = len({r["case"].split("/")[0] for r in rows if r["template"] == name})
        print(f"{name}: {counts[name]} cases ({conv} conversations) x {len(toks)} tokenizers")
    for name, why in sorted(SKIP.items()):
        print(f"{name}: skipped ({why})")
    diff = sum(1 for r in rows if r["tokenizers"]["phi3"]["ids"] != r["tokenizers"]["phi3-legacy"]["ids"])
    print(f"total: {len(rows)} cases, {len(rows) * len(toks)} id goldens; phi3 and phi3-legacy ids differ "
          f"in {diff} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
