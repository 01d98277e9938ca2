"""Benchmarks for issue 2: token entropy vs torch.distributions, and generation vs model.generate.

Run:  .venv/bin/python bench/signals.py [--quick] [--threads N] [--new-tokens N] [--repeat N]

Each figure is compared with its baseline in the same run and printed as a ratio. Peak extra
memory is measured in a fresh subprocess as the rise of the resident-set high-water mark
(ru_maxrss) over what the logits themselves occupy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

ROWS, VOCAB = 4096, 49152


def _timed(fn, *args, repeat: int = 1) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _memory_probe(which: str, threads: int) -> dict:
    """Run one entropy call in a fresh process; report its peak RSS rise in MiB."""
    code = f"""
import json, torch
torch.set_num_threads({threads})
from entrolab.signals import token_entropy

def peak_mib():  # VmHWM: this process's resident high-water mark
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

x = torch.empty({ROWS}, {VOCAB})
x.normal_().mul_(3)  # in place: no temporary copy of the logits
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark (Linux >= 4.0)
before = peak_mib()
if {which!r} == "entrolab":
    token_entropy(x)
else:
    torch.distributions.Categorical(logits=x).entropy()
print(json.dumps({{"extra_mib": peak_mib() - before}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_entropy(threads: int) -> dict:
    from entrolab.signals import token_entropy

    torch.manual_seed(0)
    x = torch.randn(ROWS, VOCAB) * 3
    first, _ = _timed(token_entropy, x)
    steady, ours = _timed(token_entropy, x, repeat=5)
    base, ref = _timed(lambda t: torch.distributions.Categorical(logits=t).entropy(), x, repeat=2)
    err = (ours.double() - ref.double()).abs().max().item()
    logits_mib = x.numel() * 4 / 2**20
    mem = _memory_probe("entrolab", threads)["extra_mib"]
    mem_base = _memory_probe("categorical", threads)["extra_mib"]
    return {
        "categorical_s": base,
        "entrolab_first_s": first,
        "entrolab_steady_s": steady,
        "speedup": base / steady,
        "max_abs_diff_nats": err,
        "logits_mib": logits_mib,
        "extra_mib": mem,
        "extra_frac": mem / logits_mib,
        "categorical_extra_mib": mem_base,
    }


PROMPTS = [
    "Explain step by step how to add 17 and 25.",
    "Write a short story about a robot who learns to paint.",
    "What is 48 + 12? Show your reasoning.",
    "Describe the water cycle in a few sentences.",
    "List five fruits and say one fact about each.",
    "How many minutes are in 3 hours? Explain.",
    "Give three tips for learning a new language.",
    "What is 9 times 9? Explain your answer.",
]


def _baseline_generate(backend, prompts, samples, temperature, new_tokens):
    """Plain ``model.generate`` on the same chat-formatted prompts; returns (seconds, tokens)."""
    from entrolab.backends.decode import pad_batch

    tok = backend.tokenizer
    input_ids, attn = pad_batch([backend.prompt_ids(p) for p in prompts], tok.pad_token_id)
    kwargs = {"do_sample": False}
    if temperature > 0:  # sample from the full softmax, as entrolab does (HF's top_k=50 off)
        kwargs = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}

    def run():
        with torch.inference_mode():
            return backend.model.generate(
                input_ids,
                attention_mask=attn,
                max_new_tokens=new_tokens,
                num_return_sequences=samples,
                pad_token_id=tok.pad_token_id,
                **kwargs,
            )

    seconds, out = _timed(run)
    eos = set(backend.eos_ids.tolist())
    rows = out[:, input_ids.shape[1] :].tolist()
    tokens = sum(next((j + 1 for j, t in enumerate(r) if t in eos), len(r)) for r in rows)
    return seconds, tokens, rows


def bench_generation(
    workloads: list[tuple[str, int, int, float]], new_tokens: int, repeat: int
) -> list[dict]:
    """workloads: (label, distinct prompts, samples per prompt, temperature).

    Each workload alternates entrolab and ``model.generate`` ``repeat`` times (ABAB…, so drift
    in machine load hits both) and reports the median throughput of each.
    """
    from entrolab.backends import HFBackend
    from entrolab.config import GenerationConfig

    backend = HFBackend.load()
    backend.generate(PROMPTS[:1], GenerationConfig(temperature=0, max_new_tokens=4))  # warm-up
    rows = []
    for label, n_prompts, samples, temperature in workloads:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n_prompts)]
        cfg = GenerationConfig(
            num_samples=samples,
            temperature=temperature,
            max_new_tokens=new_tokens,
            batch_size=n_prompts * samples,
        )
        ours, base = [], []
        for _ in range(repeat):
            ours_s, traces = _timed(backend.generate, prompts, cfg)
            ours.append(sum(len(t) for t in traces) / ours_s)
            base_s, base_tokens, base_rows = _baseline_generate(
                backend, prompts, samples, temperature, new_tokens
            )
            base.append(base_tokens / base_s)
        ours_tok_s, base_tok_s = statistics.median(ours), statistics.median(base)
        same = None
        if temperature == 0:  # greedy: both must produce exactly the same tokens
            same = all(
                t.token_ids.tolist() == r[: len(t)] for t, r in zip(traces, base_rows, strict=True)
            )
        rows.append(
            {
                "workload": label,
                "rows": n_prompts * samples,
                "generate_tok_s": base_tok_s,
                "entrolab_tok_s": ours_tok_s,
                "ratio": ours_tok_s / base_tok_s,
                "ratio_range": [min(ours) / max(base), max(ours) / min(base)],
                "generate_tokens": base_tokens,
                "entrolab_tokens": sum(len(t) for t in traces),
                "same_tokens": same,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="greedy batch 1 and 8 only")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs per workload")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {args.threads} threads, load avg {load:.2f}")
    if load > 0.5:
        print("warning: the machine is busy; timings will be noisy (2-thread torch stalls badly)")
    ent = bench_entropy(args.threads)
    print("entropy [4096, 49152] float32:", json.dumps(ent, indent=1))
    workloads = [
        ("greedy, batch 1", 1, 1, 0.0),
        ("greedy, batch 8", 8, 1, 0.0),
        ("greedy, batch 32", 32, 1, 0.0),
        ("sampling T=1, 4 prompts x 8 samples", 4, 8, 1.0),
    ]
    if args.quick:
        workloads = workloads[:2]
    gen = bench_generation(workloads, args.new_tokens, args.repeat)
    print(
        "\n| workload | rows | model.generate tok/s | entrolab tok/s (with signals) | ratio | same tokens |"
    )
    print("|---|---|---|---|---|---|")
    for r in gen:
        print(
            f"| {r['workload']} | {r['rows']} | {r['generate_tok_s']:.1f} | "
            f"{r['entrolab_tok_s']:.1f} | {r['ratio']:.2f}x | {r['same_tokens']} |"
        )


if __name__ == "__main__":
    main()
