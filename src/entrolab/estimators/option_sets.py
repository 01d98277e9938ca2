"""Split-conformal prediction sets over a finite label space, and the ``set_size`` uncertainty.

Split conformal (the form C-IP uses, Chan et al. 2025, arXiv:2507.03279): with calibration
probabilities of the true labels p̂(y_i | x_i), scores s_i = 1 − p̂(y_i | x_i), and

    q̂ = the ⌈(n + 1)(1 − α)⌉-th smallest score   (+inf when that index exceeds n)

the set C(x) = {y : p̂(y | x) >= 1 − q̂} covers the true label with probability >= 1 − α
(exchangeability; marginal over calibration and test draws). |C(x)| is an uncertainty: 1 when
the model is sure enough, larger when it is not.

``set_size`` (estimator): for multiple-choice items (``item.meta["options"]``: the option
strings), p̂(option | prompt) is the softmax over options of their summed teacher-forced
log-probabilities (``backend.score``), and u = |C| under the ``qhat`` given as a parameter
(fit it with :func:`conformal_qhat` on calibration items).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from entrolab.errors import EntrolabError
from entrolab.estimators.base import register
from entrolab.estimators.stats import StatContext, statistic

__all__ = [
    "conformal_qhat",
    "expected_set_size",
    "option_probs",
    "prediction_sets",
    "set_size",
    "set_size_uncertainty",
]


def conformal_qhat(true_label_probs: Any, alpha: float = 0.1) -> float:
    """q̂ from calibration probabilities of the true labels [n] (see the module docstring).

    Raises:
        EntrolabError: empty calibration set, α outside (0, 1), probabilities outside [0, 1].
    """
    p = np.asarray(true_label_probs, dtype=np.float64).ravel()
    if p.size == 0:
        raise EntrolabError(
            "the conformal calibration set is empty; score some labelled calibration items first"
        )
    if not 0 < alpha < 1:
        raise EntrolabError(f"alpha (miscoverage) must be in (0, 1), got {alpha}")
    if not np.all((p >= 0) & (p <= 1)):
        raise EntrolabError("calibration probabilities must lie in [0, 1]")
    n = p.size
    k = math.ceil((n + 1) * (1 - alpha))
    if k > n:
        return math.inf
    return float(np.sort(1.0 - p)[k - 1])


def prediction_sets(probs: Any, qhat: float) -> np.ndarray:
    """Membership bool [..., K]: p̂(y) >= 1 − q̂ (q̂ = inf: every label)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 0 or p.shape[-1] < 2:
        raise EntrolabError(
            f"a label space needs at least 2 labels, got probabilities of shape {p.shape}; "
            "with one label there is nothing to predict"
        )
    return p >= 1.0 - qhat - 1e-12


def set_size(probs: Any, qhat: float) -> np.ndarray:
    """|C| per row [...]: the number of labels with p̂(y) >= 1 − q̂."""
    return prediction_sets(probs, qhat).sum(axis=-1)


def expected_set_size(answer_probs: Any, posteriors: Any, qhat: float) -> float:
    """E_a |C(h ∪ (q, a))| = Σ_a p̂(a | h, q) · |C(p̂(· | h, q, a))| for one query: answer
    probabilities [A] and the label posteriors after each answer [A, K]."""
    a = np.asarray(answer_probs, dtype=np.float64)
    return float(np.dot(a, set_size(posteriors, qhat)))


def option_probs(backend: Any, prompts: list[str], options: list[list[str]], **score_kw: Any):
    """p̂(option | prompt): softmax over each prompt's options of the summed log-probabilities
    of the option's tokens (teacher-forced, ``backend.score``). Returns N float64 arrays."""
    flat_p = [p for p, opts in zip(prompts, options, strict=True) for _ in opts]
    flat_o = [o for opts in options for o in opts]
    traces = list(backend.score(flat_p, flat_o, k=1, **score_kw)) if flat_p else []
    out, at = [], 0
    for opts in options:
        if len(opts) < 2:
            raise EntrolabError(
                f"a multiple-choice item needs at least 2 options, got {opts!r}; with one option "
                "the label space has size 1 and there is no uncertainty to measure"
            )
        lp = np.array([float(t.logprob.double().sum()) for t in traces[at : at + len(opts)]])
        at += len(opts)
        e = np.exp(lp - lp.max())
        out.append(e / e.sum())
    return out


@statistic(
    "option_probs",
    summary="p̂(option | prompt) over each multiple-choice item's meta['options'] (backend.score)",
    backend_methods=("score",),
)
def _option_probs(ctx: StatContext, stats: Mapping[str, Any]) -> list[np.ndarray]:
    options = []
    for i, item in enumerate(ctx.items):
        opts = (getattr(item, "meta", None) or {}).get("options")
        if not opts:
            raise EntrolabError(
                f"item {i} has no meta['options']; set_size needs multiple-choice items"
            )
        options.append([str(o) for o in opts])
    return option_probs(ctx.backend, ctx.prompts, options, **ctx.score_kwargs())


@register(
    "set_size",
    level="sequence",
    needs={"option_probs"},
    summary="conformal prediction-set size over a multiple-choice item's options (C-IP)",
    paper="Chan et al. 2025, Conformal Information Pursuit, NeurIPS 2025, arXiv:2507.03279",
    defaults={"qhat": None},
    fitted={"qhat"},
)
def set_size_uncertainty(stats: Mapping[str, Any], qhat: float | None = None) -> np.ndarray:
    """u = |C| under ``qhat`` (from :func:`conformal_qhat` on calibration items)."""
    if qhat is None:
        raise EntrolabError(
            "estimator 'set_size' needs qhat: compute conformal_qhat(p_true_on_calibration, "
            "alpha) and pass params={'set_size': {'qhat': QHAT}}"
        )
    return np.array([float(set_size(p, qhat)) for p in stats["option_probs"]])
