"""reasoning-gym adapter: any procedural dataset of the ``reasoning-gym`` package, scored by its
own verifier.

``load_task("rg:chain_sum", min_terms=2, max_terms=2)`` builds
``reasoning_gym.create_dataset("chain_sum", size=n, seed=seed, min_terms=2, max_terms=2)`` when
items are drawn. A reply is parsed leniently (numbers for datasets whose reference answers are
numeric, else the boxed/<answer>/marked/last-line text) and the parsed answer is passed to the
dataset's ``score_answer(answer=..., entry=...)``; the raw score is kept in ``Grade.score`` and
``correct`` is ``score >= threshold`` (default 1.0: reasoning-gym's default verifier gives
partial credit ``len(reference)/len(answer)`` when the reference is a substring of the answer, so
``"13"`` for ``"3"`` scores 0.5 and must not count as correct).

reasoning-gym is imported only when this task is built (it is an optional dependency).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
from dataclasses import is_dataclass
from typing import Any

from entrolab.errors import EntrolabError, UnknownNameError
from entrolab.tasks.base import PREFIXED, TASKS, Grade, Task, TaskItem, json_safe, reference_text

__all__ = ["ReasoningGymTask"]


def _reasoning_gym() -> Any:
    try:
        return importlib.import_module("reasoning_gym")
    except ImportError:
        raise EntrolabError(
            "rg:<dataset> tasks need the reasoning-gym package: pip install reasoning-gym"
        ) from None


class ReasoningGymTask(Task):
    """A reasoning-gym dataset as an entrolab task.

    Args:
        dataset: a reasoning-gym dataset name (``"basic_arithmetic"``, ``"chain_sum"``, …).
        threshold: minimum verifier score counted as correct, in (0, 1].
        instructions: appended to each question (reasoning-gym questions already say what to
            answer, so the default is none).
        answer_kind: how replies are parsed; ``"infer"`` = numbers when the item's reference
            is numeric, else text.
        settings: the dataset's config fields (``min_terms=2``, ``max_digits=1``, …), passed to
            ``reasoning_gym.create_dataset``. ``size`` and ``seed`` come from :meth:`items`.
    """

    def __init__(
        self,
        dataset: str,
        *,
        threshold: float = 1.0,
        instructions: str = "",
        answer_kind: str = "infer",
        **settings: Any,
    ) -> None:
        super().__init__()
        rg = _reasoning_gym()
        known = sorted(rg.factory.DATASETS)
        if dataset not in known:
            close = difflib.get_close_matches(dataset, known, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"unknown reasoning-gym dataset {dataset!r}.{hint} "
                f"Known datasets ({len(known)}): {', '.join(known)}"
            )
        for reserved in ("size", "seed"):
            if reserved in settings:
                raise EntrolabError(
                    f"do not pass {reserved!r} as a task setting; it comes from "
                    f"task.items(n, seed) (the CLI's --n and --seed)"
                )
        if not (isinstance(threshold, int | float) and 0 < threshold <= 1):
            raise EntrolabError(f"threshold must be in (0, 1], got {threshold!r}")
        if answer_kind not in self.KIND_CHOICES:
            raise EntrolabError(
                f"unknown answer_kind {answer_kind!r}; use one of {', '.join(self.KIND_CHOICES)}"
            )
        self.dataset = dataset
        self.name = f"rg:{dataset}"
        self.spec = self.name
        self.threshold = float(threshold)
        self.instructions = instructions
        self.answer_kind = answer_kind
        self.dataset_settings = dict(settings)
        self.settings = {
            "threshold": self.threshold,
            "instructions": instructions,
            "answer_kind": answer_kind,
            **settings,
        }
        self._scorer: Any = None
        self._create(size=1, seed=0)  # fail now, not mid-run, on bad settings

    def _create(self, size: int, seed: int) -> Any:
        rg = _reasoning_gym()
        try:
            ds = rg.create_dataset(self.dataset, size=size, seed=seed, **self.dataset_settings)
        except (TypeError, AssertionError, ValueError) as e:
            raise EntrolabError(
                f"reasoning-gym rejected the settings {self.dataset_settings!r} for "
                f"{self.dataset!r}: {e or type(e).__name__}. Its settings are: "
                f"{', '.join(self._config_fields())}"
            ) from None
        self._scorer = ds
        return ds

    def _config_fields(self) -> list[str]:
        config_cls = _reasoning_gym().factory.DATASETS[self.dataset][1]
        names = [f.name for f in dataclasses.fields(config_cls)] if is_dataclass(config_cls) else []
        return [n for n in names if n not in ("size", "seed")] or ["(unknown)"]

    def _make_items(self, n: int, seed: int) -> list[TaskItem]:
        ds = self._create(size=n, seed=seed)
        out = []
        for i in range(n):
            entry = ds[i]
            out.append(
                TaskItem(
                    id=f"{self.name}-s{seed}-{i:05d}",
                    prompt=self.format_prompt(str(entry["question"])),
                    answer=reference_text(entry["answer"]),
                    meta={"entry": json_safe(entry)},
                )
            )
        return out

    def grade(self, item: TaskItem, response_text: str | None) -> Grade:
        """Grade with the dataset's own ``score_answer`` after lenient extraction."""
        entry = item.meta.get("entry")
        if not isinstance(entry, dict):
            raise EntrolabError(
                f"item {item.id!r} has no reasoning-gym entry in meta['entry']; "
                "grade items made by this task's items()"
            )
        parsed = self.extract(item, response_text)
        if parsed is None:
            return Grade(False, None, "unparseable", 0.0)
        scorer = self._scorer if self._scorer is not None else self._create(size=1, seed=0)
        meta: dict[str, Any] = {}
        try:
            score = float(scorer.score_answer(answer=parsed, entry=entry))
            if not math.isfinite(score):
                meta["error"] = f"verifier returned {score}"
                score = 0.0
        except Exception as e:  # a verifier crash on a weird answer is a wrong answer
            score, meta["error"] = 0.0, f"{type(e).__name__}: {e}"
        ok = score >= self.threshold
        return Grade(ok, parsed, "correct" if ok else "wrong", score, meta)


TASKS.register(
    "rg",
    summary="any reasoning-gym dataset as rg:<name>, graded by the dataset's own verifier",
    paper="reasoning-gym (Stojanovski et al., 2025)",
    defaults={"threshold": 1.0, "instructions": ""},
)(ReasoningGymTask)
PREFIXED.add("rg")
