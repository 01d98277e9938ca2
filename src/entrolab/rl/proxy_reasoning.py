"""A reasoning-length proxy task: a short chain of written intermediate sums, then the answer.

**Task** (:class:`ProxyReasoningTask`, spec ``"proxy_reasoning"``): "write the target as a sum
of ``terms`` different numbers from the list, showing the running sums". Prompt
``"3 7 1 9 5 6 2:15="``; a valid reply (terms = 3)::

    3+7=10 10+2=12 => 3+7+2        (reasoning | delimiter " => " | answer)

The reasoning phase holds the *choices* (which number next: high-entropy forks) and the
arithmetic (running sums: nearly deterministic once the operands are chosen); the answer phase
copies the chosen numbers (low entropy). A reply is correct iff it has exactly this form, every
running sum is right, the answer lists the chain's numbers in the chain's order, they are
``terms`` different list numbers, and they add up to the target. Targets are drawn among sums
reached by at least ``min_paths`` different subsets, so every prompt has several valid paths
(each subset in any order). Replies are 15–40 tokens with the byte tokenizer (terms = 3: ~22).

The phase delimiter is known (:attr:`ProxyReasoningTask.answer_delimiter`), so per-phase entropy
(:func:`entrolab.rl.dynamics.phase_masks`) and phase-aware methods work on it.

**SFT**: :meth:`ProxyReasoningTask.sft_examples` — a uniformly chosen valid subset in random
order, or with probability ``noise`` a random subset of the list (correct arithmetic, usually
the wrong total); :func:`entrolab.rl.proxy.sft_model` trains and caches the tiny model.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter

from entrolab.errors import EntrolabError
from entrolab.rl.proxy import ProxySumTask
from entrolab.tasks import Grade, TaskItem

__all__ = ["ProxyReasoningTask", "chain_reply", "parse_chain"]

_STEP = re.compile(r"(\d+)\+(\d+)=(\d+)")
DELIMITER = " => "


def chain_reply(numbers: list[int] | tuple[int, ...]) -> str:
    """The canonical reply for adding ``numbers`` in this order (running sums, then the answer)."""
    steps, total = [], numbers[0]
    for x in numbers[1:]:
        steps.append(f"{total}+{x}={total + x}")
        total += x
    return " ".join(steps) + DELIMITER + "+".join(str(x) for x in numbers)


def parse_chain(text: str | None) -> tuple[list[tuple[int, int, int]], list[int]] | None:
    """``(steps, answer)`` of a reply of the form ``a+b=c c+d=e … => a+b+d…``; None when the form
    is wrong (surrounding whitespace allowed). Steps are ``(left, right, written sum)``."""
    if text is None or DELIMITER.strip() not in text:
        return None
    reasoning, _, answer = text.strip().partition("=>")
    parts = reasoning.split()
    steps = []
    for p in parts:
        m = _STEP.fullmatch(p)
        if m is None:
            return None
        steps.append((int(m.group(1)), int(m.group(2)), int(m.group(3))))
    ans = answer.strip()
    if not steps or not re.fullmatch(r"\d+(\+\d+)+", ans):
        return None
    return steps, [int(x) for x in ans.split("+")]


class ProxyReasoningTask(ProxySumTask):
    """Sum of ``terms`` list numbers reaching a target, with written running sums.

    Args:
        list_size: distinct numbers per prompt (>= terms + 2).
        max_value: numbers are drawn from 1..max_value.
        terms: numbers to add (2–4; reply length grows with it).
        min_paths: a target must be reachable by at least this many subsets (when any sum is).
    """

    name = "proxy_reasoning"
    spec = "proxy_reasoning"
    answer_kind = "text"
    #: separates the reasoning phase from the answer phase in every well-formed reply
    answer_delimiter = DELIMITER

    def __init__(
        self, *, list_size: int = 7, max_value: int = 9, terms: int = 3, min_paths: int = 3
    ) -> None:
        if isinstance(terms, bool) or not isinstance(terms, int) or not 2 <= terms <= 4:
            raise EntrolabError(f"proxy_reasoning terms must be an integer in 2..4, got {terms!r}")
        if not isinstance(list_size, int) or list_size < terms + 2:
            raise EntrolabError(
                f"proxy_reasoning list_size must be an integer >= terms + 2, got {list_size!r}"
            )
        super().__init__(list_size=list_size, max_value=max_value, min_pairs=min_paths)
        self.terms = terms
        self.settings = {
            "list_size": list_size, "max_value": max_value, "terms": terms,
            "min_paths": min_paths, "kind": "reasoning",
        }  # fmt: skip

    def subsets(self, numbers: list[int], target: int) -> list[tuple[int, ...]]:
        """All sorted subsets of ``terms`` list numbers adding up to ``target``."""
        return sorted(
            tuple(sorted(c))
            for c in itertools.combinations(numbers, self.terms)
            if sum(c) == target
        )

    def make_item(self, index: int, seed: int) -> TaskItem:
        """Item ``index`` of ``seed`` (independent of how many items are drawn)."""
        rng = random.Random(
            f"proxy-reasoning|{seed}|{index}|{self.list_size}|{self.max_value}|{self.terms}"
        )
        numbers = rng.sample(range(1, self.max_value + 1), self.list_size)
        counts = Counter(sum(c) for c in itertools.combinations(numbers, self.terms))
        need = min(self.min_pairs, max(counts.values()))
        target = rng.choice(sorted(s for s, c in counts.items() if c >= need))
        subs = self.subsets(numbers, target)
        prompt = " ".join(map(str, numbers)) + f":{target}="
        return TaskItem(
            id=f"proxy-reasoning-s{seed}-{index:06d}",
            prompt=prompt,
            answer="+".join(map(str, subs[0])),
            meta={"numbers": numbers, "target": target, "solutions": [list(s) for s in subs]},
        )

    def extract(self, item: TaskItem, response_text: str | None) -> str | None:
        """The answer's numbers sorted and joined by '+' (order-free answer key); None when the
        reply is not of the chain form."""
        parsed = parse_chain(response_text)
        if parsed is None:
            return None
        return "+".join(str(x) for x in sorted(parsed[1]))

    def grade(self, item: TaskItem, response_text: str | None) -> Grade:
        """Correct iff the chain is well formed and right and its answer solves the item."""
        parsed = parse_chain(response_text)
        if parsed is None:
            return Grade(False, None, "unparseable", 0.0)
        steps, answer = parsed
        key = "+".join(str(x) for x in sorted(answer))
        chain = [steps[0][0]] + [s[1] for s in steps]
        running = steps[0][0]
        for left, right, written in steps:
            if left != running or left + right != written:
                return Grade(False, key, "wrong", 0.0)  # a running sum is wrong
            running = written
        numbers, target = item.meta["numbers"], int(item.meta["target"])
        ok = (
            answer == chain
            and len(answer) == self.terms
            and len(set(answer)) == len(answer)
            and all(x in numbers for x in answer)
            and sum(answer) == target
        )
        return Grade(ok, key, "correct" if ok else "wrong", 1.0 if ok else 0.0)

    def sft_examples(self, n: int, seed: int, noise: float) -> list[tuple[str, str]]:
        """``n`` (prompt, reply) pairs: a uniformly chosen valid subset in random order, or with
        probability ``noise`` a random subset of the list (right arithmetic, usually wrong sum)."""
        rng = random.Random(f"proxy-reasoning-sft|{seed}|{noise}")
        out = []
        for item in self.items(n, seed=10_000 + seed):
            if rng.random() < noise:
                chosen = rng.sample(item.meta["numbers"], self.terms)
            else:
                chosen = list(rng.choice(item.meta["solutions"]))
                rng.shuffle(chosen)
            out.append((item.prompt, chain_reply(chosen)))
        return out
