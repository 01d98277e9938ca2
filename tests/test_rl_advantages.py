"""Group advantage estimators: hand-computed values, verl/TRL transcriptions, properties."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab import rl
from entrolab.errors import EntrolabError
from entrolab.rl.advantages import ADVANTAGE_ESTIMATORS, dr_grpo, grpo, rloo


def test_grpo_hand_computed() -> None:
    # rewards 1,0,0,1: mean 0.5; unbiased std = sqrt(4·0.25/3) = sqrt(1/3) = 0.5773502691896258
    adv = grpo(torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)  # = 0.8660239...
    torch.testing.assert_close(adv, torch.tensor([[a, -a, -a, a]]), rtol=1e-6, atol=0)
    # population std = 0.5 → ±0.5 / (0.5 + 1e-6)
    adv = grpo(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), unbiased=False)
    b = 0.5 / (0.5 + 1e-6)
    torch.testing.assert_close(adv, torch.tensor([[b, -b, -b, b]]), rtol=1e-6, atol=0)


def test_grpo_batch_scale_hand_computed() -> None:
    # rows [1, 3] (mean 2) and [0, 0] (mean 0): centred [-1, 1], [0, 0];
    # batch std of (1, 3, 0, 0): mean 1, squares 0+4+1+1 = 6, unbiased var 6/3 = 2 → std √2
    adv = grpo(torch.tensor([[1.0, 3.0], [0.0, 0.0]]), scale="batch", eps=0.0)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(adv, torch.tensor([[-s, s], [0.0, 0.0]]), rtol=1e-6, atol=0)


def test_dr_grpo_and_rloo_hand_computed() -> None:
    r = torch.tensor([[3.0, 1.0, 2.0]])
    # mean 2 → [1, -1, 0]
    torch.testing.assert_close(dr_grpo(r), torch.tensor([[1.0, -1.0, 0.0]]))
    torch.testing.assert_close(grpo(r, scale="none"), dr_grpo(r))
    # leave-one-out: 3 − (1+2)/2 = 1.5; 1 − (3+2)/2 = −1.5; 2 − (3+1)/2 = 0
    torch.testing.assert_close(rloo(r), torch.tensor([[1.5, -1.5, 0.0]]))


def test_zero_variance_group_gives_zero_advantages() -> None:
    r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    for eps in (1e-6, 0.0):
        adv = grpo(r, eps=eps)
        assert torch.equal(adv[0], torch.zeros(3))
        assert torch.isfinite(adv).all()


# --- transcriptions of verl and TRL -------------------------------------------------------


def _verl_grpo(scores: torch.Tensor, index: list[int], norm_by_std: bool, eps: float = 1e-6):
    """verl ``compute_grpo_outcome_advantage`` (per-sample loop over uid groups), by hand."""
    scores = scores.clone()
    groups: dict[int, list[torch.Tensor]] = defaultdict(list)
    for i in range(len(scores)):
        groups[index[i]].append(scores[i])
    mean = {k: torch.mean(torch.stack(v)) for k, v in groups.items()}
    std = {k: torch.std(torch.stack(v)) for k, v in groups.items()}
    for i in range(len(scores)):
        if norm_by_std:
            scores[i] = (scores[i] - mean[index[i]]) / (std[index[i]] + eps)
        else:
            scores[i] = scores[i] - mean[index[i]]
    return scores


def _verl_rloo(scores: torch.Tensor, index: list[int]) -> torch.Tensor:
    """verl ``compute_rloo_outcome_advantage``: r·n/(n−1) − mean·n/(n−1)."""
    scores = scores.clone()
    groups: dict[int, list[torch.Tensor]] = defaultdict(list)
    for i in range(len(scores)):
        groups[index[i]].append(scores[i])
    mean = {k: torch.mean(torch.stack(v)) for k, v in groups.items()}  # before mutating
    for i in range(len(scores)):
        n = len(groups[index[i]])
        scores[i] = scores[i] * n / (n - 1) - mean[index[i]] * n / (n - 1)
    return scores


def _trl_grpo(rewards: torch.Tensor, g: int, scale_rewards: str) -> torch.Tensor:
    """TRL ``_generate_and_score_completions`` advantage block (flat rewards), by hand."""
    mean = rewards.view(-1, g).mean(dim=1).repeat_interleave(g, dim=0)
    advantages = rewards - mean
    if scale_rewards == "group":
        std = rewards.view(-1, g).std(dim=1).repeat_interleave(g, dim=0)
    else:
        std = rewards.std().expand_as(rewards)
    return advantages / (std + 1e-4)


def _trl_rloo(rewards: torch.Tensor, g: int) -> torch.Tensor:
    """TRL RLOOTrainer baseline: (group sum − r)/(G − 1); advantage = r − baseline."""
    grouped = rewards.view(-1, g)
    baselines = (grouped.sum(dim=1, keepdim=True) - grouped) / (g - 1)
    return (grouped - baselines).reshape(-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_verl_and_trl_transcriptions(seed: int) -> None:
    n, g = 5, 4
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 3, (n, g), generator=gen).double() + torch.rand(n, g, generator=gen)
    flat, index = r.reshape(-1), [i // g for i in range(n * g)]
    torch.testing.assert_close(
        grpo(r).double().reshape(-1), _verl_grpo(flat, index, True), rtol=1e-6, atol=1e-7
    )
    torch.testing.assert_close(
        dr_grpo(r).double().reshape(-1), _verl_grpo(flat, index, False), rtol=1e-6, atol=1e-7
    )
    torch.testing.assert_close(
        rloo(r).double().reshape(-1), _verl_rloo(flat, index), rtol=1e-6, atol=1e-7
    )
    torch.testing.assert_close(
        rloo(r).double().reshape(-1), _trl_rloo(flat, g), rtol=1e-6, atol=1e-7
    )
    for scale in ("group", "batch"):
        torch.testing.assert_close(
            grpo(r, eps=1e-4, scale=scale).double().reshape(-1),
            _trl_grpo(flat, g, scale),
            rtol=1e-6,
            atol=1e-7,
        )


def test_rloo_normalize_matches_batch_standardisation() -> None:
    r = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    raw = rloo(r).double()
    expected = (raw - raw.mean()) / (raw.reshape(-1).std() + 1e-4)
    torch.testing.assert_close(rloo(r, normalize=True).double(), expected, rtol=1e-6, atol=1e-7)


# --- properties ---------------------------------------------------------------------------

_rewards = st.integers(1, 4).flatmap(
    lambda n: st.integers(2, 6).flatmap(
        lambda g: st.lists(
            st.floats(-100, 100, allow_nan=False, allow_infinity=False),
            min_size=n * g,
            max_size=n * g,
        ).map(lambda v: torch.tensor(v, dtype=torch.float64).reshape(n, g))
    )
)


@settings(max_examples=80, deadline=None)
@given(_rewards)
def test_group_advantages_sum_to_zero(r: torch.Tensor) -> None:
    scale = float(r.abs().max()) + 1.0
    for adv, bound in [
        (grpo(r), r.shape[1] ** 0.5),  # |standardised| ≤ √G, so sums are O(√G)
        (grpo(r, scale="batch"), r.shape[1] ** 0.5 * 10),
        (dr_grpo(r), scale),
        (rloo(r), scale * 2),
    ]:
        assert adv.dtype == torch.float32
        assert adv.shape == r.shape
        sums = adv.double().sum(dim=1)
        assert torch.all(sums.abs() <= 1e-5 * bound * r.shape[1] + 1e-30), sums


@settings(max_examples=50, deadline=None)
@given(_rewards, st.floats(-5, 5), st.floats(0.5, 3))
def test_grpo_invariant_to_affine_reward_change(r: torch.Tensor, shift: float, mult: float) -> None:
    # (mult·R + shift − mean)/std is unchanged by an affine map with mult > 0 (ε = 0)
    a = grpo(r, eps=0.0).double()
    b = grpo(r * mult + shift, eps=0.0).double()
    spread = r.std(dim=1, keepdim=True)
    ok = (spread > 1e-3 * (r.abs().amax(dim=1, keepdim=True) + 1)).expand_as(r)
    torch.testing.assert_close(a[ok], b[ok], rtol=1e-4, atol=1e-4)


@settings(max_examples=50, deadline=None)
@given(_rewards)
def test_rloo_is_scaled_dr_grpo(r: torch.Tensor) -> None:
    # R_i − (ΣR − R_i)/(G−1) = G/(G−1)·(R_i − mean R)
    g = r.shape[1]
    torch.testing.assert_close(
        rloo(r).double(), dr_grpo(r).double() * g / (g - 1), rtol=1e-5, atol=1e-4
    )


# --- registry and errors ------------------------------------------------------------------


def test_registry_access() -> None:
    assert rl.advantage_estimators is ADVANTAGE_ESTIMATORS
    assert rl.advantage_estimators.get("grpo") is grpo
    assert set(ADVANTAGE_ESTIMATORS.names()) == {"grpo", "dr_grpo", "riskpo", "rloo"}


@pytest.mark.parametrize(
    ("rewards", "match"),
    [
        (torch.tensor([[1.0], [0.0]]), "G ≥ 2"),
        (torch.tensor([1.0, 0.0]), r"\[N, G\]"),
        (torch.tensor([[1.0, float("nan")]]), "NaN"),
    ],
)
def test_bad_rewards_raise(rewards: torch.Tensor, match: str) -> None:
    for fn in (grpo, dr_grpo, rloo):
        with pytest.raises(EntrolabError, match=match):
            fn(rewards)


def test_bad_grpo_options_raise() -> None:
    with pytest.raises(EntrolabError, match="scale"):
        grpo(torch.zeros(1, 2), scale="global")
    with pytest.raises(EntrolabError, match="eps"):
        grpo(torch.zeros(1, 2), eps=-1.0)
