"""RAG-confidence study (B18): MCQ prompts, option-renormalised confidence, calibration conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from entrolab.calibration import ece
from entrolab.errors import EntrolabError
from entrolab.studies.rag import (
    MCQItem,
    calibration_side_by_side,
    mcq_items,
    mcq_prompt,
    option_confidence,
)


def test_option_confidence_by_hand():
    # letter log-probs log(.5), log(.25), log(.125), log(.125) renormalise to themselves;
    # an unnormalised row [0, 0, log 2, 0] → [.2, .2, .4, .2]
    lp = np.log([[0.5, 0.25, 0.125, 0.125], [1.0, 1.0, 2.0, 1.0]])
    pred, conf = option_confidence(lp)
    assert pred.tolist() == [0, 2]
    np.testing.assert_allclose(conf, [0.5, 0.4])
    with pytest.raises(EntrolabError, match="finite"):
        option_confidence([[0.0, -math.inf]])


def test_mcq_prompts_and_items():
    items = mcq_items(5, seed=2, digits=1)
    for it in items:
        x, y = (int(v) for v in it.lhs.split(" + "))
        assert it.options[it.answer] == str(x + y) and len(set(it.options)) == 4
    it = MCQItem("What is 2 + 2?", ("5", "4", "3", "6"), 1, "2 + 2")
    assert mcq_prompt(it, "correct").startswith("Retrieved document: 2 + 2 = 4.\nWhat is 2 + 2?")
    after = mcq_prompt(it, "distractor", "after")
    assert "B. 4\nC. 3\nD. 6\nRetrieved document: 2 + 2 = 5." in after
    assert "Retrieved" not in mcq_prompt(it)
    with pytest.raises(EntrolabError, match="options"):
        mcq_prompt(MCQItem("q", ("1", "2"), 0, "1 + 0"))
    with pytest.raises(EntrolabError, match="hint"):
        mcq_prompt(it, "noisy")


def test_calibration_side_by_side_matches_the_presets():
    rng = np.random.default_rng(0)
    c = rng.uniform(0.25, 1.0, 60)
    c[0] = 1.0  # ccrag drops p = 1.0 from every bin; torchmetrics gives it its own bin
    y = (rng.random(60) < c).astype(float)
    m = calibration_side_by_side(c, y, n_boot=200)
    assert m["ece_ccrag"]["value"] == pytest.approx(ece(c, y, preset="ccrag"))
    assert m["ece_torchmetrics"]["value"] == pytest.approx(ece(c, y, preset="torchmetrics"))
    assert m["ece_ccrag"]["value"] != pytest.approx(m["ece_torchmetrics"]["value"])
    assert m["accuracy"]["low"] <= y.mean() <= m["accuracy"]["high"]
    with pytest.raises(EntrolabError):
        calibration_side_by_side([0.5, 0.6], [1.0])
