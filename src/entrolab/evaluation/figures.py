"""Matplotlib figures for the eval report, rendered to inline SVG strings.

Uses ``matplotlib.figure.Figure`` directly (no pyplot, no global backend switch), so importing
or calling this module changes no global state.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

from entrolab.calibration import reliability_bins, risk_coverage_curve

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _svg(fig) -> str:
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    buf = io.StringIO()
    FigureCanvasSVG(fig).print_svg(buf)
    svg = buf.getvalue()
    return svg[svg.find("<svg") :]  # drop the XML prolog and doctype: inlined into HTML


def _figure(width: float, height: float):
    from matplotlib import rcParams
    from matplotlib.figure import Figure

    with_rc = {"svg.fonttype": "none", "font.size": 9}
    old = {k: rcParams[k] for k in with_rc}
    rcParams.update(with_rc)
    try:
        return Figure(figsize=(width, height), layout="constrained")
    finally:
        rcParams.update(old)


def reliability_svg(
    confidences: Mapping[str, np.ndarray], correct: np.ndarray, *, n_bins: int = 10
) -> str:
    """Reliability diagrams (accuracy vs mean confidence per equal-width bin), one panel each.

    Args:
        confidences: estimator name → calibrated confidences [N] in [0, 1].
        correct: [N] 0/1 correctness.
    """
    names = list(confidences)
    fig = _figure(2.6 * max(1, len(names)), 2.8)
    axes = fig.subplots(1, max(1, len(names)), squeeze=False)[0]
    for ax, name, color in zip(axes, names, _COLORS * 4, strict=False):
        bins = reliability_bins(confidences[name], correct, n_bins=n_bins, nan_policy="omit")
        full = bins.count > 0
        centers = (bins.lower + bins.upper) / 2
        width = bins.upper - bins.lower
        ax.bar(centers[full], bins.accuracy[full], width=width[full] * 0.9, color=color, alpha=0.75)
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        ax.scatter(
            bins.mean_confidence[full],
            bins.accuracy[full],
            s=8 + 2 * bins.count[full],
            color="black",
            zorder=3,
        )
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=name)
    axes[0].set_ylabel("accuracy")
    return _svg(fig)


def risk_coverage_svg(uncertainties: Mapping[str, np.ndarray], correct: np.ndarray) -> str:
    """Selective risk (error rate of kept items) vs coverage, one line per estimator."""
    fig = _figure(5.2, 3.2)
    ax = fig.subplots()
    y = np.asarray(correct, dtype=np.float64)
    for (name, u), color in zip(uncertainties.items(), _COLORS * 4, strict=False):
        curve = risk_coverage_curve(u, y, ties="average", nan_policy="omit")
        ax.plot(curve.coverage, curve.risk, label=name, color=color, lw=1.5)
    ax.axhline(1 - y.mean(), ls="--", color="grey", lw=1, label="no abstention")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="coverage (share of answers kept)",
        ylabel="risk (error rate of kept answers)",
    )
    ax.legend(fontsize=7, loc="upper left")
    return _svg(fig)


def top_names(names: Sequence[str], k: int = 4) -> list[str]:
    """The first ``k`` names (the table is sorted best first)."""
    return list(names)[:k]
