"""Task core (TaskItem, Grade, Task, load_task, TASKS) and the built-in arithmetic task."""

from __future__ import annotations

import ast
import json
import operator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.errors import EntrolabError, UnknownNameError
from entrolab.registry import to_markdown
from entrolab.tasks import (
    LEVELS,
    TASKS,
    ArithmeticTask,
    Grade,
    Task,
    TaskItem,
    load_task,
)
from entrolab.tasks.arithmetic import evaluate

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _reference_eval(expression: str) -> int:
    """An independent evaluator: Python's own parser (with its precedence) over the AST."""

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.BinOp):
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise AssertionError(f"unexpected node {node!r}")

    return walk(ast.parse(expression, mode="eval").body)


# ---------------------------------------------------------------------------------- evaluate
def test_evaluate_hand_computed() -> None:
    assert evaluate([2, 3, 4], ["+", "*"]) == 14  # 2 + (3*4) = 14
    assert evaluate([2, 3, 4], ["*", "-"]) == 2  # (2*3) - 4 = 2
    assert evaluate([9, 8, 7, 6], ["-", "*", "+"]) == -41  # 9 - 56 + 6 = -41
    assert evaluate([5, 9], ["-"]) == -4
    with pytest.raises(EntrolabError, match="one operator between"):
        evaluate([1, 2], [])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 7), st.integers(0, 10**6), st.integers(0, 50))
def test_arithmetic_answers_match_python(level: int, seed: int, index: int) -> None:
    item = ArithmeticTask(level).make_item(index, seed)
    assert int(item.answer) == _reference_eval(item.meta["expression"])
    assert item.meta["expression"] in item.prompt


# ----------------------------------------------------------------------------------- items
def test_items_deterministic_and_prefix_stable() -> None:
    task = ArithmeticTask(level=5)
    a, b = task.items(40, seed=3), ArithmeticTask(level=5).items(40, seed=3)
    assert a == b
    assert task.items(10, seed=3) == a[:10]
    assert [it.prompt for it in task.items(40, seed=4)] != [it.prompt for it in a]
    assert len({it.id for it in a}) == 40


def test_items_pinned_values() -> None:
    """Seeds are hashed with SHA-512 by random.Random(str): stable across runs and platforms."""
    items = ArithmeticTask(level=2).items(3, seed=0)
    assert [(it.prompt, it.answer) for it in items] == [
        ("What is 5 + 7? Answer with just the number.", "12"),
        ("What is 8 - 1? Answer with just the number.", "7"),
        ("What is 4 + 9? Answer with just the number.", "13"),
    ]
    assert items[0].id == "arithmetic-L2-s0-00000"


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_levels_set_operand_ranges_and_operators(level: int) -> None:
    cfg = LEVELS[level]
    items = ArithmeticTask(level).items(300, seed=1)
    operands = [x for it in items for x in it.meta["operands"]]
    ops = {op for it in items for op in it.meta["operators"]}
    lo, hi = 10 ** (cfg.min_digits - 1), 10**cfg.max_digits - 1
    assert min(operands) >= lo and max(operands) <= hi
    assert ops == set(cfg.operators)  # 300 items draw every allowed operator
    assert all(len(it.meta["operands"]) == cfg.num_terms for it in items)
    # the digit counts drawn cover the whole [min_digits, max_digits] range
    assert {len(str(x)) for x in operands} == set(range(cfg.min_digits, cfg.max_digits + 1))


def test_levels_get_harder_in_magnitude() -> None:
    def mean_abs_answer(level: int) -> float:
        items = ArithmeticTask(level).items(200, seed=0)
        return sum(abs(int(it.answer)) for it in items) / len(items)

    # level 1: a+b with a,b in 1..9 has mean 10; 2-digit sums (level 3) and products are larger.
    assert mean_abs_answer(1) == pytest.approx(10, abs=1.0)
    assert mean_abs_answer(3) > 3 * mean_abs_answer(1)
    assert mean_abs_answer(4) > mean_abs_answer(3)


def test_arithmetic_overrides_and_template() -> None:
    task = ArithmeticTask(
        1, num_terms=3, operators="+,*", template="{expression} =", instructions=""
    )
    items = task.items(50)
    assert all(len(it.meta["operands"]) == 3 for it in items)
    assert {op for it in items for op in it.meta["operators"]} == {"+", "*"}
    assert items[0].prompt == f"{items[0].meta['expression']} ="


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": 99}, "unknown arithmetic level 99"),
        ({"level": 1, "operators": ["/"]}, "operators must be a non-empty subset"),
        ({"level": 1, "min_digits": 3, "max_digits": 2}, "min_digits <= max_digits"),
        ({"level": 1, "num_terms": 1}, "num_terms must be >= 2"),
        ({"level": 1, "template": "What is it?"}, "must contain '{expression}'"),
        ({"level": 1, "answer_kind": "float"}, "unknown answer_kind"),
    ],
)
def test_arithmetic_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(EntrolabError, match=message):
        ArithmeticTask(**kwargs)


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_items_bad_n(n: object) -> None:
    with pytest.raises(EntrolabError, match="integer >= 1"):
        ArithmeticTask().items(n)  # type: ignore[arg-type]


def test_empty_task_is_an_error() -> None:
    class Empty(Task):
        name = "empty"

        def _make_items(self, n: int, seed: int) -> list[TaskItem]:
            return []

    with pytest.raises(EntrolabError, match="produced no items"):
        Empty().items(5)


# ----------------------------------------------------------------------------------- grading
@pytest.mark.parametrize(
    ("reply", "correct", "parsed", "reason"),
    [
        ("12", True, "12", "correct"),
        ("5 + 7 = 12.", True, "12", "correct"),
        ("The answer is 12. (I added 5 and 7.)", True, "12", "correct"),
        ("The sum is twelve, i.e. 12.0", True, "12.0", "correct"),
        ("13", False, "13", "wrong"),
        ("5 + 7 = 11", False, "11", "wrong"),
        ("I cannot do maths.", False, None, "unparseable"),
        ("", False, None, "unparseable"),
    ],
)
def test_arithmetic_grading(reply: str, correct: bool, parsed: str | None, reason: str) -> None:
    task = ArithmeticTask(level=2)
    item = task.items(1)[0]  # "What is 5 + 7?" → 12
    g = task.grade(item, reply)
    assert (g.correct, g.parsed, g.reason) == (correct, parsed, reason)
    assert g.score == (1.0 if correct else 0.0)


def test_grade_many_and_length_mismatch() -> None:
    task = ArithmeticTask(level=1)
    items = task.items(3)
    grades = task.grade_many(items, [it.answer for it in items])
    assert [g.correct for g in grades] == [True, True, True]
    with pytest.raises(EntrolabError, match="one reply per item"):
        task.grade_many(items, ["1"])


def test_grade_and_item_validation_and_roundtrip() -> None:
    with pytest.raises(EntrolabError, match="reason must be one of"):
        Grade(False, None, "bad")
    with pytest.raises(EntrolabError, match="contradicts"):
        Grade(True, "1", "wrong")
    g = Grade(False, "13", "wrong", 0.5, {"error": "x"})
    assert Grade.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    item = ArithmeticTask(4).items(1)[0]
    assert TaskItem.from_dict(json.loads(json.dumps(item.to_dict()))) == item
    assert hash(item) == hash(TaskItem.from_dict(item.to_dict()))  # meta excluded from hash
    with pytest.raises(EntrolabError, match="missing the 'answer' field"):
        TaskItem.from_dict({"id": "a", "prompt": "p"})


# ------------------------------------------------------------------------------ load_task
def test_load_task_and_rebuild_from_describe() -> None:
    task = load_task("arithmetic", level=3)
    assert isinstance(task, ArithmeticTask) and task.level == 3
    d = json.loads(json.dumps(task.describe()))
    rebuilt = load_task(d["spec"], **d["settings"])
    assert rebuilt.items(20, seed=7) == task.items(20, seed=7)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("arithmatic", r"unknown task 'arithmatic'\. Did you mean 'arithmetic'\? Known tasks: "),
        ("nope", r"Known tasks: arithmetic, jsonl:<path to a \.jsonl file>, rg:<reasoning_gym"),
        ("my.jsonl", r"Did you mean 'jsonl:my\.jsonl'"),
    ],
)
def test_load_task_unknown_names(spec: str, message: str) -> None:
    with pytest.raises(UnknownNameError, match=message):
        load_task(spec)


def test_load_task_malformed_specs() -> None:
    with pytest.raises(EntrolabError, match="task spec is empty"):
        load_task("  ")
    with pytest.raises(EntrolabError, match="needs an argument: write 'rg:<"):
        load_task("rg")
    with pytest.raises(EntrolabError, match="needs an argument: write 'jsonl:<"):
        load_task("jsonl:")
    with pytest.raises(EntrolabError, match="takes no ':' argument"):
        load_task("arithmetic:3")
    with pytest.raises(EntrolabError, match=r"no setting\(s\) 'levle'; its settings are: level, "):
        load_task("arithmetic", levle=3)
    with pytest.raises(EntrolabError, match="no setting"):
        load_task("arithmetic", seed=1)


def test_registry_entries() -> None:
    assert TASKS.names() == ["arithmetic", "jsonl", "rg"]
    assert TASKS.get("arithmetic") is ArithmeticTask
    table = to_markdown(TASKS)
    assert "`arithmetic`" in table and "reasoning-gym" in table
