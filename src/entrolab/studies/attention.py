"""Attention entropy per layer, head and query, and the entropy regulariser of Jha & Reagen
(Entropy-Guided Attention for Private LLMs, AAAI'25 PPAI workshop; spec B20; reference code
``Nandan91/entropy-guided-attention-llm``, ``entropy_regularization.py``).

Measurement (per layer, head, query i; nats): ``H_i = −Σ_j a_ij log a_ij`` over the keys j
(0 · log 0 = 0; the reference adds 1e-9 inside the log, a difference below 1e-7 nats; the
regulariser keeps the 1e-9 because it must be differentiable at the mask's zeros), and the
position-normalised ``H_i / log(i + 1)`` (row i of a causal map attends to i + 1 keys, so
``log(i + 1)`` is its maximum; row 0 has no choice and is NaN).

Regulariser (:class:`AttentionEntropyRegularizer`): ``H_max = log T`` from the attention's key
length, tolerance ``γ · H_max`` (γ = 0.2), a learnable threshold ``θ_h`` per head (shared across
layers, as the reference), deviation ``δ = H − θ_h H_max`` and penalty
``δ² · 1[|δ| > γ H_max]`` summed over queries and batch, averaged over heads, then layers, times
``coeff`` (1e-5), added to the cross-entropy (:func:`lm_loss_with_attention_entropy`).

Models are passed in as arguments (a Hugging Face causal LM that can return attentions, i.e.
loaded with ``attn_implementation="eager"``); nothing here loads a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from entrolab.errors import EntrolabError

__all__ = [
    "AttentionEntropyRegularizer",
    "attention_entropy",
    "attention_maps",
    "head_entropy_table",
    "lm_loss_with_attention_entropy",
    "position_normalized_entropy",
]


def _check_attn(attn: torch.Tensor) -> None:
    if attn.ndim != 4 or attn.shape[-1] < 1:
        raise EntrolabError(
            f"attention must be [B, heads, queries, keys] probabilities, got {tuple(attn.shape)}"
        )


def attention_entropy(attn: torch.Tensor) -> torch.Tensor:
    """Entropy of each query's attention distribution, nats.

    Args:
        attn: [B, H, Tq, Tk] attention probabilities (rows sum to 1; masked keys are 0).
    Returns:
        [B, H, Tq] float32/float64 (the input dtype upcast to at least float32).
    """
    _check_attn(attn)
    a = attn.float() if attn.dtype in (torch.float16, torch.bfloat16) else attn
    return -torch.special.xlogy(a, a).sum(-1)


def position_normalized_entropy(entropy: torch.Tensor) -> torch.Tensor:
    """``H_i / log(i + 1)`` for causal rows (query i sees i + 1 keys); row 0 → NaN. [..., Tq]."""
    t = entropy.shape[-1]
    h_max = torch.log(torch.arange(1, t + 1, dtype=entropy.dtype, device=entropy.device))
    return torch.where(h_max > 0, entropy / h_max.clamp(min=1e-12), torch.nan)


def attention_maps(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """One forward pass returning the attention probabilities of every layer.

    Args:
        model: a Hugging Face causal LM with eager attention (``output_attentions`` works).
        input_ids: [B, T] token ids; attention_mask: [B, T] 1 = real token.
    Returns:
        a list of L tensors [B, heads, T, T].
    """
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    maps = getattr(out, "attentions", None)
    if not maps or any(m is None for m in maps):
        raise EntrolabError(
            "the model returned no attention maps; load it with attn_implementation='eager' "
            "(SDPA and flash attention do not return them)"
        )
    return list(maps)


def head_entropy_table(
    maps: Sequence[torch.Tensor], attention_mask: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Mean attention entropy per (layer, head), raw and position-normalised.

    Means run over the real query positions of every sequence (queries ≥ 1 for the normalised
    one). Returns ``{"entropy": [L, H], "normalized": [L, H]}`` (nats and a ratio in [0, 1]).
    """
    raw, norm = [], []
    for attn in maps:
        h = attention_entropy(attn.detach())  # [B, H, T]
        b, _, t = h.shape
        real = (
            torch.ones(b, t, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        )[:, None, :].expand_as(h)
        hn = position_normalized_entropy(h)
        raw.append((h * real).sum((0, 2)) / real.sum((0, 2)).clamp(min=1))
        ok = real & torch.isfinite(hn)
        norm.append(torch.where(ok, hn, 0.0).sum((0, 2)) / ok.sum((0, 2)).clamp(min=1))
    return {"entropy": torch.stack(raw), "normalized": torch.stack(norm)}


class AttentionEntropyRegularizer(torch.nn.Module):
    """Entropy regulariser with a learnable per-head threshold (see the module docstring).

    Args:
        num_heads: attention heads per layer (thresholds are shared across layers).
        gamma: tolerance as a fraction of ``H_max`` (reference 0.2).
        coeff: loss coefficient (reference 1e-5).
        init_threshold: initial θ_h (fraction of ``H_max``).
    """

    def __init__(
        self,
        num_heads: int,
        *,
        gamma: float = 0.2,
        coeff: float = 1e-5,
        init_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if num_heads < 1 or not 0.0 <= gamma < 1.0 or coeff < 0:
            raise EntrolabError("need num_heads >= 1, gamma in [0, 1) and coeff >= 0")
        self.gamma, self.coeff = gamma, coeff
        self.threshold = torch.nn.Parameter(torch.full((num_heads,), float(init_threshold)))

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Penalty (scalar, already times ``coeff``) for a list of [B, H, T, T] maps."""
        if not maps:
            raise EntrolabError("no attention maps given")
        per_layer = []
        for attn in maps:
            if attn.shape[1] != self.threshold.numel():
                raise EntrolabError(
                    f"attention has {attn.shape[1]} heads, the regulariser {self.threshold.numel()}"
                )
            # a + 1e-9 inside the log (as the reference): a log a has an infinite slope at the
            # causal mask's exact zeros, which would turn the backward pass into NaN
            h = -(attn * torch.log(attn + 1e-9)).sum(-1)  # [B, H, T]
            h_max = math.log(attn.shape[-1])
            dev = h - self.threshold[None, :, None] * h_max
            pen = dev.pow(2) * (dev.abs() > self.gamma * h_max)
            per_layer.append(pen.sum((0, 2)).mean())  # Σ over batch and queries, mean over heads
        return self.coeff * torch.stack(per_layer).mean()


def lm_loss_with_attention_entropy(
    model: Any,
    input_ids: torch.Tensor,
    regularizer: AttentionEntropyRegularizer,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token cross-entropy plus the attention-entropy penalty, from one forward pass.

    Returns ``(loss, {"ce": …, "attn_entropy_penalty": …})`` (nats; CE is the mean over
    predicted real tokens).
    """
    labels = input_ids.clone()
    if attention_mask is not None:
        labels[attention_mask == 0] = -100
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, labels=labels, output_attentions=True
    )
    if not out.attentions or any(a is None for a in out.attentions):
        raise EntrolabError("the model returned no attention maps; load it with eager attention")
    penalty = regularizer(out.attentions)
    parts = {"ce": out.loss.detach().item(), "attn_entropy_penalty": penalty.detach().item()}
    return out.loss + penalty, parts
