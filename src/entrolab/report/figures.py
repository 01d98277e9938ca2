"""Shared matplotlib helpers for every entrolab figure (eval, compare-samplers, pareto, RL, TTA).

One look for all figures: a colour-blind-safe palette, and for each series a distinct colour,
marker *and* line style, so two series that coincide stay visible; legends outside the data;
SVG text kept as text. Uses ``matplotlib.figure.Figure`` directly (no pyplot, no global backend
switch), so importing or calling this module changes no global state.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from entrolab.errors import EntrolabError

__all__ = [
    "COLORS",
    "LINESTYLES",
    "MARKERS",
    "identical_groups",
    "legend_below",
    "legend_right",
    "legend_under",
    "new_figure",
    "nudge",
    "pad_limits",
    "plain_log_ticks",
    "same_as_notes",
    "save_figure",
    "seed_band",
    "series_style",
    "to_svg",
]

#: Okabe–Ito palette (distinguishable with the common colour-vision deficiencies)
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")

_RC = {"svg.fonttype": "none", "font.size": 9, "axes.titlesize": 9, "legend.fontsize": 8}


def new_figure(width: float, height: float):
    """A constrained-layout ``Figure`` of ``width`` × ``height`` inches in the house style."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(_RC):
        return Figure(figsize=(width, height), layout="constrained")


def to_svg(fig) -> str:
    """The figure as an SVG string without the XML prolog (ready to inline in HTML); text stays
    text (searchable, and tests can read the labels)."""
    from matplotlib import rc_context
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    buf = io.StringIO()
    with rc_context({"svg.fonttype": "none"}):
        FigureCanvasSVG(fig).print_svg(buf)
    svg = buf.getvalue()
    return svg[svg.find("<svg") :]


def save_figure(fig, stem: str | Path, formats: Sequence[str], *, dpi: int = 110) -> list[Path]:
    """Write ``stem.<fmt>`` for each of ``formats`` (svg, png, pdf); returns the paths."""
    from matplotlib import rc_context

    out = []
    for fmt in formats:
        if fmt not in ("svg", "png", "pdf"):
            raise EntrolabError(f"unknown figure format {fmt!r}; use svg, png or pdf")
        path = Path(stem).with_suffix(f".{fmt}")
        with rc_context({"svg.fonttype": "none"}):
            fig.savefig(path, dpi=dpi, bbox_inches="tight")
        out.append(path)
    return out


def series_style(i: int, *, markers: bool = True) -> dict[str, Any]:
    """Colour, line style (and marker) of the ``i``-th series: all three change together, so
    series stay distinguishable in grey print and when drawn on top of each other."""
    style: dict[str, Any] = {
        "color": COLORS[i % len(COLORS)],
        "ls": LINESTYLES[i % len(LINESTYLES)],
    }
    if markers:
        style.update(marker=MARKERS[i % len(MARKERS)], ms=4, mfc="none", mew=1.1)
    return style


def legend_right(ax, **kwargs):
    """The axes' legend outside, to the right of the data (constrained layout makes room)."""
    kwargs.setdefault("frameon", False)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def legend_below(fig, handles=None, labels=None, *, ncols: int | None = None, **kwargs):
    """One legend for the whole figure, below every panel (outside all data)."""
    if handles is None:
        handles, labels = [], []
        for ax in fig.axes:
            for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
                if label not in labels and not label.startswith("_"):
                    handles.append(h)
                    labels.append(label)
    if not handles:
        return None
    kwargs.setdefault("frameon", False)
    ncols = ncols or min(len(handles), 4)
    return fig.legend(handles, labels, loc="outside lower center", ncols=ncols, **kwargs)


def seed_band(curves: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds and its Student-t ``level`` interval, per column.

    Args:
        curves: [S, T] one row per seed (S ≥ 1), one column per step.

    Returns:
        (mean [T], low [T], high [T]); with one seed low = high = mean (no interval).
    """
    from scipy import stats

    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2 or curves.shape[0] < 1:
        raise EntrolabError(f"seed_band needs a [seeds, steps] array, got shape {curves.shape}")
    mean = curves.mean(axis=0)
    s = curves.shape[0]
    if s < 2:
        return mean, mean.copy(), mean.copy()
    half = stats.t.ppf(0.5 + level / 2, s - 1) * curves.std(axis=0, ddof=1) / math.sqrt(s)
    return mean, mean - half, mean + half


def identical_groups(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, atol: float = 1e-12
) -> list[list[str]]:
    """Groups (≥ 2 names) of series with the same x values and y values equal within ``atol``
    — drawn on top of each other, one would hide the other, so the figure says so."""
    groups: list[list[str]] = []
    for name, (x, y) in series.items():
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        for g in groups:
            gx, gy = (np.asarray(v, dtype=float) for v in series[g[0]])
            if gx.shape == x.shape and np.array_equal(gx, x) and np.allclose(gy, y, atol=atol):
                g.append(name)
                break
        else:
            groups.append([name])
    return [g for g in groups if len(g) > 1 and len(series[g[0]][0]) > 0]


def nudge(ax, i: int, n: int, *, step_pt: float = 4.0):
    """``ax.transData`` shifted sideways by ``step_pt`` points per series (series ``i`` of
    ``n``, centred on 0), so error bars of series at the same x never cover each other. Axis
    limits are not computed from nudged artists: set them with :func:`pad_limits`."""
    from matplotlib.transforms import offset_copy

    return offset_copy(ax.transData, fig=ax.figure, x=step_pt * (i - (n - 1) / 2), units="points")


def pad_limits(ax, xs: Sequence[float], *, frac: float = 0.08, log: bool = False) -> None:
    """x limits that show every point of ``xs`` with a margin of ``frac`` of the range (in log
    space when ``log``), so nudged markers and error bars are not cut at the frame."""
    x = np.asarray([v for v in xs if np.isfinite(v) and (v > 0 or not log)], dtype=float)
    if x.size == 0:
        return
    lo, hi = (np.log10(x.min()), np.log10(x.max())) if log else (x.min(), x.max())
    span = hi - lo if hi > lo else (abs(hi) * 0.5 or 1.0)
    lo, hi = lo - frac * span, hi + frac * span
    ax.set_xlim((10**lo, 10**hi) if log else (lo, hi))


def same_as_notes(panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]):
    """Legend suffixes for series drawn exactly on top of an earlier one.

    Args:
        panels: panel name → {series name → (x, y)}.

    Returns:
        series name → ``" (= top_p in pass@1, kept)"`` (``" (= top_p)"`` for a panel named
        ``""``) for every series that coincides with an
        earlier series in at least one panel (absent otherwise).
    """
    notes: dict[str, dict[str, list[str]]] = {}
    for panel, series in panels.items():
        for group in identical_groups(series):
            for name in group[1:]:
                notes.setdefault(name, {}).setdefault(group[0], []).append(panel)

    def where(panels: list[str]) -> str:
        named = [p for p in panels if p]
        return f" in {', '.join(named)}" if named else ""

    return {
        name: " (" + "; ".join(f"= {first}{where(ps)}" for first, ps in by.items()) + ")"
        for name, by in notes.items()
    }


def plain_log_ticks(axis) -> None:
    """Label a log-scale ``axis`` (``ax.xaxis`` / ``ax.yaxis``) at 1, 2, 5 × 10^k as plain
    numbers (2, 5, 10, 20 …) with unlabelled minor ticks, so short ranges still get labels."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def legend_under(ax, *, ncols: int = 2, handles=None, labels=None, gap_pt: float = 30.0, **kw):
    """The axes' legend centred under its x-axis label (``gap_pt`` points below the axes, clear
    of tick labels and the label at the house font size); constrained layout makes room."""
    from matplotlib.transforms import offset_copy

    kw.setdefault("frameon", False)
    args = () if handles is None else (handles, labels)
    return ax.legend(
        *args,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        bbox_transform=offset_copy(ax.transAxes, fig=ax.figure, y=-gap_pt, units="points"),
        ncols=ncols,
        **kw,
    )
