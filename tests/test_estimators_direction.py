"""Direction checks: on a scripted model that is confident exactly when it is right, every
estimator ranks right answers as less uncertain (AUROC of −u for correctness > 0.5)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
import torch

from entrolab.estimators import ESTIMATORS, EstimatorConfig, run_estimators
from entrolab.estimators.reflexive import VERBALIZED_2STAGE
from test_estimators_fakes import TOK, VOCAB, FakeBackend, planned


@dataclass(frozen=True)
class Item:
    id: str
    prompt: str
    answer: str


ITEMS = [Item(f"q{i}", f"Q{i}: what is {10 + i} + 0?", str(10 + i)) for i in range(10)]
CONFIDENT = {i: i % 2 == 0 for i in range(10)}


def _wrong(i: int) -> str:
    return str(60 + i)


def policy(prompt: str, step: int, prefix: list[int]) -> torch.Tensor:
    m = re.search(r"Q(\d+):", prompt)
    if m is None:  # the neutral prompt of the PMI pass: uniform
        return torch.zeros(len(VOCAB))
    i = int(m.group(1))
    sure = CONFIDENT[i]
    if "True or False" in prompt:
        z = torch.zeros(len(VOCAB))
        z[TOK["True" if f"Proposed answer: {ITEMS[i].answer}" in prompt else "False"]] = 3.0
        return z
    if prompt.startswith("Answer the question below"):
        return planned("Confidence: 90%" if sure else "Confidence: 20%", 6.0)(step)
    if VERBALIZED_2STAGE in prompt:
        return planned("90" if sure else "20", 6.0)(step)
    if prompt.startswith("Give your best guess"):
        return planned("Confidence: likely" if sure else "Confidence: unlikely", 6.0)(step)
    # the question itself: a sharp, right answer or a flat, wrong one
    return planned(ITEMS[i].answer, 8.0)(step) if sure else planned(_wrong(i), 1.0)(step)


def fake_embed(texts: list[str]) -> np.ndarray:
    """A random unit vector per distinct text (identical texts → cosine 1)."""
    out = []
    for t in texts:
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).normal(size=32)
        out.append(v / np.linalg.norm(v))
    return np.array(out)


def auroc(score: np.ndarray, label: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + ½ P(tie) (Mann–Whitney)."""
    pos, neg = score[label == 1], score[label == 0]
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def test_every_estimator_ranks_confident_right_answers_as_more_certain():
    fake = FakeBackend(policy)
    res = run_estimators(
        fake,
        ITEMS,
        samples=6,
        max_new_tokens=6,
        seed=1,
        grade_fn=lambda item, text: text.strip() == item.answer,
        embed_fn=fake_embed,
        config=EstimatorConfig(neutral_prompt="say anything"),
    )
    # every estimator applies to this backend, except those needing a fitted artefact
    assert res.names == [
        n for n in ESTIMATORS.names() if not (ESTIMATORS.get(n).fitted or ESTIMATORS.get(n).opt_in)
    ]
    np.testing.assert_array_equal(res.correct, [1.0 if CONFIDENT[i] else 0.0 for i in range(10)])
    aurocs = {n: auroc(-res.uncertainty[n], res.correct) for n in res.names}
    assert all(a > 0.5 for a in aurocs.values()), aurocs
    # the white-box ones see deterministic greedy traces: a perfect separation
    for name in ("msp", "perplexity", "mean_token_entropy", "self_certainty", "deepconf_lowest"):
        assert aurocs[name] == 1.0, name
