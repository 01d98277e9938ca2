"""Sampling strategies registered in :data:`~entrolab.inference.base.STRATEGIES`: ``majority``,
``deepconf-offline``, ``deepconf-online`` and ``adaptive``.

All four sample traces from the backend with the same per-item seeds (sample s of an item is the
same draw in every strategy, see :mod:`.adaptive`), so their accuracies at matched budgets are
paired comparisons. Token accounting is exact: ``generated_tokens`` is the sum of ``len(trace)``
over every trace generated for the item, early-stopped ones included.

DeepConf defaults (one documented set; the paper's values are
:data:`entrolab.signals.windows.DEEPCONF_PAPER`: window 2048, warm-up 16, budget 256–512, top 10%):

* window: DeepConf's traces are thousands of tokens long (window 2048); the replies here are
  budgeted at tens of tokens, so the window follows the one rule of
  :func:`entrolab.signals.windows.deepconf_window` (``clamp(max_new_tokens // 8, 4, 2048)``):
  :data:`DEFAULT_WINDOW` = 8 tokens for the 64-token default budget, the same as the
  ``deepconf_*`` estimators. Pass ``window=deepconf_window(max_new_tokens)`` with a longer
  budget, or ``window=2048`` for the paper.
* ``deepconf-online`` warms up on 4 traces (paper: 16) because its default budget is 16 traces
  (paper: 256–512): 16 warm-up traces would leave nothing to stop early. The paper's ratio is
  16 of 512; pass ``warmup=16, budget=512`` to run it.
* ``deepconf-offline`` at its default budget 8 with the top-10% filter keeps exactly ONE trace
  (``max(1, int(0.1 · 8)) = 1``): its answer is the single most confident trace's. The filter
  votes among several traces only from budget 20 up; use a larger budget or
  ``voter=bottom_window_weighted`` (every trace, confidence-weighted) for a vote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from entrolab.backends.base import Backend
from entrolab.errors import EntrolabError
from entrolab.inference.adaptive import ConsensusStop, run_waves, wave_schedule
from entrolab.inference.base import (
    STRATEGIES,
    ItemOutcome,
    ProgressFn,
    Sampling,
    check_run,
    draw_traces,
    grade_key,
    item_seeds,
    report_done,
    row_progress,
    subset_drawer,
    trace_keys,
    vote_outcome,
)
from entrolab.inference.stopping import ConfidenceStopHook, fit_threshold
from entrolab.inference.voting import (
    Vote,
    deepconf_votes,
    get_voter,
    trace_scores,
    weighted_vote,
)
from entrolab.signals.windows import DEEPCONF_DEFAULT_WINDOW

if TYPE_CHECKING:
    from entrolab.tasks import Task, TaskItem
    from entrolab.types import Trace

__all__ = [
    "DEFAULT_WINDOW",
    "AdaptiveStrategy",
    "DeepConfOnlineStrategy",
    "MajorityStrategy",
]

_DEEPCONF = "Fu et al. 2025, Deep Think with Confidence, arXiv:2508.15260"
#: Tokens per confidence window: ``deepconf_window(64)`` (see the module docstring).
DEFAULT_WINDOW = DEEPCONF_DEFAULT_WINDOW


def _variant_meta(task, item, traces, keys, window: int, k: int) -> dict[str, Any]:
    """All seven DeepConf votes over the same traces, graded (for analysis and the bench)."""
    out = {}
    for name, v in deepconf_votes(keys, traces, window=window, k=k).items():
        out[name] = {
            "answer": v.answer,
            "correct": grade_key(task, item, traces, keys, v.answer),
            "share": v.share,
        }
    return out


def _outcome(task, item, traces, keys, vote: Vote, calls: int, meta: dict) -> ItemOutcome:
    if vote.answer is None:
        meta.setdefault(
            "no_answer", "no trace voted: every trace was stopped early, filtered or unparseable"
        )
    summary = {
        "share": vote.share,
        "num_votes": vote.num_votes,
        "answers": list(keys),
        "lengths": [len(t) for t in traces],
    }
    return vote_outcome(task, item, traces, keys, vote.answer, {**summary, **meta}, calls)


# ------------------------------------------------------------------------- majority / offline
@dataclass(frozen=True)
class MajorityStrategy:
    """Sample ``budget`` traces per item and vote with ``voter`` (a :data:`VOTERS` name).

    ``name`` is ``"majority"`` or ``"deepconf-offline"`` (same algorithm, different default
    voter). With ``all_variants`` the outcome's meta also holds all seven DeepConf votes over
    the same traces (``meta["variants"]``), each graded.
    """

    name: str = "majority"
    budget: int = 8
    voter: str = "majority"
    window: int = DEFAULT_WINDOW
    all_variants: bool = True
    sampling: Sampling = field(default_factory=Sampling)

    def __post_init__(self) -> None:
        get_voter(self.voter)
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1:
            raise EntrolabError(f"budget (traces per item) must be an int >= 1, got {self.budget}")

    def run(
        self,
        backend: Backend,
        task: Task,
        items: Sequence[TaskItem],
        *,
        seed: int = 0,
        on_progress: ProgressFn | None = None,
    ) -> list[ItemOutcome]:
        items = check_run(backend, items)
        rows = row_progress(on_progress, len(items), self.budget)
        groups = draw_traces(
            backend, items, item_seeds(seed, items), self.sampling, self.budget, 0, None, rows
        )
        rule = get_voter(self.voter)
        out = []
        for item, traces in zip(items, groups, strict=True):
            keys = trace_keys(task, item, traces)
            scores = {}
            if rule.score is not None:
                scores[rule.score] = trace_scores(
                    traces, rule.score, k=self.sampling.k, window=self.window
                ).tolist()
            v = rule(keys, scores)
            meta: dict[str, Any] = {"voter": self.voter}
            if self.all_variants:
                meta["variants"] = _variant_meta(
                    task, item, traces, keys, self.window, self.sampling.k
                )
            out.append(_outcome(task, item, traces, keys, v, 1, meta))
        report_done(on_progress, len(items))
        return out


# ---------------------------------------------------------------------------------- online
@dataclass(frozen=True)
class DeepConfOnlineStrategy:
    """DeepConf online: warm-up traces fit a per-item threshold, later traces stop early.

    Per item: ``warmup`` full traces (capped at ``budget``); s = :func:`fit_threshold` of their lowest-window
    confidences (``variant`` "high": 10th percentile, "low": 90th). Then up to
    ``budget − warmup`` more traces, each stopped as soon as a full window's mean confidence
    falls below s (:class:`ConfidenceStopHook`). Vote (official rule): warm-up traces whose
    lowest-window confidence is ≥ s and later traces that were not stopped (and also score
    ≥ s), weighted by their lowest-window confidence. With ``tau`` the later traces come in waves
    of ``wave`` and the item stops once the weighted share of the leading answer is ≥ τ (the
    paper's adaptive consensus stop; its released code does not have it); ``tau=None`` draws all
    remaining traces in one wave, as the released code. A fixed ``threshold`` (nats) replaces
    the fitted one (the released code's predefined thresholds); then every trace, warm-up
    included, runs under the stop rule. If no trace is left to vote, the item's answer is None
    (graded wrong) with ``meta["no_answer"]`` saying why.
    """

    name: str = "deepconf-online"
    budget: int = 16
    warmup: int = 4
    variant: Literal["low", "high"] = "high"
    window: int = DEFAULT_WINDOW
    tau: float | None = 0.95
    wave: int = 4
    min_votes: int = 2
    threshold: float | None = None
    sampling: Sampling = field(default_factory=Sampling)

    def __post_init__(self) -> None:
        if self.variant not in ("low", "high"):
            raise EntrolabError(f"variant must be 'low' or 'high', got {self.variant!r}")
        for name in ("budget", "warmup", "wave"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EntrolabError(f"{name} must be an int >= 1, got {value!r}")
        object.__setattr__(self, "warmup", min(self.warmup, self.budget))  # budget sweeps
        if self.tau is not None:
            ConsensusStop(self.tau, self.min_votes)

    def run(
        self,
        backend: Backend,
        task: Task,
        items: Sequence[TaskItem],
        *,
        seed: int = 0,
        on_progress: ProgressFn | None = None,
    ) -> list[ItemOutcome]:
        items = check_run(backend, items, hooks=True)
        seeds = item_seeds(seed, items)
        k, window = self.sampling.k, self.window
        fixed = self.threshold is not None
        thresholds: list[float] = [float(self.threshold or 0.0)] * len(items)
        keys_of: list[list[str | None]] = [[] for _ in items]
        scores_of: list[list[float]] = [[] for _ in items]

        def stop_hook(open_items: list[int], offset: int, count: int) -> Any:
            if offset > 0 or fixed:  # after warm-up: stop on low confidence, per-item thresholds
                return ConfidenceStopHook(
                    [thresholds[i] for i in open_items], window, k, num_samples=count
                )
            return None

        draw = subset_drawer(backend, items, seeds, self.sampling, stop_hook)

        def decide(i: int, traces: list[Trace], w: int) -> Vote:
            new = traces[len(keys_of[i]) :]
            keys_of[i] += trace_keys(task, items[i], new)
            scores_of[i] += trace_scores(new, "lowest_window", k=k, window=window).tolist()
            if w == 0 and not fixed:
                thresholds[i] = fit_threshold(scores_of[i], self.variant)
            s = thresholds[i]
            votes = [  # official rule: not stopped and lowest window >= s
                key if sc >= s and t.finish_reason != "stopped" else None
                for t, key, sc in zip(traces, keys_of[i], scores_of[i], strict=True)
            ]
            return weighted_vote(votes, scores_of[i])

        if self.tau is None:
            schedule = wave_schedule(self.budget, self.warmup, max(1, self.budget - self.warmup))
        else:
            schedule = wave_schedule(self.budget, self.warmup, self.wave)
        consensus = None if self.tau is None else ConsensusStop(self.tau, self.min_votes)
        results = run_waves(len(items), schedule, draw, decide, consensus, on_wave=on_progress)
        out = []
        for i, (item, res) in enumerate(zip(items, results, strict=True)):
            stopped = sum(t.finish_reason == "stopped" for t in res.traces)
            meta = {
                "threshold": thresholds[i],
                "variant": "fixed" if fixed else self.variant,
                "stopped": stopped,
                "stop_reason": res.stop_reason,
                "waves": res.waves,
                "shares": res.shares,
                "lowest_window": scores_of[i],
            }
            out.append(
                _outcome(task, item, res.traces, keys_of[i], res.vote, res.waves, meta)  # type: ignore[arg-type]
            )
        return out


# -------------------------------------------------------------------------------- adaptive
@dataclass(frozen=True)
class AdaptiveStrategy:
    """Adaptive sample count: waves of traces until the vote share of the leading answer is ≥ τ.

    First wave ``first`` traces, then ``wave`` at a time, at most ``budget`` per item. The vote
    (and its share β) uses ``voter`` over all traces so far; consensus needs ≥ ``min_votes``
    counted traces. With a filtering voter (``top10_*``) the share is computed among the kept
    traces only, which makes consensus easy; prefer a weighted or plain voter here.
    """

    name: str = "adaptive"
    budget: int = 16
    first: int = 4
    wave: int = 4
    tau: float = 0.95
    voter: str = "majority"
    min_votes: int = 2
    window: int = DEFAULT_WINDOW
    sampling: Sampling = field(default_factory=Sampling)

    def __post_init__(self) -> None:
        get_voter(self.voter)
        ConsensusStop(self.tau, self.min_votes)
        wave_schedule(self.budget, self.first, self.wave)

    def run(
        self,
        backend: Backend,
        task: Task,
        items: Sequence[TaskItem],
        *,
        seed: int = 0,
        on_progress: ProgressFn | None = None,
    ) -> list[ItemOutcome]:
        items = check_run(backend, items, hooks=True)
        seeds = item_seeds(seed, items)
        rule = get_voter(self.voter)
        keys_of: list[list[str | None]] = [[] for _ in items]

        draw = subset_drawer(backend, items, seeds, self.sampling)

        def decide(i: int, traces: list[Trace], w: int) -> Vote:
            keys_of[i] += trace_keys(task, items[i], traces[len(keys_of[i]) :])
            scores = {}
            if rule.score is not None:
                scores[rule.score] = trace_scores(
                    traces, rule.score, k=self.sampling.k, window=self.window
                ).tolist()
            return rule(keys_of[i], scores)

        schedule = wave_schedule(self.budget, self.first, self.wave)
        consensus = ConsensusStop(self.tau, self.min_votes)
        results = run_waves(len(items), schedule, draw, decide, consensus, on_wave=on_progress)
        out = []
        for i, (item, res) in enumerate(zip(items, results, strict=True)):
            meta = {
                "voter": self.voter,
                "stop_reason": res.stop_reason,
                "waves": res.waves,
                "shares": res.shares,
            }
            out.append(
                _outcome(task, item, res.traces, keys_of[i], res.vote, res.waves, meta)  # type: ignore[arg-type]
            )
        return out


# ------------------------------------------------------------------------------ registration
_SAMPLING_FIELDS = tuple(f.name for f in fields(Sampling))


def _build(cls: type, params: dict[str, Any], **fixed: Any) -> Any:
    """``cls(**fixed, **params)`` with the :class:`Sampling` fields gathered into ``sampling``;
    unknown parameter names fail listing the accepted ones."""
    own = [f.name for f in fields(cls) if f.name not in ("name", "sampling", *fixed)]
    unknown = sorted(set(params) - set(own) - set(_SAMPLING_FIELDS))
    if unknown:
        raise EntrolabError(
            f"strategy {fixed.get('name', cls.__name__)!r} has no parameter(s) "
            f"{', '.join(map(repr, unknown))}; its parameters are: "
            f"{', '.join([*own, *_SAMPLING_FIELDS])}"
        )
    samp = {k: params.pop(k) for k in list(params) if k in _SAMPLING_FIELDS}
    return cls(**fixed, **params, sampling=Sampling(**samp))


_S = {f.name: f.default for f in fields(Sampling)}


@STRATEGIES.register(
    "majority",
    summary="sample `budget` traces per item and take the majority answer (self-consistency)",
    paper="Wang et al. 2023, Self-Consistency, arXiv:2203.11171",
    defaults={"budget": 8, "voter": "majority", **_S},
)
def majority(**params: Any) -> MajorityStrategy:
    """:class:`MajorityStrategy` (any :data:`VOTERS` rule via ``voter``)."""
    return _build(MajorityStrategy, params, name="majority")


@STRATEGIES.register(
    "deepconf-offline",
    summary="sample `budget` traces, keep the most confident 10%, confidence-weighted vote",
    paper=_DEEPCONF,
    defaults={"budget": 8, "voter": "top10_bottom_window_filtered", "window": DEFAULT_WINDOW, **_S},
)
def deepconf_offline(**params: Any) -> MajorityStrategy:
    """:class:`MajorityStrategy` with DeepConf's top-10% bottom-window filtered vote."""
    params.setdefault("voter", "top10_bottom_window_filtered")
    return _build(MajorityStrategy, params, name="deepconf-offline")


@STRATEGIES.register(
    "deepconf-online",
    summary="warm-up traces fit a confidence threshold; later traces stop early below it",
    paper=_DEEPCONF,
    defaults={
        "budget": 16,
        "warmup": 4,
        "variant": "high",
        "tau": 0.95,
        "window": DEFAULT_WINDOW,
        **_S,
    },
)
def deepconf_online(**params: Any) -> DeepConfOnlineStrategy:
    """:class:`DeepConfOnlineStrategy`."""
    return _build(DeepConfOnlineStrategy, params, name="deepconf-online")


@STRATEGIES.register(
    "adaptive",
    summary="sample in waves until the leading answer's vote share reaches tau",
    paper=_DEEPCONF,
    defaults={"budget": 16, "first": 4, "wave": 4, "tau": 0.95, "voter": "majority", **_S},
)
def adaptive(**params: Any) -> AdaptiveStrategy:
    """:class:`AdaptiveStrategy`."""
    return _build(AdaptiveStrategy, params, name="adaptive")
