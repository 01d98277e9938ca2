"""REALM on the 2-D path environment: which assistance mechanism is chosen where, 3 seeds.

Per seed (environment + sampler seed): 40 demonstrations, every 4th phase along the path, 50
forecast rollouts of H = 16 steps, β = 1e-6. We score the four mechanisms once per phase and
report, for several effort prices λ (λ = 0 is the reference code's α-order-only behaviour),
the per-segment-type recall of the argmax mechanism (the reference code's confusion-matrix
metric) with 95% t-intervals over seeds, and a trajectory plot for seed 0. ``--variant exact``
gives the discrete bump one fixed amplitude (0.05), so its two modes are exact.

    .venv/bin/python bench/beyond_realm.py --seeds 3
    .venv/bin/python bench/beyond_realm.py --seeds 3 --variant exact
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _beyond_common import Rows, fmt, seed_interval

from entrolab.beyond.realm import MECHANISMS, mechanism_values, realm_choose
from entrolab.beyond.realm_env import forecast, make_env

LAMBDAS = (0.0, 0.02, 0.05, 0.1)
#: the mechanism a segment type calls for (ground truth of the reference code's metric)
WANT = {"none": "none", "teleop": "teleop", "discrete": "discrete", "corrections": "corrections"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--runs", default="runs/beyond_realm")
    ap.add_argument("--figures", default="docs/figures/beyond")
    ap.add_argument("--variant", choices=("reference", "exact"), default="reference")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    amp = (0.02, 0.07) if args.variant == "reference" else (0.05, 0.05)
    name = "" if args.variant == "reference" else "_exact"
    rows = Rows(Path(args.runs) / f"rows{name}.jsonl")
    t0 = time.time()
    for seed in range(args.seeds):
        if rows.get({"seed": seed}):
            continue
        env = make_env(seed=seed, discrete_amp=amp)
        rng = np.random.default_rng(seed)
        steps = []
        for i in range(0, env.demos.shape[1] - env.horizon - 1, args.stride):
            c = realm_choose(forecast(env, i, rng=rng), env.low, env.high, seed=i)
            steps.append({"phase": i, "label": env.label(i), "scores": c.scores})
        rows.add(
            {
                "seed": seed,
                "horizon": env.horizon,
                "segments": env.segments,
                "steps": steps,
                "discrete_amp": list(amp),
            }
        )
        print(f"seed {seed}: {len(steps)} phases, {time.time() - t0:.0f} s", flush=True)
    print(summary(rows))
    plot(rows.get({"seed": 0}), Path(args.figures) / f"realm_trajectory{name}.png", 0.05)


def choices(row: dict, lam: float) -> list[tuple[str, str]]:
    out = []
    for s in row["steps"]:
        v = mechanism_values(s["scores"], row["horizon"], 2, effort_weight=lam)
        out.append((s["label"], max(MECHANISMS, key=v.get)))
    return out


def summary(rows: Rows) -> str:
    lines = [
        f"n = {len(rows.rows)} seeds; recall of the wanted mechanism per segment type, mean "
        "[95% t-interval over seeds]",
        "",
        "| effort price λ | none | discrete | corrections | teleop | discrete segments answered with corrections |",
        "|---|---|---|---|---|---|",
    ]
    for lam in LAMBDAS:
        cells, swap = [], []
        for typ in ("none", "discrete", "corrections", "teleop"):
            rec = []
            for r in rows.rows:
                ch = [c for lab, c in choices(r, lam) if lab == typ]
                rec.append(np.mean([c == WANT[typ] for c in ch]))
            cells.append(fmt(seed_interval(rec), 2))
        for r in rows.rows:
            ch = [c for lab, c in choices(r, lam) if lab == "discrete"]
            swap.append(np.mean([c == "corrections" for c in ch]))
        lines.append(f"| {lam} | " + " | ".join(cells) + f" | {fmt(seed_interval(swap), 2)} |")
    return "\n".join(lines)


def plot(row: dict, path: Path, lam: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = make_env(seed=row["seed"], discrete_amp=tuple(row.get("discrete_amp", (0.02, 0.07))))
    ch = choices(row, lam)
    colors = dict(zip(MECHANISMS, ("lightgray", "C3", "C0", "C2"), strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for d in env.demos[:15]:
        axes[0].plot(d[:, 0], d[:, 1], color="k", alpha=0.15, lw=0.7)
    for s, (_, c) in zip(row["steps"], ch, strict=True):
        p = env.nominal[s["phase"]]
        axes[0].scatter(p[0], p[1], color=colors[c], s=14, zorder=3)
    axes[0].set_title(f"chosen mechanism along the path (seed 0, λ = {lam})")
    phases = [s["phase"] for s in row["steps"]]
    idx = [MECHANISMS.index(c) for _, c in ch]
    axes[1].scatter(phases, idx, c=[colors[c] for _, c in ch], s=14)
    for name, (a, b) in row["segments"].items():
        axes[1].axvspan(
            a - row["horizon"] // 2, b - row["horizon"] // 2, alpha=0.12, color=colors[WANT[name]]
        )
        axes[1].text((a + b) / 2 - row["horizon"] // 2, 3.3, name, ha="center", fontsize=8)
    axes[1].set_yticks(range(4), MECHANISMS)
    axes[1].set_xlabel("phase (shaded: perturbed segments, shifted by H/2)")
    axes[1].set_ylim(-0.5, 3.6)
    for m, col in colors.items():
        axes[0].scatter([], [], color=col, label=m)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
