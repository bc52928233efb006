#!/usr/bin/env python3
"""Golden cases for engine/regex.c (tests/engine/test_regex.c), with Python's re.fullmatch as
the reference. Plain python3, no packages.

    python3 scripts/make_regex_cases.py
        writes tests/fixtures/regex/cases.json: for each pattern the texts its grammar must
        accept and those it must refuse, and the patterns that must be refused with their code.

    build/tests/engine/test_regex tests/fixtures --walk /tmp/walk.json
    python3 scripts/make_regex_cases.py --check-walk /tmp/walk.json
        the other direction, run by a developer: test_regex walks each pattern's grammar byte
        by byte along random paths and writes the sentences it completes; this checks that each
        one is valid UTF-8 (in JSON-string mode: valid escaped content) and that it fullmatches.

Python's \\d \\w \\s are Unicode-aware on str patterns; regex.c's are ASCII, so every pattern is
compiled here with re.ASCII, which makes the two agree. JSON-string mode feeds the escaped form
(json.dumps without ensure_ascii, quotes removed) plus hand-made forms; whether the grammar
must accept one is decided by json_content(), the escapes regex.h allows written in Python.
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, '..', 'tests', 'fixtures', 'regex', 'cases.json')

SYNTAX, UNSUPPORTED, TOO_BIG = -1, -2, -3

# (pattern, json mode, texts to try). Verdicts come from re.fullmatch; near-misses of every
# text (a character dropped, doubled or changed) are added by variants().
CASES = [
    ('abc', False, ['abc', 'ab', 'abcd', '', 'abd', 'ABC']),
    ('', False, ['', 'a', ' ']),
    ('héllo wörld', False, ['héllo wörld', 'hello world', 'héllo wörld ', 'héllo']),
    ('日本語|中文', False, ['日本語', '中文', '日本', '日本語中文', '']),
    ('😀+', False, ['😀', '😀😀😀', '', '😁', '😀a']),
    ('a.c', False, ['abc', 'a c', 'a\nc', 'aéc', 'a😀c', 'a\tc', 'ac', 'abbc', 'a\x7fc']),
    ('.*', False, ['', 'anything at all', 'two\nlines', 'é😀', '\x01']),
    ('.', False, ['\x00', 'a', '\n', 'é', '\U0010ffff', '\ue000', '\uffff', '\U00010000', 'ab']),
    (r'\d+', False, ['0', '0123456789', '', '12a', '٣', '-1', '9:', '/0', ':', '/']),
    (r'\D\D', False, ['ab', 'é😀', '1a', 'a1', 'a', 'abc', '٣٣']),
    (r'\w+', False, ['abc_XYZ_019', 'a b', 'é', '', '_', 'a@', '[', '`', '{', '/', ':', 'Z^']),
    (r'\W', False, [' ', 'é', 'a', '_', '0', '-', '😀']),
    (r'\s*x\s*', False, ['x', ' \t\n\r\f\vx \n', ' x', 'x\u00a0', '\u2003x', ' y ', '\x08x',
      '\x0ex', 'x\x1f', '!x', '\x1cx', '\x85x']),
    (r'\S+', False, ['abc', 'a b', 'é😀', '\u00a0', '']),
    (r'a\.b\\c\/d\(e\)f\[g\]h\{i\}j\*k\+l\?m\|n\^o\$p\-q', False,
     [r'a.b\c/d(e)f[g]h{i}j*k+l?m|n^o$p-q', 'axb\\c/d(e)f[g]h{i}j*k+l?m|n^o$p-q']),
    (r'\t\n\r\f\v\a', False, ['\t\n\r\f\v\a', '\t\n\r\f\v', 'tnrfva']),
    (r'\x41\u00e9\u65e5\U0001F600', False, ['Aé日😀', 'Aé日', 'a\u00e9\u65e5\U0001F600']),
    (r'\#\&\~\ \é', False, ['#&~ é', '#&~é']),
    (r'[abc]', False, ['a', 'b', 'c', 'd', '', 'ab', 'A']),
    (r'[a-z0-9_]+', False, ['snake_case_9', 'Snake', 'x-y', '']),
    (r'[^abc]', False, ['d', 'a', '\n', 'é', '😀', '', 'dd', '\x00']),
    (r'[^a-zA-Zé]+', False, ['123 !', 'é', 'è', '日本', 'x', '\n\t']),
    (r'[à-ÿ]+', False, ['àéîõü', 'ÿ', 'ß', 'Ā', 'a']),
    (r'[\u0400-\u04FF]+', False, ['Привет', 'Hello', 'Приvет', 'ӿ', 'Ԁ']),
    (r'[😀-😏]', False, ['😀', '😏', '😐', '😊', '🙂']),
    (r'[^\u0000-\u007F]', False, ['é', 'a', '\x7f', '\x80', '日', '😀', '\U0010ffff']),
    (r'[^\u0800-\uffff]', False, ['a', 'é', '\u07ff', '\u0800', '\uffff', '\U00010000', '\ue000']),
    (r'[\U00010000-\U0010FFFF]', False, ['😀', '\U00010000', '\U0010ffff', '\uffff', 'a']),
    (r'[\d\s]+', False, ['1 2\t3', 'a', ' ', '1a']),
    (r'[^\d\s]+', False, ['abc', 'a1', ' ', 'é😀']),
    (r'[\D]', False, ['a', '1', 'é']),
    (r'[^\W_]+', False, ['abc123', 'a_b', 'é', 'A']),
    (r'[]a]+', False, [']', 'a]a', 'b', '']),
    (r'[^]a]', False, ['b', ']', 'a', 'é']),
    (r'[-a]+|[a-]+', False, ['-', 'a-a', 'b']),
    (r'[a-c-e]+', False, ['abc', '-', 'e', 'd', 'a-e']),
    (r'[\]\-\\\^]+', False, [']-\\^', 'a', '^']),
    (r'[.*+?()|{}]+', False, ['.*+?()|{}', 'a', '.']),
    (r'[\x00-\x1f]+', False, ['\x01\x1f', ' ', '\t\n']),
    (r'[\b]', False, ['\b', 'b', '\\']),
    (r'(ab)+', False, ['ab', 'abab', 'aba', '', 'ba']),
    (r'(?:ab|cd)*e', False, ['e', 'abcde', 'cdabe', 'abc', 'ab']),
    (r'(?P<year>\d{4})-(?P<month>\d\d)', False, ['2024-01', '202-01', '2024-1', '2024/01']),
    (r'(?<year>\d{4})-(?<day>\d\d)', False, ['1999-12', '1999-123']),
    (r'((a|b)(c|d))+', False, ['ac', 'bdad', 'a', 'acb', '']),
    (r'(((((x)))))', False, ['x', 'xx', '']),
    (r'a|ab|abc|abd', False, ['a', 'ab', 'abc', 'abd', 'abe', 'abcd', '']),
    (r'foo(bar|baz|ba)?', False, ['foo', 'foobar', 'foobaz', 'fooba', 'foob', 'foobarbaz']),
    (r'(a|)+b', False, ['b', 'ab', 'aaab', 'a', '']),
    (r'(a*)*', False, ['', 'a', 'aaaa', 'b', 'ab']),
    (r'(a*b*)*c', False, ['c', 'abc', 'bac', 'aabbbac', 'ab', 'cc']),
    (r'(a?)+?', False, ['', 'a', 'aaa', 'b']),
    (r'(a*|b)*', False, ['', 'ab', 'ba', 'bbb', 'c']),
    (r'(|a)(b|)', False, ['', 'a', 'b', 'ab', 'ba']),
    (r'(a?b?)*', False, ['', 'a', 'ababbaab', 'c']),
    (r'(a?b?c?)+d', False, ['d', 'abcd', 'cbad', 'acbd', 'e']),
    (r'(()|a)*', False, ['', 'aaa', 'b']),
    (r'(a{0})*b', False, ['b', 'ab', '']),
    (r'a{3}', False, ['aaa', 'aa', 'aaaa', '']),
    (r'a{2,4}', False, ['a', 'aa', 'aaa', 'aaaa', 'aaaaa']),
    (r'a{2,}', False, ['a', 'aa', 'a' * 50]),
    (r'a{,2}b', False, ['b', 'ab', 'aab', 'aaab']),
    (r'a{,}b', False, ['b', 'aaaaab', 'a']),
    (r'a{0}b', False, ['b', 'ab']),
    (r'(ab){2,3}?', False, ['abab', 'ababab', 'ab', 'abababab']),
    (r'\d{1,3}(,\d{3})*', False, ['1', '123', '1,234', '12,345,678', '1234', '1,23', ',123']),
    (r'x{1000}', False, ['x' * 1000, 'x' * 999, 'x' * 1001]),
    (r'(?:[a-z]{0,3}\d){2}', False, ['1a2', 'abc1xyz2', '12', 'abcd12', '1']),
    (r'a*?b+?c??', False, ['b', 'aabbc', 'c', 'abcc']),
    (r'a{x', False, ['a{x', 'ax']),
    (r'a{}', False, ['a{}', 'a']),
    (r'a{2,x}', False, ['a{2,x}', 'aa']),
    (r'}]', False, ['}]']),
    (r'^abc$', False, ['abc', 'ab', 'abc\n']),
    (r'^$', False, ['', '\n']),
    (r'(\+|-)?\d+(\.\d+)?([eE][+-]?\d+)?', False,
     ['1', '-1.5', '+2e10', '3.14E-2', '1.', '.5', '1e', '--1']),
    (r'[A-Z][a-z]+ [A-Z][a-z]+', False, ['John Smith', 'john smith', 'John  Smith']),
    (r'(?:\w+@\w+\.(?:com|org))', False, ['me@example.com', 'me@example.net', '@x.org']),
    (r'(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)', False,
     ['192.168.0.1', '255.255.255.255', '256.1.1.1', '1.2.3', '01.2.3.4', '0.0.0.0']),
    # JSON-string mode: the texts are decoded strings; the feeds are their escaped forms.
    ('[a-z]+', True, ['abc', 'ABC', '']),
    ('say "hi"', True, ['say "hi"', 'say hi']),
    (r'a\\b', True, ['a\\b', 'ab']),
    ('.+', True, ['x', '"', '\\', '/', 'é😀', '\t\x01\x1f\x7f', '"\\"', '\n', '']),
    (r'[\x00-\x1f]', True, ['\x01', '\x08', '\t', '\n', '\x0b', '\x0c', '\r', '\x1f', ' ', '\x00']),
    (r'[^"\\]*', True, ['plain', 'with "quote"', 'back\\slash', 'tab\there', 'ünï']),
    ('a/b', True, ['a/b', 'ab']),
    (r'\d{3}-\d{4}', True, ['555-1234', '5551234']),
    (r'(?:[^\n"]|\\")*', True, ['', 'a\\"b', 'line\nbreak', '"']),
    (r'[\x00a]', True, ['a', '\x00']),
    (r'\s+', True, [' \t\n\r\f\v', 'x']),
]

# JSON-mode feeds written by hand: (pattern, escaped content). Their verdicts come from
# json_content() + fullmatch, like the rest.
EXTRA_FEEDS = [
    ('.+', '"'), ('.+', '\\'), ('.+', 'a"b'), ('.+', '\\u0041'), ('.+', '\\u000a'),
    ('.+', '\\u001F'), ('.+', '\\u001f'), ('.+', '\\u0000'), ('.+', '\\/'), ('.+', '\\x'),
    ('.+', '\\u00e9'), ('.+', '\t'), ('.+', '\\u000B'), ('.+', '\\U000b'),
    ('a/b', 'a\\/b'), ('a/b', 'a\\\\b'), ('say "hi"', 'say "hi"'),
    ('say "hi"', 'say \\"hi\\"'), (r'a\\b', 'a\\b'), (r'a\\b', 'a\\\\b'),
    (r'[\x00-\x1f]', '\\u0008'), (r'[\x00-\x1f]', '\\b'), (r'[\x00-\x1f]', '\\u000b'),
    (r'[\x00-\x1f]', '\\u000c'), (r'[\x00-\x1f]', '\\v'), (r'[\x00-\x1f]', '\x01'),
]

# Patterns refused: (pattern, json mode, code, text the message must contain).
REFUSED = [
    (r'(a)\1', False, UNSUPPORTED, 'backreference \\1 at byte 3'),
    (r'(?P<x>a)(?P=x)', False, UNSUPPORTED, 'at byte 8'),
    (r'a(?=b)', False, UNSUPPORTED, 'lookaround (?= at byte 1'),
    (r'a(?!b)', False, UNSUPPORTED, 'lookaround (?! at byte 1'),
    (r'(?<=a)b', False, UNSUPPORTED, 'lookaround (?< at byte 0'),
    (r'(?<!a)b', False, UNSUPPORTED, 'lookaround (?< at byte 0'),
    (r'(?i)abc', False, UNSUPPORTED, 'inline flags (?i at byte 0'),
    (r'a(?s:.)', False, UNSUPPORTED, 'inline flags (?s at byte 1'),
    (r'(?-i:a)', False, UNSUPPORTED, 'inline flags'),
    (r'(?#note)a', False, UNSUPPORTED, 'comment group'),
    (r'(?>ab)', False, UNSUPPORTED, 'atomic group'),
    (r'(a)?(?(1)b|c)', False, UNSUPPORTED, 'conditional group (?( at byte 4'),
    (r'\bword\b', False, UNSUPPORTED, 'word boundary \\b at byte 0'),
    (r'a\B', False, UNSUPPORTED, 'anchor \\B at byte 1'),
    (r'\Aabc', False, UNSUPPORTED, 'anchor \\A at byte 0'),
    (r'abc\Z', False, UNSUPPORTED, 'anchor \\Z at byte 3'),
    (r'a++', False, UNSUPPORTED, 'possessive quantifier at byte 2'),
    (r'a{2}+', False, UNSUPPORTED, 'possessive quantifier at byte 4'),
    (r'a^b', False, UNSUPPORTED, 'anchor ^ not at the start of the pattern at byte 1'),
    (r'a$b', False, UNSUPPORTED, 'anchor $ not at the end of the pattern at byte 1'),
    (r'(^a)', False, UNSUPPORTED, 'at byte 1'),
    (r'a|^b', False, UNSUPPORTED, 'at byte 2'),
    (r'\0', False, UNSUPPORTED, 'octal escape at byte 0'),
    (r'[\1]', False, UNSUPPORTED, 'octal escape at byte 1'),
    (r'\N{DIGIT ONE}', False, UNSUPPORTED, 'named character'),
    (r'a{1001}', False, UNSUPPORTED, 'repeat count above 1000 at byte 1'),
    (r'a{0,1001}', False, UNSUPPORTED, 'repeat count above 1000'),
    (r'a{99999999999999999999}', False, UNSUPPORTED, 'repeat count above 1000'),
    ('(' * 65 + 'a' + ')' * 65, False, UNSUPPORTED, 'groups nested deeper than 64 at byte 64'),
    (r'[\ud800-\udfff]', False, UNSUPPORTED, 'matches no text'),
    (r'\x00', True, UNSUPPORTED, 'matches no text'),
    (r'a[\x00]b|\x00', True, UNSUPPORTED, 'matches no text'),
    (r'*a', False, SYNTAX, 'nothing to repeat at byte 0'),
    (r'a|*', False, SYNTAX, 'nothing to repeat at byte 2'),
    (r'(+)', False, SYNTAX, 'nothing to repeat at byte 1'),
    (r'{2}', False, SYNTAX, 'nothing to repeat at byte 0'),
    (r'^*', False, SYNTAX, 'nothing to repeat at byte 1'),
    (r'a**', False, SYNTAX, 'multiple repeat at byte 2'),
    (r'a{2}{3}', False, SYNTAX, 'multiple repeat at byte 4'),
    (r'a*??', False, SYNTAX, 'multiple repeat at byte 3'),
    (r'a{3,2}', False, SYNTAX, 'min repeat greater than max repeat at byte 1'),
    (r'(ab', False, SYNTAX, 'missing ) for the group at byte 0'),
    (r'ab)', False, SYNTAX, 'unbalanced parenthesis at byte 2'),
    (r'[ab', False, SYNTAX, 'unterminated character set at byte 0'),
    (r'[]', False, SYNTAX, 'unterminated character set at byte 0'),
    (r'[z-a]', False, SYNTAX, 'character range out of order at byte 1'),
    (r'[\d-z]', False, SYNTAX, 'bad character range at byte 1'),
    (r'[a-\d]', False, SYNTAX, 'bad character range at byte 1'),
    (r'\q', False, SYNTAX, 'bad escape \\q at byte 0'),
    (r'[\A]', False, SYNTAX, 'bad escape \\A at byte 1'),
    (r'ab\\' + '\\', False, SYNTAX, 'trailing backslash at byte 4'),
    (r'\x4', False, SYNTAX, 'incomplete escape \\x at byte 0'),
    (r'\u12G4', False, SYNTAX, 'incomplete escape \\u at byte 0'),
    (r'\U00110000', False, SYNTAX, 'beyond U+10FFFF at byte 0'),
    (r'(?P<1x>a)', False, SYNTAX, 'bad group name at byte 4'),
    (r'(?P<été>a)', False, UNSUPPORTED, 'non-ASCII group name at byte 4'),
    (r'(?P<x>a)(?P<x>b)', False, SYNTAX, 'redefinition of group name at byte 12'),
    (r'(?Xa)', False, SYNTAX, 'unknown extension (? at byte 0'),
]


def json_content(feed):
    """The string a JSON-string-mode sentence decodes to, or None when regex.h's escapes do
    not allow feed: raw characters but '"', '\\' and controls; \\" \\\\ \\/ \\b \\f \\n \\r \\t;
    \\u00XX for the other controls U+0001-U+001F (hex in either case)."""
    out, i = [], 0
    short = {'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r',
             't': '\t'}
    while i < len(feed):
        ch = feed[i]
        if ch == '"' or ord(ch) < 0x20:
            return None
        if ch != '\\':
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(feed):
            return None
        e = feed[i + 1]
        if e in short:
            out.append(short[e])
            i += 2
            continue
        h = feed[i + 2:i + 6]
        if e != 'u' or len(h) != 4 or not re.fullmatch(r'00[01][0-9a-fA-F]', h):
            return None
        v = int(h, 16)
        if v == 0 or v in (8, 9, 10, 12, 13):
            return None
        out.append(chr(v))
        i += 6
    return ''.join(out)


def python_pattern(p):
    """regex.c's pattern as Python's re writes it: (?<name> is (?P<name> there."""
    return re.sub(r'\(\?<(?![=!])', '(?P<', p)


def variants(s):
    """Near-misses of s: each character dropped, doubled and changed (a few each)."""
    out = []
    for i in range(len(s)):
        out.append(s[:i] + s[i + 1:])
        out.append(s[:i] + s[i] + s[i:])
        out.append(s[:i] + chr(ord(s[i]) ^ 1) + s[i + 1:])
        if len(out) > 30:
            break
    return out


def usable(s):
    """Whether s can be a test text: no surrogates (no UTF-8 form) and no U+0000 in JSON
    (the fixture reader refuses it)."""
    return not any(0xD800 <= ord(ch) <= 0xDFFF for ch in s) and '\x00' not in s


def feed_of(s):
    return json.dumps(s, ensure_ascii=False)[1:-1]


def build():
    cases = []
    for pattern, js, texts in CASES:
        rx = re.compile(python_pattern(pattern), re.ASCII)
        yes, no = [], []
        seen = set()
        pool = list(texts)
        for t in texts:
            if len(t) <= 40:
                pool += variants(t)
        for t in pool:
            if js:
                raw_ok = '\x00' not in t and rx.fullmatch(t) is not None
                f = feed_of(t)
                if not usable(f) or f in seen:
                    continue
                seen.add(f)
                assert json_content(f) == t or '\x00' in t, (pattern, t)
                (yes if raw_ok else no).append(f)
                # The raw text (no escapes) where it differs: the grammar decides by the
                # escape rules alone.
                if f != t and usable(t) and t not in seen:
                    seen.add(t)
                    d = json_content(t)
                    (yes if d is not None and rx.fullmatch(d) else no).append(t)
            else:
                if not usable(t) or t in seen:
                    continue
                seen.add(t)
                (yes if rx.fullmatch(t) else no).append(t)
        for p, f in EXTRA_FEEDS:
            if p == pattern and js and f not in seen and usable(f):
                seen.add(f)
                d = json_content(f)
                (yes if d is not None and rx.fullmatch(d) else no).append(f)
        assert yes and no, pattern
        cases.append({'re': pattern, 'json': js, 'yes': yes, 'no': no})
    refused = []
    for pattern, js, code, msg in REFUSED:
        # Python's verdict, for the record: SYNTAX patterns are ones it refuses too.
        try:
            re.compile(python_pattern(pattern))
            py_ok = True
        except (re.error, OverflowError):
            py_ok = False
        if code == SYNTAX:
            assert not py_ok, pattern
        refused.append({'re': pattern, 'json': js, 'code': code, 'message': msg})
    return {'about': 'generated by scripts/make_regex_cases.py; regenerate, do not edit',
            'cases': cases, 'refused': refused}


def check_walk(path):
    with open(path, encoding='utf-8') as f:
        walk = json.load(f)
    data = build()
    bad = total = 0
    for entry in walk['walks']:
        case = data['cases'][entry['case']]
        assert case['re'] == entry['re'], 'walk file from other cases: regenerate it'
        rx = re.compile(python_pattern(case['re']), re.ASCII)
        for h in entry['sentences']:
            total += 1
            raw = bytes.fromhex(h)
            try:
                text = raw.decode('utf-8')
            except UnicodeDecodeError:
                text = None
            if text is not None and case['json']:
                text = json_content(text)
            if text is None or not rx.fullmatch(text):
                bad += 1
                print('NOT A MATCH: %r  sentence %r' % (case['re'], raw), file=sys.stderr)
    print('%d sentences over %d patterns, %d bad' % (total, len(walk['walks']), bad))
    return 1 if bad or total == 0 else 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == '--check-walk':
        return check_walk(sys.argv[2])
    if len(sys.argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    data = build()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, 'w', encoding='utf-8') as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write('\n')
    n_texts = sum(len(c['yes']) + len(c['no']) for c in data['cases'])
    print('%d patterns, %d texts, %d refused patterns -> %s' %
          (len(data['cases']), n_texts, len(data['refused']), os.path.relpath(OUT)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
