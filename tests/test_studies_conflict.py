"""Parametric vs context conflict (B19): Δ, the logistic follow curve, prompts, the model run."""

from __future__ import annotations

import numpy as np
import pytest

from entrolab.errors import EntrolabError
from entrolab.studies.conflict import (
    conflict_items,
    fit_follow_curve,
    measure_conflict,
    relative_uncertainty,
)


def test_relative_uncertainty_by_hand():
    # (1 − 3)/(1 + 3) = −0.5; (2 − 0)/2 = 1; both 0 → 0
    np.testing.assert_allclose(relative_uncertainty([1.0, 2.0, 0.0], [3.0, 0.0, 0.0]),
                               [-0.5, 1.0, 0.0])  # fmt: skip
    with pytest.raises(EntrolabError, match="≥ 0"):
        relative_uncertainty([-1.0], [1.0])
    with pytest.raises(EntrolabError, match="same shape"):
        relative_uncertainty([1.0, 2.0], [1.0])


def test_logistic_fit_recovers_a_known_curve():
    # P(follow) = σ(0.5 − 4Δ): b = −4, balance point Δ* = 0.125
    rng = np.random.default_rng(0)
    d = rng.uniform(-1, 1, 600)
    y = (rng.random(600) < 1 / (1 + np.exp(-(0.5 - 4 * d)))).astype(float)
    fit = fit_follow_curve(d, y, n_boot=200)
    assert fit["b_low"] <= -4 <= fit["b_high"] and fit["decreasing"]
    assert fit["balance_low"] <= 0.125 <= fit["balance_high"]
    flat = fit_follow_curve(d, (rng.random(600) < 0.5).astype(float), n_boot=200)
    assert not flat["decreasing"]
    with pytest.raises(EntrolabError, match="0/1"):
        fit_follow_curve([0.1, 0.2, 0.3, 0.4], [0, 1, 2, 1])


def test_conflict_prompts():
    items = conflict_items(6, seed=1)
    assert [(it.digits, it.hint) for it in items[:4]] == [(1, "fact"), (2, "fact"),
                                                          (1, "maybe"), (2, "maybe")]  # fmt: skip
    for it in items:
        assert it.stated != it.truth and abs(it.stated - it.truth) <= 5
        assert it.conflict.endswith(it.closed_book) and str(it.stated) in it.conflict
        assert "p + q" in it.context_only and str(it.stated) in it.context_only
    with pytest.raises(EntrolabError):
        conflict_items(3, hints=("shout",))


@pytest.mark.model
def test_measure_conflict_on_the_embedded_model(smollm):
    rows = measure_conflict(smollm, conflict_items(3, seed=0))
    assert len(rows) == 3
    for r in rows:
        assert r["follow"] in ("context", "memory", "other")
        assert r["h_par"] >= 0 and r["h_ctx"] >= 0 and -1 <= r["delta"] <= 1
