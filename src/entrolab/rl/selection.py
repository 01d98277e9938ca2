"""Prompt selection for RL: InSight's weighted mutual information and two baselines.

InSight (Zhou et al. 2026, arXiv:2603.01907) keeps a Beta posterior on each training prompt's
success rate, ``Beta(a, b)`` with ``a = 1 + successes``, ``b = 1 + failures`` (updated after
every rollout group; a reward ``r ∈ [0, 1]`` counts ``r`` successes and ``1 − r`` failures), and
scores a prompt with the posterior mean ``μ = a/(a + b)`` — not the noisy last outcomes — as

    score = w(μ) · I(a, b),    w(μ) = 4·μ(1 − μ)  (difficulty term, 1 at μ = ½)

where the evidence term ``I`` is the mutual information between the next outcome(s) and the
success rate (BALD): ``information="bernoulli"``: ``I = H_b(μ) − E_{p∼Beta}[H_b(p)]`` in closed
form (``E[p ln p] = μ·(ψ(a+1) − ψ(a+b+1))``); ``"binomial"``: ``I = H(BetaBin(G, a, b)) −
E_p[H(Bin(G, p))]`` for G rollouts (numerical integration on a grid of p). I shrinks as evidence
``a + b`` grows, so a prompt answered half the time but seen often loses priority to prompts
not seen yet. The concrete w and I are our reading of the summary ([U]; no code released).

Methods of :class:`PromptSelector`: ``uniform`` (the trainer's shuffled epochs; statistics only),
``p05`` (difficulty only: score ``4·μ(1 − μ)``, the "p ≈ 0.5" heuristic) and ``insight``. Each
step takes the top-N scores (``mode="top"``, ties broken at random) or samples N prompts without
replacement with probability ∝ score (``mode="sample"``), seeded by (seed, step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.special import betaln, digamma, gammaln

from entrolab.errors import EntrolabError

__all__ = [
    "PromptSelector",
    "SelectionConfig",
    "bald_bernoulli",
    "bald_binomial",
    "insight_score",
]


@dataclass
class SelectionConfig:
    """Which prompts each RL step trains on (:mod:`entrolab.rl.selection`).

    Attributes:
        method: ``uniform`` (shuffled epochs), ``p05`` (posterior mean closest to ½) or
            ``insight`` (weighted mutual information).
        mode: ``top`` (N best scores) or ``sample`` (N draws ∝ score, no replacement).
        information: InSight's evidence term, ``bernoulli`` (closed form) or ``binomial``
            (G rollouts, numerical).
        candidates: score a random subset of this many pool prompts per step (0 = all).
    """

    method: Literal["uniform", "p05", "insight"] = "uniform"
    mode: Literal["top", "sample"] = "top"
    information: Literal["bernoulli", "binomial"] = "bernoulli"
    candidates: int = 0

    def __post_init__(self) -> None:
        if self.candidates < 0:
            raise EntrolabError("invalid selection config: candidates must be >= 0 (0 = all)")


def _h_b(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-300, 1.0)
    r = np.clip(1.0 - p, 1e-300, 1.0)
    return -(p * np.log(q) + (1.0 - p) * np.log(r))


def bald_bernoulli(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``H_b(μ) − E_{p∼Beta(a,b)}[H_b(p)]`` (nats) elementwise; ≥ 0, → 0 as a + b → ∞."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu = a / (a + b)
    s = digamma(a + b + 1.0)
    expected_h = -(mu * (digamma(a + 1.0) - s) + (1.0 - mu) * (digamma(b + 1.0) - s))
    return np.maximum(_h_b(mu) - expected_h, 0.0)


def bald_binomial(a: np.ndarray, b: np.ndarray, g: int, *, grid: int = 401) -> np.ndarray:
    """``H(BetaBinomial(g, a, b)) − E_{p∼Beta(a,b)}[H(Binomial(g, p))]`` (nats) elementwise."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 1)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 1)
    k = np.arange(g + 1, dtype=np.float64)[None, :]
    log_choose = gammaln(g + 1.0) - gammaln(k + 1.0) - gammaln(g - k + 1.0)
    log_bb = log_choose + betaln(k + a, g - k + b) - betaln(a, b)  # [M, g+1]
    pbb = np.exp(log_bb)
    h_mix = -(pbb * log_bb).sum(axis=1)
    p = (np.arange(grid, dtype=np.float64) + 0.5) / grid  # midpoint rule on (0, 1)
    log_p, log_q = np.log(p), np.log1p(-p)
    log_bin = (
        log_choose[0][None, :]
        + k[0][None, :] * log_p[:, None]
        + (g - k[0])[None, :] * log_q[:, None]
    )
    h_bin = -(np.exp(log_bin) * log_bin).sum(axis=1)  # [grid]
    log_w = (a - 1.0) * log_p[None, :] + (b - 1.0) * log_q[None, :]  # Beta density, unnormalised
    w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    w = w / w.sum(axis=1, keepdims=True)
    return np.maximum(h_mix - (w * h_bin[None, :]).sum(axis=1), 0.0)


def insight_score(
    a: np.ndarray, b: np.ndarray, *, information: str = "bernoulli", group_size: int = 8
) -> np.ndarray:
    """InSight's weighted mutual information ``4μ(1 − μ)·I(a, b)`` (module doc)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu = a / (a + b)
    if information == "bernoulli":
        info = bald_bernoulli(a, b)
    elif information == "binomial":
        info = bald_binomial(a, b, group_size)
    else:
        raise EntrolabError(f"information must be 'bernoulli' or 'binomial', got {information!r}")
    return 4.0 * mu * (1.0 - mu) * info


class PromptSelector:
    """Beta posteriors over a pool of ``pool_size`` prompts and the per-step choice of N.

    ``choose(n, step)`` returns pool indices (None for ``uniform``: the trainer's own order);
    ``observe(indices, rewards [N, G])`` updates the posteriors and returns the step's metrics:
    ``select/never_seen`` (pool prompts not trained on yet), ``select/seen_once`` (trained on
    exactly once: never revisited), ``select/revisit_frac`` (this step's prompts seen before),
    ``select/score_mean`` (mean score of the chosen prompts; InSight/p05 only).
    """

    def __init__(
        self, config: SelectionConfig, pool_size: int, *, seed: int = 0, group_size: int = 8
    ) -> None:
        if pool_size < 1:
            raise EntrolabError("prompt selection needs a non-empty training pool")
        self.config = config
        self.seed = seed
        self.group_size = group_size
        self.a = np.ones(pool_size)
        self.b = np.ones(pool_size)
        self.visits = np.zeros(pool_size, dtype=np.int64)
        self._last_score: float | None = None

    @property
    def active(self) -> bool:
        return self.config.method != "uniform"

    def scores(self, idx: np.ndarray | None = None) -> np.ndarray:
        a = self.a if idx is None else self.a[idx]
        b = self.b if idx is None else self.b[idx]
        if self.config.method == "p05":
            mu = a / (a + b)
            return 4.0 * mu * (1.0 - mu)
        return insight_score(a, b, information=self.config.information, group_size=self.group_size)

    def choose(self, n: int, step: int) -> list[int] | None:
        if not self.active:
            return None
        pool = len(self.a)
        if n > pool:
            raise EntrolabError(f"cannot select {n} distinct prompts from a pool of {pool}")
        rng = np.random.default_rng([self.seed, step, 0x5E1])
        cand = np.arange(pool)
        if self.config.candidates and self.config.candidates < pool:
            cand = np.sort(rng.choice(pool, size=max(self.config.candidates, n), replace=False))
        s = self.scores(cand)
        if self.config.mode == "top":
            order = np.lexsort((rng.random(len(cand)), -s))  # score desc, random tie-break
            pick = cand[order[:n]]
        else:
            w = np.maximum(s, 0.0)
            w = w + 1e-12 if w.sum() <= 0 else w  # all-zero scores: uniform
            pick = rng.choice(cand, size=n, replace=False, p=w / w.sum())
        self._last_score = float(self.scores(pick).mean())
        return [int(i) for i in pick]

    def observe(self, indices: list[int], rewards: torch.Tensor) -> dict[str, float]:
        r = rewards.detach().to(torch.float64).clamp(0.0, 1.0).numpy()
        if r.shape[0] != len(indices):
            raise EntrolabError(f"{len(indices)} prompts but rewards for {r.shape[0]}")
        idx = np.asarray(indices, dtype=np.int64)
        revisit = float((self.visits[idx] > 0).mean())
        np.add.at(self.a, idx, r.sum(axis=1))
        np.add.at(self.b, idx, (1.0 - r).sum(axis=1))
        np.add.at(self.visits, idx, 1)
        out = {
            "select/never_seen": float((self.visits == 0).sum()),
            "select/seen_once": float((self.visits == 1).sum()),
            "select/revisit_frac": revisit,
        }
        if self._last_score is not None:
            out["select/score_mean"] = self._last_score
        return out

    def state_dict(self) -> dict:
        return {"a": self.a.tolist(), "b": self.b.tolist(), "visits": self.visits.tolist()}

    def load_state_dict(self, state: dict) -> None:
        a, b, v = (np.asarray(state[k]) for k in ("a", "b", "visits"))
        if len(a) != len(self.a):
            raise EntrolabError(
                f"the checkpoint's selection state covers {len(a)} prompts, the pool has "
                f"{len(self.a)}; resume with the same task settings"
            )
        self.a, self.b, self.visits = a.astype(np.float64), b.astype(np.float64), v.astype(np.int64)
