"""Rollouts that explore by branching: tree rollouts (shared KV prefix) and CURE re-concatenation,
laid out as an ordinary :class:`~entrolab.rl.rollout.Rollout` plus per-token credit weights.

Each prompt gets a fixed group of ``G' = G·(1 + points·branches)`` rows (roots first, then
branches): :func:`~entrolab.backends.tree.generate_tree` may return fewer branches for a short
root (a root of L tokens has at most L − 1 branch points), and the missing slots are filled with
fresh samples from the prompt — a branch at position 0 is exactly an i.i.d. sample — so group
advantages keep their ``[N, G']`` shape.

How a branch's inherited prefix (root tokens ``0..t−1``) enters the loss (``prefix``):

- ``"prompt"`` (CURE, Li et al. 2025, ``recipe/CURE_First_Stage``): the prefix is part of the
  prompt. The row's ``prompt_ids`` are prompt + prefix and its response is only the branch's own
  tokens, so the prefix gets no gradient and leaves the token-mean denominator.
- ``"shared"`` (tree advantages, shared credit): the row holds the whole response; a token that
  ``m`` rows share (the root and every branch of it forked after that token) gets credit weight
  ``1/m`` in every one of them, so its total gradient is ``mean_{rows sharing it}(A)·∇ℓ`` — the
  prefix's value is the mean return of the leaves beneath it (TreeRL-style). The weight is folded
  into the advantages (``w·min(rA, clip(r)A) = min(r·wA, clip(r)·wA)``, spec §1), which leaves the
  token-mean denominator unchanged.
- ``"full"``: every row is an independent sequence (weight 1 everywhere; ETTRL's plain use).

Budget accounting: ``TreeRollout.new_tokens`` counts only newly generated tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from entrolab.backends.decode import StepHook, pad_batch
from entrolab.backends.tree import BranchRule, branch_seed, generate_tree
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.rl.rollout import Rollout
from entrolab.types import Trace

__all__ = [
    "PREFIX_MODES",
    "TreeRollout",
    "critical_positions",
    "cure_rollout",
    "cure_rule",
    "shared_credit",
    "traces_rollout",
    "tree_rollout",
]

PrefixMode = Literal["prompt", "shared", "full"]
PREFIX_MODES = ("prompt", "shared", "full")


@dataclass(frozen=True)
class TreeRollout:
    """A branched rollout batch.

    Attributes:
        rollout: R = N·G' rows, prompt-major (``rollout.group_size`` = G').
        credit: float32 [R, T] per-token credit weights aligned with ``rollout.response_ids``
            (1 on own tokens; ``1/m`` on tokens shared by m rows in ``"shared"`` mode; 0 off-mask).
        parent: R ints, the row of a branch's root (−1 for roots and fill samples).
        branch_position: R ints, the position t a branch forked at (0 for roots / fills).
        new_tokens: tokens generated for this batch (inherited prefixes not counted).
        fills: rows that were filled with fresh samples because a root was too short.
        traces: the R full traces (whole responses), in row order.
    """

    rollout: Rollout
    credit: torch.Tensor
    parent: list[int]
    branch_position: list[int]
    new_tokens: int
    fills: int
    traces: list[Trace]

    def metrics(self) -> dict[str, float]:
        """``explore/*`` metrics: branch share, mean fork position, budget."""
        n = max(len(self.parent), 1)
        pos = [p for p, par in zip(self.branch_position, self.parent, strict=True) if par >= 0]
        return {
            "explore/rows": float(len(self.parent)),
            "explore/branch_frac": sum(p >= 0 for p in self.parent) / n,
            "explore/fill_frac": self.fills / n,
            "explore/branch_position": sum(pos) / len(pos) if pos else 0.0,
            "explore/new_tokens": float(self.new_tokens),
        }


def shared_credit(
    lengths: Sequence[int], parent: Sequence[int], position: Sequence[int]
) -> torch.Tensor:
    """Credit weights ``[R, T]`` for ``"shared"`` mode (T = max length).

    Token ``p`` of root ``r`` is shared by ``m(r, p) = 1 + #{branches b of r : t_b > p}`` rows
    (the branches forked after it inherit it); it gets ``1/m`` in the root and in each of those
    branches. A branch's own tokens (``p ≥ t_b``) get 1. Depth-1 trees (branches of roots).
    """
    r_count = len(lengths)
    t_max = max([*lengths, 1])
    w = torch.zeros(r_count, t_max)
    kids: dict[int, list[int]] = {}
    for b, par in enumerate(parent):
        if par >= 0:
            if parent[par] >= 0:
                raise EntrolabError("shared_credit: branches of branches are not supported")
            kids.setdefault(par, []).append(b)
    for r in range(r_count):
        w[r, : lengths[r]] = 1.0
    for r, bs in kids.items():
        for p in range(lengths[r]):
            sharing = [b for b in bs if position[b] > p]
            if sharing:
                m = 1.0 + len(sharing)
                w[r, p] = 1.0 / m
                for b in sharing:
                    w[b, p] = 1.0 / m
    return w


def traces_rollout(
    backend: Any,
    prompt_ids: Sequence[list[int]],
    rows: Sequence[Trace],
    cut: Sequence[int],
    group_size: int,
) -> Rollout:
    """A :class:`Rollout` from per-row traces: row ``i``'s prompt is ``prompt_ids[i]`` plus the
    first ``cut[i]`` tokens of its trace, its response the rest (``texts`` stay whole)."""
    prompts = [
        list(p) + t.token_ids[:c].tolist() for p, t, c in zip(prompt_ids, rows, cut, strict=True)
    ]
    resp = [t.token_ids[c:].tolist() for t, c in zip(rows, cut, strict=True)]
    if any(not r for r in resp):
        raise EntrolabError("a branch has no token of its own (cut at the end of its trace)")
    ids, mask = pad_batch(resp, int(backend.pad_id), "right")
    return Rollout(
        prompt_ids=prompts,
        response_ids=ids,
        response_mask=mask.to(torch.bool),
        texts=[t.text for t in rows],
        prompt_index=torch.tensor([t.prompt_index for t in rows], dtype=torch.int64),
        group_size=group_size,
    )


def _prompt_ids(backend: Any, prompts: Sequence[str], config: GenerationConfig) -> list[list[int]]:
    return [
        backend.prompt_ids(
            p, chat_template=config.chat_template, system_prompt=config.system_prompt
        )
        for p in prompts
    ]


def _fill(backend, prompt_ids, config, seeds, i, need) -> list[Trace]:
    """``need`` fresh samples of prompt ``i`` (token-id prompt, seeded from the prompt's seed)."""
    cfg = GenerationConfig.from_dict({**config.to_dict(), "num_samples": need})
    seed = branch_seed(int(seeds[i]), 0, -1)
    out = backend.generate([prompt_ids[i]], cfg, seeds=[seed])
    return [t for t in out]


def _finish(backend, prompt_ids, groups, prefix: str, group_size: int, fills: int) -> TreeRollout:
    """Lay out per-prompt lists of (trace, parent index within group or −1, position)."""
    rows: list[Trace] = []
    parent: list[int] = []
    position: list[int] = []
    row_prompt: list[list[int]] = []
    for i, group in enumerate(groups):
        base = len(rows)
        for s, (tr, par, pos) in enumerate(group):
            rows.append(_reindex(tr, i, s))
            parent.append(base + par if par >= 0 else -1)
            position.append(pos)
            row_prompt.append(prompt_ids[i])
    cut = [p if prefix == "prompt" else 0 for p in position]
    ro = traces_rollout(backend, row_prompt, rows, cut, group_size)
    lengths = ro.response_mask.sum(-1).tolist()
    if prefix == "shared":
        credit = shared_credit(lengths, parent, position)
    else:
        credit = ro.response_mask.float()
    credit = credit[:, : ro.response_ids.shape[1]]
    new = sum(len(t) - p for t, p in zip(rows, position, strict=True))
    return TreeRollout(ro, credit, parent, position, int(new), fills, rows)


def _reindex(tr: Trace, i: int, s: int) -> Trace:
    from dataclasses import replace

    return replace(tr, prompt_index=i, sample_index=s)


def tree_rollout(
    backend: Any,
    prompts: Sequence[str],
    config: GenerationConfig,
    seeds: Sequence[int],
    *,
    rule: str | BranchRule = "entropy",
    points: int = 2,
    branches: int | Callable[[Trace, int], int] = 2,
    prefix: PrefixMode = "shared",
    size: int | None = None,
    branch_hook: StepHook | None = None,
    roots_post: Callable[[list[Trace]], list[Trace]] | None = None,
    first_tokens: str = "sample",
) -> TreeRollout:
    """G roots per prompt (``config.num_samples``) and continuations at up to ``points``
    positions of each root chosen by ``rule`` (a name in ``backends.tree.BRANCH_RULES`` or a
    callable), ``branches`` per point (an int, or a per-point width function), the prefix reused
    from the roots' KV cache; ``branch_hook`` prunes branch rows online.

    Every prompt gets exactly ``size`` rows (default ``G·(1 + points·branches)``): roots first,
    then branches in plan order, cut at ``size`` (as ECHO caps a group at n) and filled with
    fresh samples when fewer (short roots, or a rule that found no point). ``roots_post`` may
    rewrite the roots after the branches were planned (ECHO prunes them after the fact);
    ``first_tokens`` as :func:`~entrolab.backends.tree.generate_tree` (``"top"``: ECHO's forced
    top-w first tokens)."""
    if prefix not in PREFIX_MODES:
        raise EntrolabError(f"prefix must be one of {PREFIX_MODES}, got {prefix!r}")
    if len(prompts) != len(seeds):
        raise EntrolabError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    g = config.num_samples
    if size is None:
        if callable(branches):
            raise EntrolabError("a branch width function needs an explicit group size (size=)")
        size = g * (1 + points * branches)
    if size < g:
        raise EntrolabError(f"the group size {size} is smaller than the {g} roots")
    tb = generate_tree(
        backend, list(prompts), config, rule=rule, points=points, branches=branches,
        seeds=seeds, branch_hook=branch_hook, first_tokens=first_tokens,
    )  # fmt: skip
    traces = list(tb)
    if roots_post is not None:
        root_rows = [k for k, tr in enumerate(traces) if "parent" not in tr.meta]
        for k, tr in zip(root_rows, roots_post([traces[k] for k in root_rows]), strict=True):
            traces[k] = tr
    return _groups_from_tree(backend, prompts, config, seeds, traces, prefix, size)


def _groups_from_tree(backend, prompts, config, seeds, traces, prefix, size) -> TreeRollout:
    """Per-prompt groups of ``size`` rows from ``generate_tree``'s traces (cut, then filled)."""
    ids = _prompt_ids(backend, prompts, config)
    by_prompt: list[list[tuple[Trace, int, int]]] = [[] for _ in prompts]
    starts: dict[int, int] = {}
    for k, tr in enumerate(traces):
        if tr.prompt_index not in starts:
            starts[tr.prompt_index] = k
        par = tr.meta.get("parent")
        local = -1 if par is None else int(par) - starts[tr.prompt_index]
        by_prompt[tr.prompt_index].append((tr, local, int(tr.meta.get("branch_position", 0))))
    fills = 0
    for i, group in enumerate(by_prompt):
        del group[size:]
        need = size - len(group)
        if need > 0:
            group += [(t, -1, 0) for t in _fill(backend, ids, config, seeds, i, need)]
            fills += need
    return _finish(backend, ids, by_prompt, prefix, size, fills)


def critical_positions(
    trace: Trace, top_k: int, *, special_ids: Sequence[int] = (), min_chars: int = 2
) -> list[int]:
    """CURE's candidate positions (``get_critic_key_token_mask`` of bytedance/CURE): positions in
    decreasing entropy order (ties: earliest), skipping position 0, special tokens (and a final
    EOS), and tokens whose text without surrounding spaces has fewer than ``min_chars``
    characters (CURE: "decodes to more than one character"); the first ``top_k`` that pass."""
    n = len(trace)
    if trace.finish_reason == "eos":
        n -= 1
    special = set(int(s) for s in special_ids)
    order = sorted(range(1, n), key=lambda p: (-float(trace.entropy[p]), p))
    ok = [
        p
        for p in order
        if int(trace.token_ids[p]) not in special and len(trace.tokens[p].strip()) >= min_chars
    ]
    return ok[:top_k]


def cure_rule(
    top_k: int = 20,
    *,
    special_ids: Sequence[int] = (),
    min_chars: int = 2,
    mode: Literal["entropy", "random"] = "entropy",
) -> BranchRule:
    """CURE's branch rule for :func:`~entrolab.backends.tree.generate_tree`: one position drawn
    uniformly (with the tree's per-root generator) from :func:`critical_positions`, or, with
    ``mode="random"`` (CURE's control), from every eligible position in a random order; no
    point when there is no candidate (CURE then branches at 0: a fresh sample, filled by
    :func:`tree_rollout`).

    The backend's own ``critical`` rule differs from CURE's code (it keeps special tokens such
    as EOS and counts its pool before the character filter; /work/notes/tree_needs.md), so RL
    passes this callable."""
    if top_k < 1 or min_chars < 0:
        raise EntrolabError("CURE needs top_k >= 1 and min_chars >= 0")
    if mode not in ("entropy", "random"):
        raise EntrolabError(f"critical must be 'entropy' or 'random', got {mode!r}")

    def rule(trace: Trace, k: int, generator: torch.Generator) -> list[int]:
        if k < 1:
            return []
        if mode == "entropy":
            cand = critical_positions(trace, top_k, special_ids=special_ids, min_chars=min_chars)
        else:
            every = critical_positions(trace, len(trace), special_ids=special_ids,
                                       min_chars=min_chars)  # fmt: skip
            perm = torch.randperm(len(every), generator=generator).tolist()
            cand = [every[j] for j in perm][:top_k]
        if not cand:
            return []
        return [cand[int(torch.randint(len(cand), (1,), generator=generator))]]

    return rule


def cure_rollout(
    backend: Any,
    prompts: Sequence[str],
    config: GenerationConfig,
    seeds: Sequence[int],
    *,
    n2: int = 3,
    top_k: int = 20,
    critical: Literal["entropy", "random"] = "entropy",
    min_chars: int = 2,
) -> TreeRollout:
    """CURE stage 1 (critical-token re-concatenation) as a tree rollout: n1 =
    ``config.num_samples`` roots per prompt, one critical position c per root
    (:func:`cure_rule`), ``n2`` continuations from root tokens ``0..c−1`` sharing the root's KV
    cache (the critical token itself is resampled). Group = n1 + n1·n2 rows; branch prefixes are
    part of the prompt (no gradient). A root with no candidate gets n2 fresh samples (CURE's
    c = 0). ``min_chars=1`` for byte-level tokenizers, where every token is one character.
    """
    if n2 < 1 or top_k < 1:
        raise EntrolabError("CURE needs n2 >= 1 and top_k >= 1")
    special = list(getattr(getattr(backend, "tokenizer", None), "all_special_ids", []) or [])
    rule = cure_rule(top_k, special_ids=special, min_chars=min_chars, mode=critical)
    n1 = config.num_samples
    return tree_rollout(
        backend, prompts, config, seeds, rule=rule, points=1, branches=n2, prefix="prompt",
        size=n1 * (1 + n2),
    )  # fmt: skip
