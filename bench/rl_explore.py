"""Exploring rollouts on the proxy task (issue 12): TTRL / ETTRL / ECHO without labels, CURE vs
i.i.d. DAPO groups, GRPO with labels as the reference, several seeds per arm.

Per arm and seed (runs in ``runs/bench-rl-explore/<arm>-s<seed>``, resumable): held-out pass@1,
the initial maj@8 (from the step-0 evaluation rows), token entropy, pseudo-label accuracy, the
wrong-majority lock-in rate at the end (held-out items whose majority answer is wrong with
share ≥ 0.75), distinct answers per group and ``frac_zero_std`` over the first steps, and the
Invisible-Leash counts of the last evaluation vs step 0 (k = eval samples). Summaries: mean with a
95% t-interval over seeds (n = seeds). Prints a markdown table and writes it to
``<out>/summary.md`` (copied by hand into docs/rl_results.md with the reading).

    .venv/bin/python bench/rl_explore.py --steps 40 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARMS: dict[str, tuple[str, list[str], str]] = {  # arm -> (recipe, overrides, run-dir slug)
    "GRPO (labels)": ("proxy_grpo.yaml", [], "grpo"),
    "TTRL": ("proxy_ttrl.yaml", [], "ttrl"),
    "ETTRL": ("proxy_ettrl.yaml", [], "ettrl"),
    "ECHO": ("proxy_echo.yaml", [], "echo"),
    "ECHO no pruning": ("proxy_echo.yaml", ["explore.echo_prune=false"], "echo-noprune"),
    "ECHO sampled branch tokens": (
        "proxy_echo.yaml",
        ["explore.echo_tree.branch_tokens=sample"],
        "echo-sampled",
    ),
    "ECHO 1 root (official group shape)": (  # 1 root branched, filled to 8 with fresh samples
        "proxy_echo.yaml",
        ["rollout.group_size=1", "explore.branches=7"],
        "echo-1root",
    ),
    "ECHO fixed width (low_confidence rule)": (
        "proxy_echo.yaml",
        ["explore.rule=low_confidence", "explore.prefix=shared"],
        "echo-fixed",
    ),
    "CURE": ("proxy_cure.yaml", [], "cure"),
    "CURE random positions": ("proxy_cure.yaml", ["explore.cure_critical=random"], "cure-rand"),
    "DAPO i.i.d. (CURE control)": (
        "proxy_cure.yaml",
        ["explore.mode=iid", "rollout.group_size=8"],
        "dapo-ctl",
    ),
    "CURE n2=3 (paper)": ("proxy_cure.yaml", ["explore.cure_n2=3"], "cure-n2-3"),  # 4 + 12 rows
    "DAPO i.i.d. 16 (CURE n2=3 control)": (
        "proxy_cure.yaml",
        ["explore.mode=iid", "rollout.group_size=16"],
        "dapo-ctl16",
    ),
    "SPEAR": ("proxy_spear.yaml", [], "spear"),
    "AEPO-agentic sg-clip": ("proxy_grpo.yaml", ["algorithm.loss=aepo_agentic"], "aepo-sg"),
    "AEPO-agentic plain clip": (
        "proxy_grpo.yaml",
        ["algorithm.loss=aepo_agentic", "algorithm.loss_params.sg_clip=false"],
        "aepo-plain",
    ),
}
SECTION = "## Exploring rollouts (issue 12)"


def t_interval(xs) -> tuple[float, float, float]:
    """Mean and 95% t-interval half-width over seeds."""
    from scipy import stats

    x = np.asarray([v for v in xs if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan"), 0
    if len(x) == 1:
        return float(x[0]), float("nan"), 1
    h = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(h), len(x)


def paired_lines(table: dict[str, list[dict]], ref: str, keys: list[str]) -> list[str]:
    """Markdown rows: each arm minus ``ref``, paired by seed (same seeds, same start), mean ±
    95% t-interval; "(not significant)" where the interval holds 0."""
    lines = [
        f"Difference to {ref}, paired by seed (n = {len(table[ref])}), mean ± 95% t-interval:",
        "",
        "| arm | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for arm, rows in table.items():
        if arm == ref:
            continue
        cells = []
        for c in keys:
            m, h, n = t_interval([r[c] - g[c] for r, g in zip(rows, table[ref], strict=True)])
            sig = "" if n < 2 or abs(m) > h else " (not significant)"
            cells.append(f"{m:+.3f} ± {h:.3f}{sig}" if n >= 2 else f"{m:+.3f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def run(arm: str, seed: int, steps: int, out: Path, stage1: int | None = None) -> Path:
    import torch

    from entrolab.rl.config import load_config
    from entrolab.rl.trainer import Trainer

    torch.set_num_threads(1)
    recipe, extra, slug = ARMS[arm]
    run_dir = out / f"{slug}-s{seed}"
    if stage1 is not None and recipe == "proxy_cure.yaml":
        extra = [*extra, f"explore.stage1_steps={stage1}"]
    cfg = load_config(
        ROOT / "recipes" / recipe,
        [*extra, f"seed={seed}", f"steps={steps}", "eval.every=20", "checkpoint_every=10",
         "tensorboard=false", "progress=false"],
    )  # fmt: skip
    recs = (
        [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        if (run_dir / "metrics.jsonl").is_file()
        else []
    )
    if not any(r.get("step") == steps and "eval/pass@1" in r for r in recs):
        Trainer(cfg, run_dir).train()
    return run_dir


def _rows(run_dir: Path, step: int):
    from entrolab.rl.leash import RowStore

    path = run_dir / "leash" / f"step_{step:06d}.jsonl"
    store = RowStore(path)
    return [store.rows[i] for i in sorted(store.rows)]


def _majority(row):
    from entrolab.rl.ttrl import majority_pseudo_labels

    pl = majority_pseudo_labels(row.answers, len(row.answers))
    r = pl.majority_row[0]
    return (r >= 0 and row.correct[r]), float(pl.share[0])


def summarise(run_dir: Path, steps: int, early: int, stage1: int | None = None) -> dict[str, float]:
    from entrolab.rl.leash import leash_table

    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    by = {r["step"]: r for r in recs}
    last = by[steps]
    start_rows, end_rows = _rows(run_dir, 0), _rows(run_dir, steps)
    maj0 = np.mean([_majority(r)[0] for r in start_rows])
    lock = np.mean([(not ok) and share >= 0.75 for ok, share in map(_majority, end_rows)])
    tab = leash_table(start_rows, end_rows)
    firsts = [by[s] for s in range(1, early + 1) if s in by]

    def pick(key: str, rs: list[dict]) -> float:
        vals = [r[key] for r in rs if key in r]
        return float(np.mean(vals)) if vals else float("nan")

    s1 = stage1 if stage1 else steps
    stage1_recs = [by[s] for s in range(1, s1 + 1) if s in by]
    s1_tail = [by[s] for s in range(max(1, s1 - 4), s1 + 1) if s in by]
    s2_tail = [by[s] for s in range(max(s1 + 1, steps - 4), steps + 1) if s in by]
    hard = [j for j, r in enumerate(start_rows) if sum(r.correct) / len(r.correct) <= 0.25]
    hard_end = [sum(end_rows[j].correct) / len(end_rows[j].correct) for j in hard]
    return {
        "pass@1 start": by[0]["eval/pass@1"],
        "hard pass@1 end": float(np.mean(hard_end)) if hard_end else float("nan"),
        "hi-clip grad frac": pick("loss/hi_clip_grad_frac", recs),
        "pass@1 end": last["eval/pass@1"],
        "pass@8 end": last["eval/pass@8"],
        "distinct (stage 1)": pick("train/distinct_answers", stage1_recs),
        "zero-std (stage 1)": pick("train/frac_zero_std", stage1_recs),
        "H_roll end stage 1": pick("dyn/entropy", s1_tail),
        "H_roll end": pick("dyn/entropy", s2_tail) if stage1 else pick("dyn/entropy", s1_tail),
        "echo branch roots": pick("echo/branch_root_frac", recs),
        "echo width": pick("echo/width_mean", recs),
        "echo pruned roots": pick("echo/pruned_root_frac", recs),
        "echo pruned branches": pick("echo/pruned_branch_frac", recs),
        "maj@8 start": float(maj0),
        "H_tok end": last["eval/token_entropy"],
        "H_tok start": by[0]["eval/token_entropy"],
        "label acc": pick("ttrl/label_acc", recs),
        "lock-in": float(lock),
        "distinct (early)": pick("train/distinct_answers", firsts),
        "zero-std (early)": pick("train/frac_zero_std", firsts),
        "preserved": tab["problems"]["preserved"],
        "shrunk": tab["problems"]["shrunk"],
        "expanded": tab["problems"]["expanded"],
        "dH_ans": tab["dH_ans"],
        "dH_tok": tab["dH_tok"],
        "n items": tab["n"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-rl-explore")
    ap.add_argument("--early", type=int, default=10, help="steps averaged for the CURE group stats")
    ap.add_argument("--paired", default=None, help="also print each arm minus this arm by seed")
    ap.add_argument(
        "--paired-keys", default="pass@1 end,pass@8 end,H_tok end,label acc,lock-in",
        help="comma-separated columns of the --paired table",
    )  # fmt: skip
    ap.add_argument(
        "--cure-stage1", type=int, default=None,
        help="CURE's stage switch (explore.stage1_steps) for the CURE arms; default the recipe's",
    )  # fmt: skip
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    table: dict[str, list[dict[str, float]]] = {}
    t0 = time.time()
    for arm in arms:
        for seed in range(a.seeds):
            d = run(arm, seed, a.steps, a.out, a.cure_stage1)
            stage1 = a.cure_stage1 if ARMS[arm][0] == "proxy_cure.yaml" else None
            table.setdefault(arm, []).append(summarise(d, a.steps, a.early, stage1))
            print(f"[{time.time() - t0:6.0f}s] {arm} seed {seed}: {table[arm][-1]}", flush=True)
    cols = list(next(iter(table.values()))[0])
    lines = [
        SECTION,
        "",
        f"Command: `.venv/bin/python bench/rl_explore.py --steps {a.steps} --seeds {a.seeds} "
        f"--arms '{a.arms}' --out {a.out}"
        + (f" --cure-stage1 {a.cure_stage1}" if a.cure_stage1 else "")
        + "` "
        f"(proxy task, tiny SFT model, 16 prompts/step, 8 rows per prompt in every arm; "
        f"n = {a.seeds} seeds per arm; mean ± 95% t-interval half-width over seeds; held-out "
        "set of 128 items, k = 8 samples; leash counts = last evaluation vs step 0).",
        "",
        "| arm | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for arm, rows in table.items():
        cells = []
        for c in cols:
            m, h, n = t_interval([r[c] for r in rows])
            cells.append("n/a" if n == 0 else f"{m:.3f}" if n < 2 else f"{m:.3f} ± {h:.3f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if a.paired:
        keys = [k.strip() for k in a.paired_keys.split(",") if k.strip()]
        lines += ["", *paired_lines(table, a.paired, keys)]
    text = "\n".join(lines) + "\n"
    print(text)
    (a.out / "summary.md").write_text(text)
    (a.out / "summary.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
