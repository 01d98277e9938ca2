"""Replies that state a confidence after their answer ("12 … Confidence: 7/10"): grade the answer
part only.

Prompts that ask for a verbal confidence after the answer (SaySelf, the RL recipes with a
``confidence_reward`` term or verbal calibration tracking) get replies whose last number is
often the confidence, not the answer: ``extract_answer("12\\nConfidence: 7/10")`` is ``"7/10"``.
:class:`AnswerBeforeConfidence` wraps a task so every reply is extracted and graded on
:func:`answer_part` of it — the text before its first "confidence" (any case). Pure Python.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["AnswerBeforeConfidence", "answer_part"]

_CONFIDENCE = re.compile(r"confidence", re.IGNORECASE)


def answer_part(text: str | None) -> str:
    """``text`` before its first "confidence" (any case); all of it when there is none."""
    return _CONFIDENCE.split(text or "", maxsplit=1)[0]


class AnswerBeforeConfidence:
    """``task`` with every reply extracted and graded on :func:`answer_part` of it; everything
    else (items, prompts, settings, …) is the wrapped task's. Wrapping twice changes nothing."""

    def __init__(self, task: Any) -> None:
        self.task = task.task if isinstance(task, AnswerBeforeConfidence) else task

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def extract(self, item: Any, text: str | None) -> str | None:
        return self.task.extract(item, answer_part(text))

    def grade(self, item: Any, text: str | None) -> Any:
        return self.task.grade(item, answer_part(text))

    def grade_many(self, items: Sequence[Any], texts: Sequence[str | None]) -> list:
        return self.task.grade_many(items, [answer_part(t) for t in texts])

    def __repr__(self) -> str:
        return f"AnswerBeforeConfidence({self.task!r})"
