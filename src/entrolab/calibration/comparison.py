"""Paired comparisons: does A beat B on the *same* items, beyond sampling error?

* :func:`delong_covariance` / :func:`delong_test` / :func:`delong_interval`: DeLong, DeLong &
  Clarke-Pearson (1988) for correlated AUROCs, in the O(N log N) mid-rank form of Sun & Xu
  (2014).
* :func:`paired_bootstrap`: any named metric, difference A − B over the same resampled items
  (stratified by correctness for ranking metrics), percentile interval and a two-sided
  bootstrap p-value.
* :func:`mcnemar_exact`: accuracy of two systems on the same items (exact binomial test on the
  discordant pairs) with a paired-bootstrap interval on the accuracy difference.
* :func:`rank_tiers`: turn a ranking plus pairwise p-values into ties.

Scope: one comparison over the whole evaluation set; items are independent units. p-values
are not corrected for multiple comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest, norm, rankdata

from entrolab.calibration._validate import check_binary, check_choice, prepare
from entrolab.calibration.intervals import (
    METRIC_STATISTICS,
    Interval,
    bootstrap_distribution,
    bootstrap_indices,
    check_level,
)
from entrolab.errors import EntrolabError

__all__ = [
    "PairedTest",
    "delong_covariance",
    "delong_interval",
    "delong_test",
    "mcnemar_exact",
    "paired_bootstrap",
    "paired_mean_difference",
    "rank_tiers",
]


@dataclass(frozen=True)
class PairedTest:
    """Result of comparing A and B on the same items.

    Attributes:
        metric: what was compared (``auroc``, ``accuracy``, …).
        estimate_a, estimate_b: the metric of A and of B.
        difference: ``estimate_a − estimate_b``.
        low, high: interval on the difference (NaN when unavailable).
        level: its nominal coverage.
        p_value: two-sided p-value for "no difference".
        method: ``"delong"``, ``"paired-bootstrap"`` or ``"mcnemar-exact"``.
        n: items compared.
    """

    metric: str
    estimate_a: float
    estimate_b: float
    difference: float
    low: float
    high: float
    level: float
    p_value: float
    method: str
    n: int

    def significant(self, alpha: float = 0.05) -> bool:
        """p < alpha."""
        return bool(self.p_value < alpha)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
        return out


def _scores_matrix(scores: Sequence[Any], labels: Any) -> tuple[np.ndarray, np.ndarray]:
    named = {f"scores {i}": s for i, s in enumerate(scores)}
    *arrays, y = prepare({**named, "labels": labels})
    check_binary(y, "labels")
    n1 = int(y.sum())
    if n1 == 0 or n1 == y.size:
        raise EntrolabError(
            "labels hold one class only; DeLong needs correct and wrong items (at least 2 of each)"
        )
    if min(n1, y.size - n1) < 2:
        raise EntrolabError(
            f"DeLong needs at least 2 items of each class (got {n1} positive, {y.size - n1} "
            "negative); evaluate more items"
        )
    return np.vstack(arrays), y


def delong_covariance(scores: Sequence[Any], labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs and their DeLong covariance matrix for K scorings of the same items.

    With m positives, n negatives and, per scoring, mid-ranks ``R`` over all items, ``R⁺`` over
    the positives and ``R⁻`` over the negatives, the placement values are
    ``V10_i = (R_i − R⁺_i) / n`` (positive i: share of negatives it beats, ties ½) and
    ``V01_j = 1 − (R_j − R⁻_j) / m``; ``AUC = mean(V10)`` and
    ``Cov = Cov(V10) / m + Cov(V01) / n`` (sample covariances over items, ddof = 1).

    Args:
        scores: K arrays [N], higher = predicts label 1.
        labels: [N] 0/1.

    Returns:
        ``(aucs [K], cov [K, K])``.
    """
    s, y = _scores_matrix(scores, labels)
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    r_all = rankdata(s, axis=1, method="average")
    r_pos = rankdata(s[:, pos], axis=1, method="average")
    r_neg = rankdata(s[:, neg], axis=1, method="average")
    v10 = (r_all[:, pos] - r_pos) / n  # [K, m]
    v01 = 1.0 - (r_all[:, neg] - r_neg) / m  # [K, n]
    aucs = v10.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_test(
    uncertainty_a: Any, uncertainty_b: Any, correct: Any, *, level: float = 0.95
) -> PairedTest:
    """DeLong test of AUROC(−u_A) = AUROC(−u_B) for predicting correctness on the same items.

    ``z = (A − B) / sqrt(V_AA + V_BB − 2 V_AB)``, two-sided ``p = 2 Φ(−|z|)``; interval
    ``(A − B) ± z_{1−α/2} · se``. When the two scorings rank identically (se = 0) the difference
    is 0 and p = 1.
    """
    level = check_level(level)
    ua, ub, y = prepare({"uncertainty_a": uncertainty_a, "uncertainty_b": uncertainty_b,
                         "correct": correct})  # fmt: skip
    aucs, cov = delong_covariance([-ua, -ub], y)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if var <= 1e-15:
        p, half = 1.0, 0.0
    else:
        se = math.sqrt(var)
        p = float(2.0 * norm.sf(abs(diff) / se))
        half = float(norm.ppf(0.5 + level / 2.0)) * se
    return PairedTest(
        "auroc", float(aucs[0]), float(aucs[1]), diff, diff - half, diff + half, level, p,
        "delong", int(y.size),
    )  # fmt: skip


def delong_interval(uncertainty: Any, correct: Any, *, level: float = 0.95) -> Interval:
    """AUROC of −u for correctness with a DeLong (normal) interval, clipped to [0, 1]."""
    level = check_level(level)
    u, y = prepare({"uncertainty": uncertainty, "correct": correct})
    aucs, cov = delong_covariance([-u], y)
    half = float(norm.ppf(0.5 + level / 2.0)) * math.sqrt(max(float(cov[0, 0]), 0.0))
    a = float(aucs[0])
    return Interval(a, max(0.0, a - half), min(1.0, a + half), level, "delong", int(y.size), 0)


def _bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value for "difference = 0": ``min(1, 2 min(P(d ≤ 0), P(d ≥ 0)))``."""
    return float(min(1.0, 2.0 * min(np.mean(diffs <= 0.0), np.mean(diffs >= 0.0))))


def paired_bootstrap(
    metric: str,
    x_a: Any,
    x_b: Any,
    correct: Any,
    *,
    correct_b: Any = None,
    stratify: bool | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedTest:
    """Paired bootstrap of ``metric(A) − metric(B)`` over the same resampled items.

    Args:
        metric: a name in :data:`~entrolab.calibration.intervals.METRIC_STATISTICS`.
        x_a, x_b: [N] uncertainties (ranking metrics) or confidences (calibration metrics) of
            A and B for the same items.
        correct: [N] 0/1 correctness (of A's answers; also B's unless ``correct_b`` is given,
            e.g. two systems answering the same questions).
        correct_b: optional [N] correctness of B's answers.
        stratify: resample within correctness strata (default: per metric); only allowed
            when A and B share one correctness vector.
        n_boot, level, seed: replicates, coverage, seed.

    Returns:
        A :class:`PairedTest` with the percentile interval of the difference and
        ``p = min(1, 2 min(P*(d ≤ 0), P*(d ≥ 0)))`` over the replicates.
    """
    level = check_level(level)
    check_choice(metric, "metric", tuple(METRIC_STATISTICS))
    spec = METRIC_STATISTICS[metric]
    cb = correct if correct_b is None else correct_b
    xa, xb, ya, yb = prepare({"x_a": x_a, "x_b": x_b, "correct": correct, "correct_b": cb})
    check_binary(ya, "correct")
    check_binary(yb, "correct_b")
    strat = spec.stratify if stratify is None else stratify
    if strat and correct_b is not None and not np.array_equal(ya, yb):
        raise EntrolabError(
            "stratify=True needs one correctness vector shared by A and B; pass stratify=False "
            "when the two systems' answers are graded separately"
        )
    n = ya.size
    idx = bootstrap_indices(n, strata=ya if strat else None, n_boot=n_boot, seed=seed)
    fn: Callable[..., Any] = spec.rows if spec.rows is not None else spec.fn
    vec = spec.rows is not None

    def stat(x: np.ndarray, y: np.ndarray) -> float:
        return float(fn(x[None, :], y[None, :])[0]) if vec else float(fn(x, y))

    a, b = stat(xa, ya), stat(xb, yb)
    da = bootstrap_distribution(fn, (xa, ya), idx, vectorized=vec)
    db = bootstrap_distribution(fn, (xb, yb), idx, vectorized=vec)
    d = (da - db)[np.isfinite(da - db)]
    alpha = (1.0 - level) / 2.0
    if d.size < max(2, n_boot // 2):
        lo = hi = p = math.nan
    else:
        lo, hi = (float(v) for v in np.quantile(d, [alpha, 1.0 - alpha]))
        p = _bootstrap_p(d)
    return PairedTest(metric, a, b, a - b, lo, hi, level, p, "paired-bootstrap", n)


def paired_mean_difference(
    a: Any, b: Any, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0, metric: str = "mean"
) -> PairedTest:
    """``mean(a) − mean(b)`` for per-item values of two systems on the same items.

    E.g. per-item correct rates over k samples (pass@1), or tokens per item. Percentile
    interval and two-sided p-value ``min(1, 2 min(P*(d ≤ 0), P*(d ≥ 0)))`` from a paired
    bootstrap over items (unstratified).

    Args:
        a, b: [N] per-item values of A and B (item i is the same item in both).
        level, n_boot, seed: coverage, replicates, seed.
        metric: the name stored in the result.
    """
    level = check_level(level)
    va, vb = prepare({"a": a, "b": b})
    idx = bootstrap_indices(va.size, n_boot=n_boot, seed=seed)
    d = va[idx].mean(axis=1) - vb[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = (float(v) for v in np.quantile(d, [alpha, 1.0 - alpha]))
    ma, mb = float(va.mean()), float(vb.mean())
    return PairedTest(
        metric, ma, mb, ma - mb, lo, hi, level, _bootstrap_p(d), "paired-bootstrap", int(va.size)
    )


def mcnemar_exact(
    correct_a: Any, correct_b: Any, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> PairedTest:
    """Accuracy of A vs B on the same items: exact McNemar test + paired-bootstrap interval.

    With ``b01`` = items only B got right and ``b10`` = items only A got right, under "equal
    accuracy" ``b10 ~ Binomial(b10 + b01, ½)``; p is the two-sided exact binomial p-value
    (1 when there are no discordant items). The interval on ``acc_A − acc_B`` is the
    percentile interval of the paired bootstrap over items (unstratified).
    """
    level = check_level(level)
    ya, yb = prepare({"correct_a": correct_a, "correct_b": correct_b})
    check_binary(ya, "correct_a")
    check_binary(yb, "correct_b")
    b10 = int(np.sum((ya == 1) & (yb == 0)))
    b01 = int(np.sum((ya == 0) & (yb == 1)))
    p = 1.0 if b10 + b01 == 0 else float(binomtest(b10, b10 + b01, 0.5).pvalue)
    idx = bootstrap_indices(ya.size, n_boot=n_boot, seed=seed)
    d = ya[idx].mean(axis=1) - yb[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = (float(v) for v in np.quantile(d, [alpha, 1.0 - alpha]))
    acc_a, acc_b = float(ya.mean()), float(yb.mean())
    return PairedTest(
        "accuracy", acc_a, acc_b, acc_a - acc_b, lo, hi, level, p, "mcnemar-exact", int(ya.size)
    )


def rank_tiers(
    order: Sequence[str], p_value: Callable[[str, str], float], *, alpha: float = 0.05
) -> dict[str, int]:
    """Group a best-first ranking into contiguous ties: name → tier rank (1-based).

    Walking down the ranking, a name joins the current tier when its comparison with the
    tier's leader (the tier's first name) is not significant (``p_value(leader, name) ≥
    alpha``); the first name that differs significantly from the leader starts the next tier,
    and its tier rank is its own position. Ties are with the leader, not transitive, and tiers
    stay contiguous in the ranking. A NaN p-value counts as significant (no tie claimed).

    Args:
        order: names, best first.
        p_value: two-sided p-value of comparing two names (called as ``(leader, other)``).
        alpha: significance level.
    """
    if not 0.0 < alpha < 1.0:
        raise EntrolabError(f"alpha must be in (0, 1), got {alpha!r}")
    tiers: dict[str, int] = {}
    leader, rank = None, 0
    for i, name in enumerate(order, start=1):
        if leader is not None:
            p = p_value(leader, name)
            if math.isfinite(p) and p >= alpha:
                tiers[name] = rank
                continue
        leader, rank = name, i
        tiers[name] = rank
    return tiers
