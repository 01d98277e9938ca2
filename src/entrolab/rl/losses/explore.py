"""Losses of the exploring-rollout recipes: ECHO's confidence-adaptive clipping and agentic
AEPO's stop-gradient clipping of high-entropy tokens.

``echo_clip`` (Zhao et al. 2026, ECHO; user683/ECHO ``dp_actor`` passes a per-sequence
``clip_epsilon`` as both bounds of verl's vanilla loss): PPO-clip with ``ε_b`` per sequence, read
from ``inp.sequence_info["clip_epsilon"]`` ([B]; computed by
:func:`entrolab.rl.ttrl.echo_clip_epsilon`), falling back to ``clip`` when absent.

``aepo_agentic`` (Dong et al. 2025, Agentic Entropy-Balanced PO, arXiv:2510.14545; spec §3.6 B):
PPO-clip, except that on high-entropy tokens (entropy ≥ the ``entropy_quantile`` quantile of the
micro-batch's response tokens) the clipped branch is replaced by the stop-gradient form
``−(1+ε_h)·r/sg(r)·A`` (A > 0, r > 1+ε_h) or ``−(1−ε_l)·r/sg(r)·A`` (A < 0, r < 1−ε_l): the forward
value equals the clipped value, the gradient ``−(1±ε)·A·∇ℓ`` survives (GPPO / CE-GPPO style).
Metric ``hi_clip_grad_frac``: share of clipped high-entropy tokens whose gradient is non-zero
(1 with ``sg_clip=True``, 0 with plain PPO-clip). Selection is per micro-batch (the quantile of
the tokens seen by the loss).
"""

from __future__ import annotations

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.losses.core import (
    aggregate,
    check_clip,
    check_input,
    checked_ppo,
    clip_metrics,
    entropy_input,
    finish,
    frac,
    log_ratio,
)
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput

__all__ = ["aepo_agentic", "echo_clip"]


def echo_clip(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    clip: float = 0.2,
    log_ratio_clamp: float | None = 20.0,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """PPO-clip with a per-sequence clip range ``ε_b`` (``sequence_info["clip_epsilon"]`` [B]).

    Token loss ``max(−r·A, −clip(r, 1−ε_b, 1+ε_b)·A)``; metrics as ``ppo_clip`` plus
    ``clip_epsilon`` (mean ε over sequences)."""
    c = check_input(inp, "echo_clip", aggregation)
    eps = None if inp.sequence_info is None else inp.sequence_info.get("clip_epsilon")
    if eps is None:
        eps = torch.full((c.mask.shape[0],), float(clip))
    eps = eps.to(c.logprobs.dtype).reshape(-1, 1)
    if eps.shape[0] != c.mask.shape[0] or bool(((eps < 0) | (eps > 1)).any()):
        raise EntrolabError("echo_clip: clip_epsilon must be [B] values in [0, 1]")
    ratio = torch.exp(log_ratio(c, log_ratio_clamp))
    adv = c.advantages
    tok = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1.0 - eps, 1.0 + eps))
    tok = torch.where(c.mask, tok, 0.0)
    r = ratio.detach()
    flags = {
        "low": (r < 1.0 - eps) & (adv < 0) & c.mask,
        "high": (r > 1.0 + eps) & (adv > 0) & c.mask,
        "dual": torch.zeros_like(c.mask),
        "ratio": r,
    }
    metrics = clip_metrics(flags, c.mask)
    metrics["touched_frac"] = metrics["clip_frac"]
    metrics["clip_epsilon"] = float(eps.mean())
    pg = aggregate(tok, c.mask, inp, aggregation)
    return finish(pg, c, inp, aggregation, kl_coef=kl_coef, kl_type=kl_type, metrics=metrics)


def aepo_agentic(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    entropy_quantile: float = 0.8,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    sg_clip: bool = True,
    log_ratio_clamp: float | None = 20.0,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """PPO-clip with stop-gradient clipping on high-entropy tokens (see module docstring).

    Needs ``inp.entropy`` ([B, T] nats, no gradient needed)."""
    if not 0 <= entropy_quantile <= 1:
        raise EntrolabError(
            f"aepo_agentic: entropy_quantile must be in [0, 1], got {entropy_quantile}"
        )
    entropy_input(inp, "aepo_agentic")  # fails early, with the fix, when it is missing
    check_clip(clip_low, clip_high, None, "aepo_agentic")
    c, tok, flags = checked_ppo(
        inp,
        "aepo_agentic",
        aggregation,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=None,
        log_ratio_clamp=log_ratio_clamp,
    )
    h = inp.entropy.detach().double()
    vals = h[c.mask]
    thr = torch.quantile(vals, entropy_quantile) if vals.numel() else torch.tensor(float("inf"))
    high_h = (h >= thr) & c.mask
    clipped = (flags["high"] | flags["low"]) & high_h
    if sg_clip:
        ratio = torch.exp(log_ratio(c, log_ratio_clamp))
        bound = torch.where(c.advantages > 0, 1.0 + clip_high, 1.0 - clip_low)
        sg = -bound * ratio / ratio.detach() * c.advantages
        tok = torch.where(clipped, sg, tok)
    pg = aggregate(tok, c.mask, inp, aggregation)
    metrics = clip_metrics(flags, c.mask)
    metrics["touched_frac"] = metrics["clip_frac"]
    metrics["high_entropy_frac"] = frac(high_h, c.mask)
    metrics["hi_clipped_frac"] = frac(clipped, c.mask)
    n_clip = int(clipped.sum())
    if n_clip:  # d tok/dℓ = −(1±ε)·A on sg-clipped tokens, 0 on plainly clipped ones
        live = clipped & (c.advantages != 0) if sg_clip else torch.zeros_like(clipped)
        metrics["hi_clip_grad_frac"] = int(live.sum()) / n_clip
    return finish(pg, c, inp, aggregation, kl_coef=kl_coef, kl_type=kl_type, metrics=metrics)
