"""The statistics graph and run_estimators: each statistic once, errors, chunking invariance."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from entrolab.errors import EntrolabError, UnknownNameError
from entrolab.estimators import (
    ESTIMATORS,
    STATISTICS,
    EstimatorConfig,
    Statistic,
    applicable_estimators,
    item_seed,
    resolve,
    run_estimators,
)
from test_estimators_direction import ITEMS, fake_embed, policy
from test_estimators_fakes import FakeBackend

SAMPLING = [
    "answer_agreement",
    "semantic_entropy",
    "semantic_entropy_discrete",
    "semantic_entropy_polygraph",
    "num_semantic_sets",
    "lexical_similarity",
    "eigval_laplacian",
    "degmat",
    "eccentricity",
    "mc_sequence_entropy",
    "mc_sequence_entropy_normalized",
]


def test_ten_sampling_estimators_trigger_one_sampling_generation():
    fake = FakeBackend(policy)
    cfg = EstimatorConfig(seed_scope="call", samples=4, max_new_tokens=5)
    res = run_estimators(fake, ITEMS[:4], SAMPLING, config=cfg)
    assert fake.count("generate", sampled=True) == 1
    assert fake.count("generate", sampled=False) == 0  # no greedy answer is needed
    assert fake.count("score") == 0
    assert set(res.meta["counts"].values()) == {1}  # every statistic computed exactly once
    assert {"samples", "answer_clusters", "sample_loglik", "sample_rougeL"} <= set(
        res.meta["counts"]
    )
    # per-item seeding: still one "samples" statistic, one generate call per item
    fake = FakeBackend(policy)
    res = run_estimators(fake, ITEMS[:4], SAMPLING, samples=4, max_new_tokens=5)
    assert fake.count("generate", sampled=True) == 4 and res.meta["counts"]["samples"] == 1


def test_all_estimators_share_one_greedy_pass_and_one_sampling_pass():
    fake = FakeBackend(policy)
    cfg = EstimatorConfig(seed_scope="call", samples=3, max_new_tokens=5)
    res = run_estimators(fake, ITEMS[:3], config=cfg, embed_fn=fake_embed)
    # every estimator except those that need a fitted artefact (run by name with params)
    assert res.names == [
        n for n in ESTIMATORS.names() if not (ESTIMATORS.get(n).fitted or ESTIMATORS.get(n).opt_in)
    ]
    gens = [c for c in fake.calls if c["method"] == "generate"]
    answer_calls = [c for c in gens if c["prompts"] == [it.prompt for it in ITEMS[:3]]]
    assert len(answer_calls) == 2  # one greedy, one sampled (the others are reflexive prompts)
    assert {c["temperature"] for c in answer_calls} == {0.0, 1.0}
    assert fake.count("score") == 2  # unconditional (PMI) pass + P(True) pass
    assert set(res.meta["counts"].values()) == {1}


def test_resolve_orders_dependencies_first_and_detects_cycles(monkeypatch):
    order = resolve(ESTIMATORS.get("semantic_entropy").needs, EstimatorConfig())
    assert order.index("samples") < order.index("sample_texts") < order.index("sample_answers")
    assert order.index("sample_answers") < order.index("answer_clusters")
    assert set(order) == {"samples", "sample_texts", "sample_answers", "answer_clusters"} | {
        "sample_loglik",
        "sample_lengths",
    }
    # embedding clustering swaps the dependency of answer_clusters
    order = resolve(["answer_clusters"], EstimatorConfig(clustering="embedding"))
    assert "sample_embeddings" in order and "sample_answers" not in order
    monkeypatch.setitem(
        STATISTICS, "cyc_a", Statistic("cyc_a", lambda c, s: 0, frozenset({"cyc_b"}), "a")
    )
    monkeypatch.setitem(
        STATISTICS, "cyc_b", Statistic("cyc_b", lambda c, s: 0, frozenset({"cyc_a"}), "b")
    )
    with pytest.raises(EntrolabError, match="cycle: cyc_a -> cyc_b -> cyc_a"):
        resolve(["cyc_a"], EstimatorConfig())
    with pytest.raises(EntrolabError, match="unknown statistic"):
        resolve(["nope"], EstimatorConfig())


def test_unknown_estimator_names_list_the_known_ones():
    with pytest.raises(UnknownNameError) as err:
        run_estimators(FakeBackend(policy), ITEMS[:1], ["semantic_entropie"])
    message = str(err.value)
    assert "Did you mean 'semantic_entropy'" in message and "msp" in message and "pcc" in message


def test_bad_runs_fail_with_a_fix():
    fake = FakeBackend(policy)
    with pytest.raises(EntrolabError, match="no items"):
        run_estimators(fake, [], ["msp"])
    with pytest.raises(EntrolabError, match="no prompt text"):
        run_estimators(fake, ["  "], ["msp"])
    with pytest.raises(EntrolabError, match="not among the estimators run"):
        run_estimators(fake, ITEMS[:1], ["msp"], params={"deepconf_lowest": {"window": 2}})
    with pytest.raises(EntrolabError, match="unknown parameters"):
        run_estimators(fake, ITEMS[:1], ["msp"], params={"msp": {"window": 2}})
    with pytest.raises(EntrolabError, match="item_seeds"):
        run_estimators(fake, ITEMS[:2], ["msp"], item_seeds=[1])
    with pytest.raises(EntrolabError, match="samples >= 2"):
        run_estimators(fake, ITEMS[:1], ["semantic_entropy"], samples=1)
    with pytest.raises(EntrolabError, match="temperature must be > 0"):
        EstimatorConfig(temperature=0)


class _GenerateOnly:
    def __init__(self) -> None:
        self._fake = FakeBackend(policy)

    def generate(self, prompts, config=None):
        return self._fake.generate(prompts, config)


def test_estimators_a_backend_cannot_serve_are_skipped_or_refused():
    backend = _GenerateOnly()
    names, skipped = applicable_estimators(backend, EstimatorConfig(samples=1))
    assert {"ptrue", "pmi", "pcc"} <= set(skipped) and "no score() method" in skipped["ptrue"]
    assert "semantic_entropy" in skipped and "msp" in names
    with pytest.raises(EntrolabError, match="'ptrue' cannot run: the backend has no score"):
        run_estimators(backend, ITEMS[:1], ["ptrue"])
    res = run_estimators(backend, ITEMS[:2], samples=1, max_new_tokens=4)
    assert "pmi" in res.meta["skipped"] and "msp" in res.names and "pmi" not in res.names


def test_results_for_an_item_do_not_depend_on_the_chunk_it_ran_in():
    kwargs = dict(samples=4, max_new_tokens=5, embed_fn=fake_embed, seed=7)
    whole = run_estimators(FakeBackend(policy), ITEMS[:4], **kwargs)
    parts = [run_estimators(FakeBackend(policy), ITEMS[a:b], **kwargs) for a, b in ((0, 1), (1, 4))]
    for name in whole.names:
        joined = np.concatenate([p.uncertainty[name] for p in parts])
        np.testing.assert_array_equal(whole.uncertainty[name], joined, err_msg=name)
    assert whole.meta["item_seeds"] == [item_seed(7, f"id:{it.id}") for it in ITEMS[:4]]
    # plain prompt strings are keyed by their global index: pass the chunk's offset
    prompts = [it.prompt for it in ITEMS[:4]]
    a = run_estimators(FakeBackend(policy), prompts, ["semantic_entropy"], **kwargs)
    b = run_estimators(
        FakeBackend(policy), prompts[2:], ["semantic_entropy"], item_offset=2, **kwargs
    )
    np.testing.assert_array_equal(
        a.uncertainty["semantic_entropy"][2:], b.uncertainty["semantic_entropy"]
    )


def test_seeds_change_samples_and_the_same_seed_repeats_them():
    def run(seed: int) -> np.ndarray:
        res = run_estimators(
            FakeBackend(policy),
            ITEMS[:4],
            ["mc_sequence_entropy"],
            samples=4,
            max_new_tokens=5,
            seed=seed,
        )
        return res.uncertainty["mc_sequence_entropy"]

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_precomputed_statistics_are_used_as_given():
    fake = FakeBackend(policy)
    first = run_estimators(fake, ITEMS[:2], ["mc_sequence_entropy"], samples=3, max_new_tokens=5)
    again = FakeBackend(policy)
    res = run_estimators(
        again, ITEMS[:2], ["mc_sequence_entropy"], precomputed={"samples": first.samples}
    )
    assert again.calls == [] and "samples" not in res.meta["counts"]
    np.testing.assert_array_equal(
        res.uncertainty["mc_sequence_entropy"], first.uncertainty["mc_sequence_entropy"]
    )


@dataclass
class _Grade:
    correct: bool


def _uneven(prompt, step, prefix):
    # answer "10"/"11" with a per-token peak 8, 2, 8: token confidences differ along the answer
    z = policy(prompt, step, prefix)
    return z * (0.25 if step == 1 else 1.0)


def test_grading_rows_progress_and_params():
    events = []
    res = run_estimators(
        FakeBackend(_uneven),
        ITEMS[:2],
        ["msp", "deepconf_lowest"],
        max_new_tokens=5,
        grade_fn=lambda item, text: _Grade(text == item.answer),
        on_progress=lambda stage, done, total: events.append((stage, done, total)),
        params={"deepconf_lowest": {"window": 1}},
    )
    np.testing.assert_array_equal(res.correct, [1.0, 0.0])
    assert ("greedy", 1, 1) in events and ("greedy_tokens", 1, 1) in events
    rows = json.loads(json.dumps(res.rows()))
    assert rows[1]["correct"] is False and rows[0]["greedy_text"] == ITEMS[0].answer
    assert set(rows[0]["u"]) == {"msp", "deepconf_lowest"}
    assert res.timings["greedy"] >= 0 and "estimator:msp" in res.timings
    # window 1: lowest single-token confidence, here different from the default (mean) result
    default = run_estimators(FakeBackend(_uneven), ITEMS[:2], ["deepconf_lowest"], max_new_tokens=5)
    assert not np.allclose(
        default.uncertainty["deepconf_lowest"], res.uncertainty["deepconf_lowest"]
    )


def test_custom_answer_functions_see_the_item():
    seen = []

    def extract(item, text):
        seen.append(item.id)
        return "same"  # every sample means the same thing → one cluster

    res = run_estimators(
        FakeBackend(policy),
        ITEMS[:2],
        ["num_semantic_sets", "greedy_consistency"],
        samples=3,
        max_new_tokens=5,
        extract_fn=extract,
    )
    assert seen.count("q0") == 4 and seen.count("q1") == 4  # 1 greedy + 3 samples each
    np.testing.assert_array_equal(res.uncertainty["num_semantic_sets"], [1.0, 1.0])
    np.testing.assert_array_equal(res.uncertainty["greedy_consistency"], [0.0, 0.0])
    # a cluster function that splits everything: G sets, no agreement with the greedy answer
    res = run_estimators(
        FakeBackend(policy),
        ITEMS[:2],
        ["num_semantic_sets", "greedy_consistency"],
        samples=3,
        max_new_tokens=5,
        cluster_fn=lambda answers: list(range(len(answers))),
    )
    np.testing.assert_array_equal(res.uncertainty["num_semantic_sets"], [3.0, 3.0])
    np.testing.assert_array_equal(res.uncertainty["greedy_consistency"], [1.0, 1.0])


def test_every_registered_estimator_is_documented_and_resolvable():
    for entry in ESTIMATORS:
        est = entry.obj
        assert est.level in ("sequence", "set") and est.higher_is_uncertain
        assert entry.paper and "|" not in entry.summary  # one markdown table row in methods.md
        for clustering in ("answer", "embedding"):
            resolve(est.needs, EstimatorConfig(clustering=clustering))  # no unknown statistic
        # set-level estimators read samples; sequence-level ones never do
        needs_samples = "samples" in resolve(est.needs, EstimatorConfig())
        assert needs_samples == (est.level == "set"), est.name


def test_the_system_prompt_reaches_every_generation_and_scoring_call():
    fake = FakeBackend(policy)
    cfg = EstimatorConfig(system_prompt="Be brief.", samples=2, max_new_tokens=4)
    run_estimators(fake, ITEMS[:2], ["pmi", "ptrue", "semantic_entropy", "msp"], config=cfg)
    assert fake.calls and all(c["system_prompt"] == "Be brief." for c in fake.calls)
