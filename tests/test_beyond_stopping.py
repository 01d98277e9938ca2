"""Stopping rules over (prediction, confidence) streams: hand-computed replays and the Pareto
threshold choice."""

from __future__ import annotations

import pytest
import torch

from entrolab.beyond.stopping import (
    STOPPING_RULES,
    AnyOf,
    Budget,
    ConfidenceThreshold,
    Patience,
    pareto_threshold,
    stop_outcome,
)
from entrolab.errors import EntrolabError
from entrolab.registry import get_registry

CONF = torch.tensor([[0.2, 0.7, 0.9, 0.95], [0.1, 0.2, 0.3, 0.4], [0.8, 0.5, 0.9, 0.9]])
PRED = torch.tensor([[1, 2, 2, 2], [0, 0, 0, 0], [3, 3, 1, 1]])


def test_confidence_threshold_replay():
    # θ = 0.6 (strict >): row 0 first above at step 1; row 1 never → last step 3; row 2 at 0
    assert ConfidenceThreshold(0.6).replay(CONF).tolist() == [1, 3, 0]
    # θ = 0.7: 0.7 is not > 0.7, so row 0 stops at step 2
    assert ConfidenceThreshold(0.7).replay(CONF).tolist() == [2, 3, 0]


def test_patience_budget_anyof():
    # k = 2: row 0 preds 1,2,2 → run of 2 at step 2; row 1 at step 1; row 2 (3,3) at step 1
    assert Patience(2).replay(CONF, PRED).tolist() == [2, 1, 1]
    assert Budget(2).replay(CONF).tolist() == [1, 1, 1]
    assert Budget(10).replay(CONF).tolist() == [3, 3, 3]
    rule = AnyOf((ConfidenceThreshold(0.6), Budget(3)))
    assert rule.replay(CONF, PRED).tolist() == [1, 2, 0]
    with pytest.raises(EntrolabError, match="needs the predictions"):
        Patience(2).replay(CONF)
    with pytest.raises(EntrolabError, match="positive int"):
        Patience(0)
    with pytest.raises(EntrolabError, match=r"\[N, T\]"):
        ConfidenceThreshold(0.5).replay(torch.tensor([0.1, 0.2]))
    with pytest.raises(EntrolabError, match="NaN"):
        ConfidenceThreshold(0.5).replay(torch.tensor([[float("nan")]]))


def test_stop_outcome_and_pareto_choice():
    correct = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1], [1, 0, 1, 1]], dtype=torch.bool)
    out = stop_outcome(torch.tensor([1, 3, 0]), correct)
    # stops at steps 1, 3, 0 → correct, correct, correct; mean steps (2 + 4 + 1) / 3
    assert out.accuracy == 1.0 and out.mean_steps == pytest.approx(7 / 3)
    fit = pareto_threshold(CONF, correct, [0.3, 0.6, 0.85, 0.99], max_drop=0.0)
    # full accuracy 1.0. θ=0.3: stops 1, 3, 0 → all correct, mean 7/3 (the lowest such)
    # θ=0.6: same stops; θ=0.85: stops 2, 3, 2 → 3/3, 10/3; θ=0.99: 3,3,3 → 1.0, 4
    assert fit.full_accuracy == 1.0 and fit.theta == 0.3
    assert fit.rule().replay(CONF).tolist() == [1, 3, 0]
    assert [p[0] for p in fit.front] == [0.3, 0.6]
    # a stricter task: nothing within the drop except never stopping early → θ = 0.99 row
    hard = correct.clone()
    hard[0, 1] = False
    hard[0, 2] = False
    fit2 = pareto_threshold(CONF, hard, [0.3, 0.85, 0.99], max_drop=0.0)
    assert fit2.theta == 0.99


def test_registered():
    reg = get_registry("stopping_rules")
    assert reg is STOPPING_RULES and reg.get("patience") is Patience
    assert set(reg.names()) == {"budget", "confidence_threshold", "patience"}
