"""Classifier confidence signals and selectors: hand-computed cases and properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.errors import EntrolabError
from entrolab.signals import (
    SIGNALS,
    Selection,
    compare_select,
    confidence_gain,
    energy_confidence,
    exp_weight,
    label_prob,
    neg_entropy,
    perturbation_drop,
    relative_to_log_k,
    threshold_select,
)


def test_neg_entropy_hand_case():
    # p = (1/2, 1/4, 1/4): H = 1/2 ln 2 + 2 * 1/4 ln 4 = 1.5 ln 2 = 1.0397 nats
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64))
    assert neg_entropy(logits).item() == pytest.approx(-1.5 * math.log(2), abs=1e-12)


def test_energy_hand_case_and_temperature():
    # logsumexp(0, ln 3) = ln(1 + 3) = ln 4; T=2: 2 * logsumexp(0, ln 3 / 2) = 2 ln(1 + sqrt 3)
    z = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    assert energy_confidence(z).item() == pytest.approx(math.log(4.0), abs=1e-12)
    assert energy_confidence(z, 2.0).item() == pytest.approx(2 * math.log(1 + math.sqrt(3)))
    # energy is not shift invariant: + c on every logit adds c
    assert energy_confidence(z + 5).item() == pytest.approx(math.log(4.0) + 5)
    with pytest.raises(EntrolabError, match="temperature"):
        energy_confidence(z, 0.0)


def test_confidence_gain_uses_reference_argmax():
    # reference p_o = (0.6, 0.4) → ŷ = 0; adapted p_a = (0.3, 0.7): gain = 0.3 − 0.6 = −0.3
    ref = torch.log(torch.tensor([[0.6, 0.4]], dtype=torch.float64))
    ada = torch.log(torch.tensor([[0.3, 0.7]], dtype=torch.float64))
    assert confidence_gain(ada, ref).item() == pytest.approx(-0.3, abs=1e-12)
    # with explicit label 1: 0.7 − 0.4 = 0.3
    assert confidence_gain(ada, ref, torch.tensor([1])).item() == pytest.approx(0.3, abs=1e-12)


def test_perturbation_drop_uses_clean_argmax():
    # clean p = (0.1, 0.9) → ŷ = 1; perturbed p = (0.5, 0.5): PLPD = 0.9 − 0.5 = 0.4
    z = torch.log(torch.tensor([[0.1, 0.9]], dtype=torch.float64))
    zp = torch.zeros(1, 2, dtype=torch.float64)
    assert perturbation_drop(z, zp).item() == pytest.approx(0.4, abs=1e-12)


def test_pair_errors():
    with pytest.raises(EntrolabError, match="shapes differ"):
        confidence_gain(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(EntrolabError, match="NaN"):
        perturbation_drop(torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2))
    with pytest.raises(EntrolabError, match=r"labels must lie in \[0, 1\]"):
        label_prob(torch.zeros(1, 2), torch.tensor([2]))


def test_selectors_hand_cases():
    ent = torch.tensor([0.1, 0.5, 1.2, 2.0])
    # 0.5 ln 10 = 1.1513: keeps 0.1 and 0.5 only (1.2 > 1.1513)
    sel = relative_to_log_k(ent, 10, 0.5)
    assert sel.mask.tolist() == [True, True, False, False]
    assert threshold_select(ent, 0.5, "above").mask.tolist() == [False, False, True, True]
    a, b = torch.tensor([0.5, 0.2, 0.3]), torch.tensor([0.5, 0.3, 0.1])
    assert compare_select(a, b).mask.tolist() == [True, False, True]  # ties kept (>=)
    # exp(−(H − H0)) with H0 = 0.5: exp(0.4), exp(0), exp(−0.7), exp(−1.5)
    w = exp_weight(ent, 0.5)
    assert torch.allclose(w, torch.exp(torch.tensor([0.4, 0.0, -0.7, -1.5])))
    both = sel & Selection(torch.tensor([True, False, True, True]), torch.full((4,), 2.0))
    assert both.mask.tolist() == [True, False, False, False] and both.weights[0] == 2.0
    with pytest.raises(EntrolabError, match="NaN"):
        threshold_select(torch.tensor([float("nan")]), 0.0)
    with pytest.raises(EntrolabError, match="num_classes"):
        relative_to_log_k(ent, 1)


def test_registered_in_signals():
    assert SIGNALS.get("neg_entropy") is neg_entropy
    assert SIGNALS.entry("energy").defaults["temperature"] == 1.0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-20, 20), min_size=2, max_size=12),
    st.floats(-50, 50),
)
def test_properties(z, c):
    x = torch.tensor([z], dtype=torch.float64)
    ne = neg_entropy(x).item()
    assert -math.log(len(z)) - 1e-9 <= ne <= 1e-12
    # shift invariance of the probability signals; gain/drop vanish for identical inputs
    assert neg_entropy(x + c).item() == pytest.approx(ne, abs=1e-9)
    assert confidence_gain(x, x + c).item() == pytest.approx(0.0, abs=1e-9)
    assert perturbation_drop(x, x).item() == 0.0
    # energy ≥ max logit (logsumexp ≥ max) and ≤ max + log K
    e = energy_confidence(x).item()
    assert max(z) - 1e-9 <= e <= max(z) + math.log(len(z)) + 1e-9
