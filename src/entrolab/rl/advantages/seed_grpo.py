"""SEED-GRPO: semantic-entropy-scaled advantages (Chen et al. 2025, arXiv:2505.12346).

``Â_i = A_i · f(α · SE(q) / SE_max)`` with ``SE_max = log G``: a group whose answers disagree
(high semantic entropy) gets a smaller update. Everything is detached. ``f`` is decreasing on
``x ≥ 0`` with ``f(0) = 1``:

* ``linear``: ``max(1 − x, 0)``;
* ``exponential``: ``exp(−x)``;
* ``focal``: ``max(1 − x, 0)^γ`` (γ = ``gamma``).

The exact f forms and α are not given in a released implementation (none was found); these are
our reading of the paper's "linear, exponential, focal" [U]. The semantic entropy itself is
computed outside this pure module by :func:`entrolab.rl.shaping.semantic_entropy_per_group`
with :mod:`entrolab.estimators` (answer-equivalence clusters; count-based
``discrete_semantic_entropy`` or probability-mass ``semantic_entropy_rao``), bounded by log G.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from entrolab.errors import EntrolabError
from entrolab.rl.advantages.inputs import ShapedAdvantages, ShapingInputs, check_token_advantages

__all__ = ["SEED_SCALINGS", "seed_grpo", "seed_scale"]

SEED_SCALINGS = ("linear", "exponential", "focal")


def seed_scale(x: Tensor, kind: str = "linear", *, gamma: float = 2.0) -> Tensor:
    """The decreasing scale ``f(x)`` for ``x = α·SE/SE_max ≥ 0`` (``f(0) = 1``, ``f ≥ 0``)."""
    if kind == "linear":
        return (1.0 - x).clamp(min=0.0)
    if kind == "exponential":
        return torch.exp(-x)
    if kind == "focal":
        return (1.0 - x).clamp(min=0.0) ** gamma
    raise EntrolabError(
        f"seed_grpo: scaling must be one of {', '.join(SEED_SCALINGS)}, got {kind!r}"
    )


def seed_grpo(
    adv: Tensor,
    inputs: ShapingInputs,
    *,
    alpha: float = 1.0,
    scaling: str = "linear",
    gamma: float = 2.0,
) -> ShapedAdvantages:
    """Scale each group's advantages by ``f(α·SE/log G)``.

    Args:
        adv: ``[R, T]`` base advantages. inputs: needs ``semantic_entropy`` ``[N]`` (nats).
        alpha: α ≥ 0, sensitivity to uncertainty. scaling: f (see module doc). gamma: focal γ.
    Returns:
        ``[R, T]`` float32; metrics ``se_mean`` and ``scale_mean`` (mean f over groups).
    """
    if alpha < 0 or gamma <= 0:
        raise EntrolabError("seed_grpo: alpha must be >= 0 and gamma > 0")
    a = check_token_advantages(adv, inputs, "seed_grpo")
    se = inputs.need("semantic_entropy", "seed_grpo").detach().to(torch.float64).reshape(-1)
    g = inputs.group_size
    if se.numel() != inputs.rewards.shape[0] or not bool(torch.isfinite(se).all()):
        raise EntrolabError("seed_grpo: semantic_entropy must be finite, one value per prompt [N]")
    if bool((se < -1e-9).any()):
        raise EntrolabError("seed_grpo: semantic entropy must be >= 0 (nats)")
    se_max = math.log(g)
    scale = seed_scale(alpha * se.clamp(min=0.0) / se_max, scaling, gamma=gamma)  # [N]
    out = a * scale.repeat_interleave(g)[:, None]
    return ShapedAdvantages(
        out.float(), {"se_mean": float(se.mean()), "scale_mean": float(scale.mean())}
    )
