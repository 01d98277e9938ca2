"""PPO-clip policy loss with asymmetric clip bounds (DAPO clip-higher) and dual clip.

Token loss ``L = max(−r·A, −clip(r, 1−ε_lo, 1+ε_hi)·A)`` with ``r = exp(ℓ − ℓ_old)``; with dual
clip ``c`` (Ye et al. 2020, verl ``clip_ratio_c``) tokens with A < 0 are further capped at
``−c·A``. Aggregated with any registered mode (default token-mean).

Defaults: ``ppo_clip`` uses verl's/TRL's ε_lo = ε_hi = 0.2; ``dapo`` uses DAPO's 0.2 / 0.28.
Both keep verl's default dual clip c = 3 (verl ``clip_ratio_c``, applied always; TRL has none:
pass ``dual_clip=None``). The official DAPO and 80/20 (forking-token) recipes, and STEER's, set
``clip_ratio_c=10``: pass ``dual_clip=10`` to reproduce them.
verl clamps ``ℓ − ℓ_old`` to ±20 before ``exp`` (``log_ratio_clamp``); TRL does not.
"""

from __future__ import annotations

from entrolab.rl.losses.core import (
    aggregate,
    checked_ppo,
    clip_metrics,
    finish,
)
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput

__all__ = ["dapo", "ppo_clip"]


def ppo_clip(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = 3.0,
    log_ratio_clamp: float | None = 20.0,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """PPO-clip loss (negative clipped surrogate), aggregated over response tokens.

    Args:
        inp: micro-batch input; uses ``logprobs``, ``old_logprobs``, ``advantages``,
            ``response_mask`` (all ``[B, T]``), ``ref_logprobs`` when ``kl_coef != 0`` and the
            global counts for aggregation.
        aggregation: a ``LOSS_AGGREGATIONS`` mode.
        clip_low, clip_high: ε_lo, ε_hi (ratio clipped to ``[1−ε_lo, 1+ε_hi]``).
        dual_clip: c > 1, cap ``−c·A`` for A < 0 tokens; None disables it.
        log_ratio_clamp: clamp of ``ℓ − ℓ_old`` before exp (None: no clamp).
        kl_coef, kl_type: optional KL(π_θ ‖ π_ref) penalty (see ``core.finish``).
    Returns:
        :class:`PolicyLossOutput`; metrics ``clip_frac_low``/``clip_frac_high`` (TRL names),
        ``clip_frac`` (verl ``pg_clipfrac``), ``dual_clip_frac`` (verl ``pg_clipfrac_lower``),
        ``touched_frac`` (tokens whose gradient clipping zeroed), ``effective_tokens``,
        ``approx_kl``, ``ppo_kl``, ``pg_loss``, …
    """
    c, tok, flags = checked_ppo(
        inp,
        "ppo_clip",
        aggregation,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        log_ratio_clamp=log_ratio_clamp,
    )
    pg = aggregate(tok, c.mask, inp, aggregation)
    metrics = clip_metrics(flags, c.mask)
    metrics["touched_frac"] = metrics["clip_frac"] + metrics["dual_clip_frac"]
    metrics["effective_tokens"] = float(c.n_tokens)
    return finish(pg, c, inp, aggregation, kl_coef=kl_coef, kl_type=kl_type, metrics=metrics)


def dapo(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = 3.0,
    log_ratio_clamp: float | None = 20.0,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """:func:`ppo_clip` with DAPO's clip-higher defaults (ε_lo = 0.2, ε_hi = 0.28, token-mean)."""
    return ppo_clip(
        inp,
        aggregation=aggregation,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        log_ratio_clamp=log_ratio_clamp,
        kl_coef=kl_coef,
        kl_type=kl_type,
    )
