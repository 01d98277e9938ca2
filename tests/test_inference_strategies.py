"""Strategies end to end: the shared interface, exact token accounting against direct generation,
DeepConf online (thresholds, stops, votes) on the tiny model, all-stopped items, the registry."""

import numpy as np
import pytest
import torch

from entrolab.backends import MockBackend
from entrolab.errors import EntrolabError, UnknownNameError
from entrolab.inference import STRATEGIES
from entrolab.inference.base import (
    ItemOutcome,
    Sampling,
    Strategy,
    draw_traces,
    item_seeds,
    make_strategy,
    summarize_outcomes,
    trace_keys,
)
from entrolab.inference.stopping import first_stop_index
from entrolab.inference.voting import deepconf_votes, token_confidences, weighted_vote
from entrolab.tasks import Task, TaskItem, load_task


def test_item_outcome_round_trip_and_validation():
    o = ItemOutcome("q1", "12", True, 30, 7, 3, {"share": 0.5})
    assert ItemOutcome.from_dict(o.to_dict()) == o
    with pytest.raises(EntrolabError, match="generated_tokens must be an int >= 0"):
        ItemOutcome("q", "1", False, -1)
    with pytest.raises(EntrolabError, match="needs an answer"):
        ItemOutcome("q", None, True, 3)
    with pytest.raises(EntrolabError, match="missing the 'correct' field"):
        ItemOutcome.from_dict({"item_id": "q", "generated_tokens": 1})


def test_summarize_outcomes_hand_computed():
    outs = [
        ItemOutcome("a", "1", True, 10, 5, 2),
        ItemOutcome("b", None, False, 31, 5, 4),
        ItemOutcome("c", "3", False, 0, 5, 1),
    ]
    s = summarize_outcomes(outs)
    # accuracy 1/3; tokens 10 + 31 + 0 = 41, 41/3 per item; 2 items answered
    assert s == {
        "n": 3,
        "accuracy": 1 / 3,
        "generated_tokens": 41,
        "tokens_per_item": 41 / 3,
        "prompt_tokens": 15,
        "traces": 7,
        "answered": 2,
    }
    with pytest.raises(EntrolabError, match="no item outcomes"):
        summarize_outcomes([])


def test_registry_is_complete_and_checks_names_and_parameters():
    assert {"majority", "deepconf-offline", "deepconf-online", "adaptive"} <= set(
        STRATEGIES.names()
    )
    assert isinstance(make_strategy("majority", budget=2), Strategy)
    with pytest.raises(UnknownNameError, match="Known strategies: .*deepconf-online"):
        make_strategy("deepconf")
    with pytest.raises(EntrolabError, match="no parameter.*'tau'.*parameters are: .*voter"):
        make_strategy("majority", tau=0.9)
    with pytest.raises(EntrolabError, match="temperature must be > 0"):
        make_strategy("majority", temperature=0.0)
    with pytest.raises(EntrolabError, match="warmup must be an int >= 1"):
        make_strategy("deepconf-online", budget=4, warmup=0)
    assert make_strategy("deepconf-online", budget=2, warmup=8).warmup == 2  # capped
    assert make_strategy("deepconf-offline").voter == "top10_bottom_window_filtered"


@pytest.fixture(scope="module")
def arith():
    task = load_task("arithmetic")
    return task, task.items(3, seed=0)


def test_majority_counts_every_generated_token_and_votes_like_direct_generation(
    tiny_backend, arith
):
    task, items = arith
    samp = Sampling(max_new_tokens=20, temperature=1.0, top_p=1.0)
    strat = make_strategy(
        "deepconf-offline", budget=4, window=4, max_new_tokens=20, temperature=1.0, top_p=1.0
    )
    out = strat.run(tiny_backend, task, items, seed=5)
    direct = draw_traces(tiny_backend, items, item_seeds(5, items), samp, 4)
    for o, item, traces in zip(out, items, direct, strict=True):
        keys = trace_keys(task, item, traces)
        assert o.generated_tokens == sum(len(t) for t in traces)
        assert o.num_traces == 4 and o.meta["answers"] == keys
        assert o.prompt_tokens == len(tiny_backend.prompt_ids(item.prompt))
        ref = deepconf_votes(keys, traces, window=4)
        assert {n: v["answer"] for n, v in o.meta["variants"].items()} == {
            n: v.answer for n, v in ref.items()
        }
        assert o.answer == ref["top10_bottom_window_filtered"].answer
        assert o.meta["variants"]["majority"]["answer"] == weighted_vote(keys).answer


def test_deepconf_online_thresholds_stops_and_votes(tiny_backend, arith):
    task, items = arith
    common = dict(max_new_tokens=16, temperature=1.0, top_p=1.0)
    online = make_strategy(
        "deepconf-online", budget=6, warmup=3, variant="low", window=4, tau=None, **common
    ).run(tiny_backend, task, items, seed=1)
    full = make_strategy("majority", budget=6, all_variants=False, **common).run(
        tiny_backend, task, items, seed=1
    )
    direct = draw_traces(tiny_backend, items, item_seeds(1, items), Sampling(**common), 6)
    n_stopped = 0
    for o, f, traces in zip(online, full, direct, strict=True):
        lowest = o.meta["lowest_window"]
        # DeepConf-low: the 90th percentile of the 3 warm-up traces' lowest-window confidences
        assert o.meta["threshold"] == pytest.approx(np.percentile(lowest[:3], 90), abs=1e-12)
        conf, mask = token_confidences(traces)
        idx = first_stop_index(conf, mask, o.meta["threshold"], 4).tolist()
        for j, (n, t) in enumerate(zip(o.meta["lengths"], traces, strict=True)):
            if j >= 3 and idx[j] >= 0 and idx[j] + 1 < len(t):  # stopped where replay says
                assert n == idx[j] + 1
                n_stopped += 1
            else:  # warm-up traces and later traces never below s run as without the rule
                assert n == len(t)
        assert o.generated_tokens == sum(o.meta["lengths"]) <= f.generated_tokens
        assert o.meta["stopped"] == sum(
            1 for j, n in enumerate(o.meta["lengths"]) if j >= 3 and n < len(traces[j])
        )
    assert n_stopped > 0


VOCAB = [str(d) for d in range(10)] + [f"<f{i}>" for i in range(10)]


class Sevens(Task):
    name = "sevens"

    def _make_items(self, n, seed):
        return [TaskItem(f"q{i}", f"question {i}", "7") for i in range(n)]


def test_all_traces_stopped_gives_no_answer_not_a_crash():
    # '7' forever, never EOS; a fixed threshold above every confidence stops each trace as soon
    # as its first window (2 tokens) is full, warm-up included
    backend = MockBackend(
        lambda i, s, p: torch.tensor([10.0 if v == 7 else 0.0 for v in range(20)]), vocab=VOCAB
    )
    strat = make_strategy(
        "deepconf-online", budget=4, warmup=2, window=2, threshold=100.0, tau=None
    )
    (o,) = strat.run(backend, Sevens(), Sevens().items(1))
    assert (o.answer, o.correct, o.num_traces) == (None, False, 4)
    assert o.generated_tokens == 4 * 2 and o.meta["stopped"] == 4
    assert "stopped early" in o.meta["no_answer"]


def test_strategies_reject_empty_items_and_backends_without_hooks(tiny_backend):
    with pytest.raises(EntrolabError, match="no task items"):
        make_strategy("majority").run(tiny_backend, Sevens(), [])

    class Old:
        def generate(self, prompts, config, *, seeds=None):
            raise AssertionError("not reached")

    # without hooks a rule is replayed on finished traces, but fresh waves need sample_offset
    with pytest.raises(EntrolabError, match="lacks sample_offset"):
        make_strategy("adaptive").run(Old(), Sevens(), Sevens().items(1))


@pytest.mark.model
def test_deepconf_online_on_the_embedded_model(smollm):
    task = load_task("arithmetic", level=1)
    items = task.items(2, seed=0)
    strat = make_strategy(
        "deepconf-online", budget=4, warmup=2, window=4, tau=None, max_new_tokens=16
    )
    for o, item in zip(strat.run(smollm, task, items, seed=0), items, strict=True):
        s, lowest, lengths = o.meta["threshold"], o.meta["lowest_window"], o.meta["lengths"]
        assert o.generated_tokens == sum(lengths) and o.num_traces == 4
        # DeepConf-high: the 10th percentile of the warm-up traces' lowest windows
        assert s == pytest.approx(np.percentile(lowest[:2], 10), abs=1e-12)
        # a later trace was stopped only by a full window below s (its last window)
        stopped = [j for j in (2, 3) if lengths[j] < 16 and lowest[j] < s]
        assert o.meta["stopped"] == len(stopped)
        assert all(lengths[j] >= 4 for j in stopped)
        voters = [j for j in range(4) if j not in stopped and lowest[j] >= s]
        assert o.meta["num_votes"] == sum(o.meta["answers"][j] is not None for j in voters)
        if o.answer is not None:
            assert o.correct == task.grade(item, o.answer).correct
