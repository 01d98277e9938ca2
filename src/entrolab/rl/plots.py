"""Figures of an RL run (``entrolab plot RUN_DIR``) and of several runs side by side (bench).

Uses matplotlib's object API (``matplotlib.figure.Figure``), so no global pyplot state and no
display is needed. Input: the records of ``metrics.jsonl`` (see :mod:`entrolab.rl.trainer`).
The house style (distinct colour + marker + line style per series, legends outside the data,
notes when two series coincide) comes from :mod:`entrolab.report.figures`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from entrolab.errors import EntrolabError
from entrolab.report.figures import (
    COLORS,
    legend_below,
    legend_under,
    new_figure,
    same_as_notes,
    save_figure,
    seed_band,
    series_style,
)
from entrolab.rl.checkpoint import read_metrics

__all__ = [
    "calibration_names",
    "comparison_figure",
    "dynamics_figure",
    "plot_comparison",
    "plot_run",
    "series",
]


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
    return save_figure(fig, stem, formats, dpi=120)


def _draw_lines(ax, lines: Sequence[tuple[str, str, tuple[np.ndarray, np.ndarray]]]) -> None:
    """Draw (key, label, (x, y)) lines in distinct styles; a line identical to an earlier one
    gets "(= …)" in its label. Held-out evaluations (few points) keep their markers."""
    notes = same_as_notes({"": {label: xy for _, label, xy in lines}})
    for i, (key, label, (x, y)) in enumerate(lines):
        style = series_style(i, markers=key.startswith("eval") or len(x) <= 12)
        ax.plot(x, y, lw=1.3, label=label + notes.get(label, ""), **style)


def _law_panel(ax, records: Sequence[Mapping[str, Any]]) -> None:
    from entrolab.rl.entropy_law import fit_entropy_law

    steps_h, h = series(records, "dyn/entropy")
    steps_r, r = series(records, "train/reward")
    common = sorted(set(steps_h) & set(steps_r))
    h = np.array([h[list(steps_h).index(s)] for s in common])
    r = np.array([r[list(steps_r).index(s)] for s in common])
    sc = ax.scatter(h, r, c=common, cmap="viridis", s=14, label="one training step")
    ax.figure.colorbar(sc, ax=ax, label="step")
    ax.set_xlabel("mean token entropy H (nats)")
    ax.set_ylabel("mean reward R")
    title = "entropy law R = −a·e^H + b"
    if len(common) >= 3:
        try:
            fit = fit_entropy_law(h, r)
        except EntrolabError:
            fit = None
        if fit is not None:
            grid = np.linspace(0.0, max(float(h.max()), 1e-3) * 1.05, 100)
            ax.plot(grid, fit.predict(grid), color=COLORS[1], label="fit")
            ax.axhline(
                fit.ceiling, color=COLORS[1], ls=":", label=f"ceiling b−a = {fit.ceiling:.3f}"
            )
            title += f"\nfit: a={fit.a:.3g}, b={fit.b:.3g}, R²={fit.r2:.2f}"
    ax.set_title(title)
    legend_under(ax, ncols=3)


def dynamics_figure(records: Sequence[Mapping[str, Any]]):
    """The four-panel ``dynamics`` figure: token entropy, reward/accuracy, covariance term vs
    entropy change, and the entropy–reward law."""
    fig = new_figure(12, 9.5)
    (ax_h, ax_r), (ax_c, ax_l) = fig.subplots(2, 2)
    lines = []
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
            lines.append((key, label, (x, y)))
    _draw_lines(ax_h, lines)
    ax_h.set(title="mean token entropy", xlabel="step", ylabel="entropy (nats per token)")
    legend_under(ax_h, ncols=3)
    pk = _pass_k_key(records)
    lines = []
    for key, label in [
        ("train/reward", "train reward"),
        ("train/accuracy", "train accuracy"),
        ("eval/pass@1", "held-out pass@1"),
        *([(pk, f"held-out {pk.split('/')[1]}")] if pk else []),
    ]:
        x, y = series(records, key)
        if len(x):
            lines.append((key, label, (x, y)))
    _draw_lines(ax_r, lines)
    ax_r.set(title="reward and accuracy", xlabel="step", ylabel="mean reward / share correct")
    legend_under(ax_r)
    x, cov = series(records, "dyn/cov")
    ax_c.plot(
        x, cov, label="cov(log π, A) (batch; left axis)", lw=1.3, **series_style(0, markers=False)
    )
    ax_c.axhline(0, color="grey", lw=0.5)
    ax_c.set(title="covariance term and entropy change", xlabel="step")
    ax_c.set_ylabel("cov(log π, A)  (nats × advantage)", color=COLORS[0])
    ax2 = ax_c.twinx()
    for i, (key, label) in enumerate(
        [
            ("dyn/probe_dH", "realised ΔH on the probe (right axis)"),
            ("dyn/pred_dH", "predicted ΔH = −η̂·cov (right axis)"),
        ],
        start=1,
    ):
        xs, ys = series(records, key)
        if len(xs):
            ax2.plot(xs, ys, lw=1.0, label=label, **series_style(i, markers=False))
    ax2.set_ylabel("ΔH per step (nats per token)")
    h1, l1 = ax_c.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    legend_under(ax_c, handles=h1 + h2, labels=l1 + l2)
    _law_panel(ax_l, records)
    return fig


def deciles_figure(last: Mapping[str, Any]):
    """Bar chart of the probe's cumulative entropy change per step-0 entropy decile."""
    fig = new_figure(6, 3.5)
    ax = fig.subplots()
    vals = [v if v is not None else np.nan for v in last["dyn/decile_dH_cum"]]
    ticks = np.arange(1, len(vals) + 1)
    ax.bar(ticks, vals, color=COLORS[3])
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xticks(ticks)
    ax.set(
        title=f"probe entropy change, step 0 → {last['step']}, by step-0 entropy decile",
        xlabel="entropy decile at step 0 (1 = lowest)",
        ylabel="ΔH (nats per token)",
    )
    return fig


def plot_run(
    run_dir: str | Path,
    *,
    formats: Sequence[str] = ("svg", "png"),
    out_dir: str | Path | None = None,
) -> list[Path]:
    """Draw a run's entropy, reward, covariance and entropy-law panels (``dynamics.*``), its
    per-decile entropy change (``deciles.*``) and, when tracked, its held-out calibration
    (``calibration.*``) into ``out_dir`` (default ``RUN_DIR/plots``)."""
    records = read_metrics(run_dir)
    if not any("dyn/entropy" in r for r in records):
        raise EntrolabError(f"{run_dir} has no training steps yet; nothing to plot")
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    paths = _save(dynamics_figure(records), out / "dynamics", formats)
    last = next((r for r in reversed(records) if r.get("dyn/decile_dH_cum")), None)
    if last is not None:
        paths += _save(deciles_figure(last), out / "deciles", formats)
    fig = calibration_figure(records)
    if fig is not None:
        paths += _save(fig, out / "calibration", formats)
    return paths


def calibration_names(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The confidences tracked under ``calib/<name>/<metric>`` in ``records`` (sorted)."""
    keys = {k for r in records for k in r if k.startswith("calib/") and k.count("/") == 2}
    return sorted({k.split("/")[1] for k in keys})


def calibration_figure(records: Sequence[Mapping[str, Any]]):
    """Held-out ECE, AUROC, Brier and confident-wrong share over training, one line per
    tracked confidence (:mod:`entrolab.rl.calibration_track`), and the greedy accuracy in its
    own panel; None if calibration was not tracked."""
    names = calibration_names(records)
    if not names:
        return None
    panels = [
        ("ece", "held-out ECE (frozen Platt map)", "ECE (lower is better)"),
        ("auroc", "AUROC of correctness", "AUROC (0.5 = chance)"),
        ("brier", "Brier score (frozen map)", "Brier (lower is better)"),
        ("confident_wrong", "confident wrong answers", "share of wrong answers ≥ step-0 median"),
    ]
    fig = new_figure(16, 3.9)
    axes = fig.subplots(1, len(panels) + 1)
    for ax, (metric, title, ylabel) in zip(axes, panels, strict=False):
        lines = {name: series(records, f"calib/{name}/{metric}") for name in names}
        notes = same_as_notes({"": lines})
        for i, (name, (x, y)) in enumerate(lines.items()):
            if len(x):
                ax.plot(x, y, lw=1.3, label=name + notes.get(name, ""), **series_style(i))
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        if metric == "auroc":
            ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    x, acc = series(records, "calib/accuracy")
    ax = axes[-1]
    if len(x):
        ax.plot(x, acc, color="grey", marker="o", ms=4, lw=1.3)
        mid = (float(acc.min()) + float(acc.max())) / 2  # span ≥ 0.1: tiny changes look tiny
        half = max(0.05, (float(acc.max()) - float(acc.min())) / 2 * 1.15)
        ax.set_ylim(max(0.0, mid - half), mid + half)
    ax.set(title="greedy accuracy (held-out)", xlabel="step", ylabel="share correct")
    legend_below(fig, ncols=min(len(names), 5), title="confidence")
    return fig


def comparison_figure(
    runs: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    keys: Sequence[tuple[str, str]],
    *,
    level: float = 0.95,
):
    """One panel per metric: for each arm the mean over its seeds (line) and the Student-t
    ``level`` interval of that mean (band; none for a single seed). Steps are those every seed
    of the arm logged."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig = new_figure(4.4 * len(keys), 3.9)
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    n_seeds: set[int] = set()
    for ax, (key, title) in zip(axes, keys, strict=True):
        for i, seeds in enumerate(runs.values()):
            curves = [series(recs, key) for recs in seeds]
            curves = [c for c in curves if len(c[0])]
            if not curves:
                continue
            steps = sorted(set.intersection(*(set(c[0]) for c in curves)))
            ys = np.array([[c[1][list(c[0]).index(s)] for s in steps] for c in curves])
            mean, low, high = seed_band(ys, level)
            n_seeds.add(len(curves))
            style = series_style(i, markers=len(steps) <= 12)
            ax.plot(steps, mean, lw=1.4, **style)
            if len(curves) > 1:
                ax.fill_between(steps, low, high, color=style["color"], alpha=0.18, lw=0)
        ax.set(title=title, xlabel="step", ylabel=title)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], label=label, **series_style(i)) for i, label in enumerate(runs)]
    seeds = "/".join(str(s) for s in sorted(n_seeds)) or "0"
    handles.append(
        Patch(color="grey", alpha=0.3, label=f"band: {level:.0%} t-interval over {seeds} seeds")
    )
    ncols = min(len(handles), 2 * len(keys) - 1)  # what fits under the panels
    legend_below(fig, handles, [h.get_label() for h in handles], ncols=ncols)
    return fig


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
    """:func:`comparison_figure` (mean over seeds ± 95% t-interval band per arm) saved as
    ``out_stem.<fmt>``.

    Args:
        runs: arm label → the metric records of each seed's run.
        out_stem: output path without extension.
    """
    fig = comparison_figure(runs, keys)
    Path(out_stem).parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, Path(out_stem), formats)
