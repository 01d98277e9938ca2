"""Test-time RL on unlabeled prompts: majority-vote pseudo-labels (TTRL), entropy-aware advantage
damping (ETTRL-style) and ECHO's entropy–confidence hybrid advantage and adaptive clipping.

Pure functions over answers and tensors (no model code).

**TTRL** (Zuo et al. 2025, arXiv:2504.16084; PRIME-RL/TTRL ``ttrl_utils``): per prompt, N_vote
sampled answers vote (plurality over clusters of equivalent answers; unparseable answers do not
vote); reward ``1[answer ≡ majority]``; the policy trains on the *first* N_sample rollouts of each
prompt (``select_top_k_per_prompt``). Pseudo-label accuracy = the majority answer is correct.

**ETTRL** (Liu et al. 2025, arXiv:2508.11356) reshapes advantages to damp over-confident early
agreement with a biased majority; the paper's exact form is not public in code [U]. Ours (the
spec's CPU form, §3.13): ``A' = A · (1 − λ·s_g·(1 − H̃_i))`` with ``s_g`` the majority share of the
group, ``H̃_i`` the response's mean token entropy min-max normalised within its group (a confident
response inside a confident group is damped most), λ decaying linearly to 0 over ``decay_steps``.

**ECHO** (Zhao et al. 2026, arXiv:2602.02150; user683/ECHO ``core_algos.apply_hybrid_advantage_
shaping``): token confidence ``C_t`` = mean probability of the top-5 tokens; exploration score
``S = clamp(α·z(H) + β·z(1 − C), ±s_max)`` (z = masked whitening over the batch, unbiased variance,
as verl's ``masked_whiten``); ``A' = A·(1 + a·S) + λ·(S − mean_group S)``; adaptive clip
``ε = ε_min + (ε_max − ε_min)·σ(κ·(1 − C_tail))`` per sequence with ``C_tail`` the mean confidence of
its last ``tail_window`` tokens. Defaults as the official config: α=β=1, s_max=2, a=0.1, λ=0,
tail 16, top-5, ε 0.05..0.2, κ=4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from entrolab.errors import EntrolabError
from entrolab.inference.voting import weighted_vote
from entrolab.tasks.answers import cluster_answers

__all__ = [
    "PseudoLabels",
    "distinct_answers",
    "echo_clip_epsilon",
    "echo_hybrid_advantages",
    "ettrl_damping",
    "majority_pseudo_labels",
    "masked_whiten",
    "topk_confidence_probs",
]


@dataclass(frozen=True)
class PseudoLabels:
    """Majority-vote pseudo-labels of N groups of G answers.

    Attributes:
        rewards: float32 [N, G], 1 where a row's answer is equivalent to its group's majority.
        majority_row: N ints, a row (within its group) holding the majority answer, −1 if no
            row of the group had a parseable answer.
        share: float64 [N], the majority's share of the parseable answers (0 without votes).
    """

    rewards: torch.Tensor
    majority_row: list[int]
    share: torch.Tensor


def majority_pseudo_labels(answers: Sequence[str | None], group_size: int) -> PseudoLabels:
    """TTRL's reward from N·G extracted answers (prompt-major): per group a plurality vote over
    clusters of equivalent answers (:func:`entrolab.tasks.answers.cluster_answers`, unparseable
    answers do not vote, ties go to the answer counted first), reward 1 for members of the
    winning cluster."""
    if group_size < 1 or len(answers) % group_size:
        raise EntrolabError(
            f"{len(answers)} answers do not split into groups of {group_size}; pass N·G answers"
        )
    n = len(answers) // group_size
    rewards = torch.zeros(n, group_size)
    share = torch.zeros(n, dtype=torch.float64)
    rows = []
    for i in range(n):
        group = list(answers[i * group_size : (i + 1) * group_size])
        ids = cluster_answers(group)
        keys = [None if a is None else str(c) for a, c in zip(group, ids, strict=True)]
        v = weighted_vote(keys)
        if v.answer is None:
            rows.append(-1)
            continue
        hit = torch.tensor([k == v.answer for k in keys], dtype=torch.float32)
        rewards[i] = hit
        share[i] = v.share
        rows.append(keys.index(v.answer))
    return PseudoLabels(rewards, rows, share)


def ettrl_damping(
    advantages: torch.Tensor,
    share: torch.Tensor,
    response_entropy: torch.Tensor,
    *,
    strength: float = 0.5,
    step: int = 1,
    decay_steps: int = 0,
) -> torch.Tensor:
    """``A' = A·(1 − λ_step·s_g·(1 − H̃_{g,i}))`` (ours; see module docstring).

    Args:
        advantages: [N, G] sequence advantages. share: [N] majority shares in [0, 1].
        response_entropy: [N, G] mean token entropy of each response (nats).
        strength: λ at step 1, in [0, 1]. decay_steps: λ falls linearly to 0 at this step
            (0 = constant).
    Returns:
        [N, G]; each factor lies in [1 − λ, 1], so the sign of every advantage is kept.
    """
    if not 0 <= strength <= 1:
        raise EntrolabError(f"ettrl strength must be in [0, 1], got {strength}")
    lam = strength
    if decay_steps:
        lam = strength * max(0.0, 1.0 - (step - 1) / decay_steps)
    h = response_entropy.double()
    lo, hi = h.min(1, keepdim=True).values, h.max(1, keepdim=True).values
    span = hi - lo
    norm = torch.where(span > 0, (h - lo) / torch.where(span > 0, span, 1.0), 0.0)
    factor = 1.0 - lam * share.double()[:, None] * (1.0 - norm)
    return (advantages.double() * factor).to(advantages.dtype)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x − mean)/sqrt(var + eps)`` over the masked entries (unbiased variance, verl's
    ``masked_whiten(shift_mean=True)``); off-mask entries are whitened with the same stats."""
    m = mask.to(x.dtype)
    n = m.sum()
    if n < 2:
        raise EntrolabError("masked_whiten needs at least 2 masked entries")
    mean = (x * m).sum() / n
    var = (((x - mean) ** 2) * m).sum() / n * (n / (n - 1))
    return (x - mean) * torch.rsqrt(var + eps)


def topk_confidence_probs(topk_logprobs: torch.Tensor, k: int = 5) -> torch.Tensor:
    """ECHO's token confidence: mean probability of the ``k`` most likely tokens, ``[..., K] →
    [...]`` in [0, 1] (needs ``K ≥ k`` top-k log-probs, most likely first)."""
    if topk_logprobs.shape[-1] < k:
        raise EntrolabError(
            f"ECHO confidence needs the top-{k} log-probs per token, got {topk_logprobs.shape[-1]}; "
            f"sample with topk_logprobs >= {k}"
        )
    return topk_logprobs[..., :k].double().exp().mean(-1).clamp(0.0, 1.0)


def echo_hybrid_advantages(
    advantages: torch.Tensor,
    entropy: torch.Tensor,
    confidence: torch.Tensor,
    mask: torch.Tensor,
    group: torch.Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    s_max: float | None = 2.0,
    mult_coeff: float = 0.1,
    add_coeff: float = 0.0,
) -> torch.Tensor:
    """ECHO's entropy–confidence hybrid advantage ``[R, T]`` (0 off-mask).

    ``S = clamp(α·z(H) + β·z(1 − C), ±s_max)``; ``A' = A·(1 + a·S) + λ·(S − S̄_group)`` with
    ``S̄_group`` the masked mean of S over the rows of the same prompt (``group`` [R] ids).
    """
    m = mask.bool()
    s = alpha * masked_whiten(entropy.double(), m) + beta * masked_whiten(
        1.0 - confidence.double().clamp(0, 1), m
    )
    if s_max is not None:
        s = s.clamp(-float(s_max), float(s_max))
    adv = advantages.double()
    if mult_coeff:
        adv = adv * (1.0 + mult_coeff * s)
    if add_coeff:
        gm = torch.zeros_like(s)
        for gid in torch.unique(group).tolist():
            rows = group == gid
            mm = m[rows]
            if mm.any():
                gm[rows] = s[rows][mm].mean()
        adv = adv + add_coeff * (s - gm)
    return torch.where(m, adv, 0.0).to(advantages.dtype)


def echo_clip_epsilon(
    confidence: torch.Tensor,
    mask: torch.Tensor,
    *,
    tail_window: int = 16,
    eps_min: float = 0.05,
    eps_max: float = 0.2,
    kappa: float = 4.0,
) -> torch.Tensor:
    """Per-sequence clip range ``[R]``: ``ε_min + (ε_max − ε_min)·σ(κ·(1 − C_tail))`` with
    ``C_tail`` the mean confidence of the last ``tail_window`` response tokens (all when ≤ 0)."""
    if not 0 <= eps_min <= eps_max:
        raise EntrolabError(f"need 0 <= eps_min <= eps_max, got {eps_min}, {eps_max}")
    lengths = mask.sum(-1).long()
    tails = []
    for i in range(confidence.shape[0]):
        n = int(lengths[i])
        span = n if tail_window <= 0 else min(tail_window, n)
        tails.append(float(confidence[i, n - span : n].double().mean()) if span else 0.0)
    c_tail = torch.tensor(tails, dtype=torch.float64).clamp(0, 1)
    return eps_min + (eps_max - eps_min) * torch.sigmoid(kappa * (1.0 - c_tail))


def distinct_answers(answers: Sequence[str | None], group_size: int) -> float:
    """Mean number of distinct parseable answers (clusters of equivalent answers) per group of
    ``group_size`` (prompt-major ``answers``)."""
    if group_size < 1 or len(answers) % group_size:
        raise EntrolabError(f"{len(answers)} answers do not split into groups of {group_size}")
    n = len(answers) // group_size
    total = 0
    for i in range(n):
        group = list(answers[i * group_size : (i + 1) * group_size])
        ids = cluster_answers(group)
        total += len({c for a, c in zip(group, ids, strict=True) if a is not None})
    return total / max(n, 1)
