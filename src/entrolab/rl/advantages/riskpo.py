"""RiskPO: mixed Value-at-Risk advantages with bundling (Ren et al. 2025, arXiv:2510.00911).

A base advantage estimator (it replaces the group baseline): ``algorithm.advantage=riskpo``.

* Bundles: consecutive ``bundle_size`` prompts. A *paper* takes the j-th response of every
  prompt of the bundle (without replacement), score ``s = Σ`` of their rewards.
* Quantiles ``q_lo = F⁻¹(α)``, ``q_hi = F⁻¹(β)`` of the bundle's paper scores (linear
  interpolation, ``torch.quantile``), or tracked across steps (:class:`QuantileTracker`).
* Range-VaR part ``a_R = [(s − q_lo)₊ − (s − q_hi)₊ + q_lo − q_hi] / (β − α + ε)``; lower-tail
  CVaR part ``a_C = −(q_lo − s)₊ / (α + ε)``; mixed ``a = (ω·a_C + a_R)/(ω + 1)``, then ÷ (std of
  the bundle's paper scores + ε) when ``norm_by_std``.
* Credit back to each response of the paper: ``uniform`` (a), ``score`` (0.5·a if its reward
  > 0 else 1.5·a), ``std`` (a / (std of its prompt's G rewards + ε), that std read as 1 when
  ≤ 1e-3), ``sum-mean`` (a·(r − mean_G r)/Σ_paper(r − mean_G r), a/|paper| when that sum ≈ 0).

Defaults from the official script (RTkenny/RiskPO ``run_qwen2.5_1.5b_MVaR_math.sh``): α 0.2,
β 0.9, bundle 5, ω 1.5, credit ``std``, std normalisation on; lr_q 0.1 for tracking.

Note on tracking: in the released trainer the tracked quantiles are written into the batch
*after* its advantages are computed, and the next batch starts without them, so every released
run used the per-batch quantiles (``quantile_source="batch"``, our default). ``"track"``
(tracked only) and ``"mix"`` (average of tracked and batch) feed the tracker's values from the
previous steps, as the paper describes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entrolab.errors import EntrolabError

__all__ = ["QuantileTracker", "bundle_paper_scores", "mvar_advantage", "riskpo"]

RISKPO_CREDITS = ("uniform", "score", "std", "sum-mean")


def bundle_paper_scores(rewards: Tensor, bundle_size: int) -> list[Tensor]:
    """Paper scores per bundle: ``rewards [N, G]`` → list of ``[G]`` tensors (float64); the
    last bundle may hold fewer prompts."""
    r = rewards.detach().to(torch.float64)
    return [r[b : b + bundle_size].sum(dim=0) for b in range(0, r.shape[0], bundle_size)]


def mvar_advantage(
    score: Tensor,
    q_lo: Tensor | float,
    q_hi: Tensor | float,
    *,
    alpha: float,
    beta: float,
    w_mix: float,
    eps: float = 1e-6,
) -> Tensor:
    """The mixed range-VaR/CVaR advantage of paper scores ``s`` (elementwise, continuous and
    piecewise linear in ``s``); see the module doc."""
    a_r = (score - q_lo).clamp(min=0) - (score - q_hi).clamp(min=0) + q_lo - q_hi
    a_r = a_r / (beta - alpha + eps)
    a_c = -(q_lo - score).clamp(min=0) / (alpha + eps)
    return (w_mix * a_c + a_r) / (w_mix + 1)


def riskpo(
    rewards: Tensor,
    *,
    quantile_down: float = 0.2,
    quantile_up: float = 0.9,
    bundle_size: int = 5,
    w_mix: float = 1.5,
    credit: str = "std",
    norm_by_std: bool = True,
    eps: float = 1e-6,
    q_track: tuple[float, float] | None = None,
    quantile_source: str = "batch",
) -> Tensor:
    """RiskPO advantages ``[N, G]`` float32 from rewards ``[N, G]`` (module doc).

    Args:
        quantile_down / quantile_up: α < β, the quantile levels. bundle_size: prompts per
            bundle. w_mix: ω ≥ 0 (0 = range-VaR only). credit: see module doc.
        norm_by_std: divide by the bundle's paper-score std (unbiased; 1 for a single paper).
        q_track: tracked ``(q_lo, q_hi)`` from earlier steps (None until the tracker has any).
        quantile_source: ``"batch"``, ``"track"`` or ``"mix"`` (how q_track is used).
    """
    if rewards.dim() != 2 or rewards.shape[1] < 1:
        raise EntrolabError(f"riskpo: rewards must be [N, G], got {tuple(rewards.shape)}")
    if not 0 < quantile_down < quantile_up < 1:
        raise EntrolabError("riskpo: need 0 < quantile_down < quantile_up < 1")
    if bundle_size < 1 or w_mix < 0:
        raise EntrolabError("riskpo: bundle_size must be >= 1 and w_mix >= 0")
    if credit not in RISKPO_CREDITS:
        raise EntrolabError(f"riskpo: credit must be one of {', '.join(RISKPO_CREDITS)}")
    if quantile_source not in ("batch", "track", "mix"):
        raise EntrolabError("riskpo: quantile_source must be 'batch', 'track' or 'mix'")
    r = rewards.detach().to(torch.float64)
    if not bool(torch.isfinite(r).all()):
        raise EntrolabError("riskpo: rewards contain NaN/inf")
    n, g = r.shape
    q_std = r.std(dim=1) if g > 1 else torch.ones(n, dtype=torch.float64)
    q_std = torch.where(q_std > 1e-3, q_std, torch.ones_like(q_std))
    q_mean = r.mean(dim=1)
    out = torch.zeros_like(r)
    for b, papers in zip(
        range(0, n, bundle_size), bundle_paper_scores(r, bundle_size), strict=True
    ):
        rows = slice(b, min(b + bundle_size, n))
        if g == 1:
            lo_b = hi_b = papers[0]
            std = torch.tensor(1.0, dtype=torch.float64)
        else:
            lo_b = torch.quantile(papers, quantile_down)
            hi_b = torch.quantile(papers, quantile_up)
            std = papers.std()
        lo, hi = lo_b, hi_b
        if q_track is not None and quantile_source == "track":
            lo, hi = torch.tensor(q_track[0]), torch.tensor(q_track[1])
        elif q_track is not None and quantile_source == "mix":
            lo, hi = (q_track[0] + lo_b) / 2, (q_track[1] + hi_b) / 2
        adv = mvar_advantage(
            papers, lo, hi, alpha=quantile_down, beta=quantile_up, w_mix=w_mix, eps=eps
        )
        if norm_by_std:
            adv = adv / (std + eps)  # [G], one value per paper
        sub = r[rows]  # [B, G]
        if credit == "uniform":
            out[rows] = adv[None, :].expand_as(sub)
        elif credit == "score":
            out[rows] = torch.where(sub > 0, 0.5, 1.5) * adv[None, :]
        elif credit == "std":
            out[rows] = adv[None, :] / (q_std[rows, None] + eps)
        else:  # sum-mean
            ratio = sub - q_mean[rows, None]
            total = ratio.sum(dim=0)  # [G], Σ over the paper's responses
            share = torch.where(
                total.abs() > 1e-6, ratio / torch.where(total == 0, 1.0, total), 1.0 / len(sub)
            )
            out[rows] = adv[None, :] * share
    return out.float()


class QuantileTracker:
    """Quantiles of paper scores tracked across steps by stochastic approximation (RiskPO).

    Levels ``alphas`` (default 0.05, 0.10, …, 0.95, as the official trainer). The first update
    sets ``q = quantile(scores, alphas)``; later ones take one SGD step on the pinball loss,
    ``q ← q + lr·(α − mean(scores < q))``. :meth:`get` returns the values at the levels
    closest to ``(α_lo, α_hi)``.
    """

    def __init__(self, lr: float = 0.1, alphas: Tensor | None = None) -> None:
        if lr <= 0:
            raise EntrolabError("riskpo: lr_q must be > 0")
        self.lr = float(lr)
        self.alphas = (
            torch.arange(1, 20, dtype=torch.float64) * 0.05
            if alphas is None
            else alphas.to(torch.float64)
        )
        self.q: Tensor | None = None

    def update(self, scores: Tensor) -> None:
        x = scores.detach().to(torch.float64).reshape(-1)
        if self.q is None:
            self.q = torch.quantile(x, self.alphas)
            return
        below = (x[None, :] < self.q[:, None]).to(torch.float64).mean(dim=1)
        self.q = self.q + self.lr * (self.alphas - below)

    def get(self, alpha_lo: float, alpha_hi: float) -> tuple[float, float] | None:
        if self.q is None:
            return None
        lo = int((self.alphas - alpha_lo).abs().argmin())
        hi = int((self.alphas - alpha_hi).abs().argmin())
        return float(self.q[lo]), float(self.q[hi])

    def state_dict(self) -> dict:
        return {"lr": self.lr, "q": None if self.q is None else self.q.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])
        q = state.get("q")
        self.q = None if q is None else torch.tensor(q, dtype=torch.float64)
