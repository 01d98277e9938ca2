"""compare-samplers summaries carry intervals and a paired Δ against the baseline sampler."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from entrolab.evaluation.sampler_compare import CompareResults
from entrolab.evaluation.sampler_report import _cell, render_compare_html
from entrolab.evaluation.sampler_summary import summarize_cell


def _rows(sampler: str, correct: list[list[bool]], temperature: float = 1.0) -> list[dict]:
    return [
        {
            "cell": f"{sampler}@T={temperature:g}",
            "sampler": sampler,
            "temperature": temperature,
            "index": i,
            "id": str(i),
            "prompt": f"q{i}",
            "answer": "1",
            "responses": ["1" if c else "2" for c in cs],
            "parsed": ["1" if c else "2" for c in cs],
            "keys": ["1" if c else "2" for c in cs],
            "correct": cs,
            "kept": [None] * len(cs),
            "retained_mass": [None] * len(cs),
            "entropy_after": [None] * len(cs),
            "entropy": [1.0] * len(cs),
            "tokens": [3] * len(cs),
            "seconds": 0.1,
        }
        for i, cs in enumerate(correct)
    ]


def test_summary_intervals_hand_case():
    # 4 items × 2 samples: per-item rates 1, .5, 0, 1 → pass@1 .625; pass@k = 3/4 solved
    s = summarize_cell(_rows("plain", [[True, True], [True, False], [False, False], [True, True]]))
    assert s["pass1"] == pytest.approx(0.625)
    assert s["pass1_low"] <= 0.625 <= s["pass1_high"] and 0.0 <= s["pass1_low"]
    ref = scipy.stats.binomtest(3, 4).proportion_ci(method="exact")
    assert (s["passk_low"], s["passk_high"]) == pytest.approx((ref.low, ref.high))


def test_paired_delta_against_the_baseline_at_the_same_temperature():
    rng = np.random.default_rng(0)
    n = 60
    base = rng.random((n, 4)) < 0.4
    better = base | (rng.random((n, 4)) < 0.5)  # never worse on any sample
    same = base.copy()
    rows = (
        _rows("plain", base.tolist())
        + _rows("good", better.tolist())
        + _rows("same", same.tolist())
    )
    cfg = {"samplers": ["plain", "good", "same"], "temperatures": [1.0], "task": "t", "n": n,
           "samples": 4, "model": None}  # fmt: skip
    table = {r["sampler"]: r for r in CompareResults(cfg, rows).table()}
    assert "delta_pass1" not in table["plain"]
    g = table["good"]
    assert g["vs"] == "plain"
    assert g["delta_pass1"] == pytest.approx(better.mean() - base.mean())
    assert g["delta_low"] > 0.0 and g["delta_p"] < 0.01
    assert _cell(g, "delta_pass1", "+.3f").endswith("]")  # significant: no "n.s."
    z = table["same"]
    assert z["delta_pass1"] == 0.0 and z["delta_p"] == 1.0
    assert _cell(z, "delta_pass1", "+.3f").endswith("n.s.")
    page = render_compare_html(CompareResults(cfg, rows))
    assert "Clopper" in page and "n.s." in page and "Δ vs baseline" in page
