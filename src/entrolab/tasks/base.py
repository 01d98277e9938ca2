"""Task core: :class:`TaskItem`, :class:`Grade`, the :class:`Task` base class, the :data:`TASKS`
registry and :func:`load_task`.

A task makes prompts with reference answers (``items``) and grades a model's free-text reply
(``grade``). Items are deterministic for a seed, so a run can be resumed or reproduced from
``(task.spec, task.settings, n, seed)``. Grading never raises on a bad reply: an answer that
cannot be extracted is graded incorrect with reason ``"unparseable"``.
"""

from __future__ import annotations

import difflib
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from entrolab.errors import EntrolabError, UnknownNameError
from entrolab.registry import Registry
from entrolab.tasks.answers import (
    ANSWER_KINDS,
    answers_equivalent,
    extract_answer,
    is_numeric,
)

__all__ = ["PREFIXED", "TASKS", "Grade", "Task", "TaskItem", "load_task"]

#: Grade.reason values.
REASONS = ("correct", "wrong", "unparseable")


@dataclass(frozen=True)
class TaskItem:
    """One prompt with its reference answer.

    Attributes:
        id: unique within the task for a given (n, seed); stable across runs.
        prompt: the full user prompt given to the model (instructions included).
        answer: the reference answer as text (``"42"``, ``"3/4"``, ``"Paris"``).
        meta: JSON-serialisable details (expression, difficulty, the source dataset entry, …).
    """

    id: str
    prompt: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "answer": self.answer, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskItem:
        try:
            return cls(str(d["id"]), str(d["prompt"]), str(d["answer"]), dict(d.get("meta") or {}))
        except KeyError as e:
            raise EntrolabError(f"task item is missing the {e.args[0]!r} field") from None


@dataclass(frozen=True)
class Grade:
    """The verdict on one reply.

    Attributes:
        correct: whether the reply's answer matches the reference.
        parsed: the answer extracted from the reply (None when none could be found).
        reason: ``"correct"`` | ``"wrong"`` | ``"unparseable"`` (unparseable counts as wrong).
        score: the verifier's raw score in [0, 1] (1.0/0.0 for exact tasks; reasoning-gym
            datasets may give partial credit, and ``correct`` is ``score >= threshold``).
        meta: extra details (e.g. a verifier error message).
    """

    correct: bool
    parsed: str | None
    reason: str
    score: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise EntrolabError(f"Grade.reason must be one of {REASONS}, got {self.reason!r}")
        if self.correct != (self.reason == "correct"):
            raise EntrolabError(f"Grade(correct={self.correct}) contradicts reason {self.reason!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "correct": self.correct,
            "parsed": self.parsed,
            "reason": self.reason,
            "score": self.score,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Grade:
        return cls(
            bool(d["correct"]),
            d.get("parsed"),
            str(d["reason"]),
            float(d.get("score", 0.0)),
            dict(d.get("meta") or {}),
        )


def _check_kind(kind: str) -> str:
    if kind not in ANSWER_KINDS:
        raise EntrolabError(f"unknown answer_kind {kind!r}; use one of {', '.join(ANSWER_KINDS)}")
    return kind


class Task(ABC):
    """A verifiable task: deterministic items and a grader.

    Subclasses implement :meth:`_make_items`; the default :meth:`grade` extracts an answer with
    :func:`~entrolab.tasks.answers.extract_answer` and compares it with
    :func:`~entrolab.tasks.answers.answers_equivalent`.

    Attributes:
        name: short name for reports (``"arithmetic"``, ``"rg:chain_sum"``, ``"jsonl:data"``).
        spec: the string :func:`load_task` accepts to rebuild this task.
        settings: keyword settings that, with ``spec``, rebuild it: ``load_task(spec, **settings)``.
        instructions: text appended to each question (the prompt suffix), "" for none.
        answer_kind: how replies are parsed (an :data:`~entrolab.tasks.answers.ANSWER_KINDS`
            value), or ``"infer"``: ``"number"`` when the item's reference is numeric, else
            ``"text"``.
    """

    name: str = "task"
    spec: str = ""
    instructions: str = ""
    answer_kind: str = "infer"
    KIND_CHOICES: ClassVar[tuple[str, ...]] = ("infer", *ANSWER_KINDS)

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}

    # ------------------------------------------------------------------------------ items
    @abstractmethod
    def _make_items(self, n: int, seed: int) -> list[TaskItem]:
        """Up to ``n`` items for ``seed`` (subclasses; validation happens in :meth:`items`)."""

    def items(self, n: int, seed: int = 0) -> list[TaskItem]:
        """``n`` items, the same ones every time for the same ``seed`` (fixed-size datasets may
        return fewer: all they have). Raises :class:`EntrolabError` for ``n < 1`` or 0 items."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise EntrolabError(f"the number of task items must be an integer >= 1, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise EntrolabError(f"seed must be an integer, got {seed!r}")
        out = self._make_items(n, seed)
        if not out:
            raise EntrolabError(
                f"task {self.name!r} produced no items; check its settings or data file"
            )
        ids = [it.id for it in out]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise EntrolabError(
                f"task {self.name!r} has duplicate item id {dup!r}; ids must be unique"
            )
        return out

    def format_prompt(self, question: str) -> str:
        """``question`` followed by the task's instructions (one space between, if any)."""
        question = question.strip()
        return f"{question} {self.instructions}".strip() if self.instructions else question

    # ---------------------------------------------------------------------------- grading
    def kind_for(self, item: TaskItem) -> str:
        """The answer kind used to parse replies to ``item``."""
        if self.answer_kind != "infer":
            return self.answer_kind
        return "number" if is_numeric(item.answer) else "text"

    def extract(self, item: TaskItem, response_text: str | None) -> str | None:
        """The answer in ``response_text`` for ``item`` (None if there is none)."""
        return extract_answer(response_text, self.kind_for(item))

    def grade(self, item: TaskItem, response_text: str | None) -> Grade:
        """Grade one reply: ``unparseable`` if no answer can be extracted, else correct/wrong."""
        parsed = self.extract(item, response_text)
        if parsed is None:
            return Grade(False, None, "unparseable", 0.0)
        ok = answers_equivalent(parsed, item.answer)
        return Grade(ok, parsed, "correct" if ok else "wrong", 1.0 if ok else 0.0)

    def grade_many(self, items: Sequence[TaskItem], responses: Sequence[str | None]) -> list[Grade]:
        """:meth:`grade` for aligned lists of items and replies."""
        if len(items) != len(responses):
            raise EntrolabError(
                f"got {len(items)} items but {len(responses)} responses; pass one reply per item"
            )
        return [self.grade(it, r) for it, r in zip(items, responses, strict=True)]

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description: name, spec and settings (enough to rebuild the task)."""
        return {"name": self.name, "spec": self.spec, "settings": json_safe(self.settings)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"{type(self).__name__}({self.spec!r}{', ' if args else ''}{args})"


def json_safe(value: Any) -> Any:
    """``value`` with tuples → lists and non-JSON objects → str, so it survives a JSON round trip."""
    return json.loads(json.dumps(value, default=str))


def reference_text(answer: Any) -> str:
    """A reference answer as text; integral floats are written as ints (3.0 → "3")."""
    if isinstance(answer, float) and answer.is_integer():
        return str(int(answer))
    return str(answer)


# ---------------------------------------------------------------------------------- registry
#: Task factories by name. ``load_task("name", **settings)`` calls ``TASKS.get(name)(**settings)``;
#: for the prefixed kinds in :data:`PREFIXED`, ``load_task("rg:chain_sum")`` calls
#: ``TASKS.get("rg")("chain_sum", **settings)``.
TASKS: Registry[Callable[..., Task]] = Registry("tasks")

#: Registry names that take an argument after a colon: ``rg:<dataset>``, ``jsonl:<path>``.
PREFIXED: set[str] = set()


def load_task(spec: str, **settings: Any) -> Task:
    """Build a task from a spec string and its settings.

    Args:
        spec: a registry name (``"arithmetic"``), ``"rg:<reasoning_gym dataset>"`` (settings go to
            ``reasoning_gym.create_dataset``) or ``"jsonl:<path>"``.
        settings: keyword settings for the task (e.g. ``level=3`` for arithmetic).

    Raises:
        UnknownNameError: unknown name (the message lists the known ones).
        EntrolabError: a prefixed kind without its argument, or bad settings.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise EntrolabError("task spec is empty; give a task name such as 'arithmetic'")
    _ensure_builtin_tasks()
    name, sep, arg = spec.strip().partition(":")
    if name not in TASKS:
        raise UnknownNameError(f"unknown task {spec!r}.{_task_hint(name)} Known tasks: {_known()}")
    factory = TASKS.get(name)
    if name in PREFIXED:
        if not sep or not arg.strip():
            raise EntrolabError(
                f"task {name!r} needs an argument: write '{name}:<{_ARG_HELP.get(name, 'name')}>'"
            )
        _check_settings(name, factory, settings)
        return factory(arg.strip(), **settings)
    if sep:
        raise EntrolabError(
            f"task {name!r} takes no ':' argument (got {spec!r}); pass settings as keywords"
        )
    _check_settings(name, factory, settings)
    return factory(**settings)


def _check_settings(name: str, factory: Callable[..., Task], settings: Mapping[str, Any]) -> None:
    """Unknown keyword settings fail naming the accepted ones (unless the factory takes any)."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = [
        p.name
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        or (p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is not p.empty)
    ]
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise EntrolabError(
            f"task {name!r} has no setting(s) {', '.join(map(repr, unknown))}; "
            f"its settings are: {', '.join(accepted)}"
        )


_ARG_HELP = {"rg": "reasoning_gym dataset name", "jsonl": "path to a .jsonl file"}


def _known() -> str:
    return ", ".join(
        f"{n}:<{_ARG_HELP.get(n, 'argument')}>" if n in PREFIXED else n for n in TASKS.names()
    )


def _task_hint(name: str) -> str:
    """' Did you mean …?' for a misspelt task or a bare reasoning-gym dataset name."""
    if name.endswith(".jsonl"):
        return f" Did you mean 'jsonl:{name}'?"
    try:
        from reasoning_gym.factory import DATASETS
    except ImportError:
        DATASETS = {}
    if name in DATASETS:
        return f" Did you mean 'rg:{name}'?"
    close = difflib.get_close_matches(name, TASKS.names(), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _ensure_builtin_tasks() -> None:
    """Import the built-in task modules so that they register themselves (idempotent)."""
    from entrolab.tasks import arithmetic, jsonl, rg  # noqa: F401
