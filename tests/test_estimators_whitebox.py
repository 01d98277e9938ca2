"""White-box estimators: hand-computed cases on explicit traces, and PMI through a scoring pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.estimators import ESTIMATORS, EstimatorConfig, run_estimators
from entrolab.estimators.whitebox import pmi_uncertainty, token_table
from entrolab.types import Trace, TraceBatch
from test_estimators_fakes import FakeBackend, planned


def _trace(logprob, entropy, sc, topk, **kw) -> Trace:
    n = len(logprob)
    return Trace(
        prompt="p",
        text="t",
        token_ids=list(range(n)),
        tokens=["a"] * n,
        logprob=logprob,
        entropy=entropy,
        varentropy=[0.0] * n,
        self_certainty=sc,
        topk_ids=[[0, 1]] * n,
        topk_logprobs=topk,
        **kw,
    )


# A: 3 tokens; B: 1 token. Values exactly representable in float32 where it matters.
A = _trace(
    [-0.125, -0.5, -0.25],
    [0.25, 1.25, 0.5],
    [5.0, 3.0, 4.0],
    [[-0.125, -2.25], [-0.5, -1.0], [-0.25, -1.75]],
)
B = _trace([-2.0], [2.5], [1.0], [[-0.25, -2.0]])
STATS = {"greedy_tokens": token_table(TraceBatch((A, B)))}


def u(name: str, **params) -> np.ndarray:
    return ESTIMATORS.get(name)(STATS, **params)


def test_sequence_probability_and_perplexity_by_hand():
    # MSP: −Σℓ = 0.125 + 0.5 + 0.25 = 0.875 for A; 2.0 for B
    np.testing.assert_allclose(u("msp"), [0.875, 2.0], rtol=1e-12)
    # perplexity (mean NLL): 0.875 / 3 = 0.291666…; 2.0 / 1
    np.testing.assert_allclose(u("perplexity"), [0.875 / 3, 2.0], rtol=1e-12)
    # the alias resolves to the same estimator
    np.testing.assert_array_equal(ESTIMATORS.get("maximum_sequence_probability")(STATS), u("msp"))


def test_token_entropy_and_self_certainty_by_hand():
    # mean entropy (0.25 + 1.25 + 0.5)/3 = 2/3; max 1.25; B has one token of 2.5
    np.testing.assert_allclose(u("mean_token_entropy"), [2 / 3, 2.5], rtol=1e-12)
    np.testing.assert_allclose(u("max_token_entropy"), [1.25, 2.5], rtol=1e-12)
    # self-certainty u = −mean KL(U‖p): −(5+3+4)/3 = −4; −1
    np.testing.assert_allclose(u("self_certainty"), [-4.0, -1.0], rtol=1e-12)


def test_deepconf_group_confidences_by_hand():
    # token confidence C_t = −mean(top-2 logprobs): A → [1.1875, 0.75, 1.0]; B → [1.125]
    # window 2 over A: window means [(1.1875+0.75)/2, (0.75+1)/2] = [0.96875, 0.875]
    np.testing.assert_allclose(u("deepconf_mean"), [-(2.9375 / 3), -1.125], rtol=1e-12)
    np.testing.assert_allclose(u("deepconf_lowest", window=2), [-0.875, -1.125], rtol=1e-12)
    # bottom 10% of 2 windows: max(1, floor(0.2)) = 1 window, the lowest
    np.testing.assert_allclose(u("deepconf_bottom10", window=2), [-0.875, -1.125], rtol=1e-12)
    np.testing.assert_allclose(u("deepconf_tail", window=2), [-0.875, -1.125], rtol=1e-12)
    # default window 16 > length: every mode falls back to the trace mean
    for mode in ("deepconf_lowest", "deepconf_bottom10", "deepconf_tail"):
        np.testing.assert_allclose(u(mode), u("deepconf_mean"), rtol=1e-12)


def test_window_entropy_estimators_by_hand():
    # forward window-2 entropy of A: [(0.25+1.25)/2, (1.25+0.5)/2, 0.5] = [0.75, 0.875, 0.5]
    # > 0.8 only at t = 1 → rate 1/3; B: [2.5] → 1
    np.testing.assert_allclose(u("hwe_rate", window=2, threshold=0.8), [1 / 3, 1.0], rtol=1e-12)
    np.testing.assert_allclose(u("max_window_entropy", window=2), [0.875, 2.5], rtol=1e-12)


def test_pmi_by_hand_with_and_without_the_first_token():
    table = STATS["greedy_tokens"]
    lm = torch.tensor([[-1.0, -0.75, -0.25], [-2.5, 0.0, 0.0]], dtype=torch.float64)
    # A: ℓ − ℓ∅ = [0.875, 0.25, 0] → mean 0.375 → u = −0.375; B: −2 + 2.5 = 0.5 → u = −0.5
    got = pmi_uncertainty(table.logprob, lm, table.mask, skip_first=False)
    np.testing.assert_allclose(got, [-0.375, -0.5], rtol=1e-12)
    # skip_first drops ℓ∅ at t = 0: A: [−0.125, 0.25, 0] → mean 0.041666… → u = −0.041666…
    got = pmi_uncertainty(table.logprob, lm, table.mask, skip_first=True)
    np.testing.assert_allclose(got, [-0.125 / 3, 2.0], rtol=1e-12)


def test_pmi_scores_the_greedy_tokens_after_the_neutral_prompt():
    answer, neutral = planned("12", peak=4.0), planned("1", peak=1.0)
    config = EstimatorConfig(neutral_prompt="nothing")

    def policy(prompt, step, prefix):
        return neutral(step) if prompt == "nothing" else answer(step)

    fake = FakeBackend(policy)
    res = run_estimators(fake, ["q"], ["pmi", "msp"], config=config, max_new_tokens=6)
    greedy = res.greedy[0]
    scored = fake.calls[-1]
    assert scored["method"] == "score" and scored["prompts"] == ["nothing"]
    # recompute by hand from the two policies: Σ over tokens "1", "2", <eos>
    ids = greedy.token_ids.tolist()
    cond = [torch.log_softmax(answer(t), -1)[i].item() for t, i in enumerate(ids)]
    uncond = [torch.log_softmax(neutral(t), -1)[i].item() for t, i in enumerate(ids)]
    expected = -np.mean(np.array(cond) - np.array(uncond))
    assert res.uncertainty["pmi"][0] == pytest.approx(expected, rel=1e-5)


def test_empty_answers_score_zero_and_topk_free_traces_are_rejected():
    empty = _trace([], [], [], torch.zeros(0, 2))
    stats = {"greedy_tokens": token_table(TraceBatch((empty, B)))}
    np.testing.assert_allclose(ESTIMATORS.get("msp")(stats), [0.0, 2.0])
    np.testing.assert_allclose(ESTIMATORS.get("perplexity")(stats), [0.0, 2.0])
    no_topk = Trace(
        prompt="p",
        text="t",
        token_ids=[1],
        tokens=["a"],
        logprob=[-1.0],
        entropy=[1.0],
        varentropy=[0.0],
        topk_ids=torch.zeros(1, 0),
        topk_logprobs=torch.zeros(1, 0),
    )
    with pytest.raises(EntrolabError, match="top-k"):
        token_table(TraceBatch((no_topk,)))


def test_estimator_call_validates_parameters_and_inputs():
    with pytest.raises(EntrolabError, match="unknown parameters"):
        ESTIMATORS.get("msp")(STATS, window=3)
    with pytest.raises(EntrolabError, match="needs statistics"):
        ESTIMATORS.get("msp")({})
