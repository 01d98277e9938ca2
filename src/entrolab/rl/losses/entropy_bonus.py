"""Naive entropy bonus: PPO-clip loss minus ``β`` times the aggregated token entropy.

``L = L_ppo − β · agg(H, M)`` with the same aggregation mode and global counts as the policy term
(verl: ``policy_loss -= entropy_coeff · entropy``; OpenRLHF and TRL alike). **Sign:** ``β > 0``
*rewards* entropy (pushes it up); ``β < 0`` penalises it. The baseline that entropy-control papers
compare against: it acts on every response token, so it tends to explode entropy globally
(SIREN, arXiv:2509.25133).

Entropy source: ``inp.entropy`` (nats, temperature-scaled logits as sampled) must carry gradient
through θ; if it does not but ``inp.logits`` is given, the entropy is recomputed from the logits
(with gradient). Default β = 1e-3 (verl's former ``entropy_coeff`` default; verl and TRL now
default to 0, i.e. off).
"""

from __future__ import annotations

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.losses.core import (
    aggregate,
    checked_ppo,
    clip_metrics,
    finish,
)
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput
from entrolab.signals import token_entropy

__all__ = ["entropy_bonus", "entropy_for_grad"]


def entropy_for_grad(inp: PolicyLossInput, loss: str) -> torch.Tensor:
    """``[B, T]`` token entropy that carries gradient: ``inp.entropy`` or from ``inp.logits``."""
    needs_grad = torch.is_grad_enabled() and inp.logprobs.requires_grad
    if inp.entropy is not None and (inp.entropy.requires_grad or not needs_grad):
        return inp.entropy
    if inp.logits is not None:
        if inp.logits.dim() != 3 or tuple(inp.logits.shape[:2]) != tuple(inp.logprobs.shape):
            raise EntrolabError(
                f"{loss}: inp.logits must be [B, T, V] aligned with logprobs "
                f"{tuple(inp.logprobs.shape)}, got {tuple(inp.logits.shape)}"
            )
        return token_entropy(inp.logits)
    if inp.entropy is None:
        raise EntrolabError(
            f"{loss}: needs the token entropy: set inp.entropy ([B, T], nats, computed inside "
            "the autograd graph) or inp.logits ([B, T, V])"
        )
    raise EntrolabError(
        f"{loss}: inp.entropy has no gradient, so the bonus would not train anything; compute "
        "it from the logits inside the autograd graph (or pass inp.logits)"
    )


def entropy_bonus(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    entropy_coef: float = 1e-3,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = 3.0,
    log_ratio_clamp: float | None = 20.0,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """PPO-clip loss minus ``entropy_coef · agg(H)`` (β > 0 raises entropy).

    Args:
        inp: micro-batch input; needs ``entropy`` with gradient (or ``logits``).
        aggregation: mode used for both the policy term and the entropy term.
        entropy_coef: β. clip_low, clip_high, dual_clip, log_ratio_clamp: as :func:`ppo_clip`.
        kl_coef, kl_type: optional KL(π_θ ‖ π_ref) penalty.
    Returns:
        :class:`PolicyLossOutput`; metrics add ``entropy_term`` (= agg(H)) and
        ``touched_frac`` = 1 when β ≠ 0 (every response token is regularised).
    """
    c, tok, flags = checked_ppo(
        inp,
        "entropy_bonus",
        aggregation,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        log_ratio_clamp=log_ratio_clamp,
    )
    h = entropy_for_grad(inp, "entropy_bonus")
    h = torch.where(c.mask, h.float() if h.dtype not in (torch.float32, torch.float64) else h, 0.0)
    pg = aggregate(tok, c.mask, inp, aggregation)
    ent = aggregate(h, c.mask, inp, aggregation)
    metrics = clip_metrics(flags, c.mask)
    metrics["entropy_term"] = float(ent.detach())
    metrics["touched_frac"] = 1.0 if entropy_coef != 0 and c.n_tokens else 0.0
    metrics["effective_tokens"] = float(c.n_tokens)
    out = finish(
        pg,
        c,
        inp,
        aggregation,
        kl_coef=kl_coef,
        kl_type=kl_type,
        metrics=metrics,
        extra=-entropy_coef * ent,
    )
    return out
