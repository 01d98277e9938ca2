"""ZIP-RC planned pruning on the embedded model: the head fitted by bench/learned_zip_rc.py
(runs/bench-zip-rc/head), held-out arithmetic items (seed 1), majority@N vs zip-rc (immediate
pruning) vs zip-rc with a planned future prune, all at one budget on the same seeds; accuracy with
exact intervals, paired McNemar and token differences vs majority and between the two zip-rc
forms. Per-strategy outcomes are cached in OUT/<label>.json (a rerun resumes).

    OMP_NUM_THREADS=1 .venv/bin/python bench/learned_zip_rc_plan.py --n 20 --budget 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--budget", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--head", type=Path, default=Path("runs/bench-zip-rc/head"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench-zip-rc-plan"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    from entrolab.backends import HFBackend
    from entrolab.calibration import accuracy_interval
    from entrolab.calibration.comparison import mcnemar_exact, paired_mean_difference
    from entrolab.inference import make_strategy
    from entrolab.tasks import load_task

    backend = HFBackend.load()
    task = load_task("arithmetic", level=args.level)
    items = task.items(args.n, seed=1)
    t0 = time.perf_counter()
    common = {"budget": args.budget, "max_new_tokens": args.max_new_tokens}
    runs = {
        "majority": ("majority", common),
        "zip-rc": ("zip-rc", {**common, "head": str(args.head)}),
        "zip-rc planned": ("zip-rc", {**common, "head": str(args.head), "future_prune": True}),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    res: dict[str, dict[str, list]] = {}
    for label, (name, params) in runs.items():
        path = args.out / f"{label.replace(' ', '_')}.json"
        if not path.is_file():
            outs = make_strategy(name, **params).run(backend, task, items, seed=1)
            rows = {"correct": [bool(o.correct) for o in outs],
                    "tokens": [int(o.generated_tokens) for o in outs],
                    "meta": [o.meta for o in outs]}  # fmt: skip
            path.write_text(json.dumps(rows, default=str))
            print(f"  {label}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
        res[label] = json.loads(path.read_text())
    print(f"\nlevel {args.level}, n = {args.n}, budget {args.budget}, "
          f"{args.max_new_tokens} tokens; {time.perf_counter() - t0:.0f} s (machine shared)\n")  # fmt: skip
    print("| strategy | accuracy (exact CI) | tokens / item | vs majority: Δ acc. (McNemar p) "
          "| Δ tokens |")  # fmt: skip
    print("|---|---|---|---|---|")
    base = res["majority"]
    for label, r in res.items():
        acc = accuracy_interval(np.array(r["correct"], float))
        cells = ["", ""]
        if label != "majority":
            m = mcnemar_exact(np.array(r["correct"], float), np.array(base["correct"], float))
            t = paired_mean_difference(r["tokens"], base["tokens"])
            cells = [f"{m.difference:+.2f} [{m.low:+.2f}, {m.high:+.2f}] ({m.p_value:.3g})",
                     f"{t.difference:+.1f} [{t.low:+.1f}, {t.high:+.1f}]"]  # fmt: skip
        print(f"| {label} | {acc.estimate:.3f} [{acc.low:.3f}, {acc.high:.3f}] | "
              f"{np.mean(r['tokens']):.1f} | {cells[0]} | {cells[1]} |")  # fmt: skip
    a, b = res["zip-rc planned"], res["zip-rc"]
    m = mcnemar_exact(np.array(a["correct"], float), np.array(b["correct"], float))
    t = paired_mean_difference(a["tokens"], b["tokens"])
    print(f"\nplanned − immediate: accuracy {m.difference:+.2f} [{m.low:+.2f}, {m.high:+.2f}] "
          f"(p {m.p_value:.3g}); tokens {t.difference:+.1f} [{t.low:+.1f}, {t.high:+.1f}]")  # fmt: skip
    bins = [x.get("future_bin") for x in a["meta"]]
    late = sum(len(x.get("planned_pruned") or []) for x in a["meta"])
    print(f"planned prune bins chosen: {bins}; samples cut by the plan: {late}")


if __name__ == "__main__":
    main()
