"""Proxy task (sum of two list numbers), its SFT, verifier rewards and held-out metrics."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.errors import EntrolabError
from entrolab.rl.config import SFTConfig
from entrolab.rl.proxy import ProxySumTask, sft_examples, sft_model, solutions, train_sft
from entrolab.rl.rewards import answer_entropy, make_task, pass_at_k, verifier_rewards
from entrolab.tasks import TaskItem

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _item(numbers: list[int], target: int) -> TaskItem:
    sols = solutions(numbers, target)
    return TaskItem(
        "x",
        " ".join(map(str, numbers)) + f":{target}=",
        f"{sols[0][0]}+{sols[0][1]}" if sols else "",
        {"numbers": numbers, "target": target, "solutions": [list(p) for p in sols]},
    )


# numbers 3 7 1 9 5 6, target 12: pairs 3+9 and 7+5 (6+6 would reuse the single 6)
ITEM = _item([3, 7, 1, 9, 5, 6], 12)


@pytest.mark.parametrize(
    ("reply", "correct", "reason", "parsed"),
    [
        ("3+9", True, "correct", "3+9"),
        ("9+3", True, "correct", "3+9"),  # order is free; the key is canonical (small first)
        ("7+5", True, "correct", "5+7"),
        (" 5 + 7 ", True, "correct", "5+7"),  # spaces around the parts are allowed
        ("6+6", False, "wrong", "6+6"),  # 6 is listed once: a ≠ b required
        ("4+8", False, "wrong", "4+8"),  # sums to 12 but neither number is in the list
        ("3+7", False, "wrong", "3+7"),  # both listed, sum 10 ≠ 12
        ("2+10", False, "wrong", "2+10"),
        ("3+9=12", None, "unparseable", None),  # anything but exactly a+b is unparseable
        ("12", None, "unparseable", None),
        ("", None, "unparseable", None),
        ("a+b", None, "unparseable", None),
    ],
)
def test_verifier_hand_cases(reply, correct, reason, parsed):
    task = ProxySumTask()
    g = task.grade(ITEM, reply)
    assert g.reason == reason
    assert g.correct is bool(correct)
    assert g.parsed == parsed
    assert g.score == (1.0 if correct else 0.0)


def test_solutions_by_hand():
    assert solutions([3, 7, 1, 9, 5, 6], 12) == [(3, 9), (5, 7)]
    assert solutions([1, 2, 3, 4], 5) == [(1, 4), (2, 3)]
    assert solutions([1, 2, 3, 4], 100) == []


def test_items_are_deterministic_and_have_several_answers():
    task = ProxySumTask()
    a, b = task.items(50, seed=3), task.items(50, seed=3)
    assert [i.prompt for i in a] == [i.prompt for i in b]
    assert a[:10] == task.items(10, seed=3)  # a prefix: item i depends only on (seed, i)
    assert [i.prompt for i in task.items(50, seed=4)] != [i.prompt for i in a]
    for it in a:
        nums, target = it.meta["numbers"], it.meta["target"]
        assert len(set(nums)) == 6 and all(1 <= x <= 9 for x in nums)
        assert it.prompt == " ".join(map(str, nums)) + f":{target}="
        # brute force: every listed solution is valid, and there are at least min_pairs = 2
        brute = sorted(
            (min(x, y), max(x, y)) for x, y in itertools.combinations(nums, 2) if x + y == target
        )
        assert [tuple(p) for p in it.meta["solutions"]] == brute
        assert len(brute) >= 2
        assert task.grade(it, it.answer).correct


def test_bad_task_settings():
    with pytest.raises(EntrolabError, match="list_size"):
        ProxySumTask(list_size=3)
    with pytest.raises(EntrolabError, match="max_value"):
        ProxySumTask(list_size=6, max_value=5)
    with pytest.raises(EntrolabError, match="bad proxy task settings"):
        make_task("proxy", {"colour": 1})
    assert isinstance(make_task("proxy", {"max_value": 12}), ProxySumTask)
    assert make_task("arithmetic", {"level": 1}).name == "arithmetic"


def test_sft_examples_noise_fraction():
    task = ProxySumTask()
    clean = sft_examples(task, 300, seed=0, noise=0.0)
    assert all(task.grade(_from_prompt(p), r).correct for p, r in clean)
    noisy = sft_examples(task, 300, seed=0, noise=1.0)
    wrong = sum(not task.grade(_from_prompt(p), r).correct for p, r in noisy)
    # a random pair of 6 numbers is a solution for ~2-3 of the 15 pairs: most are wrong
    assert wrong > 200


def _from_prompt(prompt: str) -> TaskItem:
    nums, target = prompt.rstrip("=").split(":")
    return _item([int(x) for x in nums.split()], int(target))


def test_sft_lowers_the_loss_and_caches(tmp_path):
    torch.manual_seed(0)
    cfg = SFTConfig(hidden_size=32, num_layers=1, num_heads=2, examples=64, steps=30, lr=1e-2)
    task = ProxySumTask()
    model, tok, info = sft_model(cfg, task, cache_dir=tmp_path)
    assert not info["cached"]
    again, _, info2 = sft_model(cfg, task, cache_dir=tmp_path)
    assert info2["cached"] and info2["key"] == info["key"]
    for (n, p), (n2, p2) in zip(model.named_parameters(), again.named_parameters(), strict=True):
        assert n == n2 and torch.equal(p, p2)
    losses = train_sft(model, tok, sft_examples(task, 64, 1, 0.0), steps=20, batch_size=16, lr=1e-2)
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_verifier_rewards_hand_computed():
    task = ProxySumTask()
    items = [ITEM] * 4
    replies = ["3+9", "6+6", "hello", "7+5"]
    r = verifier_rewards(task, items, replies, correct=1.0, wrong=-0.5, format_reward=0.25)
    # correct, wrong (but parseable → format), unparseable, correct
    # 1 + 0.25, -0.5 + 0.25, -0.5 + 0, 1 + 0.25
    assert r.rewards.tolist() == [1.25, -0.25, -0.5, 1.25]
    assert r.correct.tolist() == [True, False, False, True]
    assert r.formatted.tolist() == [True, True, False, True]
    r2 = verifier_rewards(task, items, replies, format_reward=1.0, format_pattern=r"^\d")
    # pattern "starts with a digit": 3+9 yes, 6+6 yes, hello no, 7+5 yes
    assert r2.rewards.tolist() == [2.0, 1.0, 0.0, 2.0]
    with pytest.raises(EntrolabError, match="not a regex"):
        verifier_rewards(task, items, replies, format_pattern="(")
    with pytest.raises(EntrolabError, match="pair them 1:1"):
        verifier_rewards(task, items, replies[:2])


def test_pass_at_k_hand_cases():
    assert pass_at_k(8, 0, 1) == 0.0
    assert pass_at_k(8, 2, 1) == pytest.approx(2 / 8)
    # n=4, c=1, k=2: 1 − C(3,2)/C(4,2) = 1 − 3/6 = 0.5
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(8, 0, 8) == 0.0
    with pytest.raises(EntrolabError):
        pass_at_k(4, 5, 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.data())
def test_pass_at_k_equals_subset_enumeration(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    # reference: the fraction of k-subsets of n samples (c correct) with at least one correct
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    ref = Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))
    assert pass_at_k(n, c, k) == pytest.approx(float(ref), abs=1e-12)


def test_answer_entropy_hand_cases():
    assert answer_entropy(["3+9", "3+9", "3+9", "3+9"]) == 0.0
    # two clusters of 2: ln 2
    assert answer_entropy(["3+9", "5+7", "3+9", "5+7"]) == pytest.approx(math.log(2))
    # unparseable answers are singletons: {3+9: 2, None: 1, None: 1} → −(½ln½ + 2·¼ln¼)
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert answer_entropy(["3+9", None, "3+9", None]) == pytest.approx(expected)
