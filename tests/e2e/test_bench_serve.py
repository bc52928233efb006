"""scripts/bench_serve, the serving benchmark client: runs it against the suite's server and
checks its result file against the metric definitions (docs/bench_serve.md), the load shape
(Poisson arrivals) and a failing run (a wrong API key); unit-tests its arrival-time generator
and metric computation by importing it. A few seconds on a 2-core machine."""
import importlib.machinery
import importlib.util
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time

import pytest

from harness import API_KEY

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "bench_serve")
RUN_TIMEOUT_S = 120   # a whole bench_serve run; a hang fails the test instead of stalling it


def load_module():
    """The script as a module (it has no .py extension, so by its loader)."""
    loader = importlib.machinery.SourceFileLoader("bench_serve", SCRIPT)
    spec = importlib.util.spec_from_loader("bench_serve", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


bs = load_module()


def run_bench(server, tmp_path, *args, api_key=API_KEY):
    """Runs bench_serve against server; returns (exit status, stdout, stderr, result JSON,
    wall seconds)."""
    out = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, SCRIPT, "--base-url", server.base, "--api-key", api_key,
                        "--timeout", "60", "--save-result", str(out), *args],
                       capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env)
    wall = time.monotonic() - t0
    result = json.loads(out.read_text()) if out.exists() else None
    return p.returncode, p.stdout, p.stderr, result, wall


def test_script_is_executable():
    assert os.access(SCRIPT, os.X_OK)
    with open(SCRIPT) as f:
        assert f.readline() == "#!/usr/bin/env python3\n"


def test_closed_loop_run(server, tmp_path):
    n, isl, osl = 12, 24, 8
    rc, out, err, r, _ = run_bench(server, tmp_path, "--num-prompts", str(n), "--input-len", str(isl),
                                   "--output-len", str(osl), "--max-concurrency", "4",
                                   "--num-warmups", "1", "--percentiles", "50,90,99")
    assert rc == 0, out + err
    assert r["completed"] == n and r["failed"] == 0, r["errors"]
    assert r["errors"] == [""] * n
    # ignore_eos and token-id prompts: exact lengths, as the server's usage counts them
    assert r["output_lens"] == [osl] * n
    assert r["input_lens"] == [isl] * n
    assert r["max_concurrent_requests"] <= 4
    for ttft, itls, e2el, k in zip(r["ttfts"], r["itls"], r["e2els"], r["output_lens"]):
        assert 0 < ttft <= e2el
        # The server sends one chunk per token only when the token adds text: a token whose
        # text is held back (part of a UTF-8 character, or text the detokenizer keeps until
        # the next token decides it, e.g. "5" then "5 car") rides with the next chunk, which
        # happens with the demo model. So a request has at most one chunk per token, and its
        # inter-chunk gaps all lie between the first token chunk and the end of the stream.
        assert 0 <= len(itls) <= k - 1
        assert all(g >= 0 for g in itls)
        assert sum(itls) <= e2el - ttft + 1e-9
    # throughputs over the duration (first send to last completion)
    d = r["duration"]
    assert d > 0
    assert d >= max(r["e2els"]) - 1e-9
    assert math.isclose(r["output_throughput"], sum(r["output_lens"]) / d, rel_tol=1e-12)
    assert math.isclose(r["total_token_throughput"], (sum(r["input_lens"]) + sum(r["output_lens"])) / d,
                        rel_tol=1e-12)
    assert math.isclose(r["request_throughput"], n / d, rel_tol=1e-12)
    # TPOT per request is (E2EL - TTFT) / (n - 1); the summary is in ms
    tpots = [(e - t) / (k - 1) for t, e, k in zip(r["ttfts"], r["e2els"], r["output_lens"])]
    assert math.isclose(r["mean_tpot_ms"], 1000 * statistics.mean(tpots), rel_tol=1e-9)
    assert math.isclose(r["mean_ttft_ms"], 1000 * statistics.mean(r["ttfts"]), rel_tol=1e-9)
    assert math.isclose(r["mean_e2el_ms"], 1000 * statistics.mean(r["e2els"]), rel_tol=1e-9)
    pooled = [g for itls in r["itls"] for g in itls]
    assert math.isclose(r["mean_itl_ms"], 1000 * statistics.mean(pooled), rel_tol=1e-9)
    assert r["p50_ttft_ms"] == r["median_ttft_ms"]
    assert r["median_ttft_ms"] <= r["p90_ttft_ms"] <= r["p99_ttft_ms"]
    # the peak 1-s bucket holds at most every token and at least a 1-s bucket's average
    assert min(n * osl, sum(r["output_lens"]) / math.ceil(d)) <= r["max_output_tokens_per_s"] <= n * osl
    for name in ("Serving Benchmark Result", "Successful requests:", "Failed requests:",
                 "Benchmark duration (s):", "Request throughput (req/s):",
                 "Output token throughput (tok/s):", "Total token throughput (tok/s):",
                 "Peak output token throughput (tok/s):", "Peak concurrent requests:",
                 "Mean TTFT (ms):", "Median TTFT (ms):", "P99 TTFT (ms):", "Mean TPOT (ms):",
                 "Mean ITL (ms):", "Mean E2EL (ms):", "P90 E2EL (ms):"):
        assert name in out, name


def test_poisson_run(server, tmp_path):
    n, rate, seed = 10, 50.0, 1
    rc, out, err, r, _ = run_bench(server, tmp_path, "--num-prompts", str(n), "--input-len", "16",
                                   "--output-len", "4", "--request-rate", str(rate), "--seed", str(seed),
                                   "--goodput", "e2el:60000")
    assert rc == 0, out + err
    assert r["completed"] == n and r["failed"] == 0, r["errors"]
    assert r["request_rate"] == rate
    # paced: the run lasts at least until the last scheduled send
    offsets = bs.arrival_offsets(bs.inter_arrival_times(n, rate, 1.0, random.Random(seed)))
    assert r["duration"] >= offsets[-1]
    assert math.isclose(r["request_goodput"], r["request_throughput"], rel_tol=1e-12)
    assert "Request goodput (req/s):" in out


def test_wrong_api_key_fails_fast(server, tmp_path):
    n = 6
    rc, out, err, r, wall = run_bench(server, tmp_path, "--num-prompts", str(n), "--input-len", "8",
                                      "--output-len", "4", api_key="wrong-key")
    assert rc == 1, out + err
    assert r["failed"] == n and r["completed"] == 0
    assert all("401" in e for e in r["errors"]), r["errors"]
    assert r["ttfts"] == [None] * n
    assert "Failed requests:" in out
    assert wall < 20


def test_bad_arguments_exit_2():
    for bad in (["--percentiles", "0"], ["--goodput", "latency:5"], ["--num-prompts", "0"],
                ["--token-range", "5:5"], ["--request-rate", "0"]):
        p = subprocess.run([sys.executable, SCRIPT, *bad], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, (bad, p.stderr)


# ------------------------------------------------------------------ unit tests (import)

def test_arrivals_same_seed_same_schedule():
    a = bs.inter_arrival_times(100, 5.0, 1.0, random.Random(7))
    assert a == bs.inter_arrival_times(100, 5.0, 1.0, random.Random(7))
    assert a != bs.inter_arrival_times(100, 5.0, 1.0, random.Random(8))
    offs = bs.arrival_offsets(a)
    assert offs[0] == 0 and all(y - x == pytest.approx(g) for x, y, g in zip(offs, offs[1:], a))


def test_arrivals_infinite_rate_all_at_once():
    assert bs.inter_arrival_times(50, math.inf, 1.0, random.Random(0)) == [0.0] * 50
    assert bs.arrival_offsets([0.0] * 50) == [0.0] * 50


@pytest.mark.parametrize("k", [0.5, 1.0, 4.0])
def test_arrivals_gamma_mean_and_variance(k):
    """Gamma intervals of shape k and mean 1/rate: variance mean^2/k. Over N = 10000 draws the
    sample mean's standard error is sd/sqrt(N); the sample variance's is about
    var*sqrt((2 + 6/k)/N) (gamma excess kurtosis 6/k). Both must lie within 5 of them."""
    rate, n = 50.0, 10000
    x = bs.inter_arrival_times(n, rate, k, random.Random(123))
    mean, var = 1 / rate, 1 / (rate * rate * k)
    assert abs(statistics.fmean(x) - mean) < 5 * math.sqrt(var / n)
    assert abs(statistics.pvariance(x) - var) < 5 * var * math.sqrt((2 + 6 / k) / n)
    assert min(x) >= 0


def test_burstiness_changes_variance_not_mean():
    rng = random.Random(5)
    bursty = bs.inter_arrival_times(10000, 10.0, 0.25, rng)
    steady = bs.inter_arrival_times(10000, 10.0, 8.0, rng)
    assert statistics.fmean(bursty) == pytest.approx(0.1, rel=0.05)
    assert statistics.fmean(steady) == pytest.approx(0.1, rel=0.05)
    assert statistics.pvariance(bursty) > 10 * statistics.pvariance(steady)


def result(start, ttft, e2el, n, itl=None, input_len=10):
    r = bs.RequestResult(success=True, input_len=input_len, output_len=n, ttft=ttft, e2el=e2el,
                         start=start, end=start + e2el)
    r.itl = itl if itl is not None else [(e2el - ttft) / (n - 1)] * (n - 1) if n > 1 else []
    t = start + ttft
    r.chunk_times = [t]
    for g in r.itl:
        t += g
        r.chunk_times.append(t)
    return r


def test_metrics_definitions():
    # times that are exact in binary, so that bucket edges and SLO limits compare exactly
    rs = [result(0.0, 0.25, 2.25, 9),         # TPOT 0.25; token chunks 0.25, 0.5 .. 2.25
          result(0.5, 0.25, 1.5, 6),          # TPOT 0.25; chunks 0.75 .. 2.0
          result(1.0, 0.375, 0.375, 1),       # one token: no TPOT; chunk 1.375
          bs.RequestResult(success=False, error="HTTP 500: boom", input_len=10, start=2.5, end=2.75)]
    m = bs.compute_metrics(rs, percentiles=[50, 99], goodput={"ttft": 300, "tpot": 250})
    assert m["completed"] == 3 and m["failed"] == 1
    assert m["duration"] == 2.75                          # first send 0.0, last end (the failed) 2.75
    assert m["total_output_tokens"] == 16 and m["total_input_tokens"] == 30
    assert m["output_throughput"] == pytest.approx(16 / 2.75)
    assert m["total_token_throughput"] == pytest.approx(46 / 2.75)
    assert m["request_throughput"] == pytest.approx(3 / 2.75)
    assert m["mean_tpot_ms"] == pytest.approx(250.0)      # two requests have a TPOT, both 250 ms
    assert m["mean_ttft_ms"] == pytest.approx(1000 * (0.25 + 0.25 + 0.375) / 3)
    assert m["median_e2el_ms"] == pytest.approx(1500.0)
    assert m["std_ttft_ms"] == pytest.approx(1000 * statistics.pstdev([0.25, 0.25, 0.375]))
    assert m["p99_ttft_ms"] == pytest.approx(250 + 125 * 0.98)   # linear interpolation
    assert m["mean_itl_ms"] == pytest.approx(250.0)       # 8 + 5 pooled gaps of 250 ms
    # goodput: the first two meet TTFT <= 300 ms and TPOT <= 250 ms; the third's TTFT misses
    assert m["request_goodput"] == pytest.approx(2 / 2.75)
    # in flight: [0, 2.25], [0.5, 2.0], [1.0, 1.375], [2.5, 2.75]: three at once from 1.0
    assert m["max_concurrent_requests"] == 3
    # 1-s buckets from the first token (0.25): [0.25, 1.25) holds 4 + 2 tokens, [1.25, 2.25)
    # 4 + 4 + 1, [2.25, 3.25) 1
    assert m["max_output_tokens_per_s"] == 9


def test_peak_counts_merged_tokens():
    """A request whose usage counts more tokens than it got chunks (the server merged some)
    adds the rest at its last chunk, so the buckets add up to the generated tokens."""
    r = result(0.0, 0.25, 0.5, 2)
    r.output_len = 5
    assert bs.peak_tokens_per_s([r]) == 5


def test_metrics_without_results_in_a_field():
    m = bs.compute_metrics([bs.RequestResult(success=False, error="x", start=0.0, end=1.0)])
    assert m["completed"] == 0 and m["failed"] == 1 and m["output_throughput"] == 0
    assert m["mean_ttft_ms"] is None and m["p99_itl_ms"] is None


def test_percentile_linear_interpolation():
    assert bs.percentile([4, 1, 3, 2], 50) == 2.5
    assert bs.percentile([1, 2, 3, 4], 99) == pytest.approx(3.97)
    assert bs.percentile([7], 99) == 7
    assert bs.percentile([], 99) is None


def test_sse_parser_splits_events_across_reads():
    p = bs.SSEParser()
    assert p.feed(b"data: {\"a\"") == []
    assert p.feed(b": 1}\n\n: ping\n\ndata: [DONE]\r\n\r\ndata: x") == ['{"a": 1}', "[DONE]"]
    assert p.pending() == b"data: x"


def test_prompts_exact_lengths_and_shared_prefix():
    reqs = bs.make_requests(20, 30, 5, range_ratio=0.5, prefix_len=7, token_range=(100, 200), seed=3)
    assert reqs == bs.make_requests(20, 30, 5, range_ratio=0.5, prefix_len=7, token_range=(100, 200), seed=3)
    for q in reqs:
        assert len(q.prompt) == q.input_len and 7 + 15 <= q.input_len <= 7 + 45
        assert 2 <= q.output_len <= 8
        assert q.prompt[:7] == reqs[0].prompt[:7]
        assert all(100 <= t < 200 for t in q.prompt)
