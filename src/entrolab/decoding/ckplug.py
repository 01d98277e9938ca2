"""CK-PLUG: steer a generation between the model's own knowledge and a given context.

Bi et al. 2025, "Parameters vs. Context: Fine-Grained Control of Knowledge Reliance in Language
Models", arXiv:2503.15888 (official code: byronBBL/CK-PLUG, a patched transformers 4.49).

Every step runs the model twice: on the prompt *with* the context (logits z^c, entropy H^c) and
*without* it (parametric logits z^p, entropy H^p). The confidence gain CG = H^p − H^c (nats) says
how much the context sharpened the prediction; on steps where it did not (the *trigger*), the
logits are re-mixed with one knob α (or adaptively); elsewhere z^c is used unchanged.

Pure functions first (:func:`confidence_gain`, :func:`ckplug_logits`,
:func:`relative_uncertainty`), then (in :mod:`entrolab.decoding.ckplug_generation`) :func:`ckplug_generate`, which runs
both passes as one batch of 2B rows over one KV cache, and :class:`CKPlugLogitsProcessor` for
``model.generate``.

Log-softmax instead of raw logits: the mixtures below are linear in z with weights summing to a
constant, so replacing z by log-softmax(z) only shifts each row by a constant; the distribution
(softmax, argmax, sampling) is identical. Outputs of triggered rows are in that normalised scale.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from entrolab.errors import EntrolabError
from entrolab.signals import token_entropy
from entrolab.signals.token import check_finite_logits

__all__ = [
    "candidate_mask",
    "ckplug_logits",
    "confidence_gain",
    "relative_uncertainty",
]

Trigger = Literal["released", "paper"]
PAPER = "Bi et al. 2025, Parameters vs. Context (CK-PLUG), arXiv:2503.15888"


# ------------------------------------------------------------------------------ pure functions
def _pair(z_ctx: torch.Tensor, z_par: torch.Tensor) -> None:
    for name, z in (("logits_with_ctx", z_ctx), ("logits_without_ctx", z_par)):
        if not isinstance(z, torch.Tensor) or not z.is_floating_point() or z.dim() != 2:
            raise EntrolabError(
                f"{name} must be a floating-point tensor of shape [B, V], got "
                f"{getattr(z, 'shape', type(z).__name__)}; pass one row per sequence (last step)"
            )
    if z_ctx.shape != z_par.shape:
        raise EntrolabError(
            f"logits with and without context differ in shape: {tuple(z_ctx.shape)} vs "
            f"{tuple(z_par.shape)}; both passes must use the same model and batch order"
        )


def confidence_gain(
    logits_with_ctx: torch.Tensor, logits_without_ctx: torch.Tensor
) -> torch.Tensor:
    """Confidence gain CG = H^p − H^c per row, in nats (positive: the context lowered entropy).

    Args:
        logits_with_ctx: z^c [B, V], next-token logits given the context.
        logits_without_ctx: z^p [B, V], next-token logits without it (parametric).
    Returns:
        float32 [B] (per token / step); entropies over the full vocabulary.
    """
    _pair(logits_with_ctx, logits_without_ctx)
    return token_entropy(logits_without_ctx).float() - token_entropy(logits_with_ctx).float()


def relative_uncertainty(entropy_ctx: torch.Tensor, entropy_par: torch.Tensor) -> torch.Tensor:
    """Relative uncertainty Δ = (H^c − H^p) / (H^c + H^p) ∈ [−1, 1], elementwise (spec B19).

    Transfer of Zhang et al. 2025 (arXiv:2511.02243) to context vs parameters: Δ > 0 means the
    context-based prediction is the less certain one. 0 where both entropies are 0.
    """
    hc, hp = torch.as_tensor(entropy_ctx).float(), torch.as_tensor(entropy_par).float()
    if hc.shape != hp.shape:
        raise EntrolabError(f"entropy shapes differ: {tuple(hc.shape)} vs {tuple(hp.shape)}")
    if bool((hc < 0).any()) or bool((hp < 0).any()) or not bool(torch.isfinite(hc + hp).all()):
        raise EntrolabError("entropies must be finite and ≥ 0 (nats)")
    total = hc + hp
    return torch.where(total > 0, (hc - hp) / total.clamp(min=1e-30), torch.zeros_like(total))


def candidate_mask(
    logp_ctx: torch.Tensor,
    logp_par: torch.Tensor,
    *,
    select_top: int = 10,
    relative_top: float = 0.01,
) -> torch.Tensor:
    """Tokens CK-PLUG may pick: log p ≥ max log p + log(relative_top) in *either* distribution.

    Each distribution keeps at least its ``select_top`` most likely tokens (its threshold is
    lowered to its ``select_top``-th largest log-prob when that is smaller; ties kept). Tokens
    with probability 0 in both are never candidates.

    Args:
        logp_ctx, logp_par: log-probabilities [B, V].
    Returns:
        bool [B, V], True = candidate.
    """
    k = min(select_top, logp_ctx.shape[-1])
    log_rt = math.log(relative_top)
    keep = torch.zeros_like(logp_ctx, dtype=torch.bool)
    for lp in (logp_ctx, logp_par):
        top = torch.topk(lp, k, dim=-1).values
        thresh = torch.minimum(top[:, :1] + log_rt, top[:, -1:])
        keep |= (lp >= thresh) & (lp > -math.inf)
    return keep


def _check_args(alpha, adaptive, trigger, select_top, relative_top, candidates_only=True) -> bool:
    """Validate the CK-PLUG settings; returns whether the adaptive mode is on."""
    adaptive = alpha is None if adaptive is None else bool(adaptive)
    if adaptive and alpha is not None:
        raise EntrolabError(f"adaptive mode sets its own weights: drop alpha={alpha!r}")
    bad_alpha = isinstance(alpha, bool) or not isinstance(alpha, (int, float))
    if not adaptive and (bad_alpha or not 0.0 <= float(alpha) <= 1.0):
        raise EntrolabError(
            f"alpha must be a number in [0, 1] (0 follows the context, 1 the model's own "
            f"knowledge; None = adaptive), got {alpha!r}"
        )
    if trigger not in ("released", "paper"):
        raise EntrolabError(f"trigger must be 'released' or 'paper', got {trigger!r}")
    if isinstance(select_top, bool) or not isinstance(select_top, int) or select_top < 1:
        raise EntrolabError(f"select_top must be a positive int, got {select_top!r}")
    if not isinstance(relative_top, (int, float)) or not 0.0 < float(relative_top) <= 1.0:
        raise EntrolabError(f"relative_top must be in (0, 1], got {relative_top!r}")
    if not isinstance(candidates_only, bool):
        raise EntrolabError(f"candidates_only must be True or False, got {candidates_only!r}")
    return adaptive


def _candidate_entropy(logp: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The official code's entropy of the candidate-renormalised distribution:
    H = −Σ_c q_c log(q_c + 1e-9) with q = softmax over the candidates (nats, float32 [B])."""
    q = torch.softmax(logp.masked_fill(~keep, float("-inf")), -1)
    return -(q * torch.log(q + 1e-9)).sum(-1)


def _adjust(z_ctx, z_par, alpha, adaptive, trigger, select_top, relative_top, candidates_only=True):
    """Shared core; returns (logits [B, V], triggered [B], H^c [B], H^p [B])."""
    _pair(z_ctx, z_par)
    check_finite_logits(z_ctx, "logits_with_ctx")
    check_finite_logits(z_par, "logits_without_ctx")
    adaptive = _check_args(alpha, adaptive, trigger, select_top, relative_top, candidates_only)
    lc, lp = torch.log_softmax(z_ctx.float(), -1), torch.log_softmax(z_par.float(), -1)
    keep = candidate_mask(lc, lp, select_top=select_top, relative_top=relative_top)
    if candidates_only:
        hc, hp = _candidate_entropy(lc, keep), _candidate_entropy(lp, keep)
    else:
        hc, hp = token_entropy(z_ctx).float(), token_entropy(z_par).float()
    cg = hp - hc
    triggered = (cg - hc.abs() < 0) if trigger == "released" else (cg < 0)
    if adaptive:
        kappa = 1.0 + (hc - hp).abs() / (hc + hp).clamp(min=1e-30)
        denom = (hc + kappa * hp).clamp(min=1e-30)
        w_p, w_c = (2.0 * hc / denom)[:, None], (2.0 * hp / denom)[:, None]
    else:
        w_p, w_c = float(alpha), 1.0 - float(alpha)
    # floor at -1e4 (exp = 0 in float32) so p = 0 tokens give no inf - inf = NaN when mixing
    fc, fp = lc.clamp(min=-1.0e4), lp.clamp(min=-1.0e4)
    mixed = (w_p * fp + w_c * (fc - fp)).masked_fill(~keep, float("-inf"))
    untouched = (
        z_ctx.float().masked_fill(~keep, float("-inf")) if candidates_only else z_ctx.float()
    )
    out = torch.where(triggered[:, None], mixed, untouched)
    return out, triggered, hc, hp


def ckplug_logits(
    z_ctx: torch.Tensor,
    z_par: torch.Tensor,
    alpha: float | None = None,
    *,
    adaptive: bool | None = None,
    trigger: Trigger = "released",
    select_top: int = 10,
    relative_top: float = 0.01,
    candidates_only: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One CK-PLUG step: adjusted logits and which rows were adjusted.

    On triggered rows (``"released"``: CG − |H^c| < 0, i.e. H^p < 2H^c, as the official code;
    ``"paper"``: CG < 0, the paper's wording), with ℓ = log-softmax and candidates from
    :func:`candidate_mask` (others −inf):

    - fixed (``alpha`` given): z̃ = α ℓ^p + (1 − α)(ℓ^c − ℓ^p); α = 0 contrasts context against
      parameters (follows the context), α = 1 is purely parametric;
    - adaptive (``alpha=None``): κ = 1 + |H^c − H^p| / (H^c + H^p),
      w_p = 2H^c / (H^c + κH^p), w_c = 2H^p / (H^c + κH^p), z̃ = w_p ℓ^p + w_c (ℓ^c − ℓ^p).

    Entropies H^c, H^p: with ``candidates_only`` (default, as the official code) over the
    candidate set (each distribution renormalised over the candidates, H = −Σ q log(q + 1e-9)),
    and untriggered rows return z^c with non-candidates at −inf; with ``candidates_only=False``
    over the full vocabulary, and untriggered rows return z^c unchanged (the paper's wording).
    Out of place; no loop over rows.

    Args:
        z_ctx, z_par: logits [B, V] with / without the context (raw, before temperature).
        alpha: the knob in [0, 1]; None selects the adaptive mode (``adaptive`` defaults to that).
        trigger: ``"released"`` (default, matches the official code) or ``"paper"``.
        select_top, relative_top: candidate set (official defaults 10 and 0.01).
        candidates_only: see above (True = the official code).
    Returns:
        ``(logits float32 [B, V], triggered bool [B])``.
    """
    out, triggered, _, _ = _adjust(
        z_ctx, z_par, alpha, adaptive, trigger, select_top, relative_top, candidates_only
    )
    return out, triggered
