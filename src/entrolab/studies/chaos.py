"""Multi-sample evaluation under paraphrase (Stochastic CHAOS, Joshi et al., arXiv 2601.07239;
spec B17): what greedy single-sample evaluation hides.

Per item i, paraphrase p (P ≥ 1 prompts; p = 0 is the original) and sample j (K samples at a
temperature), with c_ipj = 1 if sample j is correct:

* pass@k: unbiased ``1 − C(n − c, k) / C(n, k)`` per (item, paraphrase) (Chen et al. 2021),
  averaged; maj@k: the most frequent answer of the K samples (first seen wins ties) is right;
* P(fail) under perturbation: per item ``1 − mean_j c_ipj`` averaged over paraphrases (mean) and
  its maximum over paraphrases (worst case);
* per-item correct rate ``r_i = mean_{p,j} c_ipj``: its variance and the fragile fraction
  ``0 < r_i < 1``;
* tail risk: P(some sample is wrong with confidence ≥ ``confident``) when confidences are given;
* greedy-vs-sampled gap: greedy accuracy − mean r_i; disagreements: items where greedy is right
  but r_i < 0.5, and the reverse.

Every mean comes with a 95% bootstrap interval over items (the independent unit). The metrics
are pure numpy (:func:`chaos_metrics`); :func:`arithmetic_paraphrases` makes paraphrases by rule
for the built-in arithmetic prompts.

The resumable runner on the embedded model is ``bench/chaos.py``; ``entrolab eval
--paraphrases K`` (:mod:`entrolab.studies.paraphrase_eval`) computes the same metrics for any
task, with templates for reasoning-gym and model-written paraphrases for free text
(:mod:`entrolab.studies.paraphrase`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from entrolab.calibration import bootstrap_interval
from entrolab.errors import EntrolabError

__all__ = ["arithmetic_paraphrases", "chaos_metrics", "pass_at_k"]

_ARITH = re.compile(r"^What is (?P<expr>[-+*0-9 ]+)\?\s*(?P<rest>.*)$", re.S)
_TEMPLATES = (
    "What is {expr}? {rest}",
    "Compute {expr}. {rest}",
    "{expr} = ? {rest}",
    "Calculate the value of {expr}. {rest}",
    "Work out {expr}. {rest}",
)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: ``1 − C(n − c, k) / C(n, k)``."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise EntrolabError(f"need 1 ≤ k ≤ n and 0 ≤ c ≤ n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def arithmetic_paraphrases(prompt: str, count: int) -> list[str]:
    """``count`` prompts for a built-in arithmetic item: the original first, then rule-based
    rewordings (and, for a two-term sum or product, the commuted expression).

    Raises for a prompt that is not ``"What is <expression>? …"`` or a count < 1 or above the
    number of rules.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise EntrolabError(
            f"paraphrase count must be an int ≥ 1 (1 = original only), got {count!r}"
        )
    m = _ARITH.match(prompt.strip())
    if m is None:
        raise EntrolabError(
            "rule-based paraphrases need a built-in arithmetic prompt ('What is <expr>? …'); "
            f"got {prompt[:60]!r}"
        )
    expr, rest = m.group("expr").strip(), m.group("rest").strip()
    out = [prompt.strip()] + [t.format(expr=expr, rest=rest).strip() for t in _TEMPLATES[1:]]
    terms = re.fullmatch(r"(\d+) ([+*]) (\d+)", expr)
    if terms:
        out.insert(1, _TEMPLATES[0].format(expr=f"{terms[3]} {terms[2]} {terms[1]}", rest=rest))
    if count > len(out):
        raise EntrolabError(f"at most {len(out)} rule-based paraphrases exist for {expr!r}")
    return out[:count]


def _majority(keys: Sequence[Any]) -> Any:
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(k for k in keys if k is not None and counts[k] == best)


def _iv(values: np.ndarray) -> dict[str, float]:
    iv = bootstrap_interval(lambda x: x.mean(axis=1), values, vectorized=True, n_boot=2000)
    return {"mean": iv.estimate, "low": iv.low, "high": iv.high}


def chaos_metrics(
    greedy_correct: Any,
    sample_correct: Any,
    *,
    sample_answers: Sequence[Sequence[Sequence[Any]]] | None = None,
    reference: Sequence[Any] | None = None,
    sample_confidence: Any = None,
    confident: float = 0.9,
    k: int | None = None,
) -> dict[str, Any]:
    """The multi-sample metrics of the module docstring.

    Args:
        greedy_correct: [N] 0/1, greedy answer to the original prompt correct.
        sample_correct: [N, P, K] 0/1 (P paraphrases incl. the original, K samples each).
        sample_answers: optional [N][P][K] answer keys (None = unparseable) for maj@k, with
            ``reference`` [N] the reference keys.
        sample_confidence: optional [N, P, K] confidences in [0, 1] for the tail risk.
        confident: confidence at or above which a wrong sample counts as wrong-and-confident.
        k: pass@k's k (default K).
    Returns:
        a JSON-friendly dict; means are ``{"mean", "low", "high"}``.
    """
    g = np.asarray(greedy_correct, dtype=np.float64)
    c = np.asarray(sample_correct, dtype=np.float64)
    if c.ndim != 3 or g.ndim != 1 or c.shape[0] != g.shape[0]:
        raise EntrolabError(
            f"greedy_correct must be [N] and sample_correct [N, P, K] with the same N; got "
            f"{g.shape} and {c.shape}"
        )
    n_items, n_para, n_samp = c.shape
    if n_items < 2:
        raise EntrolabError("need at least 2 items for intervals over items")
    k = n_samp if k is None else k
    rate = c.mean(axis=(1, 2))
    fail_p = 1.0 - c.mean(axis=2)  # [N, P]
    passk = np.array(
        [np.mean([pass_at_k(n_samp, int(c[i, p].sum()), k) for p in range(n_para)])
         for i in range(n_items)]
    )  # fmt: skip
    out: dict[str, Any] = {
        "n_items": n_items,
        "paraphrases": n_para,
        "samples": n_samp,
        "k": k,
        "greedy_accuracy": _iv(g),
        "sampled_accuracy": _iv(rate),
        "greedy_minus_sampled": _iv(g - rate),
        f"pass@{k}": _iv(passk),
        "p_fail_mean": _iv(fail_p.mean(axis=1)),
        "p_fail_worst": _iv(fail_p.max(axis=1)),
        "fragile_fraction": _iv(((rate > 0) & (rate < 1)).astype(np.float64)),
        "rate_variance": float(rate.var()),
        "greedy_right_sampled_below_half": np.flatnonzero((g == 1) & (rate < 0.5)).tolist(),
        "greedy_wrong_sampled_above_half": np.flatnonzero((g == 0) & (rate >= 0.5)).tolist(),
    }
    if sample_answers is not None:
        if reference is None or len(reference) != n_items or len(sample_answers) != n_items:
            raise EntrolabError("sample_answers needs one [P][K] list and one reference per item")
        maj = np.array(
            [np.mean([_majority(sample_answers[i][p]) == reference[i] for p in range(n_para)])
             for i in range(n_items)]
        )  # fmt: skip
        out[f"maj@{n_samp}"] = _iv(maj)
    if sample_confidence is not None:
        conf = np.asarray(sample_confidence, dtype=np.float64)
        if conf.shape != c.shape:
            raise EntrolabError(f"sample_confidence must be {c.shape}, got {conf.shape}")
        tail = ((c == 0) & (conf >= confident)).any(axis=(1, 2)).astype(np.float64)
        out["tail_risk"] = _iv(tail)
    return out
