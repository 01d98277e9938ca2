"""The one decode loop for every in-process generation, with its padding and KV-cache helpers.

:func:`decode_loop` prefills each distinct prompt once, lets every row that shares a prompt copy
its cache, then feeds one token per row per step into a preallocated KV cache; after each step a
caller-supplied ``step_fn`` turns the rows' next-token logits into chosen tokens and says which
rows are finished, and finished rows leave the batch (the cache is compacted), so short rows stop
costing compute. Sampling, statistics, stop strings, paired rows (CK-PLUG) and greedy
continuations are all ``step_fn``s; the backends (:class:`~entrolab.backends.HFBackend`) and
:func:`~entrolab.decoding.ckplug_generate` run through this loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from entrolab.decoding.base import cache_kwarg
from entrolab.errors import EntrolabError

__all__ = ["StepFn", "decode_loop", "pad_batch", "preallocated_cache"]

#: step_fn(active [A] int64, step, logits [A, V] float32 on CPU) -> (chosen [A] int64,
#: finished [A] bool). ``active`` are the row indices (into the ``rows`` of :func:`decode_loop`)
#: still decoding, in increasing order; ``logits`` their next-token logits (raw, the model's own
#: output). A finished row has its chosen token recorded by the caller and is not fed again.
StepFn = Callable[[torch.Tensor, int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int, side: Literal["left", "right"] = "left"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists to [R, L_max]; returns (input_ids int64, mask int64, 1 = real token).

    ``"left"`` puts every row's next token in the last column, which a batched decode needs;
    ``"right"`` keeps positions 0..L-1, which teacher-forced scoring indexes directly.
    """
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.int64)
    mask = torch.zeros(len(seqs), width, dtype=torch.int64)
    for r, s in enumerate(seqs):
        cols = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        input_ids[r, cols] = torch.tensor(list(s), dtype=torch.int64)
        mask[r, cols] = 1
    return input_ids, mask


def preallocated_cache(config, capacity: int):
    """A transformers ``DynamicCache`` whose full-attention layers write into preallocated buffers.

    ``DynamicCache`` concatenates every step, copying the whole cache (O(T²) bytes over a
    generation; a quarter of a decode step at batch 32 and 150 tokens on a 2-core CPU). Here each
    layer keeps [B, H, capacity, D] buffers (doubling if outgrown) and hands attention views of
    the filled part. Sliding-window and other special layers are left as transformers made them.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self) -> None:
            super().__init__()
            self._k: torch.Tensor | None = None
            self._v: torch.Tensor | None = None
            self._n = 0

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            new = key_states.shape[-2]
            if self._k is None or self._n + new > self._k.shape[-2]:
                self._resize(
                    torch.arange(key_states.shape[0]),
                    max(capacity, 2 * (self._n + new)),
                    key_states,
                    value_states,
                )
            self._k[:, :, self._n : self._n + new].copy_(key_states)
            self._v[:, :, self._n : self._n + new].copy_(value_states)
            self._n += new
            self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]
            return self.keys, self.values

        def _resize(self, rows: torch.Tensor, size: int, k_like=None, v_like=None) -> None:
            k_src = self._k if self._k is not None else k_like
            v_src = self._v if self._v is not None else v_like
            k = k_src.new_empty(len(rows), k_src.shape[1], size, k_src.shape[-1])
            v = v_src.new_empty(len(rows), v_src.shape[1], size, v_src.shape[-1])
            if self._k is not None and self._n:
                k[:, :, : self._n] = self._k[rows, :, : self._n]
                v[:, :, : self._n] = self._v[rows, :, : self._n]
            self._k, self._v = k, v
            self.keys, self.values = k[:, :, : self._n], v[:, :, : self._n]

        def reorder_cache(self, beam_idx: torch.Tensor) -> None:
            if self._k is not None:
                self._resize(beam_idx.to(self._k.device), self._k.shape[-2])

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.reorder_cache(indices)

    cache = DynamicCache(config=config)
    cache.layers = [PreallocatedLayer() if type(x) is DynamicLayer else x for x in cache.layers]
    return cache


@torch.inference_mode()
def decode_loop(
    model: Any,
    prompts: Sequence[Sequence[int]],
    step_fn: StepFn,
    *,
    max_new_tokens: int,
    pad_id: int,
    row_prompt: Sequence[int] | None = None,
) -> int:
    """Decode up to ``max_new_tokens`` tokens for every row; returns the number of steps run.

    Args:
        model: a transformers causal LM (any device; logits are moved to the CPU for ``step_fn``).
        prompts: P distinct token-id prompts (each non-empty), left-padded together with
            ``pad_id`` and prefilled once each.
        step_fn: see :data:`StepFn`; called once per step with the active rows' logits.
        row_prompt: R prompt indices, one per row (default: one row per prompt); rows sharing a
            prompt share its prefill (G samples of a prompt cost one prefill, not G).
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise EntrolabError("every prompt needs at least one token")
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 1
    ):
        raise EntrolabError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    rows = list(range(len(prompts))) if row_prompt is None else [int(i) for i in row_prompt]
    if not rows or any(not 0 <= i < len(prompts) for i in rows):
        raise EntrolabError(f"row_prompt must index the {len(prompts)} prompts")
    device, kw = model.device, cache_kwarg(model)
    input_ids, attention = pad_batch(prompts, pad_id)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    cache = preallocated_cache(model.config, input_ids.shape[1] + max_new_tokens)
    logits = model(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        position_ids=positions.to(device),
        **{kw: cache},
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]
    expand = torch.tensor(rows, dtype=torch.int64)
    if not torch.equal(expand, torch.arange(len(prompts))):
        cache.reorder_cache(expand.to(device))
        logits = logits[expand.to(device)]
    attention, next_pos = attention[expand], positions[expand, -1] + 1
    active = torch.arange(len(rows))
    steps = 0
    for step in range(max_new_tokens):
        chosen, finished = step_fn(active, step, logits.float().cpu())
        if chosen.shape != active.shape or finished.shape != active.shape:
            raise EntrolabError(
                f"step_fn must return chosen and finished of shape {tuple(active.shape)}"
            )
        steps = step + 1
        keep = (~finished.to(torch.bool)).nonzero().flatten()
        if step == max_new_tokens - 1 or keep.numel() == 0:
            break
        if keep.numel() < active.numel():  # finished rows leave the batch and the cache
            cache.reorder_cache(keep.to(device))
            attention, chosen, next_pos = attention[keep], chosen[keep], next_pos[keep]
            active = active[keep]
        attention = torch.cat([attention, torch.ones(len(active), 1, dtype=torch.int64)], 1)
        logits = model(
            input_ids=chosen.to(torch.int64)[:, None].to(device),
            attention_mask=attention.to(device),
            position_ids=next_pos[:, None].to(device),
            **{kw: cache},
            use_cache=True,
        ).logits[:, -1]
        next_pos = next_pos + 1
    return steps
