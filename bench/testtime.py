"""Confidence-driven test-time compute vs majority voting, in one run (issue 5).

Run:  .venv/bin/python bench/testtime.py [--n 100] [--threads 2]          # the real benchmark
      .venv/bin/python bench/testtime.py --tiny                            # smoke (random model)

On a task where the embedded model's single-sample accuracy is 20–70% (default: built-in
arithmetic level 2, "a ± b" with 1-digit operands; majority@1 *is* the single-sample accuracy and
the script warns when it leaves that band), it runs majority@N for N in {1, 4, 8, 16},
DeepConf-online and adaptive sampling at matched budgets (8 and 16 traces), and LYNX (single
trace with a learned exit) when the `lynx` strategy exists and an exit can be fitted or loaded.
Every strategy draws sample s of an item from the same seed, so the comparison is paired.
Reports accuracy and exact generated tokens per item, the seven DeepConf offline votes over
majority@16's own traces (same tokens), and the goal: match majority@16's accuracy within 1 point
with <= 50% of its tokens, with a paired bootstrap 95% interval on the accuracy difference.
Results are appended to RUN_DIR/results.jsonl (a killed run resumes), and RUN_DIR/table.md and
RUN_DIR/pareto.svg are written at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

BUDGETS = {"majority": [1, 4, 8, 16], "deepconf-online": [8, 16], "adaptive": [8, 16]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--task", default="arithmetic")
    ap.add_argument("--level", type=int, default=2, help="arithmetic level")
    ap.add_argument("--n", type=int, default=100, help="items")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--window", type=int, default=8, help="DeepConf window (tokens)")
    ap.add_argument("--tau", type=float, default=0.95, help="consensus share")
    ap.add_argument("--lynx-exit", default=None, help="a saved LYNX exit (else fit one)")
    ap.add_argument("--lynx-fit-n", type=int, default=40, help="held-out items to fit LYNX on")
    ap.add_argument("--out", default="runs/bench-testtime")
    ap.add_argument("--tiny", action="store_true", help="smoke run on a tiny random model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.tiny:
        args.n, args.max_new_tokens = 3, 8
        args.lynx_fit_n = min(args.lynx_fit_n, 4)
        args.out = args.out + "-tiny"
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} on {os.cpu_count()} CPUs, {args.threads} torch threads")
    if load > 1.5:
        print("warning: the machine is busy; token counts are exact, but timings are not")

    from entrolab.backends import HFBackend
    from entrolab.inference.pareto import pareto_svg, run_pareto
    from entrolab.tasks import load_task

    settings = {"level": args.level} if args.task == "arithmetic" else {}
    task = load_task(args.task, **settings)
    items = task.items(args.n, seed=args.seed)
    if args.tiny:
        from entrolab.models import tiny_model

        model, tok = tiny_model(seed=0)
        backend = HFBackend(model, tok, name="tiny")
    else:
        backend = HFBackend.load()
    common = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
    }
    params = {
        "majority": {**common, "window": args.window},
        "deepconf-online": {**common, "window": args.window, "tau": args.tau, "warmup": 4},
        "adaptive": {**common, "tau": args.tau, "first": 4, "wave": 4},
    }
    config = {"model": backend.name, "task": task.describe(), "n": args.n, "bench": "testtime"}
    t0 = time.perf_counter()
    points = []
    for name, budgets in BUDGETS.items():
        points += run_pareto(
            backend,
            task,
            items,
            [name],
            budgets,
            params={name: params[name]},
            seed=args.seed,
            run_dir=args.out,
            config=config,
            on_progress=lambda d, t, label: print(f"\r{label}: {d}/{t}", end="", flush=True),
        )
        print()
    lynx = _lynx(backend, task, items, args, common)
    seconds = time.perf_counter() - t0
    rows = _rows(Path(args.out))
    table = _table(points, lynx, rows, items)
    header = (
        f"`{' '.join(sys.argv)}` — model {backend.name}, task {args.task} {settings}, "
        f"{args.n} items, T={args.temperature}, top-p {args.top_p}, ≤{args.max_new_tokens} "
        f"new tokens, window {args.window}, τ={args.tau}, load average {load:.2f}, "
        f"{seconds:.0f} s.\n\n"
    )
    out = Path(args.out)
    (out / "table.md").write_text(header + table, encoding="utf-8")
    (out / "pareto.svg").write_text(pareto_svg(points, title=task.name), encoding="utf-8")
    print(header + table)
    print(f"written: {out / 'table.md'}, {out / 'pareto.svg'}")


def _lynx(backend, task, items, args, common):
    """LYNX outcomes (one trace per item, learned exit), or a reason why it was skipped."""
    from entrolab.inference.base import load_strategies, make_strategy

    if "lynx" not in load_strategies():
        return "lynx strategy not available"
    path = args.lynx_exit
    try:
        if path is None:
            if args.lynx_fit_n < 1:
                return "no LYNX exit given (--lynx-exit) and fitting disabled"
            from entrolab.inference.exits import fit_lynx, save_lynx

            held_out = task.items(args.n + args.lynx_fit_n, seed=args.seed)[args.n :]
            path = save_lynx(
                fit_lynx(backend, task, held_out, seed=args.seed), Path(args.out) / "lynx"
            )
        strategy = make_strategy(
            "lynx", exit=str(path), config={"max_new_tokens": common["max_new_tokens"]}
        )
        return strategy.run(backend, task, items, seed=args.seed)
    except Exception as exc:  # the other engineer's API may differ: report, do not crash
        return f"lynx skipped: {type(exc).__name__}: {exc}"


def _rows(run_dir: Path) -> list[dict]:
    from entrolab.evaluation.rundir import RunDir

    return RunDir(run_dir).rows()


def _paired_ci(
    a: np.ndarray, b: np.ndarray, seed: int = 0, reps: int = 2000
) -> tuple[float, float]:
    """95% paired bootstrap interval of mean(a) − mean(b) over items."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(reps, a.size))
    d = a[idx].mean(1) - b[idx].mean(1)
    return float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))


def _table(points, lynx, rows, items) -> str:
    ids = [it.id for it in items]
    correct: dict[tuple[str, int], dict[str, bool]] = {}
    for r in rows:
        correct.setdefault((r["strategy"], r["budget"]), {})[r["item_id"]] = r["correct"]
    ref = next((p for p in points if (p.strategy, p.budget) == ("majority", 16)), None)
    vec = lambda key: np.array([float(correct[key][i]) for i in ids])  # noqa: E731
    lines = [
        "| strategy | budget | accuracy | tokens/item | tokens vs maj@16 | Δacc vs maj@16 [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    verdicts = []
    for p in points:
        rel = f"{p.tokens_per_item / ref.tokens_per_item:.0%}" if ref else "–"
        diff = "–"
        if ref and (p.strategy, p.budget) != ("majority", 16):
            lo, hi = _paired_ci(vec((p.strategy, p.budget)), vec(("majority", 16)))
            d = 100 * (p.accuracy - ref.accuracy)
            diff = f"{d:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            if p.strategy != "majority":
                ok = d >= -1.0 and p.tokens_per_item <= 0.5 * ref.tokens_per_item
                verdicts.append(f"{p.strategy}@{p.budget}: {'MET' if ok else 'not met'}")
        lines.append(
            f"| {p.strategy} | {p.budget} | {p.accuracy:.3f} | {p.tokens_per_item:.1f} | {rel} | {diff} |"
        )
    if isinstance(lynx, str):
        lines.append(f"| lynx | 1 trace | – | – | – | {lynx} |")
    else:
        from entrolab.inference.base import summarize_outcomes

        s = summarize_outcomes(lynx)
        rel = f"{s['tokens_per_item'] / ref.tokens_per_item:.0%}" if ref else "–"
        lines.append(
            f"| lynx | 1 trace | {s['accuracy']:.3f} | {s['tokens_per_item']:.1f} | {rel} | – |"
        )
    out = "\n".join(lines) + "\n"
    if ref is not None:
        single = next(p for p in points if (p.strategy, p.budget) == ("majority", 1))
        band = "inside" if 0.2 <= single.accuracy <= 0.7 else "OUTSIDE"
        out += (
            f"\nSingle-sample accuracy (majority@1) {single.accuracy:.3f}: {band} the 20–70% band."
            f"\nGoal (accuracy ≥ majority@16 − 1 point with ≤ 50% of its tokens): "
            + "; ".join(verdicts)
            + ".\n"
        )
        out += "\nDeepConf offline votes over majority@16's own traces (same tokens):\n\n"
        out += "| vote | accuracy |\n|---|---|\n"
        maj16 = [r for r in rows if (r["strategy"], r["budget"]) == ("majority", 16)]
        for name in maj16[0]["meta"].get("variants", {}) if maj16 else []:
            acc = np.mean([r["meta"]["variants"][name]["correct"] for r in maj16])
            out += f"| {name} | {acc:.3f} |\n"
    return out


if __name__ == "__main__":
    main()
