"""Test-time compute driven by confidence: weighted voting, online early stopping, adaptive
sample counts (and, from sibling modules, learned exits, difficulty routing and debate).

Names are imported lazily, so ``import entrolab.inference`` loads nothing heavy. Accessing
:data:`STRATEGIES` here imports every strategy module first, so the registry is complete
(``entrolab list strategies``). Registries: ``STRATEGIES`` (strategy factories), ``VOTERS``
(vote rules, DeepConf's seven variants), ``TRACE_SCORES`` (trace-level confidences).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    # base
    "ItemOutcome": "entrolab.inference.base",
    "Strategy": "entrolab.inference.base",
    "make_strategy": "entrolab.inference.base",
    "load_strategies": "entrolab.inference.base",
    "summarize_outcomes": "entrolab.inference.base",
    "Sampling": "entrolab.inference.base",
    # voting
    "VOTERS": "entrolab.inference.voting",
    "TRACE_SCORES": "entrolab.inference.voting",
    "Vote": "entrolab.inference.voting",
    "Voter": "entrolab.inference.voting",
    "get_voter": "entrolab.inference.voting",
    "token_confidences": "entrolab.inference.voting",
    "vote": "entrolab.inference.voting",
    "weighted_vote": "entrolab.inference.voting",
    "filter_top": "entrolab.inference.voting",
    "trace_scores": "entrolab.inference.voting",
    "deepconf_votes": "entrolab.inference.voting",
    # stopping
    "fit_threshold": "entrolab.inference.stopping",
    "WindowStopRule": "entrolab.inference.stopping",
    "ConfidenceStopHook": "entrolab.inference.stopping",
    "DeepConfStoppingCriteria": "entrolab.inference.stopping",
    "first_stop_index": "entrolab.inference.stopping",
    # adaptive
    "ConsensusStop": "entrolab.inference.adaptive",
    "run_waves": "entrolab.inference.adaptive",
    "wave_schedule": "entrolab.inference.adaptive",
    # pareto
    "run_pareto": "entrolab.inference.pareto",
    "ParetoPoint": "entrolab.inference.pareto",
    "pareto_svg": "entrolab.inference.pareto",
}

__all__ = sorted([*_LAZY, "STRATEGIES"])


def __getattr__(name: str) -> Any:
    if name == "STRATEGIES":
        from entrolab.inference.base import load_strategies

        return load_strategies()
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'entrolab.inference' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
