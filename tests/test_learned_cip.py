"""C-IP: split-conformal quantile and sets by hand, coverage over random splits, query selection
by expected set size vs entropy (hand case), games with an exact Bayesian posterior, the
set_size estimator on option log-probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.estimators import applicable_estimators, run_estimators
from entrolab.estimators.option_sets import (
    conformal_qhat,
    expected_set_size,
    option_probs,
    prediction_sets,
    set_size,
)
from entrolab.inference.cip import (
    calibrate_qhat,
    entropy_nats,
    number_queries,
    play,
    select_query,
)
from entrolab.tasks import TaskItem

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_conformal_quantile_and_sets_by_hand() -> None:
    # p(true) = [0.9, 0.8, 0.6, 0.3] → scores [0.1, 0.2, 0.4, 0.7]; α = 0.5, n = 4:
    # index ⌈(4 + 1)(1 − 0.5)⌉ = ⌈2.5⌉ = 3 → the 3rd smallest score, q̂ = 0.4
    assert conformal_qhat([0.9, 0.8, 0.6, 0.3], 0.5) == pytest.approx(0.4)
    # α = 0.1: ⌈5 · 0.9⌉ = 5 > n = 4 → q̂ = inf, every label is in the set
    assert conformal_qhat([0.9, 0.8, 0.6, 0.3], 0.1) == math.inf
    # C = {y : p(y) >= 1 − 0.4 = 0.6}
    p = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]])
    assert prediction_sets(p, 0.4).tolist() == [[True, False, False], [False, False, False]]
    assert set_size(p, 0.4).tolist() == [1, 0]
    assert set_size(p, math.inf).tolist() == [3, 3]
    # E|C| = 0.25 · 1 + 0.75 · 0
    assert expected_set_size([0.25, 0.75], p, 0.4) == pytest.approx(0.25)


def test_bad_input_is_clear() -> None:
    with pytest.raises(EntrolabError, match="calibration set is empty"):
        conformal_qhat([], 0.1)
    with pytest.raises(EntrolabError, match="alpha"):
        conformal_qhat([0.5], 1.0)
    with pytest.raises(EntrolabError, match="at least 2 labels"):
        set_size(np.array([[1.0]]), 0.5)
    with pytest.raises(EntrolabError, match="size 1"):
        play(lambda h: np.array([1.0]), [], [7], 7, 0.5)


def test_coverage_holds_over_random_splits() -> None:
    # A calibrated model: labels drawn from its own probabilities; coverage >= 1 − α on
    # average over splits (the guarantee is marginal over calibration and test draws).
    rng = np.random.default_rng(0)
    alpha, covered = 0.2, []
    for _ in range(200):
        p = rng.dirichlet(np.ones(5) * 0.7, size=60)
        y = np.array([rng.choice(5, p=row) for row in p])
        q = conformal_qhat(p[:30][np.arange(30), y[:30]], alpha)
        s = prediction_sets(p[30:], q)
        covered.append(s[np.arange(30), y[30:]].mean())
    assert np.mean(covered) >= 1 - alpha - 0.01


def test_select_query_set_size_vs_entropy_by_hand() -> None:
    # Q0 splits the mass evenly: posteriors [.5 .5 0 0] / [0 0 .5 .5]; with q̂ = 0.5 (threshold
    # 0.5) each set has 2 labels → E|C| = 2; E H = ln 2 = 0.693.
    # Q1 posteriors [.7 .1 .1 .1] / [.1 .1 .1 .7] → singletons, E|C| = 1; E H =
    # −(0.7 ln 0.7 + 3 · 0.1 ln 0.1) = 0.2497 + 0.6908 = 0.9405.
    a = [[0.5, 0.5], [0.5, 0.5]]
    post = [
        [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]],
        [[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]],
    ]
    k, obj = select_query(a, post, 0.5, "set_size")
    assert k == 1 and obj.tolist() == [2.0, 1.0]
    k, obj = select_query(a, post, 0.5, "entropy")
    assert k == 0
    np.testing.assert_allclose(obj, [math.log(2), 0.9405], atol=1e-4)
    np.testing.assert_allclose(entropy_nats([0.5, 0.5, 0.0]), math.log(2))


def _bayes(k: int):
    # exact posterior under a uniform prior: uniform over the labels consistent with the answers
    queries = {q.text: q for q in number_queries(k)}

    def probs(history):
        ok = np.array([all(queries[q].answer(y) == a for q, a in history) for y in range(1, k + 1)])
        return ok / ok.sum()

    return probs


def test_games_with_an_exact_posterior() -> None:
    k, labels = 8, list(range(1, 9))
    probs = _bayes(k)
    # calibration on an exact posterior: p(true | h) >= 1/8 always; q̂ from random histories
    rng = np.random.default_rng(0)
    qs = number_queries(k)
    hist = []
    for _ in range(40):
        y = int(rng.integers(1, k + 1))
        h = [(q.text, q.answer(y)) for q in rng.choice(qs, size=int(rng.integers(0, 4)))]
        hist.append((h, y))
    qhat = calibrate_qhat(probs, hist, labels, alpha=0.1)
    # most histories leave p(true) = 1/8 → the 90% score quantile is 1 − 1/8; then C is the
    # set of labels consistent with the answers
    assert qhat == pytest.approx(0.875)
    for by in ("set_size", "entropy"):
        for y in labels:
            r = play(probs, qs, labels, y, qhat=qhat, by=by, budget=6)
            # halving questions exist, so 3 = log2(8) queries suffice and both find it
            assert r.success and r.num_queries == 3, (by, y, r)
    # entropy-greedy's first question on a uniform prior is the halving one, "> 4"
    assert play(probs, qs, labels, 3, qhat, by="entropy").queries[0] == "Is it greater than 4?"
    # budget: stops after 1 query with a 4-label set
    r = play(probs, qs, labels, 3, qhat, budget=1)
    assert r.num_queries == 1 and not r.success and len(r.final_set) == 4


def test_set_size_estimator_on_option_logprobs(tiny_backend) -> None:
    items = [
        TaskItem("a", "Pick one: red or blue?", "red", {"options": ["red", "blue"]}),
        TaskItem("b", "2 + 2 = ?", "4", {"options": ["3", "4", "5"]}),
    ]
    res = run_estimators(tiny_backend, items, ["set_size"], params={"set_size": {"qhat": 0.6}})
    probs = option_probs(tiny_backend, [it.prompt for it in items],
                         [it.meta["options"] for it in items])  # fmt: skip
    # the reference: summed teacher-forced log-probabilities, softmax over the options
    for it, p in zip(items, probs, strict=True):
        lp = [float(t.logprob.double().sum())
              for t in tiny_backend.score([it.prompt] * len(it.meta["options"]), it.meta["options"])]  # fmt: skip
        np.testing.assert_allclose(p, torch.softmax(torch.tensor(lp), 0).numpy(), rtol=1e-6)
    assert res.uncertainty["set_size"].tolist() == [float(set_size(p, 0.6)) for p in probs]
    ok, skipped = applicable_estimators(tiny_backend)
    assert "set_size" not in ok and "qhat" in skipped["set_size"]
    with pytest.raises(EntrolabError, match="label space has size 1"):
        option_probs(tiny_backend, ["x"], [["only"]])
