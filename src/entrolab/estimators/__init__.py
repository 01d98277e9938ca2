"""Confidence estimators: a registry of uncertainty estimators and the statistics graph that
feeds them from one generation pass (greedy answer + G samples) and one scoring pass.

Every estimator returns uncertainty ``u`` float64 [N] over N prompts (higher = less
trustworthy) and declares its level (``"sequence"`` | ``"set"``) and the statistics it needs.
Families: :mod:`.whitebox` (MSP, perplexity, token entropy, self-certainty, DeepConf, HWE, PMI),
:mod:`.sampling` (agreement, semantic entropy, number of sets, Monte-Carlo sequence entropy),
:mod:`.similarity` (lexical similarity, EigValLaplacian, DegMat, Eccentricity), :mod:`.reflexive`
(verbalized, linguistic, P(True)) and :mod:`.fused` (PCC).

Entry point: :func:`run_estimators`; ``entrolab list estimators`` shows the registry.
"""

from __future__ import annotations

from entrolab.estimators import (  # registrations
    fused,
    learned,
    option_sets,
    reflexive,
    sampling,
    similarity,
    whitebox,
)
from entrolab.estimators.base import ESTIMATORS, Estimator, as_uncertainty, get_estimators, register
from entrolab.estimators.fused import pcc_certainty, pcc_route, pcc_score
from entrolab.estimators.runner import EstimatorResults, applicable_estimators, run_estimators
from entrolab.estimators.stats import (
    STATISTICS,
    EstimatorConfig,
    StatContext,
    Statistic,
    compute_statistics,
    item_seed,
    resolve,
    statistic,
)

__all__ = [
    "ESTIMATORS",
    "STATISTICS",
    "Estimator",
    "EstimatorConfig",
    "EstimatorResults",
    "StatContext",
    "Statistic",
    "applicable_estimators",
    "as_uncertainty",
    "compute_statistics",
    "fused",
    "get_estimators",
    "item_seed",
    "learned",
    "option_sets",
    "pcc_certainty",
    "pcc_route",
    "pcc_score",
    "reflexive",
    "register",
    "resolve",
    "run_estimators",
    "sampling",
    "similarity",
    "statistic",
    "whitebox",
]
