"""α-Rank (Omidshafiei et al. 2019): rank strategies by the stationary distribution of an
evolutionary Markov chain over pure strategy profiles.

Payoff tables follow OpenSpiel's ``alpharank.compute`` convention:

* single population (symmetric 2-player game): ``[M]`` with M [S, S], M[r, s] = payoff of r
  against s; states are the S strategies; η = 1 / (S − 1);
* K populations: K arrays of shape [S_1, …, S_K], table k = population k's payoff; states are
  the P = Π S_k profiles in C order (the last population varies fastest); moves change one
  population's strategy; η = 1 / Σ_k (S_k − 1).

Transition s → σ has probability η · ρ(s → σ) with the fixation probability of a mutant with
payoff gain Δ, selection intensity α and population size m:
ρ = (1 − e^{−αΔ}) / (1 − e^{−mαΔ}) (1/m when |αΔ| < 1e-14), evaluated in log space so large
α·Δ never overflows (OpenSpiel's direct form returns NaN there). Single population: Δ =
M[σ, s] − M[s, σ] (local selection, OpenSpiel's default) or, non-local, the finite-population
fitness product formula. α → ∞ (:func:`alpharank` with ``alpha=math.inf``): ρ·η = η(1 − ε) for a
strictly better move, η ε for a worse one, η/2 for a tie. π solves πC = π, Σπ = 1 (GTH
elimination (accurate when the chain is nearly reducible), else least squares; never a general
eigendecomposition; the chain must have exactly one closed
class, which is checked).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.special import logsumexp

from entrolab.errors import EntrolabError

__all__ = ["AlphaRank", "alpharank", "check_payoff_tables", "fixation_probability", "sweep_alpha"]


def check_payoff_tables(payoff_tables: Sequence[Any]) -> list[np.ndarray]:
    """Validate and convert to float64: one square table, or K tables of K-dim shape."""
    if isinstance(payoff_tables, np.ndarray):
        raise EntrolabError(
            "payoff_tables must be a list of arrays (one per population), e.g. [M] for a "
            "symmetric game; got a bare array"
        )
    tables = [np.asarray(t, dtype=np.float64) for t in payoff_tables]
    if not tables:
        raise EntrolabError("payoff_tables is empty; give [M] or one table per population")
    k = len(tables)
    for i, t in enumerate(tables):
        n_missing = int(np.isnan(t).sum())
        if n_missing:
            first = tuple(int(j) for j in np.argwhere(np.isnan(t))[0])
            raise EntrolabError(
                f"payoff table {i} has {n_missing} missing (NaN) entries, first at profile "
                f"{first}; play those matches (or drop the strategies) before ranking"
            )
        if not np.isfinite(t).all():
            raise EntrolabError(f"payoff table {i} contains inf")
    if k == 1:
        if tables[0].ndim != 2 or tables[0].shape[0] != tables[0].shape[1]:
            raise EntrolabError(
                f"a single-population table must be square [S, S], got {tables[0].shape}"
            )
        return tables
    shape = tables[0].shape
    if len(shape) != k or any(t.shape != shape for t in tables):
        raise EntrolabError(
            f"{k} populations need {k} tables of one {k}-dim shape [S_1, …, S_{k}], got "
            f"{[t.shape for t in tables]}"
        )
    return tables


def _log_rho_closed(u: np.ndarray, m: int) -> np.ndarray:
    """log ρ for ρ = (1 − e^{−u}) / (1 − e^{−mu}), elementwise, stable for any u."""
    u = np.asarray(u, dtype=np.float64)
    out = np.full(u.shape, -math.log(m))
    pos, neg = u > 1e-14, u < -1e-14
    up = u[pos]
    out[pos] = np.log(-np.expm1(-up)) - np.log(-np.expm1(-m * up))
    v = -u[neg]  # (e^v − 1)/(e^{mv} − 1) = e^{(1−m)v} (1 − e^{−v})/(1 − e^{−mv})
    out[neg] = (1 - m) * v + np.log(-np.expm1(-v)) - np.log(-np.expm1(-m * v))
    return out


def fixation_probability(gain: float | np.ndarray, alpha: float, m: int) -> np.ndarray:
    """ρ(Δ) = (1 − e^{−αΔ}) / (1 − e^{−mαΔ}) (1/m at Δ = 0), computed in log space."""
    return np.exp(_log_rho_closed(alpha * np.asarray(gain, dtype=np.float64), m))


def _log_rho_nonlocal(mat: np.ndarray, r: int, s: int, alpha: float, m: int) -> float:
    """Finite-population (non-local) fixation of r in a population of s, 2-player symmetric.

    f_r(p) = ((p − 1) M[r, r] + (m − p) M[r, s]) / (m − 1) with p r-players,
    f_s(q) = ((q − 1) M[s, s] + (m − q) M[s, r]) / (m − 1) with q = m − p s-players;
    ρ = 1 / Σ_{l=0}^{m−1} Π_{p=1}^{l} e^{−α (f_r(p) − f_s(m − p))}."""
    p = np.arange(1, m)
    q = m - p
    f_r = ((p - 1) * mat[r, r] + (m - p) * mat[r, s]) / (m - 1)
    f_s = ((q - 1) * mat[s, s] + (m - q) * mat[s, r]) / (m - 1)
    cum = np.concatenate([[0.0], np.cumsum(-alpha * (f_r - f_s))])
    return float(-logsumexp(cum))


@dataclass(frozen=True)
class AlphaRank:
    """α-Rank result.

    Attributes:
        pi: [P] stationary distribution over profiles (sums to 1).
        profiles: [P, K] int strategy index of each population in each profile.
        transitions: [P, P] the Markov matrix C (rows sum to 1).
        strategies: (S_1, …, S_K).
    """

    pi: np.ndarray
    profiles: np.ndarray
    transitions: np.ndarray
    strategies: tuple[int, ...]

    def ranking(self) -> list[int]:
        """Profile indices by decreasing π (ties keep index order)."""
        return [int(i) for i in np.argsort(-self.pi, kind="stable")]

    def marginals(self) -> list[np.ndarray]:
        """Per population k, the π mass of each of its strategies ([S_k] each)."""
        return [
            np.bincount(self.profiles[:, k], weights=self.pi, minlength=s)
            for k, s in enumerate(self.strategies)
        ]


def _stationary(c: np.ndarray) -> np.ndarray:
    """π with πC = π, Σπ = 1 (least squares). Unique iff the chain has exactly one closed
    communicating class (an absorbing sink is fine: α → large makes worse moves underflow)."""
    n = c.shape[0]
    n_comp, label = connected_components(c > 0, directed=True, connection="strong")
    leaves = set(range(n_comp))
    rows, cols = np.nonzero(c > 0)
    leaves -= {int(label[i]) for i, j in zip(rows, cols, strict=True) if label[i] != label[j]}
    if len(leaves) != 1:
        raise EntrolabError(
            f"the α-Rank chain has {len(leaves)} closed classes, so no unique stationary "
            "distribution (transition probabilities underflowed to 0): lower alpha or m, or use "
            "alpha=inf with eps > 0"
        )
    pi = _gth(c)
    if pi is not None and np.isfinite(pi).all():
        return pi
    a = np.vstack([c.T - np.eye(n), np.ones((1, n))])
    b = np.zeros(n + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def _gth(c: np.ndarray) -> np.ndarray | None:
    """Grassmann–Taksar–Heyman elimination: π of an irreducible chain with high relative
    accuracy (no subtractions), even when some transitions are ~1e-40. None if a pivot is 0."""
    p = c.copy()
    n = p.shape[0]
    for k in range(n - 1, 0, -1):
        s = p[k, :k].sum()
        if not s > 1e-290:  # 0 or so small that the division overflows: use least squares
            return None
        p[:k, k] /= s
        p[:k, :k] += np.outer(p[:k, k], p[k, :k])
    pi = np.zeros(n)
    pi[0] = 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, n):
            pi[k] = pi[:k] @ p[:k, k]
        return pi / pi.sum()


def alpharank(
    payoff_tables: Sequence[Any],
    *,
    alpha: float = 100.0,
    m: int = 50,
    local_selection: bool = True,
    eps: float = 0.01,
) -> AlphaRank:
    """α-Rank of a single- or multi-population game (see the module doc for conventions).

    Args:
        payoff_tables: ``[M]`` (symmetric game, M [S, S]) or K tables [S_1, …, S_K].
        alpha: selection intensity α > 0, or ``math.inf`` for the α → ∞ limit.
        m: population size (≥ 2).
        local_selection: single population only: Δ from the pairwise payoffs (OpenSpiel's
            default) instead of the finite-population fitness.
        eps: α = ∞ only: mass kept on worse moves so the chain stays irreducible (0 < ε < 1).
    """
    tables = check_payoff_tables(payoff_tables)
    if isinstance(m, bool) or not isinstance(m, int) or m < 2:
        raise EntrolabError(f"population size m must be an int >= 2, got {m!r}")
    if not alpha > 0:
        raise EntrolabError(f"alpha must be > 0 (or math.inf), got {alpha!r}")
    inf = math.isinf(alpha)
    if inf and not 0 < eps < 1:
        raise EntrolabError(f"eps must be in (0, 1) for alpha=inf, got {eps!r}")
    single = len(tables) == 1
    strategies = (tables[0].shape[0],) if single else tuple(tables[0].shape)
    profiles = np.array(np.unravel_index(np.arange(math.prod(strategies)), strategies)).T
    n = len(profiles)
    if n == 1:
        return AlphaRank(np.ones(1), profiles, np.ones((1, 1)), strategies)
    eta = 1.0 / sum(s - 1 for s in strategies)
    c = np.zeros((n, n))
    for i, prof in enumerate(profiles):
        for k, s_k in enumerate(strategies):
            for new in range(s_k):
                if new == prof[k]:
                    continue
                nxt = prof.copy()
                nxt[k] = new
                j = int(np.ravel_multi_index(tuple(nxt), strategies))
                if single:
                    mat, r, s = tables[0], new, int(prof[0])
                    gain = mat[r, s] - mat[s, r]
                else:
                    gain = tables[k][tuple(nxt)] - tables[k][tuple(prof)]
                if inf:
                    tie = math.isclose(gain, 0.0, abs_tol=1e-14)
                    c[i, j] = eta * (0.5 if tie else (1 - eps) if gain > 0 else eps)
                elif single and not local_selection:
                    c[i, j] = eta * math.exp(_log_rho_nonlocal(mat, r, s, alpha, m))
                else:
                    c[i, j] = eta * math.exp(float(_log_rho_closed(np.array(alpha * gain), m)))
        c[i, i] = 1.0 - c[i].sum()
    return AlphaRank(_stationary(c), profiles, c, strategies)


def sweep_alpha(
    payoff_tables: Sequence[Any],
    *,
    m: int = 50,
    alpha0: float = 1e-4,
    factor: float = 2.0,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    max_iter: int = 200,
) -> tuple[AlphaRank, float]:
    """Double α from ``alpha0`` until π stops changing (``np.allclose(π_α, π_{α/2}, rtol,
    atol)``), as OpenSpiel's ``sweep_pi_vs_alpha``; returns (result, α). If the chain stops
    having a unique stationary distribution first, the last unique one is returned."""
    if not alpha0 > 0 or not factor > 1:
        raise EntrolabError(f"need alpha0 > 0 and factor > 1, got {alpha0}, {factor}")
    alpha, prev = float(alpha0), None
    for _ in range(max_iter):
        try:
            res = alpharank(payoff_tables, alpha=alpha, m=m)
        except EntrolabError:
            if prev is None:
                raise
            return prev, alpha / factor
        if prev is not None and np.allclose(res.pi, prev.pi, rtol, atol):
            return res, alpha
        prev, alpha = res, alpha * factor
    raise EntrolabError(f"π did not converge within {max_iter} doublings of alpha")
