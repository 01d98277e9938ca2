"""AUROC / AUPRC against scikit-learn; AURC and PRR hand-computed and against a transcription of
LM-Polygraph's PredictionRejectionArea, normalize, get_random_scores and RiskCoverageCurveAUC."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from entrolab.calibration import (
    auprc,
    aurc,
    auroc,
    prediction_rejection_area,
    prr,
    risk_coverage_curve,
    selective_accuracy,
)
from entrolab.errors import EntrolabError

RTOL = 1e-12


# ---------------------------------------------------------------- LM-Polygraph transcription
def _pg_normalize(target):
    lo, hi = np.min(target), np.max(target)
    if np.isclose(lo, hi):
        lo -= 1
        hi += 1
    return (np.array(target) - lo) / (hi - lo)


def _pg_prr(estimator, target, max_rejection=1.0):
    target = _pg_normalize(target)
    ue = np.array(estimator)
    n = len(ue)
    n_rej = int(max_rejection * n)
    sorted_metrics = np.array(target)[np.argsort(ue)]
    cumsum = np.cumsum(sorted_metrics)[-n_rej:]
    scores = (cumsum / np.arange((n - n_rej) + 1, n + 1))[::-1]
    return np.sum(scores) / n_rej


def _pg_random(function, metrics, num_iter=1000, seed=42):
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        rand_scores = np.arange(len(metrics))
        values = []
        for _ in range(num_iter):
            np.random.shuffle(rand_scores)
            values.append(function(rand_scores, metrics))
        return np.mean(values)
    finally:
        np.random.set_state(state)


def _pg_prr_normalized(ue, metric, max_rejection=1.0):
    def fn(e, t):
        return _pg_prr(e, t, max_rejection)

    oracle = fn(-metric, metric)
    rand = _pg_random(fn, metric)
    value = fn(ue, metric)
    return value if oracle == rand else (value - rand) / (oracle - rand)


def _pg_rcc_auc(estimator, target):
    risk = 1 - np.array(_pg_normalize(target))
    pairs = sorted(zip(estimator, risk, strict=True), key=lambda x: x[0])
    cumulative = np.cumsum([x[1] for x in pairs]) / np.arange(1, len(estimator) + 1)
    return cumulative.mean()


def _uq(seed: int, n: int = 300, graded: bool = False, ties: bool = False):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=n)
    if ties:
        u = np.round(u, 1)  # many ties, like a discrete estimator
    q = rng.random(n) * 3 - 1 if graded else (rng.random(n) < 1 / (1 + np.exp(2 * u))) * 1.0
    return u, q


# ---------------------------------------------------------------- AUROC / AUPRC
@pytest.mark.parametrize("ties", [False, True])
def test_auroc_auprc_match_sklearn(ties: bool) -> None:
    for seed in range(5):
        u, y = _uq(seed, ties=ties)
        assert auroc(-u, y) == pytest.approx(roc_auc_score(y, -u), rel=RTOL)
        assert auroc(u, 1 - y) == pytest.approx(roc_auc_score(1 - y, u), rel=RTOL)
        assert auprc(-u, y) == pytest.approx(average_precision_score(y, -u), rel=RTOL)
        assert auprc(u, 1 - y) == pytest.approx(average_precision_score(1 - y, u), rel=RTOL)


def test_auroc_auprc_by_hand() -> None:
    # scores [0.9, 0.8, 0.8, 0.1], labels [1, 0, 1, 0]. Pairs (pos, neg): (0.9, 0.8) win,
    # (0.9, 0.1) win, (0.8, 0.8) tie = ½, (0.8, 0.1) win → AUROC = 3.5 / 4 = 0.875.
    # AP: threshold 0.9 → P = 1, R = ½; threshold 0.8 → P = 2/3, R = 1 (tied pair together);
    # AP = ½·1 + ½·2/3 = 5/6.
    s, y = [0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0]
    assert auroc(s, y) == pytest.approx(0.875, rel=RTOL)
    assert auprc(s, y) == pytest.approx(5 / 6, rel=RTOL)
    assert auroc([-np.inf, np.inf], [0, 1]) == 1.0


def test_auroc_needs_both_classes() -> None:
    with pytest.raises(EntrolabError, match="both classes"):
        auroc([0.1, 0.2], [1, 1])
    with pytest.raises(EntrolabError, match="both classes"):
        auprc([0.1, 0.2], [0, 0])


# ---------------------------------------------------------------- AURC
def test_aurc_by_hand() -> None:
    # u = [0.1, 0.4, 0.3, 0.2], q = [1, 0, 1, 0]. Keep order by u: items 0, 3, 2, 1 with
    # risks 1 − q = [0, 1, 0, 1]; cumulative mean risk = [0/1, 1/2, 1/3, 2/4];
    # AURC = (0 + 0.5 + 0.3333 + 0.5) / 4 = 1/3.
    u, q = [0.1, 0.4, 0.3, 0.2], [1, 0, 1, 0]
    curve = risk_coverage_curve(u, q)
    np.testing.assert_allclose(curve.coverage, [0.25, 0.5, 0.75, 1.0], rtol=RTOL)
    np.testing.assert_allclose(curve.risk, [0.0, 0.5, 1 / 3, 0.5], rtol=RTOL)
    assert aurc(u, q) == pytest.approx(1 / 3, rel=RTOL)
    # graded quality is min–max normalised first: q = [3, 1, 3, 1] gives the same.
    assert aurc(u, [3, 1, 3, 1]) == pytest.approx(1 / 3, rel=RTOL)
    # ... unless normalize=False: risk = 1 − q = [−2, 0, −2, 0] → cum. means [−2, −1, −4/3, −1]
    assert aurc(u, [3, 1, 3, 1], normalize=False) == pytest.approx(-(2 + 1 + 4 / 3 + 1) / 4)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("graded", [False, True])
def test_aurc_matches_polygraph(ties: bool, graded: bool) -> None:
    for seed in range(3):
        u, q = _uq(seed, graded=graded, ties=ties)
        assert aurc(u, q) == pytest.approx(_pg_rcc_auc(u.tolist(), q), rel=RTOL)


# ---------------------------------------------------------------- PRR
def test_prr_by_hand() -> None:
    # Same u, q as the AURC case. Kept order gives s = [1, 0, 1, 0]; c = [1, 1, 2, 2];
    # c_k/k = [1, 0.5, 2/3, 0.5] → AUC = (8/3) / 4 = 2/3.
    # Oracle order s = [1, 1, 0, 0] → c_k/k = [1, 1, 2/3, 1/2] → AUC = (19/6) / 4 = 19/24.
    # Analytic random = mean q = 1/2 → PRR = (2/3 − 1/2) / (19/24 − 1/2) = (1/6) / (7/24) = 4/7.
    u, q = [0.1, 0.4, 0.3, 0.2], [1, 0, 1, 0]
    assert prediction_rejection_area(u, q) == pytest.approx(2 / 3, rel=RTOL)
    assert prr(u, q, random_baseline="analytic") == pytest.approx(4 / 7, rel=RTOL)
    # max_rejection = 0.5 → R = 2: AUC = (c_3/3 + c_4/4) / 2 = (2/3 + 1/2) / 2 = 7/12.
    assert prediction_rejection_area(u, q, max_rejection=0.5) == pytest.approx(7 / 12, rel=RTOL)


def test_prr_tie_rules_by_hand() -> None:
    # u = [0.5, 0.5, 0.1], q = [1, 0, 0]. Stable order keeps item 2, then 0, 1: s = [0, 1, 0],
    # c_k/k = [0, 1/2, 1/3] → AUC = 5/18. Reversed tie order s = [0, 0, 1] → [0, 0, 1/3] → 1/9.
    # "average" gives the tied pair q = ½ each: s = [0, ½, ½] → [0, 1/4, 1/3] → 7/36, the mean
    # of 5/18 and 1/9; "random" converges to it.
    u, q = [0.5, 0.5, 0.1], [1, 0, 0]
    assert prediction_rejection_area(u, q, ties="stable") == pytest.approx(5 / 18, rel=RTOL)
    assert prediction_rejection_area(u, q, ties="average") == pytest.approx(7 / 36, rel=RTOL)
    rnd = prediction_rejection_area(u, q, ties="random", n_tie_seeds=4000, seed=1)
    assert rnd == pytest.approx(7 / 36, abs=0.004)  # sd of the mean ≈ 0.083/√4000 = 0.0013
    assert aurc(u, q, ties="average") == pytest.approx(1 - 7 / 36, rel=RTOL)


@pytest.mark.parametrize("max_rejection", [1.0, 0.5, 0.33])
@pytest.mark.parametrize(("graded", "ties"), [(False, False), (True, False), (False, True)])
def test_prr_matches_polygraph(max_rejection: float, graded: bool, ties: bool) -> None:
    for seed in range(2):
        u, q = _uq(seed + 10, n=257, graded=graded, ties=ties)
        raw = prediction_rejection_area(u, q, max_rejection=max_rejection)
        assert raw == pytest.approx(_pg_prr(u, q, max_rejection), rel=RTOL)
        got = prr(u, q, max_rejection=max_rejection)
        assert got == pytest.approx(_pg_prr_normalized(u, q, max_rejection), rel=1e-10)


def test_prr_constant_quality_returns_raw_area() -> None:
    # q constant → normalised to 0.5 everywhere; oracle = random = 0.5 → raw AUC 0.5 returned.
    assert prr([0.3, 0.1, 0.2], [1, 1, 1]) == pytest.approx(0.5, rel=RTOL)


def test_prr_analytic_random_is_close_to_permutations() -> None:
    u, q = _uq(3, n=500)
    assert prr(u, q, random_baseline="analytic") == pytest.approx(prr(u, q), abs=0.01)


def test_selective_accuracy_by_hand() -> None:
    # u = [0.1, 0.4, 0.3, 0.2], correct = [1, 0, 1, 0]: coverage 0.5 keeps the 2 least
    # uncertain (u 0.1 and 0.2) → accuracy (1 + 0) / 2 = 0.5; coverage 0.25 keeps 1 → 1.0.
    u, y = [0.1, 0.4, 0.3, 0.2], [1, 0, 1, 0]
    assert selective_accuracy(u, y, coverage=0.5) == 0.5
    assert selective_accuracy(u, y, coverage=0.25) == 1.0
    assert selective_accuracy(u, y, coverage=1.0) == 0.5


def test_ranking_bad_input() -> None:
    with pytest.raises(EntrolabError, match="max_rejection"):
        prr([0.1, 0.2], [0, 1], max_rejection=0.0)
    with pytest.raises(EntrolabError, match="rejects no item"):
        prr([0.1, 0.2], [0, 1], max_rejection=0.3)
    with pytest.raises(EntrolabError, match="unknown ties"):
        prr([0.1, 0.2], [0, 1], ties="first")
    with pytest.raises(EntrolabError, match=r"1 NaN.*nan_policy='omit'"):
        aurc([0.1, np.nan, 0.3], [0, 1, 1])
    assert aurc([0.1, np.nan, 0.3, 0.2], [0, 1, 1, 0], nan_policy="omit") == aurc(
        [0.1, 0.3, 0.2], [0, 1, 0]
    )
    with pytest.raises(EntrolabError, match="one value per item"):
        auroc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(EntrolabError, match="empty"):
        prr([], [])
    with pytest.raises(EntrolabError, match="infinite"):
        aurc([0.1, 0.2], [np.inf, 0])
