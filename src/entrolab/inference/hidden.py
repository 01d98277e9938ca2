"""Model-side helpers shared by learned exits, routing and debate, through the Backend protocol.

* :func:`hidden_at`: hidden states of one decoder block at chosen positions (backends with the
  ``hidden_states`` capability; the work is done in :mod:`entrolab.backends.hidden`).
* :class:`CueMonitor`: a ``step_hook`` that decides at each cue during generation (online exits),
  reading the layer a backend's ``watch_layer`` records.
* Greedy continuations from token ids with per-token log-probabilities
  (:func:`greedy_continue`), used to force an answer ("\\nAnswer:") after a reasoning prefix; they
  run through ``backend.generate`` (the one decode loop).

Layer convention: ``layer`` indexes the decoder blocks (0-based, negative from the end) and a
feature is that block's output hidden state (before any final norm), float32 [H].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from entrolab.backends.base import Backend, require
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.inference.cues import cue_hit, cue_positions

__all__ = [
    "Continuation",
    "CueMonitor",
    "Decide",
    "greedy_continue",
    "hidden_at",
    "resolve_layer",
]


def resolve_layer(
    backend: Backend, layer: int | None, purpose: str = "hidden-state features"
) -> int:
    """``layer`` as a 0-based decoder block index of ``backend``'s model (negative counts from
    the end; None: the block two thirds of the way up, ``(2 * n) // 3``)."""
    require(backend, "hidden_states", purpose)
    return backend.resolve_layer(layer)


def hidden_at(
    backend: Backend,
    seqs: Sequence[Sequence[int]],
    positions: Sequence[Sequence[int]],
    layer: int,
    *,
    batch_size: int = 16,
) -> list[torch.Tensor]:
    """Hidden states of decoder block ``layer`` at ``positions[i]`` of token sequence ``seqs[i]``:
    one float32 [len(positions[i]), H] tensor per sequence (right-padded batched forwards that
    stop after the block)."""
    require(backend, "hidden_states", "hidden-state features")
    return backend.hidden_states(seqs, positions, layer, batch_size=batch_size)


def _last_piece(decode: Callable[[list[int]], str], ids: Sequence[int], window: int = 8) -> str:
    """The text the last of ``ids`` adds (difference of two short tail decodes, special tokens
    kept; an incomplete UTF-8 character adds "" until the token completing it), as in
    ``backend.token_pieces``."""
    tail = list(ids[-window:])
    a = decode(tail).rstrip("\ufffd")
    b = decode(tail[:-1]).rstrip("\ufffd") if len(tail) > 1 else ""
    return a[len(b) :] if a.startswith(b) else decode(tail[-1:])


#: decide(rows, prefixes, hidden) -> one (stop, info) per row: ``rows`` are call-global row ids
#: at a cue, ``prefixes`` their generated ids through the cue token, ``hidden`` [n, H] the cue
#: tokens' hidden states at the watched layer.
Decide = Callable[[list[int], list[list[int]], torch.Tensor], list[tuple[bool, dict[str, Any]]]]


class CueMonitor:
    """A ``step_hook`` for ``HFBackend.generate`` that calls ``decide`` at every cue, online.

    At decode step t the backend has just fed each active row its token t-1 through the model,
    so the backend's layer watch (``backend.watch_layer(layer, watch_inputs=True)``) holds that token's id and its hidden state;
    when token t-1 completes a cue, ``decide`` runs on those rows, and a row it stops ends after
    token t (the backend stops a row right after the token it has just chosen), i.e. one token
    past the cue. ``events[row]`` lists the info of every cue decided for a row, in order;
    ``exits[row]`` the info of the cue it stopped at (with ``position``, the cue's token index).
    """

    def __init__(
        self,
        watch: Any,
        decode: Callable[[list[int]], str],
        cues: Sequence[str],
        decide: Decide,
        *,
        min_position: int = 0,
    ) -> None:
        cue_positions([], cues)  # validates the cue strings
        self.watch, self.decode, self.cues, self.decide = watch, decode, tuple(cues), decide
        self.min_position = min_position
        self.ids: dict[int, list[int]] = {}
        self.text: dict[int, str] = {}
        self.events: dict[int, list[dict[str, Any]]] = {}
        self.exits: dict[int, dict[str, Any]] = {}

    def __call__(self, rows: torch.Tensor, step: int, stats: Any) -> torch.Tensor:
        stop = torch.zeros(rows.shape[0], dtype=torch.bool)
        if step == 0:  # the last forward was the prompt prefill: no generated token yet
            return stop
        fed, hidden = self.watch.input_ids, self.watch.hidden
        if fed is None or hidden is None or fed.shape[0] != rows.shape[0]:
            raise EntrolabError(
                "CueMonitor saw a forward pass that does not match the active rows; it needs "
                "HFBackend.generate's decode loop (one forward per step, then step_hook)"
            )
        fed, hidden = fed[:, -1].cpu(), hidden[:, -1].float().cpu()
        hits: list[int] = []
        for j, r in enumerate(rows.tolist()):
            ids = self.ids.setdefault(r, [])
            ids.append(int(fed[j]))
            piece = _last_piece(self.decode, ids)
            before = self.text.get(r, "")
            if len(ids) - 1 >= self.min_position and cue_hit(before, piece, self.cues):
                hits.append(j)
            self.text[r] = before + piece
        if hits:
            cue_rows = [int(rows[j]) for j in hits]
            decisions = self.decide(cue_rows, [list(self.ids[r]) for r in cue_rows], hidden[hits])
            for j, r, (halt, info) in zip(hits, cue_rows, decisions, strict=True):
                info = {"position": len(self.ids[r]) - 1, **info}
                self.events.setdefault(r, []).append(info)
                if halt:
                    stop[j] = True
                    self.exits[r] = info
        return stop


# -------------------------------------------------------------------------- continuations
@dataclass(frozen=True)
class Continuation:
    """A greedy continuation: its token ids, their log-probabilities (nats, raw logits), text."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    pieces: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def __len__(self) -> int:
        return len(self.token_ids)


def greedy_continue(
    backend: Backend,
    seqs: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    stop_at_newline: bool = True,
    batch_size: int = 16,
) -> list[Continuation]:
    """Greedily continue each token sequence by up to ``max_new_tokens`` tokens.

    A continuation ends at EOS (kept, as in a Trace), after ``max_new_tokens``, or — with
    ``stop_at_newline`` — at the first newline that follows some non-space text (the newline
    token kept). Its length is exactly the number of tokens it generated. Runs through
    ``backend.generate`` with token-id prompts (any backend with ``token_prompts``).
    """
    if max_new_tokens < 1:
        raise EntrolabError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    require(backend, "token_prompts", "greedy continuations of token sequences")
    config = GenerationConfig(
        temperature=0.0,
        max_new_tokens=max_new_tokens,
        stop=("\n",) if stop_at_newline else (),
        stop_ignores_leading_whitespace=True,
        topk_logprobs=0,
        batch_size=batch_size,
    )
    traces = backend.generate([list(s) for s in seqs], config) if seqs else []
    return [
        Continuation(tuple(t.token_ids.tolist()), tuple(t.logprob.tolist()), tuple(t.tokens))
        for t in traces
    ]
