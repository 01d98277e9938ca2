"""Stopping rules over a stream of (prediction, confidence) steps: one implementation for spiking
time steps, multi-exit layers, reasoning steps or debate rounds.

Input convention (scope: per item): ``conf`` [N, T] confidence after each of T steps (higher =
more confident) and ``pred`` [N, T] the prediction after each step. A rule returns
``stop`` int64 [N]: the 0-based step after which each item stops (it uses ``t + 1`` steps;
``T − 1`` when the rule never fires). Rules are pure replays of the online decision: whether
to stop after step t depends only on steps ≤ t.

:class:`ConfidenceThreshold` is DeepConf's online rule with a one-step window
(:func:`entrolab.inference.stopping.first_stop_index` on −conf), so one replay serves both.
:func:`pareto_threshold` picks θ on validation curves (Dynamic Confidence, Li et al. ICCV 2023):
the θ with the lowest mean steps whose accuracy is within ``max_drop`` of the full-T accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from entrolab.errors import EntrolabError
from entrolab.inference.stopping import first_stop_index
from entrolab.registry import Registry

__all__ = [
    "STOPPING_RULES",
    "AnyOf",
    "Budget",
    "ConfidenceThreshold",
    "ParetoFit",
    "Patience",
    "StopOutcome",
    "StoppingRule",
    "pareto_threshold",
    "stop_outcome",
]

STOPPING_RULES: Registry[type] = Registry("stopping_rules")


def _check_stream(conf: torch.Tensor, name: str = "conf") -> torch.Tensor:
    if not isinstance(conf, torch.Tensor) or conf.dim() != 2 or conf.shape[1] == 0:
        shape = tuple(conf.shape) if isinstance(conf, torch.Tensor) else type(conf).__name__
        raise EntrolabError(f"{name} must be a [N, T] tensor with T >= 1 steps, got {shape}")
    if conf.is_floating_point() and not bool(torch.isfinite(conf).all()):
        raise EntrolabError(f"{name} contains NaN/inf; check the model outputs")
    return conf


class StoppingRule(Protocol):
    def replay(self, conf: torch.Tensor, pred: torch.Tensor | None = None) -> torch.Tensor:
        """[N, T] confidences (and predictions) → int64 [N] stop steps (0-based)."""
        ...


@STOPPING_RULES.register(
    "confidence_threshold",
    summary="stop at the first step whose confidence is strictly above θ",
    paper="Li, Jones, Furber 2023, Unleashing the Potential of SNNs with Dynamic Confidence",
    defaults={"theta": 0.6},
)
@dataclass(frozen=True)
class ConfidenceThreshold:
    theta: float

    def replay(self, conf: torch.Tensor, pred: torch.Tensor | None = None) -> torch.Tensor:
        c = _check_stream(conf)
        # θ rounded to conf's dtype first, so "strictly above" means the same in float32
        theta = float(torch.tensor(float(self.theta), dtype=c.dtype))
        idx = first_stop_index(-c.double(), None, -theta, 1)
        return torch.where(idx < 0, torch.full_like(idx, c.shape[1] - 1), idx)


@STOPPING_RULES.register(
    "patience",
    summary="stop once the prediction has stayed the same for k consecutive steps",
    defaults={"k": 3},
)
@dataclass(frozen=True)
class Patience:
    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise EntrolabError(f"patience k must be a positive int (steps), got {self.k!r}")

    def replay(self, conf: torch.Tensor, pred: torch.Tensor | None = None) -> torch.Tensor:
        if pred is None:
            raise EntrolabError("Patience needs the predictions [N, T] (pass pred=...)")
        p = _check_stream(pred, "pred")
        n, t = p.shape
        same = torch.ones(n, t, dtype=torch.int64)  # run length of the current prediction
        for s in range(1, t):
            same[:, s] = torch.where(p[:, s] == p[:, s - 1], same[:, s - 1] + 1, 1)
        hit = same >= self.k
        steps = torch.arange(t).expand(n, t)
        return torch.where(hit, steps, torch.full_like(steps, t - 1)).amin(-1)


@STOPPING_RULES.register(
    "budget", summary="stop after at most T_max steps", defaults={"max_steps": 32}
)
@dataclass(frozen=True)
class Budget:
    max_steps: int

    def __post_init__(self) -> None:
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int):
            raise EntrolabError(f"max_steps must be a positive int, got {self.max_steps!r}")
        if self.max_steps < 1:
            raise EntrolabError(f"max_steps must be a positive int, got {self.max_steps!r}")

    def replay(self, conf: torch.Tensor, pred: torch.Tensor | None = None) -> torch.Tensor:
        c = _check_stream(conf)
        return torch.full((c.shape[0],), min(self.max_steps, c.shape[1]) - 1, dtype=torch.int64)


@dataclass(frozen=True)
class AnyOf:
    """Stop as soon as any of ``rules`` fires (e.g. threshold + budget)."""

    rules: tuple[StoppingRule, ...]

    def replay(self, conf: torch.Tensor, pred: torch.Tensor | None = None) -> torch.Tensor:
        if not self.rules:
            raise EntrolabError("AnyOf needs at least one rule")
        return torch.stack([r.replay(conf, pred) for r in self.rules]).amin(0)


@dataclass(frozen=True)
class StopOutcome:
    """accuracy (fraction correct at the stop step), mean_steps (mean of stop + 1), n items."""

    accuracy: float
    mean_steps: float
    n: int


def stop_outcome(stop: torch.Tensor, correct: torch.Tensor) -> StopOutcome:
    """Accuracy and mean steps of stop steps ``stop`` [N] on per-step correctness [N, T]."""
    c = _check_stream(correct, "correct")
    if stop.shape != (c.shape[0],):
        raise EntrolabError(f"stop must be [N={c.shape[0]}], got {tuple(stop.shape)}")
    hit = c.gather(1, stop.long().unsqueeze(1)).squeeze(1).double()
    return StopOutcome(float(hit.mean()), float((stop.double() + 1).mean()), c.shape[0])


@dataclass(frozen=True)
class ParetoFit:
    """Result of :func:`pareto_threshold`: the chosen θ and the validation curve behind it.

    Attributes:
        theta: chosen threshold. full_accuracy: validation accuracy at the last step.
        curve: (θ, accuracy, mean_steps) per candidate. front: the Pareto-optimal subset.
    """

    theta: float
    full_accuracy: float
    curve: list[tuple[float, float, float]] = field(default_factory=list)
    front: list[tuple[float, float, float]] = field(default_factory=list)

    def rule(self) -> ConfidenceThreshold:
        return ConfidenceThreshold(self.theta)


def pareto_threshold(
    conf: torch.Tensor,
    correct: torch.Tensor,
    thetas: Sequence[float],
    *,
    max_drop: float = 0.005,
) -> ParetoFit:
    """Choose θ on validation curves: lowest mean steps with accuracy ≥ full-T accuracy − drop.

    Args:
        conf: [N, T] validation confidences after each step.
        correct: [N, T] bool/0-1 correctness of the prediction after each step.
        thetas: candidate thresholds.
        max_drop: allowed accuracy loss vs the last step (fraction; 0.005 = 0.5 pt).
    Returns:
        :class:`ParetoFit`. If no candidate is within ``max_drop``, θ = +inf (never stop early).
    """
    c, y = _check_stream(conf), _check_stream(correct, "correct")
    if c.shape != y.shape:
        raise EntrolabError(f"conf {tuple(c.shape)} and correct {tuple(y.shape)} must match")
    if len(thetas) == 0:
        raise EntrolabError("thetas is empty; give a grid of candidate thresholds")
    full = float(y[:, -1].double().mean())
    curve = []
    for th in sorted(float(x) for x in thetas):
        out = stop_outcome(ConfidenceThreshold(th).replay(c), y)
        curve.append((th, out.accuracy, out.mean_steps))
    front = [
        p
        for p in curve
        if not any((q[1] >= p[1] and q[2] < p[2]) or (q[1] > p[1] and q[2] <= p[2]) for q in curve)
    ]
    ok = [p for p in curve if p[1] >= full - max_drop - 1e-12]
    theta = min(ok, key=lambda p: (p[2], -p[1]))[0] if ok else float("inf")
    return ParetoFit(theta, full, curve, front)
