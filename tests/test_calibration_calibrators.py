"""Calibrators against scikit-learn / scipy, hand-computed cases, JSON round-trip, cross-fitting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from entrolab.calibration import (
    CALIBRATORS,
    Calibrator,
    HistogramBinning,
    IsotonicCalibrator,
    PlattScaling,
    TemperatureScaling,
    calibrator_from_dict,
    cross_fit,
    ece,
    fit_transform_split,
)
from entrolab.calibration.nonparametric import pav
from entrolab.errors import EntrolabError, UnknownNameError


def _overconfident(seed: int, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Scores in (0, 1) whose true accuracy is σ(logit(s) / 2.5): overconfident."""
    rng = np.random.default_rng(seed)
    s = expit(rng.normal(scale=3.0, size=n))
    y = (rng.random(n) < expit(logit(s) / 2.5)).astype(np.int64)
    return s, y


def _lr(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> LogisticRegression:
    return LogisticRegression(C=1e12, tol=1e-14, max_iter=10_000, solver="newton-cholesky").fit(
        x[:, None], y, sample_weight=w
    )


# ---------------------------------------------------------------- temperature
def test_temperature_matches_scipy_minimiser() -> None:
    s, y = _overconfident(0)
    cal = TemperatureScaling().fit(s, y)
    z = logit(np.clip(s, 1e-6, 1 - 1e-6))

    def mean_nll(log_t: float) -> float:
        p = expit(z / np.exp(log_t))
        return -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))

    ref = minimize_scalar(mean_nll, bounds=(-5, 5), method="bounded", options={"xatol": 1e-12})
    assert cal.temperature == pytest.approx(np.exp(ref.x), rel=1e-6)
    assert 2.0 < cal.temperature < 3.1  # data generated with T = 2.5
    np.testing.assert_allclose(cal.transform(s), expit(z / cal.temperature), rtol=1e-12)


def test_temperature_edge_cases() -> None:
    # all scores ½ → logit 0 → T irrelevant, set to 1; exact 0 and 1 are clipped by eps.
    assert TemperatureScaling().fit([0.5, 0.5], [0, 1]).temperature == 1.0
    cal = TemperatureScaling(eps=1e-3).fit([0.0, 1.0, 0.3, 0.8], [0, 1, 1, 0])
    out = cal.transform([0.0, 1.0])
    np.testing.assert_allclose(out, expit(logit([1e-3, 1 - 1e-3]) / cal.temperature), rtol=1e-12)
    # perfectly separating scores → the lower bound; anti-informative → the upper bound.
    assert TemperatureScaling().fit([0.2, 0.8], [0, 1]).temperature == 1e-3
    assert TemperatureScaling().fit([0.2, 0.8], [1, 0]).temperature == 1e3
    with pytest.raises(EntrolabError, match=r"\[0, 1\]"):
        TemperatureScaling().fit([0.5, 2.0], [0, 1])


# ---------------------------------------------------------------- Platt
def test_platt_matches_sklearn_logistic_regression() -> None:
    rng = np.random.default_rng(1)
    s = rng.normal(size=500) * 3 + 1  # unbounded scores, e.g. −perplexity
    y = (rng.random(500) < expit(0.7 * s - 0.5)).astype(np.int64)
    plain = PlattScaling(target_smoothing=False).fit(s, y)
    ref = _lr(s, y)
    assert plain.a == pytest.approx(ref.coef_[0, 0], rel=1e-9)
    assert plain.b == pytest.approx(ref.intercept_[0], rel=1e-9)
    # Platt's smoothed targets t = (N+ + 1)/(N+ + 2), 1/(N− + 2) = logistic regression where
    # each item counts as label 1 with weight t and label 0 with weight 1 − t.
    smooth = PlattScaling().fit(s, y)
    n_pos, n_neg = y.sum(), (1 - y).sum()
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    ref2 = _lr(np.r_[s, s], np.r_[np.ones(500), np.zeros(500)], np.r_[t, 1 - t])
    assert smooth.a == pytest.approx(ref2.coef_[0, 0], rel=1e-9)
    assert smooth.b == pytest.approx(ref2.intercept_[0], rel=1e-9)
    np.testing.assert_allclose(smooth.transform(s), ref2.predict_proba(s[:, None])[:, 1], rtol=1e-9)


def test_platt_separable_and_constant() -> None:
    with pytest.raises(EntrolabError, match="target_smoothing=True"):
        PlattScaling(target_smoothing=False).fit([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    # smoothing keeps it finite: the fit is a steep but finite sigmoid
    cal = PlattScaling().fit([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert np.isfinite(cal.a) and cal.a > 0
    # constant scores: slope 0, intercept = logit of the mean (smoothed) target.
    # y = [1, 1, 0]: t = [3/4, 3/4, 1/3] → mean 11/18.
    const = PlattScaling().fit([2.0, 2.0, 2.0], [1, 1, 0])
    assert const.a == 0.0 and const.b == pytest.approx(logit(11 / 18), rel=1e-12)


# ---------------------------------------------------------------- isotonic
def test_pav_by_hand() -> None:
    # [3, 1, 2] → pool all: mean 2; [1, 3, 2] → pool the last two: 2.5;
    # weights: [1 (w 3), 0 (w 1)] → (3·1 + 1·0) / 4 = 0.75.
    np.testing.assert_allclose(pav(np.array([3.0, 1, 2]), np.ones(3)), [2, 2, 2])
    np.testing.assert_allclose(pav(np.array([1.0, 3, 2]), np.ones(3)), [1, 2.5, 2.5])
    np.testing.assert_allclose(pav(np.array([1.0, 0]), np.array([3.0, 1])), [0.75, 0.75])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_isotonic_matches_sklearn(seed: int) -> None:
    s, y = _overconfident(seed)
    s = np.round(s, 2)  # ties in the scores
    cal = IsotonicCalibrator().fit(s, y)
    ref = IsotonicRegression(out_of_bounds="clip").fit(s, y)
    new = np.r_[np.linspace(-0.5, 1.5, 401), s]  # inside, between and outside the fitted range
    new_unit = np.clip(new, 0.0, 1.0)
    np.testing.assert_allclose(cal.transform(new), ref.predict(new), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(cal.transform(new_unit), ref.predict(new_unit), rtol=1e-12)
    assert np.all(np.diff(cal.transform(np.sort(new))) >= 0)


# ---------------------------------------------------------------- histogram binning
def test_histogram_binning_by_hand() -> None:
    # 8 scores, 2 equal-mass bins split at the median 0.45: bin 0 = {.1, .2, .3, .4} with
    # labels 0, 0, 1, 0 → 1/4; bin 1 = {.5, .6, .7, .8} all correct → 1.
    # prior_strength m = 2, p̄ = 5/8: (1 + 2·5/8)/(4 + 2) = 0.375 and (4 + 1.25)/6 = 0.875.
    s = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    y = [0, 0, 1, 0, 1, 1, 1, 1]
    raw = HistogramBinning(n_bins=2).fit(s, y)
    np.testing.assert_allclose(raw.edges_, [0.45])
    np.testing.assert_allclose(raw.transform([0.0, 0.44, 0.45, 9.0]), [0.25, 0.25, 1.0, 1.0])
    smooth = HistogramBinning(n_bins=2, prior_strength=2.0).fit(s, y)
    np.testing.assert_allclose(smooth.transform([0.2, 0.7]), [0.375, 0.875], rtol=1e-12)


# ---------------------------------------------------------------- interface
@pytest.mark.parametrize("name", ["temperature", "platt", "isotonic", "histogram"])
def test_json_round_trip_and_unfitted_error(name: str) -> None:
    s, y = _overconfident(3)
    cal = CALIBRATORS.get(name)()
    with pytest.raises(EntrolabError, match=r"not fitted; call \.fit"):
        cal.transform(s)
    cal.fit(s, y)
    text = json.dumps(cal.to_dict())
    back = Calibrator.from_dict(json.loads(text))
    assert type(back) is type(cal) and back.params() == cal.params()
    np.testing.assert_array_equal(back.transform(s), cal.transform(s))
    out = cal.transform(s)
    assert out.min() >= 0 and out.max() <= 1
    unfitted = calibrator_from_dict(json.loads(json.dumps(cal.clone().to_dict())))
    assert not unfitted.is_fitted


def test_calibrator_errors() -> None:
    with pytest.raises(UnknownNameError, match="Known calibrators: temperature, platt"):
        calibrator_from_dict({"calibrator": "beta", "params": {}, "state": None})
    with pytest.raises(UnknownNameError, match="Known calibrators"):
        CALIBRATORS.get("betta")
    with pytest.raises(EntrolabError, match=r"2 NaN"):
        IsotonicCalibrator().fit([0.1, np.nan, np.nan, 0.5], [0, 1, 1, 1])
    cal = IsotonicCalibrator().fit([0.1, np.nan, 0.5], [0, 1, 1], nan_policy="omit")
    with pytest.raises(EntrolabError, match="NaN"):
        cal.transform([0.2, np.nan])
    with pytest.raises(EntrolabError, match="0/1"):
        PlattScaling().fit([0.1, 0.2], [0, 0.5])


# ---------------------------------------------------------------- cross-fitting
def test_leave_one_out_cross_fit_is_out_of_sample() -> None:
    # with n_folds = N each item's confidence comes from a model fitted on all the others
    s, y = _overconfident(4, n=40)
    oof = cross_fit(s, y, "platt", n_folds=40)
    for i in (0, 7, 39):
        keep = np.arange(40) != i
        ref = PlattScaling().fit(s[keep], y[keep]).transform(s[i : i + 1])[0]
        assert oof[i] == pytest.approx(ref, rel=1e-9)


def test_cross_fit_improves_calibration_out_of_sample() -> None:
    s, y = _overconfident(5, n=2000)
    before = ece(s, y)
    for name in ("temperature", "platt", "isotonic", "histogram"):
        after = ece(cross_fit(s, y, name, n_folds=5, seed=0), y)
        assert after < before / 2, (name, before, after)


def test_fit_transform_split() -> None:
    s, y = _overconfident(6, n=300)
    res = fit_transform_split(s, y, TemperatureScaling(eps=1e-4), fit_fraction=0.3, seed=1)
    assert np.intersect1d(res.fit_index, res.eval_index).size == 0
    assert res.fit_index.size + res.eval_index.size == 300
    assert abs(res.fit_index.size - 90) <= 1
    # stratified: both parts keep the overall accuracy (±1 item per class)
    assert abs(y[res.fit_index].mean() - y.mean()) < 0.02
    ref = TemperatureScaling(eps=1e-4).fit(s[res.fit_index], y[res.fit_index])
    np.testing.assert_array_equal(res.confidences, ref.transform(s[res.eval_index]))
    with pytest.raises(EntrolabError, match="fit_fraction"):
        fit_transform_split(s, y, fit_fraction=1.0)
    with pytest.raises(EntrolabError, match="n_folds"):
        cross_fit(s[:3], y[:3], n_folds=5)
