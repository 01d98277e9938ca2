"""transformers' own warpers (min-p, top-p, typical, epsilon, eta, top-k, temperature), used as is.

Each factory validates its arguments (an :class:`EntrolabError` naming the bad one), builds the
``transformers.generation.logits_process`` class and wraps it in a :class:`TransformersWarper`,
which accepts [..., V] logits (flattened to [N, V] for the call) and adds ``diagnostics()``. The
results are exactly transformers' (tested against the classes called directly). Parameter names
follow the classes' constructors; ``generate``'s keyword names are accepted as aliases
(``typical_p`` → ``mass``, ``epsilon_cutoff`` / ``eta_cutoff`` → ``epsilon``).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.generation import logits_process as hf

from entrolab.decoding.base import WarperProcessor, as_rows, check_int, check_number

__all__ = [
    "TransformersWarper",
    "epsilon_warper",
    "eta_warper",
    "min_p_warper",
    "plain_warper",
    "temperature_warper",
    "top_k_warper",
    "top_p_warper",
    "typical_warper",
]


class TransformersWarper(WarperProcessor):
    """A transformers ``LogitsProcessor`` as an entrolab warper ([..., V] in, [..., V] out).

    Args:
        name: registry name.
        processor: the transformers processor instance (called with ``input_ids=None``).
        params: the arguments it was built with (for reports).
    """

    def __init__(self, name: str, processor: Any, params: dict[str, Any]) -> None:
        super().__init__()
        self.name = name
        self.processor = processor
        self.params = dict(params)

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        rows = as_rows(logits)
        return self.processor(None, rows).reshape(logits.shape)


def _keep(value: Any, owner: str) -> int:
    return check_int("min_tokens_to_keep", value, owner=owner)


def min_p_warper(min_p: float = 0.1, min_tokens_to_keep: int = 1) -> TransformersWarper:
    """Keep tokens with p ≥ min_p · p_max (Nguyen et al. 2024, arXiv:2407.01082)."""
    m = check_number("min_p", min_p, low=0.0, high=1.0, owner="min_p")
    k = _keep(min_tokens_to_keep, "min_p")
    return TransformersWarper(
        "min_p", hf.MinPLogitsWarper(m, min_tokens_to_keep=k), {"min_p": m, "min_tokens_to_keep": k}
    )


def top_p_warper(top_p: float = 0.9, min_tokens_to_keep: int = 1) -> TransformersWarper:
    """Nucleus: the smallest most-likely set with mass ≥ top_p (Holtzman et al. 2020)."""
    p = check_number("top_p", top_p, low=0.0, high=1.0, low_open=True, owner="top_p")
    k = _keep(min_tokens_to_keep, "top_p")
    return TransformersWarper(
        "top_p", hf.TopPLogitsWarper(p, min_tokens_to_keep=k), {"top_p": p, "min_tokens_to_keep": k}
    )


def _unit_warper(
    name: str, cls: type, key: str, value: float, min_tokens_to_keep: int
) -> TransformersWarper:
    """Warper ``name`` = transformers' ``cls(value, min_tokens_to_keep=k)``, with its parameter
    ``key`` checked to lie in the open interval (0, 1); settings ``{key: value,
    "min_tokens_to_keep": k}``."""
    v = check_number(key, value, low=0.0, high=1.0, low_open=True, high_open=True, owner=name)
    k = _keep(min_tokens_to_keep, name)
    return TransformersWarper(name, cls(v, min_tokens_to_keep=k), {key: v, "min_tokens_to_keep": k})


def typical_warper(
    mass: float = 0.9, min_tokens_to_keep: int = 1, typical_p: float | None = None
) -> TransformersWarper:
    """Locally typical sampling: tokens with surprisal closest to H, up to ``mass``
    (Meister et al. 2023). Its kept set is *not* a prefix by probability."""
    value = typical_p if typical_p is not None else mass
    return _unit_warper("typical", hf.TypicalLogitsWarper, "mass", value, min_tokens_to_keep)


def epsilon_warper(
    epsilon: float = 3e-4, min_tokens_to_keep: int = 1, epsilon_cutoff: float | None = None
) -> TransformersWarper:
    """Keep tokens with p ≥ ε (Hewitt et al. 2022, truncation sampling)."""
    value = epsilon_cutoff if epsilon_cutoff is not None else epsilon
    return _unit_warper("epsilon", hf.EpsilonLogitsWarper, "epsilon", value, min_tokens_to_keep)


def eta_warper(
    epsilon: float = 3e-4, min_tokens_to_keep: int = 1, eta_cutoff: float | None = None
) -> TransformersWarper:
    """Keep tokens with p ≥ η = min(ε, √ε·e^{−H}) (Hewitt et al. 2022, eta sampling)."""
    value = eta_cutoff if eta_cutoff is not None else epsilon
    return _unit_warper("eta", hf.EtaLogitsWarper, "epsilon", value, min_tokens_to_keep)


def top_k_warper(top_k: int = 50, min_tokens_to_keep: int = 1) -> TransformersWarper:
    """Keep the k most likely tokens (ties at the k-th value kept)."""
    k = check_int("top_k", top_k, owner="top_k")
    keep = _keep(min_tokens_to_keep, "top_k")
    return TransformersWarper(
        "top_k",
        hf.TopKLogitsWarper(k, min_tokens_to_keep=keep),
        {"top_k": k, "min_tokens_to_keep": keep},
    )


def temperature_warper(temperature: float = 1.0) -> TransformersWarper:
    """Divide the logits by ``temperature`` (on top of the base temperature)."""
    t = check_number("temperature", temperature, low=0.0, low_open=True, owner="temperature")
    return TransformersWarper("temperature", hf.TemperatureLogitsWarper(t), {"temperature": t})


class _Identity(WarperProcessor):
    name = "plain"

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        as_rows(logits)
        return logits.clone()


def plain_warper() -> WarperProcessor:
    """No truncation: sample from the temperature-scaled distribution (a copy of the input)."""
    return _Identity()
