"""Reward terms: PEAR and the calibrated-confidence rewards (hand-computed, SaySelf's
``calculate_reward`` transcribed), their combination with the verifier reward, and a trainer
step with both terms."""

from __future__ import annotations

import math
import random

import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.rl.config import load_config
from entrolab.rl.reward_terms import (
    REWARD_TERMS,
    RewardInputs,
    apply_reward_terms,
    check_reward_terms,
    confidence_reward,
    confidence_score,
    pear,
    phase_entropies,
)
from entrolab.rl.rewards import REWARD_TERMS as REEXPORTED

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sayself_calculate_reward(correctness: float, confidence: float) -> float:
    """xu1868/SaySelf utils/utils.py ``calculate_reward`` (inputs on a 0–10 scale), transcribed
    (its logging of out-of-range inputs dropped)."""
    if not (0 <= correctness <= 10):
        correctness = max(0, min(1, correctness))
    if not (0 <= confidence <= 10):
        confidence = max(0, min(1, confidence))
    confidence /= 10
    correctness /= 10
    ret = 2 * (-(abs(correctness - confidence) ** 2) + 0.5)
    return float(ret)


def test_brier_matches_sayself() -> None:
    rng = random.Random(0)
    for _ in range(200):
        y = rng.choice([0, 10])
        k = rng.randint(0, 10)
        ours = confidence_score(
            torch.tensor([k / 10], dtype=torch.float64), torch.tensor([y == 10])
        )
        assert float(ours) == pytest.approx(_sayself_calculate_reward(y, k), abs=1e-12)


def test_confidence_scores_hand_computed() -> None:
    c = torch.tensor([0.8, 0.8, 0.0, 1.0])
    y = torch.tensor([True, False, False, True])
    # SaySelf 1 − 2(y − c)²: 1 − 2·0.04 = 0.92; 1 − 2·0.64 = −0.28; 1; 1
    torch.testing.assert_close(
        confidence_score(c, y), torch.tensor([0.92, -0.28, 1.0, 1.0], dtype=torch.float64)
    )
    # HyperClick 1 − (c − y)²: 0.96, 0.36, 1, 1
    torch.testing.assert_close(
        confidence_score(c, y, form="hyperclick"),
        torch.tensor([0.96, 0.36, 1.0, 1.0], dtype=torch.float64),
    )
    # linear: c if correct else −c
    torch.testing.assert_close(
        confidence_score(c, y, kind="linear"),
        torch.tensor([0.8, -0.8, -0.0, 1.0], dtype=torch.float64),
    )
    # log: log 0.8; log(1 − 0.8) = log 0.2; c = 0 clipped to ε = 1e-3 → log(1 − 1e-3); log(1 − ε)
    torch.testing.assert_close(
        confidence_score(c, y, kind="log"),
        torch.tensor(
            [math.log(0.8), math.log(0.2), math.log(1 - 1e-3), math.log(1 - 1e-3)],
            dtype=torch.float64,
        ),
    )
    with pytest.raises(EntrolabError, match="kind must be"):
        confidence_score(c, y, kind="quadratic")


def test_confidence_reward_parses_verbal_confidence() -> None:
    texts = ["Answer: 7\nConfidence: 8/10", "Answer: 3. Confidence: 90%", "Answer: 5", "42"]
    inp = RewardInputs(texts, correct=torch.tensor([True, False, True, True]))
    out = confidence_reward(inp)
    # 0.92; 1 − 2·0.81 = −0.62; no confidence → SaySelf minimum −1; a bare "42" is not read
    torch.testing.assert_close(out, torch.tensor([0.92, -0.62, -1.0, -1.0], dtype=torch.float64))
    out = confidence_reward(inp, kind="linear", missing=0.0)
    torch.testing.assert_close(out, torch.tensor([0.8, -0.9, 0.0, 0.0], dtype=torch.float64))
    with pytest.raises(EntrolabError, match="needs 'correct'"):
        confidence_reward(RewardInputs(texts))


def test_confidence_reward_reads_a_bare_k_on_the_k_over_10_scale_it_asks_for() -> None:
    # the recipe asks for "Confidence: k/10"; a reply writing just "Confidence: 7" means 0.7
    texts = ["Answer: 56\nConfidence: 7", "The probability is 3/8.\nConfidence: 9/10"]
    inp = RewardInputs(texts, correct=torch.tensor([True, False]))
    # c = 0.7, y = 1: 1 − 2·0.3² = 0.82; c = 0.9 (the Confidence line, not "3/8"), y = 0:
    # 1 − 2·0.9² = −0.62
    out = confidence_reward(inp)
    torch.testing.assert_close(out, torch.tensor([0.82, -0.62], dtype=torch.float64))
    # a percentage prompt sets bare_scale: null → "7" is 7 %: 1 − 2·0.93² = −0.7298
    out = confidence_reward(inp, bare_scale=None)
    torch.testing.assert_close(out, torch.tensor([-0.7298, -0.62], dtype=torch.float64))
    _, metrics = apply_reward_terms(
        {"confidence_reward": {}}, torch.zeros(2), texts=texts, correct=inp.correct
    )
    assert metrics["reward/confidence_mean"] == pytest.approx(0.8)  # (0.7 + 0.9) / 2


def test_brier_pulls_confidence_less_to_the_extremes_than_linear() -> None:
    # for a fixed accuracy p the expected reward's maximiser: Brier → c = p (proper),
    # linear → c ∈ {0, 1} (improper); the spec's predicted difference between the two kinds
    grid = torch.linspace(0, 1, 101, dtype=torch.float64)
    p = 0.7

    def expected(kind: str) -> torch.Tensor:
        ones, zeros = torch.ones(101, dtype=torch.bool), torch.zeros(101, dtype=torch.bool)
        return p * confidence_score(grid, ones, kind=kind) + (1 - p) * confidence_score(
            grid, zeros, kind=kind
        )

    assert float(grid[expected("brier").argmax()]) == pytest.approx(0.7)
    assert float(grid[expected("log").argmax()]) == pytest.approx(0.7)
    assert float(grid[expected("linear").argmax()]) == 1.0


def test_pear_hand_computed() -> None:
    pieces = [["a", "</th", "ink>", "4"], ["a", "b", "c", ""]]
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    h = torch.tensor([[1.0, 2.0, 3.0, 0.5], [1.0, 2.0, 3.0, 9.0]])
    think, answer, n_ans = phase_entropies(h, mask, pieces, "</think>")
    # row 0: delimiter spans tokens 1–2 → thinking (1+2+3)/3 = 2, answer 0.5 (1 token)
    # row 1: no delimiter → all thinking (1+2+3)/3 = 2, answer 0 (padding's 9 ignored)
    torch.testing.assert_close(think, torch.tensor([2.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(answer, torch.tensor([0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(n_ans, torch.tensor([1.0, 0.0], dtype=torch.float64))
    inp = RewardInputs(["", ""], response_mask=mask, entropy=h, pieces=pieces)
    # −0.1·2 + 0.05·0.5 = −0.175; −0.2
    torch.testing.assert_close(pear(inp), torch.tensor([-0.175, -0.2], dtype=torch.float64))


def test_apply_terms_adds_weighted_terms_and_checks_settings() -> None:
    assert REEXPORTED is REWARD_TERMS and set(REWARD_TERMS.names()) == {"pear", "confidence_reward"}
    texts = ["Confidence: 10/10", "Confidence: 10/10"]
    base = torch.tensor([1.0, 0.0])
    total, metrics = apply_reward_terms(
        {"confidence_reward": {"weight": 0.5}},
        base,
        texts=texts,
        correct=torch.tensor([True, False]),
    )
    # terms 1 and 1 − 2 = −1 → 1 + 0.5, 0 − 0.5
    torch.testing.assert_close(total, torch.tensor([1.5, -0.5]))
    assert metrics["reward/confidence_reward"] == 0.0 and metrics["reward/confidence_parsed"] == 1
    with pytest.raises(EntrolabError, match="accepted: weight"):
        check_reward_terms({"confidence_reward": {"knd": "brier"}})
    with pytest.raises(EntrolabError, match="Known rewards"):
        check_reward_terms({"pearr": {}})
    with pytest.raises(EntrolabError, match="entropies"):
        apply_reward_terms({"pear": {}}, base, texts=texts, correct=None)


def test_trainer_step_with_reward_terms(tmp_path) -> None:
    from entrolab.rl.trainer import Trainer

    cfg = load_config(
        None,
        [
            "model.name=tiny",
            "task.spec=proxy",
            "task.train_items=16",
            "task.eval_items=0",
            "rollout.prompts_per_step=2",
            "rollout.group_size=2",
            "rollout.max_new_tokens=5",
            "rollout.chat_template=false",
            "reward.terms={pear: {delimiter: '1', alpha: 0.2}, confidence_reward: {kind: log}}",
            "monitor.probe_prompts=0",
            "progress=false",
            "tensorboard=false",
            "steps=1",
        ],
    )
    rec = Trainer(cfg, tmp_path).train()[0]
    assert rec["reward/pear"] <= 0  # −0.2·H̄_think + 0.05·H̄_answer with a random model: < 0
    assert rec["reward/confidence_reward"] == pytest.approx(math.log(1e-3))  # none parse
    assert rec["reward/confidence_parsed"] == 0.0
