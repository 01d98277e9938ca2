"""entropix-style regimes against a per-row transcription built from transformers' warpers,
threshold fitting against numpy, the best-of-n law; EDT hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation import logits_process as hf

from entrolab.decoding import (
    REGIMES,
    EDTLogitsProcessor,
    EntropixLogitsProcessor,
    EntropixThresholds,
    edt_temperature,
    entropix,
    entropix_regimes,
    entropy_adaptive_temperature,
    fit_entropix_thresholds,
)
from entrolab.decoding.entropix_sampling import _best_of_n_logits
from entrolab.errors import EntrolabError

LN2 = math.log(2)


# ------------------------------------------------------------------ per-row reference (a loop)
def entropy_varentropy(row: torch.Tensor) -> tuple[float, float]:
    logp = torch.log_softmax(row.double(), -1)
    p = logp.exp()
    h = float(-(p * logp).sum())
    return h, float((p * (-logp - h) ** 2).sum())


def regime_of(h: float, v: float, th: EntropixThresholds) -> str:
    if h < th.h_low and v < th.v_low:
        return "lelv"
    if h > th.h_mid and v < th.v_low:
        return "helv"
    if h < th.h_high and v > th.v_high:
        return "lehv"
    if h > th.h_high and v > th.v_high:
        return "hehv"
    return "adaptive"


def entropix_reference(row, th, temperature=0.666, top_k=27, top_p=0.9, min_p=0.0):
    """One row, entropix's branches (attention terms 0) with transformers' own warpers."""
    h, v = entropy_varentropy(row)
    regime = regime_of(h, v, th)
    hv_bits = h / LN2 + v / LN2**2
    t, k, p, mp = temperature, top_k, top_p, min_p
    if regime == "lelv":
        out = torch.full_like(row, float("-inf"))
        out[row.argmax()] = row.max()
        return regime, out
    if regime == "helv":
        t = min(1.5, temperature * 1.3)
    elif regime == "lehv":
        t, k = min(1.5, temperature * 1.2), max(5, int(top_k * 1.5))
    elif regime == "hehv":
        t, p = max(2.0, temperature * 2.0), max(0.5, top_p)
    else:
        t = temperature * (1 + 0.3 * hv_bits)
        k = int(min(max(top_k, 1), 100))
        mp = min(max(0.03 * (1 - 0.5 * hv_bits), 0.01), 0.5)
    z = hf.TemperatureLogitsWarper(float(t))(None, row[None].clone())
    z = hf.TopKLogitsWarper(k)(None, z)
    if p < 1:
        z = hf.TopPLogitsWarper(p)(None, z)
    if mp > 0:
        z = hf.MinPLogitsWarper(mp)(None, z)
    return regime, z[0]


THRESHOLD_SETS = {
    "fixed": EntropixThresholds.fixed(),
    "crafted": EntropixThresholds(h_low=1.0, h_mid=2.0, h_high=2.6, v_low=1.0, v_high=2.0),
}


def rows_covering_regimes() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.05, 0.3, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0]).repeat_interleave(6)
    x = torch.randn(len(scales), 300, generator=g, dtype=torch.float64) * scales[:, None]
    x[::5, 0] += 12.0  # some peaked rows
    return x


@pytest.mark.parametrize("which", ["fixed", "crafted", "fitted"])
def test_entropix_matches_the_per_row_reference(which):
    x = rows_covering_regimes()
    if which == "fitted":
        h, v = zip(*(entropy_varentropy(r) for r in x), strict=True)
        th = fit_entropix_thresholds(list(h), list(v))
    else:
        th = THRESHOLD_SETS[which]
    out = entropix(x, th, n_candidates=1)
    seen = set()
    for r in range(x.shape[0]):
        regime, ref = entropix_reference(x[r], th)
        seen.add(regime)
        assert torch.equal(torch.isfinite(out[r]), torch.isfinite(ref)), (which, r, regime)
        assert torch.allclose(out[r].softmax(-1), ref.softmax(-1), atol=1e-9), (which, r)
    if which == "crafted":  # these thresholds reach every regime on these rows
        assert seen == set(REGIMES)


def test_regimes_first_match_wins():
    th = EntropixThresholds(h_low=1.0, h_mid=2.0, h_high=3.0, v_low=1.0, v_high=2.0)
    cases = [(0.5, 0.5), (2.5, 0.5), (1.5, 0.5), (2.0, 3.0), (4.0, 3.0), (4.0, 1.5), (0.5, 3.0)]
    h = torch.tensor([c[0] for c in cases])
    v = torch.tensor([c[1] for c in cases])
    got = [REGIMES[i] for i in entropix_regimes(h, v, th).tolist()]
    assert got == [regime_of(a, b, th) for a, b in cases]
    assert got == ["lelv", "helv", "adaptive", "lehv", "hehv", "adaptive", "lehv"]


def test_best_of_n_law_hand_computed_and_by_simulation():
    # q = (0.5, 0.3, 0.2), best of n = 2: tails T = (1, 0.5, 0.2) →
    # r = (1 − 0.25, 0.25 − 0.04, 0.04) = (0.75, 0.21, 0.04)
    q = torch.tensor([[0.5, 0.3, 0.2]])
    keep = torch.ones_like(q, dtype=torch.bool)
    r = _best_of_n_logits(q, keep, 2).exp()
    assert torch.allclose(r, torch.tensor([[0.75, 0.21, 0.04]]), atol=1e-7)
    # a restricted set renormalises first: keep (0.5, 0.3) → (0.625, 0.375) → (1 − 0.375², 0.375²)
    r2 = _best_of_n_logits(q, torch.tensor([[True, True, False]]), 2).exp()
    assert torch.allclose(r2[0, :2], torch.tensor([1 - 0.140625, 0.140625]), atol=1e-7)
    # best (lowest rank) of 5 draws, simulated: within 4 standard errors of the law
    g = torch.Generator().manual_seed(1)
    probs = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.05])
    draws = torch.multinomial(probs.repeat(20000, 1), 5, replacement=True, generator=g)
    freq = torch.bincount(draws.min(-1).values, minlength=5).double() / 20000
    law = _best_of_n_logits(probs[None], torch.ones(1, 5, dtype=torch.bool), 5).exp()[0].double()
    assert torch.all((freq - law).abs() <= 4 * (law * (1 - law) / 20000).sqrt() + 1e-3)


def test_entropix_best_of_n_applies_to_the_adaptive_regime_only():
    x = rows_covering_regimes()
    th = THRESHOLD_SETS["crafted"]
    one, five = entropix(x, th, n_candidates=1), entropix(x, th, n_candidates=5)
    h, v = zip(*(entropy_varentropy(r) for r in x), strict=True)
    regimes = entropix_regimes(torch.tensor(h), torch.tensor(v), th)
    assert torch.equal(torch.isfinite(one), torch.isfinite(five))  # same kept sets
    adaptive = regimes == REGIMES.index("adaptive")
    assert torch.equal(one[~adaptive], five[~adaptive])
    q = one[adaptive].softmax(-1)
    order = q.argsort(-1, descending=True)
    qs, keep = q.gather(-1, order), torch.isfinite(one[adaptive]).gather(-1, order)
    expected = _best_of_n_logits(qs, keep, 5).exp()
    assert torch.allclose(five[adaptive].softmax(-1).gather(-1, order), expected, atol=1e-9)


def test_processor_reports_regimes():
    proc = EntropixLogitsProcessor(THRESHOLD_SETS["crafted"], n_candidates=1)
    x = rows_covering_regimes().float()
    proc(None, x)
    d = proc.diagnostics()
    h, v = zip(*(entropy_varentropy(r) for r in x), strict=True)
    expected = [REGIMES.index(regime_of(a, b, proc.thresholds)) for a, b in zip(h, v, strict=True)]
    assert d["regime"].tolist() == expected
    assert (d["kept"][d["regime"] == 0] == 1).all()  # LELV is greedy


# ------------------------------------------------------------------------ threshold fitting
def test_fit_thresholds_against_numpy_quantiles():
    g = np.random.default_rng(0)
    h, v = g.gamma(2.0, 1.0, 500), g.gamma(3.0, 2.0, 500)
    q = {"h_low": 0.2, "h_mid": 0.6, "h_high": 0.9, "v_low": 0.25, "v_high": 0.75}
    th = fit_entropix_thresholds(h, v, q)
    expected = [*np.quantile(h, [0.2, 0.6, 0.9]), *np.quantile(v, [0.25, 0.75])]
    assert list(th.to_dict().values()) == pytest.approx(expected, rel=1e-12)
    # a list of per-trace tensors is concatenated
    parts = [torch.tensor(h[:200]), torch.tensor(h[200:])]
    vparts = [torch.tensor(v[:100]), torch.tensor(v[100:])]
    assert fit_entropix_thresholds(parts, vparts, q) == th


@pytest.mark.parametrize(
    "args,match",
    [
        (([1.0, 2.0], [1.0]), "one pair per token"),
        (([], []), "empty"),
        (([1.0, float("nan")], [1.0, 2.0]), "NaN"),
        (([1.0], [1.0], {"h_lo": 0.1}), "unknown quantile keys"),
        (([1.0], [1.0], {"h_low": 0.9, "h_mid": 0.5}), "ordered"),
        (([1.0], [1.0], {"v_high": 1.5}), "v_high"),
    ],
)
def test_fit_thresholds_rejects_bad_input(args, match):
    with pytest.raises(EntrolabError, match=match):
        fit_entropix_thresholds(*args)


def test_thresholds_validate_and_convert_bits():
    fixed = EntropixThresholds.fixed()
    # entropix: 0.1 / 3 / 5 bits → ×ln 2 nats; 0.1 / 5 bits² → ×ln² 2 nats²
    assert fixed.h_mid == pytest.approx(3 * 0.693147, rel=1e-6)
    assert fixed.v_high == pytest.approx(5 * 0.480453, rel=1e-6)
    with pytest.raises(EntrolabError, match="ordered"):
        EntropixThresholds(2.0, 1.0, 3.0, 0.1, 1.0)
    with pytest.raises(EntrolabError, match="finite"):
        EntropixThresholds(-1.0, 1.0, 3.0, 0.1, 1.0)
    with pytest.raises(EntrolabError, match="missing"):
        EntropixThresholds.from_value({"h_low": 1.0})


# -------------------------------------------------------------------------------------- EDT
def test_edt_hand_computed():
    # p = (2/3, 1/3): H = ln 3 − (2/3) ln 2 = 0.636514 nats
    # T = 0.8^(1/0.636514) = exp(ln 0.8 / 0.636514) = exp(−0.350571) = 0.704286
    # logits (ln 2, 0)/T → p'_1 = σ(0.693147/0.704286) = σ(0.984185) = 0.727938
    x = torch.tensor([[math.log(2.0), 0.0]])
    h = torch.tensor([math.log(3) - 2 / 3 * math.log(2)])
    assert edt_temperature(h).item() == pytest.approx(0.704286, abs=1e-6)
    out = entropy_adaptive_temperature(x)
    assert out.softmax(-1)[0, 0].item() == pytest.approx(0.727938, abs=1e-6)
    # θ = 0.5, t0 = 1.5: T = 1.5·0.8^(0.5/0.636514) = 1.258826 → p'_1 = σ(0.550636) = 0.634282
    out2 = EDTLogitsProcessor(theta=0.5, t0=1.5)(x)
    assert out2.softmax(-1)[0, 0].item() == pytest.approx(0.634282, abs=1e-6)


def test_edt_confident_steps_become_greedy_and_uniform_stays_uniform():
    x = torch.tensor([[60.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    out = entropy_adaptive_temperature(x)
    # row 0: H ≈ 2·61·e^-60 ≈ 1e-24 → T = 0.8^(1/H) = 0 → greedy, no NaN
    assert torch.isfinite(out[0]).tolist() == [True, False, False]
    assert torch.allclose(out[1].softmax(-1), torch.full((3,), 1 / 3))
    assert edt_temperature(torch.tensor([0.0])).item() == 0.0
    with pytest.raises(EntrolabError, match="theta"):
        EDTLogitsProcessor(theta=0.0)


@given(h1=st.floats(1e-3, 20.0), h2=st.floats(1e-3, 20.0), theta=st.floats(0.05, 3.0))
@settings(max_examples=50, deadline=None)
def test_edt_temperature_rises_with_entropy_towards_t0(h1, h2, theta):
    lo, hi = sorted((h1, h2))
    t = edt_temperature(torch.tensor([lo, hi], dtype=torch.float64), theta=theta, t0=1.3)
    assert 0 <= t[0] <= t[1] <= 1.3
