"""Policy Cliff toolkit: soft policies, the 1/τ sensitivity bound (tight at a tie), tie mass."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.beyond.policy_cliff import (
    policy_sensitivity,
    regularisation_cost,
    soft_policy,
    soft_tree_policy,
    tie_mass,
)
from entrolab.errors import EntrolabError

BANDIT = np.array([1.0, 1.0, 0.6, 0.2])  # spec §6 A: a tie between actions 0 and 1
NUDGE = np.array([0.0, 1e-3, 0.0, 0.0])


def test_hand_cases():
    # τ = 0 at a tie: uniform over the two best actions
    np.testing.assert_allclose(soft_policy(BANDIT, 0.0), [0.5, 0.5, 0, 0])
    # r = (0, ln 3), τ = 1 → (1/4, 3/4); with ref (3/4, 1/4): ∝ (3/4, 3/4) → (1/2, 1/2)
    r = np.array([0.0, math.log(3)])
    np.testing.assert_allclose(soft_policy(r, 1.0), [0.25, 0.75])
    np.testing.assert_allclose(soft_policy(r, 1.0, ref=[0.75, 0.25]), [0.5, 0.5])
    assert tie_mass(BANDIT).item() == 2 and tie_mass(BANDIT + NUDGE).item() == 1
    assert tie_mass(BANDIT + NUDGE, tol=1e-2).item() == 2
    # cost at τ = 0 with a tie is 0; for large τ it approaches max − mean = 1 − 0.7 = 0.3
    assert regularisation_cost(BANDIT, 0.0) == 0.0
    assert regularisation_cost(BANDIT, 1e6) == pytest.approx(0.3, abs=1e-5)
    with pytest.raises(EntrolabError, match="NaN"):
        soft_policy([0.0, float("nan")], 1.0)
    with pytest.raises(EntrolabError, match="tau"):
        soft_policy(BANDIT, -1.0)


def test_the_cliff_and_its_removal():
    # τ = 0: a 1e-4 reward change moves the policy by total variation 1 (‖·‖₁ = 1)
    eps = np.array([0, 1e-4, 0, 0])
    assert np.abs(soft_policy(BANDIT + eps, 0) - soft_policy(BANDIT, 0)).sum() == pytest.approx(1)
    # τ > 0: sensitivity is below 1/τ and within 5% of it at the tie (spec: 98.96 vs 100)
    for tau in (0.01, 0.05, 0.2):
        s = policy_sensitivity(BANDIT, tau, scale=1e-5)
        assert s.empirical <= s.bound * (1 + 1e-6) and s.empirical >= 0.95 * s.bound
    assert policy_sensitivity(BANDIT, 0.0, scale=1e-5).empirical > 1e4  # the cliff


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-3, 3), min_size=2, max_size=6),
    st.floats(0.01, 5.0),
    st.integers(0, 10_000),
)
def test_lipschitz_bound_holds(r, tau, seed):
    r = np.array(r)
    rng = np.random.default_rng(seed)
    d = rng.uniform(-0.5, 0.5, r.size)
    if np.abs(d).max() == 0:
        return
    l1 = np.abs(soft_policy(r + d, tau) - soft_policy(r, tau)).sum()
    assert l1 <= np.abs(d).max() / tau + 1e-12
    assert regularisation_cost(r, tau) <= tau * math.log(r.size) + 1e-12


def test_soft_value_iteration_gives_softmax_over_sequences():
    # on a deterministic tree, soft VI's sequence distribution is softmax(r / τ) over leaves
    rng = np.random.default_rng(0)
    r = rng.uniform(0, 1, 8)
    for tau in (0.05, 0.3, 2.0):
        pols, probs = soft_tree_policy(r, 2, tau)
        np.testing.assert_allclose(probs, soft_policy(r, tau), rtol=1e-10)
        assert [p.shape for p in pols] == [(1, 2), (2, 2), (4, 2)]
    # two equally rewarded sequences ("valid", "shortcut") share the mass at any τ
    r2 = np.array([0.2, 1.0, 0.1, 0.0, 0.3, 0.0, 1.0, 0.5])
    probs = soft_tree_policy(r2, 2, 0.1)[1]
    assert probs[1] == pytest.approx(probs[6])
    with pytest.raises(EntrolabError, match="power"):
        soft_tree_policy(np.ones(6), 2, 0.1)
