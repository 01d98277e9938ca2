"""Confidence signals and sample selectors for classifiers (and any model with class logits).

Signals take class logits ``[B, K]`` (any leading dims ``[..., K]``) and return one value per
row ``[...]`` (scope: per sample), **higher = more confident**:

* :func:`neg_entropy` = −H(softmax z) (nats, in [−log K, 0]);
* :func:`energy_confidence` = T · logsumexp(z / T), the negative free energy (Liu et al. 2020);
* ``max_prob`` and ``top_margin`` are :mod:`entrolab.signals.token`'s, re-used as they are;
* comparative signals: :func:`confidence_gain` (wisdom of crowds: p_adapted(ŷ_ref) − p_ref(ŷ_ref),
  Lee et al. ICCV 2023) and :func:`perturbation_drop` (DeYO's PLPD: p(ŷ | x) − p(ŷ | T(x)) for a
  shape-destroying transform T, Lee et al. ICLR 2024).

Selectors map signals to a :class:`Selection` (bool mask [B] + float weights [B]):
:func:`threshold_select`, :func:`relative_to_log_k` (DeYO's τ = 0.5 ln K), :func:`compare_select`
(a ≥ b) and :func:`exp_weight` (DeYO's exp(−(H − H₀))). They are pure functions (no update, no
model); :mod:`entrolab.tta` combines them into the TENT / wisdom-of-crowds / DeYO losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from entrolab.errors import EntrolabError
from entrolab.signals.token import check_finite_logits, token_entropy

__all__ = [
    "Selection",
    "compare_select",
    "confidence_gain",
    "energy_confidence",
    "exp_weight",
    "label_prob",
    "neg_entropy",
    "perturbation_drop",
    "relative_to_log_k",
    "threshold_select",
]


def _check_pair(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    for name, x in (("first", a), ("second", b)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise EntrolabError(f"{what}: the {name} logits must be a floating-point tensor")
    if a.shape != b.shape:
        raise EntrolabError(
            f"{what}: logits shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}; pass the two "
            "models' outputs for the same batch (same [..., K])"
        )
    check_finite_logits(a, f"{what} logits")
    check_finite_logits(b, f"{what} logits")


def neg_entropy(logits: torch.Tensor) -> torch.Tensor:
    """−H(softmax(logits)) in nats, per row: [..., K] → [...], in [−log K, 0].

    Differentiable when ``logits`` requires grad (it is −:func:`~entrolab.signals.token_entropy`).
    """
    return -token_entropy(logits)


def energy_confidence(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Negative free energy T · logsumexp(z / T) per row: [..., K] → [...] (logit units).

    Liu et al. 2020 (energy-based OOD detection): higher = more in-distribution. Not bounded,
    not shift-invariant (adding c to every logit adds c), so compare it within one model only.
    """
    t = float(temperature)
    if not t > 0 or not math.isfinite(t):
        raise EntrolabError(f"temperature must be a positive finite number, got {temperature!r}")
    check_finite_logits(logits)
    z = logits.detach().to(torch.float64 if logits.dtype == torch.float64 else torch.float32)
    return t * torch.logsumexp(z / t, dim=-1)


def label_prob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """softmax(logits)[..., labels] per row: logits [..., K], int labels [...] → [...].

    Differentiable in ``logits`` when it requires grad."""
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point():
        raise EntrolabError("labels must be an integer tensor of class indices")
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise EntrolabError(
            f"labels have shape {tuple(labels.shape)} but logits {tuple(logits.shape)} need "
            f"{tuple(logits.shape[:-1])}"
        )
    k = logits.shape[-1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise EntrolabError(f"labels must lie in [0, {k - 1}] for {k} classes")
    p = torch.softmax(logits.float() if logits.dtype != torch.float64 else logits, dim=-1)
    return p.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)


def confidence_gain(
    logits_adapted: torch.Tensor,
    logits_reference: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Wisdom-of-crowds signal p_a(ŷ | x) − p_o(ŷ | x), per row, in [−1, 1].

    ŷ is the *reference* (original) model's argmax unless ``labels`` is given. Positive = the
    adapted model is more confident in the reference's prediction than the reference is.
    Shapes: [..., K], [..., K] → [...]. Detached.
    """
    _check_pair(logits_adapted, logits_reference, "confidence_gain")
    a, o = logits_adapted.detach(), logits_reference.detach()
    y = o.argmax(-1) if labels is None else labels
    return label_prob(a, y) - label_prob(o, y)


def perturbation_drop(
    logits: torch.Tensor, logits_perturbed: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """DeYO's PLPD p(ŷ | x) − p(ŷ | T(x)), per row, in [−1, 1]; ŷ = argmax of ``logits``.

    ``logits_perturbed`` are the same model's logits on an object-destroying view T(x) (e.g.
    :func:`entrolab.tta.patch_shuffle`). A large drop = the prediction rests on shape.
    Shapes: [..., K], [..., K] → [...]. Detached.
    """
    _check_pair(logits, logits_perturbed, "perturbation_drop")
    z, zp = logits.detach(), logits_perturbed.detach()
    y = z.argmax(-1) if labels is None else labels
    return label_prob(z, y) - label_prob(zp, y)


@dataclass(frozen=True)
class Selection:
    """Which samples a loss uses and with what weight.

    Attributes:
        mask: bool [B], True = sample used.
        weights: float [B] (detached), 1 where unweighted; only entries under ``mask`` matter.
    """

    mask: torch.Tensor
    weights: torch.Tensor

    def __and__(self, other: Selection) -> Selection:
        """Both masks, product of weights."""
        if self.mask.shape != other.mask.shape:
            raise EntrolabError(
                f"cannot combine selections of sizes {tuple(self.mask.shape)} and "
                f"{tuple(other.mask.shape)}"
            )
        return Selection(self.mask & other.mask, self.weights * other.weights)

    @property
    def count(self) -> int:
        return int(self.mask.sum())


def _finite_values(values: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        raise EntrolabError(f"{name} must be a torch.Tensor, got {type(values).__name__}")
    v = values.detach()
    if not bool(torch.isfinite(v).all()):
        raise EntrolabError(f"{name} contain NaN/inf; check the model outputs (lower the lr?)")
    return v


def threshold_select(
    values: torch.Tensor, tau: float, keep: Literal["below", "above"] = "below"
) -> Selection:
    """Keep rows with ``values < tau`` (``keep="below"``) or ``values > tau`` (strict), weight 1.

    values [B] → Selection over B."""
    if keep not in ("below", "above"):
        raise EntrolabError(f"keep must be 'below' or 'above', got {keep!r}")
    v = _finite_values(values, "values")
    mask = v < float(tau) if keep == "below" else v > float(tau)
    return Selection(mask, torch.ones_like(v, dtype=torch.float32))


def relative_to_log_k(entropy: torch.Tensor, num_classes: int, frac: float = 0.5) -> Selection:
    """Keep rows with entropy < ``frac`` · ln K (DeYO / EATA's margin; DeYO default 0.5).

    entropy [B] (nats) → Selection over B. ``num_classes`` = K ≥ 2."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise EntrolabError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not 0.0 < float(frac) <= 1.0:
        raise EntrolabError(f"frac must be in (0, 1] (a fraction of ln K), got {frac!r}")
    return threshold_select(entropy, float(frac) * math.log(num_classes), "below")


def compare_select(a: torch.Tensor, b: torch.Tensor) -> Selection:
    """Keep rows with ``a >= b`` (wisdom of crowds: adapted ≥ original confidence), weight 1."""
    va, vb = _finite_values(a, "a"), _finite_values(b, "b")
    if va.shape != vb.shape:
        raise EntrolabError(f"a and b shapes differ: {tuple(va.shape)} vs {tuple(vb.shape)}")
    return Selection(va >= vb, torch.ones_like(va, dtype=torch.float32))


def exp_weight(values: torch.Tensor, offset: float, sign: float = -1.0) -> torch.Tensor:
    """exp(sign · (values − offset)), detached [B].

    DeYO: ``exp_weight(entropy, 0.4 ln K)`` = exp(−(H − H₀)) and ``exp_weight(plpd, 0, +1)`` =
    exp(PLPD); the paper's weight is their sum."""
    v = _finite_values(values, "values")
    return torch.exp(float(sign) * (v - float(offset)))
