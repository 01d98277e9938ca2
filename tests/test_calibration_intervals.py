"""Intervals and paired tests (calibration/intervals.py, calibration/comparison.py).

References: scipy.stats.bootstrap (same draws → same interval), scipy.stats.binomtest's exact
interval, and the fast DeLong of yandexdataschool/roc_comparison (compare_auc_delong_xu.py,
after Sun & Xu 2014) transcribed below.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.calibration import ace, auroc, brier, ece
from entrolab.calibration.comparison import (
    delong_covariance,
    delong_interval,
    delong_test,
    mcnemar_exact,
    paired_bootstrap,
    paired_mean_difference,
    rank_tiers,
)
from entrolab.calibration.intervals import (
    _auroc_rows,
    _binned_l1_rows,
    accuracy_interval,
    bootstrap_indices,
    bootstrap_interval,
    clopper_pearson,
    metric_interval,
)
from entrolab.errors import EntrolabError

# ---- reference: fast DeLong (roc_comparison, no-weights path), transcribed --------------------


def _ref_compute_midrank(x):
    J = np.argsort(x)
    Z = x[J]
    N = len(x)
    T = np.zeros(N, dtype=float)
    i = 0
    while i < N:
        j = i
        while j < N and Z[j] == Z[i]:
            j += 1
        T[i:j] = 0.5 * (i + j - 1)
        i = j
    T2 = np.empty(N, dtype=float)
    T2[J] = T + 1
    return T2


def _ref_fast_delong(predictions_sorted_transposed, label_1_count):
    m = label_1_count
    n = predictions_sorted_transposed.shape[1] - m
    positive_examples = predictions_sorted_transposed[:, :m]
    negative_examples = predictions_sorted_transposed[:, m:]
    k = predictions_sorted_transposed.shape[0]
    tx = np.empty([k, m], dtype=float)
    ty = np.empty([k, n], dtype=float)
    tz = np.empty([k, m + n], dtype=float)
    for r in range(k):
        tx[r, :] = _ref_compute_midrank(positive_examples[r, :])
        ty[r, :] = _ref_compute_midrank(negative_examples[r, :])
        tz[r, :] = _ref_compute_midrank(predictions_sorted_transposed[r, :])
    aucs = tz[:, :m].sum(axis=1) / m / n - float(m + 1.0) / 2.0 / n
    v01 = (tz[:, :m] - tx[:, :]) / n
    v10 = 1.0 - (tz[:, m:] - ty[:, :]) / m
    sx = np.cov(v01)
    sy = np.cov(v10)
    delongcov = sx / m + sy / n
    return aucs, delongcov


def _ref_calc_pvalue(aucs, sigma):
    l_ = np.array([[1, -1]])
    z = np.abs(np.diff(aucs)) / np.sqrt(np.dot(np.dot(l_, sigma), l_.T))
    return np.log10(2) + scipy.stats.norm.logsf(z, loc=0, scale=1) / np.log(10)


def _ref_delong_roc_test(ground_truth, predictions_one, predictions_two):
    order = (-ground_truth).argsort()
    label_1_count = int(ground_truth.sum())
    predictions_sorted_transposed = np.vstack((predictions_one, predictions_two))[:, order]
    aucs, delongcov = _ref_fast_delong(predictions_sorted_transposed, label_1_count)
    return aucs, delongcov, _ref_calc_pvalue(aucs, delongcov)


# ---- DeLong -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_delong_matches_reference_transcription(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    y = (rng.random(n) < rng.uniform(0.2, 0.8)).astype(float)
    y[:2], y[2:4] = 1.0, 0.0
    # correlated scorings; rounding creates ties on even seeds
    a = y * rng.uniform(0.2, 1.5) + rng.normal(size=n)
    b = 0.6 * a + y * rng.uniform(0.0, 1.0) + rng.normal(size=n)
    if seed % 2 == 0:
        a, b = np.round(a, 1), np.round(b, 0)
    ref_aucs, ref_cov, ref_log10p = _ref_delong_roc_test(y, a, b)
    aucs, cov = delong_covariance([a, b], y)
    np.testing.assert_allclose(aucs, ref_aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-10, atol=1e-15)
    # delong_test takes uncertainties (higher = worse): u = -score gives the same AUROCs
    res = delong_test(-a, -b, y)
    assert res.p_value == pytest.approx(10 ** float(ref_log10p.squeeze()), rel=1e-10, abs=1e-10)
    assert res.estimate_a == pytest.approx(auroc(a, y), abs=1e-12)
    assert res.difference == pytest.approx(ref_aucs[0] - ref_aucs[1], abs=1e-12)


def test_delong_hand_case_and_identical_scorings():
    # positives score 3, 2; negatives 1, 2 → pairs (3>1, 3>2, 2>1, 2=2 → ½): AUC = 3.5/4
    s, y = np.array([3.0, 2.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0, 0.0])
    aucs, _ = delong_covariance([s], y)
    assert aucs[0] == pytest.approx(0.875)
    same = delong_test(-s, -s, y)
    assert same.p_value == 1.0 and same.difference == 0.0 and same.low == same.high == 0.0
    iv = delong_interval(-s, y)
    assert 0.0 <= iv.low <= 0.875 <= iv.high <= 1.0


def test_delong_needs_two_per_class():
    with pytest.raises(EntrolabError, match="at least 2 items of each class"):
        delong_test([0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [1, 0, 0])
    with pytest.raises(EntrolabError, match="one value per item"):
        delong_test([0.1, 0.2, 0.3, 0.4], [0.3, 0.2], [1, 1, 0, 0])


# ---- bootstrap vs scipy.stats.bootstrap -------------------------------------------------------


@pytest.mark.parametrize("method", ["percentile", "basic", "bca"])
def test_bootstrap_equals_scipy_with_same_draws(method):
    rng = np.random.default_rng(3)
    n = 120
    y = (rng.random(n) < 0.6).astype(float)
    c = np.clip(0.5 + 0.3 * (y - 0.5) + 0.2 * rng.normal(size=n), 0, 1)
    for stat in (brier, lambda c, y: auroc(c, y), lambda c, y: ece(c, y, n_bins=10)):
        ours = bootstrap_interval(stat, c, y, n_boot=400, method=method, seed=11)
        ref = scipy.stats.bootstrap(
            (c, y),
            stat,
            paired=True,
            vectorized=False,
            n_resamples=400,
            method=method,
            rng=np.random.default_rng(11),
        )
        assert ours.low == pytest.approx(ref.confidence_interval.low, rel=1e-12, abs=1e-14)
        assert ours.high == pytest.approx(ref.confidence_interval.high, rel=1e-12, abs=1e-14)
        assert ours.estimate == pytest.approx(stat(c, y), rel=1e-12)


def test_vectorized_auroc_rows_equal_scalar_auroc():
    rng = np.random.default_rng(0)
    u = np.round(rng.normal(size=(50, 30)), 1)  # ties
    y = (rng.random((50, 30)) < 0.5).astype(float)
    y[:, 0], y[:, 1] = 1.0, 0.0
    rows = _auroc_rows(u, y)
    np.testing.assert_allclose(rows, [auroc(-u[b], y[b]) for b in range(50)], rtol=0, atol=1e-13)
    one_class = _auroc_rows(u[:1], np.ones((1, 30)))
    assert np.isnan(one_class[0])


def test_vectorized_ece_and_ace_rows_equal_the_metric_functions():
    rng = np.random.default_rng(1)
    c = rng.random((40, 25))
    c[:, :3] = [0.0, 1.0, 1 / 15]  # edge cases: 0, exactly 1 (torchmetrics' own bin), an edge
    y = (rng.random((40, 25)) < c).astype(float)
    ece_rows = _binned_l1_rows("torchmetrics")(c, y)
    ace_rows = _binned_l1_rows("netcal_ace")(c, y)
    for b in range(40):
        assert ece_rows[b] == pytest.approx(ece(c[b], y[b], preset="torchmetrics"), abs=1e-14)
        assert ace_rows[b] == pytest.approx(ace(c[b], y[b]), abs=1e-14)


def test_stratified_indices_keep_class_counts_and_members():
    y = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 0])
    idx = bootstrap_indices(10, strata=y, n_boot=200, seed=1)
    assert idx.shape == (200, 10)
    # positions of a stratum only ever hold members of that stratum
    assert np.all(y[idx] == y[None, :])
    # and every member gets drawn somewhere (5 members, 200 × 5 draws)
    assert set(idx[:, y == 1].ravel().tolist()) == {0, 2, 3, 7, 8}


@given(
    st.lists(st.booleans(), min_size=6, max_size=40).filter(lambda v: 2 <= sum(v) <= len(v) - 2),
    st.integers(0, 10_000),
)
@settings(max_examples=25, deadline=None)
def test_metric_interval_contains_replicate_range(correct, seed):
    y = np.array(correct, dtype=float)
    u = np.random.default_rng(seed).normal(size=y.size)
    iv = metric_interval("auroc", u, y, n_boot=200, seed=seed)
    assert 0.0 <= iv.low <= iv.high <= 1.0
    assert iv.estimate == pytest.approx(auroc(-u, y))


def _coverage(n_draws: int, n_pos: int, n_neg: int, d: float, n_boot: int) -> float:
    """Share of draws whose stratified 95% AUROC interval covers the true AUROC Φ(d/√2)."""
    true_auc = scipy.stats.norm.cdf(d / np.sqrt(2.0))
    rng = np.random.default_rng(2024)
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    hits = 0
    for i in range(n_draws):
        # binormal: confidence of correct items ~ N(d, 1), of wrong ones ~ N(0, 1); u = -conf
        conf = np.r_[rng.normal(d, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)]
        iv = metric_interval("auroc", -conf, y, n_boot=n_boot, seed=i)
        hits += iv.contains(true_auc)
    return hits / n_draws


def test_bootstrap_auroc_coverage_is_nominal():
    # 300 synthetic draws of 60 correct + 60 wrong items, true AUROC Φ(1/√2) ≈ 0.760
    cover = _coverage(300, 60, 60, 1.0, 1000)
    assert 0.92 <= cover <= 0.98, cover


# ---- exact binomial ---------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (27, 40), (1, 1), (57, 200)])
def test_clopper_pearson_matches_scipy(k, n):
    iv = clopper_pearson(k, n)
    ref = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert iv.low == pytest.approx(ref.low, abs=1e-12)
    assert iv.high == pytest.approx(ref.high, abs=1e-12)
    assert iv.estimate == k / n


def test_clopper_pearson_hand_case_and_errors():
    # k = 0: high solves (1 − p)^n = α/2 → 1 − 0.025^(1/10) = 0.30849710...
    assert clopper_pearson(0, 10).high == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-12)
    assert accuracy_interval([1, 0, 1, 1]).estimate == 0.75
    with pytest.raises(EntrolabError, match="cannot exceed"):
        clopper_pearson(5, 4)
    with pytest.raises(EntrolabError, match="level"):
        clopper_pearson(1, 4, level=95)
    with pytest.raises(EntrolabError, match="0/1"):
        accuracy_interval([1, 0.5])


# ---- paired tests -----------------------------------------------------------------------------


def test_mcnemar_hand_case():
    # A right and B wrong on 8 items, the reverse on 1, both right on 11:
    # p = 2 · P(X ≥ 8 | X ~ Bin(9, ½)) = 2 · (9 + 1) / 512 = 0.0390625
    a = np.r_[np.ones(8), np.zeros(1), np.ones(11)]
    b = np.r_[np.zeros(8), np.ones(1), np.ones(11)]
    res = mcnemar_exact(a, b)
    assert res.p_value == pytest.approx(0.0390625, abs=1e-12)
    assert res.difference == pytest.approx(7 / 20)
    assert res.low <= 0.35 <= res.high and res.low > 0.0
    assert mcnemar_exact(a, a).p_value == 1.0


def test_paired_bootstrap_separates_real_and_null_differences():
    rng = np.random.default_rng(5)
    n = 200
    y = (rng.random(n) < 0.5).astype(float)
    good = -(y + 0.7 * rng.normal(size=n))  # uncertainty: lower for correct items
    noise = rng.normal(size=n)
    strong = paired_bootstrap("auroc", good, noise, y, n_boot=1000)
    assert strong.difference > 0.2 and strong.p_value < 0.01 and strong.low > 0.0
    null = paired_bootstrap("auroc", good, good + 1e-9 * rng.normal(size=n), y, n_boot=500)
    assert null.p_value > 0.5 and null.low <= 0.0 <= null.high
    # agrees in direction and rough size with DeLong on the same data
    dl = delong_test(good, noise, y)
    assert dl.p_value < 0.01 and dl.difference == pytest.approx(strong.difference, abs=1e-12)


def test_paired_bootstrap_rejects_stratifying_different_labels():
    with pytest.raises(EntrolabError, match="stratify"):
        paired_bootstrap("auroc", [1, 2, 3, 4], [4, 3, 2, 1], [1, 0, 1, 0], correct_b=[0, 1, 1, 0])
    with pytest.raises(EntrolabError, match="unknown metric"):
        paired_bootstrap("f1", [1, 2], [2, 1], [1, 0])


def test_rank_tiers_contiguous_ties_with_the_leader():
    # A ≈ B (p .3), A ≠ C (p .01) → C leads tier 3; C ≈ D → D tier 3; C ≠ E → E tier 5
    p = {("A", "B"): 0.3, ("A", "C"): 0.01, ("C", "D"): 0.2, ("C", "E"): 0.001}
    tiers = rank_tiers(["A", "B", "C", "D", "E"], lambda a, b: p[(a, b)])
    assert tiers == {"A": 1, "B": 1, "C": 3, "D": 3, "E": 5}
    assert rank_tiers(["A", "B"], lambda a, b: float("nan")) == {"A": 1, "B": 2}


def test_paired_mean_difference_uses_the_pairing():
    # b = a − 0.1 on every item: the paired difference is exactly 0.1 in every replicate, so
    # the interval is [0.1, 0.1] and p = 0, although the items' spread is wide (unpaired SE .2)
    rng = np.random.default_rng(0)
    a = rng.random(50)
    res = paired_mean_difference(a, a - 0.1, n_boot=300)
    assert res.difference == pytest.approx(0.1)
    assert res.low == pytest.approx(0.1) and res.high == pytest.approx(0.1)
    assert res.p_value == 0.0
    same = paired_mean_difference(a, a, n_boot=300)
    assert same.p_value == 1.0 and same.low == same.high == 0.0
