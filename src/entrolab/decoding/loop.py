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
from dataclasses import dataclass
from typing import Any, Literal

import torch

from entrolab.decoding.base import cache_kwarg
from entrolab.errors import EntrolabError

__all__ = [
    "DecodeState",
    "StepFn",
    "decode_loop",
    "fork",
    "pad_batch",
    "preallocated_cache",
    "prefill",
    "run_steps",
]

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


@dataclass
class DecodeState:
    """A batch's KV cache between decode calls, so continuations can branch off it.

    Attributes:
        cache: the transformers cache (rows in the order of ``attention``).
        attention: int64 [R, L], 1 = a cache slot the row attends to (L = slots so far).
        next_pos: int64 [R], the position id of each row's next fed token.
        prompt_width: the left-padded prompt width (slots ``0 .. prompt_width − 1``); slot
            ``prompt_width + j`` holds the row's generated token j (fed at step j + 1).
    """

    cache: Any
    attention: torch.Tensor
    next_pos: torch.Tensor
    prompt_width: int


def _forward(model: Any, state: DecodeState, input_ids: torch.Tensor, positions: torch.Tensor):
    device = model.device
    return model(
        input_ids=input_ids.to(device),
        attention_mask=state.attention.to(device),
        position_ids=positions.to(device),
        **{cache_kwarg(model): state.cache},
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]


def _check_steps(max_new_tokens: Any) -> None:
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 1
    ):
        raise EntrolabError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")


@torch.inference_mode()
def prefill(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    pad_id: int,
    capacity: int,
    row_prompt: Sequence[int] | None = None,
) -> tuple[DecodeState, torch.Tensor]:
    """Prefill P distinct prompts once each and expand to R rows; returns the state and the
    rows' next-token logits [R, V] (on the model's device)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise EntrolabError("every prompt needs at least one token")
    rows = list(range(len(prompts))) if row_prompt is None else [int(i) for i in row_prompt]
    if not rows or any(not 0 <= i < len(prompts) for i in rows):
        raise EntrolabError(f"row_prompt must index the {len(prompts)} prompts")
    input_ids, attention = pad_batch(prompts, pad_id)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    cache = preallocated_cache(model.config, input_ids.shape[1] + capacity)
    state = DecodeState(cache, attention, positions[:, -1] + 1, input_ids.shape[1])
    logits = _forward(model, state, input_ids, positions)
    expand = torch.tensor(rows, dtype=torch.int64)
    if not torch.equal(expand, torch.arange(len(prompts))):
        cache.reorder_cache(expand.to(model.device))
        logits = logits[expand.to(model.device)]
    state.attention, state.next_pos = attention[expand], state.next_pos[expand]
    return state, logits


@torch.inference_mode()
def run_steps(
    model: Any,
    state: DecodeState,
    logits: torch.Tensor,
    step_fn: StepFn,
    *,
    max_new_tokens: int,
    pad_id: int,
    compact: bool = True,
) -> int:
    """The decode steps: ``step_fn`` on the active rows' logits, then feed the chosen tokens.

    With ``compact`` (default) finished rows leave the batch and the cache; without it they
    stay (fed ``pad_id`` at masked slots) so that ``state`` afterwards holds every row's cache
    for :func:`fork`. Returns the number of steps run."""
    _check_steps(max_new_tokens)
    n = state.attention.shape[0]
    active = torch.arange(n)  # rows still decoding
    in_cache = torch.arange(n)  # rows the cache holds, in cache order
    steps = 0
    for step in range(max_new_tokens):
        where = torch.searchsorted(in_cache, active)
        chosen, finished = step_fn(active, step, logits[where.to(logits.device)].float().cpu())
        if chosen.shape != active.shape or finished.shape != active.shape:
            raise EntrolabError(
                f"step_fn must return chosen and finished of shape {tuple(active.shape)}"
            )
        steps = step + 1
        keep = (~finished.to(torch.bool)).nonzero().flatten()
        if step == max_new_tokens - 1 or keep.numel() == 0:
            break
        feed = torch.full((len(in_cache),), int(pad_id), dtype=torch.int64)
        feed[where] = chosen.to(torch.int64)
        real = torch.zeros(len(in_cache), dtype=torch.int64)
        real[where[keep]] = 1
        active = active[keep]
        if compact and keep.numel() < len(in_cache):  # finished rows leave the batch and cache
            sel = torch.searchsorted(in_cache, active)
            state.cache.reorder_cache(sel.to(model.device))
            state.attention, state.next_pos = state.attention[sel], state.next_pos[sel]
            feed, real, in_cache = feed[sel], real[sel], active
        state.attention = torch.cat([state.attention, real[:, None]], 1)
        logits = _forward(model, state, feed[:, None], state.next_pos[:, None])
        state.next_pos = state.next_pos + 1
    return steps


@torch.inference_mode()
def fork(
    model: Any,
    state: DecodeState,
    rows: Sequence[int],
    keep_slots: Sequence[int],
    refeed: Sequence[int],
    positions: Sequence[int],
) -> tuple[DecodeState, torch.Tensor]:
    """Branch new rows off a kept cache without re-running the shared prefix.

    New row b copies row ``rows[b]``'s cache, attends only to its first ``keep_slots[b]``
    slots (the prompt and the shared prefix), and is fed token ``refeed[b]`` (the prefix's last
    token) at position ``positions[b]``: one token's forward per new row gives the logits of
    the first branched token. ``state`` is consumed (its cache is reordered in place).

    Returns:
        the new rows' state and their next-token logits [B, V].
    """
    if not (len(rows) == len(keep_slots) == len(refeed) == len(positions)) or not rows:
        raise EntrolabError("fork needs one keep_slots, refeed and position entry per new row")
    idx = torch.tensor(list(rows), dtype=torch.int64)
    state.cache.reorder_cache(idx.to(model.device))
    attention = state.attention[idx].clone()
    cols = torch.arange(attention.shape[1])[None, :]
    attention[cols >= torch.tensor(list(keep_slots))[:, None]] = 0
    new = DecodeState(state.cache, torch.cat([attention, torch.ones(len(idx), 1, dtype=torch.int64)], 1),
                      torch.tensor(list(positions), dtype=torch.int64) + 1, state.prompt_width)  # fmt: skip
    logits = _forward(
        model,
        new,
        torch.tensor(list(refeed), dtype=torch.int64)[:, None],
        torch.tensor(list(positions), dtype=torch.int64)[:, None],
    )
    return new, logits


@torch.inference_mode()
def decode_loop(
    model: Any,
    prompts: Sequence[Sequence[int]],
    step_fn: StepFn,
    *,
    max_new_tokens: int,
    pad_id: int,
    row_prompt: Sequence[int] | None = None,
    keep_state: bool = False,
) -> int | tuple[int, DecodeState]:
    """Decode up to ``max_new_tokens`` tokens for every row; returns the number of steps run
    (and, with ``keep_state``, the uncompacted :class:`DecodeState` to :func:`fork` from).

    Args:
        model: a transformers causal LM (any device; logits are moved to the CPU for ``step_fn``).
        prompts: P distinct token-id prompts (each non-empty), left-padded together with
            ``pad_id`` and prefilled once each.
        step_fn: see :data:`StepFn`; called once per step with the active rows' logits.
        row_prompt: R prompt indices, one per row (default: one row per prompt); rows sharing a
            prompt share its prefill (G samples of a prompt cost one prefill, not G).
        keep_state: keep finished rows in the cache (no compaction) and return the state.
    """
    _check_steps(max_new_tokens)
    state, logits = prefill(
        model, prompts, pad_id=pad_id, capacity=max_new_tokens, row_prompt=row_prompt
    )
    steps = run_steps(
        model, state, logits, step_fn, max_new_tokens=max_new_tokens, pad_id=pad_id,
        compact=not keep_state,
    )  # fmt: skip
    return (steps, state) if keep_state else steps
