"""RL fine-tuning with entropy control: policy losses, advantage estimators, loss aggregation
and the entropy-mechanism law.

Importing this package has no side effects and loads no submodule; the registries are loaded on
first access::

    from entrolab import rl
    loss_fn = rl.policy_losses.get("kl_cov")          # = entrolab.rl.losses.POLICY_LOSSES
    adv_fn = rl.advantage_estimators.get("grpo")      # = entrolab.rl.advantages.ADVANTAGE_ESTIMATORS
    agg = rl.loss_aggregations.get("token-mean")      # = entrolab.rl.aggregation.LOSS_AGGREGATIONS
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from entrolab.rl.types import PolicyLossInput, PolicyLossOutput

__all__ = [
    "PolicyLossInput",
    "PolicyLossOutput",
    "advantage_estimators",
    "loss_aggregations",
    "policy_losses",
]

_LAZY: dict[str, tuple[str, str]] = {
    "policy_losses": ("entrolab.rl.losses", "POLICY_LOSSES"),
    "advantage_estimators": ("entrolab.rl.advantages", "ADVANTAGE_ESTIMATORS"),
    "loss_aggregations": ("entrolab.rl.aggregation", "LOSS_AGGREGATIONS"),
    "PolicyLossInput": ("entrolab.rl.types", "PolicyLossInput"),
    "PolicyLossOutput": ("entrolab.rl.types", "PolicyLossOutput"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'entrolab.rl' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), attr)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
