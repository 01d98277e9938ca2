"""Per-token signals from full logits: references (scipy/numpy/torch), hand cases, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from entrolab.errors import EntrolabError
from entrolab.signals import (
    AGGREGATIONS,
    SIGNALS,
    TokenStatistics,
    check_finite_logits,
    entropy_and_varentropy,
    max_prob,
    self_certainty,
    token_entropy,
    token_nll,
    token_rank,
    token_statistics,
    top_margin,
    topk_confidence,
    varentropy,
)


def _logits(shape: tuple[int, ...], seed: int, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _ref_probs(x: torch.Tensor) -> np.ndarray:
    return torch.softmax(x.double(), dim=-1).numpy()


# ----------------------------------------------------------------- references


@pytest.mark.parametrize("scale", [0.1, 1.0, 5.0, 30.0])
def test_entropy_float64_matches_scipy(scale: float) -> None:
    x = _logits((3, 5, 257), seed=1, scale=scale)
    ref = scipy.stats.entropy(_ref_probs(x), axis=-1)
    h = token_entropy(x)
    assert h.dtype == torch.float64 and h.shape == (3, 5)
    np.testing.assert_allclose(h.numpy(), ref, rtol=1e-9, atol=1e-12)


def test_entropy_float32_matches_scipy_large_vocab() -> None:
    x = _logits((37, 49152), seed=2).float()
    ref = scipy.stats.entropy(_ref_probs(x), axis=-1)
    h = token_entropy(x)
    assert h.dtype == torch.float32
    np.testing.assert_allclose(h.double().numpy(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_entropy_low_precision_input_is_upcast(dtype: torch.dtype) -> None:
    x = _logits((19, 4099), seed=3).to(dtype)
    h = token_entropy(x)
    assert h.dtype == torch.float32
    # same values in float32 and in float64 (scipy): upcasting happens before any arithmetic
    np.testing.assert_allclose(h.numpy(), token_entropy(x.float()).numpy(), atol=1e-5, rtol=0)
    ref = scipy.stats.entropy(_ref_probs(x), axis=-1)
    np.testing.assert_allclose(h.double().numpy(), ref, atol=1e-5, rtol=0)


def test_varentropy_matches_numpy_float64() -> None:
    x = _logits((4, 6, 300), seed=4, scale=2.0)
    p = _ref_probs(x)
    h = -(p * np.log(p)).sum(-1)
    ref = (p * (-np.log(p) - h[..., None]) ** 2).sum(-1)
    np.testing.assert_allclose(varentropy(x).numpy(), ref, rtol=1e-9, atol=1e-12)
    h32, v32 = entropy_and_varentropy(x.float())
    np.testing.assert_allclose(h32.double().numpy(), h, atol=1e-5, rtol=0)
    np.testing.assert_allclose(v32.double().numpy(), ref, atol=2e-5, rtol=1e-5)


def test_self_certainty_is_kl_uniform_to_p() -> None:
    x = _logits((8, 1000), seed=5, scale=1.5)
    p = _ref_probs(x)
    ref = scipy.stats.entropy(np.full_like(p, 1.0 / p.shape[-1]), p, axis=-1)  # KL(U || p)
    np.testing.assert_allclose(self_certainty(x).numpy(), ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(self_certainty(x.float()).double().numpy(), ref, atol=1e-5)


def test_nll_matches_cross_entropy_and_rank_matches_argsort() -> None:
    x = _logits((5, 7, 50), seed=6)
    ids = torch.randint(0, 50, (5, 7), generator=torch.Generator().manual_seed(0))
    ref = F.cross_entropy(x.reshape(-1, 50), ids.reshape(-1), reduction="none").reshape(5, 7)
    torch.testing.assert_close(token_nll(x, ids), ref, rtol=1e-12, atol=1e-12)
    order = torch.argsort(x, dim=-1, descending=True)  # no ties in continuous random logits
    ref_rank = (order == ids.unsqueeze(-1)).nonzero()[:, -1].reshape(5, 7)
    assert torch.equal(token_rank(x, ids, chunk_rows=3), ref_rank)


def test_max_prob_and_margin_match_softmax() -> None:
    x = _logits((6, 40), seed=7)
    p = torch.softmax(x, -1)
    top2 = torch.topk(p, 2).values
    torch.testing.assert_close(max_prob(x), top2[:, 0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(top_margin(x), top2[:, 0] - top2[:, 1], rtol=1e-12, atol=1e-14)
    lm = torch.log(top2[:, 0]) - torch.log(top2[:, 1])
    torch.testing.assert_close(top_margin(x, "logprob"), lm, rtol=1e-10, atol=1e-12)


def test_topk_confidence_formula() -> None:
    lp = torch.log(torch.tensor([[0.5, 0.25, 0.125], [0.9, 0.05, 0.05]], dtype=torch.float64))
    # C = -(1/3)(ln .5 + ln .25 + ln .125) = (1/3)(1 + 2 + 3) ln 2 = 2 ln 2
    expected0 = 2 * math.log(2)
    expected1 = -(math.log(0.9) + 2 * math.log(0.05)) / 3
    torch.testing.assert_close(
        topk_confidence(lp), torch.tensor([expected0, expected1], dtype=torch.float64)
    )


@pytest.mark.parametrize("k", [0, 1, 20])
def test_token_statistics_matches_individual_functions(k: int) -> None:
    x = _logits((13, 500), seed=8).float()
    x[3, 7] = -math.inf  # processed logits: a masked token
    chosen = torch.randint(0, 500, (13,), generator=torch.Generator().manual_seed(1))
    chosen[3] = 7  # a masked token was "chosen": logprob -inf, rank = number of finite logits
    st = token_statistics(x, chosen, k=k, chunk_rows=4)
    assert isinstance(st, TokenStatistics)
    h, v = entropy_and_varentropy(x)
    torch.testing.assert_close(st.entropy, h, rtol=0, atol=1e-6)
    torch.testing.assert_close(st.varentropy, v, rtol=0, atol=1e-5)
    torch.testing.assert_close(st.self_certainty, self_certainty(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(st.logprob, -token_nll(x, chosen), rtol=0, atol=1e-6)
    assert torch.equal(st.rank, token_rank(x, chosen))
    assert st.logprob[3] == -math.inf and st.rank[3] == 499 and st.self_certainty[3] == math.inf
    vals, ids = torch.topk(torch.log_softmax(x, -1), k)
    assert st.topk_ids.shape == (13, k) and st.topk_ids.dtype == torch.int64
    assert torch.equal(st.topk_ids, ids)
    assert st.topk_logprobs.dtype == torch.float32
    torch.testing.assert_close(st.topk_logprobs, vals, rtol=0, atol=1e-6)


def test_token_statistics_without_validation_gives_same_numbers() -> None:
    x = _logits((5, 64), seed=9).float()
    chosen = torch.tensor([0, 1, 2, 3, 4])
    a, b = token_statistics(x, chosen, k=3), token_statistics(x, chosen, k=3, validate=False)
    for u, w in zip(a, b, strict=True):
        assert torch.equal(u, w)


# ----------------------------------------------------------------- hand-computed


def test_hand_case_two_tokens() -> None:
    # logits [0, ln 3] → p = [1/4, 3/4]
    x = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    ids = torch.tensor([0])
    # H = -(1/4 ln 1/4 + 3/4 ln 3/4) = ln 4 - (3/4) ln 3 = 1.3862943611 - 0.8239592165
    assert token_entropy(x).item() == pytest.approx(0.5623351446188083, abs=1e-14)
    # Bernoulli surprisal variance: p(1-p)(ln(p1/p2))² = (3/16)(ln 3)² = 0.2263029302
    assert varentropy(x).item() == pytest.approx(3 / 16 * math.log(3) ** 2, abs=1e-14)
    # KL(U||p) = -ln 2 - (1/2)(ln 1/4 + ln 3/4) = (1/2) ln(4/3) = 0.1438410362
    assert self_certainty(x).item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-14)
    assert token_nll(x, ids).item() == pytest.approx(math.log(4), abs=1e-14)  # -ln 1/4
    assert token_rank(x, ids).item() == 1 and token_rank(x, torch.tensor([1])).item() == 0
    assert max_prob(x).item() == pytest.approx(0.75, abs=1e-15)
    assert top_margin(x).item() == pytest.approx(0.5, abs=1e-15)  # 3/4 - 1/4
    assert top_margin(x, space="logprob").item() == pytest.approx(math.log(3), abs=1e-14)


def test_rank_ties_count_strictly_greater() -> None:
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0]])
    # token 3 (logit 2): three logits are > 2 → rank 3; each tied 3.0 gets rank 0
    assert token_rank(x, torch.tensor([3])).item() == 3
    assert token_rank(x, torch.tensor([4])).item() == 0
    assert token_rank(x, torch.tensor([0])).item() == 4


def test_neg_inf_logits_are_masked_tokens() -> None:
    x = _logits((4, 30), seed=10)
    xm = x.clone()
    xm[:, 10:] = -math.inf
    torch.testing.assert_close(token_entropy(xm), token_entropy(x[:, :10]), rtol=1e-12, atol=0)
    torch.testing.assert_close(varentropy(xm), varentropy(x[:, :10]), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(max_prob(xm), max_prob(x[:, :10]))
    assert torch.isinf(self_certainty(xm)).all()
    # huge finite negative logits (torch.finfo.min masking) behave like -inf
    xf = x.float().clone()
    xf[:, 10:] = torch.finfo(torch.float32).min
    h_ref, v_ref = entropy_and_varentropy(x[:, :10].float())
    h_f, v_f = entropy_and_varentropy(xf)
    torch.testing.assert_close(h_f, h_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(v_f, v_ref, rtol=0, atol=1e-6)
    one_hot = torch.full((1, 5), -math.inf)
    one_hot[0, 2] = 1.0
    assert token_entropy(one_hot).item() == 0.0 and varentropy(one_hot).item() == 0.0


def test_input_not_mutated_and_chunking_invariant() -> None:
    x = _logits((33, 77), seed=11).float()
    before = x.clone()
    ref = token_entropy(x, chunk_rows=1000)
    for r in (1, 5, 16, 33):
        torch.testing.assert_close(token_entropy(x, chunk_rows=r), ref, rtol=0, atol=1e-6)
    assert torch.equal(x, before)


def test_entropy_is_differentiable_when_input_requires_grad() -> None:
    x = _logits((3, 9), seed=12).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    token_entropy(x).sum().backward()
    p = torch.softmax(x_ref, -1)
    (-(p * torch.log(p)).sum(-1)).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
    masked = x.detach().clone()
    masked[:, :3] = -math.inf
    masked.requires_grad_(True)
    token_entropy(masked).sum().backward()
    assert torch.isfinite(masked.grad).all()


def test_empty_rows_and_shapes() -> None:
    assert token_entropy(torch.zeros(0, 10)).shape == (0,)
    assert token_entropy(torch.zeros(2, 0, 10)).shape == (2, 0)
    assert token_entropy(torch.zeros(10)).shape == ()  # single distribution [V] → scalar
    assert token_entropy(torch.zeros(10)).item() == pytest.approx(math.log(10), abs=1e-6)


# ----------------------------------------------------------------- bad input


def test_nan_logits_error_names_count_and_first_position() -> None:
    x = torch.zeros(2, 10)
    x[0, 7] = math.nan
    x[1, 2] = math.nan
    x[1, 3] = math.inf
    with pytest.raises(EntrolabError, match=r"3 NaN/inf values \(first at row 0, col 7\)"):
        token_entropy(x)
    with pytest.raises(EntrolabError, match="dtype/overflow"):
        token_statistics(x, torch.zeros(2, dtype=torch.int64), k=3)


def test_pos_inf_logits_error_with_nd_position() -> None:
    x = torch.zeros(2, 3, 10)
    x[1, 2, 4] = math.inf
    with pytest.raises(EntrolabError, match=r"1 NaN/inf values \(first at row \(1, 2\), col 4\)"):
        varentropy(x)


def test_all_neg_inf_row_is_an_error() -> None:
    x = torch.zeros(3, 4)
    x[1] = -math.inf
    for fn in (token_entropy, self_certainty, max_prob, check_finite_logits):
        with pytest.raises(EntrolabError, match="entirely -inf"):
            fn(x)


@pytest.mark.parametrize(
    ("call", "phrase"),
    [
        (lambda: token_entropy(torch.zeros(3, 4, dtype=torch.int64)), "floating-point"),
        (lambda: token_entropy(torch.zeros(3, 0)), "non-empty vocabulary"),
        (lambda: token_entropy(torch.zeros(3, 4), chunk_rows=0), "chunk_rows"),
        (
            lambda: token_statistics(torch.zeros(3, 4), torch.zeros(3).long(), k=5),
            "larger than the vocab",
        ),
        (lambda: token_statistics(torch.zeros(3, 4), torch.zeros(3).long(), k=-1), "non-negative"),
        (lambda: token_statistics(torch.zeros(3, 4), torch.zeros(2).long(), k=2), "one id per"),
        (
            lambda: token_statistics(torch.zeros(3, 4, 5), torch.zeros(3, 4).long(), k=2),
            r"\[B, V\]",
        ),
        (lambda: token_nll(torch.zeros(3, 4), torch.tensor([0, 1, 4])), r"outside \[0, 4\)"),
        (lambda: token_rank(torch.zeros(3, 4), torch.zeros(3)), "integer tensor"),
        (lambda: top_margin(torch.zeros(3, 1)), "at least 2"),
        (lambda: top_margin(torch.zeros(3, 4), space="bits"), "space must be"),
        (lambda: topk_confidence(torch.zeros(3, 0)), "K = 0"),
        (lambda: topk_confidence(torch.tensor([[math.nan, -1.0]])), "NaN"),
    ],
)
def test_bad_input_errors(call, phrase: str) -> None:
    with pytest.raises(EntrolabError, match=phrase):
        call()


# ----------------------------------------------------------------- registries


def test_registries_describe_every_entry() -> None:
    for name in ("entropy", "varentropy", "self_certainty", "topk_confidence", "nll", "rank"):
        assert name in SIGNALS
    assert "Kang et al. 2025" in SIGNALS.entry("self_certainty").paper
    assert "2508.15260" in SIGNALS.entry("topk_confidence").paper
    assert SIGNALS.entry("entropy").paper == ""
    for name in ("mean", "group_confidence", "deepconf_lowest", "forking_tokens"):
        assert name in AGGREGATIONS
    assert "2506.01939" in AGGREGATIONS.entry("forking_tokens").paper
    x = _logits((2, 6), seed=13)
    for entry in SIGNALS:
        if entry.name.startswith(("topk_entropy", "topk_conf", "renorm", "topk_tail")):
            continue
        args = (x, torch.tensor([0, 1])) if entry.name in ("nll", "rank") else (x,)
        assert entry.obj(*args, **entry.defaults).shape == (2,), entry.name
    conf, mask = torch.rand(2, 9), torch.ones(2, 9, dtype=torch.bool)
    low = AGGREGATIONS.get("deepconf_lowest")(conf, mask, window=3)
    assert torch.allclose(
        low, AGGREGATIONS.get("group_confidence")(conf, mask, window=3, mode="lowest")
    )
