"""Policy Cliff measurement (Xu 2025, "The Policy Cliff", arXiv:2507.20150; spec §4): when
several outputs are equally correct, a tiny reward perturbation can flip the RL-optimal policy;
entropy regularisation should make the reward → policy map continuous.

On the reasoning-length proxy, every correct answer can be written in two equally correct
formats: the chain starts with the smaller (``asc``) or the larger (``desc``) of its first two
numbers. For each entropy-bonus coefficient β (loss ``entropy_bonus``) the same SFT model is
trained twice with the same seed, once with reward ``1[correct] + δ·1[asc]`` and once with
``1[correct] + δ·1[desc]`` (δ = 0.05 by default). On held-out prompts (k samples each) we
measure, per prompt, the share of ``asc`` among correct replies under each run, then:

* TV distance of the format distribution between the two runs (mean over prompts; 95%
  bootstrap interval over prompts);
* flip rate: share of prompts whose majority format differs between the two runs (same
  interval).

The theory predicts the sensitivity falls as β grows. Runs live in ``runs/bench-rl-cliff/``;
the "cliff" section of docs/rl_results.md is rewritten.

    .venv/bin/python bench/rl_cliff.py --steps 40
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "proxy_reasoning_grpo.yaml"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def chain_format(text: str) -> str | None:
    """``asc`` / ``desc`` by the order of the first two numbers of a chain; None if unparseable."""
    m = re.match(r"\s*(\d+)\+(\d+)=", text or "")
    if m is None or m.group(1) == m.group(2):
        return None
    return "asc" if int(m.group(1)) < int(m.group(2)) else "desc"


def make_reward(task, favour: str, delta: float):  # type: ignore[no-untyped-def]
    def reward(items, texts):  # type: ignore[no-untyped-def]
        out = []
        for it, t in zip(items, texts, strict=True):
            ok = task.grade(it, t).correct
            out.append((1.0 + (delta if chain_format(t) == favour else 0.0)) if ok else 0.0)
        return out

    return reward


def train_and_sample(beta: float, favour: str, args) -> tuple[list[float | None], float]:
    """Train one run; return per held-out prompt the share of ``asc`` among correct samples."""
    import torch

    from entrolab.rl.config import load_config
    from entrolab.rl.rollout import prompt_seeds
    from entrolab.rl.trainer import Trainer

    torch.set_num_threads(1)
    cfg = load_config(RECIPE, [
        f"seed={args.seed}", f"steps={args.steps}", "eval.every=0", "eval.at_start=false",
        "task.eval_items=0", "progress=false", "tensorboard=false", "monitor.probe_prompts=0",
        "algorithm.loss=entropy_bonus", "algorithm.entropy_grad=true",
        f"algorithm.loss_params.entropy_coef={beta}",
    ])  # fmt: skip
    t0 = time.perf_counter()
    run_dir = Path(args.runs) / f"beta{beta:g}-{favour}"
    from entrolab.rl.rewards import make_task

    task = make_task(cfg.task.spec, cfg.task.settings)
    tr = Trainer(cfg, run_dir, task=task, reward_fn=make_reward(task, favour, args.delta))
    tr.train()
    items = task.items(args.items, seed=12345)
    traces = tr.backend.generate(
        [it.prompt for it in items], tr._gen_config(args.samples, 1.0),
        seeds=prompt_seeds(args.seed, 0, len(items), stream="cliff"),
    )  # fmt: skip
    groups = traces.by_prompt()
    shares: list[float | None] = []
    for i, it in enumerate(items):
        fmts = [chain_format(t.text) for t in groups.get(i, []) if task.grade(it, t.text).correct]
        fmts = [f for f in fmts if f is not None]
        shares.append(sum(f == "asc" for f in fmts) / len(fmts) if fmts else None)
    return shares, time.perf_counter() - t0


def boot_ci(x: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    means = [x[rng.integers(0, len(x), len(x))].mean() for _ in range(n_boot)]
    return float(x.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--betas", default="0,0.001,0.01")
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--items", type=int, default=128)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bench-rl-cliff"))
    ap.add_argument("--out-md", default=str(ROOT / "docs" / "rl_results.md"))
    args = ap.parse_args()
    from rl import machine, replace_section  # bench/rl.py

    rows = []
    for beta in [float(b) for b in args.betas.split(",")]:
        a, wa = train_and_sample(beta, "asc", args)
        b, wb = train_and_sample(beta, "desc", args)
        both = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
        pa, pb = np.array([x for x, _ in both]), np.array([y for _, y in both])
        tv = boot_ci(np.abs(pa - pb))
        flip = boot_ci(((pa > 0.5) != (pb > 0.5)).astype(float))
        asc = boot_ci(pa), boot_ci(pb)
        rows.append((beta, len(both), tv, flip, asc, wa + wb))
        print(f"beta {beta:g}: n={len(both)} TV {tv} flip {flip} asc-share {asc}", flush=True)
    f = lambda t: f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"  # noqa: E731
    lines = [
        "## Policy Cliff: sensitivity to a tie-breaking reward (`bench/rl_cliff.py`)",
        "",
        f"Command: `.venv/bin/python bench/rl_cliff.py {' '.join(sys.argv[1:])}` — {machine()}; "
        f"recipe `recipes/proxy_reasoning_grpo.yaml`, loss `entropy_bonus`, {args.steps} RL steps, "
        f"seed {args.seed}, δ = {args.delta}; {args.items} held-out prompts × {args.samples} "
        "samples; n = prompts with a correct reply under both runs; 95% bootstrap intervals over "
        "prompts (one training seed per run: the interval covers prompt sampling, not training "
        "noise).",
        "",
        "| β | n | TV(format) between the δ→asc and δ→desc runs | flip rate | asc share (δ→asc) "
        "| asc share (δ→desc) | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for beta, n, tv, flip, (sa, sb), wall in rows:
        lines.append(f"| {beta:g} | {n} | {f(tv)} | {f(flip)} | {f(sa)} | {f(sb)} | {wall:.0f} |")
    tvs = [r[2][0] for r in rows]
    trend = (
        "falls"
        if all(x >= y for x, y in itertools.pairwise(tvs))
        else "does not fall monotonically"
    )
    lines += ["", f"Seen: the TV distance {trend} as β grows ({', '.join(f'{t:.3f}' for t in tvs)}); "
              "whether the differences are significant: compare the intervals above.", ""]  # fmt: skip
    replace_section(Path(args.out_md), "cliff", "\n".join(lines))
    print(f"wrote {args.out_md}")


if __name__ == "__main__":
    main()
