"""Advantage shapers, registered in :data:`ADVANTAGE_SHAPERS` (kind ``"advantage_shapers"``),
composed after a base estimator with ``+``: ``algorithm.advantage=grpo+ucas`` (several:
``grpo+seed_grpo+ucas``, applied left to right).

A shaper is ``shape_fn(adv [R, T], inputs: ShapingInputs, **params) -> ShapedAdvantages``: it
takes the per-token advantages so far (the base's sequence advantage broadcast over tokens)
and the rollout's detached confidence tensors, and returns per-token advantages. Each entry's
object is a :class:`Shaper` that declares which :class:`ShapingInputs` fields it ``requires``,
so the trainer computes only those. Shaper parameters go under the shaper's name in
``algorithm.advantage_params`` (``advantage_params: {eps: 1e-6, ucas: {lam: 0.1}}``).

Pure tensor code; the inputs are computed by :mod:`entrolab.rl.shaping`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from entrolab.errors import EntrolabError
from entrolab.registry import Registry
from entrolab.rl.advantages.empg import empg
from entrolab.rl.advantages.inputs import INPUT_NAMES, ShapedAdvantages, ShapingInputs
from entrolab.rl.advantages.progrpo import progrpo
from entrolab.rl.advantages.seed_grpo import seed_grpo
from entrolab.rl.advantages.ucas import ucas

__all__ = ["ADVANTAGE_SHAPERS", "Shaper", "parse_advantage_spec"]


@dataclass(frozen=True)
class Shaper:
    """A registered shaping function and the rollout inputs it reads."""

    fn: Callable[..., ShapedAdvantages]
    requires: frozenset[str]

    def __call__(self, adv: Tensor, inputs: ShapingInputs, **params: Any) -> ShapedAdvantages:
        return self.fn(adv, inputs, **params)


#: name → :class:`Shaper`.
ADVANTAGE_SHAPERS: Registry[Shaper] = Registry("advantage_shapers")


def parse_advantage_spec(spec: str) -> tuple[str, list[str]]:
    """``"grpo+ucas+empg"`` → ``("grpo", ["ucas", "empg"])`` (names checked)."""
    from entrolab.rl.advantages import ADVANTAGE_ESTIMATORS

    parts = [p.strip() for p in str(spec).split("+")]
    if any(not p for p in parts):
        raise EntrolabError(
            f"bad algorithm.advantage {spec!r}: write a base estimator optionally followed by "
            "shapers, e.g. 'grpo' or 'grpo+ucas'"
        )
    base, shapers = parts[0], parts[1:]
    if base in ADVANTAGE_SHAPERS:
        raise EntrolabError(
            f"{base!r} is an advantage shaper, not a base estimator; put a base first, e.g. "
            f"'grpo+{base}'"
        )
    ADVANTAGE_ESTIMATORS.entry(base)
    for s in shapers:
        ADVANTAGE_SHAPERS.entry(s)
    if len(set(shapers)) != len(shapers):
        raise EntrolabError(f"bad algorithm.advantage {spec!r}: a shaper appears twice")
    return base, shapers


for _name, _fn, _req, _summary, _paper, _defaults in [
    (
        "ucas",
        ucas,
        ("self_certainty", "token_logits"),
        "A·exp(∓β·z-scored self-certainty sum), minus λ·min-max raw logit per token",
        "Xie et al. 2025, UCAS: uncertainty-aware advantage shaping, arXiv:2510.10649",
        {"beta_pos": 0.25, "beta_neg": 0.35, "lam": 0.05, "eps": 1e-6, "scale_certainty": True},
    ),
    (
        "seed_grpo",
        seed_grpo,
        ("semantic_entropy",),
        "A·f(α·SE(q)/log G), f decreasing (linear / exponential / focal)",
        "Chen et al. 2025, SEED-GRPO, arXiv:2505.12346",
        {"alpha": 1.0, "scaling": "linear", "gamma": 2.0},
    ),
    (
        "progrpo",
        progrpo,
        ("old_logprobs", "prompt_logprobs"),
        "A + α·(1/PPL(prompt) − low-probability-token answer confidence), non-zero groups",
        "Li et al. 2026, Back to Basics (ProGRPO, ARM), arXiv:2602.05281",
        {"alpha": 1.0, "rho": 0.2},
    ),
    (
        "empg",
        empg,
        ("entropy", "step_ids"),
        "step-level g(H)·A + ζ·f(H_next), g self-normalised to batch mean 1",
        "Wang et al. 2025, EMPG: Entropy-Modulated Policy Gradients, arXiv:2509.09265",
        {"k": 1.0, "k_f": 1.0, "zeta": 0.1, "center": True},
    ),
]:
    assert set(_req) <= set(INPUT_NAMES)
    ADVANTAGE_SHAPERS.register(_name, summary=_summary, paper=_paper, defaults=_defaults)(
        Shaper(_fn, frozenset(_req))
    )
