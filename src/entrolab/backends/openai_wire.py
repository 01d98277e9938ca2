"""Wire-format helpers of :class:`~entrolab.backends.openai_compat.OpenAIBackend`: parsing the
``logprobs`` of OpenAI chat/completions responses, top-k statistics of a trace, finish reasons,
and error bodies."""

from __future__ import annotations

import json
import math
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

__all__ = [
    "Token",
    "finish_reason",
    "parse_logprobs",
    "server_message",
    "topk_statistics",
]

#: One token as parsed from a response: (piece, id or -1, logprob, [(id, logprob), ...]).

Token = tuple[str, int, float, list[tuple[int, float]]]


def _token_id(token: str) -> int:
    """``"token_id:123"`` (vLLM's ``return_tokens_as_token_ids`` form) → 123, else -1."""
    if isinstance(token, str) and token.startswith("token_id:"):
        try:
            return int(token[9:])
        except ValueError:
            return -1
    return -1


def _pieces_from_bytes(chunks: Sequence[bytes]) -> list[str]:
    """Text each token adds given each token's UTF-8 bytes (multi-byte characters split across
    tokens go to the token that completes them); the pieces concatenate to the decoded text."""
    pieces, prev, buf = [], "", b""
    for chunk in chunks:
        buf += chunk
        stable = buf.decode("utf-8", errors="replace").rstrip("\ufffd")
        pieces.append(stable[len(prev) :] if stable.startswith(prev) else "")
        prev = stable if stable.startswith(prev) else prev
    if pieces:
        pieces[-1] += buf.decode("utf-8", errors="replace")[len(prev) :]
    return pieces


def parse_logprobs(choice: dict[str, Any], *, chat: bool, where: str) -> list[Token]:
    """The per-token logprobs of one response ``choice`` (chat or completions format).

    Raises:
        EntrolabError: the choice has no logprobs (the server ignored ``logprobs``).
    """
    lp = choice.get("logprobs")
    if chat:
        entries = lp.get("content") if isinstance(lp, dict) else None
        if entries is None:
            _no_logprobs(where)
        raw_bytes = [e.get("bytes") for e in entries]
        if all(isinstance(b, list) for b in raw_bytes):
            pieces = _pieces_from_bytes([bytes(b) for b in raw_bytes])
        else:
            pieces = [e.get("token", "") for e in entries]
        out = []
        for e, piece in zip(entries, pieces, strict=True):
            alts = [
                (_token_id(a.get("token", "")), _lp(a.get("logprob")))
                for a in e.get("top_logprobs") or []
            ]
            out.append((piece, _token_id(e.get("token", "")), _lp(e.get("logprob")), alts))
        return out
    if not isinstance(lp, dict) or lp.get("token_logprobs") is None:
        _no_logprobs(where)
    tokens, lps = lp.get("tokens") or [], lp["token_logprobs"]
    tops = lp.get("top_logprobs") or [None] * len(tokens)
    offsets = lp.get("text_offset")
    text = choice.get("text") or ""
    if offsets and len(offsets) == len(tokens):
        # offsets index the returned text (which includes the prompt when echoing)
        ends = [*offsets[1:], offsets[0] + len(text)]
        pieces = [text[a - offsets[0] : b - offsets[0]] for a, b in zip(offsets, ends, strict=True)]
    else:
        pieces = [t if _token_id(t) < 0 else "" for t in tokens]
    out = []
    for tok, piece, value, top in zip(tokens, pieces, lps, tops, strict=True):
        alts = [(_token_id(t), _lp(v)) for t, v in (top or {}).items()]
        out.append((piece, _token_id(tok), _lp(value), alts))
    return out


def _lp(value: Any) -> float:
    """A logprob from JSON (None → -inf: the first prompt token of an echo has none)."""
    if value is None:
        return -math.inf
    if isinstance(value, str):  # "-inf" spelled as a string by some servers
        return float(value)
    return float(value)


def _no_logprobs(where: str) -> None:
    raise EntrolabError(
        f"the server at {where} returned no logprobs; OpenAIBackend needs a server that "
        "honours `logprobs`/`top_logprobs` (vLLM, SGLang, llama.cpp's server, entrolab serve; "
        "for vLLM raise --max-logprobs if top_logprobs is above it)"
    )


def finish_reason(choice: dict[str, Any], stop_requested: bool) -> str:
    reason = choice.get("finish_reason")
    if reason == "length":
        return "length"
    if "stop_reason" in choice:  # vLLM: the stop string, a stop token id, or None for EOS
        return "stop" if isinstance(choice["stop_reason"], str) else "eos"
    return "stop" if stop_requested else "eos"


def server_message(text: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body (shortened)."""
    try:
        err = json.loads(text).get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    except (json.JSONDecodeError, AttributeError):
        pass
    return text[:300]


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
