"""UCAS: uncertainty-aware advantage shaping (Xie et al. 2025, arXiv:2510.10649).

Two stages on top of a group advantage ``A_i`` (GRPO in the paper), all under no-grad:

1. response level: the response's self-certainty ``c_i = Σ_t sc_t`` (a *sum* over its tokens of
   ``sc_t = logsumexp(z_t) − mean_v z_t``, temperature-scaled logits) is z-scored within its group
   → ``ĉ_i``; then ``A'_i = A_i·exp(−β₊·ĉ_i)`` if ``A_i > 0`` else ``A_i·exp(β₋·ĉ_i)``
   (confident correct answers are damped, confident wrong ones punished harder);
2. token level: ``A_{i,t} = A'_i − λ·minmax(z_{i,t})`` with ``z`` the raw logit of the sampled
   token and min-max over all response tokens of the batch (0.5 everywhere if they are all
   equal); where ``A'_i > 0`` the result is clamped at ≥ 0.

Defaults follow the official code (xvolcano02/UCAS ``compute_ucas_advantage``, hard-coded):
β₊ 0.25, β₋ 0.35, λ 0.05, ε 1e-6, z-scoring with the unbiased group std.

Departure: the official sum of self-certainties runs over every position of the padded response
(padding positions included); here it runs over response tokens only, so a response's
certainty does not depend on how much padding its batch has.
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
    group_view,
)

__all__ = ["batch_minmax", "group_zscore", "ucas"]


def group_zscore(values: Tensor, *, eps: float = 1e-6, scale: bool = True) -> Tensor:
    """``(v − mean_G v) / (std_G v + ε)`` per group (unbiased std; G = 1 → mean 0, std 1);
    ``scale=False`` only centres. ``[N, G]`` → ``[N, G]``."""
    if values.shape[1] == 1:
        return values.clone()
    centred = values - values.mean(dim=1, keepdim=True)
    if not scale:
        return centred
    return centred / (values.std(dim=1, keepdim=True) + eps)


def batch_minmax(values: Tensor, mask: Tensor, *, eps: float = 1e-6) -> Tensor:
    """Min-max scaling of ``values`` [R, T] over the masked tokens of the whole batch:
    ``(v − min)/(max − min + ε)``, 0.5 on every token when max ≈ min, 0 on padding."""
    if not bool(mask.any()):
        return torch.zeros_like(values)
    lo, hi = values[mask].min(), values[mask].max()
    if bool(torch.isclose(hi, lo)):
        out = torch.full_like(values, 0.5)
    else:
        out = (values - lo) / (hi - lo + eps)
    return out * mask


def ucas(
    adv: Tensor,
    inputs: ShapingInputs,
    *,
    beta_pos: float = 0.25,
    beta_neg: float = 0.35,
    lam: float = 0.05,
    eps: float = 1e-6,
    scale_certainty: bool = True,
) -> ShapedAdvantages:
    """UCAS shaping of per-token advantages.

    Args:
        adv: ``[R, T]`` base advantages (a sequence advantage broadcast over its tokens).
        inputs: needs ``self_certainty`` and ``token_logits`` ``[R, T]``.
        beta_pos / beta_neg: β₊ / β₋ of stage 1. lam: λ of stage 2 (0 disables it).
        eps: ε of the group z-score and of the min-max scaling.
        scale_certainty: divide the centred certainty by its group std (the official code ties
            this to ``norm_adv_by_std_in_grpo``; set False with a Dr.GRPO base).
    Returns:
        ``[R, T]`` float32 advantages (0 on padding); metrics ``certainty_mean`` (mean per-response
        certainty sum), ``amplified_frac`` (responses whose |A| grew in stage 1).
    """
    if beta_pos < 0 or beta_neg < 0 or lam < 0:
        raise EntrolabError("ucas: beta_pos, beta_neg and lam must be >= 0")
    a = check_token_advantages(adv, inputs, "ucas")
    mask = inputs.response_mask
    sc = check_per_token(inputs.need("self_certainty", "ucas"), inputs, "self_certainty", "ucas")
    z = check_per_token(inputs.need("token_logits", "ucas"), inputs, "token_logits", "ucas")
    g = inputs.group_size
    certainty = group_view(sc.sum(dim=-1), g)  # [N, G], Σ over response tokens
    c_hat = group_zscore(certainty, eps=eps, scale=scale_certainty).reshape(-1, 1)  # [R, 1]
    modifier = torch.where(a > 0, torch.exp(-beta_pos * c_hat), torch.exp(beta_neg * c_hat))
    stage1 = a * modifier
    raw = stage1 - lam * batch_minmax(z, mask, eps=eps)
    out = torch.where(stage1 > 0, raw.clamp(min=0.0), raw) * mask
    rows = mask.any(dim=-1)
    first = mask.float().argmax(dim=-1)  # first response token of each row
    idx = torch.arange(len(mask))
    grew = (stage1[idx, first].abs() > a[idx, first].abs()) & rows
    return ShapedAdvantages(
        out.float(),
        {
            "certainty_mean": float(certainty.mean()),
            "amplified_frac": float(grew.float().sum() / rows.float().sum().clamp(min=1)),
        },
    )
