"""Parametric memory vs context on conflicting arithmetic facts (spec B19; Zhang et al. 2025).

Run:  .venv/bin/python bench/conflict.py [--n 120] [--out runs/bench-conflict]

Items cycle over operand digits {1, 2} and three hint phrasings (fact / maybe / rumour); per
item the greedy completions of the closed-book, context-only and conflict prompts give H_par,
H_ctx (nats at the answer's first digit), Δ = (H_ctx − H_par)/(H_ctx + H_par) and whether the
conflict answer follows the context, memory or neither (entrolab.studies.conflict). Rows are
appended per chunk to OUT/results.jsonl (a killed run resumes). Reports P(follow context) among
items that followed one of the two, per Δ tertile (exact intervals) and by hint and digits, and
the logistic fit P = σ(a + bΔ) with bootstrap intervals for b and the balance point Δ* = −a/b.
Claim checked: P(follow context) decreases in Δ (b < 0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-conflict")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from entrolab.backends import HFBackend
    from entrolab.calibration import clopper_pearson
    from entrolab.studies.conflict import conflict_items, fit_follow_curve, measure_conflict

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    items = conflict_items(args.n, seed=args.seed)
    backend = None
    for start in range(len(rows), args.n, args.chunk):
        backend = backend or HFBackend.load()
        new = measure_conflict(backend, items[start : start + args.chunk])
        with path.open("a") as f:
            f.writelines(json.dumps({**r, "index": start + j}) + "\n" for j, r in enumerate(new))
        rows += new
        print(f"{len(rows)}/{args.n}", flush=True)
    rows = rows[: args.n]
    decided = [r for r in rows if r["follow"] in ("context", "memory") and np.isfinite(r["delta"])]
    other = sum(r["follow"] == "other" for r in rows)
    print(f"{len(rows)} items: {len(decided)} followed context or memory, {other} neither\n")
    d = np.array([r["delta"] for r in decided])
    y = np.array([float(r["follow"] == "context") for r in decided])

    def share(mask: np.ndarray, label: str) -> None:
        k, m = int(y[mask].sum()), int(mask.sum())
        if m:
            iv = clopper_pearson(k, m)
            print(f"| {label} | {m} | {iv.estimate:.2f} [{iv.low:.2f}, {iv.high:.2f}] |")

    print("| group | n | P(follow context) [exact 95% CI] |\n|---|---|---|")
    cuts = np.quantile(d, [1 / 3, 2 / 3])
    for lo, hi, name in ((-np.inf, cuts[0], "Δ low"), (cuts[0], cuts[1], "Δ mid"),
                         (cuts[1], np.inf, "Δ high")):  # fmt: skip
        share((d > lo) & (d <= hi), f"{name} ({lo:.2f}, {hi:.2f}]")
    for hint in ("fact", "maybe", "rumour"):
        share(np.array([r["hint"] == hint for r in decided]), f"hint {hint}")
    for dig in (1, 2):
        share(np.array([r["digits"] == dig for r in decided]), f"{dig}-digit operands")
    fit = fit_follow_curve(d, y)
    print(
        f"\nlogistic fit on {fit['n']} items: b = {fit['b']:.2f} [{fit['b_low']:.2f}, "
        f"{fit['b_high']:.2f}], balance point Δ* = {fit['balance']:.3f} [{fit['balance_low']:.3f}, "
        f"{fit['balance_high']:.3f}]; decreasing in Δ: {'yes' if fit['decreasing'] else 'not significant'}"
    )
    (out / "fit.json").write_text(json.dumps(fit, indent=2))


if __name__ == "__main__":
    main()
