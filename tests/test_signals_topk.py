"""Signals from top-k logprobs: entropy bounds bracket the truth, renormalised entropy, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from entrolab.errors import EntrolabError
from entrolab.signals import (
    renormalized_topk_entropy,
    token_entropy,
    topk_entropy_bounds,
    topk_entropy_lower,
    topk_entropy_upper,
    topk_tail_mass,
)


def _case(n: int, v: int, k: int, temperature: float, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g, dtype=torch.float64) * 3.0 / temperature
    h = token_entropy(logits)
    topk = torch.topk(torch.log_softmax(logits, -1), k).values
    return h, topk


@pytest.mark.parametrize(
    ("v", "k"), [(2, 1), (2, 2), (10, 1), (10, 5), (1000, 2), (1000, 20), (32000, 1), (32000, 20)]
)
@pytest.mark.parametrize("temperature", [0.2, 1.0, 5.0])
def test_bounds_bracket_true_entropy(v: int, k: int, temperature: float) -> None:
    h, topk = _case(24, v, k, temperature, seed=v * 31 + k)
    lo, hi = topk_entropy_bounds(topk, v)
    assert lo.dtype == torch.float64
    assert (lo <= h + 1e-12).all() and (h <= hi + 1e-12).all()
    assert (lo <= hi + 1e-12).all()
    # float32 inputs: still bracketing up to float32 rounding of the logprobs
    lo32, hi32 = topk_entropy_bounds(topk.float(), v)
    assert lo32.dtype == torch.float32
    assert (lo32.double() <= h + 2e-5).all() and (h <= hi32.double() + 2e-5).all()


def test_bounds_are_tight_when_tail_is_zero() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 100, generator=g, dtype=torch.float64)
    logits[:, 5:] = -math.inf  # only 5 tokens have mass; top-5 sees all of it
    h = token_entropy(logits)
    topk = torch.topk(torch.log_softmax(logits, -1), 5).values
    lo, hi = topk_entropy_bounds(topk, 100)
    torch.testing.assert_close(lo, h, rtol=0, atol=1e-12)
    torch.testing.assert_close(hi, h, rtol=0, atol=1e-12)
    # top-8 includes three -inf logprobs (p = 0): 0·log 0 = 0, still tight
    top8 = torch.topk(torch.log_softmax(logits, -1), 8).values
    lo8, hi8 = topk_entropy_bounds(top8, 100)
    torch.testing.assert_close(lo8, h, rtol=0, atol=1e-12)
    torch.testing.assert_close(hi8, h, rtol=0, atol=1e-12)
    assert topk_tail_mass(topk).max() < 1e-15


def test_k_equal_vocab_gives_entropy() -> None:
    h, topk = _case(6, 12, 12, 1.0, seed=3)
    lo, hi = topk_entropy_bounds(topk, 12)
    torch.testing.assert_close(lo, h, rtol=0, atol=1e-12)
    torch.testing.assert_close(hi, h, rtol=0, atol=1e-12)


def test_hand_cases() -> None:
    # p = [1/2, 1/4, 1/8, 1/8], |V| = 4, k = 2: P_k = 3/4, m = 1/4,
    # H_part = (1/2) ln 2 + (1/4) ln 4 = ln 2 = 0.6931471806
    # lower = ln 2 + (1/4)(-ln 1/4) = 1.5 ln 2 = 1.0397207708
    # upper = ln 2 - (1/4) ln(1/4) + (1/4) ln(4 - 2) = 1.75 ln 2 = 1.2130075659 = true H
    lp = torch.log(torch.tensor([[0.25, 0.5]], dtype=torch.float64))  # unsorted on purpose
    lo, hi = topk_entropy_bounds(lp, 4)
    assert lo.item() == pytest.approx(1.5 * math.log(2), abs=1e-14)
    assert hi.item() == pytest.approx(1.75 * math.log(2), abs=1e-14)
    assert topk_entropy_lower(lp, 4).item() == lo.item()
    assert topk_entropy_upper(lp, 4).item() == hi.item()
    assert topk_tail_mass(lp).item() == pytest.approx(0.25, abs=1e-15)
    # renormalised top-2: q = [2/3, 1/3], H = ln 3 - (2/3) ln 2 = 0.6365141683
    expected = math.log(3) - 2 / 3 * math.log(2)
    assert renormalized_topk_entropy(lp).item() == pytest.approx(expected, abs=1e-14)


def test_unsorted_input_same_as_sorted() -> None:
    _, topk = _case(8, 500, 10, 1.0, seed=4)
    perm = topk[:, torch.randperm(10, generator=torch.Generator().manual_seed(1))]
    for a, b in zip(topk_entropy_bounds(topk, 500), topk_entropy_bounds(perm, 500), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_tiny_negative_tail_from_rounding_is_clamped() -> None:
    # probabilities that sum to 1 + 1e-7 (float32 rounding on a server): tail treated as 0
    lp = torch.log(torch.tensor([[0.6, 0.4 + 1e-7]], dtype=torch.float64))
    lo, hi = topk_entropy_bounds(lp, 50)
    assert torch.isfinite(lo).all() and torch.isfinite(hi).all()
    assert lo.item() == pytest.approx(hi.item(), abs=1e-15)


def test_k_zero_gives_trivial_bounds() -> None:
    lo, hi = topk_entropy_bounds(torch.zeros(3, 0), 7)
    assert torch.equal(lo, torch.zeros(3))
    torch.testing.assert_close(hi, torch.full((3,), math.log(7)))


def test_renormalized_matches_scipy() -> None:
    _, topk = _case(16, 2000, 20, 2.0, seed=5)
    ref = scipy.stats.entropy(np.exp(topk.numpy()), axis=-1)  # scipy renormalises p
    np.testing.assert_allclose(renormalized_topk_entropy(topk).numpy(), ref, rtol=1e-10)
    assert (renormalized_topk_entropy(topk) <= math.log(20) + 1e-12).all()


@pytest.mark.parametrize(
    ("call", "phrase"),
    [
        (lambda: topk_entropy_bounds(torch.zeros(2, 5), 4), "cannot exceed the vocabulary"),
        (lambda: topk_entropy_bounds(torch.zeros(2, 5), 0), "positive int"),
        (lambda: topk_entropy_bounds(torch.zeros(2, 3) - 0.1, 10), r"sum to .* > 1"),
        (lambda: topk_entropy_bounds(torch.tensor([[math.nan, -1.0]]), 10), "NaN"),
        (lambda: topk_entropy_bounds(torch.tensor([[math.inf, -1.0]]), 10), "NaN/\\+inf"),
        (lambda: renormalized_topk_entropy(torch.zeros(2, 0)), "K = 0"),
        (lambda: renormalized_topk_entropy(torch.full((1, 3), -math.inf)), "entirely -inf"),
        (lambda: topk_tail_mass(torch.zeros(3, 2, dtype=torch.int64)), "floating-point"),
    ],
)
def test_bad_input_errors(call, phrase: str) -> None:
    with pytest.raises(EntrolabError, match=phrase):
        call()
