"""Starts the real `phiserve serve` binary on a free loopback port for black-box tests.

Shared by tests/e2e (official openai client) and tests/http (raw HTTP). The binary and the
model come from the environment that meson sets: PHISERVE_BIN and PHISERVE_MODEL (and
PHISERVE_E2E_ARGS, extra arguments for every server of the run).
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

BIN = os.environ.get("PHISERVE_BIN", "")
MODEL = os.environ.get("PHISERVE_MODEL", "")
# Extra server arguments for a whole run, e.g. "--device cuda" (the cuda-emu suite).
EXTRA_ARGS = os.environ.get("PHISERVE_E2E_ARGS", "").split()
API_KEY = "test-key"


def served_model_name(model_dir):
    """The id phiserve gives a model dir when --served-model-name is not set
    (server/config.c): the directory's basename, trailing slashes ignored, whitespace trimmed."""
    d = model_dir
    while len(d) > 1 and d.endswith("/"):
        d = d[:-1]
    return d[d.rfind("/") + 1:].strip()


MODEL_NAME = served_model_name(MODEL)


class Server:
    """One phiserve process. Its stderr (access log included) is collected in self.log."""

    def __init__(self, *args, api_key=API_KEY, env=None, startup_timeout=60, wait_ready=True):
        """Returns once /health/ready answers 200 (the model is loaded), or with wait_ready False
        as soon as the port is known and /health answers 200 (the model may still be loading)."""
        if not BIN or not os.path.exists(BIN):
            raise RuntimeError("PHISERVE_BIN is not set to the phiserve binary (run through meson test)")
        cmd = [BIN, "serve", "--model", MODEL, "--port", "0", "--threads", "1", *EXTRA_ARGS, *args]
        if api_key:
            cmd += ["--api-key", api_key]
        self.api_key = api_key
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PHISERVE_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace", env=full_env)
        self.log = []
        self._lock = threading.Lock()
        self.port = None
        ready = threading.Event()

        def drain():
            for line in self.proc.stderr:
                with self._lock:
                    self.log.append(line)
                # the first line with the port comes before the model load, the second after
                m = re.search(r"on http://[^\s]*:(\d+)", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=drain, daemon=True)
        self._reader.start()
        if not ready.wait(startup_timeout) or self.port is None:
            self.kill()
            raise RuntimeError("phiserve did not start:\n" + self.log_text())
        self.base = f"http://127.0.0.1:{self.port}"
        path = "/health/ready" if wait_ready else "/health"
        deadline = time.time() + startup_timeout
        while time.time() < deadline:
            try:
                if self.request("GET", path)[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"phiserve {path} never answered 200:\n" + self.log_text())

    def log_text(self):
        with self._lock:
            return "".join(self.log)

    def headers(self, extra=None, auth=True, json_body=True):
        h = {}
        if json_body:
            h["Content-Type"] = "application/json"
        if auth and self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        h.update(extra or {})
        return h

    def request(self, method, path, body=None, headers=None, timeout=60):
        """Returns (status, headers dict with lower-case names, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def post(self, path, body, **kw):
        return self.request("POST", path, body, self.headers(), **kw)

    def get(self, path, **kw):
        return self.request("GET", path, None, self.headers(json_body=False), **kw)

    def metrics(self):
        status, _, data = self.get("/metrics")
        assert status == 200
        out = {}
        for line in data.decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
        return out

    def gauge(self, name):
        for k, v in self.metrics().items():
            if k.startswith(name + "{"):
                return v
        raise KeyError(name)

    def wait_idle(self, timeout=10):
        """Waits until the engine runs nothing and the KV cache is empty; returns the gauges."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = (self.gauge("vllm:num_requests_running"), self.gauge("vllm:num_requests_waiting"),
                    self.gauge("vllm:kv_cache_usage_perc"))
            if last == (0, 0, 0):
                return last
            time.sleep(0.05)
        return last

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout=60):
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(5)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        """SIGTERM and wait; returns the exit status (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        self._reader.join(5)
        return self.proc.returncode

    def check_clean_exit(self):
        """Stops the server and asserts a clean exit: status 0, no sanitizer report."""
        rc = self.stop()
        log = self.log_text()
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer"):
            assert marker not in log, log[-4000:]
        assert rc == 0, f"phiserve exited with {rc}:\n{log[-4000:]}"


def sse_events(raw):
    """Splits an SSE body into its events (each the text between blank lines)."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), repr(text[-50:])
    return text[:-2].split("\n\n")


def read_until_close(sock):
    """Everything a socket delivers until the peer closes it, resets it or goes quiet for the
    socket's timeout."""
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        out += chunk
    return out
