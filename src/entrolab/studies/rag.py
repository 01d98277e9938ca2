"""How a "retrieved" hint moves confidence and calibration on multiple choice (Ozaki et al.,
BioNLP@ACL 2025, arXiv 2412.20309, code naist-nlp/CC_RAG; spec B18), on arithmetic MCQ.

Per item: a question with four options (A–D), asked with no hint, with a correct hint
("Retrieved document: 7 + 5 = 12.") or with a distractor hint (a wrong option's value), the
hint placed before or after the question (document order). The model's confidence is CC_RAG's:
the option-letter log-probabilities (teacher-forced ``score`` of each letter as the reply)
renormalised over the options (a softmax), the prediction is the argmax and the confidence its
probability. :func:`calibration_side_by_side` reports accuracy, mean confidence, ECE and ACE
under the ``ccrag`` conventions (bin centres, [a, b) bins, equal-count ACE) next to the
``torchmetrics`` ECE, each with a bootstrap interval over items, to show how much the convention
moves the number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from entrolab.calibration import accuracy_interval, adaptive_ece, bootstrap_interval, ece
from entrolab.errors import EntrolabError

__all__ = [
    "LETTERS",
    "MCQItem",
    "calibration_side_by_side",
    "mcq_items",
    "mcq_prompt",
    "measure_mcq",
    "option_confidence",
]

LETTERS = ("A", "B", "C", "D")
HINT_KINDS = ("none", "correct", "distractor")


@dataclass(frozen=True)
class MCQItem:
    """An arithmetic question with four options; ``answer`` is the index of the right one."""

    question: str
    options: tuple[str, ...]
    answer: int
    lhs: str


def mcq_items(n: int, *, seed: int = 0, digits: int = 2) -> list[MCQItem]:
    """``n`` sums of two ``digits``-digit numbers; distractors are the sum ± 1 … 10, shuffled."""
    if n < 1 or digits < 1:
        raise EntrolabError("need n ≥ 1 and digits ≥ 1")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lo = 10 ** (digits - 1) if digits > 1 else 0
        x, y = (int(v) for v in rng.integers(lo, 10**digits, 2))
        s = x + y
        wrong = rng.choice([d for d in range(-10, 11) if d != 0], 3, replace=False)
        values = [s, *(s + int(d) for d in wrong)]
        order = rng.permutation(4)
        options = tuple(str(values[i]) for i in order)
        out.append(MCQItem(f"What is {x} + {y}?", options, int(np.flatnonzero(order == 0)[0]),
                           f"{x} + {y}"))  # fmt: skip
    return out


def mcq_prompt(item: MCQItem, hint: str = "none", order: str = "before", seed: int = 0) -> str:
    """The prompt for one condition: ``hint`` in none / correct / distractor, the document
    ``order`` before or after the question; the distractor is a fixed wrong option."""
    if hint not in HINT_KINDS or order not in ("before", "after"):
        raise EntrolabError(f"hint must be one of {HINT_KINDS} and order before/after")
    if len(item.options) != len(LETTERS):
        raise EntrolabError(f"an MCQ item needs {len(LETTERS)} options, got {len(item.options)}")
    body = (
        item.question
        + "\n"
        + "\n".join(f"{letter}. {opt}" for letter, opt in zip(LETTERS, item.options, strict=True))
    )
    tail = "\nAnswer with the letter of the correct option."
    if hint == "none":
        return body + tail
    wrong = [i for i in range(len(item.options)) if i != item.answer]
    value = item.options[item.answer if hint == "correct" else wrong[seed % len(wrong)]]
    doc = f"Retrieved document: {item.lhs} = {value}."
    return (doc + "\n" + body if order == "before" else body + "\n" + doc) + tail


def option_confidence(letter_logprobs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over the options' letter log-probabilities: [N, O] → (prediction [N], conf [N])."""
    lp = np.asarray(letter_logprobs, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[1] < 2 or not np.isfinite(lp).all():
        raise EntrolabError("letter_logprobs must be a finite [N, options ≥ 2] array")
    p = np.exp(lp - lp.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p.argmax(axis=1), p.max(axis=1)


def measure_mcq(
    backend: Any, items: Sequence[MCQItem], hint: str, order: str = "before"
) -> dict[str, np.ndarray]:
    """Score the four letters as the reply to each prompt (one ``score`` call).

    Returns ``{"pred": [N], "confidence": [N], "correct": [N]}``.
    """
    prompts = [mcq_prompt(it, hint, order, seed=i) for i, it in enumerate(items)]
    batch = backend.score(
        [p for p in prompts for _ in LETTERS], [letter for _ in prompts for letter in LETTERS]
    )
    lp = np.array([float(t.logprob.sum()) for t in batch]).reshape(len(items), len(LETTERS))
    pred, conf = option_confidence(lp)
    correct = (pred == np.array([it.answer for it in items])).astype(np.float64)
    return {"pred": pred, "confidence": conf, "correct": correct}


def calibration_side_by_side(
    confidence: Any, correct: Any, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Accuracy (exact interval), mean confidence, ECE/ACE under ``ccrag`` and the
    ``torchmetrics`` ECE, each ``{"value", "low", "high"}`` (percentile bootstrap over items)."""
    c, y = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    if c.shape != y.shape or c.ndim != 1:
        raise EntrolabError(f"confidence {c.shape} and correct {y.shape} must be [N]")

    def boot(fn: Any) -> dict[str, float]:
        iv = bootstrap_interval(fn, c, y, n_boot=n_boot, seed=seed)
        return {"value": iv.estimate, "low": iv.low, "high": iv.high}

    acc = accuracy_interval(y)
    return {
        "n": int(c.size),
        "accuracy": {"value": acc.estimate, "low": acc.low, "high": acc.high},
        "mean_confidence": boot(lambda a, b: float(np.mean(a))),
        "ece_ccrag": boot(lambda a, b: ece(a, b, preset="ccrag")),
        "ace_ccrag": boot(lambda a, b: adaptive_ece(a, b)),
        "ece_torchmetrics": boot(lambda a, b: ece(a, b, preset="torchmetrics")),
    }
