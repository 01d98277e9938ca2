"""C-IP "guess the number" on the embedded model: query selection by expected conformal set size
vs by conditional entropy, the model's option log-probabilities as p̂(y | history).

A number in 1..K; yes/no queries "Is it greater than j?" (j < K) and "Is it even?"; q̂ from
calibration histories (random true numbers, 0–3 random answered queries) at miscoverage α.
Each target 1..K is played by both policies (same budget); reported: success rate (final set
exactly {target}) with Clopper–Pearson intervals, mean queries with bootstrap intervals over
games, and the paired difference (set size − entropy).

    OMP_NUM_THREADS=1 .venv/bin/python bench/learned_cip.py --k 8 --repeats 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--calibration", type=int, default=60)
    ap.add_argument("--budget", type=int, default=5)
    ap.add_argument(
        "--posterior",
        choices=("llm", "prior-bayes"),
        default="llm",
        help="llm: the model reads the history; prior-bayes: its p̂(y | no history) updated exactly",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)

    from entrolab.backends import HFBackend
    from entrolab.calibration import accuracy_interval, bootstrap_interval
    from entrolab.inference.cip import (
        bayes_label_probs,
        calibrate_qhat,
        llm_label_probs,
        number_queries,
        play,
    )

    backend = HFBackend.load()
    t0 = time.perf_counter()
    labels = list(range(1, args.k + 1))
    probs = llm_label_probs(backend, args.k)
    queries = number_queries(args.k)
    if args.posterior == "prior-bayes":
        probs = bayes_label_probs(probs([]), queries, labels)
    rng = np.random.default_rng(0)
    hist = []
    for _ in range(args.calibration):
        y = int(rng.integers(1, args.k + 1))
        asked = rng.choice(len(queries), size=int(rng.integers(0, 4)), replace=False)
        hist.append(([(queries[i].text, queries[i].answer(y)) for i in asked], y))
    qhat = calibrate_qhat(probs, hist, labels, args.alpha)
    p_true = [probs(h)[y - 1] for h, y in hist]
    print(
        f"q̂ = {qhat:.4f} (α = {args.alpha}, n = {len(hist)} calibration histories; mean "
        f"p̂(true) = {np.mean(p_true):.3f}, chance {1 / args.k:.3f})",
        flush=True,
    )
    res = {}
    for by in ("set_size", "entropy"):
        games = [play(probs, queries, labels, y, qhat, by=by, budget=args.budget) for y in labels]
        res[by] = games
        print(f"  {by}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(
        f"\nK = {args.k}, posterior {args.posterior}, budget {args.budget}, n = {len(labels)} games per policy; "
        f"{time.perf_counter() - t0:.0f} s (machine shared)\n"
    )
    print("| policy | success rate | mean queries | mean final set size |")
    print("|---|---|---|---|")
    nq = {}
    for by, games in res.items():
        s = accuracy_interval([g.success for g in games])
        nq[by] = np.array([g.num_queries for g in games], dtype=float)
        m = bootstrap_interval(np.mean, nq[by])
        size = np.mean([len(g.final_set) for g in games])
        print(f"| {by} | {s.format('.3f')} | {m.format('.2f')} | {size:.2f} |")
    d = bootstrap_interval(lambda a, b: float(np.mean(a - b)), nq["set_size"], nq["entropy"])
    print(f"\npaired difference in queries (set size − entropy): {d.format('.2f')}")


if __name__ == "__main__":
    main()
