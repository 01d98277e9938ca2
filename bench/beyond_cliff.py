"""Policy Cliff (Xu 2025) on a toy bandit and a two-reward trade-off, 3 seeds of perturbations.

A. Bandit r = (1, 1 + δ, 0.6, 0.2), δ ∈ [−0.02, 0.02]: π(a₂) vs δ for τ ∈ {0, 0.01, 0.05, 0.2}
   and the largest ‖Δπ‖₁/‖Δr‖_∞ over random perturbations (scale 1e-4) at the tie, vs 1/τ.
B. Noisy reward model: r_eff = r + ε, ε ~ N(0, s²) per action, on the tied bandit; the expected
   total variation E‖π_τ(r + ε) − π_τ(r)‖₁ / 2 against s, for each τ (2,000 draws per seed).
C. Sequential degeneracy: a depth-3 binary token tree (8 sequences), two of them equally
   rewarded ("valid", "shortcut"). Exact-gradient REINFORCE with an entropy bonus τ·H(sequence)
   from 20 random initialisations (per seed): mean pairwise TV between the final sequence
   distributions, and the TV between soft-VI optima for r and r + 1e-3 on "valid".
The theory: sensitivity ≤ 1/τ (tight at a tie), a jump of TV 1 at τ = 0, and a reward cost
≤ τ log A. The LLM-side measurement on the reasoning proxy is bench/rl_cliff.py.

    .venv/bin/python bench/beyond_cliff.py --seeds 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _beyond_common import fmt, seed_interval

from entrolab.beyond.policy_cliff import (
    policy_sensitivity,
    regularisation_cost,
    soft_policy,
    soft_tree_policy,
)

TAUS = (0.0, 0.01, 0.05, 0.2)
BANDIT = np.array([1.0, 1.0, 0.6, 0.2])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--figures", default="docs/figures/beyond")
    args = ap.parse_args()
    deltas = np.linspace(-0.02, 0.02, 401)
    curves = {
        tau: [soft_policy(BANDIT + np.array([0, d, 0, 0]), tau)[1] for d in deltas] for tau in TAUS
    }
    lines = [
        f"n = {args.seeds} seeds of random perturbations, mean [95% t-interval]",
        "",
        "| τ | sensitivity max ‖Δπ‖₁/‖Δr‖_∞ | bound 1/τ | reward cost (≤ τ log 4) | E TV at s = 0.01 | E TV at s = 0.05 |",
        "|---|---|---|---|---|---|",
    ]
    tv = {}
    for tau in TAUS:
        sens = [
            policy_sensitivity(BANDIT, tau, scale=1e-4, seed=s).empirical for s in range(args.seeds)
        ]
        for s_noise in (0.001, 0.003, 0.01, 0.03, 0.05):
            vals = []
            for seed in range(args.seeds):
                rng = np.random.default_rng(seed)
                eps = rng.normal(0, s_noise, (2000, 4))
                p0 = soft_policy(BANDIT, tau)
                vals.append(float(np.mean(np.abs(soft_policy(BANDIT + eps, tau) - p0).sum(-1) / 2)))
            tv[(tau, s_noise)] = seed_interval(vals)
        bound = "∞" if tau == 0 else f"{1 / tau:.0f}"
        lines.append(
            f"| {tau} | {fmt(seed_interval(sens), 2)} | {bound} | {float(regularisation_cost(BANDIT, tau)):.4f} | "
            f"{fmt(tv[(tau, 0.01)])} | {fmt(tv[(tau, 0.05)])} |"
        )
    print("\n".join(lines))
    print(sequential(args.seeds))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for tau in TAUS:
        axes[0].plot(deltas, curves[tau], label=f"τ = {tau}")
        xs = [0.001, 0.003, 0.01, 0.03, 0.05]
        m = np.array([tv[(tau, s)] for s in xs])
        axes[1].errorbar(
            xs,
            m[:, 0],
            yerr=[m[:, 0] - m[:, 1], m[:, 2] - m[:, 0]],
            marker="o",
            label=f"τ = {tau}",
            capsize=3,
        )
    axes[0].set_xlabel("δ (reward of a₂ minus a₁)")
    axes[0].set_ylabel("π(a₂)")
    axes[0].set_title("A. the cliff at a tie")
    axes[0].legend(fontsize=8)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("reward-model noise s")
    axes[1].set_ylabel("E TV(π(r + ε), π(r))")
    axes[1].set_title(f"B. policy change under reward noise ({args.seeds} seeds)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.figures) / "policy_cliff.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


TREE = np.array([0.2, 1.0, 0.1, 0.0, 0.3, 0.0, 1.0, 0.5])  # sequences 1 and 6 tie at 1.0


def reinforce(tau: float, seed: int, inits: int, steps: int = 2000, lr: float = 0.1) -> np.ndarray:
    """Final sequence distributions [inits, 8] of exact-gradient ascent on E[r] + τ H, one per
    random initialisation (all inits optimised together as one batch)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    logits = [
        torch.randn(inits, 2**t, 2, generator=g, dtype=torch.float64, requires_grad=True)
        for t in range(3)
    ]
    r = torch.tensor(TREE)
    opt = torch.optim.Adam(logits, lr=lr)
    for _ in range(steps):
        p = torch.ones(inits, 1, dtype=torch.float64)
        for lg in logits:
            p = (p[:, :, None] * torch.softmax(lg, -1)).reshape(inits, -1)
        obj = (p * r).sum(-1) - tau * (p * torch.log(p + 1e-300)).sum(-1)
        opt.zero_grad()
        (-obj.sum()).backward()
        opt.step()
    return p.detach().numpy()


def sequential(seeds: int, inits: int = 20) -> str:
    lines = [
        "",
        f"C. depth-3 token tree, {inits} random inits per seed, n = {seeds} seeds, mean [95% t-interval]",
        "",
        "| τ | mean pairwise TV of final policies | TV(soft optimum for r, for r + 1e-3 on valid) |",
        "|---|---|---|",
    ]
    bump = np.zeros(8)
    bump[1] = 1e-3
    for tau in TAUS:
        tvs = []
        for seed in range(seeds):
            finals = list(reinforce(tau, seed, inits))
            pair = [np.abs(a - b).sum() / 2 for i, a in enumerate(finals) for b in finals[i + 1 :]]
            tvs.append(float(np.mean(pair)))
        if tau == 0:
            shift = np.abs(soft_policy(TREE + bump, 0) - soft_policy(TREE, 0)).sum() / 2
        else:
            shift = (
                np.abs(
                    soft_tree_policy(TREE + bump, 2, tau)[1] - soft_tree_policy(TREE, 2, tau)[1]
                ).sum()
                / 2
            )
        lines.append(f"| {tau} | {fmt(seed_interval(tvs))} | {shift:.2e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
