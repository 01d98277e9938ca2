"""The one decode loop for every in-process generation, with its padding and KV-cache helpers.

:func:`decode_loop` prefills each distinct prompt once, lets every row that shares a prompt copy
its cache, then feeds one token per row per step into a preallocated KV cache; after each step a
caller-supplied ``step_fn`` turns the rows' next-token logits into chosen tokens and says which
rows are finished, and finished rows leave the batch (the cache is compacted), so short rows stop
costing compute. Sampling, statistics, stop strings, paired rows (CK-PLUG) and greedy
continuations are all ``step_fn``s; the backends (:class:`~entrolab.backends.HFBackend`) and
:func:`~entrolab.decoding.ckplug_generate` run through this loop.

The loop itself is :class:`DecodeEngine`: :func:`decode_loop` and :func:`run_steps` run one
group of rows through it to the end; ``entrolab serve`` keeps one engine running and lets new
requests' rows join between steps (continuous batching, :func:`merge_states`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from entrolab.decoding.base import cache_kwarg
from entrolab.decoding.kv_cache import merge_caches, preallocated_cache, trim_cache
from entrolab.errors import EntrolabError

__all__ = [
    "DecodeEngine",
    "DecodeState",
    "StepFn",
    "decode_loop",
    "fork",
    "merge_states",
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


@dataclass
class DecodeState:
    """A batch's KV cache between decode calls, so continuations can branch off it.

    Attributes:
        cache: the transformers cache (rows in the order of ``attention``).
        attention: int64 [R, L], 1 = a cache slot the row attends to (L = slots so far).
        next_pos: int64 [R], the position id of each row's next fed token.
        prompt_width: the left-padded prompt width (slots ``0 .. prompt_width − 1``); slot
            ``prompt_width + j`` holds the row's generated token j (fed at step j + 1).
            -1 for a merged state (:func:`merge_states`).
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
    for :func:`fork`. ``state`` is updated in place. Returns the number of steps run."""
    engine = DecodeEngine(model, pad_id=pad_id, compact=compact)
    group = engine.groups[engine.attach(state, logits, step_fn, max_new_tokens=max_new_tokens)]
    while not engine.idle:
        engine.step()
    return group.steps


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
    engine = DecodeEngine(model, pad_id=pad_id, compact=not keep_state)
    group = engine.groups[
        engine.add(prompts, step_fn, max_new_tokens=max_new_tokens, row_prompt=row_prompt)
    ]
    while not engine.idle:
        engine.step()
    return (group.steps, engine.state) if keep_state else group.steps  # type: ignore[return-value]


def merge_states(a: DecodeState, b: DecodeState) -> DecodeState:
    """Rows of ``a`` then rows of ``b`` in one state (both are consumed).

    The state with fewer filled slots is left-padded with masked slots (attention 0, zero
    keys/values) up to the other's fill; each row keeps its own next position, so its logits are
    those of decoding it alone (up to float rounding of a wider batch). The merged state's
    ``prompt_width`` is -1 (rows no longer share one prompt width; :func:`fork` needs a state
    from one prefill).
    """
    fill_a, fill_b = a.attention.shape[1], b.attention.shape[1]
    n = max(fill_a, fill_b)
    cache = merge_caches(a.cache, b.cache, fill_a, fill_b)

    def pad(att: torch.Tensor) -> torch.Tensor:
        return torch.cat([att.new_zeros(att.shape[0], n - att.shape[1]), att], 1)

    attention = torch.cat([pad(a.attention), pad(b.attention)])
    return DecodeState(cache, attention, torch.cat([a.next_pos, b.next_pos]), -1)


@dataclass
class _Group:
    step_fn: StepFn
    max_new_tokens: int
    steps: int = 0


class DecodeEngine:
    """Rows of one or more groups decoding in one batch: the loop of every in-process generation.

    A *group* is the rows of one :meth:`add` (or :meth:`attach`) call with its own ``step_fn``,
    step counter and token budget; its ``step_fn`` sees only its own rows (group-local indices,
    increasing) and its own step number. Groups added while others decode join between steps
    (continuous batching): the groups waiting at a :meth:`step` are prefilled together and their
    cache is merged into the running one (:func:`merge_states`). Finished rows leave the batch
    (``compact``) or stay, masked, in the cache (``compact=False``, for :func:`fork`).

    Args:
        model: a transformers causal LM.
        pad_id: the token fed at masked slots.
        compact: remove finished rows from the batch and the cache.
    """

    def __init__(self, model: Any, *, pad_id: int, compact: bool = True) -> None:
        self.model, self.pad_id, self.compact = model, int(pad_id), compact
        self.state: DecodeState | None = None
        self.logits: torch.Tensor | None = None  # [C, V] next-token logits of the cache rows
        self.group_of = torch.zeros(0, dtype=torch.int64)  # [C] group id of each cache row
        self.row_of = torch.zeros(0, dtype=torch.int64)  # [C] its group-local row index
        self.live = torch.zeros(0, dtype=torch.bool)  # [C] the row is still decoding
        self.groups: dict[int, _Group] = {}
        self.merges = 0  # groups that joined a running batch
        self._pending: list[tuple[int, list[list[int]], list[int]]] = []
        self._next = 0

    @property
    def idle(self) -> bool:
        """No row decoding and none waiting to join."""
        return not self._pending and not bool(self.live.any())

    @property
    def rows(self) -> int:
        """Rows decoding or waiting to join."""
        return int(self.live.sum()) + sum(len(rows) for _, _, rows in self._pending)

    def _new_group(self, step_fn: StepFn, max_new_tokens: int) -> int:
        _check_steps(max_new_tokens)
        gid, self._next = self._next, self._next + 1
        self.groups[gid] = _Group(step_fn, int(max_new_tokens))
        return gid

    def add(
        self,
        prompts: Sequence[Sequence[int]],
        step_fn: StepFn,
        *,
        max_new_tokens: int,
        row_prompt: Sequence[int] | None = None,
    ) -> int:
        """Queue a group of rows (``prompts`` and ``row_prompt`` as in :func:`decode_loop`); it
        is prefilled and joins the batch at the next :meth:`step`. Returns the group id."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise EntrolabError("every prompt needs at least one token")
        rows = list(range(len(prompts))) if row_prompt is None else [int(i) for i in row_prompt]
        if not rows or any(not 0 <= i < len(prompts) for i in rows):
            raise EntrolabError(f"row_prompt must index the {len(prompts)} prompts")
        gid = self._new_group(step_fn, max_new_tokens)
        self._pending.append((gid, [list(p) for p in prompts], rows))
        return gid

    def attach(
        self, state: DecodeState, logits: torch.Tensor, step_fn: StepFn, *, max_new_tokens: int
    ) -> int:
        """Join rows whose cache is built already (a :func:`prefill` or :func:`fork` result)."""
        gid = self._new_group(step_fn, max_new_tokens)
        n = state.attention.shape[0]
        self._join(state, logits, torch.full((n,), gid), torch.arange(n))
        return gid

    def cancel(self, group: int) -> None:
        """End a group's rows now (they leave at the next step without another token)."""
        self._pending = [p for p in self._pending if p[0] != group]
        self.live = self.live & (self.group_of != group)
        self.groups.pop(group, None)

    def _join(self, state, logits, group_of, row_of) -> None:
        if self.state is None or not bool(self.live.any()):
            self.state, self.logits = state, logits
            self.group_of, self.row_of = group_of, row_of
            self.live = torch.ones(len(group_of), dtype=torch.bool)
            return
        self.state = merge_states(self.state, state)
        self.logits = torch.cat([self.logits, logits.to(self.logits.device)])
        self.group_of = torch.cat([self.group_of, group_of])
        self.row_of = torch.cat([self.row_of, row_of])
        self.live = torch.cat([self.live, torch.ones(len(group_of), dtype=torch.bool)])
        self.merges += 1

    def _admit(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        prompts: list[list[int]] = []
        row_prompt: list[int] = []
        group_of, row_of = [], []
        for gid, ps, rows in pending:
            row_prompt += [len(prompts) + i for i in rows]
            prompts += ps
            group_of.append(torch.full((len(rows),), gid))
            row_of.append(torch.arange(len(rows)))
        capacity = max(self.groups[gid].max_new_tokens for gid, _, _ in pending)
        state, logits = prefill(
            self.model, prompts, pad_id=self.pad_id, capacity=capacity, row_prompt=row_prompt
        )
        self._join(state, logits, torch.cat(group_of), torch.cat(row_of))

    @torch.inference_mode()
    def step(self) -> list[int]:
        """Admit waiting groups, run every live group's ``step_fn`` once, feed the chosen tokens.

        Returns the ids of the groups whose rows have all finished at this step."""
        self._admit()
        if not bool(self.live.any()):
            return []
        state, device = self.state, self.logits.device
        feed = torch.full((len(self.live),), self.pad_id, dtype=torch.int64)
        ended = []
        for gid in self.group_of[self.live].unique().tolist():
            group = self.groups[gid]
            pos = ((self.group_of == gid) & self.live).nonzero().flatten()
            active = self.row_of[pos]
            chosen, finished = group.step_fn(
                active, group.steps, self.logits[pos.to(device)].float().cpu()
            )
            if chosen.shape != active.shape or finished.shape != active.shape:
                raise EntrolabError(
                    f"step_fn must return chosen and finished of shape {tuple(active.shape)}"
                )
            group.steps += 1
            feed[pos] = chosen.to(torch.int64).cpu()
            done = finished.to(torch.bool).cpu()
            if group.steps >= group.max_new_tokens:
                done = torch.ones_like(done)
            self.live[pos[done]] = False
            if not bool(self.live[pos].any()):
                ended.append(gid)
        for gid in ended:
            del self.groups[gid]
        if not bool(self.live.any()):
            return ended
        real = self.live.to(torch.int64)
        if self.compact and not bool(self.live.all()):  # finished rows leave the batch and cache
            sel = self.live.nonzero().flatten()
            state.cache.reorder_cache(sel.to(self.model.device))
            state.attention, state.next_pos = state.attention[sel], state.next_pos[sel]
            feed, real = feed[sel], real[sel]
            self.group_of, self.row_of, self.live = self.group_of[sel], self.row_of[sel], real > 0
            if self.merges:
                self._trim()
        state.attention = torch.cat([state.attention, real[:, None]], 1)
        self.logits = _forward(self.model, state, feed[:, None], state.next_pos[:, None])
        state.next_pos = state.next_pos + 1
        return ended

    def _trim(self, min_slots: int = 32) -> None:
        """Drop leading cache slots that no remaining row attends to (left by rows that left)."""
        used = self.state.attention.any(0).nonzero().flatten()
        start = int(used[0]) if used.numel() else 0
        if start >= min_slots:
            trim_cache(self.state.cache, start)
            self.state.attention = self.state.attention[:, start:]
