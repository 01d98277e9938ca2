"""Calibration tracked through RL training: does RL leave the policy's confidence calibrated?

Every ``calibration.every`` steps (and before training, and at the last step) the trainer
answers the held-out items greedily with the current policy and scores the answers with the
landed estimators (:func:`entrolab.estimators.run_estimators`, one greedy pass shared by all
of them) and calibration metrics (:mod:`entrolab.calibration`). Per estimator ``e``:

* ``calib/<e>/auroc``: AUROC of the confidence ``−u`` for correctness (rank-based; no map);
* ``calib/<e>/ece`` (``n_bins`` equal-width bins, L1) and ``calib/<e>/brier`` of a confidence
  ``c = σ(a·(−u) + b)``: a Platt map **fitted once, at the first evaluation, and then frozen**
  (stored in checkpoints). A map refitted at every evaluation would hide exactly what this
  tracks: the same uncertainty meaning more (or less) confidence than it did before training.
* ``calib/<e>/confident_wrong``: share of the wrong answers whose score ``−u`` is at least the
  median score of all answers at the first evaluation (also frozen): wrong answers the policy
  is as sure of as a typical answer was before training (UCAS's "confident-wrong rate"; a
  threshold on the Platt confidence would mostly measure the accuracy).

With ``verbal: true`` (a recipe whose prompt asks for "Confidence: k/10"), the stated confidence
parsed from each greedy answer on that k/10 scale
(:func:`entrolab.estimators.reflexive.parse_stated_confidence`) is scored directly (no map):
``calib/verbal/{ece,brier,auroc,confident_wrong,parsed}``; replies
without a confidence count as ``unparsed`` (default 0.5) and ``parsed`` reports the share.
``calib/accuracy`` is the greedy accuracy and ``calib/n`` the number of items. Metrics whose
inputs are degenerate (one class only) are left out of the record rather than logged as NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from entrolab.errors import EntrolabError

__all__ = ["CalibrationConfig", "CalibrationTracker", "calibration_metrics"]


@dataclass
class CalibrationConfig:
    """Held-out calibration tracked through training (:mod:`entrolab.rl.calibration_track`).

    Attributes:
        every: evaluate every this many steps (0 = off); also at step 0 and the last step.
        items: held-out items used (0 = all ``task.eval_items``).
        estimators: landed estimator names (sequence-level, from the greedy answer).
        verbal: also score a confidence stated in the answer ("Confidence: 8/10").
        n_bins: ECE bins. confident: verbal-confidence threshold of the confident-wrong share.
        unparsed: confidence assumed when a reply states none (verbal only).
    """

    every: int = 0
    items: int = 0
    estimators: list[str] = field(
        default_factory=lambda: [
            "self_certainty",
            "mean_token_entropy",
            "deepconf_lowest",
            "perplexity",
        ]
    )
    verbal: bool = False
    n_bins: int = 10
    confident: float = 0.5
    unparsed: float = 0.5

    def __post_init__(self) -> None:
        if self.every < 0 or self.items < 0 or self.n_bins < 1:
            raise EntrolabError("invalid calibration config: every, items >= 0 and n_bins >= 1")
        if not 0 <= self.confident <= 1 or not 0 <= self.unparsed <= 1:
            raise EntrolabError("invalid calibration config: confident, unparsed in [0, 1]")


def calibration_metrics(
    confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = 10, confident: float = 0.5
) -> dict[str, float]:
    """ECE, Brier, AUROC and the confident-wrong share of confidences [N] ∈ [0, 1] against
    correctness [N] (AUROC only when both classes occur; confident-wrong only with errors)."""
    from entrolab.calibration import auroc, brier, ece

    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    out = {
        "ece": ece(c, y, n_bins=n_bins, binning="uniform", norm="l1"),
        "brier": brier(c, y),
    }
    if 0 < y.sum() < y.size:
        out["auroc"] = auroc(c, y)
    wrong = y == 0
    if wrong.any():
        out["confident_wrong"] = float((c[wrong] >= confident).mean())
    return out


class CalibrationTracker:
    """Runs the held-out calibration evaluation and keeps the frozen Platt maps.

    Args:
        config: :class:`CalibrationConfig`. task: grades and extracts answers.
        items: the held-out items. generation: ``max_new_tokens``, ``chat_template``,
            ``system_prompt``, ``batch_size`` for the greedy answers. seed: run seed.
    """

    def __init__(
        self, config: CalibrationConfig, task, items: Sequence, generation: dict[str, Any], seed=0
    ) -> None:
        from entrolab.estimators import ESTIMATORS

        self.config = config
        self.task = task
        self.items = list(items)[: config.items or None]
        self.generation = dict(generation)
        self.seed = seed
        for name in config.estimators:
            est = ESTIMATORS.get(name)
            if est.level != "sequence":
                raise EntrolabError(
                    f"calibration.estimators: {name!r} needs G samples per item; track "
                    "sequence-level estimators (from the greedy answer) only"
                )
        self.maps: dict[str, dict[str, Any]] = {}

    def due(self, step: int, last: bool) -> bool:
        c = self.config
        return bool(c.every) and bool(self.items) and (step == 0 or last or step % c.every == 0)

    def evaluate(self, backend) -> dict[str, float]:
        from entrolab.estimators import EstimatorConfig, run_estimators
        from entrolab.estimators.reflexive import parse_stated_confidence

        cfg = self.config
        est_cfg = EstimatorConfig(samples=1, seed=self.seed, **self.generation)
        res = run_estimators(
            backend,
            self.items,
            list(cfg.estimators),
            config=est_cfg,
            extract_fn=self.task.extract,
            grade_fn=self.task.grade,
        )
        assert res.correct is not None
        y = np.asarray(res.correct, dtype=np.float64)
        out: dict[str, float] = {"calib/accuracy": float(y.mean()), "calib/n": float(y.size)}
        for name in cfg.estimators:
            score = -np.asarray(res.uncertainty[name], dtype=np.float64)
            conf = self._frozen_confidence(name, score, y)
            m = calibration_metrics(conf, y, n_bins=cfg.n_bins, confident=cfg.confident)
            m.pop("confident_wrong", None)
            if (y == 0).any():
                threshold = self.maps[name]["_threshold"]
                m["confident_wrong"] = float((score[y == 0] >= threshold).mean())
            if 0 < y.sum() < y.size:
                from entrolab.calibration import auroc

                m["auroc"] = auroc(score, y)  # of the raw score: no map needed
            out.update({f"calib/{name}/{k}": v for k, v in m.items()})
        if cfg.verbal:
            # the recipe asks for "Confidence: k/10": a bare "7" there is 0.7, not 7 %
            stated = [parse_stated_confidence(t or "") for t in res.greedy_texts or []]
            c = np.array([cfg.unparsed if v is None else v for v in stated], dtype=np.float64)
            m = calibration_metrics(c, y, n_bins=cfg.n_bins, confident=cfg.confident)
            m["parsed"] = float(np.mean([v is not None for v in stated])) if stated else 0.0
            out.update({f"calib/verbal/{k}": v for k, v in m.items()})
        return out

    def _frozen_confidence(self, name: str, score: np.ndarray, y: np.ndarray) -> np.ndarray:
        from entrolab.calibration.calibrators import Calibrator, PlattScaling

        if name not in self.maps:
            self.maps[name] = {
                **PlattScaling().fit(score, y).to_dict(),
                "_threshold": float(np.median(score)),
            }
        fitted = {k: v for k, v in self.maps[name].items() if k != "_threshold"}
        return Calibrator.from_dict(fitted).transform(score)

    def state_dict(self) -> dict[str, Any]:
        return {"maps": self.maps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.maps = dict(state.get("maps") or {})
