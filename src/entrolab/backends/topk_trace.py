"""Top-k logprobs → :class:`~entrolab.types.Trace`, shared by the top-k backends.

:class:`~entrolab.backends.openai_compat.OpenAIBackend` (a server's ``top_logprobs``) and
:class:`~entrolab.backends.vllm.VLLMBackend` (vLLM's per-position logprob dicts) parse their own
formats into per-token alternative lists; from there both go through the same two steps, so
both store identical fields:

1. :func:`pad_alternatives`: alternative lists, best first → ``topk_ids``/``topk_logprobs``
   tensors [T, K] padded with id -1 / logprob -inf;
2. :func:`topk_trace`: those tensors → a Trace whose ``entropy``/``varentropy`` are the
   renormalised top-k ones and whose ``meta`` holds the bounds on the full-vocabulary entropy
   and the tail mass (:func:`topk_statistics`), ``provenance.vocab="topk"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from entrolab.errors import EntrolabError
from entrolab.signals import (
    entropy_and_varentropy,
    renormalized_topk_entropy,
    topk_entropy_bounds,
)
from entrolab.signals.topk import topk_tail_mass
from entrolab.types import Provenance, Trace

__all__ = ["pad_alternatives", "topk_statistics", "topk_trace"]


def pad_alternatives(
    alternatives: Sequence[Sequence[tuple[int, float]]], k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token alternatives → ``(topk_ids [T, k] int64, topk_logprobs [T, k] float32)``.

    Args:
        alternatives: T lists of ``(token id, logprob in nats)``, each already ordered best
            first; the first ``k`` of each are kept.
        k: columns of the result (≥ 1).
    Returns:
        Rows with fewer than ``k`` alternatives are padded with id -1 and logprob -inf.
    """
    n = len(alternatives)
    top_ids = torch.full((n, k), -1, dtype=torch.int64)
    top_lp = torch.full((n, k), -float("inf"), dtype=torch.float32)
    for t, alts in enumerate(alternatives):
        best = list(alts)[:k]
        if best:
            top_ids[t, : len(best)] = torch.tensor([a[0] for a in best], dtype=torch.int64)
            top_lp[t, : len(best)] = torch.tensor([a[1] for a in best], dtype=torch.float32)
    return top_ids, top_lp


def topk_statistics(topk_logprobs: torch.Tensor, vocab_size: int | None) -> dict[str, Any]:
    """Per-token statistics from top-k logprobs [T, K] (nats): ``entropy`` and ``varentropy``
    of the renormalised top-k distribution (tensors [T]); ``entropy_lower``/``entropy_upper``
    (bounds on the full-vocabulary entropy, lists [T]; None without ``vocab_size`` or when the
    top-k mass exceeds 1), ``tail_mass`` (list [T]) and ``entropy_kind``."""
    n = topk_logprobs.shape[0]
    out: dict[str, Any] = {"entropy_kind": "renormalized_topk"}
    if n == 0:
        out.update(entropy=torch.zeros(0), varentropy=torch.zeros(0))
        out.update(entropy_lower=[], entropy_upper=[], tail_mass=[])
        return out
    out["entropy"] = renormalized_topk_entropy(topk_logprobs)
    out["varentropy"] = entropy_and_varentropy(topk_logprobs.double())[1].float()
    try:
        out["tail_mass"] = topk_tail_mass(topk_logprobs).tolist()
        if vocab_size is None:
            raise EntrolabError("vocab_size unknown")
        lower, upper = topk_entropy_bounds(topk_logprobs, vocab_size)
        out["entropy_lower"], out["entropy_upper"] = lower.tolist(), upper.tolist()
    except EntrolabError as err:
        out.setdefault("tail_mass", None)
        out.update(entropy_lower=None, entropy_upper=None, bounds_note=str(err))
    return out


def topk_trace(
    *,
    prompt: str,
    text: str,
    token_ids: Sequence[int],
    tokens: Sequence[str],
    logprob: Sequence[float] | torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    vocab_size: int | None,
    provenance: Provenance,
    finish_reason: str,
    prompt_index: int,
    sample_index: int,
    model: str,
    meta: dict[str, Any],
    rank: torch.Tensor | None = None,
    keep_k: int | None = None,
) -> Trace:
    """A Trace from one row's top-k tensors ([T, K]; see :func:`pad_alternatives`).

    ``entropy``/``varentropy`` [T] are those of the renormalised top-k distribution; the rest
    of :func:`topk_statistics` (bounds, tail mass, ``entropy_kind``) is merged into ``meta``.
    ``rank`` [T] (0-based full-vocabulary rank) where the source knows it, else None.
    ``keep_k``: store only the first ``keep_k`` columns (the statistics still use all K; e.g.
    a caller that asked for 0 alternatives gets entropy from the one it needed).
    """
    stats = topk_statistics(topk_logprobs, vocab_size)
    if keep_k is not None:
        topk_ids, topk_logprobs = topk_ids[:, :keep_k], topk_logprobs[:, :keep_k]
    return Trace(
        prompt=prompt,
        text=text,
        token_ids=token_ids,
        tokens=tokens,
        logprob=logprob,
        entropy=stats.pop("entropy"),
        varentropy=stats.pop("varentropy"),
        rank=rank,
        topk_ids=topk_ids,
        topk_logprobs=topk_logprobs,
        provenance=provenance,
        finish_reason=finish_reason,  # type: ignore[arg-type]
        prompt_index=prompt_index,
        sample_index=sample_index,
        model=model,
        meta={**meta, **stats},
    )
