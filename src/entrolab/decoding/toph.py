"""Top-H decoding: keep the most likely tokens while the kept set's entropy stays within a budget.

Potraghloo, Azizi, Kundu, Pedram 2025, "Top-H Decoding: Adapting the Creativity and Coherence
with Bounded Entropy in Text Generation", arXiv:2509.02510 (code: ErfanBaghaei/Top-H-Decoding).

Tokens are added in descending probability p_1 ≥ p_2 ≥ … (p = softmax of the logits received,
i.e. after the base temperature) while a bound holds; the kept set is always a prefix, at least
one token long, and never contains a zero-probability token. Two rules:

``mode="released"`` (default) — the authors' released processor (``logit_processor.py``), which
produced the paper's numbers: over the top ``n = top_n`` tokens (p over the full vocabulary,
*not* renormalised) with the partial entropy S(k) = −Σ_{i≤k} p_i log p_i, keep the largest k with
S(k) ≤ α·S(n), clamped to [1, n]. The released code states its test as
H(q_k) + … ≤ τ/σ_k + log σ_k, which is algebraically S(k) ≤ τ; it handles batch 1 in a Python
loop and overruns its index at α = 1 (here: k = n). Log base cancels (ratios), so nats are used.
transformers ≥ 4.57 ships a third variant (``TopHLogitsWarper``, ``top_h=`` in ``generate``) that
renormalises the top-n probabilities first; it equals this mode when V ≤ top_n (tested).

``mode="paper"`` — the paper's constraint H(q_S) ≤ α·H(p) with H(p) over the full vocabulary
and q_S = p restricted to S, renormalised. With running sums σ_k = Σ_{i≤k} p_i and
A_k = Σ_{i≤k} p_i log p_i, H(q_k) = log σ_k − A_k/σ_k, an O(k) scan. H(q_k) is non-decreasing in
k when tokens come in descending order (adding a token with share r ≤ 1/(k+1) changes H by
h(r) − r·H(q_k) ≥ h(r) − r·log k ≥ 0), so the greedy stop is the largest feasible prefix.
How far to scan: the kept set can be far longer than 100 for a flat distribution (uniform over V
keeps V^α tokens), so the scan starts with the top ``top_n`` tokens and, only for rows whose
whole window still satisfies the bound, widens the window 8× (…, up to V) — exact for every row,
O(V + n log n) per step in the common case. ``top_n`` is therefore a speed knob in paper mode
and part of the rule in released mode. α = 1 keeps every token with p > 0.

Degenerate distributions: for a near one-hot distribution whose tail is flat (many tokens of
equal tiny probability), *both* rules keep about α·(n − 1) tail tokens, because each tail token
adds the same entropy; the mass they carry is negligible (``retained_mass`` ≈ 1). With a
decaying tail, or a tail that underflows to p = 0, a single token is kept.
"""

from __future__ import annotations

from typing import Literal

import torch

from entrolab.decoding.base import (
    WarperProcessor,
    as_rows,
    check_choice,
    check_int,
    check_number,
    compute_dtype,
    log_normalizer,
    scatter_kept,
)

__all__ = ["TOP_H_MODES", "TopHLogitsProcessor", "top_h", "top_h_keep_counts"]

TopHMode = Literal["released", "paper"]
TOP_H_MODES: tuple[str, ...] = ("released", "paper")
_WIDEN = 8  # paper mode: window growth factor for rows whose whole window is feasible


def _check_args(
    alpha: float, mode: str, top_n: int, owner: str = "top_h"
) -> tuple[float, str, int]:
    a = check_number("alpha", alpha, low=0.0, high=1.0, low_open=True, owner=owner)
    return (
        a,
        check_choice("mode", mode, TOP_H_MODES, owner=owner),
        check_int("top_n", top_n, owner=owner),
    )


def _prefix(ok: torch.Tensor, p: torch.Tensor, monotone: bool = False) -> torch.Tensor:
    """Greedy stop at the first violation: ``ok`` [N, m] → prefix mask, first token always kept,
    zero-probability tokens never kept. ``monotone``: ``ok`` is already a prefix (skip the scan)."""
    ok = ok & (p > 0)
    ok[:, 0] = True
    return ok if monotone else ok.to(torch.int8).cumprod(dim=-1).bool()


def _released(x: torch.Tensor, lse: torch.Tensor, alpha: float, top_n: int):
    """Rows x [N, V] (compute dtype) → (index [N, n], keep [N, n])."""
    vals, idx = x.topk(min(top_n, x.shape[-1]), dim=-1)  # sorted, descending
    logp = vals - lse
    p = logp.exp()
    partial = torch.special.entr(p).cumsum(dim=-1)  # S(k) = −Σ_{i≤k} p_i log p_i
    tau = alpha * partial[:, -1:]
    # S(k) is a running sum of terms >= 0, non-decreasing even in floating point, and p is
    # sorted, so `partial <= tau` and `p > 0` are prefixes already
    return idx, _prefix(partial <= tau, p, monotone=True)


def _paper_window(x: torch.Tensor, lse: torch.Tensor, budget: torch.Tensor, m: int):
    """Rows x [N, V] → (index [N, m], keep [N, m]) for the constraint H(q_k) ≤ budget [N, 1]."""
    vals, idx = x.topk(m, dim=-1)
    logp = vals - lse
    p = logp.exp()
    sigma = p.cumsum(dim=-1)
    a = (-torch.special.entr(p)).cumsum(dim=-1)  # A_k = Σ_{i≤k} p_i log p_i
    h_q = sigma.log() - a / sigma  # entropy of the renormalised prefix
    return idx, _prefix(h_q <= budget, p)


def _keep_rows(x: torch.Tensor, alpha: float, mode: str, top_n: int, original: torch.Tensor):
    """Yield (rows, index, keep) blocks covering every row of x [N, V] exactly once."""
    lse = log_normalizer(x, original)
    v = x.shape[-1]
    if mode == "released":
        idx, keep = _released(x, lse, alpha, top_n)
        yield None, idx, keep
        return
    p_full = (x - lse).exp()
    h = torch.special.entr(p_full).sum(-1, keepdim=True)
    budget = torch.full_like(h, float("inf")) if alpha == 1.0 else alpha * h
    rows: torch.Tensor | None = None  # None = all rows
    m = min(top_n, v)
    while True:
        sub = (slice(None),) if rows is None else (rows,)
        idx, keep = _paper_window(x[sub], lse[sub], budget[sub], m)
        if m >= v:
            yield rows, idx, keep
            return
        open_ = keep[:, -1]  # the whole window is feasible: the prefix may continue past it
        if not bool(open_.any()):
            yield rows, idx, keep
            return
        done = (~open_).nonzero().flatten()
        base = torch.arange(x.shape[0], device=x.device) if rows is None else rows
        if done.numel():
            yield base[done], idx[done], keep[done]
        rows = base[open_.nonzero().flatten()]
        m = min(v, m * _WIDEN)


def top_h(
    logits: torch.Tensor, alpha: float = 0.4, mode: TopHMode = "released", top_n: int = 100
) -> torch.Tensor:
    """Top-H truncation of logits [..., V] → new logits [..., V] (removed tokens → ``-inf``).

    Args:
        logits: [..., V] (already divided by the sampling temperature); ``-inf`` = removed.
        alpha: entropy budget factor in (0, 1]; the paper recommends 0.3–0.5 (code default 0.4).
        mode: ``"released"`` (default; the authors' code) or ``"paper"`` (the paper's bound over
            the full vocabulary); see the module docstring.
        top_n: candidates (released: part of the rule; paper: first scan window only).
    Returns:
        a new tensor, same shape and dtype; kept tokens keep their input logit. Computation is
        in float32 (float64 for float64 input). Per row: one logsumexp over V, one top-n, an
        O(n) scan — O(V + n log n).
    """
    alpha, mode, top_n = _check_args(alpha, mode, top_n)
    rows = as_rows(logits)
    x = rows.to(compute_dtype(rows.dtype))
    out = None
    for sel, idx, keep in _keep_rows(x, alpha, mode, top_n, logits):
        if sel is None:
            out = scatter_kept(rows, idx, keep)
            break
        if out is None:
            out = torch.full_like(rows, float("-inf"))
        out.index_copy_(0, sel, scatter_kept(rows[sel], idx, keep))
    assert out is not None
    return out.reshape(logits.shape)


def top_h_keep_counts(
    logits: torch.Tensor, alpha: float = 0.4, mode: TopHMode = "released", top_n: int = 100
) -> torch.Tensor:
    """Size of the Top-H kept set per row: int64 [...] (same rule as :func:`top_h`)."""
    return torch.isfinite(top_h(logits, alpha, mode, top_n)).sum(-1)


class TopHLogitsProcessor(WarperProcessor):
    """Top-H as a transformers ``LogitsProcessor`` (batched; any batch size).

    ``TopHLogitsProcessor(alpha=0.4, mode="released", top_n=100)``; use it after the
    temperature warper (entrolab's backend: ``GenerationConfig(sampler="top_h")``), or as
    ``model.generate(..., do_sample=True, temperature=T, logits_processor=[proc])``.
    """

    name = "top_h"

    def __init__(self, alpha: float = 0.4, mode: TopHMode = "released", top_n: int = 100) -> None:
        super().__init__()
        self.alpha, self.mode, self.top_n = _check_args(alpha, mode, top_n, "sampler top_h")
        self.params = {"alpha": self.alpha, "mode": self.mode, "top_n": self.top_n}

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        return top_h(logits, self.alpha, self.mode, self.top_n)
