"""Calibration and ranking metrics, calibrators and conformal selective prediction.

Pure numpy/scipy functions (no model, backend or CLI code). Conventions:

* calibration metrics (:func:`ece` family, :func:`brier`, :func:`nll`) take confidences
  ``c ∈ [0, 1]`` (higher = more confident) and correctness (bool or 0/1);
* :func:`auroc` / :func:`auprc` take scores (higher = label 1) and 0/1 labels;
* :func:`aurc`, :func:`prr`, :func:`risk_coverage_curve` take uncertainty ``u`` (higher = worse)
  and quality ``q`` (higher = better), as LM-Polygraph;
* :mod:`.intervals` / :mod:`.comparison` put error bars on every metric (stratified
  bootstrap, Clopper–Pearson, DeLong, paired bootstrap, McNemar);
* calibrators map a score (higher = more confident) to a confidence, fitted on one split.

Inputs may be lists, numpy arrays or torch tensors ([N], converted to float64). NaN raises
unless ``nan_policy="omit"``. Two registries: :data:`METRICS` and :data:`CALIBRATORS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from entrolab.calibration.binning import (
    DEFAULT_SPEC,
    PRESETS,
    BinningSpec,
    ReliabilityBins,
    reliability_bins,
)
from entrolab.calibration.calibrators import (
    Calibrator,
    PlattScaling,
    TemperatureScaling,
    calibrator_from_dict,
)
from entrolab.calibration.comparison import (
    PairedTest,
    delong_interval,
    delong_test,
    mcnemar_exact,
    paired_bootstrap,
    paired_mean_difference,
    rank_tiers,
)
from entrolab.calibration.conformal import SelectiveRiskThreshold, fit_selective_risk
from entrolab.calibration.crossfit import (
    SplitCalibration,
    cross_fit,
    fit_transform_split,
    make_calibrator,
)
from entrolab.calibration.intervals import (
    Interval,
    accuracy_interval,
    bootstrap_interval,
    clopper_pearson,
    metric_interval,
)
from entrolab.calibration.metrics import ace, adaptive_ece, brier, ece, mce, nll, rmsce
from entrolab.calibration.nonparametric import HistogramBinning, IsotonicCalibrator
from entrolab.calibration.ranking import (
    RiskCoverage,
    auprc,
    aurc,
    auroc,
    prediction_rejection_area,
    prr,
    risk_coverage_curve,
    selective_accuracy,
)
from entrolab.registry import Registry

__all__ = [
    "CALIBRATORS",
    "DEFAULT_SPEC",
    "METRICS",
    "PRESETS",
    "BinningSpec",
    "Calibrator",
    "HistogramBinning",
    "Interval",
    "IsotonicCalibrator",
    "PairedTest",
    "PlattScaling",
    "ReliabilityBins",
    "RiskCoverage",
    "SelectiveRiskThreshold",
    "SplitCalibration",
    "TemperatureScaling",
    "accuracy_interval",
    "ace",
    "adaptive_ece",
    "auprc",
    "aurc",
    "auroc",
    "bootstrap_interval",
    "brier",
    "calibrator_from_dict",
    "clopper_pearson",
    "cross_fit",
    "delong_interval",
    "delong_test",
    "ece",
    "fit_selective_risk",
    "fit_transform_split",
    "make_calibrator",
    "mce",
    "mcnemar_exact",
    "metric_interval",
    "nll",
    "paired_bootstrap",
    "paired_mean_difference",
    "prediction_rejection_area",
    "prr",
    "rank_tiers",
    "reliability_bins",
    "risk_coverage_curve",
    "rmsce",
    "selective_accuracy",
]

#: Evaluation metrics. Calibration metrics: f(confidences, correct); auroc/auprc:
#: f(scores, labels); aurc/prr/prediction_rejection_area/selective_accuracy: f(uncertainty, quality).
METRICS: Registry[Callable[..., Any]] = Registry("metrics")
#: Calibrator classes: name → class; instances expose fit/transform/to_dict.
CALIBRATORS: Registry[type[Calibrator]] = Registry("calibrators")

_GUO = "Guo et al. 2017, On Calibration of Modern Neural Networks, ICML"
_NAEINI = "Naeini et al. 2015, Obtaining Well Calibrated Probabilities Using Bayesian Binning, AAAI"
_POLY = "Fadeeva et al. 2023, LM-Polygraph, EMNLP demo; Vashurin et al. 2025, TACL 13"
_PRR = "Malinin & Gales 2021, Uncertainty Estimation in Autoregressive Structured Prediction, ICLR"
_AURC = "Geifman & El-Yaniv 2017, Selective Classification for Deep Neural Networks, NeurIPS"

for _name, _fn, _summary, _paper, _defaults in [
    (
        "ece",
        ece,
        "expected calibration error of confidences vs correctness, in [0, 1] (lower = better)",
        _NAEINI,
        {"n_bins": 15, "preset": None, "binning": "uniform", "norm": "l1"},
    ),
    (
        "ace",
        ace,
        "average calibration error over non-empty equal-width bins (netcal ACE; lower = better)",
        "Neumann et al. 2018, Relaxed Softmax, NeurIPS MLITS workshop",
        {"n_bins": 10, "preset": "netcal_ace"},
    ),
    (
        "adaptive_ece",
        adaptive_ece,
        "adaptive calibration error over equal-count bins, unweighted (lower = better)",
        "Nixon et al. 2019, Measuring Calibration in Deep Learning, CVPR workshops",
        {"n_bins": 10, "preset": "ccrag_ace"},
    ),
    (
        "mce",
        mce,
        "maximum calibration error over bins, in [0, 1] (lower = better)",
        _NAEINI,
        {"n_bins": 15, "norm": "max"},
    ),
    (
        "rmsce",
        rmsce,
        "root-mean-square calibration error over bins, in [0, 1] (lower = better)",
        _GUO,
        {"n_bins": 15, "norm": "l2"},
    ),
    ("brier", brier, "Brier score: mean squared error of confidences (lower = better)", "", {}),
    (
        "nll",
        nll,
        "binary log loss of confidences, nats (lower = better)",
        "",
        {"eps": 2.220446049250313e-16},
    ),
    (
        "auroc",
        auroc,
        "area under the ROC curve of scores vs 0/1 labels, ties ½ (higher = better)",
        "",
        {},
    ),
    (
        "auprc",
        auprc,
        "average precision of scores vs 0/1 labels, as sklearn (higher = better)",
        "",
        {},
    ),
    (
        "aurc",
        aurc,
        "area under the risk–coverage curve of uncertainty vs quality (lower = better)",
        _AURC,
        {"normalize": True, "ties": "stable"},
    ),
    (
        "prr",
        prr,
        "prediction rejection ratio, LM-Polygraph prr_normalized (1 = oracle, 0 = random)",
        f"{_PRR}; {_POLY}",
        {"max_rejection": 1.0, "ties": "arbitrary", "n_permutations": 1000, "random_seed": 42},
    ),
    (
        "prediction_rejection_area",
        prediction_rejection_area,
        "raw area under the prediction–rejection curve, LM-Polygraph prr (higher = better)",
        _POLY,
        {"max_rejection": 1.0, "ties": "arbitrary"},
    ),
    (
        "selective_accuracy",
        selective_accuracy,
        "mean quality of the least-uncertain fraction of items (higher = better)",
        _AURC,
        {"coverage": 0.8, "ties": "average"},
    ),
]:
    METRICS.register(_name, summary=_summary, paper=_paper, defaults=_defaults)(_fn)

for _cls, _summary, _paper, _defaults in [
    (
        TemperatureScaling,
        "c = σ(logit(s)/T) for probability-like scores, T by minimum NLL",
        _GUO,
        {"eps": 1e-6, "t_bounds": (1e-3, 1e3)},
    ),
    (
        PlattScaling,
        "c = σ(a·s + b) by maximum likelihood, Platt's smoothed targets",
        "Platt 1999, Probabilistic Outputs for Support Vector Machines",
        {"target_smoothing": True},
    ),
    (
        IsotonicCalibrator,
        "monotone non-decreasing map by pool-adjacent-violators, linear interpolation",
        "Zadrozny & Elkan 2002, Transforming Classifier Scores into Probability Estimates, KDD",
        {},
    ),
    (
        HistogramBinning,
        "equal-mass score bins → (smoothed) bin accuracy",
        "Zadrozny & Elkan 2001, Obtaining Calibrated Probability Estimates, ICML",
        {"n_bins": 10, "prior_strength": 0.0},
    ),
]:
    CALIBRATORS.register(_cls.name, summary=_summary, paper=_paper, defaults=_defaults)(_cls)
