"""Matplotlib figures for the eval report, rendered to inline SVG strings.

Each figure has a ``*_figure`` function returning the ``matplotlib.figure.Figure`` (tests inspect
it) and a ``*_svg`` wrapper. The house style and helpers live in :mod:`entrolab.report.figures`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from entrolab.calibration import reliability_bins, risk_coverage_curve
from entrolab.report.figures import (
    COLORS,
    legend_below,
    legend_under,
    new_figure,
    same_as_notes,
    series_style,
    to_svg,
)


def reliability_figure(
    confidences: Mapping[str, np.ndarray], correct: np.ndarray, *, n_bins: int = 10
):
    """Reliability diagrams, one panel per estimator: bars = accuracy of the items in each
    equal-width confidence bin, dots = the bin's mean confidence (area ∝ items), dashed
    diagonal = perfect calibration; the number of items of each bin is printed above it.

    Args:
        confidences: estimator name → calibrated confidences [N] in [0, 1] (NaN omitted).
        correct: [N] 0/1 correctness.
    """
    names = list(confidences)
    k = max(1, len(names))
    cols = k if k <= 3 else 2  # 4 panels as 2 × 2: readable at a page's width
    rows = -(-k // cols)
    fig = new_figure(2.6 * cols + 0.4, 2.7 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for ax in axes[k:]:
        ax.set_visible(False)
    for ax, name, color in zip(axes, names, COLORS * 4, strict=False):
        bins = reliability_bins(confidences[name], correct, n_bins=n_bins, nan_policy="omit")
        full = bins.count > 0
        centers = (bins.lower + bins.upper) / 2
        width = bins.upper - bins.lower
        ax.bar(
            centers[full],
            bins.accuracy[full],
            width=width[full] * 0.9,
            color=color,
            alpha=0.45,
            label="accuracy of the bin's items",
        )
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
        ax.scatter(
            bins.mean_confidence[full],
            bins.accuracy[full],
            s=6 + 40 * bins.count[full] / max(1, int(bins.count.max())),
            color="black",
            zorder=3,
            clip_on=False,  # dots at accuracy 0 or 1 sit on the frame, fully visible
            label="bin mean confidence (area ∝ items)",
        )
        # item counts in a strip above the axes (x in data units, y in axes units)
        strip = ax.get_xaxis_transform()
        for c, n in zip(centers[full], bins.count[full], strict=True):
            ax.text(c, 1.015, str(int(n)), transform=strip, ha="center", va="bottom", fontsize=6)
        total = int(bins.count.sum())
        ax.set_title(f"{name}\nitems per bin (n = {total})", fontsize=8, pad=12)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="calibrated confidence")
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", ".25", ".5", ".75", "1"])
    for ax in axes[::cols]:
        ax.set_ylabel("accuracy (share correct)")
    legend_below(fig, ncols=cols)  # one legend column per panel column: fits the width
    return fig


def reliability_svg(
    confidences: Mapping[str, np.ndarray], correct: np.ndarray, *, n_bins: int = 10
) -> str:
    """:func:`reliability_figure` as an SVG string."""
    return to_svg(reliability_figure(confidences, correct, n_bins=n_bins))


def risk_coverage_figure(uncertainties: Mapping[str, np.ndarray], correct: np.ndarray):
    """Selective risk (error rate of kept items) vs coverage, one line per estimator; the
    answers with the highest uncertainty are dropped first."""
    fig = new_figure(6.2, 3.8)
    ax = fig.subplots()
    y = np.asarray(correct, dtype=np.float64)
    top = 1 - y.mean()
    curves = {
        name: risk_coverage_curve(u, y, ties="average", nan_policy="omit")
        for name, u in uncertainties.items()
    }
    notes = same_as_notes({"": {n: (c.coverage, c.risk) for n, c in curves.items()}})
    for i, (name, curve) in enumerate(curves.items()):
        label = name + notes.get(name, "")
        ax.plot(curve.coverage, curve.risk, label=label, lw=1.5, markevery=0.1, **series_style(i))
        top = max(top, float(np.nanmax(curve.risk)) if len(curve.risk) else 0.0)
    ax.axhline(1 - y.mean(), ls=(0, (1, 2)), color="grey", lw=1, label="no abstention")
    ax.set(
        xlim=(0, 1),
        ylim=(0, min(1.0, top * 1.1 + 0.02)),
        xlabel="coverage (share of answers kept)",
        ylabel="risk (error rate of kept answers)",
    )
    ax.grid(alpha=0.3)
    legend_under(ax, ncols=2)  # under the axes: long names never squeeze the plot
    return fig


def risk_coverage_svg(uncertainties: Mapping[str, np.ndarray], correct: np.ndarray) -> str:
    """:func:`risk_coverage_figure` as an SVG string."""
    return to_svg(risk_coverage_figure(uncertainties, correct))


def top_names(names: Sequence[str], k: int = 4) -> list[str]:
    """The first ``k`` names (the table is sorted best first)."""
    return list(names)[:k]
