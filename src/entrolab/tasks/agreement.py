"""Do several replies to one prompt agree? Distinct final answers and the majority's share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from entrolab.errors import EntrolabError
from entrolab.tasks.answers import answer_key, extract_answer


@dataclass(frozen=True)
class Agreement:
    """Cross-sample agreement of ``n`` replies.

    Attributes:
        n: replies.
        unparseable: replies with no extractable answer.
        distinct: distinct answer keys among the parsed replies.
        majority: the most frequent answer (first seen on ties); None when nothing parsed.
        majority_count: replies giving it.
    """

    n: int
    unparseable: int
    distinct: int
    majority: str | None
    majority_count: int

    @property
    def majority_share(self) -> float:
        """Share of ALL ``n`` replies (unparseable ones included) giving the majority answer."""
        return self.majority_count / self.n

    def line(self) -> str:
        """One line for the terminal."""
        head = f"answers across {self.n} samples: {self.distinct} distinct"
        if self.majority is None:
            return f"{head}; none parseable"
        return (
            f"{head}; majority {self.majority!r} in {self.majority_count}/{self.n} "
            f"({self.majority_share:.0%}); {self.unparseable} unparseable"
        )


def sample_agreement(texts: Sequence[str], kind: str = "auto") -> Agreement:
    """Agreement of replies ``texts``: each reply's answer by :func:`extract_answer` (``kind``),
    grouped by :func:`answer_key` (``"1,000"`` and ``"1000.0"`` agree).

    Raises:
        EntrolabError: no replies.
    """
    if not texts:
        raise EntrolabError("no replies to compare; sample at least one")
    keys = [extract_answer(t, kind) for t in texts]
    parsed = [answer_key(k) for k in keys if k is not None]
    counts = Counter(parsed)
    top = max(counts, key=lambda k: (counts[k], -parsed.index(k))) if counts else None
    return Agreement(
        n=len(texts),
        unparseable=len(texts) - len(parsed),
        distinct=len(counts),
        majority=top,
        majority_count=counts[top] if top is not None else 0,
    )
