"""How well each estimator's uncertainty predicts correctness: the numbers behind the eval table.

Per estimator, over N graded items: AUROC of −u for "correct", PRR (LM-Polygraph's normalised
prediction–rejection ratio with quality = correctness), AURC (lower = better), and ECE / Brier of
confidences obtained by cross-fitted calibration of −u (each item's confidence comes from a
calibrator fitted without its fold), so estimators with different scales compare fairly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from entrolab.calibration import aurc, auroc, brier, cross_fit, ece, prr
from entrolab.errors import EntrolabError


@dataclass(frozen=True)
class EstimatorScore:
    """Quality of one estimator on one run (None where undefined, e.g. all items correct).

    Attributes:
        name: estimator name.
        auroc: AUROC of −u predicting correct (0.5 = chance, higher = better).
        prr: normalised prediction–rejection ratio (1 = oracle, 0 = random, higher = better).
        aurc: area under the risk–coverage curve (lower = better).
        ece: ECE (15 equal-width bins, torchmetrics convention) after cross-fitted calibration.
        brier: Brier score after the same calibration.
        n: items scored (items whose u is finite).
        n_distinct: distinct u values. Discrete estimators (answer agreement, number of
            semantic sets) have ties; PRR and AURC use their expectation over random
            tie-breaks (``ties="average"``), so item order cannot flatter or hurt them.
    """

    name: str
    auroc: float | None
    prr: float | None
    aurc: float | None
    ece: float | None
    brier: float | None
    n: int
    n_distinct: int

    def to_dict(self) -> dict:
        return asdict(self)


def score_estimator(
    name: str,
    uncertainty: np.ndarray,
    correct: np.ndarray,
    *,
    calibrator: str = "isotonic",
    n_folds: int = 5,
    seed: int = 0,
) -> EstimatorScore:
    """Score one estimator; items with non-finite u are left out (and counted by ``n``)."""
    u = np.asarray(uncertainty, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if u.shape != y.shape or u.ndim != 1:
        raise EntrolabError(f"{name}: uncertainty {u.shape} and correct {y.shape} must be [N]")
    keep = np.isfinite(u)
    u, y = u[keep], y[keep]
    n = int(u.size)
    both = n >= 2 and 0 < y.sum() < n
    if not both:
        return EstimatorScore(name, None, None, None, None, None, n, len(np.unique(u)))
    conf = cross_fitted_confidence(u, y, calibrator=calibrator, n_folds=n_folds, seed=seed)
    return EstimatorScore(
        name=name,
        auroc=finite_or_none(auroc(-u, y)),
        prr=finite_or_none(prr(u, y, ties="average")),
        aurc=finite_or_none(aurc(u, y, ties="average")),
        ece=finite_or_none(ece(conf, y, preset="torchmetrics")),
        brier=finite_or_none(brier(conf, y)),
        n=n,
        n_distinct=len(np.unique(u)),
    )


def cross_fitted_confidence(
    uncertainty: np.ndarray,
    correct: np.ndarray,
    *,
    calibrator: str = "isotonic",
    n_folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Out-of-fold confidences [N] from calibrating −u (finite u, both classes present).

    Folds are capped by the smaller class so that every fold can hold items of both.
    """
    folds = max(2, min(n_folds, int(min(correct.sum(), correct.size - correct.sum()))))
    return cross_fit(-uncertainty, correct, calibrator, n_folds=folds, seed=seed)


def score_all(
    uncertainties: Mapping[str, np.ndarray], correct: np.ndarray, **kwargs
) -> list[EstimatorScore]:
    """Score every estimator; sorted by AUROC (best first, undefined last)."""
    scores = [score_estimator(name, u, correct, **kwargs) for name, u in uncertainties.items()]
    return sorted(scores, key=lambda s: (s.auroc is None, -(s.auroc or 0.0), s.name))


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float, or None when missing or not finite (JSON has no NaN)."""
    return float(x) if x is not None and math.isfinite(x) else None
