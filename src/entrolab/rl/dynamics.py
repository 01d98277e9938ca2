"""Entropy-dynamics monitor: why does the policy's entropy move during RL?

Logged every step (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs",
arXiv:2505.22617; Wang et al. 2025, "Beyond the 80/20 Rule", arXiv:2506.01939):

* ``dyn/entropy`` – mean token entropy of the step's sampled responses (nats, over all response
  tokens of the batch).
* ``dyn/cov`` – the covariance term: mean over the batch's response tokens of the centred
  cross-product ``(A − Ā)(ℓ − ℓ̄)`` (:func:`entrolab.rl.entropy_law.covariance_proxy`). The law
  says ``ΔH ≈ −η·Cov``: a positive covariance drains entropy.
* ``dyn/probe_dH`` – the *realised* change of the mean token entropy on a fixed probe set
  (fixed prompts and fixed responses, teacher-forced), measured before and after the step's
  update; ``dyn/pred_dH`` – the *predicted* change ``−η̂·cov``, with the effective step size
  η̂ ≥ 0 fitted (least squares through the origin) on the previous steps' (−cov, ΔH) pairs;
  ``dyn/sign_agree`` – fraction of steps so far where sign(−cov) = sign(ΔH);
  ``dyn/pred_corr`` – Pearson correlation of −cov and ΔH so far.
* ``dyn/decile_dH`` – the step's probe entropy change per entropy decile (tokens binned by their
  entropy before the update, lowest first); ``dyn/decile_dH_cum`` – change since step 0 per
  step-0 decile (does RL mostly move the high-entropy "forking" tokens?).
* ``dyn/S_mean``, ``dyn/S_std``, ``dyn/S_neg_frac_negA`` – the discriminator
  ``S = p·(H + log p)`` of the sampled tokens (Wang et al. 2026, arXiv:2602.03392;
  :func:`discriminator_stats`): ``∂H/∂z_y = −S``, so rewarding high-S tokens and penalising
  low-S (rare) ones drains entropy; its batch mean, population std, and the fraction of
  negative-advantage tokens with S < 0 (the ones Clip_B/Clip_V consider dropping).
* ``dyn/entropy_reasoning``, ``dyn/entropy_answer``, ``dyn/reasoning_frac`` – mean token
  entropy before and after the task's answer delimiter (:func:`phase_masks`; tasks that declare
  ``answer_delimiter``, e.g. the reasoning proxy), and the reasoning share of response tokens.
* ``law/a``, ``law/b``, ``law/r2``, ``law/ceiling`` – the fit of ``R = −a·e^H + b`` over the
  run so far (H = ``dyn/entropy``, R = the mean training reward), ceiling = ``b − a``.

Pure tensor/numpy code (no model): the trainer passes entropies and statistics in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.entropy_law import OnlineEntropyLawFit

__all__ = [
    "EntropyChange",
    "EntropyMonitor",
    "binned_change",
    "discriminator_stats",
    "entropy_change",
    "phase_entropy",
    "phase_masks",
]


def _check(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if before.shape != after.shape or before.shape != mask.shape:
        raise EntrolabError(
            f"entropy before {tuple(before.shape)}, after {tuple(after.shape)} and mask "
            f"{tuple(mask.shape)} must have the same shape [B, T]"
        )
    if mask.dtype != torch.bool:
        raise EntrolabError(f"mask must be bool (True = response token), got {mask.dtype}")
    for name, t in (("before", before), ("after", after)):
        if not bool(torch.isfinite(t[mask]).all()):
            raise EntrolabError(f"entropy {name} has NaN/inf at response tokens")
    return mask


def binned_change(
    delta: torch.Tensor, key: torch.Tensor, bins: int = 10
) -> tuple[list[float | None], list[int]]:
    """Mean of ``delta`` in ``bins`` equal-count groups of tokens sorted by ``key`` (ascending).

    Args:
        delta, key: [n] values per token (e.g. entropy change, and entropy before the update).
        bins: number of groups; with n tokens, group j holds tokens ``j·n/bins … (j+1)·n/bins``
            of the sorted order (``torch.tensor_split`` sizes, ties broken by position).
    Returns:
        (means, counts): ``bins`` means (None for an empty group) and counts.
    """
    if delta.shape != key.shape or delta.dim() != 1:
        raise EntrolabError("binned_change needs two 1-D tensors of the same length")
    order = torch.sort(key.double(), stable=True).indices
    groups = torch.tensor_split(delta.double()[order], bins)
    means = [float(g.mean()) if g.numel() else None for g in groups]
    return means, [int(g.numel()) for g in groups]


@dataclass(frozen=True)
class EntropyChange:
    """Change of token entropy on a fixed set of tokens between two policies.

    Attributes:
        mean_before / mean_after: mean token entropy over the masked tokens (nats).
        delta: mean_after − mean_before (nats).
        bin_delta: mean change per entropy bin (tokens binned by ``reference``, lowest first;
            None for an empty bin).
        bin_count: tokens per bin.
    """

    mean_before: float
    mean_after: float
    delta: float
    bin_delta: list[float | None]
    bin_count: list[int]


def entropy_change(
    before: torch.Tensor,
    after: torch.Tensor,
    mask: torch.Tensor,
    *,
    bins: int = 10,
    reference: torch.Tensor | None = None,
) -> EntropyChange:
    """Realised entropy change on the tokens of ``mask``, overall and per entropy bin.

    Args:
        before, after: [B, T] token entropies (nats) of the same tokens under two policies.
        mask: [B, T] bool, True on the tokens to use.
        bins: number of equal-count entropy bins (10 = deciles).
        reference: [B, T] entropies that define the bins (default ``before``).
    Scope: means over all masked tokens of the set (not per sequence).
    """
    m = _check(before, after, mask)
    if not bool(m.any()):
        raise EntrolabError("the probe set has no response tokens; nothing to measure")
    ref = before if reference is None else reference
    if ref.shape != before.shape:
        raise EntrolabError("reference entropies must have the same shape as before/after")
    b, a = before[m].double(), after[m].double()
    means, counts = binned_change(a - b, ref[m].double(), bins)
    mb, ma = float(b.mean()), float(a.mean())
    return EntropyChange(mb, ma, ma - mb, means, counts)


def discriminator_stats(
    logprobs: torch.Tensor, entropy: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    """Batch statistics of ``S = p·(H + log p)`` over the response tokens (``[B, T]`` inputs:
    sampled-token log-probs, token entropies in nats, advantages, bool mask).

    Returns ``dyn/S_mean``, ``dyn/S_std`` (population) and ``dyn/S_neg_frac_negA`` (share of the
    A < 0 tokens whose S < 0; 0 when there are none). Scope: all masked tokens of the batch.
    """
    if not (logprobs.shape == entropy.shape == advantages.shape == mask.shape):
        raise EntrolabError("discriminator_stats needs [B, T] tensors of one shape")
    m = mask.bool()
    if not bool(m.any()):
        return {"dyn/S_mean": 0.0, "dyn/S_std": 0.0, "dyn/S_neg_frac_negA": 0.0}
    lp = logprobs.detach().double()[m]
    s = torch.exp(lp) * (entropy.detach().double()[m] + lp)
    neg = advantages.detach()[m] < 0
    return {
        "dyn/S_mean": float(s.mean()),
        "dyn/S_std": float(s.std(unbiased=False)),
        "dyn/S_neg_frac_negA": float((s[neg] < 0).double().mean()) if bool(neg.any()) else 0.0,
    }


def phase_masks(
    response_ids: torch.Tensor, mask: torch.Tensor, delimiter_ids: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(reasoning, answer) bool masks ``[B, T]``: response tokens before the first occurrence of
    the token sequence ``delimiter_ids`` in each row, and those after it (the delimiter's own
    tokens are in neither). A row without the delimiter is all reasoning."""
    k = len(delimiter_ids)
    if k == 0:
        raise EntrolabError("phase_masks needs a non-empty delimiter token sequence")
    b, t = response_ids.shape
    m = mask.bool()
    pos = torch.arange(t, device=response_ids.device).expand(b, t)
    if t < k:
        return m.clone(), torch.zeros_like(m)
    delim = torch.tensor(delimiter_ids, device=response_ids.device)
    win = response_ids.unfold(1, k, 1)  # [B, T − k + 1, k]
    wm = m.unfold(1, k, 1).all(-1)
    hit = (win == delim).all(-1) & wm
    first = torch.where(hit.any(-1), hit.float().argmax(-1), torch.full((b,), t, device=hit.device))
    reasoning = m & (pos < first[:, None])
    answer = m & (pos >= first[:, None] + k)
    return reasoning, answer


def phase_entropy(
    entropy: torch.Tensor, response_ids: torch.Tensor, mask: torch.Tensor, delimiter_ids: list[int]
) -> dict[str, float | None]:
    """Mean token entropy (nats) of the reasoning and answer phases over the batch (None for an
    empty phase) and the reasoning share of response tokens; see :func:`phase_masks`."""
    reasoning, answer = phase_masks(response_ids, mask, delimiter_ids)
    h = entropy.detach().double()
    n = max(int(mask.sum()), 1)

    def mean(sel: torch.Tensor) -> float | None:
        return float(h[sel].mean()) if bool(sel.any()) else None

    return {
        "dyn/entropy_reasoning": mean(reasoning),
        "dyn/entropy_answer": mean(answer),
        "dyn/reasoning_frac": float(reasoning.sum()) / n,
    }


def _pearson(x: list[float], y: list[float]) -> float | None:
    n = len(x)
    if n < 3:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((v - mx) ** 2 for v in x)
    syy = sum((v - my) ** 2 for v in y)
    if sxx <= 0 or syy <= 0:
        return None
    return sum((u - mx) * (v - my) for u, v in zip(x, y, strict=True)) / math.sqrt(sxx * syy)


class EntropyMonitor:
    """Per-step entropy-dynamics metrics with a checkpointable history.

    Args:
        bins: entropy bins for the per-decile change (10 = deciles).
        law_min_points: steps before the law R = −a·e^H + b is fitted.
    """

    def __init__(self, bins: int = 10, law_min_points: int = 5) -> None:
        self.bins = bins
        self.law_min_points = law_min_points
        self.neg_cov: list[float] = []  # −cov per step with a probe measurement
        self.probe_dh: list[float] = []  # realised probe ΔH per step
        self.law = OnlineEntropyLawFit()
        self.reference: list[list[float]] | None = None  # step-0 probe entropies [P, T]

    def set_reference(self, probe_entropy: torch.Tensor) -> None:
        """The probe set's token entropies at step 0 ([P, T]), for the cumulative decile change."""
        self.reference = probe_entropy.double().tolist()

    def update(
        self,
        *,
        entropy: float,
        reward: float,
        covariance: float,
        probe_before: torch.Tensor | None = None,
        probe_after: torch.Tensor | None = None,
        probe_mask: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Record one step and return its metrics (keys ``dyn/*`` and ``law/*``; lists for the
        per-bin values; None where not yet defined)."""
        out: dict[str, Any] = {"dyn/entropy": entropy, "dyn/cov": covariance}
        if probe_before is not None and probe_after is not None and probe_mask is not None:
            # predict from the previous steps only, then add this one to the history
            num = sum(c * d for c, d in zip(self.neg_cov, self.probe_dh, strict=True))
            den = sum(c * c for c in self.neg_cov)
            eta = max(num / den, 0.0) if den > 0 else None
            out["dyn/eta_hat"] = eta
            out["dyn/pred_dH"] = None if eta is None else eta * -covariance
            change = entropy_change(probe_before, probe_after, probe_mask, bins=self.bins)
            self.neg_cov.append(-covariance)
            self.probe_dh.append(change.delta)
            agree = [
                (c > 0) == (d > 0)
                for c, d in zip(self.neg_cov, self.probe_dh, strict=True)
                if c != 0 and d != 0
            ]
            out.update(
                {
                    "dyn/probe_H_before": change.mean_before,
                    "dyn/probe_H_after": change.mean_after,
                    "dyn/probe_dH": change.delta,
                    "dyn/sign_agree": sum(agree) / len(agree) if agree else None,
                    "dyn/pred_corr": _pearson(self.neg_cov, self.probe_dh),
                    "dyn/decile_dH": change.bin_delta,
                }
            )
            if self.reference is not None:
                ref = torch.tensor(self.reference, dtype=torch.float64)
                if ref.shape == probe_after.shape:
                    cum = entropy_change(
                        ref, probe_after.double(), probe_mask, bins=self.bins, reference=ref
                    )
                    out["dyn/decile_dH_cum"] = cum.bin_delta
                    out["dyn/probe_dH_cum"] = cum.delta
        self.law.update(entropy, reward)
        fit = None
        if self.law.n >= self.law_min_points:
            try:
                fit = self.law.fit()
            except EntrolabError:  # entropies all equal so far: a not identifiable yet
                fit = None
        out["law/a"] = None if fit is None else fit.a
        out["law/b"] = None if fit is None else fit.b
        out["law/r2"] = None if fit is None else fit.r2
        out["law/ceiling"] = None if fit is None else fit.ceiling
        return out

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (for checkpoints)."""
        return {
            "bins": self.bins,
            "law_min_points": self.law_min_points,
            "neg_cov": list(self.neg_cov),
            "probe_dh": list(self.probe_dh),
            "law": self.law.state_dict(),
            "reference": self.reference,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.bins = int(state["bins"])
        self.law_min_points = int(state["law_min_points"])
        self.neg_cov = [float(x) for x in state["neg_cov"]]
        self.probe_dh = [float(x) for x in state["probe_dh"]]
        self.law.load_state_dict(dict(state["law"]))
        self.reference = state["reference"]
