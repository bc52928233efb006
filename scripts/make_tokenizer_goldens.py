#!/usr/bin/env python3
"""Writes tokenizer golden cases (JSON lines) from Hugging Face's fast tokenizer: a fixed,
deterministic corpus (hand-written strings + seeded random mixes) with the ids for
add_special_tokens True/False and HF's decode of them, plus decode-only id sequences
(broken byte-fallback runs, padding rows). Developer-run; CI only reads the output.

Usage: scripts/make_tokenizer_goldens.py [fixture_dir] [out.jsonl]
Text fields are also stored as hex of their UTF-8 bytes (*_hex) because they may hold NUL.
"""
import json
import os
import random
import sys

from transformers import AutoTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(REPO, "tests", "fixtures", "tokenizer")

SPECIALS = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder4|>", "<|system|>",
            "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>", "<s>", "</s>", "<unk>"]

HAND = [
    "", " ", "  ", "   ", "\t", "\n", "\r\n", " \n ", "a", " a", "a ", "  a  ", "Hello", " Hello",
    "Hello world", "Hello, world!", "Hello  world", "Hello   world", "Hello\tworld", "Hello\nworld",
    "Hello\r\nworld", "line1\n\nline2\n\n\nline3", "trailing spaces   ", "   leading spaces",
    "The quick brown fox jumps over the lazy dog.",
    "It's a test -- isn't it? \"Quotes\" and 'apostrophes'.",
    "Numbers: 0 1 12 123 1234 12345 3.14159 -42 1e10 0x1F",
    "Prices: $5.99, €10, £3, ¥1000",
    "def f(x):\n    return x * 2\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (size_t i = 0; i < n; ++i) a[i] += b[i];",
    "    indented four\n        indented eight\n",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "SELECT * FROM users WHERE id = 1;",
    "<html><body><p>Hi</p></body></html>",
    "https://example.com/path?q=1&r=2#frag",
    "user@example.com",
    "日本語のテキストです。", "中文文本测试，包括标点符号。", "한국어 텍스트", "混合 mixed テキスト text",
    "مرحبا بالعالم", "שלום עולם", "English then عربي then English", "नमस्ते दुनिया", "हिन्दी में लिखा गया वाक्य।",
    "Привет, мир!", "Ελληνικά γράμματα", "ไทย ภาษา", "Tiếng Việt có dấu",
    "😀", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇯🇵", "emoji 😀 in 👍🏿 text 🎉",
    "e\u0301", "a\u0300\u0301\u0302", "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319",
    "cafe\u0301 vs caf\u00e9", "\u00c5ngstr\u00f6m",
    "\x00", "a\x00b", "\x01\x02\x03\x1f\x7f", "\x1b[31mred\x1b[0m", "\x0b\x0c", "\u0085\u2028\u2029",
    "\ufeffBOM", "\u200b\u200c\u200d", "\ue000\uf8ff", "\U0001d11e\U0001f600\U000e0001",
    "\ufffd", "\uffff", "\U0010ffff", "\u2581", "\u2581\u2581", " \u2581 ", "\u2581Hi",
    "\u00a0nbsp\u00a0", "\u3000ideographic\u3000space",
    "<|user|>\nSYS\nHI<|end|>\n<|assistant|>\n",
    "<s><|user|>\nHello<|end|>\n<|assistant|>\n",
    "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nCan you help?<|end|>\n<|assistant|>\nCertainly!<|end|>\n",
    "<|user|>\n<|end|>\n<|assistant|>",
    "ab<|end|>cd", "ab <|end|> cd", "ab<|end|>  \t\n cd", "<|user|>   x", "<|user|>", "<|user|><|user|>",
    "<|user|> <|user|>", "x<|endoftext|>y", "x<|endoftext|> y", "x <|endoftext|>  y", "<|endoftext|>",
    "<|endoftext|>\n", "<s>", "</s>", "<s></s>", "a<s>b</s>c", "a </s>  b", "</s>\n\nnext", "<unk>", "x<unk> y",
    "<|user|\u003e", "<|user", "|>", "<|", "<|unknown|>", "<|user|>>", "<<|user|>", "<|end|>end",
    "<|placeholder1|><|placeholder2|><|placeholder3|><|placeholder4|><|placeholder5|><|placeholder6|>",
    "<|user|>\u00a0\u3000x", "<|user|>\u2028x", "<|user|>\u200bx", "<|end|>\r\n\r\nz",
    "<|assistant|>\n\n\n", "text<|end|>", "   <|end|>   ", "\n<|user|>\n",
    "a" * 2000, " " * 500, "\n" * 300, "ab" * 700, "\t" * 100, "😀" * 200, "日本" * 300,
    "<|end|>" * 50, ("x" * 100 + " ") * 20, "-" * 1000, "=" * 64 + "\n" + "=" * 64,
    "\u2581" * 100, "0123456789" * 50, ". " * 200,
]

PROSE = ["The", "model", "server", "streams", "tokens", "over", "SSE", "to", "many", "clients", "at", "once",
         "while", "batching", "requests", "continuously", "paged", "KV", "cache", "blocks", "Phi-3", "mini",
         "don't", "can't", "it's", "C17", "CUDA", "GPU", "1024", "3.5", "x86_64", "O(n²)", "naïve", "résumé",
         "über", "façade", "日本", "語", "中文", "한국", "عربي", "עברית", "हिन्दी", "😀", "👍🏽", "👩‍💻", "🇯🇵",
         "e\u0301", "\u2581", "\u00a0", "\x07", "\ufffd", "\U0001d11e", "ℕ", "∑", "√2", "Ω", "µs"]
SEPS = [" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", "", ", ", ". ", " \n", "\t\t", " \t "]
CODE = ["if (x) {", "}", "return -1;", "    ", "#include <stdio.h>", "x = [i for i in range(10)]",
        "fn main() {}", "  // comment", "/* block */", "a->b", "&&", "||", "!=", "<=", ">>=", "::", "\"str\""]


def random_mixes(n):
    rng = random.Random(20240502)
    out = []
    for _ in range(n):
        k = rng.randint(1, 14)
        parts = []
        for _ in range(k):
            r = rng.random()
            if r < 0.55:
                parts.append(rng.choice(PROSE))
            elif r < 0.7:
                parts.append(rng.choice(CODE))
            elif r < 0.88:
                parts.append(rng.choice(SPECIALS))
            else:
                parts.append("".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(1, 4))))
            parts.append(rng.choice(SEPS))
        if rng.random() < 0.3:
            parts.insert(0, rng.choice(SEPS + [" "] * 3))
        out.append("".join(parts))
    # characters from many blocks, skipping surrogates, to exercise byte fallback.
    for _ in range(40):
        s = []
        for _ in range(rng.randint(1, 12)):
            cp = rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0x7FF), rng.randint(0x800, 0xD7FF),
                             rng.randint(0xE000, 0xFFFF), rng.randint(0x10000, 0x10FFFF)])
            s.append(chr(cp))
        out.append("".join(s))
    return out


def decode_cases(tok):
    """Id sequences no encode produces: broken UTF-8 byte runs, padding rows, specials mixed."""
    b = lambda x: 3 + x  # <0xXX> pieces are ids 3..258
    cases = [
        [b(0xE4), b(0xB8)], [b(0xE4), b(0xB8), b(0xAD)], [b(0xE4), 29874, b(0xB8)], [b(0xFF)], [b(0x80)],
        [b(0xC3)], [b(0xC3), b(0xA9)], [b(0xF0), b(0x9F), b(0x98)], [b(0xF0), b(0x9F), b(0x98), b(0x80)],
        [b(0xED), b(0xA0), b(0x80)], [b(0xC0), b(0xAF)], [b(0x41), b(0xE4), b(0x42)],
        [b(0xE4), 32007, b(0xB8), b(0xAD)], [b(0xE4), 32050, b(0xB8)], [32011], [32063, 32011, 15043],
        [1, 15043], [29871], [29871, 29871], [259], [1, 259], [259, 15043], [2, 1, 0, 32000],
        [13, 13, 29871, 15043], [0], [0, 0], [32001, 29871, 13], [1, 1, 1], [2], [32010],
        [15043, 2, 15043], [b(0x20), 15043], [b(0x00)], [29871, b(0xE2), b(0x96), b(0x81)],
    ]
    rng = random.Random(7)
    for _ in range(60):
        cases.append([rng.randrange(0, 32064) for _ in range(rng.randint(1, 20))])
    for _ in range(30):
        cases.append([rng.choice([rng.randrange(3, 259), rng.randrange(259, 32000), rng.randrange(32000, 32064)])
                      for _ in range(rng.randint(1, 12))])
    return cases


def hexs(s):
    return s.encode("utf-8").hex()


def main():
    fix = sys.argv[1] if len(sys.argv) > 1 else os.path.join(FIX, "phi3")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(FIX, "corpus.jsonl")
    tok = AutoTokenizer.from_pretrained(fix)
    assert tok.is_fast
    corpus = HAND + random_mixes(280)
    seen, n = set(), 0
    with open(out, "w") as fh:
        for text in corpus:
            if text in seen:
                continue
            seen.add(text)
            ids = tok(text, add_special_tokens=True)["input_ids"]
            ids_ns = tok(text, add_special_tokens=False)["input_ids"]
            rec = {
                "text": text, "text_hex": hexs(text), "ids": ids, "ids_nospecial": ids_ns,
                "decode_hex": hexs(tok.decode(ids, skip_special_tokens=False)),
                "decode_skip_hex": hexs(tok.decode(ids, skip_special_tokens=True)),
                "decode_nospecial_hex": hexs(tok.decode(ids_ns, skip_special_tokens=False)),
            }
            fh.write(json.dumps(rec, ensure_ascii=True) + "\n")
            n += 1
        for ids in decode_cases(tok):
            rec = {"decode_ids": ids,
                   "decode_hex": hexs(tok.decode(ids, skip_special_tokens=False)),
                   "decode_skip_hex": hexs(tok.decode(ids, skip_special_tokens=True))}
            fh.write(json.dumps(rec) + "\n")
    print(f"wrote {n} encode cases + {len(decode_cases(tok))} decode cases to {out}")


if __name__ == "__main__":
    main()
