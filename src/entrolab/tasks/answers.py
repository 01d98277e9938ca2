"""Answer extraction from free text, answer equivalence, and answer clustering.

Three layers, each usable alone:

* :func:`extract_answer` pulls the final answer out of a model's reply. Small instruct models
  rarely follow "end with Answer: X", so the default numeric rule is lenient: a ``\\boxed{}``
  answer, else a number written right after "answer is" / "Answer:", else the **last number**
  in the reply.
* :func:`answer_key` maps an *extracted* answer to a canonical string: an exact rational for
  anything numeric (``"1,000"``, ``"1000.0"`` → ``"1000"``; ``"0.5"``, ``"1/2"``,
  ``"\\frac{1}{2}"`` → ``"1/2"``), else whitespace/case-normalised text. Equal keys imply
  equivalent answers, so clustering G samples by key is O(G) with no symbolic maths.
* :func:`answers_equivalent` decides equivalence: equal keys; for two numbers, exact rational
  comparison; otherwise math-verify (symbolic, when installed) and, failing that, the
  normalised exact match.

:func:`cluster_answers` groups sampled answers for semantic entropy / answer agreement.
Everything here is pure Python (no torch); math-verify is imported lazily and optional.
"""

from __future__ import annotations

import functools
import importlib
import re
import threading
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Literal

from entrolab.errors import EntrolabError

__all__ = [
    "ANSWER_KINDS",
    "AnswerKind",
    "answer_key",
    "answers_equivalent",
    "cluster_answers",
    "extract_answer",
    "extract_boxed",
    "is_numeric",
    "math_verify_available",
    "to_fraction",
]

AnswerKind = Literal["number", "text", "last_line", "boxed", "auto"]
ANSWER_KINDS: tuple[str, ...] = ("number", "text", "last_line", "boxed", "auto")

# A number token. It may not start inside a word or right after a digit/decimal point/slash
# ("5-3" is 5 and 3, "x2" is no number), so a minus sign counts only at the start of a token
# ("= -3", "(-3)"). Body: 1,234,567.89 | 42 | 3.14 | .5; an optional "/7" makes a fraction.
# A trailing sentence period is not part of the number ("42." → 42).
_NUMBER_RE = re.compile(
    r"""
    (?<![\w.\/])
    (?P<sign>[-+])?
    (?P<body>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,]) | \d+(?:\.\d+)? | \.\d+)
    (?:/(?P<den>\d+(?!\d|\.\d)))?
    (?![\d])
    """,
    re.VERBOSE,
)
_FULL_NUMBER_RE = re.compile(
    r"(?P<sign>[-+])?(?P<body>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:/(?P<den>[-+]?\d+))?"
)
_LATEX_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*([-+]?\d+)\s*\}\s*\{\s*([-+]?\d+)\s*\}")
_LATEX_FRAC_SHORT_RE = re.compile(r"\\[dt]?frac\s*(\d)(\d)(?!\d)")
# "answer is", "Answer:", "final answer =", "answer is simply", then decoration before the value.
_MARKER_RE = re.compile(
    r"\banswer\b\s*(?:is\b\s*)?(?:(?:simply|just|exactly|clearly|therefore)\b\s*)?"
    r"(?:[:=]\s*)?[*_$\s(\[]*",
    re.IGNORECASE,
)
# After the number that follows a marker: an operator and another operand, i.e. the number only
# opens an expression ("Answer: 7*8 = 56", "7 times 8 is 56"); then its result is the answer.
_OPERATOR_RE = re.compile(
    r"[ \t]*(?:[-+*/×x·÷^]|\\times|\\cdot|\\div|(?:times|plus|minus|divided\s+by|"
    r"multiplied\s+by)\b)[ \t]*[-(\d.]",
    re.IGNORECASE,
)
_RESULT_RE = re.compile(r"(?:=|\bequals\b|\bis\b)[ \t*_$(\[]*", re.IGNORECASE)
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_LEADING_ASSIGN_RE = re.compile(r"^[a-zA-Z][\w']{0,15}\s*=\s*(?!=)")
_TEXT_WRAPPERS = ("**", "__", "$$", "$", "`", '"', "'")
_UNICODE = str.maketrans({"−": "-", "–": "-", "\u2009": "", "\u202f": "", "\xa0": " "})
# A number alone, optionally with a currency sign before or a unit word / % after it.
_UNIT_RE = re.compile(r"^(?:\\\$|\$|£|€)?\s*(?P<num>[^\s]+?)(?:\s*\\?%|\s+[a-zA-Z]+\.?)?$")


def _prepare(text: str) -> str:
    """Normalise unicode minus/spaces and LaTeX number forms so the regexes see plain numbers."""
    text = text.translate(_UNICODE)
    text = text.replace("{,}", ",").replace("\\,", "").replace("\\!", "")
    text = _LATEX_FRAC_RE.sub(r"\1/\2", text)
    return _LATEX_FRAC_SHORT_RE.sub(r"\1/\2", text)


def _format_number(m: re.Match[str]) -> str:
    sign = "-" if m.group("sign") == "-" else ""
    out = sign + m.group("body").replace(",", "")
    den = m.group("den")
    return out + (f"/{den}" if den and int(den) != 0 else "")  # "3/0" → just 3


def _numbers(text: str) -> list[str]:
    """Every number token in ``text`` (already prepared), commas removed, in order."""
    return [_format_number(m) for m in _NUMBER_RE.finditer(text)]


def _strip_wrappers(s: str) -> str:
    s = s.strip()
    changed = True
    while changed and s:
        changed = False
        for w in _TEXT_WRAPPERS:
            if len(s) >= 2 * len(w) and s.startswith(w) and s.endswith(w):
                s, changed = s[len(w) : -len(w)].strip(), True
        if s.endswith(".") and not s.endswith(".."):
            s, changed = s[:-1].rstrip(), True
    return s


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; else None.

    ``\\boxed 5`` without braces gives the next whitespace-free token.
    """
    matches = list(_BOXED_RE.finditer(text))
    for m in reversed(matches):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j].strip()
            continue  # unbalanced: try an earlier one
        token = text[i:].split(maxsplit=1)
        if token:
            return token[0].strip()
    return None


def _last_line(text: str) -> str | None:
    for line in reversed(text.splitlines()):
        line = _strip_wrappers(line)
        if line:
            return line
    return None


def _equation_result(line: str, start: int) -> str | None:
    """The number after the last "=" / "equals" / "is" of ``line`` from ``start`` on, or None."""
    for m in reversed(list(_RESULT_RE.finditer(line, start))):
        num = _NUMBER_RE.match(line, m.end())
        if num is not None:
            return _format_number(num)
    return None


def _marker_value(text: str, *, numeric: bool) -> str | None:
    """The value right after the last "answer is / Answer:" marker that is followed by one.

    ``numeric``: only a number directly after the marker counts; otherwise the rest of the line.
    A number that opens an expression counts by the expression's result: "Answer: 7*8 = 56" →
    "56" (not "7"); an expression without one ("Answer: 7*8") is no number after the marker.
    """
    for m in reversed(list(_MARKER_RE.finditer(text))):
        rest = text[m.end() :]
        num = _NUMBER_RE.match(rest)
        if num is not None:
            if not _OPERATOR_RE.match(rest, num.end()):
                return _format_number(num)
            result = _equation_result(rest.split("\n", 1)[0], num.end())
            if result is not None:
                return result
        if not numeric:
            line = _strip_wrappers(rest.split("\n", 1)[0])
            if line:
                return line
    return None


def extract_answer(text: str | None, kind: AnswerKind | str = "number") -> str | None:
    """The final answer in a model reply, or None when there is none.

    Args:
        text: the model's reply (free text; may contain LaTeX, markdown, <answer> tags).
        kind: what to look for.

            * ``"number"`` (default) – the number in the last ``\\boxed{}`` (its last number), else a number
              right after the last "answer is"/"Answer:" marker (if it opens an equation, the
              equation's result: ``"Answer: 7*8 = 56"`` → ``"56"``), else the last number in the
              text. Thousands commas are removed, a unicode minus becomes ``-``, ``\\frac{a}{b}``
              becomes ``a/b`` and a trailing period is dropped: ``"Answer: 1,234."`` → ``"1234"``.
            * ``"text"`` – the ``\\boxed{}`` content, else the last ``<answer>…</answer>``, else the
              rest of the line after the last marker, else the last non-empty line.
            * ``"last_line"`` – the last non-empty line (markdown/quote wrappers and a trailing
              period removed).
            * ``"boxed"`` – the last ``\\boxed{}`` content only.
            * ``"auto"`` – boxed, then ``<answer>`` tag, then marker (a number right after it,
              else the rest of its line), then the last number, then the last line.

    Returns:
        The answer string (numbers normalised as above), or None if nothing matches — callers
        grade None as *unparseable* (incorrect).
    """
    if kind not in ANSWER_KINDS:
        raise EntrolabError(f"unknown answer kind {kind!r}; use one of {', '.join(ANSWER_KINDS)}")
    if text is None:
        return None
    if not isinstance(text, str):
        raise EntrolabError(f"extract_answer needs a string, got {type(text).__name__}")
    text = _prepare(text)
    boxed = extract_boxed(text)
    if kind == "boxed":
        return boxed or None
    if kind == "last_line":
        return _last_line(text)
    if kind == "number":
        if boxed:
            nums = _numbers(boxed)
            if nums:
                return nums[-1]
        marked = _marker_value(text, numeric=True)
        if marked is not None:
            return marked
        nums = _numbers(text)
        return nums[-1] if nums else None
    if boxed:
        return _strip_wrappers(boxed) or None
    tags = _ANSWER_TAG_RE.findall(text)
    if tags and tags[-1].strip():
        return _strip_wrappers(tags[-1])
    if kind == "text":
        return _marker_value(text, numeric=False) or _last_line(text)
    marked = _marker_value(text, numeric=False)
    if marked is not None:
        return marked
    nums = _numbers(text)
    return nums[-1] if nums else _last_line(text)


# ---------------------------------------------------------------------------------- canonical keys
def to_fraction(answer: str) -> Fraction | None:
    """The exact rational value of a numeric answer string, else None.

    Accepts ``"-3"``, ``"1,234.50"``, ``".5"``, ``"3/4"``, ``"\\frac{3}{4}"``, ``"x = 3"``,
    ``"$12"``, ``"50%"`` (a unit or % after a number is dropped: ``"50%"`` → 50, not 0.5),
    ``"42."``, ``"**7**"``. A division by zero or anything else gives None.
    """
    s = _strip_wrappers(_prepare(answer))
    s = _LEADING_ASSIGN_RE.sub("", s)
    s = _strip_wrappers(s)
    unit = _UNIT_RE.match(s)
    if unit is None:
        return None
    m = _FULL_NUMBER_RE.fullmatch(unit.group("num").rstrip("."))
    if m is None:
        return None
    value = Fraction(m.group("body").replace(",", ""))
    if m.group("den"):
        den = int(m.group("den"))
        if den == 0:
            return None
        value /= den
    return -value if m.group("sign") == "-" else value


def is_numeric(answer: str | None) -> bool:
    """True when ``answer`` is a single number (see :func:`to_fraction`)."""
    return answer is not None and to_fraction(answer) is not None


def _text_key(answer: str) -> str:
    s = _LEADING_ASSIGN_RE.sub("", _strip_wrappers(_prepare(answer)))
    return " ".join(_strip_wrappers(s).split()).casefold()


def answer_key(answer: str) -> str:
    """Canonical form of an extracted answer, for exact grouping (O(1) per answer).

    Numbers become their exact reduced rational: ``"1,000"`` and ``"1000.0"`` → ``"1000"``;
    ``"0.5"``, ``"1/2"`` and ``"\\frac{1}{2}"`` → ``"1/2"``; ``"-0"`` → ``"0"``; ``"x = 3"`` → ``"3"``.
    Anything else becomes its text with wrappers (``**``, ``$``, quotes), a trailing period and
    a leading ``name =`` removed, whitespace collapsed and case folded.
    Two answers with the same key are equivalent under :func:`answers_equivalent`.
    """
    if not isinstance(answer, str):
        raise EntrolabError(
            f"answer_key needs a string answer, got {type(answer).__name__}; "
            "map unparseable (None) answers before calling it, or use cluster_answers"
        )
    value = to_fraction(answer)
    if value is not None:
        return str(value)
    return _text_key(answer)


# ------------------------------------------------------------------------------------ equivalence
@functools.cache
def _math_verify() -> Any | None:
    try:
        return importlib.import_module("math_verify")
    except ImportError:
        return None


def math_verify_available() -> bool:
    """Whether the optional ``math-verify`` package can be imported."""
    return _math_verify() is not None


@functools.lru_cache(maxsize=8192)
def _mv_parse(text: str, timeout: bool) -> tuple[Any, ...]:
    mv = _math_verify()
    return tuple(mv.parse(text, parsing_timeout=5 if timeout else None))


_LATEX_CMD_RE = re.compile(r"\\[a-zA-Z]+")
_WORD_RE = re.compile(r"[a-zA-Z]{2,}")
_MATH_WORDS = frozenset({"sqrt", "pi", "sin", "cos", "tan", "log", "ln", "exp", "inf", "infty"})


def _looks_mathematical(s: str) -> bool:
    """False for prose ("Paris"), which math-verify would read as the product p*a*r*i*s."""
    words = _WORD_RE.findall(_LATEX_CMD_RE.sub(" ", s))
    return all(w.lower() in _MATH_WORDS for w in words)


def _as_latex(s: str) -> str:
    """Wrap a bare expression in $…$ so math-verify parses it whole ("1+x" alone parses as 1)."""
    return s if "$" in s or "\\boxed" in s else f"${s}$"


def _mv_equivalent(answer: str, reference: str) -> bool:
    mv = _math_verify()
    if mv is None or not (_looks_mathematical(answer) and _looks_mathematical(reference)):
        return False
    answer, reference = _as_latex(answer), _as_latex(reference)
    # math-verify's timeouts use signal.alarm, which only works in the main thread.
    main = threading.current_thread() is threading.main_thread()
    try:
        gold, pred = _mv_parse(reference, main), _mv_parse(answer, main)
        if not gold or not pred:
            return False
        return bool(mv.verify(list(gold), list(pred), timeout_seconds=5 if main else None))
    except Exception:  # math-verify failures fall back to exact match (already tried)
        return False


def answers_equivalent(
    answer: str | None, reference: str | None, *, use_math_verify: bool = True
) -> bool:
    """Whether ``answer`` means the same as ``reference``.

    Rules, in order: None on either side → False; equal :func:`answer_key` → True; both
    numeric → their exact rational values differ, so False (``"1/3"`` ≠ ``"0.333"``); otherwise
    math-verify's ``verify(parse(reference), parse(answer))`` when installed and
    ``use_math_verify`` (symbolic: ``"\\sqrt{4}"`` ≡ ``"2"``, ``"x+1"`` ≡ ``"1+x"``); any
    math-verify error counts as not equivalent.
    """
    if answer is None or reference is None:
        return False
    if answer_key(answer) == answer_key(reference):
        return True
    if to_fraction(answer) is not None and to_fraction(reference) is not None:
        return False
    if use_math_verify:
        return _mv_equivalent(_prepare(answer), _prepare(reference))
    return False


# -------------------------------------------------------------------------------------- clusters
def cluster_answers(
    answers: Sequence[str | None],
    *,
    method: Literal["key", "verify"] = "key",
    unparseable: Literal["singleton", "shared"] = "singleton",
) -> list[int]:
    """Cluster ids for G sampled answers (equivalent answers share an id).

    Args:
        answers: G extracted answers (from :func:`extract_answer`); None = unparseable.
        method: ``"key"`` groups by :func:`answer_key` (exact for numbers, O(G));
            ``"verify"`` adds math-verify for non-numeric answers: each answer joins the first
            cluster whose *first member* it is equivalent to (the greedy rule of Kuhn et al.;
            O(G·C) comparisons for C clusters).
        unparseable: ``"singleton"`` (default) gives every None its own cluster; ``"shared"``
            puts all None answers in one cluster. The default treats failures to answer as
            disagreeing with everything, so G unparseable samples get maximal semantic entropy
            (log G) and no agreement, rather than looking perfectly consistent; unparseable
            answers are graded wrong, so "consistent" would predict the opposite of the truth.

    Returns:
        G ints, numbered 0, 1, … in order of each cluster's first appearance.
    """
    if method not in ("key", "verify"):
        raise EntrolabError(f"unknown cluster method {method!r}; use 'key' or 'verify'")
    if unparseable not in ("singleton", "shared"):
        raise EntrolabError(f"unparseable must be 'singleton' or 'shared', got {unparseable!r}")
    ids: list[int] = []
    by_key: dict[str, int] = {}
    firsts: list[tuple[int, str, bool]] = []  # (cluster id, first member, is numeric)
    shared_none: int | None = None
    n_clusters = 0
    for a in answers:
        if a is None:
            if unparseable == "shared" and shared_none is not None:
                ids.append(shared_none)
                continue
            ids.append(n_clusters)
            if unparseable == "shared":
                shared_none = n_clusters
            n_clusters += 1
            continue
        key = answer_key(a)
        cid = by_key.get(key)
        if cid is None and method == "verify":
            numeric_a = to_fraction(a) is not None
            for c, first, numeric in firsts:
                if numeric and numeric_a:
                    continue  # two numbers with different keys are never equivalent
                if _mv_equivalent(_prepare(a), _prepare(first)):
                    cid = c
                    break
        if cid is None:
            cid = n_clusters
            n_clusters += 1
            firsts.append((cid, a, to_fraction(a) is not None))
        by_key.setdefault(key, cid)
        ids.append(cid)
    return ids
