"""JSONL task: parsing, errors with line numbers, grading of numeric and text references."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from entrolab.errors import EntrolabError
from entrolab.tasks import JsonlTask, load_task


def _write(tmp_path: Path, lines: list[str], name: str = "data.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_parse_items(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        [
            json.dumps({"prompt": "What is 2 + 2?", "answer": "4"}),
            "",  # blank lines are skipped (but still counted for line numbers)
            json.dumps(
                {"id": "cap", "prompt": "Capital of France?", "answer": "Paris", "t": "geo"}
            ),
            json.dumps({"prompt": "Half of 3?", "answer": 1.5}),
            json.dumps({"prompt": "Three?", "answer": 3.0}),
        ],
    )
    task = load_task(f"jsonl:{p}", instructions="Be brief.")
    items = task.items(100)  # more than the file has: all 4
    assert [it.id for it in items] == ["data-1", "cap", "data-4", "data-5"]
    assert items[0].prompt == "What is 2 + 2? Be brief."
    assert [it.answer for it in items] == ["4", "Paris", "1.5", "3"]
    assert items[1].meta == {"t": "geo", "line": 3}
    assert task.items(2) == items[:2]
    assert task.name == "jsonl:data" and task.spec == f"jsonl:{p}"
    assert len(task) == 4


def test_grading(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        [
            json.dumps({"prompt": "2+2?", "answer": "4"}),
            json.dumps({"prompt": "Capital?", "answer": "Paris"}),
            json.dumps({"prompt": "Half?", "answer": "1/2"}),
        ],
    )
    task = JsonlTask(p)
    num, text, frac = task.items(3)
    assert task.grade(num, "2 + 2 = 4.").correct
    assert task.grade(num, "It is 5").reason == "wrong"
    assert task.grade(num, "four").reason == "unparseable"  # numeric reference: needs a number
    assert task.grade(text, "The answer is: paris.").correct
    assert task.grade(text, "I think\nLondon").reason == "wrong"
    assert task.grade(frac, "That is 0.5").correct  # 0.5 ≡ 1/2


def test_shuffle_is_seeded(tmp_path: Path) -> None:
    p = _write(tmp_path, [json.dumps({"prompt": f"q{i}", "answer": str(i)}) for i in range(30)])
    plain = JsonlTask(p).items(30, seed=1)
    a = JsonlTask(p, shuffle=True).items(30, seed=1)
    assert a == JsonlTask(p, shuffle=True).items(30, seed=1)
    assert a != plain and sorted(it.id for it in a) == sorted(it.id for it in plain)
    assert JsonlTask(p, shuffle=True).items(30, seed=2) != a


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            ['{"prompt": "a", "answer": "1"}', '{"prompt": "b", "answer": '],
            r"data\.jsonl:2: malformed JSON",
        ),
        (
            ['{"prompt": "a", "answer": "1"}', "", '["a", "1"]'],
            r"data\.jsonl:3: expected a JSON object",
        ),
        (['{"prompt": "a"}'], r"data\.jsonl:1: missing the 'answer' field.*found fields: prompt"),
        (['{"question": "a", "answer": "1"}'], r":1: missing the 'prompt' field"),
        (['{"prompt": "  ", "answer": "1"}'], r":1: 'prompt' must be a non-empty string"),
        (['{"prompt": "a", "answer": ""}'], r":1: 'answer' is empty"),
        (
            ['{"prompt": "a", "answer": [1]}'],
            r":1: 'answer' must be a string or a number, got list",
        ),
        (['{"prompt": "a", "answer": true}'], r":1: 'answer' must be a string or a number"),
        (
            [
                '{"id": "x", "prompt": "a", "answer": "1"}',
                '{"id": "x", "prompt": "b", "answer": "2"}',
            ],
            r":2: duplicate id 'x' \(first used on line 1\)",
        ),
        (["", "   "], r"has no items"),
    ],
)
def test_errors_name_the_line(tmp_path: Path, lines: list[str], message: str) -> None:
    p = _write(tmp_path, lines)
    with pytest.raises(EntrolabError, match=message):
        load_task(f"jsonl:{p}")


def test_missing_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(EntrolabError, match="does not exist"):
        load_task(f"jsonl:{tmp_path / 'nope.jsonl'}")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(EntrolabError, match="has no items"):
        JsonlTask(empty)
    with pytest.raises(EntrolabError, match="no setting"):
        load_task(f"jsonl:{empty}", prompt_suffix="x")
