"""Sequence-level aggregations: masked reductions, DeepConf windows, window entropy, forking
tokens, phases. References are plain-Python ports of the rules (DeepConf, verl fork, TRL)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.signals import (
    forking_token_mask,
    group_confidence,
    high_window_entropy_mask,
    masked_max,
    masked_mean,
    masked_min,
    masked_sum,
    phase_mask,
    phase_split,
    sliding_window_mean,
    window_entropy,
)


def _padded(rows: list[list[float]], pad: float = math.nan) -> tuple[torch.Tensor, torch.Tensor]:
    t = max((len(r) for r in rows), default=0)
    v = torch.full((len(rows), t), pad, dtype=torch.float64)
    m = torch.zeros(len(rows), t, dtype=torch.bool)
    for i, r in enumerate(rows):
        v[i, : len(r)] = torch.tensor(r, dtype=torch.float64)
        m[i, : len(r)] = True
    return v, m


def _random_rows(seed: int, n: int = 12, t_max: int = 40) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return [list(rng.uniform(0, 5, size=rng.integers(0, t_max + 1))) for _ in range(n)]


# --- plain-Python references (the DeepConf reference-code rules)


def _ref_windows(c: list[float], w: int) -> list[float]:
    if not c:
        return []
    if len(c) < w:
        return [sum(c) / len(c)]
    return [sum(c[i : i + w]) / w for i in range(len(c) - w + 1)]


def _ref_group(c: list[float], w: int, mode: str, q: float) -> float:
    if not c:
        return 0.0
    if mode == "mean":
        return sum(c) / len(c)
    if mode == "tail":
        tail = c[-w:]
        return sum(tail) / len(tail)
    wm = _ref_windows(c, w)
    if mode == "lowest":
        return min(wm)
    n = max(1, int(len(wm) * q))
    return sum(sorted(wm)[:n]) / n


# ----------------------------------------------------------------- masked reductions


def test_masked_reductions_match_numpy_and_ignore_padding() -> None:
    rows = _random_rows(0)
    v, m = _padded(rows)  # NaN padding must not leak
    for fn, ref in [(masked_mean, np.mean), (masked_min, np.min), (masked_max, np.max)]:
        out = fn(v, m)
        expected = [ref(r) if r else 0.0 for r in rows]
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(masked_sum(v, m).numpy(), [sum(r) for r in rows], rtol=1e-12)


def test_empty_rows_give_the_empty_value() -> None:
    v, m = torch.tensor([[1.0, 2.0], [math.nan, 7.0]]), torch.tensor([[True, True], [False, False]])
    assert masked_mean(v, m).tolist() == [1.5, 0.0]
    assert masked_mean(v, m, empty=-1.0).tolist() == [1.5, -1.0]
    assert masked_min(v, m).tolist() == [1.0, 0.0] and masked_max(v, m).tolist() == [2.0, 0.0]
    assert masked_sum(v, m).tolist() == [3.0, 0.0]
    assert masked_max(torch.zeros(3, 0), torch.zeros(3, 0, dtype=torch.bool)).tolist() == [0.0] * 3
    for mode in ("mean", "lowest", "bottom", "tail"):
        assert group_confidence(v, m, window=2, mode=mode).tolist()[1] == 0.0


def test_integer_mask_and_leading_dims() -> None:
    v = torch.arange(12.0).reshape(2, 2, 3)
    m = torch.tensor([[[1, 1, 0], [1, 0, 0]], [[0, 0, 0], [1, 1, 1]]])
    # means: (0+1)/2, 3, empty → 0, (9+10+11)/3
    assert masked_mean(v, m).tolist() == [[0.5, 3.0], [0.0, 10.0]]


# ----------------------------------------------------------------- sliding windows / DeepConf


def test_sliding_window_mean_hand_case() -> None:
    v, m = _padded([[1, 2, 3, 4, 5], [1, 2, 3], [7], []], pad=99.0)
    means, valid = sliding_window_mean(v, m, window=2)
    # T' = 5 - 2 + 1 = 4 windows per row
    assert means.shape == (4, 4) and valid.shape == (4, 4)
    assert means[0].tolist() == [1.5, 2.5, 3.5, 4.5] and valid[0].all()
    assert means[1].tolist() == [1.5, 2.5, 0.0, 0.0]  # only full windows over real tokens
    assert valid[1].tolist() == [True, True, False, False]
    assert means[2].tolist() == [7.0, 0, 0, 0] and valid[2].tolist() == [True, False, False, False]
    assert not valid[3].any() and (means[3] == 0).all()  # empty sequence: no window


def test_sliding_window_mean_matches_reference() -> None:
    rows = _random_rows(1)
    v, m = _padded(rows)
    for w in (1, 3, 7, 64):
        means, valid = sliding_window_mean(v, m, w)
        for i, r in enumerate(rows):
            np.testing.assert_allclose(means[i][valid[i]].numpy(), _ref_windows(r, w), rtol=1e-12)


def test_group_confidence_hand_case() -> None:
    # windows of 3 over [1..6]: means 2, 3, 4, 5
    v, m = _padded([[1, 2, 3, 4, 5, 6], [2, 4]])
    gc = {mode: group_confidence(v, m, window=3, mode=mode) for mode in ("mean", "lowest", "tail")}
    assert gc["mean"].tolist() == [3.5, 3.0]  # 21/6; (2+4)/2
    assert gc["lowest"].tolist() == [2.0, 3.0]  # min window; short sequence → its mean
    assert gc["tail"].tolist() == [5.0, 3.0]  # (4+5+6)/3; fewer than 3 tokens → all
    # bottom: max(1, int(4 · 0.5)) = 2 lowest windows → (2+3)/2; int(4 · 0.1) = 0 → 1 window
    assert group_confidence(v, m, window=3, mode="bottom", bottom_q=0.5).tolist() == [2.5, 3.0]
    assert group_confidence(v, m, window=3, mode="bottom", bottom_q=0.1).tolist() == [2.0, 3.0]


@pytest.mark.parametrize("mode", ["mean", "lowest", "bottom", "tail"])
@pytest.mark.parametrize("window", [1, 4, 16, 100])
def test_group_confidence_matches_deepconf_reference(mode: str, window: int) -> None:
    rows = _random_rows(2, n=16)
    v, m = _padded(rows)
    out = group_confidence(v, m, window=window, mode=mode, bottom_q=0.3)
    expected = [_ref_group(r, window, mode, 0.3) for r in rows]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_left_padding_equals_right_padding() -> None:
    rows = _random_rows(3)
    v, m = _padded(rows, pad=123.0)
    # left-pad: the same real tokens, in the same order, at the end of each row
    lm = torch.flip(m, dims=[-1])
    lv = torch.full_like(v, 123.0)
    for i, r in enumerate(rows):
        if r:
            lv[i, -len(r) :] = torch.tensor(r, dtype=torch.float64)
    for mode in ("mean", "lowest", "bottom", "tail"):
        a = group_confidence(v, m, window=5, mode=mode)
        b = group_confidence(lv, lm, window=5, mode=mode)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    we_r, we_l = window_entropy(v, m, 4), window_entropy(lv, lm, 4)
    torch.testing.assert_close(we_r[m], we_l[lm], rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------- window entropy / HWE


def test_window_entropy_hand_case() -> None:
    v, m = _padded([[1, 2, 3, 4], [5, 7]], pad=math.nan)
    out = window_entropy(v, m, window=2)
    # forward windows; the last real token's window shrinks to itself; padding → 0
    assert out.tolist() == [[1.5, 2.5, 3.5, 4.0], [6.0, 7.0, 0.0, 0.0]]
    assert window_entropy(v, m, window=1)[0].tolist() == [1, 2, 3, 4]


def test_high_window_entropy_hand_case() -> None:
    v = torch.tensor([[0.0, 0.0, 4.0, 0.0, 0.0]])
    m = torch.ones_like(v, dtype=torch.bool)
    # w = 1 → H̄ = H; 0.8 quantile of [0,0,0,0,4]: position 0.8·4 = 3.2 → 0 + 0.2·(4 − 0) = 0.8
    assert high_window_entropy_mask(v, m, window=1, quantile=0.8).tolist() == [
        [False, False, True, False, False]
    ]
    # constant entropy: nothing strictly exceeds the quantile
    assert not high_window_entropy_mask(torch.ones(2, 6), torch.ones(2, 6, dtype=torch.bool)).any()


def test_high_window_entropy_threshold_matches_torch_quantile() -> None:
    g = torch.Generator().manual_seed(4)
    v = torch.rand(3, 50, generator=g, dtype=torch.float64)
    m = torch.ones_like(v, dtype=torch.bool)
    m[1, 30:] = False
    wbar = window_entropy(v, m, 8)
    for scope in ("sequence", "batch"):
        out = high_window_entropy_mask(v, m, window=8, quantile=0.9, scope=scope)
        for i in range(3):
            pool = wbar[m] if scope == "batch" else wbar[i][m[i]]
            thr = torch.quantile(pool, 0.9)
            assert torch.equal(out[i], (wbar[i] > thr) & m[i])


# ----------------------------------------------------------------- forking tokens


def test_forking_mask_hand_case() -> None:
    h = torch.tensor([[0.1, 0.9, 0.5, 0.9, 0.3]])
    m = torch.ones_like(h, dtype=torch.bool)
    # topk: k = int(5 · 0.2 + 0.9999) = 1; the 0.9 tie goes to the earlier position
    assert forking_token_mask(h, m, rho=0.2).tolist() == [[False, True, False, False, False]]
    # k = int(5 · 0.5 + 0.9999) = 3 → 0.9, 0.9, 0.5
    assert forking_token_mask(h, m, rho=0.5).tolist() == [[False, True, True, True, False]]
    # quantile (TRL): 0.8 quantile of sorted [.1,.3,.5,.9,.9] at 3.2 → 0.9; H ≥ 0.9 keeps both ties
    q = forking_token_mask(h, m, rho=0.2, method="quantile")
    assert q.tolist() == [[False, True, False, True, False]]
    assert forking_token_mask(h, m, rho=1.0).all()
    # the official count is int(nρ + 0.9999), not an exact ceil: n·ρ = 10 · 0.300001 = 3.00001
    # keeps 3 tokens (a literal ceil would keep 4)
    h10 = torch.arange(10.0).unsqueeze(0)
    sel = forking_token_mask(h10, torch.ones_like(h10, dtype=torch.bool), rho=0.300001)
    assert sel.sum() == 3 and sel[0, -3:].all()


def _official_topk_mask(h: torch.Tensor, m: torch.Tensor, ratio: float) -> torch.Tensor:
    # plain port of the verl-fork rule: global top-ceil(ρN) tokens by torch.topk
    flat, fm = h.flatten(), m.flatten()
    vals = flat[fm]
    out = torch.zeros_like(flat, dtype=torch.bool)
    if vals.numel():
        k = max(1, int(len(vals) * ratio + 0.9999))
        idx = torch.topk(vals, k).indices
        out[fm.nonzero().squeeze(1)[idx]] = True
    return out.view_as(h)


@pytest.mark.parametrize("rho", [0.05, 0.2, 0.5, 1.0])
def test_forking_mask_matches_official_rule_and_trl(rho: float) -> None:
    rows = _random_rows(5, n=8, t_max=60)  # continuous values: no ties
    v, m = _padded(rows, pad=100.0)  # huge padding values must never be selected
    assert torch.equal(forking_token_mask(v, m, rho=rho), _official_topk_mask(v, m, rho))
    per_seq = forking_token_mask(v, m, rho=rho, scope="sequence")
    for i in range(len(rows)):
        assert torch.equal(per_seq[i], _official_topk_mask(v[i : i + 1], m[i : i + 1], rho)[0])
    thr = torch.quantile(v[m], 1 - rho)  # TRL get_high_entropy_mask
    assert torch.equal(forking_token_mask(v, m, rho=rho, method="quantile"), (v >= thr) & m)


def test_forking_mask_empty_scope_selects_nothing() -> None:
    v, m = torch.rand(2, 4), torch.zeros(2, 4, dtype=torch.bool)
    assert not forking_token_mask(v, m).any()
    assert not forking_token_mask(v, m, method="quantile", scope="sequence").any()


# ----------------------------------------------------------------- phases


def test_phase_mask_delimiter_spanning_tokens() -> None:
    toks = ["I", " think", "</th", "ink>", "The", " answer"]
    assert phase_mask(toks, "</think>").tolist() == [False, False, False, False, True, True]
    # a token holding the end of the delimiter and answer text belongs to thinking
    toks2 = ["a", "</think", ">42", " ok"]
    assert phase_mask(toks2, "</think>").tolist() == [False, False, False, True]
    assert not phase_mask(["no", " delimiter"], "</think>").any()
    assert phase_mask([], "</think>").shape == (0,)
    toks3 = ["Answer:", "1", " Answer:", "2"]
    assert phase_mask(toks3, "Answer:").tolist() == [False, True, True, True]
    assert phase_mask(toks3, "Answer:", occurrence="last").tolist() == [False, False, False, True]


def test_phase_split() -> None:
    h = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.25])
    think, ans = phase_split(h, ["x", "y", "Answer", ":", " 7"], "Answer:")
    assert think.tolist() == [3.0, 2.0, 1.0, 0.5] and ans.tolist() == [0.25]


# ----------------------------------------------------------------- bad input


_V, _M = torch.rand(2, 5), torch.ones(2, 5, dtype=torch.bool)


@pytest.mark.parametrize(
    ("call", "phrase"),
    [
        (lambda: masked_mean(_V, torch.ones(2, 4, dtype=torch.bool)), "must match"),
        (lambda: masked_mean(_V, torch.ones(2, 5)), "mask must be bool"),
        (lambda: masked_mean(torch.tensor([[math.nan, 1.0]]), torch.ones(1, 2).bool()), "1 NaN"),
        (lambda: sliding_window_mean(_V, _M, 0), "window must be a positive int"),
        (lambda: group_confidence(_V, _M, window=-1), "window must be a positive int"),
        (lambda: group_confidence(_V, _M, mode="median"), "unknown group_confidence mode"),
        (lambda: group_confidence(_V, _M, mode="bottom", bottom_q=0.0), r"bottom_q must be"),
        (lambda: group_confidence(_V * math.inf, _M), "NaN/inf"),
        (lambda: window_entropy(_V, _M, 0), "window must be a positive int"),
        (lambda: high_window_entropy_mask(_V, _M, quantile=1.5), r"quantile must be .* \[0, 1\]"),
        (lambda: high_window_entropy_mask(_V, _M, scope="global"), "scope must be"),
        (lambda: forking_token_mask(_V, _M, rho=0.0), r"rho must be .* \(0, 1\]"),
        (lambda: forking_token_mask(_V, _M, rho=1.5), r"rho must be"),
        (lambda: forking_token_mask(_V, _M, rho=math.nan), r"rho must be"),
        (lambda: forking_token_mask(_V, _M, method="random"), "method must be"),
        (lambda: forking_token_mask(_V, _M[:, :3]), "must match"),
        (lambda: phase_mask(["a"], ""), "non-empty string"),
        (lambda: phase_split(torch.zeros(3), ["a", "b"], "x"), "one text piece per token"),
    ],
)
def test_bad_input_errors(call, phrase: str) -> None:
    with pytest.raises(EntrolabError, match=phrase):
        call()


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0, 0), (7,)])
def test_degenerate_shapes(shape: tuple[int, ...]) -> None:
    v, m = torch.rand(*shape), torch.ones(*shape, dtype=torch.bool)
    lead = shape[:-1]
    assert masked_mean(v, m).shape == lead
    for mode in ("mean", "lowest", "bottom", "tail"):
        assert group_confidence(v, m, window=3, mode=mode).shape == lead
    means, valid = sliding_window_mean(v, m, 3)
    assert means.shape == (*lead, max(1, shape[-1] - 2)) == valid.shape
    for fn in (window_entropy, high_window_entropy_mask, forking_token_mask):
        assert fn(v, m).shape == shape
    if shape[-1] == 0:  # no tokens: nothing selected, scores 0
        assert (group_confidence(v, m, window=3, mode="bottom") == 0).all()
