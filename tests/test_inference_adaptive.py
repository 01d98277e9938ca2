"""Adaptive sample counts: wave schedules, the consensus rule, the wave driver (fake draws) and the
``adaptive`` strategy on a scripted backend (exact trace counts and tokens)."""

import pytest
import torch

from entrolab.backends import MockBackend
from entrolab.errors import EntrolabError
from entrolab.inference.adaptive import ConsensusStop, run_waves, wave_schedule
from entrolab.inference.base import make_strategy
from entrolab.inference.voting import Vote, weighted_vote
from entrolab.tasks import Task, TaskItem


def test_wave_schedule():
    assert wave_schedule(16, 4, 4) == [4, 4, 4, 4]
    assert wave_schedule(10, 4, 4) == [4, 4, 2]
    assert wave_schedule(3, 4, 4) == [3]  # the first wave is cut to the budget
    assert wave_schedule(9, 1, 8) == [1, 8]
    with pytest.raises(EntrolabError, match="budget must be a positive int"):
        wave_schedule(0, 1, 1)


def test_consensus_rule_hand_cases():
    rule = ConsensusStop(tau=0.95, min_votes=2)
    assert rule.reached(Vote("a", {"a": 19.0, "b": 1.0}, 0.95, (0, 1)))  # β = 19/20 = 0.95 ≥ τ
    assert not rule.reached(Vote("a", {"a": 18.0, "b": 1.0}, 18 / 19 - 1e-3, (0, 1)))
    assert not rule.reached(Vote("a", {"a": 1.0}, 1.0, (0,)))  # one vote < min_votes
    assert not rule.reached(Vote(None))
    with pytest.raises(EntrolabError, match=r"tau \(consensus share\)"):
        ConsensusStop(tau=0.0)


def test_wave_driver_stops_each_item_at_consensus_and_offsets_are_shared():
    # item 0 always answers "a" (consensus after wave 0); item 1 alternates "a"/"b" (never);
    # item 2 answers "b" then "c" forever: share after wave 0 = 1/2, after wave 1 = 3/4, …
    streams = {0: lambda s: "a", 1: lambda s: "ab"[s % 2], 2: lambda s: "b" if s == 0 else "c"}
    calls = []

    def draw(open_items, offset, count):
        calls.append((list(open_items), offset, count))
        return [[streams[i](offset + j) for j in range(count)] for i in open_items]

    def decide(i, answers, w):
        return weighted_vote(answers)

    waves = []
    res = run_waves(
        3, [2, 2, 2, 2], draw, decide, ConsensusStop(0.8), on_wave=lambda d, n: waves.append(d)
    )
    # item 2: shares 1/2, 3/4, then 5/6 ≥ 0.8 → stops after wave 2 (6 answers)
    assert calls == [([0, 1, 2], 0, 2), ([1, 2], 2, 2), ([1, 2], 4, 2), ([1], 6, 2)]
    assert [len(r.traces) for r in res] == [2, 8, 6]
    assert [r.stop_reason for r in res] == ["consensus", "budget", "consensus"]
    assert res[0].vote.answer == "a" and res[2].vote.answer == "c"
    assert res[1].shares == [0.5, 0.5, 0.5, 0.5]
    assert res[2].shares == pytest.approx([1 / 2, 3 / 4, 5 / 6])
    assert waves == [1, 1, 2, 3]


def test_wave_driver_checks_draw_results():
    with pytest.raises(EntrolabError, match="expected 2 for each"):
        run_waves(1, [2], lambda o, off, c: [["x"]], lambda i, t, w: weighted_vote(t))
    with pytest.raises(EntrolabError, match="no items"):
        run_waves(0, [2], lambda o, off, c: [], lambda i, t, w: weighted_vote(t))


# --------------------------------------------------------------------- scripted backend
VOCAB = [str(d) for d in range(10)] + [f"<f{i}>" for i in range(9)] + ["<eos>"]
EOS = 19


class Sevens(Task):
    name = "sevens"

    def _make_items(self, n, seed):
        return [TaskItem(f"q{i}", f"question {i}", "7") for i in range(n)]


def _script(prompt_index, step, prefix):
    """Prompt 0: a uniform digit, then EOS; any other prompt: '7', then EOS."""
    z = torch.full((20,), -30.0)
    if step == 0 and prompt_index == 0:
        z[:10] = 0.0
    elif step == 0:
        z[7] = 10.0
    else:
        z[EOS] = 10.0
    return z


def test_adaptive_strategy_draws_until_consensus_with_exact_token_counts():
    backend = MockBackend(_script, vocab=VOCAB, eos_id=EOS)
    task = Sevens()
    items = task.items(2)  # item 0 disagrees with itself (uniform digits); item 1 always says 7
    strat = make_strategy("adaptive", budget=12, first=4, wave=4, tau=0.95)
    out = strat.run(backend, task, items, seed=0)
    assert [o.num_traces for o in out] == [12, 4]
    assert [o.generated_tokens for o in out] == [24, 8]  # every trace: a digit and EOS
    assert out[1].answer == "7" and out[1].correct and out[1].meta["stop_reason"] == "consensus"
    assert out[0].meta["stop_reason"] == "budget" and out[0].meta["waves"] == 3
    # sample s of an item is the same draw whatever the schedule: the 12 traces of item 0 are
    # exactly majority@12's
    maj = make_strategy("majority", budget=12).run(backend, task, items[:1], seed=0)[0]
    assert maj.meta["answers"] == out[0].meta["answers"]
    assert maj.generated_tokens == out[0].generated_tokens
    counts = {a: maj.meta["answers"].count(a) for a in set(maj.meta["answers"])}
    assert out[0].answer == maj.answer and counts[maj.answer] == max(counts.values())


def test_adaptive_strategy_rejects_bad_parameters():
    with pytest.raises(EntrolabError, match="tau"):
        make_strategy("adaptive", tau=1.5)
    with pytest.raises(EntrolabError, match="has no parameter"):
        make_strategy("adaptive", warmup=3)
