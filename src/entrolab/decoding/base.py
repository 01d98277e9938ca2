"""What every sampler shares: the :class:`Warper` contract, input checks, argument validation and
:class:`WarperProcessor`, the thin ``transformers.LogitsProcessor`` adapter with diagnostics.

A *warper* maps logits ``[..., V]`` (usually ``[R, V]``: R rows, V vocabulary; already divided by
the base temperature) to new logits of the same shape, out of place: removed tokens get ``-inf``;
kept tokens keep their logit (truncation samplers) or get a rescaled one (temperature samplers).
Per-step cost is vectorised over rows (no Python loop over rows, no ``.item()`` per row).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from transformers import LogitsProcessor

from entrolab.errors import EntrolabError
from entrolab.signals import check_finite_logits

__all__ = [
    "Warper",
    "WarperProcessor",
    "as_rows",
    "cache_kwarg",
    "check_choice",
    "check_int",
    "check_number",
    "compute_dtype",
    "log_normalizer",
    "scatter_kept",
]


def cache_kwarg(model: Any) -> str:
    """The name of ``model.forward``'s KV-cache argument: transformers 5.24 renamed
    ``past_key_values`` to ``cache``; both are supported."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@runtime_checkable
class Warper(Protocol):
    """``warper(logits [..., V]) -> logits [..., V]``; never modifies its input."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor: ...


# ----------------------------------------------------------------------------- argument checks
def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    owner: str = "",
) -> float:
    """``value`` as a float, or :class:`EntrolabError` naming ``name`` and the allowed range."""
    where = f"{owner}: " if owner else ""
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    rng = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EntrolabError(f"{where}{name} must be a number in {rng}, got {value!r}")
    v = float(value)
    bad = not math.isfinite(v)
    if low is not None:
        bad |= v <= low if low_open else v < low
    if high is not None:
        bad |= v >= high if high_open else v > high
    if bad:
        raise EntrolabError(f"{where}{name} must be in {rng}, got {value!r}")
    return v


def check_int(name: str, value: Any, *, low: int = 1, owner: str = "") -> int:
    """``value`` as an int >= ``low``, or :class:`EntrolabError` naming ``name``."""
    where = f"{owner}: " if owner else ""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise EntrolabError(f"{where}{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...], *, owner: str = "") -> str:
    """``value`` if it is one of ``choices``, else :class:`EntrolabError` listing them."""
    if value not in choices:
        where = f"{owner}: " if owner else ""
        raise EntrolabError(f"{where}{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


# ------------------------------------------------------------------------------- tensor helpers
def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_rows(logits: Any, name: str = "logits") -> torch.Tensor:
    """``logits`` [..., V] viewed as rows [N, V] (no copy when contiguous), after type checks."""
    if not isinstance(logits, torch.Tensor):
        raise EntrolabError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise EntrolabError(f"{name} must be floating point, got {logits.dtype}; use .float()")
    if logits.dim() == 0 or logits.shape[-1] == 0:
        raise EntrolabError(
            f"{name} has shape {tuple(logits.shape)}; expected [..., V] with the vocabulary last"
        )
    return logits.detach().reshape(-1, logits.shape[-1])


def log_normalizer(x: torch.Tensor, original: torch.Tensor, name: str = "logits") -> torch.Tensor:
    """logsumexp over the last dim of rows ``x`` [N, V] -> [N, 1]; raises on NaN, +inf or an
    all ``-inf`` row (one host sync; the detailed scan of ``original`` runs only on failure)."""
    lse = torch.logsumexp(x, dim=-1, keepdim=True)
    if lse.numel() and not bool(torch.isfinite(lse).all()):
        check_finite_logits(original, name)
        raise EntrolabError(f"{name} overflow: the softmax normaliser is not finite")
    return lse


def scatter_kept(
    logits: torch.Tensor,
    index: torch.Tensor,
    keep: torch.Tensor,
    values: torch.Tensor | None = None,
) -> torch.Tensor:
    """A new [N, V] tensor: ``-inf`` everywhere except ``index[keep]``, which get ``values``
    (default: the input logits there). ``index``, ``keep``, ``values``: [N, m]."""
    vals = logits.gather(-1, index) if values is None else values.to(logits.dtype)
    vals = vals.masked_fill(~keep, float("-inf"))
    out = torch.full_like(logits, float("-inf"))
    return out.scatter_(-1, index, vals)


# ------------------------------------------------------------------------------- the processor
class WarperProcessor(LogitsProcessor):
    """A warper usable as ``w(logits)`` and as a transformers processor ``w(input_ids, scores)``.

    Subclasses implement :meth:`warp`. Each call remembers its input and output (references, not
    copies), so :meth:`diagnostics` can describe the last call per row; pass
    ``LogitsProcessorList([w])`` or ``logits_processor=[w]`` to ``model.generate``.

    Attributes:
        name: the registry name (``"top_h"`` …).
        params: the validated constructor arguments (JSON-serialisable).
    """

    name: str = "warper"

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def warp(self, logits: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(
        self, input_ids_or_logits: Any, scores: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = input_ids_or_logits if scores is None else scores
        out = self.warp(logits)
        self._last = (logits, out)
        return out

    def diagnostics(self) -> dict[str, torch.Tensor]:
        """Of the last call, per row ([...] = the logits' leading dims): ``kept`` (int64, finite
        logits after), ``retained_mass`` (their mass under softmax(before)), ``entropy_after``
        (nats). Raises if the processor has not been called yet."""
        from entrolab.decoding.diagnostics import warper_diagnostics

        if self._last is None:
            raise EntrolabError(
                f"{self.name}: diagnostics() needs a call first; apply it to logits"
            )
        return warper_diagnostics(*self._last)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class FunctionWarper(WarperProcessor):
    """A :class:`WarperProcessor` around a pure function ``fn(logits) -> logits``."""

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor], **params: Any):
        super().__init__()
        self.name = name
        self.params = dict(params)
        self._fn = fn

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        return self._fn(logits)
