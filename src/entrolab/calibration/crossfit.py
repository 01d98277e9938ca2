"""Out-of-sample calibration: fit a calibrator on one part of the data, apply it to another.

Ranking estimators by "ECE after calibration" needs confidences the calibrator never saw:
:func:`cross_fit` returns one out-of-fold confidence for *every* item (k-fold cross-fitting);
:func:`fit_transform_split` does a single fit/evaluate split. Folds and splits are stratified
by correctness (each class is shuffled and dealt round-robin), so every fitting part holds both
classes whenever the data has at least ``n_folds`` items of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from entrolab.calibration._validate import check_binary, check_positive_int, prepare
from entrolab.calibration.calibrators import CALIBRATOR_CLASSES, Calibrator
from entrolab.errors import EntrolabError, UnknownNameError

__all__ = ["SplitCalibration", "cross_fit", "fit_transform_split", "make_calibrator"]


def make_calibrator(calibrator: str | Calibrator, **params: Any) -> Calibrator:
    """An unfitted calibrator from a registry name (with ``params``) or a template instance
    (cloned: the template itself is never fitted)."""
    if isinstance(calibrator, Calibrator):
        if params:
            raise EntrolabError(
                "pass calibrator settings either in the instance or as keywords, not both"
            )
        return calibrator.clone()
    if calibrator not in CALIBRATOR_CLASSES:
        raise UnknownNameError(
            f"unknown calibrator {calibrator!r}. Known calibrators: {', '.join(CALIBRATOR_CLASSES)}"
        )
    return CALIBRATOR_CLASSES[calibrator](**params)


def _stratified_folds(y: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold id in ``0 … n_folds−1`` per item: each class shuffled, then dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, dtype=np.int64)
    offset = 0
    for cls in (0.0, 1.0):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(idx.size)]
        fold[idx] = (np.arange(idx.size) + offset) % n_folds
        offset += idx.size  # continue dealing where the previous class stopped
    return fold


def cross_fit(
    scores: Any,
    correct: Any,
    calibrator: str | Calibrator = "isotonic",
    *,
    n_folds: int = 5,
    seed: int = 0,
    **params: Any,
) -> np.ndarray:
    """Out-of-fold calibrated confidences for every item (k-fold cross-fitting).

    Items are dealt into ``n_folds`` stratified folds; for each fold a fresh calibrator is
    fitted on the other folds and applied to it.

    Args:
        scores: [N] higher = more confident (negate uncertainties).
        correct: [N] bool or 0/1.
        calibrator: a name in ``CALIBRATORS`` (``"temperature"``, ``"platt"``,
            ``"isotonic"``, ``"histogram"``) or an unfitted/fitted instance used as a template.
        n_folds: number of folds (≥ 2, ≤ N).
        seed: fold assignment seed.
        **params: calibrator settings when ``calibrator`` is a name.

    Returns:
        float64 [N] confidences in [0, 1], item i from the model fitted without fold(i).
    """
    s, y = prepare({"scores": scores, "correct": correct})
    check_binary(y, "correct")
    n_folds = check_positive_int(n_folds, "n_folds", minimum=2)
    if n_folds > s.size:
        raise EntrolabError(f"n_folds={n_folds} exceeds the {s.size} items; lower n_folds")
    template = make_calibrator(calibrator, **params)
    fold = _stratified_folds(y, n_folds, seed)
    out = np.empty(s.size)
    for k in range(n_folds):
        test = fold == k
        cal = template.clone().fit(s[~test], y[~test])
        out[test] = cal.transform(s[test])
    return out


@dataclass(frozen=True)
class SplitCalibration:
    """Result of :func:`fit_transform_split`.

    Attributes:
        fit_index: int64 [N_fit], items the calibrator was fitted on.
        eval_index: int64 [N_eval], items it was applied to.
        confidences: float64 [N_eval], calibrated confidences of ``eval_index`` items.
        calibrator: the fitted calibrator.
    """

    fit_index: np.ndarray
    eval_index: np.ndarray
    confidences: np.ndarray
    calibrator: Calibrator


def fit_transform_split(
    scores: Any,
    correct: Any,
    calibrator: str | Calibrator = "isotonic",
    *,
    fit_fraction: float = 0.5,
    seed: int = 0,
    **params: Any,
) -> SplitCalibration:
    """Fit on a stratified random ``fit_fraction`` of the items, calibrate the rest.

    Args:
        scores, correct, calibrator, **params: as :func:`cross_fit`.
        fit_fraction: share of items used for fitting, in (0, 1); both parts are non-empty.
        seed: split seed.
    """
    if not 0.0 < fit_fraction < 1.0:
        raise EntrolabError(f"fit_fraction must be in (0, 1), got {fit_fraction!r}")
    s, y = prepare({"scores": scores, "correct": correct}, min_size=2)
    check_binary(y, "correct")
    rng = np.random.default_rng(seed)
    is_fit = np.zeros(s.size, dtype=bool)
    for cls in (0.0, 1.0):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(idx.size)]
        is_fit[idx[: round(fit_fraction * idx.size)]] = True
    if is_fit.all() or not is_fit.any():
        raise EntrolabError(
            f"fit_fraction={fit_fraction} of {s.size} items leaves one part empty; "
            "use more items or a fraction nearer 0.5"
        )
    fit_idx, eval_idx = np.flatnonzero(is_fit), np.flatnonzero(~is_fit)
    cal = make_calibrator(calibrator, **params).fit(s[fit_idx], y[fit_idx])
    return SplitCalibration(fit_idx, eval_idx, cal.transform(s[eval_idx]), cal)
