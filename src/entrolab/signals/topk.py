"""Signals from top-k log-probabilities only (e.g. an OpenAI-compatible server's ``top_logprobs``).

Input ``topk_logprobs`` has shape ``[..., K]``: the log-probabilities (nats) of the K most likely
tokens of the *full* distribution at each position, in any order (they are sorted internally).
``-inf`` entries are allowed (p = 0); NaN/+inf raise. Outputs have shape ``[...]`` (per token),
float32 (float64 for float64 input); internal arithmetic is float64.

With p₁ ≥ … ≥ p_k the top-k probabilities, P_k = Σ p_i, tail mass m = 1 − P_k and
H_part = −Σ p_i log p_i, every tail probability is ≤ p_k, hence (spec §0)

    H_part + m·(−log p_k)  ≤  H  ≤  H_part − m log m + m log(|V| − k).
"""

from __future__ import annotations

import math

import torch

from entrolab.errors import EntrolabError
from entrolab.signals.token import _check_topk_logprobs

__all__ = [
    "renormalized_topk_entropy",
    "topk_entropy_bounds",
    "topk_entropy_lower",
    "topk_entropy_upper",
    "topk_tail_mass",
]

#: P_k may exceed 1 by this much (server-side rounding) before it is an error.
_MASS_TOL = 1e-3


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _prepare(topk_logprobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted (descending) float64 logprobs, their probabilities and the clamped tail mass."""
    _check_topk_logprobs(topk_logprobs)
    lp = torch.sort(topk_logprobs.detach().to(torch.float64), dim=-1, descending=True).values
    p = lp.exp()
    mass = p.sum(dim=-1)
    if mass.numel() and bool((mass > 1.0 + _MASS_TOL).any()):
        worst = float(mass.max())
        raise EntrolabError(
            f"top-k probabilities sum to {worst:.6g} > 1; these are not log-probabilities of "
            "one normalised distribution (were logits or a different temperature passed?)"
        )
    tail = (1.0 - mass).clamp(min=0.0)  # tiny negative tails from rounding → 0
    return lp, p, tail


def _partial_entropy(lp: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    # −Σ p log p with 0·log 0 = 0 for -inf entries
    return -torch.where(p > 0, p * lp, torch.zeros_like(p)).sum(dim=-1)


def _check_vocab(vocab_size: int, k: int) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise EntrolabError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if k > vocab_size:
        raise EntrolabError(
            f"got K = {k} top-k logprobs but vocab_size = {vocab_size}; K cannot exceed the "
            "vocabulary (pass the model's full vocabulary size)"
        )


def topk_tail_mass(topk_logprobs: torch.Tensor) -> torch.Tensor:
    """Probability mass outside the top-k, m = 1 − Σ_{i≤k} p_i ∈ [0, 1]; [..., K] → [...]."""
    _, _, tail = _prepare(topk_logprobs)
    return tail.to(_out_dtype(topk_logprobs))


def topk_entropy_bounds(
    topk_logprobs: torch.Tensor, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds (nats) on the full-vocabulary entropy from the top-k logprobs.

    Args:
        topk_logprobs: [..., K] top-k log-probabilities (any order).
        vocab_size: |V|, the full vocabulary size (≥ K).
    Returns:
        ``(lower, upper)``, each [...]: lower = H_part + m·(−log p_k),
        upper = H_part − m log m + m log(|V| − k), with 0·log 0 = 0. Both equal H when the tail
        mass is 0 (up to rounding) or K = |V| (then the tail is ignored: H = H_part). K = 0
        gives the trivial bounds (0, log |V|).
    """
    k = topk_logprobs.shape[-1] if isinstance(topk_logprobs, torch.Tensor) else 0
    _check_vocab(vocab_size, k)
    lp, p, tail = _prepare(topk_logprobs)
    dt = _out_dtype(topk_logprobs)
    if k == 0:
        zeros = torch.zeros(lp.shape[:-1], dtype=dt, device=lp.device)
        return zeros, zeros + math.log(vocab_size)
    h_part = _partial_entropy(lp, p)
    if k == vocab_size:
        return h_part.to(dt), h_part.to(dt)
    # p_k = 0 with a positive tail is inconsistent input; fall back to the trivial H ≥ H_part
    use = (tail > 0) & (lp[..., -1] > -math.inf)
    lower = h_part + torch.where(use, -tail * lp[..., -1], torch.zeros_like(tail))
    upper = h_part - torch.special.xlogy(tail, tail) + tail * math.log(vocab_size - k)
    return lower.to(dt), upper.to(dt)


def topk_entropy_lower(topk_logprobs: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Lower bound H_part + m·(−log p_k) on the entropy (nats); see :func:`topk_entropy_bounds`."""
    return topk_entropy_bounds(topk_logprobs, vocab_size)[0]


def topk_entropy_upper(topk_logprobs: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Upper bound H_part − m log m + m log(|V|−k) (nats); see :func:`topk_entropy_bounds`."""
    return topk_entropy_bounds(topk_logprobs, vocab_size)[1]


def renormalized_topk_entropy(topk_logprobs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the top-k distribution renormalised to sum to 1, p_{1..k}/P_k.

    [..., K] → [...], in [0, log K]. Needs K ≥ 1 and at least one finite logprob per row.
    Not a bound on the full entropy (it ignores the tail); LM-Polygraph's partial sum is lower.
    """
    _check_topk_logprobs(topk_logprobs)
    if topk_logprobs.shape[-1] == 0:
        raise EntrolabError("renormalized_topk_entropy needs K ≥ 1 logprobs per token, got K = 0")
    lp = topk_logprobs.detach().to(torch.float64)
    if lp.numel() and bool((lp.amax(dim=-1) == -math.inf).any()):
        raise EntrolabError("a row of topk_logprobs is entirely -inf; no distribution to measure")
    q_log = torch.log_softmax(lp, dim=-1)
    q = q_log.exp()
    h = -torch.where(q > 0, q * q_log, torch.zeros_like(q)).sum(dim=-1)
    return h.clamp(min=0.0).to(_out_dtype(topk_logprobs))
