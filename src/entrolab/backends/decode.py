"""Decode-loop helpers shared by the backends: padding, per-step statistic buffers, KV cache."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from entrolab.errors import EntrolabError
from entrolab.signals import TokenStatistics


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


@dataclass
class StepBuffers:
    """Per-row statistics for a batch of rows, filled one column (step) at a time.

    Shapes: R rows, N steps (tokens), K top-k alternatives.
    """

    token_ids: torch.Tensor  # int64 [R, N]
    logprob: torch.Tensor  # float32 [R, N]
    entropy: torch.Tensor
    varentropy: torch.Tensor
    self_certainty: torch.Tensor
    rank: torch.Tensor  # int64 [R, N]
    topk_ids: torch.Tensor  # int64 [R, N, K]
    topk_logprobs: torch.Tensor  # float32 [R, N, K]

    @classmethod
    def empty(cls, rows: int, steps: int, k: int) -> StepBuffers:
        f = torch.zeros(rows, steps)
        return cls(
            torch.zeros(rows, steps, dtype=torch.int64),
            f,
            f.clone(),
            f.clone(),
            f.clone(),
            torch.zeros(rows, steps, dtype=torch.int64),
            torch.zeros(rows, steps, k, dtype=torch.int64),
            torch.zeros(rows, steps, k),
        )

    def write(
        self, rows: torch.Tensor, step: int | torch.Tensor, chosen: torch.Tensor, s: TokenStatistics
    ) -> None:
        """Store step statistics for ``rows`` at column(s) ``step``."""
        self.token_ids[rows, step] = chosen
        self.logprob[rows, step] = s.logprob
        self.entropy[rows, step] = s.entropy
        self.varentropy[rows, step] = s.varentropy
        self.self_certainty[rows, step] = s.self_certainty
        self.rank[rows, step] = s.rank
        self.topk_ids[rows, step] = s.topk_ids
        self.topk_logprobs[rows, step] = s.topk_logprobs


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


#: step_hook(rows [R] int64, step, stats of the tokens just chosen) -> stop [R] bool.
#: ``rows`` are call-global row indices (prompt_index * num_samples + sample index within the
#: call) of the rows still active; a row whose entry is True ends after this token
#: (finish_reason ``"stopped"``) and leaves the batch.
StepHook = Callable[[torch.Tensor, int, TokenStatistics], torch.Tensor]


def call_step_hook(
    hook: StepHook, rows: torch.Tensor, step: int, stats: TokenStatistics
) -> torch.Tensor:
    """Run ``hook`` and check it returned one bool flag per active row (CPU bool [R])."""
    stop = hook(rows, step, stats)
    if not isinstance(stop, torch.Tensor) or stop.shape != rows.shape:
        raise EntrolabError(
            f"step_hook must return a bool tensor of shape {tuple(rows.shape)} (one flag per "
            f"active row), got {getattr(stop, 'shape', type(stop).__name__)}"
        )
    return stop.to(torch.bool).cpu()


def token_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text each token adds, from differences of prefix decodes.

    A token that ends inside a multi-byte character adds "" and the token completing the
    character adds all of it, so the pieces always concatenate to the decoded text.
    """
    if not ids:
        return []
    prefixes = tokenizer.batch_decode([ids[: i + 1] for i in range(len(ids))])
    pieces, prev = [], ""
    for i, cur in enumerate(prefixes):
        stable = cur.rstrip("\ufffd")  # an incomplete character decodes to U+FFFD
        if stable.startswith(prev):
            pieces.append(stable[len(prev) :])
        else:  # the tokenizer rewrote earlier text: fall back to the lone token
            pieces.append(tokenizer.decode([ids[i]]))
        prev = stable
    pieces[-1] += prefixes[-1][len(prev) :]  # invalid trailing bytes stay visible
    return pieces
