"""Policy Cliff (Xu 2025, arXiv:2507.20150): the reward → optimal-policy map jumps at ties, and
entropy regularisation makes it Lipschitz.

For rewards r [..., A] over A actions (per state, or per prompt over candidate responses):

* :func:`soft_policy` — π_τ(r) = softmax(r / τ); with a reference, π ∝ π_ref · exp(r / τ) (the
  KL-regularised optimum, τ = β). τ = 0 is the limit: uniform over the exact argmax set.
* :func:`policy_sensitivity` — the largest ‖π_τ(r + d) − π_τ(r)‖₁ / ‖d‖_∞ over random small
  perturbations d (empirical Lipschitz constant) beside the bound 1/τ (‖Jacobian‖ of softmax:
  (1/τ)(diag π − ππᵀ), whose ∞→1 norm is at most 1/τ).
* :func:`tie_mass` — how many actions are within ``tol`` of the best (≥ 2 = degenerate: a cliff
  is one reward perturbation of size ``tol`` away).
* :func:`regularisation_cost` — max r − E_π r, at most τ log A.
* :func:`soft_tree_policy` — soft value iteration on a deterministic tree whose leaves are the
  A^D token sequences of length D: V(s) = τ log Σ_a exp(V(child)/τ); the induced distribution
  over sequences is softmax(r / τ) (so sequence-level degeneracy behaves like the bandit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import softmax

from entrolab.errors import EntrolabError

__all__ = [
    "Sensitivity",
    "policy_sensitivity",
    "regularisation_cost",
    "soft_policy",
    "soft_tree_policy",
    "tie_mass",
]


def _rewards(r: Any) -> np.ndarray:
    x = np.asarray(r, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise EntrolabError(f"rewards must be [..., A] with A >= 1 actions, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise EntrolabError("rewards contain NaN/inf")
    return x


def soft_policy(r: Any, tau: float, ref: Any = None) -> np.ndarray:
    """π_τ(r) [..., A]: softmax(r / τ) (× ``ref``, renormalised); τ = 0 → uniform on argmax."""
    x = _rewards(r)
    if not tau >= 0 or math.isinf(tau):
        raise EntrolabError(f"tau must be a finite number >= 0, got {tau!r}")
    logref = 0.0
    if ref is not None:
        p = np.asarray(ref, dtype=np.float64)
        if p.shape != x.shape or (p < 0).any() or not np.allclose(p.sum(-1), 1.0):
            raise EntrolabError("ref must be a distribution with the rewards' shape [..., A]")
        with np.errstate(divide="ignore"):
            logref = np.log(p)
    if tau == 0:
        if ref is not None:
            x = np.where(np.asarray(ref) > 0, x, -np.inf)
        best = x == x.max(-1, keepdims=True)
        return best / best.sum(-1, keepdims=True)
    return softmax(x / tau + logref, axis=-1)


@dataclass(frozen=True)
class Sensitivity:
    """empirical: max ‖Δπ‖₁ / ‖Δr‖_∞ over the draws; bound: 1/τ (inf at τ = 0)."""

    empirical: float
    bound: float


def policy_sensitivity(
    r: Any, tau: float, *, scale: float = 1e-3, draws: int = 200, seed: int = 0
) -> Sensitivity:
    """Empirical Lipschitz constant of r ↦ π_τ(r) at ``r`` [A] from random perturbations
    d ~ U[−scale, scale]^A (plus the tie-breaking direction ±scale on the top-2 actions)."""
    x = _rewards(r)
    if x.ndim != 1:
        raise EntrolabError(f"policy_sensitivity takes one reward vector [A], got {x.shape}")
    rng = np.random.default_rng(seed)
    dirs = rng.uniform(-scale, scale, (int(draws), x.size))
    if x.size >= 2:
        top = np.argsort(-x)[:2]
        d = np.zeros(x.size)
        d[top] = (scale, -scale)
        dirs = np.vstack([dirs, d, -d])
    p0 = soft_policy(x, tau)
    ratios = [
        np.abs(soft_policy(x + d, tau) - p0).sum() / np.abs(d).max() for d in dirs if np.any(d)
    ]
    return Sensitivity(float(max(ratios)), math.inf if tau == 0 else 1.0 / tau)


def tie_mass(r: Any, tol: float = 0.0) -> np.ndarray:
    """Number of actions with r_a ≥ max r − tol, per row: [..., A] → int [...]."""
    x = _rewards(r)
    if not tol >= 0:
        raise EntrolabError(f"tol must be >= 0, got {tol!r}")
    return (x >= x.max(-1, keepdims=True) - tol).sum(-1)


def regularisation_cost(r: Any, tau: float) -> np.ndarray:
    """max r − E_{π_τ} r per row (≥ 0, ≤ τ log A): the reward given up for stability."""
    x = _rewards(r)
    return x.max(-1) - (soft_policy(x, tau) * x).sum(-1)


def soft_tree_policy(
    leaf_rewards: Any, branching: int, tau: float
) -> tuple[list[np.ndarray], np.ndarray]:
    """Soft value iteration on a full tree with ``branching`` actions per step.

    Args:
        leaf_rewards: [A^D] rewards of the sequences in lexicographic order.
        tau: temperature τ > 0.
    Returns:
        (policies, sequence_probs): policies[t] is [A^t, A] (the policy at each depth-t node),
        sequence_probs [A^D] the probability of each sequence under them.
    """
    r = _rewards(leaf_rewards)
    if r.ndim != 1:
        raise EntrolabError(f"leaf_rewards must be [A^D], got {r.shape}")
    depth = round(math.log(r.size, branching)) if branching >= 2 else -1
    if branching < 2 or branching**depth != r.size:
        raise EntrolabError(f"{r.size} leaves is not a power of branching={branching}")
    if not tau > 0:
        raise EntrolabError(f"tau must be > 0, got {tau!r}")
    values, policies = r, []
    for _ in range(depth):
        q = values.reshape(-1, branching)
        policies.append(softmax(q / tau, axis=-1))
        values = tau * np.log(np.exp((q - q.max(-1, keepdims=True)) / tau).sum(-1)) + q.max(-1)
    policies.reverse()
    probs = np.ones(1)
    for pol in policies:
        probs = (probs[:, None] * pol).reshape(-1)
    return policies, probs
