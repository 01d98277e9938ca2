"""Entropy-minimisation test-time adaptation for any torch classifier: TENT, wisdom-of-crowds
filtering and DeYO as one loop with pluggable sample selection.

:func:`configure_model` (TENT's ``configure_model`` + ``collect_params``): train mode, every
parameter frozen except the affine weight/bias of BatchNorm, LayerNorm and GroupNorm layers;
BatchNorm stops tracking running statistics and normalises with the current batch.

:class:`EntropyMinTTA` adapts online: each :meth:`~EntropyMinTTA.step` runs one forward pass,
returns those logits (from *before* the update: prediction and adaptation share the pass),
then takes ``steps`` optimiser steps on the selected-sample entropy (skipped when nothing is
selected). ``episodic=True`` restores the initial model and optimiser state before each batch.
Methods: ``source`` (no adaptation, running BN statistics), ``norm`` (test-batch BN statistics
only), ``tent``, ``woc`` (wisdom of crowds) and ``deyo``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from entrolab.errors import EntrolabError
from entrolab.signals import check_finite_logits, token_entropy
from entrolab.tta.objectives import (
    deyo_plpd,
    deyo_selection,
    patch_shuffle,
    pixel_shuffle,
    selected_loss,
    tent_selection,
    woc_selection,
)

__all__ = ["METHODS", "EntropyMinTTA", "StepInfo", "configure_model", "norm_affine_params"]

METHODS = ("source", "norm", "tent", "woc", "deyo")
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_NORMS = (*_BN, nn.LayerNorm, nn.GroupNorm)


def norm_affine_params(
    model: nn.Module, exclude: tuple[str, ...] = ()
) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every BN/LN/GN affine weight and bias, skipping modules whose name
    starts with any prefix in ``exclude`` (DeYO/SAR exclude e.g. ResNet ``layer4``)."""
    out = []
    for mname, m in model.named_modules():
        if isinstance(m, _NORMS) and not any(mname.startswith(p) for p in exclude if p):
            for pname, p in m.named_parameters(recurse=False):
                if pname in ("weight", "bias"):
                    out.append((f"{mname}.{pname}" if mname else pname, p))
    return out


def configure_model(
    model: nn.Module, *, require_bn: bool = True, exclude: tuple[str, ...] = ()
) -> list[nn.Parameter]:
    """Prepare ``model`` in place for entropy-minimisation TTA; returns the parameters to adapt.

    Raises:
        EntrolabError: no BatchNorm layer while ``require_bn`` (TENT relies on test-batch BN
            statistics), or no affine norm parameter at all.
    """
    if not isinstance(model, nn.Module):
        raise EntrolabError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    n_bn = sum(isinstance(m, _BN) for m in model.modules())
    if require_bn and n_bn == 0:
        raise EntrolabError(
            f"{type(model).__name__} has no BatchNorm layer: TENT adapts BatchNorm affine "
            "parameters and normalises with test-batch statistics. Use a BatchNorm model, or "
            "pass require_bn=False to adapt LayerNorm/GroupNorm affine parameters only"
        )
    model.train()
    model.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, _BN):
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
    params = [p for _, p in norm_affine_params(model, exclude)]
    if not params:
        raise EntrolabError(
            "found no affine normalisation parameter to adapt (BatchNorm/LayerNorm/GroupNorm "
            "with affine=True); entropy-minimisation TTA needs at least one"
        )
    for p in params:
        p.requires_grad_(True)
    return params


@dataclass(frozen=True)
class StepInfo:
    """Diagnostics of one step: selected samples, batch size, loss (NaN when skipped)."""

    selected: int
    batch: int
    loss: float


class EntropyMinTTA:
    """Online TTA of ``model`` (modified in place; pass a copy to keep the original).

    Args:
        model: a classifier mapping a batch [B, ...] to logits [B, K].
        method: one of :data:`METHODS`.
        optimizer: ``"adam"`` (TENT example: lr 1e-3) or ``"sgd"`` (momentum 0.9; DeYO: 2.5e-4).
        lr: learning rate. steps: updates per batch. episodic: reset before every batch.
        require_bn: see :func:`configure_model`. exclude: module-name prefixes not adapted.
        deyo: DeYO options (margin, margin_e0, plpd_threshold, reweight_ent, reweight_plpd,
            shuffle = "patch" | "pixel", grid).
        seed: seeds the shuffles' generator.
    """

    def __init__(
        self,
        model: nn.Module,
        method: str = "tent",
        *,
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: float = 1e-3,
        steps: int = 1,
        episodic: bool = False,
        require_bn: bool = True,
        exclude: tuple[str, ...] = (),
        deyo: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        if method not in METHODS:
            raise EntrolabError(f"unknown TTA method {method!r}; known: {', '.join(METHODS)}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise EntrolabError(f"lr must be a positive number, got {lr!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise EntrolabError(f"steps must be a positive int, got {steps!r}")
        self.model, self.method, self.steps, self.episodic = model, method, steps, episodic
        self.deyo = {"margin": 0.5, "margin_e0": 0.4, "plpd_threshold": 0.2, **(deyo or {})}
        self._shuffle = self.deyo.pop("shuffle", "patch")
        self._grid = int(self.deyo.pop("grid", 4))
        if self._shuffle not in ("patch", "pixel"):
            raise EntrolabError(f"deyo shuffle must be 'patch' or 'pixel', got {self._shuffle!r}")
        self.generator = torch.Generator().manual_seed(seed)
        self.reference: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        if method == "source":
            model.eval()
            return
        params = configure_model(model, require_bn=require_bn or method == "norm", exclude=exclude)
        if method == "norm":
            return
        if optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
        elif optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
        else:
            raise EntrolabError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        if method == "woc":  # original model = source weights + test-batch BN (as UniEnt's code)
            self.reference = copy.deepcopy(model).requires_grad_(False)
        self._initial = (
            copy.deepcopy(model.state_dict()),
            copy.deepcopy(self.optimizer.state_dict()),
        )

    def _forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        try:
            logits = model(x)
        except RuntimeError as e:
            raise EntrolabError(
                f"the model failed on a batch of shape {tuple(x.shape)}: {e}. Check that the "
                "stream's inputs match what the model was trained on"
            ) from e
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(x):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise EntrolabError(
                f"the model must return logits [B={len(x)}, K] for a batch, got {shape}"
            )
        try:
            check_finite_logits(logits, "model logits")
        except EntrolabError as e:
            raise EntrolabError(
                f"{e}. The adaptation has diverged: lower the learning rate, use a sample "
                "filter (woc, deyo) or episodic=True"
            ) from None
        return logits

    def reset(self) -> None:
        """Restore the model and optimiser state from construction time."""
        if self.optimizer is not None:
            self.model.load_state_dict(self._initial[0])
            self.optimizer.load_state_dict(self._initial[1])

    def _objective(self, x: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, Any]:
        if self.method == "tent":
            return tent_selection(logits)
        if self.method == "woc":
            assert self.reference is not None
            with torch.no_grad():
                ref = self._forward(self.reference, x)
            return woc_selection(logits, ref)
        h = token_entropy(logits)
        k = logits.shape[-1]
        s1 = h.detach() < self.deyo["margin"] * math.log(k)
        plpd = torch.zeros_like(h.detach())
        if bool(s1.any()):
            xs = x[s1].detach()
            view = (
                patch_shuffle(xs, self._grid, self.generator)
                if self._shuffle == "patch"
                else pixel_shuffle(xs, self.generator)
            )
            with torch.no_grad():
                zp = self._forward(self.model, view)
            plpd[s1] = deyo_plpd(logits.detach()[s1], zp).to(plpd.dtype)
        return h, deyo_selection(h, plpd, k, **self.deyo)

    def step(self, x: torch.Tensor) -> tuple[torch.Tensor, StepInfo]:
        """Predict on batch ``x`` [B, ...] and adapt; returns (logits [B, K] detached, info).

        With ``steps`` > 1 the logits are those of the last forward pass, taken before its
        update (what ``tent.py`` returns); with one step, the model before any update."""
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or len(x) == 0:
            raise EntrolabError("x must be a non-empty batch tensor [B, ...]")
        if self.method in ("source", "norm"):
            with torch.no_grad():
                logits = self._forward(self.model, x)
            return logits, StepInfo(0, len(x), float("nan"))
        if self.episodic:
            self.reset()
        assert self.optimizer is not None
        last: torch.Tensor | None = None
        info = StepInfo(0, len(x), float("nan"))
        for _ in range(self.steps):
            logits = self._forward(self.model, x)
            last = logits.detach()  # as tent.py: the last pass's logits, taken before its update
            h, sel = self._objective(x, logits)
            loss = selected_loss(h, sel)
            info = StepInfo(
                sel.count, len(x), float("nan") if loss is None else float(loss.detach())
            )
            if loss is not None:
                loss.backward()
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        assert last is not None
        return last, info
