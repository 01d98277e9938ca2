"""Confidence binning for calibration metrics and reliability diagrams, with library presets.

Every binned calibration error in :mod:`entrolab.calibration.metrics` is defined by a
:class:`BinningSpec`. The named presets in :data:`PRESETS` reproduce the numbers of the libraries
and papers that report them (spec sheet §A5); the differences that matter are where the bin
edges are, what happens to a confidence of exactly 0 or 1, and which per-bin confidence is
compared with the per-bin accuracy:

============== ===== ============ ============================== ==================== =========
preset         bins  edges        interval / exact 0 and 1       bin confidence       weighting
============== ===== ============ ============================== ==================== =========
torchmetrics   15    torch.linsp. [a, b); 1.0 gets its own bin   mean                 count
netcal         10    np.linspace  [a, b); last bin [a, 1]        mean                 count
netcal_ace     10    np.linspace  [a, b); last bin [a, 1]        mean                 non-empty
polygraph      20    np.linspace  (a, b]; first bin [0, 0.05]    mean                 count
ccrag          10    np.linspace  [a, b); 1.0 is dropped         bin centre           count
ccrag_ace      10    equal count  sorted ranks, N // 10 each     mean                 uniform
============== ===== ============ ============================== ==================== =========

Sources: torchmetrics ``_binning_bucketize`` (``torch.bucketize(right=True)`` on
``torch.linspace(0, 1, n_bins + 1)``, so 1.0 lands in an extra bin whose confidence is 1.0);
netcal ``_Miscalibration`` (``np.histogramdd``/``binned_statistic_dd``; netcal also clips
confidences to ``[eps, 1 − eps]``, which changes its result by < 1e-15 and is not copied);
LM-Polygraph ``ue_metrics/ece.py``; CC_RAG ``src/evaluate_results.py`` (Ozaki et al. 2025).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from entrolab.calibration._validate import (
    NanPolicy,
    check_binary,
    check_choice,
    check_positive_int,
    check_unit_interval,
    prepare,
)
from entrolab.errors import EntrolabError, UnknownNameError

Binning = Literal["uniform", "quantile", "equal_count"]
Closed = Literal["left", "right"]
Boundary = Literal["closed", "own_bin", "drop"]
BinValue = Literal["mean", "center"]
Weighting = Literal["count", "uniform"]
EmptyBins = Literal["skip", "zero"]
EdgeRounding = Literal["numpy", "torch"]


@dataclass(frozen=True)
class BinningSpec:
    """How confidences are grouped into bins and how the bins are weighted.

    Attributes:
        n_bins: number of bins (before an optional extra ``own_bin``).
        binning: ``"uniform"`` = equal-width edges on [0, 1]; ``"quantile"`` = edges at the
            empirical quantiles of the confidences (``np.quantile``, linear interpolation) with
            the outer edges set to 0 and 1, as netcal's ``equal_intervals=False``;
            ``"equal_count"`` = sort the confidences (``np.argsort``) and cut the ranks into
            ``n_bins`` runs of ``N // n_bins`` items, the last run taking the remainder
            (Nixon et al. 2019 adaptive bins, as CC_RAG's ACE); needs ``N ≥ n_bins``.
        closed: ``"left"`` = bins are ``[a, b)``; ``"right"`` = bins are ``(a, b]``.
        boundary: what happens to the one value no half-open bin holds (1.0 when
            ``closed="left"``, 0.0 when ``closed="right"``): ``"closed"`` = it joins the
            outermost bin; ``"own_bin"`` = it gets an extra bin of its own (torchmetrics);
            ``"drop"`` = it is left out of every bin and of the total N (CC_RAG).
        bin_value: per-bin confidence compared with the accuracy: the bin's mean confidence
            or the bin's centre ``(a + b) / 2``.
        weighting: ``"count"`` = bins weighted by ``n_b / N`` (N = binned items);
            ``"uniform"`` = every included bin weighs the same.
        empty_bins: ``"skip"`` = empty bins are left out; ``"zero"`` = empty bins are included
            with accuracy 0 (CC_RAG's MCE/RMSCE).
        edges: how uniform edges are rounded: ``"numpy"`` = ``np.linspace`` (netcal,
            LM-Polygraph, CC_RAG); ``"torch"`` = ``torch.linspace`` in float64 (torchmetrics;
            differs from numpy in the last bit of some edges, which moves values on an edge).
    """

    n_bins: int = 15
    binning: Binning = "uniform"
    closed: Closed = "left"
    boundary: Boundary = "closed"
    bin_value: BinValue = "mean"
    weighting: Weighting = "count"
    empty_bins: EmptyBins = "skip"
    edges: EdgeRounding = "numpy"

    def __post_init__(self) -> None:
        check_positive_int(self.n_bins, "n_bins")
        check_choice(self.binning, "binning", ("uniform", "quantile", "equal_count"))
        check_choice(self.closed, "closed", ("left", "right"))
        check_choice(self.boundary, "boundary", ("closed", "own_bin", "drop"))
        check_choice(self.bin_value, "bin_value", ("mean", "center"))
        check_choice(self.weighting, "weighting", ("count", "uniform"))
        check_choice(self.empty_bins, "empty_bins", ("skip", "zero"))
        check_choice(self.edges, "edges", ("numpy", "torch"))

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-serialisable dict."""
        return asdict(self)


#: Default binning when no preset is given: 15 equal-width bins ``[a, b)``, last bin closed.
DEFAULT_SPEC = BinningSpec()

#: Named presets reproducing published conventions (see the module docstring).
PRESETS: MappingProxyType[str, BinningSpec] = MappingProxyType(
    {
        "torchmetrics": BinningSpec(15, boundary="own_bin", edges="torch"),
        "netcal": BinningSpec(10),
        "netcal_ace": BinningSpec(10, weighting="uniform"),
        "polygraph": BinningSpec(20, closed="right"),
        "ccrag": BinningSpec(10, boundary="drop", bin_value="center", empty_bins="zero"),
        "ccrag_ace": BinningSpec(10, binning="equal_count", weighting="uniform"),
    }
)
_PRESET_ALIASES = {"netcal_ece": "netcal", "lm_polygraph": "polygraph", "cc_rag": "ccrag"}
#: Norm-specific changes to a preset: CC_RAG's RMSCE is an unweighted mean over all bins.
PRESET_NORM_OVERRIDES: MappingProxyType[tuple[str, str], dict[str, Any]] = MappingProxyType(
    {("ccrag", "l2"): {"weighting": "uniform"}}
)


def resolve_spec(preset: str | None, norm: str = "l1", **overrides: Any) -> BinningSpec:
    """The :class:`BinningSpec` for ``preset`` (or the default), with non-None ``overrides``.

    Args:
        preset: a name in :data:`PRESETS` (or an alias), or None for :data:`DEFAULT_SPEC`.
        norm: the norm the caller computes (some presets change with it, see
            :data:`PRESET_NORM_OVERRIDES`).
        **overrides: :class:`BinningSpec` fields; None means "keep the preset's value".
    """
    if preset is None:
        spec = DEFAULT_SPEC
    else:
        key = _PRESET_ALIASES.get(preset, preset)
        if key not in PRESETS:
            raise UnknownNameError(
                f"unknown calibration preset {preset!r}. Known presets: {', '.join(PRESETS)}"
            )
        spec = replace(PRESETS[key], **PRESET_NORM_OVERRIDES.get((key, norm), {}))
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(spec, **given) if given else spec


def uniform_edges(n_bins: int, rounding: EdgeRounding = "numpy") -> np.ndarray:
    """``n_bins + 1`` equal-width edges on [0, 1], float64, rounded as numpy or torch does."""
    if rounding == "torch":
        import torch  # only for bit-exact torchmetrics edges

        return torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64).numpy()
    return np.linspace(0.0, 1.0, n_bins + 1)


@dataclass(frozen=True)
class BinAssignment:
    """Per-item bin indices and the bins' edges.

    Attributes:
        index: int array [N]; bin of each item in ``0 … n_out − 1``, or −1 when dropped.
        lower, upper: float arrays [n_out]; each bin's edges (an ``own_bin`` has lower = upper).
    """

    index: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def assign_bins(confidences: np.ndarray, spec: BinningSpec) -> BinAssignment:
    """Assign each confidence in [0, 1] (float64 [N], validated) to a bin of ``spec``."""
    c = confidences
    b = spec.n_bins
    if spec.binning == "equal_count":
        if c.size < b:
            raise EntrolabError(
                f"equal_count binning needs at least n_bins={b} items, got {c.size}; "
                "lower n_bins or use binning='uniform'"
            )
        order = np.argsort(c)  # default (unstable) sort, as CC_RAG
        size = c.size // b
        rank_bin = np.minimum(np.arange(c.size) // size, b - 1)
        index = np.empty(c.size, dtype=np.int64)
        index[order] = rank_bin
        starts = np.arange(b) * size
        ends = np.append(starts[1:], c.size) - 1
        sorted_c = c[order]
        return BinAssignment(index, sorted_c[starts], sorted_c[ends])
    if spec.binning == "uniform":
        edges = uniform_edges(b, spec.edges)
    else:
        edges = np.quantile(c, np.linspace(0.0, 1.0, b + 1))
        edges[0], edges[-1] = 0.0, 1.0
    lower, upper = edges[:-1].copy(), edges[1:].copy()
    if spec.closed == "left":
        index = np.searchsorted(edges, c, side="right") - 1  # in 0 … b (b: exactly 1.0)
        outer = index == b
        if spec.boundary == "closed":
            index[outer] = b - 1
        elif spec.boundary == "drop":
            index[outer] = -1
        else:
            lower, upper = np.append(lower, 1.0), np.append(upper, 1.0)
    else:
        index = np.searchsorted(edges, c, side="left") - 1  # in −1 … b−1 (−1: exactly 0.0)
        outer = index == -1
        if spec.boundary == "closed":
            index[outer] = 0
        elif spec.boundary == "own_bin":
            index += 1
            lower, upper = np.append(0.0, lower), np.append(0.0, upper)
    return BinAssignment(index.astype(np.int64), lower, upper)


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics for a reliability diagram (one row per bin, in confidence order).

    Attributes (float64 arrays [n_out] unless noted):
        lower, upper: bin edges (equal for an ``own_bin``; item range for equal-count bins).
        count: int64, items in the bin.
        mean_confidence: mean confidence of the bin's items; NaN for an empty bin.
        accuracy: fraction correct in the bin; NaN for an empty bin (plot code skips these).
        confidence: the per-bin confidence the metric compares with ``accuracy``
            (``mean_confidence`` or the bin centre, per ``spec.bin_value``); NaN when empty
            and ``bin_value="mean"``.
        n_dropped: items outside every bin (only with ``boundary="drop"``).
        spec: the binning used.
    """

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    mean_confidence: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    n_dropped: int
    spec: BinningSpec

    @property
    def gap(self) -> np.ndarray:
        """``accuracy − confidence`` per bin (NaN for empty bins); > 0 means underconfident."""
        return self.accuracy - self.confidence

    def nonempty(self) -> ReliabilityBins:
        """The same statistics restricted to bins with at least one item."""
        keep = self.count > 0
        return replace(
            self,
            **{
                f: getattr(self, f)[keep]
                for f in ("lower", "upper", "count", "mean_confidence", "accuracy", "confidence")
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (lists; NaN written as None)."""

        def clean(a: np.ndarray) -> list[Any]:
            return [None if np.isnan(v) else float(v) for v in a.astype(np.float64)]

        return {
            "lower": clean(self.lower),
            "upper": clean(self.upper),
            "count": [int(v) for v in self.count],
            "mean_confidence": clean(self.mean_confidence),
            "accuracy": clean(self.accuracy),
            "confidence": clean(self.confidence),
            "n_dropped": self.n_dropped,
            "spec": self.spec.to_dict(),
        }


def bin_statistics(c: np.ndarray, y: np.ndarray, spec: BinningSpec) -> ReliabilityBins:
    """:class:`ReliabilityBins` from validated float64 confidences ``c`` and 0/1 labels ``y``."""
    a = assign_bins(c, spec)
    n_out = a.lower.size
    keep = a.index >= 0
    idx = a.index[keep]
    count = np.bincount(idx, minlength=n_out)
    sum_c = np.bincount(idx, weights=c[keep], minlength=n_out)
    sum_y = np.bincount(idx, weights=y[keep], minlength=n_out)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_c = np.where(count > 0, sum_c / count, np.nan)
        acc = np.where(count > 0, sum_y / count, np.nan)
    value = mean_c if spec.bin_value == "mean" else (a.lower + a.upper) / 2.0
    return ReliabilityBins(
        lower=a.lower,
        upper=a.upper,
        count=count.astype(np.int64),
        mean_confidence=mean_c,
        accuracy=acc,
        confidence=value,
        n_dropped=int((~keep).sum()),
        spec=spec,
    )


def reliability_bins(
    confidences: Any,
    correct: Any,
    *,
    preset: str | None = None,
    n_bins: int | None = None,
    binning: Binning | None = None,
    closed: Closed | None = None,
    boundary: Boundary | None = None,
    bin_value: BinValue | None = None,
    nan_policy: NanPolicy = "raise",
) -> ReliabilityBins:
    """Per-bin (lower, upper, count, mean confidence, accuracy) for a reliability diagram.

    Args:
        confidences: [N] confidences in [0, 1] (higher = more confident).
        correct: [N] correctness, bool or 0/1.
        preset, n_bins, binning, closed, boundary, bin_value: as in
            :func:`entrolab.calibration.ece` (None keeps the preset's/default value).
        nan_policy: ``"raise"`` or ``"omit"`` (drop items with NaN).

    Returns:
        :class:`ReliabilityBins` over all bins, empty ones included (see ``.nonempty()``).
    """
    spec = resolve_spec(
        preset,
        n_bins=n_bins,
        binning=binning,
        closed=closed,
        boundary=boundary,
        bin_value=bin_value,
    )
    c, y = prepare({"confidences": confidences, "correct": correct}, nan_policy=nan_policy)
    check_unit_interval(c, "confidences")
    check_binary(y, "correct")
    return bin_statistics(c, y, spec)
