"""Raw-HTTP tests of phiserve (standard library only): what an SDK hides - exact SSE framing,
headers, status codes of the HTTP edge (404/405/413/415/431), malformed bodies, auth, CORS,
request ids, disconnects, and that the server serves a valid request after every bad one."""
import json
import os
import signal
import socket
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from harness import API_KEY, MODEL_NAME, Server, read_until_close, sse_events  # noqa: E402

CHAT = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def assert_still_serves(server):
    status, _, body = server.post("/v1/chat/completions", CHAT)
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["role"] == "assistant"


def assert_error(body, code=None, param=None):
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    return err


def raw_exchange(server, data, read_timeout=10):
    """Sends raw bytes, returns everything the server answers until it closes or times out."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=read_timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and b"Content-Length: " in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                if len(rest) >= n:
                    break
        return out
    finally:
        s.close()


def dechunk(body):
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        n = int(size_line, 16)
        if n == 0:
            break
        out, rest = out + rest[:n], rest[n + 2:]
    return out


# ---------------------------------------------------------------- SSE framing

def test_sse_framing_chat(server):
    body = dict(CHAT, stream=True, stream_options={"include_usage": True}, ignore_eos=True)
    status, headers, data = server.post("/v1/chat/completions", body)
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    assert "content-length" not in headers
    events = sse_events(data)
    assert events[-1] == "data: [DONE]"
    ids = set()
    for ev in events[:-1]:
        assert ev.startswith("data: {") and "\n" not in ev
        obj = json.loads(ev[len("data: "):])
        ids.add(obj["id"])
        assert obj["object"] == "chat.completion.chunk"
    assert len(ids) == 1
    last = json.loads(events[-2][6:])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 4
    assert "prompt_tokens_details" in last["usage"]
    finish = json.loads(events[-3][6:])["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "length"


def test_sse_framing_completions_raw_socket(server):
    body = json.dumps({"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 3, "stream": True,
                       "ignore_eos": True}).encode()
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode() +
           b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
           str(len(body)).encode() + b"\r\n\r\n" + body)
    out = raw_exchange(server, req)
    head, _, rest = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Transfer-Encoding: chunked" in head
    events = sse_events(dechunk(rest))
    assert events[-1] == "data: [DONE]"
    texts = [json.loads(e[6:])["choices"][0] for e in events[:-1]]
    assert texts[-1]["finish_reason"] == "length"
    assert all(t["finish_reason"] is None for t in texts[:-1])


def test_sse_http10_delimited_by_close(server):
    body = json.dumps(dict(CHAT, stream=True)).encode()
    req = (b"POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer " + API_KEY.encode() +
           b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
           b"\r\n\r\n" + body)
    out = raw_exchange(server, req)
    head, _, rest = out.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    assert sse_events(rest)[-1] == "data: [DONE]"


# ---------------------------------------------------------------- status codes of the edge

def test_405_with_allow(server):
    status, headers, body = server.get("/v1/chat/completions")
    assert status == 405 and headers["allow"] == "POST, OPTIONS"
    assert_error(body, "method_not_allowed")
    status, headers, _ = server.request("DELETE", "/v1/models", headers=server.headers())
    assert status == 405 and "GET" in headers["allow"]
    assert_still_serves(server)


@pytest.mark.parametrize("path", ["/v1/chat/completionz", "//v1/chat/completions", "/v1/%2e%2e/health",
                                  "/v1/chat/completions;x", "/"])
def test_404(server, path):
    status, _, body = server.request("POST", path, b"{}", server.headers())
    assert status == 404
    assert_error(body, "not_found")
    assert_still_serves(server)


def test_404_needs_auth_first(server):
    status, _, _ = server.request("GET", "/v1/nothing-here")
    assert status == 401  # deny by default: unknown paths do not reveal themselves


def test_415(server):
    for ct in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
        status, _, body = server.request("POST", "/v1/chat/completions", json.dumps(CHAT),
                                         server.headers({"Content-Type": ct}))
        assert status == 415, ct
        assert_error(body, "unsupported_media_type")
    status, _, _ = server.request("POST", "/v1/chat/completions", json.dumps(CHAT),
                                  server.headers({"Content-Type": "application/json; charset=utf-8"}))
    assert status == 200
    assert_still_serves(server)


def test_413_content_length_before_body(server):
    """A huge Content-Length is refused from the headers alone: no 100 Continue, no body read."""
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode() +
           b"\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 9999999999\r\n\r\n")
    t0 = time.time()
    out = raw_exchange(server, req)
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    assert b"100 Continue" not in out
    assert time.time() - t0 < 5
    assert_still_serves(server)


def test_413_chunked_body(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    try:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode() +
                  b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"a" * 65536
        sent = 0
        try:
            while sent < 9 * 1024 * 1024:
                s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                sent += len(piece)
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may close as soon as it has answered
        out = read_until_close(s)
        assert out.startswith(b"HTTP/1.1 413"), out[:200]
    finally:
        s.close()
    assert_still_serves(server)


def test_431_huge_header(server):
    status, _, _ = server.request("GET", "/v1/models", headers=server.headers({"X-Big": "b" * 40000}))
    assert status == 431
    assert_still_serves(server)


def test_cl_and_te_together_rejected(server):
    body = json.dumps(CHAT).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode() +
           b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
           b"\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    out = raw_exchange(server, req)
    assert out.startswith(b"HTTP/1.1 400"), out[:100]
    assert_still_serves(server)


# ---------------------------------------------------------------- bodies

@pytest.mark.parametrize("body,code", [
    (b"", "invalid_json"),
    (b"   ", "invalid_json"),
    (b"null", "invalid_json"),
    (b"42", "invalid_json"),
    (b"[]", "invalid_json"),
    (b"not json{{{", "invalid_json"),
    (b'{"model": "phi3-demo"} xyz', "invalid_json"),
    (b'{"model":"phi3-demo","messages":[{"role":"user","content":"\xc0\xaf"}]}', "invalid_json"),
    (b'{"model":"phi3-demo","messages":[{"role":"user","content":"\xed\xa0\x80"}]}', "invalid_json"),
    (b'{"model":"phi3-demo","messages":[{"role":"user","content":"a\\u0000b"}]}', "invalid_json"),
    (b'{"model":"phi3-demo","messages":[{"role":"user","content":"\\ud800"}]}', "invalid_json"),
    (b'{"model":"phi3-demo"}\x00{"n":1000}', "invalid_json"),
    (b'{"model":"phi3-demo","max_tokens":1,"max_tokens":100000,"messages":[]}', "duplicate_key"),
    (b'[' * 100000, None),
])
def test_bad_bodies(server, body, code):
    status, _, data = server.request("POST", "/v1/chat/completions", body, server.headers())
    assert status == 400, data
    assert_error(data, code)
    assert_still_serves(server)


@pytest.mark.parametrize("patch,param", [
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 2147483648}, "max_tokens"),
    ({"n": 1000000}, "n"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_logprobs": "5"}, "top_logprobs"),
    ({"stream": "yes"}, "stream"),
    ({"stop": [""]}, None),
    ({"logit_bias": {"999999999": 1}}, None),
])
def test_bad_fields_are_400_with_param(server, patch, param):
    status, _, data = server.post("/v1/chat/completions", dict(CHAT, **patch))
    assert status == 400, data
    err = assert_error(data)
    if param:
        assert err["param"].startswith(param)
    assert_still_serves(server)


def test_unknown_field_ignored_and_case_sensitive(server):
    status, _, data = server.post("/v1/chat/completions", dict(CHAT, foo=1, Max_Tokens=100000))
    assert status == 200
    assert json.loads(data)["usage"]["completion_tokens"] <= 4


def test_context_length_exceeded(server):
    status, _, data = server.post("/v1/chat/completions", dict(CHAT, max_tokens=4096))
    assert status == 400
    assert_error(data, "context_length_exceeded", "messages")


def test_tokenize_detokenize(server):
    status, _, data = server.post("/tokenize", {"model": MODEL_NAME, "prompt": "Hello world",
                                                "return_token_strs": True})
    assert status == 200
    tk = json.loads(data)
    assert tk["count"] == len(tk["tokens"]) and tk["tokens"][0] == 1 and tk["max_model_len"] == 4096
    assert len(tk["token_strs"]) == tk["count"]
    status, _, data = server.post("/detokenize", {"model": MODEL_NAME, "tokens": tk["tokens"]})
    assert status == 200 and json.loads(data)["prompt"].endswith("Hello world")
    status, _, data = server.post("/detokenize", {"tokens": [-1]})
    assert status == 400 and assert_error(data)["param"] == "tokens[0]"
    status, _, data = server.post("/tokenize", {"prompt": "x", "model": "nope"})
    assert status == 404


# ---------------------------------------------------------------- health, metrics, headers

def test_health_public_others_not(server):
    assert server.request("GET", "/health")[0] == 200
    assert server.request("GET", "/health/ready")[0] == 200
    for path in ("/metrics", "/version", "/v1/models"):
        status, headers, body = server.request("GET", path)
        assert status == 401, path
        assert headers["www-authenticate"] == "Bearer"
        assert_error(body, "invalid_api_key")
    for path in ("/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"):
        assert server.request("POST", path, json.dumps(CHAT), {"Content-Type": "application/json"})[0] == 401


@pytest.mark.parametrize("value", [f"Bearer {API_KEY} ", f"Bearer {API_KEY[:-1]}x", f"Bearer {API_KEY}x",
                                   API_KEY, f"Basic {API_KEY}", "Bearer "])
def test_bad_keys(server, value):
    status, _, _ = server.request("GET", "/v1/models", headers={"Authorization": value})
    assert status == 401


def test_metrics_names(server):
    assert_still_serves(server)
    m = server.metrics()
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:num_preemptions_total",
                 "vllm:prefix_cache_hits_total", "vllm:time_to_first_token_seconds_count",
                 "vllm:inter_token_latency_seconds_count", "vllm:e2e_request_latency_seconds_count",
                 "phiserve_cuda_graph_replays_total", "phiserve_cuda_graph_records_total",
                 "phiserve_device_sampled_rows_total"):
        assert any(k.startswith(name + "{") for k in m), name
    assert server.gauge("vllm:generation_tokens_total") > 0
    assert server.gauge("vllm:e2e_request_latency_seconds_count") > 0
    # the CPU backend never records or replays CUDA graphs
    assert server.gauge("phiserve_cuda_graph_replays_total") == 0
    assert server.gauge("phiserve_cuda_graph_records_total") == 0
    assert server.gauge("phiserve_device_sampled_rows_total") == 0  # the host samples


def test_request_id(server):
    _, h, _ = server.request("GET", "/health", headers={"X-Request-Id": "abc-123"})
    assert h["x-request-id"] == "abc-123"
    _, h, _ = server.request("GET", "/health", headers={"X-Request-Id": "a b<script>"})
    assert h["x-request-id"].startswith("req-")
    out = raw_exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\x01Set-Cookie: x\r\n"
                               b"Connection: close\r\n\r\n")
    assert b"Set-Cookie" not in out


def test_cors_off_by_default(server):
    _, h, _ = server.request("GET", "/v1/models", headers=server.headers({"Origin": "https://evil.example"},
                                                                         json_body=False))
    assert "access-control-allow-origin" not in h
    status, h, _ = server.request("OPTIONS", "/v1/chat/completions",
                                  headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in h


def test_cors_allow_list():
    srv = Server("--allowed-origins", "https://good.example")
    try:
        pre = {"Origin": "https://good.example", "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization,content-type"}
        status, h, _ = srv.request("OPTIONS", "/v1/chat/completions", headers=pre)
        assert status == 204 and h["access-control-allow-origin"] == "https://good.example"
        assert "authorization" in h["access-control-allow-headers"].lower()
        status, h, _ = srv.request("OPTIONS", "/v1/chat/completions", headers=dict(pre, Origin="https://evil.example"))
        assert "access-control-allow-origin" not in h
        status, h, _ = srv.post("/v1/chat/completions", CHAT)
        assert "access-control-allow-origin" not in h  # no Origin sent
        status, h, _ = srv.request("POST", "/v1/chat/completions", json.dumps(CHAT),
                                   srv.headers({"Origin": "https://good.example"}))
        assert status == 200 and h["access-control-allow-origin"] == "https://good.example"
        assert h["access-control-allow-origin"] != "*"
    finally:
        srv.stop()


# ---------------------------------------------------------------- disconnects, logs, lifecycle

def open_stream(port, body):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode() +
              b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(data)).encode() +
              b"\r\n\r\n" + data)
    first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 200"), first[:200]
    return s


def test_disconnect_mid_stream_frees_kv(server):
    long = {"model": MODEL_NAME, "prompt": "Once", "max_tokens": 4000, "stream": True, "ignore_eos": True}
    socks = [open_stream(server.port, long) for _ in range(4)]
    for s in socks:
        s.close()
    assert server.wait_idle(15) == (0, 0, 0)
    assert_still_serves(server)
    assert "aborted" in server.log_text()


def post_raw(port, path, body):
    """Sends one POST without reading the answer; returns the socket."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    data = json.dumps(body).encode()
    s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
              API_KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: " +
              str(len(data)).encode() + b"\r\n\r\n" + data)
    return s


def wait_gauges(srv, want, timeout):
    """Polls (running, waiting, kv usage) until want(gauges) holds or timeout seconds pass;
    returns the last gauges."""
    deadline = time.time() + timeout
    while True:
        g = (srv.gauge("vllm:num_requests_running"), srv.gauge("vllm:num_requests_waiting"),
             srv.gauge("vllm:kv_cache_usage_perc"))
        if want(g) or time.time() > deadline:
            return g
        time.sleep(0.02)


def test_disconnect_non_stream_cancels():
    """Non-streaming requests whose client hangs up while the connection is parked waiting for
    the engine are cancelled within a couple of seconds: one waiting in the queue (it gets no
    engine event at all until admitted) and one decoding. Run to the end, the decoding one
    would take over ten seconds more (4000 tokens on the reference backend)."""
    srv = Server("--device", "ref", "--max-seqs", "1")
    try:
        long = {"model": MODEL_NAME, "prompt": "Once", "max_tokens": 4000, "ignore_eos": True}
        running = post_raw(srv.port, "/v1/completions", long)
        g = wait_gauges(srv, lambda g: g[0] == 1 and g[2] > 0, 10)
        assert g[0] == 1 and g[2] > 0, g
        queued = post_raw(srv.port, "/v1/chat/completions", dict(CHAT, max_tokens=4000, ignore_eos=True))
        g = wait_gauges(srv, lambda g: g[1] == 1, 10)
        assert g[:2] == (1, 1), g
        time.sleep(0.3)  # both connections parked (suspended)
        t0 = time.time()
        queued.close()
        g = wait_gauges(srv, lambda g: g[1] == 0, 2.5)
        assert g[:2] == (1, 0), g  # the queued one left the queue; the other still runs
        assert time.time() - t0 < 2.5
        t0 = time.time()
        running.close()
        assert wait_gauges(srv, lambda g: g == (0, 0, 0), 2.5) == (0, 0, 0)
        assert time.time() - t0 < 2.5
        time.sleep(0.3)
        log = srv.log_text().splitlines()
        assert any('"POST /v1/chat/completions" 0' in ln and "aborted" in ln for ln in log), log
        assert any('"POST /v1/completions" 0' in ln and "aborted" in ln for ln in log), log
        assert_still_serves(srv)
    finally:
        srv.check_clean_exit()


def test_access_log_escapes_and_hides_prompts(server):
    secret = "SECRET-PROMPT\n[INFO] fake log line\x1b[31m"
    status, _, _ = server.post("/v1/chat/completions",
                               dict(CHAT, messages=[{"role": "user", "content": secret}]))
    assert status == 200
    raw_exchange(server, b"GET /v1/models\x1b[31m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    time.sleep(0.2)
    log = server.log_text()
    assert "SECRET-PROMPT" not in log
    assert "[INFO] fake log line" not in log
    assert "\x1b" not in log
    lines = [ln for ln in log.splitlines() if '"POST /v1/chat/completions" 200' in ln]
    assert lines and "id=" in lines[-1] and "prompt_tokens=" in lines[-1] and "ms" in lines[-1]


def test_log_prompts_flag_escapes():
    srv = Server("--log-prompts")
    try:
        srv.post("/v1/chat/completions", dict(CHAT, messages=[{"role": "user", "content": "VISIBLE\nNEXT"}]))
        time.sleep(0.2)
        log = srv.log_text()
        assert "VISIBLE\\nNEXT" in log and "VISIBLE\nNEXT" not in log
    finally:
        srv.stop()


def test_drain_on_sigterm():
    """SIGTERM: readiness 503, new requests 503, the running stream finishes, exit 0."""
    srv = Server("--device", "ref", "--shutdown-timeout", "60")
    try:
        body = {"model": MODEL_NAME, "prompt": "Once", "max_tokens": 1000, "stream": True, "ignore_eos": True}
        s = open_stream(srv.port, body)
        srv.signal(signal.SIGTERM)
        deadline = time.time() + 5
        while srv.request("GET", "/health/ready")[0] != 503 and time.time() < deadline:
            time.sleep(0.02)
        assert srv.request("GET", "/health/ready")[0] == 503
        assert srv.request("GET", "/health")[0] == 200
        status, headers, data = srv.post("/v1/chat/completions", CHAT)
        assert status == 503 and headers.get("retry-after")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if out.endswith(b"0\r\n\r\n"):
                break
        s.close()
        assert b"data: [DONE]" in out
        assert b'"finish_reason":"length"' in out
        assert srv.wait(60) == 0
    finally:
        srv.kill()


def test_shutdown_timeout_aborts_stream_with_error_event():
    srv = Server("--device", "ref", "--shutdown-timeout", "0")
    try:
        body = {"model": MODEL_NAME, "prompt": "Once", "max_tokens": 4000, "stream": True, "ignore_eos": True}
        s = open_stream(srv.port, body)
        t0 = time.time()
        srv.signal(signal.SIGTERM)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        s.close()
        assert srv.wait(30) == 0
        assert time.time() - t0 < 10
        assert b'data: {"error":' in out
        assert b"data: [DONE]" not in out
    finally:
        srv.kill()


def test_second_signal_exits_at_once():
    srv = Server("--device", "ref", "--shutdown-timeout", "600")
    try:
        body = {"model": MODEL_NAME, "prompt": "Once", "max_tokens": 4000, "stream": True, "ignore_eos": True}
        s = open_stream(srv.port, body)
        srv.signal(signal.SIGTERM)
        time.sleep(0.3)
        t0 = time.time()
        srv.signal(signal.SIGTERM)
        rc = srv.wait(10)
        assert rc != 0 and time.time() - t0 < 5
        s.close()
    finally:
        srv.kill()


def test_many_streams_half_disconnect(server):
    """60 concurrent streaming clients, half hanging up mid-stream; afterwards nothing runs and
    the KV cache is empty, and the complete streams are well-formed."""
    results = []

    def client(i):
        body = {"model": MODEL_NAME, "prompt": "Once", "max_tokens": 200, "stream": True, "ignore_eos": True}
        s = open_stream(server.port, body)
        try:
            if i % 2:
                s.recv(100)
                s.close()
                results.append("closed")
                return
            out = b""
            while not out.endswith(b"0\r\n\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
            results.append("done" if b"data: [DONE]" in out else "bad")
        finally:
            s.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results.count("done") == 30 and results.count("closed") == 30, results
    assert server.wait_idle(15) == (0, 0, 0)
    assert_still_serves(server)


def test_ping_keeps_queued_stream_alive():
    """A stream waiting behind another request gets ': ping' comments while its connection is
    suspended (the ticker resumes it), then its tokens."""
    srv = Server("--device", "ref", "--max-seqs", "1", "--sse-ping-interval", "1")
    try:
        blocker = threading.Thread(target=srv.post, args=(
            "/v1/completions", {"model": MODEL_NAME, "prompt": "Once", "max_tokens": 1500, "ignore_eos": True}))
        blocker.start()
        time.sleep(0.2)
        status, _, data = srv.post("/v1/chat/completions", dict(CHAT, stream=True, ignore_eos=True))
        blocker.join(60)
        assert status == 200
        events = sse_events(data)
        assert ": ping" in events
        first_content = next(i for i, e in enumerate(events) if '"content":"' in e and '"role"' not in e)
        assert events.index(": ping") < first_content
        assert events[-1] == "data: [DONE]"
    finally:
        srv.stop()


def test_config_precedence(tmp_path):
    """flags > PHISERVE_* environment > config file > defaults."""
    conf = tmp_path / "phiserve.conf"
    conf.write_text("# test\nserved-model-name = from-file\nmax_body_bytes = 1K\n")

    def names(*args, env=None):
        srv = Server("--config", str(conf), *args, env=env)
        try:
            status, _, data = srv.get("/v1/models")
            big = srv.post("/v1/chat/completions", dict(CHAT, pad="x" * 2000))[0]
            return json.loads(data)["data"][0]["id"], big
        finally:
            srv.stop()

    assert names() == ("from-file", 413)
    assert names(env={"PHISERVE_SERVED_MODEL_NAME": "from-env"}) == ("from-env", 413)
    assert names("--served-model-name", "from-flag", "--max-body-bytes", "1M",
                 env={"PHISERVE_SERVED_MODEL_NAME": "from-env"})[0] == "from-flag"


def test_bad_config_is_a_startup_error(tmp_path):
    import subprocess
    from harness import BIN
    conf = tmp_path / "bad.conf"
    conf.write_text("no-such-key = 1\n")
    p = subprocess.run([BIN, "serve", "--config", str(conf), "--port", "0"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2 and "no-such-key" in p.stderr
    p = subprocess.run([BIN, "serve", "--port", "70000"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "--port" in p.stderr
    for value in ("abc", "-1", "16777217", "1.5"):
        p = subprocess.run([BIN, "serve", "--max-seq-len-to-capture", value, "--port", "0"], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 2 and "--max-seq-len-to-capture" in p.stderr, value
    p = subprocess.run([BIN, "serve", "--enforce-eager=maybe", "--port", "0"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2 and "--enforce-eager" in p.stderr
    p = subprocess.run([BIN, "serve", "--port", "0"], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, PHISERVE_MAX_SEQ_LEN_TO_CAPTURE="lots"))
    assert p.returncode == 2 and "PHISERVE_MAX_SEQ_LEN_TO_CAPTURE" in p.stderr
    conf.write_text("max-seq-len-to-capture = 0x100\n")
    p = subprocess.run([BIN, "serve", "--config", str(conf), "--port", "0"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2 and "bad.conf:1" in p.stderr and "--max-seq-len-to-capture" in p.stderr
    p = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "PHISERVE_API_KEY" in p.stdout
    assert "--enforce-eager" in p.stdout and "PHISERVE_MAX_SEQ_LEN_TO_CAPTURE" in p.stdout


def test_cuda_graph_options_accepted_on_cpu(tmp_path):
    """--enforce-eager and --max-seq-len-to-capture only matter with --device cuda; other devices
    accept them (as vLLM does) from flags, environment and config file, and serve as usual."""
    conf = tmp_path / "phiserve.conf"
    conf.write_text("enforce_eager = true\nmax-seq-len-to-capture = 16\n")
    for args, env in ((("--enforce-eager", "--max-seq-len-to-capture", "4096"), None),
                      (("--config", str(conf)), None),
                      ((), {"PHISERVE_ENFORCE_EAGER": "1", "PHISERVE_MAX_SEQ_LEN_TO_CAPTURE": "1"})):
        srv = Server(*args, env=env)
        try:
            assert_still_serves(srv)
            assert srv.gauge("phiserve_cuda_graph_replays_total") == 0
        finally:
            srv.stop()


def test_quantization_q8_0_serves(tmp_path):
    """--quantization q8_0 or q4_0 (flag, environment or config file) quantizes the weights at
    load and serves as usual; an unknown name is a startup error (2), and q8_0 with --device cuda a load
    error (1) that says which devices it runs on."""
    import subprocess
    from harness import BIN
    conf = tmp_path / "phiserve.conf"
    conf.write_text("quantization = q8_0\n")
    for args, env in ((("--quantization", "q8_0"), None), (("--config", str(conf)), None),
                      ((), {"PHISERVE_QUANTIZATION": "q4_0"})):
        srv = Server(*args, env=env)
        try:
            assert_still_serves(srv)
        finally:
            srv.stop()
    p = subprocess.run([BIN, "serve", "--quantization", "q4_k", "--port", "0"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2 and "--quantization" in p.stderr and "q4_0" in p.stderr
    p = subprocess.run([BIN, "serve", "--quantization", "q8_0", "--device", "cuda", "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "cpu and ref devices" in p.stderr, p.stderr


def test_int8_activations_serves(tmp_path):
    """--int8-activations (flag, environment or config file) with Q8_0/Q4_0 weights serves as usual
    and says so at startup, as does the default (auto) with quantized weights on the cpu, while
    auto leaves a float model and the ref device on the plain path and off turns it off; it is
    in --help; without Q8_0/Q4_0 matrices (a float model, no --quantization) and with --device
    cuda it is a load error (1) that says what to do."""
    import subprocess
    from harness import BIN
    conf = tmp_path / "phiserve.conf"
    conf.write_text("quantization = q4_0\nint8_activations = true\n")
    for args, env, on in ((("--quantization", "q8_0", "--int8-activations"), None, True),
                          (("--config", str(conf)), None, True),
                          ((), {"PHISERVE_QUANTIZATION": "q8_0", "PHISERVE_INT8_ACTIVATIONS": "1"}, True),
                          (("--quantization", "q4_0"), None, True),
                          (("--quantization", "q4_0", "--int8-activations=off"), None, False),
                          (("--quantization", "q4_0", "--device", "ref"), None, False),
                          ((), None, False)):
        srv = Server(*args, env=env)
        try:
            assert_still_serves(srv)
            assert (", int8 activations, KV cache" in srv.log_text()) == on, (args, srv.log_text()[-500:])
        finally:
            srv.stop()
    p = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "--int8-activations" in p.stdout
    assert "PHISERVE_INT8_ACTIVATIONS" in p.stdout
    p = subprocess.run([BIN, "serve", "--int8-activations", "--port", "0"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 1 and "int8 activations need Q8_0, Q4_0, Q4_K, Q5_K or Q6_K" in p.stderr, p.stderr
    assert "--quantization q8_0|q4_0" in p.stderr
    p = subprocess.run([BIN, "serve", "--int8-activations", "--quantization", "q8_0", "--device",
                        "cuda", "--port", "0"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "--int8-activations" in p.stderr, p.stderr
    assert "cpu and ref" in p.stderr
    p = subprocess.run([BIN, "serve", "--int8-activations=maybe", "--port", "0"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "--int8-activations" in p.stderr


def test_kv_cache_dtype(tmp_path):
    """--kv-cache-dtype bf16 / f16 keep the CPU cache in 16 bits (the same byte budget then holds
    twice the blocks: KV usage per request halves) and serve as usual; an unknown name is a
    startup error (2), and f16 with --device cuda a load error (1)."""
    import subprocess
    from harness import BIN
    blocks = {}
    for dtype in ("f32", "bf16", "f16"):
        srv = Server("--kv-cache-dtype", dtype, "--kv-cache-memory", "64M")
        try:
            assert_still_serves(srv)
            assert f"KV cache {dtype})" in srv.log_text(), srv.log_text()[-500:]
            total = [v for k, v in srv.metrics().items()
                     if k.startswith("phiserve_kv_cache_blocks{") and 'state="total"' in k]
            assert len(total) == 1
            blocks[dtype] = total[0]
        finally:
            srv.stop()
    assert blocks["bf16"] == blocks["f16"] == 2 * blocks["f32"], blocks
    p = subprocess.run([BIN, "serve", "--kv-cache-dtype", "fp8", "--port", "0"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2 and "--kv-cache-dtype" in p.stderr
    p = subprocess.run([BIN, "serve", "--kv-cache-dtype", "f16", "--device", "cuda", "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and ("kv cache dtype" in p.stderr or "cuda" in p.stderr), p.stderr


def test_version_and_head(server):
    status, _, data = server.get("/version")
    assert status == 200 and json.loads(data)["version"]
    status, h, data = server.request("HEAD", "/health")
    assert status == 200 and data == b""


def test_gguf_model_serves():
    """A GGUF file (the demo model as pure Q4_0 with its tokenizer, chat template and special
    ids in the metadata, tests/fixtures/models/phi3-demo/gguf) serves chat completions; its
    tokenizer and chat template give the ids the model directory's do (/tokenize of the same
    messages and texts), and generation stops on the file's end tokens."""
    from harness import MODEL, MODEL_NAME
    gguf_path = os.path.join(MODEL, "gguf", "q4_0.gguf")
    assert os.path.exists(gguf_path), gguf_path
    probes = [{"model": MODEL_NAME, "messages": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "Hello  there,\n 世界 🙂"}]},
              {"model": MODEL_NAME, "prompt": "<|user|>\n Hi<|end|>\n<|assistant|>\n a  b"},
              {"model": MODEL_NAME, "prompt": "plain text, no special tokens", "add_special_tokens": False}]
    ids = {}
    for name, args in (("dir", ()), ("gguf", ("--model", gguf_path, "--served-model-name", MODEL_NAME))):
        srv = Server(*args)
        try:
            assert_still_serves(srv)
            status, _, body = srv.post("/v1/chat/completions", {
                "model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 4, "temperature": 0})
            assert status == 200, body
            assert json.loads(body)["usage"]["completion_tokens"] >= 1
            ids[name] = []
            for p in probes:
                status, _, body = srv.post("/tokenize", p)
                assert status == 200, body
                ids[name].append(json.loads(body)["tokens"])
        finally:
            srv.stop()
    assert ids["gguf"] == ids["dir"], ids
    assert 32007 in ids["gguf"][0] and 32010 in ids["gguf"][0], ids["gguf"][0]  # <|end|>, <|user|>
