"""Property tests (hypothesis) for the signals core."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.signals import (
    entropy_and_varentropy,
    forking_token_mask,
    group_confidence,
    masked_max,
    masked_mean,
    masked_min,
    self_certainty,
    sliding_window_mean,
    token_entropy,
    token_statistics,
    topk_entropy_bounds,
    window_entropy,
)

SETTINGS = settings(max_examples=100, deadline=None)

seeds = st.integers(0, 2**31 - 1)
vocab = st.integers(1, 300)
rows = st.integers(1, 12)
scales = st.sampled_from([1e-3, 0.3, 1.0, 4.0, 20.0, 100.0])


def _logits(seed: int, n: int, v: int, scale: float, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, v, generator=g, dtype=torch.float64) * scale).to(dtype)


def _seqs(seed: int, n: int, t: int, empty_ok: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Random values [n, t] in [0, 5) and a random right-padded mask; padding holds garbage."""
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(n, t, generator=g, dtype=torch.float64) * 5
    lo = 0 if empty_ok else min(1, t)
    lengths = torch.randint(lo, t + 1, (n,), generator=g)
    m = torch.arange(t) < lengths.unsqueeze(-1)
    return v, m


@SETTINGS
@given(seed=seeds, n=rows, v=vocab, c=st.floats(-50, 50))
def test_uniform_gives_log_v(seed: int, n: int, v: int, c: float) -> None:
    x = torch.full((n, v), c, dtype=torch.float32)
    torch.testing.assert_close(token_entropy(x), torch.full((n,), math.log(v)), rtol=0, atol=2e-5)
    _, var = entropy_and_varentropy(x)
    assert (var.abs() < 1e-5).all()
    assert (self_certainty(x) < 1e-5).all()


@SETTINGS
@given(seed=seeds, n=rows, v=vocab, scale=scales)
def test_entropy_range_and_shift_invariance(seed: int, n: int, v: int, scale: float) -> None:
    x = _logits(seed, n, v, scale)
    h = token_entropy(x)
    assert (h >= 0).all() and (h <= math.log(v) + 1e-12).all()
    shift = _logits(seed + 1, n, 1, 30.0)  # a different constant per row
    torch.testing.assert_close(token_entropy(x + shift), h, rtol=0, atol=1e-9)
    h32 = token_entropy(x.float())
    assert (h32 >= 0).all() and (h32 <= math.log(v) + 1e-5).all()
    assert (self_certainty(x) >= 0).all()


@SETTINGS
@given(seed=seeds, n=st.integers(1, 40), v=vocab, scale=scales, chunk=st.integers(1, 50))
def test_chunk_rows_does_not_change_results(
    seed: int, n: int, v: int, scale: float, chunk: int
) -> None:
    x = _logits(seed, n, v, scale, torch.float32)
    h0, v0 = entropy_and_varentropy(x, chunk_rows=n)
    h1, v1 = entropy_and_varentropy(x, chunk_rows=chunk)
    torch.testing.assert_close(h1, h0, rtol=0, atol=1e-6)
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-6)
    ids = torch.zeros(n, dtype=torch.int64)
    k = min(v, 3)
    a = token_statistics(x, ids, k=k, chunk_rows=n)
    b = token_statistics(x, ids, k=k, chunk_rows=chunk)
    for u, w in zip(a, b, strict=True):
        torch.testing.assert_close(u, w, rtol=1e-5, atol=1e-6)


@SETTINGS
@given(seed=seeds, v=st.integers(2, 400), k=st.integers(1, 30), scale=scales)
def test_topk_bounds_bracket_entropy(seed: int, v: int, k: int, scale: float) -> None:
    k = min(k, v)
    x = _logits(seed, 8, v, scale)
    h = token_entropy(x)
    topk = torch.topk(torch.log_softmax(x, -1), k).values
    lo, hi = topk_entropy_bounds(topk, v)
    assert (lo <= h + 1e-9).all() and (h <= hi + 1e-9).all()


@SETTINGS
@given(
    seed=seeds,
    n=st.integers(1, 8),
    t=st.integers(0, 30),
    garbage=st.sampled_from([0.0, 1e9, math.nan, -math.inf]),
)
def test_padding_values_do_not_affect_masked_results(
    seed: int, n: int, t: int, garbage: float
) -> None:
    v, m = _seqs(seed, n, t)
    dirty = torch.where(m, v, torch.full_like(v, garbage))
    for fn in (masked_mean, masked_min, masked_max):
        assert torch.equal(fn(v, m), fn(dirty, m))
        assert torch.equal(
            fn(v, m)[~m.any(-1)], torch.zeros(int((~m.any(-1)).sum()), dtype=v.dtype)
        )
    if garbage == garbage and abs(garbage) < math.inf:  # window functions need finite inputs
        for mode in ("mean", "lowest", "bottom", "tail"):
            a = group_confidence(v, m, window=4, mode=mode)
            assert torch.equal(a, group_confidence(dirty, m, window=4, mode=mode))
            assert torch.isfinite(a).all()
        assert torch.equal(window_entropy(v, m, 3), window_entropy(dirty, m, 3))


@SETTINGS
@given(
    seed=seeds,
    n=st.integers(1, 8),
    t=st.integers(1, 40),
    w=st.integers(1, 12),
    q=st.floats(0.01, 1.0),
)
def test_group_confidence_orderings(seed: int, n: int, t: int, w: int, q: float) -> None:
    v, m = _seqs(seed, n, t, empty_ok=False)
    means, valid = sliding_window_mean(v, m, w)
    lowest = group_confidence(v, m, window=w, mode="lowest")
    bottom = group_confidence(v, m, window=w, mode="bottom", bottom_q=q)
    mean_of_windows = masked_mean(means, valid)
    top = masked_max(means, valid)
    eps = 1e-12
    assert (lowest <= bottom + eps).all() and (bottom <= mean_of_windows + eps).all()
    assert (mean_of_windows <= top + eps).all()
    assert (valid.sum(-1) >= 1).all()  # every non-empty sequence has at least one window


@SETTINGS
@given(seed=seeds, n=st.integers(1, 6), t=st.integers(1, 60), rho=st.floats(0.01, 1.0))
def test_forking_mask_selects_about_rho(seed: int, n: int, t: int, rho: float) -> None:
    v, m = _seqs(seed, n, t)
    total = int(m.sum())
    sel = forking_token_mask(v, m, rho=rho)
    assert not (sel & ~m).any()
    expected = max(1, int(total * rho + 0.9999)) if total else 0
    assert int(sel.sum()) == expected
    assert abs(int(sel.sum()) - rho * total) <= 1 + 1e-9 or total == 0
    if total:  # selected tokens all have entropy ≥ every unselected real token
        rest = v[m & ~sel]
        assert rest.numel() == 0 or v[sel].min() >= rest.max()
    q = forking_token_mask(v, m, rho=rho, method="quantile")  # distinct values: within 1 of ρn
    assert abs(int(q.sum()) - rho * total) <= 1 + 1e-9 or total == 0
    per_seq = forking_token_mask(v, m, rho=rho, scope="sequence")
    for i in range(n):
        li = int(m[i].sum())
        assert int(per_seq[i].sum()) == (max(1, int(li * rho + 0.9999)) if li else 0)


@SETTINGS
@given(
    seed=seeds, n=st.integers(1, 6), t=st.integers(0, 30), w=st.integers(1, 10), c=st.floats(0, 10)
)
def test_window_entropy_of_constant_is_constant(
    seed: int, n: int, t: int, w: int, c: float
) -> None:
    _, m = _seqs(seed, n, t)
    v = torch.full((n, t), c, dtype=torch.float64)
    out = window_entropy(v, m, w)
    torch.testing.assert_close(out[m], v[m], rtol=1e-12, atol=1e-12)
    assert (out[~m] == 0).all()
