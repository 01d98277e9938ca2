"""Built-in arithmetic task with difficulty levels (no extra package needed).

Each item is an integer expression such as ``7 + 5`` or ``3 * 14 - 6`` whose value is the
reference answer. Operands with d digits are drawn uniformly from [10^(d-1), 10^d - 1] (1-digit
operands are 1–9), the digit count uniformly from [min_digits, max_digits], operators uniformly
from the level's set; ``*`` binds tighter than ``+``/``-`` (ordinary precedence).

Item ``i`` of seed ``s`` depends only on (level settings, s, i), so ``items(10, s)`` is a prefix
of ``items(100, s)``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from entrolab.errors import EntrolabError
from entrolab.tasks.base import TASKS, Task, TaskItem

__all__ = ["DEFAULT_LEVEL", "LEVELS", "ArithmeticLevel", "ArithmeticTask", "evaluate"]

OPERATORS = ("+", "-", "*")


@dataclass(frozen=True)
class ArithmeticLevel:
    """Settings of one difficulty level.

    Attributes:
        num_terms: operands per expression (>= 2).
        min_digits: fewest digits of an operand (>= 1).
        max_digits: most digits of an operand.
        operators: operators drawn from, a subset of ``("+", "-", "*")``.
        summary: one line for docs.
    """

    num_terms: int
    min_digits: int
    max_digits: int
    operators: tuple[str, ...]
    summary: str = ""

    def __post_init__(self) -> None:
        if self.num_terms < 2:
            raise EntrolabError(f"num_terms must be >= 2, got {self.num_terms}")
        if not 1 <= self.min_digits <= self.max_digits <= 12:
            raise EntrolabError(
                "digits must satisfy 1 <= min_digits <= max_digits <= 12, "
                f"got min_digits={self.min_digits}, max_digits={self.max_digits}"
            )
        bad = [op for op in self.operators if op not in OPERATORS]
        if not self.operators or bad:
            raise EntrolabError(
                f"operators must be a non-empty subset of {OPERATORS}, got {self.operators!r}"
            )


#: Difficulty levels. Greedy accuracy of the embedded SmolLM2-135M-Instruct with the default
#: prompt ("What is {expression}? Answer with just the number."), 64 items of seed 0, 64 new
#: tokens, default parsing: L1 0.69, L2 0.47, L3 0.11, L4 0.39, L5 0.09, L6 0.02, L7 0.00.
#: Levels 1, 2 and 4 fall in the 15–70% band where confidence has something to predict.
LEVELS: dict[int, ArithmeticLevel] = {
    1: ArithmeticLevel(2, 1, 1, ("+",), "a + b, 1-digit operands"),
    2: ArithmeticLevel(2, 1, 1, ("+", "-"), "a ± b, 1-digit operands"),
    3: ArithmeticLevel(2, 2, 2, ("+", "-"), "a ± b, 2-digit operands"),
    4: ArithmeticLevel(2, 1, 2, ("*",), "a * b, 1–2-digit operands"),
    5: ArithmeticLevel(3, 1, 1, ("+", "-", "*"), "three 1-digit terms, mixed + - *"),
    6: ArithmeticLevel(3, 1, 2, ("+", "-", "*"), "three 1–2-digit terms, mixed + - *"),
    7: ArithmeticLevel(4, 2, 2, ("+", "-", "*"), "four 2-digit terms, mixed + - *"),
}
#: Level 2 (accuracy 0.47 above): in the middle of the 15–70% band.
DEFAULT_LEVEL = 2
DEFAULT_TEMPLATE = "What is {expression}?"
#: "Calculate {expression}. Give only the final answer." scored about the same (L2 0.45, L4
#: 0.38); the bare "{expression} =" scored 0.00 / 0.05 (the model then chats instead).
DEFAULT_INSTRUCTIONS = "Answer with just the number."


def evaluate(operands: Sequence[int], operators: Sequence[str]) -> int:
    """Value of ``operands[0] op0 operands[1] op1 …`` with ``*`` before ``+``/``-``.

    Example: evaluate([2, 3, 4], ["+", "*"]) = 2 + 12 = 14.
    """
    if len(operators) != len(operands) - 1:
        raise EntrolabError("need exactly one operator between each pair of operands")
    terms: list[int] = [operands[0]]  # signed products, summed at the end
    for op, x in zip(operators, operands[1:], strict=True):
        if op == "*":
            terms[-1] *= x
        elif op == "+":
            terms.append(x)
        elif op == "-":
            terms.append(-x)
        else:
            raise EntrolabError(f"unknown operator {op!r}; use one of {OPERATORS}")
    return sum(terms)


class ArithmeticTask(Task):
    """Integer arithmetic at a chosen difficulty level.

    Args:
        level: a key of :data:`LEVELS` (default :data:`DEFAULT_LEVEL`).
        num_terms, min_digits, max_digits, operators: override the level's settings.
        template: the question, with ``{expression}`` where the expression goes.
        instructions: appended to the question (the prompt suffix).
        answer_kind: how replies are parsed (default ``"number"``: the last number, see
            :func:`~entrolab.tasks.answers.extract_answer`).
    """

    name = "arithmetic"
    spec = "arithmetic"

    def __init__(
        self,
        level: int = DEFAULT_LEVEL,
        *,
        num_terms: int | None = None,
        min_digits: int | None = None,
        max_digits: int | None = None,
        operators: Sequence[str] | str | None = None,
        template: str = DEFAULT_TEMPLATE,
        instructions: str = DEFAULT_INSTRUCTIONS,
        answer_kind: str = "number",
    ) -> None:
        super().__init__()
        if isinstance(level, bool) or level not in LEVELS:
            raise EntrolabError(
                f"unknown arithmetic level {level!r}; known levels: "
                + "; ".join(f"{k} = {v.summary}" for k, v in LEVELS.items())
            )
        base = LEVELS[level]
        if isinstance(operators, str):
            operators = tuple(operators.replace(",", " ").split()) or tuple(operators)
        self.config = ArithmeticLevel(
            num_terms if num_terms is not None else base.num_terms,
            min_digits if min_digits is not None else base.min_digits,
            max_digits if max_digits is not None else base.max_digits,
            tuple(operators) if operators is not None else base.operators,
            base.summary,
        )
        if "{expression}" not in template:
            raise EntrolabError(
                f"arithmetic template {template!r} must contain '{{expression}}' "
                "where the expression goes"
            )
        if answer_kind not in self.KIND_CHOICES:
            raise EntrolabError(
                f"unknown answer_kind {answer_kind!r}; use one of {', '.join(self.KIND_CHOICES)}"
            )
        self.level = level
        self.template = template
        self.instructions = instructions
        self.answer_kind = answer_kind
        self.settings = {
            "level": level,
            "num_terms": self.config.num_terms,
            "min_digits": self.config.min_digits,
            "max_digits": self.config.max_digits,
            "operators": list(self.config.operators),
            "template": template,
            "instructions": instructions,
            "answer_kind": answer_kind,
        }

    def _operand(self, rng: random.Random) -> int:
        digits = rng.randint(self.config.min_digits, self.config.max_digits)
        return rng.randint(10 ** (digits - 1), 10**digits - 1)

    def make_item(self, index: int, seed: int) -> TaskItem:
        """Item ``index`` of ``seed`` (independent of how many items are drawn)."""
        c = self.config
        # str seeds are hashed with SHA-512 by random.Random: stable across runs and platforms.
        rng = random.Random(
            f"arith|{seed}|{index}|{c.num_terms}|{c.min_digits}|{c.max_digits}|{c.operators}"
        )
        operands = [self._operand(rng) for _ in range(c.num_terms)]
        ops = [rng.choice(c.operators) for _ in range(c.num_terms - 1)]
        expression = " ".join(
            [str(operands[0])] + [f"{op} {x}" for op, x in zip(ops, operands[1:], strict=True)]
        )
        value = evaluate(operands, ops)
        meta: dict[str, Any] = {
            "expression": expression,
            "operands": operands,
            "operators": ops,
            "level": self.level,
        }
        return TaskItem(
            id=f"arithmetic-L{self.level}-s{seed}-{index:05d}",
            prompt=self.format_prompt(self.template.format(expression=expression)),
            answer=str(value),
            meta=meta,
        )

    def _make_items(self, n: int, seed: int) -> list[TaskItem]:
        return [self.make_item(i, seed) for i in range(n)]


TASKS.register(
    "arithmetic",
    summary="integer arithmetic with difficulty levels 1–7 (built in, no extra package)",
    defaults={"level": DEFAULT_LEVEL, "instructions": DEFAULT_INSTRUCTIONS},
)(ArithmeticTask)
