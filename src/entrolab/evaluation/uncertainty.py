"""Error bars for the eval table: an interval beside every figure, ties where rankings are noise.

For each estimator, over the items where its u is finite:

* AUROC, PRR, AURC: percentile bootstrap over items, stratified by correctness (every
  replicate keeps the numbers of correct and wrong items, so the ranking metrics stay defined);
* ECE, Brier: percentile bootstrap over items (unstratified) of the cross-fitted calibrated
  confidences; the calibrator is not refitted per replicate, so the interval covers the
  sampling of items given the calibration, not the calibrator's own variability;
* ranking: estimators sorted by AUROC are grouped into contiguous tiers
  (:func:`entrolab.calibration.rank_tiers`): one whose DeLong test against its tier's leader
  (on the items both could score) gives p ≥ alpha is marked as tied with it;
* chance: whether the AUROC interval excludes 0.5.

The run's accuracy gets an exact Clopper–Pearson interval. All p-values are two-sided and
uncorrected for the number of comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from entrolab.calibration import Interval, delong_test, metric_interval, rank_tiers
from entrolab.errors import EntrolabError

#: (metric, what it is computed on) of the eval table, in column order
TABLE_METRICS = (
    ("auroc", "uncertainty"),
    ("prr", "uncertainty"),
    ("aurc", "uncertainty"),
    ("ece", "confidence"),
    ("brier", "confidence"),
)

__all__ = ["TABLE_METRICS", "delong_p", "estimator_intervals", "ranking_tiers"]


def estimator_intervals(
    uncertainty: np.ndarray,
    confidence: np.ndarray,
    correct: np.ndarray,
    *,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Interval | None]:
    """Intervals of one estimator's table metrics (None where the metric is undefined).

    Args:
        uncertainty: [N] u (NaN where the estimator had no value; those items are left out).
        confidence: [N] cross-fitted calibrated confidences (NaN where u is NaN).
        correct: [N] 0/1.
        level, n_boot, seed: coverage, bootstrap replicates, seed (one seed for every metric,
            so the metrics of one estimator see the same replicates).
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    keep = np.isfinite(u)
    u, c, y = u[keep], c[keep], y[keep]
    out: dict[str, Interval | None] = {name: None for name, _ in TABLE_METRICS}
    if u.size < 2 or not 0 < y.sum() < y.size:
        return out
    for name, on in TABLE_METRICS:
        x = u if on == "uncertainty" else c
        if on == "confidence" and not np.all(np.isfinite(x)):
            continue
        out[name] = metric_interval(name, x, y, n_boot=n_boot, level=level, seed=seed)
    return out


def delong_p(u_a: np.ndarray, u_b: np.ndarray, correct: np.ndarray) -> float:
    """DeLong two-sided p-value of AUROC(−u_a) = AUROC(−u_b) on the items both scored.

    NaN when fewer than 2 correct or 2 wrong items remain.
    """
    ua, ub = np.asarray(u_a, dtype=np.float64), np.asarray(u_b, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    both = np.isfinite(ua) & np.isfinite(ub)
    try:
        return delong_test(ua[both], ub[both], y[both]).p_value
    except EntrolabError:
        return math.nan


def ranking_tiers(
    uncertainties: Mapping[str, np.ndarray],
    correct: np.ndarray,
    order: Sequence[str],
    *,
    alpha: float = 0.05,
) -> dict[str, dict[str, Any]]:
    """Tier rank and DeLong p-value against the tier leader for each ranked estimator.

    Args:
        uncertainties: name → u [N] (NaN allowed).
        correct: [N] 0/1.
        order: the names with a defined AUROC, best first.
        alpha: significance level of the DeLong tests.

    Returns:
        name → ``{"tier": int, "leader": str, "p_vs_leader": float | None}`` (p is None for a
        tier's leader).
    """
    pvals: dict[tuple[str, str], float] = {}

    def p_value(a: str, b: str) -> float:
        if (a, b) not in pvals:
            pvals[(a, b)] = delong_p(uncertainties[a], uncertainties[b], correct)
        return pvals[(a, b)]

    tiers = rank_tiers(order, p_value, alpha=alpha)
    leaders = {rank: name for name, rank in tiers.items() if order[rank - 1] == name}
    out = {}
    for name in order:
        leader = leaders[tiers[name]]
        p = None if leader == name else pvals.get((leader, name))
        out[name] = {
            "tier": tiers[name],
            "leader": leader,
            "p_vs_leader": None if p is None or not math.isfinite(p) else p,
        }
    return out
