"""Hidden states of a transformers model's decoder blocks: batched at chosen positions
(:func:`hidden_at`) or watched during generation (:class:`LayerWatch`).

Used through :class:`~entrolab.backends.HFBackend` (capability ``hidden_states``):
``backend.hidden_states(...)``, ``backend.watch_layer(...)``, ``backend.resolve_layer(...)``.

Layer convention: ``layer`` indexes the decoder blocks (0-based, negative from the end) and a
feature is that block's output hidden state (before any final norm), float32 [H].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from entrolab.decoding.loop import pad_batch
from entrolab.decoding.steering import decoder_layers
from entrolab.errors import EntrolabError

__all__ = ["LayerWatch", "hidden_at", "resolve_layer"]


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
    model: Any,
    pad_id: int,
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
    device = model.device
    for start in range(0, len(seqs), batch_size):
        chunk, pos = seqs[start : start + batch_size], positions[start : start + batch_size]
        for s, p in zip(chunk, pos, strict=True):
            if any(not 0 <= q < len(s) for q in p):
                raise EntrolabError(f"position out of range for a sequence of {len(s)} tokens")
        ids, mask = pad_batch(chunk, pad_id, side="right")
        with LayerWatch(model, layer, abort=True) as watch:
            h = watch.run(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        h = h.float().cpu()
        out += [h[r, torch.as_tensor(list(p), dtype=torch.int64)] for r, p in enumerate(pos)]
    return out
