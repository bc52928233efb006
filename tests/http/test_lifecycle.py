"""Process lifecycle and overload cases of reference/reliability.md §7 against the real binary:
L5 (/health while the model loads), L7 (forward-progress check on a wedged engine step), I2
(idle connections beyond --max-connections) and I6 (a burst with n = max_n against a small
waiting queue). L5 and L7 use the test-only variables PHISERVE_TEST_LOAD_DELAY_MS and
PHISERVE_TEST_STEP_SLEEP_MS (see CATALOGUE.md). Standard library only."""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from harness import BIN, MODEL_NAME, Server  # noqa: E402

CHAT = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def check_503(status, headers, body, words):
    assert status == 503, (status, body)
    assert headers.get("retry-after"), headers
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert err["type"] == "service_unavailable_error", err
    assert words in err["message"], err


# ---------------------------------------------------------------- L5

def test_L5_health_during_model_load_503_then_200():
    """The daemon listens before the model loads: /health 200 (alive), /health/ready 503, every
    other route 503 + Retry-After with the OpenAI error body; then ready 200 and requests serve."""
    srv = Server(env={"PHISERVE_TEST_LOAD_DELAY_MS": "1500"}, wait_ready=False)
    try:
        assert "listening on" not in srv.log_text()  # the "loaded" line has not come yet
        status, _, body = srv.request("GET", "/health")
        assert status == 200 and json.loads(body) == {"status": "loading"}, body
        check_503(*srv.request("GET", "/health/ready"), "loading")
        assert srv.request("GET", "/health/decode")[0] == 200  # nothing to stall on
        check_503(*srv.get("/v1/models"), "loading")
        check_503(*srv.post("/v1/chat/completions", CHAT), "loading")
        check_503(*srv.post("/v1/completions", {"model": MODEL_NAME, "prompt": [1, 2], "max_tokens": 1}),
                  "loading")
        # auth still comes first: no answer about the model's state to an unauthenticated caller
        assert srv.request("GET", "/v1/models")[0] == 401
        deadline = time.time() + 30
        while srv.request("GET", "/health/ready")[0] != 200 and time.time() < deadline:
            time.sleep(0.05)
        assert srv.request("GET", "/health/ready")[0] == 200
        assert "listening on" in srv.log_text()
        assert json.loads(srv.request("GET", "/health")[2]) == {"status": "ok"}
        status, _, body = srv.post("/v1/chat/completions", CHAT)
        assert status == 200, body
        assert srv.wait_idle(10) == (0, 0, 0)
    finally:
        srv.check_clean_exit()


def test_L5_load_failure_after_listening_exits_1():
    """A model that fails to load while /health answers: exit 1 with the one message, as before
    the daemon listened first."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PHISERVE_")}
        env["PHISERVE_TEST_LOAD_DELAY_MS"] = "1000"
        p = subprocess.Popen([BIN, "serve", "--model", tmp, "--port", "0"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace",
                             env=env)
        try:
            first = p.stderr.readline()
            m = re.search(r"on http://[^\s]*:(\d+)", first)
            assert m, first
            conn = socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=5)
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
            conn.close()
            assert answer.startswith(b"HTTP/1.1 200") and b'"loading"' in answer, answer
            rest = p.stderr.read()
            assert p.wait(30) == 1
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert "cannot load model" in rest, rest
    for marker in ("AddressSanitizer", "runtime error:", "listening on"):
        assert marker not in rest, rest
    assert len(rest.splitlines()) <= 3, rest


# ---------------------------------------------------------------- L7

def test_L7_wedged_step_fails_readiness_after_stall_timeout():
    """Each engine step sleeps 2.5 s (test injection) with --stall-timeout 1: while a request runs,
    /health/ready and /health/decode turn 503 one second after the step started (idle time before
    it does not count), /health stays 200; when the step ends the request completes and both are
    200 again."""
    srv = Server("--stall-timeout", "1", env={"PHISERVE_TEST_STEP_SLEEP_MS": "2500"})
    try:
        time.sleep(1.2)  # idle for longer than the threshold: must not count as a stall
        assert srv.request("GET", "/health/ready")[0] == 200
        assert srv.request("GET", "/health/decode")[0] == 200
        result = []
        t0 = time.time()
        worker = threading.Thread(target=lambda: result.append(
            srv.post("/v1/completions", {"model": MODEL_NAME, "prompt": [1, 2, 3], "max_tokens": 1})))
        worker.start()
        first_503 = None
        decode_503 = False
        # Both checks are polled side by side: the step may end between two probes.
        while worker.is_alive() and time.time() - t0 < 30 and not (first_503 and decode_503):
            status, headers, body = srv.request("GET", "/health/ready")
            if status == 503:
                check_503(status, headers, body, "no progress")
                first_503 = first_503 or time.time() - t0
            status, headers, body = srv.request("GET", "/health/decode")
            if status == 503:
                check_503(status, headers, body, "no progress")
                decode_503 = True
            if first_503 or decode_503:
                assert srv.request("GET", "/health")[0] == 200
            time.sleep(0.02)
        worker.join(60)
        assert first_503 is not None, "readiness never reported the stalled step"
        assert decode_503, "/health/decode never reported the stalled step"
        assert first_503 >= 0.95, f"503 after {first_503:.2f} s: idle time was counted as a stall"
        assert result and result[0][0] == 200, result
        assert srv.request("GET", "/health/ready")[0] == 200
        assert srv.request("GET", "/health/decode")[0] == 200
    finally:
        srv.check_clean_exit()


# ---------------------------------------------------------------- I2

def test_I2_idle_connections_beyond_the_limit():
    """100 idle connections against --max-connections 64: MHD accepts 64 and leaves the rest in
    the kernel's listen backlog (not accepted, so no fd is spent on them and nothing crashes);
    while the limit is held a new /health is not answered (there is no reserved path: see
    CATALOGUE.md); once the idle clients go, /health answers and a request is served."""
    srv = Server("--max-connections", "64")
    socks = []
    try:
        fds_before = len(os.listdir(f"/proc/{srv.proc.pid}/fd"))
        for _ in range(100):
            c = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            socks.append(c)
        time.sleep(0.5)
        fds_held = len(os.listdir(f"/proc/{srv.proc.pid}/fd"))
        assert 64 - 2 <= fds_held - fds_before <= 64, (fds_before, fds_held)
        assert srv.proc.poll() is None
        probe = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        probe.settimeout(1.0)
        probe.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        try:
            got = probe.recv(4096)
        except socket.timeout:
            got = None
        probe.close()
        assert got is None, f"a connection beyond the limit was served: {got!r}"
        for c in socks:
            c.close()
        socks = []
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                if srv.request("GET", "/health", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
        assert srv.request("GET", "/health", timeout=2)[0] == 200
        status, _, body = srv.post("/v1/chat/completions", CHAT)
        assert status == 200, body
        assert srv.wait_idle(10) == (0, 0, 0)
    finally:
        for c in socks:
            c.close()
        srv.check_clean_exit()


# ---------------------------------------------------------------- I6

def test_I6_burst_with_max_n_against_small_queue():
    """200 requests at once with n = max_n (8) against --max-seqs 2 --max-waiting 4: 429 with
    Retry-After and the error body beyond the budget, every admitted request completes with its 8
    choices, and /health keeps answering during the burst (its p99 is printed; bound 500 ms on
    this shared 2-core machine, where the reference's 100 ms is the target)."""
    srv = Server("--max-seqs", "2", "--max-waiting", "4")
    try:
        body = {"model": MODEL_NAME, "prompt": "Once upon a time", "max_tokens": 96, "n": 8,
                "ignore_eos": True}
        results = []
        lock = threading.Lock()
        go = threading.Event()

        def one():
            go.wait()
            r = srv.post("/v1/completions", body, timeout=120)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=one) for _ in range(200)]
        for t in threads:
            t.start()
        latencies, waiting = [], []
        stop = threading.Event()

        def probe():
            while not stop.is_set():
                t = time.perf_counter()
                status = srv.request("GET", "/health", timeout=10)[0]
                latencies.append((time.perf_counter() - t, status))
                waiting.append(srv.gauge("vllm:num_requests_waiting"))
                time.sleep(0.01)

        prober = threading.Thread(target=probe)
        prober.start()
        go.set()
        for t in threads:
            t.join(120)
        stop.set()
        prober.join(30)
        codes = [r[0] for r in results]
        assert len(codes) == 200 and set(codes) <= {200, 429}, sorted(set(codes))
        ok = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] == 429]
        assert refused, "no request was refused: the queue bound did not apply"
        # n = 8 is more than --max-seqs 2, so one request runs at a time; the queue takes 4
        assert len(ok) >= 4, len(ok)
        assert max(waiting) <= 4, f"waiting gauge reached {max(waiting)} with --max-waiting 4"
        for _, _, data in ok:
            choices = json.loads(data)["choices"]
            assert sorted(c["index"] for c in choices) == list(range(8)), choices
            assert all(c["finish_reason"] == "length" for c in choices), choices
        for _, headers, data in refused:
            assert headers.get("retry-after"), headers
            assert json.loads(data)["error"]["type"], data
        assert latencies and all(s == 200 for _, s in latencies), latencies[:10]
        lat = sorted(x for x, _ in latencies)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"I6: {len(ok)} admitted, {len(refused)} refused; /health p99 {p99 * 1000:.1f} ms "
              f"over {len(lat)} probes (max {lat[-1] * 1000:.1f} ms)")
        assert p99 < 0.5, f"/health p99 {p99 * 1000:.1f} ms during the burst"
        status, _, data = srv.post("/v1/chat/completions", CHAT)
        assert status == 200, data
        assert srv.wait_idle(10) == (0, 0, 0)
    finally:
        srv.check_clean_exit()
