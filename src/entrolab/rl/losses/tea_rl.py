"""Light-IF's entropy-aware training (Wang et al. 2025, "Light-IF: Endowing LLMs with
Generalizable Reasoning via Preview and Self-Checking for Complex Instruction Following",
arXiv:2508.03178): **TEA-RL** (token-wise entropy-adaptive RL) and **Entropy-SFT**.

No official code was available and the paper's exact weighting was not verified (spec §3.18 marks
the details [U]); both are implemented in the form the spec prescribes for the CPU check, with
every choice a parameter:

* :func:`entropy_token_weights` — ``w = clamp((H / H̄)^γ, w_min, w_max)`` per token, no gradient,
  H̄ the mean entropy over the response tokens in scope (γ = 1: weight ∝ H_t / mean H). Tokens
  more uncertain than average get more of the update, near-deterministic ones less.
* **TEA-RL** (:func:`tea_rl`): the PPO-clip token loss times ``w`` (w ≥ 0, so it equals PPO with
  ``A ← w·A``), aggregated over all response tokens.
* **Entropy-SFT** (:func:`entropy_sft_token_loss`): the SFT cross-entropy of each target token
  times ``w`` (entropy of the model's own prediction at that position), so low-entropy tokens the
  model already predicts contribute less and SFT does not collapse the entropy of the rest. Used
  by the proxy SFT stage (``sft.loss: entropy_sft``).

Defaults [ours]: γ = 1, w_min = 0.5, w_max = 2; base loss PPO-clip 0.2/0.28, dual clip 3.
"""

from __future__ import annotations

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.losses.core import (
    aggregate,
    check_scope,
    checked_ppo,
    clip_metrics,
    entropy_input,
    finish,
    frac,
    masked_mean_f,
    mean_entropy_selection,
)
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput

__all__ = ["entropy_sft_token_loss", "entropy_token_weights", "prepare_tea_rl", "tea_rl"]


def entropy_token_weights(
    entropy: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 1.0,
    weight_min: float = 0.5,
    weight_max: float = 2.0,
    mean_entropy: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """``clamp((H / H̄)^γ, w_min, w_max)`` on ``mask`` (0 elsewhere), no gradient.

    Args:
        entropy: ``[B, T]`` token entropy (nats). mask: ``[B, T]`` bool.
        mean_entropy: H̄ (default: the mean of ``entropy`` over ``mask``); H̄ = 0 gives w = 1.
    """
    if not 0 <= weight_min <= weight_max:
        raise EntrolabError(f"need 0 <= weight_min <= weight_max, got {weight_min}, {weight_max}")
    with torch.no_grad():
        h = torch.where(mask, entropy.detach(), 0.0)
        hbar = (
            h.sum() / max(int(mask.sum()), 1)
            if mean_entropy is None
            else torch.as_tensor(mean_entropy, dtype=h.dtype)
        )
        if float(hbar) <= 0:
            w = torch.ones_like(h)
        else:
            w = (h.clamp(min=0) / hbar) ** gamma
        w = w.clamp(weight_min, weight_max)
        return torch.where(mask, w, torch.zeros((), dtype=w.dtype))


def entropy_sft_token_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 1.0,
    weight_min: float = 0.5,
    weight_max: float = 2.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Entropy-SFT: token-mean of ``w · CE`` over ``mask``.

    Args:
        logits: ``[B, T, V]`` predictions for ``targets`` ``[B, T]`` (already shifted).
        mask: ``[B, T]`` bool, True on supervised tokens.
    Returns:
        (scalar loss, metrics ``sft_entropy`` (mean H of the predictions), ``sft_weight_mean``).
    """
    x = logits.float() if logits.dtype not in (torch.float32, torch.float64) else logits
    logp = torch.log_softmax(x, dim=-1)
    nll = -torch.gather(logp, -1, targets.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        h = -(logp.exp() * logp).sum(-1)
    w = entropy_token_weights(h, mask, gamma=gamma, weight_min=weight_min, weight_max=weight_max)
    n = max(int(mask.sum()), 1)
    loss = torch.where(mask, w * nll, 0.0).sum() / n
    return loss, {"sft_entropy": masked_mean_f(h, mask), "sft_weight_mean": masked_mean_f(w, mask)}


def prepare_tea_rl(inp: PolicyLossInput, **_: object) -> dict[str, torch.Tensor]:
    """Whole-batch mean token entropy H̄ for ``tea_rl(selection_scope="batch")``."""
    return mean_entropy_selection(inp, "tea_rl")


def tea_rl(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    gamma: float = 1.0,
    weight_min: float = 0.5,
    weight_max: float = 2.0,
    selection_scope: str = "micro_batch",
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = 3.0,
    log_ratio_clamp: float | None = 20.0,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """TEA-RL loss: PPO-clip token loss times ``clamp((H/H̄)^γ, w_min, w_max)``.

    Args:
        inp: micro-batch input; needs ``entropy``; ``selection`` (H̄) in batch scope.
        gamma, weight_min, weight_max: the weight map (see :func:`entropy_token_weights`).
        selection_scope: scope of H̄ (``"batch"``: :func:`prepare_tea_rl`).
        Others as :func:`ppo_clip`.
    Returns:
        :class:`PolicyLossOutput`; metrics add ``weight_mean``, ``touched_frac`` (w ≠ 1).
    """
    check_scope(selection_scope, "tea_rl")
    c, tok, flags = checked_ppo(
        inp, "tea_rl", aggregation, clip_low=clip_low, clip_high=clip_high,
        dual_clip=dual_clip, log_ratio_clamp=log_ratio_clamp,
    )  # fmt: skip
    hbar = None
    if selection_scope == "batch":
        if inp.selection is None or "mean_entropy" not in inp.selection:
            raise EntrolabError(
                "tea_rl: selection_scope='batch' needs inp.selection from "
                "entrolab.rl.losses.prepare_selection('tea_rl', whole_batch_input)"
            )
        hbar = inp.selection["mean_entropy"]
    h = torch.where(c.mask, entropy_input(inp, "tea_rl").to(tok.dtype), 0.0)
    w = entropy_token_weights(
        h, c.mask, gamma=gamma, weight_min=weight_min, weight_max=weight_max, mean_entropy=hbar
    ).to(tok.dtype)
    pg = aggregate(tok * w, c.mask, inp, aggregation)
    metrics = clip_metrics(flags, c.mask)
    metrics["weight_mean"] = masked_mean_f(w, c.mask)
    metrics["touched_frac"] = frac((w - 1).abs() > 1e-12, c.mask)
    metrics["effective_tokens"] = float(c.n_tokens)
    return finish(pg, c, inp, aggregation, kl_coef=kl_coef, kl_type=kl_type, metrics=metrics)
