"""Confidence-aware reward terms added to the verifier reward (registry :data:`REWARD_TERMS`,
kind ``"rewards"``; also reachable as ``entrolab.rl.rewards.REWARD_TERMS``).

A term is ``term_fn(inputs: RewardInputs, **params) -> Tensor [R]`` (float64, one value per
reply), registered as a :class:`RewardTerm` that declares which inputs it ``requires``. The
trainer adds ``weight · term`` to each reply's verifier reward (``reward.terms`` maps names to
params, ``weight`` default 1.0), so a term enters GRPO as an ordinary scalar reward: no gradient
flows through the entropies or confidences it reads.

* ``pear`` (Huang et al. 2025, arXiv:2510.08026): ``−α·H̄_think + β·H̄_answer``, the mean token
  entropies (behaviour policy, sampling temperature) of the thinking phase (tokens before the
  end of a delimiter such as ``</think>``, :func:`entrolab.signals.phase_mask`) and of the answer
  phase after it. A reply without the delimiter is all thinking. The exact form and α, β are not
  in the paper's text we could read and the official repository could not be fetched here [U];
  defaults α 0.1, β 0.05.
* ``confidence_reward``: a calibration reward on a verbalised confidence c ∈ [0, 1] read off the
  reply's first "Confidence:" line by :func:`entrolab.estimators.reflexive.
  parse_stated_confidence` on the scale ``bare_scale`` (default 10, the "Confidence: k/10" the
  recipes ask for: "8/10" and a bare "8" → 0.8, "80%" → 0.8; ``null`` for prompts that ask for a
  percentage, then a bare "8" is 8 %), y = 1 if the verifier accepts the reply else 0:

  - ``brier`` with ``form="sayself"``: ``1 − 2(y − c)²`` ∈ [−1, 1] (SaySelf ``calculate_reward``,
    Xu et al. 2024, arXiv:2405.20974); ``form="hyperclick"``: ``1 − (c − y)²`` ∈ [0, 1]
    (HyperClick, arXiv:2510.27266);
  - ``linear``: ``c`` if correct else ``−c`` (the variant left commented out in SaySelf's code);
  - ``log``: ``y·log c + (1 − y)·log(1 − c)`` with c clipped to [ε, 1 − ε] (log score).

  A reply with no parseable confidence gets ``missing`` (default: the kind's minimum).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from entrolab.errors import EntrolabError
from entrolab.registry import Registry

__all__ = [
    "REWARD_TERMS",
    "RewardInputs",
    "RewardTerm",
    "apply_reward_terms",
    "check_reward_terms",
    "confidence_reward",
    "confidence_score",
    "pear",
    "phase_entropies",
    "rollout_reward_terms",
]


@dataclass(frozen=True)
class RewardInputs:
    """What a reward term may read, for R replies.

    Attributes:
        texts: the R replies. correct: bool [R], the verifier's verdicts.
        response_mask: bool [R, T]. entropy: float [R, T] token entropies (nats), behaviour
            policy at the sampling temperature. pieces: R lists of token texts.
    """

    texts: Sequence[str]
    correct: Tensor | None = None
    response_mask: Tensor | None = None
    entropy: Tensor | None = None
    pieces: Sequence[Sequence[str]] | None = None

    def need(self, name: str, term: str) -> Any:
        value = getattr(self, name)
        if value is None:
            hint = (
                " (custom reward functions give no verdicts; use the task's verifier)"
                if name == "correct"
                else ""
            )
            raise EntrolabError(f"reward term {term!r} needs {name!r}{hint}")
        return value


@dataclass(frozen=True)
class RewardTerm:
    """A registered reward term and the :class:`RewardInputs` fields it reads."""

    fn: Callable[..., Tensor]
    requires: frozenset[str]

    def __call__(self, inputs: RewardInputs, **params: Any) -> Tensor:
        return self.fn(inputs, **params)


#: name → :class:`RewardTerm`.
REWARD_TERMS: Registry[RewardTerm] = Registry("rewards")


# ------------------------------------------------------------------------------------- PEAR
def phase_entropies(
    entropy: Tensor, mask: Tensor, pieces: Sequence[Sequence[str]], delimiter: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean entropy of the thinking and answer phases of each reply, and the answer-phase token
    count: ``[R, T]`` → three ``[R]`` float64 tensors (a phase without tokens has mean 0)."""
    from entrolab.signals import phase_mask

    r = entropy.shape[0]
    think, answer, n_answer = (torch.zeros(r, dtype=torch.float64) for _ in range(3))
    for i in range(r):
        n = int(mask[i].sum())
        h = entropy[i, :n].detach().to(torch.float64)
        ans = phase_mask(list(pieces[i])[:n], delimiter)
        if len(ans) != n:
            raise EntrolabError(f"reply {i}: {len(ans)} token texts for {n} tokens")
        if bool((~ans).any()):
            think[i] = h[~ans].mean()
        if bool(ans.any()):
            answer[i] = h[ans].mean()
        n_answer[i] = float(ans.sum())
    return think, answer, n_answer


def pear(
    inputs: RewardInputs, *, alpha: float = 0.1, beta: float = 0.05, delimiter: str = "</think>"
) -> Tensor:
    """PEAR term ``−α·H̄_think + β·H̄_answer`` per reply (nats; see module doc) → ``[R]``."""
    if alpha < 0 or beta < 0:
        raise EntrolabError("pear: alpha and beta must be >= 0")
    h = inputs.need("entropy", "pear")
    mask = inputs.need("response_mask", "pear")
    think, answer, _ = phase_entropies(h, mask, inputs.need("pieces", "pear"), delimiter)
    return -alpha * think + beta * answer


# -------------------------------------------------------------------------- confidence reward
CONFIDENCE_KINDS = ("brier", "linear", "log")


def confidence_score(
    confidence: Tensor,
    correct: Tensor,
    *,
    kind: str = "brier",
    form: str = "sayself",
    eps: float = 1e-3,
) -> Tensor:
    """The calibration reward of confidences ``c`` [R] ∈ [0, 1] given correctness ``y`` [R]."""
    c = confidence.to(torch.float64)
    y = correct.to(torch.float64)
    if kind == "brier":
        if form == "sayself":
            return 1.0 - 2.0 * (y - c) ** 2
        if form == "hyperclick":
            return 1.0 - (c - y) ** 2
        raise EntrolabError(
            f"confidence_reward: form must be 'sayself' or 'hyperclick', got {form!r}"
        )
    if kind == "linear":
        return torch.where(y > 0, c, -c)
    if kind == "log":
        cc = c.clamp(eps, 1 - eps)
        return y * torch.log(cc) + (1 - y) * torch.log1p(-cc)
    raise EntrolabError(
        f"confidence_reward: kind must be one of {', '.join(CONFIDENCE_KINDS)}, got {kind!r}"
    )


def _kind_minimum(kind: str, form: str, eps: float) -> float:
    if kind == "brier":
        return -1.0 if form == "sayself" else 0.0
    if kind == "linear":
        return -1.0
    return math.log(eps)


def parsed_confidences(texts: Sequence[str], bare_scale: float | None = 10) -> list[float | None]:
    """The verbal confidence stated in each reply (None where none parses); unit-less numbers
    are k/``bare_scale`` (see :func:`~entrolab.estimators.reflexive.parse_stated_confidence`)."""
    from entrolab.estimators.reflexive import parse_stated_confidence

    return [parse_stated_confidence(t or "", bare_scale=bare_scale) for t in texts]


def confidence_reward(
    inputs: RewardInputs,
    *,
    kind: str = "brier",
    form: str = "sayself",
    missing: float | None = None,
    eps: float = 1e-3,
    bare_scale: float | None = 10,
) -> Tensor:
    """Calibration reward of each reply's stated confidence (module doc) → ``[R]``."""
    correct = inputs.need("correct", "confidence_reward").bool()
    conf = parsed_confidences(inputs.texts, bare_scale)
    if len(conf) != len(correct):
        raise EntrolabError("confidence_reward: one verdict per reply is needed")
    fallback = _kind_minimum(kind, form, eps) if missing is None else float(missing)
    c = torch.tensor([0.0 if v is None else v for v in conf], dtype=torch.float64)
    score = confidence_score(c, correct, kind=kind, form=form, eps=eps)
    has = torch.tensor([v is not None for v in conf], dtype=torch.bool)
    return torch.where(has, score, torch.full_like(score, fallback))


for _name, _fn, _req, _summary, _paper, _defaults in [
    (
        "pear",
        pear,
        ("entropy", "response_mask", "pieces"),
        "−α·mean thinking-phase entropy + β·mean answer-phase entropy (split at a delimiter)",
        "Huang et al. 2025, PEAR: Phase Entropy Aware Reward, arXiv:2510.08026",
        {"alpha": 0.1, "beta": 0.05, "delimiter": "</think>"},
    ),
    (
        "confidence_reward",
        confidence_reward,
        ("correct",),
        "calibration reward of a stated confidence: brier (SaySelf/HyperClick), linear or log",
        "Xu et al. 2024, SaySelf, arXiv:2405.20974; HyperClick, arXiv:2510.27266",
        {"kind": "brier", "form": "sayself", "missing": None, "eps": 1e-3, "bare_scale": 10},
    ),
]:
    REWARD_TERMS.register(_name, summary=_summary, paper=_paper, defaults=_defaults)(
        RewardTerm(_fn, frozenset(_req))
    )


def apply_reward_terms(
    terms: dict[str, dict[str, Any]],
    base: Tensor,
    *,
    texts: Sequence[str],
    correct: Tensor | None,
    entropy_fn: Callable[[], tuple[Tensor, Tensor]] | None = None,
    pieces_fn: Callable[[], Sequence[Sequence[str]]] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """``base + Σ weight·term`` over ``terms`` (name → params incl. ``weight``) → float32 [R],
    with ``reward/<name>`` metrics (mean term value). ``entropy_fn`` returns
    ``(entropy [R, T], mask [R, T])`` and ``pieces_fn`` the token texts, called only if needed."""
    total = base.to(torch.float64).clone()
    metrics: dict[str, float] = {}
    if not terms:
        return base, metrics
    needs = set().union(*(REWARD_TERMS.get(n).requires for n in terms))
    entropy = mask = pieces = None
    if needs & {"entropy", "response_mask"}:
        if entropy_fn is None:
            raise EntrolabError("these reward terms need token entropies of the rollout")
        entropy, mask = entropy_fn()
    if "pieces" in needs:
        if pieces_fn is None:
            raise EntrolabError("these reward terms need the token texts of the rollout")
        pieces = pieces_fn()
    inputs = RewardInputs(texts, correct, mask, entropy, pieces)
    if "confidence_reward" in terms:
        scale = (terms["confidence_reward"] or {}).get("bare_scale", 10)
        stated = [c for c in parsed_confidences(texts, scale) if c is not None]
        metrics["reward/confidence_parsed"] = len(stated) / max(len(texts), 1)
        metrics["reward/confidence_mean"] = sum(stated) / len(stated) if stated else float("nan")
    for name, params in terms.items():
        p = dict(params or {})
        weight = float(p.pop("weight", 1.0))
        entry = REWARD_TERMS.entry(name)
        unknown = sorted(set(p) - set(entry.defaults))
        if unknown:
            raise EntrolabError(
                f"unknown reward.terms.{name} settings: {', '.join(unknown)}; accepted: weight, "
                f"{', '.join(sorted(entry.defaults))}"
            )
        value = entry.obj(inputs, **p)
        if value.shape != total.shape or not bool(torch.isfinite(value).all()):
            raise EntrolabError(f"reward term {name!r} returned a bad value")
        total = total + weight * value
        metrics[f"reward/{name}"] = float(value.mean())
    return total.float(), metrics


def check_reward_terms(terms: dict[str, Any]) -> None:
    """Fail early (before a model loads) on unknown term names or settings."""
    if not isinstance(terms, dict):
        raise EntrolabError("reward.terms must map term names to their settings")
    for name, params in terms.items():
        entry = REWARD_TERMS.entry(name)
        if params is not None and not isinstance(params, dict):
            raise EntrolabError(f"reward.terms.{name} must be a mapping of settings")
        unknown = sorted(set(params or {}) - set(entry.defaults) - {"weight"})
        if unknown:
            raise EntrolabError(
                f"unknown reward.terms.{name} settings: {', '.join(unknown)}; accepted: weight, "
                f"{', '.join(sorted(entry.defaults))}"
            )


def rollout_reward_terms(
    terms: dict[str, Any],
    rewards: Tensor,
    correct: Tensor | None,
    rollout,
    *,
    model,
    tokenizer,
    pad_id: int,
    temperature: float,
    micro_batch_size: int,
) -> tuple[Tensor, dict[str, float]]:
    """:func:`apply_reward_terms` for a trainer rollout: entropies from a no-grad forward of
    the behaviour policy (only when a term needs them), token texts from the tokenizer."""
    from entrolab.rl.rollout import response_logprobs
    from entrolab.rl.shaping import rollout_pieces

    def entropy_fn() -> tuple[Tensor, Tensor]:
        out = response_logprobs(
            model,
            rollout,
            pad_id=pad_id,
            temperature=temperature,
            micro_batch_size=micro_batch_size,
        )
        assert out.entropy is not None
        return out.entropy, rollout.response_mask

    return apply_reward_terms(
        terms,
        rewards,
        texts=rollout.texts,
        correct=correct,
        entropy_fn=entropy_fn,
        pieces_fn=lambda: rollout_pieces(tokenizer, rollout),
    )
