"""PCC certainty × consistency: certainty rule, routing, and the registered estimator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from entrolab.errors import EntrolabError
from entrolab.estimators import ESTIMATORS, pcc_certainty, pcc_route, pcc_score


def test_pcc_certainty_by_hand():
    # τ = max(0, p_T − p_F): 0.7 − 0.2 = 0.5; a model sure of "False" gives 0, not 0.6
    np.testing.assert_allclose(pcc_certainty([0.7, 0.2], [0.2, 0.8]), [0.5, 0.0])
    # same-class top-2 tokens: both True-class → 1, both False-class → 0, mixed → |p_T − p_F|
    top2 = [("true", "true"), ("false", "false"), ("false", "true")]
    np.testing.assert_allclose(pcc_certainty([0.6, 0.6, 0.6], [0.3, 0.3, 0.3], top2), [1, 0, 0.3])


@pytest.mark.parametrize(
    ("certainty", "consistency", "route"),
    [
        (0.9, 0.9, "answer"),  # κ = 0.81 ≥ 0.7
        (1.0, 0.7, "answer"),  # κ = 0.7 exactly: boundary goes to "answer"
        (0.8, 0.6, "retrieve"),  # κ = 0.48 in [0.4, 0.7)
        (0.8, 0.5, "retrieve"),  # κ = 0.4 exactly
        (0.5, 0.5, "escalate"),  # κ = 0.25 < 0.4
        (0.0, 1.0, "escalate"),
    ],
)
def test_pcc_route(certainty, consistency, route):
    assert pcc_route(certainty, consistency) == route


def test_pcc_route_custom_thresholds_and_bad_input():
    assert pcc_route(0.5, 0.5, thresholds=(0.2, 0.1)) == "answer"
    with pytest.raises(EntrolabError, match="θ₂ ≤ θ₁"):
        pcc_route(0.5, 0.5, thresholds=(0.2, 0.5))
    with pytest.raises(EntrolabError, match=r"\[0, 1\]"):
        pcc_route(1.5, 0.5)
    with pytest.raises(EntrolabError, match=r"\[0, 1\]"):
        pcc_score([float("nan")], [0.5])


@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
def test_routes_are_monotone_in_certainty(c1, c2, s, hi):
    order = {"escalate": 0, "retrieve": 1, "answer": 2}
    lo = hi / 2
    a, b = sorted((c1, c2))
    assert order[pcc_route(a, s, (hi, lo))] <= order[pcc_route(b, s, (hi, lo))]


def test_registered_pcc_estimator_by_hand():
    stats = {
        "ptrue": {
            "p_verdict": np.array([[0.9, 0.05], [0.3, 0.6], [0.5, 0.1]]),
            "top2": [("true", "false"), ("false", "true"), ("true", "true")],
        },
        "greedy_sample_agreement": np.array([0.5, 1.0, 0.25]),
    }
    # τ = [0.85, 0, 1] (third: both top-2 tokens True-class); κ = τ·cons = [0.425, 0, 0.25]
    np.testing.assert_allclose(ESTIMATORS.get("pcc")(stats), [0.575, 1.0, 0.75])
