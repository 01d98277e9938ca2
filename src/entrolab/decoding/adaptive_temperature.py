"""Entropy-adaptive temperature: each step's temperature is a function of that step's entropy.

EDT — Zhang, Bao, Huang 2024, "EDT: Improving Large Language Models' Generation by Entropy-based
Dynamic Temperature Sampling", arXiv:2403.14541 — sets, per decoding step,

    T = T0 · N^(θ / H)

with H the entropy of the step's next-token distribution, N = 0.8 (the paper's value) and θ a
tuned hyperparameter. With 0 < N < 1 the factor N^(θ/H) lies in (0, 1): a confident step
(small H) is sampled almost greedily, an uncertain one near T0; T → T0 as H → ∞ and T → 0 as
H → 0 (then only the most likely token is kept; ties all kept). Units: H in nats here (the
paper's log base is not stated [U]; a base change rescales θ). θ = 1.0 by default — the paper
tunes θ per task; treat it as a knob.

As a warper this sees logits already divided by the base temperature T_b: it multiplies the
temperature by ``t0 · N^(θ/H)`` with H the entropy of those logits. With the backend at
T_b = 1 this is EDT with T0 = ``t0`` exactly; otherwise it is EDT with T0 = T_b·t0 whose
entropy is measured on the T_b-tempered distribution.
"""

from __future__ import annotations

import math

import torch

from entrolab.decoding.base import (
    WarperProcessor,
    as_rows,
    check_number,
    compute_dtype,
    log_normalizer,
)

__all__ = ["EDTLogitsProcessor", "edt_temperature", "entropy_adaptive_temperature"]


def _check(theta: float, base: float, t0: float, owner: str) -> tuple[float, float, float]:
    return (
        check_number("theta", theta, low=0.0, low_open=True, owner=owner),
        check_number("base", base, low=0.0, high=1.0, low_open=True, high_open=True, owner=owner),
        check_number("t0", t0, low=0.0, low_open=True, owner=owner),
    )


def edt_temperature(
    entropy: torch.Tensor, theta: float = 1.0, base: float = 0.8, t0: float = 1.0
) -> torch.Tensor:
    """T = t0 · base^(θ / H) per entry of ``entropy`` [...] (nats, ≥ 0); H = 0 gives T = 0."""
    theta, base, t0 = _check(theta, base, t0, "edt_temperature")
    h = torch.as_tensor(entropy)
    h = h.to(compute_dtype(h.dtype) if h.is_floating_point() else torch.float32)
    # base^(θ/H) = exp(θ·ln(base)/H); ln(base) < 0, so H → 0⁺ gives exp(−inf) = 0, not NaN.
    return t0 * torch.exp(theta * math.log(base) / h.clamp(min=0.0))


def entropy_adaptive_temperature(
    logits: torch.Tensor, theta: float = 1.0, base: float = 0.8, t0: float = 1.0
) -> torch.Tensor:
    """Rescale each row of logits [..., V] by its EDT temperature → new logits [..., V].

    Returns ``(z − max z) / T`` per row (a shift does not change the softmax), so T → 0 is exact
    greedy: the maximum stays 0 and every other finite logit becomes ``-inf``. Computation in
    float32 (float64 for float64 input); output in the input dtype.
    """
    theta, base, t0 = _check(theta, base, t0, "edt")
    rows = as_rows(logits)
    x = rows.to(compute_dtype(rows.dtype))
    lse = log_normalizer(x, logits)
    h = torch.special.entr((x - lse).exp()).sum(-1, keepdim=True)
    t = edt_temperature(h, theta, base, t0)
    shifted = x - x.amax(-1, keepdim=True)
    # shifted / 0 would give NaN at the maximum (0/0): keep the maxima at 0 explicitly.
    out = torch.where(shifted == 0, torch.zeros_like(shifted), shifted / t)
    return out.to(rows.dtype).reshape(logits.shape)


class EDTLogitsProcessor(WarperProcessor):
    """Entropy-based dynamic temperature (EDT) as a transformers ``LogitsProcessor``.

    ``EDTLogitsProcessor(theta=1.0, base=0.8, t0=1.0)``; see :func:`entropy_adaptive_temperature`.
    """

    name = "edt"

    def __init__(self, theta: float = 1.0, base: float = 0.8, t0: float = 1.0) -> None:
        super().__init__()
        self.theta, self.base, self.t0 = _check(theta, base, t0, "sampler edt")
        self.params = {"theta": self.theta, "base": self.base, "t0": self.t0}

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        return entropy_adaptive_temperature(logits, self.theta, self.base, self.t0)
