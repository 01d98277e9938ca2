"""`entrolab serve` under load: C concurrent clients × R requests vs sequential single requests.

Run:  .venv/bin/python bench/serve_load.py                   # 64 clients × 4 requests, 3 repeats
      .venv/bin/python bench/serve_load.py --tiny            # smoke (random model, seconds)
      .venv/bin/python bench/serve_load.py --url http://127.0.0.1:8001/v1 --model M   # any server

Starts `entrolab serve` (the embedded model, or the tiny random model with --tiny) in a
subprocess on 127.0.0.1 (loopback only), then per repeat: (a) C client threads each send R
`/v1/completions` requests back to back (echo on, so every answer carries its own prompt and a
swapped answer would be caught), (b) S sequential single requests to the same server. Checks:
every request answered exactly once with its own prompt (zero lost, zero duplicated), and the
sequential answers equal the concurrent answers to the same (prompt, seed) (batching does not
change results). Reports p50/p95 latency (bootstrap 95% intervals over requests pooled across
repeats) and tokens/s (mean over repeats with a t 95% interval), concurrent vs sequential.
Bounded: fixed counts, a per-request timeout and a whole-run deadline.
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
                     batch_window_s=float(sys.argv[4]), max_batch_rows=int(sys.argv[5]))
serve(backend, config, log_level="warning")
"""


MODEL = ["bench"]  # the model id requests name (--model with --url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(base: str, prompt: str, seed: int, max_tokens: int, timeout: float) -> dict:
    body = {
        "model": MODEL[0],
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": seed,
        "echo": True,
    }
    req = urllib.request.Request(
        base + "/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read())
            status = resp.status
    except urllib.error.HTTPError as err:
        data, status = json.loads(err.read()), err.code
    return {"status": status, "data": data, "latency": time.perf_counter() - t0}


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
    ids = [r["data"].get("id") for v in results.values() for r in v if r["status"] == 200]
    wrong = sum(
        not r["data"]["choices"][0]["text"].startswith(prompt_of(*key))
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
    return int(r["data"].get("usage", {}).get("completion_tokens", 0))


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
    port = free_port()
    base = args.url.rstrip("/") if args.url else f"http://127.0.0.1:{port}/v1"
    MODEL[0] = args.model if args.url else "bench"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [
        sys.executable,
        "-c",
        SERVER,
        str(port),
        str(args.threads),
        "tiny" if args.tiny else "embedded",
        str(args.window_ms / 1000),
        str(args.max_batch_rows),
    ]
    server = None if args.url else subprocess.Popen(cmd, env=env)
    start = time.monotonic()
    try:
        while True:
            try:
                with urllib.request.urlopen(base.removesuffix("/v1") + "/health", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if (server and server.poll() is not None) or time.monotonic() - start > 300:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.5)
        request(base, "warm-up", 0, args.max_tokens, args.timeout)
        runs = []
        for rep in range(args.repeats):
            if time.monotonic() - start > args.deadline:
                print("deadline reached; stopping early")
                break
            results, wall = concurrent_phase(
                base, args.clients, args.requests, args.max_tokens, args.timeout
            )
            verdict = check(results, args.clients, args.requests)
            conc = [r for v in results.values() for r in v if r["status"] == 200]
            # a spread subset of the concurrent requests (same prompt and seed), sent one by one
            keys = [
                (i * args.clients // args.sequential, i % args.requests)
                for i in range(args.sequential)
            ]
            t0 = time.perf_counter()
            seq = [
                request(
                    base, prompt_of(*key), 1000 * key[0] + key[1], args.max_tokens, args.timeout
                )
                for key in keys
            ]
            seq_wall = time.perf_counter() - t0
            same = sum(
                s["data"]["choices"][0]["text"] == results[key][0]["data"]["choices"][0]["text"]
                for s, key in zip(seq, keys, strict=True)
            )
            run = {
                "repeat": rep,
                **verdict,
                "concurrent_requests": len(conc),
                "concurrent_wall_s": wall,
                "concurrent_tokens_per_s": sum(map(tokens, conc)) / wall,
                "concurrent_requests_per_s": len(conc) / wall,
                "concurrent_mean_tokens": sum(map(tokens, conc)) / max(len(conc), 1),
                "concurrent_latency": [r["latency"] for r in conc],
                "sequential_requests": len(seq),
                "sequential_wall_s": seq_wall,
                "sequential_tokens_per_s": sum(map(tokens, seq)) / seq_wall,
                "sequential_requests_per_s": len(seq) / seq_wall,
                "sequential_mean_tokens": sum(map(tokens, seq)) / max(len(seq), 1),
                "sequential_latency": [r["latency"] for r in seq],
                "sequential_equal_to_concurrent": same,
            }
            runs.append(run)
            print(
                f"repeat {rep}: {len(conc)} answered in {wall:.1f} s "
                f"({run['concurrent_tokens_per_s']:.1f} tok/s); lost {verdict['lost']}, "
                f"duplicated {verdict['duplicated']}, failed {verdict['failed']}, wrong prompt "
                f"{verdict['wrong_prompt']}; sequential {run['sequential_tokens_per_s']:.1f} "
                f"tok/s; {same}/{len(seq)} sequential answers equal the concurrent ones"
            )
        try:
            with urllib.request.urlopen(base.removesuffix("/v1") + "/health") as resp:
                health = json.loads(resp.read() or b"{}")
        except (urllib.error.URLError, json.JSONDecodeError):
            health = {}
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
    report(args, runs, health, load)


def report(args, runs, health, load) -> None:
    conc_lat = np.concatenate([r["concurrent_latency"] for r in runs])
    seq_lat = np.concatenate([r["sequential_latency"] for r in runs])
    ctps = t_interval([r["concurrent_tokens_per_s"] for r in runs])
    stps = t_interval([r["sequential_tokens_per_s"] for r in runs])
    ratio = t_interval([r["concurrent_tokens_per_s"] / r["sequential_tokens_per_s"] for r in runs])
    req_ratio = t_interval(
        [r["concurrent_requests_per_s"] / r["sequential_requests_per_s"] for r in runs]
    )
    summary = {
        "settings": vars(args),
        "load_average_at_start": load,
        "repeats": len(runs),
        "lost": sum(r["lost"] for r in runs),
        "duplicated": sum(r["duplicated"] for r in runs),
        "failed": sum(r["failed"] for r in runs),
        "wrong_prompt": sum(r["wrong_prompt"] for r in runs),
        "sequential_equal": [r["sequential_equal_to_concurrent"] for r in runs],
        "concurrent_p50_s": pct_interval(conc_lat, 50),
        "concurrent_p95_s": pct_interval(conc_lat, 95),
        "sequential_p50_s": pct_interval(seq_lat, 50),
        "sequential_p95_s": pct_interval(seq_lat, 95),
        "concurrent_tokens_per_s": ctps,
        "sequential_tokens_per_s": stps,
        "throughput_ratio": ratio,
        "requests_per_s_ratio": req_ratio,
        "mean_tokens_per_answer": [
            float(np.mean([r["concurrent_mean_tokens"] for r in runs])),
            float(np.mean([r["sequential_mean_tokens"] for r in runs])),
        ],
        "n_concurrent_requests": int(conc_lat.size),
        "n_sequential_requests": int(seq_lat.size),
        "batching": health.get("batching"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    f = lambda x: f"{x[0]:.2f} [{x[1]:.2f}, {x[2]:.2f}]"  # noqa: E731
    print("\n| measure | concurrent | sequential |\n|---|---|---|")
    print(
        f"| p50 latency (s) | {f(summary['concurrent_p50_s'])} | {f(summary['sequential_p50_s'])} |"
    )
    print(
        f"| p95 latency (s) | {f(summary['concurrent_p95_s'])} | {f(summary['sequential_p95_s'])} |"
    )
    print(f"| tokens/s | {f(ctps)} | {f(stps)} |")
    print(f"\nthroughput ratio concurrent/sequential {f(ratio)} (t 95% over {len(runs)} repeats)")
    print(f"requests/s ratio concurrent/sequential {f(req_ratio)}")
    print(f"mean tokens per answer (concurrent, sequential): {summary['mean_tokens_per_answer']}")
    print(
        f"requests: {summary['n_concurrent_requests']} concurrent, "
        f"{summary['n_sequential_requests']} sequential; lost {summary['lost']}, duplicated "
        f"{summary['duplicated']}, failed {summary['failed']}, wrong prompt "
        f"{summary['wrong_prompt']}; batching {summary['batching']}"
    )
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
