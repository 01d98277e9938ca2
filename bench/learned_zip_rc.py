"""ZIP-RC on the embedded model: fit the joint reward × remaining-length head on the model's own
rollouts (arithmetic level FIT, items seed 0), then accuracy vs generated tokens on held-out
items (seed 1) beside majority@N and DeepConf-online, through the pareto harness (resumable run
directory; exact 95% accuracy intervals and paired McNemar tests vs majority).

    OMP_NUM_THREADS=1 .venv/bin/python bench/learned_zip_rc.py --fit-n 60 --n 40
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit-n", type=int, default=60)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--budgets", default="2,4,8")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-zip-rc"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    from entrolab.backends import HFBackend
    from entrolab.inference.base import Sampling
    from entrolab.inference.pareto import paired_comparisons, run_pareto
    from entrolab.inference.zip_rc import fit_zip_rc, load_zip_rc, save_zip_rc
    from entrolab.tasks import load_task

    backend = HFBackend.load()
    task = load_task("arithmetic", level=args.level)
    t0 = time.perf_counter()
    head_path = args.out / "head"
    if (args.out / "head.json").is_file():
        head = load_zip_rc(head_path, backend)
    else:
        samp = Sampling(max_new_tokens=args.max_new_tokens)
        head = fit_zip_rc(backend, task, task.items(args.fit_n, seed=0), samples=4, stride=8,
                          sampling=samp, length_edges=(4, 8, 16, 32))  # fmt: skip
        save_zip_rc(head, head_path)
    print(f"head: {head.stats}; {time.perf_counter() - t0:.0f} s", flush=True)
    items = task.items(args.n, seed=1)
    common = {"max_new_tokens": args.max_new_tokens}
    params = {
        "majority": dict(common),
        "deepconf-online": {**common, "warmup": 2},
        "zip-rc": {**common, "head": str(head_path)},
    }
    budgets = [int(b) for b in args.budgets.split(",")]
    points = run_pareto(
        backend, task, items, list(params), budgets, params=params, seed=1,
        run_dir=args.out / "pareto", config={"model": backend.name, "level": args.level},
        on_progress=lambda d, t, s: print(f"  {s} {d}/{t}", flush=True),
    )  # fmt: skip
    print(f"\n{time.perf_counter() - t0:.0f} s (machine shared)\n")
    print("| strategy | budget | accuracy [95% CI] | tokens / item | n |")
    print("|---|---|---|---|---|")
    for p in points:
        print(f"| {p.strategy} | {p.budget} | {p.accuracy:.3f} [{p.accuracy_low:.3f}, "
              f"{p.accuracy_high:.3f}] | {p.tokens_per_item:.1f} | {p.n} |")  # fmt: skip
    from entrolab.evaluation.rundir import RunDir

    print("\npaired vs majority at the same budget:")
    for row in paired_comparisons(RunDir(args.out / "pareto").rows(), "majority"):
        print(row)


if __name__ == "__main__":
    main()
