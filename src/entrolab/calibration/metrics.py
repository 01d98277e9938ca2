"""Calibration metrics on confidences: the binned ECE family, Brier score and NLL.

Inputs (scope: one value over the whole evaluation set, every item weighted equally):

* ``confidences``: [N] floats in [0, 1], higher = more confident (list, numpy or torch);
* ``correct``: [N] bool or 0/1, 1 = the answer was correct.

The confidence is compared with the *correctness of the answer it belongs to*, which is the
binary "positive class" form (torchmetrics ``BinaryCalibrationError``, netcal with 1-D input).
For top-label calibration of a classifier pass ``max_prob`` and ``argmax == target``.
Values outside [0, 1] raise (uncertainties must be mapped to confidences by a calibrator first);
NaN raises unless ``nan_policy="omit"``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from entrolab.calibration._validate import (
    NanPolicy,
    check_binary,
    check_choice,
    check_unit_interval,
    prepare,
)
from entrolab.calibration.binning import (
    Binning,
    BinValue,
    Boundary,
    Closed,
    EdgeRounding,
    EmptyBins,
    ReliabilityBins,
    Weighting,
    bin_statistics,
    resolve_spec,
)
from entrolab.errors import EntrolabError

Norm = Literal["l1", "l2", "max"]

__all__ = [
    "Norm",
    "ace",
    "adaptive_ece",
    "brier",
    "calibration_error_from_bins",
    "ece",
    "mce",
    "nll",
    "rmsce",
]


def _labels_and_confidences(
    confidences: Any, correct: Any, nan_policy: NanPolicy
) -> tuple[np.ndarray, np.ndarray]:
    c, y = prepare({"confidences": confidences, "correct": correct}, nan_policy=nan_policy)
    check_unit_interval(c, "confidences")
    check_binary(y, "correct")
    return c, y


def calibration_error_from_bins(bins: ReliabilityBins, norm: Norm = "l1") -> float:
    """Reduce per-bin statistics to one calibration error.

    With included bins ``b`` (non-empty ones, or all when ``spec.empty_bins="zero"``, where an
    empty bin has accuracy 0), gaps ``d_b = acc_b − conf_b`` and weights ``w_b``
    (``n_b / Σ n`` for count weighting, ``1 / #bins`` for uniform):
    ``l1 = Σ w_b |d_b|``, ``l2 = sqrt(Σ w_b d_b²)``, ``max = max_b |d_b|``.
    """
    check_choice(norm, "norm", ("l1", "l2", "max"))
    spec = bins.spec
    if spec.empty_bins == "zero":
        include = np.ones(bins.count.size, dtype=bool)
        acc = np.where(bins.count > 0, bins.accuracy, 0.0)
        conf = np.where(np.isnan(bins.confidence), 0.0, bins.confidence)
    else:
        include = bins.count > 0
        acc, conf = bins.accuracy, bins.confidence
    n_binned = int(bins.count.sum())
    if not include.any() or (spec.weighting == "count" and n_binned == 0):
        raise EntrolabError(
            f"no item fell into any bin ({bins.n_dropped} dropped by boundary="
            f"{spec.boundary!r}: a confidence of exactly 1.0 with closed='left' or 0.0 with "
            "closed='right'); use boundary='closed' or another preset"
        )
    gap = np.abs(acc[include] - conf[include])
    if norm == "max":
        return float(gap.max())
    if spec.weighting == "count":
        w = bins.count[include] / n_binned
    else:
        w = np.full(gap.size, 1.0 / gap.size)
    if norm == "l1":
        return float(np.sum(w * gap))
    return float(np.sqrt(np.sum(w * gap * gap)))


def ece(
    confidences: Any,
    correct: Any,
    *,
    n_bins: int | None = None,
    preset: str | None = None,
    binning: Binning | None = None,
    norm: Norm = "l1",
    closed: Closed | None = None,
    boundary: Boundary | None = None,
    bin_value: BinValue | None = None,
    weighting: Weighting | None = None,
    empty_bins: EmptyBins | None = None,
    edges: EdgeRounding | None = None,
    nan_policy: NanPolicy = "raise",
) -> float:
    """Expected calibration error of confidences against correctness (lower = better, in [0, 1]).

    ``ECE = Σ_b (n_b / N) · |acc_b − conf_b|`` over bins of the confidence (Naeini et al. 2015;
    Guo et al. 2017), with every convention a keyword. Start from a ``preset`` that reproduces
    a library (see :data:`entrolab.calibration.binning.PRESETS`): ``"torchmetrics"`` (15 bins,
    1.0 in its own bin), ``"netcal"`` (10 bins, last bin closed), ``"netcal_ace"``,
    ``"polygraph"`` (20 bins ``(a, b]``, first ``[0, 0.05]``), ``"ccrag"`` (bin centres, 1.0
    dropped), ``"ccrag_ace"``; any keyword that is not None overrides the preset. Without a
    preset: 15 equal-width bins ``[a, b)`` with the last one closed, mean confidence, count
    weights.

    Args:
        confidences: [N] in [0, 1], higher = more confident.
        correct: [N] bool or 0/1.
        n_bins: number of bins.
        preset: a name in ``PRESETS`` (aliases: ``netcal_ece``, ``lm_polygraph``, ``cc_rag``).
        binning: ``"uniform"`` | ``"quantile"`` (equal-mass edges) | ``"equal_count"``.
        norm: ``"l1"`` (ECE) | ``"l2"`` (RMSCE) | ``"max"`` (MCE).
        closed, boundary, bin_value, weighting, empty_bins, edges: see
            :class:`~entrolab.calibration.binning.BinningSpec`.
        nan_policy: ``"raise"`` or ``"omit"`` (drop items with a NaN in either input).

    Returns:
        the calibration error, a float in [0, 1].
    """
    spec = resolve_spec(
        preset,
        norm,
        n_bins=n_bins,
        binning=binning,
        closed=closed,
        boundary=boundary,
        bin_value=bin_value,
        weighting=weighting,
        empty_bins=empty_bins,
        edges=edges,
    )
    c, y = _labels_and_confidences(confidences, correct, nan_policy)
    return calibration_error_from_bins(bin_statistics(c, y, spec), norm)


def mce(confidences: Any, correct: Any, **kwargs: Any) -> float:
    """Maximum calibration error ``max_b |acc_b − conf_b|`` (``ece(..., norm="max")``)."""
    return ece(confidences, correct, norm="max", **kwargs)


def rmsce(confidences: Any, correct: Any, **kwargs: Any) -> float:
    """Root-mean-square calibration error ``sqrt(Σ_b w_b (acc_b − conf_b)²)`` (``norm="l2"``)."""
    return ece(confidences, correct, norm="l2", **kwargs)


def ace(confidences: Any, correct: Any, *, n_bins: int = 10, **kwargs: Any) -> float:
    """Average calibration error (Neumann et al. 2018; netcal ``ACE``).

    ``ACE = (1 / B') Σ_b |acc_b − conf_b|`` over the ``B'`` non-empty equal-width bins
    (unweighted). Same as ``ece(..., preset="netcal_ace")``; other keywords as :func:`ece`.
    Not to be confused with Nixon et al.'s *adaptive* CE, :func:`adaptive_ece`.
    """
    if kwargs.get("preset") is None:
        kwargs["preset"] = "netcal_ace"
    return ece(confidences, correct, n_bins=n_bins, **kwargs)


def adaptive_ece(confidences: Any, correct: Any, *, n_bins: int = 10, **kwargs: Any) -> float:
    """Adaptive calibration error (Nixon et al. 2019; CC_RAG's ACE): equal-count bins.

    Sort the confidences, cut them into ``n_bins`` runs of ``N // n_bins`` items (the last run
    takes the remainder) and average ``|acc_r − mean conf_r|`` over the runs, unweighted.
    Same as ``ece(..., preset="ccrag_ace")``. Needs ``N ≥ n_bins``.
    """
    if kwargs.get("preset") is None:
        kwargs["preset"] = "ccrag_ace"
    return ece(confidences, correct, n_bins=n_bins, **kwargs)


def brier(confidences: Any, correct: Any, *, nan_policy: NanPolicy = "raise") -> float:
    """Brier score ``(1/N) Σ (c_i − y_i)²`` of confidences against 0/1 correctness (lower = better).

    Equals scikit-learn's ``brier_score_loss(correct, confidences)``; in [0, 1].
    """
    c, y = _labels_and_confidences(confidences, correct, nan_policy)
    return float(np.mean((c - y) ** 2))


def nll(
    confidences: Any,
    correct: Any,
    *,
    eps: float = float(np.finfo(np.float64).eps),
    nan_policy: NanPolicy = "raise",
) -> float:
    """Binary log loss ``−(1/N) Σ [y log c + (1 − y) log(1 − c)]`` in nats (lower = better).

    Confidences are clipped to ``[eps, 1 − eps]`` first so that a confident mistake costs
    ``−log eps`` (≈ 36.0 nats for the default float64 machine epsilon, as scikit-learn's
    ``log_loss``) instead of infinity.
    """
    if not 0.0 < eps < 0.5:
        raise EntrolabError(f"eps must be in (0, 0.5), got {eps!r}")
    c, y = _labels_and_confidences(confidences, correct, nan_policy)
    c = np.clip(c, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(c) + (1.0 - y) * np.log1p(-c)))
