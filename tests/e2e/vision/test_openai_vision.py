"""Black-box tests of phiserve serving the Phi-3-vision demo model (tests/fixtures/models/
vision-demo) through the official openai package: image_url data: URLs in chat messages give
transformers' greedy continuation (golden/golden.json), streaming and the prefix cache work with
images, and every bad image gets a 400 with a fixed message while the server keeps serving."""
import base64
import json
import os
import sys

import openai
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from harness import API_KEY, MODEL, MODEL_NAME, Server  # noqa: E402

GOLDEN = os.path.join(MODEL, "golden")


def golden():
    with open(os.path.join(GOLDEN, "golden.json")) as f:
        return json.load(f)


def data_url(name, mime="image/png"):
    with open(os.path.join(GOLDEN, name), "rb") as f:
        return f"data:{mime};base64," + base64.b64encode(f.read()).decode()


def image_part(url):
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.check_clean_exit()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def detokenize(server, ids):
    status, _, body = server.post("/detokenize", {"model": MODEL_NAME, "tokens": ids})
    assert status == 200, body
    return json.loads(body)["prompt"]


def same_text(content, ids_text):
    """The chat text of a greedy continuation against /detokenize of its ids: the stream keeps
    the first token's leading space (decoded after the prompt), a lone decode drops it."""
    return content.lstrip(" ") == ids_text.lstrip(" ") and content.strip()


def chat_case(name):
    return next(c for c in golden()["cases"] if c["name"] == name)


def test_one_image_matches_transformers(server, client):
    case = chat_case("chat_one")
    msgs = [{"role": "user", "content": [image_part(data_url(case["images"][0])),
                                         {"type": "text", "text": "What is in this picture?"}]}]
    r = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=8, temperature=0)
    assert same_text(r.choices[0].message.content, detokenize(server, case["greedy"]))
    assert r.usage.prompt_tokens == len(case["input_ids"])
    # The same request again: the prompt's full blocks, image included, come from the cache.
    again = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=8, temperature=0)
    assert again.choices[0].message.content == r.choices[0].message.content
    assert again.usage.prompt_tokens_details.cached_tokens >= (len(case["input_ids"]) - 1) // 16 * 16


def test_two_images_stream(server, client):
    case = chat_case("chat_two")
    msgs = [{"role": "user", "content": [image_part(data_url(case["images"][0])),
                                         image_part(data_url(case["images"][1])),
                                         {"type": "text", "text": "Compare."}]}]
    stream = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=8,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert same_text(text, detokenize(server, case["greedy"]))
    assert chunks[-1].usage.prompt_tokens == len(case["input_ids"])


def test_other_image_other_answer(server, client):
    case = chat_case("chat_one")
    msgs = [{"role": "user", "content": [image_part(data_url("wide_120x50.png")),
                                         {"type": "text", "text": "What is in this picture?"}]}]
    r = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=8, temperature=0)
    # another grid (1x2 crops, 17 tokens instead of 27) and other features
    assert r.usage.prompt_tokens == len(case["input_ids"]) - 27 + 17
    assert not same_text(r.choices[0].message.content, detokenize(server, case["greedy"]))


def test_text_only_still_works(client):
    r = client.chat.completions.create(model=MODEL_NAME, max_tokens=4,
                                       messages=[{"role": "user", "content": "Hello"}])
    assert r.usage.completion_tokens >= 1


GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


@pytest.mark.parametrize("url,what", [
    ("data:image/png;base64,!!!notbase64", "invalid base64"),
    ("data:image/png;base64," + base64.b64encode(b"this is not an image").decode(), "not an image"),
    ("data:image/gif;base64," + base64.b64encode(GIF).decode(), "gif"),
    ("data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode(), "truncated png"),
    ("http://169.254.169.254/latest/meta-data", "remote url"),
    ("file:///etc/passwd", "file url"),
])
def test_bad_images_are_400(server, client, url, what):
    msgs = [{"role": "user", "content": [image_part(url), {"type": "text", "text": "hi"}]}]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=2)
    body = e.value.body
    assert body["code"] in ("invalid_image", "invalid_value"), (what, body)
    assert "0x" not in body["message"], body  # no decoder text or addresses (vLLM CVE-2026-22778)
    r = client.chat.completions.create(model=MODEL_NAME, max_tokens=2,
                                       messages=[{"role": "user", "content": "still there?"}])
    assert r.choices[0].finish_reason in ("length", "stop")


def test_image_limits_and_tags(client):
    url = data_url("a_40x30.png")
    nine = [image_part(url) for _ in range(9)] + [{"type": "text", "text": "hi"}]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL_NAME, max_tokens=2,
                                       messages=[{"role": "user", "content": nine}])
    # a tag naming an image the request does not have
    parts = [image_part(url), {"type": "text", "text": "and <|image_2|> too"}]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_NAME, max_tokens=2,
                                       messages=[{"role": "user", "content": parts}])
    assert "<|image_2|>" in e.value.body["message"]


def test_tokenize_counts_image_spans(server):
    """/tokenize gives the chat route's prompt: the processor's ids, 0 at image positions."""
    case = chat_case("chat_one")
    msgs = [{"role": "user", "content": [image_part(data_url(case["images"][0])),
                                         {"type": "text", "text": "What is in this picture?"}]}]
    status, _, body = server.post("/tokenize", {"model": MODEL_NAME, "messages": msgs})
    assert status == 200, body
    tk = json.loads(body)
    assert tk["count"] == len(case["input_ids"])
    assert tk["tokens"] == [max(t, 0) for t in case["input_ids"]]
    bad = [{"role": "user", "content": [image_part("data:image/png;base64,AAAA")]}]
    status, _, body = server.post("/tokenize", {"model": MODEL_NAME, "messages": bad})
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_image", body


def test_n_choices_and_logprobs_with_an_image(server, client):
    """n > 1 forks the prompt with its image rows; every greedy choice is transformers' one."""
    case = chat_case("chat_one")
    msgs = [{"role": "user", "content": [image_part(data_url(case["images"][0])),
                                         {"type": "text", "text": "What is in this picture?"}]}]
    r = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=8, temperature=0,
                                       n=3, logprobs=True, top_logprobs=2)
    want = detokenize(server, case["greedy"])
    assert len(r.choices) == 3
    for c in r.choices:
        assert same_text(c.message.content, want)
        assert len(c.logprobs.content) == 8 and all(len(t.top_logprobs) == 2 for t in c.logprobs.content)
