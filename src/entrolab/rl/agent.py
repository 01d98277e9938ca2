"""Multi-turn tool-use rollouts (calculator, :mod:`entrolab.rl.tools`) and agentic AEPO's
entropy-balanced rollout (Dong et al. 2025, arXiv:2510.14545; spec §3.6 B).

An *episode* alternates model turns (generated until ``</tool>`` or the end of the reply) and tool
messages (``<result>…</result>``, appended as tokens the policy did not generate). In the
:class:`~entrolab.rl.rollout.Rollout` the tool tokens are in ``context_mask`` (attended to) but
not in ``response_mask`` (no loss, no token count, no entropy statistics).

Agentic AEPO's rollout, per prompt with budget k episodes:

- **entropy pre-monitoring**: one probe episode measures ``H_root`` (mean entropy of the first
  ``window`` tokens of the reply) and ``H_tool`` (mean entropy of the ``window`` tokens after each
  tool result); ``m = clamp(round(k·σ(β·(H_root − H_tool))), 1, k)`` episodes are sampled from the
  root (the probe included) and ``k − m`` are *branches* continued right after a tool result of a
  root episode (inherited prefix in the prompt: no gradient);
- **consecutive-branch penalty**: a tool step is picked as branch point with weight
  ``H_after · (1 − penalty)^c`` where ``c`` counts the immediately preceding tool steps of the same
  episode that were high-entropy (``H_after > H_root``), so branching does not pile onto one chain.
Exact forms in the paper are [U] (spec); ours follow the spec's formulas. Without tool calls the
branch budget goes back to root episodes.

**EMPG's agent step** (Wang et al. 2025, arXiv:2509.09265: a step is one "think-act" cycle, its
uncertainty the mean entropy of the tokens the model generated in it): here a step is one model
turn — the run of policy tokens from the start of the reply or the end of a tool message up to
``</tool>`` or the end of the reply. Tool messages belong to no step (they are not the policy's
tokens). :func:`turn_step_ids` numbers the turns of a rollout; EMPG uses them with
``algorithm.advantage_params.step_delimiter: "<turn>"`` (:data:`TURN_STEPS`). Single-turn replies
(the proxy task) are one step each, so EMPG reduces to ``g(H_reply)·A``; line-by-line solutions
use the newline delimiter instead.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from entrolab.backends.decode import pad_batch
from entrolab.backends.tree import branch_seed
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.rl.rollout import Rollout
from entrolab.rl.tools import find_tool_call, run_tool_call

__all__ = [
    "TOOL_INSTRUCTION",
    "TURN_STEPS",
    "Episode",
    "agent_rollout",
    "branch_weights",
    "budget_split",
    "run_episodes",
    "turn_step_ids",
]

TOOL_INSTRUCTION = (
    " You may use a calculator: write <tool>expression</tool> and the result comes back as "
    "<result>value</result>. End with 'Answer: <number>'."
)


#: ``step_delimiter`` value that makes EMPG's steps the model turns (:func:`turn_step_ids`).
TURN_STEPS = "<turn>"


def turn_step_ids(response_mask: torch.Tensor) -> torch.Tensor:
    """EMPG step ids of multi-turn rows: ``[R, T]`` bool (True on policy tokens) → int64 ``[R, T]``
    with the s-th run of consecutive policy tokens (the s-th model turn) numbered s and −1
    elsewhere (tool tokens, padding). ``[1, 1, 0, 0, 1, 0]`` → ``[0, 0, −1, −1, 1, −1]``."""
    if response_mask.dim() != 2:
        raise EntrolabError(f"response_mask must be [R, T], got {tuple(response_mask.shape)}")
    m = response_mask.bool()
    before = torch.zeros_like(m)
    before[:, 1:] = m[:, :-1]
    starts = m & ~before
    ids = starts.long().cumsum(1) - 1
    return torch.where(m, ids, torch.full_like(ids, -1))


@dataclass
class Episode:
    """One multi-turn trajectory after a prompt.

    Attributes:
        prompt: token ids the episode started from (prompt, plus an inherited prefix for a branch).
        tokens: the episode's own tokens (model turns and tool messages).
        model: bool per token, True where the policy generated it.
        entropy: per token (0 on tool tokens), nats.
        text: the decoded transcript of ``tokens``.
        steps: (index in ``tokens`` just after a tool message, mean entropy of the next window).
        calls / errors: tool calls made and those answered with an error.
    """

    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    model: list[bool] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    text: str = ""
    steps: list[tuple[int, float]] = field(default_factory=list)
    calls: int = 0
    errors: int = 0
    done: bool = False


def run_episodes(
    backend: Any,
    starts: Sequence[list[int]],
    config: GenerationConfig,
    seeds: Sequence[int],
    *,
    max_turns: int = 4,
    window: int = 4,
    prefixes: Sequence[str] | None = None,
) -> list[Episode]:
    """Run one episode from each token-id start (batched per turn); the token budget per episode
    is ``config.max_new_tokens`` (model and tool tokens together)."""
    eps = [Episode(list(s)) for s in starts]
    texts = list(prefixes or [""] * len(eps))
    for turn in range(max_turns):
        live = [i for i, e in enumerate(eps) if not e.done]
        if not live:
            break
        left = [config.max_new_tokens - len(eps[i].tokens) for i in live]
        cfg = GenerationConfig.from_dict(
            {**config.to_dict(), "num_samples": 1, "max_new_tokens": max(1, max(left)),
             "stop": ["</tool>"]}
        )  # fmt: skip
        prompts = [eps[i].prompt + eps[i].tokens for i in live]
        traces = backend.generate(
            prompts, cfg, seeds=[branch_seed(int(seeds[i]), turn, -4) for i in live]
        )
        for i, tr, budget in zip(live, traces, left, strict=True):
            e = eps[i]
            ids = tr.token_ids.tolist()[: max(budget, 0)]
            ent = tr.entropy.tolist()[: len(ids)]
            if e.steps and e.steps[-1][1] < 0:  # fill the entropy after the last tool result
                after = ent[:window]
                e.steps[-1] = (e.steps[-1][0], sum(after) / len(after) if after else 0.0)
            e.tokens += ids
            e.model += [True] * len(ids)
            e.entropy += ent
            piece = backend.decode(ids)
            e.text += piece
            call = find_tool_call(texts[i] + e.text) if tr.finish_reason == "stop" else None
            if call is None or len(e.tokens) >= config.max_new_tokens or turn == max_turns - 1:
                e.done = True
                continue
            forced = "" if e.text.endswith("</tool>") else "</tool>"
            msg = forced + run_tool_call(call)
            e.calls += 1
            e.errors += "error:" in msg
            tool_ids = backend.encode(msg)
            e.tokens += tool_ids
            e.model += [False] * len(tool_ids)
            e.entropy += [0.0] * len(tool_ids)
            e.text += msg
            e.steps.append((len(e.tokens), -1.0))
            if len(e.tokens) >= config.max_new_tokens:
                e.done = True
    for e in eps:  # a tool result with no model token after it
        e.steps = [(p, max(h, 0.0)) for p, h in e.steps]
    return eps


def budget_split(k: int, h_root: float, h_tool: float, beta: float = 1.0) -> int:
    """Root episodes ``m = clamp(round(k·σ(β·(H_root − H_tool))), 1, k)`` of a budget of k."""
    if k < 1:
        raise EntrolabError(f"the rollout budget k must be >= 1, got {k}")
    m = round(k / (1.0 + math.exp(-beta * (h_root - h_tool))))
    return min(max(m, 1), k)


def branch_weights(
    step_entropy: Sequence[float], h_root: float, penalty: float = 0.5
) -> list[float]:
    """Branch-point weights of one episode's tool steps: ``H_after·(1 − penalty)^c`` with ``c`` the
    number of immediately preceding high-entropy steps (``H_after > H_root``)."""
    if not 0 <= penalty <= 1:
        raise EntrolabError(f"the consecutive-branch penalty must be in [0, 1], got {penalty}")
    out, run = [], 0
    for h in step_entropy:
        out.append(max(h, 0.0) * (1.0 - penalty) ** run)
        run = run + 1 if h > h_root else 0
    return out


def _pick(weights: Sequence[float], rng: random.Random) -> int | None:
    """An index drawn with probability ∝ ``weights`` (None when they sum to 0)."""
    total = sum(weights)
    if total <= 0:
        return None
    x, acc = rng.random() * total, 0.0
    for j, w in enumerate(weights):
        acc += w
        if acc >= x and w > 0:
            return j
    return max(j for j, w in enumerate(weights) if w > 0)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def agent_rollout(
    backend: Any,
    prompts: Sequence[str],
    config: GenerationConfig,
    seeds: Sequence[int],
    *,
    max_turns: int = 4,
    window: int = 4,
    beta: float = 1.0,
    penalty: float = 0.5,
    aepo: bool = True,
    instruction: str | None = None,
) -> tuple[Rollout, dict[str, float]]:
    """k = ``config.num_samples`` episodes per prompt (AEPO budget split when ``aepo``, else k
    root episodes), each prompt followed by ``instruction`` (None: :data:`TOOL_INSTRUCTION`;
    ``""`` when the prompt already explains the tool protocol); returns the rollout
    (prompt-major, tool tokens masked) and ``agent/*`` metrics: ``root_frac`` (the split m/k), ``branch_frac`` (branches run), ``fill_frac`` (branch
    budget given back to root episodes for lack of tool steps), entropies, tool calls/errors,
    ``tool_call_frac`` (episodes with a call), ``branch_concentration`` (mean over prompts of the
    largest share of its branches forked from one root episode) and ``branch_after_high_frac``
    (branches forked right after a high-entropy tool step)."""
    k = config.num_samples
    ids = [
        backend.prompt_ids(p + (TOOL_INSTRUCTION if instruction is None else instruction),
                           chat_template=config.chat_template,
                           system_prompt=config.system_prompt)
        for p in prompts
    ]  # fmt: skip
    rows: list[tuple[int, list[int], Episode, str]] = []  # (prompt, prompt ids, episode, text)
    splits = []
    picks: list[tuple[float, int, int]] = []  # (top root's share, after-high picks, picks)
    for i in range(len(prompts)):
        seed_i = [branch_seed(int(seeds[i]), -5, j) for j in range(k)]
        probe = run_episodes(backend, [ids[i]], config, seed_i[:1], max_turns=max_turns,
                             window=window)[0]  # fmt: skip
        h_root = _mean(probe.entropy[:window])
        h_tool = _mean([h for _, h in probe.steps]) if probe.steps else h_root
        m = budget_split(k, h_root, h_tool, beta) if aepo else k
        more = run_episodes(
            backend, [ids[i]] * (m - 1), config, seed_i[1:m], max_turns=max_turns, window=window
        )
        roots = [probe, *more]
        points = []  # (root, position, weight, the step before was high-entropy)
        for r, e in enumerate(roots):
            hs = [h for _, h in e.steps]
            weights = branch_weights(hs, h_root, penalty)
            after_high = [j > 0 and hs[j - 1] > h_root for j in range(len(hs))]
            points += [
                (r, p, w, a) for (p, _), w, a in zip(e.steps, weights, after_high, strict=True)
            ]
        rng = random.Random(branch_seed(int(seeds[i]), -6, 0))
        starts, prefixes, picked = [], [], []
        for _ in range(k - m):
            j = _pick([pt[2] for pt in points], rng)
            if j is None:
                break
            r, p, _, a = points[j]
            picked.append((r, a))
            starts.append(ids[i] + roots[r].tokens[:p])
            prefixes.append(backend.decode(roots[r].tokens[:p]))
        extra_seeds = [branch_seed(int(seeds[i]), -7, j) for j in range(k)]
        branches = run_episodes(backend, starts, config, extra_seeds[: len(starts)],
                                max_turns=max_turns, window=window, prefixes=prefixes)  # fmt: skip
        fill = k - m - len(branches)
        roots += run_episodes(backend, [ids[i]] * fill, config, seed_i[m : m + fill],
                              max_turns=max_turns, window=window)  # fmt: skip
        for e in roots:
            rows.append((i, ids[i], e, e.text))
        for e, pre in zip(branches, prefixes, strict=True):
            rows.append((i, e.prompt, e, pre + e.text))
        splits.append((m, len(branches), h_root, h_tool, fill))
        if picked:
            per_root = [sum(r == q for q, _ in picked) for q in {r for r, _ in picked}]
            picks.append((max(per_root) / len(picked), sum(a for _, a in picked), len(picked)))
    resp, ctx = pad_batch([e.tokens or [int(backend.pad_id)] for _, _, e, _ in rows],
                          int(backend.pad_id), "right")  # fmt: skip
    model = torch.zeros_like(ctx, dtype=torch.bool)
    for j, (_, _, e, _) in enumerate(rows):
        model[j, : len(e.model)] = torch.tensor(e.model, dtype=torch.bool) if e.model else False
    ro = Rollout(
        prompt_ids=[list(p) for _, p, _, _ in rows],
        response_ids=resp,
        response_mask=model,
        texts=[t for *_, t in rows],
        prompt_index=torch.tensor([i for i, *_ in rows], dtype=torch.int64),
        group_size=k,
        context_mask=ctx.to(torch.bool),
    )
    eps = [e for _, _, e, _ in rows]
    n = len(prompts)
    metrics = {
        "agent/root_frac": sum(s[0] for s in splits) / (n * k),
        "agent/branch_frac": sum(s[1] for s in splits) / (n * k),
        "agent/fill_frac": sum(s[4] for s in splits) / (n * k),  # no tool step to branch from
        "agent/h_root": _mean([s[2] for s in splits]),
        "agent/h_tool": _mean([s[3] for s in splits]),
        "agent/tool_calls": _mean([e.calls for e in eps]),
        # a branch starts after a tool result, so its trajectory called the tool
        "agent/tool_call_frac": _mean(
            [float(e.calls > 0 or len(p) > len(ids[i])) for i, p, e, _ in rows]
        ),
        # branch placement: the largest share of a prompt's branches taken from one root
        # episode, and the share placed right after a high-entropy tool step (the steps the
        # consecutive-branch penalty down-weights)
        "agent/branch_concentration": _mean([c for c, _, _ in picks]),
        "agent/branch_after_high_frac": sum(a for _, a, _ in picks)
        / max(sum(n for *_, n in picks), 1),
        "agent/tool_error_frac": sum(e.errors for e in eps) / max(sum(e.calls for e in eps), 1),
        "agent/tool_token_frac": 1.0 - float(model.sum()) / max(float(ctx.sum()), 1.0),
    }
    return ro, metrics
