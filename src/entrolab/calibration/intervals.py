"""Uncertainty of the measurements themselves: bootstrap and exact binomial intervals.

Every figure entrolab reports (AUROC, PRR, AURC, ECE, ACE, Brier, accuracy) is computed on a
finite set of N items and carries sampling error; these pure numpy/scipy functions put a
two-sided interval on it. Scope: one interval per metric over the whole evaluation set; the
items are the resampling unit (they are assumed independent).

* :func:`bootstrap_interval`: percentile / basic / BCa bootstrap of any statistic of paired
  [N] arrays, optionally **stratified** (resampling within each stratum, e.g. correct and wrong
  items separately, so every replicate keeps the class counts and a ranking metric is always
  defined; this is pROC's default for AUROC). Without strata and with the same seed, the draws
  and the interval equal ``scipy.stats.bootstrap(..., paired=True)``.
* :func:`metric_interval`: the same for a named metric of :data:`METRIC_STATISTICS`, with the
  conventions of ``entrolab eval`` (ranking metrics stratified by correctness).
* :func:`clopper_pearson` / :func:`accuracy_interval`: exact binomial intervals.

Paired comparisons (two estimators on the same items) live in :mod:`.comparison`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import beta, rankdata

from entrolab.calibration._validate import check_binary, check_choice, check_positive_int, prepare
from entrolab.calibration.binning import assign_bins, resolve_spec
from entrolab.calibration.metrics import ace, brier, ece
from entrolab.calibration.ranking import aurc, auroc, prr
from entrolab.errors import EntrolabError

Method = Literal["percentile", "basic", "bca"]
_METHODS = ("percentile", "basic", "bca")

__all__ = [
    "METRIC_STATISTICS",
    "Interval",
    "accuracy_interval",
    "bootstrap_distribution",
    "bootstrap_indices",
    "bootstrap_interval",
    "check_level",
    "clopper_pearson",
    "metric_interval",
]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval.

    Attributes:
        estimate: the statistic on the full data.
        low, high: interval ends (NaN when it could not be computed).
        level: nominal coverage, e.g. 0.95.
        method: ``"percentile"``, ``"basic"``, ``"bca"``, ``"clopper-pearson"``, ``"delong"``.
        n: number of items.
        n_boot: bootstrap replicates (0 for closed-form intervals).
    """

    estimate: float
    low: float
    high: float
    level: float = 0.95
    method: str = "percentile"
    n: int = 0
    n_boot: int = 0

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies inside the closed interval."""
        return bool(self.low <= value <= self.high)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def format(self, spec: str = ".3f") -> str:
        """``"0.712 [0.612, 0.801]"``."""
        return f"{self.estimate:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (NaN ends become None)."""
        out = asdict(self)
        for key in ("estimate", "low", "high"):
            if not math.isfinite(out[key]):
                out[key] = None
        return out


def check_level(level: float) -> float:
    """``level`` as a float in (0, 1), or a clear error."""
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise EntrolabError(f"level must be a coverage in (0, 1) such as 0.95, got {level!r}")
    return float(level)


def bootstrap_indices(
    n: int, *, strata: Any = None, n_boot: int = 1000, seed: int | np.random.Generator = 0
) -> np.ndarray:
    """Item indices of ``n_boot`` bootstrap replicates, int64 [n_boot, n].

    Without ``strata`` every row draws ``n`` indices uniformly with replacement (the same
    ``rng.integers(0, n, (n_boot, n))`` call as ``scipy.stats.bootstrap``). With ``strata``
    ([n] labels, e.g. 0/1 correctness) each stratum is resampled within itself, its items
    keeping their positions: row ``b`` holds, at the positions of stratum ``s``, a resample of
    stratum ``s``. Strata are visited in ascending label order.
    """
    n = check_positive_int(n, "n")
    n_boot = check_positive_int(n_boot, "n_boot")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n, (n_boot, n))
    labels = np.asarray(strata)
    if labels.shape != (n,):
        raise EntrolabError(f"strata must hold one label per item ({n}), got shape {labels.shape}")
    idx = np.empty((n_boot, n), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        idx[:, members] = members[rng.integers(0, members.size, (n_boot, members.size))]
    return idx


def bootstrap_distribution(
    statistic: Callable[..., float],
    arrays: tuple[np.ndarray, ...],
    idx: np.ndarray,
    *,
    vectorized: bool = False,
) -> np.ndarray:
    """The statistic on each replicate, float64 [n_boot].

    ``statistic(*arrays)`` takes [N] arrays and returns a float; with ``vectorized`` it takes
    [B, N] arrays and returns [B]. A replicate on which the statistic raises
    :class:`EntrolabError` (e.g. AUROC on a one-class resample) gives NaN.
    """
    if vectorized:
        return np.asarray(statistic(*(a[idx] for a in arrays)), dtype=np.float64)
    out = np.empty(idx.shape[0])
    for b, rows in enumerate(idx):
        try:
            out[b] = statistic(*(a[rows] for a in arrays))
        except EntrolabError:
            out[b] = math.nan
    return out


def _jackknife_acceleration(
    statistic: Callable[..., float], arrays: tuple[np.ndarray, ...], vectorized: bool
) -> float:
    """BCa acceleration ``â = Σ U³ / (6 (Σ U²)^{3/2})``, ``U_i = (n−1)(θ̄ − θ_(i))`` (Efron 14.15)."""
    n = arrays[0].size
    keep = ~np.eye(n, dtype=bool)
    loo = np.arange(n)[None, :].repeat(n, 0)[keep].reshape(n, n - 1)
    theta_i = bootstrap_distribution(statistic, arrays, loo, vectorized=vectorized)
    u = (n - 1) * (np.nanmean(theta_i) - theta_i)
    u = u[np.isfinite(u)]
    den = np.sum(u**2)
    return 0.0 if den == 0 else float(np.sum(u**3) / (6.0 * den**1.5))


def bootstrap_interval(
    statistic: Callable[..., float],
    *arrays: Any,
    strata: Any = None,
    n_boot: int = 1000,
    level: float = 0.95,
    method: Method = "percentile",
    seed: int | np.random.Generator = 0,
    vectorized: bool = False,
) -> Interval:
    """Bootstrap interval of ``statistic(*arrays)`` over items (paired resampling).

    Args:
        statistic: function of the [N] arrays (or of [B, N] arrays returning [B] when
            ``vectorized``) returning a float.
        *arrays: [N] arrays, resampled together (item ``i`` keeps its row across arrays).
        strata: optional [N] labels; resample within each (see :func:`bootstrap_indices`).
        n_boot: number of replicates.
        level: two-sided coverage, e.g. 0.95.
        method: ``"percentile"`` (quantiles of the replicates), ``"basic"`` (reflected around the
            estimate) or ``"bca"`` (bias-corrected and accelerated; acceleration from the
            leave-one-out jackknife over all items, as scipy).
        seed: seed or ``numpy.random.Generator`` for the draws.
        vectorized: ``statistic`` takes [B, N] arrays.

    Returns:
        An :class:`Interval`; replicates where the statistic is undefined are dropped, and
        NaN ends are returned when fewer than half of them are finite.
    """
    level = check_level(level)
    check_choice(method, "method", _METHODS)
    data = tuple(prepare({f"array {i}": a for i, a in enumerate(arrays)}))
    n = data[0].size
    estimate = float(statistic(*(a[None, :] for a in data))[0] if vectorized else statistic(*data))
    idx = bootstrap_indices(n, strata=strata, n_boot=n_boot, seed=seed)
    theta = bootstrap_distribution(statistic, data, idx, vectorized=vectorized)
    theta = theta[np.isfinite(theta)]
    alpha = (1.0 - level) / 2.0
    if theta.size < max(2, n_boot // 2) or not math.isfinite(estimate):
        return Interval(estimate, math.nan, math.nan, level, method, n, n_boot)
    probs = np.array([alpha, 1.0 - alpha])
    if method == "bca":
        share = (np.count_nonzero(theta < estimate) + np.count_nonzero(theta <= estimate)) / (
            2.0 * theta.size
        )
        z0 = float(ndtri(share))
        a_hat = _jackknife_acceleration(statistic, data, vectorized)
        z = ndtri(probs)
        probs = ndtr(z0 + (z0 + z) / (1.0 - a_hat * (z0 + z)))
        if not np.all(np.isfinite(probs)):
            return Interval(estimate, math.nan, math.nan, level, method, n, n_boot)
    low, high = np.quantile(theta, probs)
    if method == "basic":
        low, high = 2.0 * estimate - high, 2.0 * estimate - low
    return Interval(estimate, float(low), float(high), level, method, n, n_boot)


# ---- exact binomial ---------------------------------------------------------------------------


def clopper_pearson(k: int, n: int, level: float = 0.95) -> Interval:
    """Exact (Clopper–Pearson) interval for a binomial proportion ``k / n``.

    ``low = Beta⁻¹(α/2; k, n−k+1)`` (0 when k = 0), ``high = Beta⁻¹(1−α/2; k+1, n−k)`` (1 when
    k = n), α = 1 − level. Conservative: coverage ≥ level for every true proportion.
    """
    level = check_level(level)
    n = check_positive_int(n, "n")
    k = check_positive_int(k, "k", minimum=0)
    if k > n:
        raise EntrolabError(f"k ({k}) successes cannot exceed n ({n}) trials")
    alpha = 1.0 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2.0, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - alpha / 2.0, k + 1, n - k))
    return Interval(k / n, low, high, level, "clopper-pearson", n, 0)


def accuracy_interval(correct: Any, level: float = 0.95) -> Interval:
    """Accuracy of [N] 0/1 correctness with its exact binomial interval."""
    (y,) = prepare({"correct": correct})
    check_binary(y, "correct")
    return clopper_pearson(int(y.sum()), int(y.size), level)


# ---- named metrics ----------------------------------------------------------------------------


def _auroc_rows(u: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC of −u for y = 1 per row: u, y float64 [B, N] → [B] (NaN for a one-class row).

    Mann–Whitney from average ranks, as :func:`entrolab.calibration.auroc`.
    """
    ranks = rankdata(-u, axis=1, method="average")
    n1 = y.sum(axis=1)
    n0 = y.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        out = ((ranks * y).sum(axis=1) - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), out, np.nan)


def _binned_l1_rows(preset: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Vectorized l1 calibration error of a uniform-bin ``preset`` (empty bins skipped).

    Rows of c, y float64 [B, N] → [B], equal to ``ece(c[b], y[b], preset=preset)``: items are
    binned once (bins depend on each confidence alone), then per row the count-weighted form
    ``Σ_b |Σ y − Σ c| / N_binned`` or the uniform form ``mean over non-empty b of |acc − conf|``.
    """
    spec = resolve_spec(preset)
    if spec.binning != "uniform" or spec.empty_bins != "skip" or spec.bin_value != "mean":
        raise EntrolabError(f"no vectorized form for preset {preset!r}")

    def rows(c: np.ndarray, y: np.ndarray) -> np.ndarray:
        a = assign_bins(c.reshape(-1), spec)
        n_out = a.lower.size
        index = a.index.reshape(c.shape)
        keep = index >= 0
        flat = (np.arange(c.shape[0])[:, None] * n_out + index)[keep]
        size = c.shape[0] * n_out
        count = np.bincount(flat, minlength=size).reshape(-1, n_out)
        sum_c = np.bincount(flat, weights=c[keep], minlength=size).reshape(-1, n_out)
        sum_y = np.bincount(flat, weights=y[keep], minlength=size).reshape(-1, n_out)
        if spec.weighting == "count":
            return np.abs(sum_y - sum_c).sum(axis=1) / count.sum(axis=1)
        full = count > 0
        gap = np.abs(sum_y - sum_c) / np.maximum(count, 1)
        return (gap * full).sum(axis=1) / full.sum(axis=1)

    return rows


def _brier_rows(c: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.mean((c - y) ** 2, axis=1)


def _accuracy_rows(_x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.mean(y, axis=1)


@dataclass(frozen=True)
class MetricStatistic:
    """How a named metric is computed from (x, correct) and bootstrapped.

    Attributes:
        fn: ``fn(x, correct) -> float`` on [N] arrays (the library's metric function).
        x: what ``x`` is: ``"uncertainty"`` (higher = worse) or ``"confidence"`` in [0, 1].
        stratify: resample correct and wrong items separately by default.
        rows: optional vectorized form ``rows(x [B, N], correct [B, N]) -> [B]``.
        higher_is_better: direction, for rankings.
    """

    fn: Callable[[np.ndarray, np.ndarray], float]
    x: str
    stratify: bool
    rows: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    higher_is_better: bool = True


#: Named statistics of (x, correct) for :func:`metric_interval`, with ``entrolab eval``'s
#: conventions: PRR and AURC with the expectation over random tie-breaks; inside the bootstrap
#: PRR's random baseline is its exact expectation ``mean(q)`` (the permutation baseline is a
#: 1000-draw Monte Carlo estimate of the same number); ECE is the torchmetrics preset.
METRIC_STATISTICS: dict[str, MetricStatistic] = {
    "auroc": MetricStatistic(lambda u, y: auroc(-u, y), "uncertainty", True, _auroc_rows),
    "prr": MetricStatistic(
        lambda u, y: prr(u, y, ties="average", random_baseline="analytic"), "uncertainty", True
    ),
    "aurc": MetricStatistic(
        lambda u, y: aurc(u, y, ties="average"), "uncertainty", True, higher_is_better=False
    ),
    "ece": MetricStatistic(
        lambda c, y: ece(c, y, preset="torchmetrics"),
        "confidence",
        False,
        _binned_l1_rows("torchmetrics"),
        False,
    ),
    "ace": MetricStatistic(
        lambda c, y: ace(c, y), "confidence", False, _binned_l1_rows("netcal_ace"), False
    ),
    "brier": MetricStatistic(brier, "confidence", False, _brier_rows, False),
    "accuracy": MetricStatistic(lambda _x, y: float(np.mean(y)), "any", False, _accuracy_rows),
}


def metric_interval(
    metric: str,
    x: Any,
    correct: Any,
    *,
    stratify: bool | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    method: Method = "percentile",
    seed: int = 0,
) -> Interval:
    """Bootstrap interval of a named metric of :data:`METRIC_STATISTICS`.

    Args:
        metric: ``auroc``, ``prr``, ``aurc`` (x = uncertainty u, higher = worse), ``ece``,
            ``ace``, ``brier`` (x = confidence in [0, 1]) or ``accuracy`` (x ignored; for an
            exact interval use :func:`accuracy_interval`).
        x: [N] uncertainties or confidences; correct: [N] 0/1.
        stratify: resample correct and wrong items separately (default: per metric; True for
            the ranking metrics, so every replicate has both classes).
        n_boot, level, method, seed: as :func:`bootstrap_interval`.
    """
    check_choice(metric, "metric", tuple(METRIC_STATISTICS))
    spec = METRIC_STATISTICS[metric]
    xv, y = prepare({"x": x, "correct": correct})
    check_binary(y, "correct")
    strat = spec.stratify if stratify is None else stratify
    vectorized = spec.rows is not None
    return bootstrap_interval(
        spec.rows if vectorized else spec.fn,  # type: ignore[arg-type]
        xv,
        y,
        strata=y if strat else None,
        n_boot=n_boot,
        level=level,
        method=method,
        seed=seed,
        vectorized=vectorized,
    )
