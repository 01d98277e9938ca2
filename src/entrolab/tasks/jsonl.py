"""JSONL task: the user's own prompts with reference answers.

One JSON object per line::

    {"prompt": "What is 2 + 2?", "answer": "4"}
    {"id": "q2", "prompt": "Capital of France?", "answer": "Paris", "topic": "geo"}

``prompt`` (non-empty string) and ``answer`` (string or number) are required; ``id`` is optional
(default ``<file stem>-<line number>``); any other field goes to ``TaskItem.meta``. Blank lines
are skipped. Errors name the file and the 1-based line number.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from entrolab.errors import EntrolabError
from entrolab.tasks.base import PREFIXED, TASKS, Task, TaskItem, reference_text

__all__ = ["JsonlTask", "read_jsonl_items"]


def read_jsonl_items(path: str | Path, instructions: str = "") -> list[TaskItem]:
    """Parse a task JSONL file into items (in file order).

    Raises:
        EntrolabError: missing/unreadable file, malformed JSON, a line that is not an object,
            a missing or empty ``prompt``/``answer``, a duplicate ``id``, or no items at all.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise EntrolabError(f"task file {str(p)!r} does not exist (or is not a file)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EntrolabError(f"cannot read task file {str(p)!r}: {e}") from None
    items: list[TaskItem] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise EntrolabError(
                f"{where}: malformed JSON ({e.msg} at column {e.colno}); each line must be one "
                'JSON object like {"prompt": "...", "answer": "..."}'
            ) from None
        if not isinstance(obj, dict):
            raise EntrolabError(
                f"{where}: expected a JSON object with 'prompt' and 'answer', "
                f"got {type(obj).__name__}"
            )
        for key in ("prompt", "answer"):
            if key not in obj:
                raise EntrolabError(
                    f"{where}: missing the {key!r} field; each line needs 'prompt' and 'answer' "
                    f"(found fields: {', '.join(sorted(obj)) or 'none'})"
                )
        prompt, answer = obj.pop("prompt"), obj.pop("answer")
        if not isinstance(prompt, str) or not prompt.strip():
            raise EntrolabError(f"{where}: 'prompt' must be a non-empty string")
        if isinstance(answer, bool) or not isinstance(answer, str | int | float):
            raise EntrolabError(
                f"{where}: 'answer' must be a string or a number, got {type(answer).__name__}"
            )
        answer = reference_text(answer)
        if not answer.strip():
            raise EntrolabError(f"{where}: 'answer' is empty; give the reference answer")
        item_id = str(obj.pop("id", f"{p.stem}-{lineno}"))
        if item_id in seen:
            raise EntrolabError(
                f"{where}: duplicate id {item_id!r} (first used on line {seen[item_id]}); "
                "ids must be unique"
            )
        seen[item_id] = lineno
        question = prompt.strip()
        full = f"{question} {instructions}".strip() if instructions else question
        items.append(TaskItem(item_id, full, answer, {**obj, "line": lineno}))
    if not items:
        raise EntrolabError(
            f"task file {str(p)!r} has no items; add lines like "
            '{"prompt": "What is 2 + 2?", "answer": "4"}'
        )
    return items


class JsonlTask(Task):
    """Prompts and reference answers from a JSONL file (read and validated on construction).

    Args:
        path: the ``.jsonl`` file.
        instructions: appended to every prompt (e.g. "Answer with just the number.").
        answer_kind: how replies are parsed; ``"infer"`` (default) = numbers for numeric
            references, else text (boxed / <answer> / "Answer:" line / last line).
        shuffle: draw items in a seeded random order instead of file order.

    ``items(n, seed)`` returns the first ``min(n, len(task))`` items (of the seeded permutation
    when ``shuffle``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        instructions: str = "",
        answer_kind: str = "infer",
        shuffle: bool = False,
    ) -> None:
        super().__init__()
        if answer_kind not in self.KIND_CHOICES:
            raise EntrolabError(
                f"unknown answer_kind {answer_kind!r}; use one of {', '.join(self.KIND_CHOICES)}"
            )
        self.path = Path(path).expanduser()
        self.instructions = instructions
        self.answer_kind = answer_kind
        self.shuffle = bool(shuffle)
        self._items = read_jsonl_items(self.path, instructions)
        self.name = f"jsonl:{self.path.stem}"
        self.spec = f"jsonl:{self.path}"
        self.settings = {
            "instructions": instructions,
            "answer_kind": answer_kind,
            "shuffle": self.shuffle,
        }

    def __len__(self) -> int:
        return len(self._items)

    def _make_items(self, n: int, seed: int) -> list[TaskItem]:
        items = list(self._items)
        if self.shuffle:
            random.Random(f"jsonl|{seed}").shuffle(items)
        return items[:n]


TASKS.register(
    "jsonl",
    summary="your own prompts and reference answers from a JSONL file, as jsonl:<path>",
    defaults={"instructions": "", "answer_kind": "infer", "shuffle": False},
)(JsonlTask)
PREFIXED.add("jsonl")
