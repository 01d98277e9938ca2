"""The estimator entry type and the :data:`ESTIMATORS` registry.

An estimator is a pure function ``fn(stats, **params) -> u`` on a dictionary of named statistics
(see :mod:`entrolab.estimators.stats`), returning one uncertainty per prompt: ``u`` float64 [N],
higher = less trustworthy (every built-in estimator declares ``higher_is_uncertain=True``; a
fitted normaliser, not the estimator, turns ``u`` into a confidence in [0, 1]).

Each registered :class:`Estimator` declares its ``level`` (``"sequence"``: computed from one
answer's trace; ``"set"``: from the G samples of a prompt) and ``needs``, the statistic names it
reads; the statistics graph computes the union of the needs once per run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from entrolab.errors import EntrolabError
from entrolab.registry import Registry

Level = Literal["sequence", "set"]
EstimatorFn = Callable[..., np.ndarray]

__all__ = ["ESTIMATORS", "Estimator", "Level", "as_uncertainty", "get_estimators", "register"]


@dataclass(frozen=True)
class Estimator:
    """One uncertainty estimator (the object stored in :data:`ESTIMATORS`).

    Attributes:
        name: registry name.
        fn: ``fn(stats, **params) -> np.ndarray`` float64 [N] (N prompts); pure, no model calls.
        level: ``"sequence"`` (one answer's trace) or ``"set"`` (the G-sample set of a prompt).
        needs: statistic names ``fn`` reads from ``stats``.
        higher_is_uncertain: True when larger values mean less trustworthy (all built-ins).
        defaults: default keyword parameters of ``fn`` (the same mapping as the registry entry's).
        requires: backend capabilities it needs beyond generation (``Capabilities`` field
            names, e.g. ``"full_logits"``); backends declaring less skip it.
        fitted: parameters that must be given because they hold a fitted artefact (a probe,
            a conformal q̂); estimators with any are run by name only, never auto-selected.
        opt_in: run by name only, never auto-selected, for another reason (e.g. ``sayself``
            reads a confidence that only some prompts or fine-tuned models state).
    """

    name: str
    fn: EstimatorFn
    level: Level
    needs: frozenset[str]
    higher_is_uncertain: bool = True
    defaults: Mapping[str, Any] | None = None
    requires: frozenset[str] = frozenset()
    fitted: frozenset[str] = frozenset()
    opt_in: bool = False

    def __call__(self, stats: Mapping[str, Any], **params: Any) -> np.ndarray:
        """u float64 [N] from ``stats`` (must hold every name in ``needs``); ``params`` override
        the defaults. Raises :class:`EntrolabError` on missing statistics, unknown parameters,
        or a result that is not a finite vector."""
        missing = sorted(self.needs - set(stats))
        if missing:
            raise EntrolabError(
                f"estimator {self.name!r} needs statistics {missing}; compute them with "
                "entrolab.estimators.compute_statistics or run_estimators"
            )
        known = dict(self.defaults or {})
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise EntrolabError(
                f"estimator {self.name!r} got unknown parameters {unknown}; "
                f"known: {sorted(known) or 'none'}"
            )
        known.update(params)
        return as_uncertainty(self.fn(stats, **known), self.name)


def as_uncertainty(values: Any, name: str = "estimator") -> np.ndarray:
    """``values`` as a float64 vector [N]; raises if it is not 1-D or holds NaN/inf."""
    u = np.asarray(values, dtype=np.float64)
    if u.ndim != 1:
        raise EntrolabError(f"{name} must return one value per prompt (shape [N]), got {u.shape}")
    bad = ~np.isfinite(u)
    if bad.any():
        raise EntrolabError(
            f"{name} produced {int(bad.sum())} non-finite values (first at prompt "
            f"{int(np.argmax(bad))}); this is a bug or degenerate input — check its statistics"
        )
    return u


#: All estimators; ``entrolab list estimators`` shows them.
ESTIMATORS: Registry[Estimator] = Registry("estimators")


def register(
    name: str,
    *,
    level: Level,
    needs: Iterable[str],
    summary: str,
    paper: str = "",
    defaults: Mapping[str, Any] | None = None,
    higher_is_uncertain: bool = True,
    aliases: tuple[str, ...] = (),
    requires: Iterable[str] = (),
    fitted: Iterable[str] = (),
    opt_in: bool = False,
) -> Callable[[EstimatorFn], EstimatorFn]:
    """Decorator registering ``fn(stats, **params) -> u [N]`` as an :class:`Estimator`.

    Returns ``fn`` unchanged so the plain function stays importable and testable.
    """
    if level not in ("sequence", "set"):
        raise EntrolabError(f"estimator level must be 'sequence' or 'set', got {level!r}")
    frozen_defaults = dict(defaults or {})

    def deco(fn: EstimatorFn) -> EstimatorFn:
        est = Estimator(
            name,
            fn,
            level,
            frozenset(needs),
            higher_is_uncertain,
            frozen_defaults,
            frozenset(requires),
            frozenset(fitted),
            opt_in,
        )
        ESTIMATORS.register(
            name, summary=summary, paper=paper, defaults=frozen_defaults, aliases=aliases
        )(est)
        return fn

    return deco


def get_estimators(names: Iterable[str]) -> list[Estimator]:
    """Registered estimators by name (aliases allowed, duplicates dropped, order kept).

    Unknown names raise :class:`~entrolab.errors.UnknownNameError` listing the known ones.
    """
    out: dict[str, Estimator] = {}
    for n in names:
        if not isinstance(n, str):
            raise EntrolabError(f"estimator names must be strings, got {n!r}")
        est = ESTIMATORS.get(n)
        out.setdefault(est.name, est)
    return list(out.values())
