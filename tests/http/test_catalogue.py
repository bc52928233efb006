"""The bad-input and fault catalogue of reference/reliability.md §7 (groups A-F, H-L where they
apply to a CPU build), end to end against the real binary. Each case checks the status and,
where phiserve writes the answer, the OpenAI error shape; that the message carries no
addresses, stack traces or file paths; and that the server still serves a valid request after
it, with the running/waiting/KV gauges back at 0. tests/http/CATALOGUE.md maps every case to
its test. Standard library only."""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from harness import API_KEY, BIN, MODEL, MODEL_NAME, Server, read_until_close, sse_events  # noqa: E402

CHAT = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
AUTH = b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
POST_CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Type: application/json\r\n"

# What must never reach a client: heap/stack addresses, source locations, sanitizer or
# backtrace text, absolute paths of the host.
LEAKY = re.compile(r"0x[0-9a-fA-F]{6,}|\.[ch]:\d+|Traceback|AddressSanitizer|#\d+ 0x|"
                   r"(?<![\w.])/(?:home|root|usr|tmp|work|proc|etc|lib|opt|var)/")


# RSS bounds hold for the allocator of a normal build only: ASan's redzones and quarantine
# multiply the footprint, so under a sanitizer build those assertions are not made.
SANITIZED = bool(BIN) and os.path.exists(BIN) and b"__asan_init" in open(BIN, "rb").read()

# ---------------------------------------------------------------- helpers

def check_error(body, status, param=None, code=None):
    """OpenAI error shape (message/type/param/code) with nothing leaky in the message."""
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert not LEAKY.search(err["message"]), err["message"]
    assert isinstance(err["type"], str) and err["type"], err
    if status == 400:
        assert err["type"] == "invalid_request_error", err
    if param is not None:
        assert err["param"] is not None and err["param"].startswith(param), err
    if code is not None:
        assert err["code"] == code, err
    return err


def serves_and_idle(srv):
    """Conventions 1-3 of §7: alive, a valid request succeeds, nothing left running or queued
    and the KV cache empty."""
    assert srv.proc.poll() is None, "server died"
    status, _, body = srv.post("/v1/chat/completions", CHAT)
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["role"] == "assistant"
    assert srv.wait_idle(10) == (0, 0, 0)


def raw(port, data, timeout=10, src=None):
    """Sends raw bytes (send errors ignored: the server may answer and close early), returns
    everything read until the server closes or goes quiet."""
    s = socket.socket()
    if src:
        s.bind((src, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        return read_until_close(s)
    finally:
        s.close()


def keepalive_posts(srv, path, bodies):
    """POSTs each raw body on one keep-alive connection; yields (status, body)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        for b in bodies:
            conn.request("POST", path, body=b, headers=srv.headers())
            r = conn.getresponse()
            yield r.status, r.read()
            if r.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    finally:
        conn.close()


def status_of(out):
    return int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.") else None


def rss_kib(srv, field="VmRSS"):
    with open(f"/proc/{srv.proc.pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture(scope="module")
def short():
    """A server with a 2 s inactivity timeout and at most 8 connections per client IP."""
    s = Server("--timeout", "2", "--per-ip-connections", "8")
    yield s
    s.check_clean_exit()


# ---------------------------------------------------------------- A. HTTP layer

def test_A3_short_body_then_idle_closed_at_timeout(short):
    c = socket.create_connection(("127.0.0.1", short.port), timeout=15)
    try:
        c.sendall(POST_CHAT + b"Content-Length: 100\r\n\r\n{\"model\"")
        t0 = time.time()
        assert c.recv(1000) == b""  # closed without an answer: the request never completed
        assert 1.5 < time.time() - t0 < 8
    finally:
        c.close()
    time.sleep(0.2)
    # NOTIFY_COMPLETED ran (the access log line is written there) and freed the handler state.
    assert re.search(r'"POST /v1/chat/completions" 0 .* \d{4}\.\dms .*aborted', short.log_text())
    serves_and_idle(short)


def test_A4_oversized_headers(short):
    base = rss_kib(short)
    cases = [
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 65536 + b"\r\n\r\n", 431),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (1 << 20) + b"\r\n\r\n", 431),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: a\r\n" % i for i in range(10000)) + b"\r\n",
         431),
        (b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ]
    for req, want in cases:
        out = raw(short.port, req)
        assert status_of(out) == want, out[:200]
        assert not LEAKY.search(out.decode("latin-1"))
    # MHD reads the head into its 32 KiB per-connection pool and no further.
    assert rss_kib(short) - base < (32 if SANITIZED else 8) * 1024
    serves_and_idle(short)


A5_CASES = [(b"12abc", 400), (b"-1", 400), (b"99999999999999999999999", 413), (b"88, 88", 400)]


@pytest.mark.parametrize("cl,want", A5_CASES)
def test_A5_bad_content_length(server, cl, want):
    body = json.dumps(CHAT).encode()
    out = raw(server.port, POST_CHAT + b"Content-Length: " + cl + b"\r\n\r\n" + body)
    assert status_of(out) == want, out[:200]
    assert not LEAKY.search(out.decode("latin-1"))
    serves_and_idle(server)


@pytest.mark.xfail(strict=True, reason="libmicrohttpd 0.9.75 sends the error response head twice for a malformed "
                                       "or overflowing Content-Length (library bug; the connection closes after it)")
def test_A5_bad_content_length_single_response(server):
    out = raw(server.port, POST_CHAT + b"Content-Length: 12abc\r\n\r\n{}")
    assert out.count(b"HTTP/1.1 ") == 1, out[:400]


@pytest.mark.parametrize("chunk,want", [(b"zz\r\n", 400), (b"FFFFFFFFFFFFFFFFF\r\n", 413),
                                        (b"-1\r\n", 400)])
def test_A6_bad_chunk_size(server, chunk, want):
    out = raw(server.port, POST_CHAT + b"Transfer-Encoding: chunked\r\n\r\n" + chunk + b"{}\r\n0\r\n\r\n")
    assert status_of(out) == want, out[:200]
    assert not LEAKY.search(out.decode("latin-1"))
    serves_and_idle(server)


def test_A7_slowloris_per_ip_limit(short):
    """Connections trickling header bytes faster than the inactivity timeout stay open (MHD's
    timeout is an inactivity timeout), so the per-IP limit is what bounds them: the 9th from
    the same address is refused; another address (127.0.0.2) is still served; once the
    trickling clients go, 127.0.0.1 is served again."""
    stop = threading.Event()
    socks = []
    for _ in range(8):
        s = socket.create_connection(("127.0.0.1", short.port), timeout=5)
        s.sendall(b"G")
        socks.append(s)

    def trickle():  # a byte every 0.2 s: a loaded machine delaying it stays far from 2 s
        while not stop.wait(0.2):
            for s in socks:
                try:
                    s.sendall(b"E")
                except OSError:
                    pass

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        # Over the limit: MHD closes the socket at once (no HTTP answer; reference §5).
        out = raw(short.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=5)
        assert out == b"", out[:200]
        # Another client address is served meanwhile.
        body = json.dumps(CHAT).encode()
        out = raw(short.port, POST_CHAT + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
                  timeout=20, src="127.0.0.2")
        assert status_of(out) == 200, out[:300]
        time.sleep(2.5)  # past the 2 s timeout: trickling connections are still open
        for s in socks:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
    finally:
        stop.set()
        t.join(5)
        for s in socks:
            s.close()
    time.sleep(0.3)
    serves_and_idle(short)


# ---------------------------------------------------------------- B. JSON syntax

def test_B2_truncated_at_every_offset(server):
    full = json.dumps(dict(CHAT, temperature=0.5, stop=["x"]), separators=(",", ":")).encode()
    for i, (status, body) in enumerate(keepalive_posts(server, "/v1/chat/completions",
                                                       [full[:n] for n in range(len(full))])):
        assert status == 400, (i, full[:i], body)
        check_error(body, 400)
    serves_and_idle(server)


def msg(content_json):
    return (b'{"model":"' + MODEL_NAME.encode() + b'","max_tokens":2,"messages":[{"role":"user","content":'
            + content_json + b"}]}")


@pytest.mark.parametrize("case,body,param,code", [
    ("B4", msg(b'"hi\\'), "messages[0].content", "invalid_json"),
    ("B4", b'{"model":"phi3-demo","messages":[{"role":"user","content":"\\', None, "invalid_json"),
    ("B6", msg(b'"\\uZZZZ"'), "messages[0].content", "invalid_json"),
    ("B6", msg(b'"\\u12"'), "messages[0].content", "invalid_json"),
    ("B6", b'{"model":"phi3-demo","messages":[{"role":"user","content":"\\u', None, "invalid_json"),
    ("B10", msg(b'"a\x01b"'), "messages[0].content", "invalid_json"),
    ("B10", msg(b'"a\nb"'), "messages[0].content", "invalid_json"),
    ("B10", msg(b'"a\x7f\x1fb"'), "messages[0].content", "invalid_json"),
])
def test_B_bad_json_strings(server, case, body, param, code):
    status, _, data = server.request("POST", "/v1/chat/completions", body, server.headers())
    assert status == 400, (case, data)
    err = check_error(data, 400, param, code)
    if param is None:
        assert err["param"] in (None, "messages[0].content", "messages"), err
    serves_and_idle(server)


def test_B11_bom_accepted(server):
    status, _, data = server.request("POST", "/v1/chat/completions", b"\xef\xbb\xbf" + json.dumps(CHAT).encode(),
                                     server.headers())
    assert status == 200, data


def test_B14_huge_array_in_ignored_field(server):
    """An 8 MiB-class [0,0,...] (4 M values): refused by the per-request value budget, with
    the peak RSS far below 16x the body."""
    head = json.dumps(CHAT)[:-1].encode() + b',"pad":['
    n = (8 * 1024 * 1024 - len(head) - 1024) // 2
    body = head + b"0," * n + b"0]}"
    hwm = rss_kib(server, "VmHWM")
    status, _, data = server.request("POST", "/v1/chat/completions", body, server.headers())
    assert status == 400, data[:300]
    check_error(data, 400, "pad", "request_too_complex")
    if not SANITIZED:
        assert rss_kib(server, "VmHWM") - hwm < 16 * len(body) // 1024
    serves_and_idle(server)


# ---------------------------------------------------------------- C, D, E, F: request fields

M = MODEL_NAME
U = [{"role": "user", "content": "Hi"}]
FIELD_CASES = [
    # C1
    ("C1", "chat", {"model": M}, 400, "messages", "missing_required_parameter"),
    ("C1", "chat", {"model": M, "messages": []}, 400, "messages", "invalid_value"),
    ("C1", "chat", {"model": M, "messages": {}}, 400, "messages", "invalid_type"),
    ("C1", "chat", {"model": M, "messages": "hi"}, 400, "messages", "invalid_type"),
    # C2
    ("C2", "chat", {"model": M, "messages": [{"content": "hi"}]}, 400, "messages[0].role", None),
    ("C2", "chat", {"model": M, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role", None),
    ("C2", "chat", {"model": M, "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content", None),
    ("C2", "chat", {"model": M, "messages": [{"role": "user", "content": None}]}, 400, "messages[0].content", None),
    # C3
    ("C3", "chat", {"model": M, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, 400,
     "messages[0].content[0].type", None),
    ("C3", "chat", {"model": M, "messages": [{"role": "user", "content": [{"type": "text"}]}]}, 400,
     "messages[0].content[0].text", None),
    ("C3", "chat", {"model": M, "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 10000}]},
     400, "messages[0].content", "invalid_value"),
    # C6
    ("C6", "chat", {"model": "does-not-exist", "messages": U}, 404, "model", "model_not_found"),
    ("C6", "chat", {"model": "", "messages": U}, 400, "model", None),
    ("C6", "chat", {"model": 5, "messages": U}, 400, "model", None),
    ("C6", "compl", {"model": "does-not-exist", "prompt": "x"}, 404, "model", "model_not_found"),
    # C8
    ("C8", "chat", {"model": M, "messages": U, "tools": []}, 400, "tools", None),
    ("C8", "chat", {"model": M, "messages": U, "tool_choice": {"type": "function", "function": {"name": "f"}}},
     400, "tool_choice", None),
    ("C8", "chat", {"model": M, "messages": U, "response_format": {"type": "json_schema"}}, 400,
     "response_format", None),
    # D7
    ("D7", "chat", {"model": M, "messages": U, "presence_penalty": 2.01}, 400, "presence_penalty", None),
    ("D7", "chat", {"model": M, "messages": U, "frequency_penalty": -2.01}, 400, "frequency_penalty", None),
    ("D7", "chat", {"model": M, "messages": U, "repetition_penalty": 0}, 400, "repetition_penalty", None),
    ("D7", "chat", {"model": M, "messages": U, "repetition_penalty": -1}, 400, "repetition_penalty", None),
    # D8: the int64 range is accepted, a fraction or beyond int64 is not
    ("D8", "chat", {"model": M, "messages": U, "seed": 1.5}, 400, "seed", None),
    ("D8", "chat", {"model": M, "messages": U, "seed": 2 ** 63}, 400, "seed", None),
    ("D8", "chat", {"model": M, "messages": U, "max_tokens": 2, "seed": -1}, 200, None, None),
    ("D8", "chat", {"model": M, "messages": U, "max_tokens": 2, "seed": 2 ** 63 - 1}, 200, None, None),
    ("D8", "chat", {"model": M, "messages": U, "max_tokens": 2, "seed": 9007199254740993}, 200, None, None),
    # D9: the server-extension integers
    ("D9", "chat", {"model": M, "messages": U, "min_tokens": -1}, 400, "min_tokens", None),
    ("D9", "chat", {"model": M, "messages": U, "min_tokens": -2147483648}, 400, "min_tokens", None),
    ("D9", "chat", {"model": M, "messages": U, "top_k": -2147483648}, 400, "top_k", None),
    ("D9", "compl", {"model": M, "prompt": "x", "min_tokens": 2 ** 63}, 400, "min_tokens", None),
    # D11
    ("D11", "chat", {"model": M, "messages": U, "logprobs": True, "top_logprobs": 21}, 400, "top_logprobs", None),
    ("D11", "chat", {"model": M, "messages": U, "logprobs": True, "top_logprobs": -1}, 400, "top_logprobs", None),
    ("D11", "chat", {"model": M, "messages": U, "logprobs": False, "top_logprobs": 5}, 400, "top_logprobs", None),
    ("D11", "compl", {"model": M, "prompt": "x", "logprobs": 6}, 400, "logprobs", None),
    # E1: empty chat content is a valid message; an empty completions prompt is not
    ("E1", "chat", {"model": M, "max_tokens": 2, "messages": [{"role": "user", "content": ""}]}, 200, None, None),
    ("E1", "chat", {"model": M, "max_tokens": 2, "messages": [{"role": "user", "content": " \n\t "}]}, 200, None,
     None),
    ("E1", "compl", {"model": M, "prompt": ""}, 400, "prompt", None),
    ("E1", "compl", {"model": M, "prompt": ["a", ""]}, 400, "prompt[1]", None),
    # E6
    ("E6", "chat", {"model": M, "messages": U, "chat_template": "{{ 1 }}"}, 400, "chat_template", None),
    ("E6", "chat", {"model": M, "messages": U, "chat_template_kwargs": {"tokenize": True}}, 400,
     "chat_template_kwargs", None),
    # F1/F2
    ("F1", "chat", {"model": M, "messages": U, "stop": ["s%d" % i for i in range(10000)]}, 400, "stop", None),
    ("F2", "chat", {"model": M, "messages": U, "stop": [""]}, 400, "stop", None),
    ("F2", "chat", {"model": M, "messages": U, "stop": "x" * (1 << 20)}, 400, "stop", None),
]


@pytest.mark.parametrize("case,ep,body,status,param,code", FIELD_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(FIELD_CASES)])
def test_request_fields(server, case, ep, body, status, param, code):
    path = "/v1/chat/completions" if ep == "chat" else "/v1/completions"
    got, _, data = server.post(path, body)
    assert got == status, (case, data[:300])
    if status != 200:
        check_error(data, status, param, code)
    serves_and_idle(server)


def test_F2_invalid_utf8_stop(server):
    body = b'{"model":"phi3-demo","messages":[{"role":"user","content":"Hi"}],"stop":["a","\xc3"]}'
    status, _, data = server.request("POST", "/v1/chat/completions", body, server.headers())
    assert status == 400
    check_error(data, 400, "stop[1]", "invalid_json")
    serves_and_idle(server)


def test_D3_prompt_fills_context(server):
    status, _, data = server.post("/v1/completions", {"model": M, "prompt": [1] * 4096, "max_tokens": 1})
    assert status == 400
    check_error(data, 400, "prompt", "context_length_exceeded")
    status, _, data = server.post("/v1/completions", {"model": M, "prompt": [1] * 4095, "max_tokens": 1})
    assert status == 200, data[:300]
    usage = json.loads(data)["usage"]
    assert usage["prompt_tokens"] == 4095 and usage["completion_tokens"] == 1
    serves_and_idle(server)


def test_D5_n2_greedy_is_identical_choices(server):
    """Documented: n > 1 with temperature 0 is accepted (as OpenAI does); the choices match."""
    status, _, data = server.post("/v1/chat/completions", dict(CHAT, n=2, temperature=0, max_tokens=6))
    assert status == 200, data
    ch = json.loads(data)["choices"]
    assert len(ch) == 2 and ch[0]["message"]["content"] == ch[1]["message"]["content"]


def test_E3_special_token_text_in_content(server):
    """Decision (CATALOGUE.md, E3): special-token text in message content is tokenized as the
    special token, as transformers' apply_chat_template(tokenize=True) and vLLM do. The turn
    structure the template writes is unchanged, the request succeeds, and the returned content
    never holds special-token text."""
    content = "a<|end|>\n<|assistant|>b</s>"
    status, _, data = server.post("/tokenize", {"model": M, "messages": [{"role": "user", "content": content}]})
    assert status == 200, data
    ids = json.loads(data)["tokens"]
    # <|user|> a <|end|> <|assistant|> b </s> <|end|> <|assistant|>: the specials in the content
    # became their ids (HF parity), the template's own markers are still there.
    assert ids[:2] == [1, 32010] and ids[-2:] == [32007, 32001]
    assert ids.count(32007) == 2 and ids.count(32001) == 2 and 2 in ids
    status, _, data = server.post("/v1/chat/completions",
                                  {"model": M, "max_tokens": 8, "messages": [{"role": "user", "content": content}]})
    assert status == 200, data
    out = json.loads(data)["choices"][0]["message"]["content"]
    assert "<|end|>" not in out and "<|assistant|>" not in out
    serves_and_idle(server)


@pytest.mark.parametrize("name,content", [
    ("emoji-4MiB", "\U0001F600" * (1 << 20)),
    ("combining-2M", "a" + "\u0301" * ((1 << 21) - 1)),
    ("whitespace-100k", " " * 100000),
])
def test_E4_pathological_text_bounded_time(server, name, content):
    body = json.dumps({"model": M, "max_tokens": 2, "messages": [{"role": "user", "content": content}]},
                      ensure_ascii=False).encode()
    t0 = time.time()
    status, _, data = server.request("POST", "/v1/chat/completions", body, server.headers())
    assert time.time() - t0 < 20, name
    if status != 200:
        assert status == 400, data[:300]
        check_error(data, 400)
    serves_and_idle(server)


def test_E5_byte_fallback_text_near_body_limit():
    """More tokens than bytes (a character outside the vocab: 4 byte-fallback tokens for 4
    bytes, plus the prefix) with a body near the 8 MiB limit: no overflow, 400
    context_length_exceeded in bounded time, and the peak RSS below 16x the body."""
    srv = Server()
    try:
        body = json.dumps({"model": M, "max_tokens": 2, "prompt": "\U000E0100" * (1900 * 1024)},
                          ensure_ascii=False).encode()
        hwm = rss_kib(srv, "VmHWM")
        t0 = time.time()
        status, _, data = srv.request("POST", "/v1/completions", body, srv.headers())
        assert status == 400, data[:300]
        check_error(data, 400, "prompt", "context_length_exceeded")
        assert time.time() - t0 < 30
        serves_and_idle(srv)
        assert rss_kib(srv, "VmHWM") - hwm < 16 * len(body) // 1024
    finally:
        srv.check_clean_exit()


# ---------------------------------------------------------------- F3. stop strings

def test_F3_stop_spanning_tokens_and_multibyte(server):
    """A stop string made of the end of one token and the start of the next, ending on a
    multi-byte character: the output ends right before it (non-stream and stream), finish
    'stop', and every SSE event is valid JSON in valid UTF-8."""
    base = {"model": M, "max_tokens": 30, "temperature": 0, "ignore_eos": True,
            "messages": [{"role": "user", "content": "hi"}]}
    status, _, data = server.post("/v1/chat/completions", dict(base, logprobs=True))
    assert status == 200
    choice = json.loads(data)["choices"][0]
    full = choice["message"]["content"]
    toks = [e["token"] for e in choice["logprobs"]["content"]]
    stop = None
    for k in range(1, len(toks)):
        j = next((i for i, ch in enumerate(toks[k]) if ord(ch) > 0x7f), None)
        if j is not None and toks[k - 1]:
            stop = toks[k - 1][-1] + toks[k][:j + 1]
            break
    assert stop, f"the demo model's greedy output has no multi-byte character: {full!r}"
    want = full[:full.index(stop)]
    status, _, data = server.post("/v1/chat/completions", dict(base, stop=[stop]))
    choice = json.loads(data)["choices"][0]
    assert choice["message"]["content"] == want and choice["finish_reason"] == "stop"
    status, _, data = server.post("/v1/chat/completions", dict(base, stop=[stop], stream=True))
    assert status == 200
    events = sse_events(data)  # decodes the whole body as UTF-8 (strict)
    assert events[-1] == "data: [DONE]"
    text, finish = "", None
    for ev in events[:-1]:
        for c in json.loads(ev[len("data: "):])["choices"]:
            text += c["delta"].get("content") or ""
            finish = c["finish_reason"] or finish
    assert text == want and finish == "stop"
    serves_and_idle(server)


# ---------------------------------------------------------------- H. request lifecycle

def test_H2_disconnect_during_prefill():
    """A 3000-token prompt prefilled 16 tokens a step on the reference backend (over a second
    of prefill); the client hangs up before the first byte: the sequence is cancelled and
    its KV freed without waiting for the prefill to end."""
    srv = Server("--device", "ref", "--max-batched-tokens", "16")
    try:
        body = json.dumps({"model": M, "prompt": [1] + [500] * 3000, "max_tokens": 1000, "ignore_eos": True,
                           "stream": True}).encode()
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        deadline = time.time() + 10
        while srv.gauge("vllm:kv_cache_usage_perc") == 0 and time.time() < deadline:
            time.sleep(0.02)
        assert srv.gauge("vllm:num_requests_running") == 1
        t0 = time.time()
        s.close()
        assert srv.wait_idle(3) == (0, 0, 0)
        assert time.time() - t0 < 2
        assert srv.gauge("vllm:generation_tokens_total") == 0  # it never got to decode
        serves_and_idle(srv)
    finally:
        srv.check_clean_exit()


def test_H3_disconnect_before_body_complete(short):
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", short.port), timeout=5)
        s.sendall(POST_CHAT + b"Content-Length: 1000\r\n\r\n{\"model\":\"phi3-demo\",")
        time.sleep(0.05)
        s.close()
    time.sleep(0.3)
    assert short.wait_idle(2) == (0, 0, 0)  # nothing was queued
    assert len(re.findall(r'"POST /v1/chat/completions" 0 .*aborted', short.log_text())) >= 5
    serves_and_idle(short)


def test_H5_reader_that_stops_reading(short):
    """A streaming client that stops reading (small receive buffer): once the socket buffers
    are full, the server writes nothing more, MHD's inactivity timeout (2 s here) closes the
    connection, and the generation is cancelled long before its 32 000 tokens. The server
    keeps one pump's worth of SSE bytes per request; the engine's per-handle queue is bounded
    by max_tokens."""
    gen0 = short.gauge("vllm:generation_tokens_total")
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.connect(("127.0.0.1", short.port))
    try:
        body = json.dumps({"model": M, "prompt": "Once", "max_tokens": 4000, "n": 8, "logprobs": 5,
                           "ignore_eos": True, "stream": True}).encode()
        c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        deadline = time.time() + 10
        while short.gauge("vllm:num_requests_running") == 0 and time.time() < deadline:
            time.sleep(0.05)
        assert short.gauge("vllm:num_requests_running") == 8
        assert short.wait_idle(40) == (0, 0, 0)
        assert short.gauge("vllm:generation_tokens_total") - gen0 < 8 * 4000
        # The server closed the connection (what was buffered, then end of file).
        c.settimeout(5)
        while True:
            chunk = c.recv(1 << 20)
            if not chunk:
                break
    finally:
        c.close()
    serves_and_idle(short)


def test_H7_engine_error_mid_stream():
    """An engine error after 3 tokens (test-only injection, PHISERVE_TEST_FAULT_AFTER_TOKENS):
    a stream ends with an OpenAI error event and no [DONE] (a deliberate deviation from vLLM,
    CATALOGUE.md); a non-stream request gets 500 server_error; shorter requests still work."""
    srv = Server(env={"PHISERVE_TEST_FAULT_AFTER_TOKENS": "3"})
    try:
        body = {"model": M, "prompt": "Once", "max_tokens": 50, "ignore_eos": True}
        status, _, data = srv.post("/v1/completions", dict(body, stream=True))
        assert status == 200
        events = sse_events(data)
        assert "data: [DONE]" not in events
        err = json.loads(events[-1][len("data: "):])
        assert set(err) == {"error"}
        check_error(json.dumps(err).encode(), 500)
        assert err["error"]["type"] == "server_error"
        assert any('"text"' in e for e in events[:-1])  # tokens came before the error
        status, _, data = srv.post("/v1/chat/completions", dict(CHAT, max_tokens=50, ignore_eos=True))
        assert status == 500
        assert check_error(data, 500)["type"] == "server_error"
        status, _, data = srv.post("/v1/chat/completions", dict(CHAT, max_tokens=2))
        assert status == 200, data
        assert srv.wait_idle(5) == (0, 0, 0)
    finally:
        srv.check_clean_exit()


# ---------------------------------------------------------------- I. backpressure

def test_I_bounded_queue_429_with_error_body():
    """A full waiting queue: 429 + Retry-After with the OpenAI error body; the admitted
    requests finish and the gauges return to 0 (I1 at CPU scale; the 1000-stream version is
    tests/load). Deterministic: steps are slowed (test injection) so that the first request is
    still running when five more arrive; one of them fits the queue, four are refused."""
    srv = Server("--max-seqs", "1", "--max-waiting", "1", env={"PHISERVE_TEST_STEP_SLEEP_MS": "20"})
    try:
        results = []
        body = {"model": M, "prompt": "Hi", "max_tokens": 60, "ignore_eos": True}

        def one():
            results.append(srv.post("/v1/completions", body))

        first = threading.Thread(target=one)
        first.start()
        deadline = time.time() + 30
        while srv.gauge("vllm:num_requests_running") < 1 and time.time() < deadline:
            time.sleep(0.01)
        assert srv.gauge("vllm:num_requests_running") == 1
        threads = [threading.Thread(target=one) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads + [first]:
            t.join(60)
        codes = sorted(r[0] for r in results)
        assert codes == [200, 200, 429, 429, 429, 429], codes
        for status, headers, data in results:
            if status == 429:
                assert headers.get("retry-after")
                check_error(data, 429)
        serves_and_idle(srv)
    finally:
        srv.check_clean_exit()


def test_I_kv_pressure_preempts_and_completes():
    """KV oversubscription on CPU (I3 scaled down): a KV budget for about one long sequence,
    four requests that each need most of it. All complete with their full length (queueing or
    preemption, never a failure), the preemption counter is visible in /metrics, and the KV
    gauge returns to 0."""
    srv = Server("--kv-cache-memory", "2M")
    try:
        results = []

        def one():
            results.append(srv.post("/v1/completions", {"model": M, "prompt": "Once", "max_tokens": 1500,
                                                        "ignore_eos": True, "temperature": 0}, timeout=120))

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert [r[0] for r in results] == [200] * 4, [r[2][:200] for r in results]
        assert all(json.loads(r[2])["usage"]["completion_tokens"] == 1500 for r in results)
        assert len({json.loads(r[2])["choices"][0]["text"] for r in results}) == 1  # greedy: same text
        assert srv.gauge("vllm:num_preemptions_total") >= 1
        serves_and_idle(srv)
    finally:
        srv.check_clean_exit()


# ---------------------------------------------------------------- K. start-up with a broken model

def _model_copy(tmp, name, mutate):
    d = os.path.join(tmp, name)
    os.mkdir(d)
    for f in os.listdir(MODEL):
        p = os.path.join(MODEL, f)
        if os.path.isfile(p):
            with open(p, "rb") as src, open(os.path.join(d, f), "wb") as dst:
                dst.write(src.read())
    mutate(d)
    return d


def _truncate(path, n):
    with open(path, "r+b") as f:
        f.truncate(n)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


K_CASES = {
    "K7-missing": lambda tmp: os.path.join(tmp, "nope"),
    "K7-file": lambda tmp: os.path.join(MODEL, "config.json"),
    "K7-empty-dir": lambda tmp: (os.mkdir(os.path.join(tmp, "empty")), os.path.join(tmp, "empty"))[1],
    "K7-dev-zero": lambda tmp: "/dev/zero",
    "K2-truncated-weights": lambda tmp: _model_copy(
        tmp, "t", lambda d: _truncate(os.path.join(d, "model.safetensors"), 1000)),
    "K2-weights-short-by-1": lambda tmp: _model_copy(
        tmp, "t1", lambda d: _truncate(os.path.join(d, "model.safetensors"),
                                       os.path.getsize(os.path.join(d, "model.safetensors")) - 1)),
    "K3-bad-config": lambda tmp: _model_copy(tmp, "c", lambda d: _write(os.path.join(d, "config.json"), b'{"model_type":')),
    "K3-zero-heads": lambda tmp: _model_copy(tmp, "h", lambda d: _write(
        os.path.join(d, "config.json"),
        json.dumps(dict(json.load(open(os.path.join(MODEL, "config.json"))), num_attention_heads=0)).encode())),
    "K5-corrupt-tokenizer-model": lambda tmp: _model_copy(
        tmp, "s2", lambda d: _write(os.path.join(d, "tokenizer.model"), b"\x0a\xff\xff\xff\xff\x0fgarbage")),
}


@pytest.mark.parametrize("case", sorted(K_CASES))
def test_K_serve_with_broken_model_exits_cleanly(case):
    with tempfile.TemporaryDirectory() as tmp:
        model = K_CASES[case](tmp)
        p = subprocess.run([BIN, "serve", "--model", model, "--port", "0"], capture_output=True, text=True,
                           errors="replace", timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    assert "cannot load model" in p.stderr or "tokenizer" in p.stderr.lower(), p.stderr[-2000:]
    for marker in ("AddressSanitizer", "runtime error:", "Segmentation", "Aborted", "listening on"):
        assert marker not in p.stderr, p.stderr[-2000:]
    assert len(p.stderr.splitlines()) <= 5, p.stderr  # one clean message, no dump
