"""Ranking metrics: does the score order items by correctness? AUROC, AUPRC, AURC, PRR.

Conventions (scope: one value over the whole evaluation set):

* :func:`auroc`, :func:`auprc` take ``scores`` (higher = predicts label 1) and 0/1 ``labels``,
  as scikit-learn. For an uncertainty ``u`` and correctness use ``auroc(-u, correct)`` (or,
  LM-Polygraph style, ``auroc(u, 1 - correct)``: the same number).
* :func:`risk_coverage_curve`, :func:`aurc`, :func:`prr`, :func:`prediction_rejection_area` follow
  LM-Polygraph: ``uncertainty`` u (higher = worse) and ``quality`` q (higher = better; 0/1
  correctness or a graded score), with q min–max normalised to [0, 1] (when max ≈ min the range
  is widened to [min − 1, max + 1], as LM-Polygraph's ``normalize``).

Ties in u decide which items are kept first. ``ties`` selects the rule:
``"arbitrary"`` = ``np.argsort`` default (unstable; LM-Polygraph's PRR), ``"stable"`` = input
order among ties (LM-Polygraph's RCC-AUC, a Python stable sort), ``"average"`` = the exact
expectation over uniformly random tie-breaks (each tied run gets its mean quality),
``"random"`` = the mean over ``n_tie_seeds`` random tie-breaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import rankdata

from entrolab.calibration._validate import (
    NanPolicy,
    check_binary,
    check_choice,
    check_finite,
    check_positive_int,
    prepare,
)
from entrolab.errors import EntrolabError

Ties = Literal["arbitrary", "stable", "average", "random"]
_TIES = ("arbitrary", "stable", "average", "random")

__all__ = [
    "RiskCoverage",
    "auprc",
    "aurc",
    "auroc",
    "normalize_quality",
    "prediction_rejection_area",
    "prr",
    "risk_coverage_curve",
    "selective_accuracy",
]


def _scores_labels(scores: Any, labels: Any, nan_policy: NanPolicy) -> tuple[np.ndarray, ...]:
    s, y = prepare({"scores": scores, "labels": labels}, nan_policy=nan_policy)
    check_binary(y, "labels")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        only = "1 (all correct)" if n_pos else "0 (all wrong)"
        raise EntrolabError(
            f"labels are all {only}: the metric needs both classes; evaluate on a set that "
            "holds correct and incorrect items"
        )
    return s, y


def auroc(scores: Any, labels: Any, *, nan_policy: NanPolicy = "raise") -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative).

    Ties count ½ (the trapezoidal ROC area, as ``sklearn.metrics.roc_auc_score``). Computed
    from average ranks (Mann–Whitney U): ``(Σ ranks of positives − n₁(n₁+1)/2) / (n₁ n₀)``.

    Args:
        scores: [N] real scores, higher = more likely label 1 (±inf allowed).
        labels: [N] 0/1 or bool; both classes must be present.
        nan_policy: ``"raise"`` or ``"omit"``.

    Returns:
        AUROC in [0, 1]; 0.5 = chance, higher = better.
    """
    s, y = _scores_labels(scores, labels, nan_policy)
    ranks = rankdata(s, method="average")
    n1 = float(y.sum())
    n0 = y.size - n1
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def auprc(scores: Any, labels: Any, *, nan_policy: NanPolicy = "raise") -> float:
    """Average precision ``Σ_k (R_k − R_{k−1}) P_k`` over the distinct score thresholds.

    Thresholds are visited from the highest score down; tied scores enter together. Equals
    ``sklearn.metrics.average_precision_score`` (no interpolation). Chance level = the
    fraction of positives.

    Args:
        scores: [N] real scores, higher = more likely label 1.
        labels: [N] 0/1 or bool; both classes must be present.
        nan_policy: ``"raise"`` or ``"omit"``.
    """
    s, y = _scores_labels(scores, labels, nan_policy)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last_of_run]
    precision = tps / (last_of_run + 1.0)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def normalize_quality(quality: np.ndarray) -> np.ndarray:
    """LM-Polygraph's min–max normalisation of quality to [0, 1] (float64 [N] → [N]).

    ``(q − min) / (max − min)``; when ``np.isclose(min, max)`` the range is widened to
    ``[min − 1, max + 1]`` (so a constant quality maps to 0.5).
    """
    lo, hi = float(np.min(quality)), float(np.max(quality))
    if np.isclose(lo, hi):
        lo, hi = lo - 1.0, hi + 1.0
    return (quality - lo) / (hi - lo)


def _sorted_quality(
    u: np.ndarray, q: np.ndarray, ties: Ties, n_tie_seeds: int, seed: int
) -> np.ndarray:
    """Quality in the order items are kept (ascending u), under the tie rule; float64 [N]."""
    check_choice(ties, "ties", _TIES)
    if ties == "arbitrary":
        return q[np.argsort(u)]
    order = np.argsort(u, kind="stable")
    if ties == "stable":
        return q[order]
    su, sq = u[order], q[order]
    if ties == "average":
        starts = np.r_[0, np.flatnonzero(su[1:] != su[:-1]) + 1]
        sums = np.add.reduceat(sq, starts)
        lengths = np.diff(np.r_[starts, su.size])
        return np.repeat(sums / lengths, lengths)
    check_positive_int(n_tie_seeds, "n_tie_seeds")
    rng = np.random.default_rng(seed)
    acc = np.zeros(u.size)
    for _ in range(n_tie_seeds):
        acc += q[np.lexsort((rng.random(u.size), u))]
    return acc / n_tie_seeds


def _uq(
    uncertainty: Any, quality: Any, nan_policy: NanPolicy, normalize: bool
) -> tuple[np.ndarray, np.ndarray]:
    u, q = prepare({"uncertainty": uncertainty, "quality": quality}, nan_policy=nan_policy)
    check_finite(q, "quality")
    return u, (normalize_quality(q) if normalize else q)


@dataclass(frozen=True)
class RiskCoverage:
    """A risk–coverage curve: keep the k least-uncertain items, k = 1 … N.

    Attributes:
        coverage: float64 [N], ``k / N`` (ascending).
        risk: float64 [N], mean risk ``1 − q̃`` of the k kept items.
    """

    coverage: np.ndarray
    risk: np.ndarray

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-serialisable dict of lists."""
        return {"coverage": self.coverage.tolist(), "risk": self.risk.tolist()}


def risk_coverage_curve(
    uncertainty: Any,
    quality: Any,
    *,
    normalize: bool = True,
    ties: Ties = "stable",
    n_tie_seeds: int = 100,
    seed: int = 0,
    nan_policy: NanPolicy = "raise",
) -> RiskCoverage:
    """Selective risk as a function of coverage when abstaining on the most uncertain items.

    Args:
        uncertainty: [N], higher = less trustworthy (kept last).
        quality: [N], higher = better (0/1 correctness or a graded score).
        normalize: min–max normalise quality first (:func:`normalize_quality`); with 0/1
            correctness holding both values this changes nothing. Risk = ``1 − q̃``.
        ties, n_tie_seeds, seed: tie rule (module docstring); default ``"stable"`` as
            LM-Polygraph's RCC-AUC.
        nan_policy: ``"raise"`` or ``"omit"``.
    """
    u, q = _uq(uncertainty, quality, nan_policy, normalize)
    risk = 1.0 - _sorted_quality(u, q, ties, n_tie_seeds, seed)
    k = np.arange(1, u.size + 1, dtype=np.float64)
    return RiskCoverage(coverage=k / u.size, risk=np.cumsum(risk) / k)


def aurc(uncertainty: Any, quality: Any, **kwargs: Any) -> float:
    """Area under the risk–coverage curve, ``(1/N) Σ_k risk_k`` (lower = better).

    LM-Polygraph's ``RiskCoverageCurveAUC`` (``rcc-auc``): quality min–max normalised, risk
    ``1 − q̃``, items sorted by ascending uncertainty with a stable sort, mean of the
    cumulative mean risk. Keywords as :func:`risk_coverage_curve`.
    """
    return float(np.mean(risk_coverage_curve(uncertainty, quality, **kwargs).risk))


def _rejection_area(sorted_q: np.ndarray, n_rej: int) -> float:
    """LM-Polygraph's PR area: ``(1/R) Σ_{k=N−R+1}^{N} c_k / k``, c = cumsum of sorted quality."""
    n = sorted_q.size
    cum = np.cumsum(sorted_q)[n - n_rej :]
    return float(np.sum(cum / np.arange(n - n_rej + 1, n + 1)) / n_rej)


def _n_rejections(n: int, max_rejection: float) -> int:
    if not 0.0 < max_rejection <= 1.0:
        raise EntrolabError(f"max_rejection must be in (0, 1], got {max_rejection!r}")
    n_rej = int(max_rejection * n)
    if n_rej < 1:
        raise EntrolabError(
            f"max_rejection={max_rejection} of {n} items rejects no item (int({max_rejection}"
            f" × {n}) = 0); raise max_rejection or evaluate more items"
        )
    return n_rej


def prediction_rejection_area(
    uncertainty: Any,
    quality: Any,
    *,
    max_rejection: float = 1.0,
    ties: Ties = "arbitrary",
    n_tie_seeds: int = 100,
    seed: int = 0,
    nan_policy: NanPolicy = "raise",
) -> float:
    """Raw area under the prediction–rejection curve (LM-Polygraph ``prr``; higher = better).

    With q̃ min–max normalised, items sorted by ascending u (``s_1 … s_N``),
    ``c_k = Σ_{j≤k} s_j`` and ``R = int(max_rejection · N)``:
    ``AUC = (1/R) Σ_{k=N−R+1}^{N} c_k / k`` (mean quality of the kept items, averaged over the
    rejection rates 0 … (R−1)/N).
    """
    u, q = _uq(uncertainty, quality, nan_policy, True)
    n_rej = _n_rejections(u.size, max_rejection)
    return _rejection_area(_sorted_quality(u, q, ties, n_tie_seeds, seed), n_rej)


def _random_area(
    q: np.ndarray, n_rej: int, baseline: str, n_permutations: int, random_seed: int
) -> float:
    if baseline == "analytic":
        return float(np.mean(q))  # E[c_k / k] = mean(q) under a uniformly random order
    check_positive_int(n_permutations, "n_permutations")
    rs = np.random.RandomState(random_seed)  # same stream as np.random.seed(42) + shuffle
    perm = np.arange(q.size)
    inverse = np.empty(q.size, dtype=np.int64)
    values = np.empty(n_permutations)
    for i in range(n_permutations):
        rs.shuffle(perm)  # shuffled in place, cumulatively, as LM-Polygraph
        inverse[perm] = np.arange(q.size)  # = argsort(perm): the kept order
        values[i] = _rejection_area(q[inverse], n_rej)
    return float(np.mean(values))


def prr(
    uncertainty: Any,
    quality: Any,
    *,
    max_rejection: float = 1.0,
    ties: Ties = "arbitrary",
    n_tie_seeds: int = 100,
    seed: int = 0,
    random_baseline: Literal["permutations", "analytic"] = "permutations",
    n_permutations: int = 1000,
    random_seed: int = 42,
    nan_policy: NanPolicy = "raise",
) -> float:
    """Prediction rejection ratio, LM-Polygraph's ``prr_normalized`` (1 = oracle, 0 = random).

    ``PRR = (AUC(u) − AUC_rand) / (AUC_oracle − AUC_rand)`` with AUC from
    :func:`prediction_rejection_area`; the oracle ranks by ``u = −q``; the random baseline is
    the mean AUC over ``n_permutations`` random orders drawn as LM-Polygraph does
    (``np.random.seed(42)``, one ``arange(N)`` shuffled in place 1000 times), or, with
    ``random_baseline="analytic"``, its expectation ``mean(q̃)``. When oracle = random (constant
    quality) the raw AUC is returned, as LM-Polygraph does. Negative = worse than random.

    Args:
        uncertainty: [N], higher = worse. quality: [N], higher = better.
        max_rejection: largest rejected fraction (``prr_0.5`` uses 0.5).
        ties: ``"arbitrary"`` (LM-Polygraph) | ``"stable"`` | ``"average"`` | ``"random"``;
            only the estimator's AUC depends on it (the oracle and random baselines do not).
        n_tie_seeds, seed: for ``ties="random"``.
        random_baseline, n_permutations, random_seed: the random baseline (see above).
        nan_policy: ``"raise"`` or ``"omit"`` (items dropped before every term).
    """
    check_choice(random_baseline, "random_baseline", ("permutations", "analytic"))
    u, q = _uq(uncertainty, quality, nan_policy, True)
    n_rej = _n_rejections(u.size, max_rejection)
    value = _rejection_area(_sorted_quality(u, q, ties, n_tie_seeds, seed), n_rej)
    oracle = _rejection_area(np.sort(q)[::-1], n_rej)
    rand = _random_area(q, n_rej, random_baseline, n_permutations, random_seed)
    if oracle == rand:
        return value
    return (value - rand) / (oracle - rand)


def selective_accuracy(
    uncertainty: Any,
    quality: Any,
    *,
    coverage: float = 0.8,
    ties: Ties = "average",
    n_tie_seeds: int = 100,
    seed: int = 0,
    nan_policy: NanPolicy = "raise",
) -> float:
    """Mean (raw, unnormalised) quality of the ``ceil(coverage · N)`` least-uncertain items.

    With 0/1 correctness this is the accuracy when answering only the most confident
    ``coverage`` fraction. ``ties="average"`` gives the expectation over random tie-breaks.
    """
    if not 0.0 < coverage <= 1.0:
        raise EntrolabError(f"coverage must be in (0, 1], got {coverage!r}")
    u, q = _uq(uncertainty, quality, nan_policy, False)
    k = max(1, math.ceil(coverage * u.size - 1e-9))
    return float(np.mean(_sorted_quality(u, q, ties, n_tie_seeds, seed)[:k]))
