"""Pure maths of confidence-aware debate: belief updates, diversity-aware initialisation and the
"both think they'll win" overconfidence metrics. The strategy lives in
:mod:`entrolab.inference.debate`.

* :func:`belief_update` (Zhu et al. 2026, "Demystifying Multi-Agent Debate", arXiv:2601.19921;
  the spec's placeholder rule, the paper's exact weighting is not published): every agent's
  belief over answers becomes

      b_i'(a) ∝ b_i(a)^(1−η) · (Σ_j c_j 1[a_j = a])^η        (j over all agents' new answers)

  and :func:`update_agents` applies it to one round of named answers.
* :func:`select_diverse`: start from the most confident candidate of as many distinct answers as
  possible.
* :func:`debate_confidence_metrics` (Prasad & Nguyen 2025, "When Two LLMs Debate, Both Think
  They'll Win", arXiv:2505.19184): overconfidence c̄ − 50, escalation c̄_last − c̄_first, the
  mutual-overestimation rate P(c_A > 75 ∧ c_B > 75) and the sum-excess E[c_A + c_B − 100]. Two
  agents holding different answers cannot both be right, so rational confidences sum to ≤ 100.

Pure tensor/Python code: no model or backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from entrolab.errors import EntrolabError

if TYPE_CHECKING:
    from entrolab.inference.base import ItemOutcome

__all__ = [
    "OTHER",
    "belief_update",
    "debate_confidence_metrics",
    "debate_metrics",
    "initial_belief",
    "select_diverse",
    "update_agents",
]

#: The belief bucket of "an answer nobody has given yet".
OTHER = "<other>"


def belief_update(
    beliefs: torch.Tensor,
    answers: torch.Tensor,
    confidences: torch.Tensor,
    eta: float,
    *,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Confidence-modulated belief update, b_i'(a) ∝ (b_i(a) + ε)^(1−η) · (s(a) + ε)^η.

    Args:
        beliefs: [N, A] each agent's distribution over A candidate answers (rows sum to 1).
        answers: [N] int64 index of each agent's new answer (−1: none, contributes nothing).
        confidences: [N] in [0, 1], each new answer's confidence.
        eta: weight of the peers' evidence in [0, 1] (0: beliefs unchanged; 1: the normalised
            confidence-weighted vote s).
        eps: floor so an answer nobody holds keeps a little mass (0 allowed).
    Returns:
        float64 [N, A], rows summing to 1 (computed in log space).
    """
    b = torch.as_tensor(beliefs, dtype=torch.float64)
    a = torch.as_tensor(answers, dtype=torch.int64).reshape(-1)
    c = torch.as_tensor(confidences, dtype=torch.float64).reshape(-1)
    if b.dim() != 2 or b.shape[0] != a.numel() or a.shape != c.shape or b.shape[1] == 0:
        raise EntrolabError(
            f"beliefs must be [N, A] with N = len(answers) = len(confidences), got "
            f"{tuple(b.shape)}, {a.numel()}, {c.numel()}"
        )
    if not 0 <= eta <= 1 or eps < 0:
        raise EntrolabError(f"need 0 <= eta <= 1 and eps >= 0, got eta={eta}, eps={eps}")
    if ((c < 0) | (c > 1) | ~torch.isfinite(c)).any() or (b < 0).any():
        raise EntrolabError("confidences must lie in [0, 1] and beliefs must be >= 0")
    if ((a < -1) | (a >= b.shape[1])).any():
        raise EntrolabError(f"answer indices must be in [-1, {b.shape[1] - 1}]")
    support = torch.zeros(b.shape[1], dtype=torch.float64)
    held = a >= 0
    support.index_add_(0, a[held], c[held])
    logp = (1 - eta) * torch.log(b + eps) + eta * torch.log(support + eps)[None]
    if torch.isneginf(logp).all(-1).any():
        raise EntrolabError("an agent's updated belief is zero everywhere; use eps > 0")
    return torch.softmax(logp, -1)


def select_diverse(
    answers: Sequence[str | None], confidences: Sequence[float], n: int
) -> list[int]:
    """Indices of ``n`` candidates covering as many distinct answers as possible.

    Distinct answers are ranked by their best candidate's confidence (ties: first seen); take the
    best candidate of each in that order, then the second best of each, … ; unparseable (None)
    candidates come last, most confident first. Returned in selection order.
    """
    if len(answers) != len(confidences):
        raise EntrolabError(f"got {len(answers)} answers but {len(confidences)} confidences")
    if not 1 <= n <= len(answers):
        raise EntrolabError(f"cannot select {n} of {len(answers)} candidates")
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(answers):
        if a is not None:
            groups.setdefault(a, []).append(i)
    for members in groups.values():
        members.sort(key=lambda i: -confidences[i])  # stable: ties keep pool order
    order = sorted(groups.values(), key=lambda m: -confidences[m[0]])
    picked: list[int] = []
    depth = 0
    while len(picked) < n and any(depth < len(m) for m in order):
        picked += [m[depth] for m in order if depth < len(m)][: n - len(picked)]
        depth += 1
    rest = sorted((i for i, a in enumerate(answers) if a is None), key=lambda i: -confidences[i])
    return picked + rest[: n - len(picked)]


def initial_belief(answer: str | None, conf: float, known: Sequence[str]) -> dict[str, float]:
    """An agent's opening belief: ``conf`` on its answer, 1 − conf spread evenly over the other
    ``known`` answers and :data:`OTHER` (an answer nobody has given yet), so it keeps its doubt
    even when every agent agrees. No answer: uniform over ``known`` and OTHER."""
    rest = [*(a for a in known if a != answer), OTHER]
    if answer is None:
        return {a: 1 / len(rest) for a in rest}
    return {answer: conf, **{a: (1 - conf) / len(rest) for a in rest}}


def update_agents(
    beliefs: Sequence[Mapping[str, float]],
    answers: Sequence[str | None],
    confs: Sequence[float],
    eta: float,
) -> tuple[list[dict[str, float]], list[str | None], list[float]]:
    """One confidence-modulated round: :func:`belief_update` of every agent's belief (answers
    missing from a belief have mass 0 there) with the round's new answers as evidence.

    Returns (new beliefs, answers, stated confidences): each agent answers with its most
    believed real answer (never :data:`OTHER`; ties keep its newly generated answer, else the
    alphabetically first) and states its belief in it.
    """
    if not (len(beliefs) == len(answers) == len(confs)):
        raise EntrolabError("need one belief, answer and confidence per agent")
    seen = {a for b in beliefs for a in b} | {a for a in answers if a is not None}
    names = [*sorted(seen - {OTHER}), OTHER]
    b = torch.tensor([[bel.get(a, 0.0) for a in names] for bel in beliefs], dtype=torch.float64)
    if (b.sum(-1) <= 0).any():
        raise EntrolabError("every agent's belief needs positive mass somewhere")
    idx = torch.tensor([names.index(a) if a is not None else -1 for a in answers])
    c = torch.tensor(list(confs), dtype=torch.float64)
    post = belief_update(b / b.sum(-1, keepdim=True), idx, c, eta)
    out_answers: list[str | None] = []
    out_confs: list[float] = []
    for j, row in enumerate(post):
        real = row[:-1]
        if real.numel() == 0:
            out_answers.append(None)
            out_confs.append(0.0)
            continue
        best = (real == real.max()).nonzero().flatten().tolist()
        k = int(idx[j]) if int(idx[j]) in best else best[0]
        out_answers.append(names[k])
        out_confs.append(float(row[k]))
    return [dict(zip(names, r.tolist(), strict=True)) for r in post], out_answers, out_confs


def debate_confidence_metrics(confidence: Any) -> dict[str, Any]:
    """The zero-sum overconfidence metrics of two-sided debates.

    Args:
        confidence: [D, R, 2] each side's confidence of winning (being right) in percent
            (0–100), for D debates and R rounds.
    Returns:
        ``mean_by_round`` [R]; ``overconfidence`` = mean c − 50; ``escalation`` = mean of the
        last round − mean of the first; ``mutual_overestimation_rate`` = fraction of debates
        where both sides say more than 75 in the last round (``…_by_round`` for every round;
        strictly greater, as the official code: with > 75 the paper's 61.7% is reproduced on
        its data, while the paper's text says ≥ 75);
        ``sum_excess`` = mean over debates and rounds of c_A + c_B − 100 (``…_by_round``).
    """
    c = torch.as_tensor(confidence, dtype=torch.float64)
    if c.dim() != 3 or c.shape[-1] != 2 or c.shape[0] == 0 or c.shape[1] == 0:
        raise EntrolabError(f"confidence must be [debates, rounds, 2], got {tuple(c.shape)}")
    if not torch.isfinite(c).all() or ((c < 0) | (c > 100)).any():
        raise EntrolabError("confidences must be finite percentages in [0, 100] (multiply by 100)")
    by_round = c.mean((0, 2))
    mutual = (c > 75).all(-1).double().mean(0)
    excess = (c.sum(-1) - 100).mean(0)
    return {
        "debates": int(c.shape[0]),
        "mean_by_round": by_round.tolist(),
        "overconfidence": float(c.mean() - 50),
        "escalation": float(by_round[-1] - by_round[0]),
        "mutual_overestimation_rate": float(mutual[-1]),
        "mutual_overestimation_by_round": mutual.tolist(),
        "sum_excess": float(excess.mean()),
        "sum_excess_by_round": excess.tolist(),
    }


def debate_metrics(outcomes: Sequence[ItemOutcome]) -> dict[str, Any]:
    """:func:`debate_confidence_metrics` over the 2-agent debates of a :class:`DebateStrategy`
    run whose agents started with different answers (two opposing sides, as in the paper)."""
    rows = []
    for o in outcomes:
        answers, conf = o.meta.get("answers_by_round"), o.meta.get("confidence_by_round")
        if answers and conf and len(answers[0]) == 2 and answers[0][0] != answers[0][1]:
            rows.append([[100 * x for x in r] for r in conf])
    if not rows:
        raise EntrolabError(
            "no 2-agent debate started with a disagreement; run more items, more diverse "
            "agents (pool > agents) or a harder task"
        )
    return debate_confidence_metrics(rows)
