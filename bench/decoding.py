"""Benchmark for issue 4: per-step cost of each warper vs one decode step of the embedded model,
and Top-H (vectorised, batched) vs a direct batch-1 Python-loop transcription of the released
algorithm.

Run:  .venv/bin/python bench/decoding.py [--threads 1] [--repeat 30] [--temperature 1.0]
      [--json PATH]    (smoke test: --repeat 3)

All timings are medians of ``--repeat`` calls measured in this run, on the same logits: the
decode-step logits of the embedded SmolLM2-135M-Instruct (V = 49152) for arithmetic prompts,
divided by ``--temperature``; batch 1 uses the first row, batch 8 all eight. Ratios, not absolute
times, are the signal. Torch runs on ``--threads`` threads (default 1: the machine is shared, and
two-thread torch stalls badly when another process is busy); the 1-minute load average is printed
before and after — numbers taken while it exceeds the core count are not trustworthy.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import time

import torch

BATCHES = (1, 8)
WARPERS = [
    ("top_h (released)", "top_h", {"alpha": 0.4}),
    ("top_h (paper)", "top_h", {"alpha": 0.4, "mode": "paper"}),
    ("entropix (fixed thresholds)", "entropix", {"thresholds": "fixed"}),
    ("edt", "edt", {}),
    ("min_p", "min_p", {"min_p": 0.1}),
    ("top_p", "top_p", {"top_p": 0.9}),
    ("typical", "typical", {"mass": 0.9}),
    ("epsilon", "epsilon", {"epsilon": 3e-4}),
    ("eta", "eta", {"epsilon": 3e-4}),
    ("top_k", "top_k", {"top_k": 50}),
]


def median_seconds(fn, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def released_top_h_loop(scores: torch.Tensor, alpha: float = 0.4, top_n: int = 100):
    """The released processor's algorithm as published: batch 1, a Python loop over candidates
    with tensor arithmetic (log base 2, running partial entropy and mass), then a mask."""
    assert scores.shape[0] == 1, "batch 1 only, like the released code"
    probs = torch.softmax(scores, dim=-1)
    top_p, top_i = torch.topk(probs[0], top_n, largest=True, sorted=True)
    mass = top_p.sum()
    q = top_p / mass
    tau = ((-torch.sum(q * torch.log2(q)) - torch.log2(mass)) * mass) * alpha
    chosen = []
    sigma = top_p[0].clone()
    h = -top_p[0] * torch.log2(top_p[0])
    for j in range(top_n):
        chosen.append(top_i[j])
        if j + 1 >= top_n:
            break
        h = h - top_p[j + 1] * torch.log2(top_p[j + 1])
        sigma = sigma + top_p[j + 1]
        if h / sigma + torch.log2(sigma) > tau / sigma + torch.log2(sigma):
            break
    keep = torch.zeros(scores.shape[-1], dtype=torch.bool)
    keep[torch.stack(chosen)] = True
    out = scores.clone()
    out[:, ~keep] = float("-inf")
    return out


def step_logits_and_forward_time(repeat: int, temperature: float):
    """Decode-step logits [8, V] of the embedded model and the median decode forward time (s)
    at batch 1 and 8 (one new token with a KV cache after an arithmetic prompt)."""
    from entrolab.backends import HFBackend
    from entrolab.backends.decode import pad_batch
    from entrolab.tasks import load_task

    backend = HFBackend.load()
    model = backend.model
    kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    prompts = [it.prompt for it in load_task("arithmetic").items(8, seed=0)]
    ids, attention = pad_batch(
        [backend.prompt_ids(p) for p in prompts], backend.tokenizer.pad_token_id
    )
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    forward_s, logits = {}, None
    with torch.inference_mode():
        for b in BATCHES:
            out = model(
                input_ids=ids[:b],
                attention_mask=attention[:b],
                position_ids=positions[:b],
                use_cache=True,
            )
            cache = out.past_key_values
            step_logits = out.logits[:, -1].float()
            nxt = step_logits.argmax(-1, keepdim=True)
            att = torch.cat([attention[:b], torch.ones(b, 1, dtype=attention.dtype)], 1)
            state = {"att": att, "pos": positions[:b, -1:] + 1}

            def step(nxt=nxt, cache=cache, state=state):
                model(
                    input_ids=nxt,
                    attention_mask=state["att"],
                    position_ids=state["pos"],
                    use_cache=True,
                    **{kw: cache},
                )
                state["att"] = torch.cat([state["att"], state["att"][:, -1:]], 1)
                state["pos"] = state["pos"] + 1

            forward_s[b] = median_seconds(step, repeat)
            if b == max(BATCHES):
                logits = step_logits / temperature
    return logits, forward_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from entrolab.decoding import make_warper, top_h

    load_before = os.getloadavg()[0]
    print(
        f"torch threads {args.threads}; cores {os.cpu_count()}; load avg (1 min) {load_before:.2f}"
    )
    logits, forward_s = step_logits_and_forward_time(args.repeat, args.temperature)
    print(
        f"V = {logits.shape[-1]}, T = {args.temperature}; decode forward step: "
        + ", ".join(f"batch {b} {forward_s[b] * 1e3:.1f} ms" for b in BATCHES)
    )
    rows = []
    for label, name, params in WARPERS:
        warper = make_warper(name, params)
        row = {"warper": label}
        for b in BATCHES:
            x = logits[:b].contiguous()
            s = median_seconds(lambda w=warper, x=x: w(x), args.repeat)
            row[f"ms_b{b}"] = s * 1e3
            row[f"frac_b{b}"] = s / forward_s[b]
        row["kept_b8"] = float(torch.isfinite(warper(logits)).sum(-1).double().mean())
        rows.append(row)
    print(
        f"\n{'warper':30s} {'b=1 ms':>8s} {'% step':>7s} {'b=8 ms':>8s} {'% step':>7s} {'kept':>7s}"
    )
    for r in rows:
        print(
            f"{r['warper']:30s} {r['ms_b1']:8.3f} {100 * r['frac_b1']:6.2f}% "
            f"{r['ms_b8']:8.3f} {100 * r['frac_b8']:6.2f}% {r['kept_b8']:7.1f}"
        )

    # Top-H: vectorised vs the released batch-1 loop (called once per row for batch 8). The loop
    # pays per candidate it adds, so the ratio depends on the kept-set size: model logits at
    # T and 2T, and a flat top-100 (its worst case at α = 0.4: 40 iterations).
    flat = torch.full_like(logits, -10.0)
    flat[:, :100] = 0.0
    cases = [
        (f"T={args.temperature:g}", logits),
        (f"T={2 * args.temperature:g}", logits / 2),
        ("flat top-100", flat),
    ]
    speed = []
    for case, z in cases:
        for r in range(z.shape[0]):  # same kept sets first (the loop is the reference)
            a = torch.isfinite(released_top_h_loop(z[r : r + 1]))
            assert torch.equal(a, torch.isfinite(top_h(z[r : r + 1], 0.4))), (case, r)
        kept = float(torch.isfinite(top_h(z, 0.4)).sum(-1).double().mean())
        for b in BATCHES:
            x = z[:b].contiguous()
            loop = median_seconds(
                lambda x=x: [released_top_h_loop(x[r : r + 1]) for r in range(x.shape[0])],
                args.repeat,
            )
            vec = median_seconds(lambda x=x: top_h(x, 0.4), args.repeat)
            speed.append(
                {
                    "case": case,
                    "batch": b,
                    "kept": kept,
                    "loop_ms": loop * 1e3,
                    "vectorised_ms": vec * 1e3,
                    "speedup": loop / vec,
                    "frac_step": vec / forward_s[b],
                }
            )
    print("\nTop-H (released, α=0.4) vs the released batch-1 loop (goal ≥ 20×; ≤ 5% of a step)")
    print(
        f"{'logits':14s} {'batch':>5s} {'kept':>6s} {'loop ms':>8s} {'vec ms':>8s} "
        f"{'speed-up':>8s} {'% step':>7s}"
    )
    for r in speed:
        print(
            f"{r['case']:14s} {r['batch']:5d} {r['kept']:6.1f} {r['loop_ms']:8.3f} "
            f"{r['vectorised_ms']:8.3f} {r['speedup']:7.1f}× {100 * r['frac_step']:6.2f}%"
        )
    load_after = os.getloadavg()[0]
    print(
        f"load avg (1 min) after: {load_after:.2f}"
        + (
            "  [busy machine: rerun when quiet]"
            if max(load_before, load_after) > (os.cpu_count() or 1)
            else ""
        )
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "threads": args.threads,
                    "temperature": args.temperature,
                    "forward_ms": {b: s * 1e3 for b, s in forward_s.items()},
                    "warpers": rows,
                    "top_h_vs_loop": speed,
                    "load_avg": [load_before, load_after],
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
