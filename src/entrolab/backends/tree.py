"""Tree rollouts: fork new continuations where the policy is uncertain, sharing the prefix's
KV cache (capability ``kv_branching``).

:func:`generate_tree` samples G root completions per prompt (one prefill per prompt), picks
branch points on each root by a rule from :data:`BRANCH_RULES` (highest-entropy tokens, lowest
DeepConf window confidence, or random positions as a control), and continues ``branches`` new
samples from each point: every branch copies its root's cache, attends only to the prompt and
the root's tokens before the point, and is fed the token just before the point once — the
shared prefix is never prefilled again. A branch at point t keeps root tokens 0..t−1 and
resamples token t onward; its Trace holds the whole response (inherited tokens with the root's
statistics, then its own), with ``meta["parent"]`` (index of the root in the returned batch),
``meta["branch_position"]`` (t) and ``meta["new_tokens"]`` (tokens it generated itself).

Budget accounting counts only newly generated tokens: ``sum(t.meta["new_tokens"])``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from entrolab.backends.base import Prompt, prompt_as_ids, require
from entrolab.backends.decode import StepHook
from entrolab.backends.hf_rows import RowDecoder
from entrolab.backends.sampling import resolve_warper, seed_function
from entrolab.config import GenerationConfig
from entrolab.decoding.loop import decode_loop, fork, run_steps
from entrolab.errors import EntrolabError
from entrolab.registry import Registry
from entrolab.signals import topk_confidence
from entrolab.types import Trace, TraceBatch

__all__ = ["BRANCH_RULES", "branch_seed", "generate_tree"]

#: rule(trace, k, generator) -> up to k distinct branch positions t (1 <= t < len(trace)).
BranchRule = Callable[[Trace, int, torch.Generator], list[int]]
BRANCH_RULES: Registry[BranchRule] = Registry("branch rules")


def _top_positions(score: torch.Tensor, k: int) -> list[int]:
    """The k highest-scoring positions among 1..T−1 (position 0 is the reply's first token:
    branching there is plain resampling), earliest first on ties, returned in increasing
    order."""
    if score.numel() < 2 or k < 1:
        return []
    cand = score[1:].double()
    order = sorted(range(cand.numel()), key=lambda i: (-float(cand[i]), i))[:k]
    return sorted(i + 1 for i in order)


@BRANCH_RULES.register(
    "entropy",
    summary="the k tokens with the highest entropy (forking tokens; ETTRL, CURE, AEPO)",
    paper="Wang et al. 2025 (80/20 forking tokens); Li et al. 2025 (CURE)",
)
def entropy_points(trace: Trace, k: int, generator: torch.Generator) -> list[int]:
    """Positions of the k highest-entropy tokens of ``trace`` (nats)."""
    return _top_positions(trace.entropy, k)


@BRANCH_RULES.register(
    "low_confidence",
    summary="the ends of the k windows with the lowest DeepConf confidence (window 8)",
    paper="Fu et al. 2025 (DeepConf) group confidence; ECHO-style branching",
)
def low_confidence_points(trace: Trace, k: int, generator: torch.Generator) -> list[int]:
    """Positions t where the mean DeepConf confidence of tokens t−7..t is lowest."""
    conf = topk_confidence(trace.topk_logprobs).double()
    w = min(8, conf.numel())
    if w == 0:
        return []
    windows = conf.unfold(0, w, 1).mean(-1)  # window ending at t = i + w − 1
    score = torch.full((conf.numel(),), float("-inf"), dtype=torch.float64)
    score[w - 1 :] = -windows
    return _top_positions(score, k)


@BRANCH_RULES.register(
    "random",
    summary="k uniformly random positions (control for the entropy rules)",
    paper="control arm",
)
def random_points(trace: Trace, k: int, generator: torch.Generator) -> list[int]:
    """k distinct positions drawn uniformly from 1..T−1 with ``generator``."""
    n = len(trace) - 1
    if n < 1:
        return []
    pick = torch.randperm(n, generator=generator)[:k]
    return sorted(int(p) + 1 for p in pick)


@BRANCH_RULES.register(
    "critical",
    summary="k random picks among the 20 highest-entropy tokens whose text is longer than one "
    "character (CURE's critical tokens)",
    paper="Li et al. 2025, CURE: critical-token-guided re-concatenation for entropy-collapse "
    "prevention",
    defaults={"pool": 20},
)
def critical_points(trace: Trace, k: int, generator: torch.Generator, pool: int = 20) -> list[int]:
    """k distinct positions drawn with ``generator`` from the ``pool`` highest-entropy tokens
    (position ≥ 1) whose piece has more than one non-space character."""
    cand = [t for t in _top_positions(trace.entropy, pool) if len(trace.tokens[t].strip()) > 1]
    if not cand:
        return []
    pick = torch.randperm(len(cand), generator=generator)[:k]
    return sorted(cand[int(i)] for i in pick)


def branch_seed(root_seed: int, position: int, branch: int) -> int:
    """The seed of branch ``branch`` at ``position`` of the root sampled with ``root_seed``.

    Sampling ``generate([prompt_ids + root[:position]], seeds=[branch_seed(...)])`` as a lone
    token-id prompt draws the same tokens as the branch (the tests' reference)."""
    digest = hashlib.blake2b(f"branch:{root_seed}:{position}:{branch}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def generate_tree(
    backend: Any,
    prompts: Sequence[Prompt],
    config: GenerationConfig,
    *,
    rule: str | BranchRule = "entropy",
    points: int = 2,
    branches: int | Callable[[Trace, int], int] = 2,
    seeds: Sequence[int] | None = None,
    branch_hook: StepHook | None = None,
    first_tokens: str = "sample",
) -> TraceBatch:
    """G = ``config.num_samples`` roots per prompt, then continuations from each of up to
    ``points`` branch points per root chosen by ``rule`` (see module docstring).

    Args:
        rule: a name in :data:`BRANCH_RULES` or a callable ``(trace, k, generator) -> positions``.
        branches: continuations per branch point, or ``width(root, position) -> int`` for a
            per-point width (e.g. ECHO's confidence-adaptive width; 0 skips the point).
        branch_hook: a per-step stopping rule for the branch rows (online pruning); its ``rows``
            are branch numbers in plan order, and a pruned branch ends ``"stopped"``.
        first_tokens: ``"sample"``: a branch samples its token t; ``"top"``: branch j of a
            point takes the j-th most likely token at t other than the root's own token there
            (ECHO's official top-w branches: root + w − 1 branches = w distinct first tokens),
            then samples on; its recorded log-prob is the model's log-prob of that token.
    Returns:
        the roots of every prompt (sample_index 0..G−1) followed by the branches (sample
        indices from G on), prompt by prompt. Roots are exactly ``backend.generate(prompts,
        config, seeds=seeds)``.
    """
    require(backend, "kv_branching", "tree rollouts")
    rule_fn = rule if callable(rule) else BRANCH_RULES.get(rule)
    if isinstance(points, bool) or not isinstance(points, int) or points < 0:
        raise EntrolabError(f"points must be an int >= 0, got {points!r}")
    if not callable(branches) and (
        isinstance(branches, bool) or not isinstance(branches, int) or branches < 0
    ):
        raise EntrolabError(f"branches must be an int >= 0 or a width function, got {branches!r}")
    width = branches if callable(branches) else (lambda _root, _t: branches)
    if first_tokens not in ("sample", "top"):
        raise EntrolabError(f"first_tokens must be 'sample' or 'top', got {first_tokens!r}")
    if config.greedy:
        raise EntrolabError(
            "tree rollouts sample: set temperature > 0 (greedy branches are all equal)"
        )
    if isinstance(prompts, str) or not prompts:
        raise EntrolabError("prompts must be a non-empty list")
    ids = [
        prompt_as_ids(backend, p, chat_template=config.chat_template, system_prompt=config.system_prompt)
        for p in prompts
    ]  # fmt: skip
    texts = [
        p if isinstance(p, str) else backend.decode(i) for p, i in zip(prompts, ids, strict=True)
    ]
    g = config.num_samples
    seed_of = seed_function(config.seed, seeds)
    rows = [(i, s) for i in range(len(ids)) for s in range(g)]
    roots_dec = RowDecoder(
        backend, config, [seed_of(i, s) for i, s in rows], warper=resolve_warper(config)
    )
    _, state = decode_loop(
        backend.model,
        ids,
        roots_dec,
        max_new_tokens=config.max_new_tokens,
        pad_id=backend.pad_id,
        row_prompt=[i for i, _ in rows],
        keep_state=True,
    )
    roots = [
        roots_dec.trace(r, texts[i], i, s, {"prompt_tokens": len(ids[i]), "new_tokens": int(roots_dec.lengths[r])})
        for r, (i, s) in enumerate(rows)
    ]  # fmt: skip
    # branch points per root (a root's own generator keeps the random rule reproducible)
    plan: list[tuple[int, int, int]] = []  # (root row, position t, branch j)
    for r, root in enumerate(roots):
        gen = torch.Generator().manual_seed(branch_seed(roots_dec.row_seeds[r], -1, -1))
        for t in rule_fn(root, points, gen)[:points]:
            n = width(root, t)
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise EntrolabError(f"the branch width function returned {n!r}; return an int >= 0")
            plan += [(r, t, j) for j in range(n)]
    by_prompt: list[list[Trace]] = [[] for _ in ids]
    for r, (i, _) in enumerate(rows):
        by_prompt[i].append(roots[r])
    if plan:
        branch_traces = _branch(
            backend,
            config,
            ids,
            texts,
            rows,
            roots,
            roots_dec,
            state,
            plan,
            branch_hook,
            top_first=first_tokens == "top",
        )
        for (r, _, _), tr in zip(plan, branch_traces, strict=True):
            by_prompt[rows[r][0]].append(tr)
    out: list[Trace] = []
    for i, group in enumerate(by_prompt):
        base = len(out)
        for s, tr in enumerate(group):
            meta = dict(tr.meta)
            parent = meta.pop("parent_row", None)
            if parent is not None:
                meta["parent"] = base + rows[parent][1]
            out.append(replace(tr, sample_index=s, prompt_index=i, meta=meta))
    return TraceBatch(tuple(out))


def _top_first(plan, roots):
    """RowDecoder ``first_token``: branch b = (r, t, j) of ``plan`` takes the j-th most likely
    token of its step-0 logits (= the root's distribution at t) that is not root r's token t."""
    skip = [int(roots[r].token_ids[t]) for r, t, _ in plan]

    def choose(active: torch.Tensor, raw: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        out = chosen.clone()
        need = max(plan[b][2] for b in active.tolist()) + 2
        order = raw.float().topk(min(need, raw.shape[-1]), dim=-1).indices.tolist()
        for a, b in enumerate(active.tolist()):
            out[a] = [x for x in order[a] if x != skip[b]][plan[b][2]]
        return out

    return choose


def _branch(
    backend, config, ids, texts, rows, roots, roots_dec, state, plan, hook=None, top_first=False
) -> list[Trace]:
    """Continue every (root, t, j) of ``plan`` from the kept root cache; returns full traces."""
    width = state.prompt_width
    keep, refeed, positions, seeds = [], [], [], []
    for r, t, j in plan:
        i = rows[r][0]
        prefix = ids[i] + roots[r].token_ids[:t].tolist()
        # attend to the prompt and root tokens 0..t-2; token t-1 (or the prompt's last token
        # when t = 0) is fed again to produce the logits of branch token t
        keep.append(width - 1 + t)
        refeed.append(prefix[-1])
        positions.append(len(prefix) - 1)
        seeds.append(seed_function(0, [branch_seed(roots_dec.row_seeds[r], t, j)])(0, 0))
    budget = [config.max_new_tokens - t for _, t, _ in plan]
    cfg = GenerationConfig.from_dict({**config.to_dict(), "max_new_tokens": max(budget)})
    dec = RowDecoder(
        backend, cfg, seeds, warper=resolve_warper(cfg), step_hook=hook,
        first_token=_top_first(plan, roots) if top_first else None,
    )  # fmt: skip
    new_state, logits = fork(backend.model, state, [r for r, _, _ in plan], keep, refeed, positions)
    limit = torch.tensor(budget)

    def step_fn(active: torch.Tensor, step: int, raw: torch.Tensor):
        chosen, finished = dec(active, step, raw)
        over = step + 1 >= limit[active]  # a branch never exceeds the root's token budget
        for j in (over & ~finished).nonzero().flatten().tolist():
            dec.finish[int(active[j])] = "length"
        return chosen, finished | over

    run_steps(backend.model, new_state, logits, step_fn, max_new_tokens=cfg.max_new_tokens,
              pad_id=backend.pad_id)  # fmt: skip
    out = []
    for b, (r, t, j) in enumerate(plan):
        i = rows[r][0]
        own = dec.trace(b, texts[i], i, 0, {"prompt_tokens": len(ids[i])})
        out.append(_join(backend, roots[r], own, t, r, j))
    return out


def _join(backend, root: Trace, own: Trace, t: int, r: int, j: int) -> Trace:
    """Root tokens 0..t−1 (with the root's statistics) followed by the branch's own tokens."""
    meta = {
        **own.meta,
        "parent_row": r,
        "branch_position": t,
        "branch": j,
        "new_tokens": len(own),
        "inherited_tokens": t,
    }
    return Trace.joined(root, t, own, meta=meta)
