"""FineCE on the embedded model: fit the prefix probe on arithmetic level FIT, evaluate on held-out
items of another level (a task setting not used for fitting), resumable.

Per step boundary k (0 = the question alone, then step ends, last = the finished trace): AUROC of
the probe's confidence against the trace's final correctness, with and without BCI, with 95%
bootstrap intervals over traces; at the finished trace also ECE, beside the white-box baselines
on the same traces (mean token log-probability as MSP-style confidence, mean token entropy).

    OMP_NUM_THREADS=1 .venv/bin/python bench/learned_fince.py --fit-n 40 --eval-n 60

Labels go to runs/bench-fince/{fit,eval}.jsonl (a rerun resumes); the table is printed as
markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def _fmt(iv) -> str:
    return f"{iv.estimate:.3f} [{iv.low:.3f}, {iv.high:.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit-n", type=int, default=40)
    ap.add_argument("--eval-n", type=int, default=60)
    ap.add_argument("--fit-level", type=int, default=1)
    ap.add_argument("--eval-level", type=int, default=2)
    ap.add_argument("--continuations", type=int, default=4)
    ap.add_argument("--continuation-tokens", type=int, default=32)
    ap.add_argument("--max-points", type=int, default=4)
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-fince"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    from entrolab.backends import HFBackend
    from entrolab.calibration import metric_interval
    from entrolab.inference.fince import backward_integrate, fit_fince_on, save_fince
    from entrolab.inference.fince_data import collect_prefix_labels
    from entrolab.tasks import load_task

    backend = HFBackend.load()
    t0 = time.perf_counter()

    def collect(level: int, n: int, seed: int, name: str, conts: int):
        task = load_task("arithmetic", level=level)
        items = task.items(n, seed=seed)
        prog = lambda s, d, t: print(f"  {name}: {s} {d}/{t}", flush=True)  # noqa: E731
        return collect_prefix_labels(
            backend, task, items, rule="steps", num_continuations=conts,
            continuation_tokens=args.continuation_tokens, max_points=args.max_points, seed=seed,
            path=args.out / f"{name}.jsonl", on_progress=prog,
        )  # fmt: skip

    fit = collect(args.fit_level, args.fit_n, 0, "fit", args.continuations)
    ev = collect(args.eval_level, args.eval_n, 1, "eval", 0)
    fince = fit_fince_on(fit, model=backend.name, l2=args.l2)
    save_fince(fince, args.out / "fince")
    conf = fince.confidence(ev.features)
    y = ev.trace_correct.numpy().astype(float)
    items = ev.item.numpy()
    bci = np.zeros_like(conf)
    for i in np.unique(items):
        rows = np.flatnonzero(items == i)
        bci[rows] = backward_integrate(conf[rows], fince.bci_lam, fince.bci_k)
    print(
        f"\nfit: level {args.fit_level}, {args.fit_n} items, {len(fit)} prefixes, mean label "
        f"{float(np.nanmean(fit.label.numpy())):.3f}; eval: level {args.eval_level}, "
        f"{args.eval_n} items, accuracy {y[ev.final.numpy()].mean():.3f}; "
        f"{time.perf_counter() - t0:.0f} s (machine shared)\n"
    )
    print("| point | n traces | correct | FineCE AUROC | FineCE+BCI AUROC |")
    print("|---|---|---|---|---|")
    steps = ev.step.numpy()
    final = ev.final.numpy()
    for k in range(int(steps.max()) + 1):
        rows = (steps == k) & ~final
        if k > 0 and rows.sum() < 10:
            break
        label = "question" if k == 0 else f"step end {k}"
        yk = y[rows]
        if 0 < yk.sum() < len(yk):
            a = metric_interval("auroc", 1 - conf[rows], yk)
            b = metric_interval("auroc", 1 - bci[rows], yk)
            print(f"| {label} | {int(rows.sum())} | {int(yk.sum())} | {_fmt(a)} | {_fmt(b)} |")
    yf, cf = y[final], conf[final]
    lp, ent = ev.trace_logprob.numpy()[final], ev.trace_entropy.numpy()[final]
    print(
        f"| finished trace | {int(final.sum())} | {int(yf.sum())} | "
        f"{_fmt(metric_interval('auroc', 1 - cf, yf))} | – |"
    )
    print("\n| estimator (finished trace) | AUROC | ECE |")
    print("|---|---|---|")
    for name, u, c in (
        ("FineCE probe", 1 - cf, cf),
        ("mean token log-prob (exp → confidence)", -lp, np.exp(lp)),
        ("mean token entropy", ent, None),
    ):
        e = _fmt(metric_interval("ece", c, yf)) if c is not None else "–"
        print(f"| {name} | {_fmt(metric_interval('auroc', u, yf))} | {e} |")


if __name__ == "__main__":
    main()
