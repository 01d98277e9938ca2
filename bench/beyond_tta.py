"""TTA on corrupted digits streams: source / norm / TENT / wisdom of crowds / DeYO, 3 seeds.

The claim under test (TENT → WoC → DeYO papers; spec other_methods.md §1.4): on a long, noisy,
open-set stream with an aggressive learning rate, plain TENT degrades (accuracy and open-set
AUROC) while the DeYO and wisdom-of-crowds filters keep them. Seed s = source-model seed and
stream seed. Rows go to runs/beyond_tta/rows.jsonl (resumable); figures to docs/figures/beyond.

    OMP_NUM_THREADS=1 .venv/bin/python bench/beyond_tta.py --seeds 3
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _beyond_common import Rows, fmt, seed_interval

from entrolab.models import cache_dir
from entrolab.tta import EntropyMinTTA
from entrolab.tta.data import KNOWN_CLASSES, load_digits, make_stream
from entrolab.tta.source import SourceConfig, load_or_train
from entrolab.tta.stream import run_stream, stream_plot

METHODS = ("source", "norm", "tent", "woc", "deyo")
SETTINGS = [  # (name, open_set, corruption, repeats, lr)
    ("open / contrast / R=20 / lr 1e-2", True, "contrast", 20, 1e-2),
    ("open / gauss_noise / R=20 / lr 1e-2", True, "gauss_noise", 20, 1e-2),
    ("closed / contrast / R=20 / lr 1e-2", False, "contrast", 20, 1e-2),
    ("closed / gauss_noise / R=20 / lr 1e-2", False, "gauss_noise", 20, 1e-2),
    ("closed / gauss_noise / R=5 / lr 1e-3", False, "gauss_noise", 5, 1e-3),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--runs", default="runs/beyond_tta")
    ap.add_argument("--figures", default="docs/figures/beyond")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = Rows(Path(args.runs) / "rows.jsonl")
    data = load_digits()
    t0 = time.time()
    for name, open_set, corr, reps, lr in SETTINGS:
        for seed in range(args.seeds):
            k = KNOWN_CLASSES if open_set else 10
            src, meta = load_or_train(data, cache_dir(), SourceConfig(num_classes=k, seed=seed))
            stream = make_stream(data, corr, 5, repeats=reps, open_set=open_set, seed=seed)
            results = []
            for m in METHODS:
                key = {"setting": name, "seed": seed, "method": m}
                row = rows.get(key)
                if row is None:
                    tta = EntropyMinTTA(copy.deepcopy(src), m, lr=lr, seed=seed)
                    r = run_stream(tta, stream, 64)
                    row = {**key, **r.to_dict(), "clean_accuracy": meta["clean_accuracy"]}
                    rows.add(row)
                    print(
                        f"{name} seed {seed} {m}: acc {r.accuracy:.3f} auroc {r.auroc}", flush=True
                    )
                results.append(row)
            if seed == 0:
                from entrolab.tta.stream import StreamResult

                rs = [
                    StreamResult(**{f: r.get(f) for f in StreamResult.__dataclass_fields__})
                    for r in results
                ]
                slug = name.replace(" / ", "_").replace(" ", "").replace("=", "").replace(".", "")
                stream_plot(rs, Path(args.figures) / f"tta_{slug}.png", title=f"{name}, seed 0")
    print(f"wall {time.time() - t0:.0f} s (1 thread, shared machine)")
    text = summary(rows, args.seeds)
    print(text)
    (Path(args.runs) / "summary.md").write_text(text)


def summary(rows: Rows, seeds: int) -> str:
    out = []
    for name, open_set, *_ in SETTINGS:
        out.append(f"\n**{name}** (severity 5, n = {seeds} seeds, mean [95% t-interval])\n")
        out.append(
            "| method | accuracy (known) | "
            + ("open-set AUROC | FPR@95TPR | OSCR | " if open_set else "")
            + "selected |"
        )
        out.append("|---|---|" + ("---|---|---|" if open_set else "") + "---|")
        for m in METHODS:
            rs = [r for r in rows.rows if r["setting"] == name and r["method"] == m]
            acc = fmt(seed_interval(r["accuracy"] for r in rs))
            au = (
                " | ".join(
                    fmt(seed_interval(r.get(k) for r in rs)) for k in ("auroc", "fpr95", "oscr")
                )
                + " | "
                if open_set
                else ""
            )
            sel = fmt(seed_interval(r["selected_fraction"] for r in rs), 2)
            out.append(f"| {m} | {acc} | {au}{sel} |")
        for a, b in (("woc", "tent"), ("deyo", "tent"), ("tent", "norm")):
            for metric in ("accuracy", "auroc") if open_set else ("accuracy",):
                d = []
                for s in range(seeds):
                    ra = rows.get({"setting": name, "seed": s, "method": a})
                    rb = rows.get({"setting": name, "seed": s, "method": b})
                    if ra and rb:
                        d.append(ra[metric] - rb[metric])
                ci = seed_interval(d)
                sig = "" if ci[1] > 0 or ci[2] < 0 else " (not significant)"
                out.append(f"\n{a} − {b}, {metric}: {fmt(ci)}{sig}")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()
