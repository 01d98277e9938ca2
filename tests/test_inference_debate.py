"""Debate: the belief update, diverse initialisation and the overconfidence metrics by hand,
property tests of the update, exact token accounting, and one short run on the real model whose
confidences are checked against teacher-forced scoring."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.inference import make_strategy
from entrolab.inference.base import ItemOutcome
from entrolab.inference.cues import span_logprob
from entrolab.inference.debate import DebateStrategy
from entrolab.inference.debate_math import (
    OTHER,
    belief_update,
    debate_confidence_metrics,
    debate_metrics,
    initial_belief,
    select_diverse,
    update_agents,
)
from entrolab.tasks import answer_key, load_task

#: one torch thread per test (see the fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_belief_update_by_hand() -> None:
    # Agents' beliefs over answers (x, y): [0.8, 0.2] and [0.3, 0.7]; new answers x (c = 0.9)
    # and y (c = 0.6) → support s = [0.9, 0.6]. η = 0.5, ε = 0:
    # agent 1 ∝ [√(0.8·0.9), √(0.2·0.6)] = [0.848528, 0.346410] → [0.710102, 0.289898]
    # agent 2 ∝ [√(0.3·0.9), √(0.7·0.6)] = [0.519615, 0.648074] → [0.444994, 0.555006]
    b = torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=torch.float64)
    c = torch.tensor([0.9, 0.6], dtype=torch.float64)
    post = belief_update(b, torch.tensor([0, 1]), c, 0.5, eps=0.0)
    expected = torch.tensor(
        [[0.7101020514, 0.2898979486], [0.4449944321, 0.5550055679]], dtype=torch.float64
    )
    torch.testing.assert_close(post, expected, rtol=1e-9, atol=1e-10)
    # η = 0 keeps the beliefs; η = 1 gives the normalised confidence-weighted vote [0.6, 0.4]
    torch.testing.assert_close(belief_update(b, torch.tensor([0, 1]), c, 0.0, eps=0.0), b)
    vote = belief_update(b, torch.tensor([0, 1]), c, 1.0, eps=0.0)
    torch.testing.assert_close(vote, torch.tensor([[0.6, 0.4], [0.6, 0.4]]).double())


@settings(max_examples=60, deadline=None)
@given(
    raw=st.lists(st.floats(0.01, 1.0), min_size=6, max_size=6),
    answers=st.lists(st.integers(-1, 2), min_size=2, max_size=2),
    confs=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2),
    eta=st.floats(0.0, 1.0),
    bump=st.floats(0.01, 0.5),
)
def test_belief_update_properties(raw, answers, confs, eta, bump) -> None:
    b = torch.tensor(raw, dtype=torch.float64).reshape(2, 3)
    b = b / b.sum(-1, keepdim=True)
    a, c = torch.tensor(answers), torch.tensor(confs, dtype=torch.float64)
    post = belief_update(b, a, c, eta)
    torch.testing.assert_close(post.sum(-1), torch.ones(2, dtype=torch.float64))
    assert (post >= 0).all()
    # more confidence behind an answer never lowers anyone's belief in it
    if answers[0] >= 0 and confs[0] + bump <= 1:
        c2 = c.clone()
        c2[0] += bump
        more = belief_update(b, a, c2, eta)
        assert (more[:, answers[0]] >= post[:, answers[0]] - 1e-12).all()


def test_update_agents_by_hand() -> None:
    # Agent A believes {5: 0.6, 7: 0.2, OTHER: 0.2}, B {7: 0.5, 5: 0.25, OTHER: 0.25}. Both now
    # answer 7 (c = 0.8, 0.4) → support (5, 7, OTHER) = (0, 1.2, 0); η = 0.5, ε = 1e-6:
    # A ∝ [√((0.6+ε)ε), √((0.2+ε)(1.2+ε)), √((0.2+ε)ε)] → 7 gets 0.997512; B → 0.998711.
    beliefs = [{"5": 0.6, "7": 0.2, OTHER: 0.2}, {"7": 0.5, "5": 0.25, OTHER: 0.25}]
    new, answers, confs = update_agents(beliefs, ["7", "7"], [0.8, 0.4], 0.5)
    assert answers == ["7", "7"]
    assert confs == pytest.approx([0.997512198507191, 0.9987106693179115], rel=1e-9)
    assert new[0]["5"] == pytest.approx(0.0015772019847105126, rel=1e-9)
    # a lone confident dissenter keeps its answer when it re-generates it: A says 5 (0.9),
    # B says 7 (0.4) → A ∝ [√(0.6·0.9), √(0.2·0.4), √(0.2·ε)] → 5 wins
    _, answers, _ = update_agents(beliefs, ["5", "7"], [0.9, 0.4], 0.5)
    assert answers[0] == "5"
    assert initial_belief("3", 0.7, ["3", "4"]) == pytest.approx({"3": 0.7, "4": 0.15, OTHER: 0.15})
    assert initial_belief(None, 0.0, ["3"]) == {"3": 0.5, OTHER: 0.5}


def test_select_diverse_by_hand() -> None:
    answers = ["3", "5", "3", None, "7", "5"]
    confs = [0.9, 0.4, 0.95, 0.99, 0.2, 0.6]
    # answers ranked by their best candidate: 3 (#2, 0.95), 5 (#5, 0.6), 7 (#4, 0.2);
    # first pass [2, 5, 4], second pass [0, 1]; the unparseable #3 comes last
    assert select_diverse(answers, confs, 2) == [2, 5]
    assert select_diverse(answers, confs, 4) == [2, 5, 4, 0]
    assert select_diverse(answers, confs, 6) == [2, 5, 4, 0, 1, 3]
    with pytest.raises(EntrolabError, match="cannot select 7"):
        select_diverse(answers, confs, 7)


def test_debate_confidence_metrics_by_hand() -> None:
    # D1: (70, 60) (80, 75) (90, 80); D2: (50, 40) (60, 50) (70, 76)
    # round means 55, 66.25, 79 → overconfidence 66.75 − 50 = 16.75; escalation 79 − 55 = 24;
    # both > 75 (strictly, as the official code): R1 none, R2 none (D1's 75 is not > 75),
    # R3 D1 → 0, 0, 0.5; sum − 100 by round: (30 − 10)/2 = 10,
    # (55 + 10)/2 = 32.5, (70 + 46)/2 = 58 → mean 33.5 (= 2 · 66.75 − 100)
    conf = [[[70, 60], [80, 75], [90, 80]], [[50, 40], [60, 50], [70, 76]]]
    m = debate_confidence_metrics(conf)
    assert m["mean_by_round"] == [55.0, 66.25, 79.0]
    assert m["overconfidence"] == pytest.approx(16.75) and m["escalation"] == 24.0
    assert m["mutual_overestimation_by_round"] == [0.0, 0.0, 0.5]
    assert m["mutual_overestimation_rate"] == 0.5
    assert m["sum_excess_by_round"] == [10.0, 32.5, 58.0] and m["sum_excess"] == 33.5
    with pytest.raises(EntrolabError, match=r"\[debates, rounds, 2\]"):
        debate_confidence_metrics([[1, 2, 3]])
    with pytest.raises(EntrolabError, match="percentages"):
        debate_confidence_metrics([[[0.5, 120.0]]])


def test_debate_metrics_keeps_only_opening_disagreements() -> None:
    def outcome(answers, conf):
        meta = {"answers_by_round": answers, "confidence_by_round": conf}
        return ItemOutcome("i", None, False, 1, meta=meta)

    outs = [
        outcome([["1", "2"], ["1", "1"]], [[0.8, 0.6], [0.9, 0.7]]),  # disagree → kept
        outcome([["3", "3"], ["3", "3"]], [[0.9, 0.9], [0.9, 0.9]]),  # agree → dropped
    ]
    m = debate_metrics(outs)
    assert m["debates"] == 1 and m["mean_by_round"] == pytest.approx([70.0, 80.0])
    with pytest.raises(EntrolabError, match="disagreement"):
        debate_metrics(outs[1:])


def test_strategy_argument_errors() -> None:
    with pytest.raises(EntrolabError, match="pool >= agents"):
        make_strategy("debate", agents=3, pool=2)
    c = DebateStrategy(config={"max_new_tokens": 9}).config
    assert (c.max_new_tokens, c.temperature, c.top_p) == (9, 0.7, 0.95)
    with pytest.raises(EntrolabError, match="update must be"):
        DebateStrategy(update="bayes")  # type: ignore[arg-type]


class Recorder:
    """Wraps a backend; keeps every generate() call and the traces it returned."""

    def __init__(self, backend) -> None:
        self._b, self.calls = backend, []

    def __getattr__(self, name):
        return getattr(self._b, name)

    def generate(self, prompts, config, **kw):
        batch = self._b.generate(prompts, config, **kw)
        self.calls.append((list(prompts), config, list(batch)))
        return batch


@pytest.mark.parametrize("update", ["confidence", "vanilla"])
def test_token_accounting_is_exact(tiny_backend, update) -> None:
    task = load_task("arithmetic", level=1)
    items = task.items(2, seed=0)
    rec = Recorder(tiny_backend)
    cfg = GenerationConfig(max_new_tokens=5, temperature=1.0)
    s = DebateStrategy(agents=2, rounds=2, pool=3, update=update, config=cfg)
    outs = s.run(rec, task, items)
    assert len(rec.calls) == 3  # opening pool, then one call per round
    per_item = [0, 0]
    for prompts, _, traces in rec.calls:
        for p, t in zip(prompts, traces, strict=True):
            per_item[next(i for i, it in enumerate(items) if p.startswith(it.prompt))] += len(t)
    assert [o.generated_tokens for o in outs] == per_item
    assert [o.num_traces for o in outs] == [3 + 2 * 2] * 2
    for o in outs:
        assert len(o.meta["answers_by_round"]) == 3 and len(o.meta["confidence_by_round"]) == 3
        assert all(0.0 <= c <= 1.0 for r in o.meta["confidence_by_round"] for c in r)


def test_verbalized_confidence_tokens_are_counted(tiny_backend) -> None:
    task = load_task("arithmetic", level=1)
    items = task.items(1, seed=0)
    rec = Recorder(tiny_backend)
    cfg = GenerationConfig(max_new_tokens=3, temperature=1.0)
    out = DebateStrategy(rounds=1, pool=2, confidence="verbalized", config=cfg).run(
        rec, task, items
    )[0]
    # greedy continuations run through backend.generate too (the one decode loop): the sampled
    # replies and the confidence continuations are all recorded calls
    sampled = [t for _, c, ts in rec.calls if not c.greedy for t in ts]
    asked = [t for _, c, ts in rec.calls if c.greedy for t in ts]
    # every one of the 2 + 2 replies is followed by "Confidence (0-100):" and 1–4 greedy tokens
    assert len(sampled) == 4 and len(asked) == 4
    assert all(1 <= len(t) <= 4 for t in asked)
    assert out.generated_tokens == sum(len(t) for t in sampled + asked)
    assert out.num_traces == 4


@pytest.mark.model
def test_real_model_debate_confidences_match_teacher_forced_scores(smollm) -> None:
    task = load_task("arithmetic", level=1)
    items = task.items(2, seed=0)
    rec = Recorder(smollm)
    cfg = GenerationConfig(max_new_tokens=16, temperature=0.7, top_p=0.95)
    outs = DebateStrategy(agents=2, rounds=2, pool=3, config=cfg).run(rec, task, items, seed=1)
    prompts, _, traces = rec.calls[0]  # the opening pool: 3 replies per item
    scored = smollm.score(prompts, [t.token_ids for t in traces])
    for i, o in enumerate(outs):
        keys, confs = [], []
        for t, sc in zip(traces[3 * i : 3 * i + 3], scored.traces[3 * i : 3 * i + 3], strict=True):
            parsed = task.extract(items[i], t.text)
            keys.append(None if parsed is None else answer_key(parsed))
            lp = span_logprob(sc.tokens, sc.logprob.tolist(), parsed) if parsed else None
            confs.append(0.0 if lp is None else math.exp(lp))
        chosen = select_diverse(keys, confs, 2)
        assert o.meta["answers_by_round"][0] == [keys[k] for k in chosen]
        assert o.meta["confidence_by_round"][0] == pytest.approx(
            [confs[k] for k in chosen], rel=2e-3, abs=1e-6
        )
        assert o.generated_tokens == sum(
            len(t)
            for ps, _cfg, ts in rec.calls
            for p, t in zip(ps, ts, strict=True)
            if p.startswith(items[i].prompt)
        )
    m = debate_confidence_metrics(
        [[[100 * c for c in r] for r in o.meta["confidence_by_round"]] for o in outs]
    )
    assert len(m["mean_by_round"]) == 3
