"""Multi-sample evaluation metrics (B17, Stochastic CHAOS) on hand-made outcomes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from entrolab.errors import EntrolabError
from entrolab.studies.chaos import arithmetic_paraphrases, chaos_metrics, pass_at_k


def test_pass_at_k_by_hand():
    # n = 4 samples, c = 1 correct, k = 2: 1 − C(3, 2)/C(4, 2) = 1 − 3/6 = 0.5
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 3, 2) == 1.0
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)  # pass@1 = c / n
    with pytest.raises(EntrolabError):
        pass_at_k(3, 1, 4)


def test_paraphrases_by_rule():
    p = "What is 3 + 5? Answer with just the number."
    out = arithmetic_paraphrases(p, 3)
    assert out == [p, "What is 5 + 3? Answer with just the number.",
                   "Compute 3 + 5. Answer with just the number."]  # fmt: skip
    assert len(arithmetic_paraphrases("What is 7 - 2? Answer.", 4)) == 4
    with pytest.raises(EntrolabError, match="≥ 1"):
        arithmetic_paraphrases(p, 0)
    with pytest.raises(EntrolabError, match="arithmetic prompt"):
        arithmetic_paraphrases("Name a prime.", 2)


def test_metrics_hand_case():
    # 3 items × 2 paraphrases × 2 samples
    c = np.array(
        [
            [[1, 1], [1, 1]],  # always right: rate 1
            [[1, 0], [0, 0]],  # fragile: rate 1/4; fail per paraphrase .5, 1 → mean .75, worst 1
            [[0, 0], [0, 0]],  # always wrong
        ]
    )
    greedy = [1, 1, 0]  # item 1: greedy right but sampled rate 1/4 < 0.5
    conf = np.full(c.shape, 0.5)
    conf[2, 0, 0] = 0.95  # one wrong-and-confident sample on item 2
    answers = [[["4", "4"], ["4", "4"]], [["6", "5"], ["5", None]], [["1", "2"], ["3", "3"]]]
    m = chaos_metrics(greedy, c, sample_answers=answers, reference=["4", "6", "9"],
                      sample_confidence=conf)  # fmt: skip
    assert m["sampled_accuracy"]["mean"] == pytest.approx((1 + 0.25 + 0) / 3)
    assert m["greedy_accuracy"]["mean"] == pytest.approx(2 / 3)
    assert m["greedy_minus_sampled"]["mean"] == pytest.approx(2 / 3 - 1.25 / 3)
    assert m["p_fail_mean"]["mean"] == pytest.approx((0 + 0.75 + 1) / 3)
    assert m["p_fail_worst"]["mean"] == pytest.approx((0 + 1 + 1) / 3)
    assert m["fragile_fraction"]["mean"] == pytest.approx(1 / 3)
    # pass@2 per (item, paraphrase): item 1: [1, 0] → .5; items 0, 2: 1, 0 → mean 0.5
    assert m["pass@2"]["mean"] == pytest.approx(0.5)
    # maj@2: item 0 "4" right twice; item 1: ["6","5"] → "6" (first wins the tie) right, ["5",
    # None] → "5" wrong → .5; item 2 wrong → (1 + .5 + 0) / 3
    assert m["maj@2"]["mean"] == pytest.approx(0.5)
    assert m["tail_risk"]["mean"] == pytest.approx(1 / 3)
    assert m["greedy_right_sampled_below_half"] == [1]
    assert m["greedy_wrong_sampled_above_half"] == []
    assert m["rate_variance"] == pytest.approx(np.var([1, 0.25, 0]))
    assert m["sampled_accuracy"]["low"] <= m["sampled_accuracy"]["mean"] <= 1.0
    assert not math.isnan(m["p_fail_mean"]["high"])


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(EntrolabError, match="same N"):
        chaos_metrics([1, 0, 1], np.zeros((2, 1, 3)))
    with pytest.raises(EntrolabError, match="sample_confidence"):
        chaos_metrics([1, 0], np.zeros((2, 1, 3)), sample_confidence=np.zeros((2, 3)))
