"""Figures of an RL run (``entrolab plot RUN_DIR``) and of several runs side by side (bench).

Uses matplotlib's object API (``matplotlib.figure.Figure``), so no global pyplot state and no
display is needed. Input: the records of ``metrics.jsonl`` (see :mod:`entrolab.rl.trainer`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from entrolab.errors import EntrolabError
from entrolab.rl.checkpoint import read_metrics

__all__ = ["calibration_names", "plot_comparison", "plot_run", "series"]


def series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the records that have a finite number under ``key``."""
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(r["step"])
            ys.append(float(v))
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def _pass_k_key(records: Sequence[Mapping[str, Any]]) -> str | None:
    keys = sorted(
        {k for r in records for k in r if k.startswith("eval/pass@") and k != "eval/pass@1"}
    )
    return keys[0] if keys else None


def _save(fig, stem: Path, formats: Sequence[str]) -> list[Path]:
    out = []
    for fmt in formats:
        if fmt not in ("svg", "png", "pdf"):
            raise EntrolabError(f"unknown figure format {fmt!r}; use svg, png or pdf")
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=120, bbox_inches="tight")
        out.append(path)
    return out


def _law_panel(ax, records: Sequence[Mapping[str, Any]]) -> None:
    from entrolab.rl.entropy_law import fit_entropy_law

    steps_h, h = series(records, "dyn/entropy")
    steps_r, r = series(records, "train/reward")
    common = sorted(set(steps_h) & set(steps_r))
    h = np.array([h[list(steps_h).index(s)] for s in common])
    r = np.array([r[list(steps_r).index(s)] for s in common])
    sc = ax.scatter(h, r, c=common, cmap="viridis", s=14)
    ax.figure.colorbar(sc, ax=ax, label="step")
    ax.set_xlabel("mean token entropy H (nats)")
    ax.set_ylabel("mean reward R")
    title = "law R = −a·e^H + b"
    if len(common) >= 3:
        try:
            fit = fit_entropy_law(h, r)
        except EntrolabError:
            fit = None
        if fit is not None:
            grid = np.linspace(0.0, max(float(h.max()), 1e-3) * 1.05, 100)
            ax.plot(grid, fit.predict(grid), color="C3", label="fit")
            ax.axhline(fit.ceiling, color="C3", ls=":", label=f"ceiling b−a = {fit.ceiling:.3f}")
            title += f": a={fit.a:.3g}, b={fit.b:.3g}, R²={fit.r2:.2f}"
            ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)


def plot_run(
    run_dir: str | Path,
    *,
    formats: Sequence[str] = ("svg", "png"),
    out_dir: str | Path | None = None,
) -> list[Path]:
    """Draw a run's entropy, reward, covariance and entropy-law panels (``dynamics.*``), its
    per-decile entropy change (``deciles.*``) and, when tracked, its held-out calibration
    (``calibration.*``) into ``out_dir`` (default ``RUN_DIR/plots``)."""
    from matplotlib.figure import Figure

    records = read_metrics(run_dir)
    if not any("dyn/entropy" in r for r in records):
        raise EntrolabError(f"{run_dir} has no training steps yet; nothing to plot")
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(12, 8.5), layout="constrained")
    (ax_h, ax_r), (ax_c, ax_l) = fig.subplots(2, 2)
    for key, label in [
        ("dyn/entropy", "batch responses"),
        ("dyn/probe_H_after", "probe set"),
        ("eval/token_entropy", "held-out samples"),
    ]:
        x, y = series(records, key)
        if key == "dyn/probe_H_after" and len(x):  # add the probe entropy before the first step
            x0, y0 = series(records, "dyn/probe_H_before")
            x, y = np.concatenate([[x0[0] - 1], x]), np.concatenate([[y0[0]], y])
        if len(x):
            ax_h.plot(x, y, marker="o" if key.startswith("eval") else None, ms=3, label=label)
    ax_h.set(title="mean token entropy (nats)", xlabel="step")
    ax_h.legend(fontsize=8)
    pk = _pass_k_key(records)
    for key, label in [
        ("train/reward", "train reward"),
        ("train/accuracy", "train accuracy"),
        ("eval/pass@1", "held-out pass@1"),
        *([(pk, f"held-out {pk.split('/')[1]}")] if pk else []),
    ]:
        x, y = series(records, key)
        if len(x):
            ax_r.plot(x, y, marker="o" if key.startswith("eval") else None, ms=3, label=label)
    ax_r.set(title="reward and accuracy", xlabel="step")
    ax_r.legend(fontsize=8)
    x, cov = series(records, "dyn/cov")
    ax_c.plot(x, cov, color="C0", label="cov(ℓ, A) (batch)")
    ax_c.axhline(0, color="grey", lw=0.5)
    ax_c.set(title="covariance term and entropy change", xlabel="step")
    ax_c.set_ylabel("cov", color="C0")
    ax2 = ax_c.twinx()
    for key, label, color in [
        ("dyn/probe_dH", "realised ΔH (probe)", "C1"),
        ("dyn/pred_dH", "predicted −η̂·cov", "C2"),
    ]:
        xs, ys = series(records, key)
        if len(xs):
            ax2.plot(xs, ys, color=color, lw=1, label=label)
    ax2.set_ylabel("ΔH per step (nats)")
    lines = ax_c.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax_c.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8)
    _law_panel(ax_l, records)
    paths = _save(fig, out / "dynamics", formats)
    last = next((r for r in reversed(records) if r.get("dyn/decile_dH_cum")), None)
    if last is not None:
        fig = Figure(figsize=(6, 3.5), layout="constrained")
        ax = fig.subplots()
        vals = [v if v is not None else np.nan for v in last["dyn/decile_dH_cum"]]
        ax.bar(np.arange(1, len(vals) + 1), vals, color="C4")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(
            title=f"probe entropy change, step 0 → {last['step']}, by step-0 entropy decile",
            xlabel="entropy decile at step 0 (1 = lowest)",
            ylabel="ΔH (nats)",
        )
        paths += _save(fig, out / "deciles", formats)
    paths += _calibration_figure(records, out, formats)
    return paths


def calibration_names(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The confidences tracked under ``calib/<name>/<metric>`` in ``records`` (sorted)."""
    keys = {k for r in records for k in r if k.startswith("calib/") and k.count("/") == 2}
    return sorted({k.split("/")[1] for k in keys})


def _calibration_figure(
    records: Sequence[Mapping[str, Any]], out: Path, formats: Sequence[str]
) -> list[Path]:
    """``calibration.*``: held-out ECE, AUROC, Brier and confident-wrong share over training,
    one line per tracked confidence (:mod:`entrolab.rl.calibration_track`); none if untracked."""
    from matplotlib.figure import Figure

    names = calibration_names(records)
    if not names:
        return []
    fig = Figure(figsize=(14, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    panels = [
        ("ece", "held-out ECE (frozen map)"),
        ("auroc", "AUROC of correctness"),
        ("brier", "Brier score"),
        ("confident_wrong", "wrong answers with c ≥ threshold"),
    ]
    for ax, (metric, title) in zip(axes, panels, strict=True):
        for i, name in enumerate(names):
            x, y = series(records, f"calib/{name}/{metric}")
            if len(x):
                ax.plot(x, y, marker="o", ms=3, color=f"C{i}", label=name)
        ax.set(title=title, xlabel="step")
    x, acc = series(records, "calib/accuracy")
    if len(x):
        axes[0].plot(x, acc, color="grey", ls=":", label="greedy accuracy")
    axes[0].legend(fontsize=7)
    return _save(fig, out / "calibration", formats)


def plot_comparison(
    runs: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    out_stem: str | Path,
    *,
    keys: Sequence[tuple[str, str]] = (
        ("dyn/entropy", "mean token entropy (nats)"),
        ("train/reward", "train reward"),
        ("eval/pass@1", "held-out pass@1"),
        ("eval/pass@8", "held-out pass@8"),
    ),
    formats: Sequence[str] = ("svg", "png"),
) -> list[Path]:
    """One panel per metric: mean over seeds (line) ± one sd (band) for each arm.

    Args:
        runs: arm label → the metric records of each seed's run.
        out_stem: output path without extension.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(keys), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    for ax, (key, title) in zip(axes, keys, strict=True):
        for i, (label, seeds) in enumerate(runs.items()):
            curves = [series(recs, key) for recs in seeds]
            curves = [c for c in curves if len(c[0])]
            if not curves:
                continue
            steps = sorted(set.intersection(*(set(c[0]) for c in curves)))
            ys = np.array([[c[1][list(c[0]).index(s)] for s in steps] for c in curves])
            mean, sd = ys.mean(0), ys.std(0)
            ax.plot(steps, mean, color=f"C{i}", label=label)
            ax.fill_between(steps, mean - sd, mean + sd, color=f"C{i}", alpha=0.2)
        ax.set(title=title, xlabel="step")
    axes[0].legend(fontsize=8)
    Path(out_stem).parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, Path(out_stem), formats)
