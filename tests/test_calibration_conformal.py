"""Learn-then-Test selective risk control: hand-computed p-values and the guarantee, checked over
many random calibration/test splits of synthetic data with a known risk curve."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binom

from entrolab.calibration import SelectiveRiskThreshold, fit_selective_risk
from entrolab.calibration.conformal import ltt_pvalues
from entrolab.errors import EntrolabError


def _draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """s ~ U(0, 1), correct ~ Bernoulli(s): R(τ) = P(wrong | s ≥ τ) = (1 − τ) / 2."""
    s = rng.random(n)
    return s, (rng.random(n) < s).astype(np.int64)


def test_pvalues_by_hand() -> None:
    # scores [0.9, 0.8, 0.7, 0.6], wrong [0, 0, 1, 0].
    # λ = 0.75: answers {0.9, 0.8}, 0 wrong → p = P(Bin(2, 0.1) ≤ 0) = 0.9² = 0.81.
    # λ = 0.65: answers 3, 1 wrong → p = P(Bin(3, 0.1) ≤ 1) = 0.9³ + 3·0.1·0.9² = 0.972.
    # λ = 0.95: answers none → p = 1.
    s = np.array([0.9, 0.8, 0.7, 0.6])
    wrong = np.array([0.0, 0.0, 1.0, 0.0])
    p, n, k = ltt_pvalues(s, wrong, np.array([0.75, 0.65, 0.95, 0.6]), 0.1)
    np.testing.assert_allclose(p, [0.81, 0.972, 1.0, binom.cdf(1, 4, 0.1)], rtol=1e-12)
    assert n.tolist() == [2, 3, 0, 4] and k.tolist() == [0, 1, 0, 1]


def test_threshold_by_hand_single_chain() -> None:
    # 100 items: scores 0.01 … 1.00, the 10 lowest wrong. Grid [0, 0.5, 1] (strict → loose:
    # 1.0, 0.5, 0.0), one chain at level δ = 0.2, α = 0.2.
    # λ = 1.0: n = 1, k = 0 → p = 0.8 > 0.2 → the chain stops at once: abstain on everything.
    # With grid [0, 0.5]: λ = 0.5 → n = 51, k = 0 → p = 0.8⁵¹ ≈ 1.1e-5 ✓;
    # λ = 0 → n = 100, k = 10 → p = P(Bin(100, 0.2) ≤ 10) ≈ 0.0057 ✓ → τ̂ = 0, coverage 1.
    s = np.arange(1, 101) / 100
    y = (s > 0.10).astype(int)
    first = fit_selective_risk(s, y, alpha=0.2, delta=0.2, grid=[0.0, 0.5, 1.0], n_starts=1)
    assert first.abstains_all and not first.predict([0.99, 1.0]).any()
    both = fit_selective_risk(s, y, alpha=0.2, delta=0.2, grid=[0.0, 0.5], n_starts=1)
    assert both.threshold == 0.0 and both.coverage == 1.0 and both.calibration_risk == 0.1
    assert both.p_value == pytest.approx(binom.cdf(10, 100, 0.2), rel=1e-12)
    # two chains (δ/2 = 0.1 each) skip the uncertifiable strict end
    two = fit_selective_risk(s, y, alpha=0.2, delta=0.2, grid=[0.0, 0.5, 1.0], n_starts=2)
    assert two.threshold == 0.0


def test_guarantee_holds_over_random_splits() -> None:
    alpha, delta, reps = 0.2, 0.1, 300
    rng = np.random.default_rng(0)
    true_risk, test_risk, coverage, abstained = [], [], [], 0
    for _ in range(reps):
        s, y = _draw(rng, 1000)
        res = fit_selective_risk(s, y, alpha=alpha, delta=delta)
        s_test, y_test = _draw(rng, 2000)
        accept = res.predict(s_test)
        coverage.append(accept.mean())
        if res.abstains_all:  # allowed (answers nothing, risk 0 by convention) but rare here
            abstained += 1
            true_risk.append(0.0)
            test_risk.append(0.0)
            continue
        true_risk.append((1 - res.threshold) / 2)
        test_risk.append(1 - y_test[accept].mean())
    true_risk, test_risk = np.array(true_risk), np.array(test_risk)
    # P(R(τ̂) > α) ≤ δ, with 3 binomial standard errors of slack for 300 repetitions
    assert np.mean(true_risk > alpha) <= delta + 3 * np.sqrt(delta * (1 - delta) / reps)
    # average test selective risk ≤ α (+ Monte-Carlo slack: sd of a 2000-item estimate ≈ 0.02)
    assert test_risk.mean() <= alpha + 0.005
    # not trivial: the best possible coverage at α = 0.2 is 0.4 (τ* = 0.6)
    assert 0.2 < np.mean(coverage) <= 0.4 + 0.01
    assert abstained / reps < 0.05


def test_naive_plugin_threshold_violates_more_often() -> None:
    # Control for the test above: picking the loosest λ whose *empirical* risk ≤ α breaks the
    # guarantee about half the time, so the LTT check is not vacuous.
    rng = np.random.default_rng(1)
    grid = np.linspace(0, 1, 201)
    bad = 0
    for _ in range(200):
        s, y = _draw(rng, 1000)
        _, n, k = ltt_pvalues(s, 1.0 - y, grid, 0.1)
        ok = (n > 0) & (k <= 0.1 * n)
        bad += (1 - grid[ok].min()) / 2 > 0.1
    assert bad / 200 > 0.3


def test_round_trip_and_errors() -> None:
    rng = np.random.default_rng(2)
    s, y = _draw(rng, 500)
    res = fit_selective_risk(s, y, alpha=0.15)
    back = SelectiveRiskThreshold.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back == res
    none = fit_selective_risk([0.9, 0.8], [1, 1], alpha=0.05)
    assert none.abstains_all and none.to_dict()["threshold"] is None
    assert SelectiveRiskThreshold.from_dict(none.to_dict()).abstains_all
    with pytest.raises(EntrolabError, match=r"needs scores in \[0, 1\]"):
        fit_selective_risk(s * 3, y)
    unbounded = fit_selective_risk(np.log(s), y, alpha=0.3, grid="calibration")
    assert unbounded.threshold <= 0 and 0 < unbounded.coverage < 1
    with pytest.raises(EntrolabError, match="alpha"):
        fit_selective_risk(s, y, alpha=0.0)
    with pytest.raises(EntrolabError, match="NaN"):
        fit_selective_risk([0.5, np.nan], [1, 0])
