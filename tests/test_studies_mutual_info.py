"""Mutual information with consistency checks (B22): bounds, synthetic data, extrapolation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.studies.mutual_info import (
    critic_mi,
    dv_bound,
    extrapolate,
    gaussian_mi_data,
    infonce_bound,
    mi_bound,
    mi_protocol,
    smile_bound,
)


def test_bounds_hand_cases():
    # S = c·I (N = 3, c = 2): InfoNCE = c − log(e^c + 2) + log 3
    s = 2.0 * torch.eye(3, dtype=torch.float64)
    assert float(infonce_bound(s)) == pytest.approx(2 - math.log(math.e**2 + 2) + math.log(3))
    # DV: mean diag 2 − log mean over the 6 off-diagonal e^0 = 2 − 0 = 2
    assert float(dv_bound(s)) == pytest.approx(2.0)
    # SMILE value = DV with off-diagonals clipped: here no clipping → 2; clip at 0.5 of 9 → 0.5
    assert float(smile_bound(s)) == pytest.approx(2.0)
    big = torch.tensor([[1.0, 9.0], [9.0, 1.0]], dtype=torch.float64)
    assert float(smile_bound(big, clip=0.5)) == pytest.approx(1.0 - 0.5)
    # a constant shift of every score leaves InfoNCE and DV unchanged
    r = torch.randn(5, 5, dtype=torch.float64)
    assert float(infonce_bound(r + 3.0)) == pytest.approx(float(infonce_bound(r)))
    assert float(dv_bound(r + 3.0)) == pytest.approx(float(dv_bound(r)))
    with pytest.raises(EntrolabError, match="unknown bound"):
        mi_bound(r, "nwj")
    with pytest.raises(EntrolabError, match="square"):
        mi_bound(torch.zeros(2, 3), "dv")


def test_gaussian_data_has_the_stated_mi():
    # closed-form Gaussian MI of the sample covariance: ½ log(det Σx det Σy / det Σ) → 1 nat
    x, y = gaussian_mi_data(200_000, 6, 3, 1.0, seed=1)
    cov = np.cov(np.concatenate([x, y], axis=1).T)
    _, ld = np.linalg.slogdet(cov)
    _, ldx = np.linalg.slogdet(cov[:6, :6])
    _, ldy = np.linalg.slogdet(cov[6:, 6:])
    assert 0.5 * (ldx + ldy - ld) == pytest.approx(1.0, abs=0.01)
    with pytest.raises(EntrolabError):
        gaussian_mi_data(10, 3, 4, 1.0)


def test_extrapolation_recovers_a_linear_law_and_flags_a_bent_one():
    n = 1200
    # m_k = 1.0 − 240 · k / n = 1 − 0.2 k, with symmetric spread ±0.01 around each mean
    law = {1: [0.8], 2: [0.59, 0.61], 3: [0.39, 0.40, 0.41], 4: [0.19, 0.2, 0.2, 0.21]}
    fit = extrapolate(law, n)
    assert fit.i_inf == pytest.approx(1.0, abs=1e-6) and fit.slope == pytest.approx(-240, rel=1e-5)
    assert fit.low < 1.0 < fit.high and fit.chi2_p == pytest.approx(1.0, abs=1e-6)
    assert "nonlinear" not in fit.flags
    bent = {1: [0.8], 2: [0.79, 0.81], 3: [0.19, 0.2, 0.21], 4: [0.19, 0.2, 0.21, 0.2]}
    assert "nonlinear" in extrapolate(bent, n).flags
    with pytest.raises(EntrolabError, match="≥ 2 parts"):
        extrapolate({1: [0.5], 2: [0.4]}, n)


def test_critic_rejects_bad_input():
    with pytest.raises(EntrolabError, match="paired rows"):
        critic_mi(np.zeros((10, 2)), np.zeros((9, 2)))
    with pytest.raises(EntrolabError, match="NaN"):
        critic_mi(np.full((10, 2), np.nan), np.zeros((10, 2)))
    with pytest.raises(EntrolabError, match="train/test"):
        critic_mi(np.zeros((3, 2)), np.zeros((3, 2)))


@pytest.mark.slow
def test_protocol_covers_the_truth_and_flags_too_few_samples():
    torch.set_num_threads(1)
    x, y = gaussian_mi_data(1024, 10, 2, 1.0, seed=0)
    ok = mi_protocol(x, y)
    assert ok.low <= 1.0 <= ok.high and ok.consistent, ok
    xs, ys = gaussian_mi_data(96, 10, 2, 1.0, seed=0)
    small = mi_protocol(xs, ys)
    assert not small.consistent and not small.low <= 1.0 <= small.high, small
