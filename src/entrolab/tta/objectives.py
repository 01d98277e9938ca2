"""Pure per-batch objectives of the entropy-minimisation TTA family (no model, no update).

Each returns the per-sample entropy H [B] (nats, differentiable) and a
:class:`~entrolab.signals.Selection` (which samples enter the loss, with what weight);
:func:`selected_loss` reduces them: mean over the selected samples of w · H (scope: one batch;
``None`` when nothing is selected, so the caller skips the update).

* TENT (Wang et al. ICLR 2021): every sample, weight 1.
* Wisdom of crowds (Lee et al. ICCV 2023): keep i iff p_a(ŷ_o | x_i) ≥ p_o(ŷ_o | x_i), with
  ŷ_o the original model's prediction (a frozen copy).
* DeYO (Lee et al. ICLR 2024): S1 = {H < margin · ln K}; PLPD = p(ŷ | x) − p(ŷ | x') on S1 with x'
  a patch-shuffled view; S2 = S1 ∩ {PLPD > τ_plpd}; weight α = exp(−(H − margin_e0 · ln K))
  + exp(PLPD) (each term switchable), as ``methods/deyo.py`` of the official code.
"""

from __future__ import annotations

import math

import torch

from entrolab.errors import EntrolabError
from entrolab.signals import (
    Selection,
    compare_select,
    exp_weight,
    label_prob,
    perturbation_drop,
    relative_to_log_k,
    token_entropy,
)

__all__ = [
    "deyo_selection",
    "frozen_selection",
    "patch_shuffle",
    "pixel_shuffle",
    "selected_loss",
    "tent_selection",
    "woc_selection",
]


def tent_selection(logits: torch.Tensor) -> tuple[torch.Tensor, Selection]:
    """TENT: H(softmax(logits)) [B] and an all-True selection with unit weights."""
    h = token_entropy(logits)
    ones = torch.ones(h.shape, dtype=torch.float32)
    return h, Selection(torch.ones(h.shape, dtype=torch.bool), ones)


def frozen_selection(logits: torch.Tensor) -> tuple[torch.Tensor, Selection]:
    """``source`` / ``norm``: H [B] and an empty selection (no gradient step)."""
    h = token_entropy(logits.detach())
    return h, Selection(torch.zeros(h.shape, dtype=torch.bool), torch.ones(h.shape))


def woc_selection(
    logits: torch.Tensor, logits_reference: torch.Tensor
) -> tuple[torch.Tensor, Selection]:
    """Wisdom of crowds: keep samples whose confidence in the reference's prediction did not drop.

    logits [B, K] (adapting model, grad allowed), logits_reference [B, K] (frozen original)."""
    if logits.shape != logits_reference.shape:
        raise EntrolabError(
            f"adapted logits {tuple(logits.shape)} and reference logits "
            f"{tuple(logits_reference.shape)} differ; run both models on the same batch"
        )
    h = token_entropy(logits)
    ref = logits_reference.detach()
    y_o = ref.argmax(-1)
    return h, compare_select(label_prob(logits.detach(), y_o), label_prob(ref, y_o))


def deyo_selection(
    entropy: torch.Tensor,
    plpd: torch.Tensor,
    num_classes: int,
    *,
    margin: float = 0.5,
    margin_e0: float = 0.4,
    plpd_threshold: float = 0.2,
    reweight_ent: bool = True,
    reweight_plpd: bool = True,
) -> Selection:
    """DeYO's sample selection and weights from entropy [B] (nats) and PLPD [B].

    PLPD only matters on S1 (rows outside S1 may hold any finite value, e.g. 0). Weight α =
    reweight_ent · exp(−(H − margin_e0 · ln K)) + reweight_plpd · exp(PLPD), or 1 when both
    reweights are off."""
    s1 = relative_to_log_k(entropy, num_classes, margin)
    plpd = torch.where(s1.mask, plpd.detach(), torch.zeros_like(plpd))
    s2 = s1.mask & (plpd > float(plpd_threshold))
    if reweight_ent or reweight_plpd:
        w = torch.zeros_like(entropy.detach())
        if reweight_ent:
            w = w + exp_weight(entropy, margin_e0 * math.log(num_classes))
        if reweight_plpd:
            w = w + exp_weight(plpd, 0.0, +1.0).to(w.dtype)
    else:
        w = torch.ones_like(entropy.detach())
    return Selection(s2, w)


def deyo_plpd(logits: torch.Tensor, logits_perturbed: torch.Tensor) -> torch.Tensor:
    """PLPD [B] = p(ŷ | x) − p(ŷ | x'); thin alias of :func:`~entrolab.signals.perturbation_drop`."""
    return perturbation_drop(logits, logits_perturbed)


def selected_loss(entropy: torch.Tensor, selection: Selection) -> torch.Tensor | None:
    """mean over selected i of w_i · H_i (differentiable), or None if nothing is selected."""
    if entropy.shape != selection.mask.shape:
        raise EntrolabError(
            f"entropy {tuple(entropy.shape)} and selection {tuple(selection.mask.shape)} differ"
        )
    if not bool(selection.mask.any()):
        return None
    m = selection.mask
    return (selection.weights[m].to(entropy.dtype) * entropy[m]).mean()


def _check_image(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise EntrolabError(
            f"the shuffle needs images [B, C, H, W], got {shape}; DeYO's patch shuffle is for "
            "image models (pass a custom perturb= for other inputs)"
        )


def patch_shuffle(
    x: torch.Tensor, grid: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """DeYO's object-destroying view: cut each image into grid × grid patches and apply an
    independent random permutation of the patches per sample.

    x [B, C, H, W] → same shape (a new tensor). When H or W is not a multiple of ``grid`` the
    image is resized (bilinear) to the nearest lower multiple and back, as the official code."""
    _check_image(x)
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise EntrolabError(f"grid must be a positive int (patches per side), got {grid!r}")
    b, c, h, w = x.shape
    hh, ww = (h // grid) * grid, (w // grid) * grid
    if hh == 0 or ww == 0:
        raise EntrolabError(f"image {h}x{w} is smaller than the {grid}x{grid} patch grid")
    y = x if (hh, ww) == (h, w) else torch.nn.functional.interpolate(x, (hh, ww), mode="bilinear")
    ph, pw = hh // grid, ww // grid
    patches = y.reshape(b, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(b, grid * grid, c, ph, pw)
    perm = torch.argsort(torch.rand(b, grid * grid, generator=generator), dim=1).to(x.device)
    patches = patches[torch.arange(b, device=x.device)[:, None], perm]
    out = patches.reshape(b, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, hh, ww)
    if (hh, ww) != (h, w):
        out = torch.nn.functional.interpolate(out, (h, w), mode="bilinear")
    return out


def pixel_shuffle(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """DeYO's "pixel" view: one random permutation of pixel positions shared by the batch."""
    _check_image(x)
    b, c, h, w = x.shape
    perm = torch.randperm(h * w, generator=generator).to(x.device)
    return x.reshape(b, c, h * w)[:, :, perm].reshape(b, c, h, w)
