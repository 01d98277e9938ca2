"""Verifier rewards from entrolab tasks, plus an optional format reward and confidence-aware
reward terms.

A reward function maps aligned lists of task items and replies to one float per reply; the
trainer reshapes them to ``[N, G]`` (N prompts × G completions) for the advantage estimator.
Reward *terms* (registry :data:`REWARD_TERMS`, kind ``"rewards"``; functions in
:mod:`entrolab.rl.reward_terms`) are added to the verifier reward with a weight:
``reward.terms: {confidence_reward: {kind: brier, weight: 1.0}}``.
Also the held-out metrics: unbiased pass@k and the entropy of the sampled answers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from entrolab.errors import EntrolabError
from entrolab.tasks import Grade, Task, TaskItem

__all__ = [
    "RewardFn",
    "RewardResult",
    "answer_entropy",
    "eval_metrics",
    "make_task",
    "pass_at_k",
    "score_replies",
    "verifier_rewards",
]

#: (items, replies) -> one reward per reply (floats).
RewardFn = Callable[[Sequence[TaskItem], Sequence[str]], Sequence[float]]


@dataclass(frozen=True)
class RewardResult:
    """Rewards of R replies.

    Attributes:
        rewards: float32 [R], total reward (verifier + format).
        correct: bool [R], the verifier's verdict.
        formatted: bool [R], whether the format check passed.
        grades: the R :class:`~entrolab.tasks.Grade` objects (empty for custom reward functions).
    """

    rewards: torch.Tensor
    correct: torch.Tensor
    formatted: torch.Tensor
    grades: tuple[Grade, ...] = ()


def verifier_rewards(
    task: Task,
    items: Sequence[TaskItem],
    replies: Sequence[str],
    *,
    correct: float = 1.0,
    wrong: float = 0.0,
    partial_credit: bool = False,
    format_reward: float = 0.0,
    format_pattern: str | None = None,
) -> RewardResult:
    """Grade each reply with ``task.grade`` and turn the verdicts into rewards.

    reward = (correct if the answer is right else wrong)   [or wrong + (correct − wrong)·score
    with ``partial_credit``] + format_reward · [reply is well-formed], where well-formed means
    ``re.search(format_pattern, reply)`` when a pattern is given, else "an answer could be
    extracted" (``grade.parsed is not None``). Scope: per reply.
    """
    if len(items) != len(replies):
        raise EntrolabError(f"got {len(items)} items but {len(replies)} replies; pair them 1:1")
    try:
        pattern = re.compile(format_pattern) if format_pattern else None
    except re.error as e:
        raise EntrolabError(
            f"reward.format_pattern {format_pattern!r} is not a regex: {e}"
        ) from None
    grades = task.grade_many(items, replies)
    ok = torch.tensor([g.correct for g in grades], dtype=torch.bool)
    if partial_credit:
        score = torch.tensor([min(max(float(g.score), 0.0), 1.0) for g in grades])
        base = wrong + (correct - wrong) * score
    else:
        base = torch.where(ok, torch.tensor(correct), torch.tensor(wrong))
    if pattern is not None:
        fmt = torch.tensor([bool(pattern.search(r or "")) for r in replies], dtype=torch.bool)
    else:
        fmt = torch.tensor([g.parsed is not None for g in grades], dtype=torch.bool)
    total = base.float() + format_reward * fmt.float()
    return RewardResult(total.float(), ok, fmt, tuple(grades))


@dataclass(frozen=True)
class ScoredReplies:
    """Rewards of R replies with the step's accuracy and format rate (None for custom rewards)
    and the verifier's per-reply verdicts (bool [R]; None for custom rewards)."""

    rewards: torch.Tensor
    accuracy: float | None
    format_rate: float | None
    correct: torch.Tensor | None = None


def score_replies(
    task: Task,
    items: Sequence[TaskItem],
    replies: Sequence[str],
    config,
    reward_fn: RewardFn | None = None,
) -> ScoredReplies:
    """Rewards float32 [R] from ``reward_fn`` if given, else from the task's verifier with the
    settings of ``config`` (an :class:`entrolab.rl.config.RewardConfig`)."""
    if reward_fn is not None:
        values = [float(v) for v in reward_fn(items, replies)]
        if len(values) != len(replies):
            raise EntrolabError(
                f"reward_fn returned {len(values)} rewards for {len(replies)} replies"
            )
        if not all(math.isfinite(v) for v in values):
            raise EntrolabError("reward_fn returned NaN/inf rewards; return finite numbers")
        return ScoredReplies(torch.tensor(values, dtype=torch.float32), None, None)
    res = verifier_rewards(
        task,
        items,
        replies,
        correct=config.correct,
        wrong=config.wrong,
        partial_credit=config.partial_credit,
        format_reward=config.format_reward,
        format_pattern=config.format_pattern,
    )
    return ScoredReplies(
        res.rewards,
        float(res.correct.float().mean()),
        float(res.formatted.float().mean()),
        res.correct,
    )


def __getattr__(name: str):
    if name == "REWARD_TERMS":  # lazy: the terms import estimators and signals
        from entrolab.rl.reward_terms import REWARD_TERMS

        return REWARD_TERMS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_task(spec: str, settings: dict | None = None) -> Task:
    """The task for ``spec``: ``"proxy"`` / ``"proxy_reasoning"`` are the RL proxy tasks
    (:func:`entrolab.rl.proxy.proxy_task`); anything else goes to
    :func:`entrolab.tasks.load_task`."""
    settings = dict(settings or {})
    if spec.strip() in ("proxy", "proxy_reasoning"):
        from entrolab.rl.proxy import proxy_task

        return proxy_task(spec.strip(), settings)
    from entrolab.tasks import load_task

    return load_task(spec, **settings)


# ------------------------------------------------------------------------- held-out metrics
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct (Chen et al. 2021, arXiv:2107.03374):
    ``1 − C(n−c, k)/C(n, k)``; with k = n it is 1 if any sample is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise EntrolabError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def answer_entropy(answers: Sequence[str | None]) -> float:
    """Entropy (nats) of the empirical distribution of answers over clusters of equivalent
    answers (:func:`entrolab.tasks.cluster_answers`; every unparseable answer is its own cluster)."""
    from entrolab.estimators.sampling import discrete_semantic_entropy
    from entrolab.tasks import cluster_answers

    if not answers:
        raise EntrolabError("answer_entropy needs at least one answer")
    return discrete_semantic_entropy(cluster_answers(list(answers)))


def eval_metrics(task: Task, items: Sequence[TaskItem], traces, k: int) -> dict[str, float]:
    """Held-out metrics from ``k`` samples per item (traces ordered by prompt, then sample).

    ``eval/pass@1`` and ``eval/pass@{k}`` (unbiased estimators, mean over items),
    ``eval/answer_entropy`` (nats, mean over items), ``eval/token_entropy`` (mean over all
    sampled tokens, raw logits), ``eval/response_len`` (tokens).
    """
    groups = traces.by_prompt()
    p1, pk, ent = [], [], []
    for i, item in enumerate(items):
        replies = [t.text for t in groups.get(i, [])]
        if len(replies) != k:
            raise EntrolabError(f"expected {k} samples for eval item {i}, got {len(replies)}")
        c = sum(task.grade(item, r).correct for r in replies)
        p1.append(pass_at_k(k, c, 1))
        pk.append(pass_at_k(k, c, k))
        ent.append(answer_entropy([task.extract(item, r) for r in replies]))
    tokens = sum(len(t) for t in traces)
    tok_entropy = sum(float(t.entropy.sum()) for t in traces) / max(tokens, 1)
    return {
        "eval/pass@1": sum(p1) / len(p1),
        f"eval/pass@{k}": sum(pk) / len(pk),
        "eval/answer_entropy": sum(ent) / len(ent),
        "eval/token_entropy": tok_entropy,
        "eval/response_len": tokens / len(traces),
    }
