"""Verifiable tasks: prompts with reference answers, and graders for free-text replies.

* :func:`load_task` builds a task from a spec: a registry name (``"arithmetic"``),
  ``"rg:<reasoning_gym dataset>"`` or ``"jsonl:<path>"``; :data:`TASKS` lists them.
* :class:`Task` – ``items(n, seed)`` (deterministic) and ``grade(item, reply) -> Grade``.
* :mod:`entrolab.tasks.answers` – answer extraction, equivalence (math-verify with an exact-match
  fallback), canonical answer keys and answer clustering for semantic entropy.

Pure Python: no torch, model or backend imports. reasoning-gym and math-verify are optional and
imported only when used.
"""

from __future__ import annotations

from entrolab.tasks.answers import (
    ANSWER_KINDS,
    answer_key,
    answers_equivalent,
    cluster_answers,
    extract_answer,
    extract_boxed,
    is_numeric,
    math_verify_available,
    to_fraction,
)
from entrolab.tasks.arithmetic import DEFAULT_LEVEL, LEVELS, ArithmeticLevel, ArithmeticTask
from entrolab.tasks.base import TASKS, Grade, Task, TaskItem, load_task
from entrolab.tasks.jsonl import JsonlTask, read_jsonl_items
from entrolab.tasks.rg import ReasoningGymTask
from entrolab.tasks.stated import AnswerBeforeConfidence, answer_part

__all__ = [
    "ANSWER_KINDS",
    "DEFAULT_LEVEL",
    "LEVELS",
    "TASKS",
    "AnswerBeforeConfidence",
    "ArithmeticLevel",
    "ArithmeticTask",
    "Grade",
    "JsonlTask",
    "ReasoningGymTask",
    "Task",
    "TaskItem",
    "answer_key",
    "answer_part",
    "answers_equivalent",
    "cluster_answers",
    "extract_answer",
    "extract_boxed",
    "is_numeric",
    "load_task",
    "math_verify_available",
    "read_jsonl_items",
    "to_fraction",
]
