"""Paraphrase evaluation (issue 16 point 4): paraphrase sources, stability figures by hand, the
summary of stored rows, and ``entrolab eval --paraphrases`` end to end on the tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.errors import EntrolabError
from entrolab.studies.paraphrase import (
    TEMPLATES,
    check_count,
    check_rewrite,
    model_paraphrases,
    paraphrase_source_for,
    rule_paraphrases,
    template_paraphrases,
)
from entrolab.studies.paraphrase_eval import paraphrase_summary
from entrolab.studies.stability import (
    auroc_or_nan,
    correctness_stability,
    decision_flip_rate,
    estimator_stability,
    rank_agreement,
    within_item_spread,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ---- paraphrase sources ---------------------------------------------------------------------


def test_count_zero_and_non_int_are_clear_errors():
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(EntrolabError, match="paraphrase count must be an integer ≥ 1"):
            check_count(bad)


def test_rule_paraphrases_use_arithmetic_rules_then_templates():
    p = "What is 3 + 4? Answer with just the number."
    out, src = rule_paraphrases(p, 3)
    # the arithmetic rules: original, the commuted sum, then "Compute …"
    assert out == [p, "What is 4 + 3? Answer with just the number.",
                   "Compute 3 + 4. Answer with just the number."]  # fmt: skip
    assert src == ["original", "rule", "rule"]
    q = "Sort these words: b a c. Reply with the list."
    out, src = rule_paraphrases(q, 2)  # not arithmetic → a template wrapping the whole prompt
    assert out == [q, TEMPLATES[0].format(prompt=q)] and src == ["original", "template"]
    with pytest.raises(EntrolabError, match="at most"):
        template_paraphrases(q, len(TEMPLATES) + 2)


def test_source_for_task_kinds():
    assert paraphrase_source_for("arithmetic") == "rule"
    assert paraphrase_source_for("rg:basic_arithmetic") == "template"
    assert paraphrase_source_for("jsonl:/x.jsonl") == "model"
    assert paraphrase_source_for("jsonl:/x.jsonl", "template") == "template"
    with pytest.raises(EntrolabError, match="unknown paraphrase source"):
        paraphrase_source_for("arithmetic", "llm")


def test_check_rewrite_reasons():
    q = "What is 12 + 12 - 5?"
    assert check_rewrite(q, "Compute twelve plus... 12 + 12 minus 5.") is None
    assert check_rewrite(q, "  ") == "empty"
    assert check_rewrite(q, "what is 12 +  12 - 5?") == "same as the original"
    # 12 appears twice in the original; one copy is missing
    assert check_rewrite(q, "Add 12 and then take away 5.") == "drops the number(s) 12"
    assert check_rewrite(q, "12 12 5 " + "x" * 100) == "more than 3× as long"


class _ScriptedBackend:
    """Returns fixed rewrites (generate only): two per prompt, in order."""

    def __init__(self, texts):
        self.texts = texts

    def generate(self, prompts, cfg):
        from types import SimpleNamespace

        assert cfg.num_samples == 2
        return [
            SimpleNamespace(text=self.texts[i][s], prompt_index=i)
            for i in range(len(prompts))
            for s in range(2)
        ]


def test_model_paraphrases_keep_checked_rewrites_and_replace_rejected_ones():
    prompts = ["What is 7 times 8?", "Name the capital of France."]
    backend = _ScriptedBackend(
        [
            ["Multiply 7 by 8.", "What is seven times eight?"],
            ["Which city is France's capital?", ""],
        ]
    )
    out = model_paraphrases(backend, prompts, 3)
    assert out[0][0] == [prompts[0], "Multiply 7 by 8.", TEMPLATES[1].format(prompt=prompts[0])]
    assert out[0][1] == ["original", "model",
                         "template (model rewrite rejected: drops the number(s) 7, 8)"]  # fmt: skip
    assert out[1][1] == ["original", "model", "template (model rewrite rejected: empty)"]


# ---- stability figures by hand --------------------------------------------------------------


def test_stability_figures_by_hand():
    u = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    # both columns order the items the same way → Spearman 1
    assert rank_agreement(u) == pytest.approx(1.0)
    # mid-ranks 1..6 → (r − ½)/6; each item's two values differ by 1/6 → std (ddof 0) 1/12
    assert within_item_spread(u) == pytest.approx(1 / 12)
    # median of 1..6 = 3.5: flags [T,T], [T,F], [F,F] → one item of three flips
    assert decision_flip_rate(u) == pytest.approx(1 / 3)
    v = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    # column 2 reverses column 1 → ρ = −1
    assert rank_agreement(v) == pytest.approx(-1.0)


def test_auroc_by_hand_and_one_class_is_nan():
    # correct items have u 1, 2; wrong have 3, 2 → pairs (c, w): (1,3) ✓ (1,2) ✓ (2,3) ✓ (2,2) ½
    # → (3 + ½) / 4 = 0.875
    assert auroc_or_nan(np.array([1.0, 2, 3, 2]), np.array([1, 1, 0, 0])) == pytest.approx(0.875)
    assert math.isnan(auroc_or_nan(np.array([1.0, 2]), np.array([1, 1])))


def test_estimator_stability_by_hand():
    # 4 items, 2 paraphrases. Paraphrase 0: u = 1,2,3,4 with correct 1,1,0,0 → AUROC 1.
    # Paraphrase 1: u = 2,1,4,3 with correct 1,0,1,0 → pairs (c: 2, 4; w: 1, 3):
    # (2,1) ✗ (2,3) ✓ (4,1) ✗ (4,3) ✗ → 1/4. Mean 0.625, spread 0.75.
    u = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, 4.0], [4.0, 3.0]])
    y = np.array([[1, 1], [1, 0], [0, 1], [0, 0]])
    s = estimator_stability(u, y, n_boot=200)
    assert s["n"] == 4
    assert s["auroc_by_paraphrase"] == pytest.approx([1.0, 0.25])
    assert s["auroc_mean"]["mean"] == pytest.approx(0.625)
    assert s["auroc_spread"]["mean"] == pytest.approx(0.75)
    # ranks of the columns: (1,2,3,4) vs (2,1,4,3): Σd² = 4 → ρ = 1 − 6·4/(4·15) = 0.6
    assert s["rank_agreement"]["mean"] == pytest.approx(0.6)
    # median of all 8 values = 2.5: flags [T,T], [T,T], [F,F], [F,F] → no flips
    assert s["decision_flip_rate"]["mean"] == 0.0
    lo, hi = s["rank_agreement"]["low"], s["rank_agreement"]["high"]
    assert lo <= 0.6 <= hi or math.isnan(lo)


def test_estimator_stability_drops_items_with_non_finite_u_and_checks_shapes():
    u = np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, 4.0], [4.0, 3.0], [0.5, 0.5]])
    y = np.ones((5, 2))
    assert estimator_stability(u, y, n_boot=50)["n"] == 4
    assert "reason" in estimator_stability(u[:3], y[:3], n_boot=50)
    with pytest.raises(EntrolabError, match="P ≥ 2"):
        estimator_stability(np.ones((3, 1)), np.ones((3, 1)))
    with pytest.raises(EntrolabError, match="matching"):
        estimator_stability(np.ones((3, 2)), np.ones((4, 2)))


def test_correctness_stability_by_hand():
    y = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 0], [0, 1, 0]])
    s = correctness_stability(y, n_boot=200)
    # column means: (1+1+0+0)/4, (1+0+0+1)/4, (1+1+0+0)/4
    assert s["accuracy_by_paraphrase"] == pytest.approx([0.5, 0.5, 0.5])
    assert s["flip_rate"]["mean"] == pytest.approx(0.5) and s["flipped_items"] == [1, 3]


def test_batched_figures_equal_scipy_and_sklearn_per_replicate():
    """The [B, N, P] forms equal per-replicate references (scipy spearmanr, sklearn AUROC)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    u = rng.integers(0, 6, size=(5, 30, 3)).astype(float)  # ties on purpose
    y = rng.integers(0, 2, size=(5, 30))
    got = rank_agreement(u)
    for b in range(5):
        ref = np.mean([spearmanr(u[b, :, i], u[b, :, j])[0] for i, j in ((0, 1), (0, 2), (1, 2))])
        assert got[b] == pytest.approx(ref, rel=1e-12)
        assert within_item_spread(u)[b] == pytest.approx(within_item_spread(u[b]), rel=1e-12)
        assert decision_flip_rate(u)[b] == decision_flip_rate(u[b])
    assert auroc_or_nan(u[:, :, 0], y) == pytest.approx(
        [roc_auc_score(y[b], -u[b, :, 0]) for b in range(5)], rel=1e-12
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.integers(-20, 20), min_size=3, max_size=3), min_size=4, max_size=12),
    st.integers(1, 10),
    st.integers(-30, 30),
)
def test_figures_are_invariant_to_monotone_rescaling(rows, scale, shift):
    """Rank-based: u → a·u + b (a > 0) changes none of them (integers keep the map exact)."""
    u = np.array(rows, dtype=np.float64)
    w = scale * u + shift
    assert rank_agreement(u) == pytest.approx(rank_agreement(w), nan_ok=True)
    assert within_item_spread(u) == pytest.approx(within_item_spread(w))
    assert 0.0 <= within_item_spread(u) <= 0.5
    assert decision_flip_rate(u) == pytest.approx(decision_flip_rate(w))


# ---- summary of stored rows -----------------------------------------------------------------


def _row(i, correct, u, samples, keys, conf, answer="4"):
    return {
        "index": i, "id": f"it{i}", "answer": answer,
        "prompts": ["a", "b"], "sources": ["original", "rule"],
        "per_paraphrase": [
            {"correct": c, "u": {"e": x}, "sample_correct": s, "sample_keys": k,
             "sample_confidence": f}
            for c, x, s, k, f in zip(correct, u, samples, keys, conf, strict=True)
        ],
    }  # fmt: skip


def test_summary_of_rows_by_hand():
    rows = [
        # item 0: greedy right on both prompts; samples 2/2 and 1/2 right; one wrong sample at 0.95
        _row(0, [1, 1], [0.1, 0.2], [[1, 1], [1, 0]], [["4", "4"], ["4", "5"]],
             [[0.5, 0.5], [0.5, 0.95]]),
        # item 1: greedy right then wrong; samples all wrong
        _row(1, [1, 0], [0.3, 0.9], [[0, 0], [0, 0]], [["5", "5"], ["6", None]],
             [[0.2, 0.2], [0.2, 0.2]]),
        _row(2, [0, 0], [0.8, 0.7], [[0, 1], [0, 0]], [["3", "4"], ["3", "3"]],
             [[0.3, 0.3], [0.3, 0.3]]),
    ]  # fmt: skip
    s = paraphrase_summary(rows, n_boot=200)
    assert s["sources"] == {"rule": 3}
    assert s["correctness"]["accuracy_by_paraphrase"] == pytest.approx([2 / 3, 1 / 3])
    ms = s["multi_sample"]
    # per-item rates 3/4, 0, 1/4 → sampled accuracy 1/3; greedy (original) 2/3 → gap 1/3
    assert ms["sampled_accuracy"]["mean"] == pytest.approx(1 / 3)
    assert ms["greedy_minus_sampled"]["mean"] == pytest.approx(1 / 3)
    # item 1: greedy right, rate 0 < ½; item 0's rate ¾ ≥ ½ with greedy right (no disagreement)
    assert ms["greedy_right_sampled_below_half"] == [1]
    assert ms["greedy_wrong_sampled_above_half"] == []
    # tail risk: item 0 has a wrong sample at 0.95 ≥ 0.9 → 1/3
    assert ms["tail_risk"]["mean"] == pytest.approx(1 / 3)
    # maj@2 (first seen wins ties): item 0: "4" ✓, "4" ✓; item 1 ✗ ✗; item 2: "3" ✗, "3" ✗ → 1/3
    assert ms["maj@2"]["mean"] == pytest.approx(1 / 3)
    assert s["estimators"]["e"]["n"] == 3
    rows[0]["per_paraphrase"][0]["sample_confidence"] = None
    assert "tail_risk_reason" in paraphrase_summary(rows, n_boot=50)["multi_sample"]


# ---- entrolab eval --paraphrases end to end (the parrot model always says "7") ---------------


def test_eval_paraphrases_end_to_end_on_the_parrot_model(parrot_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from entrolab.cli.main import app

    task = tmp_path / "t.jsonl"
    # the parrot replies "77" in 2 tokens: items 0 and 2 expect it, items 1 and 3 expect 5
    rows = [{"id": f"q{i}", "prompt": f"Question {i}: name a number.", "answer": a}
            for i, a in enumerate(["77", "5", "77", "5"])]  # fmt: skip
    task.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    out = tmp_path / "run"
    args = ["eval", "--model", str(parrot_dir), "--task", f"jsonl:{task}", "--n", "4",
            "--samples", "2", "--estimators", "mean_token_entropy,answer_agreement",
            "--max-new-tokens", "2", "--paraphrases", "3", "--out", str(out)]  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(app, args, env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    stored = [
        json.loads(x) for x in (out / "paraphrases" / "results.jsonl").read_text().splitlines()
    ]
    assert [r["index"] for r in stored] == [0, 1, 2, 3]
    for r in stored:
        # jsonl → the model rewrites; the parrot's "7777…" drops the item's number → templates
        assert r["sources"][0] == "original" and len(r["prompts"]) == 3
        assert all(
            s.startswith("template (model rewrite rejected: drops") for s in r["sources"][1:]
        )
        assert r["prompts"][1:] == [t.format(prompt=r["prompts"][0]) for t in TEMPLATES[:2]]
        right = r["answer"] == "77"
        assert [p["correct"] for p in r["per_paraphrase"]] == [right] * 3
        assert all(p["sample_correct"] == [right] * 2 for p in r["per_paraphrase"])
        assert all(len(p["sample_confidence"]) == 2 for p in r["per_paraphrase"])
    s = json.loads((out / "paraphrases" / "summary.json").read_text())
    # greedy and every sample right on exactly items 0 and 2, whatever the wording
    assert s["correctness"]["accuracy_by_paraphrase"] == [0.5, 0.5, 0.5]
    assert s["correctness"]["flip_rate"]["mean"] == 0.0
    ms = s["multi_sample"]
    assert ms["sampled_accuracy"]["mean"] == 0.5 and ms["pass@2"]["mean"] == 0.5
    assert ms["fragile_fraction"]["mean"] == 0.0 and ms["greedy_minus_sampled"]["mean"] == 0.0
    assert ms["greedy_right_sampled_below_half"] == [] == ms["greedy_wrong_sampled_above_half"]
    assert set(s["estimators"]) == {"mean_token_entropy", "answer_agreement"}
    assert "Paraphrase stability" in result.output and "rank agreement" in result.output
    # a second run resumes: nothing is regenerated
    before = (out / "paraphrases" / "results.jsonl").read_bytes()
    again = runner.invoke(app, args, env={"COLUMNS": "160"})
    assert again.exit_code == 0, again.output
    assert (out / "paraphrases" / "results.jsonl").read_bytes() == before
    bad = runner.invoke(app, [*args[:-4], "--paraphrases", "0", "--out", str(tmp_path / "x")])
    assert isinstance(bad.exception, EntrolabError)
    assert "paraphrase count must be an integer ≥ 1" in str(bad.exception)
