"""ZIP-RC: zero-overhead introspection of reward and cost (Manvi et al. 2025, arXiv:2512.01457).

A head on a prefix's hidden state predicts the *joint* distribution of the final reward bin b
and the remaining-length bin ℓ, P(b, ℓ | x, y_<t). The paper reads it from reserved vocabulary
logits in the same forward pass: ``head="reserved"`` does so (unused LM-head rows fitted on the
final hidden state, :mod:`entrolab.inference.zip_rc_reserved`); SmolLM2 has no unused tokens to
reserve, so the default (the spec's CPU form, B10.5) is a separate multinomial logistic head on
frozen hidden states (a :class:`~entrolab.inference.probes.Probe` with B·L classes, class =
b·L + ℓ); both in :mod:`entrolab.inference.zip_rc_head`, trained on the model's own rollouts:
at the prompt end and every ``stride`` generated tokens, target = (the rollout's graded reward,
its remaining tokens binned by ``length_edges``).

**Sampling utility** of a set S of samples (independent given their predictions):

    U(S) = E[max_{i∈S} R_i] − λ_c · E[Σ_{i∈S} len_i] − λ_ℓ · E[max_{i∈S} len_i]

with len_i = tokens already generated + remaining, each bin standing for its ``length_values``
entry (:func:`utility`; exact expectations of max via products of CDFs; the planned-pruning
rule counts remaining tokens only, as the official code does). Meta-actions
(:class:`ZipRcStrategy`): the **initial sample count** n₀ = argmax_n U(n copies of the
prompt-end prediction) (:func:`initial_count`); **pruning** at ``prune_at`` tokens to the subset
of live samples with the highest U (:func:`best_subset`: exact over subsets up to 12 samples);
with ``future_prune=True`` the decision also plans a future prune
(:func:`~entrolab.inference.zip_rc_plan.choose_action`, the official code's rule): survivors
still unfinished after the lower edge of the chosen remaining-length bin are pruned then (they
leave the vote; their tokens count). One decision point (``prune_at``). Survivors finish and the
majority answer among them is the reply; every generated token is counted.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from entrolab.backends.base import Backend
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.inference.base import (
    STRATEGIES,
    ItemOutcome,
    ProgressFn,
    Sampling,
    check_run,
    item_seeds,
    report_done,
)
from entrolab.inference.zip_rc_head import (
    ZipRcHead,
    collect_zip_data,
    fit_zip_rc,
    length_bin,
    load_zip_rc,
    save_zip_rc,
)
from entrolab.inference.zip_rc_plan import choose_action

__all__ = [
    "ZipRcHead",
    "ZipRcStrategy",
    "best_subset",
    "collect_zip_data",
    "fit_zip_rc",
    "initial_count",
    "length_bin",
    "load_zip_rc",
    "save_zip_rc",
    "utility",
]

_PAPER = "Manvi et al. 2025, ZIP-RC: joint reward and cost introspection, arXiv:2512.01457"


# ------------------------------------------------------------------------------ pure maths
def _expected_max(values: np.ndarray, probs: np.ndarray) -> float:
    """E[max_i X_i], X_i independent on per-row support ``values`` [S, M] with ``probs``
    [S, M]: Σ_v v · (Π_i P(X_i <= v) − Π_i P(X_i < v)) over the union of supports."""
    grid = np.unique(values)
    le = np.stack([(probs * (values <= v)).sum(1) for v in grid], 1)  # [S, |grid|]
    lt = np.stack([(probs * (values < v)).sum(1) for v in grid], 1)
    return float(np.sum(grid * (le.prod(0) - lt.prod(0))))


def utility(
    joint: Any,
    reward_values: Any,
    length_values: Any,
    used: Any = 0,
    *,
    lam_c: float = 0.0,
    lam_l: float = 0.0,
) -> float:
    """U(S) for S samples: ``joint`` [S, B, L] (each a distribution over (reward bin, remaining
    length bin)), ``reward_values`` [B], ``length_values`` [L] (tokens each remaining-length bin
    stands for), ``used`` [S] tokens already generated. An empty S has U = 0."""
    p = np.asarray(joint, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] == 0:
        return 0.0
    r, ell = np.asarray(reward_values, float), np.asarray(length_values, float)
    if p.shape[1:] != (len(r), len(ell)) or np.any(p < 0):
        raise EntrolabError(f"joint must be [S, {len(r)}, {len(ell)}] probabilities, got {p.shape}")
    p = p / p.sum(axis=(1, 2), keepdims=True)
    s = p.shape[0]
    used = np.broadcast_to(np.asarray(used, float), (s,))
    pr, pl = p.sum(2), p.sum(1)
    total = used[:, None] + ell[None, :]  # [S, L]
    e_max_r = _expected_max(np.broadcast_to(r, (s, len(r))), pr)
    e_sum_len = float(np.sum(pl * total))
    e_max_len = _expected_max(total, pl)
    return e_max_r - lam_c * e_sum_len - lam_l * e_max_len


def initial_count(joint0: Any, n_max: int, reward_values: Any, length_values: Any, **lam: float):
    """(n₀, [U(1), …, U(n_max)]): the number of i.i.d. samples of prediction ``joint0`` [B, L]
    (at the prompt end) with the highest utility (the smallest on ties)."""
    if n_max < 1:
        raise EntrolabError(f"the sample budget must be >= 1, got {n_max}")
    j = np.asarray(joint0, float)
    us = [utility(np.repeat(j[None], n, 0), reward_values, length_values, **lam)
          for n in range(1, n_max + 1)]  # fmt: skip
    return int(np.argmax(us)) + 1, us


def best_subset(
    joint: Any, reward_values: Any, length_values: Any, used: Any = 0, *, exact_up_to: int = 12,
    **lam: float,
) -> list[int]:  # fmt: skip
    """Indices of the non-empty subset of the S samples with the highest U: exact search over
    all subsets when S <= ``exact_up_to``, else over the top-k by expected reward."""
    p = np.asarray(joint, float)
    s = p.shape[0]
    used = np.broadcast_to(np.asarray(used, float), (s,))
    if s <= exact_up_to:
        cands = [list(c) for k in range(1, s + 1) for c in itertools.combinations(range(s), k)]
    else:
        er = (p.sum(2) * np.asarray(reward_values, float)).sum(1)
        order = np.argsort(-er, kind="stable").tolist()
        cands = [sorted(order[:k]) for k in range(1, s + 1)]
    scores = [utility(p[c], reward_values, length_values, used[c], **lam) for c in cands]
    return cands[int(np.argmax(scores))]


# ------------------------------------------------------------------------------ the strategy
class ZipRcStrategy:
    """n₀ samples by utility, prune at ``prune_at`` tokens to the best-utility subset, finish the
    survivors, majority vote. ``budget``: the most samples per item. ``future_prune``: also plan
    a later prune of the survivors (:func:`~entrolab.inference.zip_rc_plan.choose_action`)."""

    name = "zip-rc"

    def __init__(
        self, head: ZipRcHead | str | Path | None = None, budget: int = 8, prune_at: int = 8,
        lam_c: float = 0.002, lam_l: float = 0.0, sampling: Sampling | None = None,
        future_prune: bool = False,
    ) -> None:  # fmt: skip
        if head is None:
            raise EntrolabError("the 'zip-rc' strategy needs a fitted head (fit_zip_rc, "
                                "save_zip_rc) passed as head=PATH")  # fmt: skip
        if budget < 1 or prune_at < 1:
            raise EntrolabError(f"budget and prune_at must be >= 1, got {budget}, {prune_at}")
        self.head = head if isinstance(head, ZipRcHead) else load_zip_rc(head)
        self.budget, self.prune_at = int(budget), int(prune_at)
        self.lam = {"lam_c": float(lam_c), "lam_l": float(lam_l)}
        self.sampling = sampling or Sampling()
        self.future_prune = bool(future_prune)

    def run(self, backend: Backend, task: Any, items: Sequence[Any], *, seed: int = 0,
            on_progress: ProgressFn | None = None) -> list[ItemOutcome]:  # fmt: skip
        from entrolab.tasks import answer_key

        items = check_run(backend, items)
        h = self.head
        mask = h.prepare(backend)  # a reserved head: rows installed, their ids masked
        rv, lv = h.reward_values, h.length_values
        seeds = item_seeds(seed, items)
        out = []
        for i, item in enumerate(items):
            p_ids = backend.prompt_ids(item.prompt)
            j0 = h.read(backend, [p_ids])[0]
            n0, _ = initial_count(j0, self.budget, rv, lv, **self.lam)
            head_cfg = GenerationConfig(**{**self.sampling.config(n0).to_dict(), **mask,
                                           "max_new_tokens": self.prune_at, "seed": seeds[i]})  # fmt: skip
            first = list(backend.generate([item.prompt], head_cfg))
            seqs = [p_ids + t.token_ids.tolist() for t in first]
            joint = h.read(backend, seqs)
            done = [t.finish_reason != "length" for t in first]
            for k in np.flatnonzero(done):  # finished: nothing remains
                reward = joint[k].sum(1)
                joint[k] = 0.0
                joint[k][:, 0] = reward
            plan = None
            if self.future_prune:
                keep, plan, _ = choose_action(joint, rv, lv, finished=done, **self.lam)
            else:
                keep = best_subset(joint, rv, lv, [len(t) for t in first], **self.lam)
            cont = [k for k in keep if not done[k]]
            texts = {k: first[k].text for k in keep}
            extra, left = 0, self.sampling.max_new_tokens - self.prune_at
            cut = left if plan is None else min(left, h.length_edges[plan - 1])
            late: list[int] = []  # reached the planned prune unfinished: out of the vote
            if cont and cut > 0:
                rest = GenerationConfig(**{**self.sampling.config(1).to_dict(), **mask,
                                           "seed": seeds[i] + 1, "max_new_tokens": cut})  # fmt: skip
                more = list(backend.generate([seqs[k] for k in cont], rest))
                for k, t in zip(cont, more, strict=True):
                    texts[k] = backend.decode(first[k].token_ids.tolist() + t.token_ids.tolist())
                    extra += len(t)
                    if cut < left and t.finish_reason == "length":
                        late.append(k)
            keep = [k for k in keep if k not in late]
            keys = {k: task.extract(item, texts[k]) for k in keep}
            keys = {k: None if a is None else answer_key(a) for k, a in keys.items()}
            counts: dict[str, int] = {}
            for a in keys.values():
                if a is not None:
                    counts[a] = counts.get(a, 0) + 1
            answer = max(counts, key=lambda a: (counts[a], a)) if counts else None
            correct = answer is not None and any(
                keys[k] == answer and task.grade(item, texts[k]).correct for k in keep)  # fmt: skip
            out.append(ItemOutcome(
                item_id=item.id, answer=answer, correct=bool(correct),
                generated_tokens=int(sum(len(t) for t in first) + extra),
                prompt_tokens=len(p_ids), num_traces=n0,
                meta={"n0": n0, "kept": keep, "pruned": n0 - len(keep) - len(late),
                      "future_bin": plan, "planned_pruned": late},
            ))  # fmt: skip
            if on_progress is not None:
                on_progress(i + 1, len(items))
        report_done(on_progress, len(items))
        return out


def _factory(**params: Any) -> ZipRcStrategy:
    samp = {k: params.pop(k) for k in list(params) if k in Sampling.__dataclass_fields__}
    return ZipRcStrategy(**params, sampling=Sampling(**samp))


STRATEGIES.register(
    "zip-rc",
    summary="ZIP-RC: initial sample count and pruning by the utility of a joint reward × remaining-length head",
    paper=_PAPER,
    defaults={"budget": 8, "prune_at": 8, "lam_c": 0.002, "lam_l": 0.0, "future_prune": False},
)(_factory)
