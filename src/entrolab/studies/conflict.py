"""Parametric memory vs context: who wins, as a function of their relative uncertainty (When
Modalities Conflict, Zhang et al., arXiv 2511.02243, transferred to text; spec B19).

Per item (a conflicting arithmetic fact):

* ``H_par``: entropy (nats) at the first digit of the greedy answer to the closed-book
  completion ``"x + y ="`` (completion style, no chat template: the small chat model otherwise
  chats before answering);
* ``H_ctx``: the same with the context alone (the operands replaced by letters, so memory
  cannot answer and only the stated fact can);
* relative uncertainty ``Δ = (H_ctx − H_par) / (H_ctx + H_par)`` in [−1, 1] (the spec's proposed
  normalisation; the paper's is [U]);
* outcome of the conflict prompt (fact + question): follows the context (answers the stated
  wrong value), memory (the true value) or neither.

:func:`fit_follow_curve` fits ``P(follow ctx) = σ(a + bΔ)`` by maximum likelihood with a
bootstrap interval over items for b and for the balance point ``Δ* = −a/b``; the claim is that
P(follow ctx) decreases in Δ (b < 0). :func:`conflict_items` makes the prompts for arithmetic
of varied difficulty and hint phrasing; :func:`measure_conflict` runs them through a backend
(``generate`` only: one greedy call per prompt kind).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

from entrolab.errors import EntrolabError

__all__ = [
    "HINTS",
    "ConflictItem",
    "conflict_items",
    "fit_follow_curve",
    "measure_conflict",
    "relative_uncertainty",
]

#: Phrasings of the (wrong) context fact, from assertive to doubtful: they move H_ctx.
HINTS = {
    "fact": "Fact: {lhs} = {value}.",
    "maybe": "Maybe {lhs} = {value}?",
    "rumour": "Someone told me {lhs} might be {value}, but I am not sure.",
}


def relative_uncertainty(h_ctx: Any, h_par: Any) -> np.ndarray:
    """``Δ = (H_ctx − H_par) / (H_ctx + H_par)`` elementwise (0 where both are 0)."""
    c, p = np.asarray(h_ctx, dtype=np.float64), np.asarray(h_par, dtype=np.float64)
    if c.shape != p.shape:
        raise EntrolabError(f"h_ctx {c.shape} and h_par {p.shape} must have the same shape")
    if (c < 0).any() or (p < 0).any():
        raise EntrolabError("entropies must be ≥ 0 nats")
    total = c + p
    return np.where(total > 0, (c - p) / np.where(total > 0, total, 1.0), 0.0)


def _logistic_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood (a, b) of P(y = 1) = σ(a + b x) with a tiny ridge (1e-6) for
    separable data."""

    def nll(w: np.ndarray) -> float:
        z = w[0] + w[1] * x
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 1e-6 * w @ w)

    def grad(w: np.ndarray) -> np.ndarray:
        r = 1.0 / (1.0 + np.exp(-(w[0] + w[1] * x))) - y
        return np.array([r.sum(), (r * x).sum()]) + 2e-6 * w

    res = minimize(nll, np.zeros(2), jac=grad, method="BFGS")
    return float(res.x[0]), float(res.x[1])


def fit_follow_curve(
    delta: Any, follow_ctx: Any, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Fit ``P(follow ctx) = σ(a + bΔ)``; intervals by a bootstrap over items.

    Args:
        delta: [N] relative uncertainty Δ. follow_ctx: [N] 0/1 (1 = answered the context's value).
        n_boot, level, seed: bootstrap replicates, coverage, seed.
    Returns:
        ``{"a", "b", "b_low", "b_high", "balance", "balance_low", "balance_high",
        "decreasing": b_high < 0, "n"}`` (the balance point Δ* = −a/b; its interval uses the
        replicates with b ≠ 0 and is NaN when fewer than half have one).
    """
    x = np.asarray(delta, dtype=np.float64)
    y = np.asarray(follow_ctx, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 4:
        raise EntrolabError("delta and follow_ctx must be [N] with the same N ≥ 4")
    if not np.isin(y, (0.0, 1.0)).all():
        raise EntrolabError("follow_ctx must be 0/1")
    a, b = _logistic_fit(x, y)
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        i = rng.integers(0, x.size, x.size)
        if 0 < y[i].sum() < x.size:
            reps.append(_logistic_fit(x[i], y[i]))
    arr = np.array(reps) if reps else np.full((1, 2), np.nan)
    q = [(1 - level) / 2, (1 + level) / 2]
    b_lo, b_hi = (float(v) for v in np.quantile(arr[:, 1], q))
    ok = np.abs(arr[:, 1]) > 1e-9
    bal = -arr[ok, 0] / arr[ok, 1]
    bal_lo, bal_hi = (
        (float(v) for v in np.quantile(bal, q)) if ok.sum() >= n_boot // 2 else (math.nan,) * 2
    )
    return {
        "a": a,
        "b": b,
        "b_low": b_lo,
        "b_high": b_hi,
        "balance": -a / b if abs(b) > 1e-9 else math.nan,
        "balance_low": bal_lo,
        "balance_high": bal_hi,
        "decreasing": bool(b_hi < 0),
        "n": int(x.size),
    }


@dataclass(frozen=True)
class ConflictItem:
    """Prompts of one conflicting fact.

    Attributes:
        closed_book: the question alone. context_only: the fact and question with letters for
            the operands. conflict: the (wrong) fact and the real question.
        truth, stated: the true and the stated (wrong) value. digits, hint: the design factors.
    """

    closed_book: str
    context_only: str
    conflict: str
    truth: int
    stated: int
    digits: int
    hint: str


def conflict_items(
    n: int, *, digits: Sequence[int] = (1, 2), hints: Sequence[str] = tuple(HINTS), seed: int = 0
) -> list[ConflictItem]:
    """``n`` items cycling over (digits, hint); stated value = truth + an offset in ±1 … ±5."""
    bad = [h for h in hints if h not in HINTS]
    if bad or n < 1 or not digits:
        raise EntrolabError(f"need n ≥ 1, digits and hints from {sorted(HINTS)}; got {bad}")
    rng = np.random.default_rng(seed)
    out = []
    q = "{lhs} ="  # completion style: the small chat model answers at once instead of chatting
    for i in range(n):
        d, hint = digits[i % len(digits)], hints[(i // len(digits)) % len(hints)]
        lo, hi = 10 ** (d - 1) if d > 1 else 1, 10**d - 1
        x, y = (int(v) for v in rng.integers(lo, hi + 1, 2))
        offset = int(rng.choice([-5, -4, -3, -2, -1, 1, 2, 3, 4, 5]))
        truth, stated = x + y, x + y + offset
        lhs = f"{x} + {y}"
        out.append(
            ConflictItem(
                closed_book=q.format(lhs=lhs),
                context_only=HINTS[hint].format(lhs="p + q", value=stated)
                + "\n"
                + q.format(lhs="p + q"),
                conflict=HINTS[hint].format(lhs=lhs, value=stated) + "\n" + q.format(lhs=lhs),
                truth=truth,
                stated=stated,
                digits=d,
                hint=hint,
            )
        )
    return out


def _answer(trace: Any) -> tuple[str | None, float]:
    """The first integer of a reply and the entropy (nats) at its first digit token."""
    pieces = list(trace.tokens)
    text = "".join(pieces)
    m = re.search(r"-?\d+", text)
    if m is None:
        return None, math.nan
    pos = 0
    for t, piece in enumerate(pieces):  # the token that holds the number's first digit
        pos += len(piece)
        if pos > m.start() + (1 if m.group().startswith("-") else 0):
            return m.group(), float(trace.entropy[t])
    return m.group(), math.nan


def measure_conflict(backend: Any, items: Sequence[ConflictItem], *, max_new_tokens: int = 6):
    """Greedy completions of the three prompts of each item (no chat template).

    Returns one dict per item: ``h_par``, ``h_ctx`` (nats, raw logits, at the first digit of the
    answer of the closed-book and the context-only prompt), ``delta``, ``answer`` (the first
    integer of the conflict reply), ``follow`` (``"context"``, ``"memory"`` or ``"other"``) and
    the design factors.
    """
    from entrolab.config import GenerationConfig

    cfg = GenerationConfig(
        num_samples=1, temperature=0.0, max_new_tokens=max_new_tokens, chat_template=False
    )
    prompts = [p for it in items for p in (it.closed_book, it.context_only, it.conflict)]
    traces = list(backend.generate(prompts, cfg))
    rows = []
    for j, it in enumerate(items):
        par, ctx, conf = traces[3 * j : 3 * j + 3]
        _, h_par = _answer(par)
        _, h_ctx = _answer(ctx)
        ans, _ = _answer(conf)
        follow = (
            "context" if ans == str(it.stated) else "memory" if ans == str(it.truth) else "other"
        )
        ok = math.isfinite(h_par) and math.isfinite(h_ctx)
        rows.append(
            {
                "h_par": h_par,
                "h_ctx": h_ctx,
                "delta": float(relative_uncertainty([h_ctx], [h_par])[0]) if ok else math.nan,
                "answer": ans,
                "follow": follow,
                "truth": it.truth,
                "stated": it.stated,
                "digits": it.digits,
                "hint": it.hint,
            }
        )
    return rows
