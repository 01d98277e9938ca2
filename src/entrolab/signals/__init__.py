"""Pure-tensor signals: per-token statistics from logits or top-k logprobs, and sequence-level
aggregations over them. Imports no model, backend or CLI code.

Two registries live here (see :mod:`entrolab.registry`): :data:`SIGNALS` (per-token signals) and
:data:`AGGREGATIONS` (sequence-level reductions, DeepConf scores, token-selection masks).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from entrolab.registry import Registry
from entrolab.signals.classifier import (
    Selection,
    compare_select,
    confidence_gain,
    energy_confidence,
    exp_weight,
    label_prob,
    neg_entropy,
    perturbation_drop,
    relative_to_log_k,
    threshold_select,
)
from entrolab.signals.continuous import (
    gaussian_entropy,
    knn_entropy,
    mixture_entropy_bounds,
    mixture_entropy_mc,
    sample_entropy,
)
from entrolab.signals.token import (
    TokenStatistics,
    check_finite_logits,
    entropy_and_varentropy,
    max_prob,
    self_certainty,
    token_entropy,
    token_nll,
    token_rank,
    token_statistics,
    top_margin,
    topk_confidence,
    varentropy,
)
from entrolab.signals.topk import (
    renormalized_topk_entropy,
    topk_entropy_bounds,
    topk_entropy_lower,
    topk_entropy_upper,
    topk_tail_mass,
)
from entrolab.signals.truncation import TruncationStatistics, truncation_statistics
from entrolab.signals.windows import (
    forking_token_mask,
    group_confidence,
    high_window_entropy_mask,
    masked_max,
    masked_mean,
    masked_min,
    masked_sum,
    phase_mask,
    phase_split,
    sliding_window_mean,
    window_entropy,
)

__all__ = [
    "AGGREGATIONS",
    "SIGNALS",
    "Selection",
    "TokenStatistics",
    "TruncationStatistics",
    "check_finite_logits",
    "compare_select",
    "confidence_gain",
    "energy_confidence",
    "entropy_and_varentropy",
    "exp_weight",
    "forking_token_mask",
    "gaussian_entropy",
    "group_confidence",
    "high_window_entropy_mask",
    "knn_entropy",
    "label_prob",
    "masked_max",
    "masked_mean",
    "masked_min",
    "masked_sum",
    "max_prob",
    "mixture_entropy_bounds",
    "mixture_entropy_mc",
    "neg_entropy",
    "perturbation_drop",
    "phase_mask",
    "phase_split",
    "relative_to_log_k",
    "renormalized_topk_entropy",
    "sample_entropy",
    "self_certainty",
    "sliding_window_mean",
    "threshold_select",
    "token_entropy",
    "token_nll",
    "token_rank",
    "token_statistics",
    "top_margin",
    "topk_confidence",
    "topk_entropy_bounds",
    "topk_entropy_lower",
    "topk_entropy_upper",
    "topk_tail_mass",
    "truncation_statistics",
    "varentropy",
    "window_entropy",
]

_DEEPCONF = "Fu et al. 2025, Deep Think with Confidence, arXiv:2508.15260"
_SELF_CERTAINTY = (
    "Kang et al. 2025, Scalable Best-of-N Selection for LLMs via Self-Certainty, arXiv:2502.18581"
)
_FORKING = "Wang et al. 2025, Beyond the 80/20 Rule, arXiv:2506.01939"
_ARES = "Chen et al. 2025, ARES, arXiv:2510.08457"

#: Per-token signals: logits [..., V] (or top-k logprobs [..., K]) → [...].
SIGNALS: Registry[Callable[..., Any]] = Registry("signals")
#: Sequence-level aggregations: values [..., T] + bool mask [..., T] → [...] (or masks [..., T]).
AGGREGATIONS: Registry[Callable[..., Any]] = Registry("aggregations")

_C = {"chunk_rows": 16}
for _name, _fn, _summary, _paper, _defaults in [
    ("entropy", token_entropy, "Shannon entropy of the next-token distribution (nats)", "", _C),
    ("varentropy", varentropy, "variance of the surprisal −log p under p (nats²)", "", _C),
    ("max_prob", max_prob, "probability of the most likely token (in (0, 1])", "", _C),
    (
        "margin",
        top_margin,
        "top-1 minus top-2 probability (or log-probability, nats)",
        "",
        {"space": "prob", **_C},
    ),
    ("nll", token_nll, "negative log-likelihood of the chosen token (nats)", "", _C),
    ("rank", token_rank, "0-based rank of the chosen token (0 = most likely)", "", _C),
    ("self_certainty", self_certainty, "KL(uniform ‖ p), ≥ 0 (nats)", _SELF_CERTAINTY, _C),
    ("topk_confidence", topk_confidence, "DeepConf −mean of top-k logprobs (nats)", _DEEPCONF, {}),
    (
        "topk_entropy_lower",
        topk_entropy_lower,
        "lower bound on the entropy from top-k logprobs (nats)",
        "",
        {},
    ),
    (
        "topk_entropy_upper",
        topk_entropy_upper,
        "upper bound on the entropy from top-k logprobs (nats)",
        "",
        {},
    ),
    (
        "renormalized_topk_entropy",
        renormalized_topk_entropy,
        "entropy of the top-k probabilities renormalised to 1 (nats)",
        "",
        {},
    ),
    ("topk_tail_mass", topk_tail_mass, "probability mass outside the top-k (in [0, 1])", "", {}),
    ("neg_entropy", neg_entropy, "−entropy of the class distribution (nats, ≤ 0)", "", {}),
    (
        "energy",
        energy_confidence,
        "negative free energy T·logsumexp(z/T) (logit units; higher = in-distribution)",
        "Liu et al. 2020, Energy-based Out-of-distribution Detection, arXiv:2010.03759",
        {"temperature": 1.0},
    ),
]:
    SIGNALS.register(_name, summary=_summary, paper=_paper, defaults=_defaults)(_fn)


def _group_mode(mode: str) -> Callable[..., Any]:
    fn = functools.partial(group_confidence, mode=mode)
    fn.__name__ = f"group_confidence_{mode}"  # type: ignore[attr-defined]
    fn.__doc__ = f"group_confidence(token_conf, mask, mode={mode!r}, ...) — see group_confidence."
    return fn


_G = {"window": 2048, "bottom_q": 0.1}
for _name, _fn, _summary, _paper, _defaults in [
    ("mean", masked_mean, "mean over the real tokens of each sequence", "", {"empty": 0.0}),
    ("min", masked_min, "minimum over the real tokens of each sequence", "", {"empty": 0.0}),
    ("max", masked_max, "maximum over the real tokens of each sequence", "", {"empty": 0.0}),
    ("sum", masked_sum, "sum over the real tokens of each sequence", "", {}),
    (
        "sliding_window_mean",
        sliding_window_mean,
        "means of sliding windows of real tokens, with a valid mask",
        _DEEPCONF,
        {"window": 2048},
    ),
    (
        "group_confidence",
        group_confidence,
        "DeepConf trace score (mode: mean | lowest | bottom | tail window confidence, nats)",
        _DEEPCONF,
        {**_G, "mode": "mean"},
    ),
    (
        "deepconf_lowest",
        _group_mode("lowest"),
        "DeepConf lowest group confidence: min sliding-window mean (nats)",
        _DEEPCONF,
        {**_G, "mode": "lowest"},
    ),
    (
        "deepconf_bottom",
        _group_mode("bottom"),
        "DeepConf bottom-10% group confidence: mean of the lowest window means (nats)",
        _DEEPCONF,
        {**_G, "mode": "bottom"},
    ),
    (
        "deepconf_tail",
        _group_mode("tail"),
        "DeepConf tail confidence: mean of the last `window` tokens (nats)",
        _DEEPCONF,
        {**_G, "mode": "tail"},
    ),
    (
        "window_entropy",
        window_entropy,
        "forward window-mean entropy per token (nats)",
        _ARES,
        {"window": 8},
    ),
    (
        "high_window_entropy",
        high_window_entropy_mask,
        "mask of tokens whose window entropy exceeds a quantile (HWE tokens)",
        _ARES,
        {"window": 8, "quantile": 0.8, "scope": "sequence"},
    ),
    (
        "forking_tokens",
        forking_token_mask,
        "mask of the top-ρ fraction of tokens by entropy (forking tokens)",
        _FORKING,
        {"rho": 0.2, "scope": "batch", "method": "topk"},
    ),
]:
    AGGREGATIONS.register(_name, summary=_summary, paper=_paper, defaults=_defaults)(_fn)

del _name, _fn, _summary, _paper, _defaults
