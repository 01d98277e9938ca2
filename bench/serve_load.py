"""`entrolab serve` under load: C concurrent clients × R requests vs sequential single requests,
with micro-batching and with continuous batching (the same run, one server per mode).

Run:  .venv/bin/python bench/serve_load.py                   # 64 clients × 4 requests, 3 repeats
      .venv/bin/python bench/serve_load.py --tiny            # smoke (random model, seconds)
      .venv/bin/python bench/serve_load.py --batching continuous   # one mode only
      .venv/bin/python bench/serve_load.py --url http://127.0.0.1:8001/v1 --model M   # any server

For each ``--batching`` mode, starts `entrolab serve --batching MODE` (the embedded model, or
the tiny random model with --tiny) in a subprocess on 127.0.0.1 (loopback only), then per
repeat: (a) C client threads each send R streamed `/v1/completions` requests back to back (echo
on, so every answer carries its own prompt and a swapped answer would be caught), (b) S
sequential single requests to the same server. Checks: every request answered exactly once
with its own prompt (zero lost, zero duplicated), and the sequential answers equal the
concurrent answers to the same (prompt, seed) (batching does not change results). Reports p50/p95
latency and time to first token (TTFT: the first chunk after the echoed prompt; bootstrap 95%
intervals over requests pooled across repeats) and tokens/s (mean over repeats with a t 95%
interval), concurrent vs sequential, and continuous vs micro ratios (tokens/s: t interval over
paired repeats; p50 latency and TTFT: two-sample bootstrap). Bounded: fixed counts, a
per-request timeout and a whole-run deadline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SERVER = """
import sys, torch
torch.set_num_threads(int(sys.argv[2]))
from entrolab.serve import ServeConfig, serve
if sys.argv[3] == "tiny":
    from entrolab.backends import HFBackend
    from entrolab.models import tiny_model
    backend = HFBackend(*tiny_model(seed=0), name="tiny")
else:
    from entrolab.backends import HFBackend
    backend = HFBackend.load()
config = ServeConfig(model_id="bench", port=int(sys.argv[1]), max_queue=1024,
                     batch_window_s=float(sys.argv[4]), max_batch_rows=int(sys.argv[5]),
                     batching=sys.argv[6])
serve(backend, config, log_level="warning")
"""


MODEL = ["bench"]  # the model id requests name (--model with --url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(base: str, prompt: str, seed: int, max_tokens: int, timeout: float) -> dict:
    """One streamed completion: status, the answer (echo + text), tokens, latency and TTFT."""
    body = {
        "model": MODEL[0],
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": seed,
        "echo": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    req = urllib.request.Request(
        base + "/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    t0 = time.perf_counter()
    out = {"status": 200, "text": "", "tokens": 0, "id": None, "ttft": math.nan}
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            chunks = 0
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                data = json.loads(line[5:])
                if "error" in data:
                    out["status"] = 500
                    break
                out["id"] = data.get("id")
                if data.get("usage"):
                    out["tokens"] = int(data["usage"]["completion_tokens"])
                for choice in data.get("choices", []):
                    chunks += 1
                    if chunks == 2:  # the first chunk after the echoed prompt
                        out["ttft"] = time.perf_counter() - t0
                    out["text"] += choice.get("text") or ""
    except urllib.error.HTTPError as err:
        out["status"] = err.code
        err.read()
    out["latency"] = time.perf_counter() - t0
    return out


def prompt_of(c: int, j: int) -> str:
    return f"Request {c}-{j}. What is {c % 9 + 1} + {j + 2}? Answer:"


def concurrent_phase(base, clients, per_client, max_tokens, timeout):
    results: dict[tuple[int, int], list[dict]] = {}
    lock = threading.Lock()

    def client(c: int) -> None:
        for j in range(per_client):
            r = request(base, prompt_of(c, j), 1000 * c + j, max_tokens, timeout)
            with lock:
                results.setdefault((c, j), []).append(r)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return results, time.perf_counter() - t0


def check(results, clients, per_client) -> dict:
    """Lost / duplicated / wrong-prompt / failed counts of one concurrent phase."""
    expected = {(c, j) for c in range(clients) for j in range(per_client)}
    lost = len(expected - set(results))
    dup = sum(len(v) - 1 for v in results.values())
    failed = sum(r["status"] != 200 for v in results.values() for r in v)
    ids = [r["id"] for v in results.values() for r in v if r["status"] == 200]
    wrong = sum(
        not r["text"].startswith(prompt_of(*key))
        for key, v in results.items()
        for r in v
        if r["status"] == 200
    )
    return {
        "lost": lost,
        "duplicated": dup + (len(ids) - len(set(ids))),
        "failed": failed,
        "wrong_prompt": wrong,
    }


def tokens(r: dict) -> int:
    return int(r["tokens"])


def t_interval(xs: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval over repeats."""
    from scipy.stats import t

    a = np.asarray(xs, dtype=float)
    m = float(a.mean())
    if a.size < 2:
        return m, math.nan, math.nan
    h = float(t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))
    return m, m - h, m + h


def pct_interval(lat: np.ndarray, q: float) -> tuple[float, float, float]:
    from entrolab.calibration.intervals import bootstrap_interval

    iv = bootstrap_interval(lambda x: float(np.percentile(x, q)), lat, n_boot=2000, seed=0)
    return float(np.percentile(lat, q)), iv.low, iv.high


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=4, help="requests per client")
    ap.add_argument("--sequential", type=int, default=16, help="sequential requests per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="server torch threads")
    ap.add_argument("--batching", default="micro,continuous", help="modes, comma-separated")
    ap.add_argument("--window-ms", type=float, default=20.0, help="batching window")
    ap.add_argument("--max-batch-rows", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=300.0, help="per request (s)")
    ap.add_argument("--deadline", type=float, default=1800.0, help="whole run (s)")
    ap.add_argument("--tiny", action="store_true", help="tiny random model (smoke)")
    ap.add_argument("--out", default="runs/bench-serve-load.json")
    ap.add_argument("--url", default=None, help="load an already running server (its /v1 URL)")
    ap.add_argument("--model", default="bench", help="model id to request (with --url)")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} on {os.cpu_count()} CPUs; server torch threads {args.threads}")
    if load > 1.5:
        print("warning: the machine is busy (shared); latencies and tokens/s are inflated")
    MODEL[0] = args.model if args.url else "bench"
    modes = ["external"] if args.url else args.batching.split(",")
    start = time.monotonic()
    results = {}
    for mode in modes:
        runs, health = run_mode(args, mode, start)
        if runs:
            results[mode] = summarize(runs, health)
            print_mode(mode, results[mode])
    compare(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {"settings": vars(args), "load_average_at_start": load, "modes": results}, indent=1
        )
    )
    print(f"written {args.out}")


def run_mode(args, mode: str, start: float) -> tuple[list[dict], dict]:
    """Start a server in ``mode`` (unless --url), run the repeats, stop it."""
    port = free_port()
    base = args.url.rstrip("/") if args.url else f"http://127.0.0.1:{port}/v1"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [
        sys.executable, "-c", SERVER, str(port), str(args.threads),
        "tiny" if args.tiny else "embedded", str(args.window_ms / 1000),
        str(args.max_batch_rows), mode,
    ]  # fmt: skip
    server = None if args.url else subprocess.Popen(cmd, env=env)
    runs: list[dict] = []
    health: dict = {}
    try:
        while True:
            try:
                with urllib.request.urlopen(base.removesuffix("/v1") + "/health", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if (server and server.poll() is not None) or time.monotonic() - start > 600:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.5)
        request(base, "warm-up", 0, args.max_tokens, args.timeout)
        for rep in range(args.repeats):
            if time.monotonic() - start > args.deadline:
                print("deadline reached; stopping early")
                break
            runs.append(one_repeat(args, base, rep, mode))
        try:
            with urllib.request.urlopen(base.removesuffix("/v1") + "/health") as resp:
                health = json.loads(resp.read() or b"{}")
        except (urllib.error.URLError, json.JSONDecodeError):
            pass
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
    return runs, health


def one_repeat(args, base: str, rep: int, mode: str) -> dict:
    results, wall = concurrent_phase(
        base, args.clients, args.requests, args.max_tokens, args.timeout
    )
    verdict = check(results, args.clients, args.requests)
    conc = [r for v in results.values() for r in v if r["status"] == 200]
    # a spread subset of the concurrent requests (same prompt and seed), sent one by one
    keys = [
        (i * args.clients // args.sequential, i % args.requests) for i in range(args.sequential)
    ]
    t0 = time.perf_counter()
    seq = [
        request(base, prompt_of(*key), 1000 * key[0] + key[1], args.max_tokens, args.timeout)
        for key in keys
    ]
    seq_wall = time.perf_counter() - t0
    same = sum(s["text"] == results[key][0]["text"] for s, key in zip(seq, keys, strict=True))
    run = {
        "repeat": rep,
        **verdict,
        "concurrent_requests": len(conc),
        "concurrent_wall_s": wall,
        "concurrent_tokens_per_s": sum(map(tokens, conc)) / wall,
        "concurrent_requests_per_s": len(conc) / wall,
        "concurrent_mean_tokens": sum(map(tokens, conc)) / max(len(conc), 1),
        "concurrent_latency": [r["latency"] for r in conc],
        "concurrent_ttft": [r["ttft"] for r in conc],
        "sequential_requests": len(seq),
        "sequential_wall_s": seq_wall,
        "sequential_tokens_per_s": sum(map(tokens, seq)) / seq_wall,
        "sequential_requests_per_s": len(seq) / seq_wall,
        "sequential_mean_tokens": sum(map(tokens, seq)) / max(len(seq), 1),
        "sequential_latency": [r["latency"] for r in seq],
        "sequential_ttft": [r["ttft"] for r in seq],
        "sequential_equal_to_concurrent": same,
    }
    print(
        f"[{mode}] repeat {rep}: {len(conc)} answered in {wall:.1f} s "
        f"({run['concurrent_tokens_per_s']:.1f} tok/s); lost {verdict['lost']}, duplicated "
        f"{verdict['duplicated']}, failed {verdict['failed']}, wrong prompt "
        f"{verdict['wrong_prompt']}; sequential {run['sequential_tokens_per_s']:.1f} tok/s; "
        f"{same}/{len(seq)} sequential answers equal the concurrent ones"
    )
    return run


def summarize(runs: list[dict], health: dict) -> dict:
    pooled = {
        key: np.concatenate([r[key] for r in runs])
        for key in (
            "concurrent_latency",
            "sequential_latency",
            "concurrent_ttft",
            "sequential_ttft",
        )
    }
    return {
        "repeats": len(runs),
        **{k: sum(r[k] for r in runs) for k in ("lost", "duplicated", "failed", "wrong_prompt")},
        "sequential_equal": [r["sequential_equal_to_concurrent"] for r in runs],
        "concurrent_p50_s": pct_interval(pooled["concurrent_latency"], 50),
        "concurrent_p95_s": pct_interval(pooled["concurrent_latency"], 95),
        "concurrent_ttft_p50_s": pct_interval(pooled["concurrent_ttft"], 50),
        "concurrent_ttft_p95_s": pct_interval(pooled["concurrent_ttft"], 95),
        "sequential_p50_s": pct_interval(pooled["sequential_latency"], 50),
        "sequential_p95_s": pct_interval(pooled["sequential_latency"], 95),
        "sequential_ttft_p50_s": pct_interval(pooled["sequential_ttft"], 50),
        "concurrent_tokens_per_s": t_interval([r["concurrent_tokens_per_s"] for r in runs]),
        "sequential_tokens_per_s": t_interval([r["sequential_tokens_per_s"] for r in runs]),
        "throughput_ratio": t_interval(
            [r["concurrent_tokens_per_s"] / r["sequential_tokens_per_s"] for r in runs]
        ),
        "mean_tokens_per_answer": [
            float(np.mean([r["concurrent_mean_tokens"] for r in runs])),
            float(np.mean([r["sequential_mean_tokens"] for r in runs])),
        ],
        "n_concurrent_requests": int(pooled["concurrent_latency"].size),
        "n_sequential_requests": int(pooled["sequential_latency"].size),
        "batching": health.get("batching"),
        "runs": runs,
    }


def fmt(x) -> str:
    return f"{x[0]:.2f} [{x[1]:.2f}, {x[2]:.2f}]"


def print_mode(mode: str, s: dict) -> None:
    print(f"\n## {mode}\n| measure | concurrent | sequential |\n|---|---|---|")
    for name, key in [("p50 latency (s)", "p50_s"), ("p95 latency (s)", "p95_s"),
                      ("p50 TTFT (s)", "ttft_p50_s")]:  # fmt: skip
        print(f"| {name} | {fmt(s['concurrent_' + key])} | {fmt(s['sequential_' + key])} |")
    print(f"| p95 TTFT (s) | {fmt(s['concurrent_ttft_p95_s'])} | |")
    print(
        f"| tokens/s | {fmt(s['concurrent_tokens_per_s'])} | {fmt(s['sequential_tokens_per_s'])} |"
    )
    print(f"throughput ratio concurrent/sequential {fmt(s['throughput_ratio'])} (t 95%, "
          f"{s['repeats']} repeats); mean tokens per answer {s['mean_tokens_per_answer']}")  # fmt: skip
    print(
        f"requests: {s['n_concurrent_requests']} concurrent, {s['n_sequential_requests']} "
        f"sequential; lost {s['lost']}, duplicated {s['duplicated']}, failed {s['failed']}, "
        f"wrong prompt {s['wrong_prompt']}; sequential equal {s['sequential_equal']}; "
        f"batching {s['batching']}"
    )


def compare(results: dict) -> None:
    """Continuous vs micro: tokens/s ratio over paired repeats, latency/TTFT ratios (bootstrap)."""
    if not {"micro", "continuous"} <= set(results):
        return
    from entrolab.calibration.intervals import bootstrap_interval

    c, m = results["continuous"], results["micro"]
    tps = t_interval([a["concurrent_tokens_per_s"] / b["concurrent_tokens_per_s"]
                      for a, b in zip(c["runs"], m["runs"], strict=False)])  # fmt: skip
    print(
        f"\ncontinuous / micro, concurrent phase: tokens/s ratio {fmt(tps)} (t 95%, paired repeats)"
    )
    for key, q in [("concurrent_latency", 50), ("concurrent_latency", 95), ("concurrent_ttft", 50)]:
        a = np.concatenate([r[key] for r in c["runs"]])
        b = np.concatenate([r[key] for r in m["runs"]])
        both, lab = np.concatenate([a, b]), np.r_[np.ones(a.size), np.zeros(b.size)]

        def ratio(x, g, q=q):
            return float(np.percentile(x[g == 1], q) / np.percentile(x[g == 0], q))

        iv = bootstrap_interval(ratio, both, lab, strata=lab, n_boot=2000, seed=0)
        print(f"  p{q} {key.split('_')[1]} ratio {ratio(both, lab):.3f} [{iv.low:.3f}, {iv.high:.3f}]"
              " (two-sample bootstrap 95%)")  # fmt: skip


if __name__ == "__main__":
    main()
