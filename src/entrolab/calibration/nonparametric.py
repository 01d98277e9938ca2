"""Non-parametric calibrators: isotonic regression (PAV) and histogram binning.

Same interface and conventions as :mod:`entrolab.calibration.calibrators` (scores: higher =
more confident, any finite reals; output confidences in [0, 1]).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from entrolab.calibration._validate import check_positive_int
from entrolab.calibration.calibrators import Calibrator
from entrolab.errors import EntrolabError

__all__ = ["HistogramBinning", "IsotonicCalibrator", "pav"]


def pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pool-adjacent-violators: the non-decreasing fit minimising ``Σ w_i (f_i − y_i)²``.

    Args:
        y: float64 [M], values in the order of increasing x. w: float64 [M], positive weights.

    Returns:
        float64 [M], the isotonic (non-decreasing) fit.
    """
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(y.tolist(), w.tolist(), strict=True):
        m, ww, sz = yi, wi, 1
        while means and means[-1] >= m:  # pool with the previous block while it violates
            pm, pw, ps = means.pop(), weights.pop(), sizes.pop()
            m = (pm * pw + m * ww) / (pw + ww)
            ww += pw
            sz += ps
        means.append(m)
        weights.append(ww)
        sizes.append(sz)
    return np.repeat(np.array(means), np.array(sizes))


class IsotonicCalibrator(Calibrator):
    """Isotonic regression of correctness on the score (Zadrozny & Elkan 2002).

    Fit: average the labels of tied scores, run :func:`pav` (non-decreasing) weighted by the
    tie counts. Transform: linear interpolation between the fitted points, clipped to the
    end values outside the fitted range; the same map as scikit-learn's
    ``IsotonicRegression(out_of_bounds="clip")``. Redundant interior points of constant runs
    are dropped (no effect on the map).
    """

    name = "isotonic"

    def __init__(self) -> None:
        super().__init__()
        self.x_: np.ndarray | None = None
        self.y_: np.ndarray | None = None

    def params(self) -> dict[str, Any]:
        return {}

    def _fit(self, s: np.ndarray, y: np.ndarray) -> None:
        ux, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
        mean_y = np.bincount(inv, weights=y) / counts
        fit = pav(mean_y, counts.astype(np.float64))
        keep = np.ones(fit.size, dtype=bool)
        if fit.size > 2:
            keep[1:-1] = (fit[1:-1] != fit[:-2]) | (fit[1:-1] != fit[2:])
        self.x_, self.y_ = ux[keep], fit[keep]

    def _transform(self, s: np.ndarray) -> np.ndarray:
        assert self.x_ is not None and self.y_ is not None
        return np.interp(s, self.x_, self.y_)

    def _state(self) -> dict[str, Any]:
        assert self.x_ is not None and self.y_ is not None
        return {"x": self.x_.tolist(), "y": self.y_.tolist()}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.x_ = np.asarray(state["x"], dtype=np.float64)
        self.y_ = np.asarray(state["y"], dtype=np.float64)


class HistogramBinning(Calibrator):
    """Histogram binning (Zadrozny & Elkan 2001): equal-mass bins of the score → accuracy.

    Fit: interior edges at the ``1/n_bins … (n_bins−1)/n_bins`` quantiles of the fitting
    scores (``np.quantile``, linear); a score goes to bin ``searchsorted(edges, s, "right")``
    (so bins are ``[e_{b−1}, e_b)``; scores beyond the fitted range fall in the outer bins).
    Each bin's confidence is the smoothed accuracy ``(k_b + m·p̄) / (n_b + m)`` with ``k_b``
    correct of ``n_b`` items, ``p̄`` the overall accuracy and ``m = prior_strength``
    pseudo-counts (a Beta prior centred on p̄; ``m = 0`` is the raw frequency). A bin left empty
    (tied scores) gets p̄. Not monotone in general; piecewise constant, so it creates ties.
    """

    name = "histogram"

    def __init__(self, n_bins: int = 10, prior_strength: float = 0.0) -> None:
        super().__init__()
        self.n_bins = check_positive_int(n_bins, "n_bins")
        if not (prior_strength >= 0.0 and math.isfinite(prior_strength)):
            raise EntrolabError(f"prior_strength must be ≥ 0, got {prior_strength!r}")
        self.prior_strength = float(prior_strength)
        self.edges_: np.ndarray | None = None
        self.values_: np.ndarray | None = None

    def params(self) -> dict[str, Any]:
        return {"n_bins": self.n_bins, "prior_strength": self.prior_strength}

    def _fit(self, s: np.ndarray, y: np.ndarray) -> None:
        edges = np.quantile(s, np.linspace(0.0, 1.0, self.n_bins + 1))[1:-1]
        idx = np.searchsorted(edges, s, side="right")
        n = np.bincount(idx, minlength=self.n_bins).astype(np.float64)
        k = np.bincount(idx, weights=y, minlength=self.n_bins)
        prior = float(y.mean())
        m = self.prior_strength
        denom = n + m
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(denom > 0, (k + m * prior) / denom, prior)
        self.edges_, self.values_ = edges, values

    def _transform(self, s: np.ndarray) -> np.ndarray:
        assert self.edges_ is not None and self.values_ is not None
        return self.values_[np.searchsorted(self.edges_, s, side="right")]

    def _state(self) -> dict[str, Any]:
        assert self.edges_ is not None and self.values_ is not None
        return {"edges": self.edges_.tolist(), "values": self.values_.tolist()}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.edges_ = np.asarray(state["edges"], dtype=np.float64)
        self.values_ = np.asarray(state["values"], dtype=np.float64)
