"""ECHO's DeepConf branching and pruning (Zhao et al. 2026, arXiv:2602.02150; official code
user683/ECHO ``verl/workers/rollout/deepconf_branching.py`` + ``vllm_rollout_spmd.py``).

Per generated token t, from its top-``logprob_top_k`` log-probs renormalised to probabilities p:

* ``H_t = −Σ p·log max(p, 1e-9)`` (entropy of the renormalised top-k);
* ``C_t = −mean(log(p_top5 + 1e-9))`` — DeepConf's token confidence (higher = more peaked);
* ``C^group_t`` = mean of the last ``group_window`` C, ``C^tail_t`` = mean of the last
  ``tail_window`` C; ``ΔH_t = H_t − mean(H over the ``entropy_window`` tokens before t)`` (0 at
  t = 0); ``c_bot10`` = mean of the lowest ``max(1, ⌊0.1·k⌋)`` probabilities.

**Branch plan** (on each root): the first t ≥ ``min(min_depth, T−1)`` with ``H_t ≥ entropy_high``,
``C^group_t ≤ branch_threshold`` and ``ΔH_t ≥ entropy_delta_threshold``; its width
``w = clip(round(min_b + α·(H_t − H_lo)/(H_hi − H_lo) − β·(C^group_t − τ)/|τ|), min_b, max_b)``;
no branch when ``w ≤ 1``. The root counts as one of the w candidates, so ``w − 1`` branches
continue from root tokens ``0..t−1``.

**Pruning** (on every row): scanning t = 0, 1, …, prune at the first t where the running min of
``C^group`` < ``prune_threshold`` ("low_confidence"), or ``C^tail`` fell ``tail_decline_steps``
times in a row and ``C^tail_t ≤ tail_threshold`` ("tail_decline"), or ΔH was > 0
``delta_rise_steps`` times in a row and ``ΔH_t > delta_upper`` ("entropy_spike"); the row keeps
tokens ``0..t``. The official penalty ``λ1·C^tail − λ2·(1 − c_bot10) − λ3`` is computed and logged
(the official trainer never reads it either).

Where this differs from the official code (deliberately, documented in docs/rl_results.md):

* the official ``DeepConfParams`` has no ``group_window`` field (a typo, ``gentropy_roup_window``),
  so the official config crashes when branching is enabled — and every official example script
  sets ``deepconf.enable=False``; we use the config's intended ``group_window: 4``;
* a branch's statistics start at its first own token (as the official code's), and it is cut at
  that same token — the official code cuts ``tokens[:prune_pos + 1]`` counting from the start of
  the inherited prefix, a misalignment;
* ``branch_tokens`` (default ``"top_w"``, as the official code): the w − 1 branches are forced
  to the most likely tokens at t other than the root's own token t, then sample on. This is the
  official rule (``vllm_rollout_spmd.py``: candidates = the top-w ids, the root's token put first
  when missing, cut to w, the root's skipped), so root + branches start with w distinct tokens;
  a forced token's log-prob (trace and PPO old log-prob) is the policy's log-prob of it.
  ``"sample"`` samples them instead;
* group shape: the official rollout branches one root per prompt and fills the group up to n
  with fresh samples (cut at n); ``echo_rollout`` branches each of G = ``num_samples`` roots
  (G = 1 is the official shape) and cuts/fills to ``size`` the same way;
* the official ``logprob_top_k`` steps also hold the sampled token when it is outside the top-k
  (vLLM's format); ours hold the top-k only.

With the official thresholds nothing fires on a top-10 distribution: ``H ≤ log 10 = 2.30 <
entropy_high = 3.5`` and ``C ≥ log 5 = 1.61 > branch_threshold = 1.2`` (so also never below
``prune_threshold = 0.4``). :data:`ECHO_BRANCH_DEFAULTS` holds the official values; recipes set
task-scale thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.rl.tree_rollout import TreeRollout, tree_rollout
from entrolab.types import Trace

__all__ = [
    "ECHO_BRANCH_DEFAULTS",
    "EchoBrancher",
    "PruneState",
    "deepconf_step_stats",
    "echo_branch_plan",
    "echo_branch_width",
    "echo_prune",
    "echo_rollout",
]

#: user683/ECHO ``ppo_trainer.yaml`` ``rollout.deepconf`` (group_window as intended, see above).
ECHO_BRANCH_DEFAULTS: dict[str, Any] = {
    "min_depth": 4,
    "entropy_window": 4,
    "group_window": 4,
    "tail_window": 8,
    "tail_decline_steps": 3,
    "tail_threshold": 1.0,
    "delta_rise_steps": 3,
    "delta_upper": 0.5,
    "entropy_high": 3.5,
    "entropy_low": 1.0,
    "branch_threshold": 1.2,
    "entropy_delta_threshold": 0.2,
    "min_branches": 1,
    "max_branches": 4,
    "alpha": 2.0,
    "beta": 1.0,
    "prune_threshold": 0.4,
    "logprob_top_k": 10,
    "confidence_top_k": 5,
    "prune_lambda_1": 1.0,
    "prune_lambda_2": 1.0,
    "prune_lambda_3": 0.05,
    "branch_tokens": "top_w",  # first tokens of the branches: "top_w" (official) | "sample"
}
BRANCH_TOKENS = ("top_w", "sample")
_EPS = 1e-9


def _params(overrides: dict[str, Any] | None) -> dict[str, Any]:
    p = {**ECHO_BRANCH_DEFAULTS, **(overrides or {})}
    unknown = sorted(set(p) - set(ECHO_BRANCH_DEFAULTS))
    if unknown:
        raise EntrolabError(
            f"unknown ECHO branching settings {unknown}; known: {sorted(ECHO_BRANCH_DEFAULTS)}"
        )
    for key in ("entropy_window", "group_window", "tail_window", "logprob_top_k",
                "confidence_top_k"):  # fmt: skip
        if int(p[key]) < 1:
            raise EntrolabError(f"ECHO branching: {key} must be >= 1, got {p[key]}")
    if p["branch_tokens"] not in BRANCH_TOKENS:
        raise EntrolabError(
            f"ECHO branching: branch_tokens must be one of {BRANCH_TOKENS}, "
            f"got {p['branch_tokens']!r}"
        )
    if not 1 <= int(p["min_branches"]) <= int(p["max_branches"]):
        raise EntrolabError("ECHO branching: need 1 <= min_branches <= max_branches")
    return p


def deepconf_step_stats(
    topk_logprobs: torch.Tensor, params: dict[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """Per-token DeepConf statistics of one row (see module docstring).

    Args:
        topk_logprobs: ``[T, K]`` log-probs of the K most likely tokens, most likely first
            (only the first ``logprob_top_k`` are used).
    Returns:
        float64 ``[T]`` tensors ``entropy``, ``confidence``, ``group_conf``, ``tail_conf``,
        ``delta_entropy``, ``c_bot10``.
    """
    p = _params(params)
    if topk_logprobs.dim() != 2:
        raise EntrolabError(f"topk_logprobs must be [T, K], got {tuple(topk_logprobs.shape)}")
    lp = topk_logprobs[:, : int(p["logprob_top_k"])].double()
    t_len, k = lp.shape
    if t_len == 0:
        z = torch.zeros(0, dtype=torch.float64)
        return dict.fromkeys(
            ("entropy", "confidence", "group_conf", "tail_conf", "delta_entropy", "c_bot10"), z
        )
    probs = torch.exp(lp - lp.max(-1, keepdim=True).values)
    probs = probs / probs.sum(-1, keepdim=True).clamp(min=_EPS)
    pc = probs.clamp(_EPS, 1.0)
    ent = -(pc * pc.log()).sum(-1)
    top = probs.sort(-1, descending=True).values[:, : min(k, int(p["confidence_top_k"]))]
    conf = -torch.log(top + _EPS).mean(-1)
    bottom = max(1, int(0.1 * k))
    c_bot = probs.sort(-1).values[:, :bottom].mean(-1)
    gw, tw, ew = int(p["group_window"]), int(p["tail_window"]), int(p["entropy_window"])
    group = torch.stack([conf[max(0, t - gw + 1) : t + 1].mean() for t in range(t_len)])
    tail = torch.stack([conf[max(0, t - tw + 1) : t + 1].mean() for t in range(t_len)])
    prev = [ent[max(0, t - ew) : t].mean() if t else ent[0] for t in range(t_len)]
    delta = ent - torch.stack(prev)
    return {"entropy": ent, "confidence": conf, "group_conf": group, "tail_conf": tail,
            "delta_entropy": delta, "c_bot10": c_bot}  # fmt: skip


def echo_branch_width(
    entropy: float, group_conf: float, params: dict[str, Any] | None = None
) -> int:
    """``clip(round(min_b + α·(H − H_lo)/(H_hi − H_lo) − β·(C − τ)/|τ|), min_b, max_b)``
    (numpy's round: halves to even)."""
    p = _params(params)
    span = max(p["entropy_high"] - p["entropy_low"], _EPS)
    term_h = p["alpha"] * (entropy - p["entropy_low"]) / span
    term_c = (
        p["beta"] * (group_conf - p["branch_threshold"]) / max(abs(p["branch_threshold"]), _EPS)
    )
    raw = p["min_branches"] + term_h - term_c
    lo, hi = int(p["min_branches"]), int(p["max_branches"])
    return int(min(max(round(raw), lo), hi))


def echo_branch_plan(
    stats: dict[str, torch.Tensor], params: dict[str, Any] | None = None
) -> tuple[int, int] | None:
    """``(position t, width w ≥ 2)`` of the first qualifying token, or None (module docstring)."""
    p = _params(params)
    n = int(stats["entropy"].numel())
    if n == 0:
        return None
    for t in range(min(int(p["min_depth"]), n - 1), n):
        h, gc = float(stats["entropy"][t]), float(stats["group_conf"][t])
        if (
            h >= p["entropy_high"]
            and gc <= p["branch_threshold"]
            and float(stats["delta_entropy"][t]) >= p["entropy_delta_threshold"]
        ):
            w = echo_branch_width(h, gc, p)
            return None if w <= 1 else (t, w)
    return None


@dataclass
class PruneState:
    """Running state of the pruning scan of one row (fed one token's statistics at a time)."""

    params: dict[str, Any]
    min_group: float = math.inf
    last_tail: float | None = None
    declines: int = 0
    rises: int = 0
    steps: int = 0
    conf: list[float] = field(default_factory=list)
    ent: list[float] = field(default_factory=list)

    def push(self, topk_logprobs: torch.Tensor) -> tuple[str, float] | None:
        """Add token ``steps`` (its ``[K]`` top-k log-probs); ``(reason, penalty)`` if the row
        is pruned at this token, else None."""
        st = deepconf_step_stats(topk_logprobs[None], self.params)
        h, c = float(st["entropy"][0]), float(st["confidence"][0])
        p = self.params
        self.conf.append(c)
        self.ent.append(h)
        gw, tw, ew = int(p["group_window"]), int(p["tail_window"]), int(p["entropy_window"])
        group = sum(self.conf[-gw:]) / len(self.conf[-gw:])
        tail = sum(self.conf[-tw:]) / len(self.conf[-tw:])
        prev = self.ent[-ew - 1 : -1]
        delta = h - (sum(prev) / len(prev) if prev else h)
        self.min_group = min(self.min_group, group)
        self.declines = (
            self.declines + 1 if self.last_tail is not None and tail < self.last_tail else 0
        )
        self.rises = self.rises + 1 if delta > 0 else 0
        self.last_tail = tail
        self.steps += 1
        penalty = p["prune_lambda_1"] * tail - p["prune_lambda_2"] * (1 - float(st["c_bot10"][0]))
        penalty -= p["prune_lambda_3"]
        if self.min_group < p["prune_threshold"]:
            return "low_confidence", penalty
        if self.declines >= p["tail_decline_steps"] and tail <= p["tail_threshold"]:
            return "tail_decline", penalty
        if self.rises >= p["delta_rise_steps"] and delta > p["delta_upper"]:
            return "entropy_spike", penalty
        return None


def echo_prune(
    topk_logprobs: torch.Tensor, params: dict[str, Any] | None = None
) -> tuple[int, str, float] | None:
    """``(position, reason, penalty)`` of the first pruning token of a row ``[T, K]``, or None."""
    state = PruneState(_params(params))
    for t in range(topk_logprobs.shape[0]):
        hit = state.push(topk_logprobs[t])
        if hit is not None:
            return t, hit[0], hit[1]
    return None


class EchoBrancher:
    """The three callables :func:`entrolab.backends.tree.generate_tree` takes for ECHO, for one
    call: ``rule`` (at most one branch point per root), ``width`` (``w − 1`` branches) and
    ``hook`` (online pruning of branch rows); then :meth:`prune_roots` prunes the roots after
    the fact (as the official code prunes every completion after generation).

    ``generate_tree`` calls ``rule`` and ``width`` root by root in order and numbers branch rows
    in that plan order, which is how the hook finds each branch row's state.
    """

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params = _params(params)
        self._plans: dict[int, tuple[int, int]] = {}  # id(root trace) -> (t, w)
        self._rows: list[tuple[int, int]] = []  # branch row -> (t, w)
        self._state: dict[int, PruneState] = {}
        self.pruned: dict[int, tuple[int, str, float]] = {}  # branch row -> (own pos, reason, pen)

    def rule(self, root: Trace, k: int, generator: torch.Generator) -> list[int]:
        if k < 1 or root.topk_logprobs is None or len(root) == 0:
            return []
        plan = echo_branch_plan(deepconf_step_stats(root.topk_logprobs, self.params), self.params)
        if plan is None:
            return []
        self._plans[id(root)] = plan
        return [plan[0]]

    def width(self, root: Trace, t: int) -> int:
        plan = self._plans.get(id(root))
        n = 0 if plan is None or plan[0] != t else plan[1] - 1
        self._rows += [(t, n)] * n
        return n

    def hook(self, rows: torch.Tensor, step: int, stats) -> torch.Tensor:
        stop = torch.zeros(rows.shape, dtype=torch.bool)
        for j, r in enumerate(rows.tolist()):
            state = self._state.setdefault(r, PruneState(self.params))
            hit = state.push(stats.topk_logprobs[j].detach().cpu())
            if hit is not None:
                self.pruned[r] = (state.steps - 1, hit[0], hit[1])
                stop[j] = True
        return stop

    def prune_roots(
        self, roots: Sequence[Trace]
    ) -> tuple[list[Trace], list[tuple[int, str, float] | None]]:
        """Each root cut after its pruning token (``finish_reason="stopped"``) and the
        decisions."""
        out, hits = [], []
        for tr in roots:
            hit = None if tr.topk_logprobs is None else echo_prune(tr.topk_logprobs, self.params)
            hits.append(hit)
            out.append(
                tr
                if hit is None or hit[0] + 1 >= len(tr)
                else tr.head(hit[0] + 1, finish_reason="stopped")
            )
        return out, hits


def echo_rollout(
    backend: Any,
    prompts: Sequence[str],
    config: GenerationConfig,
    seeds: Sequence[int],
    *,
    size: int,
    params: dict[str, Any] | None = None,
    prefix: str = "full",
    prune: bool = True,
) -> tuple[TreeRollout, dict[str, float]]:
    """ECHO's branched rollout: G = ``config.num_samples`` roots per prompt, ``w − 1`` branches at
    each root's plan point sharing its KV cache, branch rows pruned online and roots after the
    fact (``prune``), each group cut/filled to ``size`` rows (the official code caps a prompt at
    n rows and fills with fresh samples). ``prefix="full"``: as the official code, a branch's
    inherited prefix is part of its response; ``params["branch_tokens"]`` picks forced top-w
    (default, official) or sampled first branch tokens. Returns the rollout and ``echo/*``
    metrics."""
    p = _params(params)
    k = int(p["logprob_top_k"])
    if config.topk_logprobs < k:
        config = GenerationConfig.from_dict({**config.to_dict(), "topk_logprobs": k})
    br = EchoBrancher(p)
    root_hits: list = []

    def post(roots: list[Trace]) -> list[Trace]:
        out, hits = br.prune_roots(roots)
        root_hits.extend(hits)
        return out if prune else list(roots)

    tr = tree_rollout(
        backend, prompts, config, seeds, rule=br.rule, points=1, branches=br.width,
        prefix=prefix, size=size, branch_hook=br.hook if prune else None, roots_post=post,
        first_tokens="top" if p["branch_tokens"] == "top_w" else "sample",
    )  # fmt: skip
    n_roots = max(len(root_hits), 1)
    widths = [w for _, w in br._plans.values()]
    pruned_roots = [h for h in root_hits if h is not None] if prune else []
    hits = pruned_roots + (list(br.pruned.values()) if prune else [])
    metrics = {
        "echo/branch_root_frac": len(widths) / n_roots,
        "echo/width_mean": sum(widths) / len(widths) if widths else 0.0,
        "echo/branches_planned": float(len(br._rows)),
        "echo/pruned_root_frac": len(pruned_roots) / n_roots,
        "echo/pruned_branch_frac": len(br.pruned) / max(len(br._rows), 1) if prune else 0.0,
        "echo/prune_penalty": sum(h[2] for h in hits) / len(hits) if hits else 0.0,
    }
    for reason in ("low_confidence", "tail_decline", "entropy_spike"):
        metrics[f"echo/prune_{reason}"] = float(sum(h[1] == reason for h in hits))
    return tr, metrics
