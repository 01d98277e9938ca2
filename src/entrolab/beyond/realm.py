"""REALM (Hagenow and Shah, RA-L 2025, arXiv:2504.09243): which kind of human help would most
reduce a stochastic policy's action entropy — from the policy's own forecast samples.

Input: rollouts A [N, H, d] (N forecasts of an H-step action chunk, d action dims), action
bounds, human noise variance β. Per step t the entropy estimate is
h(A_t) = Σ_j max(ĥ(A[:, t, j]), h_min / d), ĥ = the Ebrahimi spacing estimator per marginal
(:func:`entrolab.signals.sample_entropy`; correlations between dimensions are ignored, as in
the reference code). Bounds: h_max = Σ_j log(max_j − min_j) (uniform over the action box) and
h_min = (d/2)(1 + log 2π) + (d/2) log β (a Gaussian of covariance β I: what a human pins down).

Expected entropy after each mechanism (:data:`MECHANISMS`):

* ``none`` — Σ_t h(A_t);
* ``teleop`` — H · h_min (the human specifies everything up to their own noise);
* ``discrete`` — k-means (k = 2) on whole flattened rollouts; Σ_c (n_c/N) Σ_t h(A_t | c), a
  cluster with < 5 rollouts counting as h_min per step (the human picks the right mode);
* ``corrections`` — per t, the top-k principal coordinates of the centred A_t are replaced by
  N(0, β) draws (the human fixes the k dominant directions), then h is re-estimated.

Score L(m) = (H h_max − Σ_t h_t(m)) / (H (h_max − h_min)) ∈ [0, 1] (higher = less residual
uncertainty); value V(m) = α_m L(m) − λ · effort(m) / (H d) with α = (1, 1 − 3δ, 1 − δ, 1 − 2δ)
for (none, teleop, discrete, corrections), δ = 1e-4 (the reference code: the order only breaks
ties) and effort counts (0, H d, k, k H) from the reference code. λ = 0 is the reference
behaviour; the paper's own penalisation formula was not retrieved, so λ > 0 is our addition
(an explicit price per human input, in units of normalised entropy). The choice is argmax V.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.cluster.vq import kmeans2

from entrolab.errors import EntrolabError
from entrolab.signals import sample_entropy

__all__ = [
    "MECHANISMS",
    "RealmChoice",
    "entropy_bounds",
    "mechanism_values",
    "post_entropies",
    "realm_choose",
    "step_entropy",
]

MECHANISMS = ("none", "teleop", "discrete", "corrections")


def _check(rollouts: Any) -> np.ndarray:
    a = np.asarray(rollouts, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] < 5:
        raise EntrolabError(f"rollouts must be [N >= 5, H, d], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise EntrolabError("rollouts contain NaN/inf; check the policy's samples")
    return a


def entropy_bounds(low: Any, high: Any, beta: float) -> tuple[float, float]:
    """(h_min, h_max) per step, nats, for an action box [low, high]^d and human variance β."""
    lo, hi = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    if lo.shape != hi.shape or lo.ndim != 1 or np.any(hi <= lo):
        raise EntrolabError("action bounds must be [d] arrays with high > low")
    if not beta > 0:
        raise EntrolabError(f"beta (human noise variance) must be > 0, got {beta!r}")
    d = lo.size
    h_min = 0.5 * d * (1 + math.log(2 * math.pi)) + 0.5 * d * math.log(beta)
    return h_min, float(np.sum(np.log(hi - lo)))


def step_entropy(a_t: np.ndarray, h_min: float) -> float:
    """Σ_j max(Ebrahimi ĥ(A_t[:, j]), h_min / d) for samples a_t [N, d]."""
    d = a_t.shape[1]
    h = np.asarray(sample_entropy(a_t, "ebrahimi"), dtype=np.float64).reshape(d)
    return float(np.maximum(h, h_min / d).sum())


def post_entropies(
    rollouts: Any,
    h_min: float,
    *,
    beta: float,
    k_discrete: int = 2,
    k_corrections: int = 1,
    min_cluster: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Expected Σ_t h_t after each mechanism (nats), for rollouts [N, H, d]."""
    a = _check(rollouts)
    n, horizon, d = a.shape
    rng = np.random.default_rng(seed)
    none = sum(step_entropy(a[:, t], h_min) for t in range(horizon))
    flat = a.reshape(n, -1)
    if np.allclose(flat, flat[0]):
        labels = np.zeros(n, dtype=int)
    else:
        _, labels = kmeans2(flat, k_discrete, seed=int(rng.integers(2**31)), minit="++")
    disc = 0.0
    for c in np.unique(labels):
        sub = a[labels == c]
        h_c = (
            horizon * h_min
            if len(sub) < min_cluster
            else sum(step_entropy(sub[:, t], h_min) for t in range(horizon))
        )
        disc += len(sub) / n * h_c
    corr = 0.0
    k = min(k_corrections, d)
    for t in range(horizon):
        x = a[:, t] - a[:, t].mean(0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        coords = x @ vt.T
        coords[:, :k] = rng.normal(0.0, math.sqrt(beta), (n, k))
        corr += step_entropy(coords @ vt, h_min)
    return {"none": none, "teleop": horizon * h_min, "discrete": disc, "corrections": corr}


@dataclass(frozen=True)
class RealmChoice:
    """mechanism: the argmax; scores: L(m) per mechanism; values: α_m L(m); entropies: Σ_t h."""

    mechanism: str
    scores: dict[str, float]
    values: dict[str, float]
    entropies: dict[str, float]


def mechanism_values(
    scores: dict[str, float],
    horizon: int,
    d: int,
    *,
    delta: float = 1e-4,
    effort_weight: float = 0.0,
    k_discrete: int = 2,
    k_corrections: int = 1,
) -> dict[str, float]:
    """V(m) = α_m L(m) − λ effort(m) / (H d) for scores L (see the module doc)."""
    alpha = dict(zip(MECHANISMS, (1.0, 1 - 3 * delta, 1 - delta, 1 - 2 * delta), strict=True))
    effort = dict(
        zip(MECHANISMS, (0, horizon * d, k_discrete, k_corrections * horizon), strict=True)
    )
    return {m: alpha[m] * scores[m] - effort_weight * effort[m] / (horizon * d) for m in MECHANISMS}


def realm_choose(
    rollouts: Any,
    low: Any,
    high: Any,
    *,
    beta: float = 1e-6,
    delta: float = 1e-4,
    effort_weight: float = 0.0,
    seed: int = 0,
) -> RealmChoice:
    """Pick the assistance mechanism with the highest effort-penalised value."""
    a = _check(rollouts)
    h_min, h_max = entropy_bounds(low, high, beta)
    if a.shape[2] != np.asarray(low).size:
        raise EntrolabError(f"rollouts have d={a.shape[2]} but the bounds {np.asarray(low).size}")
    if h_max <= h_min:
        raise EntrolabError("h_max <= h_min: the action box is smaller than the human's noise")
    ent = post_entropies(a, h_min, beta=beta, seed=seed)
    horizon, d = a.shape[1], a.shape[2]
    scores = {m: (horizon * h_max - ent[m]) / (horizon * (h_max - h_min)) for m in MECHANISMS}
    values = mechanism_values(scores, horizon, d, delta=delta, effort_weight=effort_weight)
    return RealmChoice(max(MECHANISMS, key=lambda m: values[m]), scores, values, ent)
