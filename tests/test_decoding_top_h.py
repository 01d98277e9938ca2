"""Top-H: against unvectorised transcriptions of both greedy rules, transformers' TopHLogitsWarper,
hand-computed cases, and properties (uniform, one-hot, monotone in α, prefixes, batching)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import LogitsProcessorList, TopHLogitsWarper

from entrolab.decoding import TopHLogitsProcessor, top_h, top_h_keep_counts
from entrolab.errors import EntrolabError

SETTINGS = settings(max_examples=60, deadline=None)


# ------------------------------------------------------------------ reference transcriptions
def released_loop(logits_row: torch.Tensor, alpha: float, top_n: int = 100) -> set[int]:
    """The released processor's batch-1 loop, transcribed (nats instead of bits: ratios only).

    p = softmax over the vocabulary; τ = α·(H(top-n renormalised) − log P)·P with P the top-n
    mass (= α·S(n)); add tokens one by one and stop as soon as the partial entropy including the
    *next* token exceeds τ; clamp instead of overrunning the index (α = 1).
    """
    probs = torch.softmax(logits_row.double(), dim=-1)
    top_p, top_i = torch.topk(probs, min(top_n, probs.numel()))
    big_p = float(top_p.sum())
    q = [float(x) / big_p for x in top_p]
    h_q = -sum(x * math.log(x) for x in q if x > 0)
    tau = ((h_q - math.log(big_p)) * big_p) * alpha
    kept: list[int] = []
    ps = [float(x) for x in top_p]
    h = -ps[0] * math.log(ps[0])
    for j, idx in enumerate(top_i.tolist()):
        kept.append(idx)
        if j + 1 >= len(ps):  # the released code would index past the end here
            break
        if ps[j + 1] == 0.0:  # zero-probability tokens are never kept (released: NaN)
            break
        h -= ps[j + 1] * math.log(ps[j + 1])
        if h > tau:
            break
    return set(kept)


def paper_loop(logits_row: torch.Tensor, alpha: float) -> set[int]:
    """The paper's greedy rule over the whole vocabulary: add tokens in descending probability
    while the renormalised kept set's entropy stays ≤ α·H(p); keep at least one."""
    probs = torch.softmax(logits_row.double(), dim=-1)
    order = torch.argsort(probs, descending=True, stable=True).tolist()
    p = [float(probs[i]) for i in order]
    h_p = -sum(x * math.log(x) for x in p if x > 0)
    kept = [order[0]]
    for k in range(2, len(p) + 1):
        if p[k - 1] == 0.0:
            break
        sigma = sum(p[:k])
        h_q = -sum((x / sigma) * math.log(x / sigma) for x in p[:k])
        if h_q > alpha * h_p and alpha < 1:
            break
        kept.append(order[k - 1])
    return set(kept)


def kept_set(out_row: torch.Tensor) -> set[int]:
    return set(torch.isfinite(out_row).nonzero().flatten().tolist())


def random_logits(seed: int, rows: int, vocab: int, scale: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=g, dtype=torch.float64) * scale


# ----------------------------------------------------------------- against the transcriptions
@pytest.mark.parametrize("vocab,top_n", [(60, 100), (300, 100), (500, 20)])
@pytest.mark.parametrize("scale", [0.5, 2.0, 4.0])
def test_released_matches_loop_transcription(vocab, top_n, scale):
    x = random_logits(vocab + int(10 * scale), 6, vocab, scale)
    for alpha in (0.1, 0.3, 0.4, 0.5, 0.8, 0.99):
        out = top_h(x, alpha, mode="released", top_n=top_n)
        for r in range(x.shape[0]):
            assert kept_set(out[r]) == released_loop(x[r], alpha, top_n), (alpha, r)
    # α = 1: the released τ equals S(n) only up to rounding (its loop then overruns or stops a
    # token early); the rule S(k) ≤ S(n) keeps all n, which is what the clamp gives
    assert top_h_keep_counts(x, 1.0, "released", top_n).tolist() == [min(top_n, vocab)] * 6


@pytest.mark.parametrize("vocab,top_n", [(60, 100), (400, 100), (400, 5)])
@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0])
def test_paper_matches_loop_transcription(vocab, top_n, scale):
    # top_n=5 with flat logits forces the window to widen (8×) several times: still exact
    x = random_logits(2 * vocab + int(10 * scale), 5, vocab, scale)
    for alpha in (0.2, 0.4, 0.6, 0.9, 1.0):
        out = top_h(x, alpha, mode="paper", top_n=top_n)
        for r in range(x.shape[0]):
            assert kept_set(out[r]) == paper_loop(x[r], alpha), (alpha, r)


def test_released_equals_transformers_top_h_when_the_vocabulary_fits_in_top_n():
    # transformers renormalises the top-100 first; with V <= 100 that is the whole vocabulary
    x = random_logits(7, 8, 90, 2.5).float()
    for alpha in (0.15, 0.4, 0.7, 0.95):
        assert torch.equal(top_h(x, alpha, top_n=100), TopHLogitsWarper(alpha)(None, x.clone()))


# ------------------------------------------------------------------------- hand-computed case
def test_hand_computed_case_both_modes():
    # p = (1/2, 1/4, 1/8, 1/8); -p·ln p = (0.346574, 0.346574, 0.259930, 0.259930)
    # released: S = (0.346574, 0.693147, 0.953077, 1.213008), budget α·S(4)
    #   α=0.50: τ=0.606504 → S(2) > τ → k=1     α=0.55: τ=0.667154 → S(2)=0.693 > τ → k=1
    #   α=0.60: τ=0.727805 → S(2) ≤ τ < S(3) → k=2   α=0.80: τ=0.970406 → S(3) ≤ τ < S(4) → k=3
    # paper: H(p) = 1.75·ln 2 = 1.213008; H(q_2) = H(2/3, 1/3) = ln 3 − (2/3)ln 2 = 0.636514;
    #   H(q_3) = H(4/7, 2/7, 1/7) = ln 7 − (4/7)ln 4 − (2/7)ln 2 = 0.955700
    #   α=0.50: 0.606504 < 0.6365 → k=1      α=0.55: 0.667154 ≥ 0.6365 → k=2 (modes differ)
    #   α=0.60: 0.727805 → k=2               α=0.80: 0.970406 ≥ 0.9557 → k=3
    x = torch.tensor([[0.5, 0.25, 0.125, 0.125]]).log()
    expected = {0.50: (1, 1), 0.55: (1, 2), 0.60: (2, 2), 0.80: (3, 3)}
    for alpha, (k_released, k_paper) in expected.items():
        assert top_h_keep_counts(x, alpha, "released").item() == k_released, alpha
        assert top_h_keep_counts(x, alpha, "paper").item() == k_paper, alpha
    out = top_h(x, 0.6)
    assert torch.equal(out[0, :2], x[0, :2]) and torch.isinf(out[0, 2:]).all()


# ------------------------------------------------------------------------------- properties
@given(
    n=st.integers(2, 120),
    extra=st.integers(0, 50),
    alpha=st.floats(0.01, 0.999),
    level=st.floats(-5, 5),
)
@SETTINGS
def test_released_keeps_floor_alpha_n_of_a_uniform_top_n(n, extra, alpha, level):
    # uniform over the top n (the rest 8 nats lower): S(k) = k·c, so k = ⌊α n⌋ (≥ 1). Float
    # noise in S is ~1e-6 relative, so α·n within 1e-3 of an integer is skipped.
    assume(abs(alpha * n - round(alpha * n)) > 1e-3)
    x = torch.full((1, n + extra), level - 8.0)
    x[0, :n] = level
    k = top_h_keep_counts(x, alpha, "released", top_n=n).item()
    assert k == max(1, math.floor(alpha * n))


@given(n=st.integers(2, 400), alpha=st.floats(0.05, 0.95))
@SETTINGS
def test_paper_keeps_floor_n_to_the_alpha_of_a_uniform_distribution(n, alpha):
    # H(q_k) = ln k ≤ α ln n  ⇔  k ≤ n^α
    assume(abs(n**alpha - round(n**alpha)) > 1e-3)
    k = top_h_keep_counts(torch.zeros(1, n), alpha, "paper", top_n=7).item()
    assert k == max(1, math.floor(n**alpha))


@given(
    vocab=st.integers(2, 300),
    gap=st.floats(8.0, 30.0),
    drop=st.floats(4.0, 10.0),
    alpha=st.floats(0.01, 0.9),
    mode=st.sampled_from(["released", "paper"]),
)
@SETTINGS
def test_near_one_hot_with_a_decaying_tail_keeps_one_token(vocab, gap, drop, alpha, mode):
    # p_2 ∝ e^-gap, then each next token e^-drop smaller: S(2)/S(n) ≥ 0.95, H(q_2)/H(p) ≥ 0.95
    x = -(gap + drop * torch.arange(vocab - 1, dtype=torch.float64))
    x = torch.cat([torch.zeros(1, dtype=torch.float64), x]).unsqueeze(0)
    assert top_h_keep_counts(x, alpha, mode).item() == 1


@pytest.mark.parametrize("mode", ["released", "paper"])
def test_one_hot_underflow_keeps_one_and_flat_tail_keeps_negligible_mass(mode):
    # tail probabilities that underflow to exactly 0 are never kept
    x = torch.zeros(2, 200)
    x[:, 0] = 200.0
    assert top_h_keep_counts(x, 0.4, mode).tolist() == [1, 1]
    # a flat tail of 99 tokens 30 nats down: each adds the same entropy, so about α·99 of them
    # are kept (documented), carrying ~99·e^-30 ≈ 1e-11 of the mass
    y = torch.zeros(1, 100, dtype=torch.float64)
    y[0, 0] = 30.0
    out = top_h(y, 0.4, mode)
    kept = torch.isfinite(out).sum().item()
    assert 30 <= kept <= 41
    assert torch.softmax(y, -1)[torch.isfinite(out)].sum().item() > 1 - 1e-10


@given(
    seed=st.integers(0, 10_000),
    a1=st.floats(0.01, 1.0),
    a2=st.floats(0.01, 1.0),
    mode=st.sampled_from(["released", "paper"]),
    scale=st.floats(0.1, 5.0),
)
@SETTINGS
def test_kept_set_grows_with_alpha(seed, a1, a2, mode, scale):
    lo, hi = sorted((a1, a2))
    x = random_logits(seed, 4, 150, scale).float()
    small, large = torch.isfinite(top_h(x, lo, mode)), torch.isfinite(top_h(x, hi, mode))
    assert not (small & ~large).any()  # nested: every token kept at α_lo is kept at α_hi


@given(
    seed=st.integers(0, 10_000),
    alpha=st.floats(0.01, 1.0),
    mode=st.sampled_from(["released", "paper"]),
)
@SETTINGS
def test_kept_set_is_a_probability_prefix_and_input_untouched(seed, alpha, mode):
    x = random_logits(seed, 3, 120, 3.0).float()
    x[0, :5] = float("-inf")  # already-removed tokens stay removed
    before = x.clone()
    out = top_h(x, alpha, mode, top_n=30)
    assert torch.equal(x, before)
    keep = torch.isfinite(out)
    assert not keep[0, :5].any()
    assert torch.equal(out[keep], x[keep])  # kept tokens keep their logits
    for r in range(3):
        if (~keep[r]).any():
            assert x[r][keep[r]].min() >= x[r][~keep[r]].max()


def test_batched_leading_dims_agree_with_single_rows():
    x = random_logits(3, 6, 200, 2.0).float().reshape(2, 3, 200)
    for mode in ("released", "paper"):
        out = top_h(x, 0.45, mode, top_n=8)
        assert out.shape == x.shape
        for i in range(2):
            for j in range(3):
                assert torch.equal(out[i, j], top_h(x[i, j : j + 1], 0.45, mode, top_n=8)[0])
                assert torch.equal(out[i, j], top_h(x[i, j], 0.45, mode, top_n=8))


def test_dtypes_are_kept():
    x = random_logits(5, 2, 64, 2.0)
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        out = top_h(x.to(dtype), 0.4)
        assert out.dtype == dtype
        keep = torch.isfinite(out)
        assert torch.equal(out[keep], x.to(dtype)[keep])


# ----------------------------------------------------------------------- processor and errors
def test_processor_in_a_transformers_list_and_diagnostics():
    x = torch.tensor([[0.5, 0.25, 0.125, 0.125]]).log().repeat(2, 1)
    proc = TopHLogitsProcessor(alpha=0.6)
    with pytest.raises(EntrolabError, match="needs a call first"):
        proc.diagnostics()
    out = LogitsProcessorList([proc])(torch.zeros(2, 3, dtype=torch.long), x)
    assert torch.equal(out, top_h(x, 0.6))
    d = proc.diagnostics()
    # kept {1/2, 1/4}: mass 0.75; after: (2/3, 1/3) → H = ln 3 − (2/3) ln 2 = 0.636514
    assert d["kept"].tolist() == [2, 2]
    assert torch.allclose(d["retained_mass"], torch.tensor([0.75, 0.75]), atol=1e-6)
    assert torch.allclose(d["entropy_after"], torch.full((2,), 0.636514), atol=1e-6)
    assert proc(x).shape == x.shape  # the plain warper call works too


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"alpha": True}, "alpha"),
        ({"mode": "exact"}, "mode"),
        ({"top_n": 0}, "top_n"),
        ({"top_n": 2.5}, "top_n"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(EntrolabError, match=match):
        TopHLogitsProcessor(**kwargs)
    with pytest.raises(EntrolabError, match=match):
        top_h(torch.zeros(1, 4), **{"alpha": 0.4, **kwargs})


def test_bad_logits_raise_clear_errors():
    with pytest.raises(EntrolabError, match="NaN"):
        top_h(torch.tensor([[0.0, float("nan"), 1.0]]), 0.4)
    with pytest.raises(EntrolabError, match="entirely -inf"):
        top_h(torch.full((1, 3), float("-inf")), 0.4, "paper")
    with pytest.raises(EntrolabError, match="floating"):
        top_h(torch.zeros(1, 3, dtype=torch.long), 0.4)
    with pytest.raises(EntrolabError, match="torch.Tensor"):
        top_h([[0.0, 1.0]], 0.4)  # type: ignore[arg-type]


def test_drops_into_transformers_generate():
    # the processor inside model.generate: every step's processed scores keep exactly the Top-H
    # set of that step's raw logits (temperature 1; transformers' own top-k/top-p disabled)
    from entrolab.models import tiny_model

    model, tok = tiny_model(seed=0)
    proc = TopHLogitsProcessor(alpha=0.3)
    ids = torch.tensor([tok("hello")["input_ids"]])
    torch.manual_seed(0)
    out = model.generate(
        ids,
        do_sample=True,
        temperature=1.0,
        top_k=None,
        top_p=None,
        logits_processor=LogitsProcessorList([proc]),
        max_new_tokens=4,
        output_scores=True,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    assert len(out.scores) == 4
    for scores, raw in zip(out.scores, out.logits, strict=True):
        assert torch.equal(torch.isfinite(scores), torch.isfinite(top_h(raw, 0.3)))
    assert proc.diagnostics()["kept"].item() == torch.isfinite(out.scores[-1]).sum().item()
