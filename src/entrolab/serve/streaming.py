"""True token streaming: SSE chunks built from each decode step's tokens as they are produced.

:class:`TokenStreamer` is fed by the decode loop's per-step callback (on the worker thread) and
turns every new token into one chunk in OpenAI's stream format (chat ``delta.content`` or
completion ``text``, with the token's logprob entry when asked). A chunk's text is the part of
the row's decoded text that became final with this token: an incomplete UTF-8 character waits
for the token that completes it, and with stop strings the last ``len(longest stop) − 1``
characters wait until they cannot start a stop string any more, so the streamed text never
includes what the whole answer cuts. The final chunk of each choice (see :func:`closing`) sends
the rest of the answer's text with ``finish_reason`` and the ``entrolab`` object.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import torch

from entrolab.backends.decode import cut_at_stop
from entrolab.serve.responses import Rendered, sse

__all__ = ["TokenStreamer", "closing", "live_response"]


class TokenStreamer:
    """Per-choice incremental text and stream chunks of one request.

    Args:
        decode: token ids → text with special tokens removed (the backend's ``decode``; call it
            only from the decoding thread).
        alt_text: token id → its text, for top-logprob entries.
        choices: rows of the request (choice index = row: prompt-major, then sample).
        chat: chat chunks (``delta``) or completion chunks (``text``).
        logprobs: include each token's logprob entry (then one chunk per token).
        k: top logprobs per token.
        as_ids: token strings as ``token_id:N``.
        stops: the request's stop strings.
        model: the model id in every chunk.
        echoes: completions with ``echo``: each choice's prompt text, sent first.
    """

    def __init__(
        self,
        decode: Callable[[Sequence[int]], str],
        alt_text: Callable[[int], str],
        choices: int,
        *,
        chat: bool,
        logprobs: bool,
        k: int,
        as_ids: bool,
        stops: Sequence[str],
        model: str,
        echoes: Sequence[str] | None = None,
    ) -> None:
        self.decode, self.alt_text = decode, alt_text
        self.chat, self.logprobs, self.k, self.as_ids = chat, logprobs, k, as_ids
        self.stops = tuple(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.ids: list[list[int]] = [[] for _ in range(choices)]
        self.stable = [""] * choices  # decoded text so far without a trailing U+FFFD
        self.sent = [""] * choices  # text already streamed
        self.kind = "chat.completion.chunk" if chat else "text_completion"
        self.rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created, self.model = int(time.time()), model
        self.echoes = list(echoes) if echoes is not None else None

    def chunk(self, choices: list[dict[str, Any]], **more: Any) -> str:
        """One SSE line carrying ``choices``."""
        body = {
            "id": self.rid,
            "object": self.kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        body.update(more)
        return sse(body)

    def opening(self) -> list[str]:
        """The chat role chunks (one per choice), or the echoed prompts of completions."""
        if not self.chat:
            return [
                self.chunk([{"index": i, "text": e, "logprobs": None, "finish_reason": None}])
                for i, e in enumerate(self.echoes or [])
            ]
        return [
            self.chunk(
                [
                    {
                        "index": i,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
            for i in range(len(self.ids))
        ]

    def _final_part(self, text: str) -> str:
        """The prefix of ``text`` that no later token can cut or change."""
        if not self.stops:
            return text
        cut = cut_at_stop(text, self.stops)
        return cut if len(cut) < len(text) else text[: max(len(text) - self.hold, 0)]

    def step(self, rows: torch.Tensor, step: int, buf: Any) -> list[str]:
        """Chunks for the tokens of ``rows`` in column ``step`` of the request's buffers
        (:class:`~entrolab.backends.decode.StepBuffers`)."""
        out = []
        for r in rows.tolist():
            tid = int(buf.token_ids[r, step])
            self.ids[r].append(tid)
            stable = self.decode(self.ids[r]).rstrip("\ufffd")
            prev = self.stable[r]
            piece = stable[len(prev) :] if stable.startswith(prev) else self.decode([tid])
            self.stable[r] = stable
            safe = self._final_part(stable)
            delta = ""
            if len(safe) > len(self.sent[r]) and safe.startswith(self.sent[r]):
                delta = safe[len(self.sent[r]) :]
            offset = len(self.sent[r]) + (len(self.echoes[r]) if self.echoes else 0)
            self.sent[r] += delta
            if not delta and not self.logprobs:
                continue
            lp = max(float(buf.logprob[r, step]), -9999.0)
            alts = self._alts(buf.topk_ids[r, step, : self.k], buf.topk_logprobs[r, step, : self.k])
            c: dict[str, Any] = {"index": r, "finish_reason": None}
            token = f"token_id:{tid}" if self.as_ids else piece
            if self.chat:
                c["delta"] = {"content": delta}
                entry = {
                    "token": token,
                    "logprob": lp,
                    "bytes": list(piece.encode("utf-8")),
                    "top_logprobs": [
                        {"token": s, "logprob": v, "bytes": list(p.encode("utf-8"))}
                        for s, v, p in alts
                    ],
                }
                c["logprobs"] = {"content": [entry]} if self.logprobs else None
            else:
                c["text"] = delta
                c["logprobs"] = (
                    {
                        "tokens": [token],
                        "token_logprobs": [lp],
                        "top_logprobs": [{s: v for s, v, _ in alts} if self.k else None],
                        "text_offset": [offset],
                    }
                    if self.logprobs
                    else None
                )
            out.append(self.chunk([c]))
        return out

    def _alts(self, ids: torch.Tensor, lps: torch.Tensor) -> list[tuple[str, float, str]]:
        out = []
        for i, lp in zip(ids.tolist(), lps.tolist(), strict=True):
            if lp == float("-inf") or i < 0:
                continue
            piece = self.alt_text(i)
            out.append((f"token_id:{i}" if self.as_ids else piece, max(lp, -9999.0), piece))
        return out


def closing(
    streamer: TokenStreamer,
    rendered: list[Rendered],
    exts: list[dict[str, Any]],
    *,
    usage: dict[str, Any] | None,
    extra: dict[str, Any],
) -> Iterator[str]:
    """The end of a live stream: per choice the rest of its text (what was held back) and a
    final chunk with ``finish_reason``, ``stop_reason`` and the ``entrolab`` object; then the
    usage chunk (when asked) and ``[DONE]``."""
    for index, (r, ext) in enumerate(zip(rendered, exts, strict=True)):
        sent = streamer.sent[index]
        rest = r.text[len(sent) :] if r.text.startswith(sent) else ""
        if rest:
            body: dict[str, Any] = {"index": index, "logprobs": None, "finish_reason": None}
            if streamer.chat:
                body["delta"] = {"content": rest}
            else:
                body["text"] = rest
            yield streamer.chunk([body])
        last: dict[str, Any] = {
            "index": index,
            "finish_reason": r.finish,
            "stop_reason": r.stop_reason,
            "entrolab": ext,
            "logprobs": None,
        }
        if streamer.chat:
            last["delta"] = {}
        else:
            last["text"] = ""
        yield streamer.chunk([last], **extra)
    if usage is not None:
        yield streamer.chunk([], usage=usage)
    yield "data: [DONE]\n\n"


def live_response(
    job: Any,
    streamer: TokenStreamer,
    *,
    submit: Callable[[Any], Any],
    annotate: Callable[[list[list[Any]]], tuple],
    failure: Callable[[BaseException], Any],
    include_usage: bool,
) -> Any:
    """A ``StreamingResponse`` that sends ``job``'s tokens as the decode produces them.

    Sets ``job.on_tokens`` to feed ``streamer`` (on the worker thread) and hands the chunks to
    the event loop; ``submit(job)`` queues it (raising the 429 error before the stream starts).
    When the job resolves, ``annotate(groups)`` gives (rendered choices, entrolab objects,
    usage, extra) for the closing chunks; an error becomes an SSE error event. If the client
    goes away first, ``job.cancelled`` is set so the batcher drops its rows.
    """
    from fastapi.responses import StreamingResponse

    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def on_tokens(rows: torch.Tensor, step: int, buf: Any) -> None:
        lines = streamer.step(rows, step, buf)
        if lines:
            loop.call_soon_threadsafe(events.put_nowait, lines)

    job.on_tokens = on_tokens
    job.future.add_done_callback(lambda _: loop.call_soon_threadsafe(events.put_nowait, None))
    submit(job)

    async def lines() -> AsyncIterator[str]:
        done = False
        try:
            for line in streamer.opening():
                yield line
            while (item := await events.get()) is not None:
                for line in item:
                    yield line
            done = True
            try:
                rendered, exts, usage, extra = annotate(job.future.result())
            except Exception as err:
                yield sse(failure(err).body())
                yield "data: [DONE]\n\n"
                return
            for line in closing(
                streamer, rendered, exts, usage=usage if include_usage else None, extra=extra
            ):
                yield line
        finally:
            if not done:  # the client went away: its rows leave the decode
                job.cancelled = True

    return StreamingResponse(lines(), media_type="text/event-stream")
