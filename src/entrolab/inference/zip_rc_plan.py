"""ZIP-RC planned pruning (Manvi et al. 2025, arXiv:2512.01457): at a decision point choose the
samples to keep *and* a future length bin at which every kept sample still unfinished will be
pruned, by the sampling utility of the joint (reward, remaining length) predictions.

The rule follows the official offline pruning code (``rohinmanvi/ZIP-RC``,
``src/zip_offline_prune_7.py`` @21e32aa: ``_modify_for_prune`` and ``_choose_action``):

* **Planned prune at length bin B** (:func:`plan_prune`): a sample that will be stopped once it
  reaches remaining-length bin B ends with reward ≈ 0 in bin B whenever it would have needed
  bin B or more: the mass of bins >= B moves to (the reward value nearest 0, bin B).
* **Objective** of keeping set K (finished samples are always kept) with plan B, active A =
  K ∩ unfinished::

      G = E[max_{i∈K} R_i] − λ_c · Σ_{i∈A} E[len_i] − λ_ℓ · E[max_{i∈A} len_i]

  with the kept samples' joints modified by the plan; len = *remaining* tokens (spent tokens
  are sunk), each bin standing for ``length_values``. The official code also rescales the
  token terms by an average sample length and can interpolate E[max R] towards E[mean R]
  (``selection_geom_alpha``); here λ carries the scale and the value term is E[max R]
  (their α = 1 default).
* **Search** (:func:`choose_action`): B ∈ {none, 1, …, L − 1} × keep sets that are the union
  of a prefix of the samples ordered by expected remaining length (ascending) and a prefix
  ordered by expected reward (descending); the best G wins, ties (within 1e-12) go to the
  larger keep set, then to the first candidate in that order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from entrolab.errors import EntrolabError

__all__ = ["choose_action", "expected_max", "plan_prune"]

_TOL = 1e-12


def expected_max(marginals: Any, values: Any) -> float:
    """E[max_i X_i] of independent discrete X_i: ``marginals`` [S, M] (rows sum to 1) over
    the shared support ``values`` [M] (any order). 0 for S = 0.

    Σ_b v_(b) · (Π_i F_i(v_(b)) − Π_i F_i(v_(b−1))), F_i the CDF on the sorted support."""
    m = np.asarray(marginals, dtype=np.float64)
    if m.size == 0 or m.shape[0] == 0:
        return 0.0
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    cdf = np.cumsum(m[:, order], axis=1).prod(axis=0)
    return float(np.dot(np.diff(cdf, prepend=0.0), v[order]))


def plan_prune(joint: Any, prune_bin: int | None, reward_values: Any) -> np.ndarray:
    """The joint [..., R, L] of a sample to be pruned when it reaches remaining-length bin
    ``prune_bin``: the mass of bins >= ``prune_bin`` moves to (reward value nearest 0,
    ``prune_bin``). ``None`` leaves it unchanged. Returns a new array (input not modified)."""
    p = np.array(joint, dtype=np.float64)
    if prune_bin is None:
        return p
    n_len = p.shape[-1]
    if not 0 <= int(prune_bin) < n_len:
        raise EntrolabError(f"prune_bin must be in [0, {n_len - 1}] or None, got {prune_bin}")
    zero = int(np.argmin(np.abs(np.asarray(reward_values, dtype=np.float64))))
    moved = p[..., prune_bin:].sum(axis=(-2, -1))
    p[..., prune_bin:] = 0.0
    p[..., zero, prune_bin] += moved
    return p


def choose_action(
    joint: Any,
    reward_values: Any,
    length_values: Any,
    *,
    finished: Any = None,
    pruned: Any = None,
    lam_c: float = 0.0,
    lam_l: float = 0.0,
    future: bool = True,
) -> tuple[list[int], int | None, float]:
    """The keep set and planned prune bin with the highest objective G (module docstring).

    Args:
        joint: [S, R, L] joint (reward bin, remaining-length bin) prediction per sample.
        reward_values: [R] reward of each reward bin; length_values: [L] remaining tokens of
            each length bin.
        finished: [S] bool, samples already finished (always kept, no token cost).
        pruned: [S] bool, samples pruned earlier (never kept).
        lam_c, lam_l: cost per expected remaining token (sum) and per token of the longest.
        future: also search the planned prune bin (False: immediate pruning only, B = none).

    Returns:
        (sorted kept indices, planned prune bin or None, G). With every sample pruned:
        ([], None, -inf).
    """
    p = np.asarray(joint, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] == 0:
        raise EntrolabError(f"joint must be [S, R, L] with S >= 1, got shape {p.shape}")
    s, n_r, n_len = p.shape
    rv = np.asarray(reward_values, dtype=np.float64)
    lv = np.asarray(length_values, dtype=np.float64)
    if rv.shape != (n_r,) or lv.shape != (n_len,):
        raise EntrolabError(f"need {n_r} reward values and {n_len} length values")
    done = np.zeros(s, bool) if finished is None else np.asarray(finished, bool)
    gone = np.zeros(s, bool) if pruned is None else np.asarray(pruned, bool)
    alive = np.flatnonzero(~gone)
    if alive.size == 0:
        return [], None, float("-inf")
    e_r = p.sum(2) @ rv  # [S] expected reward
    e_len = p.sum(1) @ lv  # [S] expected remaining tokens
    by_len = alive[np.argsort(e_len[alive], kind="stable")]
    by_reward = alive[np.argsort(-e_r[alive], kind="stable")]
    keep_done = done & ~gone
    best: tuple[float, int, np.ndarray, int | None] = (float("-inf"), -1, np.zeros(s, bool), None)
    seen: set[tuple[int | None, bytes]] = set()
    for b in [None, *range(1, n_len)] if future else [None]:
        q = plan_prune(p, b, rv)
        r_marg, l_marg = q.sum(2), q.sum(1)
        for k1 in range(len(by_len) + 1):
            for k2 in range(len(by_reward) + 1):
                keep = keep_done.copy()
                keep[by_len[:k1]] = True
                keep[by_reward[:k2]] = True
                key = (b, keep.tobytes())
                if key in seen:
                    continue
                seen.add(key)
                active = keep & ~done
                g = (
                    expected_max(r_marg[keep], rv)
                    - lam_c * float((l_marg[active] @ lv).sum())
                    - lam_l * expected_max(l_marg[active], lv)
                )
                size = int(keep.sum())
                if g > best[0] + _TOL or (abs(g - best[0]) <= _TOL and size > best[1]):
                    best = (g, size, keep, b)
    g, _, keep, b = best
    return np.flatnonzero(keep).tolist(), b, g
