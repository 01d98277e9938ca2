"""Model-side helpers shared by learned exits, routing and debate.

* Hidden states of one decoder layer at chosen positions, batched, without running the layers
  above it or the LM head (:func:`hidden_at`); the same layer can be watched during generation
  (:class:`LayerWatch`).
* :class:`CueMonitor`: a ``step_hook`` for ``HFBackend.generate`` that decides at each cue during
  generation (online exits).
* Greedy continuations from token ids with per-token log-probabilities
  (:func:`greedy_continue`), used to force an answer ("\\nAnswer:") after a reasoning prefix.

Layer convention: ``layer`` indexes the decoder blocks (0-based, negative from the end) and a
feature is that block's output hidden state (before any final norm), float32 [H].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from entrolab.backends.decode import pad_batch, preallocated_cache
from entrolab.decoding.base import cache_kwarg
from entrolab.decoding.steering import decoder_layers
from entrolab.errors import EntrolabError
from entrolab.inference.cues import cue_hit, cue_positions

__all__ = [
    "Continuation",
    "CueMonitor",
    "Decide",
    "LayerWatch",
    "decoder_layers",
    "greedy_continue",
    "hidden_at",
    "resolve_layer",
]


# ------------------------------------------------------------------------------ hidden states
def resolve_layer(model: Any, layer: int | None) -> int:
    """``layer`` as a 0-based decoder block index (negative counts from the end; None: the
    block two thirds of the way up, ``(2 * n) // 3`` — 20 of SmolLM2's 30, a mid/late layer)."""
    n = len(decoder_layers(model))
    if layer is None:
        return (2 * n) // 3
    if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
        raise EntrolabError(
            f"layer must be an integer in [{-n}, {n - 1}] for this model, got {layer!r}"
        )
    return layer % n


class _Captured(Exception):
    pass


class LayerWatch:
    """Context manager recording the output of decoder block ``layer`` (and, with
    ``watch_inputs``, the token ids fed to the embedding) on every forward pass.

    With ``abort=True`` the forward pass is cut short right after the block (the caller catches
    the internal exception through :meth:`run`), so the layers above it and the LM head are
    never computed.
    """

    def __init__(self, model: Any, layer: int, *, watch_inputs: bool = False, abort: bool = False):
        self.model, self.layer, self.abort = model, resolve_layer(model, layer), abort
        self.watch_inputs = watch_inputs
        self.hidden: torch.Tensor | None = None
        self.input_ids: torch.Tensor | None = None
        self._handles: list[Any] = []

    def __enter__(self) -> LayerWatch:
        def on_layer(_module, _inputs, output):
            h = output[0] if isinstance(output, tuple) else output
            self.hidden = h.detach()
            if self.abort:
                raise _Captured

        self._handles.append(decoder_layers(self.model)[self.layer].register_forward_hook(on_layer))
        if self.watch_inputs:

            def on_embed(_module, inputs, _output):
                self.input_ids = inputs[0].detach()

            emb = self.model.get_input_embeddings()
            self._handles.append(emb.register_forward_hook(on_embed))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def run(self, **forward_kwargs: Any) -> torch.Tensor:
        """Call the base model (no LM head) and return the captured [B, L, H] hidden states."""
        base = getattr(self.model, "base_model", self.model)
        try:
            base(**forward_kwargs)
        except _Captured:
            pass
        if self.hidden is None:
            raise EntrolabError("the watched layer did not run; is `layer` part of this model?")
        return self.hidden


@torch.inference_mode()
def hidden_at(
    backend: Any,
    seqs: Sequence[Sequence[int]],
    positions: Sequence[Sequence[int]],
    layer: int,
    *,
    batch_size: int = 16,
) -> list[torch.Tensor]:
    """Hidden states of decoder block ``layer`` at ``positions[i]`` of token sequence ``seqs[i]``.

    One right-padded forward per batch of sequences (causal attention: the state at position p
    depends only on tokens 0..p, so every cue of a trace comes from one pass). Returns one
    float32 [len(positions[i]), H] tensor per sequence.
    """
    if len(seqs) != len(positions):
        raise EntrolabError(f"got {len(seqs)} sequences but {len(positions)} position lists")
    out: list[torch.Tensor] = []
    model = backend.model
    device = model.device
    pad = backend.tokenizer.pad_token_id
    for start in range(0, len(seqs), batch_size):
        chunk, pos = seqs[start : start + batch_size], positions[start : start + batch_size]
        for s, p in zip(chunk, pos, strict=True):
            if any(not 0 <= q < len(s) for q in p):
                raise EntrolabError(f"position out of range for a sequence of {len(s)} tokens")
        ids, mask = pad_batch(chunk, pad, side="right")
        with LayerWatch(model, layer, abort=True) as watch:
            h = watch.run(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        h = h.float().cpu()
        out += [h[r, torch.as_tensor(list(p), dtype=torch.int64)] for r, p in enumerate(pos)]
    return out


def _last_piece(tokenizer: Any, ids: Sequence[int], window: int = 8) -> str:
    """The text the last of ``ids`` adds (difference of two short tail decodes; an incomplete
    UTF-8 character adds "" until the token completing it), as in ``HFBackend.token_pieces``."""
    tail = list(ids[-window:])
    a = tokenizer.decode(tail).rstrip("\ufffd")
    b = tokenizer.decode(tail[:-1]).rstrip("\ufffd") if len(tail) > 1 else ""
    return a[len(b) :] if a.startswith(b) else tokenizer.decode(tail[-1:])


#: decide(rows, prefixes, hidden) -> one (stop, info) per row: ``rows`` are call-global row ids
#: at a cue, ``prefixes`` their generated ids through the cue token, ``hidden`` [n, H] the cue
#: tokens' hidden states at the watched layer.
Decide = Callable[[list[int], list[list[int]], torch.Tensor], list[tuple[bool, dict[str, Any]]]]


class CueMonitor:
    """A ``step_hook`` for ``HFBackend.generate`` that calls ``decide`` at every cue, online.

    At decode step t the backend has just fed each active row its token t-1 through the model,
    so a :class:`LayerWatch` (``watch_inputs=True``) holds that token's id and its hidden state;
    when token t-1 completes a cue, ``decide`` runs on those rows, and a row it stops ends after
    token t (the backend stops a row right after the token it has just chosen), i.e. one token
    past the cue. ``events[row]`` lists the info of every cue decided for a row, in order;
    ``exits[row]`` the info of the cue it stopped at (with ``position``, the cue's token index).
    """

    def __init__(
        self,
        watch: LayerWatch,
        tokenizer: Any,
        cues: Sequence[str],
        decide: Decide,
        *,
        min_position: int = 0,
    ) -> None:
        cue_positions([], cues)  # validates the cue strings
        self.watch, self.tokenizer, self.cues, self.decide = watch, tokenizer, tuple(cues), decide
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
            piece = _last_piece(self.tokenizer, ids)
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


@torch.inference_mode()
def greedy_continue(
    backend: Any,
    seqs: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    stop_at_newline: bool = True,
    batch_size: int = 16,
) -> list[Continuation]:
    """Greedily continue each token sequence by up to ``max_new_tokens`` tokens.

    A continuation ends at EOS (kept, as in a Trace), after ``max_new_tokens``, or — with
    ``stop_at_newline`` — at the first newline that follows some non-space text (the newline
    token kept). Its length is exactly the number of tokens it generated.
    """
    if max_new_tokens < 1:
        raise EntrolabError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    model, tok = backend.model, backend.tokenizer
    device, kw = model.device, cache_kwarg(model)
    eos = set(backend.eos_ids.tolist())
    out: list[Continuation] = []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        ids, mask = pad_batch(chunk, tok.pad_token_id, side="left")
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = preallocated_cache(model.config, ids.shape[1] + max_new_tokens)
        logits = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=pos.to(device),
            **{kw: cache},
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
        n = len(chunk)
        toks: list[list[int]] = [[] for _ in range(n)]
        lps: list[list[float]] = [[] for _ in range(n)]
        done = [False] * n
        next_pos = pos[:, -1] + 1
        for step in range(max_new_tokens):
            logp = torch.log_softmax(logits.float().cpu(), -1)
            chosen = logp.argmax(-1)
            for r in range(n):
                if done[r]:
                    continue
                c = int(chosen[r])
                toks[r].append(c)
                lps[r].append(float(logp[r, c]))
                text = tok.decode(toks[r], skip_special_tokens=True)
                if c in eos or (stop_at_newline and "\n" in text.lstrip()):
                    done[r] = True
            if all(done) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype)], 1)
            logits = model(
                input_ids=chosen[:, None].to(device),
                attention_mask=mask.to(device),
                position_ids=next_pos[:, None].to(device),
                **{kw: cache},
                use_cache=True,
            ).logits[:, -1]
            next_pos = next_pos + 1
        for r in range(n):
            pieces = backend.token_pieces(toks[r]) if toks[r] else []
            out.append(Continuation(tuple(toks[r]), tuple(lps[r]), tuple(pieces)))
    return out
