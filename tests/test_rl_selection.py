"""InSight prompt selection: BALD closed form against numerical integration, hand-computed
scores, the 'maximal near p = 0.5 with little evidence' property, the selector's bookkeeping,
and a trainer run that resumes with the selection state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from entrolab.errors import EntrolabError
from entrolab.rl.selection import (
    PromptSelector,
    SelectionConfig,
    bald_bernoulli,
    bald_binomial,
    insight_score,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _h(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else -(p * math.log(p) + (1 - p) * math.log(1 - p))


@pytest.mark.parametrize(("a", "b"), [(1, 1), (2, 5), (7, 3), (20, 20), (1.5, 0.7)])
def test_bald_bernoulli_matches_quadrature(a: float, b: float) -> None:
    expected_h, _ = integrate.quad(lambda p: stats.beta.pdf(p, a, b) * _h(p), 0, 1, limit=200)
    ref = _h(a / (a + b)) - expected_h
    assert float(bald_bernoulli(np.array([a]), np.array([b]))[0]) == pytest.approx(ref, abs=1e-7)


def test_bald_hand_computed_uniform_prior() -> None:
    # Beta(1, 1): H_b(½) = ln 2; E[H_b(p)] = ∫ −p ln p − (1−p) ln(1−p) dp = ½ → I = ln 2 − ½
    assert float(bald_bernoulli(np.array([1.0]), np.array([1.0]))[0]) == pytest.approx(
        math.log(2) - 0.5, abs=1e-12
    )
    # InSight score at μ = ½ is the information itself (weight 4·¼ = 1)
    assert float(insight_score(np.array([1.0]), np.array([1.0]))[0]) == pytest.approx(
        math.log(2) - 0.5
    )
    # binomial with G = 1 is the Bernoulli case
    got = bald_binomial(np.array([1.0, 3.0]), np.array([1.0, 2.0]), 1, grid=4001)
    torch.testing.assert_close(
        torch.tensor(got), torch.tensor(bald_bernoulli([1.0, 3.0], [1.0, 2.0])), atol=1e-5, rtol=0
    )


def test_bald_binomial_against_scipy() -> None:
    a, b, g = 3.0, 2.0, 4
    pmf = stats.betabinom.pmf(np.arange(g + 1), g, a, b)
    h_mix = -(pmf * np.log(pmf)).sum()

    def h_bin(p: float) -> float:
        q = stats.binom.pmf(np.arange(g + 1), g, p)
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    e_h, _ = integrate.quad(lambda p: stats.beta.pdf(p, a, b) * h_bin(p), 0, 1, limit=200)
    got = float(bald_binomial(np.array([a]), np.array([b]), g, grid=4001)[0])
    assert got == pytest.approx(h_mix - e_h, abs=1e-5)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 3), st.floats(0.02, 0.98))
def test_insight_score_maximal_near_half_with_little_evidence(n: int, p: float) -> None:
    # n observations (≤ 3) at success fraction p vs the same evidence split evenly
    a, b = 1 + p * n, 1 + (1 - p) * n
    half = 1 + 0.5 * n
    assert insight_score([half], [half])[0] >= insight_score([a], [b])[0] - 1e-12


@settings(max_examples=30, deadline=None)
@given(st.floats(0.1, 0.9), st.integers(1, 40))
def test_evidence_term_shrinks_with_evidence(mu: float, n: int) -> None:
    a1, b1 = 1 + mu * n, 1 + (1 - mu) * n
    a2, b2 = 1 + mu * 4 * n, 1 + (1 - mu) * 4 * n
    assert bald_bernoulli([a2], [b2])[0] < bald_bernoulli([a1], [b1])[0]


def test_selector_bookkeeping_and_choice() -> None:
    sel = PromptSelector(SelectionConfig(method="insight"), 5, seed=0, group_size=4)
    first = sel.choose(2, step=1)
    assert len(set(first)) == 2
    # prompt 0: 4/4 correct, prompt 1: 2/4 correct → a,b = (5,1), (3,3)
    sel.a[:] = 1
    sel.b[:] = 1
    m = sel.observe([0, 1], torch.tensor([[1.0, 1, 1, 1], [1.0, 1, 0, 0]]))
    assert sel.a[:2].tolist() == [5.0, 3.0] and sel.b[:2].tolist() == [1.0, 3.0]
    assert m["select/never_seen"] == 3 and m["select/seen_once"] == 2
    assert m["select/revisit_frac"] == 0.0
    # unseen prompts (Beta(1,1)) beat both seen ones; the seen 2/4 beats the seen 4/4
    s = sel.scores()
    assert s[2] == s[3] == s[4] > s[1] > s[0]
    assert set(sel.choose(3, step=2)) == {2, 3, 4}
    # p05 keeps choosing the μ = ½ prompt over the solved one; uniform defers to the trainer
    p05 = PromptSelector(SelectionConfig(method="p05"), 2)
    p05.observe([0, 1], torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    assert p05.choose(1, step=3) == [1]
    assert PromptSelector(SelectionConfig(), 3).choose(2, 1) is None
    # sampling ∝ score is seeded: same step, same draw
    samp = PromptSelector(SelectionConfig(method="insight", mode="sample"), 50, seed=3)
    assert samp.choose(5, 7) == samp.choose(5, 7)
    with pytest.raises(EntrolabError, match="distinct prompts"):
        samp.choose(51, 1)
    restored = PromptSelector(SelectionConfig(method="insight"), 5)
    restored.load_state_dict(sel.state_dict())
    assert restored.a.tolist() == sel.a.tolist() and restored.visits.tolist() == sel.visits.tolist()


def test_trainer_insight_selection_resumes_exactly(tmp_path) -> None:
    from entrolab.rl import checkpoint as ckpt
    from entrolab.rl.config import load_config
    from entrolab.rl.trainer import Trainer

    over = [
        "model.name=tiny",
        "task.spec=proxy",
        "task.train_items=12",
        "task.eval_items=0",
        "rollout.prompts_per_step=2",
        "rollout.group_size=2",
        "rollout.max_new_tokens=4",
        "rollout.chat_template=false",
        "selection.method=insight",
        "monitor.probe_prompts=0",
        "progress=false",
        "tensorboard=false",
        "checkpoint_every=1",
    ]

    def reward(items, texts):
        return [float(len(t) % 2) for t in texts]

    full = Trainer(load_config(None, [*over, "steps=3"]), tmp_path / "a", reward_fn=reward)
    recs = full.train()
    assert recs[-1]["select/never_seen"] == 12 - 6  # every step picks unseen prompts first
    assert all(r["select/revisit_frac"] == 0.0 for r in recs)
    part = Trainer(load_config(None, [*over, "steps=2"]), tmp_path / "b", reward_fn=reward)
    part.train()
    resumed = Trainer(load_config(None, [*over, "steps=3"]), tmp_path / "b", reward_fn=reward)
    resumed.train()

    def strip(rs):
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rs]

    assert strip(ckpt.read_metrics(tmp_path / "b")) == strip(ckpt.read_metrics(tmp_path / "a"))
