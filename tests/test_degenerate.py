"""Degeneracy warnings: one test per case, each also checking that the collapse it warns about is
real (the scores, traces or votes really coincide), and that a sound setting gives no warning."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.inference.base import make_strategy
from entrolab.inference.degenerate import (
    estimator_warnings,
    filter_warning,
    kept_by_filter,
    strategy_warnings,
    unparseable_warning,
    warmup_warning,
    window_warning,
)
from entrolab.inference.voting import vote
from entrolab.signals.windows import group_confidence
from entrolab.tasks import load_task


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(0, 6), st.integers(0, 10_000))
def test_window_covering_the_reply_makes_all_deepconf_scores_the_mean(length, extra, seed):
    window = length + extra  # >= the reply length
    conf = torch.rand(1, length, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    mask = torch.ones_like(conf, dtype=torch.bool)
    scores = [
        group_confidence(conf, mask, window=window, mode=m)
        for m in ("mean", "lowest", "bottom", "tail")
    ]
    for s in scores[1:]:  # the collapse the warning describes
        torch.testing.assert_close(s, scores[0], rtol=1e-12, atol=1e-12)
    assert window_warning("x", window, length) is not None
    assert window_warning("x", length - 1, length) is None or length == 1


def test_window_warning_for_strategies_and_estimators():
    # deepconf-online: default window 8; replies capped at 8 tokens -> warn; at 64 -> fine
    (line,) = strategy_warnings(make_strategy("deepconf-online", budget=16, max_new_tokens=8))
    assert line.startswith("deepconf-online: window 8 tokens >= the longest reply (8 tokens)")
    assert strategy_warnings(make_strategy("deepconf-online", budget=16, max_new_tokens=64)) == []
    # plain majority never looks at confidences: no window warning whatever the length
    assert strategy_warnings(make_strategy("majority", budget=8, max_new_tokens=4)) == []
    # estimators: the four deepconf_* with their default window 8 at a 8-token budget, one line
    names = ["deepconf_mean", "deepconf_tail", "deepconf_lowest", "max_window_entropy"]
    (line,) = estimator_warnings(names, {}, 8)
    assert line.startswith("deepconf_mean, deepconf_tail, deepconf_lowest: window 8")
    assert line.endswith("these estimators then give identical scores")
    assert estimator_warnings(names, {"deepconf_tail": {"window": 4}}, 8)[0].startswith(
        "deepconf_mean, deepconf_lowest:"
    )
    assert estimator_warnings(names, {}, 64) == []


def test_budget_within_warmup_makes_deepconf_online_spend_majority_tokens(tiny_backend):
    assert warmup_warning(4, 4) is not None and warmup_warning(5, 4) is None
    online = make_strategy("deepconf-online", budget=3, max_new_tokens=16)  # warm-up 4 -> 3
    (line,) = strategy_warnings(online)
    assert line.startswith("deepconf-online: budget 3 <= warmup 3")
    assert strategy_warnings(make_strategy("deepconf-online", budget=5, max_new_tokens=16)) == []
    # the collapse is real: same traces (lengths) and tokens as majority at the same budget
    task = load_task("arithmetic")
    items = task.items(2, seed=0)
    a = online.run(tiny_backend, task, items, seed=0)
    b = make_strategy("majority", budget=3, max_new_tokens=16).run(
        tiny_backend, task, items, seed=0
    )
    assert [o.generated_tokens for o in a] == [o.generated_tokens for o in b]
    assert [o.meta["lengths"] for o in a] == [o.meta["lengths"] for o in b]
    assert all(o.meta["stopped"] == 0 for o in a)


def test_top10_filter_keeping_one_trace():
    # filter_top cuts at the (1 - 0.1) percentile with linear interpolation: for N traces the cut
    # sits at sorted position 0.9 * (N - 1); N = 8 -> 6.3, only the maximum (position 7) passes;
    # N = 11 -> 9.0, positions 9 and 10 pass (2 traces)
    assert [kept_by_filter(n, 0.1) for n in (1, 8, 10, 11, 20)] == [1, 1, 1, 2, 2]
    (line,) = strategy_warnings(make_strategy("deepconf-offline", budget=8))
    assert "keeps the top 10% of 8 traces = 1 trace" in line and "budget >= 11" in line
    assert strategy_warnings(make_strategy("deepconf-offline", budget=11)) == []
    assert filter_warning("x", "majority", 8, None) is None
    # the collapse is real: the filtered vote answers what the single most confident trace says
    answers = ["1", "1", "1", "1", "1", "1", "1", "2"]
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9]
    assert vote(answers, scores, weighted=True, top=0.1).answer == "2"


def test_nearly_all_replies_unparseable():
    assert unparseable_warning([None] * 9 + ["3"]) == (
        "9 of 10 replies have no parseable answer: the accuracy measures parsing, not the "
        "method; lower temperature or raise max_new_tokens"
    )
    assert unparseable_warning([None] * 8 + ["3", "4"]) is None  # 80% < 90%
    assert unparseable_warning([]) is None
