"""Differential-entropy tools vs scipy and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from entrolab.errors import EntrolabError
from entrolab.signals import (
    gaussian_entropy,
    knn_entropy,
    mixture_entropy_bounds,
    mixture_entropy_mc,
    sample_entropy,
)


def test_gaussian_entropy_vs_scipy_random_covariances():
    rng = np.random.default_rng(0)
    for d in (1, 2, 5):
        a = rng.normal(size=(4, d, d))
        covs = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(d)
        ours = gaussian_entropy(covs)
        ref = [stats.multivariate_normal(np.zeros(d), c).entropy() for c in covs]
        np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_gaussian_entropy_hand_case_and_errors():
    # d = 1, σ² = 1: ½ log(2πe) = 1.4189385 nats
    assert gaussian_entropy([[1.0]]) == pytest.approx(0.5 * math.log(2 * math.pi * math.e))
    with pytest.raises(EntrolabError, match="positive definite"):
        gaussian_entropy(np.zeros((2, 2)))
    with pytest.raises(EntrolabError, match="symmetric"):
        gaussian_entropy([[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(EntrolabError, match="square"):
        gaussian_entropy(np.ones((2, 3)))


def test_mixture_bounds_bracket_monte_carlo():
    w = np.array([0.3, 0.7])
    means = np.array([[0.0, 0.0], [1.0, 0.5]])
    covs = np.stack([np.eye(2), 0.5 * np.eye(2)])
    lo, hi = mixture_entropy_bounds(w, means, covs)
    # lower = 0.3·h(I) + 0.7·h(0.5 I) = h(I) + 0.7 log 0.5; H(w) = −0.3 ln .3 − 0.7 ln .7 = 0.6109
    h_i = math.log(2 * math.pi * math.e)
    assert lo == pytest.approx(h_i + 0.7 * math.log(0.5), abs=1e-12)
    assert hi - lo == pytest.approx(-(0.3 * math.log(0.3) + 0.7 * math.log(0.7)), abs=1e-12)
    est, se = mixture_entropy_mc(w, means, covs, n=20000, seed=1)
    assert lo - 4 * se <= est <= hi + 4 * se
    # far-apart components: entropy → upper bound
    far, se2 = mixture_entropy_mc(w, means * 100, covs, n=20000, seed=2)
    assert far == pytest.approx(hi, abs=5 * se2 + 1e-3)
    with pytest.raises(EntrolabError, match="sum to 1"):
        mixture_entropy_bounds([0.5, 0.6], means, covs)
    with pytest.raises(EntrolabError, match="mismatched"):
        mixture_entropy_bounds(w, means[:, :1], covs)


def test_sample_entropy_matches_scipy_and_truth():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2.0, size=(4000, 3))
    h_true = 0.5 * math.log(2 * math.pi * math.e * 4.0)  # σ = 2 per marginal
    ours = sample_entropy(x, "ebrahimi")
    np.testing.assert_allclose(ours, stats.differential_entropy(x, method="ebrahimi"), rtol=1e-12)
    np.testing.assert_allclose(ours, h_true, atol=0.05)
    # joint kNN of 3 independent N(0, 4): 3 · h_true
    assert knn_entropy(x, k=3) == pytest.approx(3 * h_true, abs=0.1)
    assert sample_entropy(x, "knn") == pytest.approx(knn_entropy(x))
    with pytest.raises(EntrolabError, match="duplicate"):
        knn_entropy(np.zeros((10, 2)))
    with pytest.raises(EntrolabError, match="unknown method"):
        sample_entropy(x, "nope")
