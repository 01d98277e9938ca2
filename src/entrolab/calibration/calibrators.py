"""Calibrators: fit a monotone map from a score to a confidence on one split, apply it to another.

Input ``scores`` [N]: HIGHER = MORE CONFIDENT (negate an uncertainty first); ``correct`` [N]:
bool or 0/1. Output: confidences in [0, 1], float64 [N]. Scope: the map is global (one map for
the whole dataset, fitted on every item of the fitting split, equally weighted).

Common interface: ``.fit(scores, correct) -> self``, ``.transform(scores) -> np.ndarray``,
``.fit_transform``, ``.to_dict()`` / ``Calibrator.from_dict()`` (plain JSON, no pickle),
``.clone()`` (unfitted copy with the same settings). Calling ``transform`` before ``fit``
raises :class:`~entrolab.errors.EntrolabError`.

This module holds the base class and the parametric calibrators (temperature, Platt); the
non-parametric ones (isotonic, histogram binning) are in
:mod:`entrolab.calibration.nonparametric`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, logit

from entrolab.calibration._validate import (
    NanPolicy,
    check_binary,
    check_finite,
    check_positive_int,
    check_unit_interval,
    prepare,
)
from entrolab.errors import EntrolabError, UnknownNameError

__all__ = [
    "CALIBRATOR_CLASSES",
    "Calibrator",
    "PlattScaling",
    "TemperatureScaling",
    "calibrator_from_dict",
]

_FORMAT = 1

#: name → class of every named calibrator (filled as subclasses are defined; the public
#: registry with summaries is ``entrolab.calibration.CALIBRATORS``).
CALIBRATOR_CLASSES: dict[str, type[Calibrator]] = {}


class Calibrator:
    """Base class: validation, the fitted check and JSON round-trip. Subclasses implement
    ``_fit(s, y)``, ``_transform(s)``, ``params()`` and ``_state()`` / ``_load_state()``."""

    name: ClassVar[str] = ""
    #: whether scores must lie in [0, 1] (probability-like), else any finite real.
    unit_scores: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:  # a named calibrator becomes loadable by calibrator_from_dict
            CALIBRATOR_CLASSES[cls.name] = cls

    def __init__(self) -> None:
        self._fitted = False

    # -- subclass hooks -------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable)."""
        raise NotImplementedError

    def _fit(self, s: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _transform(self, s: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    # -- public API -----------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """True once :meth:`fit` (or :meth:`from_dict` with a state) has run."""
        return self._fitted

    def _check_scores(self, s: np.ndarray) -> None:
        if self.unit_scores:
            check_unit_interval(s, "scores")
        else:
            check_finite(s, "scores")

    def fit(self, scores: Any, correct: Any, *, nan_policy: NanPolicy = "raise") -> Calibrator:
        """Fit on ``scores`` [N] (higher = more confident) and 0/1 ``correct`` [N]; returns self."""
        s, y = prepare({"scores": scores, "correct": correct}, nan_policy=nan_policy)
        self._check_scores(s)
        check_binary(y, "correct")
        self._fit(s, y)
        self._fitted = True
        return self

    def transform(self, scores: Any) -> np.ndarray:
        """Confidences in [0, 1] for ``scores`` [M] (float64 [M]); NaN scores raise."""
        if not self._fitted:
            raise EntrolabError(
                f"{type(self).__name__} is not fitted; call .fit(scores, correct) on a "
                "calibration split first (or load a fitted one with Calibrator.from_dict)"
            )
        (s,) = prepare({"scores": scores})
        self._check_scores(s)
        return np.clip(self._transform(s), 0.0, 1.0)

    def fit_transform(self, scores: Any, correct: Any) -> np.ndarray:
        """``fit(scores, correct).transform(scores)`` (in-sample: optimistic for evaluation)."""
        return self.fit(scores, correct).transform(scores)

    def clone(self) -> Calibrator:
        """A new, unfitted calibrator with the same settings."""
        return type(self)(**self.params())

    def to_dict(self) -> dict[str, Any]:
        """``{"calibrator": name, "format": 1, "params": {...}, "state": {...} | None}``."""
        return {
            "calibrator": self.name,
            "format": _FORMAT,
            "params": self.params(),
            "state": self._state() if self._fitted else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        """Rebuild a calibrator written by :meth:`to_dict` (any subclass, by its name)."""
        return calibrator_from_dict(data)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args}){'' if self._fitted else ' [unfitted]'}"


def _nll_logistic_grad(eta_scale: float, z: np.ndarray, y: np.ndarray) -> float:
    """d/da of Σ [softplus(a z) − y a z] at a = eta_scale: Σ (σ(a z) − y) z."""
    return float(np.sum((expit(eta_scale * z) - y) * z))


class TemperatureScaling(Calibrator):
    """Temperature scaling for probability-like scores: ``c = σ(logit(s) / T)``.

    Guo et al. 2017, "On Calibration of Modern Neural Networks" (binary form). ``s`` must be in
    [0, 1]; exact 0 and 1 are clipped to ``[eps, 1 − eps]`` before the logit. T > 0 minimises
    the mean NLL on the fitting split; the NLL is convex in ``1/T``, so the optimum is the root
    of its derivative (found by ``brentq`` on ``log(1/T)``), kept within ``t_bounds``: if the
    scores carry no signal (or are anti-informative) T goes to the upper bound (c → ½); if
    they separate the classes perfectly it goes to the lower bound. Monotone: AUROC unchanged.

    Args:
        eps: clipping for exact 0/1 scores (logit(1 − 1e-6) ≈ 13.8).
        t_bounds: (T_min, T_max).
    """

    name = "temperature"
    unit_scores = True

    def __init__(self, eps: float = 1e-6, t_bounds: tuple[float, float] = (1e-3, 1e3)) -> None:
        super().__init__()
        if not 0.0 < eps < 0.5:
            raise EntrolabError(f"eps must be in (0, 0.5), got {eps!r}")
        lo, hi = (float(t) for t in t_bounds)
        if not 0.0 < lo < hi < math.inf:
            raise EntrolabError(f"t_bounds must be 0 < T_min < T_max < inf, got {t_bounds!r}")
        self.eps, self.t_bounds = float(eps), (lo, hi)
        self.temperature: float | None = None

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "t_bounds": list(self.t_bounds)}

    def _logit(self, s: np.ndarray) -> np.ndarray:
        return logit(np.clip(s, self.eps, 1.0 - self.eps))

    def _fit(self, s: np.ndarray, y: np.ndarray) -> None:
        z = self._logit(s)
        if not np.any(z):
            self.temperature = 1.0  # every score is ½: T has no effect
            return
        t_lo, t_hi = self.t_bounds

        def grad(log_a: float) -> float:
            return _nll_logistic_grad(math.exp(log_a), z, y)

        lo, hi = -math.log(t_hi), -math.log(t_lo)  # log(1/T) range
        if grad(lo) >= 0.0:
            self.temperature = t_hi
        elif grad(hi) <= 0.0:
            self.temperature = t_lo
        else:
            log_a = brentq(grad, lo, hi, xtol=1e-13, rtol=4 * np.finfo(float).eps)
            self.temperature = math.exp(-log_a)

    def _transform(self, s: np.ndarray) -> np.ndarray:
        assert self.temperature is not None
        return expit(self._logit(s) / self.temperature)

    def _state(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.temperature = float(state["temperature"])


class PlattScaling(Calibrator):
    """Platt scaling: ``c = σ(a·s + b)`` fitted by maximum likelihood (logistic regression).

    Platt 1999, "Probabilistic Outputs for Support Vector Machines". Any finite real scores.
    With ``target_smoothing=True`` (default, as Platt and scikit-learn's
    ``CalibratedClassifierCV(method="sigmoid")``) the 0/1 targets become
    ``(N₊ + 1) / (N₊ + 2)`` and ``1 / (N₋ + 2)``, which keeps (a, b) finite when the scores
    separate the classes. With ``False`` it is plain unregularised logistic regression on one
    feature; separable data then raise. Fitting: Newton's method with backtracking on
    standardised scores, to a gradient below ``tol``.
    """

    name = "platt"

    def __init__(self, target_smoothing: bool = True, max_iter: int = 100, tol: float = 1e-12):
        super().__init__()
        self.target_smoothing = bool(target_smoothing)
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.tol = float(tol)
        self.a: float | None = None
        self.b: float | None = None

    def params(self) -> dict[str, Any]:
        return {
            "target_smoothing": self.target_smoothing,
            "max_iter": self.max_iter,
            "tol": self.tol,
        }

    def _fit(self, s: np.ndarray, y: np.ndarray) -> None:
        pos, neg = s[y == 1.0], s[y == 0.0]
        if self.target_smoothing:
            t = np.where(y == 1.0, (pos.size + 1.0) / (pos.size + 2.0), 1.0 / (neg.size + 2.0))
        elif pos.size == 0 or neg.size == 0:
            raise EntrolabError(self._separable_msg())
        else:
            t = y
        mu, sd = float(np.mean(s)), float(np.std(s))
        if sd == 0.0:  # constant scores: only the intercept is identifiable
            self.a, self.b = 0.0, float(logit(np.mean(t)))
            return
        if not self.target_smoothing and (neg.max() <= pos.min() or pos.max() <= neg.min()):
            raise EntrolabError(self._separable_msg())
        x = (s - mu) / sd
        theta = np.array([0.0, float(logit(np.mean(t)))])

        def loss(th: np.ndarray) -> float:
            eta = th[0] * x + th[1]
            return float(np.sum(np.logaddexp(0.0, eta) - t * eta))

        cur = loss(theta)
        for _ in range(self.max_iter):
            p = expit(theta[0] * x + theta[1])
            r = p - t
            g = np.array([r @ x, r.sum()]) / x.size
            if np.max(np.abs(g)) < self.tol:
                break
            w = p * (1.0 - p)
            h = np.array([[w @ (x * x), w @ x], [w @ x, w.sum()]]) / x.size
            try:
                step = np.linalg.solve(h + 1e-14 * np.eye(2), g)
            except np.linalg.LinAlgError:
                raise EntrolabError(self._separable_msg()) from None
            decrement = float(g @ step)
            if decrement < 1e-24:  # Newton decrement: at the optimum to float precision
                break
            if decrement < 1e-8:  # quadratic-convergence region: full steps, no line search
                theta = theta - step
                cur = loss(theta)
                continue
            lr = 1.0
            while True:
                cand = theta - lr * step
                new = loss(cand)
                if new <= cur - 1e-4 * lr * decrement * x.size:
                    break
                lr *= 0.5
                if lr < 1e-12:  # no decrease possible: rounding-level optimum
                    break
            if lr < 1e-12:
                break
            theta, cur = cand, new
        else:
            raise EntrolabError(self._separable_msg())
        self.a = float(theta[0] / sd)
        self.b = float(theta[1] - theta[0] * mu / sd)

    @staticmethod
    def _separable_msg() -> str:
        return (
            "Platt scaling did not converge: the scores separate correct from wrong items "
            "(or one class is missing), so the maximum-likelihood slope is infinite; use "
            "PlattScaling(target_smoothing=True) or more data"
        )

    def _transform(self, s: np.ndarray) -> np.ndarray:
        assert self.a is not None and self.b is not None
        return expit(self.a * s + self.b)

    def _state(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.a, self.b = float(state["a"]), float(state["b"])


def calibrator_from_dict(data: dict[str, Any]) -> Calibrator:
    """Rebuild a calibrator from :meth:`Calibrator.to_dict` output (fitted or not)."""
    if not isinstance(data, dict) or "calibrator" not in data:
        raise EntrolabError(
            "not a calibrator dict: expected the output of Calibrator.to_dict() with keys "
            "'calibrator', 'format', 'params', 'state'"
        )
    name = data["calibrator"]
    if name not in CALIBRATOR_CLASSES:
        raise UnknownNameError(
            f"unknown calibrator {name!r}. Known calibrators: {', '.join(CALIBRATOR_CLASSES)}"
        )
    if data.get("format", _FORMAT) != _FORMAT:
        raise EntrolabError(f"unsupported calibrator format {data.get('format')!r}; expected 1")
    cal = CALIBRATOR_CLASSES[name](**dict(data.get("params") or {}))
    state = data.get("state")
    if state is not None:
        try:
            cal._load_state(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise EntrolabError(f"corrupt {name} calibrator state: {exc!r}") from None
        cal._fitted = True
    return cal
