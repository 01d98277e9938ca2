"""Policy losses: hand-computed values, verl/TRL transcriptions, token selection, split
invariance with batch-scope selection, the fold-a-weight-into-A identity, errors."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab import rl
from entrolab.errors import EntrolabError, UnknownNameError
from entrolab.rl.losses import (
    POLICY_LOSSES,
    clip_cov,
    entropy_bonus,
    forking_tokens,
    kl_cov,
    kl_penalty,
    ppo_clip,
    prepare_selection,
    reinforce,
)
from entrolab.rl.types import PolicyLossInput

F64 = torch.float64


def _inp(lp, old, adv, mask=None, **kw) -> PolicyLossInput:
    lp = torch.as_tensor(lp, dtype=F64).detach().requires_grad_(True)
    old = torch.as_tensor(old, dtype=F64)
    adv = torch.as_tensor(adv, dtype=F64)
    if mask is None:
        mask = torch.ones_like(lp, dtype=torch.bool)
    return PolicyLossInput(lp, old, adv, torch.as_tensor(mask), **kw)


def _grad(out, inp: PolicyLossInput) -> torch.Tensor:
    (g,) = torch.autograd.grad(out.loss, inp.logprobs)
    return g


# --- PPO-clip / DAPO ----------------------------------------------------------------------

# five tokens with ℓ_old = −2 and ratios r = 1.5, 0.5, 0.5, 4, 1; advantages 1, 1, −1, −1, −2;
# a sixth, padded slot holds NaN and must not matter.
_R = [1.5, 0.5, 0.5, 4.0, 1.0]
_A = [1.0, 1.0, -1.0, -1.0, -2.0]


def _ppo_case() -> PolicyLossInput:
    lp = [-2.0 + math.log(r) for r in _R] + [float("nan")]
    return _inp([lp], [[-2.0] * 6], [[*_A, float("nan")]], [[True] * 5 + [False]])


def test_ppo_clip_hand_computed() -> None:
    # token a: A=1, r=1.5: max(−1.5, −1·1.2) = −1.2 (high clip, no grad)
    # token b: A=1, r=0.5: max(−0.5, −0.8) = −0.5 (not clipped, grad −A·r = −0.5)
    # token c: A=−1, r=0.5: max(0.5, 0.8) = 0.8 (low clip, no grad)
    # token d: A=−1, r=4: max(4, 1.2) = 4 → dual clip min(4, 3·1) = 3 (no grad)
    # token e: A=−2, r=1: 2 (grad −A·r = 2)
    # token-mean: (−1.2 − 0.5 + 0.8 + 3 + 2)/5 = 4.1/5 = 0.82
    inp = _ppo_case()
    out = ppo_clip(inp)
    assert out.loss.item() == pytest.approx(0.82, rel=1e-12)
    assert out.metrics["clip_frac_low"] == pytest.approx(0.2)
    assert out.metrics["clip_frac_high"] == pytest.approx(0.2)
    assert out.metrics["dual_clip_frac"] == pytest.approx(0.2)
    assert out.metrics["touched_frac"] == pytest.approx(0.6)
    torch.testing.assert_close(
        _grad(out, inp), torch.tensor([[0, -0.5 / 5, 0, 0, 2 / 5, 0]], dtype=F64)
    )
    # without dual clip token d keeps 4: (−1.2 − 0.5 + 0.8 + 4 + 2)/5 = 1.02
    assert ppo_clip(_ppo_case(), dual_clip=None).loss.item() == pytest.approx(1.02, rel=1e-12)
    # DAPO ε_hi = 0.28: token a → −1.28; (−1.28 − 0.5 + 0.8 + 3 + 2)/5 = 0.804
    dapo = POLICY_LOSSES.get("dapo")
    assert dapo(_ppo_case()).loss.item() == pytest.approx(0.804, rel=1e-12)
    # seq-mean-token-sum over 1 sequence: 4.1
    assert ppo_clip(_ppo_case(), aggregation="seq-mean-token-sum").loss.item() == pytest.approx(4.1)


@pytest.mark.parametrize(
    ("agg", "expected"),
    [
        # one sequence of 5 response tokens, padded width T = 6, masked token-loss sum 4.1
        ("token-mean", 4.1 / 5),
        ("seq-mean-token-mean", 4.1 / 5),  # one sequence: its token-mean
        ("seq-mean-token-sum", 4.1),
        ("seq-mean-token-sum-norm", 4.1 / (1 * 6)),  # C defaults to T = 6
        ("token-sum-norm", 4.1 / 6),
    ],
)
def test_ppo_clip_every_aggregation_mode(agg: str, expected: float) -> None:
    assert ppo_clip(_ppo_case(), aggregation=agg).loss.item() == pytest.approx(expected, rel=1e-12)
    # with global counts of a batch twice this size: token-mean 4.1/10, seq modes ÷ 2 sequences
    counts = {"global_tokens": 10, "global_sequences": 2, "max_response_length": 8}
    inp = _ppo_case()
    inp.global_tokens, inp.global_sequences = counts["global_tokens"], counts["global_sequences"]
    inp.max_response_length = counts["max_response_length"]
    scaled = {
        "token-mean": 4.1 / 10,
        "seq-mean-token-mean": 4.1 / 5 / 2,
        "seq-mean-token-sum": 4.1 / 2,
        "seq-mean-token-sum-norm": 4.1 / (2 * 8),
        "token-sum-norm": 4.1 / 8,
    }[agg]
    assert ppo_clip(inp, aggregation=agg).loss.item() == pytest.approx(scaled, rel=1e-12)


def _verl_vanilla(old, lp, adv, mask, lo, hi, c=3.0):
    """verl ``compute_policy_loss_vanilla`` + token-mean ``agg_loss``, transcribed by hand."""
    neg_kl = torch.clamp(lp - old, min=-20.0, max=20.0)
    ratio = torch.exp(neg_kl)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1 - lo, 1 + hi)
    clip1 = torch.maximum(pg1, pg2)
    pg3 = -adv * c
    clip2 = torch.min(pg3, clip1)
    losses = torch.where(adv < 0, clip2, clip1)
    m = mask.to(losses.dtype)
    return (losses * m).sum() / m.sum()


def _trl_dapo(lp, old, adv, mask, eps_lo, eps_hi):
    """TRL GRPOTrainer token-level loss, ``loss_type="dapo"``, single process, by hand."""
    coef_1 = torch.exp(lp - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_lo, 1 + eps_hi)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    m = mask.to(per_token_loss.dtype)
    return (per_token_loss * m).sum() / m.sum().clamp(min=1.0)


def _random_case(seed: int, b: int = 6, t: int = 9, spread: float = 0.4) -> PolicyLossInput:
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g, dtype=F64) * 3
    lp = old + spread * torch.randn(b, t, generator=g, dtype=F64)
    adv = torch.randn(b, 1, generator=g, dtype=F64).expand(b, t).clone()
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    ent = torch.rand(b, t, generator=g, dtype=F64) * 3
    ref = old + 0.2 * torch.randn(b, t, generator=g, dtype=F64)
    return _inp(lp, old, adv, mask, entropy=ent, ref_logprobs=ref)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppo_matches_verl_and_trl_transcriptions(seed: int) -> None:
    inp = _random_case(seed)
    lp, old, adv, m = inp.logprobs, inp.old_logprobs, inp.advantages, inp.response_mask
    for ours, ref in [
        (ppo_clip(inp, clip_high=0.28), _verl_vanilla(old, lp, adv, m, 0.2, 0.28)),
        (
            ppo_clip(inp, clip_high=0.28, dual_clip=None, log_ratio_clamp=None),
            _trl_dapo(lp, old, adv, m, 0.2, 0.28),
        ),
    ]:
        torch.testing.assert_close(ours.loss, ref, rtol=1e-12, atol=1e-14)
        (g_ref,) = torch.autograd.grad(ref, lp)
        torch.testing.assert_close(_grad(ours, inp), g_ref, rtol=1e-12, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["token-mean", "seq-mean-token-mean"]))
def test_folding_weight_into_advantage_equals_weighting_loss(seed: int, agg: str) -> None:
    # w ≥ 0: w·max(−rA, −clip(r)A) = max(−r(wA), −clip(r)(wA)), dual clip alike
    inp = _random_case(seed, spread=0.6)
    g = torch.Generator().manual_seed(seed + 1)
    w = torch.rand(inp.logprobs.shape, generator=g, dtype=F64) * 2
    w[w < 0.3] = 0.0  # some masked-out tokens (w = 0) too
    folded = _inp(inp.logprobs.detach(), inp.old_logprobs, inp.advantages * w, inp.response_mask)
    out = ppo_clip(folded, aggregation=agg)
    lp, old, adv = inp.logprobs, inp.old_logprobs, inp.advantages
    ratio = torch.exp(lp - old)
    tok = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    tok = torch.where(adv < 0, torch.minimum(tok, -adv * 3.0), tok)
    weighted = rl.loss_aggregations.get(agg)(w * tok, inp.response_mask)
    torch.testing.assert_close(out.loss, weighted, rtol=1e-12, atol=1e-14)
    (g_ref,) = torch.autograd.grad(weighted, lp)
    torch.testing.assert_close(_grad(out, folded), g_ref, rtol=1e-12, atol=1e-14)


# --- REINFORCE, entropy bonus, KL term ----------------------------------------------------


def test_reinforce_hand_computed() -> None:
    # −A·ℓ = [−1·(−0.5), −(−2)·(−1)] = [0.5, −2]; token-mean −0.75; grad −A/2 = [−0.5, 1]
    inp = _inp([[-0.5, -1.0]], [[-0.5, -1.0]], [[1.0, -2.0]])
    out = reinforce(inp)
    assert out.loss.item() == pytest.approx(-0.75)
    torch.testing.assert_close(_grad(out, inp), torch.tensor([[-0.5, 1.0]], dtype=F64))
    # ratio form on-policy: −A·1 → (−1 + 2)/2 = 0.5, same gradient
    inp2 = _inp([[-0.5, -1.0]], [[-0.5, -1.0]], [[1.0, -2.0]])
    out2 = reinforce(inp2, form="ratio")
    assert out2.loss.item() == pytest.approx(0.5)
    torch.testing.assert_close(_grad(out2, inp2), torch.tensor([[-0.5, 1.0]], dtype=F64))


def test_entropy_bonus_hand_computed_and_sign() -> None:
    # on-policy PPO part: −A = [−1, 1] → mean 0; H = [2, 1] → mean 1.5; β = 0.1
    # loss = 0 − 0.1·1.5 = −0.15; ∂loss/∂H = −β/2 = −0.05 (descent raises entropy)
    h = torch.tensor([[2.0, 1.0]], dtype=F64, requires_grad=True)
    inp = _inp([[-1.0, -1.0]], [[-1.0, -1.0]], [[1.0, -1.0]], entropy=h)
    out = entropy_bonus(inp, entropy_coef=0.1)
    assert out.loss.item() == pytest.approx(-0.15, rel=1e-12)
    assert out.metrics["entropy_term"] == pytest.approx(1.5)
    (gh,) = torch.autograd.grad(out.loss, h)
    torch.testing.assert_close(gh, torch.tensor([[-0.05, -0.05]], dtype=F64))


def test_entropy_bonus_from_logits_and_needs_grad() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, generator=g, dtype=F64, requires_grad=True)
    logp = torch.log_softmax(logits, -1)
    h = -(logp.exp() * logp).sum(-1)
    base = dict(lp=torch.full((2, 3), -1.0), old=torch.full((2, 3), -1.0), adv=torch.ones(2, 3))
    with_h = entropy_bonus(_inp(**base, entropy=h), entropy_coef=0.5)
    with_logits = entropy_bonus(_inp(**base, logits=logits), entropy_coef=0.5)
    torch.testing.assert_close(with_h.loss, with_logits.loss, rtol=1e-6, atol=1e-9)
    with pytest.raises(EntrolabError, match="no gradient"):
        entropy_bonus(_inp(**base, entropy=h.detach()))
    with pytest.raises(EntrolabError, match="entropy"):
        entropy_bonus(_inp(**base))


def test_kl_penalty_hand_computed() -> None:
    # d = ℓ_ref − ℓ = −1.5 − (−1) = −0.5: k1 = 0.5, k2 = 0.125, k3 = e^−0.5 + 0.5 − 1
    lp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])
    k3 = math.exp(-0.5) - 0.5
    assert kl_penalty(lp, ref, "k1").item() == pytest.approx(0.5)
    assert kl_penalty(lp, ref, "k2").item() == pytest.approx(0.125)
    assert kl_penalty(lp, ref, "k3").item() == pytest.approx(k3, rel=1e-6)
    # through a loss: A = 0 → policy term 0; loss = 0.5 · k3 = 0.0532653...
    inp = _inp([[-1.0]], [[-1.0]], [[0.0]], ref_logprobs=torch.tensor([[-1.5]], dtype=F64))
    out = ppo_clip(inp, kl_coef=0.5)
    assert out.loss.item() == pytest.approx(0.5 * k3, rel=1e-12)
    assert out.metrics["kl_ref"] == pytest.approx(k3, rel=1e-12)
    with pytest.raises(EntrolabError, match="ref_logprobs"):
        ppo_clip(_inp([[-1.0]], [[-1.0]], [[0.0]]), kl_coef=0.5)


# --- Clip-Cov and KL-Cov ------------------------------------------------------------------

# A = [3, 1, −3, −1], ℓ = [−0.1, −2.1, −0.1, −2.1]: c = A·(ℓ − ℓ̄) = [3, −1, −3, 1]
_COV_LP = [[-0.1, -2.1, -0.1, -2.1]]
_COV_A = [[3.0, 1.0, -3.0, -1.0]]


def test_clip_cov_hand_computed() -> None:
    # on-policy: no PPO clipping; candidates 1 < c < 5 → only token 0 (c = 1 is not > 1);
    # k = max(1, ⌊0.5·4⌋) = 2 but one candidate → token 0 zeroed.
    # token losses −A = [−3, −1, 3, 1] → [0, −1, 3, 1]; token-mean 3/4 (plain PPO: 0)
    inp = _inp(_COV_LP, _COV_LP, _COV_A)
    out = clip_cov(inp, clip_cov_ratio=0.5, seed=0)
    assert out.loss.item() == pytest.approx(0.75, rel=1e-12)
    assert ppo_clip(_inp(_COV_LP, _COV_LP, _COV_A)).loss.item() == pytest.approx(0.0, abs=1e-12)
    assert out.metrics["touched_tokens"] == 1.0
    torch.testing.assert_close(_grad(out, inp), torch.tensor([[0.0, -0.25, 0.75, 0.25]], dtype=F64))


def _cov_reference(inp: PolicyLossInput, lo: float = 0.2, hi: float = 0.2):
    """Independent c and PPO-clipped flags (verl: clip_by_origin = pg_losses2 > pg_losses1)."""
    m = inp.response_mask
    lp, adv = inp.logprobs.detach(), inp.advantages
    mean_a = adv[m].mean()
    mean_l = lp[m].mean()
    cov = (adv - mean_a) * (lp - mean_l)
    ratio = torch.exp(lp - inp.old_logprobs)
    clipped = (-adv * ratio.clamp(1 - lo, 1 + hi) > -adv * ratio) & m
    return cov, clipped


def _crafted_cov_case() -> PolicyLossInput:
    inp = _random_case(7, b=4, t=8, spread=0.3)
    # make token (0, 0) the largest-covariance token, but PPO-clipped (r = 2, A > 0)
    adv, lp, old = inp.advantages.clone(), inp.logprobs.detach().clone(), inp.old_logprobs.clone()
    adv[0] = 5.0
    lp[0, 0] = 0.0
    old[0, 0] = -math.log(2.0)
    return _inp(lp, old, adv, inp.response_mask)


def test_clip_cov_selects_exactly_the_formula_candidates() -> None:
    inp = _crafted_cov_case()
    cov, clipped = _cov_reference(inp)
    m = inp.response_mask
    assert bool(clipped[0, 0]) and float(cov[0, 0]) == float(cov[m].max())
    lb, ub = 0.05, 50.0
    cand = m & ~clipped & (cov > lb) & (cov < ub)
    n_cand = int(cand.sum())
    assert 3 <= n_cand < int(m.sum())
    # ρ = 1 → k = N ≥ candidates: exactly the candidates are zeroed
    out = clip_cov(inp, clip_cov_ratio=1.0, clip_cov_lb=lb, clip_cov_ub=ub, seed=0)
    zero_grad = (_grad(out, inp) == 0) & m & ~clipped & (inp.advantages != 0)
    assert torch.equal(zero_grad, cand)
    assert out.metrics["touched_tokens"] == n_cand
    # smaller ρ: exactly k = ⌊ρN⌋ of the candidates, never a PPO-clipped token, seed-determined
    n = int(m.sum())
    rho = 2.0 / n
    chosen_sets = []
    for seed in (0, 0, 1, 2, 3):
        inp_s = _inp(inp.logprobs.detach(), inp.old_logprobs, inp.advantages, m)
        out = clip_cov(inp_s, clip_cov_ratio=rho, clip_cov_lb=lb, clip_cov_ub=ub, seed=seed)
        chosen = (_grad(out, inp_s) == 0) & m & ~clipped & (inp.advantages != 0)
        assert int(chosen.sum()) == 2 == out.metrics["touched_tokens"]
        assert not bool((chosen & ~cand).any())
        chosen_sets.append(chosen)
    assert torch.equal(chosen_sets[0], chosen_sets[1])
    assert any(not torch.equal(chosen_sets[0], s) for s in chosen_sets[2:])


def test_kl_cov_hand_computed_and_unclipped() -> None:
    # ℓ_old = ℓ − [0.5, 0, 0, 0] → r₀ = e^0.5 (PPO would clip it at 1.2; KL-Cov does not);
    # c = [3, −1, −3, 1]; k = max(1, ⌊0.25·4⌋) = 1 → token 0 gets + 1·|0.5|:
    # [−3e^0.5 + 0.5, −1, 3, 1] → (−4.946163812 + 0.5 + 3)/4 = −0.361540953
    old = [[-0.6, -2.1, -0.1, -2.1]]
    inp = _inp(_COV_LP, old, _COV_A)
    out = kl_cov(inp, kl_cov_ratio=0.25, ppo_kl_coef=1.0)
    expected = (-3 * math.exp(0.5) + 0.5 - 1 + 3 + 1) / 4
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    # ∂/∂ℓ₀ = (−3e^0.5 + 1)/4; others −A/4 (r = 1)
    g0 = (-3 * math.exp(0.5) + 1) / 4
    torch.testing.assert_close(
        _grad(out, inp), torch.tensor([[g0, -0.25, 0.75, 0.25]], dtype=F64), rtol=1e-12, atol=0
    )
    assert out.metrics["touched_frac"] == pytest.approx(0.25)
    assert "clip_frac" not in out.metrics


def test_kl_cov_penalises_exactly_the_top_k_covariance_tokens() -> None:
    inp = _random_case(11, b=5, t=8, spread=0.5)
    cov, _ = _cov_reference(inp)
    m = inp.response_mask
    n = int(m.sum())
    rho = 0.15
    k = max(1, int(rho * n))
    keyed = torch.where(m, cov, torch.tensor(-math.inf, dtype=F64)).reshape(-1)
    top = torch.zeros(keyed.shape, dtype=torch.bool)
    top[torch.argsort(keyed, descending=True)[:k]] = True
    top = top.reshape(m.shape)
    out = kl_cov(inp, kl_cov_ratio=rho, ppo_kl_coef=0.7)
    # unclipped −r·A everywhere, + 0.7·|log r| on the top-k tokens (token-mean over n)
    lp, old, adv = inp.logprobs, inp.old_logprobs, inp.advantages
    tok = -adv * torch.exp(lp - old) + torch.where(top, 0.7 * (lp - old).abs(), 0.0)
    ref = torch.where(m, tok, 0.0).sum() / n
    torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=1e-14)
    assert out.metrics["touched_tokens"] == k


# --- forking tokens -----------------------------------------------------------------------


def _fork_case(entropy=(3.0, 1.0, 2.0, 0.5)) -> PolicyLossInput:
    lp = [[-1.0] * len(entropy)]
    return _inp(lp, lp, [[1.0, 2.0, 3.0, 4.0]], entropy=torch.tensor([entropy], dtype=F64))


@pytest.mark.parametrize(
    ("name", "rho", "expected"),
    [
        # H = [3, 1, 2, 0.5], on-policy token losses −A = [−1, −2, −3, −4]
        ("forking_tokens", 0.5, (-1 - 3) / 2),  # top ⌈2⌉ = tokens 0, 2; renormalised over 2
        ("forking_tokens_trl", 0.5, (-1 - 3) / 4),  # median 1.5 → tokens 0, 2; ÷ all 4
        ("forking_tokens_bottom", 0.5, (-2 - 4) / 2),  # complement: tokens 1, 3
        ("forking_tokens", 0.2, -1.0),  # ⌈0.8⌉ = 1 → token 0
        ("forking_tokens_trl", 0.2, -1 / 4),  # q0.8 = 2 + 0.4·(3 − 2) = 2.4 → token 0; ÷ 4
        ("forking_tokens_bottom", 0.2, (-2 - 3 - 4) / 3),  # all but token 0
    ],
)
def test_forking_hand_computed(name: str, rho: float, expected: float) -> None:
    out = POLICY_LOSSES.get(name)(_fork_case(), rho=rho)
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.01, 1.0))
def test_forking_mask_is_top_rho_quantile_and_bottom_is_complement(seed: int, rho: float) -> None:
    inp = _random_case(seed, b=3, t=7)
    m = inp.response_mask
    n = int(m.sum())
    k = max(1, math.ceil(rho * n - 1e-4))  # official ⌈ρN⌉ = int(ρN + 0.9999)
    top_out = forking_tokens(inp, rho=rho, clip_high=1e9, clip_low=1.0, dual_clip=None)
    top = (_grad(top_out, inp) != 0) & m
    bottom_out = forking_tokens(
        inp, rho=rho, select="bottom", clip_high=1e9, clip_low=1.0, dual_clip=None
    )
    bottom = (_grad(bottom_out, inp) != 0) & m
    assert int(top.sum()) == k == top_out.metrics["effective_tokens"]
    h = inp.entropy
    if k < n:
        assert float(h[top].min()) >= float(h[m & ~top].max())
    assert not bool((top & bottom).any())
    assert torch.equal(top | bottom, m)


# --- batch-scope selection and micro-batch invariance -------------------------------------

_SELECTING = [
    ("ppo_clip", {}),
    ("reinforce", {"form": "ratio"}),
    ("clip_cov", {"clip_cov_ratio": 0.1, "clip_cov_lb": 0.0, "clip_cov_ub": 100.0, "seed": 5}),
    ("kl_cov", {"kl_cov_ratio": 0.1}),
    ("forking_tokens", {}),
    ("forking_tokens_trl", {}),
    ("forking_tokens_bottom", {}),
]


def _slice(inp: PolicyLossInput, lo: int, hi: int, sel, counts) -> PolicyLossInput:
    return PolicyLossInput(
        inp.logprobs[lo:hi],
        inp.old_logprobs[lo:hi],
        inp.advantages[lo:hi],
        inp.response_mask[lo:hi],
        ref_logprobs=inp.ref_logprobs[lo:hi],
        entropy=inp.entropy[lo:hi],
        selection=sel,
        **counts,
    )


@pytest.mark.parametrize(("name", "params"), _SELECTING)
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_batch_scope_selection_independent_of_micro_batch_size(name, params, agg) -> None:
    base = _random_case(21, b=8, t=6, spread=0.5)
    m = base.response_mask
    counts = {"global_tokens": int(m.sum()), "global_sequences": 8, "max_response_length": 6}
    fn = POLICY_LOSSES.get(name)
    takes_scope = "selection_scope" in inspect.signature(fn).parameters
    extra = {**params, "kl_coef": 0.1, "aggregation": agg}
    if takes_scope:
        extra["selection_scope"] = "batch"
    sel = prepare_selection(name, base, **extra) if takes_scope else None
    if not takes_scope:
        assert prepare_selection(name, base, **extra) == {}
    results = []
    for size in (8, 1, 3, 5):
        lp = base.logprobs.detach().clone().requires_grad_(True)
        inp = PolicyLossInput(
            lp, base.old_logprobs, base.advantages, m, base.ref_logprobs, base.entropy
        )
        total, touched = torch.zeros((), dtype=F64), 0.0
        for lo in range(0, 8, size):
            out = fn(_slice(inp, lo, min(lo + size, 8), sel, counts), **extra)
            total = total + out.loss
            touched += out.metrics["touched_frac"] * out.metrics["response_tokens"]
        (g,) = torch.autograd.grad(total, lp)
        results.append((total.detach(), g, touched))
    full_loss, full_grad, full_touched = results[0]
    for loss, grad, touched in results[1:]:
        torch.testing.assert_close(loss, full_loss, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(grad, full_grad, rtol=1e-12, atol=1e-14)
        assert touched == pytest.approx(full_touched)
    if name in ("clip_cov", "kl_cov"):
        assert full_touched == int(sel["k"]) == max(1, int(0.1 * int(m.sum())))
    if name == "forking_tokens":
        assert full_touched == math.ceil(0.2 * int(m.sum()))


def test_micro_batch_scope_matches_official_per_micro_batch_selection() -> None:
    # in micro-batch scope each micro-batch selects its own ⌈ρ·N_micro⌉ tokens
    base = _random_case(3, b=4, t=5)
    half = _slice(base, 0, 2, None, {})
    n = int(half.response_mask.sum())
    out = forking_tokens(half, rho=0.3)
    assert out.metrics["effective_tokens"] == math.ceil(0.3 * n - 1e-9)


# --- errors, padding, registry ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES.names()))
def test_nan_in_padding_is_harmless(name: str) -> None:
    inp = _random_case(4)
    m = inp.response_mask
    nan = torch.tensor(float("nan"), dtype=F64)
    lp = torch.where(m, inp.logprobs.detach(), nan).requires_grad_(True)
    old = torch.where(m, inp.old_logprobs, nan)
    ent = torch.where(m, inp.entropy, nan)
    if name == "entropy_bonus":  # an entropy with gradient through θ, NaN only in padding
        ent = torch.where(m, inp.entropy * torch.where(m, lp, 0.0).exp(), nan)
    logits = None
    if name in ("siren", "clip_v"):  # need the distribution; NaN logits only in padding
        g = torch.Generator().manual_seed(0)
        base = torch.randn(*m.shape, 7, generator=g, dtype=F64)
        logits = torch.where(m[..., None], base + torch.where(m, lp, 0.0)[..., None], nan)
    info = None
    if name == "ares":  # needs the group structure
        b = m.shape[0]
        info = {"group": torch.arange(b) // 2, "correct": (torch.arange(b) % 2).double(),
                "pass_rate": torch.full((b,), 0.5, dtype=F64)}  # fmt: skip
    bad = PolicyLossInput(lp, old, inp.advantages, m, entropy=ent, logits=logits,
                          sequence_info=info)  # fmt: skip
    out = POLICY_LOSSES.get(name)(bad)
    (g,) = torch.autograd.grad(out.loss, lp)
    assert math.isfinite(out.loss.item())
    assert torch.isfinite(g).all() and torch.all(g[~m] == 0)


def test_bad_inputs_raise_clear_errors() -> None:
    inp = _random_case(5)
    m = inp.response_mask
    lp = inp.logprobs.detach().clone()
    lp[m.nonzero()[0].tolist()[0], 0] = float("nan")
    with pytest.raises(EntrolabError, match="NaN/inf values at response positions"):
        ppo_clip(PolicyLossInput(lp, inp.old_logprobs, inp.advantages, m))
    with pytest.raises(EntrolabError, match="shape"):
        ppo_clip(PolicyLossInput(inp.logprobs, inp.old_logprobs[:, :3], inp.advantages, m))
    with pytest.raises(EntrolabError, match="PolicyLossInput"):
        ppo_clip({"logprobs": inp.logprobs})  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="token-mean"):
        ppo_clip(inp, aggregation="mean")
    with pytest.raises(EntrolabError, match="prepare_selection"):
        kl_cov(inp, selection_scope="batch")
    with pytest.raises(EntrolabError, match="prepare_selection"):
        forking_tokens(inp, selection_scope="batch")
    with pytest.raises(EntrolabError, match="selection_scope"):
        clip_cov(inp, selection_scope="global")
    with pytest.raises(EntrolabError, match="needs inp.entropy"):
        forking_tokens(PolicyLossInput(inp.logprobs, inp.old_logprobs, inp.advantages, m))
    with pytest.raises(EntrolabError, match="dual_clip"):
        ppo_clip(inp, dual_clip=1.0)
    with pytest.raises(EntrolabError, match="rho"):
        forking_tokens(inp, rho=0.0)
    with pytest.raises(UnknownNameError, match="kl_cov"):
        prepare_selection("klcov", inp)


def test_registry_entries_match_function_defaults() -> None:
    assert rl.policy_losses is POLICY_LOSSES
    assert rl.policy_losses.get("kl_cov") is kl_cov
    assert {"ppo_clip", "clip_cov", "kl_cov", "forking_tokens", "reinforce"} <= set(
        POLICY_LOSSES.names()
    )
    for entry in POLICY_LOSSES:
        assert entry.paper, entry.name
        params = inspect.signature(entry.obj).parameters
        fixed = getattr(entry.obj, "__wrapped_defaults__", {})
        for key, value in entry.defaults.items():
            assert key in params, (entry.name, key)
            assert value == fixed.get(key, params[key].default), (entry.name, key)
