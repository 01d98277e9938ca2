"""Every entrolab figure is readable: labelled axes with units, legends outside the data, no
overlapping text, error bars that are the stated intervals, coinciding series called out,
reliability diagrams with bin counts and a labelled diagonal.

The figures are built from hand-made inputs and inspected as matplotlib objects after a draw
(positions in display pixels), plus the SVG text where the HTML reports inline it.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import scipy.stats

from entrolab.errors import EntrolabError
from entrolab.evaluation.figures import reliability_figure, reliability_svg, risk_coverage_figure
from entrolab.evaluation.sampler_report import accuracy_figure
from entrolab.inference.pareto import ParetoPoint, pareto_figure, pareto_svg
from entrolab.report.figures import identical_groups, same_as_notes, seed_band
from entrolab.rl.plots import (
    calibration_figure,
    comparison_figure,
    deciles_figure,
    dynamics_figure,
)


def _draw(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _axis_tick_labels(axis):
    """Tick labels that are drawn: those whose tick lies inside the view interval."""
    lo, hi = sorted(axis.get_view_interval())
    out = []
    for locs, labels in (
        (axis.get_majorticklocs(), axis.get_majorticklabels()),
        (axis.get_minorticklocs(), axis.get_minorticklabels()),
    ):
        for loc, label in zip(locs, labels, strict=False):
            span = (hi - lo) * 1e-9
            if lo - span <= loc <= hi + span:
                out.append(label)
    return out


def _texts(fig, renderer):
    """(text, bbox) of every drawn, non-empty text: titles, axis labels, tick labels inside the
    view, annotations and legend entries."""
    artists = list(fig.texts)
    if fig._suptitle is not None:
        artists.append(fig._suptitle)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        artists += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        artists += [
            t for a in (ax.xaxis, ax.yaxis) if a.get_visible() for t in _axis_tick_labels(a)
        ]
        artists += list(ax.texts)
    for legend in _legends(fig):
        artists += [*legend.get_texts(), legend.get_title()]
    out = []
    for t in artists:
        if not t.get_visible() or not t.get_text().strip():
            continue
        bb = t.get_window_extent(renderer)
        if bb.width > 0 and bb.height > 0:
            out.append((t.get_text(), bb))
    return out


def _legends(fig):
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return legends + list(fig.legends)


def assert_readable(fig) -> None:
    """No two texts overlap (more than 1 px each way), every text lies inside the figure, and
    no legend covers the data area of any axes."""
    renderer = _draw(fig)
    fig_bb = fig.bbox
    items = _texts(fig, renderer)
    for text, bb in items:
        assert bb.x0 >= fig_bb.x0 - 2 and bb.x1 <= fig_bb.x1 + 2, f"{text!r} leaves the figure"
        assert bb.y0 >= fig_bb.y0 - 2 and bb.y1 <= fig_bb.y1 + 2, f"{text!r} leaves the figure"
    for i, (ta, a) in enumerate(items):
        for tb, b in items[i + 1 :]:
            ov_x = min(a.x1, b.x1) - max(a.x0, b.x0)
            ov_y = min(a.y1, b.y1) - max(a.y0, b.y0)
            assert not (ov_x > 1 and ov_y > 1), f"text {ta!r} overlaps {tb!r}"
    data_areas = [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_visible()]
    for legend in _legends(fig):
        lb = legend.get_window_extent(renderer)
        for area in data_areas:
            ov_x = min(lb.x1, area.x1) - max(lb.x0, area.x0)
            ov_y = min(lb.y1, area.y1) - max(lb.y0, area.y0)
            assert not (ov_x > 1 and ov_y > 1), "a legend covers a data area"


def _legend_labels(fig) -> list[str]:
    return [t.get_text() for lg in _legends(fig) for t in lg.get_texts()]


# ---------------------------------------------------------------- helpers in report/figures


def test_seed_band_is_the_student_t_interval():
    # seeds give 1, 2, 3 at one step: mean 2, sd 1, t(0.975, 2) = 4.302653 → half = 4.302653/√3
    mean, low, high = seed_band(np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]))
    half = 4.302652729749464 / math.sqrt(3)
    np.testing.assert_allclose(mean, [2.0, 5.0])
    np.testing.assert_allclose(low, [2.0 - half, 5.0], rtol=1e-12)
    np.testing.assert_allclose(high, [2.0 + half, 5.0], rtol=1e-12)
    one = seed_band(np.array([[0.3, 0.4]]))  # one seed: no interval
    assert all(np.array_equal(one[0], v) for v in one[1:])
    with pytest.raises(EntrolabError, match=r"\[seeds, steps\]"):
        seed_band(np.array([0.3, 0.4]))


def test_identical_series_are_grouped_and_named():
    x = [1, 2, 3]
    series = {"a": (x, [0.1, 0.2, 0.3]), "b": (x, [0.1, 0.2, 0.3]), "c": (x, [0.1, 0.2, 0.4])}
    assert identical_groups(series) == [["a", "b"]]
    notes = same_as_notes({"pass@1": series, "kept": {"a": (x, x), "c": (x, x)}})
    assert notes == {"b": " (= a in pass@1)", "c": " (= a in kept)"}
    assert same_as_notes({"": series}) == {"b": " (= a)"}


# ---------------------------------------------------------------- eval figures


def test_reliability_diagram_prints_bin_counts_and_labels_bars_dots_and_diagonal():
    # 10 equal-width bins: 0.05 → bin 1 (1 item, wrong), 0.12 and 0.18 → bin 2 (2 items, one
    # right: accuracy 0.5), 0.95 → bin 10 (1 item, right)
    conf = np.array([0.05, 0.12, 0.18, 0.95])
    correct = np.array([0, 0, 1, 1])
    fig = reliability_figure({"est": conf}, correct)
    assert_readable(fig)
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == [0.0, 0.5, 1.0]
    counts = sorted((round(t.get_position()[0], 6), t.get_text()) for t in ax.texts)
    assert counts == [(0.05, "1"), (0.15, "2"), (0.95, "1")]  # one count per non-empty bin
    assert "n = 4" in ax.get_title()
    assert ax.get_xlabel() == "calibrated confidence"
    assert ax.get_ylabel() == "accuracy (share correct)"
    labels = _legend_labels(fig)
    assert "perfect calibration" in labels
    assert any("accuracy" in s for s in labels) and any("mean confidence" in s for s in labels)
    svg = reliability_svg({"est": conf}, correct)
    assert "perfect calibration" in svg and ">2<" in svg  # counts are text in the page


def test_reliability_panels_wrap_and_each_row_has_a_y_label():
    rng = np.random.default_rng(0)
    y = (rng.random(60) < 0.5).astype(int)
    conf = {f"estimator_{i}": rng.random(60) for i in range(4)}
    fig = reliability_figure(conf, y)
    assert_readable(fig)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 4
    assert sum(bool(ax.get_ylabel()) for ax in shown) == 2  # 2 × 2 grid, labels on the left


def test_risk_coverage_names_coinciding_estimators_and_keeps_the_legend_off_the_data():
    y = np.array([1, 0, 1, 1, 0, 0, 1.0])
    u = np.arange(7.0)
    fig = risk_coverage_figure({"a": u, "b": 2 * u, "c": -u}, y)  # b ranks like a
    assert_readable(fig)
    labels = _legend_labels(fig)
    assert "b (= a)" in labels and "c" in labels and "no abstention" in labels
    ax = fig.axes[0]
    assert "coverage" in ax.get_xlabel() and "error rate" in ax.get_ylabel()
    styles = {(ln.get_linestyle(), ln.get_marker()) for ln in ax.get_lines()[:3]}
    assert len(styles) == 3  # a and b drawn differently, so both stay visible


# ---------------------------------------------------------------- compare-samplers


def _compare_table():
    rows = []
    for name, shift in (("top_p", 0.0), ("min_p", 0.0), ("top_h", 0.05)):
        for t in (0.7, 1.0):
            p = 0.5 - 0.2 * (t - 0.7) + shift
            rows.append(
                {
                    "sampler": name,
                    "temperature": t,
                    "pass1": p,
                    "pass1_low": p - 0.15,
                    "pass1_high": p + 0.12,
                    "pass1_se": 0.07,
                    "passk": p + 0.2,
                    "kept": 3 * t + shift * 10,
                }
            )
    return rows


def test_compare_samplers_error_bars_are_the_95pct_intervals():
    from matplotlib.container import ErrorbarContainer

    table = _compare_table()
    fig = accuracy_figure(table)
    assert_readable(fig)
    ax_acc, ax_kept = fig.axes[:2]
    bars = [c for c in ax_acc.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3  # one per sampler
    for c, name in zip(bars, ["top_p", "min_p", "top_h"], strict=True):
        segs = c[2][0].get_segments()
        want = [(r["pass1_low"], r["pass1_high"]) for r in table if r["sampler"] == name]
        got = [(s[0][1], s[1][1]) for s in segs]
        np.testing.assert_allclose(got, want, rtol=1e-12)
    offsets = {c[0].get_transform().transform((1.0, 0.5))[0] for c in bars}
    assert len(offsets) == 3  # nudged apart: no bar hides another
    labels = _legend_labels(fig)
    assert "min_p (= top_p in pass@1, kept)" in labels
    assert "95%" in ax_acc.get_ylabel() and "tokens" in ax_kept.get_ylabel()
    assert [t.get_text() for t in ax_kept.get_yticklabels() if t.get_text()]  # log axis labelled


# ---------------------------------------------------------------- pareto


def _point(strategy, budget, correct, n, tokens):
    ci = scipy.stats.binomtest(correct, n).proportion_ci(method="exact")
    return ParetoPoint(
        strategy, budget, correct / n, tokens, int(tokens * n), n, n, ci.low, ci.high
    )


def test_pareto_error_bars_intervals_budgets_and_identical_strategies():
    from matplotlib.container import ErrorbarContainer

    pts = [
        _point("majority", 2, 5, 10, 30.0),
        _point("majority", 4, 6, 10, 60.0),
        _point("deepconf-online", 2, 5, 10, 30.0),  # = majority (budget <= warm-up)
        _point("deepconf-online", 4, 6, 10, 60.0),
        _point("zip-rc", 2, 7, 10, 25.0),
    ]
    fig = pareto_figure(pts, title="arithmetic, n = 10")
    assert_readable(fig)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3 and sum(len(c[2][0].get_segments()) for c in bars) == len(pts)
    # strategies are sorted by name: deepconf-online, majority, zip-rc
    seg = bars[2][2][0].get_segments()[0]
    assert (seg[0][1], seg[1][1]) == pytest.approx((pts[4].accuracy_low, pts[4].accuracy_high))
    assert "deepconf-online" in _legend_labels(fig)
    assert "majority (= deepconf-online)" in _legend_labels(fig)
    assert sorted(t.get_text() for t in ax.texts) == ["2", "2", "2", "4", "4"]  # budgets
    assert "tokens" in ax.get_xlabel() and "95%" in ax.get_ylabel()
    low, high = ax.get_ylim()
    assert low <= min(p.accuracy_low for p in pts) and high >= max(p.accuracy_high for p in pts)
    assert "majority (= deepconf-online)" in pareto_svg(pts)


# ---------------------------------------------------------------- RL figures


def _records(steps=6, same_reward_and_accuracy=True):
    recs = [{"step": 0, "eval/pass@1": 0.3, "eval/pass@8": 0.8, "eval/token_entropy": 0.5}]
    for s in range(1, steps + 1):
        r = 0.3 + 0.05 * s
        recs.append(
            {
                "step": s,
                "train/reward": r,
                "train/accuracy": r if same_reward_and_accuracy else r - 0.1,
                "dyn/entropy": 0.5 - 0.03 * s,
                "dyn/cov": 0.01 * s,
                "dyn/probe_H_before": 0.5 - 0.03 * (s - 1),
                "dyn/probe_H_after": 0.5 - 0.03 * s,
                "dyn/probe_dH": -0.03,
                "dyn/pred_dH": -0.02,
                "dyn/decile_dH_cum": [-0.01 * i for i in range(10)],
            }
        )
    recs.append({"step": steps, "eval/pass@1": 0.4, "eval/pass@8": 0.85})
    return recs


def test_rl_dynamics_figure_labels_every_axis_and_calls_out_coinciding_lines():
    fig = dynamics_figure(_records())
    assert_readable(fig)
    ax_h, ax_r, ax_c, ax_l = fig.axes[:4]
    for ax in (ax_h, ax_r, ax_c, ax_l):
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
    assert "nats" in ax_h.get_ylabel() and "nats" in ax_l.get_xlabel()
    labels = _legend_labels(fig)
    assert "train accuracy (= train reward)" in labels
    fig = dynamics_figure(_records(same_reward_and_accuracy=False))
    assert "train accuracy" in _legend_labels(fig)


def test_rl_deciles_figure_has_every_decile_tick():
    fig = deciles_figure(_records()[-2])
    assert_readable(fig)
    ax = fig.axes[0]
    assert [int(t) for t in ax.get_xticks()] == list(range(1, 11))
    assert "nats" in ax.get_ylabel()


def test_rl_calibration_figure_has_accuracy_in_its_own_panel():
    recs = [
        {
            "step": s,
            "calib/a/ece": 0.1,
            "calib/a/auroc": 0.6,
            "calib/b/ece": 0.1,
            "calib/b/auroc": 0.7,
            "calib/accuracy": 0.8,
        }
        for s in (0, 10, 20)
    ]
    fig = calibration_figure(recs)
    assert_readable(fig)
    assert len(fig.axes) == 5 and all(ax.get_ylabel() for ax in fig.axes)
    assert "greedy accuracy" in fig.axes[-1].get_title()
    assert "b (= a)" in _legend_labels(fig)  # identical ECE lines
    assert calibration_figure([{"step": 0, "dyn/entropy": 0.1}]) is None


def test_rl_comparison_band_is_the_95pct_t_interval_over_seeds():
    def run(vals):
        return [{"step": s, "dyn/entropy": v} for s, v in enumerate(vals)]

    runs = {
        "GRPO": [run([1.0, 2.0]), run([2.0, 2.0]), run([3.0, 2.0])],
        "KL-Cov": [run([0.5, 0.5])],
    }
    fig = comparison_figure(runs, [("dyn/entropy", "mean token entropy (nats)")])
    assert_readable(fig)
    ax = fig.axes[0]
    (band,) = ax.collections  # GRPO only: one seed gives no band
    ys = band.get_paths()[0].vertices[:, 1]
    half = 4.302652729749464 / math.sqrt(3)  # t(0.975, 2) · sd 1 / √3 at step 0
    assert ys.max() == pytest.approx(2.0 + half) and ys.min() == pytest.approx(2.0 - half)
    assert "band: 95% t-interval over 1/3 seeds" in _legend_labels(fig)
    assert ax.get_ylabel() == "mean token entropy (nats)"


def test_tta_plot_leaves_the_matplotlib_backend_alone(tmp_path):
    from entrolab.tta.stream import StreamResult, stream_plot

    before = matplotlib.get_backend()
    fields = StreamResult.__dataclass_fields__
    base = {name: None for name in fields}
    r = StreamResult(**{**base, "method": "tent", "accuracy": 0.5, "batch_accuracy": [0.5] * 12})
    png = stream_plot([r], tmp_path / "acc.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == before


def test_leash_pass_at_k_figure_reads_json_keys_and_labels_every_k(tmp_path):
    from entrolab.rl.leash_run import _plot, pass_at_k_figure

    table = {"n": 4, "k": 8, "pass_at_k": {"1": [0.5, 0.7], "2": [0.7, 0.8], "8": [1.0, 0.9]}}
    fig = pass_at_k_figure(table)  # str keys, as read back from table.json
    assert_readable(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "8"]
    assert [list(ln.get_ydata()) for ln in ax.get_lines()] == [[0.5, 0.7, 1.0], [0.7, 0.8, 0.9]]
    _plot({**table, "pass_at_k": {1: [0.5, 0.7], 8: [1.0, 0.9]}}, tmp_path / "pass_at_k.png")
    assert (tmp_path / "pass_at_k.png").read_bytes()[:4] == b"\x89PNG"
