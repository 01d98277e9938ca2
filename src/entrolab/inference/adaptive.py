"""Adaptive sample counts: draw traces in waves and stop an item once its vote is settled.

DeepConf's adaptive consensus stop (Fu et al. 2025, arXiv:2508.15260, §online): after each wave,
take the (weighted) vote over the item's traces so far; stop drawing for that item once the
leading answer's share of the vote weight β = V(â) / Σ_a V(a) reaches τ (default 0.95), or once
its trace budget is spent. Items still open are generated together in the next wave, with
``sample_offset`` = traces drawn so far, so each wave draws fresh samples and sample s of an
item is the same draw whatever the schedule (a wave schedule only decides how many are drawn).

:func:`run_waves` is the driver shared by the ``adaptive`` and ``deepconf-online`` strategies;
it is backend-agnostic: the caller supplies ``draw`` (generate a wave) and ``decide`` (vote).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from entrolab.errors import EntrolabError

if TYPE_CHECKING:
    from entrolab.inference.voting import Vote
    from entrolab.types import Trace

__all__ = ["ConsensusStop", "WaveResult", "run_waves", "wave_schedule"]


def _pos_int(x: Any, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise EntrolabError(f"{name} must be a positive int, got {x!r}")
    return x


@dataclass(frozen=True)
class ConsensusStop:
    """Stop when the leading answer's vote share β ≥ ``tau`` with at least ``min_votes`` counted
    traces. ``tau`` in (0, 1]; τ = 1 asks for unanimity among the counted traces."""

    tau: float = 0.95
    min_votes: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.tau, bool) or not 0.0 < float(self.tau) <= 1.0:
            raise EntrolabError(f"tau (consensus share) must be in (0, 1], got {self.tau!r}")
        _pos_int(self.min_votes, "min_votes")

    def reached(self, vote: Vote) -> bool:
        """True when ``vote`` has an answer, ≥ ``min_votes`` voters and share ≥ τ."""
        return (
            vote.answer is not None and vote.num_votes >= self.min_votes and vote.share >= self.tau
        )


def wave_schedule(budget: int, first: int, wave: int) -> list[int]:
    """Wave sizes: ``first``, then ``wave`` each, the last one cut so the total is ``budget``.

    >>> wave_schedule(16, 4, 4)
    [4, 4, 4, 4]
    >>> wave_schedule(10, 4, 4)
    [4, 4, 2]
    """
    budget, first, wave = (
        _pos_int(budget, "budget"),
        _pos_int(first, "first wave"),
        _pos_int(wave, "wave"),
    )
    sizes = [min(first, budget)]
    while sum(sizes) < budget:
        sizes.append(min(wave, budget - sum(sizes)))
    return sizes


@dataclass
class WaveResult:
    """What :func:`run_waves` returns for one item.

    Attributes:
        traces: every trace drawn for the item, in sample order (stopped ones included).
        vote: the last vote taken (None if ``decide`` never ran).
        waves: number of waves the item took part in.
        stop_reason: ``"consensus"`` | ``"budget"``.
        shares: the leading answer's share after each wave.
    """

    traces: list[Trace] = field(default_factory=list)
    vote: Vote | None = None
    waves: int = 0
    stop_reason: str = "budget"
    shares: list[float] = field(default_factory=list)


#: draw(item_indices, sample_offset, count) -> one list of ``count`` traces per given item
DrawFn = Callable[[list[int], int, int], list[list["Trace"]]]
#: decide(item_index, traces_so_far, wave_index) -> Vote
DecideFn = Callable[[int, list["Trace"], int], "Vote"]


def run_waves(
    n_items: int,
    schedule: Sequence[int],
    draw: DrawFn,
    decide: DecideFn,
    consensus: ConsensusStop | None = ConsensusStop(),
    *,
    on_wave: Callable[[int, int], None] | None = None,
) -> list[WaveResult]:
    """Draw waves for ``n_items`` items until each reaches consensus or the schedule ends.

    Args:
        n_items: number of items.
        schedule: wave sizes (see :func:`wave_schedule`); their sum is the per-item budget.
        draw: generates one wave for the open items, all with the same ``sample_offset``.
        decide: votes over an item's traces after each wave.
        consensus: the stop rule (None: never stop early, draw the whole schedule).
        on_wave: ``(items_finished, n_items)`` after each wave.
    Returns:
        One :class:`WaveResult` per item, in item order.
    """
    if n_items < 1:
        raise EntrolabError("no items to sample for; give at least one item")
    if not schedule:
        raise EntrolabError("the wave schedule is empty; give at least one wave")
    results = [WaveResult() for _ in range(n_items)]
    open_items = list(range(n_items))
    offset = 0
    for w, size in enumerate(schedule):
        _pos_int(size, "wave size")
        drawn = draw(open_items, offset, size)
        if len(drawn) != len(open_items) or any(len(d) != size for d in drawn):
            raise EntrolabError(
                f"draw returned {[len(d) for d in drawn]} traces for {len(open_items)} items; "
                f"expected {size} for each"
            )
        still = []
        last = w == len(schedule) - 1
        for i, traces in zip(open_items, drawn, strict=True):
            res = results[i]
            res.traces.extend(traces)
            res.waves += 1
            res.vote = decide(i, res.traces, w)
            res.shares.append(res.vote.share)
            if consensus is not None and not last and consensus.reached(res.vote):
                res.stop_reason = "consensus"
            else:
                still.append(i)
        offset += size
        open_items = still
        if on_wave is not None:
            on_wave(n_items - len(open_items) if not last else n_items, n_items)
        if not open_items:
            break
    return results
