"""ResponseGraphUCB (Rowland et al. 2019, "Multiagent Evaluation under Incomplete Information")
and ranking from noisy pairwise results.

The response graph has one node per pure profile and one edge per pair of profiles that differ
in exactly one player's strategy; the edge points to the profile that the deviating player
prefers. ResponseGraphUCB samples profiles until every edge's orientation is certain: edge
(s, s') with deviating player k is *resolved* when UCB_k(worse) < LCB_k(better) (the better
endpoint = the higher empirical mean). Intervals: ``"clopper-pearson"`` (exact, for 0/1
outcomes; :func:`entrolab.calibration.intervals.clopper_pearson` at level 1 − δ) or
``"hoeffding"`` (radius √(log(2/δ) / 2n), payoffs in [0, 1]). Exploration: ``"uniform-exhaustive"``
(edges in a random order, a random endpoint of the first unresolved one; OpenSpiel's default),
``"uniform"`` (a random endpoint of a random unresolved edge), ``"count-weighted"`` (the
least-sampled profile that still has an unresolved edge) or ``"round-robin"`` (every profile in
turn, resolved or not: non-adaptive uniform sampling with the same stopping certificate, the
baseline adaptive sampling is measured against). Every profile is played once first.

:func:`rank_pairwise` turns a noisy win table between strategies (samplers, checkpoints, …)
into an α-Rank ranking, with π intervals from posterior draws of the win rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from entrolab.beyond.alpharank import AlphaRank, alpharank
from entrolab.calibration.intervals import clopper_pearson
from entrolab.errors import EntrolabError

__all__ = [
    "BernoulliGame",
    "PairwiseRanking",
    "RGUCBResult",
    "edge_orientation",
    "pairwise_from_correctness",
    "rank_pairwise",
    "response_graph_edges",
    "response_graph_ucb",
]

Profile = tuple[int, ...]


def response_graph_edges(strategies: Sequence[int]) -> list[tuple[Profile, Profile, int]]:
    """(s, s', k) for every unordered pair of profiles differing only in player k's strategy."""
    profiles = [tuple(int(i) for i in p) for p in np.ndindex(*strategies)]
    edges = []
    for p in profiles:
        for k, s_k in enumerate(strategies):
            for new in range(p[k] + 1, s_k):
                edges.append((p, (*p[:k], new, *p[k + 1 :]), k))
    return edges


def edge_orientation(means: Sequence[np.ndarray], edge: tuple[Profile, Profile, int]) -> Profile:
    """The endpoint player k prefers under ``means`` (ties → the first endpoint)."""
    s1, s2, k = edge
    return s2 if means[k][s2] > means[k][s1] else s1


@dataclass
class BernoulliGame:
    """K-player game whose payoff to player k at profile s is Bernoulli(means[k][s]).

    ``means``: K arrays [S_1, …, S_K] with entries in [0, 1]."""

    means: list[np.ndarray]

    def __post_init__(self) -> None:
        self.means = [np.asarray(m, dtype=np.float64) for m in self.means]
        if not self.means or any(m.shape != self.means[0].shape for m in self.means):
            raise EntrolabError("means must be K arrays of one shape [S_1, …, S_K]")
        if len(self.means[0].shape) != len(self.means):
            raise EntrolabError(f"{len(self.means)} players need {len(self.means)}-dim tables")
        if any(np.isnan(m).any() or m.min() < 0 or m.max() > 1 for m in self.means):
            raise EntrolabError("Bernoulli means must lie in [0, 1] (no NaN)")

    @property
    def strategies(self) -> tuple[int, ...]:
        return tuple(self.means[0].shape)

    def sample(self, profile: Profile, rng: np.random.Generator) -> np.ndarray:
        return (rng.random(len(self.means)) < [m[profile] for m in self.means]).astype(float)


@dataclass
class RGUCBResult:
    """Outcome of :func:`response_graph_ucb`.

    Attributes:
        means: K arrays of empirical mean payoffs. counts: samples per profile.
        oriented: edge → preferred endpoint (resolved edges by the test, the rest by means).
        resolved: edges resolved by the confidence test. interactions: games played.
        edges: every edge of the response graph.
    """

    means: list[np.ndarray]
    counts: np.ndarray
    oriented: dict[tuple[Profile, Profile, int], Profile]
    resolved: set[tuple[Profile, Profile, int]]
    interactions: int
    edges: list[tuple[Profile, Profile, int]] = field(default_factory=list)

    def errors(self, true_means: Sequence[np.ndarray]) -> int:
        """Edges oriented differently from ``true_means``."""
        return sum(self.oriented[e] != edge_orientation(true_means, e) for e in self.edges)


def _bounds(
    succ: float, n: float, mean: float, delta: float, ci: str, eps: float
) -> tuple[float, float]:
    if ci == "clopper-pearson":
        iv = clopper_pearson(round(succ), int(n), 1.0 - delta)
        return iv.low + eps, iv.high - eps
    r = math.sqrt(math.log(2.0 / delta) / (2.0 * n))
    return mean - r + eps, mean + r - eps


def response_graph_ucb(
    game: Any,
    *,
    delta: float = 0.1,
    ci: Literal["clopper-pearson", "hoeffding"] = "clopper-pearson",
    exploration: Literal["uniform-exhaustive", "uniform", "count-weighted", "round-robin"] = (
        "uniform-exhaustive"
    ),
    budget: int = 50_000,
    per_payoff: bool = True,
    eps: float = 0.0,
    seed: int = 0,
) -> RGUCBResult:
    """Sample ``game`` (``.strategies`` and ``.sample(profile, rng) -> [K]`` in [0, 1]) until
    every response-graph edge is resolved or ``budget`` games are played.

    ``per_payoff=False`` divides δ by K · P (a union bound over all payoffs). ``eps`` ≥ 0
    shrinks every interval by ε ("relaxed" variants: resolves sooner, may err)."""
    if not 0 < delta < 1:
        raise EntrolabError(f"delta must be in (0, 1), got {delta!r}")
    if ci not in ("clopper-pearson", "hoeffding"):
        raise EntrolabError(f"ci must be 'clopper-pearson' or 'hoeffding', got {ci!r}")
    if exploration not in ("uniform-exhaustive", "uniform", "count-weighted", "round-robin"):
        raise EntrolabError(f"unknown exploration {exploration!r}")
    strategies = tuple(game.strategies)
    k_players, n_prof = len(strategies), math.prod(strategies)
    d = delta if per_payoff else delta / (k_players * n_prof)
    rng = np.random.default_rng(seed)
    edges = response_graph_edges(strategies)
    succ = [np.zeros(strategies) for _ in range(k_players)]
    counts = np.zeros(strategies)
    lo = [np.zeros(strategies) for _ in range(k_players)]  # cached interval ends per payoff
    hi = [np.ones(strategies) for _ in range(k_players)]

    def play(p: Profile) -> None:
        out = np.asarray(game.sample(p, rng), dtype=float)
        if out.shape != (k_players,) or np.isnan(out).any() or out.min() < 0 or out.max() > 1:
            raise EntrolabError(f"game.sample must return {k_players} payoffs in [0, 1]")
        if ci == "clopper-pearson" and not np.isin(out, (0.0, 1.0)).all():
            raise EntrolabError("Clopper–Pearson needs 0/1 outcomes; use ci='hoeffding'")
        counts[p] += 1
        for k in range(k_players):
            succ[k][p] += out[k]
            lo[k][p], hi[k][p] = _bounds(succ[k][p], counts[p], succ[k][p] / counts[p], d, ci, eps)

    def resolved(e: tuple[Profile, Profile, int]) -> bool:
        s1, s2, k = e
        better, worse = (
            (s1, s2) if succ[k][s1] / counts[s1] > succ[k][s2] / counts[s2] else (s2, s1)
        )
        return hi[k][worse] < lo[k][better]

    all_profiles = [tuple(int(i) for i in p) for p in np.ndindex(*strategies)]
    for p in all_profiles:
        play(p)
    open_edges = [e for e in edges if not resolved(e)]
    order = [open_edges[i] for i in rng.permutation(len(open_edges))]
    done = set(edges) - set(open_edges)
    n = n_prof
    while order and n < budget:
        if exploration == "uniform-exhaustive":
            e = order[0]
            p = e[int(rng.integers(2))]
        elif exploration == "uniform":
            e = order[int(rng.integers(len(order)))]
            p = e[int(rng.integers(2))]
        elif exploration == "count-weighted":
            cand = {q for e in order for q in e[:2]}
            p = min(cand, key=lambda q: (counts[q], q))
        else:
            p = all_profiles[n % n_prof]
        play(p)  # type: ignore[arg-type]
        n += 1
        newly = [e for e in order if p in e[:2] and resolved(e)]
        done.update(newly)
        order = [e for e in order if e not in newly]
    means = [np.divide(s, counts) for s in succ]
    oriented = {e: edge_orientation(means, e) for e in edges}
    return RGUCBResult(means, counts, oriented, done, n, edges)


@dataclass(frozen=True)
class PairwiseRanking:
    """α-Rank of strategies from a pairwise win table.

    Attributes:
        names: strategy names. result: α-Rank on the empirical win-rate table.
        pi_low, pi_high: [S] central ``level`` intervals of π over posterior draws
            (Beta(1 + wins, 1 + losses) per pair). order: names by decreasing π.
    """

    names: list[str]
    result: AlphaRank
    pi_low: np.ndarray
    pi_high: np.ndarray
    order: list[str]


def pairwise_from_correctness(correct: Any) -> tuple[np.ndarray, np.ndarray]:
    """Head-to-head tables from per-item correctness of S strategies on the same N items.

    On each item, strategy i beats j when i is right and j wrong; equal outcomes are draws
    (½ each). ``correct``: [S, N] bool/0-1 (e.g. ``[[o.correct for o in outcomes] for each
    entrolab strategy, sampler or checkpoint]``). Returns (wins [S, S], games [S, S])."""
    c = np.asarray(correct, dtype=float)
    if c.ndim != 2 or c.shape[1] == 0:
        raise EntrolabError(f"correct must be [S strategies, N items], got shape {c.shape}")
    if np.isnan(c).any() or not np.isin(c, (0.0, 1.0)).all():
        raise EntrolabError("correct must hold 0/1 (or bool) outcomes, no missing entries")
    n = c.shape[1]
    beats = c @ (1 - c).T  # items where i is right and j is wrong
    wins = beats + (n - beats - beats.T) / 2.0
    np.fill_diagonal(wins, 0.0)
    games = np.full(wins.shape, float(n))
    np.fill_diagonal(games, 0.0)
    return wins, games


def rank_pairwise(
    wins: Any,
    games: Any,
    names: Sequence[str] | None = None,
    *,
    alpha: float = 10.0,
    m: int = 50,
    draws: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> PairwiseRanking:
    """Rank S strategies (samplers, checkpoints, agents) from noisy head-to-head results.

    Args:
        wins: [S, S] wins of row i against column j (draws count ½). games: [S, S] games
            played between i and j (symmetric; the diagonal is ignored). Every off-diagonal
            pair must have been played at least once.
    Returns:
        :class:`PairwiseRanking`; the payoff table is M[i, j] = win rate of i vs j (M[i, i] =
        ½), ranked by single-population α-Rank.
    """
    w, g = np.asarray(wins, dtype=float), np.asarray(games, dtype=float)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or g.shape != w.shape:
        raise EntrolabError(f"wins and games must both be [S, S], got {w.shape} and {g.shape}")
    s = w.shape[0]
    off = ~np.eye(s, dtype=bool)
    if (g[off] <= 0).any():
        i, j = (int(x) for x in np.argwhere((g <= 0) & off)[0])
        raise EntrolabError(
            f"pair ({i}, {j}) has no games: a missing payoff entry; play it before ranking"
        )
    if not np.allclose(g, g.T) or (w < 0).any() or (w[off] > g[off]).any():
        raise EntrolabError("games must be symmetric and 0 <= wins <= games")
    names = [str(i) for i in range(s)] if names is None else list(names)
    if len(names) != s:
        raise EntrolabError(f"{len(names)} names for {s} strategies")
    table = np.where(off, w / np.where(off, g, 1), 0.5)
    result = alpharank([table], alpha=alpha, m=m)
    rng = np.random.default_rng(seed)
    pis = []
    for _ in range(int(draws)):
        t = np.full((s, s), 0.5)
        iu = np.triu_indices(s, 1)
        p = rng.beta(1 + w[iu], 1 + (g[iu] - w[iu]))
        t[iu], t[iu[::-1]] = p, 1 - p
        pis.append(alpharank([t], alpha=alpha, m=m).pi)
    q = (1 - level) / 2
    lo, hi = np.quantile(np.array(pis), [q, 1 - q], axis=0)
    order = [names[i] for i in result.ranking()]
    return PairwiseRanking(names, result, lo, hi, order)
