"""Answer extraction, canonical keys, equivalence and clustering (entrolab.tasks.answers)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.errors import EntrolabError
from entrolab.tasks.answers import (
    answer_key,
    answers_equivalent,
    cluster_answers,
    extract_answer,
    extract_boxed,
    math_verify_available,
    to_fraction,
)

# (reply, expected answer with kind="number")
NUMBER_CASES = [
    ("The answer is 42.", "42"),  # trailing sentence period dropped
    ("5 + 3 = 8", "8"),  # last number
    ("Answer: 1,234", "1234"),  # thousands comma removed
    ("answer is 1,000,000", "1000000"),
    ("x = -3", "-3"),  # minus after '=' is a sign
    ("The result is −7", "-7"),  # unicode minus
    ("(-4)", "-4"),
    ("So 5-3 is 2", "2"),  # '5-3' is 5 and 3, not 5 and -3; last is 2
    ("range 3-5", "5"),  # a hyphen glued to a digit is not a sign
    ("It is 3/4.", "3/4"),  # fraction, then sentence period
    ("\\boxed{\\frac{3}{4}}", "3/4"),  # LaTeX fraction inside \boxed
    ("The answer is $\\frac{1}{2}$", "1/2"),
    ("\\boxed{x = 3} and then 99", "3"),  # boxed wins over a later number
    ("Answer: **12** because 5+7=12 and 3", "12"),  # number right after the marker wins
    ("answer: let us compute 2+3 = 5", "5"),  # marker not followed by a number → last number
    ("Total: $1,234.50.", "1234.50"),  # currency, comma, decimal, period
    ("Pi is about 3.14159", "3.14159"),
    (".5 of it", ".5"),
    ("scores 1,2345", "2345"),  # '1,2345' is not a thousands group
    ("x2 + 3", "3"),  # digits glued to a word are not a number
    ("#### 72", "72"),
    ("I do not know", None),
    ("", None),
    ("The final answer is: -15.", "-15"),
    ("12 apples and 5 oranges, 17 total", "17"),
    ("1{,}000 is the \\boxed{1{,}000}", "1000"),  # LaTeX thousands separator
    ("The answer is 8 (because 5 + 3 = 8 and not 9)", "8"),
    # a real SmolLM2 reply (level 1, seed 0): the marked number beats the trailing "7 and 5"
    ("7 + 5 = 12\n\nIn this case, the answer is simply 12, which is the sum of 7 and 5.", "12"),
    ("Answer: 7\nCheck: 7 + 0 = 7, and 10 - 3 = 7 as well, answer is correct", "7"),
    # a number that opens an equation after the marker counts by its result, not as the answer
    ("The answer is 7*8 = 56.", "56"),  # not 7
    ("Answer: 7 × 8 = 56", "56"),
    ("The answer is $7 \\times 8 = 56$", "56"),
    ("Answer: 7 times 8 equals 56", "56"),
    ("The answer is -3 + 10 = 7", "7"),  # not -3
    ("The answer is 3 + 4 = 7, then 7*8 = 56", "56"),  # the line's last result
    ("Answer: 7*8\n56", "56"),  # an expression without a result is no answer: last number
    ("The answer is 56 (7*8).", "56"),  # a value first: unchanged
]


@pytest.mark.parametrize(("text", "expected"), NUMBER_CASES)
def test_extract_number(text: str, expected: str | None) -> None:
    assert extract_answer(text, "number") == expected


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("Capital?\nParis.", "last_line", "Paris"),
        ("Thinking...\n\n**Paris**\n\n", "last_line", "Paris"),
        ("The answer is: Paris.\nI am sure.", "text", "Paris"),
        ("<answer> blue </answer> done", "text", "blue"),
        ("<answer>a</answer> then <answer>b</answer>", "auto", "b"),  # last tag
        ("So \\boxed{x^2 + 1}.", "boxed", "x^2 + 1"),
        ("\\boxed{\\frac{1}{2}} hmm", "auto", "1/2"),
        (
            "nested \\boxed{\\sqrt{\\frac{a}{b}}}",
            "boxed",
            "\\sqrt{\\frac{a}{b}}",
        ),  # balanced braces
        ("no box here", "boxed", None),
        ("x = 3, so the total is 12", "auto", "12"),
        ("Answer: Paris", "auto", "Paris"),
        ("The answer is 7*8 = 56.", "auto", "56"),  # the result, not the operand 7
        ("Answer: 7*8", "auto", "7*8"),  # no result: the marked line, not "7"
        ("I think it is blue", "auto", "I think it is blue"),  # nothing better: last line
        ("   \n  ", "text", None),
    ],
)
def test_extract_other_kinds(text: str, kind: str, expected: str | None) -> None:
    assert extract_answer(text, kind) == expected


def test_extract_boxed_unbalanced_uses_earlier_box() -> None:
    assert extract_boxed("\\boxed{4} then \\boxed{5") == "4"
    assert extract_boxed("\\boxed 7 is it") == "7"


def test_extract_default_kind_is_number() -> None:
    reply = "Answer: let us compute 2+3 = 5"
    assert extract_answer(reply) == "5"  # lenient number parser by default
    assert extract_answer(reply, "auto") == "let us compute 2+3 = 5"  # auto keeps the marked line
    assert extract_answer("I don't know") is None
    assert extract_answer("I don't know", "auto") == "I don't know"


def test_extract_bad_input() -> None:
    assert extract_answer(None) is None
    with pytest.raises(EntrolabError, match="unknown answer kind 'numbers'"):
        extract_answer("1", "numbers")  # type: ignore[arg-type]
    with pytest.raises(EntrolabError, match="needs a string"):
        extract_answer(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("1,000", Fraction(1000)),
        ("1000.0", Fraction(1000)),
        ("0.5", Fraction(1, 2)),
        ("1/2", Fraction(1, 2)),
        ("\\frac{1}{2}", Fraction(1, 2)),
        ("-6/4", Fraction(-3, 2)),  # reduced
        ("x = 3", Fraction(3)),
        ("$12", Fraction(12)),
        ("50%", Fraction(50)),  # % is a unit and dropped (documented)
        ("42.", Fraction(42)),
        ("**7**", Fraction(7)),
        ("17 apples", Fraction(17)),
        ("3x", None),  # a glued letter is algebra, not a unit: "3x" is not the number 3
        ("2 x + 1", None),
        ("-0", Fraction(0)),
        ("3/0", None),  # division by zero is not a number
        ("Paris", None),
        ("3 + 4", None),  # an expression is not a single number
    ],
)
def test_to_fraction(answer: str, value: Fraction | None) -> None:
    assert to_fraction(answer) == value


def test_answer_key_examples() -> None:
    assert answer_key("1,000") == answer_key("1000.0") == answer_key("1000") == "1000"
    assert answer_key("0.5") == answer_key("1/2") == answer_key("\\frac{1}{2}") == "1/2"
    assert answer_key("-0") == "0"
    assert answer_key("  The   Cat. ") == answer_key("the cat") == "the cat"
    with pytest.raises(EntrolabError, match="unparseable"):
        answer_key(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("0.5", "1/2", True),
        ("1,000", "1000", True),
        ("x=3", "3", True),
        ("x = 3", "y=3", True),
        ("Paris", "paris.", True),
        ("3", "4", False),
        ("1/3", "0.333", False),  # exact rationals differ
        ("-3", "3", False),
        (None, "3", False),
        ("3", None, False),
        ("Paris", "Sirap", False),  # math-verify would read both as p*a*r*i*s; guarded
    ],
)
def test_answers_equivalent(a: str | None, b: str | None, expected: bool) -> None:
    assert answers_equivalent(a, b) is expected
    assert answers_equivalent(b, a) is expected


@pytest.mark.skipif(not math_verify_available(), reason="math-verify not installed")
def test_answers_equivalent_symbolic_via_math_verify() -> None:
    assert answers_equivalent("\\sqrt{4}", "2")
    assert answers_equivalent("x+1", "1+x")
    assert answers_equivalent("(x+1)^2", "x^2+2x+1")
    assert not answers_equivalent("x+1", "x+2")
    # with math-verify switched off only the exact key match remains
    assert not answers_equivalent("x+1", "1+x", use_math_verify=False)


def test_math_verify_in_a_thread() -> None:
    """math-verify's signal-based timeout only works in the main thread; we must not crash."""
    import threading

    out: list[bool] = []
    t = threading.Thread(target=lambda: out.append(answers_equivalent("x+2", "2+x")))
    t.start()
    t.join()
    assert out == [math_verify_available()]


def test_cluster_answers_by_key() -> None:
    # '3', '3.0', '6/2' are one number; each None is its own cluster by default.
    answers = ["3", "3.0", None, "4", None, "6/2"]
    assert cluster_answers(answers) == [0, 0, 1, 2, 3, 0]
    assert cluster_answers(answers, unparseable="shared") == [0, 0, 1, 2, 1, 0]
    assert cluster_answers([]) == []
    assert cluster_answers([None, None, None]) == [0, 1, 2]


@pytest.mark.skipif(not math_verify_available(), reason="math-verify not installed")
def test_cluster_answers_verify_joins_symbolic_equivalents() -> None:
    answers = ["\\sqrt{4}", "2", "x+1", "1+x", "5"]
    assert cluster_answers(answers) == [0, 1, 2, 3, 4]
    assert cluster_answers(answers, method="verify") == [0, 0, 1, 1, 2]


def test_cluster_answers_bad_options() -> None:
    with pytest.raises(EntrolabError, match="unknown cluster method"):
        cluster_answers(["1"], method="nli")  # type: ignore[arg-type]
    with pytest.raises(EntrolabError, match="unparseable must be"):
        cluster_answers(["1"], unparseable="drop")  # type: ignore[arg-type]


def test_semantic_entropy_from_clusters_hand_computed() -> None:
    """Discrete SE of the clusters: sizes 3,1,1,1 of G=6 → −Σ p log p by hand."""
    ids = cluster_answers(["7", "7.0", "14/2", "8", None, None])
    sizes = [ids.count(c) for c in sorted(set(ids))]
    assert sizes == [3, 1, 1, 1]
    se = -sum(s / 6 * math.log(s / 6) for s in sizes)
    # 0.5*log 2 + 3*(1/6)*log 6 = 0.34657 + 0.89588 = 1.24245
    assert se == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(6), rel=1e-12)


# ------------------------------------------------------------------------------ properties
def _with_commas(n: int) -> str:
    return f"{n:,}"


@settings(max_examples=200, deadline=None)
@given(st.integers(-(10**9), 10**9), st.sampled_from(["plain", "commas", "dot0", "sentence"]))
def test_integer_roundtrip_through_reply(n: int, style: str) -> None:
    """An integer written in any common style, embedded in a reply, extracts to its value."""
    text = {"plain": str(n), "commas": _with_commas(n), "dot0": f"{n}.0", "sentence": f"{n:,}."}[
        style
    ]
    reply = f"Let me think. 2 + 2 = 4. The answer is {text}"
    parsed = extract_answer(reply, "number")
    assert parsed is not None
    assert to_fraction(parsed) == n
    assert answer_key(parsed) == str(n)


@settings(max_examples=200, deadline=None)
@given(st.integers(-999, 999), st.integers(1, 999))
def test_fraction_forms_share_a_key(p: int, q: int) -> None:
    """p/q, \\frac{p}{q} and (when finite) the decimal of p/q all get the key str(Fraction(p, q))."""
    value = Fraction(p, q)
    forms = [f"{p}/{q}", f"\\frac{{{p}}}{{{q}}}" if p >= 0 else f"-\\frac{{{-p}}}{{{q}}}"]
    den = value.denominator
    while den % 2 == 0:
        den //= 2
    while den % 5 == 0:
        den //= 5
    if den == 1:  # finite decimal: write it with enough digits
        forms.append(f"{float(value):.12f}".rstrip("0"))
    keys = {answer_key(f) for f in forms}
    assert keys == {str(value)}
    assert all(answers_equivalent(f, str(value)) for f in forms)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.integers(-5, 5).map(str), st.sampled_from(["2.0", "1/2", "0.5"])),
        max_size=12,
    )
)
def test_clusters_match_key_equality(answers: list[str | None]) -> None:
    """Two parsed answers share a cluster iff their keys are equal; Nones are singletons;
    ids are 0..C-1 in order of first appearance."""
    ids = cluster_answers(answers)
    assert len(ids) == len(answers)
    for i, a in enumerate(answers):
        for j, b in enumerate(answers):
            if i == j:
                continue
            same = a is not None and b is not None and answer_key(a) == answer_key(b)
            assert (ids[i] == ids[j]) == same
    firsts = list(dict.fromkeys(ids))
    assert firsts == list(range(len(firsts)))


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("0123456789-+−/.,$ =x\\{}boxedfrac:Answer\n")), max_size=40
    )
)
def test_number_extraction_always_gives_a_number(text: str) -> None:
    """Whatever the reply, kind="number" gives None or a string that parses to a rational."""
    parsed = extract_answer(text, "number")
    assert parsed is None or to_fraction(parsed) is not None, parsed
