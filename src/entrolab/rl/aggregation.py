"""Loss aggregation modes: a per-token loss ``[B, T]`` and a mask → one scalar.

Every mode is registered in :data:`LOSS_AGGREGATIONS` (kind ``"loss_aggregations"``) with the
signature ``aggregate(token_loss, mask, *, global_tokens=None, global_sequences=None,
max_response_length=None) -> scalar``. Names follow verl's ``agg_loss``.

Reduction scope. Without global counts each mode normalises by the counts of the tensors it is
given (one micro-batch): verl's and TRL's per-call behaviour, not invariant to how a batch is split.
With the counts of the whole optimisation batch (``global_tokens`` = its response tokens,
``global_sequences`` = its sequences, ``max_response_length`` = the constant C), every mode is a
plain sum of per-token terms divided by a batch constant, so the losses (and gradients) of any
split into micro-batches sum exactly to the full-batch loss.

Masked (``mask=False``) positions never contribute, whatever their values (NaN included), and get
zero gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from entrolab.errors import EntrolabError
from entrolab.registry import Registry

__all__ = [
    "LOSS_AGGREGATIONS",
    "aggregate_loss",
    "seq_mean_token_mean",
    "seq_mean_token_sum",
    "seq_mean_token_sum_norm",
    "token_mean",
    "token_sum_norm",
]

#: name → ``aggregate(token_loss [B, T], mask [B, T], *, global_tokens, global_sequences,
#: max_response_length) -> scalar``.
LOSS_AGGREGATIONS: Registry[Callable[..., torch.Tensor]] = Registry("loss_aggregations")


def _check(token_loss: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss with masked positions replaced by 0, bool mask); raises on bad shapes/dtypes."""
    if not isinstance(token_loss, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise EntrolabError("token_loss and mask must be torch.Tensors of shape [B, T]")
    if token_loss.dim() != 2:
        raise EntrolabError(
            f"token_loss must have shape [B, T] (sequences × response tokens), got "
            f"{tuple(token_loss.shape)}"
        )
    if tuple(mask.shape) != tuple(token_loss.shape):
        raise EntrolabError(
            f"mask has shape {tuple(mask.shape)} but token_loss has {tuple(token_loss.shape)}; "
            "they must match (mask: True = response token)"
        )
    if not token_loss.is_floating_point():
        raise EntrolabError(f"token_loss must be a float tensor, got {token_loss.dtype}")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex():
            raise EntrolabError(f"mask must be bool (True = response token), got {mask.dtype}")
        mask = mask != 0
    return torch.where(mask, token_loss, torch.zeros((), dtype=token_loss.dtype)), mask


def _count(value: int | None, local: int, name: str, hint: str) -> int:
    """The global count if given (validated), else the local one."""
    if value is None:
        return local
    if isinstance(value, torch.Tensor):
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EntrolabError(f"{name} must be a non-negative int ({hint}), got {value!r}")
    if value < local:
        raise EntrolabError(
            f"{name}={value} is smaller than this micro-batch's own count ({local}); pass the "
            f"count of the whole optimisation batch ({hint})"
        )
    return value


def _sequences(global_sequences: int | None, mask: torch.Tensor) -> int:
    """S: ``global_sequences`` (validated by :func:`_count`) or this call's rows B."""
    return _count(global_sequences, mask.shape[0], "global_sequences", "sequences in the batch")


def token_mean(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    *,
    global_tokens: int | None = None,
    global_sequences: int | None = None,
    max_response_length: int | None = None,
) -> torch.Tensor:
    """Token-mean (DAPO; TRL ``dapo``/``bnpo``): Σ_{i,t} M·L / N.

    ``N`` = ``global_tokens`` (response tokens of the whole batch) if given, else this call's
    Σ M. An empty mask gives 0. ``global_sequences``/``max_response_length`` are ignored.
    """
    loss, m = _check(token_loss, mask)
    n = _count(global_tokens, int(m.sum()), "global_tokens", "response tokens in the batch")
    return loss.sum() / max(n, 1)


def seq_mean_token_mean(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    *,
    global_tokens: int | None = None,
    global_sequences: int | None = None,
    max_response_length: int | None = None,
) -> torch.Tensor:
    """Sequence-mean of token-means (original GRPO; TRL ``grpo``): Σ_i (Σ_t M·L / L_i) / S.

    ``L_i`` = Σ_t M_{i,t} (a row with no response token contributes 0 but still counts in S);
    ``S`` = ``global_sequences`` if given, else the number of rows B.
    """
    loss, m = _check(token_loss, mask)
    lengths = m.sum(dim=-1).clamp(min=1).to(loss.dtype)
    s = _sequences(global_sequences, m)
    return (loss.sum(dim=-1) / lengths).sum() / max(s, 1)


def seq_mean_token_sum(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    *,
    global_tokens: int | None = None,
    global_sequences: int | None = None,
    max_response_length: int | None = None,
) -> torch.Tensor:
    """Sequence-mean of token-sums: Σ_{i,t} M·L / S (S = ``global_sequences`` or B)."""
    loss, m = _check(token_loss, mask)
    s = _sequences(global_sequences, m)
    return loss.sum() / max(s, 1)


def _constant_c(max_response_length: int | None, mask: torch.Tensor) -> int:
    if max_response_length is None:
        return max(mask.shape[-1], 1)
    if isinstance(max_response_length, bool) or not isinstance(max_response_length, int):
        raise EntrolabError(f"max_response_length must be an int, got {max_response_length!r}")
    if max_response_length < 1:
        raise EntrolabError(f"max_response_length must be ≥ 1, got {max_response_length}")
    return max_response_length


def seq_mean_token_sum_norm(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    *,
    global_tokens: int | None = None,
    global_sequences: int | None = None,
    max_response_length: int | None = None,
) -> torch.Tensor:
    """Dr.GRPO normalisation: Σ_{i,t} M·L / (S · C).

    ``C`` = ``max_response_length`` if given, else the padded width T of this call (verl's
    fallback, which depends on padding: pass C for split invariance); ``S`` = ``global_sequences``
    or B. This is the Dr.GRPO paper's and TRL's ``dr_grpo`` form (Σ / (B · max_completion_length))
    and verl ≥ 0.8's ``seq-mean-token-sum-norm`` (verl PR #5417, also 0.9.x: divides by the
    global sequence count times ``loss_scale_factor``). verl before 0.8 divided by C only (no 1/S):
    ``token-sum-norm`` reproduces that older form.
    """
    loss, m = _check(token_loss, mask)
    c = _constant_c(max_response_length, m)
    s = _sequences(global_sequences, m)
    return loss.sum() / (max(s, 1) * c)


def token_sum_norm(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    *,
    global_tokens: int | None = None,
    global_sequences: int | None = None,
    max_response_length: int | None = None,
) -> torch.Tensor:
    """verl < 0.8's ``seq-mean-token-sum-norm``: Σ_{i,t} M·L / C (no division by S).

    ``C`` = ``max_response_length`` or the padded width T. Equals ``seq-mean-token-sum-norm``
    times S; split-invariant whenever C is given. verl ≥ 0.8 divides by S·C (PR #5417), i.e.
    entrolab's ``seq-mean-token-sum-norm``; use this mode only to reproduce runs of older verl.
    """
    loss, m = _check(token_loss, mask)
    return loss.sum() / _constant_c(max_response_length, m)


_VERL = "verl agg_loss (Sheng et al. 2024, HybridFlow, arXiv:2409.19256)"
for _name, _fn, _summary, _paper in [
    (
        "token-mean",
        token_mean,
        "Σ M·L / (response tokens in the batch): every token weighs the same (DAPO)",
        "Yu et al. 2025, DAPO, arXiv:2503.14476",
    ),
    (
        "seq-mean-token-mean",
        seq_mean_token_mean,
        "mean over sequences of each sequence's token-mean (original GRPO)",
        "Shao et al. 2024, DeepSeekMath (GRPO), arXiv:2402.03300",
    ),
    (
        "seq-mean-token-sum",
        seq_mean_token_sum,
        "mean over sequences of each sequence's token-sum",
        _VERL,
    ),
    (
        "seq-mean-token-sum-norm",
        seq_mean_token_sum_norm,
        "Σ M·L / (sequences · C), C = max response length (Dr.GRPO, TRL dr_grpo, verl ≥ 0.8)",
        "Liu et al. 2025, Understanding R1-Zero-Like Training (Dr.GRPO), arXiv:2503.20783",
    ),
    (
        "token-sum-norm",
        token_sum_norm,
        "Σ M·L / C, C = max response length (verl < 0.8's seq-mean-token-sum-norm)",
        _VERL,
    ),
]:
    LOSS_AGGREGATIONS.register(
        _name,
        summary=_summary,
        paper=_paper,
        defaults={"global_tokens": None, "global_sequences": None, "max_response_length": None},
    )(_fn)


def aggregate_loss(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    *,
    global_tokens: int | None = None,
    global_sequences: int | None = None,
    max_response_length: int | None = None,
) -> torch.Tensor:
    """Aggregate with the registered mode ``mode`` (unknown names list the known ones)."""
    fn = LOSS_AGGREGATIONS.get(mode)
    return fn(
        token_loss,
        mask,
        global_tokens=global_tokens,
        global_sequences=global_sequences,
        max_response_length=max_response_length,
    )
