"""Structured output through the official openai package: response_format json_object and
json_schema (pydantic models via the SDK's parse helper, raw schemas, streaming, n > 1, the legacy
completions endpoint), the 400s for schemas outside the supported subset, and the length cut.
It does not test the grammar compiler itself (tests/engine) nor request parsing alone (tests/server).

The demo models have random weights and know nothing of JSON: the schemas are small and closed
(booleans, enums, integers, short strings, short arrays), so a seeded sample completes well within
max_tokens; the seeds below complete on every model and backend the e2e suites serve."""
import json
from typing import Annotated, List, Literal, Optional

import openai
import pytest
from pydantic import BaseModel, Field, StringConstraints

from harness import MODEL_NAME

MSGS = [{"role": "user", "content": "Describe a pet as JSON."}]
MAX_TOKENS = 400
KINDS = ("cat", "dog", "fish")
PET_KEYS = ["alive", "kind", "name", "age", "tags", "note"]


class Pet(BaseModel):
    alive: bool
    kind: Literal["cat", "dog", "fish"]
    name: Annotated[str, StringConstraints(max_length=8)]
    age: Annotated[int, Field(ge=0, le=30)]
    tags: Annotated[List[bool], Field(max_length=2)]
    note: Optional[Annotated[str, StringConstraints(max_length=4)]]


def pet_format(strict=None):
    """A json_schema response_format with pydantic's own (non-strict) schema of Pet."""
    js = {"name": "Pet", "schema": Pet.model_json_schema()}
    if strict is not None:
        js["strict"] = strict
    return {"type": "json_schema", "json_schema": js}


def _no_constant(name):
    raise AssertionError(f"non-standard JSON constant {name}")


def _check_strings(v):
    """Every string is valid Unicode without U+0000 (no \\u escapes of surrogates or NUL)."""
    if isinstance(v, str):
        v.encode("utf-8")  # raises on a lone surrogate
        assert "\x00" not in v
    elif isinstance(v, dict):
        for k, x in v.items():
            _check_strings(k)
            _check_strings(x)
    elif isinstance(v, list):
        for x in v:
            _check_strings(x)


def strict_json(text):
    """The value of text, which must be strict JSON with nothing after the value."""
    assert isinstance(text, str) and text, repr(text)
    assert text == text.rstrip(), f"trailing text after the value: {text!r}"
    v = json.loads(text, parse_constant=_no_constant)
    _check_strings(v)
    return v


def check_pet(text):
    """Validates a Pet by hand (no pydantic): the members in schema order, their types and bounds."""
    v = strict_json(text)
    assert isinstance(v, dict), text
    assert list(v) == PET_KEYS, text
    assert type(v["alive"]) is bool
    assert v["kind"] in KINDS
    assert type(v["name"]) is str and len(v["name"]) <= 8
    assert type(v["age"]) is int and 0 <= v["age"] <= 30
    assert type(v["tags"]) is list and len(v["tags"]) <= 2
    assert all(type(t) is bool for t in v["tags"])
    assert v["note"] is None or (type(v["note"]) is str and len(v["note"]) <= 4)
    return v


def test_json_object(client):
    for seed in (1, 2):
        r = client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=MAX_TOKENS,
                                           temperature=1.0, seed=seed,
                                           response_format={"type": "json_object"})
        c = r.choices[0]
        assert c.finish_reason == "stop", (seed, c.message.content)
        assert isinstance(strict_json(c.message.content), dict)
        assert c.message.content.endswith("}")
        assert r.usage.completion_tokens < MAX_TOKENS


def test_parse_pydantic_model(client):
    for seed in (0, 1):
        r = client.beta.chat.completions.parse(model=MODEL_NAME, messages=MSGS, max_tokens=MAX_TOKENS,
                                               temperature=1.0, seed=seed, response_format=Pet)
        c = r.choices[0]
        assert c.finish_reason == "stop", (seed, c.message.content)
        assert isinstance(c.message.parsed, Pet)
        hand = check_pet(c.message.content)
        assert c.message.parsed.model_dump() == hand


def test_stream_json_schema(client):
    kw = dict(model=MODEL_NAME, messages=MSGS, max_tokens=MAX_TOKENS, temperature=1.0, seed=4,
              response_format=pet_format(strict=True))
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    with_choices = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    check_pet(text)
    finals = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
    assert finals == ["stop"] and with_choices[-1].choices[0].finish_reason == "stop"
    assert sum(1 for c in with_choices if c.choices[0].delta.content) > 1  # really streamed
    # the stream is the same sample as the non-streamed request
    r = client.chat.completions.create(**kw)
    assert r.choices[0].message.content == text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_n3_each_choice_valid(client):
    r = client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=MAX_TOKENS, n=3, seed=3,
                                       temperature=1.0, response_format=pet_format())
    assert [c.index for c in r.choices] == [0, 1, 2]
    for c in r.choices:
        assert c.finish_reason == "stop", (c.index, c.message.content)
        check_pet(c.message.content)
    assert len({c.message.content for c in r.choices}) > 1  # each choice has its own seed


def test_completions_json_schema(client):
    r = client.completions.create(model=MODEL_NAME, prompt="A pet:", max_tokens=MAX_TOKENS, temperature=1.0,
                                  seed=3, extra_body={"response_format": pet_format()})
    c = r.choices[0]
    assert c.finish_reason == "stop", c.text
    check_pet(c.text)


def test_length_cut(client):
    r = client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=3, temperature=1.0, seed=1,
                                       response_format=pet_format(strict=True))
    c = r.choices[0]
    assert c.finish_reason == "length" and r.usage.completion_tokens == 3
    with pytest.raises(json.JSONDecodeError):
        json.loads(c.message.content)  # the value is unfinished
    # the SDK's parse helper turns the cut into its own error
    with pytest.raises(openai.LengthFinishReasonError):
        client.beta.chat.completions.parse(model=MODEL_NAME, messages=MSGS, max_tokens=3, temperature=1.0,
                                           seed=1, response_format=Pet)


def test_value_ending_on_the_last_allowed_token_is_stop(client):
    kw = dict(model=MODEL_NAME, messages=MSGS, temperature=1.0, seed=2, response_format={"type": "json_object"})
    full = client.chat.completions.create(max_tokens=MAX_TOKENS, **kw)
    k = full.usage.completion_tokens
    assert full.choices[0].finish_reason == "stop" and k < MAX_TOKENS
    exact = client.chat.completions.create(max_tokens=k, **kw)
    assert exact.choices[0].finish_reason == "stop"
    assert exact.choices[0].message.content == full.choices[0].message.content
    if k > 1:
        short = client.chat.completions.create(max_tokens=k - 1, **kw)
        assert short.choices[0].finish_reason == "length"
        assert full.choices[0].message.content.startswith(short.choices[0].message.content)


def _schema(schema, **extra):
    js = {"name": "Pet", "schema": schema}
    js.update(extra)
    return {"type": "json_schema", "json_schema": js}


OBJ = {"type": "object", "additionalProperties": False}
# (id, response_format, param, code, a piece of the message)
ERROR_CASES = [
    ("not", _schema({**OBJ, "properties": {"name": {"type": "string", "not": {"const": "a"}}}, "required": ["name"]}),
     "response_format.json_schema.schema", "unsupported_value", "schema.properties.name.not"),
    ("multipleOf", _schema({**OBJ, "properties": {"age": {"type": "integer", "multipleOf": 2}}, "required": ["age"]}),
     "response_format.json_schema.schema", "unsupported_value", "schema.properties.age.multipleOf"),
    ("number_bounds", _schema({**OBJ, "properties": {"w": {"type": "number", "minimum": 0}}, "required": ["w"]}),
     "response_format.json_schema.schema", "unsupported_value", "schema.properties.w"),
    ("unknown_type", _schema({**OBJ, "properties": {"x": {"type": "yaml"}}, "required": ["x"]}),
     "response_format.json_schema.schema", "invalid_value", "schema.properties.x"),
    ("missing_schema", {"type": "json_schema", "json_schema": {"name": "Pet", "strict": True}},
     "response_format.json_schema.schema", "missing_required_parameter", "response_format.json_schema.schema"),
    ("missing_json_schema", {"type": "json_schema"},
     "response_format.json_schema", "missing_required_parameter", "response_format.json_schema"),
    ("bad_name", _schema(OBJ, name="my pet!"),
     "response_format.json_schema.name", "invalid_value", "response_format.json_schema.name"),
    ("type_yaml", {"type": "yaml"}, "response_format.type", "invalid_value", "response_format.type"),
]


@pytest.mark.parametrize("rf,param,code,piece", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_response_format_errors(client, rf, param, code, piece):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=5, response_format=rf)
    err = e.value
    assert err.status_code == 400
    body = err.response.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param and err.body["param"] == param
    assert body["error"]["code"] == code and err.code == code
    assert piece in body["error"]["message"], body


def test_completions_response_format_error(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_NAME, prompt="A pet:", max_tokens=5,
                                  extra_body={"response_format": ERROR_CASES[1][1]})
    assert e.value.code == "unsupported_value"
    assert e.value.body["param"] == "response_format.json_schema.schema"


def test_serves_after_errors(server, client):
    r = client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=MAX_TOKENS, temperature=1.0,
                                       seed=0, response_format=pet_format(strict=True))
    assert r.choices[0].finish_reason == "stop"
    check_pet(r.choices[0].message.content)
    r = client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=4,
                                       response_format={"type": "text"}, extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 4
    assert server.wait_idle() == (0, 0, 0)
