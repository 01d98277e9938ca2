"""REALM value of information: bounds by hand, post-interaction entropies vs Gaussian closed
forms, the choice on constructed rollouts, and the 2-D environment."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from entrolab.beyond.realm import (
    entropy_bounds,
    mechanism_values,
    post_entropies,
    realm_choose,
)
from entrolab.beyond.realm_env import forecast, make_env
from entrolab.errors import EntrolabError
from entrolab.signals import gaussian_entropy

BETA = 1e-6
LOW, HIGH = np.array([-1.0, -1.0]), np.array([1.0, 1.0])


def test_bounds_hand_computed():
    # d = 2, β = 1e-6: h_min = (1 + log 2π) + log 1e-6 = 2.837877 − 13.815511; h_max = 2 log 2
    h_min, h_max = entropy_bounds(LOW, HIGH, BETA)
    assert h_min == pytest.approx(1 + math.log(2 * math.pi) + math.log(1e-6))
    assert h_min == pytest.approx(gaussian_entropy(BETA * np.eye(2)))
    assert h_max == pytest.approx(2 * math.log(2))
    with pytest.raises(EntrolabError, match="high > low"):
        entropy_bounds(HIGH, LOW, BETA)


def test_post_entropies_match_gaussian_closed_forms():
    rng = np.random.default_rng(0)
    sd = np.array([0.2, 0.05])  # principal axes = coordinate axes
    a = rng.normal(0, sd, (4000, 1, 2))
    # β = 1e-3 here: the sample PCA axis is off by ~0.01 rad, which leaks ~0.05² · 1e-4 of the
    # other axis' variance into the pinned one; negligible against β = 1e-3 (not against 1e-6)
    h_min, _ = entropy_bounds(LOW, HIGH, 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ent = post_entropies(a, h_min, beta=1e-3, seed=0)
    closed = [0.5 * math.log(2 * math.pi * math.e * s**2) for s in sd]
    assert ent["none"] == pytest.approx(sum(closed), abs=0.05)
    assert ent["teleop"] == pytest.approx(h_min)
    # corrections pin the top direction (σ = 0.2) to the human's noise: h = h_min/2 + closed[1]
    assert ent["corrections"] == pytest.approx(h_min / 2 + closed[1], abs=0.05)


def _choice(a, effort_weight=0.05):
    # λ = 0.05 prices human input; with the reference's δ = 1e-4 alone, estimator noise of
    # ~0.01 nats decides among mechanisms that all reach the noise floor (measured in the bench)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return realm_choose(a, LOW, HIGH, beta=BETA, effort_weight=effort_weight)


def test_choice_on_constructed_rollouts():
    rng = np.random.default_rng(1)
    sd = math.sqrt(BETA)
    # unimodal at the human's noise level: nothing to gain → none
    assert _choice(rng.normal(0, sd, (60, 4, 2))).mechanism == "none"
    # two far-apart modes, each at the noise level: picking the mode is enough → discrete
    modes = np.where(rng.random(60) < 0.5, -0.5, 0.5)[:, None, None]
    bimodal = modes * np.array([1.0, 0.0]) + rng.normal(0, sd, (60, 4, 2))
    assert _choice(bimodal).mechanism == "discrete"
    # a continuous spread along one direction only: one correction is enough → corrections
    line = rng.uniform(-0.5, 0.5, (60, 1, 1)) * np.array([1.0, 1.0]) / math.sqrt(2)
    assert _choice(line + rng.normal(0, sd, (60, 4, 2))).mechanism == "corrections"
    # unstructured spread in both dimensions: only teleoperation removes it
    assert _choice(rng.uniform(-0.5, 0.5, (60, 4, 2))).mechanism == "teleop"
    with pytest.raises(EntrolabError, match="NaN"):
        _choice(np.full((10, 2, 2), np.nan))
    with pytest.raises(EntrolabError, match=r"\[N >= 5, H, d\]"):
        _choice(np.zeros((10, 2)))


def test_reference_alpha_order_breaks_exact_ties():
    tie = dict.fromkeys(("none", "teleop", "discrete", "corrections"), 0.8)
    v = mechanism_values(tie, 16, 2)
    assert sorted(v, key=v.get, reverse=True) == ["none", "discrete", "corrections", "teleop"]


def test_effort_weight_prices_human_input():
    # L = 1 for teleop, 0.9 for discrete: λ = 0 → teleop (α only breaks ties is not enough)
    scores = {"none": 0.5, "teleop": 1.0, "discrete": 0.9, "corrections": 0.7}
    v0 = mechanism_values(scores, 16, 2)
    assert max(v0, key=v0.get) == "teleop"
    # λ = 0.2: teleop pays 0.2 · (16·2)/(16·2) = 0.2, discrete 0.2 · 2/32 = 0.0125 → discrete
    v = mechanism_values(scores, 16, 2, effort_weight=0.2)
    assert v["teleop"] == pytest.approx((1 - 3e-4) - 0.2) and max(v, key=v.get) == "discrete"


def test_env_segments_and_forecast():
    env = make_env(n_demos=10, seed=3)
    assert env.demos.shape == (10, 600, 2) and set(env.segments) == {
        "discrete",
        "corrections",
        "teleop",
    }
    a, _ = env.segments["teleop"]
    assert env.label(a) == "teleop" and env.label(0) == "none"
    rollouts = forecast(env, 10, 20, rng=np.random.default_rng(0))
    assert rollouts.shape == (20, env.horizon, 2)
    assert np.all(rollouts >= env.low) and np.all(rollouts <= env.high)
    with pytest.raises(EntrolabError, match="phase"):
        forecast(env, 599, rng=np.random.default_rng(0))
