"""Entropy-aware decoding: pure warpers (logits → logits) and thin transformers processors.

A *warper* maps logits ``[R, V]`` (already divided by the base temperature; ``[..., V]`` works
too) to new logits, out of place, with removed tokens at ``-inf``. Every one is also a
``transformers.LogitsProcessor`` with ``diagnostics()`` (kept-set size, retained mass, entropy
after, per row of the last call). :data:`SAMPLERS` lists them (``entrolab list samplers``):
Top-H (:func:`top_h`, paper and released rules), entropix-style regimes (:func:`entropix`),
entropy-adaptive temperature (:func:`entropy_adaptive_temperature`, EDT) and transformers' own
min-p, top-p, typical, epsilon, eta, top-k and temperature warpers, plus ``plain``.
Beyond warpers: CK-PLUG (:func:`ckplug_generate`, parameters vs context) and EAST activation
steering (:func:`build_steering_vector`, :func:`steer`).

Names are imported lazily: ``import entrolab.decoding`` loads neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    # base and diagnostics
    "Warper": "entrolab.decoding.base",
    "WarperProcessor": "entrolab.decoding.base",
    "warper_diagnostics": "entrolab.decoding.diagnostics",
    "DIAGNOSTIC_KEYS": "entrolab.decoding.diagnostics",
    # registry
    "SAMPLERS": "entrolab.decoding.samplers",
    "make_warper": "entrolab.decoding.samplers",
    "parse_sampler_spec": "entrolab.decoding.samplers",
    "format_sampler_spec": "entrolab.decoding.samplers",
    "sampler_parameters": "entrolab.decoding.samplers",
    # Top-H
    "top_h": "entrolab.decoding.toph",
    "top_h_keep_counts": "entrolab.decoding.toph",
    "TopHLogitsProcessor": "entrolab.decoding.toph",
    # entropix
    "entropix": "entrolab.decoding.entropix_sampling",
    "entropix_regimes": "entrolab.decoding.entropix_sampling",
    "fit_entropix_thresholds": "entrolab.decoding.entropix_sampling",
    "EntropixThresholds": "entrolab.decoding.entropix_sampling",
    "EntropixLogitsProcessor": "entrolab.decoding.entropix_sampling",
    "REGIMES": "entrolab.decoding.entropix_sampling",
    # entropy-adaptive temperature
    "edt_temperature": "entrolab.decoding.adaptive_temperature",
    "entropy_adaptive_temperature": "entrolab.decoding.adaptive_temperature",
    "EDTLogitsProcessor": "entrolab.decoding.adaptive_temperature",
    # transformers' own warpers
    "TransformersWarper": "entrolab.decoding.transformers_warpers",
    # CK-PLUG (parameters vs context) and EAST activation steering
    "confidence_gain": "entrolab.decoding.ckplug",
    "ckplug_logits": "entrolab.decoding.ckplug",
    "candidate_mask": "entrolab.decoding.ckplug",
    "relative_uncertainty": "entrolab.decoding.ckplug",
    "ckplug_generate": "entrolab.decoding.ckplug_generation",
    "CKPlugResult": "entrolab.decoding.ckplug_generation",
    "CKPlugLogitsProcessor": "entrolab.decoding.ckplug_generation",
    "collect_hidden_states": "entrolab.decoding.steering",
    "next_token_entropy": "entrolab.decoding.steering",
    "option_entropy": "entrolab.decoding.steering",
    "build_steering_vector": "entrolab.decoding.steering",
    "steer": "entrolab.decoding.steering",
    "decoder_layers": "entrolab.decoding.steering",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'entrolab.decoding' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
