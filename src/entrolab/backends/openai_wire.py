"""Wire-format helpers of :class:`~entrolab.backends.openai_compat.OpenAIBackend`: request bodies
for OpenAI chat/completions, parsing the ``logprobs`` of their responses, finish reasons, and
error bodies."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from entrolab.backends.base import Prompt
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError

__all__ = [
    "Token",
    "chat_messages",
    "finish_reason",
    "parse_logprobs",
    "request_body",
    "server_message",
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


def _entry_id(entry: dict[str, Any]) -> int:
    """A chat-format logprobs entry's token id: its ``id`` (llama.cpp's server sends it), else
    from a ``"token_id:N"`` token string, else -1."""
    tid = entry.get("id")
    if isinstance(tid, int) and not isinstance(tid, bool) and tid >= 0:
        return tid
    return _token_id(entry.get("token", ""))


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

    A completions choice whose ``logprobs`` come in the chat layout (a ``content`` list, as
    llama.cpp's server sends them) is read as such.

    Raises:
        EntrolabError: the choice has no logprobs (the server ignored ``logprobs``).
    """
    lp = choice.get("logprobs")
    if not chat and isinstance(lp, dict) and "token_logprobs" not in lp:
        chat = isinstance(lp.get("content"), list)
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
            alts = [(_entry_id(a), _lp(a.get("logprob"))) for a in e.get("top_logprobs") or []]
            out.append((piece, _entry_id(e), _lp(e.get("logprob")), alts))
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


def finish_reason(
    choice: dict[str, Any], stop_requested: bool, last_id: int = -1, eos_id: int | None = None
) -> str:
    """entrolab's finish reason of a choice: ``length``; ``stop`` when the server's
    ``stop_reason`` names a stop string, or (without ``stop_reason``) when stop strings were
    requested and the last token (id ``last_id``, -1 unknown) is not ``eos_id``; else ``eos``."""
    reason = choice.get("finish_reason")
    if reason == "length":
        return "length"
    if "stop_reason" in choice:  # vLLM: the stop string, a stop token id, or None for EOS
        return "stop" if isinstance(choice["stop_reason"], str) else "eos"
    if eos_id is not None and last_id == eos_id:  # llama.cpp says "stop" for both
        return "eos"
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


def chat_messages(prompt: str, system_prompt: str | None) -> list[dict[str, str]]:
    """One user message, after a system message when ``system_prompt`` is given."""
    messages = [{"role": "user", "content": prompt}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def request_body(
    prompt: Prompt,
    config: GenerationConfig,
    *,
    model: str,
    seed: int,
    n: int,
    token_ids: bool = False,
    extra: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """``(path, body)`` of the request for ``n`` completions of one prompt.

    A text prompt with ``config.chat_template`` goes to ``/chat/completions`` (``logprobs`` +
    ``top_logprobs``); a text prompt without it or a token-id prompt to ``/completions``
    (``logprobs=k``). ``top_k``/``min_p`` (vLLM/SGLang), ``sampler`` (entrolab serve) and
    ``return_tokens_as_token_ids`` (vLLM, entrolab serve; with ``token_ids``) are sent only when
    set. ``extra`` fields come first, so the config's values win where both set a field.

    Raises:
        EntrolabError: the prompt is empty.
    """
    k = config.topk_logprobs
    body: dict[str, Any] = {
        **(extra or {}),
        "model": model,
        "max_tokens": config.max_new_tokens,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "n": n,
        "seed": int(seed),
    }
    if config.stop:
        body["stop"] = list(config.stop)
    if config.top_k:
        body["top_k"] = config.top_k  # vLLM/SGLang extension
    if config.min_p:
        body["min_p"] = config.min_p  # vLLM/SGLang extension
    if config.sampler:  # honoured by entrolab serve only
        body["sampler"], body["sampler_params"] = config.sampler, dict(config.sampler_params)
    if token_ids:
        body["return_tokens_as_token_ids"] = True
    if isinstance(prompt, str) and config.chat_template:
        body.update(
            messages=chat_messages(prompt, config.system_prompt), logprobs=True, top_logprobs=k
        )
        return "/chat/completions", body
    if not isinstance(prompt, str):
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise EntrolabError("a token-id prompt is empty; give at least one token")
    elif not prompt.strip():
        raise EntrolabError("prompt is empty; give the model some text to respond to")
    body.update(prompt=prompt, logprobs=k)
    return "/completions", body
