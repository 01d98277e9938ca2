"""Set-level estimators over samples: hand-computed cases, properties, answer helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.errors import EntrolabError
from entrolab.estimators import ESTIMATORS
from entrolab.estimators.sampling import (
    cluster_probabilities,
    discrete_semantic_entropy,
    mc_sequence_entropy,
    polygraph_semantic_entropy,
    semantic_entropy_rao,
)


def u(name: str, stats: dict, **params) -> np.ndarray:
    return ESTIMATORS.get(name)(stats, **params)


def test_discrete_semantic_entropy_of_a_known_split():
    # answers {a, a, b, c}: p = [1/2, 1/4, 1/4]
    # SE = −(½ ln ½ + 2 · ¼ ln ¼) = ½ ln 2 + ln 2 = 1.5 ln 2 = 1.0397207708…
    assert discrete_semantic_entropy([0, 0, 1, 2]) == pytest.approx(1.0397207708399179, rel=1e-12)
    assert discrete_semantic_entropy([0, 0, 1, 2]) == pytest.approx(1.5 * math.log(2), rel=1e-12)
    np.testing.assert_allclose(cluster_probabilities([7, 7, 3, 9]), [0.5, 0.25, 0.25])


def test_likelihood_weighted_semantic_entropy_by_hand():
    ids, loglik = [0, 0, 1], [-1.0, -2.0, -3.0]
    # unnormalised: mass(c0) = e⁻¹ + e⁻² = 0.503215, mass(c1) = e⁻³ = 0.049787
    # P = [0.909969, 0.090031]; SE = −Σ P ln P = 0.3026085525…
    assert semantic_entropy_rao(ids, loglik) == pytest.approx(0.3026085525465046, rel=1e-10)
    # length-normalised with lengths [1, 2, 3]: every mean log-prob is −1 → P = [2/3, 1/3]
    # SE = −(⅔ ln ⅔ + ⅓ ln ⅓) = 0.6365141682…
    got = semantic_entropy_rao(ids, loglik, lengths=[1, 2, 3])
    assert got == pytest.approx(0.6365141682948128, rel=1e-10)


def test_polygraph_semantic_entropy_by_hand():
    ids, loglik = [0, 0, 1], [-1.0, -2.0, -3.0]
    # class log-mass: c0 = ln(e⁻¹ + e⁻²) = −0.686738…, c1 = −3
    # u = −mean over samples of their class log-mass = (2 · 0.686738 + 3) / 3 = 1.457825…
    assert polygraph_semantic_entropy(ids, loglik) == pytest.approx(1.457825541654518, rel=1e-10)
    # use_unique_responses: the duplicate text "a" counts once → c0 = −1 → (1 + 1 + 3)/3
    got = polygraph_semantic_entropy(ids, [-1.0, -1.0, -3.0], texts=["a", "a", "b"])
    assert got == pytest.approx(5 / 3, rel=1e-12)


def test_monte_carlo_sequence_entropy_by_hand():
    assert mc_sequence_entropy([-1.0, -2.0, -3.0]) == pytest.approx(2.0)
    # normalised: −mean(log p / length) over non-empty samples: (−1/1, −4/2) → 1.5
    assert mc_sequence_entropy([-1.0, -4.0, -9.0], [1, 2, 0]) == pytest.approx(1.5)
    assert mc_sequence_entropy([0.0], [0]) == 0.0


def test_registered_set_estimators_on_a_statistics_dict():
    stats = {
        "answer_clusters": [[0, 0, 1, 2], [5, 5, 5, 5]],
        "sample_loglik": np.array([[-1.0, -1.0, -2.0, -4.0], [-1.0, -2.0, -3.0, -4.0]]),
        "sample_lengths": np.array([[1, 1, 2, 4], [1, 2, 3, 4]]),
        "sample_texts": [["a", "a", "b", "c"], ["d"] * 4],
        "greedy_sample_agreement": np.array([0.5, 1.0]),
    }
    np.testing.assert_allclose(u("answer_agreement", stats), [0.5, 0.0])
    np.testing.assert_allclose(u("num_semantic_sets", stats), [3.0, 1.0])
    np.testing.assert_allclose(u("greedy_consistency", stats), [0.5, 0.0])
    np.testing.assert_allclose(
        u("semantic_entropy_discrete", stats), [1.5 * math.log(2), 0.0], atol=1e-12
    )
    # prompt 0, length-normalised log p = [−1, −1, −1, −1] → same as the discrete split
    np.testing.assert_allclose(u("semantic_entropy", stats), [1.5 * math.log(2), 0.0], atol=1e-12)
    # MC entropy: −mean(Σ log p): (1+1+2+4)/4 = 2; (1+2+3+4)/4 = 2.5
    np.testing.assert_allclose(u("mc_sequence_entropy", stats), [2.0, 2.5])
    np.testing.assert_allclose(u("mc_sequence_entropy_normalized", stats), [1.0, 1.0])


cluster_lists = st.lists(st.integers(0, 5), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(cluster_lists, st.randoms(use_true_random=False))
def test_semantic_entropy_properties(ids, rnd):
    n_clusters = len(set(ids))
    se = discrete_semantic_entropy(ids)
    assert -1e-12 <= se <= math.log(n_clusters) + 1e-12
    # permutation and relabelling invariance
    perm = ids[:]
    rnd.shuffle(perm)
    assert discrete_semantic_entropy(perm) == pytest.approx(se, abs=1e-12)
    assert discrete_semantic_entropy([i + 100 for i in ids]) == pytest.approx(se, abs=1e-12)
    # likelihood-weighted with equal likelihoods = discrete; any likelihoods stay ≤ log C
    assert semantic_entropy_rao(ids, [-2.0] * len(ids)) == pytest.approx(se, abs=1e-10)
    loglik = [-rnd.uniform(0.1, 30.0) for _ in ids]
    assert -1e-12 <= semantic_entropy_rao(ids, loglik) <= math.log(n_clusters) + 1e-10


def test_semantic_entropy_extremes():
    assert discrete_semantic_entropy([3] * 10) == 0.0
    assert discrete_semantic_entropy(list(range(10))) == pytest.approx(math.log(10))
    with pytest.raises(EntrolabError, match="non-empty"):
        discrete_semantic_entropy([])
    with pytest.raises(EntrolabError, match="finite"):
        semantic_entropy_rao([0, 1], [-1.0, float("nan")])
