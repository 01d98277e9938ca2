"""Confidence-shaped RL on the proxy task: advantage shapers, RiskPO, prompt selection, DPO/VPO.

Every arm starts from ``recipes/proxy_grpo.yaml`` (a tiny model after SFT; ``--steps`` RL
steps, held-out evaluation every ``--eval-every`` steps) with held-out calibration tracking on
(self-certainty, mean token entropy, DeepConf lowest window, perplexity; frozen Platt map from
step 0), 3 seeds per arm. After training, each run's final policy samples 8 replies per held-out item to measure
the spread of the correct answers' mean token log-probs (ProGRPO's target quantity).

Writes the ``confidence`` section of docs/rl_results.md (figures in docs/figures/). Intervals:
mean over seeds with a 95% t-interval (t₀.₉₇₅,₂ = 4.303 for 3 seeds); differences to GRPO are
paired by seed (same SFT model, same data order) and called significant only when their
interval excludes 0. Runs live in runs/bench-rl-conf/ and resume.

    .venv/bin/python bench/rl_confidence.py                           # everything
    .venv/bin/python bench/rl_confidence.py --arms GRPO,UCAS --seeds 1 --steps 6 \\
        --runs /tmp/conf-smoke --out-md /tmp/conf-smoke/results.md      # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from rl import machine, replace_section  # noqa: E402  (bench/rl.py helpers)

RECIPE = ROOT / "recipes" / "proxy_grpo.yaml"
SMALL_POOL = ["task.train_items=256"]  # selection arms: a pool the run revisits (~6 epochs)
ARMS: dict[str, list[str]] = {
    "GRPO": [],
    "UCAS": ["algorithm.advantage=grpo+ucas"],
    "SEED-GRPO": ["algorithm.advantage=grpo+seed_grpo"],
    "ProGRPO": ["algorithm.advantage=grpo+progrpo"],
    "RiskPO": ["algorithm.advantage=riskpo"],
    "EMPG": ["algorithm.advantage=grpo+empg", "algorithm.advantage_params.step_delimiter=+"],
    "uniform (pool 256)": SMALL_POOL,
    "p≈0.5 (pool 256)": [*SMALL_POOL, "selection.method=p05"],
    "InSight (pool 256)": [*SMALL_POOL, "selection.method=insight"],
    "DPO": ["preference.method=dpo", "preference.beta=0.1"],
    "VPO offline": ["preference.method=vpo", "preference.beta=0.1", "preference.alpha=1.0"],
}
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}


def slug(arm: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", arm).strip("-")


def spread_of_correct_logprobs(trainer, k: int = 8) -> dict[str, float]:
    """Final policy, k samples per held-out item: mean over items (with ≥ 2 correct replies) of
    the std of the correct replies' mean token log-prob; also pass@1/pass@k of these samples."""
    from entrolab.rl.rewards import pass_at_k
    from entrolab.rl.rollout import prompt_seeds

    items = trainer.eval_items
    traces = trainer.backend.generate(
        [it.prompt for it in items],
        trainer._gen_config(k, 1.0),
        seeds=prompt_seeds(trainer.config.seed, 10_000, len(items), stream="posthoc"),
    )
    groups = traces.by_prompt()
    spreads, p1, pk = [], [], []
    for i, item in enumerate(items):
        tr = groups.get(i, [])
        ok = [trainer.task.grade(item, t.text).correct for t in tr]
        lp = [float(t.logprob.mean()) for t, c in zip(tr, ok, strict=True) if c]
        if len(lp) >= 2:
            spreads.append(float(np.std(lp, ddof=1)))
        p1.append(pass_at_k(len(tr), sum(ok), 1))
        pk.append(pass_at_k(len(tr), sum(ok), k))
    return {
        "post/correct_logprob_spread": float(np.mean(spreads)) if spreads else float("nan"),
        "post/items_with_2_correct": float(len(spreads)),
        "post/pass@1": float(np.mean(p1)),
        f"post/pass@{k}": float(np.mean(pk)),
    }


def run_arm(arm: str, seed: int, args) -> tuple[list[dict], dict, float]:
    from entrolab.rl.checkpoint import read_metrics
    from entrolab.rl.config import load_config
    from entrolab.rl.preference_trainer import make_trainer

    run_dir = Path(args.runs) / slug(arm) / f"seed{seed}"
    post_path = run_dir / "posthoc.json"
    overrides = [
        f"seed={seed}",
        f"steps={args.steps}",
        f"eval.every={args.eval_every}",
        f"threads={args.threads}",
        "progress=false",
        "tensorboard=false",
        f"calibration.every={args.eval_every}",
        *ARMS[arm],
    ]
    t0 = time.perf_counter()
    trainer = make_trainer(load_config(RECIPE, overrides), run_dir)
    trainer.train()
    if post_path.is_file():
        post = json.loads(post_path.read_text())
    else:
        post = spread_of_correct_logprobs(trainer)
        post_path.write_text(json.dumps(post))
    return read_metrics(run_dir), post, time.perf_counter() - t0


# ----------------------------------------------------------------------------- statistics
def values(recs: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in recs if isinstance(r.get(key), int | float)]


def last(recs: list[dict], key: str) -> float:
    v = values(recs, key)
    return v[-1] if v else float("nan")


def first(recs: list[dict], key: str) -> float:
    v = values(recs, key)
    return v[0] if v else float("nan")


def mean_ci(xs: list[float]) -> tuple[float, float, int]:
    """Mean and half-width of the 95% t-interval over the finite values (n in the result)."""
    v = np.array([x for x in xs if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    if len(v) == 1:
        return float(v[0]), float("nan"), 1
    return float(v.mean()), T_975[len(v) - 1] * float(v.std(ddof=1)) / math.sqrt(len(v)), len(v)


def fmt(xs: list[float], digits: int = 3) -> str:
    m, h, n = mean_ci(xs)
    if n == 0:
        return "–"
    if n == 1:
        return f"{m:.{digits}f} (n=1)"
    return f"{m:.{digits}f} ± {h:.{digits}f}"


def paired(a: list[float], b: list[float]) -> str:
    """Mean paired difference a − b over seeds with its 95% t-interval and a verdict."""
    d = [x - y for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)]
    m, h, n = mean_ci(d)
    if n < 2:
        return "–"
    sig = "significant" if abs(m) > h else "not significant"
    return f"{m:+.3f} ± {h:.3f} ({sig})"


def steps_to(recs: list[dict], key: str, target: float) -> float:
    """First step at which ``key`` reaches ``target`` (inf if never)."""
    for r in recs:
        v = r.get(key)
        if isinstance(v, int | float) and v >= target:
            return float(r["step"])
    return float("inf")


def oscillation(recs: list[dict]) -> float:
    """Std of the step-to-step change of the train reward (how much the curve jitters)."""
    r = values(recs, "train/reward")
    return float(np.std(np.diff(r), ddof=1)) if len(r) > 2 else float("nan")


# ------------------------------------------------------------------------------- markdown
SHAPERS = ["GRPO", "UCAS", "SEED-GRPO", "ProGRPO", "RiskPO", "EMPG"]
SELECTION = ["uniform (pool 256)", "p≈0.5 (pool 256)", "InSight (pool 256)"]
PREFERENCE = ["DPO", "VPO offline"]
TARGET_PASS1 = 0.6


def markdown(args, runs, posts, walls, figs, md: Path) -> str:
    def rel(p: Path) -> str:
        return os.path.relpath(p, md.parent)

    def col(arm: str, fn) -> list[float]:
        return [fn(r, p) for r, p in zip(runs[arm], posts[arm], strict=True)]

    cmd = " ".join(["bench/rl_confidence.py", *sys.argv[1:]])
    n_seeds = max(len(v) for v in runs.values())
    out = [
        "## Confidence-shaped RL on the proxy task (`bench/rl_confidence.py`)",
        "",
        f"Command: `.venv/bin/python {cmd}` — {machine()} (machine shared with other jobs); "
        f"recipe `recipes/proxy_grpo.yaml`, {args.steps} RL steps, {n_seeds} seeds per arm, "
        f"held-out pass@k and calibration every {args.eval_every} steps (128 items × 8 "
        "samples; greedy answers, frozen Platt map fitted at step 0). Cells: "
        "mean over seeds ± half-width of the 95% t-interval (n = seeds); Δ vs GRPO: paired by "
        "seed, 'significant' only when the interval excludes 0.",
        "",
        "### Advantage shapers and RiskPO (last evaluation)",
        "",
        "| arm | entropy | pass@1 | pass@8 | pass@8 − pass@1 | self-cert. AUROC | "
        "confident-wrong | self-cert. ECE | correct log-prob spread | reward jitter | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    metrics = {
        "entropy": lambda r, p: last(r, "dyn/entropy"),
        "pass1": lambda r, p: last(r, "eval/pass@1"),
        "pass8": lambda r, p: last(r, "eval/pass@8"),
        "gap": lambda r, p: last(r, "eval/pass@8") - last(r, "eval/pass@1"),
        "auroc": lambda r, p: last(r, "calib/self_certainty/auroc"),
        "cw": lambda r, p: last(r, "calib/self_certainty/confident_wrong"),
        "ece": lambda r, p: last(r, "calib/self_certainty/ece"),
        "spread": lambda r, p: p.get("post/correct_logprob_spread", float("nan")),
        "jitter": lambda r, p: oscillation(r),
    }
    for arm in [a for a in SHAPERS if a in runs]:
        cells = " | ".join(fmt(col(arm, f)) for f in metrics.values())
        out.append(f"| {arm} | {cells} | {np.mean(walls[arm]):.0f} |")
    if "GRPO" in runs:
        out += ["", "Paired differences to GRPO (same seeds):", ""]
        out += ["| arm | Δ entropy | Δ pass@1 | Δ pass@8 | Δ AUROC | Δ confident-wrong | "
                "Δ spread | Δ jitter |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for arm in [a for a in SHAPERS if a in runs and a != "GRPO"]:
            cells = " | ".join(
                paired(col(arm, metrics[k]), col("GRPO", metrics[k]))
                for k in ("entropy", "pass1", "pass8", "auroc", "cw", "spread", "jitter")
            )
            out.append(f"| {arm} | {cells} |")
    if any(a in runs for a in SELECTION):
        out += ["", f"### Prompt selection (training pool of 256 prompts; target: held-out "
                f"pass@1 ≥ {TARGET_PASS1})", "",
                "| arm | steps to target | pass@1 last | mean frac_reward_zero_std | "
                "prompts never seen | seen once (never revisited) | wall s |",
                "|---|---|---|---|---|---|---|"]  # fmt: skip
        for arm in [a for a in SELECTION if a in runs]:
            stt = col(arm, lambda r, p: steps_to(r, "eval/pass@1", TARGET_PASS1))
            reached = sum(math.isfinite(s) for s in stt)
            stt_s = fmt([s for s in stt if math.isfinite(s)], 0) + f" ({reached}/{len(stt)} reach)"
            out.append(
                f"| {arm} | {stt_s} | {fmt(col(arm, metrics['pass1']))} "
                f"| {fmt(col(arm, lambda r, p: float(np.mean(values(r, 'train/frac_zero_std')))))} "
                f"| {fmt(col(arm, lambda r, p: last(r, 'select/never_seen')), 0)} "
                f"| {fmt(col(arm, lambda r, p: last(r, 'select/seen_once')), 0)} "
                f"| {np.mean(walls[arm]):.0f} |"
            )
    if any(a in runs for a in PREFERENCE):
        out += ["", "### DPO vs VPO (offline, π_cal = chosen) on self-generated pairs", "",
                "| arm | chosen log-ratio log π_θ(y_w) − log π_ref(y_w), last | rejected "
                "log-ratio, last | greedy accuracy step 0 → last | pass@1 last | pairs/step "
                "| wall s |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for arm in [a for a in PREFERENCE if a in runs]:
            out.append(
                f"| {arm} | {fmt(col(arm, lambda r, p: last(r, 'pref/chosen_logratio')))} "
                f"| {fmt(col(arm, lambda r, p: last(r, 'pref/rejected_logratio')))} "
                f"| {fmt(col(arm, lambda r, p: first(r, 'calib/accuracy')))} → "
                f"{fmt(col(arm, lambda r, p: last(r, 'calib/accuracy')))} "
                f"| {fmt(col(arm, metrics['pass1']))} "
                f"| {fmt(col(arm, lambda r, p: float(np.mean(values(r, 'pref/pairs')))), 1)} "
                f"| {np.mean(walls[arm]):.0f} |"
            )
        if all(a in runs for a in PREFERENCE):
            d = paired(col("VPO offline", lambda r, p: last(r, "pref/chosen_logratio")),
                       col("DPO", lambda r, p: last(r, "pref/chosen_logratio")))  # fmt: skip
            out += ["", f"Δ chosen log-ratio, VPO − DPO (paired): {d}."]
    out += [""] + [f"![{p.stem}]({rel(p)})" for p in figs if p.suffix == ".svg"]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--arms", default=None, help=f"comma list of: {', '.join(ARMS)}")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bench-rl-conf"))
    ap.add_argument("--out-md", default=str(ROOT / "docs" / "rl_results.md"))
    ap.add_argument("--fig-dir", default=None, help="[default: <out-md folder>/figures]")
    args = ap.parse_args()
    arms = [a.strip() for a in args.arms.split(",")] if args.arms else list(ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        sys.exit(f"unknown arms {unknown}; known: {', '.join(ARMS)}")
    import torch

    torch.set_num_threads(args.threads)
    print(machine(), flush=True)
    runs: dict[str, list[list[dict]]] = {}
    posts: dict[str, list[dict]] = {}
    walls: dict[str, list[float]] = {}
    for arm in arms:
        for seed in range(args.seeds):
            recs, post, wall = run_arm(arm, seed, args)
            runs.setdefault(arm, []).append(recs)
            posts.setdefault(arm, []).append(post)
            walls.setdefault(arm, []).append(wall)
            print(f"{arm:>20} seed {seed}: pass@1 {last(recs, 'eval/pass@1'):.3f} "
                  f"H {last(recs, 'dyn/entropy'):.3f} ({wall:.0f} s)", flush=True)  # fmt: skip
    from entrolab.rl.plots import plot_comparison

    md = Path(args.out_md)
    fig_dir = Path(args.fig_dir) if args.fig_dir else md.parent / "figures"
    figs: list[Path] = []
    groups = [
        ("rl_conf_shapers", SHAPERS, [("dyn/entropy", "mean token entropy (nats)"),
         ("eval/pass@1", "held-out pass@1"), ("eval/pass@8", "held-out pass@8"),
         ("calib/self_certainty/auroc", "self-certainty AUROC (held-out)")]),
        ("rl_conf_selection", SELECTION, [("eval/pass@1", "held-out pass@1"),
         ("train/frac_zero_std", "frac_reward_zero_std"), ("select/never_seen", "never seen")]),
        ("rl_conf_preference", PREFERENCE, [("pref/chosen_logratio", "chosen log-ratio"),
         ("calib/accuracy", "greedy accuracy (held-out)"), ("eval/pass@1", "held-out pass@1")]),
    ]  # fmt: skip
    for stem, group, keys in groups:
        sub = {a: runs[a] for a in group if a in runs}
        if sub:
            figs += plot_comparison(sub, fig_dir / stem, keys=keys, formats=("svg", "png"))
    replace_section(md, "confidence", markdown(args, runs, posts, walls, figs, md))
    print(f"wrote {md}")


if __name__ == "__main__":
    main()
