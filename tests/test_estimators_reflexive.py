"""Reflexive estimators: confidence parsing, hedge lexicon, P(True) and the follow-up prompts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from entrolab.estimators import run_estimators
from entrolab.estimators.reflexive import (
    EXTENDED_LEXICON,
    HEDGE_LEXICON,
    PTRUE_PROMPT,
    VERBALIZED_2STAGE,
    linguistic_confidence,
    parse_confidence,
    parse_stated_confidence,
    verdict_class,
)
from test_estimators_fakes import TOK, VOCAB, FakeBackend, planned


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Confidence: 80%", 0.8),
        ("confidence: 0.8", 0.8),
        ("Answer: 12\nConfidence: 75%", 0.75),  # the answer's number is not the confidence
        ("23 * 4 = 90\nConfidence: 90%", 0.9),
        ("I am 90% sure", 0.9),
        ("12, 80%", 0.8),
        ("Probability: 7/10", 0.7),
        ("confidence 8 out of 10", 0.8),
        ("eighty percent", 0.8),
        ("Confidence: ninety-five", 0.95),
        ("Confidence: one hundred percent", 1.0),
        ("Confidence: high", 0.8),
        ("I am highly confident", 0.8),
        ("Confidence level is moderate", 0.5),
        ("very low confidence", 0.1),
        ("80", 0.8),
        ("0.8", 0.8),
        ("The answer is 12.", None),
        ("Confidence: 150%", None),  # out of range is rejected, not clipped
        ("one of them", None),
        ("the probability of a number (0-100)", None),  # an echoed range is not a confidence
        ("a probability between 0 and 100%", None),
        ("Confidence: 0%", 0.0),
        ("", None),
    ],
)
def test_parse_confidence(text, expected):
    got = parse_confidence(text)
    assert got == (None if expected is None else pytest.approx(expected))


def test_bare_numbers_only_count_when_allowed():
    # a 1-stage reply "9 - 13 = 2" must not read its answer as a confidence
    assert parse_confidence("80", allow_bare=False) is None
    assert parse_confidence("9 - 13 = 2") is None


def test_bare_scale_reads_unit_less_numbers_on_the_scale_the_prompt_asked_for():
    # percentage prompts (the default): a unit-less 7 is 7 % = 0.07
    assert parse_confidence("Confidence: 7") == pytest.approx(0.07)
    # a "Confidence: k/10" prompt: 7 → 7/10 = 0.7, labelled, bare or in words
    for text in ("Confidence: 7", "7", "Confidence: seven", "confidence is 7 (out of ten)"):
        assert parse_confidence(text, bare_scale=10) == pytest.approx(0.7), text
    cases = {
        "Confidence: 1": 0.1,  # 1/10, not 100 %
        "Confidence: 10": 1.0,  # 10/10
        "Confidence: 0.8": 0.8,  # a decimal below 1 is a probability
        "Confidence: 75": 0.75,  # above the scale: 75 %
        "Confidence: 7/10": 0.7,  # units win over the scale: 7/10
        "Confidence: 7%": 0.07,  # and 7 %
        "Confidence: 12/10": None,  # 1.2 is out of range
    }
    for text, want in cases.items():
        got = parse_confidence(text, bare_scale=10)
        assert got == (None if want is None else pytest.approx(want)), text
    assert parse_confidence("7", allow_bare=False, bare_scale=10) is None
    # the k/10 reader takes the first "Confidence:" line, not a chain's "probability is 3/8"
    # (parse_confidence alone reads that 3 first: 3/10 = 0.3)
    chain = "The probability is 3/8 here.\nConfidence: 7\nReason: checked twice"
    assert parse_confidence(chain, bare_scale=10) == pytest.approx(0.3)
    assert parse_stated_confidence(chain) == pytest.approx(0.7)  # 7/10
    assert parse_stated_confidence(chain, bare_scale=None) == pytest.approx(0.07)  # 7 %


def test_hedge_lexicon_longest_phrase_wins_and_label_first():
    assert linguistic_confidence("Guess: 12\nConfidence: Probably Not") == 0.25  # not 0.7
    assert linguistic_confidence("That is highly unlikely.") == 0.05
    assert linguistic_confidence("Likely, yes") == 0.7
    assert linguistic_confidence("Guess: unlikely\nConfidence: Almost Certain") == 0.95
    assert linguistic_confidence("no hedge") is None
    assert linguistic_confidence("I think it is 12") is None
    assert linguistic_confidence("I think it is 12", EXTENDED_LEXICON) == 0.75
    assert len(HEDGE_LEXICON) == 17 and all(0 < v < 1 for v in HEDGE_LEXICON.values())


def test_verdict_classes():
    assert verdict_class(" True") == "true" and verdict_class("yes.") == "true"
    assert verdict_class("False") == "false" and verdict_class(" no") == "false"
    assert verdict_class("The") is None and verdict_class("") is None


QUESTIONS = ["Q0: add 20 and 22", "Q1: add 5 and 5"]
GREEDY = {"Q0": "42", "Q1": "12"}  # Q0 right, Q1 wrong


def _policy(prompt: str, step: int, prefix: list[int]) -> torch.Tensor:
    item = "Q0" if "Q0" in prompt else "Q1"
    if "True or False" in prompt:
        verdict = "True" if f"Proposed answer: {GREEDY['Q0']}" in prompt else "False"
        z = torch.zeros(len(VOCAB))
        z[TOK[verdict]] = 3.0
        return z
    if prompt.startswith("Answer the question below"):
        return planned("Confidence: 80%" if item == "Q0" else "no idea", 5.0)(step)
    if VERBALIZED_2STAGE in prompt:
        return planned("30" if item == "Q0" else "x", 5.0)(step)
    if prompt.startswith("Give your best guess"):
        return planned("Confidence: unlikely", 5.0)(step)
    return planned(GREEDY[item], 5.0)(step)


def test_reflexive_estimators_through_the_statistics_graph():
    fake = FakeBackend(_policy)
    names = ["ptrue", "verbalized_1stage", "verbalized_2stage", "linguistic_1stage"]
    res = run_estimators(fake, QUESTIONS, names, max_new_tokens=20)
    # P(True): logits 3 on the verdict token, 0 on the 18 others (V = 19)
    # Q0 (verdict True): log p(True) = 3 − ln(e³ + 18); Q1 (verdict False): 0 − ln(e³ + 18)
    z = math.log(math.exp(3) + 18)
    np.testing.assert_allclose(res.uncertainty["ptrue"], [z - 3, z], rtol=1e-6)
    assert res.statistics["ptrue"]["top2"][0][0] == "true"
    assert res.statistics["ptrue"]["top2"][1][0] == "false"
    # the P(True) prompt carries the question and the greedy answer
    score_call = next(c for c in fake.calls if c["method"] == "score")
    assert score_call["prompts"][0] == PTRUE_PROMPT.format(question=QUESTIONS[0], answer="42")
    # 1-stage: Q0 states 80 % → u = 0.2; Q1 states nothing → fallback 0.5, counted
    np.testing.assert_allclose(res.uncertainty["verbalized_1stage"], [0.2, 0.5])
    # 2-stage: the follow-up sees the greedy answer (flattened: this backend has no tokenizer)
    np.testing.assert_allclose(res.uncertainty["verbalized_2stage"], [0.7, 0.5])
    np.testing.assert_allclose(res.uncertainty["linguistic_1stage"], [0.8, 0.8])  # "unlikely"
    assert res.meta["unparsed"] == {
        "verbalized_1stage": 1,
        "verbalized_2stage": 1,
        "linguistic_1stage": 0,
    }
    follow = next(c for c in fake.calls if VERBALIZED_2STAGE in c["prompts"][0])
    assert follow["prompts"][0].startswith(f"Question: {QUESTIONS[0]}\nYour answer: 42\n")


class _Tokenizer:
    chat_template = "chatml"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"


class _ChatFake(FakeBackend):
    tokenizer = _Tokenizer()


def test_two_stage_uses_a_real_follow_up_turn_when_the_backend_has_a_chat_template():
    fake = _ChatFake(_policy)
    res = run_estimators(fake, QUESTIONS[:1], ["verbalized_2stage"], max_new_tokens=20)
    call = fake.calls[-1]
    assert call["prompts"][0] == (
        f"user:{QUESTIONS[0]}|assistant:42|user:{VERBALIZED_2STAGE}|assistant:"
    )
    np.testing.assert_allclose(res.uncertainty["verbalized_2stage"], [0.7])


def test_unparsed_fallback_is_configurable():
    from entrolab.estimators import EstimatorConfig

    fake = FakeBackend(_policy)
    cfg = EstimatorConfig(unparsed_confidence=0.0, max_new_tokens=20)
    res = run_estimators(fake, QUESTIONS, ["verbalized_1stage"], config=cfg)
    np.testing.assert_allclose(res.uncertainty["verbalized_1stage"], [0.2, 1.0])
