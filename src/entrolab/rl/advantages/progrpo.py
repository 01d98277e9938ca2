"""ProGRPO's Advantage Re-weighting Mechanism (Li et al. 2026, "Back to Basics", arXiv:2602.05281).

``Ã_i = A_i`` when every reward of the group is 0, otherwise ``Ã_i = A_i + α·(c(q) − c(o_i|q))``:
an answer the model is already sure of (high ``c(o|q)``) gets a smaller advantage, an
under-explored one a larger advantage, relative to how familiar the prompt is (``c(q)``).
Detached, from the behaviour policy's log-probs.

Our reading of the two confidences (no code released; [U]), both probabilities in (0, 1]:

* prompt confidence ``c(q) = exp(mean_p log π(q_p | q_<p)) = 1 / PPL(q)``;
* answer confidence ``c(o|q) = exp(mean over T_low of log π(o_t | ·))`` where ``T_low`` is the
  ``⌈ρ·L⌉`` lowest-probability positions of the response ("low-probability token length
  normalisation", ρ = 0.2 in the paper).
"""

from __future__ import annotations

import math

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

__all__ = ["low_prob_confidence", "progrpo", "prompt_confidence"]


def low_prob_confidence(logprobs: Tensor, mask: Tensor, *, rho: float = 0.2) -> Tensor:
    """``exp`` of the mean of the ``⌈ρ·L_i⌉`` smallest masked log-probs of each row.

    ``logprobs``/``mask`` ``[R, T]`` → ``[R]`` in (0, 1]; a row without tokens gets 1.
    """
    if not 0 < rho <= 1:
        raise EntrolabError(f"progrpo: rho must be in (0, 1], got {rho}")
    lengths = mask.sum(dim=-1)
    k = torch.ceil(rho * lengths.to(torch.float64)).to(torch.int64)  # [R]
    filled = torch.where(mask, logprobs, torch.full_like(logprobs, math.inf))
    ordered = filled.sort(dim=-1).values  # ascending: lowest log-probs first
    take = torch.arange(logprobs.shape[1])[None, :] < k[:, None]
    total = torch.where(take, ordered, torch.zeros_like(ordered)).sum(dim=-1)
    mean = torch.where(k > 0, total / k.clamp(min=1), torch.zeros_like(total))
    return torch.exp(mean)


def prompt_confidence(prompt_logprobs: Tensor, prompt_mask: Tensor) -> Tensor:
    """``1/PPL`` of each prompt: ``exp(mean log-prob)`` over its masked tokens; ``[N, P]`` →
    ``[N]`` (1 for a prompt with no scored token)."""
    n = prompt_mask.sum(dim=-1)
    total = torch.where(prompt_mask, prompt_logprobs, torch.zeros_like(prompt_logprobs)).sum(-1)
    return torch.exp(torch.where(n > 0, total / n.clamp(min=1), torch.zeros_like(total)))


def progrpo(
    adv: Tensor, inputs: ShapingInputs, *, alpha: float = 1.0, rho: float = 0.2
) -> ShapedAdvantages:
    """ProGRPO re-weighted advantages.

    Args:
        adv: ``[R, T]`` base advantages (GRPO in the paper).
        inputs: needs ``old_logprobs`` ``[R, T]``, ``prompt_logprobs``/``prompt_mask`` ``[N, P]``.
        alpha: α ≥ 0 of the shift [U]. rho: fraction of lowest-probability tokens (0.2).
    Returns:
        ``[R, T]`` float32; metrics ``answer_conf_mean``, ``prompt_conf_mean``,
        ``correct_logprob_spread`` (mean over groups of the std of correct answers' mean
        log-prob; the quantity the paper wants to shrink).
    """
    if alpha < 0:
        raise EntrolabError("progrpo: alpha must be >= 0")
    a = check_token_advantages(adv, inputs, "progrpo")
    mask = inputs.response_mask
    lp = check_per_token(inputs.need("old_logprobs", "progrpo"), inputs, "old_logprobs", "progrpo")
    plp = inputs.need("prompt_logprobs", "progrpo").detach().to(torch.float64)
    pmask = inputs.need("prompt_mask", "progrpo").bool()
    g = inputs.group_size
    if plp.shape != pmask.shape or plp.shape[0] != inputs.rewards.shape[0]:
        raise EntrolabError("progrpo: prompt_logprobs and prompt_mask must both be [N, P]")
    c_answer = low_prob_confidence(lp, mask, rho=rho)  # [R]
    c_prompt = prompt_confidence(plp, pmask).repeat_interleave(g)  # [R]
    rewards = inputs.rewards.detach().to(torch.float64)
    active = (rewards != 0).any(dim=1).repeat_interleave(g)  # not an all-zero group
    shift = torch.where(active, alpha * (c_prompt - c_answer), torch.zeros_like(c_answer))
    out = (a + shift[:, None]) * mask
    seq_lp = group_view((lp.sum(-1) / mask.sum(-1).clamp(min=1)), g)
    correct = rewards > 0
    spreads = [
        float(seq_lp[i][correct[i]].std()) for i in range(len(seq_lp)) if int(correct[i].sum()) > 1
    ]
    return ShapedAdvantages(
        out.float(),
        {
            "answer_conf_mean": float(c_answer.mean()),
            "prompt_conf_mean": float(c_prompt.mean()),
            "correct_logprob_spread": sum(spreads) / len(spreads) if spreads else 0.0,
        },
    )
