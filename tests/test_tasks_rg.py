"""reasoning-gym adapter: real dataset entries, graded by each dataset's own verifier."""

from __future__ import annotations

import json

import pytest

from entrolab.errors import EntrolabError, UnknownNameError
from entrolab.tasks import ReasoningGymTask, TaskItem, load_task

rg = pytest.importorskip("reasoning_gym")

CHAIN = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


def test_items_match_create_dataset() -> None:
    """Items are exactly reasoning_gym.create_dataset(name, size=n, seed=seed, **settings)."""
    task = load_task("rg:chain_sum", **CHAIN)
    items = task.items(6, seed=11)
    ds = rg.create_dataset("chain_sum", size=6, seed=11, **CHAIN)
    assert [it.prompt for it in items] == [ds[i]["question"] for i in range(6)]
    assert [it.answer for it in items] == [ds[i]["answer"] for i in range(6)]
    assert items == load_task("rg:chain_sum", **CHAIN).items(6, seed=11)
    assert items[0].id == "rg:chain_sum-s11-00000"
    # 2 terms of 1 digit: the expression has exactly one operator between two 1-digit numbers
    for it in items:
        a, op, b = it.meta["entry"]["metadata"]["expression"].split()
        assert len(a.lstrip("-")) == 1 and len(b.lstrip("-")) == 1 and op in "+-"


@pytest.mark.parametrize(
    ("dataset", "settings"),
    [
        ("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "max_digits": 1, "operators": ["+"]}),
        ("chain_sum", CHAIN),
        ("products", {"min_digits": 1, "max_digits": 2}),
    ],
)
def test_grading_with_dataset_verifier(dataset: str, settings: dict) -> None:
    task = ReasoningGymTask(dataset, **settings)
    for item in task.items(8, seed=2):
        ref = item.answer
        ok = task.grade(item, f"Let me work it out.\nThe answer is {ref}.")
        assert (ok.correct, ok.parsed, ok.reason, ok.score) == (True, ref, "correct", 1.0)
        wrong = str(int(ref) + 1)
        bad = task.grade(item, f"I get {wrong}")
        assert (bad.correct, bad.parsed, bad.reason) == (False, wrong, "wrong")
        none = task.grade(item, "no idea")
        assert (none.correct, none.parsed, none.reason, none.score) == (
            False,
            None,
            "unparseable",
            0.0,
        )


def test_partial_credit_is_not_correct_at_default_threshold() -> None:
    """reasoning-gym's default verifier scores len(ref)/len(answer) when ref is a substring:
    for reference "3" and answer "13" that is 1/2 = 0.5 — kept as score, graded wrong."""
    task = load_task("rg:chain_sum", **CHAIN)
    item = next(it for it in task.items(40, seed=1) if it.answer == "3")
    g = task.grade(item, "13")
    assert (g.correct, g.reason, g.score) == (False, "wrong", 0.5)
    lenient = load_task("rg:chain_sum", threshold=0.5, **CHAIN)
    assert lenient.grade(item, "13").correct is True


def test_grading_after_json_roundtrip_and_fresh_task() -> None:
    """A resumed run grades items reloaded from JSON with a task built anew (no items() call)."""
    items = load_task("rg:products", min_digits=1, max_digits=1).items(3, seed=5)
    reloaded = [TaskItem.from_dict(json.loads(json.dumps(it.to_dict()))) for it in items]
    fresh = load_task("rg:products", min_digits=1, max_digits=1)
    assert all(fresh.grade(it, it.answer).correct for it in reloaded)


def test_non_numeric_dataset_uses_text_extraction() -> None:
    task = load_task("rg:spell_backward")
    item = task.items(1, seed=0)[0]
    assert task.kind_for(item) == "text"
    assert task.grade(item, f"Sure!\n{item.answer}").correct
    assert task.grade(item, f"<answer>{item.answer}</answer>").correct
    assert not task.grade(item, "Sure!\nxyzzy").correct


def test_verifier_exception_is_a_wrong_answer() -> None:
    task = load_task("rg:chain_sum", **CHAIN)
    item = task.items(1)[0]

    class Boom:
        def score_answer(self, answer: str, entry: dict) -> float:
            raise RuntimeError("verifier crashed")

    task._scorer = Boom()
    g = task.grade(item, "5")
    assert (g.correct, g.reason, g.score) == (False, "wrong", 0.0)
    assert "verifier crashed" in g.meta["error"]


def test_errors() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'chain_sum'"):
        load_task("rg:chain_summ")
    with pytest.raises(EntrolabError, match="Its settings are: min_terms, max_terms"):
        load_task("rg:chain_sum", bogus=1)
    with pytest.raises(EntrolabError, match="max_digits must be >= min_digits"):
        load_task("rg:products", min_digits=3, max_digits=1)
    with pytest.raises(EntrolabError, match="do not pass 'size'"):
        load_task("rg:chain_sum", size=10)
    with pytest.raises(EntrolabError, match=r"threshold must be in \(0, 1\]"):
        load_task("rg:chain_sum", threshold=0)
    item = TaskItem("x", "p", "1", {})
    with pytest.raises(EntrolabError, match="no reasoning-gym entry"):
        load_task("rg:chain_sum").grade(item, "1")
