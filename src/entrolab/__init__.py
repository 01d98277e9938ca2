"""entrolab: the entropy & confidence lab for language models.

Top-level names are imported lazily (``entrolab.evaluate`` loads the evaluation stack only when
first used), so ``import entrolab`` is cheap and has no side effects.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "evaluate": "entrolab.evaluation:evaluate",
    "load_results": "entrolab.evaluation:load_results",
    "load_model": "entrolab.models:load_model",
    "HFBackend": "entrolab.backends:HFBackend",
    "GenerationConfig": "entrolab.config:GenerationConfig",
    "Trace": "entrolab.types:Trace",
    "TraceBatch": "entrolab.types:TraceBatch",
    "load_task": "entrolab.tasks:load_task",
    "run_estimators": "entrolab.estimators:run_estimators",
}
_SUBMODULES = {"signals", "calibration", "estimators", "tasks", "backends", "models", "report"}

__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name].split(":")
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"entrolab.{name}")
    raise AttributeError(f"module 'entrolab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
