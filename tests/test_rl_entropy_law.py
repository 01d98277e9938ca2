"""Entropy mechanism maths: covariance proxy, first-order entropy change, law fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.rl.entropy_law import (
    OnlineEntropyLawFit,
    covariance_proxy,
    fit_entropy_law,
    predicted_entropy_change,
    realised_entropy_change,
    softmax_pg_logit_step,
)

# --- covariance proxy ---------------------------------------------------------------------


def test_covariance_proxy_hand_computed() -> None:
    # A = [3, 1, −3, −1] (mean 0); ℓ = [−0.1, −2.1, −0.1, −2.1] (mean −1.1, centred ±1)
    # c = A·(ℓ − ℓ̄) = [3·1, 1·(−1), −3·1, −1·(−1)] = [3, −1, −3, 1]; the padding slot is 0
    lp = torch.tensor([[-0.1, -2.1, -0.1, -2.1, float("nan")]], dtype=torch.float64)
    adv = torch.tensor([[3.0, 1.0, -3.0, -1.0, 7.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, True, False]])
    c = covariance_proxy(lp, adv, mask)
    torch.testing.assert_close(c, torch.tensor([[3.0, -1.0, -3.0, 1.0, 0.0]], dtype=torch.float64))


def test_covariance_proxy_mean_is_numpy_covariance() -> None:
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(3, 6, generator=g, dtype=torch.float64) * 3
    adv = torch.randn(3, 1, generator=g, dtype=torch.float64).expand(3, 6)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False
    c = covariance_proxy(lp, adv, mask)
    ref = np.cov(adv[mask].numpy(), lp[mask].numpy(), bias=True)[0, 1]
    assert float(c.sum() / mask.sum()) == pytest.approx(ref, rel=1e-12)


def test_covariance_proxy_custom_means() -> None:
    lp = torch.tensor([[-1.0, -2.0]])
    adv = torch.tensor([[1.0, -1.0]])
    c = covariance_proxy(
        lp, adv, torch.ones(1, 2, dtype=torch.bool), mean_logprob=0.0, mean_advantage=0.0
    )
    torch.testing.assert_close(c, torch.tensor([[-1.0, 2.0]]))  # A·ℓ with zero means


# --- first-order entropy change -----------------------------------------------------------


def _entropy(z: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(z, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def test_predicted_change_is_autograd_directional_derivative() -> None:
    g = torch.Generator().manual_seed(1)
    z = (torch.randn(4, 3, 11, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    d = torch.randn(4, 3, 11, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(_entropy(z).sum(), z)
    expected = (grad * d).sum(-1)
    torch.testing.assert_close(
        predicted_entropy_change(z, d, chunk_rows=5), expected, rtol=1e-10, atol=1e-12
    )


def test_realised_change_matches_direct_entropies() -> None:
    z = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])
    zn = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    # H(1/2, 1/2) = log 2; H(1/4, 3/4) = −(¼ log ¼ + ¾ log ¾) = 0.5623351446188083
    h2 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    out = realised_entropy_change(z, zn)
    torch.testing.assert_close(
        out, torch.tensor([h2 - math.log(2), math.log(2) - h2], dtype=torch.float64)
    )


@pytest.mark.parametrize("natural", [False, True])
def test_covariance_law_error_shrinks_like_step_squared(natural: bool) -> None:
    """ΔH ≈ −Cov(log π, Δz) to first order: the error of the prediction is O(η²)."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(16, 40, generator=g, dtype=torch.float64) * 1.5
    adv = torch.randn(16, 40, generator=g, dtype=torch.float64)
    errors = []
    for lr in (0.2, 0.1, 0.05, 0.025):
        dz = softmax_pg_logit_step(z, adv, lr, natural=natural)
        pred = predicted_entropy_change(z, dz)
        real = realised_entropy_change(z, z + dz)
        errors.append(float((real - pred).abs().sum()))
        rel = errors[-1] / float(real.abs().sum())
    # the first-order term dominates at the smallest step: relative error ∝ η, a few % here
    assert rel < 0.06
    ratios = [errors[i] / errors[i + 1] for i in range(len(errors) - 1)]
    for r in ratios:  # halving η quarters the error (second-order remainder)
        assert 3.5 < r < 4.5, ratios


def test_pg_step_is_exact_gradient_and_matches_paper_covariances() -> None:
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 9, generator=g, dtype=torch.float64).requires_grad_(True)
    adv = torch.randn(5, 9, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((torch.softmax(z, -1) * adv).sum(), z)
    lr = 0.3
    torch.testing.assert_close(softmax_pg_logit_step(z, adv, lr), lr * grad, rtol=1e-12, atol=0)
    # paper: ΔH ≈ −η·Cov_π(log π, π·A) (vanilla), −η·Cov_π(log π, A) (natural), A centred
    zd = z.detach()
    p = torch.softmax(zd, -1)
    logp = torch.log_softmax(zd, -1)
    a = adv - (p * adv).sum(-1, keepdim=True)

    def cov(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (p * x * y).sum(-1) - (p * x).sum(-1) * (p * y).sum(-1)

    torch.testing.assert_close(
        predicted_entropy_change(zd, softmax_pg_logit_step(zd, adv, lr)),
        -lr * cov(logp, p * a),
        rtol=1e-10,
        atol=1e-14,
    )
    torch.testing.assert_close(
        predicted_entropy_change(zd, softmax_pg_logit_step(zd, adv, lr, natural=True)),
        -lr * cov(logp, a),
        rtol=1e-10,
        atol=1e-14,
    )


def test_confident_positive_advantage_lowers_entropy() -> None:
    # raising the logit of the already most likely action (high log π, A > 0) must lower H
    z = torch.tensor([[2.0, 0.0, -1.0]])
    dz = torch.tensor([[0.1, 0.0, 0.0]])
    assert float(predicted_entropy_change(z, dz)) < 0
    assert float(realised_entropy_change(z, z + dz)) < 0


def test_entropy_change_rejects_bad_input() -> None:
    with pytest.raises(EntrolabError, match="must match"):
        predicted_entropy_change(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(EntrolabError, match="NaN/inf"):
        realised_entropy_change(torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2))


# --- law fit ------------------------------------------------------------------------------


def test_fit_recovers_exact_coefficients() -> None:
    h = np.linspace(0.2, 2.0, 30)
    r = -0.3 * np.exp(h) + 1.2
    fit = fit_entropy_law(h, r)
    assert fit.a == pytest.approx(0.3, rel=1e-12)
    assert fit.b == pytest.approx(1.2, rel=1e-12)
    assert fit.ceiling == pytest.approx(0.9, rel=1e-12)  # b − a
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.n == 30
    assert fit.predict(0.0) == pytest.approx(0.9, rel=1e-12)


def test_fit_with_noise_matches_numpy_polyfit() -> None:
    rng = np.random.default_rng(0)
    h = rng.uniform(0.1, 1.5, 200)
    r = -0.25 * np.exp(h) + 0.95 + rng.normal(0, 0.02, 200)
    fit = fit_entropy_law(torch.tensor(h), torch.tensor(r))
    slope, intercept = np.polyfit(np.exp(h), r, 1)
    assert fit.a == pytest.approx(-slope, rel=1e-9)
    assert fit.b == pytest.approx(intercept, rel=1e-9)
    assert fit.a == pytest.approx(0.25, abs=0.02)
    resid = r - (slope * np.exp(h) + intercept)
    assert fit.r2 == pytest.approx(
        1 - (resid @ resid) / ((r - r.mean()) @ (r - r.mean())), rel=1e-9
    )
    assert 0.8 < fit.r2 < 1.0


def test_online_fit_equals_batch_fit_and_checkpoints() -> None:
    rng = np.random.default_rng(1)
    h = rng.uniform(0.0, 2.0, 50)
    r = -0.4 * np.exp(h) + 2.0 + rng.normal(0, 0.05, 50)
    online = OnlineEntropyLawFit()
    for i, (hi, ri) in enumerate(zip(h, r, strict=True)):
        online.update(hi, ri)
        if i == 24:
            restored = OnlineEntropyLawFit()
            restored.load_state_dict(online.state_dict())
            online = restored
    batch, inc = fit_entropy_law(h, r), online.fit()
    assert inc.a == pytest.approx(batch.a, rel=1e-10)
    assert inc.b == pytest.approx(batch.b, rel=1e-10)
    assert inc.r2 == pytest.approx(batch.r2, rel=1e-10)
    assert inc.n == 50


def test_fit_errors() -> None:
    with pytest.raises(EntrolabError, match="≥ 2"):
        fit_entropy_law([1.0], [0.5])
    with pytest.raises(EntrolabError, match="not identifiable"):
        fit_entropy_law([1.0, 1.0, 1.0], [0.1, 0.2, 0.3])
    with pytest.raises(EntrolabError, match="NaN"):
        fit_entropy_law([1.0, float("nan")], [0.1, 0.2])
    with pytest.raises(EntrolabError, match="pair"):
        fit_entropy_law([1.0, 2.0], [0.1])
    online = OnlineEntropyLawFit()
    with pytest.raises(EntrolabError, match="finite"):
        online.update(float("inf"), 0.0)
    with pytest.raises(EntrolabError, match="≥ 2"):
        online.fit()
