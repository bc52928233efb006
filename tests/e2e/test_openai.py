"""Black-box tests of phiserve through the official openai Python package: what real SDK users
see (shapes, streaming, n > 1, logprobs, seeds, stops, usage, the error classes)."""
import asyncio
import concurrent.futures
import os

import openai
import pytest

from harness import API_KEY, EXTRA_ARGS, MODEL_NAME, Server

MSGS = [{"role": "user", "content": "Tell me about the sea."}]
IGNORE_EOS = {"ignore_eos": True}


def tokenize_messages(server, messages):
    status, _, body = server.post("/tokenize", {"model": MODEL_NAME, "messages": messages})
    assert status == 200, body
    import json
    return json.loads(body)


def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    m = client.models.retrieve(MODEL_NAME)
    assert m.id == MODEL_NAME and m.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_chat_non_stream_shape_and_usage(server, client):
    r = client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=6, extra_body=IGNORE_EOS)
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert isinstance(r.created, int) and r.model == MODEL_NAME and r.system_fingerprint
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0 and c.message.role == "assistant" and isinstance(c.message.content, str)
    assert c.finish_reason == "length"
    assert r.usage.completion_tokens == 6
    # prompt tokens equal /tokenize of the rendered prompt (template carries BOS; no double BOS)
    tk = tokenize_messages(server, MSGS)
    assert r.usage.prompt_tokens == tk["count"]
    assert tk["tokens"][0] == 1 and tk["tokens"][1] != 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + 6
    assert r.usage.prompt_tokens_details.cached_tokens >= 0


def test_chat_stream_shape(client):
    stream = client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=5, stream=True,
                                            stream_options={"include_usage": True}, extra_body=IGNORE_EOS)
    chunks = list(stream)
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL_NAME for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == 5
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "length"
    assert finals[0] is chunks[-2]
    assert all(c.usage is None for c in chunks[:-1])


def test_greedy_stream_equals_non_stream(client):
    kw = dict(model=MODEL_NAME, messages=MSGS, max_tokens=12, temperature=0, extra_body=IGNORE_EOS)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    s = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw)
                if c.choices)
    assert a == b == s and len(a) > 0


def test_seed_reproducible(client):
    kw = dict(model=MODEL_NAME, messages=MSGS, max_tokens=10, temperature=1.0, extra_body=IGNORE_EOS)
    a = client.chat.completions.create(seed=1234, **kw).choices[0].message.content
    b = client.chat.completions.create(seed=1234, **kw).choices[0].message.content
    assert a == b
    others = {client.chat.completions.create(seed=s, **kw).choices[0].message.content for s in (1, 2, 3)}
    assert len(others | {a}) > 1  # a 32k-token vocabulary at temperature 1 does not repeat itself


def test_sampling_where_the_logits_are(server, client):
    # On the GPU every row without logprobs is drawn there and comes back as its id alone; on
    # the CPU the host samples (only greedy rows come back as a backend argmax).
    before = server.gauge("phiserve_device_sampled_rows_total")
    r = client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=8, temperature=0.9,
                                       top_p=0.95, frequency_penalty=0.5, seed=5, extra_body=IGNORE_EOS)
    assert r.usage.completion_tokens == 8
    on_device = "--device" in EXTRA_ARGS and EXTRA_ARGS[EXTRA_ARGS.index("--device") + 1] == "cuda"
    assert server.gauge("phiserve_device_sampled_rows_total") - before == (8 if on_device else 0)


def test_n_non_stream(client):
    r = client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=4, n=3, seed=7,
                                       extra_body=IGNORE_EOS)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.usage.completion_tokens == 12
    assert len({c.message.content for c in r.choices}) > 1  # each choice has its own seed


def test_n_stream_interleaved(client):
    stream = client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=4, n=3, stream=True,
                                            seed=7, extra_body=IGNORE_EOS)
    roles, finals, text = {}, {}, {0: "", 1: "", 2: ""}
    for c in stream:
        assert len(c.choices) == 1
        ch = c.choices[0]
        if ch.delta.role:
            roles[ch.index] = roles.get(ch.index, 0) + 1
        text[ch.index] += ch.delta.content or ""
        if ch.finish_reason:
            finals[ch.index] = ch.finish_reason
    assert roles == {0: 1, 1: 1, 2: 1}
    assert finals == {0: "length", 1: "length", 2: "length"}
    r = client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=4, n=3, seed=7,
                                       extra_body=IGNORE_EOS)
    assert [c.message.content for c in r.choices] == [text[0], text[1], text[2]]


def test_stop_string(client):
    kw = dict(model=MODEL_NAME, messages=MSGS, temperature=0, extra_body=IGNORE_EOS)
    full = client.chat.completions.create(max_tokens=20, **kw).choices[0].message.content
    assert len(full) > 10
    stop = full[len(full) // 2:len(full) // 2 + 3]
    cut = full[:full.index(stop)]
    r = client.chat.completions.create(max_tokens=20, stop=[stop], **kw)
    assert r.choices[0].message.content == cut
    assert r.choices[0].finish_reason == "stop"
    s = client.chat.completions.create(max_tokens=20, stop=[stop], stream=True, **kw)
    chunks = [c for c in s if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == cut
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_logprobs(client):
    r = client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=5, logprobs=True,
                                       top_logprobs=3, temperature=0, extra_body=IGNORE_EOS)
    content = r.choices[0].logprobs.content
    assert len(content) == 5
    for e in content:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        lps = [t.logprob for t in e.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        # greedy: the chosen token is the most likely one
        assert e.token == e.top_logprobs[0].token and abs(e.logprob - lps[0]) < 1e-6
        assert isinstance(e.bytes, list)
    joined = b"".join(bytes(e.bytes) for e in content).decode("utf-8", "replace")
    assert joined == r.choices[0].message.content
    stream = client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=5, logprobs=True,
                                            top_logprobs=3, temperature=0, stream=True, extra_body=IGNORE_EOS)
    streamed = [e for c in stream if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content]


def test_completions_legacy_logprobs_echo(server, client):
    r = client.completions.create(model=MODEL_NAME, prompt="Hello world", max_tokens=4, logprobs=2, echo=True,
                                  temperature=0, extra_body=IGNORE_EOS)
    assert r.id.startswith("cmpl-") and r.object == "text_completion"
    c = r.choices[0]
    lp = c.logprobs
    n_prompt = r.usage.prompt_tokens
    assert len(lp.tokens) == n_prompt + 4 == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x <= 0 for x in lp.token_logprobs[1:])
    assert all(len(d) >= 2 for d in lp.top_logprobs[n_prompt:])
    assert c.text.startswith("Hello world")
    assert lp.text_offset == sorted(lp.text_offset)
    # usage.prompt_tokens is the tokenization with BOS
    import json
    status, _, body = server.post("/tokenize", {"prompt": "Hello world"})
    assert json.loads(body)["count"] == n_prompt


def test_completions_multiple_prompts_and_ids(client):
    r = client.completions.create(model=MODEL_NAME, prompt=["Hello", "The sea"], n=2, max_tokens=3,
                                  extra_body=IGNORE_EOS)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    assert r.usage.completion_tokens == 12
    r = client.completions.create(model=MODEL_NAME, prompt=[1, 15043, 3186], max_tokens=3, extra_body=IGNORE_EOS)
    assert r.usage.prompt_tokens == 3 and r.choices[0].finish_reason == "length"
    s = list(client.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=3, stream=True,
                                       stream_options={"include_usage": True}, extra_body=IGNORE_EOS))
    assert s[-1].usage.completion_tokens == 3 and s[-1].choices == []
    assert [c.choices[0].finish_reason for c in s[:-1]][-1] == "length"


def test_cached_tokens(client):
    long_msg = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 12}]
    kw = dict(model=MODEL_NAME, messages=long_msg, max_tokens=2, extra_body=IGNORE_EOS)
    first = client.chat.completions.create(**kw)
    second = client.chat.completions.create(**kw)
    assert first.usage.prompt_tokens > 64
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert second.usage.prompt_tokens_details.cached_tokens > 0
    assert second.usage.prompt_tokens_details.cached_tokens < second.usage.prompt_tokens


def test_bad_request_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=-1)
    assert e.value.status_code == 400 and e.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=5000)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_NAME, prompt="hi " * 5000, max_tokens=1)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL_NAME, messages=[], max_tokens=1)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_NAME, max_tokens=1, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}])
    assert "image" in e.value.message.lower()


def test_content_parts_flattened(server, client):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Tell me"}, {"type": "text", "text": "about it"}]}]
    flat = [{"role": "user", "content": "Tell me\nabout it"}]
    a = client.chat.completions.create(model=MODEL_NAME, messages=parts, max_tokens=3, temperature=0)
    b = client.chat.completions.create(model=MODEL_NAME, messages=flat, max_tokens=3, temperature=0)
    assert a.usage.prompt_tokens == b.usage.prompt_tokens
    assert a.choices[0].message.content == b.choices[0].message.content


def test_not_found_and_auth_errors(server):
    bad = openai.OpenAI(base_url=server.base + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=1)
    assert e.value.code == "invalid_api_key"
    good = openai.OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        good.chat.completions.create(model="gpt-4o", messages=MSGS, max_tokens=1)
    assert e.value.code == "model_not_found"


def test_async_streams(aclient):
    async def one(i):
        s = await aclient.chat.completions.create(model=MODEL_NAME, messages=MSGS, max_tokens=8, stream=True,
                                                  seed=i, extra_body=IGNORE_EOS)
        n = 0
        async for c in s:
            if c.choices and c.choices[0].delta.content:
                n += 1
        return n

    async def main():
        return await asyncio.gather(*(one(i) for i in range(8)))

    counts = asyncio.run(main())
    assert all(n >= 1 for n in counts)


# Tokens that keep one request busy while others queue behind it. The cuda-emu suite runs the
# server on the CUDA emulator, about a hundred times slower per step, and asks for fewer.
LONG_TOKENS = int(os.environ.get("PHISERVE_E2E_LONG_TOKENS", "1500"))


def test_rate_limit_429():
    """A full waiting queue is a RateLimitError (429 with Retry-After), never a reset or a 5xx."""
    srv = Server("--max-seqs", "1", "--max-waiting", "1")
    try:
        c = openai.OpenAI(base_url=srv.base + "/v1", api_key=API_KEY, max_retries=0, timeout=60)

        def one(_):
            try:
                c.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=LONG_TOKENS,
                                     extra_body=IGNORE_EOS)
                return "ok"
            except openai.RateLimitError as e:
                assert e.response.headers.get("retry-after")
                return "429"

        with concurrent.futures.ThreadPoolExecutor(12) as ex:
            results = list(ex.map(one, range(12)))
        assert "429" in results and "ok" in results, results
        assert srv.wait_idle() == (0, 0, 0)
    finally:
        srv.stop()
