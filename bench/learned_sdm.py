"""SDM verification on the embedded model: is a sampled arithmetic answer correct?

Fit (head + SDM calibration) on answers to arithmetic level FIT; test on new items of the same
level (in distribution) and of level OOD (bigger numbers, not used for fitting). Reported per
split, with 95% bootstrap intervals over answers: AUROC, ECE, and selective accuracy at a fixed
coverage (the answers with the highest confidence), for the SDM confidence (p̂_lower, 0 when
rejected as OOD), the same head's softmax confidence, and the answer's mean token probability
(white-box MSP-style baseline); plus SDM's rejection rate and the accuracy of what it keeps.

    OMP_NUM_THREADS=1 .venv/bin/python bench/learned_sdm.py --fit-n 150 --test-n 80
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit-n", type=int, default=150)
    ap.add_argument("--test-n", type=int, default=80)
    ap.add_argument("--fit-level", type=int, default=2)
    ap.add_argument("--ood-level", type=int, default=3)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--coverage", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=0.7)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from entrolab.backends import HFBackend
    from entrolab.calibration import bootstrap_interval, metric_interval
    from entrolab.inference.sdm import fit_sdm, verifier_data
    from entrolab.tasks import load_task

    backend = HFBackend.load()
    t0 = time.perf_counter()

    def data(level: int, n: int, seed: int):
        task = load_task("arithmetic", level=level)
        return verifier_data(backend, task, task.items(n, seed=seed), samples=args.samples,
                             temperature=args.temperature, seed=seed)  # fmt: skip

    x, y, item, layer, _ = data(args.fit_level, args.fit_n, 0)
    cal = item % 2 == 1  # split by item: odd items calibrate
    v = fit_sdm(x[~cal], y[~cal], (x[cal], y[cal]), model=backend.name, layer=layer)
    print(
        f"fit: level {args.fit_level}, {args.fit_n} items × {args.samples} answers, "
        f"{int(y.sum())}/{len(y)} correct, layer {layer}",
        flush=True,
    )

    def selective(c, yy):
        k = max(1, round(args.coverage * len(c)))

        def acc(cc, y2):
            return float(y2[np.argsort(-cc, kind="stable")[:k]].mean())

        return bootstrap_interval(acc, c, yy)

    rows = []
    for name, level, seed in (("in-distribution", args.fit_level, 1), ("OOD", args.ood_level, 2)):
        xt, yt, _, _, mlp = data(level, args.test_n, seed)
        yt = yt.numpy().astype(float)
        r = v.details(xt)
        sdm = v.confidence(xt)
        soft = torch.sigmoid(v.probe.logits(xt)).numpy()
        msp = np.exp(mlp.numpy())
        keep = ~r["ood"]
        kept = f"{yt[keep].mean():.3f}" if keep.any() else "–"
        print(
            f"{name} (level {level}): n = {len(yt)} answers, accuracy {yt.mean():.3f}; SDM "
            f"rejects {100 * r['ood'].mean():.0f}%, accuracy of the kept {kept}",
            flush=True,
        )
        for est, c in (("SDM p̂_lower", sdm), ("head softmax", soft), ("answer token prob", msp)):
            rows.append((name, est, metric_interval("auroc", 1 - c, yt).format(),
                         metric_interval("ece", c, yt).format(), selective(c, yt).format()))  # fmt: skip
    print(f"\n{time.perf_counter() - t0:.0f} s (machine shared)\n")
    print(f"| split | confidence | AUROC | ECE | selective accuracy @ {args.coverage:.0%} |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
