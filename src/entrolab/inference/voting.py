"""Voting over sampled traces: majority and confidence-weighted votes with top-η filtering,
covering DeepConf's seven offline variants (Fu et al. 2025, arXiv:2508.15260).

Inputs are per-trace answers (:func:`~entrolab.tasks.answer_key` strings; None = unparseable, which
never votes) and per-trace scores (trace confidences, higher = more trustworthy). Scores come from
the :data:`TRACE_SCORES` registry, which reduces DeepConf token confidences
C_i = −(1/k) Σ_{j≤k} log P_i(j) (nats, k = 20) to one number per trace with
:func:`entrolab.signals.group_confidence`.

Rules shared by every vote (documented once here):

* **Exclusion.** Traces with answer None are dropped first; top-η filtering then ranks only the
  traces that have an answer (as DeepConf's ``compute_all_voting_results``).
* **Filtering.** Keep the traces whose score is ≥ the linear-interpolation percentile
  100·(1 − η) of the scores (numpy's default ``np.percentile``); ties at the cut are all kept.
* **Weights.** Weighted votes sum the scores per answer (exactly rounded, :func:`math.fsum`);
  majority gives every trace weight 1. Weights must be finite and ≥ 0; a trace of weight 0 is
  dropped before counting, so it changes nothing, not even the order used to break ties.
* **Ties.** The answer with the largest total weight wins; among equal totals, the answer whose
  first counted trace comes earliest in the input order wins (DeepConf's ``max`` over a dict in
  insertion order behaves the same way). Pass traces in sampling order for reproducible ties.
* **No votes.** When no trace is left (all unparseable, filtered out, or zero-weight), the vote
  has ``answer=None`` and ``share=0`` — a documented outcome, not an error. An *empty input list*
  is an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from entrolab.errors import EntrolabError
from entrolab.registry import Registry
from entrolab.signals import group_confidence, topk_confidence

if TYPE_CHECKING:
    from entrolab.types import Trace

__all__ = [
    "DEEPCONF_VARIANTS",
    "TRACE_SCORES",
    "VOTERS",
    "Vote",
    "Voter",
    "deepconf_votes",
    "filter_top",
    "get_voter",
    "percentile",
    "token_confidence",
    "token_confidences",
    "trace_scores",
    "vote",
    "weighted_vote",
]

_DEEPCONF = "Fu et al. 2025, Deep Think with Confidence, arXiv:2508.15260"


@dataclass(frozen=True)
class Vote:
    """The result of one vote.

    Attributes:
        answer: the winning answer key, or None when no trace voted.
        totals: total weight per answer, in the order answers were first counted.
        share: winner's total / sum of all totals, in [0, 1] (0 when no trace voted).
        voters: indices (into the input lists) of the traces that were counted.
    """

    answer: str | None
    totals: dict[str, float] = field(default_factory=dict)
    share: float = 0.0
    voters: tuple[int, ...] = ()

    @property
    def num_votes(self) -> int:
        """Number of traces counted."""
        return len(self.voters)

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "share": self.share,
            "num_votes": self.num_votes,
            "totals": dict(self.totals),
        }


def _check_lists(answers: Sequence[str | None], other: Sequence[Any] | None, what: str) -> None:
    if len(answers) == 0:
        raise EntrolabError(
            "cannot vote over an empty list of traces; generate at least one trace per item"
        )
    if other is not None and len(other) != len(answers):
        raise EntrolabError(
            f"got {len(answers)} answers but {len(other)} {what}; give one per trace"
        )
    bad = next((a for a in answers if a is not None and not isinstance(a, str)), None)
    if bad is not None:
        raise EntrolabError(
            f"answers must be answer-key strings or None (unparseable), got {type(bad).__name__}"
        )


def _floats(values: Sequence[float] | torch.Tensor, what: str) -> list[float]:
    out = [float(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]
    bad = [i for i, v in enumerate(out) if not math.isfinite(v)]
    if bad:
        raise EntrolabError(
            f"{what} must be finite; trace {bad[0]} has {out[bad[0]]} ({len(bad)} bad in all). "
            "Token confidences are +inf when a top-k logprob is -inf: compute them from raw "
            "logits (GenerationConfig(signals_from='raw'))"
        )
    return out


def weighted_vote(
    answers: Sequence[str | None], weights: Sequence[float] | torch.Tensor | None = None
) -> Vote:
    """Weighted plurality vote (majority when ``weights`` is None).

    Args:
        answers: N answer keys, None = unparseable (never counted).
        weights: N finite weights ≥ 0 (None: all 1). Zero-weight traces are not counted.
    Returns:
        :class:`Vote` (see the module docstring for ties and the no-vote outcome).
    Raises:
        EntrolabError: empty lists, mismatched lengths, negative or non-finite weights.
    """
    _check_lists(answers, weights, "weights")
    w = [1.0] * len(answers) if weights is None else _floats(weights, "vote weights")
    neg = next((i for i, x in enumerate(w) if x < 0), None)
    if neg is not None:
        raise EntrolabError(
            f"vote weights must be >= 0, trace {neg} has {w[neg]}; use a confidence that is "
            "non-negative (DeepConf token confidences are) or shift the scores"
        )
    parts: dict[str, list[float]] = {}
    voters = []
    for i, (a, x) in enumerate(zip(answers, w, strict=True)):
        if a is None or x == 0.0:
            continue
        parts.setdefault(a, []).append(x)
        voters.append(i)
    if not parts:
        return Vote(None)
    totals = {a: math.fsum(xs) for a, xs in parts.items()}
    best = max(totals.values())
    winner = next(a for a, t in totals.items() if t == best)  # first counted among ties
    return Vote(winner, totals, best / math.fsum(totals.values()), tuple(voters))


def percentile(values: Sequence[float], q: float) -> float:
    """The linear-interpolation ``q``-th percentile (q in [0, 100]) of ``values``, the rule of
    ``np.percentile``'s default: position p = q/100 · (n − 1) in the sorted values."""
    xs = sorted(_floats(values, "scores"))
    if not xs:
        raise EntrolabError("cannot take a percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise EntrolabError(f"percentile q must be in [0, 100], got {q}")
    pos = q / 100.0 * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def filter_top(scores: Sequence[float] | torch.Tensor, eta: float) -> list[bool]:
    """Keep mask of the top-η fraction by score: score ≥ ``percentile(scores, 100·(1 − η))``.

    η in (0, 1]; η = 1 keeps everything. Ties at the cut are all kept, so more than ⌈η·N⌉
    traces may survive. Raises on an empty list.
    """
    if isinstance(eta, bool) or not 0.0 < float(eta) <= 1.0:
        raise EntrolabError(f"eta (the fraction of traces kept) must be in (0, 1], got {eta!r}")
    xs = _floats(scores, "scores")
    if not xs:
        raise EntrolabError("cannot filter an empty list of traces")
    cut = percentile(xs, 100.0 * (1.0 - float(eta)))
    return [x >= cut for x in xs]


def vote(
    answers: Sequence[str | None],
    scores: Sequence[float] | torch.Tensor | None = None,
    *,
    weighted: bool = True,
    top: float | None = None,
) -> Vote:
    """Filter (optional) then vote.

    Args:
        answers: N answer keys (None = unparseable).
        scores: N trace confidences; needed when ``weighted`` or ``top`` is set.
        weighted: weight each trace by its score (else 1 per trace).
        top: keep only the top-η fraction (η = ``top``) of the answered traces by score.
    """
    _check_lists(answers, scores, "scores")
    if scores is None and (weighted or top is not None):
        raise EntrolabError("a weighted or filtered vote needs one score per trace")
    s = None if scores is None else _floats(scores, "scores")
    keep = [a is not None for a in answers]
    if top is not None and any(keep):
        idx = [i for i, k in enumerate(keep) if k]
        mask = filter_top([s[i] for i in idx], top)  # type: ignore[index]
        for i, m in zip(idx, mask, strict=True):
            keep[i] = m
    kept = [a if k else None for a, k in zip(answers, keep, strict=True)]
    return weighted_vote(kept, s if weighted else None)


# ------------------------------------------------------------------------------ trace scores
#: Token confidences are rounded to multiples of this (nats), so window sums of them are exact in
#: float64 and every implementation of the window rule (replay, online hook, trace scores)
#: agrees bit for bit whatever its summation order. DeepConf's own code rounds to 1e-3.
CONF_QUANTUM = 2.0**-24


def token_confidence(topk_logprobs: torch.Tensor, k: int = 20) -> torch.Tensor:
    """DeepConf token confidence from the first ``k`` of ``topk_logprobs`` [..., K] → [...]
    float64 nats, rounded to a multiple of :data:`CONF_QUANTUM` (see there)."""
    if topk_logprobs.shape[-1] < k:
        raise EntrolabError(
            f"confidence needs top-{k} logprobs per token but only {topk_logprobs.shape[-1]} "
            f"are stored; generate with GenerationConfig(topk_logprobs={k}) or lower k"
        )
    c = topk_confidence(topk_logprobs[..., :k].double())
    return torch.round(c / CONF_QUANTUM) * CONF_QUANTUM


def token_confidences(traces: Sequence[Trace], k: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepConf token confidences of N traces, right-padded: (conf float64 [N, T], mask [N, T]).

    C_i = −mean of the first ``k`` stored top-k logprobs at position i (nats; higher = peakier),
    via :func:`token_confidence`. Raises if a trace stores fewer than ``k`` alternatives.
    """
    if len(traces) == 0:
        raise EntrolabError("no traces given; generate at least one trace")
    short = [t.k for t in traces if t.k < k]
    if short:
        raise EntrolabError(
            f"a trace stores only {short[0]} top-k logprobs per token but k={k} is needed; "
            f"generate with GenerationConfig(topk_logprobs={k}) or lower k"
        )
    t_max = max(len(t) for t in traces)
    conf = torch.zeros(len(traces), t_max, dtype=torch.float64)
    mask = torch.zeros(len(traces), t_max, dtype=torch.bool)
    for i, t in enumerate(traces):
        n = len(t)
        if n:
            conf[i, :n] = token_confidence(t.topk_logprobs, k)
            mask[i, :n] = True
    return conf, mask


def _score(mode: str) -> Callable[..., torch.Tensor]:
    def fn(
        token_conf: torch.Tensor, mask: torch.Tensor, *, window: int = 2048, bottom_q: float = 0.1
    ) -> torch.Tensor:
        return group_confidence(token_conf, mask, window=window, mode=mode, bottom_q=bottom_q)  # type: ignore[arg-type]

    fn.__name__ = f"{mode}_score"
    fn.__doc__ = f"group_confidence(token_conf [N, T], mask [N, T], mode={mode!r}) → [N] (nats)."
    return fn


#: Trace scores: ``fn(token_conf [N, T], mask [N, T], *, window, bottom_q) -> [N]`` (nats,
#: higher = more confident). Empty traces score 0; traces shorter than the window score their mean.
TRACE_SCORES: Registry[Callable[..., torch.Tensor]] = Registry("trace_scores")
for _name, _mode, _summary in [
    ("mean", "mean", "mean token confidence of the trace (nats)"),
    ("tail", "tail", "mean token confidence of the last `window` tokens (nats)"),
    ("bottom_window", "bottom", "mean of the lowest 10% sliding-window means (nats)"),
    ("lowest_window", "lowest", "lowest sliding-window mean confidence (nats)"),
]:
    TRACE_SCORES.register(
        _name,
        summary=_summary,
        paper=_DEEPCONF,
        defaults={"window": 2048, "bottom_q": 0.1},
        aliases=("min_window",) if _name == "lowest_window" else (),
    )(_score(_mode))


def trace_scores(
    traces: Sequence[Trace],
    score: str = "lowest_window",
    *,
    k: int = 20,
    window: int = 2048,
    bottom_q: float = 0.1,
) -> torch.Tensor:
    """One confidence per trace: :data:`TRACE_SCORES` ``score`` of the DeepConf token
    confidences (top-``k``), float64 [N] in nats. ``window`` is in tokens."""
    conf, mask = token_confidences(traces, k)
    return TRACE_SCORES.get(score)(conf, mask, window=window, bottom_q=bottom_q).double()


# ------------------------------------------------------------------------------------ voters
@dataclass(frozen=True)
class Voter:
    """A vote rule: which trace score weights/filters, whether to weight, what fraction to keep.

    Attributes:
        score: a :data:`TRACE_SCORES` name, or None (plain majority; needs no confidences).
        weighted: weight votes by the score.
        top: keep only the top-η fraction by score before voting (None: keep all).
    """

    score: str | None = None
    weighted: bool = False
    top: float | None = None

    def __post_init__(self) -> None:
        if self.score is None and (self.weighted or self.top is not None):
            raise EntrolabError("a weighted or filtered voter needs a trace score name")
        if self.score is not None and self.score not in TRACE_SCORES:
            TRACE_SCORES.entry(self.score)  # raises, listing the known scores

    def __call__(
        self, answers: Sequence[str | None], scores: Mapping[str, Sequence[float]] | None = None
    ) -> Vote:
        """Vote over ``answers`` given precomputed ``scores`` {score name: N values}."""
        if self.score is None:
            _check_lists(answers, None, "")
            return weighted_vote(answers)
        if scores is None or self.score not in scores:
            raise EntrolabError(f"this voter needs the {self.score!r} score of every trace")
        return vote(answers, scores[self.score], weighted=self.weighted, top=self.top)


#: Vote rules by name (DeepConf's seven offline variants, named as in its code).
VOTERS: Registry[Voter] = Registry("voters")
for _name, _voter, _summary in [
    ("majority", Voter(), "plain majority vote (1 per parseable trace)"),
    (
        "mean_confidence_weighted",
        Voter("mean", True),
        "votes weighted by mean token confidence",
    ),
    (
        "tail_confidence_weighted",
        Voter("tail", True),
        "votes weighted by tail confidence (last `window` tokens)",
    ),
    (
        "bottom_window_weighted",
        Voter("bottom_window", True),
        "votes weighted by bottom-10% window confidence",
    ),
    (
        "min_window_weighted",
        Voter("lowest_window", True),
        "votes weighted by lowest window confidence",
    ),
    (
        "top10_tail_filtered",
        Voter("tail", True, 0.1),
        "top 10% of traces by tail confidence, then tail-weighted vote",
    ),
    (
        "top10_bottom_window_filtered",
        Voter("bottom_window", True, 0.1),
        "top 10% by bottom-window confidence, then weighted vote",
    ),
]:
    VOTERS.register(
        _name,
        summary=_summary,
        paper="" if _name == "majority" else _DEEPCONF,
        defaults={"score": _voter.score, "weighted": _voter.weighted, "top": _voter.top},
    )(_voter)
del _name, _voter, _summary

#: DeepConf's seven variants, in the order of its code.
DEEPCONF_VARIANTS: tuple[str, ...] = (
    "majority",
    "mean_confidence_weighted",
    "tail_confidence_weighted",
    "bottom_window_weighted",
    "min_window_weighted",
    "top10_tail_filtered",
    "top10_bottom_window_filtered",
)


def get_voter(spec: str | Voter) -> Voter:
    """A :class:`Voter` from a :data:`VOTERS` name or a Voter (returned as is)."""
    return spec if isinstance(spec, Voter) else VOTERS.get(spec)


def deepconf_votes(
    answers: Sequence[str | None],
    traces: Sequence[Trace],
    *,
    voters: Sequence[str] = DEEPCONF_VARIANTS,
    k: int = 20,
    window: int = 2048,
    bottom_q: float = 0.1,
) -> dict[str, Vote]:
    """Every named vote over the same traces, each trace score computed once."""
    _check_lists(answers, traces, "traces")
    rules = {name: VOTERS.get(name) for name in voters}
    needed = sorted({r.score for r in rules.values() if r.score is not None})
    scores: dict[str, list[float]] = {}
    if needed:
        conf, mask = token_confidences(traces, k)
        for s in needed:
            fn = TRACE_SCORES.get(s)
            scores[s] = fn(conf, mask, window=window, bottom_q=bottom_q).tolist()
    return {name: rule(answers, scores) for name, rule in rules.items()}
