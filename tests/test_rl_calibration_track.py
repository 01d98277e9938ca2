"""Calibration tracked through training: the metrics (hand-computed), the frozen Platt map, and
a trainer run that logs held-out calibration and resumes with the same maps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from entrolab.errors import EntrolabError
from entrolab.rl.calibration_track import (
    CalibrationConfig,
    CalibrationTracker,
    calibration_metrics,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_calibration_metrics_hand_computed() -> None:
    c = np.array([0.9, 0.8, 0.3, 0.6])
    y = np.array([1, 0, 0, 1])
    m = calibration_metrics(c, y, n_bins=2, confident=0.5)
    # bins [0, .5): {0.3 → wrong}: |0 − 0.3| = 0.3, weight ¼; [.5, 1]: {0.9, 0.8, 0.6} → acc ⅔,
    # conf 2.3/3 → |0.6667 − 0.7667| = 0.1, weight ¾ → ECE = 0.075 + 0.075 = 0.15
    assert m["ece"] == pytest.approx(0.15)
    # Brier: (0.01 + 0.64 + 0.09 + 0.16)/4 = 0.225
    assert m["brier"] == pytest.approx(0.225)
    # AUROC: positives {0.9, 0.6} vs negatives {0.8, 0.3}: pairs won 0.9>0.8, 0.9>0.3, 0.6>0.3 → ¾
    assert m["auroc"] == pytest.approx(0.75)
    # wrong answers 0.8 and 0.3: one of two at ≥ 0.5
    assert m["confident_wrong"] == pytest.approx(0.5)
    only_right = calibration_metrics(np.array([0.7, 0.9]), np.array([1, 1]))
    assert "auroc" not in only_right and "confident_wrong" not in only_right


class _Task:
    def extract(self, item, text):
        return text

    def grade(self, item, text):
        return text == "ok"


def test_platt_map_is_fitted_once_and_frozen() -> None:
    tr = CalibrationTracker(CalibrationConfig(every=1), _Task(), [], {})
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    s1 = np.array([2.0, 1.5, -1.0, -2.0, 0.5, 0.0])
    c1 = tr._frozen_confidence("e", s1, y)
    state = tr.state_dict()
    # a later evaluation with every score shifted up by 3 (the model grew more certain): the
    # frozen map turns that into higher confidence instead of re-centring it
    c2 = tr._frozen_confidence("e", s1 + 3.0, y)
    assert bool((c2 > c1).all())
    restored = CalibrationTracker(CalibrationConfig(every=1), _Task(), [], {})
    restored.load_state_dict(state)
    np.testing.assert_allclose(restored._frozen_confidence("e", s1, y), c1)
    with pytest.raises(EntrolabError, match="G samples"):
        CalibrationTracker(
            CalibrationConfig(estimators=["semantic_entropy_discrete"]), _Task(), [], {}
        )


def test_trainer_logs_calibration_and_resumes(tmp_path) -> None:
    from entrolab.rl import checkpoint as ckpt
    from entrolab.rl.config import load_config
    from entrolab.rl.trainer import Trainer

    over = [
        "model.name=tiny",
        "task.spec=proxy",
        "task.train_items=16",
        "task.eval_items=6",
        "rollout.prompts_per_step=2",
        "rollout.group_size=2",
        "rollout.max_new_tokens=4",
        "rollout.chat_template=false",
        "eval.every=0",
        "eval.samples=2",
        "calibration.every=2",
        "calibration.verbal=true",
        "monitor.probe_prompts=0",
        "progress=false",
        "tensorboard=false",
        "checkpoint_every=1",
    ]
    tr = Trainer(load_config(None, [*over, "steps=3"]), tmp_path / "a")
    tr.train()
    # verbal calibration: replies end with "Confidence: k/10", so the trainer grades the answer
    # before it (the proxy task alone finds no answer in "4+8\nConfidence: 7/10": unparseable)
    item = tr.task.items(1, seed=0)[0]
    assert tr.task.grade(item, f"{item.answer}\nConfidence: 7/10").correct
    recs = ckpt.read_metrics(tmp_path / "a")
    calib = {r["step"]: r for r in recs if "calib/n" in r}
    assert sorted(calib) == [0, 2, 3]  # step 0, every 2 steps, and the last step
    for r in calib.values():
        assert r["calib/n"] == 6
        assert 0 <= r["calib/self_certainty/ece"] <= 1 and 0 <= r["calib/verbal/brier"] <= 1
        assert r["calib/verbal/parsed"] == 0.0  # a random tiny model states no confidence
    maps = tr.calibration.state_dict()["maps"]
    assert set(maps) == {"self_certainty", "mean_token_entropy", "deepconf_lowest", "perplexity"}
    part = Trainer(load_config(None, [*over, "steps=2"]), tmp_path / "b")
    part.train()
    resumed = Trainer(load_config(None, [*over, "steps=3"]), tmp_path / "b")
    assert resumed.calibration.state_dict()["maps"] == maps  # frozen at step 0, restored
    resumed.train()
    last_a = {k: v for k, v in recs[-1].items() if k.startswith("calib/")}
    last_b = {
        k: v for k, v in ckpt.read_metrics(tmp_path / "b")[-1].items() if k.startswith("calib/")
    }
    assert last_a.keys() == last_b.keys()
    for k in last_a:
        assert math.isclose(last_a[k], last_b[k], rel_tol=1e-6, abs_tol=1e-9), k


def test_plot_draws_the_calibration_figure(tmp_path) -> None:
    import json

    from entrolab.rl.plots import calibration_names, plot_run

    recs = [
        {
            "step": s,
            "dyn/entropy": 1.0 - 0.1 * s,
            "train/reward": 0.1 * s,
            "dyn/cov": 0.0,
            "calib/accuracy": 0.5,
            "calib/self_certainty/ece": 0.1 + 0.01 * s,
            "calib/self_certainty/auroc": 0.6,
            "calib/verbal/brier": 0.2,
        }
        for s in range(1, 4)
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    paths = plot_run(tmp_path, formats=("svg",))
    names = {p.name for p in paths}
    assert "calibration.svg" in names
    assert calibration_names(recs) == ["self_certainty", "verbal"]
    # a run without calibration tracking draws no calibration figure
    plain = [{k: v for k, v in r.items() if not k.startswith("calib/")} for r in recs]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in plain))
    again = plot_run(tmp_path, out_dir=tmp_path / "p2", formats=("svg",))
    assert "calibration.svg" not in {p.name for p in again}


def test_confident_wrong_uses_the_frozen_median_score() -> None:
    tr = CalibrationTracker(CalibrationConfig(every=1), _Task(), [], {})
    s0 = np.array([1.0, 2.0, 3.0, 4.0])  # median 2.5 at the first evaluation
    y = np.array([1.0, 0.0, 1.0, 0.0])
    tr._frozen_confidence("e", s0, y)
    assert tr.maps["e"]["_threshold"] == 2.5
    # later: wrong answers score 3.0 and 1.0 → one of two at or above 2.5
    s1 = np.array([5.0, 3.0, 6.0, 1.0])
    assert float((s1[y == 0] >= tr.maps["e"]["_threshold"]).mean()) == 0.5
