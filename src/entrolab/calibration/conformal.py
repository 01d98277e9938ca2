"""Selective prediction with a certified risk level: answer only when the score is high enough.

Given calibration scores ``s`` (higher = more confident) and correctness, choose a threshold τ̂
so that the *selective risk* ``R(τ) = P(wrong | s ≥ τ)`` of answered items is at most a
user-set ``alpha``, with a finite-sample guarantee.

Method: Learn then Test (Angelopoulos, Bates, Candès, Jordan & Lei 2021, "Learn then Test:
Calibrating Predictive Algorithms to Achieve Risk Control", arXiv:2110.01052), with exact
binomial p-values (the selective-classification example of Angelopoulos & Bates, "A Gentle
Introduction to Conformal Prediction", §5). For each candidate threshold λ of a grid fixed
before seeing the labels, with ``n_λ = #{i : s_i ≥ λ}`` answered and ``k_λ`` of them wrong,

    p_λ = P(Binomial(n_λ, alpha) ≤ k_λ)       (p_λ = 1 when n_λ = 0)

is a valid p-value for the null ``H_λ : R(λ) > alpha`` (given n_λ, the answered items' labels
are i.i.d. Bernoulli(1 − R(λ))). The grid is ordered from strict to loose and tested by
fixed-sequence testing from ``n_starts`` evenly spaced starting points, each chain at level
``delta / n_starts`` and stopping at its first non-rejection (``n_starts = 1``: plain fixed
sequence; ``n_starts = len(grid)``: at least as powerful as Bonferroni). τ̂ is the loosest
threshold any chain certifies; ``+inf`` (abstain on everything) when none is.

Guarantee: if the calibration pairs and the test pair are i.i.d. and the grid does not depend
on the calibration data, then with probability at least ``1 − delta`` over the calibration set,

    P(wrong | s ≥ τ̂, calibration set) ≤ alpha

(family-wise error ≤ delta: each chain rejects a true null with probability ≤ delta/n_starts,
union bound over chains). The guarantee is on the population risk of the chosen threshold,
not on the empirical risk of a given test batch, and it is vacuous when τ̂ = +inf.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import binom

from entrolab.calibration._validate import (
    NanPolicy,
    as_1d,
    check_binary,
    check_finite,
    check_positive_int,
    prepare,
)
from entrolab.errors import EntrolabError

__all__ = ["SelectiveRiskThreshold", "fit_selective_risk", "ltt_pvalues"]


@dataclass(frozen=True)
class SelectiveRiskThreshold:
    """A certified answer/abstain threshold from :func:`fit_selective_risk`.

    Attributes:
        threshold: τ̂; answer when ``score ≥ threshold`` (``inf``: abstain on everything).
        alpha: target selective risk. delta: allowed failure probability of the guarantee.
        coverage: fraction of calibration items answered at τ̂.
        calibration_risk: fraction wrong among answered calibration items (0.0 if none).
        p_value: p_λ at τ̂ (1.0 when none is certified).
        n_calibration: calibration items used.
        n_grid, n_starts: the test grid size and number of fixed-sequence chains.
    """

    threshold: float
    alpha: float
    delta: float
    coverage: float
    calibration_risk: float
    p_value: float
    n_calibration: int
    n_grid: int
    n_starts: int

    @property
    def abstains_all(self) -> bool:
        """True when no threshold could be certified (every item is declined)."""
        return math.isinf(self.threshold)

    def predict(self, scores: Any) -> np.ndarray:
        """Accept mask, bool [M]: True where ``score ≥ threshold`` (answer), False = abstain."""
        (s,) = prepare({"scores": scores})
        return s >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (an infinite threshold is written as None)."""
        d = asdict(self)
        d["threshold"] = None if self.abstains_all else self.threshold
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SelectiveRiskThreshold:
        """Inverse of :meth:`to_dict`."""
        d = dict(data)
        d["threshold"] = math.inf if d.get("threshold") is None else float(d["threshold"])
        return cls(**d)


def ltt_pvalues(
    scores: np.ndarray, wrong: np.ndarray, grid: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binomial p-values for ``H_λ: P(wrong | s ≥ λ) > alpha`` at each grid threshold.

    Args:
        scores: float64 [N]. wrong: float64 [N], 1 = wrong. grid: float64 [G].

    Returns:
        ``(p, n, k)``, each [G]: p-values, answered counts n_λ, wrong counts k_λ.
    """
    order = np.argsort(scores)
    s_sorted = scores[order]
    wrong_from_top = np.r_[np.cumsum(wrong[order][::-1])[::-1], 0.0]  # wrong among s ≥ s_(j)
    first = np.searchsorted(s_sorted, grid, side="left")  # first sorted index with s ≥ λ
    n = (scores.size - first).astype(np.int64)
    k = wrong_from_top[first].astype(np.int64)
    p = np.where(n > 0, binom.cdf(k, np.maximum(n, 1), alpha), 1.0)
    return p, n, k


def fit_selective_risk(
    scores: Any,
    correct: Any,
    *,
    alpha: float = 0.1,
    delta: float = 0.1,
    grid: Literal["uniform", "calibration"] | Any = "uniform",
    n_grid: int = 201,
    n_starts: int = 20,
    nan_policy: NanPolicy = "raise",
) -> SelectiveRiskThreshold:
    """Choose τ̂ with ``P(wrong | s ≥ τ̂) ≤ alpha`` with probability ``≥ 1 − delta`` (LTT).

    See the module docstring for the method and the exact guarantee.

    Args:
        scores: [N] calibration scores, higher = more confident.
        correct: [N] bool or 0/1.
        alpha: target selective risk in (0, 1).
        delta: failure probability of the guarantee in (0, 1).
        grid: candidate thresholds, fixed before looking at the labels: ``"uniform"`` =
            ``n_grid`` equally spaced points on [0, 1] (scores must lie in [0, 1], e.g.
            calibrated confidences); an array of thresholds chosen without the calibration data
            (e.g. from a separate split); or ``"calibration"`` = the distinct calibration
            scores (convenient for unbounded scores, but data-dependent, so the guarantee is
            then only approximate).
        n_grid: grid size for ``grid="uniform"``.
        n_starts: number of fixed-sequence chains (1 … grid size). One chain starting at the
            strictest threshold stops at once when few items score that high, so the default
            spreads 20 starts over the grid. Power: the certified risk must beat alpha by a
            binomial margin at level delta / n_starts, so expect a few hundred answered
            calibration items to be needed (e.g. with N = 1000, a risk curve
            ``R(τ) = (1 − τ)/2`` and alpha = 0.2 the mean coverage is ≈ 0.28 of the best 0.4).
        nan_policy: ``"raise"`` or ``"omit"``.
    """
    if not 0.0 < alpha < 1.0:
        raise EntrolabError(f"alpha must be in (0, 1), got {alpha!r}")
    if not 0.0 < delta < 1.0:
        raise EntrolabError(f"delta must be in (0, 1), got {delta!r}")
    s, y = prepare({"scores": scores, "correct": correct}, nan_policy=nan_policy)
    check_finite(s, "scores")
    check_binary(y, "correct")
    if isinstance(grid, str) and grid == "uniform":
        lo, hi = float(s.min()), float(s.max())
        if lo < 0.0 or hi > 1.0:
            raise EntrolabError(
                f"grid='uniform' needs scores in [0, 1], got range [{lo:.4g}, {hi:.4g}]; "
                "calibrate the scores first, or pass grid=<array of thresholds> "
                "(chosen without this data) or grid='calibration'"
            )
        lam = np.linspace(0.0, 1.0, check_positive_int(n_grid, "n_grid", minimum=2))
    elif isinstance(grid, str) and grid == "calibration":
        lam = np.unique(s)
    elif isinstance(grid, str):
        raise EntrolabError(
            f"unknown grid {grid!r}; pass 'uniform', 'calibration' or an array of thresholds"
        )
    else:
        lam = np.unique(as_1d(grid, "grid"))
        if lam.size == 0 or not np.all(np.isfinite(lam)):
            raise EntrolabError("grid must be a non-empty array of finite thresholds")
    lam = lam[::-1]  # strict → loose
    n_starts = min(check_positive_int(n_starts, "n_starts"), lam.size)
    p, n, k = ltt_pvalues(s, 1.0 - y, lam, alpha)
    level = delta / n_starts
    certified = np.zeros(lam.size, dtype=bool)
    for start in np.unique(np.round(np.linspace(0, lam.size - 1, n_starts)).astype(np.int64)):
        j = int(start)
        while j < lam.size and p[j] <= level:
            certified[j] = True
            j += 1
    if not certified.any():
        return SelectiveRiskThreshold(
            math.inf, alpha, delta, 0.0, 0.0, 1.0, s.size, lam.size, n_starts
        )
    j = int(np.flatnonzero(certified)[-1])  # loosest certified threshold
    return SelectiveRiskThreshold(
        threshold=float(lam[j]),
        alpha=alpha,
        delta=delta,
        coverage=float(n[j] / s.size),
        calibration_risk=float(k[j] / n[j]),
        p_value=float(p[j]),
        n_calibration=int(s.size),
        n_grid=int(lam.size),
        n_starts=n_starts,
    )
