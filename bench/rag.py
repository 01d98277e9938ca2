"""Retrieved-hint confidence and calibration on arithmetic MCQ (spec B18; Ozaki et al. 2025).

Run:  .venv/bin/python bench/rag.py [--n 40] [--digits 1] [--orders before after]

Per condition (no hint / correct hint / distractor hint, document before or after the
question): accuracy with its exact interval, mean option-renormalised confidence, ECE and ACE
under CC_RAG's conventions and the torchmetrics ECE, with 95% bootstrap intervals over items
(entrolab.studies.rag). Each condition's per-item results are saved to OUT/<condition>.json, so a
killed run resumes by condition.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--digits", type=int, default=1)
    ap.add_argument("--orders", nargs="+", default=["before"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-rag")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from entrolab.backends import HFBackend
    from entrolab.studies.rag import calibration_side_by_side, mcq_items, measure_mcq

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    items = mcq_items(args.n, seed=args.seed, digits=args.digits)
    backend = None
    results = {}
    print(
        "| hint | order | n | accuracy | mean conf | ECE (ccrag) | ACE (ccrag) | ECE (torchmetrics) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for order in args.orders:
        for hint in ("none", "correct", "distractor"):
            if hint == "none" and order != args.orders[0]:
                continue
            path = out / f"{hint}-{order}.json"
            if path.exists():
                res = {k: np.array(v) for k, v in json.loads(path.read_text()).items()}
            else:
                backend = backend or HFBackend.load()
                res = measure_mcq(backend, items, hint, order)
                path.write_text(json.dumps({k: v.tolist() for k, v in res.items()}))
            results[(hint, order)] = res
            m = calibration_side_by_side(res["confidence"], res["correct"])
            cell = lambda d: f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"  # noqa: E731
            print(
                f"| {hint} | {order if hint != 'none' else '–'} | {m['n']} | {cell(m['accuracy'])} | "
                f"{cell(m['mean_confidence'])} | {cell(m['ece_ccrag'])} | {cell(m['ace_ccrag'])} | "
                f"{cell(m['ece_torchmetrics'])} |",
                flush=True,
            )
    from entrolab.calibration import mcnemar_exact, paired_mean_difference

    base = results[("none", args.orders[0])]
    print(
        "\nPaired on the same items vs no hint: accuracy difference [95% paired bootstrap] "
        "(exact McNemar p); mean-confidence difference [95% paired bootstrap]"
    )
    for (hint, order), res in results.items():
        if hint == "none":
            continue
        acc = mcnemar_exact(res["correct"], base["correct"])
        conf = paired_mean_difference(res["confidence"], base["confidence"])
        print(
            f"- {hint} ({order}): accuracy {acc.difference:+.3f} [{acc.low:+.3f}, {acc.high:+.3f}] "
            f"(p={acc.p_value:.3g}); confidence {conf.difference:+.3f} [{conf.low:+.3f}, "
            f"{conf.high:+.3f}]"
        )


if __name__ == "__main__":
    main()
