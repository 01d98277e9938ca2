"""The shared interface of test-time-compute strategies: :class:`ItemOutcome`, :class:`Strategy`
and the :data:`STRATEGIES` registry.

A strategy answers task items with a model by spending generated tokens (several traces, early
stops, probes, debate rounds, …) and reports, per item, the answer it chose, whether the task's
verifier accepts it, and exactly how many tokens it made the model generate. Strategies register
factories ``factory(**params) -> Strategy`` in :data:`STRATEGIES`; the modules that define them
are imported on first use by :func:`load_strategies` (nothing is imported at import time).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from entrolab.backends.base import Backend, has
from entrolab.backends.decode import replay_step_hook
from entrolab.errors import EntrolabError
from entrolab.registry import Registry

if TYPE_CHECKING:
    from entrolab.tasks import Task, TaskItem
    from entrolab.types import Trace

__all__ = [
    "STRATEGIES",
    "STRATEGY_MODULES",
    "ItemOutcome",
    "ProgressFn",
    "Sampling",
    "Strategy",
    "check_backend",
    "check_run",
    "draw_traces",
    "grade_key",
    "item_seeds",
    "load_strategies",
    "make_strategy",
    "report_done",
    "row_progress",
    "subset_drawer",
    "summarize_outcomes",
    "trace_keys",
    "vote_outcome",
]

#: on_progress(items_done, items_total)
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class ItemOutcome:
    """What a strategy did for one task item.

    Attributes:
        item_id: the :class:`~entrolab.tasks.TaskItem` id.
        answer: the final answer chosen for the item, in :func:`~entrolab.tasks.answer_key`
            form; None when the strategy produced no usable answer (e.g. every trace was stopped
            early or unparseable).
        correct: graded by the task's verifier (False when ``answer`` is None).
        generated_tokens: EXACT count of every token the strategy made the model generate for
            this item: all traces including early-stopped and discarded ones, probe/forced-answer
            continuations, debate rounds.
        prompt_tokens: prompt tokens prefilled (informational; a prompt shared by G samples is
            counted once per generate call).
        num_traces: traces generated for the item (all of them, stopped ones included).
        meta: strategy-specific, JSON-serialisable details (vote shares, confidences, stop
            reasons, …).
    """

    item_id: str
    answer: str | None
    correct: bool
    generated_tokens: int
    prompt_tokens: int = 0
    num_traces: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("generated_tokens", "prompt_tokens", "num_traces"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise EntrolabError(f"ItemOutcome.{name} must be an int >= 0, got {value!r}")
        if self.answer is None and self.correct:
            raise EntrolabError("ItemOutcome(correct=True) needs an answer (got answer=None)")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (inverse: :meth:`from_dict`)."""
        return {
            "item_id": self.item_id,
            "answer": self.answer,
            "correct": self.correct,
            "generated_tokens": self.generated_tokens,
            "prompt_tokens": self.prompt_tokens,
            "num_traces": self.num_traces,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ItemOutcome:
        try:
            return cls(
                item_id=str(d["item_id"]),
                answer=d.get("answer"),
                correct=bool(d["correct"]),
                generated_tokens=int(d["generated_tokens"]),
                prompt_tokens=int(d.get("prompt_tokens", 0)),
                num_traces=int(d.get("num_traces", 0)),
                meta=dict(d.get("meta") or {}),
            )
        except KeyError as e:
            raise EntrolabError(f"item outcome is missing the {e.args[0]!r} field") from None


@runtime_checkable
class Strategy(Protocol):
    """A test-time-compute strategy: answers items, reports :class:`ItemOutcome` per item.

    ``backend`` is an :class:`~entrolab.backends.HFBackend` (or anything with the same
    ``generate``/``score`` methods); ``task`` an :class:`~entrolab.tasks.Task`; ``items`` its
    items. ``on_progress(items_done, items_total)`` is called as items finish. Results are in the
    order of ``items`` and do not depend on how items are batched.
    """

    name: str

    def run(
        self,
        backend: Backend,
        task: Task,
        items: Sequence[TaskItem],
        *,
        seed: int = 0,
        on_progress: ProgressFn | None = None,
    ) -> list[ItemOutcome]: ...


#: Strategy factories by name: ``STRATEGIES.get(name)(**params) -> Strategy``. Use
#: :func:`make_strategy` (or ``entrolab.inference.STRATEGIES``), which first imports every module
#: in :data:`STRATEGY_MODULES` so the registry is complete.
STRATEGIES: Registry[Callable[..., Strategy]] = Registry("strategies")

#: Modules that register strategies when imported (a module not written yet is skipped).
STRATEGY_MODULES: tuple[str, ...] = (
    "entrolab.inference.strategies",
    "entrolab.inference.exits",
    "entrolab.inference.routing",
    "entrolab.inference.debate",
    "entrolab.inference.fince",
    "entrolab.inference.zip_rc",
)
_loaded: set[str] = set()


def load_strategies() -> Registry[Callable[..., Strategy]]:
    """Import every strategy module once (they register themselves); returns :data:`STRATEGIES`.

    A module listed in :data:`STRATEGY_MODULES` that does not exist is skipped; an import error
    *inside* an existing module propagates (it is a bug, not a missing optional part).
    """
    for module in STRATEGY_MODULES:
        if module in _loaded:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
        _loaded.add(module)
    return STRATEGIES


def make_strategy(name: str, **params: Any) -> Strategy:
    """Build strategy ``name`` with keyword ``params``.

    Raises:
        UnknownNameError: unknown name (the message lists the known strategies).
        EntrolabError: a parameter the strategy does not take (the message lists those it does).
    """
    factory = load_strategies().get(name)
    sig = inspect.signature(factory)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        unknown = sorted(set(params) - set(sig.parameters))
        if unknown:
            raise EntrolabError(
                f"strategy {name!r} has no parameter(s) {', '.join(map(repr, unknown))}; "
                f"its parameters are: {', '.join(sig.parameters) or '(none)'}"
            )
    return factory(**params)


# ------------------------------------------------------------------------- shared helpers
@dataclass(frozen=True)
class Sampling:
    """How a strategy samples its traces (temperature, filters, length, top-k kept).

    Attributes:
        temperature: softmax temperature (> 0; DeepConf uses 0.6–1.0).
        top_p: nucleus mass (1 disables it).
        top_k: keep the k most likely tokens (0 disables it).
        max_new_tokens: length cap per trace (tokens).
        k: top-k logprobs stored per token (DeepConf confidence uses k = 20).
        batch_size: rows decoded together.
    """

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 64
    k: int = 20
    batch_size: int = 64

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise EntrolabError(
                f"temperature must be > 0 for sampling several traces, got {self.temperature}"
            )

    def config(self, num_samples: int, seed: int = 0) -> Any:
        from entrolab.config import GenerationConfig

        return GenerationConfig(
            num_samples=num_samples,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            topk_logprobs=self.k,
            batch_size=self.batch_size,
            seed=seed,
        )


def item_seeds(seed: int, items: Sequence[TaskItem]) -> list[int]:
    """One base seed per item from the run seed and the item id (batch-invariant samples)."""
    from entrolab.estimators.stats import item_seed

    return [item_seed(seed, it.id) for it in items]


def check_backend(backend: Backend, *, hooks: bool) -> None:
    """Raise unless ``backend.generate`` exists (and, with ``hooks``, takes ``sample_offset``
    for fresh sample waves). A backend without the ``step_hooks`` capability still runs online
    stopping rules: they are replayed on the finished traces (same traces, no compute saved)."""
    gen = getattr(backend, "generate", None)
    if gen is None:
        raise EntrolabError(
            f"backend {type(backend).__name__} has no generate(); use an entrolab backend "
            "(HFBackend, VLLMBackend, OpenAIBackend)"
        )
    if hooks and "sample_offset" not in inspect.signature(gen).parameters:
        raise EntrolabError(
            f"backend {type(backend).__name__}.generate lacks sample_offset, which adaptive "
            "sample waves need; use an entrolab backend (HFBackend, VLLMBackend, OpenAIBackend)"
        )


def check_run(
    backend: Backend, items: Sequence[TaskItem], *, hooks: bool = False
) -> list[TaskItem]:
    """The checks opening every ``Strategy.run``: :func:`check_backend`, then ``items`` as a
    list. Raises :class:`EntrolabError` on a backend without ``generate`` (or hooks) or no items."""
    check_backend(backend, hooks=hooks)
    items = list(items)
    if not items:
        raise EntrolabError("no task items given; pass at least one item")
    return items


def row_progress(
    on_progress: ProgressFn | None, num_items: int, rows_per_item: int = 1
) -> Callable[[int, int, int], None] | None:
    """``on_progress(items_done, items_total)`` as ``backend.generate``'s ``on_progress(rows_done,
    rows_total, tokens)`` for one call with ``rows_per_item`` rows per item (None → None)."""
    if on_progress is None:
        return None
    return lambda done, _total, _tokens: on_progress(done // rows_per_item, num_items)


def report_done(on_progress: ProgressFn | None, num_items: int) -> None:
    """Tell ``on_progress`` (if any) that all ``num_items`` items are done."""
    if on_progress is not None:
        on_progress(num_items, num_items)


def draw_traces(
    backend: Backend,
    items: Sequence[TaskItem],
    seeds: Sequence[int],
    sampling: Sampling,
    count: int,
    offset: int = 0,
    hook: Any = None,
    on_rows: Any = None,
) -> list[list[Trace]]:
    """``count`` traces per item: samples ``offset`` … ``offset + count − 1`` of each item,
    seeded by ``seeds`` (one per item), in sample order; ``hook`` is a ``step_hook``."""
    kwargs: dict[str, Any] = {"seeds": list(seeds)}
    online = hook is not None and has(backend, "step_hooks")
    if online:
        kwargs["step_hook"] = hook
    if offset:
        kwargs["sample_offset"] = offset
    if on_rows is not None:
        kwargs["on_progress"] = on_rows
    batch = backend.generate([it.prompt for it in items], sampling.config(count), **kwargs)
    if hook is not None and not online:  # no hooks inside decoding: replay the rule afterwards
        batch = replay_step_hook(list(batch), hook, count, offset)
    groups: list[list[Trace]] = [[] for _ in items]
    for t in batch:
        groups[t.prompt_index].append(t)
    return groups


def subset_drawer(
    backend: Backend,
    items: Sequence[TaskItem],
    seeds: Sequence[int],
    sampling: Sampling,
    hook_for: Callable[[list[int], int, int], Any] | None = None,
) -> Callable[[list[int], int, int], list[list[Trace]]]:
    """The ``draw(open_items, offset, count)`` callback of :func:`.adaptive.run_waves`:
    :func:`draw_traces` for the items at indices ``open_items`` (with their ``seeds``);
    ``hook_for(open_items, offset, count)`` gives the wave's ``step_hook`` (or None)."""

    def draw(open_items: list[int], offset: int, count: int) -> list[list[Trace]]:
        hook = None if hook_for is None else hook_for(open_items, offset, count)
        sub, sub_seeds = [items[i] for i in open_items], [seeds[i] for i in open_items]
        return draw_traces(backend, sub, sub_seeds, sampling, count, offset, hook)

    return draw


def trace_keys(task: Task, item: TaskItem, traces: Sequence[Trace]) -> list[str | None]:
    """The answer of each trace in :func:`~entrolab.tasks.answer_key` form (None: unparseable)."""
    from entrolab.tasks import answer_key

    out: list[str | None] = []
    for t in traces:
        parsed = task.extract(item, t.text)
        out.append(None if parsed is None else answer_key(parsed))
    return out


def grade_key(
    task: Task,
    item: TaskItem,
    traces: Sequence[Trace],
    keys: Sequence[str | None],
    chosen: str | None,
) -> bool:
    """Whether answer ``chosen`` is correct, graded by the task's verifier on the reply text of
    the first trace whose key is ``chosen`` (every trace with that key holds an equivalent
    answer). False for ``chosen=None``."""
    if chosen is None:
        return False
    for t, k in zip(traces, keys, strict=True):
        if k == chosen:
            return task.grade(item, t.text).correct
    raise EntrolabError(f"answer {chosen!r} is not the answer of any of the given traces")


def vote_outcome(
    task: Task,
    item: TaskItem,
    traces: Sequence[Trace],
    keys: Sequence[str | None],
    answer: str | None,
    meta: dict[str, Any],
    calls: int = 1,
) -> ItemOutcome:
    """The :class:`ItemOutcome` of an item answered by a vote over ``traces`` (their answer
    ``keys``): ``answer`` graded by :func:`grade_key`, generated tokens = sum of ``len(trace)``,
    prompt tokens = ``calls`` × the prompt length of the first trace (one prefill per generate
    call), ``num_traces = len(traces)``; ``meta`` is stored as given."""
    prompt = calls * int(traces[0].meta.get("prompt_tokens", 0)) if traces else 0
    return ItemOutcome(
        item_id=item.id,
        answer=answer,
        correct=grade_key(task, item, traces, keys, answer),
        generated_tokens=sum(len(t) for t in traces),
        prompt_tokens=prompt,
        num_traces=len(traces),
        meta=meta,
    )


def summarize_outcomes(outcomes: Sequence[ItemOutcome]) -> dict[str, Any]:
    """Totals over items: ``n``, ``accuracy``, ``generated_tokens`` (sum),
    ``tokens_per_item`` (mean), ``prompt_tokens`` (sum), ``traces`` (sum), ``answered``
    (items with an answer). Raises on an empty list."""
    if not outcomes:
        raise EntrolabError("no item outcomes to summarize; run the strategy on >= 1 item")
    n = len(outcomes)
    tokens = sum(o.generated_tokens for o in outcomes)
    return {
        "n": n,
        "accuracy": sum(o.correct for o in outcomes) / n,
        "generated_tokens": tokens,
        "tokens_per_item": tokens / n,
        "prompt_tokens": sum(o.prompt_tokens for o in outcomes),
        "traces": sum(o.num_traces for o in outcomes),
        "answered": sum(o.answer is not None for o in outcomes),
    }
