"""STEER (Hao et al. 2025, "Rethinking Entropy Interventions in RLVR: An Entropy Change
Perspective", arXiv:2510.10150): reweight each token by its estimated first-order contribution to
the step's entropy change, so that the per-step entropy change stays moderate.

Per token (no gradient; ``p = exp ℓ`` with ℓ the *current* log-prob, H the current entropy)::

    Ω = | A / π_old(y) · p (1 − p) · (log p + H) |          (non-finite Ω → 0)

``p`` is clamped to [1e-8, 1 − 1e-8] and ``π_old = exp ℓ_old`` to [1e-8, 1], as the official
``compute_token_weights``. Ω is mapped to a weight ``w`` over the valid tokens in scope:

* ``mapping="linear"`` (default): ``w = w_max − (Ω − Ω_min)·(w_max − w_min)/(Ω_max − Ω_min)``
  clamped to [w_min, w_max] (all Ω equal: ``(w_min + w_max)/2``); the largest |Ω| gets w_min;
* ``mapping="exp"``: ``w = clamp(exp(−k·Ω), w_min, 1)`` with ``k = −ln(w_min)/max(Ω_max, 0.02)``.

Loss: the dual-clip PPO token loss times ``w``, aggregated over all response tokens (w ≥ 0, so
this equals PPO with ``A ← w·A``).

Defaults, paper recipe vs official code (ours first):

====================  ===========================  ==========================================
parameter             recipe (run/run_linear.sh)   official function defaults
====================  ===========================  ==========================================
weight_min / max      0.8 / 1.2 (linear)           0.8 / 1.2; exp map: 0.8 / 1 (w ≤ 1 always)
clip_low / high       0.2 / 0.28                   from actor.clip_ratio_low/high
dual_clip             **10** (clip_ratio_c=10)     3.0 (verl's default ``clip_ratio_c``)
log_ratio_clamp       20 (verl)                    20
aggregation           token-mean                   token-mean
====================  ===========================  ==========================================

Scope of Ω_min / Ω_max: ``"micro_batch"`` (the official code: the valid tokens of the micro-batch
the loss is called with) or ``"batch"`` (from :func:`prepare_steer` on the whole optimisation
batch, so the weights do not depend on the micro-batch size).
"""

from __future__ import annotations

import math

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.losses.core import (
    Checked,
    aggregate,
    check_input,
    check_scope,
    checked_ppo,
    clip_metrics,
    entropy_input,
    finish,
    frac,
    masked_mean_f,
)
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput

__all__ = ["prepare_steer", "steer", "steer_omega", "steer_weights"]

_MAPPINGS = ("linear", "exp")


def steer_omega(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    entropy: torch.Tensor,
) -> torch.Tensor:
    """|Ω| per token ``[B, T]`` (no gradient): ``|A/π_old · p(1−p)(log p + H)|``, non-finite → 0."""
    with torch.no_grad():
        p = torch.exp(logprobs.detach()).clamp(1e-8, 1.0 - 1e-8)
        f = p * (1 - p) * (torch.log(p) + entropy.detach().to(p.dtype))
        old_p = torch.exp(old_logprobs.detach()).clamp(1e-8, 1.0)
        omega = advantages.detach() / old_p * f
        omega = torch.where(torch.isfinite(omega), omega, torch.zeros((), dtype=omega.dtype))
        return omega.abs()


def steer_weights(
    omega: torch.Tensor,
    mask: torch.Tensor,
    *,
    mapping: str = "linear",
    weight_min: float = 0.8,
    weight_max: float = 1.2,
    omega_min: float | torch.Tensor | None = None,
    omega_max: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Token weights ``[B, T]`` from |Ω| (0 off-mask). ``omega_min``/``omega_max`` default to the
    min/max of |Ω| over ``mask`` (pass the batch's values for batch scope)."""
    valid = omega[mask]
    if valid.numel() == 0:
        return torch.zeros_like(omega)
    lo = valid.min() if omega_min is None else torch.as_tensor(omega_min, dtype=omega.dtype)
    hi = valid.max() if omega_max is None else torch.as_tensor(omega_max, dtype=omega.dtype)
    if mapping == "linear":
        if bool(hi > lo):
            w = weight_max - (omega - lo) * ((weight_max - weight_min) / (hi - lo))
        else:
            w = torch.full_like(omega, (weight_min + weight_max) / 2)
        w = w.clamp(weight_min, weight_max)
    else:
        k = -math.log(weight_min) / torch.clamp(hi, min=0.02)
        w = torch.exp(-k * omega).clamp(weight_min, 1.0)
    return torch.where(mask, w, torch.zeros((), dtype=w.dtype))


def _check(mapping: str, weight_min: float, weight_max: float) -> None:
    if mapping not in _MAPPINGS:
        raise EntrolabError(f"steer: mapping must be one of {_MAPPINGS}, got {mapping!r}")
    if not 0 < weight_min <= weight_max:
        raise EntrolabError(
            f"steer: need 0 < weight_min <= weight_max, got {weight_min}, {weight_max}"
        )
    if mapping == "exp" and not weight_min < 1:
        raise EntrolabError("steer: the exp mapping needs weight_min < 1 (k = −ln w_min > 0)")


def _omega(c: Checked, inp: PolicyLossInput) -> torch.Tensor:
    h = torch.where(c.mask, entropy_input(inp, "steer").to(c.logprobs.dtype), 0.0)
    return torch.where(c.mask, steer_omega(c.logprobs, c.old_logprobs, c.advantages, h), 0.0)


def prepare_steer(inp: PolicyLossInput, **_: object) -> dict[str, torch.Tensor]:
    """Whole-batch ``omega_min`` / ``omega_max`` (|Ω| over the batch's response tokens) for
    ``steer(selection_scope="batch")``."""
    with torch.no_grad():
        c = check_input(inp, "steer", "token-mean")
        valid = _omega(c, inp)[c.mask]
        if valid.numel() == 0:
            lo = hi = torch.zeros((), dtype=torch.float64)
        else:
            lo, hi = valid.min().double(), valid.max().double()
    return {"omega_min": lo, "omega_max": hi}


def steer(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    mapping: str = "linear",
    weight_min: float = 0.8,
    weight_max: float = 1.2,
    selection_scope: str = "micro_batch",
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = 10.0,
    log_ratio_clamp: float | None = 20.0,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """STEER loss: dual-clip PPO with entropy-change-aware token weights.

    Args:
        inp: micro-batch input; needs ``entropy`` ``[B, T]`` (current policy, no grad needed);
            ``selection`` from :func:`prepare_steer` in batch scope.
        aggregation: a ``LOSS_AGGREGATIONS`` mode (official: token-mean).
        mapping: ``"linear"`` or ``"exp"`` (see the module docstring).
        weight_min, weight_max: weight range (exp mapping: only weight_min is used, max is 1).
        selection_scope: scope of Ω_min / Ω_max: ``"micro_batch"`` (official) or ``"batch"``.
        clip_low, clip_high, dual_clip, log_ratio_clamp: as :func:`ppo_clip` (recipe 0.2/0.28/10).
        kl_coef, kl_type: optional KL(π_θ ‖ π_ref) penalty.
    Returns:
        :class:`PolicyLossOutput`; metrics add ``weight_mean``/``weight_min``/``weight_max``
        (over response tokens), ``omega_mean``, ``touched_frac`` (tokens with w ≠ 1).
    """
    _check(mapping, weight_min, weight_max)
    check_scope(selection_scope, "steer")
    c, tok, flags = checked_ppo(
        inp,
        "steer",
        aggregation,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        log_ratio_clamp=log_ratio_clamp,
    )
    omega = _omega(c, inp)
    lo = hi = None
    if selection_scope == "batch":
        sel = inp.selection
        if sel is None or "omega_min" not in sel or "omega_max" not in sel:
            raise EntrolabError(
                "steer: selection_scope='batch' needs inp.selection from "
                "entrolab.rl.losses.prepare_selection('steer', whole_batch_input), passed to every "
                "micro-batch (or use selection_scope='micro_batch')"
            )
        lo, hi = sel["omega_min"].to(omega.dtype), sel["omega_max"].to(omega.dtype)
    w = steer_weights(
        omega,
        c.mask,
        mapping=mapping,
        weight_min=weight_min,
        weight_max=weight_max,
        omega_min=lo,
        omega_max=hi,
    ).to(tok.dtype)
    pg = aggregate(tok * w, c.mask, inp, aggregation)
    metrics = clip_metrics(flags, c.mask)
    valid = w[c.mask]
    metrics["weight_mean"] = masked_mean_f(w, c.mask)
    metrics["weight_min"] = float(valid.min()) if valid.numel() else 0.0
    metrics["weight_max"] = float(valid.max()) if valid.numel() else 0.0
    metrics["omega_mean"] = masked_mean_f(omega, c.mask)
    metrics["touched_frac"] = frac((w - 1).abs() > 1e-12, c.mask)
    metrics["effective_tokens"] = float(c.n_tokens)
    return finish(pg, c, inp, aggregation, kl_coef=kl_coef, kl_type=kl_type, metrics=metrics)
