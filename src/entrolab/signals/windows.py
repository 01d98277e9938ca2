"""Sequence-level aggregations of per-token values: masked reductions, sliding windows, DeepConf
group confidence, window entropy (HWE tokens), forking tokens and thinking/answer phases.

Inputs are ``values`` [..., T] (usually [N, T]: N sequences, T token slots) with a bool ``mask``
of the same shape, True = real token. Reductions run along the last dim (scope: per sequence)
unless a ``scope="batch"`` argument says otherwise. Values at padding positions never affect a
result (they may even be NaN). Real-token values must not be NaN; the window functions also
need them finite.

Padding: window functions run over the *real* tokens in order, skipping padding wherever it is,
so right-padded (the usual case), left-padded and gappy masks all work; outputs indexed by token
position ([..., T]) are aligned with the input positions.

Empty sequences (no real token): every reduction returns the ``empty`` value (default 0.0, the
DeepConf convention), never NaN; ``mask.any(-1)`` tells which results are real.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from types import MappingProxyType
from typing import Literal

import torch

from entrolab.errors import EntrolabError

__all__ = [
    "DEEPCONF_DEFAULT_WINDOW",
    "DEEPCONF_PAPER",
    "deepconf_window",
    "forking_token_mask",
    "group_confidence",
    "high_window_entropy_mask",
    "masked_max",
    "masked_mean",
    "masked_min",
    "masked_sum",
    "phase_mask",
    "phase_split",
    "sliding_window_mean",
    "window_entropy",
]

Scope = Literal["sequence", "batch"]
GROUP_MODES = ("mean", "lowest", "bottom", "tail")

#: DeepConf's published settings (Fu et al. 2025, arXiv:2508.15260; facebookresearch/deepconf,
#: ``reproduce`` branch): group window 2048 tokens, 16 warm-up traces, budget 256 traces (512 in
#: the paper), keep the top 10% (DeepConf-low) or 90% (DeepConf-high), top-k = 20 logprobs.
#: Pass these explicitly to reproduce the paper on long reasoning traces.
DEEPCONF_PAPER = MappingProxyType(
    {"window": 2048, "warmup": 16, "budget": 256, "top_percent": 10, "k": 20}
)
#: The DeepConf window of every entrolab default: ``deepconf_window(64)`` for 64-token replies.
DEEPCONF_DEFAULT_WINDOW = 8


def deepconf_window(max_new_tokens: int) -> int:
    """entrolab's one rule for DeepConf's group window: ``clamp(max_new_tokens // 8, 4, 2048)``.

    DeepConf's 2048-token windows are a small slice of reasoning traces that run to tens of
    thousands of tokens; on replies budgeted at tens of tokens a 2048 window never fills and
    every window score falls back to the trace mean. One eighth of the reply budget keeps at
    least 8 windows per reply that fills its budget, never shrinks below 4 tokens (a 1–2-token
    "window" is just the least confident token) and reaches the paper's 2048 at a
    16384-token budget. Every DeepConf default of the estimators (``deepconf_*``), the
    test-time strategies and the reports is ``deepconf_window(64) = 8``
    (:data:`DEEPCONF_DEFAULT_WINDOW`) for their 64-token default budget; pass
    ``window=deepconf_window(max_new_tokens)`` when you change the budget, or
    ``DEEPCONF_PAPER["window"]`` for the paper's value.

    Args:
        max_new_tokens: reply budget in tokens (≥ 1).
    Returns:
        the window length in tokens.
    """
    _check_int(max_new_tokens, "max_new_tokens")
    return max(4, min(DEEPCONF_PAPER["window"], max_new_tokens // 8))


def _check(
    values: torch.Tensor, mask: torch.Tensor, name: str = "values", *, finite: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated (float values, bool mask); values keep float32/float64, others → float32."""
    if not isinstance(values, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise EntrolabError(f"{name} and mask must be torch.Tensors")
    if values.dim() == 0:
        raise EntrolabError(f"{name} must have shape [..., T], got a scalar")
    if tuple(mask.shape) != tuple(values.shape):
        raise EntrolabError(
            f"mask has shape {tuple(mask.shape)} but {name} has {tuple(values.shape)}; "
            "they must match (mask: True = real token)"
        )
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex():
            raise EntrolabError(f"mask must be bool (True = real token), got {mask.dtype}")
        mask = mask != 0
    if values.dtype not in (torch.float32, torch.float64):
        values = values.float()
    values = values.detach()
    bad = mask & (~torch.isfinite(values) if finite else torch.isnan(values))
    if bool(bad.any()):
        first = tuple(int(i) for i in torch.nonzero(bad)[0])
        what = "NaN/inf" if finite else "NaN"
        raise EntrolabError(
            f"{name} contain {int(bad.sum())} {what} values at real (mask=True) positions "
            f"(first at index {first}); fix them upstream or mask them out"
        )
    return values, mask


def _check_int(x: int, name: str) -> None:
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise EntrolabError(f"{name} must be a positive int (≥ 1), got {x!r}")


def _check_scope(scope: str) -> None:
    if scope not in ("sequence", "batch"):
        raise EntrolabError(f"scope must be 'sequence' or 'batch', got {scope!r}")


def _fill_empty(out: torch.Tensor, mask: torch.Tensor, empty: float) -> torch.Tensor:
    return torch.where(mask.any(dim=-1), out, torch.full_like(out, empty))


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of real-token values along the last dim; [..., T] → [...] (0 for empty rows)."""
    v, m = _check(values, mask)
    return torch.where(m, v, torch.zeros_like(v)).sum(dim=-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, *, empty: float = 0.0) -> torch.Tensor:
    """Mean of real-token values along the last dim; [..., T] → [...]; ``empty`` for empty rows."""
    v, m = _check(values, mask)
    count = m.sum(dim=-1)
    total = torch.where(m, v, torch.zeros_like(v)).sum(dim=-1)
    return _fill_empty(total / count.clamp(min=1).to(v.dtype), m, empty)


def masked_min(values: torch.Tensor, mask: torch.Tensor, *, empty: float = 0.0) -> torch.Tensor:
    """Minimum of real-token values along the last dim; [..., T] → [...]; ``empty`` if none."""
    v, m = _check(values, mask)
    if v.shape[-1] == 0:
        return torch.full(v.shape[:-1], empty, dtype=v.dtype, device=v.device)
    out = torch.where(m, v, torch.full_like(v, torch.inf)).amin(dim=-1)
    return _fill_empty(out, m, empty)


def masked_max(values: torch.Tensor, mask: torch.Tensor, *, empty: float = 0.0) -> torch.Tensor:
    """Maximum of real-token values along the last dim; [..., T] → [...]; ``empty`` if none."""
    v, m = _check(values, mask)
    if v.shape[-1] == 0:
        return torch.full(v.shape[:-1], empty, dtype=v.dtype, device=v.device)
    out = torch.where(m, v, torch.full_like(v, -torch.inf)).amax(dim=-1)
    return _fill_empty(out, m, empty)


def _compact(v: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """[N, T] → (float64 prefix sums C [N, T+1] over real tokens in order, order, lengths)."""
    order = torch.argsort((~m).to(torch.int8), dim=-1, stable=True)
    lengths = m.sum(dim=-1)
    cv = torch.gather(v.to(torch.float64), -1, order)
    pos = torch.arange(v.shape[-1], device=v.device)
    cv = torch.where(pos < lengths.unsqueeze(-1), cv, torch.zeros_like(cv))
    csum = torch.nn.functional.pad(torch.cumsum(cv, dim=-1), (1, 0))
    return csum, order, lengths


def _windows(v: torch.Tensor, m: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, T] → window means [N, T'] (float64) and valid [N, T'], T' = max(1, T − window + 1)."""
    csum, _, lengths = _compact(v, m)
    n_out = max(1, v.shape[-1] - window + 1)
    start = torch.arange(n_out, device=v.device).expand(v.shape[0], n_out)
    length = lengths.unsqueeze(-1)
    end = torch.minimum(start + window, length)
    valid = (start + window <= length) | ((length < window) & (length > 0) & (start == 0))
    sums = csum.gather(-1, end) - csum.gather(-1, start)
    means = sums / (end - start).clamp(min=1).to(torch.float64)
    return torch.where(valid, means, torch.zeros_like(means)), valid


def _to2d(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(math.prod(values.shape[:-1]), values.shape[-1])


def sliding_window_mean(
    values: torch.Tensor, mask: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of ``window`` consecutive real tokens (DeepConf group confidence C_G).

    Args:
        values: [..., T] per-token values (e.g. DeepConf token confidences).
        mask: [..., T] bool, True = real token.
        window: window length in tokens (≥ 1).
    Returns:
        ``(means, valid)``, each [..., T'] with T' = max(1, T − window + 1). Entry s is the mean
        of real tokens s … s+window−1 (counting real tokens only); only full windows are valid,
        except that a sequence shorter than the window has one valid window, its mean (DeepConf
        rule). Invalid entries are 0. Computed with prefix sums in float64.
    """
    _check_int(window, "window")
    v, m = _check(values, mask, finite=True)
    means, valid = _windows(_to2d(v), _to2d(m), window)
    lead = v.shape[:-1]
    return means.to(v.dtype).reshape(*lead, means.shape[-1]), valid.reshape(*lead, means.shape[-1])


def group_confidence(
    token_conf: torch.Tensor,
    mask: torch.Tensor,
    *,
    window: int = 2048,
    mode: Literal["mean", "lowest", "bottom", "tail"] = "mean",
    bottom_q: float = 0.1,
) -> torch.Tensor:
    """DeepConf trace score from token confidences (Fu et al. 2025, arXiv:2508.15260).

    Args:
        token_conf: [..., T] token confidences (see :func:`~entrolab.signals.topk_confidence`).
        mask: [..., T] bool, True = real token.
        window: group (sliding window) size in tokens.
        mode: ``"mean"`` mean token confidence; ``"lowest"`` minimum window mean;
            ``"bottom"`` mean of the lowest ⌊bottom_q · #windows⌋ window means (at least one);
            ``"tail"`` mean of the last ``window`` real tokens (all of them if fewer).
        bottom_q: fraction for ``"bottom"``, in (0, 1].
    Returns:
        [...] one score per sequence (higher = more confident). Sequences shorter than the window
        score their mean; empty sequences score 0.0 (as DeepConf). Unlike DeepConf's reference
        code, window means are not rounded to 3 decimals.
    """
    if mode not in GROUP_MODES:
        raise EntrolabError(f"unknown group_confidence mode {mode!r}; use one of {GROUP_MODES}")
    _check_int(window, "window")
    if isinstance(bottom_q, bool) or not (0.0 < float(bottom_q) <= 1.0):
        raise EntrolabError(f"bottom_q must be in (0, 1], got {bottom_q!r}")
    v, m = _check(token_conf, mask, "token_conf", finite=True)
    v2, m2 = _to2d(v), _to2d(m)
    lead = v.shape[:-1]
    if mode == "mean":
        return masked_mean(v, m)
    if mode == "tail":
        csum, _, lengths = _compact(v2, m2)
        start = (lengths - window).clamp(min=0)
        total = csum.gather(-1, lengths.unsqueeze(-1)) - csum.gather(-1, start.unsqueeze(-1))
        out = total.squeeze(-1) / (lengths - start).clamp(min=1).to(torch.float64)
        return out.to(v.dtype).reshape(lead)
    means, valid = _windows(v2, m2, window)
    ranked = torch.where(valid, means, torch.full_like(means, torch.inf))
    if mode == "lowest":
        out = ranked.amin(dim=-1)
    else:  # bottom: DeepConf's max(1, int(n_windows * q)) lowest windows
        n_win = valid.sum(dim=-1)
        n_keep = torch.floor(n_win.to(torch.float64) * float(bottom_q)).long().clamp(min=1)
        srt = torch.sort(ranked, dim=-1).values
        csum = torch.cumsum(torch.where(torch.isfinite(srt), srt, torch.zeros_like(srt)), -1)
        out = csum.gather(-1, (n_keep - 1).unsqueeze(-1)).squeeze(-1) / n_keep.to(torch.float64)
    out = torch.where(valid.any(dim=-1), out, torch.zeros_like(out))
    return out.to(v.dtype).reshape(lead)


def window_entropy(entropy: torch.Tensor, mask: torch.Tensor, window: int = 8) -> torch.Tensor:
    """Forward window entropy H̄_{t:w} = (1/w) Σ_{τ=t}^{t+w−1} H_τ (ARES, arXiv:2510.08457).

    Args:
        entropy: [..., T] per-token entropies (nats). mask: [..., T] bool, True = real token.
        window: w ≥ 1 (real tokens; padding is skipped).
    Returns:
        [..., T] at each real token's position (nats). Where fewer than w real tokens remain,
        the window shrinks to the remaining ones (their mean), so every real token gets a value;
        padding positions are 0.
    """
    _check_int(window, "window")
    v, m = _check(entropy, mask, "entropy", finite=True)
    v2, m2 = _to2d(v), _to2d(m)
    csum, order, lengths = _compact(v2, m2)
    j = torch.arange(v2.shape[-1], device=v.device).expand_as(v2)
    end = torch.minimum(j + window, lengths.unsqueeze(-1))
    real = j < lengths.unsqueeze(-1)
    start = torch.where(real, j, end)
    means = (csum.gather(-1, end) - csum.gather(-1, start)) / (end - start).clamp(min=1)
    out = torch.zeros_like(means).scatter_(-1, order, torch.where(real, means, 0.0))
    return out.to(v.dtype).reshape(v.shape)


def _masked_quantile(v: torch.Tensor, m: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row linear-interpolation quantile (numpy/torch default) of real values; [N, T] → [N].

    Empty rows give +inf (so no token passes a ``>=``/``>`` test)."""
    if v.shape[-1] == 0:
        return torch.full(v.shape[:-1], torch.inf, dtype=torch.float64, device=v.device)
    srt = torch.sort(torch.where(m, v, torch.full_like(v, torch.inf)), dim=-1).values
    n = m.sum(dim=-1)
    pos = q * (n - 1).clamp(min=0).to(torch.float64)
    lo = torch.floor(pos).long()
    hi = torch.minimum(lo + 1, (n - 1).clamp(min=0))
    a = srt.gather(-1, lo.unsqueeze(-1)).squeeze(-1).to(torch.float64)
    b = srt.gather(-1, hi.unsqueeze(-1)).squeeze(-1).to(torch.float64)
    frac = pos - lo.to(torch.float64)
    out = torch.where(frac > 0, a + (b - a) * frac, a)
    return torch.where(n > 0, out, torch.full_like(out, torch.inf))


def _check_fraction(x: float, name: str, *, lo_open: bool) -> float:
    ok = not isinstance(x, bool) and isinstance(x, numbers.Real)
    xf = float(x) if ok else float("nan")
    if not ok or not ((0.0 < xf <= 1.0) if lo_open else (0.0 <= xf <= 1.0)):
        bounds = "(0, 1]" if lo_open else "[0, 1]"
        raise EntrolabError(f"{name} must be a number in {bounds}, got {x!r}")
    return xf


def _scoped(v: torch.Tensor, m: torch.Tensor, scope: str) -> tuple[torch.Tensor, torch.Tensor]:
    _check_scope(scope)
    v2, m2 = _to2d(v), _to2d(m)
    return (v2.reshape(1, -1), m2.reshape(1, -1)) if scope == "batch" else (v2, m2)


def high_window_entropy_mask(
    entropy: torch.Tensor,
    mask: torch.Tensor,
    window: int = 8,
    quantile: float = 0.8,
    scope: Scope = "sequence",
) -> torch.Tensor:
    """High-window-entropy (HWE) tokens: H̄_{t:w} strictly above its ``quantile`` (ARES).

    The threshold is the linear-interpolation ``quantile`` of :func:`window_entropy` over the
    real tokens of each sequence (``scope="sequence"``) or of the whole batch (``"batch"``).
    Returns bool [..., T]; padding is always False; constant sequences select nothing.
    """
    q = _check_fraction(quantile, "quantile", lo_open=False)
    wbar = window_entropy(entropy, mask, window)
    m = _check(entropy, mask, "entropy")[1]
    v2, m2 = _scoped(wbar, m, scope)
    thr = _masked_quantile(v2, m2, q).unsqueeze(-1)
    return ((v2 > thr) & m2).reshape(wbar.shape)


def forking_token_mask(
    entropy: torch.Tensor,
    mask: torch.Tensor,
    *,
    rho: float = 0.2,
    scope: Scope = "batch",
    method: Literal["topk", "quantile"] = "topk",
) -> torch.Tensor:
    """Forking tokens: the top-ρ fraction of real tokens by entropy (Wang et al. 2025,
    "Beyond the 80/20 Rule", arXiv:2506.01939).

    Args:
        entropy: [..., T] per-token entropies. mask: [..., T] bool, True = real token.
        rho: fraction to keep, in (0, 1].
        scope: ``"batch"`` ranks all real tokens together (the official code: the micro-batch);
            ``"sequence"`` ranks within each sequence.
        method: ``"topk"`` (official ``get_global_entropy_top_mask``): exactly
            k = max(1, int(n·ρ + 0.9999)) tokens (≈⌈ρn⌉, n real tokens in scope), ties broken
            by position (earlier first; the official torch.topk leaves them unspecified).
            ``"quantile"`` (TRL ``get_high_entropy_mask``): threshold = linear-interpolation
            (1−ρ) quantile, keep H ≥ threshold (ties may select more than ⌈ρn⌉).
    Returns:
        bool [..., T]; padding is always False; a scope with no real tokens selects nothing.
    """
    r = _check_fraction(rho, "rho", lo_open=True)
    if method not in ("topk", "quantile"):
        raise EntrolabError(f"method must be 'topk' or 'quantile', got {method!r}")
    v, m = _check(entropy, mask, "entropy", finite=True)
    v2, m2 = _scoped(v, m, scope)
    if method == "quantile":
        thr = _masked_quantile(v2, m2, 1.0 - r).unsqueeze(-1)
        return ((v2 >= thr) & m2).reshape(v.shape)
    n = m2.sum(dim=-1)
    k = torch.floor(n.to(torch.float64) * r + 0.9999).long().clamp(min=1)
    k = torch.where(n > 0, torch.minimum(k, n), torch.zeros_like(k))
    keyed = torch.where(m2, v2, torch.full_like(v2, -torch.inf))
    order = torch.argsort(keyed, dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(
        -1, order, torch.arange(v2.shape[-1], device=v.device).expand_as(order)
    )
    return ((rank < k.unsqueeze(-1)) & m2).reshape(v.shape)


def phase_mask(
    token_texts: Sequence[str],
    delimiter: str,
    *,
    occurrence: Literal["first", "last"] = "first",
) -> torch.Tensor:
    """Answer-phase mask over T tokens split at a delimiter such as ``"</think>"`` (PEAR).

    Works on character offsets of ``"".join(token_texts)``, so the delimiter may span tokens.
    Returns bool [T]: True for tokens that start at or after the end of the delimiter (answer
    phase); tokens before it or containing any part of it are False (thinking phase). Splits at
    the ``occurrence`` (first or last) of the delimiter; if it never occurs, all False.
    """
    if not isinstance(delimiter, str) or not delimiter:
        raise EntrolabError("delimiter must be a non-empty string, e.g. '</think>'")
    if occurrence not in ("first", "last"):
        raise EntrolabError(f"occurrence must be 'first' or 'last', got {occurrence!r}")
    texts = list(token_texts)
    if not all(isinstance(t, str) for t in texts):
        raise EntrolabError("token_texts must be a sequence of strings (one per token)")
    full = "".join(texts)
    at = full.find(delimiter) if occurrence == "first" else full.rfind(delimiter)
    if at < 0:
        return torch.zeros(len(texts), dtype=torch.bool)
    lengths = torch.tensor([len(t) for t in texts], dtype=torch.int64)
    starts = torch.cumsum(lengths, dim=0) - lengths  # character offset where each token starts
    return starts >= at + len(delimiter)


def phase_split(
    values: torch.Tensor,
    token_texts: Sequence[str],
    delimiter: str,
    *,
    occurrence: Literal["first", "last"] = "first",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split per-token ``values`` [T] into (thinking [T₁], answer [T₂]) by :func:`phase_mask`."""
    if not isinstance(values, torch.Tensor) or values.dim() != 1:
        raise EntrolabError("values must be a 1-D tensor [T] (one value per token)")
    if values.shape[0] != len(token_texts):
        raise EntrolabError(
            f"values has {values.shape[0]} entries but token_texts has {len(token_texts)}; "
            "pass one text piece per token"
        )
    answer = phase_mask(token_texts, delimiter, occurrence=occurrence).to(values.device)
    return values[~answer], values[answer]
