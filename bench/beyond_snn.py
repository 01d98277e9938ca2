"""Dynamic Confidence on a converted SNN (Li, Jones, Furber ICCV 2023), 3 seeds.

Claim under test: with θ chosen on validation (lowest mean latency within 0.5 pt of the full-T
validation accuracy), test accuracy is within 0.5 pt of the full-T accuracy at less than half
the time steps. Digits (1000 train / 300 validation / 497 test, split by seed), QCFS MLP
64-256-256-10 (L = 4), IF conversion, T_max = 32, fixed divisor S = 32.

    OMP_NUM_THREADS=1 .venv/bin/python bench/beyond_snn.py --seeds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _beyond_common import Rows, fmt, seed_interval

from entrolab.beyond.snn import IFNetwork, dynamic_confidence, train_qcfs
from entrolab.beyond.stopping import pareto_threshold, stop_outcome
from entrolab.tta.data import load_digits

T_MAX, S = 32, 32.0
THETAS = np.round(np.arange(0.30, 1.0, 0.01), 2).tolist()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--runs", default="runs/beyond_snn")
    ap.add_argument("--figures", default="docs/figures/beyond")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = Rows(Path(args.runs) / "rows.jsonl")
    t0 = time.time()
    for seed in range(args.seeds):
        if rows.get({"seed": seed}):
            continue
        d = load_digits(n_train=1000, seed=seed)
        x = torch.tensor(d.train_x.reshape(-1, 64), dtype=torch.float32)
        xt = torch.tensor(d.test_x.reshape(-1, 64), dtype=torch.float32)
        y, yt = torch.tensor(d.train_y), torch.tensor(d.test_y)
        snn = IFNetwork(train_qcfs(x, y, epochs=60, seed=seed))
        curves = {}
        for name, xx, yy in (("val", xt[:300], yt[:300]), ("test", xt[300:], yt[300:])):
            run = snn.run(xx, T_MAX)
            conf, pred = dynamic_confidence(run.outputs, S)
            curves[name] = (conf, pred == yy[:, None], run.spikes.T)
        fit = pareto_threshold(curves["val"][0], curves["val"][1], THETAS, max_drop=0.005)
        conf, correct, spikes = curves["test"]
        stop = fit.rule().replay(conf)
        out = stop_outcome(stop, correct)
        row = {
            "seed": seed,
            "theta": fit.theta,
            "fixed_acc": {t: float(correct[:, t - 1].float().mean()) for t in (1, 2, 4, 8, 16, 32)},
            "full_acc": float(correct[:, -1].float().mean()),
            "dc_acc": out.accuracy,
            "dc_steps": out.mean_steps,
            "oracle_acc": float(correct.any(1).float().mean()),
            "spikes_full": float(spikes.sum(1).mean()),
            "spikes_dc": float(spikes.cumsum(1).gather(1, stop[:, None]).float().mean()),
            "test_curve": [
                (
                    th,
                    *(lambda o: (o.accuracy, o.mean_steps))(
                        stop_outcome(type(fit.rule())(th).replay(conf), correct)
                    ),
                )
                for th in THETAS
            ],
        }
        rows.add(row)
        print({k: v for k, v in row.items() if k != "test_curve"}, flush=True)
    print(f"wall {time.time() - t0:.0f} s")
    plot(rows, Path(args.figures) / "snn_dynamic_confidence.png")
    print(summary(rows))


def plot(rows: Rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows.rows:
        ts = sorted(int(t) for t in r["fixed_acc"])
        ax.plot(
            ts,
            [r["fixed_acc"][str(t)] if str(t) in r["fixed_acc"] else r["fixed_acc"][t] for t in ts],
            "o-",
            color="gray",
            alpha=0.6,
            label="fixed T" if r["seed"] == 0 else None,
        )
        c = np.array(r["test_curve"])
        ax.plot(
            c[:, 2],
            c[:, 1],
            "-",
            color="C0",
            alpha=0.8,
            label="Dynamic Confidence (θ sweep)" if r["seed"] == 0 else None,
        )
        ax.plot(
            [r["dc_steps"]],
            [r["dc_acc"]],
            "*",
            color="C3",
            ms=12,
            label="θ chosen on validation" if r["seed"] == 0 else None,
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("mean time steps per input")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.8, 1.0)
    ax.legend(fontsize=8)
    ax.set_title(f"digits SNN, {len(rows.rows)} seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def summary(rows: Rows) -> str:
    r = rows.rows

    def col(k):
        return seed_interval(x[k] for x in r)

    lines = [
        f"n = {len(r)} seeds, mean [95% t-interval]; test set 497 images per seed",
        "",
        "| quantity | value |",
        "|---|---|",
    ]
    for t in (1, 2, 4, 8, 16, 32):
        lines.append(
            f"| accuracy at fixed T = {t} | {fmt(seed_interval(x['fixed_acc'][str(t)] if str(t) in x['fixed_acc'] else x['fixed_acc'][t] for x in r))} |"
        )
    lines += [
        f"| θ chosen on validation | {', '.join(str(x['theta']) for x in r)} |",
        f"| Dynamic Confidence accuracy | {fmt(col('dc_acc'))} |",
        f"| Dynamic Confidence − full-T accuracy | {fmt(seed_interval(x['dc_acc'] - x['full_acc'] for x in r))} |",
        f"| Dynamic Confidence mean steps (of 32) | {fmt(col('dc_steps'), 2)} |",
        f"| hidden spikes per inference, full T / DC | {fmt(col('spikes_full'), 0)} / {fmt(col('spikes_dc'), 0)} |",
        f"| oracle (right at any step) accuracy | {fmt(col('oracle_acc'))} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
