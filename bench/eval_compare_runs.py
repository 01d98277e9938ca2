"""Compare the estimator rankings of two `entrolab eval` runs on their common items.

Run:  .venv/bin/python bench/eval_compare_runs.py RUN_A RUN_B [--only a,b,c]

For runs that share items and greedy answers (same model, task, seed; e.g. two sampling
temperatures), prints per estimator: AUROC with its 95% stratified bootstrap interval in each
run, and the DeLong p-value of the difference (the same items and correctness labels, so the
test is paired). Answers that differ between the runs (other greedy settings) are refused.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--only", default=None, help="comma-separated estimators")
    args = ap.parse_args()
    from entrolab.calibration import delong_test, metric_interval
    from entrolab.evaluation import load_results

    a, b = load_results(args.run_a), load_results(args.run_b)
    rows_b = {r["id"]: r for r in b.rows}
    common = [r for r in a.rows if r["id"] in rows_b]
    if any(rows_b[r["id"]]["correct"] != r["correct"] for r in common):
        raise SystemExit("the runs grade some common items differently: not paired")
    y = np.array([float(r["correct"]) for r in common])
    names = [n for n in a.estimator_names if n in b.estimator_names]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    ta, tb = a.config.get("temperature"), b.config.get("temperature")
    print(f"{len(common)} common items, accuracy {y.mean():.3f}; A = T {ta}, B = T {tb}\n")
    print(f"| estimator | AUROC A (T={ta}) | AUROC B (T={tb}) | DeLong p (A vs B) |")
    print("|---|---|---|---|")
    out = []
    for n in names:
        ua = np.array([np.nan if r["u"].get(n) is None else r["u"][n] for r in common])
        ub = np.array([np.nan if rows_b[r["id"]]["u"].get(n) is None else rows_b[r["id"]]["u"][n]
                       for r in common])  # fmt: skip
        ok = np.isfinite(ua) & np.isfinite(ub)
        ia = metric_interval("auroc", ua[ok], y[ok])
        ib = metric_interval("auroc", ub[ok], y[ok])
        p = delong_test(ua[ok], ub[ok], y[ok]).p_value
        out.append((max(ia.estimate, ib.estimate), n, ia, ib, p))
    for _, n, ia, ib, p in sorted(out, reverse=True):
        print(f"| {n} | {ia.format()} | {ib.format()} | {p:.3f} |")


if __name__ == "__main__":
    main()
