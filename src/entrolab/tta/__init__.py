"""Test-time adaptation for classifiers by entropy minimisation, and its fixes.

TENT (Wang et al. ICLR 2021), open-set wisdom-of-crowds filtering (Lee et al. ICCV 2023) and
DeYO (Lee et al. ICLR 2024) share one loop (:class:`EntropyMinTTA`) and differ only in which
samples enter the entropy loss and with what weight (:mod:`entrolab.tta.objectives`, built on
:mod:`entrolab.signals.classifier`). :mod:`entrolab.tta.data` builds corrupted closed- and
open-set streams from sklearn's digits; :mod:`entrolab.tta.source` trains and caches the
source CNN. Registry: :data:`TTA_METHODS`.
"""

from __future__ import annotations

from entrolab.registry import Registry
from entrolab.tta.adapt import METHODS, EntropyMinTTA, StepInfo, configure_model, norm_affine_params
from entrolab.tta.objectives import (
    deyo_selection,
    frozen_selection,
    patch_shuffle,
    pixel_shuffle,
    selected_loss,
    tent_selection,
    woc_selection,
)

__all__ = [
    "METHODS",
    "TTA_METHODS",
    "EntropyMinTTA",
    "StepInfo",
    "configure_model",
    "deyo_selection",
    "frozen_selection",
    "norm_affine_params",
    "patch_shuffle",
    "pixel_shuffle",
    "selected_loss",
    "tent_selection",
    "woc_selection",
]

#: method name → its sample-selection function (the loop is :class:`EntropyMinTTA`).
TTA_METHODS: Registry[object] = Registry("tta_methods")
TTA_METHODS.register(
    "source", summary="no adaptation: the source model with running BN statistics"
)(frozen_selection)
TTA_METHODS.register(
    "norm",
    summary="test-batch BatchNorm statistics, no gradient step",
    paper="Schneider et al. 2020, Improving robustness against common corruptions",
)(frozen_selection)
TTA_METHODS.register(
    "tent",
    summary="minimise the mean prediction entropy (nats) over norm affine parameters",
    paper="Wang et al. 2021, Tent: Fully Test-time Adaptation by Entropy Minimization, ICLR",
    defaults={"optimizer": "adam", "lr": 1e-3, "steps": 1, "episodic": False},
)(tent_selection)
TTA_METHODS.register(
    "woc",
    summary="entropy loss only on samples whose confidence in the original prediction did not drop",
    paper="Lee et al. 2023, Towards Open-Set TTA Utilizing the Wisdom of Crowds, ICCV",
    defaults={"optimizer": "adam", "lr": 1e-3},
)(woc_selection)
TTA_METHODS.register(
    "deyo",
    summary="entropy < 0.5 ln K and patch-shuffle PLPD > 0.2, weighted exp(−(H−H0)) + exp(PLPD)",
    paper="Lee et al. 2024, Entropy is not Enough for Test-Time Adaptation (DeYO), ICLR",
    defaults={"margin": 0.5, "margin_e0": 0.4, "plpd_threshold": 0.2, "grid": 4},
)(deyo_selection)
