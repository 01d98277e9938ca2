"""pareto output side: exact accuracy intervals, error bars and paired comparisons."""

from __future__ import annotations

import pytest
import scipy.stats

from entrolab.inference.pareto import paired_comparisons, pareto_svg, points_from_rows


def _rows(strategy: str, budget: int, correct: list[bool], tokens: list[int]) -> list[dict]:
    return [
        {
            "strategy": strategy,
            "budget": budget,
            "item_id": f"i{i}",
            "answer": "1" if c else "2",
            "correct": c,
            "generated_tokens": t,
            "prompt_tokens": 5,
            "num_traces": budget,
            "meta": {},
        }
        for i, (c, t) in enumerate(zip(correct, tokens, strict=True))
    ]


def test_points_carry_exact_intervals_and_the_plot_draws_error_bars():
    rows = _rows("majority", 4, [True] * 7 + [False] * 3, [40] * 10)
    (point,) = points_from_rows(rows)
    ref = scipy.stats.binomtest(7, 10).proportion_ci(method="exact")
    assert (point.accuracy_low, point.accuracy_high) == pytest.approx((ref.low, ref.high))
    assert point.accuracy_text() == f"0.700 [{ref.low:.2f}, {ref.high:.2f}]"
    assert point.to_dict()["accuracy_low"] == pytest.approx(ref.low)
    svg = pareto_svg([point])
    assert "95% exact CI" in svg


def test_paired_comparisons_hand_case():
    # same 10 items: deepconf right on items 0-7, majority on 0-5 and 8 → discordant 2 (items
    # 6, 7) for deepconf vs 1 (item 8): exact McNemar p = 1 (2 of 3 discordant, Bin(3, ½));
    # tokens 30 vs 40 on every item → paired difference exactly −10
    dc = _rows("deepconf", 8, [i < 8 for i in range(10)], [30] * 10)
    mj = _rows("majority", 8, [i < 6 or i == 8 for i in range(10)], [40] * 10)
    (cmp,) = paired_comparisons(dc + mj, "majority")
    assert cmp["strategy"] == "deepconf" and cmp["vs"] == "majority" and cmp["n"] == 10
    assert cmp["accuracy"]["difference"] == pytest.approx(0.1)
    assert cmp["accuracy"]["p_value"] == pytest.approx(1.0)
    assert cmp["tokens_per_item"]["difference"] == pytest.approx(-10.0)
    assert cmp["tokens_per_item"]["low"] == cmp["tokens_per_item"]["high"] == pytest.approx(-10)
