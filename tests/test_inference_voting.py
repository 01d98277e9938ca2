"""Voting: hand-computed majority/weighted/filtered votes, DeepConf's seven variants, trace scores
against an independent NumPy transcription of DeepConf's formulas, ties, zero weights, errors."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.errors import EntrolabError, UnknownNameError
from entrolab.inference.voting import (
    CONF_QUANTUM,
    DEEPCONF_VARIANTS,
    TRACE_SCORES,
    VOTERS,
    Voter,
    deepconf_votes,
    filter_top,
    percentile,
    token_confidence,
    trace_scores,
    vote,
    weighted_vote,
)
from entrolab.types import Trace


def _trace(confs, text="") -> Trace:
    """A trace whose DeepConf token confidences (k = 1) are exactly ``confs``."""
    n = len(confs)
    return Trace(
        prompt="p",
        text=text,
        token_ids=list(range(n)),
        tokens=["x"] * n,
        logprob=[-c for c in confs],
        entropy=[0.0] * n,
        varentropy=[0.0] * n,
        topk_ids=torch.zeros(n, 1, dtype=torch.int64),
        topk_logprobs=torch.tensor([[-c] for c in confs]).reshape(n, 1),
    )


# ------------------------------------------------------------------------------ plain votes
def test_weighted_and_majority_votes_hand_computed():
    answers = ["7", "3", "7", None, "3", "3"]
    weights = [0.5, 1.0, 0.75, 9.0, 0.25, 0.125]
    v = weighted_vote(answers, weights)
    # "7": 0.5 + 0.75 = 1.25; "3": 1.0 + 0.25 + 0.125 = 1.375; the None trace never votes
    assert v.answer == "3"
    assert v.totals == {"7": 1.25, "3": 1.375}
    assert v.share == pytest.approx(1.375 / 2.625, rel=1e-12)
    assert v.voters == (0, 1, 2, 4, 5)
    m = weighted_vote(answers)  # majority: "3" three votes, "7" two → share 3/5
    assert (m.answer, m.share, m.num_votes) == ("3", 0.6, 5)


def test_ties_go_to_the_answer_counted_first():
    assert weighted_vote(["a", "b", "b", "a"]).answer == "a"
    assert weighted_vote(["b", "a", "a", "b"]).answer == "b"
    # weighted tie: a = 1 + 2 = 3, b = 3 → "b" (its first trace comes first)
    assert weighted_vote(["b", "a", "a"], [3.0, 1.0, 2.0]).answer == "b"
    # float sums are exactly rounded: 0.1 + 0.2 vs 0.3 compares the true sums, not the order
    assert weighted_vote(["x", "x", "y"], [0.1, 0.2, 0.3]).totals["x"] == math.fsum([0.1, 0.2])


def test_zero_weight_trace_does_not_even_change_tie_order():
    # a = 0 (not counted) + 1, b = 1: without the zero-weight trace b comes first → b wins
    v = weighted_vote(["a", "b", "a"], [0.0, 1.0, 1.0])
    assert v.answer == "b" and v.voters == (1, 2)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["1", "2", "3", None]), st.sampled_from([0.0, 0.5, 1.0, 2.5])),
        min_size=1,
        max_size=12,
    ),
    st.integers(min_value=0, max_value=12),
    st.sampled_from(["1", "2", "3", "9", None]),
)
def test_adding_a_zero_weight_trace_changes_nothing(pairs, pos, answer):
    answers, weights = [a for a, _ in pairs], [w for _, w in pairs]
    pos = min(pos, len(answers))
    before = weighted_vote(answers, weights)
    after = weighted_vote(
        [*answers[:pos], answer, *answers[pos:]], [*weights[:pos], 0.0, *weights[pos:]]
    )
    assert after.answer == before.answer
    assert after.totals == before.totals and list(after.totals) == list(before.totals)
    assert after.share == before.share
    assert after.num_votes == before.num_votes


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=20),
    st.floats(0.0, 100.0),
)
def test_percentile_matches_numpy(values, q):
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 6).map(float), min_size=1, max_size=15),
    st.sampled_from([0.1, 0.25, 0.5, 0.9, 1.0]),
)
def test_filter_top_matches_deepconf_rule(scores, eta):
    cut = np.percentile(scores, (1 - eta) * 100)  # DeepConf's filter_top_confidence
    assert filter_top(scores, eta) == [s >= cut for s in scores]


def test_filtered_vote_hand_computed():
    answers, scores = ["1", "1", "1", "2"], [1.0, 1.0, 1.0, 5.0]
    assert vote(answers, None, weighted=False).answer == "1"  # majority 3 : 1
    assert vote(answers, scores).answer == "2"  # weighted 3.0 : 5.0
    # top 10%: percentile 90 of [1, 1, 1, 5] = 1 + 0.7·4 = 3.8 → only the 5.0 trace survives
    v = vote(answers, scores, top=0.1)
    assert (v.answer, v.share, v.voters) == ("2", 1.0, (3,))
    # None answers are excluded before the percentile: [9 (None), 4, 1, 2, 3] → cut over
    # [4, 1, 2, 3] at 50%: 2 + 0.5·(3 − 2) = 2.5 → keeps 4 ("1") and 3 ("1")
    v = vote([None, "1", "2", "2", "1"], [9.0, 4.0, 1.0, 2.0, 3.0], top=0.5)
    assert (v.answer, v.totals, v.voters) == ("1", {"1": 7.0}, (1, 4))


# ---------------------------------------------------------------------------- trace scores
def _deepconf_reference(confs, window, bottom_q=0.1):
    """NumPy transcription of DeepConf's trace scores (mean, tail, bottom-q, lowest window)."""
    c = np.asarray(confs, dtype=np.float64)
    if c.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    mean = c.mean()
    tail = c[-window:].mean()
    if c.size < window:
        return mean, tail, mean, mean
    means = np.array([c[i : i + window].mean() for i in range(c.size - window + 1)])
    n_bottom = max(1, int(len(means) * bottom_q))
    return mean, tail, np.sort(means)[:n_bottom].mean(), means.min()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(0, 4000).map(lambda x: x / 256), min_size=0, max_size=25),
        min_size=1,
        max_size=5,
    ),
    st.integers(1, 8),
    st.sampled_from([0.1, 0.3, 1.0]),
)
def test_trace_scores_match_reference(traces, window, bottom_q):
    objs = [_trace(c) for c in traces]
    got = {
        name: trace_scores(objs, name, k=1, window=window, bottom_q=bottom_q).tolist()
        for name in ("mean", "tail", "bottom_window", "lowest_window")
    }
    for j, confs in enumerate(traces):
        ref = _deepconf_reference(confs, window, bottom_q)
        for name, r in zip(("mean", "tail", "bottom_window", "lowest_window"), ref, strict=True):
            assert got[name][j] == pytest.approx(r, abs=1e-12), (name, confs)


def test_token_confidence_is_minus_mean_topk_logprob_rounded():
    lp = torch.tensor([[-0.1, -2.0, -3.3], [-1.0, -1.0, -1.0]])
    c = token_confidence(lp, k=2)  # uses the first k = 2: −(−0.1 − 2.0)/2 = 1.05; 1.0
    assert c.dtype == torch.float64
    assert torch.allclose(c, torch.tensor([1.05, 1.0], dtype=torch.float64), atol=CONF_QUANTUM)
    assert bool(((c / CONF_QUANTUM) == torch.round(c / CONF_QUANTUM)).all())
    with pytest.raises(EntrolabError, match="topk_logprobs=20"):
        token_confidence(lp, k=20)


# -------------------------------------------------------------------------- DeepConf variants
def test_seven_deepconf_variants_hand_computed():
    t = [_trace([4, 4, 4]), _trace([1, 3, 5]), _trace([2, 2]), _trace([9, 9])]
    answers = ["5", "6", "6", None]
    # window 2: T0 mean 4, tail 4, windows [4, 4] → bottom 4, lowest 4
    #           T1 mean 3, tail (3+5)/2 = 4, windows [2, 4] → bottom (1 window) 2, lowest 2
    #           T2 mean 2, tail 2, windows [2] → 2, 2;  T3 has no answer: never counted
    votes = deepconf_votes(answers, t, k=1, window=2)
    got = {name: (v.answer, v.share) for name, v in votes.items()}
    assert list(got) == list(DEEPCONF_VARIANTS)
    assert got["majority"] == ("6", pytest.approx(2 / 3))
    assert got["mean_confidence_weighted"] == ("6", pytest.approx(5 / 9))  # 4 vs 3 + 2
    assert got["tail_confidence_weighted"] == ("6", pytest.approx(6 / 10))  # 4 vs 4 + 2
    assert got["bottom_window_weighted"] == ("5", 0.5)  # 4 vs 2 + 2: tie → "5" counted first
    assert got["min_window_weighted"] == ("5", 0.5)
    # top 10% by tail: percentile 90 of [4, 4, 2] = 4 → keeps T0, T1 → 4 vs 4 → "5"
    assert got["top10_tail_filtered"] == ("5", 0.5)
    assert votes["top10_tail_filtered"].voters == (0, 1)
    # top 10% by bottom window: percentile 90 of [4, 2, 2] = 2 + 0.8·2 = 3.6 → only T0
    assert got["top10_bottom_window_filtered"] == ("5", 1.0)


def test_registries_list_the_seven_variants_and_four_scores():
    assert set(DEEPCONF_VARIANTS) == set(VOTERS.names())
    assert set(TRACE_SCORES.names()) == {"mean", "tail", "bottom_window", "lowest_window"}
    assert TRACE_SCORES.get("min_window") is TRACE_SCORES.get("lowest_window")
    assert VOTERS.get("top10_tail_filtered") == Voter("tail", True, 0.1)
    assert all(e.paper for e in VOTERS if e.name != "majority")


# ------------------------------------------------------------------------------- bad input
def test_no_votes_is_an_outcome_not_an_error():
    for v in (
        weighted_vote([None, None]),
        weighted_vote(["1", "2"], [0.0, 0.0]),
        vote([None, None], [1.0, 2.0], top=0.1),
    ):
        assert (v.answer, v.share, v.num_votes, v.totals) == (None, 0.0, 0, {})


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: weighted_vote([]), "empty list of traces"),
        (lambda: weighted_vote(["1"], [1.0, 2.0]), "1 answers but 2 weights"),
        (lambda: weighted_vote(["1", "2"], [1.0, -0.5]), "must be >= 0"),
        (lambda: weighted_vote(["1"], [math.inf]), "must be finite"),
        (lambda: weighted_vote([3]), "answer-key strings or None"),
        (lambda: vote(["1"], None, weighted=True), "needs one score per trace"),
        (lambda: filter_top([1.0], 0.0), r"in \(0, 1\]"),
        (lambda: filter_top([], 0.5), "empty list"),
        (lambda: trace_scores([], "mean"), "no traces"),
        (lambda: trace_scores([_trace([1.0])], "mean", k=20), "topk_logprobs=20"),
        (lambda: Voter(None, weighted=True), "needs a trace score"),
        (lambda: deepconf_votes([], []), "empty list of traces"),
    ],
)
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises(EntrolabError, match=match):
        call()


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownNameError, match="top10_tail_filtered"):
        VOTERS.get("top10_tail")
    with pytest.raises(UnknownNameError, match="lowest_window"):
        Voter("lowest", True)
