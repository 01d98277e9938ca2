"""CK-PLUG: hand-computed adjustments, properties against an independent numpy transcription,
batched generation against row-by-row and against HF generate with the logits processor, and the
counterfactual-context sweep on the embedded model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import entropy as scipy_entropy
from transformers import LogitsProcessorList

from entrolab.decoding.ckplug import (
    _adjust,
    candidate_mask,
    ckplug_logits,
    confidence_gain,
    relative_uncertainty,
)
from entrolab.decoding.ckplug_generation import CKPlugLogitsProcessor, ckplug_generate
from entrolab.errors import EntrolabError
from entrolab.models import tiny_model

LN2 = math.log(2.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


NEG = float("-inf")


def logp(*probs: float) -> list[float]:
    return [math.log(p) if p > 0 else NEG for p in probs]


# Row 0: p^c = [1/2, 1/4, 1/8, 1/8] → H^c = (1/2·1 + 1/4·2 + 2·1/8·3) ln2 = 1.75 ln2;
#        p^p uniform over 4    → H^p = 2 ln2.  CG = 0.25 ln2 > 0.
#        released: CG − H^c = −1.5 ln2 < 0 → triggered;  paper: CG < 0 is false → not triggered.
# Row 1: p^c uniform (H^c = 2 ln2), p^p = [1/2, 1/4, 1/8, 1/8] (H^p = 1.75 ln2). CG = −0.25 ln2
#        → triggered under both rules.
# Row 2: p^c one-hot (H^c = 0), p^p uniform (H^p = 2 ln2): CG = 2 ln2, CG − H^c = 2 ln2 ≥ 0
#        → triggered under neither rule; z^c must come back unchanged (-inf included).
Z_CTX = torch.tensor(
    [logp(0.5, 0.25, 0.125, 0.125), logp(0.25, 0.25, 0.25, 0.25), [0.0, NEG, NEG, NEG]],
    dtype=torch.float64,
)
Z_PAR = torch.tensor(
    [logp(0.25, 0.25, 0.25, 0.25), logp(0.5, 0.25, 0.125, 0.125), logp(0.25, 0.25, 0.25, 0.25)],
    dtype=torch.float64,
)


def test_confidence_gain_hand_computed():
    cg = confidence_gain(Z_CTX, Z_PAR)
    torch.testing.assert_close(cg, torch.tensor([0.25, -0.25, 2.0]) * LN2, rtol=0, atol=1e-6)


def test_fixed_mode_hand_computed_both_triggers():
    # α = 0.25: z̃ = 0.25 ℓ^p + 0.75 (ℓ^c − ℓ^p). Candidates: V = 4 ≤ select_top = 10 → all.
    # Row 0: ℓ^p = −2 ln2 each; ℓ^c − ℓ^p = [ln2, 0, −ln2, −ln2]
    #        → z̃ = ln2·[−0.5 + 0.75, −0.5, −0.5 − 0.75, −0.5 − 0.75] = ln2·[0.25, −0.5, −1.25, −1.25]
    # Row 1: ℓ^p = −ln2·[1, 2, 3, 3]; ℓ^c − ℓ^p = ln2·[−1, 0, 1, 1]
    #        → z̃ = ln2·[−0.25 − 0.75, −0.5, −0.75 + 0.75, 0] = ln2·[−1, −0.5, 0, 0]
    out, trig = ckplug_logits(Z_CTX, Z_PAR, 0.25, trigger="released")
    assert trig.tolist() == [True, True, False]
    torch.testing.assert_close(out[0], torch.tensor([0.25, -0.5, -1.25, -1.25]) * LN2)
    torch.testing.assert_close(out[1], torch.tensor([-1.0, -0.5, 0.0, 0.0]) * LN2)
    assert torch.equal(out[2], Z_CTX[2].float())

    out, trig = ckplug_logits(Z_CTX, Z_PAR, 0.25, trigger="paper")
    assert trig.tolist() == [False, True, False]
    assert torch.equal(out[0], Z_CTX[0].float())  # untriggered: z^c as given (not renormalised)
    torch.testing.assert_close(out[1], torch.tensor([-1.0, -0.5, 0.0, 0.0]) * LN2)


def test_adaptive_mode_hand_computed():
    # Row 0: H^c = 1.75 L, H^p = 2 L (L = ln2). κ = 1 + 0.25/3.75 = 16/15;
    # H^c + κH^p = (1.75 + 32/15) L = (233/60) L; w_p = 3.5/(233/60) = 210/233,
    # w_c = 4/(233/60) = 240/233. z̃ = w_p ℓ^p + w_c (ℓ^c − ℓ^p), ℓ^p = −2L:
    #   token 0: (−420 + 240)/233 L; token 1: −420/233 L; tokens 2, 3: (−420 − 240)/233 L.
    out, trig = ckplug_logits(Z_CTX, Z_PAR)  # alpha=None → adaptive
    assert trig.tolist() == [True, True, False]
    expect = torch.tensor([-180.0, -420.0, -660.0, -660.0]) / 233 * LN2
    torch.testing.assert_close(out[0], expect)
    # Row 1: H^c = 2L, H^p = 1.75L: κ = 16/15, H^c + κH^p = (2 + 28/15) L = (58/15) L;
    # w_p = 4/(58/15) = 30/29, w_c = 3.5/(58/15) = 105/116. ℓ^p = −L·[1, 2, 3, 3],
    # ℓ^c − ℓ^p = L·[−1, 0, 1, 1] → z̃ = L·[−30/29 − 105/116, −60/29, −90/29 + 105/116, same].
    w_p, w_c = 30 / 29, 105 / 116
    expect1 = torch.tensor([-w_p - w_c, -2 * w_p, -3 * w_p + w_c, -3 * w_p + w_c]) * LN2
    torch.testing.assert_close(out[1], expect1)
    out2, _ = ckplug_logits(Z_CTX, Z_PAR, adaptive=True, trigger="paper")
    torch.testing.assert_close(out2[1], expect1)
    assert torch.equal(out2[0], Z_CTX[0].float())


def test_candidate_mask_hand_computed():
    # relative_top 0.1: context keeps p ≥ 0.6·0.1 = 0.06 → tokens {0, 1};
    # parametric keeps p ≥ 0.7·0.1 = 0.07 → {0, 1, 2}; union {0, 1, 2}.
    lc = torch.tensor([logp(0.6, 0.3, 0.05, 0.04, 0.01)])
    lp = torch.tensor([logp(0.1, 0.1, 0.7, 0.05, 0.05)])
    m = candidate_mask(lc, lp, select_top=1, relative_top=0.1)
    assert m.tolist() == [[True, True, True, False, False]]
    # select_top 4: the context's threshold drops to its 4th-largest p = 0.04 → adds token 3;
    # the parametric 4th largest is 0.05 (tokens 3 and 4 tie, both kept) → all five.
    m = candidate_mask(lc, lp, select_top=4, relative_top=0.1)
    assert m.tolist() == [[True] * 5]
    # Masked tokens get −inf in the adjusted logits of a triggered row.
    # H^c = 0.992 nats, H^p = 1.010 nats: released trigger H^p < 2H^c holds.
    out, trig = ckplug_logits(lc, lp, 0.5, select_top=1, relative_top=0.1)
    assert trig.tolist() == [True]
    assert torch.isinf(out[0, 3:]).all() and torch.isfinite(out[0, :3]).all()


def test_zero_probability_tokens_give_no_nan():
    # token 1 has p = 0 without the context but is a candidate with it: α = 0 gives it the
    # largest score (ℓ^c − ℓ^p → +∞, floored at 1e4) instead of NaN; token 3 (p = 0 in both) stays −inf.
    zc = torch.tensor([[0.0, 0.0, -1.0, NEG]])
    zp = torch.tensor([[0.0, NEG, 0.0, NEG]])
    out, trig = ckplug_logits(zc, zp, 0.0, trigger="released")
    assert trig.tolist() == [True]  # H^p = ln 2 < 2 H^c
    assert not torch.isnan(out).any() and out[0].argmax() == 1 and out[0, 3] == NEG


def test_relative_uncertainty_hand_computed():
    # (1 − 3)/(1 + 3) = −0.5; (2 − 0)/(2 + 0) = 1; both zero → 0.
    out = relative_uncertainty(torch.tensor([1.0, 2.0, 0.0]), torch.tensor([3.0, 0.0, 0.0]))
    assert out.tolist() == [-0.5, 1.0, 0.0]
    with pytest.raises(EntrolabError, match="≥ 0"):
        relative_uncertainty(torch.tensor([-1.0]), torch.tensor([1.0]))


# ---------------------------------------------------------------- properties vs numpy reference
def _np_entropy(z: np.ndarray) -> np.ndarray:
    return np.array([scipy_entropy(np.exp(r - r.max()) / np.exp(r - r.max()).sum()) for r in z])


def _np_ckplug(zc, zp, alpha, trigger, select_top, relative_top):
    """Direct float64 transcription, one row at a time."""
    out, trig = np.empty_like(zc), []
    for i in range(zc.shape[0]):
        lc = zc[i] - np.logaddexp.reduce(zc[i])
        lp = zp[i] - np.logaddexp.reduce(zp[i])
        hc, hp = _np_entropy(zc[i : i + 1])[0], _np_entropy(zp[i : i + 1])[0]
        t = (hp - hc - abs(hc) < 0) if trigger == "released" else (hp - hc < 0)
        trig.append(t)
        if not t:
            out[i] = zc[i]
            continue
        if alpha is None:
            kappa = 1 + abs(hc - hp) / (hc + hp)
            wp, wc = 2 * hc / (hc + kappa * hp), 2 * hp / (hc + kappa * hp)
        else:
            wp, wc = alpha, 1 - alpha
        keep = np.zeros(zc.shape[1], bool)
        for lx in (lc, lp):
            kth = np.sort(lx)[::-1][min(select_top, len(lx)) - 1]
            keep |= lx >= min(lx.max() + math.log(relative_top), kth)
        out[i] = np.where(keep, wp * lp + wc * (lc - lp), -np.inf)
    return out, np.array(trig)


def _rand(seed: int, rows: int, vocab: int, scale_c: float, scale_p: float):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=g) * scale_c, torch.randn(
        rows, vocab, generator=g
    ) * scale_p


@given(
    seed=st.integers(0, 10_000),
    vocab=st.integers(2, 40),
    scales=st.tuples(st.floats(0.1, 6.0), st.floats(0.1, 6.0)),
    alpha=st.one_of(st.none(), st.floats(0.0, 1.0)),
    trigger=st.sampled_from(["released", "paper"]),
    select_top=st.integers(1, 12),
    relative_top=st.floats(0.001, 1.0),
)
@settings(max_examples=60, deadline=None)
def test_matches_numpy_transcription(seed, vocab, scales, alpha, trigger, select_top, relative_top):
    zc, zp = _rand(seed, 5, vocab, *scales)
    zc64, zp64 = zc.double(), zp.double()
    before = (zc64.clone(), zp64.clone())
    out, trig = ckplug_logits(
        zc64, zp64, alpha, trigger=trigger, select_top=select_top, relative_top=relative_top,
        candidates_only=False,
    )  # fmt: skip
    assert torch.equal(zc64, before[0]) and torch.equal(zp64, before[1])  # never in place
    ref, ref_trig = _np_ckplug(zc64.numpy(), zp64.numpy(), alpha, trigger, select_top, relative_top)
    hc, hp = _np_entropy(zc64.numpy()), _np_entropy(zp64.numpy())
    clear = np.abs((hp - 2 * hc) if trigger == "released" else (hp - hc)) > 1e-5
    assert (trig.numpy() == ref_trig)[clear].all()
    rows = torch.from_numpy(clear)
    torch.testing.assert_close(
        out[rows].double(), torch.from_numpy(ref)[rows], rtol=1e-5, atol=1e-5
    )


@given(
    seed=st.integers(0, 10_000),
    vocab=st.integers(2, 30),
    trigger=st.sampled_from(["released", "paper"]),
)
@settings(max_examples=40, deadline=None)
def test_alpha_one_is_parametric_on_candidates(seed, vocab, trigger):
    zc, zp = _rand(seed, 6, vocab, 2.0, 2.0)
    out, trig = ckplug_logits(zc, zp, 1.0, trigger=trigger)
    keep = candidate_mask(zc.log_softmax(-1), zp.log_softmax(-1))
    par = torch.where(keep, zp.log_softmax(-1), torch.full_like(zp, NEG))
    assert torch.allclose(out[trig], par[trig], atol=1e-6)
    # untriggered rows: the context logits with non-candidates masked (the official code)
    assert torch.equal(out[~trig], zc.masked_fill(~keep, NEG)[~trig])
    cg = confidence_gain(zc, zp)
    ref = _np_entropy(zp.double().numpy()) - _np_entropy(zc.double().numpy())
    np.testing.assert_allclose(cg.numpy(), ref, rtol=1e-5, atol=1e-5)


@given(seed=st.integers(0, 10_000), alpha=st.one_of(st.none(), st.floats(0.0, 1.0)))
@settings(max_examples=30, deadline=None)
def test_batched_equals_row_by_row(seed, alpha):
    zc, zp = _rand(seed, 7, 25, 3.0, 1.5)
    out, trig = ckplug_logits(zc, zp, alpha)
    for i in range(7):
        o, t = ckplug_logits(zc[i : i + 1], zp[i : i + 1], alpha)
        assert bool(t[0]) == bool(trig[i])
        torch.testing.assert_close(o[0], out[i], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.5}, r"alpha must be a number in \[0, 1\]"),
        ({"alpha": 0.5, "adaptive": True}, "drop alpha"),
        ({"alpha": None, "adaptive": False}, "alpha must be"),
        ({"alpha": 0.5, "trigger": "both"}, "trigger"),
        ({"alpha": 0.5, "select_top": 0}, "select_top"),
        ({"alpha": 0.5, "relative_top": 0.0}, "relative_top"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(EntrolabError, match=match):
        ckplug_logits(Z_CTX, Z_PAR, **kwargs)


def test_bad_logits():
    with pytest.raises(EntrolabError, match="differ in shape"):
        ckplug_logits(torch.zeros(2, 4), torch.zeros(2, 5), 0.5)
    with pytest.raises(EntrolabError, match=r"\[B, V\]"):
        ckplug_logits(torch.zeros(4), torch.zeros(4), 0.5)
    with pytest.raises(EntrolabError, match="NaN"):
        ckplug_logits(torch.tensor([[0.0, math.nan]]), torch.zeros(1, 2), 0.5)


# ------------------------------------------------------------------------ generation (tiny model)
@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=0)


def _pairs(tok):
    ctx = ["context: abc. question xyz", "ctx: q", "a longer context line: 12345. q?"]
    par = ["question xyz", "hello there q", "q?"]
    return [tok(s)["input_ids"] for s in ctx], [tok(s)["input_ids"] for s in par]


@pytest.mark.parametrize("alpha", [0.0, 0.5, None])
def test_generate_batched_equals_row_by_row(tiny, alpha):
    model, tok = tiny
    w, o = _pairs(tok)
    res = ckplug_generate(model, tok, w, o, alpha=alpha, max_new_tokens=10, eos_token_id=[])
    assert res.mask.shape == (3, 10) and bool(res.mask.all())
    for i in range(3):
        one = ckplug_generate(
            model, tok, [w[i]], [o[i]], alpha=alpha, max_new_tokens=10, eos_token_id=[]
        )
        assert one.token_ids[0] == res.token_ids[i]
        torch.testing.assert_close(
            one.confidence_gain[0], res.confidence_gain[i], rtol=0, atol=1e-4
        )
        assert torch.equal(one.triggered[0], res.triggered[i])


def test_generate_first_step_statistics_match_separate_passes(tiny):
    model, tok = tiny
    w, o = _pairs(tok)
    res = ckplug_generate(model, tok, w, o, alpha=0.3, max_new_tokens=2, eos_token_id=[])
    with torch.no_grad():
        zc = torch.stack([model(torch.tensor([s])).logits[0, -1] for s in w])
        zp = torch.stack([model(torch.tensor([s])).logits[0, -1] for s in o])
    # default: entropies over the candidate set, as the official code
    _, _, hc, hp = _adjust(zc, zp, 0.3, None, "released", 10, 0.01)
    torch.testing.assert_close(res.confidence_gain[:, 0], hp - hc, atol=1e-4, rtol=0)
    full = ckplug_generate(
        model, tok, w, o, alpha=0.3, max_new_tokens=2, eos_token_id=[], candidates_only=False
    )
    torch.testing.assert_close(
        full.confidence_gain[:, 0], confidence_gain(zc, zp), atol=1e-4, rtol=0
    )
    adjusted, trig = ckplug_logits(zc, zp, 0.3)
    assert res.triggered[:, 0].tolist() == trig.tolist()
    assert [t[0] for t in res.token_ids] == adjusted.argmax(-1).tolist()


def test_generate_matches_hf_generate_with_processor(tiny):
    model, tok = tiny
    w, o = _pairs(tok)
    res = ckplug_generate(model, tok, w, o, alpha=0.25, max_new_tokens=8, eos_token_id=[])
    width = max(map(len, w))
    ids = torch.full((3, width), tok.pad_token_id)
    attn = torch.zeros(3, width, dtype=torch.int64)
    for i, s in enumerate(w):
        ids[i, width - len(s) :], attn[i, width - len(s) :] = torch.tensor(s), 1
    proc = CKPlugLogitsProcessor(model, o, pad_token_id=tok.pad_token_id, alpha=0.25)
    out = model.generate(
        input_ids=ids, attention_mask=attn, logits_processor=LogitsProcessorList([proc]),
        do_sample=False, max_new_tokens=8, eos_token_id=None, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    assert out[:, width:].tolist() == res.token_ids
    assert torch.equal(torch.stack(proc.triggered, 1), res.triggered)


def test_generate_eos_and_sampling(tiny):
    model, tok = tiny
    w, o = _pairs(tok)
    greedy = ckplug_generate(model, tok, w, o, alpha=0.5, max_new_tokens=6, eos_token_id=[])
    stop = greedy.token_ids[0][0]  # row 0 stops right after its first token
    res = ckplug_generate(model, tok, w, o, alpha=0.5, max_new_tokens=6, eos_token_id=stop)
    assert res.token_ids[0] == [stop] and res.finish_reasons[0] == "eos"
    assert res.mask[0].tolist() == [True] + [False] * (res.mask.shape[1] - 1)
    assert float(res.confidence_gain[0, 1:].abs().sum()) == 0.0
    for i in (1, 2):  # other rows continue as before, up to the first `stop` they emit
        g = greedy.token_ids[i]
        expect = g[: g.index(stop) + 1] if stop in g else g
        assert res.token_ids[i] == expect
    # near-zero temperature sampling is greedy; same seed → same samples
    cold = ckplug_generate(model, tok, w, o, alpha=0.5, max_new_tokens=6, eos_token_id=[],
                           greedy=False, temperature=1e-6, seed=3)  # fmt: skip
    assert cold.token_ids == greedy.token_ids
    custom = ckplug_generate(model, tok, w, o, alpha=0.5, max_new_tokens=6, eos_token_id=[],
                             greedy=False, sample_fn=lambda z, gens: z.argmax(-1))  # fmt: skip
    assert custom.token_ids == greedy.token_ids
    hot = [
        ckplug_generate(
            model,
            tok,
            w,
            o,
            alpha=0.5,
            max_new_tokens=6,
            eos_token_id=[],
            greedy=False,
            temperature=2.0,
            seed=s,
        ).token_ids
        for s in (7, 7, 8)
    ]
    assert hot[0] == hot[1] and hot[0] != hot[2]


def test_generate_bad_inputs(tiny):
    model, tok = tiny
    w, o = _pairs(tok)
    with pytest.raises(EntrolabError, match="pair them"):
        ckplug_generate(model, tok, w, o[:2], alpha=0.5)
    with pytest.raises(EntrolabError, match="empty"):
        ckplug_generate(model, tok, [[]], [o[0]], alpha=0.5)
    with pytest.raises(EntrolabError, match="temperature"):
        ckplug_generate(model, tok, w, o, alpha=0.5, greedy=False, temperature=0.0)
    with pytest.raises(EntrolabError, match="max_new_tokens"):
        ckplug_generate(model, tok, w, o, alpha=0.5, max_new_tokens=0)


# ----------------------------------------------------------------------- embedded model (SmolLM2)
FACTS = [("France", "Lyon", "Paris"), ("Germany", "Munich", "Berlin"), ("Italy", "Milan", "Rome")]


def _follows(text: str, ctx: str, par: str) -> str:
    i, j = text.find(ctx), text.find(par)
    if i < 0 and j < 0:
        return "-"
    return "C" if j < 0 or 0 <= i < j else "P"


@pytest.mark.model
def test_alpha_sweep_moves_answer_from_context_to_memory(smollm):
    """Chat format with the counterfactual in the user turn (raw completion works too, see the
    report; this is the format where the context-following side is clean): at α = 0.5 every
    answer follows the context, at α = 1 every answer is the model's own."""
    tok = smollm.tokenizer

    def chat(text: str) -> list[int]:
        msgs = [{"role": "user", "content": text}]
        s = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return tok(s, add_special_tokens=False)["input_ids"]

    with_ctx = [
        chat(
            f"Context: The capital of {c} is {f}.\nAccording to the context, what is the capital "
            f"of {c}? Answer with one word."
        )
        for c, f, _ in FACTS
    ]
    without = [chat(f"What is the capital of {c}? Answer with one word.") for c, _, _ in FACTS]
    answers = {}
    for alpha in (0.5, 1.0):
        res = ckplug_generate(smollm.model, tok, with_ctx, without, alpha=alpha, max_new_tokens=8)
        answers[alpha] = "".join(
            _follows(t, f, p) for t, (_, f, p) in zip(res.texts, FACTS, strict=True)
        )
        assert res.triggered[res.mask].float().mean() > 0.5  # conflict detected on most steps
    assert answers == {0.5: "CCC", 1.0: "PPP"}, answers


# ------------------------------------------------ the official code (byronBBL/CK-PLUG), transcribed
def _official_relative_top_filter(scores, scores_student, relative_top=0.1, filter_value=-1e10,
                                  min_tokens_to_keep=1):  # fmt: skip
    """GenerationMixin.relative_top_filter of the CK-PLUG repository's transformers-4.49 fork."""
    scores_normalized = scores.log_softmax(dim=-1)
    scores_student_normalized = scores_student.log_softmax(dim=-1)
    sorted_logits, _ = torch.sort(scores_normalized, descending=True)
    sorted_logits_student, _ = torch.sort(scores_student_normalized, descending=True)
    min_thresh = sorted_logits[..., min_tokens_to_keep - 1]
    probs_max = torch.max(scores_normalized, dim=-1).values
    probs_thresh = probs_max + np.log(relative_top)
    probs_thresh = torch.min(min_thresh, probs_thresh)
    probs_thresh = probs_thresh.unsqueeze(-1)
    min_thresh_student = sorted_logits_student[..., min_tokens_to_keep - 1]
    probs_max_student = torch.max(scores_student_normalized, dim=-1).values
    probs_thresh_student = probs_max_student + np.log(relative_top)
    probs_thresh_student = torch.min(min_thresh_student, probs_thresh_student)
    probs_thresh_student = probs_thresh_student.unsqueeze(-1)
    mask = (scores_normalized < probs_thresh) & (scores_student_normalized < probs_thresh_student)
    scores[mask] = filter_value
    scores_student[mask] = filter_value
    return scores, scores_student, mask


def _official_ck_step(next_token_logits, next_token_logits_student, alpha, adaptive, select_top):
    """One step of GenerationMixin._ck_decoding (batch of one row, as the official code's
    ``.item()`` calls require), without the logits processors; returns (scores, is_adjust)."""
    next_token_logits, next_token_logits_student, mask = _official_relative_top_filter(
        next_token_logits, next_token_logits_student, relative_top=0.01,
        min_tokens_to_keep=select_top,
    )  # fmt: skip
    probs = torch.nn.functional.softmax(next_token_logits, dim=-1)
    probs_student = torch.nn.functional.softmax(next_token_logits_student, dim=-1)
    entropy = -torch.sum(probs * torch.log(probs + 1e-9), dim=-1).item()
    entropy_student = -torch.sum(probs_student * torch.log(probs_student + 1e-9), dim=-1).item()
    IG = entropy_student - entropy
    e = -1.0
    is_adjust = IG + abs(entropy) * e < 0
    if is_adjust:
        next_token_logits_student[mask] = -1e3
        logits_context = next_token_logits - next_token_logits_student
        next_token_logits_student[mask] = -1e10
        if adaptive:
            diff = abs(entropy - entropy_student)
            normalization_factor = 1 + diff / (entropy + entropy_student)
            next_token_logits_student = (
                2 * next_token_logits_student * entropy
                / (entropy + entropy_student * normalization_factor)
            )  # fmt: skip
            logits_context = (
                2 * logits_context * entropy_student
                / (entropy + entropy_student * normalization_factor)
            )  # fmt: skip
            return next_token_logits_student + logits_context, True
        return alpha * next_token_logits_student + (1 - alpha) * logits_context, True
    return next_token_logits, False


@given(
    seed=st.integers(0, 10_000),
    vocab=st.integers(2, 60),
    scales=st.tuples(st.floats(0.1, 6.0), st.floats(0.1, 6.0)),
    alpha=st.one_of(st.none(), st.floats(0.0, 1.0)),
    select_top=st.integers(1, 12),
)
@settings(max_examples=80, deadline=None)
def test_released_default_equals_official_code(seed, vocab, scales, alpha, select_top):
    """The default (released trigger, candidate-set entropies, masked untriggered output) gives
    the official code's distribution and trigger on every row; the logits may differ by a
    per-row constant (log-softmax vs raw logits), so softmaxes are compared."""
    zc, zp = _rand(seed, 4, vocab, *scales)
    zc, zp = zc.double(), zp.double()
    select_top = min(select_top, vocab)  # the official code indexes the select_top-th token
    out, trig = ckplug_logits(zc, zp, alpha, select_top=select_top, relative_top=0.01)
    for i in range(zc.shape[0]):
        ref, ref_trig = _official_ck_step(  # the official code takes `.float()` logits
            zc[i : i + 1].float(), zp[i : i + 1].float(), alpha, alpha is None, select_top
        )
        assert bool(trig[i]) == ref_trig
        torch.testing.assert_close(
            torch.softmax(out[i].double(), -1),
            torch.softmax(ref[0].double(), -1),
            rtol=1e-5,
            atol=1e-6,
        )


def test_full_vocabulary_variant_differs_from_official_on_some_steps():
    # The audit's finding: full-vocabulary entropies flip the trigger on some random steps.
    flips = 0
    for seed in range(400):
        zc, zp = _rand(seed, 1, 50, 2.0, 2.0)
        _, t_off = ckplug_logits(zc.double(), zp.double(), 0.5)
        _, t_full = ckplug_logits(zc.double(), zp.double(), 0.5, candidates_only=False)
        flips += int(t_off.item() != t_full.item())
    assert 0 < flips < 400
