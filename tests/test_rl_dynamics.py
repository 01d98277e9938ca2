"""Entropy-dynamics monitor: realised probe-set entropy change, per-decile change, predicted vs
realised change from the covariance term, and the running fit of R = −a·e^H + b."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.errors import EntrolabError
from entrolab.rl.dynamics import EntropyMonitor, binned_change, entropy_change

# Two probe responses: 3 tokens and 2 tokens (third position is padding, value ignored).
BEFORE = torch.tensor([[0.1, 0.5, 0.9], [1.3, 2.0, 7.0]])
AFTER = torch.tensor([[0.2, 0.4, 0.9], [1.0, 2.5, -9.0]])
MASK = torch.tensor([[True, True, True], [True, True, False]])


def test_entropy_change_scripted_case():
    c = entropy_change(BEFORE, AFTER, MASK, bins=2)
    # mean before (0.1 + 0.5 + 0.9 + 1.3 + 2.0) / 5 = 0.96; after (0.2+0.4+0.9+1.0+2.5)/5 = 1.0
    assert c.mean_before == pytest.approx(0.96, abs=1e-6)
    assert c.mean_after == pytest.approx(1.0, abs=1e-6)
    assert c.delta == pytest.approx(0.04, abs=1e-6)
    # per-token changes sorted by entropy before: 0.1→+0.1, 0.5→−0.1, 0.9→0, 1.3→−0.3, 2.0→+0.5
    # two bins of 3 and 2 tokens: mean(0.1, −0.1, 0) = 0, mean(−0.3, 0.5) = 0.1
    assert c.bin_count == [3, 2]
    assert c.bin_delta == pytest.approx([0.0, 0.1], abs=1e-6)
    five = entropy_change(BEFORE, AFTER, MASK, bins=5)
    assert five.bin_delta == pytest.approx([0.1, -0.1, 0.0, -0.3, 0.5], abs=1e-6)
    # more bins than tokens: the extra bins are empty (None), never NaN
    ten = entropy_change(BEFORE, AFTER, MASK, bins=10)
    assert ten.bin_count == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert ten.bin_delta[5:] == [None] * 5


def test_bins_follow_a_reference_entropy():
    # bin by a reference in which the second row is the low-entropy one
    ref = torch.tensor([[5.0, 6.0, 7.0], [1.0, 2.0, 0.0]])
    c = entropy_change(BEFORE, AFTER, MASK, bins=5, reference=ref)
    # sorted by reference: (1,0)→−0.3, (1,1)→+0.5, (0,0)→+0.1, (0,1)→−0.1, (0,2)→0
    assert c.bin_delta == pytest.approx([-0.3, 0.5, 0.1, -0.1, 0.0], abs=1e-6)


def test_entropy_change_errors():
    with pytest.raises(EntrolabError, match="same shape"):
        entropy_change(BEFORE, AFTER[:, :2], MASK)
    with pytest.raises(EntrolabError, match="must be bool"):
        entropy_change(BEFORE, AFTER, MASK.float())
    with pytest.raises(EntrolabError, match="no response tokens"):
        entropy_change(BEFORE, AFTER, torch.zeros_like(MASK))
    bad = AFTER.clone()
    bad[0, 0] = math.nan
    with pytest.raises(EntrolabError, match="NaN"):
        entropy_change(BEFORE, bad, MASK)
    bad[0, 0] = 0.2
    bad[1, 2] = math.nan  # NaN in padding is ignored
    assert entropy_change(BEFORE, bad, MASK).delta == pytest.approx(0.04, abs=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=40), st.integers(1, 12))
def test_binned_change_weighted_mean_is_the_overall_mean(values, bins):
    key = torch.tensor(values, dtype=torch.float64)
    delta = torch.sin(key * 3.0)
    means, counts = binned_change(delta, key, bins)
    assert sum(counts) == len(values)
    total = sum(m * n for m, n in zip(means, counts, strict=True) if n)
    assert total / len(values) == pytest.approx(float(delta.mean()), abs=1e-9)
    # plain-Python reference: stable sort by key, then chunks of n // bins (+1 for the first
    # n % bins chunks)
    pairs = sorted(zip(values, delta.tolist(), strict=True), key=lambda p: p[0])
    n = len(values)
    sizes = [n // bins + (1 if i < n % bins else 0) for i in range(bins)]
    start = 0
    for size, mean in zip(sizes, means, strict=True):
        chunk = [d for _, d in pairs[start : start + size]]
        start += size
        assert (mean is None) == (size == 0)
        if chunk:
            assert mean == pytest.approx(sum(chunk) / len(chunk), abs=1e-12)


def _probe(h: float) -> torch.Tensor:
    return torch.tensor([[h]])


ONE = torch.tensor([[True]])


def test_monitor_predicted_vs_realised_scripted():
    m = EntropyMonitor(bins=1, law_min_points=3)
    # step 1: cov 0.2, probe entropy 1.0 → 0.9 (ΔH = −0.1): no history, so no prediction yet
    r1 = m.update(
        entropy=2.0,
        reward=0.1,
        covariance=0.2,
        probe_before=_probe(1.0),
        probe_after=_probe(0.9),
        probe_mask=ONE,
    )
    assert r1["dyn/probe_dH"] == pytest.approx(-0.1, abs=1e-6)
    assert r1["dyn/pred_dH"] is None and r1["dyn/eta_hat"] is None
    assert r1["dyn/sign_agree"] == 1.0  # sign(−0.2) = sign(−0.1)
    # step 2: η̂ from step 1 = (−0.2·−0.1)/(0.2²) = 0.5; cov −0.1 predicts +0.05; realised +0.05
    r2 = m.update(
        entropy=1.8,
        reward=0.3,
        covariance=-0.1,
        probe_before=_probe(0.9),
        probe_after=_probe(0.95),
        probe_mask=ONE,
    )
    assert r2["dyn/eta_hat"] == pytest.approx(0.5)
    assert r2["dyn/pred_dH"] == pytest.approx(0.05)
    assert r2["dyn/probe_dH"] == pytest.approx(0.05, abs=1e-6)
    # step 3: η̂ = (0.02 + 0.1·0.05)/(0.04 + 0.01) = 0.5 → predicts −0.15; realised +0.02
    r3 = m.update(
        entropy=1.5,
        reward=0.5,
        covariance=0.3,
        probe_before=_probe(0.95),
        probe_after=_probe(0.97),
        probe_mask=ONE,
    )
    assert r3["dyn/eta_hat"] == pytest.approx(0.5)
    assert r3["dyn/pred_dH"] == pytest.approx(-0.15)
    assert r3["dyn/sign_agree"] == pytest.approx(2 / 3)  # steps 1, 2 agree; step 3 does not
    ref = np.corrcoef([-0.2, 0.1, -0.3], [-0.1, 0.05, 0.02])[0, 1]
    assert r3["dyn/pred_corr"] == pytest.approx(ref, abs=1e-5)
    # the law is fitted once 3 points are in: compare with numpy's least squares of R on e^H
    slope, intercept = np.polyfit(np.exp([2.0, 1.8, 1.5]), [0.1, 0.3, 0.5], 1)
    assert r3["law/a"] == pytest.approx(-slope, rel=1e-9)
    assert r3["law/b"] == pytest.approx(intercept, rel=1e-9)
    assert r3["law/ceiling"] == pytest.approx(intercept + slope, rel=1e-9)
    assert r2["law/a"] is None


def test_monitor_cumulative_deciles_and_state_round_trip():
    m = EntropyMonitor(bins=5, law_min_points=3)
    m.set_reference(BEFORE)
    mid = BEFORE + 0.05
    m.update(
        entropy=1.0,
        reward=0.0,
        covariance=0.1,
        probe_before=BEFORE,
        probe_after=mid,
        probe_mask=MASK,
    )
    state = json.loads(json.dumps(m.state_dict()))  # checkpoints store it as JSON
    m2 = EntropyMonitor()
    m2.load_state_dict(state)
    kwargs = dict(
        entropy=0.8,
        reward=0.2,
        covariance=0.05,
        probe_before=mid,
        probe_after=AFTER,
        probe_mask=MASK,
    )
    a, b = m.update(**kwargs), m2.update(**kwargs)
    assert a == b
    # cumulative: AFTER − BEFORE per step-0 bin (one token each, sorted by BEFORE)
    assert a["dyn/decile_dH_cum"] == pytest.approx([0.1, -0.1, 0.0, -0.3, 0.5], abs=1e-6)
    assert a["dyn/probe_dH_cum"] == pytest.approx(0.04, abs=1e-6)
    # this step's own change: AFTER − (BEFORE + 0.05)
    assert a["dyn/probe_dH"] == pytest.approx(0.04 - 0.05, abs=1e-6)


def test_monitor_without_probe_still_fits_the_law():
    m = EntropyMonitor(law_min_points=3)
    for h, r in [(1.0, 0.2), (1.0, 0.3), (1.0, 0.4)]:
        out = m.update(entropy=h, reward=r, covariance=0.0)
    assert "dyn/probe_dH" not in out
    assert out["law/a"] is None  # all entropies equal: a is not identifiable, no crash
    out = m.update(entropy=0.5, reward=0.6, covariance=0.0)
    assert out["law/a"] is not None and math.isfinite(out["law/r2"])
