"""The ``samplers`` registry: name → factory ``(**params) -> warper``, plus spec parsing.

``SAMPLERS.get(name)(**params)`` builds a :class:`~entrolab.decoding.base.WarperProcessor`:
callable as ``w(logits [R, V]) -> logits [R, V]`` (logits already divided by the base
temperature) and as a transformers processor ``w(input_ids, scores)``. :func:`make_warper`
validates names and parameters first; :func:`parse_sampler_spec` reads ``"top_h:alpha=0.4"``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

from entrolab.decoding.adaptive_temperature import EDTLogitsProcessor
from entrolab.decoding.base import WarperProcessor
from entrolab.decoding.entropix_sampling import entropix_warper
from entrolab.decoding.mask import mask_ids_warper
from entrolab.decoding.toph import TopHLogitsProcessor
from entrolab.decoding.transformers_warpers import (
    epsilon_warper,
    eta_warper,
    min_p_warper,
    plain_warper,
    temperature_warper,
    top_k_warper,
    top_p_warper,
    typical_warper,
)
from entrolab.errors import EntrolabError
from entrolab.registry import Registry

__all__ = ["SAMPLERS", "format_sampler_spec", "make_warper", "parse_sampler_spec"]

#: Sampler factories: ``SAMPLERS.get(name)(**params) -> WarperProcessor``.
SAMPLERS: Registry[Callable[..., WarperProcessor]] = Registry("samplers")

_TOPH = "Potraghloo et al. 2025, Top-H Decoding, arXiv:2509.02510"
_ENTROPIX = "xjdr-alt/entropix (2024), torch_sampler.py @cdb6f6f; no paper"
_EDT = "Zhang, Bao, Huang 2024, EDT: Entropy-based Dynamic Temperature Sampling, arXiv:2403.14541"
_TRUNC = "Hewitt, Manning, Liang 2022, Truncation Sampling as Language Model Desmoothing, EMNLP"
_HF = " (transformers' warper)"

for _name, _factory, _summary, _paper, _defaults in [
    (
        "top_h",
        TopHLogitsProcessor,
        "largest likely prefix whose entropy stays within α of the model's (released/paper rule)",
        _TOPH,
        {"alpha": 0.4, "mode": "released", "top_n": 100},
    ),
    (
        "entropix",
        entropix_warper,
        "(H, V)-regime sampler: greedy / hotter / wider / best-of-n; thresholds = model quantiles",
        _ENTROPIX,
        {
            "thresholds": "quantile",
            "temperature": 0.666,
            "top_k": 27,
            "top_p": 0.9,
            "min_p": 0.0,
            "n_candidates": 5,
        },
    ),
    (
        "edt",
        EDTLogitsProcessor,
        "entropy-adaptive temperature T = t0·base^(θ/H) per step (H in nats)",
        _EDT,
        {"theta": 1.0, "base": 0.8, "t0": 1.0},
    ),
    (
        "min_p",
        min_p_warper,
        "keep tokens with p ≥ min_p·p_max" + _HF,
        "Nguyen et al. 2024, Min-p Sampling, arXiv:2407.01082",
        {"min_p": 0.1, "min_tokens_to_keep": 1},
    ),
    (
        "top_p",
        top_p_warper,
        "nucleus: smallest likely set with mass ≥ top_p" + _HF,
        "Holtzman et al. 2020, The Curious Case of Neural Text Degeneration, ICLR",
        {"top_p": 0.9, "min_tokens_to_keep": 1},
    ),
    (
        "typical",
        typical_warper,
        "locally typical: tokens whose surprisal is closest to H, up to `mass`" + _HF,
        "Meister et al. 2023, Locally Typical Sampling, TACL 11",
        {"mass": 0.9, "min_tokens_to_keep": 1},
    ),
    (
        "epsilon",
        epsilon_warper,
        "keep tokens with p ≥ ε" + _HF,
        _TRUNC,
        {"epsilon": 3e-4, "min_tokens_to_keep": 1},
    ),
    (
        "eta",
        eta_warper,
        "keep tokens with p ≥ min(ε, √ε·e^(−H))" + _HF,
        _TRUNC,
        {"epsilon": 3e-4, "min_tokens_to_keep": 1},
    ),
    (
        "top_k",
        top_k_warper,
        "keep the k most likely tokens" + _HF,
        "Fan, Lewis, Dauphin 2018, Hierarchical Neural Story Generation, ACL",
        {"top_k": 50, "min_tokens_to_keep": 1},
    ),
    (
        "temperature",
        temperature_warper,
        "divide the logits by an extra temperature" + _HF,
        "",
        {"temperature": 1.0},
    ),
    (
        "plain",
        plain_warper,
        "no truncation: sample from the temperature-scaled distribution as is",
        "",
        {},
    ),
    (
        "mask_ids",
        mask_ids_warper,
        "the plain distribution without ids start … start+count−1 (e.g. reserved rows)",
        "Manvi et al. 2025, ZIP-RC (masks its reserved joint-distribution ids), arXiv:2512.01457",
        {"start": 0, "count": 1},
    ),
]:
    SAMPLERS.register(_name, summary=_summary, paper=_paper, defaults=_defaults)(_factory)
del _name, _factory, _summary, _paper, _defaults


def sampler_parameters(name: str) -> list[str]:
    """The keyword parameters the sampler ``name`` accepts."""
    sig = inspect.signature(SAMPLERS.get(name))
    return [p.name for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]


def make_warper(name: str, params: Mapping[str, Any] | None = None) -> WarperProcessor:
    """Build the sampler ``name`` with ``params`` after checking both.

    Raises:
        UnknownNameError: unknown sampler (the message lists the known ones).
        EntrolabError: an unknown parameter (the message lists the accepted ones) or a bad value.
    """
    factory = SAMPLERS.get(name)
    params = dict(params or {})
    known = sampler_parameters(name)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise EntrolabError(
            f"sampler {name!r} has no parameter(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(known) or '(none)'}"
        )
    return factory(**params)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.strip().lower()
        return {"true": True, "false": False, "none": None}.get(low, text.strip())


def parse_param(pair: str) -> tuple[str, Any]:
    """``"alpha=0.4"`` → ``("alpha", 0.4)`` (JSON values; anything else stays a string)."""
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise EntrolabError(f"a sampler parameter takes KEY=VALUE, got {pair!r}")
    return key.strip(), _value(value)


def parse_sampler_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"top_h:alpha=0.4,mode=paper"`` → ``("top_h", {"alpha": 0.4, "mode": "paper"})``.

    The name is checked against :data:`SAMPLERS`; parameters are checked by :func:`make_warper`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise EntrolabError("sampler spec is empty; write NAME or NAME:key=value,key=value")
    name, _, rest = spec.strip().partition(":")
    SAMPLERS.entry(name.strip())  # unknown names fail here with the list of known ones
    params = dict(parse_param(p) for p in rest.split(",") if p.strip())
    return name.strip(), params


def format_sampler_spec(name: str, params: Mapping[str, Any] | None = None) -> str:
    """Inverse of :func:`parse_sampler_spec` (a stable label such as ``top_h:alpha=0.4``)."""
    if not params:
        return name

    def text(v: Any) -> str:
        return v if isinstance(v, str) and _value(v) == v else json.dumps(v)

    return name + ":" + ",".join(f"{k}={text(v)}" for k, v in params.items())
