"""Traces → OpenAI response JSON (chat and completions, whole or as SSE stream chunks).

Token strings: each token's text piece (``trace.tokens``); with ``return_tokens_as_token_ids``
they are ``token_id:N`` (vLLM's convention). ``bytes`` (chat) and ``text_offset``
(completions) follow the *visible* pieces, which concatenate to the returned text (the pieces
of a final EOS or of tokens after a stop string add nothing). ``finish_reason`` is ``length``
or ``stop``; ``stop_reason`` (vLLM's field) names the stop string, None for EOS.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from entrolab.types import Trace

__all__ = ["Rendered", "render_choice", "sse", "visible_pieces"]

AltText = Callable[[int], str]


def visible_pieces(pieces: tuple[str, ...] | list[str], text: str) -> list[str]:
    """The part of each token piece that is in ``text`` (pieces concatenate to ``text``)."""
    out, pos = [], 0
    for p in pieces:
        common = _common_prefix(p, text, pos)
        out.append(common)
        pos += len(common)
    if out and pos < len(text):
        out[-1] += text[pos:]
    return out


def _common_prefix(piece: str, text: str, pos: int) -> str:
    """The longest prefix of ``piece`` that ``text`` has at ``pos``."""
    n = 0
    while n < len(piece) and pos + n < len(text) and piece[n] == text[pos + n]:
        n += 1
    return piece[:n]


def _finish(trace: Trace, stops: tuple[str, ...]) -> tuple[str, str | None]:
    if trace.finish_reason == "length":
        return "length", None
    if trace.finish_reason == "stop" and stops:
        full = "".join(trace.tokens)
        hits = [(full.find(s, max(len(trace.text) - 1, 0)), s) for s in stops]
        hits = [h for h in hits if h[0] >= 0] or [(0, s) for s in stops if s in full]
        return "stop", min(hits)[1] if hits else stops[0]
    return "stop", None


class Rendered:
    """One choice's pieces in wire form (shared by whole responses and stream chunks)."""

    def __init__(
        self, trace: Trace, k: int, as_ids: bool, alt_text: AltText, stops: tuple[str, ...]
    ) -> None:
        self.trace, self.k, self.as_ids, self.alt_text = trace, k, as_ids, alt_text
        self.text = trace.text
        self.visible = visible_pieces(trace.tokens, trace.text)
        self.finish, self.stop_reason = _finish(trace, stops)

    def _tok(self, tid: int, piece: str) -> str:
        return f"token_id:{tid}" if self.as_ids else piece

    def _alts(self, t: int) -> list[tuple[str, float, str]]:
        ids = self.trace.topk_ids[t, : self.k].tolist()
        lps = self.trace.topk_logprobs[t, : self.k].tolist()
        out = []
        for i, lp in zip(ids, lps, strict=True):
            if lp == float("-inf") or i < 0:
                continue
            piece = self.alt_text(i)
            out.append((self._tok(i, piece), max(lp, -9999.0), piece))
        return out

    def chat_entry(self, t: int) -> dict[str, Any]:
        tid, lp = int(self.trace.token_ids[t]), float(self.trace.logprob[t])
        return {
            "token": self._tok(tid, self.trace.tokens[t]),
            "logprob": max(lp, -9999.0),
            "bytes": list(self.visible[t].encode("utf-8")),
            "top_logprobs": [
                {"token": s, "logprob": v, "bytes": list(p.encode("utf-8"))}
                for s, v, p in self._alts(t)
            ],
        }

    def completion_logprobs(self, start: int, stop: int, offset: int) -> dict[str, Any]:
        tokens, lps, tops, offs = [], [], [], []
        for t in range(start, stop):
            tid = int(self.trace.token_ids[t])
            tokens.append(self._tok(tid, self.trace.tokens[t]))
            lp = float(self.trace.logprob[t])
            known = lp != float("-inf")  # an echoed prompt's first token has no logprob
            lps.append(max(lp, -9999.0) if known else None)
            tops.append({s: v for s, v, _ in self._alts(t)} if self.k and known else None)
            offs.append(offset)
            offset += len(self.visible[t])
        return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs}


def render_choice(
    r: Rendered,
    index: int,
    *,
    chat: bool,
    logprobs: bool,
    ext: dict[str, Any],
    echo: Rendered | str | None = None,
) -> dict[str, Any]:
    """A whole (non-streamed) choice. ``echo`` (completions): the prompt to put before the
    text, as text, or as a :class:`Rendered` of its scored trace (prompt logprobs)."""
    choice: dict[str, Any] = {"index": index, "finish_reason": r.finish}
    choice["stop_reason"] = r.stop_reason
    n = len(r.trace)
    if chat:
        choice["message"] = {"role": "assistant", "content": r.text}
        choice["logprobs"] = {"content": [r.chat_entry(t) for t in range(n)]} if logprobs else None
    else:
        head = echo.text if isinstance(echo, Rendered) else (echo or "")
        lp = r.completion_logprobs(0, n, len(head)) if logprobs else None
        if lp is not None and isinstance(echo, Rendered):
            first = echo.completion_logprobs(0, len(echo.trace), 0)
            lp = {key: first[key] + lp[key] for key in lp}
        choice["text"], choice["logprobs"] = head + r.text, lp
    choice["entrolab"] = ext
    return choice


def envelope(kind: str, model: str, choices: list[dict], usage: dict | None, **extra: Any) -> dict:
    """The response object around ``choices``."""
    prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"
    out = {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        out["usage"] = usage
    out.update(extra)
    return out


def stream_chunks(
    rendered: list[Rendered],
    exts: list[dict[str, Any]],
    *,
    chat: bool,
    logprobs: bool,
    model: str,
    usage: dict | None,
    extra: dict[str, Any],
    echoes: list[Rendered | str] | None = None,
) -> Iterator[str]:
    """SSE lines: per choice one chunk per token, then a final chunk with ``finish_reason``
    and the ``entrolab`` object; then a usage chunk (when asked) and ``[DONE]``.
    ``echoes`` (completions): the prompt of each choice, sent first (with its logprobs)."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    created = int(time.time())

    def chunk(choices: list[dict], **more: Any) -> str:
        body = {"id": rid, "object": kind, "created": created, "model": model, "choices": choices}
        body.update(more)
        return sse(body)

    for index, (r, ext) in enumerate(zip(rendered, exts, strict=True)):
        if chat:
            yield chunk(
                [
                    {
                        "index": index,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        offset = 0
        if echoes is not None:
            echo = echoes[index]
            head = echo.text if isinstance(echo, Rendered) else echo
            lp = None
            if logprobs and isinstance(echo, Rendered):
                lp = echo.completion_logprobs(0, len(echo.trace), 0)
            yield chunk([{"index": index, "text": head, "logprobs": lp, "finish_reason": None}])
            offset = len(head)
        for t in range(len(r.trace)):
            c: dict[str, Any] = {"index": index, "finish_reason": None}
            if chat:
                c["delta"] = {"content": r.visible[t]}
                c["logprobs"] = {"content": [r.chat_entry(t)]} if logprobs else None
            else:
                c["text"] = r.visible[t]
                c["logprobs"] = r.completion_logprobs(t, t + 1, offset) if logprobs else None
                offset += len(r.visible[t])
            yield chunk([c])
        last: dict[str, Any] = {
            "index": index,
            "finish_reason": r.finish,
            "stop_reason": r.stop_reason,
            "entrolab": ext,
        }
        if chat:
            last["delta"], last["logprobs"] = {}, None
        else:
            last["text"], last["logprobs"] = "", None
        yield chunk([last], **extra)
    if usage is not None:
        yield chunk([], usage=usage)
    yield "data: [DONE]\n\n"


def sse(body: dict[str, Any]) -> str:
    """One server-sent event carrying ``body`` as JSON."""
    return f"data: {json.dumps(body, allow_nan=False)}\n\n"
