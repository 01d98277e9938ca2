"""Intervals and ties in the eval table, terminal summary and HTML report (no model needed)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from entrolab.calibration import auroc, clopper_pearson, delong_test, metric_interval
from entrolab.evaluation.core import results_from_rows
from entrolab.evaluation.report import (
    cell,
    print_summary,
    rank_label,
    reading_lines,
    render_eval_html,
)


def _results(n: int = 160, seed: int = 1):
    """Synthetic run: 'strong' separates correct items well, 'close' is strong plus a little
    noise (tied with it), 'noise' is pure noise (at chance), 'partial' has NaN on a third."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.55
    strong = -(2.0 * y + rng.normal(size=n))
    close = strong + 0.05 * rng.normal(size=n)
    noise = rng.normal(size=n)
    partial = np.where(rng.random(n) < 0.33, np.nan, strong + 0.8 * rng.normal(size=n))
    u = {"strong": strong, "close": close, "noise": noise, "partial": partial}
    rows = [
        {
            "index": i,
            "correct": bool(y[i]),
            "reason": "ok",
            "u": {k: (None if np.isnan(v[i]) else float(v[i])) for k, v in u.items()},
        }
        for i in range(n)
    ]
    config = {"task": "synthetic", "samples": 1, "estimators_run": list(u)}
    return results_from_rows(config, rows), u, y.astype(float)


def test_table_intervals_match_the_calibration_functions():
    res, u, y = _results()
    rows = {r["name"]: r for r in res.table(ci=0.95, n_boot=500)}
    s = rows["strong"]
    iv = metric_interval("auroc", u["strong"], y, n_boot=500, seed=0)
    assert s["auroc"] == pytest.approx(auroc(-u["strong"], y))
    assert (s["auroc_low"], s["auroc_high"]) == pytest.approx((iv.low, iv.high))
    for key in ("prr", "aurc", "ece", "brier"):
        assert s[f"{key}_low"] <= s[key] <= s[f"{key}_high"], key
    # partial: scored only on its finite items
    keep = ~np.isnan(u["partial"])
    ivp = metric_interval("auroc", u["partial"][keep], y[keep], n_boot=500, seed=0)
    assert rows["partial"]["auroc_low"] == pytest.approx(ivp.low)
    assert rows["partial"]["n"] == int(keep.sum())
    # plain table without intervals
    assert "auroc_low" not in res.table(ci=None)[0]


def test_ties_and_chance_are_marked():
    res, u, y = _results()
    rows = res.table(ci=0.95, n_boot=300)
    by = {r["name"]: r for r in rows}
    assert rows[0]["name"] in {"strong", "close"}
    leader = rows[0]["name"]
    other = "close" if leader == "strong" else "strong"
    # strong and close differ by noise only: DeLong p ≥ 0.05 → same tier
    p = delong_test(u[leader], u[other], y).p_value
    assert p >= 0.05 and by[other]["tier"] == 1 and by[other]["p_vs_leader"] == pytest.approx(p)
    # seed 1: AUROCs .956 / .955 / .891 / .493 → tiers 1, 1, 3, 4; the pure-noise estimator
    # leads its own tier and is not distinguishable from chance
    assert [r["name"] for r in rows][2:] == ["partial", "noise"]
    assert by["partial"]["tier"] == 3 and by["noise"]["tier"] == 4
    assert by["noise"]["auroc_vs_chance"] == "not significant"
    assert by[leader]["auroc_vs_chance"] == "above"
    assert rank_label(by[other], 2) == "=1" and rank_label(by[leader], 1) == "1"
    lines = reading_lines(rows)
    assert "excludes chance" in lines[0] and leader in lines[0]
    assert "distinguishable groups" in lines[1]


def test_reading_says_not_significant_when_nothing_beats_chance():
    rng = np.random.default_rng(3)
    n = 40
    y = rng.random(n) < 0.5
    rows = [
        {
            "index": i,
            "correct": bool(y[i]),
            "reason": "ok",
            "u": {"a": float(rng.normal()), "b": float(rng.normal())},
        }
        for i in range(n)
    ]
    res = results_from_rows({"task": "t", "samples": 1, "estimators_run": ["a", "b"]}, rows)
    table = res.table(ci=0.95, n_boot=300)
    lines = reading_lines(table)
    assert "NOT distinguishable from chance" in lines[0]
    assert "no ranking is significant" in lines[1]
    assert cell(table[0], "auroc").endswith("†")


def test_cell_format_and_terminal_and_html_show_intervals():
    row = {"auroc": 0.7123, "auroc_low": 0.61, "auroc_high": 0.8, "auroc_vs_chance": "above"}
    assert cell(row, "auroc") == "0.712 [.61,.80]"
    assert cell({"prr": -0.1, "prr_low": -0.35, "prr_high": 0.12}, "prr") == "-0.100 [-.35,.12]"
    assert cell({"ece": None}, "ece") == "–"
    res, _, y = _results(n=80)
    buf = io.StringIO()
    print_summary(res, Console(file=buf, width=200, color_system=None))
    out = buf.getvalue()
    acc = clopper_pearson(int(y.sum()), y.size)
    assert f"[{acc.low:.2f}, {acc.high:.2f}]" in out  # exact interval on the accuracy
    assert "bootstrap interval over the 80 items" in out and "=1" in out
    page = render_eval_html(res)
    assert "p vs leader" in page and "excludes chance" in page and "Clopper" in page
    js = res.to_dict()
    assert js["accuracy_interval"]["method"] == "clopper-pearson"
    assert "auroc_low" in js["table"][0]


def test_exclude_leaves_estimators_out_and_rejects_unknown_names(tiny_backend):
    from entrolab.errors import UnknownNameError
    from entrolab.evaluation import evaluate

    slow = ["ptrue", "verbalized_1stage", "verbalized_2stage", "linguistic_1stage"]
    res = evaluate(tiny_backend, n=2, samples=2, max_new_tokens=3, exclude=slow)
    ran = res.config["estimators_run"]
    assert not set(slow) & set(ran) and "msp" in ran
    with pytest.raises(UnknownNameError, match="not_an_estimator"):
        evaluate(tiny_backend, n=2, samples=2, max_new_tokens=3, exclude=["not_an_estimator"])
