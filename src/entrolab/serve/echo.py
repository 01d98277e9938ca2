"""Echoed prompts of ``/v1/completions`` (``echo: true``): the prompt's text, or its tokens with
teacher-forced logprobs (what vLLM returns and :class:`~entrolab.backends.OpenAIBackend` scores
with)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from entrolab.types import Trace

__all__ = ["echo_text", "echo_trace"]


def echo_text(backend: Any, prompt: Any) -> str:
    """The prompt as text (token-id prompts decoded)."""
    return prompt if isinstance(prompt, str) else backend.decode(prompt)


def echo_trace(backend: Any, prompt: Any, k: int) -> Trace:
    """The prompt as a trace with teacher-forced logprobs of its tokens 2…L (the first has
    none: logprob -inf, shown as null)."""
    import torch

    ids = (
        list(prompt)
        if not isinstance(prompt, str)
        else backend.prompt_ids(prompt, chat_template=False)
    )
    text = prompt if isinstance(prompt, str) else backend.decode(ids)
    kk = max(k, 1)
    pieces = backend.token_pieces(ids)
    first = Trace(
        prompt="",
        text="",
        token_ids=ids[:1],
        tokens=pieces[:1],
        logprob=[float("-inf")],
        entropy=[float("nan")],
        varentropy=[float("nan")],
        topk_ids=torch.full((1, kk), -1),
        topk_logprobs=torch.full((1, kk), float("-inf")),
    )
    parts = [first]
    if len(ids) > 1:
        parts.append(backend.score([ids[:1]], [ids[1:]], k=kk, chat_template=False)[0])
    cat = lambda name: torch.cat([getattr(t, name) for t in parts])  # noqa: E731
    return replace(
        first,
        text=text,
        token_ids=torch.tensor(ids),
        tokens=tuple(pieces),
        logprob=cat("logprob"),
        entropy=cat("entropy"),
        varentropy=cat("varentropy"),
        topk_ids=cat("topk_ids"),
        topk_logprobs=cat("topk_logprobs"),
    )
