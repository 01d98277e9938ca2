"""The default arithmetic task leaves room for confidence on the embedded model (slow).

Issue 3 asks for task defaults where SmolLM2-135M-Instruct is right 15–70% of the time. This
re-measures greedy accuracy on 48 items of the default level (a few minutes of CPU), so it is
marked ``slow`` and runs under ``make test-slow``.
"""

from __future__ import annotations

import pytest

from entrolab.config import GenerationConfig
from entrolab.tasks import load_task

pytestmark = [pytest.mark.slow, pytest.mark.model]


def test_default_arithmetic_accuracy_in_useful_range(smollm) -> None:
    task = load_task("arithmetic")
    items = task.items(48, seed=0)
    cfg = GenerationConfig(temperature=0, max_new_tokens=64, batch_size=16)
    texts = [t.text for t in smollm.generate([it.prompt for it in items], cfg)]
    grades = task.grade_many(items, texts)
    accuracy = sum(g.correct for g in grades) / len(grades)
    unparseable = sum(g.reason == "unparseable" for g in grades) / len(grades)
    assert 0.15 <= accuracy <= 0.70, f"accuracy {accuracy:.2f} outside [0.15, 0.70]"
    assert unparseable <= 0.10, f"{unparseable:.0%} of replies had no number"
