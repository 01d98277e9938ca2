"""Degeneracy checks: settings under which a method silently collapses onto another one.

Pure functions over settings (or finished results) that return one-line warnings (``None``/empty
when the setting is fine); the CLI prints them before work starts. Cases:

* a DeepConf window (tokens) ≥ the longest possible reply: there is one window per reply, so the
  lowest-window, bottom-10%-window and tail confidences all equal the mean confidence — the four
  ``deepconf_*`` estimators give identical scores and the DeepConf voters collapse onto
  ``mean_confidence_weighted``;
* ``deepconf-online`` with ``budget ≤ warmup``: every trace is a warm-up trace, none is stopped
  early, so it spends exactly majority's tokens and votes over the same traces;
* a top-η filter that keeps one trace of ``budget`` (``deepconf-offline``'s top 10% below 20
  traces): the answer is the single most confident trace's, not a vote;
* nearly all replies unparseable (a temperature too high for the model, or too few tokens): the
  accuracy measures parsing, not the method. This one needs replies, so it is checked on the
  first finished items (no extra generation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Share of unparseable replies from which :func:`unparseable_warning` fires.
UNPARSEABLE_SHARE = 0.9

#: The DeepConf estimators whose window collapses them onto ``deepconf_mean``.
DEEPCONF_ESTIMATORS = ("deepconf_mean", "deepconf_lowest", "deepconf_bottom10", "deepconf_tail")


def window_warning(what: str, window: int, max_reply_tokens: int) -> str | None:
    """Warn when a confidence window of ``window`` tokens covers a whole reply of at most
    ``max_reply_tokens`` tokens (lowest/bottom-10%/tail window confidence = mean confidence)."""
    if window < max_reply_tokens:
        return None
    return (
        f"{what}: window {window} tokens >= the longest reply ({max_reply_tokens} tokens), so the "
        "lowest-, bottom-10%- and tail-window confidences all equal the mean confidence; "
        f"use a window below {max_reply_tokens} tokens or longer replies"
    )


def warmup_warning(budget: int, warmup: int) -> str | None:
    """Warn when ``deepconf-online``'s budget (traces per item) leaves no trace after warm-up."""
    if budget > warmup:
        return None
    return (
        f"deepconf-online: budget {budget} <= warmup {warmup}, so every trace is a warm-up trace "
        f"and none is stopped early: it spends majority@{budget}'s tokens on the same traces; "
        f"use budget > warmup (or a smaller warmup)"
    )


def kept_by_filter(budget: int, top: float) -> int:
    """How many of ``budget`` traces with distinct scores the top-``top`` filter keeps
    (:func:`~entrolab.inference.voting.filter_top`'s percentile cut)."""
    from entrolab.inference.voting import filter_top

    return sum(filter_top([float(i) for i in range(budget)], top))


def filter_warning(what: str, voter: str, budget: int, top: float | None) -> str | None:
    """Warn when voter ``voter``'s top-``top`` filter keeps a single trace of ``budget``."""
    if top is None or budget < 1 or kept_by_filter(budget, top) > 1:
        return None
    need = next(b for b in range(budget + 1, 10**6) if kept_by_filter(b, top) > 1)
    return (
        f"{what}: voter {voter} keeps the top {top:.0%} of {budget} traces = 1 trace, so the "
        f"answer is the single most confident trace's, not a vote; use budget >= {need} or "
        "voter=bottom_window_weighted"
    )


def unparseable_warning(
    answers: Sequence[str | None], share: float = UNPARSEABLE_SHARE
) -> str | None:
    """Warn when at least ``share`` of the replies gave no parseable answer (``None`` keys)."""
    if not answers:
        return None
    bad = sum(a is None for a in answers)
    if bad / len(answers) < share:
        return None
    return (
        f"{bad} of {len(answers)} replies have no parseable answer: the accuracy measures parsing, "
        "not the method; lower temperature or raise max_new_tokens"
    )


def strategy_warnings(strategy: Any) -> list[str]:
    """Every settings-level warning for a built strategy (``make_strategy``'s result).

    Reads the attributes the registered strategies have (``budget``, ``warmup``, ``voter``,
    ``window``, ``sampling.max_new_tokens``); a strategy without them gets no warning.
    """
    from entrolab.inference.voting import get_voter

    name = str(getattr(strategy, "name", type(strategy).__name__))
    out: list[str | None] = []
    budget = getattr(strategy, "budget", None)
    window = getattr(strategy, "window", None)
    sampling = getattr(strategy, "sampling", None)
    max_new = getattr(sampling, "max_new_tokens", None)
    voter = getattr(strategy, "voter", None)
    rule = get_voter(voter) if isinstance(voter, str) else None
    uses_window = name == "deepconf-online" or (rule is not None and rule.score is not None)
    if uses_window and isinstance(window, int) and isinstance(max_new, int):
        out.append(window_warning(name, window, max_new))
    if name == "deepconf-online" and isinstance(budget, int):
        out.append(warmup_warning(budget, int(getattr(strategy, "warmup", 0))))
    if rule is not None and isinstance(budget, int):
        out.append(filter_warning(name, str(voter), budget, rule.top))
    return [w for w in out if w]


def estimator_warnings(
    names: Sequence[str], params: Mapping[str, Mapping[str, Any]], max_new_tokens: int
) -> list[str]:
    """Window warnings for the ``deepconf_*`` estimators among ``names`` at a reply budget of
    ``max_new_tokens`` (``params``: per-estimator overrides; the registered default window
    otherwise). One line covers all of them, since they collapse together."""
    from entrolab.estimators import ESTIMATORS

    hit = []
    for name in names:
        if name not in DEEPCONF_ESTIMATORS:
            continue
        window = int(params.get(name, {}).get("window", ESTIMATORS.entry(name).defaults["window"]))
        if window_warning(name, window, max_new_tokens) is not None:
            hit.append((name, window))
    if not hit:
        return []
    window = min(w for _, w in hit)
    line = window_warning(", ".join(n for n, _ in hit), window, max_new_tokens)
    return [f"{line}; these estimators then give identical scores"]
