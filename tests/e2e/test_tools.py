"""Tool calling through the official openai package: tools with tool_choice auto, required and
named, parallel_tool_calls, streamed tool_calls deltas assembled the way SDK users assemble them,
multi-turn chats that send calls and results back, pydantic_function_tool with the SDK's parse
helper, and the 400s. It does not test the answer layout's reader (tests/server/test_tool_calls.c)
nor the grammar (tests/engine).

The demo models have random weights: the tools' parameters are closed (enums, booleans, bounded
integers), so a seeded sample completes well within max_tokens; the seeds below complete on every
model and backend the e2e suites serve (phi3-demo, moe-demo, the CUDA emulator). Where the prompt
rather than the seed decides (calls or content under auto), a logit_bias on a token that fits only
there steers the sample."""
import json
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

from harness import MODEL_NAME

MAX_TOKENS = 400
MSGS = [{"role": "user", "content": "What is the weather in Paris? Also switch on the light."}]

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now.",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                   "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
                                  "unit": {"type": "string", "enum": ["c", "f"]}}}}}
LIGHT = {"type": "function", "function": {
    "name": "set_light", "description": "Switches the lamp.",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["on", "level"],
                   "properties": {"on": {"type": "boolean"},
                                  "level": {"type": "integer", "minimum": 0, "maximum": 10}}}}}
TOOLS = [WEATHER, LIGHT]


def check_weather(a):
    assert list(a) == ["city", "unit"], a
    assert a["city"] in ("Paris", "Rome", "Oslo") and a["unit"] in ("c", "f"), a


def check_light(a):
    assert list(a) == ["on", "level"], a
    assert type(a["on"]) is bool, a
    assert type(a["level"]) is int and 0 <= a["level"] <= 10, a


CHECKS = {"get_weather": check_weather, "set_light": check_light}


def _no_constant(name):
    raise AssertionError(f"non-standard JSON constant {name}")


def check_arguments(name, arguments, checks=CHECKS):
    """arguments is strict JSON (nothing around the value) that the tool's schema accepts."""
    assert isinstance(arguments, str) and arguments == arguments.strip(), repr(arguments)
    a = json.loads(arguments, parse_constant=_no_constant)
    assert isinstance(a, dict), arguments
    checks[name](a)
    return a


def check_calls(choice, checks=CHECKS, finish="tool_calls"):
    """A completed tool-call answer: finish_reason tool_calls (stop for a named tool_choice, as
    OpenAI ends forced calls), content null, well-formed calls. Returns [(name, arguments)]."""
    m = choice.message
    assert choice.finish_reason == finish, (choice.finish_reason, m)
    assert m.role == "assistant" and m.content is None and m.tool_calls, m
    ids = set()
    for tc in m.tool_calls:
        assert tc.type == "function" and tc.id.startswith("call_") and len(tc.id) > 5, tc
        ids.add(tc.id)
        assert tc.function.name in checks, tc
        check_arguments(tc.function.name, tc.function.arguments, checks)
    assert len(ids) == len(m.tool_calls), "tool call ids repeat"
    return [(tc.function.name, tc.function.arguments) for tc in m.tool_calls]


def chat(client, seed, **kw):
    args = dict(model=MODEL_NAME, messages=MSGS, tools=TOOLS, max_tokens=MAX_TOKENS, temperature=1.0,
                seed=seed)
    args.update(kw)
    return client.chat.completions.create(**args)


# Seeds. Required and named choices complete for nearly every seed (closed parameters); the ones
# below complete on every model and backend the suites serve. Which seeds make the model answer
# with content under auto, or make several calls, depends on the prompt, so those are looked up
# among SEED_CANDIDATES once per run (class Seeds).
SEED_AUTO = 2
SEEDS_REQUIRED = (2, 5)
SEED_NAMED = 5
SEED_PYDANTIC = 1
SEED_N2 = 7
SEED_FOLLOW = 1  # the turn after the tool results
SEED_CANDIDATES = range(32)
PROBE_TOKENS = 30  # enough for '{"tool_calls": [{"name": "get_weather", "arguments": ' to start a call
# Token ids of the demo models' tokenizer (phi3-demo and moe-demo share it). 'tool' fits only
# at the branch between calls and content.
TO_CALLS = {"10154": 30}
# The token '"}' of the demo models' tokenizer, made near-certain where allowed: it never fits
# before the answer's first branch, and in content it ends the answer.
CLOSE_QUOTE = {"9092": 100}


class Seeds:
    """Seeds looked up on first use: the first candidate whose auto answer starts with content
    (auto_content), and whose required answer completes with several calls (parallel); None when
    no candidate does."""

    def __init__(self, client):
        self.client = client
        self._found = {}

    def _first(self, key, pred):
        if key not in self._found:
            self._found[key] = next((s for s in SEED_CANDIDATES if pred(s)), None)
        return self._found[key]

    def _auto_start(self, seed):
        m = chat(self.client, seed, max_tokens=PROBE_TOKENS).choices[0].message
        return "calls" if m.tool_calls else "content" if m.content else None

    @property
    def auto_content(self):
        return self._first("auto_content", lambda s: self._auto_start(s) == "content")

    @property
    def parallel(self):
        def several(s):
            c = chat(self.client, s, tool_choice="required").choices[0]
            return c.finish_reason == "tool_calls" and len(c.message.tool_calls) > 1
        return self._first("parallel", several)


@pytest.fixture(scope="module")
def seeds(client):
    return Seeds(client)


def test_auto_calls(client):
    # Which branch a demo model takes under auto (calls or content) is set by the prompt more
    # than by the seed; a bias on the token 'tool', which fits only at that branch, steers it.
    r = chat(client, SEED_AUTO, logit_bias=TO_CALLS)  # tool_choice defaults to auto with tools
    calls = check_calls(r.choices[0])
    assert r.usage.completion_tokens < MAX_TOKENS
    # the same request with tool_choice spelt out is the same sample
    assert check_calls(chat(client, SEED_AUTO, tool_choice="auto", logit_bias=TO_CALLS).choices[0]) == calls
    # parallel_tool_calls false allows one call under auto too
    one = check_calls(chat(client, SEED_AUTO, logit_bias=TO_CALLS, parallel_tool_calls=False).choices[0])
    assert len(one) == 1, one


def test_auto_content(client, seeds):
    seed = seeds.auto_content
    assert seed is not None, "no candidate seed starts an auto answer with content"
    # The demo models seldom end a free string: a length cut shows the content decoded as it
    # grows, and a bias on the closing quote ends it within a few tokens, a whole answer.
    r = chat(client, seed, max_tokens=40)
    c = r.choices[0]
    assert c.finish_reason == "length" and not c.message.tool_calls, c
    assert isinstance(c.message.content, str) and c.message.content, c.message
    assert not c.message.content.startswith('{"') and not c.message.content.endswith('"}')
    r = chat(client, seed, logit_bias=CLOSE_QUOTE)
    c = r.choices[0]
    assert c.finish_reason == "stop" and isinstance(c.message.content, str) and not c.message.tool_calls, c
    assert r.usage.completion_tokens < 20


def test_required(client):
    for seed in SEEDS_REQUIRED:
        r = chat(client, seed, tool_choice="required")
        check_calls(r.choices[0])
        assert r.usage.completion_tokens < MAX_TOKENS


def test_parallel_and_not(client, seeds):
    seed = seeds.parallel
    assert seed is not None, "no candidate seed makes several calls"
    many = check_calls(chat(client, seed, tool_choice="required").choices[0])
    assert len(many) > 1, many
    one = check_calls(chat(client, seed, tool_choice="required", parallel_tool_calls=False).choices[0])
    assert len(one) == 1, one


def test_named(client):
    r = chat(client, SEED_NAMED, tool_choice={"type": "function", "function": {"name": "set_light"}})
    calls = check_calls(r.choices[0], finish="stop")
    assert [name for name, _ in calls] == ["set_light"]  # the named function, once


def test_tool_choice_none_is_text(client):
    r = chat(client, 0, tool_choice="none", max_tokens=8, extra_body={"ignore_eos": True})
    c = r.choices[0]
    assert c.finish_reason == "length" and isinstance(c.message.content, str) and not c.message.tool_calls
    # response_format may go with tools when tool_choice is none, and holds the answer
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    r = chat(client, 0, tool_choice="none",
             response_format={"type": "json_schema", "json_schema": {"name": "Ok", "schema": schema}})
    c = r.choices[0]
    assert c.finish_reason == "stop" and not c.message.tool_calls, c
    assert list(json.loads(c.message.content)) == ["ok"]


def test_tools_reach_the_prompt(client):
    """The tools' description (names, descriptions, parameter schemas: well over 100 tokens) is
    part of the prompt whenever the model may call them, whatever the chat template does with
    system messages; with tool_choice none it is left out."""
    plain = client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=1)
    none = chat(client, 0, tool_choice="none", max_tokens=1)
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens
    for choice in ("auto", "required", {"type": "function", "function": {"name": "set_light"}}):
        r = chat(client, 0, tool_choice=choice, max_tokens=1)
        assert r.usage.prompt_tokens > plain.usage.prompt_tokens + 100, (choice, r.usage, plain.usage)


def assemble(chunks):
    """Accumulates streamed tool_calls deltas by index, as SDK users do. Returns
    ({choice: {index: {id, type, name, arguments, pieces}}}, {choice: content}, {choice: finish})
    and checks each call's first delta (id, type, name, arguments "") and later ones (index and
    arguments only)."""
    calls, content, finish = {}, {}, {}
    for ch in chunks:
        for c in ch.choices:
            d = c.delta
            if d.content:
                content[c.index] = content.get(c.index, "") + d.content
            for tc in d.tool_calls or []:
                mine = calls.setdefault(c.index, {})
                if tc.index not in mine:
                    assert tc.index == len(mine), (tc.index, list(mine))
                    assert tc.id and tc.id.startswith("call_") and tc.type == "function", tc
                    assert tc.function.name and tc.function.arguments == "", tc
                    mine[tc.index] = {"id": tc.id, "type": tc.type, "name": tc.function.name,
                                      "arguments": "", "pieces": 0}
                else:
                    assert tc.id is None and tc.type is None and tc.function.name is None, tc
                    assert tc.function.arguments, tc
                    mine[tc.index]["arguments"] += tc.function.arguments
                    mine[tc.index]["pieces"] += 1
            if c.finish_reason:
                assert c.index not in finish, "two finish_reasons"
                finish[c.index] = c.finish_reason
    return calls, content, finish


def test_stream_tool_calls(client, seeds):
    seed = seeds.parallel
    assert seed is not None
    kw = dict(tool_choice="required")
    chunks = list(chat(client, seed, stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    calls, content, finish = assemble(chunks)
    assert finish == {0: "tool_calls"} and not content.get(0)
    got = [(c["name"], c["arguments"]) for _, c in sorted(calls[0].items())]
    assert len(got) > 1
    for name, arguments in got:
        check_arguments(name, arguments)
    assert len({c["id"] for c in calls[0].values()}) == len(got)
    assert sum(c["pieces"] for c in calls[0].values()) > len(got)  # really streamed
    # the finish chunk comes last before usage, with an empty delta
    fin = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert fin[0] is chunks[-2] and not fin[0].choices[0].delta.tool_calls
    # the stream is the same sample as the non-streamed request
    r = chat(client, seed, **kw)
    assert check_calls(r.choices[0]) == got
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_stream_named_and_content(client, seeds):
    kw = dict(tool_choice={"type": "function", "function": {"name": "set_light"}})
    calls, content, finish = assemble(chat(client, SEED_NAMED, stream=True, **kw))
    assert finish == {0: "stop"} and list(calls[0]) == [0]
    got = (calls[0][0]["name"], calls[0][0]["arguments"])
    assert check_calls(chat(client, SEED_NAMED, **kw).choices[0], finish="stop") == [got]
    # an answer without calls streams as plain content deltas
    seed = seeds.auto_content
    assert seed is not None
    calls, content, finish = assemble(chat(client, seed, max_tokens=40, stream=True))
    assert finish == {0: "length"} and not calls
    assert content.get(0) == chat(client, seed, max_tokens=40).choices[0].message.content
    calls, content, finish = assemble(chat(client, seed, logit_bias=CLOSE_QUOTE, stream=True))
    assert finish == {0: "stop"} and not calls
    assert content.get(0, "") == chat(client, seed, logit_bias=CLOSE_QUOTE).choices[0].message.content


def test_n2(client):
    r = chat(client, SEED_N2, n=2, tool_choice="required", parallel_tool_calls=False)
    assert [c.index for c in r.choices] == [0, 1]
    got = [check_calls(c) for c in r.choices]
    calls, _, finish = assemble(chat(client, SEED_N2, n=2, tool_choice="required", parallel_tool_calls=False,
                                     stream=True))
    assert finish == {0: "tool_calls", 1: "tool_calls"}
    for i in (0, 1):
        assert [(c["name"], c["arguments"]) for _, c in sorted(calls[i].items())] == got[i]


def test_length_cut(client):
    seed = SEEDS_REQUIRED[0]
    full = chat(client, seed, tool_choice="required")
    whole = check_calls(full.choices[0])
    k = full.usage.completion_tokens
    # the layout ending on the last allowed token is a whole answer
    exact = chat(client, seed, tool_choice="required", max_tokens=k)
    assert check_calls(exact.choices[0]) == whole
    # one token less leaves the layout open: length, even where the arguments are whole
    short = chat(client, seed, tool_choice="required", max_tokens=k - 1)
    c = short.choices[0]
    assert c.finish_reason == "length" and short.usage.completion_tokens == k - 1
    got = [(tc.function.name, tc.function.arguments) for tc in c.message.tool_calls or []]
    assert c.message.content is None and len(got) == len(whole)
    assert all(w[0] == g[0] and w[1].startswith(g[1]) for w, g in zip(whole, got)), got
    # earlier cuts, until one falls inside the last call's arguments
    cut = None
    for m in range(k - 2, max(k - 60, 0), -1):
        r = chat(client, seed, tool_choice="required", max_tokens=m)
        tcs = r.choices[0].message.tool_calls or []
        assert r.choices[0].finish_reason == "length"
        if len(tcs) == len(whole) and tcs[-1].function.arguments != whole[-1][1]:
            cut = (m, tcs[-1].function.arguments)
            break
    assert cut is not None
    m, text = cut
    assert whole[-1][1].startswith(text)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    # streamed: the same cut, finish_reason length
    calls, _, finish = assemble(chat(client, seed, tool_choice="required", max_tokens=m, stream=True))
    assert finish == {0: "length"}
    assert calls[0][len(whole) - 1]["arguments"] == text


def test_multi_turn(client):
    first = chat(client, SEEDS_REQUIRED[0], tool_choice="required")
    calls = check_calls(first.choices[0])
    msg = first.choices[0].message
    # the assistant message goes back as the SDK returned it (content None, refusal None, ...)
    history = MSGS + [msg] + [
        {"role": "tool", "tool_call_id": tc.id, "content": json.dumps({"temperature": 18, "sky": "clear"})}
        for tc in msg.tool_calls]
    r = chat(client, SEED_FOLLOW, messages=history, tool_choice="required")
    check_calls(r.choices[0])
    # the history made the prompt longer by the calls and the results
    assert r.usage.prompt_tokens > first.usage.prompt_tokens + 20
    # plain text after the results: tool_choice none, and no tools at all
    for kw in ({"tool_choice": "none"}, {"tools": openai.NOT_GIVEN}):
        r = chat(client, 1, messages=history, max_tokens=6, extra_body={"ignore_eos": True}, **kw)
        assert r.choices[0].finish_reason == "length" and isinstance(r.choices[0].message.content, str)
        assert not r.choices[0].message.tool_calls
    # the history as plain dicts, arguments that are not JSON, a second round of calls
    history2 = MSGS + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": calls[0][1]}},
            {"id": "call_b", "type": "function", "function": {"name": "set_light", "arguments": "{oops"}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18 C"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "error: bad JSON"}]},
        {"role": "system", "content": "Be brief."}]
    r = chat(client, SEED_FOLLOW, messages=history2, tool_choice="required")
    check_calls(r.choices[0])


class Lamp(BaseModel):
    on: bool
    level: int = Field(ge=0, le=10)
    room: Literal["hall", "kitchen"]


def test_pydantic_function_tool(client):
    if not hasattr(openai, "pydantic_function_tool"):
        pytest.fail("the pinned openai package lacks pydantic_function_tool")
    tool = openai.pydantic_function_tool(Lamp)
    assert tool["function"]["name"] == "Lamp" and tool["function"].get("strict") is True

    def check_lamp(a):
        assert Lamp.model_validate(a).model_dump() == a and list(a) == ["on", "level", "room"], a

    r = client.beta.chat.completions.parse(model=MODEL_NAME, messages=MSGS, tools=[tool], tool_choice="required",
                                           max_tokens=MAX_TOKENS, temperature=1.0, seed=SEED_PYDANTIC)
    c = r.choices[0]
    calls = check_calls(c, {"Lamp": check_lamp})
    for tc, (_, arguments) in zip(c.message.tool_calls, calls):
        assert isinstance(tc.function.parsed_arguments, Lamp)
        assert tc.function.parsed_arguments.model_dump() == json.loads(arguments)


# (id, extra request fields, param, code, a piece of the message)
DUP = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
ERROR_CASES = [
    ("empty_tools", {"tools": []}, "tools", "invalid_value", "empty"),
    ("duplicate_names", {"tools": [WEATHER, DUP]}, "tools", "invalid_value", "get_weather"),
    ("unknown_named_tool", {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "fly"}}},
     "tool_choice", "invalid_value", "fly"),
    ("bad_name", {"tools": [{"type": "function", "function": {"name": "get weather!"}}]},
     "tools[0].function.name", "invalid_value", "tools[0].function.name"),
    ("long_name", {"tools": [{"type": "function", "function": {"name": "f" * 65}}]},
     "tools[0].function.name", "invalid_value", "64"),
    ("missing_name", {"tools": [{"type": "function", "function": {"description": "x"}}]},
     "tools[0].function.name", "missing_required_parameter", "tools[0].function.name"),
    ("not_function", {"tools": [{"type": "retrieval", "function": {"name": "f"}}]},
     "tools[0].type", "invalid_value", "function"),
    ("logprobs", {"tools": TOOLS, "logprobs": True}, "logprobs", "unsupported_value", "tools"),
    ("response_format", {"tools": TOOLS, "response_format": {"type": "json_object"}}, "tools",
     "invalid_value", "response_format"),
    ("guided_regex", {"tools": TOOLS, "extra_body": {"guided_regex": "a+"}}, "tools", "invalid_value",
     "guided_*"),
    ("unsupported_schema", {"tools": [WEATHER, {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "multipleOf": 2}}}}}]},
     "tools", "unsupported_value", "tools[1].function.parameters.properties.n.multipleOf"),
    ("choice_without_tools", {"tool_choice": "required"}, "tool_choice", "invalid_value", "tools"),
    ("choice_bad_string", {"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice", "invalid_value", "required"),
]


@pytest.mark.parametrize("extra,param,code,piece", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_errors(client, extra, param, code, piece):
    args = dict(model=MODEL_NAME, messages=MSGS, max_tokens=5)
    args.update(extra)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**args)
    err = e.value
    assert err.status_code == 400
    body = err.response.json()
    assert set(body) == {"error"} and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param and err.body["param"] == param, body
    assert body["error"]["code"] == code and err.code == code, body
    assert piece in body["error"]["message"], body


def test_serves_after_errors(server, client):
    check_calls(chat(client, SEEDS_REQUIRED[0], tool_choice="required").choices[0])
    assert server.wait_idle() == (0, 0, 0)
