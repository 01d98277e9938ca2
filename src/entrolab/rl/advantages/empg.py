"""EMPG: Entropy-Modulated Policy Gradients (Wang et al. 2025, arXiv:2509.09265).

Steps are segments of a response (here: lines of a multi-step solution, see
:func:`entrolab.rl.shaping.step_ids_from_pieces`). With ``H_s`` the mean token entropy of step s
(behaviour policy, detached) and ``H̃`` its min-max normalisation over every step of the batch:

* ``g(H_s) = exp(−k·H̃_s) / mean_batch exp(−k·H̃)`` — self-normalised to batch mean 1, so
  confident steps get larger updates (either sign) and uncertain steps smaller ones;
* ``f(H_{s+1}) = exp(−k_f·H̃_{s+1})`` — "future clarity" of the next step (0 after the last);
* ``Ã_{i,s} = g(H_s)·A_i + ζ·f(H_{s+1})`` on every token of step s;
* finally the advantages are centred over the batch's response tokens (``center=True``;
  the paper's final zero-mean normalisation [paper/U]).

Defaults from the project page's pseudocode: k = 1, k_f = 1, ζ = 0.1. No code was released.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entrolab.errors import EntrolabError
from entrolab.rl.advantages.inputs import (
    ShapedAdvantages,
    ShapingInputs,
    check_per_token,
    check_token_advantages,
)

__all__ = ["empg", "empg_step_weights", "step_entropy"]


def step_entropy(entropy: Tensor, step_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean token entropy per step: ``[R, T]`` → ``(H [R, S], valid [R, S])`` with S the largest
    step count of a row; ``valid`` marks steps that have at least one token."""
    ids = torch.where(mask, step_ids, torch.full_like(step_ids, -1))
    s = int(ids.max()) + 1 if bool(mask.any()) else 0
    r = entropy.shape[0]
    total = torch.zeros(r, s + 1, dtype=torch.float64)
    count = torch.zeros(r, s + 1, dtype=torch.float64)
    slot = torch.where(ids >= 0, ids, torch.full_like(ids, s))  # padding → spare column s
    total.scatter_add_(1, slot, torch.where(mask, entropy, torch.zeros_like(entropy)))
    count.scatter_add_(1, slot, mask.to(torch.float64))
    total, count = total[:, :s], count[:, :s]
    valid = count > 0
    return torch.where(valid, total / count.clamp(min=1), torch.zeros_like(total)), valid


def empg_step_weights(
    step_h: Tensor, valid: Tensor, *, k: float = 1.0, k_f: float = 1.0
) -> tuple[Tensor, Tensor]:
    """``g(H_s)`` and ``f(H_{s+1})`` ``[R, S]`` from step entropies ``[R, S]`` (see module doc).

    Min-max over the valid steps of the batch (all equal → H̃ = 0); ``g`` has mean 1 over the
    valid steps; ``f`` is 0 where step s+1 does not exist; both 0 on invalid steps."""
    if not bool(valid.any()):
        return torch.zeros_like(step_h), torch.zeros_like(step_h)
    lo, hi = step_h[valid].min(), step_h[valid].max()
    span = hi - lo
    norm = (step_h - lo) / span if bool(span > 0) else torch.zeros_like(step_h)
    raw = torch.where(valid, torch.exp(-k * norm), torch.zeros_like(norm))
    g = raw / raw[valid].mean()
    clarity = torch.where(valid, torch.exp(-k_f * norm), torch.zeros_like(norm))
    f = torch.zeros_like(clarity)
    f[:, :-1] = clarity[:, 1:]
    return g, f


def empg(
    adv: Tensor,
    inputs: ShapingInputs,
    *,
    k: float = 1.0,
    k_f: float = 1.0,
    zeta: float = 0.1,
    center: bool = True,
) -> ShapedAdvantages:
    """EMPG step-modulated advantages.

    Args:
        adv: ``[R, T]`` base advantages. inputs: needs ``entropy`` and ``step_ids`` ``[R, T]``.
        k, k_f: sharpness of g and f. zeta: ζ, weight of the future-clarity bonus.
        center: subtract the mean over all response tokens of the batch at the end.
    Returns:
        ``[R, T]`` float32; metrics ``steps_mean`` (steps per response), ``g_min``/``g_max``.
    """
    if k < 0 or k_f < 0 or zeta < 0:
        raise EntrolabError("empg: k, k_f and zeta must be >= 0")
    a = check_token_advantages(adv, inputs, "empg")
    mask = inputs.response_mask
    h = check_per_token(inputs.need("entropy", "empg"), inputs, "entropy", "empg")
    ids = inputs.need("step_ids", "empg")
    if ids.shape != mask.shape:
        raise EntrolabError(f"empg: step_ids must have shape {tuple(mask.shape)}")
    ids = ids.to(torch.int64)
    if bool((ids[mask] < 0).any()):
        raise EntrolabError("empg: every response token needs a step id >= 0")
    step_h, valid = step_entropy(h, ids, mask)
    g, f = empg_step_weights(step_h, valid, k=k, k_f=k_f)
    safe = ids.clamp(min=0)
    g_tok, f_tok = g.gather(1, safe), f.gather(1, safe)
    out = (g_tok * a + zeta * f_tok) * mask
    if center and bool(mask.any()):
        out = (out - out[mask].mean()) * mask
    return ShapedAdvantages(
        out.float(),
        {
            "steps_mean": float(valid.sum(-1).to(torch.float64).mean()),
            "g_min": float(g[valid].min()) if bool(valid.any()) else 0.0,
            "g_max": float(g[valid].max()) if bool(valid.any()) else 0.0,
        },
    )
