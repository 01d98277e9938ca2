"""MI(hidden; correctness) estimator (B22 toolkit use) on synthetic data with known MI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from entrolab.errors import EntrolabError
from entrolab.studies.hidden_mi import binary_gaussian_data, binary_gaussian_mi, layer_mi

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_exact_binary_gaussian_mi_hand_cases_and_monte_carlo():
    assert binary_gaussian_mi(0.0) == pytest.approx(0.0, abs=1e-9)  # no signal
    assert binary_gaussian_mi(40.0) == pytest.approx(math.log(2), abs=1e-6)  # separable: H(Y)
    # unequal prior, far apart: H(Y) = −(.2 log .2 + .8 log .8)
    h = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    assert binary_gaussian_mi(40.0, prior=0.2) == pytest.approx(h, abs=1e-6)
    # Monte Carlo of E[log p(y|x) / p(y)] with the true posterior, δ = 2, π = ½
    rng = np.random.default_rng(0)
    y = rng.random(400_000) < 0.5
    x = rng.standard_normal(y.size) + np.where(y, 1.0, -1.0)
    post = norm.pdf(x - 1) / (norm.pdf(x - 1) + norm.pdf(x + 1))
    mc = np.mean(np.log(np.where(y, post, 1 - post) / 0.5))
    assert binary_gaussian_mi(2.0) == pytest.approx(mc, abs=0.004)
    with pytest.raises(EntrolabError):
        binary_gaussian_mi(1.0, prior=1.0)


def test_layer_mi_covers_the_truth_and_finds_none_where_there_is_none():
    truth = binary_gaussian_mi(2.0)  # ≈ 0.337 nats
    x, y = binary_gaussian_data(800, 12, 2.0, seed=1)
    r = layer_mi(x, y, splits=3, epochs=20, n_boot=100, pca_dim=8, seed=0)
    assert r["low"] <= truth <= r["high"]
    assert abs(r["estimate"] - truth) < 0.15  # a lower bound: below the truth, not far
    assert r["h_y"] == pytest.approx(math.log(2), abs=0.01)
    x0, y0 = binary_gaussian_data(400, 12, 0.0, seed=2)
    r0 = layer_mi(x0, y0, splits=3, epochs=20, n_boot=100, pca_dim=8, seed=0)
    assert r0["estimate"] < 0.05 and r0["low"] <= 0.0 + 1e-9


def test_layer_mi_rejects_bad_input():
    x = np.zeros((40, 3))
    with pytest.raises(EntrolabError, match="0/1"):
        layer_mi(x, np.arange(40.0))
    with pytest.raises(EntrolabError, match="got"):
        layer_mi(x, np.zeros(39))
    with pytest.raises(EntrolabError, match="too few"):
        layer_mi(np.zeros((20, 3)), np.zeros(20))
