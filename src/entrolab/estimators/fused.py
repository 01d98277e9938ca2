"""Fused estimator: PCC-style probabilistic certainty × consistency, and its routing decision.

PCC (Wang et al. 2026, arXiv:2601.02574; spec B11) combines (i) the internal certainty of a
verdict token and (ii) the consistency of the model's answers, then routes a query to answer
directly, to targeted retrieval, or to escalation (deep search / a stronger model). Only the
certainty term is specified there; consistency, fusion and thresholds are unknown and use the
spec's placeholder: κ = τ · cons, answer if κ ≥ θ₁, retrieve if θ₂ ≤ κ < θ₁, else escalate.

Adaptation to answer trust: the verdict is P(True)'s "is the proposed (greedy) answer True or
False?" (the ``ptrue`` statistic). PCC's τ = |p_T − p_F| measures certainty about *either*
verdict; a model certain that its own answer is False must not make that answer trusted, so τ
here is signed toward acceptance: τ = max(0, p_T − p_F), and the top-2 rule gives τ = 1 when both
top-2 tokens are True-class words and 0 when both are False-class words. ``cons`` is the fraction
of the G samples that agree with the greedy answer (Xiong et al.'s consistency).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from entrolab.errors import EntrolabError
from entrolab.estimators.base import register

__all__ = ["DEFAULT_THRESHOLDS", "pcc_certainty", "pcc_route", "pcc_score"]

Route = Literal["answer", "retrieve", "escalate"]
_PCC = "Wang et al. 2026, Probabilistic Certainty and Consistency, arXiv:2601.02574"
#: (θ₁, θ₂): placeholders (the paper fits them on dev data; none are published).
DEFAULT_THRESHOLDS = (0.7, 0.4)


def _unit(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if not np.isfinite(a).all() or (a < 0).any() or (a > 1).any():
        raise EntrolabError(f"{name} must be finite values in [0, 1]")
    return a


def pcc_certainty(
    p_true: Any, p_false: Any, top2: Sequence[tuple[str | None, str | None]] | None = None
) -> np.ndarray:
    """τ = max(0, p_T − p_F) per item, [N] → [N] in [0, 1].

    Args:
        p_true, p_false: [N] probability mass of True-class / False-class verdict tokens.
        top2: per item, the verdict classes ("true" | "false" | None) of the two most likely
            tokens; both "true" → τ = 1, both "false" → τ = 0 (PCC's same-class rule).
    """
    pt, pf = _unit(p_true, "p_true"), _unit(p_false, "p_false")
    if pt.shape != pf.shape or pt.ndim != 1:
        raise EntrolabError("p_true and p_false must be 1-D arrays of the same length")
    tau = np.clip(pt - pf, 0.0, 1.0)
    if top2 is not None:
        if len(top2) != len(tau):
            raise EntrolabError(f"top2 has {len(top2)} entries for {len(tau)} items")
        for i, (a, b) in enumerate(top2):
            if a is not None and a == b:
                tau[i] = 1.0 if a == "true" else 0.0
    return tau


def pcc_score(certainty: Any, consistency: Any) -> np.ndarray:
    """κ = certainty · consistency, elementwise, both in [0, 1]."""
    return _unit(certainty, "certainty") * _unit(consistency, "consistency")


def pcc_route(
    certainty: float,
    consistency: float,
    thresholds: tuple[float, float] = DEFAULT_THRESHOLDS,
) -> Route:
    """Route one query by κ = certainty · consistency: ``"answer"`` if κ ≥ θ₁, ``"retrieve"`` if
    θ₂ ≤ κ < θ₁, else ``"escalate"``. Needs 0 ≤ θ₂ ≤ θ₁ ≤ 1."""
    hi, lo = (float(t) for t in thresholds)
    if not 0.0 <= lo <= hi <= 1.0:
        raise EntrolabError(f"thresholds must satisfy 0 ≤ θ₂ ≤ θ₁ ≤ 1, got {thresholds!r}")
    kappa = float(pcc_score(certainty, consistency))
    return "answer" if kappa >= hi else "retrieve" if kappa >= lo else "escalate"


@register(
    "pcc",
    level="set",
    needs={"ptrue", "greedy_sample_agreement"},
    summary="u = 1 − τ·cons: P(True) verdict certainty × agreement of samples with the answer",
    paper=_PCC,
)
def pcc(stats: Mapping[str, Any]) -> np.ndarray:
    pt = stats["ptrue"]
    tau = pcc_certainty(
        np.clip(pt["p_verdict"][:, 0], 0, 1), np.clip(pt["p_verdict"][:, 1], 0, 1), pt["top2"]
    )
    return 1.0 - pcc_score(tau, stats["greedy_sample_agreement"])
