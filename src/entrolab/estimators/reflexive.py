"""Reflexive estimators: the model is asked about its own confidence.

- ``verbalized_1stage``: one reply with an answer and a 0–100 % confidence (Xiong et al. 2024,
  "vanilla" prompt); u = 1 − c. The confidence refers to the answer in that reply, which may
  differ from the greedy answer; its texts are kept in the statistics.
- ``verbalized_2stage``: a follow-up turn after the greedy answer asks how likely it is correct
  (LM-Polygraph Verbalized2S: user question, assistant answer, user follow-up); u = 1 − c.
- ``linguistic_1stage``: one reply with a guess and a hedge phrase from :data:`HEDGE_LEXICON`
  (LM-Polygraph Linguistic1S); u = 1 − value of the phrase.
- ``ptrue``: teacher-forced log p("True") after "Question / Proposed answer / True or False?"
  (Kadavath et al. 2022); u = −log p(True).

Replies that state no confidence get ``EstimatorConfig.unparsed_confidence`` (0.5) and are
counted in ``meta["unparsed"]`` — never a silent NaN.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from entrolab.backends.base import Backend
from entrolab.estimators.base import register
from entrolab.estimators.stats import StatContext, statistic

__all__ = [
    "EXTENDED_LEXICON",
    "HEDGE_LEXICON",
    "LINGUISTIC_1STAGE",
    "PTRUE_PROMPT",
    "VERBALIZED_1STAGE",
    "VERBALIZED_2STAGE",
    "linguistic_confidence",
    "parse_confidence",
    "parse_stated_confidence",
    "verdict_class",
]

_XIONG = "Xiong et al. 2024, Can LLMs Express Their Uncertainty?, arXiv:2306.13063"
_TAO = "Tao et al. 2025, Can LLMs Express Uncertainty Like Human?, arXiv:2509.24202"
_KADAVATH = "Kadavath et al. 2022, Language Models (Mostly) Know What They Know, arXiv:2207.05221"

#: Hedge phrase → confidence. The 17 phrases and values of LM-Polygraph's Linguistic1S lexicon
#: (spec B12), which are the "words of estimative probability" of Kent (1964) with values near
#: the medians of Fagen-Ulmschneider's "Perception of Probability Words" survey (as recalled; the
#: survey itself was not re-checked). Spelling fixed: LM-Polygraph has "We Beleive".
HEDGE_LEXICON: Mapping[str, float] = {
    "almost certain": 0.95,
    "highly likely": 0.9,
    "very good chance": 0.8,
    "we believe": 0.75,
    "probably": 0.7,
    "probable": 0.7,
    "likely": 0.7,
    "better than even": 0.6,
    "about even": 0.5,
    "probably not": 0.25,
    "we doubt": 0.2,
    "unlikely": 0.2,
    "little chance": 0.1,
    "chances are slight": 0.1,
    "improbable": 0.1,
    "highly unlikely": 0.05,
    "almost no chance": 0.02,
}
#: entrolab's additions for everyday hedges, each set to the value of the closest phrase above.
EXTENDED_LEXICON: Mapping[str, float] = {
    **HEDGE_LEXICON,
    "certain": 0.95,
    "definitely": 0.95,
    "very likely": 0.9,
    "i believe": 0.75,
    "i think": 0.75,
    "maybe": 0.5,
    "perhaps": 0.5,
    "possibly": 0.5,
    "not sure": 0.5,
    "i doubt": 0.2,
    "very unlikely": 0.05,
}

VERBALIZED_1STAGE = (
    "Answer the question below, then state how confident you are that your answer is correct, "
    "as a percentage from 0 to 100.\nReply in exactly this format:\nAnswer: <your answer>\n"
    "Confidence: <number>%\n\nQuestion: {question}"
)
VERBALIZED_2STAGE = (
    "How likely is it that your answer above is correct? Reply with only a number from 0 to 100 "
    "(percent)."
)
LINGUISTIC_1STAGE = (
    "Give your best guess for the question below, and say how likely it is that your guess is "
    "correct using exactly one of these expressions:\n{expressions}\n\nReply only in this "
    "format:\nGuess: <short answer>\nConfidence: <one expression>\n\nThe question is: {question}"
)
PTRUE_PROMPT = (
    "Question: {question}\nProposed answer: {answer}\nIs the proposed answer True or False? "
    "Reply with one word: True or False."
)

# ------------------------------------------------------------------------- parsing

_WORD_VALUES = {
    **{
        w: i
        for i, w in enumerate(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen sixteen seventeen eighteen nineteen".split()
        )
    },
    **{
        w: 10 * i
        for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)
    },
}
_WORD = "|".join(sorted(_WORD_VALUES, key=len, reverse=True)) + "|hundred"
_LABEL = r"(?:confidence|confident|probability|certainty|likelihood|chance)"
_SCALE = r"\s*(%|percent|per cent|/\s*100|/\s*10\b|out of 100|out of 10\b)?"
_NUM = r"(\d+(?:\.\d+)?)(?!\s*(?:-|–|to|and)\s*\d)"  # not the start of a range "0-100"
_LABELED = re.compile(_LABEL + r"[^0-9\n]{0,30}?" + _NUM + _SCALE, re.I)
_PERCENT = re.compile(_NUM + r"\s*(%|percent|per cent)", re.I)
_WORDS = re.compile(rf"\b((?:{_WORD})(?:[\s-]+(?:{_WORD}))*)\b\s*(%|percent|per cent)?", re.I)
_QUALITATIVE = {
    "very high": 0.9,
    "high": 0.8,
    "medium": 0.5,
    "moderate": 0.5,
    "low": 0.3,
    "very low": 0.1,
}
_QUAL = "very high|very low|high|medium|moderate|low"
_QUAL_AFTER = re.compile(rf"{_LABEL}(?:\s+level)?\s*(?:is|:|of|=|-)?\s*({_QUAL})\b", re.I)
_QUAL_BEFORE = re.compile(rf"\b({_QUAL})(?:ly)?\s+(?:confidence|confident|certainty)", re.I)
_RANGE_START = re.compile(r"\d\s*(?:-|–|to|and)\s*$")
_BARE = re.compile(r"^\W*(\d+(?:\.\d+)?)" + _SCALE + r"\W*$", re.I)


def _scaled(
    value: float, unit: str | None, raw: str = "", bare_scale: float | None = None
) -> float | None:
    """``value`` (written ``raw``) with ``unit`` as a confidence in [0, 1], or None if outside.

    Unit-less numbers: with ``bare_scale`` k (the prompt asked for "x/k"), a number up to k is
    x/k unless it is a decimal below 1 ("0.8" stays 0.8); otherwise ≤ 1 as is, above as a %.
    """
    unit = (unit or "").lower().replace(" ", "")
    if unit in ("%", "percent", "/100", "outof100"):
        v = value / 100
    elif unit in ("/10", "outof10"):
        v = value / 10
    elif bare_scale is not None and value <= bare_scale and (value >= 1 or "." not in raw):
        v = value / bare_scale
    else:
        v = value if value <= 1 else value / 100
    return v if 0.0 <= v <= 1.0 else None


def _words_to_number(words: str) -> int | None:
    total = 0
    for w in re.split(r"[\s-]+", words.lower()):
        if w == "hundred":
            total = max(total, 1) * 100
        elif w in _WORD_VALUES:
            total += _WORD_VALUES[w]
        else:
            return None
    return total


def parse_confidence(
    text: str, *, allow_bare: bool = True, bare_scale: float | None = None
) -> float | None:
    """A confidence in [0, 1] stated in ``text``, or None.

    Tried in order: a labelled number ("Confidence: 80%", "probability 0.8", "8/10"); a
    percentage ("90% sure"); number words before "percent" or after a label ("eighty percent");
    a qualitative level tied to a label ("confidence: high" → 0.8, see ``_QUALITATIVE``); and,
    when ``allow_bare``, a reply that is only a number ("80" → 0.8, "0.8"). Numbers above 1
    without a unit are read as percentages; values outside [0, 1] are rejected, and so are the
    ends of a range ("a number (0-100)", "between 0 and 100%"), which replies often echo.

    ``bare_scale``: the denominator of unit-less numbers when the prompt asked for a k-point
    scale ("Confidence: k/10" → ``bare_scale=10``): then "Confidence: 7" and a bare "7" are
    7/10 = 0.7 rather than 7 %. A decimal below 1 ("0.8") is still a probability and a number
    above the scale ("80") still a percentage. None (default): the percentage reading above.
    """
    text = text or ""
    for m in _LABELED.finditer(text):
        v = _scaled(float(m.group(1)), m.group(2), m.group(1), bare_scale)
        if v is not None and not _RANGE_START.search(text[: m.start(1)]):
            return v
    for m in _PERCENT.finditer(text):
        v = _scaled(float(m.group(1)), "%")
        if v is not None and not _RANGE_START.search(text[: m.start(1)]):
            return v
    for m in _WORDS.finditer(text):
        number = _words_to_number(m.group(1))
        labeled = re.search(_LABEL + r"\W{0,12}$", text[: m.start()], re.I)
        if number is not None and (m.group(2) or labeled):
            v = _scaled(float(number), m.group(2) or None, str(number), bare_scale)
            if v is not None:
                return v
    m = _QUAL_AFTER.search(text) or _QUAL_BEFORE.search(text)
    if m:
        return _QUALITATIVE[m.group(1).lower()]
    if allow_bare and (m := _BARE.match(text.strip())):
        return _scaled(float(m.group(1)), m.group(2), m.group(1), bare_scale)
    return None


_STATED = re.compile(r"confidence\s*[:=]\s*\d", re.I)


def parse_stated_confidence(text: str, *, bare_scale: float | None = 10) -> float | None:
    """The confidence of the first "Confidence: <number>" line of ``text``, read by
    :func:`parse_confidence` with ``bare_scale`` (default 10: SaySelf's "Confidence: k/10", so
    "Confidence: 3" → 0.3, "3/10" → 0.3, "30%" → 0.3, "75" → 0.75 as it is above the scale,
    "0.8" → 0.8); with no such line, :func:`parse_confidence` of the whole text without bare
    numbers. The line first: a chain's "the probability is 3/8" is not the confidence.
    None when nothing in [0, 1] is stated."""
    text = text or ""
    m = _STATED.search(text)
    part = text if m is None else text[m.start() :].split("\n", 1)[0]
    return parse_confidence(part, allow_bare=False, bare_scale=bare_scale)


def _lexicon_pattern(lexicon: Mapping[str, float]) -> re.Pattern[str]:
    phrases = sorted(lexicon, key=len, reverse=True)  # "probably not" before "probably"
    return re.compile(r"\b(" + "|".join(re.escape(p) for p in phrases) + r")\b", re.I)


def linguistic_confidence(text: str, lexicon: Mapping[str, float] = HEDGE_LEXICON) -> float | None:
    """Value of the first hedge phrase of ``lexicon`` in ``text`` (after a "Confidence:" label
    when there is one), longest phrase first at a position; None if none occurs."""
    text = text or ""
    pattern = _lexicon_pattern({k.lower(): v for k, v in lexicon.items()})
    label = re.search(r"confidence\s*:", text, re.I)
    for part in (text[label.end() :], text) if label else (text,):
        m = pattern.search(part)
        if m:
            return float({k.lower(): v for k, v in lexicon.items()}[m.group(1).lower()])
    return None


_TRUE_WORDS = frozenset({"true", "yes", "correct", "right"})
_FALSE_WORDS = frozenset({"false", "no", "incorrect", "wrong"})


def verdict_class(token_text: str) -> str | None:
    """``"true"`` / ``"false"`` for a verdict token such as " True", "yes"; None otherwise."""
    word = re.sub(r"[^a-z]", "", token_text.lower())
    return "true" if word in _TRUE_WORDS else "false" if word in _FALSE_WORDS else None


# ----------------------------------------------------------------------- statistics


def _reply_stat(ctx: StatContext, name: str, texts: list[str], values: list[float | None]) -> dict:
    parsed = np.array([v is not None for v in values])
    fallback = ctx.config.unparsed_confidence
    conf = np.array([fallback if v is None else v for v in values], dtype=np.float64)
    ctx.meta.setdefault("unparsed", {})[name] = int((~parsed).sum())
    return {"texts": texts, "confidence": conf, "parsed": parsed}


def _generate(
    ctx: StatContext, prompts: list[str], max_new: int, chat: bool | None = None
) -> list[str]:
    """Greedy replies to ``prompts`` (``chat`` overrides the run's chat-template setting)."""
    changes: dict[str, Any] = {"num_samples": 1, "temperature": 0.0, "max_new_tokens": max_new}
    if chat is not None:
        changes["chat_template"] = chat
    return [t.text for t in ctx.backend.generate(prompts, ctx.config.generation(**changes))]


@statistic("verbalized_1stage", summary="1-stage answer + verbalized confidence replies")
def _verbalized_1stage(ctx: StatContext, stats: Mapping[str, Any]) -> dict:
    budget = ctx.config.reflexive_max_new_tokens or ctx.config.max_new_tokens
    texts = _generate(ctx, [VERBALIZED_1STAGE.format(question=q) for q in ctx.prompts], budget)
    values = [parse_confidence(t, allow_bare=False) for t in texts]
    return _reply_stat(ctx, "verbalized_1stage", texts, values)


def _follow_up_prompts(
    ctx: StatContext, answers: Sequence[str], follow_up: str
) -> tuple[list[str], bool]:
    """Prompts for a follow-up turn after each answer: rendered with the backend's chat template
    when it has one (then generated without re-templating), else flattened into one message."""
    tok = getattr(ctx.backend, "tokenizer", None)
    if ctx.config.chat_template and getattr(tok, "chat_template", None):
        out = []
        for q, a in zip(ctx.prompts, answers, strict=True):
            msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            msgs.append({"role": "user", "content": follow_up})
            if ctx.config.system_prompt:
                msgs.insert(0, {"role": "system", "content": ctx.config.system_prompt})
            out.append(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
        return out, False
    flat = [
        f"Question: {q}\nYour answer: {a}\n\n{follow_up}"
        for q, a in zip(ctx.prompts, answers, strict=True)
    ]
    return flat, ctx.config.chat_template


@statistic("verbalized_2stage", deps={"greedy_texts"}, summary="follow-up confidence replies")
def _verbalized_2stage(ctx: StatContext, stats: Mapping[str, Any]) -> dict:
    prompts, chat = _follow_up_prompts(ctx, stats["greedy_texts"], VERBALIZED_2STAGE)
    texts = _generate(ctx, prompts, ctx.config.confidence_max_new_tokens, chat)
    return _reply_stat(ctx, "verbalized_2stage", texts, [parse_confidence(t) for t in texts])


@statistic("linguistic_1stage", summary="1-stage guess + hedge-phrase replies")
def _linguistic_1stage(ctx: StatContext, stats: Mapping[str, Any]) -> dict:
    budget = ctx.config.reflexive_max_new_tokens or ctx.config.max_new_tokens
    expressions = "\n".join(p.title() for p in HEDGE_LEXICON)
    prompts = [LINGUISTIC_1STAGE.format(question=q, expressions=expressions) for q in ctx.prompts]
    texts = _generate(ctx, prompts, budget)
    return _reply_stat(ctx, "linguistic_1stage", texts, [linguistic_confidence(t) for t in texts])


def _token_text(backend: Backend, token_id: int) -> str | None:
    tok = getattr(backend, "tokenizer", None)
    if tok is not None:
        return tok.decode([token_id])
    vocab = getattr(backend, "vocab", None)
    return vocab[token_id] if vocab is not None and 0 <= token_id < len(vocab) else None


@statistic(
    "ptrue",
    deps={"greedy_texts"},
    backend_methods=("score",),
    summary="log p(True), log p(False) after the P(True) prompt, and the verdict top-k [N]",
)
def _ptrue(ctx: StatContext, stats: Mapping[str, Any]) -> dict:
    prompts = [
        PTRUE_PROMPT.format(question=q, answer=a.strip())
        for q, a in zip(ctx.prompts, stats["greedy_texts"], strict=True)
    ]
    n = len(prompts)
    k = ctx.config.topk_logprobs
    both = ["True"] * n + ["False"] * n
    scored = list(ctx.backend.score(prompts + prompts, both, k=k, **ctx.score_kwargs()))
    logp_true = np.array([float(t.logprob.double().sum()) for t in scored[:n]])
    logp_false = np.array([float(t.logprob.double().sum()) for t in scored[n:]])
    # verdict mass and the classes of the two most likely first tokens (PCC certainty)
    mass = np.zeros((n, 2))
    top2: list[tuple[str | None, str | None]] = []
    for i, t in enumerate(scored[:n]):
        classes = [verdict_class(_token_text(ctx.backend, int(j)) or "") for j in t.topk_ids[0]]
        probs = t.topk_logprobs[0].double().exp().numpy()
        for c, p in zip(classes, probs, strict=True):
            if c is not None:
                mass[i, 0 if c == "true" else 1] += p
        top2.append((classes[0] if classes else None, classes[1] if len(classes) > 1 else None))
    # a verdict token outside the top-k is still counted through its exact score
    mass[:, 0] = np.maximum(mass[:, 0], np.exp(logp_true))
    mass[:, 1] = np.maximum(mass[:, 1], np.exp(logp_false))
    return {"logp_true": logp_true, "logp_false": logp_false, "p_verdict": mass, "top2": top2}


# ----------------------------------------------------------------------- estimators


def _one_minus(stat: str, name: str, summary: str, paper: str) -> None:
    def fn(stats: Mapping[str, Any]) -> np.ndarray:
        return 1.0 - np.asarray(stats[stat]["confidence"], dtype=np.float64)

    fn.__name__ = fn.__qualname__ = name
    register(name, level="sequence", needs={stat}, summary=summary, paper=paper)(fn)


_one_minus(
    "verbalized_1stage",
    "verbalized_1stage",
    "u = 1 − confidence stated with the answer (one reply)",
    _XIONG,
)
_one_minus(
    "verbalized_2stage",
    "verbalized_2stage",
    "u = 1 − confidence stated in a follow-up turn after the greedy answer",
    _XIONG,
)
_one_minus(
    "linguistic_1stage",
    "linguistic_1stage",
    "u = 1 − value of the hedge phrase stated with the guess",
    _TAO,
)


@register(
    "ptrue",
    level="sequence",
    needs={"ptrue"},
    aliases=("p_true",),
    summary="u = −log p(True) for 'is the proposed (greedy) answer True or False?' (nats)",
    paper=_KADAVATH,
)
def ptrue(stats: Mapping[str, Any]) -> np.ndarray:
    return -np.asarray(stats["ptrue"]["logp_true"], dtype=np.float64)
