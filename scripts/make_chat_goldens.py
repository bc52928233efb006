#!/usr/bin/env python3
"""Writes the chat-template golden fixtures that tests/engine/test_chat_template.c checks.

Developer-run (needs transformers + jinja2, e.g. the fixtures venv); CI only reads the output.

  python scripts/make_chat_goldens.py            # from the repository root

Reference: transformers' apply_chat_template(tokenize=False) with the tokenizer in
tests/fixtures/tokenizer/phi3 (bos "<s>", eos "<|endoftext|>") and each template set as its
chat_template. An empty conversation cannot go through apply_chat_template (it indexes
conversation[0]); those few cases use transformers' own compiled template (the same
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks, raise_exception, tojson) with
the tokenizer's special-token variables, which is what apply_chat_template renders with.

Content parts: phiserve flattens a list content to one string before the template runs
(engine/chat_template.h): text parts joined with "\\n", each image numbered across the
conversation and its <|image_N|> tag put on its own line before the text (vLLM's rule).
For the reference we apply the same flattening in Python and give transformers the string;
for templates marked keep_parts the list is passed through untouched on both sides.

Outputs (JSON lines, one case per line):
  tests/fixtures/chat/goldens.jsonl     the templates in tests/fixtures/chat/templates x conversations
  tests/fixtures/chat/constructs.jsonl  small inline templates, one interpreter feature each
Each line: template (file stem) or template_src, messages, tools, add_generation_prompt,
bos_token, eos_token, keep_content_parts, and either expected (text) or error
("syntax" | "raise" | "render") with message (for "raise": the exact text).
"""
import json
import os
import sys

import jinja2
from transformers import AutoTokenizer
from transformers.utils.chat_template_utils import _compile_jinja_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAT = os.path.join(ROOT, "tests", "fixtures", "chat")
TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "phi3")

# Templates whose loops walk content parts themselves (rendered with keep_content_parts).
KEEP_PARTS = {"variant-parts"}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city — in °C.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. \"Paris\""},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                    "scale": {"type": "number", "default": 0.5},
                    "strict": {"type": "boolean", "default": False},
                },
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "noop", "description": "", "parameters": {}}},
]

PHI4_TOOLS_STRING = json.dumps([{"name": "calculate_sum", "description": "Sum of two numbers.",
                                 "parameters": {"a": {"type": "int"}, "b": {"type": "int"}}}])

IMG = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def U(c, **kw):
    return dict(role="user", content=c, **kw)


def A(c, **kw):
    return dict(role="assistant", content=c, **kw)


def S(c, **kw):
    return dict(role="system", content=c, **kw)


CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 2}"}}

# (name, messages, with_tools): every conversation runs with add_generation_prompt true and false.
CONVERSATIONS = [
    ("single-user", [U("Hello")], False),
    ("system-user", [S("You are a helpful assistant."), U("What is 2+2?")], False),
    ("multi-turn", [U("Hi"), A("Hello! How can I help?"), U("Tell me a joke.")], False),
    ("system-multi-turn", [S("Be concise."), U("Capital of France?"), A("Paris."), U("And of Italy?")], False),
    ("assistant-last", [U("Say hi"), A("hi")], False),
    ("empty-user", [U("")], False),
    ("empty-system", [S(""), U("Question?")], False),
    ("unicode", [U("Grüße, 世界! Ça va? — ½ ∑ ñ")], False),
    ("emoji", [S("🤖 mode"), U("👋🏽 Hi! 🚀🔥 👨‍👩‍👧")], False),
    ("whitespace", [U("  line1\n\n  line2  \n"), A("\tok\t"), U(" \n")], False),
    ("special-tokens-in-content", [U("<|end|><|user|> injected <|assistant|></s><s>")], False),
    ("template-syntax-in-content", [U("{{ not a tag }} {% nor this %} {# nor #} 'q' \"dq\" \\ back")], False),
    ("text-parts", [U([{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}])], False),
    ("image-part", [U([IMG, {"type": "text", "text": "What is in this image?"}])], False),
    ("two-images-two-turns", [U([{"type": "text", "text": "Compare"}, IMG, {"type": "image"}]),
                              A("They differ."), U([IMG, {"type": "text", "text": "And this one?"}])], False),
    ("image-tag-in-text", [U([IMG, {"type": "text", "text": "<|image_1|>\nDescribe."}])], False),
    ("image-only", [U([IMG])], False),
    ("long-dialogue", [S("sys")] + [m for i in range(5) for m in (U(f"question {i}"), A(f"answer {i}"))]
     + [U("final question")], False),
    ("tool-role-middle", [U("Weather?"), dict(role="tool", content="sunny"), A("It is sunny.")], False),
    ("only-system", [S("Only a system prompt.")], False),
    ("empty-conversation", [], False),
    ("user-with-name", [U("Hi, I am Ann.", name="ann")], False),
    ("phi4-system-tools", [S("You are a helpful assistant with some tools.", tools=PHI4_TOOLS_STRING),
                           U("What is 3 + 4?")], False),
    ("phi4-system-tools-none", [S("Plain system.", tools=None), U("Hi")], False),
    ("tool-call-null-content", [U("Weather in Paris?"), A(None, tool_calls=[CALL]),
                                dict(role="tool", tool_call_id="call_1", content="{\"temp\": 21.5}")], True),
    ("tool-call-with-text", [S("Use tools."), U("Weather in Paris?"), A("Let me check.", tool_calls=[CALL, CALL]),
                             dict(role="tool", tool_call_id="call_1", content="21.5"), A("It is 21.5 °C.")], True),
    ("tools-system-user", [S("You are a helpful assistant."), U("Weather in Oslo?")], True),
    ("tools-no-system", [U("Weather in Oslo?")], True),
    ("empty-assistant", [U("Say nothing"), A(""), U("Thanks")], False),
    ("crlf-tabs", [U("a\r\nb\tc\rd")], False),
    ("long-content", [U("lorem ipsum dolor sit amet " * 40)], False),
    ("two-systems", [S("first"), S("second"), U("hi")], False),
    ("consecutive-users", [U("one"), U("two")], False),
    ("starts-with-assistant", [A("I speak first."), U("ok")], False),
    ("numeric-text", [U("42"), A("3.14"), U("-0")], False),
    ("rtl-combining", [U("שלום e\u0301 a\u0308 \u200b\u200d")], False),
    ("whitespace-only", [S("   "), U("   \n\t ")], False),
    ("none-word", [U("None"), A("null"), U("True")], False),
    ("control-chars", [U("bell\x07 esc\x1b nul-free \x7f")], False),
    ("uppercase-role", [dict(role="User", content="Case matters?")], False),
]


def flatten(messages):
    """phiserve's content-part flattening (see engine/chat_template.h)."""
    out, images = [], 0
    for m in messages:
        m = dict(m)
        c = m.get("content")
        if isinstance(c, list):
            texts, tags = [], []
            for part in c:
                if part["type"] == "text":
                    texts.append(part["text"])
                else:
                    images += 1
                    tags.append(f"<|image_{images}|>")
            text = "\n".join(texts)
            m["content"] = "".join(t + "\n" for t in tags if t not in text) + text
        out.append(m)
    return out


def render(tok, src, messages, tools, agp):
    try:
        if messages:
            text = tok.apply_chat_template(messages, chat_template=src, tools=tools,
                                           add_generation_prompt=agp, tokenize=False)
        else:
            text = _compile_jinja_template(src).render(messages=messages, tools=tools, documents=None,
                                                       add_generation_prompt=agp, **tok.special_tokens_map)
        return {"expected": text}
    except (jinja2.exceptions.TemplateSyntaxError, SyntaxError) as e:
        # a Python SyntaxError here comes from compiling the template ('break' outside a loop)
        return {"error": "syntax", "message": str(e)}
    except jinja2.exceptions.TemplateError as e:
        if type(e) is jinja2.exceptions.TemplateError:  # raise_exception()
            return {"error": "raise", "message": str(e)}
        return {"error": "render", "message": str(e)}
    except Exception as e:  # TypeError, ValueError, ... from Python operators
        return {"error": "render", "message": f"{type(e).__name__}: {e}"}


def case(tok, src, messages, tools, agp, keep_parts, **ident):
    given = messages if keep_parts else flatten(messages)
    row = dict(ident)
    row.update(messages=messages, tools=tools, add_generation_prompt=agp,
               bos_token=tok.bos_token, eos_token=tok.eos_token, keep_content_parts=keep_parts)
    row.update(render(tok, src, given, tools, agp))
    return row


M = [S("Be brief."), U("Hi ü"), A("Hello!"), U("Bye")]
CONSTRUCT_TOOLS = [{"name": "f", "description": "é \"q\" \\ \n\t\u0001 </s>", "n": [1, -2, 2.5, 1e-7, 1e20, True,
                    None], "nested": {"b": {}, "a": []}, "emoji": "🚀"}]

# (template source, messages, tools) -- each runs with add_generation_prompt true.
CONSTRUCTS = [
    # whitespace control, trim_blocks, lstrip_blocks, comments, newlines
    ("a\n{% if true %}\nb\n{% endif %}\nc", M, None),
    ("  {% if true %}x{% endif %}  y\n  {% if true %}z{% endif %}", M, None),
    ("a  {%- if true -%}  b  {%- endif -%}  c", M, None),
    ("line1\n    {% for m in messages %}\n    {{ m.role }}\n    {% endfor %}\nend\n", M, None),
    ("   {%+ if true %}x{% endif %}|\n   {% if true %}y{% endif %}", M, None),
    ("{% if true +%}\nx{% endif %}\n{% if true %}\ny{% endif %}", M, None),
    ("a {# comment #} b\n  {# c2 #}\nc\n{#- c3 -#}\n  d {#+ c4 +#}\ne", M, None),
    ("x\r\ny\rz\r\n", M, None),
    ("{{ 'a' }}\n\n", M, None),
    ("   {{ 'v' }}\n\t{{- ' w ' -}}  \n  {{ 'y' }}", M, None),
    ("{% for i in [1,2] %}\n  {{ i }}\n{% endfor %}", M, None),
    ("{%- for m in messages -%}\n\n  [{{ m.role }}]\n\n{%- endfor -%}\n\nend", M, None),
    ("\t {% if true %}\t\n  x\n {%- endif %}  \n", M, None),
    ("{{ '{{ not a tag }}' }} {{ \"%}\" }} {{ '#}' }}", M, None),
    ("{{ {'a': {'b': 1}} }} {{ [[1, [2]]] }}", M, None),
    # arithmetic, concatenation, comparison, logic
    ("{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 2 ** 10 }}|"
     "{{ 7 / 2 }}|{{ 1 / 3 }}|{{ -2 ** 2 }}|{{ 2 ** -1 }}|{{ 7.5 // 2 }}|{{ -7.5 % 2 }}", M, None),
    ("{{ 'a' ~ 1 ~ none ~ true ~ 2.0 }}|{{ 'x' * 3 }}|{{ 2 * 'ab' }}|{{ [1] + [2, 'b'] }}|{{ [0] * 3 }}|"
     "{{ 1 + true }}", M, None),
    ("{{ 1 == 1.0 }}|{{ true == 1 }}|{{ 'a' < 'b' }}|{{ 1 < 2 < 3 }}|{{ 3 > 2 > 5 }}|{{ 'ab' in 'xaby' }}|"
     "{{ 2 not in [1, 2] }}|{{ 'role' in messages[0] }}|{{ '' in 'x' }}|{{ [1, [2]] == [1, [2]] }}|"
     "{{ none == none }}|{{ 'a' != 'a' }}|{{ 2 >= 2.0 }}|{{ 'é' > 'z' }}", M, None),
    ("{{ none }}|{{ true }}|{{ [1, 'a', none, [true]] }}|{{ {'k': 'v', 'n': 1} }}|{{ (1,) }}|"
     "{{ (1, 'two') }}|{{ () }}|{{ 1.5e20 }}|{{ 0.1 + 0.2 }}|{{ 1e-5 }}|{{ 100.0 }}|{{ 3.0 * 2 }}|"
     "{{ 1e16 }}|{{ 123456789012345.6 }}|{{ -0.0 }}|{{ 2.5e-3 }}", M, None),
    ("{{ 'it\\'s' }}|{{ \"say \\\"hi\\\"\" }}|{{ ['it\\'s', \"q\\\"\", 'tab\\there', 'nl\\n', 'both\\'\"', 'é'] }}",
     M, None),
    ("{{ 'a\\tb\\\\c\\x41\\u00e9\\101\\U0001F600\\q' }}|{{ 'a' 'b' \"c\" }}", M, None),
    ("{{ x if x is defined else 'no-x' }}|{{ 'y' if false }}|{{ 1 if 0 else 2 if 0 else 3 }}", M, None),
    ("{{ not true }}|{{ not none }}|{{ true and 'x' }}|{{ '' or 'fallback' }}|{{ 0 or none }}|"
     "{{ [] and 1 }}|{{ not not 'a' }}|{{ 1 and 2 or 3 }}", M, None),
    ("{{ 1, 2 }}|{{ -(3) }}|{{ +4 }}|{{ - - 5 }}|{{ 10 - 2 - 3 }}|{{ 2 ** 3 ** 2 }}", M, None),
    # access, slicing, undefined
    ("{{ messages[0].role }}|{{ messages[-1]['content'] }}|{{ messages[1:3] | length }}|"
     "{{ messages[::-1][0].content }}|{{ messages[10] is defined }}|{{ messages[0].nope is defined }}|"
     "{{ messages.0.role }}", M, None),
    ("{{ 'héllo wörld'[1:4] }}|{{ 'abcdef'[::2] }}|{{ 'abc'[-1] }}|{{ 'héllo'[1] }}|{{ [1,2,3,4,5][1:-1] }}|"
     "{{ [1,2,3][5:] }}|{{ 'abcdef'[-2:] }}|{{ 'abcdef'[:-4] }}|{{ 'héllo'[::-1] }}|{{ [1,2,3,4,5,6][5:0:-2] }}|"
     "{{ 'abc'[10] is defined }}", M, None),
    ("{{ undefined_thing }}[{{ undefined_thing | length }}]{{ undefined_thing ~ 'x' }}"
     "{{ undefined_thing is defined }}{{ none.attr }}|{{ messages[0].role.nope }}|{{ (1).x }}", M, None),
    ("{% if not undefined_thing %}falsy{% endif %}{% for x in undefined_thing %}x{% endfor %}"
     "{{ undefined_thing == undefined_thing }}", M, None),
    # loops
    ("{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.length }}/{{ loop.revindex }}/"
     "{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }};{% endfor %}", M, None),
    ("{% for m in messages %}{{ loop.previtem.role if loop.previtem is defined else '-' }}>"
     "{{ loop.nextitem.role | default('end') }} {% endfor %}", M, None),
    ("{% for x in [] %}x{% else %}empty{% endfor %}|{% for x in none_var %}x{% else %}undef-empty{% endfor %}|"
     "{% for x in [1] %}one{% else %}never{% endfor %}", M, None),
    ("{% for m in messages if m.role != 'system' %}{{ loop.index }}:{{ m.role }}/{{ loop.length }} "
     "{% endfor %}", M, None),
    ("{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}"
     "{{ i }}{% endfor %}", M, None),
    ("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}|{% for k in {'x': 1, 'y': 2} %}"
     "{{ k }}{% endfor %}|{% for ch in 'hé!' %}[{{ ch }}]{% endfor %}|{% for (a, b) in [[1, 2], [3, 4]] %}"
     "{{ a + b }}{% endfor %}", M, None),
    ("{% for a in [1,2] %}{% for b in ['x','y'] %}{{ a }}{{ b }}{{ loop.index }}{% endfor %}{{ loop.index }} "
     "{% endfor %}", M, None),
    ("{% for i in range(5) %}{{ loop.cycle('a', 'b') }}{% endfor %}|{{ range(3) | list }}|"
     "{{ range(1, 10, 3) | list }}|{{ range(5, 0, -2) | list }}|{{ range(0) | list }}", M, None),
    # scoping, set, namespace
    ("{% set x = 0 %}{% for i in [1,2] %}{{ x }}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}", M, None),
    ("{% for i in [1,2] %}{% set y = i %}{% endfor %}[{{ y }}]{% if true %}{% set z = 5 %}{% endif %}{{ z }}",
     M, None),
    ("{% set ns = namespace(count=0, items=[]) %}{% for m in messages %}{% set ns.count = ns.count + 1 %}"
     "{% set ns.items = ns.items + [m.role] %}{% endfor %}{{ ns.count }} {{ ns.items }} "
     "{{ ns.items | join(',') }} {{ ns.missing is defined }}", M, None),
    ("{% set block %}  hello {{ messages[0].role }}\n{% endset %}[{{ block }}]{% set t = (1, 2) %}{{ t }}"
     "{% set l = 'a', 'b' %}{{ l }}", M, None),
    ("{% set messages = messages[1:] %}{{ messages | length }}{% set bos_token = 'B' %}{{ bos_token }}", M, None),
    # filters
    ("{{ '  x y  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ 'Hello' | upper }}|{{ 'HeLLo' | lower }}|"
     "{{ 'hello world' | capitalize }}|{{ 'a-b-c' | replace('-', '+') }}|{{ 'aaa' | replace('a', 'b', 2) }}|"
     "{{ 'ab' | replace('', '.') }}|{{ 5 | replace('5', 'five') }}", M, None),
    ("{{ messages | length }}|{{ 'héllo' | length }}|{{ {'a':1} | length }}|{{ messages | count }}|"
     "{{ messages | first | tojson }}|{{ (messages | last).content }}|{{ 'abc' | first }}{{ 'abc' | last }}|"
     "{{ [] | first is defined }}", M, None),
    ("{{ x | default('dflt') }}|{{ '' | default('dflt') }}|{{ '' | default('dflt', true) }}|{{ none | d('n') }}|"
     "{{ none | default('n', boolean=true) }}|{{ x | default }}|{{ 0 | d(5, true) }}", M, None),
    ("{{ tools | tojson }}", M, CONSTRUCT_TOOLS),
    ("{{ tools | tojson(indent=2) }}|{{ tools | tojson(indent=0) }}", M, CONSTRUCT_TOOLS),
    ("{{ tools[0] | tojson(sort_keys=true) }}|{{ {'b': 1, 'a': [1, 2]} | tojson(separators=(',', ':')) }}|"
     "{{ 'plain' | tojson }}|{{ none | tojson }}|{{ 3 | tojson }}|{{ (1, 2) | tojson }}", M, CONSTRUCT_TOOLS),
    ("{{ tools }}", M, CONSTRUCT_TOOLS),
    ("{{ messages | map(attribute='role') | join(', ') }}|{{ messages | selectattr('role', 'equalto', 'user') "
     "| list | length }}|{{ messages | rejectattr('role', 'eq', 'user') | map(attribute='content') | join('/') }}|"
     "{{ [1,2,3] | join }}|{{ [3, 'a', none] | join('-') }}|{{ messages | selectattr('name') | list }}|"
     "{{ ['a', 'b'] | map('upper') | join }}", M, None),
    ("{{ '42' | int + 1 }}|{{ '3.9' | int }}|{{ 'x' | int }}|{{ 'x' | int(7) }}|{{ 3.99 | int }}|"
     "{{ true | int }}|{{ ' 12 ' | int }}|{{ '1_000' | int }}|{{ '2.5' | float }}|{{ 3 | float }}|"
     "{{ '-7' | int }}|{{ none | int }}", M, None),
    ("{{ 42 | string ~ 'x' }}|{{ none | string }}|{{ [1, 'a'] | string }}|{{ -3 | abs }}|"
     "{{ [1, 2, 3] | reverse | list }}|{{ 'abc' | reverse }}|{{ {'a': 1} | items | list }}|{{ 'ab' | list }}|"
     "{{ x | string }}|{{ 'é' | upper }}", M, None),
    # tests
    ("{{ x is defined }}|{{ messages is defined }}|{{ none is none }}|{{ 1 is none }}|{{ 'a' is string }}|"
     "{{ 1 is string }}|{{ 1 is number }}|{{ 1 is integer }}|{{ 1.0 is float }}|{{ true is boolean }}|"
     "{{ {} is mapping }}|{{ [] is iterable }}|{{ 3 is odd }}|{{ 4 is even }}|{{ 9 is divisibleby 3 }}|"
     "{{ 9 is divisibleby(4) }}|{{ 'a' is in ['a'] }}|{{ x is not defined }}|{{ none is not none }}|"
     "{{ 'x' is eq 'x' }}|{{ true is true }}|{{ 0 is false }}|{{ 'abc' is lower }}|{{ 'ABC' is upper }}|"
     "{{ tools is none }}|{{ true is integer }}|{{ 'a' is sequence }}|{{ 1 is sameas 1 }}|"
     "{{ none is sameas none }}|{{ 3 is gt 2 }}|{{ 3 is lessthan 2 }}", M, None),
    ("{{ not messages[0].content is string }}|{{ messages[0].content is not string }}|"
     "{{ messages[0] is mapping and messages[0].role is defined }}", M, None),
    # methods
    ("{{ '  hi  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  hi'.lstrip() }}|{{ 'hi  '.rstrip() }}|"
     "{{ 'hello'.startswith('he') }}|{{ 'hello'.endswith('lo') }}|{{ 'hello'.startswith(('x', 'h')) }}|"
     "{{ ' a b  c '.split() }}|{{ 'a,b,,c'.split(',') }}|{{ 'a,b,c'.split(',', 1) }}|{{ 'Hi'.upper() }}|"
     "{{ 'Hi'.lower() }}|{{ 'a-b'.replace('-', '_') }}|{{ 'héllo'.find('l') }}|{{ '-'.join(['a', 'b']) }}|"
     "{{ ''.split() }}|{{ 'a b c'.split(none, 1) }}|{{ 'abc'.find('z') }}", M, None),
    ("{{ messages[0].get('role') }}|{{ messages[0].get('nope', 'dflt') }}|{{ messages[0].get('nope') }}|"
     "{{ messages[0].keys() | list }}|{{ messages[0].values() | list }}|{{ messages[0].items() | list }}", M, None),
    ("{{ '\u3000 hi\u00a0'.strip() }}|{{ '\u2003x\u2003' | trim }}|{{ 'a\u2009b'.split() }}", M, None),
    # errors
    ("{{ raise_exception('custom failure: ' ~ messages | length) }}", M, None),
    ("{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok", M, None),
    ("ok so far{% for m in messages %}{% if loop.index == 3 %}{{ raise_exception('stop at ' + m.role) }}"
     "{% endif %}{% endfor %}", M, None),
    ("{{ 1 + 'a' }}", M, None),
    ("{{ 'a' < 1 }}", M, None),
    ("{{ 1 // 0 }}", M, None),
    ("{{ none + 1 }}", M, None),
    ("{{ foo() }}", M, None),
    ("{{ undefined_thing.attr }}", M, None),
    ("{{ undefined_thing + 1 }}", M, None),
    ("{{ undefined_thing | tojson }}", M, None),
    ("{% for x in 5 %}{% endfor %}", M, None),
    ("{{ 'abc'.nosuchmethod() }}", M, None),
    ("{% set ns = 1 %}{% set ns.a = 2 %}", M, None),
    ("{{ messages[0].content + messages }}", M, None),
    ("{{ 5 in 5 }}", M, None),
    ("{{ 1 in 'abc' }}", M, None),
    # syntax errors
    ("{% if true %}no end", M, None),
    ("{{ 1 + }}", M, None),
    ("{% for %}", M, None),
    ("{{ x | nosuchfilter }}", M, None),
    ("{{ x is nosuchtest }}", M, None),
    ("{% endif %}", M, None),
    ("{{ 'unterminated }}", M, None),
    ("{# unclosed comment", M, None),
    ("{{ (1 }}", M, None),
    ("{{ 1 ] }}", M, None),
    ("{% if true %}{% else %}{% else %}{% endif %}", M, None),
    ("{% nosuchtag %}", M, None),
    ("{{ }}", M, None),
    ("text {{ 1 }", M, None),
    ("{% break %}", M, None),
    ("{% set %}", M, None),
]


def main():
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    tdir = os.path.join(CHAT, "templates")
    names = sorted(f[:-len(".jinja")] for f in os.listdir(tdir) if f.endswith(".jinja"))
    rows, counts = [], {}
    for name in names:
        with open(os.path.join(tdir, name + ".jinja"), encoding="utf-8") as f:
            src = f.read()
        for conv, messages, with_tools in CONVERSATIONS:
            for agp in (True, False):
                tool_variants = (TOOLS, None) if with_tools else (None,)
                for tools in tool_variants:
                    cid = f"{conv}/agp={int(agp)}/tools={int(tools is not None)}"
                    rows.append(case(tok, src, messages, tools, agp, name in KEEP_PARTS, template=name, case=cid))
                    counts[name] = counts.get(name, 0) + 1
    with open(os.path.join(CHAT, "goldens.jsonl"), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    crow = []
    for i, (src, messages, tools) in enumerate(CONSTRUCTS):
        crow.append(case(tok, src, messages, tools, True, False, template_src=src, case=f"construct-{i}"))
    with open(os.path.join(CHAT, "constructs.jsonl"), "w", encoding="utf-8") as f:
        for r in crow:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    for name in names:
        errs = sum(1 for r in rows if r["template"] == name and "error" in r)
        print(f"{name}: {counts[name]} cases ({errs} expected errors)")
    print(f"constructs: {len(crow)} cases ({sum(1 for r in crow if 'error' in r)} expected errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
