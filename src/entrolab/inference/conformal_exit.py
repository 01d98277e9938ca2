"""The split-conformal layer of LYNX exits (Akgül et al. 2025, arXiv:2512.05325).

A probe score g ∈ [0, 1] per cue estimates whether an answer forced at that cue would be correct
(ready, y = 1). Split conformal calibration on held-out not-ready cues (y = 0) picks τ̂ so that
exiting when g > τ̂ exits prematurely with probability ≤ δ:

    τ̂ = the ⌈(n₀ + 1)(1 − δ)⌉-th smallest calibration score of not-ready cues,
        τ̂ = +inf (never exit) when that rank exceeds n₀ (fewer than ⌈1/δ⌉ − 1 not-ready cues).

If calibration and test scores are exchangeable, P(g_test > τ̂ | y = 0) ≤ δ marginally
(≥ δ − 1/(n₀ + 1) for continuous scores). ``scope="cue"`` is the paper's per-cue rule; cues of
one trace are not independent, so ``scope="item"`` instead calibrates one score per item, the
largest g over its not-ready cues: then P(an item exits at a not-ready cue) ≤ δ exactly under
item exchangeability (stricter, fewer exits).

Pure tensor functions (float64); no model code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from entrolab.errors import EntrolabError

__all__ = ["ConformalExit", "Scope", "conformal_exit_threshold", "premature_exit_rates"]

Scope = Literal["cue", "item"]


@dataclass(frozen=True)
class ConformalExit:
    """A calibrated exit rule: exit when ``score > threshold``.

    Attributes:
        threshold: τ̂ (``inf``: never exit). delta: target premature-exit rate.
        scope: ``"cue"`` (per not-ready cue) or ``"item"`` (per item, max over its not-ready cues).
        n: calibration scores used (not-ready cues, or items). rank: k = ⌈(n + 1)(1 − δ)⌉.
        note: why τ̂ is +inf, when it is.
    """

    threshold: float
    delta: float
    scope: Scope
    n: int
    rank: int
    note: str = ""

    @property
    def never_exits(self) -> bool:
        return math.isinf(self.threshold) and self.threshold > 0

    def exits(self, scores: Any) -> torch.Tensor:
        """Bool mask: which scores exit (``score > threshold``)."""
        return torch.as_tensor(scores, dtype=torch.float64) > self.threshold

    def to_dict(self) -> dict[str, Any]:
        t = self.threshold
        return {
            "threshold": t if math.isfinite(t) else ("inf" if t > 0 else "-inf"),
            "delta": self.delta,
            "scope": self.scope,
            "n": self.n,
            "rank": self.rank,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConformalExit:
        return cls(
            float(d["threshold"]),
            float(d["delta"]),
            d["scope"],
            int(d["n"]),
            int(d["rank"]),
            str(d.get("note", "")),
        )


def _groupwise_max_not_ready(
    scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor
) -> torch.Tensor:
    out = []
    for g in torch.unique(groups).tolist():
        sel = (groups == g) & (labels == 0)
        out.append(scores[sel].max() if sel.any() else torch.tensor(-math.inf, dtype=torch.float64))
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


def conformal_exit_threshold(
    scores: Any,
    labels: Any,
    delta: float,
    *,
    scope: Scope = "cue",
    groups: Any = None,
) -> ConformalExit:
    """Split-conformal exit threshold from calibration cues.

    Args:
        scores: [M] probe scores g of the calibration cues (higher = readier).
        labels: [M] 1 = ready (forced answer correct), 0 = not ready.
        delta: target premature-exit rate in (0, 1).
        scope: ``"cue"``: S = scores of not-ready cues (n = n₀); ``"item"``: S = per item (from
            ``groups``), the max score over its not-ready cues (−inf if none), n = items.
        groups: [M] item index of each cue (``scope="item"`` only).

    Returns: τ̂ = the k-th smallest of S, k = ⌈(n + 1)(1 − δ)⌉; +inf when k > n.

    Raises:
        EntrolabError: empty input, NaN scores, δ outside (0, 1), or (cue scope) no not-ready
            calibration cue, so the premature-exit rate cannot be calibrated.
    """
    s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(labels).reshape(-1).long()
    if not 0 < delta < 1:
        raise EntrolabError(f"delta must be in (0, 1), got {delta}")
    if s.numel() == 0 or s.shape != y.shape:
        raise EntrolabError(
            f"need one label per calibration score and at least one cue, got {s.numel()} scores "
            f"and {y.numel()} labels; were any cues found in the calibration traces?"
        )
    if torch.isnan(s).any():
        raise EntrolabError("calibration scores contain NaN; check the probe's inputs")
    if scope == "cue":
        pool = s[y == 0]
        if pool.numel() == 0:
            raise EntrolabError(
                f"all {s.numel()} calibration cues are ready (label 1): there is no not-ready cue "
                "to calibrate the premature-exit rate on; use harder items or more of them"
            )
    elif scope == "item":
        if groups is None:
            raise EntrolabError("scope='item' needs `groups` (the item index of each cue)")
        g = torch.as_tensor(groups).reshape(-1)
        if g.shape != s.shape:
            raise EntrolabError(f"groups has {g.numel()} entries for {s.numel()} scores")
        pool = _groupwise_max_not_ready(s, y, g)
    else:
        raise EntrolabError(f"scope must be 'cue' or 'item', got {scope!r}")
    n = int(pool.numel())
    # ⌈(n + 1)(1 − δ)⌉ with a guard against float error ((99 + 1)·0.9 = 90.00000000000001).
    k = math.ceil((n + 1) * (1 - delta) - 1e-9)
    if k > n:
        need = math.ceil(1 / delta - 1 - 1e-9)
        return ConformalExit(
            math.inf, delta, scope, n, k,
            f"only {n} calibration {'cues' if scope == 'cue' else 'items'}; δ = {delta} needs at "
            f"least {need}, so the rule never exits",
        )  # fmt: skip
    return ConformalExit(float(torch.sort(pool).values[k - 1]), delta, scope, n, k)


def premature_exit_rates(
    scores: Any, labels: Any, groups: Any, threshold: float
) -> dict[str, float]:
    """Held-out exit statistics of ``score > threshold``; cues of a group in time order.

    Returns ``cue_rate`` (fraction of not-ready cues that would exit: what ``scope="cue"``
    bounds), ``item_rate`` (fraction of items whose FIRST exiting cue is not ready: a premature
    exit, what ``scope="item"`` bounds), ``exit_rate`` (fraction of items that exit at all).
    """
    s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(labels).reshape(-1).long()
    g = torch.as_tensor(groups).reshape(-1)
    if s.numel() == 0 or not (s.shape == y.shape == g.shape):
        raise EntrolabError("need equally long, non-empty scores, labels and groups")
    fire = s > threshold
    n0 = int((y == 0).sum())
    items = torch.unique(g).tolist()
    premature = exited = 0
    for it in items:
        idx = (g == it).nonzero().flatten()
        hit = idx[fire[idx]]
        if hit.numel():
            exited += 1
            premature += int(y[hit[0]] == 0)
    return {
        "cue_rate": float((fire & (y == 0)).sum()) / n0 if n0 else 0.0,
        "item_rate": premature / len(items),
        "exit_rate": exited / len(items),
    }
