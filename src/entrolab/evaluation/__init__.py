"""Evaluation: run estimators on a task, score them, and report (``entrolab eval``)."""

from entrolab.evaluation.core import EvalConfig, EvalResults, evaluate, load_results
from entrolab.evaluation.scoring import EstimatorScore, score_all, score_estimator

__all__ = [
    "EstimatorScore",
    "EvalConfig",
    "EvalResults",
    "evaluate",
    "load_results",
    "score_all",
    "score_estimator",
]
